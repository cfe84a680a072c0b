"""Confusion-matrix scores against hand-computed VOC numbers, and the VOC folder reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protoseg.errors import FormatError
from protoseg.run.metrics import ConfusionMatrix, voc_pairs
from protoseg.run.palette import label_image

# 3 classes; the 255 at (1, 2) is void and must not count.
GT = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
# rows = ground truth, columns = prediction, counted by hand from GT/PRED above
EXPECTED_MATRIX = [[1, 1, 0], [0, 3, 0], [1, 0, 1]]


def test_matrix_and_scores_by_hand() -> None:
    cm = ConfusionMatrix(3)
    cm.update(PRED, GT)
    assert cm.matrix.tolist() == EXPECTED_MATRIX
    assert cm.total == 7
    # IoU = TP / (TP + FP + FN): 1/(1+1+1), 3/(3+1+0), 1/(1+0+1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2])
    assert cm.mean_iou() == pytest.approx(19 / 36)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)
    np.testing.assert_allclose(cm.class_accuracy(), [1 / 2, 1, 1 / 2])
    assert cm.mean_class_accuracy() == pytest.approx(2 / 3)


def test_accumulates_over_images_not_mean_of_images() -> None:
    """VOC scores the whole split's matrix; two updates equal one update of both images."""
    cm = ConfusionMatrix(3)
    cm.update(PRED[:1], GT[:1])
    cm.update(PRED[1:], GT[1:])
    assert cm.matrix.tolist() == EXPECTED_MATRIX
    cm.update(PRED, GT)
    assert cm.matrix.tolist() == [[2, 2, 0], [0, 6, 0], [2, 0, 2]]
    assert cm.mean_iou() == pytest.approx(19 / 36)
    cm.reset()
    assert cm.total == 0 and math.isnan(cm.mean_iou()) and math.isnan(cm.pixel_accuracy())


def test_class_absent_from_both_is_nan_and_skipped() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    iou = cm.iou()
    assert math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx(19 / 36)
    assert math.isnan(cm.class_accuracy()[3])
    assert cm.mean_class_accuracy() == pytest.approx(2 / 3)


def test_class_only_predicted_counts_as_zero() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([0, 0]))
    # class 0: 1 / (1 + 0 + 1); class 1: 0 / (0 + 1 + 0)
    np.testing.assert_allclose(cm.iou(), [0.5, 0.0])
    assert cm.mean_iou() == pytest.approx(0.25)
    # class 1 has no ground truth pixels, so its recall is undefined
    assert cm.class_accuracy()[0] == pytest.approx(0.5) and math.isnan(cm.class_accuracy()[1])
    assert cm.mean_class_accuracy() == pytest.approx(0.5)


def test_custom_ignore_label_and_none() -> None:
    cm = ConfusionMatrix(3, ignore_label=2)
    cm.update(np.array([0, 1, 0]), np.array([0, 2, 1]))
    assert cm.matrix.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    cm = ConfusionMatrix(3, ignore_label=None)
    with pytest.raises(FormatError, match="label 255"):
        cm.update(np.array([0]), np.array([255]))


def test_all_void_image_scores_nothing() -> None:
    cm = ConfusionMatrix(21)
    cm.update(np.full((4, 4), 7), np.full((4, 4), 255, dtype=np.uint8))
    assert cm.total == 0


@pytest.mark.parametrize(
    "pred, gt, exc, match",
    [
        (np.array([0, 3]), np.array([0, 1]), ValueError, "prediction holds label 3"),
        (np.array([0, -1]), np.array([0, 1]), ValueError, "prediction holds label -1"),
        (np.array([0, 1]), np.array([0, 7]), FormatError, "ground truth holds label 7"),
        (np.array([0, 1]), np.array([0, 1, 1]), ValueError, "shape"),
        (np.array([0.0, 1.0]), np.array([0, 1]), ValueError, "integer"),
    ],
    ids=["pred-too-big", "pred-negative", "gt-out-of-range", "shape", "float"],
)
def test_update_rejects(pred: np.ndarray, gt: np.ndarray, exc: type[Exception], match: str) -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(exc, match=match):
        cm.update(pred, gt)
    assert cm.total == 0


def test_out_of_range_prediction_at_void_pixel_is_ignored() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 9]), np.array([0, 255]))
    assert cm.total == 1


def test_summary_keys() -> None:
    cm = ConfusionMatrix(3)
    cm.update(PRED, GT)
    s = cm.summary()
    assert s["mean_iou"] == pytest.approx(19 / 36)
    assert len(s["iou"]) == 3


def _make_voc(root: Path, ids: list[str], split: str = "val") -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i, image_id in enumerate(ids):
        Image.new("RGB", (4, 3), (i, i, i)).save(root / "JPEGImages" / f"{image_id}.jpg")
        label_image(np.full((3, 4), i, dtype=np.uint8)).save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n\n")


def test_voc_pairs_reads_split(tmp_path: Path) -> None:
    ids = ["2007_000032", "2007_000039"]
    _make_voc(tmp_path, ids)
    pairs = voc_pairs(tmp_path)
    assert [(p.name, q.name) for p, q in pairs] == [
        ("2007_000032.jpg", "2007_000032.png"),
        ("2007_000039.jpg", "2007_000039.png"),
    ]
    with Image.open(pairs[1][1]) as lab:
        assert lab.mode == "P" and np.asarray(lab).max() == 1


def test_voc_pairs_missing_split_lists_known(tmp_path: Path) -> None:
    _make_voc(tmp_path, ["a"], split="train")
    with pytest.raises(FormatError, match=r"val\.txt: split list not found; splits found: train"):
        voc_pairs(tmp_path, "val")


def test_voc_pairs_missing_folder(tmp_path: Path) -> None:
    _make_voc(tmp_path, ["a"])
    (tmp_path / "SegmentationClass" / "a.png").unlink()
    (tmp_path / "SegmentationClass").rmdir()
    with pytest.raises(FormatError, match="no SegmentationClass/ folder"):
        voc_pairs(tmp_path)
    with pytest.raises(FormatError, match="dataset folder not found"):
        voc_pairs(tmp_path / "nope")


def test_voc_pairs_missing_file_and_empty_list(tmp_path: Path) -> None:
    _make_voc(tmp_path, ["a", "b"])
    (tmp_path / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(FormatError, match=r"missing: .*b\.jpg"):
        voc_pairs(tmp_path)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(FormatError, match="empty"):
        voc_pairs(tmp_path)
