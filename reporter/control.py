"""Control limits and Westgard rules: is today out of the series' day-to-day variation?

Where it sits: between comparing and flagging, for runs that have a series.
``pipeline.run`` reads the current control period's values from ``history``;
:func:`evaluate` turns them and today's metrics into limits per (slot, metric),
flags for today's rows (``flags.apply`` merges them with the fixed limits and
the outlier rule) and the points of the Levey-Jennings charts.

Definitions (Westgard, Barry, Hunt & Groth 1981; EWMA after Roberts 1959):

- **Limits**: the mean and the sample SD (floored at ``min_sd``) of a slot's
  metric over the first ``min_runs`` in-control runs of the period. Until there
  are that many the limits are *provisional*: shown, but no rule fires and the
  fixed limits alone decide. Once established they stay fixed for the period,
  so a slow drift cannot drag them along.
- **z** = (value - mean) / SD. The rules fire on the bad side only (less like
  the baseline than usual), as the outlier rule does; ``both_sides`` makes them
  fire on a value far *more* like the baseline too (the same file exported
  twice). R-4s is about the spread within a run and always looks at both.
- **1-2s** |z| > 2: WARN. **1-3s** |z| > 3, **2-2s** this run and the previous
  in-control run beyond 2 SD on the same side, **4-1s** the last four beyond
  1 SD on one side, **10x** the last ten on one side of the mean: FAIL.
  **R-4s**: in this run one slot beyond +2 SD and another beyond -2 SD: FAIL.
- **EWMA** e = lambda z + (1 - lambda) e_prev over the period's in-control runs
  and this one, starting at 0; it fires (``drift_status``) when |e| passes
  ``ewma_limit`` times its own SD, sqrt(lambda / (2 - lambda) (1 - (1 - lambda)^2i)):
  a slow drift well inside the 2 SD limits. It is not listed for a value that
  another rule already flags.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import HistorySettings
from .flags import Flag, Rule, fmt
from .metrics import METRICS
from .table import Status

FAIL_RULES = ("1-3s", "2-2s", "R-4s", "4-1s", "10x")


@dataclass(frozen=True)
class ControlLimit:
    """A slot's metric: mean and SD, and whether enough runs stand behind them."""

    mean: float | None
    sd: float | None
    n: int  # in-control runs behind the numbers
    provisional: bool

    def line(self, k: int) -> float | None:
        return None if self.mean is None or self.sd is None else self.mean + k * self.sd


@dataclass
class Point:
    """One run's value on a Levey-Jennings chart."""

    run_id: int | None  # None: this run (not recorded yet)
    started: str
    value: float | None
    in_control: bool
    rules: list[str] = field(default_factory=list)  # control rules that fired on it


@dataclass
class Control:
    limits: dict[tuple[str, str], ControlLimit]
    flags: dict[str, list[Flag]]  # by slot: today's control flags
    points: dict[tuple[str, str], list[Point]]  # (slot, metric) -> chart points, today last
    min_runs: int


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def limits_of(values: list[float], metric: str, settings: HistorySettings) -> ControlLimit:
    """The limits from a slot's in-control values, oldest first."""
    used = [v for v in values if _finite(v)][: settings.min_runs]
    floor = settings.min_sd.get(metric, 0.0)
    if len(used) < 2:
        return ControlLimit(used[0] if used else None, None, len(used), True)
    sd = max(float(np.std(used, ddof=1)), floor)
    return ControlLimit(float(np.mean(used)), sd, len(used), len(used) < settings.min_runs)


def fired_rules(reasons: str, metric: str) -> list[str]:
    """The control rules named for ``metric`` in a stored reasons text."""
    # Whole names only: "ssim 1-3s" must not match inside "ms_ssim 1-3s".
    return [
        r
        for r in (*FAIL_RULES, "1-2s", "EWMA")
        if re.search(rf"(?<![\w]){re.escape(metric)} {re.escape(r)}:", reasons or "")
    ]


def _side(z: float) -> int:
    return 1 if z > 0 else -1 if z < 0 else 0


def bad_side(metric: str) -> int:
    """The sign of z that means "less like the baseline": down for similarities."""
    return -1 if METRICS[metric].higher_is_better else 1


