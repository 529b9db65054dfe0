"""Any image file -> a normalised array, or an :class:`ImageLoadError` that says why.

Where it sits: the first step of the pipeline. :func:`load` reads one file into
a uint8 or uint16 array, H x W (greyscale) or H x W x 3 (BGR), with EXIF
orientation applied and alpha composited on white; :func:`conform` brings it to
the baseline's depth, channels and size and says what it changed.

Pillow reads only the header (size for the pixel limit, EXIF orientation, the
number of frames or pages); OpenCV decodes, because it keeps 16-bit colour that
Pillow would truncate. GIF is the exception: Pillow decodes it, because OpenCV
reads GIF only from 4.11 on, and a GIF is 8-bit anyway. A file of several frames
(an animated GIF, PNG or WebP) or pages (a multi-page TIFF) is compared by its
first, and its row's notes say so.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import re
import struct
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from . import native
from .names import not_a_file
from .pool import GREY_MODES

__all__ = [
    "conform",
    "widen",
    "Geometry",
    "ImageLoadError",
    "load",
    "LoadedImage",
    "OWN_RANGE",
    "to_16_bits",
]

log = logging.getLogger("reporter")

# EXIF orientation -> the operation that turns the stored pixels upright
# (the same table as Pillow's ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class ImageLoadError(Exception):
    """A file that cannot be compared; the message says why, in one line."""


@dataclass(frozen=True)
class LoadedImage:
    """Pixels ready to compare, and what loading did to them."""

    pixels: np.ndarray
    notes: tuple[str, ...] = ()
    format: str = ""  # the file's format by its header ("PNG", "JPEG"), else its extension
    mapped_from: str = ""  # the decoded pixel type ("float32") when brought to 16 bits
    # (width, height) of the file's picture, upright, when it was decoded reduced
    # (``load``'s ``reduced_side``); None when the pixels are at the file's own size.
    full_size: tuple[int, int] | None = None
    # the significant bits of a 16-bit file whose values are on the 16-bit scale already:
    # a TIFF packed at 10, 12 or 14 bits per sample (BitsPerSample), which OpenCV returns
    # as v << 16 - b, or a PNG whose sBIT chunk gives fewer than 16 (the PNG standard
    # has such values scaled to the full range); ``widen`` leaves it as it is
    scaled_bits: int = 0

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]


def _header(data: bytes) -> tuple[str, int, int, int, bool, int] | None:
    """(format, width, height, EXIF orientation, grey, frames) from the header alone.

    None when Pillow does not know the header (some TIFF variants): OpenCV may.
    """
    try:
        with _pillow_open(data) as im:
            return (
                im.format or "?",
                im.width,
                im.height,
                _orientation(im),
                _grey(im, data),
                _frames(im),  # last: it leaves the first frame
            )
    except UnidentifiedImageError:
        return None
    except ValueError as exc:
        # Pillow refuses a PNG whose compressed text (an XMP packet, an instrument's XML)
        # inflates past 1 MB, before the pixels: its IHDR still says all we need
        png = _png_ihdr(data)
        if png is None:
            raise ImageLoadError(f"corrupt image header: {exc}") from None
        log.debug("Pillow could not read the PNG's chunks (%s): its size is read from IHDR", exc)
        return png
    except (OSError, SyntaxError, RuntimeError) as exc:  # RuntimeError: libavif's, libheif's
        raise ImageLoadError(f"corrupt image header: {exc}") from None


def _png_significant_bits(data: bytes) -> int:
    """The significant bits that a 16-bit PNG's sBIT chunk gives its colour samples (the
    most of them), when fewer than 16; else 0. The chunk comes before the pixel data; its
    one to four bytes follow IHDR's colour type (grey; grey, alpha; red, green, blue;
    those and alpha), and an alpha byte is not counted (alpha is composited away)."""
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind in (b"IDAT", b"IEND"):
            return 0
        if kind == b"sBIT":
            given = data[at + 8 : at + 8 + min(length, 4)]
            colour = given[:3] if len(given) > 2 else given[:1]
            bits = max(colour, default=0)
            return bits if 0 < bits < 16 else 0
        at += 12 + length
    return 0


def _png_ihdr(data: bytes) -> tuple[str, int, int, int, bool, int] | None:
    """A PNG's header read from its IHDR chunk alone (orientation 1, one frame)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or len(data) < 29:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return "PNG", width, height, 1, data[25] in (0, 4), 1


MAX_SCANS = 500
"""A JPEG of more scans is refused before decoding (libjpeg-turbo's own fuzz targets
set ``TJPARAM_SCANLIMIT`` to 500; NVIDIA's nvImageCodec refuses past 256). Each scan is
decoded over every block of its component, so decoding time is scans x pixels, not the
file's size: a 1.6 MB progressive JPEG of 2048 x 2048 px with 100,000 scans took 30 s
in OpenCV, and one of 100 megapixels within ``max_file_mb`` would take days. Encoders
write 1 (baseline) or about 10 (libjpeg's progressive script)."""

MAX_SEGMENTS = 10_000
"""A JPEG of more marker segments is refused: the walk below costs about 0.6 us a
segment in Python (16 MB of empty 4-byte segments took 2.4 s, where libjpeg walks them in
0.05 s), and stopping short of the end would let scans hide behind them. The 500 JPEGs
of this machine have at most 24; 500 scans with their tables need about 1,500."""

