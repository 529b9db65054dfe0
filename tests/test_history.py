"""Scheduled QC: history store, control limits, Westgard and EWMA rules, baselines, locks."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SAMPLES
from openpyxl import load_workbook

from reporter import clock
from reporter.cli import main
from reporter.config import WESTGARD_RULES, Config, HistorySettings
from reporter.errors import ReporterError
from reporter.pipeline import run
from reporter.series import store as history_module
from reporter.series.rules import evaluate, prediction_factor
from reporter.series.store import SCHEMA_VERSION, History, series_lock

# --- the rules, on numbers -------------------------------------------------------------------

# The rules' logic on a metric the rules read on its own scale (PSNR: higher is better,
# already logarithmic), so that z-scores are exact.
SETTINGS = HistorySettings(
    min_sd={}, metrics=("psnr",), chart_metrics=("psnr",), rules=WESTGARD_RULES
)
MEAN, SD = 40.0, 0.5


def period(values, slot="A", metric="psnr", in_control=None):
    """History rows of one slot's metric, oldest first, as History.period returns them."""
    flags = in_control or [True] * len(values)
    return [
        {
            "run_id": i + 1,
            "started": f"2026-10-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00",
            "slot": slot,
            "metric": metric,
            "value": v,
            "status": "PASS",
            "reasons": "",
            "in_control": ok,
        }
        for i, (v, ok) in enumerate(zip(values, flags, strict=True))
    ]


def normal_values(n=20, seed=3):
    """n in-control values whose limits have exactly mean MEAN and SD SD (so z-scores are
    exact): their sample SD is SD over the prediction factor the limits widen it by."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=n)
    v = (v - v.mean()) / v.std(ddof=1)
    return list(MEAN + SD / prediction_factor(n) * v)


def rules_fired(values_before, today_z, slot_values=None):
    base = normal_values()
    rows = period(base + [MEAN + SD * z for z in values_before])
    today = {"A": {"psnr": MEAN + SD * today_z}}
    if slot_values:
        for slot, z in slot_values.items():
            rows += period(base, slot=slot)
            today[slot] = {"psnr": MEAN + SD * z}
    control = evaluate(rows, today, SETTINGS, "2026-11-22T07:30:00+00:00")
    return {
        slot: [(f.text.split(":")[0].split(" ", 1)[1], f.status.value) for f in flags]
        for slot, flags in control.flags.items()
    }, control


def test_limits_are_the_mean_and_sd_of_the_first_in_control_runs():
    base = normal_values()
    outlier = [0.5]  # out of control: must not move the limits
    rows = period(base[:10] + outlier + base[10:], in_control=[True] * 10 + [False] + [True] * 10)
    control = evaluate(rows, {"A": {"psnr": MEAN}}, SETTINGS, "2026-11-22T00:00:00+00:00")
    limit = control.limits[("A", "psnr")]
    assert not limit.provisional and limit.n == 20
    assert limit.mean == pytest.approx(MEAN) and limit.sd == pytest.approx(SD)
    assert np.std(base, ddof=1) == pytest.approx(SD / 1.1774, rel=1e-4)  # widened for 20 runs


@pytest.mark.parametrize("n", [20, 30, 100])
def test_the_prediction_factor_matches_students_t(n):
    """Reference: scipy's t quantile, t_{n-1}(Phi(3)) sqrt(1 + 1/n) / 3."""
    from scipy import stats

    exact = stats.t.ppf(stats.norm.cdf(3), n - 1) * np.sqrt(1 + 1 / n) / 3
    assert prediction_factor(n) == pytest.approx(exact, rel=1e-4)


def test_a_similarity_is_judged_on_the_cube_root_of_its_distance():
    """Limits of ssim_64 from an independent numpy computation on (1 - x) ** (1/3)."""
    rng = np.random.default_rng(5)
    values = list(1 - rng.gamma(2.0, 0.01, size=20))  # skewed, as healthy similarities are
    settings = HistorySettings(min_sd={}, metrics=("ssim_64",), chart_metrics=())
    control = evaluate(period(values, metric="ssim_64"), {"A": {"ssim_64": 0.9}}, settings, "x")
    limit = control.limits[("A", "ssim_64")]
    y = (1 - np.array(values)) ** (1 / 3)
    sd = y.std(ddof=1) * prediction_factor(20)
    assert limit.mean == pytest.approx(y.mean()) and limit.sd == pytest.approx(sd)
    assert limit.line(3) == pytest.approx(1 - (y.mean() + 3 * sd) ** 3)  # below: worse
    assert limit.centre == pytest.approx(1 - y.mean() ** 3)
    low, high = limit.band(3)
    assert low == limit.line(3) and high == pytest.approx(1 - max(y.mean() - 3 * sd, 0) ** 3)
    assert limit.z(limit.line(3)) == pytest.approx(3)
    # The rule fires where the raw mean - 3 SD of a skewed metric would not, and vice versa:
    # 0.9 is far below the cube-root 3SD line.
    assert [f.text.split(":")[0] for f in control.flags["A"]] == ["ssim_64 1-3s"]


def test_a_normal_run_fires_nothing():
    fired, _ = rules_fired([0.3, -0.2, 0.1], 0.5)
    assert fired.get("A", []) == []


@pytest.mark.parametrize(
    ("before", "today", "expected"),
    [
        ([], -2.5, [("1-2s", "WARN")]),  # a warning, not a rejection
        ([], 2.5, []),  # more like the baseline than usual: not a finding
        ([], -3.5, [("1-3s", "FAIL")]),
        ([-2.4], -2.3, [("2-2s", "FAIL")]),
        ([2.4], -2.3, [("1-2s", "WARN")]),  # opposite sides: not 2-2s
        ([-1.3, -1.5, -1.2], -1.4, [("4-1s", "FAIL")]),
        ([-1.3, 0.2, -1.2], -1.4, []),
        ([-0.4] * 9, -0.5, [("10x", "FAIL")]),
        ([0.4] * 8 + [-0.1], 0.5, []),  # nine on one side is not ten
    ],
)
def test_each_westgard_rule_fires_when_it_should(before, today, expected):
    fired, _ = rules_fired(before, today)
    assert fired.get("A", []) == expected


