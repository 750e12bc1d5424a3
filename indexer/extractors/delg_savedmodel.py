"""Google's exported DELG SavedModel (Cao et al., ECCV 2020) as a global + local feature extractor.

Runs the model that the DELF repository publishes (``delf/python/delg``) the way its own extractor
does (``delf/python/extractor.py``, ``utils.ResizeImage``, ``feature_extractor.py``):

- the image is resized so its larger side is at most ``max_image_size`` (PIL bilinear);
- the model builds the image pyramid itself from ``input_scales``, keeps local features whose
  attention is at least ``input_abs_thres`` and at most ``input_max_feature_num`` of them;
- global: each selected scale's descriptor is L2-normalised, the scales are summed and the sum is
  L2-normalised again;
- local: keypoints are the centres of the receptive boxes (DELF boxes are ymin, xmin, ymax, xmax),
  mapped back to the input image's pixels and returned as x, y; descriptors are L2-normalised.

Google publishes four models, each with its own extraction config
(``delf/python/delg/{r50,r101}delg_{gldv2clean,gld}_config.pbtxt``). The configs agree on the image
pyramid (7 scales, 0.25 ... 2.0), the global scales (indices 3, 4, 5: 0.707, 1.0, 1.414), 1000
local features at most and images of at most 1024 pixels; they differ only in the attention
threshold that local features must reach, which depends on the trained weights: 454.6
(R50-GLDv2-clean), 357.48 (R101-GLDv2-clean), 175.0 (R50-GLD), 166.1 (R101-GLD). Choose the preset
of the model you load (``preset``, or ``--model delg-savedmodel:PATH?preset=r101-gld``); the default
is R50-GLDv2-clean. An image under 10 pixels on a side after resizing gives no features, as DELF's
extractor returns empty ones: here an all-zero global vector and no local features.

Both export formats are read: a TF2 export with a ``serving_default`` signature taking the named
inputs, and the TF1 graphs of Google's published tarballs, which DELF itself reads by pruning the
graph to the tensors ``input_image:0`` ... ``global_descriptors:0``.

TensorFlow is imported here only, and only when a model is loaded: the package imports without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from indexer.errors import ModelLoadError
from indexer.extractors.base import JointExtractor
from indexer.features import LocalFeatures
from indexer.imageops import check_rgb, resize_pil_bilinear

logger = logging.getLogger(__name__)

INPUT_NAMES = (
    "input_image",
    "input_scales",
    "input_max_feature_num",
    "input_abs_thres",
    "input_global_scales_ind",
)
OUTPUT_NAMES = ("boxes", "features", "scales", "scores", "global_descriptors")
# The order in which DELF's extractor feeds a pruned TF1 graph.
_TF1_FEEDS = (
    "input_image",
    "input_scales",
    "input_abs_thres",
    "input_max_feature_num",
    "input_global_scales_ind",
)
_MIN_SIDE = 10  # DELF extracts nothing below 10 pixels, after resizing
_L2_EPS = 1e-12  # tf.nn.l2_normalize's epsilon on the squared norm

_PYRAMID = (0.25, 0.35355338, 0.5, 0.70710677, 1.0, 1.4142135, 2.0)


def _preset(score_threshold: float) -> dict[str, Any]:
    return {
        "image_scales": _PYRAMID,
        "global_scales_ind": (3, 4, 5),  # 0.707, 1.0, 1.414 for the global descriptor
        "max_feature_num": 1000,
        "score_threshold": score_threshold,
        "max_image_size": 1024,
        "min_image_size": -1,
        "use_square_images": False,
        "signature": "serving_default",
    }


# delf/python/delg/{r50,r101}delg_{gldv2clean,gld}_config.pbtxt: the settings differ only in the
# attention threshold, which depends on the trained weights; use the preset of the model you load.
PRESETS: dict[str, dict[str, Any]] = {
    "r50-gldv2-clean": _preset(454.6),
    "r101-gldv2-clean": _preset(357.48),
    "r50-gld": _preset(175.0),
    "r101-gld": _preset(166.1),
}
DEFAULT_PRESET = "r50-gldv2-clean"


# --------------------------------------------------------------------------- pure post-processing


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit L2 norm along ``axis``, as ``tf.nn.l2_normalize`` (zero vectors stay zero): kept apart
    from `indexer.imageops.l2_normalize` on purpose, for TensorFlow's epsilon and float32."""
    x = np.asarray(x, dtype=np.float32)
    sq = np.sum(x * x, axis=axis, keepdims=True)
    return x / np.sqrt(np.maximum(sq, _L2_EPS))


