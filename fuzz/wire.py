"""Just enough of the protobuf wire format to take a caffemodel apart and put it back together.

The caffemodel mutators work on a tree of :class:`Field` so that they can change a shape or a layer and still
write valid lengths around it (a byte flip would only ever test the first length check). Only the messages on
the path NetParameter -> layer -> blob -> shape are decoded; every other field stays opaque bytes. This is our
own decoder, independent of the scanner under test, so it also turns the seeds into HDF5 files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
RAW = -1  # not a wire type: already-encoded bytes (whole runs of fields), written as they are

#: Message kind -> {field number: kind of the sub-message it holds} (caffe.proto).
SCHEMA: dict[str, dict[int, str]] = {
    "net": {100: "layer", 2: "v1layer"},
    "layer": {7: "blob"},
    "v1layer": {6: "blob", 1: "v0layer"},
    "v0layer": {50: "blob"},
    "blob": {7: "shape"},
    "shape": {},
}
#: Where each layer kind keeps its name and its blobs.
LAYER_NAME = {"layer": 1, "v1layer": 4, "v0layer": 1}
LAYER_BLOBS = {"layer": 7, "v1layer": 6, "v0layer": 50}
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE, SHAPE_DIM = 5, 7, 8, 1


@dataclass
class Field:
    """One field: ``value`` is an int (varint), bytes (a payload, or encoded fields if ``wire`` is RAW), or the
    decoded fields of a sub-message of ``kind``.

    ``length`` overrides the encoded length of a LEN field, to write a deliberate lie.
    """

    number: int
    wire: int
    value: int | bytes | list[Field]
    kind: str | None = None
    length: int | None = None


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 values are 10-byte two's complement varints, as protobuf writes
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError(f"bad varint at {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def decode(data: bytes, kind: str = "net") -> list[Field]:
    """Decode ``data`` as a message of ``kind``; raises ``ValueError`` on anything malformed."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _read_varint(data, pos)
            fields.append(Field(number, wire, value))
            continue
        if wire == LEN:
            size, pos = _read_varint(data, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise ValueError(f"wire type {wire} at {pos}")
        if pos + size > len(data):
            raise ValueError(f"field {number} runs past the end")
        payload, pos = data[pos:pos + size], pos + size
        sub = SCHEMA[kind].get(number) if wire == LEN else None
        fields.append(Field(number, wire, decode(payload, sub), sub) if sub else Field(number, wire, payload))
    return fields


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for f in fields:
        if f.wire == RAW:
            out += f.value
            continue
        out += varint(f.number << 3 | f.wire)
        if f.wire == VARINT:
            out += varint(f.value)
            continue
        payload = encode(f.value) if isinstance(f.value, list) else f.value
        if f.wire == LEN:
            out += varint(len(payload) if f.length is None else f.length)
        out += payload
    return bytes(out)


def messages(fields: list[Field], kind: str) -> list[Field]:
    """Every sub-message of ``kind`` anywhere under ``fields``, outermost first."""
    found = []
    for f in fields:
        if isinstance(f.value, list):
            if f.kind == kind:
                found.append(f)
            found += messages(f.value, kind)
    return found


def varints(fields: list[Field]) -> list[Field]:
    """Every varint field anywhere under ``fields``."""
    found = []
    for f in fields:
        if f.wire == VARINT:
            found.append(f)
        elif isinstance(f.value, list):
            found += varints(f.value)
    return found


def layer_name(layer: Field) -> str:
    number = LAYER_NAME[layer.kind]
    raw = next((f.value for f in layer.value if f.number == number and f.wire == LEN), b"")
    return raw.decode("utf-8", "replace")


def packed_dims(values: list[int]) -> Field:
    """A BlobShape ``dim`` field, packed as Caffe writes it."""
    return Field(SHAPE_DIM, LEN, b"".join(varint(d) for d in values))


def blob_shape(blob: list[Field]) -> tuple[int, ...]:
    """A BlobProto's shape as Caffe's ``Blob::FromProto`` reads it: the legacy 4-D shape wins."""
    legacy = {f.number: f.value for f in blob if 1 <= f.number <= 4 and f.wire == VARINT}
    if legacy:
        return tuple(legacy.get(i, 0) for i in range(1, 5))
    dims: list[int] = []
    for f in blob:
        if f.number == BLOB_SHAPE and isinstance(f.value, list):
            for d in f.value:
                if d.number == SHAPE_DIM:
                    dims += [d.value] if d.wire == VARINT else unpack_varints(d.value)
    return tuple(dims)


def blob_values(blob: list[Field]) -> np.ndarray:
    """A BlobProto's float data, flat (packed and unpacked fields in order; doubles ignored)."""
    parts = []
    for f in blob:
        if f.number == BLOB_DATA and f.wire == LEN:
            parts.append(np.frombuffer(f.value[: len(f.value) // 4 * 4], "<f4"))
        elif f.number == BLOB_DATA and f.wire == FIXED32:
            parts.append(np.frombuffer(f.value, "<f4"))
    return np.concatenate(parts or [np.empty(0, "<f4")])


def unpack_varints(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        out.append(value)
    return out


def weights(data: bytes) -> dict[str, list[np.ndarray]]:
    """Layer name -> arrays of a (seed) caffemodel, blobless layers included (Caffe's HDF5 files have a group
    for every layer), for building HDF5 seeds from binary ones."""
    tree, out = decode(data), {}
    for layer in messages(tree, "layer") + messages(tree, "v1layer"):
        blobs = [f.value for f in layer.value if f.number == LAYER_BLOBS[layer.kind] and f.kind == "blob"]
        out[layer_name(layer)] = [blob_values(b).reshape(blob_shape(b)) for b in blobs]
    return out


def unpacked(number: int, values: np.ndarray, dtype: str) -> Field:
    """A run of one-field-per-value records (``dtype`` "<f4": FIXED32, "<f8": FIXED64), built without a
    Python loop so that a million of them costs nothing."""
    wire = FIXED32 if np.dtype(dtype).itemsize == 4 else FIXED64
    records = np.empty(len(values), [("key", "u1"), ("value", dtype)])
    with np.errstate(invalid="ignore"):  # signalling NaNs among fuzzed floats
        records["key"], records["value"] = number << 3 | wire, values
    return Field(number, RAW, records.tobytes())
