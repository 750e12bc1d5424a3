import cv2
import numpy as np
import pytest

from indexer.models.person_detector.detect import (
    DetectConf,
    PersonDetector,
    clip_boxes,
    crop,
    iou,
    nms,
    pyramid,
)
from indexer.models.person_detector.draw import draw_boxes


def test_iou_and_nms_hand_case() -> None:
    boxes = np.array([[0, 0, 10, 20], [1, 1, 10, 20], [30, 0, 10, 20], [0, 0, 5, 20]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # box 1 vs 0: inter 9*19 = 171, union 200 + 200 - 171 = 229 -> 0.747
    assert iou(boxes[0], boxes[1:2])[0] == pytest.approx(171 / 229)
    # box 3 (best) vs 0: IoU 0.5 -> kept at threshold 0.5 (then 0 suppresses 1), suppressed at 0.4
    # (then 1, IoU 76 / 224 = 0.34 with box 3, survives)
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.0, 0.4)
    assert sorted(np.asarray(kept).ravel().tolist()) == sorted(nms(boxes, scores, 0.4).tolist())


def test_pyramid_levels_map_back_to_the_image() -> None:
    image = np.zeros((300, 200), np.uint8)
    image[100:200, 50:100] = 255  # a bright block
    levels = list(pyramid(image, 1.5, (64, 128)))
    assert [lv.shape for _, lv in levels] == [(300, 200), (200, 133), (133, 89)]
    for factor, level in levels:
        ys, xs = np.nonzero(level > 128)
        # the block's top-left corner at each level, mapped back, is within a pixel or two of (50, 100)
        assert xs.min() / factor == pytest.approx(50, abs=2)
        assert ys.min() / factor == pytest.approx(100, abs=2)


def test_detector_on_a_blank_photo_and_bad_name() -> None:
    for name in ("hog", "haar", "hog+haar"):
        boxes, scores = PersonDetector(DetectConf(detector=name))(np.full((240, 320, 3), 127, np.uint8))
        assert boxes.shape == (0, 4) and scores.shape == (0,)
    with pytest.raises(ValueError, match="valid: hog, haar"):
        PersonDetector(DetectConf(detector="yolo"))


def test_clip_crop_and_draw() -> None:
    boxes = clip_boxes(np.array([[-5.0, 10.2, 20, 500]]), (100, 50, 3))
    assert boxes.tolist() == [[0, 10, 15, 90]]
    image = np.zeros((100, 50, 3), np.uint8)
    assert crop(image, boxes[0]).shape == (90, 15, 3)
    drawn = draw_boxes(image, boxes.tolist())
    assert drawn[10, 5].any() and not image.any()
