"""ExperimentSpec: the whole experiment as frozen data, parsed from and written to config JSON.

`ExperimentSpec.from_dict(d)` validates everything and fills defaults; `to_dict()` writes JSON
that `from_dict` reads back to an equal spec. A bad value raises SpecError naming its dotted key
(`model.layers[1].units`), the value, and what is allowed. Ranges live in `Param`s next to each
section, and the UI builds its sliders from the same `Param`s.

Two defaults depend on the dataset and are filled when the key is absent: the dataset's own
parameters (`n`, `noise`, `classes`, ...) and the loss (cross-entropy for classification, MSE for
regression).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Mapping

from .errors import SpecError
from .inputs import parse_json, read_user_file, short
from .registry import (
    ACTIVATIONS,
    DATASETS,
    FEATURES,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    NORMALIZERS,
    OPTIMIZERS,
    SCHEDULES,
    Param,
    Registry,
)

# ----------------------------------------------------------------------------- helpers


def _require_mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be an object (a JSON dict), got {short(value)}")
    return value


def _check_keys(value: Mapping, allowed, where: str) -> None:
    unknown = next((k for k in value if k not in allowed), _NONE)
    if unknown is not _NONE:
        raise SpecError(f"unknown key {where}.{_key(unknown)}; allowed keys in {where}: "
                        f"{', '.join(allowed)}")


_NONE = object()


def _key(key) -> str:
    """A user's key as it goes into a dotted path: plain when it is short printable text."""
    if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40:
        return key
    return short(key, 40)


def _params(*ps: Param) -> dict[str, Param]:
    return {p.name: p for p in ps}


def _scalars(params: dict[str, Param], value: Mapping, where: str) -> dict[str, Any]:
    return {k: p.check(value[k], f"{where}.{k}") for k, p in params.items() if k in value}


def _plain(x):
    """JSON-ready copy: tuples -> lists, Choices and sections -> dicts."""
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _int_list(value, where: str, low: int, high: int, least: int = 1) -> tuple[int, ...]:
    """A list of distinct integers in [low, high] with at least `least` entries, as a tuple."""
    ok = isinstance(value, (list, tuple)) and least <= len(value) <= high - low + 1 and all(
        isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)
    if not ok or len(set(value)) != len(value):
        raise SpecError(f"{where}={short(value)} is not allowed: expected a list of at least "
                        f"{least} different integers from {low} to {high}")
    return tuple(value)


def _section_dict(obj) -> dict:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


class _ScalarSection:
    """A section of scalar Params (class attribute PARAMS), parsed, validated and written
    generically, plus any other keys (EXTRA) its own `_read_extra` parses."""

    PARAMS: ClassVar[dict[str, Param]] = {}
    EXTRA: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        return _section_dict(self)

    @classmethod
    def from_dict(cls, value, where: str):
        value = _require_mapping(value, where)
        _check_keys(value, [*cls.EXTRA, *cls.PARAMS], where)
        return cls(**_scalars(cls.PARAMS, value, where), **cls._read_extra(value, where))

    @classmethod
    def _read_extra(cls, value: Mapping, where: str) -> dict:
        return {}

    @classmethod
    def parse(cls, value, where: str):
        """An optional section: null/false is off (None), an object is read (a field left out
        takes its default)."""
        if value is None or value is False:
            return None
        return cls.from_dict(value, where)


# ----------------------------------------------------------------------------- defaults
# A new experiment starts with the entries each registry tags default=True (model.py registers
# its layer types before this module is imported; engine/__init__.py keeps that order).

DEFAULT_DATASET = DATASETS.default()
DEFAULT_FEATURES = tuple(FEATURES.where(default=True))
DEFAULT_LAYER = LAYERS.default()
DEFAULT_LOSS = {task: LOSSES.default(task) for task in ("classification", "regression")}


