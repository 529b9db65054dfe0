"""Verdicts: fixed limits and the batch-relative outlier rule -> status + the reason that fired.

Where it sits: after ``table.build``. :func:`apply` reads the metric columns,
decides each row's status, and writes every reason that fired (metric, value,
limit) into the ``reasons`` column, most severe first, and the same reasons with
their levels into ``flags`` for the renderers. It never recomputes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from .catalog import METRICS
from .table import FLAGS, LOCAL_CELL, NOTES, REASONS, SEPARATOR, STATUS, Status

__all__ = [
    "apply",
    "Flag",
    "fmt",
    "limit_flags",
    "outlier_flags",
    "ranked",
    "Rule",
]


class Rule(StrEnum):
    """Which kind of rule fired."""

    WARN_LIMIT = "warn limit"  # a fixed limit of the configuration
    FAIL_LIMIT = "fail limit"
    OUTLIER = "outlier"  # far from the run's own median (robust z-score on median and MAD)
    CONTROL = "control rule"  # a Westgard or EWMA rule against the series' control limits
    SERIES = "series"  # the run does not fit its series: another baseline, a new slot


@dataclass(frozen=True)
class Flag:
    """One rule that fired on one image."""

    metric: str
    rule: Rule
    status: Status
    text: str


def fmt(name: str, value: float) -> str:
    """A metric value as the reasons show it (catalog.Metric.format)."""
    return METRICS[name].format(value)


def limit_flags(name: str, value: float, limit) -> list[Flag]:
    """The fixed-limit flag of one value (FAIL wins over WARN), or none."""
    if value is None or pd.isna(value):
        return []
    m = METRICS[name]
    for bound, rule, status in (
        (limit.fail, Rule.FAIL_LIMIT, Status.FAIL),
        (limit.warn, Rule.WARN_LIMIT, Status.WARN),
    ):
        if bound is not None and m.worse(value, bound):
            if m.two_sided:
                shown = m.format(value, signed=True)
                text = f"{name} {shown} beyond {rule.value} \u00b1{fmt(name, bound)}"
            else:
                text = f"{name} {fmt(name, value)} {m.sign} {rule.value} {fmt(name, bound)}"
            return [Flag(name, rule, status, text)]
    return []


def outlier_flags(frame: pd.DataFrame, rule) -> dict[int, list[Flag]]:
    """Flags of the batch-relative rule, by row position.

    Only rows with values take part; the rule is silent when fewer than
    ``rule.min_images`` rows have a value. Only the bad side fires: an image
    that is *more* like the baseline than the rest is not a finding (both sides
    for a signed metric). The robust z-score is taken on each metric's rules
    scale (``Metric.to_rule_scale``: the cube root of a distance), where healthy
    variation is near normal; the spread floor ``min_spread`` is in metric units,
    converted at the median.
    """
    found: dict[int, list[Flag]] = {}
    if not rule.enabled:
        return found
    status = Status(rule.status)
    for name in rule.metrics:
        m = METRICS[name]
        raw = frame[name].to_numpy(dtype=float, na_value=np.nan)
        rows = np.flatnonzero(np.isfinite(raw))
        if len(rows) < rule.min_images:
            continue
        scored = m.robust_z(raw[rows], rule.min_spread.get(name, 0.0))
        if scored is None:
            continue
        for i, z in zip(rows, scored[0], strict=True):
            if m.outlying(z, rule.z):
                # Shown in the metric's own direction: negative = lower than the median.
                shown = -z if m.transformed and m.higher_is_better else z
                text = (
                    f"{name} {fmt(name, raw[i])} {Rule.OUTLIER.value} of this run "
                    f"(median {fmt(name, scored[1])}, robust z {shown:+.1f} beyond {rule.z:g})"
                )
                found.setdefault(int(i), []).append(Flag(name, Rule.OUTLIER, status, text))
    return found


def ranked(flags: list[Flag]) -> list[Flag]:
    """Most severe first (FAIL, WARN, then notes), in their order of finding within a level."""
    return sorted(flags, key=lambda f: -f.status.severity)


def where_local(cell: tuple[int, int, int, int]) -> str:
    """The note that says where a flagged ``psnr_local`` was measured, in the baseline's
    pixels (0, 0 at the top left; both ends included)."""
    x0, y0, x1, y1 = cell
    return f"psnr_local's cell: x {x0}-{x1 - 1}, y {y0}-{y1 - 1} px"


def apply(
    frame: pd.DataFrame,
    limits: Mapping,
    outliers,
    extra: Mapping[int, list[Flag]] | None = None,
) -> pd.DataFrame:
    """A copy of ``frame`` with ``status``, ``reasons`` and ``flags`` decided by every rule.

    ``extra``: flags decided elsewhere (the series' rules), by row position.
    Reasons are ranked by severity, the FAIL-level ones first.
    """
    out = frame.copy()
    batch = outlier_flags(out, outliers)
    statuses, reasons, found = [], [], []
    notes = list(out[NOTES]) if NOTES in out else None
    for i, row in enumerate(out.itertuples(index=False)):
        current = Status(getattr(row, STATUS))
        if current is Status.ERROR:
            statuses.append(current.value)
            reasons.append("")
            found.append(())
            continue
        flags = [
            f
            for name, limit in limits.items()
            for f in limit_flags(name, getattr(row, name), limit)
        ]
        # A metric past its fixed limit is already explained; being an outlier as well adds nothing.
        limited = {f.metric for f in flags}
        flags += [f for f in batch.get(i, []) if f.metric not in limited]
        flags = ranked(flags + list((extra or {}).get(i, [])))
        worst = max((f.status for f in flags), key=lambda s: s.severity, default=Status.PASS)
        statuses.append(worst.value)
        reasons.append(SEPARATOR.join(f.text for f in flags))
        found.append(tuple((f.status.value, f.text) for f in flags))
        cell = getattr(row, LOCAL_CELL, None)
        if notes is not None and cell and any(f.metric == "psnr_local" for f in flags):
            notes[i] = SEPARATOR.join(filter(None, (notes[i], where_local(cell))))
    out[STATUS] = pd.Categorical(statuses, dtype=out[STATUS].dtype)
    if notes is not None:
        out[NOTES] = pd.Series(notes, index=out.index, dtype="str")
    out[REASONS] = pd.Series(reasons, index=out.index, dtype="str")
    out[FLAGS] = pd.Series(found, index=out.index, dtype="object")
    return out
