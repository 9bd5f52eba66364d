"""The audit key: the secret that makes the trail tamper-evident and erasable.

One random master key per deployment, in a file the operator holds (`<data_dir>/audit.key`,
created at first start), never in the database: whoever can write the database but not
read this file cannot forge a record's MAC, move a purge anchor or decrypt personal
fields. Every instance writing to one database needs the same file (copy it), and so does
`audit verify`. Purpose-specific keys are derived from it, so one use can never be turned
against another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_FILE_NAME = "audit.key"


class AuditKeyError(RuntimeError):
    """The key file is missing (where it must exist) or unreadable."""


@dataclass(frozen=True, slots=True)
class AuditKeys:
    chain: bytes  # HMAC of records, anchors and the genesis of each chain
    index: bytes  # keyed hashes for queries (tags) and subject look-ups
    wrap: bytes  # AES-GCM key that wraps the per-subject data keys
    key_id: str  # short public fingerprint, to tell keys apart in messages

    @classmethod
    def from_master(cls, master: bytes) -> AuditKeys:
        def derive(label: str) -> bytes:
            return hmac.new(master, b"pms-gateway audit " + label.encode(), hashlib.sha256).digest()

        return cls(
            chain=derive("chain"),
            index=derive("index"),
            wrap=derive("wrap"),
            key_id=hashlib.sha256(derive("id")).hexdigest()[:12],
        )


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def load_keys(path: Path) -> AuditKeys:
    """Read an existing key file (commands that only read the trail never create one)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise AuditKeyError(f"audit key file {path} not found: copy it from the gateway's data_dir") from None
    except OSError as exc:
        raise AuditKeyError(f"cannot read audit key file {path}: {exc}") from None
    try:
        master = bytes.fromhex(text)
    except ValueError:
        raise AuditKeyError(f"{path} is not an audit key (64 hex digits expected)") from None
    if len(master) < 32:
        raise AuditKeyError(f"{path} holds a key shorter than 256 bits")
    return AuditKeys.from_master(master)


def load_or_create_keys(path: Path) -> AuditKeys:
    """The key in `path`, created first if absent. Several processes may start at once:
    the key is written to a private temporary file and linked into place, so exactly one
    wins and nobody reads a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_bytes(32).hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return load_keys(path)
