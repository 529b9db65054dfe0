"""One run, top to bottom.

:func:`run` reads in the order the data flows:

1. ``inputs.discover`` finds the files (and what it skipped, and folders it could
   not read); the baseline is chosen, by the series' ``Session`` when the run has
   one (its recorded baseline), else by ``inputs.choose_baseline``;
2. the baseline is loaded and its statistics prepared once (``metrics.Reference``);
3. ``compare.compare_all`` compares every file, in worker processes;
4. ``table.build`` makes the DataFrame, the series' ``Session.judge`` adds its
   control rules, ``flags.apply`` gives every row its status and reasons;
5. the run's typed record (``record.RunRecord``) is built, and decides the exit status;
6. ``outputs.write`` writes the reports into a staging folder and moves them in
   together, inside the series' ``Session.recording`` (the history's transaction).

Where it sits: the CLI builds a ``Config`` and calls :func:`run`; a notebook or a
test can do the same without a subprocess. A run that cannot be done raises
``ReporterError`` (exit status 2); a file that cannot be compared becomes an
ERROR row and every other file still gets its row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from . import executor, flags, images, machine, masks, outputs, pool, table, visuals
from .align import UNMEASURED
from .compare import ImageResult, Job, Looks, Stopped, compare_all, quiet_opencv, watched
from .config import WORKERS_PAY_MPX, Config, auto_metrics, check, floors_for_range
from .errors import ReporterError
from .inputs import baseline_aliases, choose_baseline, discover, left_out, own_folders
from .metrics import Reference
from .names import shown, stored
from .record import BaselineFacts, RunRecord, SignalFacts, SkippedFile, Tool
from .series import Session
from .series.store import sha256_of
from .signal import GRID as SIGNAL_GRID

__all__ = [
    "closer_looks",
    "MAX_CLOSER_LOOKS",
    "run",
    "RunResult",
]

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


# --- the run ------------------------------------------------------------------------------


def run(config: Config, *, early: bool = False) -> RunResult:
    """Compare every input image with the baseline and write the outputs.

    A run with a series (and history on) holds the series' lock for its whole
    length (``series.Session``), reads the series' control period and records
    itself in the history.

    ``early``: the workers' fork server was started before this process's imports
    (``pool.start_early``, by the command line), so that workers pay at any size
    (``Config.effective_jobs``).
    """
    check(config)
    if not config.inputs:
        raise ReporterError("no inputs: give image files or folders")
    engine = executor.connect(
        config.scheduler,
        timeout=config.scheduler_timeout,
        send_bytes=config.send_bytes,
        max_bytes=config.max_bytes,
    )
    with engine as cluster, Session.open(config) as session:
        return _run(config, session, cluster, early)


def _own_folders(config: Config) -> dict | None:
    """The folders a recursive walk of the inputs leaves out: this run's reports, and the
    series history's copies of its baselines and its locks (``inputs.own_folders``)."""
    if not config.recursive:
        return None
    history = config.history_path().parent
    return own_folders(
        (config.out or config.reports_root, "reporter's reports (out)"),
        (history / "baselines", "the series history's copies of its baselines"),
        (history / "locks", "the series' lock files"),
    )


