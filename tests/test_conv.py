"""fastconv.conv2d against the NumPy reference, PyTorch's conventions and the spec (issue 2).

Values are checked two ways: random floats within |y - ref| <= c * eps * conv(|x|, |w|) + |b|
(computed in float64), and small integer-valued floats, which must match exactly because every
partial sum is representable (a wrong reduction cannot hide inside a tolerance).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import fastconv
from fastconv.reference import conv2d_reference, conv_padding_reference, result_dtype

DTYPES = [np.float32, np.float64]
LAYOUTS = ["NCHW", "NHWC"]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]
# Multiple of the rounding error per term allowed; a fixed-order blocked FMA reduction over
# a few hundred terms stays far below it, a wrong index or a lost term is far above it.
TOL_C = 16.0

REFERENCE_KEYS = ("stride", "padding", "dilation", "groups", "padding_mode", "layout",
                  "activation")


def x_shape(n, c, h, w, layout, unbatched=False):
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    return shape[1:] if unbatched else shape


def make_inputs(rng, *, n=2, c=4, h=7, w=8, f=3, kernel=(3, 3), groups=1, layout="NCHW",
                unbatched=False, dtype=np.float32, integer=False, bias=True):
    """Random (or small-integer) x, weight, bias for conv2d."""
    kh, kw = kernel
    xs = x_shape(n, c, h, w, layout, unbatched)
    ws = (f, c // groups, kh, kw)
    if integer:
        x = rng.integers(-3, 4, size=xs).astype(dtype)
        weight = rng.integers(-3, 4, size=ws).astype(dtype)
        b = rng.integers(-4, 5, size=f).astype(dtype) if bias else None
    else:
        x = rng.standard_normal(xs).astype(dtype)
        weight = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) if bias else None
    return x, weight, b


def conv_bound(x, weight, bias, **kwargs):
    """conv(|x|, |w|) + |b| in float64: the scale of the rounding error of each output."""
    kwargs = {k: v for k, v in kwargs.items() if k in REFERENCE_KEYS and k != "activation"}
    absb = None if bias is None else np.abs(np.asarray(bias, dtype=np.float64))
    return conv2d_reference(np.abs(np.asarray(x, dtype=np.float64)),
                            np.abs(np.asarray(weight, dtype=np.float64)), absb, **kwargs)


@pytest.fixture
def check_conv(assert_within_tolerance):
    """Run conv2d, compare dtype, shape and values with the reference; return the result."""

    def _check(x, weight, bias=None, *, exact=False, c=TOL_C, **kwargs):
        y = fastconv.conv2d(x, weight, bias, **kwargs)
        ref_kwargs = {k: v for k, v in kwargs.items() if k in REFERENCE_KEYS}
        ref = conv2d_reference(x, weight, bias, **ref_kwargs)
        assert isinstance(y, np.ndarray)
        assert y.dtype == ref.dtype, (y.dtype, ref.dtype)
        assert y.shape == ref.shape, (y.shape, ref.shape)
        if exact:
            assert_array_equal(y, ref)
        else:
            assert_within_tolerance(y, ref, conv_bound(x, weight, bias, **ref_kwargs), c=c)
        return y

    return _check


# --------------------------------------------------------------------------------------------
# Differential grids
# --------------------------------------------------------------------------------------------

PADDING_FORMS = [0, 2, (1, 0), (0, 2), (2, 1, 0, 1), (0, 1, 2, 0), "valid", "same"]


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("padding", PADDING_FORMS, ids=repr)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("integer", [False, True], ids=["random", "ints"])
def test_padding_grid(check_conv, rng, integer, dtype, layout, padding, padding_mode):
    x, w, b = make_inputs(rng, n=2, c=5, h=6, w=7, f=3, layout=layout, dtype=dtype,
                          integer=integer)
    check_conv(x, w, b, padding=padding, padding_mode=padding_mode, layout=layout,
               exact=integer)


KERNELS = [(1, 1), (3, 3), (5, 5), (2, 3), (7, 7)]
STRIDES = [1, 2, 3, (2, 1), (1, 3)]
DILATIONS = [1, 2, (1, 3)]


@pytest.mark.parametrize("padding", [0, "same"], ids=repr)
@pytest.mark.parametrize("dilation", DILATIONS, ids=repr)
@pytest.mark.parametrize("stride", STRIDES, ids=repr)
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k[0]}x{k[1]}")
@pytest.mark.parametrize("integer", [False, True], ids=["random", "ints"])
def test_geometry_grid(check_conv, rng, integer, kernel, stride, dilation, padding):
    dtype = np.float32 if integer else np.float64
    layout = "NHWC" if (sum(kernel) + len(repr(stride))) % 2 else "NCHW"
    x, w, b = make_inputs(rng, n=1, c=3, h=15, w=20, f=5, kernel=kernel, layout=layout,
                          dtype=dtype, integer=integer)
    check_conv(x, w, b, stride=stride, dilation=dilation, padding=padding, layout=layout,
               exact=integer)


# (C, F, groups): grouped, depthwise (groups == C), depthwise with multiplier, and channel
# counts around SIMD widths (not multiples of 16, and exact multiples).
GROUP_CONFIGS = [(6, 4, 2), (6, 9, 3), (5, 5, 5), (4, 8, 4), (18, 6, 1), (17, 19, 1),
                 (16, 32, 1), (12, 40, 2)]


@pytest.mark.parametrize("activation", [None, "relu"], ids=["noact", "relu"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cfg", GROUP_CONFIGS, ids=lambda t: "C%d_F%d_g%d" % t)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_groups_grid(check_conv, rng, dtype, cfg, layout, unbatched, bias, activation):
    c, f, groups = cfg
    x, w, b = make_inputs(rng, n=2, c=c, h=6, w=5, f=f, groups=groups, layout=layout,
                          unbatched=unbatched, dtype=dtype, bias=bias)
    y = check_conv(x, w, b, groups=groups, padding=1, layout=layout, activation=activation)
    if activation == "relu":
        assert (y >= 0).all()
    # the same configuration with small integers must be exact
    x, w, b = make_inputs(rng, n=2, c=c, h=6, w=5, f=f, groups=groups, layout=layout,
                          unbatched=unbatched, dtype=dtype, bias=bias, integer=True)
    check_conv(x, w, b, groups=groups, padding=1, layout=layout, activation=activation,
               exact=True)


def _geometry_fits(h, w, kernel, stride, dilation, padding, mode):
    """Whether conv2d accepts this geometry: the padding mode can pad that much, and the
    dilated kernel fits in the padded input."""
    (kh, kw), (dh, dw) = kernel, dilation
    pads = conv_padding_reference(padding, (h, w), kernel, stride, dilation)
    if mode == "reflect" and (max(pads[:2]) >= h or max(pads[2:]) >= w):
        return False
    if mode == "circular" and (max(pads[:2]) > h or max(pads[2:]) > w):
        return False
    return (h + pads[0] + pads[1] >= dh * (kh - 1) + 1
            and w + pads[2] + pads[3] >= dw * (kw - 1) + 1)


def _random_configs(count, seed):
    """Seeded random configurations over every parameter at once (deterministic in CI)."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        depthwise = rng.random() < 0.25
        cg = 1 if depthwise else int(rng.integers(1, 6))
        fg = int(rng.integers(1, 6))
        kh, kw = (int(k) for k in rng.integers(1, 6, 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
        h, w = (int(s) for s in rng.integers(3, 12, 2))
        mode = str(rng.choice(PADDING_MODES))
        form = int(rng.integers(0, 5))
        padding = [int(rng.integers(0, 3)), tuple(int(p) for p in rng.integers(0, 3, 2)),
                   tuple(int(p) for p in rng.integers(0, 3, 4)), "valid", "same"][form]
        if not _geometry_fits(h, w, (kh, kw), stride, dilation, padding, mode):
            continue
        configs.append(dict(
            n=int(rng.integers(1, 3)), c=groups * cg, f=groups * fg, h=h, w=w, kernel=(kh, kw),
            groups=groups, stride=stride if stride[0] != stride[1] else stride[0],
            dilation=dilation, padding=padding, padding_mode=mode,
            layout=str(rng.choice(LAYOUTS)), unbatched=bool(rng.random() < 0.2),
            bias=bool(rng.random() < 0.7), activation=None if rng.random() < 0.7 else "relu",
            dtype=[np.float32, np.float64][int(rng.integers(0, 2))],
            integer=bool(rng.random() < 0.5)))
    return configs


def _config_id(cfg):
    return "-".join(f"{k}={v if not isinstance(v, type) else v.__name__}"
                    for k, v in cfg.items()).replace(" ", "")


@pytest.mark.parametrize("cfg", _random_configs(150, seed=7), ids=_config_id)
def test_mixed_configs(check_conv, rng, cfg):
    cfg = dict(cfg)
    make = {k: cfg.pop(k) for k in ("n", "c", "f", "h", "w", "kernel", "unbatched", "bias",
                                    "dtype", "integer")}
    x, w, b = make_inputs(rng, groups=cfg["groups"], layout=cfg["layout"], **make)
    check_conv(x, w, b, exact=make["integer"], **cfg)


def _depthwise_configs(count, seed):
    """Depthwise layers (one input channel per group, 1-7 filters each: the stencil
    kernel), wide enough for whole 4-vector tiles and tall enough to split into bands."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        c = int(rng.choice([1, 3, 17, 20]))
        kh, kw = (int(k) for k in rng.integers(1, 8, 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
        h, w = (int(s) for s in rng.integers(1, 90, 2))
        mode = str(rng.choice(PADDING_MODES))
        padding = [int(rng.integers(0, 4)), "same", "valid"][int(rng.integers(0, 3))]
        if not _geometry_fits(h, w, (kh, kw), stride, dilation, padding, mode):
            continue
        configs.append(dict(
            n=int(rng.integers(1, 3)), c=c, f=c * int(rng.choice([1, 1, 2, 3, 7])), h=h, w=w,
            kernel=(kh, kw), groups=c, stride=stride, dilation=dilation, padding=padding,
            padding_mode=mode, layout=str(rng.choice(LAYOUTS)),
            bias=bool(rng.random() < 0.7), activation=None if rng.random() < 0.7 else "relu",
            dtype=[np.float32, np.float64][int(rng.integers(0, 2))]))
    return configs


@pytest.mark.parametrize("cfg", _depthwise_configs(40, seed=11), ids=_config_id)
def test_depthwise_configs(check_conv, rng, cfg):
    cfg = dict(cfg)
    make = {k: cfg.pop(k) for k in ("n", "c", "f", "h", "w", "kernel", "bias", "dtype")}
    x, w, b = make_inputs(rng, groups=cfg["groups"], layout=cfg["layout"], integer=True, **make)
    check_conv(x, w, b, exact=True, **cfg)
    x, w, b = make_inputs(rng, groups=cfg["groups"], layout=cfg["layout"], **make)
    check_conv(x, w, b, **cfg)


@pytest.mark.parametrize("width", [1, 8, 9, 17, 31, 33, 64])
def test_depthwise_rows_written_in_place_stay_in_their_band(rng, width):
    """NCHW depthwise rows are stored straight into the output, junk lanes included, onto
    the next row of the same band; bands of other tasks (threads) must never see them."""
    x = rng.integers(-3, 4, size=(2, 3, 150, width)).astype(np.float32)
    w = rng.integers(-3, 4, size=(6, 1, 3, 3)).astype(np.float32)
    expected = conv2d_reference(x, w, padding=1, groups=3).astype(np.float32)
    for threads in (1, 2, 4):
        assert_array_equal(fastconv.conv2d(x, w, padding=1, groups=3, num_threads=threads),
                           expected)


@pytest.mark.parametrize("per_group, in_per_group, expected", [
    (1, 1, True), (2, 1, True), (3, 1, True), (7, 1, True), (8, 1, False), (1, 2, False)])
def test_depthwise_kernel_serves_one_input_channel_per_group(monkeypatch, rng, per_group,
                                                             in_per_group, expected):
    x, w, b = make_inputs(rng, c=4 * in_per_group, f=4 * per_group, groups=4, integer=True)
    call, *_ = fastconv.conv._validate(x, w, b, 1, 1, 1, 4, "zeros", "NCHW", None, 1)
    assert (call.path == "depthwise") == expected
    assert isinstance(call.runner, fastconv.conv._kernels.DepthwiseCall if expected
                      else fastconv.conv._kernels.GemmCall)
    y = fastconv.conv2d(x, w, b, groups=4, padding=1)
    assert_array_equal(y, conv2d_reference(x, w, b, groups=4, padding=1).astype(np.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pool", [2, 3])
def test_depthwise_fused_pooling_equals_separate_calls(rng, layout, stride, pool):
    """conv -> ReLU -> pool in the depthwise kernel: the bits of the three separate calls."""
    from fastconv.conv import _conv2d

    x, w, b = make_inputs(rng, n=2, c=24, h=45, w=37, f=24, kernel=(5, 5), groups=24,
                          layout=layout)
    fused = _conv2d(x, w, b, stride, 2, 1, 24, "zeros", layout, "relu", None, None, pool)
    separate = fastconv.max_pool2d(
        fastconv.conv2d(x, w, b, stride=stride, padding=2, groups=24, layout=layout,
                        activation="relu"), pool, layout=layout)
    assert_array_equal(fused.view(np.uint32), separate.view(np.uint32))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, h, w, stride, pool", [
    (5, 7, 7, 1, 1),     # rows staged (a 7-wide row is under half a vector)
    (3, 14, 14, 2, 1),   # two column phases
    (2, 9, 20, 1, 1),    # rows straight into the output
    (4, 12, 13, 1, 2),   # fused pooling
    (1, 10, 10, 2, 2),
])
def test_depthwise_small_planes_share_a_task(rng, n, h, w, stride, pool, dtype):
    """NCHW depthwise layers with small planes give each task several channels (one slab,
    one copy-out per task): exact for any thread count, with ReLU and fused pooling."""
    from fastconv import _conv_plan
    from fastconv.conv import _conv2d

    c = 40
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=2 * c, kernel=(3, 3), groups=c,
                               integer=True, dtype=dtype)
    out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
    plan = _conv_plan.depthwise_plan(
        n_images=n, groups=c, multiplier=2, height=h, width=w, out_h=out_h, out_w=out_w,
        kernel=(3, 3), stride=(stride, stride), dilation=(1, 1), pads=(1, 1, 1, 1),
        padding_mode="zeros", lanes=4, itemsize=np.dtype(dtype).itemsize,
        channels_last=False, row_multiple=pool)
    assert plan.groups_per_task > 1
    expected = conv2d_reference(x, weight, b, stride=stride, padding=1, groups=c).astype(dtype)
    if pool > 1:
        expected = fastconv.max_pool2d(np.maximum(expected, 0), pool)
    for threads in (1, 2, 3):
        got = _conv2d(x, weight, b, stride, 1, 1, c, "zeros", "NCHW",
                      "relu" if pool > 1 else None, None, threads, pool)
        assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("n, c, h, w, view", [
    (2, 5, 50, 37, None),          # bands of rows ending inside a vector
    (1, 3, 7, 48, None),           # whole vectors only
    (4, 6, 10, 10, None),          # short rows: planar too, not channel-blocked
    (4, 6, 7, 7, None),            # small planes: channel-blocked
    (1, 1, 100, 1, None),          # bands of 13 pixels, shorter than a vector
    (1, 1, 8, 8, None),            # bands of one row
    (3, 4, 33, 35, "channels"),    # every other channel of a wider x: planes apart
    (2, 3, 20, 40, "columns"),     # rows longer than the plane's width: read via the slab
    (2, 5, 13, 11, "out"),         # out= one element past a vector boundary
])
def test_depthwise_pointwise_reads_x_in_place(rng, n, c, h, w, view, m, dtype):
    """A 1x1 depthwise filter at stride 1 without padding scales its channel: on planes of
    at least DEPTHWISE_POINTWISE_PIXELS the kernel reads contiguous rows of x in place and
    stores whole vectors, the last one overlapping. Exact for any thread count, with and
    without ReLU and bias, into a misaligned out=, and x is left as it was."""
    from fastconv import _conv_plan
    shape = {"channels": (n, 2 * c, h, w), "columns": (n, c, h, w + 5)}.get(view, (n, c, h, w))
    base = rng.integers(-4, 5, size=shape).astype(dtype)
    x = {"channels": base[:, ::2], "columns": base[..., :w]}.get(view, base)
    weight = rng.integers(-3, 4, size=(c * m, 1, 1, 1)).astype(dtype)
    bias = rng.integers(-3, 4, size=c * m).astype(dtype)
    before = base.copy()
    plan = _conv_plan.depthwise_plan(
        n_images=n, groups=c, multiplier=m, height=h, width=w, out_h=h, out_w=w,
        kernel=(1, 1), stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
        padding_mode="zeros", lanes=16, itemsize=np.dtype(dtype).itemsize,
        channels_last=False)
    assert bool(plan.blocked) == (h * w < _conv_plan.DEPTHWISE_POINTWISE_PIXELS)
    out_size = n * c * m * h * w
    for b in (bias, None):
        expected = conv2d_reference(x, weight, b, groups=c).astype(dtype)
        for threads in (1, 2, 3):
            assert_array_equal(fastconv.conv2d(x, weight, b, groups=c, num_threads=threads),
                               expected)
            out = None
            if view == "out":
                out = np.full(out_size + 1, np.nan, dtype)[1:].reshape(expected.shape)
            got = fastconv.conv2d(x, weight, b, groups=c, num_threads=threads,
                                  activation="relu", out=out)
            assert_array_equal(got, np.maximum(expected, 0))
    assert_array_equal(base, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_depthwise_pointwise_streams_large_outputs(rng, dtype):
    """A 1x1 depthwise output of FC_STREAM_MIN_BYTES (16 MiB) or more leaves the kernel in
    non-temporal stores between ordinary ones: the same values, planes starting anywhere
    within a vector."""
    n, c, h, w = 1, 37, 331, 347 if np.dtype(dtype).itemsize == 4 else 173
    assert n * c * h * w * np.dtype(dtype).itemsize >= 16 << 20
    x = rng.integers(-4, 5, size=(n, c, h, w)).astype(dtype)
    weight = rng.integers(-3, 4, size=(c, 1, 1, 1)).astype(dtype)
    bias = rng.integers(-3, 4, size=c).astype(dtype)
    expected = (x * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)).astype(dtype)
    for threads in (1, 2):
        assert_array_equal(fastconv.conv2d(x, weight, bias, groups=c, num_threads=threads),
                           expected)
        assert_array_equal(fastconv.conv2d(x, weight, bias, groups=c, num_threads=threads,
                                           activation="relu"), np.maximum(expected, 0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, c, m, h, w, kernel, kwargs", [
    (3, 37, 1, 7, 7, (3, 3), dict(padding=1)),                  # a partial last channel block
    (2, 16, 2, 14, 14, (5, 5), dict(stride=2, padding=2)),      # two filters per channel
    (4, 24, 1, 9, 11, (5, 5), dict(dilation=2, padding=4)),     # wider padding than input
    (1, 40, 1, 6, 5, (3, 3), dict(padding=1, padding_mode="reflect")),
    (2, 20, 1, 5, 6, (3, 3), dict(padding=2, padding_mode="circular")),  # rows far apart
    (1, 33, 2, 10, 3, (3, 2), dict(padding=(1, 0), padding_mode="replicate")),
    (5, 8, 1, 30, 28, (3, 3), dict(padding=1)),                 # 28 wide, NCHW too
    (1, 20, 1, 70, 12, (7, 7), dict(padding=3)),                # bands of rows
    (1, 8, 1, 40, 9, (3, 3), dict(padding=1, padding_mode="circular")),  # a band's rows wrap
    (2, 12, 3, 9, 9, (3, 3), dict(padding=1)),                  # three filters per channel
    (1, 8, 5, 6, 14, (5, 5), dict(stride=2, padding=2)),        # five
    (1, 12, 1, 9, 45, (5, 5), dict(padding=2)),                 # wide rows, 5x5
    (2, 9, 1, 7, 51, (7, 7), dict(padding=3, padding_mode="reflect")),  # wide rows, 7x7
])
def test_depthwise_channel_blocked(rng, n, c, m, h, w, kernel, kwargs, layout, dtype):
    """Short output rows take the channel-blocked depthwise kernel (a vector holds
    adjacent channels of one pixel): exact for every padding mode, stride, dilation and
    multiplier, in both layouts, with ReLU, for strided views, for any thread count."""
    from fastconv import _conv_plan

    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=c * m, kernel=kernel, groups=c,
                               integer=True, dtype=dtype)
    kwargs = dict(kwargs, groups=c)
    call, *_ = fastconv.conv._validate(
        x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1)), weight, b,
        kwargs.get("stride", 1), kwargs.get("padding", 0), kwargs.get("dilation", 1), c,
        kwargs.get("padding_mode", "zeros"), layout, None, 1)
    assert call.runner.plan.blocked > 1
    assert _conv_plan.DEPTHWISE_BLOCKED_WIDTH >= 28
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    if layout == "NCHW":
        assert_exact_across_paths(x, weight, b, expected, **kwargs)
        assert_exact_through_row_view(x, weight, b, expected, **kwargs)
        # a strided view of the columns: element by element
        assert_array_equal(fastconv.conv2d(np.repeat(x, 2, axis=3)[..., ::2], weight, b,
                                           **kwargs), expected)
    else:
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for threads in (1, 2, 3):
            got = fastconv.conv2d(nhwc, weight, b, layout="NHWC", num_threads=threads,
                                  activation="relu", **kwargs)
            assert_array_equal(got, np.maximum(expected, 0).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("kernel, out_w, lanes, blocked", [
    ((7, 7), 56, 16, True),     # a partial last vector under 49 taps
    ((5, 5), 40, 16, True),
    ((5, 5), 45, 8, True),
    ((7, 7), 64, 16, False),    # whole vectors
    ((7, 7), 56, 8, False),
    ((3, 3), 56, 16, False),    # too few taps to share the transposes
    ((7, 7), 120, 16, False),   # wider than DEPTHWISE_BLOCKED_TAIL_WIDTH
])
def test_depthwise_blocked_rule_for_wide_rows(kernel, out_w, lanes, blocked):
    """NCHW rows wider than DEPTHWISE_BLOCKED_WIDTH take the channel-blocked kernel only
    under 5x5 or larger filters, up to DEPTHWISE_BLOCKED_TAIL_WIDTH, when they end in a
    partial vector; two filters per channel keep the planar kernel."""
    from fastconv import _conv_plan
    kh, kw = kernel
    for multiplier in (1, 2):
        plan = _conv_plan.depthwise_plan(
            n_images=1, groups=32, multiplier=multiplier, height=out_w, width=out_w,
            out_h=out_w, out_w=out_w, kernel=kernel, stride=(1, 1), dilation=(1, 1),
            pads=(kh // 2, kh // 2, kw // 2, kw // 2), padding_mode="zeros", lanes=lanes,
            itemsize=4, channels_last=False)
        assert bool(plan.blocked) == (blocked and multiplier == 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f", [
    (1, 1, 3, 5, 8),     # bands of one row: 5 slab columns, a single vector
    (1, 2, 4, 5, 8),
    (1, 1, 3, 5, 16),
    (1, 3, 5, 9, 8),
])
def test_bands_of_one_vector_with_junk_columns(rng, n, c, h, w, f, dtype):
    """Bands of one vector with junk columns whose output rows are short enough to be tiled
    row by row elsewhere (4 of 8 float64 lanes): the staged tile is copied out. Every
    element is written (out= filled with NaN), for 1 and 2 threads."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=(2, 2), integer=True,
                               dtype=dtype)
    expected = conv2d_reference(x, weight, b).astype(dtype)
    for threads in (1, 2):
        out = np.full(expected.shape, np.nan, dtype)
        fastconv.conv2d(x, weight, b, out=out, num_threads=threads)
        assert_array_equal(out, expected)
        assert_array_equal(fastconv.conv2d(x, weight, b, num_threads=threads), expected)


# Larger layers that reach the blocked / packed / parallel paths of the kernel.
LARGER = [
    dict(n=2, c=3, h=32, w=32, f=64, kernel=(3, 3), padding="same"),  # seed layer, small
    dict(n=1, c=20, h=19, w=21, f=40, kernel=(3, 3), padding=1),
    dict(n=2, c=33, h=12, w=13, f=17, kernel=(1, 1), padding=0),
    dict(n=1, c=16, h=17, w=18, f=48, kernel=(5, 5), padding=2, stride=2),
    dict(n=1, c=8, h=24, w=23, f=24, kernel=(3, 3), padding=1, groups=2),
    dict(n=1, c=32, h=16, w=15, f=32, kernel=(3, 3), padding=1, groups=32),
    dict(n=1, c=7, h=30, w=31, f=70, kernel=(7, 7), padding=3, stride=2),
    dict(n=3, c=64, h=7, w=7, f=128, kernel=(3, 3), padding=1),
    dict(n=1, c=128, h=9, w=9, f=20, kernel=(1, 1), padding=0, stride=2),
    dict(n=1, c=4, h=40, w=9, f=9, kernel=(2, 3), padding=(0, 1, 2, 0), dilation=(2, 1)),
    dict(n=1, c=96, h=6, w=7, f=33, kernel=(3, 3), padding=1, activation="relu"),  # depth 864
    dict(n=2, c=300, h=5, w=5, f=10, kernel=(1, 1), padding=0, activation="relu"),
    dict(n=1, c=40, h=8, w=8, f=24, kernel=(5, 5), padding=2, groups=4, activation="relu"),
    # Slab of a few KiB: swept once per block of filters (the loop order for small maps),
    # over five chunks of input channels, with a partial last tile.
    dict(n=2, c=120, h=6, w=5, f=44, kernel=(3, 3), padding=1),
]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", LARGER, ids=lambda c: "C%(c)d_F%(f)d_%(h)dx%(w)d" % c)
def test_larger_layers(check_conv, rng, cfg, dtype, layout, padding_mode):
    cfg = dict(cfg)
    make = {k: cfg.pop(k) for k in ("n", "c", "f", "h", "w", "kernel")}
    x, w, b = make_inputs(rng, groups=cfg.get("groups", 1), layout=layout, dtype=dtype,
                          integer=True, **make)
    check_conv(x, w, b, layout=layout, padding_mode=padding_mode, exact=True, **cfg)
    x, w, b = make_inputs(rng, groups=cfg.get("groups", 1), layout=layout, dtype=dtype, **make)
    check_conv(x, w, b, layout=layout, padding_mode=padding_mode, **cfg)


# --------------------------------------------------------------------------------------------
# Randomised differential test (hypothesis)
# --------------------------------------------------------------------------------------------

@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    cg = draw(st.sampled_from([1, 1, 2, 3, 5]))
    fg = draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(PADDING_MODES))
    form = draw(st.sampled_from(["int", "pair", "quad", "valid", "same"]))
    if form == "int":
        p = draw(st.integers(0, 3))
        padding, pads = p, (p, p, p, p)
    elif form == "pair":
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        padding, pads = (ph, pw), (ph, ph, pw, pw)
    elif form == "quad":
        padding = pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    else:
        padding, pads = form, (0, 0, 0, 0)
    ext_h, ext_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # smallest input that fits the kernel (and the padding mode's own rule)
    lo_h = max(1, ext_h - pads[0] - pads[1])
    lo_w = max(1, ext_w - pads[2] - pads[3])
    if mode == "reflect":
        lo_h, lo_w = max(lo_h, max(pads[:2]) + 1), max(lo_w, max(pads[2:]) + 1)
    elif mode == "circular":
        lo_h, lo_w = max(lo_h, max(pads[:2])), max(lo_w, max(pads[2:]))
    h = draw(st.integers(lo_h, lo_h + 6))
    w = draw(st.integers(lo_w, lo_w + 6))
    if form == "same":
        top, bottom, left, right = conv_padding_reference("same", (h, w), (kh, kw), (sh, sw),
                                                          (dh, dw))
        if mode == "reflect":
            assume(max(top, bottom) < h and max(left, right) < w)
        if mode == "circular":
            assume(max(top, bottom) <= h and max(left, right) <= w)
    stride = draw(st.sampled_from([(sh, sw), [sh, sw]])) if sh != sw else draw(
        st.sampled_from([sh, (sh, sh)]))
    dilation = (dh, dw) if dh != dw else draw(st.sampled_from([dh, (dh, dh)]))
    return dict(
        n=draw(st.sampled_from([0, 1, 1, 2, 3])), c=groups * cg, f=groups * fg, h=h, w=w,
        kernel=(kh, kw), groups=groups, stride=stride, dilation=dilation, padding=padding,
        padding_mode=mode, layout=draw(st.sampled_from(LAYOUTS)), unbatched=draw(st.booleans()),
        bias=draw(st.booleans()), activation=draw(st.sampled_from([None, "relu"])),
        dtype=draw(st.sampled_from(DTYPES)), integer=draw(st.booleans()))


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cfg=conv_problems(), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_differential(check_conv, cfg, seed):
    rng = np.random.default_rng(seed)
    make = {k: cfg.pop(k) for k in ("n", "c", "f", "h", "w", "kernel", "unbatched", "bias",
                                    "dtype", "integer")}
    if make["unbatched"]:
        make["n"] = 1
    x, w, b = make_inputs(rng, groups=cfg["groups"], layout=cfg["layout"], **make)
    check_conv(x, w, b, exact=make["integer"], **cfg)


