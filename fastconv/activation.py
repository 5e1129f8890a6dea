"""Elementwise activations over NumPy arrays.

``relu`` validates and normalises its argument and streams it through the compiled kernel
(``_activation_<isa>.pyx``, chosen at import for this CPU), in parallel for large arrays.
"""

from __future__ import annotations

import numpy as np

from . import _validation as v
from ._config import load_kernels

__all__ = ["relu"]

_kernels = load_kernels("activation")


def _same_buffer(a, b):
    """True when ``a`` and ``b`` view exactly the same elements (so in-place is safe)."""
    return (a is b or (np.may_share_memory(a, b)
                       and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                       and a.shape == b.shape and a.strides == b.strides
                       and a.dtype == b.dtype))


def relu(x, *, out=None, num_threads=None):
    """Rectified linear unit, ``max(x, 0)`` elementwise, as ``torch.relu``.

    Parameters
    ----------
    x : array_like of any shape (0-d and empty included)
        float32 and float64 keep their dtype, float16 computes and returns float32, bool
        and integers return float64. Any strides, byte order or read-only array; nested
        lists and scalars work too.
    out : ndarray, optional
        Destination: C-contiguous, shape ``x.shape``, the result dtype. ``out=x`` computes
        in place (``x`` must then be a C-contiguous array of the result dtype); any other
        overlap with ``x`` is refused.
    num_threads : int, optional
        Cap on the threads of this call; None uses the OpenMP default. Arrays below ~128k
        elements run serially. Results are identical for every thread count.

    Returns
    -------
    ndarray of shape ``x.shape``
        0 where ``x < 0``, else ``x``: NaN stays NaN, -0.0 stays -0.0 (as in torch.relu).
        A 0-d input gives a 0-d array.

    Raises
    ------
    TypeError
        ``x`` is not an array of numbers (complex, object, strings), or ``out`` is not an
        ndarray.
    ValueError
        A bad ``out`` (shape, dtype, not C-contiguous, read-only, overlapping ``x``) or
        ``num_threads`` < 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.relu(np.array([-2.0, -0.5, 0.0, 1.5, np.nan], dtype=np.float32))
    array([0. , 0. , 0. , 1.5, nan], dtype=float32)
    >>> x = np.array([[-1.0, 2.0], [3.0, -4.0]])
    >>> _ = fastconv.relu(x, out=x)  # in place
    >>> x
    array([[0., 2.],
           [3., 0.]])
    """
    x = v.as_array(x, "x")
    dtype = v.compute_dtype((x, "x"))
    threads = v.resolve_num_threads(num_threads)
    if out is None:
        out = np.empty(x.shape, dtype)
    elif isinstance(out, np.ndarray) and _same_buffer(out, x):
        v.check_out(out, x.shape, dtype)  # in place: out is x
    else:
        v.check_out(out, x.shape, dtype, [(x, "x")])
    if x.size == 0:
        return out

    flat_out = out.reshape(-1)  # a view: out is C-contiguous
    if x.dtype == dtype and x.flags.c_contiguous:
        _kernels.relu(x.reshape(-1), flat_out, threads)
    else:
        # Convert / gather into out first, then rectify in place (no temporary array).
        np.copyto(out, x, casting="unsafe")
        _kernels.relu(flat_out, flat_out, threads)
    return out
