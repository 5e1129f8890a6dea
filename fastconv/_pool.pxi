# Max-pooling kernels, compiled once per ISA level by the thin _pool_<level>.pyx files.
#
# Both layouts are one problem for the kernels: an image is (H, W, C) with C contiguous values
# per pixel. NCHW data is passed as (N*C, H, W, 1) (every plane an image with C = 1), NHWC data
# as (N, H, W, C). A task computes one output row (image b, row oh) and is its only writer, so
# results are bit-identical for any thread count.
#
# Values only:
# - fused (C == 1, stride 1 or 2 along W, dilation 1 along W, kw <= 5; e.g. NCHW 2x2/2 and
#   3x3/2): vectors of L outputs straight from the input rows. The vertical max of each input
#   vector is taken once; the kw taps are lane shifts (stride 1) or even/odd splits plus shifts
#   (stride 2) of those vertical maxima, so nothing goes through memory. Vectors that would
#   cross either end of the row are loaded inside it and shifted with -inf filled in, which is
#   also how the padding is applied.
# - separable (everything else of moderate size): max over a 2-D window = max over its columns
#   of the max over its rows. The row pass takes the max of the window's valid input rows into
#   a thread-local row, -inf-padded left and right (padding, ceil_mode overhang); the column
#   pass takes the max over the kw taps. Both passes are contiguous vector loops (NHWC: over
#   the channels). For C == 1 and stride 2 each tap is the even lanes of two vector loads; for
#   C == 1 and stride > 2 the padded row is first split into its stride phases.
# - direct (huge kernels, strides or dilations): PyTorch's loop, window by window.
# With indices: PyTorch's loop order and rules, vectorised over outputs (C == 1, stride 1 or 2:
# interior outputs of a row) or over channels (C > 1); scalar for the rest. The index is the
# flat h * W + w of the first maximum in row-major window order, of the last NaN if the window
# has NaN, and of the window's first in-image tap if every value is -inf.
#
# NaN wins everywhere: every max (vector or scalar) returns NaN if either operand is NaN.
# All vector code is GCC vector extensions (_simd.h), so one source serves every ISA level.

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from cython cimport floating



