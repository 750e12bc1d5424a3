"""Pictures outside the server: match views written by `tansaku query --save-matches`, and the
self-contained HTML reports of `tansaku eval retrieval|reid --report` (images inlined as data URIs)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import TansakuError
from engine.visual import cmc_plot, data_uri, encode, match_view, thumbnail
from indexer.images import ImageReadError, read_image

if TYPE_CHECKING:
    from engine.core import Engine, QueryResult
    from engine.evaluation.reid_protocols import ReidTrial
    from engine.evaluation.retrieval import RetrievalDetails
    from matcher.rerank import RerankConf

log = logging.getLogger(__name__)
THUMB = 160  # report thumbnails, longer side in pixels
WORST = 12  # retrieval queries shown with their ranked lists
SAMPLES = 12  # re-ID queries shown with their ranked lists


def save_match_views(
    engine: Engine, result: QueryResult, folder: Path, conf: RerankConf | None = None
) -> list[Path]:
    """Write one match view per result of a query (`RR-name.png`); returns the files written."""
    from engine.core import read_query_image

    if result.description is None:
        raise TansakuError("this query result carries no description to match with")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TansakuError(f"cannot create --save-matches folder {folder}: {exc}") from exc
    opened = engine.open_gallery(result.gallery)
    max_side = opened.describer.max_side  # the frame of the stored and the query's keypoints
    query = read_query_image(Path(result.query), max_side)
    written = []
    for r in result.results:
        pair = engine.match(opened, result.description, r.image_id, conf)
        candidate = _pixels(opened.image_file(r.image_id), max_side)
        if candidate is None:
            continue
        caption = f"#{r.rank} {r.path}: {pair.inliers} inliers of {pair.putative} matches"
        view = match_view(query, candidate, pair.query_points, pair.candidate_points, caption)
        path = folder / f"{r.rank:02d}-{Path(r.path).stem}.png"
        path.write_bytes(encode(view, "png"))
        written.append(path)
    return written


def _pixels(path: Path, max_side: int | None = None) -> np.ndarray | None:
    try:
        return read_image(path, max_side)
    except ImageReadError as exc:
        log.warning("cannot draw %s: %s", exc.path, exc.reason)
        return None


def _thumb(path: Path, side: int = THUMB) -> str:
    """A file's thumbnail as a data URI ('' when it cannot be read)."""
    pixels = _pixels(path, side)
    return "" if pixels is None else data_uri(encode(thumbnail(pixels, side), "jpg", 80), "image/jpeg")


def _render(template: str, **context: Any) -> str:
    try:
        from jinja2 import Environment, FileSystemLoader, select_autoescape
    except ImportError as exc:
        raise TansakuError("reports need the serve extra: pip install -e '.[serve]'") from exc

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"]))
    return env.get_template(template).render(**context)


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TansakuError(f"cannot write report {path}: {exc}") from exc
    return path


def write_retrieval_report(path: Path, scores: dict[str, Any], details: RetrievalDetails) -> Path:
    """Per-query AP of a retrieval evaluation, and the worst queries' ranked lists as thumbnails."""
    queries = sorted(details.queries, key=lambda q: (np.nan_to_num(q.ap, nan=2.0), q.name))
    worst = [{
        "name": q.name, "ap": 100 * q.ap, "thumb": _thumb(q.image),
        "ranked": [{"name": p.name, "relevant": rel, "thumb": _thumb(p)} for p, rel in q.ranked],
    } for q in queries[:WORST]]
    rows = [{"name": q.name, "ap": 100 * q.ap} for q in sorted(details.queries, key=lambda q: q.name)]
    return _write(path, _render("retrieval.html", scores=scores, setting=details.setting,
                                worst=worst, rows=rows, when=_now()))


def write_reid_report(path: Path, scores: dict[str, Any], trials: list[ReidTrial],
                      seed: int = 0) -> Path:
    """CMC curve, mAP / mINP, and sample queries' ranked lists (correct matches marked)."""
    cmc = np.mean([t.cmc for t in trials], axis=0)
    first = trials[0]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(first.query), min(SAMPLES, len(first.query)), replace=False))
    samples = [_reid_sample(first, int(k)) for k in picks]
    plot = data_uri(cmc_plot(cmc, str(scores.get("method", ""))), "image/png")
    return _write(path, _render("reid.html", scores=scores, plot=plot, samples=samples,
                                cmc=[(k + 1, 100 * float(v)) for k, v in enumerate(cmc[:20])],
                                when=_now(), trials=len(trials)))


def _reid_sample(trial: ReidTrial, k: int, shown: int = 10) -> dict[str, Any]:
    """Query k's ranked gallery under the evaluation's rules (same person and camera, junk left out)."""
    pid, cam = int(trial.query.pids[k]), int(trial.query.camids[k])
    order = np.argsort(trial.distances[k], kind="stable")
    g_pids, g_cams = trial.gallery.pids[order], trial.gallery.camids[order]
    keep = ~((g_pids == pid) & (g_cams == cam)) & (g_pids != -1)
    ranked = order[keep]
    correct = trial.gallery.pids[ranked] == pid
    first = int(np.argmax(correct)) + 1 if correct.any() else None
    return {
        "name": trial.query.paths[k].name, "pid": pid, "thumb": _thumb(trial.query.paths[k], 128),
        "first_correct": first,
        "ranked": [{"name": trial.gallery.paths[j].name, "correct": bool(c),
                    "thumb": _thumb(trial.gallery.paths[j], 128)}
                   for j, c in zip(ranked[:shown], correct[:shown], strict=True)],
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["save_match_views", "write_reid_report", "write_retrieval_report"]
