# Planned conv2d calls: the kernels' entry points, included by _conv.pxi.
#
# conv.py validates a call and plans it once per shape of arguments (_conv_plan); the plan and
# the call's scalars go into a GemmCall or DepthwiseCall, kept with the validated call. Calling
# that object with the arrays checks them against the plan (a guard for any caller: conv.py
# has already checked them), allocates the result, lends scratch memory and runs the kernel,
# all in C: a small convolution then costs about a microsecond above its arithmetic.
# run_cached looks a call up by the key of its arguments (call_key) and runs it, which is
# conv2d's whole path for a repeated call. The kernels proper (_gemm_forward,
# _depthwise_forward) still take their output from the caller and return nothing; only this
# layer allocates, in C, because a round trip through Python costs more than a small
# convolution.

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.stdint cimport uintptr_t

import numpy as np

# Scratch memory: requests up to fastconv._workspace.SMALL_BYTES come from malloc (cheap,
# and small blocks stay in glibc's heap), larger ones from the workspace, whose buffers are
# reused across calls.
cdef enum:
    SCRATCH_ALIGN = 64

_ndarray = np.ndarray  # compared by identity: exact arrays only on the fast path


cdef void _pack_filters(
    const floating *filters,      # IN  (G, Fg, R) C-contiguous
    Py_ssize_t groups, Py_ssize_t per_group, Py_ssize_t depth, Py_ssize_t inplace_blocks,
    const floating *bias,         # IN  (G * Fg,) or NULL (zero)
    floating *packed,             # OUT (G, FB - inplace_blocks, R, MR)
    floating *packed_bias,        # OUT (G, FB * MR)
) noexcept nogil:
    """The micro-kernel's panels for the filter blocks it does not read in place: filter
    b * MR + i at [g, b - inplace_blocks, :, i], zero past the group's filters; the bias
    zero-padded to whole blocks."""
    cdef Py_ssize_t fblocks = (per_group + FC_MR - 1) // FC_MR
    cdef Py_ssize_t g, b, i, r, f
    cdef floating *dst
    cdef const floating *src
    for g in range(groups):
        for b in range(inplace_blocks, fblocks):
            dst = packed + (g * (fblocks - inplace_blocks) + b - inplace_blocks) * depth * FC_MR
            for i in range(FC_MR):
                f = b * FC_MR + i
                if f < per_group:
                    src = filters + (g * per_group + f) * depth
                    for r in range(depth):
                        dst[r * FC_MR + i] = src[r]
                else:
                    for r in range(depth):
                        dst[r * FC_MR + i] = 0
        for f in range(fblocks * FC_MR):
            packed_bias[g * fblocks * FC_MR + f] = (
                bias[g * per_group + f] if bias != NULL and f < per_group else 0)


def packed_sizes(Py_ssize_t groups, Py_ssize_t per_group, Py_ssize_t depth,
                 Py_ssize_t inplace_blocks):
    """Elements of ``(packed, packed_bias)`` for these filters (see pack_filters)."""
    cdef Py_ssize_t fblocks = (per_group + FC_MR - 1) // FC_MR
    return groups * (fblocks - inplace_blocks) * depth * FC_MR, groups * fblocks * FC_MR


def pack_filters(filters, bias, Py_ssize_t groups, Py_ssize_t inplace_blocks):
    """``(packed, packed_bias)``: the GEMM kernel's panels of ``filters`` (G * Fg, R) (any
    C-contiguous shape of that size, float32/float64) for the blocks of MR filters it does not
    read in place, ``(G, FB - inplace_blocks, R, MR)``, and ``bias`` (None: zero) padded to
    ``(G, FB * MR)``."""
    cdef int t = _float_type(filters)
    cdef _Arg fv, bv
    _arg(filters, "filters", t, 2, False, True, &fv)
    bv.data = NULL
    if bias is not None:
        _arg(bias, "bias", t, -1, False, True, &bv)
    cdef Py_ssize_t per_group = fv.shape[0] // groups if groups > 0 else 0
    cdef Py_ssize_t depth = fv.shape[1]
    cdef Py_ssize_t fblocks = (per_group + FC_MR - 1) // FC_MR
    if (groups < 1 or per_group * groups != fv.shape[0] or inplace_blocks < 0
            or inplace_blocks * FC_MR > per_group
            or (bias is not None and bv.shape[0] != fv.shape[0])):
        raise ValueError(f"pack_filters: filters {filters.shape}, groups {groups}, "
                         f"inplace_blocks {inplace_blocks} or bias do not fit")
    dtype = filters.dtype
    packed = np.empty((groups, fblocks - inplace_blocks, depth, FC_MR), dtype)
    packed_bias = np.empty((groups, fblocks * FC_MR), dtype)
    if t == cnp.NPY_FLOAT32:
        _pack_filters(<const float *>fv.data, groups, per_group, depth, inplace_blocks,
                      <const float *>bv.data, <float *>cnp.PyArray_DATA(packed),
                      <float *>cnp.PyArray_DATA(packed_bias))
    else:
        _pack_filters(<const double *>fv.data, groups, per_group, depth, inplace_blocks,
                      <const double *>bv.data, <double *>cnp.PyArray_DATA(packed),
                      <double *>cnp.PyArray_DATA(packed_bias))
    return packed, packed_bias


