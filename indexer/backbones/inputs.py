"""Person crops -> a backbone's input batch (one resize and normalisation for every crop model)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from indexer.imageops import check_rgb


def crops_to_tensor(
    images: Sequence[np.ndarray], size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
) -> torch.Tensor:
    """RGB uint8 crops of any size -> (B, 3, H, W) float32: resized to `size` (H, W) by OpenCV's
    bilinear filter (as the transfer and ABN figures in the README were measured), scaled to
    [0, 1] and normalised by the backbone's `mean` and `std`."""
    batch = np.empty((len(images), size[0], size[1], 3), np.uint8)
    for i, image in enumerate(images):
        check_rgb(image, f"image {i}")
        batch[i] = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s
