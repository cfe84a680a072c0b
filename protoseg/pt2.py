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
import math
import mmap
import os
import struct
import zipfile
import zlib
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
#: Largest recorded pad_to side (an image side protoseg pads to).
MAX_PAD = 65536
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
    """A ``.pt2`` written by ``protoseg convert``, as protoseg's own graph; nothing in the file is executed.

    The net is rebuilt from the record first, so every payload read is one the net owns, of the size its
    layer needs: a file cannot make protoseg read, inflate or allocate more than the net it describes.
    """
    from protoseg.graph import to_graph

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
            net, preprocess, precision = _interpret(path, rec)
            blobs = _weights(path, f, zf, names, root, net, rec, config)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError,
            zlib.error) as e:
        raise FormatError(f"{path}: cannot be read as a .pt2 archive ({type(e).__name__}: {e})") from None
    return Pt2Model(net, to_graph(net, blobs), preprocess, precision)


def _interpret(path: Path, rec: dict):
    """The net, preprocessing and precision a record describes, each checked."""
    from protoseg.io.prototxt import parse_prototxt
    from protoseg.io.upgrade import filter_net, upgrade_net
    from protoseg.ir import build_net

    if rec.get("protoseg") != RECORD_VERSION:
        raise FormatError(f"{path}: record version {quote(rec.get('protoseg'))}; this protoseg reads version "
                          f"{RECORD_VERSION}: convert the net again")
    try:
        netparam = filter_net(upgrade_net(parse_prototxt(str(rec["prototxt"]), filename=f"{path}:{RECORD_NAME}")))
        inputs = {str(k): tuple(int(d) for d in v) for k, v in dict(rec["inputs"]).items()}
        net = build_net(netparam, inputs, [str(o) for o in rec["outputs"]], fork=str(rec["fork"]),
                        source=f"{path}:{RECORD_NAME}")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        raise FormatError(f"{path}: its {RECORD_NAME} record is malformed ({type(e).__name__}: {e})") from None
    precision = rec.get("precision", "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise FormatError(f"{path}: recorded precision {quote(precision)} is none of fp32, bf16, fp16")
    return net, _preprocess(path, rec.get("preprocess")), precision


def _preprocess(path: Path, value) -> dict | None:
    """The recorded preprocessing, or None; values that could not have been written by convert are refused."""
    if value is None:
        return None
    bad = FormatError(f"{path}: its recorded preprocessing {quote(value)} is malformed; convert the net again")
    if not isinstance(value, dict):
        raise bad
    mean, scale, pad_to, bgr = (value.get(k) for k in ("mean", "scale", "pad_to", "bgr"))
    numbers = mean if isinstance(mean, list) else [mean] if mean is not None else []
    if len(numbers) > 4 or not all(_finite(v) for v in [*numbers, *([scale] if scale is not None else [])]):
        raise bad
    if pad_to is not None and not (isinstance(pad_to, list) and len(pad_to) == 2 and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_PAD for d in pad_to)):
        raise bad
    if bgr is not None and not isinstance(bgr, bool):
        raise bad
    return value


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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


def _weights(path: Path, f, zf: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], root: str, net, rec: dict,
             config: dict) -> dict[str, list]:
    """The net's own blobs, each read from the payload the record names for it, every member at most once."""
    from protoseg.layers.base import product

    entries = config.get("config")
    params = rec.get("params")
    if not isinstance(entries, dict) or not isinstance(params, dict):
        raise FormatError(f"{path}: the weights config or the record's parameter table is malformed")
    fqn_of: dict[tuple[str, int], str] = {}
    for fqn, owner in params.items():
        if not (isinstance(owner, list) and len(owner) == 2 and isinstance(owner[0], str)
                and isinstance(owner[1], int) and not isinstance(owner[1], bool)):
            raise FormatError(f"{path}: the record's entry for parameter {quote(fqn)} is malformed")
        fqn_of[(owner[0], owner[1])] = fqn
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    used: set[str] = set()
    blobs: dict[str, list] = {}
    for layer in net.layers:
        for i, owner in enumerate(layer.owners):
            if owner != (layer.name, i):
                continue  # a shared blob: read once, at its owner
            where = f"blob {i} of layer {quote(layer.name)}"
            fqn = fqn_of.get(owner)
            meta = entries.get(fqn) if fqn is not None else None
            if not isinstance(meta, dict):
                raise FormatError(f"{path}: the archive stores no weight for {where}")
            tensor = meta.get("tensor_meta")
            tensor = tensor if isinstance(tensor, dict) else {}
            dtype = tensor.get("dtype")
            if meta.get("use_pickle") is not False or not isinstance(dtype, int) or dtype not in _DTYPES:
                raise FormatError(f"{path}: the weight of {where} is not stored as plain float data; protoseg "
                                  "never unpickles")
            member = names.get(f"{root}/data/weights/{meta.get('path_name')}")
            if member is None or member.filename in used:
                raise FormatError(f"{path}: the payload of {where} is missing or shared with another weight")
            used.add(member.filename)
            count = product(layer.blob_shapes[i])
            values = _payload(path, mapped, zf, member, count, _DTYPES[dtype])
            blobs.setdefault(layer.name, [None] * len(layer.blob_shapes))[i] = values.reshape(layer.blob_shapes[i])
    return blobs


def _payload(path: Path, mapped: mmap.mmap, zf: zipfile.ZipFile, info: zipfile.ZipInfo, count: int,
             dtype: str) -> np.ndarray:
    """``count`` values of ``dtype`` from a weight member, as float32 (bfloat16 widened bit by bit).

    A member holding more bytes than the blob needs is refused, so a compressed one is inflated only as far
    as the net's own size.
    """
    size = 4 if dtype == "<f4" else 2
    raw = "<u2" if dtype == "bfloat16" else dtype
    if info.file_size != count * size:
        raise FormatError(f"{path}: {quote(info.filename)} holds {info.file_size:,} bytes; its {count:,} values "
                          f"need {count * size:,}")
    if info.compress_type != zipfile.ZIP_STORED:
        data = bytearray(count * size)  # writable, as torch wants its parameters
        with zf.open(info) as member:
            got = member.readinto(data)
        if got != len(data):
            raise FormatError(f"{path}: {quote(info.filename)} ends early")
        return _as_float32(np.frombuffer(data, raw, count), dtype)
    header = mapped[info.header_offset : info.header_offset + 30]
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise FormatError(f"{path}: bad local header for {quote(info.filename)}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + count * size > len(mapped):
        raise FormatError(f"{path}: {quote(info.filename)} runs past the end of the file")
    return _as_float32(np.frombuffer(mapped, raw, count, start), dtype)


def _as_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # the upper half of a float32
        return (values.astype("<u4") << 16).view("<f4")
    return values if dtype == "<f4" else values.astype(np.float32)
