"""What the collection commands know of each file: hashes, colour moments, an embedding.

Where it sits: under the ``search``, ``duplicates`` and ``cluster`` commands.
:func:`gather` returns one :class:`Features` per input file, computed in worker
processes, or read from the feature cache when the file has not changed.

The cache is SQLite (``features.sqlite`` in the user's cache folder, see
``embedding.cache_folder``), one row per file keyed by its absolute path, size and
modification time: a grown folder costs only its new and changed files. Each row
holds what was computed (the hashes always, the embedding once a method asked for
it), the file's sha256 and a thumbnail. ``--no-cache`` neither reads nor writes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .. import compare, hashes, heap, images, visuals
from ..embedding import DIMENSIONS, cache_folder

__all__ = [
    "compute",
    "FeatureCache",
    "Features",
    "gather",
    "SCHEMA",
]

log = logging.getLogger("reporter")

REDUCED_SIDE = 512
"""A JPEG's features come from its decode at 1/2, 1/4 or 1/8 of its size whose shorter
side keeps at least this many pixels (``images.load``): the colour moments look at 512 x
512, the embedding at 224, the hashes at 32, the thumbnail at 200. A phone's 12-megapixel
photo decodes at 1/4 (1008 x 756)."""

SCHEMA = 7  # a cache of another schema (its own table) is not read; 5: JPEGs decoded
# reduced; 6: ``channels`` says whether the picture has colour, not how the file stores it;
# 7: ``tone``
TABLE = f"features_v{SCHEMA}"


@dataclass
class Features:
    """One file: where it is, what it holds, or why it could not be read."""

    path: str
    file: str  # as shown: relative to the folder it was found in
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    ahash: bytes | None = None  # 8 bytes
    phash: bytes | None = None  # 8 bytes
    colour: np.ndarray | None = None  # 42 colour moments (cv2.img_hash.ColorMomentHash)
    embedding: np.ndarray | None = None  # 1280 float32, L2-normalised
    thumbnail: bytes | None = None  # JPEG, 200 px
    format: str = ""  # by the header: "PNG", "JPEG", ...
    channels: int | None = None  # 1: the picture is grey (see has_colour), 3: colour
    tone: np.ndarray | None = None  # 4 float32: mean B, G, R and the largest channel's sd
    error: str | None = None
    cached: bool = field(default=False, compare=False)


def _embed(pixels: np.ndarray) -> np.ndarray:
    from ..embedding import shared  # once per process: the graph is read from the cache

    return shared()([pixels])[0].astype(np.float32)


def compute(
    path: Path,
    file: str,
    *,
    embedding: bool,
    max_pixels: int,
    max_bytes: int | None,
    sent: tuple[int, int, bytes] | None = None,
    again: bool = False,
) -> Features:
    """The features of one file; a file that cannot be read gets ``error``, never raises.
    ``sent``: its size, modification time and bytes, read by a cluster's client
    (``--send-bytes``); ``path`` then only names it. A file that changed as it was read
    was still being written: its features are computed again once it has settled, as
    ``images.load`` reads it again (``again``: that second time)."""
    found = Features(str(path), file)
    stat = None
    try:
        if sent is None:
            data, stat = images.read_with_stat(path, max_bytes)
            found.size, found.mtime_ns = stat.st_size, stat.st_mtime_ns
        else:
            found.size, found.mtime_ns, data = sent
        loaded = images.load(  # a float image by its own range: each stands alone here
            path,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
            data=data,
            value_range=images.OWN_RANGE,
            reduced_side=REDUCED_SIDE,
        )
        found.sha256 = hashlib.sha256(data).hexdigest()
        pixels = hashes.to_8bit_by_depth(loaded.pixels)  # a 12-bit camera's is not black
        found.width, found.height = loaded.full_size or (loaded.width, loaded.height)
        small = _reduced(pixels)
        found.format, found.channels = loaded.format, 3 if has_colour(small) else 1
        found.tone = tone(small)
        a, p = hashes.both(pixels)
        found.ahash, found.phash = a.tobytes(), p.tobytes()
        found.colour = colour_moments(pixels)
        found.thumbnail = visuals.thumbnail(pixels)
        if embedding:
            found.embedding = _embed(pixels)
    except images.ImageLoadError as exc:
        found.error = str(exc)
    except OSError as exc:
        found.error = f"cannot read the file: {exc.strerror or exc}"
    except Exception as exc:  # one bad file must not cost the others
        log.debug("unexpected error on %s", path, exc_info=True)
        found.error = f"unexpected {type(exc).__name__}: {exc}"
    if stat is not None and not again and images.being_written(path, stat, bool(found.error)):
        try:
            images.settle(path)
        except images.ImageLoadError as exc:
            return Features(str(path), file, error=str(exc))
        return compute(
            path, file, embedding=embedding, max_pixels=max_pixels, max_bytes=max_bytes, again=True
        )
    return found


CHROMA_TOLERANCE = 12
"""Of 255: how far a pixel's channels may differ (its largest value less its smallest)
and still be grey. A grey picture written as a colour JPEG or PNG has channels that
agree to within a step or two; a colour photograph's differ by tens over most of it."""


