"""Command line: parse arguments into a Config, call pipeline.run, exit with its status.

Every error that ends a command is one line starting ``reporter: error:``
(argparse's usage errors too, with the --help to read).

Exit statuses: 0 every image PASS or WARN; 1 any image FAIL or ERROR; 2 the run
could not be done (bad argument or config, no baseline, no images, unreadable
baseline, outputs not writable, internal error); 3 the reports are written but
the e-mail could not be sent. Usage errors never print a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__, console, pool
from .catalog import METRICS
from .config import (
    BASELINE_FIRST,
    FORMATS,
    SETTINGS,
    Config,
    Setting,
    load_toml,
    read_range,
    with_environment,
    with_limit,
    with_value,
)
from .errors import ExitStatus, ReporterError

__all__ = [
    "build_parser",
    "config_from_args",
    "main",
]

log = logging.getLogger("reporter")


PREFIX = "reporter: error: "  # every error that ends a command starts with this


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line and exit 2
        from .names import printable  # an argument's newline or ESC shown, not obeyed

        self.exit(2, f"{PREFIX}{printable(message)} (see '{self.prog} --help')\n")

    def _print_message(self, message: str, file=None) -> None:
        # argparse's own ignores a failed write: --help and --version to a full disk
        # were status 0 with their text lost. Standard output's failure goes on up
        # (main's console.printed); a usage error's, on standard error, is still ignored.
        if message and file is sys.stdout and file is not None:
            file.write(message)
        else:
            super()._print_message(message, file)


def _path_error(exc: OSError) -> int:
    """A file system's refusal of a path that no check before it caught (a name longer
    than the system allows: ENAMETOOLONG, which pathlib's is_file() and is_dir() raise
    rather than answer): one line naming the path, exit status 2. Without a path it is
    not the input's fault, and goes on up (a broken pipe has its own handling)."""
    if not exc.filename:
        raise exc
    return _fail(ReporterError(f"{exc.filename}: {exc.strerror or exc}"))


def _fail(exc: ReporterError) -> int:
    """The one line of an error that ends the command, and its status."""
    from .names import printable

    print(PREFIX + printable(str(exc)), file=sys.stderr)
    return exc.exit_code


COMMANDS = ("run", "search", "duplicates", "cluster", "baseline", "history", "accept")

DESCRIPTION = (
    "reporter compares images. 'reporter run' says whether each image of a run still "
    "looks like a baseline, writes the results and reports, and, for a series of "
    "scheduled runs, keeps a history with control limits; 'baseline', 'history' and "
    "'accept' look after that history. 'reporter search' finds the images of a "
    "collection that look like a query image; 'reporter duplicates' groups the copies, "
    "'reporter cluster' groups them by what they look like."
)

EXIT_STATUSES = """exit statuses:
  0    every image is PASS or WARN
  1    an image is FAIL or ERROR (or the run used another baseline than its series')
  2    the command could not be done: a bad argument, setting or input (one line says which)
  3    the reports are written, but the e-mail could not be sent
  130, 143, 129  stopped by Ctrl-C, SIGTERM or SIGHUP"""

RUN_EPILOG = (
    """examples:
  reporter run sample_images/                       baseline.png among the images
  reporter run today/ --baseline ref/baseline.png --out reports/today
  reporter run /data/qc/2026-11-23 --series "FACSCanto II FSC/SSC" --email-to qc@lab.org
  reporter run shots/ --baseline first --formats csv,json -j 4

"""
    + EXIT_STATUSES
)

