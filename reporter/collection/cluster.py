"""``reporter cluster``: how do the images of a collection group?

Where it sits: after :func:`features.gather`, like ``search`` and ``duplicates``.

Features (``--features``):

- ``pixels``: each image as a 32 x 32 colour copy (3,072 numbers, 0..1), made from
  its cached thumbnail: groups by colour and layout;
- ``pca``: the same, projected on the principal components that keep 95 % of the
  variance (scikit-learn's PCA; the kept share is reported);
- ``embedding`` (default): the EfficientNet-Lite0 vectors: groups by what the
  pictures show.

k-means (scikit-learn, ``n_init=10``, a fixed seed, so a run is reproducible). With
``--k auto`` every k from 2 to ``min(12, n - 1)`` is tried and the one with the best
silhouette (the mean over images of how much nearer they are to their own cluster
than to the next) is kept; the scores are reported. k never exceeds the number of
distinct vectors (exact copies share one). Each image's distance to its
cluster's centre says how typical it is: the report shows the most typical first.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import free_name, place
from .features import Features

__all__ = ["Clustering", "FEATURES", "cluster", "copy_clusters", "vectors"]

log = logging.getLogger("reporter")

FEATURES = ("embedding", "pixels", "pca")
PIXEL_SIDE = 32
KEPT_VARIANCE = 0.95
MAX_AUTO_K = 12
SEED = 0


@dataclass
class Clustering:
    features: str
    k: int
    labels: np.ndarray  # cluster of each image, 0-based, largest cluster first
    distances: np.ndarray  # each image's distance to its cluster's centre
    silhouettes: dict[int, float] = field(default_factory=dict)  # k -> score (auto)
    kept_variance: float | None = None  # pca: the share of variance the components keep
    components: int | None = None


def _pixels(f: Features) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(f.thumbnail, np.uint8), cv2.IMREAD_COLOR)
    small = cv2.resize(img, (PIXEL_SIDE, PIXEL_SIDE), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).ravel() / 255.0


def vectors(items: list[Features], kind: str) -> tuple[np.ndarray, float | None, int | None]:
    """One row per image; for pca also the kept share of variance and the components."""
    if kind == "embedding":
        return np.stack([f.embedding for f in items]).astype(np.float64), None, None
    data = np.stack([_pixels(f) for f in items]).astype(np.float64)
    if kind == "pixels":
        return data, None, None
    from sklearn.decomposition import PCA

    pca = PCA(n_components=KEPT_VARIANCE, svd_solver="full", random_state=SEED)
    if len(items) < 3:
        return data, 1.0, data.shape[1]
    reduced = pca.fit_transform(data)
    return reduced, float(pca.explained_variance_ratio_.sum()), int(pca.n_components_)


def cluster(items: list[Features], kind: str, k: int | None) -> Clustering:
    """k-means of the images' ``kind`` vectors into ``k`` clusters (None: by silhouette)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    data, kept, components = vectors(items, kind)
    n = len(items)
    # Exact copies have one vector: k-means cannot make more clusters than there are
    # distinct vectors (scikit-learn warns, and leaves clusters empty)
    distinct = len({hash(row.tobytes()) for row in data})  # no copy of 100,000 x 1,280
    silhouettes: dict[int, float] = {}
    if k is None:
        best = None
        for candidate in range(2, min(MAX_AUTO_K, n - 1, distinct) + 1):
            labels = KMeans(candidate, n_init=10, random_state=SEED).fit_predict(data)
            if len(set(labels)) < 2:
                continue
            silhouettes[candidate] = float(silhouette_score(data, labels))
            if best is None or silhouettes[candidate] > silhouettes[best]:
                best = candidate
        k = best or 1
    elif k > distinct:
        log.info(
            "--k %d asked, but the images have only %d distinct %s vector(s): %d cluster(s)",
            k, distinct, kind, distinct,
        )  # fmt: skip
    k = max(1, min(k, n, distinct))
    model = KMeans(k, n_init=10, random_state=SEED).fit(data)
    labels = model.labels_
    distances = np.linalg.norm(data - model.cluster_centers_[labels], axis=1)
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], c))  # largest cluster first
    renumber = np.empty(k, int)
    renumber[order] = np.arange(k)
    return Clustering(kind, k, renumber[labels], distances, silhouettes, kept, components)


def copy_clusters(
    items: list[Features], result: Clustering, target: Path
) -> tuple[list[Path], list[Path]]:
    """One folder per cluster (``cluster-01`` ...) under ``target``, each image copied into
    its cluster's folder (never overwriting: ``-2``, ``-3`` ...). The copies made, and the
    images gone since they were read (each a WARNING, :func:`place`)."""
    copied, gone = [], []
    width = max(2, len(str(result.k)))
    for item, label in zip(items, result.labels, strict=True):
        folder = target / f"cluster-{label + 1:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(item.path)
        dest = free_name(folder, source.name)
        if place(source, dest, shutil.copy2, "copy"):
            copied.append(dest)
        else:
            gone.append(source)
    log.info("copied %d image(s) into %d cluster folder(s) under %s", len(copied), result.k, target)
    return copied, gone
