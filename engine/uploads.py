"""The boundary for images that arrive over the network: size and pixel limits, type by content.

An upload is judged only by its bytes: it must decode as one of `FORMATS`, whatever its name or
declared type says. Its pixel count is read from the header and refused above the limit before
any pixel is decoded, so a small file that would expand to gigabytes (a decompression bomb) costs
nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import TansakuError

MAX_BYTES = 20 * 1024 * 1024  # 20 MB
MAX_PIXELS = 40_000_000  # 40 megapixels: any camera photo, far below what would exhaust memory
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")


class UploadError(TansakuError):
    """An upload refused at the boundary; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> RGB uint8 (H, W, 3), EXIF orientation applied, or an UploadError."""
    if len(data) == 0:
        raise UploadError("the uploaded file is empty")
    if len(data) > max_bytes:
        raise UploadError(f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes", 413)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                width, height = img.size  # from the header: nothing decoded yet
                if width * height > max_pixels:
                    raise UploadError(f"the image is {width}x{height} = {width * height} pixels; "
                                      f"the limit is {max_pixels} pixels", 413)
                img.load()
                rgb = ImageOps.exif_transpose(img).convert("RGB")
        except UploadError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            if isinstance(exc, UnidentifiedImageError):
                raise UploadError("the upload is not an image (expected one of "
                                  f"{', '.join(FORMATS)})", 415) from exc
            raise UploadError(f"the image is too large to decode: {exc}", 413) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise UploadError(f"the image cannot be decoded: {exc or type(exc).__name__}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise UploadError(f"the image is too small ({array.shape[1]}x{array.shape[0]} px)")
    return array
