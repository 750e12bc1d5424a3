"""Pure tensor maths shared by extractors (no modules, no state)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gem(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling (Radenovic et al. 2018): (B, C, H, W) -> (B, C) = mean(x^p)^(1/p)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Unit L2 norm along `dim` (zero vectors stay zero)."""
    return F.normalize(x, p=2.0, dim=dim, eps=eps)