def _run(config: Config, session: Session | None, cluster=None, early: bool = False) -> RunResult:
    quiet_opencv()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    found, skipped, unreadable = discover(
        config.inputs, recursive=config.recursive, own=_own_folders(config), exclude=config.exclude
    )
    try:
        if session is not None:
            baseline_path, items = session.baseline(config, found)
        else:
            baseline_path, items = choose_baseline(config, found)
    except ReporterError as exc:
        if unreadable and not found:  # say why there was nothing, not "no baseline"
            first = unreadable[0]
            raise ReporterError(f"cannot read the folder {first.path}: {first.reason}") from None
        if not found and left_out(skipped):  # the patterns, not the folder, left nothing
            where = ", ".join(shown(str(p)) for p in config.inputs)
            raise ReporterError(f"no images in {where}{left_out(skipped)}") from None
        raise exc
    skipped += baseline_aliases(baseline_path, found, items)
    if not items and not unreadable:
        raise ReporterError(
            f"no images to compare besides the baseline in {', '.join(map(str, config.inputs))}"
            + left_out(skipped)
        )
    local = cluster is None
    baseline, reference, workers = _prepare(config, baseline_path, len(items), local, early)
    if local:
        config = replace(config, jobs=workers)
    else:
        config = replace(
            config, jobs=config.effective_jobs(len(items), reference.width * reference.height)
        )
    config = _watched(config, reference, _data_range(config, baseline))
    baseline_sha = sha256_of(baseline_path)
    out_dir, named = outputs.run_folder(config, started)
    log.info("comparing %d image(s) against %s", len(items), baseline_path)

    pictures = bool({"html", "xlsx"} & set(config.formats)) or config.email.wanted
    job = Job(
        reference,
        images.Geometry.of(baseline.pixels),
        config.max_pixels,
        config.strict_size,
        max_bytes=config.max_bytes,
        bits=config.bits,
        value_range=config.value_range,
        mapped=bool(baseline.mapped_from),
        baseline_small=visuals.baseline_for_maps(baseline.pixels) if pictures else None,
        align=config.comparison.align,
        looks=_looks(config) if pictures and "html" in config.formats else None,
    )
    results = compare_all(
        job,
        items,
        jobs=config.effective_jobs(),
        progress=config.progress,
        cluster=cluster,
        time_limit=config.time_limit or None,
    )
    early = {i: (r.look, r.look_diff) for i, r in enumerate(results) if r.look is not None}
    unmeasured = shifts_said_once(results)
    if unmeasured:
        log.info("%s", unmeasured)
    results += [_unread(u) for u in unreadable]
    frame = table.build(results)
    if session is not None:
        session.judge(config, frame, baseline_sha, started)
    frame = flags.apply(frame, config.limits, config.outliers, session.flags if session else None)
    for row in frame[frame[table.STATUS] == table.Status.ERROR.value].itertuples(index=False):
        log.warning("%s: ERROR %s", getattr(row, table.PATH), getattr(row, table.ERROR))
    if "html" in config.formats:
        frame = closer_looks(
            job, frame, items, config.jobs, cluster, early, config.time_limit or None
        )

    record = _record(
        config, frame, started, t0, baseline_path, baseline, reference, baseline_sha, skipped
    )
    if unmeasured:  # a fact of this baseline against these images, said with it
        record = replace(
            record, baseline=replace(record.baseline, notes=(*record.baseline.notes, unmeasured))
        )
    if session is not None and session.shown_as is not None:  # its own name, not the copy's
        record = replace(
            record, baseline=replace(record.baseline, file=shown(session.shown_as.name))
        )
    if session is not None:
        record = replace(record, off_series=session.off_series)
    written: dict[str, Path] = {}
    # The run enters the history in a transaction around the reports (which show its id):
    # committed once they are written, rolled back if writing them fails or the run is killed.
    recording = (
        session.recording(frame, record, out_dir)
        if session is not None
        else contextlib.nullcontext(None)
    )
    charts = session.charts(frame) if session is not None and pictures else []
    try:
        with recording as facts:
            if facts is not None:
                record = record.with_history(facts)
            record, summary = outputs.write(
                config, frame, record, baseline, pictures, charts, out_dir, written, reference.valid
            )
            if named:
                outputs.point_latest(out_dir)
                outputs.prune(out_dir, config.history.keep_runs)
            if session is not None:
                session.finish(record)
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
    return RunResult(record, frame, out_dir, written, summary)


SAID_ONCE_FROM = 3
"""Images, at least, whose shift was not measured before that is said once for the run."""


