#!/usr/bin/env python3
"""Dataset throughput of ``protoseg run``: one process against ``torchrun`` with several, same images, same
threads in all.

    python bench/bench_run.py [--net largefov] [--images 200] [--procs 2] [--threads 2] [--weights-dir DIR]

The images are the real photographs of ../shared/images, copied round-robin to ``--images`` files. The net is
one of bench_infer.py's (its published prototxt, fixture-protocol weights materialized once into
``--weights-dir``), or ``demo`` (the bundled 64 x 64 net, which measures mostly the per-image overhead). It
runs ``python -m protoseg run`` with ``--threads`` intra-op threads, then ``torchrun --nproc-per-node P -m
protoseg run`` with ``threads / P`` each, timing each command whole (start-up, loading and writing
included), and checks that the label PNGs of both runs are identical. It prints images per second, the
speed-up, the CPU and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import DEFINES, NETS, SHARED, cpu_name, materialize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def photos() -> list[Path]:
    found = sorted(p for p in (SHARED / "images").glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photographs in {SHARED / 'images'}")
    return found


def net_args(name: str, weights_dir: Path) -> list[str]:
    if name == "demo":
        from protoseg.run.demo import DEMO_DIR

        return [str(DEMO_DIR / "demo.prototxt"), str(DEMO_DIR / "demo.caffemodel")]
    case = NETS[name][0]
    spec = json.loads((SHARED / "fixtures" / "nets" / case / "case.json").read_text())
    defines = [a for k, v in {**DEFINES, **spec.get("defines", {})}.items() for a in ("-D", f"{k}={v}")]
    return [str(SHARED / spec["prototxt"]), str(materialize(case, weights_dir)), *defines]


def timed(command: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="largefov", choices=["demo", *NETS])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads in all, split among processes")
    parser.add_argument("--weights-dir", type=Path, default=Path(tempfile.gettempdir()) / "protoseg-bench")
    args = parser.parse_args()
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    net = net_args(args.net, args.weights_dir)

    with tempfile.TemporaryDirectory(prefix="protoseg-bench-run-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        sources = photos()
        for i in range(args.images):
            source = sources[i % len(sources)]
            shutil.copyfile(source, images / f"{i:04d}_{source.name}")
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        run = ["-m", "protoseg", "run", *net, str(images)]
        t1 = timed([sys.executable, *run, "-o", str(one)], args.threads)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.procs}"]
        tn = timed([*torchrun, *run, "-o", str(many)], max(1, args.threads // args.procs))
        labels = sorted(p.name for p in one.glob("*.png") if not p.name.endswith("_uncertainty.png"))
        same = labels == sorted(p.name for p in many.glob("*.png") if not p.name.endswith("_uncertainty.png")) and all(
            np.array_equal(np.asarray(Image.open(one / n)), np.asarray(Image.open(many / n))) for n in labels)

    print(f"protoseg run, {args.net}, {args.images} photos; {cpu_name()}, {args.threads} threads in all, "
          f"{datetime.date.today()}")
    print(f"{'processes':>10} {'seconds':>9} {'images/s':>9}")
    print(f"{1:>10} {t1:9.1f} {args.images / t1:9.2f}")
    print(f"{args.procs:>10} {tn:9.1f} {args.images / tn:9.2f}   ({t1 / tn:.2f}x; labels identical: {same})")


if __name__ == "__main__":
    main()
