"""Spec -> a standalone PyTorch training script: the "show me the exact PyTorch code" feature.

The script reads like code a person would write to learn from (config, data, model, initial
weights, optimizer, schedule, loss, loop) and imports nothing of Netlab: only torch, math,
argparse, json, collections, plus scikit-learn for the digits and pandas for a CSV file.
It reproduces the engine's numbers for the same config, because it does what the engine does in
the same order: one seeded torch.Generator per stream (engine/seeding.py), the same data
generator, split and normalisation, the same initialisation order (layers in order, weight then
bias), the same batch order, the same loss wrapping and the same update.

How it stays in step with the engine rather than drifting from it:
- the dataset generators, the seeding helper and the Residual/Dropout modules are copied from
  the engine's own source with inspect.getsource, so there is one definition of each;
- every other registry entry has a code template in a *_CODE table below, filled with the
  entry's resolved parameters; tests/test_export.py fails when an entry has no template and
  checks each template against the registry's own factory.
"""
from __future__ import annotations

import inspect
import json
import math
import re
import textwrap
from dataclasses import dataclass, field

import torch

from . import model as engine_model
from . import seeding
from .data import load_dataset
from .registry import (ACTIVATIONS, DATASETS, INITIALIZERS, LAYERS, LOSSES, NORMALIZERS,
                       OPTIMIZERS, SCHEDULES)
from .spec import Choice, ExperimentSpec, LayerSpec, load_spec
from .trainer import output_dim

# ----------------------------------------------------------------------------- code tables
# Templates are str.format patterns over an entry's resolved parameters, written as Python
# literals (see _lit). Every parameter of an entry must appear in its template (a test checks),
# so a parameter added to the registry cannot be silently dropped from the export.

ACTIVATION_CODE = {
    "linear": "nn.Identity()",
    "sigmoid": "nn.Sigmoid()",
    "tanh": "nn.Tanh()",
    "relu": "nn.ReLU()",
    "leaky_relu": "nn.LeakyReLU(negative_slope={negative_slope})",
    "prelu": "nn.PReLU(init={init})",
    "elu": "nn.ELU(alpha={alpha})",
    "selu": "nn.SELU()",
    "gelu": "nn.GELU()",
    "silu": "nn.SiLU()",
    "swish": "nn.SiLU()",
    "softplus": "nn.Softplus(beta={beta})",
    "hard_sigmoid": "nn.Hardsigmoid()",
    "softmax": "nn.Softmax(dim=1)",
}

# {w}: the tensor to fill; the draws come from `init_gen`, the run's init stream.
INIT_CODE = {
    "zeros": "nn.init.zeros_({w})",
    "constant": "nn.init.constant_({w}, {value})",
    "uniform": "nn.init.uniform_({w}, {a}, {b}, generator=init_gen)",
    "normal": "nn.init.normal_({w}, {mean}, {std}, generator=init_gen)",
    "xavier_uniform": "nn.init.xavier_uniform_({w}, gain={gain}, generator=init_gen)",
    "xavier_normal": "nn.init.xavier_normal_({w}, gain={gain}, generator=init_gen)",
    "he_uniform": "nn.init.kaiming_uniform_({w}, mode={mode}, nonlinearity=\"relu\", "
                  "generator=init_gen)",
    "he_normal": "nn.init.kaiming_normal_({w}, mode={mode}, nonlinearity=\"relu\", "
                 "generator=init_gen)",
    "lecun_normal": "nn.init.normal_({w}, 0.0, 1.0 / math.sqrt({w}.shape[1]), generator=init_gen)"
                    "  # std sqrt(1/fan_in)",
    "orthogonal": "nn.init.orthogonal_({w}, gain={gain}, generator=init_gen)",
    "torch_default": "nn.init.kaiming_uniform_({w}, a=math.sqrt(5), generator=init_gen)",
}

