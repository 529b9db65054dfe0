"""Ignore regions, measured shifts and --align: what instruments really do between runs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth_image, write

from reporter import pipeline
from reporter.cli import main
from reporter.config import Comparison, Config


def screenshot(stamp: str, change: bool = False) -> np.ndarray:
    """An instrument screenshot: a picture, a timestamp in the top-right corner."""
    img = smooth_image(5, (240, 320, 3))
    cv2.rectangle(img, (200, 0), (319, 24), (255, 255, 255), -1)
    cv2.putText(img, stamp, (204, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if change:  # a real change in the middle of the picture
        cv2.circle(img, (120, 140), 30, (0, 0, 255), -1)
    return img


@pytest.fixture
def screens(tmp_path):
    folder = tmp_path / "screens"
    folder.mkdir()
    write(folder / "baseline.png", screenshot("2026-11-21 07:30"))
    write(folder / "new_stamp.png", screenshot("2026-11-22 07:31"))
    write(folder / "real_change.png", screenshot("2026-11-22 07:31", change=True))
    return folder


CORNER = "200,0,120,25"


def statuses(result) -> dict[str, str]:
    return dict(zip(result.table["file"], result.table["status"].astype(str), strict=True))


def test_a_new_timestamp_in_a_masked_corner_passes_and_a_real_change_still_fails(
    screens, tmp_path, capsys
):
    # A screenshot is expected to repeat exactly: a PSNR limit of 40 dB (identical is inf).
    common = ["run", str(screens), "--fail", "psnr=40", "--no-outliers", "--formats", "json"]
    assert main([*common, "--out", str(tmp_path / "a"), "-q"]) == 1
    import json

    unmasked = json.loads((tmp_path / "a" / "results.json").read_text(encoding="utf-8"))
    by_file = {r["file"]: r for r in unmasked["rows"]}
    assert by_file["new_stamp.png"]["status"] == "FAIL"  # the clock alone would cry wolf
    assert main([*common, "--ignore", CORNER, "--out", str(tmp_path / "b"), "-q"]) == 1
    masked = json.loads((tmp_path / "b" / "results.json").read_text(encoding="utf-8"))
    by_file = {r["file"]: r for r in masked["rows"]}
    assert by_file["new_stamp.png"]["status"] == "PASS"
    assert by_file["new_stamp.png"]["ssim"] == 1.0 and by_file["new_stamp.png"]["psnr"] == "inf"
    assert by_file["real_change.png"]["status"] == "FAIL"
    assert masked["config"]["comparison"]["ignore"] == [[200, 0, 120, 25]]


def test_the_diff_map_is_dark_where_nothing_is_compared(screens, tmp_path):
    def diff_map(comparison):
        config = Config(
            inputs=(screens,),
            out=tmp_path / str(id(comparison)),
            jobs=1,
            formats=("html",),
            comparison=comparison,
        )
        jpeg = pipeline.run(config).table.set_index("file").loc["new_stamp.png", "diff_map"]
        return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)

    assert diff_map(Comparison()).max() > 40  # the new timestamp lights up
    assert diff_map(Comparison(ignore=((200, 0, 120, 25),))).max() < 20  # masked: dark


def test_a_mask_file_works_like_the_rectangles(screens, tmp_path):
    mask = np.full((240, 320), 255, np.uint8)
    mask[0:25, 200:320] = 0
    write(tmp_path / "mask.png", mask)
    config = Config(
        inputs=(screens,),
        out=tmp_path / "o",
        jobs=1,
        formats=("json", "html"),
        comparison=Comparison(mask=tmp_path / "mask.png"),
    )
    result = pipeline.run(config)
    by_rect = pipeline.run(
        Config(
            **{
                **config.__dict__,
                "out": tmp_path / "r",
                "comparison": Comparison(ignore=((200, 0, 120, 25),)),
            }
        )
    )
    assert result.table["ssim"].tolist() == by_rect.table["ssim"].tolist()
    # The baseline's thumbnail shows the ignored corner (hatched in cyan).
    page = result.outputs["html"].read_text(encoding="utf-8")
    src = re.search(r'<img id="baseline-picture" src="data:image/jpeg;base64,([^"]+)"', page)
    src = src.group(1)
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(src), np.uint8), cv2.IMREAD_COLOR)
    cyan = np.all(np.abs(thumb.astype(int) - (255, 255, 0)) < 60, axis=2)
    h, w = cyan.shape
    assert cyan[: h // 8, int(w * 0.6) :].sum() > 20 and cyan[h // 4 :, :].sum() == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write(p, np.zeros((100, 100), np.uint8)), "is 100x100, the baseline 320x240"),
        (lambda p: p.write_bytes(b"not an image"), "not a readable image"),
        (lambda p: write(p, np.zeros((240, 320), np.uint8)), "nothing left to compare"),
    ],
)
def test_a_bad_mask_is_one_line_and_status_2(screens, tmp_path, capsys, make, message):
    mask = tmp_path / "mask.png"
    make(mask)
    code = main(["run", str(screens), "--mask", str(mask), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_bad_ignore_regions_are_usage_errors(screens, capsys):
    assert main(["run", str(screens), "--ignore", "1,2,3"]) == 2
    assert "is not X,Y,W,H" in capsys.readouterr().err
    assert main(["run", str(screens), "--ignore", "400,0,10,10", "--out", "o"]) == 2
    assert "lies outside the 320x240 baseline" in capsys.readouterr().err


def test_the_robustness_table_in_docs_is_what_the_script_writes(tmp_path):
    """docs/robustness.md is generated: rerunning the script gives the same file."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "robustness.md"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "robustness.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == (root / "docs" / "robustness.md").read_text(
        encoding="utf-8"
    )
    assert out.read_text(encoding="utf-8").count("| translation ") == 21  # 7 shifts x 3 tables


def test_compare_settings_from_the_config_and_per_series(tmp_path, capsys):
    from reporter.cli import build_parser, config_from_args
    from reporter.config import load_toml
    from reporter.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(
        "[compare]\nignore = [[0, 0, 10, 10]]\n"
        '[series."Canto"]\nignore = [[5, 5, 20, 20]]\nalign = true\n',
        encoding="utf-8",
    )
    plain = load_toml(path)
    assert plain.comparison.ignore == ((0, 0, 10, 10),) and not plain.comparison.align
    canto = load_toml(path, series="Canto")
    assert canto.comparison.ignore == ((5, 5, 20, 20),) and canto.comparison.align
    args = build_parser().parse_args(
        [
            "run",
            "x",
            "--config",
            str(path),
            "--series",
            "Canto",
            "--ignore",
            "1,2,3,4",
        ]
    )
    config = config_from_args(args)
    assert config.comparison.ignore == ((5, 5, 20, 20), (1, 2, 3, 4))
    assert config.comparison.align
    for bad, message in (
        ("[compare]\nignore = [[1, 2, 3]]\n", "is not [x, y, w, h]"),
        ("[compare]\nmax_shift = 3\n", "max_shift is gone: the shift is a metric now"),
        ('[compare]\nshift_status = "FAIL"\n', "[limits] shift = { warn = 3 }"),
        ('[compare]\nmask = "nope.png"\n', "mask file not found"),
        ('[series."X"]\nalign = "yes"\n', "expected bool"),
    ):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_toml(path)
