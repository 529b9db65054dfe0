"""Control limits and Westgard rules: is today out of the series' day-to-day variation?

Where it sits: between comparing and flagging, for runs that have a series.
``pipeline.run`` reads the current control period's values from ``history``;
:func:`evaluate` turns them and today's metrics into limits per (slot, metric),
flags for today's rows (``flags.apply`` merges them with the fixed limits and
the outlier rule) and the points of the Levey-Jennings charts.

Definitions (Westgard, Barry, Hunt & Groth 1981; EWMA after Roberts 1959):

- **Limits**: the mean and the sample SD (widened for the number of runs behind
  it, see :func:`prediction_factor`, and floored at ``min_sd``) of a slot's
  metric over the first ``min_runs`` in-control runs of the period, on the
  metric's rules scale (the cube root of its distance from an identical image's
  value for a similarity or a distance, whose healthy values are skewed; see
  ``metrics.Metric``). Until there are that many the limits are *provisional*:
  shown, but no rule fires and the fixed limits alone decide. Once established
  they stay fixed for the period, so a slow drift cannot drag them along.
- **z** = (value - mean) / SD on that scale, counted towards "less like the
  baseline" (for a signed metric: upwards, and both sides are bad). The rules
  fire on the bad side only, as the outlier rule does; ``both_sides`` makes them
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

from ..catalog import METRICS
from ..config import HistorySettings
from ..flags import Flag, Rule, fmt
from ..table import Status

__all__ = [
    "Control",
    "ControlLimit",
    "evaluate",
    "FAIL_RULES",
    "fired_rules",
    "limits_of",
    "Point",
    "prediction_factor",
    "rules_on",
]

FAIL_RULES = ("1-3s", "2-2s", "R-4s", "4-1s", "10x")


@dataclass(frozen=True)
class ControlLimit:
    """A slot's metric: mean and SD on the metric's rules scale, and whether enough runs
    stand behind them.

    The rules scale (``Metric.to_rule_scale``) is the cube root of the distance from
    the best value for a similarity or a distance, where healthy days are near
    normal; the metric itself for a signed metric and PSNR. ``line(k)`` gives the
    metric value of mean + k SD on that scale, k counted towards "less like the
    baseline"; ``centre`` the value at the mean.
    """

    metric: str
    mean: float | None
    sd: float | None
    n: int  # in-control runs behind the numbers
    provisional: bool

    def z(self, value: float) -> float:
        """Today's value in SDs from the mean, positive = less like the baseline
        (for a signed metric: positive = above)."""
        m = METRICS[self.metric]
        gap = m.to_rule_scale(value) - self.mean
        # Identical runs and no floor: the same value is 0 SD away, any other far out.
        z = gap / self.sd if self.sd else 0.0 if gap == 0 else math.copysign(math.inf, gap)
        return z if m.transformed or m.bad_side == 0 else z * m.bad_side

    def line(self, k: float) -> float | None:
        """The metric value k SDs from the mean, towards "less like the baseline"."""
        if self.mean is None or self.sd is None:
            return None
        m = METRICS[self.metric]
        step = k if m.transformed or m.bad_side == 0 else k * m.bad_side
        value = m.from_rule_scale(self.mean + step * self.sd)
        # A line beyond an identical image's value means "never"; it is drawn there.
        if m.best is not None and m.transformed:
            value = min(value, m.best) if m.higher_is_better else max(value, m.best)
        return value

    @property
    def centre(self) -> float | None:
        """The metric value at the mean (the centre line of a chart)."""
        return None if self.mean is None else METRICS[self.metric].from_rule_scale(self.mean)

    def band(self, k: float) -> tuple[float, float]:
        """The lower and upper metric values of the k SD lines (a chart's -kSD and +kSD)."""
        a, b = self.line(k), self.line(-k)
        return min(a, b), max(a, b)

    @property
    def ready(self) -> bool:
        return self.mean is not None and self.sd is not None


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


def prediction_factor(n: int, z: float = 3.0) -> float:
    """How much wider than the sample SD of n runs the limits are drawn, so that a healthy
    run crosses the z SD line as often as it would cross the line of a known SD.

    A new value against the mean and SD of n earlier ones follows Student's t with
    n - 1 degrees of freedom, scaled by sqrt(1 + 1/n) (a prediction interval); the
    factor is t_{n-1}(Phi(z)) sqrt(1 + 1/n) / z: 1.18 for 20 runs, 1.03 for 100.
    Without it, limits from 20 runs are crossed at 3 SD about three times as often as
    the 0.135 % the rules assume (Quesenberry 1993). t's quantile comes from its
    Cornish-Fisher expansion in z (four terms: within 2e-4 of the exact value from
    10 runs on, 1e-5 from 20).
    """
    nu = n - 1
    t = (
        z
        + (z**3 + z) / (4 * nu)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * nu**4)
    )
    return t * math.sqrt(1 + 1 / n) / z


