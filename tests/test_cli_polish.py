"""CLI polish (issue 10 item 7): times typed as people type them, identifiers the policy
knows, no account made by a typo, `audit verify` finding the exported heads by itself, and
help texts whose lines end where sentences end."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli_help import reflow
from gateway.readers.moments import parse_moment
from tests.test_audit_cli import cli, ids, trail  # noqa: F401 (trail is a fixture)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
PRAGUE = ZoneInfo("Europe/Prague")


# -- one reader for --since/--until -----------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("2h", NOW - timedelta(hours=2)),
    ("7d", NOW - timedelta(days=7)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2w", NOW - timedelta(weeks=2)),
    ("today", datetime(2025, 3, 10, tzinfo=PRAGUE)),
    ("yesterday", datetime(2025, 3, 9, tzinfo=PRAGUE)),
    ("Yesterday", datetime(2025, 3, 9, tzinfo=PRAGUE)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=PRAGUE)),
    ("2025-03-01T08:00", datetime(2025, 3, 1, 8, tzinfo=PRAGUE)),
    ("2025-03-01 08:00", datetime(2025, 3, 1, 8, tzinfo=PRAGUE)),
    ("2025-03-01T08:00+00:00", datetime(2025, 3, 1, 8, tzinfo=UTC)),
])
def test_moments(text: str, expected: datetime) -> None:
    assert parse_moment(text, zone=PRAGUE, now=NOW) == expected


def test_yesterday_is_the_property_day_not_utc() -> None:
    late = datetime(2025, 3, 10, 23, 30, tzinfo=UTC)  # already 11 March in Prague
    assert parse_moment("yesterday", zone=PRAGUE, now=late) == datetime(2025, 3, 10, tzinfo=PRAGUE)


@pytest.mark.parametrize("text", ["2025", "25", "soon", "2025-13-01", "-2h", "7 days"])
def test_what_is_not_a_time_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time: write yesterday, .*2h or 7d.*2025-03-01"):
        parse_moment(text, now=NOW)


def test_audit_query_takes_yesterday_and_ages(trail: Path) -> None:  # noqa: F811
    code, output = cli(trail, "audit", "query", "--format", "jsonl", "--since", "yesterday")
    assert code == 0 and ids(output) == ["q2", "q3", "q4", "q5"]
    code, output = cli(trail, "audit", "query", "--format", "jsonl", "--until", "2d")
    assert code == 0 and ids(output) == ["q1"]
    code, output = cli(trail, "audit", "query", "--since", "2025")
    assert code == 1 and "--since: '2025' is not a time" in output and "Traceback" not in output


def test_unknown_identifier_names_the_defined_ones(trail: Path) -> None:  # noqa: F811
    code, output = cli(trail, "audit", "query", "--identifier", "reservaton=123")
    assert code == 1
    assert "no identifier 'reservaton'" in output and "defines reservation" in output
    assert len(output.strip().splitlines()) == 1
    code, output = cli(trail, "audit", "query", "--format", "jsonl", "--identifier", "reservation=124")
    assert code == 0 and ids(output) == ["q2"]


def test_audit_verify_finds_heads_in_the_data_dir(trail: Path) -> None:  # noqa: F811
    code, heads = cli(trail, "audit", "head")
    assert code == 0 and heads.strip()
    from gateway.audit.heads import heads_path

    heads_path(trail).write_text(heads)
    code, output = cli(trail, "audit", "verify")
    assert code == 0, output
    assert f"exported heads from {heads_path(trail)}" in output
    assert "1 exported head(s) checked" in output and "OK: every chain verifies" in output


# -- users invite: a typo makes no account ------------------------------------------------------


def _users(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": f"[{ROOT / 'policies/default.yaml'}]"}
    result = CliRunner().invoke(app, ["users", *args], env=env)
    return result.exit_code, result.output


def test_invite_of_a_name_no_group_lists_asks_for_create(tmp_path: Path) -> None:
    code, output = _users(tmp_path, "invite", "alcie")  # alice, typed in a hurry
    assert code == 1 and "'alcie' has no account and no group lists it" in output and "--create" in output
    assert "alcie" not in _users(tmp_path, "list")[1]
    code, output = _users(tmp_path, "invite", "alcie", "--create")
    assert code == 0 and "Invite for alcie (group reception)" in output
    code, output = _users(tmp_path, "invite", "alcie")  # an account now: no --create needed
    assert code == 0
    code, output = _users(tmp_path, "invite", "alice")  # listed by the policy
    assert code == 0 and "Invite for alice" in output
    code, output = _users(tmp_path, "invite", "frontdesk-7")  # matched by a group's pattern
    assert code == 0


# -- help texts ------------------------------------------------------------------------------


def test_reflow_breaks_only_after_sentences() -> None:
    text = """Summary line.

    Prints which files made up the effective policy and warns about settings that are
    legal but probably wrong. A second sentence, e.g. this one, continues
    here. `policy check` starts a third.

      indented example
      kept as laid out
    """
    assert reflow(text).split("\n\n") == [
        "Summary line.",
        "Prints which files made up the effective policy and warns about settings that are legal but probably"
        " wrong.\nA second sentence, e.g. this one, continues here.\n`policy check` starts a third.",
        "  indented example\n  kept as laid out",
    ]


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_help_line_ends_a_sentence() -> None:
    import typer.main

    for path, command in _commands(typer.main.get_command(app)):
        for paragraph in (command.help or "").split("\n\n")[1:]:
            for line in paragraph.splitlines():
                if line.startswith((" ", "- ", "* ")) or re.match(r"\d+\. ", line):
                    continue
                assert line.rstrip().endswith((".", ":", ")", "!", "?", "`")), (path, line)