# The optimizer's keyword arguments are its resolved parameters: torch's own names.
OPTIMIZER_CODE = {
    "sgd": "torch.optim.SGD",
    "adagrad": "torch.optim.Adagrad",
    "rmsprop": "torch.optim.RMSprop",
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "adadelta": "torch.optim.Adadelta",
}

# Statements that end by binding `scheduler`; STEPS is the planned number of steps.
_LRS = "torch.optim.lr_scheduler"
SCHEDULE_CODE = {
    "constant": f"scheduler = {_LRS}.LambdaLR(optimizer, lambda step: 1.0)  # the rate never changes",
    "step": f"scheduler = {_LRS}.StepLR(optimizer, step_size={{step_size}}, gamma={{gamma}})",
    "exponential": f"scheduler = {_LRS}.ExponentialLR(optimizer, gamma={{gamma}})",
    "cosine": f"scheduler = {_LRS}.CosineAnnealingLR(optimizer, T_max=max(1, STEPS), "
              "eta_min={eta_min})",
    "warmup_cosine": f'''\
WARMUP = min({{warmup}}, max(STEPS - 1, 0))


def lr_factor(step):
    """Linear warm-up over WARMUP steps, then half a cosine down to zero at the last step."""
    if step < WARMUP:
        return (step + 1) / (WARMUP + 1)
    progress = min(1.0, (step - WARMUP) / max(1, STEPS - WARMUP))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


scheduler = {_LRS}.LambdaLR(optimizer, lr_factor)''',
    "one_cycle": f'''\
scheduler = {_LRS}.OneCycleLR(
    optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
    total_steps=max(2, STEPS), pct_start={{pct_start}}, div_factor={{div_factor}},
    cycle_momentum={{cycle_momentum}})''',
    "reduce_on_plateau": f"scheduler = {_LRS}.ReduceLROnPlateau(optimizer, mode=\"min\", "
                         "factor={factor}, patience={patience})",
}

LOSS_CODE = {
    "mse": "nn.MSELoss()",
    "mae": "nn.L1Loss()",
    "huber": "nn.HuberLoss(delta={delta})",
    "bce": "nn.BCEWithLogitsLoss()",
    "cross_entropy": "nn.CrossEntropyLoss(label_smoothing={label_smoothing})",
}

# Expressions of `points`, the (n, 2) tensor of raw 2-D points.
FEATURE_CODE = {
    "x1": "points[:, 0]",
    "x2": "points[:, 1]",
    "x1_sq": "points[:, 0] ** 2",
    "x2_sq": "points[:, 1] ** 2",
    "x1_x2": "points[:, 0] * points[:, 1]",
    "sin_x1": "torch.sin(3 * points[:, 0])",
    "sin_x2": "torch.sin(3 * points[:, 1])",
}

# `shift, scale` from the train inputs `x_fit`; every split then becomes (x - shift) / scale.
NORMALIZER_CODE = {
    "none": "shift, scale = torch.zeros_like(x_fit[0]), torch.ones_like(x_fit[0])",
    "standard": "shift, scale = x_fit.mean(0), x_fit.std(0)",
    "minmax": "shift, scale = x_fit.amin(0), x_fit.amax(0) - x_fit.amin(0)",
}

# The engine's csv factory calls its validating reader; the script gets this short version.
CSV_SOURCE = '''\
def make_csv(generator, path, target, task):
    """Numeric columns are the inputs, `target` the output (no randomness: `generator` unused)."""
    import pandas as pd

    with open(path, encoding="utf-8-sig") as f:  # comma, semicolon or tab, as Netlab reads it
        header = f.readline()
    sep = max(",;\t", key=header.count) if any(d in header for d in ",;\t") else ","
    frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    inputs = [c for c in frame.columns if c != target]
    x = torch.tensor(frame[inputs].to_numpy(dtype="float32"))
    values = frame[target].to_numpy()
    if task == "regression":
        return x, torch.tensor(values, dtype=torch.float32)[:, None]
    labels, y = torch.unique(torch.tensor(values.astype("int64")), return_inverse=True)
    return x, y  # classes numbered 0..k-1 in sorted order of the labels
'''
DATASET_SOURCE_OVERRIDES = {"csv": CSV_SOURCE}


