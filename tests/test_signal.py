"""signal_change and occupancy_change: where a sparse image carries its signal.

Reference values come from a plain numpy implementation of the README's definitions
(reference_metrics below), written independently of signal.py's OpenCV code."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth_image, write

from reporter import pipeline, signal
from reporter.config import Config
from reporter.metrics import Reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cytometry  # noqa: E402


def reference_metrics(baseline, image, valid=None, dead_zone=0.0, grid=16):
    """The definitions, straight: background = most common colour of the baseline (binned);
    ink =
    max over channels of |pixel - background| less the dead zone, over L; cells of an
    even grid x grid split; signal_change and occupancy_change over the baseline's ink."""
    b = baseline.reshape(baseline.shape[0], baseline.shape[1], -1).astype(np.int64)
    i = image.reshape(b.shape).astype(np.int64)
    top = 65535 if baseline.dtype == np.uint16 else 255
    flat = b.reshape(-1, b.shape[2])
    if valid is not None:
        flat = flat[valid.reshape(-1)]
    # the most common colour, counted in bins of 32 levels a channel: the median of its bin
    binned = flat // ((top + 1) // 32)
    keys, counts = np.unique(binned, axis=0, return_counts=True)
    bg = np.round(np.median(flat[(binned == keys[counts.argmax()]).all(axis=1)], axis=0))

    def ink(x):
        d = np.abs(x - bg).max(axis=2).astype(float) - dead_zone
        d = np.clip(d, 0, None) / top
        return d if valid is None else d * valid

    h, w = b.shape[:2]
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)

    def cells(m):
        return np.array(
            [
                [m[rows[r] : rows[r + 1], cols[c] : cols[c + 1]].sum() for c in range(grid)]
                for r in range(grid)
            ]
        )

    cb, ci = cells(ink(b)), cells(ink(i))
    return (ci.sum() - cb.sum()) / cb.sum(), np.abs(ci - cb).sum() / cb.sum()


def both(baseline, image, valid=None):
    values = Reference(baseline, valid).compare(image, ["signal_change", "occupancy_change"])
    return values["signal_change"], values["occupancy_change"]


@pytest.mark.parametrize("fault", ["debris", "few_events", "wrong_sample"])
def test_equal_to_the_definitions_on_dot_plots(fault):
    base, image = cytometry.baseline(), cytometry.faulty(fault, 3)
    assert both(base, image) == pytest.approx(reference_metrics(base, image), abs=1e-9)


def test_equal_to_the_definitions_with_a_mask_and_on_16_bit_greyscale():
    base = cv2.cvtColor(cytometry.baseline(), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    image = cv2.cvtColor(cytometry.healthy(5), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    valid = np.ones(base.shape, bool)
    valid[:40, :] = False  # the title bar
    assert both(base, image, valid) == pytest.approx(
        reference_metrics(base, image, valid), abs=1e-9
    )


def test_what_each_fault_does_to_them():
    base = cytometry.baseline()
    healthy = both(base, cytometry.healthy(8))
    assert abs(healthy[0]) < 0.05 and healthy[1] < 0.2
    debris, few = (
        both(base, cytometry.faulty("debris", 8)),
        both(base, cytometry.faulty("few_events", 8)),
    )
    assert debris[0] > 0.12 and few[0] < -0.2  # a new population adds ink, a lost count removes it
    moved = both(base, cytometry.faulty("gain_drift", 8))
    assert abs(moved[0]) < 0.05 and moved[1] > 0.3  # the same ink, elsewhere


def test_identical_is_zero_and_an_empty_plot_loses_everything():
    base = cytometry.baseline()
    assert both(base, base) == (0.0, 0.0)
    empty = cytometry.render(np.zeros((0, 2)))  # axes and labels, no events
    signal, occupancy = both(base, empty)
    # The axes and labels are ink too, the same every day: they dilute, never hide.
    assert -0.8 < signal < -0.3 and occupancy == pytest.approx(-signal)


def test_a_black_background_works_like_a_white_one():
    """Some software exports dark plots: the background is the most common colour."""
    white = both(cytometry.baseline(), cytometry.faulty("debris", 4))
    dark = both(cytometry.baseline(dark=True), cytometry.faulty("debris", 4, dark=True))
    assert Reference(cytometry.baseline(dark=True)).background.colour == (0.0, 0.0, 0.0)
    assert dark[0] > 0.12 and dark[1] > 0.2
    assert dark == pytest.approx(white, rel=0.2)  # dark blue weighs less on black


def test_anti_aliased_axes_and_text_are_the_same_every_day():
    """Redrawing the same plot (anti-aliased lines and text) adds no signal; new text does."""
    events = cytometry.events_of(cytometry.baseline_day(), np.random.default_rng(1))
    base = cytometry.render(events)
    assert both(base, cytometry.render(events)) == (0.0, 0.0)
    retitled = cytometry.render(events, title="QC tube A  FSC-A / SSC-A  2026-11-23 07:31")
    assert both(base, retitled)[0] > 0.01  # a timestamp is ink ...
    valid = np.ones(base.shape[:2], bool)
    valid[:30, :] = False  # ... unless its region is ignored
    assert both(base, retitled, valid) == (0.0, 0.0)


def test_export_changes_move_the_ink_little():
    """Ink is conserved by blur and resizing, nearly by JPEG (a pixel count is not)."""
    base = cytometry.baseline()
    blurred = cv2.GaussianBlur(base, (3, 3), 0)
    ok, buf = cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, 90])
    jpeg = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    half = cv2.resize(cv2.resize(base, (240, 240), interpolation=cv2.INTER_AREA), (480, 480))
    for changed in (blurred, jpeg, half):
        signal, occupancy = both(base, changed)
        assert abs(signal) < 0.06 and occupancy < 0.08


