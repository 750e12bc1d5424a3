import numpy as np
import pytest

from engine.evaluation.attribute_metrics import attribute_scores, label_accuracy


def test_hand_checked_case() -> None:
    truth = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    pred = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
    # attribute 0: TPR 1/2, TNR 1/2 -> 0.5; 1: TPR 1/2, TNR 1/2 -> 0.5; 2: TPR 1/2, TNR 2/2 -> 0.75
    np.testing.assert_allclose(label_accuracy(truth, pred), [0.5, 0.5, 0.75])
    s = attribute_scores(truth, pred)
    assert s.mA == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    # image 4 has no true attribute: left out. Images 1-3: inter 1,2,0; union 3,2,2; |pred| 2,2,0->1
    assert s.accuracy == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert s.precision == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert s.recall == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert abs(s.F1 - 0.5) < 1e-9
    assert s.percent()["mA"] == pytest.approx(58.33, abs=0.01)


def test_perfect_and_shape_errors() -> None:
    truth = np.array([[1, 0], [0, 1]])
    s = attribute_scores(truth, truth)
    assert (s.mA, s.accuracy, s.precision, s.recall, s.F1) == (1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same"):
        attribute_scores(truth, truth[:, :1])


def test_attribute_without_positives_uses_tnr() -> None:
    truth = np.array([[1, 0], [1, 0]])
    pred = np.array([[1, 1], [1, 0]])
    np.testing.assert_allclose(label_accuracy(truth, pred), [1.0, 0.5])
