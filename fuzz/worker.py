"""The worker process: imports torch and protoseg once, then runs inputs one by one under an address-space
limit, answering one JSON line per input on its original stdout.

Protocol: the harness writes ``{"target", "path", "prototxt", "defines", "timeout"}`` lines; the worker
answers ``ready`` once, then per input ``{"class", "type", "message", "frame", "detail", "recycle"}``.

A hang is caught in Python first: at 80 % of the timeout SIGALRM raises :class:`Hang` between two bytecodes,
so its traceback names the frame. Code stuck in C never sees it; at 90 % faulthandler dumps the stack to
stderr (which the worker empties before each input) and the harness kills the worker at 100 %. The dump is
left that late because faulthandler reads the frames without the GIL: taken while Python code runs, it can
crash the process itself.
"""

from __future__ import annotations

import argparse
import faulthandler
import glob
import json
import os
import re
import resource
import signal
import sys
import traceback
import warnings
from pathlib import Path

from fuzz.mutate import CANARY

_ALLOCATION = re.compile(r"can't allocate memory|not enough memory|out of memory|bad_alloc", re.IGNORECASE)


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that protoseg's ``except Exception`` cannot swallow it."""


def _alarm(signum, frame) -> None:
    raise Hang("still running at 80 % of the timeout")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", type=int, required=True, help="address-space limit, bytes")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (Python or C) must not corrupt the answers
    faulthandler.enable()
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")

    import torch

    from fuzz import targets

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    answers.write("ready\n")
    for line in sys.stdin:
        job = json.loads(line)
        os.ftruncate(2, 0)
        os.lseek(2, 0, os.SEEK_SET)
        faulthandler.dump_traceback_later(job["timeout"] * 0.9)
        signal.setitimer(signal.ITIMER_REAL, job["timeout"] * 0.8)
        try:
            outcome = run(targets, job)
        except Hang as e:  # caught here, not in run(), so that it may fire inside run()'s own handlers
            outcome = _describe("hang", e, targets.PACKAGE)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
        created = glob.glob(CANARY + "*")
        if created:
            for path in created:
                os.remove(path)
            outcome = {"class": "wrote-outside", "type": "", "message": f"created {', '.join(created)}", "frame": ""}
        # An interrupted input may leave state behind, and a worker that grew past half its limit could fail
        # the next input for want of room: the harness starts a fresh one.
        outcome["recycle"] = outcome["class"] == "hang" or _address_space() > args.memory // 2
        answers.write(json.dumps(outcome) + "\n")


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run(targets, job: dict) -> dict:
    """Run one input and classify what happened."""
    try:
        if job["target"] == "prototxt":
            status = targets.prototxt(Path(job["path"]), job["defines"])
        else:
            status = targets.weights(Path(job["path"]), Path(job["prototxt"]), job["defines"])
        return {"class": status, "type": "", "message": "", "frame": ""}
    except targets.USER_ERROR as e:
        return _describe("protoseg-error", e, targets.PACKAGE)
    except Exception as e:  # noqa: BLE001 (classifying every exception is the point)
        memory = isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and _ALLOCATION.search(str(e)))
        outcome = _describe("memory" if memory else "other", e, targets.PACKAGE)
        if isinstance(e, targets.ShapeMismatch):
            outcome["frame"] = e.where
        return outcome


def _describe(cls: str, e: BaseException, package: Path) -> dict:
    """The class, exception and innermost protoseg frame (``protoseg/io/weights.py:_blob:170``)."""
    frame = ""
    for entry in traceback.extract_tb(e.__traceback__):
        path = Path(entry.filename).resolve()
        if path.is_relative_to(package):
            frame = f"protoseg/{path.relative_to(package)}:{entry.name}:{entry.lineno}"
    detail = "".join(traceback.format_exception(e))[-6000:]
    return {"class": cls, "type": type(e).__name__, "message": str(e)[:2000], "frame": frame, "detail": detail}


if __name__ == "__main__":
    main()
