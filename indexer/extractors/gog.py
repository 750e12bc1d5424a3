"""GOG: the hierarchical Gaussian descriptor for person re-identification.

Matsukawa, Okabe, Suzuki & Sato, "Hierarchical Gaussian Descriptor for Person Re-Identification",
CVPR 2016 (and the TPAMI 2020 extension). Follows the authors' MATLAB release (GOG.m,
get_pixelfeatures.m, get_gradmap.m, set_default_parameter.m):

1. the image is resized to 128x48 and each pixel described by f = [y, M_0, M_90, M_180, M_270,
   colour] (vertical position, gradient magnitude softly voted into 4 orientation bins, then the 3
   channels of RGB, Lab or HSV, or the 2 of nRnG);
2. a Gaussian (mean, unbiased covariance) is fitted over every k x k = 5x5 patch on a grid of stride
   p = 2, regularised, embedded as the SPD matrix det(S)^(-1/(d+1)) [[S + mu mu^T, mu], [mu^T, 1]],
   mapped by the matrix logarithm and half-vectorised (off-diagonal entries times sqrt 2);
3. the patch vectors inside each of G = 7 overlapping horizontal strips are summarised by a second
   Gaussian, with patches weighted by a Gaussian of their column (centre weighted), and embedded the
   same way; the strip vectors are concatenated.

The four colour spaces are computed separately and concatenated (GOG fusion, 27,622 dimensions).
Everything runs on whole batches of images at once: patch moments come from integral images and the
matrix logarithms from one batched symmetric eigendecomposition.

Before metric learning the authors' demo removes the training mean and L2-normalises each colour
space's block separately; `GOGNormalizer` does that (it needs training data, so `gog` does not).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.imageops import check_rgb, l2_normalize, resize_to

logger = logging.getLogger(__name__)

HEIGHT, WIDTH = 128, 48  # every image is resized to this before description
COLOR_SPACES: tuple[str, ...] = ("rgb", "lab", "hsv", "nrng")
_COLOR_CHANNELS = {"rgb": 3, "lab": 3, "hsv": 3, "nrng": 2}
_ORIENTATION_BINS = 4
_BATCH = 8  # images described together; keeps temporaries small enough to be reused


@dataclass(frozen=True)
class GOGParams:
    """Parameters of the authors' set_default_parameter.m."""

    p: int = 2  # stride of the patch grid, pixels
    k: int = 5  # patch side, pixels
    epsilon0: float = 1e-3  # covariance regularisation, relative to the trace
    ifweight: bool = True  # weight patches by a Gaussian of their column (toward the centre)
    G: int = 7  # overlapping horizontal strips: height H/4, step H/8


DEFAULT_PARAMS = GOGParams()


# ----------------------------------------------------------------------------------------------
# Dimensions and layout
# ----------------------------------------------------------------------------------------------


def pixel_dim(space: str) -> int:
    """Dimension d of the pixel feature for one colour space (8, or 7 for nRnG)."""
    _check_spaces((space,))
    return 1 + _ORIENTATION_BINS + _COLOR_CHANNELS[space]


def gog_dim(color_spaces: Sequence[str] = COLOR_SPACES, params: GOGParams = DEFAULT_PARAMS) -> int:
    """Length of the descriptor: G region vectors of size (m^2 + 3m)/2 + 1 per colour space."""
    _check_spaces(color_spaces)
    total = 0
    for space in color_spaces:
        m = _embedded_dim(pixel_dim(space))
        total += params.G * _embedded_dim(m)
    return total


def color_space_slices(
    color_spaces: Sequence[str] = COLOR_SPACES, params: GOGParams = DEFAULT_PARAMS
) -> dict[str, slice]:
    """Where each colour space's block lies in the concatenated descriptor."""
    slices, start = {}, 0
    for space in color_spaces:
        size = gog_dim((space,), params)
        slices[space] = slice(start, start + size)
        start += size
    return slices


