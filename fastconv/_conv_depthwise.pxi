# Depthwise convolution (one input channel per group), included by _conv.pxi, whose slab
# fill and copy-out it shares.
#
# A filter that sees one input channel is a small 2-D stencil: there is no reduction over
# channels, so conv2d_forward's MR-filter tile would be mostly empty and its slab, which
# repeats input rows per tap when the row stride is above 1, would cost more than the
# arithmetic. Here a task owns a band of output rows of one image and a chunk of groups
# (adjacent channels, so an NHWC input is copied pixel by pixel). It copies each channel's
# padded input rows into the slab once, split by stride phase, computes each filter's output
# rows directly from it (fc_stencil_rows: output row r reads tap (kh, kw) at slab row
# r * stride + kh * dilation), and copies the staged rows out like conv2d_forward. Every
# output element is computed by one task in a fixed order: bit-identical for any thread count.

cdef extern from "_conv_microkernel.h" nogil:
    void fc_stencil_rows_f32(Py_ssize_t taps, const float *w, const float *b, Py_ssize_t b_step,
                             const Py_ssize_t *b_offset, float *c, Py_ssize_t c_step,
                             Py_ssize_t n_rows, Py_ssize_t n, float bias, int relu)
    void fc_stencil_rows_f64(Py_ssize_t taps, const double *w, const double *b,
                             Py_ssize_t b_step, const Py_ssize_t *b_offset, double *c,
                             Py_ssize_t c_step, Py_ssize_t n_rows, Py_ssize_t n, double bias,
                             int relu)


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


def depthwise_conv2d_forward(
    x,                     # IN  (N, C, H, W) float32/float64, any strides (NHWC = a view)
    weight,                # IN  (C*M, 1, KH, KW) or (C, M, KH*KW): M filters per channel,
                           #     C-contiguous
    bias,                  # IN  (C*M,) or None (zero)
    row_src,               # IN  intp (row bands, slab rows) input row or -1
    col_src,               # IN  intp (P, pitch) input col per slab column or -1
    col_inner,             # IN  intp (P, 3) linear interior of col_src
    tap_offset,            # IN  intp (KH*KW,) slab offset of tap (kh, kw)
    out,                   # OUT (N, C*M, OH, OW) or (N, OH, OW, C*M) if NHWC, C-contiguous,
                           #     any shape of that size; with pool: PH, PW
    Py_ssize_t multiplier, Py_ssize_t taps,   # M filters per channel, KH*KW taps per filter
    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t rows_per_task, Py_ssize_t groups_per_task, Py_ssize_t stage_row,
    Py_ssize_t slab_size,
    scratch,               # SCRATCH num_threads x (slab + staged rows)
    bint channels_last, bint relu, Py_ssize_t pool, int num_threads,
):
    """out = depthwise conv(x, weight) + bias (then ReLU, then pool x pool / pool max
    pooling when pool > 1) for a whole batch; see _conv_depthwise.pxi's header.
    With pooling, rows_per_task is a multiple of pool. The arrays are C-contiguous (but x)
    and of one float dtype; the plan tables are intp."""
    cdef int t = _float_type(x)
    cdef _Arg xv, wv, bv, rs, cs, ci, to, ov, sv
    _arg(x, "x", t, 4, False, False, &xv)
    _arg(weight, "weight", t, -1, False, True, &wv)
    bv.data = NULL
    bv.shape[0] = 0
    if bias is not None:
        _arg(bias, "bias", t, -1, False, True, &bv)
    _arg(row_src, "row_src", cnp.NPY_INTP, 2, False, True, &rs)
    _arg(col_src, "col_src", cnp.NPY_INTP, 2, False, True, &cs)
    _arg(col_inner, "col_inner", cnp.NPY_INTP, 2, False, True, &ci)
    _arg(tap_offset, "tap_offset", cnp.NPY_INTP, 1, False, True, &to)
    _arg(out, "out", t, -1, True, True, &ov)
    _arg(scratch, "scratch", t, 1, True, True, &sv)
    if t == cnp.NPY_FLOAT32:
        _depthwise_forward(<const float *>xv.data, <const float *>wv.data,
                           <const float *>bv.data, <float *>ov.data, <float *>sv.data,
                           &xv, &wv, &bv, &rs, &cs, &ci, &to, &ov, multiplier, taps, stride_h,
                           stride_w, out_h,
                           out_w, rows_per_task, groups_per_task, stage_row, slab_size, &sv,
                           channels_last, relu, pool, num_threads)
    else:
        _depthwise_forward(<const double *>xv.data, <const double *>wv.data,
                           <const double *>bv.data, <double *>ov.data, <double *>sv.data,
                           &xv, &wv, &bv, &rs, &cs, &ci, &to, &ov, multiplier, taps, stride_h,
                           stride_w, out_h,
                           out_w, rows_per_task, groups_per_task, stage_row, slab_size, &sv,
                           channels_last, relu, pool, num_threads)


