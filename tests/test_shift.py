"""A shift is information: measured only when the whole image moved, judged like any metric,
and --align never makes an image less like the baseline."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SAMPLES, smooth_image, write

from reporter import pipeline
from reporter.align import UNMEASURED, Aligner, compensate
from reporter.cli import main
from reporter.compare import NOT_JUDGES, ImageResult, aligned
from reporter.config import Comparison, Config, Limit
from reporter.metrics import METRICS, Reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cytometry  # noqa: E402


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, move, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def photo(seed: int = 7, shape=(300, 400, 3)) -> np.ndarray:
    """Photo-like: smooth shapes at two scales, so that a shift has a sharp peak."""
    coarse = smooth_image(seed, shape).astype(np.int32)
    fine = smooth_image(seed + 100, shape).astype(np.int32)
    edges = cv2.Canny(smooth_image(seed + 200, shape[:2]), 40, 120)
    out = (coarse + fine) // 2
    out[edges > 0] = 0
    return out.clip(0, 255).astype(np.uint8)


# --- what counts as a shift --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dx", "dy"), [(3, -2), (1.5, 0.75), (0.5, 0.25), (-12.3, 7.7), (40, -25), (0.3, 0.0)]
)
def test_a_whole_image_translation_is_measured_to_about_a_tenth_of_a_pixel(dx, dy):
    base = photo()
    found = Aligner(base).measure(shifted(base, dx, dy))
    assert found.found, found.note
    # Foroosh's estimate: about a tenth of a pixel off at worst on a resampled copy
    assert found.dx == pytest.approx(dx, abs=0.15) and found.dy == pytest.approx(dy, abs=0.15)


def test_a_translated_dot_plot_is_measured_exactly():
    plot = cytometry.healthy(1)
    found = Aligner(plot).measure(shifted(plot, 6, -4))
    assert (found.dx, found.dy) == (6.0, -4.0)  # whole pixels: the better of the two candidates


@pytest.mark.parametrize("shape", [(1024, 1024, 3), (1031, 1301, 3), (700, 900)])
def test_a_large_image_is_measured_on_the_pyramid_its_ssims_use(shape):
    """Above 512 px the shift is measured on a reduced greyscale copy: the luma of the
    metrics' own pyramid level (2 x 2 means), not a conversion and resize of its own.
    Odd sides and greyscale too; measured alone or inside a comparison, alike."""
    base = photo(5, shape)
    ref = Reference(base)
    image = shifted(base, -7.5, 4.25)
    pair = ref.pair(image)
    found = pair.shift
    assert found.found, found.note
    assert found.dx == pytest.approx(-7.5, abs=0.3) and found.dy == pytest.approx(4.25, abs=0.3)
    k = ref.aligner.factor.bit_length() - 1
    assert k >= 1 and k in pair._y  # the level the SSIMs use, made once for both
    assert found == Aligner(base).measure(image)
    assert pair.values() == ref.compare(image)


def test_the_measurement_repeats_and_leaves_its_inputs_alone():
    base = smooth_image(3, (200, 260))
    aligner = Aligner(base)
    image = shifted(base, 1.5, 0.75)
    before, base_before = image.copy(), base.copy()
    first = aligner.measure(image)
    assert first == aligner.measure(image)  # cv2 DFTs write into nothing of ours
    assert np.array_equal(image, before) and np.array_equal(base, base_before)


def test_one_moved_object_is_not_a_whole_image_shift():
    """The issue's photo: one object moved was reported as a 54.6 px whole-image shift."""
    base = photo(11, (360, 480, 3))
    moved = base.copy()
    patch = base[60:220, 80:240].copy()
    moved[60:220, 80:240] = base[180:340, 300:460]  # the object leaves a hole ...
    moved[120:280, 260:420] = patch  # ... and lands 180 px to the right, 60 px lower
    found = Aligner(base).measure(moved)
    assert not found.found and found.note.startswith("no whole-image shift"), found


