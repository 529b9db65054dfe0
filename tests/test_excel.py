"""report.xlsx: re-opened with openpyxl, and converted by LibreOffice where it is installed."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import SAMPLES, noisy, smooth_image, write
from openpyxl import load_workbook
from openpyxl.chart import LineChart
from openpyxl.drawing.spreadsheet_drawing import TwoCellAnchor
from openpyxl.utils import get_column_letter
from openpyxl.utils.units import EMU_to_pixels, points_to_pixels

from reporter import pipeline
from reporter.config import Config, Limit
from reporter.render import view
from reporter.render.excel import FORMULA_STARTS, PSNR_INF, RESULT_COLUMNS, result_columns

# Names a spreadsheet would run as formulas if they were written as they are.
FORMULA_NAMES = [
    "=1+1.png",
    '=HYPERLINK("x","y").png',
    "+1.png",
    "-1.png",
    "@SUM(A1).png",
    "\tTab.png",
    "\rCR.png",
]


@pytest.fixture
def run(run_dir: Path, tmp_path: Path, baseline_img):
    for i, name in enumerate(FORMULA_NAMES):
        write(run_dir / "tmp.png", noisy(baseline_img, 0.01, seed=i + 2))
        (run_dir / "tmp.png").rename(run_dir / name)
    write(run_dir / "other.png", smooth_image(99))  # a FAIL
    write(run_dir / "tmp.png", baseline_img)
    (run_dir / "tmp.png").rename(run_dir / "ctl\x01char.png")  # XML cannot hold \x01
    (run_dir / "broken.png").write_bytes(b"junk")
    (run_dir / "notes.txt").write_text("x", encoding="utf-8")
    result = pipeline.run(
        Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, series="=cmd|' /C calc'!A0")
    )
    return result


def shown(name: str) -> str:
    """A name as a cell holds it: XML-illegal characters replaced, and CR read back as LF
    (XML parsers normalise line ends; the name no longer starts like a formula either way)."""
    return name.replace("\x01", "\ufffd").replace("\r", "\n")


def rows_by_file(ws) -> dict[str, int]:
    header = [c.value for c in ws[2]]
    col = header.index("file") + 1
    return {ws.cell(row=r, column=col).value: r for r in range(3, ws.max_row + 1)}


def test_sheets_rows_and_columns_follow_the_table(run):
    wb = load_workbook(run.outputs["xlsx"])
    assert wb.sheetnames == ["Summary", "Results", "Errors", "Trend"]
    ws = wb["Results"]
    columns = result_columns(run.record)
    assert [c.value for c in ws[2]] == list(columns)
    assert "embedding" not in columns and len(columns) == len(RESULT_COLUMNS) - 1  # off
    assert [ws.cell(row=r, column=1).value for r in range(3, ws.max_row + 1)] == [
        shown(f) for f in run.table["file"]
    ]
    assert ws.freeze_panes == "C3"
    assert ws.auto_filter.ref == f"A2:{get_column_letter(len(columns))}{ws.max_row}"


def test_pictures_are_anchored_inside_their_own_row(run):
    wb = load_workbook(run.outputs["xlsx"])
    ws = wb["Results"]
    where = rows_by_file(ws)
    header = [c.value for c in ws[2]]
    by_cell = {}
    for img in ws._images:
        anchor = img.anchor
        assert isinstance(anchor, TwoCellAnchor) and anchor.editAs == "twoCell"
        assert (anchor._from.row, anchor._from.col) == (anchor.to.row, anchor.to.col)
        row, col = anchor._from.row + 1, anchor._from.col + 1
        # Inside the cell: the far corner within the row's height and the column's width.
        assert EMU_to_pixels(anchor.to.rowOff) < points_to_pixels(ws.row_dimensions[row].height)
        width_px = ws.column_dimensions[get_column_letter(col)].width * 7 + 5
        assert EMU_to_pixels(anchor.to.colOff) < width_px
        by_cell[(row, header[col - 1])] = img._data()
    compared = run.table[run.table["status"] != "ERROR"]
    passed = compared[compared["status"] == "PASS"]
    assert 0 < len(passed) < len(compared)
    # A flagged row: its thumbnail and diff map; a row that passed: none (the page has icons).
    assert len(ws._images) == 2 * (len(compared) - len(passed))
    for record in compared.to_dict("records"):
        row = where[shown(record["file"])]
        if record["status"] == "PASS":
            assert (row, "thumbnail") not in by_cell and (row, "diff_map") not in by_cell
        else:
            assert by_cell[(row, "thumbnail")] == record["thumbnail"]  # this row's own picture
            assert by_cell[(row, "diff_map")] == record["diff_map"]
    # Every row is tall enough for the largest picture, those without one too: a sort
    # moves cells and their pictures, not row heights.
    heights = [ws.row_dimensions[r].height for r in where.values()]
    tallest = max(EMU_to_pixels(img.anchor.to.rowOff) for img in ws._images)
    assert all(points_to_pixels(h) > tallest for h in heights)
    assert len(wb["Summary"]._images) == 1  # the baseline


def test_metrics_are_numbers_with_formats_and_inf_sorts_as_best(run):
    ws = load_workbook(run.outputs["xlsx"])["Results"]
    header = [c.value for c in ws[2]]
    col = {name: header.index(name) + 1 for name in header}
    where = rows_by_file(ws)
    same = ws.cell(row=where["same.png"], column=col["psnr"])
    assert same.value == PSNR_INF and same.number_format == '[>=1000]"∞";0.00'
    noisy_row = where["noisy.png"]
    assert isinstance(ws.cell(row=noisy_row, column=col["psnr"]).value, float)
    assert 30 < ws.cell(row=noisy_row, column=col["psnr"]).value < 60
    assert ws.cell(row=noisy_row, column=col["ssim"]).number_format == "0.000"
    assert ws.cell(row=noisy_row, column=col["cosine"]).number_format == "0.0000"
    assert ws.cell(row=noisy_row, column=col["phash"]).number_format == "0"
    assert isinstance(ws.cell(row=noisy_row, column=col["phash"]).value, int)
    broken = where["broken.png"]
    assert ws.cell(row=broken, column=col["ssim"]).value is None  # empty, not 0 or "nan"
    psnr = [ws.cell(row=r, column=col["psnr"]).value for r in where.values()]
    assert max(v for v in psnr if v is not None) == PSNR_INF


def test_flags_are_live_rules_with_the_runs_limits(run_dir, tmp_path):
    limits = {"ssim": Limit(warn=0.97, fail=0.5), "mse": Limit(warn=None, fail=3.5)}
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, limits=limits))
    ws = load_workbook(result.outputs["xlsx"])["Results"]
    header = [c.value for c in ws[2]]
    letter = {name: get_column_letter(header.index(name) + 1) for name in header}
    last = ws.max_row
    rules = {str(cf.sqref): cf.rules for cf in ws.conditional_formatting}
    status = rules[f"{letter['status']}3:{letter['status']}{last}"]
    assert sorted(r.formula[0] for r in status) == ['"ERROR"', '"FAIL"', '"PASS"', '"WARN"']
    assert all(r.type == "cellIs" and r.operator == "equal" for r in status)
    ssim = rules[f"{letter['ssim']}3:{letter['ssim']}{last}"]
    s = letter["ssim"]
    assert [r.formula[0] for r in ssim] == [
        f"AND(ISNUMBER({s}3),{s}3<0.5)",
        f"AND(ISNUMBER({s}3),{s}3<0.97)",
    ]
    assert ssim[0].stopIfTrue and ssim[0].dxf.fill.fgColor.rgb.endswith("FFC7CE")
    m = letter["mse"]
    assert [r.formula[0] for r in rules[f"{m}3:{m}{last}"]] == [f"AND(ISNUMBER({m}3),{m}3>3.5)"]
    assert f"{letter['ssim_64']}3:{letter['ssim_64']}{last}" not in rules  # not a limit of this run
    assert "Colours (live rules)" in str(ws["A1"].value)  # the legend


def test_file_names_link_to_the_files_relative_to_the_workbook(run):
    """A link that survives mailing the workbook with its images: relative, never file:///."""
    ws = load_workbook(run.outputs["xlsx"])["Results"]
    where = rows_by_file(ws)
    for record in run.table.to_dict("records"):
        cell = ws.cell(row=where[shown(record["file"])], column=1)
        target = cell.hyperlink.target
        assert not target.startswith(("file:", "/")) and target.startswith("../")
        assert (run.out_dir / unquote(target)).resolve() == Path(record["path"]).resolve()


