"""Seeded fuzzing of the decoders: mutated PNG, JPEG, TIFF, WebP, GIF, HEIC, AVIF, PPM, PGM
and JPEG 2000 files.

    python benchmarks/fuzz.py [--per-format 250] [--seed 1000] [--keep DIR]

Writes a clean 64x48 image in each format (HEIC: tests/fixtures/plain.heic, 128x96,
since nothing installed encodes HEIC), derives ``--per-format`` mutations
of each (truncation, header bytes, random bytes, a size field set to its
maximum, a block repeated, a block removed), runs ``reporter run`` on them with
two workers, and prints a Markdown summary: the exit status, the rows by
status, the ERROR messages by kind, how many rows carry the decoder's own
words, and any stderr line that is not reporter's log (there must be none).
docs/reliability.md quotes its output; tests/test_fuzz.py runs a small version.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FORMATS = (".png", ".jpg", ".tif", ".webp", ".gif", ".heic", ".avif", ".ppm", ".pgm", ".jp2")
HEIC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "plain.heic"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
MUTATIONS = (
    "truncated",
    "header bytes",
    "random bytes",
    "size field max",
    "block repeated",
    "block removed",
)


def clean_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.random((48, 64, 3)).astype(np.float32), (0, 0), 4)
    img = (img - img.min()) / (img.max() - img.min())
    return np.rint(img * 255).astype(np.uint8)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One of the classic mutations, and its name."""
    out = bytearray(data)
    kind = rng.randrange(len(MUTATIONS))
    if kind == 0:
        return MUTATIONS[kind], bytes(out[: rng.randrange(1, len(out))])
    if kind == 1:  # where sizes and offsets live
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(min(64, len(out)))] = rng.randrange(256)
    elif kind == 2:
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 3:
        at = rng.randrange(8, min(40, len(out) - 4))
        out[at : at + 4] = b"\xff\xff\xff\x7f"
    elif kind == 4:
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randint(1, 256))
        out[b:b] = out[a:b] * rng.randint(1, 8)
    else:
        a = rng.randrange(len(out))
        del out[a : a + rng.randint(1, 512)]
    return MUTATIONS[kind], bytes(out)


def encoded(ext: str, pixels: np.ndarray) -> bytes:
    if ext == ".heic":  # pi-heif decodes only
        return HEIC.read_bytes()
    if ext in (".gif", ".avif"):  # by Pillow, which decodes them in reporter
        buf = io.BytesIO()
        Image.fromarray(pixels[:, :, ::-1]).save(buf, ext[1:].upper())
        return buf.getvalue()
    if ext == ".pgm":  # grey only
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok, ext
    return buf.tobytes()


def make(folder: Path, per_format: int, seed: int) -> dict[str, str]:
    """Write the baseline and the mutated files; returns file name -> mutation."""
    base = clean_image()
    cv2.imwrite(str(folder / "baseline.png"), base)
    made = {}
    for f, ext in enumerate(FORMATS):
        clean = encoded(ext, base)
        rng = random.Random(seed + f)
        for i in range(per_format):
            kind, data = mutate(clean, rng)
            name = f"m{ext[1:]}{i:04d}{ext}"
            (folder / name).write_bytes(data)
            made[name] = kind
    return made