# ----------------------------------------------------------------------------- small helpers


def _lit(value) -> str:
    """A Python literal for a parameter value (strings in double quotes, tuples as tuples)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_lit(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def fill(template: str, params: dict, **extra) -> str:
    return template.format(**{k: _lit(v) for k, v in params.items()}, **extra)


def activation_code(choice: Choice) -> str:
    return fill(ACTIVATION_CODE[choice.name], choice.resolved(ACTIVATIONS))


def init_code(choice: Choice, tensor: str) -> str:
    return fill(INIT_CODE[choice.name], choice.resolved(INITIALIZERS), w=tensor)


def source_of(obj) -> str:
    """An engine function or class as source text, without decorators."""
    lines = textwrap.dedent(inspect.getsource(obj)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("def ", "class ")))
    return "\n".join(lines[start:])


def dataset_source(name: str) -> str:
    """Source of the function that makes dataset `name` from (generator, **its parameters)."""
    if name in DATASET_SOURCE_OVERRIDES:
        return DATASET_SOURCE_OVERRIDES[name]
    return source_of(DATASETS[name].factory)


def dataset_function(name: str) -> str:
    """The name the dataset's function is defined under in its exported source."""
    return re.search(r"^def (\w+)\(", dataset_source(name), re.M).group(1)


def _comment(text: str, width: int = 96) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, width - 2)]


MAX_LINE = 99


def _wrap(line: str) -> list[str]:
    """A call statement too long for one line, broken after its first parenthesis with the
    arguments filled onto indented lines (black's style); a trailing comment moves above it."""
    if len(line) <= MAX_LINE or "(" not in line:
        return [line]
    indent = line[:len(line) - len(line.lstrip())]
    code, _, comment = line.partition("  # ")
    head, _, rest = code.partition("(")
    lines = ([f"{indent}# {comment}"] if comment else []) + [head + "("]
    current = indent + "   "
    for arg in _split_args(rest):
        if len(current) + 1 + len(arg) > MAX_LINE and current.strip():
            lines.append(current.rstrip())
            current = indent + "   "
        current += " " + arg
    return lines + [current]


