"""Read and write Caffe weights: binary caffemodels (V0, V1 and V2 ``NetParameter``) and Caffe's HDF5 layout.

A published caffemodel is one protobuf message of up to 540 MB, almost all of it a few dozen packed float
arrays. Parsing it with the protobuf runtime turns every float into a Python object (gigabytes, tens of
seconds). Instead we walk the wire format ourselves over a copy-on-write mmap: only the handful of top-level,
layer-level and blob-level fields are decoded in Python, and each packed array becomes an ``np.frombuffer``
view of the mapping, so loading costs no copy and pages are read only when an array is used.

The arrays are writable (``mmap.ACCESS_COPY``: writes stay private to the process) and little-endian
float32 (float64 for ``double_data``), so ``torch.from_numpy`` takes them without a warning. They may be
unaligned, which NumPy and torch accept. Pages not yet touched still come from the file, so a caffemodel must
not be rewritten in place while its arrays live; :func:`write_weights` replaces files atomically, so writing
back to the path you read from is safe.

Only a layer's name, type and blobs are read: the forks gave some other field numbers different meanings,
and every field we do not need is skipped by its wire type.
"""

from __future__ import annotations

import math
import mmap
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from protoseg.errors import FormatError, ProtosegWarning, quote
from protoseg.io.atomic import write_file

if TYPE_CHECKING:
    pass

__all__ = ["HDF5_MAGIC", "LayerWeights", "WeightsFile", "open_weights", "read_weights", "write_weights"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# Field numbers (caffe.proto) of the few fields the reader decodes.
_NET_NAME, _NET_LAYERS_V1, _NET_LAYER_V2 = 1, 2, 100
_V2_NAME, _V2_TYPE, _V2_BLOBS = 1, 2, 7
_V1_V0LAYER, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 4, 5, 6
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1

# A non-packed repeated float is one 5-byte record per element (key 0x2D, 4 bytes); a double one 9 bytes.
_UNPACKED_FLOAT = np.dtype([("key", "u1"), ("value", "<f4")])
_UNPACKED_DOUBLE = np.dtype([("key", "u1"), ("value", "<f8")])

_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}

#: Most layer entries read from a file: the largest published nets have about 1,000 layers; a file of
#: millions of (possibly empty) entries is garbage, refused before it costs seconds and gigabytes.
MAX_LAYERS = 100_000
#: Caffe's ``Blob`` limits: at most 32 axes and INT_MAX values.
MAX_AXES = 32
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True)
class LayerWeights:
    """One layer entry of a weights file."""

    name: str
    type: str | int  # V2/V0 type string; the V1 enum number (e.g. 4 = CONVOLUTION) in V1 files; "" in HDF5
    blobs: list[np.ndarray]  # in Caffe's order, each with the shape the file stores
    offset: int = -1  # byte offset of the layer entry in a binary file (-1 for HDF5), for messages


@dataclass(frozen=True)
class WeightsFile:
    """Everything :func:`open_weights` learned about a weights file; ``info`` and error messages use it."""

    path: Path
    format: str  # "v2", "v1" (V1 ``layers``, some possibly wrapping V0 layers) or "hdf5"
    name: str  # NetParameter.name ("" when absent, always "" for HDF5)
    layers: list[LayerWeights] = field(default_factory=list)

    @property
    def num_parameters(self) -> int:
        return sum(b.size for layer in self.layers for b in layer.blobs)


def read_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Map each layer name to its parameter blobs, layers in file order.

    Layers without blobs (ReLU, pooling ...) map to ``[]``. Arrays keep the file's shape: V2 ``BlobShape``
    dims, or for legacy V1 blobs the 4-D (num, channels, height, width). A name that occurs twice keeps the
    later entry's blobs (Caffe copies both into the same layer, so the later one wins there too) at the first
    entry's position, with a :class:`ProtosegWarning`.
    """
    return {layer.name: layer.blobs for layer in open_weights(path).layers}


def open_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read a binary or HDF5 caffemodel, detecting which by content; see :func:`read_weights`."""
    path = Path(path)
    if path.is_dir():
        raise FormatError(f"{path}: is a directory; pass the .caffemodel file")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file; check the weights path") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FormatError(f"{path}: the file is empty (0 bytes); the download or copy probably failed")
        head = f.read(4096)
        if head.startswith(HDF5_MAGIC) or (path.suffix.lower() in {".h5", ".hdf5"} and _is_hdf5(path)):
            return _read_hdf5(path)
        _refuse_other_kinds(path, head)
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: cannot be memory-mapped ({e}); pass a regular file") from None
    return _Scanner(buf, path).net()


