"""Measurements of the ABN re-ID network (issue 12): VIPeR, CAVIAR4REID multi-shot, masking check.

    python scripts/eval_abn.py viper CKPT [CKPT ...] [--root PATH] [--trials 10]
    python scripts/eval_abn.py caviar CKPT [--root PATH] [--trials 10]
    python scripts/eval_abn.py masking CKPT [--root PATH] [--pairs 100] [--test-half]
    python scripts/eval_abn.py explain CKPT --out DIR [--root PATH] [--test-half]
    python scripts/eval_abn.py gog              # only the GOG descriptors of VIPeR (cached)

Features are cached in `--cache` (default /tmp/abn-eval-cache), keyed by the checkpoint's path and
modification time, so the GOG descriptors and each network's embeddings are computed once.
Every result is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from engine.evaluation.multishot import evaluate_multishot, load_multishot  # noqa: E402
from engine.evaluation.reid_protocols import PersonSet, evaluate_viper, load_viper  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_rgb(paths: tuple[Path, ...]) -> list[np.ndarray]:
    """RGB uint8 images; a benchmark needs every image, so an unreadable one is an error."""
    out = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read image {p}")
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def _key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def cached(cache: Path, key: str, compute) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Arrays from `cache/key.npz`, computing and saving them when absent."""
    path = cache / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    arrays = compute()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def abn_features(ckpt: Path, persons: PersonSet, cache: Path, flip: bool = True
                 ) -> dict[str, np.ndarray]:
    """Raw (BN-neck) embeddings (with `flip`, of each image and its mirror image averaged) and
    temporal-attention frame scores of every image."""
    import torch

    from indexer.models.reid_abn.model import describe_frames, load_abn

    def compute() -> dict[str, np.ndarray]:
        model, temporal = load_abn(ckpt)
        images = read_rgb(persons.paths)
        raw = describe_frames(model, images, flip=flip)
        heights = np.array([im.shape[0] for im in images], np.float32)
        scores = np.zeros(len(raw), np.float32)
        if temporal is not None:
            with torch.no_grad():
                scores = temporal.scores(torch.from_numpy(heights)).numpy()
        return {"raw": raw, "scores": scores, "heights": heights}

    st = ckpt.stat()
    key = _key("abn", str(ckpt.resolve()), st.st_mtime, persons.paths, *(("flip",) if flip else ()))
    return cached(cache, key, compute)


