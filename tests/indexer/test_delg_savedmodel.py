"""DELG SavedModel adapter, on tiny models exported here with Google's DELG signature.

The tiny model follows DELF's ``ExtractLocalAndGlobalFeatures``: an image pyramid, a conv feature map
per scale, softplus attention, receptive boxes (ymin, xmin, ymax, xmax) mapped back by the scale,
attention threshold, top-k cap, scores as (N, 1), one global descriptor per selected scale. The
adapter's results must equal the tiny model's own outputs post-processed by hand.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.errors import ModelLoadError
from indexer.extractors.delg_savedmodel import (
    PRESETS,
    DelgSavedModel,
    pool_global_descriptors,
    select_local_features,
)

D, DG = 8, 6  # local and global descriptor sizes of the tiny model
STRIDE, RF, PAD = 4.0, 7.0, 3.0  # its receptive field, as DELF's CalculateReceptiveBoxes uses them
SCALES = (0.5, 1.0, 2.0)
CONF = {
    "image_scales": SCALES,
    "global_scales_ind": (1, 2),
    "max_feature_num": 1000,
    "score_threshold": 0.9,
    "max_image_size": 48,  # the 40x64 test image is resized to 30x48
}
REPO = Path(__file__).resolve().parents[2]


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv": rng.normal(0, 0.5, (3, 3, 3, D)).astype(np.float32),
        "att": rng.normal(0, 0.5, (D, 1)).astype(np.float32),
        "proj": rng.normal(0, 1.0, (D, DG)).astype(np.float32),
    }


def _tiny_delg(tf: Any, w: dict[str, Any], *inputs: Any) -> dict[str, Any]:
    """Tiny DELG graph (works eagerly, in a tf.function and in a TF1 graph)."""
    image, scales, max_num, thres, gind = inputs
    img = ((tf.cast(image, tf.float32) - 128.0) / 128.0)[tf.newaxis]
    hw = tf.cast(tf.shape(image)[:2], tf.float32)

    def one_scale(i, boxes, feats, fscales, scores, globs):
        s = scales[i]
        x = tf.image.resize(img, tf.cast(tf.round(hw * s), tf.int32))
        fmap = tf.nn.relu(tf.nn.conv2d(x, w["conv"], strides=4, padding="SAME"))[0]
        flat = tf.reshape(fmap, [-1, D])
        att = tf.nn.softplus(tf.matmul(flat, w["att"]))[:, 0]
        yy, xx = tf.meshgrid(tf.range(tf.shape(fmap)[0]), tf.range(tf.shape(fmap)[1]), indexing="ij")
        yx = tf.cast(tf.reshape(tf.stack([yy, xx], -1), [-1, 2]), tf.float32)
        rf_boxes = tf.concat([yx * STRIDE - PAD, yx * STRIDE - PAD + RF - 1.0], 1) / s
        sel = tf.reshape(tf.where(att >= thres), [-1])
        glob = tf.matmul(tf.reduce_mean(flat, 0, keepdims=True), w["proj"])
        return (
            i + 1,
            tf.concat([boxes, tf.gather(rf_boxes, sel)], 0),
            tf.concat([feats, tf.gather(flat, sel)], 0),
            tf.concat([fscales, tf.ones_like(tf.gather(att, sel)) / s], 0),
            tf.concat([scores, tf.gather(att, sel)], 0),
            tf.concat([globs, glob], 0),
        )

    init = (
        tf.constant(0),
        tf.zeros([0, 4]),
        tf.zeros([0, D]),
        tf.zeros([0]),
        tf.zeros([0]),
        tf.zeros([0, DG]),
    )
    shapes = (
        tf.TensorShape([]),
        tf.TensorShape([None, 4]),
        tf.TensorShape([None, D]),
        tf.TensorShape([None]),
        tf.TensorShape([None]),
        tf.TensorShape([None, DG]),
    )
    _, boxes, feats, fscales, scores, globs = tf.while_loop(
        lambda i, *_: i < tf.shape(scales)[0], one_scale, init, shape_invariants=shapes
    )
    top = tf.math.top_k(scores, tf.minimum(max_num, tf.shape(scores)[0])).indices
    return {
        "boxes": tf.gather(boxes, top),
        "features": tf.gather(feats, top),
        "scales": tf.gather(fscales, top),
        "scores": tf.gather(scores, top)[:, tf.newaxis],
        "global_descriptors": tf.gather(globs, gind),
    }


def _specs(tf: Any) -> list[Any]:
    return [
        tf.TensorSpec([None, None, 3], tf.uint8, name="input_image"),
        tf.TensorSpec([None], tf.float32, name="input_scales"),
        tf.TensorSpec([], tf.int32, name="input_max_feature_num"),
        tf.TensorSpec([], tf.float32, name="input_abs_thres"),
        tf.TensorSpec([None], tf.int32, name="input_global_scales_ind"),
    ]


def _export_tf2(tf: Any, path: Path) -> Any:
    w = {k: tf.constant(v) for k, v in _weights().items()}

    class Tiny(tf.Module):
        @tf.function(input_signature=_specs(tf))
        def extract(
            self,
            input_image,
            input_scales,
            input_max_feature_num,
            input_abs_thres,
            input_global_scales_ind,
        ):
            return _tiny_delg(
                tf,
                w,
                input_image,
                input_scales,
                input_max_feature_num,
                input_abs_thres,
                input_global_scales_ind,
            )

    module = Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.extract})
    return module


def _export_tf1(tf: Any, path: Path) -> None:
    """A TF1 graph reached by tensor names, as Google's published DELG tarballs are."""
    graph = tf.Graph()
    with graph.as_default():
        feeds = [tf.compat.v1.placeholder(s.dtype, s.shape, name=s.name) for s in _specs(tf)]
        w = {k: tf.constant(v) for k, v in _weights().items()}
        out = _tiny_delg(tf, w, *feeds)
        for name, tensor in out.items():
            tf.identity(tensor, name=name)
        builder = tf.compat.v1.saved_model.Builder(str(path))
        with tf.compat.v1.Session(graph=graph) as sess:
            builder.add_meta_graph_and_variables(sess, ["serve"])
        builder.save()