def _embedded_dim(d: int) -> int:
    """Length of the half-vectorised (d+1)x(d+1) embedding of a d-dimensional Gaussian."""
    return (d + 1) * (d + 2) // 2


def _check_spaces(color_spaces: Sequence[str]) -> None:
    if isinstance(color_spaces, str):
        raise ValueError(f"color_spaces must be a sequence of names, got the string {color_spaces!r}")
    if len(color_spaces) == 0:
        raise ValueError(f"color_spaces is empty; choose from {list(COLOR_SPACES)}")
    for space in color_spaces:
        if space not in _COLOR_CHANNELS:
            raise ValueError(f"unknown colour space {space!r}; valid: {list(COLOR_SPACES)}")


# ----------------------------------------------------------------------------------------------
# Pixel features
# ----------------------------------------------------------------------------------------------


def to_model_size(image: np.ndarray) -> np.ndarray:
    """Resize one RGB uint8 image to 128x48 (area filter when shrinking, cubic when enlarging)."""
    if image.shape[:2] == (HEIGHT, WIDTH):
        return image
    return resize_to(image, (WIDTH, HEIGHT), shrink_if="any", enlarge="cubic")


def gradient_orientation_map(luma: np.ndarray, bins: int = _ORIENTATION_BINS) -> np.ndarray:
    """Gradient magnitude softly voted into orientation bins: (..., H, W) -> (..., H, W, bins).

    As get_gradmap.m: [-1, 0, 1] filters with zero padding, orientation atan2(gx, gy) + pi over
    [0, 2 pi), linear voting between the two nearest bin starts.
    """
    padded = np.pad(luma, [(0, 0)] * (luma.ndim - 2) + [(1, 1), (1, 1)])
    gx = padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]
    gy = padded[..., :-2, 1:-1] - padded[..., 2:, 1:-1]
    position = (np.arctan2(gx, gy) + np.pi) / (2 * np.pi / bins)
    lower = np.floor(position)
    upper_weight = position - lower
    magnitude = np.hypot(gx, gy)
    lower_bin = lower.astype(np.int64) % bins
    votes = np.zeros((*luma.shape, bins))
    np.put_along_axis(votes, lower_bin[..., None], ((1 - upper_weight) * magnitude)[..., None], -1)
    upper_bin = (lower_bin + 1) % bins
    np.put_along_axis(votes, upper_bin[..., None], (upper_weight * magnitude)[..., None], -1)
    return votes


