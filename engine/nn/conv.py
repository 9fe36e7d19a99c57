"""Convolutional layer types: conv2d, max/avg pooling, global average pooling, flatten,
batchnorm2d and dropout2d, registered in LAYERS like the dense ones of engine/nn/model.py.

They take an image, (channels, height, width), and give one (`image_only`); build_model refuses
them anywhere else with the layer named. A size that cannot work (a kernel larger than its padded
input) is refused here, by SpecError; one that works but drops a last row and column is said by
describe() (engine/nn/model.py), with the formula.

A conv2d layer is conv -> activation, as a linear layer is linear -> activation: the activation,
initializer and bias are the model's unless the layer overrides them.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..core.errors import SpecError
from ..core.portable import Concat, Dropout, Residual
from ..core.registry import LAYERS, Param

MAX_CHANNELS = 1024
PADDINGS = ("valid", "same", 1, 2, 3, 4)  # valid: none; same: the output keeps the input's size


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> int:
    """floor((W - F + 2P) / S) + 1, with F = dilation * (kernel - 1) + 1 the span of the kernel;
    SpecError when the kernel does not fit in the padded input."""
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        covers = f"its kernel spans {span} pixels" if dilation > 1 else f"its kernel is {span}"
        raise SpecError(f"{covers}, larger than its {size}x{size} input"
                        + (f" with padding {padding}" if padding else "")
                        + ": use a smaller kernel, more padding, or fewer pooling layers before it")
    return (size + 2 * padding - span) // stride + 1


def window_arithmetic(size: int, kernel: int, stride: int = 1, padding: int = 0,
                      dilation: int = 1) -> dict:
    """A sliding window's output size worked out for the page's calculator: the kernel's span
    F = d(k - 1) + 1, (W - F + 2P)/S + 1 exact and rounded down, the pixels the last position
    leaves out, and the formula with its numbers; `error` says why no output exists."""
    span = dilation * (kernel - 1) + 1
    room = size + 2 * padding - span
    exact = room / stride + 1
    out = {"span": span, "exact": exact, "size": room // stride + 1 if room >= 0 else 0,
           "left_over": room % stride if room >= 0 else None,
           "formula": f"({size} - {span} + 2*{padding})/{stride} + 1 = {exact:g}", "error": None}
    if room < 0:
        out["error"] = (f"the kernel spans {span} pixels, more than the {size + 2 * padding} of "
                        f"the {'padded ' if padding else ''}input")
    return out


def padding_of(padding, kernel: int, dilation: int = 1) -> int:
    """The zeros added on each side: 'valid' none, 'same' half the kernel's span."""
    if padding == "valid":
        return 0
    if padding == "same":
        return dilation * (kernel - 1) // 2
    return int(padding)


def _image(in_shape) -> tuple[int, int, int]:
    channels, height, width = in_shape
    return channels, height, width


def _size_param(name, default, doc, high):
    return Param(name, default, doc, low=1, high=high)


@LAYERS.register(
    "conv2d", "Slides `filters` small kernels over the image: each output channel is one learned "
    "pattern, looked for at every position with the same weights.",
    (Param("filters", 8, "output channels, one learned kernel each", low=1, high=MAX_CHANNELS,
           log=True),
     _size_param("kernel", 3, "kernel size in pixels (square)", 15),
     _size_param("stride", 1, "pixels between two positions of the kernel", 8),
     Param("padding", "valid", "zeros around the input: valid (none), same (the output keeps "
           "the input's size; stride 1 only) or that many pixels", choices=PADDINGS),
     _size_param("dilation", 1, "spacing between the kernel's taps (1: next to each other)", 8),
     _size_param("groups", 1, "channel groups convolved apart; groups = input channels makes a "
                 "depthwise convolution", MAX_CHANNELS),
     Param("bias", True, "a learned bias per output channel")),
    prefix="conv", image_only=True, uses=("activation", "init", "bias_init"),
    watches_activation=True)
def _conv2d(ctx, layer, in_shape):
    channels, height, width = _image(in_shape)
    filters, kernel, stride = layer.get("filters"), layer.get("kernel"), layer.get("stride")
    dilation, groups, padding = layer.get("dilation"), layer.get("groups"), layer.get("padding")
    if channels % groups or filters % groups:
        raise SpecError(f"groups={groups} must divide both its {channels} input channels and "
                        f"its {filters} filters")
    if padding == "same" and stride != 1:
        raise SpecError("padding 'same' keeps the size only with stride 1; give the padding as "
                        "a number instead")
    if padding == "same" and dilation * (kernel - 1) % 2:
        raise SpecError(f"padding 'same' needs a kernel of odd span (3, 5, 7, ...) to pad both "
                        f"sides alike; kernel {kernel} spans {dilation * (kernel - 1) + 1} pixels")
    pad = padding_of(padding, kernel, dilation)
    shape = (filters, output_size(height, kernel, stride, pad, dilation),
             output_size(width, kernel, stride, pad, dilation))
    conv = ctx.weighted(ctx.make(nn.Conv2d, channels, filters, kernel, stride=stride,
                                 padding=pad, dilation=dilation, groups=groups,
                                 bias=layer.get("bias")), layer)
    return ctx.make(nn.Sequential, OrderedDict(conv=conv, act=ctx.activation(layer))), shape


def _pool(cls):
    def factory(ctx, layer, in_shape):
        channels, height, width = _image(in_shape)
        kernel, stride = layer.get("kernel"), layer.get("stride")
        shape = (channels, output_size(height, kernel, stride), output_size(width, kernel, stride))
        return ctx.make(cls, kernel, stride=stride), shape
    return factory


