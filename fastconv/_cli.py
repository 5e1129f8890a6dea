"""The ``fastconv`` command line (also ``python -m fastconv``).

Subcommands:

``fastconv demo [--image PATH] [--out PNG]``
    The seed's worked example with its true values, then a small layer stack (hand-made edge
    filters -> ReLU -> max pool -> seeded random filters -> ReLU -> max pool) on the bundled
    sample image or the user's own: summary table (shapes, parameters, receptive fields),
    ASCII previews, timings, and a PNG grid of the feature maps of every layer.
``fastconv featuremaps IMAGE [--filters a,b,c | --weights W.npy] [--out PNG] [--npz NPZ]``
    Feature maps of an image for named or user-supplied filters, with stride, padding,
    dilation, optional ReLU and max pooling.
``fastconv bench [--peers] ...``
    The speed comparison of ``fastconv._bench`` (quick by default).
``fastconv info``
    Version, build and run-time configuration (``fastconv.show_config()``).

Everything works offline with NumPy alone: PNG files are read and written by
``fastconv._images``; matplotlib (nicer pictures) and Pillow (JPEG) are used when installed.

User mistakes (unknown subcommand, bad option, missing file, unreadable image, unknown filter)
print one line on stderr, without a traceback: status 2 for command-line mistakes, 1 for
problems found while running. Each subcommand is a ``_cmd_<name>(args, out)`` function that
writes to ``out`` and returns an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

__all__ = [
    "DEMO_FILTERS",
    "FILTERS",
    "CommandError",
    "UsageError",
    "build_parser",
    "demo_stack",
    "main",
    "named_filters",
]

PROG = "fastconv"

# The seed's example: the 4x4 image 1..16 and its two 2x2 filters.
SEED_FILTERS = {
    "horizontal edge": [[1, 1], [-1, -1]],
    "diagonal": [[0, 1], [1, 0]],
}

# Named filters for `featuremaps --filters`, in cross-correlation form (not flipped): each one
# responds positively where the image matches its pattern, and ReLU keeps only that polarity.
FILTERS = {
    "horizontal": ([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], "horizontal edge, bright above dark"),
    "vertical": ([[1, 0, -1], [1, 0, -1], [1, 0, -1]], "vertical edge, bright left of dark"),
    "diagonal": ([[2, 1, 0], [1, 0, -1], [0, -1, -2]], "diagonal edge, bright above-left"),
    "anti-diagonal": ([[0, 1, 2], [-1, 0, 1], [-2, -1, 0]], "diagonal edge, bright above-right"),
    "sobel-x": ([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "Sobel d/dx, dark left of bright"),
    "sobel-y": ([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "Sobel d/dy, dark above bright"),
    "scharr-x": ([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]], "Scharr d/dx"),
    "scharr-y": ([[-3, -10, -3], [0, 0, 0], [3, 10, 3]], "Scharr d/dy"),
    "prewitt-x": ([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], "Prewitt d/dx"),
    "prewitt-y": ([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], "Prewitt d/dy"),
    "laplace": ([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "Laplacian, dark pixel among bright"),
    "laplace-8": ([[1, 1, 1], [1, -8, 1], [1, 1, 1]], "Laplacian with diagonals"),
    "sharpen": ([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "identity minus Laplacian"),
    "emboss": ([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], "relief lit from the top left"),
    "box": ([[1 / 9] * 3] * 3, "3x3 mean (blur)"),
    "gaussian": ([[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
                 "3x3 binomial blur"),
    "identity": ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], "the image itself"),
    "seed-horizontal": ([[1, 1], [-1, -1]], "the seed's 2x2 horizontal edge"),
    "seed-diagonal": ([[0, 1], [1, 0]], "the seed's 2x2 diagonal"),
}
_ALIASES = {"horizontal-edge": "horizontal", "vertical-edge": "vertical",
            "diagonal-edge": "diagonal", "laplacian": "laplace", "laplacian-8": "laplace-8",
            "blur": "box", "mean": "box", "gauss": "gaussian", "sobelx": "sobel-x",
            "sobely": "sobel-y"}

# The demo's first layer: hand-made 3x3 filters (names as printed; each is in FILTERS).
DEMO_FILTERS = {
    "horizontal edge": FILTERS["horizontal"][0],  # bright above dark
    "vertical edge": FILTERS["vertical"][0],  # bright left of dark
    "diagonal edge": FILTERS["diagonal"][0],  # bright above-left of dark
    "sobel-x": FILTERS["sobel-x"][0],  # dark left of bright
    "sobel-y": FILTERS["sobel-y"][0],  # dark above bright
    "laplacian": FILTERS["laplace"][0],  # dark pixel next to bright ones
}
DEMO_RANDOM_FILTERS = 8
DEMO_SEED = 0
DEMO_MAX_SIZE = 256

# Dark to bright; one step per tenth of a map's maximum.
_SHADES = " .:-=+*#%@"


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


class CommandError(Exception):
    """A problem found while running a command: one line on stderr, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become a :class:`UsageError` (one line, no usage dump)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# option types


