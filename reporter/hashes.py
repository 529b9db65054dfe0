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
    "both",
    "distance",
    "phash",
    "to_8bit",
    "to_8bit_by_depth",
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


def to_8bit_by_depth(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as uint8, 16-bit values by their own depth: shifted so that the highest
    value's top bit lands in bit 7. A 12-bit camera's 0-4095 are shifted by 4, a
    full-range 16-bit image by 8 (as :func:`to_8bit`): both give the same picture, where
    the top 8 bits of the 12-bit one would be 0-15, all but black. For the collection
    commands, where each image stands alone; a run's metrics never scale by the data."""
    if pixels.dtype != np.uint16:
        return to_8bit(pixels)
    shift = max(0, int(pixels.max()).bit_length() - 8)
    return (pixels >> shift).astype(np.uint8)


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    # cv2.img_hash shrinks with linear interpolation, which on a large image reads
    # only a few pixels per cell: on a sparse dot plot the hash would follow where
    # single dots landed. Area averaging first makes each cell the mean of its block.
    return cv2.resize(to_8bit(pixels), (side, side), interpolation=cv2.INTER_AREA)


def _means(sums: np.ndarray, area: int) -> np.ndarray:
    """Block sums to 8-bit means as OpenCV's integer-factor INTER_AREA rounds them:
    sum * (1.f / area) in float32, to the nearest integer (ties to even)."""
    scale = np.float32(1) / np.float32(area)
    return np.rint(sums.astype(np.float32) * scale).astype(np.uint8)


def _shrink_both(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 32 x 32 and the 8 x 8 area-averaged copies, equal to ``_shrink``'s.

    When both sides divide by 32 (1024, 2048, 640 x 480...), both come from one pass
    over the image: the sums of 32 x 32 blocks (rows in uint16, then columns), and the
    8 x 8 blocks' sums from those, exactly; OpenCV reads the whole image once per size.
    Otherwise (fractional blocks) OpenCV's INTER_AREA makes each."""
    img = to_8bit(pixels)
    h, w = img.shape[:2]
    if h % 32 or w % 32:
        return _shrink(img, 32), _shrink(img, 8)
    fy, fx = h // 32, w // 32
    c = 1 if img.ndim == 2 else img.shape[2]
    by_rows = img.reshape(32, fy, w * c).sum(axis=1, dtype=np.uint16 if fy <= 257 else np.int64)
    sums = np.add.reduceat(
        by_rows.reshape(32, w, c), np.arange(0, w, fx), axis=1, dtype=np.int64
    )  # 32 x 32 x c
    return _copies(sums, fy * fx, img.ndim == 2)


def _copies(sums: np.ndarray, area: int, grey: bool) -> tuple[np.ndarray, np.ndarray]:
    """The 32 x 32 and 8 x 8 copies from the 32 x 32 x c block sums of an 8-bit image
    whose blocks hold ``area`` pixels each."""
    sums8 = sums.reshape(8, 4, 8, 4, sums.shape[2]).sum(axis=(1, 3))
    small, small8 = _means(sums, area), _means(sums8, 16 * area)
    if grey:
        return small[:, :, 0], small8[:, :, 0]
    return small, small8


def both_from_means(
    planes: list[np.ndarray], k: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`both` of an 8-bit ``height`` x ``width`` image, from its 2^k x 2^k block
    means (``planes``: one per channel, level ``k`` of the MS-SSIM pyramid, which the
    metrics have made already); None unless each 32 x 32 block is whole cells of it.

    The same hashes, bit for bit: a cell's mean times its 4^k pixels is its exact
    integer sum (the pyramid's float32 means are exact below 2^24 / 255 pixels per
    cell), and the blocks' sums are sums of those. 0.28 ms instead of 0.53 at 1024 px,
    where :func:`both` reads the full image once more."""
    cell = 2**k
    if height % 32 or width % 32 or (height // 32) % cell or (width // 32) % cell:
        return None
    if 255 * cell * cell >= 2**24:  # the means would no longer be exact
        return None
    fy, fx = height // 32 // cell, width // 32 // cell
    means = np.stack(planes, axis=-1)  # (height / cell) x (width / cell) x c
    if means.shape[:2] != (32 * fy, 32 * fx):
        return None
    # Each cell's sum, a whole number below 2^24: exact in float32; the blocks' sums
    # (which may pass 2^24) in float64, exact.
    cells = (means * np.float32(cell * cell)).reshape(32, fy, 32, fx, len(planes))
    sums = cells.sum(axis=(1, 3), dtype=np.float64)
    small, small8 = _copies(sums, fy * fx * cell * cell, len(planes) == 1)
    return cv2.img_hash.averageHash(small8), cv2.img_hash.pHash(small)


def both(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(average hash, perceptual hash) of ``pixels``: the same as :func:`ahash` and
    :func:`phash`, for about a fifth of the time at 1024 px."""
    small, small8 = _shrink_both(pixels)
    return cv2.img_hash.averageHash(small8), cv2.img_hash.pHash(small)


def ahash(pixels: np.ndarray) -> np.ndarray:
    """Average hash: 8x8 block means thresholded at their mean (64 bits)."""
    return cv2.img_hash.averageHash(_shrink(pixels, 8))


def phash(pixels: np.ndarray) -> np.ndarray:
    """Perceptual hash: signs of the 8x8 low-frequency DCT of a 32x32 block-mean copy."""
    return cv2.img_hash.pHash(_shrink(pixels, 32))


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance between two 64-bit hashes, 0..64."""
    return int(cv2.norm(a, b, cv2.NORM_HAMMING))
