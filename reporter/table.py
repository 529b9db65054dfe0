"""The results table: column names, dtypes, and its construction from per-image results.

Where it sits: between computing and rendering. ``pipeline`` turns each
:class:`ImageResult` into a row with :func:`build`; ``flags.apply`` fills
``status`` and ``reasons``; every renderer reads columns by the constants here
and never recomputes a metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import numpy as np
import pandas as pd

from .catalog import METRICS
from .compare import ImageResult
from .names import shown, stored

__all__ = [
    "build",
    "COLUMNS",
    "counts",
    "DIFF_MAP",
    "DTYPES",
    "ERROR",
    "FILE",
    "flagged",
    "FLAGS",
    "LOCAL_CELL",
    "FOR_REPORTS",
    "HEIGHT",
    "ICON",
    "LOOK",
    "LOOK_DIFF",
    "METRIC_COLUMNS",
    "NOTES",
    "PATH",
    "PICTURES",
    "REASONS",
    "SEPARATOR",
    "SHIFT_X",
    "SHIFT_Y",
    "STATUS",
    "Status",
    "STATUS_DTYPE",
    "THUMBNAIL",
    "verdict",
    "WIDTH",
]


class Status(StrEnum):
    """The verdict on one image, in order of severity."""

    PASS = "PASS"  # no rule fired
    WARN = "WARN"  # a warn limit, the outlier rule, 1-2s, a series' new slot or baseline
    FAIL = "FAIL"  # a fail limit, a control rule but 1-2s (the outlier rule, if so set)
    ERROR = "ERROR"  # the file could not be compared; the error column says why

    @property
    def severity(self) -> int:
        return list(Status).index(self)


FILE = "file"  # path relative to the input it came from, POSIX separators
STATUS = "status"
WIDTH = "width"  # of the file as read (before any resize to the baseline's size)
HEIGHT = "height"
NOTES = "notes"  # what was done to compare it (resized, alpha, depth, ...)
REASONS = "reasons"  # which rule fired, with the value and the limit
ERROR = "error"  # why the file could not be compared
PATH = "path"  # the file as found on disk
SHIFT_X = "shift_x"  # measured translation against the baseline, px (right positive)
SHIFT_Y = "shift_y"  # (down positive)
THUMBNAIL = "thumbnail"  # JPEG bytes, for the reports only (not in CSV or JSON)
DIFF_MAP = "diff_map"  # JPEG bytes of 1 - SSIM at thumbnail scale, likewise
ICON = "icon"  # JPEG bytes, 48 px: the compact row of an image that passed
LOOK = "look"  # JPEG bytes, 512 px: the closer look at a flagged image (pipeline.closer_looks)
LOOK_DIFF = "look_diff"  # its diff map at the same size
FLAGS = "flags"  # ((status, reason), ...) most severe first: the reasons with their levels
LOCAL_CELL = "local_cell"  # (x0, y0, x1, y1): psnr_local's cell, named when psnr_local fires

METRIC_COLUMNS = tuple(METRICS)
COLUMNS = (
    FILE,
    STATUS,
    *METRIC_COLUMNS,
    SHIFT_X,
    SHIFT_Y,
    WIDTH,
    HEIGHT,
    NOTES,
    REASONS,
    ERROR,
    PATH,
)
"""The data columns: CSV and JSON hold exactly these."""
PICTURES = (THUMBNAIL, DIFF_MAP, ICON, LOOK, LOOK_DIFF)
"""Encoded pictures for the reports, after the data columns."""
FOR_REPORTS = (*PICTURES, FLAGS, LOCAL_CELL)
"""Columns for the renderers only (not in CSV or JSON)."""

STATUS_DTYPE = pd.CategoricalDtype([s.value for s in Status], ordered=True)
DTYPES = {
    FILE: "str",
    STATUS: STATUS_DTYPE,
    **{name: ("Int64" if m.integer else "float64") for name, m in METRICS.items()},
    SHIFT_X: "float64",
    SHIFT_Y: "float64",
    WIDTH: "Int64",
    HEIGHT: "Int64",
    NOTES: "str",
    REASONS: "str",
    ERROR: "str",
    PATH: "str",
    THUMBNAIL: "object",
    DIFF_MAP: "object",
    ICON: "object",
    LOOK: "object",
    LOOK_DIFF: "object",
    FLAGS: "object",
    LOCAL_CELL: "object",
}

SEPARATOR = "; "  # between several notes or reasons in one cell


def build(results: Iterable[ImageResult]) -> pd.DataFrame:
    """One row per result, in the given order, with explicit dtypes.

    ``status`` is ERROR for results with an error and PASS otherwise until
    ``flags.apply`` decides; ``reasons`` starts empty.
    """
    records = []
    for r in results:
        values = r.metrics or {}
        records.append(
            {
                FILE: shown(r.file),
                STATUS: (Status.ERROR if r.error else Status.PASS).value,
                **{name: values.get(name, np.nan) for name in METRIC_COLUMNS},
                SHIFT_X: np.nan if r.shift_x is None else round(r.shift_x, 3),
                SHIFT_Y: np.nan if r.shift_y is None else round(r.shift_y, 3),
                WIDTH: r.width,
                HEIGHT: r.height,
                NOTES: SEPARATOR.join(r.notes),
                REASONS: "",
                ERROR: shown(r.error or ""),
                PATH: stored(r.path),
                THUMBNAIL: r.thumbnail,
                DIFF_MAP: r.diff_map,
                ICON: r.icon,
                LOOK: None,
                LOOK_DIFF: None,
                FLAGS: (),
                LOCAL_CELL: r.local_cell,
            }
        )
    frame = pd.DataFrame.from_records(records, columns=[*COLUMNS, *FOR_REPORTS])
    # Int64 columns go through float first: None and NaN become <NA> either way.
    for name, dtype in DTYPES.items():
        if dtype == "Int64":
            frame[name] = pd.array(
                [
                    None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
                    for v in frame[name]
                ],
                dtype="Int64",
            )
    return frame.astype(DTYPES)


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per status, every status present (zero included), in severity order."""
    found = frame[STATUS].value_counts()
    return {s.value: int(found.get(s.value, 0)) for s in Status}


def verdict(counts: dict[str, int]) -> str:
    """The run's verdict: the worst status any image has (PASS for an all-clear run)."""
    worst = [s for s in Status if counts.get(s.value)]
    return max(worst, key=lambda s: s.severity).value if worst else Status.PASS.value


def flagged(counts: dict[str, int]) -> int:
    """Images that are not PASS."""
    return sum(n for status, n in counts.items() if status != Status.PASS.value)
