"""Approximate FAISS indexes at scale: recall@10 against exact search, single-query rate, memory and
build time per index type, on vectors drawn from a model fitted to real GeM descriptors.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_scale.py --n 1000000 --dim 1280 --json

The vectors: the raw global (GeM, EfficientNet-Lite0, 1280-d) descriptors stored in the landmark
galleries under TANSAKU_HOME (`--galleries`, default: every gallery whose global vectors are
1280-d; e.g. the `tansaku eval retrieval` gallery of holidays_even) are modelled as a Gaussian
mixture (`--components`, diagonal covariances) in their top principal subspace (`--pca-dims`)
plus isotropic noise in the rest, its variance that of real descriptors outside a subspace learned
from the others (split in half). N vectors are drawn from it, L2-normalised like GeM's, and
PCA-whitened as a gallery of that size would be (learned from 20000 of them, `--dim` components,
shrinkage 1), then L2-normalised: what the gallery's FAISS index holds. They are written once to a
temporary float32 file and each index is built from it in chunks, one index at a time.

Each index type (`--types`; `flat` is always measured first: it gives the ground truth and the
exact single-query rate) is built as `storage.vector_index` builds a gallery's index (trained on
at most 64 vectors per list, `nprobe` tuned to recall@10 >= 0.95 on 200 held-back gallery
vectors), then measured on 200 other gallery vectors as queries (their own id left out): recall@10
against exact search, queries per second one query at a time, memory held (codes, ids,
centroids), build seconds (training and adding). `chosen` marks the type `choose_spec` picks for
this N and D. One JSON object per index type on stdout with --json (one per line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from storage.vector_index import IndexSpec, VectorIndex, choose_spec

CHUNK = 50_000


def real_descriptors(home: Path, galleries: list[str] | None, dim: int = 1280) -> np.ndarray:
    """Raw global vectors stored in the landmark galleries under `home`."""
    from sqlalchemy import select

    from storage.db import open_database
    from storage.gallery_files import GalleryFiles
    from storage.models import Gallery, Image, ImageStatus

    sessions = open_database(os.environ.get("TANSAKU_DB") or f"sqlite:///{home / 'tansaku.db'}")
    out = []
    with sessions() as session:
        for gallery in session.scalars(select(Gallery).where(Gallery.profile == "landmark")):
            if galleries and gallery.name not in galleries:
                continue
            ids = list(session.scalars(select(Image.id).where(
                Image.gallery_id == gallery.id, Image.status == ImageStatus.INDEXED)))
            store = GalleryFiles(home, gallery.id).features()
            vectors = [store.get(i)["global"] for i in ids]
            if vectors and len(vectors[0]) == dim:
                out.append(np.stack(vectors))
                print(f"{gallery.name}: {len(ids)} real descriptors", file=sys.stderr)
    if not out:
        raise SystemExit(f"no landmark gallery with {dim}-d global vectors under {home}")
    return np.concatenate(out).astype(np.float32)


class DescriptorModel:
    """A Gaussian mixture in the real descriptors' principal subspace plus isotropic residual noise."""

    def __init__(self, real: np.ndarray, components: int, pca_dims: int, seed: int) -> None:
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(seed)
        self.mean = real.mean(axis=0)
        centred = real - self.mean
        k = min(pca_dims, len(real) // 2 - 1)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        self.basis = vt[:k]  # (k, D)
        gmm = GaussianMixture(components, covariance_type="diag", random_state=seed, reg_covar=1e-6)
        gmm.fit(centred @ self.basis.T)
        self.weights, self.means = gmm.weights_, gmm.means_
        self.stds = np.sqrt(gmm.covariances_)
        # residual variance outside a k-d subspace, measured on descriptors it was not learned from
        order = rng.permutation(len(real))
        a, b = centred[order[: len(real) // 2]], centred[order[len(real) // 2:]]
        _, _, vt_a = np.linalg.svd(a, full_matrices=False)
        basis_a = vt_a[:k]
        residual = b - (b @ basis_a.T) @ basis_a
        self.noise = float(np.sqrt((residual ** 2).sum(axis=1).mean() / (real.shape[1] - k)))
        self.dim = real.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        z = self.means[comp] + self.stds[comp] * rng.standard_normal((n, self.means.shape[1]))
        x = self.mean + z @ self.basis + self.noise * rng.standard_normal((n, self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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
    train = np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), most, replace=False))])
    index = faiss.index_factory(vectors.shape[1], spec.factory(vectors.shape[1]),
                                faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    index.train(train)
    del train
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    for s in range(0, len(vectors), CHUNK):
        index.add_with_ids(np.ascontiguousarray(vectors[s: s + CHUNK]),
                           np.arange(s, min(s + CHUNK, len(vectors)), dtype=np.int64))
    obj.index, obj.spec = index, spec
    return obj, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280, help="whitened dimension kept")
    parser.add_argument("--types", nargs="+", default=["ivf-flat", "ivf-sq8", "ivfpq"],
                        help="ivf-flat, ivf-sq8, ivfpq (flat is always measured)")
    parser.add_argument("--galleries", nargs="*", default=None)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--flat-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nlist", type=int, default=None,
                        help="inverted lists (default: what choose_spec picks for N)")
    parser.add_argument("--train-per-list", type=int, default=64,
                        help="k-means training vectors per list (the wiki: 30 to 256)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(os.environ.get("TANSAKU_HOME", Path.home() / ".local/share/tansaku"))

    real = real_descriptors(home, args.galleries)
    model = DescriptorModel(real, args.components, args.pca_dims, args.seed)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = Path(tmp) / "vectors.npy"
        t0 = time.perf_counter()
        dim = write_vectors(model, args.n, args.dim, path, args.seed)
        print(f"{args.n} x {dim} vectors drawn in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        vectors = np.load(path, mmap_mode="r")
        rng = np.random.default_rng(args.seed + 1)
        picked = rng.choice(args.n, 400, replace=False)
        tune_ids, eval_ids = picked[:200], picked[200:]
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
                    "chosen": chosen.kind == "flat"}]
        _emit(results[-1], args.json)
        nlist = args.nlist or chosen.nlist or choose_spec(max(args.n, 10**6), dim).nlist
        hnsw = nlist >= 4096
        specs = {"ivf-flat": IndexSpec("ivf", nlist, "Flat", hnsw_quantizer=hnsw),
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
            results.append({
                "n": args.n, "dim": dim, "index": spec.factory(dim), "recall_at_10": round(recall, 4),
                "qps": round(qps, 2), "flat_qps": round(flat_qps, 2),
                "speedup": round(qps / flat_qps, 1), "memory_mb": round(index.memory_bytes() / 2**20, 1),
                "build_s": round(build_s, 1), "tune_s": round(tune_s, 1),
                "params": index.tuning.params, "tuned_recall": index.tuning.recall_at_10,
                "chosen": spec.kind == chosen.kind and spec.codes == chosen.codes,
            })
            _emit(results[-1], args.json)
            del index
        del vectors
    if not args.json:
        print(json.dumps(results, indent=1))


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print(result, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