# ----------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class Choice:
    """A registry key plus the parameters the user set (defaults stay implicit)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self):
        return self.name if not self.params else {"name": self.name, **_plain(self.params)}

    @classmethod
    def parse(cls, value, registry: Registry, where: str) -> "Choice":
        if isinstance(value, Choice):
            value = value.to_dict()
        if isinstance(value, str):
            value = {"name": value}
        value = _require_mapping(value, where)
        if "name" not in value:
            raise SpecError(f"{where} needs a 'name'; allowed: {', '.join(registry.keys())}")
        try:
            entry = registry[value["name"]]
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        params = {}
        for k, v in value.items():
            if k == "name":
                continue
            p = registry.known_param(entry, k)
            if p is None:
                allowed = ", ".join(p.name for p in entry.params) or "none"
                raise SpecError(f"unknown parameter {where}.{_key(k)} for {registry.kind} "
                                f"{entry.key!r}; its parameters: {allowed}")
            params[k] = p.check(v, f"{where}.{k}")
        return cls(entry.key, params)

    def resolved(self, registry: Registry) -> dict[str, Any]:
        """Every parameter of the entry, defaults filled in (the factory's keyword arguments)."""
        return registry[self.name].resolve(self.params)


def _choice(registry: Registry):
    return lambda value, where: Choice.parse(value, registry, where)


# ----------------------------------------------------------------------------- data

DATA_PARAMS = _params(
    Param("normalize", NORMALIZERS.default(), "input scaling fitted on the train split",
          choices=tuple(NORMALIZERS.keys())),
    Param("val_fraction", 0.2, "share held out to watch generalisation", low=0.0, high=0.9),
    Param("test_fraction", 0.0, "share held out until the end", low=0.0, high=0.9),
)


DATA_SEED = Param("seed", 0, "the data's own seed (default: the run's)", low=0,
                  high=2**31 - 1)


def _dataset_param_names() -> set[str]:
    return {p.name for e in DATASETS for p in e.params}


@dataclass(frozen=True)
class DataSpec:
    """The dataset and how it is split and scaled. `params` are the dataset's own parameters
    (n, noise, classes, path, ...: whatever its registry entry declares), validated and with
    defaults filled, like a LayerSpec's; in JSON they sit beside `name`."""

    name: str = DEFAULT_DATASET
    params: Mapping[str, Any] = field(default_factory=lambda: DATASETS[DEFAULT_DATASET].resolve({}))
    features: tuple[str, ...] | None = DEFAULT_FEATURES
    normalize: str = DATA_PARAMS["normalize"].default
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    subset: tuple[int, ...] | None = None  # the class labels kept (renumbered 0, 1, ...)
    # The data's own seed; None: the run's seed draws the data as it draws everything else. A
    # sweep over seeds sets it, so that every variant trains and is scored on the same data.
    seed: int | None = None

    def __getattr__(self, name: str):
        """data.n, data.path, ...: a dataset parameter by name; None where this dataset has no
        such parameter (data.classes: also a dataset's fixed class count, or the subset's)."""
        if name.startswith("_") or name not in _dataset_param_names():
            raise AttributeError(name)
        if name == "classes" and self.subset is not None:
            return len(self.subset)
        if name in self.params:
            return self.params[name]
        return self.entry.tags.get(name)

    @property
    def upload(self) -> str | None:
        """The parameter that names a user's file (a table's path), if this dataset reads one."""
        return self.entry.tags.get("upload")

    def with_params(self, **changes) -> "DataSpec":
        """A copy with some parameters replaced (not validated: build a spec to check them)."""
        return replace(self, params={**self.params, **changes})

    def to_dict(self) -> dict:
        d = {"name": self.name, **_plain(self.params),
             **{f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name not in ("name", "params")}}
        for key in ("features", "subset", "seed"):  # written only when set
            if d[key] is None:
                del d[key]
        return d

    @property
    def entry(self):
        return DATASETS[self.name]

    @property
    def task_kind(self) -> str:
        return self.params.get("task") or self.entry.tags["task"]

    @property
    def per_step(self) -> bool:
        """The dataset asks for an answer at every step of its sequences (its registry tag)."""
        return self.entry.tags.get("targets") == "steps"

    @classmethod
    def from_dict(cls, value, where: str = "data") -> "DataSpec":
        value = _require_mapping(value, where)
        name = value.get("name", cls.name)
        try:
            entry = DATASETS[name]
        except SpecError as e:
            raise SpecError(f"{where}.name: {e}") from None
        own = {p.name: p for p in entry.params}
        allowed = ["name", *own, "features", "subset", "seed", *DATA_PARAMS]
        for key in value:
            if key in allowed:
                continue
            given = value[key]
            if isinstance(key, str) and key in entry.tags:  # fixed by the dataset (circle: 2 classes)
                if given is not None and given != entry.tags[key]:
                    raise SpecError(f"{where}.{key}={short(given)} is not allowed: {name} has "
                                    f"exactly {entry.tags[key]} {key}")
            elif isinstance(key, str) and key in _dataset_param_names():
                if given is not None:
                    raise SpecError(f"{where}.{key} does not apply to dataset {name!r}; its "
                                    f"settings: {', '.join(own) or 'none'}")
            else:
                _check_keys({key: given}, allowed, where)
        # null means "the dataset's default", as an absent key does
        params = {k: p.check(value[k] if value.get(k) is not None else p.default, f"{where}.{k}")
                  for k, p in own.items()}
        kw: dict[str, Any] = {"name": name, "params": params,
                              **_scalars(DATA_PARAMS, value, where)}
        kw["features"] = _parse_features(value.get("features"), entry, where)
        kw["subset"] = _parse_subset(value.get("subset"), entry, params, where)
        if value.get("seed") is not None:
            kw["seed"] = int(DATA_SEED.check(value["seed"], f"{where}.seed"))
        if kw.get("val_fraction", cls.val_fraction) + kw.get("test_fraction", cls.test_fraction) > 0.9:
            raise SpecError(f"{where}.val_fraction + {where}.test_fraction must be at most 0.9 "
                            "so that some data is left to train on")
        return cls(**kw)


def _parse_subset(value, entry, params, where) -> tuple[int, ...] | None:
    """data.subset: some of a classification set's classes, by label (null: all of them)."""
    if value is None:
        return None
    if entry.tags.get("targets") == "steps":
        raise SpecError(f"{where}.subset keeps some classes, but {entry.key!r} has a class at "
                        "every step of a sequence: there is no example to leave out")
    if (params.get("task") or entry.tags.get("task")) != "classification":
        raise SpecError(f"{where}.subset keeps some classes, but {entry.key!r} is not a "
                        f"classification set; allowed with: "
                        f"{', '.join(DATASETS.where(task='classification'))}")
    classes = params.get("classes") or entry.tags.get("classes") or 1000  # a table: on load
    return _int_list(value, f"{where}.subset", 0, classes - 1, least=2)


def _parse_features(value, entry, where) -> tuple[str, ...] | None:
    if entry.tags.get("input") != "plane":
        if value is not None:
            raise SpecError(f"{where}.features only applies to the 2-D datasets "
                            f"({', '.join(DATASETS.where(input='plane'))})")
        return None
    if value is None:
        return DEFAULT_FEATURES
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"{where}.features={short(value)} is not allowed: expected a non-empty "
                        f"list from {', '.join(FEATURES.keys())}")
    for v in value:
        if v not in FEATURES:
            raise SpecError(f"{where}.features: unknown feature {short(v)}; allowed: "
                            f"{', '.join(FEATURES.keys())}")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}.features={short(list(value))} lists a feature twice")
    return tuple(value)


