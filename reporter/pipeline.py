"""One run, top to bottom: find the files, load the baseline, compare, flag, write.

Where it sits: the CLI builds a ``Config`` and calls :func:`run`; a notebook or a
test can do the same without a subprocess. A run that cannot be done raises
``ReporterError`` (exit status 2); a file that cannot be compared becomes an
ERROR row and every other file still gets its row.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
from tqdm import tqdm

from . import __version__, flags, images, table
from .config import Config, ReporterError, check
from .metrics import METRICS, Reference
from .render import data
from .render.templates import environment

log = logging.getLogger("reporter")

PROGRESS_MIN_IMAGES = 10  # below this a progress bar is only noise


@dataclass(frozen=True)
class Input:
    """A file to compare and how it is named in the table."""

    path: Path
    file: str  # relative to the input it came from


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
        elif given.is_dir():
            pattern = "**/*" if recursive else "*"
            for path in sorted(given.glob(pattern), key=lambda p: p.relative_to(given).as_posix()):
                rel = path.relative_to(given)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.DS_Store, ._x.png, .git)
                if path.is_dir():
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
        elif given.exists():
            raise ReporterError(f"{given} is neither a file nor a folder")
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


@dataclass(frozen=True)
class _Job:
    reference: Reference
    geometry: images.Geometry
    max_pixels: int
    strict_size: bool


def compare_file(job: _Job, item: Input) -> table.ImageResult:
    """One file against the baseline; any failure becomes an ERROR result, never an exception."""
    result = table.ImageResult(file=item.file, path=str(item.path))
    try:
        loaded = images.load(item.path, max_pixels=job.max_pixels)
        result.width, result.height = loaded.width, loaded.height
        pixels, result.notes = images.conform(loaded, job.geometry, strict_size=job.strict_size)
        ref = job.reference
        if pixels.ndim == 2 and ref.channels != 1:
            ref = ref.grey
        result.metrics = ref.compare(pixels)
    except images.ImageLoadError as exc:
        result.error = str(exc)
    except Exception as exc:  # one bad file must not cost the other rows
        log.debug("unexpected error on %s", item.path, exc_info=True)
        result.error = f"unexpected {type(exc).__name__} while comparing: {exc}"
    return result


_worker_job: _Job | None = None  # set once in each worker process by _init_worker


def quiet_opencv() -> None:
    """Keep OpenCV's own decoder warnings out of the log: each failure is an ERROR row."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _init_worker(job: _Job) -> None:
    global _worker_job
    quiet_opencv()
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would compete
    _worker_job = job


def _work(item: Input) -> table.ImageResult:
    if _worker_job is None:
        raise RuntimeError("worker used before _init_worker")
    return compare_file(_worker_job, item)


@contextmanager
def _opencv_threads(n: int) -> Iterator[None]:
    saved = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(saved)


def _pool_context() -> multiprocessing.context.BaseContext:
    """A clean process for each worker, never a fork of this one.

    A forked child inherits OpenCV's thread pool in whatever state the parent
    left it and can deadlock on its first parallel call (seen as a hang as soon
    as the parent had blurred a large image). The fork server is a fresh
    interpreter that imports reporter once; workers fork from it quickly.
    """
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["reporter.pipeline"])
        return ctx
    return multiprocessing.get_context("spawn")


def compare_all(
    job: _Job, items: list[Input], *, jobs: int, progress: bool
) -> list[table.ImageResult]:
    """Every item's result, in the order of ``items``."""
    bar = tqdm(
        total=len(items),
        unit="img",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty() and len(items) > PROGRESS_MIN_IMAGES),
    )
    results: list[table.ImageResult | None] = [None] * len(items)
    with bar:
        if jobs <= 1 or len(items) <= 1:
            with _opencv_threads(1):
                for i, item in enumerate(items):
                    results[i] = compare_file(job, item)
                    bar.update()
        else:
            with ProcessPoolExecutor(
                max_workers=min(jobs, len(items)),
                mp_context=_pool_context(),
                initializer=_init_worker,
                initargs=(job,),
            ) as pool:
                futures = {pool.submit(_work, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BrokenProcessPool:
                        item = items[i]
                        results[i] = table.ImageResult(
                            file=item.file,
                            path=str(item.path),
                            error="the worker process comparing it died (out of memory?)",
                        )
                    bar.update()
    return [r for r in results if r is not None]


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
    try:
        baseline = images.load(baseline_path, max_pixels=config.max_pixels)
        reference = Reference(baseline.pixels).prepare()
    except (images.ImageLoadError, ValueError) as exc:
        raise ReporterError(f"baseline {baseline_path}: {exc}") from None
    out_dir = _out_dir(config, started)
    log.info("comparing %d image(s) against %s", len(items), baseline_path)

    job = _Job(
        reference, images.Geometry.of(baseline.pixels), config.max_pixels, config.strict_size
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
        if "json" in config.formats:
            outputs["json"] = data.write_json(frame, meta, out_dir / "results.json")
    except OSError as exc:
        raise ReporterError(
            f"cannot write the results to {out_dir}: {exc.strerror or exc}"
        ) from None

    summary = render_summary(frame, meta, out_dir)
    log.info(
        "%d image(s): %s; exit status %d; results in %s",
        len(frame),
        ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        exit_code,
        out_dir,
    )
    return RunResult(exit_code, frame, meta, out_dir, outputs, summary)


def verdict(counts: dict[str, int]) -> str:
    for status in ("ERROR", "FAIL", "WARN"):
        if counts.get(status):
            return status
    return "PASS"


def render_summary(frame: pd.DataFrame, meta: dict[str, Any], out_dir: Path) -> str:
    flagged = frame[frame[table.STATUS] != table.Status.PASS.value].sort_values(
        table.STATUS, ascending=False, kind="stable"
    )
    return (
        environment()
        .get_template("summary.txt.j2")
        .render(
            version=__version__,
            verdict=verdict(meta["counts"]),
            total=len(frame),
            baseline=meta["baseline"]["file"],
            counts=meta["counts"],
            flagged=[
                {
                    "status": r[table.STATUS],
                    "file": r[table.FILE],
                    "reasons": r[table.REASONS],
                    "error": r[table.ERROR],
                }
                for r in flagged.to_dict("records")
            ],
            skipped=len(meta["skipped"]),
            out_dir=os.fspath(out_dir),
        )
    )
