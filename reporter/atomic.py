"""Atomic file output: write a temporary file beside the target, then rename it.

Where it sits: every output of a run (CSV, JSON, reports) goes through
:func:`write_atomic`, so a crash or a full disk never leaves a half-written
file under the final name; the previous version, if any, stays whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "write_atomic",
    "write_text",
]


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:  # say which file, not which temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # the data is on disk before the name points at it
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are for the team to read
        os.replace(tmp, path)
    except OSError as exc:  # name the target (a folder given as a file: --eml DIR)
        tmp.unlink(missing_ok=True)
        why = "it is a folder" if path.is_dir() else exc.strerror or str(exc)
        raise OSError(exc.errno, why, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
