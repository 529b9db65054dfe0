"""Questions about a whole collection of images: search by example (duplicates and
clusters to come), on per-file features kept in a cache (features.py)."""

__all__ = ["METHODS"]

METHODS = {  # name -> (what its score is, whether higher is nearer)
    "ahash": ("distance", False),
    "phash": ("distance", False),
    "colour": ("distance", False),
    "embedding": ("similarity", True),
}
