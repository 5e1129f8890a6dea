"""Benchmark engine: time fastconv against PyTorch and ONNX Runtime side by side.

``bench/compare.py`` (and a ``fastconv bench`` CLI subcommand) call :func:`main`; the
pytest-benchmark files in ``bench/`` use the layer suite, the data and the per-implementation
factories defined here, so both measure exactly the same calls.

How the comparison tells the truth on a small, shared machine (see ``shared/PERF.md``):

- every implementation runs in this one process, on the same arrays, with the same thread count
  (fastconv ``num_threads=``, ``torch.set_num_threads``, ONNX Runtime ``intra_op_num_threads``
  with spinning disabled so idle peer threads do not steal the cores);
- rounds are interleaved: each round runs every implementation once per case, in a rotating
  order, with a short sleep between blocks so spinning OpenMP threads go idle; the reported time
  is the minimum over rounds;
- each peer's result is checked once against fastconv's, so a mis-configured peer is caught
  rather than timed.

PyTorch, ONNX Runtime and onnx are optional: a missing peer is reported, not an error.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "CONV_FACTORIES",
    "DEFAULT_THREADS",
    "PEAK_CORES",
    "POOL_CONFIGS",
    "POOL_FACTORIES",
    "RELU_FACTORIES",
    "ConvLayer",
    "Unavailable",
    "add_arguments",
    "conv_data",
    "core_peak_gflops",
    "extra_layers",
    "fastconv_op_available",
    "load_layers",
    "main",
    "numpy_conv2d",
    "numpy_max_pool2d",
    "peak_gflops",
    "public_layers",
    "relu_shapes",
    "run",
    "set_peer_threads",
]

# Peak arithmetic throughput: measured, not assumed (the same wheel runs on AVX-512 and on
# AVX2-only machines). peak_gflops() times the selected kernels' peak probe (12 independent
# vector multiply-add chains) on one thread and scales by the cores used, up to PEAK_CORES.
# FASTCONV_PEAK_GFLOPS (float32, PEAK_CORES cores) and FASTCONV_PEAK_GFLOPS_FLOAT64 override it.
PEAK_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
DEFAULT_THREADS = 2

# The public suite (``shared/layers.json``), used when no layers.json file is found (e.g. when
# fastconv is installed from a wheel). Fields: name, N, C, H (= W), F, K, stride, padding,
# groups, dilation.
_PUBLIC_LAYERS = [
    ["seed_rgb_224_c3to64_k3", 1, 3, 224, 64, 3, 1, 1, 1, 1],
    ["vgg_224_c64to64_k3", 1, 64, 224, 64, 3, 1, 1, 1, 1],
    ["resnet_stem_224_k7s2", 1, 3, 224, 64, 7, 2, 3, 1, 1],
    ["resnet_56_c64_k3", 1, 64, 56, 64, 3, 1, 1, 1, 1],
    ["resnet_28_c128_k3", 1, 128, 28, 128, 3, 1, 1, 1, 1],
    ["resnet_14_c256_k3", 1, 256, 14, 256, 3, 1, 1, 1, 1],
    ["pointwise_56_c256to64", 1, 256, 56, 64, 1, 1, 0, 1, 1],
    ["down_28_c128to256_s2", 1, 128, 28, 256, 3, 2, 1, 1, 1],
    ["cifar_b16_32_c32to64", 16, 32, 32, 64, 3, 1, 1, 1, 1],
    ["mnist_b64_28_c1to32", 64, 1, 28, 32, 3, 1, 0, 1, 1],
]

# Layers nobody tuned for: channel counts that are not multiples of 16, 5x5 and 7x7 kernels,
# stride 2, dilation 2, grouped and depthwise, batch 1 and 64. Each is small (< 50 ms for any
# peer on 2 cores). Same fields as the public suite.
_EXTRA_LAYERS = [
    ["odd_112_c3to24_k5", 1, 3, 112, 24, 5, 1, 2, 1, 1],
    ["odd_56_c40to72_k3", 1, 40, 56, 72, 3, 1, 1, 1, 1],
    ["k5_28_c48to96", 1, 48, 28, 96, 5, 1, 2, 1, 1],
    ["k7_56_c24to40", 1, 24, 56, 40, 7, 1, 3, 1, 1],
    ["s2_56_c96to160_k3", 1, 96, 56, 160, 3, 2, 1, 1, 1],
    ["dil2_56_c64_k3", 1, 64, 56, 64, 3, 1, 2, 1, 2],
    ["grouped4_28_c64to128_k3", 1, 64, 28, 128, 3, 1, 1, 4, 1],
    ["depthwise_56_c144_k3", 1, 144, 56, 144, 3, 1, 1, 144, 1],
    ["depthwise_s2_56_c96_k5", 1, 96, 56, 96, 5, 2, 2, 96, 1],
    ["deep_7_c200to120_k3", 1, 200, 7, 120, 3, 1, 1, 1, 1],
    ["b64_14_c20to36_k3", 64, 20, 14, 36, 3, 1, 1, 1, 1],
    ["b64_14_c72to24_k1", 64, 72, 14, 24, 1, 1, 0, 1, 1],
]

# max_pool2d cases: (name, kernel, stride, padding) on a 1x64x224x224 NCHW input.
POOL_SHAPE = (1, 64, 224, 224)
POOL_CONFIGS = [("2x2/2", 2, 2, 0), ("3x3/2 pad 1", 3, 2, 1)]

_REPO = Path(__file__).resolve().parents[1]


class Unavailable(Exception):
    """An implementation cannot run this case (peer not installed, dtype unsupported, op not
    implemented yet); the message says why."""


def peak_gflops(dtype, threads=PEAK_CORES):
    """Peak GF/s for ``dtype`` on ``min(threads, PEAK_CORES)`` cores (env overrides honoured)."""
    name = np.dtype(dtype).name
    cores = min(max(int(threads), 1), PEAK_CORES)
    if "FASTCONV_PEAK_GFLOPS" in os.environ:
        f32 = float(os.environ["FASTCONV_PEAK_GFLOPS"])
        peak = f32
        if name == "float64":
            peak = float(os.environ.get("FASTCONV_PEAK_GFLOPS_FLOAT64", f32 / 2))
        return peak * cores / PEAK_CORES
    if name == "float64" and "FASTCONV_PEAK_GFLOPS_FLOAT64" in os.environ:
        return float(os.environ["FASTCONV_PEAK_GFLOPS_FLOAT64"]) * cores / PEAK_CORES
    return core_peak_gflops(name) * cores


@functools.lru_cache(maxsize=None)
def core_peak_gflops(dtype_name):
    """One core's peak GF/s for the selected ISA level: the best of 10 runs of the kernels'
    peak probe (5-10 ms each; the first ones let the clock ramp up), once per process."""
    from fastconv import _config

    kernels = _config.load_kernels("conv")
    best = 0.0
    for _ in range(10):
        start = time.perf_counter()
        flops, _checksum = kernels.peak_probe(dtype_name, 4_000_000)
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


# --------------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True)
class ConvLayer:
    """One conv2d benchmark case: input (n, c, h, w), f filters of kh x kw, square geometry."""

    name: str
    n: int
    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    suite: str = "public"

    @classmethod
    def from_row(cls, row, suite="public"):
        """From a layers.json row ``[name, N, C, H(=W), F, K, stride, padding, groups, dil]``."""
        name, n, c, h, f, k, stride, padding, groups, dilation = row
        return cls(str(name), int(n), int(c), int(h), int(h), int(f), int(k), int(k),
                   int(stride), int(padding), int(groups), int(dilation), suite)

    @property
    def out_hw(self):
        def size(n, k):
            return (n + 2 * self.padding - self.dilation * (k - 1) - 1) // self.stride + 1
        return size(self.h, self.kh), size(self.w, self.kw)

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        return (self.f, self.c // self.groups, self.kh, self.kw)

    @property
    def flops(self):
        """2 * N * F * OH * OW * (C / groups) * KH * KW."""
        oh, ow = self.out_hw
        return 2 * self.n * self.f * oh * ow * (self.c // self.groups) * self.kh * self.kw

    def describe(self):
        """E.g. ``1x64x56x56 -> 64, 3x3 s1 p1`` (plus ``d2``, ``g4`` when not 1)."""
        text = (f"{self.n}x{self.c}x{self.h}x{self.w} -> {self.f}, {self.kh}x{self.kw} "
                f"s{self.stride} p{self.padding}")
        if self.dilation != 1:
            text += f" d{self.dilation}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text


def _layers_json_candidates():
    env = os.environ.get("FASTCONV_LAYERS")
    if env:
        yield Path(env)
    yield _REPO.parent / "shared" / "layers.json"
    yield _REPO / "bench" / "layers.json"


def load_layers(path=None):
    """The public suite: ``path``, else ``$FASTCONV_LAYERS``, ``../shared/layers.json``,
    ``bench/layers.json``, else the built-in copy. Returns a list of :class:`ConvLayer`."""
    candidates = [Path(path)] if path is not None else list(_layers_json_candidates())
    for candidate in candidates:
        if candidate.is_file():
            rows = json.loads(candidate.read_text())["layers"]
            return [ConvLayer.from_row(row, "public") for row in rows]
    if path is not None:
        raise FileNotFoundError(f"layers file {path} not found")
    return public_layers()


def public_layers():
    """The built-in copy of the public suite."""
    return [ConvLayer.from_row(row, "public") for row in _PUBLIC_LAYERS]


def extra_layers():
    """Layers outside the public suite (odd channels, 5x5/7x7, stride/dilation 2, groups...)."""
    return [ConvLayer.from_row(row, "extra") for row in _EXTRA_LAYERS]


def conv_data(layer, dtype, seed=0):
    """Deterministic ``(x, weight)`` for ``layer``: x ~ N(0, 1), weight ~ N(0, 1 / fan_in)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(layer.x_shape, dtype=np.float64).astype(dtype)
    fan_in = (layer.c // layer.groups) * layer.kh * layer.kw
    w = (rng.standard_normal(layer.w_shape) / math.sqrt(fan_in)).astype(dtype)
    return x, w


def relu_shapes(dtype):
    """``{label: shape}`` of the ReLU cases: a 1x64x224x224 feature map and a 64 MiB array."""
    itemsize = np.dtype(dtype).itemsize
    return {"1x64x224x224": (1, 64, 224, 224),
            "64 MiB": (4096, (64 << 20) // (4096 * itemsize))}


# --------------------------------------------------------------------------------------------
# NumPy references (local fallbacks when fastconv.reference lacks an op)


def numpy_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    """NCHW conv2d in x's dtype with sliding_window_view + tensordot (zero padding)."""
    n = x.shape[0]
    f, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ext_h, ext_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    win = sliding_window_view(xp, (ext_h, ext_w), axis=(2, 3))
    win = win[:, :, ::stride, ::stride, ::dilation, ::dilation]  # (N, C, OH, OW, KH, KW)
    oh, ow = win.shape[2], win.shape[3]
    fg = f // groups
    y = np.empty((n, f, oh, ow), dtype=np.result_type(x, w))
    for g in range(groups):
        yg = np.tensordot(win[:, g * cg:(g + 1) * cg], w[g * fg:(g + 1) * fg],
                          axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, F/groups)
        y[:, g * fg:(g + 1) * fg] = yg.transpose(0, 3, 1, 2)
    return y


def numpy_max_pool2d(x, kernel_size, stride=None, padding=0):
    """NCHW max pooling in x's dtype with sliding_window_view (-inf padding, floor mode)."""
    stride = kernel_size if stride is None else stride
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=-np.inf)
    win = sliding_window_view(xp, (kernel_size, kernel_size), axis=(2, 3))
    return win[:, :, ::stride, ::stride].max(axis=(4, 5))


def _reference(name, fallback):
    """``fastconv.reference.<name>`` if it exists, else ``fallback``; and which one it is."""
    try:
        from fastconv import reference
    except ImportError:
        return fallback, "local"
    func = getattr(reference, name, None)
    return (func, "fastconv.reference") if func is not None else (fallback, "local")


# --------------------------------------------------------------------------------------------
# Peers: optional imports and thread settings


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"PyTorch not installed ({exc})") from None
    return torch


def _import_ort():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise Unavailable(f"ONNX Runtime / onnx not installed ({exc})") from None
    return onnx, onnxruntime


def set_peer_threads(threads):
    """Give PyTorch ``threads`` intra-op threads (and one inter-op thread) if it is installed."""
    try:
        torch = _import_torch()
    except Unavailable:
        return
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; harmless if too late
        pass


def _versions():
    import numpy

    import fastconv

    out = {"fastconv": fastconv.__version__, "numpy": numpy.__version__}
    for mod in ("torch", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    out["python"] = platform.python_version()
    return out


def _cpu_model():
    """``model name`` from /proc/cpuinfo plus family/model numbers (e.g. 25/17 is Zen 4)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def _ort_session(model, threads):
    _, ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle ORT threads spin by default and would halve everyone else's speed on 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. NOT_IMPLEMENTED: no float64 Conv kernel
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(f"ONNX Runtime cannot run this model: {first[:120]}") from None


def _ort_model(op, x, attrs, initializers=()):
    """A one-node ONNX model ``y = op(x, *initializers)`` with x's shape and dtype."""
    _import_ort()
    from onnx import TensorProto, helper, numpy_helper

    elem = {np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float64): TensorProto.DOUBLE}[x.dtype]
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), name=f"p{i}")
             for i, a in enumerate(initializers)]
    node = helper.make_node(op, ["x"] + [t.name for t in inits], ["y"], **attrs)
    graph = helper.make_graph(
        [node], f"fastconv_bench_{op}",
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        initializer=inits)
    # opset 17 / IR 8: understood by every ONNX Runtime from 1.14 on.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort_runner(session, x):
    """Run with the input bound in place (no copy); ORT allocates the output, as in ``run``."""
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y")

    def call():
        session.run_with_iobinding(binding)
        return binding

    def result(value):
        return value.copy_outputs_to_cpu()[0]

    return call, result


