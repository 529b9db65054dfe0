"""Fixed limits and the batch-relative outlier rule: what fires, on which side, and why."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reporter import flags, table
from reporter.config import Limit, OutlierRule
from reporter.record import exit_status
from reporter.table import ImageResult


def frame(values: dict[str, list[float]], errors: int = 0) -> pd.DataFrame:
    n = len(next(iter(values.values())))
    results = [
        ImageResult(
            file=f"img{i}.png",
            path=f"img{i}.png",
            metrics={k: v[i] for k, v in values.items()},
            width=10,
            height=10,
        )
        for i in range(n)
    ] + [ImageResult(file=f"bad{i}.png", path=f"bad{i}.png", error="broken") for i in range(errors)]
    return table.build(results)


OFF = OutlierRule(enabled=False)


def test_higher_is_better_limits_fail_wins_over_warn():
    df = frame({"ssim_64": [0.99, 0.93, 0.85, 0.94]})
    out = flags.apply(df, {"ssim_64": Limit(warn=0.94, fail=0.90)}, OFF)
    assert list(out[table.STATUS]) == [
        "PASS",
        "WARN",
        "FAIL",
        "PASS",
    ]  # a value on the limit passes
    assert out.loc[1, table.REASONS] == "ssim_64 0.930 < warn limit 0.940"
    assert out.loc[2, table.REASONS] == "ssim_64 0.850 < fail limit 0.900"


def test_lower_is_better_limits():
    df = frame({"phash": [0, 7, 13]})
    out = flags.apply(df, {"phash": Limit(warn=6, fail=12)}, OFF)
    assert list(out[table.STATUS]) == ["PASS", "WARN", "FAIL"]
    assert out.loc[2, table.REASONS] == "phash 13 > fail limit 12"


def test_every_reason_is_listed_the_worst_decides_and_comes_first():
    df = frame({"ssim_64": [0.92], "phash": [20]})
    out = flags.apply(df, {"ssim_64": Limit(0.94, 0.90), "phash": Limit(6, 12)}, OFF)
    assert out.loc[0, table.STATUS] == "FAIL"
    # Limits are checked in the order they are configured; the FAIL-level reason comes first.
    assert out.loc[0, table.REASONS] == "phash 20 > fail limit 12; ssim_64 0.920 < warn limit 0.940"
    assert out.loc[0, table.FLAGS] == (
        ("FAIL", "phash 20 > fail limit 12"),
        ("WARN", "ssim_64 0.920 < warn limit 0.940"),
    )


def test_reasons_rank_fail_then_warn_then_notes_and_keep_their_order_within_a_level():
    found = [
        flags.Flag("a", flags.Rule.OUTLIER, table.Status.WARN, "w1"),
        flags.Flag("b", flags.Rule.SERIES, table.Status.PASS, "note"),
        flags.Flag("c", flags.Rule.FAIL_LIMIT, table.Status.FAIL, "f1"),
        flags.Flag("d", flags.Rule.WARN_LIMIT, table.Status.WARN, "w2"),
        flags.Flag("e", flags.Rule.CONTROL, table.Status.FAIL, "f2"),
    ]
    assert [f.text for f in flags.ranked(found)] == ["f1", "f2", "w1", "w2", "note"]
    df = frame({"ssim": [0.5]})
    out = flags.apply(df, {}, OFF, extra={0: found})
    assert out.loc[0, table.REASONS] == "f1; f2; w1; w2; note"


def test_the_summary_shows_the_most_severe_and_counts_the_rest_by_level():
    from reporter.outputs import first_reasons

    found = (("FAIL", "f1"), ("FAIL", "f2"), ("WARN", "w1"), ("WARN", "w2"), ("PASS", "n"))
    assert first_reasons(found) == "f1; f2; w1 (+2 more: 1 WARN, 1 note)"
    assert first_reasons(found[:3]) == "f1; f2; w1"
    many = (("FAIL", "f"),) * 5
    assert first_reasons(many) == "f; f; f (+2 more: 2 FAIL)"  # never hides a FAIL silently


def test_a_signed_metric_fires_on_both_sides_of_its_limits():
    df = frame({"signal_change": [0.0, 0.07, -0.07, 0.2, -0.3, 0.06]})
    out = flags.apply(df, {"signal_change": Limit(warn=0.06, fail=0.10)}, OFF)
    assert list(out[table.STATUS]) == ["PASS", "WARN", "WARN", "FAIL", "FAIL", "PASS"]
    assert out.loc[2, table.REASONS] == "signal_change -0.070 beyond warn limit \u00b10.060"
    assert out.loc[3, table.REASONS] == "signal_change +0.200 beyond fail limit \u00b10.100"


def test_the_outlier_rule_reads_a_skewed_distance_on_its_cube_root():
    """Healthy distances bunch near 0 with a long tail (a gamma shape): on its own scale
    the median/MAD rule calls the tail an outlier; on the cube root it does not, and a
    real outlier still stands out."""
    rng = np.random.default_rng(11)
    healthy = list(rng.gamma(1.0, 0.05, size=200))  # exponential: the quadratic-wobble shape
    assert max(healthy) > 4 * np.median(healthy)  # the tail is there
    rule = OutlierRule(metrics=("occupancy_change",), min_spread={"occupancy_change": 0.0})
    out = flags.apply(frame({"occupancy_change": healthy + [1.5]}), {}, rule)
    flagged = list(np.flatnonzero(out[table.STATUS] != "PASS"))
    assert flagged == [200]
    # On the raw scale (the old rule), the same healthy tail would fire.
    x = np.array(healthy)
    z = (x - np.median(x)) / (1.4826 * np.median(np.abs(x - np.median(x))))
    assert (z > rule.z).sum() >= 5


def test_error_rows_stay_error_and_inf_psnr_never_fires():
    df = frame({"psnr": [np.inf, 30.0]}, errors=1)
    out = flags.apply(df, {"psnr": Limit(warn=35, fail=25)}, OFF)
    assert list(out[table.STATUS]) == ["PASS", "WARN", "ERROR"]
    assert out.loc[2, table.REASONS] == ""


def test_outlier_rule_fires_on_the_bad_side_only():
    rule = OutlierRule(metrics=("ssim",), min_images=8)
    values = [0.870, 0.872, 0.868, 0.874, 0.871, 0.869, 0.873, 0.70, 0.99]
    out = flags.apply(frame({"ssim": values}), {}, rule)
    assert list(out[table.STATUS]) == ["PASS"] * 7 + ["WARN", "PASS"]  # 0.99: better, not a finding
    assert out.loc[7, table.REASONS].startswith(
        "ssim 0.700 outlier of this run (median 0.871, robust z"
    )


def test_outlier_rule_needs_enough_images_and_respects_the_spread_floor():
    rule = OutlierRule(metrics=("ssim",), min_images=8)
    few = [0.87, 0.87, 0.87, 0.5]
    assert (flags.apply(frame({"ssim": few}), {}, rule)[table.STATUS] == "PASS").all()
    # all identical but one a hair lower: MAD is 0, the floor (0.01) keeps it quiet
    same = [1.0] * 9 + [0.995]
    assert (flags.apply(frame({"ssim": same}), {}, rule)[table.STATUS] == "PASS").all()
    same[-1] = 0.95
    assert flags.apply(frame({"ssim": same}), {}, rule)[table.STATUS].iloc[-1] == "WARN"


def test_outlier_status_can_be_fail():
    rule = OutlierRule(metrics=("phash",), min_images=5, status="FAIL")
    out = flags.apply(frame({"phash": [1, 0, 2, 1, 1, 30]}), {}, rule)
    assert out[table.STATUS].iloc[-1] == "FAIL"


def test_exit_code():
    def exit_code(flagged: pd.DataFrame) -> int:
        return exit_status(table.counts(flagged))

    assert exit_code(flags.apply(frame({"ssim": [0.5]}), {"ssim": Limit(warn=0.9)}, OFF)) == 0
    assert exit_code(flags.apply(frame({"ssim": [0.5]}), {"ssim": Limit(fail=0.9)}, OFF)) == 1
    assert exit_code(flags.apply(frame({"ssim": [0.95]}, errors=1), {}, OFF)) == 1
    counts = {"PASS": 3}
    assert exit_status(counts, off_series=True) == 1 and exit_status(counts, not_sent=True) == 3


def test_an_outlier_on_a_metric_past_its_limit_is_not_repeated():
    rule = OutlierRule(metrics=("ssim_64", "ssim"), min_images=8)
    values = {"ssim_64": [0.96] * 8 + [0.80], "ssim": [0.87] * 8 + [0.70]}
    out = flags.apply(frame(values), {"ssim_64": Limit(warn=0.94, fail=0.90)}, rule)
    reasons = out.loc[8, table.REASONS].split(table.SEPARATOR)
    assert reasons[0] == "ssim_64 0.800 < fail limit 0.900"
    assert [r.split()[0] for r in reasons] == ["ssim_64", "ssim"]  # no second ssim_64 entry
    assert "outlier" in reasons[1]


def test_the_run_verdict_is_the_worst_status_present():
    assert table.verdict({"PASS": 3, "WARN": 0, "FAIL": 0, "ERROR": 0}) == "PASS"
    assert table.verdict({"PASS": 3, "WARN": 2, "FAIL": 0, "ERROR": 0}) == "WARN"
    assert table.verdict({"PASS": 0, "WARN": 2, "FAIL": 1, "ERROR": 1}) == "ERROR"
    assert table.flagged({"PASS": 3, "WARN": 2, "FAIL": 1, "ERROR": 1}) == 4


def test_the_rules_median_is_numpys_to_the_last_bit():
    """catalog._median (the outlier rule's and the closer looks' median, without
    np.median's generic machinery) gives np.median's value exactly: odd and even counts,
    ties, signs, and values whose two middles do not sum exactly."""
    from reporter.catalog import _median

    rng = np.random.default_rng(5)
    cases = [rng.normal(size=n) for n in range(1, 60)]
    cases += [rng.integers(0, 4, size=n).astype(np.float64) for n in (2, 7, 40, 200)]
    cases += [np.array([0.1, 0.2]), np.array([-3.0, 5e-324])]
    for values in cases:
        before = values.copy()
        got = _median(values)
        assert got == float(np.median(values))
        assert np.array_equal(values, before)  # the caller's array is left as it was
    assert np.isnan(_median(np.array([])))
