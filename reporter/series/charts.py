"""Levey-Jennings charts of a series: one PNG per slot and chart metric.

Where it sits: ``series.SeriesRun.charts`` makes :class:`Chart` objects from the
control evaluation; report.html embeds their PNG (so the chart survives being
mailed) and report.xlsx draws the same numbers as native charts.

Drawn with matplotlib's object API (no pyplot: no global state, no display):
the runs of the current control period in order, this run last and larger;
the mean and the +-1, 2 and 3 SD lines; points where a control rule fired in
red (a FAIL rule) or amber (1-2s, EWMA); runs that are out of control and not
accepted as hollow grey circles (they do not count for the limits).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from .. import clock
from ..render.view import STATUS_COLOURS
from ..table import Status
from .rules import FAIL_RULES, ControlLimit, Point

__all__ = [
    "Chart",
    "COLOURS",
    "draw",
    "FAIL_RED",
    "OK_BLUE",
    "WARN_AMBER",
    "window",
    "WINDOW_SD",
]

FAIL_RED, WARN_AMBER = STATUS_COLOURS[Status.FAIL], STATUS_COLOURS[Status.WARN]
OK_BLUE = "#1f5fa8"
COLOURS = {"mean": "#1d232b", 1: "#9aa5b1", 2: WARN_AMBER, 3: FAIL_RED}  # the SD lines


@dataclass
class Chart:
    slot: str
    metric: str
    limit: ControlLimit
    points: list[Point]
    min_runs: int
    status: str  # this run's status for the slot
    zone: str | None = None  # the timezone setting: dates on the axis are local (clock.py)
    _png: bytes | None = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return f"{self.slot}: {self.metric}"

    @property
    def caption(self) -> str:
        lim = self.limit
        if not lim.ready:
            return f"no limits yet: {lim.n} of {self.min_runs} in-control runs"
        low, high = lim.band(3)
        numbers = f"centre {lim.centre:.3g}, 3SD {low:.3g} to {high:.3g}"
        if lim.provisional:
            return f"provisional ({lim.n} of {self.min_runs} runs; fixed limits decide): {numbers}"
        return f"{numbers} (first {lim.n} in-control runs)"

    def png(self) -> bytes:
        if self._png is None:
            self._png = draw(self)
        return self._png


def draw(chart: Chart, width: float = 7.0, height: float = 2.7, dpi: int = 100) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.subplots()
    points = chart.points
    xs = list(range(1, len(points) + 1))
    lim = chart.limit
    if lim.ready:
        style = "--" if lim.provisional else "-"
        ax.axhline(lim.centre, color=COLOURS["mean"], lw=1, ls=style)
        for k in (1, 2, 3):
            for label, y in zip((f"-{k}SD", f"+{k}SD"), lim.band(k), strict=True):
                ax.axhline(
                    y,
                    color=COLOURS[k],
                    lw=0.8,
                    ls=":" if k == 1 else "--",
                    alpha=0.5 if lim.provisional else 0.9,
                )
                ax.annotate(
                    label,
                    (1.005, y),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color=COLOURS[k],
                    va="center",
                )
        ax.annotate(
            "centre",
            (1.005, lim.centre),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            va="center",
        )
    low, high = window(chart)

    def shown(value: float) -> float:  # off-scale values sit on the edge of the window
        return value if low is None else min(max(value, low), high)

    kept = [
        (x, shown(p.value))
        for x, p in zip(xs, points, strict=True)
        if p.value is not None and p.in_control
    ]
    if kept:
        ax.plot(*zip(*kept, strict=True), color=OK_BLUE, lw=0.8, alpha=0.6)
    # One scatter per marker and kind, not one per point: matplotlib's scatter costs about
    # 2 ms a call, which was 40 % of a chart of 40 runs (this run's own point last, on top).
    groups: dict[tuple[str, bool, bool], list[tuple[float, float, int, str, str]]] = {}
    for x, p in zip(xs, points, strict=True):
        if p.value is None:
            continue
        size = 42 if p.run_id is None else 16
        y, marker = shown(p.value), "o"
        if y != p.value:  # off the scale: a triangle on the edge (this run's value beside it)
            marker = "v" if p.value < y else "^"
        if y != p.value and p.run_id is None:
            ax.annotate(
                f"{p.value:.3g}",
                (x, y),
                textcoords="offset points",
                xytext=(5, 2 if marker == "v" else -8),
                fontsize=6,
                color="#5f6b7a",
            )
        if not p.in_control:  # hollow grey
            face, edge = "none", "#7a8591"
        else:
            fail = any(r in FAIL_RULES for r in p.rules)
            face = FAIL_RED if fail else WARN_AMBER if p.rules else OK_BLUE
            edge = "#1d232b" if p.run_id is None else "none"
        key = (marker, p.run_id is None, p.in_control)
        groups.setdefault(key, []).append((x, y, size, face, edge))
    for (marker, _, _), dots in sorted(groups.items(), key=lambda kv: kv[0][1]):
        gx, gy, sizes, faces, edges = zip(*dots, strict=True)
        ax.scatter(
            gx,
            gy,
            s=sizes,
            marker=marker,
            facecolors=faces,
            edgecolors=edges,
            zorder=3,
        )
    if low is not None:
        ax.set_ylim(low, high)
    ticks = _ticks(len(points))
    ax.set_xticks([xs[i] for i in ticks])
    ax.set_xticklabels([_when(points, i, chart.zone) for i in ticks], fontsize=7)
    offset = clock.offset(points[-1].started, chart.zone)
    ax.set_xlabel(
        f"run start, {chart.zone or 'local time'} (UTC{offset})",
        fontsize=6,
        color="#5f6b7a",
        labelpad=1,
    )
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlim(0.5, len(points) + 0.5)
    # y given: matplotlib then skips placing the titles clear of top ticks (there are
    # none), which measured every artist's extent: a quarter of a chart's time
    ax.set_title(_label(chart.title), fontsize=9, loc="left", fontweight="bold", y=1.0)
    ax.set_title(chart.caption, fontsize=7, loc="right", color="#5f6b7a", y=1.0)
    ax.grid(axis="y", color="#eef0f3", lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.subplots_adjust(left=0.09, right=0.93, top=0.86, bottom=0.18)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


WINDOW_SD = 4.5  # the y axis spans the +-this many SD lines (and the in-control points)


def window(chart: Chart) -> tuple[float | None, float | None]:
    """The y range: the control band, so one far-off fault does not flatten the others."""
    lim = chart.limit
    if not lim.ready:
        return None, None
    inside = [
        p.value
        for p in chart.points
        if p.value is not None and p.in_control and abs(lim.z(p.value)) <= 6
    ]
    low, high = lim.band(WINDOW_SD)
    low, high = min([low, *inside]), max([high, *inside])
    if high - low < 1e-9:  # no spread at all (identical runs): a visible band around them
        pad = max(abs(high) * 0.01, 1e-3)
        low, high = low - pad, high + pad
    return low, high


def _when(points: list[Point], i: int, zone: str | None = None) -> str:
    """A tick label: the local date, or the local time when the chart covers less than two
    days."""
    first, last = clock.local(points[0].started, zone), clock.local(points[-1].started, zone)
    when = clock.local(points[i].started, zone)
    return when.strftime("%H:%M") if abs((last - first).days) < 2 else when.strftime("%m-%d")


def _label(text: str) -> str:
    """Outside text (a slot is a file name) as matplotlib draws it literally: no control
    characters (no glyph), and ``$`` escaped (it would start mathtext)."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", text).replace("$", r"\$")


def _ticks(n: int, most: int = 10) -> list[int]:
    """Indexes of the points that get a date label: at most ``most``, always the last."""
    step = max(1, -(-n // most))
    picked = list(range(n - 1, -1, -step))
    return sorted(picked)
