"""report.html: self-contained, escaped, complete, failures first; rendered by a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SAMPLES, noisy, smooth_image, write

from reporter import pipeline
from reporter.config import DEFAULT_LIMITS, Config, Limit

EVIL = "<img src=x onerror=alert(1)>.png"


class Page(HTMLParser):
    """The tags and attributes of a page, as a browser would parse them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


@pytest.fixture
def report(run_dir: Path, tmp_path: Path, baseline_img) -> Path:
    write(run_dir / "other.png", smooth_image(99))
    write(run_dir / "tmp.png", noisy(baseline_img, 0.02))
    (run_dir / "tmp.png").rename(run_dir / EVIL)
    (run_dir / "broken.png").write_bytes(b"junk")
    (run_dir / "notes.txt").write_text("x", encoding="utf-8")
    result = pipeline.run(
        Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, series="Canto <II> FSC/SSC")
    )
    return result.outputs["html"]


def test_the_page_is_self_contained(report: Path):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    images = page.all("img")
    assert (
        len(images) == 1 + 2 * 4
    )  # the baseline, and a thumbnail and a diff map per compared image
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in images)
    assert not page.all("link") and not page.all("iframe")
    assert all("src" not in attrs for attrs in page.all("script"))
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert not re.search(r"url\(", text)


def test_outside_text_is_escaped(report: Path):
    text = report.read_text(encoding="utf-8")
    assert EVIL not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in text
    assert not [img for img in Page(text).all("img") if "onerror" in img]


def test_errors_and_skipped_files_are_listed_and_failures_come_first(report: Path):
    text = report.read_text(encoding="utf-8")
    statuses = [attrs["data-status"] for attrs in Page(text).all("tr") if "data-status" in attrs]
    rank = {"ERROR": 0, "FAIL": 1, "WARN": 2, "PASS": 3}
    assert statuses == sorted(statuses, key=rank.get)
    assert statuses[0] == "ERROR" and "FAIL" in statuses and "PASS" in statuses
    assert "not a readable image: unknown format or corrupt header" in text
    assert "notes.txt" in text and "not an image file extension" in text
    assert "∞" in text  # PSNR of the identical copy
    assert "ssim_64" in text and "Wang" in text  # limits and definitions are on the page
    assert "<strong>Canto &lt;II&gt; FSC/SSC</strong>" in text  # the series, escaped, in the banner


def test_thumbnails_fit_200_px_and_keep_their_aspect(tmp_path, baseline_img):
    folder = tmp_path / "r"
    folder.mkdir()
    wide = cv2.resize(baseline_img, (640, 240))
    write(folder / "baseline.png", wide)
    write(folder / "same.png", wide)
    result = pipeline.run(Config(inputs=(folder,), out=tmp_path / "o", jobs=1))
    images = Page(result.outputs["html"].read_text(encoding="utf-8")).all("img")
    for img in images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.shape[:2] == (75, 200)


def test_a_users_template_folder_overrides_one_template(run_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html.j2").write_text(
        "<p>{{ report.verdict }} {{ report.rows|length }}</p>", "utf-8"
    )
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, templates=mine))
    assert result.outputs["html"].read_text(encoding="utf-8") == "<p>PASS 2</p>"
    assert "reporter" in result.summary  # the other templates are still the shipped ones


def test_no_html_no_pictures(run_dir, tmp_path):
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", jobs=1, formats=("csv",)))
    assert result.table["thumbnail"].isna().all()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["results.csv"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")
def test_chromium_renders_the_rows(tmp_path):
    result = pipeline.run(Config(inputs=(SAMPLES,), out=tmp_path / "o", jobs=1))
    page = result.outputs["html"]
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r'<tr class="row" data-status="(\w+)"', dom.stdout)
    assert len(rows) == 12 and rows[:4] == ["FAIL"] * 4
    assert 'id="controls" hidden' not in dom.stdout  # the inline script ran
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1400,1200", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = cv2.imread(str(shot))
    # The FAIL badges (#c62828) and the thumbnails are drawn, not just present in the DOM.
    red = np.all(np.abs(pixels.astype(int) - (0x28, 0x28, 0xC6)) < 12, axis=2)
    assert red[300:, :150].sum() > 200  # badges in the status column, below the banner
    assert pixels[300:, 350:800].std() > 30  # pictures, not an empty table


