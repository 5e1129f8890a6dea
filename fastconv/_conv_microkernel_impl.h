/* Body of the micro-kernel, included once per dtype by _conv_microkernel.h with
 * FC_T (scalar), FC_V / FC_VU (vector, unaligned vector), FC_VI (mask) and FC_NAME set. */

/* Row r of B starts at b + b_offset[r] (rows are windows into the input slab).
 * Weight (r, i) is a[r * a_row + i * a_filter]: a packed panel (a_row = FC_MR, a_filter = 1)
 * or the filters' own rows (a_row = 1, a_filter = the filter length), which spares packing.
 * bias != NULL: start from bias[i] (first reduction block); else from c_in, rows ldc_in
 * apart (later blocks: the partial sums, where C goes or staged elsewhere).
 * relu: clamp negatives to 0 after the last block; NaN stays NaN (x < 0 is false for NaN).
 * nv vectors of pixels; half (FC_HALF_TAIL only): the last of them is a half vector, which
 * reads and writes its first FC_LANES / 2 pixels only. */
#if FC_HALF_TAIL
#define FC_IF_HALF(...) do { if (half) { __VA_ARGS__ } } while (0)
#else
#define FC_IF_HALF(...) do { } while (0)
#endif

#if FC_HALF_TAIL
/* x in every lane of a vector, and its low half in *low: one register broadcast for tiles of
 * full vectors and a half one. With the scalar in each product, GCC broadcast it from memory
 * in every FMA, loading it twice per step. x * 1, not 0 + x: -0 + 0 is +0. */
static inline __attribute__((always_inline)) FC_V FC_NAME(fc_splat)(FC_T x, FC_H *low)
{
    const FC_V v = x * ((FC_V){0} + 1);
    __builtin_memcpy(low, &v, sizeof *low);
    return v;
}
#endif
static inline __attribute__((always_inline)) void FC_NAME(fc_microkernel_body)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t a_row, Py_ssize_t a_filter,
    const FC_T *restrict b, const Py_ssize_t *restrict b_offset,
    FC_T *c, Py_ssize_t ldc, const FC_T *c_in, Py_ssize_t ldc_in,
    const FC_T *restrict bias, int relu, const int nv, const int half,
    const unsigned *restrict cmask, const Py_ssize_t *restrict coff, int crows)
{
    const int nf = nv - half;  /* full vectors */
    FC_V acc[FC_MR][FC_NV];
#if FC_HALF_TAIL
    FC_H acch[FC_MR];
#endif
    if (bias) {
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++) acc[i][v] = (FC_V){0} + bias[i];
            FC_IF_HALF(acch[i] = (FC_H){0} + bias[i];);
        }
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++)
                acc[i][v] = *(const FC_VU *)(c_in + i * ldc_in + v * FC_LANES);
            FC_IF_HALF(acch[i] = *(const FC_HU *)(c_in + i * ldc_in + nf * FC_LANES););
        }
    }
    /* Two reduction steps per iteration: measured 2-7% faster over 16 layers, float32 and
     * float64, 2 threads (interleaved, median of 3-5 runs); 4 steps no better. Each
     * accumulator still sums in the order of r, so results do not change. */
#pragma GCC unroll 2
    for (Py_ssize_t r = 0; r < depth; r++) {
        FC_V bv[FC_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++) bv[v] = *(const FC_VU *)(b + b_offset[r] + v * FC_LANES);
#if FC_HALF_TAIL
        FC_H bh = {0};
        FC_IF_HALF(bh = *(const FC_HU *)(b + b_offset[r] + nf * FC_LANES););
#endif
        const FC_T *ar = a + r * a_row;
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#if FC_EMBEDDED_BROADCAST
            /* Each FMA broadcasts the weight from memory itself (see FC_EMBEDDED_BROADCAST
             * in _conv_microkernel.h): same operation, same bits. */
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++)
                __asm__("vfmadd231" FC_ASM_TYPE " %[w]" FC_ASM_BCAST ", %[b], %[acc]"
                        : [acc] "+v"(acc[i][v]) : [b] "v"(bv[v]), [w] "m"(ar[i * a_filter]));
            FC_IF_HALF(acch[i] += bh * ar[i * a_filter];);
#else
            const FC_T w = ar[i * a_filter];
#if FC_HALF_TAIL
            if (half && nf) {  /* one broadcast for both widths (fc_splat) */
                FC_H wh;
                const FC_V wv = FC_NAME(fc_splat)(w, &wh);
#pragma GCC unroll 4
                for (int v = 0; v < nf; v++) acc[i][v] += bv[v] * wv;
                acch[i] += bh * wh;
                continue;
            }
