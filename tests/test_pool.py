"""fastconv.max_pool2d against the plain NumPy reference (and PyTorch when installed)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _cpu_features
from fastconv import pool as pool_module
from fastconv.reference import max_pool2d_reference

# Every instruction-set level this CPU has, or only the one FASTCONV_ISA forces (CI runs the
# suite once per level).
ISA_LEVELS = [level for level in _cpu_features.supported_isa_levels()
              if importlib.util.find_spec(f"fastconv._pool_{level}") is not None
              and os.environ.get("FASTCONV_ISA", level).strip().lower() == level]


@pytest.fixture(params=ISA_LEVELS)
def isa(request, monkeypatch):
    """Run the test once per instruction-set level this CPU has (not just the selected one)."""
    module = importlib.import_module(f"fastconv._pool_{request.param}")
    monkeypatch.setattr(pool_module, "_kernels", module)
    return request.param


def to_layout(x_nchw, layout):
    """An NCHW test array in ``layout`` (C-contiguous)."""
    if layout == "NCHW":
        return x_nchw
    axes = (0, 2, 3, 1) if x_nchw.ndim == 4 else (1, 2, 0)
    return np.ascontiguousarray(x_nchw.transpose(axes))


def assert_same(actual, expected):
    """Exact equality, NaN where expected has NaN, same dtype and shape."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == 2
        assert_same(actual[0], expected[0])
        assert actual[1].dtype == np.int64
        np.testing.assert_array_equal(actual[1], expected[1])
        return
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(actual, expected)


def check(x, *args, **kwargs):
    """max_pool2d(x, ...) equals the reference, values and (if asked) indices."""
    expected = max_pool2d_reference(x, *args, **kwargs)
    actual = fastconv.max_pool2d(x, *args, **kwargs)
    assert_same(actual, expected)
    return actual


def random_input(rng, shape, dtype=np.float32, nan=0.0, neg_inf=0.0, ties=False):
    x = rng.standard_normal(shape)
    if ties:
        x = np.round(x)  # many equal values: index tie-breaking matters
    x[rng.random(shape) < neg_inf] = -np.inf
    x[rng.random(shape) < nan] = np.nan
    return x.astype(dtype)


# --------------------------------------------------------------------------------------------
# Differential grid

GRID = [
    (k, s, p, d, ceil)
    for k, s, p, d, ceil in itertools.product(
        [1, 2, 3, (2, 3), (3, 1)],
        [None, 1, 2, (1, 3)],
        [0, 1, (1, 0)],
        [1, 2, (2, 1)],
        [False, True],
    )
    # PyTorch's padding rule: padding <= kernel_size // 2
    if all(pp <= kk // 2 for pp, kk in zip(np.broadcast_to(p, 2), np.broadcast_to(k, 2)))
]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", GRID)
def test_grid_against_reference(kernel, stride, padding, dilation, ceil_mode):
    rng = np.random.default_rng(abs(hash((str(kernel), str(stride), str(padding)))) % 2**32)
    x_nchw = random_input(rng, (2, 3, 7, 10), np.float64, nan=0.02, neg_inf=0.05, ties=True)
    for dtype, layout, return_indices, unbatched in itertools.product(
            [np.float32, np.float64], ["NCHW", "NHWC"], [False, True], [False, True]):
        x = to_layout(x_nchw[0] if unbatched else x_nchw, layout).astype(dtype)
        expected = max_pool2d_reference(x, kernel, stride, padding, dilation,
                                        ceil_mode=ceil_mode, return_indices=return_indices,
                                        layout=layout)
        actual = fastconv.max_pool2d(x, kernel, stride, padding, dilation,
                                     ceil_mode=ceil_mode, return_indices=return_indices,
                                     layout=layout)
        assert_same(actual, expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding", [
    (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0), (5, 3, 2), ((1, 3), (1, 2), (0, 1)),
])
def test_every_isa_level(isa, layout, dtype, kernel, stride, padding):
    # Wide rows and many channels: vector bodies, tails and the NHWC channel vectors.
    rng = np.random.default_rng(7)
    x = random_input(rng, (2, 37, 19, 45), dtype, nan=0.01, neg_inf=0.02, ties=True)
    x = to_layout(x, layout)
    for ceil_mode, return_indices in itertools.product([False, True], [False, True]):
        check(x, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=return_indices,
              layout=layout)


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 8, 15, 16, 17, 33])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_nhwc_channel_counts(isa, channels, stride):
    rng = np.random.default_rng(channels)
    x = random_input(rng, (1, 9, 11, channels), np.float32, nan=0.02, ties=True)
    check(x, 3, stride, 1, layout="NHWC")
    check(x, 3, stride, 1, layout="NHWC", return_indices=True)


