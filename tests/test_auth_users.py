"""The user directory: names, groups, activation, recovery codes, invites, and the
`users`/`keys` commands. Most tests run on SQLite; those marked `both` also on a real
PostgreSQL. The TOTP tests (tests/test_auth_totp.py) reuse the fixtures defined here."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from gateway.auth.keys import KeyRing
from gateway.auth.recovery import ALPHABET, CODE_COUNT
from gateway.auth.users import UnknownUserError, UserDirectory
from gateway.db import Database, open_database, recovery_codes, webauthn_credentials
from gateway.policy.schema import Policy
from gateway.store import EphemeralStore, MemoryStore
from tests.fixtures_services import run_async

T0 = 1_700_000_010.0  # 10 s into a 30-second step

POLICY_DATA: dict[str, Any] = {
    "property": "Hotel Test",
    "groups": {
        "reception": {"members": ["alice", "Bob", "re:^frontdesk-"]},
        "management": {"members": ["manager", r"re:^mgr\d+$"]},
    },
    "default_group": "reception",
    "second_factor": {"invite_valid_for": "1h"},
}


def make_policy(**changes: Any) -> Policy:
    data = {**POLICY_DATA, **changes}
    return Policy.model_validate(data)


class Clock:
    """Injectable time: tests move it instead of sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


both = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite unless a test is parametrised with `both`."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path}/state/gateway.db"
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = await open_database(db_url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "secret.key", None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy_box() -> dict[str, Policy]:
    """The current policy; tests replace it to simulate a reload."""
    return {"policy": make_policy()}


@pytest.fixture
def make_directory(database: Database, keyring: KeyRing, clock: Clock,
                   policy_box: dict[str, Policy]) -> Callable[..., UserDirectory]:
    def make(store: EphemeralStore | None = None) -> UserDirectory:
        return UserDirectory(database, keyring, lambda: policy_box["policy"],
                             store or MemoryStore(), clock=clock)
    return make


@pytest.fixture
def directory(make_directory: Callable[..., UserDirectory]) -> UserDirectory:
    return make_directory()


# -- names and groups --------------------------------------------------------------------
def test_normalise(directory: UserDirectory) -> None:
    assert directory.normalise("ALICE") == directory.normalise(" alice ") == "alice"
    assert directory.normalise("ａｌｉｃｅ") == "alice"  # full-width letters (NFKC)
    assert directory.normalise("Straße") == "strasse"
    for bad in ["", "   ", "ali\u200bce", "al\x00ice", "a\nb", "a\u2028b", "x" * 256]:
        with pytest.raises(ValueError):
            directory.normalise(bad)


def test_normalise_follows_policy(directory: UserDirectory, policy_box: dict[str, Policy]) -> None:
    policy_box["policy"] = make_policy(login={"usernames": {"trim": False, "casefold": False}})
    assert directory.normalise("Alice") == "Alice"
    assert directory.normalise(" Alice") == " Alice"


def test_group_of(directory: UserDirectory, policy_box: dict[str, Policy]) -> None:
    assert directory.group_of("alice") == "reception"
    assert directory.group_of(" BOB ") == "reception"  # listed as "Bob": normalised too
    assert directory.group_of("frontdesk-7") == "reception"
    assert directory.group_of("FrontDesk-7") == "reception"
    assert directory.group_of("x-frontdesk-7") == "reception"  # not anchored: search
    assert directory.group_of("manager") == "management"
    assert directory.group_of("MGR12") == "management"
    assert directory.group_of("mgr12x") == "reception"  # anchored pattern misses: default
    assert directory.group_of("stranger") == "reception"
    policy_box["policy"] = make_policy(login={"usernames": {"unknown": "refuse"}})
    assert directory.group_of("stranger") is None
    assert directory.group_of("mgr3") == "management"
    policy_box["policy"] = make_policy(login={"usernames": {"unknown": "refuse"}},
                                       default_group=None)
    assert directory.group_of("stranger") is None
    policy_box["policy"] = make_policy(default_group=None)
    assert directory.group_of("stranger") is None  # default_group, but none configured


def test_broken_member_pattern_is_refused_at_load() -> None:
    """A member pattern that does not compile is the operator's mistake, named at load
    (it used to be skipped in silence, leaving those users in the default group)."""
    data = {**POLICY_DATA, "groups": {**POLICY_DATA["groups"], "management": {"members": ["re:(broken"]}}}
    with pytest.raises(ValueError, match="broken"):
        Policy.model_validate(data)


# -- users -------------------------------------------------------------------------------
@both
async def test_one_user_for_every_spelling(directory: UserDirectory) -> None:
    first = await directory.ensure("ALICE")
    assert (await directory.ensure(" alice ")).id == first.id
    assert (await directory.get("alice")) == first
    assert first.name == "alice" and first.active and first.group == "reception"
    assert not first.has_totp and not first.has_security_key
    assert await directory.get("nobody") is None
    racers = await asyncio.gather(*(directory.ensure("carol") for _ in range(5)))
    assert len({r.id for r in racers}) == 1
    assert [u.name for u in await directory.list()] == ["alice", "carol"]


@both
async def test_activation(directory: UserDirectory, clock: Clock) -> None:
    await directory.ensure("alice")
    off = await directory.set_active("Alice", False)
    assert not off.active and off.deactivated_at is not None
    assert off.deactivated_at.timestamp() == pytest.approx(clock.now)
    again = await directory.set_active("alice", False)
    assert again.deactivated_at == off.deactivated_at  # the first deactivation is kept
    on = await directory.set_active("alice", True)
    assert on.active and on.deactivated_at is None
    with pytest.raises(UnknownUserError):
        await directory.set_active("ghost", False)


async def test_remove_factors(directory: UserDirectory, database: Database) -> None:
    from gateway.auth.totp import code_at, time_step

    secret = directory.new_totp_secret()
    assert await directory.enroll_totp("alice", secret, code_at(secret, time_step(T0)))
    user = await directory.require("alice")
    async with database.begin() as conn:
        await conn.execute(webauthn_credentials.insert().values(
            user_id=user.id, credential_id=b"cred", public_key=b"pk"))
    await directory.generate_recovery_codes("alice")
    user = await directory.require("alice")
    assert user.has_totp and user.has_security_key and await directory.has_second_factor("alice")
    assert await directory.remove_factors("alice") == 2
    assert not await directory.has_second_factor("alice")
    assert await directory.recovery_codes_left("alice") == 0
    assert not await directory.has_second_factor("ghost")
    with pytest.raises(UnknownUserError):
        await directory.remove_factors("ghost")


@both
async def test_rotation_reencrypts_every_secret(directory: UserDirectory, keyring: KeyRing,
                                                tmp_path: Path, clock: Clock) -> None:
    from gateway.auth.totp import code_at, time_step
    from gateway.auth.users import reencrypt_totp_secrets

    secrets = {name: directory.new_totp_secret() for name in ("alice", "bob")}
    for name, secret in secrets.items():
        assert await directory.enroll_totp(name, secret, code_at(secret, time_step(clock())))
    old_id = keyring.current_id
    new_id = keyring.rotate(tmp_path / "secret.key")
    assert await reencrypt_totp_secrets(directory.database, keyring) == 2
    assert await reencrypt_totp_secrets(directory.database, keyring) == 0  # already current
    fresh = KeyRing.load(tmp_path / "secret.key", None)
    assert fresh.key_ids == [new_id, old_id]
    restarted = UserDirectory(directory.database, fresh, directory.policy, MemoryStore(), clock=clock)
    clock.advance(60)
    for name, secret in secrets.items():
        assert (await restarted.verify_totp(name, code_at(secret, time_step(clock())))).ok


# -- recovery codes ----------------------------------------------------------------------
@both
async def test_recovery_codes_work_once_each(directory: UserDirectory, database: Database) -> None:
    codes = await directory.generate_recovery_codes("alice")
    assert len(codes) == CODE_COUNT == len(set(codes))
    shape = re.compile(f"^[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")
    assert all(shape.match(code) for code in codes)
    async with database.connect() as conn:
        stored = (await conn.execute(select(recovery_codes.c.code_hash))).scalars().all()
    assert not any(code in h or code.replace("-", "") in h for code in codes for h in stored)
    assert await directory.use_recovery_code("alice", "2222-2222-2222") is None
    left = [await directory.use_recovery_code("alice", code) for code in codes[:-1]]
    assert left == list(range(CODE_COUNT - 1, 0, -1))
    assert [await directory.use_recovery_code("alice", code) for code in codes[:-1]] == [None] * 9
    # typed loosely: upper case, spaces instead of dashes
    assert await directory.use_recovery_code("ALICE", codes[-1].upper().replace("-", " ")) == 0


@both
async def test_recovery_code_double_use_succeeds_once(directory: UserDirectory) -> None:
    codes = await directory.generate_recovery_codes("alice")
    results = await asyncio.gather(*(directory.use_recovery_code("alice", codes[0]) for _ in range(6)))
    assert sorted(results, key=lambda r: r is None) == [CODE_COUNT - 1] + [None] * 5


async def test_recovery_codes_replaced_and_bound_to_user(directory: UserDirectory, keyring: KeyRing,
                                                         tmp_path: Path) -> None:
    old = await directory.generate_recovery_codes("alice")
    new = await directory.generate_recovery_codes("alice")
    assert await directory.use_recovery_code("alice", old[0]) is None
    await directory.generate_recovery_codes("bob")
    assert await directory.use_recovery_code("bob", new[0]) is None
    assert await directory.use_recovery_code("ghost", new[0]) is None
    keyring.rotate(tmp_path / "secret.key")  # codes hashed under the old key still work
    assert await directory.use_recovery_code("alice", new[0]) == CODE_COUNT - 1


# -- invites -----------------------------------------------------------------------------
@both
async def test_invite_one_time_and_bound_to_user(directory: UserDirectory) -> None:
    code = await directory.create_invite("Alice")
    await directory.ensure("bob")
    assert not await directory.redeem_invite("bob", code)
    assert not await directory.redeem_invite("alice", "not-a-code")
    results = await asyncio.gather(*(directory.redeem_invite("alice", code) for _ in range(4)))
    assert results.count(True) == 1
    assert not await directory.redeem_invite("alice", code)


async def test_invite_expiry_and_replacement(directory: UserDirectory, clock: Clock) -> None:
    invite = await directory.issue_invite("alice")
    assert invite.expires_at.timestamp() == pytest.approx(clock.now + 3600)
    clock.advance(3601)
    assert not await directory.redeem_invite("alice", invite.code)
    first = await directory.create_invite("alice")
    second = await directory.create_invite("alice")
    assert not await directory.redeem_invite("alice", first)
    await directory.set_active("alice", False)
    assert not await directory.redeem_invite("alice", second)
    await directory.set_active("alice", True)
    clock.advance(3599)
    assert await directory.redeem_invite("alice", second.upper())


# -- commands ----------------------------------------------------------------------------
@pytest.fixture
def cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in __import__("os").environ if n.startswith("PMS_GATEWAY_")]:
        monkeypatch.delenv(name)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY_DATA))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                      "policy_paths": [str(policy)]}))
    return config