cdef int _depthwise_forward(
    const floating *x_data, const floating *weight_data, const floating *bias_data,
    floating *out_data, floating *scratch_data,
    const _Arg *x, const _Arg *weight, const _Arg *bias, const _Arg *row_src,
    const _Arg *col_src, const _Arg *col_inner, const _Arg *tap_offset, const _Arg *out,
    Py_ssize_t per_channel, Py_ssize_t taps, Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t rows_per_task, Py_ssize_t groups_per_task, Py_ssize_t stage_row,
    Py_ssize_t slab_size, const _Arg *scratch,
    bint channels_last, bint relu, Py_ssize_t pool, int num_threads,
) except -1:
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
    cdef Py_ssize_t sn = x.strides[0], sc = x.strides[1], sh = x.strides[2], sw = x.strides[3]
    cdef const Py_ssize_t *offsets = <const Py_ssize_t *>tap_offset.data
    cdef Py_ssize_t out_pixels = out_h * out_w
    cdef Py_ssize_t pooled_pixels = (out_h // pool) * (out_w // pool) if pool > 1 else out_pixels
    cdef Py_ssize_t task, n, chunk, rb, oh0, rows, c0, cc, c, m, f
    cdef floating *slab
    cdef floating *stage
    cdef long long work = <long long>n_images * out_pixels * n_filters * taps
    # NCHW without pooling: output rows are written in place (see the task loop), when a
    # row's junk lanes reach no further than the next row.
    cdef bint direct = not channels_last and pool <= 1 and stage_row - out_w <= out_w
    cdef floating *dst
    cdef const floating *taps_f
    cdef floating bias_f

    if n_tasks == 0:
        return 0
    if scratch.shape[0] < num_threads * scratch_per_thread:
        raise ValueError("depthwise_conv2d_forward: scratch too small for the plan")
    if (weight.shape[0] != n_filters * taps or (bias_data != NULL and bias.shape[0] != n_filters)
            or tap_offset.shape[0] < taps or row_src.shape[0] < row_blocks
            or col_inner.shape[0] != phases
            or out.shape[0] != n_images * n_filters * pooled_pixels):
        raise ValueError("depthwise_conv2d_forward: weight, bias or out do not match the plan")
    # The slab's slack is read only by junk lanes past out_w, which are dropped.
    with nogil, parallel(num_threads=num_threads, use_threads_if=work > 200000):
        slab = scratch_data + threadid() * scratch_per_thread
        stage = slab + slab_size
        for task in prange(n_tasks, schedule="dynamic"):
            rb = task % row_blocks
            chunk = (task // row_blocks) % chunks
            n = task // (row_blocks * chunks)
            oh0 = rb * rows_per_task
            rows = min(rows_per_task, out_h - oh0)
            c0 = chunk * groups_per_task
            cc = min(groups_per_task, channels - c0)
            _fill_slab(x_data + n * sn + c0 * sc, sc, sh, sw, cc,
                       <const Py_ssize_t *>row_src.data + rb * slab_rows, slab_rows,
                       <const Py_ssize_t *>col_src.data, <const Py_ssize_t *>col_inner.data,
                       stride_w, phases, pitch, slab)
            for c in range(cc):
                for m in range(per_channel):
                    f = (c0 + c) * per_channel + m
                    taps_f = weight_data + f * taps
                    bias_f = bias_data[f] if bias_data != NULL else 0
                    if direct:
                        # Straight into the output rows: the junk lanes of a row land on the
                        # next row of the same band, which is stored after them; only the
                        # band's last row goes through the stage (its junk would reach
                        # another task's rows).
                        dst = out_data + ((n * n_filters + f) * out_h + oh0) * out_w
                        _stencil_rows(taps, taps_f, slab + c * channel_stride,
                                      stride_h * pitch, offsets, dst, out_w,
                                      rows - 1, out_w, bias_f, relu)
                        _stencil_rows(taps, taps_f,
                                      slab + c * channel_stride + (rows - 1) * stride_h * pitch,
                                      0, offsets, stage, 0, 1, out_w, bias_f, relu)
                        _copy(dst + (rows - 1) * out_w, stage, out_w)
                    else:
                        _stencil_rows(taps, taps_f, slab + c * channel_stride,
                                      stride_h * pitch, offsets,
                                      stage + (c * per_channel + m) * filter_pitch, stage_row,
                                      rows, out_w, bias_f, relu)
            if not direct:
                _copy_out(stage, filter_pitch, stage_row, cc * per_channel, rows, oh0,
                          out_data + n * n_filters * pooled_pixels, c0 * per_channel,
                          n_filters, out_h, out_w, channels_last, pool)
    return 0