def _luma(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's rgb2ycbcr luma of uint8 RGB (rounded to uint8), then (Y - 16) / 235 as the code."""
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    y = np.floor(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0 + 0.5)
    return (y - 16.0) / 235.0


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65, sRGB companding) of uint8 RGB, as MATLAB's rgb2lab: L in [0, 100]."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    srgb_to_xyz = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
         [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = linear @ srgb_to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Hue, saturation, value of uint8 RGB, each in [0, 1], as MATLAB's rgb2hsv (scikit-image's
    `rgb2hsv`, which follows the same definition)."""
    from skimage.color import rgb2hsv

    return np.asarray(rgb2hsv(rgb.astype(np.float64) / 255.0, channel_axis=-1), np.float64)


def _colour_channels(rgb: np.ndarray, space: str) -> np.ndarray:
    """The colour part of the pixel feature, scaled as get_pixelfeatures.m scales it."""
    if space == "rgb":
        return rgb.astype(np.float64) / 255.0
    if space == "lab":
        lab = rgb_to_lab(rgb)
        return np.stack([lab[..., 0] / 100, (lab[..., 1] + 50) / 100, (lab[..., 2] + 50) / 100], -1)
    if space == "hsv":
        return rgb_to_hsv(rgb)
    total = np.maximum(rgb.astype(np.float64).sum(axis=-1, keepdims=True), 1.0)
    return rgb[..., :2].astype(np.float64) / total


def pixel_features(rgb: np.ndarray, space: str, shared: np.ndarray | None = None) -> np.ndarray:
    """Pixel features f = [y, M_theta (4), colour] of uint8 images: (N, H, W, 3) -> (N, H, W, d).

    `shared` is the colour-independent part [y, M_theta] when the caller already has it.
    """
    _check_spaces((space,))
    if shared is None:
        shared = _shared_pixel_features(rgb)
    return np.concatenate([shared, _colour_channels(rgb, space)], axis=-1)


def _shared_pixel_features(rgb: np.ndarray) -> np.ndarray:
    """[y, M_0, M_90, M_180, M_270]: row position (1..H)/H and oriented gradient magnitudes."""
    n, h, w = rgb.shape[:3]
    rows = np.broadcast_to((np.arange(1, h + 1) / h)[None, :, None, None], (n, h, w, 1))
    return np.concatenate([rows, gradient_orientation_map(_luma(rgb))], axis=-1)


# ----------------------------------------------------------------------------------------------
# Gaussian statistics and their embedding
# ----------------------------------------------------------------------------------------------


def patch_gaussians(features: np.ndarray, k: int = 5, p: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of every k x k patch centred on a stride-p grid.

    features: (N, H, W, d). Patch centres are rows 0, p, 2p, ... and the same for columns; windows
    are clipped at the image border (as GOG.m). Returns means (N, H/p, W/p, d) and covariances
    (N, H/p, W/p, d, d), from box sums of f and of the upper triangle of f f^T.
    """
    n, h, w, d = features.shape
    rows, cols = np.triu_indices(d)
    sums = np.moveaxis(_box_sums(_moment_planes(features), k, p), 1, -1)
    counts = _box_counts(h, w, k, p)[None, :, :, None]
    means = sums[..., :d] / counts
    scatter_triu = sums[..., d:] - sums[..., rows] * means[..., cols]
    covariances = np.empty((*sums.shape[:3], d, d))
    covariances[..., rows, cols] = scatter_triu / (counts - 1)
    covariances[..., cols, rows] = covariances[..., rows, cols]
    return means, covariances


