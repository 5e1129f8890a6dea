# ReLU kernels built for the avx512 instruction-set level; the code is in _activation.pxi.
include "_activation.pxi"