@pytest.mark.parametrize("width", list(range(1, 34)) + [47, 48, 49, 63, 64, 65, 96, 97, 129])
def test_row_widths(monkeypatch, width):
    # Every width around the vector lengths (16 float32 / 8 float64 lanes with AVX-512), the
    # fused kernels' blocks and their edges; each ISA level against one reference.
    rng = np.random.default_rng(width)
    modules = [importlib.import_module(f"fastconv._pool_{level}") for level in ISA_LEVELS]
    for dtype in (np.float32, np.float64):
        x = random_input(rng, (1, 2, 5, width), dtype, nan=0.03)
        for kernel, stride, padding, dilation in [
                (1, 1, 0, 1), (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 3, 1, 1),
                (4, 2, 2, 1), (5, 1, 2, 1), (5, 2, 1, 1), (4, 1, 0, 1), (1, 2, 0, 1),
                ((3, 2), (2, 2), (1, 1), (2, 1)), (3, 2, 1, (1, 2))]:
            kw = np.broadcast_to(kernel, 2)[1]
            pw = np.broadcast_to(padding, 2)[1]
            dw = np.broadcast_to(dilation, 2)[1]
            if width + 2 * pw < (kw - 1) * dw + 1:
                continue
            for ceil_mode in (False, True):
                expected = max_pool2d_reference(x, kernel, stride, padding, dilation,
                                                ceil_mode=ceil_mode, return_indices=True)
                for module in modules:
                    monkeypatch.setattr(pool_module, "_kernels", module)
                    assert_same(fastconv.max_pool2d(x, kernel, stride, padding, dilation,
                                                    ceil_mode=ceil_mode, return_indices=True),
                                expected)
                    assert_same(fastconv.max_pool2d(x, kernel, stride, padding, dilation,
                                                    ceil_mode=ceil_mode), expected[0])


@pytest.fixture
def generic_paths():
    """Disable the fused / vectorised-indices fast paths of every ISA level for one test."""
    modules = [importlib.import_module(f"fastconv._pool_{level}") for level in ISA_LEVELS]
    for module in modules:
        module._set_vector_paths(False)
    yield
    for module in modules:
        module._set_vector_paths(True)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (5, 2, 2, 1), ((2, 3), (1, 2), (1, 1), (2, 1)),
    (3, 3, 1, 2),
])
def test_generic_paths(generic_paths, monkeypatch, layout, kernel, stride, padding, dilation):
    # The fallbacks behind the fast paths (used for shapes the fast paths do not take).
    rng = np.random.default_rng(13)
    x = to_layout(random_input(rng, (2, 19, 9, 70), np.float32, nan=0.02, ties=True), layout)
    for ceil_mode in (False, True):
        expected = max_pool2d_reference(x, kernel, stride, padding, dilation,
                                        ceil_mode=ceil_mode, return_indices=True,
                                        layout=layout)
        for level in ISA_LEVELS:
            monkeypatch.setattr(pool_module, "_kernels",
                                importlib.import_module(f"fastconv._pool_{level}"))
            for dtype in (np.float32, np.float64):
                xd = x.astype(dtype)
                want = (expected[0].astype(dtype), expected[1])
                assert_same(fastconv.max_pool2d(xd, kernel, stride, padding, dilation,
                                                ceil_mode=ceil_mode, layout=layout,
                                                return_indices=True), want)
                assert_same(fastconv.max_pool2d(xd, kernel, stride, padding, dilation,
                                                ceil_mode=ceil_mode, layout=layout), want[0])


