"""The operator key ring: key file creation, environment override, AES-GCM with associated
data, rotation and derived secrets."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from gateway.auth.keys import ENV_KEY_ID, KeyFileError, KeyRing, UnknownKeyError


def _b64key(fill: int = 7) -> str:
    return base64.b64encode(bytes([fill]) * 32).decode()


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret.key"
    ring = KeyRing.load(path, None)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].split()[0] == ring.current_id
    again = KeyRing.load(path, None)
    assert again.current_id == ring.current_id
    sealed, key_id = ring.encrypt(b"seed", b"ad")
    assert again.decrypt(sealed, key_id, b"ad") == b"seed"


def test_missing_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyRing.load(tmp_path / "none.key", None, create=False)
    assert not (tmp_path / "none.key").exists()


def test_environment_value_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    bare = KeyRing.load(path, _b64key())
    assert bare.current_id == ENV_KEY_ID and bare.source is None
    assert not path.exists()  # the file is neither read nor created
    lined = KeyRing.load(path, f"new {_b64key(1)}\nold {_b64key(2)}\n")
    assert lined.key_ids == ["new", "old"]
    sealed, key_id = bare.encrypt(b"x", b"ad")
    assert KeyRing.load(path, _b64key()).decrypt(sealed, key_id, b"ad") == b"x"
    with pytest.raises(KeyFileError, match="environment"):
        bare.rotate(path)


@pytest.mark.parametrize("text, reason", [
    ("k1 notbase64!!", "base64"),
    (f"k1 {base64.b64encode(b'short').decode()}", "32 bytes"),
    (f"bad/id {_b64key()}", "key id"),
    (f"k1 {_b64key(1)}\nk1 {_b64key(2)}", "twice"),
    ("# only a comment\n", "no key"),
    (f"k1 {_b64key()} extra", "expected"),
])
def test_malformed_key_file(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "secret.key"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=reason):
        KeyRing.load(path, None)


def test_associated_data_binds_ciphertext_and_tamper_fails(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path / "k", None)
    sealed, key_id = ring.encrypt(b"JBSWY3DPEHPK3PXP", b"totp:1:alice")
    assert ring.decrypt(sealed, key_id, b"totp:1:alice") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(InvalidTag):
        ring.decrypt(sealed, key_id, b"totp:2:bob")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(InvalidTag):
        ring.decrypt(bytes(tampered), key_id, b"totp:1:alice")
    with pytest.raises(InvalidTag):
        ring.decrypt(sealed[:10], key_id, b"totp:1:alice")
    other = KeyRing.load(tmp_path / "other", None)
    with pytest.raises(UnknownKeyError, match="does not hold"):
        other.decrypt(sealed, key_id, b"totp:1:alice")
    assert ring.encrypt(b"same", b"ad")[0] != ring.encrypt(b"same", b"ad")[0]  # fresh nonce


def test_rotate_keeps_old_keys_and_encrypts_with_the_new(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    ring = KeyRing.load(path, None)
    old_id = ring.current_id
    old_sealed, _ = ring.encrypt(b"old", b"ad")
    new_id = ring.rotate(path)
    assert new_id != old_id and ring.current_id == new_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reloaded = KeyRing.load(path, None)
    assert reloaded.key_ids == [new_id, old_id]
    assert reloaded.decrypt(old_sealed, old_id, b"ad") == b"old"
    sealed, key_id = reloaded.encrypt(b"new", b"ad")
    assert key_id == new_id
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_running_process_reads_data_under_a_key_rotated_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    worker = KeyRing.load(path, None)
    started_with = worker.current_id
    operator = KeyRing.load(path, None)
    new_id = operator.rotate(path)
    sealed, _ = operator.encrypt(b"re-encrypted", b"ad")
    assert worker.decrypt(sealed, new_id, b"ad") == b"re-encrypted"
    assert worker.current_id == started_with  # stays stable until restart


def test_derive_is_stable_per_purpose_and_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    ring = KeyRing.load(path, None)
    first = ring.derive("session-cookie")
    assert len(first) == 32
    assert KeyRing.load(path, None).derive("session-cookie") == first  # every worker agrees
    assert ring.derive("csrf") != first
    old_id = ring.current_id
    ring.rotate(path)
    assert ring.derive("session-cookie") != first
    assert ring.derive("session-cookie", old_id) == first
    assert repr(ring).count("KeyRing") == 1 and base64.b64encode(first).decode() not in repr(ring)


def test_concurrent_first_start_creates_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    pid_rings = []
    for _ in range(3):
        pid_rings.append(KeyRing.load(path, None))
    assert len({r.current_id for r in pid_rings}) == 1
    # A file made by someone else with loose permissions is still used (with a warning).
    loose = tmp_path / "loose.key"
    loose.write_text(f"k1 {_b64key()}\n")
    os.chmod(loose, 0o644)
    assert KeyRing.load(loose, None).current_id == "k1"
