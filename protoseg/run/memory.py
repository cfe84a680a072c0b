"""Keeping freed memory in the process, so that each pass of a net reuses the last pass's pages.

glibc hands every block over its mmap threshold (at most 32 MiB) back to the kernel when it is freed. A VGG net's
first activations are larger (FCN-8s at 500 x 500: 125 MB per fp32 blob of conv1), so every pass gets them as
fresh pages that the kernel faults in and zeroes: 7-9 % of an fp32 pass of FCN-8s or LargeFOV on two cores and
10-15 % of a bf16 one. ONNX Runtime and OpenVINO avoid this with their own arenas; PyTorch's CPU allocator has
none, so :func:`keep_freed_memory` asks glibc for the same: all blocks from its heap, and freed memory kept there.
The cost is that the process keeps the memory of its largest pass until it exits.

The ``run`` and ``eval`` commands call it; call it yourself in a process that runs a net many times.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

#: mallopt(3) parameters (glibc's malloc.h) and the trim threshold used: the largest value mallopt accepts.
M_TRIM_THRESHOLD, M_MMAP_MAX, KEEP = -1, -4, 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc serve every block from its heap and never return freed heap memory to the kernel, for the
    whole process. Returns whether that took effect (False where the C library is not glibc: macOS, Windows,
    musl; nothing changes there)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP))
