"""Plain NumPy references for every fastconv operation.

These are slow, readable and independent of the Cython kernels: the tests compare the kernels
against them and ``bench/`` times the kernels against them. They accumulate in float64 and
return the dtype the public function would return (float32 and float64 stay, float16 becomes
float32, bool and integers become float64). They check little: feed them valid arguments.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "result_dtype",
    "conv_padding_reference",
    "conv2d_reference",
    "correlate2d_reference",
    "convolve2d_reference",
    "relu_reference",
    "max_pool2d_reference",
]

# np.pad's names for PyTorch's padding modes.
_NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                 "circular": "wrap"}


def result_dtype(*arrays):
    """The dtype fastconv returns for these inputs.

    ``np.result_type`` of the inputs, then float16 -> float32 and bool/int/uint -> float64.
    """
    dtype = np.result_type(*(np.asarray(a).dtype for a in arrays))
    if dtype.kind != "f":
        return np.dtype(np.float64)
    if dtype.itemsize < 4:
        return np.dtype(np.float32)
    return np.dtype(dtype.type)


def _pair(value):
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def conv_padding_reference(padding, in_size, kernel_size, stride=1, dilation=1):
    """Explicit ``(top, bottom, left, right)`` padding for every padding form of conv2d.

    Parameters
    ----------
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    in_size : (H, W)
    kernel_size : (KH, KW)
    stride, dilation : int or (h, w)

    "same" gives an output of ceil(H / stride) rows (any stride), with the odd pixel of
    padding at the bottom/right (TensorFlow / ONNX ``SAME_UPPER``).

    Examples
    --------
    >>> conv_padding_reference("same", (5, 5), (4, 4))
    (1, 2, 1, 2)
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"unknown padding {padding!r}")
        stride, dilation = _pair(stride), _pair(dilation)
        pads = []
        for n, k, s, d in zip(in_size, kernel_size, stride, dilation):
            extent = d * (k - 1) + 1
            out = -(-n // s)  # ceil(n / s)
            total = max((out - 1) * s + extent - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int(p) for p in padding)
    ph, pw = _pair(padding)
    return (ph, ph, pw, pw)


def conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros", layout="NCHW", activation=None):
    """2-D cross-correlation as in ``torch.nn.functional.conv2d``, in plain NumPy.

    Parameters
    ----------
    x : array of shape (N, C, H, W) for layout "NCHW", (N, H, W, C) for "NHWC",
        or the same without N (one unbatched image)
    weight : array of shape (F, C // groups, KH, KW) (both layouts)
    bias : array of shape (F,) or None
    stride, dilation : int or (h, w)
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    groups : int
    padding_mode : "zeros", "reflect", "replicate" or "circular" (PyTorch's meanings)
    layout : "NCHW" or "NHWC"; the output has the same layout
    activation : None or "relu" (applied after the bias)

    Returns
    -------
    ndarray of shape (N, F, OH, OW) for "NCHW", (N, OH, OW, F) for "NHWC"
        (without N for unbatched input), in ``result_dtype(x, weight)``.

    Examples
    --------
    >>> image = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    >>> conv2d_reference(image, np.array([[[[1.0, 1.0], [-1.0, -1.0]]]]))[0, 0]
    array([[-8., -8., -8.],
           [-8., -8., -8.],
           [-8., -8., -8.]])
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    dtype = result_dtype(x, weight, *(() if bias is None else (np.asarray(bias),)))
    unbatched = x.ndim == 3
    x64 = x.astype(np.float64)[None] if unbatched else x.astype(np.float64)
    if layout == "NHWC":
        x64 = x64.transpose(0, 3, 1, 2)
    w64 = weight.astype(np.float64)
    n, c, h, w = x64.shape
    f, cg, kh, kw = w64.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)

    top, bottom, left, right = conv_padding_reference(padding, (h, w), (kh, kw),
                                                      (sh, sw), (dh, dw))
    xp = np.pad(x64, ((0, 0), (0, 0), (top, bottom), (left, right)),
                mode=_NP_PAD_MODES[padding_mode])

    # windows[n, c, i, j, m, q] = xp[n, c, i*sh + m*dh, j*sw + q*dw]
    extent_h, extent_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    windows = sliding_window_view(xp, (extent_h, extent_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]
    oh, ow = windows.shape[2], windows.shape[3]

    fg = f // groups
    y = np.empty((n, f, oh, ow))
    for g in range(groups):
        xg = windows[:, g * cg:(g + 1) * cg]  # (N, C/groups, OH, OW, KH, KW)
        wg = w64[g * fg:(g + 1) * fg]  # (F/groups, C/groups, KH, KW)
        # sum over channel and kernel position -> (N, OH, OW, F/groups)
        # einsum without optimize: plain loops, so NaN * 0 stays NaN (BLAS drops it)
        y[:, g * fg:(g + 1) * fg] = np.einsum("ncijmq,fcmq->nfij", xg, wg, optimize=False)

    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape(1, f, 1, 1)
    if activation == "relu":
        y = np.maximum(y, 0.0)  # NaN stays NaN
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    if unbatched:
        y = y[0]
    return np.ascontiguousarray(y, dtype=dtype)


def _scipy_valid_swap(image, kernel):
    """scipy.signal's 'valid' rule: swap the inputs when the kernel is the larger one in every
    dimension; refuse when neither is at least as large as the other in every dimension."""
    if all(k >= i for i, k in zip(image.shape, kernel.shape)) and image.shape != kernel.shape:
        return kernel, image, True
    if not all(i >= k for i, k in zip(image.shape, kernel.shape)):
        raise ValueError("For 'valid' mode, one must be at least as large as the other in "
                         "every dimension")
    return image, kernel, False


def _correlate_full(image, kernel):
    """Full cross-correlation:
    out[i, j] = sum_{m, q} image[i + m - KH + 1, j + q - KW + 1] * kernel[m, q]."""
    kh, kw = kernel.shape
    padded = np.pad(image, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    windows = sliding_window_view(padded, (kh, kw))  # (H + KH - 1, W + KW - 1, KH, KW)
    return np.einsum("ijmq,mq->ij", windows, kernel, optimize=False)  # no BLAS: NaN * 0 is NaN


def correlate2d_reference(image, kernel, mode="valid"):
    """``scipy.signal.correlate2d(image, kernel, mode)`` for real 2-D arrays, in plain NumPy.

    Parameters
    ----------
    image : array of shape (H, W)
    kernel : array of shape (KH, KW)
    mode : "valid", "same" or "full"

    Returns
    -------
    ndarray in ``result_dtype(image, kernel)``, of shape (H - KH + 1, W - KW + 1) for "valid",
    (H, W) for "same", (H + KH - 1, W + KW - 1) for "full".

    Examples
    --------
    >>> image = np.arange(1.0, 17.0).reshape(4, 4)
    >>> correlate2d_reference(image, np.array([[0.0, 1.0], [1.0, 0.0]]))
    array([[ 7.,  9., 11.],
           [15., 17., 19.],
           [23., 25., 27.]])
    """
    image, kernel = np.asarray(image), np.asarray(kernel)
    dtype = result_dtype(image, kernel)
    a, k = image.astype(np.float64), kernel.astype(np.float64)
    if mode == "valid":
        a, k, swapped = _scipy_valid_swap(a, k)
        # correlate(k, a) is correlate(a, k) rotated by 180 degrees
        full = _correlate_full(a, k)
        kh, kw = k.shape
        out = full[kh - 1:a.shape[0], kw - 1:a.shape[1]]
        if swapped:
            out = out[::-1, ::-1]
    elif mode == "full":
        out = _correlate_full(a, k)
    elif mode == "same":
        # scipy centres 'same' on the full output with this offset for correlation
        full = _correlate_full(a, k)
        kh, kw = k.shape
        top, left = kh // 2, kw // 2
        out = full[top:top + a.shape[0], left:left + a.shape[1]]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return np.ascontiguousarray(out, dtype=dtype)


def convolve2d_reference(image, kernel, mode="valid"):
    """``scipy.signal.convolve2d(image, kernel, mode)`` for real 2-D arrays: the kernel flipped.

    Examples
    --------
    >>> image = np.arange(1.0, 17.0).reshape(4, 4)
    >>> convolve2d_reference(image, np.array([[1.0, 1.0], [-1.0, -1.0]]))
    array([[8., 8., 8.],
           [8., 8., 8.],
           [8., 8., 8.]])
    """
    image, kernel = np.asarray(image), np.asarray(kernel)
    dtype = result_dtype(image, kernel)
    a, k = image.astype(np.float64), kernel.astype(np.float64)
    if mode == "valid":
        # convolution commutes, so a swap changes nothing but which array slides
        a, k, _ = _scipy_valid_swap(a, k)
        out = correlate2d_reference(a, k[::-1, ::-1], "valid")
    elif mode == "full":
        out = _correlate_full(a, k[::-1, ::-1])
    elif mode == "same":
        full = _correlate_full(a, k[::-1, ::-1])
        kh, kw = k.shape
        top, left = (kh - 1) // 2, (kw - 1) // 2
        out = full[top:top + a.shape[0], left:left + a.shape[1]]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return np.ascontiguousarray(out, dtype=dtype)


def relu_reference(x):
    """``max(x, 0)`` elementwise, as ``torch.relu``: NaN and -0.0 pass through unchanged.

    Parameters
    ----------
    x : array of any shape

    Returns
    -------
    ndarray of shape ``x.shape`` in ``result_dtype(x)``

    Examples
    --------
    >>> relu_reference(np.array([-1.0, 0.5, np.nan]))
    array([0. , 0.5, nan])
    """
    x = np.asarray(x)
    xr = x.astype(result_dtype(x))
    return np.where(xr < 0, np.zeros((), xr.dtype), xr)


def _pool_output_size_reference(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output length (``pooling_output_shape``)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1  # floor division, as PyTorch's div_rtn
    out = -(-span // stride) + 1  # ceil division
    if (out - 1) * stride >= size + padding:  # the last window starts in the padding: drop it
        out -= 1
    return out


def max_pool2d_reference(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                         return_indices=False, layout="NCHW"):
    """2-D max pooling as ``torch.nn.functional.max_pool2d``, window by window in NumPy.

    Parameters
    ----------
    x : array of shape (N, C, H, W) for layout "NCHW", (N, H, W, C) for "NHWC",
        or the same without N (one unbatched image)
    kernel_size, dilation : int or (h, w)
    stride : int or (h, w); None (or empty) means kernel_size
    padding : int or (h, w); padded positions count as -inf (they are never reported)
    ceil_mode : round the output size up; a last window starting in the padding is dropped
    return_indices : also return the flat index h * W + w of each maximum
    layout : "NCHW" or "NHWC"; the outputs have the same layout

    Returns
    -------
    values : ndarray of shape (N, C, OH, OW) ("NCHW") or (N, OH, OW, C) ("NHWC"), without N
        for unbatched input, in ``result_dtype(x)``
    indices : int64 ndarray of the same shape (only with ``return_indices``)

    The window is scanned in row-major order, PyTorch's CPU rule: a value replaces the
    current maximum if it is larger or NaN, so ties keep the first maximum, NaN wins and the
    last NaN is reported; an all -inf window reports its first tap inside the image
    (PyTorch's start index, even if the window has no tap inside the image).

    Examples
    --------
    >>> x = np.array([[[[1.0, 3.0], [3.0, np.nan]]]])
    >>> max_pool2d_reference(x, 2, return_indices=True)
    (array([[[[nan]]]]), array([[[[3]]]]))
    """
    x = np.asarray(x)
    dtype = result_dtype(x)
    unbatched = x.ndim == 3
    x64 = x.astype(np.float64)
    if unbatched:
        x64 = x64[None]
    if layout == "NHWC":
        x64 = x64.transpose(0, 3, 1, 2)
    n, c, h, w = x64.shape
    kh, kw = _pair(kernel_size)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    oh = _pool_output_size_reference(h, kh, sh, ph, dh, ceil_mode)
    ow = _pool_output_size_reference(w, kw, sw, pw, dw, ceil_mode)

    values = np.empty((n, c, oh, ow))
    indices = np.empty((n, c, oh, ow), dtype=np.int64)
    for i in range(oh):
        rows = [i * sh - ph + a * dh for a in range(kh)]
        first_row = rows[0]
        while first_row < 0:
            first_row += dh
        for j in range(ow):
            cols = [j * sw - pw + b * dw for b in range(kw)]
            first_col = cols[0]
            while first_col < 0:
                first_col += dw
            best = np.full((n, c), -np.inf)
            where = np.full((n, c), first_row * w + first_col, dtype=np.int64)
            for r in rows:
                for q in cols:
                    if not (0 <= r < h and 0 <= q < w):
                        continue  # padding
                    value = x64[:, :, r, q]
                    take = (value > best) | np.isnan(value)
                    best = np.where(take, value, best)
                    where = np.where(take, r * w + q, where)
            values[:, :, i, j] = best
            indices[:, :, i, j] = where

    if layout == "NHWC":
        values = values.transpose(0, 2, 3, 1)
        indices = indices.transpose(0, 2, 3, 1)
    if unbatched:
        values, indices = values[0], indices[0]
    values = np.ascontiguousarray(values, dtype=dtype)
    if return_indices:
        return values, np.ascontiguousarray(indices)
    return values
