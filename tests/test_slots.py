"""Slots for dated names, a series whose slots all changed, and --baseline first."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import SAMPLES

from reporter.cli import main
from reporter.config import Config, HistorySettings
from reporter.pipeline import run
from reporter.series.slots import default_slot, slots


@pytest.mark.parametrize(
    ("name", "slot"),
    [
        ("tubeA_2026-10-01.png", "tubeA_*.png"),
        ("tubeA_2026-10-02.png", "tubeA_*.png"),
        ("tubeA_20261001.png", "tubeA_*.png"),
        ("tubeA_20261001_071500.png", "tubeA_*.png"),
        ("tubeA_2026-10-01T07-15-00.png", "tubeA_*.png"),
        ("tubeA_2026-10-01T07:15:00Z.png", "tubeA_*.png"),
        ("tubeA_2026_10_01.png", "tubeA_*.png"),
        ("tubeA_01.10.2026.png", "tubeA_*.png"),
        ("tubeA_071500.png", "tubeA_*.png"),
        ("tubeA_run3.png", "tubeA_*.png"),
        ("tubeA_2026-10-01_run12.png", "tubeA_*.png"),
        ("tubeA_2026-10-01_003.png", "tubeA_*.png"),  # a counter after the date
        ("2026-10-01_tubeA.png", "*_tubeA.png"),
        ("QC20261001.png", "QC*.png"),
        ("2026-10-01/tubeA.png", "*/tubeA.png"),  # --recursive: dated folders
        # what stays: numbers that are not dates, times or run counters
        ("tube_001.png", "tube_001.png"),
        ("plate_A01.png", "plate_A01.png"),
        ("normal_day01.png", "normal_day01.png"),
        ("lot_2026.png", "lot_2026.png"),
        ("x_2026-13-01.png", "x_2026-13-01.png"),  # no 13th month
        ("id_202610011.png", "id_202610011.png"),  # nine digits are not a date
    ],
)
def test_the_default_slot_leaves_out_dates_times_and_run_counters(name, slot):
    assert default_slot(name) == slot


def test_a_pattern_overrides_and_name_keeps_whole_names():
    files = ["tubeA_2026-10-01.png", "tubeB_2026-10-01.png"]
    assert slots(files, None) == ["tubeA_*.png", "tubeB_*.png"]
    assert slots(files, r"(?P<slot>tube.)_") == ["tubeA", "tubeB"]
    assert slots(files, "name") == files


def test_files_that_would_share_a_slot_keep_their_own_names(caplog):
    files = ["tubeA_2026-10-01.png", "tubeA_2026-10-02.png", "tubeB_2026-10-01.png"]
    assert slots(files, None) == ["tubeA_2026-10-01.png", "tubeA_2026-10-02.png", "tubeB_*.png"]
    assert "shared with another file" in caplog.text


def _day(tmp_path, name, files):
    folder = tmp_path / name
    folder.mkdir()
    for source, target in files.items():
        shutil.copy(SAMPLES / source, folder / target)
    return folder


def _series(tmp_path, **changes):
    return Config(
        baseline=SAMPLES / "baseline.png",
        series="S",
        jobs=1,
        formats=("json", "html"),
        history=HistorySettings(path=tmp_path / "history.sqlite"),
        reports_root=tmp_path / "reports",
        **changes,
    )


def test_dated_names_make_one_slot_per_tube_across_runs(tmp_path):
    for day in ("2026-10-01", "2026-10-02", "2026-10-03"):
        folder = _day(tmp_path, day, {"normal_day01.png": f"tubeA_{day}.png"})
        result = run(_series(tmp_path, inputs=(folder,)))
    control = result.meta["history"]
    assert control["slots"] == {"tubeA_2026-10-03.png": "tubeA_*.png"}
    assert control["limits"]["tubeA_*.png|occupancy_change"]["n"] == 2  # the two days before
    assert control["new_slots"] is None and result.exit_code == 0


def test_a_run_whose_slots_the_series_never_had_is_warned_about(tmp_path, capsys):
    first = _day(tmp_path, "d1", {"normal_day01.png": "tubeA.png", "normal_day02.png": "tubeB.png"})
    run(_series(tmp_path, inputs=(first,)))
    # The export script changed its names: nothing matches, every slot would start afresh.
    renamed = _day(
        tmp_path, "d2", {"normal_day01.png": "A-tube.png", "normal_day02.png": "B-tube.png"}
    )
    result = run(_series(tmp_path, inputs=(renamed,)))
    assert set(result.table["status"]) == {"WARN"}
    assert all(r.startswith("new slot: none of this run's slots") for r in result.table["reasons"])
    assert "tubeA.png, tubeB.png" in result.meta["history"]["new_slots"]
    assert "NEW SLOTS: none of this run's slots matches" in result.summary
    page = result.outputs["html"].read_text(encoding="utf-8")
    assert "No slot of this run is known to the series." in page
    assert result.exit_code == 0  # a warning: the images themselves are fine
    # A run that adds a tube beside the known ones is not warned about.
    more = _day(tmp_path, "d3", {"normal_day01.png": "tubeA.png", "normal_day03.png": "tubeC.png"})
    assert run(_series(tmp_path, inputs=(more,))).meta["history"]["new_slots"] is None


def test_baseline_first_takes_the_first_image_in_sorted_order(tmp_path, capsys):
    folder = _day(
        tmp_path,
        "photos",
        {"normal_day03.png": "b.png", "normal_day01.png": "a.png", "fault_debris.png": "c.png"},
    )
    out = tmp_path / "o"
    code = main(["run", str(folder), "--baseline", "first", "--out", str(out), "-q"])
    meta = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert meta["baseline"]["file"] == "a.png" and meta["config"]["baseline"] == "first"
    assert [r["file"] for r in meta["rows"]] == ["b.png", "c.png"]  # the rest, in order
    assert code == 1  # c.png is the debris fault


def test_baseline_first_from_the_config_file_and_a_file_named_first(tmp_path, capsys):
    folder = _day(tmp_path, "in", {"normal_day01.png": "a.png", "normal_day02.png": "b.png"})
    toml = tmp_path / "c.toml"
    toml.write_text('[input]\nbaseline = "first"\n', encoding="utf-8")
    out = tmp_path / "o"
    assert main(["run", str(folder), "--config", str(toml), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "results.json").read_text())["baseline"]["file"] == "a.png"
    # A file literally named "first" is named as a path.
    shutil.copy(SAMPLES / "normal_day05.png", tmp_path / "first")
    out2 = tmp_path / "o2"
    main(["run", str(folder), "--baseline", str(tmp_path / "first"), "--out", str(out2), "-q"])
    assert json.loads((out2 / "results.json").read_text())["baseline"]["file"] == "first"
