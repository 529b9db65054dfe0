"""Questions about a whole collection of images: search by example, duplicates and
clusters, on per-file features kept in a cache (features.py)."""

import logging
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_name", "place", "KEEP_ORDER", "METHODS", "RUN_METRICS", "score_kind"]

METHODS = {  # name -> (what its score is, whether higher is nearer)
    "ahash": ("distance", False),
    "phash": ("distance", False),
    "colour": ("distance", False),
    "embedding": ("similarity", True),
}

KEEP_ORDER = "the most pixels, then colour, a lossless format, the larger file, the oldest"
"""Which image of a duplicate group is kept, as ``reporter duplicates --help`` and its
report say it (``duplicates.keep_order`` is the rule)."""

# Any of run's metrics ranks too (``search --by ssim``): the query is the baseline and every
# image is compared with it as ``reporter run`` would (brought to its size, every metric).
RUN_METRICS = ("ssim", "ssim_coarse", "ms_ssim", "ssim_64", "psnr", "psnr_local", "mse",
               "cosine", "signal_change", "occupancy_change")  # fmt: skip


def score_kind(method: str) -> tuple[str, bool]:
    """What a method's score is called and whether higher is nearer."""
    if method in METHODS:
        return METHODS[method]
    from ..catalog import METRICS  # declarations only, no OpenCV

    metric = METRICS[method]
    higher = metric.higher_is_better and not metric.two_sided
    return ("similarity" if higher else "distance"), higher


def free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``stem-2.ext``, ``stem-3.ext`` ... if taken: never overwrite."""
    dest, stem, suffix = folder / name, Path(name).stem, Path(name).suffix
    n = 2
    while dest.exists():
        dest = folder / f"{stem}-{n}{suffix}"
        n += 1
    return dest


def place(source: Path, dest: Path, how: Callable, verb: str) -> bool:
    """``how(source, dest)`` (``shutil.move`` or ``shutil.copy2``), or False when
    ``source`` is gone since it was read (deleted, or moved by a sync client or another
    curator meanwhile): one WARNING, and the caller goes on with the others. Any other
    failure (the target is full, read-only, not there) raises, and stops the caller."""
    try:
        how(source, dest)
    except FileNotFoundError:
        if os.path.lexists(source):  # the source is there: the target's fault
            raise
        logging.getLogger("reporter").warning(
            "could not %s %s: it is gone since it was read (deleted or moved meanwhile); "
            "the others are placed",
            verb,
            source,
        )
        return False
    return True
