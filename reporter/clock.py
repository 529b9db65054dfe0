"""Times people read: local time with its UTC offset, or the configured zone's.

Where it sits: under every output a person reads (report, workbook, e-mail,
``reporter history``, the Levey-Jennings charts). Times are kept and stored in
UTC (results.json, the history database); this module only shows them. The zone
is the ``timezone`` setting (an IANA name such as ``Europe/Berlin``) or, when it
is not set, this machine's local zone (the ``TZ`` environment variable applies),
looked up for each moment, so a run before and one after a change to summer
time each show their own offset.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["known_zone", "local", "offset", "shown", "zone"]


@cache
def zone(name: str | None) -> tzinfo | None:
    """The zone called ``name``; None (this machine's local zone) for None or empty."""
    return ZoneInfo(name) if name else None


def known_zone(name: str) -> bool:
    """Whether ``name`` is an IANA zone this machine knows (tzdata is a dependency)."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a
        return False  # file name (ENAMETOOLONG), which zoneinfo does not turn into its own
    return True


def local(moment: datetime | str, name: str | None = None) -> datetime:
    """``moment`` in the zone (a naive time or ISO text without offset is UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone(name))


def offset(moment: datetime | str, name: str | None = None) -> str:
    """The zone's offset from UTC at ``moment``: ``+01:00``."""
    return _offset(local(moment, name))


def _offset(when: datetime) -> str:
    text = when.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def shown(moment: datetime | str, name: str | None = None, *, seconds: bool = False) -> str:
    """``2026-11-23 14:05 +01:00``: the local date, time and offset."""
    when = local(moment, name)
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " " + _offset(when)
