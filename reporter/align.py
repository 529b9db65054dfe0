"""The translation of an image against the baseline, and its compensation.

Where it sits: ``compare.compare_file`` calls :func:`estimate` for every image
(the ``shift_x`` and ``shift_y`` columns) and, with ``--align``,
:func:`compensate` before the metrics. Phase correlation (``cv2.phaseCorrelate``,
Hanning window, sub-pixel peak) on greyscale copies: at most ``SIDE`` px for the
shift that is always reported, then again at full resolution when aligning.

Convention: a positive ``shift_x`` means the image's content lies to the right of
the baseline's, a positive ``shift_y`` lower; in baseline pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SIDE = 512  # px: the estimate for the table runs on copies no larger than this
MIN_RESPONSE = 0.05  # a weaker correlation peak is no measurement (a copy degraded past
# recognition: the robustness table's 1/16 downscale of a dot plot peaked at -0.01 and
# "measured" 74 px; healthy dot plots peak at 0.16 to 0.28, clean shifts near 1)


def _grey(pixels: np.ndarray) -> np.ndarray:
    g = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return g.astype(np.float32)


def _small(grey: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return grey
    h, w = grey.shape
    return cv2.resize(grey, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def factor_for(height: int, width: int) -> int:
    """The power-of-two reduction that brings the larger side to SIDE px or less."""
    return 2 ** max(0, math.ceil(math.log2(max(height, width) / SIDE)))


class Aligner:
    """The baseline's side of the correlation, prepared once per run."""

    def __init__(self, baseline: np.ndarray):
        self.grey = _grey(baseline)
        h, w = self.grey.shape
        self.factor = factor_for(h, w)
        self.small = _small(self.grey, self.factor)
        self.window = cv2.createHanningWindow(
            (self.small.shape[1], self.small.shape[0]), cv2.CV_32F
        )
        self._full_window: np.ndarray | None = None

    def estimate(self, image: np.ndarray) -> tuple[float, float]:
        """(shift_x, shift_y) of ``image`` (the baseline's size) in baseline pixels;
        NaN when there is no clear correlation peak to measure it by."""
        small = _small(_grey(image), self.factor)
        dx, dy = _correlate(self.small, small, self.window)
        return dx * self.factor, dy * self.factor

    def refine(self, image: np.ndarray) -> tuple[float, float]:
        """The shift at full resolution (for compensating it)."""
        if self.factor == 1:
            return self.estimate(image)
        if self._full_window is None:
            h, w = self.grey.shape
            self._full_window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        return _correlate(self.grey, _grey(image), self._full_window)


def _correlate(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """cv2.phaseCorrelate on copies: OpenCV 5.0 writes into its inputs (seen on the
    second one), which made repeated estimates drift and the baseline's copy rot."""
    (dx, dy), response = cv2.phaseCorrelate(a.copy(), b.copy(), window.copy())
    if not response >= MIN_RESPONSE:
        return math.nan, math.nan
    return float(dx), float(dy)


def compensate(image: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` moved back by (dx, dy), and the pixels that are real (not filled in).

    Pixels that the move brings in from outside the image are filled with the
    nearest edge (so the SSIM windows stay quiet) and marked not valid: the
    metrics leave them out, as they do ignored regions.
    """
    h, w = image.shape[:2]
    move = np.float32([[1, 0, -dx], [0, 1, -dy]])
    aligned = cv2.warpAffine(
        image, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    valid = np.ones((h, w), bool)
    # Output (u, v) reads the input at (u + dx, v + dy): valid when that lies inside.
    if dx > 0:
        valid[:, max(0, w - math.ceil(dx)) :] = False
    elif dx < 0:
        valid[:, : min(w, math.ceil(-dx))] = False
    if dy > 0:
        valid[max(0, h - math.ceil(dy)) :, :] = False
    elif dy < 0:
        valid[: min(h, math.ceil(-dy)), :] = False
    return aligned.reshape(image.shape), valid
