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

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedding import DIMENSIONS
from ..errors import ReporterError
from . import METHODS, score_kind
from .features import Features
from .reports import Item, Section, Table

__all__ = [
    "by_metric", "Hit", "Index", "INDEX_FROM", "METHODS", "rank", "Ranking", "require_faiss",
    "scores", "table",
]  # fmt: skip

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


INDEX_FROM = 100_000
"""From this many images, a search by embedding first bounds every image's cosine from 128
numbers (see :meth:`Index._bounds`) and computes in full only those that could make the
top: exact, at a fifth of the time."""

HNSW_LINKS = 32  # faiss's M
HNSW_BUILD = 40  # efConstruction
HNSW_SEARCH = 256  # efSearch: recall 0.998 of the exact top 10 at 100,000 (benchmark)
HNSW_KEPT = 4  # saved indexes kept in the cache folder, the most recently used


class Index:
    """The images of a pool, stacked once for one method: every query is then one numpy
    operation over them (a matrix-vector product, or XOR and bit count of packed hashes).

    ``hnsw``: an HNSW index of the embeddings (faiss), kept in the folder ``saved`` (and
    first built there); ``graph`` is then that index, which :func:`rank` asks instead of
    scoring every image: approximate (``reporter search --index hnsw``)."""

    def __init__(
        self, method: str, pool: list[Features], hnsw: bool = False, saved: Path | None = None
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method}")
        self.method, self.pool = method, pool
        self._position = {f.path: i for i, f in enumerate(pool)}
        if method in ("ahash", "phash"):  # 64 bits as one integer: one XOR and bit count each
            raw = b"".join(getattr(f, method) for f in pool)
            self.data = np.frombuffer(raw, np.uint64)
        elif method == "colour":  # 42 colour moments; none when no image could be read
            self.data = np.array([f.colour for f in pool], np.float64).reshape(len(pool), 42)
        else:
            vectors = [f.embedding for f in pool]
            self.data = np.array(vectors, np.float32).reshape(len(pool), DIMENSIONS)
        self._bound: np.ndarray | None = None
        self._basis: np.ndarray | None = None
        self.graph = None
        if method == "embedding" and hnsw and pool:
            self.graph = _graph(self.data, pool, saved)

    def others(self, query: Features) -> np.ndarray:
        """True for every image of the pool but the query's own file (a dictionary look-up,
        not a comparison of every path: 2 ms a query at 100,000 images)."""
        allowed = np.ones(len(self.pool), bool)
        own = self._position.get(query.path)
        if own is not None:
            allowed[own] = False
        return allowed

    def within(self, leaders: np.ndarray, among: np.ndarray, limit: float) -> list[tuple]:
        """For each of ``leaders`` (positions in the pool): the positions of ``among`` within
        ``limit`` of it, the leader itself left out, and their distances (lower is nearer;
        1 - cosine for the embedding). Exact, whatever the path taken (see :func:`_bounds`)."""
        found = []
        if self.method != "embedding":
            for i in leaders:
                distance = self._distances(self.pool[i], among)
                near = (distance <= limit) & (among != i)
                found.append((among[near], distance[near]))
            return found
        bounds = self._bounds()
        for start in range(0, len(leaders), _BLOCK):
            rows = leaders[start : start + _BLOCK]
            if bounds is None:  # small pools: the exact products are cheap enough
                cosine = self.data[rows] @ self.data[among].T
            else:
                cosine = _checked(self.data, bounds, rows, among, 1.0 - limit)
            for k, i in enumerate(rows):
                distance = 1.0 - cosine[k]
                near = (distance <= limit) & (among != i)
                found.append((among[near], distance[near]))
        return found

    def _distances(self, query: Features, among: np.ndarray) -> np.ndarray:
        values = self.scores(query)[among]
        return 1.0 - values if self.method == "embedding" else values

    def _bounds(self) -> np.ndarray | None:
        """Short vectors whose dot product bounds the cosine from above (pools of
        ``_BOUND_FROM`` vectors or more; None below). For unit x and y and the projection
        P on the leading ``_BOUND_DIMS`` - 1 principal axes of the pool (uncentred, so the
        shared mean direction is among them), x.y = Px.Py + Rx.Ry <= Px.Py + |Rx||Ry| by
        Cauchy-Schwarz, R the rest: so q(x) = (Px, |Rx|) gives q(x).q(y) >= x.y, and a pair
        whose bound is below the cosine asked for cannot be within it. Only the pairs that
        pass are computed in full: exact results at a tenth of the arithmetic when the
        vectors are not spread evenly over all 1280 directions (real images' are not)."""
        if self.method != "embedding" or len(self.data) < _BOUND_FROM:
            return None
        if self._bound is None:
            rng = np.random.default_rng(0)
            sample = self.data[rng.choice(len(self.data), min(len(self.data), 20_000), False)]
            moment = (sample.T @ sample).astype(np.float64)
            _, axes = np.linalg.eigh(moment)  # ascending
            self._basis = axes[:, ::-1][:, : _BOUND_DIMS - 1].astype(np.float32)
            self._bound = self.bounded(self.data)
        return self._bound

    def bounded(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as their bound vectors q = (Px, |Rx|), on this pool's axes."""
        projected = vectors @ self._basis
        rest = np.einsum("ij,ij->i", vectors, vectors) - np.einsum("ij,ij->i", projected, projected)
        return np.hstack([projected, np.sqrt(np.maximum(rest, 0.0))[:, None]])

    def scores(self, query: Features) -> np.ndarray:
        """Every image's score against ``query``, in the pool's order."""
        if self.method in ("ahash", "phash"):
            mine = np.frombuffer(getattr(query, self.method), np.uint64)[0]
            return np.bitwise_count(self.data ^ mine)
        if self.method == "colour":
            return np.linalg.norm(self.data - query.colour, axis=1)
        return self.data @ query.embedding.astype(np.float32)


_BLOCK = 256  # leaders per product: 256 x 100,000 float32 is 100 MB
_BOUND_FROM = 4096  # below, every pair is computed in full
_BOUND_DIMS = 128  # 127 principal axes and the rest's length
_SLACK = 1e-4  # float32 rounding of the bound, many times over
_DENSE = 0.05  # above this share of pairs passing the bound, compute the block in full


def _checked(
    data: np.ndarray, bounds: np.ndarray, rows: np.ndarray, among: np.ndarray, least: float
) -> np.ndarray:
    """The cosines of ``rows`` against ``among`` that can reach ``least``, exact; the others
    are -inf. The bound rules out most pairs; the rest are computed in full."""
    upper = bounds[rows] @ bounds[among].T
    hope = np.nonzero(upper >= least - _SLACK)
    if len(hope[0]) > _DENSE * upper.size:
        return data[rows] @ data[among].T
    cosine = np.full(upper.shape, -np.inf, np.float32)
    for start in range(0, len(hope[0]), 16_384):  # 16k pairs of 1280 floats: 160 MB
        r, c = hope[0][start : start + 16_384], hope[1][start : start + 16_384]
        cosine[r, c] = np.einsum("ij,ij->i", data[rows[r]], data[among[c]])
    return cosine


def _nearest(index: Index, query: Features, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``top`` by cosine (positions, cosines), the query's own file left out; ties
    in pool order, as exact search's stable sort. Candidates first, the best bounds; the
    ``top``-th best exact cosine among them is then a bar that every other image's bound
    must reach to be computed in full."""
    q = query.embedding.astype(np.float32)
    upper = index._bounds() @ index.bounded(q[None])[0]
    allowed = index.others(query)
    first = max(4 * top, 64)
    seeds = np.argpartition(-upper, min(first, len(upper) - 1))[:first]
    seeds = np.unique(seeds[allowed[seeds]])
    exact = index.data[seeds] @ q
    bar = np.partition(exact, -top)[-top] if len(exact) >= top else -np.inf
    rest = np.flatnonzero((upper >= bar - _SLACK) & allowed)
    if len(rest) > _DENSE * len(upper):  # vectors the bound cannot tell apart: score all
        near = np.flatnonzero(allowed)
        values = index.data[near] @ q
    else:
        rest = rest[~np.isin(rest, seeds)]
        near = np.concatenate([seeds, rest])
        values = np.concatenate([exact, index.data[rest] @ q])
    order = np.lexsort((near, -values))[:top]
    return near[order], values[order]


def require_faiss():
    """The faiss module, or one ReporterError line saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ReporterError("--index hnsw needs faiss: pip install 'reporter[faiss]'") from None
    return faiss


def _graph(data: np.ndarray, pool: list[Features], folder: Path | None):
    """The HNSW index (inner product) of ``data``, read from ``folder`` if this pool's was
    saved there (its name is the hash of the files' contents in order), else built and
    saved (``folder`` None: built, not saved). Without faiss, one ReporterError line. A
    damaged or unwritable file is rebuilt or skipped."""
    faiss = require_faiss()
    key = hashlib.sha256()
    key.update(f"hnsw {HNSW_LINKS} {HNSW_BUILD} {data.shape}\n".encode())
    for f in pool:
        key.update(f.sha256.encode())
    path = (folder or Path()) / f"hnsw-{key.hexdigest()[:32]}.faiss"
    graph = None
    if folder is not None and path.is_file():
        try:
            graph = faiss.read_index(str(path))
            os.utime(path)  # recently used
        except (RuntimeError, OSError) as exc:
            log.warning("search index %s not used: %s", path, str(exc).splitlines()[0])
    if graph is None or graph.ntotal != len(data) or graph.d != data.shape[1]:
        log.info(
            "building a search index of %d images (once for this collection; about 40 s "
            "per 100,000 on 2 cores)",
            len(data),
        )
        graph = faiss.IndexHNSWFlat(data.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_BUILD
        graph.add(np.ascontiguousarray(data))
        if folder is not None:
            _save(faiss, graph, path)
    graph.hnsw.efSearch = HNSW_SEARCH
    return graph


def _save(faiss, graph, path: Path) -> None:
    """Written beside, then renamed into place; only the most recently used are kept."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(graph, str(temporary))
        os.replace(temporary, path)
        saved = sorted(path.parent.glob("hnsw-*.faiss"), key=lambda p: -p.stat().st_mtime)
        for old in saved[HNSW_KEPT:]:
            old.unlink(missing_ok=True)
    except (RuntimeError, OSError) as exc:
        with contextlib.suppress(OSError):  # a cache "folder" that is a file: ENOTDIR here too
            temporary.unlink(missing_ok=True)
        log.warning("search index not saved in %s: %s", path.parent, str(exc).splitlines()[0])


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
    if index.graph is not None:  # the saved HNSW index: the top asked, and one for the query
        index.graph.hnsw.efSearch = max(HNSW_SEARCH, top + 1)
        found, at = index.graph.search(query.embedding[None].astype(np.float32), top + 1)
        near = [
            (i, v)
            for i, v in zip(at[0], found[0], strict=True)
            if i >= 0 and pool[i].path != query.path
        ][:top]
        return Ranking(query, [Hit(n, pool[i], float(v)) for n, (i, v) in enumerate(near, 1)])
    if index.method == "embedding" and len(pool) >= INDEX_FROM and index._bounds() is not None:
        near, values = _nearest(index, query, top)
        return Ranking(query, [Hit(n, pool[i], float(v)) for n, (i, v) in
                               enumerate(zip(near, values, strict=True), 1)])  # fmt: skip
    values = index.scores(query)
    candidates = np.flatnonzero(index.others(query))
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


def table(
    rankings: list[Ranking], errors: list[Features], method: str, when: str, asked: int = 0
) -> Table:
    """The rankings as the collection commands' table: a section per query. ``asked``:
    how many queries were given, when some of them could not be read (error rows)."""
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
    queries = f"{count} quer{'y' if count == 1 else 'ies'}"
    if asked > count:
        queries = f"{count} of {asked} queries answered"
    return Table(
        title=f"Search by {method}: {queries} \u00b7 {when}",
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


def by_metric(
    metric: str,
    query: Features,
    items: list[Features],
    top: int,
    jobs: int,
    cluster=None,
    max_pixels: int = 100_000_000,
    time_limit: float | None = None,
) -> Ranking:
    """``search --by ssim`` (any of RUN_METRICS): the query as the baseline of a run, every
    other readable image compared with it by run's own path (``compare.compare_all``:
    brought to the query's size, in worker processes); a file that cannot be compared
    now is left out of the ranking."""
    from .. import images
    from ..compare import Input, Job, compare_all
    from ..metrics import Reference

    loaded = images.load(query.path, max_pixels=max_pixels, value_range=images.OWN_RANGE)
    job = Job(Reference(loaded.pixels).prepare(), images.Geometry.of(loaded.pixels),
              max_pixels, strict_size=False, value_range=images.OWN_RANGE)  # fmt: skip
    pool = [f for f in items if f.error is None and f.path != query.path]
    results = compare_all(job, [Input(Path(f.path), f.file) for f in pool], jobs=jobs,
                          progress=False, cluster=cluster, time_limit=time_limit)  # fmt: skip
    scored = [
        (f, r.metrics[metric])
        for f, r in zip(pool, results, strict=True)
        # an identical copy's PSNR is inf, the best score there is; only NaN ranks nothing
        if r.metrics is not None and not np.isnan(r.metrics[metric])
    ]
    higher = score_kind(metric)[1]
    from ..catalog import METRICS

    two_sided = METRICS[metric].two_sided
    values = np.array([abs(v) if two_sided else v for _, v in scored], np.float64)
    order = np.argsort(-values if higher else values, kind="stable")[:top]
    return Ranking(
        query, [Hit(n, scored[i][0], float(scored[i][1])) for n, i in enumerate(order, 1)]
    )
