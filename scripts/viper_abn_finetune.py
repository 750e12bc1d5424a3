"""The ABN network (or its baseline) fine-tuned on each VIPeR trial's training half, then scored.

    OMP_NUM_THREADS=1 python scripts/viper_abn_finetune.py CKPT [--trials 10] [--iterations 400]
        [--save-first runs/abn-viper-trial0.pt] [--unfreeze-stem] [--first-trial 0]
        [--save-embeddings DIR]

The trials are those of `tansaku eval reid --format viper` (seed 0). For each trial a copy of the
network trained on PETA (`tansaku train-reid`, CKPT) gets fresh identity layers for the trial's 316
training persons and is fine-tuned on their 632 images (`indexer.models.reid_abn.train.finetune`:
the training recipe's loss and schedule, P x K = 32 x 2 so each person's two cameras are in every
batch; the ImageNet stem's maps of VIPeR are cached once, as in training). The test half is then
described by the fine-tuned network and scored as `scripts/eval_abn.py viper` scores a fixed
network: euclidean, XQDA learned on the training half, and fused with GOG (GOG's normaliser on the
GOG block, training-mean removal + L2 on the network block, one XQDA). Nothing of the test half is
seen in fine-tuning. One JSON line per trial and method, then the means.

`--unfreeze-stem` also trains ImageNet stages 5 and 6, from the cached stage-4 maps (slower: about
14 minutes a trial on one thread, against 3-4 without). `--save-first` keeps trial 0's fine-tuned
network as a checkpoint `abn:CKPT` loads (for heat maps and the masking check on that trial's
test persons).
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

from scripts.eval_abn import DATA, FusionNormalizer, gog_features, l2  # noqa: E402


def main() -> None:
    """Fine-tune, describe and score each trial."""
    import torch

    from engine.evaluation.reid_metrics import evaluate_rank
    from engine.evaluation.reid_protocols import (
        MAX_RANK,
        _distances,
        _normalized,
        _report,
        load_viper,
        viper_splits,
    )
    from indexer.models.reid_abn.data import TrainingSet
    from indexer.models.reid_abn.model import CHECKPOINT_FORMAT, load_abn
    from indexer.models.reid_abn.train import (
        RECIPES,
        cache_low_maps,
        cache_mid_maps,
        embed_maps,
        finetune,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--pretrained-lr-mult", type=float, default=0.5)
    parser.add_argument("--root", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/abn-eval-cache"))
    parser.add_argument("--save-first", type=Path, default=None)
    parser.add_argument("--no-gog", dest="gog", action="store_false")
    parser.add_argument("--unfreeze-stem", action="store_true",
                        help="also train ImageNet stages 5 and 6 (from cached stage-4 maps)")
    parser.add_argument("--first-trial", type=int, default=0,
                        help="skip the trials before this one (to split the runs over cores)")
    parser.add_argument("--save-embeddings", type=Path, default=None,
                        help="write each trial's embeddings of every image to this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)

    persons = load_viper(args.root / "viper")
    pids, cams = persons.pids, persons.camids
    gog = gog_features(persons, args.cache) if args.gog else None
    trained, _ = load_abn(args.ckpt)
    viper = TrainingSet(persons.paths, pids.astype(np.int64), cams.astype(np.int64), ())
    device = torch.device("cpu")
    if args.unfreeze_stem:
        m3, kept = cache_low_maps(trained, viper, args.cache / "viper-maps", device)
        maps: tuple[np.ndarray, ...] = (m3,)
    else:
        m4, m5, kept = cache_mid_maps(trained, viper, args.cache / "viper-maps", device)
        maps = (m4, m5)
    if len(kept) != len(pids):
        raise OSError("unreadable VIPeR images; see the log")
    recipe = dict(RECIPES["full"])
    recipe.update({"iterations": args.iterations, "p": 32, "k": 2,
                   "pretrained_lr_mult": args.pretrained_lr_mult})
    rows: dict[str, list] = {}
    for t, (train_ids, test_ids) in enumerate(viper_splits(pids, args.trials, 0)):
        if t < args.first_trial:
            continue
        train, test = np.isin(pids, train_ids), np.isin(pids, test_ids)
        q, g = test & (cams == 0), test & (cams == 1)
        model = copy.deepcopy(trained)
        wall, cpu = time.perf_counter(), time.process_time()
        history = finetune(model, tuple(m[train] for m in maps), pids[train], cams[train], recipe,
                           seed=t)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        emb = embed_maps(model, tuple(m[:, 0] for m in maps), device).astype(np.float64)
        if args.save_embeddings is not None:
            args.save_embeddings.mkdir(parents=True, exist_ok=True)
            np.save(args.save_embeddings / f"trial{t}.npy", emb.astype(np.float32))
        if t == 0 and args.save_first is not None:
            torch.save({"format": CHECKPOINT_FORMAT, "config": model.config(),
                        "model": model.state_dict(), "temporal": None, "complete": True,
                        "identities": [f"viper/{i}" for i in train_ids], "recipe": recipe,
                        "finetuned_from": str(args.ckpt), "unfreeze_stem": args.unfreeze_stem},
                       args.save_first)
        feats = {"euclidean": l2(emb), "xqda": l2(emb)}
        if gog is not None:
            fused = np.concatenate([gog, emb], axis=1)
            feats["gog+xqda"] = _normalized(lambda: FusionNormalizer(gog.shape[1]), fused, train)
        for name, X in feats.items():
            metric = "euclidean" if name == "euclidean" else "xqda"
            dist = _distances(metric, X[train], pids[train], cams[train], X[q], X[g])
            scores = evaluate_rank(dist, pids[q], pids[g], cams[q], cams[g], MAX_RANK)
            rows.setdefault(name, []).append(scores)
            row = _report("viper", f"trial {t}", f"{args.ckpt.name}-finetuned+{name}", [scores])
            row.update({"trial": t, "finetune_seconds": round(wall, 1),
                        "finetune_cpu_seconds": round(cpu, 1),
                        "final_loss": round(history[-1]["total"], 4)})
            print(json.dumps(row), flush=True)
    stages = "stages 5-7 and the head" if args.unfreeze_stem else "stage 7 and the head"
    protocol = (f"316/316 persons x {len(rows.get('euclidean', []))} of {args.trials} seed-0 "
                f"trials from trial {args.first_trial}, cam_a probes cam_b; fine-tuned "
                f"{args.iterations} iterations (P x K 32 x 2, {stages}) on each trial's "
                "training half")
    for name, results in rows.items():
        print(json.dumps(_report("viper", protocol, f"{args.ckpt.name}-finetuned+{name}",
                                 results)), flush=True)


if __name__ == "__main__":
    main()
