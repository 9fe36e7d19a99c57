"""Registries: one per kind of choice a user makes.

Every option list in Netlab (the UI pickers, spec validation, the CLI, the exporter) is read from
here, so an activation or an optimizer is described exactly once: its key, the factory that builds
it, its parameters with defaults and ranges, and a one-line teaching doc that becomes help text.

Factories have one signature per registry:

    ACTIVATIONS   factory(**params) -> nn.Module
    INITIALIZERS  factory(tensor, generator, **params) -> None   (fills the tensor in place)
    OPTIMIZERS    factory(parameters, **params) -> torch.optim.Optimizer
    SCHEDULES     factory(optimizer, total_steps, **params) -> torch LR scheduler
    LOSSES        factory(**params) -> callable(output, target) -> scalar tensor
    NORMALIZERS   factory(x_train) -> (shift, scale)
    DATASETS      factory(generator, **params) -> (x, y) or (x, y, names), in data.py
    FEATURES      factory(points) -> one column, registered in data.py
    LAYERS        factory(ctx, layer, in_shape) -> (module, out_shape), registered in model.py

A factory is a torch class where one fits (nn.Tanh, torch.optim.Adam, nn.HuberLoss), so the
exported script writes it as itself; otherwise a plain function that uses only torch and math,
which the exporter copies into the script by its source. Adding a choice is one entry here (or
in data.py / model.py): the pickers, validation, URL state and export follow from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .errors import SpecError
from .inputs import short
from .portable import safe_scale

MAX_TEXT = 4096  # longest text setting (a path: Linux allows 4,096 bytes)
MAX_NAMES = 1000  # longest list of names (a table has at most 1,000 columns)

# ----------------------------------------------------------------------------- machinery


@dataclass(frozen=True)
class Param:
    """One parameter of a registry entry: its default fixes its type; low/high bound it."""

    name: str
    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed (a learning rate must be > 0)
    high_open: bool = False
    choices: tuple | None = None
    log: bool = False  # UI hint: this parameter spans orders of magnitude
    names: bool = False  # a list of names of any length (e.g. columns to leave out), default ()

    def allowed(self) -> str:
        if self.names:
            return f"a list of at most {MAX_NAMES:,} non-empty names"
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if isinstance(self.default, bool):
            return "true or false"
        if isinstance(self.default, str) or self.default is None:
            return f"a non-empty string of at most {MAX_TEXT:,} characters"
        kind = "an integer" if isinstance(self.default, int) else "a number"
        if isinstance(self.default, tuple):
            kind = f"a list of {len(self.default)} numbers"

        def num(v):  # integers in full: 2147483647, not 2.14748e+09
            return str(v) if isinstance(v, int) else f"{v:g}"
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {num(self.low)}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {num(self.high)}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"{kind} {bounds}".strip()

    def check(self, value: Any, where: str) -> Any:
        """Return value coerced to this parameter's type, or raise SpecError naming `where`.

        Any value may arrive here (a list, a 400-digit integer, a 75 MB string), so nothing is
        converted before its type is known and the message echoes it shortened."""
        def bad():
            return SpecError(f"{where}={short(value)} is not allowed: expected {self.allowed()}")
        if self.names:
            if not isinstance(value, (list, tuple)) or len(value) > MAX_NAMES or not all(
                    isinstance(v, str) and v and len(v) <= MAX_TEXT for v in value):
                raise bad()
            return tuple(value)
        if self.choices is not None:  # the choice itself: 1.0 gives 1, and True is not 1
            match = [c for c in self.choices
                     if isinstance(c, bool) == isinstance(value, bool) and c == value]
            if not match:
                raise bad()
            return match[0]
        d = self.default
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise bad()
            return value
        if isinstance(d, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(d):
                raise bad()
            return tuple(Param(self.name, x, low=self.low, high=self.high, low_open=self.low_open,
                               high_open=self.high_open).check(v, where) for x, v in zip(d, value))
        if isinstance(d, str) or d is None:
            if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
                raise bad()
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if isinstance(value, float) and not math.isfinite(value):  # int(nan), int(inf) raise
            raise bad()
        if isinstance(d, int):
            if isinstance(value, float) and not value.is_integer():
                raise bad()
            value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:  # an integer of more than 308 digits
                raise bad() from None
        # int and float compare exactly in Python, so a 400-digit integer meets the bounds here
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad()
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad()
        return value


@dataclass(frozen=True)
class Entry:
    """One choice. `factory` builds it; the exported script calls `code` instead when given (a
    function of the same signature that needs nothing of Netlab, e.g. a CSV reader without the
    engine's validation). A torch class is written in the script as itself; any other class or
    function is copied into it by its source (engine/io/export.py)."""

    key: str
    factory: Callable
    doc: str
    params: tuple[Param, ...] = ()
    tags: Mapping[str, Any] = field(default_factory=dict)
    code: Callable | None = None

    @property
    def exported(self) -> Callable:
        return self.code or self.factory

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the given values, restricted to this entry's own parameters."""
        out = {p.name: p.default for p in self.params}
        out.update({k: v for k, v in given.items() if k in out})
        return out

    def build(self, *args, **given):
        return self.factory(*args, **self.resolve(given))


class Registry:
    """Ordered key -> Entry map. `shared_params`: an entry accepts (and ignores) the parameters of
    its siblings, so that switching an optimizer keeps the learning rate the user typed."""

    def __init__(self, kind: str, shared_params: bool = False):
        self.kind = kind
        self.shared_params = shared_params
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}  # an old name -> the key it now reads as

    def register(self, key: str, doc: str, params: tuple[Param, ...] = (), code=None, **tags):
        """Decorator: the function (or class) below is the factory of entry `key`."""
        def add(factory):
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._entries[key] = Entry(key, factory, doc, tuple(params), tags, code)
            return factory
        return add

    def add(self, key: str, factory: Callable, doc: str, params=(), code=None, **tags) -> None:
        self.register(key, doc, params, code, **tags)(factory)

    def remove(self, key: str) -> None:
        """Forget an entry (for tests that register a throwaway one)."""
        self._entries.pop(key, None)

    def alias(self, old: str, key: str) -> None:
        """Configs that name `old` load as `key` (and are written with `key`); `old` is listed
        nowhere."""
        self._aliases[old] = self[key].key

    def __getitem__(self, key: str) -> Entry:
        try:
            return self._entries[self._aliases.get(key, key)]
        except (KeyError, TypeError):
            raise SpecError(f"unknown {self.kind} {short(key)}; allowed: "
                            f"{', '.join(self._entries)}") from None

    def __contains__(self, key) -> bool:
        # a list key must not raise
        return isinstance(key, str) and (key in self._entries or key in self._aliases)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def offered(self) -> list[str]:
        """The keys the pickers list: all but entries tagged offered=False (still valid in a
        config, e.g. softmax as a hidden activation)."""
        return [e.key for e in self if e.tags.get("offered", True)]

    def default(self, role=True) -> str:
        """The key of the entry tagged default=role (True, or e.g. "classification" for the
        loss a classification task starts with): the spec's defaults are read from here."""
        keys = self.where(default=role)
        if len(keys) != 1:
            raise LookupError(f"{len(keys)} {self.kind} entries are tagged default={role!r}; "
                              "exactly one must be")
        return keys[0]

    def where(self, **tags) -> list[str]:
        """Keys of the entries whose tags match, e.g. DATASETS.where(task='regression')."""
        return [e.key for e in self if all(e.tags.get(k) == v for k, v in tags.items())]

    def known_param(self, entry: Entry, name: str) -> Param | None:
        own = entry.param(name)
        if own is not None or not self.shared_params:
            return own
        return next((p for e in self for p in e.params if p.name == name), None)


