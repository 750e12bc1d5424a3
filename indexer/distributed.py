"""Describing images in this process or on Ray Data workers; the caller stays the single writer.

`describe_files` is the one code path that turns files into descriptions, used alike by the
single-process pipeline and by each Ray worker, so both give the same descriptors; for scene photos
(`index --detect`) `describe_scenes` is that path: it finds the people in each photo and describes
each person's crop, and the writer makes the crops' rows (and so their ids) from what it returns.
`describe_on_ray` sends batches of paths through the gallery's extractors on Ray Data workers
(`ray.data ... map_batches` over an actor pool, each actor holding one `Describer`) and streams
the results back as they come: an image that cannot be read comes back as its error (recorded and
reported as in a plain run); a worker that dies is restarted by Ray and its batch retried; if Ray
gives up, the error reaches the pipeline, which has stored every batch received so far, and the
next run redoes the rest (nothing is lost). Ray is imported only here, and only when asked for.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.describe import Describer, Description
from indexer.errors import ModelLoadError
from indexer.images import ImageReadError, read_image
from indexer.scenes import SceneCropper

log = logging.getLogger(__name__)

# (height, width) and the description, or the read error and None
Described = tuple[tuple[int, int] | ImageReadError, Description | None]


@dataclass(frozen=True)
class People:
    """The persons found in one scene photo, in the detector's order."""

    boxes: np.ndarray  # (N, 4) int (x, y, w, h) in the photo's pixels
    scores: np.ndarray  # (N,) detector (or classifier) scores
    shapes: list[tuple[int, int]]  # (height, width) of each crop
    descriptions: list[Description]


# a photo's (height, width) and its people, or the read error and None
SceneDescribed = tuple[tuple[int, int] | ImageReadError, People | None]


class _HasPath(Protocol):
    path: Path


def _read(path: Path, max_side: int | None = None) -> np.ndarray | ImageReadError:
    try:
        return read_image(path, max_side)
    except ImageReadError as exc:
        return exc


def describe_files(
    describer: Describer, paths: list[Path],
    map_: Callable[[Callable[[Path], Any], Iterable[Path]], Iterable[Any]] = map,
) -> list[Described]:
    """Read `paths` (with `map_`, e.g. a thread pool's; decoded no larger than the describer
    needs) and describe the readable ones as a batch."""
    max_side = getattr(describer, "max_side", None)
    images = list(map_(lambda path: _read(path, max_side), paths))
    good = [im for im in images if isinstance(im, np.ndarray)]
    descriptions = iter(describer.describe_batch(good) if good else [])
    out: list[Described] = []
    for im in images:
        if isinstance(im, ImageReadError):
            out.append((im, None))
        else:
            out.append(((int(im.shape[0]), int(im.shape[1])), next(descriptions)))
    return out


def describe_scenes(
    describer: Describer, cropper: SceneCropper, paths: list[Path],
    map_: Callable[[Callable[[Path], Any], Iterable[Path]], Iterable[Any]] = map,
) -> list[SceneDescribed]:
    """Read scene photos (with `map_`, at full resolution), find the people in each, and describe
    all their crops as one batch."""
    from indexer.models.person_detector.detect import crop

    images = list(map_(lambda path: _read(path, None), paths))
    found = [cropper.boxes(im) if isinstance(im, np.ndarray) else None for im in images]
    crops = [crop(im, box) for im, f in zip(images, found, strict=True) if f is not None
             for box in f[0]]
    descriptions = iter(describer.describe_batch(crops) if crops else [])
    shapes = iter([(int(c.shape[0]), int(c.shape[1])) for c in crops])
    out: list[SceneDescribed] = []
    for im, f in zip(images, found, strict=True):
        if isinstance(im, ImageReadError) or f is None:
            out.append((im, None))
            continue
        boxes, scores = f
        n = len(boxes)
        people = People(np.asarray(boxes, dtype=np.int64).reshape(n, 4), np.asarray(scores, float),
                        [next(shapes) for _ in range(n)], [next(descriptions) for _ in range(n)])
        out.append(((int(im.shape[0]), int(im.shape[1])), people))
    return out


class _DescribeBatch:
    """A Ray Data actor: one Describer (and detector, for scene photos), batches of paths in,
    pickled descriptions (or people) out."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.describer = Describer(config)
        detect = config.get("detect")
        self.cropper = SceneCropper(detect) if detect else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(str(p)) for p in batch["path"]]
        described: list[Any] = (describe_scenes(self.describer, self.cropper, paths) if self.cropper
                                else describe_files(self.describer, paths))
        return {"position": batch["position"],
                "result": np.array([pickle.dumps(_portable(d)) for d in described], dtype=object)}


def _portable(item: tuple[Any, Any]) -> tuple[Any, Any]:
    """A description as it can cross processes (ImageReadError does not unpickle)."""
    head, desc = item
    if isinstance(head, ImageReadError):
        return ("read-error", str(head.path), head.reason), None
    return head, desc


def _restored(item: tuple[Any, Any]) -> tuple[Any, Any]:
    head, desc = item
    if desc is None:
        _, path, reason = head
        return ImageReadError(Path(path), reason), None
    return (int(head[0]), int(head[1])), desc


def describe_on_ray(
    tasks: list[Any], config: dict[str, Any], address: str, batch_size: int = 16,
    workers: int | None = None,
) -> Iterator[tuple[list[Any], list[Any]]]:
    """(tasks, their descriptions) per batch, as Ray Data workers finish them (any order); a
    configuration with `"detect"` gives each photo's `People` in place of its description.

    `address`: a Ray cluster's address, or "local" for a local instance (started if needed);
    `workers`: actors in the pool (default: TANSAKU_RAY_WORKERS, else Ray's CPU count).
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ModelLoadError("ray", "`--ray` needs Ray: pip install 'tansaku[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    workers = workers or int(os.environ.get("TANSAKU_RAY_WORKERS", "0")) or max(
        1, int(ray.cluster_resources().get("CPU", 1)))
    items = [{"position": k, "path": str(t.path)} for k, t in enumerate(tasks)]
    ds = ray.data.from_items(items).map_batches(
        _DescribeBatch, fn_constructor_kwargs={"config": config}, batch_size=batch_size,
        batch_format="numpy", concurrency=workers, num_cpus=1,
    )
    log.info("describing %d images on Ray (%d workers)", len(tasks), workers)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        positions = [int(p) for p in batch["position"]]
        yield [tasks[p] for p in positions], [_restored(pickle.loads(r)) for r in batch["result"]]
