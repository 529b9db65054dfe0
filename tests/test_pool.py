"""The workers' fork server: the environment it starts with, and what the run keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the fork server and glibc's tunables are Linux's"
)

WORKER = """
import json, os
from concurrent.futures import ProcessPoolExecutor
from reporter import pool

before = os.environ.get("GLIBC_TUNABLES")
with ProcessPoolExecutor(1, mp_context=pool.context()) as workers:
    seen = workers.submit(os.getenv, "GLIBC_TUNABLES").result()
print(json.dumps({"before": before, "after": os.environ.get("GLIBC_TUNABLES"), "worker": seen}))
"""


COLLECTION = """
import json, os, sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from reporter import pool

folder, jobs, kernels = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "yes"
started = pool.start_for_collection([folder], jobs, kernels, sys.argv[4] == "-r")
# the server's settings are not left behind
names = ("PIXEL_TYPE", "MAIN_PATH", "MAIN_NAME", "SERVER_IMPORTS")
left = [os.environ.get(f"REPORTER_{k}") for k in names]
probe = "[m in __import__('sys').modules for m in ('reporter.collection.features', 'numba')]"
with ProcessPoolExecutor(1, mp_context=pool.context()) as workers:
    features, numba = workers.submit(eval, probe).result()
print(json.dumps({"started": started, "features": features, "numba": numba, "left": left}))
"""


@pytest.mark.parametrize(
    "jobs, kernels, images, recursive, expected",
    [
        (0, "no", 3, "", {"started": True, "features": True, "numba": False}),
        (2, "yes", 3, "", {"started": True, "features": True, "numba": True}),
        (1, "no", 3, "", {"started": False, "features": False, "numba": True}),
        (0, "no", 1, "", {"started": False, "features": False, "numba": True}),
        (0, "no", 3, "-r", {"started": True, "features": True, "numba": False}),
    ],
)
def test_a_collection_commands_fork_server_imports_features_not_the_kernels(
    tmp_path, jobs, kernels, images, recursive, expected
):
    """A collection command's workers compute features: the fork server it starts early
    imports them once, and loads the compiled kernels (numba, 0.66 s) only for a search
    by a run metric. With one job or one image it starts nothing (the pool's own server,
    as a run's, is then started later, with the kernels). With --recursive the images
    may all lie in sub-folders (a library sorted by year)."""
    folder = tmp_path / ("2024" if recursive else "")
    folder.mkdir(exist_ok=True)
    for i in range(images):
        (folder / f"{i}.png").write_bytes(b"")  # only the names are looked at
    done = subprocess.run(
        [sys.executable, "-c", COLLECTION, str(tmp_path), str(jobs), kernels, recursive],
        env={k: v for k, v in os.environ.items() if k != "REPORTER_PIXEL_TYPE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {**expected, "left": [None] * 4}


def _run(tunables: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_workers_get_the_callers_allocator_settings_as_they_are():
    """The fork server, and so every worker, starts with the caller's glibc tunables as
    they are: no malloc.hugetlb added. Transparent huge pages made a worker's start
    slower in runs that follow idle, as cron's do, on a VM whose balloon takes back free
    memory (pool._run_server). None stays none; a user's own are passed on untouched;
    the run's own environment is left as it was."""
    none = _run(None)
    assert none == {"before": None, "after": None, "worker": None}
    other = _run("glibc.malloc.arena_max=2")
    assert other["worker"] == other["after"] == "glibc.malloc.arena_max=2"
    own = _run("glibc.malloc.hugetlb=1")
    assert own["worker"] == "glibc.malloc.hugetlb=1"


RUN_SERVER = """
import json
from concurrent.futures import ProcessPoolExecutor
from reporter import pool

probe = "{m: m in __import__('sys').modules for m in %r}" % (
    ("reporter.kernels", "tqdm", "pandas", "openpyxl", "jinja2", "scipy.linalg"),
)
with ProcessPoolExecutor(1, mp_context=pool.context()) as workers:
    print(json.dumps(workers.submit(eval, probe).result()))
"""


GARBAGE = """
import gc, json
from concurrent.futures import ProcessPoolExecutor
import sys
from reporter import pool

pool._PRELOAD += tuple(sys.argv[1:])  # a module the server cannot import
gc_ = "__import__('gc')"
probe = f"({gc_}.isenabled(), {gc_}.get_freeze_count(), {gc_}.get_stats())"
with ProcessPoolExecutor(1, mp_context=pool.context()) as workers:
    enabled, frozen, stats = workers.submit(eval, probe).result()
print(json.dumps({"enabled": enabled, "frozen": frozen, "full": stats[2]["collections"]}))
"""


@pytest.mark.parametrize("broken", [[], ["reporter.no_such_module"]])
def test_the_fork_server_imports_with_the_garbage_collector_off_and_freezes(broken):
    """The fork server imports reporter and loads the kernels with the collector off (it
    ran some 250 collections, 68-78 ms of the server's start), then freezes what it made:
    a worker's collector is on, skips the server's objects (and so never touches, and
    copies, their pages), and no full collection ran in the server (one did before).
    When one of its imports fails, its workers still get a working collector."""
    done = subprocess.run(
        [sys.executable, "-c", GARBAGE, *broken], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["enabled"] is True
    # numba's, numpy's and OpenCV's modules: about 160,000 (fewer when an import failed)
    assert seen["frozen"] > (10_000 if broken else 100_000)
    assert seen["full"] == 0


def test_a_runs_workers_start_with_the_kernels_and_nothing_of_the_reports():
    """The fork server is on a command line run's critical path (the pool waits for it):
    it loads the kernels, and imports nothing a worker does not use. Not the reports'
    libraries, not the progress bar (tqdm, 22-50 ms), and not SciPy's linear algebra,
    which numba would import for nothing (0.2 s)."""
    env = {k: v for k, v in os.environ.items() if k != "REPORTER_PIXEL_TYPE"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_SERVER], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "reporter.kernels": True,
        "tqdm": False,
        "pandas": False,
        "openpyxl": False,
        "jinja2": False,
        "scipy.linalg": False,
    }


SHARED = """
import json, os, pickle, sys
from concurrent.futures import ProcessPoolExecutor
import numpy as np
if sys.argv[1:] == ["refused"]:  # a sandbox that refuses memfd_create
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")
    os.memfd_create = refuse
from reporter import pool
from reporter.metrics import Reference

pixels = np.random.default_rng(1).integers(0, 256, (300, 200, 3), np.uint8)
valid = np.ones((300, 200), bool)
valid[:20] = False
reference = Reference(pixels, valid)
probe = (
    "[(a.flags.writeable, type(getattr(getattr(a.base, 'base', None), 'obj', None)).__name__,"
    " a.tobytes() == b, a.fill(0)) for a, b in ("
    "(__import__('reporter.compare').compare._worker_job.reference.pixels, {p!r}), "
    "(__import__('reporter.compare').compare._worker_job.reference.valid, {v!r}))]"
).format(p=pixels.tobytes(), v=valid.tobytes())  # the array, its flat view, the mapping's buffer
# Each worker then overwrites its arrays: the next pool's worker must still see the run's.
from reporter.compare import Job, _init_worker
from reporter import images
job = Job(reference, images.Geometry.of(pixels), 10**8, False, pictures_only=True)
seen = []
for _ in range(2):  # a second pool (a worker that died is retried in one) maps it again
    with ProcessPoolExecutor(
        1, mp_context=pool.context(), initializer=_init_worker, initargs=(job, os.getpid())
    ) as workers:
        seen.append(workers.submit(eval, probe).result())
# Pickled any other way (a Dask task, a copy) it is the array itself, writable.
copy = pickle.loads(pickle.dumps(reference))
shared = pool.Shared(pixels)
plain = pickle.loads(pickle.dumps(shared))
print(json.dumps({"workers": seen,
                  "copy": [copy.pixels.flags.writeable, bool((copy.pixels == pixels).all())],
                  "plain": [type(plain).__name__, bool((plain == pixels).all())]}))
"""


@pytest.mark.parametrize("memfd", ["allowed", "refused"])
def test_a_workers_baseline_is_mapped_from_the_runs_memory_not_sent_through_its_pipe(memfd):
    """A worker's start holds the run's process until the worker has read its start-up
    data; with the baseline's pixels in it, a start took 13-20 ms at 1024 px (25-51 ms
    at 2048) instead of 3-8. The baseline's pixels and mask reach each worker as a
    private (copy-on-write) mapping of one copy in shared memory, in every pool of the
    run: writable, as a kernel's warmed-up signatures expect, and a write stays in the
    worker that made it (the next pool's worker still sees the run's pixels). Pickled
    any other way, a Reference carries its arrays as ever. Where shared memory is
    refused, they go through the pipe as before."""
    done = subprocess.run(
        [sys.executable, "-c", SHARED, memfd], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    if memfd == "allowed":
        assert seen["workers"] == [[[True, "mmap", True, None], [True, "mmap", True, None]]] * 2
    else:
        assert [[(w, ok) for w, _, ok, _ in pair] for pair in seen["workers"]] == [
            [(True, True), (True, True)]
        ] * 2
    assert seen["copy"] == [True, True]
    assert seen["plain"] == ["ndarray", True]


WARMED_WORKER = """
import json, os, sys
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from reporter import images, pool
from reporter.compare import Job
from reporter.metrics import Reference

COUNT = (  # how many signatures of each kernel this process has loaded
    "(lambda k: {n: len(getattr(k, n).signatures) for n in dir(k)"
    " if hasattr(getattr(k, n), 'signatures')})(__import__('reporter.kernels').kernels)"
)
INIT = f\"""
import builtins
from reporter import compare
builtins.before = {COUNT}
compare._init_worker(job, parent)
\"""
PROBE = f\"""(
    __import__('reporter.compare').compare._worker_job.reference.compare(image),
    __import__('builtins').before == {COUNT},
)\"""
rng = np.random.default_rng(4)
seen = []
for shape in ((120, 90, 3), (120, 90)):
    pixels = rng.integers(0, 256, shape, np.uint8)
    valid = np.ones(shape[:2], bool)
    valid[:, :7] = False
    for mask in (None, valid):
        job = Job(Reference(pixels, mask), images.Geometry.of(pixels), 10**8, False)
        context = {"job": job, "parent": os.getpid()}
        with ProcessPoolExecutor(
            1, mp_context=pool.context(), initializer=exec, initargs=(INIT, context)
        ) as workers:
            image = np.clip(pixels.astype(int) + 9, 0, 255).astype(np.uint8)
            _, none_loaded = workers.submit(eval, PROBE, {"image": image}).result()
        seen.append(none_loaded)
print(json.dumps(seen))
"""


def test_a_worker_loads_no_kernel_signature_the_fork_server_did_not():
    """The fork server loads the compiled kernels once (``kernels.warm``); a worker's
    preparation of the baseline and its first comparison must find every signature
    already there. The baseline it receives is a mapping of the run's memory: mapped
    read-only, numba typed it apart, and the baseline's ink per cell loaded a signature
    of its own in every worker (18-24 ms of each worker's start; on a new machine, a
    compilation). Colour and greyscale, with and without ignored pixels."""
    done = subprocess.run(
        [sys.executable, "-c", WARMED_WORKER], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True] * 4
