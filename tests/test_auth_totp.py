"""TOTP enrollment and verification with an injected clock: the window, replay refusal
across workers (two directories on one Redis) and across restarts (the floor in the
database), drift recording and secrets bound to their owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select, update

from gateway.auth.totp import TotpResult, code_at, matching_step, time_step
from gateway.auth.users import UserDirectory
from gateway.db import Database, totp_factors, users
from gateway.store import EphemeralStore, MemoryStore, create_store
from tests.fixtures_services import unique_name
from tests.test_auth_users import (  # noqa: F401  (fixtures)
    T0,
    Clock,
    both,
    clock,
    database,
    db_url,
    directory,
    keyring,
    make_directory,
    policy_box,
)

STEP = time_step(T0)


async def enrolled(directory: UserDirectory, name: str = "alice") -> str:
    """Enroll `name` with the code of the clock's current step (which becomes the floor;
    tests then move the clock on before logging in)."""
    secret = directory.new_totp_secret()
    assert await directory.enroll_totp(name, secret, code_at(secret, time_step(directory.clock())))
    return secret


async def _factor(database: Database, name: str = "alice") -> dict:
    async with database.connect() as conn:
        row = (await conn.execute(
            select(totp_factors).join(users).where(users.c.name == name))).one()
    return dict(row._mapping)


# -- pure computation ---------------------------------------------------------------------
def test_matching_step_window_and_format() -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    for offset in (-1, 0, 1):
        assert matching_step(secret, code_at(secret, STEP + offset), T0) == (STEP + offset, False)
    for offset in (-2, 2, 10):
        assert matching_step(secret, code_at(secret, STEP + offset), T0) == (None, False)
    assert matching_step(secret, code_at(secret, STEP), T0, floor=STEP) == (None, True)
    spaced = code_at(secret, STEP)[:3] + " " + code_at(secret, STEP)[3:]
    assert matching_step(secret, spaced, T0) == (STEP, False)
    for junk in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12345\n"]:
        assert matching_step(secret, junk, T0)[0] is None


# -- enrollment ---------------------------------------------------------------------------
async def test_enrollment_needs_a_valid_first_code(directory: UserDirectory, database: Database) -> None:
    secret = directory.new_totp_secret()
    assert not await directory.enroll_totp("alice", secret, code_at(secret, STEP + 2))
    assert not await directory.has_second_factor("alice")
    with pytest.raises(ValueError):
        await directory.enroll_totp("alice", "not base32!", "123456")
    with pytest.raises(ValueError):
        await directory.enroll_totp("alice", "JBSWY3DP", "123456")  # 40 bits: too short
    assert await directory.enroll_totp("Alice", secret, code_at(secret, STEP))
    user = await directory.get("alice")
    assert user is not None and user.has_totp
    row = await _factor(database)
    assert secret.encode() not in row["secret_ciphertext"]
    assert row["key_id"] == directory.keyring.current_id and row["last_step"] == STEP
    # The enrollment code cannot be replayed to log in.
    assert await directory.verify_totp("alice", code_at(secret, STEP)) == TotpResult(False, "replayed", None)


async def test_reenrollment_replaces_and_deactivated_cannot_enroll(directory: UserDirectory,
                                                                   database: Database, clock: Clock) -> None:
    first = await enrolled(directory)
    clock.advance(90)
    second = await enrolled(directory)
    async with database.connect() as conn:
        count = len((await conn.execute(select(totp_factors.c.id))).all())
    assert count == 1
    clock.advance(90)
    assert not (await directory.verify_totp("alice", code_at(first, time_step(clock())))).ok
    assert (await directory.verify_totp("alice", code_at(second, time_step(clock())))).ok
    await directory.set_active("alice", False)
    assert not await directory.enroll_totp("alice", second, code_at(second, time_step(clock())))


def test_provisioning_uri_and_qr(directory: UserDirectory) -> None:
    secret = directory.new_totp_secret()
    uri = directory.provisioning_uri("ALICE", secret)
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert query["secret"] == [secret] and query["issuer"] == ["Hotel Test"]
    assert "alice" in parts.path
    svg = directory.qr_svg(uri)
    assert svg.startswith("<svg") and "<script" not in svg


# -- verification -------------------------------------------------------------------------
async def test_valid_code_window_and_drift(directory: UserDirectory, database: Database, clock: Clock) -> None:
    secret = await enrolled(directory)
    clock.advance(300)
    now = time_step(clock())
    assert await directory.verify_totp("alice", code_at(secret, now - 2)) == TotpResult(False, "invalid", None)
    assert await directory.verify_totp("alice", code_at(secret, now + 2)) == TotpResult(False, "invalid", None)
    assert await directory.verify_totp("alice", code_at(secret, now - 1)) == TotpResult(True, "ok", -1)
    row = await _factor(database)
    assert row["last_step_offset"] == -1 and row["last_step"] == now - 1
    assert row["last_used_at"].timestamp() == pytest.approx(clock())
    assert await directory.verify_totp("alice", code_at(secret, now)) == TotpResult(True, "ok", 0)
    assert await directory.verify_totp("alice", code_at(secret, now + 1)) == TotpResult(True, "ok", 1)
    assert (await _factor(database))["last_step_offset"] == 1


async def test_replay_and_earlier_steps_are_refused(directory: UserDirectory, clock: Clock) -> None:
    secret = await enrolled(directory)
    clock.advance(300)
    now = time_step(clock())
    code = code_at(secret, now)
    assert (await directory.verify_totp("alice", code)).ok
    assert await directory.verify_totp("alice", code) == TotpResult(False, "replayed", None)
    # The step before the last accepted one is refused, though still inside the window.
    assert await directory.verify_totp("alice", code_at(secret, now - 1)) == TotpResult(False, "replayed", None)
    # A later step is fine; after it, the previously current one is refused too.
    assert (await directory.verify_totp("alice", code_at(secret, now + 1))).ok
    clock.advance(30)
    assert not (await directory.verify_totp("alice", code_at(secret, now + 1))).ok
    assert (await directory.verify_totp("alice", code_at(secret, now + 2))).ok


async def test_no_factor(directory: UserDirectory) -> None:
    assert await directory.verify_totp("ghost", "123456") == TotpResult(False, "no_factor", None)
    await directory.ensure("bob")
    assert await directory.verify_totp("bob", "123456") == TotpResult(False, "no_factor", None)


async def test_concurrent_uses_of_one_code_succeed_once(directory: UserDirectory, clock: Clock) -> None:
    secret = await enrolled(directory)
    clock.advance(120)
    code = code_at(secret, time_step(clock()))
    results = await asyncio.gather(*(directory.verify_totp("alice", code) for _ in range(8)))
    assert [r.ok for r in results].count(True) == 1
    assert {r.reason for r in results if not r.ok} == {"replayed"}


async def test_secret_swapped_between_users_fails(directory: UserDirectory, database: Database,
                                                  clock: Clock) -> None:
    alice_secret = await enrolled(directory, "alice")
    await enrolled(directory, "bob")
    alice = await _factor(database, "alice")
    bob_user = await directory.require("bob")
    async with database.begin() as conn:
        await conn.execute(update(totp_factors).where(totp_factors.c.user_id == bob_user.id).values(
            secret_ciphertext=alice["secret_ciphertext"], key_id=alice["key_id"]))
    clock.advance(120)
    with pytest.raises(InvalidTag):
        await directory.verify_totp("bob", code_at(alice_secret, time_step(clock())))


# -- across workers and restarts ----------------------------------------------------------
@pytest.fixture
async def redis_pair(redis_url: str) -> AsyncIterator[tuple[EphemeralStore, EphemeralStore]]:
    """Two connections to one Redis under one fresh prefix: what two workers share."""
    prefix = unique_name("gw_auth_totp") + ":"
    first, second = create_store(redis_url, prefix=prefix), create_store(redis_url, prefix=prefix)
    try:
        yield first, second
    finally:
        for user_id in range(1, 5):
            await first.delete(f"totp:floor:{user_id}")
        await first.close()
        await second.close()


@both
async def test_two_workers_share_the_replay_floor(
    make_directory: Callable[..., UserDirectory], redis_pair: tuple[EphemeralStore, EphemeralStore],
    database: Database, clock: Clock,
) -> None:
    worker_a, worker_b = make_directory(redis_pair[0]), make_directory(redis_pair[1])
    secret = await enrolled(worker_a)
    clock.advance(120)
    now = time_step(clock())
    code = code_at(secret, now)
    results = await asyncio.gather(*(w.verify_totp("alice", code)
                                     for w in (worker_a, worker_b) * 3))
    assert [r.ok for r in results].count(True) == 1
    # The shared store alone refuses replays, even if the database copy were lost.
    async with database.begin() as conn:
        await conn.execute(update(totp_factors).values(last_step=None))
    assert await worker_b.verify_totp("alice", code) == TotpResult(False, "replayed", None)
    assert not (await worker_b.verify_totp("alice", code_at(secret, now - 1))).ok
    assert (await worker_b.verify_totp("alice", code_at(secret, now + 1))).ok
    assert not (await worker_a.verify_totp("alice", code_at(secret, now + 1))).ok


@both
async def test_floor_survives_a_fresh_memory_store(
    make_directory: Callable[..., UserDirectory], clock: Clock,
) -> None:
    before = make_directory(MemoryStore())
    secret = await enrolled(before)
    clock.advance(120)
    now = time_step(clock())
    assert (await before.verify_totp("alice", code_at(secret, now))).ok
    after_restart = make_directory(MemoryStore())
    assert await after_restart.verify_totp("alice", code_at(secret, now)) == TotpResult(False, "replayed", None)
    assert not (await after_restart.verify_totp("alice", code_at(secret, now - 1))).ok
    assert (await after_restart.verify_totp("alice", code_at(secret, now + 1))).ok
