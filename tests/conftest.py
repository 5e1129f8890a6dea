"""Shared test helpers, exposed as fixtures so every test file can use them.

Generic on purpose (conv, pooling and activation tests all use them):

- ``rng``: a seeded ``numpy.random.Generator``.
- ``nan_twin(a, axes=None, reverse=False)``: a non-contiguous view with ``a``'s values whose
  skipped neighbours are NaN (or a huge sentinel for non-float dtypes), so any read outside the
  view poisons the result (the PyTorch trick). ``reverse=True`` gives negative strides too.
- ``input_variants(a)``: ``{name: array-like}`` with the same values as ``a`` but unusual
  memory: NaN twins, Fortran order, negative strides, read-only, byte-swapped, nested lists.
- ``assert_within_tolerance(actual, expected, bound, c=16)``: elementwise
  ``|actual - expected| <= c * eps(actual.dtype) * bound`` (bound computed in float64, e.g.
  ``conv(|x|, |w|) + |bias|``), with NaN required exactly where ``expected`` is NaN.
- ``small_ints(shape, dtype, low=-3, high=3)``: integer-valued floats; sums of products of
  these stay exactly representable, so a correct kernel must match its reference exactly.
"""

from __future__ import annotations

import numpy as np
import pytest


def _poison_value(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind in "iu":
        return np.iinfo(dtype).max
    if dtype.kind == "b":
        return True
    raise TypeError(f"no poison value for dtype {dtype}")


def make_nan_twin(a, axes=None, reverse=False):
    """A view equal to ``a`` inside a buffer twice as large along ``axes`` (default: all).

    The elements between the view's elements are NaN (float) or the dtype's maximum (ints),
    so a kernel that reads outside the view poisons its output. With ``reverse=True`` the
    view walks the buffer backwards along ``axes`` (negative strides).

    Returns ``(view, base)``: keep ``base`` to check that nothing was written into it.
    """
    a = np.asarray(a)
    axes = tuple(range(a.ndim)) if axes is None else tuple(ax % a.ndim for ax in axes)
    shape = [2 * n if ax in axes else n for ax, n in enumerate(a.shape)]
    base = np.full(shape, _poison_value(a.dtype), dtype=a.dtype)
    index = []
    for ax, n in enumerate(a.shape):
        if ax not in axes:
            index.append(slice(None))
        elif reverse:
            index.append(slice(2 * n - 1, None, -2) if n else slice(0, 0))
        else:
            index.append(slice(1, None, 2))
    index = tuple(index)
    base[index] = a
    view = base[index]
    assert np.array_equal(view, a, equal_nan=True)
    return view, base


def make_input_variants(a):
    """``{name: array-like}``: the values of ``a`` in unusual memory layouts."""
    a = np.asarray(a)
    variants = {}
    variants["nan_twin"] = make_nan_twin(a)[0]
    variants["nan_twin_last_axis"] = make_nan_twin(a, axes=(-1,))[0]
    variants["nan_twin_reversed"] = make_nan_twin(a, reverse=True)[0]
    variants["fortran"] = np.asfortranarray(a)
    if a.ndim >= 2:  # logical axes in their order, memory in another (e.g. NCHW over NHWC)
        rolled = np.ascontiguousarray(np.moveaxis(a, 0, -1))
        variants["permuted_axes"] = np.moveaxis(rolled, -1, 0)
    flipped = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
    variants["negative_strides"] = flipped[(slice(None, None, -1),) * a.ndim]
    readonly = a.copy()
    readonly.flags.writeable = False
    variants["readonly"] = readonly
    variants["byteswapped"] = a.astype(a.dtype.newbyteorder())
    variants["nested_list"] = a.tolist()
    for name, value in variants.items():
        assert np.array_equal(np.asarray(value, dtype=a.dtype), a, equal_nan=True), name
    return variants


def check_within_tolerance(actual, expected, bound, c=16.0, eps=None):
    """Assert ``|actual - expected| <= c * eps * bound`` elementwise (float64 arithmetic).

    ``eps`` defaults to the machine epsilon of ``actual``'s dtype. NaN must appear exactly
    where ``expected`` has NaN. Shapes must be equal (no broadcasting).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    if eps is None:
        eps = float(np.finfo(actual.dtype).eps)
    a64 = actual.astype(np.float64)
    e64 = expected.astype(np.float64)
    tol = c * eps * np.broadcast_to(np.asarray(bound, dtype=np.float64), e64.shape)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    with np.errstate(invalid="ignore"):
        err = np.abs(a64 - e64)
        bad = (nan_a != nan_e) | (~nan_e & ~(err <= tol))
    if bad.any():
        where = np.argwhere(bad)
        first = tuple(int(i) for i in where[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements out of tolerance (c={c}, eps={eps:.3g}); "
            f"first at {first}: actual {a64[first]!r}, expected {e64[first]!r}, "
            f"tolerance {tol[first]!r}; max error {np.nanmax(np.where(nan_e, 0, err))!r}")


def make_small_ints(rng, shape, dtype=np.float64, low=-3, high=3):
    """Integer values in [low, high] stored as ``dtype``."""
    return rng.integers(low, high + 1, size=shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture
def nan_twin():
    return make_nan_twin


@pytest.fixture
def input_variants():
    return make_input_variants


@pytest.fixture
def assert_within_tolerance():
    return check_within_tolerance


@pytest.fixture
def small_ints(rng):
    def _small_ints(shape, dtype=np.float64, low=-3, high=3):
        return make_small_ints(rng, shape, dtype, low, high)

    return _small_ints
