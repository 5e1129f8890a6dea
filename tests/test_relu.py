"""fastconv.relu against the plain NumPy reference (and PyTorch when installed)."""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastconv
from fastconv import _cpu_features
from fastconv import activation as activation_module
from fastconv.reference import relu_reference

# Every instruction-set level this CPU has, or only the one FASTCONV_ISA forces (CI runs the
# suite once per level).
ISA_LEVELS = [level for level in _cpu_features.supported_isa_levels()
              if importlib.util.find_spec(f"fastconv._activation_{level}") is not None
              and os.environ.get("FASTCONV_ISA", level).strip().lower() == level]

# Sizes around the vector lengths, the 4-vector unroll, the 16k-element chunk and the
# threshold for threads (128k elements).
SIZES = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000,
         16383, 16384, 16385, 3 * 16384 + 5, 131071, 131072, 200003]


@pytest.fixture(params=ISA_LEVELS)
def isa(request, monkeypatch):
    """Run the test once per instruction-set level this CPU has (not just the selected one)."""
    module = importlib.import_module(f"fastconv._activation_{request.param}")
    monkeypatch.setattr(activation_module, "_kernels", module)
    return request.param


def special_values(rng, n, dtype):
    x = rng.standard_normal(n) * 10
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300,
                         np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).tiny,
                         -np.finfo(dtype).tiny])
    where = rng.random(n) < 0.2
    x[where] = rng.choice(specials, where.sum())
    with np.errstate(over="ignore", under="ignore"):
        return x.astype(dtype)


