"""Thumbnails and diff maps: made once per image, encoded, shared by every output.

Where it sits: ``compare.compare_file`` calls :func:`thumbnail` and
:func:`diff_map` right after the metrics, on the same normalised pixels (EXIF
orientation applied, alpha on white), so every report shows what was measured.
The results are small JPEGs (longest side 200 px, aspect ratio kept), and an
icon of 48 px for the compact rows of images that passed. For a closer look at a
flagged image, the parent compares it once more with ``Job.picture_side`` at
``LOOK_SIDE`` (512 px): the same pixels, larger pictures.

The diff map is the SSIM map (Wang et al. 2004, the same window and constants
as the ``ssim`` metric, borders reflected instead of cropped) of copies whose
smaller side is about 64 px (the scale of the ``ssim_64`` metric), enlarged to
the thumbnail's size and shown as 1 - SSIM on a fixed colour scale
(``COLORMAP``): black where the image is locally like the baseline, bright where
it is not. At pixel scale a sparse dot plot lights up everywhere (each day's dots
land elsewhere); at 64 px only moved, spread or missing structure does. A fixed
scale keeps maps comparable from row to row.
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

from . import hashes, metrics

__all__ = [
    "baseline_for_maps",
    "COLORMAP",
    "diff_map",
    "encode",
    "fit",
    "Halvings",
    "ICON_QUALITY",
    "ICON_SIDE",
    "IGNORED_COLOUR",
    "jpeg_size",
    "JPEG_QUALITY",
    "LEGEND",
    "LOOK_SIDE",
    "MAP_SIDE",
    "small",
    "THUMB_SIDE",
    "thumbnail",
    "thumbnails",
]

THUMB_SIDE = 200
ICON_SIDE = 48  # the compact row of an image that passed: enough to recognise the plot
LOOK_SIDE = 512  # the closer look at a flagged image: axis labels become readable
JPEG_QUALITY = 75  # a 200 px preview is for recognising the image
ICON_QUALITY = 70  # 48 px icons: about 1 KB each, so 5,000 passes fit in a few MB
COLORMAP = cv2.COLORMAP_INFERNO
MAP_SIDE = metrics.LOW_SIDE  # the smaller side of the copies the SSIM map is computed on
LEGEND = (
    "SSIM map at 64-px scale (as ssim_64): black = alike (SSIM 1), "
    "bright = different (SSIM 0 or less)"
)


def fit(width: int, height: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """The size that fits in ``side`` x ``side`` with the aspect ratio kept (never enlarged)."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class Halvings:
    """An image in 8 bits and its exact 2 x 2 halvings, each made once and kept.

    Every picture of an image starts by halving it (:func:`_area`): its thumbnail
    (1024 -> 512 -> 256 px, then 200), its closer look (512) and its diff map (on to
    64). Made from one ``Halvings``, they share those steps instead of each halving
    the full image again: 0.38 ms of the diff map's 0.42 ms reduction at 1024 px.
    Any function here that takes pixels also takes a ``Halvings`` of them.
    """

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.shape = pixels.shape

    @cached_property
    def levels(self) -> list[np.ndarray]:
        """The image in 8 bits, then each halving made so far."""
        return [hashes.to_8bit(self.pixels)]

    def towards(self, size: tuple[int, int]) -> np.ndarray:
        """The last exact halving that is still at least ``size`` (width, height): halved
        while at least twice as large and even."""
        i = 0
        while True:
            out = self.levels[i]
            h, w = out.shape[:2]
            if not (w >= 2 * size[0] and h >= 2 * size[1] and h % 2 == 0 and w % 2 == 0):
                return out
            if i + 1 == len(self.levels):
                self.levels.append(cv2.resize(out, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
            i += 1


def _halvings(pixels: np.ndarray | Halvings) -> Halvings:
    return pixels if isinstance(pixels, Halvings) else Halvings(pixels)


def _area(pixels: np.ndarray | Halvings, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` area-averaged to ``size`` (width, height): halved by exact 2 x 2 means
    while they are at least twice as large and even, then one area resize, as Pillow's
    ``thumbnail`` reduces before it resamples. OpenCV's 2 x 2 means are vectorised, its
    fractional area resize is not: 1024 to 200 px took 4.4 ms in one step, 0.8 in three.
    A picture for the eye only; no metric is computed from it."""
    out = _halvings(pixels).towards(size)
    if size != (out.shape[1], out.shape[0]):
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    return out


def small(pixels: np.ndarray | Halvings, side: int = THUMB_SIDE) -> np.ndarray:
    """An 8-bit, area-averaged copy that fits in ``side`` px."""
    source = _halvings(pixels)
    h, w = source.shape[:2]
    return _area(source, fit(w, h, side))


def encode(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit 1- or 3-channel array
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), without decoding it."""
    i = 2
    while i + 9 < len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = jpeg[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(jpeg[i + 7 : i + 9], "big"), int.from_bytes(
                jpeg[i + 5 : i + 7], "big"
            )
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    raise ValueError("no JPEG frame header")


def thumbnail(
    pixels: np.ndarray | Halvings, ignored: np.ndarray | None = None, side: int = THUMB_SIDE
) -> bytes:
    """JPEG of the image, longest side ``side`` px; with ``ignored`` (the valid-pixel mask
    of masks.py), the ignored regions hatched and outlined in cyan."""
    out = small(pixels, side)
    if ignored is not None:
        out = _hatch(out, ignored)
    return encode(out)


def thumbnails(pixels: np.ndarray | Halvings, side: int = THUMB_SIDE) -> tuple[bytes, bytes]:
    """The thumbnail (longest side ``side``) and the 48-px icon, the icon made from the
    thumbnail's pixels (one full-size resize, not two)."""
    out = small(pixels, side)
    return encode(out), encode(small(out, ICON_SIDE), ICON_QUALITY)


IGNORED_COLOUR = (255, 255, 0)  # BGR cyan: no instrument plot uses it for data


def _hatch(thumb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = thumb if thumb.ndim == 3 else cv2.cvtColor(thumb, cv2.COLOR_GRAY2BGR)
    out = out.copy()
    h, w = out.shape[:2]
    shown = cv2.resize(valid.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA)
    off = shown < 128
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = off & ((xx + yy) % 6 < 2)
    out[off] = (out[off] * 0.55 + 0.45 * np.array((160, 160, 160))).astype(np.uint8)
    out[stripes] = IGNORED_COLOUR
    contours, _ = cv2.findContours(off.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, IGNORED_COLOUR, 1)
    return out


def _map_scale(pixels: np.ndarray | Halvings) -> np.ndarray:
    """An area-averaged 8-bit copy whose smaller side is about MAP_SIDE px."""
    source = _halvings(pixels)
    out = source.levels[0]
    h, w = out.shape[:2]
    scale = min(1.0, MAP_SIDE / min(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale >= 1:
        return out
    f = w // size[0]
    if (w, h) == (size[0] * f, size[1] * f) and f & (f - 1) == 0:
        return _area(source, size)  # halvings only: the same block means, vectorised
    # The SSIM map's input: one area resize, whose footprints are the exact blocks (a
    # last fractional step after halvings blurs small changes such as a new timestamp).
    return cv2.resize(out, size, interpolation=cv2.INTER_AREA)


def diff_map(
    baseline_small: np.ndarray, image: np.ndarray | Halvings, side: int = THUMB_SIDE
) -> bytes:
    """JPEG of 1 - SSIM at 64-px scale, the size of the image's thumbnail (``side``).

    ``baseline_small`` is the baseline at map scale (:func:`_map_scale`, once per
    run); ``image`` has the baseline's geometry (``images.conform``), except that
    a greyscale image may meet a colour baseline.
    """
    y = _map_scale(image)
    x = baseline_small
    if y.ndim != x.ndim:
        x = cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
    if min(y.shape[:2]) >= metrics.WINDOW:
        dissimilarity = 1 - metrics.ssim_map(x, y)
    else:  # too small for the window: the absolute difference instead
        dissimilarity = np.abs(y.astype(np.float64) - x) / 255
        if dissimilarity.ndim == 3:
            dissimilarity = dissimilarity.mean(axis=2)
    level = (np.clip(dissimilarity, 0, 1) * 255).astype(np.uint8)
    size = fit(image.shape[1], image.shape[0], side)
    coloured = cv2.applyColorMap(cv2.resize(level, size, interpolation=cv2.INTER_LINEAR), COLORMAP)
    return encode(coloured)


def baseline_for_maps(pixels: np.ndarray) -> np.ndarray:
    """What every diff map of a run compares with: the baseline at map scale."""
    return _map_scale(pixels)
