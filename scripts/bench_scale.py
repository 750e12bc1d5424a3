"""Approximate FAISS indexes at scale: recall@10 against exact search, single-query rate, memory and
build time per index type, on vectors drawn from a model fitted to real augmented GeM descriptors.

    OMP_NUM_THREADS=1 python scripts/extract_gem_augmented.py FOLDER... --cache DIR  # once
    OMP_NUM_THREADS=1 python scripts/bench_scale.py --descriptors DIR --n 1000000 --dim 1280 --json

The real descriptors (`--descriptors`, written by scripts/extract_gem_augmented.py): raw 1280-d GeM
vectors of B real images (the default landmark profile's global extractor, as a gallery computes
them before its whitening), each as it is (its "original") and in one or more augmented copies
(random crop, flip, colour jitter). An augmentation residual is an augmented copy's vector minus its
image's original.

The model of a gallery of N vectors (`DescriptorModel`): each vector is
`normalise((1 - t) o_i + t o_j + s r)`, where i is a real image drawn uniformly, j one of i's
`reach` nearest real images (cosine of originals), t ~ U(0, tau) a position between them (a new
image like its real neighbours), and r = g1 r1 + g2 r2 a random blend of two real augmentation
residuals, each of an image drawn from i and its 10 nearest images that have residuals (how such an
image changes in another shot), with (g1, g2) a random unit vector: as long as a real residual on
average, and never the same twice. So a large N holds many distinct vectors around each real image
and between it and its neighbours, none a copy of a real vector, with real augmentation noise on
each.

The parameters (tau, s, reach) are fitted on the real set's growth: a model built from half of the
real images (their originals, residuals and neighbours only) draws as many vectors as the whole
real set holds (all images, all copies), and the parameters are those of a grid whose
nearest-neighbour distances best match the real set's (least squares): the 10/50/90% quantiles of
the squared distance to the 1st, 10th and 100th neighbour of 1000 members, after each set's own
PCA-whitening (as indexed below). The same statistics for a model from a quarter of the images
(4x growth) are printed as a check of the extrapolation. Why this model and not a Gaussian mixture
(this script's first version): once PCA-whitened, a mixture fitted to a few hundred descriptors is
mostly isotropic noise, which no inverted file searches much faster than a full scan; the model
keeps the local structure of real images. What it cannot know is how real images 200 times denser
than those at hand would lie: the fit covers 2x growth, the check 4x, and the log shows both.

The N vectors are L2-normalised like GeM's and PCA-whitened as a gallery of that size would be
(learned from 20000 of them, `--dim` components, shrinkage 1), then L2-normalised: what the
gallery's FAISS index holds. They are written once to a temporary float32 file and each index is
built from it in chunks, one index at a time.

Each index type (`--types`; `flat` is always measured first: it gives the ground truth and the
exact single-query rate) is built as `storage.vector_index` builds a gallery's index (trained on
at most 64 vectors per list, `nprobe` tuned to recall@10 >= 0.95 on 500 held-back gallery
vectors), then measured on 200 other gallery vectors as queries (their own id left out): recall@10
against exact search, queries per second one query at a time, memory held (codes, ids,
centroids), build seconds (training and adding), and `curve`: [nprobe, recall@10, queries/s] on
the measuring queries for the ladder's steps from half to twice the tuned nprobe. `chosen` marks
the type `choose_spec` picks for this N and D. One JSON object per index type on stdout with
--json (one per line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from storage.vector_index import IndexSpec, VectorIndex, choose_spec, fast_scan_m

CHUNK = 50_000
NEIGHBOURS = 10


@dataclass
class RealSet:
    """Real descriptors: each image's original and its augmented copies' residuals."""

    originals: np.ndarray  # (B, D) float32
    residuals: np.ndarray  # (M, D) float32: augmented copy - original
    owner: np.ndarray  # (M,) image of each residual

    @property
    def size(self) -> int:
        """Real vectors in all: originals and augmented copies."""
        return len(self.originals) + len(self.residuals)

    def vectors(self) -> np.ndarray:
        """Every real vector (originals, then augmented copies)."""
        return np.concatenate([self.originals, self.residuals + self.originals[self.owner]])

    def subset(self, images: np.ndarray) -> RealSet:
        """The images `images` (indices) alone, renumbered."""
        renumber = np.full(len(self.originals), -1)
        renumber[images] = np.arange(len(images))
        keep = renumber[self.owner] >= 0
        return RealSet(self.originals[images], self.residuals[keep], renumber[self.owner[keep]])


def load_real(cache: Path) -> RealSet:
    """The descriptors scripts/extract_gem_augmented.py wrote to `cache` (complete chunks only)."""
    passes: dict[int, dict[int, np.ndarray]] = {}
    for path in sorted(cache.glob("pass*_*.npy")):
        if path.name.endswith(".tmp.npy"):
            continue
        p, chunk = (int(x) for x in path.stem[4:].split("_"))
        passes.setdefault(p, {})[chunk] = np.load(path)
    if 0 not in passes:
        raise SystemExit(f"no descriptors in {cache}: run scripts/extract_gem_augmented.py first")
    originals = np.concatenate([passes[0][c] for c in sorted(passes[0])])
    starts = np.cumsum([0] + [len(passes[0][c]) for c in sorted(passes[0])])
    residuals, owner = [], []
    for p in sorted(passes)[1:]:
        for chunk, rows in passes[p].items():
            ids = starts[chunk] + np.arange(len(rows))
            residuals.append(rows - originals[ids])
            owner.append(ids)
    res = np.concatenate(residuals) if residuals else np.zeros((0, originals.shape[1]), np.float32)
    own = np.concatenate(owner) if owner else np.zeros(0, np.int64)
    ok_res = np.isfinite(res).all(axis=1)
    real = RealSet(originals, res[ok_res].astype(np.float32), own[ok_res])
    readable = np.flatnonzero(np.isfinite(originals).all(axis=1))
    real = real.subset(readable)
    print(f"{len(real.originals)} real images, {len(real.residuals)} augmented copies "
          f"({len(passes) - 1} passes)", file=sys.stderr)
    return real


def _neighbours(originals: np.ndarray, among: np.ndarray, k: int, self_first: bool) -> np.ndarray:
    """For each original, the k nearest of `originals[among]` (cosine), as indices into originals;
    `self_first`: an image in `among` is its own first neighbour, else it is left out."""
    _, pos = faiss.knn(originals, np.ascontiguousarray(originals[among]), k + 1,
                       metric=faiss.METRIC_INNER_PRODUCT)
    found = among[pos]
    out = np.empty((len(originals), k), np.int64)
    for i, row in enumerate(found):
        rest = row[row != i]
        out[i] = np.concatenate([[i], rest])[:k] if self_first and i in row else rest[:k]
    return out


class DescriptorModel:
    """Real images, moved towards a real neighbour, plus real augmentation residuals (module
    docstring): `normalise((1 - t) o_i + t o_j + s r)`."""

    def __init__(self, real: RealSet, tau: float = 0.0, scale: float = 1.0, reach: int = 10) -> None:
        self.real, self.tau, self.scale = real, tau, scale
        b = len(real.originals)
        self.reach = min(reach, b - 1)
        self.near = _neighbours(real.originals, np.arange(b), self.reach, self_first=False)
        order = np.argsort(real.owner, kind="stable")
        self.by_image = order  # residual rows grouped by image
        counts = np.bincount(real.owner, minlength=b)
        self.first, self.count = np.cumsum(counts) - counts, counts
        with_residuals = np.flatnonzero(counts > 0)
        self.donors = _neighbours(real.originals, with_residuals, NEIGHBOURS + 1, self_first=True)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n vectors, L2-normalised, float32."""
        o = self.real.originals
        i = rng.integers(len(o), size=n)
        j = self.near[i, rng.integers(self.reach, size=n)]
        t = rng.uniform(0.0, self.tau, size=(n, 1)).astype(np.float32)
        r = np.zeros_like(o[i])
        g = rng.standard_normal((n, 2)).astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        for c in range(2):
            donor = self.donors[i, rng.integers(NEIGHBOURS + 1, size=n)]
            row = self.by_image[self.first[donor] + rng.integers(self.count[donor])]
            r += g[:, c:c + 1] * self.real.residuals[row]
        x = (1 - t) * o[i] + t * o[j] + np.float32(self.scale) * r
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def nn_stats(vectors: np.ndarray, dim: int | None, rng: np.random.Generator,
             queries: int = 1000) -> np.ndarray:
    """10/50/90% quantiles of the squared distance to the 1st, 10th and 100th neighbour of
    `queries` members, in the set's own whitened space: (3 ranks, 3 quantiles)."""
    from indexer.projections import pca_whitening

    w = pca_whitening.fit(vectors, min(dim or vectors.shape[1], len(vectors) - 1), whiten=True,
                          shrinkage=1.0).embed(vectors)
    q = rng.choice(len(w), min(queries, len(w)), replace=False)
    sims, _ = faiss.knn(np.ascontiguousarray(w[q]), w, 101, metric=faiss.METRIC_INNER_PRODUCT)
    dist = 2.0 - 2.0 * sims[:, [1, 10, 100]]  # column 0 is the query itself
    return np.quantile(dist, [0.1, 0.5, 0.9], axis=0).T


