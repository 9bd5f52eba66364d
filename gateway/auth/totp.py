"""Time-based one-time codes (RFC 6238): 6 digits, 30-second steps, SHA-1.

Those are the parameters every authenticator app uses by default; anything else breaks
some app. This module is pure computation: which time step, if any, a typed code belongs
to. The replay rule (a step is accepted once, and never an earlier one) needs shared state
and lives in `gateway.auth.users.UserDirectory.verify_totp`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from typing import Literal

import pyotp

__all__ = ["DIGITS", "STEP_SECONDS", "WINDOW", "TotpResult", "code_at", "matching_step",
           "check_secret", "clean_code", "time_step"]

DIGITS = 6
STEP_SECONDS = 30
WINDOW = 1
"""Steps accepted either side of the current one: covers a phone clock off by up to ~30 s
and the time it takes to type the code, without tripling the guessing odds further."""

_CODE = re.compile(r"^[0-9]{%d}$" % DIGITS)


@dataclass(frozen=True, slots=True)
class TotpResult:
    """The outcome of checking a code. `step_offset` is the matched step minus the current
    one (the phone's clock drift, in steps) when the code matched a step."""

    ok: bool
    reason: Literal["ok", "invalid", "replayed", "no_factor"]
    step_offset: int | None = None


def time_step(now: float) -> int:
    return int(now // STEP_SECONDS)


def check_secret(secret: str) -> str:
    """The secret in canonical form (upper case, no padding or spaces); ValueError when it
    is not base32 or shorter than 128 bits (RFC 4226 asks for at least that)."""
    canonical = secret.replace(" ", "").upper().rstrip("=")
    try:
        raw = base64.b32decode(canonical + "=" * (-len(canonical) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("a TOTP secret is base32 text") from None
    if len(raw) < 16:
        raise ValueError("a TOTP secret needs at least 128 bits")
    return canonical


def clean_code(code: str) -> str | None:
    """The code without the spaces people type ("123 456"), or None when it is not six
    ASCII digits (so "١٢٣٤٥٦" or "12345" never reach the comparison)."""
    cleaned = code.replace(" ", "").replace("\u00a0", "").strip()
    return cleaned if _CODE.match(cleaned) else None


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def matching_step(secret: str, code: str, now: float, *, floor: int | None = None,
                  window: int = WINDOW) -> tuple[int | None, bool]:
    """(step, replayed) for `code` at time `now`.

    Every step of the window is compared, in constant time and without stopping at the
    first match, so timing says nothing about which step matched. Steps at or below
    `floor` (already accepted once) do not count; when the code matches only such steps,
    the answer is (None, True). The current step is preferred, then the nearest one.
    """
    cleaned = clean_code(code)
    if cleaned is None:
        return None, False
    current = time_step(now)
    fresh: list[int] = []
    replayed = False
    for offset in range(-window, window + 1):
        step = current + offset
        if step < 0:
            continue
        if hmac.compare_digest(code_at(secret, step).encode(), cleaned.encode()):
            if floor is not None and step <= floor:
                replayed = True
            else:
                fresh.append(step)
    if fresh:
        return min(fresh, key=lambda s: (abs(s - current), s)), False
    return None, replayed
