# Stub for the avx2 build of _conv.pxi; the signatures are in _conv_kernels.pyi.
from ._conv_kernels import *  # noqa: F403
