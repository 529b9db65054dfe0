"""Random command lines against the installed ``reporter``: every one must end with an
exit status of 0-3, and a status of 2 with exactly one error line; no traceback, no
"internal error", no command that outlives its time.

Run:  python benchmarks/cli_fuzz.py [--runs 400] [--seed 1]

Each run gets a fresh copy of three sample images (a command may move or copy them),
a random command (run, search, duplicates, cluster, history, baseline, accept), and up
to four random options, each with a value drawn from odd ones: empty, negative, NaN,
huge, non-ASCII, a newline, ``--``, paths to a device or to nothing, time zones that do
not exist, and addresses of two loopback servers this script starts that are not what
the option asks for (an HTTP server, as a Dask dashboard is, and one that greets with
an SSH banner). It prints each failing command with the end of its stderr, and exits 1
if any failed. docs/reliability.md lists what it found.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
REPORTER = [sys.executable, "-m", "reporter"]

VALUES = [
    "", "0", "-1", "1", "2", "1e309", "nan", "inf", "-inf", "abc", "ü", "\n", "0.5", "-0",
    "999999999999999999999", "1:2", "0:1", "2:1", ":", "a:b", "imgs", "imgs/baseline.png",
    "imgs/normal_day01.png", "/dev/null", "/nonexistent", "x" * 300, "--", "-", "=cmd|x",
    "ssim,psnr", "csv,html", "csv,bogus", "auto", "first", "local:1", "tcp://127.0.0.1:1",
    "UTC", "Mars/Olympus", "'", '"', "\\", "%s%n", "{}", "a@b.c", "x@127.0.0.1", "0.0001",
    "1e-300", "65535", "12", "16", "7", "./", "..", "imgs/../imgs", "127.0.0.1",
    "*.png", "normal*", "[", "**", "*/", "/abs/*.png",
]  # fmt: skip
OPTIONS = {
    "run": ["--baseline", "--out", "--config", "--formats", "--jobs", "--max-pixels",
            "--max-file-mb", "--series", "--history", "--slot-pattern", "--bits",
            "--value-range", "--time-limit", "--timezone", "--keep", "--lock-wait",
            "--missing-after", "--email-to", "--email-from", "--eml", "--smtp-host",
            "--smtp-port", "--scheduler", "--scheduler-timeout", "--exclude"],
    "search": ["--queries", "--by", "--top", "--index", "--out", "--formats", "--jobs",
               "--max-pixels", "--time-limit", "--exclude"],
    "duplicates": ["--by", "--threshold", "--move-duplicates", "--out", "--formats", "--jobs",
                   "--exclude"],
    "cluster": ["--k", "--features", "--copy-to", "--out", "--formats", "--jobs", "--exclude"],
    "history": ["--last", "--history", "--missing-after", "--timezone"],
    "baseline": [],
    "accept": ["--reason", "--by", "--history"],
}  # fmt: skip
FLAGS = {
    "run": ["--no-history", "--strict-size", "-r", "--no-progress", "-q", "-v", "--send-bytes",
            "--smtp-ssl", "--smtp-starttls"],
    "search": ["-r", "--no-cache"], "duplicates": ["-r", "--no-cache"], "cluster": ["-r"],
    "history": ["--csv"], "baseline": [], "accept": [],
}  # fmt: skip
TIME_LIMIT = 120  # s a command may take (a scheduler or SMTP timeout is at most 30)


def servers() -> list[str]:
    """Two loopback listeners that are neither a Dask scheduler nor an SMTP server:
    their addresses and ports join the values."""
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    banner = socket.create_server(("127.0.0.1", 0))

    def greet() -> None:
        while True:
            conn, _ = banner.accept()
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=web.serve_forever, daemon=True).start()
    threading.Thread(target=greet, daemon=True).start()
    ports = [str(web.server_address[1]), str(banner.getsockname()[1])]
    return ports + [f"127.0.0.1:{p}" for p in ports]


def command(rng: random.Random, values: list[str]) -> list[str]:
    name = rng.choice(list(OPTIONS))
    argv = [name]
    if name in ("run", "duplicates", "cluster"):
        argv.append("imgs")
    elif name == "search":
        argv += [rng.choice(["imgs/baseline.png", "imgs", "/dev/null", "x"]), "imgs"]
    elif name == "history":
        argv.append(rng.choice(values))
    elif name == "baseline":
        argv += [rng.choice(["set", "show", "x"]), rng.choice(values)]
        if rng.random() < 0.5:
            argv += [rng.choice(values), "--reason", "r"]
    else:
        argv += [rng.choice(values), rng.choice(values)]
    for _ in range(rng.randint(0, 4)):
        if OPTIONS[name] and rng.random() < 0.8:
            argv.append(f"{rng.choice(OPTIONS[name])}={rng.choice(values)}")
        elif FLAGS[name]:
            argv.append(rng.choice(FLAGS[name]))
    if name in ("run", "search", "duplicates", "cluster") and not any(
        a.startswith("--out") for a in argv
    ):
        argv += ["--out", "out"]
    return argv


def failure(done: subprocess.CompletedProcess) -> bool:
    err = done.stderr
    said = [
        line
        for line in err.splitlines()
        if line.strip() and not any(f" {level} " in line for level in ("INFO", "WARNING", "DEBUG"))
    ]
    return (
        "Traceback" in err
        or "internal error" in err
        or done.returncode not in (0, 1, 2, 3)
        or (done.returncode == 2 and len(said) != 1)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    values = VALUES + servers()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REPORTER_SMTP_PASSWORD": ""}
    env.pop("REPORTER_SCHEDULER", None)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            work = Path(tmp) / str(n)
            (work / "imgs").mkdir(parents=True)
            for name in ("baseline.png", "normal_day01.png", "fault_debris.png"):
                shutil.copyfile(SAMPLES / name, work / "imgs" / name)
            argv = command(rng, values)
            try:
                done = subprocess.run(
                    [*REPORTER, *argv], capture_output=True, text=True, cwd=work, env=env,
                    timeout=TIME_LIMIT,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                failed += 1
                print(f"still going after {TIME_LIMIT} s: reporter {argv!r}", flush=True)
                continue
            finally:
                if work.exists():
                    shutil.rmtree(work, ignore_errors=True)
            if failure(done):
                failed += 1
                print(f"exit {done.returncode}: reporter {argv!r}", flush=True)
                print("    " + done.stderr[-1200:].replace("\n", "\n    "), flush=True)
    print(f"{args.runs} command lines, {failed} failed (seed {args.seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