def run(folder: Path, out: Path, jobs: int = 2) -> tuple[int, list[str], list[dict], float]:
    """Exit status, stderr lines that are not reporter's log, the rows, seconds."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(out), "-j", str(jobs)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - t0
    stray = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    rows = json.loads((out / "results.json").read_text())["rows"] if out.is_dir() else []
    return done.returncode, stray, rows, seconds


COLLECTION = {  # the collection commands, each with its table's name
    "search": "results.csv",
    "duplicates": "groups.csv",
    "cluster": "clusters.csv",
}


def run_collection(
    command: str, folder: Path, out: Path, jobs: int = 2
) -> tuple[int, list[str], dict[str, str | None], float]:
    """``reporter search|duplicates|cluster`` over the same files: exit status, stderr
    lines that are not reporter's log, each file's error in its table (None when it was
    read), seconds. search ranks every file against the clean one; duplicates lists
    only the files of a group and the unreadable ones."""
    argv = [sys.executable, "-m", "reporter", command]
    if command == "search":
        argv += [str(folder / "baseline.png"), str(folder), "--top", "1000000"]
    else:
        argv += [str(folder)]
    argv += ["--out", str(out), "-j", str(jobs), "--no-cache"]
    if command == "cluster":
        argv = [a for a in argv if a != "--no-cache"]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    stray = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    table = out / COLLECTION[command]
    rows = {}
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                rows[row["file"]] = row["error"] or None
    return done.returncode, stray, rows, seconds


def kind_of_error(message: str) -> str:
    """The message without its particulars (sizes, the decoder's words)."""
    message = message.split(" (the decoder:")[0]
    message = re.sub(r"(?<![A-Z\d])\d[\d,.]*", "N", message)  # not JPEG2000's digits
    return message.split(":")[0] if message.startswith("corrupt image header") else message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-format", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--keep", type=Path, help="write the files here instead of a temporary folder"
    )
    parser.add_argument(
        "--collections",
        action="store_true",
        help="also run search, duplicates and cluster over the same files",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "fuzz"
        folder.mkdir(parents=True, exist_ok=True)
        made = make(folder, args.per_format, args.seed)
        status, stray, rows, seconds = run(folder, Path(tmp) / "out")
        others = {
            command: run_collection(command, folder, Path(tmp) / command)
            for command in (COLLECTION if args.collections else ())
        }
    statuses = Counter(r["status"] for r in rows)
    errors = Counter(kind_of_error(r["error"]) for r in rows if r["status"] == "ERROR")
    said = sum("the decoder" in (r["error"] or "") + (r.get("notes") or "") for r in rows)
    formats = ", ".join(FORMATS)
    print(f"{len(made)} mutated files ({args.per_format} per format: {formats}), seed {args.seed}")
    print(
        f"mutations: {', '.join(f'{k} {v}' for k, v in sorted(Counter(made.values()).items()))}\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| exit status | {status} |")
    print(f"| rows | {len(rows)} of {len(made)} files |")
    print(f"| rows by status | {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} |")
    print(f"| rows with the decoder's own words (ERROR message or note) | {said} |")
    print(f"| stderr lines that are not reporter's log | {len(stray)} |")
    print(f"| whole run, 2 workers | {seconds:.1f} s |\n")
    print("| ERROR message (numbers as N) | rows |\n| --- | --- |")
    for message, n in errors.most_common():
        print(f"| {message} | {n} |")
    for line in stray[:10]:
        print(f"stray: {line}")
    ok = status in (0, 1) and len(rows) == len(made) and not stray
    if others:
        ok = collections_agree(rows, others) and ok
    return 0 if ok else 1


def collections_agree(rows: list[dict], others: dict) -> bool:
    """The collection commands' table of each run over the same files, against the run:
    the same files unreadable (the same reader), each of them an ERROR row, and for
    search and cluster every readable file its row. Prints a table; True when all hold."""
    unreadable = {r["file"] for r in rows if r["status"] == "ERROR"}
    files = {r["file"] for r in rows} | {"baseline.png"}
    print("\n| command | exit status | rows | ERROR rows | same files unreadable as run's | "
          "every file its row | stray stderr lines | seconds |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for command, (status, stray, table, seconds) in others.items():
        errors = {f for f, e in table.items() if e}
        same = errors == unreadable
        every = set(table) == files if command != "duplicates" else set(table) <= files
        print(f"| {command} | {status} | {len(table)} | {len(errors)} | {'yes' if same else 'NO'} "
              f"| {'yes' if every else 'NO'} | {len(stray)} | {seconds:.1f} |")  # fmt: skip
        for line in stray[:5]:
            print(f"stray ({command}): {line}")
        for f in sorted(errors ^ unreadable)[:5]:
            print(f"differs ({command}): {f}: {table.get(f)!r}")
        ok = ok and status in (0, 1) and same and every and not stray
    return ok


if __name__ == "__main__":
    sys.exit(main())
