# The channels-last kernel for NHWC calls, included by _conv.pxi after the filter-lane
# kernel, whose micro-kernel (fc_lanes_body) it shares.
#
# In NHWC a pixel's channels are adjacent, in the input and in the output. The GEMM kernel
# puts pixels in its vector lanes, so its staged tile (filters x pixels) goes out through
# transposes: a third of the time of a 3 -> 64 channel layer at 224x224 in NHWC, which took
# 1.5x its NCHW time. Here the lanes hold filters, as in the filter-lane kernel, over bands
# of output rows. A task copies its band's padded input rows into its slab as (slab rows,
# C, slab width): consecutive pixels of an output row then read consecutive (stride 1) or
# every other (stride 2) slab column. fc_lanes_step computes runs of tiles along a row,
# each FC_STEP_NP(nv) pixels x nv <= FC_CL_VECTORS vectors of filters (AVX-512: 6 x 4, so a
# 64-filter layer writes each pixel's filters whole), a pixel's value of a reduction row
# one broadcast through a single pointer, straight into the output, where a pixel's filters
# are adjacent too. A row's last pixels, other strides and a group's partial vector of
# filters (through a small staged tile) take fc_lanes, two vectors at a time. The reduction
# runs over (c, kh, kw) in order from the bias, as in the GEMM kernel: the same bits as
# NCHW, for any thread count. Where it is used: _conv_plan.use_channels_last.


CHANNELS_LAST_VECTORS = FC_CL_VECTORS  # vectors of filters per tile at most


ctypedef struct _ChannelsLastJob:
    # What every task of one _channels_last_forward call shares (see _GemmJob).
    const void *x
    const void *packed            # (G, Cg*KH*KW, ld) weights, rows of whole vectors
    const void *bias              # (G, ld) zero-padded
    void *out                     # (N, OH*OW, F)
    Py_ssize_t sn, sc, sh, sw
    const Py_ssize_t *row_src
    Py_ssize_t slab_rows
    const Py_ssize_t *col_src
    const Py_ssize_t *col_inner
    const Py_ssize_t *tap_rows
    const Py_ssize_t *pixel_offsets
    Py_ssize_t slab_w, channels, groups, in_per_group, per_group, depth, ld, lanes
    Py_ssize_t out_h, out_w, rows_per_task, row_blocks, stride_w
    bint relu


cdef inline void _lanes_step(Py_ssize_t depth, const floating *a, const floating *b,
                             const Py_ssize_t *rows, Py_ssize_t pix0, floating *c,
                             Py_ssize_t ldc, const floating *bias, bint relu, int nv,
                             bint half, int step, Py_ssize_t ntiles) noexcept nogil:
    if floating is float:
        fc_lanes_step_f32(depth, a, b, rows, pix0, c, ldc, bias, relu, nv, half, step, ntiles)
    else:
        fc_lanes_step_f64(depth, a, b, rows, pix0, c, ldc, bias, relu, nv, half, step, ntiles)


cdef void _fill_channels_last_slab(const _ChannelsLastJob *job, const floating *x,
                                   Py_ssize_t band, floating *slab) noexcept nogil:
    """The band's padded input rows of image x as (slab rows, C, slab width), zero where
    row_src / col_src say so: each row's pixels x channels transposed (channels apart)."""
    cdef Py_ssize_t channels = job.channels, sc = job.sc, sw = job.sw
    cdef Py_ssize_t slab_w = job.slab_w, row_pitch = channels * slab_w
    cdef Py_ssize_t lo = job.col_inner[0], hi = job.col_inner[1], offset = job.col_inner[2]
    cdef Py_ssize_t k, j, c, src_row, src_col
    cdef const floating *x_row
    cdef const floating *src
    cdef floating *dst
    for k in range(job.slab_rows):
        src_row = job.row_src[band * job.slab_rows + k]
        dst = slab + k * row_pitch
        if src_row < 0:
            memset(dst, 0, row_pitch * sizeof(floating))
            continue
        x_row = x + src_row * job.sh
        # Borders (padding of every mode) through the column map.
        for j in range(slab_w):
            if lo <= j < hi:
                continue
            src_col = job.col_src[j]
            for c in range(channels):
                dst[c * slab_w + j] = x_row[src_col * sw + c * sc] if src_col >= 0 else 0
        if hi <= lo:
            continue
        src = x_row + (lo + offset) * sw
        if sc == 1:  # (pixels, channels) rows sw apart -> (channels, pixels)
            _transpose(src, sw, hi - lo, channels, dst + lo, slab_w)
        else:
            for c in range(channels):
                _copy_strided(dst + c * slab_w + lo, src + c * sc, sw, hi - lo)


