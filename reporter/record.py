"""What a run was: one typed, frozen record, its JSON, and its exit status.

Where it sits: ``pipeline.run`` builds it once the rows are flagged (the tool,
the times, the inputs, the baseline's facts, the skipped files, the counts);
the series adds its facts (``SeriesFacts``) when the run is recorded, and the
e-mail its delivery (``Delivery``). Every output reads it: the reports and the
summary through ``render/view.py``, ``results.json`` through :meth:`to_json`.

The exit status is decided here and nowhere else (:attr:`RunRecord.exit_status`).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from . import __version__, clock, names
from .catalog import METRICS
from .config import Config
from .errors import ExitStatus
from .table import Status, flagged, verdict

__all__ = [
    "BaselineFacts",
    "exit_status",
    "Delivery",
    "LimitFacts",
    "PeriodFacts",
    "RunRecord",
    "SeriesFacts",
    "SignalFacts",
    "SkippedFile",
    "Tool",
]


@dataclass(frozen=True)
class Tool:
    """The program and the libraries whose versions decide the numbers."""

    version: str
    python: str
    opencv: str
    pandas: str
    name: str = "reporter"

    @classmethod
    def here(cls) -> Tool:
        import cv2
        import pandas as pd

        return cls(__version__, platform.python_version(), cv2.__version__, pd.__version__)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "python": self.python,
            "opencv": self.opencv,
            "pandas": self.pandas,
        }


@dataclass(frozen=True)
class BaselineFacts:
    """The baseline file this run compared against."""

    path: str  # stored form (names.stored): identifies the file even when not UTF-8
    file: str  # shown form, for people
    width: int
    height: int
    channels: int
    bit_depth: int
    bytes: int
    sha256: str
    notes: tuple[str, ...] = ()
    significant_bits: int = 0  # of a 16-bit baseline (the bits setting); else bit_depth
    # A float (or signed, or 32-bit integer) baseline's decoded type, and the run's
    # value_range over which it was brought to 16 bits; "" and None for any other.
    mapped_from: str = ""
    value_range: tuple[float, float] | None = None

    @property
    def depth(self) -> str:
        """'16-bit', '16-bit, 12 significant (bits = 12)', or 'float32, 0 to 1 on 16 bits
        (value_range)'."""
        if self.mapped_from and self.value_range:
            low, high = self.value_range
            return f"{self.mapped_from}, {low:g} to {high:g} on 16 bits (value_range)"
        if 0 < self.significant_bits < self.bit_depth:
            n = self.significant_bits
            return f"{self.bit_depth}-bit, {n} significant (bits = {n})"
        return f"{self.bit_depth}-bit"


@dataclass(frozen=True)
class SignalFacts:
    """The baseline's background and how much of it carries signal (signal.py)."""

    background: tuple[float, ...]
    noise: float
    threshold: float
    share: float
    sparse: bool
    grid: int


@dataclass(frozen=True)
class SkippedFile:
    """A file found among the inputs and left out, with why."""

    path: str
    reason: str


@dataclass(frozen=True)
class PeriodFacts:
    """The series' recorded baseline: the start of its control period."""

    id: int
    sha256: str
    set_at: str
    set_by: str
    reason: str
    stored: str


@dataclass(frozen=True)
class LimitFacts:
    """One slot's control limit for one metric."""

    slot: str
    metric: str
    centre: float | None
    lines_3sd: tuple[float, float] | None
    scale: str
    mean: float | None
    sd: float | None
    n: int
    provisional: bool


@dataclass(frozen=True)
class SeriesFacts:
    """What a run of a series knows beyond its images: its id, its period, its limits."""

    path: str
    series: str
    run_id: int
    slots: dict[str, str]  # file -> slot
    baseline: PeriodFacts
    baseline_mismatch: str | None
    new_slots: str | None
    min_runs: int
    in_control_runs: int
    established: bool
    rules: tuple[str, ...]
    limits: dict[str, LimitFacts]  # "slot|metric" ->
    previous_run: str | None
    gap_hours: float | None
    missing_after: float | None
    missing: bool


