# Convolution kernels, compiled once per ISA level by the thin _conv_<level>.pyx files.
#
# conv2d runs as an implicit GEMM without im2col. A task owns a band of output rows of one
# image and a chunk of filters. For each chunk of input channels it copies the input rows its
# band needs into a thread-local *slab* (rows in blocks laid out by _conv_plan), padded
# (every padding mode), and with columns split by stride phase. In that slab the taps of
# (c, kh, kw) for consecutive output pixels are consecutive, so the micro-kernel
# (_conv_microkernel.h) reads each reduction row r = (c, kh, kw) as a plain window at a fixed
# offset. Output pixels are numbered over a row pitch a little wider than the output row;
# the extra "junk" columns are computed and dropped when the staged tile is copied out.
# 1x1 layers read x in place instead (rows contiguous), or, with deep chunks of channels,
# each tile's rows packed into a contiguous panel. Small maps may stack several images in a
# task: their pixels, gathered compactly from the slab into panels, fill whole vectors.
# Each output element is written by one task and reduced in a fixed order, so results are
# bit-identical for any thread count.

cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from cython cimport floating

cnp.import_array()

# A chunk's slab at most this big is swept once per block of filters (see _gemm_task).
# A slab of one phase per tap (_conv_plan._column_maps's per_tap) holds kw copies of each
# input row, and a tile's window spans them all, so the per-tile loop keeps it in L1 no
# better: up to TAP_SLAB_BYTES it is swept too (measured on Zen 4, 2 threads, sweep / per
# tile: 0.82-1.03 on 3x3 layers of 9x9 to 40x40 maps, 7 in float32 and 5 in float64).
cdef enum:
    L1_SLAB_BYTES = 16 * 1024
    TAP_SLAB_BYTES = 64 * 1024
# Tiles accumulate straight into the output (see _gemm_task) when a micro-kernel call
# reduces over at most this many rows: then its stores, not its multiply-adds, set the pace.
cdef enum:
    OUT_SWEEP_DEPTH = 32


cdef extern from "_conv_microkernel.h" nogil:
    enum:
        FC_MR
        FC_NV
        FC_NR_F32
        FC_NR_F64
        FC_ROW_NR_F32
        FC_ROW_NR_F64
    const char *FC_ISA_NAME
    enum:
        FC_PEAK_CHAINS
        FC_LANES_F32
        FC_LANES_F64
        FC_HALF_TAIL
        FC_COMPRESS
    float fc_peak_probe_f32(Py_ssize_t iterations)
    double fc_peak_probe_f64(Py_ssize_t iterations)
    void fc_prefetch_span(const void *p, Py_ssize_t bytes)
    void fc_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t bytes)
    void fc_copy_f32(float *dst, const float *src, Py_ssize_t n)
    void fc_copy_f64(double *dst, const double *src, Py_ssize_t n)
    void fc_gather_f32(float *dst, const float *src, const Py_ssize_t *index, Py_ssize_t n)
    void fc_gather_f64(double *dst, const double *src, const Py_ssize_t *index, Py_ssize_t n)
    enum:
        FC_SHORT_ROWS
        FC_SHORT_PHASES
    void fc_fill_short_rows_f32(const float *x, Py_ssize_t sc, Py_ssize_t sh,
                                Py_ssize_t channels, const Py_ssize_t *row_src,
                                Py_ssize_t slab_rows, const Py_ssize_t *col_src,
                                Py_ssize_t phases, Py_ssize_t pitch, Py_ssize_t width,
                                float *slab)
    void fc_fill_short_rows_f64(const double *x, Py_ssize_t sc, Py_ssize_t sh,
                                Py_ssize_t channels, const Py_ssize_t *row_src,
                                Py_ssize_t slab_rows, const Py_ssize_t *col_src,
                                Py_ssize_t phases, Py_ssize_t pitch, Py_ssize_t width,
                                double *slab)
    float fc_max_nan_f32(float a, float b)
    double fc_max_nan_f64(double a, double b)
    void fc_max_rows_f32(float *top, const float *row, Py_ssize_t n)
    void fc_max_rows_f64(double *top, const double *row, Py_ssize_t n)
    void fc_max_pairs_f32(float *dst, Py_ssize_t step, const float *src, Py_ssize_t n)
    void fc_max_pairs_f64(double *dst, Py_ssize_t step, const double *src, Py_ssize_t n)
    enum:
        FC_TRANSPOSE_F32
        FC_TRANSPOSE_F64
        FC_TRANSPOSE16_F32
    void fc_transpose_f32(float *dst, Py_ssize_t ld_dst, const float *src, Py_ssize_t ld_src)
    void fc_transpose16_f32(float *dst, Py_ssize_t ld_dst, const float *src,
                            Py_ssize_t ld_src)
    void fc_transpose16_rows_f32(float *dst, Py_ssize_t ld_dst, const float *src,
                                 Py_ssize_t ld_src, Py_ssize_t n)
    bint fc_all_finite_f32(const float *a, Py_ssize_t n)
    bint fc_all_finite_f64(const double *a, Py_ssize_t n)
    void fc_transpose_f64(double *dst, Py_ssize_t ld_dst, const double *src, Py_ssize_t ld_src)
    void fc_microkernel_f32(Py_ssize_t depth, const float *a, const float *b,
                            const Py_ssize_t *b_offset, float *c, Py_ssize_t ldc,
                            const float *c_in, Py_ssize_t ldc_in, const float *bias, int relu,
                            int nv, int half)
    void fc_microkernel_f64(Py_ssize_t depth, const double *a, const double *b,
                            const Py_ssize_t *b_offset, double *c, Py_ssize_t ldc,
                            const double *c_in, Py_ssize_t ldc_in, const double *bias, int relu,
                            int nv, int half)
    void fc_microkernel_rows_f32(Py_ssize_t depth, const float *a, Py_ssize_t lda,
                                 const float *b, const Py_ssize_t *b_offset, float *c,
                                 Py_ssize_t ldc, const float *c_in, Py_ssize_t ldc_in,
                                 const float *bias, int relu, int nv, int half)
    void fc_microkernel_rows_f64(Py_ssize_t depth, const double *a, Py_ssize_t lda,
                                 const double *b, const Py_ssize_t *b_offset, double *c,
                                 Py_ssize_t ldc, const double *c_in, Py_ssize_t ldc_in,
                                 const double *bias, int relu, int nv, int half)
    void fc_microkernel_run_f32(Py_ssize_t depth, const float *a, const float *b,
                                const Py_ssize_t *b_offset, float *c, Py_ssize_t ldc,
                                const float *c_in, Py_ssize_t ldc_in, const float *bias, int relu,
                                Py_ssize_t ntiles)
    void fc_microkernel_run_f64(Py_ssize_t depth, const double *a, const double *b,
                                const Py_ssize_t *b_offset, double *c, Py_ssize_t ldc,
                                const double *c_in, Py_ssize_t ldc_in, const double *bias, int relu,
                                Py_ssize_t ntiles)
    void fc_microkernel_rows_run_f32(Py_ssize_t depth, const float *a, Py_ssize_t lda,
                                     const float *b, const Py_ssize_t *b_offset, float *c,
                                     Py_ssize_t ldc, const float *c_in, Py_ssize_t ldc_in,
                                     const float *bias, int relu, Py_ssize_t ntiles)
    void fc_microkernel_rows_run_f64(Py_ssize_t depth, const double *a, Py_ssize_t lda,
                                     const double *b, const Py_ssize_t *b_offset, double *c,
                                     Py_ssize_t ldc, const double *c_in, Py_ssize_t ldc_in,
                                     const double *bias, int relu, Py_ssize_t ntiles)
    void fc_microkernel_compress_f32(Py_ssize_t depth, const float *a, Py_ssize_t lda,
                                     const float *b, const Py_ssize_t *b_offset, float *c,
                                     Py_ssize_t ldc, const float *c_in, Py_ssize_t ldc_in,
                                     const float *bias, int relu, int nv,
                                     const unsigned int *cmask, const Py_ssize_t *coff,
                                     int crows, Py_ssize_t ntiles)
    void fc_microkernel_compress_f64(Py_ssize_t depth, const double *a, Py_ssize_t lda,
                                     const double *b, const Py_ssize_t *b_offset, double *c,
                                     Py_ssize_t ldc, const double *c_in, Py_ssize_t ldc_in,
                                     const double *bias, int relu, int nv,
                                     const unsigned int *cmask, const Py_ssize_t *coff,
                                     int crows, Py_ssize_t ntiles)
    void fc_microkernel_rows2_f32(Py_ssize_t depth, const float *a, Py_ssize_t lda,
                                  const float *b, const Py_ssize_t *b_offset, float *c,
                                  Py_ssize_t ldc, const float *bias, int relu, int half)
    void fc_microkernel_rows2_f64(Py_ssize_t depth, const double *a, Py_ssize_t lda,
                                  const double *b, const Py_ssize_t *b_offset, double *c,
                                  Py_ssize_t ldc, const double *bias, int relu, int half)
    void fc_microkernel_row_f32(Py_ssize_t depth, const float *a, const float *b,
                                const Py_ssize_t *b_offset, float *c, const float *bias, int relu)
    void fc_microkernel_row_f64(Py_ssize_t depth, const double *a, const double *b,
                                const Py_ssize_t *b_offset, double *c, const double *bias,
                                int relu)


