"""The worker processes' fork server: chosen here, and started as early as a run can tell
it will want workers.

Light on purpose (the standard library and Pillow's header reader): the command line
starts the server before its own heavy imports, so that the server's start (importing
OpenCV and numba, and loading the compiled kernels: about 0.75 s on the benchmark's
2-core VM, 0.2 s less since they load without SciPy's linear algebra) overlaps the
command's (OpenCV, pandas, openpyxl, jinja2: about 0.6 s) instead of following them.
Started after them, as it was, the pool waited 0.28 s for it in a 40-image ``--jobs 2``
run.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import sys
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import machine
from .names import is_image

__all__ = [
    "context",
    "EARLY_LOOK",
    "GREY_MODES",
    "peek",
    "QUIET_TRACKER",
    "Shared",
    "start",
    "start_early",
]

QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def context() -> multiprocessing.context.BaseContext:
    """A clean process for each worker, never a fork of this one (the fork server, started
    now unless it runs).

    A forked child inherits OpenCV's thread pool in whatever state the parent
    left it and can deadlock on its first parallel call (seen as a hang as soon
    as the parent had blurred a large image). The fork server is a fresh
    interpreter that imports reporter once; workers fork from it quickly.

    The workers never run the caller's main module (:func:`_callers_main`): a function
    sent to them must live in a module they can import, not in a script's ``__main__``.
    """
    # After a SIGKILL of this process, the resource tracker removes the pool's
    # semaphores and says so on the caller's stderr; the removal is its job, the
    # two-line warning is noise. It takes its warning options from this process.
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["reporter._forkserver"])  # which imports _PRELOAD
        _run_server()
        return ctx
    return multiprocessing.get_context("spawn")


_PRELOAD = ("reporter.compare",)
"""What the fork server imports before it forks a worker (``reporter._forkserver`` imports
them, given in its environment as SERVER_IMPORTS; ``start_for_collection`` changes it
before the server starts)."""

SERVER_IMPORTS = "REPORTER_SERVER_IMPORTS"


def _run_server() -> None:
    """Start the fork server unless it runs. It learns this process's main module
    (:func:`_callers_main`), so that no worker runs it again.

    Its heap is not asked for transparent huge pages (glibc's ``malloc.hugetlb``
    tunable, which the eighth round to the sixteenth set for it): on a VM whose
    balloon device takes back free memory (virtio's free page reporting, as on the
    benchmark's VM), the 2 MB blocks a huge page needs are the very ones handed back
    to the host once they lie free for 2 s, and each such page is faulted back in on
    the host. Runs that follow idle, as cron's do, paid for that: a worker's
    preparation took 85-97 ms (medians) against 38-43 with 4 KB pages, its first
    image 72-79 ms against 47-56. Only runs back to back gained (23 against 44 ms).
    """
    from multiprocessing import forkserver

    server = {SERVER_IMPORTS: ",".join(_PRELOAD), **_callers_main()}
    with _environment(**server):
        forkserver.ensure_running()


MAIN_PATH, MAIN_NAME = "REPORTER_MAIN_PATH", "REPORTER_MAIN_NAME"


def _callers_main() -> dict[str, str | None]:
    """This process's main module as multiprocessing names it to a new worker: its path
    (a script, such as the ``reporter`` console script) or its module name (``python
    -m``), for the fork server's environment (``reporter._forkserver``).

    Each worker multiprocessing starts runs the caller's main module again (as
    ``__mp_main__``) before it reads its task, so that functions defined there can be
    unpickled, unless the process it was forked from has that module as its
    ``__main__`` already. A reporter worker runs only reporter's functions, so that
    run was pure cost: the ``reporter`` console script imports the command line and
    its config (75-115 ms in each worker on the benchmark's VM, before its first
    image, while the run's own process still imports), and a caller's script ran its
    own imports in each worker, or, without a ``__main__`` guard, its whole run. The
    fork server marks that module as its own ``__main__``, and no worker runs it.
    """
    from multiprocessing import spawn

    data = spawn.get_preparation_data("reporter")
    return {
        MAIN_PATH: data.get("init_main_from_path"),
        MAIN_NAME: data.get("init_main_from_name"),
    }


@contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """These environment variables set (None: removed) while the block runs, then as
    they were: what a process started in the block (the fork server) gets, and this
    process keeps."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _put(values)
        yield
    finally:
        _put(saved)


def _put(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def start(jobs: int, count: int, pixel_type: str = "uint8") -> bool:
    """Start the fork server now, so that it imports (and loads the compiled kernels for
    ``pixel_type``) while this process goes on; whether it runs. Nothing when the run
    wants no workers, or when the server already runs.

    ``pixel_type`` reaches the server in its environment (``reporter._forkserver``
    reads it as it starts), set only while it starts: left in this process's
    environment, a collection command's "" (no kernels) would reach any server a later
    child process starts."""
    if jobs > 1 and count > 1 and "forkserver" in multiprocessing.get_all_start_methods():
        with _environment(REPORTER_PIXEL_TYPE=pixel_type):
            context()
        return True
    return False


class Shared:
    """An array that worker processes receive as they start, mapped from this process's
    memory (a ``memfd``) instead of copied through their start-up pipe: one copy in memory
    for all of them, mapped copy-on-write in each (``_mapped``).

    A worker's start (its fork from the server, and its start-up data read from a pipe)
    holds this process until the worker has read that data; the pool starts its workers
    one after another. With the baseline's pixels in the data (3 MB at 1024 px), each
    start took 13-20 ms on the benchmark's 2-core VM (25-51 ms at 2048 px): pickled,
    copied through the pipe, unpickled into fresh memory that faulted in page by page.
    Sent as a file descriptor, a worker maps the pages this process wrote once, and a
    start takes 3-8 ms (4-10 ms at 2048 px, the first one writing the copy).

    Pickled at any other time (a Dask worker's task, a copy), or where ``memfd_create``
    is missing or refused, it is the array itself. Unpickled, it is always a plain
    array. ``close`` (or garbage collection) closes this process's descriptor; the
    memory goes when the last worker that maps it ends.
    """

    def __init__(self, array) -> None:
        self.array = array
        self._fd: int | None = None

    def __reduce__(self):
        from multiprocessing import reduction

        fd = self._memory() if multiprocessing.context.get_spawning_popen() else None
        if fd is None:
            return (_itself, (self.array,))
        return (_mapped, (reduction.DupFd(fd), self.array.shape, self.array.dtype.str))

    def _memory(self) -> int | None:
        """The descriptor of the array's copy in anonymous shared memory, made once."""
        if self._fd is None and self.array.nbytes and hasattr(os, "memfd_create"):
            import numpy as np

            try:
                fd = os.memfd_create("reporter-array", os.MFD_CLOEXEC)
            except OSError:  # refused (a sandbox): the array goes through the pipe
                return None
            # Written, not copied into a mapping: 4.4-6 ms for 12 MB, against 9.5-12 ms
            # for a mapping's page faults.
            data = memoryview(np.ascontiguousarray(self.array)).cast("B")
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            except OSError:
                os.close(fd)
                return None
            self._fd = fd
            self._closed = weakref.finalize(self, os.close, fd)
        return self._fd

    def close(self) -> None:
        """Close this process's descriptor (workers started keep their mappings)."""
        if self._fd is not None:
            self._closed()
            self._fd = None


def _itself(array):
    return array


def _mapped(fd, shape: tuple[int, ...], dtype: str):
    """The array a worker receives: a private (copy-on-write) mapping of the memory
    ``fd`` holds. Its pages are the run's one copy until written; a write would copy
    that page for this worker alone. Writable, not read-only: numba types a read-only
    array apart from a writable one, and each compiled kernel given one (the baseline's
    ink per cell, a greyscale baseline's planes) would load, or on a new machine
    compile, a signature of its own in every worker, that the fork server's warm-up
    (``kernels.warm``) had not loaded: 18-24 ms of each worker's start."""
    import mmap

    import numpy as np

    descriptor = fd.detach()
    try:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        memory = mmap.mmap(descriptor, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(descriptor)
    return np.frombuffer(memory, dtype).reshape(shape)


GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Pillow's modes of a greyscale file (with or without alpha); here, where the early
start reads a header without importing OpenCV, and for ``images``."""


def peek(path: Path) -> tuple[int, int, str]:
    """(width, height, Pillow mode) from the file's header only, whatever its size (no
    decompression-bomb warning: the pixel limit is checked when the run loads it).
    Raises OSError, ValueError or SyntaxError when Pillow cannot read the header."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                return im.width, im.height, im.mode
        finally:
            Image.MAX_IMAGE_PIXELS = saved


EARLY_LOOK = 10_000  # directory entries at most that the guess below reads


def start_early(config) -> bool:
    """Start the fork server before the command's heavy imports when the run may use
    workers (``config``: a ``config.Config``); whether it was started.

    Started this early, the server's start (its imports and numba's first load of the
    kernels) overlaps the command's imports, and this process never loads the kernels
    at all: workers then pay at any size (``config.Config.effective_jobs``), where
    started later they paid from WORKERS_PAY_MPX. The guess: at least two image files
    among the first EARLY_LOOK entries of each input folder (one level), and the pixel
    type from the baseline's header (given, or the file named baseline as
    ``inputs.choose_baseline`` finds it, or the first image), for the kernels the server
    loads. ``pipeline._prepare`` decides for good. A wrong yes (a folder of unreadable
    files) costs another core about a second of CPU.
    """
    if config.scheduler or config.jobs == 1:
        return False
    try:
        # Regular files only: opening a pipe named .png to read its header waits for a
        # writer for ever (a run with --baseline first, or none named baseline, hung)
        files = []
        for given in config.inputs:
            if given.is_file():
                files.append(given)
            elif given.is_dir():
                with os.scandir(given) as entries:
                    for n, entry in enumerate(entries):
                        if n >= EARLY_LOOK:
                            break
                        name = entry.name
                        if not name.startswith(".") and is_image(Path(name)) and entry.is_file():
                            files.append(Path(entry.path))
        if not files or (config.baseline is not None and not config.baseline.is_file()):
            return False
        named = [f for f in files if f.stem.lower() == "baseline"]  # as choose_baseline
        width, height, mode = peek(config.baseline or (named or sorted(files))[0])
        count = len(files) - (config.baseline is None)
        wide = mode.startswith("I")  # I;16, I;16B, I: 16-bit pixels
        jobs = config.effective_jobs(count, None, early=True)
        channels = 1 if mode in GREY_MODES else 3
        fit = machine.workers_that_fit(
            width * height, channels, 2 if wide else 1, machine.available_memory()
        )
        if fit is not None and fit < 2:  # pipeline._workers will compare in the process
            return False
        return start(jobs, count, "uint16" if wide else "uint8")
    except Exception:  # noqa: BLE001 - only a guess: the pipeline decides, and says why
        return False


def start_for_collection(paths, jobs: int, kernels: bool, recursive: bool = False) -> bool:
    """Start the fork server for a collection command (``search``, ``duplicates``,
    ``cluster``) before its heavy imports, when it may want workers: ``jobs`` (0: all
    cores) above one and at least two image files among the first EARLY_LOOK entries of
    the folders (``recursive``: of their trees, as a photo library sorted into folders
    by year has them). Its workers compute features (``collection.features``, imported
    here once); the compiled kernels are loaded only when ``kernels`` (``search`` by a
    run metric, which compares images as ``run`` does). Whether it was started."""
    global _PRELOAD
    if jobs == 1 or machine.cores() < 2:
        return False
    try:
        files, looked = 0, 0
        for given in paths:
            if given.is_file():
                files += 1
                continue
            for _, folders, names in os.walk(given) if given.is_dir() else ():
                folders[:] = [f for f in folders if not f.startswith(".")] if recursive else []
                looked += 1  # a folder read: a tree of empty folders ends the look too
                for name in names:
                    looked += 1
                    files += not name.startswith(".") and is_image(Path(name))
                    if files >= 2 or looked >= EARLY_LOOK:
                        break
                if files >= 2 or looked >= EARLY_LOOK:
                    break
        if files < 2:
            return False
        _PRELOAD = ("reporter.compare", "reporter.collection.features")
        return start(2, files, "uint8" if kernels else "")
    except Exception:  # noqa: BLE001 - only a guess: the command decides
        return False
