"""What `run` needs, checked one thing at a time: `config check` prints every check as
OK/FAIL with its reason, and `run` runs the essential ones before it starts, so a missing
Redis or key file is one sentence naming the address or path and the fix, not a
traceback from deep inside a driver.

Addresses are shown without their passwords (store and database URLs often carry one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.config import Config


@dataclass(frozen=True)
class Check:
    name: str  # the config key or thing checked, e.g. "store_url"
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class StartupRefused(Exception):
    """`run` cannot start; the message names the thing, its address or path, and the fix."""


def shown_url(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_data_dir(path: Path, key: str = "data_dir", *, create: bool = True) -> Check:
    """A folder the gateway can write in (created when `create`; else its nearest parent is checked)."""
    try:
        if create or path.exists():
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
                pass
        else:
            parent = next(p for p in path.absolute().parents if p.exists())
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(parent))
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(parent))
            return Check(key, True, f"{path} is created at the first start (in {parent})")
    except OSError as exc:
        reason = "a part of the path is a file" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else (
            exc.strerror or str(exc))
        return Check(key, False, f"{path} is not a writable folder ({reason}): create it and give the "
                     f"gateway's user write access, or set {key}")
    return Check(key, True, f"{path} is writable")


def check_key(config: Config) -> Check:
    from gateway.auth.keys import KeyFileError, KeyRing

    if os.environ.get(config.key_env, "").strip():
        try:
            ring = KeyRing.load(config.resolved_key_file, os.environ[config.key_env], create=False)
        except KeyFileError as exc:
            return Check("key_env", False, f"${config.key_env}: {exc}")
        return Check("key_env", True, f"${config.key_env} holds {len(ring.key_ids)} key(s)")
    path = config.resolved_key_file
    if not path.exists():
        if config.key_file is not None:  # named on purpose: a new key would make stored secrets unreadable
            return Check("key_file", False, f"{path} not found: restore it from your backup (secrets stored with "
                         "it are unreadable without it); for a new installation remove key_file and the "
                         "gateway creates <data_dir>/secret.key")
        return Check("key_file", True, f"{path} is created at the first start")
    try:
        ring = KeyRing.load(path, None, create=False)
    except (KeyFileError, OSError, UnicodeDecodeError) as exc:
        return Check("key_file", False, f"{path} cannot be read ({exc}): restore it from your backup")
    return Check("key_file", True, f"{path} holds {len(ring.key_ids)} key(s)")


async def check_store(config: Config, timeout: float = 3.0) -> Check:
    url = config.store_url
    if not url or url.startswith("memory"):
        return Check("store_url", True, "memory:// (this process only)")
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url.split("?")[0], socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Check("store_url", False, f"Redis at {shown_url(url)} does not answer ({_reason(exc)}): start Redis "
                     "or correct store_url")
    finally:
        await client.aclose()
    return Check("store_url", True, f"Redis at {shown_url(url)} answers")


async def check_database(config: Config) -> Check:
    url = config.resolved_database_url
    if url.startswith("sqlite"):
        return Check("database_url", True, f"{shown_url(url)} (a file in data_dir)")
    from sqlalchemy import text

    from gateway.db.engine import create_engine

    try:
        engine = create_engine(url)
    except Exception as exc:  # an unknown driver or a malformed URL
        return Check("database_url", False, f"{shown_url(url)} is not usable ({_reason(exc)}): correct database_url")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # driver errors differ: asyncpg, OSError, SQLAlchemy wrappers
        return Check("database_url", False, f"the database at {shown_url(url)} does not answer ({_reason(exc)}): "
                     "start PostgreSQL or correct database_url")
    finally:
        await engine.dispose()
    return Check("database_url", True, f"{shown_url(url)} answers")


async def check_upstream(config: Config) -> Check:
    import aiohttp

    url = config.upstream.url + "/"
    timeout = aiohttp.ClientTimeout(total=config.upstream.connect_timeout + 5, connect=config.upstream.connect_timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
            url, allow_redirects=False, ssl=config.upstream.verify_tls
        ) as response:
            where = response.headers.get("Location")
            return Check("upstream.url", True, f"{url} answered {response.status}"
                         + (f" (redirect to {where})" if where else ""))
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        return Check("upstream.url", False, f"{url} cannot be reached ({_reason(exc)}): start the PMS or "
                     "correct upstream.url")


async def check_smtp(name: str, host: str, port: int, timeout: float = 5.0) -> Check:
    """Connect and read the server's greeting (220)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            greeting = (await asyncio.wait_for(reader.readline(), timeout)).decode("ascii", "replace").strip()
        finally:
            writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        return Check(name, False, f"{host}:{port} cannot be reached ({_reason(exc)}): start the mail server or "
                     f"correct {name}")
    if not greeting.startswith("220"):
        return Check(name, False, f"{host}:{port} did not greet as a mail server ({greeting[:60]!r})")
    return Check(name, True, f"{host}:{port} answered {greeting[:60]}")