def _split_args(text: str) -> list[str]:
    """'a, b=(1, 2))' -> ['a,', 'b=(1, 2))']: split after the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i + 1].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def _wrap_all(lines: list[str]) -> list[str]:
    return [part for line in lines for part in _wrap(line)]


def _rule(title: str) -> str:
    return "# " + "-" * (93 - len(title)) + " " + title


def _indent(lines: list[str], by: int = 4) -> list[str]:
    return [" " * by + line if line else line for line in lines]


# ----------------------------------------------------------------------------- model plan


@dataclass
class Planned:
    """One named layer of the exported nn.Sequential."""

    name: str
    code: list[str]  # constructor expression, possibly over several lines
    linears: list[tuple[str, Choice, float]] = field(default_factory=list)  # path, init, bias


@dataclass
class Context:
    spec: ExperimentSpec

    def activation(self, layer: LayerSpec) -> str:
        return activation_code(layer.activation or self.spec.model.activation)

    def init(self, layer: LayerSpec) -> Choice:
        return layer.init or self.spec.model.init

    def bias(self, layer: LayerSpec) -> float:
        return layer.bias_init if layer.bias_init is not None else self.spec.model.bias_init


def _linear_layer(ctx, layer, name, in_shape):
    units = layer.get("units")
    code = [f"nn.Sequential(OrderedDict(linear=nn.Linear({in_shape[0]}, {units}), "
            f"act={ctx.activation(layer)}))"]
    return Planned(name, code, [(f"{name}.linear", ctx.init(layer), ctx.bias(layer))]), (units,)


def _activation_layer(ctx, layer, name, in_shape):
    return Planned(name, [ctx.activation(layer)]), in_shape


def _dropout_layer(ctx, layer, name, in_shape):
    return Planned(name, [f"Dropout({_lit(layer.get('p'))}, dropout_gen)"]), in_shape


def _batchnorm_layer(ctx, layer, name, in_shape):
    return Planned(name, [f"nn.BatchNorm1d({in_shape[0]})"]), in_shape


def _layernorm_layer(ctx, layer, name, in_shape):
    return Planned(name, [f"nn.LayerNorm({in_shape[0]})"]), in_shape


def _residual_layer(ctx, layer, name, in_shape):
    units, depth, fan_in = layer.get("units"), layer.get("depth"), in_shape[0]
    init, bias = ctx.init(layer), ctx.bias(layer)
    # the projection is built (and so initialised) before the body, as in the engine
    linears = [(f"{name}.proj", init, bias)] if fan_in != units else []
    body = []
    for i in range(1, depth + 1):
        body.append(f"linear{i}=nn.Linear({units}, {units}), act{i}={ctx.activation(layer)},")
        linears.append((f"{name}.body.linear{i}", init, bias))
    proj = f"nn.Linear({fan_in}, {units})" if fan_in != units else "None"
    code = ["Residual(", "    nn.Sequential(OrderedDict(", *_indent(body, 8), "    )),",
            f"    proj={proj},", ")"]
    return Planned(name, code, linears), (units,)


# The engine's own modules that the script needs for these layer types (copied as source).
LAYER_CLASSES = {"residual": engine_model.Residual, "dropout": engine_model.Dropout}

# factory(ctx, layer, name, in_shape) -> (Planned, out_shape), mirroring engine/model.py
LAYER_CODE = {
    "linear": _linear_layer,
    "activation": _activation_layer,
    "dropout": _dropout_layer,
    "batchnorm": _batchnorm_layer,
    "layernorm": _layernorm_layer,
    "residual": _residual_layer,
}


def _flat(shape) -> tuple[int, ...]:
    return (math.prod(shape),)


def plan_model(spec: ExperimentSpec, in_shape, out_dim: int) -> list[Planned]:
    """The layers of engine.model.build_model, in order, with the same names."""
    ctx = Context(spec)
    planned: list[Planned] = []
    counts: dict[str, int] = {}
    shape = tuple(in_shape)
    for layer in spec.model.layers:
        entry = LAYERS[layer.type]
        if len(shape) > 1 and entry.tags.get("flattens"):
            planned.append(Planned("flatten", ["nn.Flatten()"]))
            shape = _flat(shape)
        prefix = entry.tags["prefix"]
        counts[prefix] = counts.get(prefix, 0) + 1
        item, shape = LAYER_CODE[layer.type](ctx, layer, f"{prefix}{counts[prefix]}", shape)
        planned.append(item)
    if len(shape) > 1:
        planned.append(Planned("flatten", ["nn.Flatten()"]))
        shape = _flat(shape)
    out_init = spec.model.output or spec.model.init
    planned.append(Planned("out", [f"nn.Linear({shape[0]}, {out_dim})"], [("out", out_init, 0.0)]))
    return planned


def _check_buildable(spec: ExperimentSpec, in_shape, out_dim: int) -> None:
    """Let the engine reject impossible stacks (a BatchNorm on an image...) with its SpecError;
    on the meta device this allocates nothing."""
    with torch.device("meta"):
        engine_model.build_model(spec, in_shape, out_dim, device="meta", init=False)


# ----------------------------------------------------------------------------- sections


def _header(spec: ExperimentSpec) -> list[str]:
    config = json.dumps(spec.to_dict(), indent=2).splitlines()
    return [
        "# Netlab experiment, exported as a standalone PyTorch training script.",
        "#",
        "#     python train.py [--steps N] [--save model.pt]",
        "#",
        "# It repeats what Netlab computes for this config, number for number: the same data,",
        "# initial weights, batch order and updates, because every random draw comes from one",
        "# seeded generator per purpose. The config it was made from:",
        "#",
        *["# " + line for line in config],
    ]


def _imports() -> list[str]:
    return ["from __future__ import annotations", "", "import argparse", "import json",
            "import math", "from collections import OrderedDict", "", "import torch",
            "from torch import nn"]


def _settings(spec: ExperimentSpec) -> list[str]:
    t = spec.training
    device = {"auto": 'torch.device("cuda" if torch.cuda.is_available() else "cpu")',
              "cpu": 'torch.device("cpu")', "cuda": 'torch.device("cuda")'}[spec.device]
    return [
        "parser = argparse.ArgumentParser(description=\"Train the exported Netlab experiment.\")",
        f'parser.add_argument("--steps", type=int, default={t.steps}, help="gradient steps")',
        'parser.add_argument("--save", help="write the final state_dict to this file")',
        "args = parser.parse_args()",
        "",
        f"SEED = {spec.seed}",
        "STEPS = args.steps",
        f"BATCH_SIZE = {t.batch_size}",
        f"LOG_EVERY = {spec.diagnostics.every}  # steps between printed rows",
        f"EVAL_EVERY = {t.eval_every}  # steps between validation passes; 0: at every printed row",
        f"DEVICE = {device}",
        "",
        "# One random stream per purpose: adding dropout must not reshuffle the data, and a new",
        "# batch size must not change the initial weights.",
        f"STREAMS = {json.dumps(seeding.STREAMS)}",
        "",
        "",
        source_of(seeding.generator),
    ]


def _data(spec: ExperimentSpec) -> list[str]:
    d = spec.data
    entry = DATASETS[d.name]
    kwargs = ", ".join(f"{p.name}={_lit(getattr(d, p.name))}" for p in entry.params)
    lines = [*_comment(f"{d.name}: {entry.doc}"), dataset_source(d.name), "", ""]
    lines.append('data_gen = generator(SEED, "data")')
    if d.features:
        lines += [f"points, y = {dataset_function(d.name)}(data_gen, {kwargs})",
                  "x = torch.stack([  # the input features, computed from each point",
                  *[f"    {FEATURE_CODE[f]},  # {f}" for f in d.features], "], 1)"]
    else:
        lines.append(f"x, y = {dataset_function(d.name)}(data_gen, {kwargs})")
    lines += [
        "",
        "# Shuffle once, then cut: test first, validation next, the rest trains.",
        "order = torch.randperm(len(y), generator=data_gen)",
        f"n_test, n_val = round(len(y) * {d.test_fraction!r}), round(len(y) * {d.val_fraction!r})",
        "test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]",
        "",
        *_comment(f"Normalisation '{d.normalize}': {NORMALIZERS[d.normalize].doc} The statistics "
                  "come from the train split only, so nothing leaks from validation or test data."),
        "x_fit = x[train]",
        NORMALIZER_CODE[d.normalize],
        "scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))  # constant columns stay put",
        "x = (x - shift) / scale",
        "x_train, y_train = x[train].to(DEVICE), y[train].to(DEVICE)",
        "x_val, y_val = x[val].to(DEVICE), y[val].to(DEVICE)",
        "x_test, y_test = x[test].to(DEVICE), y[test].to(DEVICE)",
        'print(f"data: {len(y_train)} train, {len(y_val)} val, {len(y_test)} test examples")',
    ]
    return lines


def _model(spec: ExperimentSpec, planned: list[Planned]) -> list[str]:
    types = {layer.type for layer in spec.model.layers}
    lines: list[str] = []
    for kind, cls in LAYER_CLASSES.items():
        if kind in types:
            lines += [source_of(cls), "", ""]
    if "dropout" in types:
        lines += ['dropout_gen = generator(SEED, "dropout", DEVICE)', ""]
    lines += ["# Named layers, with the names Netlab's charts use. The output layer has no",
              "# activation: the loss takes its raw outputs (class logits or predicted values).",
              "model = nn.Sequential(OrderedDict("]
    for p in planned:
        body = [f"{p.name}={p.code[0]}", *p.code[1:]]
        body[-1] += ","
        lines += _indent(body)
    lines += ["))"]
    return lines


def _init(planned: list[Planned]) -> list[str]:
    lines = ["# Initial weights: every linear map in order, weight then bias, from the init "
             "stream.",
             'init_gen = generator(SEED, "init")', "with torch.no_grad():"]
    for p in planned:
        for path, init, bias in p.linears:
            bias_code = f"nn.init.constant_(model.{path}.bias, {_lit(float(bias))})"
            lines += _wrap_all(_indent([init_code(init, f"model.{path}.weight"), bias_code]))
    lines += ["model = model.to(DEVICE)", "print(model)",
              'print(f"{sum(p.numel() for p in model.parameters()):,} parameters")']
    return lines


def _optimizer(spec: ExperimentSpec) -> list[str]:
    choice = spec.optimizer
    kwargs = "".join(f", {k}={_lit(v)}" for k, v in choice.resolved(OPTIMIZERS).items())
    lines = [*_comment(f"{choice.name}: {OPTIMIZERS[choice.name].doc}"),
             *_wrap(f"optimizer = {OPTIMIZER_CODE[choice.name]}(model.parameters(){kwargs})"), ""]
    sched = spec.schedule
    lines += [*_comment(f"Schedule '{sched.name}': {SCHEDULES[sched.name].doc}"),
              *_wrap_all(fill(SCHEDULE_CODE[sched.name], sched.resolved(SCHEDULES)).splitlines())]
    return lines


def _on_metric(spec: ExperimentSpec) -> bool:
    return bool(SCHEDULES[spec.schedule.name].tags.get("on_metric"))


def _loss(spec: ExperimentSpec, task: str) -> list[str]:
    """The loss as engine.trainer.make_loss wraps it, plus how outputs become classes."""
    entry = LOSSES[spec.loss.name]
    criterion = fill(LOSS_CODE[entry.key], spec.loss.resolved(LOSSES))
    lines = _comment(f"Loss '{entry.key}': {entry.doc}")
    classification = task == "classification"
    if classification and entry.tags.get("binary"):
        lines += [f"criterion = {criterion}", "", "",
                  "def loss_fn(out, y):",
                  '    """One logit per example: sigmoid(out) is the probability of class 1."""',
                  "    return criterion(out[:, 0], y.float())", "", "",
                  "def predict(out):", "    return (out[:, 0] > 0).long()"]
    elif classification and entry.tags["task"] == "regression":
        lines += [f"criterion = {criterion}", "", "",
                  "def loss_fn(out, y):",
                  '    """A regression loss on classes: compare softmax probabilities with one-hot '
                  'targets."""',
                  "    one_hot = nn.functional.one_hot(y, out.shape[1]).float()",
                  "    return criterion(out.softmax(1), one_hot)",
                  "", "", "def predict(out):", "    return out.argmax(1)"]
    else:
        lines += [f"loss_fn = {criterion}"]
        if classification:
            lines += ["", "", "def predict(out):", "    return out.argmax(1)"]
    return lines


