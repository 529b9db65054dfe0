"""Verdicts: fixed limits and the batch-relative outlier rule -> status + the reason that fired.

Where it sits: after ``table.build``. :func:`apply` reads the metric columns,
decides each row's status, and writes every reason that fired (metric, value,
limit) into the ``reasons`` column. It never recomputes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from .metrics import METRICS
from .table import REASONS, SEPARATOR, SHIFT_X, SHIFT_Y, STATUS, Status


class Rule(StrEnum):
    """Which kind of rule fired."""

    WARN_LIMIT = "warn limit"
    """A fixed WARN limit of the configuration."""
    FAIL_LIMIT = "fail limit"
    """A fixed FAIL limit of the configuration."""
    OUTLIER = "outlier"
    """Far from the run's own median (median and MAD across the run's images)."""
    SHIFT = "shift limit"
    """The image moved against the baseline by more than ``max_shift`` px."""
    CONTROL = "control rule"
    """A Westgard or EWMA rule against the series' control limits (see control.py)."""


@dataclass(frozen=True)
class Flag:
    """One rule that fired on one image."""

    metric: str
    rule: Rule
    status: Status
    text: str


def fmt(name: str, value: float) -> str:
    """A metric value as the reasons show it."""
    if METRICS[name].integer:
        return str(int(value))
    if np.isinf(value):
        return "inf"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:.1f}"


def limit_flags(name: str, value: float, limit) -> list[Flag]:
    """The fixed-limit flag of one value (FAIL wins over WARN), or none."""
    if value is None or pd.isna(value):
        return []
    higher = METRICS[name].higher_is_better
    sign = "<" if higher else ">"
    for bound, rule, status in (
        (limit.fail, Rule.FAIL_LIMIT, Status.FAIL),
        (limit.warn, Rule.WARN_LIMIT, Status.WARN),
    ):
        if bound is not None and (value < bound if higher else value > bound):
            text = f"{name} {fmt(name, value)} {sign} {rule.value} {fmt(name, bound)}"
            return [Flag(name, rule, status, text)]
    return []


def outlier_flags(frame: pd.DataFrame, rule) -> dict[int, list[Flag]]:
    """Flags of the batch-relative rule, by row position.

    Only rows with values take part; the rule is silent when fewer than
    ``rule.min_images`` rows have a value. Only the bad side fires: an image
    that is *more* like the baseline than the rest is not a finding.
    """
    found: dict[int, list[Flag]] = {}
    if not rule.enabled:
        return found
    status = Status(rule.status)
    for name in rule.metrics:
        values = frame[name].to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(values)
        if ok.sum() < rule.min_images:
            continue
        median = float(np.median(values[ok]))
        spread = 1.4826 * float(np.median(np.abs(values[ok] - median)))
        spread = max(spread, rule.min_spread.get(name, 0.0))
        if spread == 0:
            continue
        higher = METRICS[name].higher_is_better
        for i in np.flatnonzero(ok):
            z = (values[i] - median) / spread
            if (higher and z < -rule.z) or (not higher and z > rule.z):
                text = (
                    f"{name} {fmt(name, values[i])} {Rule.OUTLIER.value} of this run "
                    f"(median {fmt(name, median)}, robust z {z:+.1f} beyond {rule.z:g})"
                )
                found.setdefault(int(i), []).append(Flag(name, Rule.OUTLIER, status, text))
    return found


def px(value: float) -> str:
    """A signed shift with one decimal, never "-0.0"."""
    return f"{round(value, 1) + 0.0:+.1f}"


def shift_flags(dx: float, dy: float, comparison) -> list[Flag]:
    """The shift flag of one image: its measured move is larger than ``max_shift`` px."""
    if comparison is None or comparison.max_shift is None or pd.isna(dx) or pd.isna(dy):
        return []
    size = float(np.hypot(dx, dy))
    if size <= comparison.max_shift:
        return []
    action = "compensated" if comparison.align else "not compensated, see --align"
    text = (
        f"shift {size:.1f} px (x {px(dx)}, y {px(dy)}) > limit {comparison.max_shift:g} px: "
        f"the image moved against the baseline ({action})"
    )
    return [Flag("shift", Rule.SHIFT, Status(comparison.shift_status), text)]


def apply(
    frame: pd.DataFrame,
    limits: Mapping,
    outliers,
    extra: Mapping[int, list[Flag]] | None = None,
    comparison=None,
) -> pd.DataFrame:
    """A copy of ``frame`` with ``status`` and ``reasons`` decided by every rule.

    ``extra``: flags decided elsewhere (the series' control rules), by row position.
    """
    out = frame.copy()
    batch = outlier_flags(out, outliers)
    statuses, reasons = [], []
    for i, row in enumerate(out.itertuples(index=False)):
        current = Status(getattr(row, STATUS))
        if current is Status.ERROR:
            statuses.append(current.value)
            reasons.append("")
            continue
        flags = [
            f
            for name, limit in limits.items()
            for f in limit_flags(name, getattr(row, name), limit)
        ]
        # A metric past its fixed limit is already explained; being an outlier as well adds nothing.
        limited = {f.metric for f in flags}
        flags += [f for f in batch.get(i, []) if f.metric not in limited]
        flags += shift_flags(getattr(row, SHIFT_X), getattr(row, SHIFT_Y), comparison)
        flags += (extra or {}).get(i, [])
        worst = max((f.status for f in flags), key=lambda s: s.severity, default=Status.PASS)
        statuses.append(worst.value)
        reasons.append(SEPARATOR.join(f.text for f in flags))
    out[STATUS] = pd.Categorical(statuses, dtype=out[STATUS].dtype)
    out[REASONS] = pd.Series(reasons, index=out.index, dtype="str")
    return out


def exit_code(frame: pd.DataFrame) -> int:
    """0 when every image is PASS or WARN; 1 when any is FAIL or ERROR."""
    bad = frame[STATUS].isin([Status.FAIL.value, Status.ERROR.value])
    return 1 if bool(bad.any()) else 0
