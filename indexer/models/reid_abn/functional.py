"""Pure tensor maths of the ABN re-ID network (no modules, no state)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_weighting(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """ABN's residual attention: (B, C, H, W) features times (1 + a), a of shape (B, 1, H, W)."""
    if a.dim() != 4 or a.shape[1] != 1 or a.shape[0] != x.shape[0] or a.shape[2:] != x.shape[2:]:
        raise ValueError(f"attention map {tuple(a.shape)} does not fit features {tuple(x.shape)}")
    return x * (1.0 + a)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of x, (N, N), with a safe gradient at zero."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp(min=0.0)
    return torch.sqrt(d2 + 1e-12)


def batch_hard_triplet(feats: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): for each anchor the farthest positive and
    the closest negative, mean of relu(d_ap - d_an + margin) over anchors that have both."""
    dist = pairwise_distances(feats)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feats.device)
    pos = same & ~eye
    valid = pos.any(1) & (~same).any(1)
    if not valid.any():
        return feats.sum() * 0.0
    d_ap = dist.masked_fill(~pos, float("-inf")).max(1).values
    d_an = dist.masked_fill(same, float("inf")).min(1).values
    return F.relu(d_ap - d_an + margin)[valid].mean()


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where `mask` is True; masked entries get weight 0."""
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def weighted_pool(frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, T, D) frame features and (B, T) weights summing to one -> (B, D)."""
    return (frames * weights.unsqueeze(-1)).sum(1)


def erase_box(h: int, w: int, generator: torch.Generator, area: tuple[float, float] = (0.02, 0.4),
              ratio: tuple[float, float] = (0.3, 3.3)) -> tuple[int, int, int, int] | None:
    """A random rectangle (y, x, height, width) of an h x w grid, as random erasing (Zhong et al.
    2020) draws it: `area` a fraction of the grid, `ratio` its aspect; None after 10 misses."""
    for _ in range(10):
        target = h * w * float(torch.empty(()).uniform_(*area, generator=generator))
        aspect = float(torch.empty(()).uniform_(*ratio, generator=generator))
        eh, ew = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < eh <= h and 0 < ew <= w:
            y = int(torch.randint(0, h - eh + 1, (), generator=generator))
            x = int(torch.randint(0, w - ew + 1, (), generator=generator))
            return y, x, eh, ew
    return None


def random_erase_(
    maps: torch.Tensor, generator: torch.Generator, p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4), also: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random erasing on feature maps, in place: with probability p a random rectangle of each
    map is set to 0; `also` (a coarser map of the same crops) loses the same region, scaled."""
    b, _, h, w = maps.shape
    for i in range(b):
        if float(torch.rand((), generator=generator)) >= p:
            continue
        box = erase_box(h, w, generator, area)
        if box is None:
            continue
        y, x, eh, ew = box
        maps[i, :, y:y + eh, x:x + ew] = 0.0
        if also is not None:
            sy, sx = also.shape[2] / h, also.shape[3] / w
            y0, x0 = int(y * sy), int(x * sx)
            y1, x1 = max(y0 + 1, math.ceil((y + eh) * sy)), max(x0 + 1, math.ceil((x + ew) * sx))
            also[i, :, y0:y1, x0:x1] = 0.0
    return maps



def swap_background_(
    maps: torch.Tensor, donors: torch.Tensor, swap: torch.Tensor, border: float = 0.25,
    also: torch.Tensor | None = None,
) -> torch.Tensor:
    """Background swap on feature maps, in place: where `swap` (B,) is True, the left and right
    `border` fraction of the columns of `maps` (B, C, H, W) are replaced by those of crop
    `donors[i]` (a crop of another person). A pedestrian crop's sides are mostly background, so
    after the swap they no longer tell who the person is. `also` (coarser maps of the same
    crops) gets the same columns, scaled to its width."""
    if maps.shape[0] != swap.shape[0] or donors.shape != swap.shape:
        raise ValueError("maps, donors and swap must have one row per crop")
    rows = swap.nonzero().flatten()
    for x in [maps] + ([also] if also is not None else []):
        n = max(1, round(x.shape[3] * border))
        source = x[donors[rows]].clone()
        x[rows, :, :, :n] = source[..., :n]
        x[rows, :, :, -n:] = source[..., -n:]
    return maps
