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

#endif
