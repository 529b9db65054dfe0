"""psnr_local: the worst cell's PSNR, and the local defect no whole-picture metric shows."""

from __future__ import annotations

import math
import re
import shutil

import cv2
import numpy as np
import pytest

from reporter.config import Config, HistorySettings
from reporter.metrics import Reference, local_edges, psnr, psnr_local
from reporter.pipeline import run


def worst_cell_psnr(x: np.ndarray, y: np.ndarray, valid=None, top=255.0) -> float:
    """The definition, in plain numpy: cells between linspace edges, 16 a side or more,
    none over 64 px; each cell's MSE over its compared pixels; cells less than a quarter
    compared left out (all with a compared pixel counting when none is that full)."""
    d = (x.astype(np.int64) - y.astype(np.int64)) ** 2
    channels = 1 if d.ndim == 2 else d.shape[2]
    if d.ndim == 3:
        d = d.sum(axis=2)
    h, w = d.shape
    valid = np.ones((h, w), bool) if valid is None else valid
    nr, nc = max(16, math.ceil(h / 64)), max(16, math.ceil(w / 64))
    rows = np.linspace(0, h, nr + 1).round().astype(int)
    cols = np.linspace(0, w, nc + 1).round().astype(int)
    cells = []
    for i in range(nr):
        for j in range(nc):
            cell = (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
            n = valid[cell].sum()
            if n:
                mse = d[cell][valid[cell]].sum() / (n * channels)
                cells.append((n >= d[cell].size / 4, mse))
    counted = [mse for enough, mse in cells if enough] or [mse for _, mse in cells]
    worst = max(counted)
    return math.inf if worst == 0 else 10 * math.log10(top**2 / worst)


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((203, 317, 3), np.uint8),
        ((160, 96), np.uint16),
        ((11, 13, 3), np.uint8),
        ((1100, 2051), np.uint8),  # 18 x 33 cells
    ],
)
def test_psnr_local_is_the_psnr_of_the_worst_cell(shape, dtype):
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    x = rng.integers(0, top + 1, shape, dtype=dtype)
    y = np.clip(x.astype(np.int64) + rng.integers(-9, 10, shape), 0, top).astype(dtype)
    h, w = shape[:2]
    y[h // 3 : h // 3 + 4, w // 2 : w // 2 + 4] //= 2  # a small dark patch
    got = psnr_local(x, y)
    assert got == pytest.approx(worst_cell_psnr(x, y, top=top), abs=1e-9)
    assert got < psnr(x, y)  # the worst cell is worse than the average
    assert psnr_local(x, x) == math.inf
    # the squared distance it shares with mse, cosine and psnr is an exact integer sum
    exact = float(((x.astype(np.int64) - y.astype(np.int64)) ** 2).sum())
    assert Reference(x).pair(y).diff_sq == exact


def test_psnr_local_leaves_out_ignored_pixels_and_cells_mostly_ignored():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (160, 160), dtype=np.uint8)
    y = x.copy()
    y[:10, :10] = 255 - y[:10, :10]  # a change that only an ignored region holds
    y[100:104, 100:104] ^= 0x20  # a smaller one in plain view
    valid = np.ones(x.shape, bool)
    valid[:8, :] = False  # covers 8 of the first cells' 10 rows: under a quarter left
    valid[:, :3] = False
    got = Reference(x, valid).compare(y, ["psnr_local"])["psnr_local"]
    # the pixels of the ignored region take the baseline's values (Reference.masked)
    want = worst_cell_psnr(x, np.where(valid, y, x), valid)
    assert got == pytest.approx(want, abs=1e-9)
    assert got > worst_cell_psnr(x, y)  # the ignored change counted for nothing
    # every cell under a quarter compared: the cells with any compared pixel count
    sliver = np.zeros(x.shape, bool)
    sliver[:, 5] = True
    alone = Reference(x, sliver).compare(y, ["psnr_local"])["psnr_local"]
    assert alone == pytest.approx(worst_cell_psnr(x, np.where(sliver, y, x), sliver), abs=1e-9)
    assert math.isfinite(alone)  # the column crosses the first change


def test_the_cells_are_the_occupancy_grids_up_to_1024_px_then_at_most_64_px():
    from reporter import signal

    rows, cols = local_edges(1000, 777)
    assert len(rows) == len(cols) == signal.GRID + 1
    assert rows[0] == cols[0] == 0 and rows[-1] == 1000 and cols[-1] == 777
    rows, cols = local_edges(3000, 4000)  # a 12-megapixel camera: 47 x 63 cells
    assert (len(rows) - 1, len(cols) - 1) == (47, 63)
    assert np.diff(rows).max() <= 64 and np.diff(cols).max() <= 64