def check_geoip(config: Config) -> list[Check]:
    from maxminddb import InvalidDatabaseError, open_database

    checks = []
    for field in ("city", "asn", "anonymous_ip"):
        path: Path | None = getattr(config.geoip, field)
        if path is None:
            continue
        try:
            with open_database(str(path)) as db:
                kind = db.metadata().database_type
        except (OSError, InvalidDatabaseError, ValueError) as exc:
            checks.append(Check(f"geoip.{field}", False, f"{path} cannot be read ({_reason(exc)}): download the "
                                ".mmdb file or correct the path"))
            continue
        checks.append(Check(f"geoip.{field}", True, f"{path} ({kind})"))
    return checks


async def all_checks(config: Config, *, connect: bool) -> list[Check]:
    """Every check `config check` prints; the network ones only with `connect`."""
    checks = [check_data_dir(config.data_dir, create=False), check_key(config), *check_geoip(config)]
    if connect:
        checks += [await check_upstream(config), await check_store(config), await check_database(config)]
        if config.smtp.host:
            checks.append(await check_smtp("smtp.host", config.smtp.host, config.smtp.port))
        if config.smtp_relay.enabled:
            smarthost = config.smtp_relay.smarthost
            checks.append(await check_smtp("smtp_relay.smarthost", smarthost.host, smarthost.port))
    return checks


async def before_start(config: Config) -> None:
    """What `run` needs before it opens anything; raises StartupRefused at the first FAIL."""
    for check in (check_data_dir(config.data_dir), check_key(config), await check_store(config),
                  await check_database(config)):
        refuse_unless(check)


def refuse_unless(check: Check) -> None:
    if not check.ok:
        raise StartupRefused(f"{check.name}: {check.detail}")


def listener_keys(config: Config) -> dict[int, str]:
    """Which setting chose each port `run` binds: named when the port is taken."""
    keys = {config.listen.port: "listen.port"}
    if config.admin.enabled:
        keys.setdefault(config.admin.port, "admin.port")
    if config.smtp_relay.enabled:
        keys.setdefault(config.smtp_relay.port, "smtp_relay.port")
    if config.egress.enabled:
        keys.setdefault(config.egress.port, "egress.port")
    return keys


def explain(exc: BaseException, ports: dict[int, str]) -> str | None:
    """One or two lines for an error the operator causes and fixes; None for anything else
    (a bug keeps its traceback)."""
    from gateway.policy.errors import ConfigError, migrate_hint

    for error in _chain(exc):
        if isinstance(error, StartupRefused):
            return str(error)
        if isinstance(error, ConfigError):
            fix = migrate_hint(error)
            return str(error) + (f"\nfix: this file was valid before the loader grew stricter; run: {fix}" if fix else "")
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            found = re.search(r"\('?([^',]*)'?, (\d+)", str(error))
            host, port = (found.group(1), int(found.group(2))) if found else ("", 0)
            key = ports.get(port, "the port setting")
            return (f"{key}: {host}:{port} is already in use by another program (another gateway?): stop it, "
                    f"or choose another port with {key}")
        if isinstance(error, OSError) and error.filename:
            return (f"{error.filename}: {(error.strerror or str(error)).lower()}: check the path in the "
                    "configuration and that the gateway's user may use it")
    return None


def check_config(config: Config, connect: bool) -> int:
    """`pms-gateway config check`: the policy and every check, one line each; 1 on any FAIL."""
    import typer

    from gateway.policy.errors import ConfigError, migrate_hint
    from gateway.policy.loader import load_policy_files

    lines: list[Check] = []
    try:
        loaded = load_policy_files(*config.policy_paths)
    except ConfigError as exc:
        fix = migrate_hint(exc)
        lines += [Check("policy_paths", False, str(problem)) for problem in exc.problems]
        if fix:
            lines.append(Check("policy_paths", False, f"fix: {fix}"))
    else:
        files = ", ".join(map(str, loaded.files))
        lines.append(Check("policy_paths", True, f"{files} load ({len(loaded.policy.groups)} groups)"))
    lines += asyncio.run(all_checks(config, connect=connect))
    if not connect:
        lines.append(Check("connections", True, "not tried (--connect reaches the PMS, Redis, the database, mail)"))
    for line in lines:
        typer.echo(str(line))
    return 0 if all(line.ok for line in lines) else 1


@contextlib.contextmanager
def operator_errors(debug: bool, ports: dict[int, str]) -> Iterator[None]:
    """Around `run` and `demo`: an error the operator causes ends the command with its
    sentence on stderr and exit status 2; `--debug` (or any other error) keeps the traceback."""
    import typer

    try:
        yield
    except Exception as exc:
        message = explain(exc, ports)
        if message is None or debug:
            raise
        typer.echo(message, err=True)
        raise typer.Exit(2) from None


def _reason(exc: BaseException) -> str:
    """A driver error in a few words: the OS reason when there is one."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
        if isinstance(error, asyncio.TimeoutError):
            return "no answer in time"
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
