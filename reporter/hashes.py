"""Perceptual hashes of 8-bit images (``cv2.img_hash``) and their distance.

Where it sits: ``metrics.Reference`` hashes the baseline once per run; each
image's hash is compared with it by Hamming distance (0 = same hash, 64 = every
bit differs). Hashes are computed on the same normalised pixels as every other
metric (EXIF orientation applied, alpha on white).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "ahash",
    "distance",
    "phash",
    "to_8bit",
]


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Return ``pixels`` as uint8; 16-bit values keep their top 8 bits.

    ``>> 8`` (not ``/ 257``) maps both common 8-to-16-bit conventions
    (``v * 257`` and ``v << 8``) back to ``v`` exactly.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    raise TypeError(f"unsupported pixel type {pixels.dtype}: expected uint8 or uint16")


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    # cv2.img_hash shrinks with linear interpolation, which on a large image reads
    # only a few pixels per cell: on a sparse dot plot the hash would follow where
    # single dots landed. Area averaging first makes each cell the mean of its block.
    return cv2.resize(to_8bit(pixels), (side, side), interpolation=cv2.INTER_AREA)


def ahash(pixels: np.ndarray) -> np.ndarray:
    """Average hash: 8x8 block means thresholded at their mean (64 bits)."""
    return cv2.img_hash.averageHash(_shrink(pixels, 8))


def phash(pixels: np.ndarray) -> np.ndarray:
    """Perceptual hash: signs of the 8x8 low-frequency DCT of a 32x32 block-mean copy."""
    return cv2.img_hash.pHash(_shrink(pixels, 32))


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance between two 64-bit hashes, 0..64."""
    return int(cv2.norm(a, b, cv2.NORM_HAMMING))
