"""fastconv.layers: Conv2D, ReLU, MaxPool2D and Sequential against the functional API."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import fastconv
from fastconv import conv as conv_module
from fastconv import layers as layers_module
from fastconv.layers import Conv2D, Layer, MaxPool2D, ReLU, Sequential


def bits(a):
    """The raw bytes of an array, to compare results bit for bit (incl. -0.0 and NaN)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8)


def to_layout(x_nchw, layout):
    return x_nchw if layout == "NCHW" else np.ascontiguousarray(np.moveaxis(x_nchw, -3, -1))


# --------------------------------------------------------------------------------------------
# Conv2D

CONV_CASES = [
    dict(),
    dict(stride=2),
    dict(stride=(1, 2), padding=1),
    dict(padding="same"),
    dict(padding="same", stride=2, dilation=2),
    dict(padding="valid", dilation=(2, 1)),
    dict(padding=(0, 2, 1, 0)),
    dict(padding=(1, 2)),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="replicate"),
    dict(padding="same", padding_mode="circular"),
    dict(groups=2),
    dict(groups=4, padding=1),  # depthwise
    dict(activation="relu", padding=1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: repr(c) if c else "defaults")
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_layer_equals_functional(rng, case, use_bias, layout):
    groups = case.get("groups", 1)
    weight = rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32) if use_bias else None
    x = to_layout(rng.standard_normal((2, 4, 9, 8)).astype(np.float32), layout)
    layer = Conv2D(weight, bias, **case)
    expected = fastconv.conv2d(x, weight, bias, layout=layout, **case)
    actual = layer(x, layout=layout)
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(bits(actual), bits(expected))
    assert actual.shape == layer.output_shape(x.shape, layout=layout)
    # the prepacked path, called directly
    packed = conv_module._prepack_weights(weight, bias, groups)
    kwargs = {k: val for k, val in case.items() if k != "groups"}
    direct = fastconv.conv2d(x, packed, None, groups=groups, layout=layout, **kwargs)
    np.testing.assert_array_equal(bits(actual), bits(direct))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_layer_dtypes_and_unbatched(rng, dtype):
    weight = rng.standard_normal((3, 2, 2, 3)).astype(dtype)
    layer = Conv2D(weight, np.arange(3, dtype=dtype), padding=1)
    image = rng.standard_normal((2, 7, 6)).astype(dtype)  # (C, H, W)
    out = layer(image)
    assert out.shape == layer.output_shape(image.shape) == (3, 8, 6)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, layer(image[None])[0])
    # mixed dtypes follow the functional API (uint8 image, float weights)
    pixels = rng.integers(0, 255, (1, 2, 5, 5), dtype=np.uint8)
    np.testing.assert_array_equal(layer(pixels), fastconv.conv2d(pixels, weight,
                                                                 np.arange(3, dtype=dtype),
                                                                 padding=1))
    assert layer(pixels).dtype == dtype