def _helpers(classification: bool) -> list[str]:
    acc = ['    metrics[f"{split}_acc"] = (predict(out) == y).float().mean().item()'] \
        if classification else []
    return [
        "def batches(n, size):",
        '    """Mini-batches without replacement: a fresh seeded shuffle of the train set every '
        'epoch."""',
        '    batch_gen = generator(SEED, "batches")',
        "    size = min(size, n)",
        "    while True:",
        "        order = torch.randperm(n, generator=batch_gen).to(DEVICE)",
        "        for start in range(0, n, size):",
        "            if n - start < min(2, n):  # a lone leftover example is skipped, as in Netlab",
        "                break",
        "            yield order[start:start + size]",
        "", "",
        "@torch.no_grad()",
        "def evaluate(x, y, split):",
        '    """Metrics over a whole split in eval mode: dropout off, BatchNorm on its running '
        'averages."""',
        "    if len(y) == 0:",
        "        return {}",
        "    model.eval()",
        "    out = model(x)",
        "    model.train()",
        '    metrics = {f"{split}_loss": loss_fn(out, y).item()}',
        *acc,
        "    return metrics",
        "", "",
        "def show(row):",
        '    return " ".join(f"{k} {v:.4g}" for k, v in row.items())',
    ]


def _loop(spec: ExperimentSpec, task: str) -> list[str]:
    classification = task == "classification"
    reg, es = spec.regularization, spec.training.early_stopping
    lines = [*_helpers(classification), "", ""]
    if reg.l1 or reg.l2:
        lines += ["# Penalties l1 * sum|w| + l2 * sum(w^2) on the weight matrices only (not on biases",
                  "# or norm scales).",
                  f"L1, L2 = {reg.l1!r}, {reg.l2!r}",
                  "weights = [p for p in model.parameters() if p.dim() >= 2]"]
    lines += ['history, stopped = [], "completed"',
              f"{_totals(classification)}  # running totals between printed rows"]
    if es is not None:
        lines += [f"PATIENCE, MIN_DELTA = {es.patience}, {es.min_delta!r}  # early stopping",
                  "best_loss, best_step, best_state, waited = math.inf, None, None, 0"]
    lines += ["batch_iter = batches(len(y_train), BATCH_SIZE)", "model.train()",
              "for step in range(1, STEPS + 1):",
              *_wrap_all(_indent(_step_lines(spec, classification))),
              *_indent(_row_lines(spec, classification)),
              "", *_finish_lines(spec)]
    return lines


