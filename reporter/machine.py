"""What this process may use of the machine: its cores and its memory, as a container, a
CPU affinity or a cgroup limits them.

``os.cpu_count()`` counts the host's cores: in a container given two CPUs of a 64-core
host (``docker run --cpus 2``, a Kubernetes limit, a systemd ``CPUQuota``), a run with
``--jobs 0`` started 64 workers, each with its own copy of the baseline's statistics.
And a worker's memory grows with the image: about 50 bytes a pixel in colour (1.2 GB
for a 24-megapixel photo, 5 GB at the 100-megapixel ``max_pixels``), so that a run of
large images on many cores was killed worker by worker by the out-of-memory killer.

Linux only, read from ``/proc`` and ``/sys/fs/cgroup`` (cgroup v2 and v1); elsewhere
the host's count and no memory bound.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = [
    "available_memory",
    "cores",
    "MEMORY_SHARE",
    "PROCESS_BYTES",
    "worker_bytes",
    "workers_that_fit",
]

CGROUP = Path("/sys/fs/cgroup")

PROCESS_BYTES = 100 * 2**20
"""A worker process's own memory beyond its images' (its modules are shared with the fork
server it starts from)."""

MEMORY_SHARE = 0.8
"""The share of the available memory the workers may plan on: the run's own process, the
page cache and the estimate's error get the rest."""


def cores(root: Path = CGROUP, proc: Path = Path("/proc/self")) -> int:
    """The cores this process may use: those of its CPU affinity (``taskset``, a cpuset),
    at most its cgroup's CPU quota rounded up (``--cpus 2.5`` is 3), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cpu_quota(root, proc)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def cpu_quota(root: Path = CGROUP, proc: Path = Path("/proc/self")) -> float | None:
    """The CPUs this process's cgroup (or an ancestor's) may use, as quota / period; None
    without a quota."""
    found = []
    for folder in _cgroup_folders(root, proc, "cpu"):
        if (folder / "cpu.max").is_file():  # v2: "max 100000" or "200000 100000"
            quota, _, period = _read(folder / "cpu.max").partition(" ")
            if quota != "max" and _positive(quota) and _positive(period):
                found.append(int(quota) / int(period))
        elif (folder / "cpu.cfs_quota_us").is_file():  # v1: -1 for none
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if _positive(quota) and _positive(period):
                found.append(int(quota) / int(period))
    return min(found) if found else None


def available_memory(root: Path = CGROUP, proc: Path = Path("/proc/self")) -> int | None:
    """Bytes this process may still use: the kernel's MemAvailable, at most the headroom
    of its cgroup's memory limit (or an ancestor's); None where neither is known."""
    found = []
    try:
        for line in (proc.parent / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for folder in _cgroup_folders(root, proc, "memory"):
        for limit, usage in (
            ("memory.max", "memory.current"),  # v2: "max" for none
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),  # v1: a huge number for none
        ):
            top, used = _read(folder / limit), _read(folder / usage)
            if _positive(top) and _positive(used) and int(top) < 2**60:
                working = int(used) - _inactive_file(folder)
                found.append(max(0, int(top) - working))
    return min(found) if found else None


def _inactive_file(folder: Path) -> int:
    """The cgroup's inactive file cache (``memory.stat``), which the kernel reclaims
    before it kills: usage less it is the working set, as Kubernetes and ``docker
    stats`` count it. Without it, a container that had read its images' files looked
    full of the cache they left."""
    stat = {}
    for line in _read(folder / "memory.stat").splitlines():
        key, _, value = line.partition(" ")
        stat[key] = value
    value = stat.get("total_inactive_file", stat.get("inactive_file", "0"))  # v1, v2
    return int(value) if value.isdigit() else 0


def worker_bytes(pixels: int, channels: int, itemsize: int) -> int:
    """About what one worker process needs to compare images of ``pixels`` against a
    baseline of that size: the baseline's statistics (float32 planes at every scale,
    about 15 bytes a pixel in grey and 45 in colour, measured at 1-50 megapixels), the
    image's decoded and converted copies, and 100 MB for the process itself (its modules
    are shared with the fork server it starts from)."""
    per_pixel = (18 if channels == 1 else 48) + 2 * channels * itemsize
    return PROCESS_BYTES + pixels * per_pixel


def workers_that_fit(
    pixels: int, channels: int, itemsize: int, available: int | None
) -> int | None:
    """How many workers MEMORY_SHARE of ``available`` bytes holds (0 or more); None when
    the available memory is not known."""
    if available is None:
        return None
    return int(available * MEMORY_SHARE // worker_bytes(pixels, channels, itemsize))


def _cgroup_folders(root: Path, proc: Path, controller: str) -> list[Path]:
    """The cgroup folders whose limits apply to this process for ``controller``: its own
    and its ancestors' up to the hierarchy's root, of cgroup v2 and of v1's hierarchy
    for the controller. In a container the path that /proc shows may not exist inside
    its view of /sys/fs/cgroup, which then is the container's own cgroup: its root."""
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return []
    folders = []
    for line in lines:
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and not names:  # v2
            mount = root if (root / "cgroup.controllers").is_file() else root / "unified"
        elif controller in names.split(","):
            mount = root / names
            if not mount.is_dir():
                mount = root / controller
        else:
            continue
        leaf = mount / path.lstrip("/")
        if not leaf.is_dir():
            leaf = mount
        for folder in (leaf, *leaf.parents):
            folders.append(folder)
            if folder == mount:
                break
    return folders


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _positive(text: str) -> bool:
    return text.isdigit() and int(text) > 0