def test_a_noisy_background_has_a_dead_zone():
    """A camera's background noise is not signal: ink starts 3 noise SDs out."""
    rng = np.random.default_rng(2)
    field = np.full((300, 400), 40, np.uint8)
    base = np.clip(field + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)
    image = np.clip(field + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)
    for img in (base, image):
        for x, y in ((50, 50), (200, 120), (330, 240)):
            cv2.circle(img, (x, y), 12, 220, -1)  # three particles, on both days
    ref = Reference(base)
    assert ref.background.noise == pytest.approx(4, abs=1)
    signal, occupancy = both(base, image)
    assert abs(signal) < 0.05 and occupancy < 0.1  # fresh noise, the same particles
    cv2.circle(image, (120, 220), 12, 220, -1)  # a fourth particle
    assert both(base, image)[0] > 0.25
    dead = ref.background.dead_zone
    assert dead == pytest.approx(3 * ref.background.noise)
    assert both(base, image) == pytest.approx(
        reference_metrics(base, image, dead_zone=round(dead)), abs=1e-9
    )


def test_a_blank_baseline_does_not_divide_by_zero():
    blank = np.full((64, 64, 3), 255, np.uint8)
    dotted = blank.copy()
    dotted[10, 10] = 0
    signal, occupancy = both(blank, dotted)
    assert np.isfinite(signal) and signal > 0 and occupancy == pytest.approx(signal)
    assert both(blank, blank) == (0.0, 0.0)


def test_sparse_and_dense_baselines_choose_the_rules_metrics(tmp_path):
    for name, baseline, sparse in (
        ("plots", cytometry.baseline(), True),
        ("photos", smooth_image(3, (240, 320, 3)), False),
    ):
        folder = tmp_path / name
        folder.mkdir()
        write(folder / "baseline.png", baseline)
        write(folder / "a.png", baseline)
        result = pipeline.run(Config(inputs=(folder,), out=tmp_path / f"o_{name}", jobs=1))
        assert result.meta["signal"]["sparse"] is sparse
        watched = result.meta["config"]["outliers"]["metrics"]
        control = result.meta["config"]["history"]["metrics"]
        assert ("ssim_64" in watched) is not sparse and "occupancy_change" in watched
        assert ("ssim" in control) is not sparse and "signal_change" in control


def _background_by_definition(pixels, data_range, valid=None):
    """The README's definitions in plain float64 numpy: the most common colour (32 levels
    a channel), the median of its pixels, and 1.4826 x the median step between horizontal
    neighbours both within L/8 of it, over sqrt(2)."""
    bits = 16 if pixels.dtype == np.uint16 else 8
    flat = pixels.reshape(-1, 1 if pixels.ndim == 2 else pixels.shape[2]).astype(np.int64)
    keep = np.ones(len(flat), bool) if valid is None else valid.reshape(-1)
    q = flat >> (bits - 5)
    code = sum(q[:, c] << (5 * (q.shape[1] - 1 - c)) for c in range(q.shape[1]))
    top = np.bincount(code[keep]).argmax()
    colour = np.median(flat[keep & (code == top)], axis=0)
    img = pixels.reshape(pixels.shape[0], pixels.shape[1], -1).astype(np.float64)
    near = (np.abs(img - colour) <= data_range / 8).all(axis=2)
    if valid is not None:
        near &= valid
    both = near[:, 1:] & near[:, :-1]
    noise = 0.0
    if both.any():
        noise = 1.4826 * np.median(np.abs(img[:, 1:] - img[:, :-1])[both]) / np.sqrt(2)
    return tuple(colour.astype(float)), noise