def _int_at_least(minimum):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_max_size = _int_at_least(0)


def _int_list(text, counts, minimum, what):
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if len(values) not in counts or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _stride(text):
    return _int_list(text, (1, 2), 1, "an integer >= 1 or 'H,W'")


def _padding(text):
    if text.strip().lower() in ("same", "valid"):
        return text.strip().lower()
    return _int_list(text, (1, 2, 4), 0, "'same', 'valid', an integer >= 0, 'H,W' or "
                     "'TOP,BOTTOM,LEFT,RIGHT'")


# --------------------------------------------------------------------------------------------
# parser


def build_parser():
    """The argument parser of the ``fastconv`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description="fastconv: fast CPU 2-D convolution, ReLU and max "
                     "pooling for NumPy arrays, and a look at the feature maps they make.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    renderers = ("auto", "builtin", "matplotlib")

    demo = commands.add_parser(
        "demo", help="the seed's example and the feature maps of a small layer stack",
        description="Print the seed's worked example with its true values, then run a small "
                    "layer stack (hand-made edge filters -> ReLU -> max pool -> seeded random "
                    "filters -> ReLU -> max pool) on the bundled sample image (or --image), "
                    "print its summary, previews and timings, and write a PNG grid of the "
                    "feature maps of every layer.")
    demo.add_argument("--image", metavar="PATH",
                      help="your own PNG or JPEG (JPEG needs Pillow: pip install "
                           "fastconv[plots]); converted to gray")
    demo.add_argument("--out", metavar="PNG", default="fastconv_demo.png",
                      help="where to write the picture (default: %(default)s in the current "
                           "directory)")
    demo.add_argument("--no-png", action="store_true", help="do not write a picture")
    demo.add_argument("--max-size", type=_max_size, default=DEMO_MAX_SIZE, metavar="N",
                      help="shrink --image so both sides are <= N pixels (default %(default)s; "
                           "0 keeps the full size)")
    demo.add_argument("--renderer", choices=renderers, default="auto",
                      help="auto: matplotlib when installed, else the built-in PNG writer")
    demo.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                      help="threads per call (default: the OpenMP default)")
    demo.set_defaults(run=_cmd_demo)

    fmaps = commands.add_parser(
        "featuremaps", help="feature maps of an image for chosen filters",
        description="Convolve an image with named filters or a weight file and save the "
                    "feature maps as a PNG grid and/or a .npz archive.",
        epilog="named filters: " + ", ".join(FILTERS) + " (aliases: "
               + ", ".join(f"{a}={n}" for a, n in _ALIASES.items()) + ")")
    fmaps.add_argument("image", metavar="IMAGE",
                       help="a PNG or JPEG file ('sample' for the bundled sample image)")
    which = fmaps.add_mutually_exclusive_group()
    which.add_argument("--filters", metavar="LIST",
                       default="horizontal,vertical,diagonal,sobel-x,sobel-y,laplace",
                       help="comma-separated filter names (default: %(default)s)")
    which.add_argument("--weights", metavar="NPY",
                       help="a .npy file of shape (F, C, KH, KW), (F, KH, KW) or (KH, KW); "
                            "C = 1 reads the image as gray, C = 3 as RGB")
    fmaps.add_argument("--stride", type=_stride, default=1, metavar="S",
                       help="an integer or 'H,W' (default 1)")
    fmaps.add_argument("--padding", type=_padding, default="same", metavar="P",
                       help="'same', 'valid', an integer, 'H,W' or 'T,B,L,R' (default same)")
    fmaps.add_argument("--dilation", type=_stride, default=1, metavar="D",
                       help="an integer or 'H,W' (default 1)")
    fmaps.add_argument("--padding-mode", default="zeros",
                       choices=("zeros", "reflect", "replicate", "circular"))
    fmaps.add_argument("--relu", action="store_true", help="also apply ReLU")
    fmaps.add_argument("--pool", type=_positive_int, metavar="K",
                       help="also apply KxK max pooling with stride K (after ReLU if --relu)")
    fmaps.add_argument("--out", metavar="PNG",
                       help="write a PNG grid (default featuremaps.png when --npz is not given)")
    fmaps.add_argument("--npz", metavar="NPZ", help="write the arrays to a .npz file")
    fmaps.add_argument("--max-size", type=_max_size, default=0, metavar="N",
                       help="shrink the image so both sides are <= N pixels (default 0: no)")
    fmaps.add_argument("--renderer", choices=renderers, default="auto",
                       help="auto: matplotlib when installed, else the built-in PNG writer")
    fmaps.add_argument("--threads", type=_positive_int, default=None, metavar="N")
    fmaps.set_defaults(run=_cmd_featuremaps)

    bench = commands.add_parser(
        "bench", help="time fastconv (and with --peers PyTorch / ONNX Runtime)",
        description="Time fastconv's conv2d, ReLU and max pooling on the public layer suite, "
                    f"quick by default ({BENCH_QUICK_ROUNDS} rounds); --peers adds PyTorch and "
                    "ONNX Runtime when installed. Progress on stderr, a markdown table at the "
                    "end. Run it on a quiet machine.")
    bench_module, bench_problem = _bench_module()
    if bench_module is not None:
        bench_module.add_arguments(bench)
        bench.set_defaults(rounds=BENCH_QUICK_ROUNDS)
    bench.set_defaults(run=_cmd_bench, bench_problem=bench_problem)

    info = commands.add_parser("info", help="version, build and run-time configuration",
                               description="Print fastconv.show_config().")
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from ._images import ImageError

    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "bench_problem", None):  # a missing engine says more
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            raise UsageError("missing command: choose one of demo, featuremaps, bench, info "
                             f"(see '{PROG} --help')")
        return args.run(args, sys.stdout)
    except UsageError as exc:
        _error(exc)
        return 2
    except (CommandError, ImageError, ValueError, TypeError, OSError, MemoryError) as exc:
        # Bad images, files and option values (the library's ValueError/TypeError name the
        # parameter). FASTCONV_DEBUG=1 shows the traceback instead.
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        if os.environ.get("FASTCONV_DEBUG"):
            raise
        _error(exc if str(exc) else type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _error(message):
    lines = str(message).strip().splitlines() or ["unknown error"]
    print(f"{PROG}: error: {lines[0]}", file=sys.stderr)


def _broken_pipe():
    """``fastconv demo | head``: stop quietly."""
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
# bench


BENCH_QUICK_ROUNDS = 5


def _bench_module():
    """``(fastconv._bench, None)``, or ``(None, reason)`` when it is missing or incomplete."""
    try:
        from . import _bench
    except Exception as exc:  # noqa: BLE001  (missing, or broken while someone edits it)
        return None, f"fastconv._bench cannot be imported ({type(exc).__name__}: {exc})"
    if not all(callable(getattr(_bench, name, None)) for name in ("add_arguments", "run")):
        return None, "fastconv._bench has no add_arguments()/run() entry point"
    return _bench, None


def _cmd_bench(args, out):
    if args.bench_problem:
        raise CommandError(f"'fastconv bench' is not available in this build: "
                            f"{args.bench_problem}; see bench/compare.py in the source tree")
    from . import _bench

    try:
        report = _bench.run(args)
    except SystemExit as exc:  # the engine reports bad options this way
        if exc.code in (None, 0):
            return 0
        if isinstance(exc.code, int):
            return exc.code
        raise UsageError(str(exc.code)) from None
    out.write(report)
    return 0


# --------------------------------------------------------------------------------------------
# named filters


def _normalise_name(name):
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    return _ALIASES.get(key, key)


def named_filters(names):
    """The weight array and the names of comma-separated (or listed) named filters.

    Parameters
    ----------
    names : str or list of str
        E.g. ``"sobel-x,sobel-y,laplace"``; see :data:`FILTERS` (aliases such as
        ``laplacian`` are accepted).

    Returns
    -------
    weight : ndarray of float32, shape (F, 1, KH, KW)
    names : list of str
        The canonical names.

    Raises
    ------
    UsageError
        An unknown name, an empty list, or filters of different sizes.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise UsageError("--filters is empty; give comma-separated names, e.g. "
                         "sobel-x,sobel-y,laplace")
    canonical = []
    for name in names:
        key = _normalise_name(name)
        if key not in FILTERS:
            raise UsageError(f"unknown filter {name.strip()!r}; known filters: "
                             f"{', '.join(FILTERS)}")
        canonical.append(key)
    kernels = [np.array(FILTERS[key][0], np.float32) for key in canonical]
    shapes = {k.shape for k in kernels}
    if len(shapes) > 1:
        detail = ", ".join(f"{n} is {k.shape[0]}x{k.shape[1]}" for n, k in zip(canonical, kernels))
        raise UsageError(f"filters in one run must have the same size ({detail})")
    return np.stack(kernels)[:, None], canonical


