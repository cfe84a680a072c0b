"""Writing a file so that nothing half-written, and nothing outside the chosen path, can result.

Every file protoseg writes (converted models, caffemodels, result PNGs) goes through :func:`write_file`: the
content is written under the target's own name in a fresh private folder beside it (writers such as
``torch.export.save`` record the file name inside the file), given the mode ``open`` would, and renamed over the
target. A failed write leaves the old file (or none); a symlink planted at the target is replaced, never
written through; arrays still mapped from an old file stay valid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_file"]


def write_file(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path`` (of the same name), then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = os.path.join(folder, path.name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # give the file the mode open() would
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # empty, or what a failed write left
    return path
