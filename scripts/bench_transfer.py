"""Benchmarks of the CNN-transfer person methods (issue 11): VIPeR table, Corel-1k transfer, timings.

    OMP_NUM_THREADS=1 python scripts/bench_transfer.py cache [--methods ...]     # VIPeR features
    OMP_NUM_THREADS=1 python scripts/bench_transfer.py viper [--rows ...] [--trials 10]
    OMP_NUM_THREADS=1 python scripts/bench_transfer.py select --rows ... [--repeats 3]  # inner validation
    OMP_NUM_THREADS=1 python scripts/bench_transfer.py corel
    OMP_NUM_THREADS=1 python scripts/bench_transfer.py cdpcf-time

Features are cached per method under --cache (default /tmp/tansaku-transfer), so every XQDA trial
reads them from disk; `cache` also records each method's extraction time per image (wall clock
and CPU time of the one thread: on a shared machine the CPU time is the comparable one). VIPeR rows
follow `tansaku eval reid --format viper` (10 random 316/316 trials, seed 0, cam_a probes cam_b);
every learned stage (GOG's normaliser, C-DPCF, XQDA) is fitted on the trial's training half only.
Each row prints one JSON line with its k-reciprocal re-ranked twin. `select` chooses among rows
without the test halves: inside each trial's training half, stages and XQDA fitted on half its
persons, the other half scored. A row `a|b` fuses at the score level, `0.5*a|b` with a weight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from scripts.bench_viper import read_rgb  # noqa: E402

_HERE = Path(__file__).resolve().parents[1]
DATA = next((p / "shared" / "data" for p in (_HERE.parent, _HERE.parent.parent)
             if (p / "shared" / "data").is_dir()), _HERE.parent / "shared" / "data")
CACHE = Path("/tmp/tansaku-transfer")
METHODS = ("layers", "layers-mbv2", "layers-gem", "fc", "svdfc", "svdcam", "mpncbp", "mpncbp-conv",
           "cdpcf", "cdpcf-mbv2", "gog")


def cache_viper(methods: list[str], root: Path, cache: Path, timing_images: int = 16) -> None:
    """Describe every VIPeR image by each method once and write the features; time each method
    alone on the first `timing_images` images (its own network passes included)."""
    from engine.evaluation.reid_protocols import load_viper
    from indexer.extractors import transfer
    from indexer.extractors.person import describe_persons

    persons = load_viper(root)
    images = read_rgb(persons.paths)
    cache.mkdir(parents=True, exist_ok=True)
    todo = [m for m in methods if not (cache / f"viper-{m}.npy").exists()]
    cnn = [m for m in todo if m in transfer.FROM_MAPS]
    if cnn:  # one pass of each network serves every CNN method
        blocks: dict[str, list[np.ndarray]] = {m: [] for m in cnn}
        for start in range(0, len(images), 64):
            for m, f in transfer.describe_many(images[start:start + 64], cnn).items():
                blocks[m].append(f)
        for m in cnn:
            _save(cache / f"viper-{m}.npy", np.concatenate(blocks[m]))
    for m in todo:
        if m not in cnn:
            _save(cache / f"viper-{m}.npy", describe_persons(m, images, batch_size=64))
    for m in methods:
        record_path = cache / f"viper-{m}.json"
        if record_path.exists():
            continue
        subset = images[:timing_images]
        describe_persons(m, subset[:2])  # load the model outside the timing
        t, cpu = time.perf_counter(), time.process_time()
        feats = describe_persons(m, subset, batch_size=64)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        record = {"method": m, "images_timed": len(subset), "dim": int(feats.shape[1]),
                  "ms_per_image": round(1000 * seconds / len(subset), 2),
                  "cpu_ms_per_image": round(1000 * cpu / len(subset), 2)}
        record_path.write_text(json.dumps(record))
        print(json.dumps(record), flush=True)


def _save(path: Path, feats: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(feats, np.float32))
    tmp.rename(path)
    print(json.dumps({"cached": path.name, "shape": list(feats.shape)}), flush=True)


# ----------------------------------------------------------------------------- VIPeR rows


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def load_part(name: str, cache: Path) -> np.ndarray:
    """Cached features of one method; `layers@s5` is one layer block of a multi-layer method."""
    base, _, layer = name.partition("@")
    feats = np.load(cache / f"viper-{base}.npy").astype(np.float64)
    if not layer:
        return feats
    from indexer.extractors.transfer import CHANNELS, LAYER_NAMES

    dims = CHANNELS["mbv2" if base == "layers-mbv2" else "eff"]
    i = LAYER_NAMES.index(layer)
    start = sum(dims[:i])
    return _l2(feats[:, start:start + dims[i]])


def load_method(
    method: str, cache: Path, part_l2: bool = True
) -> tuple[np.ndarray, tuple[int, ...]]:
    """A feature-level method's rows as `describe_persons` gives them (fusion: parts L2-normed)."""
    parts = [load_part(p, cache) for p in method.split("+")]
    dims = tuple(p.shape[1] for p in parts)
    if len(parts) == 1 or not part_l2:
        return parts[0], dims
    return np.concatenate([_l2(p) for p in parts], axis=1), dims