# ----------------------------------------------------------------------------- activations
# tags: dies=True marks units that can output exactly zero for every input (dead ReLUs);
# bounds=(lo, hi) marks squashing functions whose outputs can saturate near those bounds;
# init= the initializer whose variance suits the function (used in the health advice);
# linear=True: the identity, which adds no bend. In every registry, offered=False keeps an
# entry out of the pickers while configs that name it still load.
# In every registry, default=True marks the entry a new experiment starts with.

ACTIVATIONS = Registry("activation")
_A = ACTIVATIONS.add
_A("linear", nn.Identity, "No non-linearity: a stack of linear layers is still one linear map.",
   init="xavier_uniform", linear=True)
_A("sigmoid", nn.Sigmoid, "Squashes to (0, 1); its slope is at most 0.25, so deep stacks starve "
   "early layers of gradient.", bounds=(0.0, 1.0), init="xavier_uniform")
_A("tanh", nn.Tanh, "Zero-centred squash to (-1, 1); slope 1 at zero but vanishing for |x| > 3.",
   bounds=(-1.0, 1.0), init="xavier_uniform")
_A("relu", nn.ReLU, "max(0, x): cheap, does not saturate for x > 0, but a unit stuck below zero "
   "for every input stops learning (dead).", dies=True, init="he_normal", default=True)
