"""Ignore regions: which baseline pixels every metric leaves out.

Where it sits: ``pipeline.run`` builds the mask once from ``--ignore X,Y,W,H``
rectangles and a ``--mask FILE`` (black = ignored), in baseline pixel
coordinates, and hands it to ``metrics.Reference``; ``visuals`` draws it on the
baseline's thumbnail. Instrument screenshots carry timestamps, run numbers and
operator names that change every run: masking them keeps reporter from crying
wolf while every other pixel is still compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ReporterError

__all__ = [
    "build",
    "MIN_VALID",
    "read_mask",
    "Region",
]

MIN_VALID = 0.01  # a mask that leaves less than 1 % of the pixels compares nothing useful


@dataclass(frozen=True)
class Region:
    """A rectangle in baseline pixel coordinates: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str) -> Region:
        parts = [p.strip() for p in str(text).split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{text!r} is not X,Y,W,H (four whole numbers)") from None
        if min(x, y) < 0 or min(w, h) <= 0:
            raise ValueError(f"{text!r}: X and Y must be 0 or more, W and H positive")
        return cls(x, y, w, h)

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


def build(
    width: int, height: int, regions: tuple[Region, ...], mask_file: Path | None
) -> np.ndarray | None:
    """The valid pixels (H x W bool, False = ignored), or None when nothing is ignored."""
    if not regions and mask_file is None:
        return None
    valid = np.ones((height, width), bool)
    for r in regions:
        if r.x >= width or r.y >= height:
            raise ReporterError(f"ignore region {r} lies outside the {width}x{height} baseline")
        valid[r.y : r.y + r.h, r.x : r.x + r.w] = False
    if mask_file is not None:
        valid &= read_mask(mask_file, width, height)
    share = valid.mean()
    if share < MIN_VALID:
        raise ReporterError(
            f"the ignore regions and mask leave {share:.1%} of the baseline's pixels: "
            "nothing left to compare"
        )
    return valid


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A black-and-white mask image of the baseline's size: black (< 50 % grey) is ignored."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ReporterError(f"mask {path}: {exc.strerror or exc}") from None
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise ReporterError(f"mask {path}: not a readable image")
    if img.shape != (height, width):
        raise ReporterError(
            f"mask {path} is {img.shape[1]}x{img.shape[0]}, the baseline {width}x{height}: "
            "a mask must have the baseline's size"
        )
    top = 65535 if img.dtype == np.uint16 else 255
    return img >= top / 2