def pool_global_descriptors(per_scale: np.ndarray) -> np.ndarray:
    """DELG's multi-scale global descriptor: normalise each scale, sum, normalise again."""
    per_scale = np.asarray(per_scale, dtype=np.float32)
    if per_scale.ndim != 2 or per_scale.shape[0] == 0:
        raise ValueError(f"global descriptors must be (scales, dim), got {per_scale.shape}")
    return l2_normalize(l2_normalize(per_scale, axis=1).sum(axis=0), axis=0)


def select_local_features(
    boxes: np.ndarray,
    descriptors: np.ndarray,
    scores: np.ndarray,
    scale_factors: np.ndarray,
    score_threshold: float,
    max_feature_num: int,
) -> LocalFeatures:
    """DELG local features from raw model outputs, in the pixels of the image before resizing.

    ``boxes`` are (ymin, xmin, ymax, xmax) in the resized image, ``scale_factors`` the (height, width)
    resize factors. The threshold and the cap are the ones the model already applies; applying them
    again is a no-op for Google's exports and keeps the contract for models that do not.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 and descriptors.size:  # (N, D) as exported; flatten anything else
        descriptors = descriptors.reshape(len(descriptors), -1)
    if not len(boxes) == len(scores) == len(descriptors):
        raise ValueError(
            f"model returned {len(boxes)} boxes, {len(scores)} scores, {len(descriptors)} features"
        )
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")][: max(max_feature_num, 0)]
    centres_yx = (boxes[keep, :2] + boxes[keep, 2:]) / 2.0
    keypoints = (centres_yx / np.asarray(scale_factors, dtype=np.float32))[:, ::-1]
    return LocalFeatures(
        np.ascontiguousarray(keypoints, dtype=np.float32),
        l2_normalize(descriptors[keep], axis=1),  # (0, D) when nothing passes the threshold
        scores[keep],
    )


def resize_image(
    image: np.ndarray, max_image_size: float, min_image_size: float, square: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """DELF's ``ResizeImage``: bound the larger side; returns the image and (h, w) scale factors."""

    height, width = image.shape[:2]
    largest = max(height, width)
    if 0 <= max_image_size < largest:
        factor = max_image_size / largest
    elif min_image_size >= 0 and largest < min_image_size:
        factor = min_image_size / largest
    elif square and height != width:
        factor = 1.0
    else:
        return image, np.ones(2)
    if square:
        new_w = new_h = int(round(largest * factor))
    else:
        new_w, new_h = int(round(width * factor)), int(round(height * factor))
    return resize_pil_bilinear(image, (new_w, new_h)), np.array([new_h / height, new_w / width])


# --------------------------------------------------------------------------- TensorFlow side


def _import_tensorflow(path: str | Path = "tensorflow") -> ModuleType:
    """TensorFlow, with GPU memory growth so it does not take the whole GPU from torch and FAISS."""
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ModelLoadError(
            path, "a DELG SavedModel needs TensorFlow, which is not installed: "
            "pip install -e '.[delg]' (or tensorflow-cpu)"
        ) from err
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised; growth can only be set before
            logger.debug("could not set memory growth on %s", gpu.name)
    return tf


Runner = Callable[[dict[str, Any]], dict[str, np.ndarray]]


