"""A series: the scheduled runs of one instrument and plot, and what they remember.

The package holds everything a run of a series needs beyond its own images:

- ``store.py``: the SQLite history (runs, rows, baselines, acceptances; schema
  migrations) and the per-series lock;
- ``rules.py``: control limits, Westgard and EWMA rules (pure functions);
- ``slots.py``: which file of today continues which file of earlier runs;
- ``charts.py``: Levey-Jennings charts;
- ``session.py``: :class:`Session`, one run's hold on its series (the store, the
  lock, the baseline), which ``pipeline.run`` calls at three points: choose the
  baseline, judge against the limits, record;
- ``commands.py``: the ``baseline``, ``history`` and ``accept`` subcommands.
"""

from __future__ import annotations

from .session import Session

__all__ = ["Session"]
