"""The collection commands' outputs: one table, written as CSV, a gallery page and a workbook.

Where it sits: ``search`` and ``duplicates`` describe their results as a :class:`Table`
(rows in sections: a query and its nearest, a group of duplicates); this module writes
it three ways with run's own building blocks: CSV text defused for spreadsheets
(``names.defused``), the jinja2 environment with autoescaping, and the
workbook's text, picture and print helpers (``render.excel``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import write_atomic, write_text
from ..names import defused, shown, stored
from ..render.html import data_uri
from ..render.templates import environment
from . import KEEP_ORDER
from .features import Features

__all__ = ["clusters_table", "duplicates_table", "Item", "Section", "Table", "write"]


@dataclass
class Item:
    """One image in a section, and its row in the CSV."""

    features: Features
    values: dict[str, Any]  # the CSV's columns besides file and path
    tag: str = ""  # shown on the picture: a rank, "keep"
    score: str = ""  # shown beside it
    note: str = ""
    lead: bool = False  # the query, the kept image: outlined


@dataclass
class Section:
    heading: str
    items: list[Item]
    note: str = ""
    empty: str = ""


@dataclass
class Table:
    title: str
    subtitle: str
    columns: tuple[str, ...]  # the CSV's, "file" and "path" among them
    sections: list[Section]
    errors: list[Features] = field(default_factory=list)
    score_column: str = ""  # the column the workbook shows as a number
    score_format: str = "0.000"
    csv_name: str = "results.csv"


def _csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow((*table.columns, "error"))

    def cell(value: Any) -> Any:
        return defused(value) if isinstance(value, str) else value

    for section in table.sections:
        for item in section.items:
            row = {**item.values, "file": item.features.file, "path": item.features.path}
            writer.writerow([cell(row.get(c, "")) for c in table.columns] + [""])
    for e in table.errors:
        row = {"file": e.file, "path": e.path}
        writer.writerow([cell(row.get(c, "")) for c in table.columns] + [cell(e.error or "")])
    return buffer.getvalue()


def _page(table: Table) -> str:
    sections = [
        {
            "heading": s.heading,
            "note": s.note,
            "empty": s.empty,
            "items": [
                {
                    "src": data_uri(i.features.thumbnail),
                    "file": i.features.file,
                    "tag": i.tag,
                    "score": i.score,
                    "note": i.note,
                    "lead": i.lead,
                }
                for i in s.items
            ],
        }
        for s in table.sections
    ]
    return (
        environment()
        .get_template("gallery.html.j2")
        .render(title=table.title, subtitle=table.subtitle, sections=sections, errors=table.errors)
    )


def _workbook(table: Table, path: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    from ..render import excel

    book = Workbook()
    ws = book.active
    ws.title = "Results"
    excel.put_text(ws, 1, 1, table.title, font=excel.SECTION)
    notes = any(item.note for section in table.sections for item in section.items)
    heads = ("section", "", "picture", "file", table.score_column or "score", "path")
    widths = (30, 8, 18, 36, 22, 60)
    if notes:  # what the page writes under each picture: a size, whose bytes a copy has
        heads, widths = (*heads, "note"), (*widths, 40)
    if table.errors:  # why a file could not be read: a column of its own, wrapped
        heads, widths = (*heads, "error"), (*widths, 60)
    for c, head in enumerate(heads, 1):
        excel.put_text(ws, 2, c, head, font=excel.BOLD, fill=excel.HEADER_FILL)
    for c, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(c)].width = width
    row = 3
    for section in table.sections:
        for item in section.items:
            excel.put_text(ws, row, 1, section.heading, alignment=excel.TOP)
            bold = {"font": excel.BOLD} if item.lead else {}
            excel.put_text(ws, row, 2, item.tag, alignment=excel.TOP, **bold)
            value = item.values.get(table.score_column)
            if isinstance(value, int | float):  # at the top of its row, as every other cell
                cell = ws.cell(row=row, column=5, value=value)
                cell.number_format = table.score_format
                cell.alignment = excel.CENTRE_TOP  # not against the path's first letter
            excel.put_text(ws, row, 4, item.features.file, alignment=excel.WRAP_TOP)
            excel.put_text(ws, row, 6, item.features.path, alignment=excel.WRAP_TOP)
            if notes:
                excel.put_text(ws, row, 7, item.note, alignment=excel.WRAP_TOP)
            if item.features.thumbnail:
                ws.add_image(excel.picture(item.features.thumbnail, row, 3, side=100))
            ws.row_dimensions[row].height = 82
            row += 1
    for e in table.errors:  # the message was in the score's narrow column, cut by the path
        excel.put_text(ws, row, 2, "ERROR", font=excel.BOLD, alignment=excel.TOP)
        excel.put_text(ws, row, 4, e.file, alignment=excel.WRAP_TOP)
        excel.put_text(ws, row, 6, e.path, alignment=excel.WRAP_TOP)
        excel.put_text(ws, row, len(heads), e.error, alignment=excel.WRAP_TOP)
        longest = max(excel.text_height(e.error or "", widths[-1]), excel.text_height(e.path, 60))
        ws.row_dimensions[row].height = min(longest, excel.MAX_ROW_POINTS)
        row += 1
    ws.freeze_panes = "A3"
    ws.print_title_rows = "2:2"
    excel.print_setup(ws)
    return write_atomic(path, lambda tmp: excel._save(book, tmp))


def _readable(table: Table) -> Table:
    """``table`` as the outputs hold it: file names that are not UTF-8 (a share written in
    Latin-1) reach Python with surrogate escapes, which no UTF-8 file can encode; every
    text is ``names.shown`` (U+FFFD), and each path ``names.stored`` (its bytes as \\xNN),
    as run's outputs have them."""

    def text(value: Any) -> Any:
        return shown(value) if isinstance(value, str) else value

    def file(f: Features) -> Features:
        return replace(f, file=shown(f.file), path=stored(f.path), error=text(f.error))

    sections = [
        replace(
            s,
            heading=shown(s.heading),
            note=shown(s.note),
            empty=shown(s.empty),
            items=[
                replace(
                    i,
                    features=file(i.features),
                    values={k: text(v) for k, v in i.values.items()},
                    tag=shown(i.tag),
                    score=shown(i.score),
                    note=shown(i.note),
                )
                for i in s.items
            ],
        )
        for s in table.sections
    ]
    return replace(
        table,
        title=shown(table.title),
        subtitle=shown(table.subtitle),
        sections=sections,
        errors=[file(e) for e in table.errors],
    )


