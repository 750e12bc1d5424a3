"""One image -> everything a gallery stores about it (global vector, local features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.extractors import build_global, build_joint, build_local
from indexer.extractors.base import GlobalExtractor, JointExtractor, LocalExtractor
from indexer.features import LocalFeatures, strongest_rows


@dataclass(frozen=True)
class Description:
    """What a gallery keeps of one image."""

    global_vector: np.ndarray  # (D,) float32
    local: LocalFeatures | None
    attributes: np.ndarray | None = None  # (A,) attribute probabilities (person galleries with a model)


class Describer:
    """The extractors of one profile configuration, used alike at index and query time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        joint = config.get("joint")
        self.joint_extractor: JointExtractor | None = (
            build_joint(joint["name"], joint.get("conf")) if joint else None
        )
        g = config.get("global")
        self.global_extractor: GlobalExtractor | None = (
            build_global(g["name"], g.get("conf")) if g and not joint else None
        )
        local = config.get("local")
        self.local_extractor: LocalExtractor | None = (
            build_local(local["name"], local.get("conf")) if local and not joint else None
        )
        self.attribute_model = None
        if config.get("attributes"):
            from indexer.models.attributes.model import load_attribute_model

            self.attribute_model = load_attribute_model(config["attributes"]["model"])

    @property
    def dim(self) -> int:
        """Length of the global vector."""
        extractor = self.joint_extractor or self.global_extractor
        assert extractor is not None
        return extractor.dim

    @property
    def max_side(self) -> int | None:
        """The longest image side any of the extractors uses (None: one uses any size); images are
        decoded no larger than needed for it (`indexer.images.read_image(path, max_side)`)."""
        if self.config.get("detect"):
            return None  # scene photos: people are found, and cut out, at full resolution
        extractors = [e for e in (self.joint_extractor, self.global_extractor, self.local_extractor) if e]
        sides = [e.max_side for e in extractors]
        if not sides or None in sides:
            return None
        return max(s for s in sides if s is not None)

    def describe_batch(
        self, images: list[np.ndarray], resize_factors: list[float] | None = None
    ) -> list[Description]:
        """Describe images (RGB uint8), global vectors computed as one batch.

        `resize_factors` (one per image) scale the extractor's size bounds, as DELF does for a
        query cropped from a larger photo (crop's larger side / photo's larger side); extractors
        without size bounds of that kind (`supports_resize_factor` False) ignore them. A gallery
        with an attribute model also gets each image's attribute probabilities.
        """
        out = self._describe(images, resize_factors)
        if self.attribute_model is not None and images:
            probs, _ = self.attribute_model.from_images(images)
            out = [Description(d.global_vector, d.local, p) for d, p in zip(out, probs, strict=True)]
        return out

    def _describe(
        self, images: list[np.ndarray], resize_factors: list[float] | None = None
    ) -> list[Description]:
        factors = resize_factors or [1.0] * len(images)
        if self.joint_extractor is not None:
            joint = self.joint_extractor
            if joint.supports_resize_factor:
                return [Description(*joint.extract(im, resize_factor=f))  # type: ignore[call-arg]
                        for im, f in zip(images, factors, strict=True)]
            return [Description(*joint.extract(im)) for im in images]
        assert self.global_extractor is not None
        vectors = self.global_extractor.describe_batch(images)
        locals_ = [self.local_extractor(im) if self.local_extractor else None for im in images]
        return [Description(v, loc) for v, loc in zip(vectors, locals_, strict=True)]

    def describe(self, image: np.ndarray, resize_factor: float = 1.0) -> Description:
        """Describe one image (`resize_factor`: see `describe_batch`)."""
        return self.describe_batch([image], [resize_factor])[0]


LOCAL_DTYPES = ("float32", "float16", "int8", "uint8", "uint4")
INT8_SCALE = 127.0
# RootSIFT components lie in [0, ~0.32] (SIFT clips its normalised bins at 0.2): x 512 keeps
# ~0.001 steps in one byte, and clipping at 255 (0.498) never bites.
UINT8_SCALE = 512.0
# uint4: 16 levels over [0, 0.3], two components a byte (components above 0.3 are rare and clipped)
UINT4_SCALE = 50.0


