"""One run, top to bottom: find the files, load the baseline, compare, flag, write.

Where it sits: the CLI builds a ``Config`` and calls :func:`run`; a notebook or a
test can do the same without a subprocess. A run that cannot be done raises
``ReporterError`` (exit status 2); a file that cannot be compared becomes an
ERROR row and every other file still gets its row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import jinja2
import pandas as pd

from . import __version__, flags, images, table, visuals
from .atomic import write_atomic
from .compare import Input, Job, compare_all, quiet_opencv, start_workers
from .config import Config, ReporterError, check
from .metrics import METRICS, Reference
from .render import data, mail
from .render.excel import write_xlsx
from .render.html import write_html
from .render.templates import environment

log = logging.getLogger("reporter")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class RunResult:
    """What a run produced; ``exit_code`` is what the CLI exits with."""

    exit_code: int
    table: pd.DataFrame
    meta: dict[str, Any]
    out_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    summary: str = ""


# --- finding the files ------------------------------------------------------------------


def discover(inputs: tuple[Path, ...], *, recursive: bool) -> tuple[list[Input], list[Skipped]]:
    """Image files from files and folders, sorted within each folder, each once."""
    found: list[Input] = []
    skipped: list[Skipped] = []
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
            pattern = "**/*" if recursive else "*"
            for path in sorted(given.glob(pattern), key=lambda p: p.relative_to(given).as_posix()):
                rel = path.relative_to(given)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.DS_Store, ._x.png, .git)
                if path.is_dir():
                    continue
                if not path.is_file():  # a FIFO or socket: reading it could block forever
                    skipped.append(Skipped(str(path), "not a regular file"))
                    log.warning("skipped %s: not a regular file", path)
                    continue
                if not images.is_image(path):
                    skipped.append(Skipped(str(path), "not an image file extension"))
                    log.info(
                        "skipped %s: not an image (%s)",
                        path,
                        ", ".join(sorted(images.IMAGE_EXTENSIONS)),
                    )
                    continue
                add(path, rel.as_posix())
        else:
            raise ReporterError(f"no such file or folder: {given}")
    return found, skipped


def choose_baseline(config: Config, found: list[Input]) -> tuple[Path, list[Input]]:
    """The baseline file, and the inputs without it (the baseline is not a row)."""
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _out_dir(config: Config, started: datetime) -> Path:
    """The run folder, made now: a folder that cannot be written fails before the work."""
    try:
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            return config.out
        stamp = started.astimezone().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            out = config.reports_root / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                out.mkdir(parents=True)
                return out
            except FileExistsError:
                continue
    except OSError as exc:
        raise ReporterError(f"cannot make the output folder: {exc}") from None
    raise ReporterError(f"cannot make a new run folder under {config.reports_root}")


def run(config: Config) -> RunResult:
    """Compare every input image with the baseline and write the outputs."""
    check(config)
    quiet_opencv()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    if not config.inputs:
        raise ReporterError("no inputs: give image files or folders")
    found, skipped = discover(config.inputs, recursive=config.recursive)
    baseline_path, items = choose_baseline(config, found)
    if not items:
        raise ReporterError(
            f"no images to compare besides the baseline in {', '.join(map(str, config.inputs))}"
        )
    start_workers(config.effective_jobs(), len(items))
    try:
        baseline = images.load(baseline_path, max_pixels=config.max_pixels)
        reference = Reference(baseline.pixels).prepare()
    except (images.ImageLoadError, ValueError) as exc:
        raise ReporterError(f"baseline {baseline_path}: {exc}") from None
    out_dir = _out_dir(config, started)
    log.info("comparing %d image(s) against %s", len(items), baseline_path)

    pictures = bool({"html", "xlsx"} & set(config.formats)) or config.email.wanted
    job = Job(
        reference,
        images.Geometry.of(baseline.pixels),
        config.max_pixels,
        config.strict_size,
        baseline_small=visuals.baseline_for_maps(baseline.pixels) if pictures else None,
    )
    results = compare_all(job, items, jobs=config.effective_jobs(), progress=config.progress)
    frame = flags.apply(table.build(results), config.limits, config.outliers)
    for row in frame[frame[table.STATUS] == table.Status.ERROR.value].itertuples(index=False):
        log.warning("%s: ERROR %s", getattr(row, table.PATH), getattr(row, table.ERROR))

    exit_code = flags.exit_code(frame)
    finished = datetime.now(UTC)
    counts = table.counts(frame)
    meta = {
        "tool": {
            "name": "reporter",
            "version": __version__,
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "pandas": pd.__version__,
        },
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        "baseline": {
            "path": str(baseline_path),
            "file": baseline_path.name,
            "width": reference.width,
            "height": reference.height,
            "channels": reference.channels,
            "bit_depth": 8 * reference.pixels.dtype.itemsize,
            "bytes": baseline_path.stat().st_size,
            "sha256": _sha256(baseline_path),
            "notes": list(baseline.notes),
        },
        "series": config.series,
        "inputs": [str(p) for p in config.inputs],
        "config": config.to_dict(),
        "metrics": {
            name: {"definition": m.definition, "higher_is_better": m.higher_is_better}
            for name, m in METRICS.items()
        },
        "ssim_coarse_factor": reference.coarse_factor,
        "ms_ssim_scales": reference.ms_ssim_scales,
        "counts": counts,
        "exit_code": exit_code,
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
    }

    outputs: dict[str, Path] = {}
    try:
        # JSON last: its presence says the run folder is complete.
        if "csv" in config.formats:
            outputs["csv"] = data.write_csv(frame, out_dir / "results.csv")
        baseline_thumbnail = visuals.thumbnail(baseline.pixels) if pictures else None
        if "xlsx" in config.formats:  # before the e-mail, which attaches it
            outputs["xlsx"] = write_xlsx(frame, meta, baseline_thumbnail, out_dir / "report.xlsx")
        if "html" in config.formats:
            outputs["html"] = write_html(
                frame, meta, baseline_thumbnail, out_dir / "report.html", templates=config.templates
            )
        summary = render_summary(frame, meta, out_dir)
        if config.email.wanted:
            exit_code = _deliver(
                config, frame, meta, summary, baseline_thumbnail, outputs, exit_code
            )
            meta["exit_code"] = exit_code
        if "json" in config.formats:
            outputs["json"] = data.write_json(frame, meta, out_dir / "results.json")
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
        ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        exit_code,
        out_dir,
    )
    return RunResult(exit_code, frame, meta, out_dir, outputs, summary)


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


def _deliver(config, frame, meta, summary, baseline_thumbnail, outputs, exit_code) -> int:
    """Write and send the e-mail; a failure to send is exit status 3, never silent."""
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
        meta,
        summary,
        sender=sender,
        recipients=email.to,
        series=config.series,
        baseline_thumbnail=baseline_thumbnail,
        attachments=attachments,
        omitted=tuple(path for path, _ in omitted),
        templates=config.templates,
    )
    if email.eml is not None:
        outputs["eml"] = write_atomic(email.eml, lambda tmp: tmp.write_bytes(msg.as_bytes()))
    meta["email"] = {"to": list(email.to), "subject": msg["Subject"], "sent": False, "error": None}
    if email.to:
        try:
            mail.send(msg, email.to, email.smtp)
        except mail.DeliveryError as exc:
            log.error("%s; the reports are in %s", exc, outputs.get("html", "the run folder"))
            meta["email"]["error"] = str(exc)
            return exc.exit_code
        meta["email"]["sent"] = True
        log.info("e-mailed the report to %s", ", ".join(email.to))
    return exit_code


SUMMARY_REASONS = 3  # per image in the printed summary; the CSV has them all


def _first_reasons(reasons: str) -> str:
    parts = [p for p in reasons.split(table.SEPARATOR) if p]
    if len(parts) <= SUMMARY_REASONS:
        return reasons
    more = len(parts) - SUMMARY_REASONS
    return table.SEPARATOR.join(parts[:SUMMARY_REASONS]) + f" (+{more} more)"


def render_summary(frame: pd.DataFrame, meta: dict[str, Any], out_dir: Path) -> str:
    flagged = frame[frame[table.STATUS] != table.Status.PASS.value].sort_values(
        table.STATUS, ascending=False, kind="stable"
    )
    return (
        environment()
        .get_template("summary.txt.j2")
        .render(
            version=__version__,
            verdict=table.verdict(meta["counts"]),
            total=len(frame),
            baseline=meta["baseline"]["file"],
            counts=meta["counts"],
            flagged=[
                {
                    "status": r[table.STATUS],
                    "file": r[table.FILE],
                    "reasons": _first_reasons(r[table.REASONS]),
                    "error": r[table.ERROR],
                }
                for r in flagged.to_dict("records")
            ],
            skipped=len(meta["skipped"]),
            out_dir=os.fspath(out_dir),
        )
    )
