"""One file against the baseline, in this process or in worker processes.

Where it sits: between ``inputs.discover`` and ``table.build``. Each file is
loaded, brought to the baseline's geometry and measured by the shared
``metrics.Reference``; whatever goes wrong becomes an ERROR result, never an
exception. Worker processes import only this module's dependencies (OpenCV,
numpy, Pillow), not pandas, so they start quickly.
"""

from __future__ import annotations

import logging
import math
import multiprocessing.connection
import os
import queue
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import heap, images, visuals
from .align import Shift, compensate
from .metrics import METRICS, Reference
from .pool import context as pool_context

if TYPE_CHECKING:  # imported where a bar is made: workers, and their fork server, draw none
    from tqdm import tqdm

__all__ = [
    "aligned",
    "compare_all",
    "compare_file",
    "ImageResult",
    "in_workers",
    "worker_started",
    "Input",
    "Job",
    "Looks",
    "MAX_WORKER_DEATHS",
    "NOT_JUDGES",
    "process_alive",
    "PROGRESS_MIN_IMAGES",
    "quiet_opencv",
]

log = logging.getLogger("reporter")

PROGRESS_MIN_IMAGES = 10  # below this a progress bar is only noise


@dataclass(frozen=True)
class Input:
    """A file to compare and how it is named in the table."""

    path: Path
    file: str  # relative to the input it came from
    # The file's bytes, read by a Dask cluster's client (--send-bytes); None: read the path.
    data: bytes | None = field(default=None, repr=False)


@dataclass
class ImageResult:
    """What comparing one file gave: metric values, or the error that stopped it."""

    file: str
    path: str
    metrics: dict[str, float] | None = None
    width: int | None = None
    height: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    shift_x: float | None = None  # measured translation against the baseline, px (align.py)
    shift_y: float | None = None
    local_cell: tuple[int, int, int, int] | None = None  # psnr_local's cell: x0, y0, x1, y1
    thumbnail: bytes | None = None  # JPEG, longest side Job.picture_side (visuals.py)
    diff_map: bytes | None = None  # JPEG, 1 - SSIM at thumbnail scale
    icon: bytes | None = None  # JPEG, longest side 48 px
    look: bytes | None = None  # JPEG, LOOK_SIDE: made in this pass when Looks takes the image
    look_diff: bytes | None = None  # its diff map at LOOK_SIDE


@dataclass
class Looks:
    """Which images get their closer look (``pipeline.closer_looks``: LOOK_SIDE pictures)
    while their pixels are in memory, instead of being decoded again in a second pass.

    An image is taken when a fixed limit flags it (it stays flagged whatever else the
    run decides), or when the outlier rule would call it an outlier among the images
    this process has compared so far (from PREDICT_FROM of them on): a guess, since
    the rule sees the whole run, whose misses get their closer look in the second
    pass and whose false alarms are dropped. The pictures are the same either way.

    ``left`` is how many this process may still make. Each process (a worker, or the
    run's own) has its own copy, so a run where every image looks bad holds at most
    that many per process, not one per image.
    """

    limits: tuple[tuple[str, float], ...]  # (metric, bound): a WARN or FAIL bound
    left: int
    outliers: tuple[str, ...] = ()  # the outlier rule's metrics; () when it is off
    z: float = math.inf
    floors: dict[str, float] = field(default_factory=dict)
    seen: dict[str, deque] = field(default_factory=dict)

    PREDICT_FROM = 3  # the rule's own smallest min_images
    HISTORY = 200  # the latest values the guess weighs, per metric (a guess of the
    # nine metrics of a dense baseline costs 0.25 ms at 200 values, 0.79 with np.median)

    def take(self, values: dict[str, float] | None) -> bool:
        """Whether to make the closer look of an image with these metric ``values``."""
        if not values:
            return False
        found = False
        for name in self.outliers:
            value = values.get(name)
            if value is None or not math.isfinite(value):
                continue
            seen = self.seen.setdefault(name, deque(maxlen=self.HISTORY))
            # A copy, this value last: a Dask worker's threads share this object, and
            # list() of a deque is one step no other thread can come between.
            values_seen = [*list(seen), value]
            seen.append(value)
            if found or self.left <= 0 or len(values_seen) < self.PREDICT_FROM:
                continue
            m = METRICS[name]
            scored = m.robust_z(values_seen, self.floors.get(name, 0.0))
            found = scored is not None and m.outlying(scored[0][-1], self.z)
        for name, bound in self.limits:
            value = values.get(name)
            if value is not None and not math.isnan(value) and METRICS[name].worse(value, bound):
                found = True
        if found and self.left > 0:
            self.left -= 1
            return True
        return False


