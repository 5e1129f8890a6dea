/* Portable SIMD vocabulary for fastconv's kernels: GCC vector extensions.
 *
 * The same source is compiled once per ISA level (see setup.py); the vector width follows the
 * compile flags, so one micro-kernel lowers to AVX-512, AVX2+FMA or SSE2.
 */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

#include <Python.h> /* Py_ssize_t */

#if defined(__AVX512F__)
#define FC_VEC_BYTES 64
#define FC_ISA_NAME "avx512"
#elif defined(__AVX2__)
#define FC_VEC_BYTES 32
#define FC_ISA_NAME "avx2"
#else
#define FC_VEC_BYTES 16
#define FC_ISA_NAME "baseline"
#endif

typedef float fc_vf32 __attribute__((vector_size(FC_VEC_BYTES)));
typedef double fc_vf64 __attribute__((vector_size(FC_VEC_BYTES)));
typedef int fc_vi32 __attribute__((vector_size(FC_VEC_BYTES)));
typedef long long fc_vi64 __attribute__((vector_size(FC_VEC_BYTES)));

/* Unaligned, aliasing-safe views: dereferencing one is a single unaligned vector load/store
 * (memcpy-based loads were seen to cause store-forwarding stalls). */
typedef float fc_vf32_u __attribute__((vector_size(FC_VEC_BYTES), aligned(4), may_alias));
typedef double fc_vf64_u __attribute__((vector_size(FC_VEC_BYTES), aligned(8), may_alias));

#define FC_LANES_F32 (FC_VEC_BYTES / 4)
#define FC_LANES_F64 (FC_VEC_BYTES / 8)

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Copy n elements: whole vectors, then (AVX-512) one masked vector for the tail. Rows in the
 * kernels are short (one output row), where memcpy's call and a scalar tail cost more than
 * the copy itself. */
static inline void fc_copy_f32(float *restrict dst, const float *restrict src, Py_ssize_t n)
{
    Py_ssize_t k = 0;
    for (; k + FC_LANES_F32 <= n; k += FC_LANES_F32)
        *(fc_vf32_u *)(dst + k) = *(const fc_vf32_u *)(src + k);
#if defined(__AVX512F__)
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        _mm512_mask_storeu_ps(dst + k, m, _mm512_maskz_loadu_ps(m, src + k));
    }
#else
    for (; k < n; k++) dst[k] = src[k];
#endif
}

static inline void fc_copy_f64(double *restrict dst, const double *restrict src, Py_ssize_t n)
{
    Py_ssize_t k = 0;
    for (; k + FC_LANES_F64 <= n; k += FC_LANES_F64)
        *(fc_vf64_u *)(dst + k) = *(const fc_vf64_u *)(src + k);
#if defined(__AVX512F__)
    if (k < n) {
        __mmask8 m = (__mmask8)((1u << (n - k)) - 1u);
        _mm512_mask_storeu_pd(dst + k, m, _mm512_maskz_loadu_pd(m, src + k));
    }
#else
    for (; k < n; k++) dst[k] = src[k];
#endif
}

/* Index vectors for __builtin_shuffle: the even / odd lanes of two concatenated vectors. */
#if FC_VEC_BYTES == 64
#define FC_EVEN_F32 {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define FC_ODD_F32 {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
#define FC_EVEN_F64 {0, 2, 4, 6, 8, 10, 12, 14}
#define FC_ODD_F64 {1, 3, 5, 7, 9, 11, 13, 15}
#elif FC_VEC_BYTES == 32
#define FC_EVEN_F32 {0, 2, 4, 6, 8, 10, 12, 14}
#define FC_ODD_F32 {1, 3, 5, 7, 9, 11, 13, 15}
#define FC_EVEN_F64 {0, 2, 4, 6}
#define FC_ODD_F64 {1, 3, 5, 7}
#else
#define FC_EVEN_F32 {0, 2, 4, 6}
#define FC_ODD_F32 {1, 3, 5, 7}
#define FC_EVEN_F64 {0, 2}
#define FC_ODD_F64 {1, 3}
#endif

/* NaN-propagating max (either operand NaN gives NaN), lane-wise and scalar; row and pair
 * reductions for max pooling fused into conv2d. */
#define FC_DEFINE_MAX_NAN(SUF, T, V, VU, VI, LANES, EVEN, ODD)                                \
static inline V fc_vmax_nan_##SUF(V a, V b)                                                 \
{                                                                                           \
    VI take_a = (VI)(a > b) | (VI)(a != a);                                                 \
    return (V)(((VI)a & take_a) | ((VI)b & ~take_a));                                       \
}                                                                                           \
static inline T fc_max_nan_##SUF(T a, T b) { return (a > b || a != a) ? a : b; }          \
/* top[k] = max(top[k], row[k]) for k < n */                                               \
static inline void fc_max_rows_##SUF(T *restrict top, const T *restrict row, Py_ssize_t n)  \
{                                                                                           \
    Py_ssize_t k = 0;                                                                       \
    for (; k + LANES <= n; k += LANES)                                                      \
        *(VU *)(top + k) = fc_vmax_nan_##SUF(*(const VU *)(top + k), *(const VU *)(row + k)); \
    for (; k < n; k++) top[k] = fc_max_nan_##SUF(top[k], row[k]);                           \
}                                                                                           \
/* dst[p * step] = max(src[2p], src[2p + 1]) for p < n (2-wide windows, stride 2) */         \
static inline void fc_max_pairs_##SUF(T *restrict dst, Py_ssize_t step, const T *restrict src, \
                                      Py_ssize_t n)                                         \
{                                                                                           \
    const VI even = EVEN, odd = ODD;                                                        \
    Py_ssize_t p = 0;                                                                       \
    if (step == 1) {                                                                        \
        for (; p + LANES <= n; p += LANES) {                                                \
            V a = *(const VU *)(src + 2 * p), b = *(const VU *)(src + 2 * p + LANES);       \
            *(VU *)(dst + p) = fc_vmax_nan_##SUF(__builtin_shuffle(a, b, even),             \
                                                 __builtin_shuffle(a, b, odd));             \
        }                                                                                   \
    }                                                                                       \
    for (; p < n; p++) dst[p * step] = fc_max_nan_##SUF(src[2 * p], src[2 * p + 1]);        \
}

FC_DEFINE_MAX_NAN(f32, float, fc_vf32, fc_vf32_u, fc_vi32, FC_LANES_F32, FC_EVEN_F32, FC_ODD_F32)
FC_DEFINE_MAX_NAN(f64, double, fc_vf64, fc_vf64_u, fc_vi64, FC_LANES_F64, FC_EVEN_F64, FC_ODD_F64)

#endif
