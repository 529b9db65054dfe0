"""report.html: one self-contained page a QC engineer reads in a browser.

Where it sits: after ``flags.apply``. :func:`view` turns the DataFrame (read by
the column constants of ``table``) and the run's metadata into a view model;
``templates/report.html.j2`` only loops and branches over it. Every picture is
embedded as a data: URI and the page loads nothing from anywhere, so it opens
from a file on a laptop with no network. Failures come first; a small inline
script sorts and filters, and the page reads fully without it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import clock, visuals
from ..atomic import write_text
from ..catalog import METRICS
from ..config import OutlierRule
from ..names import shown
from ..record import BaselineFacts, RunRecord, SeriesFacts, SignalFacts, SkippedFile
from ..table import (
    DIFF_MAP,
    ERROR,
    FILE,
    FLAGS,
    HEIGHT,
    ICON,
    LOCAL_CELL,
    LOOK,
    LOOK_DIFF,
    NOTES,
    PATH,
    SEPARATOR,
    SHIFT_X,
    SHIFT_Y,
    STATUS,
    THUMBNAIL,
    WIDTH,
    Status,
)
from .templates import environment
from .view import (
    STATUS_COLOURS,
    control_sentence,
    gap_text,
    headline,
    limit_texts,
    link,
    most_severe_first,
    shown_metrics,
    signal_text,
    title,
    when,
)

__all__ = [
    "Cell",
    "PASSES_OPEN",
    "data_uri",
    "png_uri",
    "Reason",
    "Report",
    "Row",
    "show",
    "sort_key",
    "view",
    "write_html",
]


def data_uri(jpeg: bytes | None) -> str | None:
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def show(name: str, value: Any) -> str:
    """A metric for people (catalog.Metric.format)."""
    return METRICS[name].format(None if value is pd.NA else value, signed=True)


def sort_key(value: Any) -> str:
    """What the table's script sorts a cell by; empty sorts last, inf as the largest."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "1e308" if isinstance(value, float) and math.isinf(value) else f"{float(value):.7g}"


@dataclass
class Cell:
    text: str
    key: str
    flagged: bool


@dataclass
class Reason:
    """One reason that fired, with its level (FAIL, WARN; PASS for a note)."""

    level: str
    text: str

    @property
    def fail(self) -> bool:
        return self.level in (Status.FAIL.value, Status.ERROR.value)


@dataclass
class Row:
    file: str
    path: str
    status: str
    cells: list[Cell]
    reasons: list[Reason]  # most severe first
    notes: list[str]
    error: str
    size: str
    shift: str
    thumbnail: str | None  # flagged rows: the 512-px closer look where made, else 200 px
    diff_map: str | None
    icon: str | None = None  # rows that passed: 48 px
    link: str | None = None  # the original file, relative to the report (view.link)
    large: bool = False  # thumbnail and diff map are the 512-px closer look
    cell: str | None = None  # where psnr_local fired: its cell's box over the pictures (CSS)

    @property
    def passed(self) -> bool:
        return self.status == Status.PASS.value


@dataclass
class Report:
    title: str  # verdict, series, local time, count: tells open tabs apart
    headline: str  # the verdict in words, the banner's heading
    series: str | None
    verdict: str
    counts: dict[str, int]
    total: int
    started: str
    duration: str
    version: str
    baseline: BaselineFacts
    baseline_thumbnail: str | None
    metrics: list[dict[str, Any]]
    rows: list[Row]
    errors: list[Row]
    skipped: list[SkippedFile]
    legend: str
    outliers: OutlierRule
    notes: list[str] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)  # ignored regions, alignment
    control: SeriesFacts | None = None  # the series' part of the run's record
    previous_run: str = ""  # the series' previous run, local time
    period_set: str = ""  # when the control period's baseline was set, local time
    control_sentence: str = ""  # where its control limits stand
    gap_text: str = ""  # how long the series was silent, when too long
    signal_text: str = ""  # sparse or dense, and how much of the baseline carries signal
    colours: dict[str, str] = field(default_factory=dict)  # status -> colour (view.py)
    signal: SignalFacts | None = None  # the baseline's background and signal share
    charts: list[dict[str, str]] = field(default_factory=list)  # Levey-Jennings PNGs

    @property
    def flagged(self) -> list[Row]:
        return [row for row in self.rows if not row.passed]

    @property
    def passes(self) -> list[Row]:
        return [row for row in self.rows if row.passed]

    @property
    def passes_collapsed(self) -> bool:
        """The compact PASS rows start folded away when flagged rows come first and there
        are more than PASSES_OPEN of them; an all-clear run shows them open."""
        return bool(self.flagged) and len(self.passes) > PASSES_OPEN


def _split(text: str) -> list[str]:
    return [part for part in (text or "").split(SEPARATOR) if part]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


PASSES_OPEN = 50  # more PASS rows than this start folded (below the flagged ones)


def _cell_box(cell, baseline: BaselineFacts) -> str | None:
    """The CSS place of psnr_local's cell (x0, y0, x1, y1, in the baseline's pixels) over a
    picture of the compared image, in percent of its sides: the pictures are the whole
    image at the baseline's shape (``visuals.fit``), so the box needs no size of theirs."""
    if not cell or not baseline.width or not baseline.height:
        return None
    x0, y0, x1, y1 = cell
    w, h = baseline.width, baseline.height
    return (
        f"left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;"
        f"width:{100 * (x1 - x0) / w:.3f}%;height:{100 * (y1 - y0) / h:.3f}%"
    )


