"""report.xlsx: the workbook a lab manager sorts, filters, pastes into QC records and prints.

Where it sits: after ``flags.apply``, beside ``render.html``. :func:`write_xlsx`
reads the DataFrame by the column constants of ``table`` and the run's metadata,
and writes a fresh workbook (never re-opened: openpyxl loses pictures and charts
on a round trip) through ``atomic.write_atomic``.

Sheets:

- **Summary**: verdict, counts, run metadata, the baseline's thumbnail and
  fingerprint, the limits in force, the metric definitions, the configuration.
- **Results**: one row per image in the table's order; a flagged image's
  thumbnail and diff map pasted into their cells with two-cell anchors (they move
  with their row when the table is sorted or filtered); metrics as numbers; status colours and
  metric cells past a limit coloured by conditional formatting, so an edited
  value re-colours; the file name links to the file.
- **Errors**: ERROR rows and skipped files with their messages.
- **Trend**: a native line chart of ssim, ssim_coarse and ssim_64 across the
  run's images, with ssim_64's limits, and the numbers it plots.

Text from outside (file names, paths, notes, messages) is always a string cell
with a quote prefix where it starts like a formula; see :func:`put_text`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from copy import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zipfile import ZIP_DEFLATED, ZipFile

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.cell.rich_text import CellRichText, TextBlock
from openpyxl.cell.text import InlineFont
from openpyxl.chart import LineChart, Reference
from openpyxl.chart.shapes import GraphicalProperties
from openpyxl.comments import Comment
from openpyxl.drawing.image import Image
from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, TwoCellAnchor
from openpyxl.formatting.rule import CellIsRule, FormulaRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.units import pixels_to_EMU, pixels_to_points
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from .. import clock, visuals
from ..atomic import write_atomic
from ..catalog import METRICS
from ..config import SETTINGS, Comparison
from ..names import FORMULA_STARTS, shown
from ..record import RunRecord
from ..series.charts import window as chart_window
from ..table import (
    DIFF_MAP,
    ERROR,
    FILE,
    FLAGS,
    HEIGHT,
    NOTES,
    PATH,
    REASONS,
    SEPARATOR,
    SHIFT_X,
    SHIFT_Y,
    STATUS,
    THUMBNAIL,
    WIDTH,
    Status,
)
from . import view

__all__ = [
    "add_rules",
    "BOLD",
    "CHART_ROWS",
    "clean",
    "control_sheet",
    "DEFAULT_NUMBER_FORMAT",
    "DEFINITION_WIDTH",
    "errors_sheet",
    "FAIL_MARK",
    "HEADER_FILL",
    "HEADER_ROW",
    "LEADING",
    "legend",
    "LIMIT_COLOURS",
    "LINK",
    "lj_axis",
    "LJ_ROWS",
    "MAX_LINK",
    "MAX_ROW_POINTS",
    "MAX_TEXT",
    "MUTED",
    "PAD",
    "picture",
    "picture_box",
    "PICTURE_SIDE",
    "print_setup",
    "PSNR_INF",
    "put_metric",
    "put_reasons",
    "put_text",
    "readable",
    "result_columns",
    "RESULT_COLUMNS",
    "results_sheet",
    "SECTION",
    "solid",
    "Stamps",
    "STATUS_COLOURS",
    "summary_sheet",
    "text_height",
    "TEXT_WIDTHS",
    "TOP",
    "TRAILING",
    "TREND_COLOURS",
    "TREND_METRICS",
    "trend_sheet",
    "width_chars",
    "workbook",
    "WRAP_TOP",
    "write_xlsx",
]

# --- text and numbers ---------------------------------------------------------------------

MAX_TEXT = 32_767  # characters in one cell (Excel's limit; longer text is cut with a mark)
MAX_LINK = 2_079  # characters in a hyperlink Excel will follow

PSNR_INF = 1e307
"""PSNR of identical images: a number larger than any real PSNR, shown as "∞" by its format."""

DEFAULT_NUMBER_FORMAT = "0.000"  # numbers that are not a metric's (a trend's limits)


def clean(text: str) -> str:
    """Text a cell can hold: XML-illegal control characters as U+FFFD, cut at Excel's limit."""
    text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class Stamps:
    """Cell styles made once and stamped on every cell that wears them.

    openpyxl looks each style part up in the workbook's shared lists (hashing it)
    on every assignment: a third of the time of writing a large Results sheet.
    A cell's style is an array of indexes into those lists, so the array made for
    one cell is copied to the others.
    """

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def __call__(self, cell, key: str, **style: Any):
        made = self._made.get(key)
        if made is None:
            for name, setting in style.items():
                setattr(cell, name, setting)
            self._made[key] = copy(cell._style)
        else:
            cell._style = copy(made)
        return cell


def put_text(
    ws: Worksheet,
    row: int,
    col: int,
    value: str | None,
    *,
    stamp: tuple[Stamps, str] | None = None,
    **style: Any,
):
    """Write outside text as a string cell, never as a formula.

    openpyxl stores any string starting with ``=`` as a formula; the data type
    is forced back to string, and text that a user's later edit or a CSV export
    could turn into a formula gets Excel's quote prefix as well. ``stamp``: the
    style is made once under that key (:class:`Stamps`).
    """
    cell = ws.cell(row=row, column=col)
    if stamp is not None:
        stamp[0](cell, stamp[1], **style)
    else:
        for name, setting in style.items():
            setattr(cell, name, setting)
    if value:
        text = clean(str(value))
        cell.value = text
        cell.data_type = "s"
        if text.startswith(FORMULA_STARTS):  # OWASP: text, never a formula
            cell.quotePrefix = True
    return cell


