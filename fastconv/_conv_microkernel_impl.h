/* Body of the micro-kernel, included once per dtype by _conv_microkernel.h with
 * FC_T (scalar), FC_V / FC_VU (vector, unaligned vector), FC_VI (mask) and FC_NAME set. */

/* Row r of B starts at b + b_offset[r] (rows are windows into the input slab).
 * bias != NULL: start from bias[i] (first reduction block); else from C (later blocks).
 * relu: clamp negatives to 0 after the last block; NaN stays NaN (x < 0 is false for NaN). */
static inline void FC_NAME(fc_microkernel)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset,
    FC_T *restrict c, Py_ssize_t ldc, const FC_T *restrict bias, int relu)
{
    FC_V acc[FC_MR][FC_NV];
    if (bias) {
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < FC_NV; v++) acc[i][v] = (FC_V){0} + bias[i];
        }
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < FC_NV; v++) acc[i][v] = *(const FC_VU *)(c + i * ldc + v * FC_LANES);
        }
    }
    for (Py_ssize_t r = 0; r < depth; r++) {
        FC_V bv[FC_NV];
#pragma GCC unroll 4
        for (int v = 0; v < FC_NV; v++) bv[v] = *(const FC_VU *)(b + b_offset[r] + v * FC_LANES);
        const FC_T *ar = a + r * FC_MR;
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
            const FC_T w = ar[i];
#pragma GCC unroll 4
            for (int v = 0; v < FC_NV; v++) acc[i][v] += bv[v] * w;
        }
    }
    if (relu) {
        const FC_V zero = {0};
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < FC_NV; v++)
                acc[i][v] = (FC_V)((FC_VI)acc[i][v] & ~(FC_VI)(acc[i][v] < zero));
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < FC_NV; v++) *(FC_VU *)(c + i * ldc + v * FC_LANES) = acc[i][v];
    }
}

/* One filter (depthwise convolution: one filter per group) x FC_ROW_NV vectors of pixels;
 * the weight of reduction row r is a[r * FC_MR] (the packed layout of the full kernel). */
static inline void FC_NAME(fc_microkernel_row)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *restrict c, const FC_T *restrict bias, int relu)
{
    FC_V acc[FC_ROW_NV];
#pragma GCC unroll 8
    for (int v = 0; v < FC_ROW_NV; v++) {
        if (bias) acc[v] = (FC_V){0} + bias[0];
        else acc[v] = *(const FC_VU *)(c + v * FC_LANES);
    }
    for (Py_ssize_t r = 0; r < depth; r++) {
        const FC_T w = a[r * FC_MR];
        const FC_T *br = b + b_offset[r];
#pragma GCC unroll 8
        for (int v = 0; v < FC_ROW_NV; v++) acc[v] += *(const FC_VU *)(br + v * FC_LANES) * w;
    }
#pragma GCC unroll 8
    for (int v = 0; v < FC_ROW_NV; v++) {
        if (relu) {
            const FC_V zero = {0};
            acc[v] = (FC_V)((FC_VI)acc[v] & ~(FC_VI)(acc[v] < zero));
        }
        *(FC_VU *)(c + v * FC_LANES) = acc[v];
    }
}

#undef FC_T
#undef FC_V
#undef FC_VU
#undef FC_VI
#undef FC_LANES
#undef FC_NAME