cdef extern from "_threads.h" nogil:
    int fc_current_cpu()
    void fc_leave_master_cpu(int master_cpu)


ISA = FC_ISA_NAME.decode()
# 1x1 convolutions read x in place while a chunk of channels spans at most this (see
# _gemm_forward), an L2's worth, or has at most DIRECT_STREAMS channels, streams that the
# hardware prefetcher follows over any plane size (measured on Zen 4, 2 threads, in place
# / slab: 5-16 channels of 112x112 and 224x224, 0.78-0.92; 1x1 layers of 16 groups,
# 0.64-0.70; at 24-32 channels 0.94-1.11, so not there).
cdef enum:
    DIRECT_SPAN_BYTES = 256 * 1024
    DIRECT_STREAMS = 16
# Calls with less work (multiply-adds) than this run on one thread: waking a second costs more.
cdef enum:
    PARALLEL_WORK = 200000
MR = FC_MR                # output channels per micro-kernel tile (filters go in blocks of MR)
NR_FLOAT32 = FC_NR_F32    # output pixels per tile, float32
NR_FLOAT64 = FC_NR_F64    # output pixels per tile, float64
ROW_NR_FLOAT32 = FC_ROW_NR_F32  # output pixels per tile of the one-filter (depthwise) kernel
ROW_NR_FLOAT64 = FC_ROW_NR_F64
HALF_TAIL = bool(FC_HALF_TAIL)  # a tile's last vector may be a half vector (_half_tail)


def peak_probe(str dtype, Py_ssize_t iterations):
    """Run the peak probe of _simd.h (independent vector multiply-adds) on this thread for
    ``iterations`` steps: ``(floating-point operations done, checksum)``. Timing it gives this
    core's peak GF/s at this ISA level (fastconv._bench.peak_gflops); the checksum keeps the
    compiler from dropping the work."""
    cdef bint single = dtype == "float32"
    cdef double checksum
    with nogil:
        checksum = fc_peak_probe_f32(iterations) if single else fc_peak_probe_f64(iterations)
    lanes = FC_LANES_F32 if single else FC_LANES_F64
    return 2 * FC_PEAK_CHAINS * lanes * iterations, checksum


# Kernel arguments arrive as NumPy arrays and are read through _Arg views: typed memoryview
# arguments cost ~0.4 us each to acquire, most of the time of a small call.
ctypedef struct _Arg:
    char *data
    Py_ssize_t shape[4]
    Py_ssize_t strides[4]   # in elements


cdef int _arg(object array, str name, int typenum, int ndim, bint writeable, bint contiguous,
              _Arg *view) except -1:
    """Check a kernel argument against what the kernel assumes of it (conv.py guarantees
    all of it; this guards the kernel against any other caller) and describe it in view.
    ndim = -1: a C-contiguous array of any shape, read as a flat run of view.shape[0]."""
    if not cnp.PyArray_Check(array):
        raise TypeError(f"{name} must be a NumPy array, got {type(array).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>array
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(a)
    cdef int k
    contiguous = contiguous or ndim == -1
    if (cnp.PyArray_TYPE(a) != typenum or (ndim != -1 and cnp.PyArray_NDIM(a) != ndim)
            or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a)
            or (writeable and not cnp.PyArray_ISWRITEABLE(a))
            or (contiguous and not cnp.PyArray_IS_C_CONTIGUOUS(a))):
        flags = array.flags
        raise ValueError(f"{name}: a {array.ndim}-D {array.dtype} array (aligned "
                         f"{flags.aligned}, writeable {flags.writeable}, C-contiguous "
                         f"{flags.c_contiguous}) does not fit the kernel ("
                         f"{'any' if ndim == -1 else ndim}-D "
                         f"{cnp.PyArray_DescrFromType(typenum)})")
    view.data = cnp.PyArray_BYTES(a)
    if ndim == -1:
        view.shape[0] = cnp.PyArray_SIZE(a)
        view.strides[0] = 1
        return 0
    for k in range(ndim):
        if cnp.PyArray_STRIDES(a)[k] % itemsize:
            raise ValueError(f"{name}: strides {array.strides} are not whole elements")
        view.shape[k] = cnp.PyArray_DIMS(a)[k]
        view.strides[k] = cnp.PyArray_STRIDES(a)[k] // itemsize
    return 0


cdef int _float_type(object x) except -1:
    """NPY_FLOAT32 or NPY_FLOAT64: the dtype x (and every other floating argument) has."""
    if cnp.PyArray_Check(x) and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT32:
        return cnp.NPY_FLOAT32
    return cnp.NPY_FLOAT64  # anything else is refused by _arg


def array_key(*arrays):
    """What conv2d's validation and plan depend on in these arrays (None allowed), as bytes:
    per array its dimensions, strides, type number, alignment and byte order. Built in C:
    reading shape, strides, dtype and flags from Python costs ~0.7 us per call."""
    cdef Py_ssize_t fields[4 * (2 * cnp.NPY_MAXDIMS + 4)]
    cdef Py_ssize_t n = 0, k
    cdef cnp.ndarray a
    if len(arrays) > 4:
        raise ValueError("array_key takes at most 4 arrays")
    for array in arrays:
        if array is None:
            fields[n] = -1
            n += 1
            continue
        if not cnp.PyArray_Check(array):
            raise TypeError(f"array_key takes NumPy arrays or None, got {type(array).__name__}")
        a = <cnp.ndarray>array
        fields[n] = cnp.PyArray_NDIM(a)
        fields[n + 1] = cnp.PyArray_TYPE(a)
        fields[n + 2] = cnp.PyArray_ISALIGNED(a) + 2 * cnp.PyArray_ISNOTSWAPPED(a)
        n += 3
        for k in range(cnp.PyArray_NDIM(a)):
            fields[n] = cnp.PyArray_DIMS(a)[k]
            fields[n + 1] = cnp.PyArray_STRIDES(a)[k]
            n += 2
    return (<char *>fields)[:n * sizeof(Py_ssize_t)]


cdef inline void _microkernel(Py_ssize_t depth, const floating *a, Py_ssize_t lda,
                              const floating *b, const Py_ssize_t *b_offset, floating *c,
                              Py_ssize_t ldc, const floating *c_in, Py_ssize_t ldc_in,
                              const floating *bias, bint relu, int nv,
                              bint half) noexcept nogil:
    """One tile (fc_microkernel): a packed panel if lda is 0, else FC_MR filters in place,
    lda apart (fc_microkernel_rows)."""
    if floating is float:
        if lda:
            fc_microkernel_rows_f32(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in, bias,
                                    relu, nv, half)
        else:
            fc_microkernel_f32(depth, a, b, b_offset, c, ldc, c_in, ldc_in, bias, relu, nv,
                               half)
    else:
        if lda:
            fc_microkernel_rows_f64(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in, bias,
                                    relu, nv, half)
        else:
            fc_microkernel_f64(depth, a, b, b_offset, c, ldc, c_in, ldc_in, bias, relu, nv,
                               half)


cdef inline void _microkernel_run(Py_ssize_t depth, const floating *a, Py_ssize_t lda,
                                  const floating *b, const Py_ssize_t *b_offset, floating *c,
                                  Py_ssize_t ldc, const floating *c_in, Py_ssize_t ldc_in,
                                  const floating *bias, bint relu,
                                  Py_ssize_t ntiles) noexcept nogil:
    """ntiles whole tiles side by side (fc_microkernel_run), a and lda as _microkernel's."""
    if floating is float:
        if lda:
            fc_microkernel_rows_run_f32(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in,
                                        bias, relu, ntiles)
        else:
            fc_microkernel_run_f32(depth, a, b, b_offset, c, ldc, c_in, ldc_in, bias, relu,
                                   ntiles)
    else:
        if lda:
            fc_microkernel_rows_run_f64(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in,
                                        bias, relu, ntiles)
        else:
            fc_microkernel_run_f64(depth, a, b, b_offset, c, ldc, c_in, ldc_in, bias, relu,
                                   ntiles)


cdef inline void _microkernel_compress(
        Py_ssize_t depth, const floating *a, Py_ssize_t lda, const floating *b,
        const Py_ssize_t *b_offset, floating *c, Py_ssize_t ldc, const floating *c_in,
        Py_ssize_t ldc_in, const floating *bias, bint relu, int nv, const unsigned int *cmask,
        const Py_ssize_t *coff, int crows, Py_ssize_t ntiles) noexcept nogil:
    """Tiles straight to the output, junk columns dropped (fc_microkernel_compress)."""
    if floating is float:
        fc_microkernel_compress_f32(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in, bias,
                                    relu, nv, cmask, coff, crows, ntiles)
    else:
        fc_microkernel_compress_f64(depth, a, lda, b, b_offset, c, ldc, c_in, ldc_in, bias,
                                    relu, nv, cmask, coff, crows, ntiles)


