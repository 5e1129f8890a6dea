"""Layer objects over the functional API: Conv2D, ReLU, MaxPool2D and Sequential.

A layer holds its settings (and, for ``Conv2D``, its weights packed once for the kernel), knows
the shape it produces and how it grows the receptive field, and is called like a function::

    >>> import numpy as np
    >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
    >>> net = Sequential([Conv2D.from_shape(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2)])
    >>> net(np.zeros((8, 1, 28, 28), np.float32)).shape
    (8, 4, 14, 14)
    >>> list(net.feature_maps(np.zeros((1, 28, 28), np.float32)))
    ['0:Conv2D', '1:ReLU', '2:MaxPool2D']

Receptive field arithmetic (per axis, the seed's idea made concrete): a layer with effective
kernel extent ``k_eff = dilation * (k - 1) + 1`` and stride ``s`` maps the receptive field ``r``
and the jump ``j`` (distance in input pixels between neighbouring outputs) of its input to
``r_out = r + (k_eff - 1) * j`` and ``j_out = j * s``. A plain input pixel has ``r = j = 1``.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import NamedTuple

import numpy as np

from . import _validation as v
from . import activation as _activation
from . import conv as _conv
from . import pool as _pool

__all__ = ["Layer", "Conv2D", "ReLU", "MaxPool2D", "Sequential", "Summary", "LayerSummary"]


# --------------------------------------------------------------------------------------------
# helpers


def _positive_int(value, name, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _compact(pair):
    """``3`` for ``(3, 3)``, the pair itself otherwise (for reprs and tables)."""
    return pair[0] if pair[0] == pair[1] else tuple(pair)


def _cell(pair):
    """``"3"`` for ``(3, 3)``, ``"3x5"`` otherwise."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _check_shape(input_shape, name="input_shape"):
    """A shape as a tuple of non-negative ints."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"{name} must be a tuple of ints, got {input_shape!r}")
    shape = tuple(input_shape)
    for extent in shape:
        if isinstance(extent, (bool, np.bool_)) or not isinstance(extent, (Integral, np.integer)):
            raise TypeError(f"{name} must be a tuple of ints, got {input_shape!r}")
        if extent < 0:
            raise ValueError(f"{name} must not have negative extents, got {input_shape!r}")
    return tuple(int(extent) for extent in shape)


def _split_shape(input_shape, layout):
    """``(N or None, C, H, W)`` of a 3-D or 4-D image shape in ``layout``."""
    layout = v.check_layout(layout)
    shape = _check_shape(input_shape)
    if len(shape) not in (3, 4):
        dims = "(C, H, W) or (N, C, H, W)" if layout == "NCHW" else "(H, W, C) or (N, H, W, C)"
        raise ValueError(f"input_shape must be 3-D or 4-D {dims} for layout={layout!r}, "
                         f"got {shape}")
    batch = shape[0] if len(shape) == 4 else None
    image = shape[-3:]
    channels, height, width = image if layout == "NCHW" else (image[2], image[0], image[1])
    return batch, channels, height, width


def _join_shape(batch, channels, height, width, layout):
    image = (channels, height, width) if layout == "NCHW" else (height, width, channels)
    return image if batch is None else (batch,) + image


# --------------------------------------------------------------------------------------------
# layers


class Layer:
    """Base class of fastconv layers.

    A layer is called as ``layer(x, layout="NCHW", num_threads=None)`` and describes itself for
    :meth:`Sequential.summary` through :meth:`output_shape`, :attr:`num_parameters`,
    :attr:`kernel_extent` and :attr:`stride`. Subclasses that do not change the spatial grid
    (like :class:`ReLU`) keep the defaults: extent ``(1, 1)``, stride ``(1, 1)``.
    """

    #: Step between neighbouring outputs, in input pixels, as ``(h, w)``.
    stride = (1, 1)

    def __call__(self, x, *, layout="NCHW", num_threads=None):
        raise NotImplementedError

    def output_shape(self, input_shape, *, layout="NCHW"):
        """Shape of the output for an input of ``input_shape`` (3-D or 4-D, in ``layout``)."""
        raise NotImplementedError

    @property
    def num_parameters(self):
        """Number of trainable scalars (weights and biases)."""
        return 0

    @property
    def kernel_extent(self):
        """Input pixels one output sees along ``(h, w)``: ``dilation * (k - 1) + 1``."""
        return (1, 1)

    def receptive_field(self, rf=(1, 1), jump=(1, 1)):
        """Receptive field and jump after this layer, given those of its input.

        Parameters
        ----------
        rf, jump : int or (int, int), default 1
            Receptive field (in pixels of the network's input) of one input position of this
            layer, and the distance in network-input pixels between neighbouring positions.

        Returns
        -------
        rf_out, jump_out : (int, int)
            ``rf + (kernel_extent - 1) * jump`` and ``jump * stride`` per axis.

        Examples
        --------
        >>> from fastconv.layers import Conv2D, MaxPool2D
        >>> MaxPool2D(2).receptive_field((3, 3), (1, 1))
        ((4, 4), (2, 2))
        >>> Conv2D.from_shape(1, 1, 3).receptive_field((4, 4), (2, 2))
        ((8, 8), (2, 2))
        """
        rf = v.int_pair(rf, "rf", 1)
        jump = v.int_pair(jump, "jump", 1)
        extent, stride = self.kernel_extent, self.stride
        rf_out = tuple(r + (k - 1) * j for r, k, j in zip(rf, extent, jump))
        jump_out = tuple(j * s for j, s in zip(jump, stride))
        return rf_out, jump_out


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation, like ``torch.nn.Conv2d``) with fixed weights.

    The weights and bias are copied and packed for the kernel once, at construction; every
    call reuses the packing (per dtype). Calling the layer is ``fastconv.conv2d`` with the
    layer's settings.

    Parameters
    ----------
    weight : array_like of shape (F, C // groups, KH, KW)
        The filters. Copied; :attr:`weight` is a read-only view of the copy.
    bias : array_like of shape (F,), optional
    stride, dilation : int or (int, int), default 1
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same", default 0
        As in :func:`fastconv.conv2d` ("same" gives ``ceil(H / stride)`` outputs).
    groups : int, default 1
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
    activation : {None, "relu"}, default None
        Applied in the kernel after the bias.

    Attributes
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : (int, int)
    padding : str or tuple
        "valid", "same", ``(ph, pw)`` or ``(top, bottom, left, right)``.
    groups : int
    padding_mode : str
    activation : None or str

    See Also
    --------
    fastconv.conv2d, Conv2D.from_shape

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Conv2D
    >>> w = np.array([[[[1, 1], [-1, -1]]], [[[0, 1], [1, 0]]]], dtype=np.float32)
    >>> conv = Conv2D(w)
    >>> conv
    Conv2D(1, 2, kernel_size=(2, 2), stride=(1, 1), bias=False)
    >>> image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)   # (C, H, W)
    >>> conv(image)[1]
    array([[ 7.,  9., 11.],
           [15., 17., 19.],
           [23., 25., 27.]], dtype=float32)
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", activation=None):
        weight = v.as_array(weight, "weight")
        if weight.ndim != 4:
            raise ValueError(f"weight must be 4-D (F, C // groups, KH, KW), got shape "
                             f"{weight.shape}")
        if 0 in weight.shape:
            raise ValueError(f"weight must have at least one filter, channel and tap, got shape "
                             f"{weight.shape}")
        self.stride = v.int_pair(stride, "stride", 1)
        self.dilation = v.int_pair(dilation, "dilation", 1)
        self.padding_mode = v.check_choice(padding_mode, "padding_mode", _conv.PADDING_MODES)
        if activation not in _conv.ACTIVATIONS:
            raise ValueError(f"activation must be None or 'relu'; got {activation!r}")
        self.activation = activation
        # Validate the padding form now (with a dummy geometry), keep it in the user's form.
        _conv._resolve_padding(padding, (1, 1), (1, 1), (1, 1))
        if isinstance(padding, str):
            self.padding = padding
        elif isinstance(padding, (tuple, list)):
            self.padding = tuple(int(p) for p in padding)
        else:
            self.padding = (int(padding), int(padding))
        # Checks groups, bias shape and dtypes; copies both arrays read-only.
        self._packed = _conv._prepack_weights(weight, bias, groups)
        self.groups = self._packed.groups
        self.out_channels, in_per_group, kh, kw = weight.shape
        self.in_channels = in_per_group * self.groups
        self.kernel_size = (kh, kw)

    @classmethod
    def from_shape(cls, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                   dilation=1, groups=1, padding_mode="zeros", bias=True, activation=None,
                   seed=None, dtype=np.float32):
        """A layer with He (Kaiming normal, fan-in) initialised weights and zero bias.

        Weights are drawn from ``N(0, 2 / fan_in)`` with ``fan_in = in_channels // groups * KH
        * KW`` (He et al. 2015, for ReLU networks), from ``numpy.random.default_rng(seed)``:
        the same seed gives the same weights on every machine.

        Parameters
        ----------
        in_channels, out_channels : int
            Both divisible by ``groups``.
        kernel_size : int or (int, int)
        stride, padding, dilation, groups, padding_mode, activation
            As in :class:`Conv2D`.
        bias : bool, default True
            Whether the layer has a (zero-initialised) bias.
        seed : None, int or numpy.random.Generator
        dtype : {numpy.float32, numpy.float64}, default numpy.float32

        Returns
        -------
        Conv2D

        Examples
        --------
        >>> from fastconv.layers import Conv2D
        >>> conv = Conv2D.from_shape(3, 64, 3, padding="same", seed=0)
        >>> conv.weight.shape, conv.num_parameters
        ((64, 3, 3, 3), 1792)
        """
        in_channels = _positive_int(in_channels, "in_channels")
        out_channels = _positive_int(out_channels, "out_channels")
        groups = _positive_int(groups, "groups")
        kh, kw = v.int_pair(kernel_size, "kernel_size", 1)
        bias = _check_bool(bias, "bias")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels = {in_channels} and out_channels = {out_channels} "
                             f"must both be divisible by groups = {groups}")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        rng = np.random.default_rng(seed)
        fan_in = in_channels // groups * kh * kw
        shape = (out_channels, in_channels // groups, kh, kw)
        weight = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)
        return cls(weight, np.zeros(out_channels, dtype) if bias else None, stride=stride,
                   padding=padding, dilation=dilation, groups=groups,
                   padding_mode=padding_mode, activation=activation)

    @property
    def weight(self):
        """The filters, shape (F, C // groups, KH, KW), read-only."""
        return self._packed.weight

    @property
    def bias(self):
        """The bias, shape (F,), read-only; None without bias."""
        return self._packed.bias

    @property
    def num_parameters(self):
        return self.weight.size + (0 if self.bias is None else self.bias.size)

    @property
    def kernel_extent(self):
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    def __call__(self, x, *, layout="NCHW", out=None, num_threads=None):
        """``fastconv.conv2d(x, ...)`` with this layer's weights and settings.

        Parameters
        ----------
        x : array_like of shape (N, C, H, W), (C, H, W), or NHWC / HWC with ``layout="NHWC"``
        layout : {"NCHW", "NHWC"}, default "NCHW"
        out : ndarray, optional
            Exact shape and dtype of the result, C-contiguous.
        num_threads : int, optional

        Returns
        -------
        ndarray of shape :meth:`output_shape` ``(x.shape)``
        """
        return self._forward(x, layout, out, num_threads, self.activation)

    def _forward(self, x, layout, out, num_threads, activation, pool=1):
        return _conv._conv2d(x, self._packed, None, self.stride, self.padding, self.dilation,
                             self.groups, self.padding_mode, layout, activation, out,
                             num_threads, pool)

    def output_shape(self, input_shape, *, layout="NCHW"):
        """Output shape for an input of ``input_shape`` (3-D or 4-D, in ``layout``).

        Examples
        --------
        >>> from fastconv.layers import Conv2D
        >>> Conv2D.from_shape(3, 8, 3, stride=2, padding="same").output_shape((1, 3, 7, 7))
        (1, 8, 4, 4)
        """
        batch, channels, height, width = _split_shape(input_shape, layout)
        if channels != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, got "
                             f"input_shape {tuple(input_shape)} (C = {channels}, "
                             f"layout={layout!r})")
        _, out_h, out_w = _conv._output_geometry(
            height, width, self.kernel_size, self.stride, self.dilation, self.padding,
            f"input_shape = {tuple(input_shape)}, {self!r}")
        return _join_shape(batch, self.out_channels, out_h, out_w, layout)

    def __repr__(self):
        parts = [f"{self.in_channels}", f"{self.out_channels}",
                 f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if self.padding not in ((0, 0), (0, 0, 0, 0), "valid"):
            parts.append(f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        if self.activation is not None:
            parts.append(f"activation={self.activation!r}")
        return f"Conv2D({', '.join(parts)})"


class ReLU(Layer):
    """Rectified linear unit, ``max(x, 0)`` elementwise (NaN stays NaN).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import ReLU
    >>> ReLU()(np.array([[[-1.0, 2.0]]]))
    array([[[0., 2.]]])
    """

    def __call__(self, x, *, layout="NCHW", out=None, num_threads=None):
        """``fastconv.relu(x)``; ``layout`` is checked but does not matter (elementwise)."""
        v.check_layout(layout)
        return _activation.relu(x, out=out, num_threads=num_threads)

    def output_shape(self, input_shape, *, layout="NCHW"):
        """The input shape (any number of dimensions)."""
        v.check_layout(layout)
        return _check_shape(input_shape)

    def __repr__(self):
        return "ReLU()"


class MaxPool2D(Layer):
    """2-D max pooling layer, like ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit -inf padding, at most half the effective kernel extent.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Round the output size up (a window starting in the right/bottom padding is dropped).

    See Also
    --------
    fastconv.max_pool2d

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import MaxPool2D
    >>> pool = MaxPool2D(2)
    >>> pool
    MaxPool2D(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    >>> pool(np.arange(16.0).reshape(1, 4, 4))
    array([[[ 5.,  7.],
            [13., 15.]]])
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.kernel_size = v.int_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else v.int_pair(stride, "stride", 1)
        self.padding = v.int_pair(padding, "padding", 0)
        self.dilation = v.int_pair(dilation, "dilation", 1)
        self.ceil_mode = _check_bool(ceil_mode, "ceil_mode")
        extent = self.kernel_extent
        if self.padding[0] > extent[0] // 2 or self.padding[1] > extent[1] // 2:
            raise ValueError(f"padding should be at most half of the effective kernel size, got "
                             f"padding={padding!r} with kernel_size={kernel_size!r}, "
                             f"dilation={dilation!r} (effective kernel {extent})")

    @property
    def kernel_extent(self):
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    def __call__(self, x, *, layout="NCHW", out=None, num_threads=None):
        """``fastconv.max_pool2d(x, ...)`` with this layer's settings."""
        return _pool.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                ceil_mode=self.ceil_mode, layout=layout, out=out,
                                num_threads=num_threads)

    def output_shape(self, input_shape, *, layout="NCHW"):
        """Output shape for an input of ``input_shape`` (3-D or 4-D, in ``layout``).

        Examples
        --------
        >>> from fastconv.layers import MaxPool2D
        >>> MaxPool2D(3, stride=2, ceil_mode=True).output_shape((64, 14, 14), layout="NCHW")
        (64, 7, 7)
        """
        batch, channels, height, width = _split_shape(input_shape, layout)
        extent = self.kernel_extent
        if any(n + 2 * p < k for n, p, k in zip((height, width), self.padding, extent)):
            raise ValueError(f"Calculated padded input size per channel: "
                             f"({height + 2 * self.padding[0]} x {width + 2 * self.padding[1]}). "
                             f"Kernel size (dilated): ({extent[0]} x {extent[1]}). Kernel size "
                             f"can't be greater than the padded input size "
                             f"(input_shape = {tuple(input_shape)}, {self!r})")
        out_h, out_w = _conv.output_size((height, width), self.kernel_size, self.stride,
                                         self.padding, self.dilation, self.ceil_mode)
        return _join_shape(batch, channels, out_h, out_w, layout)

    def __repr__(self):
        return (f"MaxPool2D(kernel_size={_compact(self.kernel_size)}, "
                f"stride={_compact(self.stride)}, padding={_compact(self.padding)}, "
                f"dilation={_compact(self.dilation)}, ceil_mode={self.ceil_mode})")


# --------------------------------------------------------------------------------------------
# Sequential and its summary


class LayerSummary(NamedTuple):
    """One row of :meth:`Sequential.summary`."""

    name: str
    output_shape: tuple
    num_parameters: int
    receptive_field: tuple  # (h, w), in pixels of the network's input
    jump: tuple  # (h, w): input pixels between neighbouring outputs (the effective stride)


class Summary:
    """What :meth:`Sequential.summary` returns: the rows, and a table when printed.

    Attributes
    ----------
    input_shape : tuple
    layout : str
    rows : tuple of LayerSummary
        One per layer, in order.
    total_parameters : int
    """

    def __init__(self, input_shape, layout, rows):
        self.input_shape = tuple(input_shape)
        self.layout = layout
        self.rows = tuple(rows)
        self.total_parameters = sum(row.num_parameters for row in self.rows)

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def table(self):
        """The summary as an aligned text table (one line per layer, an input line first)."""
        header = ("layer", f"output shape ({self.layout})", "params", "receptive field", "jump")
        lines = [("input", str(self.input_shape), "0", "1", "1")]
        lines += [(row.name, str(row.output_shape), f"{row.num_parameters:,}",
                   _cell(row.receptive_field), _cell(row.jump)) for row in self.rows]
        widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
        align = ("<", "<", ">", ">", ">")

        def fmt(line):
            return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(line, align, widths)).rstrip()

        rule = "-" * len(fmt(tuple("-" * w for w in widths)))
        return "\n".join([fmt(header), rule] + [fmt(line) for line in lines]
                         + [rule, f"total parameters: {self.total_parameters:,}"])

    def __str__(self):
        return self.table()

    def __repr__(self):
        return self.table()


def _fusable_pool(layer):
    """A MaxPool2D the conv kernel can apply from its staged tile: square, non-overlapping
    windows (kernel == stride), no padding, no dilation, floor mode."""
    return (type(layer) is MaxPool2D and layer.kernel_size[0] == layer.kernel_size[1] >= 2
            and layer.stride == layer.kernel_size and layer.padding == (0, 0)
            and layer.dilation == (1, 1) and not layer.ceil_mode)


class Sequential(Layer):
    """Layers applied one after the other.

    Parameters
    ----------
    layers : iterable of Layer, or dict mapping names to Layer
        With a dict, the names appear in :meth:`feature_maps`, :meth:`summary` and the repr;
        otherwise each layer is named by its class.

    Notes
    -----
    Calling the stack fuses every ``Conv2D`` directly followed by ``ReLU`` into one
    ``conv2d(..., activation="relu")`` call (same bits as the two steps, one pass over memory).
    :meth:`feature_maps` runs every layer separately so that each output is available.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
    >>> net = Sequential([Conv2D.from_shape(3, 8, 3, seed=0), ReLU(), MaxPool2D(2),
    ...                   Conv2D.from_shape(8, 16, 3, seed=1)])
    >>> net(np.zeros((2, 3, 32, 32), np.float32)).shape
    (2, 16, 13, 13)
    >>> for row in net.summary((2, 3, 32, 32)):
    ...     print(row.name, row.output_shape, row.receptive_field, row.jump)
    0:Conv2D (2, 8, 30, 30) (3, 3) (1, 1)
    1:ReLU (2, 8, 30, 30) (3, 3) (1, 1)
    2:MaxPool2D (2, 8, 15, 15) (4, 4) (2, 2)
    3:Conv2D (2, 16, 13, 13) (8, 8) (2, 2)
    """

    def __init__(self, layers):
        if isinstance(layers, Layer) or isinstance(layers, (str, bytes)) or not hasattr(
                layers, "__iter__"):
            raise TypeError(f"layers must be a list of layers or a dict of named layers, got "
                            f"{type(layers).__name__}")
        if isinstance(layers, dict):
            items = list(layers.items())
            for name, _ in items:
                if not isinstance(name, str) or not name:
                    raise TypeError(f"layer names must be non-empty strings, got {name!r}")
            self._names_given = True
        else:
            items = [(type(layer).__name__, layer) for layer in layers]
            self._names_given = False
        for index, (_, layer) in enumerate(items):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{index}] is a {type(layer).__name__}, not a fastconv "
                                f"layer (Conv2D, ReLU, MaxPool2D, Sequential or a Layer subclass)")
        self._names = [name for name, _ in items]
        self._layers = [layer for _, layer in items]

    @property
    def layers(self):
        """The layers, as a tuple."""
        return tuple(self._layers)

    @property
    def names(self):
        """The keys of :meth:`feature_maps`: ``"<index>:<name>"``, e.g. ``"0:Conv2D"``."""
        return tuple(f"{index}:{name}" for index, name in enumerate(self._names))

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, index):
        """A layer for an int index; a new Sequential (same layer objects) for a slice."""
        if isinstance(index, slice):
            items = list(zip(self._names, self._layers))[index]
            return Sequential(dict(items) if self._names_given else [layer for _, layer in items])
        return self._layers[index]

    def __repr__(self):
        lines = ["Sequential("]
        for index, (name, layer) in enumerate(zip(self._names, self._layers)):
            label = name if self._names_given else str(index)
            body = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({label}): {body}")
        return "\n".join(lines) + "\n)"

    @property
    def num_parameters(self):
        return sum(layer.num_parameters for layer in self._layers)

    @property
    def kernel_extent(self):
        """Receptive field of one output of the whole stack, ``(h, w)``."""
        return self.receptive_field()[0]

    @property
    def stride(self):
        """Effective stride (jump) of the whole stack, ``(h, w)``."""
        return self.receptive_field()[1]

    def receptive_field(self, rf=(1, 1), jump=(1, 1)):
        rf, jump = v.int_pair(rf, "rf", 1), v.int_pair(jump, "jump", 1)
        for layer in self._layers:
            rf, jump = layer.receptive_field(rf, jump)
        return rf, jump

    def __call__(self, x, *, layout="NCHW", num_threads=None):
        """Run the stack on a batch (N, C, H, W) or one image (C, H, W) (NHWC with ``layout``).

        A ``Conv2D`` directly followed by ``ReLU`` and/or a ``MaxPool2D`` with non-overlapping
        square windows (kernel == stride, no padding or dilation, floor mode) runs as one
        fused kernel call: bias, ReLU and pooling are applied to each tile while it is in
        cache, and the full-resolution map is never written. The bits are the same as
        running the layers one by one.
        """
        v.check_layout(layout)
        layers = self._layers
        index = 0
        while index < len(layers):
            layer = layers[index]
            if type(layer) is not Conv2D:
                x = layer(x, layout=layout, num_threads=num_threads)
                index += 1
                continue
            activation, index = layer.activation, index + 1
            if index < len(layers) and type(layers[index]) is ReLU and activation in (None, "relu"):
                activation, index = "relu", index + 1
            pool = 1
            if index < len(layers) and _fusable_pool(layers[index]):
                pool, index = layers[index].kernel_size[0], index + 1
            x = layer._forward(x, layout, None, num_threads, activation, pool)
        return x

    def feature_maps(self, x, *, layout="NCHW", num_threads=None):
        """Every layer's output, in order, keyed ``"<index>:<name>"``.

        Parameters
        ----------
        x : array_like of shape (N, C, H, W) or (C, H, W) (NHWC / HWC with ``layout="NHWC"``)
        layout : {"NCHW", "NHWC"}, default "NCHW"
        num_threads : int, optional

        Returns
        -------
        dict of str to ndarray
            Insertion-ordered: ``"0:Conv2D"``, ``"1:ReLU"``, ... (with a dict of named layers,
            ``"0:<name>"``, ...). Values have the layer's output shape; the last one equals
            ``self(x)``.

        Examples
        --------
        >>> import numpy as np
        >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
        >>> net = Sequential([Conv2D.from_shape(1, 2, 3, seed=0), ReLU(), MaxPool2D(2)])
        >>> {name: fmap.shape for name, fmap in net.feature_maps(np.ones((1, 10, 10))).items()}
        {'0:Conv2D': (2, 8, 8), '1:ReLU': (2, 8, 8), '2:MaxPool2D': (2, 4, 4)}
        """
        v.check_layout(layout)
        maps = {}
        for name, layer in zip(self.names, self._layers):
            x = layer(x, layout=layout, num_threads=num_threads)
            maps[name] = x
        return maps

    def output_shape(self, input_shape, *, layout="NCHW"):
        """Shape of the stack's output for an input of ``input_shape``."""
        v.check_layout(layout)
        shape = _check_shape(input_shape)
        for layer in self._layers:
            shape = layer.output_shape(shape, layout=layout)
        return shape

    def summary(self, input_shape, *, layout="NCHW"):
        """Per-layer output shape, parameter count, receptive field and jump.

        Nothing is computed on data: shapes come from :meth:`Layer.output_shape` and the
        receptive field from ``r_out = r_in + (k_eff - 1) * j_in``, ``j_out = j_in * stride``
        (per axis, starting from ``r = j = 1`` at the input).

        Parameters
        ----------
        input_shape : tuple of int
            (N, C, H, W) or (C, H, W) (NHWC / HWC with ``layout="NHWC"``).
        layout : {"NCHW", "NHWC"}, default "NCHW"

        Returns
        -------
        Summary
            Prints as a table; ``.rows`` holds one :class:`LayerSummary` per layer.

        Examples
        --------
        >>> from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential
        >>> net = Sequential([Conv2D.from_shape(1, 6, 3, padding=1), ReLU(), MaxPool2D(2)])
        >>> print(net.summary((1, 1, 32, 32)))
        layer        output shape (NCHW)  params  receptive field  jump
        ---------------------------------------------------------------
        input        (1, 1, 32, 32)            0                1     1
        0:Conv2D     (1, 6, 32, 32)           60                3     1
        1:ReLU       (1, 6, 32, 32)            0                3     1
        2:MaxPool2D  (1, 6, 16, 16)            0                4     2
        ---------------------------------------------------------------
        total parameters: 60
        """
        v.check_layout(layout)
        shape = _check_shape(input_shape)
        _split_shape(shape, layout)
        rf, jump = (1, 1), (1, 1)
        rows = []
        for name, layer in zip(self.names, self._layers):
            shape = layer.output_shape(shape, layout=layout)
            rf, jump = layer.receptive_field(rf, jump)
            rows.append(LayerSummary(name, shape, layer.num_parameters, rf, jump))
        return Summary(_check_shape(input_shape), layout, rows)
