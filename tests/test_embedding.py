"""The embedding: EfficientNet-Lite0's real ImageNet weights, read without PyTorch, run offline."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import skimage.data

from reporter import embedding
from reporter.embedding import BLOCKS, BN_EPS, Embedder, WeightsError, read_weights

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


def photo(name: str) -> np.ndarray:
    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def weights():
    return read_weights(embedding.weights_path())


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """A cache folder of the tests' own: the first Embedder builds the graph into it."""
    folder = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("REPORTER_CACHE", str(folder))
    embedding.model_bytes.cache_clear()
    yield folder
    embedding.model_bytes.cache_clear()
    patch.undo()


def test_the_weights_are_the_published_state_dict(weights):
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_conv_stem.weight"].dtype == np.float32
    assert np.isfinite(weights["_fc.weight"]).all() and weights["_fc.weight"].std() > 0.01


@pytest.mark.parametrize(("name", "classes"), [("chelsea", CATS), ("coffee", COFFEE)])
@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_bundled_photos_get_their_imagenet_class(name, classes, backend):
    _, logits = Embedder(backend).features([photo(name)])
    assert int(np.argmax(logits[0])) in classes
    p = np.exp(logits[0] - logits[0].max())
    assert p[list(classes)].sum() / p.sum() > 0.5  # confident, not a lucky argmax


def test_opencv_and_onnxruntime_agree():
    images = [photo(n) for n in ("chelsea", "coffee", "astronaut", "camera")]
    fast, plain = Embedder("onnxruntime")(images), Embedder("opencv")(images)
    assert fast.shape == (4, 1280)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert np.abs(fast - plain).max() < 1e-4


# --- an independent forward pass in numpy, from the unfolded weights ----------------------


def _conv(x, w, stride, groups=1):
    """TensorFlow SAME convolution of x (C, H, W) by w (O, C/groups, k, k), numpy only."""
    k, side = w.shape[-1], x.shape[1]
    out = -(-side // stride)
    total = max((out - 1) * stride + k - side, 0)
    x = np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))
    if k == 1:
        x = x[:, ::stride, ::stride]
        return np.einsum("oc,chw->ohw", w[:, :, 0, 0], x)
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    windows = windows[:, ::stride, ::stride][:, :out, :out]
    if groups == 1:
        return np.einsum("chwij,ocij->ohw", windows, w)
    return np.einsum("chwij,cij->chw", windows, w[:, 0])  # depthwise


def _bn(x, weights, name):
    g, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
    mean, var = weights[f"{name}.running_mean"], weights[f"{name}.running_var"]
    return ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + BN_EPS)) * g[
        :, None, None
    ] + b[:, None, None]


def _relu6(x):
    return np.clip(x, 0, 6)


def reference_logits(weights, image: np.ndarray) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = embedding.preprocess(image).astype(np.float64)
    x = _relu6(_bn(_conv(x, w["_conv_stem.weight"], 2), w, "_bn0"))
    index = 0
    for repeats, _kernel, stride, expand, c_in, c_out in BLOCKS:
        for r in range(repeats):
            p = f"_blocks.{index}."
            s = stride if r == 0 else 1
            y = x
            if expand != 1:
                y = _relu6(_bn(_conv(y, w[p + "_expand_conv.weight"], 1), w, p + "_bn0"))
            dw = w[p + "_depthwise_conv.weight"]
            y = _relu6(_bn(_conv(y, dw, s, groups=dw.shape[0]), w, p + "_bn1"))
            y = _bn(_conv(y, w[p + "_project_conv.weight"], 1), w, p + "_bn2")
            if s == 1 and (c_in if r == 0 else c_out) == c_out:
                y = y + x
            x = y
            index += 1
    x = _relu6(_bn(_conv(x, w["_conv_head.weight"], 1), w, "_bn1"))
    pooled = x.mean(axis=(1, 2))
    return w["_fc.weight"] @ pooled + w["_fc.bias"]


