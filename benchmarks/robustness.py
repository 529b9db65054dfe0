"""Robustness table: every metric of reporter on transformed copies of one image.

Run:  python benchmarks/robustness.py [OUT.md]   (needs the test extra: scikit-image)

The classic experiment: compare an image with transformed copies of itself
(identity, greyscale, downscaling, blur, JPEG, gamma, a text overlay of growing
size, translation) and with a different image, for every metric reporter
computes, through reporter's own code path (``images.conform`` for the
geometry, ``metrics.Reference`` for the metrics, ``align.Aligner`` for the
measured shift). Two images: scikit-image's ``astronaut`` (a photograph that
ships with the package) and ``sample_images/baseline.png`` (a sparse flow
cytometry dot plot). It writes ``docs/robustness.md``: the tables, which
transformation first crosses each default limit, and a short reading. Every
figure in that file comes from this script; rerun it after changing a metric.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporter import images  # noqa: E402
from reporter.config import DEFAULT_LIMITS  # noqa: E402
from reporter.metrics import METRICS, Reference  # noqa: E402

Transform = Callable[[np.ndarray], np.ndarray]


def down(f: int) -> Transform:
    def t(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)

    return t


def blur(k: int) -> Transform:
    return lambda img: cv2.GaussianBlur(img, (k, k), 0)


def jpeg(q: int) -> Transform:
    def t(img: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    return t


def gamma(g: float) -> Transform:
    lut = np.array([255 * (i / 255) ** g for i in range(256)]).clip(0, 255).astype(np.uint8)
    return lambda img: cv2.LUT(img, lut)


def text(scale: float) -> Transform:
    def t(img: np.ndarray) -> np.ndarray:
        out = img.copy()
        thickness = max(1, round(scale * 1.5))
        y = round(24 * scale) + 4
        cv2.putText(
            out,
            "QC 2026-11-22 07:30",
            (6, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 255),
            thickness,
            cv2.LINE_AA,
        )
        return out

    return t


def shift(px: int) -> Transform:
    def t(img: np.ndarray) -> np.ndarray:
        move = np.float32([[1, 0, px], [0, 1, px]])
        return cv2.warpAffine(
            img, move, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE
        )

    return t


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


TRANSFORMS: list[tuple[str, str, Transform]] = [
    ("identity", "", lambda img: img.copy()),
    ("greyscale", "", grey),
    *[("downscale", f"1/{f}", down(f)) for f in (2, 4, 8, 16)],
    *[("blur", f"{k}x{k}", blur(k)) for k in (3, 5, 7, 9, 11)],
    *[("JPEG", f"q {q}", jpeg(q)) for q in (90, 70, 50, 30, 10)],
    *[("gamma", f"{g:g}", gamma(g)) for g in (0.2, 0.5, 0.8, 1.2, 1.5, 2.0)],
    *[("text", f"size {s:g}", text(s)) for s in (0.5, 1, 2, 4)],
    *[("translation", f"{p} px", shift(p)) for p in (1, 2, 4, 8, 16, 32, 64)],
]


def measure(baseline: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """reporter's own path: conform to the baseline's geometry, then every metric."""
    ref = Reference(baseline).prepare()
    loaded = images.LoadedImage(image)
    pixels, _ = images.conform(loaded, images.Geometry.of(baseline), strict_size=False)
    if pixels.ndim == 2 and ref.channels != 1:
        ref = ref.grey
    return ref.compare(pixels)


def fmt(name: str, value: float) -> str:
    if name in ("ahash", "phash"):
        return str(int(value))
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    if name in ("psnr", "psnr_local", "shift"):
        return f"{value:.1f}"
    if METRICS[name].two_sided:
        return f"{value:+.3f}"
    if name == "mse":
        return f"{value:.0f}"
    return f"{value:.3f}"


def rows_for(baseline: np.ndarray, other: np.ndarray) -> list[tuple[str, str, dict]]:
    rows = [(kind, level, measure(baseline, t(baseline))) for kind, level, t in TRANSFORMS]
    rows.append(("different image", "", measure(baseline, other)))
    return rows


COLUMNS = [m for m in METRICS if m != "embedding"]  # the embedding: its own section below


def table(rows: list[tuple[str, str, dict]]) -> list[str]:
    lines = [
        "| transformation | " + " | ".join(f"`{c}`" for c in COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for kind, level, values in rows:
        name = f"{kind} {level}".strip()
        lines.append(f"| {name} | " + " | ".join(fmt(c, values[c]) for c in COLUMNS) + " |")
    return lines


def crossings(rows: list[tuple[str, str, dict]]) -> list[str]:
    """For each default limit: the mildest level of each transformation that crosses it."""
    lines = []
    for name, limit in DEFAULT_LIMITS.items():
        m = METRICS[name]
        for kind_label, bound in (("WARN", limit.warn), ("FAIL", limit.fail)):
            if bound is None:
                continue
            hit: dict[str, str] = {}
            for kind, level, values in rows:
                if kind not in hit and m.worse(values[name], bound):
                    hit[kind] = f"{kind} {level}".strip()
            crossed = ", ".join(hit.values()) or "nothing"
            limit_text = f"{m.sign} {bound:g}".replace("\u00b1 ", "\u00b1")
            lines.append(f"* `{name}` {limit_text} ({kind_label}): {crossed}")
    return lines


def translation_vs_different(rows: list[tuple[str, str, dict]]) -> list[str]:
    """The smallest translation that scores worse than a different image, per metric."""
    other = rows[-1][2]
    lines = []
    for name, m in METRICS.items():
        if name == "shift" or name not in COLUMNS:
            continue

        def badness(value: float, m=m) -> float:
            return abs(value) if m.two_sided else -value if m.higher_is_better else value

        worse = [
            level
            for kind, level, v in rows
            if kind == "translation" and badness(v[name]) >= badness(other[name])
        ]
        lines.append(f"`{name}` {worse[0]}" if worse else f"`{name}` never (up to 64 px)")
    return lines


def collection_rows(baseline: np.ndarray, other: np.ndarray) -> list[str]:
    """The collection commands' view: each image hashed and embedded as it is (no
    conforming to the baseline's size), aHash and pHash as Hamming distances, the
    embedding as 64 x (1 - cosine) so that it reads beside them."""
    from reporter import hashes
    from reporter.embedding import Embedder

    embed = Embedder()

    def features(img: np.ndarray):
        return hashes.ahash(img), hashes.phash(img), embed([img])[0]

    a = features(baseline)
    lines = [
        "| transformation | aHash | pHash | embedding, 64 x (1 - cosine) |",
        "| --- | ---: | ---: | ---: |",
    ]
    cases = [(f"{kind} {level}".strip(), t(baseline)) for kind, level, t in TRANSFORMS]
    for name, img in [*cases, ("different image", other)]:
        b = features(img)
        emb = max(0.0, 64 * (1 - float(np.dot(a[2], b[2]))))
        lines.append(
            f"| {name} | {hashes.distance(a[0], b[0])} | {hashes.distance(a[1], b[1])} "
            f"| {emb:.1f} |"
        )
    return lines


COLLECTION_READING = """\
Which method for which job:

* **Re-encoded, resized, blurred or greyed copies** (the same picture saved
  again): pHash. It stays at 0 under every resize, blur and JPEG level above and
  under greyscale, and moves by a few bits for gamma and text, so
  `reporter duplicates --by phash` at its default of 8 finds these copies without
  grouping distinct photographs (the nearest two distinct photos of
  `benchmarks/duplicates.py` are 12 apart).
* **Shifted or cropped copies**: the embedding. From a shift of 32 px pHash and
  aHash are half-way to an unrelated photograph (16 and 31 bits at 32 and 64 px,
  against 36); the embedding stays under a quarter of the way (6.6 and 11.3,
  against 47.9), and `benchmarks/duplicates.py` finds every crop to 80 % within
  its threshold. Its weak side is the opposite of the hashes': a copy shrunk to
  1/8 or 1/16 of its size (64 or 32 px wide) has lost the detail the network
  reads (21 and 35), and a greyscale copy costs it 9.
* **Search by example** ("more like this"): the embedding, which ranks by what
  the picture shows; pHash when what matters is the same layout of light and
  dark.
* **aHash** is the cheapest and the least discriminating: gamma and shifts move
  it soonest. It is there for compatibility with tools that use it.
* **Colour moments** (`search --by colour`) find the same colours in similar
  places and ignore shape: useful to gather plots of one palette or a batch of
  stained slides, not for duplicates.
"""


READING = """\
Which method for which job:

* **Exact and re-encoded copies** (the same file saved again, resized, blurred,
  a JPEG of a PNG): pHash. It stays at 0 to a few bits under every resize, blur
  and JPEG level above, so `reporter duplicates --by phash` at its default of 8
  finds these copies with no false groups between distinct photographs (the
  nearest two distinct photos of benchmarks/duplicates.py are 12 apart).
* **Copies that were cropped, shifted or captioned**: the embedding. A shift of
  64 px or a large caption moves pHash by a third of its bits, about as far as an
  unrelated photograph; the embedding moves by a few units on this scale where a
  different photograph is far beyond. It is also the only method that sees a
  greyscale copy as the same picture in colour and in grey alike.
* **Search by example** ("more like this"): the embedding, which ranks by what
  the picture shows; pHash when what matters is the same layout of light and
  dark.
* **aHash** is the cheapest and the least discriminating: brightness changes
  (gamma) and shifts move it soonest. It is kept for compatibility with tools that
  use it.
* **Colour moments** (`search --by colour`) find the same colours in similar
  places and ignore shape: useful to gather a batch of stained slides or plots of
  one palette, not for duplicates.
"""


READING = """\
## Reading

* **Translation is what pixel-level metrics cannot stand.** On the photograph a
  shift of one pixel costs pixel SSIM more than JPEG quality 10 or an 11x11
  blur, and a few pixels take pixel SSIM most of the way to what a different
  photograph scores. aHash moves with small shifts (its 8x8 block
  means shift with the content); pHash, built on the lowest frequencies, holds
  for several pixels; `ms_ssim` and `ssim_64` tolerate a pixel or so. The
  measured `shift` recovers the translation almost exactly. When a camera,
  stage or screen can move, use `--align` rather than loosening limits, and set
  a fixed `shift` limit if a moved stage must be flagged by itself.
