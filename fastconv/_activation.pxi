# ReLU kernels, compiled once per ISA level by the thin _activation_<level>.pyx files.
#
# relu(x) = 0 where x < 0, else x: NaN (and -0.0) pass through unchanged, as in torch.relu.
# The array is streamed as one flat buffer in fixed chunks, one writer per chunk, so the result
# does not depend on the thread count. Input and output may be the same buffer (in place).
# Large out-of-place results are written with non-temporal stores.

from cython.parallel cimport parallel, prange

from cython cimport floating


cdef extern from *:
    """
    #include "_simd.h"

    /* dst[i] = src[i] < 0 ? 0 : src[i]; dst may be src. Compare-and-mask (no max instruction),
     * so NaN stays NaN. Four vectors per iteration keep enough loads in flight; stores are
     * vector-aligned after a scalar head. With stream, dst (never src) is written with
     * non-temporal stores. */
    #define FC_RELU_DEFINE(T, SUF, V, VU, VI, L) \
    static void fc_relu_##SUF(T *dst, const T *src, Py_ssize_t n, int stream) { \
        const V zero = {0}; \
        Py_ssize_t i = 0; \
        /* vector-aligned stores from here on (split stores across cache lines are slow) */ \
        for (; i < n && ((size_t)(dst + i) % sizeof(V)) != 0; ++i) \
            dst[i] = src[i] < 0 ? (T)0 : src[i]; \
        if (stream) { \
            for (; i + 4 * L <= n; i += 4 * L) { \
                V a = *(const VU *)(src + i), b = *(const VU *)(src + i + L); \
                V c = *(const VU *)(src + i + 2 * L), d = *(const VU *)(src + i + 3 * L); \
                FC_STREAM_##SUF(dst + i, (V)((VI)a & ~(VI)(a < zero))); \
                FC_STREAM_##SUF(dst + i + L, (V)((VI)b & ~(VI)(b < zero))); \
                FC_STREAM_##SUF(dst + i + 2 * L, (V)((VI)c & ~(VI)(c < zero))); \
                FC_STREAM_##SUF(dst + i + 3 * L, (V)((VI)d & ~(VI)(d < zero))); \
            } \
            FC_STREAM_FENCE(); \
        } \
        for (; i + 4 * L <= n; i += 4 * L) { \
            V a = *(const VU *)(src + i), b = *(const VU *)(src + i + L); \
            V c = *(const VU *)(src + i + 2 * L), d = *(const VU *)(src + i + 3 * L); \
            a = (V)((VI)a & ~(VI)(a < zero)); \
            b = (V)((VI)b & ~(VI)(b < zero)); \
            c = (V)((VI)c & ~(VI)(c < zero)); \
            d = (V)((VI)d & ~(VI)(d < zero)); \
            *(VU *)(dst + i) = a; \
            *(VU *)(dst + i + L) = b; \
            *(VU *)(dst + i + 2 * L) = c; \
            *(VU *)(dst + i + 3 * L) = d; \
        } \
        for (; i + L <= n; i += L) { \
            V a = *(const VU *)(src + i); \
            *(VU *)(dst + i) = (V)((VI)a & ~(VI)(a < zero)); \
        } \
        for (; i < n; ++i) dst[i] = src[i] < 0 ? (T)0 : src[i]; \
    }

    FC_RELU_DEFINE(float, f32, fc_vf32, fc_vf32_u, fc_vi32, FC_LANES_F32)
    FC_RELU_DEFINE(double, f64, fc_vf64, fc_vf64_u, fc_vi64, FC_LANES_F64)
    """
    const char *FC_ISA_NAME
    enum:
        FC_STREAM_MIN_BYTES  # out-of-place results this large take streaming stores (_simd.h)
    void fc_relu_f32(float *dst, const float *src, Py_ssize_t n, int stream) nogil
    void fc_relu_f64(double *dst, const double *src, Py_ssize_t n, int stream) nogil


ISA = FC_ISA_NAME.decode()

# Elements per task: 64 KiB of float32, large enough that scheduling is free, small enough
# that two threads split a cache-resident array evenly.
cdef enum:
    CHUNK = 1 << 14
# Run serially below this many elements: waking threads costs more than it saves.
cdef enum:
    PARALLEL_MIN_ELEMENTS = 1 << 17


cdef extern from "_threads.h" nogil:
    int fc_current_cpu()
    void fc_leave_master_cpu(int master_cpu)


cdef inline void _relu_span(floating *dst, const floating *src, Py_ssize_t n,
                            int stream) noexcept nogil:
    if floating is float:
        fc_relu_f32(dst, src, n, stream)
    else:
        fc_relu_f64(dst, src, n, stream)


def relu(
    const floating[::1] x not None,   # IN  (n,) flat input
    floating[::1] out not None,       # OUT (n,) flat output; may be x itself (in place)
    int num_threads,
):
    """out = max(x, 0) elementwise; NaN stays NaN."""
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t chunk, start
    cdef const floating *src
    cdef floating *dst
    cdef int stream, master_cpu

    if n == 0:
        return
    src = &x[0]
    dst = &out[0]
    stream = (<const void *>src != <const void *>dst
              and n * sizeof(floating) >= FC_STREAM_MIN_BYTES)
    master_cpu = fc_current_cpu()
    with nogil, parallel(num_threads=num_threads, use_threads_if=n >= PARALLEL_MIN_ELEMENTS):
        fc_leave_master_cpu(master_cpu)  # see _threads.h
        for chunk in prange(n_chunks, schedule="static"):
            start = chunk * CHUNK
            _relu_span(dst + start, src + start, min(CHUNK, n - start), stream)
