"""Why a match ranks: heat maps of a query and a result from the ABN re-ID network.

- `attention_maps`: the attention branch's map of each image (what the network weights up);
- `similarity_gradcam`: a Grad-CAM-style map of the cosine similarity of two images (Selvaraju et
  al. 2017, with the score replaced by the similarity): on each image's stride-32 map A,
  relu(sum_c mean(dS/dA_c) * A_c). It is what a network without an attention branch shows.
- `masking_effect`: the check that a map comes from the model: hide the most-attended block of a
  query and compare the change of the score with hiding a random block of the same size.

Maps are (h, w) arrays in [0, 1] on the network's grid (attention 16 x 8, Grad-CAM 8 x 4);
`matcher.explain` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from indexer.models.reid_abn.model import AbnReid, preprocess


def _unit(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    return m / m.max() if m.max() > 0 else m


@torch.no_grad()
def attention_maps(model: AbnReid, images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, h, w) attention maps, each scaled to [0, 1]; the model must have an attention branch."""
    if model.attention is None:
        raise ValueError("this network has no attention branch; use similarity_gradcam")
    x = preprocess(images, model.input_size).to(next(model.parameters()).device)
    att, _ = model.attention(model.mid(x)[0])
    return np.stack([_unit(a) for a in att[:, 0].cpu().numpy()])


def similarity(model: AbnReid, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Cosine similarity of the first image's embedding with each other image's, (N-1,)."""
    with torch.no_grad():
        x = preprocess(images, model.input_size).to(next(model.parameters()).device)
        e = F.normalize(model(x)["emb"], dim=1)
    return (e[1:] @ e[0]).cpu()


def similarity_gradcam(model: AbnReid, query: np.ndarray, result: np.ndarray) -> np.ndarray:
    """(2, h, w) Grad-CAM maps of cos(query, result) on both images, each scaled to [0, 1]."""
    model.eval()
    x = preprocess([query, result], model.input_size).to(next(model.parameters()).device)
    m4, m5 = (m.detach() for m in model.mid(x))
    mid = m5.requires_grad_(True)
    e = F.normalize(model.forward_mid(m4, mid)["emb"], dim=1)
    (e[0] @ e[1]).backward()
    assert mid.grad is not None
    weights = mid.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * mid).sum(1)).detach().cpu().numpy()
    return np.stack([_unit(c) for c in cam])


def explain_pair(model: AbnReid, query: np.ndarray, result: np.ndarray) -> tuple[np.ndarray, str]:
    """(2, h, w) maps for a query and a result, and their kind ("attention" or "grad-cam")."""
    if model.attention is not None:
        return attention_maps(model, [query, result]), "attention"
    return similarity_gradcam(model, query, result), "grad-cam"


def _block(heat: np.ndarray, bh: int, bw: int) -> tuple[int, int]:
    """Top-left cell of the bh x bw block with the largest summed heat."""
    h, w = heat.shape
    best, where = -np.inf, (0, 0)
    for y in range(h - bh + 1):
        for x in range(w - bw + 1):
            s = heat[y:y + bh, x:x + bw].sum()
            if s > best:
                best, where = s, (y, x)
    return where


def _masked(image: np.ndarray, grid: tuple[int, int], cell: tuple[int, int],
            block: tuple[int, int], fill: int = 127) -> np.ndarray:
    """The image with the grid block (in map cells) painted grey, in image pixels."""
    out = image.copy()
    h, w = image.shape[:2]
    sy, sx = h / grid[0], w / grid[1]
    y0, x0 = round(cell[0] * sy), round(cell[1] * sx)
    y1, x1 = round((cell[0] + block[0]) * sy), round((cell[1] + block[1]) * sx)
    out[y0:y1, x0:x1] = fill
    return out


def masking_effect(model: AbnReid, query: np.ndarray, result: np.ndarray, heat: np.ndarray,
                   block: tuple[float, float] = (0.25, 0.5), random_draws: int = 8,
                   seed: int = 0) -> tuple[float, float]:
    """(|score change| hiding the query's hottest block, mean |change| hiding random blocks);
    a block is `block` (height, width) fractions of the image, in whole cells of the map."""
    rng = np.random.default_rng(seed)
    grid = heat.shape
    bh, bw = max(1, round(block[0] * grid[0])), max(1, round(block[1] * grid[1]))
    top = _masked(query, grid, _block(heat, bh, bw), (bh, bw))
    randoms = [_masked(query, grid, (int(rng.integers(0, grid[0] - bh + 1)),
                                     int(rng.integers(0, grid[1] - bw + 1))), (bh, bw))
               for _ in range(random_draws)]
    s = similarity(model, [result, query, top, *randoms]).numpy()
    return float(abs(s[1] - s[0])), float(np.abs(s[2:] - s[0]).mean())
