"""Person descriptors transferred from ImageNet CNNs (thin adapters over `indexer.transfer`).

Two networks: EfficientNet-Lite0 (`eff`, with its 1000-class classifier) and MobileNetV2
(`mbv2`, feature weights only: its packaged file has no classifier, so FC / SVD-FC / SVD-CAM
exist for EfficientNet-Lite0 alone). Crops are resized to 256 x 128 (H x W), so the head maps are
8 x 4. Layers: the outputs of stages 2-7 and the 1280-channel head (strides 4 ... 32).

Batch functions (registered in `indexer.extractors.person`):
- `layers_batch` / `layers_mbv2_batch`: every layer GAP-pooled, each block L2-normalised;
- `fc_batch` (ImageNet logits), `svdfc_batch`, `svdcam_batch` (EfficientNet-Lite0);
- `mpncbp_batch`: MPN-CBP of EfficientNet-Lite0's SVD-CAM and MobileNetV2's head map, 5000-d;
- `cdpcf_maps_batch`: the raw input of C-DPCF, several layers averaged onto an 8 x 4 grid and
  flattened; the pooling itself is learned per camera (`indexer.projections.cdpcf`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from indexer.backbones import efficientnet_lite, mobilenet_v2
from indexer.backbones.inputs import crops_to_tensor
from indexer.transfer import (
    SKETCHES,
    RandomMaclaurin,
    TensorSketch,
    blockwise_l2,
    mpn_cbp,
    orthonormal_classifier,
    pool,
    resample,
    svd_cam,
    svd_fc,
)

INPUT_SIZE = (256, 128)
LAYER_NAMES = ("s2", "s3", "s4", "s5", "s6", "s7", "head")  # stage outputs kept, then the head
CHANNELS = {
    "eff": (24, 40, 80, 112, 192, 320, 1280),
    "mbv2": (24, 32, 64, 96, 160, 320, 1280),
}
GRID = (8, 4)  # the common grid of MPN-CBP and of C-DPCF's raw maps (the head maps' own size)
CDPCF_LAYERS = ("s5", "s6", "s7", "head")  # strides 16, 32, 32, 32
MPNCBP_DIM = 5000


@functools.lru_cache(maxsize=1)
def _eff() -> efficientnet_lite.EfficientNetLite0:
    return efficientnet_lite.efficientnet_lite0()


@functools.lru_cache(maxsize=1)
def _mbv2() -> mobilenet_v2.MobileNetV2:
    return mobilenet_v2.mobilenet_v2()


@functools.lru_cache(maxsize=1)
def _w_orth() -> torch.Tensor:
    return orthonormal_classifier(_eff()._fc.weight.detach())


@functools.lru_cache(maxsize=4)
def _sketch(kind: str, c1: int, c2: int, dim: int, seed: int = 0) -> TensorSketch | RandomMaclaurin:
    return SKETCHES[kind](c1, c2, dim, seed)


def preprocess(
    images: Sequence[np.ndarray], size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
) -> torch.Tensor:
    """RGB uint8 crops -> (B, 3, H, W) (see `indexer.backbones.inputs.crops_to_tensor`)."""
    return crops_to_tensor(images, size, mean, std)


def layer_maps(
    net: str, images: Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE
) -> list[torch.Tensor]:
    """The 7 kept maps (`LAYER_NAMES`) of network `net` ("eff" or "mbv2"), images resized to `size`."""
    model: efficientnet_lite.EfficientNetLite0 | mobilenet_v2.MobileNetV2
    if net == "eff":
        model, mean, std = _eff(), efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD
    elif net == "mbv2":
        model, mean, std = _mbv2(), mobilenet_v2.INPUT_MEAN, mobilenet_v2.INPUT_STD
    else:
        raise ValueError(f"unknown network {net!r}; valid: eff, mbv2")
    x = preprocess(list(images), size, mean, std)
    with torch.inference_mode():
        return model.stages(x)[1:]


def layer_dims(net: str) -> list[int]:
    """Dimensions of the blocks of `layers_batch` / `layers_mbv2_batch`, in `LAYER_NAMES` order."""
    return list(CHANNELS[net])


Maps = dict[str, list[torch.Tensor]]  # network name -> its 7 kept maps


def _layers(maps: Maps, net: str, how: str = "gap") -> torch.Tensor:
    return blockwise_l2([pool(m, how) for m in maps[net]])


# fc / svdfc / svdcam rows are L2-normalised like every other descriptor here: XQDA's fixed
# regulariser (0.001 on Sigma_I) assumes unit-scale rows (VIPeR, 2 trials: SVD-FC 5.2 rank-1 raw,
# 14.2 normalised; scripts/bench_transfer.py).
def _fc(maps: Maps) -> torch.Tensor:
    with torch.inference_mode():
        return F.normalize(_eff()._fc(pool(maps["eff"][-1], "gap")), dim=1)


def _svdfc(maps: Maps) -> torch.Tensor:
    return F.normalize(svd_fc(pool(maps["eff"][-1], "gap"), _w_orth()), dim=1)


def _svdcam(maps: Maps) -> torch.Tensor:
    # GAP of SVD-CAM would equal SVD-FC (both are linear): max pooling makes it a feature of its own
    return F.normalize(pool(svd_cam(maps["eff"][-1], _w_orth()), "max"), dim=1)


def _mpncbp(
    maps: Maps, inputs: str = "svdcam", grid: tuple[int, int] = GRID, dim: int = MPNCBP_DIM,
    sketch: str = "tensor_sketch",
) -> torch.Tensor:
    x = maps["eff"][-1]
    if inputs == "svdcam":
        x = svd_cam(x, _w_orth())
    elif inputs != "conv":
        raise ValueError(f"unknown MPN-CBP inputs {inputs!r}; valid: svdcam, conv")
    x, y = resample(x, grid), resample(maps["mbv2"][-1], grid)
    return mpn_cbp(x, y, _sketch(sketch, x.shape[1], y.shape[1], dim))


def _cdpcf_maps(maps: Maps, net: str) -> torch.Tensor:
    blocks = []
    for name in CDPCF_LAYERS:
        m = resample(maps[net][LAYER_NAMES.index(name)], GRID).flatten(2).transpose(1, 2)  # (B, S, C)
        m = m / m.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None]
        blocks.append(m.flatten(1))
    return torch.cat(blocks, dim=1)


# name -> (networks it needs, maps -> (B, D) descriptor)
FROM_MAPS: dict[str, tuple[tuple[str, ...], Callable[[Maps], torch.Tensor]]] = {
    "layers": (("eff",), lambda m: _layers(m, "eff")),
    "layers-gem": (("eff",), lambda m: _layers(m, "eff", "gem")),
    "layers-mbv2": (("mbv2",), lambda m: _layers(m, "mbv2")),
    "fc": (("eff",), _fc),
    "svdfc": (("eff",), _svdfc),
    "svdcam": (("eff",), _svdcam),
    "mpncbp": (("eff", "mbv2"), _mpncbp),
    "mpncbp-conv": (("eff", "mbv2"), lambda m: _mpncbp(m, "conv")),
    "cdpcf": (("eff",), lambda m: _cdpcf_maps(m, "eff")),
    "cdpcf-mbv2": (("mbv2",), lambda m: _cdpcf_maps(m, "mbv2")),
}


def describe_many(
    images: Sequence[np.ndarray], names: Sequence[str], size: tuple[int, int] = INPUT_SIZE,
) -> dict[str, np.ndarray]:
    """Several descriptors of the same images, each network run once ({name: (N, D)})."""
    unknown = [n for n in names if n not in FROM_MAPS]
    if unknown:
        raise ValueError(f"unknown transfer descriptor(s) {unknown}; valid: {', '.join(FROM_MAPS)}")
    nets = sorted({net for n in names for net in FROM_MAPS[n][0]})
    maps = {net: layer_maps(net, images, size) for net in nets}
    with torch.inference_mode():
        return {n: FROM_MAPS[n][1](maps).float().numpy() for n in names}


def _one(name: str, images: Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    return describe_many(images, [name], size)[name]


def layers_batch(images: list[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """EfficientNet-Lite0: every kept layer GAP-pooled, each block L2-normalised (2048-d)."""
    return _one("layers", images, size)


def layers_mbv2_batch(images: list[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """MobileNetV2: every kept layer GAP-pooled, each block L2-normalised (1976-d)."""
    return _one("layers-mbv2", images, size)


def layers_gem_batch(images: list[np.ndarray]) -> np.ndarray:
    """EfficientNet-Lite0 layers GeM-pooled (p = 3) instead of averaged."""
    return _one("layers-gem", images)


def fc_batch(images: list[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """EfficientNet-Lite0's ImageNet logits (1000-d): the plain FC layer."""
    return _one("fc", images, size)