#endif
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++) acc[i][v] += bv[v] * w;
            FC_IF_HALF(acch[i] += bh * w;);  /* alone: a broadcast from memory in the FMA */
#endif
        }
    }
    if (relu) {
        const FC_V zero = {0};
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++)
                acc[i][v] = (FC_V)((FC_VI)acc[i][v] & ~(FC_VI)(acc[i][v] < zero));
            FC_IF_HALF(acch[i] = (FC_H)((FC_HI)acch[i] & ~(FC_HI)(acch[i] < (FC_H){0})););
        }
    }
    if (cmask) {  /* see fc_microkernel_compress */
        unsigned mask[FC_NV];
        Py_ssize_t off[FC_NV];  /* read once: the stores below might alias them */
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++) {
            mask[v] = cmask[v];
            off[v] = coff[v];
        }
#pragma GCC unroll 16
        for (int i = 0; i < FC_MR; i++) {
            if (i < crows) {
#pragma GCC unroll 4
                for (int v = 0; v < nf; v++) {
#if FC_COMPRESS
                    FC_NAME(FC_COMPRESS_STORE)(c + i * ldc + off[v], mask[v], acc[i][v]);
#else
                    FC_T *p = c + i * ldc + off[v];
                    for (int l = 0, k = 0; l < FC_LANES; l++)
                        if (mask[v] >> l & 1) p[k++] = acc[i][v][l];
#endif
                }
            }
        }
        return;
    }
#pragma GCC unroll 16
    for (int i = 0; i < FC_MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++) *(FC_VU *)(c + i * ldc + v * FC_LANES) = acc[i][v];
        FC_IF_HALF(*(FC_HU *)(c + i * ldc + nf * FC_LANES) = acch[i];);
    }
}

/* The body specialised for nv = 1 .. FC_NV vectors of pixels (fewer: a band's last,
 * partial tile, so that small maps do not compute whole tiles of junk), the last one half
 * (half != 0, FC_HALF_TAIL only). */
static inline __attribute__((always_inline)) void FC_NAME(fc_microkernel_nv)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t a_row, Py_ssize_t a_filter,
    const FC_T *restrict b, const Py_ssize_t *restrict b_offset,
    FC_T *c, Py_ssize_t ldc, const FC_T *c_in, Py_ssize_t ldc_in,
    const FC_T *restrict bias, int relu, int nv, int half)
{
#if FC_NV > 3
#error "fc_microkernel_nv is written for FC_NV <= 3"
#endif
#define FC_BODY(nv_const, half_const) \
    FC_NAME(fc_microkernel_body)(depth, a, a_row, a_filter, b, b_offset, c, ldc, c_in, \
                                 ldc_in, bias, relu, nv_const, half_const, NULL, NULL, 0)
#if FC_HALF_TAIL
    if (half) {
        switch (nv) {
#if FC_NV == 3
        case 2: FC_BODY(2, 1); break;
#endif
        case 1: FC_BODY(1, 1); break;
        default: FC_BODY(FC_NV, 1); break;
        }
        return;
    }
#endif
    switch (nv) {
#if FC_NV == 3
    case 2: FC_BODY(2, 0); break;
#endif
    case 1: FC_BODY(1, 0); break;
    default: FC_BODY(FC_NV, 0); break;
    }
#undef FC_BODY
}

/* A packed panel: weight (r, i) at a[r * FC_MR + i]; nv vectors of pixels (see above). */
static inline void FC_NAME(fc_microkernel)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *c, Py_ssize_t ldc, const FC_T *c_in,
    Py_ssize_t ldc_in, const FC_T *restrict bias, int relu, int nv, int half)
{
    FC_NAME(fc_microkernel_nv)(depth, a, FC_MR, 1, b, b_offset, c, ldc, c_in, ldc_in, bias,
                               relu, nv, half);
}

/* FC_MR whole filters in place: weight (r, i) at a[i * lda + r]. */
static inline void FC_NAME(fc_microkernel_rows)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t lda, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *c, Py_ssize_t ldc, const FC_T *c_in,
    Py_ssize_t ldc_in, const FC_T *restrict bias, int relu, int nv, int half)
{
    FC_NAME(fc_microkernel_nv)(depth, a, 1, lda, b, b_offset, c, ldc, c_in, ldc_in, bias, relu,
                               nv, half);
}

/* ntiles whole tiles of FC_NV vectors side by side, tile t reading b + t * FC_NV * FC_LANES
 * and writing c + t * FC_NV * FC_LANES, in one call: a run of tiles under the same filters
 * (a row of the output). Over a shallow reduction (a first layer's 27 rows) the work of a
 * call and of its caller per tile took ~15% of the time. a_row / a_filter as above. */
