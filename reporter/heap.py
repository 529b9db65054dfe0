"""Freed memory kept for the next image (glibc's allocator).

Comparing one image allocates and frees the same few dozen arrays of 1 to 12 MB
(at 1024 px). With glibc's default settings, memory freed at the top of the heap
goes back to the system once the heap around it has grown (the results of the
images before it, the closer looks), and the next image faults it in again,
zeroed page by page. In a run of 120 images in one process, the later images
each paid about 4,500 page faults and 10 ms (64 ms an image instead of 54); the
same happened at random in worker processes (22,000 faults in one worker's run).

While images are compared, the memory they free stays with the process for the
next image: blocks up to 32 MiB come from the heap rather than from new
mappings, and the heap is not trimmed. Memory stays flat in the number of
images, since every image reuses the same blocks. A local worker process keeps
this setting for its life (:func:`keep_freed`, from ``compare.worker_started``);
the run's own process only for its loop over the images (:func:`kept`), after
which it hands the free memory back and lets the heap trim itself again above
64 MiB free, where glibc's own adaptive rule ends.

Only on glibc; elsewhere (musl, macOS, Windows) nothing changes. Dask workers
are left as their cluster configures them: Dask's nanny sets its own trimming.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

__all__ = ["keep_freed", "kept"]

# mallopt(3) parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

FROM_HEAP_UP_TO = 32 << 20  # glibc's own ceiling for M_MMAP_THRESHOLD on 64-bit systems
NEVER_TRIM = 1 << 30
TRIM_AFTER = 2 * FROM_HEAP_UP_TO  # where glibc's adaptive rule puts the trim threshold


@cache
def _glibc():
    """glibc's ``mallopt`` and ``malloc_trim``, or None where the C library is another."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        import ctypes

        libc = ctypes.CDLL(None)
        return libc.mallopt, libc.malloc_trim
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def _set(trim_threshold: int) -> bool:
    functions = _glibc()
    if functions is None:
        return False
    mallopt, _ = functions
    # mallopt returns 1 on success; a refused value leaves glibc's setting as it was.
    return bool(mallopt(M_MMAP_THRESHOLD, FROM_HEAP_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )


def keep_freed() -> bool:
    """Keep freed memory in this process for reuse, from now on (a worker process).
    Whether the setting took (False where the C library is not glibc)."""
    return _set(NEVER_TRIM)


@contextmanager
def kept() -> Iterator[None]:
    """Keep freed memory for reuse inside the block (the run's own loop over its images);
    after it, hand back what is free and let the heap trim itself again."""
    changed = keep_freed()
    try:
        yield
    finally:
        if changed:
            _set(TRIM_AFTER)
            _glibc()[1](0)  # malloc_trim(0): return the free memory now
