"""Fuzzing the public API: arbitrary argument combinations, valid and invalid.

For every draw, fastconv must either return the reference result (``fastconv.reference``) or
raise ``ValueError``/``TypeError`` -- never another exception, never a crash. Draws flagged
``valid`` are built to be valid by construction and must succeed. A call that fastconv accepts
while the reference cannot compute it is a failure too (silently accepted nonsense).

Drawn: shapes (zeros included), dtypes (float16/32/64, ints, bool, and bad ones: complex,
object, strings, datetime, long double), memory layouts (NaN-twin strided views, Fortran
order, negative strides, read-only, byte-swapped, nested lists), strides, dilations, paddings
in every form (and bad ones), padding modes, groups, layouts, ``out`` buffers (good, wrong
shape/dtype, strided, read-only, overlapping an input, not an array), ``num_threads``.

CI runs a short session (``FUZZ_EXAMPLES`` per test, ~2 s in all). ``tests/tools/run_fuzz.py``
runs a long one (>= 1e5 examples) and prints the outcome counts; ``FASTCONV_FUZZ_EXAMPLES``
sets the examples per test for a pytest run.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference as ref

pytestmark = pytest.mark.filterwarnings("ignore")

FUZZ_EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "40"))
# (op, outcome) -> count, for run_fuzz.py's report
OUTCOMES: Counter = Counter()

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=os.environ.get("CI") == "true",
    suppress_health_check=list(HealthCheck), print_blob=True)

GOOD_FLOATS = ["float32", "float64"]
OTHER_GOOD_DTYPES = ["float16", "int8", "int32", "int64", "uint8", "uint16", "bool", ">f4", ">f8"]
BAD_DTYPES = ["complex64", "complex128", "object", "U4", "datetime64[s]", "longdouble"]
MEMORY = ["contiguous", "contiguous", "contiguous", "nan_twin", "nan_twin_reversed",
          "fortran", "negative_strides", "readonly", "list"]


# ---------------------------------------------------------------------------------------------
# Arrays


def make_array(seed, shape, dtype, memory, values="normal"):
    """An array-like of ``shape`` and ``dtype`` with data from ``seed``, in ``memory`` layout."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _make_array(seed, shape, dtype, memory, values)


def _make_array(seed, shape, dtype, memory, values):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if values == "ints":
        base = rng.integers(-3, 4, shape).astype(np.float64)
    elif values == "special":
        pool = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -7.0, np.inf, -np.inf, np.nan, 1e30, -1e-30])
        base = pool[rng.integers(0, len(pool), shape)]
    else:
        base = rng.standard_normal(shape)
        if values == "nan" and base.size:
            base.flat[rng.integers(0, base.size)] = np.nan
    base = np.asarray(base, dtype=np.float64)  # (the generators return scalars for shape ())
    kind = dtype.kind
    if kind == "b":
        arr = base > 0
    elif kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(np.nan_to_num(np.round(base * 3)), info.min, info.max).astype(dtype)
    elif kind == "f":
        arr = base.astype(dtype)
    elif kind == "c":
        arr = (base + 1j * base).astype(dtype)
    elif kind == "O":
        arr = base.astype(object)
    elif kind == "U":
        arr = base.astype(dtype)
    elif kind == "M":
        arr = np.zeros(shape, dtype)
    else:
        raise AssertionError(dtype)
    return apply_memory(np.asarray(arr), memory)


def apply_memory(arr, memory):
    if memory == "contiguous" or arr.ndim == 0:
        return arr
    if memory in ("nan_twin", "nan_twin_reversed"):
        if arr.dtype.kind not in "fiub":
            return arr
        base = np.empty(tuple(2 * n for n in arr.shape), arr.dtype)
        base[...] = np.nan if arr.dtype.kind == "f" else 1
        if memory == "nan_twin":
            index = tuple(slice(1, None, 2) for _ in arr.shape)
        else:
            index = tuple(slice(2 * n - 1, None, -2) if n else slice(0, 0) for n in arr.shape)
        base[index] = arr
        return base[index]
    if memory == "fortran":
        return np.asfortranarray(arr)
    if memory == "negative_strides":
        flip = (slice(None, None, -1),) * arr.ndim
        return np.ascontiguousarray(arr[flip])[flip]
    if memory == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    if memory == "list":  # (a zero-length axis would not survive the round trip)
        return arr.tolist() if arr.dtype.kind in "fiub" and 0 not in arr.shape else arr
    raise AssertionError(memory)


