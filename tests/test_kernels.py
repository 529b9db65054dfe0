"""The compiled kernels: the published SSIM, the downsampling definitions, and the
machine-code cache (compiled once per machine, never in each run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from reporter import kernels
from reporter.metrics import Reference

SKIMAGE = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    small = rng.random((shape[0] // 8 + 2, shape[1] // 8 + 2) + shape[2:])
    base = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    base = (np.clip(base, 0, 1) * 0.8 * top + 0.1 * top).reshape(shape)
    image = base + rng.normal(0, 0.02 * top, shape)
    return base.astype(dtype), np.clip(image, 0, top).astype(dtype)


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((1024, 1024, 3), np.uint8),  # the benchmark's size
        ((257, 333, 3), np.uint8),  # odd sides
        ((300, 41), np.uint8),  # greyscale, narrow
        ((240, 200, 3), np.uint16),
        ((11, 64), np.uint16),  # one output row
    ],
)
def test_ssim_is_skimages_within_1e4(shape, dtype):
    base, image = _pair(shape, dtype)
    data_range = 255 if dtype == np.uint8 else 65535
    expected = structural_similarity(
        base, image, data_range=data_range, channel_axis=-1 if len(shape) == 3 else None, **SKIMAGE
    )
    got = Reference(base).compare(image, ["ssim"])["ssim"]
    assert abs(got - expected) <= 1e-4, (got, expected)
    assert abs(got - expected) <= 1e-5  # in fact far closer


@pytest.mark.parametrize("rows", [11, 12, 13, 14, 15, 16, 17, 18, 27, 28, 29, 30])
def test_every_count_of_rows_is_skimages(rows):
    """The kernels blur four output rows at a time from a ring of 14 and the rest one by
    one: every remainder, and images shorter than the ring, give skimage's SSIM, and the
    baseline's side matches the image's row for row (an identical image reads as 1)."""
    base, image = _pair((rows, 37, 3), np.uint8, seed=rows)
    expected = structural_similarity(base, image, data_range=255, channel_axis=-1, **SKIMAGE)
    ref = Reference(base)
    assert ref.compare(image, ["ssim"])["ssim"] == pytest.approx(expected, abs=1e-5)
    scale = ref.scale(0)
    planes = [np.ascontiguousarray(base[:, :, c]) for c in range(3)]
    s, cs = scale.compare(planes)  # not the shortcut for identical images: the sums
    # 4e-8 off 1 when both sides blur each row by the same code; the baseline's 2 mu_x
    # one float32 step off (a row blurred by other code) puts it 1.1e-5 off.
    np.testing.assert_allclose(s, 1.0, atol=1e-6)
    np.testing.assert_allclose(cs, 1.0, atol=1e-6)


def test_ssim_of_sparse_plots_is_skimages_within_5e6():
    """Dot plots (a white page, sparse dots) are where float32 loses most: the variance
    E[y^2] - E[y]^2 cancels at 255^2. Each term is in float32, but its sums are not
    rounded to float32 per pixel (the old kernel was 3.1e-5 off here), and the baseline's
    side is computed by the same steps as the image's, so that their rounding cancels
    (with the baseline's side from OpenCV it was 1.2e-5 off; now 2.5e-6)."""
    root = Path(__file__).resolve().parent.parent / "sample_images"
    base = cv2.imread(str(root / "baseline.png"))
    ref = Reference(base)
    for name in ("normal_day01.png", "fault_debris.png", "fault_broad_spread.png"):
        image = cv2.imread(str(root / name))
        expected = structural_similarity(base, image, data_range=255, channel_axis=-1, **SKIMAGE)
        got = ref.compare(image, ["ssim"])["ssim"]
        assert abs(got - expected) <= 5e-6, (name, got, expected)


def test_weighted_sums_are_the_weighted_map():
    """With ignored pixels, the sums weigh each pixel of the SSIM map by its weight."""
    from reporter.metrics import CROP, ssim_map

    base, image = _pair((120, 150, 3), np.uint8, seed=3)
    ref = Reference(base)
    scale = ref.scale(0)
    w = np.random.default_rng(1).random((120 - 2 * CROP, 150 - 2 * CROP)).astype(np.float32)
    s, _ = scale.compare([np.ascontiguousarray(image[:, :, c]) for c in range(3)], w)
    full = ssim_map(base, image)[CROP:-CROP, CROP:-CROP]
    assert s.mean() == pytest.approx((full * w).sum() / w.sum(), abs=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (11, 12)])
def test_halve_is_msssims_two_by_two_mean(shape):
    plane = np.random.default_rng(2).integers(0, 256, shape).astype(np.uint8)
    padded = np.pad(plane.astype(np.float64), ((0, shape[0] % 2), (0, shape[1] % 2)), "symmetric")
    expected = (
        padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    ) / 4
    np.testing.assert_array_equal(kernels.halve(plane, np.float64), expected)


