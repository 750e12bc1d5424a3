"""What a gallery holds, for listings: profile, model, image counts by status, failures, last run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from engine.errors import TansakuError
from storage.models import Gallery, Image, ImageStatus, IndexRun

if TYPE_CHECKING:
    from engine.core import Engine, OpenGallery


class OutsideGalleryError(TansakuError):
    """A gallery file whose real path leaves the gallery's folders (a symbolic link pointing out)."""


def gallery_overview(engine: Engine, name: str, failures: int = 200) -> dict[str, Any]:
    """One gallery as the API lists it; at most `failures` failed files are listed (newest first)."""
    gallery = engine.get_gallery(name)
    with engine.sessions() as session:
        counts = dict(session.execute(
            select(Image.status, func.count(Image.id)).where(Image.gallery_id == gallery.id)
            .group_by(Image.status)).tuples().all())
        failed = session.execute(
            select(Image.id, Image.path, Image.error).where(
                Image.gallery_id == gallery.id, Image.status == ImageStatus.FAILED)
            .order_by(Image.updated_at.desc()).limit(failures)).all()
        run = session.scalar(select(IndexRun).where(IndexRun.gallery_id == gallery.id)
                             .order_by(IndexRun.id.desc()).limit(1))
    return {
        "name": gallery.name,
        "profile": gallery.profile,
        "model": model_name(gallery),
        "root": gallery.root,
        "images": {status.value: int(counts.get(status, 0)) for status in ImageStatus},
        "failures": [{"image_id": i, "path": p, "reason": e} for i, p, e in failed],
        "last_run": None if run is None else {
            "status": run.status.value, "root": run.root,
            "started": run.started_at.isoformat() if run.started_at else None,
            "finished": run.finished_at.isoformat() if run.finished_at else None,
            "indexed": run.indexed, "unchanged": run.unchanged, "failed": run.failed,
        },
    }


def model_name(gallery: Gallery) -> str:
    """The gallery's model as users name it (`--model`), else its extractors."""
    config = gallery.config or {}
    if config.get("model"):
        return str(config["model"])
    parts = [(config.get(k) or {}).get("name") for k in ("joint", "global", "local")]
    method = ((config.get("global") or {}).get("conf") or {}).get("method")
    names = [p for p in parts if p]
    return "+".join(names) + (f" ({method})" if method else "")


def served_file(opened: OpenGallery, image_id: int) -> Path:
    """The real file of a gallery image, checked to lie inside one of the gallery's folders."""
    real = opened.image_file(image_id).resolve()
    roots = [Path(r).resolve() for r in source_roots(opened)]
    if not any(real.is_relative_to(root) for root in roots):
        raise OutsideGalleryError(f"image {image_id} of gallery {opened.gallery.name!r} links "
                                  "outside the gallery's folders; it is not served")
    return real


def source_roots(opened: OpenGallery) -> list[str]:
    """The folders a gallery was indexed from."""
    return [opened.gallery.root] if opened.gallery.root else []
