"""What a command prints on standard output, and what becomes of it when that fails.

Where it sits: after a command's outputs are in place, its summary is printed.
Standard output may have no reader by then (``reporter run ... | head``), be closed
(``>&-``), or be a file on a full disk (``>> /var/log/qc.log`` in a crontab): the
summary is lost then, never the command's exit status, whose work is done.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ReporterError

__all__ = ["printed", "stdout_gone", "stdout_has_no_reader", "summary"]

log = logging.getLogger("reporter")


@contextmanager
def summary() -> Iterator[None]:
    """Print a command's summary within: a failure to print it is one WARNING (in the
    log, which may be elsewhere) and costs nothing else. Only ``print`` within: with no
    standard output at all it prints nothing."""
    if sys.stdout is None:  # started with it closed (`>&-`)
        log.warning("no standard output; the summary was not printed")
    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the command itself is done
        stdout_gone()
        log.warning("standard output was closed by its reader; the summary was not printed")
    except OSError as exc:  # a full disk, a quota, an I/O error under `>> file`
        stdout_gone()
        why = exc.strerror or str(exc)
        log.warning("the summary could not be written to standard output (%s)", why)


@contextmanager
def printed() -> Iterator[None]:
    """Print a command's product within (``reporter history``, ``baseline show``): a
    failure to print it is the command not done, in one line. A closed pipe is left to
    the command line, which tells its reader's going from other broken pipes."""
    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        stdout_gone()
        why = exc.strerror or str(exc)
        raise ReporterError(f"standard output could not be written ({why})") from None


def stdout_has_no_reader() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone: poll says so,
    with POLLERR for a pipe and POLLHUP for a socket. A BrokenPipeError may come from
    another pipe or socket too (a worker's, a server's). Without ``poll`` (Windows) a
    broken pipe is taken to be standard output's, the likeliest."""
    import select

    if not hasattr(select, "poll"):
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # none, or not a descriptor (a test's)
        return False


def stdout_gone() -> None:
    """Standard output cannot be written (its reader has gone, its disk is full): what is
    still to be written goes nowhere, so that no later write or flush (Python's own, at
    exit) fails again with a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no standard output at all: nothing to write to
        pass
