"""The numerical promise of conv2d / correlate2d / convolve2d, tested on long reductions.

Promise (README, "Reliability"): every output element ``y = b + sum_r x_r * w_r`` over its
``R = (C / groups) * KH * KW`` taps, computed in the compute dtype (float32 or float64) with
machine epsilon ``eps``, satisfies

    |y - y_exact| <= (R + 2) * eps * (sum_r |x_r * w_r| + |b|)

Why it is safe: the kernels start from the bias and accumulate the R products one after the
other, in a fixed order, in the compute dtype (one rounding per term with FMA, two without).
That is a recursive dot product of R + 1 terms, whose classical bound is
``gamma_{R+1} = (R + 1) u / (1 - (R + 1) u)`` with the unit roundoff ``u = eps / 2``
(Higham, Accuracy and Stability of Numerical Algorithms, 3.1); ``(R + 2) * eps`` exceeds it
for every R with ``R * eps < 1/2``. No blocked or pairwise trick is assumed, so the bound also
holds for the baseline (no FMA) kernels. Typical errors are far smaller (~ sqrt(R) * u);
the "adversarial" data below (one large term, then terms just under half an ulp of it, which
a sequential sum loses) shows errors that grow like R.

The exact reference splits every product into four exactly representable float64 pieces
(Veltkamp) and sums them with ``math.fsum`` (correctly rounded), so it is exact to float64
rounding for float64 data too.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastconv
from fastconv.reference import conv_padding_reference


def promised_bound(taps, dtype):
    return (taps + 2) * float(np.finfo(dtype).eps)


def _split(a):
    """Veltkamp split: ``a == hi + lo`` with both halves of <= 26 significant bits."""
    factor = 134217729.0  # 2**27 + 1
    c = factor * a
    hi = c - (c - a)
    return hi, a - hi


def exact_conv(x, w, b, stride, pads, dilation, groups):
    """Correctly rounded conv2d (NCHW, zero padding) and ``S = sum |x w| + |b|`` per output."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n = x.shape[0]
    f, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, OH, OW, KH, KW)
    oh, ow = win.shape[2:4]
    fg = f // groups
    exact = np.empty((n, f, oh, ow))
    scale = np.empty((n, f, oh, ow))
    for g in range(groups):
        # (N, OH, OW, R) taps of the group's channels, R in (c, kh, kw) order
        taps = win[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, -1)
        t_hi, t_lo = _split(taps)
        for fi in range(g * fg, (g + 1) * fg):
            wr = w[fi].reshape(-1)
            w_hi, w_lo = _split(wr)
            pieces = np.concatenate([t_hi * w_hi, t_hi * w_lo, t_lo * w_hi, t_lo * w_lo],
                                    axis=-1)
            bias = 0.0 if b is None else float(b[fi])
            for idx in np.ndindex(n, oh, ow):
                exact[idx[0], fi, idx[1], idx[2]] = math.fsum([bias, *pieces[idx]])
            scale[:, fi] = np.abs(taps * wr).sum(axis=-1) + abs(bias)
    return exact, scale


def data(rng, kind, shape, dtype):
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "positive":  # no cancellation: the running sum only grows
        return rng.uniform(0.5, 1.0, shape).astype(dtype)
    raise ValueError(kind)


def adversarial(dtype, c, kh, kw, n_filters):
    """x = 1; weight (c, kh, kw) = (0, 0, 0) is 1, every later tap just under half an ulp
    of 1, so a sequential sum in (c, kh, kw) order rounds every one of them away."""
    eps = float(np.finfo(dtype).eps)
    w = np.full((n_filters, c, kh, kw), 0.45 * eps, dtype)
    w[:, 0, 0, 0] = 1.0
    return w


def check(y, exact, scale, taps, dtype):
    """Assert the promise; return the largest error in units of ``eps * S``."""
    eps = float(np.finfo(dtype).eps)
    err = np.abs(y.astype(np.float64) - exact)
    assert np.all(np.isfinite(y))
    ratio = err / (eps * scale)
    bound = promised_bound(taps, dtype) / eps
    worst = float(ratio.max())
    assert worst <= bound, f"error {worst:.1f} eps*S > promised {bound:.0f} eps*S (R={taps})"
    return worst


