"""Benchmark: the collection commands at scale (embedding, search, duplicates).

Run:  python benchmarks/collection_scale.py [--images 200] [--vectors 10000,100000]

Prints:

* images per second for computing every feature (decode, hashes, colour moments,
  thumbnail, sharpness, the embedding) of --images generated 512 px photo-like
  PNGs, with one and with all cores, and the time that makes for 10,000 images
  (target: under 5 minutes on 2 cores);
* the latency of one query (exact cosine search with numpy) over 10k and 100k
  random unit vectors, and the memory those vectors take;
* ``reporter duplicates``' grouping of 10k and 100k cached pHashes and of 10k
  embeddings (target: 100k cached vectors in under a minute).

It is not a test: nothing here fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import scene  # noqa: E402

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
    for n in (int(v) for v in args.vectors.split(",")):
        pool = random_features(n, rng, embedding=True)
        query = pool[0]
        t = time.perf_counter()
        index = Index("embedding", pool)  # once per collection, as reporter search does
        built = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(5):
            rank("embedding", query, pool, 10, index)
        per_query = (time.perf_counter() - t) / 5
        memory = n * 1280 * 4 / 1e6
        print(
            f"search over {n:>7,} vectors: {1000 * per_query:8.1f} ms per query "
            f"(exact, numpy; stacked once in {built:.2f} s; the vectors take {memory:.0f} MB)"
        )
        del pool
    for n in (int(v) for v in args.vectors.split(",")):
        hashes = random_features(n, rng, embedding=False)
        t = time.perf_counter()
        group(hashes, "phash", 8)
        print(f"duplicates of {n:>7,} cached pHashes: {time.perf_counter() - t:6.1f} s")
    vectors = random_features(10_000, rng, embedding=True)
    t = time.perf_counter()
    group(vectors, "embedding", 0.4)
    print(f"duplicates of  10,000 cached embeddings: {time.perf_counter() - t:6.1f} s")


if __name__ == "__main__":
    main()
