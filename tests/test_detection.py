"""The evidence for the default verdicts: docs/detection.md is what benchmarks/detection.py
writes, and it meets the targets: no false alarm on 100 healthy days, in a batch or a
series; every fault flagged in a batch; every fault FAIL by a named rule in a series."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import detection  # noqa: E402

RULES = ("1-3s", "2-2s", "R-4s", "4-1s", "10x", "fail limit")


@pytest.fixture(scope="module")
def found():
    return detection.measure()


def test_the_detection_table_in_docs_is_what_the_script_writes(found):
    written = detection.document(found)
    assert written == (ROOT / "docs" / "detection.md").read_text(encoding="utf-8")


def test_no_healthy_day_is_flagged(found):
    assert len(found.batch_healthy) == 100 and len(found.series_healthy) == 100
    flagged = [r for r in found.batch_healthy + found.series_healthy if r["status"] != "PASS"]
    assert flagged == []


def test_every_fault_is_flagged_in_a_batch(found):
    for fault, rows in found.batch_faults.items():
        assert len(rows) == detection.FAULT_DRAWS
        assert all(r["status"] in ("WARN", "FAIL") for r in rows), fault


def test_every_fault_fails_a_series_by_a_named_rule(found):
    assert set(found.series_faults) == set(detection.FAULT_NAMES)
    for fault, row in found.series_faults.items():
        assert row["status"] == "FAIL", fault
        # A control rule of the series names itself: "signal_change 1-3s: ..."
        assert re.search(r"\b\w+ (1-3s|2-2s|R-4s|4-1s|10x):", row["reasons"]), fault


def test_the_dated_names_of_the_series_share_one_slot(found):
    """tubeA_2026-01-01.png ... tubeA_2026-04-10.png: one slot, so the limits establish."""
    assert found.series_healthy[0]["file"] != found.series_healthy[1]["file"]
    assert all("new slot" not in r["reasons"] for r in found.series_healthy)


def test_a_slow_drift_ends_fail(found):
    assert found.drift[-1]["status"] == "FAIL"
    assert any(r in found.drift[-1]["reasons"] for r in RULES)
