# The filter-lane kernel for small maps, included by _conv.pxi, whose slab fill and
# transposes it shares.
#
# A 4x4 output map has 16 pixels; over the GEMM kernel's pitch (junk columns for the taps'
# reach) they take two vectors of 16 lanes, half of them junk, and stacking images instead
# gathers every tap of every pixel into panels. Here the vector lanes hold filters: a task
# owns whole maps of a few images (or a part of one image's pixels, where one image per
# task would leave too few tasks) and a run of vectors of filters. Per chunk of input
# channels it fills each image's slab as _gemm_forward does (one band of all rows), packs
# its filters' weights for the chunk as rows of vectors (a transpose; once per call for all
# tasks where several blocks of images would repeat it, see FilterLanePlan), and runs
# fc_lanes: each pixel's value of a reduction row is one broadcast from the slab, each
# weight row two vector loads, for up to FC_LANES_NP pixels x 2 vectors of filters. A tile
# of pixels skips the taps that read zero padding for all of its pixels (the plan's lists of
# reduction rows, see _conv_plan._lane_tiles): small maps under wide, dilated or padded
# filters read mostly padding. A tile whose pixels are consecutive in the slab (within one
# output row) reads them through one pointer: a pointer per pixel spills the general
# registers (0.86-1.00 of the time on 12 layers, 2 threads). The staged tile (pixels x
# filters) goes out transposed (NCHW) or as it is (NHWC). Every output element is reduced
# by one task in a fixed order: bit-identical for any thread count.

cdef extern from "_conv_microkernel.h" nogil:
    enum:
        FC_LANES_NP
        FC_CL_VECTORS
    Py_ssize_t FC_STEP_NP(int nv)
    void fc_lanes_f32(Py_ssize_t depth, const float *a, const float *b,
                      const Py_ssize_t *rows, const Py_ssize_t *pix, float *c,
                      Py_ssize_t ldc, const float *bias, int relu, int np, int nv,
                      int half, int consecutive)
    void fc_lanes_f64(Py_ssize_t depth, const double *a, const double *b,
                      const Py_ssize_t *rows, const Py_ssize_t *pix, double *c,
                      Py_ssize_t ldc, const double *bias, int relu, int np, int nv,
                      int half, int consecutive)
    void fc_lanes_step_f32(Py_ssize_t depth, const float *a, const float *b,
                           const Py_ssize_t *rows, Py_ssize_t pix0, float *c,
                           Py_ssize_t ldc, const float *bias, int relu, int nv, int half,
                           int step, Py_ssize_t ntiles)
    void fc_lanes_step_f64(Py_ssize_t depth, const double *a, const double *b,
                           const Py_ssize_t *rows, Py_ssize_t pix0, double *c,
                           Py_ssize_t ldc, const double *bias, int relu, int nv, int half,
                           int step, Py_ssize_t ntiles)


LANES_PIXELS = FC_LANES_NP  # pixels per tile of the filter-lane kernel at most


cdef inline void _lanes(Py_ssize_t depth, const floating *a, const floating *b,
                        const Py_ssize_t *rows, const Py_ssize_t *pix, floating *c,
                        Py_ssize_t ldc, const floating *bias, bint relu, int np, int nv,
                        bint half, bint consecutive=False) noexcept nogil:
    """fc_lanes; consecutive: the pixels are pix[0], pix[0] + 1, ... (one pointer)."""
    if floating is float:
        fc_lanes_f32(depth, a, b, rows, pix, c, ldc, bias, relu, np, nv, half, consecutive)
    else:
        fc_lanes_f64(depth, a, b, rows, pix, c, ldc, bias, relu, np, nv, half, consecutive)


cdef inline bint _consecutive(const Py_ssize_t *pix, Py_ssize_t n) noexcept nogil:
    """Whether pix[p] == pix[0] + p for p < n."""
    cdef Py_ssize_t p
    for p in range(1, n):
        if pix[p] != pix[0] + p:
            return False
    return True


