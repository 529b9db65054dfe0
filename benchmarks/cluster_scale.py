"""Benchmark: reporter run on a Dask cluster, and what a million images would take.

Run:  python benchmarks/cluster_scale.py [--images 60] [--size 1024] [--write docs/scaling.md]

On this machine it measures, with generated photo-like PNGs (benchmarks/bench.py):

* ``reporter run`` (CSV and JSON) with the local process pool at 1 and 2 processes, and
  on a Dask LocalCluster of 1 and 2 worker processes (started beforehand, as a lab's
  cluster would be): images per second, and 2 workers against 1;
* the scheduler's overhead per task: empty tasks through a LocalCluster, one at a time
  in flight as reporter keeps them (a window of tasks per worker thread);
* what the client receives per image (the pickled row) and what a worker reads per
  image (the file), to see when the client or a shared filesystem becomes the limit;

then estimates a million images on 8, 64 and 512 workers, with one image per task and
with 16 per task (reporter's chunks), and writes that table and its reasoning into
docs/scaling.md with --write. It is not a test: nothing here fails.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_images  # noqa: E402

from reporter import pipeline  # noqa: E402
from reporter.compare import Input, Job, compare_file  # noqa: E402
from reporter.config import Config, auto_metrics  # noqa: E402

WORKERS = (8, 64, 512)
MILLION = 1_000_000
FS_MB_S = 1000  # a shared filesystem's sustained read rate, MB/s (a 10 GbE NFS server)


def run_rate(folder: Path, out: Path, **how) -> float:
    """Images per second of one ``reporter run`` (CSV and JSON), best of two."""
    count = len(list(folder.glob("img*.png")))
    best = float("inf")
    for attempt in range(2):
        config = Config(inputs=(folder,), out=out / f"{len(how)}-{attempt}",
                        formats=("csv", "json"), progress=False, **how)  # fmt: skip
        t = time.perf_counter()
        pipeline.run(config)
        best = min(best, time.perf_counter() - t)
    return count / best


def noop(x):
    return x


def task_overhead(client, tasks: int = 2000) -> float:
    """Seconds per empty task, end to end (submit, schedule, run, gather)."""
    from distributed import as_completed

    client.gather(client.map(noop, range(50), pure=False))  # warm
    t = time.perf_counter()
    futures = client.map(noop, range(tasks), pure=False)
    for _ in as_completed(futures):
        pass
    return (time.perf_counter() - t) / tasks


def client_seconds(folder: Path, rows: int = 20_000) -> float:
    """The client's own work per image once the rows are back: the table, the flags (the
    outlier rule over the whole run) and the CSV, on ``rows`` copies of a real row."""
    import io

    from reporter import flags, images, table
    from reporter.metrics import Reference

    base = images.load(folder / "baseline.png", max_pixels=10**9).pixels
    job = Job(Reference(base).prepare(), images.Geometry.of(base), 10**9, False)
    one = compare_file(job, Input(folder / "img0000.png", "img0000.png"))
    config = Config()
    rule = replace(config.outliers, metrics=auto_metrics(None, False, "outlier"))
    t = time.perf_counter()
    frame = flags.apply(table.build([one] * rows), config.limits, rule)
    frame.to_csv(io.StringIO())
    return (time.perf_counter() - t) / rows


def row_bytes(folder: Path) -> tuple[int, int]:
    """What the client receives for one image (the pickled row, pictures included when the
    page or workbook is written, and without), and the file's size."""
    from reporter import images, visuals
    from reporter.metrics import Reference

    base = images.load(folder / "baseline.png", max_pixels=10**9).pixels
    job = Job(Reference(base).prepare(), images.Geometry.of(base), 10**9, False)
    with_pictures = Job(job.reference, job.geometry, 10**9, False,
                        baseline_small=visuals.baseline_for_maps(base))  # fmt: skip
    item = Input(folder / "img0000.png", "img0000.png")
    plain = len(pickle.dumps(compare_file(job, item)))
    pictured = len(pickle.dumps(compare_file(with_pictures, item)))
    return plain, pictured


SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def sample_rate() -> tuple[float, float]:
    """Images per second of one worker on the sample dot plots (512 px), and their size."""
    from reporter import images
    from reporter.metrics import Reference

    base = images.load(SAMPLES / "baseline.png", max_pixels=10**9).pixels
    job = Job(Reference(base).prepare(), images.Geometry.of(base), 10**9, False)
    files = sorted(SAMPLES.glob("*_*.png"))
    times = []
    for path in files * 3:
        t = time.perf_counter()
        compare_file(job, Input(path, path.name))
        times.append(time.perf_counter() - t)
    mb = sum(p.stat().st_size for p in files) / len(files) / 1e6
    return 1 / sorted(times)[len(times) // 2], mb


def estimate(per_worker: float, overhead: float, client_s: float, file_mb: float) -> list:
    """Rows of the million-image table: for each worker count and chunk size, the rate each
    part allows and the slowest of them. ``per_worker``: images per second of one worker,
    for files of ``file_mb``."""
    out = []
    for workers in WORKERS:
        for chunk in (1, 16):
            limits = {
                "workers": workers * per_worker,
                "scheduler": chunk / overhead,
                "client": 1 / client_s,
                "shared filesystem": FS_MB_S / file_mb,
            }
            slowest = min(limits, key=limits.get)
            out.append((workers, chunk, limits, slowest, MILLION / limits[slowest]))
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--write", type=Path, help="write the estimate into this Markdown file")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name) / "run"
        folder.mkdir()
        make_images(folder, args.images, args.size)
        file_mb = (folder / "img0000.png").stat().st_size / 1e6
        out = Path(name) / "out"
        rates = {}
        for jobs in (1, 2):
            rates[f"local pool, {jobs} process(es)"] = run_rate(folder, out, jobs=jobs)
        overheads = {}
        for workers in (1, 2):
            started = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            with started as cluster, Client(cluster) as client:
                address = cluster.scheduler_address
                rates[f"Dask, {workers} worker(s)"] = run_rate(folder, out, scheduler=address)
                overheads[workers] = task_overhead(client)
        plain, pictured = row_bytes(folder)
        client_s = client_seconds(folder)
    one, two = rates["Dask, 1 worker(s)"], rates["Dask, 2 worker(s)"]
    print(f"{args.images} photo-like {args.size} px PNGs ({file_mb:.2f} MB each), CSV and JSON:")
    for what, rate in rates.items():
        print(f"  {what:<28} {rate:6.2f} images/s  {1000 / rate:7.1f} ms per image")
    print(f"  Dask, 2 workers against 1: {two / one:.2f} x")
    for workers, seconds in overheads.items():
        print(f"  scheduler overhead per empty task, {workers} worker(s): {1000 * seconds:.2f} ms")
    print(f"  the client receives {plain / 1e3:.1f} KB per image ({pictured / 1e3:.1f} KB with "
          "the pictures of the page and the workbook)")  # fmt: skip
    print(f"  the client's table, flags and CSV: {1e6 * client_s:.0f} us per image")
    overhead = min(overheads.values())
    table = []
    small_rate, small_mb = sample_rate()
    print(f"  one worker on the sample dot plots (512 px, {small_mb:.2f} MB): {small_rate:.0f}/s")
    for label, mb, rate in ((f"{args.size} px photo-like PNGs, {file_mb:.2f} MB", file_mb, one),
                            (f"512 px dot plots (sample_images), {small_mb:.2f} MB", small_mb,
                             small_rate)):  # fmt: skip
        table += [
            "",
            f"Files of {label}, {rate:.0f} images/s per worker:",
            "",
            "| workers | images per task | workers allow | scheduler allows | client allows "
            "| shared FS allows | limit | a million images |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for workers, chunk, limits, slowest, seconds in estimate(rate, overhead, client_s, mb):
            table.append(
                f"| {workers} | {chunk} | {limits['workers']:,.0f}/s "
                f"| {limits['scheduler']:,.0f}/s | {limits['client']:,.0f}/s "
                f"| {limits['shared filesystem']:,.0f}/s | {slowest} | {_hours(seconds)} |"
            )
    print("\n".join(table))
    if args.write:
        text = args.write.read_text(encoding="utf-8")
        start, end = "<!-- estimate -->", "<!-- /estimate -->"
        figures = (
            f"Measured by `python benchmarks/cluster_scale.py` ({args.images} images of "
            f"{args.size} px, {file_mb:.2f} MB each): one worker {one:.2f} images/s, two "
            f"{two:.2f} ({two / one:.2f} x); the local pool "
            f"{rates['local pool, 1 process(es)']:.2f} and "
            f"{rates['local pool, 2 process(es)']:.2f}; {1000 * overhead:.2f} ms per empty "
            f"task; {plain / 1e3:.1f} KB per row ({pictured / 1e3:.1f} KB with pictures); the "
            f"client's table, flags and CSV {1e6 * client_s:.0f} us per image. "
            f"Shared filesystem assumed at {FS_MB_S:,} MB/s.\n\n"
        )
        body = figures + "\n".join(table) + "\n"
        text = text[: text.index(start) + len(start)] + "\n" + body + text[text.index(end) :]
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
