"""The durable schema: what must survive restarts and be shared by every instance.

This file always describes the *latest* schema. A fresh database is created from it
directly; existing databases are brought up to it by the steps in `engine.MIGRATIONS`.
So a change here (new table, new column) needs a matching step appended there.

Timestamps are timezone-aware UTC everywhere (`UTCDateTime`): PostgreSQL keeps them as
`timestamptz`, SQLite as fixed-width UTC text, which sorts and compares correctly.
Naive datetimes are refused rather than guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so later migration steps can refer to them by name.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        # SQLite has no timezone type; storing naive UTC keeps one text format throughout.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True, autoincrement=True)


def _user_fk(
    *, nullable: bool = False, ondelete: str = "CASCADE", index: bool = True
) -> Column[int]:
    return Column(
        "user_id", Integer, ForeignKey("users.id", ondelete=ondelete), nullable=nullable,
        index=index,
    )


def _created() -> Column[datetime]:
    return Column("created_at", UTCDateTime, nullable=False, default=utcnow)


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False, default=utcnow),
)

users = Table(
    "users",
    metadata,
    _id(),
    Column("name", String(255), nullable=False, unique=True, doc="normalised username"),
    Column("active", Boolean, nullable=False, default=True, server_default=true()),
    _created(),
    Column("deactivated_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)

totp_factors = Table(
    "totp_factors",
    metadata,
    _id(),
    _user_fk(),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False, doc="which operator key encrypted it"),
    _created(),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("last_step_offset", Integer, nullable=True, doc="clock drift seen at last use"),
    Column(
        "last_step", BigInteger, nullable=True,
        doc="latest accepted time step: the replay floor that survives store restarts",
    ),
    Column("label", String(255), nullable=True),
)

webauthn_credentials = Table(
    "webauthn_credentials",
    metadata,
    _id(),
    _user_fk(),
    Column("credential_id", LargeBinary, nullable=False, unique=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False, default=0, server_default="0"),
    Column("transports", String(255), nullable=False, default="", server_default=""),
    _created(),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("label", String(255), nullable=True),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    _id(),
    _user_fk(),
    Column("code_hash", String(255), nullable=False),
    _created(),
    Column("used_at", UTCDateTime, nullable=True),
)

enrollment_invites = Table(
    "enrollment_invites",
    metadata,
    _id(),
    _user_fk(),
    Column("code_hash", String(255), nullable=False, unique=True),
    _created(),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

support_grants = Table(
    "support_grants",
    metadata,
    _id(),
    _user_fk(),  # the support account the code opens
    Column("code_hash", String(255), nullable=False, unique=True),
    Column("operator", String(255), nullable=False, doc="who granted it"),
    Column("reason", String(255), nullable=True),
    _created(),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)
"""Temporary access codes for the PMS vendor's support accounts: one login each."""

known_ips = Table(
    "known_ips",
    metadata,
    _id(),
    _user_fk(index=False),  # the unique (user_id, ip_prefix) index serves lookups by user
    Column("ip_prefix", String(64), nullable=False, doc="IPv4 address or IPv6 /64 network"),
    Column("first_seen", UTCDateTime, nullable=False, default=utcnow),
    Column("last_seen", UTCDateTime, nullable=False, default=utcnow),
    Column("country", String(8), nullable=True),
    Column("city", String(255), nullable=True),
    UniqueConstraint("user_id", "ip_prefix"),
)

