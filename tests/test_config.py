"""TOML configuration: the example file loads, bad values are one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporter.config import DEFAULT_LIMITS, Config, Limit, load_toml
from reporter.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_example_loads_and_says_what_it_says():
    config = load_toml(EXAMPLE)
    assert config.limits == {**DEFAULT_LIMITS, "ms_ssim": Limit(warn=0.85, fail=None)}
    assert config.outliers.metrics is None and config.history.metrics is None  # "auto"
    assert config.history.rules == ("1-3s", "2-2s", "R-4s", "4-1s", "10x", "EWMA")
    assert "ssim_coarse" not in config.limits or config.limits["ssim_coarse"] == Limit()
    assert config.outliers.min_images == 8
    assert config.formats == ("csv", "json", "html", "xlsx")


def test_limits_merge_with_the_defaults_and_off_removes(tmp_path):
    config = load_toml(toml(tmp_path, '[limits]\nphash = { fail = 20 }\nssim_64 = "off"\n'))
    assert config.limits["phash"] == Limit(warn=DEFAULT_LIMITS["phash"].warn, fail=20)
    assert "ssim_64" not in config.limits
    config = load_toml(toml(tmp_path, '[limits.phash]\nwarn = "off"\n'))
    assert config.limits["phash"].warn is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nsharpness = { warn = 1 }\n", "unknown metric 'sharpness'"),
        ("[limits]\nssim = { warn = 0.8, fail = 0.9 }\n", "fail limit 0.9 must be at or below"),
        ("[limits]\nphash = { warn = 10, fail = 5 }\n", "must be at or above"),
        ("[limits]\nssim = { warn = 'high' }\n", "'high' is not a number"),
        ("[limits]\nssim = { wran = 0.8 }\n", "unknown key 'wran'"),
        ("[limits]\nssim = 'sometimes'\n", "'sometimes' is not a number"),
        ("[run]\nformats = ['csv', 'pdf']\n", "unknown format 'pdf'"),
        ("[run]\njobs = -3\n", "jobs must be 0"),
        ("[run]\njobs = true\n", "expected int"),
        ("[run]\njobs = 100000\n", "is more than"),
        ("[limits]\nssim = { warn = true }\n", "true is not a number"),
        ("[input]\nmax_pixels = 0\n", "max_pixels must be positive"),
        ("[input]\nvalue_range = [1, 0]\n", "value_range must be two finite numbers LO:HI"),
        ("[input]\nvalue_range = [0, inf]\n", "value_range must be two finite numbers"),
        ("[input]\nvalue_range = [0]\n", "is not [LO, HI], two numbers"),
        ("[input]\nvalue_range = ['0', 1]\n", "is not [LO, HI], two numbers"),
        ("[input]\nvalue_range = [true, 1]\n", "is not [LO, HI], two numbers"),
        ("[input]\nvalue_range = '0-1'\n", "'0-1' is not LO:HI"),
        ("[input]\nvalue_range = 'a:b'\n", "'a:b' is not two numbers LO:HI"),
        ("[outliers]\nstatus = 'PANIC'\n", "WARN or FAIL"),
        ("[outliers]\nz = 0\n", "positive number"),
        ("[outliers]\nmin_images = 1\n", "at least 3"),
        ("[outliers]\nmetrics = ['ssim', 'nope']\n", "unknown metric 'nope'"),
        ("[outlier]\n", "unknown key 'outlier'"),
        ("not toml at all", "not valid TOML"),
        ("[limits]\nssim = 0.9\n", 'or "off", got 0.9'),
        ("[limits]\nssim = nan\n", "limits.ssim: expected { warn = ..., fail = ... }"),
        # Values are shown as the file spells them, not as Python holds them
        ("[compare]\nignore = 1979-05-27\n", "compare.ignore: expected list, got 1979-05-27"),
        ("[history]\nkeep_runs = true\n", "history.keep_runs: expected int, got true"),
        ("[run]\nformats = [1, true]\n", "run.formats: expected str, got 1"),
        ("[limits]\nshift = [true, 1979-05-27T07:32:00]\n", "got [true, 1979-05-27T07:32:00]"),
        ("[limits]\nssim = { warn = { x = false } }\n", "{ x = false } is not a number"),
        ("[outliers]\nstatus = 'off'\n", "outliers.status must be WARN or FAIL, not 'off'"),
        ("[run]\njobs = '" + "x" * 5000 + "'\n", "got 'xxxxxxxxxx"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_toml(toml(tmp_path, text))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    assert "datetime" not in str(info.value) and "True" not in str(info.value)
    assert "c.toml" in str(info.value) or "format" in str(info.value)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().jobs = 3  # type: ignore[misc]


def test_the_rules_metrics_are_auto_or_a_list(tmp_path):
    config = load_toml(
        toml(tmp_path, '[outliers]\nmetrics = "auto"\n[history]\nmetrics = ["ssim"]\n')
    )
    assert config.outliers.metrics is None and config.history.metrics == ("ssim",)
    assert config.to_dict()["outliers"]["metrics"] == "auto"
    with pytest.raises(ConfigError, match="expected list"):
        load_toml(toml(tmp_path, '[history]\nchart_metrics = "ssim"\n'))
    with pytest.raises(ConfigError, match="unknown metric 'sharp'"):
        load_toml(toml(tmp_path, '[outliers]\nmetrics = ["sharp"]\n'))


def test_a_utf16_or_binary_config_is_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes("[run]\njobs = 1\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_toml(path)
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a UTF-8 text file|not valid TOML"):
        load_toml(path)


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Windows' Notepad saved UTF-8 with a byte order mark until 2019; tomllib refused it
    as 'Invalid statement (at line 1, column 1)', which names nothing a person can see."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[run]\njobs = 3\n[limits]\nssim = { warn = 0.91 }\n")
    config = load_toml(path)
    assert config.jobs == 3 and config.limits["ssim"].warn == 0.91


def test_every_setting_is_declared_once_and_reaches_the_file_the_flags_and_the_docs():
    """The table in config.py is the one place a setting is declared: each one is read
    from its TOML key, offered under its flag, and documented in config.example.toml
    (TOML keys) and the README (flags)."""
    import re

    from reporter.cli import build_parser
    from reporter.config import SETTINGS

    root = Path(__file__).resolve().parents[1]
    example = (root / "config.example.toml").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert len(SETTINGS) > 40
    for row in SETTINGS:
        assert row.spec.help, row.path
        if row.spec.toml:
            key = row.spec.toml.split(".", 1)[1]
            assert re.search(rf"^#?\s*{re.escape(key)}\s*=", example, re.M), row.spec.toml
        for flag in row.spec.flags:
            assert flag in run_help, flag
            if flag.startswith("--"):
                assert f"`{flag}" in readme, flag


def test_value_range_is_read_as_a_list_or_as_lo_hi(tmp_path):
    """value_range = [LO, HI] in the file, "LO:HI" there or on the command line (a negative
    LO as --value-range=-1:1, since argparse takes -1:1 for an option)."""
    from reporter.cli import build_parser, config_from_args

    assert load_toml(toml(tmp_path, "[input]\nvalue_range = [0, 1]\n")).value_range == (0.0, 1.0)
    as_text = load_toml(toml(tmp_path, "[input]\nvalue_range = '-1:1e3'\n"))
    assert as_text.value_range == (-1.0, 1000.0)
    flag = config_from_args(build_parser().parse_args(["run", "x", "--value-range=-1:1e3"]))
    assert flag.value_range == (-1.0, 1000.0)
    assert as_text.to_dict()["value_range"] == (-1.0, 1000.0)
    assert load_toml(toml(tmp_path, "[input]\n")).value_range is None


def test_a_setting_read_from_the_file_and_from_the_flag_agree(tmp_path):
    """The same setting through both doors gives the same Config."""
    from reporter.cli import build_parser, config_from_args

    toml = tmp_path / "c.toml"
    toml.write_text(
        "[run]\njobs = 2\n[history]\nkeep_runs = 5\nmissing_after = 26\n"
        "[compare]\nalign = true\nignore = [[0, 0, 10, 10]]\n",
        encoding="utf-8",
    )
    from_file = config_from_args(build_parser().parse_args(["run", "x", "--config", str(toml)]))
    from_flags = config_from_args(
        build_parser().parse_args(
            ["run", "x", "-j", "2", "--keep", "5", "--missing-after", "26", "--align"]
            + ["--ignore", "0,0,10,10"]
        )
    )
    assert from_file == from_flags
    assert from_file.jobs == 2 and from_file.history.keep_runs == 5
    assert from_file.comparison.ignore == ((0, 0, 10, 10),)


def test_a_floor_from_the_file_is_the_users_and_mses_default_follows_the_range(tmp_path):
    config = load_toml(toml(tmp_path, "[outliers]\nmin_spread = { ssim = 0.02, mse = 2.0 }\n"))
    floors = config.outliers.min_spread
    assert floors["ssim"] == 0.02 and floors.given == {"ssim", "mse"}
    assert floors.for_range(65535)["mse"] == 2.0  # given: in the user's MSE units
    plain = Config().outliers.min_spread
    assert plain.for_range(65535)["mse"] == (65535 / 255) ** 2
    assert plain.for_range(1.0)["ssim"] == plain["ssim"]  # a similarity has no units
    sd = load_toml(toml(tmp_path, "[history]\nmin_sd = { psnr = 0.1 }\n")).history.min_sd
    assert sd.for_range(4095)["mse"] == 0.5 * (4095 / 255) ** 2 and sd["psnr"] == 0.1