def put_reasons(ws: Worksheet, row: int, col: int, found, stamps: Stamps | None = None) -> None:
    """The reasons of a row, most severe first; FAIL-level ones led by a bold red "FAIL"."""
    if not any(level in (Status.FAIL.value, Status.ERROR.value) for level, _ in found):
        text = SEPARATOR.join(text for _, text in found)
        put_text(ws, row, col, text, alignment=WRAP_TOP, stamp=(stamps, "wrap") if stamps else None)
        return
    parts: list[Any] = []
    for i, (level, text) in enumerate(found):
        if i:
            parts.append(SEPARATOR)
        if level in (Status.FAIL.value, Status.ERROR.value):
            parts.append(TextBlock(FAIL_MARK, "FAIL "))
        parts.append(clean(text))
    cell = ws.cell(row=row, column=col)
    cell.value = CellRichText(parts)  # starts with "FAIL": never a formula
    cell.alignment = WRAP_TOP


def put_metric(
    ws: Worksheet, row: int, col: int, name: str, value: Any, stamps: Stamps | None = None
):
    """A metric as a number with its number format; missing stays empty, inf as PSNR_INF."""
    cell = ws.cell(row=row, column=col)
    if stamps is not None:
        stamps(cell, f"metric {name}", number_format=view.excel_format(name), alignment=TOP)
    else:
        cell.number_format = view.excel_format(name)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return cell
    if METRICS[name].integer:
        cell.value = int(value)
    elif math.isinf(value):
        cell.value = PSNR_INF if value > 0 else -PSNR_INF
    else:
        cell.value = float(value)
    return cell


# --- looks --------------------------------------------------------------------------------

STATUS_COLOURS = {s: c.lstrip("#").upper() for s, c in view.STATUS_COLOURS.items()}
FAIL_MARK = InlineFont(
    b=True, color=STATUS_COLOURS[Status.FAIL]
)  # "FAIL" before a FAIL-level reason
LIMIT_COLOURS = {  # light fills for metric cells past a limit, so the number stays readable
    Status.FAIL: ("FFC7CE", "9C0006"),
    Status.WARN: ("FFEB9C", "9C5700"),
}


def solid(colour: str) -> PatternFill:
    # Both colours set: LibreOffice reads the background colour of a conditional format's fill.
    return PatternFill(fill_type="solid", start_color=colour, end_color=colour, bgColor=colour)


BOLD = Font(bold=True)
HEADER_FILL = solid("E8EBEF")
SECTION = Font(bold=True, size=12)
LINK = Font(color="0563C1", underline="single")
MUTED = Font(color="5F6B7A", italic=True)
WRAP_TOP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")
CENTRE_TOP = Alignment(horizontal="center", vertical="top")

DEFINITION_WIDTH = 90  # characters: the metric definitions on the Summary sheet
PICTURE_SIDE = 120  # px: the 200-px thumbnails shown smaller, so a printed page holds ~6 rows
PAD = 4  # px around a picture inside its cell
MAX_ROW_POINTS = 409  # Excel's tallest row


def text_height(text: str, width: float) -> float:
    """Row height in points for wrapped text in a column ``width`` characters wide.

    Neither Excel nor LibreOffice grows a row for wrapped text written by a
    program when the file is opened, so long text gets its height here.
    """
    lines = sum(max(1, math.ceil(len(part) * 1.05 / width)) for part in text.split("\n"))
    return 15.0 * lines


def width_chars(pixels: float) -> float:
    """Excel's column width (characters of the default font's digit, 7 px) for a pixel width."""
    return round((pixels - 5) / 7 + 0.5, 2)


# --- pictures -----------------------------------------------------------------------------


def picture(jpeg: bytes, row: int, col: int, side: int = PICTURE_SIDE) -> Image:
    """The JPEG as a picture inside cell (row, col), 1-based, that moves and sizes with it.

    Both corners of the two-cell anchor lie in the same cell, so sorting or
    filtering carries the picture with its row, and hiding the row hides it.
    """
    img = _Jpeg(jpeg)
    w, h = visuals.fit(img.width, img.height, side)
    img.width, img.height = w, h
    img.anchor = TwoCellAnchor(
        editAs="twoCell",
        _from=AnchorMarker(
            col=col - 1, colOff=pixels_to_EMU(PAD), row=row - 1, rowOff=pixels_to_EMU(PAD)
        ),
        to=AnchorMarker(
            col=col - 1, colOff=pixels_to_EMU(PAD + w), row=row - 1, rowOff=pixels_to_EMU(PAD + h)
        ),
    )
    return img


class _Jpeg(Image):
    """openpyxl's Image of a JPEG we made: its size read from the JPEG's frame header, not
    by opening it with Pillow twice (once here, once again at save)."""

    def __init__(self, jpeg: bytes) -> None:
        self.ref = jpeg
        self.format = "jpeg"
        self.width, self.height = visuals.jpeg_size(jpeg)

    def _data(self) -> bytes:
        return self.ref


