import numpy as np
import pytest
import torch

from indexer.extractors.gem import GemEfficientNet, resize_longer_side
from indexer.functional import gem
from tests.conftest import sample_image, warp


def test_gem_on_hand_computed_values() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    assert gem(x, p=1.0).item() == pytest.approx(2.5)  # p = 1 is average pooling
    assert gem(x, p=3.0).item() == pytest.approx((100.0 / 4) ** (1 / 3))  # (1+8+27+64)/4
    small = x / 10  # keeps x^p inside float32 for a large p
    assert gem(small, p=64.0).item() == pytest.approx(0.4 * 0.25 ** (1 / 64), rel=1e-3)  # -> max


def test_gem_clamps_negative_activations() -> None:
    x = torch.tensor([-5.0, 0.0, 2.0, 2.0]).view(1, 1, 2, 2)
    assert gem(x, p=1.0, eps=1e-6).item() == pytest.approx(1.0, abs=1e-5)


def test_resize_never_upscales() -> None:
    image = np.zeros((300, 200, 3), np.uint8)
    assert resize_longer_side(image, 512).shape == (300, 200, 3)
    assert resize_longer_side(image, 150).shape == (150, 100, 3)


@pytest.fixture(scope="module")
def extractor() -> GemEfficientNet:
    torch.manual_seed(0)
    return GemEfficientNet({"max_side": 256})


def test_descriptor_is_unit_and_prefers_the_same_scene(extractor: GemEfficientNet) -> None:
    coffee, rocket = sample_image("coffee"), sample_image("rocket")
    d = extractor.describe_batch([coffee, warp(coffee), rocket])
    assert d.shape == (3, 1280) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert d[0] @ d[1] > d[0] @ d[2] + 0.1


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ValueError, match="max_sid"):
        GemEfficientNet({"max_sid": 3})