def test_a_speck_on_a_large_flat_field_moves_its_cell():
    """At 6 megapixels a 16 x 16 grid's cell is 192 x 128 px, and a 10 x 10 px speck
    moves its PSNR about 1.3 dB, inside the rules' floors; a 64-px cell's, 4.7 dB."""
    h, w = 2048, 3072
    yy, xx = np.mgrid[0:h, 0:w]
    field = 180 * (1 - 0.25 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2))

    def draw(seed, speck=False):
        out = field + np.random.default_rng(seed).normal(0, 3, field.shape)
        if speck:
            out[1000:1010, 1500:1510] -= 40
        return np.clip(out.round(), 0, 255).astype(np.uint8)

    base = Reference(draw(0))
    healthy = [base.compare(draw(s), ["psnr_local"])["psnr_local"] for s in (1, 2)]
    speck = base.compare(draw(3, speck=True), ["psnr_local"])["psnr_local"]
    assert max(healthy) - min(healthy) < 0.2
    assert speck < min(healthy) - 3


# --- a speck of dust on a flat field ---------------------------------------------------

H, W = 320, 400


def flat_field(seed: int, speck: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A camera's flat field: 25 % vignetting, noise of SD 3, and optionally a dark
    square speck (top, left, side, depth)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    r2 = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2) / ((H / 2) ** 2 + (W / 2) ** 2)
    field = 180 * (1 - 0.25 * r2) + rng.normal(0, 3, (H, W))
    if speck:
        top, left, side, depth = speck
        field[top : top + side, left : left + side] -= depth
    grey = np.clip(field.round(), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


SPECK = (100, 150, 6, 40)  # 6 x 6 px, 40 levels dark: 0.03 % of the picture
# its cell of the 16 x 16 grid: rows of 20 px, columns of 25
WHERE = "psnr_local's cell: x 150-174, y 100-119 px"


def write(path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_a_speck_on_a_flat_field_moves_no_whole_picture_metric():
    """Why psnr_local exists: every whole-picture metric of the speck stays among the
    healthy fields' values; the worst cell's PSNR falls by several dB."""
    base = Reference(flat_field(0))
    healthy = [base.compare(flat_field(s)) for s in range(1, 9)]
    speck = base.compare(flat_field(9, SPECK))
    for name in ("ssim", "ssim_coarse", "ms_ssim", "ssim_64", "psnr", "cosine"):
        low = min(v[name] for v in healthy)
        assert speck[name] > low - 0.01 * abs(low), name
    worst_healthy = min(v["psnr_local"] for v in healthy)
    assert speck["psnr_local"] < worst_healthy - 3


def speck_run(tmp_path, formats: tuple[str, ...]):
    """A run of nine healthy flat fields and field_10.png with SPECK."""
    for s in range(1, 10):
        write(tmp_path / "in" / f"field_{s:02d}.png", flat_field(s))
    write(tmp_path / "in" / "field_10.png", flat_field(10, SPECK))
    write(tmp_path / "baseline.png", flat_field(0))
    config = Config(
        inputs=(tmp_path / "in",),
        baseline=tmp_path / "baseline.png",
        out=tmp_path / "out",
        formats=formats,
        jobs=1,
        progress=False,
    )
    return run(config)


def test_a_speck_on_a_flat_field_is_flagged_by_the_run(tmp_path):
    result = speck_run(tmp_path, ("csv",))
    rows = {r["file"]: r for r in result.table.to_dict("records")}
    assert rows["field_10.png"]["status"] == "WARN"
    assert rows["field_10.png"]["reasons"].startswith("psnr_local ")
    assert "outlier of this run" in rows["field_10.png"]["reasons"]
    # where: the cell that holds the speck (rows 100-105, columns 150-155)
    # (the shift unmeasured on most fields is said once, with the baseline: not here)
    assert rows["field_10.png"]["notes"] == WHERE
    assert {r["status"] for f, r in rows.items() if f != "field_10.png"} == {"PASS"}
    assert not any("psnr_local" in r["notes"] for f, r in rows.items() if f != "field_10.png")


def test_a_speck_on_a_flat_field_is_caught_by_the_series_control_rules(tmp_path):
    """One field a day, so no run has the eight images the outlier rule needs: the
    control rules of the series must see it."""
    write(tmp_path / "baseline.png", flat_field(0))
    config = dict(
        baseline=tmp_path / "baseline.png",
        series="flat field",
        formats=("json",),
        jobs=1,
        progress=False,
        reports_root=tmp_path / "reports",
        history=HistorySettings(path=tmp_path / "history.sqlite", min_runs=12),
    )
    statuses, notes = [], []
    for day in range(1, 15):
        image = flat_field(day, SPECK if day == 14 else None)
        write(tmp_path / f"d{day}" / f"field_2026-03-{day:02d}.png", image)
        inputs = (tmp_path / f"d{day}",)
        if day == 14:
            config["formats"] = ("json", "html")
        result = run(Config(inputs=inputs, out=tmp_path / f"o{day}", **config))
        (row,) = result.table.to_dict("records")
        statuses.append((row["status"], row["reasons"]))
        notes.append(row["notes"])
    assert {s for s, _ in statuses[:13]} == {"PASS"}
    status, reasons = statuses[13]
    assert status == "FAIL"
    assert "psnr_local 1-3s" in reasons
    assert WHERE in notes[13] and not any("psnr_local" in n for n in notes[:13])
    # and its Levey-Jennings chart, though not a chart metric: the flag shows since when
    page = result.outputs["html"].read_text(encoding="utf-8")
    charted = re.findall(r'alt="Levey-Jennings chart of ([^"]+)"', page)
    assert any("psnr_local" in c for c in charted), charted
    assert any("occupancy_change" in c for c in charted)  # the chart metrics stay


# --- where: the cell outlined on the page's pictures -------------------------------------

# SPECK's cell, x 150-174 and y 100-119 of 400 x 320, in percent of the picture's sides
BOX = "left:37.500%;top:31.250%;width:6.250%;height:6.250%"


def test_the_page_outlines_psnr_locals_cell_on_the_flagged_images_pictures(tmp_path):
    page = speck_run(tmp_path, ("html",)).outputs["html"].read_text(encoding="utf-8")
    boxes = re.findall(r'<i class="cell" style="([^"]+)"></i>', page)
    assert boxes == [BOX, BOX]  # on the speck's picture and on its diff map, nowhere else
    assert "outlined: the cell psnr_local flagged" in page


def test_only_a_row_whose_psnr_local_fired_gets_the_box(tmp_path):
    from conftest import SAMPLES

    result = run(Config(inputs=(SAMPLES,), out=tmp_path / "o", jobs=1, formats=("html",)))
    page = result.outputs["html"].read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="row" data-status="(?:WARN|FAIL)" data-file="([^"]+)".*?</tr>',
                      page, re.S)  # fmt: skip
    assert len(rows) == 4
    table = result.table.set_index("file")
    for file in rows:
        row = re.search(rf'data-file="{re.escape(file)}".*?</tr>', page, re.S).group(0)
        fired = "psnr_local" in table.at[file, "reasons"]
        assert ('<i class="cell"' in row) == fired, file
    assert any("psnr_local" in table.at[f, "reasons"] for f in rows)  # both kinds are here
    assert not all("psnr_local" in table.at[f, "reasons"] for f in rows)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")
