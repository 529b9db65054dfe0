"""One run, top to bottom: find the files, load the baseline, compare, flag, write.

Where it sits: the CLI builds a ``Config`` and calls :func:`run`; a notebook or a
test can do the same without a subprocess. A run that cannot be done raises
``ReporterError`` (exit status 2); a file that cannot be compared becomes an
ERROR row and every other file still gets its row.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from . import __version__, flags, images, masks, series, stopping, table, visuals
from .atomic import write_atomic
from .compare import (
    ImageResult,
    Input,
    Job,
    compare_all,
    process_alive,
    quiet_opencv,
    start_workers,
)
from .config import Config, auto_metrics, check
from .errors import DeliveryError, ReporterError
from .history import History, series_lock, sha256_of
from .metrics import Reference
from .names import shown, stored
from .record import (
    BaselineFacts,
    Delivery,
    RunRecord,
    SignalFacts,
    SkippedFile,
    Tool,
)
from .render import data, mail, view
from .render.excel import write_xlsx
from .render.html import write_html
from .render.templates import environment
from .signal import GRID as SIGNAL_GRID

log = logging.getLogger("reporter")


@dataclass
class RunResult:
    """What a run produced: its record, its table, where its outputs are."""

    record: RunRecord
    table: pd.DataFrame
    out_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    summary: str = ""

    @property
    def exit_code(self) -> int:
        """What the command line exits with (decided by the record)."""
        return int(self.record.exit_status)

    @property
    def meta(self) -> dict[str, Any]:
        """The run's metadata as results.json holds it."""
        return self.record.to_json()


# --- finding the files ------------------------------------------------------------------


def _listing(folder: Path, recursive: bool, unreadable: list[SkippedFile]) -> list[Path]:
    """Every entry below ``folder`` (one level, or all with ``recursive``), sorted by its
    path relative to the folder; folders that cannot be read go to ``unreadable``.

    os.walk with an onerror hook, not Path.glob: glob passes over an unreadable
    sub-folder without a word, and a run would then report PASS on images it never saw.
    Symbolic links to folders are not followed (no loops), as glob did not.
    """

    def failed(exc: OSError) -> None:
        where = exc.filename or folder
        unreadable.append(SkippedFile(str(where), exc.strerror or str(exc)))
        log.error("cannot read the folder %s: %s", where, exc.strerror or exc)

    paths: list[Path] = []
    if recursive:
        for root, dirs, files in os.walk(folder, onerror=failed):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            paths += [Path(root) / name for name in (*dirs, *files)]
    else:
        try:
            with os.scandir(folder) as entries:
                paths = [Path(entry.path) for entry in entries]
        except OSError as exc:
            failed(exc)
    return sorted(paths, key=lambda p: p.relative_to(folder).as_posix())


def discover(
    inputs: tuple[Path, ...], *, recursive: bool
) -> tuple[list[Input], list[SkippedFile], list[SkippedFile]]:
    """Image files from files and folders, sorted within each folder, each once; the
    files skipped; and the folders that could not be read."""
    found: list[Input] = []
    skipped: list[SkippedFile] = []
    unreadable: list[SkippedFile] = []
    seen: set[Path] = set()

    def add(path: Path, file: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(Input(path, file))

    for given in inputs:
        if given.is_file():
            add(given, given.name)  # named explicitly: compared even with an odd extension
        elif given.exists() and not given.is_dir():
            raise ReporterError(f"{given} is not a regular file (a pipe or a device?)")
        elif given.is_dir():
            for path in _listing(given, recursive, unreadable):
                rel = path.relative_to(given)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.DS_Store, ._x.png, .git)
                if path.is_dir():
                    continue
                if not path.is_file():  # a FIFO or socket: reading it could block forever
                    skipped.append(SkippedFile(str(path), "not a regular file"))
                    log.warning("skipped %s: not a regular file", path)
                    continue
                if not images.is_image(path):
                    skipped.append(SkippedFile(str(path), "not an image file extension"))
                    log.info(
                        "skipped %s: not an image (%s)",
                        path,
                        ", ".join(sorted(images.IMAGE_EXTENSIONS)),
                    )
                    continue
                add(path, rel.as_posix())
        else:
            raise ReporterError(f"no such file or folder: {given}")
    return found, skipped, unreadable


