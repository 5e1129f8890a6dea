#!/usr/bin/env python
"""fastconv against PyTorch and ONNX Runtime on layers neither benchmark suite holds.

The suites (``bench/compare.py --extra``) have square kernels, strides and paddings; this
scan adds shapes from well-known networks that they miss (Inception's 1x7 and 7x1, AlexNet's
11x11 stride 4, ResNet-50's 1x1 layers, batch-8 3x3 layers, dilation 4, channel multipliers,
rectangular maps, one-channel and one-filter layers), to find where fastconv falls behind::

    python bench/scan_layers.py                       # every layer, 2 threads
    python bench/scan_layers.py --threads 1 --layers incep_7x1,alex_k11_s4
    python bench/scan_layers.py --random 21 --count 40   # 40 random layers drawn from seed 21

Per layer: the minimum over interleaved rounds (order rotated, a 5 ms pause before each block
so idle threads stop spinning) of fastconv, PyTorch and ONNX Runtime (spinning off), the
ratio fastconv / faster peer, and fastconv's largest error relative to PyTorch's largest
output. A row is marked ``<<<`` above 1.2. Run it on a quiet machine.
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

try:
    from fastconv import _bench
except ImportError:  # a source checkout built in place (setup.py build_ext --inplace)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fastconv import _bench
import fastconv

# name: (N, C, H, W, F, (KH, KW), (stride h, w), (padding h, w), dilation, groups)
LAYERS = {
    "incep_1x7": (1, 128, 17, 17, 128, (1, 7), (1, 1), (0, 3), 1, 1),
    "incep_7x1": (1, 128, 17, 17, 192, (7, 1), (1, 1), (3, 0), 1, 1),
    "r50_1x1_s2_56": (1, 256, 56, 56, 512, (1, 1), (2, 2), (0, 0), 1, 1),
    "r50_1x1_56_c64to256": (1, 64, 56, 56, 256, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_28_c512to128": (1, 512, 28, 28, 128, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_28_c128to512": (1, 128, 28, 28, 512, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_14_c1024to256": (1, 1024, 14, 14, 256, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_14_c256to1024": (1, 256, 14, 14, 1024, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_14_c1024to256_b4": (4, 1024, 14, 14, 256, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_7_c512to2048": (1, 512, 7, 7, 2048, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_7_c2048to512": (1, 2048, 7, 7, 512, (1, 1), (1, 1), (0, 0), 1, 1),
    "r50_1x1_7_c512to2048_b8": (8, 512, 7, 7, 2048, (1, 1), (1, 1), (0, 0), 1, 1),
    "k3_7_c512": (1, 512, 7, 7, 512, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_7_c512_b8": (8, 512, 7, 7, 512, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_14_c256_b8": (8, 256, 14, 14, 256, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_28_c128_b8": (8, 128, 28, 28, 128, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_56_c64_b8": (8, 64, 56, 56, 64, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_4_c256": (1, 256, 4, 4, 256, (3, 3), (1, 1), (1, 1), 1, 1),
    "k3_2_c64_b8": (8, 64, 2, 2, 64, (3, 3), (1, 1), (1, 1), 1, 1),
    "unet_256_c32": (1, 32, 256, 256, 32, (3, 3), (1, 1), (1, 1), 1, 1),
    "dil4_56_c64": (1, 64, 56, 56, 64, (3, 3), (1, 1), (4, 4), 4, 1),
    "alex_k11_s4": (1, 3, 227, 227, 96, (11, 11), (4, 4), (0, 0), 1, 1),
    "alex_k5_27_c96to256": (1, 96, 27, 27, 256, (5, 5), (1, 1), (2, 2), 1, 1),
    "k5_s3_63": (1, 32, 63, 63, 48, (5, 5), (3, 3), (2, 2), 1, 1),
    "k2_s2_56": (1, 64, 56, 56, 128, (2, 2), (2, 2), (0, 0), 1, 1),
    "k4_s2_32": (1, 64, 32, 32, 128, (4, 4), (2, 2), (1, 1), 1, 1),
    "k5_14_b32": (32, 32, 14, 14, 64, (5, 5), (1, 1), (2, 2), 1, 1),
    "depthwise_mult2_56": (1, 32, 56, 56, 64, (3, 3), (1, 1), (1, 1), 1, 32),
    "depthwise_s2_112": (1, 64, 112, 112, 64, (3, 3), (2, 2), (1, 1), 1, 64),
    "depthwise_k7_28": (1, 96, 28, 28, 96, (7, 7), (1, 1), (3, 3), 1, 96),
    "groups2_28": (1, 128, 28, 28, 128, (3, 3), (1, 1), (1, 1), 1, 2),
    "resnext_g32_56": (1, 128, 56, 56, 128, (3, 3), (1, 1), (1, 1), 1, 32),
    "stride_1x2_40x96": (1, 32, 40, 96, 64, (3, 3), (1, 2), (1, 1), 1, 1),
    "rect_33x71_c17to29": (2, 17, 33, 71, 29, (3, 3), (1, 1), (1, 1), 1, 1),
    "odd_45_c13to19_b3": (3, 13, 45, 45, 19, (3, 3), (1, 1), (1, 1), 1, 1),
    "rgb_128_c3to16_b4": (4, 3, 128, 128, 16, (3, 3), (1, 1), (1, 1), 1, 1),
    "c1_to_1_512": (1, 1, 512, 512, 1, (3, 3), (1, 1), (1, 1), 1, 1),
    "c16_to_3_128": (1, 16, 128, 128, 3, (3, 3), (1, 1), (1, 1), 1, 1),
    "f1_56_c64": (1, 64, 56, 56, 1, (3, 3), (1, 1), (1, 1), 1, 1),
    "k1_224_c8": (1, 8, 224, 224, 8, (1, 1), (1, 1), (0, 0), 1, 1),
    "k1_pad1_28": (1, 64, 28, 28, 64, (1, 1), (1, 1), (1, 1), 1, 1),
}


def random_layers(seed, count):
    """``count`` random layers, the same for the same ``seed``: batch 1-64, 1x1 to 7x7 kernels,
    stride 1-2, dilation 1-2, 3-256 input channels, groups 1-4 or depthwise, 2-600 MFLOP each."""
    rng = random.Random(seed)
    layers = {}
    while len(layers) < count:
        n = rng.choice([1, 1, 1, 2, 4, 8, 16, 32, 64])
        k = rng.choice([1, 1, 3, 3, 3, 5, 7])
        s = rng.choice([1, 1, 1, 2])
        d = rng.choice([1, 1, 1, 2]) if k > 1 else 1
        hw = rng.choice([7, 13, 14, 17, 28, 31, 56, 64, 112])
        g = rng.choice([1, 1, 1, 1, 2, 4, "depthwise"])
        c = rng.choice([3, 8, 16, 20, 24, 32, 40, 48, 64, 72, 96, 128, 160, 200, 256])
        f = rng.choice([8, 16, 24, 32, 40, 48, 64, 96, 100, 128, 160, 256])
        if g == "depthwise":
            g = c
            f = c * rng.choice([1, 1, 2])
        if c % g or f % g:
            continue
        p = (d * (k - 1)) // 2
        out_hw = (hw + 2 * p - d * (k - 1) - 1) // s + 1
        if out_hw < 1:
            continue
        flops = 2 * n * f * out_hw * out_hw * (c // g) * k * k
        if not 2e6 <= flops <= 6e8:
            continue
        layers[f"r{seed}_{len(layers)}"] = (n, c, hw, hw, f, (k, k), (s, s), (p, p), d, g)
    return layers


def _callers(x, w, geometry, threads):
    """``{name: call}`` for fastconv, PyTorch and ONNX Runtime (the peers that are installed)."""
    (kh, kw), stride, padding, dilation, groups = geometry
    calls = {"fastconv": lambda: fastconv.conv2d(x, w, stride=stride, padding=padding,
                                                  dilation=dilation, groups=groups,
                                                  num_threads=threads)}
    try:
        torch = _bench._import_torch()
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def torch_call():
            with torch.inference_mode():
                return torch.nn.functional.conv2d(xt, wt, None, stride, padding, dilation,
                                                  groups)

        calls["torch"] = torch_call
    except _bench.Unavailable:
        pass
    try:
        attrs = dict(kernel_shape=[kh, kw], strides=list(stride),
                     pads=[padding[0], padding[1], padding[0], padding[1]],
                     dilations=[dilation, dilation], group=groups)
        session = _bench._ort_session(_bench._ort_model("Conv", x, attrs, [w]), threads)
        calls["onnxruntime"] = _bench._ort_runner(session, x)[0]
    except _bench.Unavailable:
        pass
    return calls


def scan(layers, threads, rounds):
    _bench.set_peer_threads(threads)
    ratios = []
    print("| layer | GFLOP | fastconv ms | fastconv GF/s | PyTorch ms | ONNX Runtime ms | ratio "
          "| max error |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, layer in layers.items():
        n, c, h, w_, f, kernel, stride, padding, dilation, groups = layer
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w_), dtype=np.float32)
        w = rng.standard_normal((f, c // groups) + kernel, dtype=np.float32)
        calls = _callers(x, w, (kernel, stride, padding, dilation, groups), threads)
        out = calls["fastconv"]()
        error = math.nan
        if "torch" in calls:
            expected = calls["torch"]().numpy()
            if expected.shape != out.shape:
                raise AssertionError(f"{name}: shape {out.shape}, PyTorch {expected.shape}")
            error = float(np.abs(out - expected).max() / np.abs(expected).max())
        best = dict.fromkeys(calls, math.inf)
        order = list(calls)
        for r in range(rounds):
            for impl in order[r % len(order):] + order[:r % len(order)]:
                time.sleep(0.005)
                for _ in range(3):
                    start = time.perf_counter()
                    calls[impl]()
                    best[impl] = min(best[impl], time.perf_counter() - start)
        gflop = 2 * out.size * w.shape[1] * kernel[0] * kernel[1] / 1e9
        peers = [best[p] for p in ("torch", "onnxruntime") if p in best]
        ratio = best["fastconv"] / min(peers) if peers else math.nan
        if peers:
            ratios.append(ratio)
        cells = [f"{best[p] * 1e3:.3f}" if p in best else "n/a" for p in ("torch", "onnxruntime")]
        print(f"| {name} | {gflop:.3f} | {best['fastconv'] * 1e3:.3f} "
              f"| {gflop / best['fastconv']:.1f} | {cells[0]} | {cells[1]} "
              f"| {ratio:.2f}{' <<<' if ratio > 1.2 else ''} | {error:.1e} |", flush=True)
    if ratios:
        print(f"\ngeometric mean of the ratios: "
              f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f} over {len(ratios)} layers")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", help="comma-separated names (default: all); --list shows them")
    parser.add_argument("--list", action="store_true", help="print the layer names and stop")
    parser.add_argument("--random", type=int, metavar="SEED",
                        help="scan random layers drawn from SEED instead of the named ones")
    parser.add_argument("--count", type=int, default=40, help="how many random layers")
    args = parser.parse_args(argv)
    layers = random_layers(args.random, args.count) if args.random is not None else LAYERS
    if args.list:
        print("\n".join(f"{name} {layer}" for name, layer in layers.items()))
        return 0
    if args.layers:
        names = args.layers.split(",")
        unknown = [name for name in names if name not in layers]
        if unknown:
            parser.error(f"unknown layers {unknown}; --list shows the names")
        layers = {name: layers[name] for name in names}
    scan(layers, args.threads, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