def as_ndarray(value):
    return value if isinstance(value, np.ndarray) else np.asarray(value)


@st.composite
def dtypes(draw, allow_bad=True):
    pools = [st.sampled_from(GOOD_FLOATS), st.sampled_from(OTHER_GOOD_DTYPES)]
    if allow_bad:
        pools.append(st.sampled_from(BAD_DTYPES))
    return draw(st.one_of(*pools))


seeds = st.integers(0, 2**32 - 1)
value_kinds = st.sampled_from(["normal", "ints", "nan"])
bad_scalars = st.sampled_from([None, 1.5, "1", -1, 0, True, (1,), (1, 2, 3), [], 2**40,
                               np.float64(2.0), (1, -1), (0, 1), ("a", 1)])


@functools.lru_cache(maxsize=None)  # building strategies per draw is slow
def geometry(minimum):
    """An int or pair >= minimum (sometimes as numpy ints), or something invalid."""
    good = st.one_of(
        st.integers(minimum, 3),
        st.tuples(st.integers(minimum, 3), st.integers(minimum, 3)),
        st.lists(st.integers(minimum, 3), min_size=2, max_size=2),
        st.integers(minimum, 3).map(np.int64),
    )
    return st.one_of(good, good, good, bad_scalars)


# ---------------------------------------------------------------------------------------------
# Checking an outcome


def probe(call):
    """``(shape, dtype)`` of fastconv's result for these arguments without ``out=``, or
    ``(None, None)`` if it refuses them: the shape and dtype a good ``out`` needs. (The
    references are not asked: given nonsense such as dilation=-1 they may loop forever.)"""
    try:
        result = call()
    except (ValueError, TypeError):
        return None, None
    values = result[0] if isinstance(result, tuple) else result
    return values.shape, values.dtype


def expect(op, valid, call_fastconv, call_reference, compare):
    """Run fastconv, then (if it returned) the reference; enforce the contract; count."""
    try:
        result = call_fastconv()
    except (ValueError, TypeError) as exc:
        if valid:
            raise AssertionError(f"{op}: a valid call raised {exc!r}") from exc
        OUTCOMES[(op, type(exc).__name__)] += 1
        return
    # any other exception propagates and fails the test
    try:
        expected = call_reference()
    except Exception as exc:
        raise AssertionError(f"{op}: fastconv accepted arguments the reference rejects "
                             f"({exc!r})") from exc
    compare(result, expected)
    OUTCOMES[(op, "ok")] += 1


def assert_same(actual, expected, what):
    assert isinstance(actual, np.ndarray), f"{what}: got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert np.array_equal(actual, expected, equal_nan=True), f"{what}: values differ"


def assert_close(actual, expected, scale, taps, what):
    """|actual - expected| <= 2 (R + 2) eps S (the README's promise, twice for the float64
    reference's own rounding); NaN exactly where the reference has NaN."""
    assert isinstance(actual, np.ndarray), f"{what}: got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    eps = float(np.finfo(actual.dtype).eps)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN at different places"
    with np.errstate(invalid="ignore"):
        inf_ok = np.isinf(e) & (a == e)
        err = np.where(nan_e | inf_ok, 0.0, np.abs(a - e))
        tol = 2 * (taps + 2) * eps * np.where(nan_e | inf_ok, 0.0, scale)
    bad = ~(err <= tol)
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements out of tolerance, max error "
                           f"{float(err.max())!r}")


