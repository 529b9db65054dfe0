"""Every setting of a run, with every default in one place; TOML loading and validation.

Where it sits: the CLI (or a notebook) builds a :class:`Config` and hands it to
``pipeline.run``. Precedence: these defaults < the TOML file < the command line.
A bad value raises :class:`ConfigError` with a one-line message (exit status 2).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .catalog import METRICS
from .errors import ConfigError

__all__ = [
    "AUTO",
    "auto_metrics",
    "BASELINE_FIRST",
    "check",
    "check_history",
    "check_limit",
    "Comparison",
    "Config",
    "DEFAULT_LIMITS",
    "DEFAULT_MIN_SD",
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
    "max_jobs",
    "OutlierRule",
    "Smtp",
    "SPARSE_CHART_METRICS",
    "SPARSE_CONTROL_METRICS",
    "SPARSE_OUTLIER_METRICS",
    "WESTGARD_RULES",
    "with_environment",
    "with_limit",
]

FORMATS = ("csv", "json", "html", "xlsx")
"""Output formats this version can write."""


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
SPARSE_OUTLIER_METRICS = ("signal_change", "occupancy_change", "shift", "phash")
DENSE_OUTLIER_METRICS = (
    "ssim",
    "ssim_coarse",
    "ms_ssim",
    "ssim_64",
    "psnr",
    "phash",
    "signal_change",
    "occupancy_change",
    "shift",
)
SPARSE_CONTROL_METRICS = ("signal_change", "occupancy_change", "shift")
DENSE_CONTROL_METRICS = (
    "ssim",
    "ms_ssim",
    "ssim_64",
    "psnr",
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


# The smallest spread the outlier rule assumes, in each metric's units: without it
# a run of near-identical images (MAD = 0) would call any difference an outlier.
DEFAULT_MIN_SPREAD: Mapping[str, float] = MappingProxyType(
    {
        "cosine": 0.001,
        "ssim": 0.01,
        "ssim_coarse": 0.01,
        "ms_ssim": 0.01,
        "ssim_64": 0.01,
        "psnr": 0.5,
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

    enabled: bool = True
    min_images: int = 8
    z: float = 3.5
    status: str = "WARN"
    metrics: tuple[str, ...] | None = None  # None: auto (see auto_metrics)
    min_spread: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MIN_SPREAD)


WESTGARD_RULES = ("1-2s", "1-3s", "2-2s", "R-4s", "4-1s", "10x", "EWMA")
"""Control rules on a metric's z-score against its series' limits (see series/rules.py)."""
DEFAULT_RULES = ("1-3s", "2-2s", "R-4s", "4-1s", "10x", "EWMA")
"""1-2s is left out by default: a warning at 2 SD on each of three or more metrics
fires on about one healthy day in ten (docs/detection.md)."""

# The smallest SD the control rules assume, in each metric's units: a slot whose
# first runs happened to agree to the fourth decimal must not call the fifth a fault.
DEFAULT_MIN_SD: Mapping[str, float] = MappingProxyType(
    {
        "cosine": 1e-4,
        "ssim": 0.002,
        "ssim_coarse": 0.002,
        "ms_ssim": 0.002,
        "ssim_64": 0.002,
        "psnr": 0.05,
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

    enabled: bool = True  # recorded whenever the run has a series
    path: Path | None = None  # None: <reports_root>/history.sqlite
    slot_pattern: str | None = None  # regex on the file name; group "slot" (or 1) is the slot
    min_runs: int = 20  # in-control runs before the limits are established
    rules: tuple[str, ...] = DEFAULT_RULES
    metrics: tuple[str, ...] | None = None  # None: auto (see auto_metrics)
    chart_metrics: tuple[str, ...] | None = None  # None: auto
    chart_runs: int = 60  # runs shown on a Levey-Jennings chart
    ewma_lambda: float = 0.2
    ewma_limit: float = 3.0  # L: the EWMA fires beyond L of its own SDs
    drift_status: str = "WARN"  # status of an EWMA drift flag
    both_sides: bool = False  # rules fire also when a value is far *more* like the baseline
    min_sd: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MIN_SD)
    lock_wait: float = 30.0  # seconds a run waits for another run of its series
    keep_runs: int = 0  # run folders kept per series (0: all)
    missing_after: float | None = None  # hours; a longer gap since the last run is reported


@dataclass(frozen=True)
class Comparison:
    """What is compared: ignored regions, and whether a shift is compensated.

    ``ignore`` holds rectangles (x, y, w, h) in baseline pixels; ``mask`` a
    black-and-white image of the baseline's size (black = ignored); see masks.py.
    The shift of every image is measured whatever ``align`` says (the ``shift``
    metric, under the statistical rules like any metric); ``align`` compensates it
    when that makes the image more like the baseline.
    """

    ignore: tuple[tuple[int, int, int, int], ...] = ()
    mask: Path | None = None
    align: bool = False


@dataclass(frozen=True)
class Smtp:
    """Where and how to send. User and password never come from the command line."""

    host: str = "localhost"
    port: int | None = None  # None: 465 with ssl, 587 with starttls, else 25
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def effective_port(self) -> int:
        if self.port:
            return self.port
        return 465 if self.ssl else 587 if self.starttls else 25


@dataclass(frozen=True)
class Email:
    """Where the e-mailed report goes. Nothing is sent unless ``to`` has an address."""

    to: tuple[str, ...] = ()
    sender: str | None = None  # default: reporter@<this host>
    eml: Path | None = None  # also write the message here
    max_attachment_mb: float = 15.0  # reports over this (together) stay on disk, not attached
    smtp: Smtp = field(default_factory=Smtp)

    @property
    def wanted(self) -> bool:
        return bool(self.to) or self.eml is not None


@dataclass(frozen=True)
class Config:
    """One run of ``reporter run``."""

    inputs: tuple[Path, ...] = ()
    baseline: Path | None = None
    first_as_baseline: bool = False  # --baseline first: the first input in sorted order
    out: Path | None = None
    reports_root: Path = Path("reports")
    formats: tuple[str, ...] = FORMATS
    jobs: int = 0  # 0: one process per core
    recursive: bool = False
    strict_size: bool = False
    max_pixels: int = 100_000_000  # far below OpenCV's 2^30: a decompression bomb is an ERROR row
    max_file_mb: float = 1024.0  # larger files are ERROR rows, not read (100 Mpx x 4 x 16 bit fits)
    progress: bool = True  # shown only on a terminal, and only for more than a handful of images
    templates: Path | None = None  # a folder whose templates override the shipped ones
    series: str | None = None  # the instrument and plot, for titles and the e-mail subject
    email: Email = field(default_factory=Email)
    limits: Mapping[str, Limit] = field(default_factory=lambda: DEFAULT_LIMITS)
    outliers: OutlierRule = field(default_factory=OutlierRule)
    history: HistorySettings = field(default_factory=HistorySettings)
    comparison: Comparison = field(default_factory=Comparison)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1e6)

    def effective_jobs(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def history_path(self) -> Path:
        return self.history.path or self.reports_root / "history.sqlite"

    @property
    def keeps_history(self) -> bool:
        return self.history.enabled and bool(self.series)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, for the run's metadata."""
        return {
            "baseline": BASELINE_FIRST
            if self.first_as_baseline
            else str(self.baseline)
            if self.baseline
            else None,
            "formats": list(self.formats),
            "jobs": self.effective_jobs(),
            "recursive": self.recursive,
            "strict_size": self.strict_size,
            "max_pixels": self.max_pixels,
            "max_file_mb": self.max_file_mb,
            "limits": {k: {"warn": v.warn, "fail": v.fail} for k, v in self.limits.items()},
            "outliers": {
                "enabled": self.outliers.enabled,
                "min_images": self.outliers.min_images,
                "z": self.outliers.z,
                "status": self.outliers.status,
                "metrics": _listed(self.outliers.metrics),
                "min_spread": dict(self.outliers.min_spread),
            },
            "comparison": {
                "ignore": [list(r) for r in self.comparison.ignore],
                "mask": str(self.comparison.mask) if self.comparison.mask else None,
                "align": self.comparison.align,
            },
            "history": {
                "enabled": self.keeps_history,
                "path": str(self.history_path()) if self.keeps_history else None,
                "slot_pattern": self.history.slot_pattern,
                "min_runs": self.history.min_runs,
                "rules": list(self.history.rules),
                "metrics": _listed(self.history.metrics),
                "chart_metrics": _listed(self.history.chart_metrics),
                "ewma_lambda": self.history.ewma_lambda,
                "ewma_limit": self.history.ewma_limit,
                "drift_status": self.history.drift_status,
                "both_sides": self.history.both_sides,
                "min_sd": dict(self.history.min_sd),
                "keep_runs": self.history.keep_runs,
                "missing_after": self.history.missing_after,
            },
        }


