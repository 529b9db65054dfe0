"""Make the sample QC run: flow cytometry FSC/SSC dot plots of a control sample.

Run ``python sample_images/make_samples.py`` to rewrite the PNGs beside this
script; the generator is seeded, so the files come out the same every time.
Only numpy and OpenCV are needed (both are reporter's own dependencies).

Each plot is one random draw of events from the same populations (what a
cytometer gives for the same control sample on different days), drawn as a
pseudocolour density plot. Normal days vary as real instruments do: a
different draw, event count +-5 %, populations moving by under 1 % of the
axis. Fault days carry one recognisable instrument fault each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

SIZE = 512  # pixels; the plot area is the square inside the axes
MARGIN = 56
EVENTS = 20_000


@dataclass(frozen=True)
class Population:
    name: str
    x: float  # centre, fraction of the FSC axis
    y: float  # centre, fraction of the SSC axis
    sx: float  # standard deviation, fraction of the axis
    sy: float
    weight: float


CONTROL = (
    Population("debris", 0.06, 0.05, 0.03, 0.03, 0.04),
    Population("lymphocytes", 0.30, 0.16, 0.035, 0.03, 0.50),
    Population("monocytes", 0.52, 0.33, 0.045, 0.05, 0.14),
    Population("granulocytes", 0.66, 0.64, 0.06, 0.075, 0.32),
)


def draw_events(pops, n: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.array([p.weight for p in pops])
    counts = rng.multinomial(n, weights / weights.sum())
    parts = [
        rng.normal((p.x, p.y), (p.sx, p.sy), size=(k, 2)) for p, k in zip(pops, counts, strict=True)
    ]
    return np.concatenate(parts)


def render(events: np.ndarray, title: str) -> np.ndarray:
    """A pseudocolour dot plot (colour = local event density), with axes and labels."""
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    side = SIZE - 2 * MARGIN
    ok = (events >= 0).all(axis=1) & (events < 1).all(axis=1)
    px = (events[ok, 0] * side).astype(int)
    py = (events[ok, 1] * side).astype(int)
    counts = np.zeros((side, side), np.float32)
    np.add.at(counts, (side - 1 - py, px), 1)
    density = cv2.GaussianBlur(counts, (0, 0), 3)
    level = np.clip(np.log1p(density * 40) / np.log1p(40 * 4.0), 0, 1)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    plot = img[MARGIN : MARGIN + side, MARGIN : MARGIN + side]
    hit = counts > 0
    plot[hit] = colours[hit]
    black = (0, 0, 0)
    cv2.rectangle(img, (MARGIN - 1, MARGIN - 1), (MARGIN + side, MARGIN + side), black, 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(6):
        t = MARGIN + int(i * side / 5)
        cv2.line(img, (t, MARGIN + side), (t, MARGIN + side + 5), black, 1)
        cv2.putText(
            img, f"{i * 50}K", (t - 12, MARGIN + side + 20), font, 0.35, black, 1, cv2.LINE_AA
        )
        y = MARGIN + side - int(i * side / 5)
        cv2.line(img, (MARGIN - 6, y), (MARGIN - 1, y), black, 1)
        cv2.putText(img, f"{i * 50}K", (8, y + 4), font, 0.35, black, 1, cv2.LINE_AA)
    cv2.putText(img, "FSC-A", (SIZE // 2 - 20, SIZE - 12), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, "SSC-A", (4, MARGIN - 12), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (MARGIN, 24), font, 0.5, black, 1, cv2.LINE_AA)
    return img


def jitter(pops, rng: np.random.Generator):
    """Day-to-day variation of a healthy instrument."""
    return tuple(
        replace(
            p,
            x=p.x + rng.normal(0, 0.004),
            y=p.y + rng.normal(0, 0.004),
            sx=p.sx * rng.normal(1, 0.03),
            sy=p.sy * rng.normal(1, 0.03),
        )
        for p in pops
    )


def change(pops, name: str, **fields):
    return tuple(replace(p, **fields) if p.name == name else p for p in pops)


TITLE = "Control beads+PBMC  FSC/SSC"

FAULTS = {
    # A PMT voltage or laser delay change: one population moves.
    "fault_shifted_population": lambda p: change(p, "granulocytes", x=0.74, y=0.70),
    # A partial clog or misaligned laser: every population broadens.
    "fault_broad_spread": lambda p: tuple(replace(q, sx=q.sx * 1.8, sy=q.sy * 1.8) for q in p),
    # Debris from a degraded sample or dirty flow cell.
    "fault_debris": lambda p: change(p, "debris", weight=0.9, sx=0.06, sy=0.06),
}


def main() -> None:
    folder = Path(__file__).resolve().parent
    rng = np.random.default_rng(20261122)
    plots = {"baseline": render(draw_events(CONTROL, EVENTS, rng), TITLE)}
    for day in range(1, 9):
        n = int(EVENTS * rng.normal(1, 0.05))
        plots[f"normal_day{day:02d}"] = render(draw_events(jitter(CONTROL, rng), n, rng), TITLE)
    for name, fault in FAULTS.items():
        plots[name] = render(draw_events(fault(jitter(CONTROL, rng)), EVENTS, rng), TITLE)
    # A clogged run acquires a tenth of the events in the same time.
    plots["fault_few_events"] = render(draw_events(jitter(CONTROL, rng), EVENTS // 10, rng), TITLE)
    for name, img in plots.items():
        cv2.imwrite(str(folder / f"{name}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()
