"""The Dask side of ``executor.py``, imported only when a scheduler is asked for.

**Prepared once per worker, by a worker plugin** (:class:`Prepare`): what every task of
a command shares (a run's ``compare.Job``: the baseline's pixels, whose statistics the
plugin's ``setup`` computes there; the embedding model for features) travels once to
each worker inside the plugin and is prepared in ``setup``, also on a worker that joins
or is restarted mid-run. Tasks carry only their files' paths (or bytes).

**Tasks** are chunks of images (``_chunk``: up to ``TASK_IMAGES``, fewer when there are
few images per worker), and at most ``IN_FLIGHT`` per worker thread are submitted at a
time, so neither the client nor the scheduler holds a million futures at once.

**Faults.** Dask runs a dead worker's tasks again elsewhere. A task that has killed
``allowed-failures`` + 1 workers (Dask's setting, 3 by default) fails with
``KilledWorker``: its images are then tried one per task, and an image that kills
workers alone becomes its ERROR row, so the retries are bounded and the run does not
hang. A stopped command (Ctrl-C, SIGTERM) cancels its tasks on the cluster.

**The time limit** (``time_limit``). Dask has no per-task timeout, and a thread cannot be
stopped. Each task notes in its worker's memory (``_BUSY``) which of its images it is on
and since when; the client asks the workers for images past the limit (``_late``) at
most once a second, while it waits. Such an image becomes its ERROR row (the same as a
local worker's), its task is cancelled, its other images go back in the queue, and its
worker is restarted by its nanny, which frees the thread (a worker with no nanny keeps
the busy thread, and the log says so).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import replace
from queue import Empty, SimpleQueue

import cv2
from distributed import Client, LocalCluster, WorkerPlugin
from distributed.comm import connect
from distributed.scheduler import KilledWorker
from distributed.security import Security

from . import __version__, compare, images, native
from .errors import ReporterError
from .executor import LOCAL

__all__ = ["Cluster", "IN_FLIGHT", "Prepare", "SEND_BUDGET", "TASK_IMAGES"]

log = logging.getLogger("reporter")

TASK_IMAGES = 16  # images per task at most: one task costs the scheduler about 1 ms
IN_FLIGHT = 4  # tasks submitted per worker thread, ahead of the results
ASK_TIMEOUT = 5.0  # s: the workers' answer to which images are past the time limit
SEND_BUDGET = 512 * 2**20  # --send-bytes: file bytes in flight at most (one task's always)

_PREPARED: dict[str, object] = {}  # on a worker: what each command's plugin prepared
_BUSY: dict[int, tuple[str, int, float]] = {}  # on a worker: thread -> (task, image, since)
SETUPS = 0  # on a worker: how many times a plugin prepared its work (tests read it)


class Prepare(WorkerPlugin):
    """What a command's tasks share, prepared once per worker (see the module's text)."""

    def __init__(self, key: str, job: compare.Job | None, embedding: bool) -> None:
        self.key, self.job, self.embedding = key, job, embedding

    def setup(self, worker) -> None:
        global SETUPS
        SETUPS += 1
        native.python_stderr_apart()  # the worker's own log lines are no decoder's
        _roomy_malloc()
        compare.quiet_opencv()
        cv2.setNumThreads(1)  # one task per worker thread: OpenCV's own threads would compete
        if self.embedding:
            from .embedding import shared

            shared()
        if self.job is not None:
            self.job.reference.prepare()  # the baseline's statistics, once per worker
            _warm(str(self.job.reference.dtype))
        _PREPARED[self.key] = self.job

    def teardown(self, worker) -> None:
        _PREPARED.pop(self.key, None)


def _warm(pixel_type: str) -> None:
    """The compiled kernels, loaded here (0.14 s) as the local workers' fork server loads
    them, not during the first image: its time limit counts from its reading."""
    from . import kernels

    try:
        kernels.warm(pixel_type)
    except Exception as exc:  # the first image loads them itself; the run goes on
        log.warning("could not prepare the compiled kernels on this worker: %s", exc)


def _roomy_malloc() -> None:
    """Undo what Dask's nanny does to every worker: MALLOC_TRIM_THRESHOLD_=65536 (to give
    memory back to the system at once) also freezes glibc's mmap threshold at 128 KB, so
    each of the metrics' large temporaries is a fresh mmap, zeroed page by page: 2.4x the
    time per image (measured: 189 against 75 ms at 1024 px). glibc's own defaults let the
    threshold grow to 32 MB; this sets it there, and trims only past 128 MB free."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to undo
        log.debug("mallopt not available here")


