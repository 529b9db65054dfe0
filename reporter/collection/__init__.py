"""Questions about a whole collection of images: search by example (duplicates and
clusters to come), on per-file features kept in a cache (features.py)."""

from pathlib import Path

__all__ = ["free_name", "METHODS"]

METHODS = {  # name -> (what its score is, whether higher is nearer)
    "ahash": ("distance", False),
    "phash": ("distance", False),
    "colour": ("distance", False),
    "embedding": ("similarity", True),
}


def free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``stem-2.ext``, ``stem-3.ext`` ... if taken: never overwrite."""
    dest, stem, suffix = folder / name, Path(name).stem, Path(name).suffix
    n = 2
    while dest.exists():
        dest = folder / f"{stem}-{n}{suffix}"
        n += 1
    return dest