def _listed(metrics: tuple[str, ...] | None) -> list[str] | str:
    return AUTO if metrics is None else list(metrics)


BASELINE_FIRST = "first"
"""``--baseline first``: the first image of the inputs in sorted order is the reference."""


# --- validation -------------------------------------------------------------------------


def max_jobs() -> int:
    """The most worker processes a run may ask for: 4 per core."""
    return 4 * (os.cpu_count() or 1)


def _number(value: Any, where: str) -> float | None:
    """A limit value: a finite number, or "off" for no limit."""
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return None
    if isinstance(value, bool):  # TOML true is not 1.0
        raise ConfigError(f"{where}: {value!r} is not a number (or 'off')")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number (or 'off')") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _metric_name(name: str, where: str) -> str:
    if name not in METRICS:
        raise ConfigError(f"{where}: unknown metric {name!r}; metrics are {', '.join(METRICS)}")
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
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A TOML list of strings."""
    return tuple(_check_type(item, str, where) for item in _check_type(value, list, where))


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}"
        )


def check(config: Config) -> Config:
    """Validate values that may come from anywhere; return the config unchanged."""
    for fmt in config.formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; this version writes {', '.join(FORMATS)}")
    if not config.formats:
        raise ConfigError("no output format chosen")
    if config.templates is not None and not config.templates.is_dir():
        raise ConfigError(f"templates folder not found: {config.templates}")
    if config.jobs < 0:
        raise ConfigError(f"jobs must be 0 (all cores) or more, not {config.jobs}")
    if config.jobs > max_jobs():
        raise ConfigError(
            f"jobs {config.jobs} is more than {max_jobs()} (4 per core); each worker holds "
            "about 70 MB and the baseline's statistics"
        )
    if config.max_pixels < 1:
        raise ConfigError(f"max_pixels must be positive, not {config.max_pixels}")
    if not config.max_file_mb > 0:
        raise ConfigError(f"max_file_mb must be a positive number of MB, not {config.max_file_mb}")
    for name, limit in config.limits.items():
        _metric_name(name, "limits")
        check_limit(name, limit, "limits")
    o = config.outliers
    smtp = config.email.smtp
    if smtp.ssl and smtp.starttls:
        raise ConfigError("choose one of smtp ssl and starttls, not both")
    if smtp.port is not None and not 0 < smtp.port < 65536:
        raise ConfigError(f"smtp port must be 1 to 65535, not {smtp.port}")
    for address in config.email.to:
        if "@" not in address or any(c in address for c in " ,;<>\r\n"):
            raise ConfigError(f"not an e-mail address: {address!r}")
    # Both end up in mail headers (From, Subject), where a line break would start a new one.
    sender = config.email.sender
    if sender is not None and (not sender.strip() or any(c in sender for c in "\r\n\0")):
        raise ConfigError(f"email from: {sender!r} is not a sender (no line breaks)")
    if config.series is not None and any(c in config.series for c in "\r\n\0"):
        raise ConfigError(f"series {config.series!r}: a series name is one line")
    if o.status not in ("WARN", "FAIL"):
        raise ConfigError(f"outliers.status must be WARN or FAIL, not {o.status!r}")
    if o.z <= 0 or not math.isfinite(o.z):
        raise ConfigError(f"outliers.z must be a positive number, not {o.z!r}")
    if o.min_images < 3:
        raise ConfigError(f"outliers.min_images must be at least 3, not {o.min_images}")
    for name in o.metrics or ():
        _metric_name(name, "outliers.metrics")
    check_history(config.history)
    c = config.comparison
    for region in c.ignore:
        if len(region) != 4 or min(region[:2]) < 0 or min(region[2:]) <= 0:
            raise ConfigError(f"ignore region {region}: X,Y must be 0 or more, W,H positive")
    if c.mask is not None and not c.mask.is_file():
        raise ConfigError(f"mask file not found: {c.mask}")
    return config


def check_history(h: HistorySettings) -> HistorySettings:
    import re

    if h.slot_pattern is not None:
        try:
            re.compile(h.slot_pattern)
        except re.error as exc:
            raise ConfigError(f"history.slot_pattern {h.slot_pattern!r}: {exc}") from None
    if h.min_runs < 2:
        raise ConfigError(f"history.min_runs must be at least 2, not {h.min_runs}")
    for rule in h.rules:
        if rule not in WESTGARD_RULES:
            raise ConfigError(
                f"history.rules: unknown rule {rule!r}; rules are {', '.join(WESTGARD_RULES)}"
            )
    for name in (*(h.metrics or ()), *(h.chart_metrics or ()), *h.min_sd):
        _metric_name(name, "history")
    if not 0 < h.ewma_lambda <= 1:
        raise ConfigError(f"history.ewma_lambda must be in (0, 1], not {h.ewma_lambda!r}")
    if not h.ewma_limit > 0:
        raise ConfigError(f"history.ewma_limit must be positive, not {h.ewma_limit!r}")
    if h.drift_status not in ("WARN", "FAIL"):
        raise ConfigError(f"history.drift_status must be WARN or FAIL, not {h.drift_status!r}")
    if h.lock_wait < 0:
        raise ConfigError(f"history.lock_wait must be 0 or more seconds, not {h.lock_wait!r}")
    if h.keep_runs < 0:
        raise ConfigError(f"history.keep_runs must be 0 (all) or more, not {h.keep_runs}")
    if h.missing_after is not None and not h.missing_after > 0:
        raise ConfigError(f"history.missing_after must be positive hours, not {h.missing_after!r}")
    if h.chart_runs < 2:
        raise ConfigError(f"history.chart_runs must be at least 2, not {h.chart_runs}")
    return h


def load_toml(path: Path, base: Config = Config(), series: str | None = None) -> Config:
    """``base`` updated from a TOML file (see config.example.toml).

    A ``[series."NAME"]`` table applies over the file's ``[compare]`` when the
    run's series is NAME (``series``, else the file's ``[run] series``).
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:  # UTF-16 from a Windows editor, or a binary file
        raise ConfigError(f"{where}: not a UTF-8 text file (TOML files are UTF-8)") from None
    _only(
        data, {"run", "input", "limits", "outliers", "email", "history", "compare", "series"}, where
    )
    changes: dict[str, Any] = {}

    run = _check_type(data.get("run", {}), dict, f"{where} [run]")
    _only(run, {"formats", "jobs", "out", "templates", "series"}, f"{where} [run]")
    if "series" in run:
        changes["series"] = _check_type(run["series"], str, f"{where} run.series")
    if "formats" in run:
        changes["formats"] = _strings(run["formats"], f"{where} run.formats")
    if "jobs" in run:
        changes["jobs"] = _check_type(run["jobs"], int, f"{where} run.jobs")
    if "out" in run:
        changes["out"] = Path(_check_type(run["out"], str, f"{where} run.out"))
    if "templates" in run:
        changes["templates"] = Path(_check_type(run["templates"], str, f"{where} run.templates"))

    inp = _check_type(data.get("input", {}), dict, f"{where} [input]")
    _only(
        inp,
        {"recursive", "strict_size", "max_pixels", "max_file_mb", "baseline"},
        f"{where} [input]",
    )
    if "max_file_mb" in inp:
        value = _number(inp["max_file_mb"], f"{where} input.max_file_mb")
        if value is None:
            raise ConfigError(f"{where}: input.max_file_mb must be a number of MB")
        changes["max_file_mb"] = value
    for key in ("recursive", "strict_size"):
        if key in inp:
            changes[key] = _check_type(inp[key], bool, f"{where} input.{key}")
    if "max_pixels" in inp:
        changes["max_pixels"] = _check_type(inp["max_pixels"], int, f"{where} input.max_pixels")
    if "baseline" in inp:
        given = _check_type(inp["baseline"], str, f"{where} input.baseline")
        if given == BASELINE_FIRST:
            changes["first_as_baseline"] = True
        else:
            changes["baseline"] = Path(given)

    comparison = _comparison(data.get("compare", {}), base.comparison, f"{where} [compare]")
    tables = _check_type(data.get("series", {}), dict, f"{where} [series]")
    name = series or changes.get("series") or base.series
    for key, table in tables.items():
        _check_type(table, dict, f"{where} [series.{key!r}]")
        checked = _comparison(table, comparison, f"{where} [series.{key!r}]")
        if key == name:
            comparison = checked
    changes["comparison"] = comparison

    limits = base.limits
    table = _check_type(data.get("limits", {}), dict, f"{where} [limits]")
    for name, spec in table.items():
        _metric_name(name, f"{where} [limits]")
        if isinstance(spec, str):  # limits.ssim = "off"
            _number(spec, f"{where} limits.{name}")  # refuses anything but "off"
            limits = MappingProxyType({k: v for k, v in limits.items() if k != name})
            continue
        _check_type(spec, dict, f"{where} limits.{name}")
        _only(spec, {"warn", "fail"}, f"{where} limits.{name}")
        for kind, value in spec.items():
            limits = with_limit(limits, name, kind, value, where)
    changes["limits"] = limits

    out = _check_type(data.get("outliers", {}), dict, f"{where} [outliers]")
    _only(out, {f.name for f in fields(OutlierRule)}, f"{where} [outliers]")
    o: dict[str, Any] = {}
    if "enabled" in out:
        o["enabled"] = _check_type(out["enabled"], bool, f"{where} outliers.enabled")
    if "min_images" in out:
        o["min_images"] = _check_type(out["min_images"], int, f"{where} outliers.min_images")
    if "z" in out:
        o["z"] = _number(out["z"], f"{where} outliers.z")
    if "status" in out:
        o["status"] = _check_type(out["status"], str, f"{where} outliers.status").upper()
    if "metrics" in out:
        o["metrics"] = _metric_list(out["metrics"], f"{where} outliers.metrics")
    if "min_spread" in out:
        o["min_spread"] = _floors(
            out["min_spread"], base.outliers.min_spread, f"{where} outliers.min_spread"
        )
    changes["outliers"] = replace(base.outliers, **o)
    changes["email"] = _email(data.get("email", {}), base.email, where)
    changes["history"] = _history(data.get("history", {}), base.history, where)
    try:
        return check(replace(base, **changes))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _floors(table: Any, base: Mapping[str, float], where: str) -> Mapping[str, float]:
    """A table of per-metric floors (min_spread, min_sd) over the defaults."""
    table = _check_type(table, dict, where)
    return MappingProxyType(
        {
            **base,
            **{_metric_name(k, where): _number(v, f"{where}.{k}") or 0.0 for k, v in table.items()},
        }
    )


