"""Errors the indexer raises for the engine to turn into one-line user errors."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    """An extractor or model file that cannot be used, with the file (or setting) and the reason.

    Raised by every loader of outside or trained weights (DELG SavedModel, DELG heads, PCB and other
    checkpoints) for a missing file, a file of the wrong kind, shapes that do not fit, or a missing
    optional dependency; the engine reports it as `error: <path>: <reason>` and exit code 2.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
