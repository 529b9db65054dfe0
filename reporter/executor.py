"""Where the per-image work runs: this process, local worker processes, or a Dask cluster.

Where it sits: ``compare.compare_all`` (``run``, ``search --by METRIC``) and
``features.gather`` (``search``, ``duplicates``, ``cluster``) take the cluster that
:func:`connect` opens, and send it the same per-image work they would do locally
(decoding, metrics, hashes, embeddings, thumbnails and diff maps); the client gathers
the rows and writes every output, exactly as without it.

Without a scheduler (``--scheduler``, ``[run] scheduler``, ``REPORTER_SCHEDULER``) the
local process pool is used and Dask is not even imported: the Dask side lives in
``_dask.py``, imported only here and only when asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ReporterError

__all__ = ["address", "connect", "ENVIRONMENT", "LOCAL", "valid_address"]

ENVIRONMENT = "REPORTER_SCHEDULER"
LOCAL = "local:"  # local:N, a LocalCluster of N worker processes on this machine

_ADDRESS = re.compile(
    r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d{1,5})/?$"
)  # [IPv6] or a host name or IPv4, then the port, which Dask's client needs (it has no
# default: 'sched' alone was a ValueError traceback); inproc:// is one process's own


ADDRESS_MUST = (
    "must be a scheduler's address with its port (tcp://host:8786, host:8786; a port "
    "from 1 to 65535), or local:N for N worker processes on this machine (1 to 1024)"
)


def valid_address(text: str) -> bool:
    """``local:N`` (N at least 1), or a scheduler's address: ``tcp://host:8786``, ``host:8786``."""
    if text.startswith(LOCAL):
        count = text[len(LOCAL) :]
        return count.isdigit() and 0 < int(count) <= 1024
    found = _ADDRESS.match(text)
    return bool(found) and 0 < int(found.group(1)) < 65536


def address(given: str | None) -> str | None:
    """The scheduler to use: ``given`` (the flag, else the config file), else the
    environment's ``REPORTER_SCHEDULER``, else None (the local process pool)."""
    chosen = given or os.environ.get(ENVIRONMENT, "").strip() or None
    if chosen is not None and not valid_address(chosen):
        raise ReporterError(
            f"scheduler {chosen!r} (from {ENVIRONMENT if not given else 'the settings'}): "
            + ADDRESS_MUST
        )
    return chosen


@contextmanager
def connect(
    given: str | None,
    *,
    timeout: float,
    send_bytes: bool = False,
    max_bytes: int | None = None,
) -> Iterator[object | None]:
    """The Dask cluster for one command (None: no scheduler was asked for), closed on the
    way out; its tasks are cancelled if the command is stopped. An unreachable scheduler
    is one ``ReporterError`` line within ``timeout`` seconds."""
    chosen = address(given)
    if chosen is None:
        if send_bytes:
            raise ReporterError("--send-bytes is for a Dask cluster: give --scheduler too")
        yield None
        return
    try:
        from . import _dask
    except ImportError as exc:
        raise ReporterError(
            f"--scheduler needs Dask ({exc.name or exc}): pip install 'reporter[distributed]'"
        ) from None
    cluster = _dask.Cluster.open(
        chosen, timeout=timeout, send_bytes=send_bytes, max_bytes=max_bytes
    )
    try:
        yield cluster
    finally:
        cluster.close()
