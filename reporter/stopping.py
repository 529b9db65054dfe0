"""Ending a run on SIGTERM, SIGHUP and Ctrl-C: one exception, and a way to finish a step first.

A scheduler's timeout sends SIGTERM, a closed session SIGHUP, a person Ctrl-C
(SIGINT). Each raises ``Stopped`` in the main thread, which unwinds the run as
any failure does: the workers are ended, the staging folder is removed, the
history's open transaction is rolled back. The command line turns it into one
log line and the shell's status, 128 + the signal's number.

A few steps must not be cut in half (moving the finished outputs into place):
within ``held()`` a signal is remembered and raised when the step is done.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "handled",
    "held",
    "SIGNALS",
    "Stopped",
]

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)
)


class Stopped(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way turns it into an ERROR row."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_holding = 0
_pending: list[int] = []


def _stop(signum: int, frame) -> None:
    if _holding:
        _pending.append(signum)
        return
    raise Stopped(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Within, the three signals raise Stopped; the previous handlers come back after.

    Call it from the main thread only (Python runs signal handlers there).
    """
    saved = {number: signal.signal(number, _stop) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


@contextmanager
def held() -> Iterator[None]:
    """A step that a signal must not cut in half; a signal that came meanwhile is raised after."""
    global _holding
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Stopped(signum)