cdef inline void _microkernel_rows2(Py_ssize_t depth, const floating *a, Py_ssize_t lda,
                                    const floating *b, const Py_ssize_t *b_offset, floating *c,
                                    Py_ssize_t ldc, const floating *bias,
                                    bint relu, bint half) noexcept nogil:
    if floating is float:
        fc_microkernel_rows2_f32(depth, a, lda, b, b_offset, c, ldc, bias, relu, half)
    else:
        fc_microkernel_rows2_f64(depth, a, lda, b, b_offset, c, ldc, bias, relu, half)


cdef inline void _microkernel_row(Py_ssize_t depth, const floating *a, const floating *b,
                                  const Py_ssize_t *b_offset, floating *c,
                                  const floating *bias, bint relu) noexcept nogil:
    if floating is float:
        fc_microkernel_row_f32(depth, a, b, b_offset, c, bias, relu)
    else:
        fc_microkernel_row_f64(depth, a, b, b_offset, c, bias, relu)


cdef void _transpose(
    const floating *src, Py_ssize_t ld_src,  # IN  (rows, cols), rows ld_src apart
    Py_ssize_t rows, Py_ssize_t cols,
    floating *dst, Py_ssize_t ld_dst,        # OUT (cols, rows), rows ld_dst apart
) noexcept nogil:
    """dst[c * ld_dst + r] = src[r * ld_src + c]: square blocks through register transposes,
    the edges element by element (NHWC copy-out: filters x pixels of an output row; the
    channel-blocked depthwise kernel: channels x pixels and back). float32 at AVX-512 takes
    16 x 16 blocks first, then 8 x 8 for what is left."""
    cdef Py_ssize_t c0, r0
    cdef Py_ssize_t rows16 = rows - rows % 16, cols16 = cols - cols % 16
    if floating is float:
        if FC_TRANSPOSE16_F32 and rows16 and cols16:
            for c0 in range(0, cols16, 16):
                for r0 in range(0, rows16, 16):
                    fc_transpose16_f32(dst + c0 * ld_dst + r0, ld_dst, src + r0 * ld_src + c0,
                                       ld_src)
            # the rows past the 16-blocks, then the columns past them
            _transpose_blocks(src + rows16 * ld_src, ld_src, rows - rows16, cols,
                              dst + rows16, ld_dst)
            _transpose_blocks(src + cols16, ld_src, rows16, cols - cols16,
                              dst + cols16 * ld_dst, ld_dst)
            return
    _transpose_blocks(src, ld_src, rows, cols, dst, ld_dst)


cdef void _transpose_blocks(const floating *src, Py_ssize_t ld_src, Py_ssize_t rows,
                            Py_ssize_t cols, floating *dst, Py_ssize_t ld_dst) noexcept nogil:
    """_transpose in blocks of FC_TRANSPOSE_* (8 x 8 float32, 4 x 4 float64)."""
    cdef Py_ssize_t t = FC_TRANSPOSE_F32 if floating is float else FC_TRANSPOSE_F64
    cdef Py_ssize_t c0, r0, c, r
    c0 = 0
    while c0 + t <= cols:
        r0 = 0
        while r0 + t <= rows:
            if floating is float:
                fc_transpose_f32(dst + c0 * ld_dst + r0, ld_dst, src + r0 * ld_src + c0,
                                 ld_src)
            else:
                fc_transpose_f64(dst + c0 * ld_dst + r0, ld_dst, src + r0 * ld_src + c0,
                                 ld_src)
            r0 = r0 + t
        for c in range(c0, c0 + t):
            for r in range(r0, rows):
                dst[c * ld_dst + r] = src[r * ld_src + c]
        c0 = c0 + t
    for c in range(c0, cols):
        for r in range(rows):
            dst[c * ld_dst + r] = src[r * ld_src + c]


cdef inline bint _all_finite(const floating *a, Py_ssize_t n) noexcept nogil:
    """Whether a[:n] holds no infinity and no NaN. Kernels skip products with zero padding
    only then: inf * 0 and NaN * 0 are NaN."""
    if floating is float:
        return fc_all_finite_f32(a, n)
    return fc_all_finite_f64(a, n)


