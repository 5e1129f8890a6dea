# Convolution kernels built for the avx512 instruction-set level; the code is in _conv.pxi.
include "_conv.pxi"