def picture_box(frame: pd.DataFrame, side: int = PICTURE_SIDE) -> tuple[int, int]:
    """The largest displayed picture of the run, in px, to size the columns and rows: the
    flagged rows' (a row that passed shows none; report.html has its icon)."""
    w_max, h_max = 0, 0
    for jpeg in frame.loc[frame[STATUS] != Status.PASS.value, THUMBNAIL]:
        if jpeg:
            w, h = visuals.fit(*visuals.jpeg_size(jpeg), side)
            w_max, h_max = max(w_max, w), max(h_max, h)
    return w_max, h_max


# --- sheets -------------------------------------------------------------------------------

HEADER_ROW = 2  # row 1 of Results is the legend
# Name, status, pictures, reasons and error first, so one screen shows what and why;
# the other columns follow in the CSV's order.
LEADING = (FILE, STATUS, THUMBNAIL, DIFF_MAP, REASONS, ERROR)
TRAILING = (WIDTH, HEIGHT, NOTES, PATH)
RESULT_COLUMNS = (*LEADING, *METRICS, SHIFT_X, SHIFT_Y, *TRAILING)


def result_columns(record: RunRecord) -> tuple[str, ...]:
    """The Results sheet's columns: RESULT_COLUMNS without the metrics a run did not compute
    (view.shown_metrics)."""
    shown = set(view.shown_metrics(record))
    return tuple(c for c in RESULT_COLUMNS if c not in METRICS or c in shown)


TEXT_WIDTHS = {FILE: (12, 40), REASONS: (30, 60), NOTES: (12, 40), ERROR: (12, 40), PATH: (12, 60)}


def _limits(record: RunRecord) -> dict[str, dict[str, float | None]]:
    return {
        name: {"warn": lim.warn, "fail": lim.fail} for name, lim in record.settings.limits.items()
    }


def legend() -> CellRichText:
    def coloured(text: str, colour: str) -> TextBlock:
        return TextBlock(InlineFont(b=True, color=colour), text)

    parts: list[str | TextBlock] = [TextBlock(InlineFont(b=True), "Colours (live rules): status ")]
    for status in Status:
        parts += [coloured(status.value, STATUS_COLOURS[status]), " "]
    parts += [
        "| metric past its ",
        coloured("FAIL", LIMIT_COLOURS[Status.FAIL][1]),
        " or ",
        coloured("WARN", LIMIT_COLOURS[Status.WARN][1]),
        " limit (Summary sheet): edit a value and it re-colours. Outliers of the run are "
        "named under reasons. PSNR \u221e: identical images.",
    ]
    return CellRichText(parts)


def results_sheet(
    ws: Worksheet, frame: pd.DataFrame, record: RunRecord, folder: Path | None = None
) -> None:
    columns = result_columns(record)
    metrics = [c for c in columns if c in METRICS]
    col = {name: i for i, name in enumerate(columns, 1)}
    first, last = HEADER_ROW + 1, HEADER_ROW + len(frame)

    # Legend (row 1): one line of coloured words, in the colours the rules paint.
    ws.cell(row=1, column=1).value = legend()
    for name, c in col.items():
        cell = put_text(
            ws,
            HEADER_ROW,
            c,
            name,
            font=BOLD,
            fill=HEADER_FILL,
            alignment=Alignment(vertical="center"),
        )
        if name in METRICS or name in (WIDTH, HEIGHT, SHIFT_X, SHIFT_Y):  # header over digits
            cell.alignment = Alignment(vertical="center", horizontal="right")
        if name in METRICS:
            m = METRICS[name]
            cell.comment = Comment(
                f"{m.definition} ({m.direction})",
                "reporter",
                width=320,
                height=140,
            )

    # Column widths first (row heights depend on them): pictures to the largest
    # picture, text to its content within bounds.
    box_w, box_h = picture_box(frame)
    widths: dict[str, float] = {STATUS: 9, WIDTH: 9, HEIGHT: 9, SHIFT_X: 9, SHIFT_Y: 9}
    for name in (THUMBNAIL, DIFF_MAP):
        widths[name] = width_chars(max(box_w + 2 * PAD, 80))
    for name, (low, high) in TEXT_WIDTHS.items():
        longest = max([len(str(v)) for v in frame[name] if v] + [len(name)])
        widths[name] = min(max(longest + 2, low), high)
    for name in metrics:
        widths[name] = max(len(name) + 3, 9)
    for name, width in widths.items():
        ws.column_dimensions[get_column_letter(col[name])].width = width

    # Every row at least as tall as the pictures, those that passed too (they have none): a
    # sort in Excel moves the cells and their pictures, not the row heights, and a picture
    # that moves and sizes with its cell would be squeezed into a shorter row.
    picture_points = pixels_to_points(box_h + 2 * PAD) if box_h else 0.0
    images: list[Image] = []
    stamps = Stamps()
    wrap = (stamps, "wrap")
    for r, item in enumerate(frame.to_dict("records"), first):
        target = view.link(item[PATH], folder)  # relative, or none: it survives mailing
        if target and len(target) <= MAX_LINK:
            link = put_text(
                ws, r, col[FILE], item[FILE], alignment=WRAP_TOP, font=LINK, stamp=(stamps, "link")
            )
            link.hyperlink = target
        else:
            put_text(ws, r, col[FILE], item[FILE], alignment=WRAP_TOP, stamp=wrap)
        put_text(
            ws,
            r,
            col[STATUS],
            str(item[STATUS]),
            font=BOLD,
            alignment=Alignment(horizontal="center", vertical="top"),
            stamp=(stamps, "status"),
        )
        if item[STATUS] != Status.PASS.value:  # pictures where there is something to see
            for name in (THUMBNAIL, DIFF_MAP):
                if item[name]:
                    images.append(picture(item[name], r, col[name]))
        for name in metrics:
            put_metric(ws, r, col[name], name, item[name], stamps)
        for name in (WIDTH, HEIGHT):
            if pd.notna(item[name]):
                cell = ws.cell(row=r, column=col[name], value=int(item[name]))
                stamps(cell, "top", alignment=TOP)
        for name in (SHIFT_X, SHIFT_Y):
            if pd.notna(item[name]):
                cell = ws.cell(row=r, column=col[name], value=float(item[name]))
                stamps(cell, "shift", number_format="0.0", alignment=TOP)
        put_reasons(ws, r, col[REASONS], item[FLAGS], stamps)
        for name in (NOTES, ERROR, PATH):
            if item[name]:  # an empty cell needs no style: a row that passed has few
                put_text(ws, r, col[name], item[name], alignment=WRAP_TOP, stamp=wrap)
        # Tall enough for its picture and its longest wrapped text: nothing spills or hides.
        text = max(text_height(str(item[n] or ""), widths[n]) for n in TEXT_WIDTHS)
        height = max(picture_points, text)
        if height > 15.0:
            ws.row_dimensions[r].height = min(height, MAX_ROW_POINTS)
    for img in images:
        ws.add_image(img)

    end = get_column_letter(len(columns))
    ws.auto_filter.ref = f"A{HEADER_ROW}:{end}{max(last, HEADER_ROW)}"
    ws.freeze_panes = ws.cell(row=first, column=col[STATUS] + 1)  # header and name stay in view
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"
    if len(frame):
        add_rules(ws, col, first, last, _limits(record))


