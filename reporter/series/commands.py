"""The series subcommands: ``baseline set|show``, ``history`` and ``accept``.

Where it sits: ``cli.main`` hands them the parsed arguments; they read and
write the history database (``history.History``) and print for people (or CSV
for ``history --csv``). Returns the exit status: 0, or 1 when ``history
--missing-after`` finds the series silent for too long.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from .. import clock, console
from ..config import Config, load_toml
from ..errors import ReporterError
from ..names import defused, printable
from .session import gap_hours
from .store import History, said_of, series_lock

__all__ = [
    "command",
    "HISTORY_COLUMNS",
    "show_baselines",
    "show_history",
]


def _by(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _config(args: argparse.Namespace) -> Config:
    return load_toml(args.config) if args.config else Config()


def _path(args: argparse.Namespace) -> Path:
    if args.history is not None:
        return args.history
    return _config(args).history_path()


def _zone(args: argparse.Namespace) -> str | None:
    """--timezone, else the configuration file's, else None (this machine's zone)."""
    return args.timezone or _config(args).timezone


def command(args: argparse.Namespace) -> int:
    try:
        return _command(args)
    except sqlite3.Error as exc:  # a damaged or locked database: one line, status 2
        raise ReporterError(said_of(_path(args), exc)) from None


def _command(args: argparse.Namespace) -> int:
    path = _path(args)
    reading = args.command != "baseline" or args.verb != "set"
    if reading and not path.is_file() and not path.exists():  # create no empty database
        raise ReporterError(f"no history at {path} (pass --history PATH)")  # one line, escaped
    if not reading:  # a baseline every later run can read, or nothing recorded
        _check_image(args.file)
    with History(path) as store:
        if args.command == "baseline" and args.verb == "set":
            with series_lock(path.parent / "locks", args.series, 30.0):
                b = store.set_baseline(args.series, args.file, reason=args.reason, by=_by(args))
            _say(f"series {args.series}: baseline {b.sha256[:12]} ({args.file}) set by {b.set_by};")
            _say(f"a new control period starts; copy kept at {b.stored}")
            return 0
        if args.command == "baseline":
            return show_baselines(store, args.series, _zone(args))
        if args.command == "history":
            return show_history(store, args)
        run = store.accept(args.series, args.run_id, reason=args.reason, by=_by(args))
        _say(
            f"run {run.id} of {run.series} ({clock.shown(run.started, _zone(args))}, "
            f"{run.verdict}) accepted by "
            f"{run.accepted_by}: its values now count for the control limits"
        )
        return 0


def _say(line: str, file=None) -> None:
    """One line for a person: its control characters and bidirectional controls escaped
    (names.printable). A reason, a name or a path in the history came from whoever wrote
    it, and ``baseline set --reason`` took ESC sequences that cleared the screen of the
    next person to list the series."""
    with console.printed():
        print(printable(line), file=file)


def _check_image(file: Path) -> None:
    from ..images import ImageLoadError, load  # OpenCV: only for the command that needs it

    try:
        # Readable is all this asks: a float file's range is the run's (value_range).
        load(file, max_pixels=Config().max_pixels, max_bytes=Config().max_bytes, value_range=(0, 1))
    except ImageLoadError as exc:
        raise ReporterError(f"baseline {file}: {exc}; nothing was recorded") from None


def show_baselines(store: History, series: str, zone: str | None = None) -> int:
    records = store.baselines(series)
    if not records:
        _say(f"series {series}: no baseline recorded yet")
        return 0
    current = records[-1]
    runs = [r for r in store.runs(series) if r.baseline_id == current.id]
    _say(f"series {series}: current baseline {current.sha256}")
    _say(f"  copy   {current.stored}")
    _say(f"  from   {current.source}")
    _say(f"  set    {clock.shown(current.set_at, zone)} by {current.set_by}: {current.reason}")
    _say(f"  period {len(runs)} run(s) against it so far")
    if len(records) > 1:
        _say("earlier baselines (newest first):")
        for b in reversed(records[:-1]):
            _say(f"  {clock.shown(b.set_at, zone)}  {b.sha256[:12]}  by {b.set_by}: {b.reason}")
    return 0


HISTORY_HEAD = (
    f"{'run':>6}  {'started':<23}  {'verdict':<7}  {'images':>6}  {'FAIL':>4}  "
    f"{'exit':>4}  {'baseline':<8}  control rules that fired"
)

HISTORY_COLUMNS = (
    "run_id",
    "started",
    "verdict",
    "exit_code",
    "images",
    "failed",
    "baseline_sha256",
    "accepted_by",
    "accepted_reason",
    "out_dir",
    "rules_fired",
)


def show_history(store: History, args: argparse.Namespace) -> int:
    """The table for people shows local times with their offset; --csv keeps the stored UTC
    ISO-8601 times, which a program reads without knowing where the table was printed."""
    zone = _zone(args)
    runs = store.runs(args.series, last=None if args.csv else args.last)
    fired = store.rules_fired([r.id for r in runs])
    if args.csv:
        with console.printed():
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(HISTORY_COLUMNS)
            for r in runs:
                text = (r.accepted_by or "", r.accepted_reason or "", r.out_dir or "")
                row = (r.id, r.started, r.verdict, r.exit_code, r.images, r.failed)
                writer.writerow(  # the texts as text to a spreadsheet, never a formula
                    (*row, r.baseline_sha256)
                    + tuple(defused(t) for t in (*text, "; ".join(fired[r.id])))
                )
    elif not runs:
        _say(f"series {args.series}: no runs recorded")
    else:
        _say(HISTORY_HEAD)
        for r in runs:
            rules = ", ".join(fired[r.id]) or "-"
            accepted = (
                f"  (accepted by {r.accepted_by}: {r.accepted_reason})" if r.accepted_by else ""
            )
            _say(
                f"{r.id:>6}  {clock.shown(r.started, zone):<23}  {r.verdict:<7}  "
                f"{r.images:>6}  {r.failed:>4}  {r.exit_code:>4}  {r.baseline_sha256[:8]:<8}  "
                f"{rules}{accepted}"
            )
    if args.missing_after is not None:
        last = store.runs(args.series, last=1)
        gap = gap_hours(last[0].started if last else None, datetime.now(UTC))
        if gap is None or gap > args.missing_after:
            since = (
                "ever"
                if gap is None
                else f"for {gap:.1f} h (last {clock.shown(last[0].started, zone)})"
            )
            _say(
                f"MISSING: no run of series {args.series} {since}; more than "
                f"{args.missing_after:g} h: is its scheduled job still running?",
                file=sys.stderr,
            )
            return 1
    return 0
