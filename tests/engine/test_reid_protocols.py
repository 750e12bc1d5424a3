"""Dataset loaders (tiny fake layouts in tmp_path) and the VIPeR / Market-1501 evaluators."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.evaluation.reid_protocols import (
    MarketSplit,
    PersonSet,
    evaluate_market,
    evaluate_viper,
    load_market,
    load_viper,
    parse_market_name,
    viper_splits,
)

VIPER_ROOT = Path(__file__).parents[2].parent / "shared" / "data" / "viper"
FIELDS = {"dataset", "protocol", "method", "rank1", "rank5", "rank10", "rank20", "mAP", "mINP",
          "trials"}


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 4, 3), value, np.uint8))


# ----------------------------------------------------------------------------- VIPeR


def test_load_viper_layout(tmp_path: Path) -> None:
    for name in ("000_45.bmp", "002_90.bmp"):
        _write(tmp_path / "cam_a" / name, 10)
    for name in ("000_180.bmp", "002_0.bmp"):
        _write(tmp_path / "cam_b" / name, 20)
    ps = load_viper(tmp_path)
    assert [p.name for p in ps.paths] == ["000_45.bmp", "002_90.bmp", "000_180.bmp", "002_0.bmp"]
    assert ps.pids.tolist() == [0, 2, 0, 2]
    assert ps.camids.tolist() == [0, 0, 1, 1]


def test_load_viper_wrong_layout_names_the_folder(tmp_path: Path) -> None:
    _write(tmp_path / "cam_a" / "000_45.bmp", 1)
    with pytest.raises(FileNotFoundError, match="cam_b"):
        load_viper(tmp_path)
    _write(tmp_path / "cam_b" / "person.bmp", 1)
    with pytest.raises(ValueError, match="person.bmp"):
        load_viper(tmp_path)


def test_viper_splits_are_seeded_halves() -> None:
    pids = np.repeat(np.arange(632), 2)
    splits = viper_splits(pids, trials=3, seed=0)
    for train, test in splits:
        assert len(train) == len(test) == 316
        assert np.union1d(train, test).tolist() == list(range(632))
        assert len(np.intersect1d(train, test)) == 0
    again = viper_splits(pids, trials=3, seed=0)
    assert all((a[0] == b[0]).all() for a, b in zip(splits, again, strict=True))
    assert not (splits[0][0] == splits[1][0]).all()
    assert not (viper_splits(pids, 1, seed=1)[0][0] == splits[0][0]).all()


def _synthetic_viper(
    rng: np.random.Generator, n: int = 200, dim: int = 20
) -> tuple[np.ndarray, PersonSet]:
    """Persons seen once per camera; identity in 3 dims, camera-independent noise elsewhere."""
    pids, camids = np.tile(np.arange(n), 2), np.repeat([0, 1], n)
    X = rng.normal(0.0, 3.0, (2 * n, dim))
    X[:, :3] = rng.normal(0.0, 3.0, (n, 3))[pids] + rng.normal(0.0, 0.1, (2 * n, 3))
    paths = tuple(Path(f"cam_{'ab'[c]}/{p:03d}_0.bmp") for p, c in zip(pids, camids, strict=True))
    return X, PersonSet(paths, pids, camids)


def test_evaluate_viper_fields_and_learning_helps() -> None:
    X, ps = _synthetic_viper(np.random.default_rng(0))
    xq = evaluate_viper(X, ps, "xqda", trials=2, seed=0, method="synthetic")
    eu = evaluate_viper(X, ps, "euclidean", trials=2, seed=0)
    assert set(xq) == FIELDS
    assert xq["method"] == "synthetic" and xq["trials"] == 2 and xq["dataset"] == "viper"
    assert xq["rank1"] >= 90 and eu["rank1"] <= 50
    assert xq["rank1"] <= xq["rank5"] <= xq["rank10"] <= xq["rank20"] <= 100
    # one true match per probe: AP = INP = 1 / rank
    assert xq["mAP"] == xq["mINP"]


class RecordingNormalizer:
    """Scales by the training mean norm; records how many rows each fit saw."""

    fits: list[int] = []

    def fit(self, X: np.ndarray) -> RecordingNormalizer:
        RecordingNormalizer.fits.append(len(X))
        self.scale = float(np.linalg.norm(X, axis=1).mean())
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return X / self.scale


def test_evaluate_viper_fits_the_normalizer_on_each_training_half() -> None:
    X, ps = _synthetic_viper(np.random.default_rng(0))
    RecordingNormalizer.fits = []
    with_norm = evaluate_viper(X, ps, "euclidean", trials=3, normalizer=RecordingNormalizer)
    assert RecordingNormalizer.fits == [200, 200, 200]  # 100 training persons x 2 cameras
    # a uniform scale changes no Euclidean ranking
    assert with_norm == evaluate_viper(X, ps, "euclidean", trials=3)


def test_evaluate_viper_rejects_misaligned_features() -> None:
    X, ps = _synthetic_viper(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"features must be \(400, D\)"):
        evaluate_viper(X[:-1], ps, "euclidean")
    with pytest.raises(ValueError, match="unknown metric 'cosine'"):
        evaluate_viper(X, ps, "cosine")  # type: ignore[arg-type]


@pytest.mark.data
def test_viper_real_data_one_trial() -> None:
    if not VIPER_ROOT.is_dir():
        pytest.skip(f"VIPeR not found at {VIPER_ROOT} (benchmark data is not in the repo)")
    ps = load_viper(VIPER_ROOT)
    assert len(ps) == 1264 and len(np.unique(ps.pids)) == 632
    # Cheap stand-in descriptor: 8-bin histograms of each BGR channel over 8 horizontal stripes
    # of a 24 x 64 thumbnail.
    ims = np.stack([cv2.resize(np.asarray(cv2.imread(str(p))), (24, 64),
                               interpolation=cv2.INTER_AREA) for p in ps.paths])
    bins = (ims // 32).astype(np.int32)  # (N, 64, 24, 3)
    stripe = (np.arange(64, dtype=np.int32) // 8)[None, :, None, None]
    codes = (stripe * 3 + np.arange(3, dtype=np.int32)) * 8 + bins + \
        (np.arange(len(ims), dtype=np.int32) * 192)[:, None, None, None]
    X = np.sqrt(np.bincount(codes.ravel(), minlength=len(ims) * 192).reshape(-1, 192) / 192)
    eu = evaluate_viper(X, ps, "euclidean", trials=1)
    xq = evaluate_viper(X, ps, "xqda", trials=1)
    # one trial with this descriptor: Euclidean rank-1 5.1 / rank-20 19.6, XQDA 8.5 / 51.3
    assert 0 < eu["rank1"] < xq["rank1"] < 60
    assert xq["rank20"] > eu["rank20"] + 15


# ----------------------------------------------------------------------------- Market-1501


def test_parse_market_name() -> None:
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_market_name("-1_c3s2_012345_01.jpg") == (-1, 3)
    assert parse_market_name("0000_c6s4_002202_04.jpg") == (0, 6)
    assert parse_market_name("/any/folder/1501_c2s3_000001_00.jpg") == (1501, 2)
    for bad in ("0002_c1_000451.jpg", "Thumbs.db", "abcd_c1s1_000451_03.jpg", "-2_c1s1_0_0.jpg"):
        with pytest.raises(ValueError, match="Market-1501"):
            parse_market_name(bad)


def _fake_market(root: Path) -> None:
    names = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                               "0007_c1s1_000001_01.jpg", "0007_c3s1_000101_02.jpg"],
        "query": ["0003_c1s1_000100_00.jpg"],
        "bounding_box_test": ["0003_c1s1_000200_01.jpg", "0003_c2s1_000300_01.jpg",
                              "0000_c4s1_000001_01.jpg", "-1_c2s1_000400_02.jpg"],
    }
    for folder, files in names.items():
        for i, name in enumerate(files):
            _write(root / folder / name, 30 * i)


def test_load_market_layout(tmp_path: Path) -> None:
    _fake_market(tmp_path)
    (tmp_path / "query" / "Thumbs.db").write_bytes(b"x")  # not a .jpg: ignored
    split = load_market(tmp_path)
    assert split.train.pids.tolist() == [2, 2, 7, 7]
    assert split.train.camids.tolist() == [1, 2, 1, 3]  # cameras from 1, as named
    assert split.query.pids.tolist() == [3]
    assert sorted(split.gallery.pids.tolist()) == [-1, 0, 3, 3]
    (tmp_path / "query" / "0003_c1s1_000100_00.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="query"):
        load_market(tmp_path)


def test_evaluate_market_applies_the_protocol(tmp_path: Path) -> None:
    _fake_market(tmp_path)
    split = load_market(tmp_path)
    gallery_order = [(p.name, pid) for p, pid in zip(split.gallery.paths, split.gallery.pids,
                                                     strict=True)]
    # The query's nearest gallery images are, in order: the same-camera copy of itself (left
    # out), the junk image (left out), the distractor (a negative), then its cross-camera match.
    rank_of = {-1: 1.0, 0: 2.0}
    g = np.array([[0.0] if name.startswith("0003_c1") else
                  [rank_of.get(int(pid), 3.0)] for name, pid in gallery_order])
    rng = np.random.default_rng(0)
    train = rng.normal(size=(4, 1))
    RecordingNormalizer.fits = []
    result = evaluate_market(train, np.array([[0.0]]), g, split, "euclidean", method="fake",
                             normalizer=RecordingNormalizer)
    assert RecordingNormalizer.fits == [4]
    assert set(result) == FIELDS
    assert result["rank1"] == 0.0 and result["rank5"] == 100.0
    assert result["mAP"] == 50.0 and result["mINP"] == 50.0
    assert isinstance(split, MarketSplit)


def test_one_market_parser_one_camera_convention() -> None:
    """Indexing labels and the Market-1501 protocol read names alike: cameras from 1."""
    from indexer.naming import parse_person_name

    for name in ("0002_c1s1_000451_03.jpg", "-1_c3s2_012345_01.jpg", "0000_c6s4_002202_04.jpg"):
        assert parse_person_name(name) == parse_market_name(name)
    assert parse_person_name("0001_c2_f0046182.jpg") == (1, 2)  # DukeMTMC-reID, when not strict
    assert parse_person_name("holiday.jpg") == (None, None)


def test_evaluate_viper_reranks_and_fits_stages_on_each_training_half() -> None:
    X, ps = _synthetic_viper(np.random.default_rng(0))

    class RecordingStage:
        calls: list[tuple[int, int]] = []

        def fit(self, X: np.ndarray, pids: np.ndarray, camids: np.ndarray) -> RecordingStage:
            RecordingStage.calls.append((len(X), len(np.unique(camids))))
            return self

        def transform(self, X: np.ndarray, camids: np.ndarray | None = None) -> np.ndarray:
            assert camids is not None and len(camids) == len(X)
            return X

    plain = evaluate_viper(X, ps, "xqda", trials=2, stages=RecordingStage)
    assert RecordingStage.calls == [(200, 2), (200, 2)]
    reranked = evaluate_viper(X, ps, "xqda", trials=2, rerank="kreciprocal")
    assert set(reranked) == FIELDS and reranked["rank1"] >= 80
    assert plain == evaluate_viper(X, ps, "xqda", trials=2)
    with pytest.raises(ValueError, match="unknown re-ranking"):
        evaluate_viper(X, ps, "xqda", trials=1, rerank="qe")