@dataclass(frozen=True)
class Job:
    """What every comparison of a run shares."""

    reference: Reference
    geometry: images.Geometry
    max_pixels: int
    strict_size: bool
    max_bytes: int | None = None  # larger files are ERROR rows, not read
    bits: int = 16  # significant bits of 16-bit images (images.widen)
    value_range: tuple[float, float] | None = None  # of float images (images.to_16_bits)
    mapped: bool = False  # the baseline was brought to 16 bits over value_range
    baseline_small: np.ndarray | None = None  # set when a report needs thumbnails and diff maps
    align: bool = False  # compensate each image's shift when that makes it more like the baseline
    picture_side: int = visuals.THUMB_SIDE  # LOOK_SIDE for the closer look at flagged images
    # The closer look's pass: the pictures only (the metrics are known). With --align the
    # metrics still run, because they decide which pixels the pictures show.
    pictures_only: bool = False
    looks: Looks | None = None  # the closer looks made in this pass, with baseline_small


def compare_file(job: Job, item: Input) -> ImageResult:
    """One file against the baseline; any failure becomes an ERROR result, never an exception."""
    result = ImageResult(file=item.file, path=str(item.path))
    try:
        loaded = images.load(
            item.path,
            max_pixels=job.max_pixels,
            max_bytes=job.max_bytes,
            data=item.data,
            value_range=job.value_range,
        )
        loaded = images.widen(loaded, job.bits)
        result.width, result.height = loaded.width, loaded.height
        halved = None  # the image's halvings, shared by its pictures (visuals.Halvings)
        if job.baseline_small is not None:
            halved = visuals.Halvings(loaded.pixels)
            made = _visual(lambda p: visuals.thumbnails(p, job.picture_side), halved, result)
            result.thumbnail, result.icon = made or (None, None)
        pixels, result.notes = images.conform(loaded, job.geometry, strict_size=job.strict_size)
        ref = job.reference
        if pixels.ndim == 2 and ref.channels != 1:
            ref = ref.grey
        valid = None
        if job.align or not job.pictures_only:
            # Measured on what the metrics see (a timestamp in an ignored region cannot
            # move it), from the pyramid they use.
            pair = ref.pair(pixels)
            shift = pair.shift
            if shift.note:
                result.notes.append(shift.note)
            if shift.found:
                result.shift_x, result.shift_y = shift.dx, shift.dy
            if job.align and shift.found and shift.size > 0:
                result.metrics, moved, valid, note = aligned(ref, pixels, shift, pair.values())
                result.notes.append(note)
                if moved is not pixels:
                    pixels, pair = moved, ref.pair(moved, valid)
            else:
                result.metrics = pair.values()
            result.local_cell = pair.worst_cell()
            # MSE in the data's own units: value_range's, or 12-bit values, not 16-bit steps
            if "mse" in result.metrics and job.mapped:
                low, high = job.value_range
                result.metrics["mse"] *= ((high - low) / 65535.0) ** 2
            elif "mse" in result.metrics and job.bits < 16 and pixels.dtype == np.uint16:
                result.metrics["mse"] /= float(1 << (16 - job.bits)) ** 2
        if job.baseline_small is not None:  # dark where nothing is compared, as the metrics see it
            shown, _ = ref.masked(pixels, valid)
            # Not moved, resized nor masked: the thumbnail's halvings; else its own, shared
            # by the two diff maps.
            shown = halved if shown is loaded.pixels else visuals.Halvings(shown)
            result.diff_map = _visual(
                lambda p: visuals.diff_map(job.baseline_small, p, job.picture_side), shown, result
            )
            if job.looks is not None and _take_look(job.looks, result):
                result.look = _visual(
                    lambda p: visuals.thumbnails(p, visuals.LOOK_SIDE)[0], halved, result
                )
                result.look_diff = _visual(
                    lambda p: visuals.diff_map(job.baseline_small, p, visuals.LOOK_SIDE),
                    shown,
                    result,
                )
    except images.ImageLoadError as exc:
        result.error = str(exc)
    except Exception as exc:  # one bad file must not cost the other rows
        log.debug("unexpected error on %s", item.path, exc_info=True)
        result.error = f"unexpected {type(exc).__name__} while comparing: {exc}"
    return result


