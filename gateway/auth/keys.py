"""Operator-held encryption keys: secrets at rest are useless without them.

TOTP seeds (and anything else the gateway must keep secret at rest) are encrypted with a
key that lives in a file or an environment variable, never in the database, so a copy of
the database or a backup alone reveals nothing.

Key file format, one key per line, the first line being the *current* key (used for new
encryptions and derived secrets); later lines are older keys, kept so that data they
encrypted stays readable:

    <key_id> <base64 of 32 random bytes>

Blank lines and `#` comments are ignored. The environment variable (``PMS_GATEWAY_KEY``
by default) holds the same format, or just one base64 key, whose id is then ``env``; when
set it replaces the file entirely (containers, secret managers).

Encryption is AES-256-GCM with a random 96-bit nonce; callers pass associated data that
names what the ciphertext belongs to (e.g. ``totp:<user id>:<name>``), so a ciphertext
copied to another row fails to decrypt instead of silently working.

After `rotate`, running gateway processes can already *read* data under the new key
(an unknown key id makes them re-read the file once), but they keep encrypting and
deriving with the key they started with until restarted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.store.private_files import replace_private

__all__ = ["InvalidTag", "KeyFileError", "KeyRing", "UnknownKeyError", "ENV_KEY_ID"]

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
ENV_KEY_ID = "env"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # fits totp_factors.key_id (String(64))
_HEADER = (
    "# pms-gateway encryption keys: <key id> <base64 key>; the first line is the current key.\n"
    "# Keep older lines: data they encrypted needs them. Never store this file with the data.\n"
)


class KeyFileError(ValueError):
    """The key file or variable is malformed; the message says where and why."""


class UnknownKeyError(KeyError):
    """A ciphertext names a key id this key ring does not hold (wrong key file, or a key
    line was removed)."""

    def __str__(self) -> str:  # KeyError would show the repr of its argument
        return str(self.args[0]) if self.args else "unknown key"


def _new_key_id() -> str:
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


def _parse(text: str, where: str, *, bare_id: str | None = None) -> list[tuple[str, bytes]]:
    """Lines of `<id> <base64>`; with `bare_id`, a lone base64 key is accepted too."""
    keys: list[tuple[str, bytes]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1 and bare_id is not None and not keys:
            key_id, encoded = bare_id, fields[0]
        elif len(fields) == 2:
            key_id, encoded = fields
        else:
            raise KeyFileError(f"{where}, line {number}: expected '<key id> <base64 key>'")
        if not _KEY_ID.match(key_id):
            raise KeyFileError(
                f"{where}, line {number}: key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise KeyFileError(f"{where}, line {number}: the key is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(
                f"{where}, line {number}: a key is {KEY_BYTES} bytes, this one is {len(key)}"
            )
        if any(existing == key_id for existing, _ in keys):
            raise KeyFileError(f"{where}, line {number}: key id {key_id!r} appears twice")
        keys.append((key_id, key))
    if not keys:
        raise KeyFileError(f"{where}: no key found")
    return keys


def _format(keys: Iterable[tuple[str, bytes]]) -> str:
    return _HEADER + "".join(f"{kid} {base64.b64encode(key).decode()}\n" for kid, key in keys)


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write with mode 0600 from the first byte. `exclusive`: fail if the file exists
    (two workers starting at once: one creates, the other reads). Otherwise replace the
    file atomically, so a crash never leaves a half-written key file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return
    replace_private(path, text.encode("ascii"))


class KeyRing:
    """The current key plus older ones, by id. Build it with `KeyRing.load`."""

    def __init__(self, keys: list[tuple[str, bytes]], *, source: Path | None = None) -> None:
        if not keys:
            raise KeyFileError("a key ring needs at least one key")
        self._keys: dict[str, bytes] = dict(keys)
        self._current = keys[0][0]
        self._source = source
        self._derived: dict[tuple[str, str], bytes] = {}
        self._ciphers: dict[str, AESGCM] = {}  # one AES-GCM context per key, built once

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, key_file: Path, env_value: str | None, create: bool = True) -> KeyRing:
        """Keys from `env_value` when given (non-empty), else from `key_file`, which is
        created (mode 0600, one fresh key) when absent and `create` is true."""
        if env_value and env_value.strip():
            return cls(_parse(env_value, "environment variable", bare_id=ENV_KEY_ID))
        key_file = Path(key_file)
        if not key_file.exists():
            if not create:
                raise FileNotFoundError(f"no key file at {key_file}")
            with contextlib.suppress(FileExistsError):
                _write_private(key_file, _format([(_new_key_id(), os.urandom(KEY_BYTES))]), exclusive=True)
                log.info("created encryption key file %s", key_file)
        return cls(cls._read(key_file), source=key_file)

    @staticmethod
    def _read(key_file: Path) -> list[tuple[str, bytes]]:
        mode = key_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is accessible to other users (mode %o); chmod 600 it",
                        key_file, stat.S_IMODE(mode))
        return _parse(key_file.read_text(encoding="ascii"), str(key_file))

    # -- inspection ------------------------------------------------------------------
    @property
    def current_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        """Every id, current first."""
        return list(self._keys)

    @property
    def source(self) -> Path | None:
        """The key file, or None when the keys came from the environment."""
        return self._source

    def __repr__(self) -> str:  # never show key material
        return f"KeyRing(current={self._current!r}, keys={len(self._keys)})"

    # -- encryption ------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[bytes, str]:
        """(nonce ‖ ciphertext ‖ tag, key id) under the current key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(self._current, self._keys[self._current]).encrypt(nonce, plaintext, associated_data)
        return nonce + sealed, self._current

    def decrypt(self, ciphertext: bytes, key_id: str, associated_data: bytes) -> bytes:
        """The plaintext; `UnknownKeyError` for a key id not held, `InvalidTag` when the
        ciphertext was altered or belongs to other associated data."""
        key = self._key(key_id)
        if len(ciphertext) < NONCE_BYTES + 16:
            raise InvalidTag()
        return self._cipher(key_id, key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], associated_data)

    def _cipher(self, key_id: str, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher

    def _key(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None and self._source is not None:
            self._pick_up_new_keys()
            key = self._keys.get(key_id)
        if key is None:
            where = self._source or "the environment variable"
            raise UnknownKeyError(
                f"data was encrypted with key {key_id!r}, which {where} does not hold "
                f"(keys: {', '.join(self._keys)})"
            )
        return key

    def _pick_up_new_keys(self) -> None:
        """Another process rotated the file: learn its keys (for reading only; the current
        key of this process changes at restart, so all its derived secrets stay stable)."""
        assert self._source is not None
        try:
            for key_id, key in self._read(self._source):
                self._keys.setdefault(key_id, key)
        except (OSError, KeyFileError) as exc:
            log.warning("could not re-read key file %s: %s", self._source, exc)

    # -- derived secrets -------------------------------------------------------------
    def derive(self, purpose: str, key_id: str | None = None) -> bytes:
        """A 32-byte secret for `purpose` (HMAC keys for cookies, CSRF tokens, code
        hashes), derived with HKDF-SHA256 from the current key, or from `key_id` to check
        something made before a rotation. Every worker with the same key file gets the
        same bytes; different purposes get independent ones."""
        kid = key_id or self._current
        cached = self._derived.get((kid, purpose))
        if cached is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=b"pms-gateway/derive/" + purpose.encode())
            cached = self._derived[(kid, purpose)] = hkdf.derive(self._key(kid))
        return cached

    def mac(self, purpose: str, message: bytes, key_id: str | None = None) -> bytes:
        """HMAC-SHA256 of `message` under `derive(purpose, key_id)`."""
        return hmac.new(self.derive(purpose, key_id), message, hashlib.sha256).digest()

    # -- rotation --------------------------------------------------------------------
    def rotate(self, key_file: Path) -> str:
        """Write a fresh current key to `key_file` (atomically, mode 0600), keeping every
        older key below it, and make it current here. Returns the new key id. Re-encrypting
        stored data under it is the caller's job (`pms-gateway keys rotate` does it)."""
        key_file = Path(key_file)
        if self._source is None:
            raise KeyFileError(
                "the keys come from the environment variable, not a file: put a new line "
                "'<id> <base64 of 32 random bytes>' first in its value, keeping the old ones"
            )
        on_disk = self._read(key_file) if key_file.exists() else []
        merged = dict(on_disk)
        for key_id, key in self._keys.items():
            merged.setdefault(key_id, key)
        new_id = _new_key_id()
        while new_id in merged:
            new_id = _new_key_id()
        new_key = os.urandom(KEY_BYTES)
        _write_private(key_file, _format([(new_id, new_key), *merged.items()]), exclusive=False)
        self._keys = {new_id: new_key, **merged}
        self._current = new_id
        self._source = key_file
        return new_id
