"""A short mutation-fuzzing run of each format: every input must end ok or in a ProtosegError.

Inputs are fixed by the seed and the count, so a failure reproduces; the message lists each finding with its
reproducer (replay it with ``python -m fuzz --replay FOLDER``). Longer runs: ``python -m fuzz``, fuzz/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import harness, seeds
from tests.conftest import need

SEED = 1
#: Inputs per format, about 15 s each on a 2-core machine (inputs that hang take the 10 s timeout more).
COUNTS = {"prototxt": 300, "caffemodel": 150, "hdf5": 100}


@pytest.mark.parametrize("fmt", seeds.FORMATS)
def test_fuzzed_inputs_end_ok_or_in_protoseg_errors(fmt: str, tmp_path: Path) -> None:
    need(seeds.LAYER_CASES)
    need(seeds.PUBLISHED)
    report = harness.fuzz(fmt, count=COUNTS[fmt], seed=SEED, out=tmp_path)
    bad = report.bad
    findings = "\n".join(f"{f.count:5d}  {signature}  -> {f.folder}" for signature, f in sorted(report.findings.items()))
    assert bad == 0, f"{bad} of {report.total} {fmt} inputs did not end ok or in a ProtosegError:\n{findings}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_a_mutator_reading_a_broken_packed_shape_leaves_the_input_unchanged() -> None:
    """A caffemodel whose BlobShape's packed dims end mid-varint (as earlier mutations leave them) decodes as a
    tree, but the shape mutator cannot read its dims: the input passes unchanged instead of killing the fuzzer's
    generator thread (a long run lost one of its two workers this way)."""
    import random

    from fuzz import caffemodel

    blob = _message(7, _message(1, b"\x80"))  # BlobProto.shape { dim: <a varint cut short> }
    data = _message(100, _message(1, b"conv") + _message(7, blob))  # NetParameter.layer { name, blobs }
    shape = next(m for m in caffemodel.STRUCTURED if m.__name__ == "shape")
    assert shape(data, random.Random(0), []) == data