_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""A marker's start: 0xFF then a code that is not stuffing (00), a restart (D0-D7) or
fill (FF); inside entropy-coded data a 0xFF is always one of those."""


_SEQUENTIAL = frozenset({0xC0, 0xC1, 0xC9})  # SOF0, SOF1, SOF9: DCT, one pass per scan


def _jpeg_scans(data: bytes, limit: int = MAX_SCANS) -> tuple[int, bool]:
    """The scans (SOS markers) of a JPEG's first image, counted up to ``limit`` + 1, and
    whether libjpeg decodes it in one pass, band by band (one sequential scan of every
    component: it then never holds the whole picture's coefficients); (0, False) for data
    that is not a JPEG. Segments are stepped over by their length, so the bytes of an
    EXIF thumbnail or a comment are never taken for markers; the entropy-coded data after
    each SOS is searched for the next marker (in C: 4 ms for 14 MB of noise, the worst
    case). Stops at the end-of-image marker, so a trailer (a motion photo's video) is not
    read. A malformed file gives some count; the decoder then says what it makes of it.
    More than MAX_SEGMENTS segments raise ImageLoadError."""
    if not data.startswith(b"\xff\xd8"):
        return 0, False
    at, scans, size = 2, 0, len(data)
    frame, components, whole = 0, 0, False  # the SOF's code and components; a full scan
    for segments in itertools.count():
        if scans > limit:
            break
        if segments > MAX_SEGMENTS:
            raise ImageLoadError(
                f"a JPEG of more than {MAX_SEGMENTS:,} marker segments: a crafted file (a "
                "camera's has a few dozen)"
            )
        found = _JPEG_MARKER.search(data, at)
        if found is None:
            break
        start = found.start()
        code = data[start + 1]
        if code == 0xD9:  # end of image
            break
        if code in (0x01, 0xD8):  # TEM, SOI: markers without a length
            at = start + 2
            continue
        if start + 10 > size:
            break
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            frame, components = code, data[start + 9]
        elif code == 0xDA:
            scans += 1
            whole = data[start + 4] == components
        at = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    return scans, scans == 1 and whole and frame in _SEQUENTIAL


_TIFF_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # BYTE SHORT LONG LONG8


def _tiff_tags(data: bytes, wanted: frozenset[int]) -> dict[int, tuple[int, ...]] | None:
    """The values of ``wanted`` tags in a TIFF's first IFD (classic or BigTIFF, either
    byte order), at most 16 of each; None when ``data`` is no TIFF. Every offset is
    checked against the data's length: the file is not trusted."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        return None
    (magic,) = struct.unpack(order + "H", data[2:4])
    if magic not in (42, 43):
        return None
    big = magic == 43  # BigTIFF: 8-byte counts and offsets, 20-byte entries
    word = "Q" if big else "I"
    wide = 8 if big else 4
    (ifd,) = struct.unpack(order + word, data[8:16] if big else data[4:8])
    count_format, count_size = ("Q", 8) if big else ("H", 2)
    if ifd + count_size > len(data):
        return {}
    (entries,) = struct.unpack(order + count_format, data[ifd : ifd + count_size])
    found: dict[int, tuple[int, ...]] = {}
    for i in range(min(entries, 4096)):
        at = ifd + count_size + i * (4 + 2 * wide)
        if at + 4 + 2 * wide > len(data):
            break
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag not in wanted or kind not in _TIFF_TYPES:
            continue
        (count,) = struct.unpack(order + word, data[at + 4 : at + 4 + wide])
        code, size = _TIFF_TYPES[kind]
        count = min(count, 16)
        where = at + 4 + wide  # the values themselves, or where they are when they do not fit
        if count * size > wide:
            (where,) = struct.unpack(order + word, data[where : where + wide])
        if count and where + count * size <= len(data):
            found[tag] = struct.unpack(f"{order}{count}{code}", data[where : where + count * size])
    return found


_TIFF_LAYOUT = frozenset({258, 262, 277, 284, 338})  # bits, photometric, samples, planar, extra


def _tiff_refused(tags: dict[int, tuple[int, ...]]) -> str | None:
    """Why a TIFF's first page (its ``tags``) is not one picture OpenCV reads
    faithfully, or None.

    OpenCV reads a TIFF of two samples per pixel as its first sample at 8 bits, of three
    or four grey samples (a microscope's channels) as a mix of them, of more than four
    not at all; each would be compared as a picture it is not. OpenCV 5.0 also reads a
    16-bit colour TIFF whose channels are stored in separate planes as noise, and a 16-bit
    grey with alpha at 8 bits: those two are refused only while :func:`_opencv_reads`
    finds the installed OpenCV still does so (fixed in opencv/opencv#29567). Grey, colour,
    colour with alpha and an 8-bit grey with alpha (its alpha ignored) are read, and a
    colour page with one more sample that is not alpha (a saved selection, padding):
    :func:`_extra_sample` drops it after decoding."""
    samples = tags.get(277, (1,))[0]
    photometric = tags.get(262, (1,))[0]
    bits = max(tags.get(258, (1,)))
    alpha = tags.get(338, (0,))[0] in (1, 2)  # associated or unassociated alpha
    picture = 3 if photometric in (2, 6, 8) else 4 if photometric == 5 else 1
    more = samples - picture
    compares = "reporter compares one grey or colour picture (with alpha at most)"
    if picture == 1 and more >= 1 and not (more == 1 and alpha):
        return (
            f"a TIFF of {samples} grey channels per pixel (a multichannel image): {compares}; "
            "save each channel as a file of its own"
        )
    if more > 1:  # OpenCV reads at most four channels
        return (
            f"a colour TIFF with {more} more channels per pixel: {compares}; save it without them"
        )
    if bits <= 8:
        return None
    if picture == 1 and more == 1 and not _opencv_reads("grey and alpha"):
        return (
            f"a {bits}-bit grey TIFF with alpha, which OpenCV {cv2.__version__} reads at 8 "
            "bits: save it without its alpha channel"
        )
    if tags.get(284, (1,))[0] == 2 and samples > 1 and not _opencv_reads("separate planes"):
        return (
            f"a {bits}-bit TIFF with its channels in separate planes, which OpenCV "
            f"{cv2.__version__} misreads: save it with its channels interleaved "
            "(tiffcp -p contig in.tif out.tif)"
        )
    return None


def _extra_sample(tags: dict[int, tuple[int, ...]], pixels: np.ndarray) -> tuple[np.ndarray, bool]:
    """A colour page's fourth sample when the TIFF says it is not alpha (ExtraSamples 0:
    Photoshop's saved selection, a scanner's padding) dropped, and whether it was: OpenCV
    returns it as a fourth channel, which would be taken for alpha (all 0: a white
    picture)."""
    colour = tags.get(262, (1,))[0] in (2, 6, 8) and tags.get(277, (1,))[0] == 4
    if colour and tags.get(338, (0,))[0] == 0 and pixels.ndim == 3 and pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[..., :3]), True
    return pixels, False


