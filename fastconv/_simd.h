/* Portable SIMD vocabulary for fastconv's kernels: GCC vector extensions.
 *
 * The same source is compiled once per ISA level (see setup.py); the vector width follows the
 * compile flags, so one micro-kernel lowers to AVX-512, AVX2+FMA or SSE2.
 */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

#include <Python.h> /* Py_ssize_t */
#include <stdint.h> /* uint32_t, uint64_t */

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

/* Half-width vectors for a tile's last vector when at most half its lanes hold pixels
 * (FC_HALF_TAIL): a 512-bit multiply-add takes both of Zen 4's 256-bit FMA pipes, a 256-bit
 * one takes one, so the half vector costs half. Only at AVX-512: at AVX2 and SSE2 a half
 * (128- or 64-bit) vector takes a whole pipe like a full one. */
#if FC_VEC_BYTES == 64
#define FC_HALF_TAIL 1
typedef float fc_hf32 __attribute__((vector_size(FC_VEC_BYTES / 2)));
typedef double fc_hf64 __attribute__((vector_size(FC_VEC_BYTES / 2)));
typedef int fc_hi32 __attribute__((vector_size(FC_VEC_BYTES / 2)));
typedef long long fc_hi64 __attribute__((vector_size(FC_VEC_BYTES / 2)));
typedef float fc_hf32_u __attribute__((vector_size(FC_VEC_BYTES / 2), aligned(4), may_alias));
typedef double fc_hf64_u __attribute__((vector_size(FC_VEC_BYTES / 2), aligned(8), may_alias));
#else
#define FC_HALF_TAIL 0
#endif

/* Non-temporal (streaming) vector stores: a large out-of-place result then skips the
 * read-for-ownership of its cache lines. The address must be vector-aligned.
 * FC_STREAM_MIN_BYTES: results of at least this many bytes take them (ReLU, depthwise 1x1):
 * input and result then exceed a 32 MiB L3 (Zen 3's per 8 cores), and skipping the
 * read-for-ownership saves a third of the memory traffic. On this project's Zen 3 (2 threads,
 * ReLU, the same call repeated): 24 MiB 1.45 -> 0.97 ms; at 9-12 MiB, which may still fit,
 * streaming was up to 1.5x slower. (glibc's sysconf reports the whole package's L3, 256 MiB
 * on that EPYC, so a fixed size serves better than a query.) */
#define FC_STREAM_MIN_BYTES (16 << 20)
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#if FC_VEC_BYTES == 64
#define FC_STREAM_f32(p, v) _mm512_stream_ps((p), (__m512)(v))
#define FC_STREAM_f64(p, v) _mm512_stream_pd((p), (__m512d)(v))
#elif FC_VEC_BYTES == 32
#define FC_STREAM_f32(p, v) _mm256_stream_ps((p), (__m256)(v))
#define FC_STREAM_f64(p, v) _mm256_stream_pd((p), (__m256d)(v))
#else
#define FC_STREAM_f32(p, v) _mm_stream_ps((p), (__m128)(v))
#define FC_STREAM_f64(p, v) _mm_stream_pd((p), (__m128d)(v))
#endif
#define FC_STREAM_FENCE() _mm_sfence()
#else
#define FC_STREAM_f32(p, v) (*(fc_vf32 *)(p) = (v))
#define FC_STREAM_f64(p, v) (*(fc_vf64 *)(p) = (v))
#define FC_STREAM_FENCE() ((void)0)
#endif

/* Compressed stores (AVX-512 only, FC_COMPRESS): the lanes of v selected by mask, packed
 * to the front, written to n = popcount(mask) consecutive elements from p (the register
 * compress and a masked store: the memory form of vcompressps is microcoded on Zen 4). */
#if FC_VEC_BYTES == 64
#define FC_COMPRESS 1
#define FC_COMPRESS_STORE_f32(p, mask, v)                                                  \
    _mm512_mask_storeu_ps((p), (__mmask16)((1u << __builtin_popcount(mask)) - 1),         \
                          _mm512_maskz_compress_ps((__mmask16)(mask), (__m512)(v)))
#define FC_COMPRESS_STORE_f64(p, mask, v)                                                  \
    _mm512_mask_storeu_pd((p), (__mmask8)((1u << __builtin_popcount(mask)) - 1),          \
                          _mm512_maskz_compress_pd((__mmask8)(mask), (__m512d)(v)))
