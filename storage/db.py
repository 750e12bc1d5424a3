"""Database engine and sessions for any SQLAlchemy URL (SQLite by default, PostgreSQL in deployments)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from storage.migrations import migrate


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets a query read while an index run writes; foreign keys make ON DELETE CASCADE work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_database(url: str) -> sessionmaker[Session]:
    """Connect to `url`, create or migrate its tables, and return a session factory."""
    engine: Engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
