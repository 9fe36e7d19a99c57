"""Spec -> nn.Module with named layers (fc1, bn1, res1, ..., out), and describe() for shapes.

The network is an nn.Sequential of named layers so that every per-layer statistic, chart and
exported line of code refers to the same name. Each hidden layer's output is what diagnostics
watch: for a linear layer that is the output *after* its activation.

Layer types are registered in LAYERS with factory(ctx, layer, in_shape) -> (module, out_shape);
the tags say which name prefix they get and which model defaults (activation/init/bias_init) they
take. New layer kinds (convolutions, recurrent cells) register the same way.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .errors import SpecError
from .registry import ACTIVATIONS, INITIALIZERS, LAYERS, Param
from .seeding import generator as make_generator
from .spec import Choice, ExperimentSpec, LayerSpec

MAX_UNITS = 8192


class Dropout(nn.Module):
    """Inverted dropout drawing its masks from the run's own generator (nn.Dropout uses torch's
    global one, which would make two runs in one process disturb each other's numbers)."""

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


class Residual(nn.Module):
    """h + F(h), F = k x (linear -> activation). The identity path hands the gradient straight to
    earlier layers, which is why very deep residual stacks still train."""

    def __init__(self, body: nn.Sequential, proj: nn.Linear | None):
        super().__init__()
        self.proj = proj
        self.body = body

    def forward(self, x):
        h = x if self.proj is None else self.proj(x)
        return h + self.body(h)


@dataclass
class BuildContext:
    spec: ExperimentSpec
    init_generator: torch.Generator | None  # None: build without initialising (meta device)
    dropout_generator: torch.Generator | None

    def activation(self, layer: LayerSpec) -> Choice:
        return layer.activation or self.spec.model.activation

    def make_activation(self, layer: LayerSpec) -> nn.Module:
        choice = self.activation(layer)
        return ACTIVATIONS[choice.name].build(**choice.params)

    def linear(self, fan_in: int, units: int, layer: LayerSpec | None) -> nn.Linear:
        """A linear map initialised from the layer's (or the model's) initializer and bias."""
        lin = nn.Linear(fan_in, units)
        if self.init_generator is not None:
            model = self.spec.model
            init = (layer.init if layer else None) or (model.init if layer else
                                                       model.output or model.init)
            bias = layer.bias_init if layer and layer.bias_init is not None else (
                model.bias_init if layer else 0.0)
            with torch.no_grad():
                INITIALIZERS[init.name].build(lin.weight, self.init_generator, **init.params)
                nn.init.constant_(lin.bias, bias)
        return lin


def _flat(in_shape) -> int:
    return math.prod(in_shape)


def _units(default=64):
    return Param("units", default, "number of neurons", low=1, high=MAX_UNITS, log=True)


@LAYERS.register("linear", "Fully connected: every output is a weighted sum of every input plus "
                 "a bias, then the activation.", (_units(),), prefix="fc", flattens=True,
                 uses=("activation", "init", "bias_init"))
def _linear(ctx, layer, in_shape):
    units = layer.get("units")
    body = OrderedDict(linear=ctx.linear(_flat(in_shape), units, layer),
                       act=ctx.make_activation(layer))
    return nn.Sequential(body), (units,)


@LAYERS.register("activation", "A bare activation function, e.g. after a BatchNorm.",
                 prefix="act", uses=("activation",))
def _activation(ctx, layer, in_shape):
    return ctx.make_activation(layer), in_shape


@LAYERS.register("dropout", "Zeroes each unit with probability p while training (scaling the "
                 "rest by 1/(1-p)); does nothing at evaluation.",
                 (Param("p", 0.5, "drop probability", low=0.0, high=1.0, high_open=True),),
                 prefix="drop")
def _dropout(ctx, layer, in_shape):
    return Dropout(layer.get("p"), ctx.dropout_generator), in_shape


@LAYERS.register("batchnorm", "Normalises each unit over the batch, then rescales with learned "
                 "gamma and beta: steadier activations at any depth.", prefix="bn",
                 flat_only=True)
def _batchnorm(ctx, layer, in_shape):
    return nn.BatchNorm1d(in_shape[0]), in_shape


