"""Command line: parse arguments into a Config, call pipeline.run, exit with its status.

Exit statuses: 0 every image PASS or WARN; 1 any image FAIL or ERROR; 2 the run
could not be done (bad argument or config, no baseline, no images, unreadable
baseline, outputs not writable, internal error); 3 the reports are written but
the e-mail could not be sent. Usage errors never print a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .catalog import METRICS
from .config import (
    BASELINE_FIRST,
    FORMATS,
    Config,
    load_toml,
    with_environment,
    with_limit,
)
from .errors import ConfigError, ExitStatus, ReporterError

__all__ = [
    "build_parser",
    "config_from_args",
    "main",
]

log = logging.getLogger("reporter")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line and exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (all cores) or more")
    return value


def _positive(text: str) -> int:
    value = _jobs(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {bad[0]!r}" if bad else "no format given"
        ) from None
    return chosen


def _limit(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not METRIC=VALUE (VALUE a number or 'off')")
    if name.strip() not in METRICS:
        raise argparse.ArgumentTypeError(
            f"unknown metric {name.strip()!r}; metrics are {', '.join(METRICS)}"
        )
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reporter", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"reporter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="compare every image against a baseline and write the results",
        description="Compare every image against a baseline and write results.csv, "
        "results.json (and the reports asked for) into a run folder.",
    )
    _run_options(run)
    _compared_options(run.add_argument_group("what is compared"))
    _series_options(run.add_argument_group("series history (runs with --series)"))
    _mail_options(
        run.add_argument_group(
            "e-mail",
            "SMTP user and password come only from REPORTER_SMTP_USER and "
            "REPORTER_SMTP_PASSWORD or the [email] table of the config file, never from the "
            "command line",
        )
    )
    _log_options(run)
    _series_commands(sub)
    return parser


def _run_options(run: argparse.ArgumentParser) -> None:
    """Inputs, outputs, limits and the series of ``reporter run``."""
    run.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders"
    )
    run.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="the reference image, or 'first': the first input image in sorted order "
        "(default: the input whose name is baseline.*; ./first for a file named first)",
    )
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for the outputs (default: a new reports/YYYYmmdd-HHMMSS)",
    )
    run.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings (see config.example.toml)"
    )
    run.add_argument(
        "--jobs", "-j", type=_jobs, metavar="N", help="worker processes (default 0: all cores)"
    )
    run.add_argument(
        "--formats",
        type=_formats,
        metavar="LIST",
        help=f"comma-separated outputs, from {','.join(FORMATS)} (default: all)",
    )
    run.add_argument(
        "--templates",
        type=Path,
        metavar="DIR",
        help="a folder of templates that override the shipped ones, file by file",
    )
    run.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        default=None,
        help="descend into sub-folders of folder inputs",
    )
    run.add_argument(
        "--strict-size",
        action="store_true",
        default=None,
        help="an image whose size differs from the baseline's is an ERROR, not resized",
    )
    run.add_argument(
        "--max-pixels",
        type=_positive,
        metavar="N",
        help="larger images are ERROR rows (default 100000000)",
    )
    run.add_argument(
        "--max-file-mb",
        type=_positive,
        metavar="MB",
        help="larger files are ERROR rows, not even read (default 1024)",
    )
    for kind in ("warn", "fail"):
        run.add_argument(
            f"--{kind}",
            type=_limit,
            action="append",
            default=[],
            metavar="METRIC=VALUE",
            help=f"set a {kind.upper()} limit (VALUE 'off' removes it); repeatable",
        )
    run.add_argument(
        "--series",
        metavar="NAME",
        help="instrument and plot: titles, subjects, and the run history with control limits",
    )


def _compared_options(what) -> None:
    """Ignored regions, the mask and alignment."""
    what.add_argument(
        "--ignore",
        type=_region,
        action="append",
        default=[],
        metavar="X,Y,W,H",
        help="leave this rectangle (baseline pixels) out of every metric; repeatable",
    )
    what.add_argument(
        "--mask", type=Path, metavar="FILE", help="baseline-sized image: black pixels are ignored"
    )
    what.add_argument(
        "--align",
        action="store_true",
        default=None,
        help="compensate each image's measured shift when that makes it more like the "
        "baseline (off by default)",
    )


def _series_options(control) -> None:
    """The series' history: where it is, slots, retention, gaps, the lock."""
    _history_option(control)
    control.add_argument(
        "--no-history", action="store_true", help="do not read or record the series' history"
    )
    control.add_argument(
        "--slot-pattern",
        metavar="REGEX",
        help="a file's slot: group 'slot' (or 1) of REGEX on its name, e.g. "
        "'(?P<slot>.+)_\\d{8}'; 'name' for the whole name (default: the name without its "
        "dates, times and run counters)",
    )
    control.add_argument(
        "--keep", type=_jobs, metavar="N", help="keep the newest N run folders (default 0: all)"
    )
    control.add_argument(
        "--missing-after",
        type=_non_negative,
        metavar="HOURS",
        help="report a gap when the series' previous run is older than HOURS",
    )
    control.add_argument(
        "--lock-wait",
        type=_non_negative,
        metavar="SECONDS",
        help="wait this long for another run of the series (default 30), then exit 2",
    )