@pytest.mark.parametrize("other", [8, 9, 10])
def test_an_unrelated_image_has_no_shift(other):
    base, unrelated = photo(7), photo(other)
    found = Aligner(base).measure(unrelated)
    assert not found.found and found.note, found
    # --align agrees: it finds nothing to compensate either
    ref = Reference(base)
    values = ref.compare(unrelated)
    assert math.isnan(values["shift"])


def test_healthy_draws_with_gain_wobble_are_in_place():
    """The issue's dot plots: a normal gain wobble moves the populations 2-4 px, which
    phase correlation read as an image shift over 2 px on 9 days of 20."""
    base = cytometry.baseline()
    aligner = Aligner(base)
    shifts = [aligner.measure(cytometry.healthy(300 + i)) for i in range(20)]
    for s in shifts:
        assert (s.found and s.size == 0.0) or (not s.found and "no whole-image shift" in s.note), s
    assert sum(s.found for s in shifts) >= 10  # most days are measured, at zero


def test_a_flat_field_is_never_moved_and_its_notes_say_why():
    """A vignetted flat field has nothing to locate: its correlation peaks are noise.
    No day may read as moved, and a note on several peaks must not claim only that
    parts moved (nothing did)."""
    h, w = 512, 640
    yy, xx = np.mgrid[0:h, 0:w]
    field = 180 * (1 - 0.25 * (((yy - h / 2) / h * 2) ** 2 + ((xx - w / 2) / w * 2) ** 2))

    def draw(seed):
        out = field + np.random.default_rng(seed).normal(0, 3, field.shape)
        return np.clip(out.round(), 0, 255).astype(np.uint8)

    aligner = Aligner(draw(0))
    shifts = [aligner.measure(draw(s)) for s in range(1, 21)]
    assert all(s.size == 0.0 for s in shifts if s.found), shifts
    several = [s.note for s in shifts if "several peaks" in s.note]
    assert several, shifts  # the case this test is about does occur
    assert all("too little detail" in n for n in several), several


def flat_fields(folder: Path, days: int) -> None:
    """A vignetted flat field as baseline, and ``days`` draws of its noise."""
    h, w = 512, 640
    yy, xx = np.mgrid[0:h, 0:w]
    field = 180 * (1 - 0.25 * (((yy - h / 2) / h * 2) ** 2 + ((xx - w / 2) / w * 2) ** 2))
    for seed in range(days + 1):
        out = field + np.random.default_rng(seed).normal(0, 3, field.shape)
        name = "baseline.png" if seed == 0 else f"day{seed:02d}.png"
        write(folder / name, np.clip(out.round(), 0, 255).astype(np.uint8))


def test_a_flat_field_runs_unmeasured_shift_is_said_once_not_on_every_row(tmp_path):
    """Against a flat field most days' shift cannot be measured: the run says so once,
    with the baseline, and those rows leave the shift blank without a note each."""
    folder = tmp_path / "run"
    folder.mkdir()
    flat_fields(folder, 10)
    config = Config(inputs=(folder,), out=tmp_path / "o", jobs=1, formats=("csv", "html", "json"))
    result = pipeline.run(config)
    frame = result.table
    unmeasured = int(frame["shift"].isna().sum())
    assert unmeasured >= 5  # the case this test is about: most days
    assert not any(n.startswith(UNMEASURED) for cell in frame["notes"] for n in cell.split("; "))
    said = [n for n in result.record.baseline.notes if n.startswith("shift not measured")]
    assert said == [
        f"shift not measured on {unmeasured} of 10 images: their correlation with the "
        "baseline has no single clear peak, as when the baseline has too little detail to "
        "be located (a flat field) or the images changed throughout; their rows leave it "
        "blank, without a note each"
    ]
    page = (result.out_dir / "report.html").read_text(encoding="utf-8")
    assert f"shift not measured on {unmeasured} of 10 images" in page
    document = json.loads((result.out_dir / "results.json").read_text(encoding="utf-8"))
    assert document["baseline"]["notes"] == said