def fit_model(real: RealSet, dim: int | None, seed: int,
              taus: tuple[float, ...] = (0.25, 0.5, 1.0),
              scales: tuple[float, ...] = (0.75, 1.0, 1.25),
              reaches: tuple[int, ...] = (10, 100, 1000)) -> tuple[float, float, int]:
    """(tau, s, reach) whose model from half the real images best matches the whole real set's
    nearest-neighbour distances at the same size (module docstring)."""
    rng = np.random.default_rng(seed)
    target = nn_stats(real.vectors(), dim, np.random.default_rng(seed))
    order = rng.permutation(len(real.originals))
    print("real set: quantiles (10/50/90%) of squared distance to the 1st, 10th, 100th neighbour\n"
          f"  {np.round(target, 3).tolist()}", file=sys.stderr)
    best = (np.inf, 0.0, 1.0, 10)
    for reach in reaches:
        half = DescriptorModel(real.subset(np.sort(order[: len(order) // 2])), reach=reach)
        for tau in taus:
            for scale in scales:
                half.tau, half.scale = tau, scale
                stats = nn_stats(half.sample(real.size, np.random.default_rng(seed)), dim,
                                 np.random.default_rng(seed))
                loss = float(np.mean((stats - target) ** 2))
                print(f"  reach {reach} tau {tau:.2f} s {scale:.2f}: {np.round(stats, 3).tolist()} "
                      f"loss {loss:.5f}", file=sys.stderr)
                best = min(best, (loss, tau, scale, reach))
    _, tau, scale, reach = best
    quarter = DescriptorModel(real.subset(np.sort(order[: len(order) // 4])), tau, scale, reach)
    check = nn_stats(quarter.sample(real.size, np.random.default_rng(seed)), dim,
                     np.random.default_rng(seed))
    print(f"fitted reach {reach} tau {tau:.2f} s {scale:.2f}; from a quarter of the images "
          f"(4x growth): {np.round(check, 3).tolist()} "
          f"loss {float(np.mean((check - target) ** 2)):.5f}", file=sys.stderr)
    return tau, scale, reach


def write_vectors(model: DescriptorModel, n: int, dim: int | None, path: Path, seed: int) -> int:
    """Draw n vectors, whiten them as a gallery of n would be, write them to `path` (float32)."""
    from indexer.projections import pca_whitening

    rng = np.random.default_rng(seed)
    learn = model.sample(min(n, 20_000), rng)
    whitening = pca_whitening.fit(learn, dim, whiten=True, shrinkage=1.0)
    out_dim = int(whitening.embed(learn[:1]).shape[1])
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, out_dim))
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        store[start:stop] = whitening.embed(model.sample(stop - start, rng))
    store.flush()
    del store
    return out_dim


def single_query_rate(index: VectorIndex | faiss.Index, queries: np.ndarray, k: int = 10) -> float:
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], k)
    return len(queries) / (time.perf_counter() - start)


def build(
    spec: IndexSpec, vectors: np.ndarray, seed: int, per_list: int = 64
) -> tuple[VectorIndex, float]:
    """A gallery index of `vectors` (ids = positions) built in chunks, and the seconds it took."""
    start = time.perf_counter()
    obj = VectorIndex(vectors.shape[1], "ip")
    if spec.kind == "flat":
        for s in range(0, len(vectors), CHUNK):
            obj.index.add_with_ids(np.ascontiguousarray(vectors[s: s + CHUNK]),
                                   np.arange(s, min(s + CHUNK, len(vectors)), dtype=np.int64))
        return obj, time.perf_counter() - start
    rng = np.random.default_rng(seed)
    most = min(len(vectors), per_list * spec.nlist)
    obj = VectorIndex.trained(spec, vectors[np.sort(rng.choice(len(vectors), most, replace=False))],
                              "ip", seed)
    print(f"{spec.factory(vectors.shape[1])}: trained on {most} vectors in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    for s in range(0, len(vectors), CHUNK):  # new ids: no need for `add`'s removal of old ones
        chunk = np.ascontiguousarray(vectors[s: s + CHUNK])
        ids = np.arange(s, min(s + CHUNK, len(vectors)), dtype=np.int64)
        obj.index.add_with_ids(chunk, ids)
        if obj.refine is not None:
            obj.refine.add_with_ids(chunk, ids)
    return obj, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280, help="whitened dimension kept")
    parser.add_argument("--types", nargs="+", default=["ivf-fs-flat", "ivf-fs-sq8", "ivf-sq8", "ivfpq"],
                        help="ivf-fs-flat, ivf-fs-sq8 (fast-scan lists re-scored by float or SQ8 "
                             "vectors), ivf-flat, ivf-sq8 (plain lists), ivfpq (flat is always "
                             "measured)")
    parser.add_argument("--descriptors", type=Path, required=True,
                        help="the cache folder of scripts/extract_gem_augmented.py")
    parser.add_argument("--tau", type=float, default=None, help="skip the fit: use this tau")
    parser.add_argument("--scale", type=float, default=None, help="skip the fit: use this s")
    parser.add_argument("--reach", type=int, default=None, help="skip the fit: use this reach")
    parser.add_argument("--flat-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nlist", type=int, default=None,
                        help="inverted lists (default: what choose_spec picks for N)")
    parser.add_argument("--train-per-list", type=int, default=64,
                        help="k-means training vectors per list (the wiki: 30 to 256)")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="keep the drawn vectors in this .npy file, or reuse it if an earlier "
                             "run with the same arguments wrote it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    real = load_real(args.descriptors)
    t0 = time.perf_counter()
    if args.tau is None or args.scale is None or args.reach is None:
        tau, scale, reach = fit_model(real, args.dim, args.seed)
        print(f"model fitted in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    else:
        tau, scale, reach = args.tau, args.scale, args.reach
    model = DescriptorModel(real, tau, scale, reach)
    source = {"real_images": len(real.originals), "augmented_copies": len(real.residuals),
              "tau": tau, "s": scale, "reach": reach}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = args.vectors or Path(tmp) / "vectors.npy"
        t0 = time.perf_counter()
        if path.exists() and np.load(path, mmap_mode="r").shape[0] == args.n:
            dim = int(np.load(path, mmap_mode="r").shape[1])
            print(f"reusing {path}", file=sys.stderr)
        else:
            dim = write_vectors(model, args.n, args.dim, path, args.seed)
        print(f"{args.n} x {dim} vectors drawn in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        vectors = np.load(path, mmap_mode="r")
        rng = np.random.default_rng(args.seed + 1)
        # 500 held back for tuning, as VectorIndex.build does; 200 others measure
        picked = rng.choice(args.n, 700, replace=False)
        tune_ids, eval_ids = picked[:500], picked[500:]
        tune_q = np.ascontiguousarray(vectors[tune_ids])
        eval_q = np.ascontiguousarray(vectors[eval_ids])

        flat, flat_build = build(IndexSpec("flat"), vectors, args.seed)
        _, truth_tune = flat.index.search(tune_q, 11)
        _, truth_eval = flat.index.search(eval_q, 11)
        flat_qps = single_query_rate(flat.index, eval_q[: args.flat_queries])
        flat_mb = flat.memory_bytes() / 2**20
        del flat
        expected = [set(r[r != q][:10].tolist()) for r, q in zip(truth_eval, eval_ids, strict=True)]
        chosen = choose_spec(args.n, dim)
        results = [{"n": args.n, "dim": dim, "index": "Flat", "recall_at_10": 1.0,
                    "qps": round(flat_qps, 2), "flat_qps": round(flat_qps, 2), "speedup": 1.0,
                    "memory_mb": round(flat_mb, 1), "build_s": round(flat_build, 1),
                    "chosen": chosen.kind == "flat", "vectors": source}]
        _emit(results[-1], args.json)
        nlist = args.nlist or chosen.nlist or choose_spec(max(args.n, 10**6), dim).nlist
        hnsw = nlist >= 4096
        fs = f"PQ{fast_scan_m(dim)}x4fs"
        specs = {"ivf-fs-flat": IndexSpec("ivf", nlist, fs, hnsw_quantizer=hnsw, refine="Flat"),
                 "ivf-fs-sq8": IndexSpec("ivf", nlist, fs, hnsw_quantizer=hnsw, refine="SQ8"),
                 "ivf-flat": IndexSpec("ivf", nlist, "Flat", hnsw_quantizer=hnsw),
                 "ivf-sq8": IndexSpec("ivf", nlist, "SQ8", hnsw_quantizer=hnsw),
                 "ivfpq": IndexSpec("ivfpq", nlist, pq_m=choose_spec(10**9, dim, 1.0).pq_m,
                                    hnsw_quantizer=hnsw)}
        for name in args.types:
            spec = specs[name]
            index, build_s = build(spec, vectors, args.seed, args.train_per_list)
            t0 = time.perf_counter()
            index.tuning = index.tune(tune_q, tune_ids, truth=truth_tune)
            tune_s = time.perf_counter() - t0
            recall = index.recall(eval_q, eval_ids, expected)
            qps = single_query_rate(index, eval_q)
            curve = _curve(index, eval_q, eval_ids, expected)
            results.append({
                "n": args.n, "dim": dim, "index": spec.factory(dim), "recall_at_10": round(recall, 4),
                "qps": round(qps, 2), "flat_qps": round(flat_qps, 2),
                "speedup": round(qps / flat_qps, 1), "memory_mb": round(index.memory_bytes() / 2**20, 1),
                "build_s": round(build_s, 1), "tune_s": round(tune_s, 1),
                "params": index.tuning.params, "tuned_recall": index.tuning.recall_at_10,
                "curve": curve,
                "chosen": (spec.kind, spec.codes, spec.refine) == (chosen.kind, chosen.codes, chosen.refine),
                "vectors": source,
            })
            _emit(results[-1], args.json)
            del index
        del vectors
    if not args.json:
        print(json.dumps(results, indent=1))


def _curve(index: VectorIndex, queries: np.ndarray, query_ids: np.ndarray,
           expected: list[set[int]]) -> list[list[float]]:
    """[nprobe, recall@10, queries/s] on the measuring queries, around the tuned nprobe."""
    from storage.vector_index import _probe_ladder

    tuned = index.tuning.params["nprobe"]
    ladder = [p for p in _probe_ladder(faiss.extract_index_ivf(index.index).nlist)
              if tuned / 2 <= p <= tuned * 2]
    out = []
    for nprobe in ladder:
        index._set_params(nprobe)
        out.append([nprobe, round(index.recall(queries, query_ids, expected), 4),
                    round(single_query_rate(index, queries), 2)])
    index._set_params(tuned)
    return out


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print(result, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