#else
#define FC_COMPRESS 0
#endif

/* Ask for the cache lines of bytes [p, p + bytes) ahead of use. The slab fill reads short
 * rows (one per channel, planes apart): too many streams for the hardware prefetcher, so each
 * row's copy would wait on L3. */
static inline void fc_prefetch_span(const void *p, Py_ssize_t bytes)
{
    const char *c = (const char *)p;
    for (Py_ssize_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 3);
    if (bytes > 0) __builtin_prefetch(c + bytes - 1, 0, 3);
}

/* fc_prefetch_span for `rows` runs of `bytes` bytes, `stride` bytes apart. */
static inline void fc_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows,
                                    Py_ssize_t bytes)
{
    for (Py_ssize_t r = 0; r < rows; r++) fc_prefetch_span((const char *)p + r * stride, bytes);
}

/* Copy n elements: whole vectors, then the tail as one masked vector (AVX-512) or as the
 * last whole vector again, overlapping. Rows in the kernels are short (one output row), where
 * memcpy's call and a scalar tail cost more than the copy itself. */
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
    if (k < n && n >= FC_LANES_F32)  /* the last whole vector again, overlapping: no scalar tail */
        *(fc_vf32_u *)(dst + n - FC_LANES_F32) = *(const fc_vf32_u *)(src + n - FC_LANES_F32);
    else
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
    if (k < n && n >= FC_LANES_F64)  /* the last whole vector again, overlapping: no scalar tail */
        *(fc_vf64_u *)(dst + n - FC_LANES_F64) = *(const fc_vf64_u *)(src + n - FC_LANES_F64);
    else
        for (; k < n; k++) dst[k] = src[k];
#endif
}

/* dst[j] = src[index[j]] for j < n, four per iteration: a one-element loop ran up to 3x
 * slower where its few instructions straddled a 64-byte line (the stacked panels' gather:
 * 2x2 and 4x4 maps 1.08-1.14x slower after an unrelated change moved the code). */
#define FC_DEFINE_GATHER(SUF, T)                                                             \
static inline void fc_gather_##SUF(T *restrict dst, const T *restrict src,                  \
                                   const Py_ssize_t *restrict index, Py_ssize_t n)          \
{                                                                                           \
    Py_ssize_t j = 0;                                                                       \
    for (; j + 4 <= n; j += 4) {                                                            \
        dst[j] = src[index[j]];                                                             \
        dst[j + 1] = src[index[j + 1]];                                                     \
        dst[j + 2] = src[index[j + 2]];                                                     \
        dst[j + 3] = src[index[j + 3]];                                                     \
    }                                                                                       \
    for (; j < n; j++) dst[j] = src[index[j]];                                              \
}
FC_DEFINE_GATHER(f32, float)
FC_DEFINE_GATHER(f64, double)

/* The slab fill of short input rows (small maps; AVX-512 only, FC_SHORT_ROWS): each input
 * row of a channel is one or two masked vector loads, and each of its slab rows (one per
 * stride phase, pitch <= 2 * FC_LANES columns) one or two lane permutes and masked stores:
 *   slab[c, ph, row, k] = x[c, row_src[row], col_src[ph, k]]   (0 where either is -1)
 * The general fill copies each slab row on its own, with a loop per border: on 6x6 maps
 * with stride 2 its setup, not the copying, took the time (and half the time of 4 groups of
 * 16 channels, 17x17 at stride 2; 37% of 31x31 -> 16x16 at stride 2, whose phase rows are 17
 * wide). x's rows are contiguous; every source column is below `width` <= 2 * FC_LANES (two
 * vectors: a two-source permute); at most FC_SHORT_PHASES phases. */
