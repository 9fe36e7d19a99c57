"""Spec -> nn.Module with named layers (fc1, bn1, res1, ..., out), and describe() for shapes.

The network is an nn.Sequential of named layers so that every per-layer statistic, chart and
exported line of code refers to the same name. Each hidden layer's output is what diagnostics
watch: for a linear layer that is the output *after* its activation.

Layer types are registered in LAYERS with factory(ctx, layer, in_shape) -> (module, out_shape).
A factory makes every module through its BuildContext (`ctx.make(cls, *args)`, `ctx.linear`,
`ctx.activation`, `ctx.stream`), so the exported script can write the same model from the calls
it recorded. The tags say which name prefix a layer gets (`prefix`), which model defaults it takes
(`uses`: activation/init/bias_init), whether it flattens an image first (`flattens`) or needs a
flat input (`flat_only`), whether its output is its activation's (`watches_activation`, for the
dead/saturated checks), whether it normalises (`normalizes`) and whether over the batch
(`batch_stats`). A tag `default=True` marks the layer type a bare number stands for. New layer kinds
(convolutions, recurrent cells) register the same way.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import SpecError
from .registry import ACTIVATIONS, INITIALIZERS, LAYERS, Param
from .portable import Dropout, Residual, generator as make_generator
if TYPE_CHECKING:  # spec.py reads LAYERS' defaults, so model.py is imported (and its layer
    from .spec import Choice, ExperimentSpec, LayerSpec  # types registered) before spec.py

MAX_UNITS = 8192


@dataclass(frozen=True)
class StreamRef:
    """Stands for one of the run's random streams in a model built without initialising (the
    exported script names it `<stream>_gen`)."""

    stream: str


@dataclass
class BuildContext:
    """What a layer factory builds with. Every module is made through `make` (or `linear`,
    `activation`), which records the call on the module as `module.built_by = (target, args,
    kwargs)`: the exporter writes the model from these records, so a layer type is defined once,
    here, for both the engine and the script."""

    spec: ExperimentSpec
    init: bool  # False: build without initialising (on the meta device: describe, export)
    device: str | torch.device = "cpu"
    inits: list = field(default_factory=list)  # (nn.Linear, initializer Choice, bias) in order

    def __post_init__(self):
        self._streams = {}
        self._init_gen = make_generator(self.spec.seed, "init") if self.init else None

    def make(self, target, *args, **kwargs) -> nn.Module:
        module = target(*args, **kwargs)
        module.built_by = (target, args, kwargs)
        return module

    def stream(self, name: str):
        """The run's generator for `name` (a key of seeding.STREAMS) on the model's device."""
        if not self.init:
            return StreamRef(name)
        if name not in self._streams:
            self._streams[name] = make_generator(self.spec.seed, name, self.device)
        return self._streams[name]

    def activation_of(self, layer: LayerSpec) -> Choice:
        return layer.activation or self.spec.model.activation

    def activation(self, layer: LayerSpec) -> nn.Module:
        choice = self.activation_of(layer)
        entry = ACTIVATIONS[choice.name]
        return self.make(entry.factory, **entry.resolve(choice.params))

    def linear(self, fan_in: int, units: int, layer: LayerSpec | None) -> nn.Linear:
        """A linear map initialised from the layer's (or the model's) initializer and bias;
        layer=None: the output layer."""
        lin = self.make(nn.Linear, fan_in, units)
        model = self.spec.model
        init = (layer.init if layer else None) or (model.init if layer else
                                                   model.output or model.init)
        bias = layer.bias_init if layer and layer.bias_init is not None else (
            model.bias_init if layer else 0.0)
        self.inits.append((lin, init, float(bias)))
        if self.init:
            with torch.no_grad():
                INITIALIZERS[init.name].build(lin.weight, self._init_gen, **init.params)
                nn.init.constant_(lin.bias, bias)
        return lin


def _flat(in_shape) -> int:
    return math.prod(in_shape)


def _units(default=64):
    return Param("units", default, "number of neurons", low=1, high=MAX_UNITS, log=True)


@LAYERS.register("linear", "Fully connected: every output is a weighted sum of every input plus "
                 "a bias, then the activation.", (_units(),), prefix="fc", flattens=True,
                 uses=("activation", "init", "bias_init"), watches_activation=True, default=True)
def _linear(ctx, layer, in_shape):
    units = layer.get("units")
    body = OrderedDict(linear=ctx.linear(_flat(in_shape), units, layer),
                       act=ctx.activation(layer))
    return ctx.make(nn.Sequential, body), (units,)


@LAYERS.register("activation", "A bare activation function, e.g. after a BatchNorm.",
                 prefix="act", uses=("activation",), watches_activation=True)
def _activation(ctx, layer, in_shape):
    return ctx.activation(layer), in_shape


@LAYERS.register("dropout", "Zeroes each unit with probability p while training (scaling the "
                 "rest by 1/(1-p)); does nothing at evaluation.",
                 (Param("p", 0.5, "drop probability", low=0.0, high=1.0, high_open=True),),
                 prefix="drop")
def _dropout(ctx, layer, in_shape):
    return ctx.make(Dropout, layer.get("p"), ctx.stream("dropout")), in_shape


@LAYERS.register("batchnorm", "Normalises each unit over the batch, then rescales with learned "
                 "gamma and beta: steadier activations at any depth.", prefix="bn",
                 flat_only=True, batch_stats=True, normalizes=True)
def _batchnorm(ctx, layer, in_shape):
    return ctx.make(nn.BatchNorm1d, in_shape[0]), in_shape


@LAYERS.register("layernorm", "Normalises each example over its units: like BatchNorm but "
                 "independent of the batch.", prefix="ln",
                 flat_only=True, normalizes=True)
def _layernorm(ctx, layer, in_shape):
    return ctx.make(nn.LayerNorm, in_shape[0]), in_shape


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
        body[f"act{i}"] = ctx.activation(layer)
    return ctx.make(Residual, proj, ctx.make(nn.Sequential, body)), (units,)


class Net(nn.Sequential):
    """Named layers in order; `layer_info[name]` says what diagnostics need to know of each."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", layer_info: dict[str, dict]):
        super().__init__(layers)
        self.layer_info = layer_info


