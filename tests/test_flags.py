"""Fixed limits and the batch-relative outlier rule: what fires, on which side, and why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reporter import flags, table
from reporter.config import Limit, OutlierRule
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


def test_every_reason_is_listed_and_the_worst_decides():
    df = frame({"ssim_64": [0.92], "phash": [20]})
    out = flags.apply(df, {"ssim_64": Limit(0.94, 0.90), "phash": Limit(6, 12)}, OFF)
    assert out.loc[0, table.STATUS] == "FAIL"
    assert out.loc[0, table.REASONS] == "ssim_64 0.920 < warn limit 0.940; phash 20 > fail limit 12"


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
    same[-1] = 0.9
    assert flags.apply(frame({"ssim": same}), {}, rule)[table.STATUS].iloc[-1] == "WARN"


def test_outlier_status_can_be_fail():
    rule = OutlierRule(metrics=("phash",), min_images=5, status="FAIL")
    out = flags.apply(frame({"phash": [1, 0, 2, 1, 1, 30]}), {}, rule)
    assert out[table.STATUS].iloc[-1] == "FAIL"


def test_exit_code():
    assert flags.exit_code(flags.apply(frame({"ssim": [0.5]}), {"ssim": Limit(warn=0.9)}, OFF)) == 0
    assert flags.exit_code(flags.apply(frame({"ssim": [0.5]}), {"ssim": Limit(fail=0.9)}, OFF)) == 1
    assert flags.exit_code(flags.apply(frame({"ssim": [0.95]}, errors=1), {}, OFF)) == 1


@pytest.mark.parametrize("status", list(table.Status))
def test_every_status_and_rule_is_documented(status):
    assert status.__doc__ is not None
    for rule in flags.Rule:
        assert rule.value


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