def _mail_options(mail) -> None:
    """Whom to mail and through which server (never a password)."""
    mail.add_argument("--eml", type=Path, metavar="FILE", help="write the e-mail message to FILE")
    mail.add_argument(
        "--email-to",
        action="append",
        default=[],
        metavar="ADDR",
        help="send it to ADDR; repeatable",
    )
    mail.add_argument("--email-from", metavar="ADDR", help="sender (default reporter@this-host)")
    mail.add_argument("--smtp-host", metavar="HOST", help="SMTP server (default localhost)")
    mail.add_argument("--smtp-port", type=_positive, metavar="N", help="default 25, 587, or 465")
    security = mail.add_mutually_exclusive_group()
    security.add_argument("--smtp-starttls", action="store_true", default=None, help="STARTTLS")
    security.add_argument(
        "--smtp-ssl", action="store_true", default=None, help="TLS from the start"
    )


def _log_options(run: argparse.ArgumentParser) -> None:
    """The outlier switch, the progress bar and how much is logged."""
    run.add_argument(
        "--no-outliers", action="store_true", help="turn the batch-relative outlier rule off"
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )
    run.add_argument(
        "--quiet", "-q", action="store_true", help="log warnings and errors only; no summary"
    )
    run.add_argument("--verbose", "-v", action="store_true", help="log debug messages")


def _series_commands(sub) -> None:
    """The ``baseline``, ``history`` and ``accept`` subcommands."""
    baseline = sub.add_parser(
        "baseline", help="record or show a series' baseline (its control periods)"
    )
    verbs = baseline.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    setter = verbs.add_parser(
        "set", help="keep a copy of FILE as the series' baseline; a new control period starts"
    )
    setter.add_argument("series", metavar="SERIES")
    setter.add_argument("file", type=Path, metavar="FILE")
    setter.add_argument("--reason", required=True, help="why (new bead lot, service visit ...)")
    setter.add_argument("--by", help="who (default: the user running the command)")
    shower = verbs.add_parser("show", help="the series' baseline and every earlier one")
    shower.add_argument("series", metavar="SERIES")

    history = sub.add_parser("history", help="the series' last runs, one line each")
    history.add_argument("series", metavar="SERIES")
    history.add_argument("--last", type=_positive, default=30, metavar="N", help="default 30")
    history.add_argument("--csv", action="store_true", help="every run as CSV on standard output")
    history.add_argument(
        "--missing-after",
        type=_non_negative,
        metavar="HOURS",
        help="exit 1 with a message when the last run is older than HOURS (a dead schedule)",
    )

    accept = sub.add_parser(
        "accept", help="let a flagged run's values into the control limits, saying who and why"
    )
    accept.add_argument("series", metavar="SERIES")
    accept.add_argument("run_id", type=_positive, metavar="RUN_ID")
    accept.add_argument("--reason", required=True, help="why the run is fine after all")
    accept.add_argument("--by", help="who (default: the user running the command)")
    for admin in (setter, shower, history, accept):
        _history_option(admin)
        admin.add_argument("--config", type=Path, metavar="FILE", help="TOML settings")
        admin.add_argument("--quiet", "-q", action="store_true", help=argparse.SUPPRESS)
        admin.add_argument("--verbose", "-v", action="store_true", help=argparse.SUPPRESS)


