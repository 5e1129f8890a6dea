#!/usr/bin/env python
"""Measure the speed targets that are ratios of fastconv to itself (issue 3, items 5, 7, 8, 10):

- NHWC vs NCHW, 1 thread, public suite: time of ``layout="NHWC"`` / time of NCHW;
- fusion, 2 threads: ``Sequential([Conv2D, ReLU, MaxPool2D(2)])`` vs the three functional
  calls, and ``conv2d(activation="relu")`` vs ``conv2d`` + ``relu``, on the seed layer and
  resnet_56;
- per-call overhead: the seed's 4x4 example with two 2x2 filters (and PyTorch's, if installed);
- scaling: 1 vs 2 threads on the heavy 3x3 layers (bits are equal, tests check that).

Interleaved rounds, minimum of rounds (fastconv._bench.measure)::

    OPENBLAS_NUM_THREADS=1 python bench/targets.py

Run it on a quiet machine; NumPy's OpenBLAS threads would share the cores otherwise.
"""

import sys
from pathlib import Path

import numpy as np

try:
    import fastconv
except ImportError:  # a source checkout built in place
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastconv
from fastconv import _bench
from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential

HEAVY = ("resnet_56_c64_k3", "resnet_28_c128_k3", "resnet_14_c256_k3", "cifar_b16_32_c32to64")
FUSED = ("seed_rgb_224_c3to64_k3", "resnet_56_c64_k3")


def _case(name, calls):
    case = _bench.Case("conv", name, "", "float32", "targets")
    case.calls = calls
    return case


def _layer_args(layer):
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                groups=layer.groups)


def nhwc_cases(layers):
    cases = []
    for layer in layers:
        x, w = _bench.conv_data(layer, np.float32)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        kw = _layer_args(layer)
        cases.append(_case(layer.name, {
            "NCHW": lambda x=x, w=w, kw=kw: fastconv.conv2d(x, w, num_threads=1, **kw),
            "NHWC": lambda x=x_nhwc, w=w, kw=kw: fastconv.conv2d(x, w, layout="NHWC",
                                                                 num_threads=1, **kw),
        }))
    return cases


def fusion_cases(layers):
    cases = []
    for layer in layers:
        x, w = _bench.conv_data(layer, np.float32)
        b = np.linspace(-0.5, 0.5, layer.f, dtype=np.float32)
        net = Sequential([Conv2D(w, b, padding=layer.padding), ReLU(), MaxPool2D(2)])

        def three(x=x, w=w, b=b, p=layer.padding):
            return fastconv.max_pool2d(fastconv.relu(fastconv.conv2d(x, w, b, padding=p)), 2)

        def two(x=x, w=w, b=b, p=layer.padding):
            return fastconv.relu(fastconv.conv2d(x, w, b, padding=p))

        cases.append(_case(layer.name, {
            "Sequential": lambda x=x, net=net: net(x),
            "3 calls": three,
            "conv2d relu": lambda x=x, w=w, b=b, p=layer.padding: fastconv.conv2d(
                x, w, b, padding=p, activation="relu"),
            "conv2d + relu": two,
        }))
    return cases


def scaling_cases(layers):
    cases = []
    for layer in layers:
        x, w = _bench.conv_data(layer, np.float32)
        kw = _layer_args(layer)
        cases.append(_case(layer.name, {
            "1 thread": lambda x=x, w=w, kw=kw: fastconv.conv2d(x, w, num_threads=1, **kw),
            "2 threads": lambda x=x, w=w, kw=kw: fastconv.conv2d(x, w, num_threads=2, **kw),
        }))
    return cases


def per_call_us(fn):
    return _bench.seconds_per_call(fn, calls=2000, rounds=1) * 1e6


def main():
    layers = {layer.name: layer for layer in _bench.load_layers()}
    print(f"fastconv {fastconv.__version__}, float32")

    nhwc = nhwc_cases(layers.values())
    _bench.measure(nhwc, rounds=10, progress=False)
    ratios = [c.seconds["NHWC"] / c.seconds["NCHW"] for c in nhwc]
    print("\n| layer (1 thread) | NCHW ms | NHWC ms | NHWC / NCHW |\n|---|--:|--:|--:|")
    for case, ratio in zip(nhwc, ratios):
        print(f"| {case.name} | {case.seconds['NCHW'] * 1e3:.3f} | "
              f"{case.seconds['NHWC'] * 1e3:.3f} | {ratio:.2f} |")
    print(f"\nGeometric mean NHWC / NCHW: {_bench.geomean(ratios):.2f}")

    fused = fusion_cases(layers[name] for name in FUSED)
    _bench.measure(fused, rounds=10, progress=False)
    print("\n| layer (2 threads) | Sequential ms | 3 calls ms | ratio | conv2d relu ms | "
          "conv2d + relu ms | ratio |\n|---|--:|--:|--:|--:|--:|--:|")
    for case in fused:
        s = {k: v * 1e3 for k, v in case.seconds.items()}
        print(f"| {case.name} | {s['Sequential']:.3f} | {s['3 calls']:.3f} | "
              f"{s['Sequential'] / s['3 calls']:.2f} | {s['conv2d relu']:.3f} | "
              f"{s['conv2d + relu']:.3f} | {s['conv2d relu'] / s['conv2d + relu']:.2f} |")

    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.array([[[[1, 1], [-1, -1]]], [[[0, 1], [1, 0]]]], dtype=np.float32)
    calls = {"fastconv": lambda: fastconv.conv2d(x, w)}
    try:
        import torch
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)

        def torch_call():
            with torch.inference_mode():  # PyTorch's fastest path: no autograd records
                return torch.nn.functional.conv2d(tx, tw)

        calls["PyTorch"] = torch_call
    except ImportError:
        pass
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(10):  # interleaved rounds, the minimum of each
        for name, fn in calls.items():
            best[name] = min(best[name], per_call_us(fn))
    line = "\nPer call, seed 4x4 with two 2x2 filters: " + ", ".join(
        f"{name} {us:.1f} us" for name, us in best.items())
    print(line)

    scaling = scaling_cases(layers[name] for name in HEAVY)
    _bench.measure(scaling, rounds=10, progress=False)
    print("\n| layer | 1 thread ms | 2 threads ms | speed-up |\n|---|--:|--:|--:|")
    for case in scaling:
        one, two = case.seconds["1 thread"], case.seconds["2 threads"]
        print(f"| {case.name} | {one * 1e3:.3f} | {two * 1e3:.3f} | {one / two:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