def out_variant(draw, shape, dtype, inputs):
    """An ``out=`` argument: None, a good buffer, or a bad one of many kinds."""
    kind = draw(st.sampled_from(["none", "none", "good", "good", "shape", "dtype", "strided",
                                 "readonly", "overlap", "list", "fortran"]))
    if kind == "none" or shape is None:
        return kind if shape is not None else "none", None
    shape = tuple(shape)
    if kind == "good":
        return kind, np.full(shape, 7, dtype)
    if kind == "shape":
        return kind, np.empty(shape[:-1] + (shape[-1] + 1,) if shape else (1,), dtype)
    if kind == "dtype":
        other = np.float32 if np.dtype(dtype) == np.float64 else np.float64
        return kind, np.empty(shape, other)
    if kind == "strided":
        if not shape or shape[-1] < 2:
            return "good", np.full(shape, 7, dtype)
        return kind, np.empty(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    if kind == "readonly":
        out = np.empty(shape, dtype)
        out.flags.writeable = False
        return kind, out
    if kind == "overlap":
        arrays = [a for a in inputs if isinstance(a, np.ndarray) and a.size]
        if not arrays:
            return "good", np.full(shape, 7, dtype)
        return kind, arrays[0]
    if kind == "fortran":
        if len(shape) < 2 or min(shape[-2:]) < 2:
            return "good", np.full(shape, 7, dtype)
        return kind, np.asfortranarray(np.empty(shape, dtype))
    return kind, np.empty(shape, dtype).tolist()


def check_out_result(result, out, kind):
    """With a good ``out``, the result is ``out`` itself."""
    if kind == "good":
        assert result is out, "out= was not returned"


# ---------------------------------------------------------------------------------------------
# conv2d


@st.composite
def valid_conv_args(draw):
    """Arguments valid by construction (every padding mode, form, layout, dtype, groups)."""
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    dtype_x = draw(st.one_of(st.sampled_from(GOOD_FLOATS), st.sampled_from(OTHER_GOOD_DTYPES)))
    dtype_w = draw(st.sampled_from(GOOD_FLOATS + ["float16", "int8", "bool"]))
    n = draw(st.integers(0, 3))
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(0, 3))
    fg = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))

    def pad_for(size):
        limit = {"zeros": 4, "reflect": size - 1, "replicate": 4, "circular": size}[mode]
        return draw(st.integers(0, max(0, min(limit, 4))))

    top, bottom, left, right = pad_for(h), pad_for(h), pad_for(w), pad_for(w)
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # shrink the kernel until it fits the padded input
    if dh * (kh - 1) + 1 > h + top + bottom:
        dh, kh = 1, min(kh, h + top + bottom)
    if dw * (kw - 1) + 1 > w + left + right:
        dw, kw = 1, min(kw, w + left + right)
    form = draw(st.sampled_from(["tuple4", "int", "pair", "valid", "same"]))
    if form == "int" and top == bottom == left == right:
        padding = top
    elif form == "pair" and top == bottom and left == right:
        padding = (top, left)
    elif form == "valid" and dh * (kh - 1) + 1 <= h and dw * (kw - 1) + 1 <= w:
        padding = "valid"
    elif form == "same" and mode == "zeros":
        padding = "same"
    else:
        padding = (top, bottom, left, right)
    unbatched = draw(st.booleans()) and n == 1
    shape = (n, groups * cg, h, w) if layout == "NCHW" else (n, h, w, groups * cg)
    if unbatched:
        shape = shape[1:]
    x = make_array(draw(seeds), shape, dtype_x, draw(st.sampled_from(MEMORY)),
                   draw(value_kinds))
    weight = make_array(draw(seeds), (groups * fg, cg, kh, kw), dtype_w,
                        draw(st.sampled_from(MEMORY)), draw(value_kinds))
    bias = None
    if draw(st.booleans()):
        bias = make_array(draw(seeds), (groups * fg,), draw(st.sampled_from(GOOD_FLOATS)),
                          draw(st.sampled_from(MEMORY)))
    kwargs = dict(stride=draw(st.sampled_from([(sh, sw), [sh, sw]])) if sh != sw else sh,
                  padding=padding, dilation=(dh, dw) if dh != dw else dh, groups=groups,
                  padding_mode=mode, layout=layout,
                  activation=draw(st.sampled_from([None, "relu"])))
    return x, weight, bias, kwargs


