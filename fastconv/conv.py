"""2-D convolution (cross-correlation, as CNN libraries define it) over NumPy arrays.

The public functions validate and normalise their arguments, plan the call (index maps and
work split, ``_conv_plan``) into a compiled planned call (``_conv_<isa>.pyx``, chosen at
import for this CPU; see ``_conv_call.pxi``) and run it with trusted arrays. A repeated call
with plain arrays goes straight to the planned call, in C.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _conv_plan, _workspace
from . import _validation as v
from ._config import load_kernels

__all__ = ["conv2d", "correlate2d", "convolve2d", "output_size"]

_kernels = load_kernels("conv")

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ACTIVATIONS = (None, "relu")
CORRELATE_MODES = ("valid", "same", "full")
# Any larger padding, stride or dilation is a mistake; it would also overflow index maps.
_MAX_GEOMETRY = 2**31
# Filters per group at most for the depthwise kernel (one input channel per group); more
# fill the GEMM kernel's blocks of 8 filters. Measured on Zen 4, 2 threads, depthwise / GEMM
# time: 3-7 filters per channel 0.26-0.73 (AVX2: 3 0.61, 4 0.87), 8 filters 1.00-1.05.
_DEPTHWISE_MAX_MULTIPLIER = 7

class _PackedWeights:
    """Weights (and bias) with their micro-kernel packing cached per dtype.

    Build it with :func:`_prepack_weights`; ``conv2d`` accepts it in place of ``weight``.
    """

    __slots__ = ("weight", "bias", "groups", "_packed")

    def __init__(self, weight, bias, groups):
        self.weight = weight
        self.bias = bias
        self.groups = groups
        self._packed = {}

    def packed(self, dtype):
        """``_pack``'s ``(filters, packed, inplace_blocks, bias)`` in ``dtype``, made once
        per dtype."""
        if dtype not in self._packed:
            self._packed[dtype] = _pack(self.weight, self.bias, self.groups, dtype)
        return self._packed[dtype]


def _prepack_weights(weight, bias=None, groups=1):
    """Validate ``weight``/``bias``/``groups`` once and return reusable packed weights.

    The arrays are copied, so later changes to the caller's arrays do not leak in.
    """
    weight = v.as_array(weight, "weight")
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (F, C // groups, KH, KW), got shape {weight.shape}")
    groups = _check_groups(groups, weight.shape[0], "weight.shape[0] (filters)")
    arrays = [(weight, "weight")]
    if bias is not None:
        bias = _check_bias(bias, weight.shape[0])
        arrays.append((bias, "bias"))
    v.compute_dtype(*arrays)  # dtype errors now rather than at the first call
    weight = np.array(weight, copy=True)
    weight.flags.writeable = False
    if bias is not None:
        bias = np.array(bias, copy=True)
        bias.flags.writeable = False
    return _PackedWeights(weight, bias, groups)


def _pack(weight, bias, groups, dtype):
    """The GEMM kernel's weights in ``dtype``: ``(filters (G, Fg, R), packed (G, FBp, R, MR),
    inplace_blocks, bias (G, FB*MR))``. The first ``inplace_blocks`` blocks of MR filters are
    read in place from ``filters`` (a view of ``weight`` when it is contiguous in ``dtype``);
    the others (each group's last partial block, or all when the filters are short) are
    packed as the micro-kernel reads them (``_kernels.pack_filters``). A call packs them
    itself; layers keep them (``_PackedWeights``)."""
    n_filters, in_per_group, kh, kw = weight.shape
    per_group = n_filters // groups
    depth = in_per_group * kh * kw
    filters = v.as_contiguous_kernel_input(weight, dtype).reshape(groups, per_group, depth)
    if bias is not None:
        bias = v.as_contiguous_kernel_input(bias, dtype)
    inplace_blocks = _conv_plan.inplace_blocks(per_group, depth, _kernels.MR)
    packed, packed_bias = _kernels.pack_filters(filters.reshape(n_filters, depth), bias, groups,
                                                inplace_blocks)
    return filters, packed, inplace_blocks, packed_bias


def _check_groups(groups, n_filters, filters_name):
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups must be an int >= 1, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if n_filters % groups:
        raise ValueError(f"{filters_name} = {n_filters} is not divisible by groups = {groups}")
    return int(groups)


def _check_bias(bias, n_filters):
    bias = v.as_array(bias, "bias")
    if bias.shape != (n_filters,):
        raise ValueError(f"bias must have shape ({n_filters},) (one value per filter), "
                         f"got shape {bias.shape}")
    return bias


def _resolve_padding(padding, in_size, extent, stride):
    """Padding as ``(top, bottom, left, right)`` from every accepted form."""
    if isinstance(padding, str):
        padding = v.check_choice(padding, "padding", ("valid", "same"))
        if padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for size, ext, step in zip(in_size, extent, stride):
            total = max((-(-size // step) - 1) * step + ext - size, 0)
            pads += [total // 2, total - total // 2]  # odd pixel at the bottom/right
        return tuple(pads)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        values = tuple(padding)
    elif isinstance(padding, (tuple, list)) and len(padding) != 2:
        raise ValueError("padding must be an int, (ph, pw), (top, bottom, left, right), "
                         f"'valid' or 'same'; got {len(padding)} values: {tuple(padding)!r}")
    else:
        ph, pw = v.int_pair(padding, "padding", 0)
        values = (ph, ph, pw, pw)
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"padding values must be ints, got {padding!r}")
        if value < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        if value > _MAX_GEOMETRY:
            raise ValueError(f"padding {padding!r} is absurdly large (> 2**31)")
    return tuple(int(value) for value in values)


def _output_geometry(height, width, kernel, stride, dilation, padding, context):
    """``((top, bottom, left, right), OH, OW)`` of a convolution; ValueError (with ``context``
    naming the input) when the dilated kernel is larger than the padded input."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ext_h, ext_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = _resolve_padding(padding, (height, width), (ext_h, ext_w), (sh, sw))
    padded_h, padded_w = height + pads[0] + pads[1], width + pads[2] + pads[3]
    if padded_h < ext_h or padded_w < ext_w:
        raise ValueError(f"Calculated padded input size per channel: ({padded_h} x {padded_w}). "
                         f"Kernel size (dilated): ({ext_h} x {ext_w}). Kernel size can't be "
                         f"greater than the padded input size ({context})")
    return pads, (padded_h - ext_h) // sh + 1, (padded_w - ext_w) // sw + 1


def _check_mode_padding(padding_mode, pads, height, width):
    top, bottom, left, right = pads
    for name, pad, size in (("top", top, height), ("bottom", bottom, height),
                            ("left", left, width), ("right", right, width)):
        if padding_mode == "reflect" and pad >= size and pad > 0:
            raise ValueError(f"padding_mode='reflect' needs padding < input size: {name} padding "
                             f"{pad} with input size {size}")
        if padding_mode in ("replicate", "circular") and pad > 0 and size == 0:
            raise ValueError(f"padding_mode={padding_mode!r} cannot pad an empty input "
                             f"({name} padding {pad})")
        if padding_mode == "circular" and pad > size:
            raise ValueError(f"padding_mode='circular' needs padding <= input size: {name} "
                             f"padding {pad} with input size {size}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", layout="NCHW", activation=None, out=None, num_threads=None):
    """2-D convolution of a batch of images with a bank of filters (CNN convention).

    Computes ``out[n, f, i, j] = bias[f] + sum_{c, m, k} x[n, g*C/G + c, i*sh + m*dh - top,
    j*sw + k*dw - left] * weight[f, c, m, k]`` (cross-correlation; the kernel is not flipped),
    with ``g`` the group of filter ``f``, like ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W), or (N, H, W, C) with ``layout="NHWC"``
        The input batch. A 3-D array is one unbatched image and gives a 3-D result.
    weight : array_like of shape (F, C // groups, KH, KW)
        The filters, in this shape for both layouts.
    bias : array_like of shape (F,), optional
        Added to each feature map.
    stride, dilation : int or (int, int), default 1
        Step between output positions and between kernel taps, each >= 1.
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same", default 0
        "same" gives ``ceil(H / stride)`` outputs per axis; an odd total padding puts the extra
        pixel at the bottom/right (TensorFlow/ONNX ``SAME_UPPER``).
    groups : int, default 1
        C and F must be divisible by ``groups``; ``groups == C`` is a depthwise convolution.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
        What the padding holds, with ``torch.nn.Conv2d``'s meanings.
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Layout of ``x``; the result has the same layout.
    activation : {None, "relu"}, default None
        Applied after the bias, inside the kernel.
    out : ndarray, optional
        C-contiguous array of exactly the result's shape and dtype, filled and returned.
    num_threads : int, optional
        Threads for this call; None means the OpenMP default (``OMP_NUM_THREADS``,
        threadpoolctl). Results are bit-identical for every thread count.

    Returns
    -------
    ndarray of shape (N, F, OH, OW) (or (N, OH, OW, F) for NHWC)
        ``OH = floor((H + top + bottom - dh * (KH - 1) - 1) / sh) + 1``, likewise ``OW``.
        float32 and float64 inputs keep their dtype; mixed dtypes follow ``np.result_type``;
        float16 computes in float32; integers and bools compute in float64.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.array([[[[1, 1], [-1, -1]]], [[[0, 1], [1, 0]]]], dtype=np.float32)
    >>> fastconv.conv2d(x, w)[0, 1]
    array([[ 7.,  9., 11.],
           [15., 17., 19.],
           [23., 25., 27.]], dtype=float32)
    """
    if out is None:  # a repeated call with plain arrays runs in C (see _RUNNERS)
        result = _kernels.run_cached(_RUNNERS, x, weight, bias, stride, padding, dilation,
                                     groups, padding_mode, layout, activation, 1, num_threads,
                                     v.resolve_num_threads)
        if result is not None:
            return result
    return _validated_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                             layout, activation, out, num_threads, 1)


