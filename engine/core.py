"""The Engine facade: galleries, indexing and queries behind one object (the CLI is a thin edge on it)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from tqdm import tqdm

from engine.errors import NotFoundError, TansakuError
from engine.settings import Settings
from engine.tracklets import Tracklets
from engine.warm import WarmGalleries
from indexer.config import WHITENING_DEFAULTS, ConfigError, GalleryConfig, parse_config
from indexer.describe import Describer, Description, local_from_arrays
from indexer.errors import ModelLoadError
from indexer.gallery_index import pending_index_path
from indexer.images import ImageReadError, discover_images, read_image
from indexer.pipeline import (
    EmptyFolderError,
    IndexSummary,
    OverlappingSourceError,
    ProgressCallback,
    index_folder,
)
from indexer.profiles import GALLERY_HEADS, PROFILES, model_config, resolve_profile
from indexer.projections.gallery import Projector, load_projector
from matcher.attributes import (
    parse_attributes,
    predicted_names,
    rank_by_attributes,
    rescore,
    term_names,
    term_probabilities,
)
from matcher.rerank import PairMatch, RerankConf, match_pair, rerank_mode
from matcher.search import Hit, Searcher
from storage.db import open_database
from storage.gallery_files import GalleryBusyError, GalleryFiles
from storage.models import Crop, Gallery, Image, ImageStatus, IndexRun, Source
from storage.vector_index import VectorIndex

log = logging.getLogger(__name__)
HEADS_FILE = "delg-heads.pt"  # a gallery's DELG heads fitted on its own images


@dataclass(frozen=True)
class RankedImage:
    """A query result as users see it: `path` is the image file's absolute path."""

    rank: int
    path: str
    score: float
    inliers: int | None
    image_id: int
    source: str = ""  # the source folder it was indexed from
    relative_path: str = ""  # its path inside that folder
    person_id: int | None = None  # person galleries, when the file name gives them
    camera_id: int | None = None
    box: list[int] | None = None  # a person found in the scene photo `path` (x, y, w, h)
    attributes: list[str] | None = None  # predicted attributes (galleries with an attribute model)
    # queries by attributes: each asked-for attribute's probability for this person (why it matched)
    matched_attributes: dict[str, float] | None = None
    # tracklet searches (`--tracklets`): the images of this result's tracklet, `path` the first
    frames: list[str] | None = None
    frame_ids: list[int] | None = None  # their image ids, in the same order

    def to_json(self) -> dict[str, Any]:
        """One result of `tansaku query --json` (person and camera ids only where known)."""
        optional = ("person_id", "camera_id", "box", "attributes", "matched_attributes", "frames",
                    "frame_ids")
        return {k: v for k, v in self.__dict__.items() if v is not None or k not in optional}


