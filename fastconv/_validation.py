"""Argument checking and normalisation shared by the public modules.

Everything here runs before a kernel: it raises ``ValueError``/``TypeError`` naming the
parameter and the offending values, and hands kernels plain, trusted values.
"""

from __future__ import annotations

import operator
from numbers import Integral

import numpy as np

from ._config import _openmp_helpers  # loaded there, with libgomp's spin set (_openmp_env)

__all__ = [
    "LAYOUTS",
    "as_array",
    "compute_dtype",
    "as_contiguous_kernel_input",
    "as_kernel_input",
    "int_pair",
    "check_layout",
    "check_choice",
    "check_out",
    "resolve_num_threads",
    "in_forked_child",
    "MAX_OUTPUT_ELEMENTS",
    "check_output_size",
]

LAYOUTS = ("NCHW", "NHWC")

# Sizes past this are certainly a mistake (and would overflow index arithmetic elsewhere).
MAX_OUTPUT_ELEMENTS = 2**48


def as_array(value, name):
    """``np.asarray`` with a TypeError that names the parameter for objects that are not arrays."""
    if isinstance(value, np.ndarray):
        return value
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array-like of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array-like of numbers: {exc}") from None
    if array.dtype == object:
        raise TypeError(f"{name} must be an array-like of numbers, got {type(value).__name__} "
                        "that converts to an object array")
    return array


def compute_dtype(*arrays_and_names):
    """The dtype a kernel computes in, from ``(array, name)`` pairs.

    float32 and float64 stay; mixed inputs follow ``np.result_type``; float16 computes in
    float32; bool and integers compute in float64. Anything else is a TypeError.
    """
    first = arrays_and_names[0][0].dtype
    if first.type in (np.float32, np.float64) and first.isnative and all(
            array.dtype == first for array, _ in arrays_and_names):
        return first  # the common case, without np.result_type
    for array, name in arrays_and_names:
        kind = array.dtype.kind
        if kind not in "biuf":
            raise TypeError(f"{name} has unsupported dtype {array.dtype}; fastconv supports "
                            "floating, integer and boolean arrays (not complex, object or strings)")
        if kind == "f" and array.dtype.itemsize > 8:
            raise TypeError(f"{name} has unsupported dtype {array.dtype}; use float32 or float64")
    result = np.result_type(*(array.dtype for array, _ in arrays_and_names))
    if result.kind != "f":
        return np.dtype(np.float64)
    if result.itemsize < 4:
        return np.dtype(np.float32)
    return np.dtype(result.type)  # native byte order


def as_kernel_input(array, dtype):
    """The array in ``dtype`` and native byte order; strides are left alone (kernels take views)."""
    if array.dtype != dtype or not array.dtype.isnative:
        array = array.astype(dtype)
    return array


def as_contiguous_kernel_input(array, dtype):
    """The array in ``dtype``, native byte order, C-contiguous and aligned, as the kernels
    read weights and biases; a copy only when one of those is missing."""
    flags = array.flags
    if array.dtype == dtype and array.dtype.isnative and flags.c_contiguous and flags.aligned:
        return array
    return np.array(array, dtype=dtype, order="C")


def int_pair(value, name, minimum):
    """An int or a pair of ints, each >= ``minimum``, as a tuple ``(h, w)``."""
    if type(value) is int and value >= minimum:  # the common case, without ABC checks
        return (value, value)
    if isinstance(value, (Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            pair = tuple(operator.index(v) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if any(isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    elif isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {len(value)} values: "
                         f"{tuple(value)!r}")
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__} "
                        f"{value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_choice(value, name, choices):
    """A string among ``choices``; ValueError listing them otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_layout(layout):
    return check_choice(layout, "layout", LAYOUTS)


def check_out(out, shape, dtype, inputs=()):
    """Validate a user ``out=`` buffer: exact shape and dtype, C-contiguous, writeable,
    not overlapping any of ``inputs`` (pairs of ``(array, name)``)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for array, name in inputs:
        if isinstance(array, np.ndarray) and np.may_share_memory(out, array):
            raise ValueError(f"out overlaps the memory of {name}; pass a separate buffer")
    return out


def check_output_size(shape, what):
    """Refuse outputs so large they can only come from a mistake (e.g. padding=2**62)."""
    total = 1
    for extent in shape:
        total *= int(extent)
    if total > MAX_OUTPUT_ELEMENTS:
        raise ValueError(f"{what} would have shape {tuple(int(s) for s in shape)} "
                         f"({total} elements); check padding, stride and kernel_size")


# Thread counts and fork safety live in C: they run on every call.
resolve_num_threads = _openmp_helpers.resolve_num_threads
in_forked_child = _openmp_helpers.in_forked_child
