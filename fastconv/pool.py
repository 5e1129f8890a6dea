"""2-D max pooling over NumPy arrays, with PyTorch's semantics.

``max_pool2d`` validates and normalises its arguments and hands a contiguous array to the
compiled kernels (``_pool_<isa>.pyx``, chosen at import for this CPU). NCHW data is pooled as
N*C independent planes, NHWC data as N images of C-value pixels; both are vectorised.
"""

from __future__ import annotations

import numpy as np

from . import _validation as v
from ._config import load_kernels

__all__ = ["max_pool2d", "pool_output_size"]

_kernels = load_kernels("pool")

# Larger kernel sizes, strides, paddings or dilations are certainly mistakes; refusing them
# keeps every index computation of the kernels far from overflow.
_MAX_GEOMETRY = 2**31 - 1
# The vectorised values path keeps up to 64 taps per row and a padded row buffer per thread;
# past these bounds the direct loop (which only visits taps inside the image) is used.
_SEPARABLE_MAX_TAPS = 64
_SEPARABLE_MAX_STRIDE = 64


def pool_output_size(size, kernel_size, stride, padding=0, dilation=1, ceil_mode=False):
    """Output length of max pooling along one axis, with PyTorch's rule.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``, rounded
    up instead with ``ceil_mode``; a last window that would start in the right/bottom
    padding is then dropped. May return a value < 1 (the caller reports the error).

    Examples
    --------
    >>> pool_output_size(5, 2, 2), pool_output_size(5, 2, 2, ceil_mode=True)
    (2, 3)
    """
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1  # ceil division (span may be negative: floor semantics)
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _check_bool(value, name):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _geometry_pair(value, name, minimum):
    if type(value) is int and minimum <= value <= _MAX_GEOMETRY:  # the common case, fast
        return value, value
    pair = v.int_pair(value, name, minimum)
    if max(pair) > _MAX_GEOMETRY:
        raise ValueError(f"{name} is too large: got {value!r}; each value must be at most "
                         f"{_MAX_GEOMETRY}")
    return pair


