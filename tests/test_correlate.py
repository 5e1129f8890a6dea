"""fastconv.correlate2d / convolve2d (scipy.signal's conventions), output_size, and the seed's
worked examples with their true values."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastconv
from fastconv.reference import convolve2d_reference, correlate2d_reference

signal = pytest.importorskip("scipy.signal")

MODES = ["valid", "same", "full"]
FUNCS = {
    "correlate2d": (fastconv.correlate2d, signal.correlate2d, correlate2d_reference),
    "convolve2d": (fastconv.convolve2d, signal.convolve2d, convolve2d_reference),
}
SEED_IMAGE = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
HORIZONTAL_EDGE = np.array([[1, 1], [-1, -1]], dtype=np.float64)
DIAGONAL = np.array([[0, 1], [1, 0]], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The seed's examples (its printed -8 for the flipped kernel and 8 for the diagonal are wrong)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_seed_horizontal_edge_correlate(dtype):
    y = fastconv.correlate2d(SEED_IMAGE.astype(dtype), HORIZONTAL_EDGE.astype(np.float32))
    assert y.shape == (3, 3)
    assert_array_equal(y, np.full((3, 3), -8.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seed_horizontal_edge_convolve_flips(dtype):
    y = fastconv.convolve2d(SEED_IMAGE.astype(dtype), HORIZONTAL_EDGE.astype(dtype))
    assert y.dtype == dtype
    assert_array_equal(y, np.full((3, 3), 8.0))


@pytest.mark.parametrize("func", ["correlate2d", "convolve2d"])
def test_seed_diagonal(func):
    # the diagonal filter is symmetric under a 180-degree flip: both functions agree
    y = FUNCS[func][0](SEED_IMAGE, DIAGONAL)
    assert_array_equal(y, [[7, 9, 11], [15, 17, 19], [23, 25, 27]])


def test_seed_nested_lists():
    image = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    y = fastconv.correlate2d(image, [[1, 1], [-1, -1]])
    assert y.dtype == np.float64
    assert_array_equal(y, np.full((3, 3), -8.0))
    assert_array_equal(fastconv.convolve2d(image, [[1, 1], [-1, -1]]), np.full((3, 3), 8.0))


def test_seed_two_feature_maps_via_conv2d():
    """The seed's PyTorch layer (1 -> 2 channels, 2x2, stride 1, no padding, zero bias)."""
    x = SEED_IMAGE.astype(np.float32).reshape(1, 1, 4, 4)
    weight = np.stack([HORIZONTAL_EDGE, DIAGONAL])[:, None].astype(np.float32)
    assert weight.shape == (2, 1, 2, 2)
    maps = fastconv.conv2d(x, weight, np.zeros(2, np.float32), stride=1, padding=0)
    assert maps.shape == (1, 2, 3, 3)
    assert maps.dtype == np.float32
    assert_array_equal(maps[0, 0], np.full((3, 3), -8.0))
    assert_array_equal(maps[0, 1], [[7, 9, 11], [15, 17, 19], [23, 25, 27]])
    # conv2d is cross-correlation: each map is correlate2d with that filter
    assert_array_equal(maps[0, 0], fastconv.correlate2d(SEED_IMAGE, HORIZONTAL_EDGE))


def test_seed_output_size():
    assert fastconv.output_size(4, 2) == 3  # the seed's example
    assert fastconv.output_size(224, 3, padding=1) == 224  # the seed's 'same' layer
    assert fastconv.output_size(224, 2, stride=2) == 112  # then 2x2 pooling


# --------------------------------------------------------------------------------------------
# Agreement with scipy.signal
# --------------------------------------------------------------------------------------------

IMAGE_SHAPES = [(1, 1), (4, 4), (5, 7), (8, 3), (10, 12)]
KERNEL_SHAPES = [(1, 1), (2, 2), (3, 3), (2, 3), (4, 1), (5, 5), (6, 8), (12, 14)]