cdef void _channels_last_task(const _ChannelsLastJob *job, Py_ssize_t task, floating *slab,
                              floating *stage) noexcept nogil:
    """One task of _channels_last_forward: band task % row_blocks of image task // row_blocks,
    every group and filter, into the thread's slab and (partial vectors of filters) its
    staged tile. With stride 1 or 2 a tile's pixels lie within one output row (one pointer
    into the slab, _lanes_step), else they run on across rows (a pointer each)."""
    cdef const floating *packed = <const floating *>job.packed
    cdef const floating *bias = <const floating *>job.bias
    cdef Py_ssize_t n = task // job.row_blocks, band = task % job.row_blocks
    cdef Py_ssize_t oh0 = band * job.rows_per_task
    cdef Py_ssize_t rows = min(job.rows_per_task, job.out_h - oh0)
    cdef Py_ssize_t out_w = job.out_w, pixels = rows * out_w
    cdef Py_ssize_t lanes = job.lanes, ld = job.ld, depth = job.depth
    cdef Py_ssize_t n_filters = job.groups * job.per_group
    cdef floating *out = (<floating *>job.out
                          + (n * job.out_h + oh0) * out_w * n_filters)
    cdef Py_ssize_t g, f0, p0, p, k, width, row_end, run, tile, vectors, chunks
    cdef const floating *a
    cdef const floating *b
    cdef const floating *bias_ptr
    cdef floating *c
    cdef floating *dst
    cdef Py_ssize_t ldc, ld_stage = FC_CL_VECTORS * lanes
    cdef int nv, np_, pair
    cdef bint half, whole
    cdef int step = <int>job.stride_w if job.stride_w <= 2 else 0
    _fill_channels_last_slab(job, <const floating *>job.x + n * job.sn, band, slab)
    for g in range(job.groups):
        b = slab + g * job.in_per_group * job.slab_w  # the group's first channel's rows
        f0 = 0
        while f0 < job.per_group:  # FC_CL_VECTORS vectors of filters at a time at most
            # the group's vectors in equal chunks: 4.5 vectors as 3 + 1.5, not 4 + one half
            # vector (a half vector's tiles are half empty)
            vectors = (job.per_group - f0 + lanes - 1) // lanes
            chunks = (vectors + FC_CL_VECTORS - 1) // FC_CL_VECTORS
            nv = <int>((vectors + chunks - 1) // chunks)
            half = _half_tail(f0, job.per_group, nv, lanes)
            width = min(nv * lanes, job.per_group - f0)
            # the tile's vectors write exactly the group's filters, or go through the stage
            whole = width == _tile_width(nv, half, lanes)
            tile = FC_STEP_NP(nv)
            a = packed + g * depth * ld + f0
            bias_ptr = bias + g * ld + f0
            p0 = 0
            while p0 < pixels:
                dst = out + p0 * n_filters + g * job.per_group + f0
                row_end = (p0 // out_w + 1) * out_w if step else pixels
                run = (row_end - p0) // tile if step and whole else 0
                if run:  # the row's whole tiles, in one call
                    _lanes_step(depth, a, b, job.tap_rows, job.pixel_offsets[p0], dst,
                                n_filters, bias_ptr, job.relu, nv, half, step, run)
                    p0 = p0 + run * tile
                    continue
                # the rest of the row (or of the band): pixels, two vectors at a time
                np_ = <int>min(FC_LANES_NP, row_end - p0)
                c, ldc = (dst, n_filters) if whole else (stage, ld_stage)
                for k in range(0, nv, 2):
                    pair = min(2, nv - k)
                    _lanes(depth, a + k * lanes, b, job.tap_rows, job.pixel_offsets + p0,
                           c + k * lanes, ldc, bias_ptr + k * lanes, job.relu, np_, pair,
                           half and k + pair == nv)
                if not whole:
                    for p in range(np_):
                        _copy(dst + p * n_filters, stage + p * ld_stage, width)
                p0 = p0 + np_
            f0 = f0 + nv * lanes


cdef void _pack_channels_last(const floating *weight, const floating *bias,
                              Py_ssize_t groups, Py_ssize_t per_group, Py_ssize_t depth,
                              Py_ssize_t ld, floating *packed,
                              floating *packed_bias) noexcept nogil:
    """packed[g, r, f] = weight[g * Fg + f, r], zero for f >= Fg (rows of whole vectors of
    filters), and the bias zero-padded the same way."""
    cdef Py_ssize_t g, r, f
    for g in range(groups):
        _transpose(weight + g * per_group * depth, depth, per_group, depth,
                   packed + g * depth * ld, ld)
        for r in range(depth):
            for f in range(per_group, ld):
                packed[(g * depth + r) * ld + f] = 0
        for f in range(ld):
            packed_bias[g * ld + f] = (bias[g * per_group + f]
                                       if bias != NULL and f < per_group else 0)


cdef int _channels_last_forward(
    const _Arg *x,                 # IN  (N, C, H, W) view of NHWC data (sc == 1 fastest)
    const floating *weight,        # IN  (F, Cg*KH*KW) C-contiguous
    const floating *bias,          # IN  (F,) or NULL (zero)
    Py_ssize_t groups, Py_ssize_t per_group,
    floating *out_data,            # OUT (N, OH*OW, F)
    floating *scratch_data,        # SCRATCH num_threads x scratch_per_thread, then the packed
                                   #     weights (G, depth, ld) and bias (G, ld)
    Py_ssize_t scratch_per_thread,
    const _Arg *row_src,           # IN  intp (row bands, slab rows) input row or -1
    const _Arg *col_src,           # IN  intp (1, slab width) input column or -1
    const _Arg *col_inner,         # IN  intp (1, 3) linear interior of col_src
    const _Arg *tap_rows,          # IN  intp (depth, 2) slab and weight offset per row
    const _Arg *pixel_offsets,     # IN  intp (rows_per_task * OW,) slab offset per pixel:
                                   #     within an output row stride_w apart
    Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t rows_per_task, Py_ssize_t stride_w,
    bint relu, int num_threads,
) except -1:
    """out = conv(x, weight) + bias (then ReLU) for a whole NHWC batch; see this file's
    header. The caller (ChannelsLastCall) has checked every size against the plan."""
    cdef Py_ssize_t lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t in_per_group = channels // groups
    cdef Py_ssize_t depth = tap_rows.shape[0]
    cdef Py_ssize_t ld = (per_group + lanes - 1) // lanes * lanes
    cdef Py_ssize_t row_blocks = (out_h + rows_per_task - 1) // rows_per_task
    cdef Py_ssize_t n_tasks = n_images * row_blocks
    cdef floating *packed = scratch_data + num_threads * scratch_per_thread
    cdef floating *packed_bias = packed + groups * depth * ld
    cdef long long work = (<long long>n_images * out_h * out_w * groups * per_group
                           * depth)
    cdef Py_ssize_t task
    cdef floating *slab = NULL
    if n_tasks == 0:
        return 0
    with nogil:
        _pack_channels_last(weight, bias, groups, per_group, depth, ld, packed, packed_bias)
    cdef _ChannelsLastJob job
    job.x, job.packed, job.bias, job.out = x.data, packed, packed_bias, out_data
    job.sn, job.sc, job.sh, job.sw = x.strides[0], x.strides[1], x.strides[2], x.strides[3]
    job.row_src, job.slab_rows = <const Py_ssize_t *>row_src.data, row_src.shape[1]
    job.col_src = <const Py_ssize_t *>col_src.data
    job.col_inner = <const Py_ssize_t *>col_inner.data
    job.tap_rows = <const Py_ssize_t *>tap_rows.data
    job.pixel_offsets = <const Py_ssize_t *>pixel_offsets.data
    job.slab_w, job.channels, job.groups = col_src.shape[1], channels, groups
    job.in_per_group, job.per_group, job.depth, job.ld, job.lanes = (
        in_per_group, per_group, depth, ld, lanes)
    job.out_h, job.out_w, job.rows_per_task, job.row_blocks = (out_h, out_w, rows_per_task,
                                                               row_blocks)
    job.stride_w, job.relu = stride_w, relu
    cdef Py_ssize_t slab_size = job.slab_rows * job.slab_w * channels
    cdef int master_cpu
    if num_threads > 1 and work > PARALLEL_WORK:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            slab = scratch_data + threadid() * scratch_per_thread
            for task in prange(n_tasks, schedule="dynamic"):
                _channels_last_task(&job, task, slab, slab + slab_size)
    else:
        with nogil:
            for task in range(n_tasks):
                _channels_last_task(&job, task, scratch_data, scratch_data + slab_size)
    return 0