login_history = Table(
    "login_history",
    metadata,
    _id(),
    _user_fk(nullable=True, ondelete="SET NULL"),  # history outlives a deleted user row
    Column("username", String(255), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False, default=utcnow, index=True),
    Column("ip", String(64), nullable=False),
    Column("country", String(8), nullable=True),
    Column("city", String(255), nullable=True),
    Column("asn", BigInteger, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("login_type", String(32), nullable=False),
    Column("device_id", String(128), nullable=True),
    Column("new_ip", Boolean, nullable=False, default=False, server_default=false()),
    Column("reason", String(255), nullable=True),
    # Who the address's network belongs to by RDAP, when the background lookup had finished
    # by the time of the attempt (gateway.risk.rdap); never waited for.
    Column("owner", String(255), nullable=True),
    Index("ix_login_history_ip_at", "ip", "at"),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("instance_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False, doc="position in this instance's hash chain"),
    Column("at", UTCDateTime, nullable=False),
    Column("request_id", String(64), nullable=True),
    # Personal fields (user_name, client_ip, identifiers) hold AES-GCM ciphertext under the
    # key of `subject` (see subject_keys), so erasing a person never breaks the hash chain.
    Column("user_name", Text, nullable=True),
    Column("session_hash", String(128), nullable=True),
    Column("device_id", String(128), nullable=True),
    Column("client_ip", Text, nullable=True),
    Column("country", String(8), nullable=True),
    Column("city", String(255), nullable=True),
    Column("asn", BigInteger, nullable=True),
    Column("method", String(16), nullable=True),
    Column("path", Text, nullable=True),
    Column("query", Text, nullable=True),
    Column("status", Integer, nullable=True),
    Column("bytes_in", BigInteger, nullable=False, default=0, server_default="0"),
    Column("bytes_out", BigInteger, nullable=False, default=0, server_default="0"),
    Column("duration_ms", Float, nullable=False, default=0.0, server_default="0"),
    Column("upstream_ms", Float, nullable=True),
    Column("decision", String(32), nullable=False),
    Column("reason", String(255), nullable=True),
    # JSON kept as the exact text the hash chain was computed over (no re-serialising).
    Column("identifiers", Text, nullable=False, default="{}", server_default=text("'{}'")),
    Column("channel", String(16), nullable=False, default="http", server_default="http"),
    Column("extra", Text, nullable=False, default="{}", server_default=text("'{}'")),
    Column("subject", String(32), nullable=True, doc="subject_keys.id of the personal fields"),
    Column("tags", Text, nullable=False, default="", server_default=text("''"),
           doc="keyed hashes of the client IP and identifiers, for queries without decrypting"),
    Column("prev_mac", String(128), nullable=False),
    Column("mac", String(128), nullable=False),
    UniqueConstraint("instance_id", "seq"),
    # The console reads newest first, (at, id) descending, and resumes below a record: these
    # hand it the newest matches of a time range straight from the index (migration 8).
    Index(None, "at", "id"),
    Index(None, "subject", "at", "id"),
    Index("ix_audit_records_rare_decision", "decision", "at", "id",
          postgresql_where=text("decision <> 'allowed'"), sqlite_where=text("decision <> 'allowed'")),
    Index("ix_audit_records_rare_channel", "channel", "at",
          postgresql_where=text("channel <> 'http'"), sqlite_where=text("channel <> 'http'")),
    Index(None, "request_id"),
    # PostgreSQL: tags matched exactly (`--ip`, `--identifier`) in a GIN index of the tag
    # list, the expression gateway.audit.query.tag_list spells. SQLite matches with LIKE.
    Index("ix_audit_records_tag_list", text("string_to_array(btrim(tags), ' ')"),
          postgresql_using="gin").ddl_if(dialect="postgresql"),
    # PostgreSQL: path prefixes (`--path /reports/`) as a range of this index.
    Index("ix_audit_records_path", "path", "at", postgresql_ops={"path": "text_pattern_ops"}).ddl_if(
        dialect="postgresql"),
)

audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("mac", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)

audit_anchors = Table(
    "audit_anchors",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False, doc="oldest record kept by the last purge"),
    Column("prev_mac", String(128), nullable=False, doc="the MAC that record chains to"),
    Column("mac", String(128), nullable=False, doc="HMAC of the anchor itself: only the key holder moves it"),
    Column("purged_before", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)
"""Where each instance's chain starts after retention purged its oldest records."""

subject_keys = Table(
    "subject_keys",
    metadata,
    Column("id", String(32), primary_key=True, doc="random; what audit_records.subject holds"),
    Column("lookup", String(64), nullable=True, unique=True,
           doc="keyed hash of 'user:NAME' or 'ip:ADDR'; cleared on erasure"),
    Column("wrapped_key", LargeBinary, nullable=True, doc="AES key wrapped by the audit key; NULL = erased"),
    _created(),
    Column("erased_at", UTCDateTime, nullable=True),
)
"""One data key per person (user or anonymous address): destroying it erases their
personal fields from the audit trail without touching the chained records."""

api_tokens = Table(
    "api_tokens",
    metadata,
    _id(),
    Column("client", String(64), nullable=False, index=True, doc="the name under `api_clients:`"),
    Column("token_hash", String(64), nullable=False, unique=True, doc="SHA-256 of the token; never the token"),
    Column("hint", String(16), nullable=False, doc="the token's first characters, to tell tokens apart"),
    _created(),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)
"""Tokens of API clients (`pms-gateway api-clients add/rotate/revoke`)."""

api_client_credentials = Table(
    "api_client_credentials",
    metadata,
    Column("client", String(64), primary_key=True),
    Column("header", String(255), nullable=False, doc="the header the PMS reads its credential from"),
    Column("secret", LargeBinary, nullable=False, doc="AES-GCM ciphertext of the header value"),
    Column("key_id", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)
"""The PMS's own credential for an API client, injected in place of the gateway token."""

operators = Table(
    "operators",
    metadata,
    _id(),
    Column("name", String(64), nullable=False, unique=True),
    Column("permissions", String(255), nullable=False, doc="comma-separated: view, manage_sessions, ..."),
    Column("password_hash", String(255), nullable=True, doc="argon2id; NULL until enrolled"),
    Column("totp_ciphertext", LargeBinary, nullable=True, doc="AES-GCM under the key ring; NULL until enrolled"),
    Column("totp_key_id", String(64), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True, doc="TOTP replay floor"),
    Column("enroll_code_hash", String(255), nullable=True, doc="keyed hash of the one-time enrollment code"),
    Column("enroll_expires_at", UTCDateTime, nullable=True),
    Column("generation", Integer, nullable=False, default=1, server_default="1",
           doc="raised when permissions or factors change: console sessions of an older one end"),
    _created(),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)
"""Console operators (`pms-gateway operators add`): accounts of their own, not PMS users."""
