# Convolution kernels, compiled once per ISA level by the thin _conv_<level>.pyx files.
#
# conv2d is computed as a blocked GEMM per image without a full im2col: each task owns a
# block of output pixels x a chunk of output channels; it gathers the input taps of its pixel
# block into a thread-local panel B[r][j] (r = (c, kh, kw), j = pixel), one reduction block
# at a time, and runs the register-blocked micro-kernel (_conv_microkernel.h) over it. Padding
# of every mode, stride and dilation are resolved in the gather through index maps, so the
# micro-kernel never branches. Each output element is written by one task and reduced in a
# fixed order, so results are bit-identical for any thread count.

from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cython cimport floating


cdef extern from "_conv_microkernel.h" nogil:
    enum:
        FC_MR
        FC_NR_F32
        FC_NR_F64
    const char *FC_ISA_NAME
    void fc_microkernel_f32(Py_ssize_t depth, const float *a, const float *b, Py_ssize_t ldb,
                            float *c, Py_ssize_t ldc, const float *bias, int relu)
    void fc_microkernel_f64(Py_ssize_t depth, const double *a, const double *b, Py_ssize_t ldb,
                            double *c, Py_ssize_t ldc, const double *bias, int relu)


ISA = FC_ISA_NAME.decode()
MR = FC_MR                # output channels per micro-kernel tile (weights are packed by MR)
NR_FLOAT32 = FC_NR_F32    # output pixels per tile, float32
NR_FLOAT64 = FC_NR_F64    # output pixels per tile, float64


cdef inline void _microkernel(Py_ssize_t depth, const floating *a, const floating *b,
                              Py_ssize_t ldb, floating *c, Py_ssize_t ldc,
                              const floating *bias, bint relu) noexcept nogil:
    if floating is float:
        fc_microkernel_f32(depth, a, b, ldb, c, ldc, bias, relu)
    else:
        fc_microkernel_f64(depth, a, b, ldb, c, ldc, bias, relu)


cdef void _gather_panel(
    const floating *x,            # IN  input image n, channel 0 of the group; strides below
    Py_ssize_t sc, Py_ssize_t sh, Py_ssize_t sw,   # element strides of x (channel, row, col)
    const Py_ssize_t *row_src,    # IN  (OH*KH,) input row of (oh, kh), -1 = padding zero
    const Py_ssize_t *col_src,    # IN  (OW*KW,) input col of (ow, kw), -1 = padding zero
    const Py_ssize_t *col_inner,  # IN  (KW, 3) per kw: [first, end) of the ow whose input
                                  #     col is ow * stride + offset, and that offset
    Py_ssize_t stride_w, Py_ssize_t kh_count, Py_ssize_t kw_count, Py_ssize_t out_w,
    Py_ssize_t r0, Py_ssize_t r_len,   # reduction rows r0 .. r0+r_len of r = (c, kh, kw)
    Py_ssize_t p0, Py_ssize_t p_len, Py_ssize_t p_pad,  # pixels p0 .. p0+p_len, row length p_pad
    floating *panel,              # OUT (r_len, p_pad) gathered taps, zero past p_len
) noexcept nogil:
    cdef Py_ssize_t rr, r, c, kk, kh, kw, j, seg, k, oh, ow, src_row, src_col, lo, hi
    cdef Py_ssize_t taps = kh_count * kw_count
    cdef Py_ssize_t step = stride_w * sw
    cdef const floating *x_row
    cdef const floating *src
    cdef floating *dst
    for rr in range(r_len):
        r = r0 + rr
        c = r // taps
        kk = r - c * taps
        kh = kk // kw_count
        kw = kk - kh * kw_count
        dst = panel + rr * p_pad
        oh = p0 // out_w
        ow = p0 - oh * out_w
        j = 0
        while j < p_len:
            seg = out_w - ow
            if seg > p_len - j:
                seg = p_len - j
            src_row = row_src[oh * kh_count + kh]
            if src_row < 0:
                memset(dst + j, 0, seg * sizeof(floating))
            else:
                x_row = x + c * sc + src_row * sh
                # Interior columns map linearly (a copy); only the borders need the index map.
                lo = max(ow, min(col_inner[3 * kw], ow + seg))
                hi = max(lo, min(col_inner[3 * kw + 1], ow + seg))
                for k in range(ow, lo):
                    src_col = col_src[k * kw_count + kw]
                    dst[j + k - ow] = x_row[src_col * sw] if src_col >= 0 else 0
                src = x_row + (lo * stride_w + col_inner[3 * kw + 2]) * sw
                if step == 1:  # a loop, not memcpy: runs are short (one output row)
                    for k in range(hi - lo):
                        dst[j + lo - ow + k] = src[k]
                else:
                    for k in range(hi - lo):
                        dst[j + lo - ow + k] = src[k * step]
                for k in range(hi, ow + seg):
                    src_col = col_src[k * kw_count + kw]
                    dst[j + k - ow] = x_row[src_col * sw] if src_col >= 0 else 0
            j += seg
            oh += 1
            ow = 0
        if p_pad > p_len:
            memset(dst + p_len, 0, (p_pad - p_len) * sizeof(floating))


