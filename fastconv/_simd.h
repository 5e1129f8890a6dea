/* Portable SIMD vocabulary for fastconv's kernels: GCC vector extensions.
 *
 * The same source is compiled once per ISA level (see setup.py); the vector width follows the
 * compile flags, so one micro-kernel lowers to AVX-512, AVX2+FMA or SSE2.
 */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

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

#endif