def test_in_a_browser_the_closer_look_outlines_the_cell_where_the_speck_is(tmp_path):
    """The box over the 512-px picture and diff map in the closer look lies on the cell's
    pixels (x 150-174, y 100-119 of 400 x 320: x 192-223 and y 128-153 of the picture at
    512 x 410 px), within the picture's 1 px border."""
    from test_html import chromium

    page = speck_run(tmp_path, ("html",)).outputs["html"]
    probe = """<script>
    window.addEventListener("load", function () {
      document.querySelector("#results a.look").click();
      setTimeout(function () {
        var state = {};
        [["image", "look-image", "look-cell"], ["diff", "look-diff", "look-cell-diff"]]
          .forEach(function (p) {
            var img = document.getElementById(p[1]).getBoundingClientRect();
            var box = document.getElementById(p[2]);
            var r = box.getBoundingClientRect();
            state[p[0]] = [r.left - img.left, r.top - img.top, r.width, r.height,
                           img.width, box.hidden, getComputedStyle(box).outlineStyle];
          });
        state.note = !document.getElementById("look-cell-note").hidden;
        document.body.setAttribute("data-probe", JSON.stringify(state));
      }, 300);
    });
    </script></body>"""
    probed = tmp_path / "probe.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", probe), "utf-8")
    dom = chromium(probed, tmp_path / "p", "--window-size=1700,1000", "--virtual-time-budget=5000",
                   "--dump-dom").stdout  # fmt: skip
    import html as markup
    import json

    state = json.loads(markup.unescape(re.search(r'data-probe="([^"]+)"', dom).group(1)))
    for pane in ("image", "diff"):
        left, top, width, height, side, hidden, outline = state[pane]
        assert side == 512 and not hidden and outline == "solid", state
        for got, want in ((left, 192), (top, 128), (width, 32), (height, 25.6)):
            assert abs(got - want) <= 2, (pane, state[pane])
    assert state["note"]
