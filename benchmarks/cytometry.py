"""Realistic flow cytometry QC dot plots: healthy days and instrument faults.

Used by ``benchmarks/detection.py`` (which writes ``docs/detection.md``) and by the
tests. Only numpy and OpenCV are needed.

The model, chosen to look like a daily QC tube of stabilised whole blood on a
cytometer's FSC-A / SSC-A plot:

* **events** come from a mixture of populations (lymphocytes, monocytes,
  granulocytes), each log-normal in both scatter channels with a within-population
  FSC/SSC correlation, as real scatter populations are (skewed, wider upwards);
* **axes** are asinh-transformed (FSC-A cofactor 80,000: nearly linear; SSC-A
  cofactor 2,000: logarithmic above a few thousand), 0 to 262,144 (18-bit);
* **density colouring**: every event is one pixel, coloured by the local event
  density (a Gaussian-smoothed 2-D histogram through a jet colour map), as
  pseudocolour plots of acquisition software are; anti-aliased axes, ticks and text;
* **a healthy day** is a new draw of about 7,000 events with the daily wobble of a
  healthy instrument: each channel's gain by N(1, 0.025) (2-3 %, which moves the
  populations 2-4 px on the 480 px plot), each population's CV by N(1, 0.03), the
  mixture's proportions by a Dirichlet draw, the event count by N(1, 0.03);
* **faults** (on top of a healthy day's wobble): ``gain_drift`` (both gains 12 % low:
  a laser or PMT that has drifted), ``broad_cv`` (every CV x 1.6: a misaligned laser
  or a partial clog), ``few_events`` (40 % of the events), ``debris`` (30 % extra
  events at low scatter where the baseline has none), ``wrong_sample`` (a PBMC
  sample instead of whole blood: no granulocytes), ``clog`` (half the events, a third
  of them smeared towards low scatter, CVs x 1.3).

Everything is seeded: the same seed gives the same picture on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

SIZE = 480  # px, the whole picture
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 34, 48  # margins around the plot area
EVENTS = 7_000
TOP_VALUE = 262_144.0  # 18-bit scale
COFACTOR = (80_000.0, 2_000.0)  # asinh cofactors of FSC-A and SSC-A
GAIN_SD = 0.025
TITLE = "QC tube A  FSC-A / SSC-A"

FAULTS = ("gain_drift", "broad_cv", "few_events", "debris", "wrong_sample", "clog")


@dataclass(frozen=True)
class Population:
    name: str
    fsc: float  # median, channel units
    ssc: float
    cv_fsc: float  # coefficient of variation of the log-normal
    cv_ssc: float
    rho: float  # FSC/SSC correlation in log space
    weight: float


BLOOD = (
    Population("lymphocytes", 52_000, 9_000, 0.10, 0.28, 0.35, 0.30),
    Population("monocytes", 88_000, 26_000, 0.10, 0.22, 0.40, 0.08),
    Population("granulocytes", 118_000, 95_000, 0.11, 0.20, 0.45, 0.62),
)
DEBRIS = Population("debris", 14_000, 2_500, 0.45, 0.70, 0.5, 1.0)
PBMC = (
    Population("lymphocytes", 52_000, 9_000, 0.10, 0.28, 0.35, 0.78),
    Population("monocytes", 88_000, 26_000, 0.10, 0.22, 0.40, 0.22),
)


@dataclass(frozen=True)
class Day:
    """One acquisition: what was drawn, and why."""

    populations: tuple[Population, ...]
    events: int
    gain: tuple[float, float] = (1.0, 1.0)
    extra: tuple[tuple[Population, int], ...] = ()  # events added on top (debris)
    smear: float = 0.0  # share of events smeared towards low scatter (a clog)


def _sigma(cv: float) -> float:
    """Log-space SD of a log-normal with this CV."""
    return float(np.sqrt(np.log1p(cv * cv)))


def draw(pops: tuple[Population, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """n events (FSC, SSC) from a mixture, as an n x 2 array of channel values."""
    weights = np.array([p.weight for p in pops], float)
    counts = rng.multinomial(n, weights / weights.sum())
    parts = []
    for p, k in zip(pops, counts, strict=True):
        sf, ss = _sigma(p.cv_fsc), _sigma(p.cv_ssc)
        cov = [[sf * sf, p.rho * sf * ss], [p.rho * sf * ss, ss * ss]]
        z = rng.multivariate_normal([np.log(p.fsc), np.log(p.ssc)], cov, size=k)
        parts.append(np.exp(z))
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def events_of(day: Day, rng: np.random.Generator) -> np.ndarray:
    ev = draw(day.populations, day.events, rng)
    for pop, k in day.extra:
        ev = np.concatenate([ev, draw((pop,), k, rng)])
    if day.smear:
        hit = rng.random(len(ev)) < day.smear
        ev[hit] *= rng.uniform(0.25, 0.85, size=(int(hit.sum()), 1))
    ev = ev * np.array(day.gain)
    # Electronic noise around zero, as a real cytometer records it.
    return ev + rng.normal(0, 300, size=ev.shape)


def _axis(values: np.ndarray, channel: int) -> np.ndarray:
    """Channel values -> 0..1 along the axis (asinh scale)."""
    c = COFACTOR[channel]
    return np.arcsinh(values / c) / np.arcsinh(TOP_VALUE / c)


def render(events: np.ndarray, title: str = TITLE, *, dark: bool = False) -> np.ndarray:
    """A pseudocolour density dot plot with axes, ticks and labels (BGR, uint8).

    ``dark``: a black background with white axes and text, as some software exports.
    """
    bg, ink = ((0, 0, 0), (255, 255, 255)) if dark else ((255, 255, 255), (0, 0, 0))
    img = np.full((SIZE, SIZE, 3), bg, np.uint8)
    w, h = SIZE - LEFT - RIGHT, SIZE - TOP - BOTTOM
    x = _axis(events[:, 0], 0)
    y = _axis(events[:, 1], 1)
    ok = (x >= 0) & (x < 1) & (y >= 0) & (y < 1)
    px = (x[ok] * w).astype(int)
    py = h - 1 - (y[ok] * h).astype(int)
    counts = np.zeros((h, w), np.float32)
    np.add.at(counts, (py, px), 1)
    density = cv2.GaussianBlur(counts, (0, 0), 4)
    top = float(density.max()) or 1.0
    level = np.clip(np.log1p(density * 50 / top) / np.log1p(50), 0, 1)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    plot = img[TOP : TOP + h, LEFT : LEFT + w]
    hit = counts > 0
    plot[hit] = colours[hit]
    _axes(img, w, h, ink, title)
    return img


def _axes(img: np.ndarray, w: int, h: int, ink, title: str) -> None:
    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    cv2.rectangle(img, (LEFT - 1, TOP - 1), (LEFT + w, TOP + h), ink, 1, aa)
    for v, label in ((0, "0"), (50_000, "50K"), (100_000, "100K"), (150_000, "150K"),
                     (200_000, "200K"), (250_000, "250K")):  # fmt: skip
        t = LEFT + int(_axis(np.array([v]), 0)[0] * w)
        cv2.line(img, (t, TOP + h), (t, TOP + h + 5), ink, 1, aa)
        cv2.putText(img, label, (t - 12, TOP + h + 18), font, 0.33, ink, 1, aa)
    for v, label in ((0, "0"), (1_000, "10^3"), (10_000, "10^4"), (100_000, "10^5")):
        t = TOP + h - 1 - int(_axis(np.array([v]), 1)[0] * h)
        cv2.line(img, (LEFT - 6, t), (LEFT - 1, t), ink, 1, aa)
        cv2.putText(img, label, (LEFT - 44, t + 4), font, 0.35, ink, 1, aa)
    cv2.putText(img, "FSC-A", (LEFT + w // 2 - 22, SIZE - 10), font, 0.45, ink, 1, aa)
    cv2.putText(img, "SSC-A", (4, TOP - 10), font, 0.45, ink, 1, aa)
    cv2.putText(img, title, (LEFT + 40, 22), font, 0.5, ink, 1, aa)


def wobble(pops: tuple[Population, ...], rng: np.random.Generator) -> tuple[Population, ...]:
    """A healthy day's variation of the sample: CVs by N(1, 0.03), proportions by Dirichlet."""
    weights = rng.dirichlet([p.weight * 400 for p in pops])
    return tuple(
        replace(
            p,
            cv_fsc=p.cv_fsc * rng.normal(1, 0.03),
            cv_ssc=p.cv_ssc * rng.normal(1, 0.03),
            weight=float(wt),
        )
        for p, wt in zip(pops, weights, strict=True)
    )


