"""Benchmark: how large the reports of a big run are, and what they cost to write and open.

Run:  python benchmarks/reports.py [--images 1000] [--flagged 0.05] [--size 512]

It generates a run of photo-like colour PNGs (``bench.scene``: smooth scenes,
shapes, sensor noise): 100 distinct pictures linked under --images names, of
which about --flagged have a large change (a FAIL), compares them with every
report, and prints:

* the sizes of report.html and report.xlsx (targets: 6 MB or less each for
  1,000 images with 5 % flagged);
* the time to write the workbook and the page again from the run's table, per
  image (best of three);
* where Chromium is installed, how long it takes to load and lay out the page
  and paint a screenshot of its first screen, less the same for an empty page
  (target: under 3 s for 1,000 images), and the same with every PASS row shown.

It is not a test: nothing here fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import scene  # noqa: E402


def make_run(folder: Path, count: int, flagged: float, size: int) -> None:
    rng = np.random.default_rng(7)
    base = scene(rng, size)
    cv2.imwrite(str(folder / "baseline.png"), base)
    distinct = []
    for i in range(min(100, count)):
        img = base.astype(np.float32) + rng.normal(0, 3, base.shape).astype(np.float32)
        path = folder / f"day{i:05d}.png"
        cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
        distinct.append(path)
    faults = []
    for i in range(10):
        img = base.copy()
        x, y = (int(v) for v in rng.integers(size // 8, size - size // 8, 2))
        cv2.circle(img, (x, y), size // 6, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        path = folder / f"fault{i:05d}.png"
        cv2.imwrite(str(path), img)
        faults.append(path)
    bad = set(np.linspace(0, count - 1, max(1, round(count * flagged))).round().astype(int))
    for i in range(len(distinct), count):
        source = faults[i % len(faults)] if i in bad else distinct[i % len(distinct)]
        os.link(source, folder / f"{'fault' if i in bad else 'day'}{i:05d}.png")
    for path in faults:  # the ten sources count only where they were linked
        path.unlink()


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def chromium_seconds(page: Path, tmp: Path, *, passes_open: bool = False) -> float | None:
    """Load, lay out and paint the page's first screen (the screenshot waits for all three)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    if passes_open:  # the same page with its PASS group open, as a user who clicks it sees it
        text = page.read_text(encoding="utf-8").replace(
            'id="passes" data-status="PASS"', 'id="passes" data-status="PASS" open'
        )
        page = tmp / "open.html"
        page.write_text(text, encoding="utf-8")
    shot = tmp / "shot.png"

    def load(target: Path) -> None:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp / 'chromium'}",
                "--window-size=1300,1000",
                f"--screenshot={shot}",
                target.as_uri(),
            ],
            capture_output=True,
            check=True,
        )

    empty = tmp / "empty.html"
    empty.write_text("<!DOCTYPE html><title>x</title><p>x</p>", encoding="utf-8")
    load(empty)  # a first start warms the profile
    return best(lambda: load(page)) - best(lambda: load(empty))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--flagged", type=float, default=0.05)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    from reporter import pipeline
    from reporter.config import Config
    from reporter.render.excel import write_xlsx
    from reporter.render.html import write_html
    from reporter.table import STATUS

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "images"
        folder.mkdir()
        make_run(folder, args.images, args.flagged, args.size)
        out = tmp / "out"
        t = time.perf_counter()
        result = pipeline.run(Config(inputs=(folder,), out=out, progress=False))
        run_s = time.perf_counter() - t
        frame, record = result.table, result.record
        n = len(frame)
        flagged = int((frame[STATUS] != "PASS").sum())
        xlsx_s = best(lambda: write_xlsx(frame, record, None, tmp / "again.xlsx"))
        html_s = best(lambda: write_html(frame, record, None, tmp / "again.html"))
        layout = chromium_seconds(out / "report.html", tmp)
        layout_open = chromium_seconds(out / "report.html", tmp, passes_open=True)
        print(f"images                      {n} ({flagged} flagged, {args.size} px)")
        print(f"whole run                   {run_s:.1f} s ({1000 * run_s / n:.1f} ms per image)")
        print(f"report.html                 {(out / 'report.html').stat().st_size / 1e6:.2f} MB")
        print(f"report.xlsx                 {(out / 'report.xlsx').stat().st_size / 1e6:.2f} MB")
        print(f"write report.xlsx           {1000 * xlsx_s / n:.2f} ms per image ({xlsx_s:.2f} s)")
        print(f"write report.html           {1000 * html_s / n:.2f} ms per image ({html_s:.2f} s)")
        if layout is not None:
            print(f"Chromium load + layout      {layout:.2f} s (first screen painted)")
            print(f"  with every PASS row shown {layout_open:.2f} s")
        else:
            print("Chromium                    not installed: no layout time")


if __name__ == "__main__":
    main()
