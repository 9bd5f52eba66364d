"""Issue 8, item 8: hostile policy files are refused with `file:line: key: message`.

Each file below once crashed `pms-gateway policy check` with a traceback, killed the
reload watcher (every later edit ignored), or passed the check and then made every
correct password a 500. Now each is refused by the CLI (exit 1, one line per problem,
no traceback) and by the watcher, which keeps the last good policy, keeps watching and
picks up the next good edit. A fuzz test feeds the loader arbitrary bytes, YAML-ish text
and mutated copies of the shipped policy: it returns a Policy or raises ConfigError,
nothing else.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli import app
from gateway.policy import ConfigError, load_policy
from gateway.policy.reload import PolicyHolder
from tests.login_env import Browser, login_env

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
DIGITS = "9" * 400


def _billion_laughs() -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return ("\n".join(lines) + "\nproperty: *a8\n").encode()


# name -> (file content, expected line, expected key, a word of the message)
HOSTILE: dict[str, tuple[bytes, int | None, str, str]] = {
    "latin-1 byte": (b"property: H\xf4tel du Lac\n", 1, "(top level)", "UTF-8"),
    "nesting x2000": (b"[" * 2000 + b"\n", 1, "", "nested"),
    "400-digit duration": (f"sessions:\n  idle_timeout: {DIGITS}\n".encode(), 2, "sessions.idle_timeout", "longest"),
    "400-digit duration with unit": (
        f"second_factor:\n  pending_login_timeout: {DIGITS}s\n".encode(), 2, "second_factor.pending_login_timeout", "longest"),
    "400-digit count": (f"sessions:\n  max_devices: {DIGITS}\n".encode(), 2, "sessions.max_devices", "less than"),
    "5000-digit number": (f"sessions:\n  max_devices: {'9' * 5000}\n".encode(), 2, "sessions.max_devices", "too long"),
    "infinite duration": (b"second_factor:\n  pending_login_timeout: .inf\n", 2, "second_factor.pending_login_timeout", "longest"),
    "NaN duration": (b"sessions:\n  idle_timeout: .nan\n", 2, "sessions.idle_timeout", "duration"),
    "!!timestamp": (b"property: !!timestamp 2024-01-01\n", 1, "property", "!!timestamp"),
    "!!binary": (b"property: !!binary aGVsbG8=\n", 1, "property", "!!binary"),
    "!!set": (b"captcha:\n  when: !!set {tor: null}\n", 2, "captcha.when", "!!set"),
    "python tag": (b"property: !!python/object/apply:os.system [id]\n", 1, "property", "tag"),
    "billion laughs": (_billion_laughs(), 1, "a0", "anchors"),
    "alias": (b"networks:\n  office: &o [10.0.0.0/8]\ngroups:\n  x:\n    networks: *o\n", 2, "networks.office", "anchors"),
    "duplicate key": (b"sessions:\n  idle_timeout: 5m\n  idle_timeout: 50m\n", 3, "sessions.idle_timeout", "duplicate"),
    "NUL byte": (b"property: a\x00b\n", 1, "(top level)", "not allowed"),
    "global regex flag": (b"login:\n  public_paths: ['(?i)^/static/']\n", 2, "login.public_paths.0", "regular expression"),
    "broken member pattern": (b"groups:\n  g:\n    members: ['re:(']\n", 3, "groups.g.members.0", "regular expression"),
    "oversized file": (b"# " + b"x" * (128 * 1024) + b"\n", None, "(top level)", "larger than"),
    "two documents": (b"property: a\n---\nproperty: b\n", 2, "", "one YAML document"),
}


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / (re.sub(r"\W+", "-", name).strip("-") + ".yaml")
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", HOSTILE)
def test_policy_check_refuses_hostile_file_with_file_line_key(tmp_path, name):
    content, line, key, word = HOSTILE[name]
    path = _write(tmp_path, name, content)
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, BaseException) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = result.stderr.splitlines()
    assert len(errors) == 1, errors
    where = f"{path}:{line}: " if line else f"{path}: "
    assert errors[0].startswith(where + (f"{key}: " if key else "")), errors
    assert word in errors[0], errors


@pytest.mark.parametrize("name", HOSTILE)
async def test_reload_watcher_rejects_hostile_file_and_picks_up_the_next_good_edit(tmp_path, name):
    content, line, key, word = HOSTILE[name]
    path = tmp_path / "site.yaml"
    path.write_text("sessions:\n  idle_timeout: 10m\n")
    holder = PolicyHolder([path])
    holder.start_watching(interval=0.01)
    try:
        path.write_bytes(content)
        await _until(lambda: holder.last_rejection is not None)
        assert holder.watching and holder().sessions.idle_timeout == 600
        assert holder.last_rejection.startswith(f"{path}:{line}: " if line else f"{path}: ")
        assert word in holder.last_rejection
        path.write_text("sessions:\n  idle_timeout: 20m\n")
        await _until(lambda: holder().sessions.idle_timeout == 1200)
        assert holder.watching and holder.last_rejection is None
    finally:
        await holder.stop()


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_infinite_timeout_edit_leaves_logins_working_on_the_demo_pms(tmp_path):
    """The edit that once made every correct password a 500 is refused; logins carry on."""
    base, site = tmp_path / "10-default.yaml", tmp_path / "20-site.yaml"
    base.write_text(DEFAULT_POLICY, encoding="utf-8")
    site.write_text("second_factor:\n  pending_login_timeout: 5m\n")
    async with login_env(tmp_path, policy=load_policy(base, site)) as env:
        env.policy.paths = [base, site]
        env.policy.start_watching(interval=0.01)
        site.write_text("second_factor:\n  pending_login_timeout: .inf\n")
        await _until(lambda: env.policy.last_rejection is not None)
        assert env.policy.watching and env.policy().second_factor.pending_login_timeout == 300
        browser = Browser(env)
        try:
            status, headers, _ = await browser.password("alice")
            assert status == 303 and headers["Location"] == "/_gateway/2fa"
        finally:
            await browser.close()
            await env.policy.stop()


# -- fuzz: the loader returns a Policy or raises ConfigError, and nothing else ------------

_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="policy-fuzz-"))
_YAMLISH = st.lists(
    st.sampled_from(list("[]{}:,-?&*!|>'\"#%@`\\ \n\t.0123456789eEsmhdwxyz_+") + [
        "sessions", "idle_timeout", "groups", "access", "deny", "allow", "members", "re:", "!!timestamp ",
        "!!int ", "!!str ", "&a ", "*a", "<<", "=", ".inf", ".nan", "~", "null", "true", "on", "\u00e9",
        "\ufeff", "\x00", "\x85", "---\n", "...\n", "%YAML 1.1\n", DIGITS,
    ]),
    max_size=120,
).map("".join)
_HOSTILE_VALUES = ["&a x", "*a", "!!timestamp 2020-01-01", DIGITS, ".inf", "-1", "[" * 50, "{a: 1, a: 2}",
                   "'(?i)x'", "!!binary aGk=", "null", "[]", "{}", "1e400", "0", "é", "\"\\x00\""]


def _check_loads_or_refuses(content: bytes) -> None:
    path = _FUZZ_DIR / "fuzz.yaml"
    path.write_bytes(content)
    try:
        load_policy(path)
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith(f"{path}") for p in exc.problems)


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@_FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_load_or_raise_config_error(content):
    _check_loads_or_refuses(content)


@_FUZZ
@given(_YAMLISH)
def test_yamlish_text_loads_or_raises_config_error(text):
    _check_loads_or_refuses(text.encode("utf-8", "surrogatepass"))


@settings(_FUZZ, max_examples=80)  # each example parses the whole shipped policy
@given(st.data())
def test_mutated_shipped_policy_loads_or_raises_config_error(data):
    lines = DEFAULT_POLICY.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["value", "delete", "duplicate", "indent", "chars"]))
        line = lines[index]
        if kind == "value" and ":" in line:
            lines[index] = line.partition(":")[0] + ": " + data.draw(st.sampled_from(_HOSTILE_VALUES))
        elif kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, line)
        elif kind == "indent":
            lines[index] = " " * data.draw(st.integers(0, 6)) + line.lstrip()
        else:
            lines[index] = line + data.draw(_YAMLISH)
        if not lines:
            break
    _check_loads_or_refuses("\n".join(lines).encode("utf-8", "surrogatepass"))