class _ConvCall(NamedTuple):
    """A validated conv2d call: everything but the arrays' values. Calls with the same
    shapes, strides, dtypes and parameters share one (see ``_call_key``)."""
    dtype: np.dtype
    shape: tuple            # of the result
    kernel_shape: tuple     # the result as the kernel writes it: (N, F, P) or (N, P, F)
    channels_last: bool
    copy_x: bool            # x's strides are not whole elements, or x is misaligned
    relu: bool
    path: str               # "empty", "bias" (no input channels), "depthwise", "lanes"
                            # (the filter-lane kernel), "channels_last" (NHWC, filters in
                            # lanes over bands) or "gemm"
    runner: object          # the planned kernel call (_kernels.GemmCall, DepthwiseCall,
                            # FilterLaneCall or ChannelsLastCall)
    direct: bool            # x, weight and bias go to the kernel as they are (no conversion)


# Validated calls by key (_call_key); a call whose key is found skips validation and
# planning. Those whose arrays need no conversion also have their runner in _RUNNERS, where
# _kernels.run_cached finds it: then the whole call runs in C.
_CALLS: dict[tuple, _ConvCall] = {}
_RUNNERS: dict[tuple, object] = {}
_MAX_CALLS = 512


def _forget_calls():
    """Empty the caches of validated calls."""
    _CALLS.clear()
    _RUNNERS.clear()


