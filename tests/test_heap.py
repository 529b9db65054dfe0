"""heap.py: the memory an image frees stays with the process for the next image (glibc).

Each check runs in a fresh interpreter, where glibc's allocator starts from its
defaults: there a freed 20 MB array goes straight back to the system, which is
what made every later image of a long run fault its memory in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _glibc() -> tuple[int, ...]:
    """glibc's version, () where the C library is another."""
    name = hasattr(os, "confstr") and os.confstr("CS_GNU_LIBC_VERSION") or ""
    if not name.startswith("glibc "):
        return ()
    return tuple(int(part) for part in name.split()[1].split(".")[:2])


pytestmark = pytest.mark.skipif(
    _glibc() < (2, 33),  # mallinfo2, which the probe reads, came with glibc 2.33
    reason="the setting exists in glibc's allocator only; elsewhere heap.py changes nothing",
)

PROBE = r"""
import ctypes, json, os, sys
from pathlib import Path

import numpy as np

from reporter import compare, heap


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
MB = 1 << 20


def kept_after_free():
    "MB that the heap keeps free once a 20 MB array (an image's worth) is freed."
    block = np.ones(20 * MB, np.uint8)
    del block
    return libc.mallinfo2().fordblks / MB


def heap_mb():
    return libc.mallinfo2().arena / MB


how = sys.argv[1]
out = {}
if how == "plain":
    out["kept"] = kept_after_free()
elif how == "worker":  # what every local worker process does first
    compare.worker_started(os.getpid())
    out["kept"] = kept_after_free()
elif how == "kept":
    with heap.kept():
        out["kept"] = kept_after_free()
        out["heap_inside"] = heap_mb()
    out["heap_after"] = heap_mb()
elif how == "loop":  # the run's own loop over its images, --jobs 1
    def probe(job, item):
        out.setdefault("kept", kept_after_free())
        return compare.ImageResult(file=item.file, path=str(item.path))

    compare.compare_file = probe
    items = [compare.Input(path=Path(f"{i}.png"), file=f"{i}.png") for i in range(2)]
    compare.compare_all(None, items, jobs=1, progress=False)
elif how == "features":  # the collection commands' own loop, --jobs 1
    from reporter.collection import features

    def compute(path, file, **_):
        out.setdefault("kept", kept_after_free())
        return features.Features(str(path), file, error="probe")

    features.compute = compute
    items = [compare.Input(path=Path(f"{i}.png"), file=f"{i}.png") for i in range(2)]
    features.gather(items, embedding=False, jobs=1, cache=features.FeatureCache(None))
print(json.dumps(out))
"""


def probe(how: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_the_setting_freed_memory_goes_back():
    """The control: glibc's default hands a freed 20 MB block back to the system."""
    assert probe("plain")["kept"] < 20


def test_a_worker_keeps_what_an_image_frees():
    assert probe("worker")["kept"] >= 20


def test_the_runs_own_loop_keeps_it_and_hands_it_back_after():
    assert probe("loop")["kept"] >= 20
    assert probe("features")["kept"] >= 20
    measured = probe("kept")
    assert measured["kept"] >= 20
    assert measured["heap_after"] <= measured["heap_inside"] - 15  # trimmed on the way out