@dataclass(frozen=True)
class GallerySummary:
    """A gallery as `tansaku galleries` shows it."""

    name: str
    profile: str
    model: str
    sources: list[str]
    images: dict[str, int]  # count by status (pending, indexed, failed)
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The gallery's entry in `tansaku galleries --json`."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class QueryResult:
    """Ranked results of one query and the time each stage took."""

    query: str
    gallery: str
    results: list[RankedImage]
    times: dict[str, float]
    # the query's description, kept for match views (not part of the JSON)
    description: Description | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The `tansaku query --json` object."""
        return {
            "query": self.query,
            "gallery": self.gallery,
            "results": [r.to_json() for r in self.results],
            "timings": {k: round(v, 4) for k, v in self.times.items()},
        }


class OpenGallery:
    """A gallery ready to search: its rows, FAISS index, feature store and extractors."""

    def __init__(
        self, gallery: Gallery, rows: list[Image], files: GalleryFiles, sources: dict[int, str],
        describer: Describer | None = None,
    ) -> None:
        self.gallery = gallery
        self.files = files
        self.paths = {r.id: r.path for r in rows}  # relative to each image's source folder
        self.rows = {r.id: r for r in rows}
        self.sources = sources  # source id -> absolute folder
        self.crops: dict[int, tuple[str, list[int]]] = {}  # crop id -> (photo path in its source, box)
        self.config = _typed(gallery.name, gallery.config)
        if not files.index_path.exists() or not rows:
            raise TansakuError(f"gallery {gallery.name!r} has no indexed images yet")
        # an index rebuilt for the committed projection, not yet moved into place by its writer
        pending = pending_index_path(files, gallery.config)
        self.index = VectorIndex.load(pending if pending and pending.exists() else files.index_path)
        self.store = files.features()
        try:
            self.projector: Projector | None = load_projector(gallery.config, files.root)
        except ModelLoadError as exc:
            raise model_error(exc) from exc
        if describer is not None:  # models already loaded elsewhere (warm galleries share them)
            self.__dict__["describer"] = describer

    @cached_property
    def describer(self) -> Describer:
        """The gallery's extractors, built on first use (model loading takes a moment)."""
        return build_describer(self.gallery.config)

    def image_file(self, image_id: int) -> Path:
        """The absolute path of an indexed image's file (a detected person's: its photo's)."""
        row = self.rows.get(image_id)
        if row is None or row.source_id not in self.sources:
            raise NotFoundError(f"gallery {self.gallery.name!r} has no indexed image {image_id}")
        return Path(self.sources[row.source_id]) / self.crops.get(image_id, (row.path, None))[0]

    def projected_dim(self) -> int:
        """Length of the vectors this gallery's configuration puts in its index."""
        dim = self.describer.dim
        if self.projector is None:
            return dim
        return int(self.projector(np.zeros((1, dim), np.float32)).shape[1])

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
        spec = dict(self.config.rerank or {})
        return rerank_mode(spec.pop("mode", "ours"), **spec)

    def ranked(self, hits: list[Hit], terms: list[tuple[int, bool]] | None = None) -> list[RankedImage]:
        """Hits as user-facing results (absolute paths, and the source folder each came from);
        with the `terms` of an attribute query, each result's probability of each of them."""
        return [self._result(rank, h, terms) for rank, h in enumerate(hits, start=1)]

    def _result(self, rank: int, hit: Hit, terms: list[tuple[int, bool]] | None = None) -> RankedImage:
        """A detected person is shown as its photo's path and the box."""
        row = self.rows[hit.image_id]
        source = self.sources.get(row.source_id) if row.source_id is not None else None
        rel, box = self.crops.get(hit.image_id, (row.path, None))
        path = str(Path(source) / rel) if source else rel
        attrs = matched = None
        if self.attribute_names is not None:
            probs = self.store.get(hit.image_id).get("attributes")
            if probs is not None:
                attrs = predicted_names(probs.astype(np.float32), self.attribute_names)
                if terms:
                    from indexer.models.attributes.peta import COMPLEMENTS

                    labels = term_names(terms, self.attribute_names, COMPLEMENTS)
                    p = term_probabilities(probs.astype(np.float32), terms)
                    matched = {n: float(v) for n, v in zip(labels, p, strict=True)}
        return RankedImage(rank, path, hit.score, hit.inliers, hit.image_id, source or "",
                           rel, row.person_id, row.camera_id, box, attrs, matched)

    @cached_property
    def tracklets(self) -> Tracklets:
        """The gallery's images grouped into tracklets (person and camera), pooled once per
        opened gallery (see `engine.tracklets`)."""
        if self.gallery.profile != "person":
            raise TansakuError(f"tracklet search applies to person galleries; gallery "
                               f"{self.gallery.name!r} has profile {self.gallery.profile!r}")
        return Tracklets.from_index(self.rows.values(), self.index)

    def ranked_tracklets(self, found: list[tuple[int, float]]) -> list[RankedImage]:
        """Tracklet hits as results: the first frame's result, with every frame's path."""
        out = []
        for rank, (t, score) in enumerate(found, start=1):
            members = self.tracklets.members[t]
            first = self._result(rank, Hit(members[0], score))
            frames = [str(self.image_file(i)) for i in members]
            out.append(replace(first, frames=frames, frame_ids=list(members)))
        return out

    @cached_property
    def attribute_names(self) -> tuple[str, ...] | None:
        """Names of the stored attribute probabilities (None: the gallery has no attribute model)."""
        spec = self.gallery.config.get("attributes")
        return tuple(spec["names"]) if spec else None

    def attribute_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probabilities (N, A)) of every indexed image with stored attributes; read once
        per opened gallery (a warm gallery is opened again when its files change)."""
        table = self.__dict__.get("_attribute_table")
        if table is None:
            table = self.__dict__["_attribute_table"] = self._read_attribute_table()
        return table

    def _read_attribute_table(self) -> tuple[np.ndarray, np.ndarray]:
        ids, probs = [], []
        for image_id in self.rows:
            try:
                arrays = self.store.get(image_id)
            except KeyError:  # a scene photo: its persons have the arrays
                continue
            if "attributes" in arrays:
                ids.append(image_id)
                probs.append(arrays["attributes"].astype(np.float32))
        if not ids:
            raise TansakuError(f"gallery {self.gallery.name!r} holds no attribute probabilities; index "
                               "it with --attributes MODEL")
        return np.array(ids, dtype=np.int64), np.stack(probs)


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
        self.warm = WarmGalleries(self)  # galleries kept open between queries (the server's)

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
            raise NotFoundError(f"unknown gallery {name!r} (galleries: {known})")
        return gallery

    def galleries(self) -> list[GallerySummary]:
        """Every gallery with its profile, model, source folders and image counts by status."""
        with self.sessions() as session:
            rows = session.scalars(select(Gallery).order_by(Gallery.name)).all()
            sources = session.execute(select(Source.gallery_id, Source.root).order_by(Source.id))
            roots: dict[int, list[str]] = {}
            for gallery_id, root in sources:
                roots.setdefault(gallery_id, []).append(root)
            counts: dict[int, dict[str, int]] = {}
            for gallery_id, status, n in session.execute(
                select(Image.gallery_id, Image.status, func.count()).group_by(
                    Image.gallery_id, Image.status)
            ):
                counts.setdefault(gallery_id, {})[str(status)] = n
        return [
            GallerySummary(g.name, g.profile, _model_name(g.config), roots.get(g.id, []),
                           counts.get(g.id, {}), g.created_at.isoformat())
            for g in rows
        ]

    def open_gallery(self, name: str, describer: Describer | None = None) -> OpenGallery:
        """Load a gallery for searching (`describer`: its extractors, when already loaded)."""
        gallery = self.get_gallery(name)
        with self.sessions() as session:
            rows = list(session.scalars(select(Image).where(
                Image.gallery_id == gallery.id, Image.status == ImageStatus.INDEXED)))
            sources = {source.id: source.root for source in session.scalars(
                select(Source).where(Source.gallery_id == gallery.id))}
            crops = session.execute(select(Crop.image_id, Crop.box, Image.path).join(
                Image, Image.id == Crop.parent_id).where(Image.gallery_id == gallery.id)).all()
        opened = OpenGallery(gallery, rows, GalleryFiles(self.settings.home, gallery.id), sources,
                             describer)
        opened.crops = {int(i): (path, list(box)) for i, box, path in crops}
        return opened

    def delete_gallery(self, name: str) -> None:
        """Remove the gallery `name`: its rows (sources, images, runs) and its files folder.

        Refused while another process holds the gallery's write lock (an index run, say).
        """
        gallery = self.get_gallery(name)
        files = GalleryFiles(self.settings.home, gallery.id)
        try:
            with files.write_lock():
                # files first: rows left by a crash here are removed by the next delete, while
                # files left behind could be taken for those of a new gallery given the same id
                files.remove()
                with self.sessions() as session:
                    session.execute(delete(Crop).where(Crop.image_id.in_(
                        select(Image.id).where(Image.gallery_id == gallery.id))))
                    for table in (Image, IndexRun, Source):  # no reliance on ON DELETE CASCADE
                        session.execute(delete(table).where(table.gallery_id == gallery.id))
                    session.execute(delete(Gallery).where(Gallery.id == gallery.id))
                    session.commit()
        except GalleryBusyError as exc:
            raise TansakuError(f"gallery {name!r} is being written by another process; "
                               "try again when it has finished") from exc
        self.warm.forget(name)

    def _existing_gallery(
        self, name: str, profile: str, config: dict[str, Any] | None
    ) -> Gallery | None:
        """The gallery `name` if it exists, checked against the requested profile and extractors."""
        if profile not in PROFILES:
            raise TansakuError(f"unknown profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
        with self.sessions() as session:
            gallery = session.scalar(select(Gallery).where(Gallery.name == name))
        if gallery is None:
            return None
        if gallery.profile != profile:
            raise TansakuError(f"gallery {name!r} has profile {gallery.profile!r}, not {profile!r}")
        _typed(name, gallery.config)
        if config is not None and not _same_extractors(config, gallery.config):
            raise TansakuError(
                f"gallery {name!r} was built with {_described(gallery.config)}; index into a "
                "new gallery to use other extractors"
            )
        return gallery

    def _create_gallery(
        self, name: str, profile: str, config: dict[str, Any], folder: Path
    ) -> tuple[Gallery, Describer]:
        """A new gallery row, written only once its extractors have loaded (DELG heads fitted on
        the folder first where the configuration asks for it); returns it with its extractors."""
        if next(discover_images(folder), None) is None:
            raise TansakuError(f"no image files found in {folder}")
        galleries_dir = self.settings.home / "galleries"
        galleries_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=galleries_dir))
        try:
            config = _checked(name, config)  # validated, and stored with its schema version
            fit = _needs_gallery_heads(config)
            if fit:
                config = self._fit_heads(config, folder, staging / HEADS_FILE)
            describer = build_describer(config)
            with self.sessions() as session:
                row = Gallery(name=name, profile=profile, config=config)
                session.add(row)
                session.flush()  # gives the id, and so the files folder
                files = GalleryFiles(self.settings.home, row.id)
                files.remove()  # left by a deleted gallery that had this id, if any
                files = GalleryFiles(self.settings.home, row.id)
                if fit:
                    os.replace(staging / HEADS_FILE, files.path(HEADS_FILE))
                    row.config = describer.config = _with_heads(config, files.path(HEADS_FILE))
                session.commit()
                return row, describer
        except IntegrityError as exc:
            raise TansakuError(f"gallery {name!r} was created by another process meanwhile; "
                               "run the command again") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # indexing ----------------------------------------------------------------------------------
    def index_folder(
        self, folder: str | Path, gallery: str, profile: str = "landmark", prune: bool = False,
        batch_size: int = 16, config: dict[str, Any] | None = None, ray: str | None = None,
        progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
        contained: bool = False,
    ) -> IndexSummary:
        """Index `folder` into `gallery` (created on first use); see `indexer.pipeline`.

        A gallery holds any number of folders; `prune` drops the vanished files of this one only.
        `progress` and `cancel` as in `indexer.pipeline.index_folder`; `contained` skips files whose
        real path (symbolic links followed) lies outside `folder`.
        `ray`: describe the images on Ray Data workers at this address ("local": a local Ray).
        """
        folder = Path(folder).expanduser()
        if not folder.exists():
            raise TansakuError(f"folder not found: {folder}")
        if not folder.is_dir():
            raise TansakuError(f"not a folder: {folder}")
        row = self._existing_gallery(gallery, profile, config)
        factory: Callable[[dict[str, Any]], Describer] = build_describer
        if row is None:
            row, describer = self._create_gallery(
                gallery, profile, config or resolve_profile(profile), folder.resolve())
            factory = lambda _config: describer  # noqa: E731  # loaded once, used by the run
        elif _needs_gallery_heads(row.config):  # a gallery of an earlier version, never fitted
            row = self._fit_existing_heads(row, folder)
        try:
            return index_folder(folder, row, self.sessions, self.settings.home,
                                describer_factory=factory, prune=prune, batch_size=batch_size,
                                ray_address=ray, progress=progress, cancel=cancel,
                                contained=contained)
        except (EmptyFolderError, GalleryBusyError, OverlappingSourceError) as exc:
            raise TansakuError(str(exc)) from exc
        except ModelLoadError as exc:  # a projection file, or Ray missing, say
            raise model_error(exc) from exc

    def _fit_heads(
        self, config: dict[str, Any], folder: Path, out: Path, most: int = 500
    ) -> dict[str, Any]:
        """Untrained DELG-style heads fitted on (at most `most` of) the folder's images, written
        to `out`; returns the configuration naming them.

        The whitening FC is learned only from a folder of at least `WHITENING_DEFAULTS["min_images"]`
        images (fewer over-fit it; the FC stays the identity); the local PCA always is.
        """
        from indexer.extractors.delg_torch import DelgEfficientNet, init_heads_from_images

        paths = sorted(discover_images(folder))
        if not paths:
            raise TansakuError(f"no image files found in {folder}")
        if len(paths) > most:
            rng = np.random.default_rng(0)
            paths = [paths[i] for i in sorted(rng.choice(len(paths), most, replace=False))]
        conf = dict(config["joint"].get("conf") or {})
        fit_conf = {k: v for k, v in conf.items() if k != "heads"}
        whiten = len(paths) >= WHITENING_DEFAULTS["min_images"]
        side = fit_conf.get("max_side", DelgEfficientNet.default_conf["max_side"])
        images = tqdm(_readable(paths, side), total=len(paths), desc="fitting DELG heads", unit="img")
        try:
            init_heads_from_images(images, out, fit_conf, whiten=whiten)
        except (ModelLoadError, ValueError) as exc:
            raise model_error(exc) from exc
        return _with_heads(config, out)

    def _fit_existing_heads(self, gallery: Gallery, folder: Path) -> Gallery:
        """Fit the heads of a gallery created before heads were fitted ahead of the row."""
        config = self._fit_heads(gallery.config, folder,
                                 GalleryFiles(self.settings.home, gallery.id).path(HEADS_FILE))
        with self.sessions() as session:
            row = session.get(Gallery, gallery.id)
            assert row is not None
            row.config = config
            session.commit()
            session.refresh(row)
            return row

    # querying ----------------------------------------------------------------------------------
    def save_matches(self, result: QueryResult, folder: str | Path) -> list[Path]:
        """Each result's image, its person box drawn, as `NN-<name>` in `folder`."""
        from indexer.models.person_detector.draw import draw_boxes

        out = Path(folder).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for r in result.results:
            try:
                pixels = read_image(Path(r.path))
            except ImageReadError as exc:
                log.warning("cannot draw %s: %s", exc.path, exc.reason)
                continue
            target = out / f"{r.rank:02d}-{Path(r.path).stem}.jpg"
            draw_boxes(pixels, [r.box] if r.box else [], target)
            written.append(target)
        return written

    def query_attributes(self, attributes: str, gallery: str, top_k: int = 10) -> QueryResult:
        """Rank `gallery` by stored attribute probabilities alone (`query --attr a,b,c`)."""
        return self.search_attributes(self.open_gallery(gallery), attributes, top_k)

    def search_attributes(self, opened: OpenGallery, attributes: str, top_k: int = 10) -> QueryResult:
        """Rank an open gallery by attributes alone; each result says how probable each is."""
        if top_k < 1:
            raise TansakuError("--top-k must be at least 1")
        terms = self._attribute_terms(opened, attributes)
        start = time.perf_counter()
        ids, probs = opened.attribute_table()
        hits = [Hit(i, s) for i, s in rank_by_attributes(ids, probs, terms, top_k)]
        return QueryResult(f"attributes: {attributes}", opened.gallery.name, opened.ranked(hits, terms),
                           {"attributes": time.perf_counter() - start})

    def attribute_vocabulary(self, gallery: str) -> dict[str, Any]:
        """What an attribute query on `gallery` may name: its attributes, their complements, and
        plain words for either (word -> attribute name); refused where it has no attributes."""
        from indexer.models.attributes.peta import COMPLEMENTS, WORDS

        row = self.get_gallery(gallery)
        names = _attribute_names(row)
        complements = {c: n for c, n in COMPLEMENTS.items() if n in names}
        known = {*names, *complements}
        return {"gallery": row.name, "attributes": list(names), "complements": complements,
                "words": {w: n for w, n in WORDS.items() if n in known}}

    @staticmethod
    def _attribute_terms(opened: OpenGallery, attributes: str) -> list[tuple[int, bool]]:
        from indexer.models.attributes.peta import COMPLEMENTS, WORDS

        names = _attribute_names(opened.gallery)
        try:
            return parse_attributes(attributes, names, COMPLEMENTS, WORDS)
        except ValueError as exc:
            raise TansakuError(str(exc)) from exc

    def query(
        self, image: str | Path, gallery: str, top_k: int = 10, shortlist: int = 100,
        rerank: bool = True, conf: RerankConf | None = None, kreciprocal: bool = False,
        explain: str | Path | None = None, attributes: str | None = None,
        tracklets: bool = False,
    ) -> QueryResult:
        """Rank `gallery` for the image (or tracklet folder) at `image`; `kreciprocal` re-ranks a
        person gallery's shortlist by k-reciprocal encoding; `attributes` re-scores the shortlist by
        them; `tracklets` ranks the gallery's tracklets instead of its images; with `explain`,
        write heat maps of each result there (see `matcher.explain`)."""
        path = Path(image).expanduser()
        if not path.exists():
            raise TansakuError(f"query image not found: {path}")
        opened = self.open_gallery(gallery)
        start = time.perf_counter()
        if path.is_dir():  # a tracklet: crops of one person from one camera
            frames = self._tracklet_frames(opened, path)
            pixels, description = frames[0], self._describe_tracklet(opened, frames)
        else:
            pixels = read_query_image(path, opened.describer.max_side)
            start = time.perf_counter()
            description = opened.describer.describe(pixels)
        extraction = time.perf_counter() - start
        result = self.search_description(opened, description, str(path), top_k, shortlist, rerank,
                                         conf, kreciprocal, attributes, extraction, tracklets)
        if explain is not None:
            self._explain(opened, pixels, result.results, Path(explain).expanduser())
        return result

    def search_pixels(
        self, opened: OpenGallery, pixels: np.ndarray, label: str, top_k: int = 10,
        shortlist: int = 100, rerank: bool = True, conf: RerankConf | None = None,
        attributes: str | None = None, tracklets: bool = False,
    ) -> QueryResult:
        """Rank an open gallery for an image already decoded (RGB uint8); `label` names it;
        `attributes` re-score the shortlist as `query IMAGE --attr` does; `tracklets` ranks the
        gallery's tracklets as `query IMAGE --tracklets` does."""
        if attributes:
            self._attribute_terms(opened, attributes)  # refused before the image is described
        start = time.perf_counter()
        description = opened.describer.describe(pixels)
        extraction = time.perf_counter() - start
        return self.search_description(opened, description, label, top_k, shortlist, rerank, conf,
                                       attributes=attributes, extraction=extraction,
                                       tracklets=tracklets)

    def search_description(
        self, opened: OpenGallery, description: Description, label: str, top_k: int = 10,
        shortlist: int = 100, rerank: bool = True, conf: RerankConf | None = None,
        kreciprocal: bool = False, attributes: str | None = None, extraction: float = 0.0,
        tracklets: bool = False,
    ) -> QueryResult:
        """Rank an open gallery for a query already described; `extraction` is the seconds that
        describing it took (reported with the search's own stages); `tracklets` ranks the
        gallery's tracklets (person and camera) instead of its images."""
        if top_k < 1 or shortlist < 1:
            raise TansakuError("--top-k and --shortlist must be at least 1")
        if tracklets:
            if kreciprocal or attributes:
                raise TansakuError("--tracklets ranks whole tracklets; it does not combine with "
                                   "--kreciprocal or --attr")
            start = time.perf_counter()
            vector = opened.projected(description)
            found = opened.tracklets.search(
                description.global_vector if vector is None else vector, top_k)
            times = {"extraction": extraction, "search": time.perf_counter() - start}
            return QueryResult(label, opened.gallery.name, opened.ranked_tracklets(found), times,
                               description)
        if kreciprocal and opened.gallery.profile != "person":
            raise TansakuError("k-reciprocal re-ranking applies to person galleries; landmark "
                               "galleries re-rank by geometry (--rerank-mode ours|delf)")
        terms = self._attribute_terms(opened, attributes) if attributes else None
        depth = max(top_k, shortlist) if terms else top_k
        result = opened.searcher(conf).search(
            description, top_k=depth, shortlist=shortlist, rerank=rerank,
            vector=opened.projected(description), kreciprocal=kreciprocal,
        )
        times = {"extraction": extraction, **result.times}
        hits = result.hits
        if terms and hits:
            probs = np.stack([opened.store.get(h.image_id)["attributes"].astype(np.float32) for h in hits])
            final = rescore(np.array([h.score for h in hits]), probs, terms)
            hits = [Hit(hits[i].image_id, float(final[i]), hits[i].inliers)
                    for i in np.argsort(-final, kind="stable")][:top_k]
        return QueryResult(label, opened.gallery.name, opened.ranked(hits, terms), times, description)

    def match(
        self, opened: OpenGallery, query: Description, image_id: int, conf: RerankConf | None = None
    ) -> PairMatch:
        """The verified correspondences between a query and one gallery image (empty where
        either has no local features)."""
        if image_id not in opened.rows:
            raise NotFoundError(f"gallery {opened.gallery.name!r} has no indexed image {image_id}")
        stored = opened.stored_description(image_id)
        if query.local is None or stored.local is None:
            none = np.zeros((0, 2), np.float32)
            return PairMatch(none, none, 0)
        return match_pair(query.local, stored.local, conf or opened.default_rerank())

    @staticmethod
    def _tracklet_frames(opened: OpenGallery, folder: Path) -> list[np.ndarray]:
        if opened.gallery.profile != "person":
            raise TansakuError(f"a folder query is a tracklet of person crops; gallery "
                               f"{opened.gallery.name!r} has profile {opened.gallery.profile!r}")
        frames = list(_readable(sorted(discover_images(folder)), opened.describer.max_side))
        if not frames:
            raise TansakuError(f"no readable image in the query folder {folder}")
        return frames

    @staticmethod
    def _describe_tracklet(opened: OpenGallery, frames: list[np.ndarray]) -> Description:
        """One description of a tracklet: its frames' vectors pooled by the method's temporal
        attention (abn:CKPT) or by their mean."""
        from indexer.extractors.abn import abn_checkpoint, abn_frame_scores

        vectors = np.stack([d.global_vector for d in opened.describer.describe_batch(frames)])
        method = str(opened.gallery.config.get("global", {}).get("conf", {}).get("method", ""))
        ckpt = abn_checkpoint(method)
        weights = np.full(len(frames), 1.0 / len(frames))
        if ckpt is not None:
            scores = abn_frame_scores(frames, ckpt)
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
        return Description((weights[:, None] * vectors).sum(0).astype(np.float32), None)

    @staticmethod
    def heat_map_checkpoint(opened: OpenGallery) -> str | None:
        """The ABN checkpoint whose maps explain this gallery's matches (person galleries described
        by `abn:CKPT`, alone or fused); None for any other gallery."""
        from matcher.explain import abn_checkpoint

        if opened.gallery.profile != "person":
            return None
        method = str(opened.gallery.config.get("global", {}).get("conf", {}).get("method", ""))
        ckpt = abn_checkpoint(method)
        return None if ckpt is None else str(ckpt)

    def heat_maps(self, opened: OpenGallery, pixels: np.ndarray, result: np.ndarray
                  ) -> tuple[np.ndarray, str]:
        """The heat-map panel of a query and one result's pixels, and the kind of map
        (`matcher.explain.explain_panel`); a gallery without an ABN network is a user error."""
        from matcher.explain import explain_panel

        ckpt = self._required_heat_map_checkpoint(opened)
        try:
            return explain_panel(ckpt, pixels, result)
        except (ModelLoadError, OSError) as exc:
            raise TansakuError(f"cannot explain with {ckpt}: {exc}") from exc

    def _required_heat_map_checkpoint(self, opened: OpenGallery) -> str:
        ckpt = self.heat_map_checkpoint(opened)
        if ckpt is None:
            method = opened.gallery.config.get("global", {}).get("conf", {}).get("method")
            raise TansakuError(f"--explain needs a person gallery described by abn:CKPT; "
                               f"gallery {opened.gallery.name!r} uses {method or 'no person method'}")
        return ckpt

    def _explain(self, opened: OpenGallery, pixels: np.ndarray, ranked: list[RankedImage],
                 out_dir: Path) -> list[Path]:
        """Heat-map panels of the query and each result (person galleries with `abn:CKPT`), one
        `NN-<name>-<kind>.png` per result in `out_dir` (kind: `attention` or `gradcam`)."""
        from matcher.explain import write_panel

        self._required_heat_map_checkpoint(opened)
        written = []
        for rank, r in enumerate(ranked, start=1):
            try:
                image = read_image(Path(r.path))
            except ImageReadError as exc:
                raise TansakuError(f"cannot read result image {exc.path}: {exc.reason}") from exc
            if r.box is not None:  # a person found in a photo: the person, not the photo
                from indexer.models.person_detector.detect import crop

                image = crop(image, r.box)
            panel, kind = self.heat_maps(opened, pixels, image)
            written.append(write_panel(out_dir / f"{rank:02d}-{Path(r.path).stem}-{kind}.png", panel))
        return written


