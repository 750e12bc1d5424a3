"""Profiles and `--model` specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.profiles import GALLERY_HEADS, model_config, resolve_profile


def test_default_landmark_model_is_the_preset() -> None:
    assert model_config("gem-rootsift") == resolve_profile("landmark")
    assert resolve_profile("landmark")["whitening"]["min_images"] == 300


def test_delg_specs_resolve_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heads.pt").write_bytes(b"x")
    (tmp_path / "saved").mkdir()
    untrained = model_config("delg-efficientnet-lite0")
    assert untrained["joint"] == {"name": "delg-efficientnet-lite0", "conf": {"heads": GALLERY_HEADS}}
    trained = model_config("delg-efficientnet-lite0:heads.pt")
    assert trained["joint"]["conf"]["heads"] == str(tmp_path / "heads.pt")
    assert trained["model"] == f"delg-efficientnet-lite0:{tmp_path / 'heads.pt'}"
    saved = model_config("delg-savedmodel:saved")
    assert saved["joint"] == {"name": "delg-savedmodel", "conf": {"path": str(tmp_path / "saved")}}
    assert saved["metric"] == "ip" and "local" not in saved and saved["store"] == {"local": "int8"}


@pytest.mark.parametrize(("spec", "message"), [
    ("delf", "unknown model 'delf'"),
    ("delg-savedmodel", "needs the SavedModel folder"),
    ("delg-savedmodel:/no/such/dir", "SavedModel folder not found: /no/such/dir"),
    ("delg-efficientnet-lite0:/no/heads.pt", "heads file not found: /no/heads.pt"),
    ("gem-rootsift:x", "takes no argument"),
])
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_config(spec)