@st.composite
def any_conv_args(draw):
    """Arguments of every kind, most of them plausible, many of them wrong."""
    layout = draw(st.sampled_from(["NCHW", "NHWC", "NCHW", "NHWC", "nchw", None, "HWC"]))
    ndim = draw(st.sampled_from([4, 4, 4, 3, 2, 5]))
    x_shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    w_ndim = draw(st.sampled_from([4, 4, 4, 3, 5]))
    w_shape = tuple(draw(st.lists(st.integers(0, 4), min_size=w_ndim, max_size=w_ndim)))
    if draw(st.booleans()) and ndim >= 3 and w_ndim == 4:  # make channels plausible
        c = x_shape[-3] if layout != "NHWC" else x_shape[-1]
        groups_hint = draw(st.integers(1, 3))
        w_shape = (w_shape[0] * groups_hint, c // groups_hint) + w_shape[2:]
    x = make_array(draw(seeds), x_shape, draw(dtypes()), draw(st.sampled_from(MEMORY)),
                   draw(value_kinds))
    weight = make_array(draw(seeds), w_shape, draw(dtypes()), draw(st.sampled_from(MEMORY)),
                        draw(value_kinds))
    bias = None
    bias_kind = draw(st.sampled_from(["none", "none", "good", "wrong"]))
    if bias_kind != "none":
        f = w_shape[0] if w_shape else 1
        shape = (f,) if bias_kind == "good" else draw(st.sampled_from([(f + 1,), (f, 1), ()]))
        bias = make_array(draw(seeds), shape, draw(dtypes()), "contiguous")
    padding = draw(st.one_of(
        geometry(0),
        st.tuples(*[st.integers(-1, 4)] * 4),
        st.lists(st.integers(0, 3), min_size=4, max_size=4),
        st.sampled_from(["same", "valid", "full", "SAME", (1, 2, 3)]),
    ))
    kwargs = dict(stride=draw(geometry(1)), padding=padding, dilation=draw(geometry(1)),
                  groups=draw(st.one_of(st.integers(1, 4), st.integers(1, 3).map(np.int64),
                                        st.sampled_from([0, -1, 1.0, True, None, "2"]))),
                  padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate",
                                                     "circular", "constant", None])),
                  layout=layout,
                  activation=draw(st.sampled_from([None, None, "relu", "sigmoid", True])))
    return x, weight, bias, kwargs


def _nan_indicator(a):
    a = as_ndarray(a)
    return np.isnan(a).astype(np.float64) if a.dtype.kind == "f" else np.zeros(a.shape)


def conv_nan_mask(x, weight, kwargs, out_ndim):
    """Where conv2d must give NaN: a window that covers a NaN input (any padding mode), or a
    filter with a NaN weight (every tap is multiplied, padding zeros included). Computed
    apart because the references' np.tensordot (OpenBLAS) drops NaN * 0."""
    kw = dict(kwargs, activation=None)
    weight = as_ndarray(weight)
    mask = ref.conv2d_reference(_nan_indicator(x), np.ones(weight.shape), **kw) > 0
    per_filter = int(np.prod(weight.shape[1:]))  # not -1: there may be no filters
    bad_filters = _nan_indicator(weight).reshape(weight.shape[0], per_filter).any(axis=1)
    if bad_filters.any():
        axis = -1 if kwargs["layout"] == "NHWC" else -3
        shape = [1] * out_ndim
        shape[axis] = weight.shape[0]
        mask = mask | bad_filters.reshape(shape)
    return mask


def correlate_nan_mask(reference, image, kernel, mode):
    """The same for correlate2d/convolve2d (with scipy's 'valid' swap)."""
    ind_i, ind_k = _nan_indicator(image), _nan_indicator(kernel)
    mask = ((reference(ind_i, np.ones(ind_k.shape), mode) > 0)
            | (reference(np.ones(ind_i.shape), ind_k, mode) > 0))
    if mode != "valid" and ind_k.any():
        mask[...] = True
    return mask


def conv_reference_call(x, weight, bias, kwargs):
    """The reference in float64, returned in fastconv's documented result dtype: the
    ``np.result_type`` of x, weight *and bias* (``conv2d_reference`` leaves bias out)."""
    arrays = [as_ndarray(a) for a in (x, weight, bias) if a is not None]
    dtype = ref.result_dtype(*arrays)
    if any(a.dtype.kind not in "biuf" for a in arrays):
        raise TypeError("unsupported dtype")
    as64 = [a.astype(np.float64) for a in arrays] + [None]
    result = ref.conv2d_reference(as64[0], as64[1], as64[2] if bias is not None else None,
                                  **kwargs)
    result = np.where(conv_nan_mask(x, weight, kwargs, result.ndim), np.nan, result)
    with np.errstate(over="ignore"):
        return result.astype(dtype)