_POOL_PARAMS = (_size_param("kernel", 2, "window size in pixels (square)", 8),
                _size_param("stride", 2, "pixels between two windows (the kernel size: no "
                            "overlap)", 8))
LAYERS.register("maxpool", "Keeps the largest value of each window: halves the size with the "
                "defaults and tolerates small shifts.", _POOL_PARAMS, prefix="pool",
                image_only=True)(_pool(nn.MaxPool2d))
LAYERS.register("avgpool", "Averages each window: halves the size with the defaults.",
                _POOL_PARAMS, prefix="pool", image_only=True)(_pool(nn.AvgPool2d))


@LAYERS.register("globalavgpool", "Averages each channel over the whole image: one number per "
                 "channel, whatever the image size, and no weights.", prefix="gap",
                 image_only=True)
def _globalavgpool(ctx, layer, in_shape):
    channels, _, _ = _image(in_shape)
    body = OrderedDict(pool=ctx.make(nn.AdaptiveAvgPool2d, 1), flatten=ctx.make(nn.Flatten))
    return ctx.make(nn.Sequential, body), (channels,)


@LAYERS.register("flatten", "Lays the channels of an image out as one vector (a linear layer "
                 "does this on its own).", prefix="flat", image_only=True, hidden=True)
def _flatten(ctx, layer, in_shape):
    channels, height, width = _image(in_shape)
    return ctx.make(nn.Flatten), (channels * height * width,)


@LAYERS.register("batchnorm2d", "Normalises each channel over the batch and all positions, "
                 "then rescales with a learned gamma and beta per channel.", prefix="bn",
                 image_only=True, batch_stats=True, normalizes=True)
def _batchnorm2d(ctx, layer, in_shape):
    return ctx.make(nn.BatchNorm2d, _image(in_shape)[0]), tuple(in_shape)


@LAYERS.register("dropout2d", "Zeroes whole channels with probability p while training "
                 "(neighbouring pixels are alike, so dropping single ones hides little).",
                 (Param("p", 0.2, "drop probability per channel", low=0.0, high=1.0,
                        high_open=True),), prefix="drop", image_only=True, hidden=True,
                 drops=True)
def _dropout2d(ctx, layer, in_shape):
    return ctx.make(Dropout, layer.get("p"), ctx.stream("dropout"), channels=True), \
        tuple(in_shape)


def _conv(ctx, layer, c_in: int, c_out: int, kernel: int, bias: bool = True, **kw):
    """A convolution initialised like the layer's others (the layer's init and bias init)."""
    return ctx.weighted(ctx.make(nn.Conv2d, c_in, c_out, kernel, bias=bias, **kw), layer)


@LAYERS.register(
    "resblock2d", "Two 3x3 convolutions whose output is added to their input (ResNet's block): "
    "the sum hands the gradient straight back past them, so deep stacks still train.",
    (Param("filters", 16, "channels in and out of the block (a 1x1 convolution matches the "
           "input's channels when they differ)", low=1, high=MAX_CHANNELS, log=True),
     Param("batchnorm", True, "a BatchNorm after each convolution, as in ResNet")),
    prefix="res", image_only=True, uses=("activation", "init", "bias_init"),
    watches_activation=True)
def _resblock2d(ctx, layer, in_shape):
    channels, height, width = _image(in_shape)
    filters, norm = layer.get("filters"), layer.get("batchnorm")
    proj = _conv(ctx, layer, channels, filters, 1) if channels != filters else None
    body = OrderedDict()
    for i in (1, 2):  # no bias before a BatchNorm: its beta takes that role
        body[f"conv{i}"] = _conv(ctx, layer, filters, filters, 3, bias=not norm, padding=1)
        if norm:
            body[f"bn{i}"] = ctx.make(nn.BatchNorm2d, filters)
        if i == 1:
            body["act1"] = ctx.activation(layer)
    block = ctx.make(Residual, proj, ctx.make(nn.Sequential, body))
    return ctx.make(nn.Sequential, OrderedDict(block=block, act=ctx.activation(layer))), \
        (filters, height, width)


@LAYERS.register(
    "inception", "Four branches side by side, joined along the channels (GoogLeNet's block): "
    "1x1, 3x3 and 5x5 convolutions (the larger ones after a 1x1 that narrows the input) and a "
    "3x3 max pool, so the next layer can use whichever scale fits.",
    (Param("filters", 8, "channels of each branch (the block gives 4x as many)", low=1,
           high=MAX_CHANNELS, log=True),),
    prefix="inc", image_only=True, uses=("activation", "init", "bias_init"),
    watches_activation=True)
def _inception(ctx, layer, in_shape):
    channels, height, width = _image(in_shape)
    f = layer.get("filters")

    def conv_act(c_in, kernel):
        return [_conv(ctx, layer, c_in, f, kernel, padding=kernel // 2), ctx.activation(layer)]
    branches = OrderedDict(
        k1=ctx.make(nn.Sequential, *conv_act(channels, 1)),
        k3=ctx.make(nn.Sequential, *conv_act(channels, 1), *conv_act(f, 3)),
        k5=ctx.make(nn.Sequential, *conv_act(channels, 1), *conv_act(f, 5)),
        pool=ctx.make(nn.Sequential, ctx.make(nn.MaxPool2d, 3, stride=1, padding=1),
                      *conv_act(channels, 1)))
    return ctx.make(Concat, branches), (4 * f, height, width)
