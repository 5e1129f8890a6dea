# Convolution kernels built for the baseline instruction-set level; the code is in _conv.pxi.
include "_conv.pxi"
