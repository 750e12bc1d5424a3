"""Pictures of results: match views, thumbnails, the CMC curve, and image encodings for pages.

Everything takes and returns RGB uint8 arrays or encoded bytes; nothing here reads files or knows
about galleries (the engine and the server hand it pixels).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import cv2
import numpy as np

MATCH_HEIGHT = 480  # each side of a match view is scaled to this height
THUMB_SIDE = 256
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128]],
                    dtype=np.uint8)


def _fit_height(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    scale = height / image.shape[0]
    size = (max(1, round(image.shape[1] * scale)), height)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


def match_view(
    query: np.ndarray, candidate: np.ndarray, query_points: np.ndarray,
    candidate_points: np.ndarray, caption: str = "", height: int = MATCH_HEIGHT, gap: int = 8,
) -> np.ndarray:
    """The query (left) and a candidate (right) side by side, each inlier pair joined by a line.

    Points are (K, 2) x, y in pixels of the images as given; returns an RGB uint8 image.
    """
    left, sl = _fit_height(_rgb(query), height)
    right, sr = _fit_height(_rgb(candidate), height)
    caption_h = 28 if caption else 0
    canvas = np.full((height + caption_h, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[caption_h:, : left.shape[1]] = left
    offset = left.shape[1] + gap
    canvas[caption_h:, offset:] = right
    qp = np.asarray(query_points, np.float64).reshape(-1, 2) * sl + [0, caption_h]
    cp = np.asarray(candidate_points, np.float64).reshape(-1, 2) * sr + [offset, caption_h]
    for k, (a, b) in enumerate(zip(qp, cp, strict=True)):
        colour = tuple(int(c) for c in _PALETTE[k % len(_PALETTE)])
        pa, pb = (round(a[0]), round(a[1])), (round(b[0]), round(b[1]))
        cv2.line(canvas, pa, pb, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, pa, 3, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, pb, 3, colour, -1, cv2.LINE_AA)
    if caption:
        cv2.putText(canvas, caption, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1,
                    cv2.LINE_AA)
    return canvas


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """The image scaled so its longer side is at most `side` (never enlarged)."""
    image = _rgb(image)
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode(image: np.ndarray, fmt: str = "png", quality: int = 85) -> bytes:
    """RGB uint8 -> PNG or JPEG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt in ("jpg", "jpeg") else []
    ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(_rgb(image), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode an image as {fmt}")
    return data.tobytes()


def data_uri(data: bytes, mime: str) -> str:
    """Bytes as a `data:` URI, for self-contained HTML."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def cmc_plot(cmc: Sequence[float] | np.ndarray, label: str = "", max_rank: int = 20) -> bytes:
    """The CMC curve (identification rate in % against rank) as PNG bytes, drawn by matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the CMC plot needs matplotlib: pip install -e '.[serve]'") from exc
    matplotlib.use("Agg")  # no display; safe to call from any thread of a server
    from matplotlib.figure import Figure

    values = 100.0 * np.asarray(cmc, dtype=np.float64)[:max_rank]
    ranks = np.arange(1, len(values) + 1)
    fig = Figure(figsize=(5.5, 3.6), dpi=110)
    ax = fig.add_subplot()
    ax.plot(ranks, values, marker="o", markersize=3, label=label or None)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_xlim(1, max(len(values), 2))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if label:
        ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))