_A("leaky_relu", nn.LeakyReLU, "Like ReLU with a small slope for x < 0, so no unit can die.",
   (Param("negative_slope", 0.01, "slope for x < 0", low=0.0, high=1.0),), init="he_normal")
_A("prelu", nn.PReLU, "Leaky ReLU whose negative slope is learned.",
   (Param("init", 0.25, "starting negative slope", low=0.0, high=1.0),), init="he_normal")
_A("elu", nn.ELU, "Smooth for x < 0 (alpha*(e^x - 1)), pushing mean activations toward zero.",
   (Param("alpha", 1.0, "value approached for very negative x", low=0.0, low_open=True, high=10.0),),
   init="he_normal")
_A("selu", nn.SELU, "Scaled ELU that keeps activations near zero mean, unit variance with LeCun "
   "init: self-normalising deep nets.", init="lecun_normal")
_A("gelu", nn.GELU, "x times the Gaussian CDF of x: a smooth ReLU used in transformers.",
   init="he_normal")
_A("silu", nn.SiLU, "SiLU, also called swish: x * sigmoid(x), smooth and non-monotonic near "
   "zero.", init="he_normal")
ACTIVATIONS.alias("swish", "silu")  # one function, once in the pickers; old configs still load
_A("softplus", nn.Softplus, "log(1 + e^(beta x)) / beta: a smooth ReLU that is never exactly "
   "zero.",
   (Param("beta", 1.0, "sharpness", low=0.0, low_open=True, high=100.0),), init="he_normal")
_A("hard_sigmoid", nn.Hardsigmoid, "Piecewise-linear sigmoid: 0 below -3, 1 above 3, flat and "
   "gradient-free outside.", bounds=(0.0, 1.0), init="xavier_uniform")
_A("softmax", partial(nn.Softmax, dim=1), "Turns a vector into probabilities that sum to 1; "
   "belongs on outputs (the cross-entropy loss applies it for you), so the pickers do not offer "
   "it for hidden layers.", bounds=(0.0, 1.0), init="xavier_uniform", offered=False)


# ----------------------------------------------------------------------------- initializers

INITIALIZERS = Registry("initializer")
# tags: family= the scheme a variant belongs to (He, Xavier, LeCun), as the health advice names it.


@INITIALIZERS.register("zeros", "All weights zero: every unit in a layer computes the same thing "
                       "and gets the same gradient, so they never become different (symmetry).")
def zeros(t, generator):
    nn.init.zeros_(t)


@INITIALIZERS.register("constant", "Every weight the same value: symmetric like zeros.",
                       (Param("value", 0.1, "the value", low=-10.0, high=10.0),))
def constant(t, generator, value):
    nn.init.constant_(t, value)


@INITIALIZERS.register("uniform", "Uniform in [a, b]: the scale ignores the layer's width.",
                       (Param("a", -0.05, "lower end", low=-10.0, high=10.0),
                        Param("b", 0.05, "upper end", low=-10.0, high=10.0)))
def uniform(t, generator, a, b):
    nn.init.uniform_(t, a, b, generator=generator)


