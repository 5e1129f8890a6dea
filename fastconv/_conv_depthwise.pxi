# Depthwise convolution (one input channel per group), included by _conv.pxi, whose slab
# fill and copy-out it shares.
#
# A filter that sees one input channel is a small 2-D stencil: there is no reduction over
# channels, so _gemm_forward's MR-filter tile would be mostly empty and its slab, which
# repeats input rows per tap when the row stride is above 1, would cost more than the
# arithmetic. Here a task owns a band of output rows of one image and a chunk of groups
# (adjacent channels, so an NHWC input is copied pixel by pixel). It copies each channel's
# padded input rows into the slab once, split by stride phase, computes each filter's output
# rows directly from it (fc_stencil_rows: output row r reads tap (kh, kw) at slab row
# r * stride + kh * dilation), and copies the staged rows out like _gemm_forward. Every
# output element is computed by one task in a fixed order: bit-identical for any thread count.

cdef extern from "_conv_microkernel.h" nogil:
    void fc_stencil_rows_f32(Py_ssize_t taps, const float *w, const float *b, Py_ssize_t b_step,
                             const Py_ssize_t *b_offset, float *c, Py_ssize_t c_step,
                             Py_ssize_t n_rows, Py_ssize_t n, float bias, int relu)
    void fc_stencil_rows_f64(Py_ssize_t taps, const double *w, const double *b,
                             Py_ssize_t b_step, const Py_ssize_t *b_offset, double *c,
                             Py_ssize_t c_step, Py_ssize_t n_rows, Py_ssize_t n, double bias,
                             int relu)
    void fc_blocked_row_f32(Py_ssize_t taps, const float *w, const float *b,
                            Py_ssize_t b_step, const Py_ssize_t *b_offset, float *c,
                            Py_ssize_t n, const float *bias, int relu)
    void fc_blocked_row_f64(Py_ssize_t taps, const double *w, const double *b,
                            Py_ssize_t b_step, const Py_ssize_t *b_offset, double *c,
                            Py_ssize_t n, const double *bias, int relu)
    void fc_scale_f32(const float *b, float *c, Py_ssize_t n, float w, float bias, int relu,
                      int stream)
    void fc_scale_f64(const double *b, double *c, Py_ssize_t n, double w, double bias,
                      int relu, int stream)
    enum:
        FC_STREAM_MIN_BYTES


# A 1x1 depthwise filter (_depthwise_pointwise_band) writes outputs of at least
# FC_STREAM_MIN_BYTES (_simd.h, measured for ReLU) in non-temporal stores, in runs of at
# least POINTWISE_STREAM_RUN elements, one filter per channel. Measured on Zen 4,
# 2 threads, time with / without, one filter per channel: 64 x 138 maps of 28x28 0.83-0.84,
# 16 x 256 of 35x35 0.86-0.90, 2 x 209 of 112x112 0.84-0.87, 32 x 256 of 17x17 (runs of 289)
# 0.91-0.97; two filters per channel, 64 x 100 of 28x28: 1.26-1.29.
cdef enum:
    POINTWISE_STREAM_RUN = 512


LANES_FLOAT32 = FC_LANES_F32  # vector lanes: the depthwise kernel computes whole vectors
LANES_FLOAT64 = FC_LANES_F64


cdef inline void _stencil_rows(Py_ssize_t taps, const floating *w, const floating *b,
                               Py_ssize_t b_step, const Py_ssize_t *b_offset, floating *c,
                               Py_ssize_t c_step, Py_ssize_t n_rows, Py_ssize_t n,
                               floating bias, bint relu) noexcept nogil:
    if floating is float:
        fc_stencil_rows_f32(taps, w, b, b_step, b_offset, c, c_step, n_rows, n, bias, relu)
    else:
        fc_stencil_rows_f64(taps, w, b, b_step, b_offset, c, c_step, n_rows, n, bias, relu)


cdef inline void _blocked_row(Py_ssize_t taps, const floating *w, const floating *b,
                              Py_ssize_t b_step, const Py_ssize_t *b_offset, floating *c,
                              Py_ssize_t n, const floating *bias, bint relu) noexcept nogil:
    if floating is float:
        fc_blocked_row_f32(taps, w, b, b_step, b_offset, c, n, bias, relu)
    else:
        fc_blocked_row_f64(taps, w, b, b_step, b_offset, c, n, bias, relu)


