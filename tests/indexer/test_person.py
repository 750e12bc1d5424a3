"""Person descriptor registry: lazy lookup, batching, fusion, errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from indexer.extractors import person
from indexer.extractors.person import describe_persons, parse_method


@pytest.fixture
def fake_methods(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Two fake descriptors in a fake module; returns the batch sizes they were called with."""
    calls: list[int] = []

    def mean_colour(images: list[np.ndarray]) -> np.ndarray:
        calls.append(len(images))
        return np.array([im.reshape(-1, 3).mean(0) for im in images])  # (N, 3)

    def size(images: list[np.ndarray]) -> np.ndarray:
        return np.array([[im.shape[0], 0.0] for im in images])  # (N, 2), norm = height

    module = types.ModuleType("fake_person_descriptors")
    module.mean_colour = mean_colour  # type: ignore[attr-defined]
    module.size = size  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_person_descriptors", module)
    monkeypatch.setitem(person.PERSON_DESCRIPTORS, "colour", ("fake_person_descriptors",
                                                               "mean_colour"))
    monkeypatch.setitem(person.PERSON_DESCRIPTORS, "size", ("fake_person_descriptors", "size"))
    return calls


def _images() -> list[np.ndarray]:
    return [np.full((4 + i, 3, 3), (10 * i, 0, 0), np.uint8) for i in range(5)]


def test_single_method_is_batched_and_raw(fake_methods: list[int]) -> None:
    out = describe_persons("colour", _images(), batch_size=2)
    assert fake_methods == [2, 2, 1]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0, 10, 20, 30, 40])  # not normalised


def test_fusion_l2_normalises_each_part_then_concatenates(fake_methods: list[int]) -> None:
    out = describe_persons("colour+size", _images())
    assert out.shape == (5, 5)
    np.testing.assert_allclose(out[1], [1, 0, 0, 1, 0])  # colour (10, 0, 0), size (5, 0)
    np.testing.assert_allclose(out[0, :3], 0)  # an all-zero part stays zero
    np.testing.assert_allclose(np.linalg.norm(out[1:], axis=1), np.sqrt(2), rtol=1e-6)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid names: .*gog, .*lomo, .*pcb"):
        describe_persons("lomo+sift", _images())
    with pytest.raises(ValueError, match="twice"):
        parse_method("lomo+lomo")


def test_rejects_bad_images(fake_methods: list[int]) -> None:
    images = _images()
    images[3] = images[3][..., 0]
    with pytest.raises(ValueError, match="image 3"):
        describe_persons("colour", images)
    with pytest.raises(ValueError, match="no images"):
        describe_persons("colour", [])


def test_registry_names_real_modules() -> None:
    assert person.PERSON_DESCRIPTORS["lomo"] == ("indexer.extractors.lomo", "lomo_batch")
    assert person.PERSON_DESCRIPTORS["gog"] == ("indexer.extractors.gog", "gog_batch")
    assert person.PERSON_DESCRIPTORS["pcb"] == ("indexer.extractors.pcb", "pcb_batch")