def group_distances(
    method: str, cache: Path, features: dict[str, Any], train: np.ndarray, q: np.ndarray,
    g: np.ndarray, pids: np.ndarray, camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XQDA (q_g, q_q, g_g) distances of one feature-level method, stages fitted on `train`,
    divided by the mean distance among the training images (so parts can be summed)."""
    from indexer.projections.person_stages import LEARNED_PARTS, PersonStages
    from indexer.projections.xqda import XQDA, quadratic_distance

    part_l2 = not method.endswith("!")  # "a+b!": parts as their own normalisers leave them
    method = method.rstrip("!")
    if method not in features:
        features[method] = load_method(method, cache, part_l2)
    X, dims = features[method]
    names = [p.partition("@")[0] for p in method.split("+")]
    if len(names) > 1 or any(n in LEARNED_PARTS for n in names):
        stages = PersonStages("+".join(names), dims, part_l2).fit(X[train], pids[train],
                                                                   camids[train])
        X = stages.transform(X, camids)
    model = XQDA().fit(X[train], pids[train], camids[train])
    assert model.M_ is not None
    Pq, Pg, Pt = model.project(X[q]), model.project(X[g]), model.project(X[train])
    M = model.M_
    scale = float(quadratic_distance(Pt, Pt, M).mean())  # training images only, no labels
    return (quadratic_distance(Pq, Pg, M) / scale, quadratic_distance(Pq, Pq, M) / scale,
            quadratic_distance(Pg, Pg, M) / scale)


def score_fusion(
    spec: str, cache: Path, features: dict[str, Any], train: np.ndarray, q: np.ndarray,
    g: np.ndarray, pids: np.ndarray, camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances of a score-level fusion `a|b` (each group's as `group_distances` scales them,
    summed); a group written `0.5*a` is weighted."""
    total = None
    for group in spec.split("|"):
        weight, star, name = group.partition("*")
        w, group = (float(weight), name) if star else (1.0, group)
        d = tuple(w * x for x in group_distances(group, cache, features, train, q, g, pids, camids))
        total = d if total is None else tuple(a + b for a, b in zip(total, d, strict=True))
    assert total is not None
    return total


def inner_splits(
    train_ids: np.ndarray, trial: int, repeats: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Halves of one trial's training identities (158/158 on VIPeR) for choosing a method
    without its test half: the first fits every stage, the second is scored."""
    ids = np.sort(np.asarray(train_ids))
    half = len(ids) // 2
    out = []
    for r in range(repeats):
        perm = np.random.default_rng([seed, trial, r]).permutation(ids)
        out.append((np.sort(perm[:half]), np.sort(perm[half:])))
    return out


def select_row(
    spec: str, persons: Any, cache: Path, trials: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Inner-validation scores of one row: in each trial's training half only, stages and XQDA
    fitted on one half of its identities, cam_a probes cam_b on the other half. Nothing of the
    trial's test half is read."""
    from engine.evaluation.reid_metrics import evaluate_rank
    from engine.evaluation.reid_protocols import MAX_RANK, _report, viper_splits

    pids, camids = persons.pids, persons.camids
    features: dict[str, Any] = {}
    results = []
    t0 = time.perf_counter()
    for t, (train_ids, _test_ids) in enumerate(viper_splits(pids, trials, seed)):
        for fit_ids, val_ids in inner_splits(train_ids, t, repeats, seed):
            fit, val = np.isin(pids, fit_ids), np.isin(pids, val_ids)
            q, g = val & (camids == 0), val & (camids == 1)
            d = score_fusion(spec, cache, features, fit, q, g, pids, camids)
            results.append(evaluate_rank(d[0], pids[q], pids[g], camids[q], camids[g], MAX_RANK))
    protocol = (f"inner validation: {len(fit_ids)}/{len(val_ids)} of the 316 training persons of "
                f"each of {trials} trials (seed {seed}) x {repeats}, cam_a probes cam_b")
    row = _report("viper-inner", protocol, f"{spec}+xqda", results)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def viper_row(spec: str, persons: Any, cache: Path, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    """Scores of one row, plain and k-reciprocal re-ranked. `a|b`: score-level fusion of
    feature-level methods a and b (each part's distances divided by their mean over the training
    images, then summed)."""
    from engine.evaluation.reid_metrics import evaluate_rank
    from engine.evaluation.reid_protocols import MAX_RANK, _report, viper_splits
    from matcher.kreciprocal import k_reciprocal_rerank

    pids, camids = persons.pids, persons.camids
    features: dict[str, Any] = {}
    plain, reranked = [], []
    t0 = time.perf_counter()
    for train_ids, test_ids in viper_splits(pids, trials, seed):
        train = np.isin(pids, train_ids)
        test = np.isin(pids, test_ids)
        q, g = test & (camids == 0), test & (camids == 1)
        total = score_fusion(spec, cache, features, train, q, g, pids, camids)
        args = (pids[q], pids[g], camids[q], camids[g], MAX_RANK)
        plain.append(evaluate_rank(total[0], *args))
        reranked.append(evaluate_rank(k_reciprocal_rerank(*total), *args))
    seconds = round(time.perf_counter() - t0, 1)
    protocol = f"316/316 persons x {trials} random trials (seed {seed}), cam_a probes cam_b"
    rows = []
    for results, suffix in ((plain, ""), (reranked, "+kreciprocal")):
        row = _report("viper", protocol, f"{spec}+xqda{suffix}", results)
        row["seconds"] = seconds
        rows.append(row)
    return rows


VIPER_ROWS = (  # most telling first: the run is long on a shared machine
    "gog", "gog+lomo+cdpcf+cdpcf-mbv2", "gog|lomo|cdpcf+cdpcf-mbv2", "cdpcf", "gog+cdpcf", "gog|cdpcf",
    "layers", "layers-mbv2", "layers+layers-mbv2", "gog+layers+layers-mbv2", "gog|layers+layers-mbv2",
    "mpncbp", "gog+mpncbp", "fc", "svdfc", "svdcam", "mpncbp-conv", "layers-gem",
    "cdpcf-mbv2", "cdpcf+cdpcf-mbv2", "gog+cdpcf+cdpcf-mbv2", "gog|cdpcf+cdpcf-mbv2", "gog+layers",
    *(f"layers@{n}" for n in ("s2", "s3", "s4", "s5", "s6", "s7", "head")),
    *(f"layers-mbv2@{n}" for n in ("s2", "s3", "s4", "s5", "s6", "s7", "head")),
)


def viper_table(rows: list[str], root: Path, cache: Path, trials: int, out: Path | None) -> None:
    """Print (and append to `out`) one JSON line per row and re-ranked twin."""
    from engine.evaluation.reid_protocols import load_viper

    persons = load_viper(root)
    for spec in rows:
        for row in viper_row(spec, persons, cache, trials):
            line = json.dumps(row)
            print(line, flush=True)
            if out is not None:
                with out.open("a") as f:
                    f.write(line + "\n")


# ----------------------------------------------------------------------------- Corel-1k


def corel_table(root: Path, cache: Path, folds: int = 5) -> None:
    """5-fold accuracy of a linear classifier (logistic regression) on each transferred feature."""
    import torch
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from indexer.extractors import transfer as T

    paths = sorted(root.glob("*.jpg"), key=lambda p: int(p.stem))
    labels = np.array([int(p.stem) // 100 for p in paths])
    size, grid = (224, 224), (7, 7)  # ImageNet input; both head maps are 7 x 7
    gap = T.pool
    extractors: dict[str, Any] = {
        "eff FC": T._fc,
        "eff SVD-FC": T._svdfc,
        "eff conv GAP": lambda m: gap(m["eff"][-1], "gap"),
        "mbv2 conv GAP": lambda m: gap(m["mbv2"][-1], "gap"),
        "eff+mbv2 conv GAP concatenated": lambda m: torch.cat(
            [F.normalize(gap(m["eff"][-1], "gap"), dim=1),
             F.normalize(gap(m["mbv2"][-1], "gap"), dim=1)], dim=1),
        "MPN-CBP eff SVD-CAM x mbv2 conv": lambda m: T._mpncbp(m, "svdcam", grid),
        "MPN-CBP eff conv x mbv2 conv": lambda m: T._mpncbp(m, "conv", grid),
    }
    files = {name: cache / f"corel-{name.replace(' ', '_')}.npy" for name in extractors}
    if not all(f.exists() for f in files.values()):
        images = read_rgb(tuple(paths))
        blocks: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
        for start in range(0, len(images), 50):
            chunk = images[start:start + 50]
            maps = {net: T.layer_maps(net, chunk, size) for net in ("eff", "mbv2")}
            with torch.inference_mode():
                for name, fn in extractors.items():
                    blocks[name].append(fn(maps).float().numpy())
        for name, f in files.items():
            np.save(f, np.concatenate(blocks[name]))
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    for name, path in files.items():
        X = _l2(np.load(path).astype(np.float64))
        clf = LogisticRegression(C=10.0, max_iter=2000)
        acc = cross_val_score(clf, X, labels, cv=cv)
        print(json.dumps({"feature": name, "dim": int(X.shape[1]), "accuracy": round(100 * acc.mean(), 2),
                          "std": round(100 * acc.std(), 2), "folds": folds}), flush=True)


# ----------------------------------------------------------------------------- C-DPCF timing


def cdpcf_time(root: Path, cache: Path, repeats: int = 3) -> None:
    """C-DPCF learning time on one VIPeR training half, with and without the random projection."""
    from engine.evaluation.reid_protocols import load_viper, viper_splits
    from indexer.extractors.transfer import cdpcf_map_shapes
    from indexer.projections.cdpcf import CDPCF

    persons = load_viper(root)
    train = np.isin(persons.pids, viper_splits(persons.pids, 1, 0)[0][0])
    for net, method in (("eff", "cdpcf"), ("mbv2", "cdpcf-mbv2")):
        X = np.load(cache / f"viper-{method}.npy")[train]
        for proj in (None, 64, 32):
            times = []
            for _ in range(repeats):
                t = time.process_time()
                CDPCF(cdpcf_map_shapes(net), proj_dim=proj).fit(X, persons.pids[train],
                                                                 persons.camids[train])
                times.append(time.process_time() - t)
            print(json.dumps({"method": method, "proj_dim": proj, "train_images": int(train.sum()),
                              "cpu_seconds": round(min(times), 3)}), flush=True)

def main() -> None:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--methods", nargs="+", default=list(METHODS))
    c.add_argument("--root", type=Path, default=DATA / "viper")
    c.add_argument("--cache", type=Path, default=CACHE)
    v = sub.add_parser("viper")
    v.add_argument("--rows", nargs="+", default=list(VIPER_ROWS))
    v.add_argument("--trials", type=int, default=10)
    v.add_argument("--root", type=Path, default=DATA / "viper")
    v.add_argument("--cache", type=Path, default=CACHE)
    v.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    s = sub.add_parser("select", help="inner validation inside each trial's training half")
    s.add_argument("--rows", nargs="+", required=True)
    s.add_argument("--trials", type=int, default=10)
    s.add_argument("--repeats", type=int, default=1, help="inner splits per trial")
    s.add_argument("--root", type=Path, default=DATA / "viper")
    s.add_argument("--cache", type=Path, default=CACHE)
    s.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    k = sub.add_parser("corel")
    k.add_argument("--root", type=Path, default=DATA / "corel1k")
    k.add_argument("--cache", type=Path, default=CACHE)
    t = sub.add_parser("cdpcf-time")
    t.add_argument("--root", type=Path, default=DATA / "viper")
    t.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    if args.command == "cache":
        cache_viper(args.methods, args.root, args.cache)
    elif args.command == "viper":
        viper_table(args.rows, args.root, args.cache, args.trials, args.out)
    elif args.command == "select":
        from engine.evaluation.reid_protocols import load_viper

        persons = load_viper(args.root)
        for spec in args.rows:
            line = json.dumps(select_row(spec, persons, args.cache, args.trials, args.repeats))
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(line + "\n")
    elif args.command == "corel":
        args.cache.mkdir(parents=True, exist_ok=True)
        corel_table(args.root, args.cache)
    else:
        cdpcf_time(args.root, args.cache)


if __name__ == "__main__":
    main()

