"""Versioned schema migrations: a database written by an earlier version is brought up to date on open.

The version lives in the one-row `schema_version` table; a database with tables but no version is
version 0 (the one-folder schema: `galleries.root`, images unique per gallery and path). Each step
runs in one transaction, with SQLAlchemy inspection and plain DDL that SQLite and PostgreSQL share;
SQLite cannot drop a table constraint, so there the `images` table is rebuilt instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, MetaData, delete, insert, inspect, select, text

from storage.models import Base, Gallery, Image, SchemaVersion, Source

log = logging.getLogger(__name__)


def _add_sources(conn: Connection) -> None:
    """v1: galleries hold several source folders. One source per gallery from its `root`; every
    image is assigned to it; images become unique per source and path."""
    Source.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    conn.execute(text(
        "INSERT INTO sources (gallery_id, root, added_at) "
        "SELECT id, root, created_at FROM galleries WHERE root IS NOT NULL"
    ))
    assign = "(SELECT s.id FROM sources s WHERE s.gallery_id = images.gallery_id)"
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_images(conn, assign)
        return
    conn.execute(text(
        "ALTER TABLE images ADD COLUMN source_id INTEGER REFERENCES sources (id) ON DELETE CASCADE"
    ))
    conn.execute(text(f"UPDATE images SET source_id = {assign}"))
    conn.execute(text("ALTER TABLE images DROP CONSTRAINT uq_image_gallery_path"))
    conn.execute(text(
        "ALTER TABLE images ADD CONSTRAINT uq_image_source_path UNIQUE (source_id, path)"
    ))
    conn.execute(text("CREATE INDEX ix_images_source_id ON images (source_id)"))


def _rebuild_sqlite_images(conn: Connection, assign: str) -> None:
    """SQLite: copy `images` into a table of the current definition (nothing references it)."""
    table = Image.__table__
    meta = MetaData()
    for target in (Gallery.__table__, Source.__table__):  # what its foreign keys point to
        target.to_metadata(meta)  # type: ignore[attr-defined]
    new = table.to_metadata(meta, name="images__new")  # type: ignore[attr-defined]
    new.indexes.clear()  # index names are global in SQLite: made after the rename
    new.create(conn)
    old = {c["name"] for c in inspect(conn).get_columns("images")}
    kept = ", ".join(c.name for c in new.columns if c.name in old)
    conn.execute(text(
        f"INSERT INTO images__new ({kept}, source_id) SELECT {kept}, {assign} FROM images"
    ))
    conn.execute(text("DROP TABLE images"))
    conn.execute(text("ALTER TABLE images__new RENAME TO images"))
    for index in table.indexes:  # type: ignore[attr-defined]
        index.create(conn)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_sources}
SCHEMA_VERSION = max(MIGRATIONS)


def schema_version(conn: Connection) -> int | None:
    """The database's schema version; None for an empty database."""
    tables = set(inspect(conn).get_table_names())
    if "galleries" not in tables:
        return None
    if "schema_version" not in tables:
        return 0
    return conn.scalar(select(SchemaVersion.version)) or 0


def migrate(engine: Engine) -> int:
    """Create the tables of an empty database, or run the migrations an older one lacks.

    Returns the version the database was at (`SCHEMA_VERSION` when it was empty or current).
    """
    with engine.begin() as conn:
        found = schema_version(conn)
        Base.metadata.create_all(conn, tables=[SchemaVersion.__table__])  # type: ignore[list-item]
        if found is None:
            Base.metadata.create_all(conn)
            conn.execute(insert(SchemaVersion).values(id=1, version=SCHEMA_VERSION))
            return SCHEMA_VERSION
        for version in range(found + 1, SCHEMA_VERSION + 1):
            log.info("migrating the database schema to version %d", version)
            MIGRATIONS[version](conn)
        if found < SCHEMA_VERSION:
            conn.execute(delete(SchemaVersion))
            conn.execute(insert(SchemaVersion).values(id=1, version=SCHEMA_VERSION))
        Base.metadata.create_all(conn)  # tables added since without a migration of their own
    return found
