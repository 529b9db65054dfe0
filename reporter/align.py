"""The translation of an image against the baseline, and its compensation.

Where it sits: ``metrics.Reference`` owns an :class:`Aligner` (the baseline's side,
prepared once); ``compare.compare_file`` calls :meth:`Aligner.measure` for every
image (the ``shift``, ``shift_x`` and ``shift_y`` columns) and, with ``--align``,
tries :func:`compensate` before the metrics.

A shift is reported only when the **whole image** moved:

1. phase correlation (Hanning window, normalised cross-power spectrum) on greyscale
   copies of at most ``SIDE`` px has a clear peak: at least ``MIN_RESPONSE`` of the
   correlation energy in the peak's 3x3 neighbourhood;
2. a single one: no second peak (further than ``PEAK_GAP`` px from the first) with
   more than ``MAX_SECOND`` of the first's response. One moved object on a still
   background, or a dot plot whose populations moved while its axes did not, gives
   two peaks (the background's at zero, the object's at its move);
3. and the image matches the baseline better once moved back: the mean absolute
   difference of lightly blurred copies, over the pixels both cover, falls by at
   least ``MIN_GAIN``. The sub-pixel peak (Foroosh's estimate) and the whole-pixel
   peak are both tried, and the better is kept. When the whole-pixel peak is at zero
   and the sub-pixel part does not make the match better, the image is in place:
   shift 0 (on a dot plot whose populations wobbled, the axes and labels have not
   moved).

Otherwise the shift is NaN and :attr:`Shift.note` says which test failed.

Convention: a positive ``dx`` means the image's content lies to the right of the
baseline's, a positive ``dy`` lower; in baseline pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Aligner",
    "compensate",
    "factor_for",
    "MAX_SECOND",
    "MIN_GAIN",
    "MIN_RESPONSE",
    "PEAK_GAP",
    "Shift",
    "SIDE",
]

SIDE = 512  # px: the measurement runs on copies no larger than this
MIN_RESPONSE = 0.05  # share of the correlation energy in the peak (healthy dot plots: 0.1-0.3;
# clean shifts near 1; the robustness table's 1/16 downscale of a dot plot: below 0.01)
MAX_SECOND = 0.5  # a second peak above half the first: not one whole-image move
PEAK_GAP = 4  # px (at the measuring scale) between two peaks that are not the same one
MIN_GAIN = 0.1  # moving the image back must cut the difference by 10 % at least
UNMEASURED = ("shift not measured:", "no whole-image shift:")
"""How the note of an image whose shift was not measured begins (``Aligner.measure``)."""


@dataclass(frozen=True)
class Shift:
    """A measured translation, or NaN with the reason it is not one."""

    dx: float = math.nan
    dy: float = math.nan
    note: str = ""

    @property
    def found(self) -> bool:
        return not math.isnan(self.dx)

    @property
    def size(self) -> float:
        return math.hypot(self.dx, self.dy)


Levels = Callable[[int], list[np.ndarray]]  # pyramid level k -> its colour planes


def _grey(pixels: np.ndarray) -> np.ndarray:
    g = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return g.astype(np.float32)


def _levels(pixels: np.ndarray) -> Levels:
    """The metrics' pyramid of ``pixels`` (``metrics.Pair.level``), for an aligner used
    on its own: the same arrays a comparison makes, so both ways measure alike."""
    from .metrics import _halve, _planes

    made = {0: _planes(pixels)}

    def level(k: int) -> list[np.ndarray]:
        if k not in made:
            made[k] = _halve(level(k - 1))
        return made[k]

    return level


def _small(levels: Levels, factor: int) -> np.ndarray:
    """The greyscale copy the measurement runs on: the luma (OpenCV's BGR2GRAY weights,
    not rounded) of the pyramid level that divides the sides by ``factor``. The level's
    2 x 2 means are what INTER_AREA would make of the greyscale image; taking them from
    the pyramid the SSIMs build saves its conversion and resize (0.6 ms at 1024 px)."""
    planes = levels(factor.bit_length() - 1)
    if len(planes) < 3:
        return planes[0].astype(np.float32)  # a copy: the pyramid's planes stay as they are
    b, g, r = planes[:3]
    luma = cv2.addWeighted(b, 0.114, g, 0.587, 0.0, dtype=cv2.CV_32F)
    return cv2.scaleAdd(r.astype(np.float32, copy=False), 0.299, luma)


def factor_for(height: int, width: int) -> int:
    """The power-of-two reduction that brings the larger side to SIDE px or less."""
    return 2 ** max(0, math.ceil(math.log2(max(height, width) / SIDE)))


def _spectrum(grey: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The spectrum of a real image in OpenCV's packed CCS layout (float32, the image's
    shape). The whole correlation at 512 x 512 took 2.1 ms this way, against 5.8 ms
    with numpy's half spectrum and 8.3 ms with OpenCV's full complex one; since the
    normalised product is one compiled pass (``kernels.cross_power``: 0.4 ms instead of
    1.2 for ``cv2.mulSpectrums`` and the numpy steps), about 1.3."""
    return cv2.dft(grey * window)


