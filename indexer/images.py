"""Finding, hashing and reading image files; every failure names the file and the reason."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
# Decompression bombs: PIL refuses a header of more pixels than this before decoding anything. A
# JPEG this large still decodes at 1/8 scale (6 Mpx); other formats meet MAX_DECODE_PIXELS first.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
# The most pixels decoded for one image (PIL keeps RGB at 4 bytes a pixel: 200 MB), checked from
# the header before decoding. JPEGs reduced on decode are checked at their reduced size.
MAX_DECODE_PIXELS = 50_000_000
# EXIF orientation -> the transpose that puts the image upright (what ImageOps.exif_transpose does)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE_MODES = frozenset({"L", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})


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


def reduction_factor(size: tuple[int, int], max_side: int | None) -> int:
    """The integer factor an image of `size` (w, h) may be shrunk by for extractors that use at
    most `max_side` pixels on its longer side: its longer side stays at least twice max_side, so
    the extractors' own antialiased resize does the last step, and images up to twice max_side
    are not reduced at all (they decode exactly as at full size). 1 when max_side is None."""
    if max_side is None:
        return 1
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    return max(1, max(size) // (2 * max_side))


def read_image(path: Path, max_side: int | None = None, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode `path` into an RGB uint8 array (H, W, 3), upright by its EXIF orientation.

    `max_side`: the longest side the caller's extractors use (`Describer.max_side`); an image more
    than twice that size is decoded smaller (see `reduction_factor`): a JPEG by libjpeg's DCT
    scaling (1/2, 1/4 or 1/8, `Image.draft`) so the full image is never in memory, other formats
    by an integer box reduction (`Image.reduce`) straight after decoding. None: full size.
    At most `max_pixels` (default MAX_DECODE_PIXELS) are decoded: a larger image is refused from its
    header, before decoding, with an error that gives its size and the limit.
    """
    cap = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                rgb = _decode(path, img, max_side, cap)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageReadError(path, f"cannot decode: {reason}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ImageReadError(path, f"too small ({array.shape[1]}x{array.shape[0]} px)")
    return array


def _decode(path: Path, img: Image.Image, max_side: int | None, cap: int) -> Image.Image:
    """The opened `img` decoded (reduced where allowed), upright, in RGB."""
    width, height = img.size
    factor = reduction_factor(img.size, max_side)
    if factor > 1 and img.format == "JPEG":  # DCT scaling by the largest of 1/8, 1/4, 1/2 <= 1/factor
        img.draft("RGB", (-(-width // factor), -(-height // factor)))
    if img.size[0] * img.size[1] > cap:
        how = f"decoded at {img.size[0]}x{img.size[1]}" if img.size != (width, height) else (
            "its format cannot be reduced while decoding" if img.format != "JPEG" else "at full size")
        raise ImageReadError(
            path, f"{width}x{height} px image ({width * height / 1e6:.0f} Mpx, {how}) is over the "
            f"{cap / 1e6:g} Mpx decoding limit; make it smaller first")
    orientation = img.getexif().get(0x0112)  # read before reducing: reduce() drops the EXIF
    img.load()  # forces a full decode: truncated files fail here
    out = img
    remaining = reduction_factor(img.size, max_side)
    if remaining > 1:
        if img.mode not in _REDUCIBLE_MODES:
            out = out.convert("RGB")
        out = out.reduce(remaining)
    out = out.convert("RGB")  # a copy even when already RGB: `img` is closed by the caller
    if orientation in _UPRIGHT:
        out = out.transpose(_UPRIGHT[orientation])
    return out
