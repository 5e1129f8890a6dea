"""fastconv.dask: chunked results must equal the in-memory fastconv results bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

da = pytest.importorskip("dask.array", reason="fastconv.dask needs dask[array]")
dask = pytest.importorskip("dask")

import fastconv
import fastconv.dask as fcd
from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential

MODES = ("zeros", "reflect", "replicate", "circular")


def random_chunks(n, rng):
    """A random partition of ``n``: sometimes one chunk, sometimes chunks of 1 or 2."""
    style = rng.integers(4)
    if style == 0 or n <= 1:
        return (n,)
    if style == 1:
        size = int(rng.integers(1, 3))
    else:
        size = int(rng.integers(1, n))
    chunks, left = [], n
    while left:
        step = min(left, size if style < 3 else int(rng.integers(1, size + 1)))
        chunks.append(step)
        left -= step
    return tuple(chunks)


def chunked(x, layout, rng):
    """``x`` as a dask array with random chunks along N, H and W (channels whole)."""
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    chunks = [(n,) for n in x.shape]
    for axis in axes:
        chunks[axis] = random_chunks(x.shape[axis], rng)
    return da.from_array(x, chunks=tuple(chunks))


def compute_checked(y):
    """Compute ``y`` with the threaded scheduler, checking each block against ``y.chunks``."""
    blocks = y.to_delayed()
    values = dask.compute(*blocks.ravel(), scheduler="threads")
    grid = np.empty(blocks.shape, dtype=object)
    for index, block in zip(np.ndindex(blocks.shape), values):
        expected = tuple(chunks[i] for chunks, i in zip(y.chunks, index))
        assert block.shape == expected, (index, block.shape, expected)
        assert block.dtype == y.dtype
        grid[index] = block
    return np.block(grid.tolist())


def to_layout(x, layout):
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------------------------
# conv2d


def random_conv_case(seed):
    rng = np.random.default_rng(seed)
    layout = ("NCHW", "NHWC")[seed % 2]
    mode = MODES[(seed // 2) % 4]
    dtype = (np.float32, np.float64)[(seed // 8) % 2]
    groups = int(rng.choice([1, 1, 2]))
    channels = groups * int(rng.integers(1, 4))
    filters = groups * int(rng.integers(1, 4))
    kh, kw = (int(k) for k in rng.integers(1, 6, size=2))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
    dilation = tuple(int(d) for d in rng.integers(1, 4, size=2))
    height, width = (int(n) for n in rng.integers(8, 30, size=2))
    ext_h, ext_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    form = rng.integers(4)
    if form == 0:
        padding = "same"
    elif form == 1:
        padding = "valid"
    elif form == 2:
        padding = int(rng.integers(0, 5))
    else:
        padding = tuple(int(p) for p in rng.integers(0, 6, size=4))
    x = rng.standard_normal((int(rng.integers(1, 4)), channels, height, width)).astype(dtype)
    weight = rng.standard_normal((filters, channels // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(filters).astype(dtype) if rng.integers(2) else None
    activation = (None, "relu")[int(rng.integers(2))]
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=mode, activation=activation)
    return rng, to_layout(x, layout), weight, bias, layout, kwargs, (ext_h, ext_w)


@pytest.mark.parametrize("seed", range(96))
def test_conv2d_matches_in_memory(seed):
    rng, x, weight, bias, layout, kwargs, _ = random_conv_case(seed)
    try:
        expected = fastconv.conv2d(x, weight, bias, layout=layout, **kwargs)
    except ValueError:
        # e.g. reflect padding >= input size: the dask version must refuse it the same way
        with pytest.raises(ValueError):
            fcd.conv2d(chunked(x, layout, rng), weight, bias, layout=layout, **kwargs)
        return
    y = fcd.conv2d(chunked(x, layout, rng), weight, bias, layout=layout, **kwargs)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert_array_equal(compute_checked(y), expected, strict=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_border_with_tiny_chunks(mode, layout):
    """Padding that needs pixels from several chunks away (and the far end for circular)."""
    rng = np.random.default_rng(1)
    x = to_layout(rng.standard_normal((2, 2, 13, 11)).astype(np.float32), layout)
    weight = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)
    padding = (4, 3, 2, 3)
    expected = fastconv.conv2d(x, weight, padding=padding, padding_mode=mode, layout=layout)
    for chunk in (1, 2, 3):
        spatial = (chunk, chunk)
        chunks = (1, 2) + spatial if layout == "NCHW" else (1,) + spatial + (2,)
        y = fcd.conv2d(da.from_array(x, chunks=chunks), weight, padding=padding,
                       padding_mode=mode, layout=layout)
        assert_array_equal(compute_checked(y), expected, strict=True)


def test_conv2d_padding_larger_than_kernel_gives_pure_padding_chunks():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 1, 9, 9))
    weight = rng.standard_normal((2, 1, 2, 2))
    bias = np.array([0.5, -0.5])
    expected = fastconv.conv2d(x, weight, bias, padding=6, activation="relu")
    y = fcd.conv2d(da.from_array(x, chunks=(1, 1, 2, 4)), weight, bias, padding=6,
                   activation="relu")
    assert_array_equal(compute_checked(y), expected, strict=True)


def test_conv2d_splits_channels_and_unbatched_input():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((4, 15, 17)).astype(np.float32)  # (C, H, W)
    weight = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(image, weight, padding="same", padding_mode="reflect")
    y = fcd.conv2d(da.from_array(image, chunks=(1, 4, 5)), weight, padding="same",
                   padding_mode="reflect")
    assert y.ndim == 3 and y.chunks[0] == (5,)
    assert_array_equal(compute_checked(y), expected, strict=True)


def test_conv2d_integer_input_and_chunks_follow_input():
    x = np.arange(2 * 1 * 12 * 12).reshape(2, 1, 12, 12) % 7
    weight = np.ones((1, 1, 3, 3), np.float32)
    y = fcd.conv2d(da.from_array(x, chunks=(1, 1, 4, 6)), weight, padding=1)
    assert y.dtype == np.float64
    assert y.chunks == ((1, 1), (1,), (4, 4, 4), (6, 6))
    assert_array_equal(compute_checked(y), fastconv.conv2d(x, weight, padding=1), strict=True)
    pooled = fcd.max_pool2d(y, 2)
    assert pooled.chunks == ((1, 1), (1,), (2, 2, 2), (3, 3))


def test_conv2d_empty_batch():
    weight = np.ones((2, 3, 3, 3), np.float32)
    x = da.zeros((0, 3, 8, 8), chunks=(1, 3, 4, 4), dtype=np.float32)
    y = fcd.conv2d(x, weight)
    assert y.shape == (0, 2, 6, 6)
    assert y.compute().shape == (0, 2, 6, 6)


# --------------------------------------------------------------------------------------------
# max_pool2d and relu


@pytest.mark.parametrize("seed", range(64))
def test_max_pool2d_matches_in_memory(seed):
    rng = np.random.default_rng(1000 + seed)
    layout = ("NCHW", "NHWC")[seed % 2]
    dtype = (np.float32, np.float64, np.int16)[(seed // 2) % 3]
    kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
    stride = None if seed % 5 == 0 else tuple(int(s) for s in rng.integers(1, 4, size=2))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
    ceil_mode = bool(rng.integers(2))
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                             int(rng.integers(6, 24)), int(rng.integers(6, 24))))
    if dtype == np.int16:
        x = (x * 10).astype(dtype)
    else:
        x = x.astype(dtype)
        x.flat[rng.integers(x.size, size=3)] = np.nan  # NaN must survive the halos
        x.flat[rng.integers(x.size, size=3)] = -np.inf
    x = to_layout(x, layout)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                  layout=layout)
    try:
        expected = fastconv.max_pool2d(x, kernel, **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            fcd.max_pool2d(chunked(x, layout, rng), kernel, **kwargs)
        return
    y = fcd.max_pool2d(chunked(x, layout, rng), kernel, **kwargs)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert_array_equal(compute_checked(y), expected, strict=True)


def test_max_pool2d_ceil_mode_window_past_the_end():
    x = np.arange(7 * 7, dtype=np.float32).reshape(1, 1, 7, 7) * -1.0
    expected = fastconv.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    y = fcd.max_pool2d(da.from_array(x, chunks=(1, 1, 3, 2)), 3, stride=2, padding=1,
                       ceil_mode=True)
    assert_array_equal(compute_checked(y), expected, strict=True)


def test_relu_matches_in_memory():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 10, 9)).astype(np.float16)
    x[0, 0, 0, :3] = [np.nan, -0.0, -np.inf]
    y = fcd.relu(da.from_array(x, chunks=(2, 3, 4, 5)))
    assert y.dtype == np.float32 and y.chunks == ((2, 1), (3, 1), (4, 4, 2), (5, 4))
    assert_array_equal(compute_checked(y), fastconv.relu(x), strict=True)
    assert np.signbit(y.compute()[0, 0, 0, 1])  # -0.0 stays -0.0, as in fastconv.relu


# --------------------------------------------------------------------------------------------
# layer stacks


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_apply_sequential_matches_in_memory(layout):
    rng = np.random.default_rng(6)
    net = Sequential([
        Conv2D.from_shape(3, 6, 3, padding=1, padding_mode="reflect", seed=0),
        ReLU(),
        MaxPool2D(2),
        Sequential({"conv": Conv2D.from_shape(6, 4, (3, 5), stride=2, padding="same",
                                              padding_mode="circular", seed=1),
                    "relu": ReLU()}),
        MaxPool2D(3, stride=2, padding=1, ceil_mode=True),
        Conv2D.from_shape(4, 2, 1, seed=2),
    ])
    x = to_layout(rng.standard_normal((2, 3, 41, 38)).astype(np.float32), layout)
    expected = net(x, layout=layout)
    for _ in range(3):
        y = fcd.apply(net, chunked(x, layout, rng), layout=layout)
        assert_array_equal(compute_checked(y), expected, strict=True)


@pytest.mark.parametrize("seed", range(48))
def test_apply_fused_conv_pool_matches_in_memory(seed, monkeypatch):
    """Conv2D (+ReLU) + MaxPool2D run as one strip-mined task per chunk: same bits."""
    rng = np.random.default_rng(2000 + seed)
    layout = ("NCHW", "NHWC")[seed % 2]
    mode = MODES[(seed // 2) % 4]
    if seed % 3:  # tiny strips: many strips per chunk, each with its own halo
        monkeypatch.setattr(fcd, "_STRIP_BYTES", int(rng.integers(1, 2000)))
    channels, filters = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    conv = Conv2D.from_shape(
        channels, filters, tuple(int(k) for k in rng.integers(1, 5, size=2)),
        stride=tuple(int(s) for s in rng.integers(1, 3, size=2)),
        padding=tuple(int(p) for p in rng.integers(0, 3, size=4)) if seed % 4 else "same",
        dilation=tuple(int(d) for d in rng.integers(1, 3, size=2)), padding_mode=mode,
        activation=(None, "relu")[seed % 5 == 0], seed=seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
    pool = MaxPool2D(kernel, stride=tuple(int(s) for s in rng.integers(1, 4, size=2)),
                     padding=tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel),
                     dilation=tuple(int(d) for d in rng.integers(1, 3, size=2)),
                     ceil_mode=bool(rng.integers(2)))
    net = Sequential([conv, ReLU(), pool] if seed % 2 else [conv, pool])
    x = rng.standard_normal((int(rng.integers(1, 3)), channels, int(rng.integers(10, 30)),
                             int(rng.integers(10, 30)))).astype(np.float32)
    x = to_layout(x, layout)
    try:
        expected = net(x, layout=layout)
    except ValueError:
        with pytest.raises(ValueError):
            fcd.apply(net, chunked(x, layout, rng), layout=layout)
        return
    y = fcd.apply(net, chunked(x, layout, rng), layout=layout)
    assert any(key[0].startswith("fastconv-conv2d-max_pool2d") for key in y.dask
               if isinstance(key, tuple))
    assert_array_equal(compute_checked(y), expected, strict=True)


def test_apply_fuse_false_gives_same_values_and_chunks():
    rng = np.random.default_rng(9)
    net = Sequential([Conv2D.from_shape(2, 3, 3, padding=1, seed=0), ReLU(), MaxPool2D(2)])
    xd = da.from_array(rng.standard_normal((1, 2, 23, 19)), chunks=(1, 2, 7, 6))
    fused, separate = fcd.apply(net, xd), fcd.apply(net, xd, fuse=False)
    assert fused.chunks == separate.chunks
    assert not any(str(key[0]).startswith("fastconv-conv2d-max_pool2d")
                   for key in separate.dask if isinstance(key, tuple))
    assert_array_equal(compute_checked(fused), compute_checked(separate), strict=True)
    assert_array_equal(compute_checked(fused), net(xd.compute()), strict=True)


def test_apply_single_layers_unbatched_and_errors():
    x = da.ones((1, 2, 8, 8), chunks=(1, 2, 3, 3), dtype=np.float32)
    pool = MaxPool2D(2)
    assert_array_equal(fcd.apply(pool, x).compute(), pool(x.compute()), strict=True)
    image = np.random.default_rng(10).standard_normal((9, 11, 2))  # (H, W, C)
    net = Sequential([Conv2D.from_shape(2, 3, 3, padding=1, padding_mode="replicate", seed=5),
                      MaxPool2D(2, ceil_mode=True), ReLU()])
    y = fcd.apply(net, da.from_array(image, chunks=(4, 3, 1)), layout="NHWC")
    assert y.shape == (5, 6, 3)
    assert_array_equal(compute_checked(y), net(image, layout="NHWC"), strict=True)

    class Custom(ReLU):
        pass

    with pytest.raises(TypeError, match="Custom"):
        fcd.apply(Sequential([ReLU(), Custom()]), x)
    with pytest.raises(TypeError, match="dask.array"):
        fcd.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match="dask.array"):
        fcd.apply(pool, np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="layout"):
        fcd.max_pool2d(x, 2, layout="CHWN")
    with pytest.raises(ValueError, match="num_threads"):
        fcd.relu(x, num_threads=0)
    with pytest.raises(ValueError, match="reflect"):
        fcd.conv2d(x, np.ones((1, 2, 3, 3)), padding=8, padding_mode="reflect")
    with pytest.raises(ValueError, match="4-D"):
        fcd.conv2d(da.ones((4, 4), chunks=2), np.ones((1, 1, 2, 2)))


# --------------------------------------------------------------------------------------------
# threads


def test_threads_per_task_rule():
    total = fastconv._validation.resolve_num_threads(None)
    assert fcd.threads_per_task() == total  # main thread: synchronous scheduler
    probe = da.from_array(np.zeros(4), chunks=1).map_blocks(
        lambda block: np.full(block.shape, fcd.threads_per_task()), dtype=int)
    with dask.config.set(num_workers=2):
        seen = probe.compute(scheduler="threads")
    assert set(seen) == {max(1, total // 2)}
    with dask.config.set(num_workers=1):
        seen = probe.compute(scheduler="threads")
    assert set(seen) == {total}


def test_explicit_num_threads_gives_same_bits():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 30, 30)).astype(np.float32)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(x, weight, padding=1)
    xd = da.from_array(x, chunks=(1, 8, 16, 16))
    for threads in (1, 2, 3):
        y = fcd.conv2d(xd, weight, padding=1, num_threads=threads)
        assert_array_equal(y.compute(scheduler="threads"), expected, strict=True)


def test_import_fastconv_does_not_import_dask(tmp_path):
    code = "import sys, fastconv; print('dask' in sys.modules, 'fastconv.dask' in sys.modules)"
    # cwd away from the source tree (`python -c` puts the cwd first on sys.path), and the
    # fastconv under test on the path, installed or built in place.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(fastconv.__file__).resolve().parents[1])]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout.split()
    assert out == ["False", "False"]


# --------------------------------------------------------------------------------------------
# dask.distributed


def test_distributed_local_cluster():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=50)
    except Exception as exc:  # noqa: BLE001 - no sockets, no fork, ...: whatever stops it
        pytest.skip(f"cannot start a dask.distributed LocalCluster: {exc!r}")
    try:
        with distributed.Client(cluster) as client:
            rng = np.random.default_rng(8)
            x = rng.standard_normal((2, 3, 40, 36)).astype(np.float32)
            net = Sequential([Conv2D.from_shape(3, 8, 3, padding=1, padding_mode="reflect",
                                                seed=3),
                              ReLU(), MaxPool2D(3, stride=2, ceil_mode=True),
                              Conv2D.from_shape(8, 4, 3, stride=2, padding=2,
                                                padding_mode="circular", seed=4)])
            y = fcd.apply(net, da.from_array(x, chunks=(1, 3, 13, 10)))
            assert_array_equal(client.compute(y).result(), net(x), strict=True)
            threads = client.run(fcd.threads_per_task)  # the Nanny sets OMP_NUM_THREADS=1
            assert set(threads.values()) == {1}
    finally:
        cluster.close()
