#!/usr/bin/env python
"""Edge detection with fastconv, step by step: the seed explainer's ideas, checked in code.

Run ``python examples/edge_detection.py`` (NumPy and fastconv only; add ``--plot out.png`` to
also save a picture of the filters and their feature maps when matplotlib is installed).

1. The seed's 4x4 example: cross-correlation (what CNNs call convolution) vs true convolution.
2. The formula O(i, j) = sum_m sum_n I(i*S + m, j*S + n) * K(m, n) + b as a NumPy loop,
   compared with ``fastconv.conv2d``.
3. Horizontal, vertical and diagonal edge filters on a small picture; ReLU keeps one polarity.
4. Many filters and many channels: O_k = sum_c sum_m sum_n I_c * K_kc + b_k (the seed's RGB
   layer: 224x224x3 -> 224x224x64 with 'same' padding).
5. Stride, padding and the output size O = floor((H + 2P - F) / S) + 1.
6. Max pooling.
7. Receptive field: computed by the layer arithmetic and measured by poking single pixels.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import fastconv
except ImportError:  # a source checkout built in place
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastconv
from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential


def show(title, array):
    print(f"{title}:")
    text = np.array2string(np.asarray(array), precision=3, suppress_small=True,
                           max_line_width=100)
    print("    " + text.replace("\n", "\n    "))


def section(title):
    print(f"\n{'=' * 4} {title} {'=' * max(4, 90 - len(title))}")


def correlate_loop(image, kernel, stride=1, bias=0.0):
    """The seed's formula as plain loops: no padding, no flipping."""
    kh, kw = kernel.shape
    out_h = (image.shape[0] - kh) // stride + 1
    out_w = (image.shape[1] - kw) // stride + 1
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = image[i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[i, j] = np.sum(window * kernel) + bias
    return out


def step_seed_example():
    section("1. The seed's 4x4 example")
    image = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    horizontal = np.array([[1, 1], [-1, -1]], np.float32)
    diagonal = np.array([[0, 1], [1, 0]], np.float32)
    show("image", image)
    h_map = fastconv.correlate2d(image, horizontal)
    d_map = fastconv.correlate2d(image, diagonal)
    show("horizontal edge [[1, 1], [-1, -1]] (cross-correlation)", h_map)
    show("diagonal [[0, 1], [1, 0]]", d_map)
    flipped = fastconv.convolve2d(image, horizontal)
    show("true convolution flips the kernel first: convolve2d(image, horizontal)", flipped)
    print("    Each row of the image grows by 4, so 'top row minus bottom row' of any 2x2 window is"
          "\n    (a + b) - (a + 4 + b + 4) = -8 everywhere; flipping the kernel turns it into +8."
          "\n    (The seed prints -8 for its NumPy loop, which flips, and a 3x3 of 8 for the"
          "\n    diagonal filter: both are wrong; the values above are the true ones.)")
    assert (h_map == -8).all() and (flipped == 8).all()
    assert (d_map == [[7, 9, 11], [15, 17, 19], [23, 25, 27]]).all()


def step_formula():
    section("2. The formula as a loop vs fastconv.conv2d")
    rng = np.random.default_rng(0)
    image = rng.random((7, 9))
    kernel = rng.standard_normal((3, 3))
    for stride in (1, 2):
        loop = correlate_loop(image, kernel, stride, bias=0.5)
        fast = fastconv.conv2d(image[None, None], kernel[None, None], bias=[0.5],
                               stride=stride)[0, 0]
        print(f"    stride {stride}: loop and conv2d agree on a {loop.shape} map: "
              f"max |difference| = {np.abs(loop - fast).max():.1e}")
        assert np.allclose(loop, fast)


def edge_picture():
    """A 12x12 picture: a bright square and a bright diagonal band on black."""
    image = np.zeros((12, 12), np.float32)
    image[2:6, 2:6] = 1.0
    for k in range(12):
        if 0 <= 11 - k < 12 and k >= 5:
            image[k, 16 - k:min(12, 18 - k)] = 1.0
    return image


FILTERS = {
    "horizontal edge (bright above dark)": [[1, 1, 1], [0, 0, 0], [-1, -1, -1]],
    "vertical edge (bright left of dark)": [[1, 0, -1], [1, 0, -1], [1, 0, -1]],
    "diagonal edge (bright above-left)": [[2, 1, 0], [1, 0, -1], [0, -1, -2]],
}


def step_edges():
    section("3. Edge filters: which edges does each one find?")
    image = edge_picture()
    show("picture (1 = bright)", image.astype(int))
    weight = np.array(list(FILTERS.values()), np.float32)[:, None]  # (3, 1, 3, 3)
    maps = fastconv.conv2d(image[None, None], weight, padding=1)[0]  # (3, 12, 12)
    for name, fmap in zip(FILTERS, maps):
        show(f"{name}, after ReLU (the negative side is the opposite edge)",
             fastconv.relu(fmap).astype(int))
    # The square's bottom edge lights up the horizontal filter, its right edge the vertical one.
    relu = fastconv.relu(maps)
    assert relu[0, 5, 3] > 0 and relu[0, 1, 3] == 0  # bottom edge yes, top edge no
    assert relu[1, 3, 5] > 0 and relu[1, 3, 1] == 0  # right edge yes, left edge no


def step_channels():
    section("4. Many filters over many channels: the seed's RGB layer")
    rng = np.random.default_rng(1)
    rgb = rng.random((1, 3, 224, 224), np.float32)  # (N, C, H, W)
    weight = rng.standard_normal((64, 3, 3, 3)).astype(np.float32)  # (F, C, KH, KW)
    bias = rng.standard_normal(64).astype(np.float32)
    maps = fastconv.conv2d(rgb, weight, bias, padding="same")
    print(f"    x {rgb.shape} * weight {weight.shape} + bias {bias.shape} -> {maps.shape}")
    k, i, j = 5, 100, 37  # check one output value by the formula
    window = np.pad(rgb[0], ((0, 0), (1, 1), (1, 1)))[:, i:i + 3, j:j + 3]
    by_hand = float(np.sum(window * weight[k]) + bias[k])
    print(f"    O_{k}({i}, {j}) = sum_c sum_m sum_n I * K + b = {by_hand:.4f}; conv2d gives "
          f"{maps[0, k, i, j]:.4f}")
    assert abs(by_hand - maps[0, k, i, j]) < 1e-3


def step_output_size():
    section("5. Stride, padding and the output size O = floor((H + 2P - F) / S) + 1")
    print(f"    {'H':>4} {'F':>3} {'P':>3} {'S':>3}   formula   output_size   conv2d shape")
    for h, f, p, s in [(4, 2, 0, 1), (7, 3, 0, 1), (7, 3, 1, 1), (7, 3, 1, 2), (224, 3, 1, 1),
                       (224, 7, 3, 2), (5, 3, 2, 3)]:
        formula = (h + 2 * p - f) // s + 1
        size = fastconv.output_size(h, f, stride=s, padding=p)  # an int for an int size
        shape = fastconv.conv2d(np.zeros((1, 1, h, h), np.float32),
                                np.zeros((1, 1, f, f), np.float32), stride=s, padding=p).shape
        print(f"    {h:>4} {f:>3} {p:>3} {s:>3}   {formula:>7}   {size!s:>11}   {shape}")
        assert size == formula and shape[2:] == (formula, formula)
    print("    padding='same' keeps ceil(H / S): e.g. 224 with a 3x3 filter stays 224.")


def step_pooling():
    section("6. Max pooling: the strongest response in each 2x2 window")
    fmap = np.array([[1, 3, 2, 0], [4, 6, 5, 1], [0, 2, 9, 8], [1, 1, 7, 3]], np.float32)
    show("feature map", fmap)
    pooled = fastconv.max_pool2d(fmap[None, None], 2)[0, 0]
    show("max_pool2d(kernel 2, stride 2)", pooled)
    assert (pooled == [[6, 5], [2, 9]]).all()


def step_receptive_field():
    section("7. Receptive field: how much of the input one output sees")
    stack = Sequential({"conv1": Conv2D(np.ones((1, 1, 3, 3), np.float32)), "relu1": ReLU(),
                        "pool1": MaxPool2D(2),
                        "conv2": Conv2D(np.ones((1, 1, 3, 3), np.float32)), "relu2": ReLU(),
                        "pool2": MaxPool2D(2)})
    size = 32
    print(stack.summary((1, 1, size, size)))
    rf_formula = stack.summary((1, 1, size, size)).rows[-1].receptive_field[0]
    # Measure: which input pixels change the output at (2, 2)? Poke them one at a time.
    out_shape = stack.output_shape((1, 1, size, size))
    batch = np.zeros((size * size, 1, size, size), np.float32)
    batch[np.arange(size * size), 0, np.arange(size * size) // size,
          np.arange(size * size) % size] = 1.0  # one image per input pixel
    outputs = stack(batch)  # (size * size, 1, oh, ow)
    seen = (outputs[:, 0, 2, 2] > 0).reshape(size, size)
    rows, cols = np.nonzero(seen)
    measured = rows.max() - rows.min() + 1
    print(f"    output {out_shape[2:]}; pixels that reach output (2, 2): rows {rows.min()}.."
          f"{rows.max()}, columns {cols.min()}..{cols.max()} -> {measured}x"
          f"{cols.max() - cols.min() + 1}; the layer arithmetic says {rf_formula}")
    assert measured == rf_formula


def save_plot(path):
    try:
        from fastconv import viz
    except ImportError as exc:
        print(f"--plot skipped: {exc}")
        return
    image = edge_picture()
    weight = np.array(list(FILTERS.values()), np.float32)[:, None]
    stack = Sequential({"edges": Conv2D(weight, padding=1), "relu": ReLU()})
    maps = {"picture": image[None], **stack.feature_maps(image[None])}
    names = [name.split(" (")[0] for name in FILTERS]
    try:
        fig = viz.plot_feature_maps(maps, titles={"0:edges": names, "1:relu": names},
                                    suptitle="edge filters and their feature maps")
    except ImportError as exc:
        print(f"--plot skipped: {exc}")
        return
    fig.savefig(path)
    print(f"\nwrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Edge detection with fastconv, step by step.")
    parser.add_argument("--plot", metavar="PNG", help="also save a picture (needs matplotlib)")
    args = parser.parse_args(argv)
    step_seed_example()
    step_formula()
    step_edges()
    step_channels()
    step_output_size()
    step_pooling()
    step_receptive_field()
    if args.plot:
        save_plot(args.plot)
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