#define FC_RUN_BODY(a_row, a_filter)                                                        \
    for (Py_ssize_t t = 0; t < ntiles; t++)                                                 \
        FC_NAME(fc_microkernel_body)(depth, a, a_row, a_filter, b + t * FC_NV * FC_LANES,  \
                                     b_offset, c + t * FC_NV * FC_LANES, ldc,               \
                                     c_in + t * FC_NV * FC_LANES, ldc_in, bias, relu,       \
                                     FC_NV, 0, NULL, NULL, 0)
static inline void FC_NAME(fc_microkernel_run)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *c, Py_ssize_t ldc, const FC_T *c_in,
    Py_ssize_t ldc_in, const FC_T *restrict bias, int relu, Py_ssize_t ntiles)
{
    FC_RUN_BODY(FC_MR, 1);
}

static inline void FC_NAME(fc_microkernel_rows_run)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t lda, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *c, Py_ssize_t ldc, const FC_T *c_in,
    Py_ssize_t ldc_in, const FC_T *restrict bias, int relu, Py_ssize_t ntiles)
{
    FC_RUN_BODY(1, lda);
}
#undef FC_RUN_BODY

/* ntiles tiles of nv whole vectors (ntiles > 1: nv = FC_NV) whose pixels run over slab rows
 * with junk columns, written straight to the output: vector k's real lanes (cmask[k]) packed
 * to consecutive outputs from c + coff[k] (a band's real pixels are consecutive in an output
 * plane), for the block's first crows filters only (the others are padding). Tile t reads b
 * and c_in + t * FC_NV * FC_LANES and vectors k = t * nv .. of cmask / coff. Weights: a
 * packed panel if lda is 0, else FC_MR filters in place, lda apart; C in as fc_microkernel's.
 * Register compress and masked stores at AVX-512 (FC_COMPRESS), lane by lane below it. */
static inline void FC_NAME(fc_microkernel_compress)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t lda, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset, FC_T *c, Py_ssize_t ldc, const FC_T *c_in,
    Py_ssize_t ldc_in, const FC_T *restrict bias, int relu, int nv,
    const unsigned *restrict cmask, const Py_ssize_t *restrict coff, int crows,
    Py_ssize_t ntiles)
{
#define FC_CBODY(a_row, a_filter, nv_const)                                                  \
    for (Py_ssize_t t = 0; t < ntiles; t++)                                                 \
        FC_NAME(fc_microkernel_body)(depth, a, a_row, a_filter, b + t * FC_NV * FC_LANES,  \
                                     b_offset, c, ldc, c_in + t * FC_NV * FC_LANES, ldc_in,  \
                                     bias, relu, nv_const, 0, cmask + t * nv_const,          \
                                     coff + t * nv_const, crows)
    if (lda) {
        if (nv == FC_NV) FC_CBODY(1, lda, FC_NV);
#if FC_NV == 3
        else if (nv == 2) FC_CBODY(1, lda, 2);
#endif
        else FC_CBODY(1, lda, 1);
    } else {
        if (nv == FC_NV) FC_CBODY(FC_MR, 1, FC_NV);
#if FC_NV == 3
        else if (nv == 2) FC_CBODY(FC_MR, 1, 2);
#endif
        else FC_CBODY(FC_MR, 1, 1);
    }
#undef FC_CBODY
}

/* 2 * FC_MR whole filters in place (two blocks: weight (r, i) at a[i * lda + r]) x one
 * vector of pixels (half: a half vector, FC_HALF_TAIL only). A band of a single vector (tiny
 * maps, a last row of a few pixels) takes its blocks of filters in pairs: FC_MR x 1
 * accumulators are too few chains to hide the FMA latency, twice as many are not. Each
 * output sums over r in the same order as above. */
#define FC_ROWS2_BODY(V, VU, VI)                                                             \
    do {                                                                                    \
        V acc[2 * FC_MR];                                                                   \
        _Pragma("GCC unroll 32")                                                            \
        for (int i = 0; i < 2 * FC_MR; i++) {                                               \
            if (bias) acc[i] = (V){0} + bias[i];                                            \
            else acc[i] = *(const VU *)(c + i * ldc);                                       \
        }                                                                                   \
        _Pragma("GCC unroll 2")                                                             \
        for (Py_ssize_t r = 0; r < depth; r++) {                                            \
            const V bv = *(const VU *)(b + b_offset[r]);                                    \
            _Pragma("GCC unroll 32")                                                        \
            for (int i = 0; i < 2 * FC_MR; i++) acc[i] += bv * a[i * lda + r];              \
        }                                                                                   \
        const V zero = {0};                                                                 \
        _Pragma("GCC unroll 32")                                                            \
        for (int i = 0; i < 2 * FC_MR; i++) {                                               \
            if (relu) acc[i] = (V)((VI)acc[i] & ~(VI)(acc[i] < zero));                      \
            *(VU *)(c + i * ldc) = acc[i];                                                  \
        }                                                                                   \
    } while (0)
