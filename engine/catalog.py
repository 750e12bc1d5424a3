"""What a gallery holds, for the server's listings: `Engine.galleries()` plus failures and last run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from engine.errors import NotFoundError, TansakuError
from storage.models import Image, ImageStatus, IndexRun

if TYPE_CHECKING:
    from engine.core import Engine, GallerySummary, OpenGallery


class OutsideGalleryError(TansakuError):
    """A gallery file whose real path leaves the gallery's folders (a symbolic link pointing out)."""


def gallery_overviews(engine: Engine, failures: int = 200) -> list[dict[str, Any]]:
    """Every gallery as the API lists it (see `gallery_overview`)."""
    return [_overview(engine, summary, failures) for summary in engine.galleries()]


def gallery_overview(engine: Engine, name: str, failures: int = 200) -> dict[str, Any]:
    """One gallery: profile, model, source folders, image counts by status, the failed files
    (at most `failures`, newest first) and its last indexing run."""
    engine.get_gallery(name)  # NotFoundError naming the known galleries
    for summary in engine.galleries():
        if summary.name == name:
            return _overview(engine, summary, failures)
    raise NotFoundError(f"unknown gallery {name!r}")  # deleted meanwhile


def _overview(engine: Engine, summary: GallerySummary, failures: int) -> dict[str, Any]:
    gallery = engine.get_gallery(summary.name)
    with engine.sessions() as session:
        failed = session.execute(
            select(Image.id, Image.path, Image.error).where(
                Image.gallery_id == gallery.id, Image.status == ImageStatus.FAILED)
            .order_by(Image.updated_at.desc()).limit(failures)).all()
        run = session.scalar(select(IndexRun).where(IndexRun.gallery_id == gallery.id)
                             .order_by(IndexRun.id.desc()).limit(1))
    out = summary.to_json()
    out["images"] = {status.value: int(summary.images.get(str(status), 0)) for status in ImageStatus}
    out["failures"] = [{"image_id": i, "path": p, "reason": e} for i, p, e in failed]
    out["last_run"] = None if run is None else {
        "status": run.status.value, "root": run.root,
        "started": run.started_at.isoformat() if run.started_at else None,
        "finished": run.finished_at.isoformat() if run.finished_at else None,
        "indexed": run.indexed, "unchanged": run.unchanged, "failed": run.failed,
    }
    return out


def served_file(opened: OpenGallery, image_id: int) -> Path:
    """The real file of a gallery image, checked to lie inside one of the gallery's folders."""
    real = opened.image_file(image_id).resolve()
    roots = [Path(r).resolve() for r in opened.sources.values()]
    if not any(real.is_relative_to(root) for root in roots):
        raise OutsideGalleryError(f"image {image_id} of gallery {opened.gallery.name!r} links "
                                  "outside the gallery's folders; it is not served")
    return real