def shifts_said_once(results: list[ImageResult]) -> str:
    """When the shift was not measured on at least half of the compared images (and on
    SAID_ONCE_FROM or more), the sentence that says so for the run, and those images'
    own shift notes taken out; else "" and every note left.

    Against a baseline with too little detail to be located (a flat field: smooth
    vignetting and noise), every day's correlation peak is noise, and each row carried
    one of three notes (no clear peak, several peaks, a move that does not help) that
    said the same thing twenty times in different words. A few such rows in a run
    whose other images are measured keep theirs: there the note tells those images
    apart."""
    compared = [r for r in results if not r.error]
    hit = [r for r in compared if any(n.startswith(UNMEASURED) for n in r.notes)]
    if len(hit) < SAID_ONCE_FROM or 2 * len(hit) < len(compared):
        return ""
    for r in hit:
        r.notes = [n for n in r.notes if not n.startswith(UNMEASURED)]
    return (
        f"shift not measured on {len(hit)} of {len(compared)} images: their correlation "
        "with the baseline has no single clear peak, as when the baseline has too little "
        "detail to be located (a flat field) or the images changed throughout; their rows "
        "leave it blank, without a note each"
    )


MAX_CLOSER_LOOKS = 100
"""Flagged images that get 512-px pictures in report.html, most severe first (each costs
its pictures, about 40 KB of page, and one more decode unless made in the first pass);
also the most each process makes in the first pass (``compare.Looks``)."""


def _looks(config: Config) -> Looks:
    """The closer looks a process makes in the comparison's own pass (``compare.Looks``):
    of the images a fixed limit flags or the outlier rule would, at most MAX_CLOSER_LOOKS
    per process."""
    bounds = tuple(
        (name, bound)
        for name, limit in config.limits.items()
        for bound in (limit.warn, limit.fail)
        if bound is not None
    )
    rule = config.outliers
    return Looks(
        bounds,
        MAX_CLOSER_LOOKS,
        outliers=tuple(rule.metrics or ()) if rule.enabled else (),
        z=rule.z,
        floors=dict(rule.min_spread),
    )


def closer_looks(
    job: Job,
    frame: pd.DataFrame,
    items: list,
    jobs: int,
    cluster=None,
    early: dict[int, tuple[bytes | None, bytes | None]] | None = None,
    time_limit: float | None = None,
) -> pd.DataFrame:
    """``frame`` with the LOOK and LOOK_DIFF pictures of its flagged images (WARN and FAIL,
    most severe first, at most MAX_CLOSER_LOOKS): each is compared once more with
    ``Job.picture_side`` at LOOK_SIDE, so the closer look shows the very pixels the
    metrics saw (aligned, masked) at 512 px; the metrics themselves are not computed
    again, except with --align, where they decide the pixels. Which images are flagged
    is known only once the whole run is judged (the outlier and control rules), hence
    a second pass over the few, not 512-px pictures of every image kept until the end.

    ``early``: the closer looks already made in the first pass, by row position (those of
    images a fixed limit flags, ``compare.Looks``); the second pass makes the others."""
    status = frame[table.STATUS].astype(str)
    rank = {s.value: s.severity for s in table.Status}
    flagged = (table.Status.FAIL.value, table.Status.WARN.value)
    wanted = [i for i in range(len(items)) if status.iat[i] in flagged]
    wanted = sorted(wanted, key=lambda i: -rank[status.iat[i]])[:MAX_CLOSER_LOOKS]
    if not wanted or job.baseline_small is None:
        return frame
    early = early or {}
    missing = [i for i in wanted if i not in early]
    h, w = job.geometry.height, job.geometry.width
    workers = jobs if len(missing) * w * h >= WORKERS_PAY_MPX * 1e6 else 1
    looked = (
        compare_all(
            replace(job, picture_side=visuals.LOOK_SIDE, pictures_only=True, looks=None),
            [items[i] for i in missing],
            jobs=workers,
            progress=False,
            cluster=cluster,
            time_limit=time_limit,
        )
        if missing
        else []
    )
    look: list[bytes | None] = [None] * len(frame)
    diff: list[bytes | None] = [None] * len(frame)
    for i in wanted:
        if i in early:
            look[i], diff[i] = early[i]
    for i, result in zip(missing, looked, strict=True):
        look[i], diff[i] = result.thumbnail, result.diff_map
        if result.error:  # the row keeps its status and its smaller pictures
            log.warning("%s: no closer look: %s", result.path, result.error)
    out = frame.copy()
    out[table.LOOK] = pd.Series(look, index=frame.index, dtype=object)
    out[table.LOOK_DIFF] = pd.Series(diff, index=frame.index, dtype=object)
    return out