def build_model(spec: ExperimentSpec, in_shape, out_dim: int, device="cpu",
                init: bool = True) -> Net:
    """The network for `spec`, initialised from the run's init generator (same seed, same
    weights). init=False builds parameters without filling them (for describe on 'meta')."""
    ctx = BuildContext(spec, init, device)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    info: dict[str, dict] = {}
    counts: dict[str, int] = {}
    shape = tuple(in_shape)
    for i, layer in enumerate(spec.model.layers):
        entry = LAYERS[layer.type]
        if len(shape) > 1 and entry.tags.get("flattens"):
            layers["flatten"] = ctx.make(nn.Flatten)
            info["flatten"] = {"type": "flatten", "shown": False}
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
        act = ACTIVATIONS[ctx.activation_of(layer).name] \
            if "activation" in entry.tags.get("uses", ()) else None
        # watches_activation: the layer's output is its activation's (a residual block's is
        # h + F(h), unbounded and rarely exactly zero, so the dead/saturated checks skip it)
        watched = act if entry.tags.get("watches_activation") else None
        info[name] = {"type": layer.type, "shown": layer.type != "dropout",
                      "activation": act.key if act else None,
                      "dies": bool(watched and watched.tags.get("dies")),
                      "bounds": watched.tags.get("bounds") if watched else None,
                      "spec_index": i}
    if len(shape) > 1:
        layers["flatten"] = ctx.make(nn.Flatten)
        info["flatten"] = {"type": "flatten", "shown": False}
        shape = (_flat(shape),)
    layers["out"] = ctx.linear(shape[0], out_dim, None)
    info["out"] = {"type": "output", "shown": True, "activation": None, "dies": False,
                   "bounds": None, "spec_index": None}
    net = Net(layers, info)
    net.inits = ctx.inits  # the order weights are initialised in (the exporter repeats it)
    return net.to(device)


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
