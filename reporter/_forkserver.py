"""Imported only in the fork server that starts the workers (``pool.context``).

A worker forked while the run is being stopped (SIGTERM, SIGHUP, SIGKILL) can
fail in multiprocessing's own start-up, before any reporter code runs: its
semaphore is already gone. The fork server then prints that child's traceback
on the run's stderr, after the run's last log line. Here the fork server's
exception hook stays silent when the run's main process is gone (or goes
within a second), and otherwise says what happened in one line; the main
process counts the worker as dead either way.

It marks the run's main module as its own ``__main__`` (``pool._callers_main``: no
worker then runs the ``reporter`` console script, or a caller's script, again). It
imports what every worker uses (``pool._PRELOAD``), and loads, before any worker is
forked, what every worker would otherwise load on its first image: the compiled
kernels (``kernels.warm``), and Pillow's format plugins (``Image.preinit``: six
modules, 7 ms, that ``images.load`` needs to read a file's orientation and header).
All of that with the garbage collector off, and then frozen (below).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
import time
from importlib.machinery import ModuleSpec

from . import pool

# No garbage collection until the imports and the kernels' load below are done: they make
# some 115,000 objects and little garbage, and the collector, run by the count of new
# objects, went over them some 250 times (68-78 ms of the server's 0.7 s start on the
# benchmark's VM). Frozen at the end, those objects are never scanned again, neither
# here nor in a worker (whose collections would otherwise also touch, and so copy, every
# page of them), as the gc module's documentation advises for a process that forks.
gc.disable()

_RUN = os.getppid()  # the fork server's parent: the run's main process


def _quiet_hook(kind, value, traceback) -> None:
    from .compare import process_alive

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if not process_alive(_RUN):
            return
        time.sleep(0.05)
    said = " ".join(str(value).split())  # one line, whatever the exception's own layout
    _say(f"reporter: a worker process could not start: {kind.__name__}: {said}")


def _say(line: str) -> None:
    if sys.stderr is not None:  # None: started with standard error closed
        sys.stderr.write(line + "\n")


sys.excepthook = _quiet_hook

# The run's main module, as multiprocessing will name it to each worker: marked as this
# process's own __main__ (inherited by every fork), multiprocessing sees it imported
# already and does not run it in the worker. Nothing from it is ever sent to a worker.
_main = sys.modules["__main__"]
if os.environ.get(pool.MAIN_PATH):
    _main.__file__ = os.environ[pool.MAIN_PATH]
if os.environ.get(pool.MAIN_NAME):
    _main.__spec__ = ModuleSpec(os.environ[pool.MAIN_NAME], None)


def _prepare() -> None:
    # What every worker uses (pool._PRELOAD: reporter.compare, and a collection command's
    # features), imported once here.
    for name in os.environ.get(pool.SERVER_IMPORTS, "reporter.compare").split(","):
        importlib.import_module(name)

    # Pillow's format plugins, registered once here rather than on each worker's first
    # image.
    importlib.import_module("PIL.Image").preinit()

    # The compiled kernels, loaded (or compiled, the first time on this machine) once
    # here: every worker forked from this process starts with them in memory. Not for a
    # collection command's workers, which compute features (pool.start_for_collection).
    pixel_type = os.environ.get("REPORTER_PIXEL_TYPE", "uint8")
    if pixel_type:
        try:
            from . import kernels

            kernels.warm(pixel_type)
        except Exception as exc:  # a worker would then load them itself; the run goes on
            _say(f"reporter: could not prepare the compiled kernels: {exc}")


try:
    _prepare()
finally:  # even when an import failed (multiprocessing goes on without a preload's
    # ImportError): every worker then still has a working collector
    gc.freeze()
    gc.enable()


def _exit_now() -> None:
    """The fork server's exit, once the run's process is gone: at once, without its
    interpreter's teardown (numba's, OpenCV's and numpy's modules: 40-50 ms on the
    benchmark's VM). The server holds the caller's standard error open until it ends,
    so a caller that reads the run's output to its end (cron, a script's pipe) waited
    that long after the run's own exit. Its workers end the same way (multiprocessing
    ends each with ``os._exit``). Registered last, it runs first of the server's
    ``atexit`` handlers; the others (multiprocessing's, logging's) have nothing of the
    server's to flush or remove."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    finally:
        os._exit(0)


atexit.register(_exit_now)
