"""Databases written by earlier versions open, migrated: the one-folder schema gains sources.

The old schema is built here with its own column set. `TANSAKU_TEST_POSTGRES` (a SQLAlchemy URL of
an empty PostgreSQL database) runs the same test there too; without it that case is skipped.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError

from storage.db import open_database
from storage.migrations import SCHEMA_VERSION, migrate
from storage.models import Image, ImageStatus, SchemaVersion, Source


def old_schema() -> MetaData:
    """The tables as the one-folder version created them (galleries.root, images per gallery)."""
    meta = MetaData()
    Table("galleries", meta,
          Column("id", Integer, primary_key=True), Column("name", String(200), unique=True),
          Column("profile", String(32), nullable=False), Column("root", Text),
          Column("config", JSON, nullable=False),
          Column("created_at", DateTime(timezone=True), nullable=False))
    Table("images", meta,
          Column("id", Integer, primary_key=True),
          Column("gallery_id", ForeignKey("galleries.id", ondelete="CASCADE"), index=True,
                 nullable=False),
          Column("path", Text, nullable=False), Column("content_hash", String(64), nullable=False),
          Column("size_bytes", Integer, nullable=False), Column("width", Integer),
          Column("height", Integer), Column("status", String(16), nullable=False),
          Column("error", Text), Column("person_id", Integer), Column("camera_id", Integer),
          Column("added_at", DateTime(timezone=True), nullable=False),
          Column("updated_at", DateTime(timezone=True), nullable=False),
          UniqueConstraint("gallery_id", "path", name="uq_image_gallery_path"))
    Table("index_runs", meta,
          Column("id", Integer, primary_key=True),
          Column("gallery_id", ForeignKey("galleries.id", ondelete="CASCADE"), index=True,
                 nullable=False),
          Column("root", Text, nullable=False), Column("status", String(16), nullable=False),
          Column("started_at", DateTime(timezone=True), nullable=False),
          Column("finished_at", DateTime(timezone=True)),
          Column("indexed", Integer, nullable=False), Column("unchanged", Integer, nullable=False),
          Column("failed", Integer, nullable=False), Column("pruned", Integer, nullable=False))
    return meta


def write_old_database(url: str) -> None:
    """Two galleries as the old version left them: one indexed from /photos/trip, one never."""
    now = datetime.now(UTC)
    engine = create_engine(url)
    leftovers = MetaData()  # a PostgreSQL database may hold an earlier run's tables
    leftovers.reflect(engine)
    leftovers.drop_all(engine)
    meta = old_schema()
    meta.create_all(engine)
    image = {"content_hash": "h", "size_bytes": 1, "status": "INDEXED", "added_at": now,
             "updated_at": now}
    with engine.begin() as conn:
        conn.execute(meta.tables["galleries"].insert(), [
            {"id": 1, "name": "trip", "profile": "landmark", "root": "/photos/trip",
             "config": {"metric": "ip"}, "created_at": now},
            {"id": 2, "name": "empty", "profile": "person", "root": None, "config": {},
             "created_at": now},
        ])
        conn.execute(meta.tables["images"].insert(), [
            {"id": 7, "gallery_id": 1, "path": "a.jpg", **image},
            {"id": 9, "gallery_id": 1, "path": "sub/b.jpg", **image},
        ])
        conn.execute(meta.tables["index_runs"].insert(), [
            {"gallery_id": 1, "root": "/photos/trip", "status": "COMPLETED", "started_at": now,
             "indexed": 2, "unchanged": 0, "failed": 0, "pruned": 0},
        ])
    engine.dispose()


def urls() -> list[str]:
    postgres = os.environ.get("TANSAKU_TEST_POSTGRES")
    return ["sqlite", pytest.param(postgres or "", marks=pytest.mark.skipif(
        not postgres, reason="set TANSAKU_TEST_POSTGRES to an empty PostgreSQL database URL"))]


@pytest.fixture(params=urls())
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.param


def test_old_database_gets_one_source_per_gallery(url: str) -> None:
    write_old_database(url)
    sessions = open_database(url)
    with sessions() as s:
        assert s.scalar(select(SchemaVersion.version)) == SCHEMA_VERSION
        sources = s.scalars(select(Source)).all()
        assert [(src.gallery_id, src.root) for src in sources] == [(1, "/photos/trip")]
        rows = {r.id: r for r in s.scalars(select(Image))}
        assert {i: (r.source_id, r.path, r.status) for i, r in rows.items()} == {
            7: (sources[0].id, "a.jpg", ImageStatus.INDEXED),
            9: (sources[0].id, "sub/b.jpg", ImageStatus.INDEXED),
        }
        # images are unique per source now: the same name from a second folder is a new row
        other = Source(gallery_id=1, root="/photos/more")
        s.add(other)
        s.flush()
        s.add(Image(gallery_id=1, source_id=other.id, path="a.jpg", content_hash="x", size_bytes=1,
                    status=ImageStatus.PENDING))
        s.commit()
        s.add(Image(gallery_id=1, source_id=other.id, path="a.jpg", content_hash="y", size_bytes=1,
                    status=ImageStatus.PENDING))
        with pytest.raises(IntegrityError):
            s.commit()
    engine = sessions.kw["bind"]
    indexes = {i["name"] for i in inspect(engine).get_indexes("images")}
    assert {"ix_images_gallery_id", "ix_images_source_id"} <= indexes
    assert migrate(engine) == SCHEMA_VERSION  # opening again migrates nothing
    engine.dispose()


def test_migrated_gallery_opens_with_absolute_paths(tmp_path: Path) -> None:
    from engine.core import Engine
    from engine.settings import Settings
    from storage.gallery_files import GalleryFiles
    from storage.vector_index import VectorIndex

    url = f"sqlite:///{tmp_path / 'old.db'}"
    write_old_database(url)
    home = tmp_path / "home"
    files = GalleryFiles(home, 1)
    index = VectorIndex(2, "ip")
    index.add(np.array([7, 9]), np.eye(2, dtype=np.float32))
    index.save(files.index_path)
    engine = Engine(Settings.from_env(db=url, home=home))
    opened = engine.open_gallery("trip")
    assert opened.image_file(9) == Path("/photos/trip/sub/b.jpg")
    summary = {g.name: g for g in engine.galleries()}
    assert summary["trip"].sources == ["/photos/trip"] and summary["trip"].images == {"indexed": 2}
    assert summary["empty"].sources == [] and summary["empty"].images == {}


def test_a_new_database_is_created_at_the_current_version(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert migrate(engine) == SCHEMA_VERSION
    assert "sources" in inspect(engine).get_table_names()
    assert migrate(engine) == SCHEMA_VERSION
