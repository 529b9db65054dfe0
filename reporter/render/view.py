"""The words and colours every output shares, each defined once.

Where it sits: between the run's record (``record.py``) and the renderers. The
page, the e-mail, the workbook and the printed summary all take their title,
their status colours and order, their limit texts and the sentence about the
series' control limits from here; a value is formatted by its metric's declared
precision (``catalog.Metric.format``). Templates only loop and branch.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from .. import clock
from ..catalog import METRICS
from ..config import Limit
from ..record import RunRecord, SeriesFacts, SignalFacts
from ..table import Status

__all__ = [
    "STATUS_COLOURS",
    "control_line",
    "control_sentence",
    "excel_format",
    "gap_text",
    "headline",
    "shown_metrics",
    "signal_text",
    "limit_text",
    "link",
    "most_severe_first",
    "subject",
    "title",
    "when",
]

STATUS_COLOURS = {  # white text on these: badges, banners, the workbook's status cells
    Status.PASS: "#1b7f3b",
    Status.WARN: "#b26a00",
    Status.FAIL: "#c62828",
    Status.ERROR: "#5b2a86",
}


def most_severe_first() -> list[Status]:
    """The statuses as every list of images is ordered: ERROR, FAIL, WARN, PASS."""
    return sorted(Status, key=lambda s: -s.severity)


def shown_metrics(record: RunRecord) -> list[str]:
    """The metrics the reports show as columns: all but the embedding when it is off (the
    CSV and JSON keep every column, empty where a metric was not computed)."""
    return [name for name in METRICS if name != "embedding" or record.settings.embedding]


def headline(record: RunRecord) -> str:
    """The verdict in words: ``QC FAIL: 2 of 27 images flagged``."""
    return f"QC {record.verdict.value}: {record.flagged} of {record.total} images flagged"


def when(record: RunRecord, *, seconds: bool = False) -> str:
    """When the run started, as people read it: ``2026-11-23 14:05 +01:00`` (clock.py)."""
    return clock.shown(record.started, record.settings.timezone, seconds=seconds)


def title(record: RunRecord) -> str:
    """The run in one line that tells open tabs and files apart: verdict, series, local
    time, then the count: ``QC FAIL · FSC-SSC · 2026-11-23 14:05 +01:00 · 2 of 27 images
    flagged``."""
    parts = [f"QC {record.verdict.value}", record.series, when(record)]
    parts.append(f"{record.flagged} of {record.total} images flagged")
    return " \u00b7 ".join(p for p in parts if p)


def subject(record: RunRecord) -> str:
    """The e-mail's subject: ``[QC FAIL] 2 of 27 images flagged - FSC-SSC - 2026-11-23 14:05
    +01:00`` (plain ASCII separators, which every mail client shows)."""
    parts = [f"[QC {record.verdict.value}] {record.flagged} of {record.total} images flagged"]
    if record.series:
        parts.append(record.series)
    parts.append(when(record))
    return " - ".join(parts)


def link(path: str, folder: Path | None) -> str | None:
    """A link from a report in ``folder`` to the file at ``path``: relative, so that it
    works wherever the report and the images travel together, never an absolute
    ``file:///`` address that is dead on any other machine. None when the file is not
    there (a name shown with escapes, a file moved since) or when the two share no
    folder below the filesystem's root (a mailed copy could never reach it)."""
    if folder is None or not path:
        return None
    try:  # abspath, not resolve: no system call per folder, and a link through a
        # symbolic link stays as the user named it
        target = Path(os.path.abspath(path))
        base = Path(os.path.abspath(folder))
        if not target.is_file():
            return None
        common = Path(os.path.commonpath([target, base]))
    except (OSError, ValueError):  # another drive (Windows), a name the system refuses
        return None
    if common == Path(common.anchor):
        return None
    return quote(Path(os.path.relpath(target, base)).as_posix())


def limit_text(name: str, bound: float | None) -> str:
    """A limit in force as the reports list it: ``< 0.85``, ``> 20``, ``beyond ±0.12``;
    empty when off. A limit is a setting and is shown as configured; a reason, which
    compares a measured value with it, shows both with the metric's digits."""
    if bound is None:
        return ""
    metric = METRICS[name]
    return f"{metric.sign}{bound:g}" if metric.two_sided else f"{metric.sign} {bound:g}"


def limit_texts(limits: dict[str, Limit], name: str) -> tuple[str, str]:
    """The WARN and FAIL texts of a metric's limits."""
    limit = limits.get(name)
    if limit is None:
        return "", ""
    return limit_text(name, limit.warn), limit_text(name, limit.fail)


def control_sentence(control: SeriesFacts, *, short: bool = False) -> str:
    """Where the series' control limits stand: not applied, established or provisional."""
    if control.baseline_mismatch:
        return (
            "not applied (another baseline)"
            if short
            else ("not applied: " + control.baseline_mismatch)
        )
    if control.established:
        return f"established from {control.min_runs} in-control runs; rules " + ", ".join(
            control.rules
        )
    return (
        f"provisional: {control.in_control_runs} of {control.min_runs} in-control runs so far; "
        "the fixed limits decide"
    )


def control_line(control: SeriesFacts) -> str:
    """The printed summary's terse line about the series' control limits."""
    head = f"Series {control.series}, run {control.run_id}: "
    if control.baseline_mismatch:
        return head + "BASELINE DIFFERS from the recorded one; control limits not applied."
    if control.established:
        return head + "control limits established."
    return (
        head + f"control limits provisional ({control.in_control_runs} of {control.min_runs} runs)."
    )


def gap_text(control: SeriesFacts) -> str:
    """``no run for 27.5 h before this one (more than 26 h)``; empty when there was one."""
    if not control.missing:
        return ""
    return (
        f"no run for {control.gap_hours:.1f} h before this one "
        f"(more than {control.missing_after:g} h)"
    )


def signal_text(signal: SignalFacts) -> str:
    """``the baseline is sparse: 5.6 % of its pixels carry signal``."""
    kind = "sparse" if signal.sparse else "dense"
    return f"the baseline is {kind}: {100 * signal.share:.1f} % of its pixels carry signal"


def excel_format(name: str) -> str:
    """The workbook's number format of a metric: the same digits as everywhere else."""
    metric = METRICS[name]
    if metric.integer:
        return "0"
    digits = "0." + "0" * metric.digits if metric.digits else "0"
    if metric.infinite:  # identical images are stored as a huge number, shown as ∞
        return f'[>=1000]"\u221e";{digits}'
    if metric.two_sided:  # signed: which way it went
        return f"+{digits};-{digits};{digits}"
    if metric.significant:  # below 1 in significant digits, as ``Metric.format`` shows it
        return f"[=0]{digits};[<1]0.{'0' * (metric.significant - 1)}E+00;{digits}"
    return digits
