"""The SMTP relay's hold queue: messages it could not read whole, kept for the operator.

A message the relay cannot parse and scan with certainty is neither sent (it might carry a
card number in a place the relay did not read) nor refused (the PMS would drop it, or
retry it forever). It is kept here, and the relay answers 250 only once it is on disk:
one file per message under `<data_dir>/held/`, mode 0600, written and fsynced before the
answer, sealed with AES-256-GCM under the operator's key (the same key ring as the TOTP
secrets and the sessions, bound to the message id), so a copy of the data directory
alone shows neither guest names nor card numbers.

The operator lists, releases (re-scanned with the policy in force; sent only if it now
reads whole) or drops held messages with `pms-gateway mail hold|release|drop`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.sessions.sealed import Cipher, seal, unseal

HELD_DIR = "held"
SUFFIX = ".held"
_ID = re.compile(r"^[0-9]{10}-[0-9a-f]{12}$")


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


def valid_id(message_id: str) -> bool:
    """Ids are ours (`<epoch seconds>-<12 hex>`): nothing else ever names a file."""
    return _ID.match(message_id) is not None


class HoldQueue:
    """Held messages in one directory, sealed with `cipher` (the operator's key ring)."""

    def __init__(self, directory: Path, cipher: Cipher) -> None:
        self.directory = Path(directory)
        self.cipher = cipher

    def _path(self, message_id: str) -> Path:
        if not valid_id(message_id):
            raise HeldNotFound(f"{message_id!r:.80} is not a held message id (see `pms-gateway mail hold`)")
        return self.directory / f"{message_id}{SUFFIX}"

    @staticmethod
    def _aad(message_id: str) -> str:
        return f"mail-held:{message_id}"

    def put(self, data: bytes, mail_from: str, rcpt_tos: list[str], mail_options: list[str], reason: str) -> str:
        """Keep a message; returns its id once the file and its directory entry are on disk.

        Blocking (file I/O and fsync): the relay calls it off the event loop."""
        now = time.time()
        message_id = f"{int(now):010d}-{secrets.token_hex(6)}"
        held = HeldMessage(message_id, now, reason, mail_from, list(rcpt_tos), list(mail_options), data)
        sealed = seal(self.cipher, self._aad(message_id), held.to_bytes())
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(message_id)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(sealed)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)
        return message_id

    def ids(self) -> list[str]:
        """Held message ids, oldest first."""
        if not self.directory.is_dir():
            return []
        found = (p.name[: -len(SUFFIX)] for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        return sorted(i for i in found if valid_id(i))

    def get(self, message_id: str) -> HeldMessage:
        path = self._path(message_id)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise HeldNotFound(f"no held message {message_id}") from None
        plain = unseal(self.cipher, self._aad(message_id), sealed)
        if plain is None:
            raise HeldNotFound(f"held message {message_id} cannot be opened with this key (or was altered)")
        return HeldMessage.from_bytes(plain)

    def drop(self, message_id: str) -> None:
        """Delete a held message from disk."""
        try:
            self._path(message_id).unlink()
        except FileNotFoundError:
            raise HeldNotFound(f"no held message {message_id}") from None
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted entry durable (POSIX; a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
