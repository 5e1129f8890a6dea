# Signatures of the ReLU kernels (_activation.pxi); each _activation_<isa>.pyi re-exports them.
# Private: called by fastconv.activation.
import numpy as np
import numpy.typing as npt

ISA: str

def relu(
    x: npt.NDArray[np.floating],  # (n,) C-contiguous float32/float64
    out: npt.NDArray[np.floating],  # (n,) same dtype; may be x itself
    num_threads: int,
) -> None: ...