def read_query_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """A query image's pixels (decoded for extractors using `max_side`, see `read_image`); an
    unreadable file is a user error naming it."""
    try:
        return read_image(path, max_side)
    except ImageReadError as exc:
        raise TansakuError(f"cannot read query image {exc.path}: {exc.reason}") from exc


def build_describer(config: dict[str, Any]) -> Describer:
    """A configuration's extractors; a model file that cannot be loaded, or a bad extractor
    setting, is a user error naming it (the one boundary for extractor building)."""
    try:
        return Describer(config)
    except (ModelLoadError, ValueError) as exc:
        raise model_error(exc) from exc


def model_error(exc: ModelLoadError | ValueError) -> TansakuError:
    """The one-line user error for a model or extractor that cannot be built."""
    if isinstance(exc, ModelLoadError):
        return TansakuError(f"cannot load model {exc.path}: {exc.reason}")
    return TansakuError(f"cannot build the extractors: {exc}")


def _typed(gallery: str, config: dict[str, Any]) -> GalleryConfig:
    """The gallery's configuration read through the schema (`indexer.config`), migrated from an
    earlier version; an invalid one is a user error naming the gallery."""
    try:
        return parse_config(config)
    except ConfigError as exc:
        raise TansakuError(f"gallery {gallery!r}: {exc}") from exc