def _check_pool_out(out, values_shape, dtype, return_indices, x):
    """The caller's ``out``: an array, or ``(values, indices)`` with ``return_indices``."""
    inputs = [(x, "x")]
    if not return_indices:
        if isinstance(out, tuple):
            raise TypeError("out must be a numpy.ndarray when return_indices=False; "
                            f"got a tuple of {len(out)}")
        return v.check_out(out, values_shape, dtype, inputs), None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        what = (f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list))
                else type(out).__name__)
        raise TypeError("with return_indices=True, out must be a (values, indices) pair of "
                        f"arrays; got {what}")
    values = v.check_out(out[0], values_shape, dtype, inputs)
    try:
        indices = v.check_out(out[1], values_shape, np.dtype(np.int64),
                              inputs + [(values, "out[0] (the values)")])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"out[1] (the indices): {exc}") from None
    return values, indices


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
               return_indices=False, layout="NCHW", out=None, num_threads=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) for ``layout="NCHW"``, (N, H, W, C) for ``"NHWC"``
        Input batch; a 3-D array, (C, H, W) or (H, W, C), is one unbatched image. float32 and
        float64 keep their dtype, float16 computes and returns float32, bool and integers
        return float64. Any strides, byte order or read-only array; nested lists work too.
    kernel_size : int or (kh, kw)
        Window size, each >= 1.
    stride : int or (sh, sw), optional
        Window step, each >= 1. Defaults to ``kernel_size`` (also when an empty tuple is
        given, as in PyTorch).
    padding : int or (ph, pw), default 0
        Implicit -inf padding on both sides. PyTorch's rule: each at most half the kernel
        size (``ph <= kh // 2``, ``pw <= kw // 2``).
    dilation : int or (dh, dw), default 1
        Spacing between window taps, each >= 1.
    ceil_mode : bool, default False
        Round the output size up instead of down; a last window that would start inside the
        right/bottom padding is dropped (PyTorch's rule).
    return_indices : bool, default False
        Also return where each maximum was.
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Memory layout of ``x``; the output has the same layout.
    out : ndarray, or (ndarray, ndarray) with ``return_indices``, optional
        Destination(s), C-contiguous, of the exact output shape and dtype (int64 for the
        indices), not overlapping ``x`` or each other. With ``return_indices=True`` ``out``
        must be the pair ``(values, indices)``.
    num_threads : int, optional
        Cap on the threads of this call; None uses the OpenMP default. Small inputs run
        serially. Results are bit-identical for every thread count.

    Returns
    -------
    values : ndarray of shape (N, C, OH, OW) for "NCHW", (N, OH, OW, C) for "NHWC"
        (without N for unbatched input), where
        ``OH = floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1`` (see ``ceil_mode``) and
        likewise OW. A window containing NaN gives NaN; a window of only -inf gives -inf.
    indices : ndarray of int64, same shape as ``values``, only with ``return_indices=True``
        Flat index ``h * W + w`` into the input plane of the maximum (PyTorch's convention):
        the first maximum in row-major window order; the last NaN of a window with NaN; the
        window's first in-image tap if all its values are -inf.

    Raises
    ------
    TypeError
        ``x`` is not an array of numbers (complex, object, strings), or an argument has the
        wrong type.
    ValueError
        Wrong ndim or an empty C/H/W, bad layout, kernel_size/stride/dilation < 1, negative
        padding or padding larger than half the kernel, an output smaller than 1x1, a bad
        ``out`` or ``num_threads`` < 1.

    Notes
    -----
    Values are exact (a maximum is one of the inputs). Among equal values the reported index
    follows PyTorch; which of +0.0 and -0.0 is returned when both are the maximum of a window
    is unspecified.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> fastconv.max_pool2d(x, 2)
    array([[[[ 5.,  7.],
             [13., 15.]]]], dtype=float32)
    >>> values, indices = fastconv.max_pool2d(x, 3, stride=1, padding=1,
    ...                                       return_indices=True)
    >>> indices[0, 0, 0]
    array([5, 6, 7, 7])
    """
    x = v.as_array(x, "x")
    dtype = v.compute_dtype((x, "x"))
    layout = v.check_layout(layout)
    if ceil_mode is not False:
        ceil_mode = _check_bool(ceil_mode, "ceil_mode")
    if return_indices is not False:
        return_indices = _check_bool(return_indices, "return_indices")
    kernel = _geometry_pair(kernel_size, "kernel_size", 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        step = kernel
    else:
        step = _geometry_pair(stride, "stride", 1)
    pad = _geometry_pair(padding, "padding", 0)
    dil = _geometry_pair(dilation, "dilation", 1)
    threads = v.resolve_num_threads(num_threads)

    axes = "(C, H, W)" if layout == "NCHW" else "(H, W, C)"
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be 4-D {axes[:1]}N, {axes[1:]} or 3-D {axes} (unbatched) "
                         f"for layout={layout!r}; got a {x.ndim}-D array of shape {x.shape}")
    unbatched = x.ndim == 3
    x4 = x[None] if unbatched else x
    if layout == "NCHW":
        n, c, h, w = x4.shape
    else:
        n, h, w, c = x4.shape
    if c == 0 or h == 0 or w == 0:
        raise ValueError(f"x must have non-empty channel and spatial dimensions (only the "
                         f"batch may be empty); got shape {x.shape} for layout={layout!r}")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"padding should be at most half of kernel_size, but got "
                         f"padding={pad}, kernel_size={kernel} (PyTorch's rule: "
                         f"padding <= kernel_size // 2)")
    oh = pool_output_size(h, kernel[0], step[0], pad[0], dil[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], step[1], pad[1], dil[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"Given input size: ({c}x{h}x{w}). Calculated output size: "
                         f"({c}x{oh}x{ow}). Output size is too small (kernel_size={kernel}, "
                         f"stride={step}, padding={pad}, dilation={dil}, "
                         f"ceil_mode={ceil_mode})")
    shape4 = (n, c, oh, ow) if layout == "NCHW" else (n, oh, ow, c)
    v.check_output_size(shape4, "max_pool2d output")
    shape = shape4[1:] if unbatched else shape4

    if out is None:
        values = np.empty(shape, dtype)
        indices = np.empty(shape, np.int64) if return_indices else None
    else:
        values, indices = _check_pool_out(out, shape, dtype, return_indices, x)

    if n > 0:
        xk = np.ascontiguousarray(x4, dtype=dtype)  # native byte order, C order
        values4 = values[None] if unbatched else values
        indices4 = None
        if return_indices:
            indices4 = indices[None] if unbatched else indices
        if layout == "NCHW":  # every (n, c) plane is an image of one-value pixels
            xk = xk.reshape(n * c, h, w, 1)
            values4 = values4.reshape(n * c, oh, ow, 1)
            if return_indices:
                indices4 = indices4.reshape(n * c, oh, ow, 1)
        if return_indices:
            _kernels.max_pool2d_indices(xk, values4, indices4, *kernel, *step, *pad, *dil,
                                        threads)
        else:
            cw = 1 if layout == "NCHW" else c
            # the separable path keeps a padded row per thread: only for moderate geometry
            separable = (max(kernel) <= _SEPARABLE_MAX_TAPS
                         and step[1] <= _SEPARABLE_MAX_STRIDE
                         and _kernels.separable_scratch_size(w, cw, ow, kernel[1], step[1],
                                                             pad[1], dil[1])
                         <= 4 * (w + 2 * pad[1] + 2 * _SEPARABLE_MAX_STRIDE) * cw)
            _kernels.max_pool2d_values(xk, values4, *kernel, *step, *pad, *dil, separable,
                                       threads)

    if return_indices:
        return values, indices
    return values
