"""Where a sparse image carries signal: its background, its ink, a coarse grid.

Where it sits: ``metrics.Reference`` finds the baseline's background once
(:func:`background`); the ``signal_change`` and ``occupancy_change`` metrics sum each
image's ink per grid cell (:func:`ink_cells`) against the baseline's. Pure
functions: arrays in, arrays out.

Definitions (README "Metrics"):

* **background**: the baseline's most common colour (colours quantised to 32
  levels a channel for the count, then the median of the pixels in that bin), over
  the compared pixels. White paper, a black screen or a grey field alike.
* **noise**: the background's grain, 1.4826 x the median difference between
  horizontal neighbours that both lie near the background colour (within L/8),
  over sqrt(2); 0 for a clean, drawn background.
* **ink** of a pixel: its largest channel difference from the background, less a
  dead zone of 3 noise SDs, over L (0 to 1). A dot of any colour on white weighs
  alike, and ink is conserved by blur, resizing and (nearly) JPEG: they spread a
  dot's ink over more pixels without changing its sum, where a count of pixels
  past a threshold would jump with every halo.
* **signal pixel** (for the share that says whether an image is sparse): a pixel
  more than ``max(L/8, 6 noise SDs)`` from the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Background",
    "background",
    "DEAD_ZONE_K",
    "distance",
    "FLOOR",
    "GRID",
    "ink_cells",
    "NOISE_K",
    "plane",
    "QUANT_BITS",
    "share",
    "SPARSE_SHARE",
]

GRID = 16  # occupancy cells per side (8 let healthy gain wobble reach broad-CV faults)
FLOOR = 1 / 8  # of the dynamic range: a signal pixel differs from the background by more
NOISE_K = 6.0  # a noisy background raises the signal-pixel threshold to this many noise SDs
DEAD_ZONE_K = 3.0  # ink starts this many noise SDs from the background
QUANT_BITS = 5  # per channel, for finding the most common colour
SPARSE_SHARE = 0.25  # a baseline with less of its pixels carrying signal is sparse


@dataclass(frozen=True)
class Background:
    colour: tuple[float, ...]  # one value per channel, raw pixel units
    noise: float  # SD of the background, raw pixel units (0 for a drawn one)
    data_range: float

    @property
    def threshold(self) -> float:
        """How far from the background a signal pixel lies (raw units)."""
        return max(FLOOR * self.data_range, NOISE_K * self.noise)

    @property
    def dead_zone(self) -> float:
        return DEAD_ZONE_K * self.noise


def _channels(pixels: np.ndarray) -> int:
    return 1 if pixels.ndim == 2 else pixels.shape[2]


def background(
    pixels: np.ndarray, data_range: float, valid: np.ndarray | None = None
) -> Background:
    """The background colour of ``pixels`` and its noise."""
    bits = 16 if pixels.dtype == np.uint16 else 8
    shift = bits - QUANT_BITS
    flat = pixels.reshape(-1, _channels(pixels))
    if valid is not None:
        flat = flat[valid.reshape(-1)]
    q = flat >> shift  # 0..31 in the pixel type: no int64 copy of the image
    code = q[:, 0].astype(np.int32)
    for c in range(1, q.shape[1]):
        code <<= QUANT_BITS
        code |= q[:, c]
    top = int(np.bincount(code).argmax())
    colour = np.median(flat[code == top], axis=0).astype(float)
    return Background(tuple(colour), _noise(pixels, colour, data_range, valid), data_range)


def _noise(pixels: np.ndarray, colour: np.ndarray, data_range: float, valid) -> float:
    """The background's noise SD: from the differences between horizontal neighbours that
    both lie near the background colour (a smooth photograph's gradients are not noise,
    a camera's grain is), 1.4826 x median |difference| / sqrt(2), all channels pooled."""
    img = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    # |p - colour| <= L/8 in every channel, for integer p: p within [ceil(colour - L/8),
    # floor(colour + L/8)], which cv2.inRange tests in one pass over the raw pixels.
    reach = FLOOR * data_range
    low, high = np.ceil(colour - reach).clip(0, None), np.floor(colour + reach)
    near = cv2.inRange(img, tuple(low.tolist()), tuple(high.tolist())) > 0
    if valid is not None:
        near &= valid
    both = near[:, 1:] & near[:, :-1]
    if not both.any():
        return 0.0
    steps = cv2.absdiff(img[:, 1:], img[:, :-1]).reshape(img.shape[0], img.shape[1] - 1, -1)
    return 1.4826 * float(np.median(steps[both])) / np.sqrt(2)


def plane(bg: Background, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An image of ``shape`` filled with the background colour (made once per baseline)."""
    colour = np.array(bg.colour).round().astype(dtype)
    # One row first, then the rows: a copy whose innermost run is a whole row (0.1 ms at
    # 1024 px), not the three channels of one pixel (6.3 ms).
    row = np.broadcast_to(colour, shape[1:]).copy()
    return np.broadcast_to(row, shape).copy()


def distance(pixels: np.ndarray, bg_plane: np.ndarray) -> np.ndarray:
    """Each pixel's largest channel difference from the background (pixels' dtype)."""
    diff = cv2.absdiff(pixels, bg_plane)
    if diff.ndim == 2:
        return diff
    # cv2.max channel by channel: numpy's max over the channel axis took 25 ms at 1024 px.
    out, *rest = cv2.split(diff)
    for channel in rest:
        out = cv2.max(out, channel)
    return out


def share(pixels: np.ndarray, bg_plane: np.ndarray, bg: Background, valid=None) -> float:
    """The share of (valid) pixels that carry signal."""
    hit = distance(pixels, bg_plane) > bg.threshold
    if valid is not None:
        return float(hit[valid].mean()) if valid.any() else 0.0
    return float(hit.mean())


def ink_cells(
    pixels: np.ndarray, bg: Background, valid: np.ndarray | None = None, grid: int = GRID
) -> np.ndarray:
    """The ink of ``pixels`` summed per cell of a ``grid`` x ``grid`` partition (float64,
    raw units). Cells split the rows and the columns as evenly as whole pixels allow;
    pixels outside ``valid`` do not count.

    The sums are exact integers (``kernels.ink_cells``, one compiled pass): the dead zone
    is rounded to a whole pixel value, as the background colour is."""
    from .kernels import ink_cells

    h, w = pixels.shape[:2]
    colour = np.array(bg.colour).round().astype(np.int64)
    dead = round(bg.dead_zone) if bg.dead_zone > 0 else 0
    rows = np.linspace(0, h, grid + 1).round().astype(np.int64)
    cols = np.linspace(0, w, grid + 1).round().astype(np.int64)
    return ink_cells(pixels, colour, dead, valid, rows, cols)