def write(table: Table, stage: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """The table as CSV, report.html and report.xlsx in ``stage``, as ``formats`` ask."""
    table = _readable(table)
    out: dict[str, Path] = {}
    if "csv" in formats:
        out["csv"] = write_text(stage / table.csv_name, _csv(table))
    if "html" in formats:
        out["html"] = write_text(stage / "report.html", _page(table))
    if "xlsx" in formats:
        out["xlsx"] = _workbook(table, stage / "report.xlsx")
    return out


def duplicates_table(groups, errors: list[Features], method: str, threshold: float, when: str):
    """The duplicate groups as the collection commands' table: a section per group, the
    kept image first."""
    number = {"embedding": "0.0000"}.get(method, "0")
    sections = []
    for g in groups:
        items = []
        for m in g.members:
            f = m.item
            of_kept = m.copy_of is g.kept  # a copy of a near-duplicate is a near-duplicate too
            kind = "exact copy" if of_kept else ("kept" if m.keep else f"{method} near-duplicate")
            items.append(
                Item(
                    f,
                    {
                        "group": g.number,
                        "keep": "yes" if m.keep else "no",
                        "distance": round(m.distance, 6),
                        "kind": kind,
                        "same_bytes_as": m.copy_of.file if m.copy_of else "",
                        "width": f.width,
                        "height": f.height,
                    },
                    tag="keep" if m.keep else ("copy" if of_kept else ""),
                    score=""
                    if m.keep
                    else f"{m.distance:.4f}"
                    if method == "embedding"
                    else f"{m.distance:.0f}",  # fmt: skip
                    note=f"{f.width}x{f.height}"
                    + (f" · same bytes as {m.copy_of.file}" if m.copy_of else ""),
                    lead=m.keep,
                )
            )
        sections.append(
            Section(f"group {g.number}: {len(g.members)} images", items, note=f"keep {g.kept.file}")
        )
    distance = "1 - cosine of the embeddings" if method == "embedding" else f"{method} distance"
    return Table(
        title=f"Duplicates by {method}: {len(groups)} group(s) · {when}",
        subtitle=f"Exact copies (same sha256), then near-duplicates: {distance} <= {threshold:g} "
        f"to the kept image ({KEEP_ORDER}). Each group is gathered around its kept image, "
        "so no image joins through a third one.",
        columns=(
            "group",
            "file",
            "path",
            "keep",
            "distance",
            "kind",
            "same_bytes_as",
            "width",
            "height",
        ),  # fmt: skip
        sections=sections,
        errors=errors,
        score_column="distance",
        score_format=number,
        csv_name="groups.csv",
    )


def clusters_table(items: list[Features], result, when: str) -> Table:
    """The clusters as the collection commands' table: a section per cluster, the most
    typical image (nearest its centre) first."""
    sections = []
    for c in range(result.k):
        members = sorted(
            (i for i in range(len(items)) if result.labels[i] == c),
            key=lambda i: (result.distances[i], items[i].path),
        )
        section_items = [
            Item(
                items[i],
                {"cluster": c + 1, "distance": round(float(result.distances[i]), 6)},
                tag="typical" if n == 0 else "",
                score=f"{result.distances[i]:.3f}",
                lead=n == 0,
            )
            for n, i in enumerate(members)
        ]
        sections.append(Section(f"cluster {c + 1}: {len(members)} images", section_items))
    how = {
        "embedding": "EfficientNet-Lite0 embeddings",
        "pixels": "32 x 32 colour pixels",
        "pca": f"32 x 32 colour pixels on {result.components} principal components "
        f"keeping {100 * (result.kept_variance or 0):.1f} % of the variance",
    }[result.features]
    chosen = (
        "k chosen by silhouette: "
        + ", ".join(f"k={k} {s:.3f}" for k, s in sorted(result.silhouettes.items()))
        if result.silhouettes
        else f"k = {result.k} as asked"
    )
    return Table(
        title=f"Clusters of {len(items)} images by {result.features}: k = {result.k} · {when}",
        subtitle=f"k-means on {how}; {chosen}. Most typical image (nearest its cluster's "
        "centre) first; the number is the distance to the centre.",
        columns=("cluster", "file", "path", "distance"),
        sections=sections,
        score_column="distance",
        score_format="0.000",
        csv_name="clusters.csv",
    )