def _metric_list(value: Any, where: str) -> tuple[str, ...] | None:
    """A list of metric names, or "auto" (None)."""
    if value == AUTO:
        return None
    return _strings(value, where)


def _comparison(table: Any, base: Comparison, where: str) -> Comparison:
    """A [compare] table, or a [series."NAME"] table (the same keys)."""
    table = _check_type(table, dict, where)
    for old in ("max_shift", "shift_status"):
        if old in table:
            raise ConfigError(
                f"{where}: {old} is gone: the shift is a metric now; set a fixed limit with "
                "[limits] shift = { warn = 3 } if a moved image must be flagged by itself"
            )
    _only(table, {f.name for f in fields(Comparison)}, where)
    c: dict[str, Any] = {}
    if "ignore" in table:
        regions = []
        for item in _check_type(table["ignore"], list, f"{where} ignore"):
            items = _check_type(item, list, f"{where} ignore")
            if len(items) != 4:
                raise ConfigError(f"{where} ignore: {item!r} is not [x, y, w, h]")
            regions.append(tuple(_check_type(v, int, f"{where} ignore") for v in items))
        c["ignore"] = tuple(regions)
    if "mask" in table:
        c["mask"] = Path(_check_type(table["mask"], str, f"{where} mask"))
    if "align" in table:
        c["align"] = _check_type(table["align"], bool, f"{where} align")
    return replace(base, **c)


