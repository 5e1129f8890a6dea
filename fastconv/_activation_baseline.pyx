# ReLU kernels built for the baseline instruction-set level; the code is in _activation.pxi.
include "_activation.pxi"