def unmeasured_result(name: str, note: str = "shift not measured: no clear correlation peak"):
    return ImageResult(file=name, path=name, notes=["resized", note] if note else ["resized"])


def test_a_few_unmeasured_shifts_keep_their_notes():
    """Only a run where most images are unmeasured says it once: a few among measured
    images keep their own notes, as do fewer than three, and ERROR rows do not count."""
    few = [unmeasured_result(f"u{i}") for i in range(3)] + [
        unmeasured_result(f"m{i}", "") for i in range(4)
    ]
    assert pipeline.shifts_said_once(few) == ""
    assert all(len(r.notes) == 2 for r in few[:3])
    two = [unmeasured_result("a"), unmeasured_result("b")]
    assert pipeline.shifts_said_once(two) == "" and all(len(r.notes) == 2 for r in two)
    broken = [ImageResult(file=f"e{i}", path=f"e{i}", error="truncated") for i in range(5)]
    half = [unmeasured_result(f"u{i}") for i in range(3)] + [
        unmeasured_result(f"m{i}", "") for i in range(3)
    ]
    said = pipeline.shifts_said_once(half + broken)
    assert said.startswith("shift not measured on 3 of 6 images: ")
    assert all(r.notes == ["resized"] for r in half)  # the other notes stay


def test_a_degraded_copy_has_no_clear_peak():
    plot = cv2.imread(str(SAMPLES / "baseline.png"))
    tiny = cv2.resize(plot, (32, 32), interpolation=cv2.INTER_AREA)
    found = Aligner(plot).measure(cv2.resize(tiny, (512, 512)))
    assert not found.found and found.note == "shift not measured: no clear correlation peak"


# --- the shift in a run ----------------------------------------------------------------------


@pytest.fixture
def moved(tmp_path):
    folder = tmp_path / "moved"
    folder.mkdir()
    base = photo()
    write(folder / "baseline.png", base)
    write(folder / "moved.png", shifted(base, 3, -2))  # the stage moved 3 px right, 2 up
    write(folder / "same.png", base)
    return folder


def test_the_shift_is_a_metric_with_no_default_limit(moved, tmp_path):
    result = pipeline.run(Config(inputs=(moved,), out=tmp_path / "o", jobs=1, formats=("json",)))
    rows = result.table.set_index("file")
    row = rows.loc["moved.png"]
    assert row["shift_x"] == pytest.approx(3, abs=0.1) and row["shift_y"] == pytest.approx(
        -2, abs=0.1
    )
    assert row["shift"] == pytest.approx(math.hypot(3, 2), abs=0.1)
    assert "shift" not in row["reasons"].split(" ", 1)[0]  # no fixed limit of its own
    assert rows.loc["same.png", "shift"] == 0 and rows.loc["same.png", "status"] == "PASS"
    assert METRICS["shift"].definition.startswith("size in px of the whole-image translation")