cdef int _table(object table, str name, Py_ssize_t low, Py_ssize_t high, _Arg *view) except -1:
    """A plan table (C-contiguous intp), every entry in [low, high)."""
    _arg(table, name, cnp.NPY_INTP, table.ndim if cnp.PyArray_Check(table) else 1, False,
         True, view)
    cdef const Py_ssize_t *values = <const Py_ssize_t *>view.data
    cdef Py_ssize_t k, size = cnp.PyArray_SIZE(<cnp.ndarray>table)
    for k in range(size):
        if not low <= values[k] < high:
            raise ValueError(f"plan table {name} holds {values[k]}, outside [{low}, {high})")
    return 0


@cython.auto_pickle(False)  # pointers into the plan's tables
cdef class _KernelCall:
    """What the GEMM and depthwise calls share: the input's and the result's shapes, the
    scratch memory and the argument checks."""
    cdef readonly object plan
    cdef int typenum
    cdef Py_ssize_t itemsize
    cdef int x_ndim
    cdef bint channels_last
    cdef Py_ssize_t x_shape[4]            # (N, C, H, W) of the kernel's view of x
    cdef int out_ndim
    cdef cnp.npy_intp out_dims[4]
    cdef Py_ssize_t out_size
    cdef Py_ssize_t scratch_per_thread    # elements
    cdef object workspace                 # fastconv._workspace, for large scratch
    # The slab's index maps (both plans have them) and what both kernels take.
    cdef _Arg row_src, col_src, col_inner
    cdef Py_ssize_t out_h, out_w, rows_per_task, slab_size, pool
    cdef bint relu

    cdef int _setup(self, plan, dtype, tuple x_shape, tuple out_shape, bint channels_last,
                    out_hw, bint relu, Py_ssize_t pool, workspace) except -1:
        """The shared part of __init__: shapes, and the plan's slab tables checked against
        x (the kernels index x through them)."""
        cdef int k
        self.plan = plan
        dtype = np.dtype(dtype)
        if dtype != np.float32 and dtype != np.float64:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.typenum = dtype.num
        self.itemsize = dtype.itemsize
        if len(x_shape) not in (3, 4) or len(out_shape) not in (3, 4):
            raise ValueError(f"x_shape {x_shape} and out_shape {out_shape} must be 3-D or 4-D")
        self.x_ndim = len(x_shape)
        self.channels_last = channels_last
        dims = (1,) * (4 - self.x_ndim) + tuple(x_shape)
        if channels_last:
            dims = (dims[0], dims[3], dims[1], dims[2])
        for k in range(4):
            self.x_shape[k] = dims[k]
        self.out_ndim = len(out_shape)
        self.out_size = 1
        for k in range(self.out_ndim):
            self.out_dims[k] = out_shape[k]
            self.out_size *= out_shape[k]
        self.scratch_per_thread = plan.scratch_per_thread
        self.workspace = workspace
        self.out_h, self.out_w = out_hw
        self.relu, self.pool = relu, pool
        self.rows_per_task = plan.rows_per_task
        self.slab_size = plan.slab_size
        _table(plan.row_src, "row_src", -1, self.x_shape[2], &self.row_src)
        _table(plan.col_src, "col_src", -1, self.x_shape[3], &self.col_src)
        _table(plan.col_inner, "col_inner", -(1 << 62), 1 << 62, &self.col_inner)
        if (self.rows_per_task < 1  # checked first: it divides next
                or self.row_src.shape[0]
                < (self.out_h + self.rows_per_task - 1) // self.rows_per_task
                or plan.col_src.ndim != 2
                or plan.col_inner.shape != (self.col_src.shape[0], 3)):
            raise ValueError(f"{type(self).__name__}: the plan's slab tables do not fit the call")
        return 0

    cdef int _x_view(self, object x, _Arg *view) except -1:
        """x, in the layout and dimensions it was planned with, as the kernel's (N, C, H, W)."""
        cdef _Arg raw
        cdef int k, lead = 4 - self.x_ndim
        cdef int order[4]
        cdef Py_ssize_t dims[4]
        cdef Py_ssize_t steps[4]
        _arg(x, "x", self.typenum, self.x_ndim, False, False, &raw)
        if self.channels_last:
            order[0], order[1], order[2], order[3] = 0, 3, 1, 2
        else:
            order[0], order[1], order[2], order[3] = 0, 1, 2, 3
        for k in range(4):
            dims[k] = 1 if k < lead else raw.shape[k - lead]
            steps[k] = 0 if k < lead else raw.strides[k - lead]
        view.data = raw.data
        for k in range(4):
            view.shape[k] = dims[order[k]]
            view.strides[k] = steps[order[k]]
            if view.shape[k] != self.x_shape[k]:
                raise ValueError(f"x: shape {x.shape} differs from the planned call's")
        return 0

    cdef object _result(self, object out, _Arg *view):
        """out, checked, or a new result array."""
        if out is None:
            out = cnp.PyArray_EMPTY(self.out_ndim, self.out_dims, self.typenum, 0)
        _arg(out, "out", self.typenum, -1, True, True, view)
        if view.shape[0] != self.out_size:
            raise ValueError(f"out: {view.shape[0]} elements, the call writes {self.out_size}")
        return out

    cdef int _weight_view(self, object weight, Py_ssize_t elements, _Arg *view) except -1:
        """weight, checked: ``elements`` elements of the call's type, C-contiguous."""
        _arg(weight, "weight", self.typenum, -1, False, True, view)
        if view.shape[0] != elements:
            raise ValueError(f"weight: {view.shape[0]} elements, the call reads {elements}")
        return 0

    cdef int _bias_view(self, object bias, Py_ssize_t n_filters, _Arg *view) except -1:
        """bias, checked: ``n_filters`` elements of the call's type; None: view.data NULL."""
        view.data = NULL
        if bias is not None:
            _arg(bias, "bias", self.typenum, -1, False, True, view)
            if view.shape[0] != n_filters:
                raise ValueError(f"bias: {view.shape[0]} elements, not {n_filters}")
        return 0

    cdef int _run(self, const _Arg *x, object weight, object bias, char *out, char *scratch,
                  bint packed_here, object packed, object packed_bias, int threads) except -1:
        raise NotImplementedError

    cdef Py_ssize_t _shared_scratch(self, bint packed_here):
        """Scratch elements used by all threads together (weights packed per call)."""
        return 0

    def __call__(self, x, weight, bias=None, out=None, int num_threads=1, packed=None,
                 packed_bias=None):
        """Run the kernel: ``out`` (or a new array) = conv2d of x with weight and bias, as
        planned; ``num_threads`` >= 1 threads. ``packed``/``packed_bias``: the GEMM kernel's
        weight panels made in advance (pack_filters), used instead of packing per call."""
        cdef _Arg xv, ov
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self._x_view(x, &xv)
        out = self._result(out, &ov)
        cdef bint packed_here = packed is None
        cdef Py_ssize_t count = (num_threads * self.scratch_per_thread
                                 + self._shared_scratch(packed_here))
        cdef size_t nbytes = count * self.itemsize
        cdef char *block = NULL
        cdef char *scratch
        lease = None
        if nbytes <= self.workspace.SMALL_BYTES:
            block = <char *>malloc(nbytes + SCRATCH_ALIGN)
            if block == NULL:
                raise MemoryError()
            scratch = block + (-<uintptr_t>block) % SCRATCH_ALIGN
        else:
            lease, views = self.workspace.acquire(cnp.PyArray_DescrFromType(self.typenum),
                                                  count)
            scratch = cnp.PyArray_BYTES(<cnp.ndarray>views[0])
        try:
            self._run(&xv, weight, bias, ov.data, scratch, packed_here, packed, packed_bias,
                      num_threads)
        finally:
            if block != NULL:
                free(block)
            else:
                self.workspace.release(lease)
        return out


