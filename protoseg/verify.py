"""Blob-for-blob parity with Caffe: run the converted graph and compare every blob a reference file holds.

A reference (``.npz``, e.g. saved from pycaffe's ``net.blobs``) holds the net's inputs, named like its input
blobs, and any blobs to compare, each as Caffe shows it after the whole forward pass (for in-place layers, the
last value written). A blob passes when ``max|ours - ref| <= rtol * max|ref|``.
"""

from __future__ import annotations

import copy
import math
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import fx

from protoseg.errors import FormatError, ProtosegError, WeightMismatchError, quote
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
    """All arrays of an ``.npz`` reference, with clear errors for anything else.

    Every member's ``.npy`` header is read first and its declared size checked against what the archive can
    hold (a stored member its own bytes, a deflated one at most 1032 times them), so a small file cannot make
    NumPy allocate terabytes; nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file; check the --reference path")
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(path, zf)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError, RuntimeError,
            KeyError) as e:
        raise FormatError(f"{path}: cannot be read as an .npz reference ({type(e).__name__}: {e}); save the "
                          "reference with numpy.savez") from None


#: Most members an .npz reference may have (a net's blobs are at most a few thousand).
MAX_MEMBERS = 100_000
#: Deflate cannot expand data more than this.
_DEFLATE_RATIO = 1032


def _check_members(path: Path, zf: zipfile.ZipFile) -> None:
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise FormatError(f"{path}: {len(members):,} members; an .npz reference holds one array per blob")
    for info in members:
        if not info.filename.endswith(".npy"):
            raise FormatError(f"{path}: member {quote(info.filename)} is not an .npy array; save with numpy.savez")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise FormatError(f"{path}: member {quote(info.filename)} is .npy format {version}; save with "
                                  "numpy.savez")
        if dtype.hasobject:
            raise FormatError(f"{path}: member {quote(info.filename)} holds Python objects; protoseg never unpickles")
        if dtype.kind not in "fiub" or dtype.fields is not None:
            raise FormatError(f"{path}: member {quote(info.filename)} has dtype {dtype}; a reference blob holds "
                              "numbers (float, int or bool)")
        nbytes = math.prod(shape) * dtype.itemsize
        room = info.compress_size * (_DEFLATE_RATIO if info.compress_type else 1)
        if nbytes > min(info.file_size, room):
            raise FormatError(f"{path}: member {quote(info.filename)} declares {shape} {dtype} ({nbytes:,} bytes) "
                              f"but the archive holds {info.compress_size:,} bytes for it; the file is corrupt")


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


#: Arithmetic ``verify`` can run the graph in. Caffe computes in float32, and so does protoseg by default; a
#: net whose blobs hold near-ties (two max-pooling candidates equal to the last bits) can flip an argmax under
#: any other summation order, so ``fp64`` shows whether the *arithmetic* agrees without float32's rounding.
PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64}


def verify_net(net: Net, gm: fx.GraphModule, reference: Mapping[str, np.ndarray],
               rtol: float = DEFAULT_RTOL, precision: str = "fp32") -> VerifyReport:
    """Compare every non-input array of ``reference`` with the blob of that name in ``net`` (run as ``gm`` in
    ``precision``)."""
    if precision not in PRECISIONS:
        raise ProtosegError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype != torch.float32:
        gm = copy.deepcopy(gm).to(dtype)
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
    inputs = {i: torch.from_numpy(np.ascontiguousarray(reference[net.caffe_name.get(i, i)])).to(dtype)
              for i in net.inputs}
    compared = [k for k in reference if k not in input_names and k not in net.data_tops]
    wanted = {k for k in compared if k in writer}
    # An argmax mask is checked by the values it points at (two equal maxima are both right), so its source too.
    source = {k: writer[k].bottoms[b] for k in wanted
              if (b := writer[k].converter.index_of(writer[k].tops.index(k))) is not None}
    values = run_blobs(gm, inputs, wanted | set(source.values()))
    values.update({i: inputs[i] for i in source.values() if i in inputs})

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
        note = ""
        if name in source:
            ours, ref, note = _pointed_values(ours, ref, values[source[name]].detach().cpu().numpy())
        err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = err / scale if scale else (0.0 if err == 0 else float("inf"))
        report.blobs.append(BlobCheck(name, layer.name, layer.type, tuple(ours.shape), tuple(ref.shape), err, rel,
                                      err <= rtol * scale and "outside" not in note, note))
    return report


def _pointed_values(ours: np.ndarray, ref: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The values two index maps (flat positions in each N x C plane of ``source``) point at, and a note on how
    many indices differ: a mask passes when it picks equal values, whichever of two equal maxima it names."""
    planes = source.reshape(source.shape[0] * source.shape[1], -1).astype(np.float64)
    size = planes.shape[1]

    def pick(index: np.ndarray) -> tuple[np.ndarray, bool]:
        flat = np.rint(index.reshape(planes.shape[0], -1)).astype(np.int64)
        valid = (flat >= 0) & (flat < size)
        return np.take_along_axis(planes, np.where(valid, flat, 0), 1).reshape(index.shape), bool(valid.all())

    (a, a_ok), (b, b_ok) = pick(ours), pick(ref)
    differ = int(np.count_nonzero(np.rint(ours) != np.rint(ref)))
    note = "" if differ == 0 else f"{differ} of {ours.size} indices name another position of the same value"
    if not (a_ok and b_ok):
        note = "indices outside the source plane"
    return a, b, note


def verify_files(prototxt, weights, reference, *, defines: Mapping[str, str] | None = None,
                 rtol: float = DEFAULT_RTOL, fork: str | None = None, precision: str = "fp32") -> VerifyReport:
    """``protoseg verify``: the net is reshaped to the reference's arrays named like its inputs (as Caffe's
    ``reshape`` would) before shapes are inferred; ``weights`` may be None for a net without parameters."""
    from protoseg.loader import open_net

    ref = read_reference(reference)
    shapes = {name: array.shape for name, array in ref.items()}
    opened = open_net(prototxt, weights, defines=defines or None, input_shapes=shapes, strict_inputs=False,
                      fork=fork)
    if weights is None and opened.net.num_params:
        raise WeightMismatchError(f"{prototxt}: the net has {opened.net.num_params:,} parameters; give its "
                                  "caffemodel as WEIGHTS")
    return verify_net(opened.net, opened.graph(), ref, rtol, precision)


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