@INITIALIZERS.register("normal", "Gaussian with a fixed std: too small and signals shrink layer "
                       "by layer, too large and they blow up.",
                       (Param("mean", 0.0, "mean", low=-10.0, high=10.0),
                        Param("std", 0.01, "standard deviation", low=0.0, high=10.0, log=True)))
def normal(t, generator, mean, std):
    nn.init.normal_(t, mean, std, generator=generator)


@INITIALIZERS.register("xavier_uniform", "Glorot: variance 2/(fan_in+fan_out). Keeps activations "
                       "and gradients within a small factor through tanh layers; through sigmoid "
                       "the activations stay steady but the gradient still vanishes (its slope "
                       "is at most 1/4).",
                       (Param("gain", 1.0, "scale factor", low=0.0, high=10.0),), family="Xavier")
def xavier_uniform(t, generator, gain):
    nn.init.xavier_uniform_(t, gain, generator=generator)


@INITIALIZERS.register("xavier_normal", "Glorot, Gaussian form: std sqrt(2/(fan_in+fan_out)).",
                       (Param("gain", 1.0, "scale factor", low=0.0, high=10.0),), family="Xavier")
def xavier_normal(t, generator, gain):
    nn.init.xavier_normal_(t, gain, generator=generator)


_MODE = Param("mode", "fan_in", "fan_in keeps forward signals steady, fan_out the gradients",
              choices=("fan_in", "fan_out"))


@INITIALIZERS.register("he_uniform", "He/Kaiming: variance 2/fan, doubling Xavier's to make up "
                       "for ReLU zeroing half its inputs.", (_MODE,), family="He")
def he_uniform(t, generator, mode):
    nn.init.kaiming_uniform_(t, mode=mode, nonlinearity="relu", generator=generator)


@INITIALIZERS.register("he_normal", "He/Kaiming, Gaussian form: std sqrt(2/fan). The default "
                       "for ReLU nets.", (_MODE,), family="He", default=True)
def he_normal(t, generator, mode):
    nn.init.kaiming_normal_(t, mode=mode, nonlinearity="relu", generator=generator)


@INITIALIZERS.register("lecun_normal", "LeCun: std sqrt(1/fan_in), the partner of SELU.",
                       family="LeCun")
def lecun_normal(t, generator):
    # std = gain / sqrt(fan_in) with the linear gain 1: sqrt(1/fan_in)
    nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="linear", generator=generator)


@INITIALIZERS.register("orthogonal", "A random orthogonal matrix: preserves vector lengths "
                       "exactly, good for deep linear paths and RNNs.",
                       (Param("gain", 1.0, "scale factor", low=0.0, high=10.0),))
def orthogonal(t, generator, gain):
    nn.init.orthogonal_(t, gain, generator=generator)


@INITIALIZERS.register("torch_default", "What nn.Linear does on its own: uniform in "
                       "+-1/sqrt(fan_in) (Kaiming uniform with a = sqrt(5)).")
def torch_default(t, generator):
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)


# ----------------------------------------------------------------------------- optimizers
# Parameter names are torch's own, so the exported script and the docs read the same.
# tags: adaptive=True scales each weight's step by its own gradient history (the health advice
# treats their learning rates as step sizes); default/starts_with: the spec's default optimizer.

OPTIMIZERS = Registry("optimizer", shared_params=True)


def _lr(default):
    return Param("lr", default, "learning rate: the step size", low=0.0, low_open=True, high=10.0,
                 log=True)


_WD = Param("weight_decay", 0.0, "shrinks every weight a little each step (L2 inside the "
            "optimizer)", low=0.0, high=1.0)
_BETAS = Param("betas", (0.9, 0.999), "decay rates of the running mean of gradients and of their "
               "squares", low=0.0, high=1.0, high_open=True)


OPTIMIZERS.add("sgd", torch.optim.SGD,
               "Plain gradient descent; momentum adds a velocity that smooths and speeds it up, "
               "Nesterov looks ahead before stepping.",
               (_lr(0.1), Param("momentum", 0.0, "share of the last step kept", low=0.0, high=1.0,
                                high_open=True),
                Param("nesterov", False, "evaluate the gradient at the look-ahead point"), _WD),
               default=True, starts_with={"lr": 0.1, "momentum": 0.9})
