"""The bundled demo: its files, its score, and ``protoseg demo`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from protoseg.cli import main
from protoseg.io.upgrade import load_net
from protoseg.run.demo import DEMO_DIR, demo_files, run_demo

#: The demo must segment its own bundled images well (VOC-style mIoU over all of them).
MIN_DEMO_MIOU = 0.80


def test_bundled_files_are_small_and_complete() -> None:
    prototxt, weights, images, labels = demo_files()
    assert weights.stat().st_size < 1_000_000
    pictures = images + sorted(labels.glob("*.png"))
    assert len(images) >= 3 and sum(p.stat().st_size for p in pictures) < 200_000
    for img in images:
        with Image.open(img) as a, Image.open(labels / img.name) as b:
            assert a.size == b.size and b.mode == "P"
    types = {layer.type for layer in load_net(prototxt).layer}
    assert {"Convolution", "ReLU", "Pooling", "Deconvolution", "Crop"} <= types  # the real conversion path
    assert (DEMO_DIR / "classes.txt").read_text().split() == ["background", "disk", "square", "triangle"]


def test_run_demo_scores_and_writes(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path / "out", echo=lines.append)
    assert result.mean_iou > MIN_DEMO_MIOU, result
    assert len(result.per_image) == len(demo_files()[2])
    assert all(p.is_file() for p in result.written)
    first = demo_files()[2][0]
    with Image.open(tmp_path / "out" / first.name) as pred, Image.open(first) as img:
        assert pred.mode == "P" and pred.size == img.size
        assert set(np.unique(np.asarray(pred))) <= {0, 1, 2, 3}
    assert any(line.startswith("overall: mIoU") for line in lines)


def test_demo_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    assert main(["demo", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path), "--force"]) == 0


def test_demo_subprocess_smoke(tmp_path: Path) -> None:
    """What the README's first command does, in a fresh interpreter from another folder."""
    proc = subprocess.run([sys.executable, "-m", "protoseg.cli", "demo"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "overall: mIoU" in proc.stdout
    assert (tmp_path / "protoseg-demo" / "shapes_1.png").is_file()
    assert (tmp_path / "protoseg-demo" / "shapes_1_overlay.jpg").is_file()
