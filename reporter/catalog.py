"""What each metric is, without computing it: the catalog every other module reads.

Where it sits: below everything. ``metrics.py`` computes the values (and needs
OpenCV and numpy); the configuration, the command line, the rules, the history
and the reports need only what a metric *is*: its name, which way is better,
its best value, its definition and how many decimals people see. Keeping that
here lets ``reporter --help`` and an argument error answer without loading
OpenCV.

Adding a metric: one ``Metric`` entry below (the order is the table's column
order) and one function in ``metrics.py`` decorated with ``@computes(name)``;
importing ``metrics`` fails when the two disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["METRICS", "Metric"]


@dataclass(frozen=True)
class Metric:
    """What a metric is and how to read it; ``metrics.py`` computes it."""

    name: str
    higher_is_better: bool
    definition: str
    integer: bool = False  # a count (a Hamming distance): shown without decimals
    two_sided: bool = False  # signed; 0 is best and both signs are worse (limits on |x|)
    best: float | None = None  # the value of an image identical to the baseline (a bound)
    digits: int = 3  # decimals wherever a value is shown to people (cosine sits near 1 on
    # any image with a shared background, so it needs more than the SSIMs)
    # Below 1, this many significant digits instead (0: ``digits`` decimals): MSE in the
    # units of a float image's range (value_range 0 to 1) is 0.0001, not 0.0.
    significant: int = 0
    infinite: bool = False  # identical images give inf (a PSNR): shown as ∞ everywhere

    # The statistical rules (outliers of a run, a series' control limits) work on a
    # scale where healthy variation is near normal. A similarity or a distance is
    # bounded by its best value, and random nuisances (a gain that wobbles in two
    # channels) move it quadratically: its healthy values are skewed like a gamma
    # (chi-square) variable, whose mean + 3 SD is passed on 2 % of healthy days, not
    # 0.1 %. The cube root of the distance from the best value is near normal
    # (Wilson & Hilferty 1931); a signed or already logarithmic metric keeps its scale.

    def format(self, value: float | None, *, signed: bool = False) -> str:
        """A value as people read it, everywhere (reasons, reports, summary, e-mail):
        ``digits`` decimals, a count without any, identical images' PSNR as ∞, a
        missing value as a dash; ``signed``: a two-sided metric's value with its sign
        (which way it went), where it stands alone."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "\u2013"
        value = float(value)
        if math.isinf(value):
            return "\u221e" if value > 0 else "-\u221e"
        if self.integer:
            return str(int(round(value)))
        sign = "+" if signed and self.two_sided else ""
        if self.significant and 0 < abs(value) < 1:
            return f"{value:{sign}.{self.significant}g}"
        return f"{value + 0.0:{sign}.{self.digits}f}"

    @property
    def transformed(self) -> bool:
        return self.best is not None and not self.two_sided

    def to_rule_scale(self, value: float) -> float:
        """The value on the rules' scale (larger = less like the baseline when transformed)."""
        if not self.transformed:
            return value
        return abs(value - self.best) ** (1 / 3)

    def from_rule_scale(self, y: float) -> float:
        """The metric value at ``y`` on the rules' scale (a line of a chart)."""
        if not self.transformed:
            return y
        d = math.copysign(abs(y) ** 3, y)
        return self.best - d if self.higher_is_better else self.best + d

    def rule_floor(self, floor: float, centre: float) -> float:
        """A spread floor given in metric units, on the rules' scale near ``centre``.

        The slope of the cube root is taken at a distance of at least the floor
        itself: near an identical image's value it would be infinite, and a run of
        identical images would then never call anything an outlier.
        """
        if not self.transformed:
            return floor
        distance = max(abs(centre - self.best), floor, 1e-12)
        return floor * (1 / 3) * distance ** (-2 / 3)

    @property
    def rule_bad_side(self) -> int:
        """The sign, on the rules' scale, of "less like the baseline"; 0: both."""
        return 1 if self.transformed else self.bad_side

    @property
    def direction(self) -> str:
        """How to read it, in words."""
        if self.two_sided:
            return "nearer 0 is better"
        return "higher is better" if self.higher_is_better else "lower is better"

    def worse(self, value: float, bound: float) -> bool:
        """Whether ``value`` is past the limit ``bound`` (a value on the limit passes)."""
        if self.two_sided:
            return abs(value) > bound
        return value < bound if self.higher_is_better else value > bound

    @property
    def sign(self) -> str:
        """The comparison a limit text shows: "<", ">" or "beyond +-"."""
        if self.two_sided:
            return "beyond \u00b1"
        return "<" if self.higher_is_better else ">"

    @property
    def bad_side(self) -> int:
        """The sign of a deviation that means "less like the baseline"; 0: both signs."""
        if self.two_sided:
            return 0
        return -1 if self.higher_is_better else 1

    def robust_z(self, raw: Sequence[float], floor: float) -> tuple[Any, float] | None:
        """The outlier rule's robust z-scores of ``raw`` (finite values) against their own
        median, on the rules' scale, with the spread 1.4826 x MAD but at least ``floor``
        (metric units, converted at the median), as a numpy array; and the median in
        metric units. None when the spread is 0. (numpy is imported here, not above, so
        that ``--help`` and argument errors do not load it.)"""
        import numpy as np

        raw = np.asarray(raw, dtype=np.float64)
        values = np.abs(raw - self.best) ** (1 / 3) if self.transformed else raw
        median = _median(values)
        centre = _median(raw)
        spread = 1.4826 * _median(np.abs(values - median))
        spread = max(spread, self.rule_floor(floor, centre))
        if spread == 0:
            return None
        return (values - median) / spread, centre

    def outlying(self, z: float, beyond: float) -> bool:
        """Whether a robust z-score is past ``beyond`` on the bad side (either, if signed)."""
        bad = self.rule_bad_side
        return z * bad > beyond if bad else abs(z) > beyond


