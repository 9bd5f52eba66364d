"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


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
