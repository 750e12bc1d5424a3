from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from indexer.errors import ModelLoadError
from indexer.extractors.pcb import (
    PCB,
    TORCHREID_INPUT_SIZE,
    ResNetPCB,
    load_any_pcb,
    load_pcb,
    load_torchreid_pcb,
    part_loss,
    pcb_batch,
    pcb_method,
    resize_crop,
    stripe_descriptor,
    stripe_pool,
)
from indexer.extractors.pcb_train import (
    CHECKPOINT_NAME,
    build_optimizer,
    market_training_set,
    train_pcb,
    train_step,
)
from indexer.naming import parse_market_name

SMALL = (96, 32)  # smallest input whose stride-16 map still has 6 rows (one per stripe)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pcb() -> PCB:
    torch.manual_seed(0)
    return PCB(num_classes=5).eval()


# ----------------------------------------------------------------------------- pure maths


def test_stripe_pool_averages_disjoint_row_bands() -> None:
    rows = torch.arange(24, dtype=torch.float32).view(1, 1, 24, 1).expand(2, 3, 24, 8)
    pooled = stripe_pool(rows, 6)
    assert pooled.shape == (2, 3, 6)
    # stripe i covers rows 4i..4i+3, whose mean is 4i + 1.5
    assert torch.equal(pooled[0, 0], torch.tensor([1.5, 5.5, 9.5, 13.5, 17.5, 21.5]))
    with pytest.raises(ValueError, match="height 4 is less than 6"):
        stripe_pool(torch.zeros(1, 3, 4, 2), 6)


def test_stripe_descriptor_normalises_each_stripe_separately() -> None:
    pooled = torch.tensor([[[3.0, 0.0], [4.0, 2.0]]])  # (B=1, C=2, P=2)
    desc = stripe_descriptor(pooled)
    assert desc.shape == (1, 2, 2)
    assert torch.allclose(desc[0], torch.tensor([[0.6, 0.8], [0.0, 1.0]]))


def test_part_loss_is_the_sum_of_stripe_cross_entropies() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(4, 3) for _ in range(6)]
    labels = torch.tensor([0, 1, 2, 1])
    expected = sum(F.cross_entropy(z, labels).item() for z in logits)
    assert part_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- the model


def test_shapes_at_384x128(pcb: PCB) -> None:
    x = torch.randn(2, 3, 384, 128)
    with torch.no_grad():
        assert pcb.backbone.features(x)["head"].shape == (2, 1280, 24, 8)
        pooled = pcb.pooled(x)
        feature = pcb(x)
        logits = pcb.stripe_logits(x[:1])
        reduced = pcb.stripe_features(x[:1], reduced=True)
    assert pooled.shape == (2, 1280, 6)
    assert feature.shape == (2, 6 * 1280)
    # torchreid's layout: channel-major (element c * 6 + i is channel c of stripe i)
    assert torch.allclose(feature.view(2, 1280, 6).transpose(1, 2), stripe_descriptor(pooled),
                          atol=1e-6)
    assert torch.allclose(feature.view(2, 1280, 6).norm(dim=1), torch.ones(2, 6), atol=1e-5)
    assert len(logits) == 6 and all(z.shape == (1, 5) for z in logits)
    assert reduced.shape == (1, 6, 256)


def test_each_stripe_feature_comes_from_its_own_band(pcb: PCB) -> None:
    # Replace only the top sixth (rows 0-63) of a 384x128 input. Stripe 0 (rows 0-63) must
    # change most; the receptive field lets the change bleed into stripes 1-2 (measured: up to
    # ~0.25 and ~0.05 relative), and it must fade with distance: stripes 3-5 (rows 192-383)
    # change by less than 5% (measured <= 0.02), the bottom two by less than 1%.
    torch.manual_seed(1)
    x = torch.randn(2, 3, 384, 128)
    y = x.clone()
    y[:, :, :64] = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        a, b = pcb.pooled(x), pcb.pooled(y)
    change = ((a - b).norm(dim=1) / a.norm(dim=1)).mean(0)  # (6,) relative change per stripe
    assert change[0] > 0.2
    assert torch.all(change[:-1] >= change[1:])  # fades with distance from the band
    assert torch.all(change[3:] < 0.05) and torch.all(change[4:] < 0.01)


