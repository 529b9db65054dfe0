"""The cores and memory a run may use: a container's or a cgroup's limits, not the host's.

The folder layouts below are those of the kernel's cgroup files (v2's ``cpu.max`` and
``memory.max``, v1's ``cpu.cfs_quota_us`` and ``memory.limit_in_bytes``), read by
``machine`` through a root it is given. The last two tests put a real ``reporter run``
in a real cgroup of this machine, where one can be made (root, a writable hierarchy)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth_image, write

from reporter import machine


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def proc(tmp_path: Path, cgroup: str, meminfo_kb: int | None = None) -> Path:
    """A /proc/self with ``cgroup`` (and /proc/meminfo beside it)."""
    me = tmp_path / "proc" / "self"
    me.mkdir(parents=True)
    (me / "cgroup").write_text(cgroup)
    if meminfo_kb is not None:
        (me.parent / "meminfo").write_text(f"MemTotal: 99 kB\nMemAvailable:   {meminfo_kb} kB\n")
    return me


def test_a_cgroup_v2_quota_and_memory_limit_are_read_up_the_tree(tmp_path):
    root = tree(
        tmp_path / "cg",
        {
            "cgroup.controllers": "cpu memory",
            "cpu.max": "max 100000",
            "system.slice/cpu.max": "250000 100000",  # 2.5 CPUs for the slice
            "system.slice/memory.max": str(4 * 2**30),
            "system.slice/memory.current": str(3 * 2**30 + 2**29),
            "system.slice/memory.stat": f"anon 1000\nfile {2**29}\ninactive_file {2**29}\n",
            "system.slice/qc.service/cpu.max": "max 100000",
            "system.slice/qc.service/memory.max": "max",
            "system.slice/qc.service/memory.current": "1000",
        },
    )
    me = proc(tmp_path, "0::/system.slice/qc.service\n", meminfo_kb=8 * 2**20)
    assert machine.cpu_quota(root, me) == 2.5
    cores = len(os.sched_getaffinity(0))
    assert machine.cores(root, me) == min(cores, 3)  # rounded up
    # the slice's headroom, not 8 GB; its inactive file cache would be reclaimed first
    assert machine.available_memory(root, me) == 2**30


def test_a_cgroup_v1_container_sees_its_own_cgroup_at_the_root(tmp_path):
    """Inside a container /proc names the host's path (/docker/<id>), which its view of
    /sys/fs/cgroup does not have: the limits are at the hierarchy's root."""
    root = tree(
        tmp_path / "cg",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "50000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(2 * 2**30),
            "memory/memory.usage_in_bytes": str(2**29),
        },
    )
    me = proc(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n", 16 * 2**20)
    assert machine.cpu_quota(root, me) == 0.5
    assert machine.cores(root, me) == 1
    assert machine.available_memory(root, me) == 2 * 2**30 - 2**29


def test_no_limits_leave_the_affinity_and_meminfo(tmp_path):
    root = tree(
        tmp_path / "cg",
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
            "memory/memory.usage_in_bytes": "5000",
        },
    )
    me = proc(tmp_path, "4:memory:/\n1:cpu:/\n", meminfo_kb=1234)
    assert machine.cpu_quota(root, me) is None
    assert machine.cores(root, me) == len(os.sched_getaffinity(0))
    assert machine.available_memory(root, me) == 1234 * 1024
    nothing = tmp_path / "none" / "self"
    assert machine.available_memory(root, nothing) is None
    assert machine.workers_that_fit(10**6, 3, 1, None) is None


def test_what_a_worker_needs_grows_with_the_pixels_and_the_colour():
    """Measured on the development VM: a worker comparing 24-megapixel colour JPEGs peaked
    at 1.24 GB (its proportional share), 2.56 GB at 50 megapixels in colour in one
    process, 0.88 GB in grey; the estimate may be above, not far below."""
    assert 1.24 <= machine.worker_bytes(24_000_000, 3, 1) / 2**30 <= 1.5
    assert machine.worker_bytes(50_000_000, 1, 1) / 2**30 >= 0.85
    assert machine.worker_bytes(10**6, 3, 2) > machine.worker_bytes(10**6, 3, 1)
    assert machine.workers_that_fit(24_000_000, 3, 1, 4 * 2**30) == 2


def _cgroup(controller: str, settings: dict[str, str]) -> Path:
    """A new cgroup of this machine with ``settings`` (v1 names for v1, v2 for v2), or a
    skip where none can be made."""
    name = f"reporter-test-{uuid.uuid4().hex[:8]}"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    folder = Path("/sys/fs/cgroup") / name if v2 else Path("/sys/fs/cgroup") / controller / name
    try:
        if v2:
            (folder.parent / "cgroup.subtree_control").write_text(f"+{controller}")
        folder.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here (needs root and a writable hierarchy): {exc}")
    for key, value in settings.items():
        (folder / (key if not v2 else V2_NAMES[key])).write_text(value)
    return folder


V2_NAMES = {"memory.limit_in_bytes": "memory.max", "cpu.cfs_quota_us": "cpu.max"}


