"""Protobuf-aware mutators of binary caffemodels: shapes, varints, lengths, float runs and layer lists are
changed on the decoded tree and written back with consistent lengths, except where a lie is the point."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np

from fuzz import wire
from fuzz.mutate import INTERESTING_INTS, Mutator, chain, hostile_name
from fuzz.prototxt import TYPES
from fuzz.wire import LEN, VARINT, Field

#: Shapes that overflow, vanish or go deep: huge dims, 40 dims, 2**62 x 0, 0-d, negative (as int64).
SHAPES = [[2**31, 2**31], [2**62, 0], [0, 2**62], [2**63 - 1, 0, 2**63 - 1], [1] * 40, [2] * 40, [], [0],
          [2**64 - 1], [2**63], [2**32 + 1], [1, 1, 1, 1, 1]]


#: Bigger inputs (a million layers) pass through tree mutators unchanged: decoding costs more than running them.
LARGE = 1 << 20


def _on_tree(fn: Callable[[list[Field], random.Random], None]) -> Mutator:
    """Lift a tree mutator to bytes; input that no longer decodes (a broken packed BlobShape a mutator reads
    too) passes unchanged."""

    def mutator(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
        if len(data) > LARGE:
            return data
        try:
            tree = wire.decode(data)
            fn(tree, rng)
        except ValueError:  # the input, or a field inside it that the mutator reads, no longer decodes
            return data
        return wire.encode(tree)

    mutator.__name__ = fn.__name__
    return mutator


def _layers(tree: list[Field]) -> list[Field]:
    return [f for f in tree if f.kind in ("layer", "v1layer")]


def _set_data(blob: list[Field], values: np.ndarray) -> None:
    blob[:] = [f for f in blob if f.number not in (wire.BLOB_DATA, wire.BLOB_DOUBLE)]
    blob.append(Field(wire.BLOB_DATA, LEN, values.astype("<f4").tobytes()))


def shape(tree: list[Field], rng: random.Random) -> None:
    """Give a blob a hostile shape, half the time with data of the size it implies so that reading succeeds."""
    blobs = wire.messages(tree, "blob")
    if not blobs:
        return
    blob = rng.choice(blobs).value
    dims = rng.choice(SHAPES + [[d + rng.choice((-1, 1)) for d in wire.blob_shape(blob)] or [1]])
    blob[:] = [f for f in blob if f.number != wire.BLOB_SHAPE and not (1 <= f.number <= 4 and f.wire == VARINT)]
    if rng.random() < 0.25:  # legacy num/channels/height/width instead of a BlobShape
        blob += [Field(i + 1, VARINT, d) for i, d in enumerate(dims[:4])]
    elif rng.random() < 0.5:
        blob.append(Field(wire.BLOB_SHAPE, LEN, [wire.packed_dims(dims)], "shape"))
    else:
        blob.append(Field(wire.BLOB_SHAPE, LEN, [Field(wire.SHAPE_DIM, VARINT, d) for d in dims], "shape"))
    size = math.prod(dims)
    if rng.random() < 0.5 and 0 <= size <= 1 << 16:
        _set_data(blob, np.zeros(size, "<f4"))


def varint(tree: list[Field], rng: random.Random) -> None:
    """Any varint (a legacy dim, a V1 type enum, a dim written unpacked) becomes a boundary value."""
    found = wire.varints(tree)
    if found:
        rng.choice(found).value = rng.choice(INTERESTING_INTS)


def lie(tree: list[Field], rng: random.Random) -> None:
    """One length prefix lies; everything around it stays consistent, so the lie is what gets tested."""
    found = [f for f in _walk(tree) if f.wire == LEN]
    if found:
        f = rng.choice(found)
        size = len(wire.encode(f.value)) if isinstance(f.value, list) else len(f.value)
        f.length = rng.choice([size - 1, size + 1, 0, 2**31, 2**63, 2**64 - 1, max(size - 4, 0)]) % 2**64


def unpacked(tree: list[Field], rng: random.Random) -> None:
    """Write a blob's floats one field per value, as old writers did: all of them, after a packed half, as
    doubles, or broken by a foreign field in the middle; or a million of them."""
    blobs = wire.messages(tree, "blob")
    if not blobs:
        return
    blob = rng.choice(blobs).value
    values = wire.blob_values(blob)
    style = rng.choice(("float", "split", "double", "broken", "million"))
    if style == "million":
        values = np.zeros(10**6, "<f4")
        blob[:] = [f for f in blob if f.number != wire.BLOB_SHAPE and not 1 <= f.number <= 4]
        blob.append(Field(wire.BLOB_SHAPE, LEN, [wire.packed_dims([values.size])], "shape"))
    blob[:] = [f for f in blob if f.number not in (wire.BLOB_DATA, wire.BLOB_DOUBLE)]
    half = len(values) // 2 if style == "split" else 0
    if half:
        blob.append(Field(wire.BLOB_DATA, LEN, values[:half].astype("<f4").tobytes()))
    if style == "double":
        blob.append(wire.unpacked(wire.BLOB_DOUBLE, values, "<f8"))
    elif style == "broken" and len(values) > 1:
        cut = len(values) // 2
        blob += [wire.unpacked(wire.BLOB_DATA, values[:cut], "<f4"), Field(99, VARINT, 1),
                 wire.unpacked(wire.BLOB_DATA, values[cut:], "<f4")]
    else:
        blob.append(wire.unpacked(wire.BLOB_DATA, values[half:], "<f4"))


def empty_layers(tree: list[Field], rng: random.Random) -> None:
    """Insert many empty layer entries (rarely a million: that input takes seconds), or copies of a real one."""
    layers = _layers(tree)
    one = rng.choice(layers) if layers and rng.random() < 0.3 else Field(layers[0].number if layers else 100, LEN, b"")
    copies = 10 ** rng.randrange(1, 4) if one.value else 10**6 if rng.random() < 0.05 else 10 ** rng.randrange(1, 6)
    at = rng.randrange(len(tree) + 1)
    tree.insert(at, Field(one.number, wire.RAW, wire.encode([one]) * copies))


def layer(tree: list[Field], rng: random.Random) -> None:
    """Delete, repeat, swap, rename or retype a layer, or move it to the other format's field (V1 <-> V2)."""
    layers = _layers(tree)
    if not layers:
        return
    f = rng.choice(layers)
    action = rng.choice(("delete", "repeat", "swap", "rename", "retype", "refield"))
    i = tree.index(f)
    if action == "delete":
        del tree[i]
    elif action == "repeat":
        tree.insert(rng.randrange(len(tree) + 1), f)
    elif action == "swap":
        j = tree.index(rng.choice(layers))
        tree[i], tree[j] = tree[j], tree[i]
    elif action == "rename":
        names = [wire.layer_name(g).encode() for g in layers] + [b"\xff\xfe", b"\xc3"]
        name = rng.choice(names) if rng.random() < 0.5 else hostile_name(rng).encode()
        number = wire.LAYER_NAME[f.kind]
        f.value = [g for g in f.value if g.number != number] + [Field(number, LEN, name)]
    elif action == "retype":
        if f.kind == "layer":
            f.value = [g for g in f.value if g.number != 2] + [Field(2, LEN, rng.choice(TYPES).encode())]
        else:
            f.value = [g for g in f.value if g.number != 5] + [Field(5, VARINT, rng.randrange(70))]
    else:
        kind = "v1layer" if f.kind == "layer" else "layer"
        tree[i] = Field(2 if kind == "v1layer" else 100, LEN, wire.encode(f.value))


