"""``reporter search``: which images of a collection look like this one?

Where it sits: after :func:`features.gather`. Each query is scored against every
other image by one method and ranked best first; :func:`table` hands the result to
``reports.write``: ``results.csv``, ``report.html`` (the query and its nearest as a
gallery) and ``report.xlsx`` (the table with pictures).

Methods (how alike two images are):

- ``ahash``, ``phash``: Hamming distance of the 64-bit average and perceptual
  hashes (0 = same hash; lower is nearer), compared as packed bits;
- ``colour``: L2 distance of the 42 colour moments (``cv2.img_hash``): same
  colours in similar places (lower is nearer);
- ``embedding``: cosine similarity of the EfficientNet-Lite0 vectors (higher is
  nearer): what the picture shows, robust to crops, shifts and re-encoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import METHODS
from .features import Features
from .reports import Item, Section, Table

__all__ = ["Hit", "METHODS", "rank", "Ranking", "scores", "table"]

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
    if method == "embedding":
        return f"{score:.4f}"
    return f"{score:.1f}" if method == "colour" else f"{score:.0f}"


def table(rankings: list[Ranking], errors: list[Features], method: str, when: str) -> Table:
    """The rankings as the collection commands' table: a section per query."""
    name, higher = METHODS[method]
    sections = []
    for r in rankings:
        items = [Item(r.query, {}, tag="query", lead=True)]
        items += [
            Item(
                h.item,
                {"query": r.query.file, "rank": h.rank, "method": method, "score": h.score},
                tag=str(h.rank),
                score=_shown(method, h.score),
            )
            for h in r.hits
        ]
        sections.append(Section(r.query.file, items, empty="No other image to compare with."))
    for s in sections:  # the CSV lists the hits only; the query leads the gallery
        s.items[0].values = {"query": s.heading, "rank": "", "method": method, "score": ""}
    count = len(rankings)
    return Table(
        title=f"Search by {method}: {count} quer{'y' if count == 1 else 'ies'} \u00b7 {when}",
        subtitle=f"Score: {method} {name}, {'higher' if higher else 'lower'} is nearer. "
        "The query's own file is left out of its results.",
        columns=("query", "rank", "file", "path", "method", "score"),
        sections=sections,
        errors=errors,
        score_column="score",
        score_format={"embedding": "0.0000", "colour": "0.0"}.get(method, "0"),
    )