ctypedef struct _FilterLaneJob:
    # What every task of one _filter_lanes_forward call shares (see _GemmJob).
    const void *x
    const void *weight
    const void *bias              # (fvecs * lanes,) zero-padded
    void *out
    Py_ssize_t sn, sc, sh, sw
    const Py_ssize_t *row_src
    Py_ssize_t slab_rows
    const Py_ssize_t *col_src
    const Py_ssize_t *col_inner
    const Py_ssize_t *tap_rows    # the plan's lists of reduction rows (FilterLanePlan)
    const Py_ssize_t *tile_rows
    Py_ssize_t last_tiles         # the last block's first tile in tile_rows
    Py_ssize_t interleave         # images per group of a task (_conv_plan._lane_tiles)
    bint skip_padding             # the tiles' own lists, else every tap (a weight not finite)
    const Py_ssize_t *pixel_src
    Py_ssize_t stride_w, phases, pitch, slab_channel, wrap
    Py_ssize_t n_images, channels, channels_per_chunk, n_filters, depth, taps, lanes
    Py_ssize_t out_pixels, images_per_task, image_slab, fvecs, fvecs_per_task, fchunks
    Py_ssize_t panel_base, panel_ld
    const Py_ssize_t *part_bounds # (parts + 1, 2) first tile and pixel of each part
    Py_ssize_t parts              # tasks per block of images and chunk of filters
    void *packed                  # the weights packed once per call (_pack_shared_panel) or NULL
    bint relu, channels_last


cdef void _pack_lane_panel(const _FilterLaneJob *job, Py_ssize_t fc, Py_ssize_t c0,
                           floating *panel) noexcept nogil:
    """The weights of chunk fc of filters for channels c0 .. c0 + channels_per_chunk as rows
    of vectors, zero past the last filter: panel[r, f] = weight[f0 + f, c0 * taps + r]."""
    cdef const floating *weight = <const floating *>job.weight
    cdef Py_ssize_t lanes = job.lanes, ld = job.panel_ld
    cdef Py_ssize_t fvecs = min(job.fvecs_per_task, job.fvecs - fc * job.fvecs_per_task)
    cdef Py_ssize_t f0 = fc * job.fvecs_per_task * lanes
    cdef Py_ssize_t f_len = min(fvecs * lanes, job.n_filters - f0)
    cdef Py_ssize_t rows = min(job.channels_per_chunk, job.channels - c0) * job.taps
    cdef Py_ssize_t rows16 = rows - rows % 16
    cdef Py_ssize_t r, r0, v, f, n
    cdef const floating *src = weight + f0 * job.depth + c0 * job.taps
    if floating is float:
        if FC_TRANSPOSE16_F32 and lanes == 16:
            # 16 x 16 blocks, a last vector of fewer filters read as zero past them (one
            # short memset per row cost as much as the transposes)
            for v in range(fvecs):
                n = min(lanes, f_len - v * lanes)
                for r0 in range(0, rows16, 16):
                    fc_transpose16_rows_f32(panel + r0 * ld + v * lanes, ld,
                                            src + v * lanes * job.depth + r0, job.depth, n)
                for r in range(rows16, rows):
                    for f in range(lanes):
                        panel[r * ld + v * lanes + f] = (
                            src[(v * lanes + f) * job.depth + r] if f < n else 0)
            return
    _transpose(src, job.depth, f_len, rows, panel, ld)
    for r in range(rows):
        for f in range(f_len, fvecs * lanes):
            panel[r * ld + f] = 0


cdef inline void _pack_shared_panel(const _FilterLaneJob *job, Py_ssize_t j,
                                    Py_ssize_t cchunks, floating *packed) noexcept nogil:
    """Panel j of the weights packed once per call: chunk j // cchunks of filters, chunk
    j % cchunks of channels, where _filter_lanes_task reads it."""
    cdef Py_ssize_t fc = j // cchunks, c0 = j % cchunks * job.channels_per_chunk
    _pack_lane_panel(job, fc, c0, packed + (fc * job.depth + c0 * job.taps) * job.panel_ld)


