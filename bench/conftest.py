"""pytest-benchmark set-up for fastconv's benchmarks.

One benchmark group per op and case, holding fastconv, the NumPy reference and, when installed,
PyTorch and ONNX Runtime, all with the same thread count (``FASTCONV_BENCH_THREADS``, default 2).
``benchmark.extra_info`` carries GF/s and % of peak (conv2d) or GB/s (ReLU, pooling).

    python -m pytest bench --benchmark-only --benchmark-columns=min,median,rounds   # measure
    python -m pytest bench --benchmark-disable -q                                   # smoke run
    python -m pytest bench -m "not slow" ...        # skip the NumPy reference on big layers

Hold ``flock /tmp/fastconv-bench.lock`` while measuring: concurrent timings lie. For claims
against peers use ``bench/compare.py`` (interleaved rounds in one process).

The conv2d layers come from ``../shared/layers.json`` next to the repository when present, else
from ``bench/layers.json`` (a copy).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from fastconv import _bench

SHARED_LAYERS = Path(__file__).parents[1].parent / "shared" / "layers.json"
LOCAL_LAYERS = Path(__file__).parent / "layers.json"
THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", _bench.DEFAULT_THREADS))
# float64 is benchmarked on a few layers only (every layer runs in float32).
FLOAT64_LAYERS = ("seed_rgb_224_c3to64_k3", "resnet_56_c64_k3", "resnet_14_c256_k3",
                  "pointwise_56_c256to64")
# The NumPy reference on layers above this many FLOPs takes ~1 s per call: marked "slow".
SLOW_REFERENCE_FLOPS = 1e9


def bench_layers():
    """The public conv2d suite as :class:`fastconv._bench.ConvLayer` objects."""
    path = SHARED_LAYERS if SHARED_LAYERS.is_file() else LOCAL_LAYERS
    return _bench.load_layers(path)


CONV_IMPLS = ("fastconv", "numpy", "torch", "onnxruntime")


def conv_cases():
    """``pytest.param((layer, dtype, impl))`` for every layer in float32 and a few in float64,
    for each implementation; the NumPy reference on big layers is marked ``slow``."""
    params = []
    for dtype in ("float32", "float64"):
        for layer in bench_layers():
            if dtype == "float64" and layer.name not in FLOAT64_LAYERS:
                continue
            for impl in CONV_IMPLS:
                slow = impl == "numpy" and layer.flops > SLOW_REFERENCE_FLOPS
                params.append(pytest.param((layer, dtype, impl),
                                           id=f"{layer.name}-{dtype}-{impl}",
                                           marks=[pytest.mark.slow] if slow else []))
    return params


def pytest_generate_tests(metafunc):
    if "conv_case" in metafunc.fixturenames:
        metafunc.parametrize("conv_case", conv_cases())


@pytest.fixture(scope="session", autouse=True)
def _peer_threads():
    """PyTorch gets the same thread count as fastconv and ONNX Runtime."""
    _bench.set_peer_threads(THREADS)


@functools.cache
def _conv_data(layer, dtype):
    return _bench.conv_data(layer, dtype)


@pytest.fixture
def conv_data():
    """``conv_data(layer, dtype) -> (x, w)``, cached for the session (do not modify them)."""
    return _conv_data


@pytest.fixture
def make_call():
    """``make_call(factories, impl, *args)``: the implementation's zero-argument call, or a
    clean skip when it cannot run (peer missing, dtype unsupported, op not implemented yet)."""

    def _make(factories, impl, *args):
        try:
            call, _ = factories[impl](*args, THREADS)
        except _bench.Unavailable as exc:
            pytest.skip(str(exc))
        return call

    return _make


def _min_seconds(benchmark):
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: the function ran once, untimed
        return None
    return stats.stats.min


@pytest.fixture
def record_rate():
    """``record_rate(benchmark, impl, dtype, flops=0, nbytes=0)``: fill ``extra_info`` with
    GF/s and % of peak (when flops) or GB/s (when nbytes), from the minimum time."""

    def _record(benchmark, impl, dtype, flops=0, nbytes=0):
        info = benchmark.extra_info
        info.update(impl=impl, dtype=str(np.dtype(dtype)), threads=THREADS)
        seconds = _min_seconds(benchmark)
        if flops:
            peak = _bench.peak_gflops(dtype, THREADS)
            info.update(flops=flops, peak_gflops=peak)
            if seconds:
                gflops = flops / seconds / 1e9
                info.update(gflops=round(gflops, 2), pct_peak=round(100 * gflops / peak, 1))
        if nbytes:
            info.update(bytes=nbytes)
            if seconds:
                info.update(gbytes_per_s=round(nbytes / seconds / 1e9, 2))

    return _record
