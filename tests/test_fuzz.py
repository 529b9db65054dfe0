"""Seeded fuzzing: mutated PNG, JPEG, TIFF and WebP files, in one real run.

Bounded (240 small files, one run of a few seconds) and reproducible (fixed
seeds). Whatever a mutation does to a decoder, the run must end with status 0
or 1, give every file its row, and keep its stderr to its own log lines: the
decoders' messages (libpng, libjpeg, libtiff, OpenCV) belong in the rows.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import cv2
from conftest import smooth_image

FORMATS = (".png", ".jpg", ".tif", ".webp")
PER_FORMAT = 60
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One of the classic mutations: flip bytes (often in the header), cut, splice, repeat."""
    out = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # truncate
        return bytes(out[: rng.randrange(1, len(out))])
    if kind == 1:  # flip bytes in the header, where sizes and offsets live
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(min(64, len(out)))] = rng.randrange(256)
    elif kind == 2:  # flip bytes anywhere
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 3:  # a size field set to its maximum
        at = rng.randrange(8, min(40, len(out) - 4))
        out[at : at + 4] = b"\xff\xff\xff\x7f"
    elif kind == 4:  # a block repeated
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randint(1, 256))
        out[b:b] = out[a:b] * rng.randint(1, 8)
    else:  # a block removed
        a = rng.randrange(len(out))
        del out[a : a + rng.randint(1, 512)]
    return bytes(out)


def test_mutated_files_each_get_a_row_and_the_log_stays_clean(tmp_path):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    base = smooth_image(3, (48, 64, 3))
    cv2.imwrite(str(folder / "baseline.png"), base)
    names = []
    for f, ext in enumerate(FORMATS):
        ok, buf = cv2.imencode(ext, base)
        assert ok
        rng = random.Random(1000 + f)
        for i in range(PER_FORMAT):
            name = f"m{ext[1:]}{i:03d}{ext}"
            (folder / name).write_bytes(_mutate(buf.tobytes(), rng))
            names.append(name)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "reporter", "run", str(folder), "--out", str(out), "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    stray = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    assert not stray, f"{len(stray)} lines not from reporter's log, e.g. {stray[:5]}"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["file"] for r in rows) == sorted(names)
    errors = [r for r in rows if r["status"] == "ERROR"]
    assert errors, "no mutation broke a file: the fuzzing is too gentle to test anything"
    assert all(r["error"] and "\n" not in r["error"] for r in errors)
    assert not any("Traceback" in (r["error"] or "") for r in errors)
    # the decoders' own words reached the rows that caused them
    said = [r for r in rows if "the decoder" in (r["error"] or "") + (r.get("notes") or "")]
    assert said