@dataclass(frozen=True)
class Delivery:
    """The e-mail: to whom, with which subject, and whether the server took it."""

    to: tuple[str, ...]
    subject: str
    sent: bool = False
    error: str | None = None
    not_attached: tuple[str, ...] = ()  # reports the server would not take with the message


@dataclass(frozen=True)
class RunRecord:
    """One run, as every output describes it."""

    tool: Tool
    started: datetime  # UTC
    finished: datetime
    duration_s: float
    baseline: BaselineFacts
    inputs: tuple[str, ...]  # stored forms
    settings: Config  # with the "auto" metric sets resolved for this baseline
    signal: SignalFacts
    ssim_coarse_factor: int
    ms_ssim_scales: int
    counts: dict[str, int]  # every status, in severity order
    skipped: tuple[SkippedFile, ...] = ()
    off_series: bool = False  # a series run compared against another than its baseline
    history: SeriesFacts | None = None
    delivery: Delivery | None = None

    @property
    def series(self) -> str | None:
        return self.settings.series

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def verdict(self) -> Status:
        """The worst status any image has (PASS for an all-clear run)."""
        return Status(verdict(self.counts))

    @property
    def flagged(self) -> int:
        """Images that are not PASS."""
        return flagged(self.counts)

    @property
    def rows_status(self) -> ExitStatus:
        """The status the rows alone give (before the e-mail)."""
        return exit_status(self.counts, off_series=self.off_series)

    @property
    def exit_status(self) -> ExitStatus:
        """What the command exits with."""
        failed = self.delivery is not None and self.delivery.error is not None
        return exit_status(self.counts, off_series=self.off_series, not_sent=failed)

    def with_history(self, facts: SeriesFacts) -> RunRecord:
        return replace(self, history=facts)

    def with_delivery(self, delivery: Delivery) -> RunRecord:
        return replace(self, delivery=delivery)

    def to_json(self) -> dict[str, Any]:
        """The run as ``results.json`` holds it (without the rows), plain JSON data."""
        document: dict[str, Any] = {
            "tool": self.tool.to_json(),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": self.finished.isoformat(timespec="seconds"),
            # The offset of the zone the reports show times in (clock.py), at the start.
            "utc_offset": clock.offset(self.started, self.settings.timezone),
            "duration_s": self.duration_s,
            "baseline": asdict(self.baseline),
            "series": self.series,
            "inputs": list(self.inputs),
            "config": self.settings.to_dict(),
            "metrics": {
                name: {"definition": m.definition, "higher_is_better": m.higher_is_better}
                for name, m in METRICS.items()
            },
            "signal": asdict(self.signal),
            "ssim_coarse_factor": self.ssim_coarse_factor,
            "ms_ssim_scales": self.ms_ssim_scales,
            "counts": dict(self.counts),
            "exit_code": int(self.exit_status),
            "skipped": [asdict(s) for s in self.skipped],
            "history": asdict(self.history) if self.history else None,
        }
        if self.delivery is not None:
            document["email"] = asdict(self.delivery)
        return names.stored_tree(_plain(document))


def exit_status(
    counts: dict[str, int], *, off_series: bool = False, not_sent: bool = False
) -> ExitStatus:
    """The one place a run's exit status is decided.

    NOT_SENT when the e-mail could not be sent, whatever the images; FLAGGED when
    an image is FAIL or ERROR, or a run of a series was compared against another
    baseline than the series' (its control rules could not be applied); else OK.
    """
    if not_sent:
        return ExitStatus.NOT_SENT
    bad = counts.get(Status.FAIL.value, 0) + counts.get(Status.ERROR.value, 0)
    return ExitStatus.FLAGGED if bad or off_series else ExitStatus.OK


def _plain(value: Any) -> Any:
    """Tuples as lists, all the way down: JSON's own shapes."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
