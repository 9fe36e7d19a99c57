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
(`batch_stats`), whether it drops units while training (`drops`), whether it reads images only (`image_only`) and whether the charts leave it out
(`hidden`: dropout, flatten). A tag `default=True` marks the layer type a bare number stands for.
The convolutional types live in engine/nn/conv.py and register the same way.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.errors import SpecError
from ..core.portable import Concat, Dropout, Residual
from ..core.portable import generator as make_generator
from ..core.registry import ACTIVATIONS, DATASETS, INITIALIZERS, LAYERS, Param

if TYPE_CHECKING:  # spec.py reads LAYERS' defaults, so model.py is imported (and its layer
    from ..core.spec import Choice, ExperimentSpec, LayerSpec  # types registered) before spec.py

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
    inits: list = field(default_factory=list)  # (module, initializer Choice, bias) in order
    index: int = 0  # the position in model.layers of the layer being built

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
        return self.weighted(self.make(nn.Linear, fan_in, units), layer)

    def weighted(self, module: nn.Module, layer: LayerSpec | None) -> nn.Module:
        """Initialise a module's `weight` (and `bias`, when it has one) from the layer's (or the
        model's) initializer and bias init, from the init stream; layer=None: the output layer.
        The exporter repeats these in the same order (`inits`)."""
        model = self.spec.model
        init = (layer.init if layer else None) or (model.init if layer else
                                                   model.output or model.init)
        bias = layer.bias_init if layer and layer.bias_init is not None else (
            model.bias_init if layer else 0.0)
        bias = None if getattr(module, "bias", None) is None else float(bias)  # an embedding: none
        self.inits.append((module, init, bias))
        if self.init:
            with torch.no_grad():
                INITIALIZERS[init.name].build(module.weight, self._init_gen, **init.params)
                if bias is not None:
                    nn.init.constant_(module.bias, bias)
        return module


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
                 prefix="drop", hidden=True, drops=True)
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


# the convolutional layer types register after the dense ones, the recurrent ones after those
from . import conv, recurrent  # noqa: E402, F401
from .recurrent import check_sequence_input  # noqa: E402