def _history(table: Any, base: HistorySettings, where: str) -> HistorySettings:
    """The [history] table."""
    table = _check_type(table, dict, f"{where} [history]")
    _only(table, {f.name for f in fields(HistorySettings)}, f"{where} [history]")
    h: dict[str, Any] = {}
    kinds = {"enabled": bool, "slot_pattern": str, "min_runs": int, "drift_status": str}
    kinds |= {"keep_runs": int, "chart_runs": int, "both_sides": bool}
    for key, kind in kinds.items():
        if key in table:
            h[key] = _check_type(table[key], kind, f"{where} history.{key}")
    if "drift_status" in h:
        h["drift_status"] = h["drift_status"].upper()
    if "path" in table:
        h["path"] = Path(_check_type(table["path"], str, f"{where} history.path"))
    if "rules" in table:
        h["rules"] = _strings(table["rules"], f"{where} history.rules")
    for key in ("metrics", "chart_metrics"):
        if key in table:
            h[key] = _metric_list(table[key], f"{where} history.{key}")
    for key in ("ewma_lambda", "ewma_limit", "lock_wait", "missing_after"):
        if key in table:
            h[key] = _number(table[key], f"{where} history.{key}")
            if h[key] is None and key != "missing_after":
                raise ConfigError(f"{where}: history.{key} must be a number")
    if "min_sd" in table:
        h["min_sd"] = _floors(table["min_sd"], base.min_sd, f"{where} history.min_sd")
        for name in table["min_sd"]:
            if not h["min_sd"][name] > 0:  # a 0 floor divides by 0 on identical runs
                raise ConfigError(f"{where}: history.min_sd.{name} must be positive")
    return replace(base, **h)


