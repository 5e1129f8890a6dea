# Stub of the kernels in _conv.pxi, which _conv_<isa>.pyx build once per ISA level.
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

ISA: str
MR: int
NR_FLOAT32: int
NR_FLOAT64: int
ROW_NR_FLOAT32: int
ROW_NR_FLOAT64: int
LANES_FLOAT32: int
LANES_FLOAT64: int
LANES_PIXELS: int
CHANNELS_LAST_VECTORS: int
HALF_TAIL: bool

def array_key(*arrays: npt.NDArray[np.generic] | None) -> bytes: ...
def peak_probe(dtype: str, iterations: int) -> tuple[int, float]: ...

def packed_sizes(
    groups: int, per_group: int, depth: int, inplace_blocks: int
) -> tuple[int, int]: ...
def pack_filters(
    filters: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating] | None,
    groups: int,
    inplace_blocks: int,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]: ...

class _KernelCall:
    @property
    def plan(self) -> Any: ...
    def __call__(
        self,
        x: npt.NDArray[np.floating],
        weight: npt.NDArray[np.floating],
        bias: npt.NDArray[np.floating] | None = ...,
        out: npt.NDArray[np.floating] | None = ...,
        num_threads: int = ...,
        packed: npt.NDArray[np.floating] | None = ...,
        packed_bias: npt.NDArray[np.floating] | None = ...,
    ) -> npt.NDArray[np.floating]: ...

class GemmCall(_KernelCall):
    def __init__(
        self,
        plan: Any,
        dtype: npt.DTypeLike,
        x_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        channels_last: bool,
        groups: int,
        per_group: int,
        kernel: tuple[int, int],
        stride_w: int,
        out_hw: tuple[int, int],
        relu: bool,
        pool: int,
        pointwise: bool,
        workspace: Any,
    ) -> None: ...

class DepthwiseCall(_KernelCall):
    def __init__(
        self,
        plan: Any,
        dtype: npt.DTypeLike,
        x_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        channels_last: bool,
        multiplier: int,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        out_hw: tuple[int, int],
        relu: bool,
        pool: int,
        workspace: Any,
    ) -> None: ...

class FilterLaneCall(_KernelCall):
    def __init__(
        self,
        plan: Any,
        dtype: npt.DTypeLike,
        x_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        channels_last: bool,
        n_filters: int,
        kernel: tuple[int, int],
        stride_w: int,
        out_hw: tuple[int, int],
        relu: bool,
        workspace: Any,
    ) -> None: ...

class ChannelsLastCall(_KernelCall):
    def __init__(
        self,
        plan: Any,
        dtype: npt.DTypeLike,
        x_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        groups: int,
        per_group: int,
        kernel: tuple[int, int],
        stride_w: int,
        out_hw: tuple[int, int],
        relu: bool,
        merge_rows: bool = ...,
        workspace: Any,
    ) -> None: ...

def call_key(
    x: object,
    weight: object,
    bias: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    padding_mode: object,
    layout: object,
    activation: object,
    pool: int,
) -> tuple[Any, ...] | None: ...
def run_cached(
    calls: dict[Any, Any],
    x: object,
    weight: object,
    bias: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    padding_mode: object,
    layout: object,
    activation: object,
    pool: int,
    num_threads: int | None,
    resolve_num_threads: Callable[[int | None], int],
) -> npt.NDArray[np.floating] | None: ...
