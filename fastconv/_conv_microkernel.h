/* The register-blocked GEMM micro-kernel under conv2d.
 *
 *   C[i][j] = init[i][j] + sum_r A[r][i] * B[r][j]     0 <= i < FC_MR, 0 <= j < FC_NR
 *
 * A holds FC_MR filters: read in place from the filters' own rows, or from a packed panel
 * (FC_MR weights per reduction step r). Row r of B is a window into the thread's input slab
 * with output *pixels* along j, so a row of C is a contiguous run of one output plane. All
 * FC_MR x FC_NV accumulators stay in vector registers; each step loads FC_NV vectors of B and
 * broadcasts FC_MR weights. The reduction runs over r in order, so a result does not depend
 * on how the caller splits work across threads.
 */
#ifndef FASTCONV_CONV_MICROKERNEL_H
#define FASTCONV_CONV_MICROKERNEL_H

#include <Python.h> /* Py_ssize_t */
#include "_simd.h"

/* Tile shape: FC_MR rows (output channels) x FC_NV vectors (pixels); sized so that the
 * accumulators plus FC_NV loads and one broadcast fit the register file. MR = 8 also divides
 * the usual channel counts (16, 32, 64, ...), so no tile rows are wasted on them.
 * -DFC_MR=.. -DFC_NV=.. in CFLAGS override them for tuning experiments. */
#if !defined(FC_MR) || !defined(FC_NV)
#if FC_VEC_BYTES == 64
#define FC_MR 8  /* 16 accumulators of 32 zmm; measured best on Zen 4 (1 zmm FMA/cycle) */
#define FC_NV 2
#elif FC_VEC_BYTES == 32
/* 12 accumulators of 16 ymm. 4 x 3 loads 7 values per 12 FMAs (6 x 2: 8) and divides the
 * usual channel counts; on Zen 3 (2 ymm FMAs/cycle) 3.5% faster than 6 x 2 over 11 layers
 * (interleaved, 2 threads; from 7% faster on resnet_28 to 2% slower on a few). */
#define FC_MR 4
#define FC_NV 3
#else
#define FC_MR 6  /* 12 accumulators + 2 loads + 1 broadcast + 1 product (no FMA) = 16 xmm */
#define FC_NV 2
#endif
#endif
/* FC_EMBEDDED_BROADCAST=1 (AVX-512 only, tuning experiments): each FMA broadcasts its weight
 * from memory (inline assembly, see fc_microkernel_body) instead of one register broadcast per
 * weight. Off by default: on Zen 5 (2 full-width zmm FMAs/cycle) it took 1.19-1.26x the time
 * on the heavy 3x3 layers (2 threads, interleaved), as it loads each weight once per vector
 * of pixels; on Zen 4 (1 zmm FMA/cycle) it had saved 0-4%. */
#ifndef FC_EMBEDDED_BROADCAST
#define FC_EMBEDDED_BROADCAST 0
#endif
#if FC_EMBEDDED_BROADCAST && (FC_VEC_BYTES != 64 || defined(__SANITIZE_ADDRESS__))
#undef FC_EMBEDDED_BROADCAST
#define FC_EMBEDDED_BROADCAST 0  /* AddressSanitizer does not see loads in assembly */
#endif
/* FC_STENCIL_ROW_PAIRS=0 (tuning experiments): the planar depthwise kernel computes rows of
 * more than two vectors one at a time (4 FMA chains per tile) instead of two at a time. */
#ifndef FC_STENCIL_ROW_PAIRS
#define FC_STENCIL_ROW_PAIRS 1
#endif
/* The filter-lane kernel (small maps, filters in the vector lanes): up to FC_LANES_NP pixels
 * x 2 vectors of filters, 2 * FC_LANES_NP accumulators plus 2 weight vectors and one
 * broadcast pixel in the register file. */
#if FC_VEC_BYTES == 64
#define FC_LANES_NP 12
#else
#define FC_LANES_NP 6
#endif
/* The channels-last kernel's tiles: up to FC_CL_VECTORS vectors of filters (fc_lanes_step;
 * 4 x 6 pixels: 24 accumulators of 32 zmm; with 16 registers 2 x 6 pixels, as 4 x 3 spilled:
 * 1.9-2.3x the time at AVX2). */
#if FC_VEC_BYTES == 64
#define FC_CL_VECTORS 4
#else
#define FC_CL_VECTORS 2
#endif
/* The one-filter (depthwise) kernel: 4 vector chains hide the FMA latency. */
#define FC_ROW_NV 4
#define FC_ROW_NR_F32 (FC_ROW_NV * FC_LANES_F32)
#define FC_ROW_NR_F64 (FC_ROW_NV * FC_LANES_F64)
#define FC_NR_F32 (FC_NV * FC_LANES_F32)
#define FC_NR_F64 (FC_NV * FC_LANES_F64)

#define FC_T float
#define FC_V fc_vf32
#define FC_VU fc_vf32_u
#define FC_VI fc_vi32
#define FC_LANES FC_LANES_F32
#define FC_H fc_hf32
#define FC_HU fc_hf32_u
#define FC_HI fc_hi32
#define FC_NAME(stem) stem##_f32
#define FC_ASM_TYPE "ps"            /* the instruction suffix and the embedded broadcast */
#define FC_ASM_BCAST "%{1to16%}"    /* of a full vector, for inline assembly (AVX-512) */
#include "_conv_microkernel_impl.h"

#define FC_T double
#define FC_V fc_vf64
#define FC_VU fc_vf64_u
#define FC_VI fc_vi64
#define FC_LANES FC_LANES_F64
#define FC_H fc_hf64
#define FC_HU fc_hf64_u
#define FC_HI fc_hi64
#define FC_NAME(stem) stem##_f64
#define FC_ASM_TYPE "pd"
#define FC_ASM_BCAST "%{1to8%}"
#include "_conv_microkernel_impl.h"

#endif
