# Stub for a per-ISA build of _conv.pxi (private: called by fastconv.conv).
import numpy as np
import numpy.typing as npt

ISA: str
MR: int
NR_FLOAT32: int
NR_FLOAT64: int

def conv2d_forward(
    x: npt.NDArray[np.floating],
    packed_weight: npt.NDArray[np.floating],
    packed_bias: npt.NDArray[np.floating],
    row_src: npt.NDArray[np.intp],
    col_src: npt.NDArray[np.intp],
    col_inner: npt.NDArray[np.intp],
    out: npt.NDArray[np.floating],
    stride_w: int,
    kh_count: int,
    kw_count: int,
    out_w: int,
    filters_per_group: int,
    pixel_block: int,
    reduction_block: int,
    fblocks_per_task: int,
    channels_last: bool,
    relu: bool,
    num_threads: int,
) -> None: ...
