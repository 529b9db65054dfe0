"""Similarity metrics between the baseline and one image of the run.

Where it sits: ``images`` gives normalised arrays of the baseline's shape and
depth; :class:`Reference` holds the baseline and every statistic derived from it
(Gaussian means and variances at each scale, norms, hashes), computed once per
run; ``Reference.compare(image)`` returns one value per registered metric; the
pipeline turns those values into table rows.

Everything here is pure: arrays in, numbers out, nothing read or written.
Adding a metric: its entry in ``catalog.py`` and one function decorated with
:func:`computes`.

Definitions (see README "Metrics"):

* SSIM follows Wang, Bovik, Sheikh & Simoncelli (2004): 11x11 Gaussian window,
  sigma 1.5, K1 = 0.01, K2 = 0.03, L from the pixel type (255 or 65535),
  population covariance, a 5-pixel border cropped from the SSIM map, mean over
  channels. It equals ``skimage.metrics.structural_similarity(baseline, image,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L,
  channel_axis=-1)``.
* ``ssim_coarse`` is the same SSIM after the automatic downsampling of Wang's
  reference ``ssim.m`` (2009): an f x f box filter and every f-th pixel, with
  f = max(1, round(min(H, W) / 256)).
* ``ssim_64`` is the same SSIM at the level of the 2x2-mean pyramid whose smaller
  side is nearest 64 px (level round(log2(min(H, W) / 64))), the scale at which
  two draws of the same sparse dot plot agree and a moved population does not.
* ``signal_change`` and ``occupancy_change`` (sparse images) weigh each pixel's
  difference from the baseline's background, its ink (``signal.py``): the
  relative change of the total ink, and the L1 distance between the ink on a
  16x16 grid over the baseline's total.
* ``psnr_local`` is the PSNR of the cell whose mean squared difference is largest,
  among the cells of a grid of 16 a side (the occupancy grid's cells), more on a
  side over 1024 px so that no cell is over 64 px: a change confined to a small
  region (a speck of dust, a scratch, a dead patch) moves it by its share of a
  cell, where the whole-picture averages dilute it by its share of the picture.
* ``shift`` is the size of the whole-image translation ``align.Aligner`` measures.
* ``ms_ssim`` is the multi-scale SSIM of Wang, Simoncelli & Bovik (2003) with the
  weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and the 2x2-mean downsampling
  of their ``msssim.m``; negative per-scale terms are clamped to 0, channels are
  averaged.

References
----------
Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment:
from error visibility to structural similarity", IEEE TIP 13(4), 600-612, 2004.
Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multi-scale structural similarity for
image quality assessment", 37th Asilomar Conference, 2003.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cached_property

import cv2
import numpy as np

from . import hashes, signal
from .align import Aligner, Shift
from .catalog import METRICS

__all__ = [
    "coarse_factor",
    "COARSE_SIDE",
    "computes",
    "cosine",
    "CROP",
    "data_range",
    "K1",
    "K2",
    "low_level",
    "LOCAL_GRID",
    "LOCAL_SIDE",
    "local_edges",
    "LOW_SIDE",
    "ms_ssim",
    "ms_ssim_scales",
    "MS_SSIM_WEIGHTS",
    "mse",
    "Pair",
    "psnr",
    "psnr_local",
    "Reference",
    "SIGMA",
    "ssim",
    "ssim_coarse",
    "ssim_map",
    "WINDOW",
]

K1 = 0.01
K2 = 0.03
SIGMA = 1.5
WINDOW = 11
CROP = WINDOW // 2  # skimage crops the filter radius from the SSIM map
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
COARSE_SIDE = 256  # ssim.m downsamples so that the smaller side is about this
LOW_SIDE = 64  # ssim_64: the pyramid level whose smaller side is nearest this
LOCAL_GRID = 16  # psnr_local: at least this many cells a side, as the occupancy grid's
LOCAL_SIDE = 64  # psnr_local: and cells of at most this many px a side (larger images)
LOCAL_SHARE = 0.25  # psnr_local: the least share of a cell's pixels compared for it to count

_DATA_RANGE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# The Gaussian's taps in the type of the data they blur: the baseline's statistics
# (OpenCV) and the image's (kernels.py) must use the very same weights.
_GAUSS = {
    cv2.CV_32F: cv2.getGaussianKernel(WINDOW, SIGMA, cv2.CV_32F),
    cv2.CV_64F: cv2.getGaussianKernel(WINDOW, SIGMA, cv2.CV_64F),
}


def data_range(dtype: np.dtype | type) -> float:
    """L of the SSIM and PSNR formulas: the range of the pixel type, never of the data."""
    try:
        return _DATA_RANGE[np.dtype(dtype)]
    except KeyError:
        raise TypeError(
            f"unsupported pixel type {np.dtype(dtype)}: expected uint8 or uint16"
        ) from None


def coarse_factor(height: int, width: int) -> int:
    """Downsampling factor of ``ssim.m``: max(1, round(min(H, W) / 256)).

    MATLAB's ``round`` rounds halves away from zero; Python's ``round`` would not.
    """
    return max(1, math.floor(min(height, width) / COARSE_SIDE + 0.5))


def low_level(height: int, width: int) -> int:
    """The 2x2-mean pyramid level whose smaller side is nearest 64 px (0 for small images)."""
    side = min(height, width)
    return max(0, round(math.log2(side / LOW_SIDE))) if side > LOW_SIDE else 0


def local_edges(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The row and column edges of ``psnr_local``'s cells: LOCAL_GRID a side (the cells of
    ``signal.ink_cells``) up to 1024 px, more on a longer side, so that no cell is over
    LOCAL_SIDE px (a 12-megapixel picture has 63 x 47); edges at the nearest whole
    pixels to equal shares. A side under LOCAL_GRID px has empty cells, which count
    nothing."""

    def edges(side: int) -> np.ndarray:
        cells = max(LOCAL_GRID, -(-side // LOCAL_SIDE))
        return np.linspace(0, side, cells + 1).round().astype(np.int64)

    return edges(height), edges(width)


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit: the smallest must still hold the 11x11 window."""
    scales, h, w = 1, height, width
    while scales < len(MS_SSIM_WEIGHTS) and min((h + 1) // 2, (w + 1) // 2) >= WINDOW:
        h, w = (h + 1) // 2, (w + 1) // 2
        scales += 1
    return scales


# --- array helpers: all keep an explicit channel axis (H x W x C) ---------------------


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]


def _float_type(dtype: np.dtype) -> type:
    """float32 for 8-bit pixels; float64 for 16-bit ones, whose variances are small
    differences of squares near 4e9 (E[x^2] - mean^2): in float32 they lost the digits
    that keep SSIM at or below 1 (two 16-bit copies scored 1.000066)."""
    return (
        np.float64 if np.dtype(dtype) in (np.dtype(np.uint16), np.dtype(np.float64)) else np.float32
    )


def _depth(a: np.ndarray) -> int:
    return cv2.CV_64F if _float_type(a.dtype) is np.float64 else cv2.CV_32F


def _blur(a: np.ndarray) -> np.ndarray:
    # The border mode never matters: the cropped SSIM map only uses pixels whose
    # whole window lies inside the image.
    g = _GAUSS[_depth(a)]
    return cv2.sepFilter2D(a, _depth(a), g, g, borderType=cv2.BORDER_REFLECT).reshape(a.shape)


def ssim_map(baseline: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The SSIM map itself (Wang et al. 2004): per pixel, mean over channels, full size.

    The same window, sigma and constants as the ``ssim`` metric, with borders
    reflected instead of cropped; its mean over the pixels the metric keeps (a
    CROP-pixel border off) is the ``ssim`` metric. The metric itself never builds
    the map: :class:`_Scale` sums it in strips, with the baseline's half computed
    once. The diff maps (visuals.py) draw it.
    """
    if baseline.shape != image.shape or baseline.dtype != image.dtype:
        raise ValueError(
            f"ssim_map: {baseline.shape} {baseline.dtype} vs {image.shape} {image.dtype}"
        )
    data_range = _DATA_RANGE[np.dtype(baseline.dtype)]
    x = _channels_last(baseline).astype(np.float64)
    y = _channels_last(image).astype(np.float64)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = _blur(x), _blur(y)
    sxx, syy, sxy = _blur(x * x) - mx * mx, _blur(y * y) - my * my, _blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(axis=2)


def _u8(valid: np.ndarray | None) -> np.ndarray | None:
    """An OpenCV mask (uint8, 255 = counted) from a boolean mask."""
    return None if valid is None else valid.astype(np.uint8) * 255


def _planes(pixels: np.ndarray) -> list[np.ndarray]:
    """The colour planes of an H x W or H x W x C array, each contiguous."""
    if pixels.ndim == 2:
        return [np.ascontiguousarray(pixels)]
    return list(cv2.split(pixels)) if pixels.shape[2] > 1 else [pixels[:, :, 0].copy()]


def _halve(planes: list[np.ndarray]) -> list[np.ndarray]:
    """msssim.m's 2 x 2-mean downsampling of each plane (``kernels.halve``)."""
    from .kernels import halve

    return [halve(p, _float_type(p.dtype)) for p in planes]


def _wang_downsample(planes: list[np.ndarray], f: int) -> list[np.ndarray]:
    """ssim.m's f x f box filter and every f-th pixel, per plane (``kernels.block_means``)."""
    from .kernels import block_means

    return [block_means(p, f, _float_type(p.dtype)) for p in planes]


class _Scale:
    """The baseline's SSIM statistics at one scale (the expensive half of SSIM).

    ``planes``: the baseline's colour planes at this scale (raw pixels at full
    resolution, floats below), kept for the products with the image's planes.
    """

    def __init__(self, planes: list[np.ndarray], c1: float, c2: float):
        from .kernels import ssim_stats

        self.planes = planes
        self.c1, self.c2 = c1, c2
        # Per plane, over the cropped map: 2 mu_x and sigma_x^2 + C2.
        self.mx2, self.sxx_c2 = [], []
        for plane in planes:
            ft = _float_type(plane.dtype)
            taps = _GAUSS[cv2.CV_64F if ft is np.float64 else cv2.CV_32F]
            stats = ssim_stats(plane, c1, c2, taps, ft)
            for out, value in zip((self.mx2, self.sxx_c2), stats, strict=True):
                out.append(value)

    def compare(
        self, y: list[np.ndarray], w: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean SSIM and mean contrast-structure term, one value per channel.

        ``y``: the image's planes at this scale. ``w``: weights of the cropped SSIM
        map, the share of each pixel that is compared (0 inside ignored regions);
        None weighs all alike. A map with no weight left is averaged unweighted.

        The sums come from one fused pass per plane (``kernels.ssim_sums``).
        """
        from .kernels import ssim_sums

        taps = _GAUSS[cv2.CV_64F if self.mx2[0].dtype == np.float64 else cv2.CV_32F].ravel()
        sums = np.array(
            [
                ssim_sums(x, y_plane, m2, sx, w, self.c1, self.c2, taps)
                for x, y_plane, m2, sx in zip(self.planes, y, self.mx2, self.sxx_c2, strict=True)
            ]
        )
        n = self.mx2[0].size if w is None else float(w.sum(dtype=np.float64))
        return sums[:, 0] / n, sums[:, 1] / n


def _check_pixels(pixels: np.ndarray, role: str) -> None:
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"{role} must be a numpy array, not {type(pixels).__name__}")
    data_range(pixels.dtype)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(f"{role} must be H x W or H x W x 3, not {pixels.shape}")
    if min(pixels.shape[:2]) < WINDOW:
        raise ValueError(
            f"{role} is {pixels.shape[1]}x{pixels.shape[0]}: smaller than the "
            f"{WINDOW}x{WINDOW} SSIM window"
        )


class Reference:
    """The baseline image and its statistics, computed once and shared by every image.

    Parameters
    ----------
    baseline : ndarray
        uint8 or uint16, H x W (greyscale) or H x W x 3 (BGR), as given by
        ``images.load``.
    valid : ndarray of bool, optional
        H x W, False where pixels are ignored (``masks.py``). Every metric then
        leaves them out: an image's pixels there are replaced by the baseline's
        (so hashes and the SSIM windows that reach into a region see no
        difference there), SSIM maps are averaged over the valid pixels only (at
        each scale, weighted by the share of valid pixels), and cosine, MSE and
        PSNR sum over the valid pixels only.
    """

    def __init__(
        self, baseline: np.ndarray, valid: np.ndarray | None = None, embedding: bool = False
    ):
        _check_pixels(baseline, "baseline")
        self.embedding = embedding  # the embedding metric is on (off: NaN, nothing loaded)
        if valid is not None and valid.shape != baseline.shape[:2]:
            raise ValueError(f"mask {valid.shape} does not match the baseline {baseline.shape}")
        self.valid = None if valid is None or valid.all() else valid.astype(bool, copy=False)
        self.pixels = baseline
        self.dtype = baseline.dtype
        self.data_range = data_range(baseline.dtype)
        self.height, self.width = baseline.shape[:2]
        self.channels = 1 if baseline.ndim == 2 else baseline.shape[2]
        self.coarse_factor = coarse_factor(self.height, self.width)
        self.ms_ssim_scales = ms_ssim_scales(self.height, self.width)
        self.low_level = low_level(self.height, self.width)
        self.c1 = (K1 * self.data_range) ** 2
        self.c2 = (K2 * self.data_range) ** 2
        self._scales: dict[int, _Scale] = {}

    def scale(self, k: int) -> _Scale:
        """SSIM statistics at MS-SSIM scale ``k`` (0 = full resolution)."""
        if k not in self._scales:
            below = _planes(self.pixels) if k == 0 else _halve(self.scale(k - 1).planes)
            self._scales[k] = _Scale(below, self.c1, self.c2)
        return self._scales[k]

    @cached_property
    def coarse(self) -> _Scale:
        return _Scale(_wang_downsample(self.scale(0).planes, self.coarse_factor), self.c1, self.c2)

    @cached_property
    def norm_sq(self) -> float:
        return cv2.norm(self.pixels, cv2.NORM_L2SQR, mask=_u8(self.valid))

    @cached_property
    def ahash(self) -> np.ndarray:
        return hashes.ahash(self.pixels)

    @cached_property
    def phash(self) -> np.ndarray:
        return hashes.phash(self.pixels)

    @cached_property
    def background(self) -> signal.Background:
        return signal.background(self.pixels, self.data_range, self.valid)

    def ink_cells_of(self, pixels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """The ink of ``pixels`` against this baseline's background, per grid cell."""
        return signal.ink_cells(pixels, self.background, valid)

    @cached_property
    def ink_cells(self) -> np.ndarray:
        return self.ink_cells_of(self.pixels, self.valid)

    @cached_property
    def signal_share(self) -> float:
        """The share of the baseline's compared pixels that carry signal."""
        return signal.share(self.pixels, self.background, self.valid)

    @property
    def sparse(self) -> bool:
        """Whether the baseline is a sparse image (a dot plot, a particle image)."""
        return self.signal_share < signal.SPARSE_SHARE

    @cached_property
    def aligner(self) -> Aligner:
        """The baseline's side of the shift measurement (with ignored regions filled as
        every image's are, so a changing timestamp cannot move the peak), on the pyramid
        the SSIMs use, as each image's shift is."""
        return Aligner(self.pixels, lambda k: self.scale(k).planes)

    @cached_property
    def grey(self) -> Reference:
        """This baseline in greyscale, for greyscale images of the run."""
        if self.channels == 1:
            return self
        return Reference(cv2.cvtColor(self.pixels, cv2.COLOR_BGR2GRAY), self.valid, self.embedding)

    # Statistics of a few bytes that take a while (the background's colour, noise and
    # signal share, the hashes: 19-31 ms at 1024 px within a run): computed once by the
    # parent before its workers start, and sent with the pixels.
    # Not the ink per cell: it takes a compiled kernel (0.6 ms), which the parent of
    # workers never loads (numba's import alone is 0.45 s).
    SMALL = ("background", "signal_share", "ahash", "phash")

    def __getstate__(self) -> dict:
        # A worker process gets the pixels and prepares its own statistics: sending
        # them (about 20 float32 copies of the image) costs more than computing them.
        # The small ones already computed travel with the pixels.
        return {
            "pixels": self._shared("pixels"),
            "valid": self._shared("valid"),
            "prepared": bool(self._scales),
            "embedding": self.embedding,
            "small": {name: self.__dict__[name] for name in self.SMALL if name in self.__dict__},
        }

    def _shared(self, name: str):
        """This baseline's ``pixels`` or ``valid`` as a worker process gets them as it
        starts: mapped, not copied through its start-up pipe (``pool.Shared``)."""
        array = getattr(self, name)
        if array is None:
            return None
        shared = self.__dict__.setdefault(f"_shared_{name}", None)
        if shared is None or shared.array is not array:
            from .pool import Shared

            shared = self.__dict__[f"_shared_{name}"] = Shared(array)
        return shared

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["pixels"], state["valid"], state["embedding"])
        self.__dict__.update(state.get("small", {}))  # the cached_property values
        if state["prepared"]:
            self.prepare()

    def prepare_small(self) -> Reference:
        """Compute the statistics in SMALL: what a parent whose workers compare computes
        while they start, so that no worker spends the time again."""
        for name in self.SMALL:
            getattr(self, name)
        return self

    def prepare(self) -> Reference:
        """Compute every statistic now, once, for all the images to come."""
        for k in range(max(self.ms_ssim_scales, self.low_level + 1)):
            self.scale(k)
        _ = self.coarse, self.norm_sq, self.ahash, self.phash, self.ink_cells, self.aligner
        if self.embedding:
            _ = self.vector
        return self

    @cached_property
    def vector(self) -> np.ndarray:
        """The baseline's embedding (embedding.py), for the ``embedding`` metric."""
        from .embedding import shared

        return shared()([self.pixels])[0]

    def compare(
        self,
        image: np.ndarray,
        names: Iterable[str] | None = None,
        valid: np.ndarray | None = None,
        shift: Shift | None = None,
    ) -> dict[str, float]:
        """Every registered metric (or those named) of ``image`` against this baseline.

        ``image`` must already have the baseline's shape and pixel type
        (``images.conform`` does that). ``valid``: pixels of this image that can
        be compared (False where an alignment shifted in pixels from outside),
        on top of the baseline's own mask. ``shift``: the image's measured shift,
        when it was measured before an alignment; else it is measured here.
        """
        return self.pair(image, valid, shift).values(names)

    def pair(
        self, image: np.ndarray, valid: np.ndarray | None = None, shift: Shift | None = None
    ) -> Pair:
        """``image`` against this baseline, its metrics computed as they are asked for
        (``Pair.values``); what :meth:`compare` makes. The shift and the metrics of one
        pair share its pyramid."""
        _check_pixels(image, "image")
        if image.shape != self.pixels.shape or image.dtype != self.dtype:
            raise ValueError(
                f"image {image.shape} {image.dtype} does not match the baseline "
                f"{self.pixels.shape} {self.dtype}"
            )
        image, valid = self.masked(image, valid)
        return Pair(self, image, valid, shift)

    def masked(
        self, image: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``image`` with the baseline's pixels wherever nothing is compared (this
        baseline's ignored regions and ``valid``'s False pixels), and the combined mask
        (None when every pixel counts). What the metrics and the diff map see."""
        if valid is not None and self.valid is not None:
            valid = valid & self.valid
        elif valid is None:
            valid = self.valid
        if valid is None or valid.all():
            return image, None
        if not valid.any():
            raise ValueError("every pixel is ignored: nothing left to compare")
        # The ignored pixels take the baseline's values: no difference can come from them.
        return np.where(valid if image.ndim == 2 else valid[:, :, None], image, self.pixels), valid


class Pair:
    """One image against the reference; caches what several metrics share."""

    def __init__(
        self,
        ref: Reference,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        shift: Shift | None = None,
    ):
        self.ref = ref
        self.image = image
        self.valid = valid  # None: every pixel counts
        self._shift = shift
        self._y: dict[int, list[np.ndarray]] = {}
        self._w: dict[int, np.ndarray] = {}
        self._scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def values(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Every registered metric (or those named)."""
        return {name: _COMPUTE[name](self) for name in (METRICS if names is None else names)}

    def weights(self, k: int) -> np.ndarray | None:
        """The share of valid pixels at pyramid level ``k``, uncropped (H x W), or None."""
        if self.valid is None:
            return None
        if k not in self._w:
            if k == 0:
                self._w[k] = self.valid.astype(np.float32)
            else:
                self._w[k] = _halve([self.weights(k - 1)])[0]
        return self._w[k]

    def cropped(self, w: np.ndarray | None) -> np.ndarray | None:
        """Weights of the cropped SSIM map; None when none are left (then all count alike)."""
        if w is None:
            return None
        c = slice(CROP, -CROP)
        out = np.ascontiguousarray(w[c, c])
        return out if out.sum() >= 1 else None

    @property
    def compared(self) -> int:
        """How many pixel positions are compared."""
        if self.valid is None:
            return self.image.shape[0] * self.image.shape[1]
        return int(np.count_nonzero(self.valid))

    def level(self, k: int) -> list[np.ndarray]:
        """The image's planes at pyramid level ``k`` (level 0: the raw pixels)."""
        if k not in self._y:
            self._y[k] = _planes(self.image) if k == 0 else _halve(self.level(k - 1))
        return self._y[k]

    def scores(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean SSIM, mean cs) per channel at MS-SSIM scale ``k``."""
        if k not in self._scores:
            if self.identical:
                # Exactly 1, not 1 - float32 rounding: an unchanged image must read as one.
                ones = np.ones(self.ref.channels)
                self._scores[k] = (ones, ones)
            else:
                self._scores[k] = self.ref.scale(k).compare(
                    self.level(k), self.cropped(self.weights(k))
                )
        return self._scores[k]

    @property
    def identical(self) -> bool:
        return self.diff_sq == 0

    @cached_property
    def diff_sq(self) -> float:
        """The squared distance between the image and the baseline: an exact integer sum."""
        return float(self.diff_cells.sum())

    @cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The row and column edges of ``psnr_local``'s cells (``local_edges``)."""
        return local_edges(*self.image.shape[:2])

    @cached_property
    def diff_cells(self) -> np.ndarray:
        """The squared differences summed per cell of the local grid (``local_edges``),
        over every channel; 0 wherever nothing is compared (``Reference.masked``)."""
        from .kernels import diff_cells

        rows, cols = self.edges
        return diff_cells(self.ref.pixels, self.image, rows, cols)

    @cached_property
    def cell_mse(self) -> np.ndarray:
        """The mean squared difference of each cell (``local_edges``), NaN for a cell that
        does not count: one less than LOCAL_SHARE compared (every cell with a compared
        pixel counts when none is that full), or an empty one."""
        rows, cols = self.edges
        area = np.outer(np.diff(rows), np.diff(cols)).astype(np.float64)
        if self.valid is None:
            counted = area
        else:
            by_rows = np.add.reduceat(self.valid, rows[:-1], axis=0, dtype=np.int64)
            counted = np.add.reduceat(by_rows, cols[:-1], axis=1).astype(np.float64)
        keep = (area > 0) & (counted >= LOCAL_SHARE * area)
        if not keep.any():
            keep = (area > 0) & (counted > 0)
        out = np.full(area.shape, np.nan)
        out[keep] = self.diff_cells[keep] / (counted[keep] * self.ref.channels)
        return out

    def worst_cell(self) -> tuple[int, int, int, int] | None:
        """Where ``psnr_local`` was measured: the cell of the largest mean squared
        difference as (x0, y0, x1, y1), pixels x0 to x1 - 1 of the baseline's; None when
        no cell differs."""
        mse = self.cell_mse
        if not np.nanmax(mse) > 0:
            return None
        i, j = np.unravel_index(np.nanargmax(mse), mse.shape)
        rows, cols = self.edges
        return int(cols[j]), int(rows[i]), int(cols[j + 1]), int(rows[i + 1])

    @cached_property
    def hash_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """The image's (average hash, perceptual hash): from the deepest level of the
        pyramid the SSIM metrics made (``hashes.both_from_means``) when it holds whole
        hash blocks of an 8-bit image, else from the pixels."""
        if self.image.dtype == np.uint8:
            h, w = self.image.shape[:2]
            for k in sorted(self._y, reverse=True):
                if k > 0:
                    found = hashes.both_from_means(self._y[k], k, h, w)
                    if found is not None:
                        return found
        return hashes.both(self.image)

    @cached_property
    def shift(self) -> Shift:
        if self._shift is not None:
            return self._shift
        return self.ref.aligner.measure(self.image, self.level)

    @cached_property
    def ink_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(image, baseline) ink per grid cell, over the same compared pixels."""
        ref = self.ref
        mine = ref.ink_cells_of(self.image, self.valid)
        if self.valid is None or self.valid is ref.valid:
            return mine, ref.ink_cells
        return mine, ref.ink_cells_of(ref.pixels, self.valid)

    @property
    def ink_floor(self) -> float:
        """The least baseline ink a relative change is taken against (raw units): 0.1 % of
        the compared pixels at full ink, so a blank baseline does not divide by zero."""
        return max(1.0, 0.001 * self.compared) * self.ref.data_range


# --- the registry ----------------------------------------------------------------------


_COMPUTE: dict[str, Callable[[Pair], float]] = {}


def computes(name: str):
    """Register ``func(pair) -> float`` as the computation of ``catalog.METRICS[name]``."""

    def register(func: Callable[[Pair], float]) -> Callable[[Pair], float]:
        if name not in METRICS:
            raise ValueError(f"metric {name!r} is not declared in catalog.py")
        if name in _COMPUTE:
            raise ValueError(f"metric {name!r} is computed twice")
        _COMPUTE[name] = func
        return func

    return register


@computes("cosine")
def _cosine(p: Pair) -> float:
    nx, ny = p.ref.norm_sq, cv2.norm(p.image, cv2.NORM_L2SQR, mask=_u8(p.ref.valid))
    if p.valid is not None and p.ref.valid is not p.valid:  # this image's own mask
        nx = cv2.norm(p.ref.pixels, cv2.NORM_L2SQR, mask=_u8(p.valid))
        ny = cv2.norm(p.image, cv2.NORM_L2SQR, mask=_u8(p.valid))
    if nx == 0 or ny == 0:  # an all-black image has no direction
        return 1.0 if nx == ny else 0.0
    # x.y from three exact integer sums: |x|^2 + |y|^2 - |x - y|^2 = 2 x.y
    return min(1.0, (nx + ny - p.diff_sq) / 2 / math.sqrt(nx * ny))


@computes("ssim")
def _ssim(p: Pair) -> float:
    return float(p.scores(0)[0].mean())


@computes("ssim_coarse")
def _ssim_coarse(p: Pair) -> float:
    if p.ref.coarse_factor == 1 or p.identical:
        return float(p.scores(0)[0].mean())
    y = _wang_downsample(p.level(0), p.ref.coarse_factor)
    w = p.weights(0)
    w = None if w is None else p.cropped(_wang_downsample([w], p.ref.coarse_factor)[0])
    return float(p.ref.coarse.compare(y, w)[0].mean())


@computes("ms_ssim")
def _ms_ssim(p: Pair) -> float:
    n = p.ref.ms_ssim_scales
    weights = np.array(MS_SSIM_WEIGHTS[:n]) / sum(MS_SSIM_WEIGHTS[:n])
    value = np.ones(p.ref.channels)
    for k in range(n):
        s, cs = p.scores(k)
        term = s if k == n - 1 else cs
        value *= np.maximum(term, 0.0) ** weights[k]
    return float(value.mean())


@computes("ssim_64")
def _ssim_64(p: Pair) -> float:
    return float(p.scores(p.ref.low_level)[0].mean())


@computes("psnr")
def _psnr(p: Pair) -> float:
    mse = _mse(p)
    return math.inf if mse == 0 else 10 * math.log10(p.ref.data_range**2 / mse)


@computes("psnr_local")
def _psnr_local(p: Pair) -> float:
    mse = float(np.nanmax(p.cell_mse))
    return math.inf if mse == 0 else 10 * math.log10(p.ref.data_range**2 / mse)


@computes("mse")
def _mse(p: Pair) -> float:
    channels = 1 if p.image.ndim == 2 else p.image.shape[2]
    return p.diff_sq / (p.compared * channels)  # ignored pixels add 0 to diff_sq


@computes("ahash")
def _ahash(p: Pair) -> float:
    return hashes.distance(p.ref.ahash, p.hash_pair[0])


@computes("phash")
def _phash(p: Pair) -> float:
    return hashes.distance(p.ref.phash, p.hash_pair[1])


@computes("signal_change")
def _signal_change(p: Pair) -> float:
    mine, base = p.ink_cells
    return float((mine.sum() - base.sum()) / max(base.sum(), p.ink_floor))


@computes("occupancy_change")
def _occupancy_change(p: Pair) -> float:
    mine, base = p.ink_cells
    return float(np.abs(mine - base).sum() / max(base.sum(), p.ink_floor))


@computes("embedding")
def _embedding(p: Pair) -> float:
    if not p.ref.embedding:
        return math.nan
    from .embedding import shared

    return float(np.dot(shared()([p.image])[0], p.ref.vector))


@computes("shift")
def _shift(p: Pair) -> float:
    return p.shift.size


if set(_COMPUTE) != set(METRICS):  # pragma: no cover - a developer's slip, caught on import
    raise ImportError(f"metrics without a computation: {sorted(set(METRICS) - set(_COMPUTE))}")


# --- pure functions for callers with two arrays ---------------------------------------


def _one(name: str, baseline: np.ndarray, image: np.ndarray) -> float:
    return Reference(baseline).compare(image, [name])[name]


def cosine(baseline: np.ndarray, image: np.ndarray) -> float:
    """Cosine similarity of the two flattened pixel vectors."""
    return _one("cosine", baseline, image)


def ssim(baseline: np.ndarray, image: np.ndarray) -> float:
    """SSIM (Wang et al. 2004), mean over channels; see the module docstring."""
    return _one("ssim", baseline, image)


def ssim_coarse(baseline: np.ndarray, image: np.ndarray) -> float:
    """SSIM after ssim.m's automatic downsampling."""
    return _one("ssim_coarse", baseline, image)


def ms_ssim(baseline: np.ndarray, image: np.ndarray) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003)."""
    return _one("ms_ssim", baseline, image)


def psnr(baseline: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB; ``math.inf`` for identical images."""
    return _one("psnr", baseline, image)


def psnr_local(baseline: np.ndarray, image: np.ndarray) -> float:
    """The lowest PSNR of the cells (``local_edges``), in dB; ``math.inf`` for identical images."""
    return _one("psnr_local", baseline, image)


def mse(baseline: np.ndarray, image: np.ndarray) -> float:
    """Mean squared error in raw pixel units."""
    return _one("mse", baseline, image)