def test_large_kernel_and_strides_use_the_direct_path():
    rng = np.random.default_rng(3)
    x = random_input(rng, (1, 2, 12, 150), np.float32, nan=0.005)
    check(x, (3, 70), (1, 3), (1, 35))          # kernel wider than the separable bound
    check(x, (2, 2), (1, 100))                  # stride beyond the separable bound
    check(x, (2, 3), (2, 5), (1, 1), (1, 60))   # dilation far beyond the row
    check(x, (2, 3), (2, 70), (0, 1), ceil_mode=True)


# --------------------------------------------------------------------------------------------
# NaN, -inf, ties

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 1, 2), ((2, 3), (1, 2), (1, 1), 1),
])
def test_nan_at_every_window_position(layout, kernel, stride, padding, dilation):
    rng = np.random.default_rng(11)
    base = random_input(rng, (1, 2, 6, 7), np.float32)
    covered = 0
    for h, w in itertools.product(range(6), range(7)):
        x = base.copy()
        x[0, 1, h, w] = np.nan
        x = to_layout(x, layout)
        values, indices = check(x, kernel, stride, padding, dilation, layout=layout,
                                return_indices=True)
        values_only = fastconv.max_pool2d(x, kernel, stride, padding, dilation, layout=layout)
        np.testing.assert_array_equal(values_only, values)
        nan_outputs = np.isnan(values)
        covered += bool(nan_outputs.any())
        # every NaN output points at the NaN
        assert np.all(indices[nan_outputs] == h * 7 + w)
    assert covered >= 30


def test_nan_wins_over_inf_and_last_nan_is_reported():
    x = np.array([[[[np.inf, np.nan, 5.0, np.nan],
                    [-np.inf, 1.0, np.nan, 2.0]]]], dtype=np.float32)
    values, indices = fastconv.max_pool2d(x, (2, 4), return_indices=True)
    assert np.isnan(values[0, 0, 0, 0])
    assert indices[0, 0, 0, 0] == 6  # PyTorch reports the last NaN in row-major order
    values = fastconv.max_pool2d(x, (1, 2), stride=1)
    np.testing.assert_array_equal(values[0, 0], [[np.nan, np.nan, np.nan],
                                                  [1.0, np.nan, np.nan]])


def test_ties_report_the_first_maximum():
    x = np.array([[[[1.0, 3.0, 3.0],
                    [3.0, 2.0, 3.0]]]])
    values, indices = fastconv.max_pool2d(x, (2, 3), return_indices=True)
    assert values[0, 0, 0, 0] == 3.0 and indices[0, 0, 0, 0] == 1


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_all_neg_inf_windows(layout):
    x = to_layout(np.full((1, 3, 5, 5), -np.inf, dtype=np.float32), layout)
    values, indices = check(x, 3, 2, 1, layout=layout, return_indices=True)
    assert np.all(values == -np.inf)
    # the first tap of each window that lies inside the image
    expected = np.array([[0, 1, 3], [5, 6, 8], [15, 16, 18]])
    plane = indices[0, 0] if layout == "NCHW" else indices[0, :, :, 0]
    np.testing.assert_array_equal(plane, expected)


def test_window_without_any_tap_inside_the_image():
    # kernel 2, dilation 2, padding 1 on a 1x1 image: taps at -1 and 1, both outside.
    # PyTorch gives -inf and its start index (first tap >= 0): 1 * W + 1 = 2.
    x = np.array([[[[5.0]]]], dtype=np.float32)
    values, indices = check(x, 2, 1, 1, 2, return_indices=True)
    assert values[0, 0, 0, 0] == -np.inf and indices[0, 0, 0, 0] == 2
    values = fastconv.max_pool2d(x, 2, 1, 1, 2)
    assert values[0, 0, 0, 0] == -np.inf
    # the same along H only, on rows wide enough for the vectorised paths
    wide = np.arange(2 * 70, dtype=np.float32).reshape(1, 2, 1, 70)
    for layout in ("NCHW", "NHWC"):
        xl = to_layout(wide, layout)
        for stride in (1, 2, 3):
            for kw in (1, 2, 3):
                values = check(xl, (2, kw), stride, (1, 0), (2, 1), layout=layout)
                assert np.all(values == -np.inf)
                check(xl, (2, kw), stride, (1, 0), (2, 1), layout=layout, return_indices=True)


