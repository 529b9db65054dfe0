"""The command line, driven through main(argv): exit statuses, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, kill_a_worker, noisy, noisy_run, smooth_image, write

from reporter.cli import main


def call(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def test_all_pass_exits_0(capsys, run_dir, tmp_path):
    code, out, _ = call(capsys, "run", run_dir, "--out", tmp_path / "o")
    assert code == 0
    assert "PASS" in out
    assert (tmp_path / "o" / "results.csv").is_file()
    assert json.loads((tmp_path / "o" / "results.json").read_text())["exit_code"] == 0


def test_a_fail_exits_1(capsys, run_dir, tmp_path):
    write(run_dir / "other.png", smooth_image(99))
    code, out, _ = call(capsys, "run", run_dir, "--out", tmp_path / "o")
    assert code == 1
    assert "FAIL  other.png: ssim_64" in out


def test_an_error_row_exits_1(capsys, run_dir, tmp_path):
    (run_dir / "broken.png").write_bytes(b"junk")
    code, _, err = call(capsys, "run", run_dir, "--out", tmp_path / "o")
    assert code == 1
    assert "broken.png: ERROR not a readable image" in err


def test_a_warn_alone_exits_0(capsys, run_dir, tmp_path):
    code, out, _ = call(capsys, "run", run_dir, "--out", tmp_path / "o", "--warn", "ssim=0.99999")
    assert code == 0
    assert "WARN  noisy.png: ssim" in out


def test_limits_from_the_command_line_and_off(capsys, run_dir, tmp_path):
    write(run_dir / "other.png", smooth_image(99))
    code, _, _ = call(
        capsys,
        "run",
        run_dir,
        "--out",
        tmp_path / "o",
        "--fail",
        "ssim_64=off",
        "--warn",
        "ssim_64=off",
        "--fail",
        "phash=off",
        "--warn",
        "phash=off",
        "--fail",
        "signal_change=off",
        "--warn",
        "signal_change=off",
        "--fail",
        "occupancy_change=off",
        "--warn",
        "occupancy_change=off",
        "--no-outliers",
    )
    assert code == 0


def test_explicit_baseline_outside_the_inputs(capsys, tmp_path, baseline_img):
    ref = write(tmp_path / "reference.png", baseline_img)
    folder = tmp_path / "today"
    folder.mkdir()
    write(folder / "a.png", baseline_img)
    code, _, _ = call(capsys, "run", folder, "--baseline", ref, "--out", tmp_path / "o")
    assert code == 0
    meta = json.loads((tmp_path / "o" / "results.json").read_text())
    assert meta["baseline"]["file"] == "reference.png"
    assert len(meta["baseline"]["sha256"]) == 64
    assert [r["file"] for r in meta["rows"]] == ["a.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "{missing}"], "no such file or folder"),
        (["run", "{nobase}"], "no baseline: pass --baseline FILE"),
        (["run", "{run}", "--baseline", "{missing}"], "baseline not found"),
        (["run", "{run}", "--jobs", "-1"], "argument --jobs/-j: must be 0"),
        (["run", "{run}", "--jobs", "many"], "is not a whole number"),
        (["run", "{run}", "--formats", "csv,pdf"], "unknown format 'pdf'"),
        (["run", "{run}", "--warn", "ssim"], "is not METRIC=VALUE"),
        (["run", "{run}", "--warn", "sharpness=1"], "unknown metric 'sharpness'"),
        (["run", "{run}", "--warn", "ssim=high"], "'high' is not a number"),
        (["run", "{run}", "--warn", "ssim=0.5", "--fail", "ssim=0.9"], "must be at or below"),
        (["run", "{run}", "--max-pixels", "0"], "must be positive"),
        (["search", "{run}/same.png", "{run}", "--top=-3"], "argument --top: must be positive"),
        (["history", "X", "--last", "0"], "argument --last: must be positive"),
        # argparse stored [] for a value of -- given with = or attached: --by=-- was a
        # traceback, --jobs=-- and --out=-- silently their defaults
        (["duplicates", "{run}", "--by=--"], "argument --by: expected one argument"),
        (["run", "{run}", "--jobs=--"], "argument --jobs: expected one argument"),
        (["run", "{run}", "-j--"], "argument -j: expected one argument"),
        (["run", "{run}", "--out=--"], "argument --out: expected one argument"),
        # an argument's newline was printed as one: the line split in two in a cron log
        (["history", "X", "\n", "--csv"], "unrecognized arguments: \\n"),
        (["history", "X", "--history", "\n"], "no history at \\n (pass --history PATH)"),
        (["run", "{run}", "--max-file-mb", "inf"], "'inf' is not a finite number"),
        (["duplicates", "{run}", "--max-file-mb=-inf"], "'-inf' is not a finite number"),
        (["run", "{run}", "--lock-wait", "nan"], "'nan' is not a finite number"),
        (["run", "{run}", "--bits", "17"], "must be 8 to 16"),
        (["run", "{run}", "--bits", "twelve"], "is not a whole number"),
        (["run", "{run}", "--value-range", "1:0"], "must be two finite numbers LO:HI"),
        (["run", "{run}", "--value-range", "0..1"], "'0..1' is not LO:HI"),
        (["run", "{run}", "--value-range", "0:nan"], "must be two finite numbers LO:HI"),
        (["run", "{run}", "--config", "{missing}"], "config file not found"),
        (["run", "{run}", "--config", "{badtoml}"], "not valid TOML"),
        (["run", "{run}", "--config", "{badkey}"], "unknown key 'limts'"),
        (["run", "{run}", "--config", "{badvalue}"], "expected int, got 'two'"),
        (["run", "{onlybase}"], "no images to compare"),
        (["run", "{twobase}"], "several baseline files"),
        (["run", "{badbase}"], "not a readable image"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, run_dir, argv, message):
    nobase = tmp_path / "nobase"
    nobase.mkdir()
    write(nobase / "a.png", smooth_image(0))
    onlybase = tmp_path / "onlybase"
    onlybase.mkdir()
    write(onlybase / "baseline.png", smooth_image(0))
    twobase = tmp_path / "twobase"
    twobase.mkdir()
    write(twobase / "baseline.png", smooth_image(0))
    write(twobase / "Baseline.tif", smooth_image(0))
    write(twobase / "a.png", smooth_image(0))
    badbase = tmp_path / "badbase"
    badbase.mkdir()
    (badbase / "baseline.png").write_bytes(b"garbage")
    write(badbase / "a.png", smooth_image(0))
    files = {
        "badtoml": "[limits\nssim = ",
        "badkey": "[limts]\n",
        "badvalue": "[run]\njobs = 'two'\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    names = {
        "missing": tmp_path / "missing.png",
        "run": run_dir,
        "nobase": nobase,
        "onlybase": onlybase,
        "twobase": twobase,
        "badbase": badbase,
        **{name: tmp_path / f"{name}.toml" for name in files},
    }
    argv = [a.format(**names) for a in argv] + (
        ["--out", str(tmp_path / "o")] if argv[:1] == ["run"] else []
    )
    code, out, err = call(capsys, *argv)
    assert code == 2
    assert message in err, err
    assert len([line for line in err.splitlines() if "error" in line.lower()]) == 1, err
    assert not (tmp_path / "o" / "results.csv").exists()


def test_a_name_longer_than_the_system_allows_is_one_line_everywhere(capsys, tmp_path, run_dir):
    """pathlib's is_file() and is_dir() raise OSError for a name over 255 bytes
    (ENAMETOOLONG) instead of answering False: 'reporter run' given such an input, the
    history commands given such a --history, and --move-duplicates given such a folder
    ended in tracebacks (found by benchmarks/cli_fuzz.py). Each is one line, exit 2."""
    long = "x" * 300
    for argv, said in (
        (["run", long], f"{long}: File name too long"),
        (["run", str(run_dir / long)], f"{run_dir / long}: File name too long"),
        (["history", "X", "--history", long], f"{long}: File name too long"),
        (["duplicates", str(run_dir), "--move-duplicates", long, "--out", str(tmp_path / "d")],
         f"--move-duplicates {long}: File name too long"),
    ):  # fmt: skip
        code, _, err = call(capsys, *argv)
        assert code == 2 and err == f"reporter: error: {said}\n", err


def test_an_os_error_without_a_path_in_a_run_is_still_an_internal_error(
    capsys, tmp_path, run_dir, monkeypatch
):
    """Only an OSError that names a path is the input's one line; one without (a fork
    refused, a connection reset) is still the run's internal error, logged with its
    traceback, exit status 2, never an exception out of main."""
    from reporter import pipeline

    def fail(config, early=False):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(pipeline, "run", fail)
    assert main(["run", str(run_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "internal error: the run could not be done" in err and "Cannot allocate" in err


@pytest.mark.parametrize(
    ("argv", "module", "name"),
    [
        (["search", "q.png", "."], "reporter.collection.commands", "search"),
        (["duplicates", "."], "reporter.collection.commands", "duplicates"),
        (["cluster", "."], "reporter.collection.commands", "cluster"),
        (["history", "s"], "reporter.series.commands", "command"),
    ],
)
@pytest.mark.parametrize("error", [OSError(12, "Cannot allocate memory"), KeyError("bug")])
def test_every_command_logs_an_unforeseen_error_as_internal(
    capsys, monkeypatch, tmp_path, argv, module, name, error
):
    """A bug, or an OSError that names no path, in a collection or series command is
    the same as in a run: its traceback in the log under one 'internal error' line,
    exit status 2. It used to leave main as an exception: Python's traceback, status 1."""
    import importlib

    def fail(args):
        raise error

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.import_module(module), name, fail)
    assert main([*argv, "--jobs", "1"] if argv[0] != "history" else argv) == 2
    err = capsys.readouterr().err
    assert f"internal error: the {argv[0]} command could not be done" in err
    assert "Traceback" in err and type(error).__name__ in err


