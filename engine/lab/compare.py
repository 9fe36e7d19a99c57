"""Side by side: one experiment and its variants along one axis (RNN vs LSTM vs GRU, with and
without clipping, several truncation lengths), trained in step on the same data and seed.

A comparison is one entry of COMPARISONS; its factory(spec, shape) returns the variants as
(label, changes) pairs, the experiment itself first with no changes. Besides them, an A/B
comparison changes one setting (any dotted key, "same seed, one thing different"): its name is
"ab:" followed by the change as JSON (`one_change`), so it travels as a plain string like the
others (the page's picker, a run's `compare`, a preset's "compare": {"change": {...}}). `changes` are dotted keys
for ExperimentSpec.with_changes, so a variant is always a valid spec of its own: the page trains
each as a Trainer beside the run (serve/runs.py), and `summary` reads the same numbers from each.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..core.errors import SpecError
from ..core.registry import OPTIMIZERS, Registry
from ..core.spec import ExperimentSpec
from ..nn.recurrent import CELLS, with_cell
from ..train.evidence import time_ratios_of

COMPARISONS = Registry("comparison")  # tag x: what the page draws their curves against


@dataclass(frozen=True)
class Shape:
    """What a comparison may need to know of the data: one example's shape and how many
    training examples there are (0: not known)."""
    in_shape: tuple
    n_train: int = 0

    def __getitem__(self, k):  # reads like the in_shape tuple it wraps
        return self.in_shape[k]

    def __len__(self):
        return len(self.in_shape)

    @classmethod
    def of(cls, data) -> "Shape":
        """From a Dataset, a Shape or a bare in_shape tuple."""
        if isinstance(data, Shape):
            return data
        if hasattr(data, "y_train"):
            return cls(tuple(data.in_shape), len(data.y_train))
        return cls(tuple(data))


CLIP_TRIED = 1.0  # the limit a run without clipping is compared with (the clipping preset's)
MAX_VARIANTS = 4  # the experiment and at most three others


def _recurrent_layers(spec: ExperimentSpec) -> list[int]:
    return [i for i, layer in enumerate(spec.model.layers) if layer.type in CELLS]


@COMPARISONS.register("cells", "The same network with each recurrent cell: a plain RNN, an "
                      "LSTM and a GRU of the same width.", title="RNN vs LSTM vs GRU")
def _cells(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    layers = _recurrent_layers(spec)
    if not layers:
        raise SpecError("there is no rnn, lstm or gru layer to swap")
    kinds = [spec.model.layers[i].type for i in layers]
    mine = kinds[0] if len(set(kinds)) == 1 else None
    out = [(_mine(CELLS[mine] if mine else "mixed cells"), {})]
    for kind, label in CELLS.items():
        if kind != mine:
            out.append((label, {f"model.layers.{i}": with_cell(spec, i, kind) for i in layers}))
    return out


@COMPARISONS.register("clipping", "The same run with and without gradient clipping (by norm, "
                      f"at {CLIP_TRIED:g} where this run has none).",
                      title="with and without clipping")
def _clipping(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    clip = spec.training.grad_clip
    if clip is None:
        return [(_mine("no clipping"), {}),
                (f"clip norm at {CLIP_TRIED:g}", {"training.grad_clip": CLIP_TRIED})]
    return [(_mine(f"clip {clip.mode} at {clip.max:g}"), {}),
            ("no clipping", {"training.grad_clip": None})]


@COMPARISONS.register("tbptt", "The same run with backpropagation through the whole sequence "
                      "and truncated after fewer steps.", title="truncation lengths")
def _tbptt(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    if not _recurrent_layers(spec):
        raise SpecError("truncation acts on rnn, lstm and gru layers; this model has none")
    steps = shape[0] if len(shape) >= 1 else 0
    if steps < 3:
        raise SpecError("the sequences are too short to truncate")
    mine = spec.training.tbptt if 0 < spec.training.tbptt < steps else 0
    lengths = [mine] + [k for k in (0, steps // 2, max(1, steps // 5)) if k != mine]

    def label(k):
        return f"full ({steps} steps)" if k == 0 else f"truncated after {k}"
    return [(_mine(label(mine)), {})] + [(label(k), {"training.tbptt": k})
                                         for k in dict.fromkeys(lengths[1:])][:MAX_VARIANTS - 1]


@COMPARISONS.register("rates", "The same run at a tenth, three times and ten times its "
                      "learning rate.", title="learning rates")
def _rates(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    lr = spec.optimizer.resolved(OPTIMIZERS)["lr"]
    high = OPTIMIZERS[spec.optimizer.name].param("lr").high
    out = [(_mine(f"lr {lr:.3g}"), {})]
    for factor in (0.1, 3, 10):
        if lr * factor <= high:
            out.append((f"lr {lr * factor:.3g}", {"optimizer.lr": float(f"{lr * factor:.6g}")}))
    return out


OPTIMIZERS_TRIED = ({"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.01, "momentum": 0.9},
                    {"name": "adam", "lr": 0.01})


@COMPARISONS.register("optimizers", "The same net trained by plain SGD (lr 0.1), SGD with "
                      "momentum 0.9 (lr 0.01: momentum takes about ten times bigger steps) and "
                      "Adam (lr 0.01), each at its usual starting rate.", title="optimizers")
def _optimizers(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    mine = spec.canonical().optimizer
    out = [(_mine(_optimizer_label(mine.name, mine.params)), {})]
    for choice in OPTIMIZERS_TRIED:
        other = ExperimentSpec.from_dict({**spec.to_dict(), "optimizer": choice}).canonical()
        if other.optimizer != mine:
            out.append((_optimizer_label(choice["name"], choice), {"optimizer": dict(choice)}))
    return out


def _optimizer_label(name: str, params) -> str:
    p = OPTIMIZERS[name].resolve(params)
    momentum = p.get("momentum") or 0
    return f"{name}{f' + momentum {momentum:g}' if momentum else ''} lr {p['lr']:g}"


SCHEDULES_TRIED = ("constant", "cosine", "warmup_cosine", "one_cycle", "step")


@COMPARISONS.register("schedules", "The same run with other learning-rate schedules (each "
                      "with its default settings, from the run's rate).", title="schedules")
def _schedules(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    mine = spec.schedule.name
    return [(_mine(mine), {})] + [(name, {"schedule": name}) for name in SCHEDULES_TRIED
                                  if name != mine][:MAX_VARIANTS - 1]


MAX_BATCH_STEPS = 100_000  # a single-example variant of a long run would take epochs x n steps


@COMPARISONS.register("batch_sizes", "The same run with the whole training set, and one "
                      "example, per step, for the same number of epochs (so each sees every "
                      "example as often): drawn against epochs.", title="batch sizes", x="epoch")
def _batch_sizes(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    n = Shape.of(shape).n_train
    if n < 2:
        raise SpecError("the number of training examples is not known here")
    batch = min(spec.training.batch_size, n)
    epochs = spec.training.steps * batch / n
    out = [(_mine(f"batch {batch}: {spec.training.steps:,} steps"), {})]
    for label, b in (("full batch", n), ("one example", 1)):
        steps = max(1, math.ceil(epochs * n / b))
        if b != batch and steps <= MAX_BATCH_STEPS:
            out.append((f"{label} ({b}): {steps:,} steps",
                        {"training.batch_size": b, "training.steps": steps}))
    return out


@COMPARISONS.register("regularization", "The same run without what keeps it from memorising "
                      "its training points: dropout layers, the weight penalty, augmentation "
                      "and early stopping.", title="with and without regularization")
def _regularization(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    had, changes = [], {}
    layers = [layer.to_dict() for layer in spec.model.layers
              if not layer.entry.tags.get("drops")]
    if len(layers) < len(spec.model.layers):
        had.append("dropout")
        changes["model.layers"] = layers
    if spec.regularization.l1 or spec.regularization.l2:
        had.append("weight penalty")
        changes.update({"regularization.l1": 0.0, "regularization.l2": 0.0})
    if spec.training.augment is not None and spec.training.augment.active:
        had.append("augmentation")
        changes["training.augment"] = None
    if spec.training.early_stopping is not None:
        had.append("early stopping")
        changes["training.early_stopping"] = None
    if not had:
        raise SpecError("this run has no dropout, weight penalty, augmentation or early "
                        "stopping to take away")
    return [(_mine(f"with {' and '.join(had)}"), {}), ("without", changes)]


@COMPARISONS.register("normalization", "The same net without its BatchNorm and LayerNorm "
                      "layers (each linear layer then applies its activation itself).",
                      title="with and without normalization")
def _normalization(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
    layers, found = [], False
    for entry, layer in ((layer.entry, layer.to_dict()) for layer in spec.model.layers):
        if entry.tags.get("normalizes"):
            found = True
            continue
        # linear (no activation) -> norm -> bare activation: the activation goes back inside
        if layer["type"] == "activation" and found and layers and \
                layers[-1]["type"] == "linear" and layers[-1].get("activation") == "linear":
            act = layer.get("activation")
            layers[-1] = {k: v for k, v in layers[-1].items() if k != "activation"}
            if act is not None:
                layers[-1]["activation"] = act
            continue
        layers.append(layer)
    if not found:
        raise SpecError("this net has no BatchNorm or LayerNorm layer to take away")
    return [(_mine("with normalization"), {}), ("without", {"model.layers": layers})]


def _without_phase(section: str, absent: str, mine: str, other: str):
    """The factory of a comparison that trains the run beside itself without its pretraining or
    teacher phase (spec section `section` set to None)."""
    def factory(spec: ExperimentSpec, shape) -> list[tuple[str, dict]]:
        if getattr(spec, section) is None:
            raise SpecError(absent)
        return [(_mine(mine), {}), (other, {section: None})]
    return factory


COMPARISONS.add("pretraining", _without_phase("pretrain", "this run is not pretrained",
                                              "pretrained", "from random weights"),
                "The same run without pretraining: the same net started from random weights.",
                title="with and without pretraining")
COMPARISONS.add("teacher", _without_phase("distill", "this run has no teacher",
                                          "learns from the teacher", "labels only"),
                "The same student trained on the labels alone, without the teacher's softened "
                "outputs.", title="with and without the teacher")


def _mine(label: str) -> str:
    return f"{label} (this run)"


def offered(spec: ExperimentSpec, shape) -> list[str]:
    """The comparisons that apply to `spec` (a sequence net gets all three; any net gets
    clipping)."""
    keys = []
    for entry in COMPARISONS:
        try:
            if len(variants(spec, entry.key, shape)) > 1:
                keys.append(entry.key)
        except SpecError:
            continue
    return keys


AB = "ab:"


def one_change(change: dict) -> str:
    """The A/B comparison that changes these settings (dotted keys) and nothing else."""
    if not isinstance(change, dict) or not change:
        raise SpecError("an A/B comparison changes at least one setting, e.g. "
                        '{"optimizer.lr": 0.3}')
    return AB + json.dumps(change, sort_keys=True)


def comparison_key(value) -> str | None:
    """A preset's "compare": a comparison's name, or {"change": {...}} for an A/B."""
    if isinstance(value, dict):
        return one_change(value.get("change"))
    return value


def _change_of(name: str) -> dict:
    try:
        change = json.loads(name[len(AB):])
    except ValueError:
        change = None
    if not isinstance(change, dict) or not change:
        raise SpecError(f"{name!r} is not an A/B comparison: expected ab: and the change as JSON")
    return change


def title(name: str) -> str:
    """What the page calls a comparison."""
    if name.startswith(AB):
        return "A/B: " + change_text(_change_of(name))
    return COMPARISONS[name].tags["title"]


# what a learner calls a setting an A/B may change (settings() adds the optimizer's own and
# each layer's width); any other dotted key is shown with its dots as spaces
NAMES = {"optimizer.lr": "learning rate", "optimizer.name": "optimizer",
         "model.activation": "activation", "model.init": "initializer",
         "model.bias_init": "bias init", "model.layers": "hidden layers",
         "training.batch_size": "batch size", "training.steps": "steps",
         "training.grad_clip": "gradient clipping", "training.augment": "augmentation",
         "training.early_stopping": "early stopping", "training.tbptt": "truncated backprop",
         "regularization.l1": "L1 penalty", "regularization.l2": "L2 penalty",
         "pretrain": "pretraining", "distill": "distillation", "data.n": "examples",
         "data.noise": "noise", "data.features": "input features"}


def change_text(change: dict) -> str:
    """A/B changes in words: {"distill": None} -> "distillation = off", {"model.layers": [64]}
    -> "hidden layers = 64", {"optimizer.lr": 0.3} -> "learning rate = 0.3"."""
    return ", ".join(f"{NAMES.get(k, k.replace('.', ' ').replace('_', ' '))} = {_text(v)}"
                     for k, v in change.items())


def _text(value) -> str:
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, str):
        return value.replace("_", " ")
    if isinstance(value, dict):  # a choice {"name", ...} or a layer {"type", ...}
        head = str(value.get("name", value.get("type", "")))
        inner = ", ".join(f"{k.replace('_', ' ')} {_text(v)}" for k, v in value.items()
                          if k not in ("name", "type"))
        return f"{head} ({inner})" if head and inner else head or inner
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or "none"
    return json.dumps(value)


def settings(spec: ExperimentSpec) -> dict[str, str]:
    """The settings an A/B or a sweep on the pages offers to change: dotted key -> what it is
    (any other dotted key works too, from the CLI or a preset). Not the seed: an A/B keeps it,
    and a sweep has its own seeds."""
    keys = {k: NAMES[k] for k in ("optimizer.lr", "optimizer.name")}
    for p in OPTIMIZERS[spec.optimizer.name].params:
        if p.name != "lr" and isinstance(p.default, (int, float)) and \
                not isinstance(p.default, bool):
            keys[f"optimizer.{p.name}"] = p.name.replace("_", " ")
    keys.update({k: NAMES[k] for k in ("model.activation", "model.init", "training.batch_size",
                                       "training.steps", "regularization.l1",
                                       "regularization.l2")})
    for i, layer in enumerate(spec.model.layers):
        if "units" in layer.params:
            keys[f"model.layers.{i}.units"] = f"units of hidden layer {i + 1}"
    return keys


def variant_changes(spec: ExperimentSpec, name: str, shape) -> list[tuple[str, dict]]:
    """(label, changes) of each variant, the experiment itself first with no changes."""
    if name.startswith(AB):
        change = _change_of(name)
        return [("A: this run", {}),
                ("B: " + change_text(change), change)]
    return COMPARISONS[name].factory(spec, Shape.of(shape))[:MAX_VARIANTS]


def variants(spec: ExperimentSpec, name: str, shape) -> list[tuple[str, ExperimentSpec]]:
    """(label, spec) of each variant, `spec` itself first. SpecError names why a comparison
    does not apply, or which variant cannot be built."""
    out = []
    for label, changes in variant_changes(spec, name, shape):
        try:
            other = spec.with_changes(changes) if changes else spec
        except SpecError as e:
            raise SpecError(f"{label} cannot be built here: {e}") from None
        if name.startswith(AB) and changes and other == spec:
            raise SpecError(f"{label[3:]} is what this run has already: nothing would differ")
        out.append((label, other))
    return out


def summary(trainer) -> dict:
    """A variant's numbers for the side-by-side table, read from its logged rows."""
    rows = trainer.history.rows
    last = rows[-1] if rows else {}
    val = next((r for r in reversed(rows) if r.get("val_loss") is not None), {})
    ratios = time_ratios_of(rows)
    return {"step": trainer.step_count, "stopped": trainer.stopped,
            "train_loss": last.get("train_loss"), "val_loss": val.get("val_loss"),
            "val_acc": val.get("val_acc"),
            "health": ((last.get("health") or {}).get("status")),
            "time_ratio": min(ratios.values()) if ratios else None}
