"""max_pool2d and ReLU benchmarks (memory-bound; ``extra_info`` carries GB/s moved).

- max_pool2d on 1x64x224x224 float32 NCHW, 2x2/2 and 3x3/2 pad 1: fastconv, the NumPy reference,
  PyTorch on NCHW and on channels_last data (converted once, outside the timing), ONNX Runtime.
- ReLU on a 1x64x224x224 feature map and on a 64 MiB array, in place and out of place:
  fastconv, ``np.maximum(x, 0, out=...)`` and ``torch.relu`` / ``torch.relu_``. Out of place,
  fastconv and NumPy write into a preallocated ``out``; ``torch.relu`` has no ``out=`` and
  allocates.

The fastconv cases skip cleanly while ``fastconv.relu`` / ``fastconv.max_pool2d`` raise
NotImplementedError.
"""

import numpy as np
import pytest

from fastconv import _bench

DTYPE = "float32"
POOL_IMPLS = ("fastconv", "numpy", "torch", "torch_channels_last", "onnxruntime")
RELU_IMPLS = ("fastconv", "numpy", "torch")


@pytest.fixture(scope="module")
def pool_input():
    return np.random.default_rng(1).standard_normal(_bench.POOL_SHAPE).astype(DTYPE)


@pytest.mark.parametrize("impl", POOL_IMPLS)
@pytest.mark.parametrize("config", _bench.POOL_CONFIGS, ids=lambda c: c[0].replace(" ", "_"))
def test_max_pool2d(benchmark, pool_input, config, impl, make_call, record_rate):
    label, kernel, stride, padding = config
    benchmark.group = f"max_pool2d 1x64x224x224 {label} {DTYPE}"
    call = make_call(_bench.POOL_FACTORIES, impl, pool_input, kernel, stride, padding)
    y = call()
    benchmark(call)
    nbytes = pool_input.nbytes + np.asarray(y).nbytes
    record_rate(benchmark, impl, DTYPE, nbytes=nbytes)


@pytest.mark.parametrize("impl", RELU_IMPLS)
@pytest.mark.parametrize("mode", ["out_of_place", "in_place"])
@pytest.mark.parametrize("size", list(_bench.relu_shapes(DTYPE)),
                         ids=lambda s: s.replace(" ", ""))
def test_relu(benchmark, size, mode, impl, make_call, record_rate):
    shape = _bench.relu_shapes(DTYPE)[size]
    benchmark.group = f"relu {size} {mode.replace('_', ' ')} {DTYPE}"
    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32).astype(DTYPE)
    out = None if mode == "in_place" else np.empty_like(x)
    call = make_call(_bench.RELU_FACTORIES, impl, x, out)
    call()
    benchmark(call)
    record_rate(benchmark, impl, DTYPE, nbytes=2 * x.nbytes)
