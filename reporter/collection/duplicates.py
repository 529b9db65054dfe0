"""``reporter duplicates``: which images of a collection are the same picture?

Where it sits: after :func:`features.gather`, like ``search``.

1. **Exact copies**: files with the same sha256, whatever their names.
2. **Near-duplicates** by one method, as a distance (lower is nearer): ``phash``
   or ``ahash`` (Hamming distance of the 64-bit hashes) or ``embedding``
   (1 - cosine of the EfficientNet-Lite0 vectors).

**The grouping rule: star around the kept image.** Images are taken in keep
order (:func:`keep_order`: the most pixels, colour, lossless, the larger file, the
oldest); each
one not yet grouped starts a group as its kept image, and every other ungrouped
image within the threshold *of that kept image* joins it. Every member is
therefore within the threshold of the image it would be replaced by, and two
unrelated images are never chained together through a third that resembles
both (single linkage would do that). An exact copy group is formed first and
counts as one image for the near-duplicate pass, through its kept file. A flat
picture (a blank frame) joins only a flat one of its tone (:func:`same_tone`).

**Default thresholds** (``THRESHOLDS``) come from ``benchmarks/duplicates.py``:
18 of scikit-image's photos, each re-encoded and resized, blurred, captioned,
cropped and shifted, against the 153 pairs of distinct photos. See the README.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import free_name, place
from .features import Features, flat
from .search import Index

__all__ = ["Group", "group", "keep_order", "move_duplicates", "THRESHOLDS"]

log = logging.getLogger("reporter")

_LEADERS = 1024  # leaders looked for at a time

THRESHOLDS = {"phash": 8.0, "ahash": 8.0, "embedding": 0.4}
"""The largest distance still called a duplicate, per method (benchmarks/duplicates.py)."""


@dataclass(frozen=True)
class Member:
    item: Features
    keep: bool
    distance: float  # to the kept image (0 for itself and for its exact copies)
    copy_of: Features | None = None  # the member it is a byte-for-byte copy of

    @property
    def exact(self) -> bool:
        """The same bytes as another member: the kept image, or a near-duplicate of it."""
        return self.copy_of is not None


@dataclass(frozen=True)
class Group:
    number: int
    members: list[Member]  # the kept image first

    @property
    def kept(self) -> Features:
        return self.members[0].item


LOSSLESS = frozenset({"PNG", "TIFF", "BMP", "PPM"})
"""Formats that store their pixels as they are (PPM: Pillow's name of every Netpbm file); a
JPEG, a WebP, a GIF's palette or a JPEG 2000 may not."""


def keep_order(items: list[Features]) -> list[Features]:
    """Which image of a group to keep first: the most pixels; then colour before grey (a
    grey copy has lost its colour); then a lossless format before a lossy one; then the
    larger file (of one picture at one size, the less compressed); then the oldest
    (earliest modification time); then by path, so the choice is reproducible.

    Not "the sharpest": the variance of the Laplacian rises with every edge an edit
    adds (a caption, a watermark, a contrast stretch, JPEG's blocks), so it kept the
    edited copy over its original."""
    return sorted(
        items,
        key=lambda f: (
            -((f.width or 0) * (f.height or 0)),
            f.channels == 1,
            f.format not in LOSSLESS,
            -f.size,
            f.mtime_ns,
            f.path,
        ),
    )


TONE_TOLERANCE = 8.0
"""Of 255: how far two flat pictures' mean channels may be apart and still be copies
(re-encoding moves a flat tone by a step or two)."""


def same_tone(a: Features, b: Features) -> bool:
    """Whether a near-duplicate pair by hash or embedding may stand: a flat picture (a
    blank frame, a black or white page: ``features.flat``) is a copy only of another
    flat one of its tone. Hashes of flat pictures are alike whatever the tone, so a black
    and a white frame were one group."""
    if flat(a) != flat(b):
        return False
    if not flat(a):
        return True
    return bool(np.abs(a.tone[:3] - b.tone[:3]).max() <= TONE_TOLERANCE)


def group(items: list[Features], method: str, threshold: float) -> list[Group]:
    """Groups of two or more images, largest first; the kept image leads each group."""
    readable = [f for f in items if f.error is None]
    by_sha: dict[str, list[Features]] = {}
    for f in readable:
        by_sha.setdefault(f.sha256, []).append(f)
    # One representative per set of identical files: the one to keep.
    heads = {sha: keep_order(same) for sha, same in by_sha.items()}
    order = keep_order([same[0] for same in heads.values()])
    index = Index(method, order)  # stacked once; lower is nearer for every method
    free = np.ones(len(order), bool)
    groups: list[list[Member]] = []
    start = 0
    while True:
        # The next leaders in keep order, each compared with every image still free (one
        # product per block); a leader taken into an earlier leader's group is passed over.
        leaders = np.flatnonzero(free[start:])[:_LEADERS] + start
        if not len(leaders):
            break
        start = leaders[-1] + 1
        near = index.within(leaders, np.flatnonzero(free), threshold)
        for i, (twins, distances) in zip(leaders, near, strict=True):
            if not free[i]:
                continue
            free[i] = False
            leader = order[i]
            members = [Member(leader, True, 0.0)]
            members += [Member(f, False, 0.0, leader) for f in heads[leader.sha256][1:]]
            for j, distance in zip(twins, distances, strict=True):
                if not free[j] or not same_tone(leader, order[j]):
                    continue
                free[j] = False
                twin = order[j]
                members.append(Member(twin, False, float(distance)))
                members += [Member(f, False, float(distance), twin) for f in heads[twin.sha256][1:]]
            if len(members) > 1:  # the kept image, then the nearest, each before its copies
                rest = sorted(
                    members[1:],
                    key=lambda m: (m.distance, (m.copy_of or m.item).path, m.exact, m.item.path),
                )
                groups.append([members[0], *rest])
    groups.sort(key=lambda g: (-len(g), g[0].item.path))
    return [Group(n, members) for n, members in enumerate(groups, 1)]


def move_duplicates(
    groups: list[Group], target: Path
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Move every image but the kept one of each group into ``target`` (made if missing),
    never overwriting: a name already there gets ``-2``, ``-3`` ... Each move is logged.
    The moves made, and the files gone since they were read (each a WARNING,
    :func:`place`); any other failure stops the moves."""
    target.mkdir(parents=True, exist_ok=True)
    moved, gone = [], []
    for g in groups:
        for m in g.members[1:]:
            source = Path(m.item.path)
            dest = free_name(target, source.name)
            if not place(source, dest, shutil.move, "move"):
                gone.append(source)
                continue
            log.info("moved %s to %s (a duplicate of %s)", source, dest, g.kept.path)
            moved.append((source, dest))
    return moved, gone
