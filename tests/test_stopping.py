"""A run whose main process is killed or told to stop: no process outlives it, nothing is half.

A scheduler's timeout sends SIGTERM (or SIGKILL after a grace period), a
closed session SIGHUP. The caller captures stderr and waits for it to close:
a worker left alive would hold it open forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kills  # noqa: E402
from conftest import noisy, smooth_image, write

from reporter import stopping

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


_descendants, _running = kills.descendants, kills.running


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    base = smooth_image(0, (768, 1024, 3))
    write(folder / "baseline.png", base)
    for i in range(60):
        write(folder / f"img{i:02d}.png", noisy(base, 0.02, seed=i))
    # Each file four more times under other names: the comparison pass must outlast the
    # second the test waits once the workers are up (60 images took about a second on
    # two cores once the workers no longer asked for huge pages).
    for i in range(60):
        for copy in range(1, 5):
            os.link(folder / f"img{i:02d}.png", folder / f"img{i:02d}_{copy}.png")
    return folder


def _start_and_wait_for_workers(folder: Path, out: Path) -> tuple[subprocess.Popen, set[int]]:
    """Start a run with two workers; return once both compare images."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(out), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    family: set[int] = set()
    # the resource tracker, the fork server and two workers
    while time.monotonic() < deadline and len(family) < 4 and proc.poll() is None:
        time.sleep(0.1)
        family = _descendants(proc.pid)
    time.sleep(1.0)  # the workers are inside an image now
    family = _descendants(proc.pid)
    assert proc.poll() is None and len(family) >= 4, f"the run did not start its workers: {family}"
    return proc, family


def _outlive(family: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = {pid for pid in family if _running(pid)}
        if not left:
            return set()
        time.sleep(0.1)
    return left


@pytest.mark.parametrize(
    "signum, status",
    [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGKILL", "SIGTERM", "SIGHUP"],
)
def test_no_process_outlives_a_stopped_run(many, tmp_path, signum, status):
    out = tmp_path / "out"
    proc, family = _start_and_wait_for_workers(many, out)
    try:
        os.kill(proc.pid, signum)
        try:  # the caller's pipes close: it does not wait forever
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("stderr stayed open: a process of the run outlived it")
        assert proc.returncode == status
        assert not _outlive(family, 10), "processes of the run are still alive"
    finally:
        for pid in family | {proc.pid}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    text = err.decode(errors="replace")
    assert "Traceback" not in text and "Warning" not in text, text
    if signum != signal.SIGKILL:
        name = signal.Signals(signum).name
        stopped = [line for line in text.splitlines() if "stopped by" in line]
        assert len(stopped) == 1 and name in stopped[0] and "ERROR" in stopped[0], text
    # nothing was written, half or whole (a SIGKILL may leave its staging folder, see below)
    assert not [p for p in out.iterdir() if not p.name.startswith(".staging-")]


def test_a_staging_folder_of_a_killed_run_is_removed_by_the_next(run_dir, tmp_path):
    from reporter import pipeline
    from reporter.config import Config

    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that is free now
    stale = out / f".staging-{gone.pid}-abc"
    stale.mkdir()
    (stale / "report.html").write_text("half")
    living = out / f".staging-{os.getppid()}-xyz"  # a concurrent run's, still alive
    living.mkdir()
    pipeline.run(Config(inputs=(run_dir,), out=out, progress=False))
    assert not stale.exists()
    assert living.is_dir()
    assert (out / "results.json").is_file()


def test_a_signal_within_a_held_step_waits_for_its_end():
    steps = []
    with pytest.raises(stopping.Stopped) as raised, stopping.handled():
        with stopping.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # Python runs the handler between two bytecodes
            steps.append("after the signal")
        steps.append("never")
    assert steps == ["after the signal"]
    assert raised.value.exit_code == 143
    # the previous handler is back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _hook_module() -> str:
    return sys.excepthook.__module__


def _pillow_plugins_loaded() -> bool:
    return {"PIL.PngImagePlugin", "PIL.JpegImagePlugin"} <= set(sys.modules)


def test_workers_start_with_pillows_plugins_loaded():
    """The fork server loads Pillow's format plugins (7 ms) once: a worker's first image
    does not pay for them."""
    from concurrent.futures import ProcessPoolExecutor

    from reporter.pool import context as pool_context

    context = pool_context()
    if context.get_start_method() != "forkserver":
        pytest.skip("workers are spawned, not forked from a fork server")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(_pillow_plugins_loaded).result(timeout=60)


def test_workers_start_with_the_quiet_start_up_hook():
    """A worker that fails in multiprocessing's own start-up while the run is being
    stopped must not print a traceback after the run's last line (seen once in 15
    SIGHUPs by benchmarks/kills.py)."""
    from concurrent.futures import ProcessPoolExecutor

    from reporter.pool import context as pool_context

    context = pool_context()
    if context.get_start_method() != "forkserver":
        pytest.skip("workers are spawned, not forked from a fork server")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(_hook_module).result(timeout=60) == "reporter._forkserver"


def _exits_slowly() -> None:
    """A worker's initializer: the worker then takes a second to exit."""
    from multiprocessing import util

    util.Finalize(None, time.sleep, args=(1.0,), exitpriority=100)


def _pid(_item: object) -> int:
    return os.getpid()


def test_the_run_goes_on_while_its_workers_exit():
    """With every result in and no worker dead, the pool does not wait for its workers
    to exit (each frees its few hundred MB: 10-14 ms at 1024 px): the run goes on to its
    table and reports. Waiting, the worker below would be gone (reaped) on return."""
    from tqdm import tqdm

    from reporter.compare import in_workers

    with tqdm(disable=True) as bar:
        pids = in_workers(_pid, _exits_slowly, (), [0, 1], 1, bar, died=None)
    assert pids[0] == pids[1] != os.getpid()
    os.kill(pids[0], 0)  # still there, in its second-long exit: no ProcessLookupError
