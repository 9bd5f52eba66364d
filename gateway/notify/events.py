"""What an alert says. Written for the hotel's IT operator, and never carrying guest data:
only the staff user, the address, where it is, and what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.notify.throttle import HeldBack

AlertKind = Literal[
    "new_ip_login", "lockout", "every_login", "blocked_notification", "support_access", "identity_mismatch",
    "mail_held", "mail_delayed", "mail_failed", "alerts_held",
]


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    subject: str  # the e-mail subject line
    lines: tuple[str, ...]  # the body, one fact per line
    user: str | None = None
    ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the webhook's structured fields
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def dedupe_key(self) -> tuple[str, str | None, str | None, str | None] | None:
        """Alerts with one key within `alerts.min_interval` are sent once. Support access
        events differ by what happened (grant, login, revoke), so each gets through. None:
        never deduplicated, only capped: `every_login` promises an alert for each login
        (strict mode), and `alerts_held` is the summary of what the cap held back."""
        if self.kind in ("every_login", "alerts_held"):
            return None
        return self.kind, self.user, self.ip, self.subject if self.kind == "support_access" else None

    def payload(self, instance_id: str) -> dict[str, Any]:
        return {
            "event": self.kind, "at": self.at.isoformat(timespec="seconds"), "instance_id": instance_id,
            "user": self.user, "ip": self.ip, "summary": self.subject, **self.details,
        }

    def body(self, instance_id: str, held: HeldBack | None = None) -> str:
        text = list(self.lines)
        text.append(f"Time: {self.at.strftime('%Y-%m-%d %H:%M:%S')} UTC")
        text.append(f"Gateway: {instance_id}")
        if held:
            text.append("")
            text.append(f"{held.count} further alert(s) were not sent in the last hour (alerts.max_per_hour); "
                        "see `pms-gateway logins` for the full history. Held back:")
            text += held_lines(held)
        return "\n".join(text) + "\n"


def held_lines(held: HeldBack) -> list[str]:
    """One line per (kind, user, address) the cap held back: how often, first and last time."""
    groups: dict[tuple[str, str | None, str | None], list[Alert]] = {}
    for alert in held.alerts:
        groups.setdefault((alert.kind, alert.user, alert.ip), []).append(alert)
    lines = []
    for (kind, user, ip), alerts in groups.items():
        first, last = alerts[0].at.strftime("%H:%M:%S"), alerts[-1].at.strftime("%H:%M:%S")
        when = first if len(alerts) == 1 else f"{first} to {last}"
        lines.append(f"  {kind}: {user or '-'} from {ip or '-'} x{len(alerts)} ({when} UTC)")
    if held.count > len(held.alerts):
        lines.append(f"  and {held.count - len(held.alerts)} more not itemised")
    return lines


def held_payload(held: HeldBack) -> list[dict[str, Any]]:
    """The held-back alerts for the webhook: kind, user, address, time."""
    return [{"event": a.kind, "user": a.user, "ip": a.ip, "at": a.at.isoformat(timespec="seconds")} for a in held.alerts]
