# Stub for the avx512 build of _conv.pxi; the signatures are in _conv_kernels.pyi.
from ._conv_kernels import *  # noqa: F403
