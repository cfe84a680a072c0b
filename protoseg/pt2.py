"""``.pt2`` files: written for plain PyTorch, read back by protoseg without running anything in them.

``protoseg convert`` writes a ``torch.export`` program (``torch.export.load(path).module()`` runs it, no
protoseg needed) and records beside it, as the archive's extra file ``protoseg.json``, the net it came from:
the V2 prototxt text, the fork, the input shapes, the preprocessing, and which weight of the program is which
Caffe blob.

``torch.export.load`` is not safe on a file from elsewhere: it unpickles (weights saved with ``use_pickle``,
pickled constants, and a pickle fallback for the sample inputs), ``exec``s the program's guard code and
``sympify``s its shape expressions. So protoseg never calls it. :func:`read` opens the archive as a zip, reads
``protoseg.json`` (JSON) and the raw float32 weight payloads (bytes, located through the JSON weights config),
and rebuilds the graph from the recorded prototxt with protoseg's own converters. A ``.pt2`` without that
record (not written by ``protoseg convert``) is refused; load such a file with ``torch.export.load`` yourself,
and only if you trust it.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.errors import FormatError, quote

#: Version of the ``protoseg.json`` record.
RECORD_VERSION = 1
RECORD_NAME = "protoseg.json"
#: Largest record read (the ResNet-101 MSC prototxt is about 0.5 MB).
MAX_RECORD = 64 * 2**20
MAX_MEMBERS = 100_000
#: torch.export's serialized ScalarType codes of the float types a converted net may be stored in.
_DTYPES = {7: "<f4", 6: "<f2", 13: "bfloat16"}


@dataclass
class Pt2Model:
    net: Any  # protoseg.ir.Net
    graph: Any  # torch.fx.GraphModule (the faithful float32 graph)
    preprocess: dict | None  # mean, scale, pad_to, bgr as recorded at conversion (None if unknown then)
    precision: str = "fp32"  # what the net was converted to run in


def record(net, netparam, owners: dict[str, tuple[str, int]], preprocess: dict | None,
           precision: str = "fp32") -> str:
    """The ``protoseg.json`` text for a converted net."""
    from protoseg.io.prototxt import format_net

    return json.dumps({
        "protoseg": RECORD_VERSION,
        "fork": net.fork,
        "prototxt": format_net(netparam),
        "inputs": {net.caffe_name.get(k, k): list(v) for k, v in net.inputs.items()},
        "outputs": [net.caffe_name.get(o, o) for o in net.outputs],
        "params": {fqn: [layer, index] for fqn, (layer, index) in owners.items()},
        "preprocess": preprocess,
        "precision": precision,
    })


def read(path: str | os.PathLike) -> Pt2Model:
    """A ``.pt2`` written by ``protoseg convert``, as protoseg's own graph; nothing in the file is executed."""
    from protoseg.graph import to_graph
    from protoseg.io.prototxt import parse_prototxt
    from protoseg.io.upgrade import filter_net, upgrade_net
    from protoseg.ir import build_net
    from protoseg.layers.base import product

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            members = zf.infolist()
            if len(members) > MAX_MEMBERS:
                raise FormatError(f"{path}: {len(members):,} archive members; not a .pt2 written by protoseg")
            names = {m.filename: m for m in members}
            rec_name = next((n for n in names if n.endswith("/extra/" + RECORD_NAME)), None)
            if rec_name is None:
                raise FormatError(
                    f"{path}: not written by 'protoseg convert' (no {RECORD_NAME} record). protoseg does not load "
                    "other .pt2 files, because torch.export.load can run code stored in them; if you trust this "
                    "file, load it yourself with torch.export.load(path).module()")
            root = rec_name[: -len("/extra/" + RECORD_NAME)]
            rec = _json(path, zf, names[rec_name])
            config = _json(path, zf, names.get(f"{root}/data/weights/model_weights_config.json"))
            arrays = _weights(path, f, zf, names, root, rec, config)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
        raise FormatError(f"{path}: cannot be read as a .pt2 archive ({type(e).__name__}: {e})") from None
    if rec.get("protoseg") != RECORD_VERSION:
        raise FormatError(f"{path}: record version {quote(rec.get('protoseg'))}; this protoseg reads version "
                          f"{RECORD_VERSION}: convert the net again")
    try:
        netparam = filter_net(upgrade_net(parse_prototxt(str(rec["prototxt"]), filename=f"{path}:{RECORD_NAME}")))
        inputs = {str(k): tuple(int(d) for d in v) for k, v in dict(rec["inputs"]).items()}
        net = build_net(netparam, inputs, [str(o) for o in rec["outputs"]], fork=str(rec["fork"]),
                        source=f"{path}:{RECORD_NAME}")
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: its {RECORD_NAME} record is malformed ({type(e).__name__}: {e})") from None
    blobs: dict[str, list] = {}
    for layer in net.layers:
        for i, owner in enumerate(layer.owners):
            if owner == (layer.name, i):
                if owner not in arrays or arrays[owner].size != product(layer.blob_shapes[i]):
                    raise FormatError(f"{path}: no weight of the right size for blob {i} of layer "
                                      f"{quote(layer.name)}")
                blobs.setdefault(layer.name, [None] * len(layer.blob_shapes))[i] = \
                    arrays[owner].reshape(layer.blob_shapes[i])
    preprocess = rec.get("preprocess")
    precision = rec.get("precision", "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise FormatError(f"{path}: recorded precision {quote(precision)} is none of fp32, bf16, fp16")
    return Pt2Model(net, to_graph(net, blobs), preprocess if isinstance(preprocess, dict) else None, precision)


def _json(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> dict:
    if info is None:
        raise FormatError(f"{path}: the archive lacks its weights config; not a .pt2 written by protoseg")
    if info.file_size > MAX_RECORD:
        raise FormatError(f"{path}: {quote(info.filename)} is {info.file_size:,} bytes; not a protoseg record")
    try:
        value = json.loads(zf.read(info).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: {quote(info.filename)} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: {quote(info.filename)} is not a JSON object")
    return value


def _weights(path: Path, f, zf: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], root: str, rec: dict,
             config: dict) -> dict[tuple[str, int], np.ndarray]:
    """Each recorded parameter's float32 values, mapped from the file where stored uncompressed."""
    entries = config.get("config")
    params = rec.get("params")
    if not isinstance(entries, dict) or not isinstance(params, dict):
        raise FormatError(f"{path}: the weights config or the record's parameter table is malformed")
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out: dict[tuple[str, int], np.ndarray] = {}
    for fqn, owner in params.items():
        meta = entries.get(fqn)
        if not isinstance(meta, dict) or not isinstance(owner, list) or len(owner) != 2:
            raise FormatError(f"{path}: parameter {quote(fqn)} is not in the archive's weights config")
        tensor = meta.get("tensor_meta") or {}
        sizes = [d.get("as_int") if isinstance(d, dict) else None for d in tensor.get("sizes", [])]
        if (meta.get("use_pickle") is not False or tensor.get("dtype") not in _DTYPES
                or not all(isinstance(d, int) and 0 <= d < 2**31 for d in sizes)):
            raise FormatError(f"{path}: parameter {quote(fqn)} is not stored as plain float data; protoseg never "
                              "unpickles")
        member = names.get(f"{root}/data/weights/{meta.get('path_name')}")
        if member is None:
            raise FormatError(f"{path}: the payload of parameter {quote(fqn)} is missing")
        count = int(np.prod(sizes, dtype=np.int64)) if sizes else 1
        out[(str(owner[0]), int(owner[1]))] = _payload(path, mapped, zf, member, count, _DTYPES[tensor["dtype"]])
    return out


def _payload(path: Path, mapped: mmap.mmap, zf: zipfile.ZipFile, info: zipfile.ZipInfo, count: int,
             dtype: str) -> np.ndarray:
    """``count`` values of ``dtype`` from a weight member, as float32 (bfloat16 widened bit by bit)."""
    size = 4 if dtype == "<f4" else 2
    if count * size > info.file_size:
        raise FormatError(f"{path}: {quote(info.filename)} holds {info.file_size:,} bytes, fewer than its "
                          f"{count:,} values need")
    if info.compress_type != zipfile.ZIP_STORED:
        return _as_float32(np.frombuffer(zf.read(info), "<u2" if dtype == "bfloat16" else dtype, count), dtype)
    header = mapped[info.header_offset : info.header_offset + 30]
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"{path}: bad local header for {quote(info.filename)}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + count * size > len(mapped):
        raise FormatError(f"{path}: {quote(info.filename)} runs past the end of the file")
    return _as_float32(np.frombuffer(mapped, "<u2" if dtype == "bfloat16" else dtype, count, start), dtype)


def _as_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # the upper half of a float32
        return (values.astype("<u4") << 16).view("<f4")
    return values if dtype == "<f4" else values.astype(np.float32)
