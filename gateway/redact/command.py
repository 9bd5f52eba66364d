"""`pms-gateway redact`: run one message through a policy's redaction, offline.

For operators writing a policy ("what would the relay send for this confirmation?") and
for scripts. Reads one message on stdin, writes the redacted message on stdout; with
`--explain`, lists what was found on stderr once the message is written (detector,
location, span, action - never the value), so the two never interleave.

`--channel NAME` applies a channel - one of the policy's, or a provider preset
(`gateway.redact.presets`) - exactly as the egress proxy applies it to a request body
(the same `Redactor.redact_http_body` call): recipients kept, name fields learnt, HTML
and MIME fields read as such. Without `--policy`, the rules of `policies/default.yaml`
apply (the policy a fresh install runs), not a different built-in set.

Exit status: 0 redacted (possibly unchanged), 2 bad input or policy, 3 blocked by the
policy (nothing is written on stdout, so a pipeline does not send it).

A policy that uses the `hash` operator needs its key in the environment variable
`PMS_GATEWAY_REDACTION_KEY` (the running gateway takes it from its deployment settings).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import BinaryIO, TextIO

from gateway.policy import ConfigError, load_policy
from gateway.redact.engine import Redactor
from gateway.redact.outcome import Outcome
from gateway.redact.policy import ChannelRule, NotificationsPolicy
from gateway.redact.presets import PRESETS

FORMATS: tuple[str, ...] = ("text", "json", "form", "email")
HASH_KEY_VARIABLE = "PMS_GATEWAY_REDACTION_KEY"

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_BLOCKED = 3

_CONTENT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
    "form": "application/x-www-form-urlencoded; charset=utf-8",
}
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")


class BadInput(ValueError):
    """Input or policy the command cannot work with; the message is shown as is."""


DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


def load_notifications_policy(path: Path | None) -> NotificationsPolicy:
    """The `notifications:` section of a gateway policy file or directory.

    Goes through the central policy loader, so the whole file is validated and errors
    name the file, line and key. Without a path, policies/default.yaml's (the built-in
    defaults only where that file is not installed).
    """
    if path is None:
        if not DEFAULT_POLICY.is_file():
            return NotificationsPolicy()
        path = DEFAULT_POLICY
    try:
        return load_policy(path).notifications
    except ConfigError as exc:
        raise BadInput(f"invalid policy:\n{exc}") from None
    except OSError as exc:
        raise BadInput(f"cannot read policy {path}: {exc.strerror or exc}") from None


def _check_input(format: str, data: bytes) -> None:
    """Refuse input that is not what --format says, rather than guess."""
    if not data.strip():
        raise BadInput("no message on standard input")
    if format == "json":
        try:
            json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"standard input is not valid JSON: {exc}") from None
    elif format == "form":
        if b"=" not in data or re.search(rb"[\s]", data.strip()):
            raise BadInput("standard input is not a URL-encoded form (name=value&...)")
    elif format == "email":
        if not _HEADER_LINE.match(data.lstrip()):
            raise BadInput("standard input is not an e-mail message (it must start with headers)")


def find_channel(policy: NotificationsPolicy, name: str) -> ChannelRule:
    """A channel of the policy by name, else a provider preset by name."""
    for channel in policy.channels:
        if channel.name == name:
            return channel
    try:
        return ChannelRule(preset=name)  # type: ignore[call-arg]
    except ValueError:
        known = [c.name for c in policy.channels]
        raise BadInput(f"no channel {name!r} in the policy ({', '.join(known) or 'none'}) and no "
                       f"such preset ({', '.join(sorted(PRESETS))})") from None


def channel_content_type(channel: ChannelRule, data: bytes) -> str:
    """The Content-Type a PMS would send to this channel (JSON or form for `auto`)."""
    if channel.format == "auto":
        return _CONTENT_TYPES["json" if data.lstrip()[:1] in (b"{", b"[") else "form"]
    return _CONTENT_TYPES.get(channel.format, _CONTENT_TYPES["text"])


def _redact(redactor: Redactor, format: str, data: bytes, channel: ChannelRule | None,
            content_type: str | None) -> Outcome:
    if channel is not None:
        if channel.smtp:
            return redactor.redact_email(data)
        return redactor.redact_http_body(data, content_type or channel_content_type(channel, data), channel)
    if format == "email":
        return redactor.redact_email(data)
    stdin_channel = ChannelRule(name="stdin", egress_host="stdin", format=format)  # type: ignore[arg-type]
    return redactor.redact_http_body(data, _CONTENT_TYPES[format], stdin_channel)


def redact_command(
    format: str,
    policy_path: Path | None,
    explain: bool,
    stdin: BinaryIO,
    stdout: BinaryIO,
    stderr: TextIO,
    channel_name: str | None = None,
    content_type: str | None = None,
) -> int:
    """Redact one message from `stdin` to `stdout`; returns the exit status."""
    channel: ChannelRule | None = None
    try:
        if format not in FORMATS:
            raise BadInput(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        policy = load_notifications_policy(policy_path)
        if channel_name is not None:
            channel = find_channel(policy, channel_name)
        key = os.environ.get(HASH_KEY_VARIABLE, "").encode()
        try:
            redactor = Redactor(policy, hash_key=key)
        except ValueError as exc:
            raise BadInput(f"{exc} (set {HASH_KEY_VARIABLE})") from None
        data = stdin.read()
        if channel is None:
            _check_input(format, data)
        elif not data.strip():
            raise BadInput("no message on standard input")
    except BadInput as exc:
        stderr.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT

    outcome = _redact(redactor, format, data, channel, content_type)
    if not outcome.blocked:
        stdout.write(outcome.data)
        stdout.flush()
    if explain:
        _explain(outcome, stderr)
    if outcome.blocked:
        stderr.write(f"blocked: {outcome.reason}\n")
        return EXIT_BLOCKED
    return EXIT_OK


def _explain(outcome: Outcome, stderr: TextIO) -> None:
    """One line per finding, after the message: detector, location, span, action."""
    stderr.flush()
    for finding in outcome.findings:
        stderr.write(
            f"{finding.detector}\t{finding.location}\t{finding.start}-{finding.end}"
            f"\t{finding.action}\n"
        )
    stderr.flush()