* **Blur, JPEG and downscaling** cost pixel SSIM and PSNR far more than
  `ssim_64`, `ms_ssim` or pHash: mild export changes (JPEG quality, resolution)
  do not cross the default limits (the list under each table names the mildest
  level that does). On the dot plot blurring reaches them sooner than on the
  photograph, because it spreads the populations, which is what `ssim_64` looks at.
* **Gamma** changes every metric (brightness is content), cosine least; a strong
  curve can cross the defaults, mild ones do not.
* **Text overlays** (timestamps, labels) barely move `ssim_64` on a photograph
  while pixel SSIM and PSNR drop in steps. On a sparse dot plot even small text
  is a large share of the low-frequency content, so pHash reacts strongly: mask
  timestamps and counters (`--ignore`, `--mask`) instead of loosening limits.
* **Sparse dot plots** differ from photographs: moving the whole plot by one
  pixel (axes included) scores lower than a real moved population, because the
  axes, ticks and labels stop lining up. That is an export or screen change, not
  an instrument fault: the `shift` column reports it, and `--align` is there
  for it. Alignment stays off by default because on a dot plot a moved
  *population* is the finding, and compensating shifts of the whole picture
  would only ever hide such a change when the picture has no fixed frame.
* **The shift measurement** needs a clear, single correlation peak and a better
  match once moved back: on a different image, or a copy degraded past
  recognition, it reports nothing (`nan`) rather than a made-up shift.
* **The signal metrics** (`signal_change`, `occupancy_change`) count the pixels
  that differ from the background. On the dot plot they hold under JPEG and mild
  blur and react to downscaling (dots merge), text (new ink) and translation
  (the signal moves between grid cells); on the photograph, where nearly every
  pixel differs from the most common colour, they say little.

* **`psnr_local`**, the worst of 256 cells, sits 3-10 dB under `psnr` for a
  change spread over the whole picture (JPEG and blur cost most in its busiest
  cell, a gamma about evenly), and 15-20 dB under it for a change confined to
  a region (a small text: one cell holds most of it). It is a metric for the
  rules of a run and a series, which compare it with itself on healthy days.

Which to trust: for **dot plots and other sparse images**, `signal_change`,
`occupancy_change`, `ssim_64` and `phash` (the defaults), with the control rules
of a series; for
**photographs**, `ssim` and `psnr` as well, with `--align` if the camera or stage
can move; for **screenshots**, which should repeat exactly, `psnr` (or `mse`)
with a strict limit, after masking timestamps and counters.
"""


def main() -> None:
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    plot = cv2.imread(str(ROOT / "sample_images" / "baseline.png"))
    other_plot = cv2.imread(str(ROOT / "sample_images" / "fault_shifted_population.png"))
    photo_rows = rows_for(photo, coffee)
    plot_rows = rows_for(plot, other_plot)
    out = [
        "# Robustness of reporter's metrics",
        "",
        "Generated by `python benchmarks/robustness.py` (scikit-image "
        "needed); do not edit by hand. Each row compares an image with a "
        "transformed copy of itself through reporter's own path: the copy is "
        "brought to the image's size and channels as `reporter run` would (a "
        "smaller copy is enlarged bilinearly; a greyscale copy is compared with "
        "the image in grey), then every metric is computed. `shift` is the "
        "measured translation in pixels (`shift_x`, `shift_y` combined).",
        "",
        f"## A photograph: scikit-image `astronaut` ({photo.shape[1]}x{photo.shape[0]})",
        "",
        "The last row compares it with scikit-image `coffee`, a different photograph.",
        "",
        *table(photo_rows),
        "",
        "Smallest translation at which a moved copy scores no better than the different "
        "photograph: " + "; ".join(translation_vs_different(photo_rows)) + ".",
        "",
        "Transformations that cross reporter's default limits (the mildest level of each):",
        "",
        *crossings(photo_rows),
        "",
        f"## A sparse dot plot: `sample_images/baseline.png` ({plot.shape[1]}x{plot.shape[0]})",
        "",
        "The last row compares it with `fault_shifted_population.png`, the same control "
        "with one population moved (a real instrument fault).",
        "",
        *table(plot_rows),
        "",
        "Transformations that cross reporter's default limits (the mildest level of each):",
        "",
        *crossings(plot_rows),
        "",
        READING,
        "",
        "## Hashes against the embedding (the collection commands)",
        "",
        "`reporter search` and `reporter duplicates` compare each image as it is, without "
        "bringing it to the other's size. The same copies of `astronaut`, the last row "
        "`coffee`; the embedding as 64 x (1 - cosine), so that it reads beside the "
        "hashes' 64 bits (0 = the same, larger = further):",
        "",
        *collection_rows(photo, coffee),
        "",
        COLLECTION_READING,
    ]
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "robustness.md"
    target.write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