def svdfc_batch(images: list[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """SVD-FC: the head's GAP feature on the orthonormalised class vectors (1000-d)."""
    return _one("svdfc", images, size)


def svdcam_batch(images: list[np.ndarray]) -> np.ndarray:
    """SVD-CAM max-pooled over locations (1000-d)."""
    return _one("svdcam", images)


def mpncbp_batch(images: list[np.ndarray]) -> np.ndarray:
    """MPN-CBP of EfficientNet-Lite0's SVD-CAM and MobileNetV2's head map, 8 x 4 grid, 5000-d."""
    return _one("mpncbp", images)


def mpncbp_conv_batch(images: list[np.ndarray]) -> np.ndarray:
    """MPN-CBP of the two CNNs' head conv maps (1280 x 1280 channels), 5000-d."""
    return _one("mpncbp-conv", images)


def cdpcf_map_shapes(net: str = "eff") -> list[tuple[int, int]]:
    """(locations, channels) of each layer in a `cdpcf_maps_batch` row, in order."""
    locations = GRID[0] * GRID[1]
    return [(locations, CHANNELS[net][LAYER_NAMES.index(n)]) for n in CDPCF_LAYERS]


def cdpcf_maps_batch(images: list[np.ndarray]) -> np.ndarray:
    """C-DPCF's raw input: `CDPCF_LAYERS` of EfficientNet-Lite0 averaged onto the 8 x 4 grid.

    Each layer is stored location-major (S, C) and scaled to unit Frobenius norm per image, so
    layers weigh alike; the learned pooling is linear, so this scale does not change rankings.
    """
    return _one("cdpcf", images)


def cdpcf_maps_mbv2_batch(images: list[np.ndarray]) -> np.ndarray:
    """C-DPCF's raw input from MobileNetV2."""
    return _one("cdpcf-mbv2", images)
