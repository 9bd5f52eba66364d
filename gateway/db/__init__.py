"""Durable state (users, factors, known IPs, login history, audit trail) in SQL.

`db = await open_database(config.database_url)` connects and upgrades the schema; then
`async with db.begin() as conn: await conn.execute(...)` with the tables below.
"""

from __future__ import annotations

from .engine import (
    MIGRATIONS,
    Database,
    MigrationStep,
    SchemaTooNewError,
    create_engine,
    normalise_url,
    open_database,
)
from .tables import (
    UTCDateTime,
    audit_anchors,
    audit_chain_heads,
    audit_records,
    enrollment_invites,
    known_ips,
    login_history,
    metadata,
    recovery_codes,
    schema_migrations,
    subject_keys,
    totp_factors,
    users,
    utcnow,
    webauthn_credentials,
)

__all__ = [
    "MIGRATIONS",
    "Database",
    "MigrationStep",
    "SchemaTooNewError",
    "UTCDateTime",
    "audit_anchors",
    "audit_chain_heads",
    "audit_records",
    "create_engine",
    "enrollment_invites",
    "known_ips",
    "login_history",
    "metadata",
    "normalise_url",
    "open_database",
    "recovery_codes",
    "schema_migrations",
    "subject_keys",
    "totp_factors",
    "users",
    "utcnow",
    "webauthn_credentials",
]