def healthy_day(rng: np.random.Generator) -> Day:
    return Day(
        wobble(BLOOD, rng),
        int(EVENTS * rng.normal(1, 0.03)),
        (float(rng.normal(1, GAIN_SD)), float(rng.normal(1, GAIN_SD))),
    )


def faulty_day(fault: str, rng: np.random.Generator) -> Day:
    """A healthy day's wobble with one fault on top."""
    day = healthy_day(rng)
    if fault == "gain_drift":
        return replace(day, gain=(day.gain[0] * 0.88, day.gain[1] * 0.88))
    if fault == "broad_cv":
        pops = tuple(
            replace(p, cv_fsc=p.cv_fsc * 1.6, cv_ssc=p.cv_ssc * 1.6) for p in day.populations
        )
        return replace(day, populations=pops)
    if fault == "few_events":
        return replace(day, events=int(day.events * 0.4))
    if fault == "debris":
        return replace(day, extra=((DEBRIS, int(day.events * 0.3)),))
    if fault == "wrong_sample":
        return replace(day, populations=wobble(PBMC, rng))
    if fault == "clog":
        pops = tuple(
            replace(p, cv_fsc=p.cv_fsc * 1.3, cv_ssc=p.cv_ssc * 1.3) for p in day.populations
        )
        return replace(day, populations=pops, events=day.events // 2, smear=0.33)
    raise ValueError(f"unknown fault {fault!r}; faults are {', '.join(FAULTS)}")


def baseline_day() -> Day:
    """The reference acquisition: the nominal sample and gains, nominal count."""
    return Day(BLOOD, EVENTS)


def picture(day: Day, seed: int, **kwargs) -> np.ndarray:
    """The rendered plot of one day, from its own seed."""
    return render(events_of(day, np.random.default_rng(seed)), **kwargs)


def healthy(seed: int, **kwargs) -> np.ndarray:
    """A healthy day's plot: the wobble and the draw both from ``seed``."""
    rng = np.random.default_rng(seed)
    return render(events_of(healthy_day(rng), rng), **kwargs)


def faulty(fault: str, seed: int, **kwargs) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render(events_of(faulty_day(fault, rng), rng), **kwargs)


def baseline(seed: int = 0, **kwargs) -> np.ndarray:
    return picture(baseline_day(), seed, **kwargs)
