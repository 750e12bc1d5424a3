"""C-DPCF on a toy two-camera set where identity lives at a different location in each camera."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.projections.cdpcf import CDPCF

S, C, PERSONS = 4, 16, 40


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera 0 sees the person's signature at location 0, camera 1 at location 3; the other
    locations hold strong clutter shared by nobody."""
    rng = np.random.default_rng(seed)
    signature = rng.standard_normal((PERSONS, C))
    rows, pids, cams = [], [], []
    for p in range(PERSONS):
        for cam, loc in ((0, 0), (1, 3)):
            m = 3.0 * rng.standard_normal((S, C))
            m[loc] = signature[p] + 0.1 * rng.standard_normal(C)
            rows.append(m.reshape(-1))
            pids.append(p)
            cams.append(cam)
    return np.array(rows), np.array(pids), np.array(cams)


def _rank1(F: np.ndarray, pids: np.ndarray, cams: np.ndarray) -> float:
    q, g = F[cams == 0], F[cams == 1]
    d = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return float(np.mean(pids[cams == 1][d.argmin(1)] == pids[cams == 0]))


@pytest.mark.parametrize("proj_dim", [None, 4])
def test_cdpcf_learns_camera_specific_locations(proj_dim: int | None) -> None:
    X, pids, cams = _toy()
    model = CDPCF([(S, C)], maps=1, proj_dim=proj_dim).fit(X, pids, cams)
    w = model.weights_[0][:, :, 0]  # (cameras + mean, S)
    assert np.argmax(np.abs(w[0])) == 0 and np.argmax(np.abs(w[1])) == 3
    Xt, pt, ct = _toy(seed=1)  # new persons: the maps transfer
    gap = Xt.reshape(len(Xt), S, C).mean(axis=1)
    assert _rank1(model.transform(Xt, ct), pt, ct) >= 0.9 > 0.5 > _rank1(gap, pt, ct)


def test_cdpcf_round_trips_and_pools_unknown_cameras_with_the_mean_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, pids, cams = _toy()
    model = CDPCF([(2, C), (2, C)], maps=2).fit(X, pids, cams)  # two "layers" of 2 locations
    out = model.transform(X, cams)
    assert out.shape == (len(X), 2 * 2 * C)
    model.save(tmp_path / "c.npz")
    back = CDPCF.load(tmp_path / "c.npz")
    assert np.allclose(back.transform(X, cams), out)
    unknown = back.transform(X[:3], np.array([7, 7, 7]))
    assert np.allclose(unknown, back.transform(X[:3]))  # camera 7 unseen: the mean map


def test_cdpcf_needs_two_cameras_and_matching_rows() -> None:
    X, pids, cams = _toy()
    with pytest.raises(ValueError, match="two cameras"):
        CDPCF([(S, C)]).fit(X, pids, np.zeros_like(cams))
    with pytest.raises(ValueError, match="grid maps"):
        CDPCF([(S, C + 1)]).fit(X, pids, cams)
