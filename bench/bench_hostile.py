#!/usr/bin/env python3
"""Time and memory protoseg spends refusing hostile files (issue 8's bar: < 2 s and < 300 MB each).

    python bench/bench_hostile.py [--keep DIR]

Writes, in a temporary folder (or ``--keep``): a 100 MB binary caffemodel of empty V2 layers, the same of empty
V1 layers, and a 1 GB file of random bytes; then, each in a fresh subprocess, opens every one the way ``protoseg
verify`` / ``run`` would (the caffemodel reader; the random file also as a prototxt and as HDF5 weights), and
prints the outcome, the seconds taken and the peak resident memory above the interpreter's baseline (taken
after protoseg and torch are imported). Nothing is asserted: it is a measurement, with the CPU named.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: Runs in the subprocess: open one file one way, report outcome, seconds and peak RSS growth.
PROBE = r"""
import json, resource, sys, time
import torch, protoseg.loader, protoseg.io.weights, protoseg.io.prototxt
from protoseg.errors import ProtosegError
kind, path = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    if kind == "prototxt":
        protoseg.io.prototxt.read_prototxt(path)
    else:
        protoseg.io.weights.read_weights(path)
    outcome = "loaded"
except ProtosegError as e:
    outcome = f"{type(e).__name__}: {str(e)[:150]}"
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "mb": grown}))
"""


def write_files(folder: Path) -> dict[str, Path]:
    files = {"empty V2 layers, 100 MB": folder / "empty_v2.caffemodel",
             "empty V1 layers, 100 MB": folder / "empty_v1.caffemodel",
             "random bytes, 1 GB": folder / "random.bin"}
    size = 100 * 2**20
    if not files["empty V2 layers, 100 MB"].exists():
        files["empty V2 layers, 100 MB"].write_bytes(b"\xa2\x06\x00" * (size // 3))  # field 100 (layer), length 0
    if not files["empty V1 layers, 100 MB"].exists():
        files["empty V1 layers, 100 MB"].write_bytes(b"\x12\x00" * (size // 2))  # field 2 (layers), length 0
    random = files["random bytes, 1 GB"]
    if not random.exists():
        with open(random, "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(2**20))
    return files


def probe(kind: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, kind, str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        return {"outcome": f"exit {result.returncode}: {result.stderr.strip()[-300:]}", "seconds": float("nan"),
                "mb": float("nan")}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="folder to write the files to and keep them in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="protoseg-hostile-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_files(folder)
        cases = [(name, "caffemodel", path) for name, path in files.items()]
        random = files["random bytes, 1 GB"]
        cases += [("random bytes, 1 GB, as prototxt", "prototxt", random)]
        h5 = folder / "random.caffemodel.h5"
        if not h5.exists():
            os.link(random, h5)
        cases += [("random bytes, 1 GB, as HDF5", "caffemodel", h5)]
        print(f"refusing hostile files; {cpu_name()}, {datetime.date.today()}")
        print(f"{'file':<36} {'seconds':>8} {'MB':>7}  outcome")
        for name, kind, path in cases:
            r = probe(kind, path)
            print(f"{name:<36} {r['seconds']:8.2f} {r['mb']:7.0f}  {r['outcome']}")


if __name__ == "__main__":
    main()