# ----------------------------------------------------------------------------- model

LAYER_OVERRIDES = ("activation", "init", "bias_init")
BIAS_INIT = Param("bias_init", 0.0, "every bias starts at this value", low=-100.0, high=100.0)


@dataclass(frozen=True)
class LayerSpec:
    """One entry of the hidden-layer stack. `params` are the layer type's own (units, p, ...);
    activation/init/bias_init override the model defaults where the type uses them."""

    type: str = DEFAULT_LAYER
    params: Mapping[str, Any] = field(default_factory=dict)
    activation: Choice | None = None
    init: Choice | None = None
    bias_init: float | None = None

    @property
    def entry(self):
        return LAYERS[self.type]

    def get(self, name: str):
        return self.entry.resolve(self.params)[name]

    def to_dict(self) -> dict:
        d = {"type": self.type, **_plain(self.params)}
        for k in LAYER_OVERRIDES:
            if getattr(self, k) is not None:
                d[k] = _plain(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, value, where: str) -> "LayerSpec":
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"type": DEFAULT_LAYER, "units": value}
        value = _require_mapping(value, where)
        kind = value.get("type", DEFAULT_LAYER)
        try:
            entry = LAYERS[kind]
        except SpecError as e:
            raise SpecError(f"{where}.type: {e}") from None
        uses = entry.tags.get("uses", ())
        allowed = ["type", *(p.name for p in entry.params), *uses]
        _check_keys(value, allowed, where)
        kw: dict[str, Any] = {"type": kind, "params": _scalars(
            {p.name: p for p in entry.params}, value, where)}
        # null means "no override": the model's default applies
        if value.get("activation") is not None:
            kw["activation"] = Choice.parse(value["activation"], ACTIVATIONS, f"{where}.activation")
        if value.get("init") is not None:
            kw["init"] = Choice.parse(value["init"], INITIALIZERS, f"{where}.init")
        if value.get("bias_init") is not None:
            kw["bias_init"] = BIAS_INIT.check(value["bias_init"], f"{where}.bias_init")
        return cls(**kw)


