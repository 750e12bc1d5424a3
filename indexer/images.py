"""Finding, hashing and reading image files; every failure names the file and the reason."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000  # refuse decompression bombs, allow big photographs


class ImageReadError(Exception):
    """An image that cannot be used, with the path and a short reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def discover_images(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, recursively, by suffix, sorted, hidden folders skipped."""
    for path in sorted(folder.rglob("*")):
        rel_parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of the file's bytes (changes iff the content changes, for incremental runs)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_image(path: Path) -> np.ndarray:
    """Decode `path` fully into an RGB uint8 array (H, W, 3), honouring EXIF orientation."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # forces a full decode: truncated files fail here
                rgb = ImageOps.exif_transpose(img).convert("RGB")
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageReadError(path, f"cannot decode: {reason}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ImageReadError(path, f"too small ({array.shape[1]}x{array.shape[0]} px)")
    return array