def test_users_and_keys_commands(cli_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gateway.auth.totp import code_at, time_step
    from gateway.auth.users import totp_associated_data
    from gateway.cli import app
    from gateway.config import load_config

    ended: list[tuple[Any, str, str]] = []

    async def end_user_sessions(store: Any, name: str, reason: str) -> int:
        ended.append((store, name, reason))
        return 0

    fake = types.ModuleType("gateway.sessions.revocation")
    fake.end_user_sessions = end_user_sessions  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.sessions.revocation", fake)

    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "-c", str(cli_config)])
        assert result.exit_code == code, result.output
        return result.output

    assert "no users yet" in cli("users", "list")
    out = cli("users", "invite", "  Alice ")
    invite = re.search(r"Invite for alice \(group reception\): (\S+)", out)
    assert invite and "Valid until" in out
    settings = load_config(cli_config)
    key_file = settings.resolved_key_file
    assert key_file.exists()

    async def enroll_and_redeem() -> str:
        db = await open_database(settings.resolved_database_url)
        try:
            directory = UserDirectory(db, KeyRing.load(key_file, None), make_policy, MemoryStore())
            assert await directory.redeem_invite("alice", invite.group(1))
            secret = directory.new_totp_secret()
            import time as _time
            assert await directory.enroll_totp("alice", secret, code_at(secret, time_step(_time.time())))
            return secret
        finally:
            await db.close()

    secret = run_async(enroll_and_redeem())
    listing = cli("users", "list")
    assert re.search(r"^alice\s+reception\s+yes\s+totp\s", listing, re.M), listing

    old_id = KeyRing.load(key_file, None).current_id
    rotated = cli("keys", "rotate")
    new_id = rotated.splitlines()[0].strip()
    assert new_id != old_id and "re-encrypted 1 TOTP secret" in rotated
    assert cli("keys", "list").split() == [new_id, "(current)", old_id]

    async def stored_secret() -> tuple[str, str]:
        from gateway.db import totp_factors, users
        db = await open_database(settings.resolved_database_url)
        try:
            async with db.connect() as conn:
                row = (await conn.execute(
                    select(totp_factors.c.secret_ciphertext, totp_factors.c.key_id, users.c.id)
                    .join(users))).one()
        finally:
            await db.close()
        ring = KeyRing.load(key_file, None)
        return ring.decrypt(row[0], row[1], totp_associated_data(row[2], "alice")).decode(), row[1]

    assert run_async(stored_secret()) == (secret, new_id)

    assert "deactivated alice" in cli("users", "deactivate", "ALICE")
    assert [(name, reason) for _, name, reason in ended] == [("alice", "deactivated")]
    assert re.search(r"^alice\s+reception\s+no \(", cli("users", "list"), re.M)
    assert "is deactivated" in cli("users", "invite", "alice", code=1)
    assert "activated alice" in cli("users", "activate", "alice")
    out = cli("users", "reset-2fa", "alice")
    assert "removed 1 factor" in out and "users invite alice" in out
    assert [(name, reason) for _, name, reason in ended][-1] == ("alice", "revoked")  # a lost phone ends sessions
    assert "no user 'ghost'" in cli("users", "deactivate", "ghost", code=1)
    assert "empty" in cli("users", "activate", " ", code=1)
    lines = cli("users", "list", "--json").splitlines()
    assert [__import__("json").loads(line)["totp"] for line in lines] == [False]


def test_invite_refused_for_unknown_users(cli_config: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    data = {**POLICY_DATA, "login": {"usernames": {"unknown": "refuse"}}}
    policy = Path(yaml.safe_load(cli_config.read_text())["policy_paths"][0])
    policy.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["users", "invite", "stranger", "-c", str(cli_config)])
    assert result.exit_code == 1 and "in no group" in result.output

