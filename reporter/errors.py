"""The exit statuses, named, and the errors that carry them.

Where it sits: below everything. A run's status is decided once, from its
rows and its delivery (``record.RunRecord.exit_status``); a run that cannot be
done raises one of these errors, whose message is one line for the user and
whose status is the one the command exits with.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ConfigError", "DeliveryError", "ExitStatus", "ReporterError"]


class ExitStatus(IntEnum):
    """What the command's exit status says (README "Exit status")."""

    OK = 0
    """Every image is PASS or WARN."""
    FLAGGED = 1
    """An image is FAIL or ERROR, or a series run was compared against another baseline."""
    NOT_DONE = 2
    """The run could not be done: a bad argument or setting, no inputs, no baseline ..."""
    NOT_SENT = 3
    """The reports are written but the e-mail could not be sent."""
    # Stopped by a signal: 128 + its number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), stopping.py


class ReporterError(Exception):
    """A run that cannot be done; the message is one line for the user."""

    exit_code: int = ExitStatus.NOT_DONE


class ConfigError(ReporterError):
    """A bad setting, from a TOML file or the command line."""


class DeliveryError(ReporterError):
    """The message could not be handed to the SMTP server; the reports are on disk."""

    exit_code = ExitStatus.NOT_SENT