@pytest.mark.parametrize(
    "f, shape, dtype",
    [
        (2, (64, 70), np.uint8),
        (3, (100, 101), np.uint8),
        (4, (1024, 999), np.uint8),
        (5, (23, 12), np.uint8),
        (5, (24, 16), np.uint8),  # the last row and column in no block
        (4, (67, 90), np.uint16),  # summed in int32
        (182, (400, 380), np.uint16),  # 182^2 x 65535 > 2^31: summed in int64
        (3, (50, 47), np.float32),  # the weights of ignored pixels: float64 sums
    ],
)
def test_block_means_are_wangs_box_filter_and_every_fth_pixel(f, shape, dtype):
    """ssim.m: imfilter(img, ones(f)/f^2, 'symmetric', 'same'), then img(1:f:end, 1:f:end).
    MATLAB's 'same' centres the kernel at floor((f + 1) / 2) (1-based): the sample at
    i f averages rows (and columns) i f - a .. i f - a + f - 1, a = (f - 1) // 2, the
    image mirrored at its borders ('symmetric', as numpy's pad names it too)."""
    rng = np.random.default_rng(f)
    if dtype == np.float32:
        plane = rng.random(shape).astype(np.float32)
    else:
        plane = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
        plane.reshape(-1)[: shape[1] * f] = np.iinfo(dtype).max  # whole blocks at the top
    a = (f - 1) // 2
    h, w = -(-shape[0] // f), -(-shape[1] // f)
    padded = np.pad(
        plane.astype(np.float64),
        ((a, max(0, h * f - a - shape[0])), (a, max(0, w * f - a - shape[1]))),
        mode="symmetric",
    )[: h * f, : w * f]
    expected = padded.reshape(h, f, w, f).mean(axis=(1, 3))
    np.testing.assert_allclose(
        kernels.block_means(plane, f, np.float64), expected, rtol=1e-12, atol=1e-9
    )


@pytest.mark.parametrize(
    "shape, dtype, grid",
    [
        ((1024, 1000, 3), np.uint8, 16),
        ((97, 131), np.uint16, 16),
        ((40, 33, 1), np.uint8, 16),
        ((13, 11, 3), np.uint16, 16),  # fewer rows than cells: some cells are empty
    ],
)
def test_ink_cells_are_the_definition(shape, dtype, grid):
    """Per cell, the sum of max over channels |pixel - colour| less the dead zone (at
    least 0) over the valid pixels: exactly, at the extremes of the pixel type too."""
    rng = np.random.default_rng(len(shape) + shape[0])
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top + 1, shape, dtype=dtype)
    pixels.reshape(-1)[:50] = top  # the largest differences
    channels = 1 if len(shape) == 2 else shape[2]
    colour = rng.integers(0, top + 1, channels)
    colour[0] = 0
    valid = rng.random(shape[:2]) > 0.2
    rows = np.linspace(0, shape[0], grid + 1).round().astype(int)
    cols = np.linspace(0, shape[1], grid + 1).round().astype(int)
    as3 = pixels.reshape(shape[0], shape[1], -1).astype(np.int64)
    for dead in (0, 3):
        for mask in (None, valid):
            ink = np.clip(np.abs(as3 - colour).max(axis=2) - dead, 0, None)
            if mask is not None:
                ink = ink * mask
            expected = np.array(
                [
                    [ink[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].sum() for j in range(grid)]
                    for i in range(grid)
                ]
            )
            got = kernels.ink_cells(pixels, colour, dead, mask, rows, cols)
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "shape", [(512, 512), (63, 48), (64, 47), (17, 16), (1, 8), (8, 1), (2, 2)]
)
def test_cross_power_is_the_normalised_product_of_packed_spectra(shape):
    """a * conj(b) / |a * conj(b)| in OpenCV's packed layout, as cv2.mulSpectrums and
    numpy make it (within float32 rounding), for every parity of the sides and the
    degenerate ones; a zero spectrum gives zeros, not NaN."""
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    a, b = (cv2.dft(rng.random(shape).astype(np.float32)) for _ in range(2))
    cross = cv2.mulSpectrums(a, b, 0, conjB=True).astype(np.float64)
    magnitude = np.empty_like(cross)  # each packed value's magnitude at its places
    h, w = shape
    end = w - 1 if w % 2 == 0 else w
    magnitude[:, 1:end:2] = magnitude[:, 2:end:2] = np.hypot(cross[:, 1:end:2], cross[:, 2:end:2])
    for col in (0, w - 1) if w % 2 == 0 else (0,):
        column = cross[:, col]
        rows = h - 1 if h % 2 == 0 else h
        pairs = np.hypot(column[1:rows:2], column[2:rows:2])
        magnitude[1:rows:2, col] = magnitude[2:rows:2, col] = pairs
        magnitude[0, col] = abs(column[0])
        if h % 2 == 0:
            magnitude[h - 1, col] = abs(column[h - 1])
    expected = cross / (magnitude + 1e-12 * magnitude.max())
    np.testing.assert_allclose(kernels.cross_power(a, b), expected, atol=5e-7)
    zero = np.zeros(shape, np.float32)
    np.testing.assert_array_equal(kernels.cross_power(zero, zero), zero)


