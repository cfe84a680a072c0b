"""``python -m fuzz``: run the fuzzers and print what they found, or replay / minimise a saved finding."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuzz import harness, seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--format", choices=seeds.FORMATS + ("all",), default="all")
    parser.add_argument("--count", type=int, help="inputs per format (default 1000 without --seconds)")
    parser.add_argument("--seconds", type=float, help="time budget per format")
    parser.add_argument("--seed", type=int, default=0, help="makes the run reproducible")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="reproducers go here")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it is a hang")
    parser.add_argument("--memory", type=float, default=4.0, help="worker address-space limit, GiB")
    parser.add_argument("--replay", type=Path, metavar="FINDING", help="run a saved finding (a folder in --out)")
    parser.add_argument("--minimize", type=Path, metavar="FINDING", help="delta-debug a saved finding")
    args = parser.parse_args(argv)
    limits = {"timeout": args.timeout, "memory": int(args.memory * 2**30)}

    if args.replay:
        outcome = harness.replay(args.replay, **limits)
        if outcome.cls in harness.ACCEPTED:
            print(outcome.cls, outcome.message)
            return 0
        print(f"{outcome.signature}\n{outcome.type}: {outcome.message}\n{outcome.detail}")
        return 1
    if args.minimize:
        path = harness.minimize(args.minimize, **limits)
        print(f"{path}: {path.stat().st_size} bytes")
        return 0
    if not seeds.available():
        print(f"{seeds.SHARED} is absent: no seeds, nothing to fuzz")
        return 0

    count = args.count if args.count is not None or args.seconds is not None else 1000
    formats = seeds.FORMATS if args.format == "all" else (args.format,)
    reports = []
    for fmt in formats:
        reports.append(harness.fuzz(fmt, count=count, seconds=args.seconds, seed=args.seed, jobs=args.jobs,
                                    out=args.out, **limits))
        print_report(reports[-1])
    return any(r.bad for r in reports)


def print_report(report: harness.Report) -> None:
    counts = "  ".join(f"{cls} {report.counts[cls]}" for cls in harness.CLASSES if report.counts[cls])
    rate = report.total / report.seconds if report.seconds else 0.0
    print(f"{report.fmt}: {report.total} inputs in {report.seconds:.0f} s ({rate:.1f}/s): {counts}")
    for signature, finding in sorted(report.findings.items()):
        print(f"  {finding.count:6d}  {signature}" + (f"  -> {finding.folder}" if finding.folder else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