def test_a_fixed_shift_limit_can_be_set_like_any_other(moved, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(
        ["run", str(moved), "--fail", "shift=2", "--formats", "csv", "--out", str(out), "-q"]
    )
    text = (out / "results.csv").read_text(encoding="utf-8")
    assert code == 1 and "shift 3.606 > fail limit 2.000" in text


def test_the_outlier_rule_watches_the_shift(tmp_path):
    """Nine images in place and one moved by 3 px: the moved one is an outlier of its run."""
    folder = tmp_path / "run"
    folder.mkdir()
    base = photo()
    write(folder / "baseline.png", base)
    rng = np.random.default_rng(0)
    for i in range(9):
        noise = rng.normal(0, 2, base.shape)
        write(folder / f"day{i}.png", np.clip(base + noise, 0, 255).astype(np.uint8))
    write(folder / "moved.png", shifted(base, 3, 0))
    table = pipeline.run(Config(inputs=(folder,), out=tmp_path / "o", jobs=1)).table
    row = table.set_index("file").loc["moved.png"]
    assert "shift 3.000 outlier of this run" in row["reasons"]
    others = table[table["file"] != "moved.png"]
    assert not others["reasons"].str.contains("shift").any()


# --- --align ---------------------------------------------------------------------------------


def test_with_align_a_shifted_copy_scores_like_the_original(moved, tmp_path):
    config = Config(
        inputs=(moved,),
        out=tmp_path / "o",
        jobs=1,
        formats=("json",),
        comparison=Comparison(align=True),
    )
    row = pipeline.run(config).table.set_index("file").loc["moved.png"]
    assert row["ssim"] > 0.999 and row["ssim_64"] > 0.999 and row["psnr"] > 40
    assert row["shift_x"] == pytest.approx(3, abs=0.1)  # the measured shift stays reported
    assert "aligned: moved back by +3.00, -2.00 px (whole pixels)" in row["notes"]


def test_with_align_psnr_locals_cell_is_where_the_aligned_image_differs(tmp_path):
    """psnr_local and the cell its note names come from the image moved back, in the
    baseline's pixels: a 4 x 4 px spot at x 192, y 121 of the baseline, which the move
    took into the next cell."""
    folder = tmp_path / "in"
    folder.mkdir()
    base = photo()
    write(tmp_path / "baseline.png", base)
    spotted = base.copy()
    spotted[121:125, 192:196] = 255 - spotted[121:125, 192:196]
    write(folder / "moved.png", shifted(spotted, 8, -2))
    config = Config(
        inputs=(folder,),
        baseline=tmp_path / "baseline.png",
        out=tmp_path / "o",
        jobs=1,
        formats=("json",),
        comparison=Comparison(align=True),
        limits={"psnr_local": Limit(warn=40.0)},
    )
    row = pipeline.run(config).table.set_index("file").loc["moved.png"]
    assert row["status"] == "WARN" and row["reasons"].startswith("psnr_local ")
    # 300 x 400: cells of 18-19 rows and 25 columns; the spot is in row 6, column 7
    assert "psnr_local's cell: x 175-199, y 112-130 px" in row["notes"]
    assert "aligned: moved back by +8.00, -2.00 px (whole pixels)" in row["notes"]


def test_align_prefers_the_sub_pixel_move_when_it_is_better(tmp_path):
    base = photo()
    ref = Reference(base)
    image = shifted(base, 2.5, -1.5)
    values, _, valid, note = aligned(ref, image, ref.aligner.measure(image))
    assert note.endswith("(sub-pixel)") and valid is not None
    assert values["ssim"] > ref.compare(image)["ssim"]


def test_align_never_makes_an_image_less_like_the_baseline(tmp_path):
    """The issue: --align lowered a healthy sample image's ssim_64 from 0.962 to 0.945."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(SAMPLES / "baseline.png", folder / "baseline.png")
    for name in ("normal_day01.png", "normal_day03.png", "normal_day07.png", "fault_debris.png"):
        shutil.copy(SAMPLES / name, folder / name)
    for i in range(4):  # and healthy dot plots with gain wobble
        write(folder / f"wobble{i}.png", cytometry.healthy(40 + i))
    shutil.copy(folder / "wobble0.png", folder / "baseline.png")
    write(folder / "moved.png", shifted(cytometry.healthy(40), 5, 3))

    def table(align: bool):
        config = Config(
            inputs=(folder,),
            out=tmp_path / f"o{align}",
            jobs=1,
            formats=("csv",),
            comparison=Comparison(align=align),
        )
        return pipeline.run(config).table.set_index("file")

    plain, with_align = table(False), table(True)
    for file in plain.index:
        for name, m in METRICS.items():
            a, b = with_align.loc[file, name], plain.loc[file, name]
            if name in NOT_JUDGES or (isinstance(a, float) and math.isnan(a)):
                continue
            if m.two_sided:
                assert abs(a) <= abs(b) + 1e-12, (file, name)
            elif m.higher_is_better:
                assert a >= b - 1e-12, (file, name, a, b)
            else:
                assert a <= b + 1e-12, (file, name, a, b)
    # ... while a plot that did move is moved back.
    assert with_align.loc["moved.png", "ssim_64"] > plain.loc["moved.png", "ssim_64"]
    assert "aligned: moved back by +5.00, +3.00 px" in with_align.loc["moved.png", "notes"]


def test_compensation_by_whole_pixels_is_an_exact_copy():
    base = smooth_image(4, (120, 160, 3))
    back, valid = compensate(shifted(base, 4, -3), 4, -3)
    assert np.array_equal(back[valid], base[valid])


def test_compensation_leaves_out_what_came_from_outside():
    base = smooth_image(4, (120, 160, 3))
    back, valid = compensate(shifted(base, 4, -3), 4, -3)
    assert not valid[:, -4:].any() and not valid[:3, :].any() and valid[3:, :-4].all()
    ref = Reference(base)
    assert ref.compare(back, valid=valid)["ssim"] > ref.compare(back)["ssim"]


@pytest.mark.parametrize(
    "dx, dy",
    [(0.3, -0.2), (-2.7, 1.4), (5, -3), (0, 0.5), (-0.5, 0), (150.2, 1), (-159.5, 0), (160, 0)],
)
def test_the_residual_of_a_move_is_the_mean_over_the_pixels_that_stay_inside(dx, dy):
    """The "better once moved back" test compares the mean absolute difference over the
    pixels a move keeps inside: the mean over a rectangle of slices is the mean under
    compensate's mask (but for OpenCV's order of summing: 1e-9 at most), and a move
    that keeps nothing inside has no residual."""
    base = smooth_image(4, (120, 160))
    aligner = Aligner(base)
    smooth = cv2.GaussianBlur(shifted(base, 2, 1).astype(np.float32), (0, 0), 1.0)
    moved, valid = compensate(smooth, dx, dy)
    got = aligner._residual(smooth, dx, dy)
    if not valid.any():
        assert got == math.inf
    else:
        mask = valid.astype(np.uint8)
        assert got == pytest.approx(cv2.mean(cv2.absdiff(moved, aligner.smooth), mask)[0], 1e-9)
    h, w = valid.shape
    rows = [r for r in range(h) if 0 <= r + dy <= h - 1]
    cols = [c for c in range(w) if 0 <= c + dx <= w - 1]
    assert valid.sum() == len(rows) * len(cols)  # compensate keeps what reads inside


def test_align_says_why_it_did_not_move_an_image():
    base = photo()
    ref = Reference(base)
    image = shifted(base, 0.02, 0.0)
    from reporter.align import Shift

    values, pixels, valid, note = aligned(ref, image, Shift(0.02, 0.0))
    assert note == "not aligned: moving it back by 0.02 px is too small to move by"
    assert valid is None and pixels is image


@pytest.mark.parametrize("shape", [(64, 48), (63, 48), (64, 47), (63, 47), (17, 16)])
def test_the_packed_spectrum_gives_numpys_phase_correlation(shape):
    """The correlation surface from OpenCV's packed (CCS) spectra, multiplied and
    normalised by kernels.cross_power, is numpy's float64 phase correlation, for even
    and odd sides (each parity packs the spectrum differently): every value's product
    and magnitude are in their place."""
    from reporter.kernels import cross_power

    rng = np.random.default_rng(7)
    a = rng.random(shape).astype(np.float32)
    b = (np.roll(a, (3, -5), (0, 1)) + 0.5 * rng.random(shape)).astype(np.float32)
    cross = cross_power(cv2.dft(a), cv2.dft(b))
    got = cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
    spectrum = np.fft.rfft2(a.astype(np.float64)) * np.conj(np.fft.rfft2(b.astype(np.float64)))
    expected = np.fft.irfft2(spectrum / np.abs(spectrum), s=shape)
    assert np.abs(got - expected).max() < 1e-5
    assert np.unravel_index(got.argmax(), shape) == (shape[0] - 3, 5)
