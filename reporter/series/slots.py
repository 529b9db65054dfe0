"""Slots: which file of today's run continues which file of earlier runs.

A slot is a file name with its dates, times and run counters left out
(``tubeA_2026-10-01.png`` -> ``tubeA_*.png``), or what ``--slot-pattern`` makes
of it; each slot has its own control limits.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

__all__ = ["NAME", "default_slot", "slot_of", "slots"]

log = logging.getLogger("reporter")


NAME = "name"
"""``--slot-pattern name``: a file's slot is its whole name."""

# What a default slot leaves out of a file name: dates, times and run counters, as
# instruments and export scripts write them. Each matches a whole token (between
# separators, or after letters for a date), so "tube_001" or "A01" stay as they are;
# what is left out becomes "*".
_YEAR = r"(?:19|20)\d\d"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_SEP = r"[-_.]"
_DATE = (
    rf"(?:{_YEAR}({_SEP}?){_MONTH}\1{_DAY}"  # 2026-10-01, 20261001, 2026_10_01
    rf"|{_DAY}([-_.]){_MONTH}\2{_YEAR}"  # 01.10.2026, 01-10-2026
    rf"|{_MONTH}([-_.]){_DAY}\3{_YEAR})"  # 10-01-2026 (US order)
)
_HOUR, _MINUTE = r"(?:[01]\d|2[0-3])", r"[0-5]\d"
_CLOCK = rf"{_HOUR}([-_.:h]?){_MINUTE}(?:\4{_MINUTE})?(?:\.\d{{1,6}})?Z?"  # 07:15, 071500
_TIME6 = rf"{_HOUR}{_MINUTE}{_MINUTE}"  # 071500 on its own
_TIME_SEP = rf"{_HOUR}([-_.:h]){_MINUTE}\5{_MINUTE}"  # 07-15-00 on its own
_COUNTER = r"(?:run|acq|seq|take|rep)[-_ ]?\d{1,5}"  # run3, run_003, acq-12
_TOKEN = re.compile(
    # A date may be glued to letters (QC20261001); a bare time or a counter may not.
    rf"(?<![0-9])(?:{_DATE}(?:[T_ -]?{_CLOCK})?)(?![0-9])"
    rf"|(?<![A-Za-z0-9])(?:{_TIME6}|{_TIME_SEP}|{_COUNTER})(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_STARS = re.compile(r"\*(?:[-_. ]*\*)+")  # neighbouring stars become one
_AFTER_STAR = re.compile(r"(?<=\*)[-_. ]?\d{1,4}(?![A-Za-z0-9])")  # tubeA_2026-10-01_3


def default_slot(file: str) -> str:
    """A file's name without its dates, times and run counters (each becomes "*").

    ``tubeA_2026-10-01.png`` and ``tubeA_20261002_071500.png`` are both slot
    ``tubeA_*.png``; a name without any stays as it is.
    """
    slot = _TOKEN.sub("*", file)
    if slot == file:
        return file
    slot = _AFTER_STAR.sub("", _STARS.sub("*", slot))
    return _STARS.sub("*", slot)


def slot_of(file: str, pattern: str | None) -> str:
    """The slot of an image: its name without dates (the default), or the part a pattern keeps.

    With a pattern, the group named ``slot`` (or else group 1) is the slot; a
    pattern without groups is cut out of the name. E.g. ``_\\d{4}-\\d\\d-\\d\\d``
    turns ``FSC_SSC_2026-11-22.png`` into ``FSC_SSC.png``, and
    ``(?P<slot>.+)_\\d{4}-\\d\\d-\\d\\d`` into ``FSC_SSC``. A name the pattern does
    not match keeps its name. ``name`` keeps every name whole.
    """
    if not pattern:
        return default_slot(file)
    if pattern == NAME:
        return file
    match = re.search(pattern, file)
    if not match:
        return file
    if "slot" in match.re.groupindex:
        return match.group("slot") or file
    if match.re.groups:
        return match.group(1) or file
    return (file[: match.start()] + file[match.end() :]) or file


def slots(files: list[str], pattern: str | None) -> list[str]:
    """Slots of a run's files; files that would share a slot each keep their own name."""
    out = [slot_of(file, pattern) for file in files]
    shared = {slot for slot, n in Counter(out).items() if n > 1}
    for i, (file, slot) in enumerate(zip(files, out, strict=True)):
        if slot in shared:
            log.warning(
                "%s: slot %r is shared with another file of this run; using its name", file, slot
            )
            out[i] = file
    return out