#define FC_SHORT_PHASES 4
#if FC_VEC_BYTES == 64
#define FC_SHORT_ROWS 1
#define FC_DEFINE_SHORT_ROWS(SUF, T, V, VI, IT, MASK, LOAD, STORE, LANES)                   \
static inline MASK fc_short_mask_##SUF(Py_ssize_t n)  /* the first n lanes, 0 <= n */      \
{                                                                                           \
    return (MASK)(n >= LANES ? ~0u : (1u << n) - 1u);                                       \
}                                                                                           \
static inline __attribute__((always_inline)) void fc_fill_short_rows_body_##SUF(           \
    const T *restrict x, Py_ssize_t sc, Py_ssize_t sh, Py_ssize_t channels,                 \
    const Py_ssize_t *restrict row_src, Py_ssize_t slab_rows, Py_ssize_t phases,            \
    Py_ssize_t pitch, Py_ssize_t width, T *restrict slab, const VI (*col)[2],               \
    const VI (*keep)[2], const int two, const int wide)                                     \
{                                                                                           \
    const MASK load = fc_short_mask_##SUF(width);                                           \
    const MASK load_hi = fc_short_mask_##SUF(width > LANES ? width - LANES : 0);            \
    const MASK store = fc_short_mask_##SUF(pitch);                                          \
    const MASK store_hi = fc_short_mask_##SUF(pitch > LANES ? pitch - LANES : 0);           \
    const Py_ssize_t channel_stride = phases * slab_rows * pitch;                           \
    for (Py_ssize_t c = 0; c < channels; c++) {                                             \
        T *slab_c = slab + c * channel_stride;                                              \
        for (Py_ssize_t row = 0; row < slab_rows; row++) {                                  \
            const Py_ssize_t src_row = row_src[row];                                        \
            const T *src = x + c * sc + src_row * sh;                                       \
            const V v = src_row < 0 ? (V){0} : (V)LOAD(load, src);                          \
            V v_hi = {0};                                                                   \
            if (two && src_row >= 0) v_hi = (V)LOAD(load_hi, src + LANES);                  \
            for (Py_ssize_t ph = 0; ph < phases; ph++) {                                    \
                T *dst = slab_c + (ph * slab_rows + row) * pitch;                           \
                for (int h = 0; h < 1 + wide; h++)                                          \
                    STORE(dst + h * LANES, h ? store_hi : store,                            \
                          (V)((VI)(two ? __builtin_shuffle(v, v_hi, col[ph][h])             \
                                       : __builtin_shuffle(v, col[ph][h])) & keep[ph][h])); \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
}                                                                                           \
static inline void fc_fill_short_rows_##SUF(                                                \
    const T *restrict x, Py_ssize_t sc, Py_ssize_t sh, Py_ssize_t channels,                 \
    const Py_ssize_t *restrict row_src, Py_ssize_t slab_rows,                               \
    const Py_ssize_t *restrict col_src, Py_ssize_t phases, Py_ssize_t pitch,                \
    Py_ssize_t width, T *restrict slab)                                                     \
{                                                                                           \
    VI col[FC_SHORT_PHASES][2], keep[FC_SHORT_PHASES][2];                                   \
    for (Py_ssize_t ph = 0; ph < phases; ph++) {                                            \
        for (int h = 0; h < 2; h++) {                                                       \
            for (int k = 0; k < LANES; k++) {                                               \
                const Py_ssize_t q = h * LANES + k;                                         \
                const Py_ssize_t src = q < pitch ? col_src[ph * pitch + q] : -1;            \
                col[ph][h][k] = (IT)(src < 0 ? 0 : src);                                    \
                keep[ph][h][k] = src < 0 ? 0 : -1;                                          \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    const int two = width > LANES, wide = pitch > LANES;                                    \
    if (two && wide)                                                                        \
        fc_fill_short_rows_body_##SUF(x, sc, sh, channels, row_src, slab_rows, phases,     \
                                      pitch, width, slab, col, keep, 1, 1);                 \
    else if (two)                                                                           \
        fc_fill_short_rows_body_##SUF(x, sc, sh, channels, row_src, slab_rows, phases,     \
                                      pitch, width, slab, col, keep, 1, 0);                 \
    else if (wide)                                                                          \
        fc_fill_short_rows_body_##SUF(x, sc, sh, channels, row_src, slab_rows, phases,     \
                                      pitch, width, slab, col, keep, 0, 1);                 \
    else                                                                                    \
        fc_fill_short_rows_body_##SUF(x, sc, sh, channels, row_src, slab_rows, phases,     \
                                      pitch, width, slab, col, keep, 0, 0);                 \
}
FC_DEFINE_SHORT_ROWS(f32, float, fc_vf32, fc_vi32, int, __mmask16, _mm512_maskz_loadu_ps,
                     _mm512_mask_storeu_ps, FC_LANES_F32)
FC_DEFINE_SHORT_ROWS(f64, double, fc_vf64, fc_vi64, long long, __mmask8, _mm512_maskz_loadu_pd,
                     _mm512_mask_storeu_pd, FC_LANES_F64)
#else
#define FC_SHORT_ROWS 0
#define FC_DEFINE_SHORT_ROWS_STUB(SUF, T)                                                    \
static inline void fc_fill_short_rows_##SUF(                                                \
    const T *x, Py_ssize_t sc, Py_ssize_t sh, Py_ssize_t channels,                          \
    const Py_ssize_t *row_src, Py_ssize_t slab_rows, const Py_ssize_t *col_src,             \
    Py_ssize_t phases, Py_ssize_t pitch, Py_ssize_t width, T *slab) { }