def _checked(gallery: str, config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as it is to be stored: checked, with its schema version."""
    return _typed(gallery, config).stored()


def _needs_gallery_heads(config: dict[str, Any]) -> bool:
    """Whether the configuration asks for DELG-style heads fitted on the gallery's own images."""
    joint = config.get("joint") or {}
    return bool(joint.get("name") == "delg-efficientnet-lite0"
                and (joint.get("conf") or {}).get("heads") == GALLERY_HEADS)


def _with_heads(config: dict[str, Any], heads: Path) -> dict[str, Any]:
    joint = config["joint"]
    return {**config, "joint": {**joint, "conf": {**(joint.get("conf") or {}), "heads": str(heads)}}}


def _model_name(config: dict[str, Any]) -> str:
    """A configuration's model in a word: the `--model` spec, or the person descriptor."""
    if config.get("model"):
        return str(config["model"])
    spec = config.get("global") or config.get("joint") or {}
    method = (spec.get("conf") or {}).get("method")
    return f"{spec.get('name')}:{method}" if method else str(spec.get("name"))


def _readable(paths: list[Path], max_side: int | None) -> Iterator[np.ndarray]:
    """The images at `paths` that can be read (the indexing run reports the others)."""
    for path in paths:
        try:
            yield read_image(path, max_side)
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
    profile: str, method: str | None = None, model: str | None = None, detect: str | None = None,
    attributes: str | Path | None = None, classifier: str | Path | None = None,
) -> dict[str, Any] | None:
    """A new gallery's configuration: the profile's preset, the person descriptor or the landmark
    model overridden, people detected in scene photos (`detect`: hog, haar or hog+haar, with an
    optional person `classifier` file), attribute probabilities kept (`attributes`: a model file)."""
    if detect is not None or attributes is not None:
        if profile != "person":
            raise TansakuError("--detect and --attributes apply to person galleries (--profile person)")
        config = profile_config(profile, method) or resolve_profile(profile)
        if detect is not None:
            from indexer.models.person_detector.detect import DETECTORS

            if detect not in DETECTORS:
                raise TansakuError(f"unknown detector {detect!r}; valid: {', '.join(DETECTORS)}")
            config["detect"] = {"detector": detect,
                                "classifier": str(_model_file(classifier)) if classifier else None}
        if attributes is not None:
            from indexer.errors import ModelLoadError
            from indexer.models.attributes.model import load_attribute_model

            path = _model_file(attributes)
            try:
                names = load_attribute_model(path).names
            except ModelLoadError as exc:
                raise TansakuError(str(exc)) from exc
            config["attributes"] = {"model": str(path), "names": list(names)}
        return config
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
    from indexer.extractors.person import canonical_method

    try:
        method = canonical_method(method)  # file arguments made absolute
    except ValueError as exc:
        raise TansakuError(str(exc)) from exc
    config = resolve_profile(profile)
    config["global"]["conf"]["method"] = method
    return config