def add_rules(ws: Worksheet, col: dict[str, int], first: int, last: int, limits) -> None:
    """Conditional formats: status colours, and metric cells past the run's own limits."""
    status = get_column_letter(col[STATUS])
    for s, colour in STATUS_COLOURS.items():
        ws.conditional_formatting.add(
            f"{status}{first}:{status}{last}",
            CellIsRule(
                operator="equal",
                formula=[f'"{s.value}"'],
                fill=solid(colour),
                font=Font(bold=True, color="FFFFFF"),
            ),
        )
    for name, bounds in limits.items():
        if name not in col:
            continue
        letter = get_column_letter(col[name])
        top = f"{letter}{first}"  # relative: the rule shifts to each cell of the range
        m = METRICS[name]
        for level in (Status.FAIL, Status.WARN):  # FAIL first, and it stops there
            bound = bounds.get(level.value.lower())
            if bound is None:
                continue
            fill, font = LIMIT_COLOURS[level]
            # ISNUMBER: an empty cell (an ERROR row) counts as 0 in a plain "less than" rule.
            if m.two_sided:
                test = f"ABS({top})>{bound!r}"
            else:
                test = f"{top}{'<' if m.higher_is_better else '>'}{bound!r}"
            ws.conditional_formatting.add(
                f"{letter}{first}:{letter}{last}",
                FormulaRule(
                    formula=[f"AND(ISNUMBER({top}),{test})"],
                    fill=solid(fill),
                    font=Font(color=font, bold=True),
                    stopIfTrue=True,
                ),
            )


def summary_sheet(
    ws: Worksheet, frame: pd.DataFrame, record: RunRecord, baseline_thumbnail: bytes | None
) -> None:
    counts = record.counts
    worst = record.verdict
    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["B"].width = 16
    ws.column_dimensions["C"].width = 16
    ws.column_dimensions["D"].width = 16
    ws.column_dimensions["E"].width = DEFINITION_WIDTH

    put_text(
        ws,
        1,
        1,
        view.title(record),
        font=Font(bold=True, size=16, color="FFFFFF"),
        fill=solid(STATUS_COLOURS[worst]),
    )
    for c in range(2, 6):
        ws.cell(row=1, column=c).fill = solid(STATUS_COLOURS[worst])
    ws.row_dimensions[1].height = 24

    row = 3
    put_text(ws, row, 1, "Images by status", font=SECTION)
    row += 1
    for s in Status:
        put_text(
            ws, row, 1, s.value, font=Font(bold=True, color="FFFFFF"), fill=solid(STATUS_COLOURS[s])
        )
        ws.cell(row=row, column=2, value=int(counts.get(s.value, 0)))
        row += 1
    put_text(ws, row, 1, "total", font=BOLD)
    ws.cell(row=row, column=2, value=len(frame)).font = BOLD
    row += 1
    put_text(ws, row, 1, "skipped files")
    ws.cell(row=row, column=2, value=len(record.skipped))
    row += 2
    row = _run_facts(ws, row, record)
    row = _series_facts(ws, row, record)
    row = _baseline_facts(ws, row, record, baseline_thumbnail)
    row = _limits_in_force(ws, row, record)
    row = _reading_the_pictures(ws, row)
    _configuration(ws, row, record)


