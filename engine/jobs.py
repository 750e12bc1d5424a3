"""Indexing jobs: `Engine.index_folder` in a background thread, with progress, failures and cancel.

Jobs index only folders under the allowed roots given to the server (none given: no jobs), and
only the files whose real path stays under that folder (symbolic links pointing out are skipped).
A cancelled job stops between batches and leaves the gallery usable, as Ctrl-C does.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import NotFoundError, TansakuError
from indexer.pipeline import IndexCancelled, IndexSummary

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


class ForbiddenPathError(TansakuError):
    """A path outside every allowed root (or indexing through the server is off)."""


def resolve_under(folder: str, roots: list[Path]) -> Path:
    """The real folder `folder` names, if it lies under one of `roots`; else ForbiddenPathError.

    A relative `folder` is taken relative to the first root. The check is on the real path (`..`
    and symbolic links resolved), so no spelling of a path reaches outside a root; the text is
    taken literally (a URL-encoded `%2e%2e` is a folder of that name, not `..`).
    """
    if not roots:
        raise ForbiddenPathError("indexing through the server is off: start it with --allow-root DIR")
    text = folder.strip()
    if not text or "\x00" in text:
        raise TansakuError("folder: give a folder path")
    real_roots = [root.resolve() for root in roots]
    path = Path(text).expanduser()
    candidate = path if path.is_absolute() else real_roots[0] / path
    real = candidate.resolve()
    if not any(real.is_relative_to(root) for root in real_roots):
        allowed = ", ".join(str(r) for r in real_roots)
        raise ForbiddenPathError(f"folder {folder!r} is outside the allowed roots ({allowed})")
    if not real.is_dir():
        raise NotFoundError(f"folder not found under the allowed roots: {folder!r}")
    return real


class JobConflictError(TansakuError):
    """The gallery is being indexed already."""


@dataclass
class Job:
    """One indexing run started through the server."""

    id: int
    gallery: str
    folder: str
    profile: str
    status: str = "queued"  # queued, running, completed, cancelled, failed
    done: int = 0
    total: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    summary: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The job as the API reports it."""
        return {
            "id": self.id, "gallery": self.gallery, "folder": self.folder, "profile": self.profile,
            "status": self.status, "done": self.done, "total": self.total,
            "progress": round(100.0 * self.done / self.total, 1) if self.total else None,
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "error": self.error, "summary": self.summary, "started": self.started,
            "finished": self.finished,
        }


class JobManager:
    """Runs and remembers indexing jobs; one running job per gallery."""

    def __init__(self, engine: Engine, roots: list[Path]) -> None:
        self.engine = engine
        self.roots = [Path(r) for r in roots]
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, folder: str, gallery: str, profile: str = "landmark") -> Job:
        """Check the folder and start indexing it into `gallery` in a background thread."""
        from indexer.profiles import PROFILES

        real = resolve_under(folder, self.roots)
        if not gallery.strip():
            raise TansakuError("gallery: give a gallery name")
        if profile not in PROFILES:
            raise TansakuError(f"unknown profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
        with self._lock:
            if any(j.gallery == gallery and j.status in ("queued", "running")
                   for j in self._jobs.values()):
                raise JobConflictError(f"gallery {gallery!r} is being indexed already; wait for "
                                       "that job or cancel it")
            job = Job(next(self._ids), gallery, str(real), profile)
            self._jobs[job.id] = job
        thread = threading.Thread(target=self._run, args=(job,), name=f"index-job-{job.id}",
                                  daemon=True)
        thread.start()
        return job

    def get(self, job_id: int) -> Job:
        """The job `job_id`; NotFoundError if there is none."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no indexing job {job_id}")
        return job

    def list(self) -> list[Job]:
        """All jobs, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.id)

    def cancel(self, job_id: int) -> Job:
        """Ask a job to stop after its current batch."""
        job = self.get(job_id)
        job.cancel.set()
        return job

    def running(self, gallery: str) -> bool:
        """Whether a job is indexing `gallery` now."""
        with self._lock:
            return any(j.gallery == gallery and j.status in ("queued", "running")
                       for j in self._jobs.values())

    def _run(self, job: Job) -> None:
        job.status = "running"

        def progress(done: int, total: int, summary: IndexSummary) -> None:
            job.done, job.total = done, total
            job.failures = list(summary.failures)

        try:
            summary = self.engine.index_folder(job.folder, job.gallery, profile=job.profile,
                                               progress=progress, cancel=job.cancel,
                                               contained=True)
        except IndexCancelled:
            job.status = "cancelled"
        except TansakuError as exc:
            job.status, job.error = "failed", str(exc)
        except Exception as exc:  # a job's thread must not die silently
            log.exception("indexing job %d failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            job.status = "completed"
            job.failures = list(summary.failures)
            job.summary = {"indexed": summary.indexed, "unchanged": summary.unchanged,
                           "failed": summary.failed, "pruned": summary.pruned,
                           "seconds": round(summary.seconds, 2)}
        job.finished = time.time()
