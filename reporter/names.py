"""File names from outside, as people see them and as the outputs keep them.

Where it sits: ``table.build`` and the run's metadata pass every name and path
through here. A name that is not valid UTF-8 (an instrument PC writing Latin-1 to a
share: ``Probe_M\\xfcller.png``) reaches Python with surrogate escapes, which no
UTF-8 output can encode. It is shown with U+FFFD (``Probe_M\ufffdller.png``, the
``file`` column, the reports, the slot) and kept with its bytes escaped
(``Probe_M\\xfcller.png``, the ``path`` column), which still identifies the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import PurePath

__all__ = [
    "FORMULA_STARTS",
    "IMAGE_EXTENSIONS",
    "defused",
    "is_image",
    "not_a_file",
    "printable",
    "shown",
    "stored",
    "stored_tree",
]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Text a spreadsheet may run as a formula when a cell starts with it (OWASP)."""


def defused(text: str) -> str:
    """A CSV cell a spreadsheet reads as text, never as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
    | {".heic", ".heif", ".avif"}  # a phone's photos: HEIF through pi-heif, AVIF Pillow's own
    | {".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".j2k"}  # instruments' and scanners', by OpenCV
)
"""The file names a folder's images are found by (``inputs.discover``)."""


def is_image(path: PurePath) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def not_a_file(path, st: os.stat_result | None = None) -> str | None:
    """What ``path`` is when it is not a regular file (links followed), in a person's
    words: "a folder", "a pipe", "a device", "a socket", "a broken link", "not found";
    None for a regular file. ``st``: its ``os.stat``, when the caller has made it.

    Every place that wants one file from a person (an image, the baseline, a query, the
    mask, the history) asks this before opening it: opening a pipe for reading waits for
    a writer for ever, and a folder or a device is never what was meant."""
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "a broken link" if os.path.islink(path) else "not found"
        except NotADirectoryError:  # a path through a file: x.png/y.png
            return "not found"
        except OSError as exc:  # a loop of links, a name too long
            return exc.strerror or str(exc)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _raw(text: str) -> bytes:
    """The bytes a name stood for (lone surrogates that are no escape become U+FFFD)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        cleaned = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
        return cleaned.encode("utf-8", "surrogateescape")


_HIDDEN = {  # as visible escapes
    c: f"\\u{c:04x}"
    for c in (
        *(0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)),  # bidi
        *(0x00AD, 0x180E, 0x200B, *range(0x2060, 0x2065), *range(0x206A, 0x2070), 0xFEFF),
        *(0x2028, 0x2029),  # line and paragraph separators
    )
}
"""Characters that reorder a line or draw as nothing. Left as they are: the zero-width
joiner and non-joiner (U+200C, U+200D), which Persian, the Indic scripts and emoji
sequences need, and the variation selectors."""


def shown(text: str) -> str:
    """For people: bytes that are not UTF-8 as U+FFFD; Unicode's bidirectional controls,
    and the characters that draw as nothing, as visible escapes (``\\u202e``).

    A name holding RIGHT-TO-LEFT OVERRIDE (``scan\\u202egnp.exe``) is drawn as
    ``scanexe.png``, and reorders whatever follows it on its line (the verdict, the
    metrics of a log line or of a table's row): the "Trojan Source" trick
    (CVE-2021-42574). A zero-width space or a soft hyphen makes two files look like one
    (``a.png`` and ``a\\u200b.png``) in a duplicates report, where one of them is to be
    deleted. ``stored`` keeps the character."""
    return _raw(text).decode("utf-8", "replace").translate(_HIDDEN)


def stored(text: str) -> str:
    """For the record: bytes that are not UTF-8 as \\xNN escapes."""
    return _raw(text).decode("utf-8", "backslashreplace")


def stored_tree(value):
    """``value`` (a run's metadata: dicts, lists, strings) with every string ``stored``."""
    if isinstance(value, str):
        return stored(value)
    if isinstance(value, dict):
        return {stored_tree(k): stored_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored_tree(v) for v in value]
    return value


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """For a line a person reads (the summary, the log): control characters (newline, CR,
    ESC, ...) as visible escapes, so a file name cannot forge a line or move the cursor."""
    return "".join(
        _ESCAPES.get(c, f"\\x{ord(c):02x}") if ord(c) < 32 or 127 <= ord(c) < 160 else c
        for c in shown(text)
    )