def _scipy_or_error(func, image, kernel, mode):
    try:
        return func(image, kernel, mode)
    except ValueError as exc:
        return exc


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", KERNEL_SHAPES, ids=lambda s: "k%dx%d" % s)
@pytest.mark.parametrize("ishape", IMAGE_SHAPES, ids=lambda s: "i%dx%d" % s)
@pytest.mark.parametrize("func", list(FUNCS))
def test_matches_scipy_integers(func, ishape, kshape, mode):
    """Integer-valued floats: scipy's result exactly, or scipy's error type."""
    ours, theirs, _ = FUNCS[func]
    rng = np.random.default_rng(hash((ishape, kshape)) % 2**32)
    image = rng.integers(-4, 5, size=ishape).astype(np.float64)
    kernel = rng.integers(-4, 5, size=kshape).astype(np.float64)
    expected = _scipy_or_error(theirs, image, kernel, mode)
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):
            ours(image, kernel, mode)
        return
    y = ours(image, kernel, mode)
    assert y.shape == expected.shape
    assert y.dtype == np.float64
    assert_array_equal(y, expected)
    # float32 too: still exact
    y32 = ours(image.astype(np.float32), kernel.astype(np.float32), mode)
    assert y32.dtype == np.float32
    assert_array_equal(y32, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", [(1, 1), (3, 3), (2, 3), (5, 4), (7, 7)],
                         ids=lambda s: "k%dx%d" % s)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("func", list(FUNCS))
def test_matches_scipy_random(func, dtype, kshape, mode, assert_within_tolerance):
    ours, theirs, ref = FUNCS[func]
    rng = np.random.default_rng(1)
    image = rng.standard_normal((13, 17)).astype(dtype)
    kernel = rng.standard_normal(kshape).astype(dtype)
    y = ours(image, kernel, mode)
    expected = theirs(image.astype(np.float64), kernel.astype(np.float64), mode)
    bound = ref(np.abs(image.astype(np.float64)), np.abs(kernel.astype(np.float64)), mode)
    assert y.dtype == dtype
    assert_within_tolerance(y, expected, bound, c=16)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", list(FUNCS))
def test_larger_image(func, mode, assert_within_tolerance):
    """Big enough for any blocked or parallel path."""
    ours, theirs, ref = FUNCS[func]
    rng = np.random.default_rng(2)
    image = rng.standard_normal((130, 97)).astype(np.float32)
    kernel = rng.standard_normal((5, 6)).astype(np.float32)
    y = ours(image, kernel, mode)
    expected = theirs(image.astype(np.float64), kernel.astype(np.float64), mode)
    bound = ref(np.abs(image), np.abs(kernel), mode).astype(np.float64)
    assert_within_tolerance(y, expected, bound, c=16)


@pytest.mark.parametrize("func", list(FUNCS))
def test_valid_swaps_when_kernel_is_larger(func):
    """scipy swaps the inputs in 'valid' when the kernel is larger in every dimension."""
    ours, theirs, _ = FUNCS[func]
    image = np.arange(6.0).reshape(2, 3)
    kernel = np.arange(20.0).reshape(4, 5) - 7
    # (scipy's default mode is 'full', ours is 'valid')
    assert_array_equal(ours(image, kernel), theirs(image, kernel, "valid"))
    assert ours(image, kernel).shape == (3, 3)


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("kshape", [(3, 7), (6, 2)])
def test_valid_kernel_larger_in_one_dimension(func, kshape):
    """scipy refuses (ValueError) when neither input is at least as large in every dimension."""
    ours, theirs, _ = FUNCS[func]
    image, kernel = np.ones((5, 5)), np.ones(kshape)
    with pytest.raises(ValueError):
        theirs(image, kernel, "valid")
    with pytest.raises(ValueError):
        ours(image, kernel, "valid")


