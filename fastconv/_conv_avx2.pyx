# Convolution kernels built for the avx2 instruction-set level; the code is in _conv.pxi.
include "_conv.pxi"
