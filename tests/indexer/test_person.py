"""Person descriptor registry: lazy lookup, batching, fusion, errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from indexer.extractors import person
from indexer.extractors.person import MethodPart, canonical_method, describe_persons, parse_method


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
    with pytest.raises(ValueError, match=r"valid names: .*gog, .*lomo, .*pcb\[:FILE\]"):
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
    assert person.PERSON_DESCRIPTORS["pcb"] == ("indexer.extractors.pcb", "pcb_method",
                                                person.OPTIONAL_FILE)


@pytest.fixture
def fake_learned(monkeypatch: pytest.MonkeyPatch, fake_methods: list[int]) -> list[str | None]:
    """A fake method taking an optional file and one needing a file; returns the arguments seen."""
    seen: list[str | None] = []

    def learned(images: list[np.ndarray], argument: str | None) -> np.ndarray:
        seen.append(argument)
        return np.ones((len(images), 2)) * (1.0 if argument is None else 2.0)

    module = sys.modules["fake_person_descriptors"]
    module.learned = learned  # type: ignore[attr-defined]
    monkeypatch.setitem(person.PERSON_DESCRIPTORS, "opt", ("fake_person_descriptors", "learned",
                                                            person.OPTIONAL_FILE))
    monkeypatch.setitem(person.PERSON_DESCRIPTORS, "need", ("fake_person_descriptors", "learned",
                                                             person.FILE))
    return seen


def test_parametrised_methods_get_their_argument(fake_learned: list[str | None]) -> None:
    out = describe_persons("colour+opt:run/a.pth", _images()[:2])
    assert fake_learned == ["run/a.pth"]
    np.testing.assert_allclose(out[:, 3:], np.sqrt(0.5))  # (2, 2) normalised
    describe_persons("opt", _images()[:1])
    assert fake_learned[-1] is None  # an optional argument left out
    assert parse_method("need:x.pth?size=256x128+colour") == [
        MethodPart("need", "x.pth?size=256x128"), MethodPart("colour")]
    assert parse_method("OPT:a+b.pth+colour") == [MethodPart("opt", "a+b.pth"),
                                                   MethodPart("colour")]  # '+' inside a path


def test_parametrised_method_errors(fake_learned: list[str | None]) -> None:
    with pytest.raises(ValueError, match=r"'need' needs a file: need:FILE"):
        parse_method("need")
    with pytest.raises(ValueError, match=r"'colour' takes no argument"):
        parse_method("colour:x.pth")
    with pytest.raises(ValueError,
                       match=r"valid names: .*colour, .*gog, .*lomo, .*need:FILE, opt\[:FILE\]"):
        parse_method("osnet:x.pth")
    with pytest.raises(ValueError, match="twice"):
        parse_method("opt:a.pth+opt:b.pth")


def test_canonical_method_makes_paths_absolute(fake_learned: list[str | None],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    got = canonical_method("Colour+need:run/a.pth?SIZE=256x128&b=1")
    assert got == f"colour+need:{tmp_path.resolve() / 'run' / 'a.pth'}?b=1&size=256x128"
    assert canonical_method(got) == got  # stable: stored methods read back the same
    assert canonical_method("opt") == "opt"