def _prepare(
    config: Config, path: Path, count: int, local: bool = True, early: bool = False
) -> tuple[images.LoadedImage, Reference]:
    """The baseline, loaded and masked, and its statistics: computed here when the images
    are compared here; worker processes (and Dask workers) get the pixels and compute
    their own, once each, so this process does not hold a copy it never uses (about 20
    float32 copies of the image: 264 MB and 0.85 s at 2048 px). The few small ones
    that take a while (the background, its noise and signal share, the hashes: 19-31 ms
    at 1024 px) are computed here, once, before the workers start, and travel with the
    pixels (``Reference.SMALL``), which reach the workers through shared memory
    (``pool.Shared``).

    The workers' fork server, when the run is large enough to want workers, starts
    right after the decode, so that it imports while the run goes on.
    """
    load = partial(
        images.load,
        path,
        max_pixels=config.max_pixels,
        max_bytes=config.max_bytes,
        value_range=config.value_range,
    )
    try:
        with watched(config.time_limit or None) as call:
            baseline = call(load)
    except images.ImageLoadError as exc:
        raise ReporterError(f"baseline {path}: {exc}") from None
    except Stopped:
        raise ReporterError(
            f"baseline {path}: still being read after {config.time_limit:g} s (time_limit)"
        ) from None
    if baseline.mapped_from:  # said once, for the run (and as its depth), not on every row
        low, high = config.value_range
        log.info(
            "baseline %s: %s values %g to %g compared on 16 bits (value_range)",
            path, baseline.mapped_from, low, high,
        )  # fmt: skip
    else:
        _say_bits(path, baseline, config.bits)
    baseline = images.widen(baseline, config.bits)
    h, w = baseline.pixels.shape[:2]
    # a float image is decoded at its own type's size before it is brought to 16 bits
    decoded = np.dtype(baseline.mapped_from or baseline.pixels.dtype).itemsize
    workers = _workers(config, count, baseline.pixels, early, decoded) if local else 0
    if local:
        pool.start(workers, count, baseline.pixels.dtype.name)
    ignored = tuple(masks.Region(*r) for r in config.comparison.ignore)
    valid = masks.build(w, h, ignored, config.comparison.mask)
    try:
        reference = Reference(baseline.pixels, valid, config.embedding)
        if workers == 1 or count <= 1:  # compared in this process
            reference.prepare()
        else:  # while the workers start: the statistics that are cheap to send them
            reference.prepare_small()
        return baseline, reference, workers
    except ValueError as exc:
        raise ReporterError(f"baseline {path}: {exc}") from None


def _workers(
    config: Config, count: int, pixels: np.ndarray, early: bool, itemsize: int | None = None
) -> int:
    """The local worker processes: ``Config.effective_jobs`` (the cores this process may
    use), at most as many as the available memory holds for images of the baseline's
    size (``machine.worker_bytes``: 1.2 GB at 24 megapixels in colour), and one, this
    process, when not even two fit. ``itemsize``: of the images' decoded pixels, when it
    is not the baseline's (a float32 TIFF's 4 bytes). Lowering ``--jobs N`` is a
    warning; lowering the automatic count is said at INFO. When even this process lacks
    the memory, a warning says so before the out-of-memory killer can end the run
    without a word."""
    size = pixels.shape[0] * pixels.shape[1]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    itemsize = itemsize or pixels.dtype.itemsize
    need = machine.worker_bytes(size, channels, itemsize)
    wanted = config.effective_jobs(count, size, early)
    available = machine.available_memory()
    workers = wanted
    fit = machine.workers_that_fit(size, channels, itemsize, available)
    if wanted > 1 and count > 1 and fit is not None and fit < min(wanted, count):
        workers = max(1, fit)
        log.log(
            logging.WARNING if config.jobs else logging.INFO,
            "%s: each needs about %s for images of %.0f megapixels, and %s of memory is "
            "available (%d %% of it planned for workers)",
            f"{workers} worker process(es), not {wanted}"
            if workers > 1
            else f"comparing in this process, not {wanted} workers",
            _gigabytes(need),
            size / 1e6,
            _gigabytes(available),
            round(machine.MEMORY_SHARE * 100),
        )
    alone = need - machine.PROCESS_BYTES  # this process is already running
    if workers <= 1 and available is not None and alone > available:
        log.warning(
            "comparing images of %.0f megapixels takes about %s, and %s of memory is "
            "available: the out-of-memory killer may end this run (a lower max_pixels "
            "refuses such images)",
            size / 1e6,
            _gigabytes(alone),
            _gigabytes(available),
        )
    return workers


