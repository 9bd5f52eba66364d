"""The SMTP relay's hold queue: messages it could not read whole, kept for the operator.

A message the relay cannot parse and scan with certainty is neither sent (it might carry a
card number in a place the relay did not read) nor refused (the PMS would drop it, or
retry it forever). It is kept here, and the relay answers 250 only once it is on disk:
one file per message under `<data_dir>/held/`, mode 0600, written and fsynced before the
answer, sealed with AES-256-GCM under the operator's key (the same key ring as the TOTP
secrets and the sessions, bound to the message id), so a copy of the data directory
alone shows neither guest names nor card numbers. The file handling is `sealed_files`,
shared with the delivery queue (`mail_queue`).

The operator lists, releases (re-scanned with the policy in force; sent only if it now
reads whole) or drops held messages with `pms-gateway mail hold|release|drop`.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.redact.sealed_files import SealedFiles, Unreadable, new_id, valid_id
from gateway.sessions.sealed import Cipher

HELD_DIR = "held"
SUFFIX = ".held"

__all__ = ["HELD_DIR", "HeldMessage", "HeldNotFound", "HoldQueue", "hold_dir", "valid_id"]


class HeldNotFound(LookupError):
    """No held message with that id (or it cannot be opened with this key)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such held message"


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """One held message: the bytes the PMS sent and the envelope it gave."""

    id: str
    held_at: float
    reason: str
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes

    def to_bytes(self) -> bytes:
        return json.dumps({
            "id": self.id, "held_at": self.held_at, "reason": self.reason, "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos, "mail_options": self.mail_options,
            "data": base64.b64encode(self.data).decode("ascii"),
        }).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> HeldMessage:
        fields = json.loads(raw)
        fields["data"] = base64.b64decode(fields["data"])
        return cls(**fields)


def hold_dir(data_dir: Path) -> Path:
    return Path(data_dir) / HELD_DIR


class HoldQueue:
    """Held messages in one directory, sealed with `cipher` (the operator's key ring)."""

    def __init__(self, directory: Path, cipher: Cipher) -> None:
        self.files = SealedFiles(directory, cipher, "mail-held", SUFFIX)
        self.directory = self.files.directory

    def _check(self, message_id: str) -> None:
        if not valid_id(message_id):
            raise HeldNotFound(f"{message_id!r:.80} is not a held message id (see `pms-gateway mail hold`)")

    def put(self, data: bytes, mail_from: str, rcpt_tos: list[str], mail_options: list[str], reason: str) -> str:
        """Keep a message; returns its id once the file and its directory entry are on disk.

        Blocking (file I/O and fsync): the relay calls it off the event loop."""
        now = time.time()
        message_id = new_id(now)
        held = HeldMessage(message_id, now, reason, mail_from, list(rcpt_tos), list(mail_options), data)
        self.files.write(message_id, held.to_bytes())
        return message_id

    def ids(self) -> list[str]:
        """Held message ids, oldest first."""
        return self.files.ids()

    def get(self, message_id: str) -> HeldMessage:
        self._check(message_id)
        try:
            plain = self.files.read(message_id)
        except Unreadable:
            raise HeldNotFound(f"held message {message_id} cannot be opened with this key (or was altered)") from None
        if plain is None:
            raise HeldNotFound(f"no held message {message_id}")
        return HeldMessage.from_bytes(plain)

    def drop(self, message_id: str) -> None:
        """Delete a held message from disk."""
        self._check(message_id)
        if not self.files.delete(message_id):
            raise HeldNotFound(f"no held message {message_id}")
