"""What C libraries print while decoding: caught, and given to the row that caused it.

libpng, libjpeg, libtiff and OpenCV's own logger write to the process's file
descriptor 2 directly (``fprintf(stderr, ...)``, ``std::cerr``), past Python's
``sys.stderr`` and its logging: a fuzzed run printed 461 such lines between the
log's own, each without the file it was about. Around a decode, descriptor 2
points at a temporary file; what was written there comes back as lines, which
the caller puts in the image's ERROR message or notes and in the debug log.

The redirection is per process: another thread that writes to descriptor 2
while an image decodes (there is none in reporter's own run) would be caught too.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "caught",
    "MAX_BYTES",
    "MAX_LINES",
    "tidy",
]

MAX_LINES = 3  # distinct lines kept per decode; a broken TIFF can repeat one a thousand times
MAX_BYTES = 64 * 1024

# OpenCV's logger prefix, "[ERROR:0@0.418] global grfmt_tiff.cpp:117 TIFF_Error ", says
# where in OpenCV's source the line came from: noise for a reader of the row.
_OPENCV_PREFIX = re.compile(r"^\[\s*[A-Z]+:\d+@[\d.]+\]\s+(?:global\s+)?\S+:\d+\s+(?:\w+\s+)?")

_sink: int | None = None


def _sink_fd() -> int:
    global _sink
    if _sink is None:
        handle, name = tempfile.mkstemp(prefix="reporter-native-")
        os.unlink(name)  # only this process's descriptor keeps it
        _sink = handle
    return _sink


@contextmanager
def caught() -> Iterator[list[str]]:
    """Within, descriptor 2 is caught; the list gets the distinct lines written, after."""
    lines: list[str] = []
    try:
        sink = _sink_fd()
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a job started with 2>&-), or none to spare
        yield lines
        return
    os.lseek(sink, 0, os.SEEK_SET)
    os.ftruncate(sink, 0)
    os.dup2(sink, 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(sink, 0, os.SEEK_CUR)
        if size:
            os.lseek(sink, 0, os.SEEK_SET)
            lines.extend(tidy(os.read(sink, min(size, MAX_BYTES))))


def tidy(raw: bytes) -> list[str]:
    """Distinct, non-empty lines without OpenCV's source prefix, at most MAX_LINES."""
    found: list[str] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = _OPENCV_PREFIX.sub("", line.strip()).strip()
        if line and line not in found:
            found.append(line)
    if len(found) > MAX_LINES:
        found = [*found[:MAX_LINES], f"(and {len(found) - MAX_LINES} more)"]
    return found