@pytest.mark.parametrize("kind", ["photo", "dots", "grey", "16 bit"])
def test_the_background_follows_its_definition(kind):
    rng = np.random.default_rng(11)
    if kind == "dots":
        img = np.clip(255 - np.abs(rng.normal(0, 4, (300, 400, 3))), 0, 255).astype(np.uint8)
        img[rng.integers(0, 300, 500), rng.integers(0, 400, 500)] = (20, 40, 200)
    elif kind == "16 bit":
        base = cv2.GaussianBlur(rng.random((200, 240, 3)), (0, 0), 8)
        img = (base / base.max() * 60000 + rng.integers(0, 300, base.shape)).astype(np.uint16)
    else:
        base = cv2.GaussianBlur(rng.random((256, 320, 3)), (0, 0), 6)
        img = (base / base.max() * 230 + rng.normal(0, 2, base.shape)).clip(0, 255)
        img = img.astype(np.uint8)
        if kind == "grey":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    for valid in (None, rng.random(img.shape[:2]) > 0.3):
        bg = signal.background(img, top, valid)
        colour, noise = _background_by_definition(img, top, valid)
        assert bg.colour == colour
        assert bg.noise == pytest.approx(noise, rel=1e-12)


@pytest.mark.parametrize("kind", ["dots", "photo", "grey", "16 bit", "blank"])
def test_the_signal_share_follows_its_definition(kind):
    """The share of pixels more than max(L/8, 6 noise SDs) from the background colour
    (rounded) in some channel, over the valid pixels: exactly the plain numpy count."""
    rng = np.random.default_rng(5)
    if kind == "dots":
        img = cytometry.healthy(2)
    elif kind == "photo":
        img = smooth_image(6, (200, 260, 3))
    elif kind == "grey":
        img = cv2.cvtColor(smooth_image(7, (150, 170, 3)), cv2.COLOR_BGR2GRAY)
    elif kind == "16 bit":
        img = smooth_image(8, (120, 140, 3), np.uint16)
    else:
        img = np.full((64, 80, 3), 255, np.uint8)
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    for valid in (None, rng.random(img.shape[:2]) > 0.4, np.zeros(img.shape[:2], bool)):
        bg = signal.background(img, top, None if valid is not None and not valid.any() else valid)
        as3 = img.reshape(img.shape[0], img.shape[1], -1).astype(np.int64)
        far = np.abs(as3 - np.round(bg.colour)).max(axis=2) > bg.threshold
        expected = far.mean() if valid is None else (far[valid].mean() if valid.any() else 0.0)
        assert signal.share(img, bg, valid) == expected


def test_histograms_of_images_larger_than_float32_counts_are_exact(monkeypatch):
    """calcHist counts in float32, exact below 2^24 pixels: larger images are counted in
    bands of rows and summed as integers. With bands of a few rows, every count and the
    background are still those of the whole image."""
    img = smooth_image(9, (97, 61, 3))
    whole = signal.background(img, 255.0)
    counts = signal._counts(img, [0, 1, 2], None, [32, 32, 32])
    monkeypatch.setattr(signal, "BAND_PIXELS", 61 * 7)  # 14 bands, the last of 6 rows
    np.testing.assert_array_equal(signal._counts(img, [0, 1, 2], None, [32, 32, 32]), counts)
    assert signal.background(img, 255.0) == whole
    assert counts.sum() == 97 * 61


def test_a_baseline_whose_every_pixel_is_ignored_has_no_background():
    """With no compared pixel there is no most common colour: a clear ValueError (a run
    turns it into one line about the baseline), not a colour read off empty counts."""
    base = np.full((40, 50, 3), 200, np.uint8)
    with pytest.raises(ValueError, match="every pixel is ignored"):
        signal.background(base, 255.0, np.zeros((40, 50), bool))