def choose_baseline(config: Config, found: list[Input]) -> tuple[Path, list[Input]]:
    """The baseline file, and the inputs without it (the baseline is not a row)."""
    if config.first_as_baseline:
        if not found:
            raise ReporterError("--baseline first: no images among the inputs")
        return found[0].path, found[1:]
    if config.baseline is not None:
        baseline = config.baseline
        if not baseline.is_file():
            raise ReporterError(f"baseline not found: {baseline}")
    else:
        named = [i for i in found if i.path.stem.lower() == "baseline"]
        if not named:
            raise ReporterError(
                "no baseline: pass --baseline FILE, or name the reference image "
                "baseline.png (or .jpg, .tif, ...) among the inputs"
            )
        if len(named) > 1:
            raise ReporterError(
                "several baseline files ("
                + ", ".join(str(i.path) for i in named)
                + "): choose one with --baseline FILE"
            )
        baseline = named[0].path
    key = baseline.resolve()
    return baseline, [i for i in found if i.path.resolve() != key]


# --- comparing ----------------------------------------------------------------------------


# --- the run ------------------------------------------------------------------------------


def run(config: Config) -> RunResult:
    """Compare every input image with the baseline and write the outputs.

    A run with a series (and history on) holds the series' lock for its whole
    length, reads the series' control period and records itself in the history.
    """
    check(config)
    if not config.inputs:
        raise ReporterError("no inputs: give image files or folders")
    if not config.keeps_history:
        return _run(config, None)
    store = History(config.history_path())
    try:
        locks = config.history_path().parent / "locks"
        with series_lock(locks, config.series, config.history.lock_wait):
            return _run(config, store)
    except sqlite3.Error as exc:  # locked too long, disk full, a damaged table: one line
        raise ReporterError(f"history {config.history_path()}: {exc}") from None
    finally:
        store.close()


def _baseline(config: Config, found: list[Input], store: History | None):
    """The baseline file and the inputs without it; with a series, its recorded baseline.

    A series whose baseline was never recorded gets this run's (its first
    control period begins). A run given another baseline than the recorded one
    is compared against the one given, and says so loudly.
    """
    recorded = store.baseline(config.series) if store else None
    if recorded is not None and config.baseline is None and not config.first_as_baseline:
        named = [i for i in found if i.path.stem.lower() == "baseline"]
        if not named:  # the series' own copy
            stored = Path(recorded.stored)
            if not stored.is_file():
                raise ReporterError(
                    f"the recorded baseline of series {config.series!r} is missing: {stored}; "
                    "pass --baseline FILE, or record one with 'reporter baseline set'"
                )
            config = replace(config, baseline=stored)
    baseline_path, items = choose_baseline(config, found)
    if store is not None and recorded is None:
        recorded = store.set_baseline(
            config.series, baseline_path, reason="the first run of the series", by=user()
        )
        log.info("series %r: recorded %s as its baseline", config.series, baseline_path)
    return baseline_path, items, recorded


def _watched(config: Config, reference: Reference) -> Config:
    """``config`` with the statistical rules' "auto" metric sets chosen for this baseline."""
    sparse = reference.sparse
    outliers = replace(
        config.outliers, metrics=auto_metrics(config.outliers.metrics, sparse, "outlier")
    )
    history = replace(
        config.history,
        metrics=auto_metrics(config.history.metrics, sparse, "control"),
        chart_metrics=auto_metrics(config.history.chart_metrics, sparse, "chart"),
    )
    if config.outliers.metrics is None or config.history.metrics is None:
        log.info(
            "%s baseline (%.1f %% of it carries signal): the statistical rules watch %s",
            "sparse" if sparse else "dense",
            100 * reference.signal_share,
            ", ".join(outliers.metrics),
        )
    return replace(config, outliers=outliers, history=history)


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (some containers)
        return "unknown"