# --------------------------------------------------------------------------------------------
# Edge shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_seed_two_filters(layout, unbatched):
    """The seed's PyTorch example: one 4x4 image, two 2x2 filters, zero bias."""
    image = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    weight = np.array([[[[1, 1], [-1, -1]]], [[[0, 1], [1, 0]]]], dtype=np.float32)
    x = image[None] if layout == "NCHW" else image[:, :, None]
    if not unbatched:
        x = x[None]
    y = fastconv.conv2d(x, weight, np.zeros(2, np.float32), layout=layout)
    maps = y if unbatched else y[0]
    if layout == "NHWC":
        maps = np.moveaxis(maps, -1, 0)
    assert maps.shape == (2, 3, 3)
    assert_array_equal(maps[0], np.full((3, 3), -8.0))
    assert_array_equal(maps[1], [[7, 9, 11], [15, 17, 19], [23, 25, 27]])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding", [0, "same", (1, 2, 0, 1)], ids=repr)
def test_empty_batch(layout, padding):
    x = np.zeros(x_shape(0, 4, 6, 7, layout), np.float32)
    w = np.ones((6, 2, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, np.ones(6, np.float32), padding=padding, groups=2, layout=layout)
    ref = conv2d_reference(np.zeros(x_shape(1, 4, 6, 7, layout)), w, padding=padding, groups=2,
                           layout=layout)
    assert y.shape == (0,) + ref.shape[1:]
    assert y.dtype == np.float32
    out = np.empty_like(y)
    assert fastconv.conv2d(x, w, padding=padding, groups=2, layout=layout, out=out) is out


@pytest.mark.parametrize("padding_mode", ["zeros", "replicate", "circular"])
@pytest.mark.parametrize("padding", [3, 4, (5, 3), (0, 6, 4, 0)], ids=repr)
def test_padding_at_least_kernel(check_conv, rng, padding, padding_mode):
    x, w, b = make_inputs(rng, n=2, c=3, h=6, w=6, f=4, integer=True)
    check_conv(x, w, b, padding=padding, padding_mode=padding_mode, exact=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padding_only_windows_give_bias(layout):
    """With zero padding wider than the kernel, border outputs see only padding: exactly bias."""
    x = np.ones(x_shape(1, 2, 3, 3, layout), np.float64)
    w = np.ones((3, 2, 2, 2))
    b = np.array([0.5, -1.0, 2.0])
    y = fastconv.conv2d(x, w, b, padding=4, layout=layout)
    if layout == "NHWC":
        y = np.moveaxis(y, -1, 1)
    assert y.shape == (1, 3, 10, 10)
    for f in range(3):
        assert_array_equal(y[0, f, 0, :], b[f])
        assert_array_equal(y[0, f, :, -1], b[f])
    assert_array_equal(y[0, :, 4, 4], 8 + b)


def test_reflect_largest_padding(check_conv, rng):
    # reflect allows padding up to size - 1 (PyTorch's rule)
    x, w, b = make_inputs(rng, n=1, c=2, h=4, w=3, f=2, integer=True)
    check_conv(x, w, b, padding=(3, 2), padding_mode="reflect", exact=True)


def test_circular_padding_equal_to_size(check_conv, rng):
    x, w, b = make_inputs(rng, n=1, c=2, h=4, w=3, f=2, integer=True)
    check_conv(x, w, b, padding=(4, 3), padding_mode="circular", exact=True)


@pytest.mark.parametrize("padding", [0, 1, (0, 2, 1, 0)], ids=repr)
def test_kernel_equals_padded_input(check_conv, rng, padding):
    top, bottom, left, right = conv_padding_reference(padding, (3, 4), (1, 1))
    kernel = (3 + top + bottom, 4 + left + right)
    x, w, b = make_inputs(rng, n=2, c=3, h=3, w=4, f=5, kernel=kernel, integer=True)
    y = check_conv(x, w, b, padding=padding, exact=True)
    assert y.shape == (2, 5, 1, 1)


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, (3, 2)], ids=repr)
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (6, 6), (7, 4)], ids=repr)
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 1)], ids=repr)
def test_same_padding_output_size(check_conv, rng, size, stride, kernel):
    """'same' gives ceil(H / stride) with the odd pixel at the bottom/right (SAME_UPPER)."""
    h, w = size
    x, wt, b = make_inputs(rng, n=1, c=2, h=h, w=w, f=3, kernel=kernel, integer=True)
    y = check_conv(x, wt, b, stride=stride, padding="same", exact=True)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    assert y.shape[2:] == (-(-h // sh), -(-w // sw))


def test_same_padding_even_kernel_pads_bottom_right():
    """A 2x2 box filter with 'same' on ones: the last row/column sees the zero padding."""
    x = np.ones((1, 1, 3, 3))
    y = fastconv.conv2d(x, np.ones((1, 1, 2, 2)), padding="same")
    assert_array_equal(y[0, 0], [[4, 4, 2], [4, 4, 2], [2, 2, 1]])


def test_valid_padding_is_zero(rng):
    x, w, b = make_inputs(rng, integer=True)
    assert_array_equal(fastconv.conv2d(x, w, b, padding="valid"), fastconv.conv2d(x, w, b))


def test_nan_propagates_only_to_windows_that_see_it():
    x = np.zeros((1, 1, 8, 9))
    x[0, 0, 3, 5] = np.nan
    w = np.ones((2, 1, 3, 2))
    y = fastconv.conv2d(x, w, padding=1)
    mask = conv2d_reference(np.isnan(x).astype(np.float64), w, padding=1) > 0
    assert_array_equal(np.isnan(y), mask)
    assert_array_equal(y[~mask], 0.0)


def test_relu_activation_after_bias():
    x = np.ones((1, 1, 3, 3))
    w = np.ones((2, 1, 1, 1))
    y = fastconv.conv2d(x, w, np.array([-2.0, 0.5]), activation="relu")
    assert_array_equal(y[0, 0], 0.0)
    assert_array_equal(y[0, 1], 1.5)


def test_relu_activation_keeps_nan():
    x = np.full((1, 1, 2, 2), np.nan)
    y = fastconv.conv2d(x, np.ones((1, 1, 1, 1)), activation="relu")
    assert np.isnan(y).all()


# --------------------------------------------------------------------------------------------
# Unusual memory, inputs left untouched
# --------------------------------------------------------------------------------------------

VARIANT_NAMES = ["nan_twin", "nan_twin_last_axis", "nan_twin_reversed", "fortran",
                 "permuted_axes", "negative_strides", "readonly", "byteswapped", "nested_list"]


@pytest.mark.parametrize("variant, which", [
    (variant, which) for variant in VARIANT_NAMES for which in ("x", "weight", "bias")
    if not (which == "bias" and variant == "permuted_axes")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unusual_memory_inputs(rng, input_variants, layout, variant, which):
    x, w, b = make_inputs(rng, n=2, c=4, h=6, w=7, f=6, groups=2, layout=layout,
                          dtype=np.float64, integer=True)
    ref = conv2d_reference(x, w, b, padding=1, groups=2, layout=layout)
    args = {"x": x, "weight": w, "bias": b}
    args[which] = input_variants(args[which])[variant]
    y = fastconv.conv2d(args["x"], args["weight"], args["bias"], padding=1, groups=2,
                        layout=layout)
    assert y.dtype == np.float64
    assert_array_equal(y, ref)


@pytest.mark.parametrize("reverse", [False, True], ids=["strided", "reversed"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nan_twins_everywhere_and_untouched(rng, nan_twin, dtype, layout, reverse):
    """All three inputs interleaved with NaN at once, larger layer; nothing written back."""
    x, w, b = make_inputs(rng, n=2, c=8, h=12, w=11, f=20, layout=layout, dtype=dtype,
                          integer=True)
    ref = conv2d_reference(x, w, b, padding=(1, 2), stride=(1, 2), layout=layout)
    views, bases = zip(*(nan_twin(a, reverse=reverse) for a in (x, w, b)))
    before = [base.copy() for base in bases]
    y = fastconv.conv2d(*views, padding=(1, 2), stride=(1, 2), layout=layout)
    assert_array_equal(y, ref)
    for base, copy in zip(bases, before):
        assert_array_equal(base, copy)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_inputs_not_modified(rng, padding_mode):
    x, w, b = make_inputs(rng, n=2, c=4, h=6, w=7, f=4, groups=2)
    copies = [a.copy() for a in (x, w, b)]
    fastconv.conv2d(x, w, b, padding=2, groups=2, padding_mode=padding_mode,
                    activation="relu")
    for a, copy in zip((x, w, b), copies):
        assert_array_equal(a, copy)


def test_nested_lists_everywhere():
    x = [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]
    y = fastconv.conv2d(x, [[[[1, 0], [0, -1]]]], [0.5])
    assert y.dtype == np.float64
    assert_array_equal(y, [[[[-3.5, -3.5], [-3.5, -3.5]]]])


def test_zero_stride_inputs(rng):
    """Broadcast (zero-stride, read-only) views are ordinary inputs."""
    image = rng.integers(-3, 4, size=(1, 3, 6, 7)).astype(np.float32)
    x = np.broadcast_to(image, (4, 3, 6, 7))
    w = np.broadcast_to(rng.integers(-3, 4, size=(1, 3, 3, 3)).astype(np.float32),
                        (5, 3, 3, 3))
    b = np.broadcast_to(np.float32(1.5), (5,))
    y = fastconv.conv2d(x, w, b, padding=1)
    assert_array_equal(y, conv2d_reference(np.array(x), np.array(w), np.array(b), padding=1))


def test_infinity_reaches_only_its_windows():
    x = np.ones((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 0] = np.inf
    y = fastconv.conv2d(x, np.ones((1, 1, 2, 2), np.float32), padding=1)
    assert np.isposinf(y[0, 0, :2, :2]).all()
    y[0, 0, :2, :2] = 0
    assert np.isfinite(y).all()


@pytest.mark.parametrize("padding_mode, rows", [("zeros", [None, 0, None]),
                                                ("replicate", [0, 0, 1])])
def test_huge_padding_and_stride_small_output(padding_mode, rows):
    """Index arithmetic past 2**31 with a tiny result: padding 2**31 and stride 2**31 pick
    the rows -2**31, 0 and 2**31 of a 2-row image."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    try:
        y = fastconv.conv2d(x, np.ones((1, 1, 1, 1)), stride=(2**31, 1), padding=(2**31, 0),
                            padding_mode=padding_mode)
    except ValueError as exc:  # refusing such geometry is acceptable, crashing is not
        assert re.search("(?i)padding|stride|large", str(exc)), str(exc)
        return
    expected = np.array([[0.0, 0.0] if r is None else x[0, 0, r] for r in rows])
    assert_array_equal(y[0, 0], expected)


def test_zero_input_channels():
    """C = 0 (weight (F, 0, KH, KW)): the bias alone, or a ValueError."""
    x = np.zeros((2, 0, 5, 5))
    w = np.zeros((3, 0, 3, 3))
    b = np.array([1.0, -2.0, 3.0])
    try:
        y = fastconv.conv2d(x, w, b, activation="relu")
    except ValueError:
        return
    assert y.shape == (2, 3, 3, 3)
    assert_array_equal(y, np.broadcast_to(np.maximum(b, 0)[None, :, None, None], y.shape))


# --------------------------------------------------------------------------------------------
# dtype rules
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_dtype, w_dtype, expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float32),
    (np.float16, np.float32, np.float32),
    (np.float16, np.float64, np.float64),
    (np.uint8, np.float32, np.float32),
    (np.int8, np.float32, np.float32),
    (np.int16, np.float32, np.float32),
    (np.int32, np.float32, np.float64),
    (np.int64, np.int64, np.float64),
    (np.uint8, np.uint8, np.float64),
    (np.int32, np.int32, np.float64),
    (np.bool_, np.bool_, np.float64),
    (np.bool_, np.float32, np.float32),
    (np.uint16, np.float16, np.float32),
    (np.dtype(">f4"), np.dtype(">f8"), np.float64),
    (np.dtype(">f4"), np.float32, np.float32),
], ids=lambda d: np.dtype(d).str)
def test_dtype_rules(rng, x_dtype, w_dtype, expected):
    x = rng.integers(0, 2 if x_dtype == np.bool_ else 5, size=(2, 3, 5, 5)).astype(x_dtype)
    w = rng.integers(0, 2 if w_dtype == np.bool_ else 3, size=(4, 3, 3, 3)).astype(w_dtype)
    y = fastconv.conv2d(x, w, padding=1)
    assert y.dtype == np.dtype(expected)
    assert y.dtype.isnative
    assert result_dtype(x, w) == np.dtype(expected)  # the reference agrees with the spec
    assert_array_equal(y, conv2d_reference(x.astype(np.float64), w.astype(np.float64),
                                           padding=1))


def test_float16_computes_in_float32(rng, assert_within_tolerance):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    y = fastconv.conv2d(x, w, padding=1)
    assert y.dtype == np.float32
    ref = conv2d_reference(x.astype(np.float64), w.astype(np.float64), padding=1)
    # float32 rounding, not float16 rounding
    assert_within_tolerance(y, ref, conv_bound(x, w, None, padding=1), c=TOL_C)


@pytest.mark.parametrize("which", ["x", "weight", "bias"])
@pytest.mark.parametrize("bad", ["complex128", "complex64", "object", "str", "bytes",
                                 "datetime64[s]", "timedelta64[s]"])
def test_unsupported_dtypes(which, bad):
    shapes = {"x": (1, 2, 4, 4), "weight": (3, 2, 3, 3), "bias": (3,)}
    args = {name: np.ones(shape) for name, shape in shapes.items()}
    dtype = {"str": "U3", "bytes": "S3"}.get(bad, bad)
    args[which] = np.zeros(shapes[which], dtype=dtype)
    with pytest.raises(TypeError, match=rf"\b{which}\b"):
        fastconv.conv2d(args["x"], args["weight"], args["bias"])


def test_longdouble_refused_or_float64():
    """float128 is not in the spec: a TypeError, or a computation in float64."""
    x = np.ones((1, 1, 4, 4), np.longdouble)
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("longdouble is float64 here")
    try:
        y = fastconv.conv2d(x, np.ones((1, 1, 3, 3)))
    except TypeError as exc:
        assert re.search(r"\bx\b", str(exc)), str(exc)
        return
    assert y.dtype == np.float64
    assert_array_equal(y, 9.0)


# --------------------------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_out_filled_and_returned(rng, dtype, layout, unbatched):
    x, w, b = make_inputs(rng, n=2, c=4, h=6, w=7, f=5, layout=layout, unbatched=unbatched,
                          dtype=dtype, integer=True)
    ref = conv2d_reference(x, w, b, padding=1, stride=(2, 1), layout=layout, activation="relu")
    out = np.full(ref.shape, np.nan, dtype=dtype)
    y = fastconv.conv2d(x, w, b, padding=1, stride=(2, 1), layout=layout, activation="relu",
                        out=out)
    assert y is out
    assert_array_equal(out, ref)


def _out_case(rng):
    x, w, b = make_inputs(rng, n=2, c=4, h=6, w=7, f=5, dtype=np.float32)
    shape = conv2d_reference(x, w, b, padding=1).shape
    return x, w, b, shape


@pytest.mark.parametrize("kind", ["shape", "dtype", "noncontiguous", "fortran", "readonly",
                                  "unbatched_shape", "nhwc_shape", "byteswapped"])
def test_out_rejected(rng, kind):
    x, w, b, shape = _out_case(rng)
    if kind == "shape":
        out = np.empty((2, 5, 6, 6), np.float32)
    elif kind == "dtype":
        out = np.empty(shape, np.float64)
    elif kind == "noncontiguous":
        out = np.empty(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2]
    elif kind == "fortran":
        out = np.empty(shape, np.float32, order="F")
    elif kind == "readonly":
        out = np.empty(shape, np.float32)
        out.flags.writeable = False
    elif kind == "unbatched_shape":
        out = np.empty(shape[1:], np.float32)
    elif kind == "nhwc_shape":
        out = np.empty((2, 6, 7, 5), np.float32)
    else:
        out = np.empty(shape, np.dtype(">f4"))
    with pytest.raises(ValueError, match="(?i)out"):
        fastconv.conv2d(x, w, b, padding=1, out=out)


def test_out_not_an_array(rng):
    x, w, b, shape = _out_case(rng)
    with pytest.raises((TypeError, ValueError), match="(?i)out"):
        fastconv.conv2d(x, w, b, padding=1, out=np.zeros(shape).tolist())


@pytest.mark.parametrize("target", ["x", "weight", "bias"])
def test_out_overlapping_an_input(target):
    """out sharing memory with an input: refused (ValueError) or the correct result."""
    rng = np.random.default_rng(3)
    # same-shaped output, so x itself (or a view on the weight/bias buffer) can be `out`
    buf = rng.integers(-3, 4, size=64 + 16 + 4).astype(np.float64)
    x = buf[:64].reshape(1, 4, 4, 4)
    w = buf[64:80].reshape(4, 4, 1, 1)
    b = buf[80:84]
    if target == "x":
        out = x
    elif target == "weight":
        out = buf[16:80].reshape(1, 4, 4, 4)  # overlaps x and the weight
    else:
        out = buf[20:84].reshape(1, 4, 4, 4)  # overlaps x, weight and bias
    ref = conv2d_reference(x.copy(), w.copy(), b.copy())
    try:
        y = fastconv.conv2d(x, w, b, out=out)
    except ValueError as exc:
        assert re.search("(?i)out", str(exc)), str(exc)
        return
    assert y is out
    assert_array_equal(y, ref)


def test_out_overlapping_3x3_in_place():
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, size=(1, 2, 5, 5)).astype(np.float64)
    w = rng.integers(-3, 4, size=(2, 2, 3, 3)).astype(np.float64)
    ref = conv2d_reference(x, w, padding=1)
    try:
        y = fastconv.conv2d(x, w, padding=1, out=x)
    except ValueError as exc:
        assert re.search("(?i)out", str(exc)), str(exc)
        return
    assert_array_equal(y, ref)


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------

THREAD_LAYERS = [
    dict(n=2, c=8, h=32, w=32, f=24, kernel=(3, 3), padding=1),
    dict(n=2, c=8, h=32, w=32, f=24, kernel=(3, 3), padding=1, groups=2, layout="NHWC"),
    dict(n=1, c=16, h=32, w=30, f=16, kernel=(3, 3), padding="same", groups=16),
    dict(n=1, c=16, h=32, w=30, f=16, kernel=(5, 5), padding=2, groups=16, layout="NHWC"),
    dict(n=2, c=24, h=57, w=70, f=48, kernel=(5, 5), padding=2, stride=2, groups=24),
    dict(n=3, c=3, h=33, w=31, f=40, kernel=(5, 3), padding="same", stride=2,
         padding_mode="reflect"),
    dict(n=1, c=64, h=20, w=20, f=64, kernel=(1, 1), padding=0, layout="NHWC"),
    dict(n=1, c=8, h=40, w=40, f=24, kernel=(3, 3), padding=1, unbatched=True),
    dict(n=64, c=3, h=8, w=9, f=5, kernel=(3, 3), padding=1, activation="relu"),
    dict(n=1, c=300, h=12, w=12, f=40, kernel=(1, 1), padding=0, layout="NHWC"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cfg", THREAD_LAYERS, ids=lambda c: "C%(c)d_F%(f)d_%(h)dx%(w)d" % c
                         + ("_" + c.get("layout", "NCHW")) + ("_g%d" % c.get("groups", 1)))
def test_thread_count_invariance(rng, check_conv, cfg, dtype):
    cfg = dict(cfg)
    make = {k: cfg.pop(k) for k in ("n", "c", "f", "h", "w", "kernel")}
    unbatched = cfg.pop("unbatched", False)
    x, w, b = make_inputs(rng, groups=cfg.get("groups", 1), layout=cfg.get("layout", "NCHW"),
                          unbatched=unbatched, dtype=dtype, **make)
    y1 = check_conv(x, w, b, num_threads=1, **cfg)
    for threads in (2, 4, None):
        assert_array_equal(fastconv.conv2d(x, w, b, num_threads=threads, **cfg), y1)


def test_threadpoolctl_limit(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, w, b = make_inputs(rng, n=2, c=8, h=32, w=32, f=24)
    expected = fastconv.conv2d(x, w, b, padding=1, num_threads=2)
    with threadpoolctl.threadpool_limits(limits=1):
        assert_array_equal(fastconv.conv2d(x, w, b, padding=1), expected)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert_array_equal(fastconv.conv2d(x, w, b, padding=1, num_threads=2), expected)
    assert_array_equal(fastconv.conv2d(x, w, b, padding=1), expected)


def test_concurrent_calls_from_python_threads(rng):
    """The kernels release the GIL: calls from several Python threads at once must not share
    scratch memory or results."""
    from concurrent.futures import ThreadPoolExecutor

    problems = []
    for i in range(8):
        layout = LAYOUTS[i % 2]
        x, w, b = make_inputs(rng, n=2, c=6, h=20 + i, w=18, f=12, groups=1 + i % 2 * 2,
                              layout=layout, dtype=DTYPES[i // 4], integer=True)
        problems.append((x, w, b, dict(padding=1, groups=1 + i % 2 * 2, layout=layout)))
    expected = [conv2d_reference(x, w, b, **kw) for x, w, b, kw in problems]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            results = list(pool.map(lambda p: fastconv.conv2d(p[0], p[1], p[2], **p[3]),
                                    problems))
            for y, ref in zip(results, expected):
                assert_array_equal(y, ref)


@pytest.mark.parametrize("num_threads", [0, -1, -8])
def test_num_threads_below_one(num_threads):
    with pytest.raises(ValueError, match="num_threads"):
        fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), num_threads=num_threads)


@pytest.mark.parametrize("num_threads", [1.5, "2", True])
def test_num_threads_not_an_int(num_threads):
    with pytest.raises((TypeError, ValueError), match="num_threads"):
        fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), num_threads=num_threads)


_HUGE_THREADS_SCRIPT = """
import sys
import numpy as np
import fastconv
x = np.random.default_rng(0).random((2, 8, 32, 32)).astype(np.float32)
w = np.random.default_rng(1).random((24, 8, 3, 3)).astype(np.float32)
try:
    threads = None if sys.argv[1] == "None" else int(sys.argv[1])
    y = fastconv.conv2d(x, w, padding=1, num_threads=threads)
except ValueError as exc:
    print("ValueError" if "num_threads" in str(exc) else "ValueError without num_threads")
else:
    same = np.array_equal(y, fastconv.conv2d(x, w, padding=1, num_threads=1))
    print("ok" if same else "mismatch")
"""


@pytest.mark.parametrize("num_threads, omp_env", [(10**5, None), (2**31, None), (2**63, None),
                                                  (None, "100000")],
                         ids=["1e5", "2**31", "2**63", "OMP_NUM_THREADS=1e5"])
def test_huge_num_threads_no_crash(num_threads, omp_env, tmp_path):
    """An absurd thread count (argument or OMP_NUM_THREADS) is capped or refused with a
    ValueError; it must not crash the interpreter (run in a subprocess so a crash fails this
    test instead of the whole run)."""
    env = dict(os.environ)
    if omp_env is not None:
        env["OMP_NUM_THREADS"] = omp_env
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # cwd away from the source tree: `python -c` puts the cwd first on sys.path.
    proc = subprocess.run([sys.executable, "-c", _HUGE_THREADS_SCRIPT, str(num_threads)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() in ("ok", "ValueError"), proc.stdout


# --------------------------------------------------------------------------------------------
# Errors: type, and a message that names the parameter (and the values)
# --------------------------------------------------------------------------------------------

X = np.zeros((1, 4, 6, 7), np.float32)
W = np.zeros((2, 4, 3, 3), np.float32)
ANY = (ValueError, TypeError)

# (id, overrides of conv2d's arguments, exception, regexes that must all match the message)
ERROR_CASES = [
    ("x_2d", dict(x=np.zeros((6, 7))), ValueError, [r"\bx\b"]),
    ("x_5d", dict(x=np.zeros((1, 1, 4, 6, 7))), ValueError, [r"\bx\b"]),
    ("x_1d", dict(x=np.zeros(7)), ValueError, [r"\bx\b"]),
    ("x_0d", dict(x=np.float32(1.0)), ValueError, [r"\bx\b"]),
    ("weight_3d", dict(weight=np.zeros((4, 3, 3))), ValueError, [r"weight"]),
    ("weight_5d", dict(weight=np.zeros((2, 4, 3, 3, 1))), ValueError, [r"weight"]),
    ("channel_mismatch", dict(weight=np.zeros((2, 3, 3, 3))), ValueError,
     [r"channel|weight", r"\b4\b", r"\b3\b"]),
    ("channel_mismatch_nhwc", dict(x=np.zeros((1, 6, 7, 5)), layout="NHWC"), ValueError,
     [r"channel|weight", r"\b5\b"]),
    ("channel_mismatch_groups", dict(weight=np.zeros((2, 4, 3, 3)), groups=2), ValueError,
     [r"channel|weight|groups"]),
    ("filters_not_divisible", dict(weight=np.zeros((3, 2, 3, 3)), groups=2), ValueError,
     [r"groups", r"\b3\b"]),
    ("channels_not_divisible", dict(x=np.zeros((1, 5, 6, 7)), weight=np.zeros((2, 2, 3, 3)),
                                    groups=2), ValueError, [r"groups|channel", r"\b5\b"]),
    ("groups_exceed_channels", dict(weight=np.zeros((8, 0, 3, 3)), groups=8), ValueError,
     [r"groups|channel|weight"]),
    ("kernel_larger_than_padded", dict(x=np.zeros((1, 4, 4, 5)), weight=np.zeros((2, 4, 7, 3)),
                                       padding=1), ValueError, [r"(?i)kernel", r"\b6\b", r"\b7\b"]),
    ("kernel_larger_no_padding", dict(x=np.zeros((1, 4, 2, 2))), ValueError,
     [r"(?i)kernel", r"\b2\b", r"\b3\b"]),
    ("dilated_kernel_larger", dict(dilation=3), ValueError, [r"(?i)kernel|dilation"]),
    ("kernel_larger_nhwc", dict(x=np.zeros((1, 2, 9, 4)), layout="NHWC"), ValueError,
     [r"(?i)kernel"]),
    ("kernel_zero", dict(weight=np.zeros((2, 4, 0, 3))), ValueError, [r"(?i)kernel|weight"]),
    ("stride_zero", dict(stride=0), ValueError, [r"stride"]),
    ("stride_negative", dict(stride=-1), ValueError, [r"stride"]),
    ("stride_pair_zero", dict(stride=(1, 0)), ValueError, [r"stride"]),
    ("stride_triple", dict(stride=(1, 1, 1)), ValueError, [r"stride"]),
    ("stride_float", dict(stride=1.5), ANY, [r"stride"]),
    ("stride_pair_float", dict(stride=(2, 2.0)), ANY, [r"stride"]),
    ("stride_bool", dict(stride=True), ANY, [r"stride"]),
    ("stride_str", dict(stride="2"), ANY, [r"stride"]),
    ("stride_none", dict(stride=None), ANY, [r"stride"]),
    ("dilation_zero", dict(dilation=0), ValueError, [r"dilation"]),
    ("dilation_pair_negative", dict(dilation=(1, -2)), ValueError, [r"dilation"]),
    ("dilation_empty", dict(dilation=()), ValueError, [r"dilation"]),
    ("dilation_float", dict(dilation=1.0), ANY, [r"dilation"]),
    ("groups_zero", dict(groups=0), ValueError, [r"groups"]),
    ("groups_negative", dict(groups=-2), ValueError, [r"groups"]),
    ("groups_float", dict(groups=1.0), ANY, [r"groups"]),
    ("groups_bool", dict(groups=True), ANY, [r"groups"]),
    ("padding_negative", dict(padding=-1), ValueError, [r"padding"]),
    ("padding_pair_negative", dict(padding=(1, -1)), ValueError, [r"padding"]),
    ("padding_quad_negative", dict(padding=(0, 0, 0, -1)), ValueError, [r"padding"]),
    ("padding_len1", dict(padding=(1,)), ValueError, [r"padding"]),
    ("padding_len3", dict(padding=(1, 1, 1)), ValueError, [r"padding"]),
    ("padding_len5", dict(padding=(1, 1, 1, 1, 1)), ValueError, [r"padding"]),
    ("padding_float", dict(padding=1.5), ANY, [r"padding"]),
    ("padding_pair_float", dict(padding=(1.0, 1)), ANY, [r"padding"]),
    ("padding_quad_float", dict(padding=(1, 1, 0.5, 1)), ANY, [r"padding"]),
    ("padding_bool", dict(padding=True), ANY, [r"padding"]),
    ("padding_pair_bool", dict(padding=(True, 1)), ANY, [r"padding"]),
    ("padding_none", dict(padding=None), ANY, [r"padding"]),
    ("padding_nested", dict(padding=((1, 1), (1, 1))), ANY, [r"padding"]),
    ("padding_unknown_string", dict(padding="full"), ValueError, [r"padding", r"full"]),
    ("padding_digit_string", dict(padding="1"), ValueError, [r"padding"]),
    ("padding_huge", dict(padding=2**62), ValueError, [r"padding|size|large"]),
    ("padding_huge_pair", dict(padding=(0, 2**62)), ValueError, [r"padding|size|large"]),
    ("padding_mode_unknown", dict(padding_mode="mirror", padding=1), ValueError,
     [r"padding_mode", r"mirror"]),
    ("padding_mode_constant", dict(padding_mode="constant", padding=1), ValueError,
     [r"padding_mode"]),
    ("padding_mode_none", dict(padding_mode=None, padding=1), ANY, [r"padding_mode"]),
    ("reflect_padding_too_large", dict(x=np.zeros((1, 4, 4, 5)), padding=4,
                                       padding_mode="reflect"), ValueError,
     [r"(?i)reflect|padding"]),
    ("reflect_padding_too_large_w", dict(x=np.zeros((1, 4, 6, 5)), padding=(0, 5),
                                         padding_mode="reflect"), ValueError,
     [r"(?i)reflect|padding"]),
    ("reflect_same_too_large", dict(x=np.zeros((1, 4, 2, 2)), weight=np.zeros((2, 4, 5, 5)),
                                    padding="same", padding_mode="reflect"), ValueError,
     [r"(?i)reflect|padding"]),
    ("layout_unknown", dict(layout="NCWH"), ValueError, [r"layout", r"NCWH"]),
    ("layout_none", dict(layout=None), ANY, [r"layout"]),
    ("activation_unknown", dict(activation="sigmoid"), ValueError, [r"activation", r"sigmoid"]),
    ("activation_bool", dict(activation=True), ANY, [r"activation"]),
    ("bias_too_long", dict(bias=np.zeros(3)), ValueError, [r"bias", r"\b2\b"]),
    ("bias_2d", dict(bias=np.zeros((2, 1))), ValueError, [r"bias"]),
    ("bias_scalar", dict(bias=np.float32(0)), ValueError, [r"bias"]),
    ("bias_empty", dict(bias=np.zeros(0)), ValueError, [r"bias"]),
    ("x_none", dict(x=None), TypeError, [r"\bx\b"]),
    ("x_str", dict(x="abc"), TypeError, [r"\bx\b"]),
    ("x_object", dict(x=object()), TypeError, [r"\bx\b"]),
    ("x_dict", dict(x={"a": 1}), TypeError, [r"\bx\b"]),
    ("x_ragged", dict(x=[[[[1, 2], [3]]]]), ANY, [r"\bx\b"]),
    ("weight_none", dict(weight=None), TypeError, [r"weight"]),
    ("weight_str", dict(weight="abc"), TypeError, [r"weight"]),
    ("weight_object", dict(weight=object()), TypeError, [r"weight"]),
    ("bias_str", dict(bias="abc"), TypeError, [r"bias"]),
    ("bias_object", dict(bias=object()), TypeError, [r"bias"]),
]


@pytest.mark.parametrize("overrides, exc, patterns", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors(overrides, exc, patterns):
    args = dict(x=X, weight=W)
    args.update(overrides)
    with pytest.raises(exc) as info:
        fastconv.conv2d(**args)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in message {message!r}"


def test_kernel_larger_message_gives_sizes():
    """PyTorch's bar: the padded input size and the kernel size, both spelled out."""
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(np.zeros((1, 1, 2, 5)), np.zeros((1, 1, 3, 3)), padding=(0, 0))
    message = str(info.value)
    assert re.search(r"2\D{1,4}5", message), message  # padded input 2 x 5
    assert re.search(r"3\D{1,4}3", message), message  # kernel 3 x 3


@pytest.mark.parametrize("overrides", [dict(stride=2**62), dict(stride=(1, 2**40)),
                                       dict(dilation=2**62), dict(dilation=(2**40, 1))],
                         ids=["stride", "stride_w", "dilation", "dilation_h"])
def test_absurd_geometry_no_crash(overrides):
    """Huge stride is legal (one output pixel) or refused; huge dilation is refused."""
    x = np.arange(1.0, 1 + 4 * 6 * 7).reshape(1, 4, 6, 7)
    w = np.ones((2, 4, 3, 3))
    try:
        y = fastconv.conv2d(x, w, **overrides)
    except ValueError:
        return
    assert "dilation" not in overrides
    stride = overrides["stride"]
    stride = (stride, stride) if isinstance(stride, int) else stride
    assert_array_equal(y, conv2d_reference(x, w, stride=tuple(min(s, 7) for s in stride)))


@pytest.mark.parametrize("padding", [(5, 0), (0, 4), 5])
def test_circular_padding_beyond_size(padding):
    """PyTorch refuses circular padding that wraps more than once; wrapping again (np.pad
    'wrap') is also acceptable, anything else is not."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(1, 2, 4, 3)).astype(np.float64)
    w = rng.integers(-3, 4, size=(2, 2, 3, 3)).astype(np.float64)
    try:
        y = fastconv.conv2d(x, w, padding=padding, padding_mode="circular")
    except ValueError as exc:
        assert re.search(r"(?i)padding|circular", str(exc))
        return
    assert_array_equal(y, conv2d_reference(x, w, padding=padding, padding_mode="circular"))


def test_errors_raised_before_writing_out():
    """Validation happens before any kernel runs: a bad call leaves `out` untouched."""
    out = np.full((1, 2, 4, 5), 7.0, np.float32)
    with pytest.raises(ValueError):
        fastconv.conv2d(X, W, np.zeros(3, np.float32), out=out)
    assert_array_equal(out, 7.0)


# --------------------------------------------------------------------------------------------
# output_size agrees with conv2d's shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", _random_configs(40, seed=11), ids=_config_id)
def test_output_size_matches_conv_shapes(cfg):
    kh, kw = cfg["kernel"]
    if isinstance(cfg["padding"], str):
        return  # output_size takes explicit symmetric padding
    pads = conv_padding_reference(cfg["padding"], (cfg["h"], cfg["w"]), cfg["kernel"])
    if pads[0] != pads[1] or pads[2] != pads[3]:
        return
    x = np.zeros((1, cfg["c"], cfg["h"], cfg["w"]))
    w = np.zeros((cfg["f"], cfg["c"] // cfg["groups"], kh, kw))
    y = fastconv.conv2d(x, w, stride=cfg["stride"], padding=cfg["padding"],
                        dilation=cfg["dilation"], groups=cfg["groups"])
    sh, sw = (cfg["stride"],) * 2 if isinstance(cfg["stride"], int) else cfg["stride"]
    dh, dw = cfg["dilation"]
    assert y.shape[2] == fastconv.output_size(cfg["h"], kh, sh, pads[0], dh)
    assert y.shape[3] == fastconv.output_size(cfg["w"], kw, sw, pads[2], dw)


# --------------------------------------------------------------------------------------------
# Optional: PyTorch (skipped when torch is not installed)
# --------------------------------------------------------------------------------------------

TORCH_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
                   "circular": "circular"}


@pytest.mark.parametrize("cfg", _random_configs(60, seed=23), ids=_config_id)
def test_against_torch(cfg, assert_within_tolerance):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    dtype = cfg["dtype"]
    x, w, b = make_inputs(rng, n=cfg["n"], c=cfg["c"], h=cfg["h"], w=cfg["w"], f=cfg["f"],
                          kernel=cfg["kernel"], groups=cfg["groups"], dtype=dtype,
                          bias=cfg["bias"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"], padding_mode=cfg["padding_mode"])
    top, bottom, left, right = conv_padding_reference(cfg["padding"], (cfg["h"], cfg["w"]),
                                                      cfg["kernel"], cfg["stride"],
                                                      cfg["dilation"])
    xt = F.pad(torch.from_numpy(x), (left, right, top, bottom),
               mode=TORCH_PAD_MODES[cfg["padding_mode"]])
    expected = F.conv2d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                        stride=cfg["stride"], dilation=cfg["dilation"],
                        groups=cfg["groups"]).numpy()
    y = fastconv.conv2d(x, w, b, **kw)
    bound = conv_bound(x, w, b, **kw)
    assert_within_tolerance(y, expected, bound, c=2 * TOL_C)  # both sides round
    y_nhwc = fastconv.conv2d(x.transpose(0, 2, 3, 1), w, b, layout="NHWC", **kw)
    assert_within_tolerance(y_nhwc, expected.transpose(0, 2, 3, 1), bound.transpose(0, 2, 3, 1),
                            c=2 * TOL_C)


@pytest.mark.parametrize("dilation", [1, 2, (1, 3)], ids=repr)
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 5)], ids=repr)
def test_against_torch_same_padding(kernel, dilation, assert_within_tolerance):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x, w, b = make_inputs(rng, n=2, c=4, h=9, w=10, f=3, kernel=kernel, dtype=np.float64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about even kernels with 'same'
        expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                              torch.from_numpy(b), padding="same",
                                              dilation=dilation).numpy()
    y = fastconv.conv2d(x, w, b, padding="same", dilation=dilation)
    assert_within_tolerance(y, expected, conv_bound(x, w, b, padding="same", dilation=dilation),
                            c=2 * TOL_C)


@pytest.mark.parametrize("kh, stride, dilation, slab_rows_per_band", [
    (7, 2, 1, lambda r: 2 * r + 5),    # rows shared by taps of one residue: each copied once
    (5, 2, 1, lambda r: 2 * r + 3),
    (3, 2, 2, lambda r: r + 2),        # all taps on even rows: one block
    (3, 1, 1, lambda r: r + 2),        # stride 1: the band's padded rows
    (3, 2, 1, lambda r: 3 * r),        # 3x3 stride 2: a block per kernel row
    (5, 3, 1, lambda r: 3 * r + 2),    # taps 0 and 3, 1 and 4 share rows
    (7, 4, 1, lambda r: 4 * r + 3),
    (3, 3, 1, lambda r: 3 * r),        # a residue per tap
])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_slab_rows_hold_every_tap_row(kh, stride, dilation, slab_rows_per_band, padding_mode):
    """Each valid output row r of a band finds, for tap i, the padded input row
    r * stride + i * dilation at slab row kh_start[i] + r (the micro-kernel's addressing)."""
    from fastconv import _conv_plan

    height, top = 23, 3
    out_h = (height + 2 * top - dilation * (kh - 1) - 1) // stride + 1
    plan = _conv_plan.plan(
        n_images=1, groups=1, in_per_group=8, per_group=8, height=height, width=9,
        out_h=out_h, out_w=9, kernel=(kh, 1), stride=(stride, 1), dilation=(dilation, 1),
        pads=(top, top, 0, 0), padding_mode=padding_mode, mr=4, nr=24, lanes=8, itemsize=4)
    rows = plan.rows_per_task
    assert plan.row_src.shape[1] == slab_rows_per_band(rows)
    taps = plan.b_offset[:kh] // plan.col_src.shape[1]  # channel 0, one phase: slab rows
    for band, row_src in enumerate(plan.row_src):
        for r in range(min(rows, out_h - band * rows)):
            for i in range(kh):
                padded = (band * rows + r) * stride + i * dilation
                expected = _conv_plan.source_index(np.array([padded - top]), height,
                                                   padding_mode)[0]
                assert row_src[taps[i] + r] == expected, (band, r, i)


@pytest.mark.parametrize("size, channels, tasks", [
    (14, 256, 4),    # 116M multiply-adds: bands of 8 rows, two chunks of filters
    (16, 192, 4),
    (28, 128, 4),
    (14, 64, 8),     # 7M: too short to balance in fours
    (7, 512, 8),     # 49 pixels
])
def test_large_gemm_splits_seek_fewer_tasks(size, channels, tasks):
    """Layers of 20M multiply-adds or more on maps over 64 pixels are split into as few as 4
    tasks (taller bands, whose tiles fill better), others into at least 8."""
    from fastconv import _conv_plan

    plan = _conv_plan.plan(
        n_images=1, groups=1, in_per_group=channels, per_group=channels, height=size,
        width=size, out_h=size, out_w=size, kernel=(3, 3), stride=(1, 1), dilation=(1, 1),
        pads=(1, 1, 1, 1), padding_mode="zeros", mr=8, nr=32, lanes=16, itemsize=4,
        half_tail=True)
    bands = -(-size // plan.rows_per_task)
    chunks = -(-(channels // 8) // plan.fblocks_per_task)
    assert bands * chunks == tasks


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, groups", [((16, 3, 3, 3), 1), ((19, 5, 3, 1), 1),
                                           ((24, 8, 1, 1), 3), ((8, 1, 5, 5), 2),
                                           ((7, 2, 2, 2), 1), ((20, 6, 3, 3), 1),
                                           ((36, 40, 1, 1), 2)], ids=repr)
def test_kernel_weight_layout(rng, dtype, shape, groups):
    """Whole blocks of MR filters are read in place, unless the filters are short; the other
    blocks are packed (G, FBp, R, MR): filter b * MR + i of the packed ones at [g, b, :, i],
    zero past the group's filters."""
    from fastconv._conv_plan import PACK_ALL_DEPTH
    from fastconv.conv import _kernels, _pack

    weight = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[0]).astype(dtype)
    filters, packed, inplace_blocks, packed_bias = _pack(weight, bias, groups, np.dtype(dtype))
    mr, per_group = _kernels.MR, shape[0] // groups
    depth = int(np.prod(shape[1:]))
    grouped = weight.reshape(groups, per_group, depth)
    assert_array_equal(filters, grouped)
    assert np.shares_memory(filters, weight)  # contiguous in the dtype: no copy
    assert inplace_blocks == (per_group // mr if depth > PACK_ALL_DEPTH else 0)
    fblocks = -(-per_group // mr)
    padded = np.zeros((groups, fblocks * mr, depth), dtype)
    padded[:, :per_group] = grouped
    expected = padded.reshape(groups, fblocks, mr, depth).transpose(0, 1, 3, 2)
    assert_array_equal(packed, expected[:, inplace_blocks:])
    assert packed_bias.shape == (groups, fblocks * mr)
    assert_array_equal(packed_bias[:, :per_group], bias.reshape(groups, per_group))
    assert not packed_bias[:, per_group:].any()


def test_repeated_calls_reuse_validation_but_not_data(rng):
    """A call like an earlier one skips validation (fastconv.conv._CALLS); its result still
    comes from this call's arrays."""
    from fastconv import conv

    conv._forget_calls()
    x, w, b = make_inputs(rng, integer=True)
    first = fastconv.conv2d(x, w, b, padding=1)
    assert len(conv._CALLS) == len(conv._RUNNERS) == 1  # plain arrays: the next runs in C
    x2, w2, b2 = make_inputs(rng, integer=True)
    again = fastconv.conv2d(x2, w2, b2, padding=1)
    assert len(conv._CALLS) == 1
    assert_array_equal(first, conv2d_reference(x, w, b, padding=1).astype(np.float32))
    assert_array_equal(again, conv2d_reference(x2, w2, b2, padding=1).astype(np.float32))
    # A view with other strides is another call, checked and planned on its own.
    twin = np.repeat(x2, 2, axis=3)[..., ::2]
    assert_array_equal(fastconv.conv2d(twin, w2, b2, padding=1), again)
    assert len(conv._CALLS) == 2


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("groups, f", [(1, 10), (4, 4), (4, 8)], ids=["gemm", "dw", "dw2"])
def test_repeated_calls_run_in_c_with_exact_results(rng, layout, unbatched, groups, f):
    """The second of two like calls runs through _kernels.run_cached (C only): NHWC and
    unbatched inputs, GEMM and depthwise kernels, float32 and float64, give the exact result."""
    from fastconv import conv

    for dtype in (np.float32, np.float64):
        x, w, b = make_inputs(rng, c=4, f=f, groups=groups, layout=layout, unbatched=unbatched,
                              dtype=dtype, integer=True)
        kwargs = dict(padding=1, groups=groups, layout=layout, activation="relu")
        fastconv.conv2d(x, w, b, **kwargs)
        key = conv._call_key(x, w, b, 1, 1, 1, groups, "zeros", layout, "relu", None, 1)
        assert key in conv._RUNNERS
        x2, w2, b2 = make_inputs(rng, c=4, f=f, groups=groups, layout=layout,
                                 unbatched=unbatched, dtype=dtype, integer=True)
        result = conv._kernels.run_cached(conv._RUNNERS, x2, w2, b2, 1, 1, 1, groups, "zeros",
                                          layout, "relu", 1, None, lambda n: 2)
        x4 = x2[None] if unbatched else x2
        x_nchw = x4.transpose(0, 3, 1, 2) if layout == "NHWC" else x4
        expected = np.maximum(conv2d_reference(x_nchw, w2, b2, padding=1, groups=groups), 0)
        expected = expected.transpose(0, 2, 3, 1) if layout == "NHWC" else expected
        expected = expected[0] if unbatched else expected
        assert result.dtype == dtype and result.flags.c_contiguous
        assert_array_equal(result, expected.astype(dtype))


def test_planned_call_checks_its_arrays(rng):
    """A planned kernel call (GemmCall, DepthwiseCall) refuses arrays that do not fit its plan
    with a ValueError naming the argument, and a plan whose tables reach outside x."""
    from fastconv import conv

    x, w, b = make_inputs(rng, n=2, c=4, h=9, w=9, f=8)
    call, *_ = conv._validate(x, w, b, 1, 1, 1, 1, "zeros", "NCHW", None, 1)
    runner = call.runner
    assert_array_equal(runner(x, w, b), fastconv.conv2d(x, w, b, padding=1))
    bad = {"x": [(x[:, :, :8], w, b), (x.astype(np.float64), w, b), (x[0], w, b)],
           "weight": [(x, w[:4], b), (x, w.astype(np.float64), b), (x, w[..., ::-1], b)],
           "bias": [(x, w, b[:3])]}
    for name, cases in bad.items():
        for args in cases:
            with pytest.raises(ValueError, match=name):
                runner(*args)
    out = np.empty((2, 8, 9, 9), np.float32)
    for wrong in (out[:1], out.astype(np.float64), out[..., ::-1]):
        with pytest.raises(ValueError, match="out"):
            runner(x, w, b, wrong)
    with pytest.raises(ValueError, match="num_threads"):
        runner(x, w, b, out, 0)
    assert not np.isnan(runner(x, w, b, out, 2)).any()
    plan = runner.plan
    kwargs = dict(channels_last=False, groups=1, per_group=8, kernel=(3, 3), stride_w=1,
                  out_hw=(9, 9), relu=False, pool=1, pointwise=False,
                  workspace=conv._workspace)
    conv._kernels.GemmCall(plan, np.float32, x.shape, out.shape, **kwargs)  # fits
    for table in ("row_src", "col_src"):
        with pytest.raises(ValueError, match=table):
            conv._kernels.GemmCall(plan._replace(**{table: getattr(plan, table) + 9}),
                                   np.float32, x.shape, out.shape, **kwargs)
    # col_inner: (phases, 3), the kernel reading each phase's [first, end) and offset
    for inner in (plan.col_inner[:, :2].copy(), plan.col_inner.ravel(),
                  np.concatenate([plan.col_inner, plan.col_inner])):
        with pytest.raises(ValueError, match="slab tables"):
            conv._kernels.GemmCall(plan._replace(col_inner=inner), np.float32, x.shape,
                                   out.shape, **kwargs)
    with pytest.raises(ValueError, match="slab tables"):
        conv._kernels.GemmCall(plan._replace(col_src=plan.col_src.ravel()), np.float32,
                               x.shape, out.shape, **kwargs)
    # A stacked plan's pixel map must keep every read below the panels.
    small = np.zeros((4, 4, 2, 2), np.float32)
    stacked, *_ = conv._validate(small, np.zeros((16, 4, 3, 3), np.float32), None, 1, 1, 1,
                                 1, "zeros", "NCHW", None, 1)
    plan = stacked.runner.plan
    assert plan.images_per_task > 0
    kwargs.update(per_group=16, out_hw=(2, 2))
    conv._kernels.GemmCall(plan, np.float32, small.shape, (4, 16, 4), **kwargs)  # fits
    for broken in (plan.pixel_src + plan.panel_base, plan.pixel_src[:-1]):
        with pytest.raises(ValueError, match="pixel_src|stacked"):
            conv._kernels.GemmCall(plan._replace(pixel_src=broken), np.float32, small.shape,
                                   (4, 16, 4), **kwargs)
    with pytest.raises(ValueError, match="plan"):
        conv._kernels.GemmCall(plan, np.float32, x.shape, (2, 8, 9, 8), **kwargs)


def test_cached_calls_tell_apart_byte_order_alignment_and_dtype(rng):
    """Arrays of one shape and strides that differ in byte order, alignment or dtype are
    different calls (conv._kernels.array_key): each gives its own exact result."""
    from fastconv import conv

    x, w, b = make_inputs(rng, integer=True)
    expected = conv2d_reference(x, w, b, padding=1)
    fastconv.conv2d(x, w, b, padding=1)  # cache the plain call first
    swapped = x.astype(x.dtype.newbyteorder())
    raw = np.empty(x.nbytes + 1, np.uint8)
    misaligned = np.frombuffer(raw.data, x.dtype, x.size, offset=1).reshape(x.shape)
    misaligned[...] = x
    assert swapped.strides == misaligned.strides == x.strides and not misaligned.flags.aligned
    for variant in (swapped, misaligned):
        assert_array_equal(fastconv.conv2d(variant, w, b, padding=1),
                           expected.astype(np.float32))
    assert_array_equal(fastconv.conv2d(x.astype(np.float64), w, b, padding=1), expected)
    keys = {conv._call_key(a, w, b, 1, 1, 1, 1, "zeros", "NCHW", None, None, 1)
            for a in (x, swapped, misaligned, x.astype(np.float64))}
    assert len(keys) == 4
    # Only calls whose arrays go to the kernel unconverted run on the C path.
    for a in (swapped, misaligned, x.astype(np.float64)):
        key = conv._call_key(a, w, b, 1, 1, 1, 1, "zeros", "NCHW", None, None, 1)
        assert key in conv._CALLS and key not in conv._RUNNERS


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, padding", [
    (3, 70, 2, 2, 22, (3, 3), 1),      # 2x2 maps: 5 blocks in place (2 pairs + 1), 1 packed
    (2, 50, 1, 3, 20, (3, 3), 1),      # 1x3: one vector even at 4 lanes
    (2, 40, 1, 1, 12, (3, 3), 1),      # 1x1: one vector at 2 lanes (baseline float64)
    (1, 60, 7, 7, 24, (3, 3), 1),      # deep 7x7: a band may be a last row of 8 pixels
])
def test_one_vector_bands(rng, n, c, h, w, f, kernel, padding, dtype):
    """Bands of a single vector of pixels take their blocks of filters in pairs (twice the
    accumulator chains): exact, with every reduction chunk, bias, ReLU and any thread count."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, integer=True,
                               dtype=dtype)
    expected = conv2d_reference(x, weight, b, padding=padding).astype(dtype)
    for threads in (1, 3):
        assert_array_equal(fastconv.conv2d(x, weight, b, padding=padding, num_threads=threads),
                           expected)
    assert_array_equal(fastconv.conv2d(x, weight, b, padding=padding, activation="relu"),
                       np.maximum(expected, 0))


def _conv_call(x, weight, **kwargs):
    """The validated call conv2d makes of these arguments (its path and planned runner)."""
    from fastconv import conv

    call, *_ = conv._validate(x, weight, None, kwargs.get("stride", 1),
                              kwargs.get("padding", 0), kwargs.get("dilation", 1),
                              kwargs.get("groups", 1), kwargs.get("padding_mode", "zeros"),
                              kwargs.get("layout", "NCHW"), None, 1)
    return call


@pytest.fixture
def filter_lanes_everywhere(monkeypatch):
    """conv2d takes the filter-lane kernel wherever it may (as if the GEMM kernel's vectors
    held no pixels, for any amount of work), with the weights packed per task if
    shared=False is asked."""
    from fastconv import _conv_plan, conv

    def force(shared=True):
        monkeypatch.setattr(_conv_plan, "pixel_fill", lambda *args: 0.0)
        monkeypatch.setattr(_conv_plan, "LANES_MIN_WORK", 0)
        # maps up to the largest the kernel takes at any ISA level
        monkeypatch.setattr(_conv_plan, "LANES_MAX_PIXELS", _conv_plan.LANES_LARGE_PIXELS)
        if not shared:
            monkeypatch.setattr(_conv_plan, "LANES_SHARED_BYTES", 0)
        _conv_plan.filter_lane_plan.cache_clear()
        conv._forget_calls()

    yield force
    _conv_plan.filter_lane_plan.cache_clear()
    conv._forget_calls()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs, shared", [
    (20, 30, 7, 7, 23, (7, 7), dict(stride=2, padding=3), True),    # 4x4 maps, 23 filters
    (20, 30, 7, 7, 23, (7, 7), dict(stride=2, padding=3), False),   # weights packed per task
    (16, 40, 6, 6, 14, (3, 3), dict(stride=2, padding=1), True),    # one vector of filters
    (16, 300, 6, 6, 46, (3, 3), dict(stride=2, padding=1), True),   # chunks of channels
    (16, 64, 6, 6, 200, (3, 3), dict(stride=2, padding=1), False),  # chunks of filters
    (6, 21, 9, 9, 33, (5, 5), dict(padding=0), True),               # 5x5 maps
    (16, 12, 7, 9, 20, (3, 5), dict(stride=(2, 1), padding=(1, 0), padding_mode="reflect"),
     True),
    (10, 17, 8, 8, 24, (3, 3), dict(stride=2, dilation=2, padding=2, padding_mode="circular"),
     True),
    (9, 18, 7, 7, 16, (7, 7), dict(stride=2, padding=3, padding_mode="replicate"), False),
    (130, 8, 1, 1, 48, (1, 1), {}, True),                           # a dense layer
])
def test_filter_lanes(rng, filter_lanes_everywhere, n, c, h, w, f, kernel, kwargs, shared,
                      dtype):
    """The filter-lane kernel (filters in the vector lanes, for small maps): exact for every
    padding mode, stride, dilation, filter count and chunking, weights packed per call or per
    task, for 1-3 threads, with ReLU, NHWC, a row view, no bias and a NaN-filled out=."""
    filter_lanes_everywhere(shared)
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, integer=True,
                               dtype=dtype)
    call = _conv_call(x, weight, **kwargs)
    assert call.path == "lanes"
    assert call.runner.plan.shared_weights == (shared and n > call.runner.plan.images_per_task)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_everywhere(x, weight, b, expected, **kwargs)
    assert_array_equal(fastconv.conv2d(x, weight, **kwargs),
                       conv2d_reference(x, weight, None, **kwargs).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (1, 20, 13, 13, 70, (5, 5), dict(padding=2)),                # 169 pixels, 2 parts
    (1, 12, 20, 21, 40, (3, 3), dict(padding=1)),                # 420 pixels
    (1, 9, 27, 27, 33, (7, 7), dict(stride=2, padding=3, padding_mode="reflect")),
    (3, 7, 17, 17, 32, (5, 5), dict(dilation=2, padding=4)),     # three images
])
def test_filter_lanes_parts_of_one_image(rng, filter_lanes_everywhere, n, c, h, w, f, kernel,
                                         kwargs, dtype):
    """With one image per task and too few tasks, a task takes two vectors of filters and a
    part of the image's pixels (whole tiles) rather than one vector for all of them: exact
    as everywhere (1-3 threads, ReLU, NHWC, a row view, out=). Parts at AVX-512 (f: float32
    filters, half as many float64 ones fill as many vectors)."""
    from fastconv import _conv_plan
    filter_lanes_everywhere(True)
    f = f if dtype == np.float32 else f // 2
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, integer=True,
                               dtype=dtype)
    call = _conv_call(x, weight, **kwargs)
    assert call.path == "lanes"
    plan = call.runner.plan
    parts = plan.part_bounds.shape[0] - 1
    if fastconv.conv._kernels.ISA == "avx512":
        assert parts > 1 and plan.fvecs_per_task == 2 and plan.images_per_task == 1
    tiles = plan.tile_rows[:, 2]
    assert plan.part_bounds[-1, 1] == tiles[:plan.part_bounds[-1, 0]].sum()
    # parts of about LANES_PART_PIXELS or more, cut at the tile boundary nearest an equal share
    smallest = _conv_plan.LANES_PART_PIXELS - fastconv.conv._kernels.LANES_PIXELS
    assert all(p1 - p0 >= smallest or parts == 1
               for p0, p1 in zip(plan.part_bounds[:-1, 1], plan.part_bounds[1:, 1]))
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_everywhere(x, weight, b, expected, **kwargs)


def test_filter_lane_call_checks_its_parts(rng):
    """FilterLaneCall refuses part bounds that do not cover the block's tiles in order from
    pixel 0, or parts of blocks of several images."""
    from fastconv import _conv_plan, conv
    x, w, _ = make_inputs(rng, n=1, c=8, h=13, w=13, f=70, kernel=(5, 5))
    plan = _conv_plan.filter_lane_plan(
        n_images=1, in_channels=8, n_filters=70, height=13, width=13, out_h=13, out_w=13,
        kernel=(5, 5), stride=(1, 1), dilation=(1, 1), pads=(2, 2, 2, 2),
        padding_mode="zeros", lanes=conv._kernels.LANES_FLOAT32, tile_pixels=conv._kernels.LANES_PIXELS, itemsize=4)
    kwargs = dict(channels_last=False, n_filters=70, kernel=(5, 5), stride_w=1,
                  out_hw=(13, 13), relu=False, workspace=conv._workspace)
    out_shape = (1, 70, 13, 13)
    conv._kernels.FilterLaneCall(plan, np.float32, x.shape, out_shape, **kwargs)  # fits
    bounds = plan.part_bounds
    tiles = bounds[-1, 0]
    wrong = [bounds[::-1].copy(), bounds[1:].copy(), bounds + [[0, 1]],
             np.array([[0, 0], [tiles - 1, 169]]), np.array([[0, 0], [2, 5], [tiles, 169]]),
             bounds.ravel().copy()]
    for table in wrong:
        with pytest.raises(ValueError, match="part"):
            conv._kernels.FilterLaneCall(plan._replace(part_bounds=np.ascontiguousarray(
                table, dtype=np.intp)), np.float32, x.shape, out_shape, **kwargs)
    two = np.array([[0, 0], [1, plan.tile_rows[0, 2]], [tiles, 169]], dtype=np.intp)
    conv._kernels.FilterLaneCall(plan._replace(part_bounds=two), np.float32, x.shape,
                                 out_shape, **kwargs)  # fits
    # a block of five 7x7 images in one task: one part
    plan = _conv_plan.filter_lane_plan(
        n_images=40, in_channels=8, n_filters=16, height=7, width=7, out_h=7, out_w=7,
        kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pads=(1, 1, 1, 1),
        padding_mode="zeros", lanes=conv._kernels.LANES_FLOAT32, tile_pixels=conv._kernels.LANES_PIXELS, itemsize=4)
    assert plan.images_per_task == 5
    kwargs.update(n_filters=16, kernel=(3, 3), out_hw=(7, 7))
    tiles = plan.part_bounds[-1, 0]
    conv._kernels.FilterLaneCall(plan, np.float32, (40, 8, 7, 7), (40, 16, 7, 7), **kwargs)
    two = np.array([[0, 0], [1, plan.tile_rows[0, 2]], [tiles, 5 * 49]], dtype=np.intp)
    with pytest.raises(ValueError, match="part"):
        conv._kernels.FilterLaneCall(plan._replace(part_bounds=two), np.float32,
                                     (40, 8, 7, 7), (40, 16, 7, 7), **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("interleave", ["none", "all"])
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (2, 30, 7, 7, 40, (7, 7), dict(dilation=2, padding=6)),      # most taps read padding
    (13, 9, 7, 7, 20, (5, 5), dict(stride=2, dilation=2, padding=4)),  # a last, smaller block
    (5, 12, 2, 2, 17, (3, 3), dict(padding=3)),                  # pixels that read no input
    (7, 11, 8, 8, 24, (5, 3), dict(stride=(1, 2), padding=(2, 3, 1, 0))),  # uneven padding
    # maps over LANES_MAX_PIXELS, under kernels of LANES_LARGE_TAPS taps or more
    (2, 9, 14, 14, 20, (7, 7), dict(dilation=2, padding=6)),     # 196 pixels
    (1, 5, 16, 16, 33, (5, 5), dict(padding=2)),                 # 256
    (1, 3, 32, 32, 17, (3, 3), dict(dilation=2, padding=2)),     # 1024: the largest
    (3, 7, 25, 23, 18, (5, 5), dict(stride=2, padding=(4, 1), dilation=(2, 1))),  # 13x11
])
def test_filter_lanes_skip_padding_taps(rng, monkeypatch, filter_lanes_everywhere, n, c, h, w,
                                        f, kernel, kwargs, interleave, dtype):
    """A tile of the filter-lane kernel reduces over the taps that one of its pixels reads
    from the input, with a task's pixels taken image by image or interleaved across its
    images: exact for any thread count, in NHWC, with ReLU, without bias (pixels that read
    only padding: the bias), a last block of fewer images and uneven padding."""
    from fastconv import _conv_plan

    filter_lanes_everywhere()
    monkeypatch.setattr(_conv_plan, "LANES_INTERLEAVE_COST",
                        {"none": 10.0, "all": -0.1}[interleave])
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, integer=True,
                               dtype=dtype)
    call = _conv_call(x, weight, **kwargs)
    assert call.path == "lanes"
    plan = call.runner.plan
    assert plan.interleave == (1 if interleave == "none" else plan.images_per_task)
    assert plan.tile_rows[:, 1].min() < kernel[0] * kernel[1]  # some tiles skip taps
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    assert_array_equal(fastconv.conv2d(x, weight, **kwargs),
                       conv2d_reference(x, weight, None, **kwargs).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (1, 3, 30, 112, 20, (3, 3), dict(padding=1)),            # 7 vectors a row, a partial block
    (2, 2, 17, 104, 16, (3, 3), dict(padding=1)),            # 6.5 vectors: a last half vector
    (1, 4, 20, 48, 24, (5, 5), dict(padding=2, groups=2)),   # groups of 2 channels
    (3, 1, 9, 24, 13, (3, 3), dict(padding=(1, 2))),         # 1.5 vectors, wider padding
    (1, 3, 40, 66, 8, (3, 3), dict(stride=(1, 2), padding=1)),  # 33 wide: not whole vectors
])
def test_shallow_rows_written_in_place(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """A shallow reduction (few channels x taps) accumulates straight into the output; rows
    of whole vectors (a last half vector at most) are tiled row by row so that no tile
    straddles two output rows, and a partial block of filters goes through the stage:
    exact for any thread count, with ReLU, in NHWC, through a view and into a NaN-filled
    out=."""
    assert_layer_exact_everywhere(rng, n, c, h, w, f, kernel, kwargs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("c, h, width, f, kernel, kwargs", [
    # Shallow rows tiled row by row: whole tiles, then what is left
    (3, 5, lambda nr, lanes: 3 * nr, 20, (3, 3), dict(padding=1)),
    (3, 5, lambda nr, lanes: 3 * nr + lanes // 2, 16, (3, 3), dict(padding=1)),
    (2, 4, lambda nr, lanes: 2 * nr + lanes, 16, (3, 3), dict(padding=1)),
    (3, 5, lambda nr, lanes: 2 * nr - lanes // 2, 16, (3, 3), dict(padding=1)),  # last: half
    # 1x1 read in place: whole tiles up to the band's partial last one
    (5, 3, lambda nr, lanes: 2 * nr + 3, 16, (1, 1), {}),
    (5, 1, lambda nr, lanes: 2 * nr - 3, 16, (1, 1), {}),
    (5, 2, lambda nr, lanes: 4 * nr, 12, (1, 1), {}),
    (40, 3, lambda nr, lanes: 3 * nr + 1, 16, (1, 1), {}),      # deeper: staged
    # Junk columns, deep chunks: whole tiles of the band into the staged tile
    (24, 6, lambda nr, lanes: 2 * nr - 1, 16, (3, 3), dict(padding=1)),
])
def test_runs_of_whole_tiles(rng, c, h, width, f, kernel, kwargs, dtype):
    """A run of whole tiles under one block of filters is one micro-kernel call (_tile_run):
    rows and bands of whole tiles, ending in a whole tile, a half vector, a partial tile, and
    reading x in place up to where the band's last tile would read past it. Exact for any
    thread count, with ReLU, in NHWC, through a view and into a NaN-filled out=."""
    kernels = fastconv.conv._kernels
    lanes = kernels.LANES_FLOAT32 if dtype == np.float32 else kernels.LANES_FLOAT64
    nr = kernels.NR_FLOAT32 if dtype == np.float32 else kernels.NR_FLOAT64
    w = width(nr, lanes)
    x, weight, b = make_inputs(rng, n=2, c=c, h=h, w=w, f=f, kernel=kernel, integer=True,
                               dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_everywhere(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (1, 300, 3, 40, 20, (1, 1), {}),                   # a partial block, a partial last tile
    (1, 200, 1, 12, 16, (1, 1), {}),                   # a band of one vector or less
    (1, 200, 1, 16, 16, (1, 1), {}),
    (1, 200, 2, 4, 16, (1, 1), {}),
    (2, 600, 7, 7, 24, (1, 1), {}),
    (1, 300, 10, 30, 16, (1, 1), dict(stride=2)),      # strided: through the slab
    (1, 100, 12, 40, 16, (3, 1), dict(padding=(1, 0))),  # taps down the columns only
    (1, 160, 6, 50, 32, (1, 1), dict(groups=2)),
])
def test_deep_chunks_end_in_the_output(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """Layers without junk columns whose reduction takes several chunks of channels keep
    their partial sums in the staged tile and write the last chunk's whole tiles straight
    to the output (its partial sums read from the stage); the rest is copied out. Exact for
    any thread count, with ReLU, in NHWC, through a view and into a NaN-filled out=."""
    assert_layer_exact_everywhere(rng, n, c, h, w, f, kernel, kwargs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (3, 1, 28, 28, 32, (3, 3), {}),                            # 26 of 28 columns real
    (2, 2, 11, 21, 12, (3, 3), dict(padding=1)),               # a partial block of filters
    (1, 40, 9, 13, 16, (3, 3), dict(padding=1)),               # two chunks of channels
    (2, 3, 15, 31, 20, (3, 3), dict(stride=2, padding=1)),     # two column phases
    (1, 2, 12, 23, 16, (3, 3), dict(dilation=2, padding=(0, 3))),
    (1, 8, 10, 19, 24, (3, 3), dict(groups=2, padding=1)),
    (2, 3, 40, 9, 8, (5, 5), dict(padding=2, padding_mode="reflect")),  # many short rows
])
def test_junk_columns_dropped_as_tiles_store(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """Rows with junk columns that are not tiled one by one (narrow, not whole vectors):
    the last chunk's tiles go straight to the output, each vector's real lanes packed as it
    stores (AVX-512; below it they stay staged and are copied out), and a band's last tile
    drops the lanes past its last row. Exact for any thread count, with ReLU, in NHWC,
    through a view and into a NaN-filled out=."""
    assert_layer_exact_everywhere(rng, n, c, h, w, f, kernel, kwargs, dtype)


@pytest.mark.parametrize("path", ["lanes", "depthwise"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_skipped_padding_taps_keep_non_finite_weights(rng, filter_lanes_everywhere, path, bad):
    """Kernels that skip taps reading only zero padding compute every tap when a weight is
    infinite or NaN: inf * 0 is NaN, as in the reference, at exactly its places."""
    filter_lanes_everywhere()
    c, f, groups = (10, 20, 1) if path == "lanes" else (16, 16, 16)
    x, weight, b = make_inputs(rng, n=3, c=c, h=7, w=7, f=f, kernel=(7, 7), groups=groups,
                               integer=True)
    weight[3, 0, 0, 0] = bad  # the top-left tap: padding for most output pixels
    kwargs = dict(padding=3, groups=groups)
    assert _conv_call(x, weight, **kwargs).path == path
    expected = conv2d_reference(x, weight, b, **kwargs).astype(np.float32)
    assert np.isnan(expected).any() or np.isinf(expected).any()
    for threads in (1, 2):
        assert_array_equal(fastconv.conv2d(x, weight, b, num_threads=threads, **kwargs),
                           expected)


@pytest.mark.parametrize("h, w, kernel, kwargs, tiles", [
    # the tiles' pixels with tiles of 12 pixels at most (AVX-512)
    (14, 14, (7, 7), dict(dilation=2, padding=6), [7, 7] * 14),
    (9, 9, (5, 5), dict(padding=2), [9] * 9),
    (13, 15, (5, 5), dict(padding=(2, 1)), [7, 6] * 13),
    (6, 6, (5, 5), dict(padding=2), [12] * 3),                  # 6 wide: across rows
])
def test_filter_lane_tiles_follow_rows(rng, filter_lanes_everywhere, h, w, kernel, kwargs,
                                       tiles):
    """Without interleaving, output rows of LANES_ROW_TILE_WIDTH pixels or more are split
    into equal tiles each (a tile's pixels consecutive in the slab, its taps those of one
    row) where a tile may hold such a row (AVX-512); narrower rows, and every row below
    AVX-512 (tiles of 6 pixels), in equal tiles across rows. Exact for 1-3 threads, ReLU
    and NHWC."""
    filter_lanes_everywhere()
    x, weight, b = make_inputs(rng, n=1, c=6, h=h, w=w, f=20, kernel=kernel, integer=True)
    call = _conv_call(x, weight, **kwargs)
    assert call.path == "lanes"
    plan = call.runner.plan
    assert plan.interleave == 1
    tile_pixels = fastconv.conv._kernels.LANES_PIXELS
    if tile_pixels < 12:
        pixels = sum(tiles)
        size = -(-pixels // -(-pixels // tile_pixels))
        tiles = [size] * (pixels // size) + ([pixels % size] if pixels % size else [])
    assert plan.tile_rows[:, 2].tolist() == tiles
    if tile_pixels >= 12 and tiles[0] < 12:  # row tiles skip the padding rows of their row
        assert plan.tile_rows[0, 1] < plan.tile_rows[len(tiles) // 2, 1]
    expected = conv2d_reference(x, weight, b, **kwargs).astype(np.float32)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("n, c, h, f, kernel, kwargs, path", [
    # 14x14 under 7x7 dilated by 2: half the taps read padding, which the GEMM kernel
    # computes (measured 0.82 of its time on the filter-lane kernel, 5 tasks)
    (1, 161, 14, 72, (7, 7), dict(dilation=2, padding=6), "lanes"),
    (8, 64, 11, 64, (5, 5), dict(dilation=2, padding=4), "lanes"),
    (8, 64, 14, 64, (3, 3), dict(dilation=3, padding=3), "lanes"),
    (8, 64, 14, 64, (1, 7), dict(dilation=3, padding=(0, 9)), "gemm"),  # 7 taps: too few
    (1, 64, 33, 64, (7, 7), dict(padding=3), "gemm"),               # 1089 pixels
    (2, 15, 24, 141, (7, 7), dict(dilation=2, padding=6), "lanes"),  # 576
    # one task (16 filters, one image) would leave a thread idle
    (1, 209, 22, 16, (7, 7), dict(stride=2, padding=3), "gemm"),
    # 6 vectors of filters: 3 chunks of two, in 2 parts of the pixels each
    (1, 48, 28, 96, (5, 5), dict(padding=2), "lanes"),
    # 2.5 vectors: two one-vector passes (LANES_ONE_VECTOR_COST) tip it to the GEMM kernel
    (1, 40, 28, 40, (5, 5), dict(padding=2), "gemm"),
])
def test_filter_lanes_rule_for_larger_maps(rng, n, c, h, f, kernel, kwargs, path):
    """Maps of 65-1024 pixels take the filter-lane kernel under kernels of 9 taps or more
    where its skipped padding taps repay it (AVX-512 float32), not under fewer taps, on
    larger maps, nor where its tasks would be too few for two threads or hold single
    vectors of filters."""
    x, weight, _ = make_inputs(rng, n=n, c=c, h=h, w=h, f=f, kernel=kernel)
    call = _conv_call(x, weight, **kwargs)
    if fastconv.conv._kernels.ISA == "avx512":
        assert call.path == path
    assert call.path in ("lanes", "gemm")


@pytest.mark.parametrize("n, c, h, f, kernel, kwargs, path", [
    (64, 170, 7, 47, (3, 3), dict(padding=1), "lanes"),   # 3136 pixels over the batch
    (32, 32, 14, 64, (5, 5), dict(padding=2), "lanes"),
    (1, 200, 7, 120, (3, 3), dict(padding=1), "gemm"),    # 49: weights packed for few
    (64, 64, 7, 64, (1, 1), {}, "gemm"),                   # stacked: every lane a pixel
    (1, 48, 28, 96, (5, 5), dict(padding=2), "lanes"),    # 784 pixels, 25 taps
    (1, 96, 27, 256, (5, 5), dict(padding=2), "lanes"),
])
def test_filter_lanes_rule_for_batches(rng, n, c, h, f, kernel, kwargs, path):
    """Over 1024 output pixels of a batch or more, or under kernels of 25 taps or more, the
    filter-lane kernel is taken where it computes under 0.9 of the GEMM kernel's lanes
    (AVX-512 float32), not 0.75."""
    x, weight, _ = make_inputs(rng, n=n, c=c, h=h, w=h, f=f, kernel=kernel)
    call = _conv_call(x, weight, **kwargs)
    if fastconv.conv._kernels.ISA == "avx512":
        assert call.path == path
    assert call.path in ("lanes", "gemm")


@pytest.mark.parametrize("n, c, h, f, dtype, path", [
    (16, 160, 7, 160, np.float32, "lanes"),   # 784 pixels over the batch
    (3, 512, 7, 512, np.float32, "lanes"),    # 147
    (16, 128, 3, 192, np.float32, "lanes"),   # 3x3 maps
    (2, 512, 8, 48, np.float32, "gemm"),      # 128: too few
    (8, 96, 6, 16, np.float32, "gemm"),       # one vector of filters
    (16, 160, 7, 160, np.float64, "gemm"),    # 8 lanes: packing for few pixels per task
])
def test_filter_lanes_rule_for_small_map_batches(rng, n, c, h, f, dtype, path):
    """Batches of maps of at most 64 pixels, 144 output pixels or more, take the filter-lane
    kernel by the 0.9 margin with two vectors of filters or more (AVX-512 float32) under 3x3
    kernels, where their computed lanes hold 0.875 x 0.905 of the GEMM kernel's work."""
    x, weight, _ = make_inputs(rng, n=n, c=c, h=h, w=h, f=f, kernel=(3, 3), dtype=dtype)
    call = _conv_call(x, weight, padding=1)
    if fastconv.conv._kernels.ISA == "avx512":
        assert call.path == path
    assert call.path in ("lanes", "gemm")


def test_filter_lanes_taken_for_small_strided_maps(rng):
    """64 images of 7x7 -> 4x4 with 23 filters of 7x7 (stride 2): the GEMM kernel's vectors
    would hold 16 pixels in 32 lanes, so the filter-lane kernel runs (AVX-512, float32)."""
    x, weight, _ = make_inputs(rng, n=64, c=8, h=7, w=7, f=23, kernel=(7, 7))
    call = _conv_call(x, weight, stride=2, padding=3)
    if fastconv.conv._kernels.ISA == "avx512":
        assert call.path == "lanes"
    assert call.path in ("lanes", "gemm")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("h, w, kernel, kwargs", [
    (6, 6, (3, 3), dict(stride=2, padding=1)),
    (16, 15, (3, 3), dict(padding=1)),                    # slab rows of a whole vector
    (5, 9, (3, 3), dict(stride=(1, 3), padding=1, padding_mode="reflect")),
    (7, 7, (5, 5), dict(stride=4, padding=2, padding_mode="circular")),   # four phases
    (9, 7, (3, 3), dict(dilation=(1, 3), padding=(1, 3), padding_mode="replicate")),
    # two vectors per input row (float32; float64 from 9 columns):
    (17, 17, (3, 3), dict(stride=2, padding=1)),
    (12, 28, (3, 3), dict(stride=2, padding=1, padding_mode="reflect")),
    (6, 13, (3, 3), dict(stride=(1, 2), padding=1, padding_mode="replicate")),
    (9, 20, (5, 5), dict(stride=4, padding=2, padding_mode="circular")),  # four phases
    (8, 26, (3, 3), dict(stride=2, dilation=2, padding=2)),
    # slab rows (phase rows) of more than one vector: 18-22 columns (float32), 10-17 (64)
    (6, 20, (3, 3), dict(padding=1)),
    (7, 31, (3, 3), dict(stride=2, padding=1)),
    (5, 13, (5, 5), dict(padding=2, padding_mode="reflect")),
    (9, 14, (3, 3), dict(padding=1, padding_mode="circular")),
    (6, 17, (3, 3), dict(dilation=2, padding=2, padding_mode="replicate")),
])
def test_short_rows_fill(rng, h, w, kernel, kwargs, dtype):
    """Input rows of at most two vectors fill the slab through one or two loads and one or
    two lane permutes per slab row (AVX-512): exact for every padding mode, stride and
    dilation, in NCHW, in NHWC (the general fill) and through a view."""
    x, weight, b = make_inputs(rng, n=3, c=5, h=h, w=w, f=12, kernel=kernel, integer=True,
                               dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    assert_exact_through_row_view(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs, pool", [
    (1, 64, 7, 7, 48, (3, 3), dict(padding=1), 1),     # bands of 4 + 3 rows over a pitch of 8
    (1, 300, 7, 7, 40, (1, 1), {}, 1),                 # 49 pixels: 3 vectors and 1 pixel
    (1, 40, 2, 2, 24, (3, 3), dict(padding=1), 1),     # a band of one vector, filters in pairs
    (3, 33, 7, 7, 13, (3, 3), dict(padding=1), 1),     # a partial block of packed filters
    (2, 20, 5, 5, 20, (3, 3), dict(padding=1), 1),     # stacked images, a short last vector
    (1, 20, 6, 13, 16, (3, 3), dict(stride=2, padding=1), 1),
    (1, 40, 6, 7, 24, (3, 3), dict(padding=1), 2),     # fused pooling of a half vector's rows
    # depthwise rows (planar): 56, 40 and 36 wide, 20 wide two rows at a time, pooled
    (2, 24, 9, 56, 24, (3, 3), dict(padding=1, groups=24), 1),
    (1, 16, 8, 40, 32, (5, 5), dict(padding=2, groups=16), 1),
    (2, 16, 7, 36, 16, (3, 3), dict(padding=1, groups=16, padding_mode="reflect"), 1),
    (3, 8, 10, 20, 16, (3, 3), dict(padding=1, groups=8), 1),
    (1, 16, 8, 40, 16, (3, 3), dict(padding=1, groups=16), 2),
    (2, 8, 6, 60, 8, (3, 3), dict(padding=1, groups=8), 1),      # last vectors over half full
    (2, 8, 6, 29, 16, (3, 3), dict(padding=1, groups=8), 1),
])
def test_half_vector_tails(rng, n, c, h, w, f, kernel, kwargs, pool, dtype):
    """A tile whose last vector holds at most half its lanes of pixels computes it as a half
    vector at AVX-512 (the kernels' HALF_TAIL), in the GEMM and the depthwise kernels: exact
    for any thread count, with ReLU, bias, reductions over several chunks of channels, NHWC,
    views, NaN-filled out= and fused pooling."""
    from fastconv.conv import _conv2d

    groups = kwargs.get("groups", 1)
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, groups=groups,
                               integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    if pool > 1:
        expected = fastconv.max_pool2d(np.maximum(expected, 0), pool)
        for threads in (1, 2, 3):
            got = _conv2d(x, weight, b, kwargs.get("stride", 1), kwargs.get("padding", 0), 1,
                          groups, "zeros", "NCHW", "relu", None, threads, pool)
            assert_array_equal(got, expected)
        return
    assert_exact_everywhere(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kwargs", [
    (1, 13, 17, 19, 96, {}),                  # partial last tile of every band
    (2, 13, 9, 11, 13, {}),                   # a last block of one filter: staged
    (1, 30, 2, 4999, 13, {}),                 # wide rows: several chunks of channels
    (3, 16, 6, 10, 24, {"groups": 2}),        # each group's planes
    (2, 8, 12, 16, 20, {"stride": (2, 1)}),   # rows skipped, columns whole
])
def test_pointwise_tiles_written_in_place(rng, n, c, h, w, f, kwargs, dtype):
    """1x1 layers with short reductions accumulate whole tiles straight into the output
    (NCHW, no junk columns) and stage only the rest: a last partial tile, a last block of
    fewer than MR filters. Exact against the reference for 1-3 threads, with ReLU, into a
    given out= (NaN-filled first), and beside NHWC, which stages everything."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=(1, 1),
                               groups=kwargs.get("groups", 1), integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    out = np.full(expected.shape, np.nan, dtype)
    assert fastconv.conv2d(x, weight, b, out=out, **kwargs) is out
    assert_array_equal(out, expected)


def test_stacking_limits(rng):
    """Maps whose bands waste few lanes, and one-filter groups, keep bands of one image; a
    stacked task's staged tile fits L2 (many filters: fewer per task)."""
    from fastconv import _conv_plan

    x, weight, _ = make_inputs(rng, n=8, c=16, h=32, w=32, f=32)
    assert _images_per_task(x, weight, padding=1) == 0
    x, weight, _ = make_inputs(rng, n=8, c=32, h=4, w=4, f=16, groups=16)
    assert _images_per_task(x, weight, padding=1, groups=16) == 0
    # ResNet-50's 7x7 1x1 layer at batch 8, planned for the AVX2 kernel's tiles
    for itemsize, lanes in ((4, 8), (8, 4)):
        plan = _conv_plan.plan(
            n_images=8, groups=1, in_per_group=512, per_group=2048, height=7, width=7,
            out_h=7, out_w=7, kernel=(1, 1), stride=(1, 1), dilation=(1, 1),
            pads=(0, 0, 0, 0), padding_mode="zeros", mr=4, nr=3 * lanes, lanes=lanes,
            itemsize=itemsize)
        assert plan.images_per_task > 0
        staged = plan.fblocks_per_task * 4 * plan.stage_pitch * itemsize
        assert staged <= 512 * 1024  # all 2048 filters: 1.7 MiB (float32), 3.3 (float64)


@pytest.mark.parametrize("nv", [2, 3])
def test_band_tiles_share_a_short_tail(nv):
    """The split model's copy of the kernel's tile sequence: whole tiles of nv vectors, and
    the last two tiles share what is left rather than leave a lone short one."""
    from fastconv._conv_plan import tile_vectors
    for vectors in range(1, 40):
        tiles = tile_vectors(vectors * 8 - 3, 8, nv)
        assert sum(tiles) == vectors and max(tiles) <= nv
        assert all(t == nv for t in tiles[:-2])
        if nv == 3 and vectors >= 2:  # never a lone vector after a whole tile
            assert tiles[-1] >= 2
    assert tile_vectors(49, 8, 3) == [3, 2, 2] and tile_vectors(28, 8, 3) == [2, 2]


@pytest.mark.parametrize("n, c, h, w, f, groups", [
    (1, 5, 7, 9, 6, 1),      # band lengths that end in a partial tile
    (3, 8, 4, 6, 16, 1),     # whole tiles only
    (2, 6, 5, 5, 3, 3),      # one filter per group (the one-row tile)
    (1, 300, 3, 11, 4, 1),   # more channels than one reduction chunk
    # Deep chunks (3 x 174 channels, panels at every ISA level; grouped, 2 x 130 per group,
    # panels above baseline): tiles read packed panels, with bands of 7, 8, 11 and 49 pixels
    # (a lone vector, and tails shared 2 + 2 or 3 + 2)
    (2, 520, 7, 7, 10, 1),
    (1, 520, 2, 4, 64, 1),
    (1, 520, 11, 1, 9, 1),
    (3, 520, 5, 9, 36, 2),
])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_pointwise_reads_x_in_place(rng, n, c, h, w, f, groups, dtype):
    """1x1, stride 1, no padding: whole tiles read x's rows directly (or, deep, packed
    panels of them); views whose rows are not contiguous, and NHWC, take the slab; every
    result exact."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=(1, 1), groups=groups,
                               integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, groups=groups).astype(dtype)
    assert_array_equal(fastconv.conv2d(x, weight, b, groups=groups), expected)
    assert_exact_through_row_view(x, weight, b, expected, groups=groups)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert_array_equal(fastconv.conv2d(nhwc, weight, b, groups=groups, layout="NHWC"),
                       expected.transpose(0, 2, 3, 1))


def _conv_call(x, weight, **kwargs):
    """The validated call (path, runner, plan) conv2d makes of these arguments."""
    from fastconv import conv

    call, *_ = conv._validate(x, weight, None, kwargs.get("stride", 1),
                              kwargs.get("padding", 0), kwargs.get("dilation", 1),
                              kwargs.get("groups", 1), kwargs.get("padding_mode", "zeros"),
                              kwargs.get("layout", "NCHW"), kwargs.get("activation"), 1)
    return call


def _images_per_task(x, weight, **kwargs):
    """The images a task of this call's plan stacks (0: bands of one image)."""
    return _conv_call(x, weight, **kwargs).runner.plan.images_per_task


def assert_exact_across_paths(x, weight, b, expected, **kwargs):
    """conv2d of NCHW x equals ``expected`` exactly for 1-3 threads, with ReLU, and in NHWC."""
    for threads in (1, 2, 3):
        assert_array_equal(fastconv.conv2d(x, weight, b, num_threads=threads, **kwargs),
                           expected)
    assert_array_equal(fastconv.conv2d(x, weight, b, activation="relu", **kwargs),
                       np.maximum(expected, 0))
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert_array_equal(fastconv.conv2d(nhwc, weight, b, layout="NHWC", **kwargs),
                       expected.transpose(0, 2, 3, 1))


def assert_exact_everywhere(x, weight, b, expected, **kwargs):
    """assert_exact_across_paths, assert_exact_through_row_view, and conv2d into a
    NaN-filled out= equals ``expected``."""
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    assert_exact_through_row_view(x, weight, b, expected, **kwargs)
    out = np.full(expected.shape, np.nan, expected.dtype)
    fastconv.conv2d(x, weight, b, out=out, **kwargs)
    assert_array_equal(out, expected)


def assert_layer_exact_everywhere(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """assert_exact_everywhere for small-integer inputs of this layer (exact sums), against
    the reference."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                               groups=kwargs.get("groups", 1), integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_everywhere(x, weight, b, expected, **kwargs)


def assert_exact_through_row_view(x, weight, b, expected, **kwargs):
    """conv2d of a view of NCHW x whose rows are 3 elements longer equals ``expected``."""
    n, c, h, w = x.shape
    wide = np.zeros((n, c, h, w + 3), x.dtype)
    wide[..., :w] = x
    assert_array_equal(fastconv.conv2d(wide[..., :w], weight, b, **kwargs), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    # 4x4 maps: 16 pixels per image, not 4 rows of 5 (float64 at 4 lanes: whole vectors)
    (2, 64, 4, 4, 128, (3, 3), dict(padding=1)),
    (9, 30, 2, 2, 40, (3, 3), dict(padding=1)),                 # the last task's images fewer
    (7, 20, 3, 5, 96, (3, 3), dict(padding=1, padding_mode="reflect")),
    (3, 20, 5, 7, 96, (3, 3), dict(stride=2, padding=(0, 1))),  # two column phases
    (5, 24, 6, 6, 64, (3, 3), dict(dilation=2, padding=1, groups=2)),
    (3, 20, 5, 5, 72, (5, 5), dict(padding=2, padding_mode="circular")),
    (16, 300, 6, 1, 52, (1, 1), {}),                            # 1x1: copied from x's rows
    (8, 20, 5, 5, 40, (1, 1), dict(stride=2)),                  # 1x1 strided: the slab
    (40, 8, 1, 1, 48, (1, 1), {}),                              # 1x1 maps: a dense layer
    (33, 12, 1, 1, 40, (3, 3), dict(padding=1)),                # 1x1 maps, 3x3 kernel
])
def test_stacked_images(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """Small maps stack several images' pixels in one task (compact panels gathered from
    the slab, or from x for 1x1): exact for every padding mode, stride, dilation and group
    count, with ReLU, for NHWC and for views, and identical for any thread count."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                               groups=kwargs.get("groups", 1), integer=True, dtype=dtype)
    lanes = fastconv.conv._kernels.LANES_FLOAT32 if dtype == np.float32 else \
        fastconv.conv._kernels.LANES_FLOAT64
    if h * w != 16 or 16 % lanes:  # the plans stack these at every ISA level
        assert _images_per_task(x, weight, **kwargs) > 0
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    assert_exact_through_row_view(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    (1, 3, 20, 130, 40, (3, 3), dict(padding=1)),         # a partial last block, staged
    (2, 2, 9, 200, 16, (5, 5), dict(padding=2)),
    (1, 3, 10, 400, 16, (3, 3), dict(stride=2, padding=1)),  # two column phases
    (1, 4, 6, 240, 40, (3, 3), dict(padding=1, groups=4)),
    (1, 1, 7, 300, 8, (3, 3), dict(padding=(0, 1), padding_mode="reflect")),
])
def test_tiles_within_a_row_written_in_place(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """Shallow layers with junk columns and wide rows write each tile that lies within one
    output row straight to the output, the others through the staged tile: exact for any
    thread count, with ReLU, in NHWC and through views."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                               groups=kwargs.get("groups", 1), integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, **kwargs)
    out = np.full(expected.shape, np.nan, dtype)
    fastconv.conv2d(x, weight, b, out=out, **kwargs)
    assert_array_equal(out, expected)
    assert_exact_through_row_view(x, weight, b, expected, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, groups", [
    (1, 6, 130, 131, 5, 1),      # a few channels of large planes
    (2, 32, 90, 91, 2, 2),       # 16 channels per group, one filter each
    (1, 224, 40, 41, 32, 32),    # 7 channels per group, one filter each
    (1, 12, 100, 100, 40, 1),    # many filters: tiles sweep every block
])
def test_pointwise_few_channels_of_large_planes(rng, n, c, h, w, f, groups, dtype):
    """1x1 layers whose chunks are a few channels read x in place over any plane size
    (DIRECT_STREAMS): exact for any thread count, with ReLU, in NHWC and through a view."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=(1, 1), groups=groups,
                               integer=True, dtype=dtype)
    expected = conv2d_reference(x, weight, b, groups=groups).astype(dtype)
    assert_exact_across_paths(x, weight, b, expected, groups=groups)
    assert_exact_through_row_view(x, weight, b, expected, groups=groups)


def assert_nhwc_exact_everywhere(x, weight, b, expected, **kwargs):
    """conv2d of NCHW x given in NHWC equals ``expected`` (NCHW) exactly: contiguous for
    1-3 threads, with ReLU, into a NaN-filled out=, and through two views (pixels wider
    than their channels; channels planes apart)."""
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    want = expected.transpose(0, 2, 3, 1)
    for threads in (1, 2, 3):
        assert_array_equal(fastconv.conv2d(nhwc, weight, b, layout="NHWC",
                                           num_threads=threads, **kwargs), want)
    assert_array_equal(fastconv.conv2d(nhwc, weight, b, layout="NHWC", activation="relu",
                                       **kwargs), np.maximum(want, 0))
    out = np.full(want.shape, np.nan, want.dtype)
    assert fastconv.conv2d(nhwc, weight, b, layout="NHWC", out=out, **kwargs) is out
    assert_array_equal(out, want)
    wide = np.zeros(nhwc.shape[:3] + (nhwc.shape[3] + 3,), x.dtype)
    wide[..., :nhwc.shape[3]] = nhwc
    for view in (wide[..., :nhwc.shape[3]], x.transpose(0, 2, 3, 1)):
        assert_array_equal(fastconv.conv2d(view, weight, b, layout="NHWC", **kwargs), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n, c, h, w, f, kernel, kwargs", [
    # 3 -> 64 channels: 4 vectors of filters in one tile of 6 pixels (AVX-512), runs of tiles
    # along each row and a tail of 4 pixels
    (1, 3, 30, 40, 64, (3, 3), dict(padding=1)),
    (2, 8, 10, 26, 48, (3, 3), dict(padding=1, groups=2)),      # 1.5 vectors per group
    (1, 5, 20, 60, 32, (3, 3), dict(stride=2, padding=1)),      # pixels 2 apart
    (1, 4, 30, 80, 16, (3, 3), dict(stride=3)),                 # apart: a pointer each
    (1, 6, 12, 30, 40, (3, 3), dict(dilation=2, padding=2, padding_mode="reflect")),
    (2, 3, 9, 28, 16, (5, 5), dict(padding=2, padding_mode="circular")),
    (2, 2, 7, 33, 24, (4, 4), dict(padding="same", padding_mode="replicate")),  # uneven
    (1, 4, 8, 32, 136, (3, 3), dict(padding=1)),                # 8.5 vectors: 3 + 3 + 2.5
    (3, 20, 5, 24, 32, (1, 1), {}),
    (4, 1, 2, 50, 16, (3, 3), dict(padding=(1, 0))),            # rows of padding only
    # 1x1, stride 1: short rows taken as rows of another width (14x14 as 4 x 49; 7x7 as 49)
    (4, 12, 14, 14, 24, (1, 1), {}),
    (8, 8, 7, 7, 32, (1, 1), dict(groups=2)),
])
def test_channels_last_kernel(rng, n, c, h, w, f, kernel, kwargs, dtype):
    """NHWC layers whose output rows hold two or more of the channels-last kernel's tiles
    (and 8 rows over the batch) take it (filters in the lanes, the input copied as it lies, results straight into the
    output): exact against the reference, the same bits as NCHW, for any thread count,
    with ReLU, into out= and through views of x."""
    x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                               groups=kwargs.get("groups", 1), integer=True, dtype=dtype)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert _conv_call(nhwc, weight, layout="NHWC", **kwargs).path == "channels_last"
    expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
    assert_array_equal(fastconv.conv2d(x, weight, b, **kwargs), expected)
    assert_nhwc_exact_everywhere(x, weight, b, expected, **kwargs)


def test_merged_rows():
    """NHWC 1x1 layers with stride 1 and short rows: the channels-last kernel takes their
    pixels in rows of another width, where x's rows follow one another; a call planned so
    refuses x whose rows do not."""
    from fastconv import _conv_plan, conv

    assert _conv_plan.merged_row_width(196, 14, 12) == 49
    assert _conv_plan.merged_row_width(49, 7, 12) == 49
    assert _conv_plan.merged_row_width(3136, 56, 12) == 56        # rows long enough
    assert _conv_plan.merged_row_width(23, 1, 12) == 1            # too few pixels
    x = np.zeros((2, 14, 14, 16), np.float32)
    weight = np.zeros((32, 16, 1, 1), np.float32)
    width = _conv_plan.merged_row_width(196, 14, conv._kernels.LANES_PIXELS)  # 14 at AVX2
    call = _conv_call(x, weight, layout="NHWC")
    assert call.path == "channels_last" and call.runner.plan.col_src.shape == (1, width)
    rows_apart = np.zeros((2, 14, 15, 16), np.float32)[:, :, :14]
    if width != 14:
        with pytest.raises(ValueError, match="strides"):
            call.runner(rows_apart, weight)
    call = _conv_call(rows_apart, weight, layout="NHWC")  # not merged
    assert call.path == "gemm" or call.runner.plan.col_src.shape == (1, 14)


@pytest.mark.parametrize("kernel, padding", [((3, 3), 1), ((1, 1), 0)])
def test_channels_last_odd_views(rng, kernel, padding):
    """The channels-last kernel (1x1: in merged rows) reads NHWC views with reversed rows,
    columns or channels, broadcast pixels and Fortran order: the NCHW result of their
    copies."""
    base = rng.integers(-3, 4, (8, 7, 40, 20)).astype(np.float32)
    weight = rng.integers(-3, 4, (32, 20) + kernel).astype(np.float32)
    b = rng.integers(-3, 4, 32).astype(np.float32)
    views = [base[:, ::-1, ::-1], base[..., ::-1], np.broadcast_to(base[:, :1, :1], base.shape),
             np.asfortranarray(base)]
    for view in views:
        assert _conv_call(view, weight, padding=padding, layout="NHWC").path == "channels_last"
        nchw = np.ascontiguousarray(view.transpose(0, 3, 1, 2))
        expected = fastconv.conv2d(nchw, weight, b, padding=padding).transpose(0, 2, 3, 1)
        assert_array_equal(fastconv.conv2d(view, weight, b, padding=padding, layout="NHWC",
                                           num_threads=2), expected)


@pytest.mark.parametrize("n, c, h, w, f, kernel, padding, path", [
    (8, 20, 7, 40, 32, (3, 3), 1, "channels_last"),   # 3x3: few padding taps to skip
    (8, 62, 24, 24, 88, (7, 7), 3, "lanes"),          # 7x7 skips many
])
def test_filter_lanes_over_channels_last(rng, n, c, h, w, f, kernel, padding, path):
    """NHWC layers that both the channels-last and the filter-lane kernels take go to the
    filter-lane kernel only under kernels of 25 taps or more (AVX-512 float32)."""
    x, weight, _ = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    call = _conv_call(nhwc, weight, padding=padding, layout="NHWC")
    if fastconv.conv._kernels.ISA == "avx512":
        assert call.path == path
    assert call.path in ("lanes", "channels_last", "gemm")


def test_channels_last_rule():
    """The GEMM kernel keeps NHWC layers with short output rows, filters that leave a
    vector partly empty, and taps that skip input columns (see use_channels_last)."""
    lanes = 16
    args = dict(rows=56, out_w=56, per_group=64, kernel_w=3, stride_w=1, dilation_w=1,
                lanes=lanes, tile_pixels=12, half_tail=True)
    from fastconv._conv_plan import use_channels_last
    assert use_channels_last(**args)
    assert use_channels_last(**dict(args, per_group=24))          # 1.5 vectors
    assert not use_channels_last(**dict(args, per_group=24, half_tail=False))
    assert not use_channels_last(**dict(args, out_w=14))
    assert not use_channels_last(**dict(args, per_group=20))
    assert not use_channels_last(**dict(args, per_group=8))       # half a vector only
    assert not use_channels_last(**dict(args, kernel_w=1, stride_w=2))
    assert use_channels_last(**dict(args, kernel_w=3, stride_w=2))
    assert not use_channels_last(**dict(args, rows=4))            # too few bands for tasks


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channels_last_kernel_any_layer(rng, monkeypatch, dtype):
    """The channels-last kernel forced on layers its rule leaves to the GEMM kernel (short
    rows, partial vectors of filters through its staged tile, few filters per group,
    strides of 3, 1x1 with stride 2): exact, the same as NCHW, for any thread count."""
    from fastconv import _conv_plan, conv

    monkeypatch.setattr(_conv_plan, "use_channels_last", lambda **kwargs: True)
    conv._forget_calls()
    cases = [
        (2, 6, 7, 9, 20, (3, 3), dict(padding=1, groups=2)),     # 10 per group: staged
        (1, 4, 5, 17, 3, (3, 3), dict(padding=1)),
        (3, 12, 6, 14, 36, (1, 1), dict(stride=2, groups=3)),
        (1, 5, 11, 13, 70, (2, 3), dict(stride=(1, 3), dilation=(2, 1))),
        (2, 3, 4, 4, 33, (3, 3), dict(padding=1, padding_mode="reflect")),
    ]
    try:
        for n, c, h, w, f, kernel, kwargs in cases:
            x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                                       groups=kwargs.get("groups", 1), integer=True,
                                       dtype=dtype)
            nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            call = _conv_call(nhwc, weight, layout="NHWC", **kwargs)
            assert call.path in ("channels_last", "lanes")
            expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
            assert_nhwc_exact_everywhere(x, weight, b, expected, **kwargs)
    finally:
        conv._forget_calls()


def test_channels_last_call_checks_its_plan():
    """ChannelsLastCall refuses a plan whose tables would read outside the slab or x."""
    from fastconv import conv

    x = np.zeros((1, 10, 30, 3), np.float32)
    weight = np.zeros((32, 3, 3, 3), np.float32)
    call = _conv_call(x, weight, padding=1, layout="NHWC")
    assert call.path == "channels_last"
    plan = call.runner.plan
    kwargs = dict(groups=1, per_group=32, kernel=(3, 3), stride_w=1, out_hw=(10, 30),
                  relu=False, workspace=conv._workspace)
    out_shape = (1, 10, 30, 32)
    conv._kernels.ChannelsLastCall(plan, np.float32, x.shape, out_shape, **kwargs)  # fits
    broken = {"row_src": plan.row_src + 10, "col_src": plan.col_src + 30,
              "pixel_offsets": plan.pixel_offsets + plan.slab_size,
              "tap_rows": plan.tap_rows + plan.slab_size}
    for table, value in broken.items():
        with pytest.raises(ValueError, match=f"{table}|plan"):
            conv._kernels.ChannelsLastCall(plan._replace(**{table: value}), np.float32,
                                           x.shape, out_shape, **kwargs)
    uneven = plan.pixel_offsets.copy()
    uneven[1] += 1  # pixels of a row must lie stride_w apart
    with pytest.raises(ValueError, match="pixels"):
        conv._kernels.ChannelsLastCall(plan._replace(pixel_offsets=uneven), np.float32,
                                       x.shape, out_shape, **kwargs)
    with pytest.raises(ValueError, match="plan"):
        conv._kernels.ChannelsLastCall(plan, np.float32, x.shape, (1, 10, 30, 16),
                                       **dict(kwargs, per_group=16))


def _misaligned(a):
    raw = np.empty(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw.data, a.dtype, a.size, offset=1).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("groups", [1, 4])  # the GEMM kernel and the depthwise one
def test_misaligned_or_swapped_weights_and_bias(rng, groups):
    x, w, b = make_inputs(rng, c=4, f=4, groups=groups, integer=True)
    expected = conv2d_reference(x, w, b, padding=1, groups=groups).astype(np.float32)
    for weight, bias in [(_misaligned(w), _misaligned(b)),
                         (w.astype(w.dtype.newbyteorder()), b.astype(b.dtype.newbyteorder()))]:
        assert_array_equal(fastconv.conv2d(x, weight, bias, padding=1, groups=groups), expected)
    for weight, bias in [(w, b), (fastconv.conv._prepack_weights(w, b, groups), None)]:
        out = _misaligned(np.zeros_like(expected))
        assert fastconv.conv2d(x, weight, bias, padding=1, groups=groups, out=out) is out
        assert_array_equal(out, expected)


@pytest.mark.parametrize("name, good, bad, error", [
    ("stride", 1, True, TypeError),
    ("stride", (1, 1), (1, True), TypeError),
    ("padding", 1, 1.0, TypeError),
    ("dilation", 1, np.bool_(True), TypeError),
    ("groups", 1, True, TypeError),
])
def test_cached_calls_do_not_accept_lookalike_arguments(rng, name, good, bad, error):
    """True == 1 and 1.0 == 1 in Python: a cached call with 1 must not let them through."""
    x, w, b = make_inputs(rng)
    fastconv.conv2d(x, w, b, **{name: good})
    with pytest.raises(error):
        fastconv.conv2d(x, w, b, **{name: bad})


@pytest.mark.parametrize("width, kw, sw, dw, left, right, mode", [
    (14, 3, 1, 1, 1, 1, "zeros"),
    (13, 3, 2, 1, 1, 1, "zeros"),
    (20, 5, 1, 2, 4, 4, "reflect"),
    (9, 3, 3, 1, 1, 0, "replicate"),
    (26, 7, 3, 1, 3, 3, "circular"),
    (10, 3, 1, 2, 0, 3, "zeros"),
])
def test_tap_phase_columns(width, kw, sw, dw, left, right, mode):
    """One slab phase per tap: at column q, tap k's phase holds padded input column
    q * sw + k * dw, for the output's columns only (no junk); its linear interior is exactly
    the columns inside the input."""
    from fastconv._conv_plan import _column_maps, source_index

    out_w = (left + width + right - dw * (kw - 1) - 1) // sw + 1
    phases, pitch, col_src, col_inner, tap_phase, tap_shift, wrap = _column_maps(
        width, out_w, kw, sw, dw, left, right, mode, per_tap=True)
    assert (phases, pitch, wrap) == (kw, out_w, 0)
    assert_array_equal(tap_phase, np.arange(kw))
    assert_array_equal(tap_shift, np.zeros(kw))
    q = np.arange(out_w)
    for k in range(kw):
        column = q * sw + k * dw - left
        assert_array_equal(col_src[k], source_index(column, width, mode))
        first, end, offset = col_inner[k]
        assert_array_equal(np.arange(first, end), q[(column >= 0) & (column < width)])
        assert_array_equal(col_src[k, first:end], q[first:end] * sw + offset)


def _gemm_columns(n, c, h, w, f, kernel, stride=(1, 1), dilation=(1, 1), itemsize=4,
                  lanes=16):
    """(phases, pitch) of the GEMM plan of a layer with "same"-style padding, for the
    AVX-512 kernel's tiles (8 filters x 2 vectors of ``lanes`` pixels)."""
    from fastconv import _conv_plan

    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    plan = _conv_plan.plan(
        n_images=n, groups=1, in_per_group=c, per_group=f, height=h, width=w, out_h=out_h,
        out_w=out_w, kernel=kernel, stride=stride, dilation=dilation, pads=(ph, ph, pw, pw),
        padding_mode="zeros", mr=8, nr=2 * lanes, lanes=lanes, itemsize=itemsize,
        half_tail=True)
    return plan.col_src.shape, out_w


def test_tap_phases_rule():
    """The plan takes one slab phase per tap where junk columns cost many lanes (ResNet's
    14x14 3x3 layer: 4 rows of 15 columns fill 4 vectors, of 14 columns 3.5; 3x3 with
    stride 2 onto 14x14), not where they cost few (56x56), nor for 5x5 and 7x7 kernels
    (kw - 1 more copies of each row than phases of the stride), nor on maps of at most
    LANES_MAX_PIXELS pixels (the filter-lane kernel's choice weighs the GEMM plan's lanes)."""
    assert _gemm_columns(1, 256, 14, 14, 256, (3, 3)) == ((3, 14), 14)
    assert _gemm_columns(1, 128, 28, 28, 256, (3, 3), stride=(2, 2)) == ((3, 14), 14)
    assert _gemm_columns(1, 64, 56, 56, 64, (3, 3)) == ((1, 57), 56)
    assert _gemm_columns(1, 48, 28, 28, 96, (5, 5)) == ((1, 30), 28)
    assert _gemm_columns(1, 24, 56, 56, 40, (7, 7)) == ((1, 59), 56)
    # 12x12 maps, 2 and 3 junk columns: measured 1.07 and 0.95 of the time if taken
    assert _gemm_columns(2, 192, 12, 12, 96, (5, 5)) == ((1, 14), 12)
    assert _gemm_columns(1, 48, 12, 12, 96, (7, 7)) == ((1, 15), 12)
    assert _gemm_columns(2, 96, 7, 7, 256, (3, 3), dilation=(2, 2)) == ((1, 9), 7)
    # a thirteenth of the pitch junk: the model's estimate (1.009) may be 2% higher, with
    # vectors of 16 pixels only
    assert _gemm_columns(16, 40, 12, 12, 32, (3, 3)) == ((3, 12), 12)
    assert _gemm_columns(16, 40, 12, 12, 32, (3, 3), itemsize=8, lanes=8) == ((1, 13), 12)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_tap_phases_any_layer(rng, monkeypatch, dtype):
    """One slab phase per tap forced on every layer with junk columns (any kernel size,
    stride, dilation and padding mode): the bits of the default columns for any thread
    count and with ReLU and pooling fused; exact on integer inputs, NCHW and NHWC."""
    from fastconv import _conv_plan, conv
    from fastconv.conv import _conv2d

    cases = [  # n, c, h, w, f, kernel, kwargs
        (2, 5, 14, 14, 20, (3, 3), dict(padding=1)),
        (1, 40, 16, 16, 24, (3, 3), dict(padding=1)),                 # chunks of channels
        (1, 3, 17, 23, 9, (3, 3), dict(stride=2, padding=1)),
        (2, 4, 12, 19, 16, (5, 5), dict(padding=(2, 3), dilation=(1, 2))),
        (1, 6, 15, 15, 12, (3, 3), dict(padding=2, dilation=2, padding_mode="reflect")),
        (1, 2, 23, 26, 8, (7, 7), dict(stride=3, padding=3, padding_mode="circular")),
        (3, 8, 11, 25, 24, (3, 2), dict(padding=1, padding_mode="replicate", groups=2)),
    ]

    def pool_args(kwargs):
        return (kwargs.get("stride", 1), kwargs.get("padding", 0), kwargs.get("dilation", 1),
                kwargs.get("groups", 1), kwargs.get("padding_mode", "zeros"), "NCHW", "relu",
                None, None, 2)

    inputs, default, junk = [], [], []
    for n, c, h, w, f, kernel, kwargs in cases:
        groups = kwargs.get("groups", 1)
        x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel, groups=groups,
                                   dtype=dtype)
        inputs.append((x, weight, b))
        pitch = _conv_call(x, weight, **kwargs).runner.plan.col_src.shape[1]
        junk.append(pitch > fastconv.conv2d(x, weight, b, **kwargs).shape[3])
        default.append((fastconv.conv2d(x, weight, b, **kwargs),
                        _conv2d(x, weight, b, *pool_args(kwargs))))
    assert sum(junk) >= len(cases) - 2  # mostly other columns by default (the rule, ISAs)
    monkeypatch.setattr(_conv_plan, "TAP_PHASES_GAIN", -np.inf)
    monkeypatch.setattr(_conv_plan, "TAP_JUNK_SLACK", np.inf)
    monkeypatch.setattr(_conv_plan, "TAP_PHASES_ADDED", 100)
    _conv_plan.plan.cache_clear()
    conv._forget_calls()
    try:
        for (n, c, h, w, f, kernel, kwargs), (x, weight, b), (plain, pooled) in zip(
                cases, inputs, default):
            call = _conv_call(x, weight, **kwargs)
            assert call.path == "gemm"
            assert call.runner.plan.col_src.shape == (kernel[1], plain.shape[3])
            for threads in (1, 2, 3):
                y = fastconv.conv2d(x, weight, b, num_threads=threads, **kwargs)
                assert_array_equal(y.view(np.uint8), plain.view(np.uint8))
            assert_array_equal(_conv2d(x, weight, b, *pool_args(kwargs)).view(np.uint8),
                               pooled.view(np.uint8))
            x, weight, b = make_inputs(rng, n=n, c=c, h=h, w=w, f=f, kernel=kernel,
                                       groups=kwargs.get("groups", 1), integer=True,
                                       dtype=dtype)
            expected = conv2d_reference(x, weight, b, **kwargs).astype(dtype)
            assert_array_equal(fastconv.conv2d(x, weight, b, **kwargs), expected)
            assert_nhwc_exact_everywhere(x, weight, b, expected, **kwargs)
    finally:
        _conv_plan.plan.cache_clear()
        conv._forget_calls()
