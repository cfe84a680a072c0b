"""Seed inputs, from the ground truth beside the checkout (``<repo>/../shared``).

Weights seeds are the layer cases' Caffe-written caffemodels (kilobytes each, so thousands of inputs a minute);
the net cases' weights are 80-540 MB once materialised, so their nets are only prototxt seeds (every published
prototxt is, the net cases' included). HDF5 seeds are the same weights in Caffe's HDF5 layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fuzz import hdf5, wire

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LAYER_CASES = SHARED / "fixtures" / "layers"
PUBLISHED = SHARED / "published"
FORMATS = ("prototxt", "caffemodel", "hdf5")

#: Values for the ``${NAME}`` template variables of DeepLab's published prototxts.
DEFINES = {"NET_ID": "net", "EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "TRAIN_SET": "train",
           "FEATURE_DIR": "/f", "NUM_LABELS": "21", "MODEL": "m", "LIST_DIR": "/l"}
#: Seeds up to this size are picked most often; a bigger one proportionally less (the 370 kB ResNet-101 net
#: about once per 50 picks of a layer case), since its every input costs that much more to parse.
SMALL = 8192


@dataclass(frozen=True)
class Seed:
    name: str  # relative to ../shared
    data: bytes  # the file that gets mutated
    weight: float  # how often it is picked, relative to the others
    prototxt: Path | None = None  # weights seeds: the net they belong to
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict, compare=False)  # HDF5 seeds: the arrays


def available() -> bool:
    return LAYER_CASES.is_dir() and PUBLISHED.is_dir()


def load(fmt: str) -> list[Seed]:
    if fmt == "prototxt":
        paths = sorted(LAYER_CASES.glob("*/net.prototxt")) + sorted(PUBLISHED.rglob("*.prototxt"))
        return [Seed(_name(p), p.read_bytes(), min(1.0, SMALL / p.stat().st_size)) for p in paths]
    binary = [Seed(_name(p), p.read_bytes(), 1.0, p.parent / "net.prototxt")
              for p in sorted(LAYER_CASES.glob("*/weights.caffemodel"))]
    if fmt == "caffemodel":
        return binary
    if fmt == "hdf5":
        with_blobs = [(s, wire.weights(s.data)) for s in binary]
        return [Seed(s.name, hdf5.write(b)[0], 1.0, s.prototxt, b) for s, b in with_blobs if any(b.values())]
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _name(path: Path) -> str:
    return str(path.relative_to(SHARED))
