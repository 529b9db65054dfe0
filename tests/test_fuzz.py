"""Seeded fuzzing: mutated PNG, JPEG, TIFF, WebP, GIF, HEIC, AVIF, PPM, PGM and JPEG 2000
files, in one real run.

Bounded (600 small files, one run of a few seconds) and reproducible (fixed
seeds); ``benchmarks/fuzz.py`` runs the same with more files for
docs/reliability.md. Whatever a mutation does to a decoder, the run must end
with status 0 or 1, give every file its row, and keep its stderr to its own
log lines: the decoders' messages (libpng, libjpeg, libtiff, OpenCV) belong in
the rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz  # noqa: E402


def test_mutated_files_each_get_a_row_and_the_log_stays_clean(tmp_path):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    made = fuzz.make(folder, per_format=60, seed=1000)
    status, stray, rows, _ = fuzz.run(folder, tmp_path / "out")
    assert status in (0, 1)
    assert not stray, f"{len(stray)} lines not from reporter's log, e.g. {stray[:5]}"
    assert sorted(r["file"] for r in rows) == sorted(made)
    errors = [r for r in rows if r["status"] == "ERROR"]
    assert len(errors) > 40, "the fuzzing is too gentle to test anything"
    assert all(r["error"] and "\n" not in r["error"] for r in errors)
    assert not any("Traceback" in r["error"] or "cv::" in r["error"] for r in errors)
    # a decoder's own exception (libavif's RuntimeError) is a corrupt file, not a surprise
    assert not [r["error"] for r in errors if r["error"].startswith("unexpected")]
    # the decoders' own words reached the rows that caused them
    said = [r for r in rows if "the decoder" in (r["error"] or "") + (r.get("notes") or "")]
    assert len(said) > 20


def test_the_collection_commands_read_the_mutated_files_as_the_run_does(tmp_path, capsys):
    """search, duplicates and cluster over the same mutated files: exit status 0 or 1,
    no stderr line outside the log, the same files unreadable as in the run, each an
    ERROR row in the command's table, and every other file its row (search, cluster)."""
    folder = tmp_path / "fuzz"
    folder.mkdir()
    made = fuzz.make(folder, per_format=20, seed=2000)
    _, _, rows, _ = fuzz.run(folder, tmp_path / "out")
    assert len(rows) == len(made)
    assert sum(r["status"] == "ERROR" for r in rows) > 60, "too gentle to test anything"
    others = {c: fuzz.run_collection(c, folder, tmp_path / c) for c in fuzz.COLLECTION}
    assert fuzz.collections_agree(rows, others), capsys.readouterr().out