# (C, F, KH, KW, H, W, stride, padding, dilation, groups): R = C / groups * KH * KW
CASES = {
    "3x3, R=5004": (556, 4, 3, 3, 7, 6, 1, 1, 1, 1),
    "5x5 stride 2, R=5000": (200, 3, 5, 5, 9, 10, 2, 2, 1, 1),
    "1x1, R=5000": (5000, 5, 1, 1, 3, 5, 1, 0, 1, 1),
    "grouped 3x3, R=4608": (1024, 4, 3, 3, 5, 5, 1, 1, 1, 2),
    "dilated 3x3, R=4500": (500, 2, 3, 3, 9, 9, 1, 2, 2, 1),
    "depthwise 70x70, R=4900": (2, 2, 70, 70, 72, 73, 1, 0, 1, 2),
    "small 3x3, R=27": (3, 8, 3, 3, 12, 12, 1, 1, 1, 1),
}


# the adversarial pattern is built for one group
CASE_KINDS = [(case, kind) for case in CASES for kind in ("normal", "positive", "adversarial")
              if kind != "adversarial" or CASES[case][-1] == 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,kind", CASE_KINDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_error_bound(case, kind, dtype, layout):
    c, f, kh, kw, h, w, stride, padding, dilation, groups = CASES[case]
    rng = np.random.default_rng(zlib.crc32(f"{case} {kind}".encode()))
    taps = c // groups * kh * kw
    if kind == "adversarial":
        x = np.ones((1, c, h, w), dtype)
        weight = adversarial(dtype, c, kh, kw, f)
        bias = None
        padding = 0  # every tap inside the image, so no zero is summed first
    else:
        x = data(rng, kind, (2, c, h, w), dtype)
        weight = data(rng, kind, (f, c // groups, kh, kw), dtype)
        bias = data(rng, kind, (f,), dtype)
    pads = conv_padding_reference(padding, (h, w), (kh, kw), stride, dilation)
    exact, scale = exact_conv(x, weight, bias, (stride, stride), pads, (dilation, dilation),
                              groups)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = fastconv.conv2d(xin, weight, bias, stride=stride, padding=padding, dilation=dilation,
                        groups=groups, layout=layout)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    assert y.dtype == dtype
    check(y, exact, scale, taps, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adversarial_error_grows_with_r_but_stays_in_bound(dtype):
    """The bound is not vacuous: on the adversarial data the sequential sum loses every small
    term, an error of about 0.45 * (R - 1) * eps * S, within a factor ~2 of (R + 2) * eps * S.
    (Exact summation would give 0 here, so a kernel that is *more* accurate than promised
    passes too.)"""
    c, kh, kw = 5000, 1, 1
    x = np.ones((1, c, 2, 2), dtype)
    weight = adversarial(dtype, c, kh, kw, 2)
    exact, scale = exact_conv(x, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    y = fastconv.conv2d(x, weight)
    check(y, exact, scale, c * kh * kw, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["correlate2d", "convolve2d"])
def test_correlate_error_bound(op, dtype):
    rng = np.random.default_rng(3)
    image = data(rng, "normal", (80, 75), dtype)
    kernel = data(rng, "normal", (70, 71), dtype)  # R = 4970
    y = getattr(fastconv, op)(image, kernel, "valid")
    k = kernel if op == "correlate2d" else kernel[::-1, ::-1]
    exact, scale = exact_conv(image[None, None], k[None, None], None, (1, 1), (0, 0, 0, 0),
                              (1, 1), 1)
    assert y.dtype == dtype
    check(y, exact[0, 0], scale[0, 0], kernel.size, dtype)


def test_float16_and_integer_inputs_compute_in_their_promised_dtype():
    """float16 computes in float32 (the float32 bound), integers in float64 (exact here)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 300, 6, 6)).astype(np.float16)
    w = rng.standard_normal((2, 300, 3, 3)).astype(np.float16)
    exact, scale = exact_conv(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    y = fastconv.conv2d(x, w, padding=1)
    assert y.dtype == np.float32
    check(y, exact, scale, 300 * 9, np.float32)
    xi = rng.integers(-1000, 1000, (1, 300, 6, 6))
    wi = rng.integers(-1000, 1000, (2, 300, 3, 3))
    yi = fastconv.conv2d(xi, wi, padding=1)
    exact, _ = exact_conv(xi, wi, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert yi.dtype == np.float64
    np.testing.assert_array_equal(yi, exact)  # |partial sums| < 2**53: exact
