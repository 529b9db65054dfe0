"""Benchmark: the collection commands at scale (embedding, search, duplicates).

Run:  python benchmarks/collection_scale.py [--images 200] [--vectors 10000,100000]

Prints:

* images per second for computing every feature (decode, hashes, colour moments,
  thumbnail, the embedding) of --images generated 512 px photo-like
  PNGs, with one and with all cores, and the time that makes for 10,000 images
  (target: under 5 minutes on 2 cores);
* the latency of one query over 10k and 100k vectors with real embeddings' mean and
  covariance (of 1,000 crops of bundled photos): every image scored, through the
  bounds on the cosine (exact; what reporter search does from 100k), and through a
  saved faiss HNSW index (--index hnsw; approximate, with its recall), and the memory;
* ``reporter duplicates``' grouping of 10k and 100k cached pHashes and embeddings, and
  of 10k evenly spread random vectors, the worst case for the bounds (target: 100k
  cached vectors in under a minute).

It is not a test: nothing here fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import scene  # noqa: E402

from reporter.collection import search  # noqa: E402
from reporter.collection.duplicates import group  # noqa: E402
from reporter.collection.features import FeatureCache, Features, gather  # noqa: E402
from reporter.collection.search import Index, rank  # noqa: E402
from reporter.compare import Input  # noqa: E402


def make(folder: Path, n: int) -> list[Input]:
    rng = np.random.default_rng(3)
    items = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        cv2.imwrite(str(path), scene(rng, 512))
        items.append(Input(path, path.name))
    return items


def random_features(n: int, rng: np.random.Generator, *, embedding: bool) -> list[Features]:
    vectors = rng.standard_normal((n, 1280)).astype(np.float32) if embedding else None
    if vectors is not None:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hashes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    return [
        Features(
            f"f{i}",
            f"f{i}",
            sha256=f"{i}",
            width=100,
            height=100,
            phash=hashes[i].tobytes(),
            embedding=None if vectors is None else vectors[i],
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--vectors", default="10000,100000")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as name:
        items = make(Path(name), args.images)
        gather(items[:2], embedding=True, jobs=1, cache=FeatureCache(None))  # the graph cached
        rates = {}
        for jobs in sorted({1, cores}):
            t = time.perf_counter()
            gather(items, embedding=True, jobs=jobs, cache=FeatureCache(None))
            rates[jobs] = args.images / (time.perf_counter() - t)
    print(f"features of {args.images} photo-like 512 px PNGs, embedding included")
    for jobs, rate in rates.items():
        print(
            f"  {jobs} core(s): {rate:6.1f} images/s, {1000 / rate:6.1f} ms per image; "
            f"10,000 images in {10_000 / rate / 60:.1f} min"
        )
    rng = np.random.default_rng(0)
    model = embedding_model(rng)
    for n in (int(v) for v in args.vectors.split(",")):
        searches(like_real(model, n, rng), rng)
    for n in (int(v) for v in args.vectors.split(",")):
        hashes = random_features(n, rng, embedding=False)
        t = time.perf_counter()
        group(hashes, "phash", 8)
        print(f"duplicates of {n:>7,} cached pHashes: {time.perf_counter() - t:6.1f} s")
    for n in (int(v) for v in args.vectors.split(",")):
        pool = like_real(model, n, rng)
        (seconds, groups), peak = measured(lambda pool=pool: group(pool, "embedding", 0.4))
        print(
            f"duplicates of {n:>7,} cached embeddings: {seconds:6.1f} s, peak {peak:.0f} MB "
            f"({len(groups):,} groups; vectors with real embeddings' mean and covariance)"
        )
        del pool
    n = 10_000
    pool = random_features(n, rng, embedding=True)
    (seconds, _), peak = measured(lambda: group(pool, "embedding", 0.4))
    print(
        f"duplicates of {n:>7,} random unit vectors (the worst case: spread evenly over all "
        f"1280 directions, nothing to prune): {seconds:.1f} s, so about "
        f"{seconds * 100:.0f} s at 100,000"
    )


def searches(pool: list[Features], rng: np.random.Generator, queries: int = 50) -> None:
    """One query's latency over ``pool``: every image scored (numpy), through the bounds
    (what reporter search does from INDEX_FROM images: exact), and through a saved faiss
    HNSW index (``--index hnsw``: approximate), with its recall of the exact top 10."""
    n = len(pool)
    asked = [pool[i] for i in rng.choice(n, queries, replace=False)]
    search.INDEX_FROM, before = n + 1, search.INDEX_FROM
    (built, exact), peak = measured(lambda: Index("embedding", pool))
    want = {
        q.path: [h.item.path for h in rank("embedding", q, pool, 10, exact).hits] for q in asked
    }
    t = time.perf_counter()
    for q in asked:
        rank("embedding", q, pool, 10, exact)
    plain = (time.perf_counter() - t) / queries
    print(
        f"search over {n:>7,} vectors: every image scored {1000 * plain:6.1f} ms per query "
        f"(stacked once in {built:.2f} s, peak {peak:.0f} MB: {n * 1280 * 4 / 1e6:.0f} MB of "
        "vectors)"
    )
    search.INDEX_FROM = 0
    rows = [("bounds, exact", {})]
    try:
        import faiss  # noqa: F401

        rows.append(
            ("saved HNSW index, approximate", {"hnsw": True, "saved": Path(tempfile.mkdtemp())})
        )
    except ImportError:
        print("  (faiss not installed: pip install 'reporter[faiss]' to time its index)")
    for name, how in rows:
        (built, index), peak = measured(lambda how=how: ready(Index("embedding", pool, **how)))
        t = time.perf_counter()
        got = {q.path: [h.item.path for h in rank("embedding", q, pool, 10, index).hits]
               for q in asked}  # fmt: skip
        per = (time.perf_counter() - t) / queries
        same = sum(got[p] == want[p] for p in want)
        recall = np.mean([len(set(got[p]) & set(want[p])) / 10 for p in want])
        print(
            f"  {name}: {1000 * per:6.1f} ms per query ({plain / per:.1f} x faster); recall@10 "
            f"{recall:.3f}, the same top 10 for {same} of {queries} queries; prepared in "
            f"{built:.1f} s, peak {peak:.0f} MB"
        )
    search.INDEX_FROM = before


def ready(index: Index) -> Index:
    if index.graph is None:
        index._bounds()  # computed at the first query otherwise
    return index


def measured(work):
    """(seconds, result) of ``work()`` and the peak of memory allocated meanwhile, in MB
    (Python's and numpy's allocations, as tracemalloc sees them)."""
    tracemalloc.start()
    t = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return (seconds, result), peak


PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
          "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page",
          "retina", "rocket", "text", "colorwheel", "clock")  # fmt: skip


def embedding_model(rng: np.random.Generator, crops: int = 1000):
    """The mean and covariance of real embeddings: of ``crops`` random crops (15 to 70 % of
    the side, flipped half the time, brighter or darker) of the photos bundled with
    scikit-learn and scikit-image."""
    from sklearn.datasets import load_sample_images

    from reporter.embedding import shared

    photos = list(load_sample_images().images)
    try:
        import skimage.data

        for name in PHOTOS:
            img = getattr(skimage.data, name)()
            photos.append(np.dstack([img] * 3) if img.ndim == 2 else img[..., :3])
    except ImportError:  # the test extra brings scikit-image
        pass
    images = []
    for _ in range(crops):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = rng.uniform(0.15, 0.7)
        ch, cw = int(h * side), int(w * side)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[y : y + ch, x : x + cw]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        images.append(np.clip(crop * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8))
    embed = shared()
    vectors = np.vstack([embed(images[i : i + 32]) for i in range(0, len(images), 32)])
    values, axes = np.linalg.eigh(np.cov(vectors.T))
    return vectors.mean(axis=0), axes * np.sqrt(np.maximum(values, 0.0))


def like_real(model, n: int, rng: np.random.Generator):
    """``n`` unit vectors with real embeddings' mean and covariance, 5 % of them near copies
    of another (1 - cosine from 0 to about 0.5)."""
    mean, scaled_axes = model
    vectors = (mean + rng.standard_normal((n, len(mean))) @ scaled_axes.T).astype(np.float32)
    copies = rng.choice(n, n // 20, replace=False)
    sources = rng.integers(0, n, len(copies))
    noise = rng.standard_normal((len(copies), len(mean))) @ scaled_axes.T
    vectors[copies] = vectors[sources] + rng.uniform(0, 1.0, (len(copies), 1)) * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pool = [
        Features(f"f{i}", f"f{i}", sha256=f"{i}", width=100, height=100, embedding=vectors[i])
        for i in range(n)
    ]
    return pool


if __name__ == "__main__":
    main()