def test_conv2d_layer_seed_example():
    weight = np.array([[[[1, 1], [-1, -1]]], [[[0, 1], [1, 0]]]], np.float32)
    maps = Conv2D(weight)(np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(maps[0, 0], np.full((3, 3), -8.0))
    np.testing.assert_array_equal(maps[0, 1], [[7, 9, 11], [15, 17, 19], [23, 25, 27]])


def test_conv2d_layer_out_and_num_threads(rng):
    layer = Conv2D(rng.standard_normal((5, 3, 3, 3)), padding="same")
    x = rng.standard_normal((2, 3, 10, 10))
    out = np.empty((2, 5, 10, 10))
    assert layer(x, out=out) is out
    for threads in (1, 2, 4):
        np.testing.assert_array_equal(bits(layer(x, num_threads=threads)), bits(out))


def test_conv2d_layer_packs_once_per_dtype(rng, monkeypatch):
    """Repeated calls reuse the packed weights; a new dtype packs once more."""
    calls = []
    original = conv_module._pack

    def counting_pack(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(conv_module, "_pack", counting_pack)
    layer = Conv2D(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    x32 = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    first = layer(x32)
    for _ in range(3):
        np.testing.assert_array_equal(layer(x32), first)
    assert len(calls) == 1
    layer(x32.astype(np.float64))
    layer(x32.astype(np.float64))
    assert len(calls) == 2


def test_conv2d_layer_copies_its_weights(rng):
    weight = rng.standard_normal((2, 1, 3, 3))
    bias = np.ones(2)
    layer = Conv2D(weight, bias)
    x = rng.standard_normal((1, 1, 5, 5))
    before = layer(x)
    weight[...] = 0
    bias[...] = 0
    np.testing.assert_array_equal(layer(x), before)
    assert not layer.weight.flags.writeable and not layer.bias.flags.writeable
    with pytest.raises(ValueError):
        layer.weight[0, 0, 0, 0] = 1.0


def test_conv2d_attributes_and_repr():
    layer = Conv2D(np.zeros((8, 2, 3, 5), np.float32), np.zeros(8), stride=2, padding="same",
                   dilation=(1, 2), groups=2, padding_mode="reflect", activation="relu")
    assert (layer.in_channels, layer.out_channels) == (4, 8)
    assert layer.kernel_size == (3, 5) and layer.stride == (2, 2) and layer.dilation == (1, 2)
    assert layer.kernel_extent == (3, 9)
    assert layer.num_parameters == 8 * 2 * 3 * 5 + 8
    assert repr(layer) == ("Conv2D(4, 8, kernel_size=(3, 5), stride=(2, 2), padding='same', "
                           "dilation=(1, 2), groups=2, padding_mode='reflect', "
                           "activation='relu')")
    plain = Conv2D(np.zeros((1, 1, 2, 2)))
    assert repr(plain) == "Conv2D(1, 1, kernel_size=(2, 2), stride=(1, 1), bias=False)"
    assert plain.num_parameters == 4
    assert Conv2D(np.zeros((1, 1, 2, 2)), padding=1).padding == (1, 1)


def test_from_shape_is_seeded_he_normal():
    a = Conv2D.from_shape(64, 256, 3, seed=0)
    b = Conv2D.from_shape(64, 256, 3, seed=0)
    c = Conv2D.from_shape(64, 256, 3, seed=1)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    assert a.weight.shape == (256, 64, 3, 3) and a.weight.dtype == np.float32
    np.testing.assert_array_equal(a.bias, np.zeros(256, np.float32))
    expected_std = math.sqrt(2.0 / (64 * 3 * 3))
    w = a.weight.astype(np.float64)
    assert abs(w.std() / expected_std - 1) < 0.02  # 147456 draws: ~0.2 % standard error
    assert abs(w.mean()) < 0.05 * expected_std
    # the generator is numpy's default_rng: the draw is reproducible from the seed alone
    reference = np.random.default_rng(0).standard_normal((256, 64, 3, 3)) * expected_std
    np.testing.assert_array_equal(a.weight, reference.astype(np.float32))


def test_from_shape_options():
    layer = Conv2D.from_shape(8, 4, (3, 1), groups=2, bias=False, dtype=np.float64, seed=3,
                              stride=2, padding="same", activation="relu")
    assert layer.weight.shape == (4, 4, 3, 1) and layer.weight.dtype == np.float64
    assert layer.bias is None and layer.groups == 2 and layer.activation == "relu"
    fan_in = 4 * 3 * 1  # in_channels // groups * KH * KW
    draws = Conv2D.from_shape(8, 400, (3, 1), groups=2, seed=3).weight.astype(np.float64)
    assert abs(draws.std() / math.sqrt(2.0 / fan_in) - 1) < 0.05
    generator_seeded = Conv2D.from_shape(1, 2, 2, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(generator_seeded.weight,
                                  Conv2D.from_shape(1, 2, 2, seed=5).weight)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), ValueError, "divisible"),
    (dict(in_channels=0, out_channels=4, kernel_size=3), ValueError, "in_channels"),
    (dict(in_channels=2, out_channels=4, kernel_size=0), ValueError, "kernel_size"),
    (dict(in_channels=2.0, out_channels=4, kernel_size=3), TypeError, "in_channels"),
    (dict(in_channels=2, out_channels=4, kernel_size=3, dtype=np.int32), TypeError, "dtype"),
    (dict(in_channels=2, out_channels=4, kernel_size=3, bias="yes"), TypeError, "bias"),
    (dict(in_channels=2, out_channels=4, kernel_size=3, padding=-1), ValueError, "padding"),
])
def test_from_shape_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Conv2D.from_shape(**kwargs)