OPTIMIZERS.add("adagrad", torch.optim.Adagrad,
               "Divides each weight's step by the root of its summed squared gradients: rare "
               "features get big steps, but steps only ever shrink.",
               (_lr(0.05), Param("lr_decay", 0.0, "per-step decay", low=0.0, high=1.0),
                Param("eps", 1e-10, "avoids division by zero", low=0.0, low_open=True, high=1.0,
                      log=True), _WD), adaptive=True)
OPTIMIZERS.add("rmsprop", torch.optim.RMSprop,
               "Like AdaGrad with a moving average of squared gradients, so steps do not die out.",
               (_lr(0.01), Param("alpha", 0.99, "decay of the squared-gradient average", low=0.0,
                                 high=1.0, high_open=True),
                Param("eps", 1e-8, "avoids division by zero", low=0.0, low_open=True, high=1.0,
                      log=True),
                Param("momentum", 0.0, "share of the last step kept", low=0.0, high=1.0,
                      high_open=True),
                Param("centered", False, "divide by the gradient variance instead"), _WD),
               adaptive=True)
OPTIMIZERS.add("adam", torch.optim.Adam,
               "Momentum plus RMSprop with bias correction: a robust default that needs little "
               "tuning.",
               (_lr(0.01), _BETAS, Param("eps", 1e-8, "avoids division by zero", low=0.0,
                                         low_open=True, high=1.0, log=True), _WD,
                Param("amsgrad", False, "never let the squared-gradient average shrink")),
               adaptive=True)
OPTIMIZERS.add("adamw", torch.optim.AdamW,
               "Adam with weight decay applied to the weights directly, not mixed into the "
               "adaptive step.",
               (_lr(0.01), _BETAS, Param("eps", 1e-8, "avoids division by zero", low=0.0,
                                         low_open=True, high=1.0, log=True),
                Param("weight_decay", 0.01, "decoupled weight decay", low=0.0, high=1.0),
                Param("amsgrad", False, "never let the squared-gradient average shrink")),
               adaptive=True)
OPTIMIZERS.add("adadelta", torch.optim.Adadelta,
               "Scales steps by the ratio of recent update size to recent gradient size: almost "
               "no learning rate to tune.",
               (_lr(1.0), Param("rho", 0.9, "decay of the running averages", low=0.0, high=1.0,
                                high_open=True),
                Param("eps", 1e-6, "avoids division by zero", low=0.0, low_open=True, high=1.0,
                      log=True), _WD))


# ----------------------------------------------------------------------------- schedules
# Schedules step once per training step (not per epoch); reduce_on_plateau steps on evaluations.

SCHEDULES = Registry("schedule")


@SCHEDULES.register("constant", "The learning rate never changes.", steady=True, default=True)
def constant_lr(optimizer, total_steps):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("step", "Multiply the rate by gamma every step_size steps: a staircase.",
                    (Param("step_size", 200, "steps between drops", low=1, high=10**7),
                     Param("gamma", 0.5, "factor at each drop", low=0.0, low_open=True, high=1.0)))
def step_lr(optimizer, total_steps, step_size, gamma):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)


@SCHEDULES.register("exponential", "Multiply the rate by gamma after every step: smooth decay.",
                    (Param("gamma", 0.998, "factor per step", low=0.0, low_open=True, high=1.0),))
def exponential_lr(optimizer, total_steps, gamma):
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


@SCHEDULES.register("cosine", "Half a cosine from the start rate down to eta_min over the run: "
                    "fast early, gentle at the end.",
                    (Param("eta_min", 0.0, "rate at the last step", low=0.0, high=10.0),))
def cosine_lr(optimizer, total_steps, eta_min):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total_steps), eta_min)


@SCHEDULES.register("warmup_cosine", "Ramp linearly from near zero for `warmup` steps, then "
                    "cosine decay: avoids wild first steps while statistics are poor.",
                    (Param("warmup", 100, "warm-up steps", low=0, high=10**7),))
