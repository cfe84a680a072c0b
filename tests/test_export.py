"""Converted files load in plain PyTorch, in a fresh process where protoseg cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from protoseg.cli import main
from protoseg.errors import ShapeError
from protoseg.io.upgrade import load_net
from protoseg.ir import build_net
from tests.conftest import FIXTURES, SHARED, materializer, need

RUN = """
import sys
sys.modules["protoseg"] = None  # prove the file needs only torch
import numpy as np, torch
model = torch.export.load(sys.argv[1]).module()
with torch.no_grad():
    first = model(torch.from_numpy(np.load(sys.argv[2])))
    second = model(torch.zeros(tuple(int(d) for d in sys.argv[3].split(","))))
np.save(sys.argv[4], first.numpy())
print(",".join(map(str, second.shape)))
"""


def _second_size(netparam, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Another input size the net accepts (multi-scale nets need their branches to line up, as in Caffe)."""
    for grow in range(8, 64):
        candidate = (*shape[:2], shape[2] + grow, shape[3] + 2 * grow)
        try:
            build_net(netparam, {"data": candidate})
            return candidate
        except ShapeError:
            continue
    raise AssertionError("no second input size found")


@pytest.mark.parametrize("case_name, output", [("fcn8s_deploy", "score"), ("deeplab_v2_resnet101_test", "fc1_interp")])
def test_pt2_reloads_without_protoseg(case_name: str, output: str, tmp_path: Path) -> None:
    path = need(FIXTURES / "nets" / case_name)
    case = json.loads((path / "case.json").read_text())
    materialize = materializer()
    weights = tmp_path / "weights.caffemodel"
    materialize.main([str(path), str(weights), "--format", "v2"])
    ref = np.load(path / "reference.npz")
    data = ref["data"]
    prototxt = SHARED / case["prototxt"]
    defines = [f"--define={k}={v}" for k, v in case.get("defines", {}).items()]
    shape = ",".join(map(str, data.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = _second_size(load_net(prototxt, case.get("defines")), data.shape)
        out = tmp_path / "model.pt2"
        assert main(["convert", str(prototxt), str(weights), "-o", str(out), f"--input=data={shape}", *defines]) == 0
    weights.unlink()
    np.save(tmp_path / "x.npy", data)
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(out), str(tmp_path / "x.npy"), ",".join(map(str, second)),
         str(tmp_path / "y.npy")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    y, expected = np.load(tmp_path / "y.npy"), ref[output]
    assert np.abs(y - expected).max() <= case["rtol"] * np.abs(expected).max()
    n, c = expected.shape[:2]
    got = tuple(int(d) for d in result.stdout.strip().splitlines()[-1].split(","))
    assert got[:2] == (n, c) and got != expected.shape