def _call_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
              activation, out, pool):
    """Hashable summary of a call that decides its validation and plan, or None for calls
    that must be validated in full (``out=``, array-likes, unusual parameter types)."""
    if out is not None:
        return None
    if type(weight) is _PackedWeights:
        if bias is not None:
            return None
        key = _kernels.call_key(x, weight.weight, weight.bias, stride, padding, dilation, groups,
                                padding_mode, layout, activation, pool)
        return None if key is None else ("prepacked", weight.groups, key)
    return _kernels.call_key(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                             layout, activation, pool)


def _conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
            activation, out, num_threads, pool):
    """conv2d, optionally followed by pool x pool / pool max pooling applied inside the kernel
    (``pool > 1``: the full-resolution map is never written). Used by ``layers.Sequential``."""
    if out is None:  # a repeated call with plain arrays runs in C (see _RUNNERS)
        result = _kernels.run_cached(_RUNNERS, x, weight, bias, stride, padding, dilation,
                                     groups, padding_mode, layout, activation, pool,
                                     num_threads, v.resolve_num_threads)
        if result is not None:
            return result
    return _validated_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                             layout, activation, out, num_threads, pool)


def _validated_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
                      activation, out, num_threads, pool):
    """_conv2d past the C path: validates and plans the call (or finds it in _CALLS), converts
    the arrays as needed and runs the planned call."""
    key = _call_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
                    activation, out, pool)
    call = _CALLS.get(key) if key is not None else None
    if call is None:
        call, x, weight, bias = _validate(x, weight, bias, stride, padding, dilation, groups,
                                          padding_mode, layout, activation, pool)
        if key is not None:
            if len(_CALLS) >= _MAX_CALLS:
                _forget_calls()
            _CALLS[key] = call
            if call.direct and type(weight) is np.ndarray:
                _RUNNERS[key] = call.runner
    if isinstance(weight, _PackedWeights):
        packed_weights = weight
        weight, bias = weight.weight, weight.bias
    else:
        packed_weights = None
    threads = v.resolve_num_threads(num_threads)
    if out is None:
        out = np.empty(call.shape, call.dtype)
    else:
        arrays = [(x, "x"), (weight, "weight")] + ([(bias, "bias")] if bias is not None else [])
        v.check_out(out, call.shape, call.dtype, arrays)
        if not out.flags.aligned:  # the kernels need aligned memory: compute, then copy
            if packed_weights is not None:
                weight, bias = packed_weights, None
            out[...] = _conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                               layout, activation, None, num_threads, pool)
            return out
    if out.size == 0:
        return out
    if call.path == "bias":  # no input channels: the bias alone
        out3 = out.reshape(call.kernel_shape)
        fill = np.zeros(weight.shape[0], call.dtype) if bias is None else bias.astype(call.dtype)
        out3[...] = fill if call.channels_last else fill[:, None]
        if call.relu:
            np.maximum(out3, 0, out=out3, where=~np.isnan(out3))
        return out
    # The kernels take x in its own layout and strides (whole elements, aligned).
    x_kernel = v.as_kernel_input(x, call.dtype)
    if call.copy_x:
        x_kernel = x_kernel.copy()
    if packed_weights is not None and call.path == "gemm":
        filters, packed, _, packed_bias = packed_weights.packed(call.dtype)
        call.runner(x_kernel, filters, None, out, threads, packed, packed_bias)
    else:
        weight = v.as_contiguous_kernel_input(weight, call.dtype)
        if bias is not None:
            bias = v.as_contiguous_kernel_input(bias, call.dtype)
        call.runner(x_kernel, weight, bias, out, threads)
    return out