def gog_features(persons: PersonSet, cache: Path) -> np.ndarray:
    from indexer.extractors.gog import gog_batch

    def compute() -> dict[str, np.ndarray]:
        images = read_rgb(persons.paths)
        feats = [gog_batch(images[i:i + 64]) for i in range(0, len(images), 64)]
        return {"gog": np.concatenate(feats).astype(np.float32)}

    return cached(cache, _key("gog", persons.paths), compute)["gog"]


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class FusionNormalizer:
    """GOG's normaliser on the GOG block, training-mean removal + L2 on the network block."""

    def __init__(self, gog_dim: int) -> None:
        from indexer.extractors.gog import GOGNormalizer

        self.gog_dim, self.gog = gog_dim, GOGNormalizer()
        self.mean_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> FusionNormalizer:
        self.gog.fit(X[:, :self.gog_dim])
        self.mean_ = X[:, self.gog_dim:].mean(axis=0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None
        net = l2(X[:, self.gog_dim:] - self.mean_)
        return np.concatenate([self.gog.transform(X[:, :self.gog_dim]), net], axis=1)


def cmd_viper(args: argparse.Namespace) -> None:
    from indexer.extractors.gog import GOGNormalizer

    persons = load_viper(args.root / "viper")
    gog = gog_features(persons, args.cache) if args.gog else None
    if gog is not None and args.gog_alone:
        print(json.dumps(evaluate_viper(gog, persons, "xqda", args.trials, method="gog+xqda",
                                        normalizer=GOGNormalizer)), flush=True)
    for ckpt in args.ckpt:
        emb = l2(abn_features(ckpt, persons, args.cache, args.flip)["raw"])
        name = f"abn:{ckpt.name}"
        for metric in ("euclidean", "xqda"):
            print(json.dumps(evaluate_viper(emb, persons, metric, args.trials,  # type: ignore[arg-type]
                                            method=f"{name}+{metric}")), flush=True)
        if gog is not None:
            fused = np.concatenate([gog, emb], axis=1)
            print(json.dumps(evaluate_viper(
                fused, persons, "xqda", args.trials, method=f"gog+{name}+xqda",
                normalizer=lambda d=gog.shape[1]: FusionNormalizer(d))), flush=True)


def cmd_gog(args: argparse.Namespace) -> None:
    """Only compute (and cache) GOG descriptors of VIPeR."""
    persons = load_viper(args.root / "viper")
    print(json.dumps({"gog": list(gog_features(persons, args.cache).shape)}), flush=True)


def cmd_caviar(args: argparse.Namespace) -> None:
    persons = load_multishot(args.root / "caviar4reid")
    for ckpt in args.ckpt:
        f = abn_features(ckpt, persons, args.cache, args.flip)
        emb = l2(f["raw"])
        for metric in args.metrics:
            for shots in (1, 5, None):
                for pooling in (("mean",) if shots == 1 else ("mean", "max", "attention")):
                    r = evaluate_multishot(emb, persons, metric, args.trials, shots=shots,
                                           pooling=pooling, frame_scores=f["scores"],  # type: ignore[arg-type]
                                           method=f"abn:{ckpt.name}+{metric}")
                    print(json.dumps(r), flush=True)


def _viper_pairs(root: Path, n: int, test_half: bool = False
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """n random VIPeR persons' (cam_a, cam_b) images; with `test_half`, drawn from the test half
    of trial 0 only (for a network fine-tuned on that trial's training half)."""
    from engine.evaluation.reid_protocols import viper_splits

    persons = load_viper(root / "viper")
    rng = np.random.default_rng(0)
    pool = viper_splits(persons.pids, 1, 0)[0][1] if test_half else np.unique(persons.pids)
    ids = rng.choice(pool, n, replace=False)
    q, g = [], []
    for pid in ids:
        qa = [p for p, i, c in zip(persons.paths, persons.pids, persons.camids, strict=True)
              if i == pid and c == 0][0]
        gb = [p for p, i, c in zip(persons.paths, persons.pids, persons.camids, strict=True)
              if i == pid and c == 1][0]
        a, b = read_rgb((qa, gb))
        q.append(a)
        g.append(b)
    return q, g, [int(i) for i in ids]


def cmd_masking(args: argparse.Namespace) -> None:
    from indexer.models.reid_abn.explain import explain_pair, masking_effect, similarity_gradcam
    from indexer.models.reid_abn.model import load_abn

    q, g, _ = _viper_pairs(args.root, args.pairs, args.test_half)
    for ckpt in args.ckpt:
        model, _ = load_abn(ckpt)
        kinds = ["grad-cam"] + (["attention"] if model.attention is not None else [])
        for kind in kinds:
            top, rnd, centre, sides = [], [], [], []
            for a, b in zip(q, g, strict=True):
                heat = (explain_pair(model, a, b)[0] if kind == "attention"
                        else similarity_gradcam(model, a, b))[0]
                t, r = masking_effect(model, a, b, heat)
                top.append(t)
                rnd.append(r)
                quarter = heat.shape[1] // 4  # the outer quarters of the columns: mostly background
                centre.append(float(heat[:, quarter:heat.shape[1] - quarter].mean()))
                sides.append(float(np.concatenate([heat[:, :quarter], heat[:, -quarter:]]).mean()))
            top_a, rnd_a = np.asarray(top), np.asarray(rnd)
            print(json.dumps({"checkpoint": str(ckpt), "map": kind, "pairs": len(top),
                              "block": "1/4 height x 1/2 width of the crop",
                              "mean_change_top": round(float(top_a.mean()), 4),
                              "mean_change_random": round(float(rnd_a.mean()), 4),
                              "top_beats_random": int((top_a > rnd_a).sum()),
                              "map_centre_half": round(float(np.mean(centre)), 3),
                              "map_outer_quarters": round(float(np.mean(sides)), 3)}), flush=True)


def cmd_explain(args: argparse.Namespace) -> None:
    from indexer.models.reid_abn.explain import explain_pair
    from indexer.models.reid_abn.model import load_abn
    from matcher.explain import match_panel, write_panel

    q, g, ids = _viper_pairs(args.root, 3, args.test_half)
    model, _ = load_abn(args.ckpt[0])
    for a, b, pid in zip(q, g, ids, strict=True):
        maps, kind = explain_pair(model, a, b)
        path = write_panel(args.out / f"viper-{pid:03d}-{kind}.png", match_panel(a, b, maps))
        print(json.dumps({"image": str(path), "person": pid, "map": kind}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("viper", "caviar", "masking", "explain", "gog"))
    parser.add_argument("ckpt", type=Path, nargs="*")
    parser.add_argument("--root", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/abn-eval-cache"))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--metrics", nargs="+", default=["euclidean", "xqda"])
    parser.add_argument("--no-gog", dest="gog", action="store_false")
    parser.add_argument("--no-gog-alone", dest="gog_alone", action="store_false")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="viper/caviar: describe each image alone, without its mirror image")
    parser.add_argument("--out", type=Path, default=Path("/tmp/abn-explain"))
    parser.add_argument("--test-half", action="store_true",
                        help="masking/explain: persons of trial 0's test half only (a network "
                        "fine-tuned by viper_abn_finetune.py --save-first)")
    args = parser.parse_args()
    {"viper": cmd_viper, "caviar": cmd_caviar, "masking": cmd_masking, "explain": cmd_explain,
     "gog": cmd_gog}[args.command](args)


if __name__ == "__main__":
    main()
