"""Every kind of bad or unusual input gives its row: ERROR with a clear reason, or a
comparison in a documented common space with a note; the other rows are unaffected."""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import noisy, smooth_image, write
from PIL import Image

from reporter import images, pipeline, table, visuals
from reporter.config import Config, Floors, OutlierRule


def run(folder: Path, **kw) -> pd.DataFrame:
    config = Config(inputs=(folder,), out=folder.parent / "out", jobs=1, **kw)
    return pipeline.run(config).table.set_index(table.FILE)


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, kind, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: the shape of a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.fixture
def junk_dir(run_dir: Path, baseline_img: np.ndarray) -> Path:
    good = cv2.imencode(".png", baseline_img)[1].tobytes()
    jpeg = cv2.imencode(".jpg", baseline_img)[1].tobytes()
    (run_dir / "empty.png").write_bytes(b"")
    (run_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (run_dir / "text_named.jpg").write_text("just text", encoding="utf-8")
    (run_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    (run_dir / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (run_dir / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    cv2.imwrite(str(run_dir / "float.tif"), baseline_img.astype(np.float32))
    (run_dir / "notes.txt").write_text("operator notes", encoding="utf-8")
    (run_dir / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (run_dir / "._hidden.png").write_bytes(b"\0\5\x16\7")
    return run_dir


def test_broken_files_become_error_rows_and_lose_nothing(junk_dir: Path):
    df = run(junk_dir)
    expected_errors = {
        "empty.png": "empty file",
        "broken.png": "not a readable image",
        "text_named.jpg": "not a readable image",
        "truncated.png": "truncated or corrupt PNG",
        "truncated.jpg": "truncated or corrupt JPEG",
        "bomb.png": "100000x100000 is 10,000.0 Mpx, over the limit of 100.0 Mpx",
        "float.tif": "float32 pixels need the range of their values to be compared: set value_r",
    }
    for name, fragment in expected_errors.items():
        assert df.loc[name, table.STATUS] == "ERROR", name
        assert fragment in df.loc[name, table.ERROR], (name, df.loc[name, table.ERROR])
        assert "\n" not in df.loc[name, table.ERROR]
    # the good images still have their rows and values
    assert df.loc["same.png", table.STATUS] == "PASS"
    assert df.loc["same.png", "ssim"] == 1.0
    assert df.loc["noisy.png", "ssim"] > 0.5
    # non-images in a folder are skipped, hidden files ignored; neither is a row
    assert "notes.txt" not in df.index and ".DS_Store" not in df.index
    assert "._hidden.png" not in df.index
    assert len(df) == 2 + len(expected_errors)


def test_skipped_files_are_listed_in_the_metadata(junk_dir: Path):
    result = pipeline.run(Config(inputs=(junk_dir,), out=junk_dir.parent / "o", jobs=1))
    assert [Path(s["path"]).name for s in result.meta["skipped"]] == ["notes.txt"]


def test_files_skipped_by_their_extension_take_one_log_line(run_dir: Path, tmp_path, caplog):
    """A folder of raw data files beside its exports (a cytometer's .fcs files) logged one
    INFO line of about 200 characters per file, every run. One line now counts them by
    extension and names the first five; each is still in the debug log and in the
    metadata's list of skipped files."""
    for i in range(7):
        (run_dir / f"tube{i}.fcs").write_bytes(b"FCS3.1")
    (run_dir / "notes.txt").write_text("x", encoding="utf-8")
    (run_dir / "README").write_text("x", encoding="utf-8")
    caplog.set_level("DEBUG", logger="reporter")
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    assert len(result.meta["skipped"]) == 9
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "INFO" and r.getMessage().startswith("skipped ")
    ]
    named = ", ".join(
        str(run_dir / n) for n in ("README", "notes.txt", "tube0.fcs", "tube1.fcs", "tube2.fcs")
    )
    assert said == [
        f"skipped 9 file(s) not named as images (.fcs 7, .txt 1, no extension 1): {named} "
        "and 4 more; images are .avif .bmp .gif .heic .heif .j2k .jfif .jp2 .jpe .jpeg .jpg "
        ".pbm .pgm .png .pnm .ppm .tif .tiff .webp"
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert f"skipped {run_dir / 'tube6.fcs'}: not an image file extension" in debug


def test_a_non_image_named_explicitly_is_an_error_row(run_dir: Path, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    config = Config(inputs=(run_dir, notes), out=tmp_path / "o", jobs=1)
    df = pipeline.run(config).table.set_index(table.FILE)
    assert df.loc["notes.txt", table.STATUS] == "ERROR"


def test_pixel_limit_is_configurable(run_dir: Path, baseline_img):
    write(run_dir / "large.png", cv2.resize(baseline_img, (400, 300)))
    df = run(run_dir, max_pixels=160 * 120)
    assert df.loc["large.png", table.STATUS] == "ERROR"
    assert df.loc["large.png", table.ERROR] == (
        "400x300 is 0.1 Mpx, over the limit of 19,200 px (max_pixels)"
    )
    assert df.loc["same.png", table.STATUS] == "PASS"


def test_sixteen_bit_copy_of_an_eight_bit_baseline_is_identical(run_dir, baseline_img):
    write(run_dir / "copy16.png", baseline_img.astype(np.uint16) * 257)
    write(run_dir / "shift16.tif", baseline_img.astype(np.uint16) << 8)
    df = run(run_dir)
    for name in ("copy16.png", "shift16.tif"):
        assert df.loc[name, "ssim"] == 1.0
        assert df.loc[name, "psnr"] == np.inf
        assert "16-bit image compared at the baseline's 8-bit depth" in df.loc[name, table.NOTES]


def test_sixteen_bit_baseline_with_an_eight_bit_image(tmp_path):
    base16 = smooth_image(3, dtype=np.uint16)
    folder = tmp_path / "r"
    folder.mkdir()
    write(folder / "baseline.png", base16)
    write(folder / "same16.png", base16)
    write(folder / "as8.png", (base16 >> 8).astype(np.uint8))
    df = run(folder)
    assert df.loc["same16.png", "psnr"] == np.inf
    assert df.loc["as8.png", "ssim"] > 0.99  # only the low byte is lost
    assert "8-bit image compared at the baseline's 16-bit depth" in df.loc["as8.png", table.NOTES]


def twelve_bit(seed: int, scale: float = 1.0) -> np.ndarray:
    """A 12-bit camera's picture in a 16-bit file: bright blobs on a dark field, 0-4095."""
    rng = np.random.default_rng(seed)
    field = np.full((160, 192), 200.0)
    for y, x, r, v in zip(*(rng.integers(0, n, 40) for n in (160, 192, 14, 3800)), strict=True):
        cv2.circle(field, (int(x), int(y)), int(r) + 3, float(v) + 200, -1)
    field = cv2.GaussianBlur(field, (0, 0), 2) * scale
    return np.clip(field + rng.normal(0, 30, field.shape), 0, 4095).astype(np.uint16)


def test_twelve_bit_images_are_measured_at_their_own_range_with_bits(tmp_path, caplog):
    """L of SSIM and PSNR is the type's (65535), never the data's: a 12-bit camera's SSIM
    then stays near 1 whatever changes, and its pictures are black. ``bits = 12`` brings
    its values to the 16-bit range, which measures them at L = 4095 (skimage's
    data_range=4095, to within 1e-4); MSE stays in the data's own units."""
    from skimage.metrics import structural_similarity

    folder = tmp_path / "r"
    folder.mkdir()
    base = twelve_bit(0)
    write(folder / "baseline.tif", base)
    images_ = {"same.tif": twelve_bit(0) // 2 * 2, "dim.tif": twelve_bit(0, 0.7)}
    for name, img in images_.items():
        write(folder / name, img)
    hot = base.copy()
    hot[:2, :3] = 5000  # over 12 bits: clipped, and said
    write(folder / "hot.tif", hot)

    def expected(img, top):
        ssim = structural_similarity(base, img, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=top)  # fmt: skip
        mse = float(np.mean((base.astype(np.float64) - img) ** 2))
        return ssim, mse, 10 * np.log10(top**2 / mse)

    with caplog.at_level("INFO", logger="reporter"):
        plain = run(folder)
    assert "its 16-bit values use 12 bits (at most 4095)" in caplog.text
    assert "set bits = 12 (--bits 12)" in caplog.text
    twelve = run(folder, bits=12)
    for name, img in images_.items():
        ssim, mse, psnr = expected(img, 4095)
        assert twelve.loc[name, "ssim"] == pytest.approx(ssim, abs=1e-4)
        assert twelve.loc[name, "psnr"] == pytest.approx(psnr, abs=0.01)
        assert twelve.loc[name, "mse"] == pytest.approx(mse, rel=1e-6)
        assert plain.loc[name, "ssim"] == pytest.approx(expected(img, 65535)[0], abs=1e-4)
        assert plain.loc[name, "mse"] == pytest.approx(mse, rel=1e-6)
    # at L = 65535 the dimmed picture scores as if nothing had changed
    assert plain.loc["dim.tif", "ssim"] > 0.97 and twelve.loc["dim.tif", "ssim"] < 0.93
    assert "6 pixel value(s) over 12 bits (4095) clipped" in twelve.loc["hot.tif", table.NOTES]
    widened = images.widen(images.load(folder / "hot.tif", max_pixels=10**8), 12).pixels
    assert (widened[:2, :3] == 4095 << 4).all() and np.array_equal(widened[2:], base[2:] << 4)
    # the pictures show the picture: 12-bit values in the top 8 bits are all but black
    loaded = images.load(folder / "baseline.tif", max_pixels=10**8)
    shown = [visuals.small(images.widen(loaded, b).pixels) for b in (16, 12)]
    assert shown[0].max() <= 16 and shown[1].max() > 200
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "16-bit, 12 significant (bits = 12)" in page


def test_alpha_is_composited_on_white(run_dir, baseline_img):
    """An alpha channel opaque everywhere (matplotlib writes one into every PNG) changes
    nothing and says nothing; a transparent pixel is composited on white, with a note."""
    opaque = np.dstack([baseline_img, np.full(baseline_img.shape[:2], 255, np.uint8)])
    write(run_dir / "opaque_alpha.png", opaque)
    clear = np.dstack([baseline_img, np.zeros(baseline_img.shape[:2], np.uint8)])
    write(run_dir / "transparent.png", clear)
    holed = opaque.copy()
    holed[0, 0, 3] = 0
    write(run_dir / "one_hole.png", holed)
    df = run(run_dir)
    assert df.loc["opaque_alpha.png", "psnr"] == np.inf
    assert "alpha" not in str(df.loc["opaque_alpha.png", table.NOTES])
    assert "alpha composited on white" in df.loc["one_hole.png", table.NOTES]
    loaded = images.load(run_dir / "transparent.png", max_pixels=10**8)
    assert (loaded.pixels == 255).all()
    loaded = images.load(run_dir / "one_hole.png", max_pixels=10**8).pixels
    assert (loaded[0, 0] == 255).all() and np.array_equal(loaded[1:], baseline_img[1:])


def png_of(pixels: np.ndarray, colour_type: int) -> bytes:
    """A PNG of grey (0) or grey-and-alpha (4) pixels, 8- or 16-bit by their type, written
    by hand: neither OpenCV nor Pillow writes a 16-bit grey-and-alpha PNG."""
    height, width = pixels.shape[:2]
    big = pixels.astype(">u2" if pixels.dtype == np.uint16 else np.uint8)
    raw = b"".join(b"\0" + big[y].tobytes() for y in range(height))
    depth = 16 if pixels.dtype == np.uint16 else 8
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_a_grey_file_its_decoder_expands_to_colour_is_still_grey(tmp_path):
    """OpenCV returns B,G,R,A for a grey-and-alpha PNG and B,G,R for a palette of greys:
    the file is greyscale all the same, and is compared as the grey PNG it would be
    (against a colour baseline, with the baseline in grey), not as a colour picture."""
    folder = tmp_path / "r"
    folder.mkdir()
    base = few_colours(0)
    write(folder / "baseline.png", base)
    grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    opaque = np.full_like(grey, 255)
    (folder / "grey_alpha.png").write_bytes(png_of(np.dstack([grey, opaque]), 4))
    wide = grey.astype(np.uint16) * 257
    (folder / "grey_alpha16.png").write_bytes(png_of(np.dstack([wide, wide | 0xFFFF]), 4))
    Image.fromarray(grey).convert("P").save(folder / "grey_palette.png")
    Image.fromarray(grey).convert("RGB").convert("P").save(folder / "rgb_palette.png")
    df = run(folder)
    for name in ("grey_alpha.png", "grey_alpha16.png", "grey_palette.png"):
        assert images.load(folder / name, max_pixels=10**8).pixels.ndim == 2, name
        assert df.loc[name, "psnr"] == np.inf, name
        assert "compared with the baseline converted to greyscale" in df.loc[name, table.NOTES]
    # a palette with colours in it stays colour (its picture is grey, its file is not)
    assert images.load(folder / "rgb_palette.png", max_pixels=10**8).pixels.ndim == 3


def test_greyscale_and_colour_meet_in_greyscale(run_dir, baseline_img, tmp_path):
    grey = cv2.cvtColor(baseline_img, cv2.COLOR_BGR2GRAY)
    write(run_dir / "grey.png", grey)
    df = run(run_dir)
    assert df.loc["grey.png", "ssim"] == 1.0  # the baseline, converted the same way
    assert "greyscale image compared with the baseline converted" in df.loc["grey.png", table.NOTES]
    # and the other way round: a colour image against a greyscale baseline
    folder = tmp_path / "g"
    folder.mkdir()
    write(folder / "baseline.png", grey)
    write(folder / "colour.png", baseline_img)
    df2 = run(folder)
    assert df2.loc["colour.png", "ssim"] == 1.0
    assert "colour image compared in greyscale" in df2.loc["colour.png", table.NOTES]


def test_different_size_is_resized_with_a_note_or_an_error_when_strict(run_dir, baseline_img):
    big = cv2.resize(baseline_img, (320, 240), interpolation=cv2.INTER_CUBIC)
    write(run_dir / "bigger.png", big)
    df = run(run_dir)
    assert df.loc["bigger.png", table.STATUS] != "ERROR"
    assert "resized from 320x240 to the baseline's 160x120" in df.loc["bigger.png", table.NOTES]
    assert df.loc["bigger.png", table.WIDTH] == 320
    assert df.loc["bigger.png", "ssim"] > 0.9
    strict = run(run_dir, strict_size=True)
    assert strict.loc["bigger.png", table.STATUS] == "ERROR"
    assert (
        "differs from the baseline's 160x120 (--strict-size)"
        in strict.loc["bigger.png", table.ERROR]
    )
    assert strict.loc["same.png", table.STATUS] == "PASS"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(run_dir, baseline_img, orientation):
    """The file stores rotated pixels and an EXIF tag that turns them upright."""
    stored = {
        3: cv2.rotate(baseline_img, cv2.ROTATE_180),
        6: cv2.rotate(baseline_img, cv2.ROTATE_90_COUNTERCLOCKWISE),
        8: cv2.rotate(baseline_img, cv2.ROTATE_90_CLOCKWISE),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored[:, :, ::-1]).save(run_dir / "rotated.png", exif=exif)
    df = run(run_dir)
    assert df.loc["rotated.png", "psnr"] == np.inf
    assert f"EXIF orientation {orientation} applied" in df.loc["rotated.png", table.NOTES]


@pytest.mark.parametrize(
    "name",
    ["données_日本.png", "=HYPERLINK(1).png", "<img src=x onerror=alert(1)>.png", "+1 -2 @3.png"],
)
def test_odd_file_names(run_dir, baseline_img, name):
    write(run_dir / "tmp.png", noisy(baseline_img, 0.02))
    (run_dir / "tmp.png").rename(run_dir / name)
    result = pipeline.run(Config(inputs=(run_dir,), out=run_dir.parent / "o", jobs=1))
    df = result.table.set_index(table.FILE)
    assert df.loc[name, table.STATUS] in ("PASS", "WARN")
    csv = pd.read_csv(result.outputs["csv"], dtype={table.FILE: str})
    # A spreadsheet must read a formula-like name as text (OWASP): a leading ' in the CSV.
    assert ("'" + name if name[0] in "=+-@" else name) in set(csv[table.FILE])


def test_formats_and_extensions_that_labs_produce(run_dir, baseline_img):
    for ext, params in [
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
        (".tif", []),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        (".JPEG", []),
    ]:
        write(run_dir / f"copy{ext}", baseline_img, params)
    df = run(run_dir)
    for ext in (".tif", ".bmp", ".webp"):
        assert df.loc[f"copy{ext}", "psnr"] == np.inf, ext  # lossless
    assert df.loc["copy.jpg", "ssim"] > 0.95
    assert df.loc["copy.JPEG", table.STATUS] != "ERROR"


def few_colours(seed: int) -> np.ndarray:
    """A colour picture of at most 216 colours: a GIF holds it without loss."""
    return (smooth_image(seed) // 51 * 51).astype(np.uint8)


def test_gif_is_an_image_and_pillow_decodes_it_exactly(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    base = few_colours(0)
    write(folder / "baseline.png", base)
    rgb = Image.fromarray(base[:, :, ::-1])
    rgb.save(folder / "copy.gif")
    grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    Image.fromarray(grey).save(folder / "grey.GIF")
    # a palette whose entry 0 is transparent: those pixels are composited on white
    holes = base.copy()
    holes[:8] = 0
    pal = Image.fromarray(holes[:, :, ::-1]).quantize(colors=255, dither=Image.Dither.NONE)
    assert np.asarray(pal.convert("RGB"))[:8].max() == 0
    pal.save(folder / "transparent.gif", transparency=int(np.asarray(pal)[0, 0]))
    whole = (folder / "copy.gif").read_bytes()
    (folder / "cut.gif").write_bytes(whole[: len(whole) // 2])  # its header whole
    broken = bytearray(whole)  # its LZW stream broken a third of the way in
    broken[len(whole) // 3 : len(whole) // 3 + 8] = b"\xff" * 8
    (folder / "broken.gif").write_bytes(broken)
    df = run(folder)
    assert df.loc["copy.gif", "psnr"] == np.inf
    assert df.loc["grey.GIF", "psnr"] == np.inf  # compared in grey, as a grey PNG would be
    assert "greyscale" in df.loc["grey.GIF", table.NOTES]
    assert "alpha composited on white" in df.loc["transparent.gif", table.NOTES]
    loaded = images.load(folder / "transparent.gif", max_pixels=10**8).pixels
    assert (loaded[:8] == 255).all() and np.array_equal(loaded[8:], base[8:])
    assert df.loc["cut.gif", table.STATUS] == "ERROR"
    assert df.loc["cut.gif", table.ERROR].startswith("truncated or corrupt GIF data: ")
    # an error while the palette was looked at must not be swallowed: a second load of
    # the half-decoded image returned its pixels as if whole
    assert df.loc["broken.gif", table.ERROR] == (
        "truncated or corrupt GIF data: broken data stream when reading image file"
    )


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("anim.gif", "frames"),
        ("anim.png", "frames"),
        ("anim.webp", "frames"),
        ("stack.tif", "pages"),
    ],
)
def test_a_file_of_several_frames_is_compared_by_its_first_with_a_note(tmp_path, name, what):
    folder = tmp_path / "r"
    folder.mkdir()
    base = few_colours(0)
    write(folder / "baseline.png", base)
    first, *rest = [Image.fromarray(img[:, :, ::-1]) for img in (base, 255 - base, few_colours(1))]
    extra = {"lossless": True} if name.endswith(".webp") else {}
    first.save(folder / name, save_all=True, append_images=rest, **extra)
    df = run(folder)
    assert df.loc[name, "psnr"] == np.inf
    assert f"the first of its 3 {what} compared" in df.loc[name, table.NOTES]
    write(folder / "single.tif", base)
    assert "the first" not in str(run(folder).loc["single.tif", table.NOTES])


def test_a_png_with_large_compressed_text_is_read(tmp_path):
    """Pillow stops reading a PNG's chunks when a compressed text chunk (an XMP packet, an
    instrument's XML) inflates past 1 MB; the file was an ERROR row, "corrupt image
    header", though its pixels are whole. Its size now comes from IHDR, so a bomb with
    such a chunk is still refused before decoding."""
    from PIL import PngImagePlugin

    folder = tmp_path / "r"
    folder.mkdir()
    base = few_colours(0)
    write(folder / "baseline.png", base)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<rdf:li>ancestor</rdf:li>" * 60_000, zip=True)
    Image.fromarray(base[:, :, ::-1]).save(folder / "xmp.png", pnginfo=info)
    text = (folder / "xmp.png").read_bytes()
    itxt = text.index(b"iTXt") - 4
    bomb = png_claiming(100_000, 100_000)
    (folder / "bomb.png").write_bytes(bomb[:33] + text[itxt:])
    df = run(folder)
    assert df.loc["xmp.png", "psnr"] == np.inf
    assert df.loc["bomb.png", table.ERROR].startswith("100000x100000 is 10,000.0 Mpx, over")


def jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG cut into its segments, each scan with its entropy-coded data."""
    parts, at = [data[:2]], 2
    while data[at + 1] != 0xD9:
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if data[at + 1] == 0xDA:  # the scan's data runs to the next marker
            end = data.index(b"\xff", end)
            while data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end = data.index(b"\xff", end + 2)
        parts.append(data[at:end])
        at = end
    return parts + [data[at:]]


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(tmp_path):
    """Each scan of a progressive JPEG is decoded over every block of the picture, so a
    file of 100,000 scans (1.6 MB at 2048 x 2048 px) took OpenCV 30 s, and a larger one
    would hold a cron run for hours. Past 500 scans, as libjpeg-turbo's fuzzers limit it,
    the file is an ERROR row before decoding. The count steps over segments by length
    and stops at the end of the image, so marker-like bytes in a comment or an EXIF
    thumbnail, or a motion photo's video after the image, count nothing, and a comment
    holding an end-of-image marker between scans hides none."""
    folder = tmp_path / "r"
    folder.mkdir()
    base = smooth_image(0)
    write(folder / "baseline.png", base)
    buffer = io.BytesIO()
    Image.fromarray(base[:, :, ::-1]).save(buffer, "JPEG", quality=95, progressive=True)
    parts = jpeg_segments(buffer.getvalue())
    scans = [i for i, part in enumerate(parts) if part[1] == 0xDA]
    assert len(scans) == 10  # libjpeg's progressive script for colour
    assert images._jpeg_scans(buffer.getvalue()) == (10, False)
    last = scans[-1]  # an AC refinement scan, repeated: what a crafted file does
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 4000) + b"\xff\xda\xff\xd9" * 1000

    def joined(extra_scans: int, between: bytes = b"") -> bytes:
        tail = parts[last + 1 :]
        return b"".join(parts[: last + 1]) + between + parts[last] * extra_scans + b"".join(tail)

    (folder / "many_scans.jpg").write_bytes(joined(images.MAX_SCANS))
    (folder / "hidden_scans.jpg").write_bytes(joined(images.MAX_SCANS, between=comment))
    (folder / "some_scans.jpg").write_bytes(joined(images.MAX_SCANS - 20))
    plain = b"".join(parts)
    marked = plain[:2] + comment + plain[2:] + b"\xff\xda" * 10_000  # and a trailer
    (folder / "plain.jpg").write_bytes(plain)
    (folder / "marked.jpg").write_bytes(marked)
    assert images._jpeg_scans(marked) == (10, False)
    # 20,000 empty segments: walked in Python at 0.6 us each (libjpeg in C: 0.05 s for
    # 4 million), so a file of them is refused from the count instead of walked to its end
    padded = plain[:2] + b"\xff\xe0\x00\x02" * 20_000 + plain[2:]
    (folder / "padded.jpg").write_bytes(padded)
    df = run(folder)
    for name in ("many_scans.jpg", "hidden_scans.jpg"):
        assert df.loc[name, table.ERROR] == (
            "a JPEG of more than 500 scans: decoding repeats over the whole picture for "
            "each scan, so such a file takes minutes to days (a crafted file; an encoder "
            "writes about 10)"
        ), name
    assert df.loc["padded.jpg", table.ERROR] == (
        "a JPEG of more than 10,000 marker segments: a crafted file (a camera's has a few dozen)"
    )
    assert df.loc["some_scans.jpg", "status"] != "ERROR"
    assert df.loc["marked.jpg", "ssim"] == df.loc["plain.jpg", "ssim"] > 0.98


def test_a_tiffs_pages_are_counted_up_to_a_limit(tmp_path):
    """Pillow's page count checks each page against every one before it: a hostile TIFF of
    one-pixel pages made the header's count grow with their square (20,000 pages in
    2.5 MB: 3.6 s). Counting stops past 1,000, and the note says so. So it does for a GIF,
    whose frames Pillow skips in Python (500,000 one-pixel frames, 11.5 MB: 1.2 s)."""
    one = Image.fromarray(np.zeros((1, 1), np.uint8))
    one.save(tmp_path / "many.tif", save_all=True, append_images=[one] * 1001)
    one.save(tmp_path / "some.tif", save_all=True, append_images=[one] * 999)
    other = Image.fromarray(np.full((1, 1), 255, np.uint8))  # GIF merges equal frames
    one.save(tmp_path / "many.gif", save_all=True, append_images=[other, one] * 500 + [other])
    one.save(tmp_path / "some.gif", save_all=True, append_images=[other, one] * 499 + [other])
    one.save(tmp_path / "many.png", save_all=True, append_images=[other, one] * 500 + [other])
    assert images.PAGES_COUNTED == 1000
    notes = {p.name: images.load(p, max_pixels=10**8).notes for p in tmp_path.iterdir()}
    assert notes["many.tif"] == ("the first of its more than 1,000 pages compared",)
    assert notes["some.tif"] == ("the first of its 1,000 pages compared",)
    assert notes["many.gif"] == ("the first of its more than 1,000 frames compared",)
    assert notes["some.gif"] == ("the first of its 1,000 frames compared",)
    assert notes["many.png"] == ("the first of its 1,002 frames compared",)  # from its header


def test_a_gifs_frames_are_skipped_only_up_to_the_limit(tmp_path, monkeypatch):
    """Pillow skips a GIF's frames in Python (500,000 one-pixel frames, 11.5 MB: 1.2 s,
    and minutes for a file at max_file_mb): the count steps through no more than 1,001
    of 3,000."""
    from PIL import GifImagePlugin

    one = Image.fromarray(np.zeros((1, 1), np.uint8))
    other = Image.fromarray(np.full((1, 1), 255, np.uint8))  # GIF merges equal frames
    one.save(tmp_path / "long.gif", save_all=True, append_images=[other, one] * 1500)
    steps = []
    step = GifImagePlugin.GifImageFile._seek
    monkeypatch.setattr(
        GifImagePlugin.GifImageFile,
        "_seek",
        lambda im, *a, **k: steps.append(1) or step(im, *a, **k),
    )
    notes = images.load(tmp_path / "long.gif", max_pixels=10**8).notes
    assert notes == ("the first of its more than 1,000 frames compared",)
    assert 1000 < len(steps) < 1100, len(steps)


def test_a_tiff_of_several_channels_per_pixel_is_refused_not_misread(tmp_path):
    """OpenCV reads a two-sample TIFF as its first channel at 8 bits, three grey samples
    (a microscope's channels) as a mix of them, five not at all: each was compared as a
    picture it is not, or failed with OpenCV's internals. They are ERROR rows that say the
    layout. OpenCV 5.0 reads a 16-bit colour TIFF stored plane by plane as noise, and a
    16-bit grey with alpha at 8 bits: those are refused while the installed OpenCV does
    so, and read exactly once it does not. Grey, colour (interleaved, or planar at 8
    bits), colour with alpha, 8-bit grey with alpha, BigTIFF and big-endian still load."""
    import tifffile

    rng = np.random.default_rng(3)
    a = rng.integers(0, 60000, (32, 48), dtype=np.uint16)
    b, c = 60000 - a, a // 2
    grey, rgb = {"photometric": "minisblack"}, {"photometric": "rgb"}
    alpha, planar = {"extrasamples": ["unassalpha"]}, {"planarconfig": "separate"}
    not_alpha = {"extrasamples": ["unspecified"]}
    refused = {
        "two.tif": (np.stack([a, b], -1), grey | {"planarconfig": "contig"}),
        "two_planar.tif": (np.stack([a, b]), grey | planar),
        "three_grey.tif": (np.stack([a, b, c], -1), grey | {"planarconfig": "contig"}),
        "five.tif": (np.stack([a, b, c, a, b], -1), grey | {"planarconfig": "contig"}),
        "rgb_plus_two.tif": (np.stack([a, b, c, a, b], -1), rgb | {"extrasamples": [0, 0]}),
    }
    read = {
        "grey.tif": (a, grey),
        "bigtiff.tif": (a, grey | {"bigtiff": True}),
        "bigendian.tif": (a, grey | {"byteorder": ">"}),
        "rgb.tif": (np.stack([a, b, c], -1), rgb),
        "rgb8_planar.tif": ((np.stack([a, b, c]) >> 8).astype(np.uint8), rgb | planar),
        "rgba.tif": (np.stack([a, b, c, a], -1), rgb | alpha),
        "grey_alpha8.tif": ((np.stack([a, b], -1) >> 8).astype(np.uint8), grey | alpha),
        # a fourth sample marked not alpha (a saved selection), all 0: not a white picture
        "rgb_extra.tif": (np.stack([a, b, c, 0 * a], -1), rgb | not_alpha),
        "rgb8_extra.tif": ((np.stack([a, b, c, 0 * a], -1) >> 8).astype(np.uint8), rgb | not_alpha),
    }  # fmt: skip
    as_opencv_reads = {  # refused while the installed OpenCV misreads them
        "rgb16_planar.tif": (np.stack([a, b, c]), rgb | planar),
        "grey_alpha16.tif": (np.stack([a, b], -1), grey | alpha),
    }
    for name, (pixels, how) in (refused | read | as_opencv_reads).items():
        tifffile.imwrite(tmp_path / name, pixels, **how)
    planar_ok, alpha_ok = (
        images._opencv_reads("separate planes"),
        images._opencv_reads("grey and alpha"),
    )
    for name, misread in [(n, True) for n in refused] + [
        ("rgb16_planar.tif", not planar_ok),
        ("grey_alpha16.tif", not alpha_ok),
    ]:
        if not misread:
            read[name] = as_opencv_reads[name]
            continue
        with pytest.raises(images.ImageLoadError) as caught:
            images.load(tmp_path / name, max_pixels=10**8)
        said = str(caught.value)
        assert said.startswith("a ") and "OpenCV(" not in said and "\n" not in said, said

    def why(name: str) -> str | None:
        tags = images._tiff_tags((tmp_path / name).read_bytes(), images._TIFF_LAYOUT)
        return images._tiff_refused(tags)

    assert why("two.tif").startswith("a TIFF of 2 grey channels per pixel (a multichannel")
    assert why("five.tif").endswith("save each channel as a file of its own")
    assert why("rgb_plus_two.tif").startswith("a colour TIFF with 2 more channels per pixel")
    if not planar_ok:
        assert "in separate planes, which OpenCV" in why("rgb16_planar.tif")
    if not alpha_ok:
        assert why("grey_alpha16.tif").startswith("a 16-bit grey TIFF with alpha, which OpenCV")
    loaded = {name: images.load(tmp_path / name, max_pixels=10**8).pixels for name in read}
    for name in ("grey.tif", "bigtiff.tif", "bigendian.tif", "grey_alpha16.tif"):
        if name in loaded:
            assert np.array_equal(loaded[name], a), name
    for name in ("rgb.tif", "rgb16_planar.tif"):
        if name in loaded:
            assert np.array_equal(loaded[name], np.stack([c, b, a], -1)), name  # B, G, R
    assert np.array_equal(
        loaded["rgb8_planar.tif"], (np.stack([c, b, a], -1) >> 8).astype(np.uint8)
    )
    assert loaded["rgba.tif"].dtype == np.uint16 and loaded["rgba.tif"].shape == (32, 48, 3)
    assert np.array_equal(loaded["grey_alpha8.tif"], (a >> 8).astype(np.uint8))
    assert np.array_equal(loaded["rgb_extra.tif"], np.stack([c, b, a], -1))
    assert np.array_equal(loaded["rgb8_extra.tif"], (np.stack([c, b, a], -1) >> 8).astype(np.uint8))
    notes = images.load(tmp_path / "rgb_extra.tif", max_pixels=10**8).notes
    assert notes == ("its fourth channel ignored: the TIFF marks it as not alpha",)
    # the tags are read from untrusted bytes: mutated headers give an answer, never a crash
    seed = (tmp_path / "two.tif").read_bytes()[:300]
    for _ in range(3000):
        mutated = bytearray(seed[: rng.integers(8, 300)])
        for _ in range(rng.integers(1, 5)):
            mutated[rng.integers(0, len(mutated))] = rng.integers(0, 256)
        tags = images._tiff_tags(bytes(mutated), images._TIFF_LAYOUT)
        if tags:
            images._tiff_refused(tags)


def packed_tiff(values: np.ndarray, bits: int, photometric: int = 1) -> bytes:
    """A grey TIFF of ``values`` packed at ``bits`` per sample (10, 12, 14), as some
    cameras write them: each row's samples back to back, most significant bit first."""
    made = images._tiff_bytes(values[None].astype(np.uint16), photometric=photometric, planar=False)
    tags = dict(images._tiff_tags(made, frozenset({273})))
    rows = []
    for row in values:
        text = "".join(f"{int(v):0{bits}b}" for v in row)
        text += "0" * (-len(text) % 8)
        rows.append(int(text, 2).to_bytes(len(text) // 8, "big"))
    data = bytearray(made[: tags[273][0]]) + b"".join(rows)
    at = made.index(struct.pack("<HHI", 258, 3, 1))  # BitsPerSample 16 -> bits
    data[at + 8 : at + 10] = struct.pack("<H", bits)
    at = made.index(struct.pack("<HHI", 279, 4, 1))  # the strip's byte count
    data[at + 8 : at + 12] = struct.pack("<I", len(b"".join(rows)))
    return bytes(data)


def test_a_tiff_packed_at_12_bits_is_not_widened_again_by_bits(tmp_path, caplog):
    """OpenCV returns a TIFF packed at 10, 12 or 14 bits per sample on the 16-bit scale
    (v << 16 - b). With bits = 12, set for a camera's 12-bit values in 16-bit TIFFs, such
    a file was clipped to 4095 and shifted again: nearly white, with a note counting the
    clipped values. It is now left as it is, with a note, and against the same values
    stored unpacked it scores PSNR inf, whichever of the two is the baseline."""
    import tifffile

    values = smooth_image(0, shape=(24, 40)).astype(np.uint16) * 16  # 12 bits: 0 .. 4080
    for b in (10, 12, 14):
        (tmp_path / f"p{b}.tif").write_bytes(packed_tiff(values >> 2 << (b - 10), b))
        loaded = images.load(tmp_path / f"p{b}.tif", max_pixels=10**8)
        assert loaded.scaled_bits == b
        assert np.array_equal(loaded.pixels, values >> 2 << 6)  # OpenCV: v << 16 - b
    for baseline in ("baseline.tif", "packed.tif"):
        folder = tmp_path / baseline
        folder.mkdir()
        tifffile.imwrite(
            folder / ("baseline.tif" if baseline == "baseline.tif" else "plain.tif"), values
        )
        (folder / ("packed.tif" if baseline == "baseline.tif" else "baseline.tif")).write_bytes(
            packed_tiff(values, 12)
        )
        caplog.clear()
        df = run(folder, bits=12)
        other = "packed.tif" if baseline == "baseline.tif" else "plain.tif"
        assert df.loc[other, "psnr"] == np.inf, df.loc[other, "notes"]
        assert "clipped" not in caplog.text and "clipped" not in df.loc[other, "notes"]
    assert df.loc["plain.tif", "notes"] == ""
    folder = tmp_path / "baseline.tif"
    assert run(folder, bits=12).loc["packed.tif", "notes"] == (
        "a TIFF packed at 12 bits per sample, read on the 16-bit scale: bits = 12 not applied to it"
    )


def with_sbit(png: bytes, significant: bytes) -> bytes:
    """``png`` with an sBIT chunk of ``significant`` after its IHDR, as the PNG standard
    places it (before PLTE and the pixel data)."""
    chunk = struct.pack(">I4s", len(significant), b"sBIT") + significant
    chunk += struct.pack(">I", zlib.crc32(b"sBIT" + significant))
    return png[:33] + chunk + png[33:]


def test_a_png_whose_sbit_gives_12_bits_is_not_widened_again_by_bits(tmp_path, caplog):
    """A 12-bit camera's 16-bit PNG, written as the PNG standard has it: values scaled to
    the full 16-bit range, and an sBIT chunk saying 12 of the bits are significant. With
    bits = 12, set for the same camera's TIFFs of 0-4095, such a PNG was clipped to 4095
    and shifted again: FAIL against its own picture (a 300 x 200 px one: SSIM 0.56,
    PSNR 7.4 dB, 59,902 of its values counted as clipped). It is now left as it is, with
    a note, and scores PSNR inf against the TIFF, whichever of the two is the baseline.
    An sBIT that gives all 16 bits, an alpha byte, and a PNG with no sBIT change nothing."""
    values = smooth_image(0, shape=(24, 40)).astype(np.uint16) * 16  # 12 bits: 0 .. 4080
    scaled = cv2.imencode(".png", values << 4)[1].tobytes()
    colour = cv2.imencode(".png", cv2.merge([values << 4] * 3))[1].tobytes()
    with_alpha = cv2.imencode(".png", cv2.merge([values << 4] * 3 + [values * 0 + 65535]))[1]
    for data, significant, want in (
        (scaled, b"\x0c", 12),
        (colour, b"\x0a\x0c\x0b", 12),  # the most of the colour samples
        (with_alpha.tobytes(), b"\x0a\x0a\x0a\x10", 10),  # alpha's 16 not counted
        (scaled, b"\x10", 0),  # all 16: nothing to say
        (scaled, b"\x00", 0),  # invalid: ignored
        (scaled, b"", 0),  # no significant bits given: ignored
        (cv2.imencode(".png", (values >> 4).astype(np.uint8))[1].tobytes(), b"\x04", 0),  # 8-bit
    ):
        (tmp_path / "s.png").write_bytes(with_sbit(data, significant))
        assert images.load(tmp_path / "s.png", max_pixels=10**8).scaled_bits == want, significant
    (tmp_path / "s.png").write_bytes(scaled)
    assert images.load(tmp_path / "s.png", max_pixels=10**8).scaled_bits == 0
    for baseline in ("baseline.tif", "baseline.png"):
        folder = tmp_path / baseline
        folder.mkdir()
        other = "scaled.png" if baseline == "baseline.tif" else "plain.tif"
        tif, png = ("baseline.tif", other) if baseline == "baseline.tif" else (other, baseline)
        cv2.imwrite(str(folder / tif), values)
        (folder / png).write_bytes(with_sbit(scaled, b"\x0c"))
        caplog.clear()
        df = run(folder, bits=12)
        assert df.loc[other, "psnr"] == np.inf, df.loc[other, "notes"]
        assert "clipped" not in caplog.text and "clipped" not in df.loc[other, "notes"]
    assert df.loc["plain.tif", "notes"] == ""
    assert run(tmp_path / "baseline.tif", bits=12).loc["scaled.png", "notes"] == (
        "a PNG of 12 significant bits (its sBIT chunk), stored on the 16-bit scale: "
        "bits = 12 not applied to it"
    )


def test_a_16_bit_image_of_a_camera_of_fewer_bits_says_which_bits_to_set(tmp_path):
    """Against an 8-bit baseline a 16-bit image is compared by its top 8 bits. An image
    whose values use only 8 or 12 of its 16 bits (Pillow's convert("I;16") keeps 0-255;
    a 12-bit camera writes 0-4095 without sBIT) is then nearly black: FAIL, SSIM near 0,
    with a note that did not say why. The note now names its bits and the setting; with
    that setting the image matches. A 16-bit image using all 16 bits gets no such advice."""
    grey = smooth_image(0, shape=(48, 64))
    folder = tmp_path / "day"
    folder.mkdir()
    cv2.imwrite(str(folder / "baseline.png"), grey)
    cv2.imwrite(str(folder / "eight.png"), grey.astype(np.uint16))  # 0-255 of 65535
    cv2.imwrite(str(folder / "twelve.png"), grey.astype(np.uint16) << 4)  # 0-4080
    cv2.imwrite(str(folder / "full.png"), grey.astype(np.uint16) * 257)  # all 16 bits
    df = run(folder)
    assert df.loc["eight.png", "status"] == "FAIL"
    assert df.loc["eight.png", "notes"].startswith(
        "16-bit image compared at the baseline's 8-bit depth (top 8 bits); its values use 8 "
        "of the 16 bits (at most 255), which leaves the top 8 nearly black: for an 8-bit "
        "camera set bits = 8"
    )
    assert (
        "at most 4095), which leaves the top 8 nearly black: for a 12-bit camera set bits = 12"
        in df.loc["twelve.png", "notes"]
    )
    assert df.loc["full.png", "psnr"] == np.inf and "set bits" not in df.loc["full.png", "notes"]
    assert run(folder, bits=8).loc["eight.png", "psnr"] == np.inf
    assert run(folder, bits=12).loc["twelve.png", "psnr"] == np.inf


def test_a_white_is_zero_tiff_is_read_as_the_picture_it_shows(tmp_path):
    """In a WhiteIsZero TIFF 0 is white. OpenCV inverts an 8-bit one but returned a 16-bit
    one's stored values, a negative: compared with the same picture stored BlackIsZero
    it scored SSIM near -1. Both depths now load as the picture, and against each other
    PSNR is inf."""
    import tifffile

    shown = smooth_image(0, shape=(120, 160)).astype(np.uint16) * 257  # 0 is black
    tifffile.imwrite(tmp_path / "baseline.tif", shown, photometric="minisblack")
    tifffile.imwrite(tmp_path / "white16.tif", 65535 - shown, photometric="miniswhite")
    tifffile.imwrite(
        tmp_path / "white8.tif", 255 - (shown >> 8).astype(np.uint8), photometric="miniswhite"
    )
    for name in ("white16.tif", "white8.tif"):
        loaded = images.load(tmp_path / name, max_pixels=10**8).pixels
        want = shown if loaded.dtype == np.uint16 else (shown >> 8).astype(np.uint8)
        assert np.array_equal(loaded, want), name
    df = run(tmp_path)
    assert df.loc["white16.tif", "psnr"] == np.inf and df.loc["white8.tif", "psnr"] == np.inf
    # a packed 12-bit one: OpenCV returns it on the 16-bit scale (v << 4), so it is
    # inverted over 65535, not over 4095 (which clipped nearly every value to black)
    twelve = (shown >> 4)[:4, :6]
    (tmp_path / "white12.tif").write_bytes(packed_tiff(4095 - twelve, 12, photometric=0))
    loaded = images.load(tmp_path / "white12.tif", max_pixels=10**8).pixels
    assert np.abs(loaded.astype(int) - (twelve.astype(int) << 4)).max() <= 15


def test_the_opencv_probe_tiffs_are_what_they_say():
    """The probes behind _opencv_reads are valid TIFFs of their layout (tifffile reads
    them exactly), and the planar one's interleaved twin decodes exactly in OpenCV: a
    probe that fails says OpenCV misreads the layout, not that the probe is broken."""
    import io

    import tifffile

    planes = np.random.default_rng(0).integers(0, 65536, (3, 4, 6), np.uint16)
    for planar in (True, False):
        data = images._tiff_bytes(planes, photometric=2, planar=planar)
        back = tifffile.imread(io.BytesIO(data))
        assert np.array_equal(back if planar else np.moveaxis(back, -1, 0), planes)
        assert tifffile.TiffFile(io.BytesIO(data)).pages[0].planarconfig == (2 if planar else 1)
    twin = cv2.imdecode(
        np.frombuffer(images._tiff_bytes(planes, photometric=2, planar=False), np.uint8), -1
    )
    assert np.array_equal(twin, np.moveaxis(planes[::-1], 0, -1))
    grey_alpha = images._tiff_bytes(planes[:2], photometric=1, planar=False)
    assert np.array_equal(tifffile.imread(io.BytesIO(grey_alpha)), np.moveaxis(planes[:2], 0, -1))
    assert images._tiff_tags(grey_alpha, images._TIFF_LAYOUT)[338] == (2,)  # unassociated alpha
    white = tifffile.TiffFile(
        io.BytesIO(images._tiff_bytes(planes[:1], photometric=0, planar=False))
    )
    assert white.pages[0].photometric == 0 and np.array_equal(white.asarray(), planes[0])


def test_a_frame_count_that_fails_still_reads_the_first_frame():
    """A count that ends in an error (a later frame's header broken) is one frame: the
    first is still read, and nothing else (an UnboundLocalError) escapes."""

    class Broken:
        format = "WEBP"

        @property
        def n_frames(self):
            raise EOFError("no frame after the first")

    class BrokenGif:
        format = "GIF"

        def seek(self, frame):
            raise OSError("image file is truncated")

    assert images._frames(Broken()) == 1
    assert images._frames(BrokenGif()) == 1


def test_recursive_descends_and_names_rows_by_relative_path(run_dir, baseline_img):
    sub = run_dir / "day2" / "plots"
    sub.mkdir(parents=True)
    write(sub / "same.png", baseline_img)
    assert "day2/plots/same.png" not in run(run_dir).index
    df = run(run_dir, recursive=True)
    assert df.loc["day2/plots/same.png", "ssim"] == 1.0


def test_unreadable_baseline_stops_the_run(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "baseline.png").write_bytes(b"nope")
    write(folder / "a.png", smooth_image(0))
    with pytest.raises(pipeline.ReporterError, match=r"baseline .*baseline.png: not a readable"):
        pipeline.run(Config(inputs=(folder,), out=tmp_path / "o"))


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_the_summary_says_why_files_were_skipped(run_dir: Path, tmp_path: Path):
    """A pipe and a broken link are not "not images": the summary gives each reason."""
    import os

    os.mkfifo(run_dir / "stream.png")
    (run_dir / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (run_dir / "loop.png").symlink_to(run_dir / "loop.png")
    (run_dir / "zero.png").symlink_to("/dev/zero")
    (run_dir / "notes.txt").write_text("x")
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    why = {s["path"]: s["reason"] for s in result.meta["skipped"]}
    assert why[str(run_dir / "gone.png")] == "a broken link"
    assert why[str(run_dir / "loop.png")] == "a broken link"
    assert why[str(run_dir / "stream.png")] == "not a regular file"
    # a link to a device is not broken: it is not a regular file (reading /dev/zero never ends)
    assert why[str(run_dir / "zero.png")] == "not a regular file"
    assert (
        "5 files skipped (a broken link: 2; not a regular file: 2; "
        "not an image file extension: 1); see the log." in result.summary
    )


def test_another_name_for_a_file_is_told_not_dropped_in_silence(
    run_dir: Path, tmp_path: Path, monkeypatch, caplog
):
    """A link in the folder to an image it holds, or to the baseline, names a file
    already compared: it is compared once, and listed as skipped with its reason, so
    the files the summary counts add up to the folder's. The same file named twice in
    the same spelling, or the baseline given by an absolute path, is no other name."""
    (run_dir / "zz_latest.png").symlink_to("noisy.png")
    (run_dir / "reference.png").symlink_to(run_dir / "baseline.png")
    with caplog.at_level("INFO", logger="reporter"):
        result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    assert sorted(result.table[table.FILE]) == ["noisy.png", "same.png"]
    why = {s["path"]: s["reason"] for s in result.meta["skipped"]}
    assert why == {
        str(run_dir / "zz_latest.png"): "another name for a file already listed",
        str(run_dir / "reference.png"): "another name for a file already listed",
    }
    assert f"another name for a file already listed, {run_dir / 'noisy.png'}" in caplog.text
    assert f"another name for a file already listed, {run_dir / 'baseline.png'}" in caplog.text
    assert "2 files skipped (another name for a file already listed: 2)" in result.summary
    # a link whose name sorts before baseline.png: the baseline is still found by its name
    (run_dir / "reference.png").rename(run_dir / "a_reference.png")
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o0", jobs=1))
    assert result.meta["baseline"]["file"] == "baseline.png"
    assert sorted(result.table[table.FILE]) == ["noisy.png", "same.png"]
    why = {s["path"]: s["reason"] for s in result.meta["skipped"]}
    assert why[str(run_dir / "a_reference.png")] == "another name for a file already listed"
    (run_dir / "a_reference.png").rename(run_dir / "reference.png")
    # --baseline outside the folder, which holds a link to it
    ref = tmp_path / "ref.png"
    (run_dir / "baseline.png").rename(ref)
    (run_dir / "reference.png").unlink()
    (run_dir / "reference.png").symlink_to(ref)
    result = pipeline.run(Config(inputs=(run_dir,), baseline=ref, out=tmp_path / "o1", jobs=1))
    assert sorted(result.table[table.FILE]) == ["noisy.png", "same.png"]
    why = {s["path"]: s["reason"] for s in result.meta["skipped"]}
    assert why[str(run_dir / "reference.png")] == "another name for the baseline"
    assert "another name for the baseline: 1" in result.summary
    # the same spelling twice, and the baseline by another spelling of its own path
    monkeypatch.chdir(tmp_path)
    for link in ("zz_latest.png", "reference.png"):
        (run_dir / link).unlink()
    ref.rename(run_dir / "baseline.png")
    result = pipeline.run(
        Config(
            inputs=(Path("run"), Path("run/noisy.png")),
            baseline=run_dir / "baseline.png",
            out=tmp_path / "o2",
            jobs=1,
        )
    )
    assert sorted(result.table[table.FILE]) == ["noisy.png", "same.png"]
    assert result.meta["skipped"] == []


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_in_the_folder_is_skipped_not_read(run_dir: Path, tmp_path: Path):
    """Reading a FIFO blocks until someone writes to it: a scheduled run would hang."""
    import os

    os.mkfifo(run_dir / "stream.png")
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    assert "stream.png" not in set(result.table[table.FILE])
    assert {"path": str(run_dir / "stream.png"), "reason": "not a regular file"} in result.meta[
        "skipped"
    ]
    with pytest.raises(pipeline.ReporterError, match="is a pipe: give image files or folders"):
        pipeline.run(
            Config(
                inputs=(run_dir / "stream.png",),
                baseline=run_dir / "baseline.png",
                out=tmp_path / "o2",
            )
        )


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_never_holds_the_command_before_its_run(run_dir: Path, tmp_path: Path):
    """Before its heavy imports, the command reads the header of the image it guesses is
    the baseline, to start the workers' server early. With --baseline first (or none
    named baseline) that guess was the first image file by name, a pipe here: opening it
    waited for a writer, and the run hung for ever. A pipe given as --baseline did the
    same. Now the guess reads regular files only: the first run compares the rest, and
    the second says in one line what the baseline is; a folder as the baseline too."""
    import os
    import subprocess

    day = tmp_path / "day"  # no file named baseline: the guess is the first by name
    day.mkdir()
    for name in ("same.png", "noisy.png"):
        (day / name).write_bytes((run_dir / name).read_bytes())
    os.mkfifo(day / "a_stream.png")
    command = [sys.executable, "-m", "reporter", "run", str(day), "--jobs", "2", "-q"]
    for n, (extra, code, said) in enumerate(
        (
            (["--baseline", "first"], 0, "WARNING skipped"),
            (["--baseline", str(day / "a_stream.png")], 2, "is a pipe: give one image file"),
            (["--baseline", str(day)], 2, "is a folder: give one image file"),
        )
    ):
        done = subprocess.run(
            [*command, "--out", str(tmp_path / f"o{n}"), *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_where_one_image_file_is_asked_for_is_one_line(run_dir: Path, tmp_path: Path):
    """'reporter baseline set' read the file it was given to check it is an image: a pipe
    waited for a writer for ever. Every read of an image now refuses a pipe or a device
    unread (``images.read_bytes``). A pipe as search's query or as the mask was 'no such
    file' or 'not found': each now says what it is (``names.not_a_file``), as does a
    history that is a pipe, a folder or a broken link, where SQLite's words were 'disk
    I/O error' and 'unable to open database file'. Exit status 2, nothing recorded."""
    import os
    import subprocess

    pipe = tmp_path / "stream.png"
    os.mkfifo(pipe)
    history = tmp_path / "h.sqlite"
    broken = tmp_path / "gone.sqlite"
    broken.symlink_to(tmp_path / "nowhere" / "h.sqlite")
    for argv, said in (
        (["baseline", "set", "X", str(pipe), "--reason", "r", "--history", str(history)],
         f"baseline {pipe}: a pipe, not an image file: not read; nothing was recorded"),
        (["search", str(pipe), str(run_dir), "--out", str(tmp_path / "s")],
         f"query {pipe} is a pipe: give one image file"),
        (["search", str(run_dir), str(run_dir), "--out", str(tmp_path / "s")],
         f"query {run_dir} is a folder: give one image file"),
        (["run", str(run_dir), "--mask", str(pipe), "--out", str(tmp_path / "m")],
         f"mask {pipe} is a pipe: give one image file"),
        (["run", str(pipe), str(run_dir), "--out", str(tmp_path / "i")],
         f"{pipe} is a pipe: give image files or folders"),
        (["run", str(run_dir), "--series", "X", "--history", str(pipe)],
         f"history {pipe} is a pipe: give the database's file name"),
        (["history", "X", "--history", str(tmp_path)],
         f"history {tmp_path} is a folder: give the database's file name"),
        (["run", str(run_dir), "--series", "X", "--history", str(broken)],
         f"history {broken} is a broken link: give the database's file name"),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "reporter", *argv, "-q"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr == f"reporter: error: {said}\n"
    assert not history.exists()


def test_exif_orientation_of_a_camera_jpeg(run_dir, baseline_img):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated a quarter turn anticlockwise; EXIF says turn it back
    stored = cv2.rotate(baseline_img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    Image.fromarray(stored[:, :, ::-1]).save(run_dir / "camera.jpg", quality=98, exif=exif)
    df = run(run_dir)
    assert "EXIF orientation 6 applied" in df.loc["camera.jpg", table.NOTES]
    assert "resized" not in df.loc["camera.jpg", table.NOTES]  # upright: the baseline's shape
    assert df.loc["camera.jpg", "ssim"] > 0.95


def test_a_file_over_the_size_limit_is_an_error_row_and_never_read(run_dir, tmp_path):
    """A 3 GB file named .png (sparse: it costs no disk) would be read whole."""
    import os

    huge = run_dir / "huge.png"
    with open(huge, "wb") as fh:
        fh.truncate(3_000_000_000)
    padded = run_dir / "padded.png"
    padded.write_bytes((run_dir / "noisy.png").read_bytes() + b"\0" * 2_000_000)
    result = pipeline.run(
        Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, formats=("csv",), max_file_mb=1.5)
    )
    df = result.table.set_index(table.FILE)
    assert df.loc["huge.png", table.STATUS] == "ERROR"
    assert (
        "the file is 3,000 MB, over the limit of 1.5 MB (max_file_mb): not read"
        in (df.loc["huge.png", table.ERROR])
    )
    assert df.loc["padded.png", table.STATUS] == "ERROR"  # 2 MB of it, over 1.5 MB
    assert df.loc["noisy.png", table.STATUS] in ("PASS", "WARN")
    assert os.path.getsize(huge) == 3_000_000_000
    # The default (1024 MB) refuses the huge one too, without reading it.
    default = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "d", jobs=1, formats=("csv",)))
    row = default.table.set_index(table.FILE).loc["huge.png"]
    assert row[table.STATUS] == "ERROR" and "over the limit of 1,024 MB" in row[table.ERROR]


def test_an_opencv_assertion_is_told_in_words(tmp_path, monkeypatch, baseline_img):
    path = write(tmp_path / "odd.png", baseline_img)

    def assertion(*args, **kwargs):
        raise cv2.error("OpenCV(5.0) /io/src/grfmt_png.cpp:318: error: (-215:Assertion failed)")

    monkeypatch.setattr(cv2, "imdecode", assertion)
    with pytest.raises(images.ImageLoadError) as info:
        images.load(path, max_pixels=10**8)
    message = str(info.value)
    assert message.startswith("the PNG decoder refused the data: corrupt, or a variant")
    assert "-215" not in message and "grfmt" not in message


def test_a_decoders_own_words_go_to_the_row_not_to_stderr(tmp_path, capfd):
    """libpng prints "libpng error: ..." on descriptor 2 itself; it belongs in the row."""
    ok, buf = cv2.imencode(".png", smooth_image(0))
    data = bytearray(buf.tobytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x00" * 8  # an IDAT CRC error
    broken = tmp_path / "crc.png"
    broken.write_bytes(bytes(data))
    with pytest.raises(images.ImageLoadError, match=r"the decoder: libpng error: "):
        images.load(broken, max_pixels=10**8)
    ok, buf = cv2.imencode(".jpg", smooth_image(0))
    data = buf.tobytes()
    padded = tmp_path / "padded.jpg"  # junk before the end marker: decoded, with a warning
    padded.write_bytes(data[:-2] + b"\x00" * 17 + data[-2:])
    loaded = images.load(padded, max_pixels=10**8)
    assert any("the decoder warned: Corrupt JPEG data" in note for note in loaded.notes)
    assert capfd.readouterr().err == ""


def test_native_lines_are_tidied():
    from reporter.native import tidy

    raw = (
        b"[ERROR:0@0.418] global grfmt_tiff.cpp:117 TIFF_Error LZWDecode: short\n"
        b"[ERROR:0@0.419] global grfmt_tiff.cpp:117 TIFF_Error LZWDecode: short\n"
        b"libpng error: IDAT: CRC error\n\n\xff\xfe odd\nfour\nfive\n"
    )
    assert tidy(raw) == [
        "LZWDecode: short",
        "libpng error: IDAT: CRC error",
        "\ufffd\ufffd odd",
        "(and 2 more)",
    ]


def test_two_threads_decoding_at_once_keep_their_own_lines_and_descriptor_2(capfd):
    """Descriptor 2 is the process's: while one thread catches it around a decode, another
    thread's decode waits for it. Before, the second thread's lines went into the first's
    file, and it saved the first's file as "descriptor 2" and restored it: the process's
    standard error stayed in that file for good."""
    import os
    import threading
    import time

    from reporter.native import caught

    before = os.fstat(2)
    inside, done = threading.Event(), threading.Event()
    got: dict[str, list[str]] = {}

    def decode(name: str, first: bool) -> None:
        if not first:
            inside.wait(10)
        with caught() as lines:
            if first:
                inside.set()
                done.wait(10)
            os.write(2, f"{name} decoder\n".encode())
        got[name] = lines

    threads = [threading.Thread(target=decode, args=(n, n == "first")) for n in ("first", "second")]
    for thread in threads:
        thread.start()
    inside.wait(10)
    time.sleep(0.2)  # the second is at its caught() by now: before, the two overlapped here
    done.set()
    for thread in threads:
        thread.join()
    after = os.fstat(2)
    assert got == {"first": ["first decoder"], "second": ["second decoder"]}
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert capfd.readouterr().err == ""


PARTED = """
import logging, os, sys, threading
from reporter import native

log = logging.getLogger("a.worker")  # as Dask's: a handler on sys.stderr, made at import
log.addHandler(logging.StreamHandler(sys.stderr))
log.setLevel(logging.INFO)
native.python_stderr_apart()
with native.caught() as lines:
    thread = threading.Thread(target=log.info, args=("the worker's own line",))
    thread.start()
    thread.join()
    print("a warning from Python", file=sys.stderr)
    os.write(2, b"libpng warning: from C\\n")
print(lines)
"""


def test_a_workers_own_log_lines_are_not_a_decoders(tmp_path):
    """A Dask worker logs from its own threads while an image decodes in another (seen as
    a flaky test: "the decoder warned: ... distributed.worker - INFO - Run out-of-band
    function 'getpid'" in a row's notes). With Python's standard error apart from
    descriptor 2, only what C code writes there is caught; Python's lines still reach
    standard error."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PARTED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['libpng warning: from C']"
    assert "the worker's own line" in done.stderr and "a warning from Python" in done.stderr


def test_float_images_are_compared_over_the_stated_value_range(tmp_path, caplog):
    """A 32-bit float TIFF (ImageJ's 32-bit type) has no range of its own: with
    value_range it is brought to 16 bits over that range, so SSIM and PSNR take L = HI -
    LO (skimage's data_range, within 1e-4) and MSE stays in the data's units; NaN and
    values outside the range are counted in the notes; the baseline's facts say how it
    was read. Without the setting, a float baseline is one line (exit status 2), and a
    float image an ERROR row."""
    from skimage.metrics import structural_similarity

    folder = tmp_path / "r"
    folder.mkdir()
    base = (twelve_bit(0) / 4095.0).astype(np.float32)  # 0-1
    write(folder / "baseline.tif", base)
    dim = base * np.float32(0.7)
    write(folder / "dim.tif", dim)
    write(folder / "as16.tif", np.rint(base * 65535).astype(np.uint16))  # its 16-bit export
    holes = base.copy()
    holes[0, :3] = np.nan
    holes[1, :2] = (-0.5, 7.0)
    write(folder / "holes.tif", holes)

    with caplog.at_level("INFO", logger="reporter"):
        result = pipeline.run(
            Config(inputs=(folder,), out=tmp_path / "out", jobs=1, value_range=(0.0, 1.0))
        )
    df = result.table.set_index(table.FILE)
    ssim = structural_similarity(base, dim, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)  # fmt: skip
    mse = float(np.mean((base.astype(np.float64) - dim) ** 2))
    assert df.loc["dim.tif", "ssim"] == pytest.approx(ssim, abs=1e-4)
    assert df.loc["dim.tif", "mse"] == pytest.approx(mse, rel=1e-3)
    assert df.loc["dim.tif", "psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=0.01)
    assert df.loc["as16.tif", "psnr"] == np.inf  # the same scale as a 16-bit export
    notes = df.loc["holes.tif", table.NOTES]
    assert "3 NaN pixel value(s) compared as 0 (value_range)" in notes
    assert "2 pixel value(s) outside value_range 0 to 1 clipped" in notes
    assert "float32 values 0 to 1 compared on 16 bits (value_range)" in caplog.text
    depth = "float32, 0 to 1 on 16 bits (value_range)"
    assert result.record.baseline.depth == depth
    assert depth in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert list(result.meta["baseline"]["value_range"]) == [0.0, 1.0]
    assert "its 16-bit values use" not in caplog.text  # not a camera's 16 bits
    # bits is a camera's, not value_range's: the float images are measured the same
    twelve = run(folder, value_range=(0.0, 1.0), bits=12)
    assert twelve.loc["dim.tif", "ssim"] == df.loc["dim.tif", "ssim"]

    with pytest.raises(pipeline.ReporterError, match="float32 pixels need the range") as info:
        run(folder)
    assert "--value-range LO:HI" in str(info.value) and "\n" not in str(info.value)
    write(folder / "baseline.tif", np.rint(base * 65535).astype(np.uint16))
    plain = run(folder)
    assert plain.loc["dim.tif", table.STATUS] == "ERROR"
    assert "float32 pixels need the range of their values" in plain.loc["dim.tif", table.ERROR]
    assert plain.loc["as16.tif", "psnr"] == np.inf  # the others are compared as ever


def test_mses_default_floors_follow_the_range_of_the_values(tmp_path):
    """MSE is in squared units of the data, so its default floors (1.0 for the outlier
    rule's spread, 0.5 for the control rules' SD), set for 8-bit values, scale with the
    square of the run's range. Left at 1.0, a float run's MSE (about 1e-5) could never
    be an outlier, and a 16-bit run's would be one at a hair's difference. A floor the
    configuration gives is the user's and stays."""
    folder = tmp_path / "r"
    folder.mkdir()
    base = (twelve_bit(0) / 4095.0).astype(np.float32)
    rng = np.random.default_rng(1)
    write(folder / "baseline.tif", base)
    for i in range(7):
        write(folder / f"same{i}.tif", base + rng.normal(0, 0.002, base.shape).astype(np.float32))
    write(folder / "noisy.tif", base + rng.normal(0, 0.02, base.shape).astype(np.float32))
    watch = OutlierRule(metrics=("mse",))
    result = pipeline.run(
        Config(
            inputs=(folder,), out=tmp_path / "o1", jobs=1, value_range=(0.0, 1.0), outliers=watch
        )
    )
    df = result.table.set_index(table.FILE)
    assert df.loc["noisy.tif", "mse"] < 1e-3  # in the data's units, 0 to 1
    reasons = df.loc["noisy.tif", table.REASONS]
    assert "mse" in reasons and "outlier" in reasons
    assert not df.drop(index="noisy.tif")[table.REASONS].str.contains("mse").any()
    settings = result.meta["config"]
    assert settings["outliers"]["min_spread"]["mse"] == pytest.approx(1 / 255**2)
    assert settings["history"]["min_sd"]["mse"] == pytest.approx(0.5 / 255**2)
    assert settings["outliers"]["min_spread"]["ssim"] == 0.01  # the others have no units

    # the user's floor, in the units of the user's MSE, is kept as given
    own = OutlierRule(metrics=("mse",), min_spread=Floors({"mse": 1.0}, frozenset({"mse"})))
    result = pipeline.run(
        Config(inputs=(folder,), out=tmp_path / "o2", jobs=1, value_range=(0.0, 1.0), outliers=own)
    )
    assert not result.table[table.REASONS].str.contains("mse").any()
    assert result.meta["config"]["outliers"]["min_spread"]["mse"] == 1.0

    # 16 bits, and a 12-bit camera's values (bits = 12): MSE in 16-bit or 12-bit units
    for bits, top in ((16, 65535), (12, 4095)):
        write(folder / "baseline.tif", twelve_bit(0))
        for f in folder.glob("[sn]*.tif"):
            f.unlink()
        write(folder / "other.tif", twelve_bit(1))
        meta = pipeline.run(
            Config(inputs=(folder,), out=tmp_path / f"b{bits}", jobs=1, bits=bits)
        ).meta
        assert meta["config"]["outliers"]["min_spread"]["mse"] == pytest.approx((top / 255) ** 2)


def test_float_signed_and_32_bit_integer_pixels_map_linearly():
    """LO is 0 and HI 65535, rounded to the nearest; float64 and 32-bit integers keep
    float64, so a narrow range far from 0 keeps its steps; the collections' OWN_RANGE
    is the image's own finite minimum and maximum."""
    f = np.array([[0.0, 0.25, 1.0], [0.5, -1.0, np.inf]], np.float32)
    out, notes = images.to_16_bits(f, (0.0, 1.0))
    assert out.dtype == np.uint16
    assert out.tolist() == [[0, 16384, 65535], [32768, 0, 65535]]
    assert notes == ["2 pixel value(s) outside value_range 0 to 1 clipped"]
    far = np.array([[10**9, 10**9 + 500, 10**9 + 1000]], np.int32)
    assert images.to_16_bits(far, (1e9, 1e9 + 1000))[0].tolist() == [[0, 32768, 65535]]
    signed = np.array([[-500, 0, 499]], np.int16)
    assert images.to_16_bits(signed, images.OWN_RANGE)[0].tolist() == [
        [0, 32800, 65535]
    ]  # 500 / 999
    with pytest.raises(images.ImageLoadError, match="int16 pixels need the range"):
        images.to_16_bits(signed, None)
    with warnings.catch_warnings():  # no overflow: a warning is a stray line on stderr
        warnings.simplefilter("error")
        extremes = np.array([[-1.7e308, np.nan, 1.7e308, np.inf]])
        assert images.to_16_bits(extremes, images.OWN_RANGE)[0].tolist() == [[0, 0, 65535, 65535]]
        huge = np.array([[3.4e38, -3.4e38, np.inf]], np.float32)
        assert images.to_16_bits(huge, (-1e39, 1e39))[0].tolist() == [[43908, 21627, 65535]]
    with pytest.raises(images.ImageLoadError, match="complex64 pixels are not supported"):
        images.to_16_bits(np.zeros((2, 2), np.complex64), (0.0, 1.0))


def test_the_collections_see_a_float_image_by_its_own_range(tmp_path):
    """duplicates, search and cluster state no range: a float TIFF gets the hashes of its
    16-bit export, whatever its units."""
    from reporter.collection import features

    picture = twelve_bit(1)
    paths = {
        "float": write(tmp_path / "f.tif", (picture * 0.01 - 3).astype(np.float32)),
        "16": write(tmp_path / "s.tif", picture),
    }
    found = {
        name: features.compute(path, path.name, embedding=False, max_pixels=10**8, max_bytes=None)
        for name, path in paths.items()
    }
    assert found["float"].error is None
    assert found["float"].phash == found["16"].phash


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_phones_heic_and_avif_photos_are_read_upright(tmp_path, monkeypatch):
    """HEIC (an iPhone's photos: HEIF, read through pi-heif's libheif) and AVIF (Pillow's
    own) are found in a folder and compared like any image, upright: libheif turns a
    HEIC as its file says and leaves EXIF orientation 1, an AVIF's EXIF orientation is
    applied as a JPEG's. The HEIC fixtures were written by pillow-heif 1.9.0 (x265,
    quality 90) from the PNG below, one of them stored turned and tagged orientation 6."""
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    rgb = np.dstack([(x * 2) % 256, (y * 2) % 256, (x + y) % 256]).astype(np.uint8)
    rgb[10:40, 20:50] = (250, 30, 30)  # a red block, top left when upright
    folder = tmp_path / "phone"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "baseline.png")
    for name in ("plain.heic", "rotated.heic"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    Image.fromarray(rgb).save(folder / "plain.avif", quality=90)
    turned = Image.Exif()
    turned[0x0112] = 6
    Image.fromarray(np.rot90(rgb, 1).copy()).save(
        folder / "rotated.avif", quality=90, exif=turned.tobytes()
    )
    bgr = rgb[:, :, ::-1].astype(int)
    for name, fmt in [("plain.heic", "HEIF"), ("rotated.heic", "HEIF")] + [
        ("plain.avif", "AVIF"),
        ("rotated.avif", "AVIF"),
    ]:
        loaded = images.load(folder / name, max_pixels=10**8)
        assert loaded.format == fmt and loaded.pixels.shape == (96, 128, 3), name
        assert np.abs(loaded.pixels.astype(int) - bgr).mean() < 4, name  # upright, in B,G,R
    df = run(folder)
    assert sorted(df.index) == ["plain.avif", "plain.heic", "rotated.avif", "rotated.heic"]
    assert (df[table.STATUS] != "ERROR").all() and (df["ssim"] > 0.9).all()
    assert "EXIF orientation 6 applied" in df.loc["rotated.avif", table.NOTES]
    assert not df.loc["rotated.heic", table.NOTES]  # libheif turned it, once

    # Without pi-heif a HEIC is an ERROR row like any file nothing can read.
    monkeypatch.setitem(sys.modules, "pi_heif", None)
    monkeypatch.setattr(images, "_heif_opener", [])
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    monkeypatch.setattr(Image, "ID", [k for k in Image.ID if k != "HEIF"])
    with pytest.raises(images.ImageLoadError, match="not a readable image"):
        images.load(FIXTURES / "plain.heic", max_pixels=10**8)


def test_a_float_runs_workers_are_counted_by_the_decoded_floats(tmp_path, monkeypatch, caplog):
    """A float32 TIFF is decoded at 4 bytes a value before it becomes 16 bits: the memory
    bound on the workers counts the 4 (at 2000 x 2000 in grey, 209 MB a worker, not 193),
    so 500 MB of available memory holds one worker's need, not two."""
    from reporter import machine

    folder = tmp_path / "floats"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.random((2000, 2000), dtype=np.float32)
    write(folder / "baseline.tif", base)
    for i in range(2):
        write(folder / f"f{i}.tif", base + np.float32(0.01 * i))
    monkeypatch.setattr(machine, "available_memory", lambda *a, **k: 500_000_000)
    with caplog.at_level("INFO", logger="reporter"):
        config = Config(inputs=(folder,), out=tmp_path / "out", jobs=2, value_range=(0.0, 1.0))
        result = pipeline.run(config)
    assert "comparing in this process, not 2 workers: each needs about 0.2 GB" in caplog.text
    assert (result.table[table.STATUS] != "ERROR").all()


def test_netpbm_and_jpeg2000_files_in_a_folder_are_compared(tmp_path):
    """Instruments and ImageJ write Netpbm (PGM for grey, 16-bit too) and slide scanners
    JPEG 2000: a folder's .pgm .ppm .pbm .pnm .jp2 .j2k files are its images, read by
    OpenCV at their own depth."""
    folder = tmp_path / "r"
    folder.mkdir()
    base = smooth_image(0)
    write(folder / "baseline.png", base)
    write(folder / "copy.ppm", base)
    grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    write(folder / "grey.pgm", grey)
    (folder / "copy.pnm").write_bytes((folder / "copy.ppm").read_bytes())
    write(folder / "ink.PBM", np.where(grey > 128, 255, 0).astype(np.uint8))
    write(folder / "copy.jp2", base, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 1000])
    (folder / "copy.j2k").write_bytes((folder / "copy.jp2").read_bytes())
    deep = (grey.astype(np.uint16) * 257) ^ 0x55  # 16 bits, the low byte not a copy
    write(tmp_path / "deep.pgm", deep)
    df = run(folder)
    assert set(df.index) == {"copy.ppm", "grey.pgm", "copy.pnm", "ink.PBM", "copy.jp2", "copy.j2k"}
    for name in ("copy.ppm", "copy.pnm", "copy.jp2", "copy.j2k"):
        assert df.loc[name, "psnr"] == np.inf, name  # lossless, in B,G,R
    assert df.loc["grey.pgm", "psnr"] == np.inf  # compared in grey
    assert "greyscale" in df.loc["grey.pgm", table.NOTES]
    assert df.loc["ink.PBM", table.STATUS] != "ERROR"
    loaded = images.load(tmp_path / "deep.pgm", max_pixels=10**8)
    assert loaded.pixels.dtype == np.uint16 and np.array_equal(loaded.pixels, deep)


def _written_as_read(monkeypatch, files: dict[Path, bytes], gap: float = 0.0) -> None:
    """Each of ``files`` holds only half of its bytes when the reader reads it, and a
    writer finishes it after that read: at once (``gap`` 0), or in 20 bursts ``gap``
    seconds apart, as an instrument's export or a copy to a share writes. What a cron
    run meets when it starts while the export is going on."""
    for path, full in files.items():
        path.write_bytes(full[: len(full) // 2])
    real = Path.read_bytes
    pending = dict(files)

    def finish(path: Path, full: bytes) -> None:
        half, step = len(full) // 2, max(1, len(full) // 40)
        with path.open("r+b") as f:
            for at in range(half, len(full), step):
                time.sleep(gap)
                f.seek(at)
                f.write(full[at : at + step])
                f.flush()

    def reading(path):
        data = real(path)
        full = pending.pop(path, None)
        if full is not None and gap:
            threading.Thread(target=finish, args=(path, full), daemon=True).start()
        elif full is not None:
            path.write_bytes(full)
        return data

    monkeypatch.setattr(Path, "read_bytes", reading)
    monkeypatch.setattr(images, "SETTLE_S", 0.2, raising=False)


WRITTEN = "the file changed as it was first read (it was still being written)"


def test_a_file_still_being_written_is_read_again_once_it_has_settled(
    run_dir: Path, tmp_path: Path, baseline_img, monkeypatch
):
    """Read half-written, a PNG or a JPEG was an ERROR row ("truncated or corrupt"), and
    the run an alarm. A file that changed as it was read is now read again once it has
    stayed as it is, and its notes say so; a complete file is read once."""
    png = cv2.imencode(".png", baseline_img)[1].tobytes()
    jpg = cv2.imencode(".jpg", baseline_img, [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes()
    for gap in (0.0, 0.02):  # finished during the read; in bursts, paused as it was read
        _written_as_read(monkeypatch, {run_dir / "late.png": png, run_dir / "late.jpg": jpg}, gap)
        result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / f"o{gap}", jobs=1))
        df = result.table.set_index(table.FILE)
        assert set(df[table.STATUS]) == {"PASS"}, df[[table.STATUS, "notes", "error"]]
        assert df.loc["late.png", "ssim"] == 1.0
        assert df.loc["late.jpg", "ssim"] > 0.99
        for name in ("late.png", "late.jpg"):
            assert f"s: {WRITTEN}" in df.loc[name, "notes"]
            assert df.loc[name, "notes"].startswith("read again after ")
        assert WRITTEN not in " ".join(df.loc[["same.png", "noisy.png"], "notes"])
        monkeypatch.undo()
    # a broken file as new as these costs the short watch, and is the ERROR row it was
    (run_dir / "broken.png").write_bytes(png[: len(png) // 2])
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o3", jobs=1))
    broken = result.table.set_index(table.FILE).loc["broken.png"]
    assert broken[table.STATUS] == "ERROR" and "truncated or corrupt PNG" in broken["error"]


def test_whole_files_are_told_from_files_cut_short_by_their_bytes(
    baseline_img, tmp_path, monkeypatch
):
    """What the client of a cluster (--send-bytes) goes by, since it does not decode: a
    PNG, JPEG, GIF or WebP that ends as its format ends is whole; one cut short is not,
    nor is a file of a format with no such end (TIFF). A file just written whole costs
    no watch; one cut short and as new is watched."""
    rgb = cv2.cvtColor(baseline_img, cv2.COLOR_BGR2RGB)
    encoded = {ext: cv2.imencode(ext, baseline_img)[1] for ext in (".png", ".jpg", ".webp")}
    whole = {ext: array.tobytes() for ext, array in encoded.items()}
    gif = io.BytesIO()
    Image.fromarray(rgb).save(gif, "GIF")
    whole[".gif"] = gif.getvalue()
    for ext, data in whole.items():
        assert images.ends_whole(data), ext
        assert not images.ends_whole(data[: len(data) * 2 // 3]), ext
    assert images.ends_whole(whole[".jpg"] + b"\0" * 512)  # a camera's padding after EOI
    # A camera's JPEG carries a thumbnail, itself a JPEG with its own end-of-image
    # marker, inside its EXIF segment: cut just after it, the file is not whole.
    thumb = cv2.imencode(".jpg", cv2.resize(baseline_img, (160, 120)))[1].tobytes()
    exif = b"Exif\0\0" + thumb
    camera = b"\xff\xd8\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + whole[".jpg"][2:]
    assert cv2.imdecode(np.frombuffer(camera, np.uint8), cv2.IMREAD_COLOR) is not None
    assert images.ends_whole(camera)
    for cut in (len(exif) + 6, len(exif) + 600, len(camera) // 2):
        assert not images.ends_whole(camera[:cut]), cut
    hostile = b"\xff\xd8" + b"\xff\xe0\x00\x02" * 1_000_000 + whole[".jpg"][2:]
    assert not images.ends_whole(hostile)  # too many segments to step over: watched
    assert not images.ends_whole(cv2.imencode(".tif", baseline_img)[1].tobytes())

    def no_sleep(seconds):
        raise AssertionError("watched")

    fresh = tmp_path / "fresh.png"
    fresh.write_bytes(whole[".png"])  # as new as a copy made a second ago
    monkeypatch.setattr(images.time, "sleep", no_sleep)
    data, _, note = images.read_settled(fresh, None)
    assert data == whole[".png"] and note == ""
    fresh.write_bytes(whole[".png"][:500])  # cut short and as new: watched
    with pytest.raises(AssertionError, match="watched"):
        images.read_settled(fresh, None)


def test_a_file_that_keeps_changing_is_an_error_row_in_time(
    run_dir: Path, tmp_path: Path, monkeypatch
):
    """A file that never settles (a log someone named .png, a writer that never ends) is
    waited for SETTLE_MAX_S, then is an ERROR row that says so; the others are compared."""
    ticks = iter(range(10**6))
    real = getattr(images, "_state", None)
    monkeypatch.setattr(
        images,
        "_state",
        lambda p: (next(ticks), 0, 0) if p.name == "busy.png" else real(p),
        raising=False,
    )
    monkeypatch.setattr(images, "SETTLE_MAX_S", 0.5, raising=False)
    (run_dir / "busy.png").write_bytes((run_dir / "same.png").read_bytes())
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    df = result.table.set_index(table.FILE)
    assert df.loc["busy.png", table.STATUS] == "ERROR"
    assert df.loc["busy.png", "error"] == (
        "the file kept changing for 0.5 s while it was read (still being written?): not compared"
    )
    assert df.loc["same.png", table.STATUS] == "PASS"


def test_the_collection_commands_read_a_file_still_being_written_again(
    tmp_path: Path, baseline_img, monkeypatch
):
    """The collection commands read a file's bytes themselves (for its hash and the cache):
    a half-written file's features are computed again once it has settled, and the cache
    keeps the finished file's."""
    from reporter.collection import features

    folder = tmp_path / "c"
    folder.mkdir()
    png = cv2.imencode(".png", baseline_img)[1].tobytes()
    _written_as_read(monkeypatch, {folder / "late.png": png})
    found = features.compute(
        folder / "late.png", "late.png", embedding=False, max_pixels=10**8, max_bytes=None
    )
    assert found.error is None
    assert found.sha256 == hashlib.sha256(png).hexdigest()
    assert found.size == len(png)


def test_a_file_removed_after_the_run_listed_it_says_so(run_dir: Path, tmp_path: Path, monkeypatch):
    """An instrument's software that clears its temporary exports while the run goes on:
    the file listed and gone is an ERROR row that says what happened, not a bare
    "cannot read the file: No such file or directory"."""
    real = pipeline.discover

    def listed_then_removed(*args, **kwargs):
        found = real(*args, **kwargs)
        (run_dir / "noisy.png").unlink()
        return found

    monkeypatch.setattr(pipeline, "discover", listed_then_removed)
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    row = result.table.set_index(table.FILE).loc["noisy.png"]
    assert row[table.STATUS] == "ERROR"
    assert row["error"] == "no such file: it was removed or renamed after the run listed it"
