"""The per-thread scratch buffers (fastconv._workspace) and kernels that reuse them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastconv
from fastconv import _workspace
from fastconv.reference import conv2d_reference


BIG = _workspace.SMALL_BYTES  # elements: above the small-request size in any dtype


def test_views_are_aligned_disjoint_and_sized():
    lease, views = _workspace.acquire(np.dtype(np.float32), 5, 0, BIG, 1)
    buffer = lease[0]
    try:
        assert [v.size for v in views] == [5, 0, BIG, 1]
        used = [v for v in views if v.size]
        assert all(v.dtype == np.float32 and v.ctypes.data % _workspace.ALIGN == 0 for v in used)
        for a, b in zip(used, used[1:]):
            assert a.ctypes.data + a.nbytes <= b.ctypes.data
        assert all(np.shares_memory(v, buffer) for v in views if v.size)
    finally:
        _workspace.release(lease)


def test_small_requests_get_plain_arrays():
    lease, (a, b) = _workspace.acquire(np.dtype(np.float64), 10, 20)
    assert lease is None and a.size == 10 and b.size == 20 and not np.shares_memory(a, b)
    _workspace.release(lease)  # a no-op


def test_buffer_is_reused_and_never_lent_twice():
    first, _ = _workspace.acquire(np.dtype(np.float64), BIG)
    # Still lent out: a second user (re-entry) must get other memory.
    second, _ = _workspace.acquire(np.dtype(np.float64), BIG)
    assert not np.shares_memory(first[0], second[0])
    _workspace.release(second)
    _workspace.release(first)
    again, _ = _workspace.acquire(np.dtype(np.float64), BIG // 2)
    _workspace.release(again)
    assert again is first or again is second  # kept, not reallocated


def test_threads_have_their_own_buffers():
    buffers = []

    def take():
        lease, _ = _workspace.acquire(np.dtype(np.float32), BIG)
        buffers.append(lease[0])
        _workspace.release(lease)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in buffers}) == 3


def test_oversized_buffers_are_not_kept(monkeypatch):
    monkeypatch.setattr(_workspace, "MAX_KEPT_BYTES", 4 * BIG)
    monkeypatch.setattr(_workspace, "_local", threading.local())
    lease, _ = _workspace.acquire(np.dtype(np.float32), 2 * BIG)
    _workspace.release(lease)
    assert getattr(_workspace._local, "lease", None) is None


@pytest.mark.parametrize("cfg", [
    dict(c=5, f=19, kernel=(3, 3), padding=1),
    dict(c=4, f=12, kernel=(5, 5), padding=2, stride=2),
    dict(c=6, f=6, kernel=(3, 3), padding=1, groups=6),            # depthwise
    dict(c=6, f=12, kernel=(7, 7), padding=3, stride=2, groups=6),
], ids=["gemm", "gemm-s2", "depthwise", "depthwise-s2"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_stale_workspace_contents_never_reach_the_output(rng, cfg, layout, monkeypatch):
    """Kernels read uninitialised scratch only in junk lanes; fill it with NaN to prove it."""
    monkeypatch.setattr(_workspace, "SMALL_BYTES", 0)  # every request from the NaN buffer
    cfg = dict(cfg)
    c, f, (kh, kw) = cfg.pop("c"), cfg.pop("f"), cfg.pop("kernel")
    groups = cfg.get("groups", 1)
    x = rng.integers(-3, 4, size=(2, c, 23, 29)).astype(np.float32)
    w = rng.integers(-3, 4, size=(f, c // groups, kh, kw)).astype(np.float32)
    expected = conv2d_reference(x, w, **cfg).astype(np.float32)
    if layout == "NHWC":
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    lease, (scratch,) = _workspace.acquire(np.dtype(np.float32), 1 << 20)
    scratch[:] = np.nan
    _workspace.release(lease)
    assert_array_equal(fastconv.conv2d(x, w, layout=layout, num_threads=2, **cfg), expected)