W = np.zeros((4, 2, 3, 3), np.float32)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((np.zeros((4, 2, 3)),), {}, ValueError, "4-D"),
    ((np.zeros((4, 2, 0, 3)),), {}, ValueError, "weight"),
    ((W, np.zeros(3)), {}, ValueError, "bias"),
    ((W, np.zeros((4, 1))), {}, ValueError, "bias"),
    ((W,), dict(groups=3), ValueError, "groups"),
    ((W,), dict(groups=0), ValueError, "groups"),
    ((W,), dict(stride=0), ValueError, "stride"),
    ((W,), dict(stride=(1, 2, 3)), ValueError, "stride"),
    ((W,), dict(dilation=0), ValueError, "dilation"),
    ((W,), dict(padding=-1), ValueError, "padding"),
    ((W,), dict(padding=(1, 2, 3)), ValueError, "padding"),
    ((W,), dict(padding="full"), ValueError, "padding"),
    ((W,), dict(padding=1.5), TypeError, "padding"),
    ((W,), dict(padding_mode="mirror"), ValueError, "padding_mode"),
    ((W,), dict(activation="tanh"), ValueError, "activation"),
    ((W.astype(np.complex64),), {}, TypeError, "weight"),
    (("weights",), {}, TypeError, "weight"),
    ((W, np.array(["a"] * 4)), {}, TypeError, "bias"),
])
def test_conv2d_rejects_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Conv2D(*args, **kwargs)


def test_conv2d_call_errors_come_from_conv2d(rng):
    layer = Conv2D(W)
    with pytest.raises(ValueError, match="channels"):
        layer(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="layout"):
        layer(np.zeros((1, 2, 5, 5), np.float32), layout="CHWN")
    with pytest.raises(ValueError, match="Kernel size"):
        layer(np.zeros((1, 2, 2, 2), np.float32))


# --------------------------------------------------------------------------------------------
# ReLU and MaxPool2D


def test_relu_layer_equals_function(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[0, 0, 0, :2] = [np.nan, -0.0]
    layer = ReLU()
    np.testing.assert_array_equal(bits(layer(x)), bits(fastconv.relu(x)))
    np.testing.assert_array_equal(bits(layer(x, layout="NHWC")), bits(fastconv.relu(x)))
    out = np.empty_like(x)
    assert layer(x, out=out) is out
    assert repr(layer) == "ReLU()" and layer.num_parameters == 0
    assert layer.output_shape((2, 3, 4, 5)) == (2, 3, 4, 5)
    assert layer.receptive_field((5, 5), (2, 2)) == ((5, 5), (2, 2))
    with pytest.raises(ValueError, match="layout"):
        layer(x, layout="nchw")


POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, padding=1, dilation=2),
    dict(kernel_size=2, stride=3, ceil_mode=True, padding=1),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=repr)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_layer_equals_function(rng, case, layout):
    x = to_layout(rng.standard_normal((2, 3, 9, 8)), layout)
    layer = MaxPool2D(**case)
    kernel_size = case["kernel_size"]
    kwargs = {k: val for k, val in case.items() if k not in ("kernel_size", "ceil_mode")}
    expected = fastconv.max_pool2d(x, kernel_size, ceil_mode=case.get("ceil_mode", False),
                                   layout=layout, **kwargs)
    actual = layer(x, layout=layout)
    np.testing.assert_array_equal(bits(actual), bits(expected))
    assert actual.shape == layer.output_shape(x.shape, layout=layout)
    unbatched = layer(x[1], layout=layout)
    np.testing.assert_array_equal(unbatched, expected[1])
    assert unbatched.shape == layer.output_shape(x[1].shape, layout=layout)