def test_paths_after_options_join_the_command_s_paths(capsys, run_dir, tmp_path):
    """argparse takes a list of positionals in one piece: `reporter run a.png --baseline
    b.png c.png` and `reporter search q.png --top 3 photos/` were 'unrecognized
    arguments', and a path after `--` was refused once an option came before it."""
    base, same, noisy = (run_dir / n for n in ("baseline.png", "same.png", "noisy.png"))
    dash = run_dir / "-dash.png"
    dash.write_bytes(same.read_bytes())
    out = tmp_path / "o"
    code, _, _ = call(capsys, "run", same, "--baseline", base, noisy, "--out", out, "-q",
                      "--jobs", "1", "--", dash)  # fmt: skip
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["file"] for r in rows) == ["-dash.png", "noisy.png", "same.png"]
    code, _, _ = call(capsys, "search", base, "--top", "2", "--by", "phash", run_dir,
                      "--out", tmp_path / "s", "--jobs", "1", "--no-cache", "-q")  # fmt: skip
    assert code == 0
    assert len((tmp_path / "s" / "results.csv").read_text().splitlines()) == 1 + 1 + 2
    for argv, said in (
        (["duplicates", run_dir, "--bogus", "x"], "unrecognized arguments: --bogus "
         "(see 'reporter duplicates --help')"),
        (["history", "S", "extra"], "unrecognized arguments: extra "
         "(see 'reporter history --help')"),
    ):  # fmt: skip
        code, _, err = call(capsys, *argv)
        assert code == 2 and err == f"reporter: error: {said}\n", err


def test_names_standard_output_cannot_encode_are_escaped_not_a_traceback(tmp_path):
    """Under PYTHONIOENCODING=ascii (or a Latin-1 locale: a Windows console's cp1252, a
    cron job's ISO-8859-1), a run's summary naming 日本.png ended in a UnicodeEncodeError
    traceback after the reports were written; so did the collection commands' lines."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "baseline.png").write_bytes((SAMPLES / "baseline.png").read_bytes())
    (folder / "日本.png").write_bytes((SAMPLES / "fault_debris.png").read_bytes())
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    said = {}
    commands = ((["run", str(folder), "--out", str(tmp_path / "o")], 1),
                (["duplicates", str(folder), "--out", str(tmp_path / "d")], 0))  # fmt: skip
    for argv, status in commands:
        done = subprocess.run([sys.executable, "-m", "reporter", *argv, "--jobs", "1"],
                              capture_output=True, env=env, timeout=300)  # fmt: skip
        err = done.stderr.decode("ascii")
        assert done.returncode == status and "Traceback" not in err, err
        said[argv[0]] = done.stdout.decode("ascii")
    assert "FAIL  \\u65e5\\u672c.png:" in said["run"]
    assert "Results:" in said["duplicates"]


def test_help_and_version_exit_0(capsys):
    assert main(["--version"]) == 0
    assert "reporter" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert "--baseline" in capsys.readouterr().out


def test_quiet_prints_no_summary(capsys, run_dir, tmp_path):
    code, out, err = call(capsys, "run", run_dir, "--out", tmp_path / "o", "-q")
    assert code == 0 and out == "" and "INFO" not in err


def test_default_out_is_a_new_timestamped_folder(capsys, run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert call(capsys, "run", run_dir)[0] == 0
    assert call(capsys, "run", run_dir)[0] == 0
    folders = sorted(p for p in (tmp_path / "reports").iterdir() if p.name != "latest")
    assert len(folders) == 2  # two runs in the same second still get a folder each
    for folder in folders:
        assert (folder / "results.json").is_file()
    latest = tmp_path / "reports" / "latest"
    assert latest.is_symlink() and latest.resolve() == folders[-1].resolve()


def test_outputs_are_replaced_whole(capsys, run_dir, tmp_path):
    out = tmp_path / "o"
    call(capsys, "run", run_dir, "--out", out)
    (run_dir / "noisy.png").unlink()
    call(capsys, "run", run_dir, "--out", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html",
        "report.xlsx",
        "results.csv",
        "results.json",
    ]
    assert "noisy.png" not in (out / "results.csv").read_text()


def test_python_dash_m_and_the_console_script(run_dir, tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "reporter", "run", str(run_dir), "--out", str(tmp_path / "a"), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    script = Path(sys.executable).with_name("reporter")
    if script.exists():  # present in any environment where the package is installed
        done = subprocess.run(
            [str(script), "run", str(run_dir), "--out", str(tmp_path / "b"), "--formats", "csv"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["results.csv"]


EXITING = """
import atexit, gc, json, runpy, sys
from importlib import metadata