static inline void FC_NAME(fc_microkernel_rows2)(
    Py_ssize_t depth, const FC_T *restrict a, Py_ssize_t lda, const FC_T *restrict b,
    const Py_ssize_t *restrict b_offset,
    FC_T *restrict c, Py_ssize_t ldc, const FC_T *restrict bias, int relu, int half)
{
#if FC_HALF_TAIL
    if (half) {
        FC_ROWS2_BODY(FC_H, FC_HU, FC_HI);
        return;
    }
#endif
    FC_ROWS2_BODY(FC_V, FC_VU, FC_VI);
}
#undef FC_ROWS2_BODY

/* One filter (depthwise convolution: one filter per group) x FC_ROW_NV vectors of pixels;
 * the weight of reduction row r is a[r] (the filter's own row). */
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
#pragma GCC unroll 2  /* as in fc_microkernel_body */
    for (Py_ssize_t r = 0; r < depth; r++) {
        const FC_T w = a[r];
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

/* Depthwise convolution (one input channel per filter): a filter is a small 2-D stencil,
 * so output rows are computed directly, n_rows x n_vec vectors of pixels per tile:
 *   c[row * c_step + j] = bias + sum_r w[r] * b[row * b_step + b_offset[r] + j]
 * in whole vectors (junk lanes past the row's end land in c's padding), the last one a half
 * vector if half (FC_HALF_TAIL only, see _simd.h). r runs in order. */
static inline __attribute__((always_inline)) void FC_NAME(fc_stencil_tile)(
    const int n_rows, const int n_vec, const int half, Py_ssize_t taps,
    const FC_T *restrict w, const FC_T *restrict b, Py_ssize_t b_step,
    const Py_ssize_t *restrict b_offset, FC_T *restrict c, Py_ssize_t c_step, FC_T bias,
    int relu)
{
    const int nf = n_vec - half;  /* full vectors */
    FC_V acc[2][FC_ROW_NV];
#if FC_HALF_TAIL
    FC_H acch[2];
#endif
    for (int i = 0; i < n_rows; i++) {
        for (int v = 0; v < nf; v++) acc[i][v] = (FC_V){0} + bias;
        FC_IF_HALF(acch[i] = (FC_H){0} + bias;);
    }
#pragma GCC unroll 2  /* measured, relative to none: 7x7 depthwise 0.90, 3x3 0.98 */
    for (Py_ssize_t r = 0; r < taps; r++) {
        const FC_T wr = w[r];
        const FC_T *br = b + b_offset[r];
#if FC_HALF_TAIL
        if (half && nf) {  /* one broadcast for both widths (fc_splat) */
            FC_H wh;
            const FC_V wv = FC_NAME(fc_splat)(wr, &wh);
            for (int i = 0; i < n_rows; i++) {
                for (int v = 0; v < nf; v++)
                    acc[i][v] += *(const FC_VU *)(br + i * b_step + v * FC_LANES) * wv;
                acch[i] += *(const FC_HU *)(br + i * b_step + nf * FC_LANES) * wh;
            }
            continue;
        }
#endif
        for (int i = 0; i < n_rows; i++) {
            for (int v = 0; v < nf; v++)
                acc[i][v] += *(const FC_VU *)(br + i * b_step + v * FC_LANES) * wr;
            FC_IF_HALF(acch[i] += *(const FC_HU *)(br + i * b_step + nf * FC_LANES) * wr;);
        }
    }
    const FC_V zero = {0};
    for (int i = 0; i < n_rows; i++) {
        for (int v = 0; v < nf; v++) {
            if (relu) acc[i][v] = (FC_V)((FC_VI)acc[i][v] & ~(FC_VI)(acc[i][v] < zero));
            *(FC_VU *)(c + i * c_step + v * FC_LANES) = acc[i][v];
        }
        FC_IF_HALF(
            if (relu) acch[i] = (FC_H)((FC_HI)acch[i] & ~(FC_HI)(acch[i] < (FC_H){0}));
            *(FC_HU *)(c + i * c_step + nf * FC_LANES) = acch[i];
        );
    }
}

/* One band of n_rows (1 or 2, a constant after inlining) output rows of n_vec vectors each,
 * FC_ROW_NV vectors per tile, the last 1-4 vectors (4 only with a half one) in a tile of
 * their own. Tiles go from the row's end to its start: the last vector's junk lanes may land
 * on the next row's first pixels (C rows packed at c_step = n), which that row's first tile,
 * stored last, then overwrites. */
static inline __attribute__((always_inline)) void FC_NAME(fc_stencil_band)(
    const int n_rows, Py_ssize_t n_vec, int half, Py_ssize_t taps, const FC_T *restrict w,
    const FC_T *restrict b, Py_ssize_t b_step, const Py_ssize_t *restrict b_offset,
    FC_T *restrict c, Py_ssize_t c_step, FC_T bias, int relu)
{
#define FC_TILE(vecs, h, bv, cv) \
    FC_NAME(fc_stencil_tile)(n_rows, vecs, h, taps, w, bv, b_step, b_offset, cv, c_step, \
                             bias, relu)
    Py_ssize_t tiled = 0;  /* vectors in whole tiles */
    while (tiled + FC_ROW_NV < n_vec || (tiled + FC_ROW_NV == n_vec && !half))
        tiled += FC_ROW_NV;
    const FC_T *bv = b + tiled * FC_LANES;
    FC_T *cv = c + tiled * FC_LANES;
    if (half) {
        switch (n_vec - tiled) {  /* each count its own unrolled tile */
        case 1: FC_TILE(1, 1, bv, cv); break;
        case 2: FC_TILE(2, 1, bv, cv); break;
        case 3: FC_TILE(3, 1, bv, cv); break;
        case 4: FC_TILE(4, 1, bv, cv); break;
        default: break;
        }
    } else {
        switch (n_vec - tiled) {
        case 1: FC_TILE(1, 0, bv, cv); break;
        case 2: FC_TILE(2, 0, bv, cv); break;
        case 3: FC_TILE(3, 0, bv, cv); break;
        default: break;
        }
    }
    for (Py_ssize_t v = tiled - FC_ROW_NV; v >= 0; v -= FC_ROW_NV)
        FC_TILE(FC_ROW_NV, 0, b + v * FC_LANES, c + v * FC_LANES);
#undef FC_TILE
}

/* n_rows output rows of n pixels each; rows of B are b_step apart, rows of C c_step apart.
 * Rows go two at a time, so that a tile has up to 2 x FC_ROW_NV independent FMA chains:
 * a 512-bit FMA unit pair (Zen 5) needs 8 in flight to hide a latency of 4 cycles, and the
 * two rows share each weight broadcast. A row's last vector is a half vector where half of
 * it holds the row's last pixels (FC_HALF_TAIL): 56-wide rows compute 3.5 vectors of 16,
 * not 4. */
static inline void FC_NAME(fc_stencil_rows)(
    Py_ssize_t taps, const FC_T *restrict w, const FC_T *restrict b, Py_ssize_t b_step,
    const Py_ssize_t *restrict b_offset, FC_T *restrict c, Py_ssize_t c_step,
    Py_ssize_t n_rows, Py_ssize_t n, FC_T bias, int relu)
{
#if FC_ROW_NV != 4
#error "fc_stencil_rows is written for FC_ROW_NV == 4"
#endif
    const Py_ssize_t n_vec = (n + FC_LANES - 1) / FC_LANES;
    const int half = FC_HALF_TAIL && n - (n_vec - 1) * FC_LANES <= FC_LANES / 2;
    Py_ssize_t row = 0;
    for (; row + 2 <= n_rows && (FC_STENCIL_ROW_PAIRS || n_vec <= 2); row += 2)
        FC_NAME(fc_stencil_band)(2, n_vec, half, taps, w, b + row * b_step, b_step, b_offset,
                                 c + row * c_step, c_step, bias, relu);
    for (; row < n_rows; row++)
        FC_NAME(fc_stencil_band)(1, n_vec, half, taps, w, b + row * b_step, b_step, b_offset,
                                 c + row * c_step, c_step, bias, relu);
}

/* A depthwise 1x1 filter at stride 1 scales its channel: c[j] = bias + w * b[j], j < n,
 * the products and sums of fc_stencil_tile with one tap, c not overlapping b. Unaligned
 * whole vectors, the last one overlapping (the same values stored twice); fewer than
 * FC_LANES elements one by one. stream: non-temporal stores for a result too large for the
 * cache (no read-for-ownership of its lines), on whole aligned vectors only, the elements
 * before and after them one by one: an ordinary store to a line that also takes a
 * non-temporal one makes them both slow. */
static inline void FC_NAME(fc_scale)(const FC_T *restrict b, FC_T *restrict c, Py_ssize_t n,
                                     FC_T w, FC_T bias, int relu, int stream)
{
    const FC_V zero = {0};
    Py_ssize_t j = 0;
#define FC_SCALE_ONE(k) do { \
        FC_T s = bias; \
        s += b[k] * w; \
        c[k] = relu && s < 0 ? (FC_T)0 : s; \
    } while (0)
#define FC_SCALE(k, v) do { \
        v = zero + bias; \
        v += *(const FC_VU *)(b + (k)) * w; \
        if (relu) v = (FC_V)((FC_VI)v & ~(FC_VI)(v < zero)); \
    } while (0)
    FC_V v0, v1, v2, v3;
    if (stream) {
        for (; j < n && (size_t)(c + j) % sizeof(FC_V) != 0; j++) FC_SCALE_ONE(j);
        for (; j + 4 * FC_LANES <= n; j += 4 * FC_LANES) {
            FC_SCALE(j, v0);
            FC_SCALE(j + FC_LANES, v1);
            FC_SCALE(j + 2 * FC_LANES, v2);
            FC_SCALE(j + 3 * FC_LANES, v3);
            FC_NAME(FC_STREAM)(c + j, v0);
            FC_NAME(FC_STREAM)(c + j + FC_LANES, v1);
            FC_NAME(FC_STREAM)(c + j + 2 * FC_LANES, v2);
            FC_NAME(FC_STREAM)(c + j + 3 * FC_LANES, v3);
        }
        FC_STREAM_FENCE();
        for (; j + FC_LANES <= n; j += FC_LANES) {
            FC_SCALE(j, v0);
            *(FC_VU *)(c + j) = v0;
        }
        for (; j < n; j++) FC_SCALE_ONE(j);
        return;
    }
    if (n < FC_LANES) {
        for (; j < n; j++) FC_SCALE_ONE(j);
        return;
    }
    for (; j + FC_LANES <= n; j += FC_LANES) {
        FC_SCALE(j, v0);
        *(FC_VU *)(c + j) = v0;
    }
    if (j < n) {
        FC_SCALE(n - FC_LANES, v0);
        *(FC_VU *)(c + n - FC_LANES) = v0;
    }