cdef inline void _copy(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_copy_f32(dst, src, n)
    else:
        fc_copy_f64(dst, src, n)


cdef inline void _copy_strided(floating *dst, const floating *src, Py_ssize_t step,
                               Py_ssize_t n) noexcept nogil:
    """dst[k] = src[k * step] for k < n."""
    cdef Py_ssize_t k
    if step == 1:
        _copy(dst, src, n)
    elif step == 2:  # a constant step vectorises (through lane permutes)
        for k in range(n):
            dst[k] = src[2 * k]
    elif step == 3:
        for k in range(n):
            dst[k] = src[3 * k]
    elif step == 4:
        for k in range(n):
            dst[k] = src[4 * k]
    else:
        for k in range(n):
            dst[k] = src[k * step]


cdef void _fill_slab(
    const floating *x,            # IN  input image n, first channel of the chunk
    Py_ssize_t sc, Py_ssize_t sh, Py_ssize_t sw,   # element strides of x (channel, row, col)
    Py_ssize_t channels,          # channels in this chunk
    const Py_ssize_t *row_src,    # IN  (slab_rows,) input row of each slab row, -1 = zero
    Py_ssize_t slab_rows,
    const Py_ssize_t *col_src,    # IN  (P, pitch) input col of slab column (phase, q), -1 = 0
    const Py_ssize_t *col_inner,  # IN  (P, 3) per phase: [first, end) of the q whose input
                                  #     col is q * stride + offset, and that offset
    Py_ssize_t stride_w, Py_ssize_t phases, Py_ssize_t pitch,
    floating *slab,               # OUT (channels, P, slab_rows, pitch)
) noexcept nogil:
    cdef Py_ssize_t c, ph, row, k, j, src_row, src_col, lo, hi, offset
    cdef Py_ssize_t step = stride_w * sw
    cdef Py_ssize_t t = FC_TRANSPOSE_F32 if floating is float else FC_TRANSPOSE_F64
    cdef Py_ssize_t channel_stride = phases * slab_rows * pitch
    # Channels adjacent in memory (NHWC): walk pixels and spread each pixel's channels,
    # instead of striding through the row once per channel.
    cdef bint channels_minor = sc == 1 and channels > 1
    cdef const floating *x_row
    cdef const floating *next_rows
    cdef const floating *src
    cdef floating *dst
    cdef Py_ssize_t lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef Py_ssize_t width = 0  # the input columns the slab reads: up to the last one
    if FC_SHORT_ROWS and sw == 1 and pitch <= 2 * lanes and phases <= FC_SHORT_PHASES:
        for k in range(phases * pitch):
            width = max(width, col_src[k] + 1)
        if width <= 2 * lanes:  # short rows (small maps): one or two vectors per input row
            if floating is float:
                fc_fill_short_rows_f32(x, sc, sh, channels, row_src, slab_rows, col_src,
                                       phases, pitch, width, slab)
            else:
                fc_fill_short_rows_f64(x, sc, sh, channels, row_src, slab_rows, col_src,
                                       phases, pitch, width, slab)
            return
    # Rows outer, phases inner: a strided input row is read once from L2 for all its phases.
    for row in range(slab_rows):
        src_row = row_src[row]
        for ph in range(phases):
            dst = slab + (ph * slab_rows + row) * pitch   # channel 0; channel c is + c * stride
            if src_row < 0:
                for c in range(channels):
                    memset(dst + c * channel_stride, 0, pitch * sizeof(floating))
                continue
            lo = col_inner[3 * ph]
            hi = col_inner[3 * ph + 1]
            offset = col_inner[3 * ph + 2]
            x_row = x + src_row * sh
            # Borders (padding of every mode) through the index map.
            for c in range(channels):
                for k in range(lo):
                    src_col = col_src[ph * pitch + k]
                    dst[c * channel_stride + k] = (x_row[c * sc + src_col * sw]
                                                   if src_col >= 0 else 0)
                for k in range(hi, pitch):
                    src_col = col_src[ph * pitch + k]
                    dst[c * channel_stride + k] = (x_row[c * sc + src_col * sw]
                                                   if src_col >= 0 else 0)
            # The interior maps linearly: a copy (or a strided copy) per channel row.
            if channels_minor:
                # T x T blocks (pixels x channels) through register transposes, then the rest.
                k = lo
                while k + t <= hi:
                    src = x_row + (k * stride_w + offset) * sw
                    c = 0
                    while c + t <= channels:
                        if floating is float:
                            fc_transpose_f32(dst + c * channel_stride + k, channel_stride,
                                             src + c, step)
                        else:
                            fc_transpose_f64(dst + c * channel_stride + k, channel_stride,
                                             src + c, step)
                        c = c + t
                    for c in range(c, channels):
                        for j in range(t):
                            dst[c * channel_stride + k + j] = src[j * step + c]
                    k = k + t
                for k in range(k, hi):
                    src = x_row + (k * stride_w + offset) * sw
                    for c in range(channels):
                        dst[c * channel_stride + k] = src[c]
            elif channels == 1 or ph > 0 or row + 1 == slab_rows or row_src[row + 1] < 0:
                for c in range(channels):
                    _copy_strided(dst + c * channel_stride + lo,
                                  x_row + c * sc + (lo * stride_w + offset) * sw, step, hi - lo)
            else:
                # Many channels' rows, planes apart: ask for the next slab row's input rows
                # while copying these (see fc_prefetch_span). One channel's rows are one
                # stream, which the hardware prefetcher follows: the loop above. (One loop
                # with the prefetch under a test ran depthwise layers 4-15% slower.)
                next_rows = x + row_src[row + 1] * sh + (lo * stride_w + offset) * sw
                for c in range(channels):
                    fc_prefetch_span(next_rows + c * sc, (hi - lo) * step * sizeof(floating))
                    _copy_strided(dst + c * channel_stride + lo,
                                  x_row + c * sc + (lo * stride_w + offset) * sw, step, hi - lo)


cdef void _max_pool_rows(
    floating *src,                # IN  (rows, pitch) one filter's staged band (overwritten)
    Py_ssize_t pitch, Py_ssize_t pool, Py_ssize_t pooled_rows, Py_ssize_t pooled_w,
    floating *dst, Py_ssize_t dst_step,   # OUT pooled pixel p at dst[p * dst_step]
) noexcept nogil:
    """pool x pool / pool max pooling of a staged band, NaN propagating: the rows of each
    window are reduced into its top row (vectorised), then across columns."""
    cdef Py_ssize_t pr, pc, a, b, width = pooled_w * pool
    cdef floating m
    cdef floating *top
    for pr in range(pooled_rows):
        top = src + pr * pool * pitch
        for a in range(1, pool):
            if floating is float:
                fc_max_rows_f32(top, top + a * pitch, width)
            else:
                fc_max_rows_f64(top, top + a * pitch, width)
        if pool == 2:
            if floating is float:
                fc_max_pairs_f32(dst + pr * pooled_w * dst_step, dst_step, top, pooled_w)
            else:
                fc_max_pairs_f64(dst + pr * pooled_w * dst_step, dst_step, top, pooled_w)
            continue
        for pc in range(pooled_w):
            m = top[pc * pool]
            for b in range(1, pool):
                if floating is float:
                    m = fc_max_nan_f32(m, top[pc * pool + b])
                else:
                    m = fc_max_nan_f64(m, top[pc * pool + b])
            dst[(pr * pooled_w + pc) * dst_step] = m


cdef void _copy_out(
    floating *stage,              # IN  staged tile: filter i, row r at i * filter_pitch
    Py_ssize_t filter_pitch,      #     + r * row_pitch (pooling overwrites it)
    Py_ssize_t row_pitch, Py_ssize_t f_len, Py_ssize_t rows, Py_ssize_t oh0,
    floating *out_image,          # OUT one image's output: (F, OH*OW) or (OH*OW, F) if NHWC;
                                  #     with pool: (F, PH*PW) or (PH*PW, F)
    Py_ssize_t f, Py_ssize_t n_filters, Py_ssize_t out_h, Py_ssize_t out_w,
    bint channels_last, Py_ssize_t pool,
) noexcept nogil:
    """Copy output rows oh0 .. oh0 + rows of filters f .. f + f_len from the staged tile,
    dropping its junk columns, or max-pool them (pool > 1; rows is a multiple of pool)."""
    cdef Py_ssize_t i, row, pr0, pr_len, pooled_h, pooled_w
    cdef floating *dst
    if pool > 1:
        pooled_h = out_h // pool
        pooled_w = out_w // pool
        pr0 = oh0 // pool
        pr_len = min(rows // pool, pooled_h - pr0)
        for i in range(f_len):
            if channels_last:
                dst = out_image + pr0 * pooled_w * n_filters + f + i
            else:
                dst = out_image + (f + i) * pooled_h * pooled_w + pr0 * pooled_w
            _max_pool_rows(stage + i * filter_pitch, row_pitch, pool, pr_len, pooled_w, dst,
                           n_filters if channels_last else 1)
    elif not channels_last:
        for i in range(f_len):
            dst = out_image + ((f + i) * out_h + oh0) * out_w
            for row in range(rows):
                _copy(dst + row * out_w, stage + i * filter_pitch + row * row_pitch, out_w)
    else:  # transpose: a pixel's channels are contiguous in NHWC
        for row in range(rows):
            _transpose(stage + row * row_pitch, filter_pitch, f_len, out_w,
                       out_image + (oh0 + row) * out_w * n_filters + f, n_filters)


ctypedef struct _GemmJob:
    # What every task of one _gemm_forward call shares (see there); arrays as void pointers
    # (a struct cannot have fused types), read as the call's float type.
    const void *x
    const void *filters
    const void *packed
    const void *packed_bias
    void *out
    Py_ssize_t sn, sc, sh, sw
    const Py_ssize_t *bands
    Py_ssize_t slab_rows
    const Py_ssize_t *col_src
    const Py_ssize_t *col_inner
    const Py_ssize_t *offsets
    const Py_ssize_t *x_offsets
    const Py_ssize_t *panel_offsets   # (FC_NV, panel_rows): row r of a panel of nv vectors
                                      # at [nv - 1, r]
    const Py_ssize_t *pixel_src       # stacked: slab position of each of a task's pixels
    Py_ssize_t panel_base, panel_rows, images_per_task, image_slab, n_images
    Py_ssize_t stride_w, phases, pitch, slab_channel  # slab_channel: slab_rows * pitch
    Py_ssize_t sweep_bytes            # a chunk's slab up to this size: swept per block
    Py_ssize_t in_per_group, channels_per_chunk
    Py_ssize_t row_blocks, rows_per_task, out_h, out_w
    Py_ssize_t groups, filters_per_group, n_filters
    Py_ssize_t fchunks, fblocks, fblocks_per_task, inplace_blocks, packed_blocks
    Py_ssize_t depth, taps, nr, stage_pitch, out_pixels, pooled_pixels, pool, wrap
    bint direct, panels, one_filter, relu, channels_last, out_direct, out_sweep, compress
    const unsigned int *vec_mask      # compress: real lanes of vector k of a band (k * lanes)
    const Py_ssize_t *vec_off         # compress: output offset of its first real pixel


cdef inline (const floating *, const Py_ssize_t *) _tile_input(
        const _GemmJob *job, const floating *x_chunk, floating *slab, Py_ssize_t oh0,
        Py_ssize_t tiles_end, Py_ssize_t j0, Py_ssize_t cc, int nv) noexcept nogil:
    """Where the tile of nv vectors at pixel j0 reads its reduction rows: its panel, x
    itself (direct, whole tiles) or the slab."""
    if job.panels:
        return (slab + job.panel_base + cc * job.taps * j0,
                job.panel_offsets + (nv - 1) * job.panel_rows)
    if j0 < tiles_end:
        return x_chunk + oh0 * job.sh + j0, job.x_offsets
    return slab + j0, job.offsets


cdef inline int _tile_vectors(Py_ssize_t j0, Py_ssize_t q_len, Py_ssize_t lanes) noexcept nogil:
    """Vectors of pixels in the tile at pixel j0 of a band of q_len pixels: FC_NV, except
    that the last two tiles share what is left when one whole tile would leave a lone short
    one (3 + 1 vectors -> 2 + 2): FC_MR x 1 accumulators are too few chains to hide the
    FMA latency, so the lone vector costs nearly as much as a whole tile."""
    cdef Py_ssize_t rest = (q_len - j0 + lanes - 1) // lanes
    if rest <= FC_NV:
        return <int>rest
    if rest < 2 * FC_NV:
        return <int>(rest - rest // 2)
    return FC_NV


cdef inline bint _half_tail(Py_ssize_t j0, Py_ssize_t q_len, int nv,
                            Py_ssize_t lanes) noexcept nogil:
    """Whether the tile of nv vectors at item j0 of a run of q_len items (a band's pixels, a
    task's filters) computes its last vector as a half vector (FC_HALF_TAIL): at most half
    of its lanes fall inside the run. A 7x7 map over a pitch of 8 then computes 3.5 vectors
    of 16 lanes, not 4."""
    return FC_HALF_TAIL and q_len - j0 - (nv - 1) * lanes <= lanes // 2


cdef inline bint _whole_vectors(Py_ssize_t width, Py_ssize_t lanes) noexcept nogil:
    """Whether a row of width pixels is whole vectors, its last one a half vector at most
    (FC_HALF_TAIL)."""
    return width % lanes == 0 or (FC_HALF_TAIL and width % lanes == lanes // 2)


cdef inline Py_ssize_t _tile_width(int nv, bint half, Py_ssize_t lanes) noexcept nogil:
    """The pixels a tile of nv vectors writes, its last one half (_half_tail) or not."""
    return nv * lanes - (lanes // 2 if half else 0)


cdef inline Py_ssize_t _whole_tiles_end(Py_ssize_t q_len, Py_ssize_t lanes) noexcept nogil:
    """Where the band's tiles (see _tile_vectors) stop lying wholly inside it: q_len, or the
    start of a last tile whose final vector reaches past it."""
    cdef Py_ssize_t j0 = 0, width
    if q_len % lanes == 0:
        return q_len
    while True:
        width = _tile_vectors(j0, q_len, lanes) * lanes
        if j0 + width >= q_len:
            return j0
        j0 = j0 + width


cdef inline Py_ssize_t _row_offset(const _GemmJob *job, Py_ssize_t j0,
                                   Py_ssize_t width) noexcept nogil:
    """With junk columns: where the tile of ``width`` pixels at j0 starts in its band's
    output rows if it lies within one output row's columns (then _gemm_tile writes it
    there), else -1."""
    cdef Py_ssize_t row = j0 // job.pitch
    cdef Py_ssize_t col = j0 - row * job.pitch
    return row * job.out_w + col if col + width <= job.out_w else -1


cdef inline Py_ssize_t _tile_run(const _GemmJob *job, Py_ssize_t j0, Py_ssize_t end,
                                 bint to_out, bint row_tiles, Py_ssize_t lanes) noexcept nogil:
    """How many tiles from pixel j0 of a sweep to ``end`` _gemm_tile computes in one call:
    the whole tiles of FC_NV vectors that _tile_vectors gives from there (1 if fewer than
    two). They lie inside the band, so they read x in place (direct) as a single tile there
    would; but not where each tile has its own panel, nor where tiles written to the output
    (to_out) could straddle two of its rows (junk columns, not tiled row by row), unless
    they drop the junk as they store (job.compress)."""
    cdef Py_ssize_t rest = (end - j0 + lanes - 1) // lanes
    cdef Py_ssize_t n = (rest - FC_NV) // FC_NV if rest >= 2 * FC_NV else 0
    if rest - n * FC_NV == FC_NV and (end - j0) % lanes == 0:  # the last tile is whole too
        n = n + 1
    if n < 2 or job.panels or (to_out and not row_tiles and job.pitch != job.out_w
                               and not job.compress):
        return 1
    return n


cdef void _copy_staged_tiles(const _GemmJob *job, const floating *stage, Py_ssize_t q_len,
                             bint all_tiles, floating *out_plane,
                             Py_ssize_t lanes) noexcept nogil:
    """With junk columns: copy one filter's staged band to its output rows, the tiles that
    _gemm_tile did not write there (all of them if all_tiles), without the junk."""
    cdef Py_ssize_t j0 = 0, width, q, end, row, row_end
    cdef int nv
    while j0 < q_len:
        nv = _tile_vectors(j0, q_len, lanes)
        width = nv * lanes
        if all_tiles or _row_offset(job, j0, _tile_width(nv, _half_tail(j0, q_len, nv, lanes),
                                                         lanes)) < 0:
            q = j0
            end = min(j0 + width, q_len)
            while q < end:  # each output row the tile touches: its valid columns
                row = q // job.pitch
                row_end = min(end, row * job.pitch + job.out_w)
                if q < row_end:
                    _copy(out_plane + row * job.out_w + q - row * job.pitch, stage + q,
                          row_end - q)
                q = (row + 1) * job.pitch
        j0 = j0 + width


cdef inline void _gemm_tile(
        const _GemmJob *job, const floating *x_chunk, floating *slab, floating *stage,
        Py_ssize_t g, Py_ssize_t fb, Py_ssize_t fb0, Py_ssize_t c0, Py_ssize_t cc,
        Py_ssize_t oh0, Py_ssize_t tiles_end, Py_ssize_t j0, int nv, bint half,
        bint relu, bint pair, floating *out_band, Py_ssize_t out_end,
        Py_ssize_t ntiles) noexcept nogil:
    """One micro-kernel call of _gemm_task: block fb of MR filters x the tile of nv vectors
    at pixel j0, over channels c0 .. c0 + cc, into the staged tile, or straight into the
    output (out_band != NULL: the band's rows in the group's first output plane) if its
    blocks hold real filters only and the tile lies within the band's whole tiles (no junk
    columns, j0 < out_end) or within one output row (_row_offset). pair:
    blocks fb and fb + 1 (both read in place) x one vector (nv = 1), in one call. half: the
    tile's last vector is a half vector (_half_tail). ntiles > 1: that many whole tiles of
    FC_NV vectors from j0 (_tile_run), in one call."""
    cdef const floating *filters = <const floating *>job.filters
    cdef const floating *packed = <const floating *>job.packed
    cdef const floating *packed_bias = <const floating *>job.packed_bias
    cdef Py_ssize_t depth = job.depth, taps = job.taps
    cdef const floating *b
    cdef const Py_ssize_t *b_rows
    b, b_rows = _tile_input(job, x_chunk, slab, oh0, tiles_end, j0, cc, nv)
    cdef const floating *bias_ptr = (packed_bias + (g * job.fblocks + fb) * FC_MR
                                     if c0 == 0 else NULL)
    cdef floating *c = stage + (fb - fb0) * FC_MR * job.stage_pitch + j0
    cdef Py_ssize_t ldc = job.stage_pitch
    # The block's filters in place (valid for fb < inplace_blocks), else its packed panel
    cdef const floating *a = (filters + (g * job.filters_per_group + fb * FC_MR) * depth
                              + c0 * taps)
    cdef Py_ssize_t lda = depth
    if fb >= job.inplace_blocks:
        a = packed + ((g * job.packed_blocks + fb - job.inplace_blocks) * depth
                      + c0 * taps) * FC_MR
        lda = 0
    cdef unsigned int cmask[FC_NV]
    cdef Py_ssize_t coff[FC_NV]
    cdef Py_ssize_t k0, rest, lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef int v, crows
    if job.compress and out_band != NULL:
        # Straight to the output, junk columns dropped (fc_microkernel_compress); the partial
        # sums (if any) from the staged tile. out_end: the band's length (see _gemm_task).
        # A run's tiles lie inside the band; a single tile may reach past its last row.
        k0 = j0 // lanes
        crows = <int>min(FC_MR, job.filters_per_group - fb * FC_MR)
        if ntiles > 1:
            _microkernel_compress(cc * taps, a, lda, b, b_rows,
                                  out_band + fb * FC_MR * job.out_pixels, job.out_pixels, c,
                                  ldc, bias_ptr, relu, FC_NV, job.vec_mask + k0,
                                  job.vec_off + k0, crows, ntiles)
            return
        for v in range(nv):
            cmask[v] = job.vec_mask[k0 + v]
            coff[v] = job.vec_off[k0 + v]
            rest = out_end - j0 - v * lanes  # lanes past the band's last row: dropped
            if rest < lanes:
                cmask[v] = cmask[v] & ((1u << max(rest, 0)) - 1)
        _microkernel_compress(cc * taps, a, lda, b, b_rows,
                              out_band + fb * FC_MR * job.out_pixels, job.out_pixels, c, ldc,
                              bias_ptr, relu, nv, cmask, coff, crows, 1)
        return
    cdef Py_ssize_t at = -1
    if out_band != NULL and (fb + 1 + pair) * FC_MR <= job.filters_per_group:
        if job.pitch == job.out_w:  # no junk columns: any whole tile of the band
            at = j0 if j0 < out_end else -1
        else:  # the pixels the tile writes: a half vector writes half its lanes
            at = _row_offset(job, j0, ntiles * _tile_width(nv, half, lanes))
    # The partial sums come from where the tile goes, except that a last chunk written to
    # the output over deep chunks (not job.out_sweep) takes them from the staged tile.
    cdef const floating *c_in = c
    cdef Py_ssize_t ldc_in = ldc
    if at >= 0:
        c = out_band + fb * FC_MR * job.out_pixels + at
        ldc = job.out_pixels
        if job.out_sweep:
            c_in, ldc_in = c, ldc
    if ntiles > 1:
        _microkernel_run(cc * taps, a, lda, b, b_rows, c, ldc, c_in, ldc_in, bias_ptr, relu,
                         ntiles)
    elif pair:  # (only job.out_sweep passes out_band here: rows2 reads C where it goes)
        _microkernel_rows2(cc * taps, a, depth, b, b_rows, c, ldc, bias_ptr, relu, half)
    else:
        _microkernel(cc * taps, a, lda, b, b_rows, c, ldc, c_in, ldc_in, bias_ptr, relu, nv,
                     half)


cdef void _gather_panels(
    const floating *slab,         # IN  the stacked images' chunks
    const Py_ssize_t *b_offset,   # IN  (depth,) slab offset of each reduction row
    Py_ssize_t depth,
    const Py_ssize_t *pixel_src,  # IN  (pixels,) slab position of each pixel
    Py_ssize_t pixels, Py_ssize_t lanes,
    floating *panels,             # OUT per tile at j0 of nv vectors (_tile_vectors), at
                                  #     depth * j0: (depth, nv * lanes), zero-padded
) noexcept nogil:
    """A stacked task's pixels as one contiguous panel per tile, compact (no junk columns,
    images back to back): row r of pixel j is slab[b_offset[r] + pixel_src[j]]."""
    cdef Py_ssize_t r, j, j0, width, valid
    cdef const Py_ssize_t *src_j
    cdef const floating *src
    cdef floating *dst
    j0 = 0
    while j0 < pixels:
        width = _tile_vectors(j0, pixels, lanes) * lanes
        valid = min(width, pixels - j0)
        src_j = pixel_src + j0
        for r in range(depth):
            src = slab + b_offset[r]
            dst = panels + depth * j0 + r * width
            if floating is float:
                fc_gather_f32(dst, src, src_j, valid)
            else:
                fc_gather_f64(dst, src, src_j, valid)
            for j in range(valid, width):
                dst[j] = 0
        j0 = j0 + width


cdef void _pack_panels(
    const floating *x,            # IN  the first pixel in the chunk's first channel; images
    Py_ssize_t sn, Py_ssize_t sc, #     sn apart, channels sc apart, each image's plane a run
    Py_ssize_t plane,             #     of `plane` pixels
    Py_ssize_t channels, Py_ssize_t pixels, Py_ssize_t lanes,
    floating *panels,             # OUT per tile at j0 of nv vectors (_tile_vectors), at
                                  #     channels * j0: (channels, nv * lanes), zero-padded
) noexcept nogil:
    """A 1x1 band's pixels (one image: plane = pixels; or stacked images, back to back) as
    one contiguous panel per tile: a tile then reads its reduction rows one after the other
    (in place, rows sc apart, deep layers missed L1)."""
    cdef Py_ssize_t k, i, j, j0, q, run, width, valid
    cdef bint one_run
    cdef floating *dst
    j0 = 0
    while j0 < pixels:
        width = _tile_vectors(j0, pixels, lanes) * lanes
        valid = min(width, pixels - j0)
        one_run = j0 % plane + valid <= plane  # the tile within one image's plane
        for k in range(channels):
            dst = panels + channels * j0 + k * width
            j = 0
            if one_run:
                i = j0 // plane
                _copy(dst, x + i * sn + k * sc + j0 - i * plane, valid)
                j = valid
            while j < valid:  # runs split where one image's plane ends
                i = (j0 + j) // plane
                q = j0 + j - i * plane
                run = min(plane - q, valid - j)
                _copy(dst + j, x + i * sn + k * sc + q, run)
                j = j + run
            if valid < width:
                memset(dst + valid, 0, (width - valid) * sizeof(floating))
        j0 = j0 + width


cdef void _gemm_task(const _GemmJob *job, Py_ssize_t task, floating *slab,
                     floating *stage) noexcept nogil:
    """One task of _gemm_forward: a band of output rows of one image and group, for a chunk
    of filter blocks, into the thread's slab and staged tile."""
    cdef const floating *x_data = <const floating *>job.x
    cdef const floating *filters = <const floating *>job.filters
    cdef const floating *packed_bias = <const floating *>job.packed_bias
    cdef Py_ssize_t row_blocks = job.row_blocks, fchunks = job.fchunks, groups = job.groups
    cdef Py_ssize_t in_per_group = job.in_per_group, depth = job.depth, taps = job.taps
    cdef Py_ssize_t sn = job.sn, sc = job.sc, sh = job.sh
    cdef Py_ssize_t nr = job.nr, fblocks = job.fblocks
    cdef bint relu = job.relu
    cdef Py_ssize_t n, g, fc, rb, oh0, rows, q_len, fb0, fb1, fb, c0, cc, j0, k, tiles_end
    cdef Py_ssize_t i, n_stacked = 0, band_bytes, out_end = 0, f_end, full_end, start
    cdef floating *out_band = NULL
    cdef Py_ssize_t f_local, lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef int nv
    cdef const floating *b
    cdef const Py_ssize_t *b_rows
    cdef const floating *x_chunk
    cdef bint last, pair, half, row_tiles = False
    cdef Py_ssize_t row, row_start, run
    cdef floating *tile_out
    rb = task % row_blocks
    fc = (task // row_blocks) % fchunks
    g = (task // (row_blocks * fchunks)) % groups
    n = task // (row_blocks * fchunks * groups)  # stacked: the first of the task's images
    oh0 = rb * job.rows_per_task
    rows = min(job.rows_per_task, job.out_h - oh0)
    q_len = rows * job.pitch
    if job.images_per_task:  # one band of all rows (rb = 0), images n .. n + n_stacked
        n = n * job.images_per_task
        n_stacked = min(job.images_per_task, job.n_images - n)
        q_len = n_stacked * job.out_h * job.out_w
    fb0 = fc * job.fblocks_per_task
    fb1 = min(fb0 + job.fblocks_per_task, fblocks)
    if n_stacked == 0 and (job.out_sweep or (q_len > lanes and (
            job.compress or (job.out_direct and job.pitch == job.out_w)))):
        # out_sweep: whole tiles accumulate in the output (see _gemm_forward), each block of
        # filters sweeping the band: its MR output rows written in order, not a staged tile
        # of all the task's filters written per tile and copied out. (Tiles written straight
        # to the output per tile, every block, ran up to 2x slower at 1 thread: 4 * blocks
        # store streams.) Output rows of whole vectors (a last half vector at most,
        # _half_tail) are tiled row by row: every tile then lies in one output row.
        # Otherwise only the last chunk's tiles go out, their partial sums read from the
        # staged tile: with no junk columns its whole tiles (out_end: where they end), with
        # junk columns (compress) every tile, dropping the junk as it stores (out_end: the
        # band's length).
        out_band = (<floating *>job.out + (n * job.n_filters + g * job.filters_per_group)
                    * job.out_pixels + oh0 * job.out_w)
        out_end = q_len if job.compress else _whole_tiles_end(q_len, lanes)
        # (a band of one vector takes the paired-blocks path below, staged, not row tiles)
        row_tiles = (job.out_sweep and job.pitch != job.out_w and not job.direct
                     and _whole_vectors(job.out_w, lanes) and q_len > lanes)
    c0 = 0
    while c0 < in_per_group:
        cc = min(job.channels_per_chunk, in_per_group - c0)
        x_chunk = x_data + n * sn + (g * in_per_group + c0) * sc
        last = c0 + cc == in_per_group
        tile_out = out_band if job.out_sweep or last else NULL  # where tiles may go out
        tiles_end = 0
        band_bytes = cc * job.phases * job.slab_channel * <Py_ssize_t>sizeof(floating)
        if n_stacked and job.direct:
            _pack_panels(x_chunk, sn, sc, job.out_h * job.out_w, cc, q_len, lanes,
                         slab + job.panel_base)
            band_bytes = cc * q_len * <Py_ssize_t>sizeof(floating)
        elif n_stacked:
            for i in range(n_stacked):
                _fill_slab(x_chunk + i * sn, sc, sh, job.sw, cc, job.bands, job.slab_rows,
                           job.col_src, job.col_inner, job.stride_w, job.phases, job.pitch,
                           slab + i * job.image_slab)
                if job.wrap:
                    memset(slab + i * job.image_slab + cc * job.slab_channel, 0,
                           job.wrap * sizeof(floating))
            _gather_panels(slab, job.offsets, cc * taps, job.pixel_src, q_len, lanes,
                           slab + job.panel_base)
            band_bytes = cc * taps * q_len * <Py_ssize_t>sizeof(floating)
        elif job.panels:
            _pack_panels(x_chunk + oh0 * sh, 0, sc, q_len, cc, q_len, lanes, slab)
        elif job.direct:  # whole tiles read x; a last tile reaching past the band, the slab
            if job.one_filter:
                tiles_end = q_len - q_len % nr
            else:
                tiles_end = _whole_tiles_end(q_len, lanes)
            for k in range(cc):  # the partial tile's columns, into the slab
                _copy(slab + k * job.slab_channel + tiles_end,
                      x_chunk + k * sc + oh0 * sh + tiles_end, q_len - tiles_end)
        else:
            _fill_slab(x_chunk, sc, sh, job.sw, cc,
                       job.bands + rb * job.slab_rows, job.slab_rows, job.col_src,
                       job.col_inner, job.stride_w, job.phases, job.pitch, slab)
            if job.wrap:  # the right padding read past the last row (_conv_plan._column_maps)
                memset(slab + cc * job.slab_channel, 0, job.wrap * sizeof(floating))
        if job.one_filter:
            j0 = 0
            while j0 < q_len:
                b, b_rows = _tile_input(job, x_chunk, slab, oh0, tiles_end, j0, cc, FC_NV)
                _microkernel_row(cc * taps, filters + g * depth + c0 * taps, b, b_rows,
                                 stage + j0,
                                 packed_bias + g * fblocks * FC_MR if c0 == 0 else NULL,
                                 relu and last)
                j0 = j0 + nr
        elif q_len <= lanes:
            # A band of one vector (tiny maps, a last row of a few pixels): blocks of filters
            # in pairs where both are read in place, for twice the accumulator chains.
            fb = fb0
            while fb < fb1:
                pair = fb + 1 < fb1 and fb + 1 < job.inplace_blocks
                _gemm_tile(job, x_chunk, slab, stage, g, fb, fb0, c0, cc, oh0, tiles_end,
                           0, 1, _half_tail(0, q_len, 1, lanes), relu and last, pair,
                           out_band if job.out_sweep else NULL, out_end, 1)
                fb = fb + 1 + pair
        elif band_bytes <= job.sweep_bytes or (job.out_sweep and out_band != NULL):
            # The chunk's slab fits L1 next to one block's weights: sweep the band once per
            # block of filters, and each block's weights stay in L1 (deep, small maps). Tiles
            # written straight to the output go this way too (see out_band above).
            for fb in range(fb0, fb1):
                if row_tiles:  # each output row in its own tiles, no junk column computed
                    for row in range(rows):
                        row_start = row * job.pitch
                        j0 = row_start
                        while j0 < row_start + job.out_w:
                            nv = _tile_vectors(j0 - row_start, job.out_w, lanes)
                            run = _tile_run(job, j0, row_start + job.out_w, True, True,
                                            lanes)
                            _gemm_tile(job, x_chunk, slab, stage, g, fb, fb0, c0, cc, oh0,
                                       tiles_end, j0, nv,
                                       _half_tail(j0 - row_start, job.out_w, nv, lanes),
                                       relu and last, False, tile_out, out_end, run)
                            j0 = j0 + run * nv * lanes
                    continue
                j0 = 0
                while j0 < q_len:
                    nv = _tile_vectors(j0, q_len, lanes)
                    run = _tile_run(job, j0, q_len, tile_out != NULL, False, lanes)
                    _gemm_tile(job, x_chunk, slab, stage, g, fb, fb0, c0, cc, oh0, tiles_end,
                               j0, nv, _half_tail(j0, q_len, nv, lanes), relu and last, False,
                               tile_out, out_end, run)
                    j0 = j0 + run * nv * lanes
        else:
            # Per tile of pixels, every block of filters: the tile's input window stays in L1.
            j0 = 0
            while j0 < q_len:
                nv = _tile_vectors(j0, q_len, lanes)
                if job.direct and j0 + nv * lanes < tiles_end:  # the next tile's rows in x
                    fc_prefetch_rows(x_chunk + oh0 * sh + j0 + nv * lanes, sc * sizeof(floating),
                                     cc, nr * sizeof(floating))
                half = _half_tail(j0, q_len, nv, lanes)
                for fb in range(fb0, fb1):
                    _gemm_tile(job, x_chunk, slab, stage, g, fb, fb0, c0, cc, oh0, tiles_end,
                               j0, nv, half, relu and last, False, tile_out, out_end, 1)
                j0 = j0 + nv * lanes
        c0 = c0 + cc
    # Copy the staged tile out, dropping the junk columns past out_w.
    f_local = fb0 * FC_MR
    if out_band != NULL and job.compress:
        pass  # every tile of every block went to the output
    elif out_band != NULL:  # only what did not go straight to the output (see _gemm_tile)
        f_end = min(fb1 * FC_MR, job.filters_per_group)
        full_end = job.filters_per_group - job.filters_per_group % FC_MR
        for i in range(f_local, f_end):
            # No junk columns: one run from out_end (walking the tiles, as below, measured
            # 5-15% slower on 8 -> 8 channels at 224x224).
            if job.pitch == job.out_w:
                start = out_end if i < full_end else 0
                _copy(out_band + i * job.out_pixels + start,
                      stage + (i - f_local) * job.stage_pitch + start, q_len - start)
            elif row_tiles:  # a partial block's filters went to the stage, the rest out
                if i >= full_end:
                    for row in range(rows):
                        _copy(out_band + i * job.out_pixels + row * job.out_w,
                              stage + (i - f_local) * job.stage_pitch + row * job.pitch,
                              job.out_w)
            else:
                _copy_staged_tiles(job, stage + (i - f_local) * job.stage_pitch, q_len,
                                   i >= full_end, out_band + i * job.out_pixels, lanes)
    elif n_stacked == 0:
        _copy_out(stage, job.stage_pitch, job.pitch,
                  min(fb1 * FC_MR, job.filters_per_group) - f_local,
                  rows, oh0, <floating *>job.out + n * job.n_filters * job.pooled_pixels,
                  g * job.filters_per_group + f_local, job.n_filters, job.out_h, job.out_w,
                  job.channels_last, job.pool)
    for i in range(n_stacked):  # each image's pixels: one compact run per filter
        _copy_out(stage + i * job.out_h * job.out_w, job.stage_pitch, 0,
                  min(fb1 * FC_MR, job.filters_per_group) - f_local, 1, 0,
                  <floating *>job.out + (n + i) * job.n_filters * job.pooled_pixels,
                  g * job.filters_per_group + f_local, job.n_filters, 1,
                  job.out_h * job.out_w, job.channels_last, 1)


cdef int _gemm_forward(
    const _Arg *x,                 # IN  (N, C, H, W) any element strides
    const floating *filters,       # IN  (G, Fg, R) weights, R = (c, kh, kw), C-contiguous
    const floating *packed,        # IN  (G, FB - inplace_blocks, R, MR): the other blocks
    Py_ssize_t inplace_blocks,     #     of MR filters, packed (_pack_filters)
    const floating *packed_bias,   # IN  (G, FB*MR) bias, zero-padded
    floating *out_data,            # OUT (N, F, OH*OW) or (N, OH*OW, F) if NHWC; with pool
                                   #     (PH*PW)
    floating *scratch_data,        # SCRATCH num_threads x scratch_per_thread
    Py_ssize_t groups, Py_ssize_t filters_per_group,
    const _Arg *row_src,           # IN  intp (row bands, slab rows) input row or -1
    const _Arg *col_src,           # IN  intp (P, Wq) input col per slab column or -1
    const _Arg *col_inner,         # IN  intp (P, 3) linear interior of col_src
    const _Arg *b_offset,          # IN  intp (CC*KH*KW,) slab offset of row (c, kh, kw)
    Py_ssize_t stride_w, Py_ssize_t kh_count, Py_ssize_t kw_count,
    Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t rows_per_task, Py_ssize_t channels_per_chunk, Py_ssize_t fblocks_per_task,
    Py_ssize_t slab_size, Py_ssize_t stage_pitch, Py_ssize_t wrap,
    Py_ssize_t images_per_task,    # > 0: stacked tasks (_conv_plan._stack_split), whose
    Py_ssize_t image_slab,         #     images' chunks lie image_slab apart in the slab,
    Py_ssize_t panel_base,         #     their panels from panel_base, and whose pixels
    const _Arg *pixel_src,         # IN  intp (images_per_task * OH * OW,) lie at pixel_src
    bint channels_last, bint relu, Py_ssize_t pool, int num_threads, bint pointwise,
) except -1:
    """out = conv(x, weight) + bias (then ReLU, then pool x pool / pool max pooling when
    pool > 1, straight from the staged tile), for a whole batch; see this file's header.
    The caller (_GemmCall) has checked every size against the plan."""
    cdef Py_ssize_t n_images = x.shape[0]
    cdef Py_ssize_t fblocks = (filters_per_group + FC_MR - 1) // FC_MR
    cdef Py_ssize_t in_per_group = x.shape[1] // groups
    cdef Py_ssize_t depth = in_per_group * kh_count * kw_count
    cdef Py_ssize_t packed_blocks = fblocks - inplace_blocks
    cdef const floating *x_data = <const floating *>x.data
    cdef Py_ssize_t n_filters = filters_per_group * groups
    cdef Py_ssize_t phases = col_src.shape[0]
    cdef Py_ssize_t pitch = col_src.shape[1]
    cdef Py_ssize_t taps = kh_count * kw_count
    # One filter per group (depthwise): a one-row tile, wider in pixels; else MR x NR tiles.
    cdef bint one_filter = filters_per_group == 1
    cdef Py_ssize_t nr
    if one_filter:
        nr = FC_ROW_NR_F32 if floating is float else FC_ROW_NR_F64
    else:
        nr = FC_NR_F32 if floating is float else FC_NR_F64
    cdef Py_ssize_t row_blocks = (out_h + rows_per_task - 1) // rows_per_task
    cdef Py_ssize_t fchunks = (fblocks + fblocks_per_task - 1) // fblocks_per_task
    cdef Py_ssize_t image_blocks = (n_images if images_per_task == 0
                                    else (n_images + images_per_task - 1) // images_per_task)
    cdef Py_ssize_t n_tasks = image_blocks * groups * fchunks * row_blocks
    cdef Py_ssize_t sn = x.strides[0], sc = x.strides[1], sh = x.strides[2], sw = x.strides[3]
    cdef const Py_ssize_t *bands = <const Py_ssize_t *>row_src.data
    cdef const Py_ssize_t *offsets = <const Py_ssize_t *>b_offset.data
    cdef Py_ssize_t out_pixels = out_h * out_w
    cdef Py_ssize_t pooled_pixels = (out_h // pool) * (out_w // pool) if pool > 1 else out_pixels
    # The staged output tile of a task: its filters x its pixels (over the row pitch).
    cdef Py_ssize_t scratch_per_thread = slab_size + fblocks_per_task * FC_MR * stage_pitch
    cdef Py_ssize_t task
    cdef floating *slab = NULL
    cdef floating *stage = NULL
    cdef long long work = <long long>n_images * out_pixels * n_filters * depth

    if n_tasks == 0:
        return 0
    # A 1x1 convolution with stride 1 and no padding whose rows are contiguous in x (NCHW)
    # needs no slab: a band of a channel is a run of x, so whole tiles read x in place
    # (reduction row c at c * sc), and only the last, partial tile of a band goes through the
    # slab (reading past the band could leave x's memory). Only while a chunk of channels
    # spans little memory or is a few streams: over large planes many strided streams read
    # slower than the slab's row-by-row copy (measured: 256 planes of 56x56, 7% slower in
    # place; 72 planes of 14x14, 17% faster; see DIRECT_STREAMS).
    cdef bint direct = (pointwise and taps == 1 and stride_w == 1 and phases == 1
                        and pitch == out_w and sw == 1 and sh == out_w
                        and x.shape[2] == out_h and x.shape[3] == out_w
                        and (images_per_task > 0 or channels_per_chunk <= DIRECT_STREAMS
                             or channels_per_chunk * sc * sizeof(floating) <= DIRECT_SPAN_BYTES))
    # Unless a tile's rows in x, one line more than their width each, would miss L1 (deep
    # chunks): then each tile's rows are packed into a contiguous panel (_pack_panels) that
    # serves all the task's filters. Measured, 2 threads, interleaved: 7x7 and 14x14 layers
    # of 256+ channels 11-19% faster (median of 5 runs).
    cdef Py_ssize_t lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef bint panels = (direct and not one_filter and images_per_task == 0
                        and channels_per_chunk * (nr * sizeof(floating) + 64) > L1_SLAB_BYTES
                        and slab_size >= channels_per_chunk * stage_pitch)
    # Stacked tasks read panels; direct then means that they copy them from x's rows.
    direct = direct and not panels
    panels = panels or images_per_task > 0
    cdef Py_ssize_t panel_rows = channels_per_chunk * taps
    cdef Py_ssize_t *x_offsets = NULL
    cdef Py_ssize_t *panel_offsets = NULL
    cdef Py_ssize_t slab_channel = row_src.shape[1] * pitch  # slab elements per channel
    cdef Py_ssize_t k
    cdef int v
    if direct:
        x_offsets = <Py_ssize_t *>malloc(channels_per_chunk * sizeof(Py_ssize_t))
        if x_offsets == NULL:
            raise MemoryError()
        for k in range(channels_per_chunk):
            x_offsets[k] = k * sc
    if panels:
        panel_offsets = <Py_ssize_t *>malloc(FC_NV * panel_rows * sizeof(Py_ssize_t))
        if panel_offsets == NULL:
            raise MemoryError()
        for v in range(FC_NV):  # row k of a panel of v + 1 vectors
            for k in range(panel_rows):
                panel_offsets[v * panel_rows + k] = k * (v + 1) * lanes
    cdef _GemmJob job
    job.x, job.filters, job.packed, job.packed_bias = x_data, filters, packed, packed_bias
    job.out = out_data
    job.sn, job.sc, job.sh, job.sw = sn, sc, sh, sw
    job.bands, job.slab_rows = bands, row_src.shape[1]
    job.col_src = <const Py_ssize_t *>col_src.data
    job.col_inner = <const Py_ssize_t *>col_inner.data
    job.offsets, job.x_offsets, job.panel_offsets = offsets, x_offsets, panel_offsets
    job.pixel_src = <const Py_ssize_t *>pixel_src.data
    job.panel_base = panel_base  # 0 unless stacked: the 1x1 panels start the slab
    job.panel_rows, job.images_per_task, job.image_slab, job.n_images = (
        panel_rows, images_per_task, image_slab, n_images)
    job.stride_w, job.phases, job.pitch, job.slab_channel = stride_w, phases, pitch, slab_channel
    # Phases whose first columns lie a stride or more apart overlap: one per tap
    # (_conv_plan._column_maps's per_tap), not per stride phase.
    cdef const Py_ssize_t *inner = <const Py_ssize_t *>col_inner.data
    job.sweep_bytes = (TAP_SLAB_BYTES if inner[3 * phases - 1] - inner[2] >= stride_w
                       else L1_SLAB_BYTES)
    job.in_per_group, job.channels_per_chunk = in_per_group, channels_per_chunk
    job.row_blocks, job.rows_per_task, job.out_h, job.out_w = (row_blocks, rows_per_task,
                                                                out_h, out_w)
    job.groups, job.filters_per_group, job.n_filters = groups, filters_per_group, n_filters
    job.fchunks, job.fblocks, job.fblocks_per_task = fchunks, fblocks, fblocks_per_task
    job.inplace_blocks, job.packed_blocks = inplace_blocks, packed_blocks
    job.depth, job.taps, job.nr, job.stage_pitch = depth, taps, nr, stage_pitch
    job.out_pixels = out_pixels
    # A band's output rows are runs of each output plane (NCHW), so tiles accumulate there
    # directly (any whole tile without junk columns, else a tile within one row, see
    # _gemm_tile): no staged copy to write out. With junk columns, only for rows of 3 tiles or
    # more, where most tiles lie within a row (measured on Zen 4, 2 threads, time after /
    # before: 224 and 112 wide 0.87-0.93; 26-64 wide 1.11-1.39, most tiles staged anyway).
    job.out_direct = (not channels_last and pool == 1 and not one_filter
                      and images_per_task == 0
                      and (pitch == out_w or out_w >= 3 * nr or _whole_vectors(out_w, lanes)))
    # Junk columns that tiles written to the output would not drop (rows not tiled one by
    # one): at AVX-512 the last chunk's tiles drop them as they store (see _gemm_task for
    # when; measured on Zen 4, 2 threads, time after / before: 64 x 28x28 -> 26x26 with 32
    # filters 0.78-0.83, 32 groups at 56x56 0.88-0.91, 3 -> 24 channels at 112x112 0.95).
    # Only where the last chunk's slab fits L1, so that it sweeps the band once per block of
    # filters: each block's rows are then written in order. (Per tile, every block: 1.03-1.10
    # of the staged copy's time on five deep layers; with one chunk 0.93 on 4 groups of 16
    # channels at 28x28 but 1.02-1.035 on two others.)
    cdef Py_ssize_t last_chunk = (in_per_group
                                  - (in_per_group - 1) // channels_per_chunk * channels_per_chunk)
    job.compress = (FC_COMPRESS and not channels_last and pool == 1 and not one_filter
                    and images_per_task == 0 and pitch != out_w
                    and not (channels_per_chunk * taps <= OUT_SWEEP_DEPTH
                             and _whole_vectors(out_w, lanes))
                    and last_chunk * phases * slab_channel * <Py_ssize_t>sizeof(floating)
                    <= L1_SLAB_BYTES)
    job.out_sweep = (job.out_direct and channels_per_chunk * taps <= OUT_SWEEP_DEPTH
                     and not job.compress)
    cdef Py_ssize_t band_vectors = (rows_per_task * pitch + lanes - 1) // lanes + FC_NV
    cdef unsigned int *vec_mask = NULL
    cdef Py_ssize_t *vec_off = NULL
    cdef Py_ssize_t col, l
    if job.compress:
        vec_mask = <unsigned int *>malloc(band_vectors * sizeof(unsigned int))
        vec_off = <Py_ssize_t *>malloc(band_vectors * sizeof(Py_ssize_t))
        if vec_mask == NULL or vec_off == NULL:
            free(vec_mask)
            free(vec_off)
            free(x_offsets)
            free(panel_offsets)
            raise MemoryError()
        col = 0  # of the band's pixel k * lanes + l in its slab row
        for k in range(band_vectors):
            vec_off[k] = k * lanes // pitch * out_w + min(col, out_w)
            vec_mask[k] = 0
            for l in range(lanes):
                if col < out_w:
                    vec_mask[k] = vec_mask[k] | (1u << l)
                col = col + 1 if col + 1 < pitch else 0
    job.vec_mask, job.vec_off = vec_mask, vec_off
    job.pooled_pixels, job.pool, job.wrap = pooled_pixels, pool, wrap
    job.direct, job.panels, job.one_filter, job.relu, job.channels_last = (
        direct, panels, one_filter, relu, channels_last)
    # The slab's slack beyond the filled rows is read only by junk columns, which are dropped.
    # Small or one-thread calls run the tasks in order outside OpenMP: even a one-thread
    # parallel region costs ~0.5 us in libgomp.
    cdef int master_cpu
    if num_threads > 1 and work > PARALLEL_WORK:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            slab = scratch_data + threadid() * scratch_per_thread
            stage = slab + slab_size
            for task in prange(n_tasks, schedule="dynamic"):
                _gemm_task(&job, task, slab, stage)
    else:
        with nogil:
            for task in range(n_tasks):
                _gemm_task(&job, task, scratch_data, scratch_data + slab_size)
    free(x_offsets)
    free(panel_offsets)
    free(vec_mask)
    free(vec_off)
    return 0


include "_conv_depthwise.pxi"
include "_conv_filter_lanes.pxi"
include "_conv_channels_last.pxi"
include "_conv_call.pxi"