def test_a_thousand_rows_stay_under_15_mb_of_html_and_50_mb_of_xlsx(tmp_path):
    """The size per row, measured from runs of 10 and 20 photo-like images (the worst case for
    JPEG thumbnails), extrapolated to 1,000; benchmarks/bench.py measures a real 1,000."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench

    sizes, books = {}, {}
    for count in (10, 20):
        folder = tmp_path / f"r{count}"
        folder.mkdir()
        bench.make_images(folder, count, 512)
        result = pipeline.run(Config(inputs=(folder,), out=tmp_path / f"o{count}", jobs=1))
        sizes[count] = result.outputs["html"].stat().st_size
        books[count] = result.outputs["xlsx"].stat().st_size
    per_row = (sizes[20] - sizes[10]) / 10
    assert per_row > 5_000  # the pictures are really there
    assert sizes[10] + 990 * per_row < 15e6
    per_row = (books[20] - books[10]) / 10
    assert per_row > 5_000
    assert books[10] + 990 * per_row < 50e6


def test_fail_level_reasons_come_first_and_are_marked(run_dir, tmp_path):
    """other.png fires WARN limits configured before FAIL ones: the FAILs still lead,
    each marked FAIL; the WARN-level ones follow unmarked."""
    write(run_dir / "other.png", smooth_image(99))
    config = Config(
        inputs=(run_dir,),
        out=tmp_path / "o",
        jobs=1,
        formats=("html",),
        limits={
            "ssim": Limit(warn=0.99999),
            "psnr": Limit(warn=99),
            **DEFAULT_LIMITS,
        },
    )
    result = pipeline.run(config)
    text = result.outputs["html"].read_text(encoding="utf-8")
    row = text[text.index('<div class="file">other.png</div>') :]
    items = re.findall(r'<li class="(\w+)">(.*?)</li>', row[: row.index("</ul>")])
    classes = [c for c, _ in items]
    assert classes[0] == "fail" and classes == sorted(classes, key=["fail", "warn"].index)
    assert "warn" in classes
    for cls, item in items:
        assert item.startswith('<span class="level">FAIL</span>') == (cls == "fail")
    assert re.sub("<[^>]+>", "", items[0][1]).startswith("FAIL")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "is unsafe"),  # the sandbox
        (b"<p>\xff\xfe broken</p>", "cannot read it: not UTF-8 text"),
        (None, "cannot read it: Permission denied"),  # read failures are not write failures
    ],
)
def test_a_users_templates_are_sandboxed_and_unreadable_ones_say_so(
    run_dir, tmp_path, capsys, monkeypatch, content, message
):
    from reporter.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    target = mine / "report.html.j2"
    if content is None:  # root reads every file: the loader's open is made to refuse
        import jinja2.loaders

        target.write_text("<p>{{ report.verdict }}</p>", encoding="utf-8")

        def refuse(filename, *args, **kwargs):
            if str(filename).startswith(str(mine)):
                raise PermissionError(13, "Permission denied", filename)
            return open(filename, *args, **kwargs)

        monkeypatch.setattr(jinja2.loaders, "open", refuse, raising=False)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    code = main(["run", str(run_dir), "--out", str(tmp_path / "o"), "--templates", str(mine)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert "cannot write" not in err
    assert not (tmp_path / "o" / "report.html").exists()


def test_the_sandbox_still_renders_every_shipped_template(tmp_path):
    """With a user folder (even an empty one), the shipped templates render sandboxed."""
    mine = tmp_path / "mine"
    mine.mkdir()
    folder = tmp_path / "in"
    shutil.copytree(SAMPLES, folder)
    result = pipeline.run(
        Config(inputs=(folder,), out=tmp_path / "o", jobs=1, templates=mine, series="S <b>")
    )
    assert "QC FAIL" in result.outputs["html"].read_text(encoding="utf-8")
    assert result.summary.startswith("reporter ")


def test_the_footnote_sentences_are_separated(report: Path):
    """The baseline's signal sentence and the outlier rule are two sentences, not one glued."""
    import re

    text = re.sub(r"<[^>]+>", " ", report.read_text(encoding="utf-8"))
    assert re.search(r"carry signal \(differ from .*?\)\. +Outlier rule:", text)
