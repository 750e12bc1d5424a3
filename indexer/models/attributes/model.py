"""A trained attribute model: file format, loader, and prediction from images or cached trunk maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from indexer.errors import ModelLoadError
from indexer.models.attributes.backbone import INPUT_SIZE, Trunk, crop_tensor, pretrained_parts
from indexer.models.attributes.heads import CnnRnnHead, PlainHead

FORMAT = "tansaku-attributes-v1"
HEADS = ("plain", "cnn-rnn")


def build_head(kind: str, num_attributes: int, order: torch.Tensor | None = None,
               pretrained: bool = True) -> nn.Module:
    """A fresh head of `kind`; its head convolution starts from ImageNet when `pretrained`."""
    _, head_conv = pretrained_parts(pretrained)
    if kind == "plain":
        return PlainHead(num_attributes, head_conv)
    if kind == "cnn-rnn":
        return CnnRnnHead(num_attributes, order if order is not None else torch.arange(num_attributes),
                          head_conv)
    raise ValueError(f"unknown attribute head {kind!r}; valid: {', '.join(HEADS)}")


@dataclass
class AttributeModel:
    """A head over the frozen ImageNet trunk, with its attribute names."""

    kind: str
    names: tuple[str, ...]
    head: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    beam: int = 3
    _trunk: Trunk | None = None

    @property
    def trunk(self) -> Trunk:
        if self._trunk is None:
            self._trunk = pretrained_parts()[0]
        return self._trunk

    @torch.no_grad()
    def from_maps(self, maps: np.ndarray | torch.Tensor, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, A) float32, predictions (N, A) uint8) from trunk maps."""
        self.head.eval()
        probs, preds = [], []
        for start in range(0, len(maps), batch):
            x = torch.as_tensor(np.asarray(maps[start : start + batch]), dtype=torch.float32)
            p = torch.sigmoid(self.head(x))
            probs.append(p.numpy())
            if isinstance(self.head, CnnRnnHead):
                preds.append(self.head.beam_search(x, beam=self.beam).numpy())
            else:
                preds.append((p > 0.5).to(torch.uint8).numpy())
        if not probs:
            empty = np.zeros((0, len(self.names)))
            return empty.astype(np.float32), empty.astype(np.uint8)
        return np.concatenate(probs).astype(np.float32), np.concatenate(preds).astype(np.uint8)

    @torch.no_grad()
    def from_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and predictions of RGB uint8 person crops."""
        maps = self.trunk(crop_tensor(images)) if images else torch.zeros(0)
        return self.from_maps(maps)

    def save(self, path: Path) -> None:
        """Write the model file atomically."""
        from storage.atomic import atomic_write

        payload = {"format": FORMAT, "kind": self.kind, "names": list(self.names),
                   "input_size": list(INPUT_SIZE), "state": self.head.state_dict(), "meta": self.meta}
        with atomic_write(path) as handle:
            torch.save(payload, handle)


def load_attribute_model(path: str | Path) -> AttributeModel:
    """Read a file written by `tansaku train-attributes`; any problem names the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(path, "attribute model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise ModelLoadError(path, f"not a torch file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelLoadError(path, f"not a tansaku attribute model (expected format {FORMAT})")
    if list(payload.get("input_size", [])) != list(INPUT_SIZE):
        raise ModelLoadError(path, f"made for {payload.get('input_size')} inputs, not {list(INPUT_SIZE)}")
    names = tuple(payload["names"])
    state = payload["state"]
    order = state.get("order") if payload["kind"] == "cnn-rnn" else None
    try:
        head = build_head(payload["kind"], len(names), order, pretrained=False)
        head.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(path, f"head does not fit: {exc}") from exc
    return AttributeModel(payload["kind"], names, head.eval(), payload.get("meta", {}))
