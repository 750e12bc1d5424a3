import numpy as np

from engine.evaluation.scenes import match_boxes


def test_match_boxes_each_truth_once() -> None:
    truth = np.array([[0, 0, 10, 20], [50, 0, 10, 20]])
    detected = np.array([[0, 0, 10, 20], [1, 0, 10, 20], [100, 100, 5, 5], [52, 2, 10, 20]])
    # the second detection overlaps the first truth box, already matched; the last matches the second
    assert match_boxes(detected, truth) == 2
    assert match_boxes(np.zeros((0, 4)), truth) == 0
    assert match_boxes(detected, np.zeros((0, 4))) == 0
