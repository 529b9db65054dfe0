"""When do worker processes pay? The whole run at --jobs 1 against all cores, by size.

    python benchmarks/workers.py [--sides 256,512,1024] [--counts 2,4,8,16,32]

For each image side and image count it times ``reporter run`` as a user runs
it (a new process each time; CSV and JSON only, so that the comparison
dominates) with one process and with all cores, best of two, and prints the
ratio. (Timed in-process instead, through ``pipeline.run`` from a script, the
fork server starts after the script's imports rather than beside them. Before the
fork server marked the caller's main module, each worker also re-imported that
script's own imports, pandas included, and workers looked about 0.5 s dearer than
from the command line. The commands run with their modules' bytecode cached, as
an installed copy has it: ``bench.installed_env``.)
Starting workers costs a fixed time (the fork server, the imports, the
baseline's statistics in each worker); each
image then costs half as much on two cores. The break-even, in megapixels of
work (images x pixels per image), is what ``config.Config.effective_jobs``
uses when --jobs is 0 (the default). It is not a test: nothing here fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench import installed_env  # noqa: E402


def images(folder: Path, side: int, count: int) -> None:
    rng = np.random.default_rng(side)
    base = cv2.GaussianBlur(rng.random((side, side, 3)).astype(np.float32), (0, 0), 4)
    base = np.rint((base - base.min()) / (base.max() - base.min()) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "baseline.png"), base)
    for i in range(count):
        noise = rng.normal(0, 4, base.shape)
        cv2.imwrite(str(folder / f"i{i:03d}.png"), np.clip(base + noise, 0, 255).astype(np.uint8))


def timed(folder: Path, out: Path, jobs: int, pycache: Path) -> float:
    command = [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(out), "-q"]
    command += ["--formats", "csv,json", "--jobs", str(jobs)]
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(command, check=False, capture_output=True, env=installed_env(pycache))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="512,1024")
    parser.add_argument("--counts", default="2,4,8,16,32")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"cores {cores}; seconds for the whole run (best of 2); ratio > 1: workers pay\n")
    print("| side | images | Mpx of work | --jobs 1 | --jobs all | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for side in (int(s) for s in args.sides.split(",")):
            for count in (int(c) for c in args.counts.split(",")):
                folder = Path(tmp) / f"s{side}n{count}"
                folder.mkdir()
                images(folder, side, count)
                pycache = Path(tmp) / "pycache"  # the first run compiles the bytecode
                one = timed(folder, Path(tmp) / "o1", 1, pycache)
                many = timed(folder, Path(tmp) / "o2", cores, pycache)
                work = count * side * side / 1e6
                print(
                    f"| {side} | {count} | {work:.1f} | {one:.2f} | {many:.2f} | {one / many:.2f} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