def _load_weights(path):
    """(F, C, KH, KW) float32 weights from a .npy file, with a one-line error otherwise."""
    from ._images import ImageError

    try:
        weight = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ImageError(f"no such file: {path!r}") from None
    except IsADirectoryError:
        raise ImageError(f"{path!r} is a directory, not a .npy file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"cannot read {path!r} as a .npy array: {exc}") from None
    if not isinstance(weight, np.ndarray):
        raise ImageError(f"{path!r} holds several arrays (a .npz?); --weights needs one .npy "
                         "array")
    if weight.dtype.kind not in "biuf":
        raise ImageError(f"{path!r} has dtype {weight.dtype}; weights must be numbers")
    if weight.ndim == 2:
        weight = weight[None, None]
    elif weight.ndim == 3:
        weight = weight[:, None]
    if weight.ndim != 4 or 0 in weight.shape:
        raise ImageError(f"{path!r} has shape {weight.shape}; expected (F, C, KH, KW), "
                         "(F, KH, KW) or (KH, KW)")
    if weight.shape[1] not in (1, 3):
        raise ImageError(f"{path!r} has C = {weight.shape[1]} input channels (shape "
                         f"{weight.shape}); images give 1 (gray) or 3 (RGB)")
    if not np.isfinite(weight).all():
        raise ImageError(f"{path!r} contains NaN or infinite weights")
    return weight.astype(np.float32)


# --------------------------------------------------------------------------------------------
# text helpers


def _format_matrix(matrix, indent="    "):
    """Rows of numbers, right-aligned, integers printed without a decimal point."""
    cells = [[f"{value:.3g}" for value in row] for row in np.asarray(matrix, np.float64)]
    width = max(len(cell) for row in cells for cell in row)
    return "\n".join(indent + " ".join(cell.rjust(width) for cell in row) for row in cells)


def ascii_map(plane, scale=None):
    """Lines drawing a 2-D map in ASCII shades, two characters per pixel, framed.

    Values are scaled by ``scale`` (default: the map's maximum) into ``" .:-=+*#%@"``;
    values <= 0 are blank.
    """
    plane = np.asarray(plane, np.float64)
    if scale is None:
        finite = plane[np.isfinite(plane)]
        scale = float(finite.max()) if finite.size else 0.0
    if scale > 0:
        with np.errstate(invalid="ignore"):
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


def _shrink(plane, max_side, reduce=np.max):
    """Reduce a 2-D map by an integer factor (block ``reduce``) to at most ``max_side``."""
    factor = -(-max(plane.shape) // max_side)
    if factor <= 1:
        return plane
    h, w = plane.shape[0] // factor, plane.shape[1] // factor
    return reduce(plane[:h * factor, :w * factor].reshape(h, factor, w, factor), axis=(1, 3))


def _indent(text, prefix="   "):
    return "\n".join(prefix + line if line else line for line in str(text).splitlines())


def _best_time(call, repeat=7):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _conv_flops(layer, input_shape):
    """Multiply-adds x 2 of a Conv2D layer on ``input_shape`` (N, C, H, W)."""
    n, f, oh, ow = layer.output_shape(input_shape)
    kh, kw = layer.kernel_size
    return 2.0 * n * f * oh * ow * (layer.in_channels // layer.groups) * kh * kw


# --------------------------------------------------------------------------------------------
# demo


def demo_stack(dtype=np.float32):
    """The demo's layer stack and the names of its filters.

    Returns
    -------
    stack : fastconv.layers.Sequential
        conv1 (the six :data:`DEMO_FILTERS`, 3x3, padding 1) -> relu1 -> pool1 (2x2) -> conv2
        (8 seeded random 3x3 filters over the 6 maps, He init, padding 1) -> relu2 -> pool2,
        for (N, 1, H, W) images. Both convolutions pad by replicating the border, so the edge
        of the picture is not itself an edge.
    filter_names : dict of str to list of str
        The name of each output channel, per feature-map key (``"0:conv1"`` ...).
    """
    from .layers import Conv2D, MaxPool2D, ReLU, Sequential

    weight = np.array(list(DEMO_FILTERS.values()), dtype)[:, None]  # (6, 1, 3, 3)
    conv2 = Conv2D.from_shape(len(DEMO_FILTERS), DEMO_RANDOM_FILTERS, 3, padding=1,
                              padding_mode="replicate", bias=False, seed=DEMO_SEED, dtype=dtype)
    stack = Sequential({"conv1": Conv2D(weight, padding=1, padding_mode="replicate"),
                        "relu1": ReLU(), "pool1": MaxPool2D(2),
                        "conv2": conv2, "relu2": ReLU(), "pool2": MaxPool2D(2)})
    first = list(DEMO_FILTERS)
    second = [f"random {i}" for i in range(DEMO_RANDOM_FILTERS)]
    names = {key: (first if index < 3 else second) for index, key in enumerate(stack.names)}
    return stack, names


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


def _demo_image(args):
    """(H, W) float32 image in [0, 1] and a sentence describing it."""
    from . import _images

    if args.image is None:
        image = _images.sample_image()
        return image, (f"the bundled sample image ({image.shape[1]}x{image.shape[0]} gray: a "
                       "rectangle, a diamond, a ring, letters, a grating and speckle)")
    full = _images.to_gray(_images.read_image(args.image))
    image = _images.downscale(full, args.max_size)
    text = f"{args.image} ({image.shape[1]}x{image.shape[0]} gray"
    if image.shape != full.shape:
        text += f", shrunk from {full.shape[1]}x{full.shape[0]}; --max-size 0 keeps it"
    return image, text + ")"


def _demo_layer_stack(out, args, image, description):
    """Run the demo stack, print what it does; return the maps and titles for the picture."""
    stack, names = demo_stack()
    x = image[None, None]  # (1, 1, H, W)
    keys = stack.names
    print("\n2. Feature maps of a small layer stack", file=out)
    print(f"   input: {description}", file=out)
    preview = _shrink(image, 32, np.mean)
    print(_indent("\n".join(ascii_map(preview, scale=1.0))), file=out)
    print("\n" + _indent(repr(stack)), file=out)
    print("   the filters of 'conv1', one per output channel (cross-correlation, not flipped):",
          file=out)
    kernels = [_format_matrix(k, indent="").splitlines() for k in DEMO_FILTERS.values()]
    width = max(len(name) for name in DEMO_FILTERS) + 1
    print("   " + " ".join(name.ljust(width) for name in DEMO_FILTERS).rstrip(), file=out)
    for row in zip(*kernels):
        print("   " + " ".join(cells.ljust(width) for cells in row).rstrip(), file=out)
    print(f"   'conv2' has {DEMO_RANDOM_FILTERS} random 3x3x{len(DEMO_FILTERS)} filters (He "
          f"init, seed {DEMO_SEED}): each mixes all six edge maps of 'pool1'.", file=out)
    print("\n" + _indent(stack.summary(x.shape)), file=out)
    print("   receptive field: input pixels one output value sees; jump: input pixels between "
          "neighbouring outputs.", file=out)

    maps = stack.feature_maps(x, num_threads=args.threads)
    pooled = maps[keys[2]][0]  # (6, H/2, W/2)
    print(f"\n   feature maps of '{keys[2]}' (after ReLU and 2x2 max pooling, "
          f"{pooled.shape[1]}x{pooled.shape[2]} each, shown at most 16 wide, shaded by each "
          "map's maximum):", file=out)
    per_row = 3
    for start in range(0, len(DEMO_FILTERS), per_row):
        chunk = list(DEMO_FILTERS)[start:start + per_row]
        blocks = [ascii_map(_shrink(pooled[start + i], 16)) for i in range(len(chunk))]
        titles = [f"{name} (max {pooled[start + i].max():.3g})" for i, name in enumerate(chunk)]
        print(_indent("\n".join(_side_by_side(blocks, titles))), file=out)

    titles = {"input": ["input"]}
    titles.update(names)
    return {"input": x[0], **{key: value[0] for key, value in maps.items()}}, titles


def _demo_timing(out, args, image):
    from ._validation import resolve_num_threads
    from .layers import Conv2D

    stack, _ = demo_stack()
    x = image[None, None]
    threads = resolve_num_threads(args.threads)
    print(f"\n3. Timings (best of 7, {threads} thread{'s' if threads > 1 else ''})", file=out)
    rows = []
    for key, layer in zip(stack.names, stack.layers):
        layer(x, num_threads=args.threads)  # warm-up (packs the weights for float32)
        seconds = _best_time(lambda layer=layer, x=x: layer(x, num_threads=args.threads))
        rate = ""
        if isinstance(layer, Conv2D):
            rate = f"{_conv_flops(layer, x.shape) / seconds / 1e9:.1f} GFLOP/s"
        rows.append((key, str(tuple(x.shape)), f"{seconds * 1e3:.3f}", rate))
        x = layer(x, num_threads=args.threads)
    header = ("layer", "input shape", "ms", "")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    print("   " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), file=out)
    for row in rows:
        print("   " + f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
              f"{row[3]}".rstrip(), file=out)
    batch = np.ascontiguousarray(np.broadcast_to(image[None, None], (64, 1) + image.shape))
    stack(batch, num_threads=args.threads)
    best = _best_time(lambda: stack(batch, num_threads=args.threads), repeat=5)
    print(f"   timing: the whole stack on a batch of {batch.shape[0]} images {batch.shape[1:]} "
          f"-> {stack.output_shape(batch.shape)[1:]} in {best * 1e3:.3f} ms\n"
          f"           ({best / batch.shape[0] * 1e6:.0f} us per image; best of 5, "
          f"{threads} thread{'s' if threads > 1 else ''}, each Conv2D + ReLU fused into one "
          "conv2d call)", file=out)


def _save_picture(out, path, maps, titles, renderer, title):
    from . import _images, viz

    used = viz.save_feature_maps(maps, path, renderer=renderer, titles=titles, title=title)
    size = ""
    try:
        width, height, *_ = _images._png_header(_images._read_bytes(path))
        size = f", {width}x{height} pixels"
    except _images.ImageError:
        pass
    print(f"wrote {path} ({used} renderer{size})", file=out)


def _check_renderer(renderer):
    if renderer == "matplotlib":
        from .viz import _have_matplotlib

        if not _have_matplotlib():
            raise UsageError("--renderer matplotlib needs matplotlib: pip install "
                             "fastconv[plots] (or use --renderer builtin)")


def _cmd_demo(args, out):
    from . import __version__

    _check_renderer(args.renderer)
    image, description = _demo_image(args)  # before printing: a bad --image fails cleanly
    if min(image.shape) < 4:
        raise CommandError(f"the image is {image.shape[1]}x{image.shape[0]} pixels; the demo "
                            "stack needs at least 4x4")
    print(f"fastconv {__version__} demo\n", file=out)
    _demo_seed_example(out, args.threads)
    maps, titles = _demo_layer_stack(out, args, image, description)
    _demo_timing(out, args, image)
    if not args.no_png:
        print(file=out)
        _save_picture(out, args.out, maps, titles, args.renderer,
                      "fastconv demo: conv -> ReLU -> max pool, twice")
        print("   rows: the input, then every layer's output; conv maps are signed (blue < 0 < "
              "orange),\n   ReLU keeps the orange part, pooling halves the resolution.", file=out)
    return 0


# --------------------------------------------------------------------------------------------
# featuremaps


def _cmd_featuremaps(args, out):
    from . import _images, conv2d, max_pool2d, relu

    _check_renderer(args.renderer)
    if args.weights is not None:
        weight = _load_weights(args.weights)
        names = [f"#{i}" for i in range(weight.shape[0])]
        source = f"{weight.shape[0]} filters from {args.weights}"
    else:
        weight, names = named_filters(args.filters)
        source = f"{len(names)} named filters ({', '.join(names)})"
    mode = "rgb" if weight.shape[1] == 3 else "gray"
    if args.image == "sample" and not os.path.exists(args.image):
        image = _images.sample_image()
        image = np.repeat(image[:, :, None], 3, axis=2) if mode == "rgb" else image
        where = "the bundled sample image"
        title = "fastconv featuremaps: sample image"
    else:
        image = _images.load_image(args.image, mode=mode, max_size=args.max_size)
        where = args.image
        title = f"fastconv featuremaps: {os.path.basename(where)}"
    x = image[None] if mode == "gray" else np.ascontiguousarray(image.transpose(2, 0, 1))
    x = x[None]  # (1, C, H, W)
    print(f"image: {where}, {x.shape[3]}x{x.shape[2]} {mode}, as x of shape {x.shape}", file=out)
    print(f"filters: {source}, weight of shape {weight.shape}", file=out)
    start = time.perf_counter()
    maps = conv2d(x, weight, stride=args.stride, padding=args.padding, dilation=args.dilation,
                  padding_mode=args.padding_mode, num_threads=args.threads)
    elapsed = time.perf_counter() - start
    print(f"conv2d(x, weight, stride={args.stride!r}, padding={args.padding!r}, dilation="
          f"{args.dilation!r}, padding_mode={args.padding_mode!r}) -> {maps.shape} in "
          f"{elapsed * 1e3:.2f} ms", file=out)
    arrays = {"input": x[0], "conv": maps[0]}
    if args.relu:
        arrays["relu"] = relu(maps)[0]
    if args.pool:
        source_map = arrays.get("relu", arrays["conv"])
        arrays["pool"] = max_pool2d(source_map, args.pool, num_threads=args.threads)
        print(f"max_pool2d({'relu' if args.relu else 'conv'}, {args.pool}) -> "
              f"{arrays['pool'].shape}", file=out)

    header = f"   {'filter':<16} {'min':>9} {'max':>9} {'mean':>9} {'> 0':>6}"
    print(header, file=out)
    for name, plane in zip(names, maps[0]):
        print(f"   {name:<16} {plane.min():>9.4g} {plane.max():>9.4g} {plane.mean():>9.4g} "
              f"{(plane > 0).mean():>6.1%}", file=out)

    if args.npz:
        try:
            np.savez_compressed(args.npz, **arrays, weight=weight, names=np.array(names))
        except OSError as exc:
            raise _images.ImageError(f"cannot write {args.npz!r}: {exc.strerror or exc}") \
                from None
        path = args.npz if args.npz.endswith(".npz") else args.npz + ".npz"
        print(f"wrote {path} (arrays: {', '.join(list(arrays) + ['weight', 'names'])})",
              file=out)
    png = args.out or (None if args.npz else "featuremaps.png")
    if png:
        titles = {"input": ["gray"] if mode == "gray" else ["red", "green", "blue"]}
        titles.update({key: names for key in arrays if key != "input"})
        _save_picture(out, png, arrays, titles, args.renderer, title)
    return 0