MAX_LAYERS = 200
# A config file or JSON text: a 200-layer config with every override is ~40 KB, so 1 MB is far
# more than any real one and still parses in milliseconds.
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    activation: Choice = Choice(ACTIVATIONS.default())
    init: Choice = Choice(INITIALIZERS.default())
    bias_init: float = 0.0
    layers: tuple[LayerSpec, ...] = (LayerSpec(params={"units": 64}), LayerSpec(params={"units": 64}))
    output: Choice | None = None  # initializer of the output layer; None: the model's `init`

    def to_dict(self) -> dict:
        d = _section_dict(self)
        if self.output is None:
            del d["output"]
        return d

    @classmethod
    def from_dict(cls, value, where: str = "model") -> "ModelSpec":
        value = _require_mapping(value, where)
        _check_keys(value, [f.name for f in fields(cls)], where)
        kw: dict[str, Any] = {}
        if "activation" in value:
            kw["activation"] = Choice.parse(value["activation"], ACTIVATIONS, f"{where}.activation")
        if "init" in value:
            kw["init"] = Choice.parse(value["init"], INITIALIZERS, f"{where}.init")
        if "bias_init" in value:
            kw["bias_init"] = BIAS_INIT.check(value["bias_init"], f"{where}.bias_init")
        if value.get("output") is not None:
            kw["output"] = Choice.parse(value["output"], INITIALIZERS, f"{where}.output")
        if "layers" in value:
            layers = value["layers"]
            if not isinstance(layers, (list, tuple)):
                raise SpecError(f"{where}.layers must be a list of layers, got {short(layers)}")
            if len(layers) > MAX_LAYERS:
                raise SpecError(f"{where}.layers has {len(layers)} layers; at most {MAX_LAYERS} "
                                "are allowed")
            kw["layers"] = tuple(LayerSpec.from_dict(v, f"{where}.layers[{i}]")
                                 for i, v in enumerate(layers))
        return cls(**kw)


# ----------------------------------------------------------------------------- training

CLIP_MODES = ("norm", "value")  # the page's clipping picker lists these


@dataclass(frozen=True)
class GradClipSpec:
    """Clip the global gradient norm to `max` (mode "norm") or each gradient entry to +-max."""

    mode: str = "norm"
    max: float = 1.0

    def to_dict(self) -> dict:
        return {self.mode: self.max}

    @classmethod
    def parse(cls, value, where: str) -> "GradClipSpec | None":
        if value is None:
            return None
        if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in CLIP_MODES:
            mode, limit = next(iter(value.items()))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            mode, limit = "norm", value
        else:
            raise SpecError(f"{where}={short(value)} is not allowed: expected null, a number "
                            '(clip the gradient norm), {"norm": x} or {"value": x}')
        limit = Param("max", 1.0, low=0.0, low_open=True, high=1e6).check(limit, f"{where}.{mode}")
        return cls(mode, limit)


ES_PARAMS = _params(
    Param("patience", 10, "evaluations without improvement before stopping", low=1, high=10**6),
    Param("min_delta", 0.0, "smallest drop in val loss that counts as improvement", low=0.0,
          high=1e6),
    Param("restore_best", True, "put back the weights from the best evaluation"),
)


@dataclass(frozen=True)
class EarlyStoppingSpec(_ScalarSection):
    PARAMS: ClassVar[dict[str, Param]] = ES_PARAMS
    patience: int = ES_PARAMS["patience"].default
    min_delta: float = ES_PARAMS["min_delta"].default
    restore_best: bool = ES_PARAMS["restore_best"].default

    @classmethod
    def parse(cls, value, where: str) -> "EarlyStoppingSpec | None":
        """null/false: off; true: defaults; an integer: the patience; or the full object."""
        if value is True:
            return cls()
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"patience": value}
        return super().parse(value, where)


AUG_PARAMS = _params(
    Param("shift", 0, "largest move in whole pixels, up/down and left/right", low=0, high=8),
    Param("rotate", 0.0, "largest turn in degrees, either way", low=0.0, high=45.0),
    Param("noise", 0.0, "std of the Gaussian noise added to every pixel (in the model's "
          "standardised units)", low=0.0, high=2.0),
    Param("flip", False, "mirror left-right half the time (only where a mirrored image is "
          "still the same class: not for digits)"),
)


@dataclass(frozen=True)
class AugmentSpec(_ScalarSection):
    """Random changes to each training batch of images (never to validation or test data):
    more varied examples from the same data."""

    PARAMS: ClassVar[dict[str, Param]] = AUG_PARAMS
    shift: int = AUG_PARAMS["shift"].default
    rotate: float = AUG_PARAMS["rotate"].default
    noise: float = AUG_PARAMS["noise"].default
    flip: bool = AUG_PARAMS["flip"].default

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.noise or self.flip)


