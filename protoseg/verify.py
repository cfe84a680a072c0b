"""Blob-for-blob parity with Caffe: run the converted graph and compare every blob a reference file holds.

A reference (``.npz``, e.g. saved from pycaffe's ``net.blobs``) holds the net's inputs, named like its input
blobs, and any blobs to compare, each as Caffe shows it after the whole forward pass (for in-place layers, the
last value written). A blob passes when ``max|ours - ref| <= rtol * max|ref|``.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import fx

from protoseg.errors import FormatError
from protoseg.ir import Net

DEFAULT_RTOL = 1e-4


@dataclass
class BlobCheck:
    blob: str
    layer: str | None  # the Caffe layer that last wrote it (None for inputs / blobs the net lacks)
    type: str | None
    shape: tuple[int, ...]
    ref_shape: tuple[int, ...]
    max_abs_err: float
    rel_err: float
    passed: bool
    note: str = ""


@dataclass
class VerifyReport:
    rtol: float
    inputs: list[str]
    blobs: list[BlobCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(b.passed for b in self.blobs)

    @property
    def first_failure(self) -> BlobCheck | None:
        return next((b for b in self.blobs if not b.passed), None)

    def to_dict(self) -> dict:
        first = self.first_failure
        return {
            "ok": self.ok,
            "rtol": self.rtol,
            "inputs": self.inputs,
            "first_divergence": None if first is None else {"blob": first.blob, "layer": first.layer, "type": first.type},
            "blobs": [asdict(b) for b in self.blobs],
        }


def read_reference(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` reference, with clear errors for anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise FormatError(f"{path}: not an .npz archive; save the reference with numpy.savez")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file; check the --reference path") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: cannot be read as an .npz reference ({e})") from None


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps the value of every node whose blob is wanted."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]):
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        blob = n.meta.get("blob")
        if blob in self.wanted:
            self.values[blob] = out
        return out


def run_blobs(gm: fx.GraphModule, inputs: Mapping[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Values of the ``wanted`` SSA blobs after a forward pass of ``gm`` on ``inputs`` (by input name)."""
    placeholders = [n.meta.get("blob", n.name) for n in gm.graph.nodes if n.op == "placeholder"]
    recorder = _Recorder(gm, wanted)
    with torch.no_grad():
        recorder.run(*[inputs[name] for name in placeholders])
    return recorder.values


def verify_net(net: Net, gm: fx.GraphModule, reference: Mapping[str, np.ndarray],
               rtol: float = DEFAULT_RTOL) -> VerifyReport:
    """Compare every non-input array of ``reference`` with the blob of that name in ``net`` (run as ``gm``)."""
    input_names = {net.caffe_name.get(i, i): i for i in net.inputs}
    missing = [name for name in input_names if name not in reference]
    if missing:
        raise FormatError(
            f"the reference has no array for the net input(s) {', '.join(missing)}; "
            f"it holds: {', '.join(reference) or 'nothing'}"
        )
    # The value Caffe shows for a blob is its last write: the SSA name equal to the Caffe name.
    order = list(net.inputs) + [t for layer in net.layers for t in layer.tops]
    writer = {t: layer for layer in net.layers for t in layer.tops}
    inputs = {i: torch.from_numpy(np.ascontiguousarray(reference[net.caffe_name.get(i, i)])) for i in net.inputs}
    compared = [k for k in reference if k not in input_names and k not in net.data_tops]
    wanted = {k for k in compared if k in writer}
    values = run_blobs(gm, inputs, wanted)

    report = VerifyReport(rtol, list(input_names))
    position = {name: i for i, name in enumerate(order)}
    for name in sorted(compared, key=lambda k: position.get(k, len(order))):
        ref = np.asarray(reference[name])
        layer = writer.get(name)
        if name not in values:
            report.blobs.append(BlobCheck(name, None, None, (), tuple(ref.shape), float("inf"), float("inf"), False,
                                          "no blob of this name in the converted net"))
            continue
        ours = values[name].detach().cpu().numpy()
        if ours.shape != ref.shape:
            report.blobs.append(BlobCheck(name, layer.name, layer.type, tuple(ours.shape), tuple(ref.shape),
                                          float("inf"), float("inf"), False, "shape differs"))
            continue
        err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = err / scale if scale else (0.0 if err == 0 else float("inf"))
        report.blobs.append(BlobCheck(name, layer.name, layer.type, tuple(ours.shape), tuple(ref.shape), err, rel,
                                      err <= rtol * scale))
    return report


def verify_files(prototxt, weights, reference, *, defines: Mapping[str, str] | None = None,
                 rtol: float = DEFAULT_RTOL) -> VerifyReport:
    """``protoseg verify``: input shapes are taken from the reference's arrays named like the net's inputs."""
    from protoseg.io.upgrade import load_net
    from protoseg.ir import build_net
    from protoseg.loader import convert

    ref = read_reference(reference)
    netparam = load_net(prototxt, defines or None)
    probe = build_net(netparam)  # default shapes: only to learn the input names
    shapes = {probe.caffe_name[i]: ref[probe.caffe_name[i]].shape for i in probe.inputs if probe.caffe_name[i] in ref}
    net, gm = convert(netparam, weights, input_shapes=shapes)
    return verify_net(net, gm, ref, rtol)


def format_report(report: VerifyReport) -> str:
    rows = [("blob", "layer", "shape", "max abs err", "rel err", "")]
    for b in report.blobs:
        shape = "x".join(map(str, b.shape or b.ref_shape))
        rows.append((b.blob, f"{b.layer} ({b.type})" if b.layer else "-", shape, f"{b.max_abs_err:.3g}",
                     f"{b.rel_err:.3g}", "ok" if b.passed else f"FAIL {b.note}".strip()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    passed = sum(b.passed for b in report.blobs)
    lines.append("")
    lines.append(f"{passed}/{len(report.blobs)} blobs within rtol {report.rtol:g} of the reference")
    first = report.first_failure
    if first is not None:
        where = f"layer {first.layer!r} ({first.type})" if first.layer else "a blob the net lacks"
        lines.append(f"first divergence: blob {first.blob!r} at {where}")
    return "\n".join(lines)
