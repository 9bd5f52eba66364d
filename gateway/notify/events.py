"""What an alert says. Written for the hotel's IT operator, and never carrying guest data:
only the staff user, the address, where it is, and what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

AlertKind = Literal["new_ip_login", "lockout", "every_login", "blocked_notification", "support_access", "mail_held"]


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
    def dedupe_key(self) -> tuple[str, str | None, str | None, str | None]:
        """Alerts with one key within `alerts.min_interval` are sent once. Support access
        events differ by what happened (grant, login, revoke), so each gets through."""
        return self.kind, self.user, self.ip, self.subject if self.kind == "support_access" else None

    def payload(self, instance_id: str) -> dict[str, Any]:
        return {
            "event": self.kind, "at": self.at.isoformat(timespec="seconds"), "instance_id": instance_id,
            "user": self.user, "ip": self.ip, "summary": self.subject, **self.details,
        }

    def body(self, instance_id: str, suppressed: int = 0) -> str:
        text = list(self.lines)
        text.append(f"Time: {self.at.strftime('%Y-%m-%d %H:%M:%S')} UTC")
        text.append(f"Gateway: {instance_id}")
        if suppressed:
            text.append("")
            text.append(f"{suppressed} further alert(s) were not sent in the last hour (alerts.max_per_hour); "
                        "see `pms-gateway logins` for the full history.")
        return "\n".join(text) + "\n"
