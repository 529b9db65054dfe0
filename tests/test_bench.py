"""The benchmark's measuring code (benchmarks/bench.py): what it times is what its figures
name. The figures themselves are the benchmark's to print, not a test's to assert."""

from __future__ import annotations

import sys
from pathlib import Path

from reporter import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402


def test_timed_run_splits_a_run_at_its_comparison_pass(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    bench.make_images(folder, 3, 64)
    original = pipeline.compare_all
    total, comparison = bench.timed_run(folder, 1, tmp_path / "out")
    assert 0 < comparison < total  # the pass is inside the run, and not all of it
    assert pipeline.compare_all is original  # later runs are not timed twice
    assert list((tmp_path / "out").rglob("results.json"))  # a whole run, every format


def test_alternating_takes_turns_and_drops_the_warm_up(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "IDLE", 2.5)
    monkeypatch.setattr(bench.time, "sleep", lambda s: calls.append(("idle", s)))

    def run(name):
        return lambda i: calls.append((name, i)) or f"{name}{i}"

    got = bench.alternating({"one": run("one"), "many": run("many")}, 2, warm=("many",))
    # The warm-up (round 0: the fork server's start) is run first and not kept; then turns,
    # each timed run after IDLE seconds of idle, as a cron run follows idle.
    idle = ("idle", 2.5)
    assert calls == [
        ("many", 0),
        *(idle, ("one", 1), idle, ("many", 1), idle, ("one", 2), idle, ("many", 2)),
    ]
    assert got == {"one": ["one1", "one2"], "many": ["many1", "many2"]}


def test_the_ceiling_is_the_best_rounds_own_ratio():
    # (alone, together) seconds from three rounds, each round's two seconds apart: the
    # best round's own ratio, not the best of each side from different rounds
    # (2 * 1.6 / 1.7 = 1.88) nor the median round (1.89).
    times = [(1.8, 1.9), (1.6, 1.7), (2.0, 2.0)]
    assert bench.ceiling(times, 2) == 2 * 2.0 / 2.0
    # A round whose "alone" met a busy spell says more than the cores can give.
    assert bench.ceiling([(1.6, 1.7), (2.3, 2.1)], 2) == 2.0


def test_ceiling_times_measures_one_process_and_all_of_them(tmp_path):
    """It runs as the benchmark runs it: a real pool from the workers' fork server."""
    paths = bench.make_images(tmp_path, 3, 64)
    alone, together = bench.ceiling_times(tmp_path / "baseline.png", paths, 2)
    assert alone > 0 and together > 0


def test_best_ms_in_turn_times_each_function_in_turn():
    calls = []
    decode, metrics = (lambda: calls.append("decode")), (lambda: calls.append("metrics"))
    got = bench.best_ms_in_turn([decode, metrics], 3)
    assert calls == ["decode", "metrics"] * 3  # a busy spell falls on both sides alike
    assert len(got) == 2 and min(got) >= 0