FC_DEFINE_SHORT_ROWS_STUB(f32, float)
FC_DEFINE_SHORT_ROWS_STUB(f64, double)
#endif

/* The machine's peak, measured: FC_PEAK_CHAINS independent multiply-add chains of full
 * vectors (enough to cover the FMA latency on every x86 core) for `iterations` steps.
 * Returns a value that depends on every lane, so the compiler keeps the work. */
#define FC_PEAK_CHAINS 12
#define FC_DEFINE_PEAK_PROBE(SUF, T, V, LANES)                                               \
static inline T fc_peak_probe_##SUF(Py_ssize_t iterations)                                 \
{                                                                                           \
    V acc[FC_PEAK_CHAINS];                                                                  \
    const V scale = (V){0} + (T)0.999999, step = (V){0} + (T)1e-7;                          \
    for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = (V){0} + (T)i;                        \
    for (Py_ssize_t k = 0; k < iterations; k++) {                                           \
        _Pragma("GCC unroll 12")                                                            \
        for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = acc[i] * scale + step;            \
    }                                                                                       \
    T sum = 0;                                                                              \
    for (int i = 0; i < FC_PEAK_CHAINS; i++)                                                \
        for (int j = 0; j < LANES; j++) sum += acc[i][j];                                   \
    return sum;                                                                             \
}
FC_DEFINE_PEAK_PROBE(f32, float, fc_vf32, FC_LANES_F32)
FC_DEFINE_PEAK_PROBE(f64, double, fc_vf64, FC_LANES_F64)

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

/* Whether a[:n] holds no infinity and no NaN: no element with every exponent bit set. An
 * integer OR-reduction, which the compiler vectorises (a floating sum would not be). */
static inline int fc_all_finite_f32(const float *a, Py_ssize_t n)
{
    const uint32_t *u = (const uint32_t *)a;
    uint32_t bad = 0;
    for (Py_ssize_t k = 0; k < n; k++) bad |= (u[k] & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

static inline int fc_all_finite_f64(const double *a, Py_ssize_t n)
{
    const uint64_t *u = (const uint64_t *)a;
    uint64_t bad = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        bad |= (u[k] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    return !bad;
}

/* Transposes for NHWC output: a block of T filters x T pixels (rows ld_src apart) becomes
 * T pixels x T filters (rows ld_dst apart). 32-byte vectors on every ISA level (two xmm on
 * SSE2); the shuffles are AVX's unpack / shuffle / permute2f128 8x8 network. */
typedef float fc_v8f __attribute__((vector_size(32)));
typedef int fc_v8i __attribute__((vector_size(32)));
typedef float fc_v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double fc_v4d __attribute__((vector_size(32)));
typedef long long fc_v4l __attribute__((vector_size(32)));
typedef double fc_v4d_u __attribute__((vector_size(32), aligned(8), may_alias));

static inline void fc_transpose_f32(float *restrict dst, Py_ssize_t ld_dst,
                                    const float *restrict src, Py_ssize_t ld_src)
{
    const fc_v8i lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const fc_v8i pair_lo = {0, 1, 8, 9, 4, 5, 12, 13}, pair_hi = {2, 3, 10, 11, 6, 7, 14, 15};
    const fc_v8i half_lo = {0, 1, 2, 3, 8, 9, 10, 11}, half_hi = {4, 5, 6, 7, 12, 13, 14, 15};
    fc_v8f r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = *(const fc_v8f_u *)(src + i * ld_src);
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shuffle(t[i], t[i + 2], pair_lo);
        u[i + 1] = __builtin_shuffle(t[i], t[i + 2], pair_hi);
        u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], pair_lo);
        u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], pair_hi);
    }
    for (int i = 0; i < 4; i++) {
        *(fc_v8f_u *)(dst + i * ld_dst) = __builtin_shuffle(u[i], u[i + 4], half_lo);
        *(fc_v8f_u *)(dst + (i + 4) * ld_dst) = __builtin_shuffle(u[i], u[i + 4], half_hi);
    }
}
#define FC_TRANSPOSE_F32 8

