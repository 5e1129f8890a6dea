# Stub for the avx512 build of _pool.pxi; the signatures are in _pool_kernels.pyi.
from ._pool_kernels import *  # noqa: F403