# Metrics that do not judge an alignment: the shift itself, and the signal metrics,
# which weigh how much ink there is and in which grid cell (a resampled move shifts ink
# across cell borders and leaves out the picture's edge, whether or not the image now
# lies better).
NOT_JUDGES = ("shift", "signal_change", "occupancy_change")


def _no_worse(candidate: dict[str, float], plain: dict[str, float]) -> bool:
    """Whether no metric says ``candidate`` is less like the baseline than ``plain``."""
    for name, m in METRICS.items():
        a, b = candidate.get(name), plain.get(name)
        if name in NOT_JUDGES or a is None or b is None or math.isnan(a) or math.isnan(b):
            continue
        if m.two_sided:
            a, b = abs(a), abs(b)
        if (a < b - 1e-12) if m.higher_is_better and not m.two_sided else (a > b + 1e-12):
            return False
    return True


def aligned(
    ref: Reference, pixels: np.ndarray, shift: Shift, plain: dict[str, float] | None = None
) -> tuple[dict[str, float], np.ndarray, np.ndarray | None, str]:
    """--align: the metrics of ``pixels`` moved back by its shift, when that makes it more
    like the baseline; else of ``pixels`` as they are. Also the pixels and valid mask used,
    and a note saying which. ``plain``: the metrics of ``pixels`` as they are, when known.

    Candidates: the whole-pixel move (an exact copy, no resampling blur) and the
    sub-pixel one (full-resolution estimate). One is kept only if no metric that
    depends on where things are (all but ``NOT_JUDGES``) gets worse than without
    moving; of those, the one with the higher pixel-level SSIM.
    """
    if plain is None:
        plain = ref.compare(pixels, shift=shift)
    fine = ref.aligner.refine(pixels, shift)
    whole = (float(round(fine.dx)), float(round(fine.dy)))
    candidates = []
    if whole != (0.0, 0.0):
        candidates.append(("whole pixels", whole))
    if max(abs(fine.dx - whole[0]), abs(fine.dy - whole[1])) > 0.05:
        candidates.append(("sub-pixel", (fine.dx, fine.dy)))
    best = (plain, pixels, None, "")
    for label, (dx, dy) in candidates:
        moved, valid = compensate(pixels, dx, dy)
        values = ref.compare(moved, valid=valid, shift=shift)
        if _no_worse(values, plain) and values["ssim"] > best[0]["ssim"]:
            best = (
                values,
                moved,
                valid,
                f"aligned: moved back by {dx:+.2f}, {dy:+.2f} px ({label})",
            )
    if not best[3]:
        size = math.hypot(fine.dx, fine.dy)
        why = "made some metric worse" if candidates else "is too small to move by"
        return plain, pixels, None, f"not aligned: moving it back by {size:.2f} px {why}"
    return best


def _take_look(looks: Looks, result: ImageResult) -> bool:
    """``looks.take`` of the result's metrics; a guess that fails is no guess, never an
    ERROR row (the second pass makes the closer look if the image is flagged)."""
    try:
        return looks.take(result.metrics)
    except Exception:  # noqa: BLE001 - only the guess is lost
        log.debug("no guess whether %s is flagged", result.path, exc_info=True)
        return False


def _visual(make, pixels: np.ndarray | visuals.Halvings, result: ImageResult) -> bytes | None:
    """A picture for the reports; failing to make one never costs the row its metrics."""
    try:
        return make(pixels)
    except Exception as exc:  # noqa: BLE001 - reported in the row's notes
        log.debug("no picture for %s", result.path, exc_info=True)
        result.notes.append(f"no picture: {type(exc).__name__}: {exc}")
        return None


_worker_job: Job | None = None  # set once in each worker process by _init_worker