def _moment_planes(features: np.ndarray) -> np.ndarray:
    """Channels-first stack of f and the upper triangle of f f^T, in np.triu_indices order."""
    n, h, w, d = features.shape
    planes = np.empty((n, d + d * (d + 1) // 2, h, w))
    planes[:, :d] = np.moveaxis(features, -1, 1)
    start = d
    for i in range(d):  # row i of the triangle at once: f_i * f_i..d-1
        np.multiply(planes[:, i : i + 1], planes[:, i:d], out=planes[:, start : start + d - i])
        start += d - i
    return planes


def _box_sums(planes: np.ndarray, k: int, p: int) -> np.ndarray:
    """Sum of `planes` (N, C, H, W) over each clipped k x k patch on the stride-p grid.

    Zero padding turns the clipped windows of GOG.m into plain k x k boxes, so every corner of the
    integral image is a strided slice (no gathers).
    """
    half = (k - 1) // 2
    n, c, h, w = planes.shape
    integral = np.zeros((n, c, h + 2 * half + 1, w + 2 * half + 1))
    inner = integral[:, :, 1 : h + half + 1, 1 : w + half + 1]
    inner[:, :, half:, half:] = planes  # the first `half` rows and columns stay zero padding
    np.cumsum(integral, axis=2, out=integral)
    np.cumsum(integral, axis=3, out=integral)
    top, bottom = slice(0, h, p), slice(k, h + k, p)
    left, right = slice(0, w, p), slice(k, w + k, p)
    return (
        integral[:, :, bottom, right] - integral[:, :, top, right]
        - integral[:, :, bottom, left] + integral[:, :, top, left]
    )


def _box_counts(h: int, w: int, k: int, p: int) -> np.ndarray:
    """Number of pixels in each clipped patch, (H/p, W/p)."""
    half = (k - 1) // 2

    def extent(size: int) -> np.ndarray:
        centres = np.arange(0, size, p)
        return np.minimum(centres + half, size - 1) - np.maximum(centres - half, 0) + 1

    return (extent(h)[:, None] * extent(w)[None, :]).astype(np.float64)


def regularize(covariances: np.ndarray, epsilon0: float, floor: float = 0.0) -> np.ndarray:
    """S + epsilon0 * max(trace S, floor) * I for a stack of covariances (..., d, d)."""
    trace = np.trace(covariances, axis1=-2, axis2=-1)
    ridge = epsilon0 * np.maximum(trace, floor)
    d = covariances.shape[-1]
    return covariances + ridge[..., None, None] * np.eye(d)


def half_vectorize(matrices: np.ndarray) -> np.ndarray:
    """Upper triangle of symmetric matrices, row by row, off-diagonal entries times sqrt(2).

    (..., n, n) -> (..., n(n+1)/2); the Euclidean norm of the result is the Frobenius norm.
    """
    n = matrices.shape[-1]
    rows, cols = np.triu_indices(n)
    scale = np.where(rows == cols, 1.0, np.sqrt(2.0))
    return matrices[..., rows, cols] * scale


def log_gaussian_embedding(means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """Half-vectorised log of det(S)^(-1/(d+1)) [[S + mu mu^T, mu], [mu^T, 1]] for each Gaussian.

    means (..., d), covariances (..., d, d) positive definite -> (..., (d+1)(d+2)/2).
    The unscaled matrix Q has det Q = det S (Schur complement), so the scaling is a shift of the
    log-eigenvalues by their mean: the log of the scaled matrix is traceless.
    """
    d = means.shape[-1]
    Q = np.empty((*means.shape[:-1], d + 1, d + 1))
    Q[..., :d, :d] = covariances + means[..., :, None] * means[..., None, :]
    Q[..., :d, d] = means
    Q[..., d, :d] = means
    Q[..., d, d] = 1.0
    eigenvalues, eigenvectors = np.linalg.eigh(Q)
    logs = np.log(np.maximum(eigenvalues, np.finfo(np.float64).tiny))
    logs -= logs.mean(axis=-1, keepdims=True)
    log_q = (eigenvectors * logs[..., None, :]) @ np.swapaxes(eigenvectors, -1, -2)
    return half_vectorize(log_q)


def column_weights(width: int, use_weight: bool = True) -> np.ndarray:
    """Weight of each patch column: N(x; W/2, (W/4)^2) with x = 1..W as GOG.m, or all ones."""
    if not use_weight:
        return np.ones(width)
    x = np.arange(1, width + 1, dtype=np.float64)
    mu, sigma = width / 2, width / 4
    return np.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def strip_rows(height: int, G: int = 7) -> list[tuple[int, int]]:
    """(first, one-past-last) row of each horizontal strip: height H/4, step H/8 (G = 7 only)."""
    if G != 7:
        raise ValueError(f"only the G = 7 strip layout of GOG.m is defined, got G = {G}")
    strip, step = height // 4, height // 8
    return [(top, top + strip) for top in range(0, height - strip + 1, step)]


def region_gaussians(
    patch_vectors: np.ndarray, weights: np.ndarray, strips: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and (biased, weighted) covariance of patch vectors in each strip.

    patch_vectors (N, h, w, m), weights (w,) per column -> means (N, S, m), covariances (N, S, m, m).
    """
    n, _, w, m = patch_vectors.shape
    means, covariances = [], []
    for top, bottom in strips:
        block = patch_vectors[:, top:bottom].reshape(n, -1, m)
        wts = np.tile(weights, bottom - top)
        mean = np.einsum("r,nrm->nm", wts, block) / wts.sum()
        centred = block - mean[:, None, :]
        weighted = centred * (wts / wts.sum())[None, :, None]
        covariances.append(np.swapaxes(weighted, 1, 2) @ centred)
        means.append(mean)
    return np.stack(means, axis=1), np.stack(covariances, axis=1)


# ----------------------------------------------------------------------------------------------
# The descriptor
# ----------------------------------------------------------------------------------------------


def gog_from_features(features: np.ndarray, params: GOGParams = DEFAULT_PARAMS) -> np.ndarray:
    """GOG of pixel-feature maps (N, H, W, d) -> (N, G * ((m^2 + 3m)/2 + 1)) float64."""
    means, covs = patch_gaussians(features, params.k, params.p)
    # The 0.01 floor keeps flat patches (trace ~ 0) invertible, as in GOG.m.
    patch_vectors = log_gaussian_embedding(means, regularize(covs, params.epsilon0, floor=0.01))
    weights = column_weights(patch_vectors.shape[2], params.ifweight)
    strips = strip_rows(patch_vectors.shape[1], params.G)
    region_means, region_covs = region_gaussians(patch_vectors, weights, strips)
    # GOG.m uses the bare trace here; the tiny floor only guards a perfectly uniform strip.
    region_covs = regularize(region_covs, params.epsilon0, floor=1e-12)
    region_vectors = log_gaussian_embedding(region_means, region_covs)
    return region_vectors.reshape(len(features), -1)


def _validate_image(image: object, where: str) -> np.ndarray:
    return check_rgb(image, where)


def gog_batch(
    images: Sequence[np.ndarray],
    color_spaces: Sequence[str] = COLOR_SPACES,
    params: GOGParams = DEFAULT_PARAMS,
) -> np.ndarray:
    """GOG descriptors of RGB uint8 images of any size: (N, D) float32, colour spaces in order."""
    _check_spaces(color_spaces)
    resized = [to_model_size(_validate_image(img, f"images[{i}]")) for i, img in enumerate(images)]
    out = np.empty((len(resized), gog_dim(color_spaces, params)), np.float32)
    slices = color_space_slices(color_spaces, params)
    for start in range(0, len(resized), _BATCH):
        rgb = np.stack(resized[start : start + _BATCH])
        shared = _shared_pixel_features(rgb)
        for space in color_spaces:
            features = pixel_features(rgb, space, shared)
            out[start : start + len(rgb), slices[space]] = gog_from_features(features, params)
    return out


def gog(
    image: np.ndarray,
    color_spaces: Sequence[str] = COLOR_SPACES,
    params: GOGParams = DEFAULT_PARAMS,
) -> np.ndarray:
    """GOG descriptor of one RGB uint8 image of any size: (D,) float32 (27,622 for the fusion)."""
    return gog_batch([_validate_image(image, "image")], color_spaces, params)[0]


class GOGNormalizer:
    """Per-colour-space mean removal and L2 normalisation, as the authors' demo before XQDA."""

    def __init__(
        self, color_spaces: Sequence[str] = COLOR_SPACES, params: GOGParams = DEFAULT_PARAMS
    ) -> None:
        _check_spaces(color_spaces)
        self.slices = color_space_slices(color_spaces, params)
        self.dim = gog_dim(color_spaces, params)
        self.mean_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> GOGNormalizer:
        """Learn the mean descriptor of the training set X (N, D)."""
        self._check(X)
        self.mean_ = X.astype(np.float64).mean(axis=0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Subtract the training mean and scale each colour-space block to unit length."""
        if self.mean_ is None:
            raise RuntimeError("GOGNormalizer.transform called before fit")
        self._check(X)
        out = X.astype(np.float64) - self.mean_
        for block in self.slices.values():
            out[:, block] = l2_normalize(out[:, block], axis=1)
        return out.astype(np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """fit then transform on the same data."""
        return self.fit(X).transform(X)

    def _check(self, X: np.ndarray) -> None:
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected descriptors of shape (N, {self.dim}), got {X.shape}")