def warmup_cosine_lr(optimizer, total_steps, warmup):
    warmup = min(warmup, max(total_steps - 1, 0))

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULES.register("one_cycle", "Rise to the chosen rate, then anneal far below it in one "
                    "cycle (Smith's super-convergence).",
                    (Param("pct_start", 0.3, "share of the run spent rising", low=0.0,
                           low_open=True, high=1.0, high_open=True),
                     Param("div_factor", 25.0, "start rate = lr / div_factor", low=1.0,
                           high=1e4),
                     Param("cycle_momentum", False, "also cycle momentum inversely")))
def one_cycle_lr(optimizer, total_steps, pct_start, div_factor, cycle_momentum):
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr, total_steps=max(2, total_steps), pct_start=pct_start,
        div_factor=div_factor, cycle_momentum=cycle_momentum)


@SCHEDULES.register("reduce_on_plateau", "Cut the rate by `factor` when the validation loss has "
                    "not improved for `patience` evaluations.",
                    (Param("factor", 0.5, "multiplier at each cut", low=0.0, low_open=True,
                           high=1.0, high_open=True),
                     Param("patience", 5, "evaluations without improvement before a cut",
                           low=0, high=10**6)),
                    on_metric=True)
def plateau_lr(optimizer, total_steps, factor, patience):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", factor, patience)


# ----------------------------------------------------------------------------- losses
# task: which targets the loss is written for. A regression loss on a classification task
# compares softmax probabilities with one-hot targets (the classic "MSE for classification").
# default=<task>: the loss a task starts with; squared=True: its value has the noise variance
# as its floor on a regression with Gaussian noise (the health check's noise floor).

LOSSES = Registry("loss")
LOSSES.add("mse", nn.MSELoss, "Mean squared error: punishes big misses quadratically.",
           task="regression", default="regression", squared=True)
LOSSES.add("mae", nn.L1Loss, "Mean absolute error: every unit of error costs the "
           "same, so outliers pull less.", task="regression")
LOSSES.add("huber", nn.HuberLoss, "Quadratic near zero, linear past "
           "delta: MSE's smoothness with MAE's robustness.",
           (Param("delta", 1.0, "where quadratic turns linear", low=0.0, low_open=True,
                  high=100.0),), task="regression")
LOSSES.add("bce", nn.BCEWithLogitsLoss, "Binary cross-entropy on one logit (sigmoid "
           "inside, numerically stable): for two classes.", task="classification", binary=True)
LOSSES.add("cross_entropy", nn.CrossEntropyLoss, "Softmax plus negative log-likelihood of the "
           "true class: the standard classification loss.",
           (Param("label_smoothing", 0.0, "share of probability spread over all classes",
                  low=0.0, high=1.0, high_open=True),), task="classification",
           default="classification")


# ----------------------------------------------------------------------------- normalizers
# factory(x_train) -> (shift, scale); inputs become (x - shift) / scale for every split, so the
# statistics come from the train split only and nothing leaks from validation or test data.

NORMALIZERS = Registry("normalization")


@NORMALIZERS.register("none", "Raw inputs: features on large or uneven scales make the loss "
                      "surface a long, narrow valley.", raw=True)
def no_scaling(x):
    return torch.zeros_like(x[0]), torch.ones_like(x[0])


@NORMALIZERS.register("standard", "Subtract the mean, divide by the standard deviation: every "
                      "feature centred with unit spread.", default=True)
def standardize(x):
    return x.mean(0), safe_scale(x.std(0))


@NORMALIZERS.register("minmax", "Rescale every feature to [0, 1] using the train split's range.")
def min_max(x):
    return x.amin(0), safe_scale(x.amax(0) - x.amin(0))


# ----------------------------------------------------------------------------- filled elsewhere

DATASETS = Registry("dataset")   # data.py
FEATURES = Registry("feature")   # data.py: input features computed from a 2-D point
LAYERS = Registry("layer type")  # model.py

ALL = {"activation": ACTIVATIONS, "initializer": INITIALIZERS, "optimizer": OPTIMIZERS,
       "schedule": SCHEDULES, "loss": LOSSES, "dataset": DATASETS, "feature": FEATURES, "normalization": NORMALIZERS,
       "layer": LAYERS}