def quiet_opencv() -> None:
    """Keep OpenCV's own decoder warnings out of the log: each failure is an ERROR row."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _watch(parent: int) -> None:
    """End this worker as soon as the run's main process is gone.

    A worker blocks reading its next task from a pipe that it holds open
    itself, so it never sees its parent die: without this, a main process
    killed by a scheduler's timeout (SIGKILL) left its workers, the fork server
    and the resource tracker alive, holding the caller's stderr open.
    ``pidfd_open`` (Linux 5.3) wakes the moment the parent exits; elsewhere the
    parent is polled twice a second.
    """
    try:
        handle = os.pidfd_open(parent)
    except (AttributeError, OSError):
        handle = None

    def wait() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while process_alive(parent):
                time.sleep(0.5)
        os._exit(1)  # from this thread, even while the main thread is in a decoder

    threading.Thread(target=wait, name="reporter-parent-watch", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def worker_started(parent: int) -> None:
    """What every local worker process does first (compare's and the collections')."""
    # Ctrl-C and a closed terminal reach every process of the group: the main
    # process handles them and ends the workers, which must not print their own
    # tracebacks or look like a crashed decoder.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watch(parent)
    quiet_opencv()
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would compete
    heap.keep_freed()  # each image reuses the memory the one before it freed


def _init_worker(job: Job, parent: int) -> None:
    global _worker_job
    worker_started(parent)
    if job.align or not job.pictures_only:  # a pass for pictures only needs no statistics
        job.reference.prepare()  # once per worker, before its first image
    _worker_job = job


def _work(item: Input) -> ImageResult:
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


MAX_WORKER_DEATHS = 5  # past this, something is wrong with the machine, not with an image

_started = None
"""In a worker of a pass with a time limit: when it began each item (``time.monotonic``,
the same clock in every process of the machine), by item index, in memory it shares
with the parent (``_pool_pass``); 0 until begun."""


def _init_timed(started, init, initargs: tuple) -> None:
    global _started
    _started = started
    init(*initargs)


def _timed(work, i: int, item):
    if _started is not None:
        _started[i] = time.monotonic()
    return work(item)


def _finished(futures: dict, started, limit: float | None, workers: int, late: list[int]):
    """The futures as they finish; with a ``limit``, until an item is past it (then its
    index is added to ``late``, and the rest are left).

    Items go to the workers in turn (the executor's call queue is first in, first out),
    so the items begun are among the first 2 x workers + 1 unfinished ones: only those
    are waited on and watched, which keeps each wait short at any number of items (a
    wait on every pending future would be quadratic in the items: 10,000 trivial items
    took 1.1 s through two workers this way, 1.7 s with ``as_completed``)."""
    if not limit:
        yield from as_completed(futures)
        return
    order, seen, head = list(futures), set(), 0
    span, poll = 2 * workers + 2, min(1.0, limit / 10)
    while head < len(order):
        window, j = [], head
        while j < len(order) and len(window) < span:
            if order[j] not in seen:
                window.append(order[j])
            j += 1
        finished, _ = wait(window, timeout=poll, return_when=FIRST_COMPLETED)
        for future in finished:
            seen.add(future)
            yield future
        while head < len(order) and order[head] in seen:
            head += 1
        now = time.monotonic()
        late += sorted(
            i
            for f in window
            if not f.done() and started[(i := futures[f])] and now - started[i] > limit
        )
        if late:
            return


def _pool_pass(
    work,
    init,
    initargs: tuple,
    items: list,
    indices: list[int],
    workers: int,
    bar: tqdm,
    limit: float | None = None,
) -> tuple[dict[int, object], list[int], list[int]]:
    """``work(items[i])`` for ``indices`` in a fresh pool whose workers run ``init(*initargs)``
    first: the results, what a dead worker lost, and the items stopped at ``limit`` seconds
    (each worker notes when it begins an item; the pool's workers are ended at the first
    item past the limit, and the others they held are lost, to be tried again)."""
    done: dict[int, object] = {}
    lost: list[int] = []
    context = pool_context()
    started = context.RawArray("d", len(items)) if limit else None
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(indices)),
        mp_context=context,
        initializer=_init_timed,
        initargs=(started, init, initargs),
    )
    try:
        futures: dict = {}
        try:
            for i in indices:
                futures[pool.submit(_timed, work, i, items[i])] = i
        except (OSError, EOFError) as exc:  # a worker (or the fork server) died as it started
            log.warning("a worker process died as it started (%s)", exc.__class__.__name__)
            _terminate(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            return done, list(indices), []
        late: list[int] = []
        for future in _finished(futures, started, limit, workers, late):
            i = futures[future]
            try:
                done[i] = future.result()
                bar.update()
            except BrokenProcessPool:
                lost.append(i)
        if late:
            _terminate(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            return done, [i for i in indices if i not in done and i not in late], late
    except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: stop now, not after the queue
        _terminate(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # Every result is in. When no worker died, the workers exit (each freeing its few
    # hundred MB: 10-14 ms) while the run goes on to its table and reports; the pool's
    # own thread still joins them, and Python joins that thread before it exits.
    pool.shutdown(wait=bool(lost), cancel_futures=True)
    return done, sorted(lost), []


def in_workers(
    work,
    init,
    initargs: tuple,
    items: list,
    workers: int,
    bar: tqdm,
    died,
    limit: float | None = None,
) -> list:
    """``work(item)`` of every item, in order, in ``workers`` processes that first run
    ``init(*initargs)``.

    When a worker process dies (a crash in a decoder, the out-of-memory killer),
    the pool loses every item it had not finished. The first of them is then
    tried alone in a fresh worker: if that worker dies too, the item gets
    ``died(item)``; the others are tried again. One bad file costs its own row,
    not its neighbours'.

    ``limit``: seconds an item may take in a worker (``time_limit``). An item past it
    (a decoder that hangs) gets ``died(item, limit=limit)`` and is not tried again; the
    workers are ended, and the other items they held are tried again.
    """
    results: dict[int, object] = {}
    pending = list(range(len(items)))
    deaths = 0
    while pending:
        done, lost, late = _pool_pass(work, init, initargs, items, pending, workers, bar, limit)
        results.update(done)
        for i in late:
            results[i] = died(items[i], limit=limit)
            bar.update()
        if late:
            pending = lost
            continue
        if not lost:
            break
        deaths += 1
        log.warning("a worker process died; trying %d file(s) again", len(lost))
        first, pending = lost[0], lost[1:]
        alone, again, late = _pool_pass(work, init, initargs, items, [first], 1, bar, limit)
        results.update(alone)
        if late:
            results[first] = died(items[first], limit=limit)
            bar.update()
        elif again:
            results[first] = died(items[first])
            bar.update()
        if deaths >= MAX_WORKER_DEATHS:
            for i in pending:
                results[i] = died(items[i], f"after {deaths} worker processes died")
            break
    return [results[i] for i in range(len(items))]


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers at once; ``shutdown`` alone would let each finish its image.

    ``_processes`` is the executor's own table of worker processes (CPython
    3.8-3.14); there is no public way to stop a running task.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    # SIGTERM ends a worker even inside a decoder; one that outlives it (a read that
    # sleeps in the kernel, of a network share that stopped answering) gets SIGKILL,
    # which ends such a read where the kernel allows, rather than a pool that never ends.
    alive = {process.sentinel: process for process in processes}
    ended = multiprocessing.connection.wait(list(alive), timeout=KILL_AFTER) if alive else []
    for sentinel in set(alive) - set(ended):
        alive[sentinel].kill()


KILL_AFTER = 2.0  # s after SIGTERM


def progress_bar(total: int, progress: bool) -> tqdm:
    """A progress bar on standard error, drawn only when it is a terminal (never in a
    cron log) and there are more than PROGRESS_MIN_IMAGES images."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        file=sys.stderr,
        disable=not (progress and _on_terminal(sys.stderr) and total > PROGRESS_MIN_IMAGES),
    )


