"""`pms-gateway redact`: one message in, the redacted message out, exit status."""

from __future__ import annotations

import io
import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.redact.command import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_OK, redact_command

POLICY = """\
notifications:
  detectors: [card, iban, email, phone, passport, date_of_birth]
  actions:
    card: {mask: last4}
    passport: block
  strict:
    names: redact
    services: [massage]
    leftover: block
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def run(fmt: str, data: bytes, policy: Path | None, explain: bool = False) -> tuple[int, bytes, str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    status = redact_command(fmt, policy, explain, io.BytesIO(data), stdout, stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def test_text_is_redacted_and_explained(policy: Path) -> None:
    status, out, err = run("text", b"Dear Ms Clarke, your massage. Card 4111 1111 1111 1111.",
                           policy, explain=True)
    assert status == EXIT_OK
    assert out == b"Dear Ms [NAME], your [SERVICE]. Card **** **** **** 1111."
    lines = err.splitlines()
    assert "card\tbody\t35-54\tmask" in lines
    assert all("4111" not in line and "Clarke" not in line for line in lines)


def test_json_and_form(policy: Path) -> None:
    status, out, _ = run("json", b'{"to": "+447911123456", "text": "mail jana@example.cz"}', policy)
    assert status == EXIT_OK
    assert json.loads(out) == {"to": "[PHONE]", "text": "mail [EMAIL]"}
    status, out, _ = run("form", b"Body=Call+%2B44+20+7946+0958&x=1", policy)
    assert (status, out) == (EXIT_OK, b"Body=Call+%5BPHONE%5D&x=1")


def test_email(policy: Path) -> None:
    message = EmailMessage()
    message["To"] = "Jana Nováková <jana@example.cz>"
    message["Subject"] = "Booking"
    message.set_content("Dobrý den, paní Novákové, karta 4111111111111111.\n")
    status, out, _ = run("email", message.as_bytes(), policy)
    assert status == EXIT_OK
    assert b"To: jana@example.cz" in out and "Nov".encode() not in out.split(b"\n\n", 1)[1]


def test_blocked_message_exits_3_and_writes_nothing(policy: Path) -> None:
    status, out, err = run("text", b"Passport no. 533401872", policy)
    assert status == EXIT_BLOCKED and out == b""
    assert "passport" in err and "533401872" not in err


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("json", b"{not json", "not valid JSON"),
        ("form", b"just some text", "not a URL-encoded form"),
        ("email", b"no headers here\n\nbody", "not an e-mail"),
        ("text", b"", "no message"),
        ("yaml", b"x", "unknown format"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error(policy: Path, fmt: str, data: bytes, message: str) -> None:
    status, out, err = run(fmt, data, policy)
    assert status == EXIT_BAD_INPUT and out == b""
    assert message in err


def test_bad_policy_exits_2_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("notifications:\n  detectors: [card, ssn]\n", encoding="utf-8")
    status, _, err = run("text", b"hello", path)
    assert status == EXIT_BAD_INPUT and "ssn" in err and "bad.yaml" in err
    status, _, err = run("text", b"hello", tmp_path / "missing.yaml")
    assert status == EXIT_BAD_INPUT and "missing.yaml" in err


def test_default_policy_without_a_file() -> None:
    status, out, _ = run("text", b"Card 4111111111111111", None)
    assert (status, out) == (EXIT_OK, b"Card ************1111")


def test_hash_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hash.yaml"
    path.write_text("notifications:\n  actions: {phone: hash}\n", encoding="utf-8")
    monkeypatch.delenv("PMS_GATEWAY_REDACTION_KEY", raising=False)
    status, _, err = run("text", b"+44 20 7946 0958", path)
    assert status == EXIT_BAD_INPUT and "PMS_GATEWAY_REDACTION_KEY" in err
    monkeypatch.setenv("PMS_GATEWAY_REDACTION_KEY", "k")
    status, out, _ = run("text", b"+44 20 7946 0958", path)
    assert status == EXIT_OK and out.startswith(b"[PHONE:")