def test_integer_valued_and_extreme_values():
    info = np.finfo(np.float32)
    x = np.array([[[[info.max, -info.max, info.tiny, -info.tiny],
                    [np.inf, 0.0, -0.0, 1e-45]]]], dtype=np.float32)
    check(x, 2, 1, return_indices=True)
    check(x, (1, 2), (1, 1))


# --------------------------------------------------------------------------------------------
# Output size and ceil_mode

@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil_mode, expected", [
    (5, 2, 2, 0, 1, False, 2),
    (5, 2, 2, 0, 1, True, 3),
    (5, 3, 2, 1, 1, True, 3),
    (6, 3, 2, 1, 1, True, 4),
    (5, 2, 3, 1, 1, True, 2),    # ceil gives 3; the 3rd starts at 6 >= 5 + 1: dropped
    (3, 2, 2, 1, 1, True, 2),    # ceil gives 3; the 3rd starts at 4 >= 3 + 1: dropped
    (7, 2, 3, 1, 1, True, 3),    # ceil gives 4; the 4th starts at 9 >= 7 + 1: dropped
    (4, 2, 2, 1, 1, True, 3),
    (7, 3, 3, 0, 2, True, 2),
    (7, 3, 3, 0, 2, False, 1),
    (10, 3, 4, 1, 2, False, 2),
    (10, 3, 4, 1, 2, True, 3),
    (1, 1, 1, 0, 1, True, 1),
    (2, 3, 1, 1, 1, False, 2),
])
def test_output_size_and_ceil_mode(size, kernel, stride, padding, dilation, ceil_mode, expected):
    assert pool_module.pool_output_size(size, kernel, stride, padding, dilation,
                                        ceil_mode) == expected
    rng = np.random.default_rng(size)
    x = random_input(rng, (1, 2, size, size + 1), np.float32, nan=0.05)
    values, _ = check(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode,
                      return_indices=True)
    assert values.shape[2] == expected


@pytest.mark.parametrize("size", range(1, 12))
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (2, 3, 1), (3, 3, 1),
                                                     (4, 3, 2)])
def test_ceil_mode_sizes(size, kernel, stride, padding):
    if size + 2 * padding < kernel:
        return
    rng = np.random.default_rng(size)
    x = random_input(rng, (1, 1, size, size), np.float64, neg_inf=0.3)
    check(x, kernel, stride, padding, ceil_mode=True, return_indices=True)
    check(x, kernel, stride, padding, ceil_mode=True)


# --------------------------------------------------------------------------------------------
# Inputs: memory layouts, dtypes, batch sizes

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_unusual_memory_layouts(input_variants, layout):
    rng = np.random.default_rng(5)
    x = to_layout(random_input(rng, (2, 3, 8, 9), np.float32, nan=0.02), layout)
    for name, variant in input_variants(x).items():
        # nested lists are float64 (as np.asarray makes them); every other variant float32
        expected = max_pool2d_reference(np.asarray(variant), 3, 2, 1, layout=layout,
                                        return_indices=True)
        actual = fastconv.max_pool2d(variant, 3, 2, 1, layout=layout, return_indices=True)
        assert actual[0].dtype == expected[0].dtype, name
        assert_same(actual, expected)
        np.testing.assert_array_equal(actual[0], max_pool2d_reference(x, 3, 2, 1,
                                                                      layout=layout))


def test_nan_twin_non_contiguous(nan_twin):
    rng = np.random.default_rng(6)
    x = random_input(rng, (2, 3, 9, 10), np.float64)
    for axes in [None, (-1,), (-2,), (1,)]:
        for reverse in (False, True):
            view, base = nan_twin(x, axes=axes, reverse=reverse)
            before = base.copy()
            actual = fastconv.max_pool2d(view, 3, 2, 1, return_indices=True)
            assert_same(actual, max_pool2d_reference(x, 3, 2, 1, return_indices=True))
            assert not np.isnan(actual[0]).any()  # no read outside the view
            np.testing.assert_array_equal(base, before)  # nothing written into the input