# --------------------------------------------------------------------------------------------
# Implementation factories. Each takes the case's arrays and returns ``(call, to_numpy)``:
# ``call()`` runs the operation once and returns something ``to_numpy`` turns into an ndarray.
# They raise Unavailable when they cannot run the case.


def _identity(value):
    return np.asarray(value)


def _torch_numpy(value):
    return value.numpy()


def fastconv_op_available(op):
    """False while ``fastconv.<op>`` is a placeholder raising NotImplementedError."""
    import fastconv

    probe = np.zeros((1, 1, 4, 4), np.float32)
    try:
        if op == "conv2d":
            fastconv.conv2d(probe, np.zeros((1, 1, 2, 2), np.float32))
        elif op == "relu":
            fastconv.relu(probe)
        elif op == "max_pool2d":
            fastconv.max_pool2d(probe, 2)
        else:
            raise ValueError(op)
    except NotImplementedError:
        return False
    return True


def _require_fastconv(op):
    if not fastconv_op_available(op):
        raise Unavailable(f"fastconv.{op} is not implemented yet")
    import fastconv

    return fastconv


def _conv_fastconv(layer, x, w, threads):
    fastconv = _require_fastconv("conv2d")
    geometry = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                    groups=layer.groups, num_threads=threads)
    return (lambda: fastconv.conv2d(x, w, **geometry)), _identity