def report():  # an exit handler of the caller's, as a coverage tool registers one
    script = [e.value for e in metadata.entry_points(group="console_scripts", name="reporter")]
    print(json.dumps({"frozen": gc.get_freeze_count() > 0, "script": script}))


atexit.register(report)
sys.argv = ["reporter", "--version"]
runpy.run_module("reporter", run_name="__main__")
"""


def test_the_command_leaves_its_objects_to_the_os_at_exit():
    """Python's garbage collection of a finished run's objects (numba's, pandas': 0.27-0.5 s
    on the benchmark's VM) is skipped: ``python -m reporter`` and the console script both
    go through ``cli.entry``, which freezes them once the command has returned. The
    outputs and the exit status are the command's, as the tests above show."""
    done = subprocess.run(
        [sys.executable, "-c", EXITING], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "frozen": True,
        "script": ["reporter.cli:entry"],
    }


TEARDOWN = """
import atexit, os, sys

_LOG = os.environ["REPORTER_TEST_EXIT_LOG"]
_ARGS = " ".join(sys.orig_argv)  # with -c's code: the fork server's, the tracker's
_ROLE = "server" if "forkserver" in _ARGS else "tracker" if "resource_tracker" in _ARGS else "run"


def _note(what, _open=open, _log=_LOG, _role=_ROLE, _pid=os.getpid()):
    with _open(_log, "a") as f:
        f.write(f"{_role} {_pid} {what}\\n")


class _Module:  # freed when the interpreter tears its modules down, and only then
    def __del__(self, _note=_note):
        _note("torn down")


_module = _Module()
atexit.register(_note, "exit handlers ran")  # registered before reporter's, as coverage's is
_note("started")
"""


def test_the_command_and_its_fork_server_exit_without_teardown(run_dir, tmp_path):
    """The run's process ends at once after Python's exit steps that matter (its
    threads joined, every ``atexit`` handler run, standard output and error flushed:
    ``cli.exit_now``), and so does the workers' fork server once the run's process is
    gone (``_forkserver._exit_now``): neither tears its interpreter down (30-52 ms in
    the run's process, 40-50 ms in the server, which holds the caller's stderr open
    meanwhile). A ``sitecustomize`` notes, in every Python process of the run,
    which of its exit steps ran."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TEARDOWN)
    log = tmp_path / "exits.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
        "REPORTER_TEST_EXIT_LOG": str(log),
    }
    out = tmp_path / "o"
    command = [sys.executable, "-m", "reporter", "run", str(run_dir), "--out", str(out)]
    done = subprocess.run(
        [*command, "--jobs", "2"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "PASS" in done.stdout  # the summary, flushed before the exit
    assert "exit status 0" in done.stderr.splitlines()[-1]  # the log's last line
    assert json.loads((out / "results.json").read_text())["rows"]
    notes = {}
    for line in log.read_text().splitlines():
        role, pid, what = line.split(" ", 2)
        notes.setdefault(role, set()).add(what)
    assert notes["run"] == {"started", "exit handlers ran"}
    assert notes["server"] == {"started"}  # its exit handlers: os._exit, as its workers'

    # Without the run's own module teardown skipped, the note would be there: the
    # sitecustomize can see it (a Python process that exits as usual).
    plain = subprocess.run(
        [sys.executable, "-c", "pass"], capture_output=True, text=True, env=env, timeout=60
    )
    assert plain.returncode == 0, plain.stderr
    assert "torn down" in log.read_text().splitlines()[-1]


def test_a_closed_standard_output_costs_the_summary_not_the_run(run_dir, tmp_path):
    """``reporter run ... | head``: the reader of standard output has gone when the
    summary is printed. The run is done and its reports are written: its exit status
    stands, and the log says in one line that the summary was not printed (it was a
    BrokenPipeError traceback and status 1)."""
    read, write_end = os.pipe()
    os.close(read)  # the reader has gone before the command writes
    out = tmp_path / "o"
    with subprocess.Popen(
        [sys.executable, "-m", "reporter", "run", str(run_dir), "--out", str(out)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    ) as done:
        os.close(write_end)
        err = done.stderr.read()
    assert done.returncode == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].endswith(
        "standard output was closed by its reader; the summary was not printed"
    )
    assert json.loads((out / "results.json").read_text())["rows"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_standard_output_on_a_full_disk_costs_the_summary_not_the_status(run_dir, tmp_path):
    """``reporter run ... >> /var/log/qc.log`` in a crontab, on a full disk: writing the
    summary fails with ENOSPC. It was a traceback and exit status 1 (flagged) for a run
    that passed; the summary of a collection command, the same. Now the status is the
    run's, and one WARNING says the summary was lost. A command whose printing is its
    product (``history``, ``baseline show``, ``--help``, ``--version``) is not done: one
    line, status 2. argparse's own printing ignored the failure: status 0, no text."""

    def command(*argv, unbuffered="1"):
        with open("/dev/full", "w") as full:
            return subprocess.run(
                [sys.executable, "-m", "reporter", *argv],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                cwd=tmp_path,
                env={**os.environ, "PYTHONUNBUFFERED": unbuffered},  # "": buffered, as cron's
            )

    for argv in (["run", str(run_dir), "--series", "S"], ["duplicates", str(run_dir)]):
        done = command(*argv, "--out", str(tmp_path / argv[0]), "--no-progress")
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1].endswith(
            "WARNING the summary could not be written to standard output (No space left on device)"
        )
        assert (tmp_path / argv[0] / "report.html").is_file()
    products = [["history", "S"], ["history", "S", "--csv"], ["baseline", "show", "S"]]
    products += [["--help"], ["run", "--help"], ["--version"]]
    for argv, unbuffered in itertools.product(products, ["1", ""]):
        done = command(*argv, unbuffered=unbuffered)
        assert done.returncode == 2 and "Traceback" not in done.stderr, argv
        assert done.stderr == (
            "reporter: error: standard output could not be written (No space left on device)\n"
        )


