"""conv2d benchmarks: one group per layer and dtype with fastconv, the NumPy reference, PyTorch
and ONNX Runtime (peers skipped when not installed; ONNX Runtime has no float64 Conv).

Layers: ``../shared/layers.json`` (else ``bench/layers.json``), every layer in float32 and a few
in float64 (see ``conftest.py``). ``extra_info``: GF/s and % of peak from the minimum time.
"""

from fastconv import _bench


def test_conv2d(benchmark, conv_case, conv_data, make_call, record_rate):
    layer, dtype, impl = conv_case
    benchmark.group = f"conv2d {layer.name} {dtype}"
    x, w = conv_data(layer, dtype)
    call = make_call(_bench.CONV_FACTORIES, impl, layer, x, w)
    call()  # warm-up outside the timing (oneDNN / ORT prepare their kernels on first use)
    benchmark(call)
    record_rate(benchmark, impl, dtype, flops=layer.flops)