cdef void _filter_lanes_task(const _FilterLaneJob *job, Py_ssize_t task, floating *slab,
                             floating *stage) noexcept nogil:
    """One task of _filter_lanes_forward: whole maps of a block of images (or, with parts,
    a part of one image's pixels) for a run of vectors of filters, into the thread's slab
    (images, then the packed weights) and staged tile (pixels x the task's filters)."""
    cdef const floating *x_data = <const floating *>job.x
    cdef const floating *bias = <const floating *>job.bias
    cdef floating *out = <floating *>job.out
    cdef floating *panel = slab + job.panel_base  # unless packed once for all tasks
    cdef Py_ssize_t lanes = job.lanes, taps = job.taps, ld = job.panel_ld
    cdef Py_ssize_t part = task % job.parts
    cdef Py_ssize_t fc = task // job.parts % job.fchunks
    cdef Py_ssize_t n0 = task // job.parts // job.fchunks * job.images_per_task
    cdef Py_ssize_t images = min(job.images_per_task, job.n_images - n0)
    cdef Py_ssize_t fv0 = fc * job.fvecs_per_task
    cdef Py_ssize_t fvecs = min(job.fvecs_per_task, job.fvecs - fv0)
    cdef Py_ssize_t f0 = fv0 * lanes
    cdef Py_ssize_t f_len = min(fvecs * lanes, job.n_filters - f0)
    # the part's pixels [p_first, p_end) and first tile (all of the block's without parts)
    cdef Py_ssize_t p_first = job.part_bounds[2 * part + 1]
    cdef Py_ssize_t p_end = (job.part_bounds[2 * part + 3] if job.parts > 1
                             else images * job.out_pixels)
    # the tiles and pixel order of a whole block of images, or of the last, smaller one
    cdef bint whole = images == job.images_per_task
    cdef const Py_ssize_t *tiles = job.tile_rows + (3 * job.part_bounds[2 * part] if whole
                                                    else 3 * job.last_tiles)
    cdef const Py_ssize_t *pixel_src = job.pixel_src + (0 if whole else job.images_per_task
                                                        * job.out_pixels)
    cdef const Py_ssize_t *tile
    cdef const Py_ssize_t *rows
    cdef Py_ssize_t c0, cc, i, q, fv, p0, depth
    cdef bint last, half
    cdef int nv
    c0 = 0
    while c0 < job.channels:
        cc = min(job.channels_per_chunk, job.channels - c0)
        last = c0 + cc == job.channels
        for i in range(images):
            _fill_slab(x_data + (n0 + i) * job.sn + c0 * job.sc, job.sc, job.sh, job.sw, cc,
                       job.row_src, job.slab_rows, job.col_src, job.col_inner, job.stride_w,
                       job.phases, job.pitch, slab + i * job.image_slab)
            if job.wrap:  # the right padding read past the last row (see _gemm_task)
                memset(slab + i * job.image_slab + cc * job.slab_channel, 0,
                       job.wrap * sizeof(floating))
        if job.packed != NULL:  # packed for all tasks
            panel = <floating *>job.packed + (fc * job.depth + c0 * taps) * ld
        else:
            _pack_lane_panel(job, fc, c0, panel)
        fv = 0
        while fv < fvecs:  # two vectors of filters at a time, their weights staying in L1
            nv = 2 if fv + 1 < fvecs else 1
            half = _half_tail(fv * lanes, f_len, nv, lanes)  # of the task's f_len filters
            p0 = p_first
            tile = tiles
            while p0 < p_end:  # the first cc * (its taps) reduction rows of the tile's list
                if job.skip_padding:
                    rows, depth = job.tap_rows + 2 * tile[0], cc * tile[1]
                else:  # every tap (the first list)
                    rows, depth = job.tap_rows, cc * taps
                _lanes(depth, panel + fv * lanes, slab, rows, pixel_src + p0,
                       stage + p0 * ld + fv * lanes, ld,
                       bias + f0 + fv * lanes if c0 == 0 else NULL, job.relu and last,
                       <int>tile[2], nv, half, _consecutive(pixel_src + p0, tile[2]))
                p0 = p0 + tile[2]
                tile = tile + 3
            fv = fv + nv
        c0 = c0 + cc
    # Staged row (first + q * group + i - first) * ld holds position q of image i, in its
    # group of images from first (_conv_plan._lane_tiles).
    cdef Py_ssize_t plane = job.out_pixels
    cdef Py_ssize_t first, group
    cdef const floating *staged
    if job.parts > 1:  # one image (interleave 1): staged row q holds its position q
        if job.channels_last:
            for q in range(p_first, p_end):
                _copy(out + (n0 * plane + q) * job.n_filters + f0, stage + q * ld, f_len)
        else:
            _transpose(stage + p_first * ld, ld, p_end - p_first, f_len,
                       out + n0 * job.n_filters * plane + f0 * plane + p_first, plane)
        return
    for i in range(images):
        first = i - i % job.interleave
        group = min(job.interleave, images - first)
        staged = stage + (first * plane + i - first) * ld
        if job.channels_last:  # each pixel's filters are a run of its output row
            for q in range(plane):
                _copy(out + ((n0 + i) * plane + q) * job.n_filters + f0,
                      staged + q * group * ld, f_len)
        else:
            _transpose(staged, group * ld, plane, f_len,
                       out + ((n0 + i) * job.n_filters + f0) * plane, plane)