def check_conv2d(args, valid, draw):
    x, weight, bias, kwargs = args
    expected_shape, expected_dtype = probe(lambda: fastconv.conv2d(x, weight, bias, **kwargs))
    out_kind, out = out_variant(draw, expected_shape, expected_dtype, [x, weight, bias])
    num_threads = draw(st.sampled_from([None, None, 1, 2, 3] if valid else
                                       [None, 1, 2, 0, -1, 1.5, True, "2"]))
    if valid and out_kind not in ("none", "good"):
        valid = False
    weight_arr = as_ndarray(weight)
    taps = int(np.prod(weight_arr.shape[1:])) if weight_arr.ndim == 4 else 0

    def compare(result, expected):
        with np.errstate(invalid="ignore", over="ignore"):
            abs_x = np.abs(as_ndarray(x).astype(np.float64))
            abs_w = np.abs(weight_arr.astype(np.float64))
            abs_b = None if bias is None else np.abs(as_ndarray(bias).astype(np.float64))
            kw = dict(kwargs, activation=None)
            scale = ref.conv2d_reference(abs_x, abs_w, abs_b, **kw).astype(np.float64)
        assert_close(result, expected, scale, taps, "conv2d")
        check_out_result(result, out, out_kind)

    expect("conv2d", valid,
           lambda: fastconv.conv2d(x, weight, bias, out=out, num_threads=num_threads, **kwargs),
           lambda: conv_reference_call(x, weight, bias, kwargs), compare)


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_conv2d_valid(data):
    check_conv2d(data.draw(valid_conv_args()), True, data.draw)


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_conv2d_any(data):
    check_conv2d(data.draw(any_conv_args()), False, data.draw)


# ---------------------------------------------------------------------------------------------
# max_pool2d


@st.composite
def pool_args(draw):
    valid = draw(st.booleans())
    layout = draw(st.sampled_from(["NCHW", "NHWC"] if valid else ["NCHW", "NHWC", "nhwc", 1]))
    if valid:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
        dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        # an input at least as large as the dilated kernel: every output size >= 1
        h_min = max(1, dh * (kh - 1) + 1 - 2 * ph)
        w_min = max(1, dw * (kw - 1) + 1 - 2 * pw)
        h, w = draw(st.integers(h_min, h_min + 6)), draw(st.integers(w_min, w_min + 6))
        n, c = draw(st.integers(0, 3)), draw(st.integers(1, 4))
        shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
        if draw(st.booleans()) and n == 1:
            shape = shape[1:]
        dtype = draw(st.one_of(st.sampled_from(GOOD_FLOATS), st.sampled_from(OTHER_GOOD_DTYPES)))
        kwargs = dict(kernel_size=(kh, kw) if kh != kw else kh,
                      stride=draw(st.sampled_from([None, (sh, sw), ()])),
                      padding=(ph, pw), dilation=(dh, dw),
                      ceil_mode=draw(st.booleans()), return_indices=draw(st.booleans()),
                      layout=layout)
    else:
        ndim = draw(st.sampled_from([4, 4, 3, 2, 5]))
        shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
        dtype = draw(dtypes())
        kwargs = dict(kernel_size=draw(geometry(1)),
                      stride=draw(st.one_of(st.none(), geometry(1), st.just(()))),
                      padding=draw(geometry(0)), dilation=draw(geometry(1)),
                      ceil_mode=draw(st.sampled_from([False, True, 1, None])),
                      return_indices=draw(st.sampled_from([False, True, 0])),
                      layout=layout)
    x = make_array(draw(seeds), shape, dtype, draw(st.sampled_from(MEMORY)),
                   draw(st.sampled_from(["normal", "ints", "special"])))
    return valid, x, kwargs


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_max_pool2d(data):
    valid, x, kwargs = data.draw(pool_args())
    expected_shape, expected_dtype = probe(lambda: fastconv.max_pool2d(x, **kwargs))
    out_kind, out = out_variant(data.draw, expected_shape, expected_dtype, [x])
    if kwargs.get("return_indices") is True and out is not None:
        indices_kind = data.draw(st.sampled_from(["good", "good", "int32", "same", "single"]))
        if indices_kind == "good":
            out = (out, np.empty(expected_shape, np.int64))
        elif indices_kind == "int32":
            out, out_kind = (out, np.empty(expected_shape, np.int32)), "bad indices"
        elif indices_kind == "same":
            out, out_kind = (out, out), "bad indices"
        else:
            out_kind = "single"
    num_threads = data.draw(st.sampled_from([None, 1, 2] if valid else [None, 2, 0, "1"]))
    if valid and out_kind not in ("none", "good"):
        valid = False

    def compare(result, expected):
        if isinstance(expected, tuple):
            assert isinstance(result, tuple) and len(result) == 2, "want (values, indices)"
            assert_same(result[0], expected[0], "max_pool2d values")
            assert_same(result[1], expected[1], "max_pool2d indices")
            if out_kind == "good":
                assert result[0] is out[0] and result[1] is out[1], "out= was not returned"
        else:
            assert_same(result, expected, "max_pool2d")
            check_out_result(result, out, out_kind)

    expect("max_pool2d", valid,
           lambda: fastconv.max_pool2d(x, out=out, num_threads=num_threads, **kwargs),
           lambda: ref.max_pool2d_reference(x, **kwargs), compare)


