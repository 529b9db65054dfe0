"""One run's hold on its series: the store, the lock, the baseline, the judgement, the record.

Where it sits: ``pipeline.run`` opens a :class:`Session` for a run with a
series (and history on) and calls it at three points: :meth:`Session.baseline`
chooses the baseline (the series' recorded one unless another is given),
:meth:`Session.judge` applies the control rules to the flagged table, and
:meth:`Session.recording` records the run in the history around the writing of
its outputs. Slots (which file is which tube from run to run) are in
``slots.py``; nothing here reads pixels.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .. import table
from ..catalog import METRICS
from ..compare import Input
from ..config import Config
from ..errors import ReporterError
from ..flags import Flag, Rule
from ..inputs import baseline_named, choose_baseline
from ..record import LimitFacts, PeriodFacts, RunRecord, SeriesFacts
from .charts import Chart
from .rules import Control, evaluate
from .slots import slots
from .store import Baseline, History, said_of, series_lock

__all__ = [
    "gap_hours",
    "MAX_CHARTS",
    "SeriesRun",
    "Session",
    "user",
]

log = logging.getLogger("reporter")


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
                zone=self.config.timezone,
            )
            for slot, metric in order[:MAX_CHARTS]
        ]


def _plain(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def user() -> str:
    """Who runs this, for the history's "set by" (a cron job's user)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (some containers)
        return "unknown"


class Session:
    """One run's hold on its series: it owns the history store, the series' lock and the
    recorded baseline, from :meth:`open` to the end of the run.

    The run calls it at three points: :meth:`baseline` (which file to compare
    against), :meth:`judge` (the control rules on the flagged table) and
    :meth:`recording` (the run into the history, around the writing of its outputs).
    """

    def __init__(self, config: Config, store: History):
        self.config = config
        self.store = store
        self.recorded: Baseline | None = None
        self.run: SeriesRun | None = None
        self.shown_as: Path | None = None  # the baseline's own name, when its copy is compared

    @classmethod
    @contextlib.contextmanager
    def open(cls, config: Config) -> Iterator[Session | None]:
        """The session of a run that keeps history (None for one that does not), with the
        series' lock held for the whole block; a history error is one line."""
        if not config.keeps_history:
            yield None
            return
        store = History(config.history_path())
        try:
            locks = config.history_path().parent / "locks"
            with series_lock(locks, config.series, config.history.lock_wait):
                yield cls(config, store)
        except sqlite3.Error as exc:  # locked too long, disk full, a damaged table: one line
            raise ReporterError(said_of(config.history_path(), exc)) from None
        finally:
            store.close()

    def baseline(self, config: Config, found: list[Input]) -> tuple[Path, list[Input]]:
        """The baseline file and the inputs without it: the series' recorded baseline
        unless one is given or found by name.

        A series whose baseline was never recorded gets this run's (its first
        control period begins). A run given another baseline than the recorded one
        is compared against the one given, and :meth:`judge` says so loudly.
        """
        self.recorded = self.store.baseline(config.series)
        if self.recorded is not None and config.baseline is None and not config.first_as_baseline:
            named = [i for i in found if baseline_named(i.path)]
            if not named:  # the series' own copy
                copy = Path(self.recorded.stored)
                if not copy.is_file():
                    raise ReporterError(
                        f"the recorded baseline of series {config.series!r} is missing: {copy}; "
                        "pass --baseline FILE, or record one with 'reporter baseline set'"
                    )
                config = replace(config, baseline=copy)
                self.shown_as = Path(self.recorded.source)  # not the copy's hash name
        path, items = choose_baseline(config, found)
        if self.recorded is None:
            self.recorded = self.store.set_baseline(
                config.series, path, reason="the first run of the series", by=user()
            )
            log.info("series %r: recorded %s as its baseline", config.series, path)
        return path, items

    def judge(self, config: Config, frame: pd.DataFrame, sha: str, started: datetime) -> None:
        """Read the control period and apply its rules to today's rows (:attr:`flags`)."""
        if self.recorded is None:
            raise RuntimeError("Session.judge before Session.baseline")
        self.config = config  # with the rules' metric sets resolved for this baseline
        self.run = SeriesRun.start(config, self.store, self.recorded, sha, frame, started)

    @property
    def flags(self) -> dict[int, list[Flag]]:
        """The series' flags by row position (control rules, another baseline, new slots)."""
        return self.run.extra if self.run else {}

    @property
    def off_series(self) -> bool:
        """Whether the run was compared against another baseline than the series'."""
        return bool(self.run and self.run.mismatch)

    def charts(self, frame: pd.DataFrame) -> list[Chart]:
        return self.run.charts(frame) if self.run else []

    @contextlib.contextmanager
    def recording(self, frame: pd.DataFrame, record: RunRecord, out: Path):
        """Record the run for the block (committed when it ends without an exception);
        yields the series' facts for the run's record. :meth:`finish` records the final
        exit status once the e-mail has decided it."""
        if self.run is None:
            raise RuntimeError("Session.recording before Session.judge")
        with self.run.recording(self.store, frame, record, out) as facts:
            yield facts

    def finish(self, record: RunRecord) -> None:
        if record.history is not None and record.exit_status != record.rows_status:
            self.store.set_exit_code(record.history.run_id, record.exit_status)