SERIES_EPILOG = """examples:
  reporter baseline set "FACSCanto II FSC/SSC" new_lot.png --reason "new bead lot 4711"
  reporter baseline show "FACSCanto II FSC/SSC"
  reporter history "FACSCanto II FSC/SSC" --last 10
  reporter history "FACSCanto II FSC/SSC" --missing-after 26     (a watchdog for cron)
  reporter accept "FACSCanto II FSC/SSC" 42 --reason "lamp replaced, checked by hand"

exit statuses: 0 done; 1 (history --missing-after) the series has been silent too long;
  2 the command could not be done (no such series or run, no history file)"""


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:  # --top -3 was told 'must be 0 (all cores) or more', --jobs' words
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
    parser = _Parser(
        prog="reporter",
        description=DESCRIPTION,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reporter {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="commands", metavar="COMMAND"
    )
    run = sub.add_parser(
        "run",
        help="compare every image against a baseline and write the results",
        description="Compare every image against a baseline and write results.csv, "
        "results.json (and the reports asked for) into a run folder.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders"
    )
    run.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings (see config.example.toml)"
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
    groups = {
        None: run,
        "what": run.add_argument_group("what is compared"),
        "series": run.add_argument_group("series history (runs with --series)"),
        "mail": run.add_argument_group(
            "e-mail",
            "SMTP user and password come only from REPORTER_SMTP_USER and "
            "REPORTER_SMTP_PASSWORD or the [email] table of the config file, never from the "
            "command line",
        ),
        "log": run,
    }
    for row in SETTINGS:  # every setting with a flag, from the table in config.py
        if row.spec.flags:
            _add_setting(groups[row.spec.group], row)
    run.add_argument(
        "--quiet", "-q", action="store_true", help="log warnings and errors only; no summary"
    )
    run.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    _collection_commands(sub)
    _series_commands(sub)
    return parser


def _dest(row: Setting) -> str:
    return "setting:" + ".".join(row.path)


def _add_setting(parser, row: Setting, *flags: str) -> None:
    """The command-line flag of a setting of the table: its type, help and checks."""
    spec = row.spec
    options: dict = {"dest": _dest(row), "help": spec.help}
    if spec.kind == "bool":
        options |= {"action": "store_true", "default": None}
    else:
        options |= {"metavar": spec.metavar, "type": _reader(row)}
        if spec.kind in ("regions", "strings"):
            options |= {"action": "append", "default": []}
    parser.add_argument(*(flags or spec.flags), **options)


def _reader(row: Setting):
    """The argparse type of a setting: the text as its kind, checked by its rule."""
    kind = row.spec.kind
    if kind == "regions":
        return _region
    if kind == "formats":
        return _formats

    def read(text: str):
        if kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        elif kind == "number":
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            if not math.isfinite(value):  # as a TOML file's: inf ended in a traceback
                raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        elif kind in ("path", "baseline"):
            value = Path(text)
        elif kind == "range":
            try:
                value = read_range(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        else:
            value = text
        if row.spec.valid is not None and not row.spec.valid(value):
            raise argparse.ArgumentTypeError(row.spec.must)
        return value

    return read


SEARCH_EPILOG = """examples:
  reporter search query.png photos/ --top 10 --by embedding
  reporter search --queries todays_failures.txt archive/ --by phash --top 5
  reporter search plot.png runs/ -r --by colour --out reports/similar

methods: ahash, phash (Hamming distance of 64-bit hashes, lower is nearer),
  colour (distance of 42 colour moments), embedding (cosine of EfficientNet-Lite0
  vectors, higher is nearer; what the picture shows, robust to crops and shifts),
  or a metric of run (ssim, ms_ssim, ssim_64, psnr ...: the query as the baseline)

exit statuses: 0 done; 1 done, but some files could not be read (ERROR rows);
  2 not done (no query, no images, a bad argument); 130/143/129 stopped by a signal"""


DUPLICATES_EPILOG = """examples:
  reporter duplicates photos/ -r                          exact copies and pHash twins
  reporter duplicates dataset/ -r --by embedding          survives crops and captions
  reporter duplicates shots/ --move-duplicates shots/dupes

grouping: around the image to keep, chosen by
  {keep};
  an image joins a group when it is within the threshold of that image, never through
  a third one

exit statuses: 0 done; 1 done, but some files could not be read (ERROR rows), or were
  gone before their move; 2 not done (no images, a bad argument, a move into DIR that
  failed); 130/143/129 stopped by a signal"""


CLUSTER_EPILOG = """examples:
  reporter cluster photos/ -r                         k by silhouette, on embeddings
  reporter cluster flagged/ --k 4 --features pca      four groups by colour and layout
  reporter cluster month/ --copy-to sorted/           one folder per cluster

exit statuses: 0 done; 1 done, but some files could not be read (ERROR rows), or were
  gone before their copy; 2 not done (too few images, a bad argument, a copy into DIR
  that failed); 130/143/129 stopped by a signal"""


def _collection_commands(sub) -> None:
    """``search``, ``duplicates`` and ``cluster``."""
    from .collection import KEEP_ORDER, METHODS, RUN_METRICS  # names only: no numpy yet

    search = sub.add_parser(
        "search",
        help="find the images of a collection that look like a query image",
        description="Find the images of a collection that look like a query image: "
        "results.csv, report.html and report.xlsx, best first.",
        epilog=SEARCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument(
        "items",
        nargs="+",
        type=Path,
        metavar="QUERY PATH",
        help="the query image, then image files and/or folders to search "
        "(with --queries, only the folders)",
    )
    search.add_argument("--queries", type=Path, metavar="FILE", help="one query path per line")
    search.add_argument(
        "--by",
        choices=(*METHODS, *RUN_METRICS),
        default="embedding",
        metavar="METHOD",
        help="embedding (default), phash, ahash, colour, or a metric of run: "
        + ", ".join(RUN_METRICS),
    )
    search.add_argument("--top", type=_positive, default=10, metavar="K", help="default 10")
    search.add_argument(
        "--index",
        choices=("exact", "hnsw"),
        default="exact",
        help="exact (default): every image's score, exact; hnsw: an approximate faiss index "
        "saved in the cache folder, for many queries over a million images (--by embedding; "
        "pip install 'reporter[faiss]')",
    )
    _collection_options(search, "search")

    twins = sub.add_parser(
        "duplicates",
        help="group the images of a collection that are the same picture",
        description="Group the images of a collection that are the same picture: exact "
        "copies, then near-duplicates; one image of each group is marked to keep. "
        "groups.csv, report.html and report.xlsx; nothing is moved unless asked.",
        epilog=DUPLICATES_EPILOG.format(keep=KEEP_ORDER),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    twins.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders"
    )
    twins.add_argument(
        "--by", choices=("phash", "ahash", "embedding"), default="phash", help="default phash"
    )
    twins.add_argument(
        "--threshold",
        type=_non_negative,
        metavar="T",
        help="the largest distance still a duplicate (default: phash 8, ahash 8, "
        "embedding 0.4 as 1 - cosine)",
    )
    twins.add_argument(
        "--move-duplicates",
        type=Path,
        metavar="DIR",
        help="move every image but the kept one of each group into DIR (logged, never overwriting)",
    )
    _collection_options(twins, "duplicates")

    groups = sub.add_parser(
        "cluster",
        help="group the images of a collection by what they look like (k-means)",
        description="Group the images of a collection by what they look like: k-means on "
        "embeddings, pixels or their principal components. clusters.csv, report.html and "
        "report.xlsx, the most typical image of each cluster first.",
        epilog=CLUSTER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders"
    )
    groups.add_argument(
        "--k", type=_clusters, default="auto", metavar="N|auto",
        help="the number of clusters, or auto: the best silhouette from 2 to 12 (default)",
    )  # fmt: skip
    groups.add_argument(
        "--features", choices=("embedding", "pixels", "pca"), default="embedding",
        help="default embedding",
    )  # fmt: skip
    groups.add_argument(
        "--copy-to", type=Path, metavar="DIR",
        help="copy each image into DIR/cluster-NN (nothing is moved)",
    )  # fmt: skip
    _collection_options(groups, "cluster")


def _clusters(text: str) -> str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor auto") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more, or auto")
    return str(value)


def _collection_options(parser, name: str) -> None:
    """What every collection command takes, after its own arguments."""
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"default reports/{name}-<time>")
    parser.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    _setting_option(parser, ("exclude",), "exclude")
    parser.add_argument(
        "--formats", type=_formats, default=("csv", "html", "xlsx"), metavar="LIST",
        help="from csv,html,xlsx (default all)",
    )  # fmt: skip
    _setting_option(parser, ("jobs",), "jobs")  # the same flag, help and check as run's
    _setting_option(parser, ("max_pixels",), "max_pixels")
    _setting_option(parser, ("max_file_mb",), "max_file_mb")
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the feature cache"
    )
    _setting_option(parser, ("timezone",), "timezone")
    _setting_option(parser, ("time_limit",), "time_limit")
    _setting_option(parser, ("scheduler",), "scheduler")
    _setting_option(parser, ("scheduler_timeout",), "scheduler_timeout")
    _setting_option(parser, ("send_bytes",), "send_bytes")
    _setting_option(parser, ("progress",), "no_progress")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug messages")


