"""The Engine facade: galleries, indexing and queries behind one object (the CLI is a thin edge on it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from engine.errors import TansakuError
from engine.settings import Settings
from indexer.describe import Describer, Description, local_from_arrays
from indexer.images import ImageReadError, read_image
from indexer.pipeline import (
    WHITENING_DEFAULTS,
    EmptyFolderError,
    IndexSummary,
    index_folder,
    pending_index_path,
)
from indexer.profiles import GALLERY_HEADS, PROFILES, model_config, resolve_profile
from indexer.projections.gallery import Projector, load_projector
from matcher.rerank import RERANK_MODES, RerankConf, rerank_mode
from matcher.search import Hit, Searcher
from storage.db import open_database
from storage.gallery_files import GalleryBusyError, GalleryFiles
from storage.models import Gallery, Image, ImageStatus
from storage.vector_index import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankedImage:
    """A query result as users see it."""

    rank: int
    path: str
    score: float
    inliers: int | None
    image_id: int


@dataclass(frozen=True)
class QueryResult:
    """Ranked results of one query and the time each stage took."""

    query: str
    gallery: str
    results: list[RankedImage]
    times: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The `tansaku query --json` object."""
        return {
            "query": self.query,
            "gallery": self.gallery,
            "results": [r.__dict__ for r in self.results],
            "timings": {k: round(v, 4) for k, v in self.times.items()},
        }


class OpenGallery:
    """A gallery ready to search: its rows, FAISS index, feature store and extractors."""

    def __init__(self, gallery: Gallery, rows: list[Image], files: GalleryFiles):
        self.gallery = gallery
        self.files = files
        self.paths = {r.id: r.path for r in rows}
        self.rows = {r.id: r for r in rows}
        if not files.index_path.exists() or not rows:
            raise TansakuError(f"gallery {gallery.name!r} has no indexed images yet")
        # an index rebuilt for the committed projection, not yet moved into place by its writer
        pending = pending_index_path(files, gallery.config)
        self.index = VectorIndex.load(pending if pending and pending.exists() else files.index_path)
        self.store = files.features()
        self.projector: Projector | None = load_projector(gallery.config, files.root)

    @cached_property
    def describer(self) -> Describer:
        """The gallery's extractors, built on first use (model loading takes a moment)."""
        return Describer(self.gallery.config)

    def stored_description(self, image_id: int) -> Description:
        """The description stored at index time (what a fresh extraction would give)."""
        arrays = self.store.get(image_id)
        local = local_from_arrays(arrays) if "keypoints" in arrays else None
        return Description(arrays["global"], local)

    def projected(self, description: Description) -> np.ndarray | None:
        """The description's global vector in the gallery's projection (None: it has none)."""
        if self.projector is None:
            return None
        return self.projector(description.global_vector[None])[0]

    def searcher(self, conf: RerankConf | None = None) -> Searcher:
        """A searcher over this gallery with re-ranking settings `conf` (default: the gallery's)."""
        return Searcher(self.index, self.store, conf or self.default_rerank())

    def default_rerank(self) -> RerankConf:
        """The re-ranking settings the gallery's configuration names (default: mode `ours`)."""
        spec = dict(self.gallery.config.get("rerank") or {})
        return rerank_mode(spec.pop("mode", "ours"), **spec)

    def ranked(self, hits: list[Hit]) -> list[RankedImage]:
        """Hits as user-facing results (paths relative to the gallery folder)."""
        return [
            RankedImage(rank, self.paths.get(h.image_id, "?"), h.score, h.inliers, h.image_id)
            for rank, h in enumerate(hits, start=1)
        ]