def _peak_sum(surface: np.ndarray, x: int, y: int) -> float:
    """The 3x3 sum around (x, y), wrapping at the edges as the correlation does."""
    h, w = surface.shape
    rows = np.arange(y - 1, y + 2) % h
    cols = np.arange(x - 1, x + 2) % w
    return float(surface[np.ix_(rows, cols)].sum())


def _subpixel(c0: float, after: float, before: float) -> float:
    """The peak's offset along one axis from its two neighbours.

    A sharp peak (a whole-image move: the smaller neighbour is a side lobe) follows
    Foroosh, Zerubia & Berthod (2002): the larger neighbour n gives n / (n + c0) or
    n / (n - c0), whichever lies in [0, 1); within 0.1 px on whole-image moves, where
    OpenCV's 5x5 weighted centroid is 0.3 px off at half pixels. A broad peak (both
    neighbours over half the peak: structure that only partly agrees) breaks that
    model; its 3-point centroid is used instead.
    """
    if min(after, before) > 0.5 * c0:
        return (after - before) / (after + c0 + before)
    sign, n = (1.0, after) if after >= before else (-1.0, before)
    for d in (n / (n + c0) if n + c0 else -1.0, n / (n - c0) if n != c0 else -1.0):
        if 0 <= d < 1:
            return sign * d
    return 0.0