def _attribute_names(gallery: Gallery) -> tuple[str, ...]:
    """The names of the attribute probabilities a gallery keeps; refused, saying why, where none."""
    if gallery.profile != "person":
        raise TansakuError(f"search by attributes applies to person galleries; gallery "
                           f"{gallery.name!r} has profile {gallery.profile!r}")
    spec = (gallery.config or {}).get("attributes")
    if not spec:
        raise TansakuError(f"gallery {gallery.name!r} has no attribute model; index it with "
                           "--attributes MODEL")
    return tuple(spec["names"])


def _model_file(path: str | Path) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise TansakuError(f"model file not found: {resolved}")
    return resolved


def rerank_conf(mode: str | None = None, verifier: str | None = None) -> RerankConf | None:
    """Re-ranking settings from the command line; None (neither given) means the gallery's own."""
    from matcher.verification import SUPPORTED

    if mode is None and verifier is None:
        return None
    try:
        conf = rerank_mode(mode or "ours")
    except ValueError as exc:  # an unknown mode, with the valid ones
        raise TansakuError(str(exc)) from exc
    if verifier is None:
        return conf
    if verifier not in SUPPORTED:
        raise TansakuError(f"unknown verifier {verifier!r}; valid: {', '.join(SUPPORTED)}")
    if conf.model not in SUPPORTED[verifier]:
        raise TansakuError(f"--verifier {verifier} does not fit the {conf.model} model of "
                           f"re-ranking mode {mode or 'ours'}")
    return replace(conf, verifier=verifier)  # type: ignore[arg-type]  # checked against SUPPORTED