def view(
    frame: pd.DataFrame,
    record: RunRecord,
    baseline_thumbnail: bytes | None,
    picture: Callable[[bytes | None], str | None] = data_uri,
    charts: list | None = None,
    chart_picture: Callable[[bytes], str] = png_uri,
    *,
    large: bool = True,
    folder: Path | None = None,
) -> Report:
    """The view model of the page: everything the template shows, already formatted.

    ``picture`` turns a JPEG into what an ``<img src>`` holds: a data: URI for
    the page, a ``cid:`` reference for the e-mail. With ``large`` (the page), a
    flagged row shows its 512-px closer look where one was made; the e-mail shows
    the 200-px thumbnails. A row that passed gets only its icon. ``folder`` is
    where the page will be: rows link to their files relative to it (view.link).
    """
    order = {s.value: i for i, s in enumerate(most_severe_first())}
    ranked = frame.assign(_rank=frame[STATUS].astype(str).map(order)).sort_values(
        ["_rank", FILE], kind="stable"
    )
    limits = record.settings.limits
    visible = shown_metrics(record)
    rows = []
    for r in ranked.to_dict("records"):
        reasons = [Reason(level, text) for level, text in r[FLAGS]]
        fired = {reason.text.split(" ", 1)[0] for reason in reasons}
        size = f"{r[WIDTH]}x{r[HEIGHT]}" if pd.notna(r[WIDTH]) else ""
        shift = f"shift {_px(r[SHIFT_X])}, {_px(r[SHIFT_Y])} px" if pd.notna(r[SHIFT_X]) else ""
        passed = r[STATUS] == Status.PASS.value
        closer = large and not passed and r.get(LOOK) is not None
        rows.append(
            Row(
                file=r[FILE],
                path=r[PATH],
                status=str(r[STATUS]),
                cells=[Cell(show(m, r[m]), sort_key(r[m]), m in fired) for m in visible],
                reasons=reasons,
                notes=_split(r[NOTES]),
                error=r[ERROR] or "",
                size=size,
                shift=shift,
                thumbnail=None if passed else picture(r[LOOK] if closer else r[THUMBNAIL]),
                diff_map=None if passed else picture(r[LOOK_DIFF] if closer else r[DIFF_MAP]),
                icon=picture(r.get(ICON)) if passed else None,
                link=link(r[PATH], folder),
                large=closer,
                cell=_cell_box(r.get(LOCAL_CELL), record.baseline)
                if "psnr_local" in fired and not passed
                else None,
            )
        )
    metrics = [
        {
            "name": name,
            "definition": m.definition,
            "direction": m.direction,
            "warn": limit_texts(limits, name)[0],
            "fail": limit_texts(limits, name)[1],
        }
        for name, m in METRICS.items()
        if name in visible
    ]
    counts = record.counts
    verdict = record.verdict.value
    zone = record.settings.timezone
    comparison = record.settings.comparison
    return Report(
        title=title(record),
        headline=headline(record),
        series=record.series,
        verdict=verdict,
        counts=counts,
        total=len(frame),
        started=when(record, seconds=True),
        duration=f"{record.duration_s:.1f} s",
        version=record.tool.version,
        baseline=record.baseline,
        baseline_thumbnail=picture(baseline_thumbnail),
        metrics=metrics,
        rows=rows,
        errors=[row for row in rows if row.status == Status.ERROR.value],
        skipped=list(record.skipped),
        legend=visuals.LEGEND,
        outliers=record.settings.outliers,
        comparison={
            "ignore": list(comparison.ignore),
            "mask": shown(str(comparison.mask)) if comparison.mask else None,
            "align": comparison.align,
        },
        control=record.history,
        previous_run=_local(record.history.previous_run if record.history else None, zone),
        period_set=_local(record.history.baseline.set_at if record.history else None, zone),
        control_sentence=control_sentence(record.history, short=True) if record.history else "",
        gap_text=_sentence(gap_text(record.history))
        if record.history and record.history.missing
        else "",
        signal_text=_sentence(signal_text(record.signal)),
        colours={s.value: c for s, c in STATUS_COLOURS.items()},
        signal=record.signal,
        charts=[
            {
                "title": c.title,
                "caption": c.caption,
                "src": chart_picture(c.png()),
                "status": c.status,
            }
            for c in charts or []
        ],
    )


def _local(moment: str | None, zone: str | None) -> str:
    return clock.shown(moment, zone) if moment else ""


def _px(value: float) -> str:
    """A signed shift with one decimal, never "-0.0"."""
    return f"{round(value, 1) + 0.0:+.1f}"


def write_html(
    frame: pd.DataFrame,
    record: RunRecord,
    baseline_thumbnail: bytes | None,
    path: Path,
    *,
    templates: Path | None = None,
    charts: list | None = None,
    folder: Path | None = None,
) -> Path:
    """The page; ``baseline_thumbnail`` at LOOK_SIDE (the closer look compares with it),
    ``folder`` where the page will be read from (links), by default ``path``'s."""
    report = view(frame, record, baseline_thumbnail, charts=charts, folder=folder or path.parent)
    page = environment(templates).get_template("report.html.j2").render(report=report)
    return write_text(path, page)