@LAYERS.register("layernorm", "Normalises each example over its units: like BatchNorm but "
                 "independent of the batch.", prefix="ln",
                 flat_only=True)
def _layernorm(ctx, layer, in_shape):
    return nn.LayerNorm(in_shape[0]), in_shape


@LAYERS.register("residual", "A block of `depth` linear layers whose output is added to its "
                 "input (a projection matches widths when they differ).",
                 (_units(), Param("depth", 2, "linear layers inside the block", low=1, high=16)),
                 prefix="res", flattens=True, uses=("activation", "init", "bias_init"))
def _residual(ctx, layer, in_shape):
    units, depth = layer.get("units"), layer.get("depth")
    fan_in = _flat(in_shape)
    proj = ctx.linear(fan_in, units, layer) if fan_in != units else None
    body = OrderedDict()
    for i in range(1, depth + 1):
        body[f"linear{i}"] = ctx.linear(units, units, layer)
        body[f"act{i}"] = ctx.make_activation(layer)
    return Residual(nn.Sequential(body), proj), (units,)


class Net(nn.Sequential):
    """Named layers in order; `layer_info[name]` says what diagnostics need to know of each."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", layer_info: dict[str, dict]):
        super().__init__(layers)
        self.layer_info = layer_info


def build_model(spec: ExperimentSpec, in_shape, out_dim: int, device="cpu",
                init: bool = True) -> Net:
    """The network for `spec`, initialised from the run's init generator (same seed, same
    weights). init=False builds parameters without filling them (for describe on 'meta')."""
    ctx = BuildContext(spec, make_generator(spec.seed, "init") if init else None,
                       make_generator(spec.seed, "dropout", device) if init else None)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    info: dict[str, dict] = {}
    counts: dict[str, int] = {}
    shape = tuple(in_shape)
    for i, layer in enumerate(spec.model.layers):
        entry = LAYERS[layer.type]
        if len(shape) > 1 and entry.tags.get("flattens"):
            layers["flatten"], info["flatten"] = nn.Flatten(), {"type": "flatten", "shown": False}
            shape = (_flat(shape),)
        if len(shape) > 1 and entry.tags.get("flat_only"):
            raise SpecError(f"model.layers[{i}]: a {layer.type} layer here would get input of "
                            f"shape {list(shape)}; it needs a flat vector, so put a linear "
                            "layer before it")
        prefix = entry.tags["prefix"]
        counts[prefix] = counts.get(prefix, 0) + 1
        name = f"{prefix}{counts[prefix]}"
        module, shape = entry.factory(ctx, layer, shape)
        layers[name] = module
        act = ACTIVATIONS[ctx.activation(layer).name] if "activation" in entry.tags.get("uses", ()) \
            else None
        # a residual block's output is h + F(h): unbounded and rarely exactly zero, so the
        # dead/saturated checks of its activation do not apply to it
        watched = act if layer.type in ("linear", "activation") else None
        info[name] = {"type": layer.type, "shown": layer.type != "dropout",
                      "activation": act.key if act else None,
                      "dies": bool(watched and watched.tags.get("dies")),
                      "bounds": watched.tags.get("bounds") if watched else None,
                      "spec_index": i}
    if len(shape) > 1:
        layers["flatten"], info["flatten"] = nn.Flatten(), {"type": "flatten", "shown": False}
        shape = (_flat(shape),)
    layers["out"] = ctx.linear(shape[0], out_dim, None)
    info["out"] = {"type": "output", "shown": True, "activation": None, "dies": False,
                   "bounds": None, "spec_index": None}
    return Net(layers, info).to(device)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(spec: ExperimentSpec, in_shape, out_dim: int) -> dict:
    """Per-layer output shape and parameter count, computed on the 'meta' device: no memory is
    allocated, so a user can size a huge model before anything is built for real."""
    with torch.device("meta"):
        net = build_model(spec, in_shape, out_dim, device="meta", init=False).eval()
        x = torch.zeros((1, *in_shape))
        rows = []
        for name, module in net.named_children():
            x = module(x)
            rows.append({"name": name, "type": net.layer_info[name]["type"],
                         "output_shape": list(x.shape[1:]), "params": count_params(module),
                         "receptive_field": None})
    return {"input_shape": list(in_shape), "layers": rows, "total_params": count_params(net)}