def _export_wrong_signature(tf: Any, path: Path) -> None:
    class Wrong(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        def extract(self, image):
            return {"global_descriptors": tf.reduce_mean(tf.cast(image, tf.float32), [0, 1])}

    module = Wrong()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.extract})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is needed to export tiny DELG models")
    root = tmp_path_factory.mktemp("delg")
    module = _export_tf2(tf, root / "tf2")
    _export_tf1(tf, root / "tf1")
    _export_wrong_signature(tf, root / "wrong")
    return {"tf": tf, "module": module, "root": root}


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)


def _expected(models: dict[str, Any], conf: dict[str, Any], size: tuple[int, int] = (48, 30)
              ) -> tuple[np.ndarray, dict]:
    """The tiny model's own outputs on the image resized by hand to `size` (w, h), post-processed
    by hand."""
    from PIL import Image

    tf = models["tf"]
    resized = np.asarray(Image.fromarray(_image()).resize(size, Image.Resampling.BILINEAR))
    raw = models["module"].extract(
        tf.constant(resized),
        tf.constant(conf["image_scales"], tf.float32),
        tf.constant(conf["max_feature_num"]),
        tf.constant(conf["score_threshold"], tf.float32),
        tf.constant(conf["global_scales_ind"]),
    )
    raw = {k: v.numpy() for k, v in raw.items()}
    g = raw["global_descriptors"]
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    g = g.sum(0) / np.linalg.norm(g.sum(0))
    b = raw["boxes"]  # ymin, xmin, ymax, xmax in the resized image
    factor = np.array([size[0] / 64, size[1] / 40])  # x, y
    keypoints = np.stack([(b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2], 1) / factor
    f = raw["features"]
    return g, {
        "keypoints": keypoints,
        "descriptors": f / np.linalg.norm(f, axis=1, keepdims=True),
        "scores": raw["scores"][:, 0],
        "raw": raw,
    }


@pytest.mark.parametrize("export", ["tf2", "tf1"])
def test_adapter_equals_hand_post_processing(models: dict[str, Any], export: str) -> None:
    adapter = DelgSavedModel(models["root"] / export, CONF)
    glob, local = adapter.extract(_image())
    g, exp = _expected(models, {**PRESETS["r50-gldv2-clean"], **CONF})
    assert glob.shape == (DG,) and glob.dtype == np.float32
    np.testing.assert_allclose(glob, g, rtol=1e-5, atol=1e-6)
    assert 5 < len(local) == len(exp["scores"])
    np.testing.assert_allclose(local.keypoints, exp["keypoints"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(local.descriptors, exp["descriptors"], rtol=1e-5, atol=1e-6)
    assert local.scores is not None
    np.testing.assert_allclose(local.scores, exp["scores"], rtol=1e-6)
    assert (local.scores >= CONF["score_threshold"]).all()
    assert np.all(np.diff(local.scores) <= 0)


def test_threshold_and_cap_reach_the_model(models: dict[str, Any]) -> None:
    root = models["root"] / "tf2"
    everything = DelgSavedModel(root, {**CONF, "score_threshold": 0.0})
    capped = DelgSavedModel(root, {**CONF, "max_feature_num": 5})
    n_all = len(everything.extract(_image())[1])
    n_thresholded = len(DelgSavedModel(root, CONF).extract(_image())[1])
    _, top5 = capped.extract(_image())
    assert n_all > n_thresholded > 5 and len(top5) == 5
    _, full = DelgSavedModel(root, CONF).extract(_image())
    np.testing.assert_allclose(top5.keypoints, full.keypoints[:5], rtol=1e-6)


def test_missing_signature_is_named(models: dict[str, Any]) -> None:
    path = models["root"] / "wrong"
    with pytest.raises(ModelLoadError, match=r"wrong.*no DELG signature.*serving_default\(image\)"):
        DelgSavedModel(path)


def test_loader_errors_name_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    cases = {
        tmp_path / "nowhere": "DELG SavedModel folder not found",
        tmp_path / "notes.txt": "is a file",
        tmp_path: r"not a SavedModel folder \(no saved_model.pb\)",
    }
    for path, reason in cases.items():
        with pytest.raises(ModelLoadError, match=reason) as err:
            DelgSavedModel(path)
        assert err.value.path == str(path)
    if importlib.util.find_spec("tensorflow") is not None:
        with pytest.raises(ModelLoadError, match="broken: TensorFlow cannot load this SavedModel"):
            DelgSavedModel(tmp_path / "broken")
    real_import = builtins.__import__

    def no_tensorflow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorflow)
    with pytest.raises(ModelLoadError, match="broken: a DELG SavedModel needs TensorFlow"):
        DelgSavedModel(tmp_path / "broken")


def test_published_presets() -> None:
    """delf/python/delg/{r50,r101}delg_{gldv2clean,gld}_config.pbtxt, read upstream."""
    thresholds = {"r50-gldv2-clean": 454.6, "r101-gldv2-clean": 357.48, "r50-gld": 175.0,
                  "r101-gld": 166.1}
    assert {k: v["score_threshold"] for k, v in PRESETS.items()} == thresholds
    for preset in PRESETS.values():  # everything else is the same in the four configs
        assert tuple(preset["image_scales"]) == (0.25, 0.35355338, 0.5, 0.70710677, 1.0,
                                                 1.4142135, 2.0)
        assert tuple(preset["global_scales_ind"]) == (3, 4, 5)
        assert preset["max_feature_num"] == 1000 and preset["max_image_size"] == 1024
        assert preset["min_image_size"] == -1 and preset["use_square_images"] is False


def test_the_preset_chooses_the_threshold_and_is_logged(models: dict[str, Any], caplog) -> None:
    root = models["root"] / "tf2"
    sizes = {k: v for k, v in CONF.items() if k != "score_threshold"}
    with caplog.at_level(logging.INFO, logger="indexer.extractors.delg_savedmodel"):
        r101 = DelgSavedModel(root, {**sizes, "preset": "r101-gld"})
    assert r101.conf["score_threshold"] == 166.1 and r101.conf["preset"] == "r101-gld"
    assert any("preset r101-gld" in r.getMessage() and "166.1" in r.getMessage()
               for r in caplog.records)
    assert DelgSavedModel(root, sizes).conf["score_threshold"] == 454.6  # the default preset
    given = DelgSavedModel(root, {**sizes, "preset": "r50-gld", "score_threshold": 0.9})
    assert given.conf["score_threshold"] == 0.9  # a setting given beside the preset wins
    # the tiny model's attention is far below the published thresholds: no local feature
    assert len(r101.extract(_image())[1]) == 0 < len(given.extract(_image())[1])
    with pytest.raises(ValueError, match="unknown DELG preset 'r34'; valid: r50-gldv2-clean"):
        DelgSavedModel(root, {"preset": "r34"})


def test_tiny_images_give_empty_features_as_delf(models: dict[str, Any]) -> None:
    adapter = DelgSavedModel(models["root"] / "tf2", CONF)
    thin = np.full((12, 200, 3), 100, np.uint8)  # 48 / 200 of 12 rows: 3 rows, under 10
    glob, local = adapter.extract(thin)
    assert glob.shape == (DG,) and not glob.any()
    assert len(local) == 0 and local.descriptors.shape == (0, D)


def test_resize_factor_scales_the_size_bound(models: dict[str, Any]) -> None:
    """DELF's ResizeImage: max_image_size x resize_factor (a query cropped to half the size)."""
    adapter = DelgSavedModel(models["root"] / "tf2", CONF)
    assert adapter.supports_resize_factor
    glob, local = adapter.extract(_image(), resize_factor=0.5)  # bound 24: 40x64 -> 15x24
    g, exp = _expected(models, {**PRESETS["r50-gldv2-clean"], **CONF}, size=(24, 15))
    np.testing.assert_allclose(glob, g, rtol=1e-5, atol=1e-6)
    assert len(local) == len(exp["scores"])
    np.testing.assert_allclose(local.keypoints, exp["keypoints"], rtol=1e-5, atol=1e-4)
    full, _ = adapter.extract(_image())
    assert np.abs(full - glob).max() > 1e-3


def test_bad_conf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid"):
        DelgSavedModel(tmp_path, {"max_features": 10})
    with pytest.raises(ValueError, match="global_scales_ind"):
        DelgSavedModel(tmp_path, {"image_scales": (1.0,), "global_scales_ind": (1,)})


def test_select_local_features_by_hand() -> None:
    boxes = np.array([[0, 0, 10, 20], [10, 10, 30, 50], [4, 2, 8, 6], [0, 0, 2, 2]], np.float32)
    desc = np.array([[3, 4], [0, 2], [1, 0], [5, 5]], np.float32)
    scores = np.array([[1.0], [3.0], [2.0], [0.5]], np.float32)
    # threshold 1.0 drops the last; cap 2 keeps scores 3 then 2; resize was (h 0.5, w 0.25)
    out = select_local_features(boxes, desc, scores, np.array([0.5, 0.25]), 1.0, 2)
    # box 1 centre (y 20, x 30) -> x 30 / 0.25 = 120, y 20 / 0.5 = 40; box 2 (y 6, x 4) -> 16, 12
    np.testing.assert_allclose(out.keypoints, [[120, 40], [16, 12]])
    np.testing.assert_allclose(out.descriptors, [[0, 1], [1, 0]])
    assert out.scores is not None
    np.testing.assert_allclose(out.scores, [3, 2])


def test_no_feature_above_the_threshold_gives_empty_features() -> None:
    none = select_local_features(np.zeros((0, 4)), np.zeros((0, 40)), np.zeros(0), np.ones(2), 0.5, 10)
    assert len(none) == 0 and none.descriptors.shape == (0, 40)
    weak = select_local_features(np.zeros((2, 4)), np.ones((2, 40)), np.array([0.1, 0.2]),
                                 np.ones(2), 0.5, 10)
    assert len(weak) == 0 and weak.descriptors.shape == (0, 40)


def test_pool_global_descriptors_by_hand() -> None:
    # rows normalise to (1, 0) and (0.6, 0.8); the sum (1.6, 0.8) normalises to (2, 1) / sqrt(5)
    out = pool_global_descriptors(np.array([[2.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(out, np.array([2, 1]) / np.sqrt(5), rtol=1e-6)


def test_tensorflow_is_imported_only_inside_functions() -> None:
    # the package must import without TensorFlow: no import of it at module level
    source = (REPO / "indexer" / "extractors" / "delg_savedmodel.py").read_text()
    top_level = [
        alias.name
        for node in ast.parse(source).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ] + [node.module for node in ast.parse(source).body if isinstance(node, ast.ImportFrom)]
    assert not [name for name in top_level if name and name.split(".")[0] == "tensorflow"]
    assert "import tensorflow as tf" in source  # ... but inside a function


def test_registry_builds_the_adapter_from_a_path_setting(models: dict[str, Any]) -> None:
    from indexer.extractors import build_joint
    from indexer.extractors.base import JointExtractor

    path = models["root"] / "tf2"
    adapter = build_joint("delg-savedmodel", {**CONF, "path": str(path)})
    assert isinstance(adapter, JointExtractor) and isinstance(adapter, DelgSavedModel)
    assert (adapter.dim, adapter.local_dim) == (DG, D)
    glob, local = adapter.extract(_image())
    direct_glob, direct_local = DelgSavedModel(path, CONF).extract(_image())
    np.testing.assert_array_equal(glob, direct_glob)
    np.testing.assert_array_equal(local.descriptors, direct_local.descriptors)


def test_registry_without_a_path_is_a_clear_error() -> None:
    from indexer.extractors import build_joint

    with pytest.raises(ValueError, match=r"needs the SavedModel folder.*'path'"):
        build_joint("delg-savedmodel", {"max_feature_num": 10})


def test_describer_passes_resize_factors_to_extractors_that_take_them() -> None:
    from indexer.describe import Describer
    from indexer.extractors.base import JointExtractor
    from indexer.features import LocalFeatures

    seen: list[float] = []

    class Sized(JointExtractor):
        dim, local_dim = 2, 2
        supports_resize_factor = True

        def extract(self, image: np.ndarray, resize_factor: float = 1.0
                    ) -> tuple[np.ndarray, LocalFeatures]:
            seen.append(resize_factor)
            return np.ones(2, np.float32), LocalFeatures.empty(2)

    class Unsized(Sized):
        supports_resize_factor = False

        def extract(self, image: np.ndarray) -> tuple[np.ndarray, LocalFeatures]:  # type: ignore[override]
            seen.append(-1.0)
            return np.ones(2, np.float32), LocalFeatures.empty(2)

    describer = Describer({})
    image = np.zeros((4, 4, 3), np.uint8)
    for extractor, expected in ((Sized(), [0.25, 1.0, 0.5]), (Unsized(), [-1.0] * 3)):
        seen.clear()
        describer.joint_extractor = extractor
        describer.describe_batch([image, image], [0.25, 1.0])
        describer.describe(image, 0.5)
        assert seen == expected