def _white_is_zero(tags: dict[int, tuple[int, ...]], pixels: np.ndarray) -> np.ndarray:
    """A grey TIFF whose photometric interpretation is WhiteIsZero (0 is white, as some
    radiography and scanner software write) as the picture it shows. OpenCV inverts an
    8-bit one itself but returns a 16-bit one's values as stored, a negative (and a
    packed 10-14-bit one's on the 16-bit scale, ``v << 4`` for 12 bits); those are
    inverted over 65535 here, while :func:`_opencv_reads` finds the installed OpenCV
    does not."""
    if tags.get(262, (1,))[0] != 0 or pixels.dtype != np.uint16 or pixels.ndim != 2:
        return pixels
    if _opencv_reads("white is zero"):
        return pixels
    return 65535 - pixels


_PROBES = {  # layout: samples, photometric, planar
    "separate planes": (3, 2, True),  # RGB stored plane by plane
    "grey and alpha": (2, 1, False),
    "white is zero": (1, 0, False),
}
_PROBED: dict[str, bool] = {}


def _opencv_reads(layout: str) -> bool:
    """Whether the installed OpenCV decodes a small 16-bit TIFF of ``layout`` (one of
    :data:`_PROBES`) to the picture it holds; asked once per process, when a file of
    that layout is first met."""
    if layout not in _PROBED:
        samples, photometric, planar = _PROBES[layout]
        planes = np.random.default_rng(0).integers(0, 65536, (samples, 4, 6), np.uint16)
        data = _tiff_bytes(planes, photometric=photometric, planar=planar)
        want = {
            "separate planes": np.moveaxis(planes[::-1], 0, -1),  # B, G, R
            "grey and alpha": planes[0],
            "white is zero": 65535 - planes[0],
        }[layout]
        with native.caught():
            try:
                got = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            except cv2.error:
                got = None
        _PROBED[layout] = got is not None and got.dtype == want.dtype and np.array_equal(got, want)
        log.debug(
            "OpenCV %s reads a 16-bit TIFF of %s: %s", cv2.__version__, layout, _PROBED[layout]
        )
    return _PROBED[layout]


def _tiff_bytes(planes: np.ndarray, *, photometric: int, planar: bool) -> bytes:
    """An uncompressed little-endian TIFF of ``planes`` (samples, height, width; uint16),
    one strip per plane or one interleaved strip; a second sample is unassociated alpha."""
    samples, height, width = planes.shape
    strips = [p.tobytes() for p in planes] if planar else [np.moveaxis(planes, 0, -1).tobytes()]
    sizes = [len(strip) for strip in strips]
    extra = samples == 2
    outside = 8 + 2 + (10 + extra) * 12 + 4  # where values that do not fit in an entry go
    bits = struct.pack(f"<{samples}H", *[16] * samples)
    offsets_at = outside + (len(bits) if samples > 2 else 0)
    counts_at = offsets_at + (4 * len(strips) if planar else 0)
    pixels_at = counts_at + (4 * len(strips) if planar else 0)
    offsets = [pixels_at + sum(sizes[:i]) for i in range(len(strips))]

    def entry(tag: int, kind: int, values: list[int], at: int = 0) -> bytes:
        code = "H" if kind == 3 else "I"
        packed = struct.pack(f"<{len(values)}{code}", *values)
        field = packed.ljust(4, b"\0") if len(packed) <= 4 else struct.pack("<I", at)
        return struct.pack("<HHI", tag, kind, len(values)) + field

    entries = [
        entry(256, 4, [width]),
        entry(257, 4, [height]),
        entry(258, 3, [16] * samples, outside),
        entry(259, 3, [1]),  # no compression
        entry(262, 3, [photometric]),
        entry(273, 4, offsets, offsets_at),
        entry(277, 3, [samples]),
        entry(278, 4, [height]),
        entry(279, 4, sizes, counts_at),
        entry(284, 3, [2 if planar else 1]),
    ] + ([entry(338, 3, [2])] if extra else [])
    head = b"II*\0" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + b"\0" * 4
    values = (bits if samples > 2 else b"") + b"".join(
        struct.pack(f"<{len(strips)}I", *v) for v in (offsets, sizes) if planar
    )
    return head + values + b"".join(strips)


HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"heif"})
"""The ``ftyp`` brands of an HEIF file (an iPhone's HEIC photo: HEVC inside ISO BMFF), as
its major brand or, after a generic ``mif1``, a compatible one."""