def _is_hdf5(path: Path) -> bool:
    """HDF5 allows a user block before the signature, so ask h5py for files named like HDF5."""
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _refuse_other_kinds(path: Path, head: bytes) -> None:
    """Name the usual wrong files up front: the wire scan would only report garbage at some byte."""
    if path.suffix == ".solverstate":
        raise FormatError(f"{path}: a .solverstate holds solver history, not weights; pass the .caffemodel "
                          "saved beside it")
    if head.startswith(b"PK\x03\x04"):
        raise FormatError(f"{path}: this is a zip archive (a PyTorch checkpoint?), not a caffemodel")
    if all(b in _TEXT_BYTES for b in head):
        raise FormatError(f"{path}: this is a text prototxt, not a caffemodel: pass the .caffemodel "
                          "(binary weights) here and the .prototxt as the net definition")


class _Scanner:
    """Walk the protobuf wire format of a NetParameter held in ``buf``; positions are absolute file offsets."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf = buf
        self.path = path
        self.size = len(buf)

    # -- wire format ---------------------------------------------------------------------------------------

    def _truncated(self, pos: int, what: str) -> FormatError:
        return FormatError(f"{self.path}: truncated at byte {pos}: {what} runs past the end of the file "
                           f"({self.size} bytes); the download is probably incomplete, fetch the file again")

    def _garbage(self, pos: int, what: str) -> FormatError:
        return FormatError(f"{self.path}: byte {pos}: {what}; this is not a caffemodel, or it is corrupt")

    def _varint(self, pos: int, end: int, top: bool = False) -> tuple[int, int]:
        buf = self.buf
        value = shift = 0
        start = pos
        while True:
            if pos >= end:
                if top:
                    raise self._truncated(start, "a varint")
                raise self._garbage(start, "a varint runs past the end of its message")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7
            if shift >= 70:
                raise self._garbage(start, "a varint longer than 10 bytes")

    def _field(self, pos: int, end: int, top: bool = False) -> tuple[int, int, int, int]:
        """Decode the field at ``pos``: (number, wire type, value or payload start, position after it).

        For varints the third item is the value; for the other wire types it is where the payload starts.
        ``top`` marks the NetParameter level: only there does running past the end mean a cut-off file; a
        nested message that overruns its own length, inside a complete outer field, is corrupt instead.
        """
        key_pos = pos
        key, pos = self._varint(pos, end, top)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise self._garbage(key_pos, "field number 0")
        if wire == _VARINT:
            value, pos = self._varint(pos, end, top)
            return number, wire, value, pos
        if wire == _LEN:
            length, pos = self._varint(pos, end, top)
            return number, wire, pos, self._skip(pos, length, end, f"field {number}", top)
        if wire == _FIXED64:
            return number, wire, pos, self._skip(pos, 8, end, f"field {number}", top)
        if wire == _FIXED32:
            return number, wire, pos, self._skip(pos, 4, end, f"field {number}", top)
        raise self._garbage(key_pos, f"unknown protobuf wire type {wire} (field {number})")

    def _skip(self, pos: int, length: int, end: int, what: str, top: bool) -> int:
        stop = pos + length
        if stop > end:
            if top:
                raise self._truncated(pos, f"{what} ({length} bytes)")
            raise self._garbage(pos, f"{what} claims {length} bytes but its message ends at byte {end}")
        return stop

    def _string(self, start: int, stop: int) -> str:
        raw = self.buf[start:stop]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._garbage(start, "a layer name or type that is not UTF-8") from None

    # -- messages ------------------------------------------------------------------------------------------

    def net(self) -> WeightsFile:
        name = ""
        layers: list[LayerWeights] = []
        first_v1 = first_v2 = -1
        pos = 0
        while pos < self.size:
            at = pos
            number, wire, a, pos = self._field(pos, self.size, top=True)
            if wire != _LEN:
                continue
            if len(layers) >= MAX_LAYERS:
                raise FormatError(f"{self.path}: more than {MAX_LAYERS:,} layer entries (the next at byte {at}); "
                                  "real nets have a few thousand at most: this is not a caffemodel, or it is corrupt")
            if number == _NET_NAME:
                name = self._string(a, pos)
            elif number == _NET_LAYER_V2:
                first_v2 = at if first_v2 < 0 else first_v2
                layers.append(self._layer_v2(at, a, pos))
            elif number == _NET_LAYERS_V1:
                first_v1 = at if first_v1 < 0 else first_v1
                layers.append(self._layer_v1(at, a, pos))
            if first_v1 >= 0 and first_v2 >= 0:
                raise FormatError(
                    f"{self.path}: mixes V1 'layers' entries (first at byte {first_v1}) and V2 'layer' entries "
                    f"(first at byte {first_v2}); Caffe refuses such files too; re-save it with one Caffe version")
        if not layers:
            raise FormatError(f"{self.path}: no layer entries found ({self.size} bytes); this is not a caffemodel")
        return WeightsFile(self.path, "v2" if first_v2 >= 0 else "v1", name, _dedupe(self.path, layers))

    def _layer_v2(self, at: int, pos: int, end: int) -> LayerWeights:
        name, type_, blobs = "", "", []
        while pos < end:
            number, wire, a, pos = self._field(pos, end)
            if wire != _LEN:
                continue
            if number == _V2_NAME:
                name = self._string(a, pos)
            elif number == _V2_TYPE:
                type_ = self._string(a, pos)
            elif number == _V2_BLOBS:
                blobs.append((a, pos))
        return LayerWeights(name, type_, self._blobs(name, blobs), at)

    def _layer_v1(self, at: int, pos: int, end: int) -> LayerWeights:
        name, type_, blobs = "", 0, []
        v0: LayerWeights | None = None
        while pos < end:
            number, wire, a, pos = self._field(pos, end)
            if number == _V1_NAME and wire == _LEN:
                name = self._string(a, pos)
            elif number == _V1_TYPE and wire == _VARINT:
                type_ = a
            elif number == _V1_BLOBS and wire == _LEN:
                blobs.append((a, pos))
            elif number == _V1_V0LAYER and wire == _LEN:
                v0 = self._layer_v0(at, a, pos)
        if v0 is not None and not blobs:  # Caffe's V0 upgrade takes name, type and blobs from the inner layer
            return LayerWeights(name or v0.name, v0.type, v0.blobs, at)
        return LayerWeights(name, type_, self._blobs(name, blobs), at)

    def _layer_v0(self, at: int, pos: int, end: int) -> LayerWeights:
        name, type_, blobs = "", "", []
        while pos < end:
            number, wire, a, pos = self._field(pos, end)
            if wire != _LEN:
                continue
            if number == _V0_NAME:
                name = self._string(a, pos)
            elif number == _V0_TYPE:
                type_ = self._string(a, pos)
            elif number == _V0_BLOBS:
                blobs.append((a, pos))
        return LayerWeights(name, type_, self._blobs(name, blobs), at)

    def _blobs(self, layer: str, spans: list[tuple[int, int]]) -> list[np.ndarray]:
        return [self._blob(layer, i, start, stop) for i, (start, stop) in enumerate(spans)]

    def _blob(self, layer: str, index: int, pos: int, end: int) -> np.ndarray:
        """Decode a BlobProto the way Caffe's ``Blob::FromProto`` does: legacy 4-D shape wins, double wins."""
        at = pos
        legacy = [0, 0, 0, 0]
        has_legacy = False
        dims: list[int] = []
        floats: list[np.ndarray] = []
        doubles: list[np.ndarray] = []
        while pos < end:
            number, wire, a, pos = self._field(pos, end)
            if _BLOB_NUM <= number <= _BLOB_WIDTH and wire == _VARINT:
                legacy[number - 1] = a - (1 << 64) if a >= 1 << 63 else a  # int32 negatives are 10-byte varints
                has_legacy = True
            elif number == _BLOB_SHAPE and wire == _LEN:
                dims = self._dims(a, pos)
            elif number == _BLOB_DATA and wire == _LEN:
                floats.append(self._packed(a, pos, "<f4"))
            elif number == _BLOB_DOUBLE_DATA and wire == _LEN:
                doubles.append(self._packed(a, pos, "<f8"))
            elif number == _BLOB_DATA and wire == _FIXED32:
                run, pos = self._unpacked(a, end, _UNPACKED_FLOAT, 0x2D)
                floats.append(run)
            elif number == _BLOB_DOUBLE_DATA and wire == _FIXED64:
                run, pos = self._unpacked(a, end, _UNPACKED_DOUBLE, 0x41)
                doubles.append(run)
        shape = tuple(legacy) if has_legacy else tuple(dims)
        where = f"layer {quote(layer)} blob {index} (byte {at})"
        if len(shape) > MAX_AXES:
            raise FormatError(f"{self.path}: {where}: {len(shape)} axes; Caffe blobs have at most {MAX_AXES}, so "
                              "the file is corrupt")
        if any(d < 0 or d > MAX_COUNT for d in shape):
            raise FormatError(f"{self.path}: {where}: dimension out of range in shape {quote(shape)}; the file is "
                              "corrupt")
        if math.prod(shape) > MAX_COUNT:
            raise FormatError(f"{self.path}: {where}: shape {quote(shape)} holds more than the {MAX_COUNT:,} values "
                              "a Caffe blob can; the file is corrupt")
        parts = doubles or floats
        data = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty(0, "<f4")])
        if math.prod(shape) != data.size:
            raise FormatError(f"{self.path}: {where}: shape {shape} needs {math.prod(shape)} values but the file "
                              f"holds {data.size}; the file is corrupt or was written by a broken tool")
        return data.reshape(shape)

    def _dims(self, pos: int, end: int) -> list[int]:
        dims: list[int] = []
        while pos < end:
            number, wire, a, pos = self._field(pos, end)
            if number != _SHAPE_DIM:
                continue
            if wire == _VARINT:
                dims.append(a)
            elif wire == _LEN:  # packed
                p, stop = a, pos
                while p < stop and len(dims) <= MAX_AXES:
                    d, p = self._varint(p, stop)
                    dims.append(d)
            if len(dims) > MAX_AXES:
                raise self._garbage(pos, f"a blob shape with more than {MAX_AXES} axes (Caffe's limit)")
        return [d - (1 << 64) if d >= 1 << 63 else d for d in dims]

    def _packed(self, start: int, stop: int, dtype: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        if (stop - start) % itemsize:
            raise self._garbage(start, f"packed array of {stop - start} bytes is not a multiple of {itemsize}")
        return np.frombuffer(self.buf, dtype, (stop - start) // itemsize, start)

    def _unpacked(self, pos: int, end: int, records: np.dtype, key: int) -> tuple[np.ndarray, int]:
        """Read a run of one-field-per-element values (old writers) without a Python loop per element.

        ``pos`` is where the first value starts (its key is already read); the run continues while the next
        record starts with the same one-byte key. Returns the values and the position after the run. The run
        is scanned in windows that double in size, so the work is linear in the run, not in the rest of the
        message (many short runs in a long blob stay cheap).
        """
        first = np.frombuffer(self.buf, records["value"], 1, pos)
        pos += first.itemsize
        start, n, window = pos, 0, 8
        available = (end - pos) // records.itemsize
        while n < available:
            take = min(window, available - n)
            view = np.frombuffer(self.buf, records, take, start + n * records.itemsize)
            bad = np.flatnonzero(view["key"] != key)
            if bad.size:
                n += int(bad[0])
                break
            n += take
            window *= 2
        values = np.frombuffer(self.buf, records, n, start)["value"]
        return np.concatenate([first, values]), start + n * records.itemsize


def _dedupe(path: Path, layers: list[LayerWeights]) -> list[LayerWeights]:
    """Keep one entry per name: the later entry's blobs at the first one's place, as Caffe ends up with."""
    seen: dict[str, int] = {}
    out: list[LayerWeights] = []
    for layer in layers:
        i = seen.get(layer.name)
        if i is None:
            seen[layer.name] = len(out)
            out.append(layer)
            continue
        earlier = out[i]
        if earlier.blobs and layer.blobs:
            warnings.warn(f"{path}: layer {layer.name!r} occurs at bytes {earlier.offset} and {layer.offset}; "
                          "using the later entry's blobs, as Caffe does", ProtosegWarning, stacklevel=4)
        if layer.blobs or not earlier.blobs:
            out[i] = LayerWeights(layer.name, layer.type, layer.blobs, layer.offset)
    return out


#: Deflate (HDF5's gzip filter) cannot expand data more than this; bounds what a compressed dataset may declare.
_DEFLATE_RATIO = 1032
#: Deepest group nesting walked (layer names with '/' nest: PSPNet's go 2 deep).
_MAX_DEPTH = 32


def _read_hdf5(path: Path) -> WeightsFile:
    """Caffe's ``Net::ToHDF5`` layout: ``/data/<layer>/<blob index>``.

    Caffe's own files do not record creation order, so their layers come back in name order; Caffe matches
    layers by name, so this loses nothing. Files from :func:`write_weights` keep the order.

    The walk follows hard links only (a soft or external link is refused: Caffe writes none, and an external
    one would pull data from another file), visits each group once (a link cycle cannot recurse), and checks
    every dataset's declared shape and dtype against Caffe's blob limits and against the bytes the file
    really stores for it before reading anything. Contiguous datasets are mapped from the file, not read.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f.get("data", getlink=True)
            if not isinstance(data, h5py.HardLink) or not isinstance(f["data"], h5py.Group):
                raise FormatError(f"{path}: an HDF5 file without a /data group, so not Caffe HDF5 weights "
                                  f"(top-level entries: {', '.join(map(quote, list(f)[:8])) or 'none'}); pass the "
                                  ".caffemodel.h5 that Caffe saved")
            walk = _Hdf5Walk(path, f.userblock_size)
            walk.group(f["data"], "", 0)
            layers = walk.layers
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, RecursionError) as e:
        raise FormatError(f"{path}: the HDF5 file is corrupt or truncated ({type(e).__name__}: "
                          f"{quote(str(e), 200)[1:-1]}); if it was downloaded, fetch it again") from None
    return WeightsFile(path, "hdf5", "", layers)


class _Hdf5Walk:
    """Collects layer groups under /data: a name with '/' becomes nested groups in HDF5, so walk them back."""

    def __init__(self, path: Path, userblock: int) -> None:
        self.path, self.userblock = path, userblock
        self.size = path.stat().st_size
        self.seen: set = set()
        self.layers: list[LayerWeights] = []

    def group(self, group, prefix: str, depth: int) -> None:
        import h5py

        if group.id in self.seen or depth > _MAX_DEPTH:
            raise FormatError(f"{self.path}: /data/{quote(prefix)[1:-1]} links back into the group tree (or nests "
                              f"deeper than {_MAX_DEPTH}); Caffe HDF5 weights are /data/<layer>/<blob index>")
        self.seen.add(group.id)
        datasets: dict[str, object] = {}
        nested = False
        for key in group:
            where = f"/data/{prefix}{key}"
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "an external link to another file" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise FormatError(f"{self.path}: {quote(where)} is {kind}; Caffe HDF5 weights hold their data "
                                  "themselves, so protoseg follows no links")
            item = group[key]
            if isinstance(item, h5py.Group):
                self.group(item, f"{prefix}{key}/", depth + 1)  # PSPNet's "conv5_3_pool1_conv/bn"
                nested = True
            elif isinstance(item, h5py.Dataset):
                datasets[key] = item
            else:
                raise FormatError(f"{self.path}: {quote(where)} is neither a group nor a dataset")
        if not prefix:
            if datasets:
                raise FormatError(f"{self.path}: /data/{quote(next(iter(datasets)))[1:-1]} is not a layer group; "
                                  "Caffe HDF5 weights are /data/<layer>/<blob index>")
            return
        if nested and not datasets:
            return  # only deeper groups: the start of layer names containing '/'
        if sorted(datasets, key=lambda k: (len(k), k)) != [str(i) for i in range(len(datasets))]:
            raise FormatError(f"{self.path}: /data/{quote(prefix.rstrip('/'))[1:-1]} holds "
                              f"{', '.join(map(quote, sorted(datasets)[:8]))}; blobs must be named 0, 1, ...")
        if len(self.layers) >= MAX_LAYERS:
            raise FormatError(f"{self.path}: more than {MAX_LAYERS:,} layers; this is not a caffemodel")
        name = prefix.rstrip("/")
        self.layers.append(LayerWeights(name, "", [self.blob(name, datasets[str(i)]) for i in range(len(datasets))]))

    def blob(self, layer: str, dset) -> np.ndarray:
        where = f"{self.path}: /data/{quote(layer)[1:-1]}/{dset.name.rsplit('/', 1)[-1]}"
        dtype, shape = dset.dtype, tuple(dset.shape or ())
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise FormatError(f"{where} has dtype {dtype}; Caffe blobs are float32 or float64")
        if len(shape) > MAX_AXES or math.prod(shape) > MAX_COUNT:
            raise FormatError(f"{where} declares shape {quote(shape)}, beyond Caffe's blob limits; the file is corrupt")
        if dset.external or dset.is_virtual:  # raw bytes in, or a view of, other files
            raise FormatError(f"{where} keeps its data in other files (HDF5 external or virtual storage); Caffe "
                              "HDF5 weights hold their data themselves, so protoseg reads no other file")
        nbytes = math.prod(shape) * dtype.itemsize
        stored = dset.id.get_storage_size()
        offset = dset.id.get_offset()
        if offset is not None and dset.compression is None and not dset.chunks:
            start = offset + self.userblock
            if stored < nbytes or start + nbytes > self.size:
                raise FormatError(f"{where} declares {nbytes:,} bytes but the file holds {stored:,} for it; the file "
                                  "is truncated or corrupt")
            if nbytes and shape:
                return np.memmap(self.path, dtype, "c", start, shape).astype(dtype.newbyteorder("="), copy=False)
        elif nbytes > stored * _DEFLATE_RATIO:
            raise FormatError(f"{where} declares {nbytes:,} bytes but stores {stored:,}; more than compression can "
                              "give back, so the file is corrupt (or built to exhaust memory)")
        return np.asarray(dset[()]).astype(dtype.newbyteorder("="), copy=False)


# -- writing -------------------------------------------------------------------------------------------------

def write_weights(path: str | os.PathLike[str], weights: Mapping[str, Sequence[np.ndarray]], *,
                  format: str = "v2", types: Mapping[str, str] | None = None) -> None:
    """Write ``weights`` as a caffemodel Caffe can load: binary V2 ``NetParameter`` or Caffe's HDF5 layout.

    float64 arrays are stored as ``double_data`` (HDF5: float64 datasets), everything else as float32.
    ``types`` gives the V2 ``type`` string of layers (omitted where absent; Caffe matches layers by name).
    The file is written beside ``path`` and renamed into place, so a failed write leaves no half file and
    arrays still mapped from the old file stay valid.
    """
    if format not in ("v2", "hdf5"):
        raise ValueError(f"format must be 'v2' or 'hdf5', not {format!r}")
    types = dict(types or {})
    unknown = sorted(set(types) - set(weights))
    if unknown:
        raise ValueError(f"types names layers that are not in weights: {', '.join(unknown)}")
    arrays = {name: [_as_blob(name, i, b) for i, b in enumerate(blobs)] for name, blobs in weights.items()}

    def write(tmp: str) -> None:
        if format == "v2":
            with open(tmp, "wb") as f:
                _write_v2(f, arrays, types)
        else:
            _write_hdf5(Path(tmp), arrays)

    write_file(path, write)


def _as_blob(layer: str, index: int, blob: object) -> np.ndarray:
    a = np.asarray(blob)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"layer {layer!r} blob {index}: dtype {a.dtype} cannot be a Caffe blob (float or double)")
    a = np.asarray(a, "<f8" if a.dtype == np.float64 else "<f4")
    return a if a.flags.c_contiguous else a.copy()  # not ascontiguousarray: it makes 0-d arrays 1-d


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(number: int, payload_len: int) -> bytes:
    """Key and length of a length-delimited field; the payload follows."""
    return _varint(number << 3 | _LEN) + _varint(payload_len)


def _write_v2(f: object, arrays: dict[str, list[np.ndarray]], types: dict[str, str]) -> None:
    """Stream the message: lengths are computed up front, so no array is copied into a bytes object."""
    for name, blobs in arrays.items():
        head = bytearray()
        for number, text in ((_V2_NAME, name), (_V2_TYPE, types.get(name, ""))):
            if text:
                raw = text.encode()
                head += _len_field(number, len(raw)) + raw
        blob_parts = []
        for a in blobs:
            dims = b"".join(_varint(d) for d in a.shape)
            shape = _len_field(_SHAPE_DIM, len(dims)) + dims if dims else b""
            blob_head = _len_field(_BLOB_SHAPE, len(shape)) + shape
            if a.size:
                blob_head += _len_field(_BLOB_DOUBLE_DATA if a.dtype == np.float64 else _BLOB_DATA, a.nbytes)
            blob_parts.append((_len_field(_V2_BLOBS, len(blob_head) + a.nbytes) + blob_head, a))
        size = len(head) + sum(len(h) + a.nbytes for h, a in blob_parts)
        f.write(_len_field(_NET_LAYER_V2, size) + head)  # type: ignore[attr-defined]
        for blob_head, a in blob_parts:
            f.write(blob_head)  # type: ignore[attr-defined]
            if a.size:
                f.write(a.reshape(-1).data)  # type: ignore[attr-defined]


def _write_hdf5(path: Path, arrays: dict[str, list[np.ndarray]]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data", track_order=True)
        for name, blobs in arrays.items():
            group = data.create_group(name, track_order=True)
            for i, a in enumerate(blobs):
                group.create_dataset(str(i), data=a)
