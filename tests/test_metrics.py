"""Metric values against independent implementations and hand-computed cases.

References: scikit-image's structural_similarity, peak_signal_noise_ratio and
mean_squared_error; scipy.ndimage for ssim.m's and msssim.m's downsampling, in
float64; closed forms for constant images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import SAMPLES, noisy, smooth_image
from scipy import ndimage
from skimage import data
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from reporter import hashes, metrics
from reporter.metrics import METRICS, Reference


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The definition reporter promises to match (DOMAIN.md, issue 2)."""
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=float(np.iinfo(a.dtype).max),
        channel_axis=-1 if a.ndim == 3 else None,
    )


def dot_plot(name: str) -> np.ndarray:
    return cv2.imread(str(SAMPLES / name))


CASES = {
    "colour 8-bit": (smooth_image(0), noisy(smooth_image(0), 0.05)),
    "grey 8-bit odd size": (smooth_image(1, (97, 131)), noisy(smooth_image(1, (97, 131)), 0.1)),
    "colour 16-bit": (
        smooth_image(2, dtype=np.uint16),
        noisy(smooth_image(2, dtype=np.uint16), 0.02),
    ),
    "grey 16-bit": (smooth_image(3, (64, 80), np.uint16), smooth_image(4, (64, 80), np.uint16)),
    "unrelated": (smooth_image(5), smooth_image(6)),
    "sparse dot plot": (dot_plot("baseline.png"), dot_plot("fault_shifted_population.png")),
    "photo": (data.astronaut()[:, :, ::-1].copy(), cv2.GaussianBlur(data.astronaut(), (5, 5), 0)),
}


@pytest.mark.parametrize("case", CASES)
def test_ssim_matches_skimage(case):
    a, b = CASES[case]
    assert metrics.ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_psnr_and_mse_match_skimage(case):
    a, b = CASES[case]
    top = float(np.iinfo(a.dtype).max)
    assert metrics.mse(a, b) == pytest.approx(mean_squared_error(a, b), rel=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=top), rel=1e-12
    )


@pytest.mark.parametrize("case", CASES)
def test_cosine_matches_float64_numpy(case):
    a, b = CASES[case]
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    expected = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    assert metrics.cosine(a, b) == pytest.approx(expected, abs=1e-12)


def matlab_downsample(img: np.ndarray, f: int) -> np.ndarray:
    """imfilter(img, ones(f)/f^2, 'symmetric', 'same') then img(1:f:end, 1:f:end), float64.

    MATLAB centres an even kernel at floor((f+1)/2) (1-based); scipy's origin
    shifts its centre from f // 2, hence origin = (f - 1) // 2 - f // 2.
    """
    origin = (f - 1) // 2 - f // 2
    size = (f, f) + ((1,) if img.ndim == 3 else ())
    orig = (origin, origin) + ((0,) if img.ndim == 3 else ())
    out = ndimage.uniform_filter(img.astype(np.float64), size=size, mode="reflect", origin=orig)
    return out[::f, ::f]


