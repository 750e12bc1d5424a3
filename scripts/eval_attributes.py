"""PETA attribute protocols on cached trunk maps: both heads on the 5 pool partitions and with each
subset left out of training. Resumable: each finished run is a line of OUT (JSON), skipped when
re-run; the run in progress resumes from its checkpoint.

    OMP_NUM_THREADS=1 python scripts/eval_attributes.py ../shared/data/peta runs/attr \
        --protocol pool --heads plain cnn-rnn --partitions 0 1 2 3 4
    OMP_NUM_THREADS=1 python scripts/eval_attributes.py ../shared/data/peta runs/attr --protocol loso
    python scripts/eval_attributes.py ../shared/data/peta runs/attr --summary   # mean and spread

The pool is PETA's subsets here with at most `--per-person` images of each person (default 8: the
video subsets hold dozens of near-identical frames per person).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from engine.evaluation.attributes import scores_json, split_indices
from indexer.models.attributes.cache import trunk_maps
from indexer.models.attributes.peta import PETA35, load_peta
from indexer.models.attributes.train import TrainConf, train_attribute_head

KEYS = ("mA", "accuracy", "precision", "recall", "F1")


def run_one(data, maps, aug, split: str, conf: TrainConf, out: Path) -> dict:
    train, val, test = split_indices(data, split, conf.seed)
    views = [maps[train]] + ([aug[train]] if conf.augment and aug is not None else [])
    cols = np.array([data.names.index(n) for n in PETA35])
    tag = (f"{conf.head}{'-aug' if conf.augment else ''}{'-ft' if conf.finetune else ''}"
           f"-{split.replace(':', '-')}")
    start = time.monotonic()
    model = train_attribute_head(views, data.labels[train], maps[val], data.labels[val], data.names,
                                 conf, out / f"{tag}.ckpt", cols)
    seconds = time.monotonic() - start
    model.save(out / f"{tag}.pt")
    t0 = time.monotonic()
    _, pred = model.from_maps(maps[test])
    predict_ms = 1000 * (time.monotonic() - t0) / len(test)
    result = {"head": conf.head, "augment": conf.augment, "finetune": conf.finetune, "split": split,
              "epochs": conf.epochs,
              "train_images": len(train), "train_seconds": round(seconds, 1),
              "predict_ms_per_image_from_maps": round(predict_ms, 2),
              "best_val_mA": model.meta["best_val_mA"],
              **scores_json(data.labels[test], pred, data.names), "per_subset": {}}
    for subset in sorted(set(data.subsets[test].tolist())):
        rows = data.subsets[test] == subset
        if rows.sum() >= 20:
            result["per_subset"][subset] = scores_json(data.labels[test][rows], pred[rows], data.names)
    return result


def summary(lines: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in lines:
        proto = r["split"].split(":")[0]
        groups.setdefault((proto, r["head"], r["augment"], r.get("finetune", False)), []).append(r)
    for (proto, head, aug, ft), rs in sorted(groups.items()):
        label = f"{proto:9s} {head:8s} aug={aug!s:5s} finetune={ft!s:5s} n={len(rs)}"
        stats = "  ".join(
            f"{k} {np.mean([r[k] for r in rs]):.2f}±{np.std([r[k] for r in rs]):.2f}" for k in KEYS)
        print(f"{label}  {stats}")
        if proto == "leave-out":
            for r in rs:
                print(f"    {r['split']:24s} " + "  ".join(f"{k} {r[k]:.2f}" for k in KEYS))
        else:
            subsets = sorted({s for r in rs for s in r["per_subset"]})
            for s in subsets:
                vals = [r["per_subset"][s] for r in rs if s in r["per_subset"]]
                print(f"    {s:24s} " + "  ".join(
                    f"{k} {np.mean([v[k] for v in vals]):.2f}±{np.std([v[k] for v in vals]):.2f}"
                    for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peta", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cache", type=Path, default=None, help="trunk-map cache (default OUT/cache)")
    parser.add_argument("--protocol", choices=("pool", "loso"), default="pool")
    parser.add_argument("--heads", nargs="+", default=["plain", "cnn-rnn"])
    parser.add_argument("--partitions", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--subsets", nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 plain, 6 cnn-rnn")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--finetune", action="store_true", help="also train the head convolution")
    parser.add_argument("--per-person", type=int, default=8)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = args.out / "results.jsonl"
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    if args.summary:
        summary(done)
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_peta(args.peta, per_person=args.per_person)
    cache = args.cache or args.out / "cache"
    maps = trunk_maps(data.paths, cache)
    aug = trunk_maps(data.paths, cache, view="aug-1") if args.augment else None
    splits = ([f"pool:{k}" for k in args.partitions] if args.protocol == "pool" else
              [f"leave-out:{s}" for s in (args.subsets or sorted(set(data.subsets.tolist())))])
    for split in splits:
        for head in args.heads:
            epochs = args.epochs or (20 if head == "plain" else 6)
            if any(r["split"] == split and r["head"] == head and r["augment"] == args.augment
                   and r["epochs"] == epochs and r.get("finetune", False) == args.finetune for r in done):
                continue
            conf = TrainConf(head=head, epochs=epochs, augment=args.augment, finetune=args.finetune)
            result = run_one(data, maps, aug, split, conf, args.out)
            logging.info("%s", json.dumps({k: result[k] for k in ("head", "split", *KEYS)}))
            with results.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            done.append(result)


if __name__ == "__main__":
    main()