def _median(values) -> float:
    """``np.median`` of a 1-D float64 array, by the same steps (the middle value, or the
    mean of the two middle values) without its generic machinery: 3.6 us instead of 21
    at 40 or 200 values. The closer looks' guess (``compare.Looks``) takes three per
    watched metric and image: 0.69 ms an image with nine metrics, now about 0.2."""
    import numpy as np

    n = values.size
    if n == 0:
        return math.nan
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    middle = np.partition(values, (k - 1, k))
    return float((middle[k - 1] + middle[k]) / 2)


_DECLARED = (
    Metric(
        "cosine",
        best=1.0,
        higher_is_better=True,
        definition="cosine similarity of the flattened raw pixel vectors (float64); "
        "near 1 for any two images sharing a large background",
        digits=4,
    ),
    Metric(
        "ssim",
        best=1.0,
        higher_is_better=True,
        definition="SSIM, Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, "
        "K2 0.03, L from the pixel type, 5-px border cropped, mean over channels "
        "(= skimage structural_similarity with gaussian_weights=True, "
        "use_sample_covariance=False)",
    ),
    Metric(
        "ssim_coarse",
        best=1.0,
        higher_is_better=True,
        definition="SSIM after the automatic downsampling of Wang's ssim.m: f x f box "
        "filter and every f-th pixel, f = max(1, round(min(H, W) / 256))",
    ),
    Metric(
        "ms_ssim",
        best=1.0,
        higher_is_better=True,
        definition="multi-scale SSIM, Wang, Simoncelli & Bovik 2003: 5 scales (fewer for "
        "images under 176 px, weights renormalised), 2x2-mean downsampling, weights "
        "0.0448 0.2856 0.3001 0.2363 0.1333, negative terms clamped to 0, mean over channels",
    ),
    Metric(
        "ssim_64",
        best=1.0,
        higher_is_better=True,
        definition="SSIM at the level of the 2x2-mean pyramid (MS-SSIM's) whose smaller side "
        "is nearest 64 px: structure at the scale of populations, blobs and layout, where "
        "sparse images (dot plots) stop being dominated by where single dots landed",
    ),
    Metric(
        "psnr",
        higher_is_better=True,
        definition="peak signal-to-noise ratio 10 log10(L^2 / MSE) in dB; "
        "identical images give inf",
        digits=2,
        infinite=True,
    ),
    Metric(
        "psnr_local",
        higher_is_better=True,
        definition="the lowest PSNR of the cells of a grid over the picture (16 a side, more "
        "on a side over 1024 px: cells of at most 64 px; each cell's 10 log10(L^2 / MSE) in "
        "dB, cells less than a quarter compared left out); identical images give inf: a "
        "change confined to a small region (a speck of dust, a scratch, a dead patch), which "
        "whole-picture averages dilute",
        digits=2,
        infinite=True,
    ),
    Metric(
        "mse",
        best=0.0,
        higher_is_better=False,
        definition="mean squared difference over all pixels and channels, in raw pixel units",
        digits=1,
        significant=3,
    ),
    Metric(
        "ahash",
        best=0.0,
        higher_is_better=False,
        integer=True,
        definition="Hamming distance (0-64) between average hashes (cv2.img_hash, 8x8 mean "
        "threshold); sensitive to small shifts",
    ),
    Metric(
        "phash",
        best=0.0,
        higher_is_better=False,
        integer=True,
        definition="Hamming distance (0-64) between DCT perceptual hashes (cv2.img_hash); "
        "robust to scaling, JPEG and blur",
    ),
    Metric(
        "signal_change",
        higher_is_better=False,
        two_sided=True,
        definition="relative change of the image's ink (each pixel's largest channel difference "
        "from the baseline's background colour, summed): (ink_image - ink_baseline) / "
        "ink_baseline; -0.4 = 40 % less signal, +0.3 = 30 % more; sparse images (dot plots): "
        "events lost or added",
    ),
    Metric(
        "occupancy_change",
        best=0.0,
        higher_is_better=False,
        definition="L1 distance between the ink per cell of a 16x16 grid of the image and of the "
        "baseline, over the baseline's ink: sum |c_image - c_baseline| / ink_baseline; 0 = the "
        "signal lies where it lay, 2 = none of it does; sparse images (dot plots): a population "
        "that moved, spread, vanished or appeared",
    ),
    Metric(
        "embedding",
        best=1.0,
        higher_is_better=True,
        digits=4,
        definition="cosine similarity of the EfficientNet-Lite0 ImageNet embeddings (1280 "
        "average-pooled features, L2-normalised; embedding.py): what the picture shows, robust "
        "to shifts and re-encoding; empty unless the embedding is on (--embedding)",
    ),
    Metric(
        "shift",
        best=0.0,
        higher_is_better=False,
        definition="size in px of the whole-image translation against the baseline (phase "
        "correlation with a single clear peak that, compensated, makes the image match better); "
        "empty when the image did not move as a whole",
    ),
)

METRICS = MappingProxyType({m.name: m for m in _DECLARED})
"""Every metric, in the order of the table's columns."""