def test_text_is_never_a_formula(run):
    path = run.outputs["xlsx"]
    wb = load_workbook(path)
    risky = []
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if isinstance(cell.value, str) and cell.value.startswith(FORMULA_STARTS):
                    assert cell.data_type == "s", (ws.title, cell.coordinate, cell.value)
                    assert cell.quotePrefix, (ws.title, cell.coordinate, cell.value)
                    risky.append(cell.value)
    results = wb["Results"]
    names = {shown(n): c for c in results["A"] for n in FORMULA_NAMES if c.value == shown(n)}
    assert len(names) == len(FORMULA_NAMES)  # every name was written...
    assert all(c.data_type == "s" and c.quotePrefix for c in names.values())  # ...as text
    assert "=cmd|' /C calc'!A0" in risky  # the series on the Summary sheet
    with zipfile.ZipFile(path) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert sheets and not any(b"<f>" in z.read(n) or b"<f " in z.read(n) for n in sheets)
    assert "ctl\ufffdchar.png" in {c.value for c in results["A"]}


def test_summary_errors_and_trend(run):
    wb = load_workbook(run.outputs["xlsx"])
    summary = [c.value for row in wb["Summary"].iter_rows() for c in row if c.value is not None]
    counts = run.meta["counts"]
    assert summary[0] == view.title(run.record)
    assert summary[0].startswith("QC ERROR \u00b7 ")
    assert summary[0].endswith(
        f" {len(run.table) - counts['PASS']} of {len(run.table)} images flagged"
    )
    assert run.meta["baseline"]["sha256"] in summary
    assert "< 0.85" in summary and "< 0.88" in summary  # ssim_64's limits in force
    assert "beyond \u00b10.08" in summary and "beyond \u00b10.12" in summary  # both sides
    assert any(isinstance(v, str) and v.startswith("SSIM, Wang et al. 2004") for v in summary)
    errors = [c.value for row in wb["Errors"].iter_rows() for c in row if c.value is not None]
    assert "broken.png" in errors and any("notes.txt" in str(v) for v in errors)
    broken = run.table.set_index("file").loc["broken.png", "error"]
    assert broken in errors
    # The first run of its series: no history yet, so the trend is across this run's images.
    (chart,) = wb["Trend"]._charts
    assert len(chart.series) == 5


def test_without_a_series_the_trend_is_across_images(run_dir):
    result = pipeline.run(Config(inputs=(run_dir,), out=Path("o"), jobs=1))
    (chart,) = load_workbook(result.outputs["xlsx"])["Trend"]._charts
    assert isinstance(chart, LineChart)
    assert len(chart.series) == 5  # ssim, ssim_coarse, ssim_64 and ssim_64's two limits
    assert all(s.smooth is False for s in chart.series)
    # Unrelated images in table order: points, never a line suggesting a trend.
    for s in chart.series[:3]:
        assert s.graphicalProperties.line.noFill and s.marker.symbol == "circle"


def test_the_configuration_is_a_readable_table(run):
    ws = load_workbook(run.outputs["xlsx"])["Summary"]
    rows = [[c.value for c in row[:5]] for row in ws.iter_rows()]
    start = next(i for i, r in enumerate(rows) if r[0] == "Configuration")
    assert rows[start + 1][0] == "setting" and rows[start + 1][1] == "value"
    table = {r[0]: r for r in rows[start + 2 :] if r[0]}
    assert (
        table["history.min_runs"][1] == "20" and "in-control runs" in table["history.min_runs"][4]
    )
    assert table["run.formats"][1] == "csv, json, html, xlsx"
    assert table["input.recursive"][1] == "off"
    assert not any(str(r[1]).startswith(("[", "{", '"')) for r in table.values())  # no JSON


def test_a_run_of_only_errors_still_writes_the_workbook(tmp_path, baseline_img):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "baseline.png", baseline_img)
    (folder / "a.png").write_bytes(b"junk")
    result = pipeline.run(Config(inputs=(folder,), out=tmp_path / "o", jobs=1))
    wb = load_workbook(result.outputs["xlsx"])
    assert wb["Results"]["B3"].value == "ERROR" and not wb["Results"]._images
    assert [p.name for p in (tmp_path / "o").iterdir() if p.name.startswith(".")] == []


SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def soffice(tmp_path: Path, target: str, source: Path, out: Path) -> subprocess.CompletedProcess:
    profile = (tmp_path / "lo-profile").as_uri()  # its own profile: no lock on a user's
    return subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation={profile}",
            "--headless",
            "--convert-to",
            target,
            "--outdir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(SOFFICE is None, reason="no LibreOffice on this machine (.ci/run installs it)")
