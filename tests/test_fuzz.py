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