@pytest.mark.parametrize("func", list(FUNCS))
def test_references_match_scipy(func):
    """The NumPy references themselves agree with scipy (they are the bench baseline)."""
    _, theirs, ref = FUNCS[func]
    rng = np.random.default_rng(9)
    for ishape in [(3, 4), (6, 5)]:
        for kshape in [(1, 2), (3, 3), (4, 2), (7, 9)]:
            image, kernel = rng.standard_normal(ishape), rng.standard_normal(kshape)
            for mode in MODES:
                expected = _scipy_or_error(theirs, image, kernel, mode)
                if isinstance(expected, Exception):
                    with pytest.raises(ValueError):
                        ref(image, kernel, mode)
                else:
                    np.testing.assert_allclose(ref(image, kernel, mode), expected, atol=1e-12)


# --------------------------------------------------------------------------------------------
# dtype, memory layouts, untouched inputs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("image_dtype, kernel_dtype, expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float32),
    (np.uint8, np.float32, np.float32),
    (np.int32, np.int32, np.float64),
    (np.bool_, np.bool_, np.float64),
    (np.dtype(">f8"), np.dtype(">f8"), np.float64),
], ids=lambda d: np.dtype(d).str)
def test_dtype_rules(func, image_dtype, kernel_dtype, expected):
    ours, theirs, _ = FUNCS[func]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 2, size=(6, 7)).astype(image_dtype)
    kernel = rng.integers(0, 2, size=(3, 2)).astype(kernel_dtype)
    y = ours(image, kernel, "same")
    assert y.dtype == np.dtype(expected)
    assert_array_equal(y, theirs(image.astype(np.float64), kernel.astype(np.float64), "same"))


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("which", ["image", "kernel"])
@pytest.mark.parametrize("bad", ["complex128", "object", "U3"])
def test_unsupported_dtypes(func, which, bad):
    args = {"image": np.ones((5, 5)), "kernel": np.ones((3, 3))}
    args[which] = np.zeros(args[which].shape, dtype=bad)
    with pytest.raises(TypeError, match=which):
        FUNCS[func][0](args["image"], args["kernel"])


VARIANT_NAMES = ["nan_twin", "nan_twin_last_axis", "nan_twin_reversed", "fortran",
                 "permuted_axes", "negative_strides", "readonly", "byteswapped", "nested_list"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["image", "kernel"])
@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("func", list(FUNCS))
def test_unusual_memory_inputs(func, variant, which, mode, input_variants):
    ours, theirs, _ = FUNCS[func]
    rng = np.random.default_rng(4)
    args = {"image": rng.integers(-4, 5, size=(7, 9)).astype(np.float64),
            "kernel": rng.integers(-4, 5, size=(3, 4)).astype(np.float64)}
    expected = theirs(args["image"], args["kernel"], mode)
    args[which] = input_variants(args[which])[variant]
    assert_array_equal(ours(args["image"], args["kernel"], mode), expected)


@pytest.mark.parametrize("func", list(FUNCS))
def test_inputs_not_modified(func, nan_twin):
    rng = np.random.default_rng(5)
    image, image_base = nan_twin(rng.standard_normal((9, 8)))
    kernel, kernel_base = nan_twin(rng.standard_normal((3, 3)), reverse=True)
    copies = image_base.copy(), kernel_base.copy()
    for mode in MODES:
        y = FUNCS[func][0](image, kernel, mode)
        assert np.isfinite(y).all()
    assert_array_equal(image_base, copies[0])
    assert_array_equal(kernel_base, copies[1])


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