def _run_facts(ws: Worksheet, row: int, record: RunRecord) -> int:
    tool = record.tool
    facts = [
        ("series", record.series or ""),
        ("started", view.when(record, seconds=True)),
        ("finished", clock.shown(record.finished, record.settings.timezone, seconds=True)),
        ("duration", f"{record.duration_s:.1f} s"),
        ("exit status", str(int(record.exit_status))),
        ("inputs", ", ".join(shown(p) for p in record.inputs)),
        (
            "tool",
            f"reporter {tool.version} (Python {tool.python}, OpenCV {tool.opencv}, "
            f"pandas {tool.pandas})",
        ),
    ]
    put_text(ws, row, 1, "Run", font=SECTION)
    row = _pairs(ws, row + 1, facts) + 1
    return row


def _series_facts(ws: Worksheet, row: int, record: RunRecord) -> int:
    control = record.history
    if control:
        put_text(ws, row, 1, "Series control", font=SECTION)
        period = control.baseline
        zone = record.settings.timezone
        limits = view.control_sentence(control)
        facts = [
            ("run id", str(control.run_id)),
            (
                "control period",
                f"baseline sha256 {period.sha256[:12]}, set {clock.shown(period.set_at, zone)} "
                f"by {period.set_by}: {period.reason}",
            ),
            ("control limits", limits),
            (
                "previous run",
                clock.shown(control.previous_run, zone)
                if control.previous_run
                else "none (first run)",
            ),
            ("history", shown(control.path)),
        ]
        if control.new_slots:
            facts.append(("NEW SLOTS", control.new_slots))
        if control.missing:
            facts.append(("GAP", view.gap_text(control)))
        first = row + 1
        row = _pairs(ws, first, facts) + 1
        if control.baseline_mismatch or control.missing or control.new_slots:
            for r in range(first, row - 1):
                if ws.cell(row=r, column=1).value in ("control limits", "GAP", "NEW SLOTS"):
                    ws.cell(row=r, column=2).font = Font(bold=True, color="C62828")
    return row


def _baseline_facts(
    ws: Worksheet, row: int, record: RunRecord, baseline_thumbnail: bytes | None
) -> int:
    base = record.baseline
    put_text(ws, row, 1, "Baseline", font=SECTION)
    baseline_row = row + 1
    facts = [
        ("file", base.file),
        ("path", shown(base.path)),
        (
            "size",
            f"{base.width} x {base.height} px, {base.channels} channel(s), "
            f"{base.depth}, {base.bytes:,} bytes",
        ),
        ("sha256", base.sha256),
        ("notes", "; ".join(base.notes)),
        ("ignored", _ignored(record.settings.comparison)),
    ]
    row = _pairs(ws, baseline_row, facts)
    if baseline_thumbnail:
        img = picture(baseline_thumbnail, baseline_row + len(facts), 2, side=160)
        ws.add_image(img)
        ws.row_dimensions[baseline_row + len(facts)].height = pixels_to_points(img.height + 2 * PAD)
        ws.merge_cells(
            start_row=baseline_row + len(facts),
            end_row=baseline_row + len(facts),
            start_column=2,
            end_column=3,
        )
        row += 1
    row += 1
    return row


def _limits_in_force(ws: Worksheet, row: int, record: RunRecord) -> int:
    put_text(ws, row, 1, "Limits in force", font=SECTION)
    row += 1
    for c, head in enumerate(("metric", "direction", "WARN when", "FAIL when", "definition"), 1):
        put_text(ws, row, c, head, font=BOLD, fill=HEADER_FILL)
    row += 1
    limits = _limits(record)
    for name, m in METRICS.items():
        bounds = limits.get(name, {})
        put_text(ws, row, 1, name, font=BOLD, alignment=TOP)
        put_text(
            ws,
            row,
            2,
            m.direction,
            alignment=TOP,
        )
        put_text(ws, row, 3, view.limit_text(name, bounds.get("warn")), alignment=TOP)
        put_text(ws, row, 4, view.limit_text(name, bounds.get("fail")), alignment=TOP)
        put_text(ws, row, 5, m.definition, alignment=WRAP_TOP)
        ws.row_dimensions[row].height = text_height(m.definition, DEFINITION_WIDTH)
        row += 1
    outliers = record.settings.outliers
    signal = record.signal
    rule = (
        f"on {', '.join(outliers.metrics or ())}"
        + f" ({view.signal_text(signal)})"
        + f": {outliers.status} when more than {outliers.z:g} robust SD (1.4826 x MAD) "
        "from the run's median, on the bad side, on the cube root of the distance from an "
        f"identical image's value; with at least {outliers.min_images} images"
        if outliers.enabled
        else "off"
    )
    put_text(ws, row, 1, "outlier rule", font=BOLD, alignment=TOP)
    put_text(ws, row, 2, rule, alignment=WRAP_TOP)
    ws.merge_cells(start_row=row, end_row=row, start_column=2, end_column=5)
    ws.row_dimensions[row].height = text_height(rule, 3 * 16 + DEFINITION_WIDTH)
    row += 2
    return row


