"""CSV and JSON of the sample run against golden files, and the guarantees of the writers.

Refresh the golden files after an intended change with
``REPORTER_UPDATE_GOLDEN=1 pytest tests/test_outputs.py``, then review the diff.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import SAMPLES

from reporter import atomic, outputs, pipeline, table
from reporter.config import Config

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("REPORTER_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> pipeline.RunResult:
    out = tmp_path_factory.mktemp("sample")
    return pipeline.run(Config(inputs=(SAMPLES,), out=out, jobs=1))


def normalised_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    df[table.PATH] = [Path(p).name for p in df[table.PATH]]  # machine-specific folder
    return df


def test_sample_csv_matches_golden(sample_run):
    got = normalised_csv(sample_run.outputs["csv"])
    golden = GOLDEN / "sample_results.csv"
    if UPDATE:
        got.to_csv(golden, index=False)
    want = pd.read_csv(golden, keep_default_na=False, dtype=str)
    assert list(got.columns) == list(want.columns)
    assert list(got[table.FILE]) == list(want[table.FILE])
    for col in got.columns:
        if col in table.METRIC_COLUMNS:
            # metric values may move in the last digits between OpenCV builds
            g = pd.to_numeric(got[col].replace("", None), errors="coerce")
            w = pd.to_numeric(want[col].replace("", None), errors="coerce")
            same = ((g - w).abs() <= 1e-6 + 1e-6 * w.abs()) | (g.isna() & w.isna())
            assert same.all(), col
        else:
            assert list(got[col]) == list(want[col]), col


def test_sample_run_verdicts(sample_run):
    df = sample_run.table.set_index(table.FILE)
    assert sample_run.exit_code == 1
    for name in df.index:
        expected = "FAIL" if name.startswith("fault_") else "PASS"
        assert df.loc[name, table.STATUS] == expected, (name, df.loc[name, table.REASONS])


def test_csv_writes_inf_and_empty_cells(tmp_path, run_dir):
    (run_dir / "broken.png").write_bytes(b"junk")
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    lines = result.outputs["csv"].read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    same = dict(
        zip(
            header,
            next(line for line in lines if line.startswith("same.png,")).split(","),
            strict=False,
        )
    )
    assert same["psnr"] == "inf"
    broken = dict(
        zip(
            header,
            next(line for line in lines if line.startswith("broken.png,")).split(","),
            strict=False,
        )
    )
    assert broken["ssim"] == "" and broken["status"] == "ERROR"


def test_json_has_metadata_and_the_same_rows(sample_run):
    doc = json.loads(sample_run.outputs["json"].read_text(encoding="utf-8"))
    assert doc["tool"]["name"] == "reporter"
    assert doc["baseline"]["file"] == "baseline.png"
    assert len(doc["baseline"]["sha256"]) == 64
    assert doc["counts"] == {"PASS": 8, "WARN": 0, "FAIL": 4, "ERROR": 0}
    assert doc["exit_code"] == 1
    assert doc["started"] <= doc["finished"]
    assert set(doc["metrics"]) == set(table.METRIC_COLUMNS)
    assert "Wang" in doc["metrics"]["ssim"]["definition"]
    assert doc["config"]["limits"]["ssim_64"] == {"warn": 0.88, "fail": 0.85}
    assert doc["config"]["limits"]["signal_change"] == {"warn": 0.08, "fail": 0.12}
    # The sample plots are sparse: the statistical rules watch the signal metrics.
    assert doc["signal"]["sparse"] is True and 0.02 < doc["signal"]["share"] < 0.1
    assert doc["signal"]["background"] == [255.0, 255.0, 255.0]
    assert doc["config"]["outliers"]["metrics"] == [
        "signal_change",
        "occupancy_change",
        "shift",
        "phash",
        "psnr_local",
    ]
    assert sorted(Path(s["path"]).name for s in doc["skipped"]) == ["README.md", "make_samples.py"]
    assert [r["file"] for r in doc["rows"]] == list(sample_run.table[table.FILE])
    assert set(doc["rows"][0]) == set(table.COLUMNS)


def test_json_is_strict_json_with_inf_as_a_string(tmp_path, run_dir):
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1))
    text = result.outputs["json"].read_text(encoding="utf-8")
    assert "Infinity" not in text and "NaN" not in text
    rows = {r["file"]: r for r in json.loads(text)["rows"]}
    assert rows["same.png"]["psnr"] == "inf"
    assert isinstance(rows["noisy.png"]["psnr"], float) and math.isfinite(rows["noisy.png"]["psnr"])
    assert rows["same.png"]["error"] == ""


def test_table_dtypes_are_explicit(sample_run):
    df = sample_run.table
    assert list(df.columns) == [*table.COLUMNS, *table.FOR_REPORTS]
    assert isinstance(df[table.STATUS].dtype, pd.CategoricalDtype)
    assert str(df["phash"].dtype) == "Int64" and str(df[table.WIDTH].dtype) == "Int64"
    assert df["ssim"].dtype == "float64"
    assert pd.api.types.is_string_dtype(df[table.FILE])


def test_atomic_write_leaves_the_old_file_whole_on_failure(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old,complete\n", encoding="utf-8")

    def crash(tmp: Path) -> None:
        tmp.write_text("new,half", encoding="utf-8")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.write_atomic(target, crash)
    assert target.read_text(encoding="utf-8") == "old,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary left


def test_unwritable_output_folder_is_exit_2(tmp_path, run_dir, capsys):
    from reporter.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    code = main(["run", str(run_dir), "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err


def test_csv_cells_from_outside_are_text_and_one_row_each(tmp_path, baseline_img):
    """OWASP's CSV-injection rule for names; CR or LF in a name stays inside its quoted
    field; the JSON keeps the exact names."""
    import csv as csvmodule

    from conftest import write

    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "baseline.png", baseline_img)
    names = [
        "=1+1.png",
        "@SUM(A1).png",
        "+cmd.png",
        "-2+3.png",
        "\tTab.png",
        "a\rb.png",
        "c\nd.png",
    ]
    for name in names:
        write(folder / name, baseline_img)
    result = pipeline.run(Config(inputs=(folder,), out=tmp_path / "o", jobs=1))
    with open(result.outputs["csv"], newline="", encoding="utf-8") as fh:
        rows = list(csvmodule.DictReader(fh))
    assert len(rows) == len(names)  # no extra rows from CR or LF
    got = {r["file"] for r in rows}
    for name in names:
        dangerous = name[0] in "=+-@\t\r"
        assert ("'" + name if dangerous else name) in got, name
    assert all(r["path"].startswith(str(folder)) for r in rows)
    assert result.outputs["csv"].read_bytes().count(b"\r\n") == len(names) + 1  # CRLF lines
    doc = json.loads(result.outputs["json"].read_text(encoding="utf-8"))
    assert {r["file"] for r in doc["rows"]} == set(names)  # exact in the JSON


def test_a_name_that_is_not_utf8_gets_a_normal_row_in_every_output(tmp_path):
    """An instrument PC with a Latin-1 share writes b"Probe_M\\xfcller.png": every output
    and the history keep working; the name shows U+FFFD, the path keeps the byte."""
    import os
    import shutil

    from reporter.config import HistorySettings

    folder = tmp_path / "in"
    folder.mkdir()
    latin1 = os.fsdecode(b"Probe_M\xfcller.png")
    shutil.copy(SAMPLES / "normal_day01.png", folder / latin1)
    shutil.copy(SAMPLES / "baseline.png", folder / os.fsdecode(b"Referenz_\xe4.png"))
    config = Config(
        inputs=(folder,),
        baseline=folder / os.fsdecode(b"Referenz_\xe4.png"),
        out=tmp_path / "o",
        jobs=1,
        series="S",
        history=HistorySettings(path=tmp_path / "h.sqlite"),
    )
    result = pipeline.run(config)
    assert result.exit_code == 0 and set(result.outputs) == {"csv", "json", "html", "xlsx"}
    row = result.table.iloc[0]
    assert row["file"] == "Probe_M\ufffdller.png"
    assert row["path"].endswith("Probe_M\\xfcller.png")  # the byte, escaped: still that file
    doc = json.loads(result.outputs["json"].read_text(encoding="utf-8"))
    assert doc["rows"][0]["file"] == "Probe_M\ufffdller.png"
    assert doc["baseline"]["file"] == "Referenz_\ufffd.png"
    assert "Probe_M\ufffdller.png" in result.outputs["html"].read_text(encoding="utf-8")
    assert "Probe_M\ufffdller.png" in result.outputs["csv"].read_text(encoding="utf-8")
    assert result.meta["history"]["slots"] == {"Probe_M\ufffdller.png": "Probe_M\ufffdller.png"}


def test_a_name_with_bidirectional_controls_cannot_reorder_what_people_read(tmp_path, capsys):
    """RIGHT-TO-LEFT OVERRIDE in a name (`scan<U+202E>gnp.exe.png`) is drawn as
    `scanexe.png...` and reverses the rest of its line: the verdict and the metrics in
    the summary, the log, the page and the workbook ("Trojan Source", CVE-2021-42574).
    Everywhere a person reads it, it is now a visible escape; the path keeps the
    character, so it still names the file."""
    import shutil

    from openpyxl import load_workbook

    from reporter.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "baseline.png", folder / "baseline.png")
    name = "scan\u202egnp.exe.png"
    shutil.copy(SAMPLES / "fault_debris.png", folder / name)
    shutil.copy(SAMPLES / "normal_day01.png", folder / "b\u2067x\u200f.png")
    shutil.copy(SAMPLES / "fault_debris.png", folder / "c.png")  # its duplicate: a group
    shutil.copy(SAMPLES / "fault_debris.png", folder / "c\u200b.png")  # looks like c.png
    shutil.copy(SAMPLES / "normal_day02.png", folder / "d\u00ad\ufeff\u2028.png")
    out = tmp_path / "o"
    assert main(["run", str(folder), "--out", str(out), "--jobs", "1"]) == 1
    said, log = capsys.readouterr()
    controls = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u00ad\u200b\ufeff\u2028]")
    assert "scan\\u202egnp.exe.png" in said and not controls.search(said + log)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "scan\\u202egnp.exe.png" in page.replace("<wbr>", "") and not controls.search(page)
    ws = load_workbook(out / "report.xlsx")["Results"]
    texts = [c.value for row in ws.iter_rows() for c in row if isinstance(c.value, str)]
    shown = [t for t in texts if not t.startswith(str(folder))]  # the path column keeps it
    assert "scan\\u202egnp.exe.png" in texts and not any(controls.search(t) for t in shown)
    rows = {r["file"]: r for r in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert set(rows) == {
        "scan\\u202egnp.exe.png",
        "b\\u2067x\\u200f.png",
        "c.png",
        "c\\u200b.png",
        "d\\u00ad\\ufeff\\u2028.png",
    }
    assert rows["scan\\u202egnp.exe.png"]["path"].endswith(name)  # the file's own name
    assert main(["duplicates", str(folder), "--out", str(tmp_path / "d"), "--jobs", "1"]) == 0
    said, log = capsys.readouterr()
    assert not controls.search(said + log)
    page = (tmp_path / "d" / "report.html").read_text(encoding="utf-8")
    assert "scan\\u202egnp.exe.png" in page.replace("<wbr>", "") and not controls.search(page)


def test_a_failed_run_leaves_the_run_folder_as_it_was(tmp_path, monkeypatch, capsys):
    """Outputs are staged and moved in only when all are written: a full disk while writing
    the page leaves a reused --out with its old, complete outputs, not a mix."""
    from reporter.cli import main

    out = tmp_path / "o"
    assert main(["run", str(SAMPLES), "--out", str(out), "-q"]) == 1
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"results.csv", "results.json", "report.html", "report.xlsx"}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out / "report.html"))

    monkeypatch.setattr(outputs, "write_html", full_disk)
    code = main(["run", str(SAMPLES), "--out", str(out), "-q", "--fail", "ssim=0.99"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # the old CSV and workbook, not this run's; no staging left behind

    monkeypatch.undo()
    assert main(["run", str(SAMPLES), "--out", str(out), "-q", "--fail", "ssim=0.99"]) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert (out / "results.csv").read_bytes() != before["results.csv"]  # a whole new set


@pytest.mark.skipif(os.name != "posix", reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("limit", [30_000, 60_000])
def test_a_real_write_failure_is_one_line_naming_the_output(tmp_path, limit):
    """A file size limit (RLIMIT_FSIZE; writes fail with EFBIG, as on a full disk): one
    line naming the output, not its staging copy; no traceback of openpyxl's zip
    archive after it; nothing left in the run folder."""
    import subprocess
    import sys

    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from reporter.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(SAMPLES), "--out", str(out), "-q", "-j", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot write {out}{os.sep}report." in lines[0] and "File too large" in lines[0]
    assert list(out.iterdir()) == []


def normalised_json(path: Path) -> dict:
    """results.json without what differs between machines and runs (times, folders,
    versions, metric values in their last digits)."""
    document = json.loads(path.read_text(encoding="utf-8"))

    def scrub(value, key=""):
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if key in (
            "started",
            "finished",
            "utc_offset",
            "duration_s",
            "python",
            "opencv",
            "pandas",
            "version",
        ):
            return "*"
        if isinstance(value, str) and os.sep in value and key in ("path", "inputs", "out"):
            return Path(value).name
        if isinstance(value, float):
            return float(f"{value:.6g}")
        return value

    return scrub(document)


def test_sample_json_matches_golden(sample_run):
    got = normalised_json(sample_run.outputs["json"])
    golden = GOLDEN / "sample_results.json"
    if UPDATE:
        golden.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert got == json.loads(golden.read_text(encoding="utf-8"))
