"""time_limit: an image that takes too long in a worker process is an ERROR row, and the
run (or the collection command) goes on with every other image."""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import noisy, write

from reporter.cli import main

LIMIT = 0.15  # s; a small image takes a few ms, the large one 0.6-0.7 s on the 2-core VM


def _folder(folder: Path, count: int = 8) -> Path:
    """A 64 x 64 grey baseline, ``count`` noisy copies, and ``slow.png``: 10,000 x 10,000
    grey pixels in a 120 KB file, which a worker takes 0.6-0.7 s to read and bring to the
    baseline's size (a real decode, as a decoder that hangs would be, only shorter)."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    base = rng.integers(60, 200, (64, 64), dtype=np.uint8)
    write(folder / "baseline.png", base)
    for i in range(count):
        write(folder / f"img{i}.png", noisy(base, 0.02, seed=i))
    cv2.imwrite(
        str(folder / "slow.png"),
        np.full((10_000, 10_000), 120, np.uint8),
        [cv2.IMWRITE_PNG_COMPRESSION, 9],
    )
    return folder


def test_an_image_past_the_time_limit_is_an_error_row_and_the_run_goes_on(tmp_path, caplog):
    from reporter import pipeline
    from reporter.config import Config

    folder = _folder(tmp_path / "run")
    run = pipeline.run(
        Config(inputs=(folder,), out=tmp_path / "o", jobs=2, time_limit=LIMIT, progress=False)
    )
    df = run.table.set_index("file")
    assert df.at["slow.png", "status"] == "ERROR"
    assert df.at["slow.png", "error"].startswith(f"stopped after {LIMIT:g} s (time_limit)")
    others = df.drop(index="slow.png")
    assert len(others) == 8 and (others["status"] != "ERROR").all(), others["error"].tolist()
    assert others["ssim"].notna().all()  # those the ended workers held were compared again
    assert run.record.exit_status == 1
    assert f"slow.png: stopped after {LIMIT:g} s (time_limit)" in caplog.text
    with (tmp_path / "o" / "results.csv").open(encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(df.index) and rows["slow.png"]["status"] == "ERROR"

    # Without a limit the same file is an image like any other: its row has metrics.
    run = pipeline.run(
        Config(inputs=(folder,), out=tmp_path / "o2", jobs=2, time_limit=0, progress=False)
    )
    slow = run.table.set_index("file").loc["slow.png"]
    assert slow["status"] != "ERROR" and np.isfinite(slow["ssim"]), slow["error"]


def test_the_collection_commands_stop_a_file_at_the_time_limit(tmp_path, capsys):
    folder = _folder(tmp_path / "photos", count=5)
    out = tmp_path / "o"
    code = main(["duplicates", str(folder), "--out", str(out), "-j", "2", "--no-cache", "-q",
                 "--time-limit", str(LIMIT)])  # fmt: skip
    with (out / "groups.csv").open(encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert code == 1
    assert rows["slow.png"]["error"].startswith(f"stopped after {LIMIT:g} s (time_limit)")
    assert len(rows) == 7 and [f for f, r in rows.items() if r["error"]] == ["slow.png"]
    assert "Traceback" not in capsys.readouterr().err


WORK = """
import signal
import time


def stubborn(seconds):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a read asleep in the kernel would
    time.sleep(seconds)
"""

HANGS = """
import os
from reporter import compare
from work import stubborn

def stopped(item, why="", limit=None):
    return f"stopped {item} at {limit}" if limit else f"died {item}"

if __name__ == "__main__":
    bar = compare.progress_bar(6, False)
    items = [0, 0.01, 3600, 0, 0.01, 0]
    # as the run's workers, each ends itself if this process dies (worker_started)
    out = compare.in_workers(
        stubborn, compare.worker_started, (os.getpid(),), items, 2, bar, stopped, 0.5
    )
    print("RESULTS", out)
