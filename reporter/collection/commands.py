"""The collection commands as the command line calls them: ``search``, ``duplicates``
and ``cluster``. Each returns its exit status: 0 done, 1 done but some files could
not be read (their ERROR rows say why), 2 not done (raised as ReporterError)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import clock, console, executor, machine, stopping
from ..compare import Input
from ..errors import ExitStatus, ReporterError
from ..inputs import discover, left_out, own_folders
from ..names import not_a_file, printable
from ..outputs import STAGE_PREFIX
from . import reports, score_kind
from .features import FeatureCache, Features, default_cache, gather
from .search import METHODS, Index, by_metric, rank, require_faiss, table

__all__ = ["cluster", "duplicates", "publish", "search"]

log = logging.getLogger("reporter")


def _queries(args: argparse.Namespace) -> list[Path]:
    queries = [args.query] if args.query else []
    if args.queries is not None:
        kind = not_a_file(args.queries)
        if kind:
            raise ReporterError(f"--queries {args.queries} is {kind}: give a text file")
        try:  # utf-8-sig: Notepad's byte order mark is not part of the first path
            text = args.queries.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ReporterError(f"cannot read the queries file {args.queries}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ReporterError(
                f"the queries file {args.queries} is not UTF-8 text (byte {exc.start}): "
                "give one query path per line"
            ) from None
        lines = (line.strip() for line in text.splitlines())
        queries += [Path(line) for line in lines if line and not line.startswith("#")]
        if not queries:
            raise ReporterError(f"the queries file {args.queries} names no query")
    if not queries:
        raise ReporterError("no query: give QUERY or --queries FILE")
    return queries


def _some_query(queries: list[Path], lost: list[Features], answerable: bool) -> None:
    """Go on while a query can still be answered: each one that cannot is an ERROR row
    of the table, as an unreadable file of the collection is. When none can (one query
    given, or every one of the file's lost), the command could not be done: one line."""
    if answerable:
        return
    if len(queries) == 1:
        raise ReporterError(lost[0].error)
    raise ReporterError(
        f"none of the {len(queries)} queries can be read; the first: {lost[0].error}"
    )


def _own(args: argparse.Namespace) -> dict | None:
    """The folders a recursive walk of the collection leaves out: the reports, the
    duplicates moved aside (a second ``--move-duplicates`` run moved them again) and the
    clusters' copies (a second ``--copy-to`` run clustered each image with its copy)."""
    if not args.recursive:
        return None
    moved, copied = getattr(args, "move_duplicates", None), getattr(args, "copy_to", None)
    return own_folders(
        (args.out or Path("reports"), "reporter's reports (out)"),
        *([(moved, "the duplicates moved aside (--move-duplicates)")] if moved else []),
        *([(copied, "the clusters' copies (--copy-to)")] if copied else []),
    )


def _out_dir(args: argparse.Namespace, started: datetime, kind: str) -> Path:
    try:
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            return args.out
        stamp = started.astimezone().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            out = Path("reports") / f"{kind}-{stamp}{'' if n == 1 else f'-{n}'}"
            try:
                out.mkdir(parents=True)
                return out
            except FileExistsError:
                continue
    except OSError as exc:
        raise ReporterError(f"cannot make the output folder: {exc}") from None
    raise ReporterError("cannot make a new output folder under reports")


def publish(out_dir: Path, write) -> dict[str, Path]:
    """Outputs written by ``write(stage)`` into a staging folder, then moved into
    ``out_dir`` together (a signal waits for the last rename); on any failure the
    staging folder goes and ``out_dir`` keeps what it had."""
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        staged = write(stage)
        with stopping.held():
            final = {}
            for key, path in staged.items():
                final[key] = out_dir / path.name
                os.replace(path, final[key])
        return final
    except OSError as exc:
        raise ReporterError(f"cannot write into {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _results(out_dir: Path, written: dict) -> str:
    """The summary's last line: where the outputs are, and which they are."""
    return f"Results: {printable(str(out_dir))} ({', '.join(p.name for p in written.values())})"


def search(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    if not set(args.formats) & {"csv", "html", "xlsx"}:
        raise ReporterError("search writes csv, html and xlsx: --formats names none of them")
    if args.index == "hnsw":
        if args.by != "embedding":
            raise ReporterError("--index hnsw is for --by embedding only")
        require_faiss()  # before any work
    queries = _queries(args)
    found, unreadable = _found(args)
    known = {item.path.resolve(): item for item in found}
    asked, lost = [], []  # lost: queries that cannot be answered, each an ERROR row
    for q in queries:
        kind = not_a_file(q)
        if kind:
            why = f"query {q}: no such file" if kind == "not found" else (
                f"query {q} is {kind}: give one image file"
            )  # fmt: skip
            lost.append(Features(str(q), str(q), error=why))
            continue
        asked.append(known.get(q.resolve()) or Input(q, q.name))
    _some_query(queries, lost, answerable=bool(asked))
    extra = [a for a in asked if a.path.resolve() not in known]
    with _engine(args) as engine:
        features = _gathered(args, found + extra, args.by == "embedding", engine)
        by_path = {Path(f.path).resolve(): f for f in features}
        candidates = features[: len(found)]
        rankings = []
        readable = [f for f in candidates if f.error is None]
        saved = None if args.no_cache else default_cache().parent
        index = (
            Index(args.by, readable, args.index == "hnsw", saved) if args.by in METHODS else None
        )
        jobs = args.jobs or machine.cores()
        for item in asked:
            query = by_path[item.path.resolve()]
            if query.error:
                lost.append(replace(query, error=f"query {item.path}: {query.error}"))
                _some_query(queries, lost, answerable=len(lost) < len(queries))
                continue
            if index is None:  # a run metric: compared as reporter run would
                rankings.append(
                    by_metric(
                        args.by,
                        query,
                        candidates,
                        args.top,
                        jobs,
                        engine,
                        args.max_pixels,
                        args.time_limit or None,
                    )
                )
            else:
                rankings.append(rank(args.by, query, candidates, args.top, index))
    queried = {Path(q.path).resolve() for q in lost}  # listed once, as the query
    errors = [f for f in candidates if f.error and Path(f.path).resolve() not in queried] + lost
    for e in errors:
        log.warning("%s: ERROR %s", e.path, e.error)
    for u in unreadable:
        log.warning("%s: ERROR cannot read this folder: %s", u.path, u.reason)
    out_dir = _out_dir(args, started, "search")
    found_table = table(
        rankings, errors, args.by, clock.shown(started, args.timezone), asked=len(queries)
    )
    written = publish(out_dir, lambda stage: reports.write(found_table, stage, args.formats))
    if not args.quiet:
        with console.summary():
            name = score_kind(args.by)[0]
            for r in rankings:
                print(f"{printable(r.query.file)}: nearest by {args.by} ({name})")
                for hit in r.hits[:5]:
                    print(f"  {hit.rank:>3}  {hit.score:10.4f}  {printable(hit.item.file)}")
            if errors:
                print(f"{len(errors)} file(s) could not be read; see results.csv")
            print(_results(out_dir, written))
    return ExitStatus.FLAGGED if errors or unreadable else ExitStatus.OK


def _engine(args: argparse.Namespace):
    """The Dask cluster of --scheduler (or REPORTER_SCHEDULER), else None: local workers."""
    return executor.connect(
        args.scheduler, timeout=args.scheduler_timeout, send_bytes=args.send_bytes
    )


def _gathered(args: argparse.Namespace, items: list, embedding: bool, engine) -> list:
    """The features of ``items``: the cache's, the rest computed locally or on ``engine``."""
    cache = FeatureCache(None if args.no_cache else default_cache())
    try:
        return gather(
            items,
            embedding=embedding,
            jobs=args.jobs or machine.cores(),
            cache=cache,
            max_pixels=args.max_pixels,
            max_bytes=int(args.max_file_mb * 1e6),  # as Config.max_bytes
            cluster=engine,
            progress=not args.no_progress,
            time_limit=args.time_limit or None,
        )
    finally:
        cache.close()


def _found(args: argparse.Namespace):
    """The images under args.paths, and the folders that could not be read; none is the
    command not done, with the files an --exclude pattern left out counted."""
    found, skipped, unreadable = discover(
        tuple(args.paths), recursive=args.recursive, own=_own(args), exclude=args.exclude
    )
    if not found:
        raise ReporterError(f"no images in {', '.join(map(str, args.paths))}{left_out(skipped)}")
    return found, unreadable


def _collection(args: argparse.Namespace, *, embedding: bool):
    """The images under args.paths and their features (cache, workers), and what could
    not be read."""
    found, unreadable = _found(args)
    for u in unreadable:
        log.warning("%s: ERROR cannot read this folder: %s", u.path, u.reason)
    with _engine(args) as engine:
        features = _gathered(args, found, embedding, engine)
    errors = [f for f in features if f.error]
    for e in errors:
        log.warning("%s: ERROR %s", e.path, e.error)
    return features, errors, unreadable


def _folder_to_make(path: Path | None, option: str) -> None:
    """Refuse, before any work, a folder to move or copy images into that cannot be one:
    an existing file (a name given by mistake), a pipe or a device, or a path through a
    file. ``duplicates --move-duplicates x.png`` and ``cluster --copy-to x.png`` ended in
    a traceback after the whole collection was read."""
    if path is None:
        return
    try:
        for at in (path, *path.parents):
            if at.is_dir():
                return
            if at.exists() or at.is_symlink():
                what = "a file" if at.is_file() else not_a_file(at)
                if at == path:
                    made = "give a folder (made if missing)"
                    raise ReporterError(f"{option} {path} is {what}: {made}")
                raise ReporterError(f"{option} {path} cannot be made: {at} is {what}")
    except OSError as exc:  # a name too long (ENAMETOOLONG), which pathlib does not swallow
        raise ReporterError(f"{option} {path}: {exc.strerror or exc}") from None


def _no_earlier_clusters(path: Path | None) -> None:
    """Refuse, before any work, a ``--copy-to`` folder that holds an earlier run's cluster
    folders. A second run's ``cluster-01`` is not the first's (its images, k and order
    differ), and copying into both made ``name-2.png`` beside each earlier copy: two runs'
    clusters mixed, each image twice."""
    if path is None or not path.is_dir():
        return
    try:
        earlier = sorted(
            p.name for p in path.iterdir() if re.fullmatch(r"cluster-\d+", p.name) and p.is_dir()
        )  # a file of the user's own named cluster-notes.txt is not a run's cluster
    except OSError as exc:
        raise ReporterError(f"--copy-to {path}: {exc.strerror or exc}") from None
    if earlier:
        shown = ", ".join(earlier[:3]) + (" ..." if len(earlier) > 3 else "")
        raise ReporterError(
            f"--copy-to {path} already holds an earlier run's clusters ({shown}): "
            "give a new or empty folder, or remove them first"
        )


def _placing(what: str, target: Path, place, *args):
    """``place(*args)`` (the moves or copies into ``target``), a failure one line: the
    reports are written by then, and the log has each file placed before it."""
    try:
        return place(*args)
    except OSError as exc:
        where = exc.filename or target
        raise ReporterError(
            f"cannot {what} into {target}: {where}: {exc.strerror or exc}; the reports are "
            "written, and the log names each file placed before it"
        ) from None


def duplicates(args: argparse.Namespace) -> int:
    from .duplicates import THRESHOLDS, group, move_duplicates

    started = datetime.now(UTC)
    if not set(args.formats) & {"csv", "html", "xlsx"}:
        raise ReporterError("duplicates writes csv, html and xlsx: --formats names none of them")
    _folder_to_make(args.move_duplicates, "--move-duplicates")
    threshold = THRESHOLDS[args.by] if args.threshold is None else args.threshold
    features, errors, unreadable = _collection(args, embedding=args.by == "embedding")
    groups = group(features, args.by, threshold)
    out_dir = _out_dir(args, started, "duplicates")
    found_table = reports.duplicates_table(
        groups, errors, args.by, threshold, clock.shown(started, args.timezone)
    )
    written = publish(out_dir, lambda stage: reports.write(found_table, stage, args.formats))
    target = args.move_duplicates
    moved, gone = (
        _placing("move duplicates", target, move_duplicates, groups, target) if target else ([], [])
    )
    if not args.quiet:
        with console.summary():
            extra = sum(len(g.members) - 1 for g in groups)
            print(
                f"{len(groups)} group(s) of duplicates by {args.by} (distance <= {threshold:g}): "
                f"{extra} image(s) besides the ones to keep"
            )
            for g in groups[:10]:
                others = ", ".join(printable(m.item.file) for m in g.members[1:4])
                more = f" and {len(g.members) - 4} more" if len(g.members) > 4 else ""
                print(f"  keep {printable(g.kept.file)}: {others}{more}")
            if moved or gone:
                missed = f"; {_gone(gone, 'was', 'were')} gone before {_its(gone)} move"
                print(
                    f"moved {len(moved)} duplicate(s) to {printable(str(args.move_duplicates))}"
                    + (missed if gone else "")
                )
            if errors:
                print(f"{len(errors)} file(s) could not be read; see groups.csv")
            print(_results(out_dir, written))
    return ExitStatus.FLAGGED if errors or unreadable or gone else ExitStatus.OK


def _gone(gone: list, one: str, many: str) -> str:
    return f"{len(gone)} {one if len(gone) == 1 else many}"


def _its(gone: list) -> str:
    return "its" if len(gone) == 1 else "their"


def cluster(args: argparse.Namespace) -> int:
    from .cluster import cluster as kmeans
    from .cluster import copy_clusters

    started = datetime.now(UTC)
    if not set(args.formats) & {"csv", "html", "xlsx"}:
        raise ReporterError("cluster writes csv, html and xlsx: --formats names none of them")
    _folder_to_make(args.copy_to, "--copy-to")
    _no_earlier_clusters(args.copy_to)
    features, errors, unreadable = _collection(args, embedding=args.features == "embedding")
    items = [f for f in features if f.error is None]
    k = None if args.k == "auto" else int(args.k)
    if len(items) < 2 or (k is None and len(items) < 3):
        raise ReporterError(
            f"{len(items)} readable image(s): clustering needs at least {2 if k is not None else 3}"
        )
    result = kmeans(items, args.features, k)
    found_table = reports.clusters_table(items, result, clock.shown(started, args.timezone))
    found_table.errors = errors
    out_dir = _out_dir(args, started, "cluster")
    written = publish(out_dir, lambda stage: reports.write(found_table, stage, args.formats))
    gone = []
    if args.copy_to is not None:
        _, gone = _placing(
            "copy the clusters", args.copy_to, copy_clusters, items, result, args.copy_to
        )
    if not args.quiet:
        with console.summary():
            sizes = np.bincount(result.labels, minlength=result.k)
            print(f"{len(items)} images in {result.k} cluster(s) by {args.features}")
            if result.kept_variance is not None:
                print(
                    f"  PCA: {result.components} components keep "
                    f"{100 * result.kept_variance:.1f} % of the variance"
                )
            if result.silhouettes:
                scores = ", ".join(f"{k}: {s:.3f}" for k, s in sorted(result.silhouettes.items()))
                print(f"  silhouette by k: {scores}")
            for c, section in enumerate(found_table.sections):
                print(f"  cluster {c + 1}: {sizes[c]} image(s), typical "
                      f"{printable(section.items[0].features.file)}")  # fmt: skip
            if errors:
                print(f"{len(errors)} file(s) could not be read; see clusters.csv")
            if gone:
                said = _gone(gone, "image was", "images were")
                print(f"{said} gone before {_its(gone)} copy; see the log")
            print(_results(out_dir, written))
    return ExitStatus.FLAGGED if errors or unreadable or gone else ExitStatus.OK
