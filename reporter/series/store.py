"""The run history of each series, in SQLite: runs, their rows, baselines and acceptances.

Where it sits: ``pipeline.run`` opens it when the run has a series, reads the
current control period's values for ``control.evaluate``, and records the run
in one transaction once its verdicts are decided; the ``baseline``, ``history``
and ``accept`` subcommands read and write it too. A killed run leaves the
database as it was: the run is recorded whole or not at all.

A **control period** starts with each baseline recorded for a series (``reporter
baseline set``, or the first run of a series, which records its baseline). The
runs of the period are those made against that baseline (same sha256). An
image flagged FAIL is out of control: its values stay out of its slot's limits
(and out of the rules' run sequences) until a person accepts the run.

The schema carries its version in ``PRAGMA user_version`` and is migrated on
open, in a transaction, by the steps in ``MIGRATIONS``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import names
from ..atomic import write_atomic
from ..errors import ReporterError

# A control rule as the reasons name it: "ssim_64 1-3s: ...", "shift EWMA: ..."
_RULE_IN_REASON = re.compile(r"(?<![\w])(\w+) (1-2s|1-3s|2-2s|R-4s|4-1s|10x|EWMA):")

__all__ = [
    "Baseline",
    "History",
    "MIGRATIONS",
    "now",
    "Run",
    "SCHEMA_VERSION",
    "series_lock",
    "sha256_of",
    "slug",
]

# --- schema ---------------------------------------------------------------------------------


def _v1(db: sqlite3.Connection) -> None:
    """Runs, their rows and their metric values."""
    for statement in (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            series TEXT NOT NULL,
            started TEXT NOT NULL,
            finished TEXT NOT NULL,
            verdict TEXT NOT NULL,
            exit_code INTEGER NOT NULL,
            images INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            baseline_sha256 TEXT NOT NULL,
            baseline_path TEXT NOT NULL,
            out_dir TEXT,
            tool_version TEXT NOT NULL)""",
        "CREATE INDEX runs_by_series ON runs (series, started)",
        """CREATE TABLE results (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            slot TEXT NOT NULL,
            file TEXT NOT NULL,
            status TEXT NOT NULL,
            reasons TEXT NOT NULL,
            error TEXT NOT NULL,
            PRIMARY KEY (run_id, slot))""",
        """CREATE TABLE measurements (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            slot TEXT NOT NULL,
            metric TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (run_id, slot, metric))""",
    ):
        db.execute(statement)


def _v2(db: sqlite3.Connection) -> None:
    """Baselines with their audit trail (control periods), and acceptances of flagged runs.

    Runs recorded under version 1 had no baseline record: each series gets one
    for the baseline of its latest run (the file it was read from, not a copy),
    and the runs against it join that period.
    """
    for statement in (
        """CREATE TABLE baselines (
            id INTEGER PRIMARY KEY,
            series TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            stored TEXT NOT NULL,
            source TEXT NOT NULL,
            set_at TEXT NOT NULL,
            set_by TEXT NOT NULL,
            reason TEXT NOT NULL)""",
        "CREATE INDEX baselines_by_series ON baselines (series, id)",
        "ALTER TABLE runs ADD COLUMN baseline_id INTEGER REFERENCES baselines (id)",
        """CREATE TABLE acceptances (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL UNIQUE REFERENCES runs (id),
            accepted_at TEXT NOT NULL,
            accepted_by TEXT NOT NULL,
            reason TEXT NOT NULL)""",
    ):
        db.execute(statement)
    latest = db.execute(
        """SELECT series, baseline_sha256, baseline_path, started FROM runs r
           WHERE id = (SELECT max(id) FROM runs WHERE series = r.series)"""
    ).fetchall()
    for series, sha, path, started in latest:
        cur = db.execute(
            "INSERT INTO baselines (series, sha256, stored, source, set_at, set_by, reason)"
            " VALUES (?, ?, ?, ?, ?, 'reporter', ?)",
            (series, sha, path, path, started, "recorded by the upgrade to history schema 2"),
        )
        db.execute(
            "UPDATE runs SET baseline_id = ? WHERE series = ? AND baseline_sha256 = ?",
            (cur.lastrowid, series, sha),
        )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1, 2: _v2}