def float_ssim_parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean cs of float64 images in [0, 1], per Wang et al. (one channel)."""
    g = lambda im: ndimage.gaussian_filter(im, 1.5, truncate=3.5, mode="reflect")  # noqa: E731
    mx, my = g(a), g(b)
    sxx, syy, sxy = g(a * a) - mx * mx, g(b * b) - my * my, g(a * b) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    s = cs * (2 * mx * my + c1) / (mx * mx + my * my + c1)
    crop = (slice(5, -5), slice(5, -5))
    return float(s[crop].mean()), float(cs[crop].mean())


def halve(img: np.ndarray) -> np.ndarray:
    """msssim.m: 2x2 mean with 'symmetric' border, then every other pixel."""
    return matlab_downsample(img, 2)


def ms_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    weights = np.array(metrics.MS_SSIM_WEIGHTS)
    top = float(np.iinfo(a.dtype).max)
    a = a.astype(np.float64) / top
    b = b.astype(np.float64) / top
    chans = [(a, b)] if a.ndim == 2 else [(a[..., c], b[..., c]) for c in range(a.shape[2])]
    values = []
    for x, y in chans:
        value = 1.0
        for k, w in enumerate(weights):
            s, cs = float_ssim_parts(x, y)
            value *= max(s if k == len(weights) - 1 else cs, 0.0) ** w
            x, y = halve(x), halve(y)
        values.append(value)
    return float(np.mean(values))


@pytest.mark.parametrize("case", ["colour 8-bit", "sparse dot plot", "photo", "unrelated"])
def test_ms_ssim_matches_float64_reference(case):
    a, b = CASES[case]
    if min(a.shape[:2]) < 176:  # the reference here always uses five scales
        a = cv2.resize(a, (200, 180))
        b = cv2.resize(b, (200, 180))
    assert metrics.ms_ssim(a, b) == pytest.approx(ms_ssim_reference(a, b), abs=1e-4)


@pytest.mark.parametrize("shape", [(1024, 1100, 3), (640, 700), (384, 500, 3), (517, 300)])
def test_ssim_coarse_is_skimage_ssim_after_ssim_m_downsampling(shape):
    a = smooth_image(7, shape)
    b = noisy(a, 0.05)
    f = metrics.coarse_factor(*shape[:2])
    top = float(np.iinfo(a.dtype).max)
    da, db = (matlab_downsample(im.astype(np.float64) / top, f) for im in (a, b))
    expected = structural_similarity(
        da,
        db,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1 if da.ndim == 3 else None,
    )
    assert metrics.ssim_coarse(a, b) == pytest.approx(expected, abs=1e-4)


def test_coarse_factor_rounds_halves_up_like_matlab():
    assert metrics.coarse_factor(383, 1000) == 1
    assert metrics.coarse_factor(384, 1000) == 2  # 1.5 -> 2
    assert metrics.coarse_factor(640, 640) == 3  # 2.5 -> 3 (Python's round would give 2)
    assert metrics.coarse_factor(1024, 1024) == 4


def test_ssim_64_is_ssim_at_the_pyramid_level_nearest_64_px():
    a, b = CASES["sparse dot plot"]  # 512 px: level 3, 64 px
    assert metrics.low_level(512, 512) == 3
    top = 255.0
    x, y = a.astype(np.float64) / top, b.astype(np.float64) / top
    for _ in range(3):
        x, y = halve(x), halve(y)
    expected = np.mean([float_ssim_parts(x[..., c], y[..., c])[0] for c in range(3)])
    got = Reference(a).compare(b, ["ssim_64"])["ssim_64"]
    assert got == pytest.approx(expected, abs=1e-4)


def test_identical_images_score_exactly_perfect():
    a = CASES["photo"][0]
    values = Reference(a).compare(a.copy())
    assert values["ssim"] == 1.0
    assert values["ssim_coarse"] == 1.0
    assert values["ms_ssim"] == 1.0
    assert values["ssim_64"] == 1.0
    assert values["cosine"] == 1.0
    assert values["psnr"] == math.inf
    assert values["mse"] == 0.0
    assert values["ahash"] == 0 and values["phash"] == 0


def test_inverted_image():
    a = smooth_image(8)
    inv = 255 - a
    assert metrics.ssim(a, inv) == pytest.approx(sk_ssim(a, inv), abs=1e-4)
    assert metrics.ssim(a, inv) < 0  # anti-correlated structure
    assert metrics.mse(a, inv) == pytest.approx(np.mean((a.astype(float) - inv) ** 2))


def test_constant_images_closed_form():
    """Flat images: every variance is 0, so SSIM is the luminance term alone."""
    a = np.full((40, 50), 100, np.uint8)
    b = np.full((40, 50), 200, np.uint8)
    x, y = 100 / 255, 200 / 255
    c1 = 0.01**2
    # Flat mid-grey is float32's worst case (E[y^2] - mean^2 cancels): within the 1e-4 contract.
    assert metrics.ssim(a, b) == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), abs=1e-4)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100**2))
    assert metrics.cosine(a, b) == pytest.approx(1.0)  # parallel vectors
    assert metrics.ssim(a, a) == 1.0


def test_all_black_image_cosine():
    black = np.zeros((20, 20), np.uint8)
    grey = np.full((20, 20), 9, np.uint8)
    assert metrics.cosine(black, black) == 1.0
    assert metrics.cosine(black, grey) == 0.0


def test_16_bit_uses_65535_as_dynamic_range():
    a, b = CASES["colour 16-bit"]
    assert metrics.ssim(a, b) == pytest.approx(sk_ssim(a, b), abs=1e-4)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=65535))


def test_rejects_mismatched_or_unsupported_arrays():
    a = smooth_image(0)
    with pytest.raises(ValueError, match="does not match"):
        Reference(a).compare(a[:-1])
    with pytest.raises(TypeError, match="uint8 or uint16"):
        metrics.ssim(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        Reference(np.zeros((8, 30), np.uint8))
    with pytest.raises(ValueError, match="H x W"):
        Reference(np.zeros((30, 30, 2), np.uint8))


def test_hash_distances():
    photo = data.astronaut()[:, :, ::-1].copy()
    h, w = photo.shape[:2]
    rot = cv2.warpAffine(
        photo,
        cv2.getRotationMatrix2D((w / 2, h / 2), 1.0, 1.0),
        (w, h),
        borderMode=cv2.BORDER_REFLECT,
    )
    ref = Reference(photo)
    assert ref.compare(photo.copy(), ["phash", "ahash"]) == {"phash": 0, "ahash": 0}
    small = ref.compare(rot, ["phash", "ahash"])
    assert small["phash"] <= 6 and small["ahash"] <= 6
    other = cv2.resize(data.coffee()[:, :, ::-1], (w, h))
    assert ref.compare(other, ["phash"])["phash"] >= 20


def test_hashes_average_blocks_instead_of_sampling_pixels():
    """Two draws of one dot plot have near-equal hashes; a hash of sampled pixels would not."""
    a, b = dot_plot("baseline.png"), dot_plot("normal_day01.png")
    assert hashes.distance(hashes.phash(a), hashes.phash(b)) <= 3


def test_baseline_statistics_are_computed_once(monkeypatch):
    made = []
    original = metrics._Scale.__init__

    def counting(self, x, *constants):
        made.append(x[0].shape)
        original(self, x, *constants)

    monkeypatch.setattr(metrics._Scale, "__init__", counting)
    ref = Reference(smooth_image(0, (300, 300, 3))).prepare()
    after_prepare = len(made)
    for seed in range(4):
        ref.compare(noisy(ref.pixels, 0.05, seed))
    assert after_prepare > 0
    assert len(made) == after_prepare  # no image made the baseline's statistics again


def test_the_baseline_statistics_are_two_arrays_per_plane_and_scale():
    """What every worker holds for the whole run, and every image's SSIM reads: 2 mu_x
    and sigma_x^2 + C2 per plane and scale, float32 for 8-bit pixels. mu_x^2 + C1 is
    computed from 2 mu_x as it is used: a third array cost 12 MB more per worker at
    1024 px, and the time to read it for every image."""
    ref = Reference(smooth_image(0, (256, 320, 3))).prepare()
    held = 0
    for scale in [*ref._scales.values(), ref.coarse]:
        h, w = scale.planes[0].shape
        for arrays in vars(scale).values():
            if isinstance(arrays, list) and arrays[0].shape == (h - 10, w - 10):
                assert all(a.dtype == np.float32 for a in arrays)
                held += sum(a.nbytes for a in arrays)
    cropped = sum((s.planes[0].shape[0] - 10) * (s.planes[0].shape[1] - 10)
                  for s in [*ref._scales.values(), ref.coarse])  # fmt: skip
    assert held == 2 * 3 * 4 * cropped


def test_every_metric_is_registered_with_a_definition():
    assert list(METRICS) == [
        "cosine",
        "ssim",
        "ssim_coarse",
        "ms_ssim",
        "ssim_64",
        "psnr",
        "psnr_local",
        "mse",
        "ahash",
        "phash",
        "signal_change",
        "occupancy_change",
        "embedding",
        "shift",
    ]
    for m in METRICS.values():
        assert len(m.definition) > 20


def test_16_bit_ssim_stays_at_or_below_1_and_equals_skimage():
    """Bright 16-bit images with tiny differences: in float32 the variances (E[x^2] - mean^2
    of values near 60,000) lost their digits and SSIM read 1.000045; float64 keeps them."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = (60000 + rng.normal(0, 3, (200, 240))).astype(np.uint16)
    b = (a.astype(int) + rng.integers(-1, 2, a.shape)).clip(0, 65535).astype(np.uint16)
    values = Reference(a).compare(b)
    for name in ("ssim", "ssim_coarse", "ms_ssim", "ssim_64"):
        assert -1 <= values[name] <= 1, (name, values[name])
    expected = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=65535
    )
    assert values["ssim"] == pytest.approx(expected, abs=1e-9)
    # An 8-bit image against a 16-bit baseline (x 257 on the way in) as well.
    rgb = rng.normal(128, 20, (120, 160, 3)).clip(0, 255).astype(np.uint8)
    assert (
        Reference(rgb.astype(np.uint16) * 257).compare(rgb.astype(np.uint16) * 257 + 1)["ssim"] <= 1
    )


