"""HDF5 caffemodels built with h5py around a seed's blobs: Caffe's layout (``/data/<layer>/<i>``) plus one
hostile edit (link loops and cycles, external links, huge declared shapes, wrong dtypes, odd names), then
sometimes byte flips of the result.

Inputs are run as ``input.h5`` (see :data:`NAME`), so an external link to that name points at the file itself.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np

from fuzz.mutate import chain, hostile_name

NAME = "input.h5"
Blobs = Mapping[str, Sequence[np.ndarray]]

#: Declared shapes far beyond memory; chunked and compressed, the file stays a few kilobytes.
HUGE_SHAPES = [(2**31,), (2**20, 2**20), (2**16,) * 4, (0, 2**40), (2**40, 0), (1, 2**33), (2**28,)]
DTYPES = [np.int32, np.int8, np.uint64, np.bool_, np.float16, ">f4", ">f8", np.complex64, "S8",
          h5py.string_dtype(), np.dtype([("a", "<f4"), ("b", "<f4")]), np.dtype("(2,)f4"), np.dtype("V4"),
          h5py.enum_dtype({"a": 0, "b": 1}, basetype="i1"), h5py.ref_dtype]
LINK_TARGETS = [NAME, "/nonexistent/weights.h5", "/etc/passwd", "/dev/zero", "."]


def write(blobs: Blobs, edit: Callable[[h5py.File, random.Random], None] | None = None,
          rng: random.Random | None = None, **options) -> tuple[bytes, bool]:
    """Caffe's HDF5 layout of ``blobs`` (a name with '/' nests, as in Caffe's files), then ``edit``; returns
    the file and whether h5py accepted the whole edit (a partial one still makes a useful input)."""
    out = io.BytesIO()
    done = True
    with h5py.File(out, "w", **options) as f:
        data = f.create_group("data")
        for name, arrays in blobs.items():
            group = data.require_group(name)
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)
        if edit:
            try:
                edit(f, rng)
            except (ValueError, KeyError, TypeError, OSError, RuntimeError):
                done = False
    return out.getvalue(), done


def _datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f["data"].visititems(lambda name, obj: found.append(f"data/{name}") if isinstance(obj, h5py.Dataset) else None)
    return found


def _groups(f: h5py.File) -> list[str]:
    return sorted({path.rsplit("/", 1)[0] for path in _datasets(f)})


def soft_link_loop(f: h5py.File, rng: random.Random) -> None:
    """A dataset that links to itself, a layer that links to /data, two links to each other, or a dangling one."""
    path = rng.choice(_datasets(f))
    group = path.rsplit("/", 1)[0]
    style = rng.randrange(4)
    if style == 0:
        del f[path]
        f[path] = h5py.SoftLink("/" + path)
    elif style == 1:
        del f[group]
        f[group] = h5py.SoftLink("/data")
    elif style == 2:
        f["data/ping"] = h5py.SoftLink("/data/pong")
        f["data/pong"] = h5py.SoftLink("/data/ping")
    else:
        del f[path]
        f[path] = h5py.SoftLink("/nowhere")


def hard_link_cycle(f: h5py.File, rng: random.Random) -> None:
    """A layer group that contains /data or itself (a cycle), or a second name for a layer."""
    group = rng.choice(_groups(f))
    target = rng.choice(["data", group])
    f[f"{group}/loop" if rng.random() < 0.7 else "data/alias"] = f[target]


def external_link(f: h5py.File, rng: random.Random) -> None:
    """A dataset, a layer or /data itself links into another file: this one, a missing one, a non-HDF5 one."""
    path = rng.choice(_datasets(f) + _groups(f) + ["data"])
    del f[path]
    f[path] = h5py.ExternalLink(rng.choice(LINK_TARGETS), rng.choice(["/" + path, "/data", "/"]))


def huge_shape(f: h5py.File, rng: random.Random) -> None:
    """A blob that declares billions of values it never stores (chunked, gzip, fill value)."""
    path = rng.choice(_datasets(f))
    del f[path]
    f.create_dataset(path, shape=rng.choice(HUGE_SHAPES), dtype="<f4", chunks=True, compression="gzip",
                     fillvalue=0.0)


def wrong_dtype(f: h5py.File, rng: random.Random) -> None:
    """A blob of integers, strings, a compound, an enum, references, half floats, big-endian, or empty."""
    path = rng.choice(_datasets(f))
    shape = f[path].shape
    del f[path]
    dtype = rng.choice(DTYPES + ["empty", "scalar"])
    if dtype == "empty":
        f[path] = h5py.Empty("<f4")
    elif dtype == "scalar":
        f.create_dataset(path, data=np.float32(1))
    else:
        f.create_dataset(path, shape=shape, dtype=dtype)  # zeros of the wrong kind, the right shape


def odd_names(f: h5py.File, rng: random.Random) -> None:
    """Blob names other than 0..n-1, hostile layer names, layers nested hundreds deep, thousands of layers,
    or a dataset where a group belongs."""
    path = rng.choice(_datasets(f))
    group = path.rsplit("/", 1)[0]
    style = rng.randrange(5)
    if style == 0:
        f.move(path, f"{group}/{rng.choice(['00', '-1', ' 0', '1', '7', '0.0', '٠'])}")
    elif style == 1:
        name = hostile_name(rng).replace(".", "_") or "_"
        f.move(group, f"data/{name}")
    elif style == 2:
        f.create_dataset("data/" + "/".join(["n"] * rng.choice([100, 1000, 3000])) + "/0", data=np.zeros(1, "<f4"))
    elif style == 3:
        for i in range(rng.choice([100, 2000])):
            f.create_group(f"data/empty{i}")
    else:
        del f[group]
        f[group] = np.zeros(3, "<f4")


EDITS = [soft_link_loop, hard_link_cycle, external_link, huge_shape, wrong_dtype, odd_names]


def mutate(blobs: Blobs, rng: random.Random, others: Sequence[bytes]) -> tuple[bytes, list[str]]:
    """One hostile edit (or none: the plain file, sometimes behind a 512-byte user block), then byte mutations:
    always after no edit, sometimes after one."""
    edit = rng.choice(EDITS + [None])
    options = {"userblock_size": 512} if edit is None and rng.random() < 0.3 else {}
    data, done = write(blobs, edit, rng, **options)
    names = [(edit.__name__ + ("" if done else "(partial)")) if edit else "plain" + ("+userblock" if options else "")]
    if edit is None or rng.random() < 0.3:
        data, more = chain(data, rng, others, structured=(), p_structured=0.0)
        names += more
    return data, names
