"""Shared fixtures: small generated images written to temporary folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"

# The embedding graph and the feature cache go to a folder of the test session's own, never
# to the user's cache (subprocesses inherit it); a test may point elsewhere.
os.environ["REPORTER_CACHE"] = tempfile.mkdtemp(prefix="reporter-tests-cache-")

_WARMING: list = []


def pytest_sessionstart(session):
    """The session's cache starts empty, so its first 16-bit run compiles the kernels'
    16-bit signatures (about 10 s, a test's time on one core). A process of its own
    compiles them into the cache while the first tests run; a test that gets there first
    compiles them itself, as it did before, and numba's cache writes are atomic."""
    import subprocess
    import sys

    code = "from reporter import kernels; kernels.warm('uint16')"
    _WARMING.append(
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )


def pytest_sessionfinish(session, exitstatus):
    for process in _WARMING:
        if process.poll() is None:
            process.kill()
        process.wait()


def smooth_image(seed: int, shape=(120, 160, 3), dtype=np.uint8) -> np.ndarray:
    """A photo-like image: blurred noise stretched to the full range of the type."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    img = cv2.GaussianBlur(rng.random(shape[:2] + shape[2:]).astype(np.float32), (0, 0), 4)
    img = (img - img.min()) / (img.max() - img.min())
    return np.rint(img * top).astype(dtype)


def noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(img.dtype).max
    return np.clip(img.astype(np.float64) + rng.normal(0, sigma * top, img.shape), 0, top).astype(
        img.dtype
    )


def write(path: Path, img: np.ndarray, params=()) -> Path:
    ok, buf = cv2.imencode(path.suffix, img, list(params))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def baseline_img() -> np.ndarray:
    return smooth_image(0)


@pytest.fixture
def run_dir(tmp_path: Path, baseline_img: np.ndarray) -> Path:
    """A folder with baseline.png, an identical copy and a slightly noisy copy."""
    folder = tmp_path / "run"
    folder.mkdir()
    write(folder / "baseline.png", baseline_img)
    write(folder / "same.png", baseline_img)
    write(folder / "noisy.png", noisy(baseline_img, 0.01))
    return folder


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: a run with a series keeps its history under
    ./reports by default, which must never be the repository's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_log():
    """main() points reporter's logger at the standard error of its moment (a test's
    captured one, closed when that test ends): each test starts without that handler, so
    that a run called without main() is logged as pytest's own logging sees it."""
    import logging

    yield
    logger = logging.getLogger("reporter")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def photo(name: str):
    """One of scikit-image's bundled photos as OpenCV holds images (BGR, or grey)."""
    import cv2
    import skimage.data

    img = getattr(skimage.data, name)()
    return cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR) if img.ndim == 3 else img


def unit_vectors(n: int, spectrum: str, seed: int = 5) -> np.ndarray:
    """Unit vectors of 1280 numbers: spread over few directions, as real images' embeddings
    are (``decaying``), or evenly over all (``even``); a tenth of them near copies of
    another, with 1 - cosine from 0 to about 0.8, so that many fall either side of 0.4."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, 1281) ** -0.5 if spectrum == "decaying" else np.ones(1280)
    x = rng.standard_normal((n, 1280)) * scale
    if spectrum == "decaying":  # a shared mean direction, as features after a ReLU have:
        x[:, 0] += 1.5  # 1 - cosine 0.79 at the median, as between real photos
    copies = rng.choice(n, n // 10, replace=False)
    noise = rng.standard_normal((len(copies), 1280)) * scale
    x[copies] = x[rng.integers(0, n, len(copies))] + rng.uniform(0, 1.2, (len(copies), 1)) * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def noisy_run(folder: Path, count: int, shape=(768, 1024, 3), seed: int = 0) -> Path:
    """``folder`` (made) with a smooth baseline and ``count`` noisy copies of it."""
    folder.mkdir()
    base = smooth_image(seed, shape)
    write(folder / "baseline.png", base)
    for i in range(count):
        write(folder / f"img{i:02d}.png", noisy(base, 0.02, seed=i))
    return folder


def grandchildren() -> list[int]:
    """PIDs of the children of this process's children (pool workers under the fork server)."""

    def children(pid: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found += [int(p) for p in text.split()]
        return found

    return [g for c in children(os.getpid()) for g in children(c)]


def kill_a_worker(killed: list[int]):
    """A started thread that SIGKILLs the first local worker process it sees, 0.3 s into
    its work (as the out-of-memory killer would), and notes its pid in ``killed``."""
    import signal
    import threading
    import time

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            workers = grandchildren()
            if workers:
                time.sleep(0.3)  # let it start on an image
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    return thread
