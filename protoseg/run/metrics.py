"""Segmentation scores with the PASCAL VOC definitions, and a reader for VOC-layout datasets.

The scores follow the devkit's ``VOCevalseg.m``: one confusion matrix accumulated over the whole split (not a
mean of per-image scores), pixels whose ground truth is the ignore label (255, "void") left out, and
``IoU_j = TP_j / (TP_j + FP_j + FN_j)``. Published FCN/DeepLab numbers are computed this way, so ours compare.

Choices the devkit leaves open, made explicit here:

* A prediction outside ``[0, num_classes)`` at a scored pixel raises ``ValueError``: it can only come from a
  wrong ``num_classes`` or a bad argmax, and silently counting it would skew every score.
* A class absent from both ground truth and prediction has IoU (and class accuracy) NaN, as in the devkit
  (0/0), and the means skip NaN classes. So a subset of VOC without, say, sofas is scored over the classes it
  has instead of being dragged down by a meaningless 0. A class present in only one of the two gets 0.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from protoseg.errors import FormatError

__all__ = ["ConfusionMatrix", "voc_pairs"]


class ConfusionMatrix:
    """A ``(num_classes, num_classes)`` count matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_label: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image (or a batch: any matching shapes) of predicted and true labels.

        Ground truth equal to ``ignore_label`` is skipped; any other ground truth outside
        ``[0, num_classes)`` is a :class:`~protoseg.errors.FormatError` (the label file does not belong to this
        class set), a prediction outside it a ``ValueError`` (see the module notes).
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; "
                "predict at the label's size (crop or resize first)"
            )
        for what, arr in (("prediction", pred), ("ground truth", gt)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{what} must hold integer labels, got dtype {arr.dtype}")
        pred = pred.ravel().astype(np.int64, copy=False)
        gt = gt.ravel().astype(np.int64, copy=False)
        if self.ignore_label is not None:
            keep = gt != self.ignore_label
            pred, gt = pred[keep], gt[keep]
        n = self.num_classes
        if gt.size and (gt.min() < 0 or gt.max() >= n):
            bad = gt[(gt < 0) | (gt >= n)][0]
            raise FormatError(
                f"ground truth holds label {bad}, outside [0, {n}) and not the ignore label "
                f"{self.ignore_label}; is num_classes right for this dataset?"
            )
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            bad = pred[(pred < 0) | (pred >= n)][0]
            raise ValueError(f"prediction holds label {bad}, outside [0, {n}); is num_classes right?")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    @property
    def total(self) -> int:
        """Number of scored pixels so far."""
        return int(self.matrix.sum())

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        num = num.astype(np.float64)
        den = den.astype(np.float64)
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    def iou(self) -> np.ndarray:
        """Per-class intersection over union; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix)
        return self._ratio(tp, self.matrix.sum(0) + self.matrix.sum(1) - tp)

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall ``TP / (TP + FN)``; NaN for a class absent from the ground truth."""
        return self._ratio(np.diag(self.matrix), self.matrix.sum(1))

    def mean_iou(self) -> float:
        """Mean of :meth:`iou` over classes that are not NaN (NaN if nothing was scored)."""
        return _nanmean(self.iou())

    def mean_class_accuracy(self) -> float:
        """Mean of :meth:`class_accuracy` over classes present in the ground truth."""
        return _nanmean(self.class_accuracy())

    def pixel_accuracy(self) -> float:
        """Fraction of scored pixels labelled correctly (NaN if nothing was scored)."""
        total = self.total
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self) -> dict[str, float | list[float]]:
        """All scores in one JSON-friendly dict (NaN kept as float NaN)."""
        return {
            "pixel_accuracy": self.pixel_accuracy(),
            "mean_class_accuracy": self.mean_class_accuracy(),
            "mean_iou": self.mean_iou(),
            "iou": [float(v) for v in self.iou()],
        }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def voc_pairs(root: str | PathLike[str], split: str = "val") -> list[tuple[Path, Path]]:
    """``(image, label)`` paths for each id of ``ImageSets/Segmentation/<split>.txt`` under a VOC root.

    ``root`` is the folder holding ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/`` (for example
    ``VOCdevkit/VOC2012``). Every listed file is checked up front so a long evaluation does not fail halfway.
    """
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: dataset folder not found")
    images = root / "JPEGImages"
    labels = root / "SegmentationClass"
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    for folder in (images, labels):
        if not folder.is_dir():
            raise FormatError(
                f"{root}: no {folder.name}/ folder; give the VOC year folder (e.g. VOCdevkit/VOC2012) that holds "
                "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/"
            )
    if not split_file.is_file():
        seg = split_file.parent
        known = sorted(p.stem for p in seg.glob("*.txt")) if seg.is_dir() else []
        hint = f"; splits found: {', '.join(known)}" if known else ""
        raise FormatError(f"{split_file}: split list not found{hint}")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise FormatError(f"{split_file}: split list is empty")
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for image_id in ids:
        img, lab = images / f"{image_id}.jpg", labels / f"{image_id}.png"
        for p in (img, lab):
            if not p.is_file():
                missing.append(str(p))
        pairs.append((img, lab))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FormatError(f"{split_file}: listed files are missing: {', '.join(missing[:3])}{more}")
    return pairs