# ---------------------------------------------------------------------------------------------
# relu


@st.composite
def relu_args(draw):
    valid = draw(st.booleans())
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    if draw(st.integers(0, 9)) == 0:  # now and then a parallel-path size
        shape = (draw(st.integers(1 << 17, (1 << 17) + 100)),)
    dtype = draw(st.one_of(st.sampled_from(GOOD_FLOATS), st.sampled_from(OTHER_GOOD_DTYPES))
                 if valid else dtypes())
    memory = draw(st.sampled_from(MEMORY))
    x = make_array(draw(seeds), shape, dtype, memory,
                   draw(st.sampled_from(["normal", "special", "ints"])))
    if draw(st.integers(0, 19)) == 0:
        x = draw(st.sampled_from([3.5, -2, True, [[1, -2], [3]], "x", None, {1: 2}]))
        valid = False
    return valid, x


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_relu(data):
    valid, x = data.draw(relu_args())
    expected_shape, expected_dtype = probe(lambda: fastconv.relu(x))
    out_kind, out = out_variant(data.draw, expected_shape, expected_dtype, [])
    if (data.draw(st.integers(0, 5)) == 0 and isinstance(x, np.ndarray)
            and expected_dtype is not None):
        out, out_kind = x, "in place"  # valid only for a C-contiguous writeable result dtype
    num_threads = data.draw(st.sampled_from([None, 1, 2] if valid else [None, 2, 0, 2.0]))
    if valid and out_kind not in ("none", "good"):
        valid = False
    x_before = np.array(x, copy=True) if isinstance(x, np.ndarray) else None
    try:  # before the call: out=x overwrites x
        expected = ref.relu_reference(x)
    except Exception as exc:
        expected = exc

    def reference():
        if isinstance(expected, Exception):
            raise expected
        return expected

    def compare(result, expected):
        assert_same(result, expected, "relu")
        check_out_result(result, out, out_kind)
        if out_kind == "in place":
            assert result is x
        elif x_before is not None:
            assert np.array_equal(x, x_before, equal_nan=True), "relu changed its input"

    expect("relu", valid, lambda: fastconv.relu(x, out=out, num_threads=num_threads),
           reference, compare)


# ---------------------------------------------------------------------------------------------
# correlate2d / convolve2d


@st.composite
def correlate_args(draw):
    valid = draw(st.booleans())
    mode = draw(st.sampled_from(["valid", "same", "full"] if valid else
                                ["valid", "same", "full", "FULL", None, 2]))
    if valid:
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        if mode == "valid":
            h, w = draw(st.integers(kh, 9)), draw(st.integers(kw, 9))
            if draw(st.booleans()):  # scipy swaps a kernel larger in every dimension
                (h, w), (kh, kw) = (kh, kw), (h, w)
        else:
            h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        image_shape, kernel_shape = (h, w), (kh, kw)
        dtype_i, dtype_k = (draw(st.one_of(st.sampled_from(GOOD_FLOATS),
                                           st.sampled_from(OTHER_GOOD_DTYPES)))
                            for _ in range(2))
    else:
        image_shape = tuple(draw(st.lists(st.integers(0, 7), min_size=1, max_size=3)))
        kernel_shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
        dtype_i, dtype_k = draw(dtypes()), draw(dtypes())
    image = make_array(draw(seeds), image_shape, dtype_i, draw(st.sampled_from(MEMORY)),
                       draw(value_kinds))
    kernel = make_array(draw(seeds), kernel_shape, dtype_k, draw(st.sampled_from(MEMORY)),
                        draw(value_kinds))
    return valid, image, kernel, mode


