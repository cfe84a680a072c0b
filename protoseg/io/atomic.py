"""Writing a file so that nothing half-written, and nothing outside the chosen path, can result.

Every file protoseg writes (converted models, caffemodels, result PNGs) goes through :func:`write_file`: the
content is written to a fresh temporary file in the target's folder, given the mode ``open`` would, and renamed
over the target. A failed write leaves the old file (or none); a symlink planted at the target is replaced, never
written through; arrays still mapped from an old file stay valid.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_file"]


def write_file(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path
