"""Person / not-person classifier on the backbone: logistic regression on the frozen ImageNet
EfficientNet-Lite0 feature (trunk + head convolution, average-pooled, 1280-d) of a 192x96 crop.

Trained (`train_person_classifier`) on PETA crops against patches of photos that hold no people;
stored as a plain .npz (standardisation and the linear model), no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from indexer.errors import ModelLoadError
from indexer.models.attributes.backbone import crop_tensor, pretrained_parts

FORMAT = "tansaku-person-classifier-v1"


class PooledFeatures:
    """Crops -> 1280-d pooled ImageNet features (trunk maps may come from the attribute cache)."""

    def __init__(self) -> None:
        self.trunk, self.head = pretrained_parts()
        self.head.eval()

    @torch.no_grad()
    def from_maps(self, maps: np.ndarray, batch: int = 256) -> np.ndarray:
        out = [self.head(torch.as_tensor(maps[s : s + batch], dtype=torch.float32)).mean(dim=(2, 3))
               for s in range(0, len(maps), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, 1280), np.float32)

    @torch.no_grad()
    def __call__(self, crops: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
        maps = [self.trunk(crop_tensor(crops[s : s + batch])).numpy() for s in range(0, len(crops), batch)]
        return self.from_maps(np.concatenate(maps)) if maps else np.zeros((0, 1280), np.float32)


@dataclass
class PersonClassifier:
    """p(person | crop) = sigmoid(w . (f - mean) / scale + b)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    _features: PooledFeatures | None = None

    def probability(self, features: np.ndarray) -> np.ndarray:
        """p(person) of pooled features (N, 1280)."""
        z = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """p(person) of RGB crops."""
        if self._features is None:
            self._features = PooledFeatures()
        return self.probability(self._features(crops))

    def save(self, path: Path) -> None:
        from storage.atomic import atomic_write

        with atomic_write(path) as handle:
            np.savez(handle, format=FORMAT, mean=self.mean, scale=self.scale, weights=self.weights,
                     bias=self.bias, threshold=self.threshold)


def load_person_classifier(path: str | Path) -> PersonClassifier:
    """Read a classifier file; any problem names the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(path, "person classifier file not found")
    try:
        with np.load(path) as data:
            if str(data["format"]) != FORMAT:
                raise ModelLoadError(path, f"not a person classifier (format {data['format']})")
            return PersonClassifier(data["mean"], data["scale"], data["weights"], float(data["bias"]),
                                    float(data["threshold"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(path, f"not a person classifier file: {exc}") from exc


def fit_person_classifier(positives: np.ndarray, negatives: np.ndarray, c: float = 0.1) -> PersonClassifier:
    """Logistic regression (scikit-learn) on standardised pooled features, classes balanced."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit((x - mean) / scale, y)
    return PersonClassifier(mean, scale, model.coef_[0], float(model.intercept_[0]))