def _gigabytes(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def _say_bits(path: Path, baseline: images.LoadedImage, bits: int) -> None:
    """What the baseline's 16-bit values say about ``bits``: a 12-bit camera's TIFF uses
    12 of its 16 bits, and compared at L = 65535 its SSIM stays near 1 whatever changes.
    L is never taken from the data; the log says which setting would give it. A TIFF
    packed at fewer bits, and a PNG whose sBIT chunk gives fewer, are on the 16-bit scale
    already (``LoadedImage.scaled_bits``)."""
    if baseline.pixels.dtype.name != "uint16" or baseline.scaled_bits:
        return
    used = int(baseline.pixels.max()).bit_length()
    if bits == 16 and used <= 14:
        depth = min(d for d in (8, 10, 12, 14) if d >= used)  # the cameras' usual depths
        log.info(
            "baseline %s: its 16-bit values use %d bits (at most %d), and SSIM and PSNR "
            "take L = 65535 from the pixel type; for a %d-bit camera set bits = %d "
            "(--bits %d)",
            path, used, (1 << used) - 1, depth, depth, depth,
        )  # fmt: skip
    elif used > bits:
        log.warning(
            "baseline %s: values up to %d, over %d bits: clipped (bits = %d)",
            path, int(baseline.pixels.max()), bits, bits,
        )  # fmt: skip


def _unread(folder: SkippedFile) -> ImageResult:
    """A folder that could not be read is an ERROR row of its own: its images were not seen."""
    return ImageResult(
        file=stored(folder.path) + "/",
        path=folder.path,
        error=f"cannot read this folder: {folder.reason}; the images in it were not compared",
    )


def _record(
    config, frame, started, t0, baseline_path, baseline, reference, sha, skipped
) -> RunRecord:
    """The run's record, once its rows are flagged."""
    return RunRecord(
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
            significant_bits=min(config.bits, 8 * reference.pixels.dtype.itemsize),
            mapped_from=baseline.mapped_from,
            value_range=config.value_range if baseline.mapped_from else None,
            bytes=baseline_path.stat().st_size,
            sha256=sha,
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
    )


def _data_range(config: Config, baseline: images.LoadedImage) -> float:
    """The range of the values this run compares, in the units its MSE is given in
    (``compare.compare_file``): HI - LO over ``value_range``, 2^bits - 1 for a 16-bit
    baseline (``bits``), 255 for an 8-bit one."""
    if baseline.mapped_from:
        low, high = config.value_range
        return high - low
    if baseline.pixels.dtype == np.uint16:
        return float((1 << min(config.bits, 16)) - 1)
    return 255.0


def _watched(config: Config, reference: Reference, data_range: float = 255.0) -> Config:
    """``config`` with the statistical rules' "auto" metric sets chosen for this baseline,
    and their default floors for MSE brought to the range of its values (``data_range``:
    ``config.floors_for_range``)."""
    sparse = reference.sparse
    outliers = replace(
        config.outliers,
        metrics=auto_metrics(config.outliers.metrics, sparse, "outlier"),
        min_spread=floors_for_range(config.outliers.min_spread, data_range),
    )
    history = replace(
        config.history,
        metrics=auto_metrics(config.history.metrics, sparse, "control"),
        chart_metrics=auto_metrics(config.history.chart_metrics, sparse, "chart"),
        min_sd=floors_for_range(config.history.min_sd, data_range),
    )
    if config.outliers.metrics is None or config.history.metrics is None:
        log.info(
            "%s baseline (%.1f %% of it carries signal): the statistical rules watch %s",
            "sparse" if sparse else "dense",
            100 * reference.signal_share,
            ", ".join(outliers.metrics),
        )
    return replace(config, outliers=outliers, history=history)
