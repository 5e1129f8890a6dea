"""fastconv on dask arrays: convolution, ReLU, max pooling and layer stacks over chunked images.

Import it explicitly, ``import fastconv.dask``; it needs dask (``pip install "fastconv[dask]"``),
while ``import fastconv`` does not. Every function takes a ``dask.array.Array`` and returns a lazy
``dask.array.Array`` whose computed values equal the in-memory fastconv result bit for bit::

    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask
    >>> image = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    >>> weight = np.ones((4, 3, 3, 3), np.float32)
    >>> y = fastconv.dask.conv2d(da.from_array(image, chunks=(1, 3, 20, 24)), weight,
    ...                          padding=1, padding_mode="reflect")
    >>> y.chunks[2:]
    ((20, 20, 20, 4), (24, 24, 16))
    >>> bool((y.compute() == fastconv.conv2d(image, weight, padding=1,
    ...                                      padding_mode="reflect")).all())
    True

How an image is split
---------------------
Arrays may be chunked along the batch and the two spatial axes, in NCHW or NHWC layout; the
channel axis must be one chunk and is rechunked to one when it is not. Along a spatial axis with
input chunk boundaries ``0 = b_0 < b_1 < ... < b_k = H`` and stride ``s``, output chunk ``j``
holds the outputs ``o`` with ``b_j <= o * s < b_{j+1}`` (clipped to the output length; empty
chunks are dropped). With stride 1 the output keeps the input's chunks; pooling by 2 halves even
chunks. Each output chunk is one task that reads exactly the pixels its windows cover: the part
of its own chunk plus halo slices cut from neighbouring chunks (a halo may span several chunks,
so chunks smaller than the kernel work too). Every output chunk is thus made of whole windows
without a rechunking pass: when chunk boundaries are not multiples of the stride, the windows
that cross a boundary read the missing pixels from the halo. Only the halo slices, never whole
neighbouring chunks, move between dask.distributed workers.

Layer stacks
------------
:func:`apply` runs a :class:`fastconv.layers.Sequential` (or one layer) layer by layer, each with
its own halos and border handling. A ``Conv2D`` (+ ``ReLU``) followed by ``MaxPool2D`` becomes
one task per pooled chunk that convolves and pools a strip of rows at a time (``_STRIP_BYTES`` of
convolution output, which stays in cache), so the convolution output, often the largest array of
a network, is never materialised.

The array border
----------------
Padding is resolved on the whole array, as the in-memory function resolves it (``"same"``
included). A task at the border gathers its padding pixels itself: ``reflect`` and ``replicate``
from the chunks near the border, ``circular`` from the chunks at the other end of the axis;
zero padding is passed on to the in-memory call. Pooling's implicit -inf padding, and the windows
that ``ceil_mode`` lets run past the end, read -inf, as in the in-memory kernel.

Threads
-------
Each task calls fastconv with ``num_threads`` threads. An int is used as given. With
``num_threads=None`` (the default) a task uses :func:`threads_per_task`: ``max(1, T // W)``,
where ``T`` is the OpenMP default of the process running the task (``OMP_NUM_THREADS``, else the
number of cores) and ``W`` the number of tasks that process runs at once, so that
``W x threads <= T``:

- dask's threaded scheduler (the default for dask arrays), and its process-based one: ``W`` is
  dask's ``num_workers`` setting (or the size of the ``pool`` setting), else
  ``dask.system.CPU_COUNT``. By default this gives 1 thread per task, the cores being busy with
  one task each.
- dask.distributed: ``W`` is the worker's ``nthreads``. Worker processes started by a Nanny get
  ``OMP_NUM_THREADS=1`` (dask's ``distributed.nanny.pre-spawn-environ``), hence 1 thread per task;
  to give a 1-thread worker 4 cores, set ``OMP_NUM_THREADS=4`` there.
- The synchronous scheduler (tasks in the main thread): ``W = 1``, all ``T`` threads.

``compute(num_workers=k)`` is invisible to the tasks: with fewer workers than cores, pass
``num_threads`` (``cores // k``) or set ``dask.config.set(num_workers=k)`` instead. One task per
core with one thread each is the fastest choice measured (``examples/dask_large_image.py`` prints
the comparison): fewer tasks with more threads pay OpenMP's synchronisation on every call, and
oversubscribing (``W x threads > cores``) costs CPU time in threads that wait for each other.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from functools import partial
from itertools import pairwise

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastconv.dask needs dask[array]: pip install 'fastconv[dask]' "
                      f"(import failed: {exc})") from exc

import numpy as np

from . import _validation as v
from ._conv_plan import source_index as _source_index  # the kernels' padding-mode map
from . import activation as _activation
from . import conv as _conv
from . import layers as _layers
from . import pool as _pool

__all__ = ["apply", "conv2d", "max_pool2d", "relu", "threads_per_task"]


# --------------------------------------------------------------------------------------------
# threads


def _concurrent_tasks():
    """How many tasks the process running the caller may run at once (see the module doc)."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return max(1, int(distributed.get_worker().state.nthreads))
        except ValueError:  # not inside a worker
            pass
    if (threading.current_thread() is threading.main_thread()
            and multiprocessing.parent_process() is None):
        return 1  # synchronous scheduler, or a direct call
    workers = dask.config.get("num_workers", None)
    if workers is None:
        workers = getattr(dask.config.get("pool", None), "_max_workers", None)
    return max(1, int(workers or dask.system.CPU_COUNT))