@cython.auto_pickle(False)  # pointers into the plan's tables
cdef class GemmCall(_KernelCall):
    """A planned conv2d call on the GEMM kernel (_gemm_forward): the plan (_conv_plan.ConvPlan)
    and the call's scalars. Weight is (F, C/G, KH, KW) C-contiguous (any shape of that size),
    bias (F,) or None."""
    cdef _Arg b_offset, pixel_src
    cdef Py_ssize_t groups, per_group, depth, inplace_blocks, kh, kw, stride_w
    cdef Py_ssize_t images_per_task, image_slab, panel_base
    cdef Py_ssize_t channels_per_chunk, fblocks_per_task, stage_pitch
    cdef Py_ssize_t wrap, packed_size, packed_bias_size
    cdef bint pointwise

    def __init__(self, plan, dtype, tuple x_shape, tuple out_shape, *, bint channels_last,
                 Py_ssize_t groups, Py_ssize_t per_group, kernel, Py_ssize_t stride_w,
                 out_hw, bint relu, Py_ssize_t pool, bint pointwise, workspace):
        self._setup(plan, dtype, x_shape, out_shape, channels_last, out_hw, relu, pool,
                    workspace)
        cdef Py_ssize_t nr
        self.groups, self.per_group = groups, per_group
        self.kh, self.kw = kernel
        self.stride_w, self.pointwise = stride_w, pointwise
        self.channels_per_chunk = plan.channels_per_chunk
        self.fblocks_per_task = plan.fblocks_per_task
        self.stage_pitch = plan.stage_pitch
        self.inplace_blocks = plan.inplace_blocks
        self.wrap = plan.wrap
        cdef Py_ssize_t channels = self.x_shape[1]
        cdef Py_ssize_t fblocks = (per_group + FC_MR - 1) // FC_MR
        if groups < 1 or per_group < 1 or channels % groups:
            raise ValueError(f"GemmCall: groups {groups}, per_group {per_group} do not fit "
                             f"{channels} channels")
        self.depth = channels // groups * self.kh * self.kw
        self.packed_size, self.packed_bias_size = packed_sizes(groups, per_group, self.depth,
                                                               self.inplace_blocks)
        pitch = self.col_src.shape[1]
        slab_channel = self.row_src.shape[1] * pitch * self.col_src.shape[0]
        _table(plan.b_offset, "b_offset", 0, self.slab_size - self.stage_pitch + 1,
               &self.b_offset)
        self.images_per_task = plan.images_per_task
        self.image_slab, self.panel_base = plan.image_slab, plan.panel_base
        cdef Py_ssize_t reach = int(plan.b_offset.max()) if plan.b_offset.size else 0
        # a stacked pixel's reads (b_offset + pixel_src) stay below the panels
        _table(plan.pixel_src, "pixel_src", 0, max(self.panel_base - reach, 0), &self.pixel_src)
        if self.images_per_task and (
                self.pixel_src.shape[0] != self.images_per_task * self.out_h * self.out_w
                or self.rows_per_task != self.out_h or pool > 1
                or self.image_slab < self.channels_per_chunk * slab_channel + self.wrap
                or self.panel_base < self.images_per_task * self.image_slab
                or self.stage_pitch < self.pixel_src.shape[0]
                or self.slab_size < self.panel_base
                + self.channels_per_chunk * self.kh * self.kw * self.stage_pitch):
            raise ValueError("GemmCall: the plan's stacked images do not fit the call")
        if self.typenum == cnp.NPY_FLOAT32:
            nr = FC_ROW_NR_F32 if per_group == 1 else FC_NR_F32
        else:
            nr = FC_ROW_NR_F64 if per_group == 1 else FC_NR_F64
        if ((self.images_per_task == 0 and self.stage_pitch < self.rows_per_task * pitch)
                or self.stage_pitch % nr
                or self.b_offset.shape[0] < self.channels_per_chunk * self.kh * self.kw
                or self.wrap < 0
                or self.slab_size < self.channels_per_chunk * slab_channel + self.wrap
                or self.inplace_blocks < 0 or self.inplace_blocks * FC_MR > per_group
                or self.fblocks_per_task < 1 or self.channels_per_chunk < 1
                or self.scratch_per_thread < self.slab_size
                + self.fblocks_per_task * FC_MR * self.stage_pitch
                or self.out_size != self.x_shape[0] * groups * per_group
                * ((self.out_h // pool) * (self.out_w // pool) if pool > 1
                   else self.out_h * self.out_w)):
            raise ValueError("GemmCall: the plan does not fit the call")

    cdef Py_ssize_t _panels_span(self):
        """Scratch elements of the packed panels, rounded up to a cache line (the packed bias
        follows them)."""
        cdef Py_ssize_t line = SCRATCH_ALIGN // self.itemsize
        return (self.packed_size + line - 1) // line * line

    cdef Py_ssize_t _shared_scratch(self, bint packed_here):
        return self._panels_span() + self.packed_bias_size if packed_here else 0

    cdef int _run(self, const _Arg *x, object weight, object bias, char *out, char *scratch,
                  bint packed_here, object packed, object packed_bias, int threads) except -1:
        cdef _Arg wv, bv, pv, pbv
        cdef Py_ssize_t n_filters = self.groups * self.per_group
        cdef char *panels
        cdef char *panel_bias
        self._weight_view(weight, n_filters * self.depth, &wv)
        if packed_here:
            self._bias_view(bias, n_filters, &bv)
            panels = scratch + threads * self.scratch_per_thread * self.itemsize
            panel_bias = panels + self._panels_span() * self.itemsize
            with nogil:
                if self.typenum == cnp.NPY_FLOAT32:
                    _pack_filters(<const float *>wv.data, self.groups, self.per_group,
                                  self.depth, self.inplace_blocks, <const float *>bv.data,
                                  <float *>panels, <float *>panel_bias)
                else:
                    _pack_filters(<const double *>wv.data, self.groups, self.per_group,
                                  self.depth, self.inplace_blocks, <const double *>bv.data,
                                  <double *>panels, <double *>panel_bias)
        else:
            _arg(packed, "packed", self.typenum, -1, False, True, &pv)
            _arg(packed_bias, "packed_bias", self.typenum, -1, False, True, &pbv)
            if pv.shape[0] != self.packed_size or pbv.shape[0] != self.packed_bias_size:
                raise ValueError("packed, packed_bias: sizes do not fit the call")
            panels, panel_bias = pv.data, pbv.data
        if self.typenum == cnp.NPY_FLOAT32:
            _gemm_forward(x, <const float *>wv.data, <const float *>panels,
                          self.inplace_blocks, <const float *>panel_bias, <float *>out,
                          <float *>scratch, self.groups, self.per_group, &self.row_src,
                          &self.col_src, &self.col_inner, &self.b_offset, self.stride_w,
                          self.kh, self.kw, self.out_h, self.out_w, self.rows_per_task,
                          self.channels_per_chunk, self.fblocks_per_task, self.slab_size,
                          self.stage_pitch, self.wrap, self.images_per_task, self.image_slab,
                          self.panel_base, &self.pixel_src,
                          self.channels_last, self.relu, self.pool,
                          threads,
                          self.pointwise)
        else:
            _gemm_forward(x, <const double *>wv.data, <const double *>panels,
                          self.inplace_blocks, <const double *>panel_bias, <double *>out,
                          <double *>scratch, self.groups, self.per_group, &self.row_src,
                          &self.col_src, &self.col_inner, &self.b_offset, self.stride_w,
                          self.kh, self.kw, self.out_h, self.out_w, self.rows_per_task,
                          self.channels_per_chunk, self.fblocks_per_task, self.slab_size,
                          self.stage_pitch, self.wrap, self.images_per_task, self.image_slab,
                          self.panel_base, &self.pixel_src,
                          self.channels_last, self.relu, self.pool,
                          threads,
                          self.pointwise)
        return 0


@cython.auto_pickle(False)  # pointers into the plan's tables
cdef class DepthwiseCall(_KernelCall):
    """A planned conv2d call on the depthwise kernel (_depthwise_forward): the plan
    (_conv_plan.DepthwisePlan) and the call's scalars. Weight is (C * M, 1, KH, KW)
    C-contiguous (any shape of that size), bias (C * M,) or None."""
    cdef _Arg tap_offset
    cdef Py_ssize_t multiplier, taps, stride_h, stride_w, groups_per_task, stage_row, blocked

    def __init__(self, plan, dtype, tuple x_shape, tuple out_shape, *, bint channels_last,
                 Py_ssize_t multiplier, kernel, stride, out_hw, bint relu, Py_ssize_t pool,
                 workspace):
        self._setup(plan, dtype, x_shape, out_shape, channels_last, out_hw, relu, pool,
                    workspace)
        kh, kw = kernel
        self.taps = kh * kw
        self.multiplier = multiplier
        self.stride_h, self.stride_w = stride
        self.groups_per_task = plan.groups_per_task
        self.stage_row = plan.stage_row
        self.blocked = plan.blocked
        _table(plan.tap_offset, "tap_offset", 0, self.slab_size, &self.tap_offset)
        cdef Py_ssize_t channels = self.x_shape[1]
        if (multiplier < 1 or self.tap_offset.shape[0] < self.taps
                or self.groups_per_task < 1 or self.stage_row < self.out_w
                or self.slab_size < self.groups_per_task * self.col_src.shape[0]
                * self.row_src.shape[1] * self.col_src.shape[1]
                or self.scratch_per_thread < self.slab_size + self.groups_per_task
                * multiplier * self.rows_per_task * self.stage_row
                + (self.row_src.shape[1] * self.x_shape[3] * self.blocked
                   if self.blocked and not channels_last else 0)
                or (self.blocked and (self.groups_per_task != self.blocked or pool > 1
                                      or self.col_src.shape[0] != 1
                                      or self.stage_row != self.out_w))
                or self.out_size != self.x_shape[0] * channels * multiplier
                * ((self.out_h // pool) * (self.out_w // pool) if pool > 1
                   else self.out_h * self.out_w)):
            raise ValueError("DepthwiseCall: the plan does not fit the call")

    cdef Py_ssize_t _shared_scratch(self, bint packed_here):
        return (_blocked_weights_size(self.x_shape[1], self.multiplier, self.taps, self.blocked)
                if self.blocked else 0)

    cdef int _run(self, const _Arg *x, object weight, object bias, char *out, char *scratch,
                  bint packed_here, object packed, object packed_bias, int threads) except -1:
        cdef _Arg wv, bv
        cdef Py_ssize_t n_filters = self.x_shape[1] * self.multiplier
        if not packed_here:
            raise ValueError("DepthwiseCall takes no packed weights")
        self._weight_view(weight, n_filters * self.taps, &wv)
        self._bias_view(bias, n_filters, &bv)
        if self.typenum == cnp.NPY_FLOAT32:
            _depthwise_forward(x, <const float *>wv.data, <const float *>bv.data,
                               <float *>out, <float *>scratch, &self.row_src, &self.col_src,
                               &self.col_inner, &self.tap_offset, self.multiplier, self.taps,
                               self.stride_h, self.stride_w, self.out_h, self.out_w,
                               self.rows_per_task, self.groups_per_task, self.stage_row,
                               self.slab_size, self.channels_last, self.relu, self.pool,
                               threads, self.blocked)
        else:
            _depthwise_forward(x, <const double *>wv.data, <const double *>bv.data,
                               <double *>out, <double *>scratch, &self.row_src, &self.col_src,
                               &self.col_inner, &self.tap_offset, self.multiplier, self.taps,
                               self.stride_h, self.stride_w, self.out_h, self.out_w,
                               self.rows_per_task, self.groups_per_task, self.stage_row,
                               self.slab_size, self.channels_last, self.relu, self.pool,
                               threads, self.blocked)
        return 0


@cython.auto_pickle(False)  # pointers into the plan's tables
cdef class FilterLaneCall(_KernelCall):
    """A planned conv2d call on the filter-lane kernel (_filter_lanes_forward): the plan
    (_conv_plan.FilterLanePlan) and the call's scalars. One group; weight is (F, C, KH, KW)
    C-contiguous (any shape of that size), bias (F,) or None."""
    cdef _Arg tap_rows, tile_rows, pixel_src, part_bounds
    cdef Py_ssize_t n_filters, taps, stride_w, channels_per_chunk, images_per_task
    cdef Py_ssize_t image_slab, fvecs_per_task, wrap, lanes, last_tiles, interleave
    cdef bint skips                       # some tile skips taps that read only padding
    cdef bint shared_weights

    def __init__(self, plan, dtype, tuple x_shape, tuple out_shape, *, bint channels_last,
                 Py_ssize_t n_filters, kernel, Py_ssize_t stride_w, out_hw, bint relu,
                 workspace):
        self._setup(plan, dtype, x_shape, out_shape, channels_last, out_hw, relu, 1,
                    workspace)
        kh, kw = kernel
        self.taps = kh * kw
        self.n_filters, self.stride_w = n_filters, stride_w
        self.channels_per_chunk = plan.channels_per_chunk
        self.images_per_task = plan.images_per_task
        self.image_slab = plan.image_slab
        self.fvecs_per_task = plan.fvecs_per_task
        self.wrap = plan.wrap
        self.shared_weights = plan.shared_weights
        self.lanes = FC_LANES_F32 if self.typenum == cnp.NPY_FLOAT32 else FC_LANES_F64
        cdef Py_ssize_t slab_channel = (self.col_src.shape[0] * self.row_src.shape[1]
                                        * self.col_src.shape[1])
        cdef Py_ssize_t images_span = self.images_per_task * self.image_slab
        cdef Py_ssize_t chunk_rows = self.channels_per_chunk * self.taps
        cdef Py_ssize_t panel_ld = self.fvecs_per_task * self.lanes
        cdef Py_ssize_t list_rows = plan.tap_rows.shape[0]
        # each listed row: a slab offset within an image's slab, a weight row of the chunk
        cdef Py_ssize_t weights_end = (chunk_rows - 1) * panel_ld + 1
        _table(plan.tap_rows, "tap_rows", 0, max(self.image_slab, weights_end, 1),
               &self.tap_rows)
        _table(plan.tile_rows, "tile_rows", 0, max(list_rows, FC_LANES_NP) + 1, &self.tile_rows)
        _table(plan.pixel_src, "pixel_src", 0, max(images_span, 1), &self.pixel_src)
        cdef const Py_ssize_t *rows = <const Py_ssize_t *>self.tap_rows.data
        cdef Py_ssize_t row
        # (the first list holds every tap: tiles take it where a weight is not finite)
        if (plan.tap_rows.ndim != 2 or self.tap_rows.shape[1] != 2
                or list_rows < chunk_rows):
            raise ValueError("FilterLaneCall: the plan's lists do not fit the call")
        for row in range(list_rows):
            if rows[2 * row] >= self.image_slab or rows[2 * row + 1] >= weights_end:
                raise ValueError("FilterLaneCall: the plan's lists do not fit the call")
        cdef Py_ssize_t reach = (int(plan.tap_rows[:, 0].max()) + int(plan.pixel_src.max())
                                 if list_rows and plan.pixel_src.size else 0)
        # The tiles: a whole block of images' pixels, then the last block's (if smaller),
        # each tile at most FC_LANES_NP pixels and a list of whole chunks of channels.
        cdef Py_ssize_t plane = self.out_h * self.out_w
        cdef Py_ssize_t block = self.images_per_task * plane
        cdef Py_ssize_t total = block + plan.last_images * plane
        cdef Py_ssize_t tile, covered = 0
        cdef const Py_ssize_t *tiles = <const Py_ssize_t *>self.tile_rows.data
        self.last_tiles = -1
        self.skips = False
        self.interleave = plan.interleave
        if (plan.tile_rows.ndim != 2 or self.tile_rows.shape[1] != 3
                or self.images_per_task < 1 or self.interleave < 1
                or plan.last_images != self.x_shape[0] % self.images_per_task):
            raise ValueError("FilterLaneCall: the plan's tiles do not fit the call")
        for tile in range(self.tile_rows.shape[0]):
            if covered == block:
                self.last_tiles = tile
            covered += tiles[3 * tile + 2]
            self.skips = self.skips or tiles[3 * tile + 1] < self.taps
            if (tiles[3 * tile + 1] > self.taps or tiles[3 * tile]
                    + self.channels_per_chunk * tiles[3 * tile + 1] > list_rows
                    or not 1 <= tiles[3 * tile + 2] <= FC_LANES_NP
                    or (covered > block and self.last_tiles < 0)):
                raise ValueError("FilterLaneCall: the plan's tiles do not fit the call")
        if covered != total or (plan.last_images and self.last_tiles < 0):
            raise ValueError("FilterLaneCall: the plan's tiles do not fit the call")
        self.last_tiles = max(self.last_tiles, 0)
        # The parts: runs of a whole block's tiles from tile 0 and pixel 0 to its end, each
        # part's first pixel the pixels of the tiles before it; several only for one image
        # per task.
        cdef Py_ssize_t block_tiles = (self.last_tiles if plan.last_images
                                       else self.tile_rows.shape[0])
        _table(plan.part_bounds, "part_bounds", 0, max(block_tiles, block) + 1,
               &self.part_bounds)
        cdef const Py_ssize_t *bounds = <const Py_ssize_t *>self.part_bounds.data
        cdef Py_ssize_t parts = self.part_bounds.shape[0] - 1, part
        if (plan.part_bounds.ndim != 2 or self.part_bounds.shape[1] != 2 or parts < 1
                or bounds[0] != 0 or bounds[1] != 0 or bounds[2 * parts] != block_tiles
                or bounds[2 * parts + 1] != block
                or (parts > 1 and (self.images_per_task != 1 or self.interleave != 1))):
            raise ValueError("FilterLaneCall: the plan's parts do not fit the call")
        covered = 0
        tile = 0
        for part in range(parts):
            if bounds[2 * part + 2] <= bounds[2 * part] or bounds[2 * part + 1] != covered:
                raise ValueError("FilterLaneCall: the plan's parts do not fit the call")
            while tile < bounds[2 * part + 2]:
                covered += tiles[3 * tile + 2]
                tile += 1
        # a task's packed weights follow its images' slabs unless they are packed once
        cdef Py_ssize_t panel = (0 if self.shared_weights else self.channels_per_chunk
                                 * self.taps * self.fvecs_per_task * self.lanes)
        if (n_filters < 1 or self.channels_per_chunk < 1 or self.images_per_task < 1
                or self.fvecs_per_task < 1 or self.wrap < 0
                or self.row_src.shape[0] != 1 or self.rows_per_task != self.out_h
                or self.pixel_src.shape[0] != total
                or self.image_slab < self.channels_per_chunk * slab_channel + self.wrap
                or reach >= images_span
                or self.slab_size < images_span + panel
                or self.scratch_per_thread < self.slab_size + block
                * self.fvecs_per_task * self.lanes
                or self.out_size != self.x_shape[0] * n_filters * self.out_h * self.out_w):
            raise ValueError("FilterLaneCall: the plan does not fit the call")

    cdef Py_ssize_t _shared_scratch(self, bint packed_here):
        return _lane_weights_size(self.n_filters, self.x_shape[1] * self.taps,
                                  self.fvecs_per_task, self.lanes, self.shared_weights)

    cdef int _run(self, const _Arg *x, object weight, object bias, char *out, char *scratch,
                  bint packed_here, object packed, object packed_bias, int threads) except -1:
        cdef _Arg wv, bv
        if not packed_here:
            raise ValueError("FilterLaneCall takes no packed weights")
        self._weight_view(weight, self.n_filters * self.x_shape[1] * self.taps, &wv)
        self._bias_view(bias, self.n_filters, &bv)
        if self.typenum == cnp.NPY_FLOAT32:
            _filter_lanes_forward(x, <const float *>wv.data, <const float *>bv.data,
                                  self.n_filters, <float *>out, <float *>scratch,
                                  &self.row_src, &self.col_src, &self.col_inner,
                                  &self.tap_rows, &self.tile_rows, self.last_tiles,
                                  self.interleave, self.skips,
                                  &self.pixel_src, &self.part_bounds, self.stride_w,
                                  self.taps,
                                  self.out_h, self.out_w, self.channels_per_chunk,
                                  self.images_per_task, self.image_slab, self.fvecs_per_task,
                                  self.slab_size, self.wrap, self.shared_weights,
                                  self.channels_last, self.relu, threads)
        else:
            _filter_lanes_forward(x, <const double *>wv.data, <const double *>bv.data,
                                  self.n_filters, <double *>out, <double *>scratch,
                                  &self.row_src, &self.col_src, &self.col_inner,
                                  &self.tap_rows, &self.tile_rows, self.last_tiles,
                                  self.interleave, self.skips,
                                  &self.pixel_src, &self.part_bounds, self.stride_w,
                                  self.taps,
                                  self.out_h, self.out_w, self.channels_per_chunk,
                                  self.images_per_task, self.image_slab, self.fvecs_per_task,
                                  self.slab_size, self.wrap, self.shared_weights,
                                  self.channels_last, self.relu, threads)
        return 0


@cython.auto_pickle(False)  # pointers into the plan's tables
cdef class ChannelsLastCall(_KernelCall):
    """A planned NHWC conv2d call on the channels-last kernel (_channels_last_forward): the
    plan (_conv_plan.ChannelsLastPlan) and the call's scalars. Weight is (F, C/G, KH, KW)
    C-contiguous (any shape of that size), bias (F,) or None."""
    cdef _Arg tap_rows, pixel_offsets
    cdef Py_ssize_t groups, per_group, depth, ld, stride_w
    cdef bint merge_rows

    def __init__(self, plan, dtype, tuple x_shape, tuple out_shape, *, Py_ssize_t groups,
                 Py_ssize_t per_group, kernel, Py_ssize_t stride_w, out_hw, bint relu,
                 bint merge_rows=False, workspace):
        """x_shape: x as the kernel takes it; with merge_rows, x's rows of one width
        regrouped into rows of another (1x1, stride 1, no padding), x_shape's."""
        self._setup(plan, dtype, x_shape, out_shape, True, out_hw, relu, 1, workspace)
        self.merge_rows = merge_rows
        if merge_rows and (kernel != (1, 1) or stride_w != 1 or self.x_shape[3] != out_hw[1]):
            raise ValueError("ChannelsLastCall: merge_rows needs a 1x1 layer without "
                             "stride or padding")
        kh, kw = kernel
        cdef Py_ssize_t channels = self.x_shape[1]
        cdef Py_ssize_t lanes = FC_LANES_F32 if self.typenum == cnp.NPY_FLOAT32 else FC_LANES_F64
        if groups < 1 or per_group < 1 or channels % groups:
            raise ValueError(f"ChannelsLastCall: groups {groups}, per_group {per_group} do not "
                             f"fit {channels} channels")
        self.groups, self.per_group, self.stride_w = groups, per_group, stride_w
        self.depth = channels // groups * kh * kw
        self.ld = (per_group + lanes - 1) // lanes * lanes
        cdef Py_ssize_t slab_w = self.col_src.shape[1]
        cdef Py_ssize_t slab_size = self.row_src.shape[1] * slab_w * channels
        cdef Py_ssize_t pixels = self.rows_per_task * self.out_w
        _table(plan.pixel_offsets, "pixel_offsets", 0, max(slab_size, 1), &self.pixel_offsets)
        cdef Py_ssize_t reach = int(plan.pixel_offsets.max()) if pixels else 0
        # a pixel's reads (its offset + a row's + the group's channels) stay in the slab
        cdef Py_ssize_t group_reach = (channels - channels // groups) * slab_w
        _table(plan.tap_rows, "tap_rows", 0,
               max(slab_size - reach - group_reach, self.depth * self.ld), &self.tap_rows)
        cdef const Py_ssize_t *offsets = <const Py_ssize_t *>self.pixel_offsets.data
        cdef Py_ssize_t p
        for p in range(1, pixels):  # pixels of an output row stride_w apart (_lanes_step)
            if p % self.out_w and offsets[p] - offsets[p - 1] != stride_w:
                raise ValueError("ChannelsLastCall: the plan's pixels do not fit the call")
        cdef const Py_ssize_t *rows = <const Py_ssize_t *>self.tap_rows.data
        cdef const Py_ssize_t *inner = <const Py_ssize_t *>self.col_inner.data
        cdef Py_ssize_t r
        if (plan.tap_rows.ndim != 2 or self.tap_rows.shape[1] != 2
                or self.tap_rows.shape[0] != self.depth
                or self.pixel_offsets.shape[0] != pixels
                or self.col_src.shape[0] != 1
                or not 0 <= inner[0] <= inner[1] <= slab_w
                or (inner[1] > inner[0] and (inner[0] + inner[2] < 0
                                             or inner[1] + inner[2] > self.x_shape[3]))
                or self.slab_size != slab_size
                or self.scratch_per_thread < slab_size + FC_LANES_NP * FC_CL_VECTORS * lanes
                or self.out_size != self.x_shape[0] * groups * per_group
                * self.out_h * self.out_w):
            raise ValueError("ChannelsLastCall: the plan does not fit the call")
        for r in range(self.depth):
            if (rows[2 * r] + reach + group_reach >= slab_size
                    or rows[2 * r + 1] > (self.depth - 1) * self.ld):
                raise ValueError("ChannelsLastCall: the plan's reduction rows do not fit "
                                 "the call")

    cdef int _x_view(self, object x, _Arg *view) except -1:
        """With merge_rows, x (N, H, W, C), its rows one after the other, as the kernel's
        (N, C, H', W') of the same pixels."""
        if not self.merge_rows:
            return _KernelCall._x_view(self, x, view)
        cdef _Arg raw
        cdef int lead = 4 - self.x_ndim
        _arg(x, "x", self.typenum, self.x_ndim, False, False, &raw)
        cdef Py_ssize_t n = raw.shape[0] if lead == 0 else 1
        cdef Py_ssize_t sn = raw.strides[0] if lead == 0 else 0
        cdef Py_ssize_t h = raw.shape[1 - lead], w = raw.shape[2 - lead]
        cdef Py_ssize_t c = raw.shape[3 - lead]
        cdef Py_ssize_t sh = raw.strides[1 - lead], sw = raw.strides[2 - lead]
        if (n != self.x_shape[0] or c != self.x_shape[1]
                or h * w != self.x_shape[2] * self.x_shape[3] or sh != w * sw):
            raise ValueError(f"x: shape {x.shape} or strides differ from the planned call's")
        view.data = raw.data
        view.shape[0], view.shape[1] = n, c
        view.shape[2], view.shape[3] = self.x_shape[2], self.x_shape[3]
        view.strides[0], view.strides[1] = sn, raw.strides[3 - lead]
        view.strides[2], view.strides[3] = self.x_shape[3] * sw, sw
        return 0

    cdef Py_ssize_t _shared_scratch(self, bint packed_here):
        """The packed weights (G, depth, ld) and bias (G, ld)."""
        return self.groups * (self.depth + 1) * self.ld

    cdef int _run(self, const _Arg *x, object weight, object bias, char *out, char *scratch,
                  bint packed_here, object packed, object packed_bias, int threads) except -1:
        cdef _Arg wv, bv
        cdef Py_ssize_t n_filters = self.groups * self.per_group
        if not packed_here:
            raise ValueError("ChannelsLastCall takes no packed weights")
        self._weight_view(weight, n_filters * self.depth, &wv)
        self._bias_view(bias, n_filters, &bv)
        if self.typenum == cnp.NPY_FLOAT32:
            _channels_last_forward(x, <const float *>wv.data, <const float *>bv.data,
                                   self.groups, self.per_group, <float *>out,
                                   <float *>scratch, self.scratch_per_thread,
                                   &self.row_src, &self.col_src, &self.col_inner,
                                   &self.tap_rows, &self.pixel_offsets, self.out_h,
                                   self.out_w, self.rows_per_task, self.stride_w, self.relu,
                                   threads)
        else:
            _channels_last_forward(x, <const double *>wv.data, <const double *>bv.data,
                                   self.groups, self.per_group, <double *>out,
                                   <double *>scratch, self.scratch_per_thread,
                                   &self.row_src, &self.col_src, &self.col_inner,
                                   &self.tap_rows, &self.pixel_offsets, self.out_h,
                                   self.out_w, self.rows_per_task, self.stride_w, self.relu,
                                   threads)
        return 0


cdef inline bint _simple(object value):
    """An int, a string, None or a tuple of ints: a parameter whose equality means equal
    validation (True == 1 and 2.0 == 2 would not, so they take the validating path)."""
    if type(value) is int or type(value) is str or value is None:
        return True
    if type(value) is not tuple:
        return False
    for item in <tuple>value:
        if type(item) is not int:
            return False
    return True


def call_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
             activation, Py_ssize_t pool):
    """The key under which conv.py keeps a validated call: a tuple of what its validation and
    plan depend on (array_key of the arrays and the parameters), or None for calls that must
    be validated in full (array-likes, unusual parameter types)."""
    if type(x) is not _ndarray or type(groups) is not int:
        return None
    if not (_simple(stride) and _simple(padding) and _simple(dilation)
            and type(padding_mode) is str and type(layout) is str
            and (activation is None or type(activation) is str)):
        return None
    if type(weight) is not _ndarray or not (bias is None or type(bias) is _ndarray):
        return None
    return (array_key(x, weight, bias), stride, padding, dilation, groups, padding_mode, layout,
            activation, pool)


def run_cached(dict calls, x, weight, bias, stride, padding, dilation, groups, padding_mode,
               layout, activation, Py_ssize_t pool, num_threads, resolve_num_threads):
    """conv2d for a call seen before: the planned call kept in ``calls`` under this call's
    key (call_key) run on ``resolve_num_threads(num_threads)`` threads, with a new result;
    None when ``calls`` has no such call."""
    key = call_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
                   activation, pool)
    if key is None:
        return None
    cdef PyObject *found = PyDict_GetItem(calls, key)
    if found == NULL:
        return None
    return (<object>found)(x, weight, bias, None, resolve_num_threads(num_threads))
