"""The words and colours every output shares come from render/view.py, one definition each."""

from __future__ import annotations

import email
from email import policy

import pytest
from conftest import SAMPLES
from openpyxl import load_workbook

from reporter import pipeline
from reporter.catalog import METRICS
from reporter.config import Config
from reporter.render import view


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("view")
    eml = out.parent / f"{out.name}.eml"
    config = Config(inputs=(SAMPLES,), out=out, jobs=1)
    from dataclasses import replace

    config = replace(config, email=replace(config.email, eml=eml))
    return pipeline.run(config), eml


def test_one_title_in_the_page_the_workbook_the_mail_and_the_summary(sample):
    result, eml = sample
    title = view.title(result.record)
    assert title == "QC FAIL: 4 of 12 images flagged"
    page = result.outputs["html"].read_text(encoding="utf-8")
    assert f"<title>{title}</title>" in page
    book = load_workbook(result.outputs["xlsx"])
    assert book["Summary"]["A1"].value == title
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["Subject"] == view.subject(result.record)
    assert message["Subject"].startswith("[QC FAIL] 4 of 12 images flagged - ")
    assert title in message.get_body(("html",)).get_content()


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
    for name, metric in METRICS.items():
        cell = results.cell(row=3, column=heads[name])
        assert cell.number_format == view.excel_format(name)
        if not metric.integer and name != "psnr":
            assert cell.number_format.split(";")[0].lstrip("+") == "0." + "0" * metric.digits


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