@pytest.mark.parametrize("dtype, expected", [
    (np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64),
    (np.int8, np.float64), (np.uint8, np.float64), (np.int32, np.float64),
    (np.int64, np.float64), (np.uint16, np.float64), (np.bool_, np.float64),
])
def test_dtype_rules(dtype, expected):
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 2, (1, 2, 6, 6)) if dtype == np.bool_
         else rng.integers(0, 100, (1, 2, 6, 6))).astype(dtype)
    values, indices = check(x, 2, return_indices=True)
    assert values.dtype == expected and indices.dtype == np.int64
    np.testing.assert_array_equal(values, max_pool2d_reference(x.astype(np.float64), 2))


def test_float16_nan_and_inf():
    x = np.array([[[[np.nan, 1, -np.inf, 2]]]], dtype=np.float16)
    values = fastconv.max_pool2d(x, (1, 2))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [[[[np.nan, 2.0]]]])


def test_nested_lists_and_unbatched():
    x = [[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]]
    values = fastconv.max_pool2d(x, 2)
    assert values.shape == (1, 2, 2) and values.dtype == np.float64
    np.testing.assert_array_equal(values, [[[6, 8], [14, 16]]])
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(indices, [[[5, 7], [13, 15]]])
    nhwc = fastconv.max_pool2d(np.asarray(x, np.float32).transpose(1, 2, 0), 2, layout="NHWC")
    assert nhwc.shape == (2, 2, 1)
    np.testing.assert_array_equal(nhwc[..., 0], values[0])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("return_indices", [False, True])
def test_empty_batch(layout, return_indices):
    x = np.zeros((0, 3, 8, 8) if layout == "NCHW" else (0, 8, 8, 3), np.float32)
    result = fastconv.max_pool2d(x, 3, 2, 1, layout=layout, return_indices=return_indices)
    shape = (0, 3, 4, 4) if layout == "NCHW" else (0, 4, 4, 3)
    if return_indices:
        assert result[0].shape == shape and result[1].shape == shape
        assert result[1].dtype == np.int64
    else:
        assert result.shape == shape and result.dtype == np.float32


def test_input_is_not_modified():
    rng = np.random.default_rng(2)
    x = random_input(rng, (2, 3, 8, 8), np.float32, nan=0.05)
    before = x.copy()
    fastconv.max_pool2d(x, 3, 2, 1)
    fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------------------------
# Threads

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_thread_invariance(layout, dtype, kernel, stride, padding):
    rng = np.random.default_rng(8)
    # large enough to run in parallel (kernels run serially below ~32k elements)
    x = to_layout(random_input(rng, (2, 16, 48, 50), dtype, nan=0.01, ties=True), layout)
    for return_indices in (False, True):
        results = [fastconv.max_pool2d(x, kernel, stride, padding, layout=layout,
                                       return_indices=return_indices, num_threads=n)
                   for n in (1, 2, 4)]
        for other in results[1:]:
            if return_indices:
                np.testing.assert_array_equal(other[1], results[0][1])
                other, first = other[0], results[0][0]
            else:
                first = results[0]
            assert other.tobytes() == first.tobytes()


def test_threadpoolctl_limits_are_accepted():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(9)
    x = random_input(rng, (1, 16, 64, 64), np.float32)
    expected = fastconv.max_pool2d(x, 2)
    with threadpoolctl.threadpool_limits(1):
        np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), expected)


# --------------------------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_out_values(layout):
    rng = np.random.default_rng(10)
    x = to_layout(random_input(rng, (2, 3, 8, 8), np.float32), layout)
    out = np.full((2, 3, 4, 4) if layout == "NCHW" else (2, 4, 4, 3), 7.0, np.float32)
    result = fastconv.max_pool2d(x, 2, layout=layout, out=out)
    assert result is out
    np.testing.assert_array_equal(out, max_pool2d_reference(x, 2, layout=layout))


def test_out_with_indices_and_unbatched():
    rng = np.random.default_rng(12)
    x = random_input(rng, (3, 8, 8), np.float64)
    values = np.empty((3, 4, 4))
    indices = np.empty((3, 4, 4), np.int64)
    result = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, out=(values, indices))
    assert result[0] is values and result[1] is indices
    assert_same((values, indices), max_pool2d_reference(x, 3, 2, 1, return_indices=True))
    # a list works as the pair too
    values2 = np.empty_like(values)
    result = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True,
                                 out=[values2, np.empty_like(indices)])
    np.testing.assert_array_equal(values2, values)