ctypedef struct _DepthwiseJob:
    # What every task of one _depthwise_forward call shares (see _GemmJob).
    const void *x
    const void *weight
    const void *bias
    void *out
    Py_ssize_t sn, sc, sh, sw
    const Py_ssize_t *row_src
    Py_ssize_t slab_rows
    const Py_ssize_t *col_src
    const Py_ssize_t *col_inner
    const Py_ssize_t *offsets
    Py_ssize_t stride_h, stride_w, phases, pitch, channel_stride
    Py_ssize_t channels, per_channel, n_filters, taps
    Py_ssize_t row_blocks, chunks, rows_per_task, groups_per_task, out_h, out_w
    Py_ssize_t stage_row, filter_pitch, pooled_pixels, pool
    bint direct, relu, channels_last
    bint pointwise                # 1x1, stride 1, no padding, rows contiguous: x read in place
    bint stream                   # pointwise, one filter per channel, a large output:
                                  # non-temporal stores
    bint skip_padding             # blocked and every weight finite: rows of taps that read
                                  # zero padding skipped
    Py_ssize_t blocked            # lanes of a channel block, 0: planar (see _conv_plan)
    Py_ssize_t width              # input columns
    void *blocked_weights         # blocked: the weights as vectors (_pack_blocked_weights)