cdef extern from "_threads.h" nogil:
    int fc_current_cpu()
    void fc_leave_master_cpu(int master_cpu)


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include "_simd.h"

    #if FC_VEC_BYTES == 64
    #define FC_POOL_IOTA_F32 {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
    #define FC_POOL_EVEN_F32 {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
    #define FC_POOL_ODD_F32 {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
    #define FC_POOL_IOTA_F64 {0, 1, 2, 3, 4, 5, 6, 7}
    #define FC_POOL_EVEN_F64 {0, 2, 4, 6, 8, 10, 12, 14}
    #define FC_POOL_ODD_F64 {1, 3, 5, 7, 9, 11, 13, 15}
    #elif FC_VEC_BYTES == 32
    #define FC_POOL_IOTA_F32 {0, 1, 2, 3, 4, 5, 6, 7}
    #define FC_POOL_EVEN_F32 {0, 2, 4, 6, 8, 10, 12, 14}
    #define FC_POOL_ODD_F32 {1, 3, 5, 7, 9, 11, 13, 15}
    #define FC_POOL_IOTA_F64 {0, 1, 2, 3}
    #define FC_POOL_EVEN_F64 {0, 2, 4, 6}
    #define FC_POOL_ODD_F64 {1, 3, 5, 7}
    #else
    #define FC_POOL_IOTA_F32 {0, 1, 2, 3}
    #define FC_POOL_EVEN_F32 {0, 2, 4, 6}
    #define FC_POOL_ODD_F32 {1, 3, 5, 7}
    #define FC_POOL_IOTA_F64 {0, 1}
    #define FC_POOL_EVEN_F64 {0, 2}
    #define FC_POOL_ODD_F64 {1, 3}
    #endif

    /* int64 vectors with as many lanes as a float32 / float64 vector (indices are stored
     * as int64; float32 kernels keep them in int32 lanes, so images of < 2**31 pixels). */
    typedef long long fc_pool_wide_f32 __attribute__((vector_size(2 * FC_VEC_BYTES)));
    typedef long long fc_pool_wide_f32_u
        __attribute__((vector_size(2 * FC_VEC_BYTES), aligned(8), may_alias));
    typedef long long fc_pool_wide_f64 __attribute__((vector_size(FC_VEC_BYTES)));
    typedef long long fc_pool_wide_f64_u
        __attribute__((vector_size(FC_VEC_BYTES), aligned(8), may_alias));

    /* One set of row primitives per element type T (vector V, unaligned vector VU, lane mask
     * VI, L lanes). "max" is NaN-aware everywhere: a NaN operand always survives.
     *   fill(dst, value, n)               dst[i] = value
     *   max_step(dst, src, step, k, n)    dst[i] = max over t < k of src[t * step + i]
     *   max_offs(dst, src, offs, k, n)    dst[i] = max over t < k of src[offs[t] + i]
     *   max_pixels(dst, src, offs, k, npx, c, px_step)
     *                                     max_offs over c values for each of npx pixels,
     *                                     dst advancing by c, src by px_step
     *   gather(dst, src, stride, n)       dst[i] = src[i * stride]
     *   max_stride2(dst, src, offs, k, n) dst[i] = max over t < k of src[2i + offs[t]]
     *                                     (even lanes of two vector loads per tap)
     * k == 0 gives -inf. */
    #define FC_POOL_DEFINE(T, SUF, V, VU, VI, L, EVEN) \
    static inline V fc_pool_vmax_##SUF(V a, V b) { \
        VI keep_a = (VI)(a > b) | (VI)(a != a); \
        return (V)(((VI)a & keep_a) | ((VI)b & ~keep_a)); \
    } \
    static inline T fc_pool_smax_##SUF(T a, T b) { return b != b ? b : (b > a ? b : a); } \
    static void fc_pool_fill_##SUF(T *dst, T value, Py_ssize_t n) { \
        for (Py_ssize_t i = 0; i < n; ++i) dst[i] = value; \
    } \
    static void fc_pool_max_offs_##SUF(T *dst, const T *src, const Py_ssize_t *offs, \
                                       Py_ssize_t k, Py_ssize_t n) { \
        Py_ssize_t i = 0, t; \
        if (k <= 0) { fc_pool_fill_##SUF(dst, (T)(-INFINITY), n); return; } \
        for (; i + 2 * L <= n; i += 2 * L) { \
            const T *s = src + offs[0] + i; \
            V a = *(const VU *)s, b = *(const VU *)(s + L); \
            for (t = 1; t < k; ++t) { \
                s = src + offs[t] + i; \
                a = fc_pool_vmax_##SUF(a, *(const VU *)s); \
                b = fc_pool_vmax_##SUF(b, *(const VU *)(s + L)); \
            } \
            *(VU *)(dst + i) = a; \
            *(VU *)(dst + i + L) = b; \
        } \
        for (; i + L <= n; i += L) { \
            V a = *(const VU *)(src + offs[0] + i); \
            for (t = 1; t < k; ++t) a = fc_pool_vmax_##SUF(a, *(const VU *)(src + offs[t] + i)); \
            *(VU *)(dst + i) = a; \
        } \
        if (i < n && n >= L) { /* last, overlapping vector instead of a scalar tail */ \
            i = n - L; \
            V a = *(const VU *)(src + offs[0] + i); \
            for (t = 1; t < k; ++t) a = fc_pool_vmax_##SUF(a, *(const VU *)(src + offs[t] + i)); \
            *(VU *)(dst + i) = a; \
            return; \
        } \
        for (; i < n; ++i) { \
            T a = src[offs[0] + i]; \
            for (t = 1; t < k; ++t) a = fc_pool_smax_##SUF(a, src[offs[t] + i]); \
            dst[i] = a; \
        } \
    } \
    static void fc_pool_max_step_##SUF(T *dst, const T *src, Py_ssize_t step, Py_ssize_t k, \
                                       Py_ssize_t n) { \
        Py_ssize_t i = 0, t; \
        if (k <= 0) { fc_pool_fill_##SUF(dst, (T)(-INFINITY), n); return; } \
        for (; i + 2 * L <= n; i += 2 * L) { \
            const T *s = src + i; \
            V a = *(const VU *)s, b = *(const VU *)(s + L); \
            for (t = 1; t < k; ++t) { \
                s += step; \
                a = fc_pool_vmax_##SUF(a, *(const VU *)s); \
                b = fc_pool_vmax_##SUF(b, *(const VU *)(s + L)); \
            } \
            *(VU *)(dst + i) = a; \
            *(VU *)(dst + i + L) = b; \
        } \
        for (; i + L <= n; i += L) { \
            V a = *(const VU *)(src + i); \
            for (t = 1; t < k; ++t) a = fc_pool_vmax_##SUF(a, *(const VU *)(src + t * step + i)); \
            *(VU *)(dst + i) = a; \
        } \
        if (i < n && n >= L) { /* last, overlapping vector instead of a scalar tail */ \
            i = n - L; \
            V a = *(const VU *)(src + i); \
            for (t = 1; t < k; ++t) a = fc_pool_vmax_##SUF(a, *(const VU *)(src + t * step + i)); \
            *(VU *)(dst + i) = a; \
            return; \
        } \
        for (; i < n; ++i) { \
            T a = src[i]; \
            for (t = 1; t < k; ++t) a = fc_pool_smax_##SUF(a, src[t * step + i]); \
            dst[i] = a; \
        } \
    } \
    static void fc_pool_max_pixels_##SUF(T *dst, const T *src, const Py_ssize_t *offs, \
                                         Py_ssize_t k, Py_ssize_t npx, Py_ssize_t c, \
                                         Py_ssize_t px_step) { \
        for (Py_ssize_t p = 0; p < npx; ++p) \
            fc_pool_max_offs_##SUF(dst + p * c, src + p * px_step, offs, k, c); \
    } \
    static void fc_pool_gather_##SUF(T *dst, const T *src, Py_ssize_t stride, Py_ssize_t n) { \
        for (Py_ssize_t i = 0; i < n; ++i) dst[i] = src[i * stride]; \
    } \
    static void fc_pool_max_stride2_##SUF(T *dst, const T *src, const Py_ssize_t *offs, \
                                          Py_ssize_t k, Py_ssize_t n) { \
        const VI even_mask = EVEN; \
        Py_ssize_t i = 0, t; \
        if (k <= 0) { fc_pool_fill_##SUF(dst, (T)(-INFINITY), n); return; } \
        while (i < n && n >= L) { \
            if (i + L > n) i = n - L; /* last, overlapping vector instead of a scalar tail */ \
            const T *s = src + 2 * i + offs[0]; \
            V a = __builtin_shuffle(*(const VU *)s, *(const VU *)(s + L), even_mask); \
            for (t = 1; t < k; ++t) { \
                s = src + 2 * i + offs[t]; \
                a = fc_pool_vmax_##SUF(a, __builtin_shuffle(*(const VU *)s, \
                                                            *(const VU *)(s + L), even_mask)); \
            } \
            *(VU *)(dst + i) = a; \
            i += L; \
        } \
        for (; i < n; ++i) { \
            T a = src[2 * i + offs[0]]; \
            for (t = 1; t < k; ++t) a = fc_pool_smax_##SUF(a, src[2 * i + offs[t]]); \
            dst[i] = a; \
        } \
    }

    FC_POOL_DEFINE(float, f32, fc_vf32, fc_vf32_u, fc_vi32, FC_LANES_F32, FC_POOL_EVEN_F32)
    FC_POOL_DEFINE(double, f64, fc_vf64, fc_vf64_u, fc_vi64, FC_LANES_F64, FC_POOL_EVEN_F64)
    /* Fast paths for one image of one-value pixels (NCHW planes), window columns contiguous
     * (dilation 1 along W for the fused values kernels), stride 1 or 2 along W.
     *
     * fused(out, row, rstep, nrows, W, OW, pw, kw, sw): a whole output row. out[o] is the
     *   max of the window whose first column is o * sw - pw, over nrows input rows (row,
     *   row + rstep, ...; at least one), columns outside [0, W) counting as -inf. Vertical
     *   maxima of whole vectors are computed once and the kw taps are lane shifts / even-odd
     *   splits of them, so nothing goes through memory; vectors that would cross the row's
     *   ends are loaded inside it and shifted, with -inf shifted in. Needs W >= L, OW >= L.
     * argmax_c1(out, oi, img, W, h0, nrows, dh, col0, nblk, kw, dw, sw): values and flat
     *   indices of outputs b*L + l (b < nblk) whose windows start at column
     *   col0 + (b*L + l) * sw, rows h0 + r*dh (r < nrows), scanned in PyTorch's order.
     *   Reads columns up to col0 + (nblk*L - 1)*sw + (kw-1)*dw + sw - 1.
     * argmax_px(o, oi, img, W, C, h0, h1, dh, w0, w1, dw): values and indices of one
     *   output pixel of C values (vectors over the channels), taps rows h0 <= ih < h1 step
     *   dh, columns w0 <= iw < w1 step dw.
     */
    #define FC_POOL_FAST_DEFINE(T, SUF, V, VU, VI, IT, L, IOTA, EVEN, ODD, WIDE, WIDE_U) \
    static inline __attribute__((always_inline)) V fc_pool_vcol_##SUF( \
            const T *p, Py_ssize_t rstep, Py_ssize_t nrows) { \
        V a = *(const VU *)p; \
        for (Py_ssize_t r = 1; r < nrows; ++r) \
            a = fc_pool_vmax_##SUF(a, *(const VU *)(p + r * rstep)); \
        return a; \
    } \
    static inline __attribute__((always_inline)) V fc_pool_shift_##SUF(V a, V b, int s) { \
        const VI iota = IOTA; \
        return __builtin_shuffle(a, b, iota + (IT)s); \
    } \
    static inline __attribute__((always_inline)) V fc_pool_vsafe_##SUF( \
            const T *row, Py_ssize_t rstep, Py_ssize_t nrows, Py_ssize_t q, Py_ssize_t W) { \
        /* vertical max of columns q .. q + L - 1, -inf outside [0, W); needs W >= L */ \
        if (q >= 0 && q + L <= W) return fc_pool_vcol_##SUF(row + q, rstep, nrows); \
        const VI iota = IOTA; \
        Py_ssize_t qc = q < 0 ? 0 : W - L; \
        Py_ssize_t sh = q - qc; \
        if (sh < -L) sh = -L; \
        if (sh > L) sh = L; \
        V v = fc_pool_vcol_##SUF(row + qc, rstep, nrows); \
        VI idx = iota + (IT)sh; \
        VI inside = (VI)(idx >= 0) & (VI)(idx < (IT)L); \
        V moved = __builtin_shuffle(v, idx); \
        V ninf = (V){0} + (T)(-INFINITY); \
        return (V)(((VI)moved & inside) | ((VI)ninf & ~inside)); \
    } \
    static inline __attribute__((always_inline)) void fc_pool_fused_s1_##SUF( \
            T *out, const T *row, Py_ssize_t rstep, Py_ssize_t nrows, Py_ssize_t W, \
            Py_ssize_t OW, Py_ssize_t pw, const int kw) { \
        Py_ssize_t start = 0, next_c = -(Py_ssize_t)1 << 62; \
        V carry = (V){0}; \
        while (start < OW) { \
            if (start + L > OW) start = OW - L; /* last block overlaps the one before */ \
            Py_ssize_t c = start - pw; \
            V v0 = c == next_c ? carry : fc_pool_vsafe_##SUF(row, rstep, nrows, c, W); \
            V v1 = fc_pool_vsafe_##SUF(row, rstep, nrows, c + L, W); \
            V acc = v0; \
            for (int t = 1; t < kw; ++t) \
                acc = fc_pool_vmax_##SUF(acc, fc_pool_shift_##SUF(v0, v1, t)); \
            *(VU *)(out + start) = acc; \
            carry = v1; \
            next_c = c + L; \
            start += L; \
        } \
    } \
    static inline __attribute__((always_inline)) void fc_pool_fused_s2_##SUF( \
            T *out, const T *row, Py_ssize_t rstep, Py_ssize_t nrows, Py_ssize_t W, \
            Py_ssize_t OW, Py_ssize_t pw, const int kw) { \
        const VI even = EVEN, odd = ODD; \
        Py_ssize_t start = 0, next_c = -(Py_ssize_t)1 << 62; \
        V carry = (V){0}; \
        while (start < OW) { \
            if (start + L > OW) start = OW - L; /* last block overlaps the one before */ \
            Py_ssize_t c = 2 * start - pw; \
            V v0 = c == next_c ? carry : fc_pool_vsafe_##SUF(row, rstep, nrows, c, W); \
            V v1 = fc_pool_vsafe_##SUF(row, rstep, nrows, c + L, W); \
            V e = __builtin_shuffle(v0, v1, even); \
            V o = __builtin_shuffle(v0, v1, odd); \
            V acc = kw > 1 ? fc_pool_vmax_##SUF(e, o) : e; \
            if (kw > 2) { \
                V v2 = fc_pool_vsafe_##SUF(row, rstep, nrows, c + 2 * L, W); \
                V e2 = __builtin_shuffle(v2, v2, even); \
                acc = fc_pool_vmax_##SUF(acc, fc_pool_shift_##SUF(e, e2, 1)); \
                if (kw > 3) acc = fc_pool_vmax_##SUF( \
                    acc, fc_pool_shift_##SUF(o, __builtin_shuffle(v2, v2, odd), 1)); \
                if (kw > 4) acc = fc_pool_vmax_##SUF(acc, fc_pool_shift_##SUF(e, e2, 2)); \
                carry = v2; \
                next_c = c + 2 * L; \
            } \
            *(VU *)(out + start) = acc; \
            start += L; \
        } \
    } \
    static void fc_pool_fused_##SUF(T *out, const T *row, Py_ssize_t rstep, Py_ssize_t nrows, \
                                    Py_ssize_t W, Py_ssize_t OW, Py_ssize_t pw, int kw, \
                                    int sw) { \
        if (sw == 1) { \
            switch (kw) { \
            case 1: fc_pool_fused_s1_##SUF(out, row, rstep, nrows, W, OW, pw, 1); break; \
            case 2: fc_pool_fused_s1_##SUF(out, row, rstep, nrows, W, OW, pw, 2); break; \
            case 3: fc_pool_fused_s1_##SUF(out, row, rstep, nrows, W, OW, pw, 3); break; \
            case 4: fc_pool_fused_s1_##SUF(out, row, rstep, nrows, W, OW, pw, 4); break; \
            default: fc_pool_fused_s1_##SUF(out, row, rstep, nrows, W, OW, pw, 5); break; \
            } \
        } else { \
            switch (kw) { \
            case 1: fc_pool_fused_s2_##SUF(out, row, rstep, nrows, W, OW, pw, 1); break; \
            case 2: fc_pool_fused_s2_##SUF(out, row, rstep, nrows, W, OW, pw, 2); break; \
            case 3: fc_pool_fused_s2_##SUF(out, row, rstep, nrows, W, OW, pw, 3); break; \
            case 4: fc_pool_fused_s2_##SUF(out, row, rstep, nrows, W, OW, pw, 4); break; \
            default: fc_pool_fused_s2_##SUF(out, row, rstep, nrows, W, OW, pw, 5); break; \
            } \
        } \
    } \
    static void fc_pool_argmax_c1_##SUF(T *out, int64_t *oi, const T *img, Py_ssize_t W, \
                                        Py_ssize_t h0, Py_ssize_t nrows, Py_ssize_t dh, \
                                        Py_ssize_t col0, Py_ssize_t nblk, Py_ssize_t kw, \
                                        Py_ssize_t dw, int sw) { \
        const VI iota = IOTA, even = EVEN; \
        const VI lane = iota * (IT)sw; \
        for (Py_ssize_t b = 0; b < nblk; ++b) { \
            Py_ssize_t c = col0 + b * L * sw; \
            V best = (V){0} + (T)(-INFINITY); \
            VI bidx = lane + (IT)(h0 * W + c); \
            for (Py_ssize_t r = 0; r < nrows; ++r) { \
                Py_ssize_t ih = h0 + r * dh; \
                const T *row = img + ih * W; \
                for (Py_ssize_t t = 0; t < kw; ++t) { \
                    Py_ssize_t col = c + t * dw; \
                    V v = *(const VU *)(row + col); \
                    if (sw == 2) { V w = *(const VU *)(row + col + L); v = __builtin_shuffle(v, w, even); } \
                    VI take = (VI)(v > best) | (VI)(v != v); \
                    best = (V)(((VI)v & take) | ((VI)best & ~take)); \
                    bidx = ((lane + (IT)(ih * W + col)) & take) | (bidx & ~take); \
                } \
            } \
            *(VU *)(out + b * L) = best; \
            *(WIDE_U *)(oi + b * L) = __builtin_convertvector(bidx, WIDE); \
        } \
    } \
    static void fc_pool_argmax_px_##SUF(T *o, int64_t *oi, const T *img, Py_ssize_t W, \
                                        Py_ssize_t C, Py_ssize_t h0, Py_ssize_t h1, \
                                        Py_ssize_t dh, Py_ssize_t w0, Py_ssize_t w1, \
                                        Py_ssize_t dw) { \
        Py_ssize_t c = 0, ih, iw; \
        for (; c + L <= C; c += L) { \
            V best = (V){0} + (T)(-INFINITY); \
            VI bidx = (VI){0} + (IT)(h0 * W + w0); \
            for (ih = h0; ih < h1; ih += dh) \
                for (iw = w0; iw < w1; iw += dw) { \
                    V v = *(const VU *)(img + (ih * W + iw) * C + c); \
                    VI take = (VI)(v > best) | (VI)(v != v); \
                    best = (V)(((VI)v & take) | ((VI)best & ~take)); \
                    bidx = (((VI){0} + (IT)(ih * W + iw)) & take) | (bidx & ~take); \
                } \
            *(VU *)(o + c) = best; \
            *(WIDE_U *)(oi + c) = __builtin_convertvector(bidx, WIDE); \
        } \
        for (; c < C; ++c) { \
            T best = (T)(-INFINITY); \
            Py_ssize_t bpos = h0 * W + w0; \
            for (ih = h0; ih < h1; ih += dh) \
                for (iw = w0; iw < w1; iw += dw) { \
                    T v = img[(ih * W + iw) * C + c]; \
                    if (v > best || v != v) { best = v; bpos = ih * W + iw; } \
                } \
            o[c] = best; \
            oi[c] = bpos; \
        } \
    }

    FC_POOL_FAST_DEFINE(float, f32, fc_vf32, fc_vf32_u, fc_vi32, int, FC_LANES_F32,
                        FC_POOL_IOTA_F32, FC_POOL_EVEN_F32, FC_POOL_ODD_F32,
                        fc_pool_wide_f32, fc_pool_wide_f32_u)
    FC_POOL_FAST_DEFINE(double, f64, fc_vf64, fc_vf64_u, fc_vi64, long long, FC_LANES_F64,
                        FC_POOL_IOTA_F64, FC_POOL_EVEN_F64, FC_POOL_ODD_F64,
                        fc_pool_wide_f64, fc_pool_wide_f64_u)
    """
    enum:
        FC_LANES_F32
        FC_LANES_F64
    const char *FC_ISA_NAME
    void fc_pool_fill_f32(float *dst, float value, Py_ssize_t n) nogil
    void fc_pool_fill_f64(double *dst, double value, Py_ssize_t n) nogil
    void fc_pool_max_offs_f32(float *dst, const float *src, const Py_ssize_t *offs,
                              Py_ssize_t k, Py_ssize_t n) nogil
    void fc_pool_max_offs_f64(double *dst, const double *src, const Py_ssize_t *offs,
                              Py_ssize_t k, Py_ssize_t n) nogil
    void fc_pool_max_step_f32(float *dst, const float *src, Py_ssize_t step, Py_ssize_t k,
                              Py_ssize_t n) nogil
    void fc_pool_max_step_f64(double *dst, const double *src, Py_ssize_t step, Py_ssize_t k,
                              Py_ssize_t n) nogil
    void fc_pool_max_pixels_f32(float *dst, const float *src, const Py_ssize_t *offs,
                                Py_ssize_t k, Py_ssize_t npx, Py_ssize_t c,
                                Py_ssize_t px_step) nogil
    void fc_pool_max_pixels_f64(double *dst, const double *src, const Py_ssize_t *offs,
                                Py_ssize_t k, Py_ssize_t npx, Py_ssize_t c,
                                Py_ssize_t px_step) nogil
    void fc_pool_max_stride2_f32(float *dst, const float *src, const Py_ssize_t *offs,
                                 Py_ssize_t k, Py_ssize_t n) nogil
    void fc_pool_max_stride2_f64(double *dst, const double *src, const Py_ssize_t *offs,
                                 Py_ssize_t k, Py_ssize_t n) nogil
    void fc_pool_fused_f32(float *out, const float *row, Py_ssize_t rstep, Py_ssize_t nrows,
                           Py_ssize_t W, Py_ssize_t OW, Py_ssize_t pw, int kw, int sw) nogil
    void fc_pool_fused_f64(double *out, const double *row, Py_ssize_t rstep, Py_ssize_t nrows,
                           Py_ssize_t W, Py_ssize_t OW, Py_ssize_t pw, int kw, int sw) nogil
    void fc_pool_argmax_c1_f32(float *out, int64_t *oi, const float *img, Py_ssize_t W,
                               Py_ssize_t h0, Py_ssize_t nrows, Py_ssize_t dh, Py_ssize_t col0,
                               Py_ssize_t nblk, Py_ssize_t kw, Py_ssize_t dw, int sw) nogil
    void fc_pool_argmax_c1_f64(double *out, int64_t *oi, const double *img, Py_ssize_t W,
                               Py_ssize_t h0, Py_ssize_t nrows, Py_ssize_t dh, Py_ssize_t col0,
                               Py_ssize_t nblk, Py_ssize_t kw, Py_ssize_t dw, int sw) nogil
    void fc_pool_argmax_px_f32(float *o, int64_t *oi, const float *img, Py_ssize_t W,
                               Py_ssize_t C, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t dh,
                               Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t dw) nogil
    void fc_pool_argmax_px_f64(double *o, int64_t *oi, const double *img, Py_ssize_t W,
                               Py_ssize_t C, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t dh,
                               Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t dw) nogil
    void fc_pool_gather_f32(float *dst, const float *src, Py_ssize_t stride, Py_ssize_t n) nogil
    void fc_pool_gather_f64(double *dst, const double *src, Py_ssize_t stride,
                            Py_ssize_t n) nogil


ISA = FC_ISA_NAME.decode()

cdef enum:
    # Run serially below this many input elements: waking threads costs more than it saves.
    PARALLEL_MIN_ELEMENTS = 1 << 15
    # Widest window (along W) of the fused values kernels.
    FUSED_MAX_KW = 5
    # Widest window (along W) of the separable path (fastconv.pool sends wider ones to the
    # direct loop).
    SEPARABLE_MAX_TAPS = 64


# Test hook: False sends every case to the generic paths (separable rows without the fused
# kernel, scalar indices), so the tests can check those on small inputs too.
cdef bint _vector_paths = True


def _set_vector_paths(bint enabled):
    """Enable (default) or disable the fused and vectorised-indices fast paths (for tests)."""
    global _vector_paths
    _vector_paths = enabled


cdef struct _Geometry:
    Py_ssize_t H, W, C          # input image: H rows of W pixels of C values
    Py_ssize_t OH, OW           # output rows and columns
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    # separable path only
    Py_ssize_t row_len          # padded row length in pixels: covers every window, >= W + pw
    Py_ssize_t phase_len        # length of one stride-phase array (C == 1, sw > 2)
    Py_ssize_t n_phases         # number of stride phases the taps use
    bint fused                  # C == 1, sw <= 2, dw == 1, small kw: fused row kernel
    bint vector_indices         # flat indices fit the vector index lanes (int32 for float32)


# ---------------------------------------------------------------------------------------------
# Typed wrappers over the C primitives (one name per operation for both float types).

cdef inline Py_ssize_t _lanes(floating *dummy) noexcept nogil:
    if floating is float:
        return FC_LANES_F32
    else:
        return FC_LANES_F64


cdef inline void _fill(floating *dst, floating value, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_pool_fill_f32(dst, value, n)
    else:
        fc_pool_fill_f64(dst, value, n)


cdef inline void _max_offs(floating *dst, const floating *src, const Py_ssize_t *offs,
                           Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_pool_max_offs_f32(dst, src, offs, k, n)
    else:
        fc_pool_max_offs_f64(dst, src, offs, k, n)


cdef inline void _max_step(floating *dst, const floating *src, Py_ssize_t step, Py_ssize_t k,
                           Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_pool_max_step_f32(dst, src, step, k, n)
    else:
        fc_pool_max_step_f64(dst, src, step, k, n)


cdef inline void _max_pixels(floating *dst, const floating *src, const Py_ssize_t *offs,
                             Py_ssize_t k, Py_ssize_t npx, Py_ssize_t c,
                             Py_ssize_t px_step) noexcept nogil:
    if floating is float:
        fc_pool_max_pixels_f32(dst, src, offs, k, npx, c, px_step)
    else:
        fc_pool_max_pixels_f64(dst, src, offs, k, npx, c, px_step)


cdef inline void _max_stride2(floating *dst, const floating *src, const Py_ssize_t *offs,
                              Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_pool_max_stride2_f32(dst, src, offs, k, n)
    else:
        fc_pool_max_stride2_f64(dst, src, offs, k, n)


cdef inline void _gather(floating *dst, const floating *src, Py_ssize_t stride,
                         Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_pool_gather_f32(dst, src, stride, n)
    else:
        fc_pool_gather_f64(dst, src, stride, n)


cdef inline void _fused(floating *out, const floating *row, Py_ssize_t rstep, Py_ssize_t nrows,
                        Py_ssize_t W, Py_ssize_t OW, Py_ssize_t pw, int kw,
                        int sw) noexcept nogil:
    if floating is float:
        fc_pool_fused_f32(out, row, rstep, nrows, W, OW, pw, kw, sw)
    else:
        fc_pool_fused_f64(out, row, rstep, nrows, W, OW, pw, kw, sw)


cdef inline void _argmax_c1(floating *out, int64_t *oi, const floating *img, Py_ssize_t W,
                            Py_ssize_t h0, Py_ssize_t nrows, Py_ssize_t dh, Py_ssize_t col0,
                            Py_ssize_t nblk, Py_ssize_t kw, Py_ssize_t dw,
                            int sw) noexcept nogil:
    if floating is float:
        fc_pool_argmax_c1_f32(out, oi, img, W, h0, nrows, dh, col0, nblk, kw, dw, sw)
    else:
        fc_pool_argmax_c1_f64(out, oi, img, W, h0, nrows, dh, col0, nblk, kw, dw, sw)


cdef inline void _argmax_px(floating *o, int64_t *oi, const floating *img, Py_ssize_t W,
                            Py_ssize_t C, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t dh,
                            Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t dw) noexcept nogil:
    if floating is float:
        fc_pool_argmax_px_f32(o, oi, img, W, C, h0, h1, dh, w0, w1, dw)
    else:
        fc_pool_argmax_px_f64(o, oi, img, W, C, h0, h1, dh, w0, w1, dw)


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t dilation) noexcept nogil:
    """The first tap start + j * dilation (j >= 0) that is >= 0."""
    if start >= 0:
        return start
    return start + ((-start + dilation - 1) // dilation) * dilation


cdef inline Py_ssize_t _count_taps(Py_ssize_t first, Py_ssize_t end,
                                   Py_ssize_t step) noexcept nogil:
    """How many of first, first + step, ... lie below end."""
    return (end - first - 1) // step + 1 if first < end else 0


# ---------------------------------------------------------------------------------------------
# One output row, values only.

cdef void _separable_row(
    const floating *img,        # IN  (H, W, C) one image
    floating *out_row,          # OUT (OW, C) output row oh
    floating *scratch,          # thread-local, see separable_scratch_size (NULL if fused)
    const Py_ssize_t *col_offs, # IN  (kw,) offset of tap j in the column pass's source
    const Py_ssize_t *phases,   # IN  (n_phases,) stride phase of each phase array
    Py_ssize_t oh,
    const _Geometry *g,
) noexcept nogil:
    cdef Py_ssize_t C = g.C, W = g.W
    cdef Py_ssize_t img_row = W * C
    cdef Py_ssize_t padded = (g.row_len + g.sw) * C
    cdef floating *row = scratch                  # ((row_len + sw) * C,) padded row max
    cdef floating *phase_rows = scratch + padded  # (n_phases * phase_len,) C == 1, sw > 2
    cdef Py_ssize_t start = oh * g.sh - g.ph
    cdef Py_ssize_t h0 = _first_tap(start, g.dh)
    cdef Py_ssize_t n_rows = _count_taps(h0, min(start + (g.kh - 1) * g.dh + 1, g.H), g.dh)
    cdef Py_ssize_t p

    if g.fused:
        # Straight from the input rows, padding and row ends handled in registers.
        if n_rows > 0:
            _fused(out_row, img + h0 * W, g.dh * W, n_rows, W, g.OW, g.pw, <int>g.kw,
                   <int>g.sw)
        else:  # no window row inside the image
            _fill(out_row, -INFINITY, g.OW)
        return

    # Row pass: NaN-aware max of the window's valid input rows, -inf around them.
    _fill(row, -INFINITY, g.pw * C)
    if n_rows > 0:
        _max_step(row + g.pw * C, img + h0 * img_row, g.dh * img_row, n_rows, img_row)
    else:
        _fill(row + g.pw * C, -INFINITY, img_row)
    _fill(row + (g.pw + W) * C, -INFINITY, padded - (g.pw + W) * C)

    # Column pass: max over the kw taps of every output pixel.
    if g.sw == 1:
        _max_offs(out_row, row, col_offs, g.kw, g.OW * C)
    elif C == 1 and g.sw == 2:
        _max_stride2(out_row, row, col_offs, g.kw, g.OW)
    elif C == 1:
        for p in range(g.n_phases):
            _gather(phase_rows + p * g.phase_len, row + phases[p], g.sw, g.phase_len)
        _max_offs(out_row, phase_rows, col_offs, g.kw, g.OW)
    else:
        _max_pixels(out_row, row, col_offs, g.kw, g.OW, C, g.sw * C)


# ---------------------------------------------------------------------------------------------
# One output row, direct path (PyTorch's loop), with or without indices.

cdef void _direct_pixel(
    const floating *img,        # IN  (H, W, C) one image
    floating *o,                # OUT (C,) output pixel
    int64_t *oi,                # OUT (C,) flat input index h * W + w, or NULL
    Py_ssize_t h0, Py_ssize_t h1,   # valid window rows: h0, h0 + dh, ... < h1
    Py_ssize_t ow,
    const _Geometry *g,
) noexcept nogil:
    cdef Py_ssize_t C = g.C, W = g.W
    cdef Py_ssize_t start_w = ow * g.sw - g.pw
    cdef Py_ssize_t w0 = _first_tap(start_w, g.dw)
    cdef Py_ssize_t w1 = min(start_w + (g.kw - 1) * g.dw + 1, W)
    cdef Py_ssize_t ih, iw, c, pos, best_pos
    cdef floating v, best
    cdef const floating *src

    if oi != NULL and C > 1 and g.vector_indices:
        _argmax_px(o, oi, img, W, C, h0, h1, g.dh, w0, w1, g.dw)
        return
    if C == 1:
        best = -INFINITY
        best_pos = h0 * W + w0
        ih = h0
        while ih < h1:
            iw = w0
            while iw < w1:
                v = img[ih * W + iw]
                if v > best or v != v:
                    best = v
                    best_pos = ih * W + iw
                iw = iw + g.dw
            ih = ih + g.dh
        o[0] = best
        if oi != NULL:
            oi[0] = best_pos
        return
    for c in range(C):
        o[c] = -INFINITY
        if oi != NULL:
            oi[c] = h0 * W + w0
    ih = h0
    while ih < h1:
        iw = w0
        while iw < w1:
            src = img + (ih * W + iw) * C
            pos = ih * W + iw
            for c in range(C):
                v = src[c]
                if v > o[c] or v != v:
                    o[c] = v
                    if oi != NULL:
                        oi[c] = pos
            iw = iw + g.dw
        ih = ih + g.dh


cdef void _direct_row(
    const floating *img,        # IN  (H, W, C) one image
    floating *out_row,          # OUT (OW, C) output row oh
    int64_t *idx_row,           # OUT (OW, C) flat input index h * W + w, or NULL
    Py_ssize_t oh,
    const _Geometry *g,
) noexcept nogil:
    cdef Py_ssize_t C = g.C, W = g.W
    cdef Py_ssize_t start_h = oh * g.sh - g.ph
    cdef Py_ssize_t h0 = _first_tap(start_h, g.dh)
    cdef Py_ssize_t h1 = min(start_h + (g.kh - 1) * g.dh + 1, g.H)
    cdef Py_ssize_t ow, oa = 0, nblk = 0, col0 = 0, lanes, last, n_rows, vec_end = 0
    cdef int64_t *oi = NULL

    if g.vector_indices and idx_row != NULL and C == 1 and g.sw <= 2:
        # Outputs whose taps (and vector loads) all lie inside the row, in vectors: a run of
        # whole blocks from the first such output, then one block ending at the last such
        # output (overlapping the run; recomputed outputs get the same values and indices).
        lanes = _lanes(out_row)
        oa = (g.pw + g.sw - 1) // g.sw
        col0 = oa * g.sw - g.pw
        n_rows = _count_taps(h0, h1, g.dh)
        # last block start s with (s * sw - pw) + lanes * sw + (kw - 1) * dw <= W
        last = W - (g.kw - 1) * g.dw - lanes * g.sw + g.pw
        last = min(last // g.sw if last >= 0 else -1, g.OW - lanes)
        if last >= oa:
            nblk = (last - oa) // lanes + 1
            _argmax_c1(out_row + oa, idx_row + oa, img, W, h0, n_rows, g.dh, col0, nblk, g.kw,
                       g.dw, <int>g.sw)
            if oa + nblk * lanes <= last + lanes - 1:
                _argmax_c1(out_row + last, idx_row + last, img, W, h0, n_rows, g.dh,
                           last * g.sw - g.pw, 1, g.kw, g.dw, <int>g.sw)
            vec_end = last + lanes
    for ow in range(g.OW):
        if oa <= ow < vec_end:
            continue
        if idx_row != NULL:
            oi = idx_row + ow * C
        _direct_pixel(img, out_row + ow * C, oi, h0, h1, ow, g)


# ---------------------------------------------------------------------------------------------
# Entry points.

cdef _Geometry _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t OH,
                         Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                         Py_ssize_t dw, Py_ssize_t lanes, bint wide_lanes) noexcept nogil:
    cdef _Geometry g
    g.H, g.W, g.C, g.OH, g.OW = H, W, C, OH, OW
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = kh, kw, sh, sw, ph, pw, dh, dw
    g.row_len = max(W + 2 * pw, (OW - 1) * sw + (kw - 1) * dw + 1)
    g.phase_len = OW + ((kw - 1) * dw) // sw
    g.n_phases = 0
    # the fused kernels shift vectors by up to (kw - 1) lanes (stride 1) or
    # (kw - 1) // 2 lanes of half vectors (stride 2)
    g.fused = (_vector_paths and C == 1 and dw == 1 and kw <= FUSED_MAX_KW
               and W >= lanes and OW >= lanes
               and ((sw == 1 and kw <= lanes + 1) or
                    (sw == 2 and (kw - 1) // 2 <= lanes // 2)))
    # float32 kernels keep indices in int32 lanes
    g.vector_indices = _vector_paths and (wide_lanes or H * W < 2147483647)
    return g


def separable_scratch_size(Py_ssize_t W, Py_ssize_t C, Py_ssize_t OW, Py_ssize_t kw,
                           Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t dw):
    """Elements of thread-local scratch the separable path needs (the caller's size check)."""
    cdef Py_ssize_t row_len = max(W + 2 * pw, (OW - 1) * sw + (kw - 1) * dw + 1)
    cdef Py_ssize_t size = (row_len + sw) * C
    if C == 1 and sw > 2:
        size += min(kw, sw) * (OW + ((kw - 1) * dw) // sw)
    return size


def max_pool2d_values(
    const floating[:, :, :, ::1] x not None,   # IN  (B, H, W, C); NCHW data as (N*C, H, W, 1)
    floating[:, :, :, ::1] out not None,       # OUT (B, OH, OW, C)
    Py_ssize_t kh, Py_ssize_t kw,              # kernel size
    Py_ssize_t sh, Py_ssize_t sw,              # stride
    Py_ssize_t ph, Py_ssize_t pw,              # padding (-inf)
    Py_ssize_t dh, Py_ssize_t dw,              # dilation
    bint separable,                            # separable path (else the direct loop)
    int num_threads,
):
    """out = max pool of x (values only; NaN propagates, padding is -inf).

    Arguments are trusted (validated by fastconv.pool); separable needs kw <= 64."""
    cdef Py_ssize_t B = x.shape[0]
    cdef _Geometry g = _geometry(x.shape[1], x.shape[2], x.shape[3], out.shape[1],
                                 out.shape[2], kh, kw, sh, sw, ph, pw, dh, dw,
                                 FC_LANES_F32 if floating is float else FC_LANES_F64,
                                 floating is double)
    cdef Py_ssize_t n_items = B * g.OH
    cdef Py_ssize_t img_size = g.H * g.W * g.C
    cdef Py_ssize_t out_row = g.OW * g.C
    cdef Py_ssize_t item, b, oh, j, tap, p, scratch_stride = 0
    cdef int master_cpu
    cdef bint threaded = n_items > 1 and B * img_size >= PARALLEL_MIN_ELEMENTS
    cdef const floating *x_data
    cdef floating *out_data
    cdef floating *scratch = NULL
    cdef Py_ssize_t col_offs[SEPARABLE_MAX_TAPS]   # column-pass tap offsets
    cdef Py_ssize_t phases[SEPARABLE_MAX_TAPS]     # stride phase of each phase array

    if n_items == 0:
        return
    x_data = &x[0, 0, 0, 0]
    out_data = &out[0, 0, 0, 0]

    if not separable or kw > SEPARABLE_MAX_TAPS:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads, use_threads_if=threaded):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            for item in prange(n_items, schedule="static"):
                b = item // g.OH
                oh = item - b * g.OH
                _direct_row(x_data + b * img_size, out_data + item * out_row, NULL, oh, &g)
        return

    # Column-pass tap offsets: into the padded row (sw <= 2, or C > 1: relative to the
    # window's first pixel), or into the stride-phase arrays (C == 1, sw > 2).
    if sw <= 2 or g.C > 1:
        for j in range(kw):
            col_offs[j] = j * dw * g.C
    else:
        for j in range(kw):
            tap = j * dw
            for p in range(g.n_phases):
                if phases[p] == tap % sw:
                    break
            else:
                p = g.n_phases
                phases[p] = tap % sw
                g.n_phases += 1
            col_offs[j] = p * g.phase_len + tap // sw

    if not g.fused:
        scratch_stride = separable_scratch_size(g.W, g.C, g.OW, kw, sw, pw, dw)
        scratch = <floating *>malloc(num_threads * scratch_stride * sizeof(floating))
        if scratch == NULL:
            raise MemoryError("max_pool2d: cannot allocate the per-thread row buffers")
    try:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads, use_threads_if=threaded):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            for item in prange(n_items, schedule="static"):
                b = item // g.OH
                oh = item - b * g.OH
                _separable_row(x_data + b * img_size, out_data + item * out_row,
                               scratch + threadid() * scratch_stride, col_offs, phases, oh, &g)
    finally:
        free(scratch)