#undef FC_SCALE
#undef FC_SCALE_ONE
}

/* Channel-blocked depthwise convolution: each vector holds FC_LANES channels of one pixel,
 * so a short output row still fills whole vectors. nb output pixels (nb <= 8):
 *   c[k * FC_LANES + lane] = bias[lane] + sum_r w[r * FC_LANES + lane]
 *                                          * b[b_offset[r] + k * b_step + lane]
 * summed in the order of r, as fc_stencil_tile sums a channel's taps. */
static inline __attribute__((always_inline)) void FC_NAME(fc_blocked_tile)(
    const int nb, Py_ssize_t taps, const FC_T *restrict w, const FC_T *restrict b,
    Py_ssize_t b_step, const Py_ssize_t *restrict b_offset, FC_T *restrict c,
    const FC_T *restrict bias, int relu)
{
    FC_V acc[8];
    const FC_V bv = *(const FC_VU *)bias;
#pragma GCC unroll 8
    for (int k = 0; k < nb; k++) acc[k] = bv;
    for (Py_ssize_t r = 0; r < taps; r++) {
        const FC_V wv = *(const FC_VU *)(w + r * FC_LANES);
        const FC_T *br = b + b_offset[r];
#pragma GCC unroll 8
        for (int k = 0; k < nb; k++) acc[k] += wv * *(const FC_VU *)(br + k * b_step);
    }
    const FC_V zero = {0};
#pragma GCC unroll 8
    for (int k = 0; k < nb; k++) {
        if (relu) acc[k] = (FC_V)((FC_VI)acc[k] & ~(FC_VI)(acc[k] < zero));
        *(FC_VU *)(c + k * FC_LANES) = acc[k];
    }
}

