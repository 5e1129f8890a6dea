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
    const floating[:, :, :, :] x not None,       # IN  (N, C, H, W) any strides (NHWC = a view)
    const floating[:, :, ::1] weight not None,   # IN  (C, M, KH*KW): M filters per channel
    const floating[::1] bias not None,           # IN  (C*M,)
    const Py_ssize_t[:, ::1] row_src not None,   # IN  (row bands, slab rows) input row or -1
    const Py_ssize_t[:, ::1] col_src not None,   # IN  (P, pitch) input col per slab column or -1
    const Py_ssize_t[:, ::1] col_inner not None, # IN  (P, 3) linear interior of col_src
    const Py_ssize_t[::1] tap_offset not None,   # IN  (KH*KW,) slab offset of tap (kh, kw)
    floating[:, :, ::1] out not None,            # OUT (N, C*M, OH*OW) or (N, OH*OW, C*M) if
                                                 #     NHWC; with pool: PH*PW pixels
    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t rows_per_task, Py_ssize_t groups_per_task, Py_ssize_t stage_row,
    Py_ssize_t slab_size,
    floating[::1] scratch not None,              # SCRATCH num_threads x (slab + staged rows)
    bint channels_last, bint relu, Py_ssize_t pool, int num_threads,
):
    """out = depthwise conv(x, weight) + bias (then ReLU, then pool x pool / pool max
    pooling when pool > 1) for a whole batch; see _conv_depthwise.pxi's header.
    With pooling, rows_per_task is a multiple of pool."""
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t per_channel = weight.shape[1], taps = weight.shape[2]
    cdef Py_ssize_t n_filters = channels * per_channel
    cdef Py_ssize_t phases = col_src.shape[0], pitch = col_src.shape[1]
    cdef Py_ssize_t slab_rows = row_src.shape[1]
    cdef Py_ssize_t channel_stride = phases * slab_rows * pitch  # slab elements per channel
    cdef Py_ssize_t row_blocks = (out_h + rows_per_task - 1) // rows_per_task
    cdef Py_ssize_t chunks = (channels + groups_per_task - 1) // groups_per_task
    cdef Py_ssize_t n_tasks = n_images * chunks * row_blocks
    cdef Py_ssize_t filter_pitch = rows_per_task * stage_row   # staged rows of one filter
    cdef Py_ssize_t scratch_per_thread = slab_size + groups_per_task * per_channel * filter_pitch
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t sn = x.strides[0] // itemsize, sc = x.strides[1] // itemsize
    cdef Py_ssize_t sh = x.strides[2] // itemsize, sw = x.strides[3] // itemsize
    cdef const floating *x_data = &x[0, 0, 0, 0] if x.size > 0 else NULL
    cdef floating *out_data = &out[0, 0, 0]
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

    if n_tasks == 0:
        return
    if scratch.shape[0] < num_threads * scratch_per_thread:
        raise ValueError("depthwise_conv2d_forward: scratch too small for the plan")
    # The slab's slack is read only by junk lanes past out_w, which are dropped.
    with nogil, parallel(num_threads=num_threads, use_threads_if=work > 200000):
        slab = &scratch[0] + threadid() * scratch_per_thread
        stage = slab + slab_size
        for task in prange(n_tasks, schedule="dynamic"):
            rb = task % row_blocks
            chunk = (task // row_blocks) % chunks
            n = task // (row_blocks * chunks)
            oh0 = rb * rows_per_task
            rows = min(rows_per_task, out_h - oh0)
            c0 = chunk * groups_per_task
            cc = min(groups_per_task, channels - c0)
            _fill_slab(x_data + n * sn + c0 * sc, sc, sh, sw, cc, &row_src[rb, 0], slab_rows,
                       &col_src[0, 0], &col_inner[0, 0], stride_w, phases, pitch, slab)
            for c in range(cc):
                for m in range(per_channel):
                    f = (c0 + c) * per_channel + m
                    if direct:
                        # Straight into the output rows: the junk lanes of a row land on the
                        # next row of the same band, which is stored after them; only the
                        # band's last row goes through the stage (its junk would reach
                        # another task's rows).
                        dst = out_data + ((n * n_filters + f) * out_h + oh0) * out_w
                        _stencil_rows(taps, &weight[c0 + c, m, 0], slab + c * channel_stride,
                                      stride_h * pitch, &tap_offset[0], dst, out_w,
                                      rows - 1, out_w, bias[f], relu)
                        _stencil_rows(taps, &weight[c0 + c, m, 0],
                                      slab + c * channel_stride + (rows - 1) * stride_h * pitch,
                                      0, &tap_offset[0], stage, 0, 1, out_w, bias[f], relu)
                        _copy(dst + (rows - 1) * out_w, stage, out_w)
                    else:
                        _stencil_rows(taps, &weight[c0 + c, m, 0], slab + c * channel_stride,
                                      stride_h * pitch, &tap_offset[0],
                                      stage + (c * per_channel + m) * filter_pitch, stage_row,
                                      rows, out_w, bias[f], relu)
            if not direct:
                _copy_out(stage, filter_pitch, stage_row, cc * per_channel, rows, oh0,
                          out_data + n * n_filters * pooled_pixels, c0 * per_channel,
                          n_filters, out_h, out_w, channels_last, pool)