def _peak(surface: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """Sub-pixel position of the peak at (x, y); the surface wraps."""
    h, w = surface.shape
    c0 = float(surface[y, x])
    fx = _subpixel(c0, float(surface[y, (x + 1) % w]), float(surface[y, (x - 1) % w]))
    fy = _subpixel(c0, float(surface[(y + 1) % h, x]), float(surface[(y - 1) % h, x]))
    return x + fx, y + fy


class Aligner:
    """The baseline's side of the correlation, prepared once per run."""

    def __init__(self, baseline: np.ndarray, levels: Levels | None = None):
        """``levels``: the baseline's pyramid, when the caller has one (``_levels``)."""
        self._baseline = baseline  # its full-resolution grey is made only to refine
        h, w = baseline.shape[:2]
        self.factor = factor_for(h, w)
        self.small = _small(levels or _levels(baseline), self.factor)
        self.window = cv2.createHanningWindow(
            (self.small.shape[1], self.small.shape[0]), cv2.CV_32F
        )
        self.spectrum = _spectrum(self.small, self.window)
        self.smooth = cv2.GaussianBlur(self.small, (0, 0), 1.0)
        self._full: tuple[np.ndarray, np.ndarray] | None = None

    def _correlate(
        self, grey: np.ndarray, spectrum: np.ndarray, window: np.ndarray
    ) -> tuple[float, float, int, int, float, float]:
        """(dx, dy, ix, iy, response, second): the sub-pixel and the whole-pixel peak, its
        response and the strongest other peak's."""
        from .kernels import cross_power

        cross = cross_power(_spectrum(grey, window), spectrum)
        surface = cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
        h, w = surface.shape
        _, _, _, (x, y) = cv2.minMaxLoc(surface)
        response = _peak_sum(surface, x, y)
        rest = surface.copy()
        rows = np.arange(y - PEAK_GAP, y + PEAK_GAP + 1) % h
        cols = np.arange(x - PEAK_GAP, x + PEAK_GAP + 1) % w
        rest[np.ix_(rows, cols)] = -np.inf
        _, _, _, (x2, y2) = cv2.minMaxLoc(rest)
        second = _peak_sum(surface, x2, y2)
        cx, cy = _peak(surface, x, y)
        # The surface wraps: a peak past the middle is a negative shift.
        ix, iy = (x - w if x > w / 2 else x), (y - h if y > h / 2 else y)
        return cx - (x - ix), cy - (y - iy), ix, iy, response, second

    def measure(self, image: np.ndarray, levels: Levels | None = None) -> Shift:
        """The whole-image shift of ``image`` (the baseline's size), or NaN with why not.
        ``levels``: the image's pyramid, when the caller has one (``metrics.Pair``)."""
        small = _small(levels or _levels(image), self.factor)
        dx, dy, ix, iy, response, second = self._correlate(small, self.spectrum, self.window)
        if not response >= MIN_RESPONSE:
            return Shift(note="shift not measured: no clear correlation peak")
        if second > MAX_SECOND * response:
            return Shift(
                note="no whole-image shift: the correlation has several peaks of "
                "similar height (parts of the image moved differently, or it has too "
                "little detail to be located, as a flat field)"
            )
        smooth = cv2.GaussianBlur(small, (0, 0), 1.0)
        before = self._residual(smooth, 0, 0)
        tried = [(self._residual(smooth, dx, dy), dx, dy)]
        if (ix, iy) != (0, 0):
            tried.append((self._residual(smooth, ix, iy), float(ix), float(iy)))
        after, bx, by = min(tried)
        f = self.factor
        if after <= (1 - MIN_GAIN) * before:
            return Shift(bx * f, by * f)
        if (ix, iy) == (0, 0):  # in place: the sub-pixel part did not hold up
            return Shift(0.0, 0.0)
        return Shift(
            note=f"no whole-image shift: moving the image back by "
            f"{math.hypot(bx, by) * f:.1f} px does not make it match better"
        )

    def _residual(self, smooth: np.ndarray, dx: float, dy: float) -> float:
        """Mean absolute difference to the baseline after moving back by (dx, dy), over the
        pixels that stay inside (both copies lightly blurred). They are a rectangle: the
        mean of its slices, not under a mask (0.67 ms instead of 0.91 at 512 px)."""
        if (dx, dy) == (0, 0):
            return cv2.mean(cv2.absdiff(smooth, self.smooth))[0]
        h, w = smooth.shape[:2]
        rows, cols = _inside(h, w, dx, dy)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return math.inf
        moved = _moved(smooth, dx, dy)
        return cv2.mean(cv2.absdiff(moved[rows, cols], self.smooth[rows, cols]))[0]

    def refine(self, image: np.ndarray, near: Shift) -> Shift:
        """The shift at full resolution (for compensating it), given the measurement."""
        if self.factor == 1:
            return near
        if self._full is None:
            grey = _grey(self._baseline)
            h, w = grey.shape
            window = cv2.createHanningWindow((w, h), cv2.CV_32F)
            self._full = (_spectrum(grey, window), window)
        spectrum, window = self._full
        dx, dy, _, _, response, _ = self._correlate(_grey(image), spectrum, window)
        # The full-resolution peak must agree with the measurement it refines.
        if response < MIN_RESPONSE or math.hypot(dx - near.dx, dy - near.dy) > self.factor:
            return near
        return Shift(dx, dy)


def compensate(image: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` moved back by (dx, dy), and the pixels that are real (not filled in).

    Pixels that the move brings in from outside the image are filled with the
    nearest edge (so the SSIM windows stay quiet) and marked not valid: the
    metrics leave them out, as they do ignored regions. Whole-pixel moves are
    exact copies (no resampling blur).
    """
    h, w = image.shape[:2]
    valid = np.zeros((h, w), bool)
    valid[_inside(h, w, dx, dy)] = True
    return _moved(image, dx, dy).reshape(image.shape), valid


def _moved(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved back by (dx, dy), the edge repeated where it reads from outside."""
    h, w = image.shape[:2]
    move = np.float32([[1, 0, -dx], [0, 1, -dy]])
    whole = float(dx).is_integer() and float(dy).is_integer()
    return cv2.warpAffine(
        image,
        move,
        (w, h),
        flags=cv2.INTER_NEAREST if whole else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _inside(h: int, w: int, dx: float, dy: float) -> tuple[slice, slice]:
    """The rows and columns of an h x w image moved back by (dx, dy) that read the input
    inside it: output (u, v) reads (u + dx, v + dy). Empty when nothing does."""

    def span(n: int, d: float) -> slice:
        if d > 0:
            return slice(0, max(0, n - math.ceil(d)))
        return slice(min(n, math.ceil(-d)), n)

    return span(h, dy), span(w, dx)
