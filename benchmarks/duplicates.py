"""Evidence for the default thresholds of ``reporter duplicates``.

Run:  python benchmarks/duplicates.py

scikit-image's bundled photos (18 of them, colour and grey), each copied seven
ways: re-encoded as JPEG (quality 60) at half size, blurred (5x5 Gaussian),
captioned (white text across the lower part), cropped to 90 % and to 80 %,
shifted by 16 px (wrapped around), and mirrored left to right. For each method it
prints the distance of each kind of copy to its source (largest, median, smallest)
and of the 153 pairs of distinct photos (smallest, 1st percentile, median). A
threshold between the copies a method is meant to catch and the closest distinct
pair is the default: pHash 8, aHash 8, embedding 0.4 (as 1 - cosine). It is not a
test.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from reporter.collection.features import compute

SOURCES = (
    "chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "brick",
    "hubble_deep_field", "immunohistochemistry", "retina", "moon", "page", "text",
    "grass", "gravel", "colorwheel", "horse", "clock",
)  # fmt: skip


def bgr(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.dtype != np.uint8:
        img = (img * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR) if img.ndim == 3 else img


def variants(img: np.ndarray) -> dict[str, np.ndarray]:
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    jpeg = cv2.imdecode(
        cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_UNCHANGED
    )
    caption = cv2.putText(
        img.copy(), "SAMPLE", (w // 10, h - h // 10), cv2.FONT_HERSHEY_SIMPLEX, w / 400,
        (255, 255, 255), max(1, w // 200),
    )  # fmt: skip
    return {
        "source": img,
        "jpeg, half size": jpeg,
        "blur 5x5": cv2.GaussianBlur(img, (5, 5), 0),
        "caption": caption,
        "crop 90 %": img[h // 20 : h - h // 20, w // 20 : w - w // 20],
        "crop 80 %": img[h // 10 : h - h // 10, w // 10 : w - w // 10],
        "shift 16 px": np.roll(img, 16, axis=1),
        "mirror": img[:, ::-1],  # not a copy a hash catches; what does each method make of it
    }


def distance(a, b, method: str) -> float:
    if method == "embedding":
        return float(1 - np.dot(a.embedding, b.embedding))
    xor = np.bitwise_xor(
        np.frombuffer(getattr(a, method), np.uint8), np.frombuffer(getattr(b, method), np.uint8)
    )
    return float(np.bitwise_count(xor).sum())  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        features = {}
        for source in SOURCES:
            for kind, img in variants(bgr(source)).items():
                path = folder / f"{source}-{len(features)}.png"
                cv2.imwrite(str(path), img)
                features[(source, kind)] = compute(
                    path, path.name, embedding=True, max_pixels=10**8, max_bytes=None
                )
    kinds = list(variants(bgr(SOURCES[0])))[1:]
    pairs = list(itertools.combinations(SOURCES, 2))
    print(f"{len(SOURCES)} photos, {len(pairs)} distinct pairs")
    for method in ("phash", "ahash", "embedding"):
        print(f"\n{method}" + (" (1 - cosine)" if method == "embedding" else " (Hamming, 0-64)"))
        for kind in kinds:
            d = [distance(features[(s, "source")], features[(s, kind)], method) for s in SOURCES]
            print(
                f"  copy: {kind:<16} largest {max(d):7.3f}   median {np.median(d):7.3f}"
                f"   smallest {min(d):7.3f}"
            )
        d = [distance(features[(a, "source")], features[(b, "source")], method) for a, b in pairs]
        print(
            f"  distinct photos        smallest {min(d):6.3f}   1st percentile "
            f"{np.percentile(d, 1):6.3f}   median {np.median(d):6.3f}"
        )


if __name__ == "__main__":
    main()