def test_libreoffice_opens_it_and_reads_names_as_text(run, tmp_path):
    out = tmp_path / "lo"
    done = soffice(tmp_path, "pdf", run.outputs["xlsx"], out)
    assert done.returncode == 0, done.stderr
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 4
    # The Results sheet as LibreOffice shows it: formulas would have been evaluated here.
    done = soffice(
        tmp_path,
        "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,2",
        run.outputs["xlsx"],
        out,
    )
    assert done.returncode == 0, done.stderr
    with open(out / "report-Results.csv", encoding="utf-8", newline="") as fh:
        sheet = list(csv.reader(fh))
    header = sheet[1]
    files = {row[0]: row for row in sheet[2:]}
    for name in FORMULA_NAMES:
        assert shown(name) in files, name  # the name itself, not "2" or "y"
    assert files["same.png"][header.index("psnr")] == "∞"
    assert not math.isnan(float(files["noisy.png"][header.index("ssim")]))


def test_the_sample_workbook_converts(tmp_path):
    """The workbook of sample_images/ also goes through LibreOffice (pictures, chart, rules)."""
    if SOFFICE is None:
        pytest.skip("no LibreOffice on this machine (.ci/run installs it)")
    result = pipeline.run(Config(inputs=(SAMPLES,), out=tmp_path / "o", jobs=1))
    done = soffice(tmp_path, "pdf", result.outputs["xlsx"], tmp_path / "lo")
    assert done.returncode == 0 and (tmp_path / "lo" / "report.pdf").stat().st_size > 50_000


def uno_python() -> str | None:
    """A Python with LibreOffice's UNO bridge (Debian: python3-uno), to drive LibreOffice."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and SOFFICE:
            done = subprocess.run([candidate, "-c", "import uno"], capture_output=True)
            if done.returncode == 0:
                return candidate
    return None


UNO_PYTHON = uno_python()


@pytest.mark.skipif(UNO_PYTHON is None, reason="no LibreOffice with python3-uno on this machine")
def test_pictures_stay_with_their_rows_when_libreoffice_sorts(tmp_path):
    """A real sort in LibreOffice (descending by file): every picture ends in its file's row.

    LibreOffice moves one-cell anchored pictures as well; Excel needs the
    two-cell anchors that test_pictures_are_anchored_inside_their_own_row checks.
    """
    import json

    result = pipeline.run(Config(inputs=(SAMPLES,), out=tmp_path / "o", jobs=1, formats=("xlsx",)))
    script = Path(__file__).with_name("libreoffice_sort.py")
    done = subprocess.run(
        [UNO_PYTHON, str(script), str(result.outputs["xlsx"]), str(tmp_path / "lo-profile")],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SOFFICE": SOFFICE},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    moved = json.loads(done.stdout.strip().splitlines()[-1])
    before = {k: v for k, v in moved["before"].items() if k.startswith("Image")}
    after = {k: moved["after"][k] for k in before}
    assert len(before) == 2 * 4  # flagged: thumbnail and diff map; passed: none
    assert all(v[2] for v in before.values())  # every picture anchored to a cell of a row
    assert {k: v[2] for k, v in after.items()} == {k: v[2] for k, v in before.items()}
    assert sum(before[k][0] != after[k][0] for k in before) >= 6  # the sort moved them
    first = min(after.values())  # descending by name: the first flagged one
    assert first[2] == "fault_shifted_population.png"


def test_fail_level_reasons_lead_the_cell_marked_in_bold_red(run):
    from openpyxl.cell.rich_text import CellRichText, TextBlock

    ws = load_workbook(run.outputs["xlsx"], rich_text=True)["Results"]
    header = [c.value for c in ws[2]]
    cell = ws.cell(row=rows_by_file(ws)["other.png"], column=header.index("reasons") + 1)
    assert isinstance(cell.value, CellRichText)
    marks = [b for b in cell.value if isinstance(b, TextBlock)]
    assert marks and all(
        b.text == "FAIL " and b.font.b and b.font.color.rgb.endswith("C62828") for b in marks
    )
    assert str(cell.value).startswith("FAIL ")
    flags = run.table.set_index("file").loc["other.png", "flags"]
    assert str(cell.value).count("FAIL ") == sum(level == "FAIL" for level, _ in flags)
    assert (
        str(cell.value).replace("FAIL ", "")
        == run.table.set_index("file").loc["other.png", "reasons"]
    )