def threads_per_task(workers=None):
    """OpenMP threads a task uses with ``num_threads=None``: ``max(1, T // W)``.

    ``T`` is the OpenMP default of this process (``OMP_NUM_THREADS``, else the cores) and ``W``
    the number of tasks this process runs at once: the dask.distributed worker's ``nthreads``,
    dask's ``num_workers`` setting (or ``dask.system.CPU_COUNT``) for a task in a thread or
    process pool, and 1 in the main thread (synchronous scheduler).

    Parameters
    ----------
    workers : int, optional
        Use this ``W`` instead of finding it out (to plan, or to report what a task would get).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> import fastconv.dask
    >>> fastconv.dask.threads_per_task() >= 1  # in the main thread: the OpenMP default
    True
    >>> fastconv.dask.threads_per_task(workers=10**6)
    1
    """
    if workers is None:
        workers = _concurrent_tasks()
    elif isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be None or an int >= 1, got {workers!r}")
    return max(1, v.resolve_num_threads(None) // int(workers))


def _task_threads(num_threads):
    return threads_per_task() if num_threads is None else num_threads


# Bytes of convolution output a fused conv + pool task computes at a time (per strip of rows):
# small enough to stay in L2 between the convolution writing it and the pooling reading it.
_STRIP_BYTES = 2**21

# --------------------------------------------------------------------------------------------
# planning: which input pixels each output chunk reads


def _starts(chunks):
    """Offsets of the chunks and the total length: ``(0, c0, c0 + c1, ..., sum)``."""
    starts = [0]
    for length in chunks:
        starts.append(starts[-1] + length)
    return starts


def _out_ranges(starts, out_size, stride):
    """Output chunks ``[o0, o1)``: output ``o`` goes with the input chunk holding ``o * stride``."""
    bounds = sorted({min(-(-b // stride), out_size) for b in starts[:-1]} | {out_size})
    return [(o0, o1) for o0, o1 in pairwise(bounds) if o1 > o0]


def _read_plan(starts, o0, o1, stride, extent, pad_before, mode):
    """What outputs ``[o0, o1)`` of a window op read along one axis.

    Parameters
    ----------
    starts : list of int
        Input chunk offsets and the input length (:func:`_starts`).
    o0, o1, stride, extent, pad_before : int
        The output range, window step, window extent ``dilation * (k - 1) + 1`` and the
        padding before the first pixel (top or left).
    mode : {"zeros", "reflect", "replicate", "circular"}
        What positions outside the input read; "zeros" stands for a fill value (zero for
        convolution, -inf for pooling), left to the caller.

    Returns
    -------
    pieces : list of (input chunk, start, stop)
        Chunk-local slices to concatenate in order.
    index : None or ndarray
        None when the concatenation is exactly the pixels read, else the positions (into the
        concatenation) to take, in order (reflect, replicate and circular borders).
    lead, trail : int
        Fill pixels before and after them.
    """
    size = starts[-1]
    positions = np.arange(o0 * stride - pad_before, (o1 - 1) * stride - pad_before + extent,
                          dtype=np.intp)
    source = _source_index(positions, size, mode)
    inside = np.flatnonzero(source >= 0)
    if inside.size == 0:  # the windows see only padding (padding larger than the kernel)
        return [(0, 0, 0)], None, positions.size, 0
    lead, trail = int(inside[0]), positions.size - 1 - int(inside[-1])
    source = source[lead:positions.size - trail]  # "zeros": -1 only at the ends
    owner = np.searchsorted(starts, source, side="right") - 1
    pieces, index, offset = [], np.empty_like(source), 0
    for chunk in np.unique(owner):
        mine = owner == chunk
        lo, hi = int(source[mine].min()), int(source[mine].max()) + 1
        pieces.append((int(chunk), lo - starts[chunk], hi - starts[chunk]))
        index[mine] = source[mine] - lo + offset
        offset += hi - lo
    if offset == index.size and np.array_equal(index, np.arange(offset)):
        index = None
    return pieces, index, lead, trail


def _axis_plan(chunks, out_size, stride, extent, pad_before, mode):
    """Output chunks along one axis and, per chunk, ``(pieces, (index, lead, trail))``."""
    starts = _starts(chunks)
    ranges = _out_ranges(starts, out_size, stride)
    blocks = []
    for o0, o1 in ranges:
        pieces, index, lead, trail = _read_plan(starts, o0, o1, stride, extent, pad_before, mode)
        blocks.append((pieces, (index, lead, trail)))
    return tuple(o1 - o0 for o0, o1 in ranges), blocks


def _fused_axis_plan(chunks, conv, pool):
    """Like :func:`_axis_plan` for a convolution followed by max pooling, in one task.

    ``conv`` is ``(out_size, stride, extent, pad_before, mode)``, ``pool`` is
    ``(out_size, stride, extent, pad_before)``. Per pooled chunk the plan gives the convolution's
    reads ``(index, lead, trail)`` followed by ``(pool_lead, pool_trail, conv_rows)``: -inf
    pixels around the ``conv_rows`` convolution outputs that the pooling windows read.
    """
    conv_out, conv_stride, conv_extent, conv_pad, mode = conv
    pool_out, pool_stride, pool_extent, pool_pad = pool
    starts = _starts(chunks)
    conv_ranges = _out_ranges(starts, conv_out, conv_stride)
    ranges = _out_ranges([o0 for o0, _ in conv_ranges] + [conv_out], pool_out, pool_stride)
    blocks = []
    for p0, p1 in ranges:
        u0 = p0 * pool_stride - pool_pad
        u1 = (p1 - 1) * pool_stride - pool_pad + pool_extent
        pool_lead, pool_trail = max(0, -u0), max(0, u1 - conv_out)
        # Pooling windows always cover some convolution output (padding <= kernel // 2).
        c0, c1 = u0 + pool_lead, u1 - pool_trail
        pieces, index, lead, trail = _read_plan(starts, c0, c1, conv_stride, conv_extent,
                                                conv_pad, mode)
        blocks.append((pieces, (index, lead, trail, pool_lead, pool_trail, c1 - c0)))
    return tuple(p1 - p0 for p0, p1 in ranges), blocks


def _assemble(pieces, h_axis, w_axis, index_h, index_w, dtype=None):
    """Concatenate the ``pieces[i][j]`` grid of arrays and take ``index_h`` / ``index_w``."""
    rows = [row[0] if len(row) == 1 else np.concatenate(row, axis=w_axis) for row in pieces]
    slab = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=h_axis)
    if index_h is not None:
        slab = np.take(slab, index_h, axis=h_axis)
    if index_w is not None:
        slab = np.take(slab, index_w, axis=w_axis)
    if dtype is not None:
        slab = v.as_kernel_input(slab, dtype)
    return slab


def _pad_inf(array, h_axis, w_axis, top, bottom, left, right):
    """``array`` with -inf rows/columns around it (pooling's implicit padding, made explicit)."""
    if not (top or bottom or left or right):
        return array
    width = [(0, 0)] * array.ndim
    width[h_axis], width[w_axis] = (top, bottom), (left, right)
    return np.pad(array, width, constant_values=-np.inf)


def _conv_block(pieces, packed, h_axis, w_axis, info_h, info_w, stride, dilation, layout,
                activation, num_threads):
    (index_h, top, bottom), (index_w, left, right) = info_h, info_w
    slab = _assemble(pieces, h_axis, w_axis, index_h, index_w)
    return _conv.conv2d(slab, packed, None, stride, (top, bottom, left, right), dilation,
                        packed.groups, padding_mode="zeros", layout=layout,
                        activation=activation, num_threads=_task_threads(num_threads))


def _pool_block(pieces, h_axis, w_axis, info_h, info_w, dtype, kernel, stride, dilation,
                layout, num_threads):
    (index_h, top, bottom), (index_w, left, right) = info_h, info_w
    slab = _assemble(pieces, h_axis, w_axis, index_h, index_w, dtype)
    slab = _pad_inf(slab, h_axis, w_axis, top, bottom, left, right)
    return _pool.max_pool2d(slab, kernel, stride, 0, dilation, layout=layout,
                            num_threads=_task_threads(num_threads))


def _clip_range(u0, u1, lead, length):
    """Rows ``[u0, u1)`` of ``lead`` fill rows + ``length`` data rows + fill rows, as
    ``(data start, data stop, fill before, fill after)``."""
    d0 = min(max(u0 - lead, 0), length)
    d1 = max(min(u1 - lead, length), d0)
    return d0, d1, max(0, min(lead, u1) - u0), max(0, u1 - max(lead + length, u0))


def _conv_pool_block(pieces, packed, h_axis, w_axis, info_h, info_w, conv, pool, dtype,
                     layout, activation, num_threads):
    """Convolution then max pooling of one chunk, in strips of rows that stay in cache.

    The chunk's convolution output never exists whole: each strip of pooled rows is computed
    from just the convolution rows its windows read, and those from just their input rows.
    """
    # The zero rows below the slab follow from its length (_clip_range), only ``top`` is needed.
    index_h, top, _, pool_top, pool_bottom, conv_rows = info_h
    index_w, left, right, pool_left, pool_right, conv_cols = info_w
    conv_stride, conv_dilation, conv_extent = conv
    kernel, pool_stride, pool_dilation, pool_extent = pool
    threads = _task_threads(num_threads)
    slab = _assemble(pieces, h_axis, w_axis, index_h, index_w)
    rows_in = slab.shape[h_axis]
    out_rows = (pool_top + conv_rows + pool_bottom - pool_extent[0]) // pool_stride[0] + 1
    row_bytes = packed.weight.shape[0] * conv_cols * dtype.itemsize * pool_stride[0]
    strip = max(1, _STRIP_BYTES // max(row_bytes, 1))
    out = None
    where = [slice(None)] * 4
    for start in range(0, out_rows, strip):
        stop = min(start + strip, out_rows)
        c0, c1, fill_top, fill_bottom = _clip_range(
            start * pool_stride[0], (stop - 1) * pool_stride[0] + pool_extent[0], pool_top,
            conv_rows)
        d0, d1, zeros_top, zeros_bottom = _clip_range(
            c0 * conv_stride[0], (c1 - 1) * conv_stride[0] + conv_extent[0], top, rows_in)
        where[h_axis] = slice(d0, d1)
        # Pooling windows always cover some convolution output (padding <= kernel // 2).
        features = _conv.conv2d(slab[tuple(where)], packed, None, conv_stride,
                                (zeros_top, zeros_bottom, left, right), conv_dilation,
                                packed.groups, padding_mode="zeros", layout=layout,
                                activation=activation, num_threads=threads)
        features = _pad_inf(features, h_axis, w_axis, fill_top, fill_bottom, pool_left,
                            pool_right)
        pooled = _pool.max_pool2d(features, kernel, pool_stride, 0, pool_dilation,
                                  layout=layout, num_threads=threads)
        if out is None:
            shape = list(pooled.shape)
            shape[h_axis] = out_rows
            out = np.empty(shape, pooled.dtype)
        where[h_axis] = slice(start, stop)
        out[tuple(where)] = pooled
    return out


def _relu_block(block, num_threads):
    return _activation.relu(block, num_threads=_task_threads(num_threads))


def _check_dask_input(x, layout, what):
    """``(x as a 4-D dask array with one channel chunk, unbatched, layout)``."""
    layout = v.check_layout(layout)
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array (use dask.array.from_array), got "
                        f"{type(x).__name__}; for NumPy arrays use fastconv.{what}")
    if x.ndim not in (3, 4):
        dims = "(C, H, W) or (N, C, H, W)" if layout == "NCHW" else "(H, W, C) or (N, H, W, C)"
        raise ValueError(f"x must be 3-D or 4-D {dims} for layout={layout!r}, got shape {x.shape}")
    if any(np.isnan(length) for lengths in x.chunks for length in lengths):
        raise ValueError("x has unknown chunk sizes; call x.compute_chunk_sizes() first")
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    c_axis = 1 if layout == "NCHW" else 3
    if len(x.chunks[c_axis]) > 1:
        x = x.rechunk({c_axis: -1})
    return x, unbatched, layout


def _cut(block, where):
    """A halo piece, copied: a view would keep the whole neighbouring chunk alive."""
    return np.array(block[where])


def _windowed(x, layout, name, plan_h, plan_w, block_task, out_channels, dtype, extra=None):
    """The dask array of a windowed op: one task per output chunk, halos as slice tasks.

    ``plan_h`` / ``plan_w`` are ``(output chunks, [(pieces, info), ...])`` per axis;
    ``block_task(grid, info_h, info_w)`` returns the task tuple computing one output chunk from
    ``grid``, a nested list of the keys of its pieces. ``extra`` holds more graph
    entries (the packed weights) that the tasks refer to.
    """
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    out_h_chunks, blocks_h = plan_h
    out_w_chunks, blocks_w = plan_w
    in_h, in_w = x.chunks[h_axis], x.chunks[w_axis]
    piece_name = f"{name}-halo"

    def in_key(batch, hc, wc):
        return (x.name, batch, 0, hc, wc) if layout == "NCHW" else (x.name, batch, hc, wc, 0)

    dsk = dict(extra or {})
    for batch in range(len(x.chunks[0])):
        for i, (pieces_h, info_h) in enumerate(blocks_h):
            for j, (pieces_w, info_w) in enumerate(blocks_w):
                grid = []
                for hc, h0, h1 in pieces_h:
                    row = []
                    for wc, w0, w1 in pieces_w:
                        key = in_key(batch, hc, wc)
                        if (h0, h1, w0, w1) != (0, in_h[hc], 0, in_w[wc]):
                            piece = (piece_name, batch, hc, wc, h0, h1, w0, w1)
                            if piece not in dsk:
                                where = [slice(None)] * 4
                                where[h_axis], where[w_axis] = slice(h0, h1), slice(w0, w1)
                                dsk[piece] = (_cut, key, tuple(where))
                            key = piece
                        row.append(key)
                    grid.append(row)
                out = (name, batch, 0, i, j) if layout == "NCHW" else (name, batch, i, j, 0)
                dsk[out] = block_task(grid, info_h, info_w)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    spatial = (out_h_chunks, out_w_chunks)
    chunks = ((x.chunks[0], (out_channels,)) + spatial if layout == "NCHW"
              else (x.chunks[0],) + spatial + ((out_channels,),))
    return da.Array(graph, name, chunks, meta=np.empty((0, 0, 0, 0), dtype))


def _empty_like_input(x):
    """A zero-batch NumPy array of ``x``'s image shape: runs the in-memory validation for free."""
    return np.empty((0,) + x.shape[1:], x.dtype)


# --------------------------------------------------------------------------------------------
# public functions


def _conv_geometry(x, packed, stride, padding, dilation, padding_mode, layout, activation,
                   num_threads):
    """Validate a convolution of ``x`` (with the in-memory function, on an empty batch).

    Returns ``meta`` (an empty result: shape and dtype), stride, dilation, extent and the
    ``(top, left)`` padding, each ``(h, w)``.
    """
    meta = _conv.conv2d(_empty_like_input(x), packed, None, stride, padding, dilation,
                        packed.groups, padding_mode=padding_mode, layout=layout,
                        activation=activation)
    if num_threads is not None:
        v.resolve_num_threads(num_threads)
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    stride = v.int_pair(stride, "stride", 1)
    dilation = v.int_pair(dilation, "dilation", 1)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(packed.weight.shape[2:], dilation))
    top, _, left, _ = _conv._resolve_padding(padding, (x.shape[h_axis], x.shape[w_axis]),
                                             extent, stride)
    packed.packed(meta.dtype)  # pack once here, not racing in the tasks
    return meta, stride, dilation, extent, (top, left)


def _pool_geometry(meta_in, kernel_size, stride, padding, dilation, ceil_mode, layout,
                   num_threads):
    """Validate max pooling of an input like ``meta_in`` (an empty batch) with the in-memory
    function. Returns ``meta`` and the kernel, stride, padding, dilation and extent pairs."""
    meta = _pool.max_pool2d(meta_in, kernel_size, stride, padding, dilation,
                            ceil_mode=ceil_mode, layout=layout)
    if num_threads is not None:
        v.resolve_num_threads(num_threads)
    kernel = v.int_pair(kernel_size, "kernel_size", 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        step = kernel
    else:
        step = v.int_pair(stride, "stride", 1)
    pad = v.int_pair(padding, "padding", 0)
    dil = v.int_pair(dilation, "dilation", 1)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dil))
    return meta, kernel, step, pad, dil, extent


def _conv2d(x, packed, stride, padding, dilation, padding_mode, layout, activation, num_threads,
            unbatched):
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    meta, stride, dilation, extent, (top, left) = _conv_geometry(
        x, packed, stride, padding, dilation, padding_mode, layout, activation, num_threads)
    plan_h = _axis_plan(x.chunks[h_axis], meta.shape[h_axis], stride[0], extent[0], top,
                        padding_mode)
    plan_w = _axis_plan(x.chunks[w_axis], meta.shape[w_axis], stride[1], extent[1], left,
                        padding_mode)
    token = tokenize(x.name, packed.weight, packed.bias, packed.groups, stride, padding,
                     dilation, padding_mode, layout, activation, num_threads)
    name = f"fastconv-conv2d-{token}"
    weights_key = f"fastconv-weights-{token}"

    def block_task(grid, info_h, info_w):
        return (_conv_block, grid, weights_key, h_axis, w_axis, info_h, info_w, stride,
                dilation, layout, activation, num_threads)

    y = _windowed(x, layout, name, plan_h, plan_w, block_task, packed.weight.shape[0],
                  meta.dtype, extra={weights_key: packed})
    return y[0] if unbatched else y


def _conv_pool(x, conv_layer, activation, pool_layer, layout, num_threads, unbatched):
    """A ``Conv2D`` (+ ReLU) then ``MaxPool2D`` as one task per pooled chunk (see
    :func:`_conv_pool_block`): the convolution's output is never materialised."""
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    packed = conv_layer._packed
    conv_meta, conv_stride, conv_dilation, conv_extent, (top, left) = _conv_geometry(
        x, packed, conv_layer.stride, conv_layer.padding, conv_layer.dilation,
        conv_layer.padding_mode, layout, activation, num_threads)
    meta, kernel, step, pad, dil, extent = _pool_geometry(
        conv_meta, pool_layer.kernel_size, pool_layer.stride, pool_layer.padding,
        pool_layer.dilation, pool_layer.ceil_mode, layout, None)
    mode = conv_layer.padding_mode
    plan_h = _fused_axis_plan(
        x.chunks[h_axis], (conv_meta.shape[h_axis], conv_stride[0], conv_extent[0], top, mode),
        (meta.shape[h_axis], step[0], extent[0], pad[0]))
    plan_w = _fused_axis_plan(
        x.chunks[w_axis], (conv_meta.shape[w_axis], conv_stride[1], conv_extent[1], left, mode),
        (meta.shape[w_axis], step[1], extent[1], pad[1]))
    token = tokenize(x.name, packed.weight, packed.bias, packed.groups, conv_stride,
                     conv_layer.padding, conv_dilation, mode, layout, activation, kernel, step,
                     pad, dil, pool_layer.ceil_mode, num_threads)
    name = f"fastconv-conv2d-max_pool2d-{token}"
    weights_key = f"fastconv-weights-{token}"
    conv = (conv_stride, conv_dilation, conv_extent)
    pool = (kernel, step, dil, extent)

    def block_task(grid, info_h, info_w):
        return (_conv_pool_block, grid, weights_key, h_axis, w_axis, info_h, info_w, conv, pool,
                meta.dtype, layout, activation, num_threads)

    y = _windowed(x, layout, name, plan_h, plan_w, block_task, packed.weight.shape[0],
                  meta.dtype, extra={weights_key: packed})
    return y[0] if unbatched else y


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", layout="NCHW", activation=None, num_threads=None):
    """2-D convolution of a chunked batch of images; :func:`fastconv.conv2d` on dask arrays.

    Parameters
    ----------
    x : dask.array.Array of shape (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``
        Chunked along N, H and W as you like (unknown chunk sizes are refused); C is
        rechunked to one chunk if it is split. A 3-D array is one unbatched image.
    weight : array_like of shape (F, C // groups, KH, KW)
        A NumPy array: it is copied into the graph once.
    bias : array_like of shape (F,), optional
    stride, padding, dilation, groups, padding_mode, activation
        As in :func:`fastconv.conv2d`; padding (``"same"`` too) applies to the whole array.
    layout : {"NCHW", "NHWC"}, default "NCHW"
    num_threads : int, optional
        OpenMP threads per task; None chooses :func:`threads_per_task` in each task.

    Returns
    -------
    dask.array.Array of shape (N, F, OH, OW) (or (N, OH, OW, F) for NHWC)
        Lazy. Batch chunks are the input's; F is one chunk; along H and W, output chunk ``j``
        holds the outputs ``o`` with ``o * stride`` in input chunk ``j`` (see the module doc).
        Computed, it equals ``fastconv.conv2d(x.compute(), ...)`` bit for bit.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask
    >>> x = da.ones((1, 1, 10, 10), chunks=(1, 1, 4, 5), dtype=np.float32)
    >>> y = fastconv.dask.conv2d(x, np.ones((2, 1, 3, 3), np.float32), stride=2, padding=1)
    >>> y.shape, y.chunks[2:]
    ((1, 2, 5, 5), ((2, 2, 1), (3, 2)))
    >>> y.compute()[0, 0, :2]
    array([[4., 6., 6., 6., 6.],
           [6., 9., 9., 9., 9.]], dtype=float32)
    """
    x, unbatched, layout = _check_dask_input(x, layout, "conv2d")
    packed = _conv._prepack_weights(weight, bias, groups)
    return _conv2d(x, packed, stride, padding, dilation, padding_mode, layout, activation,
                   num_threads, unbatched)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               layout="NCHW", num_threads=None):
    """2-D max pooling of a chunked batch; :func:`fastconv.max_pool2d` on dask arrays.

    Parameters
    ----------
    x : dask.array.Array of shape (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``
        Chunked along N, H and W as you like; C is rechunked to one chunk if it is split.
    kernel_size, stride, padding, dilation, ceil_mode
        As in :func:`fastconv.max_pool2d` (``return_indices`` is not offered).
    layout : {"NCHW", "NHWC"}, default "NCHW"
    num_threads : int, optional
        OpenMP threads per task; None chooses :func:`threads_per_task` in each task.

    Returns
    -------
    dask.array.Array of shape (N, C, OH, OW) (or (N, OH, OW, C) for NHWC)
        Lazy, chunked as described in the module doc (pooling by 2 halves even chunks); equal
        to ``fastconv.max_pool2d(x.compute(), ...)`` bit for bit.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask
    >>> x = da.arange(36.0, chunks=6).reshape(1, 1, 6, 6).rechunk((1, 1, 3, 4))
    >>> y = fastconv.dask.max_pool2d(x, 2, ceil_mode=True)
    >>> y.chunks[2:]
    ((2, 1), (2, 1))
    >>> y.compute()[0, 0]
    array([[ 7.,  9., 11.],
           [19., 21., 23.],
           [31., 33., 35.]])
    """
    x, unbatched, layout = _check_dask_input(x, layout, "max_pool2d")
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    meta, kernel, step, pad, dil, extent = _pool_geometry(
        _empty_like_input(x), kernel_size, stride, padding, dilation, ceil_mode, layout,
        num_threads)
    plan_h = _axis_plan(x.chunks[h_axis], meta.shape[h_axis], step[0], extent[0], pad[0],
                        "zeros")
    plan_w = _axis_plan(x.chunks[w_axis], meta.shape[w_axis], step[1], extent[1], pad[1],
                        "zeros")
    token = tokenize(x.name, kernel, step, pad, dil, ceil_mode, layout, num_threads)
    name = f"fastconv-max_pool2d-{token}"

    def block_task(grid, info_h, info_w):
        return (_pool_block, grid, h_axis, w_axis, info_h, info_w, meta.dtype, kernel, step,
                dil, layout, num_threads)

    channels = x.shape[1] if layout == "NCHW" else x.shape[3]
    y = _windowed(x, layout, name, plan_h, plan_w, block_task, channels, meta.dtype)
    return y[0] if unbatched else y


def relu(x, *, num_threads=None):
    """Rectified linear unit of a dask array, chunk by chunk; :func:`fastconv.relu`.

    Parameters
    ----------
    x : dask.array.Array of any shape and chunking
    num_threads : int, optional
        OpenMP threads per task; None chooses :func:`threads_per_task` in each task.

    Returns
    -------
    dask.array.Array
        Same shape and chunks as ``x``, dtype by :func:`fastconv.relu`'s rules.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask
    >>> fastconv.dask.relu(da.from_array([-1.0, 2.0, -3.0], chunks=2)).compute()
    array([0., 2., 0.])
    """
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array (use dask.array.from_array), got "
                        f"{type(x).__name__}; for NumPy arrays use fastconv.relu")
    if num_threads is not None:
        v.resolve_num_threads(num_threads)
    dtype = v.compute_dtype((np.empty(0, x.dtype), "x"))
    return x.map_blocks(partial(_relu_block, num_threads=num_threads), dtype=dtype,
                        name=f"fastconv-relu-{tokenize(x.name, num_threads)}",
                        meta=np.empty((0,) * x.ndim, dtype))


