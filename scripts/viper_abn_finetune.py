"""The ABN network (or its baseline) fine-tuned on each VIPeR trial's training half, then scored.

    OMP_NUM_THREADS=1 python scripts/viper_abn_finetune.py CKPT [--trials 10] [--iterations 400]
        [--save-first runs/abn-viper-trial0.pt] [--unfreeze-stem] [--first-trial 0]
        [--save-embeddings DIR] [--fusion-weight inner|W]
    OMP_NUM_THREADS=1 python scripts/viper_abn_finetune.py CKPT --from-embeddings DIR [...]

The trials are those of `tansaku eval reid --format viper` (seed 0). For each trial a copy of the
network trained on PETA (`tansaku train-reid`, CKPT) gets fresh identity layers for the trial's 316
training persons and is fine-tuned on their 632 images (`indexer.models.reid_abn.train.finetune`:
the training recipe's loss and schedule, P x K = 32 x 2 so each person's two cameras are in every
batch; the ImageNet stem's maps of VIPeR are cached once, as in training). The test half is then
described by the fine-tuned network and scored. Nothing of the test half is seen in fine-tuning
or in choosing anything. One JSON line per trial and method, then the means. The methods:

- `euclidean`, `xqda`: the network alone (XQDA learned on the training half);
- `gog+xqda`: feature-level fusion with GOG, as `scripts/eval_abn.py viper` scores a fixed
  network (GOG's normaliser on the GOG block, training-mean removal + L2 on the network block,
  one XQDA);
- `gog`: GOG + XQDA alone, on the same trials (the reference);
- `gog+score`: score-level fusion. Each query's GOG+XQDA distances and its euclidean distances
  under the network are standardised over the gallery (zero mean, unit deviation per query row)
  and added, the network's with weight w. With `--fusion-weight inner` (the default) w is chosen
  per trial by inner validation on the training half only: its persons are split in two, a copy
  of CKPT is fine-tuned on one half (the same epochs: half the iterations), GOG's XQDA is learned
  on that half, and the w of `FUSION_WEIGHTS` with the best mAP on the other half (cam_a probes
  cam_b) is used on the test half. That adds about half again to the time per trial.

`--unfreeze-stem` also trains ImageNet stages 5 and 6, from the cached stage-4 maps (slower: 8-14
minutes a trial on one thread, against 3-4 without). `--save-first` keeps trial 0's fine-tuned
network as a checkpoint `abn:CKPT` loads (for heat maps and the masking check on that trial's test
persons). `--from-embeddings DIR` scores the embeddings an earlier run saved with
`--save-embeddings` instead of fine-tuning again (the inner validation still fine-tunes its copies,
so pass the same CKPT, `--iterations` and `--unfreeze-stem` as that run).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scripts.eval_abn import DATA, FusionNormalizer, gog_features, l2  # noqa: E402

FUSION_WEIGHTS = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)  # the network's, GOG's is 1


def standardized(dist: np.ndarray) -> np.ndarray:
    """Each query row of a distance matrix at zero mean and unit deviation over the gallery."""
    mean = dist.mean(axis=1, keepdims=True)
    std = dist.std(axis=1, keepdims=True)
    return (dist - mean) / np.maximum(std, 1e-12)


class Split:
    """Which rows of VIPeR learn (`train`) and which are probes (`q`) and gallery (`g`)."""

    def __init__(self, pids: np.ndarray, cams: np.ndarray, train_ids: np.ndarray,
                 test_ids: np.ndarray) -> None:
        self.pids, self.cams = pids, cams
        self.train = np.isin(pids, train_ids)
        test = np.isin(pids, test_ids)
        self.q, self.g = test & (cams == 0), test & (cams == 1)

    def distances(self, metric: str, X: np.ndarray) -> np.ndarray:
        """Probe x gallery distances under `metric`, learned on the training rows."""
        from engine.evaluation.reid_protocols import _distances

        t = self.train
        return _distances(metric, X[t], self.pids[t], self.cams[t], X[self.q], X[self.g])

    def score(self, dist: np.ndarray) -> Any:
        """CMC and mAP of probe x gallery distances."""
        from engine.evaluation.reid_metrics import evaluate_rank
        from engine.evaluation.reid_protocols import MAX_RANK

        q, g = self.q, self.g
        return evaluate_rank(dist, self.pids[q], self.pids[g], self.cams[q], self.cams[g], MAX_RANK)


def gog_distances(gog: np.ndarray, split: Split) -> np.ndarray:
    """GOG + XQDA (GOG's normaliser fitted on the training rows)."""
    from engine.evaluation.reid_protocols import _normalized
    from indexer.extractors.gog import GOGNormalizer

    return split.distances("xqda", _normalized(GOGNormalizer, gog, split.train))


def score_fusion(gog_dist: np.ndarray, net_dist: np.ndarray, weight: float) -> np.ndarray:
    """GOG+XQDA and the network's distances, each standardised per query, the network's weighted."""
    return standardized(gog_dist) + weight * standardized(net_dist)


def trial_distances(emb: np.ndarray, gog: np.ndarray | None, split: Split,
                    weight: float | None) -> dict[str, np.ndarray]:
    """Probe x gallery distances of one trial for each way of using the network's embeddings."""
    from engine.evaluation.reid_protocols import _normalized

    out = {"euclidean": split.distances("euclidean", l2(emb)),
           "xqda": split.distances("xqda", l2(emb))}
    if gog is not None:
        fused = np.concatenate([gog, emb], axis=1)
        out["gog+xqda"] = split.distances(
            "xqda", _normalized(lambda: FusionNormalizer(gog.shape[1]), fused, split.train))
        out["gog"] = gog_distances(gog, split)
        if weight is not None:
            out["gog+score"] = score_fusion(out["gog"], out["euclidean"], weight)
    return out


class Finetuner:
    """Copies of the PETA network fine-tuned on rows of VIPeR, from its cached stem maps."""

    def __init__(self, args: argparse.Namespace, paths: tuple[Path, ...], pids: np.ndarray,
                 cams: np.ndarray) -> None:
        import torch

        from indexer.models.reid_abn.data import TrainingSet
        from indexer.models.reid_abn.model import load_abn
        from indexer.models.reid_abn.train import RECIPES, cache_low_maps, cache_mid_maps

        self.pids, self.cams = pids, cams
        self.flip = args.flip
        self.trained, _ = load_abn(args.ckpt)
        viper = TrainingSet(paths, pids.astype(np.int64), cams.astype(np.int64), ())
        self.device = torch.device("cpu")
        maps_dir = args.cache / "viper-maps"
        if args.unfreeze_stem:
            m3, kept = cache_low_maps(self.trained, viper, maps_dir, self.device)
            self.maps: tuple[np.ndarray, ...] = (m3,)
        else:
            m4, m5, kept = cache_mid_maps(self.trained, viper, maps_dir, self.device)
            self.maps = (m4, m5)
        if len(kept) != len(pids):
            raise OSError("unreadable VIPeR images; see the log")
        self.recipe = dict(RECIPES["full"])
        self.recipe.update({"iterations": args.iterations, "p": 32, "k": 2,
                            "pretrained_lr_mult": args.pretrained_lr_mult})

    def run(self, rows: np.ndarray, seed: int, iterations: int | None = None
            ) -> tuple[Any, np.ndarray, dict[str, Any]]:
        """A copy fine-tuned on `rows` (a mask): the network, its embeddings of every image and of
        its mirror image (N, 2, D), and the run's facts (seconds, CPU seconds, final loss)."""
        from indexer.models.reid_abn.train import embed_maps, finetune

        recipe = dict(self.recipe)
        if iterations is not None:
            recipe["iterations"] = iterations
        model = copy.deepcopy(self.trained)
        wall, cpu = time.perf_counter(), time.process_time()
        history = finetune(model, tuple(m[rows] for m in self.maps), self.pids[rows],
                           self.cams[rows], recipe, seed=seed)
        facts = {"finetune_seconds": round(time.perf_counter() - wall, 1),
                 "finetune_cpu_seconds": round(time.process_time() - cpu, 1),
                 "final_loss": round(history[-1]["total"], 4)}
        emb = np.stack([embed_maps(model, tuple(m[:, o] for m in self.maps), self.device)
                        for o in (0, 1)], axis=1)
        return model, emb.astype(np.float64), facts

    def inner_weight(self, gog: np.ndarray, train_ids: np.ndarray, trial: int
                     ) -> tuple[float, dict[str, float]]:
        """The score-fusion weight chosen on the training half alone (see the module docstring):
        the weight and the validation mAP of each weight tried."""
        order = np.random.default_rng(1000 + trial).permutation(np.sort(train_ids))
        fit_ids, val_ids = order[:len(order) // 2], order[len(order) // 2:]
        inner = Split(self.pids, self.cams, fit_ids, val_ids)
        _, emb, _ = self.run(inner.train, seed=trial, iterations=self.recipe["iterations"] // 2)
        gog_dist = gog_distances(gog, inner)
        net_dist = inner.distances("euclidean", l2(descriptor(emb, self.flip)))
        maps = {w: float(inner.score(score_fusion(gog_dist, net_dist, w)).mAP)
                for w in FUSION_WEIGHTS}
        best = max(FUSION_WEIGHTS, key=lambda w: (maps[w], -w))  # ties: the smaller weight
        return best, {str(w): round(100 * m, 2) for w, m in maps.items()}


def descriptor(emb: np.ndarray, flip: bool) -> np.ndarray:
    """A run's (N, 2, D) embeddings of each image and its mirror -> (N, D): their mean (test-time
    flip averaging, as `describe_frames`) or the image's alone."""
    return emb.mean(axis=1) if flip else emb[:, 0]


def load_embeddings(folder: Path, trial: int, n: int) -> np.ndarray | None:
    """(N, 2, D) embeddings a run saved for `trial`, or None; runs before flip averaging saved
    the image's alone (N, D), returned as (N, 1, D), which only `--no-flip` can score."""
    path = folder / f"trial{trial}.npy"
    if not path.is_file():
        return None
    emb = np.load(path).astype(np.float64)
    if len(emb) != n:
        raise ValueError(f"{path}: {len(emb)} embeddings for {n} VIPeR images")
    return emb if emb.ndim == 3 else emb[:, None]


def fusion_weight(text: str) -> str:
    """`--fusion-weight`: 'inner', 'none' or a non-negative number (argparse names a bad one)."""
    if text in ("inner", "none"):
        return text
    try:
        ok = float(text) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'inner', 'none' or a weight >= 0")
    return text


def main() -> None:
    """Fine-tune (or load), describe and score each trial."""
    import torch

    from engine.evaluation.reid_protocols import _report, load_viper, viper_splits
    from indexer.models.reid_abn.model import CHECKPOINT_FORMAT

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
    parser.add_argument("--from-embeddings", type=Path, default=None,
                        help="score the embeddings --save-embeddings wrote (no fine-tuning)")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="describe each image alone (the default adds its mirror image's "
                        "embedding: test-time flip averaging)")
    parser.add_argument("--fusion-weight", default="inner", type=fusion_weight,
                        help="score fusion: 'inner' (chosen on the training half), a number, or "
                        "'none' (no score fusion: no inner fine-tuning)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    persons = load_viper(args.root / "viper")
    pids, cams = persons.pids, persons.camids
    gog = gog_features(persons, args.cache) if args.gog else None
    inner = args.fusion_weight == "inner" and gog is not None
    fixed = None if args.fusion_weight in ("inner", "none") else float(args.fusion_weight)
    tuner = (Finetuner(args, persons.paths, pids, cams)
             if args.from_embeddings is None or inner else None)
    label = args.from_embeddings.name if args.from_embeddings else f"{args.ckpt.name}-finetuned"
    rows: dict[str, list] = {}
    done = []
    for t, (train_ids, test_ids) in enumerate(viper_splits(pids, args.trials, 0)):
        if t < args.first_trial:
            continue
        split = Split(pids, cams, train_ids, test_ids)
        facts: dict[str, Any] = {"trial": t}
        if args.from_embeddings is not None:
            both = load_embeddings(args.from_embeddings, t, len(pids))
            if both is None:
                print(f"no embeddings for trial {t} in {args.from_embeddings}", file=sys.stderr)
                continue
            if args.flip and both.shape[1] == 1:
                raise SystemExit(f"{args.from_embeddings}: saved without mirror images; "
                                 "score them with --no-flip")
        else:
            assert tuner is not None
            model, both, run_facts = tuner.run(split.train, seed=t)
            facts.update(run_facts)
            if args.save_embeddings is not None:
                args.save_embeddings.mkdir(parents=True, exist_ok=True)
                np.save(args.save_embeddings / f"trial{t}.npy", both.astype(np.float32))
            if t == 0 and args.save_first is not None:
                torch.save({"format": CHECKPOINT_FORMAT, "config": model.config(),
                            "model": model.state_dict(), "temporal": None, "complete": True,
                            "identities": [f"viper/{i}" for i in train_ids],
                            "recipe": tuner.recipe, "finetuned_from": str(args.ckpt),
                            "unfreeze_stem": args.unfreeze_stem}, args.save_first)
        emb = descriptor(both, args.flip)
        weight = fixed
        if inner:
            assert tuner is not None and gog is not None
            start = time.perf_counter()
            weight, validation = tuner.inner_weight(gog, train_ids, t)
            facts.update({"fusion_weight": weight, "inner_validation_mAP": validation,
                          "inner_seconds": round(time.perf_counter() - start, 1)})
        elif weight is not None:
            facts["fusion_weight"] = weight
        for name, dist in trial_distances(emb, gog, split, weight).items():
            scores = split.score(dist)
            rows.setdefault(name, []).append(scores)
            print(json.dumps({**_report("viper", f"trial {t}", f"{label}+{name}", [scores]),
                              **facts}), flush=True)
        done.append(t)
    if not done:
        raise SystemExit("no trial was scored")
    stages = "stages 5-7 and the head" if args.unfreeze_stem else "stage 7 and the head"
    stages += "; image + mirror embeddings" if args.flip else "; image embeddings alone"
    weight_text = {"inner": "score-fusion weight chosen per trial on its training half",
                   "none": "no score fusion"}.get(args.fusion_weight,
                                                  f"score-fusion weight {args.fusion_weight}")
    protocol = (f"316/316 persons, seed-0 trials {done}, cam_a probes cam_b; fine-tuned "
                f"{args.iterations} iterations (P x K 32 x 2, {stages}) on each trial's training "
                f"half; {weight_text}")
    for name, results in rows.items():
        print(json.dumps(_report("viper", protocol, f"{label}+{name}", results)), flush=True)


if __name__ == "__main__":
    main()