def limits_of(values: list[float], metric: str, settings: HistorySettings) -> ControlLimit:
    """The limits from a slot's in-control values, oldest first.

    The SD is the sample SD widened by :func:`prediction_factor`. The floor
    ``min_sd`` is in metric units; it is converted to the rules scale at the
    period's median (``Metric.rule_floor``).
    """
    m = METRICS[metric]
    raw = [v for v in values if _finite(v)][: settings.min_runs]
    used = [m.to_rule_scale(v) for v in raw]
    if len(used) < 2:
        return ControlLimit(metric, used[0] if used else None, None, len(used), True)
    floor = m.rule_floor(settings.min_sd.get(metric, 0.0), float(np.median(raw)))
    sd = max(float(np.std(used, ddof=1)) * prediction_factor(len(used)), floor)
    return ControlLimit(metric, float(np.mean(used)), sd, len(used), len(used) < settings.min_runs)


def fired_rules(reasons: str, metric: str) -> list[str]:
    """The control rules named for ``metric`` in a stored reasons text."""
    # Whole names only: "ssim 1-3s" must not match inside "ms_ssim 1-3s".
    return [
        r
        for r in (*FAIL_RULES, "1-2s", "EWMA")
        if re.search(rf"(?<![\w]){re.escape(metric)} {re.escape(r)}:", reasons or "")
    ]


def _differing(value: float, limit: float) -> tuple[str, str]:
    """Both numbers with as many decimals (2 to 4) as it takes for them to differ."""
    for digits in (2, 3, 4):
        a, b = f"{value:.{digits}f}", f"{limit:.{digits}f}"
        if a != b:
            break
    return a, b


def _side(z: float) -> int:
    return 1 if z > 0 else -1 if z < 0 else 0


def rules_on(
    z: list[float], metric: str, limit: ControlLimit, values: list[float], settings
) -> list[Flag]:
    """Flags of the across-run rules on one sequence of z-scores (today last).

    z is counted towards "less like the baseline" (``ControlLimit.z``); for a signed
    metric, upwards, and both sides are bad.
    """
    m = METRICS[metric]
    on = set(settings.rules)
    flags: list[Flag] = []
    x, zt = values[-1], z[-1]
    if not settings.both_sides and m.bad_side != 0 and zt < 0:
        return flags  # more like the baseline than usual: not a finding (see both_sides)
    side = _side(zt)
    # In the metric's own units: which way the value went, and the line it crossed.
    went_up = zt > 0 if m.two_sided else (zt > 0) == (not m.higher_is_better)
    sign = ">" if went_up else "<"

    def line(k: int) -> str:
        return fmt(metric, limit.line(k * side))

    def flag(rule: str, text: str, status: Status = Status.FAIL) -> None:
        flags.append(Flag(metric, Rule.CONTROL, status, f"{metric} {rule}: {text}"))

    if "1-3s" in on and abs(zt) > 3:
        flag("1-3s", f"{fmt(metric, x)} {sign} 3SD line {line(3)}")
    if "2-2s" in on and len(z) >= 2 and abs(zt) > 2 and abs(z[-2]) > 2 and _side(z[-2]) == side:
        flag("2-2s", f"{fmt(metric, values[-2])}, {fmt(metric, x)} {sign} 2SD line {line(2)}")
    if "4-1s" in on and len(z) >= 4 and all(abs(v) > 1 and _side(v) == side for v in z[-4:]):
        shown = ", ".join(fmt(metric, v) for v in values[-4:])
        flag("4-1s", f"{shown} {sign} 1SD line {line(1)}")
    if "10x" in on and len(z) >= 10 and zt != 0 and all(_side(v) == side for v in z[-10:]):
        where = "above" if went_up else "below"
        flag("10x", f"10 runs in a row {where} the centre {fmt(metric, limit.centre)}")
    if "1-2s" in on and abs(zt) > 2 and not flags:
        flag("1-2s", f"{fmt(metric, x)} {sign} 2SD line {line(2)}", Status.WARN)
    if "EWMA" in on and not flags:  # a drift rule: nothing to add to a point already flagged
        lam = settings.ewma_lambda
        e = 0.0
        for v in z:
            e = lam * v + (1 - lam) * e
        sd_e = math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * len(z))))
        if abs(e) > settings.ewma_limit * sd_e and _side(e) == side:
            drift, bound = _differing(abs(e), settings.ewma_limit * sd_e)
            where = "above" if went_up else "below"
            flag(
                "EWMA",
                f"drift {drift} SD {where} the centre {fmt(metric, limit.centre)} "
                f"(limit {bound} SD, lambda {lam:g})",
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
            z = [limit.z(v) for v in series]
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

    # Charted: the chart metrics, and any metric a control rule flagged today (its chart
    # shows since when it moved).
    points: dict[tuple[str, str], list[Point]] = {}
    for slot, values in today.items():
        for metric in dict.fromkeys((*settings.chart_metrics, *(f.metric for f in flags[slot]))):
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
