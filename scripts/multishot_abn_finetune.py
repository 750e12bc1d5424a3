"""The ABN network fine-tuned on each multi-shot trial's training half (CAVIAR4REID), with its
temporal attention trained there too, then scored with mean, max and attention pooling.

    OMP_NUM_THREADS=1 python scripts/multishot_abn_finetune.py CKPT [--trials 10]
        [--iterations 300] [--dataset ../shared/data/caviar4reid]

The trials are those of `tansaku eval reid --format multishot` (seed 0): half of the two-camera
persons train, the other half test, the one-camera persons are gallery distractors. For each
trial a copy of the network trained on PETA (`tansaku train-reid`, CKPT) gets fresh identity
layers for the training persons and is fine-tuned on their frames of both cameras
(`indexer.models.reid_abn.train.finetune`, P x K = 16 x 4, a person's K frames spread over the
cameras). Its temporal attention is then trained on the same frames (`train_temporal`: each
frame as it is or from a shrunk copy, through the fine-tuned classifier). Every frame of the set is
described by the trial's network, and `evaluate_multishot` scores each trial on its own features
(K = 1, 5 and all frames; euclidean and XQDA learned on the training half). Nothing of the test
persons is seen in training. One JSON line per setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scripts.eval_abn import DATA, l2  # noqa: E402


def main() -> None:
    """Fine-tune per trial, then score every pooling on the trials' own features."""
    import torch

    from engine.evaluation.multishot import (
        evaluate_multishot,
        load_multishot,
        multishot_splits,
        tracklets,
    )
    from indexer.models.reid_abn.data import TrainingSet
    from indexer.models.reid_abn.model import load_abn
    from indexer.models.reid_abn.train import (
        RECIPES,
        cache_low_res,
        cache_mid_maps,
        embed_maps,
        finetune,
        train_temporal,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--dataset", type=Path, default=DATA / "caviar4reid")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/abn-eval-cache"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")

    persons = load_multishot(args.dataset)
    pids, cams = persons.pids, persons.camids
    track, _, _ = tracklets(pids, cams)
    trained, _ = load_abn(args.ckpt)
    data = TrainingSet(persons.paths, pids.astype(np.int64), track.astype(np.int64), ())
    cache = args.cache / f"{args.dataset.name}-maps"
    m4, m5, kept = cache_mid_maps(trained, data, cache, cpu)
    if len(kept) != len(pids):
        raise OSError("unreadable images in the dataset; see the log")
    heights, (low4, low5), low_heights = cache_low_res(trained, data, kept, cache, cpu)
    recipe = dict(RECIPES["full"])
    recipe.update({"iterations": args.iterations, "p": 16, "k": 4, "cross_track": True})
    splits, _ = multishot_splits(pids, cams, args.trials, 0)
    embs, scores = [], []
    for t, (train_ids, _) in enumerate(splits):
        train = np.isin(pids, train_ids)
        model = copy.deepcopy(trained)
        start = time.perf_counter()
        finetune(model, (m4[train], m5[train]), pids[train], track[train], recipe, seed=t)
        generator = torch.Generator().manual_seed(t)
        clean = embed_maps(model, (m4[:, 0], m5[:, 0]), cpu)
        versions = np.stack([clean[train], embed_maps(model, (low4[train], low5[train]), cpu)])
        labels = np.unique(pids[train], return_inverse=True)[1]
        temporal, _ = train_temporal(versions, np.stack([heights, low_heights])[:, train],
                                     labels, track[train], model.classifier, RECIPES["full"],
                                     generator)
        with torch.no_grad():
            scores.append(temporal.scores(torch.from_numpy(heights)).numpy().astype(np.float64))
        embs.append(l2(clean.astype(np.float64)))
        print(json.dumps({"trial": t, "seconds": round(time.perf_counter() - start, 1)}),
              flush=True)
    features, frame_scores = np.stack(embs), np.stack(scores)
    for metric in ("euclidean", "xqda"):
        for shots in (1, 5, None):
            for pooling in ("mean",) if shots == 1 else ("mean", "max", "attention"):
                r = evaluate_multishot(features, persons, metric, args.trials, shots=shots,  # type: ignore[arg-type]
                                       pooling=pooling, frame_scores=frame_scores,  # type: ignore[arg-type]
                                       method=f"{args.ckpt.name}-finetuned+{metric}")
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
