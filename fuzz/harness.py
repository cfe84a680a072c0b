"""Generate inputs, run them in long-lived workers, classify the outcomes, keep one reproducer per finding.

Input ``i`` of a run depends only on (format, ``--seed``, ``i``), never on timing or ``--jobs``, so any input
can be made again. The worker (:mod:`fuzz.worker`) pays Python's and torch's start-up once and is restarted
only after a hang (it is killed at the timeout) or a crash.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fuzz import caffemodel, hdf5, prototxt, seeds, wire
from fuzz.mutate import CANARY
from fuzz.seeds import Seed

#: Outcomes that are not findings: protoseg ran, or refused the input with its own error.
ACCEPTED = ("ok", "ok-too-big", "protoseg-error")
CLASSES = ACCEPTED + ("other", "hang", "memory", "crash", "wrote-outside")
EXTENSIONS = {"prototxt": ".prototxt", "caffemodel": ".caffemodel", "hdf5": Path(hdf5.NAME).suffix}
MUTATE = {
    "prototxt": lambda seed, rng, others: prototxt.mutate(seed.data, rng, others),
    "caffemodel": lambda seed, rng, others: caffemodel.mutate(seed.data, rng, others),
    "hdf5": lambda seed, rng, others: hdf5.mutate(seed.blobs, rng, others),
}
STARTUP_TIMEOUT = 120.0
_DUMPED_FRAME = re.compile(r'File "[^"]*/(protoseg/[^"]+)", line (\d+) in (\S+)')
_MEMORY = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|out of memory")


@dataclass
class Case:
    fmt: str
    index: int
    seed: Seed
    data: bytes
    mutators: list[str]


@dataclass
class Outcome:
    cls: str
    type: str = ""  # exception type, or the signal that killed the worker
    message: str = ""
    frame: str = ""  # innermost protoseg frame, "protoseg/io/weights.py:_blob:170"
    detail: str = ""  # traceback, or the worker's stderr (faulthandler's dump) after a hang or a crash

    @property
    def signature(self) -> str:
        """What findings are deduplicated by: class, exception type and innermost protoseg function."""
        where = self.frame.rsplit(":", 1)[0] if re.search(r":\d+$", self.frame) else self.frame
        where = where or "no protoseg frame"
        if self.cls == "wrote-outside":
            return self.cls
        kind = f"{self.type} " if self.type and self.cls != "hang" else ""
        return f"{self.cls}: {kind}in {where}"


def generate(fmt: str, seed_list: list[Seed], run_seed: int, index: int) -> Case:
    rng = random.Random(f"{run_seed}:{fmt}:{index}")
    seed = rng.choices(seed_list, weights=[s.weight for s in seed_list])[0]
    data, mutators = MUTATE[fmt](seed, rng, [s.data for s in seed_list])
    return Case(fmt, index, seed, data, mutators)


class Worker:
    """One worker process with its scratch folder; started on first use and again after a hang or a crash."""

    def __init__(self, scratch: Path, timeout: float, memory: int) -> None:
        self.scratch, self.timeout, self.memory = scratch, timeout, memory
        self.proc: subprocess.Popen | None = None
        scratch.mkdir(parents=True, exist_ok=True)

    def run(self, fmt: str, data: bytes, net: Path | None) -> Outcome:
        """Run one input, written as ``input.<ext>``, through the format's target."""
        path = self.scratch / ("input" + EXTENSIONS[fmt])
        path.write_bytes(data)
        job = {"target": "prototxt" if fmt == "prototxt" else "weights", "path": str(path),
               "prototxt": str(net) if net else None, "defines": seeds.DEFINES, "timeout": self.timeout}
        if self.proc is None:
            self._start()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            line = self._readline(self.timeout)
        except BrokenPipeError:
            line = ""
        if line is None:  # stuck in C code, where the worker's own alarm cannot interrupt it
            self.close()
            return Outcome("hang", message=f"no answer in {self.timeout:g} s", frame=self._dumped_frame(),
                           detail=self._stderr())
        if not line:
            return self._died()
        answer = json.loads(line)
        if answer["recycle"]:
            self.close()
        return Outcome(answer["class"], answer["type"], answer["message"], answer["frame"], answer.get("detail", ""))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(seeds.ROOT), os.environ.get("PYTHONPATH", "")]),
                   PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(self.scratch / "stderr.txt", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fuzz.worker", "--memory", str(self.memory)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=self.scratch, env=env, bufsize=0,
            )
        if self._readline(STARTUP_TIMEOUT) != "ready":
            self.close()
            raise RuntimeError(f"the fuzz worker did not start:\n{self._stderr()}")

    def _readline(self, timeout: float) -> str | None:
        """The worker's next answer; None on timeout, "" when it died."""
        fd, buf = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            buf += chunk
        return buf.decode().strip()

    def _died(self) -> Outcome:
        code = self.proc.wait()
        self.proc = None
        text = self._stderr()
        how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
        fatal = [line for line in text.splitlines() if "Fatal Python error" in line or "Error" in line]
        cls = "memory" if _MEMORY.search(text) else "crash"
        return Outcome(cls, how, fatal[0] if fatal else how, self._dumped_frame(), text)

    def _stderr(self) -> str:
        return (self.scratch / "stderr.txt").read_bytes()[-6000:].decode("utf-8", "replace")

    def _dumped_frame(self) -> str:
        """The innermost protoseg frame of faulthandler's dump (most recent call first)."""
        match = _DUMPED_FRAME.search(self._stderr())
        return f"{match[1]}:{match[3]}:{match[2]}" if match else ""