def test_max_pool_attributes_and_repr():
    pool = MaxPool2D(3)
    assert pool.stride == (3, 3) and pool.padding == (0, 0) and pool.num_parameters == 0
    assert repr(pool) == ("MaxPool2D(kernel_size=3, stride=3, padding=0, dilation=1, "
                          "ceil_mode=False)")
    pool = MaxPool2D((2, 3), stride=1, padding=(1, 0), dilation=2, ceil_mode=True)
    assert pool.kernel_extent == (3, 5)
    assert repr(pool) == ("MaxPool2D(kernel_size=(2, 3), stride=1, padding=(1, 0), dilation=2, "
                          "ceil_mode=True)")
    assert pool.receptive_field() == ((3, 5), (1, 1))


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((0,), {}, ValueError, "kernel_size"),
    (((2, 2, 2),), {}, ValueError, "kernel_size"),
    (("2",), {}, TypeError, "kernel_size"),
    ((2,), dict(stride=0), ValueError, "stride"),
    ((2,), dict(padding=-1), ValueError, "padding"),
    ((2,), dict(padding=2), ValueError, "half"),
    ((3,), dict(padding=(1, 2)), ValueError, "half"),
    ((2,), dict(dilation=0), ValueError, "dilation"),
    ((2,), dict(ceil_mode="yes"), TypeError, "ceil_mode"),
])
def test_max_pool_rejects_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        MaxPool2D(*args, **kwargs)


def test_max_pool_padding_limit_uses_effective_kernel():
    MaxPool2D(2, padding=1, dilation=2)  # effective kernel 3: padding 1 is allowed


# --------------------------------------------------------------------------------------------
# output_shape


