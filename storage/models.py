"""SQLAlchemy 2 ORM: galleries, their source folders, their images and the runs that indexed them.

An image row's primary key is also its id in the gallery's FAISS index and in its feature store.
A gallery holds any number of source folders; an image's path is relative to its own source.
`storage.migrations` brings databases written by earlier versions up to this schema.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware now, the one clock of the database."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every tansaku table."""


class ImageStatus(enum.StrEnum):
    """Where an image is in its life: waiting for extraction, searchable, or failed with a reason."""

    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"


class RunStatus(enum.StrEnum):
    """Outcome of one `tansaku index` run."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class Gallery(Base):
    """A named, searchable collection of images with one profile (landmark or person)."""

    __tablename__ = "galleries"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    profile: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    sources: Mapped[list[Source]] = relationship(
        back_populates="gallery", cascade="all, delete-orphan", passive_deletes=True
    )
    images: Mapped[list[Image]] = relationship(
        back_populates="gallery", cascade="all, delete-orphan", passive_deletes=True
    )
    runs: Mapped[list[IndexRun]] = relationship(
        back_populates="gallery", cascade="all, delete-orphan", passive_deletes=True
    )


class Source(Base):
    """A folder indexed into a gallery (absolute); its images' paths are relative to it."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("gallery_id", "root", name="uq_source_gallery_root"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"), index=True)
    root: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    gallery: Mapped[Gallery] = relationship(back_populates="sources")


class Image(Base):
    """One image file of a gallery, keyed by its source folder and its path relative to it."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("source_id", "path", name="uq_image_source_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"), index=True)
    # nullable only because databases migrated from the one-folder schema add it to existing rows
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[ImageStatus] = mapped_column(Enum(ImageStatus, native_enum=False, length=16))
    error: Mapped[str | None] = mapped_column(Text)
    person_id: Mapped[int | None] = mapped_column(Integer)
    camera_id: Mapped[int | None] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    gallery: Mapped[Gallery] = relationship(back_populates="images")
    source: Mapped[Source | None] = relationship()


class Crop(Base):
    """A person found in a scene photo (`index --detect`): an image row of its own (its id is in
    FAISS and the feature store like any image's), the photo's row and the box (x, y, w, h).

    A table of its own so galleries without detection and older databases are unchanged; the
    photo's own row is INDEXED without a vector once all its crops are.
    """

    __tablename__ = "crops"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    box: Mapped[list[int]] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)


class IndexRun(Base):
    """One indexing run over a folder, with what it did; an interrupted run says so."""

    __tablename__ = "index_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"), index=True)
    root: Mapped[str] = mapped_column(Text)
    status: Mapped[RunStatus] = mapped_column(Enum(RunStatus, native_enum=False, length=16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    indexed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    pruned: Mapped[int] = mapped_column(Integer, default=0)

    gallery: Mapped[Gallery] = relationship(back_populates="runs")


class SchemaVersion(Base):
    """The schema version a database is at (one row); see `storage.migrations`."""

    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