def test_out_empty_batch():
    out = np.empty((0, 2, 2, 2), np.float32)
    assert fastconv.max_pool2d(np.zeros((0, 2, 4, 4), np.float32), 2, out=out) is out


@pytest.mark.parametrize("make_out, match", [
    (lambda: np.empty((1, 2, 3, 3), np.float32), "shape"),
    (lambda: np.empty((1, 2, 4, 4), np.float64), "dtype"),
    (lambda: np.empty((1, 2, 4, 8), np.float32)[..., ::2], "C-contiguous"),
    (lambda: np.empty((1, 2, 4, 4), np.float32, order="F"), "C-contiguous"),
])
def test_bad_out(make_out, match):
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        fastconv.max_pool2d(x, 2, out=make_out())


def test_readonly_out():
    out = np.empty((1, 2, 4, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastconv.max_pool2d(np.zeros((1, 2, 8, 8), np.float32), 2, out=out)


def test_out_overlapping_input_is_refused():
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        fastconv.max_pool2d(x, 2, out=x.reshape(-1)[:32].reshape(1, 2, 4, 4))
    indices_over_x = x.reshape(-1).view(np.int64)[:32].reshape(1, 2, 4, 4)
    with pytest.raises(ValueError, match="overlaps"):
        fastconv.max_pool2d(x, 2, return_indices=True,
                            out=(np.empty((1, 2, 4, 4), np.float32), indices_over_x))


def test_out_values_and_indices_must_not_overlap():
    buffer = np.empty(64, np.float32)
    values = buffer[:32].reshape(1, 2, 4, 4)
    indices = buffer.view(np.int64).reshape(1, 2, 4, 4)
    with pytest.raises(ValueError, match="overlaps"):
        fastconv.max_pool2d(np.zeros((1, 2, 8, 8), np.float32), 2, return_indices=True,
                            out=(values, indices))


@pytest.mark.parametrize("out, return_indices, exc, match", [
    (np.empty((1, 2, 4, 4), np.float32), True, TypeError, "pair"),
    ((np.empty((1, 2, 4, 4), np.float32),), True, TypeError, "pair"),
    ((np.empty((1, 2, 4, 4), np.float32), np.empty((1, 2, 4, 4), np.float32)), True,
     ValueError, "indices"),
    ((np.empty((1, 2, 4, 4), np.float32), np.empty((1, 2, 4, 4), np.int64)), False,
     TypeError, "ndarray"),
    ([1, 2], False, TypeError, "ndarray"),
    ((np.empty((1, 2, 4, 4), np.float32), "nope"), True, TypeError, "indices"),
])
def test_bad_out_kinds(out, return_indices, exc, match):
    with pytest.raises(exc, match=match):
        fastconv.max_pool2d(np.zeros((1, 2, 8, 8), np.float32), 2,
                            return_indices=return_indices, out=out)


# --------------------------------------------------------------------------------------------
# Errors

X = np.zeros((1, 2, 8, 8), np.float32)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fastconv.max_pool2d(np.zeros((8, 8)), 2), ValueError, "4-D"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 1, 1, 8, 8)), 2), ValueError, "5-D"),
    (lambda: fastconv.max_pool2d(np.zeros(()), 2), ValueError, "0-D"),
    (lambda: fastconv.max_pool2d(X, 2, layout="NWHC"), ValueError, "layout"),
    (lambda: fastconv.max_pool2d(X, 2, layout=None), ValueError, "layout"),
    (lambda: fastconv.max_pool2d(X, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: fastconv.max_pool2d(X, (2, -1)), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, ()), ValueError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, 2.0), TypeError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, True), TypeError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, "2"), TypeError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, None), TypeError, "kernel_size"),
    (lambda: fastconv.max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 2, stride=(1, 0)), ValueError, "stride"),
    (lambda: fastconv.max_pool2d(X, 2, stride=1.5), TypeError, "stride"),
    (lambda: fastconv.max_pool2d(X, 2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: fastconv.max_pool2d(X, 3, padding=2), ValueError,
     r"padding should be at most half of kernel_size.*padding=\(2, 2\), kernel_size=\(3, 3\)"),
    (lambda: fastconv.max_pool2d(X, (3, 2), padding=(1, 2)), ValueError, "at most half"),
    # PyTorch's rule is on kernel_size, not the dilated extent
    (lambda: fastconv.max_pool2d(X, 3, padding=2, dilation=3), ValueError, "at most half"),
    (lambda: fastconv.max_pool2d(X, 3, padding="same"), TypeError, "padding"),
    (lambda: fastconv.max_pool2d(X, 9), ValueError,
     (r"Given input size: \(2x8x8\)\. Calculated output size: \(2x0x0\)\. "
      r"Output size is too small")),
    (lambda: fastconv.max_pool2d(X, 3, dilation=4), ValueError, "Output size is too small"),
    (lambda: fastconv.max_pool2d(X, (1, 9)), ValueError, r"output size: \(2x8x0\)"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 0, 8, 8)), 2), ValueError, "non-empty"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 2, 0, 8)), 2), ValueError, "non-empty"),
    (lambda: fastconv.max_pool2d(np.zeros((0, 8, 8)), 2), ValueError, "non-empty"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 8, 8, 0)), 2, layout="NHWC"), ValueError,
     "non-empty"),
    (lambda: fastconv.max_pool2d(X.astype(np.complex64), 2), TypeError, "complex64"),
    (lambda: fastconv.max_pool2d(X.astype(object), 2), TypeError, "x"),
    (lambda: fastconv.max_pool2d(np.zeros((1, 1, 4, 4), "U1"), 2), TypeError, "x"),
    (lambda: fastconv.max_pool2d("abc", 2), TypeError, "x"),
    (lambda: fastconv.max_pool2d(None, 2), TypeError, "x"),
    (lambda: fastconv.max_pool2d([[[1, 2], [3]]], 2), TypeError, "x"),
    (lambda: fastconv.max_pool2d(X, 2, num_threads=0), ValueError, "num_threads"),
    (lambda: fastconv.max_pool2d(X, 2, num_threads=-2), ValueError, "num_threads"),
    (lambda: fastconv.max_pool2d(X, 2, num_threads=1.5), TypeError, "num_threads"),
    (lambda: fastconv.max_pool2d(X, 2, ceil_mode="yes"), TypeError, "ceil_mode"),
    (lambda: fastconv.max_pool2d(X, 2, ceil_mode=None), TypeError, "ceil_mode"),
    (lambda: fastconv.max_pool2d(X, 2, return_indices=1), TypeError, "return_indices"),
    (lambda: fastconv.max_pool2d(X, 2**62), ValueError, "kernel_size is too large"),
    (lambda: fastconv.max_pool2d(X, 2, padding=2**62), ValueError, "padding is too large"),
    (lambda: fastconv.max_pool2d(X, 2, stride=2**70), ValueError, "stride is too large"),
    (lambda: fastconv.max_pool2d(X, 2**40, padding=2**39), ValueError, "too large"),
    (lambda: fastconv.max_pool2d(X, 2, 2, 0, 2**33), ValueError, "dilation is too large"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_raised_before_any_work():
    # A bad out is refused even though everything else is valid; x stays untouched.
    x = np.ones((1, 2, 8, 8), np.float32)
    out = np.zeros((1, 2, 4, 5), np.float32)
    with pytest.raises(ValueError):
        fastconv.max_pool2d(x, 2, out=out)
    assert not out.any()


def test_absurd_but_valid_geometry():
    # Huge (but valid) kernel with matching padding on a tiny image: every window covers
    # the whole image.
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    values, indices = check(x, 2001, 1, 1000, return_indices=True)
    assert values.shape == (1, 1, 2, 3) and np.all(values == 5) and np.all(indices == 5)
    values = check(x, (2, 2001), (1, 2**31 - 1), (1, 1000))
    assert values.shape == (1, 1, 3, 1)


def test_stride_defaults_to_kernel_size():
    rng = np.random.default_rng(4)
    x = random_input(rng, (1, 1, 9, 9), np.float32)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 3), fastconv.max_pool2d(x, 3, 3))
    np.testing.assert_array_equal(fastconv.max_pool2d(x, (3, 2), stride=()),
                                  fastconv.max_pool2d(x, (3, 2), (3, 2)))
    np.testing.assert_array_equal(fastconv.max_pool2d(x, [2, 3], np.int64(1), [1, 1]),
                                  max_pool2d_reference(x, (2, 3), 1, 1))