/* A row of n output pixels of the channel-blocked kernel, 8 at a time, then the rest. */
static inline void FC_NAME(fc_blocked_row)(
    Py_ssize_t taps, const FC_T *restrict w, const FC_T *restrict b, Py_ssize_t b_step,
    const Py_ssize_t *restrict b_offset, FC_T *restrict c, Py_ssize_t n,
    const FC_T *restrict bias, int relu)
{
    Py_ssize_t j = 0;
    for (; j + 8 <= n; j += 8)
        FC_NAME(fc_blocked_tile)(8, taps, w, b + j * b_step, b_step, b_offset,
                                 c + j * FC_LANES, bias, relu);
    const FC_T *bj = b + j * b_step;
    FC_T *cj = c + j * FC_LANES;
#define FC_REST(nb) FC_NAME(fc_blocked_tile)(nb, taps, w, bj, b_step, b_offset, cj, bias, relu)
    switch (n - j) {
    case 1: FC_REST(1); break;
    case 2: FC_REST(2); break;
    case 3: FC_REST(3); break;
    case 4: FC_REST(4); break;
    case 5: FC_REST(5); break;
    case 6: FC_REST(6); break;
    case 7: FC_REST(7); break;
    default: break;
    }
#undef FC_REST
}

/* Filters in the vector lanes (small maps, whose few pixels would leave a pixel vector
 * mostly empty; NHWC): np pixels x nv vectors of filters (nv <= 2, or up to 4 with
 * np * nv <= 2 * FC_LANES_NP),
 *   c[p * ldc + v * FC_LANES + l] = init + sum_r a[rows[2 * r + 1] + v * FC_LANES + l]
 *                                              * b[rows[2 * r] + pix[p]]
 * init: bias[v * FC_LANES + l] (bias != NULL, the first reduction block) or c (later
 * blocks). A row of A is a packed row of the filters' weights; each pixel's value of
 * reduction row r is one broadcast from the slab. half (FC_HALF_TAIL only): the last
 * vector is a half vector (23 filters: 16 + 8 lanes, not 32). Sums run over r in order. */
