# Stub of the kernels in _conv.pxi, which _conv_<isa>.pyx build once per ISA level.
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

def array_key(*arrays: npt.NDArray[np.generic] | None) -> bytes: ...
def peak_probe(dtype: str, iterations: int) -> tuple[int, float]: ...

def conv2d_forward(
    x: npt.NDArray[np.floating],
    filters: npt.NDArray[np.floating],
    packed: npt.NDArray[np.floating],
    inplace_blocks: int,
    packed_bias: npt.NDArray[np.floating],
    row_src: npt.NDArray[np.intp],
    col_src: npt.NDArray[np.intp],
    col_inner: npt.NDArray[np.intp],
    b_offset: npt.NDArray[np.intp],
    out: npt.NDArray[np.floating],
    stride_w: int,
    kh_count: int,
    kw_count: int,
    out_h: int,
    out_w: int,
    filters_per_group: int,
    rows_per_task: int,
    channels_per_chunk: int,
    fblocks_per_task: int,
    slab_size: int,
    stage_pitch: int,
    scratch: npt.NDArray[np.floating],
    channels_last: bool,
    relu: bool,
    pool: int,
    num_threads: int,
    pointwise: bool = ...,
) -> None: ...
def depthwise_conv2d_forward(
    x: npt.NDArray[np.floating],
    weight: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating] | None,
    row_src: npt.NDArray[np.intp],
    col_src: npt.NDArray[np.intp],
    col_inner: npt.NDArray[np.intp],
    tap_offset: npt.NDArray[np.intp],
    out: npt.NDArray[np.floating],
    multiplier: int,
    taps: int,
    stride_h: int,
    stride_w: int,
    out_h: int,
    out_w: int,
    rows_per_task: int,
    groups_per_task: int,
    stage_row: int,
    slab_size: int,
    scratch: npt.NDArray[np.floating],
    channels_last: bool,
    relu: bool,
    pool: int,
    num_threads: int,
) -> None: ...