def _signature_runner(model: Any, key: str) -> Runner | None:
    """The TF2 path: a signature taking all the named inputs and giving all the outputs."""
    signature = getattr(model, "signatures", {}).get(key)
    if signature is None:
        return None
    inputs = set(signature.structured_input_signature[1])
    outputs = set(signature.structured_outputs)
    if not (set(INPUT_NAMES) <= inputs and set(OUTPUT_NAMES) <= outputs):
        return None

    def run(feed: dict[str, Any]) -> dict[str, np.ndarray]:
        out = signature(**feed)
        return {name: out[name].numpy() for name in OUTPUT_NAMES}

    return run


def _pruned_runner(model: Any) -> Runner | None:
    """The TF1 path (Google's published tarballs): prune the graph to the named tensors."""
    if not hasattr(model, "prune"):
        return None
    try:
        fn = model.prune(feeds=[f"{n}:0" for n in _TF1_FEEDS], fetches=[f"{n}:0" for n in OUTPUT_NAMES])
    except (KeyError, ValueError) as err:
        logger.debug("pruning the TF1 graph failed: %s", err)
        return None

    def run(feed: dict[str, Any]) -> dict[str, np.ndarray]:
        out = fn(*(feed[n] for n in _TF1_FEEDS))
        return {name: t.numpy() for name, t in zip(OUTPUT_NAMES, out, strict=True)}

    return run


def _describe_signatures(model: Any) -> str:
    found = []
    for key, sig in getattr(model, "signatures", {}).items():
        found.append(f"{key}({', '.join(sorted(sig.structured_input_signature[1]))})")
    return "; ".join(found) or "none"