@FUZZ_SETTINGS
@given(st.data(), st.sampled_from(["correlate2d", "convolve2d"]))
def test_fuzz_correlate_convolve(data, op):
    valid, image, kernel, mode = data.draw(correlate_args())
    reference = getattr(ref, f"{op}_reference")

    def compare(result, expected):
        with np.errstate(invalid="ignore", over="ignore"):
            scale = reference(np.abs(as_ndarray(image).astype(np.float64)),
                              np.abs(as_ndarray(kernel).astype(np.float64)), mode)
        assert_close(result, expected, scale, as_ndarray(kernel).size, op)

    def call_reference():
        result = reference(image, kernel, mode)
        mask = correlate_nan_mask(reference, image, kernel, mode)
        return np.where(mask, np.nan, result).astype(result.dtype)

    expect(op, valid, lambda: getattr(fastconv, op)(image, kernel, mode), call_reference,
           compare)


@pytest.mark.parametrize("call", [
    lambda: fastconv.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), padding=-1),
    lambda: fastconv.max_pool2d(np.zeros((1, 1, 3, 3), complex), 2),
    lambda: fastconv.relu(np.zeros(3), out=np.zeros(4)),
])
def test_errors_are_value_or_type_errors(call):
    """The contract's other half, pinned on a few hand-picked calls."""
    with pytest.raises((ValueError, TypeError)):
        call()


# ---------------------------------------------------------------------------------------------
# layers.Sequential: the fused conv -> ReLU -> pool kernel must give the bits of the layers run
# one by one (and both must match the reference)


@st.composite
def fused_stack_args(draw):
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    dtype = draw(st.sampled_from(GOOD_FLOATS))
    n, c, f = draw(st.integers(0, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 20))
    k = draw(st.integers(1, 3))
    stride, dilation, pool = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(
        st.integers(1, 3))
    padding = draw(st.one_of(st.integers(0, 2), st.just("same")))
    groups = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0 and f % g == 0] or [1]))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    x = make_array(draw(seeds), (n, c, h, w) if layout == "NCHW" else (n, h, w, c), dtype,
                   draw(st.sampled_from(MEMORY)), draw(value_kinds))
    weight = make_array(draw(seeds), (f, c // groups, k, k), dtype, "contiguous", "normal")
    bias = make_array(draw(seeds), (f,), dtype, "contiguous") if draw(st.booleans()) else None
    relu = draw(st.booleans())
    conv_kwargs = {"stride": stride, "padding": padding, "dilation": dilation,
                   "groups": groups}
    return layout, x, weight, bias, conv_kwargs, relu, pool


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_fused_layers(data):
    layout, x, weight, bias, conv_kwargs, relu, pool = data.draw(fused_stack_args())
    layers = fastconv.layers
    stack = [layers.Conv2D(weight, bias, **conv_kwargs)]
    stack += [layers.ReLU()] if relu else []
    stack += [layers.MaxPool2D(pool)]
    num_threads = data.draw(st.sampled_from([None, 1, 2]))

    def separate():
        y = fastconv.conv2d(x, weight, bias, layout=layout, num_threads=num_threads,
                            **conv_kwargs)
        if relu:
            y = fastconv.relu(y)
        return fastconv.max_pool2d(y, pool, layout=layout)

    try:
        expected = separate()
    except (ValueError, TypeError):
        expected = None  # e.g. the conv output is smaller than the pool window
    try:
        result = layers.Sequential(stack)(x, layout=layout, num_threads=num_threads)
    except (ValueError, TypeError):
        assert expected is None, "the stack refused what the layers one by one accept"
        OUTCOMES[("Sequential", "refused")] += 1
        return
    assert expected is not None, "the stack accepted what the layers one by one refuse"
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert result.tobytes() == expected.tobytes(), "fused stack differs from separate layers"
    OUTCOMES[("Sequential", "ok")] += 1
