"""DELG-style model on EfficientNet-Lite0: geometry, extraction, PCA heads, heads files, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.errors import ModelLoadError
from indexer.extractors import build_joint
from indexer.extractors.delg_torch import (
    LOCAL_LAYERS,
    DelgEfficientNet,
    ScaleMaps,
    backbone_maps,
    data_free_heads,
    fit_pca_heads,
    init_heads_from_images,
    interior_cells,
    load_heads,
    receptive_field_centres,
    save_heads,
    to_image_pixels,
    top_by_score,
)
from indexer.projections import pca_whitening

ONE_SCALE = {"local_scales": (1.0,), "global_scales": (1.0,)}


@pytest.fixture(scope="module")
def extractor() -> DelgEfficientNet:
    torch.manual_seed(0)
    return DelgEfficientNet(ONE_SCALE)


def _blob_image(cx: int, cy: int) -> np.ndarray:
    image = np.full((160, 224, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:160, 0:224]
    image[(xx - cx) ** 2 + (yy - cy) ** 2 < 14**2] = 255
    return image


def _random_pyramids(n: int, seed: int) -> list[list[ScaleMaps]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        maps = {k: torch.from_numpy(rng.random((c, 3, 4), dtype=np.float32))
                for k, c in LOCAL_LAYERS.items()}
        pooled = torch.nn.functional.normalize(torch.from_numpy(rng.random(1280, np.float32)), dim=0)
        out.append([ScaleMaps(1.0, (1.0, 1.0), maps, pooled)])
    return out


def test_receptive_field_centres_and_mapping_by_hand() -> None:
    centres = receptive_field_centres(2, 3, stride=16)
    np.testing.assert_array_equal(centres, [[0, 0], [16, 0], [32, 0], [0, 16], [16, 16], [32, 16]])
    # a 2x enlarged image: network pixel 32 is original pixel (32 + 0.5) / 2 - 0.5 = 15.75
    np.testing.assert_allclose(to_image_pixels(np.array([[32.0, 0.0]]), (2.0, 0.5)), [[15.75, 0.5]])


def test_interior_cells_drop_the_edge_ring() -> None:
    np.testing.assert_array_equal(interior_cells(3, 4, 1).reshape(3, 4),
                                  [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    assert interior_cells(2, 2, 1).all()  # too small to have an interior: keep everything
    assert interior_cells(3, 4, 0).all()


def test_top_by_score_threshold_cap_and_ties() -> None:
    scores = np.array([0.5, 3.0, 2.0, 3.0, 0.1], np.float32)
    np.testing.assert_array_equal(top_by_score(scores, 3, None), [1, 3, 2])
    np.testing.assert_array_equal(top_by_score(scores, 10, 1.0), [1, 3, 2])
    assert len(top_by_score(scores, 0, None)) == 0


def test_expanded_map_is_inside_the_backbone(extractor: DelgEfficientNet) -> None:
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = backbone_maps(extractor.model, x)
    assert maps["expanded"].shape == (1, 672, 4, 6) and maps["stride16"].shape == (1, 112, 4, 6)
    with torch.no_grad():
        reference = extractor.model.features(x)
    torch.testing.assert_close(maps["stride16"], reference["stride16"])
    torch.testing.assert_close(maps["head"], reference["head"])
    assert float(maps["expanded"].min()) >= 0.0 and float(maps["expanded"].max()) <= 6.0


def test_extract_shapes_and_normalisation(extractor: DelgEfficientNet) -> None:
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    glob, local = DelgEfficientNet({"max_features": 20}).extract(image)
    assert glob.shape == (1280,) and glob.dtype == np.float32
    assert abs(float(np.linalg.norm(glob)) - 1) < 1e-5
    assert len(local) == 20 and local.descriptors.shape == (20, 128)
    np.testing.assert_allclose(np.linalg.norm(local.descriptors, axis=1), 1, rtol=1e-5)
    assert local.scores is not None and np.all(np.diff(local.scores) <= 0)
    assert local.keypoints.min() > -1 and np.all(local.keypoints.max(0) < [128, 96])
    _, single = extractor.extract(image)
    assert len(single) == 4 * 6  # one scale: the 6x8 map's inner cells (the edge ring dropped)
    _, everything = DelgEfficientNet({**ONE_SCALE, "border_cells": 0}).extract(image)
    assert len(everything) == 6 * 8


@pytest.mark.parametrize(("cx", "cy"), [(150, 60), (40, 120)])
def test_strongest_attention_lands_on_a_bright_blob(extractor: DelgEfficientNet, cx: int,
                                                    cy: int) -> None:
    _, local = extractor.extract(_blob_image(cx, cy))
    distance = np.hypot(*(local.keypoints[0] - [cx, cy]))
    assert distance < 16 * np.sqrt(2)  # within one stride-16 cell of the blob's centre


def test_pca_heads_are_the_pca_maps() -> None:
    pyramids = _random_pyramids(40, 0)
    heads = fit_pca_heads(pyramids, "expanded", dim=16, local_dim=8, shrinkage=0.0)
    pooled = torch.stack([p[0].pooled for p in pyramids])
    g = pca_whitening.fit(pooled.numpy().astype(np.float64), 16, whiten=True)
    with torch.no_grad():
        out = heads.global_descriptor(pooled)
    expected = torch.nn.functional.normalize(torch.from_numpy(g.apply(pooled.numpy())), dim=1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    fmap = pyramids[0][0].local_maps["expanded"][None]
    with torch.no_grad():
        torch.testing.assert_close(heads.attention(fmap), fmap.norm(dim=1))
        reduced = heads.reduce(fmap)
        # PCA keeps the top 8 of 672 directions: reconstruction beats the mean alone
        err = (heads.reconstruct(reduced) - fmap).pow(2).mean()
        assert heads.decoder.bias is not None
        base = (heads.decoder.bias[None, :, None, None] - fmap).pow(2).mean()
    assert reduced.shape == (1, 8, 3, 4) and float(err) < float(base)


def test_heads_without_whitening_keep_the_gem_vector() -> None:
    pyramids = _random_pyramids(10, 1)
    heads = fit_pca_heads(pyramids, "expanded", local_dim=8, whiten=False)
    pooled = torch.stack([p[0].pooled for p in pyramids])
    with torch.no_grad():
        torch.testing.assert_close(heads.global_descriptor(pooled), pooled)  # already unit-norm
    assert heads.dim == 1280 and heads.local_dim == 8


def test_heads_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    heads = fit_pca_heads(_random_pyramids(12, 1), "stride16", dim=8, local_dim=4)
    path = save_heads(heads, tmp_path / "sub" / "heads.pt", {"note": "x"})
    again = load_heads(path)
    assert again.meta() == heads.meta() == {"local_layer": "stride16", "dim": 8, "local_dim": 4,
                                            "attention": "norm"}
    for (k, v), (k2, v2) in zip(heads.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_heads_loader_errors_name_the_file(tmp_path: Path) -> None:
    notes = tmp_path / "NOTES.txt"
    notes.write_text("a plain text file\n")  # the unpickler once ended in an IndexError here
    torch.save({"something": 1}, tmp_path / "other.pt")
    torch.manual_seed(0)
    heads = fit_pca_heads(_random_pyramids(12, 1), "stride16", dim=8, local_dim=4)
    path = save_heads(heads, tmp_path / "heads.pt")
    payload = torch.load(path, weights_only=True)
    payload["state"]["encoder.weight"] = torch.zeros(5, 112, 1, 1)  # 5 rows where meta says 4
    torch.save(payload, tmp_path / "shapes.pt")
    payload["meta"] = {"local_layer": "conv9"}
    torch.save(payload, tmp_path / "meta.pt")
    cases = {
        tmp_path / "nowhere.pt": "DELG heads file not found",
        tmp_path: "is a folder",
        notes: "not a DELG heads file",
        tmp_path / "other.pt": r"not a DELG heads file \(format 1",
        tmp_path / "shapes.pt": "do not fit the model.*encoder.weight",
        tmp_path / "meta.pt": "do not fit the model.*conv9",
    }
    for bad, reason in cases.items():
        with pytest.raises(ModelLoadError, match=reason) as err:
            load_heads(bad)
        assert err.value.path == str(bad) and "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="NOTES.txt: not a DELG heads file"):
        build_joint("delg-efficientnet-lite0", {**ONE_SCALE, "heads": str(notes)})


@pytest.mark.slow
def test_init_from_images_and_registry(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    path = init_heads_from_images(images, tmp_path / "heads.pt", ONE_SCALE, dim=512, local_dim=16)
    model = build_joint("delg-efficientnet-lite0", {**ONE_SCALE, "heads": str(path)})
    assert isinstance(model, DelgEfficientNet)
    assert (model.dim, model.local_dim) == (2, 16)  # 3 images x 1 scale support 2 components
    glob, local = model.extract(images[0])
    assert glob.shape == (2,) and local.descriptors.shape == (6, 16)  # 4x5 map, 2x3 inside
    with pytest.raises(ValueError, match="valid"):
        build_joint("delg-efficientnet-lite0", {"head": str(path)})


def test_data_free_heads_reduce_orthonormally() -> None:
    heads = data_free_heads("stride16", local_dim=32, seed=0)
    w = heads.encoder.weight[:, :, 0, 0]
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(heads.whiten.weight, torch.eye(1280))