def _prepared(key: str):
    if key not in _PREPARED:
        raise RuntimeError(f"this worker has no {key} (its plugin did not run)")
    return _PREPARED[key]


def _compare(key: str, items: list[compare.Input], task: str = "") -> list[compare.ImageResult]:
    job = _prepared(key)
    return _each(lambda item: compare.compare_file(job, item), items, task)


def _features(key: str, work: list[tuple], task: str = "") -> list:
    from .collection.features import _compute

    _prepared(key)
    return _each(_compute, work, task)


def _each(one, items: list, task: str) -> list:
    """``one`` of every item, each noted in ``_BUSY`` while it runs (``_late``)."""
    me = threading.get_ident()
    out = []
    try:
        for position, item in enumerate(items):
            _BUSY[me] = (task, position, time.monotonic())
            out.append(one(item))
    finally:
        _BUSY.pop(me, None)
    return out


def _late(limit: float) -> list[tuple[str, int]]:
    """On a worker: (task, position) of each image begun more than ``limit`` s ago."""
    now = time.monotonic()
    return [(task, at) for task, at, since in list(_BUSY.values()) if now - since > limit]


def _version() -> str:
    return __version__


def _probe(address: str, timeout: float) -> None:
    """Connect to ``address`` once, with Dask's handshake, and close: within ``timeout``
    seconds (and a second), or a ReporterError line.

    Dask's client given a listener that is not a scheduler can wait for ever whatever
    its timeout (dask/distributed#8071, open: given the dashboard's port, 8787, for the
    scheduler's 8786, a run still waited when killed after 60 s, and cron would have
    waited for good), and a server that answers with
    other bytes (an SSH banner) made it allocate exabytes: a MemoryError traceback. The
    probe runs in a thread of its own with its own event loop, so the wait is
    cancelled at the deadline wherever the caller is (a notebook runs a loop)."""
    failure: list[BaseException] = []
    # TLS as the client will have it: Dask's distributed.comm.tls settings (the client's
    # own Security() reads them too). Without them a tls:// probe failed whatever was set.
    tls = Security().get_connection_args("client")

    async def once() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **tls), timeout + 1)
        await comm.close()

    def run() -> None:
        try:
            asyncio.run(once())
        except BaseException as exc:  # noqa: BLE001 - said below
            failure.append(exc)

    thread = threading.Thread(target=run, name="reporter-dask-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive() or (
        failure and isinstance(failure[0], TimeoutError) and not str(failure[0])
    ):
        raise ReporterError(
            f"the Dask scheduler at {address} did not answer within {timeout:g} s: is it a "
            "Dask scheduler's port (8786 by default; 8787 is its dashboard)?"
        )
    if not failure:
        return
    exc = failure[0]
    if isinstance(exc, (OSError, ValueError, TypeError, ImportError)):  # said by the caller:
        raise exc  # refused, unreachable, Dask's connect timeout; tls:// without its settings
    raise ReporterError(
        f"the Dask scheduler at {address} did not answer as one ({type(exc).__name__} "
        "reading its reply): is it a Dask scheduler's port (8786 by default)?"
    )