TRAINING_PARAMS = _params(
    Param("batch_size", 32, "examples per gradient step", low=1, high=1_000_000, log=True),
    Param("steps", 1000, "gradient steps in the run", low=1, high=10_000_000, log=True),
    Param("eval_every", 0, "steps between validation passes; 0: at every logged row", low=0,
          high=10_000_000),
    Param("log_every", 10, "steps between logged rows (metrics, per-layer statistics and the "
          "health check)", low=1, high=1_000_000),
    Param("tbptt", 0, "truncated backpropagation through time: gradients flow back at most "
          "this many steps of a sequence (0: all the way)", low=0, high=100_000),
)


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int = TRAINING_PARAMS["batch_size"].default
    steps: int = TRAINING_PARAMS["steps"].default
    grad_clip: GradClipSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    eval_every: int = TRAINING_PARAMS["eval_every"].default
    log_every: int = TRAINING_PARAMS["log_every"].default
    augment: AugmentSpec | None = None
    tbptt: int = TRAINING_PARAMS["tbptt"].default

    def to_dict(self) -> dict:
        d = _section_dict(self)
        if d["augment"] is None:  # written only when on: configs without it read as before
            del d["augment"]
        if not d["tbptt"]:
            del d["tbptt"]
        return d

    @classmethod
    def from_dict(cls, value, where: str = "training") -> "TrainingSpec":
        value = _require_mapping(value, where)
        _check_keys(value, [f.name for f in fields(cls)], where)
        kw = _scalars(TRAINING_PARAMS, value, where)
        kw["grad_clip"] = GradClipSpec.parse(value.get("grad_clip"), f"{where}.grad_clip")
        kw["early_stopping"] = EarlyStoppingSpec.parse(value.get("early_stopping"),
                                                   f"{where}.early_stopping")
        kw["augment"] = AugmentSpec.parse(value.get("augment"), f"{where}.augment")
        return cls(**kw)


REG_PARAMS = _params(
    Param("l1", 0.0, "adds l1 * sum|w|: pushes weights to exactly zero", low=0.0, high=1.0),
    Param("l2", 0.0, "adds l2 * sum w^2: keeps weights small", low=0.0, high=1.0),
)


@dataclass(frozen=True)
class RegularizationSpec(_ScalarSection):
    PARAMS: ClassVar[dict[str, Param]] = REG_PARAMS
    l1: float = REG_PARAMS["l1"].default
    l2: float = REG_PARAMS["l2"].default


# ----------------------------------------------------------------------------- phases before the run

PRETRAIN_PARAMS = _params(
    Param("steps", 300, "gradient steps on the pretraining classes", low=1, high=100_000,
          log=True),
    Param("n", 0, "examples drawn for pretraining (0: the dataset's own default)", low=0,
          high=1_000_000),
)


@dataclass(frozen=True)
class PretrainSpec(_ScalarSection):
    """Transfer learning: first train the same hidden layers on other classes of the same
    dataset (`classes`), then start this run from those weights with a new output layer, the
    hidden layers listed in `freeze` (indices into model.layers) kept exactly as pretrained."""

    PARAMS: ClassVar[dict[str, Param]] = PRETRAIN_PARAMS
    EXTRA: ClassVar[tuple[str, ...]] = ("classes", "freeze")
    classes: tuple[int, ...] = ()
    steps: int = PRETRAIN_PARAMS["steps"].default
    n: int = PRETRAIN_PARAMS["n"].default
    freeze: tuple[int, ...] = ()

    @classmethod
    def _read_extra(cls, value, where):
        if "classes" not in value:
            raise SpecError(f"{where} needs 'classes': the class labels to pretrain on, e.g. "
                            "[0, 1, 2, 3, 4]")
        return {"classes": _int_list(value["classes"], f"{where}.classes", 0, 999, least=2),
                "freeze": _int_list(value.get("freeze", []), f"{where}.freeze", 0,
                                    MAX_LAYERS - 1, least=0)}


DISTILL_PARAMS = _params(
    Param("steps", 1000, "gradient steps that train the teacher first", low=1, high=100_000,
          log=True),
    Param("temperature", 4.0, "softens both nets' outputs: softmax(z / T); higher shows more "
          "of the teacher's view of which wrong classes look alike", low=1.0, high=20.0),
    Param("alpha", 0.9, "weight of matching the teacher; 1 - alpha goes to the true labels",
          low=0.0, high=1.0),
)


