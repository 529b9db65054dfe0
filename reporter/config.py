"""Every setting of a run, declared once; TOML loading and validation.

Where it sits: the CLI (or a notebook) builds a :class:`Config` and hands it to
``pipeline.run``. Precedence: these defaults < the TOML file < the command line.
A bad value raises :class:`ConfigError` with a one-line message (exit status 2).

Each setting is one field of the frozen dataclasses below: its name and type
(the annotation), its default, and in ``setting(...)`` its TOML key, its help
text, its command-line flag and its rule. ``SETTINGS`` lists them as a table;
:func:`load_toml`, :func:`check`, :meth:`Config.to_dict` (results.json) and the
command line (``cli.py``) all walk it, so adding a setting is adding one field.
The per-metric ``[limits]`` and the checks between settings are written out.
"""

from __future__ import annotations

import codecs
import datetime
import math
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import clock, executor, machine
from .catalog import METRICS
from .errors import ConfigError
from .names import not_a_file

__all__ = [
    "AUTO",
    "auto_metrics",
    "BASELINE_FIRST",
    "check",
    "check_limit",
    "Comparison",
    "Config",
    "DEFAULT_LIMITS",
    "DEFAULT_MIN_SD",
    "Floors",
    "floors_for_range",
    "DEFAULT_MIN_SPREAD",
    "DEFAULT_RULES",
    "DENSE_CHART_METRICS",
    "DENSE_CONTROL_METRICS",
    "DENSE_OUTLIER_METRICS",
    "Email",
    "FORMATS",
    "HistorySettings",
    "Limit",
    "load_toml",
    "read_range",
    "max_jobs",
    "OutlierRule",
    "Smtp",
    "SPARSE_CHART_METRICS",
    "SPARSE_CONTROL_METRICS",
    "SPARSE_OUTLIER_METRICS",
    "WESTGARD_RULES",
    "with_environment",
    "WORKERS_PAY_MPX",
    "with_limit",
]

FORMATS = ("csv", "json", "html", "xlsx")
"""Output formats this version can write."""

WORKERS_PAY_MPX = 4
"""Below this much work (images x megapixels per image), starting worker processes costs
more than they save when the fork server starts only once the run wants it (a run called
from Python), so such a run with the default jobs 0 stays in one process. Measured
through ``reporter run`` on a 2-core machine on 2026-12-02 (benchmarks/workers.py): all
cores against one, 0.95-1.03 at 0.5-4.2 Mpx of 512 px images, 1.03 at 2.1 Mpx, 1.10 at
4.2, 1.12 at 8.4, 1.39 at 16.8 and 1.38 at 33.6 Mpx of 1024 px images. The command line
starts the server before its own imports (``pool.start_early``); there workers pay at
any size (1.05-1.22 below 4 Mpx, 2026-12-03), and ``effective_jobs(early=True)`` uses
them."""


# --- the settings table --------------------------------------------------------------------
#
# Each setting is one field of the dataclasses below: its name and type (the
# annotation), its default, and in ``setting(...)`` where it sits in the TOML file,
# its help text, its command-line flag and what a valid value is. TOML loading
# (load_toml), validation (check), the command line (cli.py) and results.json
# (Config.to_dict) all walk this table (``SETTINGS``); adding a setting is one field.


@dataclass(frozen=True)
class Spec:
    """How one setting is read, checked, offered on the command line and reported."""

    toml: str | None  # "section.key" in the file; None: not in the file
    help: str
    kind: str = "value"  # how a TOML value is read (see _READERS)
    flags: tuple[str, ...] = ()  # on the command line of ``reporter run``
    metavar: str | None = None
    valid: Any = None  # value -> bool
    must: str = ""  # what a valid value is, for the message: "must be positive"
    group: str | None = None  # the --help group of its flag
    negate: bool = False  # a flag that turns it off (--no-history)
    nullable: bool = False  # "off" (None) is a value
    json: Any = True  # False: not in results.json; a callable: config -> the reported value

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be positive, not 0"), or None."""
        if self.valid is None or value is None or self.valid(value):
            return None
        return f"{self.must}, not {as_written(value)}"