def _run_in(
    folder: Path, args: list[str], cwd: Path, cache: Path | None = None
) -> subprocess.CompletedProcess:
    """``reporter ARGS`` in the cgroup ``folder``; ``cache``: a file of that many bytes
    written from inside it first, whose page cache the cgroup is then charged for."""
    write = f"Path({str(cache)!r}).write_bytes(bytes(1 << 30))\n" if cache else ""
    code = (
        "import os, sys; from pathlib import Path\n"
        f"Path({str(folder / 'cgroup.procs')!r}).write_text(str(os.getpid()))\n"
        f"{write}"
        "from reporter.cli import entry; sys.argv = ['reporter', *sys.argv[1:]]; entry()\n"
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True
        )
    finally:
        deadline = time.monotonic() + 30  # the run's fork server ends just after it
        while (folder / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        folder.rmdir()


@pytest.mark.skipif(not Path("/proc/self/cgroup").is_file(), reason="needs Linux cgroups")
def test_a_run_in_a_cgroup_of_one_cpu_uses_one_process(tmp_path):
    """os.cpu_count() counts the host's cores: in a cgroup of one CPU, --jobs 0 started a
    worker per host core (jobs 2 here)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to tell one from all")
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    folder = _cgroup("cpu", {"cpu.cfs_quota_us": "100000 100000" if v2 else "100000"})
    run = tmp_path / "run"
    run.mkdir()
    base = smooth_image(1, (512, 512, 3))
    write(run / "baseline.png", base)
    for i in range(8):
        write(run / f"img{i}.png", np.roll(base, i, axis=1))
    done = _run_in(folder, ["run", str(run), "--out", "out", "-q", "--format", "json"], tmp_path)
    assert done.returncode in (0, 1), done.stderr  # 1: the shifted images FAIL
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["config"]["jobs"] == 1 and len(result["rows"]) == 8
    # and --jobs is bounded by the cores this process may use, not the host's
    folder = _cgroup("cpu", {"cpu.cfs_quota_us": "100000 100000" if v2 else "100000"})
    done = _run_in(folder, ["run", str(run), "--jobs", "5", "-q"], tmp_path)
    assert done.returncode == 2
    assert "jobs 5 is more than 4 (4 per core this process may use)" in done.stderr


def large_images(run: Path) -> Path:
    """A baseline and three changed copies, 16-megapixel colour PNGs."""
    run.mkdir()
    rng = np.random.default_rng(0)
    small = (rng.random((72, 96, 3)) * 255).astype(np.uint8)
    base = cv2.resize(small, (4608, 3456), interpolation=cv2.INTER_LINEAR)
    write(run / "baseline.png", base, (cv2.IMWRITE_PNG_COMPRESSION, 1))
    for i in range(3):
        img = base.copy()
        img[100 * i : 100 * i + 200, 300:600] = 40 * i
        write(run / f"img{i}.png", img, (cv2.IMWRITE_PNG_COMPRESSION, 1))
    return run


@pytest.mark.skipif(not Path("/proc/self/cgroup").is_file(), reason="needs Linux cgroups")
def test_a_run_of_large_images_starts_only_the_workers_its_memory_holds(tmp_path):
    """Two workers for 16-megapixel colour images need about 1.8 GB: under a limit of
    1.4 GB the out-of-memory killer took them one by one ("a worker process died; trying
    3 file(s) again"), and the run survived only by trying each image again alone. Now
    the run compares in its own process and says why."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores, for a run that would start workers")
    folder = _cgroup("memory", {"memory.limit_in_bytes": str(1400 * 2**20)})
    run = large_images(tmp_path / "run")
    args = ["run", str(run), "--out", "out", "--format", "csv,json", "-v"]
    done = _run_in(folder, args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "worker process died" not in done.stderr
    assert "comparing in this process, not 2 workers: each needs about 0.9 GB" in done.stderr
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["config"]["jobs"] == 1
    assert [r["status"] for r in result["rows"]] == ["WARN", "WARN", "PASS"]


@pytest.mark.skipif(not Path("/proc/self/cgroup").is_file(), reason="needs Linux cgroups")
def test_a_run_that_memory_cannot_hold_says_so_before_it_is_killed(tmp_path):
    """Under a 700 MB limit even one process cannot compare 16-megapixel colour images:
    the out-of-memory killer ends the run (SIGKILL, no Python left to log), so the log
    says beforehand why it may end. The outputs of a killed run never appear."""
    folder = _cgroup("memory", {"memory.limit_in_bytes": str(700 * 2**20)})
    run = large_images(tmp_path / "run")
    done = _run_in(folder, ["run", str(run), "--out", "out", "--format", "csv,json"], tmp_path)
    line = re.search(
        r"WARNING comparing images of 16 megapixels takes about 0\.\d GB, and 0\.\d GB of "
        r"memory is available: the out-of-memory killer may end this run",
        done.stderr,
    )
    assert line, done.stderr
    if done.returncode == -signal.SIGKILL:  # as here, with no swap
        assert not (tmp_path / "out" / "results.json").exists()
    else:  # a machine that swaps may finish, slowly
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not Path("/proc/self/cgroup").is_file(), reason="needs Linux cgroups")
def test_a_cgroups_file_cache_is_not_taken_for_used_memory(tmp_path):
    """A cgroup is charged for the page cache of the files its processes read and write,
    which the kernel reclaims before it kills. After writing a 1 GB file under a 3 GB
    limit, usage less limit left 1.7 GB and the run compared in one process; less its
    inactive file cache, two workers of 0.9 GB fit."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores, for a run that would start workers")
    folder = _cgroup("memory", {"memory.limit_in_bytes": str(3 * 2**30)})
    run = large_images(tmp_path / "run")
    args = ["run", str(run), "--out", "out", "--format", "json", "-v"]
    done = _run_in(folder, args, tmp_path, cache=tmp_path / "one-gigabyte")
    assert done.returncode == 0, done.stderr
    assert "not 2 workers" not in done.stderr and "killer" not in done.stderr, done.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["jobs"] == 2
