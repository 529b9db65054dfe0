"""What C libraries print while decoding: caught, and given to the row that caused it.

libpng, libjpeg, libtiff and OpenCV's own logger write to the process's file
descriptor 2 directly (``fprintf(stderr, ...)``, ``std::cerr``), past Python's
``sys.stderr`` and its logging: a fuzzed run printed 461 such lines between the
log's own, each without the file it was about. Around a decode, descriptor 2
points at a temporary file; what was written there comes back as lines, which
the caller puts in the image's ERROR message or notes and in the debug log.

The redirection is per process, so one thread decodes under it at a time (a Dask
worker with several threads, a program that calls ``pipeline.run`` from threads):
``caught`` holds a lock for the decode. Without it, a second thread's decoder wrote
into the first's file, its lines went to the first image, and the second could
restore descriptor 2 to the first's file for good. The rest of a comparison runs in
parallel as before; with one thread per worker process, as reporter's own local Dask
cluster and the README's ``dask worker --nthreads 1`` have it, the lock never waits.
Other threads' Python output (a Dask worker's own log lines, written while an image
decodes) is kept apart by ``python_stderr_apart``, which a Dask worker calls at its
start: Python's standard error then writes to a duplicate of descriptor 2.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "abandon",
    "caught",
    "python_stderr_apart",
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
_one = threading.Lock()  # descriptor 2 is the process's: one thread decodes under it at a time


def _sink_fd() -> int:
    global _sink
    if _sink is None:
        handle, name = tempfile.mkstemp(prefix="reporter-native-")
        os.unlink(name)  # only this process's descriptor keeps it
        _sink = handle
    return _sink


@dataclass
class _Capture:
    thread: threading.Thread  # the decoding thread
    saved: int  # descriptor 2 as it was before


_current: _Capture | None = None  # the capture in progress, if any
_abandoned: set[threading.Thread] = set()  # threads whose call was left behind: no capture
_state = threading.Lock()  # guards _current, _abandoned and the lock's release


@contextmanager
def caught() -> Iterator[list[str]]:
    """Within, descriptor 2 is caught; the list gets the distinct lines written, after.
    Another thread's ``caught`` waits until this one ends, so that no line goes to the
    wrong image."""
    global _current
    lines: list[str] = []
    me = threading.current_thread()
    _one.acquire()
    try:
        sink = _sink_fd()
    except OSError:  # no descriptor to spare
        sink = None
    with _state:
        mine = None
        if sink is not None and me not in _abandoned:  # else left behind before it got here
            try:
                saved = os.dup(2)
            except OSError:  # no descriptor 2 (a job started with 2>&-), or none to spare
                pass
            else:
                os.lseek(sink, 0, os.SEEK_SET)
                os.ftruncate(sink, 0)
                os.dup2(sink, 2)
                mine = _current = _Capture(me, saved)
        if mine is None:
            _one.release()
    if mine is None:
        yield lines
        return
    try:
        yield lines
    finally:
        with _state:
            if _current is mine:  # else abandoned: descriptor 2 and the lock were given back
                _current = None
                os.dup2(saved, 2)
                os.close(saved)
                size = os.lseek(sink, 0, os.SEEK_CUR)
                if size:
                    os.lseek(sink, 0, os.SEEK_SET)
                    lines.extend(tidy(os.read(sink, min(size, MAX_BYTES))))
                _one.release()


def abandon(thread: threading.Thread) -> None:
    """Give back what ``thread``'s capture holds, if it is in one: a decode left running
    past the time limit (``compare.watched``) must not keep descriptor 2 pointed at its
    file (the log would go there) nor the lock (every later decode would wait for it).
    Nor does that thread capture again, should it reach ``caught`` only now (the thread
    itself is kept, not its id, which a later thread may be given). What that decoder
    may still write goes where descriptor 2 points at the time."""
    global _current
    with _state:
        _abandoned.add(thread)
        if _current is None or _current.thread is not thread:
            return
        os.dup2(_current.saved, 2)
        os.close(_current.saved)
        _current = None
        _one.release()


def python_stderr_apart() -> None:
    """From now on Python's own standard error (``sys.stderr``, and logging's handlers
    that wrote to it) writes to a duplicate of descriptor 2, not to descriptor 2 itself,
    so that ``caught`` catches only what C code writes there: a Dask worker logs from
    its own threads while an image decodes in another. The output goes where it went."""
    old = sys.stderr
    if old is None or getattr(old, "_reporter_apart", False):
        return
    try:
        if old.fileno() != 2:
            return
        fd = os.dup(2)
    except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor 2: nothing to part
        return
    encoding = getattr(old, "encoding", None) or "utf-8"
    new = open(fd, "w", buffering=1, encoding=encoding, errors="backslashreplace")  # noqa: SIM115
    new._reporter_apart = True
    old.flush()
    sys.stderr = new
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)


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