def test_the_ssim_map_is_the_ssim_metric_before_averaging():
    """One SSIM definition: the map the diff maps draw, cropped and averaged, is the
    ssim metric (which never builds the map)."""
    base = smooth_image(0, (90, 120, 3))
    other = noisy(base, 0.05)
    crop = metrics.CROP
    mean = metrics.ssim_map(base, other)[crop:-crop, crop:-crop].mean()
    assert mean == pytest.approx(metrics.ssim(base, other), abs=1e-5)  # float32 vs 64
    grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    assert metrics.ssim_map(grey, grey).min() == pytest.approx(1.0)


def test_a_worker_gets_the_small_statistics_with_the_pixels(monkeypatch):
    """The parent computes the background, its ink cells and the hashes while its workers
    start; a worker's copy uses them instead of spending the time again."""
    import pickle

    from reporter import signal

    base = smooth_image(0, (200, 240, 3))
    image = noisy(base, 0.05, 3)
    expected = Reference(base).prepare().compare(image)
    sent = pickle.dumps(Reference(base).prepare_small())

    def recomputed(*args, **kwargs):
        raise AssertionError("the worker computed the background again")

    monkeypatch.setattr(signal, "background", recomputed)
    copy = pickle.loads(sent).prepare()
    assert copy.compare(image) == expected


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((1024, 1024, 3), np.uint8),  # one pass for both sizes
        ((480, 640, 3), np.uint8),
        ((2048, 1024), np.uint8),
        ((9600, 64), np.uint8),  # 300 rows per block: the row sums leave uint16
        ((256, 320, 3), np.uint16),
        ((1000, 1000, 3), np.uint8),  # fractional blocks: OpenCV's resize
        ((20, 30), np.uint8),  # smaller than the hash: OpenCV's resize
    ],
)
def test_both_hashes_from_one_pass_equal_opencvs_area_resize(shape, dtype):
    """hashes.both shrinks once, with OpenCV's rounding: the very hashes of ahash and
    phash (which cached features and earlier runs hold), on noise and on smooth
    pictures, where blocks fall on exact halves."""
    rng = np.random.default_rng(7)
    top = 255 if dtype == np.uint8 else 65535
    for smooth in (False, True):
        img = rng.integers(0, top + 1, shape).astype(dtype)
        if smooth:
            img = cv2.GaussianBlur(img, (0, 0), 4)
        small, small8 = hashes._shrink_both(img)
        np.testing.assert_array_equal(small, hashes._shrink(img, 32))
        np.testing.assert_array_equal(small8, hashes._shrink(img, 8))
        a, p = hashes.both(img)
        np.testing.assert_array_equal(a, hashes.ahash(img))
        np.testing.assert_array_equal(p, hashes.phash(img))


