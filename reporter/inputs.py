"""Finding the files of a run: the inputs, what is skipped and why, and the baseline.

Where it sits: the first step of ``pipeline.run``. Folders are listed (with
``--recursive``, walked without following links to folders); a folder that
cannot be read is reported, never skipped in silence; files that are not
images are listed as skipped with a reason, and so are those an ``--exclude``
pattern matches (a folder it matches is not entered); reporter's own folders met on the
walk (the reports, the history's baseline copies and locks, the duplicates
moved aside) are left out with a log line. :func:`choose_baseline` picks the
baseline among them (``--baseline``, ``first``, or the file named baseline).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from .compare import Input
from .config import Config
from .errors import ReporterError
from .names import IMAGE_EXTENSIONS, is_image, not_a_file, shown
from .record import SkippedFile

__all__ = [
    "baseline_aliases",
    "baseline_named",
    "choose_baseline",
    "discover",
    "excluded_by",
    "left_out",
    "own_folders",
]

log = logging.getLogger("reporter")


def own_folders(*folders: tuple[Path, str]) -> dict[tuple[int, int], str]:
    """reporter's own folders, as ``discover`` leaves them out: by their device and
    inode (one stat per folder met, whatever links or spellings lead to it), each with
    what it holds. Folders that do not exist yet are left out of the map."""
    own = {}
    for folder, what in folders:
        try:
            st = os.stat(folder)
        except OSError:
            continue
        own.setdefault((st.st_dev, st.st_ino), what)
    return own


def excluded_by(rel: PurePosixPath, patterns: Sequence[str], folder: bool = False) -> str | None:
    """The reason an ``--exclude`` pattern leaves out ``rel`` (a path below a folder
    input, or a named file's name), or None.

    Each pattern is matched as pathlib's ``PurePath.match`` does, from the right and case
    by case: ``*_thumb.png`` matches a name at any depth, ``previews/*.png`` a file
    directly in any folder named previews, ``*`` never crosses a ``/``. A pattern that
    ends in ``/`` matches folders only. A folder matched is not entered."""
    for pattern in patterns:
        body = pattern.rstrip("/")
        if (body != pattern and not folder) or not body:
            continue
        if rel.match(body):
            return f"{EXCLUDED} {pattern}" + (" (a folder, not entered)" if folder else "")
    return None


EXCLUDED = "matches --exclude"


def left_out(skipped: Sequence[SkippedFile]) -> str:
    """What a line that says nothing was found adds when patterns left files out:
    `` (3 file(s) or folder(s) left out by --exclude)``; else ""."""
    n = sum(s.reason.startswith(EXCLUDED) for s in skipped)
    return f" ({n:,} file(s) or folder(s) left out by --exclude)" if n else ""


def _listing(
    folder: Path,
    recursive: bool,
    unreadable: list[SkippedFile],
    own: dict[tuple[int, int], str] | None = None,
    exclude: Sequence[str] = (),
    skipped: list[SkippedFile] | None = None,
) -> list[Path]:
    """Every entry below ``folder`` (one level, or all with ``recursive``), sorted by its
    path relative to the folder; folders that cannot be read go to ``unreadable``, and
    the walk does not enter ``own`` folders (:func:`own_folders`) nor the folders an
    ``exclude`` pattern matches, which go to ``skipped``.

    os.walk with an onerror hook, not Path.glob: glob passes over an unreadable
    sub-folder without a word, and a run would then report PASS on images it never saw.
    Symbolic links to folders are not followed (no loops), as glob did not.
    """

    def failed(exc: OSError) -> None:
        where = exc.filename or folder
        unreadable.append(SkippedFile(str(where), exc.strerror or str(exc)))
        log.error("cannot read the folder %s: %s", where, exc.strerror or exc)

    def entered(root: str, name: str) -> bool:
        if name.startswith(".") or _own(root, name, own):
            return False
        if not exclude:
            return True
        path = Path(root) / name
        why = excluded_by(PurePosixPath(path.relative_to(folder).as_posix()), exclude, True)
        if why and skipped is not None:
            skipped.append(SkippedFile(str(path), why))
            log.debug("skipped %s: %s", path, why)
        return not why

    paths: list[Path] = []
    if recursive:
        for root, dirs, files in os.walk(folder, onerror=failed):
            dirs[:] = [d for d in dirs if entered(root, d)]
            paths += [Path(root) / name for name in files]
    else:
        try:
            with os.scandir(folder) as entries:
                paths = [Path(entry.path) for entry in entries]
        except OSError as exc:
            failed(exc)
    return sorted(paths, key=lambda p: p.relative_to(folder).as_posix())


def _own(root: str, name: str, own: dict[tuple[int, int], str] | None) -> bool:
    """Whether root/name is one of reporter's ``own`` folders, which the walk leaves out
    (with a log line): a run under ``-r`` met its history's copy of the baseline as an
    image to compare, and a second ``duplicates --move-duplicates`` moved the moved
    files again."""
    if not own:
        return False
    path = os.path.join(root, name)
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False  # the walk reports what it cannot read
    what = own.get((st.st_dev, st.st_ino))
    if what is not None:
        log.info("left out %s: %s", path, what)
    return what is not None


def discover(
    inputs: tuple[Path, ...],
    *,
    recursive: bool,
    own: dict[tuple[int, int], str] | None = None,
    exclude: Sequence[str] = (),
) -> tuple[list[Input], list[SkippedFile], list[SkippedFile]]:
    """Image files from files and folders, sorted within each folder, each once; the
    files skipped; and the folders that could not be read. With ``recursive``, the
    ``own`` folders (:func:`own_folders`) found below a given folder are not entered;
    a folder given as an input is listed whatever it is. Files and folders that an
    ``exclude`` pattern matches (:func:`excluded_by`) are skipped, a named file by its
    name."""
    found: list[Input] = []
    skipped: list[SkippedFile] = []
    unreadable: list[SkippedFile] = []
    seen: dict[Path, int] = {}  # each file's real path: where it is in found

    def add(path: Path, file: str) -> None:
        key = path.resolve()
        at = seen.setdefault(key, len(found))
        if at == len(found):
            found.append(Input(path, file))
            return
        first = found[at].path
        if os.path.abspath(first) == os.path.abspath(path):  # the same name twice
            return
        if baseline_named(path) and not baseline_named(first):  # the name a run looks for
            found[at], path, first = Input(path, file), first, path
        skipped.append(SkippedFile(str(path), ANOTHER_NAME))  # a link, another spelling
        log.info("skipped %s: %s, %s", shown(str(path)), ANOTHER_NAME, shown(str(first)))

    for given in inputs:
        if ".." in given.parts:  # /x/w1/../days: shown as the folder it is (links followed)
            given = given.resolve()
        if given.is_file():
            why = exclude and excluded_by(PurePosixPath(given.name), exclude)
            if why:  # a shell's glob named it: the pattern still says no
                skipped.append(SkippedFile(str(given), why))
                log.debug("skipped %s: %s", given, why)
                continue
            add(given, given.name)  # named explicitly: compared even with an odd extension
        elif given.exists() and not given.is_dir():  # reading a pipe would wait for ever
            raise ReporterError(f"{given} is {not_a_file(given)}: give image files or folders")
        elif given.is_dir():
            for path in _listing(given, recursive, unreadable, own, exclude, skipped):
                rel = path.relative_to(given)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.DS_Store, ._x.png, .git)
                if path.is_dir():
                    continue
                why = exclude and excluded_by(PurePosixPath(rel.as_posix()), exclude)
                if why:
                    skipped.append(SkippedFile(str(path), why))
                    log.debug("skipped %s: %s", path, why)
                    continue
                if not path.is_file():  # a FIFO or socket: reading it could block forever
                    broken = path.is_symlink() and not path.exists()
                    why = "a broken link" if broken else "not a regular file"
                    skipped.append(SkippedFile(str(path), why))
                    log.warning("skipped %s: %s", path, why)
                    continue
                if not is_image(path):
                    skipped.append(SkippedFile(str(path), NOT_AN_IMAGE))
                    log.debug("skipped %s: %s", path, NOT_AN_IMAGE)
                    continue
                add(path, rel.as_posix())
        else:
            raise ReporterError(f"no such file or folder: {given}")
    _say_not_images([Path(f.path) for f in skipped if f.reason == NOT_AN_IMAGE])
    _say_excluded([f.path for f in skipped if f.reason.startswith(EXCLUDED)])
    return found, skipped, unreadable


NOT_AN_IMAGE = "not an image file extension"


def baseline_named(path: Path) -> bool:
    return path.stem.lower() == "baseline"  # as choose_baseline finds it


ANOTHER_NAME = "another name for a file already listed"
BASELINE_NAME = "another name for the baseline"


def baseline_aliases(baseline: Path, found: list[Input], items: list[Input]) -> list[SkippedFile]:
    """The inputs that ``choose_baseline`` left out as the baseline's own file under
    another name (a link to it in the folder, ``--baseline`` naming a file the folder
    holds by a link): each a file not compared, listed with its reason, so that the
    files the summary counts add up to the folder's."""
    kept = {id(i) for i in items}
    same = os.path.abspath(baseline)
    aliases = [
        SkippedFile(str(i.path), BASELINE_NAME)
        for i in found
        if id(i) not in kept and os.path.abspath(i.path) != same
    ]
    for alias in aliases:
        log.info("skipped %s: %s, %s", shown(alias.path), BASELINE_NAME, shown(str(baseline)))
    return aliases


NAMED = 5  # the skipped files the log line names; the rest are counted


def _say_not_images(paths: list[Path]) -> None:
    """One log line for the files skipped by their extension, not one each: a folder of
    5,000 raw data files beside its exports wrote 5,000 lines of 200 characters into a
    cron log every day. It counts them by extension and names the first few; each is
    in the debug log and in the reports' list of files not compared."""
    if not paths:
        return
    kinds = Counter(p.suffix.lower() or "no extension" for p in paths)
    counted = ", ".join(
        f"{k} {n:,}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    named = ", ".join(str(p) for p in paths[:NAMED])
    more = f" and {len(paths) - NAMED:,} more" if len(paths) > NAMED else ""
    log.info(
        "skipped %s file(s) not named as images (%s): %s%s; images are %s",
        f"{len(paths):,}", counted, named, more, " ".join(sorted(IMAGE_EXTENSIONS)),
    )  # fmt: skip


def _say_excluded(paths: list[str]) -> None:
    """One log line for what --exclude left out, naming the first few (each is in the
    debug log and in the reports' list of files not compared)."""
    if paths:
        more = f" and {len(paths) - NAMED:,} more" if len(paths) > NAMED else ""
        named = ", ".join(shown(p) for p in paths[:NAMED])
        log.info(
            "left out %s file(s) or folder(s) by --exclude: %s%s", f"{len(paths):,}", named, more
        )


def choose_baseline(config: Config, found: list[Input]) -> tuple[Path, list[Input]]:
    """The baseline file, and the inputs without it (the baseline is not a row)."""
    if not found and config.baseline is None:  # say what is missing: images, not a baseline
        where = ", ".join(shown(str(p)) for p in config.inputs) or "the inputs"
        raise ReporterError(f"no images in {where} (.png, .jpg, .tif, .bmp, .webp, .gif)")
    if config.first_as_baseline:
        if not found:
            raise ReporterError("--baseline first: no images among the inputs")
        return found[0].path, found[1:]
    if config.baseline is not None:
        baseline = config.baseline.resolve() if ".." in config.baseline.parts else config.baseline
        kind = not_a_file(baseline)  # reading a pipe would wait for a writer for ever
        if kind == "not found":
            raise ReporterError(f"baseline not found: {baseline}")
        if kind:
            raise ReporterError(f"baseline {baseline} is {kind}: give one image file")
    else:
        named = [i for i in found if baseline_named(i.path)]
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
