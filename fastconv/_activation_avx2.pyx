# ReLU kernels built for the avx2 instruction-set level; the code is in _activation.pxi.
include "_activation.pxi"
