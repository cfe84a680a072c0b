"""protoseg.run.memory: with keep_freed_memory(), a chain of 64 MiB activations stops faulting in fresh pages
after a few passes; without it every pass maps each one afresh."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = """
import resource, sys
import torch
from protoseg.run.memory import keep_freed_memory

def chain():  # five 64 MiB blocks, each freed once the next exists, like a net's activations
    x = torch.ones(1 << 24)
    for _ in range(4):
        x = x + 1

if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    chain()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    fresh, kept = _faults("default"), _faults("keep")
    # glibc maps blocks this large afresh each time: ~82,000 faults a pass with 4 KiB pages (fewer where the
    # kernel backs them with huge pages); the sixth pass with kept memory reuses the heap
    assert fresh > 0 and kept * 10 < fresh, (fresh, kept)


def test_the_run_command_keeps_freed_memory(_malloc_untouched, tmp_path) -> None:
    from protoseg.cli import main
    from protoseg.run.demo import DEMO_DIR

    images = sorted(p for p in (DEMO_DIR / "images").iterdir())[:1]
    assert main(["run", str(DEMO_DIR / "demo.prototxt"), str(DEMO_DIR / "demo.caffemodel"), str(images[0]),
                 "-o", str(tmp_path)]) == 0
    assert _malloc_untouched == [True]
