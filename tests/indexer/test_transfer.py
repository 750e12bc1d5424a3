"""CNN-transfer maths on synthetic inputs: SVD-FC / SVD-CAM, sketches, matrix power normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from indexer.transfer import (
    RandomMaclaurin,
    TensorSketch,
    blockwise_l2,
    matrix_sqrt_features,
    mpn_cbp,
    orthonormal_classifier,
    pool,
    svd_cam,
    svd_fc,
)


def test_orthonormal_classifier_has_orthonormal_rows_and_is_the_polar_factor() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 16, generator=g, dtype=torch.float64)
    Wo = orthonormal_classifier(W)
    assert torch.allclose(Wo @ Wo.T, torch.eye(10, dtype=torch.float64), atol=1e-10)
    U, S, Vh = np.linalg.svd(W.numpy(), full_matrices=False)
    assert np.allclose(Wo.numpy(), U @ Vh, atol=1e-10)
    # the nearest orthonormal matrix: no other one with orthonormal rows is closer to W
    Q = torch.linalg.qr(W.T).Q.T
    assert torch.linalg.norm(W - Wo) <= torch.linalg.norm(W - Q) + 1e-9
    # an orthonormal matrix is its own polar factor
    assert torch.allclose(orthonormal_classifier(Wo), Wo, atol=1e-10)


def test_svd_cam_pooled_by_average_is_svd_fc_of_the_average() -> None:
    g = torch.Generator().manual_seed(1)
    fmap = torch.rand(2, 16, 4, 3, generator=g)
    Wo = orthonormal_classifier(torch.randn(10, 16, generator=g))
    cams = svd_cam(fmap, Wo)
    assert cams.shape == (2, 10, 4, 3)
    assert torch.allclose(pool(cams, "gap"), svd_fc(pool(fmap, "gap"), Wo), atol=1e-5)


def test_pooling_and_blockwise_normalisation() -> None:
    x = torch.arange(8.0).view(1, 2, 2, 2)
    assert torch.allclose(pool(x, "gap"), torch.tensor([[1.5, 5.5]]))
    assert torch.allclose(pool(x, "max"), torch.tensor([[3.0, 7.0]]))
    out = blockwise_l2([torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0, 0.0]])])
    assert torch.allclose(out, torch.tensor([[0.6, 0.8, 0.0, 1.0, 0.0]]) / 2 ** 0.5)
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(x, "median")


@pytest.mark.parametrize("kind", [TensorSketch, RandomMaclaurin])
def test_sketches_approximate_the_bilinear_inner_product(kind: type) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(24), rng.standard_normal(40)
    x2, y2 = x + 0.5 * rng.standard_normal(24), y + 0.5 * rng.standard_normal(40)
    exact = float(x @ x2) * float(y @ y2)
    scale = np.linalg.norm(x) * np.linalg.norm(x2) * np.linalg.norm(y) * np.linalg.norm(y2)
    estimates = []
    for seed in range(10):
        sketch = kind(24, 40, 4096, seed=seed)
        a = sketch(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        b = sketch(torch.tensor(x2, dtype=torch.float64), torch.tensor(y2, dtype=torch.float64))
        estimates.append(float(a @ b))
    assert abs(np.mean(estimates) - exact) < 0.05 * scale
    # the sketch of a sum of outer products is the sum of sketches (it is linear in x y^T)
    s = kind(24, 40, 512, seed=3)
    X = torch.randn(5, 24, dtype=torch.float64)
    Y = torch.randn(5, 40, dtype=torch.float64)
    assert s(X, Y).shape == (5, 512)


def test_matrix_sqrt_features_on_a_known_matrix() -> None:
    Z = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 9.0, 0.0]]], dtype=torch.float64)
    # Z Z^T = diag(16, 81): (Z Z^T)^(-1/4) = diag(1/2, 1/3), so Z' = [[2, 0, 0], [0, 3, 0]]
    Zs = matrix_sqrt_features(Z)
    assert torch.allclose(Zs, torch.tensor([[[2.0, 0, 0], [0, 3.0, 0]]], dtype=torch.float64))
    assert torch.allclose(Zs[0].T @ Zs[0], torch.diag(torch.tensor([4.0, 9.0, 0.0],
                                                                     dtype=torch.float64)))


def test_matrix_sqrt_features_give_the_square_root_of_the_bilinear_matrix() -> None:
    g = torch.Generator().manual_seed(2)
    Z = torch.rand(3, 6, 10, generator=g, dtype=torch.float64)  # 6 locations, 10 channels
    Zs = matrix_sqrt_features(Z)
    for i in range(3):
        expected = scipy.linalg.sqrtm((Z[i].T @ Z[i]).numpy()).real
        assert np.allclose((Zs[i].T @ Zs[i]).numpy(), expected, atol=1e-6)


def test_mpn_cbp_is_unit_norm_seeded_and_checks_grids() -> None:
    g = torch.Generator().manual_seed(4)
    X, Y = torch.rand(2, 8, 4, 2, generator=g), torch.rand(2, 6, 4, 2, generator=g)
    a = mpn_cbp(X, Y, TensorSketch(8, 6, 100, seed=0))
    b = mpn_cbp(X, Y, TensorSketch(8, 6, 100, seed=0))
    assert a.shape == (2, 100) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-5)
    plain = mpn_cbp(X, Y, TensorSketch(8, 6, 100, seed=0), mpn=False)
    assert not torch.allclose(a, plain)
    with pytest.raises(ValueError, match="share batch and grid"):
        mpn_cbp(X, Y[:, :, :2], TensorSketch(8, 6, 100))