def test_an_image_is_shrunk_once_for_both_hashes(monkeypatch):
    calls = []
    real = hashes._shrink_both
    monkeypatch.setattr(hashes, "_shrink_both", lambda px: calls.append(1) or real(px))
    base = np.random.default_rng(8).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ref = Reference(base)
    ref.compare(base[::-1].copy(), ["ahash", "phash"])
    assert len(calls) == 1


@pytest.mark.parametrize(
    "shape",
    [(1024, 1024, 3), (512, 2048), (4096, 512, 3), (640, 480, 3), (768, 1024, 3), (96, 64, 3)],
)
def test_hashes_from_the_pyramid_are_the_pixels_hashes(monkeypatch, shape):
    """A compared image's hashes come from the deepest pyramid level the SSIM metrics
    made when it holds whole hash blocks (hashes.both_from_means): bit for bit the
    hashes of its pixels, on noise and on smooth pictures; other sizes (640 x 480,
    whose blocks are 20 x 15 px) fall back to the pixels."""
    rng = np.random.default_rng(9)
    base = rng.integers(0, 256, shape, dtype=np.uint8)
    ref = Reference(base)
    real = hashes.both
    used = []
    whole = shape[0] % 64 == 0 and shape[1] % 64 == 0  # 32 blocks of 2 x 2 px at least
    for smooth in (False, True):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        if smooth:
            img = cv2.GaussianBlur(img, (0, 0), 3)
        want = real(img)
        pair = metrics.Pair(ref, img)
        pair.scores(ref.ms_ssim_scales - 1)  # the pyramid the SSIM metrics make
        monkeypatch.setattr(hashes, "both", lambda px: used.append(1) or real(px))
        got = pair.hash_pair
        monkeypatch.setattr(hashes, "both", real)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert used == ([] if whole else [1, 1])
    direct = hashes.both_from_means([np.full((32, 32), 0.25, np.float32)], 5, 1024, 1024)
    assert direct is not None  # 1024 / 32: one level-5 cell per block
    assert hashes.both_from_means([np.zeros((15, 20), np.float32)], 5, 480, 640) is None