def _totals(classification: bool) -> str:
    return ("loss_sum, correct, seen, since = 0.0, 0, 0, 0" if classification
            else "loss_sum, since = 0.0, 0")


def _step_lines(spec: ExperimentSpec, classification: bool) -> list[str]:
    """One gradient step, in the engine's order: loss, backward, penalties, clipping, the
    divergence check, the update, the schedule."""
    reg, clip = spec.regularization, spec.training.grad_clip
    lines = ["idx = next(batch_iter)", "xb, yb = x_train[idx], y_train[idx]",
             "out = model(xb)", "loss = loss_fn(out, yb)",
             "optimizer.zero_grad(set_to_none=True)", "loss.backward()"]
    if reg.l1 or reg.l2:
        lines += ["# The penalties' gradients go straight onto the weight gradients (the same update",
                  "# as adding them to the loss; the printed loss stays the data loss).",
                  "with torch.no_grad():", "    for w in weights:"]
        if reg.l2:
            lines.append("        w.grad.add_(w, alpha=2 * L2)  # d(l2 * w^2)/dw")
        if reg.l1:
            lines.append("        w.grad.add_(w.sign(), alpha=L1)  # d(l1 * |w|)/dw")
    if clip is not None and clip.mode == "norm":
        lines.append(f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={clip.max!r})")
    elif clip is not None:
        lines.append(f"torch.nn.utils.clip_grad_value_(model.parameters(), clip_value={clip.max!r})")
    lines += ["if not torch.isfinite(loss):",
              '    print(f"step {step}: the loss is {loss.item()}; stopped before this update")',
              '    stopped = "diverged"', "    break",
              'lr = optimizer.param_groups[0]["lr"]', "optimizer.step()"]
    if not _on_metric(spec):
        lines += ["if step < STEPS:  # once per step; the last step's rate is the final one",
                  "    scheduler.step()"]
    if classification:
        lines += ["loss_sum, seen, since = loss_sum + loss.item(), seen + len(yb), since + 1",
                  "correct += (predict(out.detach()) == yb).sum().item()"]
    else:
        lines += ["loss_sum, since = loss_sum + loss.item(), since + 1"]
    return lines