class Cluster:
    """A Dask client for one command, and the LocalCluster it started for ``local:N``."""

    def __init__(self, client: Client, local, address: str, send_bytes: bool, max_bytes) -> None:
        self.client, self.local, self.address = client, local, address
        self.send_bytes, self.max_bytes = send_bytes, max_bytes

    @classmethod
    def open(
        cls, address: str, *, timeout: float, send_bytes: bool, max_bytes: int | None
    ) -> Cluster:
        quiet = logging.WARNING if log.isEnabledFor(logging.DEBUG) else logging.ERROR
        logging.getLogger("distributed").setLevel(quiet)
        local = None
        try:
            if address.startswith(LOCAL):
                try:
                    local = LocalCluster(
                        n_workers=int(address[len(LOCAL) :]),
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=quiet,
                    )
                except RuntimeError as exc:  # "Nanny failed to start", with its cause in the log
                    raise ReporterError(f"cannot start a Dask cluster {address}: {exc}") from None
                client = Client(local, timeout=timeout, set_as_default=False)
            else:
                _probe(address, timeout)
                client = Client(address, timeout=timeout, set_as_default=False)
        except OSError as exc:  # TimeoutError included
            if local is not None:
                local.close()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ReporterError(
                f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({first})"
            ) from None
        except (ValueError, TypeError, ImportError) as exc:  # the client refused the address:
            # tls:// without Dask's TLS settings, ucx:// without UCX-Py
            if local is not None:
                local.close()
            first = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            if address.startswith("tls://") and "ssl_context" in first:
                first = (
                    "TLS needs Dask's distributed.comm.tls settings: ca-file, client.cert and "
                    "client.key (in ~/.config/dask/, or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and ..._KEY)"
                )
            raise ReporterError(
                f"cannot connect to the Dask scheduler at {address}: {first}"
            ) from None
        cluster = cls(client, local, address, send_bytes, max_bytes)
        try:
            cluster._check(timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _check(self, timeout: float) -> None:
        """Workers there, running this version of reporter; the log says where."""
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ReporterError(
                f"the Dask scheduler at {self.address} has no workers (waited {timeout:g} s)"
            ) from None
        try:
            versions = self.client.run(_version)
        except Exception as exc:  # reporter missing on a worker: the function cannot unpickle
            why = (str(exc).splitlines() or [""])[0]
            raise ReporterError(
                f"the Dask workers cannot run reporter ({type(exc).__name__}: {why}); install "
                f"reporter {__version__} on every worker"
            ) from None
        for worker, version in sorted(versions.items()):
            if version != __version__:
                raise ReporterError(
                    f"Dask worker {worker} runs reporter {version}, this is {__version__}: "
                    "install the same version on every worker"
                )
        log.info(
            "Dask scheduler %s: %d worker(s), %d thread(s); dashboard %s",
            self.client.scheduler.address,
            len(versions),
            self.threads(),
            self.client.dashboard_link,
        )

    def threads(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(1, sum(w.get("nthreads", 1) for w in workers))

    def close(self) -> None:
        try:
            self.client.close(timeout=10)
        finally:
            if self.local is not None:
                self.local.close(timeout=10)

    # --- the work -------------------------------------------------------------------------

    def map(
        self, job: compare.Job, items: list[compare.Input], bar, *, died, limit: float | None = None
    ) -> list:
        """``compare_file(job, item)`` of every item, in order (``compare.compare_all``);
        one past ``limit`` seconds is its ``died(item, limit=limit)`` row."""

        read_again: dict[int, str] = {}  # id(item) -> its note: it was still being written

        def packed(item: compare.Input):  # workers read by absolute path, or get the bytes
            if not self.send_bytes:
                return replace(item, path=item.path.absolute()), 0
            data, _, note = images.read_settled(item.path, job.max_bytes)
            if note:
                read_again[id(item)] = note
            return replace(item, data=data), len(data)

        def failed(item: compare.Input, why: str) -> compare.ImageResult:
            return compare.ImageResult(file=item.file, path=str(item.path), error=why)

        plugin = Prepare(f"reporter-{uuid.uuid4().hex[:12]}", job, job.reference.embedding)
        results = self._run(plugin, _compare, items, packed, failed, died, bar, limit)
        for item, result in zip(items, results, strict=True):
            if id(item) in read_again and result.error is None:  # first, as load puts it
                result.notes.insert(0, read_again[id(item)])
        return results

    def features(
        self, work: list[tuple], *, embedding: bool, bar=None, limit: float | None = None
    ) -> list:
        """``features._compute`` of every work tuple, in order (``features.gather``)."""
        from .collection.features import Features, _died

        def packed(one: tuple):  # workers read by absolute path, or get the bytes
            if not self.send_bytes:
                return (one[0].absolute(), *one[1:]), 0
            data, stat, _ = images.read_settled(one[0], one[4])  # the cache keys that stat
            return (*one[:5], (stat.st_size, stat.st_mtime_ns, data)), len(data)

        def failed(one: tuple, why: str):
            return Features(str(one[0]), one[1], error=why)

        plugin = Prepare(f"reporter-{uuid.uuid4().hex[:12]}", None, embedding)
        return self._run(plugin, _features, work, packed, failed, _died, bar, limit)

    def _run(
        self, plugin: Prepare, task, items: list, packed, failed, died, bar, limit=None
    ) -> list:
        """Every item's result, in order: the plugin registered for the length of it, chunks
        submitted a window at a time, a chunk that kept killing workers split into single
        images; a single image that did is tried once more with no other task in flight
        (Dask blames every task a dying worker held), and becomes its ``died`` row if it
        still kills workers alone. An image past ``limit`` seconds is its ``died`` row too,
        and is not tried again (``stop_late``)."""
        results: dict[int, object] = {}
        threads = self.threads()
        size = _chunk(len(items), threads)
        queue = deque(list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size))
        running: dict = {}  # future -> (indices, bytes)
        finished: SimpleQueue = SimpleQueue()  # futures, as they finish (a callback's thread)
        sent = 0
        poll = min(1.0, limit / 10) if limit else None
        asked = time.monotonic()
        suspects: deque[int] = deque()  # single images whose task kept killing workers
        alone: set[int] = set()  # those tried again with no other task in flight
        tries: dict[int, int] = {}  # submissions per first image of a task

        def done(i: int, result) -> None:
            result.path = str(_path(items[i]))
            results[i] = result  # named as given, as a local run names it
            if bar is not None:
                bar.update()

        def submit() -> None:
            nonlocal sent
            while (
                queue and len(running) < threads * IN_FLIGHT and (not running or sent < SEND_BUDGET)
            ):
                indices = queue.popleft()
                payload, weight = [], 0
                for i in indices:
                    try:
                        one, nbytes = packed(items[i])
                    except (images.ImageLoadError, OSError) as exc:  # --send-bytes: read here
                        done(i, failed(items[i], str(exc)))
                        continue
                    payload.append((i, one))
                    weight += nbytes
                if not payload:
                    continue
                args = [one for _, one in payload]
                if self.send_bytes:
                    args = self.client.scatter(args, hash=False)  # not inside the task graph
                # A new key for every try: a key the scheduler still holds as failed would
                # hand back that failure instead of running the task again.
                tries[indices[0]] = tries.get(indices[0], 0) + 1
                key = f"{plugin.key}-{indices[0]}-{len(indices)}-{tries[indices[0]]}"
                future = self.client.submit(task, plugin.key, args, key, pure=False, key=key)
                running[future] = ([i for i, _ in payload], weight)
                sent += weight
                future.add_done_callback(finished.put)

        def finish(future) -> None:
            nonlocal sent
            indices, weight = running.pop(future)
            sent -= weight
            try:
                out = future.result()
            except KilledWorker:  # this task, or one beside it on the same workers
                if len(indices) > 1:
                    log.warning(
                        "a Dask task of %d image(s) kept killing workers; trying each alone",
                        len(indices),
                    )
                    queue.extendleft([i] for i in reversed(indices))
                elif indices[0] in alone:  # alone on the cluster, and still killing
                    i = indices[0]
                    done(i, died(items[i], "on every Dask worker that tried it"))
                else:  # perhaps only beside the culprit: tried alone at the end
                    suspects.append(indices[0])
            except Exception as exc:
                why = (str(exc).splitlines() or [""])[0]  # one line per row
                if self.client.status != "running":
                    raise ReporterError(
                        f"lost the Dask scheduler at {self.address} during the run "
                        f"({type(exc).__name__})"
                    ) from None
                for i in indices:
                    done(
                        i,
                        failed(items[i], f"the Dask task failed: {type(exc).__name__}: {why}"),
                    )
            else:
                for i, result in zip(indices, out, strict=True):
                    done(i, result)

        def stop_late() -> None:
            nonlocal sent
            keyed = {future.key: future for future in running}
            for worker, task_, position in self._late(limit):
                future = keyed.pop(task_, None)
                # None: already stopped (a worker its nanny could not restart); done: its
                # result came in meanwhile, and is taken as it is
                if future is None or future.done():
                    continue
                indices, weight = running.pop(future)
                sent -= weight
                i = indices[position]
                done(i, died(items[i], limit=limit))
                rest = [j for j in indices if j != i]
                if rest:  # compared again, elsewhere or on the restarted worker
                    queue.appendleft(rest)
                self.client.cancel([future], force=True)
                self._restart(worker, items[i])

        self.client.register_plugin(plugin, name=plugin.key)
        try:
            submit()
            while running:
                try:
                    batch = [finished.get(timeout=poll or 1.0)]  # a signal is heard
                except Empty:  # nothing finished within ``poll``: look for late images
                    batch = []
                if poll is not None and time.monotonic() - asked >= poll:
                    stop_late()
                    asked = time.monotonic()
                while not finished.empty():
                    batch.append(finished.get())
                for future in batch:
                    if future in running:  # not one stop_late cancelled
                        finish(future)
                submit()
                if not running and not queue and suspects:  # one at a time, nothing beside it
                    alone.add(suspects[0])
                    queue.append([suspects.popleft()])
                    submit()
        except BaseException:  # Ctrl-C, SIGTERM: no task of this command left on the cluster
            self.client.cancel(list(running), force=True)
            raise
        finally:
            try:
                self.client.unregister_worker_plugin(plugin.key)
            except Exception:  # the cluster is going away; nothing is left to undo
                log.debug("could not unregister %s", plugin.key, exc_info=True)
        return [results[i] for i in range(len(items))]

    def _late(self, limit: float) -> list[tuple[str, str, int]]:
        """(worker, task, position) of every image a worker has been on for over ``limit``
        seconds; a worker that does not answer (gone, restarting) has none. Asked for at
        most ASK_TIMEOUT seconds: a worker whose event loop cannot run (a task that holds
        the GIL) would hold the answer until Dask's worker-ttl removes it, and the run's
        other results with it."""
        try:
            found = self.client.run(_late, limit, on_error="ignore", callback_timeout=ASK_TIMEOUT)
        except Exception as exc:  # the scheduler is going (the next wait will say so), or
            # a worker did not answer in time: asked again at the next poll
            log.debug("could not ask the workers for late images: %s", exc)
            return []
        return [(w, task, at) for w, late in found.items() for task, at in late]

    def _restart(self, worker: str, item) -> None:
        """Frees the thread still busy with ``item``: its worker is restarted by its nanny
        (the other tasks it held run again, as after a worker's death)."""
        try:
            status = self.client.restart_workers([worker], raise_for_error=False).get(worker)
        except Exception as exc:  # no nanny, or the scheduler refused
            status = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if status != "OK":
            log.warning(
                "Dask worker %s could not be restarted (%s): one of its threads stays busy "
                "with %s until that read ends",
                worker,
                status,
                _path(item),
            )


def _path(item):
    """The file of a run's ``compare.Input`` or of a features work tuple."""
    return item.path if hasattr(item, "path") else item[0]


def _chunk(images: int, threads: int) -> int:
    """Images per task: at least four tasks per worker thread (so a slow or dying worker
    holds up little), at most ``TASK_IMAGES``."""
    return max(1, min(TASK_IMAGES, images // (4 * threads)))