@dataclass(frozen=True)
class DistillSpec(_ScalarSection):
    """Knowledge distillation: first train a teacher (the `teacher` layer stack, the rest of the
    spec the same) on the same data, then train this run's model to match the teacher's softened
    outputs as well as the labels (Hinton et al., 2015)."""

    PARAMS: ClassVar[dict[str, Param]] = DISTILL_PARAMS
    EXTRA: ClassVar[tuple[str, ...]] = ("teacher",)
    teacher: tuple[LayerSpec, ...] = ()
    steps: int = DISTILL_PARAMS["steps"].default
    temperature: float = DISTILL_PARAMS["temperature"].default
    alpha: float = DISTILL_PARAMS["alpha"].default

    @classmethod
    def _read_extra(cls, value, where):
        layers = value.get("teacher")
        if not isinstance(layers, (list, tuple)) or not layers or len(layers) > MAX_LAYERS:
            raise SpecError(f"{where}.teacher={short(layers)} is not allowed: expected the "
                            f"teacher's layer stack, a list of 1 to {MAX_LAYERS} layers like "
                            "model.layers")
        return {"teacher": tuple(LayerSpec.from_dict(v, f"{where}.teacher[{i}]")
                                 for i, v in enumerate(layers))}


# ----------------------------------------------------------------------------- experiment

TOP_PARAMS = _params(
    Param("seed", 0, "seeds data, initial weights, batch order and dropout", low=0,
          high=2**31 - 1),
    Param("device", "auto", "auto: CUDA when present", choices=("auto", "cpu", "cuda")),
)