def assert_bits_equal(actual, expected):
    """Same dtype, shape and bytes (so -0.0 vs 0.0 and NaN positions count)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    assert np.array_equal(np.signbit(actual), np.signbit(expected))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sizes_against_reference(isa, n, dtype):
    rng = np.random.default_rng(n)
    x = special_values(rng, n, dtype)
    assert_bits_equal(fastconv.relu(x), relu_reference(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 1.0, -np.finfo(dtype).tiny],
                 dtype=dtype)
    y = fastconv.relu(x)
    assert np.isnan(y[0])
    np.testing.assert_array_equal(y[1:], [0.0, np.inf, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert np.signbit(y[3])  # -0.0 passes through, as in torch.relu
    assert not np.signbit(y[7])  # negatives become +0.0


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (2, 3), (2, 3, 4, 5), (1,) * 7])
def test_shapes(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = fastconv.relu(x)
    assert isinstance(y, np.ndarray) and y.shape == shape and y.dtype == np.float32
    assert_bits_equal(y, relu_reference(x))


@pytest.mark.parametrize("dtype, expected", [
    (np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64),
    (np.int8, np.float64), (np.int16, np.float64), (np.int32, np.float64),
    (np.int64, np.float64), (np.uint8, np.float64), (np.uint64, np.float64),
    (np.bool_, np.float64),
])
def test_dtype_rules(dtype, expected):
    rng = np.random.default_rng(2)
    x = (rng.integers(-50, 50, 1000) if dtype != np.bool_ else rng.integers(0, 2, 1000))
    x = x.astype(dtype)
    y = fastconv.relu(x)
    assert y.dtype == expected
    assert_bits_equal(y, relu_reference(x))
    np.testing.assert_array_equal(y, np.maximum(x.astype(np.float64), 0))


def test_float16_specials():
    x = np.array([np.nan, -np.inf, -1, 2, 65504], dtype=np.float16)
    y = fastconv.relu(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [np.nan, 0, 0, 2, 65504])


def test_scalars_and_nested_lists():
    assert fastconv.relu(-3).shape == () and fastconv.relu(-3)[()] == 0.0
    assert fastconv.relu(2.5)[()] == 2.5
    y = fastconv.relu([[-1, 2], [3, -4]])
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[0, 2], [3, 0]])
    np.testing.assert_array_equal(fastconv.relu([-1.5, np.nan]), [0.0, np.nan])


def test_unusual_memory_layouts(input_variants):
    rng = np.random.default_rng(3)
    x = special_values(rng, 4 * 5 * 6, np.float32).reshape(4, 5, 6)
    for name, variant in input_variants(x).items():
        expected = relu_reference(np.asarray(variant))
        actual = fastconv.relu(variant)
        assert actual.flags.c_contiguous, name
        assert_bits_equal(actual, expected)


def test_nan_twin_reads_nothing_outside(nan_twin):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 40, 50))
    for axes in [None, (-1,), (0,)]:
        for reverse in (False, True):
            view, base = nan_twin(x, axes=axes, reverse=reverse)
            before = base.copy()
            y = fastconv.relu(view)
            assert not np.isnan(y).any()
            assert_bits_equal(y, relu_reference(x))
            np.testing.assert_array_equal(base, before)


def test_large_non_contiguous_and_converted_inputs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((600, 700)).astype(np.float32)
    for variant in (x[:, ::2], x.T, x[::-1], x.astype(">f4"), x.astype(np.float16),
                    (x * 100).astype(np.int32)):
        assert_bits_equal(fastconv.relu(variant), relu_reference(variant))


def test_large_out_of_place_uses_streaming_stores_correctly():
    # >= 16 MiB out of place: non-temporal stores after an unaligned head
    rng = np.random.default_rng(10)
    x = rng.standard_normal(8_400_011)
    x[::1001] = np.nan
    x[5::997] = -0.0
    for start in (0, 1, 3):
        view = x[start:]
        assert_bits_equal(fastconv.relu(view), relu_reference(view))
    out = np.empty(8_400_011 + 1)[1:]
    fastconv.relu(x, out=out)
    assert_bits_equal(out, relu_reference(x))


# --------------------------------------------------------------------------------------------
# out= and in place

@pytest.mark.parametrize("n", [0, 1, 17, 1000, 300000])
def test_in_place(n):
    rng = np.random.default_rng(6)
    x = special_values(rng, n, np.float32)
    expected = relu_reference(x)
    result = fastconv.relu(x, out=x)
    assert result is x
    assert_bits_equal(x, expected)


def test_in_place_through_an_identical_view():
    x = np.array([[-1.0, 2.0], [np.nan, -0.5]])
    view = x[...]
    assert fastconv.relu(x, out=view) is view
    np.testing.assert_array_equal(x, [[0.0, 2.0], [np.nan, 0.0]])


def test_in_place_0d():
    x = np.array(-2.0)
    assert fastconv.relu(x, out=x) is x and x[()] == 0.0


def test_out_separate_buffer():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    before = x.copy()
    out = np.full((3, 4), 9.0, np.float32)
    assert fastconv.relu(x, out=out) is out
    assert_bits_equal(out, relu_reference(x))
    np.testing.assert_array_equal(x, before)


def test_out_with_conversion():
    x = np.arange(-3, 3, dtype=np.int32)
    out = np.empty(6)
    assert fastconv.relu(x, out=out) is out
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 2])
    x16 = np.array([-1, 2], np.float16)
    out32 = np.empty(2, np.float32)
    np.testing.assert_array_equal(fastconv.relu(x16, out=out32), [0, 2])


@pytest.mark.parametrize("make_x, make_out, exc, match", [
    (lambda: np.zeros(5, np.float32), lambda x: np.zeros(6, np.float32), ValueError, "shape"),
    (lambda: np.zeros(5, np.float32), lambda x: np.zeros(5, np.float64), ValueError, "dtype"),
    (lambda: np.zeros(5, np.int64), lambda x: x, ValueError, "dtype"),  # int in place
    (lambda: np.zeros((4, 6), np.float32), lambda x: np.zeros((6, 4), np.float32).T,
     ValueError, "C-contiguous"),
    (lambda: np.zeros((4, 6), np.float32)[:, ::2], lambda x: x, ValueError, "C-contiguous"),
    (lambda: np.zeros(5, np.float32), lambda x: _readonly(np.zeros(5, np.float32)),
     ValueError, "read-only"),
    (lambda: np.zeros(10, np.float32), lambda x: np.zeros(20, np.float32)[::2], ValueError,
     "C-contiguous"),
    (lambda: np.zeros(10, np.float32)[:6], lambda x: x.base[4:], ValueError, "overlaps"),
    (lambda: np.zeros(10, np.float32)[2:], lambda x: x.base[:8], ValueError, "overlaps"),
    (lambda: np.zeros(5, np.float32), lambda x: [0.0] * 5, TypeError, "ndarray"),
    (lambda: np.zeros(5, np.float32), lambda x: (np.zeros(5, np.float32),), TypeError,
     "ndarray"),
])
def test_bad_out(make_x, make_out, exc, match):
    x = make_x()
    out = make_out(x)
    with pytest.raises(exc, match=match):
        fastconv.relu(x, out=out)


def _readonly(a):
    a.flags.writeable = False
    return a


def test_bad_out_leaves_it_untouched():
    x = np.full(5, -1.0, np.float32)
    out = np.full(6, 7.0, np.float32)
    with pytest.raises(ValueError):
        fastconv.relu(x, out=out)
    assert np.all(out == 7.0)


# --------------------------------------------------------------------------------------------
# Errors

@pytest.mark.parametrize("call, exc, match", [
    (lambda: fastconv.relu(np.zeros(3, np.complex128)), TypeError, "complex128"),
    (lambda: fastconv.relu(np.zeros(3, object)), TypeError, "x"),
    (lambda: fastconv.relu(np.array(["a", "b"])), TypeError, "x"),
    (lambda: fastconv.relu(np.zeros(3, np.longdouble)), TypeError, "float"),
    (lambda: fastconv.relu("abc"), TypeError, "x"),
    (lambda: fastconv.relu(None), TypeError, "x"),
    (lambda: fastconv.relu({1: 2}), TypeError, "x"),
    (lambda: fastconv.relu([[1, 2], [3]]), TypeError, "x"),
    (lambda: fastconv.relu(np.zeros(3), num_threads=0), ValueError, "num_threads"),
    (lambda: fastconv.relu(np.zeros(3), num_threads=-1), ValueError, "num_threads"),
    (lambda: fastconv.relu(np.zeros(3), num_threads=2.0), TypeError, "num_threads"),
    (lambda: fastconv.relu(np.zeros(3), num_threads="2"), TypeError, "num_threads"),
    (lambda: fastconv.relu(np.zeros(3), num_threads=True), TypeError, "num_threads"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_keyword_only():
    with pytest.raises(TypeError):
        fastconv.relu(np.zeros(3), np.zeros(3))  # out must be passed by keyword


# --------------------------------------------------------------------------------------------
# Threads

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_invariance(dtype):
    rng = np.random.default_rng(8)
    x = special_values(rng, 1_000_003, dtype)
    results = [fastconv.relu(x, num_threads=n) for n in (1, 2, 4)]
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes()
    in_place = x.copy()
    fastconv.relu(in_place, out=in_place, num_threads=4)
    assert in_place.tobytes() == results[0].tobytes()


# --------------------------------------------------------------------------------------------
# Randomized differential test

@settings(max_examples=200, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int32,
                                         np.uint8, np.bool_]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40)),
       st.booleans(), st.sampled_from([None, 1, 2, 3]))
def test_hypothesis_against_reference(x, in_place, num_threads):
    expected = relu_reference(x)
    if in_place and x.dtype == expected.dtype:
        y = fastconv.relu(x, out=x, num_threads=num_threads)
        assert y is x
    else:
        y = fastconv.relu(x, num_threads=num_threads)
    assert_bits_equal(y, expected)


# --------------------------------------------------------------------------------------------
# PyTorch (optional)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    for n in (0, 1, 17, 1000, 300000):
        x = special_values(rng, n, dtype)
        expected = torch.relu(torch.from_numpy(x)).numpy()
        assert_bits_equal(fastconv.relu(x), expected)
