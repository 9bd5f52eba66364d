"""One sealed file per message: what the SMTP relay keeps on disk (hold and delivery queues).

Both queues keep mail the relay has answered 250 for, so both write the same way: the
record is sealed with AES-256-GCM under the operator's key ring (bound to its kind and id,
so files cannot be swapped or renamed into another queue), written to a temporary file
created with mode 0600, fsynced, renamed into place and the directory fsynced, before the
caller gets the id back. A copy of the data directory alone shows neither guest names nor
addresses; a crash leaves either the old file or the new one, never half of one.

Ids are ours (`<epoch seconds>-<12 hex>`): nothing an operator or the PMS types names a
file, and the epoch prefix sorts the files oldest first and gives a message's age without
opening it (metrics).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from gateway.sessions.sealed import Cipher, seal, unseal
from gateway.store.private_files import fsync_dir, replace_private

_ID = re.compile(r"^[0-9]{10}-[0-9a-f]{12}$")


def valid_id(message_id: str) -> bool:
    """True for ids `new_id` makes; anything else never names a file."""
    return _ID.match(message_id) is not None


def new_id(now: float) -> str:
    return f"{int(now):010d}-{secrets.token_hex(6)}"


def id_time(message_id: str) -> int:
    """When the message was first written (the id's epoch prefix)."""
    return int(message_id.split("-", 1)[0])


class SealedFiles:
    """Sealed records of one kind (`purpose`, e.g. `mail-held`) in one directory."""

    def __init__(self, directory: Path, cipher: Cipher, purpose: str, suffix: str) -> None:
        self.directory = Path(directory)
        self.cipher = cipher
        self.purpose = purpose
        self.suffix = suffix

    def path(self, message_id: str) -> Path:
        """The file of `message_id`; ValueError for anything that is not one of our ids."""
        if not valid_id(message_id):
            raise ValueError(f"{message_id!r:.80} is not a message id")
        return self.directory / f"{message_id}{self.suffix}"

    def _aad(self, message_id: str) -> str:
        return f"{self.purpose}:{message_id}"

    def write(self, message_id: str, plain: bytes) -> None:
        """Create or replace the record atomically; returns once it is durable.

        Blocking (file I/O and fsync): async callers run it in a thread."""
        replace_private(self.path(message_id), seal(self.cipher, self._aad(message_id), plain))

    def read(self, message_id: str) -> bytes | None:
        """The record's plaintext; None if there is no such file. A file the key ring cannot
        open (another key, or altered) raises `Unreadable`."""
        try:
            sealed = self.path(message_id).read_bytes()
        except FileNotFoundError:
            return None
        plain = unseal(self.cipher, self._aad(message_id), sealed)
        if plain is None:
            raise Unreadable(f"{message_id} cannot be opened with this key (or was altered)")
        return plain

    def exists(self, message_id: str) -> bool:
        return self.path(message_id).exists()

    def ids(self) -> list[str]:
        """Ids on disk, oldest first."""
        if not self.directory.is_dir():
            return []
        found = (p.name[: -len(self.suffix)] for p in self.directory.iterdir() if p.name.endswith(self.suffix))
        return sorted(i for i in found if valid_id(i))

    def delete(self, message_id: str) -> bool:
        """Remove the record from disk (durably); False if it was not there."""
        try:
            self.path(message_id).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True


class Unreadable(LookupError):
    """A sealed file that this key ring cannot open."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unreadable sealed file"