def test_shared_reduction_option_matches_the_authors_layout() -> None:
    torch.manual_seed(0)
    model = PCB(num_classes=3, shared_reduction=True, input_size=SMALL, pretrained=False).eval()
    assert len(model.reductions) == 1
    with torch.no_grad():
        assert model.stripe_features(torch.randn(2, 3, *SMALL), reduced=True).shape == (2, 6, 256)


# ----------------------------------------------------------------------------- pcb_batch


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(128, 48), (160, 64), (90, 40), (200, 70)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def test_pcb_batch_shape_norm_and_determinism(pcb: PCB) -> None:
    images = _crops(3)
    whole = pcb_batch(images, model=pcb, batch_size=3, device="cpu")
    assert whole.shape == (3, 6 * 1280) and whole.dtype == np.float32
    assert np.allclose(np.linalg.norm(whole, axis=1), math.sqrt(6), atol=1e-4)  # unscaled
    one_by_one = pcb_batch(images, model=pcb, batch_size=1, device="cpu")
    assert np.allclose(whole, one_by_one, atol=1e-5)  # no dependence on the batch
    assert np.array_equal(whole, pcb_batch(images, model=pcb, batch_size=3, device="cpu"))
    # different crops give different features
    assert np.abs(whole[0] - whole[1]).max() > 1e-3
    # channel-major: every 6th element belongs to one stripe, and each stripe has unit norm
    stripes = np.linalg.norm(whole.reshape(3, 1280, 6), axis=1)
    assert np.allclose(stripes, 1.0, atol=1e-5)


def test_pcb_batch_edges(pcb: PCB) -> None:
    assert pcb_batch([], model=pcb, device="cpu").shape == (0, 6 * 1280)
    assert pcb_batch([], model=pcb, device="cpu", reduced=True).shape == (0, 6 * 256)
    bad = [*_crops(1), np.zeros((10, 10), np.uint8)]
    with pytest.raises(ValueError, match=r"image 1: expected an \(H, W, 3\) uint8 RGB array"):
        pcb_batch(bad, model=pcb, device="cpu")


# ----------------------------------------------------------------------------- training