def test_both_sides_when_asked():
    rows = period(normal_values())
    both = HistorySettings(min_sd={}, both_sides=True, metrics=("psnr",), chart_metrics=())
    control = evaluate(rows, {"A": {"psnr": MEAN + 3.5 * SD}}, both, "2026-11-22T00:00:00")
    assert [f.text.split(":")[0] for f in control.flags["A"]] == ["psnr 1-3s"]
    assert "> 3SD line 41.50" in control.flags["A"][0].text


def test_chart_marks_read_whole_metric_names():
    from reporter.series.rules import fired_rules

    reasons = "ms_ssim 1-3s: 0.800 < 3SD line 0.913; ssim_64 EWMA: drift 1.2 SD below"
    assert fired_rules(reasons, "ssim") == []  # not the ms_ssim flag
    assert fired_rules(reasons, "ms_ssim") == ["1-3s"]
    assert fired_rules(reasons, "ssim_64") == ["EWMA"]


def test_a_distance_is_bad_upwards():
    rows = period([10 + 0.5 * v for v in range(-10, 10)], metric="phash")
    settings = HistorySettings(min_sd={}, metrics=("phash",), chart_metrics=())
    up = evaluate(rows, {"A": {"phash": 30.0}}, settings, "2026-11-22T00:00:00")
    down = evaluate(rows, {"A": {"phash": 0.0}}, settings, "2026-11-22T00:00:00")
    assert up.flags["A"][0].text.startswith("phash 1-3s: 30 > 3SD line")
    assert down.flags.get("A", []) == []


def test_a_signed_metric_is_bad_on_both_sides():
    rows = period([(v - MEAN) / 50 for v in normal_values()], metric="signal_change")  # SD 0.01
    settings = HistorySettings(min_sd={}, metrics=("signal_change",), chart_metrics=())
    for today, sign in ((0.5, ">"), (0.05, ">"), (-0.1, "<")):
        control = evaluate(rows, {"A": {"signal_change": today}}, settings, "x")
        (flag,) = control.flags["A"]
        assert flag.text.startswith(f"signal_change 1-3s: {today:.3f} {sign} 3SD line")


def test_r4s_compares_the_slots_of_one_run():
    fired, _ = rules_fired([], 2.3, slot_values={"B": -2.4})
    assert ("R-4s", "FAIL") in fired["A"] and ("R-4s", "FAIL") in fired["B"]


def test_ewma_catches_a_slow_drift_inside_the_limits():
    # -0.1 SD a run, every third run back up by 1.2 SD: never four beyond 1 SD or ten
    # below the mean in a row, and no point beyond 2 SD until the EWMA has fired.
    drift = [-0.1 * i + (1.2 if i % 3 == 0 else 0) for i in range(1, 25)]
    seen = []
    for i in range(len(drift)):
        fired, _ = rules_fired(drift[:i], drift[i])
        seen.append(fired.get("A", []))
    first = next(i for i, f in enumerate(seen) if f)
    assert seen[first] == [("EWMA", "WARN")]  # drift is the first thing seen
    assert max(abs(z) for z in drift[: first + 1]) < 2


def test_identical_runs_without_a_floor_do_not_divide_by_zero():
    """A series of identical screenshots: SD 0 (a config cannot set a 0 floor, a library
    caller can). The same value again is z 0; any change is beyond every line."""
    settings = HistorySettings(min_sd={}, metrics=("psnr",), chart_metrics=("psnr",))
    rows = period([40.0] * 20)
    same = evaluate(rows, {"A": {"psnr": 40.0}}, settings, "x")
    assert same.flags.get("A", []) == []
    worse = evaluate(rows, {"A": {"psnr": 39.9}}, settings, "x")
    assert [f.text.split(":")[0] for f in worse.flags["A"]] == ["psnr 1-3s"]


def test_limits_are_provisional_until_min_runs():
    rows = period(normal_values()[:12])
    control = evaluate(rows, {"A": {"psnr": 0.5}}, SETTINGS, "2026-11-22T00:00:00+00:00")
    assert control.limits[("A", "psnr")].provisional
    assert control.flags.get("A", []) == []  # the fixed limits decide meanwhile


def test_the_drift_example_has_a_text_naming_rule_values_and_limit():
    _, control = rules_fired([-2.4], -2.3)
    (flag,) = control.flags["A"]
    assert re.fullmatch(r"psnr 2-2s: 38\.80, 38\.85 < 2SD line 39\.00", flag.text), flag.text


# --- a generated series through the whole pipeline ------------------------------------------


def _samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


MS = _samples()
SERIES = "Canto II FSC/SSC"
PATTERN = r"(?P<slot>.+)_\d{4}-\d\d-\d\d"


def plot(rng, pops, events=MS.EVENTS):
    return MS.render(MS.draw_events(MS.jitter(pops, rng), events, rng), MS.TITLE)


def day(folder: Path, name: str, tubes: dict[str, np.ndarray]) -> Path:
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    for tube, img in tubes.items():
        cv2.imwrite(str(run_dir / f"{tube}_{name}.png"), img)
    return run_dir


NORMAL_DAYS = 30
SHIFT, SPREAD, FEW = "2026-10-31", "2026-11-01", "2026-11-02"
DRIFT = [f"2026-11-{d:02d}" for d in range(3, 11)]  # eight days of a slow drift