def test_the_converted_graph_reproduces_the_weights_own_classifier(weights):
    """Batch norm folded, padding and skips as built: the same logits as the network computed
    layer by layer from the weights as published (float64, numpy only)."""
    image = photo("chelsea")
    expected = reference_logits(weights, image)
    _, logits = Embedder("onnxruntime").features([image])
    assert np.abs(logits[0] - expected).max() < 1e-3 * np.abs(expected).max()
    assert int(np.argmax(expected)) in CATS


# --- the weights file and the cache -------------------------------------------------------


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_weights_file_that_asks_for_anything_but_tensors_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    with evil.open("wb") as f:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}):
            pickle.dump(part, f, protocol=2)
        pickle.dump({"x": Boom()}, f, protocol=2)
    with pytest.raises(WeightsError, match="asks for posix.system|asks for os.system"):
        read_weights(evil)
    (tmp_path / "short.pth").write_bytes(embedding.weights_path().read_bytes()[:100_000])
    with pytest.raises(WeightsError):
        read_weights(tmp_path / "short.pth")


def test_the_graph_is_cached_by_sha256_and_rebuilt_when_damaged(own_cache):
    embedding.model_bytes.cache_clear()
    first = embedding.model_bytes()
    (model,) = own_cache.glob("efficientnet-lite0-*.onnx")
    assert model.read_bytes() == first
    model.write_bytes(first[:-10] + b"0123456789")  # damaged: its sha256 no longer matches
    embedding.model_bytes.cache_clear()
    assert embedding.model_bytes() == first
    assert model.read_bytes() == first


# --- the embedding metric of reporter run ---------------------------------------------------


def test_run_computes_the_embedding_only_when_asked(tmp_path):
    import shutil

    from conftest import SAMPLES

    from reporter import pipeline
    from reporter.config import Config

    folder = tmp_path / "in"
    shutil.copytree(SAMPLES, folder)
    shutil.copy(folder / "baseline.png", folder / "same.png")
    off = pipeline.run(Config(inputs=(folder,), out=tmp_path / "off", jobs=1))
    assert off.table["embedding"].isna().all()
    assert "embedding" not in off.outputs["html"].read_text(encoding="utf-8").split("<h2>")[1]
    results = {}
    for jobs in (1, 2):  # in this process, and in workers that load the graph themselves
        on = pipeline.run(Config(inputs=(folder,), out=tmp_path / f"on{jobs}", jobs=jobs,
                                 embedding=True))  # fmt: skip
        results[jobs] = on.table.set_index("file")["embedding"]
        assert on.meta["config"]["embedding"] is True
    values = results[1]
    assert values["same.png"] == pytest.approx(1.0, abs=1e-6)
    assert values.drop("same.png").between(0.5, 0.9999).all()  # dot plots of one control
    assert np.allclose(results[1], results[2].loc[results[1].index], atol=1e-5)
    page = (tmp_path / "on1" / "report.html").read_text(encoding="utf-8")
    assert "embedding" in page.split("<h2>")[1]  # a column of the table


def test_onnxruntime_sends_and_keeps_no_telemetry(tmp_path, own_cache):
    """onnxruntime 1.32 on Linux wrote a persistent device ID and a telemetry database
    under ~/.cache/Microsoft and queued its events for upload; with a home it could not
    write it printed 'Failed to persist telemetry device ID' on stderr, outside the log.
    A search by embedding in a process of its own, with a home of the test's and no
    opt-out in its environment, leaves nothing in that home and says nothing else."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        cv2.imwrite(str(folder / f"{name}.png"), photo(name))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORT_", "XDG_"))}
    env |= {"HOME": str(home), "REPORTER_CACHE": str(own_cache)}
    argv = [sys.executable, "-m", "reporter", "search", str(folder / "coffee.png"), str(folder),
            "--out", str(tmp_path / "o"), "--jobs", "1", "--no-cache", "-q"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not list(home.rglob("*")), list(home.rglob("*"))
    env["HOME"] = "/proc"  # a home no one can write, root included: nothing on stderr
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