@dataclass(frozen=True)
class ExperimentSpec:
    seed: int = 0
    device: str = "auto"
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    loss: Choice = Choice(DEFAULT_LOSS[DataSpec().task_kind])
    optimizer: Choice = Choice(OPTIMIZERS.default(),
                               OPTIMIZERS[OPTIMIZERS.default()].tags.get("starts_with", {}))
    schedule: Choice = Choice(SCHEDULES.default())
    regularization: RegularizationSpec = RegularizationSpec()
    training: TrainingSpec = TrainingSpec()
    pretrain: PretrainSpec | None = None
    distill: DistillSpec | None = None

    def __post_init__(self):
        _check_consistency(self)

    # -- serialisation
    def to_dict(self) -> dict:
        d = _section_dict(self)
        for key in OPTIONAL_SECTIONS:  # written only when on: configs without them read as before
            if d[key] is None:
                del d[key]
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, value) -> "ExperimentSpec":
        value = _upgrade(_require_mapping(value, "config"))
        _check_keys(value, [f.name for f in fields(cls)], "config")
        kw: dict[str, Any] = _scalars(TOP_PARAMS, value, "config")
        sections: dict[str, Callable] = {
            "data": DataSpec.from_dict, "model": ModelSpec.from_dict,
            "training": TrainingSpec.from_dict, "regularization": RegularizationSpec.from_dict,
            "loss": _choice(LOSSES), "optimizer": _choice(OPTIMIZERS),
            "schedule": _choice(SCHEDULES), "pretrain": PretrainSpec.parse,
            "distill": DistillSpec.parse}
        for key, parse in sections.items():
            if key in value:
                kw[key] = parse(value[key], key)
        data = kw.get("data", cls.data)
        if "loss" not in value:
            kw["loss"] = Choice(DEFAULT_LOSS[data.task_kind])
        if "seed" in kw:
            kw["seed"] = int(kw["seed"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ExperimentSpec":
        return cls.from_dict(parse_json(text, "config", MAX_CONFIG_BYTES))

    def canonical(self) -> "ExperimentSpec":
        """The same experiment in one spelling: choice parameters equal to their defaults are
        dropped (and an optimizer's borrowed sibling parameters with them), layer parameters are
        all written out. Two specs that train identically compare equal after this."""
        m = self.model
        layers = tuple(replace(layer, params=layer.entry.resolve(layer.params),
                               activation=_canon(layer.activation, ACTIVATIONS),
                               init=_canon(layer.init, INITIALIZERS)) for layer in m.layers)
        model = replace(m, activation=_canon(m.activation, ACTIVATIONS),
                        init=_canon(m.init, INITIALIZERS), output=_canon(m.output, INITIALIZERS),
                        layers=layers)
        return replace(self, model=model, loss=_canon(self.loss, LOSSES),
                       optimizer=_canon(self.optimizer, OPTIMIZERS, keep=("lr",)),
                       schedule=_canon(self.schedule, SCHEDULES))

    def with_upload(self, path: str) -> "ExperimentSpec":
        """The same experiment reading its user's file from `path` (a dataset with no such file
        is returned unchanged)."""
        if not self.data.upload:
            return self
        return replace(self, data=self.data.with_params(**{self.data.upload: path}))

    def with_changes(self, changes: Mapping[str, Any]) -> "ExperimentSpec":
        """A new spec with dotted keys set, e.g. {"optimizer.lr": 0.3, "model.init": "he_normal"}."""
        d = self.to_dict()
        for path, v in changes.items():
            set_path(d, path, v)
        return ExperimentSpec.from_dict(d)


OPTIONAL_SECTIONS = ("pretrain", "distill")


def _upgrade(config: Mapping) -> Mapping:
    """Configs written before a key was renamed, in today's spelling (to_dict writes only the new
    keys): diagnostics.every -> training.log_every (it governs every logged row, not only the
    per-layer statistics)."""
    if "diagnostics" not in config:
        return config
    old = _require_mapping(config["diagnostics"], "diagnostics")
    _check_keys(old, ["every"], "diagnostics")
    config = {k: v for k, v in config.items() if k != "diagnostics"}
    training = dict(_require_mapping(config.get("training", {}), "training"))
    if "every" in old:  # checked under the name the config uses
        TRAINING_PARAMS["log_every"].check(old["every"], "diagnostics.every")
        if "log_every" in training and training["log_every"] != old["every"]:
            raise SpecError("diagnostics.every (the old name of training.log_every) and "
                            "training.log_every disagree; keep one of them")
        training.setdefault("log_every", old["every"])
    return {**config, "training": training}


def _check_consistency(spec: ExperimentSpec) -> None:
    """Rules that tie sections together (each section validated itself already)."""
    task = spec.data.task_kind
    loss = LOSSES[spec.loss.name]
    if task == "regression" and loss.tags["task"] == "classification":
        raise SpecError(f"loss={spec.loss.name!r} needs a classification dataset, but "
                        f"{spec.data.name!r} is regression; allowed: "
                        f"{', '.join(LOSSES.where(task='regression'))}")
    if loss.tags.get("binary") and spec.data.classes not in (None, 2):  # None: a CSV, checked on load
        raise SpecError(f"loss={spec.loss.name!r} needs exactly 2 classes, but data.classes="
                        f"{spec.data.classes}; use {DEFAULT_LOSS['classification']!r} for more "
                        "classes")
    opt = spec.optimizer.resolved(OPTIMIZERS)
    if opt.get("nesterov") and opt.get("momentum", 0) <= 0:
        raise SpecError("optimizer.nesterov=true needs optimizer.momentum > 0")
    sched = spec.schedule.resolved(SCHEDULES)
    if sched.get("cycle_momentum"):
        with_momentum = [e.key for e in OPTIMIZERS if e.param("momentum") or e.param("betas")]
        if spec.optimizer.name not in with_momentum:
            raise SpecError(f"schedule.cycle_momentum=true needs an optimizer with momentum; "
                            f"{spec.optimizer.name!r} has none. Allowed: {', '.join(with_momentum)}")
    batch_stats = [layer.type for layer in spec.model.layers if layer.entry.tags.get("batch_stats")]
    if spec.training.batch_size < 2 and batch_stats:
        per_example = LAYERS.where(normalizes=True, batch_stats=None)
        raise SpecError(f"training.batch_size=1 cannot train a {batch_stats[0]} layer (it "
                        "normalises over the batch); use a batch of at least 2"
                        + "".join(f" or {k}" for k in per_example[:1]))
    images_in = DATASETS[spec.data.name].tags.get("input") == "image"
    for i, layer in enumerate(spec.model.layers):
        if layer.entry.tags.get("image_only") and not images_in:
            kind = ("an " if layer.type[0] in "aeiou" else "a ") + layer.type
            raise SpecError(f"model.layers[{i}]: {kind} layer needs images (channels, height, "
                            f"width), and {spec.data.name!r} is not an image set; use it with "
                            f"{', '.join(DATASETS.where(input='image'))}, or remove the layer")
    if spec.training.augment is not None and not images_in:
        images = ", ".join(DATASETS.where(input="image"))
        raise SpecError(f"training.augment changes images, but {spec.data.name!r} is not an "
                        f"image set; allowed with: {images}")
    _check_phases(spec)
    if spec.training.early_stopping is not None and spec.data.val_fraction <= 0:
        raise SpecError("training.early_stopping watches the validation loss, so it needs "
                        "data.val_fraction > 0")


def _check_phases(spec: ExperimentSpec) -> None:
    """pretrain and distill: what they need of the rest of the spec."""
    pre, layers = spec.pretrain, spec.model.layers
    if pre is not None:
        if spec.data.task_kind != "classification" or spec.data.entry.tags.get("targets"):
            raise SpecError("pretrain trains on some classes and fine-tunes on others, so it "
                            "needs a classification dataset with one class per example")
        n = spec.data.entry.param("n")
        if pre.n and n is not None:
            n.check(pre.n, "pretrain.n")
        total = spec.data.entry.tags.get("classes") or spec.data.params.get("classes")
        if total is not None and max(pre.classes) >= total:
            raise SpecError(f"pretrain.classes={list(pre.classes)}: {spec.data.name!r} has "
                            f"classes 0 to {total - 1}")
        tuned = spec.data.subset or (range(total) if total else ())
        shared = sorted(set(pre.classes) & set(tuned))
        if shared:
            raise SpecError(f"pretrain.classes and the classes this run trains on share "
                            f"{shared}: pretraining would see the examples it is then tested "
                            "on. Set data.subset to the other classes")
        if any(i >= len(layers) for i in pre.freeze):
            raise SpecError(f"pretrain.freeze={list(pre.freeze)}: the model has "
                            f"{len(layers)} layers, model.layers[0] to [{len(layers) - 1}]")
    if spec.distill is not None:
        if spec.data.task_kind != "classification" or LOSSES[spec.loss.name].tags.get("binary") \
                or LOSSES[spec.loss.name].tags["task"] != "classification":
            raise SpecError("distill matches the teacher's class probabilities, so it needs a "
                            "classification dataset and a multi-class loss "
                            f"({DEFAULT_LOSS['classification']!r})")
        if pre is not None:
            raise SpecError("pretrain and distill cannot be combined in one run; use one")


def _canon(choice: Choice | None, registry: Registry, keep=()) -> Choice | None:
    """The choice with parameters at their defaults dropped, except those in `keep`, which are
    always written out (so "adam" and {"name": "adam", "lr": 0.01} are one spelling)."""
    if choice is None:
        return None
    entry = registry[choice.name]
    params = {k: v for k, v in choice.params.items()
              if entry.param(k) is not None and (k in keep or v != entry.param(k).default)}
    for k in keep:
        if entry.param(k) is not None:
            params.setdefault(k, entry.param(k).default)
    return Choice(choice.name, params)


def set_path(d: dict, path: str, value) -> None:
    """Set a dotted key in a nested config dict; integers index lists (model.layers.0.units)."""
    if not isinstance(path, str) or len(path) > 200:
        raise SpecError(f"cannot set {short(path)}: expected a dotted key of at most 200 "
                        "characters, e.g. optimizer.lr")
    keys = path.split(".")
    node = d
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(k)]
            except (ValueError, IndexError):
                raise SpecError(f"{'.'.join(keys[:i + 1])}: no such list index") from None
            continue
        nxt = node.get(k)
        if isinstance(nxt, str):  # a choice written as its key gains parameters
            nxt = node[k] = {"name": nxt}
        elif isinstance(nxt, int) and not isinstance(nxt, bool) and keys[0] == "model":
            nxt = node[k] = {"type": DEFAULT_LAYER, "units": nxt}  # layer shorthand
        elif nxt is None:
            nxt = node[k] = {}
        elif not isinstance(nxt, (dict, list)):
            raise SpecError(f"cannot set {path}: {'.'.join(keys[:i + 1])} is {short(nxt)}, not "
                            "an object")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise SpecError(f"{path}: no such list index") from None
    else:
        node[last] = value  # a bare key replacing a choice drops its old parameters


def load_spec(source) -> ExperimentSpec:
    """A spec from an ExperimentSpec, a dict, a JSON string or a path to a JSON file (read
    through engine.core.inputs: a local regular file of at most MAX_CONFIG_BYTES, UTF-8 with or
    without a byte-order mark)."""
    if isinstance(source, ExperimentSpec):
        return source
    if isinstance(source, Mapping):
        try:
            value = copy.deepcopy(dict(source))
        except RecursionError:
            raise SpecError("config nests too deep to be a config") from None
        return ExperimentSpec.from_dict(value)
    if isinstance(source, str) and source.lstrip("\ufeff \t\r\n").startswith("{"):
        return ExperimentSpec.from_json(source)
    data = read_user_file(source, "cannot read config file", MAX_CONFIG_BYTES)
    return ExperimentSpec.from_dict(parse_json(data, f"config file {short(os.fspath(source))}",
                                               MAX_CONFIG_BYTES))