@pytest.mark.parametrize("layer", [
    Conv2D(np.ones((3, 2, 3, 3))),
    Conv2D(np.ones((3, 2, 3, 3)), stride=2, padding="same"),
    Conv2D(np.ones((3, 2, 4, 2)), stride=(2, 3), padding="same", dilation=(1, 2)),
    Conv2D(np.ones((3, 2, 3, 3)), padding=(0, 3, 2, 1), stride=(3, 1)),
    Conv2D(np.ones((4, 1, 3, 3)), padding=(2, 1), dilation=2, groups=2),
    Conv2D(np.ones((3, 2, 2, 2)), padding="valid", stride=4),
    MaxPool2D(2),
    MaxPool2D(3, stride=2, ceil_mode=True),
    MaxPool2D(3, stride=2, padding=1, ceil_mode=True),
    MaxPool2D((2, 4), stride=(3, 1), dilation=(2, 1), padding=(1, 2), ceil_mode=True),
    ReLU(),
], ids=repr)
@pytest.mark.parametrize("hw", [(9, 9), (10, 7), (13, 16)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_output_shape_matches_actual_output(rng, layer, hw, layout):
    x = to_layout(rng.standard_normal((2, 2) + hw), layout)
    assert layer.output_shape(x.shape, layout=layout) == layer(x, layout=layout).shape
    assert layer.output_shape(x[0].shape, layout=layout) == layer(x[0], layout=layout).shape


def test_output_shape_errors():
    conv = Conv2D(np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="input channels"):
        conv.output_shape((1, 5, 8, 8))
    with pytest.raises(ValueError, match="3-D or 4-D"):
        conv.output_shape((8, 8))
    with pytest.raises(ValueError, match="Kernel size"):
        conv.output_shape((1, 2, 2, 8))
    with pytest.raises(TypeError, match="input_shape"):
        conv.output_shape((1, 2, 8.0, 8))
    with pytest.raises(ValueError, match="layout"):
        conv.output_shape((1, 2, 8, 8), layout="HWC")
    with pytest.raises(ValueError, match="Kernel size"):
        MaxPool2D(3).output_shape((1, 2, 2, 8))
    assert conv.output_shape((0, 2, 8, 8)) == (0, 3, 6, 6)
    assert conv.output_shape((8, 8, 2), layout="NHWC") == (6, 6, 3)


# --------------------------------------------------------------------------------------------
# Sequential


def make_stack(rng, dtype=np.float32):
    w1 = rng.standard_normal((6, 3, 3, 3)).astype(dtype)
    b1 = rng.standard_normal(6).astype(dtype)
    w2 = rng.standard_normal((4, 6, 3, 3)).astype(dtype)
    layers = [Conv2D(w1, b1, padding=1), ReLU(), MaxPool2D(2),
              Conv2D(w2, stride=2, padding="same"), ReLU()]

    def chain(x, layout="NCHW", num_threads=None):
        y = fastconv.conv2d(x, w1, b1, padding=1, layout=layout, num_threads=num_threads)
        y = fastconv.relu(y, num_threads=num_threads)
        y = fastconv.max_pool2d(y, 2, layout=layout, num_threads=num_threads)
        y = fastconv.conv2d(y, w2, stride=2, padding="same", layout=layout,
                            num_threads=num_threads)
        return fastconv.relu(y, num_threads=num_threads)

    return layers, chain


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_equals_chained_functions(rng, layout, dtype):
    layers, chain = make_stack(rng, dtype)
    net = Sequential(layers)
    x = to_layout(rng.standard_normal((3, 3, 12, 11)).astype(dtype), layout)
    expected = chain(x, layout)
    actual = net(x, layout=layout)
    assert actual.dtype == dtype
    np.testing.assert_array_equal(bits(actual), bits(expected))
    assert actual.shape == net.output_shape(x.shape, layout=layout)
    # unbatched input: (C, H, W) in, (C, H, W) out
    single = net(x[2], layout=layout)
    assert single.shape == expected.shape[1:]
    np.testing.assert_array_equal(bits(single), bits(expected[2]))
    # empty batch
    empty = net(x[:0], layout=layout)
    assert empty.shape == (0,) + expected.shape[1:]


def test_sequential_thread_invariance(rng):
    layers, _ = make_stack(rng)
    net = Sequential(layers)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    one = net(x, num_threads=1)
    for threads in (2, 4):
        np.testing.assert_array_equal(bits(net(x, num_threads=threads)), bits(one))


class _Spy:
    """Records the calls that pass through a module attribute."""

    def __init__(self, monkeypatch, module, name):
        self.calls = []
        original = getattr(module, name)

        signature = inspect.signature(original)

        def spy(*args, **kwargs):
            self.calls.append(signature.bind(*args, **kwargs).arguments)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


def test_conv_relu_fusion(rng, monkeypatch):
    layers, _ = make_stack(rng)
    net = Sequential(layers)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    unfused = list(net.feature_maps(x).values())[-1]
    conv_spy = _Spy(monkeypatch, layers_module._conv, "_conv2d")
    relu_spy = _Spy(monkeypatch, layers_module._activation, "relu")
    pool_spy = _Spy(monkeypatch, layers_module._pool, "max_pool2d")
    fused = net(x)
    # conv -> relu -> 2x2 pool is one kernel call; so is the strided conv -> relu.
    assert [(c["activation"], c["pool"]) for c in conv_spy.calls] == [("relu", 2), ("relu", 1)]
    assert relu_spy.calls == [] and pool_spy.calls == []
    np.testing.assert_array_equal(bits(fused), bits(unfused))


def test_fusion_only_where_conv_is_directly_followed_by_relu(rng, monkeypatch):
    conv = Conv2D(rng.standard_normal((2, 1, 3, 3)))
    net = Sequential([conv, MaxPool2D(2), ReLU(), Conv2D(np.ones((2, 2, 1, 1)),
                                                         activation="relu"), ReLU()])
    x = rng.standard_normal((1, 1, 10, 10))
    expected = fastconv.relu(fastconv.conv2d(fastconv.relu(fastconv.max_pool2d(
        fastconv.conv2d(x, conv.weight), 2)), np.ones((2, 2, 1, 1)), activation="relu"))
    conv_spy = _Spy(monkeypatch, layers_module._conv, "_conv2d")
    relu_spy = _Spy(monkeypatch, layers_module._activation, "relu")
    np.testing.assert_array_equal(bits(net(x)), bits(expected))
    # The pool right after the first conv fuses into it; the ReLU after the pool cannot.
    assert [(c["activation"], c["pool"]) for c in conv_spy.calls] == [(None, 2), ("relu", 1)]
    assert len(relu_spy.calls) == 1  # after the pool; the last ReLU is fused away


def test_feature_maps_names_shapes_and_values(rng):
    layers, chain = make_stack(rng)
    net = Sequential(layers)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    maps = net.feature_maps(x)
    assert list(maps) == ["0:Conv2D", "1:ReLU", "2:MaxPool2D", "3:Conv2D", "4:ReLU"]
    assert list(maps) == list(net.names)
    shape = x.shape
    for name, layer in zip(maps, net):
        shape = layer.output_shape(shape)
        assert maps[name].shape == shape, name
    np.testing.assert_array_equal(maps["1:ReLU"], fastconv.relu(maps["0:Conv2D"]))
    np.testing.assert_array_equal(maps["2:MaxPool2D"], fastconv.max_pool2d(maps["1:ReLU"], 2))
    np.testing.assert_array_equal(bits(maps["4:ReLU"]), bits(chain(x)))
    np.testing.assert_array_equal(bits(maps["4:ReLU"]), bits(net(x)))
    assert not np.shares_memory(maps["0:Conv2D"], maps["1:ReLU"])


def test_feature_maps_with_named_layers_nhwc_unbatched(rng):
    net = Sequential({"edges": Conv2D(rng.standard_normal((3, 1, 3, 3)), padding=1),
                      "relu": ReLU(), "pool": MaxPool2D(2)})
    image = rng.standard_normal((8, 8, 1))  # (H, W, C)
    maps = net.feature_maps(image, layout="NHWC")
    assert list(maps) == ["0:edges", "1:relu", "2:pool"]
    assert [m.shape for m in maps.values()] == [(8, 8, 3), (8, 8, 3), (4, 4, 3)]
    np.testing.assert_array_equal(maps["2:pool"], net(image, layout="NHWC"))


def test_summary_receptive_field_and_jump():
    net = Sequential([Conv2D.from_shape(1, 4, 3, seed=0), MaxPool2D(2),
                      Conv2D.from_shape(4, 8, 3, seed=1)])
    summary = net.summary((1, 1, 32, 32))
    assert [row.receptive_field for row in summary] == [(3, 3), (4, 4), (8, 8)]
    assert [row.jump for row in summary] == [(1, 1), (2, 2), (2, 2)]
    assert [row.name for row in summary] == ["0:Conv2D", "1:MaxPool2D", "2:Conv2D"]
    assert [row.output_shape for row in summary] == [(1, 4, 30, 30), (1, 4, 15, 15),
                                                     (1, 8, 13, 13)]
    assert [row.num_parameters for row in summary] == [40, 0, 296]
    assert summary.total_parameters == net.num_parameters == 336
    assert len(summary) == 3 and summary[1].name == "1:MaxPool2D"
    assert net.receptive_field() == ((8, 8), (2, 2))
    assert net.kernel_extent == (8, 8) and net.stride == (2, 2)


def test_summary_dilation_strides_and_table():
    net = Sequential([Conv2D.from_shape(3, 8, (3, 5), stride=(2, 1), dilation=2, seed=0),
                      ReLU(), MaxPool2D(3, stride=2, ceil_mode=True),
                      Conv2D.from_shape(8, 8, 1, seed=1)])
    summary = net.summary((32, 30, 3), layout="NHWC")
    # conv: extent (5, 9) -> rf (5, 9), jump (2, 1); pool 3 s2: rf + 2 * jump, jump * 2
    assert [row.receptive_field for row in summary] == [(5, 9), (5, 9), (9, 11), (9, 11)]
    assert [row.jump for row in summary] == [(2, 1), (2, 1), (4, 2), (4, 2)]
    x = np.zeros((32, 30, 3), np.float32)
    assert [row.output_shape for row in summary] == [
        m.shape for m in net.feature_maps(x, layout="NHWC").values()]
    table = str(summary)
    lines = table.splitlines()
    assert "receptive field" in lines[0] and "jump" in lines[0]
    assert lines[2].split()[0] == "input"
    assert lines[3].split()[:1] == ["0:Conv2D"] and "5x9" in lines[3] and "2x1" in lines[3]
    assert lines[5].split()[-2:] == ["9x11", "4x2"]
    assert lines[-1] == f"total parameters: {summary.total_parameters:,}"
    assert repr(summary) == table
    assert summary.rows[0]._asdict()["num_parameters"] == 8 * 3 * 15 + 8


def test_summary_errors():
    net = Sequential([Conv2D.from_shape(3, 4, 3)])
    with pytest.raises(ValueError, match="input channels"):
        net.summary((1, 1, 8, 8))
    with pytest.raises(ValueError, match="3-D or 4-D"):
        net.summary((8, 8))
    with pytest.raises(ValueError, match="layout"):
        net.summary((1, 3, 8, 8), layout="CHW")


def test_sequential_container_protocol(rng):
    layers, _ = make_stack(rng)
    net = Sequential(layers)
    assert len(net) == 5
    assert list(net) == layers and net.layers == tuple(layers)
    assert net[0] is layers[0] and net[-1] is layers[-1]
    head = net[:3]
    assert isinstance(head, Sequential) and list(head) == layers[:3]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(net[3:](head(x)), net(x))
    assert net.num_parameters == 6 * 3 * 9 + 6 + 4 * 6 * 9
    text = repr(net)
    assert text.splitlines()[0] == "Sequential(" and text.splitlines()[-1] == ")"
    assert "  (0): Conv2D(3, 6, kernel_size=(3, 3)" in text
    assert "  (2): MaxPool2D(kernel_size=2, stride=2" in text
    named = Sequential({"a": ReLU(), "b": ReLU()})
    assert "(a): ReLU()" in repr(named) and list(named[1:].names) == ["0:b"]


def test_sequential_nests(rng):
    block = Sequential([Conv2D.from_shape(1, 2, 3, seed=0), ReLU(), MaxPool2D(2)])
    net = Sequential([block, Conv2D.from_shape(2, 2, 3, seed=1)])
    x = rng.standard_normal((1, 1, 16, 16))
    np.testing.assert_array_equal(net(x), net[1](block(x)))
    assert [row.receptive_field for row in net.summary(x.shape)] == [(4, 4), (8, 8)]
    assert "\n    (0): Conv2D" in repr(net)
    assert net.output_shape(x.shape) == net(x).shape


def test_empty_sequential_is_identity():
    x = np.ones((1, 1, 3, 3))
    assert Sequential([])(x) is x
    assert Sequential([]).summary(x.shape).rows == ()


@pytest.mark.parametrize("layers, match", [
    ([ReLU(), "relu"], r"layers\[1\]"),
    ([np.maximum], r"layers\[0\]"),
    ("ReLU", "list of layers"),
    (ReLU(), "list of layers"),
    ({1: ReLU()}, "names"),
    (None, "list of layers"),
])
def test_sequential_rejects_non_layers(layers, match):
    with pytest.raises(TypeError, match=match):
        Sequential(layers)


def test_layer_subclass_in_sequential():
    class Double(Layer):
        def __call__(self, x, *, layout="NCHW", num_threads=None):
            return np.asarray(x) * 2

        def output_shape(self, input_shape, *, layout="NCHW"):
            return tuple(input_shape)

    net = Sequential([Double(), MaxPool2D(2)])
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(net(x), [[[[10, 14], [26, 30]]]])
    assert [row.receptive_field for row in net.summary(x.shape)] == [(1, 1), (2, 2)]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool, size, relu, groups", [
    (2, (17, 19), True, 1), (3, (20, 14), True, 2), (2, (9, 9), False, 1), (2, (30, 31), True, 6),
    (4, (5, 6), True, 1)])
def test_fused_conv_relu_pool_equals_separate_calls(rng, layout, dtype, pool, size, relu, groups):
    """The pool fused into the conv kernel gives the bits of conv -> relu -> max_pool2d,
    NaN included (ragged edges: the floor-mode pool drops the last partial window)."""
    x = rng.standard_normal((2, 6) + size).astype(dtype)
    x[0, 1, 3, 4] = np.nan
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    weight = rng.standard_normal((6, 6 // groups, 3, 3)).astype(dtype)
    bias = rng.standard_normal(6).astype(dtype)
    stack = [Conv2D(weight, bias, padding=1, groups=groups)] + ([ReLU()] if relu else [])
    net = Sequential(stack + [MaxPool2D(pool)])
    expected = list(net.feature_maps(x, layout=layout).values())[-1]
    np.testing.assert_array_equal(bits(net(x, layout=layout)), bits(expected))
    assert np.isnan(expected).any()