def apply(layer, x, *, layout="NCHW", num_threads=None, fuse=True):
    """Run a fastconv layer or layer stack on a dask array.

    Each ``Conv2D`` and ``MaxPool2D`` becomes the graph of :func:`conv2d` / :func:`max_pool2d`
    (with its own exact halos and border handling), each ``ReLU`` a blockwise map. As in
    :meth:`fastconv.layers.Sequential.__call__`, a ``Conv2D`` directly followed by ``ReLU`` runs
    as one fused call (same bits). A ``Conv2D`` (+ ``ReLU``) followed by ``MaxPool2D`` runs as
    one task per pooled chunk that convolves and pools strip by strip, so the convolution's
    output (often the largest array of the stack) never exists whole, not even per chunk, and
    stays in cache between the two kernels. Intermediate feature maps are never whole in memory.

    Parameters
    ----------
    layer : fastconv.layers.Sequential, Conv2D, ReLU or MaxPool2D
        Nested ``Sequential`` stacks are flattened. Other ``Layer`` subclasses are refused (their
        halos are unknown).
    x : dask.array.Array of shape (N, C, H, W) or (C, H, W) (NHWC / HWC with ``layout="NHWC"``)
    layout : {"NCHW", "NHWC"}, default "NCHW"
    num_threads : int, optional
        OpenMP threads per task; None chooses :func:`threads_per_task` in each task.
    fuse : bool, default True
        Fuse ``Conv2D`` (+ ``ReLU``) + ``MaxPool2D``; False runs them as separate graphs (same
        values, a chunked feature map in between).

    Returns
    -------
    dask.array.Array
        Equal to ``layer(x.compute(), layout=layout)`` bit for bit once computed.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask
    >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
    >>> net = Sequential([Conv2D.from_shape(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2)])
    >>> image = np.random.default_rng(0).standard_normal((1, 1, 60, 60)).astype(np.float32)
    >>> y = fastconv.dask.apply(net, da.from_array(image, chunks=(1, 1, 20, 30)))
    >>> y.shape, y.chunks[2:]
    ((1, 4, 30, 30), ((10, 10, 10), (15, 15)))
    >>> bool((y.compute() == net(image)).all())
    True
    """
    layout = v.check_layout(layout)
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array (use dask.array.from_array), got "
                        f"{type(x).__name__}")
    stack = list(_flatten(layer))
    index = 0
    while index < len(stack):
        current = stack[index]
        following = stack[index + 1] if index + 1 < len(stack) else None
        if type(current) is _layers.Conv2D:
            activation = current.activation
            if type(following) is _layers.ReLU and activation in (None, "relu"):
                activation, index = "relu", index + 1
                following = stack[index + 1] if index + 1 < len(stack) else None
            x4, unbatched, layout = _check_dask_input(x, layout, "layers.Conv2D")
            if type(following) is _layers.MaxPool2D and fuse:
                x = _conv_pool(x4, current, activation, following, layout, num_threads,
                               unbatched)
                index += 1
            else:
                x = _conv2d(x4, current._packed, current.stride, current.padding,
                            current.dilation, current.padding_mode, layout, activation,
                            num_threads, unbatched)
        elif type(current) is _layers.ReLU:
            x = relu(x, num_threads=num_threads)
        elif type(current) is _layers.MaxPool2D:
            x = max_pool2d(x, current.kernel_size, current.stride, current.padding,
                           current.dilation, ceil_mode=current.ceil_mode, layout=layout,
                           num_threads=num_threads)
        index += 1
    return x


def _flatten(layer):
    if isinstance(layer, _layers.Sequential):
        for inner in layer:
            yield from _flatten(inner)
    elif type(layer) in (_layers.Conv2D, _layers.ReLU, _layers.MaxPool2D):
        yield layer
    else:
        raise TypeError(f"fastconv.dask.apply supports Sequential, Conv2D, ReLU and MaxPool2D, "
                        f"got {type(layer).__name__} (its halo is unknown)")
