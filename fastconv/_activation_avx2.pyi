# Stub for the avx2 build of _activation.pxi; the signatures are in
# _activation_kernels.pyi.
from ._activation_kernels import *  # noqa: F403
