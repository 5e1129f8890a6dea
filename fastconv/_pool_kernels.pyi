# Signatures of the max-pooling kernels (_pool.pxi); each _pool_<isa>.pyi re-exports them.
# Private: called by fastconv.pool.
import numpy as np
import numpy.typing as npt

__all__ = ["ISA", "_set_vector_paths", "max_pool2d_indices", "max_pool2d_values",
           "separable_scratch_size"]

ISA: str

def _set_vector_paths(enabled: bool) -> None: ...

def separable_scratch_size(W: int, C: int, OW: int, kw: int, sw: int, pw: int, dw: int) -> int: ...
def max_pool2d_values(
    x: npt.NDArray[np.floating],  # (B, H, W, C), C-contiguous float32/float64
    out: npt.NDArray[np.floating],  # (B, OH, OW, C), same dtype
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    separable: bool,
    num_threads: int,
) -> None: ...
def max_pool2d_indices(
    x: npt.NDArray[np.floating],  # (B, H, W, C), C-contiguous float32/float64
    out: npt.NDArray[np.floating],  # (B, OH, OW, C), same dtype
    indices: npt.NDArray[np.int64],  # (B, OH, OW, C)
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    num_threads: int,
) -> None: ...