REDUCTION = 128


def _reduced(pixels: np.ndarray) -> np.ndarray:
    """The 8-bit picture at 128 x 128 (area averages: compression noise averages out)."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return cv2.resize(pixels, (REDUCTION, REDUCTION), interpolation=cv2.INTER_AREA)


def has_colour(small: np.ndarray) -> bool:
    """Whether the picture (its :func:`_reduced` copy, or any 8-bit one) has colour: at
    least 1 % of its pixels with channels further apart than :data:`CHROMA_TOLERANCE`.
    A grey file, and a grey picture stored as colour (a scan, a grey photo re-saved as
    JPEG), have none; ``duplicates`` keeps a colour copy before a grey one, and must not
    take the second kind for colour."""
    if small.ndim == 2 or small.shape[2] == 1:
        return False
    chroma = small.max(axis=2).astype(np.int16) - small.min(axis=2)
    return bool(np.count_nonzero(chroma > CHROMA_TOLERANCE) >= chroma.size // 100)


FLAT_SD = 1.0
"""Of 255: a picture whose every channel varies less than this (standard deviation of its
128 x 128 reduction) is flat, one tone: a blank frame, a black or white page. Its hashes
say nothing (every DCT coefficient and block is the same, so a black and a white one
hash alike), so ``duplicates`` compares flat pictures by their :func:`tone`."""


def tone(small: np.ndarray) -> np.ndarray:
    """Mean B, G, R (a grey picture's three alike) and the largest channel's standard
    deviation, of the picture's :func:`_reduced` copy, as float32."""
    planes = small.reshape(-1, 1 if small.ndim == 2 else small.shape[2]).astype(np.float32)
    mean, sd = planes.mean(axis=0), planes.std(axis=0)
    mean = np.repeat(mean, 3) if mean.size == 1 else mean[:3]
    return np.append(mean, sd.max()).astype(np.float32)


def flat(f: Features) -> bool:
    return f.tone is not None and float(f.tone[3]) < FLAT_SD


def colour_moments(pixels: np.ndarray) -> np.ndarray:
    """The colour moment hash (cv2.img_hash): 42 Hu moments of the HSV and YCrCb channels
    of a blurred 512 x 512 copy; compared by L2 distance. Grey images are made colour."""
    img = hashes.to_8bit(pixels)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    img = cv2.resize(img, (512, 512), interpolation=cv2.INTER_AREA)
    return cv2.img_hash.colorMomentHash(img).ravel().astype(np.float64)


# --- the cache ----------------------------------------------------------------------------


def _key(path: Path) -> str:
    """The cache's key of a file: its absolute path; for a name that is not UTF-8 (it
    holds surrogate escapes, which SQLite's text cannot), "bytes:" and the hex of the
    path's bytes, which no absolute path starts with."""
    text = str(path.absolute())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "bytes:" + os.fsencode(text).hex()
    return text


class FeatureCache:
    """Features by (path, size, mtime) in SQLite; None path: a cache that does nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute(
                f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT,
                    width INTEGER, height INTEGER, ahash BLOB, phash BLOB, colour BLOB,
                    embedding BLOB, thumbnail BLOB, format TEXT, channels INTEGER,
                    tone BLOB, schema INTEGER)"""
            )
        except (OSError, sqlite3.Error) as exc:  # damaged, read-only, no folder: compute all
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            log.warning("feature cache %s not used: %s", path, why)
            self._db = None
            return
        try:
            with self._db:  # an older schema's table would hold its rows for ever
                for old in range(1, SCHEMA):
                    self._db.execute(f"DROP TABLE IF EXISTS features_v{old}")
        except sqlite3.Error as exc:  # the cache is still read: its own table is there
            log.debug("feature cache %s: older tables not dropped: %s", path, exc)

    def get(self, path: Path, *, embedding: bool) -> Features | None:
        if self._db is None:
            return None
        try:
            stat = path.stat()
            row = self._db.execute(
                "SELECT size, mtime_ns, sha256, width, height, ahash, phash, colour, embedding, "
                f"thumbnail, format, channels, tone FROM {TABLE} WHERE path = ? AND schema = ?",
                (_key(path), SCHEMA),
            ).fetchone()
        except (OSError, sqlite3.Error):
            return None
        if row is None or (row[0], row[1]) != (stat.st_size, stat.st_mtime_ns):
            return None
        if embedding and row[8] is None:
            return None
        vector = np.frombuffer(row[8], np.float32) if row[8] is not None else None
        if vector is not None and vector.shape != (DIMENSIONS,):
            return None
        return Features(
            str(path),
            "",
            size=row[0],
            mtime_ns=row[1],
            sha256=row[2],
            width=row[3],
            height=row[4],
            ahash=row[5],
            phash=row[6],
            colour=np.frombuffer(row[7], np.float64),
            embedding=vector,
            thumbnail=row[9],
            format=row[10],
            channels=row[11],
            tone=np.frombuffer(row[12], np.float32) if row[12] is not None else None,
            cached=True,
        )

    def put(self, items: Iterable[Features]) -> None:
        if self._db is None:
            return
        rows = [
            (
                _key(Path(f.path)),
                f.size,
                f.mtime_ns,
                f.sha256,
                f.width,
                f.height,
                f.ahash,
                f.phash,
                f.colour.tobytes() if f.colour is not None else None,
                f.embedding.astype(np.float32).tobytes() if f.embedding is not None else None,
                f.thumbnail,
                f.format,
                f.channels,
                f.tone.astype(np.float32).tobytes() if f.tone is not None else None,
                SCHEMA,
            )
            for f in items
            if f.error is None and not f.cached
        ]
        try:
            with self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {TABLE} VALUES ({', '.join('?' * 15)})",
                    rows,
                )
        except sqlite3.Error as exc:
            log.warning("feature cache %s not updated: %s", self.path, exc)

    def forget_gone(self, paths: Iterable[Path]) -> int:
        """Drop the rows of files that are no longer there, in the folders ``paths`` (the
        files of this command) lie in and below them; how many. Without it the cache
        kept every file it ever saw: a library moved, renamed or curated with
        ``--move-duplicates`` left its old paths' rows, thumbnails and embeddings behind
        for ever. SQLite reuses the pages freed. A row of a file still there, listed
        or not (a sub-folder without ``-r``, a file left out by ``--exclude``), stays. So
        does a row whose folder is not there: a share not mounted today must not cost a
        library's features (a folder renamed or removed keeps its rows too), and a row
        of a name that is not UTF-8 (kept as its bytes' hex)."""
        if self._db is None:
            return 0
        listed = {_key(Path(p)) for p in paths}
        folders = {key.rpartition(os.sep)[0] + os.sep for key in listed if not _hex(key)}
        try:
            rows = self._db.execute(f"SELECT path FROM {TABLE}").fetchall()
            there: dict[str, bool] = {}  # folder -> whether it is there (asked once)
            gone = [
                (key,)
                for (key,) in rows
                if key not in listed
                and _under(key, folders)
                and _missing(key)
                and _there(os.path.dirname(key), there)
            ]
            with self._db:
                self._db.executemany(f"DELETE FROM {TABLE} WHERE path = ?", gone)
        except sqlite3.Error as exc:
            log.warning("feature cache %s: rows of files gone not dropped: %s", self.path, exc)
            return 0
        if gone:
            log.info("feature cache: dropped %d file(s) no longer there", len(gone))
        return len(gone)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _under(key: str, folders: set[str]) -> bool:
    """Whether the path ``key`` lies in one of ``folders`` (each ending in a separator) or
    below it: one set look-up per folder of its own path, not one test per folder."""
    end = key.find(os.sep)
    while end != -1:
        if key[: end + 1] in folders:
            return True
        end = key.find(os.sep, end + 1)
    return False


