# Max-pooling kernels built for the baseline instruction-set level; the code is in _pool.pxi.
include "_pool.pxi"