_heif_opener: list[bool] = []  # registered (or found missing) once per process


def _heif(data: bytes) -> None:
    """Teach Pillow to read HEIF (pi-heif's plugin, libheif: decoding only) the first time
    a file's brand says it is one: the import takes 45-60 ms that no other file needs.
    libheif applies the file's rotation and mirroring as it decodes, and the plugin sets
    the EXIF orientation to 1 after it, so the picture is turned once, upright. AVIF is
    Pillow's own."""
    if _heif_opener or data[4:8] != b"ftyp":
        return
    size = min(int.from_bytes(data[:4], "big"), 64, len(data))
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)}
    if not brands & HEIF_BRANDS:
        return
    try:
        import pi_heif

        pi_heif.register_heif_opener()
        _heif_opener.append(True)
    except ImportError:  # not installed: the file is "not a readable image", as before
        _heif_opener.append(False)


@contextlib.contextmanager
def _pillow_open(data: bytes) -> Iterator[Image.Image]:
    """Pillow's image of ``data``, without Pillow's own size limit and its warnings: the
    pixel limit is ours to enforce (``max_pixels``), from the header."""
    _heif(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                yield im
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, read from the header only.

    ``Image.getexif()`` on a PNG decodes the whole image to look for an eXIf
    chunk after the pixel data (as slow as the decode itself); the chunk
    belongs before it, where ``Image.open`` has already read it.
    """
    try:
        if im.format == "TIFF":  # a TIFF's tags are its header
            return int(im.getexif().get(0x0112, 1))
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(0x0112, 1))
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):
        return 1  # a broken EXIF block must not hide the picture


PAGES_COUNTED = 1000
"""A TIFF's pages and a GIF's frames are counted up to this many; past it, the note says
"more than 1,000"."""
_COUNTED = frozenset({"TIFF", "GIF"})  # the formats whose pages or frames are counted so


def _frames(im: Image.Image) -> int:
    """How many frames (pages) the file holds: read from the header for PNG and WebP. A
    TIFF's pages and a GIF's frames are counted up to ``PAGES_COUNTED`` (one more means
    "more than"): Pillow's own count checks each TIFF page against every one before it,
    so 20,000 one-pixel pages (2.5 MB) took 3.6 s and a larger file grew with the square
    of its pages; it skips a GIF's frames in Python at about 2.4 us each, so 500,000
    one-pixel frames (11.5 MB) took 1.2 s, and a 1 GB file would take minutes. Up to the
    limit: 0.03-0.1 s. 1 when a later frame's header is broken: the first is still read.
    Call it last: it moves ``im`` away from the first frame."""
    pages = 1
    try:
        if im.format not in _COUNTED:
            return max(1, int(getattr(im, "n_frames", 1)))
        while pages <= PAGES_COUNTED:
            im.seek(pages)
            pages += 1
    except EOFError:  # the page after the last
        pass
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError):
        return 1
    return pages


PILLOW_DECODES = frozenset({"GIF", "HEIF", "AVIF"})
"""Formats Pillow decodes (by their header), not OpenCV: OpenCV 4.8-4.10 cannot read GIF,
and OpenCV's wheels read neither HEIF (HEIC) nor AVIF."""


def _pillow_decode(data: bytes) -> np.ndarray:
    """The first frame as OpenCV would give it: grey (H x W), grey and alpha, B,G,R or
    B,G,R,A; a palette's transparent entry becomes alpha, composited on white later."""
    with _pillow_open(data) as im:  # its size was checked from the header
        im.load()  # broken data raises here, and the row says so
        grey = im.mode in GREY_MODES or (
            im.mode in ("P", "PA") and _grey_palette(im.getpalette() or [])
        )
        alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        mode = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
        pixels = np.asarray(im.convert(mode))
    if mode == "RGB":
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if mode == "RGBA":
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    return np.ascontiguousarray(pixels)


def _grey(im: Image.Image, data: bytes) -> bool:
    """Whether the file stores a greyscale picture: grey, grey and alpha, or a palette of
    greys only. Its decoder may still return B,G,R(,A) (OpenCV expands a grey-and-alpha
    PNG and every palette to colour): such a picture is brought back to grey."""
    if im.format == "PNG" and data[25:26] in (b"\0", b"\4"):
        return True  # IHDR's colour type: Pillow calls a 16-bit grey-and-alpha PNG RGBA
    if im.mode in GREY_MODES:
        return True
    # a palette known without decoding (a PNG's PLTE; a GIF's comes with its pixels, and
    # _pillow_decode looks at it there): getpalette() would decode the whole image
    palette = getattr(im, "palette", None) if im.mode in ("P", "PA") else None
    if palette is None or palette.mode != "RGB":
        return False
    return _grey_palette(list(palette.palette))


def _grey_palette(palette: list[int]) -> bool:
    """A palette of greys only (a grey GIF): the picture is greyscale, as its PNG would be."""
    if not palette or len(palette) % 3:
        return False
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _drop_alpha(pixels: np.ndarray) -> tuple[np.ndarray, bool]:
    """The pixels without their alpha channel, and whether any of them was transparent.
    Opaque everywhere (a matplotlib PNG, a CMYK TIFF's extra channel): the channel is
    dropped, nothing composited. Otherwise composited on white (:func:`_on_white`)."""
    if pixels[:, :, -1].min() < np.iinfo(pixels.dtype).max:
        return _on_white(pixels), True
    if pixels.shape[2] == 2:
        return np.ascontiguousarray(pixels[:, :, 0]), False
    return np.ascontiguousarray(pixels[:, :, :3]), False


def _on_white(pixels: np.ndarray) -> np.ndarray:
    """Composite B,G,R,A (or grey,A) on a white background, keeping the pixel type."""
    top = float(np.iinfo(pixels.dtype).max)
    colour = pixels[:, :, :-1].astype(np.float32)
    alpha = pixels[:, :, -1:].astype(np.float32) / top
    out = colour * alpha + top * (1.0 - alpha)
    out = np.rint(out).astype(pixels.dtype)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _mb(n: float) -> str:
    """Megabytes as a person writes them: 1,024, 12, 1, 1.6, 0.1."""
    mb = n / 1e6
    return f"{mb:,.0f}" if mb >= 9.95 or mb == round(mb) else f"{mb:.1f}"


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The file's bytes; ``max_bytes``: a larger file is refused before it is read (a 2 GB
    file named .png would otherwise be read whole). A pipe or a device is refused unread:
    reading a pipe waits for a writer for ever. Raises ImageLoadError."""
    return read_with_stat(path, max_bytes)[0]


SETTLE_S = 1.0
"""A file that was still being written is read again once it has stayed as it is (its
size, modification time and inode) for this long."""
SETTLE_MAX_S = 60.0
"""How long a file that keeps changing is waited for before it is an ERROR row."""
RECENT_S = 2.0
WATCH_S = 0.3
"""A file that cannot be decoded and was modified in the last RECENT_S seconds is
watched for WATCH_S: a writer that writes in bursts (an instrument's export, a copy to a
share) may have paused between two of them just as the file was read."""
WRITTEN_AGAIN = "the file changed as it was first read (it was still being written)"


def _state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None  # gone or renamed away: what was read is all there is
    return st.st_size, st.st_mtime_ns, st.st_ino


def changed_since(path: Path, st) -> bool:
    """Whether ``path`` is no longer the file ``st`` (its ``os.stat`` before it was read)
    described: a writer (an instrument's export, a copy to the share) was still at it,
    so the bytes read may be a part of the picture. A file gone since is not changed."""
    now = _state(path)
    return now is not None and now != (st.st_size, st.st_mtime_ns, st.st_ino)


def being_written(path: Path, st, failed: bool) -> bool:
    """Whether the file ``st`` described (its ``os.stat`` before it was read) was still
    being written: it has changed since, or, when its bytes could not be decoded
    (``failed``) and it was modified in the last :data:`RECENT_S` seconds, it changes
    within :data:`WATCH_S`. A broken file that nobody writes costs that wait only when
    it is that new."""
    if changed_since(path, st):
        return True
    if not failed or abs(time.time() - st.st_mtime) > RECENT_S:
        return False
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if changed_since(path, st):
            return True
    return False


def settle(path: Path) -> float:
    """Wait until ``path`` has stayed as it is for :data:`SETTLE_S` (at most
    :data:`SETTLE_MAX_S`), and say how long that took; ImageLoadError if it keeps
    changing."""
    clock = time.monotonic
    start = last_change = clock()
    state = _state(path)
    while clock() - last_change < SETTLE_S:
        if clock() - start > SETTLE_MAX_S:
            raise ImageLoadError(
                f"the file kept changing for {SETTLE_MAX_S:g} s while it was read (still "
                "being written?): not compared"
            )
        time.sleep(0.1)
        now = _state(path)
        if now != state:
            state, last_change = now, clock()
    return clock() - start


def read_with_stat(path: Path, max_bytes: int | None):
    """``read_bytes``, and the file's ``os.stat`` from before it was read."""
    try:
        st = path.stat()
        kind = not_a_file(path, st)
        if kind:
            raise ImageLoadError(f"{kind}, not an image file: not read")
        size = st.st_size
        if max_bytes is not None and size > max_bytes:
            raise ImageLoadError(
                f"the file is {_mb(size)} MB, over the limit of {_mb(max_bytes)} MB "
                "(max_file_mb): not read"
            )
        return path.read_bytes(), st  # bytes, then decode: cv2.imread fails on non-ASCII paths
    except FileNotFoundError:  # it was there when the run listed its folder
        raise ImageLoadError(GONE) from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read the file: {exc.strerror or exc}") from None


GONE = "no such file: it was removed or renamed after the run listed it"


def ends_whole(data: bytes) -> bool:
    """Whether ``data`` ends as a whole file of its format does: a PNG with its IEND
    chunk, a JPEG with its end-of-image marker after its first scan and near its end (a
    camera may pad after it; an EXIF thumbnail's own marker comes before the scan),
    a GIF with its trailer, a WebP as long as its RIFF header says. A file cut short by
    its writer does not; a file of another format is never taken as whole."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    if data.startswith(b"\xff\xd8"):
        scan = _jpeg_scan(data)
        end = data.rfind(b"\xff\xd9", max(scan, len(data) - JPEG_TAIL))
        return scan > 0 and end > scan
    if data.startswith((b"GIF87a", b"GIF89a")):
        return data.endswith(b";")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return False


JPEG_TAIL = 4096
"""How far from a JPEG's end its end-of-image marker may lie (padding after it)."""


def _jpeg_scan(data: bytes) -> int:
    """Where a JPEG's first scan (its SOS marker) begins, found by stepping over the
    segments before it by their lengths, or 0 if the bytes end first. An end-of-image
    marker before it is not the image's own: an EXIF thumbnail inside APP1 has one. A
    camera's file has a few dozen segments; one with over :data:`JPEG_SEGMENTS` (a
    hostile file of empty ones) is taken as not whole, which costs it a watch at most."""
    at = 2
    for _ in range(JPEG_SEGMENTS):
        if at + 4 > len(data):
            return 0
        if data[at] != 0xFF:
            return 0  # not a marker where one must be
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0xDA:
            return at
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length follows
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return 0


JPEG_SEGMENTS = 4096
"""How many segments (and fill bytes) :func:`_jpeg_scan` steps over before giving up."""


def read_settled(path: Path, max_bytes: int | None) -> tuple[bytes, os.stat_result, str]:
    """The bytes of ``path`` as the client of a cluster sends them (``--send-bytes``),
    the file's ``os.stat`` from before they were read, and the note its row then
    carries, or "". A file still being written (it changed as it was read, or, modified
    in the last :data:`RECENT_S` seconds, changes within :data:`WATCH_S`) is read again
    once it has settled, as :func:`load` reads one. The workers decode, so this side
    cannot wait for a failed decode first: a file that new is watched unless its bytes
    end as a whole file of its format does (:func:`ends_whole`), so that a folder copied
    a second ago costs no watch per file."""
    data, st = read_with_stat(path, max_bytes)
    if not being_written(path, st, failed=not ends_whole(data)):
        return data, st, ""
    waited = settle(path)
    data, st = read_with_stat(path, max_bytes)
    return data, st, f"read again after {waited:.1f} s: {WRITTEN_AGAIN}"


def load(
    path: Path | str,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    data: bytes | None = None,
    value_range: tuple[float, float] | str | None = None,
    reduced_side: int | None = None,
) -> LoadedImage:
    """Read and normalise one image file.

    ``max_bytes``: a larger file is refused before it is read (a 2 GB file named
    .png would otherwise be read whole). ``data``: the file's bytes, already read (by
    the client of a cluster without shared storage); ``path`` then only names it.
    ``value_range``: (low, high) of pixels that are neither 8- nor 16-bit unsigned
    integers (32-bit float TIFFs, signed or 32-bit integers), which are brought to 16
    bits over it (:func:`to_16_bits`); without it such an image is refused.
    ``reduced_side``: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's
    scaled inverse DCT, which skips most of the work), the smallest whose shorter side
    keeps at least this many pixels; its ``full_size`` says the file's own. What the
    collection commands use (hashes, colour moments, an embedding, a thumbnail: none
    of them looks closer than 512 px); a run's metrics never.

    A file read here (``data`` None) that has changed by the time it is decoded, or
    that could not be decoded and changes soon after (:func:`being_written`), was still
    being written: it is read again once it has settled (:func:`settle`), and its notes
    say so. Before, a cron run that met an instrument's export half-written made
    it an ERROR row ("truncated or corrupt"), and the run's exit status 1 an alarm.

    Raises
    ------
    ImageLoadError
        With a one-line reason: unreadable, empty, too large, not an image, over
        the pixel limit, truncated or corrupt, or an unsupported pixel type.
    """
    path = Path(path)
    kw = dict(max_pixels=max_pixels, value_range=value_range, reduced_side=reduced_side)
    if data is not None:
        return _load(path, data, **kw)
    data, st = read_with_stat(path, max_bytes)
    try:
        loaded = _load(path, data, **kw)
    except ImageLoadError:
        if not being_written(path, st, failed=True):
            raise
    else:
        if not being_written(path, st, failed=False):
            return loaded
    waited = settle(path)
    loaded = _load(path, read_bytes(path, max_bytes), **kw)
    return replace(
        loaded, notes=(*loaded.notes, f"read again after {waited:.1f} s: {WRITTEN_AGAIN}")
    )


def _load(
    path: Path,
    data: bytes,
    *,
    max_pixels: int,
    value_range: tuple[float, float] | str | None,
    reduced_side: int | None,
) -> LoadedImage:
    """``load`` of bytes read."""
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    scans, one_pass = _jpeg_scans(data)
    if scans > MAX_SCANS:
        raise ImageLoadError(
            f"a JPEG of more than {MAX_SCANS:,} scans: decoding repeats over the whole "
            "picture for each scan, so such a file takes minutes to days (a crafted file; "
            "an encoder writes about 10)"
        )
    tags = _tiff_tags(data, _TIFF_LAYOUT)
    refused_layout = _tiff_refused(tags) if tags else None
    if refused_layout:
        raise ImageLoadError(refused_layout)
    header = _header(data)
    reduce = _reduction(header, reduced_side)
    if header is None:
        # Unknown to Pillow: the limit is checked after decoding, with OpenCV's
        # own limit (2^30 pixels) guarding the decoder.
        fmt, orientation, grey, frames = path.suffix.lstrip(".").upper() or "image", 1, False, 1
    else:
        fmt, width, height, orientation, grey, frames = header
        if reduce > 1 and one_pass:
            # a camera's or a phone's JPEG: libjpeg decodes it band by band at 1/reduce and
            # holds only the reduced picture (a 150-megapixel panorama: 72 MB, 0.12 s); a
            # progressive one holds its whole picture's coefficients (493 MB), so its full
            # size is what the limit weighs
            _check_size(-(-width // reduce), -(-height // reduce), max_pixels)
        else:
            _check_size(width, height, max_pixels)
    if header is not None and fmt in PILLOW_DECODES:
        try:
            pixels = _pillow_decode(data)
        except (OSError, ValueError, EOFError, SyntaxError, RuntimeError) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise ImageLoadError(f"truncated or corrupt {fmt} data: {why}") from None
        said, refused = [], False
    else:
        pixels, said, refused = _opencv_decode(path, data, reduce, grey)
    for line in said:
        log.debug("%s: decoder: %s", path, line)
    decoder = f" (the decoder: {said[0]})" if said else ""
    if refused:
        raise ImageLoadError(
            f"the {fmt} decoder refused the data: corrupt, or a variant OpenCV cannot "
            f"decode{decoder}"
        )
    if pixels is None:
        if header is None:
            raise ImageLoadError(f"not a readable image: unknown format or corrupt header{decoder}")
        raise ImageLoadError(
            f"truncated or corrupt {fmt} data: OpenCV could not decode it{decoder}"
        )
    _check_size(pixels.shape[1], pixels.shape[0], max_pixels)
    # a decoder that recovered (libjpeg's "Corrupt JPEG data: premature end of data
    # segment") may have filled part of the picture with grey: the row says so
    notes = [f"the decoder warned: {'; '.join(said)}"] if said else []
    scaled_bits = 0
    if fmt == "PNG" and pixels.dtype == np.uint16:
        scaled_bits = _png_significant_bits(data)
    if tags:
        depth = tags.get(258, (8,))[0]
        scaled_bits = depth if 8 < depth < 16 and pixels.dtype == np.uint16 else 0
        pixels = _white_is_zero(tags, pixels)
        pixels, dropped = _extra_sample(tags, pixels)
        if dropped:
            notes.append("its fourth channel ignored: the TIFF marks it as not alpha")
    mapped_from = ""
    if pixels.dtype not in (np.uint8, np.uint16):
        mapped_from = pixels.dtype.name
        pixels, said_range = to_16_bits(pixels, value_range)
        notes += said_range
    if frames > 1:
        what = "pages" if fmt == "TIFF" else "frames"
        many = f"{frames:,}"
        if fmt in _COUNTED and frames > PAGES_COUNTED:  # the count stopped there
            many = f"more than {PAGES_COUNTED:,}"
        notes.append(f"the first of its {many} {what} compared")
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        pixels, transparent = _drop_alpha(pixels)
        if transparent:
            notes.append("alpha composited on white")
    elif pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if grey and pixels.ndim == 3:  # a grey file its decoder expanded to B,G,R: grey again
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    if orientation in _ORIENT:
        pixels = np.ascontiguousarray(_ORIENT[orientation](pixels))
        notes.append(f"EXIF orientation {orientation} applied")
    full_size = None
    if reduce > 1:  # a JPEG's: OpenCV decoded it
        full_size = (width, height) if orientation not in (5, 6, 7, 8) else (height, width)
    return LoadedImage(pixels, tuple(notes), fmt, mapped_from, full_size, scaled_bits)


OWN_RANGE = "own"
"""``value_range`` of the collection commands, where each image stands alone: a float
image is brought to 16 bits over its own finite minimum and maximum."""


def to_16_bits(
    pixels: np.ndarray, value_range: tuple[float, float] | str | None
) -> tuple[np.ndarray, list[str]]:
    """Pixels of another type (32-bit floats, as ImageJ and processing pipelines write
    them; signed or 32-bit integers) as 16-bit ones: ``value_range``'s low end is 0 and
    its high end 65535, linearly, rounded to the nearest. SSIM and PSNR then take L =
    high - low, as skimage's ``data_range`` would, and every image of the run is
    measured on the same scale (never each on its own minimum and maximum, which would
    hide a change of brightness). A value outside the range is clipped to it, and NaN
    is taken as the low end; the notes say how many. ``OWN_RANGE``: the image's own
    finite minimum and maximum (the collection commands'). Raises ImageLoadError
    without a range, or for pixels that are not numbers."""
    if pixels.dtype.kind not in "fiu":
        raise ImageLoadError(f"{pixels.dtype} pixels are not supported")
    if value_range is None:
        raise ImageLoadError(
            f"{pixels.dtype} pixels need the range of their values to be compared: set "
            "value_range (reporter run --value-range LO:HI, or value_range = [LO, HI] "
            "under [input])"
        )
    if value_range == OWN_RANGE:
        value_range = _own_range(pixels)
    low, high = value_range
    # float32 holds 16-bit steps of any range of float32 data; wider types, and a range
    # past float32's own, keep float64, or a narrow range far from 0 (1e9 to 1e9 + 1000)
    # would lose its steps.
    wide = (
        pixels.dtype.itemsize >= 8
        or (pixels.dtype.kind in "iu" and pixels.dtype.itemsize >= 4)
        or max(abs(low), abs(high)) > 1e30
    )
    values = pixels.astype(np.float64 if wide else np.float32)
    notes = []
    if pixels.dtype.kind == "f":
        nan = np.isnan(values)
        missing = int(np.count_nonzero(nan))
        if missing:
            values[nan] = low
            notes.append(f"{missing:,} NaN pixel value(s) compared as {low:g} (value_range)")
    outside = int(np.count_nonzero((values < low) | (values > high)))
    if outside:
        notes.append(f"{outside:,} pixel value(s) outside value_range {low:g} to {high:g} clipped")
    np.clip(values, low, high, out=values)  # first: an infinite value has no distance
    if not math.isfinite(high - low):  # an image's own range of float64 extremes
        values /= 2
        low, high = low / 2, high / 2
    values -= low
    values *= 65535.0 / (high - low)
    np.clip(values, 0.0, 65535.0, out=values)  # rounding at the ends
    return np.rint(values).astype(np.uint16), notes


def _own_range(pixels: np.ndarray) -> tuple[float, float]:
    finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


_REDUCED = {
    (2, False): cv2.IMREAD_REDUCED_COLOR_2,
    (4, False): cv2.IMREAD_REDUCED_COLOR_4,
    (8, False): cv2.IMREAD_REDUCED_COLOR_8,
    (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _reduction(header: tuple | None, side: int | None) -> int:
    """1, or the factor a JPEG is decoded at (2, 4, 8) keeping its shorter side >= side."""
    if side is None or header is None or header[0] != "JPEG":
        return 1
    shorter = min(header[1], header[2])
    return next((f for f in (8, 4, 2) if shorter // f >= side), 1)


def _opencv_decode(
    path: Path, data: bytes, reduce: int = 1, grey: bool = False
) -> tuple[np.ndarray | None, list[str], bool]:
    """OpenCV's decode: the pixels (None when it could not), the decoder's own lines, and
    whether it refused the data with an assertion. ``reduce`` > 1: a JPEG at that
    fraction of its size, grey or B,G,R, its EXIF orientation left to ``load``."""
    flags = cv2.IMREAD_UNCHANGED
    if reduce > 1:
        flags = _REDUCED[reduce, grey] | cv2.IMREAD_IGNORE_ORIENTATION
    with native.caught() as said:  # libpng, libjpeg, libtiff write to stderr themselves
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            refused = False
        except cv2.error as exc:  # an assertion inside a decoder: its text is for developers
            log.debug("%s: cv2.imdecode: %s", path, exc)
            pixels, refused = None, True
    return pixels, said, refused


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{width}x{height} is {_amount(width * height)}, over the limit of "
            f"{_amount(max_pixels)} (max_pixels)"
        )


def _amount(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} Mpx" if pixels >= 100_000 else f"{pixels:,} px"


def widen(image: LoadedImage, bits: int) -> LoadedImage:
    """A 16-bit image whose values have ``bits`` significant bits (a 12-bit camera's TIFF:
    0-4095), brought to the full 16-bit range by ``v << (16 - bits)``, so that SSIM and
    PSNR, whose L is the type's range, measure it against its own range (L = 4095 for 12
    bits, to within 0.02 %), and its pictures are not black. A value over the range is
    clipped to it first, and the notes say how many. 8-bit images, and ``bits`` 16, are
    returned as they are; so are a TIFF packed at fewer than 16 bits per sample, which
    OpenCV returns on the 16-bit scale already, and a PNG whose sBIT chunk gives fewer
    than 16 significant bits, whose values the PNG standard has on that scale, each with
    a note saying so."""
    pixels = image.pixels
    if bits >= 16 or pixels.dtype != np.uint16 or image.mapped_from:  # value_range's: all 16
        return image
    if image.scaled_bits:
        kind = (
            f"a PNG of {image.scaled_bits} significant bits (its sBIT chunk), stored"
            if image.format == "PNG"
            else f"a TIFF packed at {image.scaled_bits} bits per sample, read"
        )
        said = (f"{kind} on the 16-bit scale: bits = {bits} not applied to it",)
        return replace(image, notes=image.notes + said)
    top = (1 << bits) - 1
    notes = image.notes
    over = int(np.count_nonzero(pixels > top))
    if over:
        pixels = np.minimum(pixels, top)
        notes += (f"{over:,} pixel value(s) over {bits} bits ({top}) clipped (bits = {bits})",)
    return replace(image, pixels=np.left_shift(pixels, 16 - bits), notes=notes)


@dataclass(frozen=True)
class Geometry:
    """What every image is brought to: the baseline's size, channels and pixel type."""

    width: int
    height: int
    channels: int
    dtype: np.dtype

    @classmethod
    def of(cls, pixels: np.ndarray) -> Geometry:
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        return cls(pixels.shape[1], pixels.shape[0], channels, pixels.dtype)


def conform(
    image: LoadedImage, target: Geometry, *, strict_size: bool
) -> tuple[np.ndarray, list[str]]:
    """Bring ``image`` to the baseline's pixel type and size, and its channels to a common space.

    Returns the pixels and notes saying what changed. The common space for
    channels is greyscale whenever either side is greyscale: a colour image
    against a greyscale baseline is converted to grey, and a greyscale image
    against a colour baseline is compared with the baseline in grey (the caller
    uses ``Reference.grey`` when the returned array is 2-D and the baseline is not).
    """
    pixels = image.pixels
    notes = list(image.notes)
    h, w = pixels.shape[:2]
    if (w, h) != (target.width, target.height):
        if strict_size:
            raise ImageLoadError(
                f"size {w}x{h} differs from the baseline's {target.width}x{target.height} "
                "(--strict-size)"
            )
        shrink = w >= target.width and h >= target.height
        pixels = cv2.resize(
            pixels,
            (target.width, target.height),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
        notes.append(f"resized from {w}x{h} to the baseline's {target.width}x{target.height}")
    if pixels.dtype != target.dtype:
        if target.dtype == np.uint8:
            notes.append("16-bit image compared at the baseline's 8-bit depth (top 8 bits)")
            used = int(pixels.max()).bit_length()
            if 0 < used <= 14 and not image.scaled_bits:  # a camera's 8-14 bits, unwidened
                depth = min(d for d in (8, 10, 12, 14) if d >= used)
                camera = f"{'an' if depth == 8 else 'a'} {depth}-bit camera"
                notes[-1] += (
                    f"; its values use {used} of the 16 bits (at most {(1 << used) - 1}), "
                    f"which leaves the top 8 nearly black: for {camera} set bits = {depth}"
                )
            pixels = (pixels >> 8).astype(np.uint8)
        else:
            pixels = pixels.astype(np.uint16) * np.uint16(257)
            notes.append("8-bit image compared at the baseline's 16-bit depth (x 257)")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 3 and target.channels == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
        notes.append("colour image compared in greyscale (the baseline is greyscale)")
    elif channels == 1 and target.channels == 3:
        notes.append("greyscale image compared with the baseline converted to greyscale")
    return pixels, notes