static inline __attribute__((always_inline)) void FC_NAME(fc_lanes_body)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict rows, const Py_ssize_t *restrict pix, FC_T *restrict c,
    Py_ssize_t ldc, const FC_T *restrict bias, int relu, const int np, const int nv,
    const int half, const int step)
{
    const int nf = nv - half;  /* full vectors */
    FC_V acc[FC_LANES_NP][4];  /* nv <= 2, or np * nv <= 2 * FC_LANES_NP */
#if FC_HALF_TAIL
    FC_H acch[FC_LANES_NP];
#endif
    /* step > 0: pixel p at pix[0] + p * step, read through one pointer with constant
     * displacements (twelve pointers do not fit the general registers: spilled, and the
     * seed layer in NHWC took 1.2x the time) */
    const FC_T *bp[FC_LANES_NP];
#pragma GCC unroll 16
    for (int p = 0; p < np; p++) {
        bp[p] = b + pix[step ? 0 : p];
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++)
            acc[p][v] = bias ? *(const FC_VU *)(bias + v * FC_LANES)
                             : *(const FC_VU *)(c + p * ldc + v * FC_LANES);
        FC_IF_HALF(acch[p] = bias ? *(const FC_HU *)(bias + nf * FC_LANES)
                                  : *(const FC_HU *)(c + p * ldc + nf * FC_LANES););
    }
    for (Py_ssize_t r = 0; r < depth; r++) {
        const Py_ssize_t o = rows[2 * r];
        const FC_T *ar = a + rows[2 * r + 1];
        FC_V w[4];
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++) w[v] = *(const FC_VU *)(ar + v * FC_LANES);
#if FC_HALF_TAIL
        FC_H wh = {0};
        FC_IF_HALF(wh = *(const FC_HU *)(ar + nf * FC_LANES););
#endif
        const FC_T *br = bp[0] + o;  /* step > 0: pixel p's value at br[p * step] */
#pragma GCC unroll 16
        for (int p = 0; p < np; p++) {
            const FC_T x = step ? br[p * step] : bp[p][o];
#if FC_HALF_TAIL
            if (half && nf) {  /* one broadcast for both widths (fc_splat) */
                FC_H xh;
                const FC_V xv = FC_NAME(fc_splat)(x, &xh);
#pragma GCC unroll 4
                for (int v = 0; v < nf; v++) acc[p][v] += w[v] * xv;
                acch[p] += wh * xh;
                continue;
            }
#endif
#pragma GCC unroll 4
            for (int v = 0; v < nf; v++) acc[p][v] += w[v] * x;
            FC_IF_HALF(acch[p] += wh * x;);
        }
    }
    const FC_V zero = {0};
#pragma GCC unroll 16
    for (int p = 0; p < np; p++) {
#pragma GCC unroll 4
        for (int v = 0; v < nf; v++) {
            if (relu) acc[p][v] = (FC_V)((FC_VI)acc[p][v] & ~(FC_VI)(acc[p][v] < zero));
            *(FC_VU *)(c + p * ldc + v * FC_LANES) = acc[p][v];
        }
        FC_IF_HALF(
            if (relu) acch[p] = (FC_H)((FC_HI)acch[p] & ~(FC_HI)(acch[p] < (FC_H){0}));
            *(FC_HU *)(c + p * ldc + nf * FC_LANES) = acch[p];
        );
    }
}

