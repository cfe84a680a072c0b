"""``torchrun -m protoseg run|eval`` with 2 CPU processes (gloo on loopback) gives what one process gives."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from protoseg.cli import main
from protoseg.run.demo import DEMO_DIR

PROTOTXT, WEIGHTS = DEMO_DIR / "demo.prototxt", DEMO_DIR / "demo.caffemodel"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """The bundled demo images and labels in a VOC layout (JPEGImages holds the PNGs: any image suffix reads)."""
    root = tmp_path / "VOC"
    images = sorted((DEMO_DIR / "images").glob("*.png"))
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for image in images:
        shutil.copy(image, root / "JPEGImages" / f"{image.stem}.jpg")  # VOC names its images .jpg
        shutil.copy(DEMO_DIR / "labels" / image.name, root / "SegmentationClass" / image.name)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(i.stem for i in images) + "\n")
    return root


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(port), "-m", "protoseg", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_eval_equals_one_process(voc: Path, tmp_path: Path, capsys) -> None:
    # the demo's JPEG-named PNGs decode the same in both; --workers exercises the DataLoader path too
    args = ["eval", str(PROTOTXT), str(WEIGHTS), "--dataset", str(voc), "--json"]
    assert main([*args, "--workers", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    two = json.loads(_torchrun(args, tmp_path).stdout)  # only rank 0 prints
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert two["mean_iou"] == one["mean_iou"] and two["images"] == one["images"] == 6


def test_two_process_run_writes_what_one_process_writes(voc: Path, tmp_path: Path) -> None:
    images = str(voc / "JPEGImages")
    assert main(["run", str(PROTOTXT), str(WEIGHTS), images, "-o", str(tmp_path / "one")]) == 0
    result = _torchrun(["run", str(PROTOTXT), str(WEIGHTS), images, "-o", str(tmp_path / "two")], tmp_path)
    assert "wrote 12 files" in result.stdout and "(2 processes)" in result.stdout
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in one:
        if name.endswith(".png"):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
