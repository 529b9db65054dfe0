"""``reporter search``: which images of a collection look like this one?

Where it sits: after :func:`features.gather`. Each query is scored against every
other image by one method, ranked best first, and written as ``results.csv``,
``report.html`` (the query and its nearest as a gallery) and ``report.xlsx``
(the table with pictures), staged and moved into place together.

Methods (how alike two images are):

- ``ahash``, ``phash``: Hamming distance of the 64-bit average and perceptual
  hashes (0 = same hash; lower is nearer), compared as packed bits;
- ``colour``: L2 distance of the 42 colour moments (``cv2.img_hash``): same
  colours in similar places (lower is nearer);
- ``embedding``: cosine similarity of the EfficientNet-Lite0 vectors (higher is
  nearer): what the picture shows, robust to crops, shifts and re-encoding.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import clock
from ..atomic import write_atomic, write_text
from ..render.data import defused
from ..render.html import data_uri
from ..render.templates import environment
from . import METHODS
from .features import Features

__all__ = ["Hit", "METHODS", "rank", "Ranking", "write_reports"]

log = logging.getLogger("reporter")


@dataclass(frozen=True)
class Hit:
    rank: int
    item: Features
    score: float


@dataclass(frozen=True)
class Ranking:
    query: Features
    hits: list[Hit]


def _bits(values: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(values), np.uint8).reshape(len(values), 8)


def scores(method: str, query: Features, pool: list[Features]) -> np.ndarray:
    """The score of every image of ``pool`` against ``query`` by ``method``."""
    if method in ("ahash", "phash"):
        mine = np.frombuffer(getattr(query, method), np.uint8)
        xor = np.bitwise_xor(_bits([getattr(f, method) for f in pool]), mine)
        return np.bitwise_count(xor).sum(axis=1).astype(np.float64)
    if method == "colour":
        return np.linalg.norm(np.stack([f.colour for f in pool]) - query.colour, axis=1)
    if method == "embedding":
        return np.stack([f.embedding for f in pool]) @ query.embedding.astype(np.float32)
    raise ValueError(f"unknown method {method}")


def rank(method: str, query: Features, items: list[Features], top: int) -> Ranking:
    """The ``top`` nearest images to ``query``, best first; the query's own file (same
    path) is left out, and ties keep the input order."""
    pool = [f for f in items if f.error is None and Path(f.path) != Path(query.path)]
    if not pool:
        return Ranking(query, [])
    values = scores(method, query, pool)
    higher = METHODS[method][1]
    order = np.argsort(-values if higher else values, kind="stable")[:top]
    return Ranking(query, [Hit(n, pool[i], float(values[i])) for n, i in enumerate(order, 1)])


def _shown(method: str, score: float) -> str:
    return (
        f"{score:.4f}"
        if method == "embedding"
        else f"{score:.1f}"
        if method == "colour"
        else (f"{score:.0f}")
    )


CSV_COLUMNS = ("query", "rank", "file", "path", "method", "score", "error")


def write_reports(
    rankings: list[Ranking],
    errors: list[Features],
    method: str,
    stage: Path,
    formats: tuple[str, ...],
    *,
    started: datetime,
    zone: str | None,
) -> dict[str, Path]:
    """results.csv, report.html and report.xlsx of the rankings, into ``stage``."""
    out: dict[str, Path] = {}
    if "csv" in formats:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for r in rankings:
            for hit in r.hits:
                writer.writerow(
                    (
                        defused(r.query.file),
                        hit.rank,
                        defused(hit.item.file),
                        defused(hit.item.path),
                        method,
                        _shown(method, hit.score),
                        "",
                    )
                )
        for e in errors:
            writer.writerow(("", "", defused(e.file), defused(e.path), method, "", e.error))
        out["csv"] = write_text(stage / "results.csv", buffer.getvalue())
    name, higher = METHODS[method]
    title = (
        f"Search by {method}: {len(rankings)} quer{'y' if len(rankings) == 1 else 'ies'}"
        f" \u00b7 {clock.shown(started, zone)}"
    )
    if "html" in formats:
        page = (
            environment()
            .get_template("search.html.j2")
            .render(
                title=title,
                method=method,
                score_name=name,
                direction="higher is nearer" if higher else "lower is nearer",
                rankings=[
                    {
                        "query": r.query,
                        "query_src": data_uri(r.query.thumbnail),
                        "hits": [
                            {
                                "rank": h.rank,
                                "file": h.item.file,
                                "path": h.item.path,
                                "score": _shown(method, h.score),
                                "src": data_uri(h.item.thumbnail),
                            }
                            for h in r.hits
                        ],
                    }
                    for r in rankings
                ],
                errors=errors,
            )
        )
        out["html"] = write_text(stage / "report.html", page)
    if "xlsx" in formats:
        out["xlsx"] = _workbook(rankings, errors, method, title, stage / "report.xlsx")
    return out


def _workbook(rankings, errors, method, title, path: Path) -> Path:
    from openpyxl import Workbook

    from ..render import excel

    book = Workbook()
    ws = book.active
    ws.title = "Results"
    excel.put_text(ws, 1, 1, title, font=excel.SECTION)
    heads = ("query", "rank", "picture", "file", method + " " + METHODS[method][0], "path")
    for c, head in enumerate(heads, 1):
        excel.put_text(ws, 2, c, head, font=excel.BOLD, fill=excel.HEADER_FILL)
    widths = (30, 7, 18, 36, 22, 60)
    number = {"embedding": "0.0000", "colour": "0.0"}.get(method, "0")
    for c, width in enumerate(widths, 1):
        ws.column_dimensions[chr(64 + c)].width = width
    row = 3
    for r in rankings:
        for hit in [None, *r.hits]:  # the query first, then its nearest
            item = r.query if hit is None else hit.item
            excel.put_text(ws, row, 1, r.query.file, alignment=excel.TOP)
            if hit is not None:
                ws.cell(row=row, column=2, value=hit.rank).alignment = excel.TOP
                cell = ws.cell(row=row, column=5, value=round(hit.score, 6))
                cell.alignment, cell.number_format = excel.TOP, number
            else:
                excel.put_text(ws, row, 2, "query", font=excel.BOLD, alignment=excel.TOP)
            excel.put_text(ws, row, 4, item.file, alignment=excel.WRAP_TOP)
            excel.put_text(ws, row, 6, item.path, alignment=excel.WRAP_TOP)
            if item.thumbnail:
                ws.add_image(excel.picture(item.thumbnail, row, 3, side=100))
            ws.row_dimensions[row].height = 82
            row += 1
    for e in errors:
        excel.put_text(ws, row, 2, "ERROR", font=excel.BOLD)
        excel.put_text(ws, row, 4, e.file)
        excel.put_text(ws, row, 5, e.error)
        excel.put_text(ws, row, 6, e.path)
        row += 1
    ws.freeze_panes = "A3"
    ws.print_title_rows = "2:2"
    excel.print_setup(ws)
    return write_atomic(path, lambda tmp: excel._save(book, tmp))
