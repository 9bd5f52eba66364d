"""A device session: who is signed in, on which browser, since when, with which PMS cookies."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field


def new_token() -> str:
    """256 random bits, URL-safe: session ids, pending-login tokens, device ids."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are stored and audited only as this hash, so a store dump grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def device_label(device_id: str | None) -> str | None:
    """How a device is named in the audit trail, the login history and the console: a
    short hash. The device cookie is half of what a session is bound to, so its value is
    never written where people read records (a reader must not be able to forge it)."""
    return token_hash(device_id)[:16] if device_id else None


@dataclass
class DeviceSession:
    id_hash: str
    user: str
    group: str | None
    device_id: str
    created: float
    last_active: float
    ip: str
    user_agent: str
    login_type: str
    vault: dict[str, str] = field(default_factory=dict)  # upstream cookies, name -> value
    expires_at: float | None = None  # an earlier end than the group's max_lifetime (support access)

    def deadline(self, max_lifetime: float) -> float:
        """When this session ends at the latest."""
        end = self.created + max_lifetime
        return end if self.expires_at is None else min(end, self.expires_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeviceSession:
        return cls.from_fields(json.loads(data))

    @classmethod
    def from_fields(cls, fields: dict) -> DeviceSession:
        """A session of its own from decoded fields (which stay unchanged: they may be
        kept to build the next request's session from)."""
        session = cls(**fields)
        session.vault = dict(session.vault)
        return session


@dataclass
class EndedSession:
    """Why a session ended, kept a day so its browser can be told on its next request."""

    reason: str  # logout | idle | expired | replaced | deactivated | revoked
    at: float
    by_ip: str | None = None  # for `replaced`: where the newer login came from
    user: str | None = None  # whose it was: a request presenting it is audited under them

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EndedSession:
        return cls(**json.loads(data))


@dataclass(frozen=True, slots=True)
class LogoutSubject:
    """Whose PMS session the gateway ends, and why: its upstream logout call is audited
    under that user and session, and sent with that browser's User-Agent (a PMS that binds
    sessions to the agent would log a spurious "user agent changed" otherwise)."""

    user: str | None
    session_hash: str | None
    user_agent: str | None
    reason: str

    @classmethod
    def of(cls, session: DeviceSession, reason: str) -> LogoutSubject:
        return cls(session.user, session.id_hash, session.user_agent or None, reason)