cdef int _filter_lanes_forward(
    const _Arg *x,                 # IN  (N, C, H, W) any element strides
    const floating *weight,        # IN  (F, C*KH*KW) C-contiguous
    const floating *bias,          # IN  (F,) or NULL (zero)
    Py_ssize_t n_filters,
    floating *out_data,            # OUT (N, F, OH*OW) or (N, OH*OW, F) if NHWC
    floating *scratch_data,        # SCRATCH num_threads x scratch_per_thread, then the bias
                                   #     zero-padded to whole vectors (a multiple of 64
                                   #     bytes), then (shared_weights) the packed weights:
                                   #     _lane_weights_size(...) elements
    const _Arg *row_src,           # IN  intp (1, slab rows) input row or -1
    const _Arg *col_src,           # IN  intp (P, pitch) input col per slab column or -1
    const _Arg *col_inner,         # IN  intp (P, 3) linear interior of col_src
    const _Arg *tap_rows,          # IN  intp (L, 2) listed reduction rows: slab offset,
                                   #     offset in the packed weights
    const _Arg *tile_rows,         # IN  intp (tiles, 3) each tile's list (start, taps) and
                                   #     pixels (at most FC_LANES_NP): a whole block's tiles,
                                   #     from last_tiles the last block's
    Py_ssize_t last_tiles, Py_ssize_t interleave,
    bint skips,                    # some tile skips taps (FilterLaneCall checks the plan)
    const _Arg *pixel_src,         # IN  intp slab position of each of a task's pixels: a
                                   #     whole block's (images_per_task*OH*OW), the last's
    const _Arg *part_bounds,       # IN  intp (parts + 1, 2) first tile and pixel per part
    Py_ssize_t stride_w, Py_ssize_t taps, Py_ssize_t out_h, Py_ssize_t out_w,
    Py_ssize_t channels_per_chunk, Py_ssize_t images_per_task, Py_ssize_t image_slab,
    Py_ssize_t fvecs_per_task, Py_ssize_t slab_size, Py_ssize_t wrap,
    bint shared_weights,           # pack the weights once, after the bias (see the plan)
    bint channels_last, bint relu, int num_threads,
) except -1:
    """out = conv(x, weight) + bias (then ReLU) for a whole batch of small maps, one group;
    see this file's header. The caller (FilterLaneCall) has checked every size against the
    plan."""
    cdef Py_ssize_t lanes = FC_LANES_F32 if floating is float else FC_LANES_F64
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t fvecs = (n_filters + lanes - 1) // lanes
    cdef Py_ssize_t fchunks = (fvecs + fvecs_per_task - 1) // fvecs_per_task
    cdef Py_ssize_t parts = part_bounds.shape[0] - 1
    cdef Py_ssize_t n_tasks = ((n_images + images_per_task - 1) // images_per_task * fchunks
                               * parts)
    cdef Py_ssize_t out_pixels = out_h * out_w
    cdef Py_ssize_t scratch_per_thread = (slab_size + images_per_task * out_pixels
                                          * fvecs_per_task * lanes)
    cdef floating *padded_bias = scratch_data + num_threads * scratch_per_thread
    cdef long long work = <long long>n_images * out_pixels * n_filters * channels * taps
    cdef Py_ssize_t f, task
    cdef floating *slab = NULL
    cdef floating *stage = NULL
    if n_tasks == 0:
        return 0
    for f in range(fvecs * lanes):
        padded_bias[f] = bias[f] if bias != NULL and f < n_filters else 0
    cdef _FilterLaneJob job
    job.x, job.weight, job.bias, job.out = x.data, weight, padded_bias, out_data
    job.sn, job.sc, job.sh, job.sw = x.strides[0], x.strides[1], x.strides[2], x.strides[3]
    job.row_src, job.slab_rows = <const Py_ssize_t *>row_src.data, row_src.shape[1]
    job.col_src = <const Py_ssize_t *>col_src.data
    job.col_inner = <const Py_ssize_t *>col_inner.data
    job.tap_rows = <const Py_ssize_t *>tap_rows.data
    job.tile_rows, job.last_tiles = <const Py_ssize_t *>tile_rows.data, last_tiles
    job.interleave = interleave
    # Tiles skip taps that read only zero padding unless a weight is infinite or NaN: its
    # product with zero is NaN, not nothing. The scan costs a read of the weights (5% of a
    # 0.39 ms layer with 2.2 MB of them), only where some tile skips.
    job.skip_padding = skips and _all_finite(weight, n_filters * channels * taps)
    job.pixel_src = <const Py_ssize_t *>pixel_src.data
    job.part_bounds, job.parts = <const Py_ssize_t *>part_bounds.data, parts
    job.stride_w, job.phases, job.pitch = stride_w, col_src.shape[0], col_src.shape[1]
    job.slab_channel = job.phases * job.slab_rows * job.pitch
    job.wrap = wrap
    job.n_images, job.channels, job.channels_per_chunk = n_images, channels, channels_per_chunk
    job.n_filters, job.depth, job.taps, job.lanes = n_filters, channels * taps, taps, lanes
    job.out_pixels, job.images_per_task, job.image_slab = out_pixels, images_per_task, image_slab
    job.fvecs, job.fvecs_per_task, job.fchunks = fvecs, fvecs_per_task, fchunks
    job.panel_base = images_per_task * image_slab
    job.panel_ld = fvecs_per_task * lanes
    job.relu, job.channels_last = relu, channels_last
    cdef Py_ssize_t cchunks = (channels + channels_per_chunk - 1) // channels_per_chunk
    cdef Py_ssize_t n_packs = fchunks * cchunks if shared_weights else 0
    cdef Py_ssize_t j
    job.packed = (padded_bias + (fvecs * lanes + 15) // 16 * 16 if shared_weights
                  else NULL)
    cdef int master_cpu
    if num_threads > 1 and work > PARALLEL_WORK:
        master_cpu = fc_current_cpu()
        with nogil, parallel(num_threads=num_threads):
            fc_leave_master_cpu(master_cpu)  # see _threads.h
            slab = scratch_data + threadid() * scratch_per_thread
            stage = slab + slab_size
            for j in prange(n_packs, schedule="dynamic"):  # ends with a barrier
                _pack_shared_panel(&job, j, cchunks, <floating *>job.packed)
            for task in prange(n_tasks, schedule="dynamic"):
                _filter_lanes_task(&job, task, slab, stage)
    else:
        with nogil:
            for j in range(n_packs):
                _pack_shared_panel(&job, j, cchunks, <floating *>job.packed)
            for task in range(n_tasks):
                _filter_lanes_task(&job, task, scratch_data, scratch_data + slab_size)
    return 0


cdef inline Py_ssize_t _lane_weights_size(Py_ssize_t n_filters, Py_ssize_t depth,
                                          Py_ssize_t fvecs_per_task, Py_ssize_t lanes,
                                          bint shared_weights) noexcept nogil:
    """Shared scratch elements of a filter-lane call: the padded bias (rounded up to 64
    bytes), then the weights packed once (shared_weights): each chunk of fvecs_per_task
    vectors of filters as (depth, fvecs_per_task * lanes)."""
    cdef Py_ssize_t fvecs = (n_filters + lanes - 1) // lanes
    cdef Py_ssize_t fchunks = (fvecs + fvecs_per_task - 1) // fvecs_per_task
    cdef Py_ssize_t bias = (fvecs * lanes + 15) // 16 * 16
    return bias + (fchunks * depth * fvecs_per_task * lanes if shared_weights else 0)