def _conv_numpy(layer, x, w, threads):
    # The fast NumPy way (BLAS tensordot in x's dtype), not fastconv.reference, which trades
    # speed for exactness (float64, no BLAS) to serve as the tests' oracle.
    func = numpy_conv2d
    geometry = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                    groups=layer.groups)
    return (lambda: func(x, w, **geometry)), _identity


def _conv_torch(layer, x, w, threads):
    torch = _import_torch()
    functional = torch.nn.functional
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)

    def call():
        with torch.inference_mode():
            return functional.conv2d(xt, wt, None, layer.stride, layer.padding,
                                     layer.dilation, layer.groups)

    return call, _torch_numpy


def _conv_ort(layer, x, w, threads):
    p = layer.padding
    attrs = dict(kernel_shape=[layer.kh, layer.kw], strides=[layer.stride] * 2,
                 pads=[p, p, p, p], dilations=[layer.dilation] * 2, group=layer.groups)
    session = _ort_session(_ort_model("Conv", x, attrs, [w]), threads)
    return _ort_runner(session, x)


CONV_FACTORIES = {
    "fastconv": _conv_fastconv,
    "numpy": _conv_numpy,
    "torch": _conv_torch,
    "onnxruntime": _conv_ort,
}


def _pool_fastconv(x, kernel, stride, padding, threads):
    fastconv = _require_fastconv("max_pool2d")
    return (lambda: fastconv.max_pool2d(x, kernel, stride, padding, num_threads=threads),
            _identity)


