"""The few statements and transactions whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db import Database
from gateway.db.engine import _SQLITE_BEGIN


def insert_or_ignore(dialect: str, table: Table, index_elements: list[str]) -> Any:
    """INSERT ... ON CONFLICT (index_elements) DO NOTHING: safe when several instances
    create the same row at once."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def upsert(dialect: str, table: Table, index_elements: list[str], update: list[str]) -> Any:
    """INSERT ... ON CONFLICT (index_elements) DO UPDATE SET <update> = excluded.<update>."""
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table)
    return statement.on_conflict_do_update(
        index_elements=index_elements, set_={name: statement.excluded[name] for name in update}
    )


@asynccontextmanager
async def write_transaction(database: Database) -> AsyncIterator[AsyncConnection]:
    """A transaction that takes SQLite's write lock at BEGIN (IMMEDIATE). A deferred one
    that reads first and writes later fails at once with "database is locked" when
    another writer got there in between; IMMEDIATE waits (busy_timeout) instead."""
    async with database.engine.connect() as conn:
        await conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        async with conn.begin():
            yield conn