/* 16 filters x 16 pixels at once in 64-byte vectors (AVX-512, FC_TRANSPOSE16_F32): four
 * stages, stage b exchanging element (r, c) with (r ^ b, c ^ b) where bit b of r and c
 * differ, so that every element ends at (c, r); 64 two-source permutes per 256 elements
 * against 96 for four 8x8 networks. Elsewhere four 8x8 blocks. */
#if defined(__AVX512F__)
#define FC_TRANSPOSE16_F32 1
typedef float fc_v16f __attribute__((vector_size(64)));
typedef int fc_v16i __attribute__((vector_size(64)));
typedef float fc_v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
#define FC_T16_STAGE(b, keep_lo, keep_hi) do { \
        _Pragma("GCC unroll 16") \
        for (int i = 0; i < 16; i++) { \
            if (i & (b)) continue; \
            const fc_v16f a = r[i], c = r[i + (b)]; \
            r[i] = __builtin_shuffle(a, c, keep_lo); \
            r[i + (b)] = __builtin_shuffle(a, c, keep_hi); \
        } \
    } while (0)
/* fc_transpose16_f32 of the first n <= 16 rows of src, the others read as zero: dst's 16
 * rows are written 16 wide, zero past column n. */
static inline void fc_transpose16_rows_f32(float *restrict dst, Py_ssize_t ld_dst,
                                           const float *restrict src, Py_ssize_t ld_src,
                                           Py_ssize_t n)
{
    /* lo[c] = c's bit b clear ? a[c] : c[c - b]; hi[c] = bit b clear ? a[c + b] : c[c] */
    const fc_v16i lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
    const fc_v16i hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
    const fc_v16i lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const fc_v16i hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const fc_v16i lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
    const fc_v16i hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
    const fc_v16i lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const fc_v16i hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    fc_v16f r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        r[i] = (fc_v16f){0};
        if (i < n) r[i] = *(const fc_v16f_u *)(src + i * ld_src);
    }
    FC_T16_STAGE(1, lo1, hi1);
    FC_T16_STAGE(2, lo2, hi2);
    FC_T16_STAGE(4, lo4, hi4);
    FC_T16_STAGE(8, lo8, hi8);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) *(fc_v16f_u *)(dst + i * ld_dst) = r[i];
}
#undef FC_T16_STAGE
static inline void fc_transpose16_f32(float *restrict dst, Py_ssize_t ld_dst,
                                      const float *restrict src, Py_ssize_t ld_src)
{
    fc_transpose16_rows_f32(dst, ld_dst, src, ld_src, 16);
}
#else
#define FC_TRANSPOSE16_F32 0
static inline void fc_transpose16_f32(float *restrict dst, Py_ssize_t ld_dst,
                                      const float *restrict src, Py_ssize_t ld_src)
{
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 16; j += 8)
            fc_transpose_f32(dst + j * ld_dst + i, ld_dst, src + i * ld_src + j, ld_src);
}
static inline void fc_transpose16_rows_f32(float *restrict dst, Py_ssize_t ld_dst,
                                           const float *restrict src, Py_ssize_t ld_src,
                                           Py_ssize_t n)
{
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) dst[j * ld_dst + i] = i < n ? src[i * ld_src + j] : 0;
}
#endif

static inline void fc_transpose_f64(double *restrict dst, Py_ssize_t ld_dst,
                                    const double *restrict src, Py_ssize_t ld_src)
{
    const fc_v4l lo = {0, 4, 2, 6}, hi = {1, 5, 3, 7};
    const fc_v4l half_lo = {0, 1, 4, 5}, half_hi = {2, 3, 6, 7};
    fc_v4d r[4], t[4];
    for (int i = 0; i < 4; i++) r[i] = *(const fc_v4d_u *)(src + i * ld_src);
    for (int i = 0; i < 4; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
    }
    for (int i = 0; i < 2; i++) {
        *(fc_v4d_u *)(dst + i * ld_dst) = __builtin_shuffle(t[i], t[i + 2], half_lo);
        *(fc_v4d_u *)(dst + (i + 2) * ld_dst) = __builtin_shuffle(t[i], t[i + 2], half_hi);
    }
}
#define FC_TRANSPOSE_F64 4

#endif
