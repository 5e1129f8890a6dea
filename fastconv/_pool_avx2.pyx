# Max-pooling kernels built for the avx2 instruction-set level; the code is in _pool.pxi.
include "_pool.pxi"