def _reading_the_pictures(ws: Worksheet, row: int) -> int:
    put_text(ws, row, 1, "Reading the pictures", font=SECTION)
    row += 1
    put_text(ws, row, 1, "diff map", font=BOLD)
    put_text(ws, row, 2, visuals.LEGEND)
    row += 1
    put_text(ws, row, 1, "PSNR ∞", font=BOLD)
    put_text(
        ws,
        row,
        2,
        f"identical images; stored as {PSNR_INF:.0E} so it sorts as the best "
        "and never trips a limit",
    )
    row += 2
    return row


def _configuration(ws: Worksheet, row: int, record: RunRecord) -> None:
    """Every setting results.json reports, as a table: its key in the configuration file,
    its value in words, and what it does (the limits and the outlier rule are above)."""
    put_text(ws, row, 1, "Configuration", font=SECTION)
    row += 1
    for c, head in ((1, "setting"), (2, "value"), (5, "what it does")):
        put_text(ws, row, c, head, font=BOLD, fill=HEADER_FILL)
    for c in (3, 4):
        ws.cell(row=row, column=c).fill = HEADER_FILL
    row += 1
    config = record.settings
    for setting in SETTINGS:
        if setting.spec.json is False or setting.path[0] == "outliers":
            continue
        value = setting.spec.json(config) if callable(setting.spec.json) else setting.get(config)
        text = readable(value)
        put_text(ws, row, 1, setting.spec.toml or ".".join(setting.path), alignment=TOP)
        put_text(ws, row, 2, text, alignment=WRAP_TOP)
        ws.merge_cells(start_row=row, end_row=row, start_column=2, end_column=4)
        put_text(ws, row, 5, setting.spec.help, alignment=WRAP_TOP)
        lines = max(text_height(text, 3 * 16), text_height(setting.spec.help, DEFINITION_WIDTH))
        if lines > 15:
            ws.row_dimensions[row].height = lines
        row += 1
    ws.sheet_view.showGridLines = False


