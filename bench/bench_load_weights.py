#!/usr/bin/env python3
"""Time and peak memory of loading a big caffemodel: protoseg's wire scan against plain protobuf-Python.

    python bench/bench_load_weights.py [WEIGHTS.caffemodel]

Without a path, the ``fcn8s_deploy`` net case of ../shared/fixtures is materialized (about 540 MB, the size
of the published FCN-8s caffemodel) into a temporary folder. Each loader runs in its own fresh process, so
its peak RSS (``ru_maxrss``) is its own; both sum every array, so lazily mapped pages are really read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
CASE = "fcn8s_deploy"


def load_protoseg(path: str) -> list:
    from protoseg.io.weights import read_weights

    return [a for blobs in read_weights(path).values() for a in blobs]


def load_protobuf(path: str) -> list:
    """What scripts without pycaffe do: parse the whole message, then turn each repeated field into an array."""
    import numpy as np

    from protoseg.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    arrays = []
    for layer in list(net.layer) + list(net.layers):
        for blob in layer.blobs:
            legacy = blob.HasField("num") or blob.HasField("channels") or blob.HasField("height")
            shape = (blob.num, blob.channels, blob.height, blob.width) if legacy else tuple(blob.shape.dim)
            arrays.append(np.array(blob.data, dtype=np.float32).reshape(shape))
    return arrays


LOADERS = {"protoseg": load_protoseg, "protobuf": load_protobuf}


def child(method: str, path: str) -> None:
    """Measure one loader in this (fresh) process and print the figures as JSON."""
    import numpy as np

    if method == "protobuf":
        from protoseg.proto import caffe_pb2  # noqa: F401  imports are not part of the load
    else:
        import protoseg.io.weights  # noqa: F401
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    arrays = LOADERS[method](path)
    checksum = sum(float(a.sum(dtype=np.float64)) for a in arrays)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "base_kib": base, "arrays": len(arrays),
                      "checksum": checksum}))


def run(method: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--child", method, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench(path: Path) -> None:
    size = path.stat().st_size
    print(f"{path}: {size / 2**20:.1f} MiB")
    results = {m: run(m, path) for m in LOADERS}
    for m, r in results.items():
        peak = r["peak_kib"] * 1024
        print(f"{m:9s} {r['seconds']:7.2f} s   peak RSS {peak / 2**20:7.1f} MiB "
              f"({peak / size:.2f}x file; {r['base_kib'] / 1024:.0f} MiB before loading)   "
              f"{r['arrays']} arrays, checksum {r['checksum']:.6g}")
    ours, theirs = results["protoseg"], results["protobuf"]
    if ours["arrays"] != theirs["arrays"] or not math.isclose(ours["checksum"], theirs["checksum"], rel_tol=1e-9):
        raise SystemExit("the two loaders disagree")
    print(f"protobuf / protoseg: {theirs['seconds'] / ours['seconds']:.1f}x time, "
          f"{theirs['peak_kib'] / ours['peak_kib']:.1f}x peak RSS")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="?", type=Path, help=f"default: materialize the {CASE} net case")
    ap.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, str(args.weights))
        return
    if args.weights:
        bench(args.weights)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{CASE}.caffemodel"
        subprocess.run([sys.executable, str(FIXTURES / "materialize.py"), str(FIXTURES / "nets" / CASE),
                        str(path), "--format", "v2"], check=True)
        bench(path)


if __name__ == "__main__":
    main()