@pytest.fixture(scope="module")
def series_runs(tmp_path_factory):
    """30 normal days of two tubes; then on tube A a shifted population, a broad spread,
    few events, and a population drifting by 0.2 % of the axis a day."""
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(2026)
    baseline = root / "baseline.png"
    cv2.imwrite(str(baseline), MS.render(MS.draw_events(MS.CONTROL, MS.EVENTS, rng), MS.TITLE))
    days = {f"2026-10-{d:02d}": (MS.CONTROL, MS.EVENTS) for d in range(1, NORMAL_DAYS + 1)}
    days[SHIFT] = (MS.FAULTS["fault_shifted_population"](MS.CONTROL), MS.EVENTS)
    days[SPREAD] = (MS.FAULTS["fault_broad_spread"](MS.CONTROL), MS.EVENTS)
    days[FEW] = (MS.CONTROL, MS.EVENTS // 10)
    for k, name in enumerate(DRIFT, 1):
        moved = MS.change(MS.CONTROL, "granulocytes", x=0.66 + 0.002 * k, y=0.64 + 0.002 * k)
        days[name] = (moved, MS.EVENTS)
    config = dict(
        baseline=baseline,
        series=SERIES,
        jobs=1,
        reports_root=root / "reports",
        history=HistorySettings(slot_pattern=PATTERN, min_runs=20),
    )
    results = {}
    for name, (pops, events) in days.items():
        # tube B: a second acquisition of the same control, healthy throughout
        tubes = {"tubeA": plot(rng, pops, events), "tubeB": plot(rng, MS.CONTROL)}
        # the charts are read from one day's reports; the other days need only the table
        formats = ("csv", "json", "html", "xlsx") if name == FEW else ("csv", "json")
        inputs = (day(root / "in", name, tubes),)
        results[name] = run(Config(inputs=inputs, formats=formats, **config))
    return root, results


def control_reasons(result) -> dict[str, list[str]]:
    out = {}
    for record in result.table.to_dict("records"):
        rules = re.findall(r"\b\w+ (1-2s|1-3s|2-2s|R-4s|4-1s|10x|EWMA):", record["reasons"])
        out[record["file"]] = rules
    return out


def test_every_run_is_recorded_with_its_slots(series_runs):
    root, results = series_runs
    with History(root / "reports" / "history.sqlite") as store:
        runs = store.runs(SERIES)
        assert len(runs) == len(results) == 41
        assert [r.id for r in runs] == [r.meta["history"]["run_id"] for r in results.values()]
        slots = {row[0] for row in store.db.execute("SELECT DISTINCT slot FROM results")}
    assert slots == {"tubeA", "tubeB"}  # the date is cut out of the name by the pattern


def test_limits_are_provisional_for_20_runs_then_established(series_runs):
    _, results = series_runs
    first = list(results.values())
    assert all(not r.meta["history"]["established"] for r in first[:20])
    assert first[19].meta["history"]["in_control_runs"] == 19
    assert all(r.meta["history"]["established"] for r in first[20:])


def test_normal_days_fire_no_control_rule_and_faults_do(series_runs):
    _, results = series_runs
    normal = list(results.values())[:NORMAL_DAYS]
    assert sum(r.meta["history"]["established"] for r in normal) == 10
    fired = [rule for r in normal for rules in control_reasons(r).values() for rule in rules]
    assert fired == []  # 1-2s is not a default rule; nothing else fires on healthy days
    for name in (SHIFT, SPREAD, FEW):
        result = results[name]
        tube_a = next(f for f in control_reasons(result) if f.startswith("tubeA"))
        assert "1-3s" in control_reasons(result)[tube_a], name
        row = result.table.set_index("file").loc[tube_a]
        assert row["status"] == "FAIL" and "occupancy_change 1-3s:" in row["reasons"]


def test_a_slow_drift_is_caught_while_the_fixed_limits_still_pass_it(series_runs):
    _, results = series_runs
    found = None
    for name in DRIFT:
        tube_a = next(f for f in control_reasons(results[name]) if f.startswith("tubeA"))
        row = results[name].table.set_index("file").loc[tube_a]
        if control_reasons(results[name])[tube_a]:
            found = (name, row)
            break
    assert found is not None, "the drift went unnoticed"
    name, row = found
    assert " warn limit " not in row["reasons"] and " fail limit " not in row["reasons"]
    assert row["ssim_64"] > 0.94  # far above the fixed WARN limit of ssim_64
    assert DRIFT.index(name) < 7


def test_failed_images_stay_out_of_the_limits(series_runs):
    root, results = series_runs
    last = results[FEW].meta["history"]["limits"]
    assert last["tubeA|occupancy_change"]["n"] == 20  # the two faults before it do not count
    with History(root / "reports" / "history.sqlite") as store:
        base = store.baseline(SERIES)
        rows = [r for r in store.period(SERIES, base) if r["slot"] == "tubeA"]
    failed = {r["run_id"] for r in rows if not r["in_control"]}
    fault_ids = {results[d].meta["history"]["run_id"] for d in (SHIFT, SPREAD)}
    assert fault_ids <= failed


def test_reports_show_the_levey_jennings_charts(series_runs):
    _, results = series_runs
    result = results[FEW]
    page = result.outputs["html"].read_text(encoding="utf-8")
    charts = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="Levey-Jennings chart', page)
    # tubeA and tubeB, occupancy_change and signal_change; and on tubeA, whose few events
    # psnr_local's 1-3s flagged too, psnr_local's chart
    titles = re.findall(r'alt="Levey-Jennings chart of ([^"]+)"', page)
    assert len(charts) == len(titles) == 5, titles
    assert sum("psnr_local" in t for t in titles) == 1
    assert "psnr_local 1-3s" in result.table.set_index("file").loc[f"tubeA_{FEW}.png", "reasons"]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(charts[0]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (270, 700) and img.std() > 10
    red = np.all(np.abs(img.astype(int) - (0x28, 0x28, 0xC6)) < 40, axis=2)
    assert red.sum() > 20  # the flagged point and the 3 SD lines
    assert f"{SERIES}, run {result.meta['history']['run_id']}" in page
    trend = load_workbook(result.outputs["xlsx"])["Trend"]
    assert len(trend._charts) == 5
    assert all(
        len(c.series) == 8 and all(s.smooth is False for s in c.series) for c in trend._charts
    )
    # Every point within the axis, the far-off fault included (the PNG marks it on its edge).
    values = [c.value for c in trend["C"] if isinstance(c.value, float)]
    for chart in trend._charts:
        low, high = chart.y_axis.scaling.min, chart.y_axis.scaling.max
        if low is not None:
            rows = chart.series[0].val.numRef.f.split("$")  # 'Trend'!$C$3:$C$12
            first, last = int(rows[2].rstrip(":")), int(rows[4])
            shown = [trend.cell(row=r, column=3).value for r in range(first, last + 1)]
            assert all(low <= v <= high for v in shown if isinstance(v, float)), (low, high)
    assert values
    # Each slot's table starts a printed page, under its own title and header.
    assert len(trend.row_breaks.brk) == len(trend._charts) - 1


def test_accepting_a_run_lets_it_into_the_limits(series_runs, capsys):
    root, results = series_runs
    db = root / "reports" / "history.sqlite"
    run_id = results[SHIFT].meta["history"]["run_id"]
    code = main(
        [
            "accept",
            SERIES,
            str(run_id),
            "--reason",
            "new bead lot",
            "--by",
            "ana",
            "--history",
            str(db),
        ]
    )
    assert code == 0 and "accepted by ana" in capsys.readouterr().out
    with History(db) as store:
        rows = [r for r in store.period(SERIES, store.baseline(SERIES)) if r["run_id"] == run_id]
        assert rows and all(r["in_control"] for r in rows)
    assert main(["accept", SERIES, str(run_id), "--reason", "x", "--history", str(db)]) == 2
    assert "already accepted by ana" in capsys.readouterr().err
    assert main(["history", SERIES, "--history", str(db), "--last", "3"]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    assert head.split()[:3] == ["run", "started", "verdict"] and "rules that fired" in head
    assert len(lines) == 3 and all(re.match(r"\s+\d+  2026-", line) for line in lines)
    assert main(["history", SERIES, "--history", str(db), "--csv"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("run_id,started,verdict") and len(table) == 42
    # People read local time with its offset (here the zone asked for); --csv keeps UTC.
    last = list(csv.DictReader(io.StringIO("\n".join(table))))[-1]
    assert last["started"].endswith("+00:00")
    args = ["history", SERIES, "--history", str(db), "--last", "1", "--timezone", "Asia/Kolkata"]
    assert main(args) == 0
    shown = capsys.readouterr().out.splitlines()[1]
    assert clock.shown(last["started"], "Asia/Kolkata") in shown and "+05:30" in shown
    assert main([*args[:-1], "Mars/Base"]) == 2
    assert "must be an IANA time zone" in capsys.readouterr().err
    assert any(",ana,new bead lot," in line for line in table)


def test_history_lists_the_control_rules_that_fired(series_runs, capsys):
    root, results = series_runs
    db = str(root / "reports" / "history.sqlite")
    assert main(["history", SERIES, "--history", db, "--last", "50"]) == 0
    out = capsys.readouterr().out
    by_id = {int(line.split()[0]): line for line in out.splitlines()[1:]}
    shift = by_id[results[SHIFT].meta["history"]["run_id"]]
    fired = sorted({rule for rules in control_reasons(results[SHIFT]).values() for rule in rules})
    assert fired and all(f" {rule}" in shift for rule in fired), (shift, fired)
    quiet = by_id[results["2026-10-05"].meta["history"]["run_id"]]
    assert quiet.rstrip().endswith(" -")  # a normal day: no rule fired
    assert main(["history", SERIES, "--history", db, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    row = next(r for r in rows if int(r["run_id"]) == results[SHIFT].meta["history"]["run_id"])
    assert all(f" {rule}" in row["rules_fired"] for rule in fired)


def test_missing_after_reports_a_silent_series(series_runs, capsys):
    root, _ = series_runs
    db = str(root / "reports" / "history.sqlite")
    assert main(["history", SERIES, "--history", db, "--missing-after", "24"]) == 0
    assert main(["history", SERIES, "--history", db, "--missing-after", "0.00001"]) == 1
    assert "MISSING: no run of series" in capsys.readouterr().err
    assert main(["history", "never run", "--history", db, "--missing-after", "24"]) == 1


# --- baselines and periods --------------------------------------------------------------------


def small_series(tmp_path, runs=3, **history):
    """A few quick runs of the sample images' normal days against sample_images/baseline.png."""
    inputs = tuple(sorted(SAMPLES.glob("normal_day0[1-3].png")))
    config = Config(
        inputs=inputs,
        baseline=SAMPLES / "baseline.png",
        series="S",
        jobs=1,
        formats=("json",),
        history=HistorySettings(path=tmp_path / "h" / "history.sqlite", **history),
        reports_root=tmp_path / "reports",
    )
    return config, [run(config) for _ in range(runs)]


def test_a_new_baseline_starts_a_new_period_and_a_different_one_is_loud(tmp_path, capsys):
    config, results = small_series(tmp_path)
    first = results[-1].meta["history"]
    assert first["baseline"]["reason"] == "the first run of the series"
    assert first["limits"]["normal_day01.png|occupancy_change"]["n"] == 2
    assert "Series S, run 3: control limits provisional (2 of 20 runs)." in results[-1].summary
    db = str(config.history_path())
    new = SAMPLES / "normal_day08.png"
    assert (
        main(
            [
                "baseline",
                "set",
                "S",
                str(new),
                "--reason",
                "service visit",
                "--by",
                "bo",
                "--history",
                db,
            ]
        )
        == 0
    )
    capsys.readouterr()
    # Runs that still name the old baseline are loud, and stay out of the new period.
    loud = run(config)
    assert "not the series' recorded baseline" in loud.meta["history"]["baseline_mismatch"]
    assert loud.meta["history"]["limits"] == {}
    assert "BASELINE DIFFERS from the recorded one" in loud.summary
    # ... and not a pass: every image WARN with the reason, exit status 1.
    assert loud.exit_code == 1 and loud.meta["exit_code"] == 1
    assert set(loud.table["status"]) == {"WARN"}
    assert all(r.startswith("baseline differs") for r in loud.table["reasons"])
    # Runs without --baseline use the series' copy, in the new period from zero.
    fresh = run(Config(**{**config.__dict__, "baseline": None}))
    assert fresh.meta["history"]["baseline"]["reason"] == "service visit"
    assert fresh.meta["baseline"]["sha256"] == history_module.sha256_of(new)
    assert fresh.meta["history"]["limits"]["normal_day01.png|occupancy_change"]["n"] == 0
    assert fresh.exit_code == 0
    assert main(["baseline", "show", "S", "--history", db]) == 0
    shown = capsys.readouterr().out
    assert "set by" not in shown and "by bo: service visit" in shown
    assert "by " in shown and "the first run of the series" in shown  # the earlier one


def test_the_html_report_shouts_about_a_different_baseline(tmp_path):
    config, _ = small_series(tmp_path, runs=1)
    History(config.history_path()).set_baseline(
        "S", SAMPLES / "normal_day08.png", reason="lot", by="x"
    )
    result = run(Config(**{**config.__dict__, "formats": ("html",)}))
    page = result.outputs["html"].read_text(encoding="utf-8")
    assert 'class="alarm"' in page and "Baseline differs" in page


def test_latest_pointer_and_retention(tmp_path):
    config, results = small_series(tmp_path, runs=4, keep_runs=2)
    folder = results[-1].out_dir.parent
    kept = sorted(p.name for p in folder.iterdir() if p.name != "latest")
    assert kept == sorted(r.out_dir.name for r in results[-2:])
    assert (folder / "latest").resolve() == results[-1].out_dir.resolve()


def test_a_gap_before_a_run_is_reported(tmp_path):
    config, _ = small_series(tmp_path, runs=1)
    with History(config.history_path()) as store:
        store.db.execute("UPDATE runs SET started = '2026-01-01T00:00:00+00:00'")
    result = run(
        Config(
            **{
                **config.__dict__,
                "history": HistorySettings(path=config.history_path(), missing_after=26),
            }
        )
    )
    assert result.meta["history"]["missing"] and result.meta["history"]["gap_hours"] > 26


# --- robustness: kill, concurrency, schema --------------------------------------------------


def cli_args(config: Config, *extra: str) -> list[str]:
    """The command line of a small_series run."""
    return [
        "run",
        *map(str, config.inputs),
        "--baseline",
        str(config.baseline),
        "--series",
        "S",
        "--history",
        str(config.history_path()),
        "--jobs",
        "1",
        *extra,
    ]


KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from reporter.series import store as history
    from reporter.cli import main

    original = history.History._insert_rows

    def slow(self, db, run_id, rows):
        original(self, db, run_id, rows)
        Path(sys.argv[1]).write_text("inside")  # the run's rows are in, not committed
        time.sleep(120)

    history.History._insert_rows = slow
    sys.exit(main(sys.argv[2:]))
    """
)


def test_a_run_killed_mid_transaction_leaves_the_history_as_it_was(tmp_path):
    config, _ = small_series(tmp_path, runs=2)
    db = config.history_path()
    marker = tmp_path / "inside"
    args = cli_args(config, "--out", str(tmp_path / "killed"), "-q")
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(marker), *args])
    try:
        for _ in range(600):
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the run never reached its transaction"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert raw.execute("SELECT count(DISTINCT run_id) FROM results").fetchone()[0] == 2
    assert not (tmp_path / "killed" / "results.json").exists()
    # The lock died with the process: the next run goes ahead and is recorded.
    assert main(args[:-3] + ["--out", str(tmp_path / "after"), "-q"]) == 0
    with History(db) as store:
        assert len(store.runs("S")) == 3


def test_a_second_run_of_the_series_waits_then_stops_with_status_2(tmp_path, capsys):
    config, _ = small_series(tmp_path, runs=1)
    db = config.history_path()
    args = cli_args(config, "--lock-wait", "0.5", "-q")
    with series_lock(db.parent / "locks", "S", 0):
        t0 = time.monotonic()
        assert main(args) == 2
        assert time.monotonic() - t0 >= 0.5
    assert "another run of series 'S' is still going" in capsys.readouterr().err
    with History(db) as store:
        assert len(store.runs("S")) == 1  # nothing recorded, nothing written


def test_two_overlapping_runs_take_turns(tmp_path):
    config, _ = small_series(tmp_path, runs=1)
    db = config.history_path()
    args = cli_args(config, "-q")
    script = "import sys; from reporter.cli import main; sys.exit(main(sys.argv[1:]))"
    children = [
        subprocess.Popen([sys.executable, "-c", script, *args, "--out", str(tmp_path / f"c{i}")])
        for i in range(2)
    ]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    with History(db) as store:
        assert len(store.runs("S")) == 3
        spans = store.db.execute("SELECT started, finished FROM runs ORDER BY id").fetchall()
    # Taking turns: the later run started (it starts its clock once it holds the lock)
    # no earlier than the one before it finished.
    assert spans[2][0] >= spans[1][1]


def test_an_older_schema_is_migrated_with_its_runs(tmp_path):
    db = tmp_path / "old.sqlite"
    raw = sqlite3.connect(db)
    history_module._v1(raw)
    raw.execute("PRAGMA user_version = 1")
    raw.execute(
        "INSERT INTO runs (series, started, finished, verdict, exit_code, images, failed,"
        " baseline_sha256, baseline_path, out_dir, tool_version) VALUES"
        " ('S', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00', 'PASS', 0, 1, 0,"
        " ?, ?, NULL, '0.0.1')",
        (history_module.sha256_of(SAMPLES / "baseline.png"), str(SAMPLES / "baseline.png")),
    )
    raw.execute(
        "INSERT INTO results VALUES (1, 'normal_day01.png', 'normal_day01.png', 'PASS', '', '')"
    )
    raw.execute(
        "INSERT INTO measurements VALUES (1, 'normal_day01.png', 'occupancy_change', 0.061)"
    )
    raw.commit()
    raw.close()
    with History(db) as store:
        assert store.version() == history_module.SCHEMA_VERSION
        (baseline,) = store.baselines("S")
        assert baseline.reason == "recorded by the upgrade to history schema 2"
        assert [r["value"] for r in store.period("S", baseline)] == [0.061]  # still counted
    config = Config(
        inputs=(SAMPLES / "normal_day01.png",),
        baseline=SAMPLES / "baseline.png",
        series="S",
        jobs=1,
        formats=("json",),
        out=tmp_path / "o",
        history=HistorySettings(path=db),
    )
    result = run(config)
    assert result.meta["history"]["limits"]["normal_day01.png|occupancy_change"]["n"] == 1


def test_a_newer_or_broken_database_is_one_line_and_status_2(tmp_path, capsys):
    newer = tmp_path / "newer.sqlite"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99")
    with pytest.raises(ReporterError, match="schema version 99, newer than this reporter"):
        History(newer)
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database at all" * 100)
    code = main(
        [
            "run",
            str(SAMPLES / "normal_day01.png"),
            "--baseline",
            str(SAMPLES / "baseline.png"),
            "--series",
            "S",
            "--history",
            str(broken),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "history" in err and "Traceback" not in err


def test_a_history_that_is_no_database_or_is_damaged_says_what_to_do(tmp_path, capsys):
    """SQLite's words alone ('file is not a database', 'database disk image is
    malformed') said what was wrong but not what to do about it."""
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database at all" * 100)
    argv = ["run", str(SAMPLES / "normal_day01.png"), "--baseline", str(SAMPLES / "baseline.png"),
            "--series", "S", "-q", "--jobs", "1", "--out", str(tmp_path / "o"),
            "--history"]  # fmt: skip
    assert main([*argv, str(broken)]) == 2
    assert capsys.readouterr().err == (
        f"reporter: error: history {broken} is not an SQLite database (SQLite: file is not a "
        "database): give reporter's history file, or the name of a new one\n"
    )
    damaged = tmp_path / "damaged.sqlite"
    assert main([*argv, str(damaged)]) == 0  # a real history of one run
    data = bytearray(damaged.read_bytes())
    data[4096:] = b"\x0d" + b"\xff" * (len(data) - 4097)  # every page but the schema's
    damaged.write_bytes(data)
    said = (
        f"reporter: error: history {damaged} is damaged (SQLite: database disk image is "
        "malformed): restore it from a backup, or start a new history\n"
    )
    for command in ([*argv, str(damaged)], ["history", "S", "--history", str(damaged)]):
        capsys.readouterr()
        assert main(command) == 2
        assert capsys.readouterr().err == said


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path, capsys):
    """An SQLite file of something else given as the history (a lab's LIMS export, whose
    table named runs met reporter's own) was 'table runs already exists'; one with other
    tables only would have had reporter's tables added to it. Now it is one line, exit
    status 2, and the file is left as it was."""
    other = tmp_path / "lims.sqlite"
    db = sqlite3.connect(other)
    db.executescript("CREATE TABLE samples (id, name); INSERT INTO samples VALUES (1, 'a');")
    db.close()
    before = other.read_bytes()
    out = tmp_path / "o"
    code = main(["run", str(SAMPLES), "--series", "S", "--history", str(other), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"reporter: error: history {other} is an SQLite database of something else (its "
        "tables: samples): give reporter a file of its own\n"
    )
    assert other.read_bytes() == before and not out.exists()
    empty = tmp_path / "empty.sqlite"  # an empty database file is a new history
    sqlite3.connect(empty).close()
    with History(empty) as history:
        assert history.version() == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[history]\nrules = ["1-2s", "3-3s"]\n', "unknown rule '3-3s'"),
        ("[history]\nslot_pattern = '(unclosed'\n", "history.slot_pattern"),
        ('[history]\ndrift_status = "PANIC"\n', "drift_status must be WARN or FAIL"),
        ("[history]\nmin_runs = 1\n", "min_runs must be at least 2"),
        ('[history]\nmetrics = ["nope"]\n', "unknown metric 'nope'"),
        ("[history]\nkeep = 3\n", "unknown key 'keep'"),
        ("[history]\nmin_sd = { ssim = 0 }\n", "history.min_sd.ssim must be positive"),
        ("[history]\nmin_sd = { psnr = -1 }\n", "history.min_sd.psnr must be positive"),
    ],
)
def test_bad_history_settings_are_one_line_and_status_2(tmp_path, capsys, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml, encoding="utf-8")
    code = main(["run", str(SAMPLES), "--series", "S", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()  # stopped before any work


def test_the_mail_shows_since_when_for_a_flagged_slot(tmp_path):
    import shutil
    from email import message_from_bytes, policy

    from test_mail import check_message

    config, _ = small_series(tmp_path, runs=2)
    today = tmp_path / "today"
    today.mkdir()
    for name in ("normal_day01.png", "normal_day02.png"):
        shutil.copy(SAMPLES / name, today / name)
    shutil.copy(SAMPLES / "fault_debris.png", today / "normal_day03.png")  # slot 3 goes bad
    eml = tmp_path / "qc.eml"
    code = main(
        cli_args(
            Config(**{**config.__dict__, "inputs": (today,)}),
            "--eml",
            str(eml),
            "--out",
            str(tmp_path / "o"),
            "-q",
        )
    )
    assert code == 1
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    check_message(msg)
    html = msg.get_body(("html",)).get_content()
    assert "Since when" in html
    assert 'alt="Levey-Jennings chart of normal_day03.png: occupancy_change"' in html
    pngs = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == 2  # the flagged slot's chart metrics: occupancy_change, signal_change
    assert all(p.get_payload(decode=True).startswith(b"\x89PNG") for p in pngs)


def test_texts_in_the_history_are_shown_escaped_and_written_as_text(tmp_path, capsys):
    """A reason or a name in the history came from whoever wrote it. `baseline set
    --reason` took ESC sequences, which `baseline show` and `history` then sent to the
    next person's terminal (ESC [2J clears it), and `history --csv` wrote
    `=HYPERLINK(...)` and `@me` as formulas for a spreadsheet to run."""
    config, _ = small_series(tmp_path, runs=1)
    db = str(config.history_path())
    reason = "swap\x1b[2J\u202eedoc"
    argv = ["baseline", "set", "S", str(SAMPLES / "baseline.png"), "--history", db]
    assert main([*argv, "--reason", reason, "--by", "=me"]) == 0
    assert main(["accept", "S", "1", "--history", db, "--by", "@me",
                 "--reason", '=HYPERLINK("http://x")\x07']) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["baseline", "show", "S", "--history", db]) == 0
    shown = capsys.readouterr().out
    assert "by =me: swap\\x1b[2J\\u202eedoc" in shown
    assert main(["history", "S", "--history", db]) == 0
    listed = capsys.readouterr().out
    assert '(accepted by @me: =HYPERLINK("http://x")\\x07)' in listed
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f\u202a-\u202e]", shown + listed)
    assert main(["history", "S", "--history", db, "--csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["accepted_by"] == "'@me"
    assert row["accepted_reason"] == '\'=HYPERLINK("http://x")\x07'  # the text, as text


NOBODY = 65534  # the unprivileged user of Debian and most Linux systems


def _nobody_home(base: Path) -> Path:
    """A home for the user nobody, with a copy of this process's compiled kernels (the
    cache folder is this user's): the run then loads them rather than compiling (20 s)."""
    import numba

    from reporter import kernels  # noqa: F401 - sets the cache folder

    home = base / "home"
    home.mkdir()
    if Path(numba.config.CACHE_DIR).is_dir():
        shutil.copytree(numba.config.CACHE_DIR, home / "nc")
    for folder in [home, *(p for p in home.rglob("*") if p.is_dir())]:
        folder.chmod(0o777)
    for file in (p for p in home.rglob("*") if p.is_file()):
        file.chmod(0o666)
    return home


def _as_nobody(*argv: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m reporter ARGV`` as the user nobody: through util-linux's setpriv where
    there is one (an interpreter behind a folder of root's, as pyenv's under /root, runs
    through it and not through ``subprocess``'s own ``user``), else through the latter."""
    env = {"PATH": os.defpath, "HOME": str(home), "NUMBA_CACHE_DIR": str(home / "nc")}
    command = [sys.executable, "-m", "reporter", *argv]
    as_nobody: dict = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    setpriv = shutil.which("setpriv")
    if setpriv:
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
        as_nobody = {}
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, cwd=cwd or home, **as_nobody
    )


@pytest.fixture
def nobody():
    """(a folder under /tmp that the user nobody may use, with the sample images in s/;
    nobody's home in it): for a run as another user, which needs root (root may write any
    file, so only a real other user meets a permission)."""
    import tempfile

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root, to run a command as another user")
    base = Path(tempfile.mkdtemp(prefix="reporter-user-", dir="/tmp"))  # not under 0700
    try:
        base.chmod(0o777)
        home = _nobody_home(base)
        try:
            runs = _as_nobody("--version", home=home).returncode == 0
        except OSError:
            runs = False
        if not runs:
            pytest.skip("this interpreter cannot be run as another user")
        shutil.copytree(SAMPLES, base / "s")
        yield base, home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_history_that_another_user_made_says_whose_it_is(nobody):
    """The first run of a series made by hand as root, the cron job as a service user: its
    runs failed on the lock (``hroot/locks/qc.lock: Permission denied``), then, the lock
    made writable, on the database (``attempt to write a readonly database``), and one in
    a folder it cannot search said ``is Permission denied``. Each is one line that says
    whose the file is, who the run is, and what must be writable. (Root may write any
    file, so the run as another user is a real one.)"""
    base, home = nobody
    images = base / "s"
    history = base / "h" / "h.sqlite"
    argv = ["run", str(images), "--series", "qc", "-q", "-j", "1", "--history"]
    assert main([*argv, str(history), "--out", str(base / "o0")]) == 1  # as root
    said = {}
    for case in ("lock", "database", "folder"):
        if case == "database":  # the lock made writable, the database still root's
            (history.parent / "locks").chmod(0o777)
            for lock in (history.parent / "locks").iterdir():
                lock.chmod(0o666)
        where = str(history) if case != "folder" else "/root/qc/h.sqlite"
        done = _as_nobody(*argv, where, "--out", str(home / case), home=home)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        [said[case]] = done.stderr.splitlines()
    end = "must be writable by the user the runs run as"
    assert said["lock"].startswith(
        f"reporter: error: cannot take the series' lock {history.parent}/locks/"
    )
    assert "(Permission denied; " in said["lock"] and said["lock"].endswith(end)
    assert said["database"] == (
        f"reporter: error: history {history} cannot be written (SQLite: attempt to write "
        f"a readonly database; {history} is root's, and this run runs as nobody): the "
        f"history, its folder and locks/ {end}"
    )
    assert said["folder"].startswith(
        "reporter: error: history /root/qc/h.sqlite cannot be reached (Permission denied; "
        "/root is root's, and this run runs as nobody)"
    )
    assert all("is root's, and this run runs as nobody" in line for line in said.values())
    assert not (home / "database" / "results.csv").exists()


def test_old_run_folders_that_cannot_be_removed_are_said_to_stay(nobody, monkeypatch):
    """--keep N as a service user, with older run folders of root's: the log said
    "removed old run folder ..." for each while every one stayed (rmtree's errors were
    ignored). Now a WARNING says it stays, why and whose it is; the run's status is
    its verdict's."""
    base, home = nobody
    images = base / "s"
    reports = base / "reports"
    argv = ["run", str(images), "--series", "qc", "-j", "1", "--no-progress"]
    monkeypatch.chdir(base)  # the run folders go under ./reports/qc
    for _ in range(2):
        assert main([*argv, "-q"]) == 1  # as root: folders of root's, 0755
        time.sleep(1.1)  # run folders are named by the second
    old = sorted(p for p in (reports / "qc").iterdir() if not p.is_symlink())
    for folder in (reports, reports / "qc", reports / "locks"):
        folder.chmod(0o777)
    for file in [reports / "history.sqlite", *(reports / "locks").iterdir()]:
        file.chmod(0o666)
    done = _as_nobody(*argv, "--keep", "1", home=home, cwd=base)
    assert done.returncode == 1, done.stderr
    assert "removed old run folder" not in done.stderr
    for folder in old:
        assert folder.is_dir()
        shown = folder.relative_to(base)
        assert (
            f"WARNING could not remove old run folder {shown} (Permission denied; "
            f"{shown} is root's, and this run runs as nobody): it stays"
        ) in done.stderr


def test_a_damaged_history_is_one_line_and_status_2(tmp_path, capsys):
    config, _ = small_series(tmp_path, runs=1)
    db = config.history_path()
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE measurements")
    code = main(cli_args(config, "--out", str(tmp_path / "o"), "-q"))
    err = capsys.readouterr().err
    assert code == 2 and "no such table: measurements" in err and "Traceback" not in err
    assert main(["history", "S", "--history", str(db)]) == 0  # runs are still listed
    capsys.readouterr()
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE acceptances")
    assert main(["history", "S", "--history", str(db)]) == 2
    err = capsys.readouterr().err
    assert "no such table: acceptances" in err and "Traceback" not in err


def test_a_baseline_that_is_not_a_readable_image_is_refused(tmp_path, capsys):
    """`reporter baseline set S /etc/passwd` exited 0, and every later run failed."""
    db = tmp_path / "h" / "history.sqlite"
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    args = ["baseline", "set", "S", str(text), "--reason", "x", "--history", str(db)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and "nothing was recorded" in err
    assert "Traceback" not in err and not db.exists()
    args[3] = str(SAMPLES / "baseline.png")
    assert main(args) == 0
    with History(db) as store:
        assert store.baseline("S").sha256 == history_module.sha256_of(SAMPLES / "baseline.png")


def test_a_full_history_says_it_is_full(tmp_path, capsys):
    """SQLITE_FULL (here from SQLite's own page limit, as a full disk gives it) rolled the
    transaction back itself; our ROLLBACK then failed with 'cannot rollback - no
    transaction is active', which hid the cause."""
    db = tmp_path / "h.sqlite"
    with History(db) as store:
        base = store.set_baseline("S", SAMPLES / "baseline.png", reason="r", by="x")
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 2}")
        run_row = dict(
            series="S", started="2026-11-23T07:30:00", finished="2026-11-23T07:31:00",
            verdict="PASS", exit_code=0, images=1, failed=0, baseline_sha256=base.sha256,
            baseline_path="b", out_dir="o", tool_version="t", baseline_id=base.id,
        )  # fmt: skip
        rows = [
            dict(slot=f"s{i}", file=f"f{i}" * 50, status="PASS", reasons="r" * 500, error="",
                 metrics={"ssim": 0.9})
            for i in range(500)
        ]  # fmt: skip
        with pytest.raises(sqlite3.OperationalError, match="full"), store.recording(run_row, rows):
            pass
        assert not store.db.in_transaction and store.runs("S") == []


def test_a_drift_and_its_limit_never_print_alike():
    """'drift 1.00 SD (limit 1.00 SD)' read as if the rule fired at its limit."""
    from reporter.series.rules import _differing

    assert _differing(1.0049, 1.0047) == ("1.0049", "1.0047")
    assert _differing(1.001, 1.0) == ("1.001", "1.000")
    assert _differing(1.5, 1.0) == ("1.50", "1.00")


def test_a_run_against_the_recorded_copy_shows_the_baselines_own_name(tmp_path):
    """The series keeps a copy named by its hash; people read the file's own name."""
    from dataclasses import replace

    config, _ = small_series(tmp_path, runs=1)
    again = run(replace(config, baseline=None, formats=("json", "html")))
    assert again.meta["baseline"]["path"].endswith(".png")
    assert "baselines" in again.meta["baseline"]["path"]  # the copy was compared
    assert again.record.baseline.file == "baseline.png"
    assert "<dt>Baseline</dt><dd>baseline.png</dd>" in again.outputs["html"].read_text("utf-8")
    assert "against baseline.png" in again.summary


def test_paths_with_dot_dot_are_shown_normalised(tmp_path):
    import shutil

    days = tmp_path / "w1" / "days"
    days.mkdir(parents=True)
    for name in ("baseline.png", "normal_day01.png"):
        shutil.copy(SAMPLES / name, days / name)
    odd = tmp_path / "w1" / "x" / ".." / "days"
    (tmp_path / "w1" / "x").mkdir()
    result = run(Config(inputs=(odd,), out=tmp_path / "o", jobs=1, formats=("json",)))
    paths = [r["path"] for r in result.meta["rows"]] if "rows" in result.meta else []
    paths += [result.meta["baseline"]["path"], *result.table["path"]]
    assert paths and all(".." not in p for p in paths), paths
