"""Tokens the gateway issues to API clients, and the PMS credentials stored for them.

A token is `pgw_` and 43 URL-safe characters (256 random bits): the prefix makes a leaked
token recognisable to secret scanners and to the gateway (a `pgw_` value in a query string
is refused, never forwarded). It is shown once, when made; the durable database keeps its
SHA-256 only (the token is random, so a fast hash is as good as a slow one), with an
expiry. `rotate` issues a new token and shortens the old one's life to an overlap, so the
integration can be switched without a gap; `revoke` ends every token of the client.

Every API request looks its token up in the database (one indexed read): there is no
cache, so a revocation made by the CLI on any host is in force on every worker and
instance at the very next request, with or without Redis.

The PMS may need its own credential (its API token) behind the gateway's: it is stored
encrypted with the operator's key ring (associated data names the client, so a
ciphertext copied to another client does not decrypt) and injected upstream in place of
the gateway token, which the PMS never sees.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth.keys import KeyRing
from gateway.db import Database
from gateway.db.tables import api_client_credentials, api_tokens

TOKEN_PREFIX = "pgw_"
HINT_CHARS = 10  # `pgw_` and six characters: enough to tell tokens apart in a listing


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_api_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)


async def purge_ended_tokens(conn: AsyncConnection, before: datetime) -> int:
    """Forget the rows of tokens that ended (expired or revoked) before `before`: the
    retention purge's cutoff, so `api-clients list` shows an ended token as long as the
    audit trail keeps the requests made with it."""
    result = await conn.execute(delete(api_tokens).where(
        or_(api_tokens.c.expires_at < before, api_tokens.c.revoked_at < before)
    ))
    return result.rowcount or 0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    client: str
    hint: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    header: str
    value: str


class ApiTokens:
    """The `api_tokens` and `api_client_credentials` tables, for the CLI and the gateway."""

    def __init__(self, database: Database, keyring: KeyRing) -> None:
        self.database = database
        self.keyring = keyring

    async def issue(self, client: str, valid_for: timedelta, now: datetime | None = None) -> tuple[str, TokenInfo]:
        """A new token for `client` (shown to the operator once, stored as a hash)."""
        now = now or datetime.now(UTC)
        token = new_api_token()
        info = TokenInfo(client, token[:HINT_CHARS], now, now + valid_for, None)
        async with self.database.begin() as conn:
            await conn.execute(insert(api_tokens).values(
                client=client, token_hash=api_token_hash(token), hint=info.hint,
                created_at=now, expires_at=info.expires_at,
            ))
        return token, info

    async def rotate(
        self, client: str, valid_for: timedelta, overlap: timedelta, now: datetime | None = None
    ) -> tuple[str, TokenInfo, int]:
        """A new token; the client's live tokens stay valid for `overlap` more at most.
        Returns the token, its record, and how many old tokens were shortened."""
        now = now or datetime.now(UTC)
        until = now + overlap
        shortened = await self._end_live(client, after=until, expires_at=until)
        token, info = await self.issue(client, valid_for, now)
        return token, info, shortened

    async def revoke(self, client: str, now: datetime | None = None) -> int:
        """End every token of `client` now; returns how many were live."""
        now = now or datetime.now(UTC)
        return await self._end_live(client, after=now, revoked_at=now)

    async def _end_live(self, client: str, *, after: datetime, **values: datetime) -> int:
        """Set `values` on the client's unrevoked tokens that expire after `after` (rotation
        shortens them, revocation ends them); returns how many there were."""
        async with self.database.begin() as conn:
            result = await conn.execute(
                update(api_tokens)
                .where(and_(api_tokens.c.client == client, api_tokens.c.revoked_at.is_(None),
                            api_tokens.c.expires_at > after))
                .values(**values)
            )
        return result.rowcount or 0

    async def lookup(self, token: str) -> TokenInfo | None:
        """The record of a presented token (valid or not), or None when unknown."""
        async with self.database.connect() as conn:
            row = (await conn.execute(
                select(api_tokens).where(api_tokens.c.token_hash == api_token_hash(token))
            )).first()
        return None if row is None else _info(row)

    async def list(self, client: str | None = None) -> list[TokenInfo]:
        query = select(api_tokens).order_by(api_tokens.c.client, api_tokens.c.created_at)
        if client is not None:
            query = query.where(api_tokens.c.client == client)
        async with self.database.connect() as conn:
            return [_info(row) for row in await conn.execute(query)]

    # -- the PMS's credential for a client -----------------------------------------------

    @staticmethod
    def _aad(client: str) -> bytes:
        return f"api-client-credential:{client}".encode()

    async def set_upstream_credential(self, client: str, header: str, value: str) -> None:
        secret, key_id = self.keyring.encrypt(value.encode(), self._aad(client))
        async with self.database.begin() as conn:
            await conn.execute(delete(api_client_credentials).where(api_client_credentials.c.client == client))
            await conn.execute(insert(api_client_credentials).values(
                client=client, header=header, secret=secret, key_id=key_id,
            ))

    async def clear_upstream_credential(self, client: str) -> bool:
        async with self.database.begin() as conn:
            result = await conn.execute(
                delete(api_client_credentials).where(api_client_credentials.c.client == client)
            )
        return bool(result.rowcount)

    async def upstream_credential(self, client: str) -> UpstreamCredential | None:
        async with self.database.connect() as conn:
            row = (await conn.execute(
                select(api_client_credentials).where(api_client_credentials.c.client == client)
            )).first()
        if row is None:
            return None
        value = self.keyring.decrypt(row.secret, row.key_id, self._aad(client)).decode()
        return UpstreamCredential(row.header, value)


def _info(row) -> TokenInfo:
    return TokenInfo(row.client, row.hint, row.created_at, row.expires_at, row.revoked_at)