def as_written(value: Any) -> str:
    """A value for a message, spelt as in the TOML file it came from (``true``, a date as
    written, ``{ warn = 1 }``) rather than as Python holds it (``True``,
    ``datetime.date(1979, 5, 27)``), and cut to about :data:`WRITTEN` characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime.date | datetime.time):
        text = value.isoformat()
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(as_written(item) for item in value) + "]"
    elif isinstance(value, Mapping):
        text = "{ " + ", ".join(f"{k} = {as_written(v)}" for k, v in value.items()) + " }"
        text = "{}" if not value else text
    else:
        text = repr(value)
    if len(text) <= WRITTEN:
        return text
    return f"{text[: WRITTEN - 20]}... ({len(text)} characters)"


WRITTEN = 80
"""How long a value a message shows (a 5,000-character string is cut)."""


def _good_pattern(pattern: Any) -> bool:
    """An --exclude pattern: text that PurePath.match takes, relative, one line."""
    return (
        isinstance(pattern, str)
        and bool(pattern.strip("/").strip())
        and not pattern.startswith("/")
        and not any(c in pattern for c in "\0\r\n")
    )


def _good_range(value: Any) -> bool:
    """Two finite numbers, low below high, with a finite span."""
    try:
        low, high = value
        return bool(math.isfinite(high - low) and low < high)
    except (TypeError, ValueError):
        return False


def read_range(text: str) -> tuple[float, float]:
    """ "LO:HI" (the command line's value_range) as two numbers; ValueError if it is not."""
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(f"{as_written(text)} is not LO:HI")
    try:
        return float(low), float(high)
    except ValueError:
        raise ValueError(f"{as_written(text)} is not two numbers LO:HI") from None


def setting(default: Any = None, *, factory: Any = None, **spec: Any) -> Any:
    """A dataclass field that is a setting: its default and its :class:`Spec`."""
    meta = {"setting": Spec(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One row of the table: the attribute path in Config, its type, default and spec."""

    path: tuple[str, ...]  # ("history", "min_runs")
    type: str
    default: Any
    spec: Spec

    @property
    def name(self) -> str:
        """How messages name it: its TOML key, without the [run] and [input] sections."""
        key = self.spec.toml or ".".join(self.path)
        return key.split(".", 1)[1] if key.startswith(("run.", "input.")) else key

    def get(self, config: Any) -> Any:
        for part in self.path:
            config = getattr(config, part)
        return config


def _rows(cls: type, prefix: tuple[str, ...] = ()) -> list[Setting]:
    rows = []
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is None and f.metadata.get("section"):  # a nested dataclass of settings
            rows += _rows(f.metadata["section"], (*prefix, f.name))
        elif spec is not None:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            rows.append(Setting((*prefix, f.name), str(f.type), default, spec))
    return rows


def _compiles(pattern: str) -> bool:
    import re

    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def section(cls: type) -> Any:
    """A dataclass field holding a nested dataclass of settings."""
    return field(default_factory=cls, metadata={"section": cls})


def with_value(config: Any, path: tuple[str, ...], value: Any) -> Any:
    """``config`` with the setting at ``path`` replaced (nested frozen dataclasses)."""
    if len(path) == 1:
        return replace(config, **{path[0]: value})
    inner = with_value(getattr(config, path[0]), path[1:], value)
    return replace(config, **{path[0]: inner})


@dataclass(frozen=True)
class Limit:
    """WARN and FAIL limits of one metric; ``None`` means no limit.

    For a metric where higher is better (similarities, PSNR) a value below the
    limit fires; for a distance (MSE, hash distances) a value above it.
    """

    warn: float | None = None
    fail: float | None = None


# Chosen from docs/detection.md (600 healthy generated dot plots against every fault),
# the sample run and the robustness table: see README "Default limits". Pixel-level
# SSIM, PSNR, MSE and cosine have no default limit: on sparse instrument images two
# normal runs already differ a lot at the pixel level, so a fixed pixel-level limit
# either never fires or always does.
DEFAULT_LIMITS: Mapping[str, Limit] = MappingProxyType(
    {
        "ssim_64": Limit(warn=0.88, fail=0.85),
        "phash": Limit(warn=10, fail=20),
        "signal_change": Limit(warn=0.08, fail=0.12),
        "occupancy_change": Limit(warn=0.32, fail=0.36),
    }
)

AUTO = "auto"
"""The metrics of the statistical rules, chosen by the baseline (sparse or not)."""

# The statistical rules (outliers of a run, control rules of a series) watch metrics
# whose healthy variation they can model. On a sparse image (a dot plot) each SSIM
# follows where a wobbling gain moved the populations: its healthy values have a tail
# that passes mean + 3 SD on about 2 % of healthy days even on the cube-root scale
# (docs/detection.md), so there the rules watch the signal metrics; the fixed limits
# still apply to every metric. On a dense image (a photograph, a slide) they watch both.
# psnr_local (the worst cell's PSNR) is watched on both: a local defect, such as a speck
# of dust on a flat field (which a vignetted field's bright centre makes "sparse"), moves
# no other metric; its floors keep a dot plot's healthy scatter of it quiet.
SPARSE_OUTLIER_METRICS = ("signal_change", "occupancy_change", "shift", "phash", "psnr_local")
DENSE_OUTLIER_METRICS = (
    "ssim",
    "ssim_coarse",
    "ms_ssim",
    "ssim_64",
    "psnr",
    "psnr_local",
    "phash",
    "signal_change",
    "occupancy_change",
    "shift",
)
SPARSE_CONTROL_METRICS = ("signal_change", "occupancy_change", "shift", "psnr_local")
DENSE_CONTROL_METRICS = (
    "ssim",
    "ms_ssim",
    "ssim_64",
    "psnr",
    "psnr_local",
    "signal_change",
    "occupancy_change",
    "shift",
)
SPARSE_CHART_METRICS = ("occupancy_change", "signal_change")
DENSE_CHART_METRICS = ("ssim_64",)


def auto_metrics(chosen: tuple[str, ...] | None, sparse: bool, kind: str) -> tuple[str, ...]:
    """``chosen``, or for None ("auto") the ``kind`` ("outlier", "control", "chart") set
    for a sparse or a dense baseline."""
    if chosen is not None:
        return chosen
    table = {
        "outlier": (SPARSE_OUTLIER_METRICS, DENSE_OUTLIER_METRICS),
        "control": (SPARSE_CONTROL_METRICS, DENSE_CONTROL_METRICS),
        "chart": (SPARSE_CHART_METRICS, DENSE_CHART_METRICS),
    }[kind]
    return table[0] if sparse else table[1]


class Floors(Mapping[str, float]):
    """Per-metric floors (``min_spread``, ``min_sd``), and which of them a configuration
    gave (``given``): the others are defaults, and MSE's default is for 8-bit values
    (:func:`for_range`)."""

    def __init__(self, values: Mapping[str, float], given: frozenset[str] = frozenset()) -> None:
        self._values = dict(values)
        self.given = frozenset(given)

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Floors({self._values!r}, given={sorted(self.given)!r})"

    def for_range(self, data_range: float) -> Floors:
        """These floors for a run whose values span ``data_range`` (255 for 8 bits, 65535
        for 16, 4095 with ``bits = 12``, HI - LO with ``value_range``): MSE is in squared
        units of the data, so its default floor, set for 8-bit values, scales with the
        square of the range. A floor the configuration gave is its user's, in the units
        that user's MSE is in, and stays."""
        if "mse" not in self or "mse" in self.given or data_range == 255:
            return self
        scaled = self._values["mse"] * (data_range / 255) ** 2
        return Floors({**self._values, "mse": scaled}, self.given)


def floors_for_range(floors: Mapping[str, float], data_range: float) -> Floors:
    """``Floors.for_range`` of ``floors``; a plain mapping (a ``Config`` built in code) is
    taken as given whole."""
    if not isinstance(floors, Floors):
        floors = Floors(floors, frozenset(floors))
    return floors.for_range(data_range)


# The smallest spread the outlier rule assumes, in each metric's units: without it
# a run of near-identical images (MAD = 0) would call any difference an outlier.
# MSE's, here for 8-bit values, scales with the run's range (Floors.for_range).
DEFAULT_MIN_SPREAD: Floors = Floors(
    {
        "cosine": 0.001,
        "ssim": 0.01,
        "ssim_coarse": 0.01,
        "ms_ssim": 0.01,
        "ssim_64": 0.01,
        "psnr": 0.5,
        "psnr_local": 0.5,
        "mse": 1.0,
        "ahash": 1.0,
        "phash": 1.0,
        "signal_change": 0.01,
        "occupancy_change": 0.02,
        "shift": 1.0,  # px: among images in place, a shift beyond about 1.6 px is an outlier
    }
)


@dataclass(frozen=True)
class OutlierRule:
    """Batch-relative rule: a metric far from the run's own median (median and MAD).

    The modified z-score (Iglewicz & Hoaglin 1993) is (x - median) / (1.4826 MAD);
    a value beyond ``z`` on the bad side of the median fires, with ``status``.
    """

    enabled: bool = setting(
        True,
        toml="outliers.enabled",
        kind="bool",
        help="turn the batch-relative outlier rule off",
        flags=("--no-outliers",),
        negate=True,
        group="log",
    )
    min_images: int = setting(
        8,
        toml="outliers.min_images",
        kind="int",
        help="the rule needs at least this many images",
        valid=lambda v: v >= 3,
        must="must be at least 3",
    )
    z: float = setting(
        3.5,
        toml="outliers.z",
        kind="number",
        help="robust z-score beyond which a value is an outlier",
        valid=lambda v: v > 0 and math.isfinite(v),
        must="must be a positive number",
    )
    status: str = setting(
        "WARN",
        toml="outliers.status",
        kind="status",
        help="the status of an outlier",
        valid=lambda v: v in ("WARN", "FAIL"),
        must="must be WARN or FAIL",
    )
    metrics: tuple[str, ...] | None = setting(
        None,
        toml="outliers.metrics",
        kind="metrics",
        help='the metrics it watches, or "auto" (by the baseline: sparse or dense)',
        json=lambda c: _listed(c.outliers.metrics),
    )
    min_spread: Floors = setting(
        factory=lambda: DEFAULT_MIN_SPREAD,
        toml="outliers.min_spread",
        kind="floors",
        help="the smallest spread assumed per metric, in its units",
        json=lambda c: dict(c.outliers.min_spread),
    )


WESTGARD_RULES = ("1-2s", "1-3s", "2-2s", "R-4s", "4-1s", "10x", "EWMA")
"""Control rules on a metric's z-score against its series' limits (see series/rules.py)."""
DEFAULT_RULES = ("1-3s", "2-2s", "R-4s", "4-1s", "10x", "EWMA")
"""1-2s is left out by default: a warning at 2 SD on each of three or more metrics
fires on about one healthy day in ten (docs/detection.md)."""

# The smallest SD the control rules assume, in each metric's units: a slot whose
# first runs happened to agree to the fourth decimal must not call the fifth a fault.
# MSE's, here for 8-bit values, scales with the run's range (Floors.for_range).
DEFAULT_MIN_SD: Floors = Floors(
    {
        "cosine": 1e-4,
        "ssim": 0.002,
        "ssim_coarse": 0.002,
        "ms_ssim": 0.002,
        "ssim_64": 0.002,
        "psnr": 0.05,
        # The worst cell of a dot plot scatters 0.3-0.4 dB with a heavy tail (1.6 % of
        # healthy days past mean + 3 SD, docs/detection.md): limits at least 1.5 dB
        # out, where a local defect moves it 2.5-14 dB (README "psnr_local")
        "psnr_local": 0.5,
        "mse": 0.5,
        "ahash": 0.5,
        "phash": 0.5,
        # 1 % of the signal area: within the counting noise of a few thousand events
        "signal_change": 0.01,
        "occupancy_change": 0.01,
        "shift": 0.25,
    }
)


@dataclass(frozen=True)
class HistorySettings:
    """The run history of a series, its control limits and rules, and run-folder upkeep."""

    enabled: bool = setting(
        True,
        toml="history.enabled",
        kind="bool",
        help="do not read or record the series' history",
        flags=("--no-history",),
        negate=True,
        group="series",
        json=lambda c: c.keeps_history,
    )
    path: Path | None = setting(
        None,
        toml="history.path",
        kind="path",
        help="the history database (default: [history] path, else reports/history.sqlite)",
        flags=("--history",),
        metavar="PATH",
        group="series",
        json=lambda c: str(c.history_path()) if c.keeps_history else None,
    )
    slot_pattern: str | None = setting(
        None,
        toml="history.slot_pattern",
        kind="str",
        help="a file's slot: group 'slot' (or 1) of REGEX on its name, e.g. "
        "'(?P<slot>.+)_\\d{8}'; 'name' for the whole name (default: the name without its "
        "dates, times and run counters)",
        flags=("--slot-pattern",),
        metavar="REGEX",
        group="series",
        valid=_compiles,
        must="must be a regular expression",
    )
    min_runs: int = setting(
        20,
        toml="history.min_runs",
        kind="int",
        help="in-control runs before the limits are established",
        valid=lambda v: v >= 2,
        must="must be at least 2",
    )
    rules: tuple[str, ...] = setting(
        DEFAULT_RULES,
        toml="history.rules",
        kind="rules",
        help=f"the control rules, from {', '.join(WESTGARD_RULES)}",
        json=lambda c: list(c.history.rules),
    )
    metrics: tuple[str, ...] | None = setting(
        None,
        toml="history.metrics",
        kind="metrics",
        help='the metrics the control rules watch, or "auto"',
        json=lambda c: _listed(c.history.metrics),
    )
    chart_metrics: tuple[str, ...] | None = setting(
        None,
        toml="history.chart_metrics",
        kind="metrics",
        help='the metrics with Levey-Jennings charts, or "auto"',
        json=lambda c: _listed(c.history.chart_metrics),
    )
    chart_runs: int = setting(
        60,
        toml="history.chart_runs",
        kind="int",
        help="runs shown on a Levey-Jennings chart",
        valid=lambda v: v >= 2,
        must="must be at least 2",
        json=False,
    )
    ewma_lambda: float = setting(
        0.2,
        toml="history.ewma_lambda",
        kind="number",
        help="the EWMA's weight of the newest run",
        valid=lambda v: 0 < v <= 1,
        must="must be in (0, 1]",
    )
    ewma_limit: float = setting(
        3.0,
        toml="history.ewma_limit",
        kind="number",
        help="L: the EWMA fires beyond L of its own SDs",
        valid=lambda v: v > 0,
        must="must be positive",
    )
    drift_status: str = setting(
        "WARN",
        toml="history.drift_status",
        kind="status",
        help="the status of an EWMA drift flag",
        valid=lambda v: v in ("WARN", "FAIL"),
        must="must be WARN or FAIL",
    )
    both_sides: bool = setting(
        False,
        toml="history.both_sides",
        kind="bool",
        help="rules fire also when a value is far *more* like the baseline",
    )
    min_sd: Floors = setting(
        factory=lambda: DEFAULT_MIN_SD,
        toml="history.min_sd",
        kind="positive_floors",
        help="the smallest SD the control rules assume per metric, in its units",
        json=lambda c: dict(c.history.min_sd),
    )
    lock_wait: float = setting(
        30.0,
        toml="history.lock_wait",
        kind="number",
        help="wait this long for another run of the series (default 30), then exit 2",
        flags=("--lock-wait",),
        metavar="SECONDS",
        group="series",
        valid=lambda v: v >= 0,
        must="must be 0 or more seconds",
        json=False,
    )
    keep_runs: int = setting(
        0,
        toml="history.keep_runs",
        kind="int",
        help="keep the newest N run folders (default 0: all)",
        flags=("--keep",),
        metavar="N",
        group="series",
        valid=lambda v: v >= 0,
        must="must be 0 (all) or more",
    )
    missing_after: float | None = setting(
        None,
        toml="history.missing_after",
        kind="number",
        nullable=True,
        help="report a gap when the series' previous run is older than HOURS",
        flags=("--missing-after",),
        metavar="HOURS",
        group="series",
        valid=lambda v: v > 0,
        must="must be positive hours",
    )


@dataclass(frozen=True)
class Comparison:
    """What is compared: ignored regions, and whether a shift is compensated.

    ``ignore`` holds rectangles (x, y, w, h) in baseline pixels; ``mask`` a
    black-and-white image of the baseline's size (black = ignored); see masks.py.
    The shift of every image is measured whatever ``align`` says (the ``shift``
    metric, under the statistical rules like any metric); ``align`` compensates it
    when that makes the image more like the baseline.
    """

    ignore: tuple[tuple[int, int, int, int], ...] = setting(
        (),
        toml="compare.ignore",
        kind="regions",
        help="leave this rectangle (baseline pixels) out of every metric; repeatable",
        flags=("--ignore",),
        metavar="X,Y,W,H",
        group="what",
        valid=lambda v: all(len(r) == 4 and min(r[:2]) >= 0 and min(r[2:]) > 0 for r in v),
        must="must be X,Y,W,H with X,Y 0 or more and W,H positive",
        json=lambda c: [list(r) for r in c.comparison.ignore],
    )
    mask: Path | None = setting(
        None,
        toml="compare.mask",
        kind="path",
        help="baseline-sized image: black pixels are ignored",
        flags=("--mask",),
        metavar="FILE",
        group="what",
    )
    align: bool = setting(
        False,
        toml="compare.align",
        kind="bool",
        help="compensate each image's measured shift when that makes it more like the "
        "baseline (off by default)",
        flags=("--align",),
        group="what",
    )


@dataclass(frozen=True)
class Smtp:
    """Where and how to send. User and password never come from the command line."""

    host: str = setting(
        "localhost",
        toml="email.smtp_host",
        kind="str",
        help="SMTP server (default localhost)",
        flags=("--smtp-host",),
        metavar="HOST",
        group="mail",
        json=False,
    )
    port: int | None = setting(  # None: 465 with ssl, 587 with starttls, else 25
        None,
        toml="email.smtp_port",
        kind="int",
        help="default 25, 587, or 465",
        flags=("--smtp-port",),
        metavar="N",
        group="mail",
        valid=lambda v: 0 < v < 65536,
        must="must be 1 to 65535",
        json=False,
    )
    starttls: bool = setting(
        False,
        toml="email.starttls",
        kind="bool",
        help="STARTTLS",
        flags=("--smtp-starttls",),
        group="mail",
        json=False,
    )
    ssl: bool = setting(
        False,
        toml="email.ssl",
        kind="bool",
        help="TLS from the start",
        flags=("--smtp-ssl",),
        group="mail",
        json=False,
    )
    user: str | None = setting(
        None, toml="email.user", kind="str", help="SMTP user (or REPORTER_SMTP_USER)", json=False
    )
    password: str | None = setting(
        None,
        toml="email.password",
        kind="str",
        help="SMTP password (or REPORTER_SMTP_PASSWORD); never on the command line",
        json=False,
    )
    timeout: float = setting(
        30.0,
        toml="email.timeout",
        kind="number",
        help="seconds the whole delivery may take",
        valid=lambda v: v > 0,
        must="must be a positive number of seconds",
        json=False,
    )

    def effective_port(self) -> int:
        if self.port:
            return self.port
        return 465 if self.ssl else 587 if self.starttls else 25


@dataclass(frozen=True)
class Email:
    """Where the e-mailed report goes. Nothing is sent unless ``to`` has an address."""

    to: tuple[str, ...] = setting(
        (),
        toml="email.to",
        kind="strings",
        help="send it to ADDR; repeatable",
        flags=("--email-to",),
        metavar="ADDR",
        group="mail",
        json=False,
    )
    sender: str | None = setting(  # default: reporter@<this host>
        None,
        toml="email.from",
        kind="str",
        help="sender (default reporter@this-host)",
        flags=("--email-from",),
        metavar="ADDR",
        group="mail",
        json=False,
    )
    eml: Path | None = setting(
        None,
        toml="email.eml",
        kind="path",
        help="write the e-mail message to FILE",
        flags=("--eml",),
        metavar="FILE",
        group="mail",
        json=False,
    )
    max_attachment_mb: float = setting(
        15.0,
        toml="email.max_attachment_mb",
        kind="number",
        help="reports over this (together) stay on disk, named in the message",
        valid=lambda v: v >= 0,
        must="must be a number of MB, 0 or more",
        json=False,
    )
    smtp: Smtp = section(Smtp)

    @property
    def wanted(self) -> bool:
        return bool(self.to) or self.eml is not None


@dataclass(frozen=True)
class Config:
    """One run of ``reporter run``."""

    inputs: tuple[Path, ...] = ()  # the command line's PATH arguments
    baseline: Path | None = setting(
        None,
        toml="input.baseline",
        kind="baseline",
        help="the reference image, or 'first': the first input image in sorted order "
        "(default: the input whose name is baseline.*; ./first for a file named first)",
        flags=("--baseline",),
        metavar="FILE",
        json=lambda c: BASELINE_FIRST if c.first_as_baseline else _text(c.baseline),
    )
    first_as_baseline: bool = False  # baseline = "first": the first input in sorted order
    out: Path | None = setting(
        None,
        toml="run.out",
        kind="path",
        help="folder for the outputs (default: a new reports/YYYYmmdd-HHMMSS)",
        flags=("--out",),
        metavar="DIR",
        json=False,
    )
    reports_root: Path = Path("reports")
    formats: tuple[str, ...] = setting(
        FORMATS,
        toml="run.formats",
        kind="formats",
        help=f"comma-separated outputs, from {','.join(FORMATS)} (default: all)",
        flags=("--formats",),
        metavar="LIST",
        json=lambda c: list(c.formats),
    )
    jobs: int = setting(
        0,
        toml="run.jobs",
        kind="int",
        help="worker processes (default 0: all cores)",
        flags=("--jobs", "-j"),
        metavar="N",
        valid=lambda v: v >= 0,
        must="must be 0 (all cores) or more",
        json=lambda c: c.effective_jobs(),
    )
    time_limit: float = setting(
        600.0,
        toml="run.time_limit",
        kind="number",
        help="seconds one image may take in a worker process; past it the image is an ERROR "
        "row and the run goes on (0: no limit; default 600)",
        flags=("--time-limit",),
        metavar="S",
        valid=lambda v: 0 <= v <= 86400,
        must="must be 0 (no limit) or a number of seconds up to 86400",
    )
    scheduler: str | None = setting(
        None,
        toml="run.scheduler",
        kind="str",
        help="run the per-image work on a Dask cluster: its scheduler's address "
        "(tcp://host:8786), or local:N for N worker processes on this machine (default: "
        "REPORTER_SCHEDULER, else the local process pool)",
        flags=("--scheduler",),
        metavar="ADDRESS",
        valid=lambda v: executor.valid_address(v),
        must=executor.ADDRESS_MUST,
    )
    scheduler_timeout: float = setting(
        10.0,
        toml="run.scheduler_timeout",
        kind="number",
        help="seconds to wait for the Dask scheduler and its first worker (default 10)",
        flags=("--scheduler-timeout",),
        metavar="S",
        valid=lambda v: 0 < v <= 3600,
        must="must be a number of seconds, more than 0 and at most 3600",
    )
    send_bytes: bool = setting(
        False,
        toml="run.send_bytes",
        kind="bool",
        help="with --scheduler: read the files here and send their bytes, for workers that "
        "do not share this machine's files (each file at most max_file_mb)",
        flags=("--send-bytes",),
    )
    templates: Path | None = setting(
        None,
        toml="run.templates",
        kind="path",
        help="a folder of templates that override the shipped ones, file by file",
        flags=("--templates",),
        metavar="DIR",
        json=False,
    )
    recursive: bool = setting(
        False,
        toml="input.recursive",
        kind="bool",
        help="descend into sub-folders of folder inputs",
        flags=("--recursive", "-r"),
    )
    exclude: tuple[str, ...] = setting(
        (),
        toml="input.exclude",
        kind="strings",
        help="leave out the files and folders whose path matches PATTERN, from the right "
        "(*_thumb.png, previews/*.png; a trailing / for folders only); repeatable",
        flags=("--exclude",),
        metavar="PATTERN",
        valid=lambda v: all(map(_good_pattern, (v,) if isinstance(v, str) else v)),
        must="must be a relative path pattern such as *_thumb.png or previews/",
    )
    strict_size: bool = setting(
        False,
        toml="input.strict_size",
        kind="bool",
        help="an image whose size differs from the baseline's is an ERROR, not resized",
        flags=("--strict-size",),
    )
    max_pixels: int = setting(  # far below OpenCV's 2^30: a decompression bomb is an ERROR row
        100_000_000,
        toml="input.max_pixels",
        kind="int",
        help="larger images are ERROR rows (default 100000000)",
        flags=("--max-pixels",),
        metavar="N",
        valid=lambda v: v >= 1,
        must="must be positive",
    )
    bits: int = setting(  # L of SSIM and PSNR is the type's range: 12-bit data in 16 would hide
        16,
        toml="input.bits",
        kind="int",
        help="significant bits of 16-bit images, e.g. 12 for a 12-bit camera's TIFFs: they are "
        "brought to the full 16-bit range (x 16), so SSIM and PSNR take L = 4095 (default 16)",
        flags=("--bits",),
        metavar="N",
        valid=lambda v: 8 <= v <= 16,
        must="must be 8 to 16",
    )
    value_range: tuple[float, float] | None = setting(  # L of float data is not its type's
        None,
        toml="input.value_range",
        kind="range",
        help="LO:HI, the range of images that are neither 8- nor 16-bit unsigned integers "
        "(32-bit float TIFFs, signed or 32-bit integers): brought to 16 bits over it, so SSIM "
        "and PSNR take L = HI - LO; without it such images are ERROR rows "
        "(a negative LO: --value-range=-1:1)",
        flags=("--value-range",),
        metavar="LO:HI",
        nullable=True,
        valid=_good_range,
        must="must be two finite numbers LO:HI with LO below HI",
    )
    max_file_mb: float = setting(  # 100 Mpx x 4 channels x 16 bit fits
        1024.0,
        toml="input.max_file_mb",
        kind="number",
        help="larger files are ERROR rows, not even read (default 1024)",
        flags=("--max-file-mb",),
        metavar="MB",
        valid=lambda v: v > 0,
        must="must be a positive number of MB",
    )
    series: str | None = setting(  # the instrument and plot, for titles and the e-mail subject
        None,
        toml="run.series",
        kind="str",
        help="instrument and plot: titles, subjects, and the run history with control limits",
        flags=("--series",),
        metavar="NAME",
        json=False,
    )
    embedding: bool = setting(
        False,
        toml="run.embedding",
        kind="bool",
        help="also compute the embedding metric (EfficientNet-Lite0; about 11-16 ms per image)",
        flags=("--embedding",),
        group="what",
    )
    timezone: str | None = setting(  # None: this machine's zone, moment by moment
        None,
        toml="run.timezone",
        kind="str",
        help="IANA time zone of every time the reports, the e-mail and 'reporter history' "
        "show, e.g. Europe/Berlin (default: this machine's; results.json stays in UTC)",
        flags=("--timezone",),
        metavar="ZONE",
        valid=lambda v: clock.known_zone(v),
        must="must be an IANA time zone such as Europe/Berlin or UTC",
    )
    progress: bool = setting(  # shown only on a terminal, and only for more than a few images
        True,
        toml=None,
        kind="bool",
        help="no progress bar even on a terminal",
        flags=("--no-progress",),
        negate=True,
        group="log",
        json=False,
    )
    limits: Mapping[str, Limit] = field(default_factory=lambda: DEFAULT_LIMITS)  # [limits]
    email: Email = section(Email)
    outliers: OutlierRule = section(OutlierRule)
    history: HistorySettings = section(HistorySettings)
    comparison: Comparison = section(Comparison)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1e6)

    def effective_jobs(
        self, images: int | None = None, pixels: int | None = None, early: bool = False
    ) -> int:
        """The worker processes to use: ``jobs``, or for 0 (the default) all cores, unless
        the run is too small for workers to pay: ``images`` x ``pixels`` under
        WORKERS_PAY_MPX megapixels of work is compared in this process, except when the
        workers' fork server was started ``early``, before the command's imports
        (``pool.start_early``): they then pay at any size."""
        if self.jobs:
            return self.jobs
        small = (
            images is not None and pixels is not None and images * pixels < WORKERS_PAY_MPX * 1e6
        )
        if small and not early:
            return 1
        return machine.cores()

    def history_path(self) -> Path:
        return self.history.path or self.reports_root / "history.sqlite"

    @property
    def keeps_history(self) -> bool:
        return self.history.enabled and bool(self.series)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, for results.json: every setting of the table whose
        ``json`` is not False (the SMTP settings and the folders are not), nested as the
        dataclasses are, and the limits."""
        out: dict[str, Any] = {}
        for row in SETTINGS:
            if row.spec.json is False:
                continue
            value = row.spec.json(self) if callable(row.spec.json) else row.get(self)
            if isinstance(value, Path):
                value = str(value)
            target = out
            for part in row.path[:-1]:
                target = target.setdefault(_JSON_SECTIONS.get(part, part), {})
            target[row.path[-1]] = value
        out["limits"] = {k: {"warn": v.warn, "fail": v.fail} for k, v in self.limits.items()}
        return out


_JSON_SECTIONS: dict[str, str] = {}  # a section's name in results.json, where it differs


SETTINGS: tuple[Setting, ...] = tuple(_rows(Config))
"""Every setting, in the order of the dataclasses' fields."""
_BY_TOML = {row.spec.toml: row for row in SETTINGS if row.spec.toml}


def _listed(metrics: tuple[str, ...] | None) -> list[str] | str:
    return AUTO if metrics is None else list(metrics)


BASELINE_FIRST = "first"
"""``--baseline first``: the first image of the inputs in sorted order is the reference."""


# --- validation -------------------------------------------------------------------------


def max_jobs() -> int:
    """The most worker processes a run may ask for: 4 per core."""
    return 4 * machine.cores()


def _number(value: Any, where: str) -> float | None:
    """A limit value: a finite number, or "off" for no limit."""
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return None
    if isinstance(value, bool):  # TOML true is not 1.0
        raise ConfigError(f"{where}: {as_written(value)} is not a number (or 'off')")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {as_written(value)} is not a number (or 'off')") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {as_written(value)} is not a finite number")
    return float(value)


def _metric_name(name: str, where: str) -> str:
    if name not in METRICS:
        known = ", ".join(METRICS)
        raise ConfigError(f"{where}: unknown metric {as_written(name)}; metrics are {known}")
    return name


def check_limit(name: str, limit: Limit, where: str) -> Limit:
    """Refuse a WARN limit that a value would cross only after the FAIL limit."""
    if limit.warn is not None and limit.fail is not None:
        higher = METRICS[name].higher_is_better
        if (higher and limit.fail > limit.warn) or (not higher and limit.fail < limit.warn):
            where_to = "at or below" if higher else "at or above"
            better = "higher" if higher else "lower"
            raise ConfigError(
                f"{where}: {name} fail limit {limit.fail:g} must be {where_to} its warn "
                f"limit {limit.warn:g} ({better} is better for {name})"
            )
    return limit


def with_limit(limits: Mapping[str, Limit], name: str, kind: str, value: Any, where: str):
    """``limits`` with the ``kind`` ("warn" or "fail") limit of ``name`` replaced."""
    _metric_name(name, where)
    new = replace(limits.get(name, Limit()), **{kind: _number(value, f"{where} {name}.{kind}")})
    return MappingProxyType({**limits, name: new})


def _check_type(value: Any, kind: type, where: str) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {as_written(value)}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A TOML list of strings."""
    return tuple(_check_type(item, str, where) for item in _check_type(value, list, where))


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {as_written(unknown[0])}; "
            f"expected one of {', '.join(sorted(allowed))}"
        )


def check(config: Config) -> Config:
    """Validate values that may come from anywhere; return the config unchanged.

    Each setting's own rule comes from the table (``Spec.valid``); what follows
    checks settings against each other and against the metrics and rules there are.
    """
    for row in SETTINGS:
        problem = row.spec.problem(row.get(config))
        if problem:
            raise ConfigError(f"{row.name} {problem}")
    for fmt in config.formats:
        if fmt not in FORMATS:
            known = ", ".join(FORMATS)
            raise ConfigError(f"unknown format {as_written(fmt)}; this version writes {known}")
    if not config.formats:
        raise ConfigError("no output format chosen")
    if config.templates is not None and not config.templates.is_dir():
        raise ConfigError(f"templates folder not found: {config.templates}")
    if config.jobs > max_jobs():
        raise ConfigError(
            f"jobs {config.jobs} is more than {max_jobs()} (4 per core this process may "
            "use); each worker holds about 100 MB and the baseline's statistics (about 50 "
            "bytes a pixel)"
        )
    for name, limit in config.limits.items():
        _metric_name(name, "limits")
        check_limit(name, limit, "limits")
    smtp = config.email.smtp
    if smtp.ssl and smtp.starttls:
        raise ConfigError("choose one of smtp ssl and starttls, not both")
    for address in config.email.to:
        if "@" not in address or any(c in address for c in " ,;<>\r\n"):
            raise ConfigError(f"not an e-mail address: {as_written(address)}")
    # Both end up in mail headers (From, Subject), where a line break would start a new one.
    sender = config.email.sender
    if sender is not None and (not sender.strip() or any(c in sender for c in "\r\n\0")):
        raise ConfigError(f"email from: {as_written(sender)} is not a sender (no line breaks)")
    if config.series is not None and any(c in config.series for c in "\r\n\0"):
        raise ConfigError(f"series {as_written(config.series)}: a series name is one line")
    for name in config.outliers.metrics or ():
        _metric_name(name, "outliers.metrics")
    h = config.history
    for rule in h.rules:
        if rule not in WESTGARD_RULES:
            raise ConfigError(
                f"history.rules: unknown rule {as_written(rule)}; "
                f"rules are {', '.join(WESTGARD_RULES)}"
            )
    for name in (*(h.metrics or ()), *(h.chart_metrics or ()), *h.min_sd):
        _metric_name(name, "history")
    mask = config.comparison.mask
    kind = not_a_file(mask) if mask is not None else None
    if kind == "not found":
        raise ConfigError(f"mask file not found: {mask}")
    if kind:  # a folder, a pipe (reading it would wait for ever), a device
        raise ConfigError(f"mask {mask} is {kind}: give one image file")
    return config


def load_toml(path: Path, base: Config = Config(), series: str | None = None) -> Config:
    """``base`` updated from a TOML file (see config.example.toml).

    Every key is a setting of the table (``SETTINGS``), read by its kind; the
    ``[limits]`` table holds per-metric limits, and a ``[series."NAME"]`` table the
    ``[compare]`` keys for one series, applied over the file's ``[compare]`` when
    the run's series is NAME (``series``, else the file's ``[run] series``).
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        # A byte order mark, as Windows' Notepad saved UTF-8 until 2019: TOML has none,
        # and tomllib's "Invalid statement (at line 1, column 1)" hid it. Dropped.
        data = tomllib.loads(raw.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:  # UTF-16 from a Windows editor, or a binary file
        raise ConfigError(f"{where}: not a UTF-8 text file (TOML files are UTF-8)") from None
    sections = {key.split(".")[0] for key in _BY_TOML}
    _only(data, sections | {"limits", "series"}, where)
    config = base
    for name in sorted(sections):
        table = _check_type(data.get(name, {}), dict, f"{where} [{name}]")
        config = _apply_table(config, name, table, f"{where} [{name}]", f"{where} {name}")
    tables = _check_type(data.get("series", {}), dict, f"{where} [series]")
    chosen = series or config.series
    for key, table in tables.items():
        table = _check_type(table, dict, f"{where} [series.{as_written(key)}]")
        here = f"{where} [series.{as_written(key)}]"
        applied = _apply_table(config, "compare", table, here, here)  # checked for every series
        if key == chosen:
            config = applied
    config = replace(config, limits=_limits_table(data.get("limits", {}), base.limits, where))
    try:
        return check(config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _apply_table(config: Config, name: str, table: dict, where: str, prefix: str) -> Config:
    """``config`` with the keys of one TOML table applied, each by its setting's kind."""
    if name == "compare":
        for old in ("max_shift", "shift_status"):
            if old in table:
                raise ConfigError(
                    f"{where}: {old} is gone: the shift is a metric now; set a fixed limit "
                    "with [limits] shift = { warn = 3 } if a moved image must be flagged by itself"
                )
    _only(table, {key.split(".", 1)[1] for key in _BY_TOML if key.startswith(name + ".")}, where)
    for key, value in table.items():
        row = _BY_TOML[f"{name}.{key}"]
        config = _apply(config, row, value, f"{prefix}.{key}")
    return config


def _apply(config: Config, row: Setting, value: Any, where: str) -> Config:
    if row.spec.kind == "baseline":
        given = _check_type(value, str, where)
        if given == BASELINE_FIRST:
            return replace(config, first_as_baseline=True, baseline=None)
        return replace(config, first_as_baseline=False, baseline=Path(given))
    return with_value(config, row.path, _read(row, value, where, row.get(config)))


def _read(row: Setting, value: Any, where: str, current: Any) -> Any:
    """A TOML value as the setting's kind holds it."""
    kind = row.spec.kind
    if kind in ("int", "bool", "str"):
        return _check_type(value, {"int": int, "bool": bool, "str": str}[kind], where)
    if kind == "number":
        number = _number(value, where)
        if number is None and not row.spec.nullable:
            raise ConfigError(f"{where} must be a number")
        return number
    if kind == "path":
        return Path(_check_type(value, str, where))
    if kind == "range":  # [0.0, 1.0], or "0:1" as on the command line
        if isinstance(value, str):
            try:
                return read_range(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        pair = _check_type(value, list, where)
        numbers = [v for v in pair if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(pair) != 2 or len(numbers) != 2:
            raise ConfigError(f"{where}: {as_written(value)} is not [LO, HI], two numbers")
        return float(pair[0]), float(pair[1])
    if kind in ("strings", "formats", "rules"):
        return _strings(value, where)
    if kind == "status":  # warn is WARN; a wrong value is shown as it was given
        status = _check_type(value, str, where).upper()
        return value if row.spec.problem(status) else status
    if kind == "metrics":
        chosen = _metric_list(value, where)
        for name in chosen or ():
            _metric_name(name, where)
        return chosen
    if kind in ("floors", "positive_floors"):
        floors = _floors(value, current, where)
        if kind == "positive_floors":
            for name in value:
                if not floors[name] > 0:  # a 0 floor divides by 0 on identical runs
                    raise ConfigError(f"{where}.{name} must be positive")
        return floors
    if kind == "regions":
        regions = []
        for item in _check_type(value, list, where):
            items = _check_type(item, list, where)
            if len(items) != 4:
                raise ConfigError(f"{where}: {as_written(item)} is not [x, y, w, h]")
            regions.append(tuple(_check_type(v, int, where) for v in items))
        return tuple(regions)
    raise AssertionError(f"setting {row.name}: unknown kind {kind!r}")  # pragma: no cover


def _limits_table(table: Any, limits: Mapping[str, Limit], where: str) -> Mapping[str, Limit]:
    """The [limits] table: per metric, { warn = x, fail = y } or "off"."""
    table = _check_type(table, dict, f"{where} [limits]")
    for name, spec in table.items():
        _metric_name(name, f"{where} [limits]")
        if isinstance(spec, str):  # limits.ssim = "off"
            _number(spec, f"{where} limits.{name}")  # refuses anything but "off"
            limits = MappingProxyType({k: v for k, v in limits.items() if k != name})
            continue
        if not isinstance(spec, dict):  # ssim = 0.9: say the form, not "expected dict"
            raise ConfigError(
                f"{where} limits.{name}: expected {{ warn = ..., fail = ... }} (either or "
                f'both) or "off", got {as_written(spec)}'
            )
        _only(spec, {"warn", "fail"}, f"{where} limits.{name}")
        for kind, value in spec.items():
            limits = with_limit(limits, name, kind, value, where)
    return limits


def _floors(table: Any, base: Mapping[str, float], where: str) -> Floors:
    """A table of per-metric floors (min_spread, min_sd) over the defaults, which remembers
    the metrics it gave."""
    table = _check_type(table, dict, where)
    given = {_metric_name(k, where): _number(v, f"{where}.{k}") or 0.0 for k, v in table.items()}
    return Floors({**base, **given}, getattr(base, "given", frozenset()) | given.keys())


def _metric_list(value: Any, where: str) -> tuple[str, ...] | None:
    """A list of metric names, or "auto" (None)."""
    if value == AUTO:
        return None
    return _strings(value, where)


def with_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """SMTP credentials from REPORTER_SMTP_USER and REPORTER_SMTP_PASSWORD, over the file's."""
    smtp = config.email.smtp
    user = environ.get("REPORTER_SMTP_USER") or smtp.user
    password = environ.get("REPORTER_SMTP_PASSWORD") or smtp.password
    return replace(
        config, email=replace(config.email, smtp=replace(smtp, user=user, password=password))
    )