def _series_commands(sub) -> None:
    """The ``baseline``, ``history`` and ``accept`` subcommands."""

    def command(parent, name: str, text: str):
        return parent.add_parser(
            name,
            help=text,
            description=text[:1].upper() + text[1:] + ".",
            epilog=SERIES_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def series(parser) -> None:
        parser.add_argument("series", metavar="SERIES", help="the series' name, as in --series")

    baseline = command(sub, "baseline", "record or show a series' baseline (its control periods)")
    verbs = baseline.add_subparsers(
        dest="verb", required=True, parser_class=_Parser, title="commands", metavar="VERB"
    )
    setter = command(
        verbs, "set", "keep a copy of FILE as the series' baseline; a new control period starts"
    )
    series(setter)
    setter.add_argument("file", type=Path, metavar="FILE", help="the new baseline image")
    setter.add_argument("--reason", required=True, help="why (new bead lot, service visit ...)")
    setter.add_argument("--by", help="who (default: the user running the command)")
    shower = command(verbs, "show", "the series' baseline and every earlier one")
    series(shower)

    history = command(sub, "history", "the series' last runs, a table with the rules that fired")
    series(history)
    history.add_argument("--last", type=_positive, default=30, metavar="N", help="default 30")
    history.add_argument("--csv", action="store_true", help="every run as CSV on standard output")
    history.add_argument(
        "--missing-after",
        type=_non_negative,
        metavar="HOURS",
        help="exit 1 with a message when the last run is older than HOURS (a dead schedule)",
    )

    accept = command(
        sub, "accept", "let a flagged run's values into the control limits, saying who and why"
    )
    series(accept)
    accept.add_argument(
        "run_id", type=_positive, metavar="RUN_ID", help="the run, as 'reporter history' lists it"
    )
    accept.add_argument("--reason", required=True, help="why the run is fine after all")
    accept.add_argument("--by", help="who (default: the user running the command)")
    for admin in (setter, shower, history, accept):
        _history_option(admin)
        _setting_option(admin, ("timezone",), "timezone")
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
    """The series commands' --history: the same flag and help as the setting's."""
    _setting_option(parser, ("history", "path"), "history")


def _setting_option(parser, path: tuple[str, ...], dest: str) -> None:
    """A setting of ``run`` offered by another command: the same flag, help and check."""
    row = next(r for r in SETTINGS if r.path == path)
    if row.spec.kind == "bool":
        parser.add_argument(*row.spec.flags, dest=dest, action="store_true", help=row.spec.help)
        return
    repeated = {"action": "append", "default": []} if row.spec.kind == "strings" else {}
    parser.add_argument(
        *row.spec.flags,
        dest=dest,
        type=_reader(row),
        metavar=row.spec.metavar,
        help=row.spec.help,
        **({"default": row.default} | repeated),
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
    series = getattr(args, "setting:series")
    config = load_toml(args.config, series=series) if args.config else Config()
    config = replace(config, inputs=tuple(args.paths))
    for row in SETTINGS:
        value = getattr(args, _dest(row), None) if row.spec.flags else None
        if value is None or value == []:
            continue
        if row.spec.kind == "baseline":  # a file given here beats the config's "first"
            first = str(value) == BASELINE_FIRST
            config = replace(config, first_as_baseline=first, baseline=None if first else value)
            continue
        if row.spec.negate:
            value = False
        elif row.spec.kind == "regions":  # added to the file's
            value = row.get(config) + tuple(value)
        elif row.spec.kind == "strings":
            value = tuple(value)
        config = with_value(config, row.path, value)
    limits = config.limits
    for kind in ("warn", "fail"):
        for name, value in getattr(args, kind):
            limits = with_limit(limits, name, kind, value, f"--{kind}")
    return with_environment(replace(config, limits=limits), os.environ)


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


def entry() -> int:
    """The ``reporter`` command (and ``python -m reporter``): :func:`main`, then the
    process's exit with its status (:func:`exit_now`). It returns only when that exit
    cannot be made at once.

    Before it exits, Python would collect the garbage of every object the run made,
    several times over (numba's type registries, pandas: about 160,000 objects): 0.36-0.5 s
    after a ``--jobs 1`` run, 0.27 s after ``--jobs 2``, on the benchmark's VM, while the
    run's outputs, log and summary were long written. ``gc.freeze`` first leaves them to
    the operating system, as it frees all of the process's memory anyway.

    The collector is also off while the command imports its modules (:func:`_imported`).
    """
    global _ONE_COMMAND
    _ONE_COMMAND = True
    _fill_standard_descriptors()
    gc.disable()  # until the command's imports are done (_imported)
    status = main()
    gc.freeze()
    exit_now(status)
    return status


def _fill_standard_descriptors() -> None:
    """Open the null device on standard input, output or error where the command started
    with it closed (``>&-``, ``2>&-``, a daemon's start). Otherwise the first file the
    run opens takes that number, and whatever writes to it (OpenCV's and libpng's
    messages go to descriptor 2, a worker's start-up error too) writes into that file.
    Python's own ``sys.stdout`` or ``sys.stderr`` stays None: the summary and the log
    have nowhere to go, and say nothing."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def exit_now(status: int) -> None:
    """End this process with ``status`` once Python's exit steps that matter are done,
    without its interpreter's teardown; returns only when a step failed.

    Done, in Python's own order: the wait for the process's other threads (the worker
    pool's), every ``atexit`` handler (the log's flush and close, multiprocessing's,
    a coverage tool's), and the flush of standard output and error. Left to the
    operating system: the teardown of every module and object (pandas', numba's), which
    took 30 ms after a ``--jobs 2`` run and 52 ms after ``--jobs 1`` on the benchmark's
    VM (medians), frozen objects or not. Nothing reporter writes waits for it: each
    output is closed, and renamed into place, before :func:`main` returns. A worker
    process of multiprocessing ends the same way (``threading._shutdown``, then
    ``os._exit``).

    A flush that fails (standard output closed by its reader) returns: Python's own exit
    then deals with it, as it always has.
    """
    import atexit
    import threading

    join = getattr(threading, "_shutdown", None)  # CPython's own, 3.11-3.14
    handlers = getattr(atexit, "_run_exitfuncs", None)
    if join is None or handlers is None:  # another Python: its own exit, as ever
        return
    join()  # what Python's exit does first: wait for the non-daemon threads
    handlers()  # then the atexit handlers, newest first, each once
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the command started with that descriptor closed
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


_ONE_COMMAND = False  # this process runs one command, then exits (entry)


def _imported() -> None:
    """The command's modules are imported. In a process that runs one command
    (:func:`entry`), the garbage collector was off until now: the imports (pandas,
    OpenCV, openpyxl, jinja2) make some 80,000 objects and little garbage, and the
    collector, run by the count of new objects, went over them about 210 times (67-98
    ms of the run's 0.64-0.9 s of imports on the benchmark's VM). They are frozen now,
    so that no later collection scans them again, and the collector is turned back on
    for the command itself. Called from Python (:func:`main`), nothing changes."""
    if _ONE_COMMAND:
        gc.freeze()
        gc.enable()


def _no_bare_separator_values(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse ``--by=--`` and ``-j--``: argparse (3.11-3.12) drops a value of ``--`` given
    that way and stores an empty list, skipping the option's type and choices, so
    ``--jobs=--`` and ``--out=--`` were silently their defaults and ``duplicates --by=--``
    ended in a traceback. ``--`` on its own still ends the options."""
    for token in argv:
        if token == "--":
            return
        name, _, value = token.partition("=")
        attached = not token.startswith("--") and len(token) > 2 and token[2:] == "--"
        if token.startswith("-") and (value == "--" and "=" in token or attached):
            parser.error(f"argument {name if value else token[:2]}: expected one argument")


_LISTS = {"run": "paths", "search": "items", "duplicates": "paths", "cluster": "paths"}


def _intermixed(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> argparse.Namespace:
    """Paths given after an option join the command's other paths, as ``cp`` and ``grep``
    take them: ``reporter search q.png --top 5 photos/`` and ``reporter run a.png
    --baseline b.png c.png``. argparse takes a list of positionals in one piece, so the
    later ones were 'unrecognized arguments'. (Its parse_intermixed_args does not take
    subcommands.) An unknown option is still refused, by the command's own parser."""
    if not extra:
        return args
    command = next(
        a.choices[args.command]
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
    )
    cut = extra.index("--") if "--" in extra else len(extra)  # after it: paths, whatever
    options = [t for t in extra[:cut] if t.startswith("-") and t != "-"]
    if options or args.command not in _LISTS:
        command.error(f"unrecognized arguments: {' '.join(options or extra)}")
    getattr(args, _LISTS[args.command]).extend(Path(t) for t in extra[:cut] + extra[cut + 1 :])
    return args


def _tolerant_stdout() -> None:
    """Standard output keeps its encoding, but a character it cannot encode is written
    as an escape (``\u65e5``), as Python already does on standard error. A name such as
    ``日本.png`` in a run's summary, under ``PYTHONIOENCODING=ascii`` or a Latin-1
    locale (a Windows console's cp1252, a cron job's ISO-8859-1), ended the command in a
    UnicodeEncodeError traceback after its reports were written."""
    with contextlib.suppress(AttributeError, ValueError, OSError):  # none, or not io's
        sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reporter`` command; returns the exit status."""
    from .stopping import Stopped, handled

    _tolerant_stdout()
    try:
        with handled():  # first: a scheduler may stop the run while it starts
            parser = build_parser()
            given = sys.argv[1:] if argv is None else argv
            if not given:  # a bare `reporter`: what it can do, not only what is missing
                parser.print_help(sys.stderr)
                print(f"{PREFIX}choose a command: {', '.join(COMMANDS)}", file=sys.stderr)
                return ExitStatus.NOT_DONE
            try:
                with console.printed():  # --help's and --version's text is the product
                    try:
                        _no_bare_separator_values(parser, given)
                        args = _intermixed(parser, *parser.parse_known_args(argv))
                    except SystemExit as exc:  # --help, --version and usage errors
                        return int(exc.code or 0)  # once that text is flushed
            except ReporterError as exc:  # the text could not be written (a full disk)
                return _fail(exc)
            _setup_logging(args)
            return _command(args)
    except Stopped as exc:
        log.error(
            "stopped by %s before the command finished; no output was replaced by a partial one",
            exc.name,
        )
        return exc.exit_code
    except BrokenPipeError as exc:  # `reporter history ... | head`: the rest has no reader
        if not console.stdout_has_no_reader():  # another pipe or socket: not the output's reader
            why = exc.strerror or str(exc)
            print(
                f"{PREFIX}a pipe or connection was closed by its other end ({why}); "
                "the command could not be done",
                file=sys.stderr,
            )
            return ExitStatus.NOT_DONE
        console.stdout_gone()
        print(f"{PREFIX}standard output was closed before all of it was written", file=sys.stderr)
        return ExitStatus.NOT_DONE


def _by_run_metric(args: argparse.Namespace) -> bool:
    """Whether a collection command compares images as ``run`` does (search by a run
    metric): its workers want the compiled kernels."""
    from .collection import RUN_METRICS

    return getattr(args, "by", None) in RUN_METRICS


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            result = _run(args)
        else:
            return _other(args)
    except ReporterError as exc:
        return _fail(exc)
    except OSError as exc:
        if exc.filename or isinstance(exc, BrokenPipeError):  # the latter: main's to handle
            return _path_error(exc)
        return _internal(args)
    except Exception:  # a bug: the command could not be done, and the log says where
        return _internal(args)
    if not args.quiet:
        with console.summary():
            print(result.summary, end="")
    return result.exit_code


def _run(args: argparse.Namespace):
    config = config_from_args(args)
    early = pool.start_early(config)  # before the pipeline's imports: it starts meanwhile
    from .pipeline import run  # after logging: importing the pipeline loads OpenCV and pandas

    _imported()
    return run(config, early=early)


def _other(args: argparse.Namespace) -> int:
    """A collection command or a series command; returns its exit status."""
    if args.command in ("search", "duplicates", "cluster"):
        if args.command == "search":
            if args.queries is None:
                args.query, args.paths = args.items[0], args.items[1:]
                if not args.paths:
                    raise ReporterError("give the query and at least one PATH to search")
            else:
                args.query, args.paths = None, args.items
        if not (args.scheduler or os.environ.get("REPORTER_SCHEDULER")):
            # before the command's imports, so that the workers' fork server starts meanwhile
            pool.start_for_collection(args.paths, args.jobs, _by_run_metric(args), args.recursive)
    if args.command == "search":
        from .collection.commands import search as command
    elif args.command in ("duplicates", "cluster"):
        from .collection import commands

        command = getattr(commands, args.command)
    else:
        from .series.commands import command
    _imported()
    return command(args)


def _internal(args: argparse.Namespace) -> int:
    """An exception no check foresaw (a bug, or an OSError that names no path: a fork
    refused, a connection reset): its traceback in the log, exit status 2, the same for
    every command. No report is left half-written: each is renamed into place only once
    whole."""
    what = "run" if args.command == "run" else f"{args.command} command"
    log.exception("internal error: the %s could not be done; please report this traceback", what)
    return ExitStatus.NOT_DONE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