def _coloured_noise(pid: int, rng: np.random.Generator) -> np.ndarray:
    colour = np.array([(pid * 80) % 256, (pid * 150) % 256, (pid * 40 + 90) % 256])
    noise = rng.normal(0, 30, (64, 32, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def _market_folder(root: Path, ids: int = 3, per_id: int = 4) -> Path:
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for pid in range(1, ids + 1):
        for k in range(per_id):
            name = f"{pid:04d}_c{k % 2 + 1}s1_{k:06d}_00.jpg"
            cv2.imwrite(str(folder / name), _coloured_noise(pid, rng))
    cv2.imwrite(str(folder / "-1_c1s1_000000_00.jpg"), _coloured_noise(9, rng))  # junk
    cv2.imwrite(str(folder / "0000_c2s1_000000_00.jpg"), _coloured_noise(8, rng))  # distractor
    (folder / "0002_c2s1_009999_00.jpg").write_bytes(b"not a jpeg")  # unreadable
    (folder / "Thumbs.db").write_bytes(b"")
    return root


def test_market_names_and_training_set(tmp_path: Path) -> None:
    assert parse_market_name("0002_c1s1_000451_03.jpg", strict=False) == (2, 1)
    assert parse_market_name("-1_c3s2_000000_00.jpg", strict=False) == (-1, 3)
    with pytest.raises(ValueError, match="not a Market-1501 image name"):
        parse_market_name("person.jpg", strict=False)
    paths, pids = market_training_set(_market_folder(tmp_path))
    assert sorted(set(pids.tolist())) == [1, 2, 3]  # junk and distractor left out
    assert len(paths) == 13  # 12 + the unreadable one (dropped when read, not when listed)
    assert all(p.suffix == ".jpg" for p in paths)


def test_one_training_step_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = PCB(num_classes=3, input_size=SMALL)
    rng = np.random.default_rng(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = [cv2.resize(_coloured_noise(int(p) + 1, rng), SMALL[::-1]) for p in labels]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    def loss_now() -> float:
        torch.manual_seed(123)  # the same dropout masks for both measurements
        model.train()
        with torch.no_grad():
            return part_loss(model.stripe_logits(x), labels).item()

    before = loss_now()
    assert before == pytest.approx(6 * math.log(3), rel=0.05)  # 6 stripes at chance
    optimizer = build_optimizer(model, lr=0.1)
    torch.manual_seed(123)
    train_step(model, optimizer, x, labels)
    assert loss_now() < before - 0.05


@pytest.mark.slow
def test_resumed_training_equals_unbroken_training(tmp_path: Path, caplog) -> None:
    data = _market_folder(tmp_path / "market", ids=3, per_id=3)
    # random backbone weights: resuming must not depend on what the weights are
    train = functools.partial(train_pcb, batch_size=4, lr=0.05, seed=3, device="cpu",
                              input_size=SMALL, pretrained=False)
    with caplog.at_level(logging.WARNING):
        unbroken = train(data, tmp_path / "a", epochs=2)
    assert any("0002_c2s1_009999_00.jpg" in r.getMessage() for r in caplog.records)
    train(data, tmp_path / "b", epochs=1)  # "stopped" after one epoch
    resumed = train(data, tmp_path / "b", epochs=2)
    assert resumed.name == CHECKPOINT_NAME and not list((tmp_path / "b").glob(".*tmp"))

    a = torch.load(unbroken, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["identities"] == {1: 0, 2: 1, 3: 2}
    assert a["history"] == b["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # the trained model reads back (at the size it was trained at) and extracts
    model = load_pcb(resumed)
    assert model.input_size == SMALL and load_any_pcb(resumed).input_size == SMALL
    feats = pcb_batch(_crops(2), model=model, device="cpu")
    assert feats.shape == (2, 6 * 1280) and np.isfinite(feats).all()
    np.testing.assert_allclose(pcb_method(_crops(2), str(resumed)), feats, atol=1e-5)


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    data = _market_folder(tmp_path / "market", ids=2, per_id=2)
    train = functools.partial(train_pcb, data, tmp_path / "run", batch_size=4, device="cpu",
                              input_size=SMALL, pretrained=False)
    train(epochs=1, lr=0.05)
    with pytest.raises(ValueError, match="recipe differs in 'lr'"):
        train(epochs=2, lr=0.01)


# ----------------------------------------------------------------------------- torchreid


class _RefBlock(nn.Module):
    """A torchvision/torchreid-named bottleneck, written independently of indexer's."""

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _RefDimReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                                    nn.ReLU())


class _RefTorchreidPCB(nn.Module):
    """torchreid pcb_p6's layout and eval output, small (width 8, one block per stage)."""

    def __init__(self, classes: int = 7, width: int = 8, blocks: tuple = (1, 2, 1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = width
        for i, (n, stride) in enumerate(zip(blocks, (1, 2, 2, 1), strict=True)):
            planes = width * 2**i
            layer = [_RefBlock(c if j == 0 else planes * 4, planes, stride if j == 0 else 1)
                     for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            c = planes * 4
        self.parts_avgpool = nn.AdaptiveAvgPool2d((6, 1))
        self.dropout = nn.Dropout(0.5)
        self.conv5 = _RefDimReduce(c, 16)
        self.classifier = nn.ModuleList([nn.Linear(16, classes) for _ in range(6)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        v = self.parts_avgpool(x)
        return F.normalize(v, p=2, dim=1).view(v.size(0), -1)


@pytest.fixture
def reference() -> _RefTorchreidPCB:
    torch.manual_seed(0)
    ref = _RefTorchreidPCB()
    for m in ref.modules():  # non-trivial BN statistics, so eval-mode BN is checked too
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return ref.eval()


def _save_torchreid(ref: nn.Module, path: Path, drop: str = "", rename: str = "") -> Path:
    state = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.startswith(drop or "~")}
    if rename:
        state[f"module.{rename}s"] = state.pop(f"module.{rename}")
    torch.save({"state_dict": state, "epoch": 60, "rank1": np.float32(0.93),
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


def test_torchreid_checkpoint_gives_torchreid_features(tmp_path: Path, reference) -> None:
    model = load_torchreid_pcb(_save_torchreid(reference, tmp_path / "model.pth.tar-60"))
    assert isinstance(model, ResNetPCB) and not model.training
    assert len(model.classifier) == 6 and model.classifier[0].out_features == 7
    x = torch.randn(2, 3, 384, 128)
    with torch.no_grad():
        expected, got = reference(x), model(x)
        stripes = model.stripe_features(x)
    assert got.shape == (2, 64 * 4 * 6)
    assert torch.allclose(got, expected, atol=1e-6)
    # stripe_features is the same numbers, stripe after stripe
    assert torch.allclose(stripes.transpose(1, 2).flatten(1), expected, atol=1e-6)
    feats = pcb_batch(_crops(2), model=model, device="cpu")
    assert feats.shape == (2, 6 * 256)


def test_torchreid_checkpoint_without_classifier_loads(tmp_path: Path, reference) -> None:
    model = load_torchreid_pcb(_save_torchreid(reference, tmp_path / "c.pth", drop="classifier"))
    assert len(model.classifier) == 0 and model.parts == 6
    x = torch.randn(1, 3, 384, 128)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_torchreid_checkpoint_with_a_wrong_key_names_file_and_key(tmp_path: Path, reference):
    path = _save_torchreid(reference, tmp_path / "bad.pth", rename="layer2.1.conv2.weight")
    with pytest.raises(ModelLoadError, match=r"bad\.pth.*layer2\.1\.conv2\.weight") as err:
        load_torchreid_pcb(path)
    assert "layer2.1.conv2.weights" in str(err.value) and err.value.path == str(path)
    with pytest.raises(ModelLoadError, match="no key 'conv1.weight'"):
        torch.save({"state_dict": {"fc.weight": torch.zeros(1)}}, tmp_path / "other.pth")
        load_torchreid_pcb(tmp_path / "other.pth")


# ----------------------------------------------------------------------------- upstream references


def _pil_bilinear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's BILINEAR resize re-stated in numpy: a triangle filter widened by the down-scaling
    factor (antialiasing), output pixel centres at (i + 0.5) * scale, weights normalised, the
    horizontal pass first and rounded to 8 bits, then the vertical pass."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = max(scale, 1.0)  # the triangle's radius, in input pixels
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            centre = (i + 0.5) * scale
            lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
            taps = np.arange(lo, hi)
            k = np.maximum(0.0, 1.0 - np.abs((taps + 0.5 - centre) / support))
            w[i, lo:hi] = k / k.sum()
        return w

    rows = np.einsum("xj,hjc->hxc", weights(image.shape[1], width), image.astype(np.float64))
    rows = np.clip(np.round(rows), 0, 255)
    out = np.einsum("yh,hxc->yxc", weights(image.shape[0], height), rows)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_resize_is_torchvision_resize_on_pil_antialiased_bilinear() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 110, 3), dtype=np.uint8)  # shrink by 2.3 x 0.86 (grow)
    got = resize_crop(image, (128, 128)).astype(int)
    ref = _pil_bilinear_reference(image, 128, 128).astype(int)
    assert got.shape == (128, 128, 3)
    assert np.abs(got - ref).max() <= 1  # fixed-point rounding of PIL's coefficients
    # a plain (non-antialiased) bilinear resize is far from it on a noisy image
    plain = cv2.resize(image, (128, 128), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(plain - ref).mean() > 10 * max(np.abs(got - ref).mean(), 0.1)


def _torchreid_test_transform(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """torchreid's transform_te: Resize((h, w)) on a PIL image (torchvision calls
    `img.resize((w, h), BILINEAR)`), ToTensor (/255, CHW), Normalize(ImageNet mean, std)."""
    from PIL import Image

    pil = Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((x - mean) / std)[None]


def test_torchreid_checkpoint_features_equal_torchreids_own(tmp_path: Path, reference) -> None:
    """pcb_batch on a torchreid checkpoint = torchreid's eval forward on its test transform:
    256 x 128 by default, channel-major, unscaled."""
    path = _save_torchreid(reference, tmp_path / "model.pth.tar-60")
    model = load_any_pcb(path)
    assert isinstance(model, ResNetPCB) and model.input_size == TORCHREID_INPUT_SIZE == (256, 128)
    crops = _crops(3)
    with torch.no_grad():
        expected = torch.cat([reference(_torchreid_test_transform(c, (256, 128))) for c in crops])
    got = pcb_batch(crops, model=model, device="cpu")
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), math.sqrt(6), rtol=1e-5)
    # another input size is an option of the method, and changes the features
    with torch.no_grad():
        tall = torch.cat([reference(_torchreid_test_transform(c, (384, 128))) for c in crops])
    got_tall = pcb_method(crops, f"{path}?size=384x128")
    np.testing.assert_allclose(got_tall, tall.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(got_tall - got).max() > 1e-4  # ten times the tolerance above


def test_pcb_loaders_raise_model_load_error_naming_the_file(tmp_path: Path, reference) -> None:
    notes = tmp_path / "NOTES.txt"
    notes.write_text("these are not weights\n")
    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3]}, other)
    cases = {
        tmp_path / "missing.pth": "not found",
        tmp_path: "is a folder",
        notes: "not a (tansaku |torchreid )?PCB",
        other: "not a (tansaku |torchreid )?PCB",
    }
    for path, reason in cases.items():
        for loader in (load_pcb, load_torchreid_pcb, load_any_pcb):
            with pytest.raises(ModelLoadError, match=reason) as err:
                loader(path)
            assert err.value.path == str(path), loader
    state = {k: v for k, v in reference.state_dict().items()}
    state["layer1.0.conv2.weight"] = torch.zeros(3, 3, 3, 3)  # a shape that does not fit
    torch.save({"state_dict": state}, tmp_path / "shape.pth")
    with pytest.raises(ModelLoadError, match=r"shape\.pth: checkpoint does not match.*layer1"):
        load_any_pcb(tmp_path / "shape.pth")
    torch.save({"format": "tansaku-pcb/1", "config": {"parts": 6}, "model": {}}, tmp_path / "t.pth")
    with pytest.raises(ModelLoadError, match=r"t\.pth: checkpoint does not match.*missing keys"):
        load_any_pcb(tmp_path / "t.pth", input_size=SMALL)
    good = _save_torchreid(reference, tmp_path / "good.pth")
    with pytest.raises(ModelLoadError, match="too small for 6 stripes"):
        load_any_pcb(good, input_size=(64, 32))
    with pytest.raises(ModelLoadError, match="HEIGHTxWIDTH"):
        pcb_method(_crops(1), f"{good}?size=256")
    with pytest.raises(ModelLoadError, match=r"good\.pth\?height=256: unknown option"):
        pcb_method(_crops(1), f"{good}?height=256")