ANY = (ValueError, TypeError)
ERROR_CASES = [
    ("image_1d", dict(image=np.ones(5)), ValueError, [r"image"]),
    ("image_3d", dict(image=np.ones((1, 5, 5))), ValueError, [r"image"]),
    ("kernel_1d", dict(kernel=np.ones(3)), ValueError, [r"kernel"]),
    ("kernel_3d", dict(kernel=np.ones((1, 3, 3))), ValueError, [r"kernel"]),
    ("kernel_0d", dict(kernel=np.float64(2.0)), ValueError, [r"kernel"]),
    ("mode_unknown", dict(mode="circular"), ValueError, [r"mode", r"circular"]),
    ("mode_upper", dict(mode="VALID"), ValueError, [r"mode"]),
    ("mode_none", dict(mode=None), ANY, [r"mode"]),
    ("mode_int", dict(mode=1), ANY, [r"mode"]),
    ("image_none", dict(image=None), TypeError, [r"image"]),
    ("image_str", dict(image="abc"), TypeError, [r"image"]),
    ("image_object", dict(image=object()), TypeError, [r"image"]),
    ("kernel_none", dict(kernel=None), TypeError, [r"kernel"]),
    ("kernel_object", dict(kernel=object()), TypeError, [r"kernel"]),
    ("image_ragged", dict(image=[[1, 2], [3]]), ANY, [r"image"]),
]


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("overrides, exc, patterns", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors(func, overrides, exc, patterns):
    args = dict(image=np.ones((5, 5)), kernel=np.ones((3, 3)), mode="valid")
    args.update(overrides)
    with pytest.raises(exc) as info:
        FUNCS[func][0](**args)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("shapes", [((0, 5), (3, 3)), ((5, 5), (0, 3)), ((0, 0), (1, 1))])
def test_empty_inputs(func, shapes):
    """Empty inputs: a ValueError naming them (scipy's own results for these are erratic,
    e.g. a (6, 3) 'valid' output for a (5, 5) image and a (0, 3) kernel), or scipy's result."""
    ours, theirs, _ = FUNCS[func]
    image, kernel = np.ones(shapes[0]), np.ones(shapes[1])
    for mode in MODES:
        try:
            y = ours(image, kernel, mode)
        except ValueError as exc:
            assert re.search(r"image|kernel|empty", str(exc)), str(exc)
            continue
        assert_array_equal(y, theirs(image, kernel, mode))


# --------------------------------------------------------------------------------------------
# output_size
# --------------------------------------------------------------------------------------------

def output_size_formula(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False):
    """The seed's formula with dilation; ceil_mode as in PyTorch (a last window that would
    start inside the right padding is dropped)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1


OUTPUT_SIZE_CASES = [
    # (size, kernel, stride, padding, dilation, ceil_mode, expected)
    (4, 2, 1, 0, 1, False, 3),
    (5, 3, 1, 0, 1, False, 3),
    (5, 3, 1, 1, 1, False, 5),
    (7, 3, 2, 0, 1, False, 3),
    (8, 3, 2, 0, 1, False, 3),
    (8, 3, 2, 0, 1, True, 4),
    (8, 3, 2, 1, 1, False, 4),
    (224, 7, 2, 3, 1, False, 112),
    (112, 3, 2, 1, 1, False, 56),
    (10, 3, 1, 0, 2, False, 6),
    (10, 3, 3, 2, 2, False, 4),
    (10, 3, 3, 2, 2, True, 4),
    (5, 2, 2, 0, 1, False, 2),
    (5, 2, 2, 0, 1, True, 3),
    (5, 2, 2, 1, 1, True, 3),  # PyTorch drops the window starting in the padding
    (6, 3, 2, 1, 1, True, 4),
    (7, 2, 3, 1, 1, True, 3),
    (3, 3, 1, 0, 1, False, 1),
    (1, 1, 1, 0, 1, False, 1),
    (1, 3, 1, 1, 1, False, 1),
    (2, 2, 5, 0, 1, True, 1),
]


@pytest.mark.parametrize("case", OUTPUT_SIZE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_output_size_table(case):
    size, kernel, stride, padding, dilation, ceil_mode, expected = case
    assert output_size_formula(size, kernel, stride, padding, dilation, ceil_mode) == expected
    got = fastconv.output_size(size, kernel, stride=stride, padding=padding, dilation=dilation,
                               ceil_mode=ceil_mode)
    assert got == expected
    assert isinstance(got, (int, np.integer))


def test_output_size_positional_signature():
    assert fastconv.output_size(10, 3, 3, 2, 2, True) == 4


def test_output_size_grid_matches_formula():
    for size in range(1, 14):
        for kernel in range(1, 6):
            for stride in range(1, 5):
                for padding in range(0, 3):
                    for dilation in range(1, 4):
                        for ceil_mode in (False, True):
                            span = size + 2 * padding - dilation * (kernel - 1) - 1
                            if span < 0:
                                continue
                            expected = output_size_formula(size, kernel, stride, padding,
                                                           dilation, ceil_mode)
                            got = fastconv.output_size(size, kernel, stride, padding, dilation,
                                                       ceil_mode)
                            assert got == expected, (size, kernel, stride, padding, dilation,
                                                     ceil_mode, got, expected)


@pytest.mark.parametrize("h, w, kh, kw, stride, padding, dilation", [
    (9, 11, 3, 3, 1, 1, 1), (9, 11, 3, 5, 2, 0, 1), (16, 15, 4, 2, 3, 2, 2),
    (7, 7, 7, 7, 1, 0, 1), (30, 8, 5, 1, 4, 3, 3), (5, 6, 2, 3, 2, 1, 2),
])
def test_output_size_matches_conv2d(h, w, kh, kw, stride, padding, dilation):
    y = fastconv.conv2d(np.zeros((1, 2, h, w)), np.zeros((3, 2, kh, kw)), stride=stride,
                        padding=padding, dilation=dilation)
    assert y.shape == (1, 3,
                       fastconv.output_size(h, kh, stride, padding, dilation),
                       fastconv.output_size(w, kw, stride, padding, dilation))


def test_output_size_matches_torch():
    torch = pytest.importorskip("torch")
    for size, kernel, stride, padding, dilation, ceil_mode, _ in OUTPUT_SIZE_CASES:
        if 2 * padding > kernel:
            continue  # torch's pooling refuses padding over half the kernel (kW / 2 >= padW)
        x = torch.zeros(1, 1, size, size)
        y = torch.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        assert y.shape[-1] == fastconv.output_size(size, kernel, stride, padding, dilation,
                                                   ceil_mode)


def test_output_size_tuples():
    """Per-axis tuples (ints broadcast), as documented by fastconv.output_size."""
    assert fastconv.output_size((5, 6), 2, stride=2, ceil_mode=True) == (3, 3)
    assert fastconv.output_size((9, 11), (3, 5), stride=(1, 2), padding=(1, 0),
                                dilation=(2, 1)) == (
        output_size_formula(9, 3, 1, 1, 2), output_size_formula(11, 5, 2, 0, 1))
    with pytest.raises(ValueError):
        fastconv.output_size((9, 11), (3, 5, 7))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(size=5, kernel_size=0), r"kernel"),
    (dict(size=5, kernel_size=-1), r"kernel"),
    (dict(size=5, kernel_size=3, stride=0), r"stride"),
    (dict(size=5, kernel_size=3, dilation=0), r"dilation"),
    (dict(size=5, kernel_size=3, padding=-1), r"padding"),
    (dict(size=-1, kernel_size=1), r"size"),
    (dict(size=2, kernel_size=3), r"kernel|size"),
    (dict(size=3, kernel_size=2, dilation=3), r"kernel|size|dilation"),
], ids=["kernel0", "kernel_neg", "stride0", "dilation0", "padding_neg", "size_neg",
        "kernel_larger", "dilated_kernel_larger"])
def test_output_size_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastconv.output_size(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(size=5.5, kernel_size=3), dict(size=5, kernel_size=2.0),
                                    dict(size=5, kernel_size=3, stride=True),
                                    dict(size=None, kernel_size=3), dict(size="5", kernel_size=3)])
def test_output_size_rejects_non_integers(kwargs):
    with pytest.raises((TypeError, ValueError)):
        fastconv.output_size(**kwargs)


def test_output_size_large_values_are_exact():
    # integer arithmetic, no float rounding
    assert fastconv.output_size(10**9 + 1, 3) == 10**9 - 1
    assert fastconv.output_size(10**9, 2, 2) == 5 * 10**8