def _validate(x, weight, bias, stride, padding, dilation, groups, padding_mode, layout,
              activation, pool):
    """Check every argument of a conv2d call (ValueError/TypeError naming the parameter) and
    return ``(_ConvCall, x, weight, bias)`` with the array-likes as arrays."""
    layout = v.check_layout(layout)
    x = v.as_array(x, "x")
    if x.ndim not in (3, 4):
        dims = "(C, H, W) or (N, C, H, W)" if layout == "NCHW" else "(H, W, C) or (N, H, W, C)"
        raise ValueError(f"x must be 3-D or 4-D {dims} for layout={layout!r}, got shape {x.shape}")
    if isinstance(weight, _PackedWeights):
        if bias is not None:
            raise ValueError("bias must be None when weight is prepacked (it carries its bias)")
        if groups not in (1, weight.groups):
            raise ValueError(f"groups = {groups} differs from the prepacked weight's "
                             f"groups = {weight.groups}")
        weights, bias_array, groups = weight.weight, weight.bias, weight.groups
    else:
        weight = v.as_array(weight, "weight")
        if weight.ndim != 4:
            raise ValueError(f"weight must be 4-D (F, C // groups, KH, KW), got shape "
                             f"{weight.shape}")
        groups = _check_groups(groups, weight.shape[0], "weight.shape[0] (filters)")
        if bias is not None:
            bias = _check_bias(bias, weight.shape[0])
        weights, bias_array = weight, bias
    arrays = [(x, "x"), (weights, "weight")]
    arrays += [(bias_array, "bias")] if bias_array is not None else []
    dtype = v.compute_dtype(*arrays)

    unbatched = x.ndim == 3
    x4 = x[None] if unbatched else x
    x_nchw = x4 if layout == "NCHW" else x4.transpose(0, 3, 1, 2)
    n_images, channels, height, width = x_nchw.shape
    n_filters, in_per_group, kh, kw = weights.shape
    if channels % groups:
        raise ValueError(f"input channels C = {channels} are not divisible by groups = {groups}")
    if in_per_group * groups != channels:
        raise ValueError(f"weight expects {in_per_group * groups} input channels "
                         f"(weight.shape[1] = {in_per_group} x groups = {groups}) but x has "
                         f"C = {channels} (x.shape = {x.shape}, layout={layout!r})")
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel must be at least 1x1, got weight shape {weights.shape}")
    sh, sw = v.int_pair(stride, "stride", 1)
    dh, dw = v.int_pair(dilation, "dilation", 1)
    if max(sh, sw, dh, dw) > _MAX_GEOMETRY:
        raise ValueError(f"stride {stride!r} or dilation {dilation!r} is absurdly large (> 2**31)")
    padding_mode = v.check_choice(padding_mode, "padding_mode", PADDING_MODES)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu'; got {activation!r}")
    pads, out_h, out_w = _output_geometry(
        height, width, (kh, kw), (sh, sw), (dh, dw), padding,
        f"x.shape = {x.shape}, padding = {padding!r}, dilation = {dilation!r}")
    if padding_mode != "zeros":
        _check_mode_padding(padding_mode, pads, height, width)
    map_h, map_w = (out_h // pool, out_w // pool) if pool > 1 else (out_h, out_w)
    if map_h < 1 or map_w < 1:  # the same refusal as max_pool2d on the unfused map
        raise ValueError(f"Given input size: ({n_filters}x{out_h}x{out_w}). Calculated output "
                         f"size: ({n_filters}x{map_h}x{map_w}). Output size is too small "
                         f"(kernel_size=({pool}, {pool}), stride=({pool}, {pool}))")
    shape = ((n_filters, map_h, map_w) if layout == "NCHW" else (map_h, map_w, n_filters))
    shape = shape if unbatched else (n_images,) + shape
    v.check_output_size(shape, "conv2d output")

    kernel_shape = ((n_images, n_filters, map_h * map_w) if layout == "NCHW"
                    else (n_images, map_h * map_w, n_filters))
    # The kernels take any strides in whole elements; a converted x is a fresh array.
    copy_x = x.dtype == dtype and (any(s % dtype.itemsize for s in x.strides)
                                   or not x.flags.aligned)
    per_group = n_filters // groups
    geometry = dict(height=height, width=width, out_h=out_h, out_w=out_w, kernel=(kh, kw),
                    stride=(sh, sw), dilation=(dh, dw), pads=pads, padding_mode=padding_mode,
                    itemsize=dtype.itemsize, row_multiple=pool)
    runner = None
    channels_last = layout == "NHWC"
    lanes = _kernels.LANES_FLOAT32 if dtype == np.float32 else _kernels.LANES_FLOAT64
    if 0 in shape:
        path = "empty"
    elif in_per_group * kh * kw == 0:
        path = "bias"
    elif in_per_group == 1 and per_group <= _DEPTHWISE_MAX_MULTIPLIER:
        path = "depthwise"
        layout_plan = _conv_plan.depthwise_plan(
            n_images=n_images, groups=channels, multiplier=per_group, lanes=lanes,
            channels_last=channels_last, **geometry)
        runner = _kernels.DepthwiseCall(
            layout_plan, dtype, x.shape, shape, channels_last=channels_last,
            multiplier=per_group, kernel=(kh, kw), stride=(sh, sw), out_hw=(out_h, out_w),
            relu=activation == "relu", pool=pool, workspace=_workspace)
    else:
        path = "gemm"
        if per_group == 1:  # the kernel's one-filter tile (whole tiles only)
            nr = (_kernels.ROW_NR_FLOAT32 if dtype == np.float32 else _kernels.ROW_NR_FLOAT64)
            tile_lanes = nr
        else:
            nr = _kernels.NR_FLOAT32 if dtype == np.float32 else _kernels.NR_FLOAT64
            tile_lanes = lanes
        half_tail = _kernels.HALF_TAIL and per_group > 1
        layout_plan = _conv_plan.plan(
            n_images=n_images, groups=groups, in_per_group=in_per_group, per_group=per_group,
            mr=_kernels.MR, nr=nr, lanes=tile_lanes, half_tail=half_tail, **geometry)
        fill = _conv_plan.pixel_fill(layout_plan, out_h, out_w, tile_lanes, nr, half_tail)
        # the kernels without fused pooling take the geometry without its row multiple
        unpooled = {k: v for k, v in geometry.items() if k != "row_multiple"}
        lane_plan = None
        if _conv_plan.filter_lanes_fit(n_images=n_images, groups=groups,
                                       depth=in_per_group * kh * kw, taps=kh * kw,
                                       out_h=out_h, out_w=out_w, lanes=lanes,
                                       tile_pixels=_kernels.LANES_PIXELS, row_multiple=pool):
            lane_plan = _conv_plan.filter_lane_plan(
                n_images=n_images, in_channels=channels, n_filters=n_filters, lanes=lanes,
                tile_pixels=_kernels.LANES_PIXELS, **unpooled)
        # NHWC 1x1 layers with stride 1 and no padding map pixels to pixels: where x's rows
        # follow one another, the channels-last kernel may take (H, W) as rows of another
        # width, so that short rows do not leave it tails as large as its runs.
        cl_x_shape = x.shape
        cl_geometry = dict(unpooled)
        if (channels_last and kh == kw == 1 and (sh, sw) == (1, 1) and not any(pads)
                and x.strides[-3] == x.shape[-2] * x.strides[-2]):
            cl_w = _conv_plan.merged_row_width(out_h * out_w, out_w, _kernels.LANES_PIXELS)
            cl_h = out_h * out_w // cl_w
            cl_x_shape = x.shape[:-3] + (cl_h, cl_w, channels)
            cl_geometry.update(height=cl_h, width=cl_w, out_h=cl_h, out_w=cl_w)
        channels_last_fits = channels_last and pool == 1 and _conv_plan.use_channels_last(
            rows=n_images * cl_geometry["out_h"], out_w=cl_geometry["out_w"],
            per_group=per_group, kernel_w=kw, stride_w=sw, dilation_w=dw, lanes=lanes,
            tile_pixels=_kernels.LANES_PIXELS, half_tail=_kernels.HALF_TAIL)
        if lane_plan is not None and _conv_plan.use_filter_lanes(
                per_group=per_group, taps=kh * kw, lanes=lanes, fill=fill,
                stacked=layout_plan.images_per_task > 0, work=lane_plan.work,
                half_tail=_kernels.HALF_TAIL, pixels=n_images * out_h * out_w,
                map_pixels=out_h * out_w, channels_last_fits=channels_last_fits, tile_pixels=_kernels.LANES_PIXELS):
            path = "lanes"
            layout_plan = lane_plan
            runner = _kernels.FilterLaneCall(
                layout_plan, dtype, x.shape, shape, channels_last=channels_last,
                n_filters=n_filters, kernel=(kh, kw), stride_w=sw, out_hw=(out_h, out_w),
                relu=activation == "relu", workspace=_workspace)
        elif channels_last_fits:
            path = "channels_last"
            layout_plan = _conv_plan.channels_last_plan(
                n_images=n_images, channels=channels, in_per_group=in_per_group,
                per_group=per_group, lanes=lanes, tile_pixels=_kernels.LANES_PIXELS,
                tile_vectors=_kernels.CHANNELS_LAST_VECTORS, **cl_geometry)
            runner = _kernels.ChannelsLastCall(
                layout_plan, dtype, cl_x_shape, shape, groups=groups, per_group=per_group,
                kernel=(kh, kw), stride_w=sw,
                out_hw=(cl_geometry["out_h"], cl_geometry["out_w"]),
                relu=activation == "relu", merge_rows=cl_x_shape != x.shape,
                workspace=_workspace)
        else:
            runner = _kernels.GemmCall(
                layout_plan, dtype, x.shape, shape, channels_last=channels_last,
                groups=groups, per_group=per_group, kernel=(kh, kw), stride_w=sw,
                out_hw=(out_h, out_w), relu=activation == "relu", pool=pool,
                # 1x1, stride 1, no padding: whole tiles may read x's rows in place
                pointwise=kh == kw == 1 and (sh, sw) == (1, 1) and not any(pads),
                workspace=_workspace)
    direct = all(a.dtype == dtype and a.dtype.isnative and (a is x or a.flags.c_contiguous)
                 and a.flags.aligned for a, _ in arrays) and not copy_x
    call = _ConvCall(dtype, shape, kernel_shape, channels_last, copy_x, activation == "relu",
                     path, runner, direct and runner is not None)
    return call, x, weight, bias


def _check_image_and_kernel(image, kernel):
    image = v.as_array(image, "image")
    kernel = v.as_array(kernel, "kernel")
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {kernel.shape}")
    dtype = v.compute_dtype((image, "image"), (kernel, "kernel"))
    return image, kernel, dtype


def _correlate_padded(image, kernel, mode, same_start):
    """Correlation of 2-D arrays for ``mode``; ``same_start`` (per axis) is the offset of the
    'same' window inside the 'full' result, which differs between scipy's correlate/convolve."""
    kh, kw = kernel.shape
    if mode == "valid":
        padding = 0
    elif mode == "full":
        padding = (kh - 1, kh - 1, kw - 1, kw - 1)
    else:
        padding = (kh - 1 - same_start[0], same_start[0], kw - 1 - same_start[1], same_start[1])
    if image.size == 0 or kernel.size == 0:
        raise ValueError(f"image and kernel must not be empty, got shapes {image.shape} and "
                         f"{kernel.shape}")
    return conv2d(image[None, None], kernel[None, None], padding=padding)[0, 0]


def _valid_swap_needed(mode, image, kernel):
    """scipy's rule: in 'valid' mode the larger array plays the image."""
    if mode != "valid":
        return False
    image_larger = all(i >= k for i, k in zip(image.shape, kernel.shape))
    kernel_larger = all(k >= i for i, k in zip(image.shape, kernel.shape))
    if not (image_larger or kernel_larger):
        raise ValueError("For 'valid' mode, one of image and kernel must be at least as large as "
                         f"the other in every dimension; got {image.shape} and {kernel.shape}")
    return not image_larger


def correlate2d(image, kernel, mode="valid"):
    """Cross-correlate a 2-D image with a 2-D kernel, like ``scipy.signal.correlate2d``.

    ``out[i, j] = sum_{m, k} image[i + m, j + k] * kernel[m, k]`` — what CNN libraries call
    convolution (the kernel is not flipped).

    Parameters
    ----------
    image : array_like of shape (H, W)
    kernel : array_like of shape (KH, KW)
    mode : {"valid", "same", "full"}, default "valid"
        scipy.signal's output sizes: (H-KH+1, W-KW+1), (H, W), (H+KH-1, W+KW-1). In "valid"
        mode a kernel larger than the image in every dimension swaps their roles, as scipy does.

    Returns
    -------
    ndarray of shape given by ``mode``, float32 or float64 by the dtype rules of ``conv2d``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> image = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    >>> fastconv.correlate2d(image, [[0, 1], [1, 0]])
    array([[ 7.,  9., 11.],
           [15., 17., 19.],
           [23., 25., 27.]])
    """
    mode = v.check_choice(mode, "mode", CORRELATE_MODES)
    image, kernel, _ = _check_image_and_kernel(image, kernel)
    if _valid_swap_needed(mode, image, kernel):
        return np.ascontiguousarray(
            _correlate_padded(kernel, image, mode, (0, 0))[::-1, ::-1])
    return _correlate_padded(image, kernel, mode, (kernel.shape[0] // 2, kernel.shape[1] // 2))


def convolve2d(image, kernel, mode="valid"):
    """True 2-D convolution (kernel flipped), like ``scipy.signal.convolve2d``.

    ``out[i, j] = sum_{m, k} image[i - m, j - k] * kernel[m, k]``. On the seed's 4x4 image with
    ``[[1, 1], [-1, -1]]`` this gives +8 where :func:`correlate2d` gives -8.

    Parameters
    ----------
    image : array_like of shape (H, W)
    kernel : array_like of shape (KH, KW)
    mode : {"valid", "same", "full"}, default "valid"
        As in :func:`correlate2d`.

    Returns
    -------
    ndarray of shape given by ``mode``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> image = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    >>> fastconv.convolve2d(image, [[1, 1], [-1, -1]])
    array([[8., 8., 8.],
           [8., 8., 8.],
           [8., 8., 8.]])
    """
    mode = v.check_choice(mode, "mode", CORRELATE_MODES)
    image, kernel, _ = _check_image_and_kernel(image, kernel)
    if _valid_swap_needed(mode, image, kernel):
        image, kernel = kernel, image
    flipped = kernel[::-1, ::-1]
    return _correlate_padded(image, flipped, mode, ((kernel.shape[0] - 1) // 2,
                                                    (kernel.shape[1] - 1) // 2))


def output_size(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output length of a convolution or pooling window along one or more axes.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``; with
    ``ceil_mode`` the division rounds up, but (as in PyTorch's pooling) a last window that
    would start inside the right/bottom padding is dropped.

    Parameters
    ----------
    size, kernel_size, stride, padding, dilation : int or tuple of ints
        Per-axis values; tuples must all have the same length, ints broadcast.
    ceil_mode : bool, default False

    Returns
    -------
    int, or tuple of ints when any argument is a tuple.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.output_size(224, 3, padding=1)
    224
    >>> fastconv.output_size((5, 6), 2, stride=2, ceil_mode=True)
    (3, 3)
    """
    args = {"size": size, "kernel_size": kernel_size, "stride": stride, "padding": padding,
            "dilation": dilation}
    lengths = {len(a) for a in args.values() if isinstance(a, (tuple, list))}
    if len(lengths) > 1:
        raise ValueError(f"tuple arguments must have the same length, got {args}")
    axes = lengths.pop() if lengths else None
    columns = {}
    for name, value in args.items():
        values = value if isinstance(value, (tuple, list)) else [value] * (axes or 1)
        for item in values:
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
                raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
        minimum = 0 if name in ("size", "padding") else 1
        if any(item < minimum for item in values):
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        columns[name] = [int(item) for item in values]
    results = []
    for n, k, s, p, d in zip(*columns.values()):
        span = n + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise ValueError(f"kernel extent {d * (k - 1) + 1} exceeds padded size {n + 2 * p}")
        length = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (length - 1) * s >= n + p:
            length -= 1
        results.append(length)
    return tuple(results) if axes is not None else results[0]