class Net(nn.Sequential):
    """Named layers in order; `layer_info[name]` says what diagnostics need to know of each."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", layer_info: dict[str, dict]):
        super().__init__(layers)
        self.layer_info = layer_info


def build_model(spec: ExperimentSpec, in_shape, out_dim: int, device="cpu",
                init: bool = True) -> Net:
    """The network for `spec`, initialised from the run's init generator (same seed, same
    weights). init=False builds parameters without filling them (for describe on 'meta')."""
    if spec.data.params.get("packed") and not (
            spec.model.layers and LAYERS[spec.model.layers[0].type].tags.get("recurrent")):
        raise SpecError(f"{spec.data.name} with packed=true marks each sequence's real steps in "
                        "its last feature: the first layer must be recurrent (rnn, lstm, gru) "
                        "to read it; or set packed=false")
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
        _check_placement(spec, i, shape)
        prefix = entry.tags["prefix"]
        counts[prefix] = counts.get(prefix, 0) + 1
        name = f"{prefix}{counts[prefix]}"
        ctx.index = i
        try:
            if entry.tags.get("sequence_only"):
                check_sequence_input(shape)
            module, shape = entry.factory(ctx, layer, shape)
        except SpecError as e:
            raise SpecError(f"model.layers[{i}] ({layer.type}, {name}): {e}") from None
        except Exception as e:  # noqa: BLE001 - torch's own checks (ValueError, RuntimeError)
            # a factory that torch refused is the user's layer settings, not a crash: one line
            # naming the layer, never a traceback on the page
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpecError(f"model.layers[{i}] ({layer.type}, {name}) cannot be built with "
                            f"these settings: {reason[:200]}") from None
        layers[name] = module
        info[name] = _layer_info(ctx, layer, i)
    last = spec.model.layers[-1].entry if spec.model.layers else None
    if last is not None and last.tags.get("emits_output"):  # it gives the answers itself
        name = next(reversed(layers))
        layers["out"] = layers.pop(name)
        info["out"] = {**info.pop(name), "type": "output", "shown": True}
    else:
        _add_output(ctx, spec, shape, out_dim, layers, info)
    net = Net(layers, info)
    net.inits = ctx.inits  # the order weights are initialised in (the exporter repeats it)
    return net.to(device)


def _check_placement(spec: ExperimentSpec, i: int, shape: tuple) -> None:
    """Layer i can take an input of `shape` where it stands (SpecError naming it otherwise)."""
    layer = spec.model.layers[i]
    entry = LAYERS[layer.type]
    if len(shape) > 1 and entry.tags.get("flat_only"):
        raise SpecError(f"model.layers[{i}]: a {layer.type} layer here would get input of "
                        f"shape {list(shape)}; it needs a flat vector, so put a linear "
                        "layer before it")
    if len(shape) != 3 and entry.tags.get("image_only"):
        kind = ("an " if layer.type[0] in "aeiou" else "a ") + layer.type
        raise SpecError(f"model.layers[{i}]: {kind} layer needs an image (channels, "
                        f"height, width), but its input has shape {list(shape)}. "
                        "Convolutional layers go first, on image data (digits, shapes), "
                        "before any linear layer")
    if any(LAYERS[earlier.type].tags.get("emits_output") for earlier in spec.model.layers[:i]):
        raise SpecError(f"model.layers[{i}]: a {spec.model.layers[i - 1].type} layer gives "
                        "the answers itself, so it must be the last layer")


def _layer_info(ctx, layer, i: int) -> dict:
    """What the charts and the health check need to know of a built layer."""
    entry = LAYERS[layer.type]
    act = ACTIVATIONS[ctx.activation_of(layer).name] \
        if "activation" in entry.tags.get("uses", ()) else None
    # watches_activation: the layer's output is its activation's (a residual block's is
    # h + F(h), unbounded and rarely exactly zero, so the dead/saturated checks skip it)
    watched = act if entry.tags.get("watches_activation") else None
    return {"type": layer.type, "shown": not entry.tags.get("hidden"),
            "activation": act.key if act else None,
            "dies": bool(watched and watched.tags.get("dies")),
            "bounds": watched.tags.get("bounds") if watched else None,
            "spec_index": i}


def _add_output(ctx, spec, shape, out_dim: int, layers: dict, info: dict) -> None:
    """The linear output layer (after a flatten where the stack ends with a map or a whole
    sequence; on each step's state where every step answers)."""
    per_step = spec.data.per_step
    if per_step and len(shape) != 2:
        raise SpecError(f"{spec.data.name} wants an answer at every step of its sequences, but "
                        f"the last layer gives shape {list(shape)}: end the stack with a "
                        "recurrent layer (no last_step, no linear layer after it)")
    if len(shape) > 1 and not per_step:
        layers["flatten"] = ctx.make(nn.Flatten)
        info["flatten"] = {"type": "flatten", "shown": False}
        shape = (_flat(shape),)
    layers["out"] = ctx.linear(shape[-1], out_dim, None)
    info["out"] = {"type": "output", "shown": True, "activation": None, "dies": False,
                   "bounds": None, "spec_index": None}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(spec: ExperimentSpec, in_shape, out_dim: int) -> dict:
    """Per layer: output shape, parameter count, multiply-adds per example, and for image inputs
    the receptive field (how many input pixels across one output value depends on, and the jump:
    input pixels between two neighbouring outputs), a sliding window's size formula with its
    numbers, and a note where a kernel does not tile its input evenly. Computed on the 'meta' device: no memory is allocated, so a user can size a
    huge model before anything is built for real."""
    with torch.device("meta"):
        net = build_model(spec, in_shape, out_dim, device="meta", init=False).eval()
        tokens = DATASETS[spec.data.name].tags.get("input") == "tokens"  # ids, not values
        x = torch.zeros((1, *in_shape), dtype=torch.long if tokens else torch.float32)
        field = _Field(in_shape)
        rows = []
        for name, module in net.named_children():
            seen = {"macs": 0, "notes": [], "formulas": []}

            # modules on parallel branches: their windows do not add up (the field is the
            # widest branch's), and their sizes are the block's own
            branched = {id(m) for c in module.modules() if isinstance(c, Concat)
                        for m in c.modules()}

            def hook(m, inputs, output):
                seen["macs"] += multiply_adds(m, output)
                if id(m) in branched:
                    return
                formula = size_formula(m, inputs[0])
                if formula:
                    seen["formulas"].append(formula)
                note = uneven_note(m, inputs[0])
                if note:
                    seen["notes"].append(note)
                field.update(m, inputs[0])
            handles = [m.register_forward_hook(hook) for m in module.modules()
                       if not list(m.children())]
            handles += [c.register_forward_hook(lambda c, i, o: field.update_parallel(c))
                        for c in module.modules() if isinstance(c, Concat)]
            try:
                x = module(x)
            finally:
                for h in handles:
                    h.remove()
            rows.append({"name": name, "type": net.layer_info[name]["type"],
                         "output_shape": list(x.shape[1:]), "params": count_params(module),
                         "macs": seen["macs"], "receptive_field": field.size,
                         "jump": field.jump, "note": "; ".join(seen["notes"]) or None,
                         "formula": "; ".join(seen["formulas"]) or None})
    return {"input_shape": list(in_shape), "layers": rows, "total_params": count_params(net),
            "total_macs": sum(r["macs"] for r in rows),
            # values every example leaves behind in one forward pass (what a batch's memory
            # grows with: a wide convolution has few weights and a great many of these)
            "total_activations": sum(math.prod(r["output_shape"]) for r in rows)}


def multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds per example of one leaf module (convolutions and linear maps; the rest is
    counted as free, as is usual): each output value of a convolution is a dot product over
    (its group's input channels) x kernel height x kernel width, of a linear map over its inputs."""
    per_example = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_example * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_example * module.in_features
    return 0


def _window(module):
    """(kernel, stride, padding, dilation) of a sliding-window module (square), else None."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        first = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
        return (first(module.kernel_size), first(module.stride), first(module.padding),
                first(getattr(module, "dilation", 1)))
    return None


def size_formula(module: nn.Module, x: torch.Tensor) -> str | None:
    """A sliding window's output size worked out: (W - F + 2P)/S + 1 with this layer's numbers
    (F: the kernel's span, d(k - 1) + 1 when dilated); None for other modules."""
    window = _window(module)
    if window is None or x.dim() != 4:
        return None
    k, s, p, d = window
    size, span = x.shape[-1], d * (k - 1) + 1
    out = (size - span + 2 * p) // s + 1
    return f"({size} - {span} + 2*{p})/{s} + 1 = {out}" + (
        "" if (size - span + 2 * p) % s == 0 else f" (rounded down from "
        f"{(size - span + 2 * p) / s + 1:g})")


def uneven_note(module: nn.Module, x: torch.Tensor) -> str | None:
    """The formula with numbers when (W - F + 2P) / S + 1 is not whole (F: the kernel's span)."""
    window = _window(module)
    if window is None or x.dim() != 4:
        return None
    k, s, p, d = window
    size, span = x.shape[-1], d * (k - 1) + 1
    left = (size - span + 2 * p) % s
    if not left:
        return None
    return (f"(W - F + 2P)/S + 1 = ({size} - {span} + 2*{p})/{s} + 1 = "
            f"{(size - span + 2 * p) / s + 1:g}, not whole: the kernel's last position stops "
            f"{left} pixel(s) short of the {'padded ' if p else ''}input's right and bottom edges")


class _Field:
    """The receptive field, tracked through the modules in the order they run: a window of
    kernel k (dilation d) and stride s grows it by d*(k-1) jumps (at most to the whole image:
    padding adds nothing to see) and multiplies the jump by s; a global pool, flatten or linear
    map sees the whole image (its jump is then None). None for inputs that are not images."""

    def __init__(self, in_shape):
        self.image = len(in_shape) == 3
        self.whole = max(in_shape[1:]) if self.image else None
        self.size, self.jump = (1, 1) if self.image else (None, None)

    def update_parallel(self, concat):
        """Branches side by side: each grows the field from where it is; the widest counts."""
        start, ends = (self.size, self.jump), []
        for branch in concat.branches.values():
            self.size, self.jump = start
            for m in branch.modules():  # a branch runs its modules in this order
                if not list(m.children()):
                    self.update(m, None)
            ends.append((self.size, self.jump))
        self.size, self.jump = max(ends, key=lambda e: e[0])

    def update(self, module, x):
        if not self.image or self.jump is None:
            return
        window = _window(module)
        if window is not None:
            k, s, _, d = window
            # what one value sees of the image: past its edges (padding) there is nothing
            self.size = min(self.size + d * (k - 1) * self.jump, self.whole)
            self.jump *= s
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)):
            self.size, self.jump = self.whole, None