def _missing(path: str) -> bool:
    """Whether the file is not there: only "no such file" says so, not a refusal to look
    (a folder whose permissions changed keeps its rows; ``os.path.lexists`` says False
    for both)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):
        return False
    return False


def _there(folder: str, known: dict[str, bool]) -> bool:
    if folder not in known:
        known[folder] = os.path.isdir(folder)
    return known[folder]


def _hex(key: str) -> bool:
    """Whether a cache key is a name that is not UTF-8, kept as the hex of its bytes."""
    return key.startswith("bytes:")


def default_cache() -> Path:
    return cache_folder() / "features.sqlite"


def _init_worker(parent: int) -> None:
    compare.worker_started(parent)


def _died(work: tuple, why: str = "", *, limit: float | None = None) -> Features:
    error = compare.died_error(work[0], why or "while reading this file", limit)
    return Features(str(work[0]), work[1], error=error)


def _init() -> None:
    compare.quiet_opencv()
    cv2.setNumThreads(1)


def _compute(args: tuple) -> Features:
    path, file, embedding, max_pixels, max_bytes, sent = args
    return compute(
        path, file, embedding=embedding, max_pixels=max_pixels, max_bytes=max_bytes, sent=sent
    )


def gather(
    items: list[compare.Input],
    *,
    embedding: bool,
    jobs: int,
    cache: FeatureCache,
    max_pixels: int = 100_000_000,
    max_bytes: int | None = None,
    cluster=None,
    progress: bool = False,
    time_limit: float | None = None,
) -> list[Features]:
    """Every item's features, in order: from the cache where the file is unchanged, else
    computed: on ``cluster`` (Dask, ``executor.connect``) when given, else in ``jobs``
    worker processes when there are enough files to pay. ``progress``: a progress bar of
    the files computed, on a terminal (``compare.progress_bar``)."""
    out: list[Features | None] = []
    todo: list[int] = []
    for i, item in enumerate(items):
        hit = cache.get(item.path, embedding=embedding)
        out.append(replace(hit, file=item.file) if hit else None)
        if hit is None:
            todo.append(i)
    if todo:
        log.info(
            "computing the features of %d file(s) (%d from the cache)",
            len(todo),
            len(items) - len(todo),
        )
    work = [(items[i].path, items[i].file, embedding, max_pixels, max_bytes, None) for i in todo]
    with compare.progress_bar(len(work), progress) as bar:
        if cluster is not None and work:
            done = cluster.features(work, embedding=embedding, bar=bar, limit=time_limit)
        elif jobs > 1 and len(work) >= 2 * jobs:  # a worker that dies costs only its file's row
            done = compare.in_workers(
                _compute, _init_worker, (os.getpid(),), work, jobs, bar, _died, time_limit
            )
        else:
            _init()
            done = []
            with heap.kept(), compare.watched(time_limit) as call:
                for w in work:
                    try:
                        done.append(call(_compute, w))
                    except compare.Stopped:
                        done.append(_died(w, limit=time_limit))
                    bar.update()
    for i, features in zip(todo, done, strict=True):
        out[i] = features
    cache.put(done)
    cache.forget_gone(item.path for item in items)
    return [f for f in out if f is not None]