SCHEMA_VERSION = max(MIGRATIONS)


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    id: int
    series: str
    sha256: str
    stored: str  # the copy kept beside the database
    source: str  # the file it was copied from
    set_at: str
    set_by: str
    reason: str


@dataclass(frozen=True)
class Run:
    id: int
    series: str
    started: str
    verdict: str
    exit_code: int
    images: int
    failed: int
    baseline_sha256: str
    baseline_id: int | None
    out_dir: str | None
    accepted_by: str | None
    accepted_reason: str | None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def slug(series: str) -> str:
    """A file-system name for a series; a short hash keeps different series apart."""
    simple = re.sub(r"[^\w.-]+", "_", series).strip("._")[:60] or "series"
    if simple == series:
        return simple
    return f"{simple}-{hashlib.sha1(series.encode()).hexdigest()[:6]}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the store ------------------------------------------------------------------------------


_SAID = {  # SQLite's own words say what is wrong, not what to do
    "SQLITE_NOTADB": (
        "is not an SQLite database (SQLite: file is not a database): give reporter's history "
        "file, or the name of a new one"
    ),
    "SQLITE_CORRUPT": (
        "is damaged (SQLite: database disk image is malformed): restore it from a backup, or "
        "start a new history"
    ),
}


WRITABLE = "the history, its folder and locks/ must be writable by the user the runs run as"


def said_of(path: Path, exc: sqlite3.Error) -> str:
    """One line for an SQLite error of the history at ``path``."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+; extended: SQLITE_CORRUPT_INDEX
    if name.startswith("SQLITE_READONLY"):
        return f"history {path} cannot be written (SQLite: {exc}{whose(path)}): {WRITABLE}"
    said = next((text for code, text in _SAID.items() if name.startswith(code)), None)
    return f"history {path} {said}" if said else f"history {path}: {exc}"


def whose(path: Path) -> str:
    """ "; h.sqlite is root's, and this run runs as qc", to end a parenthesis, when ``path``
    (or, if it is missing, the nearest folder above it) belongs to another user than this
    run's; else "". The usual cause of a history that a cron job cannot write: its first
    run made by hand as another user."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return ""
    there = Path(path)
    while not os.path.exists(there) and there != there.parent:  # False where it cannot look
        there = there.parent
    try:
        uid, me = there.stat().st_uid, os.geteuid()
    except OSError:
        return ""
    if uid == me:
        return ""

    def name(n: int) -> str:
        try:
            return pwd.getpwuid(n).pw_name
        except KeyError:
            return f"user {n}"

    return f"; {there} is {name(uid)}'s, and this run runs as {name(me)}"


