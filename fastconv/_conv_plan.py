"""How a validated conv2d call is laid out for the kernel in ``_conv.pxi``.

Everything here depends on the problem's shape only, never on the thread count, so the
work split (and with it every bit of the result) is the same for any ``num_threads``.

Vocabulary (see the header of ``_conv.pxi``):
- the *pitch* is the length of one output row in the kernel's pixel numbering: the output
  width plus a few junk columns, so that the taps of consecutive pixels are consecutive;
- a *phase* is a residue of the padded input column modulo the stride: the slab stores each
  input row split by phase so that strided taps are contiguous too;
- the *slab* is the thread-local copy of the padded input rows a task needs, laid out as
  (channel, phase, slab row, pitch). With row stride 1 the slab rows are the padded input
  rows of the band (each copied once); with a larger row stride they are (kh, output row),
  so that consecutive output rows are one pitch apart in both cases.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

# Reduction rows (channel x kh x kw) per micro-kernel pass: its weight panel stays in L1.
REDUCTION_DEPTH = 256
# Bytes of slab per thread at most: the slab and the staged output share L2 (512 KiB on Zen 3;
# at 512 KiB of slab the 256-channel 1x1 layer ran 8% slower, interleaved, 2 threads).
SLAB_BYTES = 256 * 1024
# Output pixels (over the pitch) per task at most, and enough tasks to balance two threads
# on small layers.
MAX_TASK_PIXELS = 1024
MIN_TASKS = 8
# GEMM splits of layers of LARGE_SPLIT_MACS multiply-adds or more on maps of more than
# LARGE_SPLIT_PIXELS seek LARGE_MIN_TASKS tasks instead: the fewer, larger bands fill their
# tiles better (a 14x14 map in bands of 4 rows computes 3.5 vectors of pixels per band as
# 2 + 1.5). Measured on Zen 5, 2 threads, time with 4 / with 8 on the 41 layers among 561
# random and named ones whose split it changes: 0.85-1.05, geomean 0.95 (resnet_14 0.90,
# down_28 0.88, 16x16 192 -> 192 0.85; resnet_28 1.02, 1x1 stride 2 on 56x56 1.05), and on
# 13 of 200 fresh random layers 0.87-1.04 (geomean 0.96); on 7x7 and 8x8 maps 1.10-1.15,
# and on layers under 20M 0.89-1.16 (tasks too short to balance in fours).
LARGE_SPLIT_MACS = 20_000_000
LARGE_SPLIT_PIXELS = 64
LARGE_MIN_TASKS = 4
# Filters with at most this many weights each are packed whole: packing them costs little
# and the packed panel serves short reductions better than MR separate rows.
# (measured: the 1 -> 32 channel 3x3 layer at batch 64 runs 7% faster packed)
PACK_ALL_DEPTH = 32
# Small maps: a task may stack the output pixels of several images, at most this many
# (see _stack_split), and its staged tile must fit L2 (512 KiB on Zen 3): the staged tile
# of all of ResNet-50's 2048 filters for 4 images of 7x7 (3.3 MiB in float64) ran 1.4x
# slower than bands of one image, its accumulators passing through memory once per chunk
# of channels; at 256 KiB a 7x7 layer with 512 filters at batch 8 ran 5% slower.
STACK_PIXELS = 256
STACK_STAGE_BYTES = 512 * 1024
# Junk columns (see _column_maps) cost lanes: ResNet's 14x14 layer computes 4 vectors of
# 16 for 4 rows of 15 columns, 3.5 for 4 rows of 14. One slab phase per tap has none, at the
# price of kw copies of each input row. The split model weighs the copies' fill, not their
# wider windows in the slab: the plan takes them where the model estimates TAP_PHASES_GAIN
# less time for the same split, with at most TAP_PHASES_ADDED more phases than the stride's
# (3x3 kernels), on maps the filter-lane kernel cannot take (LANES_MAX_PIXELS: its choice
# weighs the GEMM plan's lanes). Measured on Zen 4, 2 threads, time with / without, on the
# layers it takes among the benchmark suites and 32 random layers: float32 0.89-1.02
# (resnet_14 0.93, down_28 0.95, s2_56 0.89), float64 0.90-1.01, AVX2 float32 0.87-1.10;
# 5x5 and 7x7 kernels taken on the model's word alone (before _conv.pxi's TAP_SLAB_BYTES)
# 0.92-1.33. The model overweights the fill of small maps: with vectors of 16 pixels and at
# least TAP_JUNK_SHARE of the pitch junk, an estimate up to TAP_JUNK_SLACK higher is taken
# (mnist_b64: 1.013 estimated, 0.86-0.90 measured; 15 random layers 0.82-1.03, 12 below
# 0.98); with 8 lanes (float64, AVX2) three of five such layers measured 1.12-1.20.
TAP_PHASES_GAIN = 0.01
TAP_PHASES_ADDED = 2
TAP_JUNK_SHARE = 1 / 16
TAP_JUNK_SLACK = 0.02


class ConvPlan(NamedTuple):
    row_src: np.ndarray      # (row bands, slab rows) input row of each slab row, -1 = zero
    col_src: np.ndarray      # (P, pitch) input column of slab column (phase, q), -1 = zero
    col_inner: np.ndarray    # (P, 3) [first, end) of the linear interior per phase, offset
    b_offset: np.ndarray     # (CC*KH*KW,) slab offset of reduction row (c, kh, kw)
    rows_per_task: int
    channels_per_chunk: int
    fblocks_per_task: int
    slab_size: int
    stage_pitch: int         # staged tile: elements per filter (rows * pitch, whole tiles)
    scratch_per_thread: int  # slab + staged tile (fblocks_per_task * MR filters)
    inplace_blocks: int      # blocks of MR filters the micro-kernel reads in place
    wrap: int                # zeros after a chunk's last channel in the slab (see _column_maps)
    # Stacked tasks (images_per_task > 0, see _stack_split): the slab holds each image's
    # chunk image_slab apart, then the gathered panels from panel_base; pixel_src maps a
    # task's pixel (image, oh, ow) to its slab position (image * image_slab + oh * pitch + ow).
    images_per_task: int
    image_slab: int
    panel_base: int
    pixel_src: np.ndarray


def inplace_blocks(per_group, depth, mr):
    """Blocks of ``mr`` filters the micro-kernel reads from the weights in place (the others,
    a group's last partial block, or all short filters, it reads from packed panels)."""
    return per_group // mr if depth > PACK_ALL_DEPTH else 0


def source_index(positions, size, mode):
    """Map positions relative to the unpadded input to input indices, -1 for a zero."""
    if mode == "zeros":
        return np.where((positions >= 0) & (positions < size), positions, -1)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    if mode == "circular":
        return np.mod(positions, size)
    # reflect (mirror without repeating the edge); the caller guarantees padding < size.
    positions = np.abs(positions)
    return np.where(positions >= size, 2 * (size - 1) - positions, positions)


@functools.lru_cache(maxsize=256)
def plan(*, n_images, groups, in_per_group, per_group, height, width, out_h, out_w,
         kernel, stride, dilation, pads, padding_mode, mr, nr, lanes, itemsize, row_multiple=1,
         half_tail=False):
    """The kernel's layout for one problem shape; cached (layers call it with one shape).
    Tiles are ``mr`` filters x ``nr`` pixels; a band's last tile computes only the vectors of
    ``lanes`` pixels it needs (``lanes = nr``: whole tiles), its last one a half vector if
    ``half_tail`` (the kernels' HALF_TAIL) and half of it is enough. ``row_multiple``: bands
    of output rows are a multiple of it (fused pooling windows)."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, _, left, right = pads
    fblocks = -(-per_group // mr)

    row_classes = _row_classes(kh, sh, dh)

    def slab_rows_of(rows):
        return _slab_rows(row_classes, rows)

    def split(maps, given=None):
        """(rows per task, filter blocks per task, estimated time) with these column maps:
        the best split, or the given one."""
        return _split_tasks(
            out_h=out_h, out_w=out_w, pitch=maps[1], nr=nr, lanes=lanes, mr=mr,
            planes=n_images * groups,
            fblocks=fblocks, depth=in_per_group * kh * kw,
            fill_per_row_span=in_per_group * maps[0] * maps[1], slab_rows_of=slab_rows_of,
            row_multiple=row_multiple, half_tail=half_tail, given=given)

    maps = _column_maps(width, out_w, kw, sw, dw, left, right, padding_mode, wrap_right=True)
    rows, fblocks_per_task, slab_time = split(maps)
    if (maps[1] > out_w and 0 < kw - maps[0] <= TAP_PHASES_ADDED
            and out_h * out_w > LANES_MAX_PIXELS):
        # Junk columns: one slab phase per tap instead (see TAP_PHASES_GAIN, TAP_JUNK_SLACK)
        tap_maps = _column_maps(width, out_w, kw, sw, dw, left, right, padding_mode,
                                per_tap=True)
        junky = lanes >= 16 and maps[1] - out_w >= TAP_JUNK_SHARE * maps[1]
        limit = 1 + TAP_JUNK_SLACK if junky else 1 - TAP_PHASES_GAIN
        if split(tap_maps, (rows, fblocks_per_task))[2] < limit * slab_time:
            maps = tap_maps
    phases, pitch, col_src, col_inner, tap_phase, tap_shift, wrap = maps
    images_per_task = 0
    if nr > lanes and row_multiple == 1 and out_h * out_w <= STACK_PIXELS:
        # (not for the one-filter tile, nor for fused pooling's bands of whole windows)
        # 1x1, stride 1, no padding: the panels are copied from x's rows (NCHW), no slab
        pointwise = kh == kw == 1 and sh == sw == 1 and not any(pads)
        fill = in_per_group * phases * pitch * slab_rows_of(out_h)
        images_per_task, stacked_blocks, stacked_time = _stack_split(
            n_images=n_images, pixels=out_h * out_w, lanes=lanes, nr=nr, mr=mr,
            groups=groups, fblocks=fblocks, depth=in_per_group * kh * kw,
            fill_per_image=0 if pointwise else fill,
            gather_cost=FILL_ELEMENT_COST if pointwise else GATHER_ELEMENT_COST,
            itemsize=itemsize, half_tail=half_tail)
        if stacked_time < (1 - STACK_GAIN) * slab_time:
            rows, fblocks_per_task = out_h, stacked_blocks
        else:
            images_per_task = 0
    row_src, kh_start = _band_rows(rows, out_h, height, top, sh, padding_mode, row_classes)
    slab_rows = row_src.shape[1]

    slab_row = phases * slab_rows * pitch  # elements per input channel
    stacked_pixels = images_per_task * out_h * out_w
    # per channel: its slab rows, or each stacked image's and its gathered panel rows
    channel_bytes = (images_per_task * slab_row + kh * kw * -(-stacked_pixels // lanes) * lanes
                     if images_per_task else slab_row) * itemsize
    channels = max(1, min(in_per_group, REDUCTION_DEPTH // (kh * kw),
                          SLAB_BYTES // channel_bytes))
    channels = _equal_chunk(in_per_group, channels)

    b_offset = _tap_offsets(channels, phases, slab_rows, pitch, kh_start, tap_phase, tap_shift)
    stage_pitch = -(-rows * pitch // nr) * nr
    slab_size = max(channels * slab_row + wrap, int(b_offset.max()) + stage_pitch)
    if kh == kw == 1:  # room for a band's tile panels (_conv.pxi's _pack_panels)
        slab_size = max(slab_size, channels * stage_pitch)
    image_slab = panel_base = 0
    pixel_src = np.zeros(0, dtype=np.intp)
    if images_per_task:
        image_slab, pixel_src = _stacked_images(images_per_task, channels * slab_row + wrap,
                                                out_h, out_w, pitch, itemsize)
        panel_base = images_per_task * image_slab  # the panels start on a cache line too
        stage_pitch = -(-stacked_pixels // nr) * nr
        slab_size = panel_base + channels * kh * kw * stage_pitch
    _share(row_src, col_src, col_inner, b_offset, pixel_src)
    return ConvPlan(row_src, col_src, col_inner, b_offset, rows, channels, fblocks_per_task,
                    slab_size, stage_pitch, slab_size + fblocks_per_task * mr * stage_pitch,
                    inplace_blocks(per_group, in_per_group * kh * kw, mr), wrap,
                    images_per_task, image_slab, panel_base, pixel_src)


class FilterLanePlan(NamedTuple):
    row_src: np.ndarray      # (1, slab rows) as ConvPlan's, one band of whole maps
    col_src: np.ndarray      # (P, pitch) as ConvPlan's
    col_inner: np.ndarray    # (P, 3) as ConvPlan's
    tap_rows: np.ndarray     # (L, 2) reduction rows in lists, each list the rows (c, kh, kw)
                             # of a chunk's channels c, for its taps (kh, kw) only: the
                             # row's slab offset and its offset in a task's packed weights
    tile_rows: np.ndarray    # (tiles, 3) the tiles of a task's pixels in order: the first
                             # row of its list in tap_rows, its taps per channel, its pixels;
                             # the tiles of a whole block of images, then of the last block.
                             # tap_rows starts with the list of every tap, which all tiles
                             # take where a weight is infinite or NaN: a product of such a
                             # weight with zero padding is NaN, not nothing.
    pixel_src: np.ndarray    # slab position of each pixel of a task (see _lane_tiles), a
                             # whole block's (images_per_task * OH * OW), then the last's
    last_images: int         # images of the last block if fewer than images_per_task, or 0
    interleave: int          # a task's images in groups of this many, their pixels
                             # position by position (_lane_tiles)
    work: float              # the share of the taps that the tiles compute, weighted by
                             # the cost of interleaving (LANES_INTERLEAVE_COST) and by
                             # the balance of two threads over the tasks
    rows_per_task: int       # out_h
    channels_per_chunk: int
    images_per_task: int
    image_slab: int          # slab elements per image (a chunk of its padded rows)
    fvecs_per_task: int      # vectors of filters per task
    slab_size: int           # the images' slabs, then the packed weights
    scratch_per_thread: int  # slab + staged tile (task pixels x fvecs_per_task vectors)
    wrap: int                # as ConvPlan's
    shared_weights: bool     # weights packed once per call for all tasks, not per task
    part_bounds: np.ndarray  # (parts + 1, 2) a task's share of its block's tiles: part k
                             # takes tiles [part_bounds[k, 0], part_bounds[k + 1, 0]), its
                             # first pixel part_bounds[k, 1]; one part unless one image per
                             # task (LANES_PART_PIXELS)


# The filter-lane kernel (_conv_filter_lanes.pxi) replaces the GEMM kernel's plan where that
# plan's vectors would hold few real pixels (junk columns, a short last vector) and the
# filters fill theirs: lanes of pixels filled below LANES_GAIN x the lanes of filters filled.
# Its weights are packed per call, so it also needs maps of at most LANES_MAX_PIXELS and a
# batch of at least LANES_MIN_WORK pixels x reduction rows. Measured on Zen 4, 2 threads,
# filter-lane / GEMM time over 25 random small strided layers: 0.52-0.86 (64 images of
# 7x7, 125 -> 23 filters of 7x7 with stride 2: 0.79); 16 x 8x8 -> 3x3 with 25 channels
# (57,600 pixels x rows): 1.28; with the half vector of filters (below) the 7x7 stride-2
# layer a further 0.78. Where the GEMM plan stacks images (compact pixels, gathered per
# reduction row) it also replaces it for at most LANES_STACKED_FILTERS filters and kernels
# larger than 1x1: 24 random stacked layers forced onto it measured 0.64-0.93 with 32-64
# filters (a 1x1 layer with 64: 1.07, its panels copied from x), 0.95-1.27 with 96-256.
LANES_GAIN = 0.75
# With row tiles (LANES_ROW_TILE_WIDTH) and LANES_BATCH_PIXELS output pixels or more over the
# batch (its weights, packed per call, then serve many pixels), the filter-lane kernel
# computes a tap about as fast as the GEMM kernel: LANES_BATCH_GAIN leaves it a 10% margin.
# Measured on Zen 4, 2 threads, filter-lane / GEMM time where it is taken: 0.76-0.98 on 25
# layers, float32, float64 and NHWC (64 x 7x7, 170 -> 47 channels, 3x3: 0.84; 32 x 14x14,
# 32 -> 64, 5x5: 0.85); forced on 3x3 layers the model leaves on GEMM, 0.96-1.04 (8 x 14x14,
# 256 channels: 0.96; 64 x 14x14, 20 -> 36: 1.04), and 1.15 on one 7x7 map of 512 channels.
LANES_BATCH_GAIN = 0.9
LANES_BATCH_PIXELS = 1024
# On maps of at most LANES_MAX_PIXELS (7x7, 8x8) the margin is LANES_BATCH_GAIN from
# LANES_SMALL_BATCH_PIXELS output pixels over the batch (3 images of 7x7), for two vectors
# of filters or more. Measured on Zen 5, 2 threads, filter-lane / GEMM time on 34 random 3x3
# layers of 3x3 to 8x8 maps this margin moved: 0.69-0.99 on 27 with 32 filters or more
# (16 x 7x7, 384 -> 256: 0.69; 3 x 7x7, 512 -> 512: 0.76), 1.09 on 4 x 8x8, 160 -> 32, 1.14
# on 2 x 8x8 (128 pixels); 1.02-1.71 with 8 or 16 filters (half-empty vectors). One 7x7
# image: 0.96-1.13. With 8 lanes (float64) 12 of those layers measured 0.80-1.61 (4 x 7x7,
# 512 -> 192: 1.61, each task packing its weights for 49 pixels), so only with 16.
LANES_SMALL_BATCH_PIXELS = 144
LANES_SMALL_BATCH_LANES = 16
# Kernels of LANES_WIDE_TAPS taps or more (5x5, 7x7) read padding with many taps at the
# edges of a map. They take the filter-lane kernel by the margin of LANES_BATCH_GAIN on
# fewer pixels too: 0.78-1.02 of the GEMM kernel's time on 14 such layers of batch 1-8
# (k5_28_c48to96 0.92, alex_k5_27_c96to256 0.96; NHWC 0.95 and 0.91, float64 0.98 and 0.95).
# And only they go to it from the channels-last kernel (NHWC, rows of 24 pixels or more):
# 0.75-0.91 of that kernel's time on four 5x5 and 7x7 layers of 24x24 to 31x31 maps, 1.13 on
# 8 x 7x40 maps under 3x3.
LANES_WIDE_TAPS = 25
LANES_STACKED_FILTERS = 64
LANES_MAX_PIXELS = 64
# Larger maps, up to LANES_LARGE_PIXELS, with kernels of at least LANES_LARGE_TAPS taps
# (3x3 and up, dilated): their edges read zero padding with many taps, which the filter-lane
# kernel skips and the GEMM kernel computes. Measured on Zen 4, 2 threads, filter-lane /
# GEMM time over 9x9 to 16x16 maps the same rule takes: 0.66-0.97 on 18 layers of 5x5 and
# 7x7 (a 14x14 map under 7x7 with dilation 2, 161 -> 72 channels: 0.82), 1.03 and 1.06 on
# two batch-1 7x7 layers of 32 -> 48 channels (0.12-0.15 ms); with row tiles (below), 3x3
# kernels 0.79-0.98 on 10 layers (8 x 14x14 dilated by 3: 0.95, 1.19 before row tiles);
# maps of 257-1024 pixels (up to 32x32) 0.71-0.98 on 22 layers of batch 1-64.
LANES_LARGE_PIXELS = 1024
LANES_LARGE_TAPS = 9
LANES_MIN_WORK = 65536
# Pixels per task: the packed weights serve them all. Reduction rows per chunk of channels
# and bytes of packed weights per task at most (an L2's share). Where several blocks of
# images would each pack the same weights, they are packed once per call if they take at
# most LANES_SHARED_BYTES (16 x 5x5 maps, 49 -> 23 filters of 5x5: 0.86 of the time).
LANES_TASK_PIXELS = 256
LANES_DEPTH = 256
LANES_PANEL_BYTES = 128 * 1024
LANES_SHARED_BYTES = 4 * 1024 * 1024
# One image per task and still too few tasks: rather than a vector of filters per task, two
# vectors and parts of the image's pixels (whole tiles, parts of at least LANES_PART_PIXELS),
# each part filling the image's whole slab. A pixel's broadcast then serves two vectors of
# filters: at 1 thread, two vectors took 0.73-0.76 of the time of one on 4 single-image 5x5
# and 7x7 layers of 64-128 filters (Zen 5); the fill is a few % of these layers' time.
LANES_PART_PIXELS = 64
LANES_PART_TASKS = 4
# The kernel takes a task's filters two vectors at a time; a pass over one vector (an odd
# count) computes a tap at LANES_ONE_VECTOR_COST times the cost of a vector in a two-vector
# pass (1 / 0.74, the measurement above). FilterLanePlan.work counts it on maps of more than
# LANES_MAX_PIXELS, where the GEMM kernel fills its vectors well, for more than one vector
# of filters: 28x28, 40 -> 40 filters of 5x5 took 1.21x the GEMM kernel's time on the
# filter-lane kernel in two tasks of two vectors and two of one. (On smaller maps the margins
# above were measured with one-vector tasks: 8x8 and 6x6 maps, 48 and 100 filters, went to
# the GEMM kernel with this cost and took 1.22x the time.)
LANES_ONE_VECTOR_COST = 1.35
# A task whose tiles take pixels across i interleaved images (_lane_tiles) computes each of
# its taps at 1 + LANES_INTERLEAVE_COST * log2(i) times the cost of a task that does not.
# Measured on Zen 4, 2 threads, 4x4 maps of 8 images (7x7 stride 2; 3x3 stride 2) against
# the taps computed: 4 images 1.06-1.10, 8 images 1.16-1.19.
LANES_INTERLEAVE_COST = 0.05
# One image's output rows of at least LANES_ROW_TILE_WIDTH pixels are tiled row by row (14
# -> 7 + 7; 9 -> 9), not across rows: a tile's pixels are then consecutive in the slab,
# read through one pointer (twelve pixel pointers spill), and its taps skip the kernel rows
# that read padding for its row. Measured on Zen 4, 2 threads, filter-lane kernel with /
# without: 0.70-0.95 on 33 5x5 and 7x7 layers of 7x7 to 16x16 maps (float64 0.76-0.92,
# NHWC 0.78-0.98); rows of 4-6 pixels (tiles of 4-6) 0.67-1.23, so they stay across rows.
LANES_ROW_TILE_WIDTH = 7


def row_tiles(tile_pixels):
    """Whether the filter-lane kernel, whose tiles hold up to ``tile_pixels`` pixels, tiles
    rows row by row (LANES_ROW_TILE_WIDTH). Below AVX-512 its tiles hold 6 pixels, too few
    (a 7-pixel row as 4 + 3): there it keeps the rules measured without row tiles (maps of at
    most LANES_MAX_PIXELS, LANES_GAIN), which those tiles' kernel was tuned on. Measured at
    AVX2 on 13 layers, the rules for row tiles took 0.88-1.66 of the time of those."""
    return tile_pixels >= LANES_ROW_TILE_WIDTH


def _ends_in_half(count, lanes, half_tail):
    """Whether ``count`` items in vectors of ``lanes`` end in a half vector (the kernels'
    HALF_TAIL, ``half_tail``): the last vector holds at most half its lanes of them."""
    return half_tail and 0 < count % lanes <= lanes // 2


def pixel_fill(gemm_plan, out_h, out_w, lanes, nr, half_tail):
    """The share of the lanes that the GEMM kernel computes under ``gemm_plan`` which hold
    real output pixels (the rest: junk columns, a band's partial last vector)."""
    if gemm_plan.images_per_task:  # compact panels of the stacked images' pixels
        return 1.0
    rows = gemm_plan.rows_per_task
    pitch = gemm_plan.col_src.shape[1]
    computed = 0.0
    for band in range(0, out_h, rows):
        q_len = min(rows, out_h - band) * pitch
        computed += sum(tile_vectors(q_len, lanes, nr // lanes)) * lanes
        if _ends_in_half(q_len, lanes, half_tail):
            computed -= lanes / 2
    return out_h * out_w / computed


def filter_lanes_fit(*, n_images, groups, depth, taps, out_h, out_w, lanes, tile_pixels,
                     row_multiple=1):
    """Whether the filter-lane kernel (tiles of up to ``tile_pixels`` pixels) can take the
    call: small maps of one group (larger ones under kernels of many ``taps``, with row
    tiles), enough work (``depth``: reduction rows) and no fused pooling."""
    pixels = out_h * out_w
    larger = (pixels <= LANES_LARGE_PIXELS and taps >= LANES_LARGE_TAPS
              and row_tiles(tile_pixels))
    small = pixels <= LANES_MAX_PIXELS or larger
    return (groups == 1 and row_multiple == 1 and lanes > 1 and small
            and n_images * pixels * depth >= LANES_MIN_WORK)


def use_filter_lanes(*, per_group, taps, lanes, fill, stacked, work=1.0, half_tail=False,
                     pixels=0, map_pixels, channels_last_fits=False, tile_pixels):
    """Whether conv2d runs on the filter-lane kernel (if it fits, filter_lanes_fit) rather
    than the GEMM kernel whose pixels fill ``fill`` of its lanes (pixel_fill; ``stacked``:
    its plan stacks images): filters that fill their vectors (a last one of at most half its
    lanes as a half vector with ``half_tail``) much better than the GEMM kernel's pixels
    fill theirs (the GEMM kernel computes every tap, the filter-lane kernel ``work`` of
    them, FilterLanePlan.work; by a smaller margin, LANES_BATCH_GAIN, over ``pixels``
    output pixels of the batch, LANES_SMALL_BATCH_PIXELS on maps of ``map_pixels`` up to
    LANES_MAX_PIXELS, or under wide kernels, with row tiles: ``tile_pixels``), or
    few filters of more than one tap where the GEMM kernel gathers stacked images. Where
    the channels-last kernel would take the layer instead (``channels_last_fits``: NHWC, no
    junk columns), only under kernels of at least LANES_WIDE_TAPS taps."""
    if channels_last_fits and taps < LANES_WIDE_TAPS:
        return False
    computed = -(-per_group // lanes) * lanes
    if _ends_in_half(per_group, lanes, half_tail):
        computed -= lanes // 2
    filter_fill = per_group / computed
    small_batch = (map_pixels <= LANES_MAX_PIXELS and pixels >= LANES_SMALL_BATCH_PIXELS
                   and lanes >= LANES_SMALL_BATCH_LANES and per_group >= 2 * lanes)
    wide = pixels >= LANES_BATCH_PIXELS or taps >= LANES_WIDE_TAPS or small_batch
    gain = LANES_BATCH_GAIN if wide and row_tiles(tile_pixels) else LANES_GAIN
    return (fill * work < gain * filter_fill
            or (stacked and taps > 1 and per_group <= LANES_STACKED_FILTERS))


@functools.lru_cache(maxsize=256)
def filter_lane_plan(*, n_images, in_channels, n_filters, height, width, out_h, out_w,
                     kernel, stride, dilation, pads, padding_mode, lanes, tile_pixels,
                     itemsize):
    """The layout of ``_conv_filter_lanes.pxi`` for one problem shape: a task owns whole maps
    of ``images_per_task`` images and ``fvecs_per_task`` vectors of filters. Per chunk of
    input channels it fills each image's slab (ConvPlan's layout, one band of all rows),
    packs its filters' weights for the chunk as rows of vectors, and computes its pixels
    (pixel_src: where each reads the slab) x its filters, in tiles of at most
    ``tile_pixels`` (the kernel's), each over the taps that read the input for one of its
    pixels (_lane_tiles)."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, _, left, right = pads
    taps = kh * kw
    phases, pitch, col_src, col_inner, tap_phase, tap_shift, wrap = _column_maps(
        width, out_w, kw, sw, dw, left, right, padding_mode, wrap_right=True)
    row_src, kh_start = _band_rows(out_h, out_h, height, top, sh, padding_mode,
                                   _row_classes(kh, sh, dh))
    slab_rows = row_src.shape[1]
    slab_channel = phases * slab_rows * pitch

    pixels = out_h * out_w
    fvecs = -(-n_filters // lanes)
    images = max(1, min(n_images, LANES_TASK_PIXELS // pixels))
    channels = max(1, min(in_channels, LANES_DEPTH // taps,
                          SLAB_BYTES // (images * slab_channel * itemsize)))
    channels = _equal_chunk(in_channels, channels)
    fvecs_per_task = max(1, min(fvecs, LANES_PANEL_BYTES // (channels * taps * lanes * itemsize)))
    fvecs_per_task = _equal_chunk(fvecs, fvecs_per_task)

    def tasks(images, fvecs_per_task):
        return -(-n_images // images) * -(-fvecs // fvecs_per_task)

    # Enough tasks to balance two threads: fewer images per task first, then fewer filters,
    # but (one image per task) not under two vectors of them: parts of the pixels instead,
    # for at least LANES_PART_TASKS tasks and an even count where the parts allow. Each
    # task fills its image's slab (all of it), so no more parts than that.
    while images > 1 and tasks(images, fvecs_per_task) < MIN_TASKS:
        images = -(-images // 2)
    parts = 1
    most_parts = max(1, pixels // LANES_PART_PIXELS)
    if (images == 1 and fvecs_per_task > 1 and most_parts > 1
            and tasks(1, fvecs_per_task) < MIN_TASKS):
        fvecs_per_task = min(fvecs_per_task, 2)
        fvecs_per_task = _equal_chunk(fvecs, fvecs_per_task)
        chunks = tasks(1, fvecs_per_task)
        if chunks < LANES_PART_TASKS or chunks % 2:
            parts = min(most_parts, -(-LANES_PART_TASKS // chunks))
            if parts < most_parts and chunks * parts % 2:
                parts += 1
    else:
        while fvecs_per_task > 1 and tasks(images, fvecs_per_task) < MIN_TASKS:
            fvecs_per_task = -(-fvecs_per_task // 2)

    b_offset = _tap_offsets(channels, phases, slab_rows, pitch, kh_start, tap_phase, tap_shift)
    image_slab, _ = _stacked_images(images, channels * slab_channel + wrap, out_h, out_w,
                                    pitch, itemsize)
    taps_read = _taps_read(out_h, out_w, height, width, kernel, stride, dilation, pads,
                           padding_mode)
    last_images = n_images % images
    # Interleaving a task's images tightens the tiles' taps but spreads each tile's reads
    # over their slabs: the cheapest of none, 4 and all by the cost model.
    best = None
    for interleave in sorted({1, min(4, images), images}):
        tap_rows, tile_rows, pixel_src, kept = _lane_tiles(
            [images] + ([last_images] if last_images else []), interleave, taps_read,
            tile_pixels, image_slab, out_h, out_w, pitch, b_offset, channels,
            fvecs_per_task * lanes)
        work = kept * (1 + LANES_INTERLEAVE_COST * np.log2(interleave))
        if best is None or work < best[0]:
            best = work, interleave, tap_rows, tile_rows, pixel_src
    work, interleave, tap_rows, tile_rows, pixel_src = best
    whole_tiles = int(np.searchsorted(np.cumsum(tile_rows[:, 2]), images * pixels)) + 1
    part_bounds = _part_bounds(tile_rows[:whole_tiles, 2], parts)
    parts = part_bounds.shape[0] - 1
    # A task per block of images and chunk of filters: under MIN_TASKS of them, two threads
    # may wait on one (one 11x11 map under 7x7, 157 -> 48 filters, in 3 tasks: 1.10 of the
    # GEMM kernel's time; 22x22 under 7x7 with stride 2, 209 -> 16 filters, in one: 1.30).
    # With more, the model weighed it worse than measured (9 tasks: 0.85-1.08).
    n_tasks = tasks(images, fvecs_per_task) * parts
    if n_tasks < MIN_TASKS:
        work *= -(-n_tasks // 2) / (n_tasks / 2)
    if fvecs > 1 and pixels > LANES_MAX_PIXELS:  # the odd vector of each chunk of filters
        sizes = [min(fvecs_per_task, fvecs - f) for f in range(0, fvecs, fvecs_per_task)]
        one_vector = sum(size % 2 for size in sizes)
        work *= (fvecs - one_vector + LANES_ONE_VECTOR_COST * one_vector) / fvecs
    packed = -(-fvecs // fvecs_per_task) * fvecs_per_task * lanes * in_channels * taps
    shared = n_images > images and packed * itemsize <= LANES_SHARED_BYTES
    # after the images' slabs, a task's packed weights unless they are packed once (shared)
    slab_size = images * image_slab + (0 if shared else channels * taps * fvecs_per_task * lanes)
    stage = images * pixels * fvecs_per_task * lanes
    _share(row_src, col_src, col_inner, tap_rows, tile_rows, pixel_src, part_bounds)
    return FilterLanePlan(row_src, col_src, col_inner, tap_rows, tile_rows, pixel_src,
                          last_images, interleave, work, out_h, channels, images, image_slab,
                          fvecs_per_task, slab_size, slab_size + stage, wrap, shared,
                          part_bounds)


def _part_bounds(tile_pixels, parts):
    """FilterLanePlan.part_bounds: ``parts`` runs of whole tiles of about equal pixels
    (fewer where tiles are too large to split so), for a block's tiles of ``tile_pixels``
    each: each cut at the tile boundary nearest its share."""
    bounds = np.concatenate([[0], np.cumsum(tile_pixels)])  # pixels before each tile
    shares = np.arange(1, parts) * bounds[-1] / parts
    cuts = np.abs(bounds[None, :] - shares[:, None]).argmin(axis=1)
    first_tiles = np.unique(np.concatenate([[0], cuts, [bounds.size - 1]]))
    starts = bounds[first_tiles]
    return np.ascontiguousarray(np.stack([first_tiles, starts], axis=1), dtype=np.intp)


class ChannelsLastPlan(NamedTuple):
    row_src: np.ndarray        # (row bands, slab rows) input row of each slab row, -1 = zero
    col_src: np.ndarray        # (1, slab width) input column of each slab column, -1 = zero
    col_inner: np.ndarray      # (1, 3) [first, end) of the linear interior, offset
    tap_rows: np.ndarray       # (Cg*KH*KW, 2) reduction row (c, kh, kw): slab offset from a
                               # pixel's, offset of its row of packed weights
    pixel_offsets: np.ndarray  # (rows_per_task * OW,) slab offset of band pixel (i, ow)
    rows_per_task: int
    slab_size: int             # slab rows x C x slab width
    scratch_per_thread: int    # the slab, then a staged tile (tile pixels x tile vectors)


# A task's band: at most CHANNELS_LAST_TASK_PIXELS output pixels and a slab of at most
# SLAB_BYTES, and MIN_TASKS tasks where the batch and rows allow.
CHANNELS_LAST_TASK_PIXELS = 1024


@functools.lru_cache(maxsize=256)
def channels_last_plan(*, n_images, channels, in_per_group, per_group, height, width, out_h,
                       out_w, kernel, stride, dilation, pads, padding_mode, lanes,
                       tile_pixels, tile_vectors, itemsize):
    """The layout of ``_conv_channels_last.pxi`` for one problem shape (NHWC): a task owns a
    band of ``rows_per_task`` output rows of one image. It copies the band's padded input
    rows into its slab, each row's channels apart, (slab rows, C, slab width), so that
    consecutive pixels of a row read consecutive columns, then computes each
    group's filters, vectors of them, for tiles of up to ``tile_pixels`` pixels: pixel p
    reads reduction row r at ``pixel_offsets[p] + tap_rows[r, 0]`` (plus the group's first
    channel's row), its weights at ``tap_rows[r, 1]`` of the group's packed panel, (Cg*KH*KW,
    whole vectors of filters). The reduction rows keep the order (c, kh, kw) of the NCHW
    kernels, so both layouts give the same bits."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, _, left, right = pads
    # the padded columns the band reads, one phase (the pixels' offsets carry the stride)
    slab_w = (out_w - 1) * sw + (kw - 1) * dw + 1
    _, _, col_src, col_inner, _, _, _ = _column_maps(width, slab_w, 1, 1, 1, left, right,
                                                     padding_mode)
    row_classes = _row_classes(kh, sh, dh)
    row_pitch = channels * slab_w
    rows = max(1, min(out_h, CHANNELS_LAST_TASK_PIXELS // out_w))
    while rows > 1 and _slab_rows(row_classes, rows) * row_pitch * itemsize > SLAB_BYTES:
        rows -= 1
    while rows > 1 and n_images * -(-out_h // rows) < MIN_TASKS:
        rows = -(-rows // 2)
    rows = _equal_chunk(out_h, rows)
    row_src, kh_start = _band_rows(rows, out_h, height, top, sh, padding_mode, row_classes)
    weights_ld = -(-per_group // lanes) * lanes
    c = np.arange(in_per_group)[:, None, None]
    slab_offset = (kh_start[None, :, None] * row_pitch + c * slab_w
                   + np.arange(kw)[None, None, :] * dw)
    depth = in_per_group * kh * kw
    tap_rows = np.ascontiguousarray(
        np.stack([slab_offset.ravel(), np.arange(depth) * weights_ld], axis=1), dtype=np.intp)
    i, ow = np.meshgrid(np.arange(rows), np.arange(out_w), indexing="ij")
    pixel_offsets = np.ascontiguousarray((i * row_pitch + ow * sw).ravel(),
                                         dtype=np.intp)
    slab_size = row_src.shape[1] * row_pitch
    _share(row_src, col_src, col_inner, tap_rows, pixel_offsets)
    return ChannelsLastPlan(row_src, col_src, col_inner, tap_rows, pixel_offsets, rows,
                            slab_size, slab_size + tile_pixels * tile_vectors * lanes)


def merged_row_width(pixels, out_w, tile_pixels):
    """The row width under which the channels-last kernel takes a map of ``pixels`` pixels in
    rows of ``out_w`` that may be regrouped (NHWC 1x1, stride 1, no padding): ``out_w`` if its
    rows already hold two tiles of ``tile_pixels``, else the divisor of ``pixels`` of at least
    two tiles that leaves the smallest share of a row past its last whole tile (the fewest
    pixels per row among equals, for more rows to split among tasks; 14x14: 49)."""
    if out_w >= 2 * tile_pixels:
        return out_w
    widths = [w for w in range(2 * tile_pixels, min(pixels, 4096) + 1) if pixels % w == 0]
    if not widths:
        return out_w
    return min(widths, key=lambda w: (w % (tile_pixels // 2) / w, w))


def use_channels_last(*, rows, out_w, per_group, kernel_w, stride_w, dilation_w, lanes,
                      tile_pixels, half_tail=False):
    """Whether an NHWC conv2d (not on the filter-lane or depthwise kernels) runs on the
    channels-last kernel rather than the GEMM kernel. Measured on Zen 4, 2 threads, time
    over the GEMM kernel's NHWC time where it is taken: 0.62-1.05 on 15 suite and 18
    random layers (3 -> 64 channels at 224x224: 0.69). It needs

    - output rows of at least two of its widest tiles (``tile_pixels``): it computes runs
      of tiles along a row; rows of 14 and 7 pixels took 1.02-2.5 (one 1x1 layer 0.79);
    - each group's filters in whole vectors (a last half vector with ``half_tail``): a
      partial vector's tiles go through a staged copy one by one (20 filters per group:
      1.04), and 8 filters leave half the lanes empty (1.09-1.14);
    - taps that reach every input column: a 1x1 layer with stride 2 copies columns it
      never reads (1.18);
    - MIN_TASKS output ``rows`` over the batch at least, its tasks being bands of rows: one
      7x7 map of 1x1 320 -> 1280 channels taken as one row of 49 pixels took 1.9x the time
      (one task), 14x14 160 -> 960 as 4 rows of 49, 1.11x."""
    whole = per_group % lanes == 0 or (half_tail and per_group % lanes == lanes // 2)
    return (out_w >= 2 * tile_pixels and per_group >= lanes and whole
            and stride_w <= (kernel_w - 1) * dilation_w + 1 and rows >= MIN_TASKS)


def _taps_read(out_h, out_w, height, width, kernel, stride, dilation, pads, padding_mode):
    """(OH * OW, KH * KW) bool: whether tap (kh, kw) of each output pixel reads the input,
    not zero padding (every tap does in the other padding modes)."""
    (kh, kw), (sh, sw), (dh, dw), (top, _, left, _) = kernel, stride, dilation, pads
    if padding_mode != "zeros":
        return np.ones((out_h * out_w, kh * kw), dtype=bool)
    rows = np.arange(out_h)[:, None] * sh - top + np.arange(kh)[None, :] * dh
    cols = np.arange(out_w)[:, None] * sw - left + np.arange(kw)[None, :] * dw
    row_ok = (rows >= 0) & (rows < height)  # (OH, KH)
    col_ok = (cols >= 0) & (cols < width)   # (OW, KW)
    reads = row_ok[:, None, :, None] & col_ok[None, :, None, :]  # (OH, OW, KH, KW)
    return reads.reshape(out_h * out_w, kh * kw)


def _lane_tiles(image_counts, interleave, taps_read, tile_pixels, image_slab, out_h, out_w,
                pitch, b_offset, channels, panel_ld):
    """``(tap_rows, tile_rows, pixel_src, kept)`` of FilterLanePlan (the list of every tap
    first), for tasks of each of ``image_counts`` images in turn (a whole block, then a last
    smaller one).

    A task takes its images in groups of ``interleave`` (the last group smaller) and each
    group's pixels position by position, each position in all the group's images, in equal
    tiles of at most tile_pixels (16 -> 8 + 8, not 12 + 4); one image's rows of at least
    LANES_ROW_TILE_WIDTH pixels in equal tiles of each row. A tile reduces over the taps
    that at least one of its pixels reads from the input (taps_read): the others read zero
    padding for all of them, and skipping a product with zero leaves the sum as it is.
    Taking positions across images keeps a tile's pixels few positions apart, so that their
    taps differ little. Tiles with the same taps share one list. kept: the share of the
    taps the first task's tiles compute."""
    taps = taps_read.shape[1]
    # the list of every tap first: tiles take it where a weight is not finite (FilterLanePlan)
    every = np.arange(channels * taps)
    lists = {np.arange(taps).tobytes(): 0}
    tap_rows, tile_rows, pixel_src = [np.stack([b_offset, every * panel_ld], axis=1)], [], []
    start, computed = every.size, 0
    positions = np.arange(out_h * out_w)
    position_src = (positions // out_w) * pitch + positions % out_w
    for images in image_counts:
        for first in range(0, images, interleave):
            group = min(interleave, images - first)
            group_src = (np.arange(first, first + group)[None, :] * image_slab
                         + position_src[:, None])
            pixel_src.append(group_src.ravel())
            group_pixels = group_src.size
            if group == 1 and out_w >= LANES_ROW_TILE_WIDTH and row_tiles(tile_pixels):
                bounds = [(q0 + p0, q0 + p1) for q0 in range(0, group_pixels, out_w)
                          for p0, p1 in _equal_runs(out_w, tile_pixels)]
            else:
                bounds = _equal_runs(group_pixels, tile_pixels)
            for p0, p1 in bounds:
                kept = np.flatnonzero(taps_read[p0 // group:(p1 - 1) // group + 1].any(axis=0))
                key = kept.tobytes()
                if key not in lists:
                    rows = (np.arange(channels)[:, None] * taps + kept[None, :]).ravel()
                    lists[key] = start
                    tap_rows.append(np.stack([b_offset[rows], rows * panel_ld], axis=1))
                    start += rows.size
                tile_rows.append((lists[key], kept.size, p1 - p0))
                if images == image_counts[0]:
                    computed += kept.size * (p1 - p0)
    return (np.ascontiguousarray(np.concatenate(tap_rows), dtype=np.intp),
            np.array(tile_rows, dtype=np.intp).reshape(-1, 3),
            np.ascontiguousarray(np.concatenate(pixel_src), dtype=np.intp),
            computed / (taps * image_counts[0] * out_h * out_w))


def _equal_chunk(length, most):
    """The size of each of the fewest chunks of at most ``most`` that cover ``length`` in
    equal sizes but the last (16 by 12: 8, not 12)."""
    return -(-length // -(-length // most))


def _equal_runs(length, most):
    """``[(start, end)]``: range(length) in the fewest runs of at most ``most``, of equal
    lengths but the last (16 by 12: 8 + 8, not 12 + 4)."""
    size = _equal_chunk(length, most)
    return [(p0, min(p0 + size, length)) for p0 in range(0, length, size)]


def _stacked_images(images, image_elements, out_h, out_w, pitch, itemsize):
    """``(image_slab, pixel_src)`` of tasks that own the whole maps of ``images`` images: each
    image's slab of ``image_elements`` starts on a cache line, image_slab elements apart, and
    pixel (image, oh, ow) reads it at pixel_src = image * image_slab + oh * pitch + ow."""
    line = 64 // itemsize
    image_slab = -(-image_elements // line) * line
    image, oh, ow = np.meshgrid(np.arange(images), np.arange(out_h), np.arange(out_w),
                                indexing="ij")
    pixel_src = np.ascontiguousarray((image * image_slab + oh * pitch + ow).ravel(),
                                     dtype=np.intp)
    return image_slab, pixel_src


def _band_rows(rows, out_h, height, top, sh, padding_mode, row_classes):
    """``(row_src, kh_start)``: the input row of each slab row of each band of ``rows``
    output rows (-1: zero), and the slab row of each tap kh for the band's first output row.

    The slab rows are in blocks (``row_classes``, see _row_classes): block k holds padded rows
    (band + t) * sh + bases[k] for t < rows + extra_rows[k], and tap kh of output row r
    reads its block at row r + its step."""
    bases, tap_block, tap_step, extra_rows = row_classes
    row_blocks = -(-out_h // rows)
    bands = np.arange(row_blocks)[:, None] * rows
    block_start = np.cumsum([0] + [rows + extra for extra in extra_rows])
    slab_rows = int(block_start[-1])
    kh_start = block_start[tap_block] + tap_step
    slab_row_index = np.arange(slab_rows)
    block = np.searchsorted(block_start, slab_row_index, side="right") - 1
    t = slab_row_index - block_start[block]
    padded_rows = (bands + t[None, :]) * sh + bases[block][None, :]
    # A slab row is copied only if a valid output row of the band reads it (rows past the
    # output need not be valid input positions, e.g. for reflect).
    usable = np.zeros((row_blocks, slab_rows), dtype=bool)
    for i in range(len(tap_block)):
        reader = t - tap_step[i]  # the band's output row that reads slab row t with tap i
        reads = (block == tap_block[i]) & (reader >= 0) & (reader < rows)
        usable |= reads[None, :] & (bands + reader[None, :] < out_h)
    mapped = source_index(padded_rows - top, height, padding_mode)
    return np.ascontiguousarray(np.where(usable, mapped, -1), dtype=np.intp), kh_start


def _tap_offsets(channels, phases, slab_rows, pitch, kh_start, tap_phase, tap_shift):
    """Slab offset of each reduction row (c, kh, kw) of a chunk of ``channels`` channels,
    for a band's first output pixel."""
    c_local = np.arange(channels)[:, None, None]
    k_h = kh_start[None, :, None]
    b_offset = (((c_local * phases + tap_phase[None, None, :]) * slab_rows + k_h) * pitch
                + tap_shift[None, None, :])
    return np.ascontiguousarray(b_offset.ravel(), dtype=np.intp)


def _row_classes(kh, sh, dh):
    """The slab's blocks of rows: ``(bases, tap_block, tap_step, extra_rows)``; tap i of
    output row r reads padded row ``r * sh + bases[tap_block[i]] + tap_step[i] * sh``, found
    in block ``tap_block[i]`` at row r + ``tap_step[i]``; block k holds extra_rows[k] rows
    beyond one per output row of a band.

    The kernel's rows are grouped by the residue of their offset modulo the row stride: the
    taps of one residue read one sequence of rows, each a step further, so one block per
    residue copies every input row once (stride 1: one block, the band's padded rows; 7x7
    with stride 2: 2 slab rows per output row plus 5, not 7 per output row; 5x5 and 7x7
    layers with stride 2 and 32-64 channels ran 6-11% faster so; 5x5 with stride 3 and 7x7
    with stride 4, 5-22%). Where at most 1.5 taps share a residue on average (3x3 with
    stride 2), each tap keeps its own block: shared blocks saved fill there but measured no
    faster, and led the split model to a slower split."""
    offsets = np.arange(kh) * dh
    residues = np.unique(offsets % sh)
    if sh > 1 and 3 * len(residues) >= 2 * kh:
        bases, tap_block, tap_step = offsets, np.arange(kh), np.zeros(kh, dtype=np.intp)
    else:
        bases, tap_block = residues, np.searchsorted(residues, offsets % sh)
        tap_step = offsets // sh
    extra_rows = [int(tap_step[tap_block == k].max()) for k in range(len(bases))]
    return bases, tap_block, tap_step, extra_rows


def _slab_rows(row_classes, rows):
    """Slab rows of a band of ``rows`` output rows (see _row_classes)."""
    bases, _, _, extra_rows = row_classes
    return len(bases) * rows + sum(extra_rows)


def _column_maps(width, out_w, kw, sw, dw, left, right, padding_mode, wrap_right=False,
                 per_tap=False):
    """The slab's columns: ``(phases, pitch, col_src, col_inner, tap_phase, tap_shift, wrap)``.

    Each input row is copied once per stride phase P; per phase, ``col_src`` holds the input
    column of each slab column (-1 = zero) and ``col_inner`` the linear interior
    ``[first, end)`` with its offset. Tap kw reads slab column ow + ``tap_shift[kw]`` of phase
    ``tap_phase[kw]``, so the pitch is out_w plus the largest shift (junk columns).

    ``per_tap``: one phase per tap instead, tap kw's holding padded column ow * sw + kw * dw
    at column ow: a pitch of out_w (no junk), kw copies of each input row.

    ``wrap_right`` (zero padding, stride 1, no more padding right than left): the slab rows
    hold the left padding and the input only, and a tap past a row's end reads the next
    row's left padding, zeros like the right padding it stands for: fewer junk columns
    (3x3 with padding 1: one instead of two). The last row of a chunk then needs ``wrap``
    zeros after it."""
    if wrap_right and sw == 1 and padding_mode == "zeros" and right <= left and kw > 1:
        pitch = max(out_w, left + width)
        idx = np.arange(pitch, dtype=np.intp)
        col_src = source_index(idx - left, width, padding_mode)[None, :]
        first = min(left, pitch)
        col_inner = np.array([[first, max(first, min(left + width, pitch)), -left]],
                             dtype=np.intp)
        return (1, pitch, col_src, col_inner, np.zeros(kw, dtype=np.intp),
                np.arange(kw) * dw, right)
    if per_tap:
        starts = [k * dw for k in range(kw)]
        pitch = out_w
    else:
        starts = sorted({(k * dw) % sw for k in range(kw)})
        pitch = out_w + ((kw - 1) * dw) // sw
    padded_w = left + width + right
    idx = np.arange(pitch, dtype=np.intp)
    col_src = np.empty((len(starts), pitch), dtype=np.intp)
    col_inner = np.empty((len(starts), 3), dtype=np.intp)
    for i, p in enumerate(starts):
        padded = idx * sw + p
        mapped = source_index(padded - left, width, padding_mode)
        col_src[i] = np.where(padded < padded_w, mapped, -1)  # past the padding: junk only
        offset = p - left
        first = min(max(-(offset // sw), 0), pitch)      # smallest q with q*sw + offset >= 0
        end = min(max((width - 1 - offset) // sw + 1, first), pitch)
        col_inner[i] = first, end, offset
    if per_tap:
        return kw, pitch, col_src, col_inner, np.arange(kw), np.zeros(kw, dtype=np.intp), 0
    taps = np.arange(kw) * dw
    tap_phase = np.searchsorted(starts, taps % sw)
    return len(starts), pitch, col_src, col_inner, tap_phase, taps // sw, 0


def _share(*tables):
    """Make a cached plan's tables read-only: every call through the cache shares them."""
    for table in tables:
        table.flags.writeable = False


class DepthwisePlan(NamedTuple):
    row_src: np.ndarray      # (row bands, slab rows) input row of each slab row, -1 = zero
    col_src: np.ndarray      # (P, pitch) as ConvPlan's
    col_inner: np.ndarray    # (P, 3) as ConvPlan's
    tap_offset: np.ndarray   # (KH*KW,) slab offset of tap (kh, kw) from its output row's base
    rows_per_task: int
    groups_per_task: int
    stage_row: int           # staged output row: out_w rounded up to whole vectors
    slab_size: int
    scratch_per_thread: int  # slab + staged rows of the task's filters (+ blocked: vectors)
    # Channel-blocked (blocked > 0, see _depthwise_blocked_plan): a task's `blocked` channels
    # share each vector, one lane each; 0: each channel's rows fill the vectors (planar).
    blocked: int = 0


# Bytes of slab per depthwise task at most: a band of a few planes stays in L2. The
# channel-blocked slab holds a vector per pixel, so wide rows need more to hold a band of
# several rows (each row holds the halo rows of the next: 16 channels of 1024 or 512 wide
# NHWC maps ran 0.61-0.87 of the time at 512 KiB than at 128 KiB, 2 threads, Zen 4).
DEPTHWISE_SLAB_BYTES = 128 * 1024
DEPTHWISE_BLOCKED_SLAB_BYTES = 512 * 1024
# Groups per depthwise task in NHWC: enough adjacent channels to copy pixels, not channels.
DEPTHWISE_NHWC_GROUPS = 16
# Output pixels per depthwise NCHW task at least (in whole planes): a 7x7 plane alone is
# less work than starting its task and filling its slab's rows.
DEPTHWISE_TASK_PIXELS = 2048
# 1x1 filters read in place (DEPTHWISE_POINTWISE_PIXELS below) stream their channels: longer
# tasks measured 0.53-0.75 of the time of 2048 pixels (Zen 4, 2 threads, 5 layers of 14x14 to
# 56x56 planes; 1.14 on 10x10 planes, 16 images of 96 channels); 65536 left too few tasks to
# balance (up to 1.6x).
DEPTHWISE_POINTWISE_TASK_PIXELS = 16384
# Output rows at most this wide take the channel-blocked depthwise kernel (every row in NHWC)
# when each channel has one filter, and rows half as wide when it has more: a planar vector
# of a short row is mostly junk lanes (a 7-wide row fills 7 of 16), a blocked one is full.
# Measured on Zen 4 (AVX-512), blocked time / planar time, 2 threads: one filter per
# channel, NCHW 0.32-0.43 at 7 wide, 0.68-0.84 at 14, 0.78-0.90 at 28, 0.93-2.08 at 56-224;
# NHWC 0.33-0.66 at 7-14, 0.51-0.57 at 28, 0.86-0.96 at 56-112. Two filters per channel:
# 0.41-0.91 at 7-14, 1.08-1.25 at 28-56 (their lanes leave the stage one element at a time).
DEPTHWISE_BLOCKED_WIDTH = 32
# Except for 1x1 filters at stride 1 without padding on planes of at least this many
# pixels, read in place. Planar time / blocked time, Zen 4, 2 threads: one filter per
# channel 0.31-0.38 on 10x10 and 14x14, 0.71-0.82 on 28x28, 1.8-2.3 on 5x5 and 7x7; two
# filters per channel 0.40 on 14x14, 1.84 on 7x7.
DEPTHWISE_POINTWISE_PIXELS = 64
# NCHW rows up to this wide that end in a partial vector also take the channel-blocked kernel
# under filters of at least DEPTHWISE_BLOCKED_TAPS taps (one filter per channel): there the
# planar kernel's last vector wastes FMA slots on every tap, and the transposes in and out
# are shared by many taps. Blocked time / planar time, Zen 5, 2 threads, float32: 5x5 and
# 7x7 on 36- to 100-wide rows ending in a partial vector 0.72-0.94 (18 layers; float64
# 0.79-1.03 on 5); on rows of whole vectors mixed, 0.85-1.22 (48, 64, 80, 112 wide); 3x3
# 0.84-1.17 whatever the width.
DEPTHWISE_BLOCKED_TAPS = 25
DEPTHWISE_BLOCKED_TAIL_WIDTH = 112


@functools.lru_cache(maxsize=256)
def depthwise_plan(*, n_images, groups, multiplier, height, width, out_h, out_w, kernel, stride,
                   dilation, pads, padding_mode, lanes, itemsize, channels_last,
                   row_multiple=1):
    """The layout of ``_conv_depthwise.pxi`` for one problem shape (one input channel per
    group). Its slab holds each padded input row of a band once, also for a row stride > 1:
    output row r of the band reads tap kh from slab row r * stride + kh * dilation."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, _, left, right = pads

    def slab_rows_for(rows):
        return (rows - 1) * sh + (kh - 1) * dh + 1

    # A 1x1 filter at stride 1 without padding scales its channel: in NCHW the planar kernel
    # reads x in place (_depthwise_pointwise_band), no transposes, on planes of at least
    # DEPTHWISE_POINTWISE_PIXELS.
    pointwise = (kh == kw == 1 and sh == sw == 1 and not any(pads)
                 and out_h * out_w >= DEPTHWISE_POINTWISE_PIXELS)
    if channels_last:
        blocked = multiplier == 1 or out_w <= DEPTHWISE_BLOCKED_WIDTH // 2
    else:
        blocked = not pointwise and (
            out_w <= DEPTHWISE_BLOCKED_WIDTH // (2 if multiplier > 1 else 1)
            or (multiplier == 1 and kh * kw >= DEPTHWISE_BLOCKED_TAPS
                and out_w <= DEPTHWISE_BLOCKED_TAIL_WIDTH and out_w % lanes))
    if blocked and row_multiple == 1 and lanes > 1:
        return _depthwise_blocked_plan(
            n_images=n_images, groups=groups, multiplier=multiplier, height=height,
            width=width, out_h=out_h, out_w=out_w, kernel=kernel, stride=stride,
            dilation=dilation, pads=pads, padding_mode=padding_mode, lanes=lanes,
            itemsize=itemsize, channels_last=channels_last, slab_rows_for=slab_rows_for)
    phases, pitch, col_src, col_inner, tap_phase, tap_shift, _ = _column_maps(
        width, out_w, kw, sw, dw, left, right, padding_mode)

    if channels_last:
        groups_per_task = min(groups, DEPTHWISE_NHWC_GROUPS)
    else:
        # Small planes: several channels per task, so that dispatch and the fill's per-row
        # setup are shared, but still MIN_TASKS tasks where the batch allows.
        task_pixels = DEPTHWISE_POINTWISE_TASK_PIXELS if pointwise else DEPTHWISE_TASK_PIXELS
        groups_per_task = max(1, min(task_pixels // (out_h * out_w * multiplier),
                                     groups // -(-MIN_TASKS // n_images)))
    rows = out_h
    while (rows > row_multiple and groups_per_task * phases * slab_rows_for(rows) * pitch
           * itemsize > DEPTHWISE_SLAB_BYTES):
        rows = -(-rows // 2)
    chunks = n_images * -(-groups // groups_per_task)
    if chunks * -(-out_h // rows) < MIN_TASKS:  # too few tasks to balance the threads
        rows = min(rows, -(-out_h // -(-MIN_TASKS // chunks)))
    rows = -(-rows // row_multiple) * row_multiple
    row_blocks = -(-out_h // rows)

    slab_rows = slab_rows_for(rows)
    padded_rows = np.arange(row_blocks)[:, None] * rows * sh + np.arange(slab_rows)[None, :]
    usable = padded_rows <= (out_h - 1) * sh + (kh - 1) * dh
    mapped = source_index(padded_rows - top, height, padding_mode)
    row_src = np.ascontiguousarray(np.where(usable, mapped, -1), dtype=np.intp)

    k_h = np.arange(kh)[:, None]
    tap_offset = (tap_phase[None, :] * slab_rows + k_h * dh) * pitch + tap_shift[None, :]
    tap_offset = np.ascontiguousarray(tap_offset.ravel(), dtype=np.intp)
    stage_row = -(-out_w // lanes) * lanes
    # The last vector of a row reads up to stage_row - out_w past the row: slack at the end.
    slab_size = groups_per_task * phases * slab_rows * pitch + stage_row
    _share(row_src, col_src, col_inner, tap_offset)
    return DepthwisePlan(row_src, col_src, col_inner, tap_offset, rows, groups_per_task,
                         stage_row, slab_size,
                         slab_size + groups_per_task * multiplier * rows * stage_row)


def _depthwise_blocked_plan(*, n_images, groups, multiplier, height, width, out_h, out_w,
                            kernel, stride, dilation, pads, padding_mode, lanes, itemsize,
                            channels_last, slab_rows_for):
    """The channel-blocked layout of ``_conv_depthwise.pxi``: a task owns ``lanes`` adjacent
    channels (one vector) and a band of output rows. Its slab holds the band's padded input
    rows as (slab row, padded column, lane); tap (kh, kw) of output pixel (r, ow) is the
    vector at slab row r * stride + kh * dilation, column ow * stride + kw * dilation.
    col_src maps each padded column to an input column (-1: zero), col_inner holds its
    linear interior as in ConvPlan."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, _, left, _ = pads
    padded_cols = (out_w - 1) * sw + (kw - 1) * dw + 1
    rows = out_h
    while (rows > 1 and slab_rows_for(rows) * padded_cols * lanes * itemsize
           > DEPTHWISE_BLOCKED_SLAB_BYTES):
        rows = -(-rows // 2)
    chunks = n_images * -(-groups // lanes)
    if chunks * -(-out_h // rows) < MIN_TASKS:  # too few tasks to balance the threads
        rows = min(rows, -(-out_h // -(-MIN_TASKS // chunks)))
    row_blocks = -(-out_h // rows)
    slab_rows = slab_rows_for(rows)
    padded_rows = np.arange(row_blocks)[:, None] * rows * sh + np.arange(slab_rows)[None, :]
    usable = padded_rows <= (out_h - 1) * sh + (kh - 1) * dh
    row_src = np.ascontiguousarray(
        np.where(usable, source_index(padded_rows - top, height, padding_mode), -1),
        dtype=np.intp)
    col_src = np.ascontiguousarray(
        source_index(np.arange(padded_cols) - left, width, padding_mode)[None, :], dtype=np.intp)
    first = min(left, padded_cols)  # the linear interior: input column q - left
    col_inner = np.array([[first, max(first, min(left + width, padded_cols)), -left]],
                         dtype=np.intp)
    tap_offset = ((np.arange(kh)[:, None] * dh * padded_cols + np.arange(kw)[None, :] * dw)
                  * lanes)
    tap_offset = np.ascontiguousarray(tap_offset.ravel(), dtype=np.intp)
    slab_size = slab_rows * padded_cols * lanes
    # after the slab: the staged pixels of the task's filters, and for NCHW the band's input
    # pixels (at most a pixel per slab row and input column) as vectors
    stage = multiplier * rows * out_w * lanes
    vectors = 0 if channels_last else slab_rows * width * lanes
    _share(row_src, col_src, col_inner, tap_offset)
    return DepthwisePlan(row_src, col_src, col_inner, tap_offset, rows, lanes, out_w,
                         slab_size, slab_size + stage + vectors, blocked=lanes)


# The task split's cost model, in units of one multiply-add of one vector lane: copying one
# element into the slab (fill) and starting one task (dispatch, copy-out setup). Rough, measured
# from perf profiles on Zen 3/4; they only need to rank splits. The fill took 0.4-0.8 ns per
# element in profiles of 7 layers at 1 thread (short rows and stride 2 dearest), ~16 units;
# at 8, a 200 -> 24 channel stride-2 layer split its 6 blocks of filters in two and filled
# every input row twice (1.4x slower than with all filters per task).
FILL_ELEMENT_COST = 16
TASK_COST = 4000
# A micro-kernel call: fixed cost, and per weight of its panel (streamed from L2 or L3).
KERNEL_CALL_COST = 500
WEIGHT_COST = 8
# See _split_tasks.
TAIL_GAIN = 0.08
# Gathering one element of a stacked panel (see _stack_split), and the share of the
# estimated time that stacking must save to be taken.
GATHER_ELEMENT_COST = 32
STACK_GAIN = 0.05


def tile_vectors(pixels, lanes, nv):
    """The vectors of pixels in each tile of a band of ``pixels`` (``_conv.pxi``'s
    ``_tile_vectors``): ``nv`` each, but the last two share what is left when a whole tile
    would leave a lone short one (3 + 1 -> 2 + 2)."""
    rest = -(-pixels // lanes)
    tiles = []
    while rest > 0:
        v = rest if rest <= nv else rest - rest // 2 if rest < 2 * nv else nv
        tiles.append(v)
        rest -= v
    return tiles


def _two_thread_makespan(plane_tasks, planes):
    """Time for two threads taking the tasks of ``planes`` planes in order (``plane_tasks``:
    the costs of one plane's tasks), each the next task as soon as it is free (OpenMP's
    dynamic schedule); with many tasks, the usual bound."""
    if len(plane_tasks) * planes > 64:
        return sum(plane_tasks) * planes / 2 + max(plane_tasks) / 2
    loads = [0, 0]
    for cost in plane_tasks * planes:
        loads[loads[1] < loads[0]] += cost
    return max(loads)


def _split_tasks(*, out_h, out_w, pitch, nr, lanes, mr, planes, fblocks, depth,
                 fill_per_row_span, slab_rows_of, row_multiple, half_tail, given=None):
    """``(rows per task, filter blocks per task)``: the split with the least estimated time
    on two threads. A task computes its band's pixels over the pitch in tiles, for its
    filters, after filling the slab with all its band's input rows: splitting the filters
    repeats that fill, splitting the rows repeats the halo rows. Among splits within 3% of
    the best, one with MIN_TASKS tasks if any (dynamic balance absorbs a disturbed thread;
    LARGE_MIN_TASKS for large layers), then the cheapest.

    Two estimates of the arithmetic: whole tiles, or a band's last tile by the vectors it
    computes (the kernel does that). The second is truer but the model is rough, and close
    splits measure alike within noise: the split it prefers is taken only when it saves
    TAIL_GAIN of the first's time (small maps, e.g. 7x7: a quarter).

    ``given``: that split (rows per task, filter blocks per task) and its estimate instead."""

    def band_cost(band_rows, tails):
        """Arithmetic of a band for one block of filters in whole tiles; with tails, as the
        kernel computes it (_run_cost)."""
        if not tails:  # the first estimate: whole tiles, arithmetic only
            return -(-band_rows * pitch // nr) * nr * mr * depth
        return _run_cost(band_rows * pitch, lanes, nr, mr, depth, half_tail)

    def task_cost(band_rows, blocks, tails):
        return (TASK_COST + FILL_ELEMENT_COST * fill_per_row_span * slab_rows_of(band_rows)
                + band_cost(band_rows, tails) * blocks)

    def estimate(rows, per_task, tails):
        bands = -(-out_h // rows)
        last_rows = out_h - (bands - 1) * rows
        fchunks = -(-fblocks // per_task)
        chunk_blocks = [per_task] * (fchunks - 1) + [fblocks - (fchunks - 1) * per_task]
        plane_tasks = []
        for blocks in chunk_blocks:
            plane_tasks += [task_cost(rows, blocks, tails)] * (bands - 1)
            plane_tasks.append(task_cost(last_rows, blocks, tails))
        return _two_thread_makespan(plane_tasks, planes), len(plane_tasks) * planes

    if given is not None:
        return given + (estimate(*given, True)[0],)
    macs = planes * out_h * out_w * fblocks * mr * depth
    large = macs >= LARGE_SPLIT_MACS and out_h * out_w > LARGE_SPLIT_PIXELS
    min_tasks = LARGE_MIN_TASKS if large else MIN_TASKS
    splits = []
    for rows in range(row_multiple, out_h + row_multiple, row_multiple):
        if rows * pitch > MAX_TASK_PIXELS and rows > row_multiple:
            break
        bands = -(-out_h // rows)
        max_chunks = min(fblocks, -(-2 * min_tasks // (planes * bands)))  # enough tasks
        for fchunks in range(1, max_chunks + 1):
            per_task = -(-fblocks // fchunks)
            if -(-fblocks // per_task) == fchunks:  # else the same split as a smaller one
                splits.append((rows, per_task))

    def pick(tails):
        candidates = [estimate(rows, per_task, tails) + (rows, per_task)
                      for rows, per_task in splits]
        # At least two tasks per thread where the problem allows: one slowed thread (a busy
        # core) then costs a task, not half the call.
        candidates = [c for c in candidates if c[1] >= 4] or candidates
        best = min(c[0] for c in candidates)
        return max((c for c in candidates if c[0] <= best * 1.03),
                   key=lambda c: (min(c[1], min_tasks), -c[0]))[2:]

    whole, tailed = pick(False), pick(True)
    if estimate(*tailed, True)[0] < (1 - TAIL_GAIN) * estimate(*whole, True)[0]:
        return tailed + (estimate(*tailed, True)[0],)
    return whole + (estimate(*whole, True)[0],)


def _stack_split(*, n_images, pixels, lanes, nr, mr, groups, fblocks, depth, fill_per_image,
                 gather_cost, itemsize, half_tail):
    """``(images per task, filter blocks per task, estimated time)`` of the best stacked
    split (same model and units as _split_tasks).

    A band computes whole vectors of pixels over the pitch, so a small map wastes lanes on
    its junk columns and on its last partial vector (4x4 with padding 1: 24 lanes for 16
    pixels; 2x2: 8 for 4). Stacked, a task owns whole maps of several images: it fills
    each one's slab, then gathers their pixels compactly into panels (one row per reduction
    row, _conv.pxi's _gather_panels) that its tiles read like any other. The gather costs a
    copy per reduction row and pixel, which only many filters per task repay."""
    best = None
    for per_task_images in range(1, min(n_images, STACK_PIXELS // pixels) + 1):
        blocks = -(-n_images // per_task_images)
        sizes = [per_task_images, n_images - (blocks - 1) * per_task_images]
        stage_block = mr * -(-per_task_images * pixels // nr) * nr * itemsize
        min_chunks = -(-fblocks // max(1, STACK_STAGE_BYTES // stage_block))
        max_chunks = max(min_chunks, min(fblocks, -(-2 * MIN_TASKS // (blocks * groups))))
        for fchunks in range(min_chunks, max_chunks + 1):
            per_task = -(-fblocks // fchunks)
            if -(-fblocks // per_task) != fchunks:
                continue
            last_chunk = fblocks - (fchunks - 1) * per_task

            def chunk_tasks(size):
                """The tasks of a block of ``size`` images, one per chunk of filters."""
                run = _run_cost(size * pixels, lanes, nr, mr, depth, half_tail)
                fixed = (TASK_COST + FILL_ELEMENT_COST * fill_per_image * size
                         + gather_cost * depth * size * pixels)
                return [fixed + run * per_task] * (fchunks - 1) + [fixed + run * last_chunk]

            # the tasks of one group: (blocks - 1) full image blocks and a last one
            full, last = chunk_tasks(sizes[0]), chunk_tasks(sizes[1])
            if blocks > 64:  # _two_thread_makespan's bound, without listing every task
                time = ((sum(full) * (blocks - 1) + sum(last)) * groups / 2
                        + max(full + last) / 2)
            else:
                time = _two_thread_makespan(full * (blocks - 1) + last, groups)
            if best is None or time < best[2]:
                best = (per_task_images, per_task, time)
    return best


def _run_cost(pixels, lanes, nr, mr, depth, half_tail=False):
    """Arithmetic of ``pixels`` pixels in tiles (tile_vectors) for one block of filters: each
    tile by the vectors it computes (a last vector of at most half its lanes as half a
    vector with ``half_tail``), weighted by how well its mr x vectors accumulators hide the
    FMA latency (~8 chains needed), plus each kernel call's fixed cost (accumulators in and
    out, the weight panel streamed in). A run of one vector takes its blocks of filters in
    pairs (twice the chains)."""
    tiles = tile_vectors(pixels, lanes, nr // lanes)
    chains = 2 * mr if pixels <= lanes else mr
    computed = sum(v * lanes * max(1.0, 8 / (chains * v)) for v in tiles)
    if _ends_in_half(pixels, lanes, half_tail):
        computed -= lanes / 2 * max(1.0, 8 / (chains * tiles[-1]))
    return computed * mr * depth + len(tiles) * (KERNEL_CALL_COST + WEIGHT_COST * mr * depth)