def _pool_numpy(x, kernel, stride, padding, threads):
    func, _ = _reference("max_pool2d_reference", numpy_max_pool2d)
    return (lambda: func(x, kernel, stride, padding)), _identity


def _pool_torch(x, kernel, stride, padding, threads, channels_last=False):
    torch = _import_torch()
    xt = torch.from_numpy(x)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)  # converted once, not timed

    def call():
        with torch.inference_mode():
            return torch.nn.functional.max_pool2d(xt, kernel, stride, padding)

    return call, _torch_numpy


def _pool_torch_cl(x, kernel, stride, padding, threads):
    return _pool_torch(x, kernel, stride, padding, threads, channels_last=True)


def _pool_ort(x, kernel, stride, padding, threads):
    attrs = dict(kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=[padding] * 4)
    session = _ort_session(_ort_model("MaxPool", x, attrs), threads)
    return _ort_runner(session, x)


POOL_FACTORIES = {
    "fastconv": _pool_fastconv,
    "numpy": _pool_numpy,
    "torch": _pool_torch,
    "torch_channels_last": _pool_torch_cl,
    "onnxruntime": _pool_ort,
}


# ReLU: ``x`` is the input; ``out`` a preallocated output for out-of-place, or None for in-place
# (then x is overwritten, so each implementation gets its own copy of x).


def _relu_fastconv(x, out, threads):
    fastconv = _require_fastconv("relu")
    target = x if out is None else out
    return (lambda: fastconv.relu(x, out=target, num_threads=threads)), _identity


def _relu_numpy(x, out, threads):
    target = x if out is None else out
    return (lambda: np.maximum(x, 0, out=target)), _identity


def _relu_torch(x, out, threads):
    torch = _import_torch()
    xt = torch.from_numpy(x)
    if out is None:
        return (lambda: torch.relu_(xt)), _torch_numpy
    # torch.relu has no out=: it allocates its result, as PyTorch users call it.
    return (lambda: torch.relu(xt)), _torch_numpy


