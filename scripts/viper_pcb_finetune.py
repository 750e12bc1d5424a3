"""PCB fine-tuned on each VIPeR trial's training half, then XQDA, scored on the test half.

    OMP_NUM_THREADS=1 python scripts/viper_pcb_finetune.py --trials 1 --epochs 8 [--input 256 128]
        [--batch-size 32]

The trials are those of `tansaku eval reid --format viper` (seed 0). For each trial the 316
training identities are linked into a Market-1501-style folder (`PPPP_cCs1_...bmp`, person id + 1
so none is 0) and `indexer.extractors.pcb_train.train_pcb` fine-tunes the ImageNet PCB on them
(resumable per epoch; the learning-rate step at 2/3 of the epochs). Its stripe features of every
image then go through XQDA learned on the same training half. Prints one JSON line per trial
(plain and k-reciprocal re-ranked, the training's wall and CPU seconds: those of this process, so
of a trial resumed from a checkpoint only its remaining epochs) and the mean over the trials run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scripts.bench_transfer import CACHE, DATA  # noqa: E402
from scripts.bench_viper import read_rgb  # noqa: E402


def main() -> None:
    """Fine-tune, describe and score each trial."""
    from engine.evaluation.reid_metrics import evaluate_rank
    from engine.evaluation.reid_protocols import MAX_RANK, _report, load_viper, viper_splits
    from indexer.extractors.pcb import load_pcb, pcb_batch
    from indexer.extractors.pcb_train import train_pcb
    from indexer.projections.xqda import XQDA, quadratic_distance
    from matcher.kreciprocal import k_reciprocal_rerank

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--input", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--root", type=Path, default=DATA / "viper")
    parser.add_argument("--out", type=Path, default=CACHE / "pcb")
    args = parser.parse_args()

    persons = load_viper(args.root)
    pids, camids = persons.pids, persons.camids
    images = read_rgb(persons.paths)
    plain, reranked = [], []
    for t, (train_ids, test_ids) in enumerate(viper_splits(pids, args.trials, 0)):
        train = np.isin(pids, train_ids)
        folder = args.out / f"trial{t}" / "bounding_box_train"
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(train):
            link = folder / f"{pids[i] + 1:04d}_c{camids[i] + 1}s1_{i:06d}_00.bmp"
            if not link.exists():
                link.symlink_to(persons.paths[i].resolve())
        wall, cpu = time.perf_counter(), time.process_time()
        ckpt = train_pcb(folder.parent, args.out / f"trial{t}" / "run", epochs=args.epochs,
                         batch_size=args.batch_size, step_size=max(1, 2 * args.epochs // 3),
                         input_size=tuple(args.input))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        X = pcb_batch(images, load_pcb(ckpt)).astype(np.float64)
        test = np.isin(pids, test_ids)
        q, g = test & (camids == 0), test & (camids == 1)
        model = XQDA().fit(X[train], pids[train], camids[train])
        assert model.M_ is not None
        Pq, Pg = model.project(X[q]), model.project(X[g])
        d = [quadratic_distance(a, b, model.M_) for a, b in ((Pq, Pg), (Pq, Pq), (Pg, Pg))]
        rank_args = (pids[q], pids[g], camids[q], camids[g], MAX_RANK)
        plain.append(evaluate_rank(d[0], *rank_args))
        reranked.append(evaluate_rank(k_reciprocal_rerank(*d), *rank_args))
        row = _report("viper", f"trial {t}", "pcb-finetuned+xqda", plain[-1:])
        row.update({"trial": t, "rank1_kreciprocal": round(100 * float(reranked[-1].cmc[0]), 2),
                    "train_seconds": round(wall, 1), "train_cpu_seconds": round(cpu, 1)})
        print(json.dumps(row), flush=True)
    protocol = (f"316/316 persons x {len(plain)} of the seed-0 trials, cam_a probes cam_b; PCB "
                f"fine-tuned {args.epochs} epochs at {args.input[0]}x{args.input[1]}, batch "
                f"{args.batch_size}, per trial")
    for results, suffix in ((plain, ""), (reranked, "+kreciprocal")):
        print(json.dumps(_report("viper", protocol, f"pcb-finetuned+xqda{suffix}", results)))


if __name__ == "__main__":
    main()