def max_pool2d_indices(
    const floating[:, :, :, ::1] x not None,   # IN  (B, H, W, C); NCHW data as (N*C, H, W, 1)
    floating[:, :, :, ::1] out not None,       # OUT (B, OH, OW, C) values
    int64_t[:, :, :, ::1] indices not None,    # OUT (B, OH, OW, C) flat index h * W + w
    Py_ssize_t kh, Py_ssize_t kw,              # kernel size
    Py_ssize_t sh, Py_ssize_t sw,              # stride
    Py_ssize_t ph, Py_ssize_t pw,              # padding (-inf)
    Py_ssize_t dh, Py_ssize_t dw,              # dilation
    int num_threads,
):
    """out, indices = max pool of x and where each maximum was (PyTorch's conventions).

    Arguments are trusted (validated by fastconv.pool)."""
    cdef Py_ssize_t B = x.shape[0]
    cdef _Geometry g = _geometry(x.shape[1], x.shape[2], x.shape[3], out.shape[1],
                                 out.shape[2], kh, kw, sh, sw, ph, pw, dh, dw,
                                 FC_LANES_F32 if floating is float else FC_LANES_F64,
                                 floating is double)
    cdef Py_ssize_t n_items = B * g.OH
    cdef Py_ssize_t img_size = g.H * g.W * g.C
    cdef Py_ssize_t out_row = g.OW * g.C
    cdef Py_ssize_t item, b, oh
    cdef int master_cpu
    cdef bint threaded = n_items > 1 and B * img_size >= PARALLEL_MIN_ELEMENTS
    cdef const floating *x_data
    cdef floating *out_data
    cdef int64_t *idx_data

    if n_items == 0:
        return
    x_data = &x[0, 0, 0, 0]
    out_data = &out[0, 0, 0, 0]
    idx_data = &indices[0, 0, 0, 0]
    master_cpu = fc_current_cpu()
    with nogil, parallel(num_threads=num_threads, use_threads_if=threaded):
        fc_leave_master_cpu(master_cpu)  # see _threads.h
        for item in prange(n_items, schedule="static"):
            b = item // g.OH
            oh = item - b * g.OH
            _direct_row(x_data + b * img_size, out_data + item * out_row,
                        idx_data + item * out_row, oh, &g)