def test_docstring_example():
    x = np.arange(16.0, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), [[[[5, 7], [13, 15]]]])
    _, indices = fastconv.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0, 0], [5, 6, 7, 7])


# --------------------------------------------------------------------------------------------
# Randomized differential test

@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    ceil_mode = draw(st.booleans())
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - 2 * ph), 14))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - 2 * pw), 40))
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 18))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16]))
    unbatched = draw(st.booleans())
    return {"shape": (n, c, h, w), "kernel": (kh, kw), "stride": (sh, sw),
            "padding": (ph, pw), "dilation": (dh, dw), "ceil_mode": ceil_mode,
            "layout": layout, "dtype": dtype, "unbatched": unbatched,
            "seed": draw(st.integers(0, 2**32 - 1)),
            "special": draw(st.sampled_from(["none", "nan", "inf", "ties"]))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases())
def test_hypothesis_against_reference(case):
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    if case["unbatched"]:
        shape = (1,) + shape[1:]
    x = rng.standard_normal(shape) * 4
    if case["special"] == "nan":
        x[rng.random(shape) < 0.1] = np.nan
    elif case["special"] == "inf":
        x[rng.random(shape) < 0.4] = -np.inf
    elif case["special"] == "ties" or case["dtype"] == np.int16:
        x = np.round(x)
    if case["dtype"] == np.int16:
        x = np.nan_to_num(x, nan=0.0, neginf=-30000)
    x = to_layout(x.astype(case["dtype"]), case["layout"])
    if case["unbatched"]:
        x = x[0]
    for return_indices in (False, True):
        check(x, case["kernel"], case["stride"], case["padding"], case["dilation"],
              ceil_mode=case["ceil_mode"], return_indices=return_indices,
              layout=case["layout"])


