"""ABN re-ID network: attention weighting, batch-hard triplet, temporal pooling, training, masking."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from indexer.errors import ModelLoadError
from indexer.models.reid_abn.functional import (
    attention_weighting,
    batch_hard_triplet,
    masked_softmax,
    random_erase_,
    swap_background_,
)
from indexer.models.reid_abn.model import AbnReid, TemporalAttention, load_abn
from indexer.models.reid_abn.train import RECIPES, embed_maps, finetune, pk_batch, train_temporal


def test_attention_weighting_is_x_times_one_plus_a() -> None:
    x = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).view(2, 3, 4, 2)
    a = torch.rand(2, 1, 4, 2, generator=torch.Generator().manual_seed(0))
    y = attention_weighting(x, a)
    assert y.shape == x.shape
    torch.testing.assert_close(y[1, 2, 3, 1], x[1, 2, 3, 1] * (1 + a[1, 0, 3, 1]))
    torch.testing.assert_close(attention_weighting(x, torch.zeros(2, 1, 4, 2)), x)
    with pytest.raises(ValueError, match="does not fit"):
        attention_weighting(x, torch.rand(2, 1, 2, 2))


def test_network_outputs_and_attention_shape() -> None:
    torch.manual_seed(0)
    model = AbnReid(num_classes=5, attention=True, pretrained=False, input_size=(64, 32)).eval()
    out = model(torch.randn(3, 3, 64, 32))
    assert out["att"].shape == (3, 1, 4, 2)
    assert bool(((out["att"] > 0) & (out["att"] < 1)).all())
    assert out["emb"].shape == (3, 512) and out["logits"].shape == (3, 5)
    assert out["att_logits"].shape == (3, 5)
    base = AbnReid(num_classes=5, attention=False, pretrained=False, input_size=(64, 32)).eval()
    assert "att" not in base(torch.randn(2, 3, 64, 32))


def test_stem_splits_at_stage_4_and_unfreezing_moves_stages_5_6_to_the_imagenet_group() -> None:
    torch.manual_seed(0)
    model = AbnReid(num_classes=5, attention=True, pretrained=False, input_size=(64, 32)).eval()
    x = torch.randn(2, 3, 64, 32)
    m3 = model.low(x)
    assert m3.shape == (2, 80, 4, 2)
    for a, b in zip(model.mid(x), model.mid_from_low(m3), strict=True):
        torch.testing.assert_close(a, b)
    frozen = {id(p) for p in model.stem5.parameters()}
    assert not frozen & {id(p) for p in model.pretrained_parameters() + model.new_parameters()}
    model.unfreeze_stem()
    pretrained = {id(p) for p in model.pretrained_parameters()}
    assert frozen <= pretrained
    assert not pretrained & {id(p) for p in model.new_parameters()}
    # stages 1-4 stay frozen
    assert not any(p.requires_grad for p in model.stem[:model._cut3].parameters())


def _finetuned(maps: tuple[np.ndarray, ...], seed: int, global_seed: int = 0,
               ) -> tuple[AbnReid, AbnReid]:
    torch.manual_seed(0)
    start = AbnReid(num_classes=3, attention=True, pretrained=False, input_size=(64, 32))
    model = copy.deepcopy(start)
    torch.manual_seed(global_seed)  # finetune must not depend on the global generator's state
    labels = np.repeat(np.arange(4), 2)
    recipe = {**RECIPES["short"], "iterations": 2, "p": 2, "k": 2, "lr": 1e-2}
    history = finetune(model, maps, labels, labels % 2, recipe, seed=seed)
    assert len(history) == 2 and model.num_classes == 4
    return start, model


def test_finetune_from_stage_4_maps_trains_stages_5_6_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    m3 = rng.standard_normal((8, 2, 80, 4, 2)).astype(np.float16)
    start, a = _finetuned((m3,), seed=1)
    _, b = _finetuned((m3,), seed=1, global_seed=123)
    _, c = _finetuned((m3,), seed=2)
    changed = [not torch.equal(p, q) for p, q in zip(start.stem5.parameters(), a.stem5.parameters(),
                                                     strict=True)]
    assert any(changed)
    for p, q in zip(start.stem[:start._cut3].parameters(), a.stem[:a._cut3].parameters(),
                    strict=True):
        assert torch.equal(p, q)
    ea, eb, ec = (embed_maps(m, (m3[:, 0],), torch.device("cpu")) for m in (a, b, c))
    np.testing.assert_allclose(ea, eb, rtol=1e-5, atol=1e-5)
    assert ea.shape == (8, 512)
    assert np.abs(ea - ec).max() > 1e-3  # another seed, other batches and initial weights


def test_finetune_from_stage_6_maps_keeps_the_stem_frozen() -> None:
    rng = np.random.default_rng(0)
    maps = (rng.standard_normal((8, 2, 112, 4, 2)).astype(np.float16),
            rng.standard_normal((8, 2, 192, 2, 1)).astype(np.float16))
    start, model = _finetuned(maps, seed=1)
    for p, q in zip(start.stem5.parameters(), model.stem5.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not any(torch.equal(p, q) for p, q in zip(start.top.parameters(),
                                                      model.top.parameters(), strict=True)
                   if p.dim() > 1)


def test_batch_hard_triplet_hand_checked() -> None:
    # 1-d points 0, 1 (id 0) and 3, 5 (id 1). Hardest positive / negative per anchor:
    # 0: 1 / 3 -> 0;  1: 1 / 2 -> 0;  3: 2 / 2 -> 0.3;  5: 2 / 4 -> 0.  Mean 0.075.
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = batch_hard_triplet(feats, labels, margin=0.3)
    assert float(loss) == pytest.approx(0.075, abs=1e-5)
    assert float(batch_hard_triplet(feats, labels, margin=0.0)) == pytest.approx(0.0, abs=1e-5)


def test_temporal_weights_sum_to_one_and_respect_the_mask() -> None:
    torch.manual_seed(0)
    temporal = TemporalAttention()
    frames = torch.randn(3, 5, 8)
    heights = torch.tensor([[40.0, 80, 120, 160, 200]] * 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(temporal(frames, heights), frames.mean(1))  # untrained: the mean
    torch.nn.init.normal_(temporal.score[2].weight, std=10.0)
    w = temporal.weights(heights, mask)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert float(w[1, 2:].abs().sum().detach()) == 0.0
    assert float(w[2, 0].detach()) == pytest.approx(1.0)
    assert float((w[0].max() / w[0].min()).detach()) <= np.exp(4.0) + 1e-3  # scores bounded: +-2
    pooled = temporal(frames, heights, mask)
    torch.testing.assert_close(pooled[2], frames[2, 0])
    torch.testing.assert_close(pooled[0], (w[0, :, None] * frames[0]).sum(0))
    s = masked_softmax(torch.tensor([[0.0, 0.0]]), torch.tensor([[True, True]]))
    torch.testing.assert_close(s, torch.tensor([[0.5, 0.5]]))


def test_temporal_attention_learns_to_trust_sharp_frames() -> None:
    """Sharp frames (tall crops) show their person, shrunk ones (short crops) are noise: trained
    through the classifier, the pooling weights the tall crops above the short ones."""
    g = torch.Generator().manual_seed(0)
    n_ids, per_id, dim = 6, 5, 16
    labels = np.repeat(np.arange(n_ids), per_id)
    centres = torch.randn(n_ids, dim, generator=g) * 3
    clean = (centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g)).numpy()
    noise = (3 * torch.randn(len(labels), dim, generator=g)).numpy()
    classifier = torch.nn.Linear(dim, n_ids, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(centres)
    heights = np.stack([np.full(len(labels), 200.0), np.full(len(labels), 40.0)]).astype(np.float32)
    recipe = {"temporal_iterations": 600, "temporal_batch": 16, "temporal_frames": 4}
    temporal, losses = train_temporal(np.stack([clean, noise]), heights, labels, labels,
                                      classifier, recipe, g)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    w = temporal.weights(torch.tensor([[200.0, 40.0]]))
    assert float(w[0, 0].detach()) > 0.7, w  # untrained 0.5; the bound allows up to e^4 : 1


def test_random_erasing_sets_a_block_to_zero() -> None:
    g = torch.Generator().manual_seed(0)
    maps = random_erase_(torch.ones(4, 2, 16, 8), g, p=1.0, area=(0.2, 0.2))
    zeros = (maps == 0).all(1).flatten(1).sum(1)
    assert bool((zeros > 0).all()) and bool((zeros < 16 * 8).all())


def test_background_swap_replaces_the_sides_from_the_donor() -> None:
    m4 = torch.arange(3.0)[:, None, None, None].expand(3, 2, 16, 8).clone()  # crop i is all i
    m5 = torch.arange(3.0)[:, None, None, None].expand(3, 2, 8, 4).clone()
    swap_background_(m4, torch.tensor([1, 2, 0]), torch.tensor([True, False, True]), also=m5)
    assert (m4[0, :, :, :2] == 1).all() and (m4[0, :, :, -2:] == 1).all()  # sides from crop 1
    assert (m4[0, :, :, 2:6] == 0).all()  # the centre (the person) is kept
    assert (m4[1] == 1).all()  # not swapped
    assert (m4[2, :, :, 0] == 0).all() and (m4[2, :, :, 3] == 2).all()  # donor's original values
    assert (m5[0, :, :, 0] == 1).all() and (m5[0, :, :, 1:3] == 0).all()  # same columns, scaled


def test_pk_batch_spreads_a_persons_crops_over_cameras() -> None:
    labels = np.array([0] * 6 + [1] * 6)
    tracks = np.array([0, 0, 0, 0, 0, 1, 2, 2, 2, 3, 3, 3])  # person 0: one crop in camera 2
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows = pk_batch(labels, 2, 2, g, tracks)
        for pid in (0, 1):
            picked = rows[labels[rows] == pid]
            assert len(set(tracks[picked].tolist())) == 2  # both cameras, every time
    plain = [pk_batch(labels, 2, 2, g) for _ in range(50)]
    assert any(len(set(tracks[r[labels[r] == 0]].tolist())) == 1 for r in plain)


def _synthetic_people(root: Path, persons: int = 4, seed: int = 0) -> Path:
    """Market-style crops: each person a colour and a stripe pattern, two cameras, 3 frames each."""
    rng = np.random.default_rng(seed)
    for pid in range(1, persons + 1):
        top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        for cam in (1, 2):
            for f in range(3):
                im = np.zeros((64, 32, 3), np.float64)
                im[:32], im[32:] = top, bottom
                im += rng.normal(0, 12, im.shape)
                cv2.imwrite(str(root / f"{pid:04d}_c{cam}s1_{f:06d}_00.jpg"),
                            np.clip(im, 0, 255).astype(np.uint8)[..., ::-1])
    return root


@pytest.mark.slow
def test_short_recipe_trains_resumes_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer.models.reid_abn import train as train_mod

    data = _synthetic_people(tmp_path)
    recipe = dict(train_mod.RECIPES["short"], iterations=4, save_every=2)
    out = train_mod.train_reid(data, tmp_path / "abn.pt", recipe=recipe, seed=0)
    model, temporal = load_abn(out)
    assert model.has_attention and temporal is not None
    log = (tmp_path / "abn.pt.log.tsv").read_text().splitlines()
    assert log[0].startswith("iteration") and len(log) == 1 + 4

    # stopped during iteration 3 (checkpoint after 2), then run again: the same weights
    real_loss, calls = train_mod.reid_loss, []

    def failing_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "reid_loss", failing_loss)
    part = tmp_path / "part.pt"
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_reid(data, part, recipe=recipe, seed=0)
    assert torch.load(part, weights_only=True)["iteration"] == 2
    monkeypatch.setattr(train_mod, "reid_loss", real_loss)
    train_mod.train_reid(data, part, recipe=recipe, seed=0)
    a, b = torch.load(out, weights_only=True), torch.load(part, weights_only=True)
    # same batches after the restart: the losses match (other batches give other losses);
    # weights agree up to float noise, which Adam's normalised steps amplify to ~1e-4
    assert [h["total"] for h in b["history"]] == pytest.approx(
        [h["total"] for h in a["history"]], rel=1e-4)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=2e-3)


@pytest.mark.slow
def test_deep_recipe_trains_stages_5_6_and_caches_by_their_weights(tmp_path: Path) -> None:
    from indexer.models.reid_abn import train as train_mod
    from indexer.models.reid_abn.data import peta_training_set

    data = _synthetic_people(tmp_path)
    recipe = dict(train_mod.RECIPES["short"], iterations=3, train_stem=True)
    cache = tmp_path / "cache"
    out = train_mod.train_reid(data, tmp_path / "deep.pt", recipe=recipe, seed=0, cache_dir=cache)
    deep, temporal = load_abn(out)
    assert temporal is not None
    imagenet = AbnReid(num_classes=deep.num_classes, pretrained=True, input_size=(64, 32))

    def same(a: torch.nn.Module, b: torch.nn.Module) -> list[bool]:
        return [torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True)]

    cut = deep._cut3
    assert not all(same(deep.stem[cut:], imagenet.stem[cut:]))  # stage 5 trained
    assert not all(same(deep.stem5, imagenet.stem5))  # stage 6 trained
    assert all(same(deep.stem[:cut], imagenet.stem[:cut]))  # stages 1-4 stay ImageNet's
    # the stage-6 maps cached for one network are not served to a network with other stages 5-6
    crops = peta_training_set(data, max_per_track=8)
    _, m5_deep, _ = train_mod.cache_mid_maps(deep, crops, cache, torch.device("cpu"))
    _, m5_net, _ = train_mod.cache_mid_maps(imagenet.eval(), crops, cache, torch.device("cpu"))
    assert np.abs(m5_deep.astype(np.float32) - m5_net.astype(np.float32)).max() > 1e-2


def test_loader_names_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(ModelLoadError, match="x.pt"):
        load_abn(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        load_abn(tmp_path / "missing.pt")


def test_flip_averaging_is_the_mean_of_a_crop_and_its_mirror(tmp_path: Path) -> None:
    from indexer.extractors.abn import abn_method
    from indexer.models.reid_abn.model import CHECKPOINT_FORMAT, describe_frames

    torch.manual_seed(0)
    model = AbnReid(num_classes=5, attention=True, pretrained=True, input_size=(64, 32)).eval()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (80, 40, 3), dtype=np.uint8) for _ in range(3)]
    mirrors = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    alone = describe_frames(model, crops, flip=False)
    mirrored = describe_frames(model, mirrors, flip=False)
    assert np.abs(alone - mirrored).max() > 1e-3  # the network is not mirror-symmetric
    np.testing.assert_allclose(describe_frames(model, crops), (alone + mirrored) / 2,
                               rtol=1e-4, atol=1e-5)
    # so a crop and its mirror image get the same description
    np.testing.assert_allclose(describe_frames(model, crops), describe_frames(model, mirrors),
                               rtol=1e-4, atol=1e-5)

    ckpt = tmp_path / "tiny.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": model.config(), "model": model.state_dict(),
                "temporal": None}, ckpt)
    unit = alone / np.linalg.norm(alone, axis=1, keepdims=True)
    np.testing.assert_allclose(abn_method(crops, f"{ckpt}?flip=0"), unit, rtol=1e-4, atol=1e-5)
    assert np.abs(abn_method(crops, str(ckpt)) - unit).max() > 1e-4
    with pytest.raises(ModelLoadError, match="size"):
        abn_method(crops, f"{ckpt}?size=64x32")
    with pytest.raises(ModelLoadError, match="flip='yes'"):
        abn_method(crops, f"{ckpt}?flip=yes")


def _content_attention_model() -> AbnReid:
    """An ImageNet ABN network whose attention branch is set by hand to respond to the energy of
    the stride-16 map (positive centre taps and sums), not trained."""
    torch.manual_seed(0)
    model = AbnReid(num_classes=8, attention=True, pretrained=True).eval()
    att = model.attention
    assert att is not None
    with torch.no_grad():
        w = torch.zeros_like(att.conv[0].weight)
        w[:, :, 1, 1] = torch.rand(w.shape[:2]) * 0.1
        att.conv[0].weight.copy_(w)
        att.class_conv.weight.copy_(torch.rand_like(att.class_conv.weight) / 16)
        att.att_conv.weight.fill_(1.0 / 8)
        att.att_bn.weight.fill_(0.1)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_masking_the_most_attended_block_changes_the_score_most(name: str) -> None:
    from indexer.models.reid_abn.explain import attention_maps, masking_effect
    from tests.conftest import sample_image

    model = _content_attention_model()
    picture = cv2.resize(sample_image(name), (64, 96))
    query = np.full((256, 128, 3), 127, np.uint8)  # a picture on a plain background
    result = query.copy()
    query[140:236, 40:104] = picture
    result[130:226, 48:112] = picture
    heat = attention_maps(model, [query])[0]
    assert heat.shape == (16, 8) and heat.max() == pytest.approx(1.0)
    top, random = masking_effect(model, query, result, heat, random_draws=8, seed=0)
    assert top > 1.5 * random
    # a map that ignores the model (flat) picks the first block, plain background: no effect
    flat_top, _ = masking_effect(model, query, result, np.ones((16, 8)), random_draws=8, seed=0)
    assert flat_top < 0.5 * random