@dataclass
class Finding:
    outcome: Outcome
    count: int = 0
    folder: Path | None = None


@dataclass
class Report:
    fmt: str
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def bad(self) -> int:
        return sum(n for cls, n in self.counts.items() if cls not in ACCEPTED)

    def add(self, case: Case, outcome: Outcome, out: Path | None, run_seed: int) -> None:
        self.counts[outcome.cls] += 1
        if outcome.cls in ACCEPTED:
            return
        finding = self.findings.setdefault(outcome.signature, Finding(outcome))
        finding.count += 1
        if out is not None:
            finding.folder = save(out, case, outcome, run_seed)


def fuzz(fmt: str, *, count: int | None = None, seconds: float | None = None, seed: int = 0, jobs: int = 1,
         out: Path | None = None, timeout: float = 10.0, memory: int = 4 << 30) -> Report:
    """Run ``count`` inputs, or as many as fit in ``seconds``, of one format on ``jobs`` workers."""
    if count is None and seconds is None:
        raise ValueError("give count, seconds or both")
    seed_list = seeds.load(fmt)
    for path in Path(CANARY).parent.glob(Path(CANARY).name + "*"):
        path.unlink()  # left by an earlier run; would be blamed on this one's first input
    report, lock, indices = Report(fmt), threading.Lock(), itertools.count()
    start = time.monotonic()

    def loop(worker: Worker) -> None:
        while True:
            with lock:
                i = next(indices)
            if (count is not None and i >= count) or (seconds is not None and time.monotonic() - start > seconds):
                return
            case = generate(fmt, seed_list, seed, i)
            outcome = worker.run(fmt, case.data, case.seed.prototxt)
            with lock:
                report.add(case, outcome, out, seed)

    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        workers = [Worker(Path(scratch) / str(j), timeout, memory) for j in range(jobs)]
        threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in workers:
                w.close()
    report.seconds = time.monotonic() - start
    return report


def save(out: Path, case: Case, outcome: Outcome, run_seed: int) -> Path:
    """Keep the smallest input seen per signature as ``out/<format>-<signature>/input.<ext>``, with
    ``outcome.txt`` and, for weights, the seed's ``net.prototxt``."""
    folder = out / f"{case.fmt}-{re.sub(r'[^A-Za-z0-9_]+', '-', outcome.signature).strip('-')[:100]}"
    path = folder / ("input" + EXTENSIONS[case.fmt])
    if path.exists() and path.stat().st_size <= len(case.data):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(case.data)
    if case.seed.prototxt:
        shutil.copyfile(case.seed.prototxt, folder / "net.prototxt")
    (folder / "outcome.txt").write_text(
        f"signature: {outcome.signature}\n"
        f"what: {outcome.type + ': ' if outcome.type else ''}{outcome.message}\n"
        f"frame: {outcome.frame}\n"
        f"seed file: {case.seed.name}\n"
        f"mutators: {', '.join(case.mutators)}\n"
        f"made by: python -m fuzz --format {case.fmt} --seed {run_seed} (input {case.index})\n"
        f"replay: python -m fuzz --replay {folder}\n\n{outcome.detail}\n"
    )
    return folder


def _finding_files(folder: Path) -> tuple[str, Path, Path | None]:
    """(format, input file, net.prototxt or None) of a saved finding."""
    for fmt, ext in EXTENSIONS.items():
        if (folder / ("input" + ext)).exists():
            net = folder / "net.prototxt"
            return fmt, folder / ("input" + ext), net if fmt != "prototxt" else None
    raise FileNotFoundError(f"{folder}: no input.* file; pass a folder written by --out")


def replay(folder: Path, timeout: float = 10.0, memory: int = 4 << 30) -> Outcome:
    """Run a saved finding again, in a fresh worker."""
    fmt, path, net = _finding_files(folder)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        worker = Worker(Path(scratch), timeout, memory)
        try:
            return worker.run(fmt, path.read_bytes(), net)
        finally:
            worker.close()


def minimize(folder: Path, timeout: float = 10.0, memory: int = 4 << 30) -> Path:
    """Delta-debug a saved finding to a smaller input with the same signature: prototxt by lines, caffemodel
    by top-level fields then bytes. Writes ``minimal.<ext>`` beside the input."""
    fmt, path, net = _finding_files(folder)
    if fmt == "hdf5":
        raise ValueError("HDF5 inputs are built with h5py; minimise them by hand")
    data = path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        worker = Worker(Path(scratch), timeout, memory)
        try:
            target = worker.run(fmt, data, net).signature

            def same(units: list[bytes]) -> bool:
                return worker.run(fmt, b"".join(units), net).signature == target

            if fmt == "prototxt":
                units = ddmin(data.splitlines(keepends=True), same)
            else:
                try:
                    units = ddmin([wire.encode([f]) for f in wire.decode(data)], same)
                except ValueError:
                    units = [data]
                joined = b"".join(units)
                units = ddmin([joined[i:i + 1] for i in range(len(joined))], same) if len(joined) <= 4096 else units
        finally:
            worker.close()
    result = folder / ("minimal" + EXTENSIONS[fmt])
    result.write_bytes(b"".join(units))
    return result


def ddmin(units: list[bytes], interesting) -> list[bytes]:
    """Zeller's delta debugging, complements only: drop ever smaller chunks while ``interesting`` holds."""
    n = 2
    while len(units) >= 2:
        size = -(-len(units) // n)
        for start in range(0, len(units), size):
            rest = units[:start] + units[start + size:]
            if interesting(rest):
                units, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(units):
                return units
            n = min(len(units), 2 * n)
    return units