def _run(config: Config, store: History | None) -> RunResult:
    quiet_opencv()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    found, skipped, unreadable = discover(config.inputs, recursive=config.recursive)
    try:
        baseline_path, items, recorded = _baseline(config, found, store)
    except ReporterError:
        if unreadable and not found:  # say why there was nothing, not "no baseline"
            first = unreadable[0]
            raise ReporterError(f"cannot read the folder {first.path}: {first.reason}") from None
        raise
    if not items and not unreadable:
        raise ReporterError(
            f"no images to compare besides the baseline in {', '.join(map(str, config.inputs))}"
        )
    start_workers(config.effective_jobs(), len(items))
    try:
        baseline = images.load(
            baseline_path, max_pixels=config.max_pixels, max_bytes=config.max_bytes
        )
    except images.ImageLoadError as exc:
        raise ReporterError(f"baseline {baseline_path}: {exc}") from None
    h, w = baseline.pixels.shape[:2]
    valid = masks.build(
        w, h, tuple(masks.Region(*r) for r in config.comparison.ignore), config.comparison.mask
    )
    try:
        reference = Reference(baseline.pixels, valid).prepare()
    except ValueError as exc:
        raise ReporterError(f"baseline {baseline_path}: {exc}") from None
    config = _watched(config, reference)
    baseline_sha = sha256_of(baseline_path)
    out_dir, named = series.run_folder(config, started)
    log.info("comparing %d image(s) against %s", len(items), baseline_path)

    pictures = bool({"html", "xlsx"} & set(config.formats)) or config.email.wanted
    job = Job(
        reference,
        images.Geometry.of(baseline.pixels),
        config.max_pixels,
        config.strict_size,
        max_bytes=config.max_bytes,
        baseline_small=visuals.baseline_for_maps(baseline.pixels) if pictures else None,
        align=config.comparison.align,
    )
    results = compare_all(job, items, jobs=config.effective_jobs(), progress=config.progress)
    # A folder that could not be read is an ERROR row of its own: its images were not seen.
    results += [
        ImageResult(
            file=stored(u.path) + "/",
            path=u.path,
            error=f"cannot read this folder: {u.reason}; the images in it were not compared",
        )
        for u in unreadable
    ]
    frame = table.build(results)
    context = None
    if store is not None:
        context = series.SeriesRun.start(config, store, recorded, baseline_sha, frame, started)
    extra = context.extra if context else None
    frame = flags.apply(frame, config.limits, config.outliers, extra)
    for row in frame[frame[table.STATUS] == table.Status.ERROR.value].itertuples(index=False):
        log.warning("%s: ERROR %s", getattr(row, table.PATH), getattr(row, table.ERROR))

    record = RunRecord(
        tool=Tool.here(),
        started=started,
        finished=datetime.now(UTC),
        duration_s=round(time.perf_counter() - t0, 3),
        baseline=BaselineFacts(
            path=stored(str(baseline_path)),
            file=shown(baseline_path.name),
            width=reference.width,
            height=reference.height,
            channels=reference.channels,
            bit_depth=8 * reference.pixels.dtype.itemsize,
            bytes=baseline_path.stat().st_size,
            sha256=baseline_sha,
            notes=tuple(baseline.notes),
        ),
        inputs=tuple(stored(str(p)) for p in config.inputs),
        settings=config,
        signal=SignalFacts(
            background=tuple(round(v, 2) for v in reference.background.colour),
            noise=round(reference.background.noise, 2),
            threshold=round(reference.background.threshold, 2),
            share=round(reference.signal_share, 5),
            sparse=reference.sparse,
            grid=SIGNAL_GRID,
        ),
        ssim_coarse_factor=reference.coarse_factor,
        ms_ssim_scales=reference.ms_ssim_scales,
        counts=table.counts(frame),
        skipped=tuple(SkippedFile(stored(s.path), s.reason) for s in skipped),
        off_series=bool(context and context.mismatch),
    )
    outputs: dict[str, Path] = {}
    # The run enters the history in a transaction around the reports (which show its id):
    # committed once they are written, rolled back if writing them fails or the run is killed.
    recording = (
        context.recording(store, frame, record, out_dir)
        if context is not None
        else contextlib.nullcontext(None)
    )
    try:
        with recording as facts:
            if facts is not None:
                record = record.with_history(facts)
            record, summary = _write(
                config,
                frame,
                record,
                baseline,
                pictures,
                context,
                out_dir,
                outputs,
                reference.valid,
            )
            if named:
                series.point_latest(out_dir)
                series.prune(out_dir, config.history.keep_runs)
            if facts is not None and record.exit_status != record.rows_status:  # the e-mail
                store.set_exit_code(facts.run_id, record.exit_status)
    except OSError as exc:
        where = exc.filename or out_dir
        raise ReporterError(f"cannot write {where}: {exc.strerror or exc}") from None
    except jinja2.TemplateError as exc:  # most likely a template of --templates
        line = getattr(exc, "lineno", None)
        name = getattr(exc, "filename", None) or getattr(exc, "name", None) or "a template"
        at = f" (line {line})" if line else ""
        raise ReporterError(f"template {name}{at}: {exc.message or exc}") from None

    log.info(
        "%d image(s): %s; exit status %d; results in %s",
        len(frame),
        ", ".join(f"{n} {s}" for s, n in record.counts.items() if n),
        record.exit_status,
        out_dir,
    )
    return RunResult(record, frame, out_dir, outputs, summary)


def _write(
    config, frame, record, baseline, pictures, context, out_dir, outputs, valid
) -> tuple[RunRecord, str]:
    """Write the reports (CSV, workbook, page, e-mail, JSON last); returns the record (with
    the e-mail's delivery) and the printed summary.

    They are written into a hidden staging folder inside the run folder and moved into
    place only when every one of them is written, JSON last (its presence says the run
    folder is complete). A failure (a full disk, a broken template) removes the staging
    folder: the run folder keeps what it had, never a mix of old and new outputs.
    """
    _remove_stale_stages(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        try:
            record, summary = _write_staged(
                config, frame, record, baseline, pictures, context, stage, out_dir, outputs, valid
            )
        except OSError as exc:  # name the output, not its staging copy
            if exc.filename and Path(exc.filename).parent == stage:
                final = str(out_dir / Path(exc.filename).name)
                raise OSError(exc.errno, exc.strerror, final) from None
            raise
        with stopping.held():  # SIGTERM between two renames would leave a mix
            for key in ("csv", "xlsx", "html", "json"):
                if key in outputs and outputs[key].parent == stage:
                    final = out_dir / outputs[key].name
                    os.replace(outputs[key], final)
                    outputs[key] = final
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return record, summary


STAGE_PREFIX = ".staging-"


def _remove_stale_stages(out_dir: Path) -> None:
    """Remove staging folders left by runs of this machine that were killed (SIGKILL).

    A staging folder is named after its run's process id; one whose process is
    gone is debris. One whose process lives belongs to a concurrent run and stays.
    """
    for entry in out_dir.glob(f"{STAGE_PREFIX}*"):
        pid = entry.name[len(STAGE_PREFIX) :].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _write_staged(
    config, frame, record, baseline, pictures, context, stage, out_dir, outputs, valid
) -> tuple[RunRecord, str]:
    if "csv" in config.formats:
        outputs["csv"] = data.write_csv(frame, stage / "results.csv")
    baseline_thumbnail = visuals.thumbnail(baseline.pixels, ignored=valid) if pictures else None
    charts = context.charts(frame) if context is not None and pictures else []
    if "xlsx" in config.formats:  # before the e-mail, which attaches it
        outputs["xlsx"] = write_xlsx(
            frame, record, baseline_thumbnail, stage / "report.xlsx", charts=charts
        )
    if "html" in config.formats:
        outputs["html"] = write_html(
            frame,
            record,
            baseline_thumbnail,
            stage / "report.html",
            templates=config.templates,
            charts=charts,
        )
    summary = render_summary(frame, record, out_dir)
    if config.email.wanted:
        record = record.with_delivery(
            _deliver(config, frame, record, summary, baseline_thumbnail, outputs, out_dir, charts)
        )
    if "json" in config.formats:
        outputs["json"] = data.write_json(frame, record, stage / "results.json")
    return record, summary


def _attachments(paths: list[Path], limit_mb: float) -> tuple[tuple[Path, ...], list]:
    """The reports that fit in the attachment budget, in order, and those left out with sizes.

    Mail servers refuse messages over 10-25 MB (attachments grow by a third in
    base64); a report left out is named in the message, with where it is.
    """
    budget = limit_mb * 1e6
    kept, left = [], []
    for path in paths:
        size = path.stat().st_size
        if size <= budget:
            kept.append(path)
            budget -= size
        else:
            left.append((path, size))
    return tuple(kept), left


def _deliver(
    config, frame, record, summary, baseline_thumbnail, outputs, out_dir, charts=()
) -> Delivery:
    """Write and send the e-mail; a failure to send is exit status 3, never silent.

    ``outputs`` are still staged; the message names where they will be, in ``out_dir``."""
    email = config.email
    sender = email.sender or f"reporter@{socket.getfqdn() or 'localhost'}"
    attachments, omitted = _attachments(
        [outputs[k] for k in ("html", "xlsx") if k in outputs], email.max_attachment_mb
    )
    for path, size in omitted:
        log.warning(
            "%s (%.1f MB) not attached: over the %g MB for attachments ([email] max_attachment_mb)",
            path.name,
            size / 1e6,
            email.max_attachment_mb,
        )
    msg = mail.build(
        frame,
        record,
        summary,
        sender=sender,
        recipients=email.to,
        baseline_thumbnail=baseline_thumbnail,
        attachments=attachments,
        omitted=tuple(out_dir / path.name for path, _ in omitted),
        charts=tuple(charts),
        templates=config.templates,
    )
    if email.eml is not None:
        outputs["eml"] = write_atomic(email.eml, lambda tmp: tmp.write_bytes(msg.as_bytes()))
    delivery = Delivery(tuple(email.to), str(msg["Subject"]))
    if email.to:
        try:
            mail.send(msg, email.to, email.smtp)
        except DeliveryError as exc:
            log.error("%s; the reports are in %s", exc, out_dir)
            return replace(delivery, error=str(exc))
        log.info("e-mailed the report to %s", ", ".join(email.to))
        return replace(delivery, sent=True)
    return delivery


SUMMARY_REASONS = 3  # per image in the printed summary; the CSV has them all


def first_reasons(found: tuple[tuple[str, str], ...], limit: int = SUMMARY_REASONS) -> str:
    """The ``limit`` most severe reasons (they come ranked), then what is left, by level:
    "(+2 more: 1 FAIL, 1 WARN)"."""
    shown = table.SEPARATOR.join(text for _, text in found[:limit])
    rest = [status for status, _ in found[limit:]]
    if not rest:
        return shown
    levels = ", ".join(
        f"{rest.count(s.value)} {'note' if s is table.Status.PASS else s.value}"
        for s in view.most_severe_first()
        if s.value in rest
    )
    return f"{shown} (+{len(rest)} more: {levels})"


def render_summary(frame: pd.DataFrame, record: RunRecord, out_dir: Path) -> str:
    flagged = frame[frame[table.STATUS] != table.Status.PASS.value].sort_values(
        table.STATUS, ascending=False, kind="stable"
    )
    return (
        environment()
        .get_template("summary.txt.j2")
        .render(
            version=__version__,
            verdict=record.verdict.value,
            total=len(frame),
            baseline=record.baseline.file,
            counts=record.counts,
            flagged=[
                {
                    "status": r[table.STATUS],
                    "file": r[table.FILE],
                    "reasons": first_reasons(r[table.FLAGS]),
                    "error": r[table.ERROR],
                }
                for r in flagged.to_dict("records")
            ],
            skipped=len(record.skipped),
            control=record.history,
            control_line=view.control_line(record.history) if record.history else "",
            out_dir=os.fspath(out_dir),
        )
    )