RELU_FACTORIES = {
    "fastconv": _relu_fastconv,
    "numpy": _relu_numpy,
    "torch": _relu_torch,
}


# --------------------------------------------------------------------------------------------
# Interleaved comparison


IMPL_LABELS = {
    "fastconv": "fastconv",
    "numpy": "NumPy",
    "torch": "PyTorch",
    "torch_channels_last": "PyTorch CL",
    "onnxruntime": "ONNX Runtime",
}


@dataclass
class Case:
    """One row of the comparison: a label and a zero-argument call per implementation."""

    kind: str  # "conv" or "memory"
    name: str
    detail: str
    dtype: str
    suite: str
    flops: float = 0.0
    nbytes: float = 0.0
    calls: dict = field(default_factory=dict)  # impl -> call()
    converters: dict = field(default_factory=dict)  # impl -> to_numpy
    missing: dict = field(default_factory=dict)  # impl -> reason it did not run
    mismatch: dict = field(default_factory=dict)  # impl -> max abs difference vs fastconv
    seconds: dict = field(default_factory=dict)  # impl -> min seconds over rounds


def _add_impl(case, impl, factory, *args):
    try:
        call, to_numpy = factory(*args)
    except Unavailable as exc:
        case.missing[impl] = str(exc)
        return
    except Exception as exc:  # a broken build or peer is reported in the notes, not fatal
        case.missing[impl] = f"failed: {type(exc).__name__}: {exc}"[:160]
        return
    case.calls[impl] = call
    case.converters[impl] = to_numpy


def _conv_cases(layers, dtype, impls, threads):
    cases = []
    for layer in layers:
        x, w = conv_data(layer, dtype)
        case = Case("conv", layer.name, layer.describe(), np.dtype(dtype).name, layer.suite,
                    flops=float(layer.flops))
        for impl in impls:
            _add_impl(case, impl, CONV_FACTORIES[impl], layer, x, w, threads)
        cases.append(case)
    return cases


def _pool_cases(dtype, impls, threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(POOL_SHAPE).astype(dtype)
    cases = []
    for label, kernel, stride, padding in POOL_CONFIGS:
        out_hw = (POOL_SHAPE[2] + 2 * padding - kernel) // stride + 1
        out_bytes = POOL_SHAPE[0] * POOL_SHAPE[1] * out_hw * out_hw * x.itemsize
        case = Case("memory", f"max_pool2d {label}", "1x64x224x224 NCHW",
                    np.dtype(dtype).name, "memory", nbytes=float(x.nbytes + out_bytes))
        for impl in impls:
            _add_impl(case, impl, POOL_FACTORIES[impl], x, kernel, stride, padding, threads)
        cases.append(case)
    return cases


def _relu_cases(dtype, impls, threads):
    rng = np.random.default_rng(2)
    cases = []
    for label, shape in relu_shapes(dtype).items():
        x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        for mode in ("out of place", "in place"):
            case = Case("memory", f"relu {label} {mode}", "x" if mode == "in place" else "x -> out",
                        np.dtype(dtype).name, "memory", nbytes=float(2 * x.nbytes))
            for impl in impls:
                if mode == "in place":
                    _add_impl(case, impl, RELU_FACTORIES[impl], x.copy(), None, threads)
                else:
                    _add_impl(case, impl, RELU_FACTORIES[impl], x, np.empty_like(x), threads)
            cases.append(case)
    return cases


def _check(case):
    """Run every implementation once (warm-up) and compare each peer with fastconv."""
    results = {}
    for impl, call in list(case.calls.items()):
        try:
            results[impl] = np.asarray(case.converters[impl](call()))
        except Exception as exc:  # a peer failing at run time is reported, not fatal
            del case.calls[impl]
            case.missing[impl] = f"failed: {type(exc).__name__}: {exc}"[:160]
    if "fastconv" not in results:
        return
    expected = results["fastconv"]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if case.kind == "conv":
        rtol = 1e-3 if expected.dtype == np.float32 else 1e-9
        atol = rtol * 0.1 * scale
    else:
        rtol = atol = 0.0  # max and relu are exact
    for impl, got in results.items():
        if impl == "fastconv":
            continue
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol,
                                                          equal_nan=True):
            diff = (float(np.nanmax(np.abs(got.astype(np.float64) - expected)))
                    if got.shape == expected.shape else float("inf"))
            case.mismatch[impl] = diff


def _progress(message, final=False):
    stream = sys.stderr
    if stream.isatty():
        stream.write("\r\033[K" + message + ("\n" if final else ""))
    else:
        stream.write(message + "\n")
    stream.flush()