def _row_lines(spec: ExperimentSpec, classification: bool) -> list[str]:
    """A printed row at the engine's logged steps, validating at its evaluation steps."""
    acc = ', "train_acc": correct / seen' if classification else ""
    lines = ["if step == 1 or step % LOG_EVERY == 0 or step == STEPS:",
             f'    row = {{"step": step, "lr": lr, "train_loss": loss_sum / since{acc}}}',
             f"    {_totals(classification)}",
             "    if EVAL_EVERY == 0 or step % EVAL_EVERY == 0 or step == 1 or step == STEPS:",
             '        row.update(evaluate(x_val, y_val, "val"))',
             "    history.append(row)",
             "    print(show(row), flush=True)"]
    if _on_metric(spec):
        lines += ["    # the plateau schedule watches the validation loss (the train loss without one)",
                  '    scheduler.step(row.get("val_loss", row["train_loss"]))']
    es = spec.training.early_stopping
    if es is not None:
        save = ["            best_state = {k: v.detach().clone() for k, v in "
                "model.state_dict().items()}"] if es.restore_best else []
        lines += ['    if "val_loss" in row:',
                  '        if row["val_loss"] < best_loss - MIN_DELTA:',
                  '            best_loss, best_step, waited = row["val_loss"], step, 0',
                  *save,
                  "        else:",
                  "            waited += 1",
                  "            if waited >= PATIENCE:",
                  '                stopped = "early_stopping"',
                  "                break"]
    return lines