def to_arrays(desc: Description, local_dtype: str = "float16") -> dict[str, np.ndarray]:
    """Arrays for the feature store; local descriptors as `local_dtype`.

    float16 halves float32's bytes with no change in ranking; int8 (components x 127, rounded)
    quarters them and is meant for unit-norm descriptors (DELG's), whose components lie in [-1, 1];
    uint8 (components x 512, rounded) quarters them for non-negative ones (RootSIFT's), and keeps
    the detector scores as float16.
    """
    if local_dtype not in LOCAL_DTYPES:
        raise ValueError(f"unknown local descriptor type {local_dtype!r}; valid: {LOCAL_DTYPES}")
    arrays = {"global": desc.global_vector.astype(np.float32)}
    if desc.attributes is not None:
        arrays["attributes"] = desc.attributes.astype(np.float16)
    if desc.local is not None:
        arrays["keypoints"] = desc.local.keypoints.astype(np.float32)
        if local_dtype == "uint4":
            arrays["descriptors_u4"] = _encode_uint4(desc.local.descriptors)
        else:
            arrays["descriptors"] = _encode(desc.local.descriptors, local_dtype)
        if desc.local.scores is not None:
            score_dtype = np.float16 if local_dtype in ("uint8", "uint4") else np.float32
            arrays["scores"] = desc.local.scores.astype(score_dtype)
    return arrays


def _encode(descriptors: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        if len(descriptors) and float(descriptors.min()) < -1e-6:
            raise ValueError("uint8 storage needs non-negative descriptor components (RootSIFT)")
        return np.clip(np.round(descriptors * UINT8_SCALE), 0, 255).astype(np.uint8)
    if dtype != "int8":
        return descriptors.astype(dtype)
    peak = float(np.abs(descriptors).max(initial=0.0))
    if peak > 1.0 + 1e-3:
        raise ValueError(f"int8 storage needs descriptor components in [-1, 1], found {peak:.3f}")
    return np.clip(np.round(descriptors * INT8_SCALE), -127, 127).astype(np.int8)


def _encode_uint4(descriptors: np.ndarray) -> np.ndarray:
    """Non-negative descriptors (even width) as 4-bit levels, two to a byte: (N, D / 2) uint8."""
    if len(descriptors) and float(descriptors.min()) < -1e-6:
        raise ValueError("uint4 storage needs non-negative descriptor components (RootSIFT)")
    if descriptors.shape[1] % 2:
        raise ValueError(f"uint4 storage needs an even descriptor width, got {descriptors.shape[1]}")
    q = np.clip(np.round(descriptors * UINT4_SCALE), 0, 15).astype(np.uint8)
    return (q[:, 0::2] << 4) | q[:, 1::2]


# every byte's two levels, scaled, as one float64-sized item: decoding is then one gather
_UINT4_PAIRS = np.multiply(
    np.stack([np.arange(256) >> 4, np.arange(256) & 15], axis=1), np.float32(1.0 / UINT4_SCALE),
    dtype=np.float32,
).view(np.float64).ravel()


def _decode_uint4(packed: np.ndarray) -> np.ndarray:
    """(N, D / 2) codes -> (N, D) float32 (a gather by byte; twice as fast as shifting, masking
    and scaling into strided halves)."""
    return np.take(_UINT4_PAIRS, packed).view(np.float32).reshape(len(packed), 2 * packed.shape[1])


_PER_FEATURE = ("keypoints", "scores", "descriptors", "descriptors_u4")


class StoredLocal:
    """One image's local features as the store holds them, decoded when asked: all of them
    (`full`, kept once decoded) or only the `strongest` n rows. Re-ranking screens a shortlist on
    each candidate's strongest features and matches only a few candidates in full, so most records
    are never decoded whole."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._full: LocalFeatures | None = None

    def __len__(self) -> int:
        return len(self.arrays["keypoints"])

    def full(self) -> LocalFeatures:
        if self._full is None:
            self._full = local_from_arrays(self.arrays)
        return self._full

    def strongest(self, n: int) -> LocalFeatures:
        if self._full is not None or len(self) <= n:
            full = self.full()
            return full.subset(strongest_rows(full.scores, len(full), n))
        rows = strongest_rows(self.arrays.get("scores"), len(self), n)
        return local_from_arrays({k: v[rows] if k in _PER_FEATURE else v for k, v in self.arrays.items()})


def local_from_arrays(arrays: dict[str, np.ndarray]) -> LocalFeatures:
    """Local features back from the feature store (descriptors as float32)."""
    if "descriptors_u4" in arrays:
        return LocalFeatures(arrays["keypoints"], _decode_uint4(arrays["descriptors_u4"]),
                             arrays.get("scores"))
    codes = arrays["descriptors"]
    if codes.dtype == np.int8:  # one pass: scaled straight into float32
        descriptors = np.multiply(codes, np.float32(1.0 / INT8_SCALE), dtype=np.float32)
    elif codes.dtype == np.uint8:
        descriptors = np.multiply(codes, np.float32(1.0 / UINT8_SCALE), dtype=np.float32)
    else:
        descriptors = codes.astype(np.float32)
    return LocalFeatures(arrays["keypoints"], descriptors, arrays.get("scores"))