def readable(value: Any) -> str:
    """A setting's value in words: on/off, lists joined, "not set" for none."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        return shown(str(value))
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {readable(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(readable(v) for v in value) or "none"
    return str(value)


def _ignored(c: Comparison) -> str:
    """The ignored regions and the alignment, for the Summary sheet."""
    parts = [f"x {x}, y {y}, {w}x{h} px" for x, y, w, h in c.ignore]
    if c.mask:
        parts.append(f"black pixels of {shown(str(c.mask))}")
    text = "; ".join(parts) + " (left out of every metric)" if parts else "nothing"
    align = "on (shifts compensated)" if c.align else "off (shifts measured only)"
    return f"{text}; alignment {align}"


def _pairs(ws: Worksheet, row: int, pairs: list[tuple[str, str]]) -> int:
    """Label in column A, value from column B on; returns the next free row."""
    span = 3 * 16 + DEFINITION_WIDTH  # columns B to E of the Summary sheet
    for label, value in pairs:
        put_text(ws, row, 1, label, font=BOLD, alignment=TOP)
        put_text(ws, row, 2, value, alignment=WRAP_TOP)
        if len(value or "") > 16:  # long text wraps within B:E instead of widening the page
            ws.merge_cells(start_row=row, end_row=row, start_column=2, end_column=5)
            ws.row_dimensions[row].height = text_height(value, span)
        row += 1
    return row


def errors_sheet(ws: Worksheet, frame: pd.DataFrame, record: RunRecord) -> None:
    ws.column_dimensions["A"].width = 40
    ws.column_dimensions["B"].width = 70
    ws.column_dimensions["C"].width = 60
    errors = frame[frame[STATUS] == Status.ERROR.value]
    put_text(ws, 1, 1, f"Images that could not be compared ({len(errors)})", font=SECTION)
    for c, head in enumerate((FILE, ERROR, PATH), 1):
        put_text(ws, 2, c, head, font=BOLD, fill=HEADER_FILL)
    row = 3
    for item in errors.to_dict("records"):
        for c, name in enumerate((FILE, ERROR, PATH), 1):
            put_text(ws, row, c, item[name], alignment=WRAP_TOP)
        row += 1
    if errors.empty:
        put_text(ws, row, 1, "none", font=MUTED)
        row += 1
    row += 1
    skipped = record.skipped
    put_text(ws, row, 1, f"Files skipped ({len(skipped)})", font=SECTION)
    row += 1
    for c, head in enumerate(("path", "reason"), 1):
        put_text(ws, row, c, head, font=BOLD, fill=HEADER_FILL)
    row += 1
    for item in skipped:
        put_text(ws, row, 1, shown(item.path), alignment=WRAP_TOP)
        put_text(ws, row, 2, item.reason, alignment=WRAP_TOP)
        row += 1
    if not skipped:
        put_text(ws, row, 1, "none", font=MUTED)
    ws.freeze_panes = "A3"


TREND_METRICS = ("ssim", "ssim_coarse", "ssim_64")
TREND_COLOURS = ("1F5FA8", "8E5BB5", "00897B")  # their points (filled: LibreOffice draws an
# unfilled marker white)


CHART_ROWS = 22  # rows the chart covers at the top of the Trend sheet


def trend_sheet(ws: Worksheet, frame: pd.DataFrame, record: RunRecord) -> None:
    """The run's images in the table's order: a chart of the SSIMs as points (the images
    are not a time series, so no line joins them) over its table of numbers.

    ssim_64's limits are drawn as dashed lines, so a point below a line is a
    flag. The chart sits above the table so that both print on the first page.
    """
    bounds = _limits(record).get("ssim_64", {})
    lines = [(f"ssim_64 {level} limit", bounds.get(level)) for level in ("warn", "fail")]
    lines = [(label, value) for label, value in lines if value is not None]
    heads = ("#", FILE, *TREND_METRICS, *(label for label, _ in lines))
    top = CHART_ROWS + 1  # the table's header row
    for c, head in enumerate(heads, 1):
        put_text(ws, top, c, head, font=BOLD, fill=HEADER_FILL)
        if c != 2:  # numbers: header over the digits
            ws.cell(row=top, column=c).alignment = Alignment(horizontal="right")
    ws.column_dimensions["A"].width = 5
    ws.column_dimensions["B"].width = 34
    for c in range(3, len(heads) + 1):
        ws.column_dimensions[get_column_letter(c)].width = 17
    for i, item in enumerate(frame.to_dict("records"), 1):
        ws.cell(row=top + i, column=1, value=i)
        put_text(ws, top + i, 2, item[FILE])
        for c, name in enumerate(TREND_METRICS, 3):
            put_metric(ws, top + i, c, name, item[name])
        for c, (_, value) in enumerate(lines, 3 + len(TREND_METRICS)):
            ws.cell(row=top + i, column=c, value=float(value)).number_format = DEFAULT_NUMBER_FORMAT
    if frame.empty:
        return

    chart = LineChart()
    chart.title = "SSIM of each image (higher: more like the baseline)"
    chart.y_axis.title = "SSIM"
    chart.x_axis.title = "image #, in the order of the Results sheet (names in the table below)"
    chart.height, chart.width = 11, 26  # cm: about CHART_ROWS rows by columns A to F
    chart.display_blanks = "gap"  # an ERROR row is a gap, not a zero
    last = top + len(frame)
    chart.add_data(
        Reference(ws, min_col=3, max_col=len(heads), min_row=top, max_row=last),
        titles_from_data=True,
    )
    # Numbers, not names: rotated file names would take half the chart's height.
    chart.set_categories(Reference(ws, min_col=1, min_row=top + 1, max_row=last))
    for i, series in enumerate(chart.series):
        series.smooth = False
        if i >= len(TREND_METRICS):  # limit lines: dashed, no markers
            series.marker.symbol = "none"
            series.graphicalProperties.line.dashStyle = "dash"
            series.graphicalProperties.line.solidFill = (
                "C62828" if "fail" in heads[2 + i] else "B26A00"
            )
        else:  # points only: a line would suggest a trend between unrelated images
            colour = TREND_COLOURS[i]
            series.marker.symbol = "circle"
            series.marker.size = 6
            series.marker.graphicalProperties = GraphicalProperties(solidFill=colour)
            series.marker.graphicalProperties.line.solidFill = colour
            series.graphicalProperties.line.noFill = True
    values = frame[list(TREND_METRICS)].to_numpy(dtype=float, na_value=float("nan")).ravel()
    values = [v for v in values if math.isfinite(v)] + [v for _, v in lines]
    if values:  # zoom on the data: similarities of a healthy run differ in the 2nd decimal
        chart.y_axis.scaling.min = max(-1.0, math.floor(min(values) * 20 - 1) / 20)
        chart.y_axis.scaling.max = 1.0
    chart.y_axis.number_format = "0.00"
    for axis in (chart.x_axis, chart.y_axis):
        axis.delete = False  # openpyxl 3.1 leaves it unset, and Excel then hides the axes
    chart.legend.position = "b"
    ws.add_chart(chart, "A1")


LJ_ROWS = 18  # rows a Levey-Jennings chart covers on the Trend sheet


def control_sheet(ws: Worksheet, charts: list) -> None:
    """The series' trend across runs: per slot and chart metric, its values and limits
    as a table, and a native Levey-Jennings chart of them beside it."""
    heads = (
        "run",
        "started",
        "value",
        "centre",
        "-3SD",
        "-2SD",
        "-1SD",
        "+1SD",
        "+2SD",
        "+3SD",
        "rules",
    )
    widths = (7, 24, 10, 10, 9, 9, 9, 9, 9, 9, 22)
    for c, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(c)].width = width
    row = 1
    for n, chart in enumerate(charts):
        lim = chart.limit
        if n:  # each slot's table starts a printed page, under its own title and header
            ws.row_breaks.append(Break(id=row - 1))
        put_text(ws, row, 1, chart.title, font=SECTION)
        put_text(ws, row, 4, chart.caption, font=MUTED)
        top = row + 1
        for c, head in enumerate(heads, 1):
            put_text(ws, top, c, head, font=BOLD, fill=HEADER_FILL)
        for i, point in enumerate(chart.points, top + 1):
            if point.run_id is not None:
                ws.cell(row=i, column=1, value=point.run_id)
            else:
                put_text(ws, i, 1, "this", font=BOLD)
            put_text(ws, i, 2, clock.shown(point.started, chart.zone))
            if point.value is not None:
                put_metric(ws, i, 3, chart.metric, point.value)
            if lim.ready:
                lines = [lim.centre, *(lim.band(k)[0] for k in (3, 2, 1))]
                lines += [lim.band(k)[1] for k in (1, 2, 3)]
                for c, value in enumerate(lines, 4):
                    cell = ws.cell(row=i, column=c, value=value)
                    cell.number_format = DEFAULT_NUMBER_FORMAT
            text = ", ".join(point.rules) + ("" if point.in_control else " (out of control)")
            put_text(ws, i, 11, text.strip(", "))
        last = top + len(chart.points)
        if len(chart.points) >= 2:
            lj = LineChart()
            lj.title = clean(f"{chart.title} (Levey-Jennings)")  # a slot is a file name
            lj.height, lj.width = 8.5, 17
            lj.display_blanks = "gap"
            lj.add_data(
                Reference(ws, min_col=3, max_col=10, min_row=top, max_row=last),
                titles_from_data=True,
            )
            lj.set_categories(Reference(ws, min_col=1, min_row=top + 1, max_row=last))
            low, high = lj_axis(chart)
            if low is not None:  # the control band and every point, however far off
                lj.y_axis.scaling.min, lj.y_axis.scaling.max = low, high
            lj.x_axis.title = "run"
            for i, series in enumerate(lj.series):
                series.smooth = False
                if i == 0:  # the values: points joined by a thin line
                    series.marker.symbol = "circle"
                    series.graphicalProperties.line.solidFill = "1F5FA8"
                    continue
                series.marker.symbol = "none"
                k = abs((-3, -2, -1, 1, 2, 3)[i - 2]) if i >= 2 else 0
                colour = {0: "1D232B", 1: "9AA5B1", 2: "B26A00", 3: "C62828"}[k]
                series.graphicalProperties.line.solidFill = colour
                series.graphicalProperties.line.dashStyle = "solid" if k == 0 else "dash"
            lj.legend = None
            lj.y_axis.number_format = "0.000"
            for axis in (lj.x_axis, lj.y_axis):
                axis.delete = False
            ws.add_chart(lj, f"{get_column_letter(len(heads) + 2)}{row}")
        row = max(last, row + LJ_ROWS) + 2
    ws.freeze_panes = "A1"


def lj_axis(chart) -> tuple[float | None, float | None]:
    """The y range of a native Levey-Jennings chart: the PNG's window (the control band)
    widened to every point, so no value is clipped off the chart."""
    low, high = chart_window(chart)
    if low is None:
        return None, None
    values = [p.value for p in chart.points if p.value is not None and math.isfinite(p.value)]
    low, high = min([low, *values]), max([high, *values])
    pad = (high - low) * 0.03
    return low - pad, high + pad


def print_setup(ws: Worksheet, landscape: bool = True) -> None:
    """Fit each sheet to the page width; the rows flow onto as many pages as they need."""
    ws.page_setup.orientation = "landscape" if landscape else "portrait"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True


def workbook(
    frame: pd.DataFrame,
    record: RunRecord,
    baseline_thumbnail: bytes | None,
    charts: list | None = None,
    folder: Path | None = None,
) -> Workbook:
    """The workbook; ``folder`` is where it will be read from (the file links)."""
    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    results_sheet(wb.create_sheet("Results"), frame, record, folder)
    summary_sheet(summary, frame, record, baseline_thumbnail)
    errors_sheet(wb.create_sheet("Errors"), frame, record)
    if charts:  # a series with history: the trend across runs
        control_sheet(wb.create_sheet("Trend"), charts)
    else:
        trend_sheet(wb.create_sheet("Trend"), frame, record)
    for ws in wb.worksheets:
        print_setup(ws, landscape=ws.title != "Summary")
    wb.properties.creator = f"reporter {record.tool.version}"
    wb.properties.title = view.title(record)
    return wb


def write_xlsx(
    frame: pd.DataFrame,
    record: RunRecord,
    baseline_thumbnail: bytes | None,
    path: Path,
    *,
    charts: list | None = None,
    folder: Path | None = None,
) -> Path:
    book = workbook(frame, record, baseline_thumbnail, charts, folder or path.parent)
    return write_atomic(path, lambda tmp: _save(book, tmp))


def _save(book: Workbook, tmp: Path) -> None:
    """``book.save(tmp)``, closing its zip archive when writing fails.

    openpyxl leaves the archive open on an error; on a full disk its
    ``__del__`` later tried to write the archive's end and printed a traceback
    after reporter's own one-line error.
    """
    archive = ZipFile(tmp, "w", ZIP_DEFLATED, allowZip64=True)
    try:
        book.properties.modified = datetime.now(UTC).replace(tzinfo=None)  # as openpyxl does
        ExcelWriter(book, archive).save()
    except BaseException:
        with contextlib.suppress(Exception):  # fails again on a full disk, and is closed
            archive.close()
        raise
