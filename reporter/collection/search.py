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

from . import METHODS, score_kind
from .features import Features
from .reports import Item, Section, Table

__all__ = ["by_metric", "Hit", "Index", "METHODS", "rank", "Ranking", "scores", "table"]

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


class Index:
    """The images of a pool, stacked once for one method: every query is then one numpy
    operation over them (a matrix-vector product, or XOR and bit count of packed hashes)."""

    def __init__(self, method: str, pool: list[Features]) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method}")
        self.method, self.pool = method, pool
        self.paths = np.array([f.path for f in pool], dtype=object)
        if method in ("ahash", "phash"):  # 64 bits as one integer: one XOR and bit count each
            raw = b"".join(getattr(f, method) for f in pool)
            self.data = np.frombuffer(raw, np.uint64)
        elif method == "colour":
            self.data = np.stack([f.colour for f in pool])
        else:
            self.data = np.stack([f.embedding for f in pool]).astype(np.float32)

    def scores(self, query: Features) -> np.ndarray:
        """Every image's score against ``query``, in the pool's order."""
        if self.method in ("ahash", "phash"):
            mine = np.frombuffer(getattr(query, self.method), np.uint64)[0]
            return np.bitwise_count(self.data ^ mine)
        if self.method == "colour":
            return np.linalg.norm(self.data - query.colour, axis=1)
        return self.data @ query.embedding.astype(np.float32)


def scores(method: str, query: Features, pool: list[Features]) -> np.ndarray:
    """The score of every image of ``pool`` against ``query`` by ``method``."""
    return Index(method, pool).scores(query)


def rank(
    method: str, query: Features, items: list[Features], top: int, index: Index | None = None
) -> Ranking:
    """The ``top`` nearest images to ``query``, best first; the query's own file (same
    path) is left out, and ties keep the input order. ``index``: the readable ``items``
    stacked once (:class:`Index`), for many queries over one collection."""
    if index is None:
        index = Index(method, [f for f in items if f.error is None])
    pool = index.pool
    values = index.scores(query)
    candidates = np.flatnonzero(index.paths != query.path)
    if not len(candidates):
        return Ranking(query, [])
    higher = score_kind(method)[1]
    picked = values[candidates]
    order = candidates[np.argsort(-picked if higher else picked, kind="stable")[:top]]
    return Ranking(query, [Hit(n, pool[i], float(values[i])) for n, i in enumerate(order, 1)])


def _shown(method: str, score: float) -> str:
    if method not in METHODS:  # a run metric: its own digits (catalog.py)
        from ..catalog import METRICS

        return METRICS[method].format(score)
    if method == "embedding":
        return f"{score:.4f}"
    return f"{score:.1f}" if method == "colour" else f"{score:.0f}"


def table(rankings: list[Ranking], errors: list[Features], method: str, when: str) -> Table:
    """The rankings as the collection commands' table: a section per query."""
    name, higher = score_kind(method)
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
        score_format={"embedding": "0.0000", "colour": "0.0", "ahash": "0", "phash": "0"}.get(
            method, "0.000"
        ),
    )


def by_metric(metric: str, query: Features, items: list[Features], top: int, jobs: int) -> Ranking:
    """``search --by ssim`` (any of RUN_METRICS): the query as the baseline of a run, every
    other readable image compared with it by run's own path (``compare.compare_all``:
    brought to the query's size, in worker processes); a file that cannot be compared
    now is left out of the ranking."""
    from .. import images
    from ..compare import Input, Job, compare_all
    from ..metrics import Reference

    loaded = images.load(query.path, max_pixels=100_000_000)
    job = Job(Reference(loaded.pixels).prepare(), images.Geometry.of(loaded.pixels),
              100_000_000, strict_size=False)  # fmt: skip
    pool = [f for f in items if f.error is None and f.path != query.path]
    results = compare_all(job, [Input(Path(f.path), f.file) for f in pool], jobs=jobs,
                          progress=False)  # fmt: skip
    scored = [
        (f, r.metrics[metric])
        for f, r in zip(pool, results, strict=True)
        if r.metrics is not None and np.isfinite(r.metrics[metric])
    ]
    higher = score_kind(metric)[1]
    from ..catalog import METRICS

    two_sided = METRICS[metric].two_sided
    values = np.array([abs(v) if two_sided else v for _, v in scored], np.float64)
    order = np.argsort(-values if higher else values, kind="stable")[:top]
    return Ranking(
        query, [Hit(n, scored[i][0], float(scored[i][1])) for n, i in enumerate(order, 1)]
    )