class History:
    """One history database. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        kind = names.not_a_file(self.path)
        if kind == os.strerror(errno.EACCES):  # a folder on the way this user cannot search
            raise ReporterError(
                f"history {self.path} cannot be reached ({kind}{whose(self.path)}): {WRITABLE}"
            )
        if kind not in (None, "not found"):  # SQLite's words were "disk I/O error" for a pipe
            raise ReporterError(f"history {self.path} is {kind}: give the database's file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise ReporterError(said_of(self.path, exc)) from None
        except OSError as exc:
            raise ReporterError(f"history {self.path}: {exc.strerror or exc}") from None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            # SQLite may have rolled back already (a full disk does): a second ROLLBACK
            # would fail with "no transaction is active" and hide the real cause.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.version() == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            found = self.version()  # again, inside the lock: another process may have done it
            tables = [
                name
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not name.startswith("sqlite_")
            ]
            if found == 0 and tables:  # never migrate into another program's database
                raise ReporterError(
                    f"history {self.path} is an SQLite database of something else (its "
                    f"tables: {', '.join(sorted(tables)[:5])}): give reporter a file of its own"
                )
            if found > SCHEMA_VERSION:
                raise ReporterError(
                    f"history {self.path} has schema version {found}, newer than this "
                    f"reporter understands ({SCHEMA_VERSION}): upgrade reporter"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- baselines ---

    def baseline(self, series: str) -> Baseline | None:
        """The series' current baseline: the last one recorded."""
        row = self.db.execute(
            "SELECT * FROM baselines WHERE series = ? ORDER BY id DESC LIMIT 1", (series,)
        ).fetchone()
        return Baseline(*row) if row else None

    def baselines(self, series: str) -> list[Baseline]:
        rows = self.db.execute(
            "SELECT * FROM baselines WHERE series = ? ORDER BY id", (series,)
        ).fetchall()
        return [Baseline(*row) for row in rows]

    def set_baseline(self, series: str, source: Path, *, reason: str, by: str) -> Baseline:
        """Keep a copy of ``source`` beside the database and make it the series' baseline.

        It starts a new control period: the limits are established again from
        the runs made against it.
        """
        source = Path(source)
        if not source.is_file():
            raise ReporterError(f"baseline file not found: {source}")
        sha = sha256_of(source)
        folder = self.path.parent / "baselines" / slug(series)
        stored = folder / f"{sha[:16]}{source.suffix.lower()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not stored.exists():
                write_atomic(stored, lambda tmp: shutil.copyfile(source, tmp))
        except OSError as exc:
            raise ReporterError(f"cannot keep a copy of the baseline in {folder}: {exc}") from None
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO baselines (series, sha256, stored, source, set_at, set_by, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (series, sha, str(stored), names.stored(str(source.absolute())), now(), by, reason),
            )
        found = self.baseline(series)
        assert found is not None and found.id == cur.lastrowid
        return found

    # --- runs ---

    @contextlib.contextmanager
    def recording(self, run: dict[str, Any], rows: list[dict[str, Any]]) -> Iterator[int]:
        """Append a run and its rows in one transaction that commits when the block ends.

        Yields the run's id. An exception in the block (or a kill) rolls the
        run back: the history holds a run only when its reports were written.
        ``rows``: dicts with slot, file, status, reasons, error and metrics (a
        dict of name -> float or None).
        """
        columns = (
            "series, started, finished, verdict, exit_code, images, failed, "
            "baseline_sha256, baseline_path, out_dir, tool_version, baseline_id"
        )
        with self.transaction() as db:
            cur = db.execute(
                f"INSERT INTO runs ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(run[c.strip()] for c in columns.split(",")),
            )
            run_id = int(cur.lastrowid)
            self._insert_rows(db, run_id, rows)
            yield run_id

    def _insert_rows(self, db: sqlite3.Connection, run_id: int, rows) -> None:
        db.executemany(
            "INSERT INTO results (run_id, slot, file, status, reasons, error)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, r["slot"], r["file"], r["status"], r["reasons"], r["error"]) for r in rows],
        )
        db.executemany(
            "INSERT INTO measurements (run_id, slot, metric, value) VALUES (?, ?, ?, ?)",
            [
                (run_id, r["slot"], name, _real(value))
                for r in rows
                for name, value in r["metrics"].items()
            ],
        )

    def set_exit_code(self, run_id: int, code: int) -> None:
        """Correct a run's exit status (the e-mail is sent after the run is recorded)."""
        self.db.execute("UPDATE runs SET exit_code = ? WHERE id = ?", (code, run_id))

    def runs(self, series: str, last: int | None = None) -> list[Run]:
        """The series' runs, oldest first (the last ``last`` of them)."""
        query = """SELECT r.id, r.series, r.started, r.verdict, r.exit_code, r.images, r.failed,
                          r.baseline_sha256, r.baseline_id, r.out_dir, a.accepted_by, a.reason
                   FROM runs r LEFT JOIN acceptances a ON a.run_id = r.id
                   WHERE r.series = ? ORDER BY r.started DESC, r.id DESC"""
        params: tuple = (series,)
        if last is not None:
            query += " LIMIT ?"
            params += (last,)
        return [Run(*row) for row in reversed(self.db.execute(query, params).fetchall())]

    def run(self, run_id: int) -> Run | None:
        found = self.runs_by_id((run_id,))
        return found[0] if found else None

    def runs_by_id(self, ids) -> list[Run]:
        ids = tuple(ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(
            f"""SELECT r.id, r.series, r.started, r.verdict, r.exit_code, r.images, r.failed,
                       r.baseline_sha256, r.baseline_id, r.out_dir, a.accepted_by, a.reason
                FROM runs r LEFT JOIN acceptances a ON a.run_id = r.id
                WHERE r.id IN ({marks}) ORDER BY r.started, r.id""",
            ids,
        ).fetchall()
        return [Run(*row) for row in rows]

    def period(self, series: str, baseline: Baseline) -> list[dict[str, Any]]:
        """Every value of the period's runs: one dict per (run, slot, metric), oldest first.

        Keys: run_id, started, slot, metric, value, status, reasons, in_control.
        """
        rows = self.db.execute(
            """SELECT r.id, r.started, m.slot, m.metric, m.value, s.status, s.reasons,
                      (s.status NOT IN ('FAIL', 'ERROR') OR a.run_id IS NOT NULL)
               FROM runs r
               JOIN measurements m ON m.run_id = r.id
               JOIN results s ON s.run_id = r.id AND s.slot = m.slot
               LEFT JOIN acceptances a ON a.run_id = r.id
               WHERE r.series = ? AND r.baseline_id = ? AND r.baseline_sha256 = ?
               ORDER BY r.started, r.id""",
            (series, baseline.id, baseline.sha256),
        ).fetchall()
        keys = ("run_id", "started", "slot", "metric", "value", "status", "reasons", "in_control")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def slots(self, series: str) -> set[str]:
        """Every slot an earlier run of the series had."""
        rows = self.db.execute(
            "SELECT DISTINCT s.slot FROM results s JOIN runs r ON r.id = s.run_id "
            "WHERE r.series = ?",
            (series,),
        ).fetchall()
        return {row[0] for row in rows}

    def rules_fired(self, run_ids: list[int]) -> dict[int, list[str]]:
        """Per run, the control rules its rows name ("ssim_64 1-3s"), each once, in order."""
        found: dict[int, list[str]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return found
        marks = ",".join("?" * len(run_ids))
        rows = self.db.execute(
            f"SELECT run_id, reasons FROM results WHERE run_id IN ({marks}) ORDER BY slot",
            list(run_ids),
        )
        for run_id, reasons in rows:
            for metric, rule in _RULE_IN_REASON.findall(reasons or ""):
                name = f"{metric} {rule}"
                if name not in found[run_id]:
                    found[run_id].append(name)
        return found

    def accept(self, series: str, run_id: int, *, reason: str, by: str) -> Run:
        """Let a flagged run's values into the limits, recording who and why."""
        run = self.run(run_id)
        if run is None or run.series != series:
            raise ReporterError(f"no run {run_id} in series {series!r}")
        if run.accepted_by is not None:
            raise ReporterError(
                f"run {run_id} was already accepted by {run.accepted_by}: {run.accepted_reason}"
            )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO acceptances (run_id, accepted_at, accepted_by, reason)"
                " VALUES (?, ?, ?, ?)",
                (run_id, now(), by, reason),
            )
        accepted = self.run(run_id)
        assert accepted is not None
        return accepted


def _real(value: Any) -> float | None:
    """A metric value for SQLite: NaN and missing as NULL (inf is kept: SQLite stores it)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# --- one run of a series at a time -------------------------------------------------------------


@contextlib.contextmanager
def series_lock(folder: Path, series: str, wait: float) -> Iterator[Path]:
    """Hold the series' lock file for the block; wait up to ``wait`` seconds for it.

    The operating system releases the lock when the process ends, killed or
    not, so a crashed run never leaves a stale lock behind.
    """
    path = folder / f"{slug(series)}.lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except PermissionError as exc:
        raise ReporterError(
            f"cannot take the series' lock {path} ({exc.strerror}{whose(path)}): {WRITABLE}"
        ) from None
    deadline = time.monotonic() + wait
    try:
        while not _try_lock(fh):
            if time.monotonic() >= deadline:
                raise ReporterError(
                    f"another run of series {series!r} is still going (lock {path} held "
                    f"for more than {wait:g} s); this run stopped before writing anything"
                )
            time.sleep(0.1)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {now()}\n".encode())
        fh.flush()
        yield path
    finally:
        fh.close()  # closing the file releases the lock


if sys.platform == "win32":  # pragma: no cover - the tests run on Linux
    import msvcrt

    def _try_lock(fh) -> bool:
        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

else:
    import fcntl

    def _try_lock(fh) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