def blob(tree: list[Field], rng: random.Random) -> None:
    """Drop, repeat or move a blob; store it as doubles, as both floats and doubles, cut its bytes, or fill
    it with NaN."""
    layers = [f for f in _layers(tree) if any(g.kind == "blob" for g in f.value)]
    if not layers:
        return
    owner = rng.choice(layers).value
    f = rng.choice([g for g in owner if g.kind == "blob"])
    action = rng.choice(("drop", "repeat", "move", "double", "both", "cut", "nan"))
    values = wire.blob_values(f.value)
    data = [g for g in f.value if g.number == wire.BLOB_DATA and g.wire == LEN]
    if action == "drop":
        owner.remove(f)
    elif action == "repeat":
        owner.append(f)
    elif action == "move":
        owner.remove(f)
        rng.choice(_layers(tree)).value.append(f)
    elif action in ("double", "both"):
        if action == "double":
            f.value[:] = [g for g in f.value if g not in data]
        f.value.append(Field(wire.BLOB_DOUBLE, LEN, values.astype("<f8").tobytes()))
    elif action == "cut" and data:
        data[0].value = data[0].value[:-rng.randrange(1, 4)]
    elif action == "nan":
        _set_data(f.value, np.full(values.size, rng.choice([np.nan, np.inf, -np.inf, 3e38]), "<f4"))


def _walk(fields: list[Field]):
    for f in fields:
        yield f
        if isinstance(f.value, list):
            yield from _walk(f.value)


STRUCTURED = [_on_tree(fn) for fn in (shape, varint, lie, unpacked, empty_layers, layer, blob)]


def mutate(data: bytes, rng: random.Random, others: Sequence[bytes]) -> tuple[bytes, list[str]]:
    return chain(data, rng, others, STRUCTURED, p_structured=0.75)
