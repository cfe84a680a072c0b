"""``protoseg demo``: the whole path on a bundled model, with no download, in seconds.

The bundled net (``protoseg/demo/``, made by ``scripts/train_demo.py``) is a tiny FCN trained to segment
disks, squares and triangles. It is a real Caffe model — a prototxt with a ``MemoryData`` layer whose
``transform_param`` gives the mean and scale, Convolution, ReLU, Pooling (Caffe's ceil rounding), a learned
Deconvolution and a Crop, and a binary caffemodel — and goes through exactly what a published model goes
through: parse, upgrade, shape inference, weight matching, conversion to a GraphModule, preprocessing,
prediction, palette PNGs, overlays and VOC-style scoring against the bundled ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from protoseg.errors import ProtosegError

__all__ = ["DEMO_DIR", "DemoResult", "run_demo", "demo_files"]

#: The bundled model, images and labels (installed as package data).
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


@dataclass
class DemoResult:
    per_image: dict[str, float]  # image stem -> mean IoU over the classes present in it or predicted
    mean_iou: float  # over all images at once (one confusion matrix, as VOC scores)
    pixel_accuracy: float
    iou: list[float]  # per class
    classes: list[str]
    seconds: float  # load + predict + write, wall clock
    written: list[Path] = field(default_factory=list)


def demo_files() -> tuple[Path, Path, list[Path], Path]:
    """(prototxt, caffemodel, images, labels folder) of the bundled demo; a clear error if not installed."""
    prototxt, weights = DEMO_DIR / "demo.prototxt", DEMO_DIR / "demo.caffemodel"
    images = sorted((DEMO_DIR / "images").glob("*.png")) if (DEMO_DIR / "images").is_dir() else []
    if not prototxt.is_file() or not weights.is_file() or not images:
        raise ProtosegError(
            f"{DEMO_DIR}: the bundled demo model is missing from this installation; reinstall protoseg "
            "(or run scripts/train_demo.py in a checkout)"
        )
    return prototxt, weights, images, DEMO_DIR / "labels"


def run_demo(out_dir: Path | str = "protoseg-demo", *, force: bool = False,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Segment the bundled images into ``out_dir`` and score them against their ground truth."""
    from PIL import Image

    from protoseg.run.metrics import ConfusionMatrix
    from protoseg.run.palette import labels_from_image
    from protoseg.run.predict import Segmenter, check_free, planned_outputs, write_prediction

    out_dir = Path(out_dir)
    prototxt, weights, images, label_dir = demo_files()
    classes = (DEMO_DIR / "classes.txt").read_text().split()
    check_free((p for img in images for p in planned_outputs(out_dir, img.stem, save_scores=False,
                                                               crf=False).values()), force=force)
    start = time.perf_counter()
    seg = Segmenter.from_caffe(prototxt, weights, categories=classes, name="demo")
    total = ConfusionMatrix(len(classes))
    per_image: dict[str, float] = {}
    written: list[Path] = []
    for pred in seg.predict(images):
        with Image.open(label_dir / f"{pred.name}.png") as im:
            gt = labels_from_image(im)
        one = ConfusionMatrix(len(classes))
        one.update(pred.labels, gt)
        total.update(pred.labels, gt)
        per_image[pred.name] = one.mean_iou()
        written += write_prediction(pred, out_dir)
        echo(f"{pred.name}: {pred.image.shape[1]}x{pred.image.shape[0]}  mIoU {100 * one.mean_iou():5.1f}%")
    seconds = time.perf_counter() - start
    result = DemoResult(per_image, total.mean_iou(), total.pixel_accuracy(), [float(v) for v in total.iou()],
                        classes, seconds, written)
    per_class = ", ".join(f"{c} {100 * v:.1f}" for c, v in zip(classes, result.iou))
    echo(f"overall: mIoU {100 * result.mean_iou:.1f}%  pixel accuracy {100 * result.pixel_accuracy:.1f}%  "
         f"({len(images)} images, {seconds:.2f} s)")
    echo(f"per-class IoU %: {per_class}")
    echo(f"model: {prototxt} + {weights.name}")
    echo(f"wrote {len(written)} files to {out_dir}/ (NAME.png: labels, NAME_overlay.jpg: overlay)")
    return result