def _cpu_seconds():
    """``(busy CPU seconds of the whole machine, CPU seconds of this process)``, or None."""
    try:
        import resource

        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        own = resource.getrusage(resource.RUSAGE_SELF)
    except (OSError, ValueError, ImportError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, own.ru_utime + own.ru_stime


def seconds_per_call(fn, calls, rounds=7):
    """The minimum over ``rounds`` of the mean time of ``calls`` back-to-back calls of ``fn``
    (for latencies and chains of calls, where ``measure``'s single-call blocks do not fit)."""
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(cases, rounds, pause=0.005, repeat=3, progress=True):
    """Interleaved rounds: each round runs every case's implementations in an order that
    rotates per round; each block sleeps ``pause`` seconds (so the previous block's idle
    threads stop spinning), then times ``repeat`` back-to-back calls. Keeps the minimum.

    Returns ``{"seconds": wall time, "other_load": fraction of the machine's CPU time that
    other processes used meanwhile (None off Linux)}``: a busy machine inflates timings."""
    clock = time.perf_counter_ns
    start = time.perf_counter()
    cpu_before = _cpu_seconds()
    for case in cases:
        case.seconds = {impl: math.inf for impl in case.calls}
    for r in range(rounds):
        if progress:
            _progress(f"[fastconv bench] round {r + 1}/{rounds}, "
                      f"{time.perf_counter() - start:.1f} s elapsed")
        for case in cases:
            impls = list(case.calls)
            if not impls:
                continue
            shift = r % len(impls)
            for impl in impls[shift:] + impls[:shift]:
                call = case.calls[impl]
                time.sleep(pause)
                best = case.seconds[impl]
                for _ in range(repeat):
                    t0 = clock()
                    call()
                    elapsed = (clock() - t0) * 1e-9
                    best = min(best, elapsed)
                case.seconds[impl] = best
    wall = time.perf_counter() - start
    cpu_after = _cpu_seconds()
    other = None
    if cpu_before and cpu_after and wall > 0:
        machine = cpu_after[0] - cpu_before[0]
        own = cpu_after[1] - cpu_before[1]
        other = min(max((machine - own) / (wall * (os.cpu_count() or 1)), 0.0), 1.0)
    if progress:
        _progress(f"[fastconv bench] {rounds} rounds done in {wall:.1f} s", final=True)
    return {"seconds": wall, "other_load": other}


def _best_peer(case):
    """``(impl, seconds)`` of the fastest peer whose result matched fastconv's, or None.

    For conv2d the NumPy reference is not a peer (it is a correctness baseline)."""
    peers = [(seconds, impl) for impl, seconds in case.seconds.items()
             if impl != "fastconv" and impl not in case.mismatch and math.isfinite(seconds)
             and not (case.kind == "conv" and impl == "numpy")]
    if not peers:
        return None
    seconds, impl = min(peers)
    return impl, seconds


def _ratio(case):
    best = _best_peer(case)
    fc = case.seconds.get("fastconv")
    if best is None or fc is None or not math.isfinite(fc):
        return None
    return fc / best[1]


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


# --------------------------------------------------------------------------------------------
# Report


def _fmt_ms(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _cell(case, impl):
    if impl not in case.seconds:
        return "n/a"
    text = _fmt_ms(case.seconds[impl])
    if impl in case.mismatch:
        text += " (wrong)"
    return text


def _header(threads, dtype, rounds, repeat, peers):
    v = _versions()
    from fastconv import _config

    libs = f"fastconv {v['fastconv']} (ISA {_config.SELECTED_ISA}), numpy {v['numpy']}"
    if peers:
        libs += (f", torch {v['torch'] or 'not installed'}, "
                 f"onnxruntime {v['onnxruntime'] or 'not installed'}")
    today = datetime.date.today().isoformat()
    return (f"**{today}** · {_cpu_model()} ({os.cpu_count()} logical CPUs) · "
            f"{threads} threads · {libs} · Python {v['python']} · {dtype} · minimum of "
            f"{rounds} interleaved rounds x {repeat} calls · peak {peak_gflops('float32', threads):.0f} GF/s float32 / "
            f"{peak_gflops('float64', threads):.0f} float64")


def _conv_table(cases, impls, threads, title):
    cols = [i for i in impls if i != "numpy" and any(i in c.seconds or i in c.missing
                                                     for c in cases)]
    head = (["layer", "shape", "GFLOP"] + [f"{IMPL_LABELS[i]} ms" for i in cols]
            + ["fastconv GF/s", "% peak", "best peer GF/s", "ratio"])
    lines = [f"#### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|"]
    ratios = []
    for case in cases:
        fc = case.seconds.get("fastconv")
        gflops = case.flops / fc / 1e9 if fc and math.isfinite(fc) else None
        best = _best_peer(case)
        ratio = _ratio(case)
        ratios.append(ratio)
        peak = peak_gflops(case.dtype, threads)
        row = [case.name, case.detail, f"{case.flops / 1e9:.3f}"]
        row += [_cell(case, i) for i in cols]
        row += [f"{gflops:.1f}" if gflops else "n/a",
                f"{100 * gflops / peak:.0f}%" if gflops else "n/a",
                f"{case.flops / best[1] / 1e9:.1f}" if best else "n/a",
                f"**{ratio:.2f}**" if ratio is not None and ratio > 1.0
                else f"{ratio:.2f}" if ratio is not None else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    gm = geomean(ratios)
    valid = [(r, c.name) for r, c in zip(ratios, cases) if r is not None]
    if gm is not None:
        worst = max(valid)
        lines += ["", (f"Geometric mean of time ratios (fastconv / best peer): **{gm:.2f}** "
                       f"over {len(valid)} layers; worst {worst[0]:.2f} ({worst[1]}).")]
    return lines, ratios


def _memory_table(cases, impls, threads):
    cols = [i for i in impls if any(i in c.seconds for c in cases)]
    head = (["op", "data"] + [f"{IMPL_LABELS[i]} ms" for i in cols]
            + ["fastconv GB/s", "best peer GB/s", "ratio"])
    lines = ["#### ReLU and max pooling (memory-bound; GB/s = bytes read + written / time)", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|"]
    ratios = []
    for case in cases:
        fc = case.seconds.get("fastconv")
        best = _best_peer(case)
        ratio = _ratio(case)
        ratios.append(ratio)
        row = [case.name, case.detail] + [_cell(case, i) for i in cols]
        row += [f"{case.nbytes / fc / 1e9:.1f}" if fc and math.isfinite(fc) else "n/a",
                f"{case.nbytes / best[1] / 1e9:.1f}" if best else "n/a",
                f"**{ratio:.2f}**" if ratio is not None and ratio > 1.0
                else f"{ratio:.2f}" if ratio is not None else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    gm = geomean(ratios)
    if gm is not None:
        lines += ["", (f"Geometric mean of time ratios: **{gm:.2f}** over "
                       f"{sum(r is not None for r in ratios)} rows.")]
    return lines, ratios


def _notes(cases):
    notes = []
    seen = set()
    for case in cases:
        for impl, reason in case.missing.items():
            key = (impl, reason)
            if key not in seen:
                seen.add(key)
                names = [c.name for c in cases if c.missing.get(impl) == reason]
                where = "all rows" if len(names) == len(cases) else ", ".join(names)
                notes.append(f"- {IMPL_LABELS[impl]} n/a ({where}): {reason}")
        for impl, diff in case.mismatch.items():
            notes.append(f"- **{IMPL_LABELS[impl]} disagrees with fastconv on {case.name}** "
                         f"(max |diff| {diff:.3g}); excluded from the ratio.")
    return notes


def render(cases, impls, threads, dtype, rounds, repeat, peers, load=None):
    """The markdown report: header line, conv tables with geomeans, memory-bound table, notes."""
    lines = [_header(threads, dtype, rounds, repeat, peers), ""]
    conv = [c for c in cases if c.kind == "conv"]
    all_ratios = []
    for suite, title in (("public", "conv2d, public suite"),
                         ("extra", "conv2d, layers outside the public suite (--extra)")):
        subset = [c for c in conv if c.suite == suite]
        if subset:
            table, ratios = _conv_table(subset, impls, threads, f"{title}, {dtype}, NCHW")
            lines += table + [""]
            all_ratios += ratios
    if {c.suite for c in conv} >= {"public", "extra"}:
        gm = geomean(all_ratios)
        if gm is not None:
            lines += [f"All conv2d layers: geometric mean ratio **{gm:.2f}**.", ""]
    memory = [c for c in cases if c.kind == "memory"]
    if memory:
        table, _ = _memory_table(memory, impls, threads)
        lines += table + [""]
    lines += [("ratio = fastconv time / fastest peer's time (below 1: fastconv is faster; "
               "bold: slower). conv2d peers are PyTorch and ONNX Runtime; for ReLU and pooling "
               "NumPy is a peer too. All implementations allocate their output except ReLU out "
               "of place, where fastconv and NumPy write into a preallocated `out` and "
               "`torch.relu` (no `out=`) allocates. PyTorch CL = channels_last input (converted "
               "once, outside the timing).")]
    notes = _notes(cases)
    other = (load or {}).get("other_load")
    if other is not None:
        text = (f"Other processes used {100 * other:.0f}% of the machine's CPU time during "
                f"the {load['seconds']:.0f} s of timing")
        notes.append(f"- **{text}: timings are inflated and less reliable; rerun on a quiet "
                     "machine.**" if other > 0.10 else f"- {text}.")
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def _as_json(cases, threads, dtype, rounds):
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "threads": threads, "dtype": dtype, "rounds": rounds,
        "versions": _versions(), "peak_gflops": peak_gflops(dtype, threads),
        "cases": [{"kind": c.kind, "name": c.name, "detail": c.detail, "suite": c.suite,
                   "dtype": c.dtype, "flops": c.flops, "nbytes": c.nbytes,
                   "seconds": {k: (v if math.isfinite(v) else None)
                               for k, v in c.seconds.items()},
                   "missing": c.missing, "mismatch": c.mismatch, "ratio": _ratio(c)}
                  for c in cases],
    }


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser):
    """Add the comparison's options to ``parser`` (for ``fastconv bench`` and compare.py)."""
    parser.add_argument("--peers", action="store_true",
                        help="also time PyTorch and ONNX Runtime (and NumPy for ReLU/pooling) "
                             "when installed")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="threads for every implementation (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="interleaved rounds; the minimum is reported (default %(default)s)")
    parser.add_argument("--layers", default=None,
                        help="comma-separated layer names (public or extra) to run")
    parser.add_argument("--extra", action="store_true",
                        help="add ~12 layers outside the public suite (nobody tuned for them)")
    parser.add_argument("--ops", default="conv,relu,pool",
                        help="which ops to time, from conv,relu,pool (default %(default)s)")
    parser.add_argument("--layers-file", default=None,
                        help="layers.json of the public suite (default: ../shared/layers.json, "
                             "bench/layers.json, or the built-in copy)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="back-to-back timed calls per implementation and round "
                             "(default %(default)s)")
    parser.add_argument("--pause", type=float, default=0.005,
                        help="seconds of sleep between timed blocks (default %(default)s)")
    parser.add_argument("--output", default=None, help="also write the markdown to this file")
    parser.add_argument("--json", default=None, help="write raw timings as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _select_layers(args):
    public = load_layers(args.layers_file)
    extra = extra_layers()
    if args.layers:
        wanted = [name.strip() for name in args.layers.split(",") if name.strip()]
        known = {layer.name: layer for layer in public + extra}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise SystemExit(f"unknown layer(s): {', '.join(unknown)}; known: "
                             f"{', '.join(known)}")
        return [known[name] for name in wanted]
    return public + (extra if args.extra else [])


def run(args):
    """Build the cases, check them, time them and return the markdown report."""
    if min(args.threads, args.rounds, args.repeat) < 1:
        raise SystemExit("--threads, --rounds and --repeat must be >= 1")
    ops = {op.strip() for op in args.ops.split(",") if op.strip()}
    if not ops <= {"conv", "relu", "pool"}:
        raise SystemExit(f"--ops takes conv, relu, pool; got {args.ops!r}")
    dtype = args.dtype
    if args.peers:
        set_peer_threads(args.threads)
    conv_impls = ["fastconv"] + (["torch", "onnxruntime"] if args.peers else [])
    cases = []
    if "conv" in ops:
        cases += _conv_cases(_select_layers(args), dtype, conv_impls, args.threads)
    if "relu" in ops:
        cases += _relu_cases(dtype, ["fastconv"] + (["numpy", "torch"] if args.peers else []),
                             args.threads)
    if "pool" in ops:
        pool_impls = ["fastconv"] + (["torch", "torch_channels_last", "onnxruntime"]
                                     if args.peers else [])
        cases += _pool_cases(dtype, pool_impls, args.threads)
    for case in cases:
        _check(case)
    for case in cases:
        for impl, diff in case.mismatch.items():
            print(f"[fastconv bench] WARNING: {IMPL_LABELS[impl]} disagrees with fastconv on "
                  f"{case.name} (max |diff| {diff:.3g})", file=sys.stderr)
    load = measure(cases, args.rounds, args.pause, args.repeat, progress=not args.quiet)
    impls = ["fastconv", "numpy", "torch", "torch_channels_last", "onnxruntime"]
    report = render(cases, impls, args.threads, dtype, args.rounds, args.repeat, args.peers,
                    load)
    if args.output:
        Path(args.output).write_text(report)
    if args.json:
        data = _as_json(cases, args.threads, dtype, args.rounds)
        data.update(repeat=args.repeat, timing=load)
        Path(args.json).write_text(json.dumps(data, indent=1))
    return report


def main(argv=None):
    """``python bench/compare.py [--peers] [--dtype ...] [--threads 2] [--rounds N] ...``"""
    parser = argparse.ArgumentParser(
        prog="fastconv bench",
        description="Time fastconv (and with --peers PyTorch and ONNX Runtime) side by side: "
                    "interleaved rounds, minimum of rounds, same thread count; prints a "
                    "markdown table. Hold a lock (e.g. flock) so nothing else runs meanwhile.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    sys.stdout.write(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
