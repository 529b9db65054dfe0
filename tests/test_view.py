"""The words and colours every output shares come from render/view.py, one definition each."""

from __future__ import annotations

import email
import json
from email import policy
from zoneinfo import ZoneInfo

import pytest
from conftest import SAMPLES
from openpyxl import load_workbook

from reporter import clock, pipeline
from reporter.catalog import METRICS
from reporter.config import Config
from reporter.render import view


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("view")
    eml = out.parent / f"{out.name}.eml"
    # A zone far from UTC and from this machine's, with summer time (not in November).
    config = Config(inputs=(SAMPLES,), out=out, jobs=1, timezone="America/New_York")
    from dataclasses import replace

    config = replace(config, email=replace(config.email, eml=eml), series="FSC/SSC day")
    config = replace(config, history=replace(config.history, path=out.parent / "view.sqlite"))
    return pipeline.run(config), eml


def test_one_title_in_the_page_the_workbook_the_mail_and_the_summary(sample):
    result, eml = sample
    title = view.title(result.record)
    started = result.record.started.astimezone(ZoneInfo("America/New_York"))
    local = started.strftime("%Y-%m-%d %H:%M") + " " + started.strftime("%z")[:3] + ":00"
    # verdict, series and local time first (what a browser tab shows), then the count
    assert title == f"QC FAIL \u00b7 FSC/SSC day \u00b7 {local} \u00b7 4 of 12 images flagged"
    page = result.outputs["html"].read_text(encoding="utf-8")
    assert f"<title>{title}</title>" in page
    book = load_workbook(result.outputs["xlsx"])
    assert book["Summary"]["A1"].value == title
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    # Python folds a subject that fits on the next line there whole; clients unfold it.
    assert message["Subject"].strip() == view.subject(result.record)
    assert message["Subject"].strip() == f"[QC FAIL] 4 of 12 images flagged - FSC/SSC day - {local}"
    assert title in message.get_body(("html",)).get_content()
    assert book.properties.title == title


def test_people_read_the_configured_zone_and_json_keeps_utc_with_the_offset(sample):
    result, eml = sample
    started = result.record.started
    offset = started.astimezone(ZoneInfo("America/New_York")).strftime("%z")
    offset = offset[:3] + ":" + offset[3:]
    assert offset in ("-05:00", "-04:00")
    document = json.loads(result.outputs["json"].read_text(encoding="utf-8"))
    assert document["started"] == started.isoformat(timespec="seconds")
    assert document["started"].endswith("+00:00")
    assert document["utc_offset"] == offset
    assert document["config"]["timezone"] == "America/New_York"
    page = result.outputs["html"].read_text(encoding="utf-8")
    local = clock.shown(started, "America/New_York", seconds=True)
    assert f"Run {local}" in page and local.endswith(offset)
    book = load_workbook(result.outputs["xlsx"])
    facts = {row[0].value: row[1].value for row in book["Summary"].iter_rows() if row[0].value}
    assert facts["started"] == local
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert f"Run:      {local}," in message.get_body(("plain",)).get_content()


def test_links_are_relative_and_only_where_a_copy_could_follow(tmp_path):
    images, reports = tmp_path / "day 1", tmp_path / "reports" / "run#1"
    images.mkdir()
    reports.mkdir(parents=True)
    (images / "a b?.png").write_bytes(b"x")
    assert view.link(str(images / "a b?.png"), reports) == "../../day%201/a%20b%3F.png"
    assert view.link(str(images / "gone.png"), reports) is None  # moved since, or escaped
    # Nothing in common but the root: a mailed copy could never reach it.
    assert view.link("/etc/hostname", reports) is None


def test_a_zone_is_applied_moment_by_moment_with_its_summer_time():
    assert clock.shown("2026-01-15T12:00:00+00:00", "Europe/Berlin") == "2026-01-15 13:00 +01:00"
    assert clock.shown("2026-07-15T12:00:00+00:00", "Europe/Berlin") == "2026-07-15 14:00 +02:00"
    assert clock.shown("2026-07-15T12:00:00", "UTC", seconds=True) == "2026-07-15 12:00:00 +00:00"
    assert clock.offset("2026-07-15T12:00:00+00:00", "Asia/Kolkata") == "+05:30"
    assert not clock.known_zone("Mars/Olympus_Mons") and clock.known_zone("UTC")
    # a name too long for a file name was zoneinfo's OSError: a traceback (found by fuzzing)
    assert not clock.known_zone("x" * 300) and not clock.known_zone("America")


def test_status_colours_are_the_same_everywhere(sample):
    result, eml = sample
    page = result.outputs["html"].read_text(encoding="utf-8")
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    body = message.get_body(("html",)).get_content()
    book = load_workbook(result.outputs["xlsx"])
    fill = book["Summary"]["A1"].fill.fgColor.rgb  # the verdict's colour
    assert fill[-6:] == view.STATUS_COLOURS[result.record.verdict].lstrip("#").upper()
    for colour in view.STATUS_COLOURS.values():
        assert colour in page
    # the mail's styles are inlined: only the statuses its body shows (the flagged ones)
    assert view.STATUS_COLOURS[result.record.verdict] in body


def test_every_metric_has_its_digits_in_the_page_and_the_workbook(sample):
    result, _ = sample
    book = load_workbook(result.outputs["xlsx"])
    results = book["Results"]
    heads = {cell.value: cell.column for cell in results[2]}
    for name in view.shown_metrics(result.record):
        metric = METRICS[name]
        cell = results.cell(row=3, column=heads[name])
        assert cell.number_format == view.excel_format(name)
        if metric.infinite:  # identical images' inf, stored huge, shown as ∞
            assert cell.number_format.startswith('[>=1000]"\u221e";')
        if not metric.integer:
            first = cell.number_format.split(";")[-1 if metric.infinite else 0]
            first = first.lstrip("+").removeprefix("[=0]")
            assert first == "0." + "0" * metric.digits


def test_statuses_are_listed_most_severe_first():
    assert [s.value for s in view.most_severe_first()] == ["ERROR", "FAIL", "WARN", "PASS"]


def test_limits_show_as_configured_and_reasons_with_the_metrics_digits():
    assert view.limit_text("ssim_64", 0.85) == "< 0.85"
    assert view.limit_text("signal_change", 0.12) == "beyond \u00b10.12"
    assert view.limit_text("phash", 20) == "> 20"
    assert view.limit_text("ssim", None) == ""
    assert METRICS["cosine"].format(0.99) == "0.9900"
    assert METRICS["signal_change"].format(-0.5, signed=True) == "-0.500"
    assert METRICS["signal_change"].format(0.5, signed=True) == "+0.500"
    assert METRICS["psnr"].format(float("inf")) == "\u221e"
    assert METRICS["phash"].format(7.0) == "7"
    assert METRICS["ssim"].format(float("nan")) == "\u2013"
    # MSE in a float range's units (value_range 0 to 1): significant digits below 1
    assert [METRICS["mse"].format(v) for v in (0.0, 9.979e-05, 0.5, 123.45)] == [
        "0.0",
        "9.98e-05",
        "0.5",
        "123.5",
    ]
    assert view.excel_format("mse") == "[=0]0.0;[<1]0.00E+00;0.0"