def _closing(*fds: int):
    """A child's start that closes these descriptors, as a shell's ``>&-`` does."""

    def close() -> None:
        for fd in fds:
            os.close(fd)

    return close


def test_a_run_started_without_standard_output_or_error_is_done(run_dir, tmp_path):
    """``reporter run ... >&-`` or ``2>&-`` (a daemon's start): Python's ``sys.stdout`` or
    ``sys.stderr`` is None. A run with its standard error closed ended in an internal
    error (status 2, no reports) at the progress bar's terminal check; one without
    standard output printed an AttributeError traceback for its summary."""
    command = [sys.executable, "-m", "reporter", "run", str(run_dir), "--jobs", "2"]
    no_stdout = subprocess.run(
        [*command, "--out", str(tmp_path / "a")],
        preexec_fn=_closing(1),
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert no_stdout.returncode == 0, no_stdout.stderr
    assert "Traceback" not in no_stdout.stderr
    assert no_stdout.stderr.splitlines()[-1].endswith(
        "no standard output; the summary was not printed"
    )
    neither = subprocess.run(
        [*command, "--out", str(tmp_path / "b")], preexec_fn=_closing(1, 2), timeout=120
    )
    assert neither.returncode == 0
    for out in (tmp_path / "a", tmp_path / "b"):
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert sorted(r["file"] for r in rows) == ["noisy.png", "same.png"]


FILLING = """
import os, sys
from reporter import cli


def command():  # stands for the command: what it finds once cli.entry has started it
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
    null = os.stat(os.devnull)
    filled = [os.fstat(n).st_rdev == null.st_rdev for n in (1, 2)]
    os.write(fd, f"{fd} {filled}".encode())
    os.close(fd)
    return 0


cli.main = command
cli.entry()
"""


def test_a_closed_standard_descriptor_is_never_a_file_of_the_run(tmp_path):
    """Started with descriptors 1 and 2 closed, the command (``cli.entry``) opens the
    null device on them before anything else (``cli._fill_standard_descriptors``): the
    first file the run opens does not take number 2, where OpenCV and libpng write
    their messages."""
    seen = tmp_path / "seen"
    done = subprocess.run(
        [sys.executable, "-c", FILLING, str(seen)], preexec_fn=_closing(1, 2), timeout=60
    )
    assert done.returncode == 0
    fd, filled = seen.read_text().split(" ", 1)
    assert int(fd) > 2
    assert filled == "[True, True]"


def test_any_command_whose_output_has_no_reader_says_so_in_one_line(run_dir, tmp_path):
    """A collection command's reports are written before its summary, as a run's: with
    its standard output closed it keeps its status, and one warning says the summary
    was lost (it was status 2, "not done", for reports that were done). A command whose
    printing is its product (``history``) ends with one line and status 2. Neither
    prints a traceback; the rest of the output goes nowhere."""

    def command(*argv):
        read, write_end = os.pipe()
        os.close(read)  # the reader has gone before the command writes
        with subprocess.Popen(
            [sys.executable, "-m", "reporter", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        ) as done:
            os.close(write_end)
            err = done.stderr.read()
        assert "Traceback" not in err
        return done.returncode, err.splitlines()[-1]

    out = str(tmp_path / "d")
    code, last = command("duplicates", str(run_dir), "--out", out, "--jobs", "1")
    assert code == 0 and last.endswith(
        "WARNING standard output was closed by its reader; the summary was not printed"
    )
    assert (tmp_path / "d" / "groups.csv").is_file()
    assert main(["run", str(run_dir), "--series", "S", "--out", str(tmp_path / "o"), "-q"]) == 0
    code, last = command("history", "S")
    assert code == 2
    assert last == "reporter: error: standard output was closed before all of it was written"


def test_a_broken_pipe_that_is_not_standard_outputs_is_not_called_so(
    capsys, monkeypatch, run_dir, tmp_path
):
    """A BrokenPipeError from another pipe or socket (a worker's, a server's), while
    standard output still has its reader: one line that does not blame standard output,
    status 2, and standard output left as it was."""
    from reporter.collection import commands

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(commands, "duplicates", broken)
    read, write_end = os.pipe()
    stdout = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        status = main(["duplicates", str(run_dir), "--out", str(tmp_path / "d"), "--jobs", "1"])
        print("still here", file=stdout, flush=True)  # not sent to the null device
    finally:
        stdout.close()
    with os.fdopen(read) as reader:
        assert reader.read() == "still here\n"
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "reporter: error: a pipe or connection was closed by its other end (Broken pipe); "
        "the command could not be done"
    )


COLLECTING = """
import atexit, gc, json, sys
from reporter import cli

seen = []  # at each collection: were the run's modules imported, and frozen?


def watch(phase, info):
    if phase == "start":
        seen.append(("reporter.pipeline" in sys.modules, gc.get_freeze_count() > 0))


def report():  # run by the command's exit (cli.exit_now), as every exit handler is
    print(json.dumps({"collections": len(seen), "kinds": sorted(set(seen))}))


gc.callbacks.append(watch)
atexit.register(report)
sys.argv = ["reporter", "run", sys.argv[1], "--out", sys.argv[2], "--jobs", "1", "-q"]
cli.entry()
"""


def test_the_command_imports_with_the_garbage_collector_off(run_dir, tmp_path):
    """The ``reporter`` command turns the collector off until its modules are imported,
    then freezes them and turns it back on for the run (``cli._imported``): no
    collection runs during the imports (67-98 ms of them on the benchmark's VM), every
    later one skips the imported objects, and the run itself is collected as ever."""
    done = subprocess.run(
        [sys.executable, "-c", COLLECTING, str(run_dir), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["collections"] > 0  # on again for the run
    assert seen["kinds"] == [[True, True]]  # none before the imports were done and frozen


def test_noisy_run_with_jobs_2_equals_jobs_1(capsys, tmp_path, baseline_img):
    folder = tmp_path / "many"
    folder.mkdir()
    write(folder / "baseline.png", baseline_img)
    for i in range(6):
        write(folder / f"img{i}.png", noisy(baseline_img, 0.01 * i, seed=i))
    (folder / "broken.png").write_bytes(b"junk")
    call(capsys, "run", folder, "--out", tmp_path / "j1", "--jobs", "1")
    call(capsys, "run", folder, "--out", tmp_path / "j2", "--jobs", "2")
    one = json.loads((tmp_path / "j1" / "results.json").read_text())["rows"]
    two = json.loads((tmp_path / "j2" / "results.json").read_text())["rows"]
    assert one == two
    assert np.isclose(one[1]["ssim"], two[1]["ssim"])


def test_workers_start_clean_after_opencv_threads_ran_in_the_parent(run_dir, tmp_path):
    """Forked workers used to deadlock once OpenCV's thread pool had run in the parent."""
    code = f"""
import cv2, numpy as np
from pathlib import Path
from reporter import pipeline
from reporter.config import Config
cv2.setNumThreads(2)
cv2.GaussianBlur(np.ones((3000, 3000), np.float32), (11, 11), 1.5)
out = Path({str(tmp_path / "o")!r})
r = pipeline.run(Config(inputs=(Path({str(run_dir)!r}),), out=out, jobs=2))
print("exit", r.exit_code)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exit 0"


def test_the_fork_server_starts_before_the_heavy_imports(run_dir, tmp_path):
    """With workers wanted, the workers' fork server starts before the command imports
    OpenCV, numba and pandas (about 0.6 s), so that it starts meanwhile, not after; the
    run is the same as ever."""
    code = f"""
import sys
from reporter import cli, pool
seen = []
real = pool.start
def spy(*args):
    seen.append((any(m in sys.modules for m in ("cv2", "numba", "pandas")), args))
    return real(*args)
pool.start = spy
code = cli.main(["run", {str(run_dir)!r}, "--out", {str(tmp_path / "o")!r}, "--jobs", "2", "-q"])
print(code, seen[0])
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 (False, (2, 2, 'uint8'))", done.stdout
    assert (tmp_path / "o" / "results.csv").is_file()


@pytest.mark.parametrize("kind", ["photo", "dot plot"])
def test_a_run_with_workers_never_loads_the_kernels_in_its_own_process(tmp_path, kind):
    """With workers, the run's process prepares only the baseline's small statistics
    (Reference.SMALL) and never loads numba (0.45 s of its import and type system): the
    ink per cell, computed by a compiled kernel, is left to the workers. Photos and dot
    plots both: the signal metrics matter most for the second."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(4)
    if kind == "photo":
        base = smooth_image(4, (256, 256, 3))
    else:
        base = np.full((256, 256, 3), 255, np.uint8)
        base[rng.integers(0, 256, 300), rng.integers(0, 256, 300)] = (200, 40, 40)
    write(folder / "baseline.png", base)
    for name in ("a.png", "b.png", "c.png"):
        write(folder / name, base)
    code = f"""
import sys
from reporter import cli
code = cli.main(["run", {str(folder)!r}, "--out", {str(tmp_path / "o")!r}, "--jobs", "2", "-q"])
print(code, "numba" in sys.modules, "reporter.kernels" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 False False", done.stdout
    rows = list(csv.DictReader((tmp_path / "o" / "results.csv").open()))
    assert len(rows) == 3 and {r["signal_change"] for r in rows} == {"0.0"}


def test_the_early_start_reads_a_huge_baselines_header_quietly(tmp_path):
    """The guess reads the baseline's header only: a 20000 x 20000 PNG (a decompression
    bomb to Pillow) is read for its size, with no warning on stderr, and the run wants
    workers if two of them fit in memory at that size (20 GB each: on most machines they
    do not, and none start); the run then refuses the baseline itself, with one line
    (max_pixels)."""
    import struct
    import zlib

    folder = tmp_path / "huge"
    folder.mkdir()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    )
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")  # cut short
    (folder / "baseline.png").write_bytes(png)
    for name in ("a.png", "b.png"):
        write(folder / name, np.zeros((8, 8, 3), np.uint8))
    code = f"""
import sys
from reporter import cli, pool
from reporter import machine
seen, sizes = [], []
real, fit = pool.start, machine.workers_that_fit
pool.start = lambda *args: seen.append(args) or real(*args)
machine.workers_that_fit = lambda *args: sizes.append(args[:3]) or fit(*args)
code = cli.main(["run", {str(folder)!r}, "--out", {str(tmp_path / "o")!r}, "-q"])
room = fit(20000 * 20000, 3, 1, machine.available_memory())
wanted = machine.cores() > 1 and (room is None or room >= 2)
print(code, sizes[0] == (20000 * 20000, 3, 1), bool(seen) == wanted, not seen or seen[0][0] > 1)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2 True True True", (done.stdout, done.stderr)
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "max_pixels" in done.stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_worker_costs_no_rows(tmp_path, caplog):
    """SIGKILL a worker mid-run, as the out-of-memory killer would: every image still gets
    its comparison, and the log says what happened."""

    from reporter import pipeline
    from reporter.config import Config

    folder = noisy_run(tmp_path / "many", 40)
    killed: list[int] = []
    thread = kill_a_worker(killed)
    result = pipeline.run(Config(inputs=(folder,), out=tmp_path / "o", jobs=2, progress=False))
    thread.join()
    assert killed, "no worker was seen"
    assert "a worker process died; trying" in caplog.text
    df = result.table
    assert len(df) == 40
    assert (df["status"] != "ERROR").all(), df[df["status"] == "ERROR"]["error"].tolist()
    assert df["ssim"].notna().all()


def _run_with_stderr(argv: list[str], stderr) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reporter", *argv],
        stdout=subprocess.PIPE,
        stderr=stderr,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_progress_bar_only_on_a_terminal(tmp_path, baseline_img):
    folder = tmp_path / "many"
    folder.mkdir()
    write(folder / "baseline.png", baseline_img)
    for i in range(12):  # more than a handful
        write(folder / f"img{i:02d}.png", noisy(baseline_img, 0.01, seed=i))
    argv = ["run", str(folder), "--jobs", "1"]
    # a terminal: the bar is drawn
    code, on_tty = _on_a_terminal([*argv, "--out", str(tmp_path / "tty")])
    assert code == 0
    assert "12/12" in on_tty and "img/s" in on_tty
    # a pipe or a file (cron): no bar, only log lines
    done = _run_with_stderr([*argv, "--out", str(tmp_path / "pipe")], subprocess.PIPE)
    piped = done.stderr.decode()
    assert "img/s" not in piped and "\r" not in piped
    assert "INFO comparing 12 image(s)" in piped


def _on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """The command's exit status, and what it wrote to standard error, a terminal."""
    import fcntl
    import pty
    import struct
    import termios

    primary, secondary = pty.openpty()
    # a new pseudo-terminal is 0 x 0; a real one has a size (tqdm draws to its width)
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    done = _run_with_stderr(argv, secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return done.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize("where", [["--jobs", "1"], ["--jobs", "2"], ["--scheduler", "local:2"]])
def test_collection_commands_show_progress_on_a_terminal_only(tmp_path, baseline_img, where):
    """A curator's duplicates over a large folder shows how far it is, as run does;
    --no-progress and a pipe (cron) show no bar. In this process, in workers, on Dask."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        write(folder / f"img{i:02d}.png", noisy(baseline_img, 0.01, seed=i))
    argv = ["duplicates", str(folder), *where, "--no-cache", "--formats", "csv"]
    code, on_tty = _on_a_terminal([*argv, "--out", str(tmp_path / "tty")])
    assert code == 0
    assert "12/12" in on_tty and "img/s" in on_tty
    code, on_tty = _on_a_terminal([*argv, "--out", str(tmp_path / "no"), "--no-progress"])
    assert code == 0 and "img/s" not in on_tty and "12/12" not in on_tty
    assert "computing the features of 12 file(s)" in on_tty  # the log still goes there
    done = _run_with_stderr([*argv, "--out", str(tmp_path / "pipe")], subprocess.PIPE)
    assert done.returncode == 0
    assert "img/s" not in done.stderr.decode() and "\r" not in done.stderr.decode()


def test_summary_shows_the_three_most_severe_reasons_and_counts_the_rest(capsys, run_dir, tmp_path):
    write(run_dir / "other.png", smooth_image(99))
    argv = ["run", run_dir, "--out", tmp_path / "o"]
    # Four WARN limits configured before the FAIL ones: the FAILs must still lead.
    for metric in ("ssim", "ms_ssim", "psnr", "cosine"):
        argv += ["--warn", f"{metric}=0.99999" if metric != "psnr" else "psnr=99"]
    code, out, _ = call(capsys, *argv)
    line = next(line for line in out.splitlines() if "other.png" in line)
    shown = line.split(": ", 1)[1].split(" (+")[0].split("; ")
    with open(tmp_path / "o" / "results.csv", newline="", encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["file"] == "other.png")
    reasons = row["reasons"].split("; ")  # the CSV keeps every reason, in the same order
    assert len(reasons) > 3 and reasons[:3] == shown and "cosine" in row["reasons"]
    levels = [" fail limit " in r for r in reasons]
    assert levels == sorted(levels, reverse=True) and levels[0]  # FAIL-level ones first
    rest = levels[3:]
    assert line.endswith(f"(+{len(rest)} more: {len(rest) - sum(rest)} WARN)")
    assert levels == sorted(levels, reverse=True)


def test_a_broken_user_template_or_eml_path_is_one_line_and_exit_2(capsys, run_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html.j2").write_text("<p>\n{% for x in %}</p>", encoding="utf-8")
    code, _, err = call(capsys, "run", run_dir, "--out", tmp_path / "o", "--templates", mine)
    assert code == 2
    assert "report.html.j2 (line 2): Expected an expression" in err
    code, _, err = call(
        capsys, "run", run_dir, "--out", tmp_path / "o2", "--eml", tmp_path / "missing" / "qc.eml"
    )
    assert code == 2
    assert f"cannot write {tmp_path / 'missing' / 'qc.eml'}: No such file or directory" in err


def _refuse(monkeypatch, locked):
    """Root reads every folder, so the OS's refusal is made for one folder: os.walk and
    the listing of a single folder both go through os.scandir."""
    real = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_sub_folder_is_an_error_row_not_a_silent_pass(
    capsys, run_dir, tmp_path, monkeypatch
):
    locked = run_dir / "locked"
    locked.mkdir()
    write(locked / "fail.png", smooth_image(99))  # would FAIL, if it were seen
    _refuse(monkeypatch, locked)
    code, out, err = call(capsys, "run", run_dir, "--recursive", "--out", tmp_path / "o")
    assert code == 1
    assert f"ERROR {locked}/: cannot read this folder: Permission denied" in out
    assert "no images" not in out + err
    meta = json.loads((tmp_path / "o" / "results.json").read_text())
    errors = [r for r in meta["rows"] if r["status"] == "ERROR"]
    assert [r["path"] for r in errors] == [str(locked)]
    assert {r["file"] for r in meta["rows"] if r["status"] != "ERROR"} == {"same.png", "noisy.png"}


def test_a_recursive_run_leaves_out_reporters_own_folders(capsys, run_dir, monkeypatch):
    """Run from inside the folder it compares, as a cron line 'cd /data/qc && reporter run
    . -r --series X' does, the history (./reports/history.sqlite) keeps a copy of the
    baseline under ./reports/baselines: the next run found it as an image, gave it a row
    (PSNR inf) and recorded it in the series as a slot of its own. Its reports, the
    history's copies and locks, and an --out folder inside the inputs are now left out,
    each with a log line; a folder of them given as an input is still compared."""
    monkeypatch.chdir(run_dir)
    for n in (1, 2):
        code, _, err = call(capsys, "run", ".", "-r", "--series", "X", "--out", f"o{n}")
        assert code == 0, err
    rows = json.loads((run_dir / "o2" / "results.json").read_text())["rows"]
    assert sorted(r["file"] for r in rows) == ["noisy.png", "same.png"]
    assert "INFO left out ./reports/baselines: the series history's copies of its baselines" in err
    assert "INFO left out ./o1" not in err  # not this run's --out: it holds no images
    code, _, err = call(capsys, "run", ".", "-r", "--out", "o1")  # no series: reports as out
    assert "INFO left out ./o1: reporter's reports (out)" in err
    copies = run_dir / "reports" / "baselines"
    code, _, err = call(capsys, "run", copies, "-r", "--baseline", "baseline.png", "--out", "o3")
    assert code == 0 and len(json.loads((run_dir / "o3" / "results.json").read_text())["rows"]) == 1


def test_exclude_patterns_are_matched_from_the_right_and_case_by_case():
    from pathlib import PurePosixPath as P

    from reporter.inputs import excluded_by

    def out(path: str, *patterns: str, folder: bool = False) -> bool:
        return excluded_by(P(path), patterns, folder) is not None

    assert out("a_thumb.png", "*_thumb.png") and out("d/e/a_thumb.png", "*_thumb.png")
    assert out("d/previews/x.png", "previews/*.png") and out("previews/x.png", "previews/*.png")
    assert not out("previews/sub/x.png", "previews/*.png")  # * never crosses a /
    assert not out("A_THUMB.png", "*_thumb.png")  # case by case, as the file system
    assert out("d/previews", "previews/", folder=True)
    assert not out("d/previews", "previews/")  # a trailing / matches folders only
    assert out("d/previews", "previews", folder=True) and out("previews", "previews")
    assert not out("x.png", "y.png", "*.tif")
    assert excluded_by(P("x.png"), ("*.jpg", "x.*")) == "matches --exclude x.*"


def test_exclude_leaves_out_files_and_folders_it_matches(capsys, run_dir, tmp_path):
    """A lab's export folder holds previews and thumbnails beside the plots: each
    pattern leaves them out, listed as skipped with the pattern; a folder it matches
    is not entered at all (its FIFO, if read, would hang the walk's reader)."""
    previews = run_dir / "day2" / "previews"
    previews.mkdir(parents=True)
    write(previews / "p.png", smooth_image(99))  # would FAIL, if compared
    os.mkfifo(previews / "pipe.png")  # a skipped "not a regular file" WARNING, if entered
    write(run_dir / "day2" / "a_thumb.png", smooth_image(98))
    write(run_dir / "day2" / "kept.png", smooth_image(0))
    argv = ["run", run_dir, "-r", "--out", tmp_path / "o", "--exclude", "previews/"]
    code, out, err = call(capsys, *argv, "--exclude", "*_thumb.png")
    assert code == 0, out + err
    meta = json.loads((tmp_path / "o" / "results.json").read_text())
    assert sorted(r["file"] for r in meta["rows"]) == ["day2/kept.png", "noisy.png", "same.png"]
    assert meta["skipped"] == [
        {"path": str(previews), "reason": "matches --exclude previews/ (a folder, not entered)"},
        {"path": str(run_dir / "day2" / "a_thumb.png"), "reason": "matches --exclude *_thumb.png"},
    ]
    assert "not a regular file" not in err
    assert (
        "2 files skipped (matches --exclude *_thumb.png: 1; "
        "matches --exclude previews/ (a folder, not entered): 1)" in out
    )
    assert f"INFO left out 2 file(s) or folder(s) by --exclude: {previews}, " in err
    # A file a shell's glob named is left out by its name too.
    code, out, err = call(capsys, "run", *sorted(run_dir.glob("*.png")), "--exclude", "noisy*")
    assert code == 0 and "1 file skipped (matches --exclude noisy*: 1)" in out
    # Nothing left: the line says the patterns did it, not that the folder is empty.
    code, out, err = call(capsys, "run", run_dir, "--exclude", "*.png", "--out", tmp_path / "e")
    assert code == 2
    assert f"no images in {run_dir} (3 file(s) or folder(s) left out by --exclude)" in err
    code, out, err = call(capsys, "duplicates", run_dir, "--exclude", "*.png")
    assert code == 2 and "left out by --exclude" in err


@pytest.mark.parametrize("pattern", ["", "/", "/data/*.png", "a\nb"])
def test_an_exclude_pattern_that_cannot_match_is_refused(capsys, tmp_path, run_dir, pattern):
    code, _, err = call(capsys, "run", run_dir, "--exclude", pattern)
    assert code == 2 and "--exclude: must be a relative path pattern" in err
    (tmp_path / "c.toml").write_text(
        f"[input]\nexclude = [{json.dumps(pattern)}]\n", encoding="utf-8"
    )
    code, _, err = call(capsys, "run", run_dir, "--config", tmp_path / "c.toml")
    assert code == 2 and "exclude must be a relative path pattern" in err, err


def test_an_unreadable_folder_named_directly(capsys, run_dir, tmp_path, monkeypatch):
    locked = tmp_path / "today"
    locked.mkdir()
    write(locked / "a.png", smooth_image(99))
    _refuse(monkeypatch, locked)
    baseline = run_dir / "baseline.png"
    code, out, err = call(
        capsys, "run", locked, "--baseline", baseline, "--out", tmp_path / "o", "--formats", "csv"
    )
    assert code == 1 and "cannot read this folder: Permission denied" in out
    assert "no images" not in out + err
    # With nothing else to go on (the baseline was in it): one line, status 2.
    code, out, err = call(capsys, "run", locked, "--out", tmp_path / "o2")
    assert code == 2 and f"cannot read the folder {locked}: Permission denied" in err
    assert "no baseline" not in err and "Traceback" not in err


def test_names_cannot_forge_lines_in_the_summary_or_the_log(capsys, run_dir, tmp_path):
    forged = "evil\nFAIL  forged.png"
    write(run_dir / "tmp.png", smooth_image(99))
    (run_dir / "tmp.png").rename(run_dir / forged)  # a FAIL: listed in the summary
    (run_dir / "bad\rERROR x\x1b[2J.png").write_bytes(b"junk")  # an ERROR: in the log
    code, out, err = call(capsys, "run", run_dir, "--out", tmp_path / "o")
    assert code == 1
    assert not any(line.startswith("FAIL  forged") for line in out.splitlines())
    assert "FAIL  evil\\nFAIL  forged.png: " in out
    assert "bad\\rERROR x\\x1b[2J.png" in out and "\x1b" not in out + err
    assert all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ ", line) for line in err.splitlines()
    )


def test_eml_given_a_folder_names_the_folder(capsys, run_dir, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    code, _, err = call(capsys, "run", run_dir, "--out", tmp_path / "o", "--eml", folder)
    assert code == 2 and f"cannot write {folder}: it is a folder" in err
    assert ".part" not in err


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["history", "--help"], ["run", "x", "--fail", "nope=1"], []],
    ids=["help", "run help", "history help", "bad metric", "no command"],
)
def test_help_and_argument_errors_load_neither_opencv_nor_pandas(argv):
    """`reporter --help` answers at once: importing OpenCV, numpy and pandas takes a
    quarter of a second before anything is printed."""
    code = (
        "import sys\n"
        "from reporter.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "heavy = [m for m in ('cv2', 'numpy', 'pandas', 'openpyxl', 'jinja2')"
        " if m in sys.modules]\n"
        "print(status, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    status, heavy = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status in ("0", "2")
    assert heavy == "[]"


def test_every_declared_metric_is_computed():
    from reporter import catalog, metrics

    assert list(metrics._COMPUTE) == list(catalog.METRICS)


def test_a_bare_reporter_shows_what_it_can_do(capsys):
    code, out, err = call(capsys)
    assert code == 2
    assert "usage: reporter" in err and "exit statuses:" in err
    assert err.strip().splitlines()[-1] == (
        "reporter: error: choose a command: "
        "run, search, duplicates, cluster, baseline, history, accept"
    )
    for command in ("run", "search", "duplicates", "cluster", "baseline", "history", "accept"):
        assert re.search(rf"^    {command}\s", err, re.M), command


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["search"],
        ["duplicates"],
        ["cluster"],
        ["baseline", "set"],
        ["baseline", "show"],
        ["history"],
        ["accept"],
    ],
)
def test_every_help_has_examples_exit_statuses_and_helped_positionals(capsys, argv):
    from reporter.cli import build_parser

    parser = build_parser()
    for name in argv:  # down to the subcommand's own parser
        parser = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[name]
    text = parser.format_help()
    assert "examples:" in text and "exit statuses:" in text, argv
    assert "reporter " + argv[0] in text.split("examples:")[1]
    positionals = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    assert positionals and all(a.help for a in positionals), argv


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "{empty}", "--jobs", "x"], "argument --jobs/-j: 'x' is not a whole number"),
        (["run", "{empty}"], "no images in"),
        (["run", "{empty}", "--config", "{missing}"], "config file not found"),
        (["history", "S", "--history", "{missing}"], "no history"),
    ],
)
def test_every_error_that_ends_a_command_has_one_prefix(capsys, tmp_path, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    names = {"empty": empty, "missing": tmp_path / "missing.toml"}
    code, out, err = call(capsys, *[a.format(**names) for a in argv])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("reporter: error: ") and message in line, err


def test_a_small_run_starts_no_worker_processes(run_dir, tmp_path, monkeypatch):
    """Called from Python, where the fork server starts only once the run wants it, workers
    cost more than they save on small runs; a run with less work than
    config.WORKERS_PAY_MPX stays in one process unless --jobs asks otherwise."""
    from reporter import compare, pipeline
    from reporter.config import WORKERS_PAY_MPX, Config

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started for a small run")

    monkeypatch.setattr(compare, "ProcessPoolExecutor", no_pool)
    result = pipeline.run(Config(inputs=(run_dir,), out=tmp_path / "o", progress=False))
    assert result.meta["config"]["jobs"] == 1
    big = int(WORKERS_PAY_MPX * 1e6)
    assert Config().effective_jobs(1, big) == (os.cpu_count() or 1)
    assert Config().effective_jobs(2, big // 4) == 1
    assert Config(jobs=3).effective_jobs(1, 1) == 3  # asked for: always
    assert Config().effective_jobs(2, big // 4, early=True) == (os.cpu_count() or 1)


def test_from_the_command_line_a_small_run_uses_every_core(run_dir, tmp_path):
    """From the command line the fork server starts before the command's own imports and
    this process never loads the compiled kernels: workers pay at any size there
    (benchmarks/workers.py: 1.05-1.16 x at 0.002-4.2 Mpx of work on 2 cores), so a
    run far under WORKERS_PAY_MPX uses every core."""
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-m", "reporter", "run", str(run_dir), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "results.json").read_text())
    assert meta["config"]["jobs"] == (os.cpu_count() or 1)


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="spawned workers import the main module again, as Python has them do",
)
@pytest.mark.parametrize("how", ["path", "module"])
def test_a_script_without_the_main_guard_runs_and_its_workers_do_not_run_it(tmp_path, how):
    """A script that calls ``pipeline.run(jobs=2)`` with no ``if __name__ == "__main__":``
    guard, started as ``python script.py`` or as ``python -m script``: multiprocessing
    would have each worker run the script again before its first image (where its
    ``pipeline.run`` dies as it starts: every image was an ERROR row). The fork server
    marks the script as its own main module, so no worker runs it: it prints its line
    once, and every image is compared. The same saves each worker of the ``reporter``
    console script the import of the command line (75-115 ms)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (256, 256, 3), np.uint8)
    write(folder / "baseline.png", base)
    for name in ("a.png", "b.png"):
        write(folder / name, base)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os, sys\n"
        "print('SCRIPT RAN IN', os.getpid(), file=sys.stderr)\n"
        "from pathlib import Path\n"
        "from reporter import pipeline\n"
        "from reporter.config import Config\n"
        f"result = pipeline.run(Config(inputs=(Path({str(folder)!r}),),"
        f" out=Path({str(tmp_path / 'o')!r}), jobs=2, progress=False))\n"
        "print('STATUS', sorted(result.table['status']))\n"
    )
    command = [str(script)] if how == "path" else ["-m", "unguarded"]
    done = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert "STATUS ['PASS', 'PASS']" in done.stdout, (done.stdout, done.stderr)
    assert done.stderr.count("SCRIPT RAN IN") == 1, done.stderr
    assert "could not start" not in done.stderr, done.stderr
    assert (tmp_path / "o" / "report.html").is_file()


DIES_AS_IT_STARTS = """
import operator
from reporter import compare


class Bomb:
    def __reduce__(self):  # unpickled by each worker as it starts: ZeroDivisionError
        return operator.truediv, (1, 0)


def died(item, why=""):
    return f"died {item}"


if __name__ == "__main__":
    bar = compare.progress_bar(3, False)
    # The bomb comes before 1 MB of start-up data: the worker dies before reading it all,
    # and the parent's write of it fails (BrokenPipeError from submit).
    out = compare.in_workers(str, print, (Bomb(), b"x" * 1_000_000), [1, 2, 3], 2, bar, died)
    print("RESULTS", out)
"""


def test_workers_that_die_as_they_start_give_rows_not_a_traceback(tmp_path):
    """A worker that dies as it starts (here: its start-up data cannot be unpickled) may
    reach the parent as a broken pool or, when it is gone before reading all of its
    start-up data, as a BrokenPipeError from ``submit``: either way each item gets the
    ``died`` row after the retries, nothing prints a traceback, and the worker's error is
    one line."""
    script = tmp_path / "dies.py"
    script.write_text(DIES_AS_IT_STARTS)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert "RESULTS ['died 1', 'died 2', 'died 3']" in done.stdout, (done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if "could not start" in ln]
    assert lines and all("ZeroDivisionError" in ln for ln in lines), done.stderr


def test_the_readmes_example_run_is_what_the_command_prints(tmp_path, capsys):
    """The README's first example output ("What a run gives you") is the command's own, but
    for the run folder's time: its limits once went stale (0.350 for 0.360)."""
    readme = (SAMPLES.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ reporter run sample_images\n", 1)[1].split("```", 1)[0]
    assert main(["run", str(SAMPLES), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert printed.splitlines()[:-1] == block.splitlines()[:-1]
    assert block.splitlines()[-1].startswith("Results: reports/")