# --------------------------------------------------------------------------------------------
# PyTorch (optional)

def test_against_torch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(2024)
    checked = 0
    for _ in range(300):
        kh, kw = rng.integers(1, 6, 2)
        sh, sw = rng.integers(1, 4, 2)
        dh, dw = rng.integers(1, 3, 2)
        ph, pw = rng.integers(0, kh // 2 + 1), rng.integers(0, kw // 2 + 1)
        ceil_mode = bool(rng.integers(0, 2))
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 20)), int(rng.integers(1, 20)),
                 int(rng.integers(1, 30)))
        dtype = [np.float32, np.float64][rng.integers(0, 2)]
        x = random_input(rng, shape, dtype, nan=0.02 * rng.integers(0, 2),
                         neg_inf=0.2 * rng.integers(0, 2), ties=bool(rng.integers(0, 2)))
        args = {"kernel_size": (int(kh), int(kw)), "stride": (int(sh), int(sw)),
                "padding": (int(ph), int(pw)), "dilation": (int(dh), int(dw)),
                "ceil_mode": ceil_mode}
        try:
            t_values, t_indices = functional.max_pool2d(torch.from_numpy(x),
                                                        return_indices=True, **args)
        except RuntimeError:
            with pytest.raises(ValueError):
                fastconv.max_pool2d(x, **args)
            continue
        for layout in ("NCHW", "NHWC"):
            xl = to_layout(x, layout)
            values, indices = fastconv.max_pool2d(xl, layout=layout, return_indices=True,
                                                  **args)
            values_only = fastconv.max_pool2d(xl, layout=layout, **args)
            if layout == "NHWC":
                values, indices, values_only = (a.transpose(0, 3, 1, 2)
                                                for a in (values, indices, values_only))
            np.testing.assert_array_equal(values, t_values.numpy())
            np.testing.assert_array_equal(values_only, t_values.numpy())
            np.testing.assert_array_equal(indices, t_indices.numpy())
            checked += 1
    assert checked > 100
