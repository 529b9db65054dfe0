"""--scheduler: the per-image work on a real Dask cluster. A LocalCluster of worker
processes, and a `dask scheduler` with two `dask worker` processes started here on loopback
(in another folder, so that a relative path could not be read there by accident)."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES, noisy, noisy_run, smooth_image, write

from reporter import pipeline
from reporter.cli import main
from reporter.config import Config

distributed = pytest.importorskip("distributed")  # the test extra has it: never skipped in CI
Client = distributed.Client

# The nanny kills a worker past 95 % of it (the 768 MB poison image below) and pauses it
# past 80 %: an idle worker holds about 430 MB (Python, dask, OpenCV, and the compiled
# kernels' LLVM runtime), which must stay below the pause.
WORKER_MEMORY = "750MB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_command() -> str:
    here = Path(sys.executable).parent / "dask"
    return str(here) if here.exists() else shutil.which("dask")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers, as a lab would start them; Dask's
    allowed-failures is 1 (default 3) so that a file that kills workers fails sooner."""
    where = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = os.environ | {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    log = (where / "dask.log").open("wb")

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([dask_command(), *args, "--no-dashboard"], cwd=where, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    procs = [start("scheduler", "--host", "127.0.0.1", "--port", str(port))]
    for _ in range(2):
        procs.append(start("worker", address, "--nthreads", "1", "--memory-limit", WORKER_MEMORY))
    watcher = Client(address, timeout=30)
    watcher.wait_for_workers(2, timeout=60)
    yield address, watcher
    watcher.close()
    for p in procs[1:] + procs[:1]:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    log.close()


def rows(folder: Path, name: str = "results.csv") -> str:
    return (folder / name).read_text(encoding="utf-8")


def test_a_local_cluster_gives_the_rows_of_the_local_run(tmp_path):
    """--scheduler local:2 starts a LocalCluster of two worker processes: the same rows."""
    shutil.copytree(SAMPLES, tmp_path / "run")
    assert main(["run", "run", "--out", "plain", "-j", "1", "-q"]) == 1
    assert main(["run", "run", "--out", "dask", "--scheduler", "local:2", "-q"]) == 1
    assert rows(tmp_path / "dask") == rows(tmp_path / "plain")
    assert (tmp_path / "dask" / "report.html").stat().st_size > 10_000


def test_every_command_on_a_cluster_gives_the_local_rows(cluster, tmp_path):
    """Relative paths here, workers in another folder: run, search (by embedding and by a
    run metric), duplicates and cluster give exactly the local rows."""
    address, watcher = cluster
    shutil.copytree(SAMPLES, tmp_path / "run")
    before = watcher.run(lambda: importlib.import_module("reporter._dask").SETUPS)
    for command, out, name in [
        (["run", "run"], "r", "results.csv"),
        (["search", "run/normal_day01.png", "run", "--no-cache"], "s", "results.csv"),
        (["search", "run/normal_day01.png", "run", "--by", "ssim"], "m", "results.csv"),
        (["duplicates", "run", "--no-cache"], "d", "groups.csv"),
        (["cluster", "run", "--no-cache", "--k", "2", "--features", "pixels"], "c", "clusters.csv"),
    ]:
        local = main([*command, "--out", f"{out}1", "-j", "1", "-q"])
        remote = main([*command, "--out", f"{out}2", "--scheduler", address, "-q"])
        assert remote == local and rows(tmp_path / f"{out}2", name) == rows(
            tmp_path / f"{out}1", name
        )
    after = watcher.run(lambda: importlib.import_module("reporter._dask").SETUPS)
    # Prepared once per worker and command, not per task. The run needs one pass: its four
    # flagged images fail fixed limits, so their closer looks are made in it (compare.Looks).
    assert {w: after[w] - before[w] for w in after} == {w: 5 for w in after}


def test_a_worker_killed_mid_run_costs_nothing(cluster, tmp_path):
    address, watcher = cluster
    folder = noisy_run(tmp_path / "many", 40)
    killed = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = {w: t for w, t in watcher.processing().items() if t}
            if busy:
                worker = sorted(busy)[0]
                pid = watcher.run(os.getpid, workers=[worker])[worker]
                time.sleep(0.2)  # inside an image
                os.kill(pid, signal.SIGKILL)
                killed.append(time.monotonic())
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    config = Config(inputs=(folder,), out=tmp_path / "o", scheduler=address, progress=False)
    result = pipeline.run(config)
    finished = time.monotonic()
    thread.join()
    assert killed and killed[0] < finished, "no worker was killed during the run"
    local = pipeline.run(Config(inputs=(folder,), out=tmp_path / "l", jobs=1, progress=False))
    assert len(result.table) == 40 and (result.table["status"] != "ERROR").all()
    assert rows(tmp_path / "o") == rows(tmp_path / "l") and local.exit_code == result.exit_code
    watcher.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_a_workers_own_log_lines_during_a_decode_are_no_decoders(cluster, tmp_path):
    """A worker logs from its own threads while an image decodes in another. Those lines
    went into the row as "the decoder warned: ..." (seen as a flaky test above: Dask's
    "Run out-of-band function 'getpid'"): descriptor 2 was caught, and Python's standard
    error wrote to it. Now Python's standard error is kept apart in a worker."""
    address, watcher = cluster
    folder = noisy_run(tmp_path / "chatty", 16)

    def chatter() -> None:
        import logging
        import threading
        import time

        log = logging.getLogger("distributed.worker")
        log.chatter, log.quiet = 0, False

        def loop() -> None:
            while not log.quiet:
                log.warning("chatter from the worker's own thread")
                log.chatter += 1
                time.sleep(0.001)

        threading.Thread(target=loop, daemon=True).start()

    def stop() -> int:
        import logging

        log = logging.getLogger("distributed.worker")
        log.quiet = True
        return log.chatter

    watcher.run(chatter)
    try:
        config = Config(inputs=(folder,), out=tmp_path / "o", scheduler=address, progress=False)
        result = pipeline.run(config)
    finally:
        said = watcher.run(stop)
    assert min(said.values()) > 100, said  # every worker chattered through the run
    notes = result.table["notes"].fillna("")
    assert not notes.str.contains("chatter").any(), notes[notes.str.contains("chatter")].tolist()
    assert (result.table["status"] != "ERROR").all()


def test_a_file_that_kills_every_worker_is_its_error_row(cluster, tmp_path):
    """A picture that needs more memory than a worker has (the nanny kills the worker): its
    task is retried on the other worker, then alone, then given up: its ERROR row; the
    images that were on the dying workers beside it still get theirs."""
    address, watcher = cluster
    folder = noisy_run(tmp_path / "bomb", 6, (256, 256, 3), seed=1)
    cv2.imwrite(str(folder / "huge.png"), np.zeros((16000, 16000, 3), np.uint8))  # 768 MB
    t = time.monotonic()
    code = main(["run", str(folder), "--out", str(tmp_path / "o"), "--scheduler", address,
                 "--max-pixels", "300000000", "-q"])  # fmt: skip
    took = time.monotonic() - t
    assert code == 1

    table = pd.read_csv(tmp_path / "o" / "results.csv")
    errors = table[table["status"] == "ERROR"]
    assert errors["file"].tolist() == ["huge.png"]
    assert "the worker process died on every Dask worker that tried it" in errors["error"].iat[0]
    assert len(table) == 7 and took < 120
    watcher.wait_for_workers(2, timeout=60)


def test_send_bytes_reads_here_and_guards_the_size(cluster, tmp_path):
    """--send-bytes: the workers get the bytes, so a relative path they could not resolve
    still compares (the same rows as locally); a file over max_file_mb is refused here."""
    address, _ = cluster
    shutil.copytree(SAMPLES, tmp_path / "run")
    big = smooth_image(5, (700, 700, 3))
    write(tmp_path / "run" / "big.png", noisy(big, 0.3))  # about 1.4 MB of noise
    common = ["run", "run", "-q", "--max-file-mb", "1"]
    assert main([*common, "--out", "l", "-j", "1"]) == 1
    assert main([*common, "--out", "d", "--scheduler", address, "--send-bytes"]) == 1
    assert rows(tmp_path / "d") == rows(tmp_path / "l")
    assert "over the limit of 1 MB (max_file_mb): not read" in rows(tmp_path / "d")
    assert main(["duplicates", "run", "--out", "dd", "--scheduler", address, "--send-bytes",
                 "--no-cache", "-q"]) == 0  # fmt: skip


def test_send_bytes_reads_a_file_still_being_written_again_once_it_has_settled(
    cluster, run_dir, tmp_path, baseline_img, monkeypatch
):
    """--send-bytes: the client reads the files and the workers decode them. A file it
    read half-written was sent as it was, and was an ERROR row ("truncated or corrupt"),
    the run's exit status 1 an alarm, where a local run reads it again. The client now
    reads it again once it has settled, and its row's notes say so, as a local run's."""
    from test_images import WRITTEN, _written_as_read

    address, _ = cluster
    png = cv2.imencode(".png", baseline_img)[1].tobytes()
    for gap in (0.0, 0.02):  # finished during the read; in bursts, paused as it was read
        _written_as_read(monkeypatch, {run_dir / "late.png": png}, gap)
        out = tmp_path / f"o{gap}"
        argv = ["run", str(run_dir), "--out", str(out), "--scheduler", address, "--send-bytes"]
        assert main([*argv, "-q"]) == 0, rows(out)
        table = pd.read_csv(out / "results.csv").set_index("file")
        assert table.loc["late.png", "ssim"] == 1.0
        assert table.loc["late.png", "notes"].startswith("read again after ")
        assert f"s: {WRITTEN}" in table.loc["late.png", "notes"]
        assert WRITTEN not in " ".join(table.loc[["same.png", "noisy.png"], "notes"].fillna(""))
        monkeypatch.undo()
    # The collection commands' features, from bytes read the same way: no ERROR row.
    _written_as_read(monkeypatch, {run_dir / "later.png": png})
    argv = ["duplicates", str(run_dir), "--out", str(tmp_path / "d"), "--no-cache", "-q"]
    assert main([*argv, "--scheduler", address, "--send-bytes"]) == 0
    groups = rows(tmp_path / "d", "groups.csv")
    assert "later.png" in groups and "ERROR" not in groups


def test_an_image_past_the_time_limit_on_a_cluster_is_its_error_row(cluster, tmp_path):
    """Dask has no per-task timeout: the client asks the workers which image they have
    been on too long. slow.png (0.6-0.7 s to read) past a 0.15 s limit is its ERROR row,
    its worker is restarted by its nanny (a hung read would hold its thread for ever),
    and every other image is compared, in run and in duplicates."""
    from test_time_limit import LIMIT, _folder

    address, watcher = cluster
    folder = _folder(tmp_path / "run")
    before = set(watcher.run(os.getpid).values())
    code = main(["run", str(folder), "--out", str(tmp_path / "o"), "--scheduler", address,
                 "--time-limit", str(LIMIT), "-q"])  # fmt: skip
    table = pd.read_csv(tmp_path / "o" / "results.csv").set_index("file")
    assert code == 1 and len(table) == 9
    assert table.at["slow.png", "status"] == "ERROR"
    assert table.at["slow.png", "error"].startswith(f"stopped after {LIMIT:g} s (time_limit)")
    others = table.drop(index="slow.png")
    assert (others["status"] != "ERROR").all() and others["ssim"].notna().all()
    watcher.wait_for_workers(2, timeout=60)
    assert set(watcher.run(os.getpid).values()) != before  # a worker was restarted

    code = main(["duplicates", str(folder), "--out", str(tmp_path / "d"), "--no-cache",
                 "--scheduler", address, "--time-limit", str(LIMIT), "-q"])  # fmt: skip
    groups = pd.read_csv(tmp_path / "d" / "groups.csv", keep_default_na=False).set_index("file")
    assert code == 1 and len(groups) == 10
    assert groups.at["slow.png", "error"].startswith(f"stopped after {LIMIT:g} s (time_limit)")
    assert (groups.drop(index="slow.png")["error"] == "").all()
    watcher.wait_for_workers(2, timeout=60)

    # Without a limit, the same file is an image like any other.
    code = main(["run", str(folder), "--out", str(tmp_path / "p"), "--scheduler", address,
                 "--time-limit", "0", "-q"])  # fmt: skip
    table = pd.read_csv(tmp_path / "p" / "results.csv").set_index("file")
    assert table.at["slow.png", "status"] != "ERROR" and np.isfinite(table.at["slow.png", "ssim"])


def test_ctrl_c_cancels_the_runs_tasks_on_the_cluster(cluster, tmp_path):
    address, watcher = cluster
    folder = noisy_run(tmp_path / "long", 60, (1024, 1024, 3), seed=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(tmp_path / "o"),
         "--scheduler", address, "-q"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(watcher.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopped by SIGINT" in err
    assert "Traceback" not in err and not (tmp_path / "o" / "results.csv").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = watcher.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        if not left:
            break
        time.sleep(0.1)
    assert left == 0


def test_an_unreachable_scheduler_is_one_line_and_status_2(tmp_path):
    port = free_port()  # nobody listens there
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "reporter", "run", str(SAMPLES), "--out", str(tmp_path / "o"),
         "--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "2"],
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and time.monotonic() - t < 20
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"reporter: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    )
    bad = subprocess.run([sys.executable, "-m", "reporter", "duplicates", str(SAMPLES)],
                         env=os.environ | {"REPORTER_SCHEDULER": "two words"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "from REPORTER_SCHEDULER" in bad.stderr
    # what a good one is, also for a number out of range, which looked like the form asked
    for given in ("local:0", "local:5000", "qc:99999"):
        bad = subprocess.run(
            [sys.executable, "-m", "reporter", "duplicates", str(SAMPLES), "--scheduler", given],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 2, bad.stderr
        assert "or local:N for N worker processes on this machine (1 to 1024)" in bad.stderr


def test_without_a_scheduler_dask_is_not_imported(tmp_path):
    code = (
        "import sys; from reporter.cli import main; "
        f"main(['run', {str(SAMPLES)!r}, '--out', 'o', '-q', '-j', '2']); "
        f"main(['duplicates', {str(SAMPLES)!r}, '--out', 'd', '-q', '--no-cache']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "REPORTER_SCHEDULER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_which_addresses_are_taken():
    from reporter.executor import valid_address

    for good in ("tcp://10.0.0.5:8786", "qc-cluster:8786", "tls://[::1]:8786", "local:4"):
        assert valid_address(good), good
    # Dask's client needs the port ('sched' alone, 'tcp://host' were ValueError tracebacks)
    # and cannot reach another process's inproc:// scheduler
    for bad in ("local:0", "local:x", "two words", "tcp://", "http://a/b", "[::1", "sched",
                "tcp://host", "-0", "inproc://x", "host:0", "host:99999"):  # fmt: skip
        assert not valid_address(bad), bad


def test_a_listener_that_is_no_scheduler_is_one_line_within_the_timeout(tmp_path):
    """Dask's client given the dashboard's port (an HTTP server) waited for ever whatever
    its timeout (dask/distributed#8071): a cron run hung. A server that answers with
    other bytes (an SSH banner) was a MemoryError traceback. Each is now one line, exit
    status 2, within --scheduler-timeout (here 2 s; the subprocess's 120 s only keeps a
    regression from holding the suite)."""
    import http.server

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    banner = socket.create_server(("127.0.0.1", 0))

    def greet() -> None:
        while True:
            try:
                conn, _ = banner.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=web.serve_forever, daemon=True).start()
    threading.Thread(target=greet, daemon=True).start()
    try:
        for port, said in (
            (web.server_address[1], "did not answer within 2 s: is it a Dask scheduler's port"),
            (banner.getsockname()[1], "did not answer as one (MemoryError reading its reply)"),
        ):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "reporter", "run", str(SAMPLES), "-q",
                 "--scheduler", f"127.0.0.1:{port}", "--scheduler-timeout", "2",
                 "--out", str(tmp_path / str(port))],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert said in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
            assert time.monotonic() - started < 60
    finally:
        web.shutdown()
        banner.close()


def test_an_address_the_client_refuses_is_one_line(capsys, tmp_path):
    """tls:// without Dask's TLS settings was a TypeError traceback ('TLS expects a
    ssl_context argument'), marked an internal error: now one line and exit status 2."""
    from reporter.cli import main

    argv = ["run", str(SAMPLES), "--scheduler", "tls://127.0.0.1:1", "--out", str(tmp_path)]
    code = main([*argv, "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(
        "reporter: error: cannot connect to the Dask scheduler at tls://127.0.0.1:1: TLS needs "
        "Dask's distributed.comm.tls settings: ca-file, client.cert and client.key"
    )
    assert len(err.splitlines()) == 1


def test_a_cluster_that_speaks_tls_gives_the_local_rows(tmp_path, capsys):
    """A scheduler and a worker started with TLS, as Dask's documentation has them, and
    the client's TLS in Dask's settings, as the README says: the run's rows are the local
    run's. The first probe of the scheduler (reporter's own, before the client's) spoke
    plain TCP to it whatever the settings: "TLS expects a ssl_context argument". An
    authority that did not sign the scheduler's certificate is one line, status 2."""
    import dask

    pem = str(Path(__file__).parent / "fixtures" / "tls-localhost.pem")  # its own authority
    tls = ["--tls-ca-file", pem, "--tls-cert", pem, "--tls-key", pem, "--no-dashboard"]
    address = f"tls://127.0.0.1:{free_port()}"
    log = (tmp_path / "dask.log").open("wb")
    procs = [
        subprocess.Popen([dask_command(), *command, *tls], stdout=log, stderr=subprocess.STDOUT)
        for command in (
            ["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]],
            ["worker", address, "--nthreads", "1", "--memory-limit", WORKER_MEMORY],
        )
    ]
    settings = {
        "distributed.comm.tls.ca-file": pem,
        "distributed.comm.tls.client.cert": pem,
        "distributed.comm.tls.client.key": pem,
    }
    argv = ["run", str(SAMPLES), "--scheduler", address, "--scheduler-timeout", "30", "-q"]
    try:
        with dask.config.set(settings):
            assert main([*argv, "--out", str(tmp_path / "tls")]) == 1, capsys.readouterr().err
            other = str(Path(__file__).parent / "fixtures" / "tls-elsewhere.pem")
            with dask.config.set({"distributed.comm.tls.ca-file": other}):
                code = main([*argv, "--out", str(tmp_path / "x"), "--scheduler-timeout", "5"])
    finally:
        for p in procs[::-1]:
            p.terminate()
            p.wait(timeout=20)
        log.close()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"reporter: error: cannot reach the Dask scheduler at {address}" in err
    assert main(["run", str(SAMPLES), "--out", str(tmp_path / "plain"), "-j", "1", "-q"]) == 1
    assert rows(tmp_path / "tls") == rows(tmp_path / "plain")


def test_the_plugin_loads_the_compiled_kernels_before_the_first_image(monkeypatch):
    """As the local workers' fork server does: a Dask worker's first image (and its time
    limit) does not carry the kernels' loading, 0.14 s (or compiling, without a cache)."""
    from reporter import _dask, compare, images, kernels, native
    from reporter.metrics import Reference

    warmed = []
    monkeypatch.setattr(kernels, "warm", warmed.append)
    # what else setup does to a worker process, not done to pytest's
    monkeypatch.setattr(native, "python_stderr_apart", lambda: None)
    monkeypatch.setattr(_dask, "_roomy_malloc", lambda: None)
    monkeypatch.setattr(compare, "quiet_opencv", lambda: None)
    monkeypatch.setattr(_dask.cv2, "setNumThreads", lambda n: None)
    for pixels in (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint16)):
        job = compare.Job(Reference(pixels), images.Geometry.of(pixels), 10**8, False)
        plugin = _dask.Prepare("reporter-test", job, embedding=False)
        plugin.setup(None)
        plugin.teardown(None)
    assert warmed == ["uint8", "uint16"]


def test_asking_for_late_images_never_waits_on_a_worker_that_cannot_answer(cluster, monkeypatch):
    """A task that holds the GIL stops its worker's event loop: asked which images are
    late, that worker cannot answer. The question gives up after ASK_TIMEOUT, so the run
    goes on collecting the other workers' results (without it the client waited until
    Dask's worker-ttl, 5 minutes, removed the worker)."""
    from reporter import _dask

    def holds_the_gil(_):  # nested, so that the workers get it by value
        import re

        return re.match(r"(a+)+$", "a" * 40 + "b")  # backtracks for hours, never releasing it

    address, watcher = cluster
    monkeypatch.setattr(_dask, "ASK_TIMEOUT", 1.0)
    hogged = sorted(watcher.scheduler_info()["workers"])[0]
    pid = watcher.run(os.getpid, workers=[hogged])[hogged]
    future = watcher.submit(holds_the_gil, 0, workers=[hogged], pure=False)
    try:
        deadline = time.monotonic() + 30
        while not watcher.processing().get(hogged) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # inside re.match now
        here = _dask.Cluster(watcher, None, address, False, None)
        t = time.monotonic()
        assert here._late(0.1) == []
        assert time.monotonic() - t < 5
    finally:
        watcher.cancel(future, force=True)
        os.kill(pid, signal.SIGKILL)  # its nanny starts another
        deadline = time.monotonic() + 60
        while hogged in watcher.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.wait_for_workers(2, timeout=60)
