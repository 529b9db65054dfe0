"""Stop runs at random moments and check what they leave: processes, outputs, the history.

    python benchmarks/kills.py [--trials 30] [--seed 7]

Each trial starts ``reporter run`` with two workers and a series (so a history
is written), waits a random 0.3-4 s, and sends SIGKILL, SIGTERM or SIGHUP to
the main process only, as a scheduler's timeout does. Then it checks that the
caller's pipes close within 30 s, that no process of the run is left after 10
s, that the exit status is the signal's (143, 129; -9 for SIGKILL) or the
run's own when it finished first, that the run folder holds all four outputs
or none, and that the history database passes SQLite's integrity check.
Prints a Markdown table for docs/reliability.md; tests/test_stopping.py runs
one trial of each signal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

OUTPUTS = {"results.csv", "results.json", "report.html", "report.xlsx"}


def _parents() -> dict[int, int]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(root: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((768, 1024, 3)).astype(np.float32), (0, 0), 4)
    base = np.rint((base - base.min()) / (base.max() - base.min()) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "baseline.png"), base)
    for i in range(count):
        noise = rng.normal(0, 5, base.shape)
        cv2.imwrite(str(folder / f"img{i:03d}.png"), np.clip(base + noise, 0, 255).astype(np.uint8))


def trial(folder: Path, work: Path, signum: int, delay: float) -> dict:
    out = work / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(out), "-j", "2",
         "--series", "kills", "--history", str(work / "history.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    family: set[int] = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        family |= descendants(proc.pid)
        time.sleep(0.05)
    finished_first = proc.poll() is not None
    if not finished_first:
        family |= descendants(proc.pid)
        os.kill(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=30)
        closed = True
    except subprocess.TimeoutExpired:
        closed = False
    left_deadline = time.monotonic() + 10
    while time.monotonic() < left_deadline and any(running(p) for p in family):
        time.sleep(0.1)
    left = {p for p in family if running(p)}
    for pid in left | ({proc.pid} if not closed else set()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    found = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    database = work / "history.sqlite"
    intact = True
    if database.exists():
        with sqlite3.connect(database) as db:
            intact = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return {
        "signal": signal.Signals(signum).name,
        "finished first": finished_first,
        "status": proc.returncode,
        "pipes closed": closed,
        "processes left": len(left),
        "outputs": "all" if found == OUTPUTS else "none" if not found else "SOME",
        "history intact": intact,
        "tracebacks": 0 if not closed else err.decode(errors="replace").count("Traceback"),
        "stderr": err.decode(errors="replace") if closed else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    signals = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images(folder, 40)
        for i in range(args.trials):
            work = Path(tmp) / f"t{i}"
            work.mkdir()
            results.append(trial(folder, work, signals[i % 3], rng.uniform(0.3, 4.0)))
    print(f"{args.trials} trials, seed {args.seed}: 40 images of 1024x768, two workers, a series\n")
    print("| signal | trials | stopped mid-run | exit status | pipes closed | processes left "
          "| outputs all / none / some | history intact | tracebacks |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    bad = 0
    for name in ("SIGKILL", "SIGTERM", "SIGHUP"):
        rows = [r for r in results if r["signal"] == name]
        if not rows:
            continue
        stopped = [r for r in rows if not r["finished first"]]
        statuses = Counter(r["status"] for r in rows)
        outputs = Counter(r["outputs"] for r in rows)
        print(
            f"| {name} | {len(rows)} | {len(stopped)} "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))} "
            f"| {sum(r['pipes closed'] for r in rows)} | {sum(r['processes left'] for r in rows)} "
            f"| {outputs['all']} / {outputs['none']} / {outputs['SOME']} "
            f"| {sum(r['history intact'] for r in rows)} | {sum(r['tracebacks'] for r in rows)} |"
        )
        bad += sum(
            (not r["pipes closed"]) + r["processes left"] + (r["outputs"] == "SOME")
            + (not r["history intact"]) + r["tracebacks"]
            for r in rows
        )  # fmt: skip
    for r in results:
        if r["tracebacks"]:
            print(f"\n{r['signal']}, status {r['status']}:\n{r['stderr'][-2500:]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