def rules_on(
    z: list[float], metric: str, limit: ControlLimit, values: list[float], settings
) -> list[Flag]:
    """Flags of the across-run rules on one sequence of z-scores (today last)."""
    on = set(settings.rules)
    flags: list[Flag] = []
    x, zt = values[-1], z[-1]
    if not settings.both_sides and _side(zt) != bad_side(metric):
        return flags  # more like the baseline than usual: not a finding (see both_sides)
    sign = "<" if zt < 0 else ">"
    where = "mean-" if zt < 0 else "mean+"

    def flag(rule: str, text: str, status: Status = Status.FAIL) -> None:
        flags.append(Flag(metric, Rule.CONTROL, status, f"{metric} {rule}: {text}"))

    if "1-3s" in on and abs(zt) > 3:
        flag("1-3s", f"{fmt(metric, x)} {sign} {where}3SD {fmt(metric, limit.line(3 * _side(zt)))}")
    if (
        "2-2s" in on
        and len(z) >= 2
        and abs(zt) > 2
        and abs(z[-2]) > 2
        and _side(z[-2]) == _side(zt)
    ):
        flag(
            "2-2s",
            f"{fmt(metric, values[-2])}, {fmt(metric, x)} {sign} {where}2SD "
            f"{fmt(metric, limit.line(2 * _side(zt)))}",
        )
    if "4-1s" in on and len(z) >= 4 and all(abs(v) > 1 and _side(v) == _side(zt) for v in z[-4:]):
        flag(
            "4-1s",
            f"{', '.join(fmt(metric, v) for v in values[-4:])} {sign} {where}1SD "
            f"{fmt(metric, limit.line(_side(zt)))}",
        )
    if "10x" in on and len(z) >= 10 and zt != 0 and all(_side(v) == _side(zt) for v in z[-10:]):
        below = "below" if zt < 0 else "above"
        flag("10x", f"10 runs in a row {below} the mean {fmt(metric, limit.mean)}")
    if "1-2s" in on and abs(zt) > 2 and not flags:
        flag(
            "1-2s",
            f"{fmt(metric, x)} {sign} {where}2SD {fmt(metric, limit.line(2 * _side(zt)))}",
            Status.WARN,
        )
    if "EWMA" in on and not flags:  # a drift rule: nothing to add to a point already flagged
        lam = settings.ewma_lambda
        e = 0.0
        for v in z:
            e = lam * v + (1 - lam) * e
        sd_e = math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * len(z))))
        if abs(e) > settings.ewma_limit * sd_e and _side(e) == _side(zt):
            side = "below" if e < 0 else "above"
            flag(
                "EWMA",
                f"drift {abs(e):.2f} SD {side} the mean {fmt(metric, limit.mean)} "
                f"(limit {settings.ewma_limit * sd_e:.2f} SD, lambda {lam:g})",
                Status(settings.drift_status),
            )
    return flags


def evaluate(
    period: list[dict[str, Any]],
    today: dict[str, dict[str, float | None]],
    settings: HistorySettings,
    started: str,
) -> Control:
    """Limits, today's flags and chart points for one run of a series.

    ``period``: rows of ``History.period`` (run_id, started, slot, metric,
    value, status, reasons, in_control), oldest first. ``today``: slot ->
    metric -> value for this run's compared rows.
    """
    seq: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in period:
        seq[(row["slot"], row["metric"])].append(row)
    metrics = tuple(dict.fromkeys((*settings.metrics, *settings.chart_metrics)))

    limits: dict[tuple[str, str], ControlLimit] = {}
    flags: dict[str, list[Flag]] = defaultdict(list)
    zs: dict[str, dict[str, float]] = defaultdict(dict)  # metric -> slot -> today's z
    for slot, values in today.items():
        for metric in metrics:
            past = seq.get((slot, metric), [])
            kept = [r["value"] for r in past if r["in_control"] and _finite(r["value"])]
            limit = limits_of(kept, metric, settings)
            limits[(slot, metric)] = limit
            x = values.get(metric)
            if metric not in settings.metrics or limit.provisional or not _finite(x):
                continue
            series = [*kept, float(x)]
            z = [(v - limit.mean) / limit.sd for v in series]
            zs[metric][slot] = z[-1]
            flags[slot] += rules_on(z, metric, limit, series, settings)

    if "R-4s" in settings.rules:
        for metric, by_slot in zs.items():
            high = [s for s, z in by_slot.items() if z > 2]
            low = [s for s, z in by_slot.items() if z < -2]
            if high and low:
                for slot in (*high, *low):
                    other = low[0] if slot in high else high[0]
                    span = by_slot[slot] - by_slot[other]
                    text = (
                        f"{metric} R-4s: z {by_slot[slot]:+.1f} here and {by_slot[other]:+.1f} "
                        f"in {other} (range {abs(span):.1f} SD > 4)"
                    )
                    flags[slot].append(Flag(metric, Rule.CONTROL, Status.FAIL, text))

    points: dict[tuple[str, str], list[Point]] = {}
    for slot, values in today.items():
        for metric in settings.chart_metrics:
            past = [
                Point(
                    r["run_id"],
                    r["started"],
                    r["value"] if _finite(r["value"]) else None,
                    bool(r["in_control"]),
                    fired_rules(r["reasons"], metric),
                )
                for r in seq.get((slot, metric), [])
            ][-(settings.chart_runs - 1) :]
            mine = fired_rules("; ".join(f.text for f in flags[slot]), metric)
            x = values.get(metric)
            today_point = Point(None, started, float(x) if _finite(x) else None, True, mine)
            points[(slot, metric)] = [*past, today_point]
    return Control(limits, dict(flags), points, settings.min_runs)