def _email(table: Any, base: Email, where: str) -> Email:
    """The [email] table; the SMTP user and password may come from here or the environment."""
    table = _check_type(table, dict, f"{where} [email]")
    keys = {
        "to",
        "from",
        "eml",
        "smtp_host",
        "smtp_port",
        "starttls",
        "ssl",
        "user",
        "password",
        "timeout",
        "max_attachment_mb",
    }
    _only(table, keys, f"{where} [email]")
    email, smtp = {}, {}
    if "to" in table:
        email["to"] = _strings(table["to"], f"{where} email.to")
    if "from" in table:
        email["sender"] = _check_type(table["from"], str, f"{where} email.from")
    if "eml" in table:
        email["eml"] = Path(_check_type(table["eml"], str, f"{where} email.eml"))
    for key, field_name, kind in (
        ("smtp_host", "host", str),
        ("smtp_port", "port", int),
        ("starttls", "starttls", bool),
        ("ssl", "ssl", bool),
        ("user", "user", str),
        ("password", "password", str),
    ):
        if key in table:
            smtp[field_name] = _check_type(table[key], kind, f"{where} email.{key}")
    if "timeout" in table:
        timeout = _number(table["timeout"], f"{where} email.timeout")
        if not timeout or timeout <= 0:
            raise ConfigError(f"{where}: email.timeout must be a positive number of seconds")
        smtp["timeout"] = timeout
    if "max_attachment_mb" in table:
        limit = _number(table["max_attachment_mb"], f"{where} email.max_attachment_mb")
        if limit is None or limit < 0:
            raise ConfigError(f"{where}: email.max_attachment_mb must be a number of MB, 0 or more")
        email["max_attachment_mb"] = float(limit)
    return replace(base, **email, smtp=replace(base.smtp, **smtp))


def with_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """SMTP credentials from REPORTER_SMTP_USER and REPORTER_SMTP_PASSWORD, over the file's."""
    smtp = config.email.smtp
    user = environ.get("REPORTER_SMTP_USER") or smtp.user
    password = environ.get("REPORTER_SMTP_PASSWORD") or smtp.password
    return replace(
        config, email=replace(config.email, smtp=replace(smtp, user=user, password=password))
    )
