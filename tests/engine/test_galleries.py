"""Gallery life-cycle in the Engine: no row before its extractors load, deletion, image files."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core import Engine, profile_config
from engine.errors import TansakuError
from engine.settings import Settings
from indexer.errors import ModelLoadError
from tests.conftest import sample_image, write_rgb


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    home = tmp_path / "home"
    return Engine(Settings.from_env(home=home, db=f"sqlite:///{tmp_path / 'db.sqlite'}"))


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    for k, name in enumerate(("coffee", "chelsea")):
        write_rgb(tmp_path / "crops" / f"{k + 1:04d}_c1s1_000001_00.jpg", sample_image(name, 48))
    return tmp_path / "crops"


@pytest.mark.parametrize("failure", [ValueError("needs at least 2 pyramid levels"),
                                     ModelLoadError("/x/backbone.pth", "not a state dict"),
                                     KeyboardInterrupt()])
def test_heads_that_cannot_be_fitted_leave_no_gallery(
    engine: Engine, crops: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    from indexer.extractors import delg_torch

    def broken(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(delg_torch, "init_heads_from_images", broken)
    config = profile_config("landmark", model="delg-efficientnet-lite0")
    expected = KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else TansakuError
    with pytest.raises(expected) as info:
        engine.index_folder(crops, "delg", config=config)
    if expected is TansakuError:
        assert str(failure).split(":")[0] in str(info.value)
    assert engine.gallery_names() == []
    assert list((engine.settings.home / "galleries").iterdir()) == []  # no staging left either


def test_describer_built_before_the_row(engine: Engine, crops: Path) -> None:
    config = profile_config("person", method="lomo")
    assert config is not None
    config["global"]["conf"]["method"] = "lomo+nonsense"
    with pytest.raises(TansakuError, match="nonsense"):
        engine.index_folder(crops, "p", profile="person", config=config)
    assert engine.gallery_names() == []


def test_image_file_and_delete(engine: Engine, crops: Path) -> None:
    engine.index_folder(crops, "p", profile="person")
    opened = engine.open_gallery("p")
    files = {opened.image_file(i) for i in opened.rows}
    assert files == {p.resolve() for p in crops.iterdir()}
    with pytest.raises(TansakuError, match="12345"):
        opened.image_file(12345)
    folder = opened.files.root
    engine.delete_gallery("p")
    assert engine.gallery_names() == [] and not folder.exists()
    assert all(p.exists() for p in files)  # the user's images are not touched
    engine.index_folder(crops, "p", profile="person")  # the name can be used again
    assert engine.galleries()[0].images == {"indexed": 2}
