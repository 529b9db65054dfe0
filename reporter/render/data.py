"""CSV and JSON of the results table.

Where it sits: last step of a run, beside the reports. Both files hold the same
rows. CSV writes PSNR of identical images as ``inf`` and missing values as
empty cells; JSON, which has no infinity, writes ``"inf"`` as a string and
missing values as ``null``.

The CSV is opened by people in spreadsheets, so text from outside (file names,
paths, notes, reasons, errors) follows OWASP's rule for CSV injection: a cell
starting with ``= + - @``, a tab or a carriage return gets a leading ``'`` and is
read as text. Lines end in CRLF (RFC 4180), so a field holding a CR or an LF is
quoted and a reader gets one row per image. The JSON keeps the exact names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .. import names
from ..atomic import write_atomic, write_text
from ..record import RunRecord
from ..table import COLUMNS, ERROR, FILE, NOTES, PATH, REASONS

__all__ = [
    "rows",
    "TEXT_COLUMNS",
    "write_csv",
    "write_json",
]

TEXT_COLUMNS = (FILE, NOTES, REASONS, ERROR, PATH)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    data = frame[list(COLUMNS)].copy()
    for name in TEXT_COLUMNS:
        data[name] = data[name].map(lambda v: names.defused(v) if isinstance(v, str) else v)
    return write_atomic(
        path,
        lambda tmp: data.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\r\n"),
    )


def _plain(value: Any) -> Any:
    """A JSON-safe value: inf as a string, NaN and <NA> as null, numpy scalars as Python."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    data = frame[list(COLUMNS)]
    return [
        {col: _plain(val) for col, val in zip(data.columns, record, strict=True)}
        for record in data.itertuples(index=False, name=None)
    ]


def write_json(frame: pd.DataFrame, record: RunRecord, path: Path) -> Path:
    document = {**record.to_json(), "rows": rows(frame)}
    return write_text(
        path, json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )
