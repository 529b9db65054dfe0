"""Writing a run's outputs: the run folder, the staged reports, the e-mail, the summary.

Where it sits: the last step of ``pipeline.run``. :func:`run_folder` makes the
folder (``--out``, or a new time-stamped one under the reports root);
:func:`write` writes the CSV, the workbook, the page, the e-mail and the JSON
(last) into a hidden staging folder and moves them in together, so a run's
outputs appear together or not at all; :func:`point_latest` and :func:`prune`
keep the reports root tidy. Every renderer reads the run's record
(``record.py``) through the view model (``render/view.py``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from . import __version__, stopping, table, visuals
from .atomic import write_atomic
from .compare import process_alive
from .config import Config
from .errors import DeliveryError, ReporterError
from .record import Delivery, RunRecord
from .render import data, mail, view
from .render.excel import write_xlsx
from .render.html import write_html
from .render.templates import environment
from .series.store import slug, whose

__all__ = ["point_latest", "prune", "render_summary", "run_folder", "write"]

log = logging.getLogger("reporter")

RUN_FOLDER = re.compile(r"^\d{8}-\d{6}(-\d+)?$")  # what run_folder() makes: 20261122-073000[-2]
LATEST = "latest"


def run_folder(config: Config, started: datetime) -> tuple[Path, bool]:
    """The run folder, made now, and whether reporter named it (then it is pruned and pointed to).

    ``--out`` is used as given. Otherwise each run gets a new folder named by its
    start time under the reports root, in a sub-folder per series.
    """
    try:
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            return config.out, False
        root = config.reports_root / slug(config.series) if config.series else config.reports_root
        stamp = started.astimezone().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            out = root / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                out.mkdir(parents=True)
                return out, True
            except FileExistsError:
                continue
    except OSError as exc:
        raise ReporterError(f"cannot make the output folder: {exc}") from None
    raise ReporterError(f"cannot make a new run folder under {config.reports_root}")


def point_latest(out: Path) -> Path:
    """Make ``latest`` beside the run folder point to it (a symlink, replaced atomically).

    Where symbolic links cannot be made (Windows without the privilege), a
    ``latest.txt`` file names the folder instead.
    """
    link = out.parent / LATEST
    tmp = out.parent / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(out.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return link
    except OSError:
        tmp.unlink(missing_ok=True)
        note = out.parent / f"{LATEST}.txt"
        note.write_text(out.name + "\n", encoding="utf-8")
        return note


def _rmtree(path: Path) -> list[OSError]:
    """Remove ``path`` and everything in it as far as possible; what could not be removed."""
    failed: list[OSError] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _f, _p, exc: failed.append(exc))
    else:  # onerror: deprecated from 3.12
        shutil.rmtree(path, onerror=lambda _f, _p, info: failed.append(info[1]))
    return failed


def prune(out: Path, keep: int) -> list[Path]:
    """Delete the oldest run folders beside ``out`` so that ``keep`` remain (0: keep all).

    Only folders named as reporter names them are touched, never ``out``.
    """
    if keep <= 0:
        return []
    runs = sorted(
        p
        for p in out.parent.iterdir()
        if p.is_dir() and not p.is_symlink() and RUN_FOLDER.match(p.name)
    )
    old = [p for p in runs if p != out][: max(0, len(runs) - keep)]
    removed = []
    for path in old:
        failed = _rmtree(path)
        if not failed:
            log.info("removed old run folder %s (keeping %d)", path, keep)
            removed.append(path)
            continue
        first = failed[0]
        log.warning(  # it was "removed" in the log while it stayed
            "could not remove old run folder %s (%s%s): it stays; %d file(s) left",
            path,
            first.strerror or first,
            whose(path),  # removing its files needs its folder's write permission
            sum(1 for p in path.rglob("*") if not p.is_dir()) if path.exists() else 0,
        )
    return removed


def write(
    config, frame, record, baseline, pictures, charts, out_dir, outputs, valid
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
                config, frame, record, baseline, pictures, charts, stage, out_dir, outputs, valid
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
    config, frame, record, baseline, pictures, charts, stage, out_dir, outputs, valid
) -> tuple[RunRecord, str]:
    if "csv" in config.formats:
        outputs["csv"] = data.write_csv(frame, stage / "results.csv")
    baseline_thumbnail = visuals.thumbnail(baseline.pixels, ignored=valid) if pictures else None
    if "xlsx" in config.formats:  # before the e-mail, which attaches it
        outputs["xlsx"] = write_xlsx(
            frame, record, baseline_thumbnail, stage / "report.xlsx", charts=charts, folder=out_dir
        )
    if "html" in config.formats:
        outputs["html"] = write_html(
            frame,
            record,
            visuals.thumbnail(baseline.pixels, ignored=valid, side=visuals.LOOK_SIDE)
            if pictures
            else None,
            stage / "report.html",
            templates=config.templates,
            charts=charts,
            folder=out_dir,
        )
    summary = render_summary(frame, record, out_dir)
    if config.email.wanted:
        record = record.with_delivery(
            _deliver(config, frame, record, baseline_thumbnail, outputs, out_dir, charts)
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


def _deliver(config, frame, record, baseline_thumbnail, outputs, out_dir, charts=()) -> Delivery:
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
    folder = out_dir.absolute()  # the message names where the reports are on this host
    budget_left = [folder / path.name for path, _ in omitted]

    def message(attached: tuple[Path, ...]):
        return mail.build(
            frame,
            record,
            where=os.fspath(folder),
            sender=sender,
            recipients=email.to,
            baseline_thumbnail=baseline_thumbnail,
            attachments=attached,
            omitted=(*budget_left, *(folder / p.name for p in attachments if p not in attached)),
            charts=tuple(charts),
            templates=config.templates,
        )

    # Built one at a time, as the server asks for fewer attachments.
    messages = (message(attached) for attached in mail.fewer(attachments))
    msg = next(messages)
    delivery = Delivery(tuple(email.to), str(msg["Subject"]))
    if email.eml is not None:  # before sending: a file that cannot be written stops the run
        outputs["eml"] = write_atomic(email.eml, lambda tmp: tmp.write_bytes(msg.as_bytes()))
    if email.to:
        try:
            sent = mail.send(itertools.chain([msg], messages), email.to, email.smtp)
        except DeliveryError as exc:
            log.error("%s; the reports are in %s", exc, out_dir)
            delivery = replace(delivery, error=str(exc))
        else:
            msg = sent.message
            names = {part.get_filename() for part in msg.iter_attachments()}
            dropped = tuple(p.name for p in attachments if p.name not in names)
            for name in dropped:
                log.warning(
                    "%s not attached: too large for the server at %s (%s); it is in %s",
                    name,
                    email.smtp.host,
                    sent.too_large,
                    out_dir,
                )
            delivery = replace(delivery, sent=True, not_attached=dropped)
            if sent.refused:  # the others have it; those refused are a failed delivery
                where = f"{email.smtp.host}:{email.smtp.effective_port()}"
                said = ", ".join(f"{a} ({why})" for a, why in sorted(sent.refused.items()))
                error = f"the server at {where} refused {said}"
                reached = ", ".join(a for a in email.to if a not in sent.refused)
                log.error("%s; the report went to %s only", error, reached)
                delivery = replace(delivery, error=error)
            else:
                log.info("e-mailed the report to %s", ", ".join(email.to))
            if dropped and email.eml is not None:  # the message as sent
                sent_bytes = msg.as_bytes()
                outputs["eml"] = write_atomic(email.eml, lambda tmp: tmp.write_bytes(sent_bytes))
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


def skip_reasons(skipped) -> str:
    """Why files were skipped, by reason, most common first (ties by name): "not a
    regular file: 4; not an image file extension: 1"."""
    counts = Counter(item.reason for item in skipped)
    return "; ".join(
        f"{why}: {n}" for why, n in sorted(counts.items(), key=lambda c: (-c[1], c[0]))
    )


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
            skipped_why=skip_reasons(record.skipped),
            control=record.history,
            control_line=view.control_line(record.history) if record.history else "",
            gap_text=view.gap_text(record.history) if record.history else "",
            out_dir=os.fspath(out_dir),
        )
    )