CACHED = """
import json, sys
import numpy as np
from reporter import kernels
from reporter.metrics import Reference
# Every metric of a noisy photo-like image, plain and with an ignored region (the
# weighted sums), by the code this process compiles (as it is first called) or loads.
rng = np.random.default_rng(7)
top = np.iinfo(sys.argv[1]).max
base = rng.random((12, 16, 3))
base = np.kron(base, np.ones((25, 25, 1)))[:293, :387] * top
image = np.clip(base + rng.normal(0, 0.03 * top, base.shape), 0, top).astype(sys.argv[1])
base = base.astype(sys.argv[1])
valid = np.ones(base.shape[:2], bool)
valid[20:90, 30:200] = False
# SSIM alone first: the order in which a process first calls the kernels decides how
# numba compiles them, and this order gave different bits before (the full set did not).
values = [Reference(base).compare(image, ["ssim"])]
values += [Reference(base, v).compare(image) for v in (None, valid)]
kernels.warm(sys.argv[1])
stats = {
    name: [sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values())]
    for name, kernel in (("ssim_sums", kernels._ssim_sums), ("halve", kernels._halve))
}
print(json.dumps({"stats": stats, "values": [{k: repr(x) for k, x in v.items()} for v in values]}))
"""


def _stats(env, dtype="uint8"):
    done = subprocess.run(
        [sys.executable, "-c", CACHED, dtype], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["stats"], done.stderr, out["values"]


def test_the_machine_code_is_compiled_once_into_the_user_cache(tmp_path):
    """The first process compiles into <REPORTER_CACHE>/numba; the next ones only load, and
    compute the very same bits: with fastmath's reassociation, the code numba compiled
    and the code it loaded from its cache added the SSIM sums in different orders (SSIM
    differed in the ninth digit between a run that compiled and every later run, and so
    between --jobs 1 and --jobs 2 in a run that compiled)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["REPORTER_CACHE"] = str(tmp_path / "cache")
    first, _, compiled = _stats(env)
    assert all(misses > 0 for _, misses in first.values())  # compiled here
    assert list((tmp_path / "cache" / "numba").rglob("*.nbi"))  # and written to the cache
    second, _, loaded = _stats(env)
    for hits, misses in second.values():
        assert hits > 0 and misses == 0  # loaded, not compiled
    assert compiled == loaded
    assert compiled[1]["ssim"] != compiled[2]["ssim"]  # the mask took: the weighted sums ran


def test_no_writable_cache_gives_one_warning_and_still_the_same_values(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["REPORTER_CACHE"] = str(blocker / "cache")  # cannot be created
    # Only the user-provided location: no fallback to the package's __pycache__.
    env["NUMBA_CACHE_LOCATOR_CLASSES"] = "UserProvidedCacheLocator"
    stats, stderr, uncached = _stats(env)
    assert all(misses > 0 for _, misses in stats.values())  # compiled in memory
    assert stderr.count("no writable cache folder for compiled code") == 1
    assert uncached == _stats(dict(os.environ))[2]  # the session's cache: the same bits


WARMED = """
import json, sys
import numpy as np
from reporter import kernels
from reporter.metrics import Reference

dtype = sys.argv[1]
kernels.warm(dtype)
dispatchers = (kernels._ssim_sums, kernels._stats, kernels._halve, kernels._block_means,
               kernels._ink_cells, kernels._cross_products, kernels._over_magnitude)


def loads():
    return [sum(d.stats.cache_misses.values()) + sum(d.stats.cache_hits.values())
            for d in dispatchers]


before = loads()
rng = np.random.default_rng(0)
top = 255 if dtype == "uint8" else 65535
for shape in ((400, 520, 3), (400, 520)):
    base = rng.integers(0, top, shape).astype(dtype)
    valid = np.ones(shape[:2], bool)
    valid[:9, :30] = False
    for mask in (None, valid):
        Reference(base, mask).prepare().compare(base // 2)
after = loads()
print(json.dumps([before, after]))
"""


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_warm_loads_every_signature_a_run_uses(dtype):
    """The fork server's warm-up must leave nothing for a worker to load or compile: a
    colour and a greyscale comparison, with and without ignored pixels, find every
    kernel signature already in memory."""
    done = subprocess.run(
        [sys.executable, "-c", WARMED, dtype], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert all(b > 0 for b in before)
    assert after == before  # no signature loaded (or compiled) after warm()


SCIPY = """
import json, sys
import numba, numpy as np
from reporter import kernels

kernels.warm("uint8")
spared = "scipy.linalg" not in sys.modules
dot = numba.njit(lambda a: np.dot(a, a))  # numba's BLAS path imports scipy.linalg itself
print(json.dumps({"spared": spared, "dot": float(dot(np.ones(4))),
                  "linalg": "scipy.linalg" in sys.modules}))
"""


def test_the_kernels_load_without_scipys_linear_algebra():
    """Numba's NumPy support imports all of scipy.linalg (about 0.2 s, a fifth of the fork
    server's start) to check for BLAS, which no kernel uses: the kernels load without
    it, and numba code that wants BLAS still gets it afterwards."""
    done = subprocess.run(
        [sys.executable, "-c", SCIPY], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"spared": True, "dot": 4.0, "linalg": True}
