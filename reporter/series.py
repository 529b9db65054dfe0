"""A series' scheduled runs: slots, run folders, the ``latest`` pointer, retention, gaps.

Where it sits: ``pipeline.run`` calls these around the comparison for runs that
have a series (and, for the folder, for every run). Nothing here reads pixels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from . import table
from .catalog import METRICS
from .charts import Chart
from .config import Config
from .control import Control, evaluate
from .errors import ReporterError
from .flags import Flag, Rule
from .history import Baseline, History, slug
from .record import LimitFacts, PeriodFacts, RunRecord, SeriesFacts

log = logging.getLogger("reporter")

RUN_FOLDER = re.compile(r"^\d{8}-\d{6}(-\d+)?$")  # what run_folder() makes: 20261122-073000[-2]
LATEST = "latest"


NAME = "name"
"""``--slot-pattern name``: a file's slot is its whole name."""

# What a default slot leaves out of a file name: dates, times and run counters, as
# instruments and export scripts write them. Each matches a whole token (between
# separators, or after letters for a date), so "tube_001" or "A01" stay as they are;
# what is left out becomes "*".
_YEAR = r"(?:19|20)\d\d"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_SEP = r"[-_.]"
_DATE = (
    rf"(?:{_YEAR}({_SEP}?){_MONTH}\1{_DAY}"  # 2026-10-01, 20261001, 2026_10_01
    rf"|{_DAY}([-_.]){_MONTH}\2{_YEAR}"  # 01.10.2026, 01-10-2026
    rf"|{_MONTH}([-_.]){_DAY}\3{_YEAR})"  # 10-01-2026 (US order)
)
_HOUR, _MINUTE = r"(?:[01]\d|2[0-3])", r"[0-5]\d"
_CLOCK = rf"{_HOUR}([-_.:h]?){_MINUTE}(?:\4{_MINUTE})?(?:\.\d{{1,6}})?Z?"  # 07:15, 071500
_TIME6 = rf"{_HOUR}{_MINUTE}{_MINUTE}"  # 071500 on its own
_TIME_SEP = rf"{_HOUR}([-_.:h]){_MINUTE}\5{_MINUTE}"  # 07-15-00 on its own
_COUNTER = r"(?:run|acq|seq|take|rep)[-_ ]?\d{1,5}"  # run3, run_003, acq-12
_TOKEN = re.compile(
    # A date may be glued to letters (QC20261001); a bare time or a counter may not.
    rf"(?<![0-9])(?:{_DATE}(?:[T_ -]?{_CLOCK})?)(?![0-9])"
    rf"|(?<![A-Za-z0-9])(?:{_TIME6}|{_TIME_SEP}|{_COUNTER})(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_STARS = re.compile(r"\*(?:[-_. ]*\*)+")  # neighbouring stars become one
_AFTER_STAR = re.compile(r"(?<=\*)[-_. ]?\d{1,4}(?![A-Za-z0-9])")  # tubeA_2026-10-01_3


def default_slot(file: str) -> str:
    """A file's name without its dates, times and run counters (each becomes "*").

    ``tubeA_2026-10-01.png`` and ``tubeA_20261002_071500.png`` are both slot
    ``tubeA_*.png``; a name without any stays as it is.
    """
    slot = _TOKEN.sub("*", file)
    if slot == file:
        return file
    slot = _AFTER_STAR.sub("", _STARS.sub("*", slot))
    return _STARS.sub("*", slot)


def slot_of(file: str, pattern: str | None) -> str:
    """The slot of an image: its name without dates (the default), or the part a pattern keeps.

    With a pattern, the group named ``slot`` (or else group 1) is the slot; a
    pattern without groups is cut out of the name. E.g. ``_\\d{4}-\\d\\d-\\d\\d``
    turns ``FSC_SSC_2026-11-22.png`` into ``FSC_SSC.png``, and
    ``(?P<slot>.+)_\\d{4}-\\d\\d-\\d\\d`` into ``FSC_SSC``. A name the pattern does
    not match keeps its name. ``name`` keeps every name whole.
    """
    if not pattern:
        return default_slot(file)
    if pattern == NAME:
        return file
    match = re.search(pattern, file)
    if not match:
        return file
    if "slot" in match.re.groupindex:
        return match.group("slot") or file
    if match.re.groups:
        return match.group(1) or file
    return (file[: match.start()] + file[match.end() :]) or file


def slots(files: list[str], pattern: str | None) -> list[str]:
    """Slots of a run's files; files that would share a slot each keep their own name."""
    out = [slot_of(file, pattern) for file in files]
    shared = {slot for slot, n in Counter(out).items() if n > 1}
    for i, (file, slot) in enumerate(zip(files, out, strict=True)):
        if slot in shared:
            log.warning(
                "%s: slot %r is shared with another file of this run; using its name", file, slot
            )
            out[i] = file
    return out


def run_folder(config: Config, started: datetime) -> tuple[Path, bool]:
    """The run folder, made now, and whether reporter named it (then it is pruned and pointed to).

    ``--out`` is used as given. Otherwise each run gets a new folder named by its
    start time under the reports root, in a sub-folder per series.
    """
    try:
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            return config.out, False
        root = config.reports_root / slug(config.series) if config.series else config.reports_root
        stamp = started.astimezone().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            out = root / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                out.mkdir(parents=True)
                return out, True
            except FileExistsError:
                continue
    except OSError as exc:
        raise ReporterError(f"cannot make the output folder: {exc}") from None
    raise ReporterError(f"cannot make a new run folder under {config.reports_root}")


def point_latest(out: Path) -> Path:
    """Make ``latest`` beside the run folder point to it (a symlink, replaced atomically).

    Where symbolic links cannot be made (Windows without the privilege), a
    ``latest.txt`` file names the folder instead.
    """
    link = out.parent / LATEST
    tmp = out.parent / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(out.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return link
    except OSError:
        tmp.unlink(missing_ok=True)
        note = out.parent / f"{LATEST}.txt"
        note.write_text(out.name + "\n", encoding="utf-8")
        return note


def prune(out: Path, keep: int) -> list[Path]:
    """Delete the oldest run folders beside ``out`` so that ``keep`` remain (0: keep all).

    Only folders named as reporter names them are touched, never ``out``.
    """
    if keep <= 0:
        return []
    runs = sorted(
        p
        for p in out.parent.iterdir()
        if p.is_dir() and not p.is_symlink() and RUN_FOLDER.match(p.name)
    )
    old = [p for p in runs if p != out][: max(0, len(runs) - keep)]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed old run folder %s (keeping %d)", path, keep)
    return old


def gap_hours(previous: str | None, started: datetime) -> float | None:
    """Hours since the series' previous run started, or None for its first run."""
    if previous is None:
        return None
    return (started - datetime.fromisoformat(previous)).total_seconds() / 3600


# --- one run of a series: control rules, its record, its charts ------------------------------

MAX_CHARTS = 24  # Levey-Jennings charts in a report: flagged slots first


@dataclass
class SeriesRun:
    """What a run of a series knows beyond its own images."""

    config: Config
    baseline: Baseline  # the series' recorded baseline (the control period)
    baseline_sha: str  # of the file this run compared against
    slots: list[str]  # per row of the table
    control: Control | None  # None when the run's baseline is not the recorded one
    mismatch: str | None
    new_slots: str | None  # set when none of this run's slots was in an earlier run
    previous: str | None  # when the series' previous run started
    gap: float | None  # hours since then
    extra: dict[int, list[Flag]]  # control flags by row position

    @classmethod
    def start(
        cls,
        config: Config,
        store: History,
        baseline: Baseline,
        sha: str,
        frame: pd.DataFrame,
        started: datetime,
    ) -> SeriesRun:
        slots_ = slots(list(frame[table.FILE]), config.history.slot_pattern)
        last = store.runs(config.series, last=1)
        previous = last[0].started if last else None
        gap = gap_hours(previous, started)
        if gap is not None and config.history.missing_after and gap > config.history.missing_after:
            log.warning(
                "series %r had no run for %.1f h before this one (more than %g h)",
                config.series,
                gap,
                config.history.missing_after,
            )
        mismatch = None
        control = None
        extra: dict[int, list[Flag]] = {}
        compared = [
            i for i, status in enumerate(frame[table.STATUS]) if status != table.Status.ERROR.value
        ]

        def warn_all(flag: Flag) -> None:
            for i in compared:
                extra.setdefault(i, []).append(flag)

        earlier = store.slots(config.series) if last else set()
        new_slots = None
        if earlier and compared and not {slots_[i] for i in compared} & earlier:
            shown = ", ".join(sorted(earlier)[:5]) + (" ..." if len(earlier) > 5 else "")
            new_slots = (
                f"none of this run's slots matches an earlier run of the series (earlier slots: "
                f"{shown}): every slot starts afresh, without control limits. Check the file "
                "names, or --slot-pattern"
            )
            log.warning("series %r: %s", config.series, new_slots)
            warn_all(Flag("slot", Rule.SERIES, table.Status.WARN, "new slot: " + new_slots))
        if baseline.sha256 != sha:
            mismatch = (
                f"this run's baseline (sha256 {sha[:12]}) is not the series' recorded baseline "
                f"(sha256 {baseline.sha256[:12]}, set {baseline.set_at} by {baseline.set_by}: "
                f"{baseline.reason}); control limits were not applied and the run does not count "
                "for them. If the change is intended: reporter baseline set"
            )
            log.warning("series %r: %s", config.series, mismatch)
            warn_all(
                Flag(
                    "baseline",
                    Rule.SERIES,
                    table.Status.WARN,
                    "baseline differs from the series' recorded baseline: control rules not "
                    "applied (reporter baseline set starts a new control period)",
                )
            )
        else:
            today = {
                slot: {name: _plain(row[name]) for name in METRICS}
                for slot, row in zip(slots_, frame.to_dict("records"), strict=True)
                if row[table.STATUS] != table.Status.ERROR.value
            }
            control = evaluate(
                store.period(config.series, baseline),
                today,
                config.history,
                started.isoformat(timespec="seconds"),
            )
            for i, slot in enumerate(slots_):
                extra.setdefault(i, []).extend(control.flags.get(slot, []))
        return cls(
            config, baseline, sha, slots_, control, mismatch, new_slots, previous, gap, extra
        )

    @contextlib.contextmanager
    def recording(self, store: History, frame: pd.DataFrame, record: RunRecord, out: Path):
        """Record the run for the block (committed when it ends without an exception);
        yields the series' facts for the run's record."""
        counts = record.counts
        with store.recording(
            {
                "series": self.config.series,
                "started": record.started.isoformat(timespec="seconds"),
                "finished": record.finished.isoformat(timespec="seconds"),
                "verdict": record.verdict.value,
                "exit_code": int(record.exit_status),
                "images": len(frame),
                "failed": counts.get(table.Status.FAIL.value, 0),
                "baseline_sha256": self.baseline_sha,
                "baseline_path": record.baseline.path,
                "out_dir": str(out.absolute()),
                "tool_version": record.tool.version,
                "baseline_id": self.baseline.id,
            },
            [
                {
                    "slot": slot,
                    "file": row[table.FILE],
                    "status": str(row[table.STATUS]),
                    "reasons": row[table.REASONS],
                    "error": row[table.ERROR],
                    "metrics": {name: _plain(row[name]) for name in METRICS},
                }
                for slot, row in zip(self.slots, frame.to_dict("records"), strict=True)
            ],
        ) as run_id:
            yield self._facts(store, frame, run_id)

    def _facts(self, store: History, frame: pd.DataFrame, run_id: int) -> SeriesFacts:
        settings = self.config.history
        limits = self.control.limits if self.control else {}
        in_control = max((lim.n for lim in limits.values()), default=0)
        b = self.baseline
        return SeriesFacts(
            path=str(store.path),
            series=self.config.series,
            run_id=run_id,
            slots=dict(zip(frame[table.FILE], self.slots, strict=True)),
            baseline=PeriodFacts(b.id, b.sha256, b.set_at, b.set_by, b.reason, b.stored),
            baseline_mismatch=self.mismatch,
            new_slots=self.new_slots,
            min_runs=settings.min_runs,
            in_control_runs=in_control,
            # A metric with values missing on some runs (the shift of an image that did
            # not move as a whole) keeps provisional limits a little longer on its own.
            established=bool(limits) and in_control >= settings.min_runs,
            rules=tuple(settings.rules),
            limits={
                f"{slot}|{metric}": LimitFacts(
                    slot=slot,
                    metric=metric,
                    centre=lim.centre,
                    lines_3sd=tuple(lim.band(3)) if lim.ready else None,
                    scale="cube root of the distance from the best value"
                    if METRICS[metric].transformed
                    else "the metric itself",
                    mean=lim.mean,
                    sd=lim.sd,
                    n=lim.n,
                    provisional=lim.provisional,
                )
                for (slot, metric), lim in limits.items()
            },
            previous_run=self.previous,
            gap_hours=None if self.gap is None else round(self.gap, 2),
            missing_after=settings.missing_after,
            missing=bool(
                self.gap is not None
                and settings.missing_after
                and self.gap > settings.missing_after
            ),
        )

    def charts(self, frame: pd.DataFrame) -> list[Chart]:
        """Levey-Jennings charts of the chart metrics, flagged slots first, at most MAX_CHARTS.

        Slots with no earlier run in the period get none (a chart of one point says nothing).
        """
        if self.control is None:
            return []
        status = dict(zip(self.slots, frame[table.STATUS].astype(str), strict=True))
        rank = {s.value: s.severity for s in table.Status}
        # A chart needs a past: the first run of a series has none.
        drawn = [key for key, points in self.control.points.items() if len(points) >= 2]
        order = sorted(drawn, key=lambda key: (-rank[status[key[0]]], key[0]))
        return [
            Chart(
                slot,
                metric,
                self.control.limits[(slot, metric)],
                self.control.points[(slot, metric)],
                self.control.min_runs,
                status[slot],
            )
            for slot, metric in order[:MAX_CHARTS]
        ]


def _plain(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else value