def _finish_lines(spec: ExperimentSpec) -> list[str]:
    es = spec.training.early_stopping
    lines = ['steps_done = step - 1 if stopped == "diverged" else step', "restored_step = None"]
    if es is not None and es.restore_best:
        lines += ['if best_state is not None and stopped != "diverged":',
                  "    model.load_state_dict(best_state)  # the weights of the best evaluation",
                  "    restored_step = best_step",
                  '    print(f"restored the weights from step {best_step} (val_loss {best_loss:.4g})")']
    lines += [
        'test = evaluate(x_test, y_test, "test") if stopped != "diverged" else {}',
        "if test:",
        "    print(show(test))",
        'print(f"{stopped} after {steps_done} steps")',
        "if args.save:",
        "    torch.save(model.state_dict(), args.save)",
        "# One machine-readable line last: everything above, as JSON.",
        'summary = {"steps": steps_done, "stopped": stopped, "restored_step": restored_step,',
        '           "test": test, "history": history}',
        'print("FINAL", json.dumps(summary))',
    ]
    return lines


# ----------------------------------------------------------------------------- entry point


def export_script(spec) -> str:
    """A runnable, standalone PyTorch script that trains `spec` and reproduces its numbers."""
    spec = load_spec(spec)
    data = load_dataset(spec.data, spec.seed)  # for the input shape and the number of outputs
    in_shape, out_dim = data.in_shape, output_dim(spec, data)
    _check_buildable(spec, in_shape, out_dim)
    planned = plan_model(spec, in_shape, out_dim)
    sections = [
        _header(spec),
        _imports(),
        [_rule("settings"), *_settings(spec)],
        [_rule("data"), *_data(spec)],
        [_rule("model"), *_model(spec, planned)],
        _init(planned),
        [_rule("optimizer and learning-rate schedule"), *_optimizer(spec)],
        [_rule("loss"), *_loss(spec, data.task)],
        [_rule("training"), *_loop(spec, data.task)],
    ]
    # two blank lines between sections, as PEP 8 asks around top-level definitions
    return "\n\n\n".join("\n".join(s).rstrip() for s in sections) + "\n"