cdef void _depthwise_task(const _DepthwiseJob *job, Py_ssize_t task, floating *slab,
                          floating *stage) noexcept nogil:
    """One task of _depthwise_forward: a band of output rows of one image for a chunk of
    adjacent channels, into the thread's slab and staged rows."""
    cdef const floating *weight_data = <const floating *>job.weight
    cdef const floating *bias_data = <const floating *>job.bias
    cdef floating *out_data = <floating *>job.out
    cdef Py_ssize_t per_channel = job.per_channel, taps = job.taps, out_w = job.out_w
    cdef Py_ssize_t n_filters = job.n_filters, out_h = job.out_h
    cdef Py_ssize_t stride_pitch = job.stride_h * job.pitch
    cdef Py_ssize_t n, chunk, rb, oh0, rows, c0, cc, c, m, f
    cdef floating *dst
    cdef const floating *taps_f
    cdef floating bias_f
    rb = task % job.row_blocks
    chunk = (task // job.row_blocks) % job.chunks
    n = task // (job.row_blocks * job.chunks)
    oh0 = rb * job.rows_per_task
    rows = min(job.rows_per_task, out_h - oh0)
    c0 = chunk * job.groups_per_task
    cc = min(job.groups_per_task, job.channels - c0)
    if job.pointwise:
        _depthwise_pointwise_band(job, <const floating *>job.x, n, c0, cc, oh0, rows)
        return
    _fill_slab(<const floating *>job.x + n * job.sn + c0 * job.sc, job.sc, job.sh, job.sw, cc,
               job.row_src + rb * job.slab_rows, job.slab_rows, job.col_src, job.col_inner,
               job.stride_w, job.phases, job.pitch, slab)
    for c in range(cc):
        for m in range(per_channel):
            f = (c0 + c) * per_channel + m
            taps_f = weight_data + f * taps
            bias_f = bias_data[f] if bias_data != NULL else 0
            if job.direct:
                # Straight into the output rows: the junk lanes of a row land on the next row
                # of the same band, which is stored after them; only the band's last row goes
                # through the stage (its junk would reach another task's rows).
                dst = out_data + ((n * n_filters + f) * out_h + oh0) * out_w
                _stencil_rows(taps, taps_f, slab + c * job.channel_stride, stride_pitch,
                              job.offsets, dst, out_w, rows - 1, out_w, bias_f, job.relu)
                _stencil_rows(taps, taps_f,
                              slab + c * job.channel_stride + (rows - 1) * stride_pitch,
                              0, job.offsets, stage, 0, 1, out_w, bias_f, job.relu)
                _copy(dst + (rows - 1) * out_w, stage, out_w)
            else:
                _stencil_rows(taps, taps_f, slab + c * job.channel_stride, stride_pitch,
                              job.offsets, stage + (c * per_channel + m) * job.filter_pitch,
                              job.stage_row, rows, out_w, bias_f, job.relu)
    if not job.direct:
        _copy_out(stage, job.filter_pitch, job.stage_row, cc * per_channel, rows, oh0,
                  out_data + n * n_filters * job.pooled_pixels, c0 * per_channel, n_filters,
                  out_h, out_w, job.channels_last, job.pool)


cdef void _depthwise_pointwise_band(const _DepthwiseJob *job, const floating *x, Py_ssize_t n,
                                    Py_ssize_t c0, Py_ssize_t cc, Py_ssize_t oh0,
                                    Py_ssize_t rows) noexcept nogil:
    """_depthwise_task for 1x1 filters, stride 1, no padding, planes with contiguous rows
    (job.pointwise): each filter scales its channel's band, a run of rows * out_w pixels,
    read from x and written to the output in place (a copy into the slab would cost as much
    as the multiply-adds). x: job.x."""
    cdef const floating *weight_data = <const floating *>job.weight
    cdef const floating *bias_data = <const floating *>job.bias
    cdef Py_ssize_t pixels = rows * job.out_w
    cdef Py_ssize_t c, m, f
    cdef const floating *src
    cdef floating *dst
    cdef floating bias_f
    cdef bint stream = job.stream and pixels >= POINTWISE_STREAM_RUN
    for c in range(cc):
        src = x + n * job.sn + (c0 + c) * job.sc + oh0 * job.sh
        for m in range(job.per_channel):
            f = (c0 + c) * job.per_channel + m
            bias_f = bias_data[f] if bias_data != NULL else 0
            dst = <floating *>job.out + ((n * job.n_filters + f) * job.out_h + oh0) * job.out_w
            if floating is float:
                fc_scale_f32(src, dst, pixels, weight_data[f], bias_f, job.relu, stream)
            else:
                fc_scale_f64(src, dst, pixels, weight_data[f], bias_f, job.relu, stream)


cdef inline void _zero(floating *dst, Py_ssize_t n) noexcept nogil:
    """dst[:n] = 0 inline (a vector or two: memset's call would cost more)."""
    cdef Py_ssize_t k
    for k in range(n):
        dst[k] = 0


cdef inline Py_ssize_t _blocked_weights_size(Py_ssize_t channels, Py_ssize_t per_channel,
                                             Py_ssize_t taps, Py_ssize_t lanes) noexcept nogil:
    """Elements of _pack_blocked_weights' result (shared scratch of a blocked call)."""
    return (channels + lanes - 1) // lanes * per_channel * (taps + 1) * lanes


cdef void _pack_blocked_weights(
    const floating *weight,       # IN  (C * M, taps)
    const floating *bias,         # IN  (C * M,) or NULL (zero)
    Py_ssize_t channels, Py_ssize_t per_channel, Py_ssize_t taps, Py_ssize_t lanes,
    floating *packed,             # OUT per block of `lanes` channels: (M, taps + 1, lanes)
) noexcept nogil:
    """The channel-blocked kernel's weights and bias as vectors, once per call: lane i of
    filter m of a block is filter (c0 + i) * M + m, zero past the last channel; the bias
    follows each filter's taps."""
    cdef Py_ssize_t block, c0, m, lane, r, f
    cdef floating *dst = packed
    for block in range((channels + lanes - 1) // lanes):
        c0 = block * lanes
        for m in range(per_channel):
            for lane in range(lanes):
                f = (c0 + lane) * per_channel + m
                for r in range(taps):
                    dst[r * lanes + lane] = weight[f * taps + r] if c0 + lane < channels else 0
                dst[taps * lanes + lane] = (bias[f] if c0 + lane < channels and bias != NULL
                                            else 0)
            dst = dst + (taps + 1) * lanes


cdef void _depthwise_blocked_task(const _DepthwiseJob *job, Py_ssize_t task, floating *slab,
                                  floating *stage) noexcept nogil:
    """One task of the channel-blocked kernel: a band of output rows of one image for
    job.blocked adjacent channels, each in its own lane of every vector. The slab is
    (slab row, padded column, lane), the staged output (filter m, pixel, lane); after it,
    for NCHW, the band's input pixels (pixel, lane)."""
    cdef const floating *x_data = <const floating *>job.x
    cdef floating *out_data = <floating *>job.out
    cdef Py_ssize_t lanes = job.blocked, per_channel = job.per_channel, taps = job.taps
    cdef Py_ssize_t out_w = job.out_w, out_h = job.out_h, n_filters = job.n_filters
    cdef Py_ssize_t cols = job.pitch, sc = job.sc
    cdef Py_ssize_t n, chunk, rb, oh0, rows, c0, cc, row, col, lane, m, r, p, src_row, src_col
    cdef Py_ssize_t pixels
    cdef const floating *src
    cdef floating *dst
    rb = task % job.row_blocks
    chunk = (task // job.row_blocks) % job.chunks
    n = task // (job.row_blocks * job.chunks)
    oh0 = rb * job.rows_per_task
    rows = min(job.rows_per_task, out_h - oh0)
    pixels = rows * out_w
    c0 = chunk * lanes
    cc = min(lanes, job.channels - c0)
    # this block's filters, each its taps then its bias (_pack_blocked_weights)
    cdef const floating *weights = (<const floating *>job.blocked_weights
                                    + chunk * per_channel * (taps + 1) * lanes)
    # Fill: each padded pixel's channels into one vector (zeros: padding, lanes past cc).
    cdef const Py_ssize_t *row_src = job.row_src + rb * job.slab_rows
    cdef const floating *x_image = x_data + n * job.sn + c0 * sc
    cdef Py_ssize_t lo = job.col_inner[0], hi = job.col_inner[1], offset = job.col_inner[2]
    cdef Py_ssize_t width = job.width, first_row = -1, last_row = -1
    cdef floating *pixels_in = stage + per_channel * job.rows_per_task * out_w * lanes
    for row in range(job.slab_rows):
        if row_src[row] >= 0:
            first_row = row_src[row] if first_row < 0 else min(first_row, row_src[row])
            last_row = max(last_row, row_src[row])
    if not job.channels_last and sc != 1 and job.sw == 1 and job.sh == width and (
            0 <= first_row and last_row - first_row < job.slab_rows):
        # Planar channels with contiguous rows (NCHW): the band's input rows are one run of
        # pixels per channel, turned into (pixel, lane) by T x T register transposes; the
        # slab rows are then vector copies from it.
        if cc < lanes:
            memset(pixels_in, 0, (last_row - first_row + 1) * width * lanes * sizeof(floating))
        _transpose(x_image + first_row * width, sc, cc, (last_row - first_row + 1) * width,
                   pixels_in, lanes)
        for row in range(job.slab_rows):
            dst = slab + row * cols * lanes
            if row_src[row] < 0:
                memset(dst, 0, cols * lanes * sizeof(floating))
                continue
            src = pixels_in + (row_src[row] - first_row) * width * lanes
            _copy(dst + lo * lanes, src + (lo + offset) * lanes, (hi - lo) * lanes)
            for col in range(cols):
                if lo <= col < hi:
                    continue
                src_col = job.col_src[col]
                if src_col < 0:
                    _zero(dst + col * lanes, lanes)
                else:
                    _copy(dst + col * lanes, src + src_col * lanes, lanes)
    else:  # element by element (channels adjacent: a copy per pixel)
        for row in range(job.slab_rows):
            dst = slab + row * cols * lanes
            src_row = row_src[row]
            if src_row < 0 or cc < lanes:
                memset(dst, 0, cols * lanes * sizeof(floating))
            if src_row < 0:
                continue
            src = x_image + src_row * job.sh
            for col in range(cols):
                src_col = job.col_src[col]
                if src_col < 0:
                    _zero(dst + col * lanes, lanes)
                elif sc == 1:
                    _copy(dst + col * lanes, src + src_col * job.sw, cc)
                else:
                    for lane in range(cc):
                        dst[col * lanes + lane] = src[lane * sc + src_col * job.sw]
    # Each output row skips its first and last taps whose slab row is zero padding (-1 in
    # row_src; tap t reads slab row r * stride + offsets[t] // (cols * lanes)): a 7x7 map
    # under a 7x7 filter with padding 3 reads padding with a quarter of its rows of taps.
    # Not where a weight is infinite or NaN (job.skip_padding: its product with zero is NaN).
    cdef Py_ssize_t t0, t1
    for r in range(rows):
        t0, t1 = 0, taps
        while (job.skip_padding and t0 < t1
               and row_src[r * job.stride_h + job.offsets[t0] // (cols * lanes)] < 0):
            t0 = t0 + 1
        while (job.skip_padding and t1 > t0
               and row_src[r * job.stride_h + job.offsets[t1 - 1] // (cols * lanes)] < 0):
            t1 = t1 - 1
        for m in range(per_channel):
            _blocked_row(t1 - t0, weights + (m * (taps + 1) + t0) * lanes,
                         slab + r * job.stride_h * cols * lanes, job.stride_w * lanes,
                         job.offsets + t0, stage + (m * pixels + r * out_w) * lanes, out_w,
                         weights + (m * (taps + 1) + taps) * lanes, job.relu)
    # Copy out: lane i of filter m to output channel (c0 + i) * M + m.
    for m in range(per_channel):
        src = stage + m * pixels * lanes
        if job.channels_last:
            dst = out_data + (n * out_h + oh0) * out_w * n_filters + c0 * per_channel + m
            for p in range(pixels):
                if per_channel == 1:
                    _copy(dst + p * n_filters, src + p * lanes, cc)
                else:
                    for lane in range(cc):
                        dst[p * n_filters + lane * per_channel] = src[p * lanes + lane]
        else:  # lane i to its channel's plane, the planes of M filters apart
            _transpose(src, lanes, pixels, cc,
                       out_data + ((n * n_filters + c0 * per_channel + m) * out_h + oh0)
                       * out_w, per_channel * out_h * out_w)


cdef int _depthwise_forward(
    const _Arg *x,                 # IN  (N, C, H, W) any element strides
    const floating *weight_data,   # IN  (C*M, KH*KW): M filters per channel, C-contiguous
    const floating *bias_data,     # IN  (C*M,) or NULL (zero)
    floating *out_data,            # OUT (N, C*M, OH*OW) or (N, OH*OW, C*M) if NHWC; with
                                   #     pool (PH*PW)
    floating *scratch_data,        # SCRATCH num_threads x scratch_per_thread, then (blocked)
                                   #     _blocked_weights_size(...) elements
    const _Arg *row_src,           # IN  intp (row bands, slab rows) input row or -1
    const _Arg *col_src,           # IN  intp (P, pitch) input col per slab column or -1
    const _Arg *col_inner,         # IN  intp (P, 3) linear interior of col_src
    const _Arg *tap_offset,        # IN  intp (KH*KW,) slab offset of tap (kh, kw)
    Py_ssize_t per_channel, Py_ssize_t taps, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t rows_per_task, Py_ssize_t groups_per_task, Py_ssize_t stage_row,
    Py_ssize_t slab_size, bint channels_last, bint relu, Py_ssize_t pool, int num_threads,
    Py_ssize_t blocked,            # lanes per channel block (0: planar), see _conv_plan
) except -1:
    """out = depthwise conv(x, weight) + bias (then ReLU, then pool x pool / pool max
    pooling when pool > 1) for a whole batch; see this file's header. With pooling,
    rows_per_task is a multiple of pool. The caller (_DepthwiseCall) has checked every size
    against the plan."""
    cdef const floating *x_data = <const floating *>x.data
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t n_filters = channels * per_channel
    cdef Py_ssize_t phases = col_src.shape[0], pitch = col_src.shape[1]
    cdef Py_ssize_t slab_rows = row_src.shape[1]
    cdef Py_ssize_t channel_stride = phases * slab_rows * pitch  # slab elements per channel
    cdef Py_ssize_t row_blocks = (out_h + rows_per_task - 1) // rows_per_task
    cdef Py_ssize_t chunks = (channels + groups_per_task - 1) // groups_per_task
    cdef Py_ssize_t n_tasks = n_images * chunks * row_blocks
    cdef Py_ssize_t filter_pitch = rows_per_task * stage_row   # staged rows of one filter
    cdef Py_ssize_t scratch_per_thread = slab_size + groups_per_task * per_channel * filter_pitch
    if blocked and not channels_last:  # the band's input pixels as vectors
        scratch_per_thread += slab_rows * x.shape[3] * blocked
    cdef Py_ssize_t sn = x.strides[0], sc = x.strides[1], sh = x.strides[2], sw = x.strides[3]
    cdef const Py_ssize_t *offsets = <const Py_ssize_t *>tap_offset.data
    cdef Py_ssize_t out_pixels = out_h * out_w
    cdef Py_ssize_t pooled_pixels = (out_h // pool) * (out_w // pool) if pool > 1 else out_pixels
    cdef Py_ssize_t task
    cdef floating *slab = NULL
    cdef floating *stage = NULL
    cdef long long work = <long long>n_images * out_pixels * n_filters * taps
    # NCHW without pooling: output rows are written in place (see the task loop), when a
    # row's junk lanes reach no further than the next row.
    cdef bint direct = not channels_last and pool <= 1 and stage_row - out_w <= out_w
    # A 1x1 filter at stride 1 without padding (output and input planes the same size)
    # scales its channel: contiguous input rows are read in place, the output written in
    # place.
    cdef bint pointwise = (not channels_last and pool <= 1 and taps == 1
                           and stride_h == 1 and stride_w == 1
                           and out_h == x.shape[2] and out_w == x.shape[3] and sw == 1
                           and sh == out_w)

    if n_tasks == 0:
        return 0
    cdef _DepthwiseJob job
    job.x, job.weight, job.bias, job.out = x_data, weight_data, bias_data, out_data
    job.sn, job.sc, job.sh, job.sw = sn, sc, sh, sw
    job.row_src, job.slab_rows = <const Py_ssize_t *>row_src.data, slab_rows
    job.col_src = <const Py_ssize_t *>col_src.data
    job.col_inner = <const Py_ssize_t *>col_inner.data
    job.offsets = offsets
    job.stride_h, job.stride_w, job.phases, job.pitch = stride_h, stride_w, phases, pitch
    job.channel_stride, job.channels, job.per_channel, job.n_filters = (
        channel_stride, channels, per_channel, n_filters)
    job.taps, job.row_blocks, job.chunks = taps, row_blocks, chunks
    job.rows_per_task, job.groups_per_task, job.out_h, job.out_w = (
        rows_per_task, groups_per_task, out_h, out_w)
    job.stage_row, job.filter_pitch, job.pooled_pixels, job.pool = (
        stage_row, filter_pitch, pooled_pixels, pool)
    job.direct, job.relu, job.channels_last = direct, relu, channels_last
    job.pointwise = pointwise and not blocked
    job.stream = (job.pointwise and per_channel == 1
                  and n_images * n_filters * out_pixels * sizeof(floating)
                  >= FC_STREAM_MIN_BYTES)
    job.skip_padding = blocked and _all_finite(weight_data, n_filters * taps)
    job.blocked, job.width = blocked, x.shape[3]
    if blocked:  # after every thread's scratch: the weights as vectors, shared by the tasks
        job.blocked_weights = scratch_data + num_threads * scratch_per_thread
        _pack_blocked_weights(weight_data, bias_data, channels, per_channel, taps, blocked,
                              <floating *>job.blocked_weights)
    # The slab's slack is read only by junk lanes past out_w, which are dropped. Small or
    # one-thread calls run the tasks in order outside OpenMP (see _gemm_forward).
    cdef int master_cpu
    if num_threads > 1 and work > PARALLEL_WORK:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            slab = scratch_data + threadid() * scratch_per_thread
            stage = slab + slab_size
            for task in prange(n_tasks, schedule="dynamic"):
                if blocked:
                    _depthwise_blocked_task(&job, task, slab, stage)
                else:
                    _depthwise_task(&job, task, slab, stage)
    else:
        with nogil:
            for task in range(n_tasks):
                if blocked:
                    _depthwise_blocked_task(&job, task, scratch_data, scratch_data + slab_size)
                else:
                    _depthwise_task(&job, task, scratch_data, scratch_data + slab_size)
    return 0