class Engine:
    """tansaku's public face: `index_folder`, `query`, and the evaluations in `engine.evaluation`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if self.settings.db_url.startswith("sqlite"):
            self.settings.ensure_home()
        try:
            self.sessions = open_database(self.settings.db_url)
        except SQLAlchemyError as exc:
            raise TansakuError(f"cannot open database {self.settings.db_url}: {exc}") from exc

    # galleries ---------------------------------------------------------------------------------
    def gallery_names(self) -> list[str]:
        """Names of all galleries."""
        with self.sessions() as session:
            return list(session.scalars(select(Gallery.name).order_by(Gallery.name)))

    def get_gallery(self, name: str) -> Gallery:
        """The gallery called `name`; an unknown name lists the known ones."""
        with self.sessions() as session:
            gallery = session.scalar(select(Gallery).where(Gallery.name == name))
        if gallery is None:
            known = ", ".join(self.gallery_names()) or "none yet; create one with `tansaku index`"
            raise TansakuError(f"unknown gallery {name!r} (galleries: {known})")
        return gallery

    def ensure_gallery(self, name: str, profile: str, config: dict[str, Any] | None = None) -> Gallery:
        """The gallery `name`, created with `profile`'s preset (or `config`) if it does not exist."""
        if profile not in PROFILES:
            raise TansakuError(f"unknown profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
        with self.sessions() as session:
            gallery = session.scalar(select(Gallery).where(Gallery.name == name))
            if gallery is None:
                gallery = Gallery(name=name, profile=profile,
                                  config=config or resolve_profile(profile))
                session.add(gallery)
                session.commit()
            elif gallery.profile != profile:
                raise TansakuError(
                    f"gallery {name!r} has profile {gallery.profile!r}, not {profile!r}"
                )
            elif config is not None and not _same_extractors(config, gallery.config):
                raise TansakuError(
                    f"gallery {name!r} was built with {_described(gallery.config)}; index into a "
                    "new gallery to use other extractors"
                )
        return gallery

    def open_gallery(self, name: str) -> OpenGallery:
        """Load a gallery for searching."""
        gallery = self.get_gallery(name)
        with self.sessions() as session:
            rows = list(session.scalars(select(Image).where(
                Image.gallery_id == gallery.id, Image.status == ImageStatus.INDEXED)))
        return OpenGallery(gallery, rows, GalleryFiles(self.settings.home, gallery.id))

    # indexing ----------------------------------------------------------------------------------
    def index_folder(
        self, folder: str | Path, gallery: str, profile: str = "landmark", prune: bool = False,
        batch_size: int = 16, config: dict[str, Any] | None = None,
    ) -> IndexSummary:
        """Index `folder` into `gallery` (created on first use); see `indexer.pipeline`."""
        folder = Path(folder).expanduser()
        if not folder.exists():
            raise TansakuError(f"folder not found: {folder}")
        if not folder.is_dir():
            raise TansakuError(f"not a folder: {folder}")
        row = self.ensure_gallery(gallery, profile, config)
        row = self._fit_gallery_heads(row, folder)
        try:
            return index_folder(folder, row, self.sessions, self.settings.home,
                                prune=prune, batch_size=batch_size)
        except (EmptyFolderError, GalleryBusyError) as exc:
            raise TansakuError(str(exc)) from exc

    def _fit_gallery_heads(self, gallery: Gallery, folder: Path, most: int = 500) -> Gallery:
        """Untrained DELG-style heads fitted on (at most `most` of) the folder's images, once.

        The whitening FC is learned only from a folder of at least `WHITENING_DEFAULTS["min_images"]`
        images (fewer over-fit it; the FC stays the identity); the local PCA always is. The heads
        file is written beside the gallery's index and the configuration updated to name it, so
        later runs and queries use the same heads.
        """
        joint = gallery.config.get("joint") or {}
        conf = dict(joint.get("conf") or {})
        if joint.get("name") != "delg-efficientnet-lite0" or conf.get("heads") != GALLERY_HEADS:
            return gallery
        from indexer.extractors.delg_torch import init_heads_from_images
        from indexer.images import discover_images

        paths = sorted(discover_images(folder))
        if not paths:
            raise TansakuError(f"no image files found in {folder}")
        if len(paths) > most:
            rng = np.random.default_rng(0)
            paths = [paths[i] for i in sorted(rng.choice(len(paths), most, replace=False))]
        heads_path = GalleryFiles(self.settings.home, gallery.id).path("delg-heads.pt")
        fit_conf = {k: v for k, v in conf.items() if k != "heads"}
        whiten = len(paths) >= WHITENING_DEFAULTS["min_images"]
        images = tqdm(_readable(paths), total=len(paths), desc="fitting DELG heads", unit="img")
        init_heads_from_images(images, heads_path, fit_conf, whiten=whiten)
        with self.sessions() as session:
            row = session.get(Gallery, gallery.id)
            assert row is not None
            row.config = {**row.config, "joint": {**joint, "conf": {**conf, "heads": str(heads_path)}}}
            session.commit()
            session.refresh(row)
            return row

    # querying ----------------------------------------------------------------------------------
    def query(
        self, image: str | Path, gallery: str, top_k: int = 10, shortlist: int = 100,
        rerank: bool = True, conf: RerankConf | None = None, kreciprocal: bool = False,
    ) -> QueryResult:
        """Rank `gallery` for the image at `image`; `kreciprocal` re-ranks a person gallery's
        shortlist by k-reciprocal encoding."""
        path = Path(image).expanduser()
        if not path.exists():
            raise TansakuError(f"query image not found: {path}")
        if top_k < 1 or shortlist < 1:
            raise TansakuError("--top-k and --shortlist must be at least 1")
        opened = self.open_gallery(gallery)
        if kreciprocal and opened.gallery.profile != "person":
            raise TansakuError("k-reciprocal re-ranking applies to person galleries; landmark "
                               "galleries re-rank by geometry (--rerank-mode ours|delf)")
        try:
            pixels = read_image(path)
        except ImageReadError as exc:
            raise TansakuError(f"cannot read query image {exc.path}: {exc.reason}") from exc
        start = time.perf_counter()
        description = opened.describer.describe(pixels)
        extraction = time.perf_counter() - start
        result = opened.searcher(conf).search(
            description, top_k=top_k, shortlist=shortlist, rerank=rerank,
            vector=opened.projected(description), kreciprocal=kreciprocal,
        )
        times = {"extraction": extraction, **result.times}
        return QueryResult(str(path), gallery, opened.ranked(result.hits), times)


def _readable(paths: list[Path]) -> Iterator[np.ndarray]:
    """The images at `paths` that can be read (the indexing run reports the others)."""
    for path in paths:
        try:
            yield read_image(path)
        except ImageReadError:
            continue


def _same_extractors(asked: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether a requested configuration describes images as a stored gallery's does.

    `--model` specs are compared when both have one (a gallery's fitted DELG heads change its
    extractor settings, not its spec); otherwise the extractor settings themselves.
    """
    if asked.get("model") and stored.get("model"):
        return bool(asked["model"] == stored["model"])
    return all(asked.get(k) == stored.get(k) for k in ("global", "local", "joint"))


def _described(config: dict[str, Any]) -> str:
    return str(config.get("model") or {k: config.get(k) for k in ("global", "local", "joint")})


def profile_config(
    profile: str, method: str | None = None, model: str | None = None
) -> dict[str, Any] | None:
    """A new gallery's configuration: the profile's preset, the person descriptor or the landmark
    model overridden (None: the preset)."""
    if model is not None:
        if profile != "landmark":
            raise TansakuError("--model applies to landmark galleries (--profile landmark)")
        try:
            return model_config(model)
        except ValueError as exc:
            raise TansakuError(str(exc)) from exc
    if method is None:
        return None
    if profile != "person":
        raise TansakuError("--method applies to person galleries (--profile person)")
    from indexer.extractors.person import parse_method

    try:
        parse_method(method)
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    config = resolve_profile(profile)
    config["global"]["conf"]["method"] = method
    return config


def rerank_conf(mode: str | None = None, verifier: str | None = None) -> RerankConf | None:
    """Re-ranking settings from the command line; None (neither given) means the gallery's own."""
    from matcher.verification import SUPPORTED

    if mode is None and verifier is None:
        return None
    if mode is not None and mode not in RERANK_MODES:
        raise TansakuError(f"unknown re-ranking mode {mode!r}; valid: {', '.join(RERANK_MODES)}")
    conf = rerank_mode(mode or "ours")
    if verifier is None:
        return conf
    if verifier not in SUPPORTED:
        raise TansakuError(f"unknown verifier {verifier!r}; valid: {', '.join(SUPPORTED)}")
    if conf.model not in SUPPORTED[verifier]:
        raise TansakuError(f"--verifier {verifier} does not fit the {conf.model} model of "
                           f"re-ranking mode {mode or 'ours'}")
    return replace(conf, verifier=verifier)  # type: ignore[arg-type]  # checked against SUPPORTED
