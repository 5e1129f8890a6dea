"""fastconv: fast CPU 2-D convolution, ReLU and max pooling for NumPy arrays.

Typed Cython kernels (OpenMP, no GIL) under a thin, validating NumPy API::

    >>> import numpy as np, fastconv
    >>> image = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    >>> fastconv.correlate2d(image, np.array([[1, 1], [-1, -1]], np.float32))
    array([[-8., -8., -8.],
           [-8., -8., -8.],
           [-8., -8., -8.]], dtype=float32)
"""

from . import layers
from ._config import __version__, show_config
from .activation import relu
from .conv import conv2d, convolve2d, correlate2d, output_size
from .pool import max_pool2d

__all__ = [
    "__version__",
    "conv2d",
    "convolve2d",
    "correlate2d",
    "layers",
    "max_pool2d",
    "output_size",
    "relu",
    "show_config",
]
