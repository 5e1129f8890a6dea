"""The ``fastconv`` command line (also ``python -m fastconv``).

Subcommands:

``fastconv demo``
    The seed's worked example with its true values, then a small layer stack (hand-made edge
    filters -> ReLU -> max pool) on a synthetic image: summary table, feature maps drawn in
    ASCII, and a timing line.
``fastconv info``
    Version, build and run-time configuration (``fastconv.show_config()``).

User mistakes (unknown subcommand, bad option) print one line on stderr and exit with status 2,
without a traceback. Each subcommand is a ``_cmd_<name>(args, out)`` function that writes to
``out`` and returns an exit status, so new subcommands and options (``--out`` PNG, ``--image``)
plug in without touching the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

__all__ = ["main", "build_parser", "UsageError"]

PROG = "fastconv"

# The seed's example: the 4x4 image 1..16 and its two 2x2 filters.
SEED_FILTERS = {
    "horizontal edge": [[1, 1], [-1, -1]],
    "diagonal": [[0, 1], [1, 0]],
}

# Hand-made 3x3 filters of the demo stack, in cross-correlation form (not flipped): each one
# responds positively where the image matches its pattern, and ReLU keeps only that polarity.
DEMO_FILTERS = {
    "horizontal edge": [[1, 1, 1], [0, 0, 0], [-1, -1, -1]],  # bright above dark
    "vertical edge": [[1, 0, -1], [1, 0, -1], [1, 0, -1]],  # bright left of dark
    "diagonal edge": [[2, 1, 0], [1, 0, -1], [0, -1, -2]],  # bright above-left of dark
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],  # dark left of bright
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],  # dark above bright
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],  # dark pixel next to bright ones
}

# Dark to bright; one step per tenth of a map's maximum.
_SHADES = " .:-=+*#%@"


class UsageError(Exception):
    """A mistake of the user's: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become a :class:`UsageError` (one line, no usage dump)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def build_parser():
    """The argument parser of the ``fastconv`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description="fastconv: fast CPU 2-D convolution, ReLU and max "
                     "pooling for NumPy arrays, and a look at the feature maps they make.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the seed's example and feature maps of a small layer stack",
        description="Print the seed's worked example with its true values, then run a small "
                    "layer stack (hand-made edge filters -> ReLU -> max pool) on a synthetic "
                    "image and print its summary, its feature maps and a timing.")
    demo.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                      help="threads per call (default: the OpenMP default)")
    demo.set_defaults(run=_cmd_demo)

    info = commands.add_parser("info", help="version, build and run-time configuration",
                               description="Print fastconv.show_config().")
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"missing command: choose one of demo, info (see '{PROG} --help')")
        return args.run(args, sys.stdout)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastconv demo | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


# --------------------------------------------------------------------------------------------
# info


def _cmd_info(args, out):
    from . import show_config

    show_config(file=out)
    return 0


# --------------------------------------------------------------------------------------------
# demo


def synthetic_image(size=32):
    """A (size, size) float32 image in [0, 1]: a bright square and a '/' diagonal line."""
    image = np.zeros((size, size), np.float32)
    lo, hi = size * 5 // 32, size // 2
    image[lo:hi, lo:hi] = 1.0
    for row in range(size * 14 // 32, size - 1):
        col = (size * 44 // 32) - row
        if 0 <= col < size:
            image[row, col] = 1.0
    return image


def demo_stack(dtype=np.float32):
    """The demo's layer stack and the names of its filters.

    Returns
    -------
    stack : fastconv.layers.Sequential
        ``Conv2D`` with the :data:`DEMO_FILTERS` (padding 1) -> ``ReLU`` -> ``MaxPool2D(2)``,
        for (N, 1, H, W) images.
    filter_names : list of str
        The name of each output channel.
    """
    from .layers import Conv2D, MaxPool2D, ReLU, Sequential

    weight = np.array(list(DEMO_FILTERS.values()), dtype)[:, None]  # (6, 1, 3, 3)
    stack = Sequential({"edges": Conv2D(weight, padding=1), "relu": ReLU(),
                        "pool": MaxPool2D(2)})
    return stack, list(DEMO_FILTERS)


def _format_matrix(matrix, indent="    "):
    """Rows of numbers, right-aligned, integers printed without a decimal point."""
    cells = [[f"{value:g}" for value in row] for row in np.asarray(matrix, np.float64)]
    width = max(len(cell) for row in cells for cell in row)
    return "\n".join(indent + " ".join(cell.rjust(width) for cell in row) for row in cells)


def ascii_map(plane, scale=None):
    """Lines drawing a 2-D map in ASCII shades, two characters per pixel, framed.

    Values are scaled by ``scale`` (default: the map's maximum) into ``" .:-=+*#%@"``;
    values <= 0 are blank.
    """
    plane = np.asarray(plane, np.float64)
    if scale is None:
        scale = float(np.nanmax(plane)) if plane.size else 0.0
    if scale > 0:
        levels = np.clip(np.rint(plane / scale * (len(_SHADES) - 1)), 0, len(_SHADES) - 1)
    else:
        levels = np.zeros(plane.shape)
    levels = np.where(np.isnan(levels), 0, levels).astype(int)
    border = "+" + "-" * (2 * plane.shape[1]) + "+"
    rows = ["|" + "".join(_SHADES[level] * 2 for level in row) + "|" for row in levels]
    return [border] + rows + [border]


def _side_by_side(blocks, titles, gap="  "):
    """Join framed ASCII blocks of equal height left to right, with titles above."""
    widths = [len(block[0]) for block in blocks]
    lines = [gap.join(title[:w].ljust(w) for title, w in zip(titles, widths)).rstrip()]
    for row in zip(*blocks):
        lines.append(gap.join(row))
    return lines


def _demo_seed_example(out, num_threads):
    from . import conv2d, convolve2d

    image = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    weight = np.array(list(SEED_FILTERS.values()), np.float32)[:, None]  # (2, 1, 2, 2)
    maps = conv2d(image[None, None], weight, num_threads=num_threads)  # (1, 2, 3, 3)
    print("1. The seed's example: the 4x4 image with values 1..16", file=out)
    print(_format_matrix(image), file=out)
    print(f"   conv2d(image as {image[None, None].shape}, two 2x2 filters as {weight.shape}) "
          f"-> feature maps {maps.shape}:", file=out)
    for index, (name, kernel) in enumerate(SEED_FILTERS.items()):
        print(f"   {name} filter {kernel}:", file=out)
        print(_format_matrix(maps[0, index]), file=out)
    flipped = convolve2d(image, weight[0, 0])
    print("   conv2d, like every CNN library, computes cross-correlation: the kernel is not "
          "flipped.\n   True convolution flips it first: fastconv.convolve2d(image, "
          f"{SEED_FILTERS['horizontal edge']}) gives {flipped[0, 0]:+g}\n   everywhere instead "
          f"of {maps[0, 0, 0, 0]:g} (the seed's NumPy loop flips the kernel, so it really "
          "returns +8,\n   though the seed prints -8; and the diagonal filter gives the values "
          "above, not 8).", file=out)


def _demo_layer_stack(out, num_threads):
    """Run the demo stack, print what it does; return its feature maps and filter names."""
    from ._validation import resolve_num_threads

    image = synthetic_image(32)
    stack, filter_names = demo_stack()
    x = image[None, None]  # (1, 1, 32, 32)
    print("\n2. Feature maps of a small layer stack", file=out)
    print("   input: a synthetic 32x32 image (a bright square and a '/' line)", file=out)
    print("\n".join("   " + line for line in ascii_map(image, scale=1.0)), file=out)
    print("\n" + "\n".join("   " + line for line in repr(stack).splitlines()), file=out)
    print("   the filters of 'edges', one per output channel (cross-correlation, not flipped):",
          file=out)
    kernels = [_format_matrix(k, indent="").splitlines() for k in DEMO_FILTERS.values()]
    width = max(len(name) for name in filter_names) + 1
    print("   " + " ".join(name.ljust(width) for name in filter_names).rstrip(), file=out)
    for row in zip(*kernels):
        print("   " + " ".join(cells.ljust(width) for cells in row).rstrip(), file=out)
    print("\n" + "\n".join("   " + line for line in str(stack.summary(x.shape)).splitlines()),
          file=out)

    maps = stack.feature_maps(x, num_threads=num_threads)
    pooled = list(maps.values())[-1][0]  # (6, 16, 16)
    print(f"\n   feature maps after ReLU and 2x2 max pooling ({list(maps)[-1]}, "
          f"{pooled.shape[1]}x{pooled.shape[2]} each, shaded by each map's maximum):", file=out)
    per_row = 2
    for start in range(0, len(filter_names), per_row):
        names = filter_names[start:start + per_row]
        blocks = [ascii_map(pooled[start + i]) for i in range(len(names))]
        titles = [f"{name} (max {pooled[start + i].max():g})" for i, name in enumerate(names)]
        print("\n".join("   " + line for line in _side_by_side(blocks, titles)), file=out)

    batch = np.broadcast_to(x, (64,) + x.shape[1:]).copy()
    stack(batch, num_threads=num_threads)  # warm-up (packs the weights for float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        stack(batch, num_threads=num_threads)
        best = min(best, time.perf_counter() - start)
    threads = resolve_num_threads(num_threads)
    print(f"\n   timing: a batch of {batch.shape[0]} images {batch.shape[1:]} -> "
          f"{stack.output_shape(batch.shape)[1:]} in {best * 1e3:.3f} ms\n"
          f"           (best of 5, {threads} thread{'s' if threads > 1 else ''}, "
          "Conv2D + ReLU fused into one conv2d call)", file=out)
    return maps, filter_names


def _cmd_demo(args, out):
    from . import __version__

    print(f"fastconv {__version__} demo\n", file=out)
    _demo_seed_example(out, args.threads)
    _demo_layer_stack(out, args.threads)  # its feature maps are what a PNG writer would draw
    return 0