/* fc_lanes_body for np = 1 .. FC_LANES_NP pixels and nv = 1 or 2 vectors of filters, the
 * last one half if half (FC_HALF_TAIL only); consecutive: pixel p at pix[0] + p, read
 * through one pointer (fc_lanes_body's step 1), else at pix[p]. */
static inline void FC_NAME(fc_lanes)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict rows, const Py_ssize_t *restrict pix, FC_T *restrict c,
    Py_ssize_t ldc, const FC_T *restrict bias, int relu, int np, int nv, int half,
    int consecutive)
{
#if FC_LANES_NP != 12 && FC_LANES_NP != 6
#error "fc_lanes is written for FC_LANES_NP 6 or 12"
#endif
#define FC_LB(n, v, h) \
    do { \
        if (consecutive) \
            FC_NAME(fc_lanes_body)(depth, a, b, rows, pix, c, ldc, bias, relu, n, v, h, 1); \
        else \
            FC_NAME(fc_lanes_body)(depth, a, b, rows, pix, c, ldc, bias, relu, n, v, h, 0); \
    } while (0)
#if FC_HALF_TAIL
#define FC_L(n) \
    case n: \
        if (nv == 2) { if (half) FC_LB(n, 2, 1); else FC_LB(n, 2, 0); } \
        else { if (half) FC_LB(n, 1, 1); else FC_LB(n, 1, 0); } \
        break;
#else
#define FC_L(n) case n: if (nv == 2) FC_LB(n, 2, 0); else FC_LB(n, 1, 0); break;
#endif
    switch (np) {
    FC_L(1) FC_L(2) FC_L(3) FC_L(4) FC_L(5) FC_L(6)
#if FC_LANES_NP == 12
    FC_L(7) FC_L(8) FC_L(9) FC_L(10) FC_L(11) FC_L(12)
#endif
    default: break;
    }
#undef FC_L
#undef FC_LB
}

/* Pixels per tile of fc_lanes_step with nv vectors of filters: as many accumulators as
 * fc_lanes' 2 x FC_LANES_NP (AVX-512: 12 x 2, 8 x 3, 6 x 4). */
#define FC_STEP_NP(nv) ((nv) <= 2 ? FC_LANES_NP : 2 * FC_LANES_NP / (nv))

/* fc_lanes for ntiles tiles of FC_STEP_NP(nv) pixels evenly spaced along a row of the
 * channels-last kernel's slab, pixel p of the run at pix0 + p * step (step 1 or 2: stride 1
 * or 2) and written at c + p * ldc, for nv = 1 .. 4 vectors of filters, in one call: per
 * tile, a call and its caller's bookkeeping cost as much as a few reduction steps. With 3
 * or 4 vectors a tile writes a pixel's 48 or 64 filters whole. */
static inline void FC_NAME(fc_lanes_step)(
    Py_ssize_t depth, const FC_T *restrict a, const FC_T *restrict b,
    const Py_ssize_t *restrict rows, Py_ssize_t pix0, FC_T *restrict c, Py_ssize_t ldc,
    const FC_T *restrict bias, int relu, int nv, int half, int step, Py_ssize_t ntiles)
{
    static const Py_ssize_t first = 0;
#define FC_LB(v, h, s) \
    for (Py_ssize_t t = 0; t < ntiles; t++) \
        FC_NAME(fc_lanes_body)(depth, a, b + pix0 + t * FC_STEP_NP(v) * s, rows, &first, \
                               c + t * FC_STEP_NP(v) * ldc, ldc, bias, relu, FC_STEP_NP(v), \
                               v, h, s)
#if FC_HALF_TAIL
#define FC_LV(v, s) if (half) FC_LB(v, 1, s); else FC_LB(v, 0, s);
#else
#define FC_LV(v, s) FC_LB(v, 0, s);
#endif
#define FC_LS(s) \
    switch (nv) { \
    case 1: FC_LV(1, s) break; \
    case 2: FC_LV(2, s) break; \
    case 3: FC_LV(3, s) break; \
    default: FC_LV(4, s) break; \
    }
    if (step == 1) { FC_LS(1) } else { FC_LS(2) }
#undef FC_LS
#undef FC_LV
#undef FC_LB
}

#undef FC_IF_HALF
#undef FC_ASM_TYPE
#undef FC_ASM_BCAST
#undef FC_T
#undef FC_V
#undef FC_VU
#undef FC_VI
#undef FC_H
#undef FC_HU
#undef FC_HI
#undef FC_LANES
#undef FC_NAME