def conv2d_forward(
    const floating[:, :, :, :] x not None,       # IN  (N, C, H, W) any strides (NHWC = a view)
    const floating[:, :, :, ::1] packed_weight not None,  # IN  (G, FB, R, MR) see conv._pack
    const floating[:, ::1] packed_bias not None,  # IN  (G, FB*MR) bias, zero-padded
    const Py_ssize_t[::1] row_src not None,       # IN  (OH*KH,) input row per (oh, kh) or -1
    const Py_ssize_t[::1] col_src not None,       # IN  (OW*KW,) input col per (ow, kw) or -1
    const Py_ssize_t[:, ::1] col_inner not None,  # IN  (KW, 3) linear interior of col_src
    floating[:, :, ::1] out not None,             # OUT (N, F, OH*OW) or (N, OH*OW, F) if NHWC
    Py_ssize_t stride_w, Py_ssize_t kh_count, Py_ssize_t kw_count, Py_ssize_t out_w,
    Py_ssize_t filters_per_group,
    Py_ssize_t pixel_block, Py_ssize_t reduction_block, Py_ssize_t fblocks_per_task,
    bint channels_last, bint relu, int num_threads,
):
    """out = conv(x, weight) + bias (then ReLU), for a whole batch; see _conv.pxi's header."""
    cdef Py_ssize_t n_images = x.shape[0]
    cdef Py_ssize_t groups = packed_weight.shape[0]
    cdef Py_ssize_t fblocks = packed_weight.shape[1]
    cdef Py_ssize_t depth = packed_weight.shape[2]
    cdef Py_ssize_t in_per_group = x.shape[1] // groups
    cdef Py_ssize_t n_filters = filters_per_group * groups
    cdef Py_ssize_t out_pixels = out.shape[2] if not channels_last else out.shape[1]
    cdef Py_ssize_t nr = FC_NR_F32 if floating is float else FC_NR_F64
    cdef Py_ssize_t pixel_blocks = (out_pixels + pixel_block - 1) // pixel_block
    cdef Py_ssize_t fchunks = (fblocks + fblocks_per_task - 1) // fblocks_per_task
    cdef Py_ssize_t n_tasks = n_images * groups * fchunks * pixel_blocks
    cdef Py_ssize_t itemsize = sizeof(floating)
    cdef Py_ssize_t sn = x.strides[0] // itemsize, sc = x.strides[1] // itemsize
    cdef Py_ssize_t sh = x.strides[2] // itemsize, sw = x.strides[3] // itemsize
    cdef const floating *x_data = &x[0, 0, 0, 0] if x.size > 0 else NULL
    cdef floating *out_data = &out[0, 0, 0]
    cdef Py_ssize_t ld_out = out_pixels if not channels_last else n_filters
    # Per-thread scratch, allocated once before the parallel region: the gathered panel, a
    # tile for ragged edges, and (NHWC) the staging tile transposed into the output.
    cdef Py_ssize_t panel_size = reduction_block * pixel_block
    cdef Py_ssize_t edge_size = FC_MR * nr
    cdef Py_ssize_t stage_size = fblocks_per_task * FC_MR * pixel_block if channels_last else 0
    cdef Py_ssize_t scratch_per_thread = panel_size + edge_size + stage_size
    cdef Py_ssize_t task, n, g, fc, pb, p0, p_len, p_pad, fb0, fb1, fb, r0, r_len, j0, j_len
    cdef Py_ssize_t f_local, f_len, i, j, f
    cdef floating *scratch
    cdef floating *panel
    cdef floating *edge
    cdef floating *stage
    cdef floating *dst
    cdef const floating *bias_ptr
    cdef bint full_tile, last
    cdef long long work = <long long>n_images * out_pixels * n_filters * depth

    if n_tasks == 0:
        return
    scratch = <floating *>malloc(num_threads * scratch_per_thread * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("conv2d: cannot allocate per-thread scratch")
    with nogil, parallel(num_threads=num_threads, use_threads_if=work > 200000):
        panel = scratch + threadid() * scratch_per_thread
        edge = panel + panel_size
        stage = edge + edge_size
        for task in prange(n_tasks, schedule="dynamic"):
            pb = task % pixel_blocks
            fc = (task // pixel_blocks) % fchunks
            g = (task // (pixel_blocks * fchunks)) % groups
            n = task // (pixel_blocks * fchunks * groups)
            p0 = pb * pixel_block
            p_len = min(pixel_block, out_pixels - p0)
            p_pad = (p_len + nr - 1) // nr * nr
            fb0 = fc * fblocks_per_task
            fb1 = min(fb0 + fblocks_per_task, fblocks)
            r0 = 0
            while r0 < depth:
                r_len = min(reduction_block, depth - r0)
                last = r0 + r_len == depth
                _gather_panel(x_data + n * sn + g * in_per_group * sc, sc, sh, sw,
                              &row_src[0], &col_src[0], &col_inner[0, 0], stride_w,
                              kh_count, kw_count, out_w,
                              r0, r_len, p0, p_len, p_pad, panel)
                j0 = 0
                while j0 < p_len:
                    j_len = min(nr, p_len - j0)
                    for fb in range(fb0, fb1):
                        bias_ptr = &packed_bias[g, fb * FC_MR] if r0 == 0 else NULL
                        if channels_last:
                            # Stage rows (fb - fb0)*MR.. of the task's tile; full tiles only.
                            dst = stage + (fb - fb0) * FC_MR * pixel_block + j0
                            _microkernel(r_len, &packed_weight[g, fb, r0, 0], panel + j0,
                                         p_pad, dst, pixel_block, bias_ptr, relu and last)
                            continue
                        f_local = fb * FC_MR
                        f_len = min(FC_MR, filters_per_group - f_local)
                        f = g * filters_per_group + f_local
                        dst = out_data + (n * n_filters + f) * ld_out + p0 + j0
                        full_tile = f_len == FC_MR and j_len == nr
                        if full_tile:
                            _microkernel(r_len, &packed_weight[g, fb, r0, 0], panel + j0,
                                         p_pad, dst, ld_out, bias_ptr, relu and last)
                        else:
                            if r0 > 0:
                                for i in range(f_len):
                                    memcpy(edge + i * nr, dst + i * ld_out,
                                           j_len * sizeof(floating))
                            _microkernel(r_len, &packed_weight[g, fb, r0, 0], panel + j0,
                                         p_pad, edge, nr, bias_ptr, relu and last)
                            for i in range(f_len):
                                memcpy(dst + i * ld_out, edge + i * nr,
                                       j_len * sizeof(floating))
                    j0 = j0 + nr
                r0 = r0 + r_len
            if channels_last:
                # Transpose the staged (channel, pixel) tile into NHWC rows.
                for fb in range(fb0, fb1):
                    f_local = fb * FC_MR
                    f_len = min(FC_MR, filters_per_group - f_local)
                    f = g * filters_per_group + f_local
                    for j in range(p_len):
                        dst = out_data + (n * out_pixels + p0 + j) * ld_out + f
                        for i in range(f_len):
                            dst[i] = stage[((fb - fb0) * FC_MR + i) * pixel_block + j]
    free(scratch)
