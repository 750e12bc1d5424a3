"""Training DELG's heads: labels from folders, ArcFace by hand, one step lowers each loss, resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.extractors.delg_torch import DelgHeads, load_heads
from indexer.extractors.delg_train import (
    BackboneCache,
    DelgTrainer,
    arcface_logits,
    epoch_batches,
    labelled_images,
    total_loss,
    train_delg,
)


def _write(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_labels_from_subfolders_or_corel_numbers(tmp_path: Path) -> None:
    for k, name in enumerate(["b/x.jpg", "a/y.jpg", "a/z.png", "loose.jpg"]):
        _write(tmp_path / "sub" / name, k)
    paths, labels = labelled_images(tmp_path / "sub")
    assert [p.relative_to(tmp_path / "sub").as_posix() for p in paths] == ["a/y.jpg", "a/z.png",
                                                                            "b/x.jpg"]
    np.testing.assert_array_equal(labels, [0, 0, 1])
    for k, n in enumerate([5, 199, 100, 301]):
        _write(tmp_path / "corel" / f"{n}.jpg", k)
    paths, labels = labelled_images(tmp_path / "corel")
    assert dict(zip([p.name for p in paths], labels.tolist(), strict=True)) == {
        "100.jpg": 1, "199.jpg": 1, "301.jpg": 2, "5.jpg": 0}
    _write(tmp_path / "bad" / "cat.jpg", 0)
    with pytest.raises(ValueError, match="cat.jpg"):
        labelled_images(tmp_path / "bad")


def test_arcface_logits_by_hand() -> None:
    cosine = torch.tensor([[0.5, 0.0], [1.0, -1.0]])
    out = arcface_logits(cosine, torch.tensor([0, 1]), margin=0.1, scale=2.0)
    # true class: 2 cos(acos(0.5) + 0.1); others untouched; cos(pi + 0.1) = -cos(0.1)
    expected = torch.tensor([[2 * math.cos(math.pi / 3 + 0.1), 0.0], [2.0, -2 * math.cos(0.1)]])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_epoch_batches_group_shapes_and_repeat_per_seed() -> None:
    shapes = [(4, 3, 2)] * 5 + [(4, 2, 3)] * 3
    batches = epoch_batches(shapes, 2, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len({shapes[i] for i in b}) == 1 and len(b) <= 2 for b in batches)
    assert batches == epoch_batches(shapes, 2, seed=0, epoch=1)
    assert batches != epoch_batches(shapes, 2, seed=0, epoch=2)


def _synthetic_cache(n: int = 24, classes: int = 3) -> BackboneCache:
    """Maps whose class shows in a few channels at random positions, GeM vectors likewise."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    maps = torch.rand(n, 112, 3, 4, generator=gen)
    pooled = torch.rand(n, 1280, generator=gen)
    for i, c in enumerate(labels.tolist()):
        maps[i, 10 * c : 10 * c + 10, i % 3, i % 4] += 3.0
        pooled[i, 100 * c : 100 * c + 100] += 1.0
    pooled = torch.nn.functional.normalize(pooled, dim=1)
    return BackboneCache(pooled, [m.half() for m in maps], labels)


@pytest.mark.slow
def test_one_training_step_reduces_each_loss() -> None:
    cache = _synthetic_cache()
    torch.manual_seed(0)  # random heads: from the PCA start, reconstruction is already optimal
    trainer = DelgTrainer(DelgHeads("stride16", dim=16, local_dim=8, attention="learned"), 3)
    # plain gradient steps, small enough to descend: the attention branch's gradients are small
    attention = [*trainer.heads.attention_net.parameters(), *trainer.attn_classifier.parameters()]
    ids = {id(p) for p in attention}
    rest = [p for p in trainer.parameters() if id(p) not in ids]
    opt = torch.optim.SGD([{"params": attention, "lr": 0.2}, {"params": rest, "lr": 1e-3}])
    maps = torch.stack(cache.maps).float()
    trainer.train()
    before = trainer.losses(cache.pooled, maps, cache.labels)
    opt.zero_grad()
    total_loss(before).backward()
    opt.step()
    after = trainer.losses(cache.pooled, maps, cache.labels)
    for name in ("global", "attention", "reconstruction"):
        assert float(after[name].detach()) < float(before[name].detach()), name


@pytest.mark.slow
def test_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    for k in range(6):
        _write(tmp_path / "data" / ("a" if k % 2 else "b") / f"{k}.png", k)
    kw: dict[str, Any] = {"batch_size": 2, "lr": 1e-3, "seed": 3, "device": "cpu", "dim": 4,
                          "local_layer": "stride16", "max_side": 64}
    straight = train_delg(tmp_path / "data", tmp_path / "one" / "h.pt", epochs=3, **kw)
    train_delg(tmp_path / "data", tmp_path / "two" / "h.pt", epochs=1, **kw)
    assert torch.load(tmp_path / "two" / "h.ckpt", weights_only=True)["epoch"] == 1
    resumed = train_delg(tmp_path / "data", tmp_path / "two" / "h.pt", epochs=3, **kw)
    a, b = load_heads(straight), load_heads(resumed)
    assert a.meta() == b.meta() and a.attention_mode == "learned" and a.dim == 4
    for (name, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=name)
    fresh = load_heads(train_delg(tmp_path / "data", tmp_path / "two" / "h.pt", epochs=1,
                                  resume=False, **kw))
    assert not torch.equal(fresh.whiten.weight, a.whiten.weight)  # 1 epoch differs from 3