"""


def test_a_worker_that_never_returns_is_ended_at_the_time_limit(tmp_path):
    """A worker busy with an item for an hour, deaf to SIGTERM: at the limit the item gets
    its row, the worker is ended (SIGKILL after SIGTERM), and the pass returns (here
    within the subprocess's two minutes) with every other item's result."""
    (tmp_path / "work.py").write_text(WORK, encoding="utf-8")
    script = tmp_path / "hangs.py"
    script.write_text(HANGS, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "RESULTS [None, None, 'stopped 3600 at 0.5', None, None, None]" in done.stdout
    assert "Traceback" not in done.stderr


def test_time_limit_is_checked(tmp_path, capsys):
    for bad in ("-1", "abc", "86401"):
        assert main(["run", str(tmp_path), f"--time-limit={bad}"]) == 2
        assert "reporter: error: argument --time-limit: " in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text("[run]\ntime_limit = -5\n", encoding="utf-8")
    assert main(["run", str(tmp_path), "--config", str(config)]) == 2
    assert "time_limit" in capsys.readouterr().err


def test_in_the_commands_own_process_an_image_past_the_limit_is_its_error_row(tmp_path):
    """--jobs 1 compares in the command's own process, in a thread of its own: at the
    limit the image is its ERROR row, the run goes on with the others and writes its
    reports (its decode, left to its thread, ends later or never)."""
    folder = _folder(tmp_path / "run", count=2)
    for argv in (
        ["run", str(folder), "--out", str(tmp_path / "o"), "--jobs", "1"],
        ["duplicates", str(folder), "--out", str(tmp_path / "d"), "--jobs", "1", "--no-cache"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "reporter", *argv, "--time-limit", str(LIMIT)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, (argv[0], done.stderr)
        assert f"slow.png: stopped after {LIMIT:g} s (time_limit)" in done.stderr
        assert "Traceback" not in done.stderr
        out = tmp_path / ("o" if argv[0] == "run" else "d")
        table = out / ("results.csv" if argv[0] == "run" else "groups.csv")
        rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines()))
        errors = {r["file"]: r["error"] for r in rows if r.get("error")}
        assert list(errors) == ["slow.png"] and errors["slow.png"].startswith("stopped after")
        assert (out / "report.html").exists()


HANG = """
import os, sys, time
from reporter import cli, images, native

loaded = images.load


def load(path, *args, **kwargs):
    if "hang" in str(path):  # a decoder that never returns, with descriptor 2 caught
        with native.caught():
            os.write(2, b"libfoo: still decoding\\n")
            time.sleep(3600)
    return loaded(path, *args, **kwargs)


images.load = load
sys.argv = ["reporter", *sys.argv[1:]]
sys.exit(cli.entry())
"""


def test_a_decode_that_never_returns_in_the_commands_own_process(tmp_path):
    """A read that never returns, in the command's own process: the image is its ERROR
    row, the images after it are read (the decoder's hold on descriptor 2 and its lock
    are given back), the log goes on to standard error, and the command exits with its
    status at once, leaving the read behind. A baseline that never returns is exit
    status 2 with one line."""
    folder = _folder(tmp_path / "run", count=3)
    (folder / "slow.png").unlink()
    shutil.copy(folder / "img0.png", folder / "hang.png")
    script = tmp_path / "hang.py"
    script.write_text(HANG, encoding="utf-8")
    for command in ("run", "duplicates"):
        out = tmp_path / command
        argv = [command, str(folder), "--out", str(out), "--jobs", "1", "--time-limit", "0.5"]
        done = subprocess.run(
            [sys.executable, str(script), *argv, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (command, done.stderr)
        assert "hang.png: stopped after 0.5 s (time_limit)" in done.stderr
        assert "libfoo" not in done.stderr and "Traceback" not in done.stderr
        if command == "run":
            rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
            status = {r["file"]: r["status"] for r in rows}
            assert status == {"hang.png": "ERROR", "img0.png": "PASS", "img1.png": "PASS",
                              "img2.png": "PASS"}  # fmt: skip
            assert "results in" in done.stderr.splitlines()[-1]  # the log's last line
    shutil.move(folder / "hang.png", folder / "baseline_hang.png")
    done = subprocess.run(
        [sys.executable, str(script), "run", str(folder), "--baseline",
         str(folder / "baseline_hang.png"), "--out", str(tmp_path / "b"), "--time-limit", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "baseline_hang.png: still being read after 0.5 s (time_limit)" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "b").exists()


def test_called_from_python_an_image_in_process_is_never_cut_off(tmp_path):
    """A program that calls pipeline.run (a notebook) is not ended at the limit: the slow
    image compared in its process is a row like any other."""
    from reporter import pipeline
    from reporter.config import Config

    folder = _folder(tmp_path / "run", count=2)
    config = Config(inputs=(folder,), out=tmp_path / "o", jobs=1, time_limit=LIMIT)
    slow = pipeline.run(config).table.set_index("file").loc["slow.png"]
    assert slow["status"] != "ERROR" and np.isfinite(slow["ssim"])


def test_a_closer_look_past_the_limit_costs_only_the_look_and_says_so(
    tmp_path, caplog, monkeypatch
):
    """The closer looks' second pass has the same limit. An image stopped there keeps its
    row and its status: the log says it has no closer look, and says nothing at ERROR
    level (the row is no ERROR). Here only that pass has the limit, so that the slow
    images are compared in full and flagged first (two, so that their looks are made in
    workers: one alone is made in the run's own process, where a limit is never armed
    from Python)."""
    import logging
    import shutil

    from reporter import pipeline
    from reporter.compare import Looks
    from reporter.config import Config

    folder = _folder(tmp_path / "run")
    shutil.copy(folder / "slow.png", folder / "slow2.png")
    original = pipeline.compare_all

    def second_pass_limited(job, items, **kw):
        return original(job, items, **{**kw, "time_limit": LIMIT if job.pictures_only else None})

    monkeypatch.setattr(pipeline, "compare_all", second_pass_limited)
    monkeypatch.setattr(pipeline, "_looks", lambda config: Looks((), 0))  # all in pass two
    monkeypatch.setattr(pipeline, "WORKERS_PAY_MPX", 0)  # the pass's cost is the baseline's
    caplog.set_level(logging.INFO, logger="reporter")
    run = pipeline.run(
        Config(inputs=(folder,), out=tmp_path / "o", jobs=2, time_limit=0, progress=False)
    )
    df = run.table.set_index("file")
    for name in ("slow.png", "slow2.png"):
        assert df.at[name, "status"] == "FAIL" and np.isfinite(df.at[name, "ssim"])
        assert df.at[name, "look"] is None and df.at[name, "thumbnail"] is not None
        assert f"{name}: no closer look: stopped after {LIMIT:g} s (time_limit)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_run_stopped_while_its_own_process_decodes_says_so(tmp_path, signum, status):
    """Stopped (a scheduler's SIGTERM, Ctrl-C) while the command's own process decodes an
    image in its thread, whose decoder has descriptor 2 pointed at a file: the run's last
    log line still reaches standard error, and nothing is written."""
    folder = _folder(tmp_path / "run", count=1)
    (folder / "slow.png").unlink()
    shutil.copy(folder / "img0.png", folder / "hang.png")
    script = tmp_path / "hang.py"
    script.write_text(HANG, encoding="utf-8")
    argv = ["run", str(folder), "--out", str(tmp_path / "o"), "--jobs", "1", "--no-progress"]
    with subprocess.Popen(
        [sys.executable, str(script), *argv], stderr=subprocess.PIPE, text=True
    ) as proc:
        for line in proc.stderr:  # the pass has begun: hang.png is its first image
            if "comparing 2 image(s)" in line:
                break
        time.sleep(0.5)
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == status
    stopped = [line for line in rest.splitlines() if "stopped by" in line]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0], rest
    assert "Traceback" not in rest
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


LOOK_HANGS = """
import sys, time
from reporter import cli, images, pipeline
from reporter.compare import Looks

loaded, calls = images.load, []


def load(path, *args, **kwargs):
    calls.append(str(path))
    if "bad" in str(path) and calls.count(str(path)) > 1:  # its closer look's read
        time.sleep(3600)
    return loaded(path, *args, **kwargs)


images.load = load
pipeline._looks = lambda config: Looks((), 0)  # every closer look in the second pass
sys.argv = ["reporter", *sys.argv[1:]]
sys.exit(cli.entry())
"""


def test_a_closer_look_that_never_returns_in_the_commands_own_process(tmp_path):
    """The closer looks' pass of a single image runs in the command's own process: its
    read hanging there costs only the look; the flagged row keeps its status and the
    reports are written."""
    folder = _folder(tmp_path / "run", count=3)
    (folder / "slow.png").unlink()
    write(folder / "bad.png", np.zeros((64, 64), np.uint8))
    script = tmp_path / "look.py"
    script.write_text(LOOK_HANGS, encoding="utf-8")
    out = tmp_path / "o"
    argv = ["run", str(folder), "--out", str(out), "--jobs", "1", "--time-limit", "0.5"]
    done = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "bad.png: no closer look: stopped after 0.5 s (time_limit)" in done.stderr
    rows = list(csv.DictReader((out / "results.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["file"]: r["status"] for r in rows}["bad.png"] == "FAIL"
    assert (out / "report.html").exists() and "Traceback" not in done.stderr


GIVEN_BACK = """
import os, threading
from reporter import native


def target():
    return os.fstat(2).st_ino


real, seen = target(), []
inside, go_on = threading.Event(), threading.Event()


def left_in_a_decode():
    with native.caught():
        inside.set()
        go_on.wait()


one = threading.Thread(target=left_in_a_decode)
one.start()
inside.wait()
seen.append(target() != real)  # caught: descriptor 2 points at the capture's file
native.abandon(one)
seen.append(target() == real)  # given back at once
with native.caught() as lines:  # the lock is free: this does not wait
    os.write(2, b"mine\\n")
seen.append(lines == ["mine"])
go_on.set()
one.join()
seen.append(target() == real)  # the left decode's late end touches nothing

start = threading.Event()


def left_before_its_decode():
    start.wait()
    with native.caught():
        seen.append(target() == real)  # a thread left behind captures no more


two = threading.Thread(target=left_before_its_decode)
two.start()
native.abandon(two)
start.set()
two.join()
with native.caught() as lines:
    os.write(2, b"next\\n")
seen.append(lines == ["next"])
print(seen)
"""


def test_a_decode_left_behind_gives_back_descriptor_2_and_the_lock(tmp_path):
    """native.abandon, as compare.watched calls it at the limit: a thread inside a capture
    gives descriptor 2 and the lock back at once, and its late end touches neither; a
    thread left behind before it reaches a decode captures nothing."""
    script = tmp_path / "given_back.py"
    script.write_text(GIVEN_BACK, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True, True, True, True, True]", done.stdout