def _region(text: str) -> tuple[int, int, int, int]:
    from .masks import Region

    try:
        r = Region.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return (r.x, r.y, r.w, r.h)


def _history_option(parser) -> None:
    parser.add_argument(
        "--history",
        type=Path,
        metavar="PATH",
        help="the history database (default: [history] path, else reports/history.sqlite)",
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number, 0 or more")
    return value


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults < TOML file < command line."""
    config = load_toml(args.config, series=args.series) if args.config else Config()
    changes = {"inputs": tuple(args.paths)}
    for key in (
        "baseline",
        "out",
        "jobs",
        "formats",
        "recursive",
        "strict_size",
        "max_pixels",
        "max_file_mb",
        "templates",
    ):
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    if args.baseline is not None:  # a file given on the command line beats the config's "first"
        first = str(args.baseline) == BASELINE_FIRST
        changes["first_as_baseline"] = first
        changes["baseline"] = None if first else args.baseline
    limits = config.limits
    for kind in ("warn", "fail"):
        for name, value in getattr(args, kind):
            limits = with_limit(limits, name, kind, value, f"--{kind}")
    changes["limits"] = limits
    if args.no_outliers:
        changes["outliers"] = replace(config.outliers, enabled=False)
    if args.no_progress:
        changes["progress"] = False
    if args.series is not None:
        changes["series"] = args.series
    history = config.history
    for key, value in (
        ("path", args.history),
        ("slot_pattern", args.slot_pattern),
        ("keep_runs", args.keep),
        ("missing_after", args.missing_after),
        ("lock_wait", args.lock_wait),
    ):
        if value is not None:
            history = replace(history, **{key: value})
    if args.no_history:
        history = replace(history, enabled=False)
    changes["history"] = history
    comparison = config.comparison
    if args.ignore:
        comparison = replace(comparison, ignore=comparison.ignore + tuple(args.ignore))
    if args.mask is not None:
        comparison = replace(comparison, mask=args.mask)
    if args.align:
        comparison = replace(comparison, align=True)
    changes["comparison"] = comparison
    email, smtp = config.email, config.email.smtp
    smtp = replace(
        smtp,
        **{
            name: value
            for name, value in (
                ("host", args.smtp_host),
                ("port", args.smtp_port),
                ("starttls", args.smtp_starttls),
                ("ssl", args.smtp_ssl),
            )
            if value is not None
        },
    )
    email = replace(
        email,
        to=tuple(args.email_to) or email.to,
        sender=args.email_from or email.sender,
        eml=args.eml or email.eml,
        smtp=smtp,
    )
    changes["email"] = email
    return with_environment(replace(config, **changes), os.environ)


class _LineFormatter(logging.Formatter):
    """One log record, one line: control characters in the message (a file name with a
    newline or ESC) are escaped; a traceback, when there is one, follows as usual."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from .names import printable

        record.message = printable(record.message)
        return super().formatMessage(record)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _LineFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger("reporter")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reporter`` command; returns the exit status."""
    from .stopping import Stopped, handled

    try:
        with handled():  # first: a scheduler may stop the run while it starts
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help, --version and usage errors
                return int(exc.code or 0)
            _setup_logging(args)
            return _command(args)
    except Stopped as exc:
        log.error(
            "stopped by %s before the command finished; no output was replaced by a partial one",
            exc.name,
        )
        return exc.exit_code


def _command(args: argparse.Namespace) -> int:
    if args.command != "run":
        from .series.commands import command

        try:
            return command(args)
        except ConfigError as exc:
            print(f"reporter: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except ReporterError as exc:
            log.error("%s", exc)
            return exc.exit_code
    from .pipeline import run  # after logging: importing the pipeline loads OpenCV and pandas

    try:
        result = run(config_from_args(args))
    except ConfigError as exc:
        print(f"reporter: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ReporterError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception:  # a bug: the run could not be done, and the log says where
        log.exception("internal error: the run could not be done; please report this traceback")
        return ExitStatus.NOT_DONE
    if not args.quiet:
        sys.stdout.write(result.summary)
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