def _on_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal; None (a process started with standard error
    closed, ``2>&-``) is not, and was an AttributeError that ended the run."""
    return stream is not None and stream.isatty()


def compare_all(
    job: Job,
    items: list[Input],
    *,
    jobs: int,
    progress: bool,
    cluster=None,
    time_limit: float | None = None,
) -> list[ImageResult]:
    """Every item's result, in the order of ``items``: on ``cluster`` (a Dask cluster,
    ``executor.connect``) when given, else in this process or ``jobs`` local workers
    (:func:`in_workers`: a worker that dies costs only the image that killed it)."""
    bar = progress_bar(len(items), progress)
    results: dict[int, ImageResult] = {}
    with bar:
        if cluster is not None:
            return cluster.map(job, items, bar, died=_died, limit=time_limit)
        if jobs <= 1 or len(items) <= 1:
            with _opencv_threads(1), heap.kept(), watched(time_limit) as call:
                for i, item in enumerate(items):
                    try:
                        results[i] = call(compare_file, job, item)
                    except Stopped:
                        results[i] = _died(item, limit=time_limit)
                    bar.update()
            return [results[i] for i in range(len(items))]
        return in_workers(
            _work, _init_worker, (job, os.getpid()), items, jobs, bar, _died, time_limit
        )


class Stopped(Exception):
    """A call made through ``watched`` that was still going at the time limit."""


@contextmanager
def watched(limit: float | None) -> Iterator:
    """For items handled in this process: ``call(fn, *args)`` returns ``fn(*args)``, made
    in a thread of this process (one, reused); one still going after ``limit`` seconds
    raises Stopped, and is left to its thread, which goes on in the background (a
    daemon thread: the process never waits for it) while the next call starts another.
    Nothing can stop a decoder inside the process that waits for it, but the run need
    not wait: the image is its ERROR row, and the run writes its reports. A decode left
    running gives descriptor 2 back (``native.abandon``); the command ends with
    ``os._exit`` (``cli.exit_now``), so no C library's exit code runs beside it.

    Only in the ``reporter`` command's own process (``cli.entry``): a program that calls
    ``pipeline.run`` (a notebook, a service) gets plain calls, each as long as it takes,
    and no thread left behind in it."""
    if not limit or not getattr(sys.modules.get("reporter.cli"), "_ONE_COMMAND", False):
        yield lambda fn, *args: fn(*args)
        return
    runner = _Runner(limit)
    try:
        yield runner.call
    finally:
        runner.close()


class _Runner:
    """One thread that makes the calls of ``watched``, replaced when one is left behind."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._thread: threading.Thread | None = None
        self._tasks = None

    @staticmethod
    def _serve(tasks) -> None:
        while (task := tasks.get()) is not None:
            fn, args, box, done = task
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                box.append((False, exc))
            finally:
                done.set()

    def call(self, fn, *args):
        if self._thread is None:
            self._tasks = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._serve, args=(self._tasks,), name="reporter-in-process", daemon=True
            )
            self._thread.start()
        box: list = []
        done = threading.Event()
        self._tasks.put((fn, args, box, done))
        try:
            finished = done.wait(self.limit)
        except BaseException:  # Ctrl-C, SIGTERM: their log line must reach descriptor 2
            self._leave()
            raise
        if not finished:
            self._leave()
            raise Stopped
        ok, value = box[0]
        if ok:
            return value
        raise value

    def _leave(self) -> None:
        """Leave the call in progress to its thread, which ends should the call ever end."""
        from . import native

        self._tasks.put(None)
        native.abandon(self._thread)
        self._thread = self._tasks = None

    def close(self) -> None:
        if self._tasks is not None:
            self._tasks.put(None)
            self._thread = self._tasks = None


def _died(item: Input, why: str = "", *, limit: float | None = None) -> ImageResult:
    return ImageResult(file=item.file, path=str(item.path), error=died_error(item.path, why, limit))


def died_error(path, why: str = "", limit: float | None = None) -> str:
    """The ERROR of a file whose worker died (``why``: when), or was stopped at ``limit``
    seconds (``time_limit``); said in the log too, as it happens, at WARNING: the file's
    row, if the pass makes one, is said as ERROR by its caller (a closer look's pass
    makes none: the row keeps its status, ``pipeline.closer_looks``)."""
    if limit is not None:
        log.warning("%s: stopped after %g s (time_limit)", path, limit)
        return (
            f"stopped after {limit:g} s (time_limit): reading and comparing it took longer "
            "(a decoder that hangs, or an image too large for the limit)"
        )
    reason = why or "while comparing this image"
    log.warning("%s: the worker process died %s", path, reason)
    return f"the worker process died {reason} (a crash in a decoder, or out of memory)"