def load_runner(path: Path, signature: str) -> tuple[Any, Runner]:
    """Load a DELG SavedModel: the loaded object, and a function from named inputs to outputs.

    Keep the object alive as long as the function: signatures only weakly reference its variables.
    Anything that is not such a model raises `ModelLoadError` naming the folder.
    """
    if not path.exists():
        raise ModelLoadError(path, "DELG SavedModel folder not found")
    if not path.is_dir():
        raise ModelLoadError(path, "is a file; a DELG SavedModel is a folder holding saved_model.pb")
    if not any((path / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelLoadError(path, "not a SavedModel folder (no saved_model.pb)")
    tf = _import_tensorflow(path)
    try:
        model = tf.saved_model.load(str(path))
    except Exception as exc:  # a corrupt or partial export fails in TensorFlow's own ways
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelLoadError(path, f"TensorFlow cannot load this SavedModel: {detail}") from exc
    runner = _signature_runner(model, signature) or _pruned_runner(model)
    if runner is None:
        raise ModelLoadError(
            path,
            f"no DELG signature (DELF export). Expected a signature {signature!r} with inputs "
            f"{list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}, or a TF1 graph with tensors "
            f"of those names; found signatures: {_describe_signatures(model)}",
        )
    return model, runner


def _feed(tf: ModuleType, image: np.ndarray, conf: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_image": tf.constant(image, dtype=tf.uint8),
        "input_scales": tf.constant(conf["image_scales"], dtype=tf.float32),
        "input_max_feature_num": tf.constant(conf["max_feature_num"], dtype=tf.int32),
        "input_abs_thres": tf.constant(conf["score_threshold"], dtype=tf.float32),
        "input_global_scales_ind": tf.constant(conf["global_scales_ind"], dtype=tf.int32),
    }


class DelgSavedModel(JointExtractor):
    """Global descriptor and local features from Google's exported DELG SavedModel.

    Built directly (``DelgSavedModel(path, conf)``) or by the registry as ``delg-savedmodel`` with
    the folder in the settings (``build_joint("delg-savedmodel", {"path": "/x/model"})``).
    ``preset`` (a name of ``PRESETS``) supplies the published config's settings; settings given
    beside it override the preset's.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        **PRESETS[DEFAULT_PRESET], "preset": DEFAULT_PRESET, "path": None,
    }
    supports_resize_factor = True

    def __init__(
        self, path: str | Path | dict[str, Any] | None = None, conf: dict[str, Any] | None = None
    ) -> None:
        if isinstance(path, dict):  # the registry passes the settings alone
            path, conf = None, path
        super().__init__(conf)
        given = dict(conf or {})
        preset = given.get("preset") or DEFAULT_PRESET
        if preset not in PRESETS:
            raise ValueError(f"unknown DELG preset {preset!r}; valid: {', '.join(PRESETS)}")
        self.conf = {**self.default_conf, **PRESETS[preset], **given, "preset": preset}
        self._check_conf()
        path = path if path is not None else self.conf["path"]
        if path is None:
            raise ValueError(
                "delg-savedmodel needs the SavedModel folder: settings {'path': '/x/model'} "
                "(or --model delg-savedmodel:PATH)"
            )
        self.path = Path(path)
        self.conf["path"] = str(self.path)
        self._model, self._run = load_runner(self.path, self.conf["signature"])
        self._tf = _import_tensorflow(self.path)
        self.dim, self.local_dim = self._probe_dims()
        logger.info(
            "DELG SavedModel %s with preset %s: attention threshold %g, at most %d local "
            "features, images of at most %d px", self.path, preset, self.conf["score_threshold"],
            self.conf["max_feature_num"], self.conf["max_image_size"],
        )

    def _probe_dims(self) -> tuple[int, int]:
        """Global and local descriptor sizes, read off the model's outputs on a small grey image."""
        try:
            out = self.raw_outputs(np.full((64, 64, 3), 128, np.uint8))
        except Exception as exc:  # inputs of other types or shapes than DELF's export takes
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise ModelLoadError(self.path, f"the model does not run as a DELG export: {detail}") \
                from exc
        shapes = {k: np.shape(out[k]) for k in ("global_descriptors", "features", "boxes")}
        if len(shapes["global_descriptors"]) != 2 or len(shapes["features"]) != 2 \
                or shapes["boxes"][-1:] != (4,):
            raise ModelLoadError(self.path, "outputs of shapes that do not fit DELG's (global "
                                 f"descriptors (scales, D), features (N, D), boxes (N, 4)): {shapes}")
        return int(shapes["global_descriptors"][-1]), int(shapes["features"][-1])

    @property
    def max_side(self) -> int | None:
        size = self.conf["max_image_size"]  # DELF: a negative size sets no bound
        return int(size) if size >= 1 else None

    def _check_conf(self) -> None:
        n_scales = len(self.conf["image_scales"])
        bad = [i for i in self.conf["global_scales_ind"] if not 0 <= i < n_scales]
        if n_scales == 0 or bad or not self.conf["global_scales_ind"]:
            raise ValueError(
                f"global_scales_ind {list(self.conf['global_scales_ind'])} must be a non-empty "
                f"selection of the {n_scales} image_scales"
            )

    def raw_outputs(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The model's own outputs for an image exactly as given (no resizing)."""
        return self._run(_feed(self._tf, image, self.conf))

    def extract(self, image: np.ndarray, resize_factor: float = 1.0) -> tuple[np.ndarray, LocalFeatures]:
        """Global descriptor (Dg,) and local features of an RGB uint8 image (H, W, 3).

        ``resize_factor`` scales the size bounds, as DELG does for a cropped query
        (crop's larger side / full image's larger side).
        """
        check_rgb(image)
        if resize_factor < 0:
            raise ValueError(f"resize_factor must be non-negative, got {resize_factor}")
        resized, scale_factors = resize_image(
            image,
            resize_factor * self.conf["max_image_size"],
            resize_factor * self.conf["min_image_size"],
            self.conf["use_square_images"],
        )
        if min(resized.shape[:2]) < _MIN_SIDE:  # DELF returns empty features
            logger.warning("image of %dx%d is %dx%d after resizing, under DELF's %d-pixel "
                           "minimum: no features", image.shape[1], image.shape[0],
                           resized.shape[1], resized.shape[0], _MIN_SIDE)
            return np.zeros(self.dim, np.float32), LocalFeatures.empty(self.local_dim)
        out = self.raw_outputs(resized)
        local = select_local_features(
            out["boxes"],
            out["features"],
            out["scores"],
            scale_factors,
            self.conf["score_threshold"],
            self.conf["max_feature_num"],
        )
        return pool_global_descriptors(out["global_descriptors"]), local
