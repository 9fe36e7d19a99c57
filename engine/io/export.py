"""Spec -> a standalone PyTorch training script: the "show me the exact PyTorch code" feature.

The script reads top to bottom like code a person would write (settings, data, model, initial
weights, optimizer, schedule, loss, training) and imports nothing of Netlab: only torch, math,
argparse, json, collections, plus scikit-learn for the digits and pandas for a CSV file. It
reproduces the engine's numbers for the same config because it runs the engine's own code:

- every choice is written from its registry entry: a torch class as itself
  (`nn.LeakyReLU(negative_slope=0.2)`, `torch.optim.Adam(...)`), any other factory (a dataset
  generator, an initializer, a schedule) copied in by its source with inspect.getsource, and
  called with the entry's resolved parameters;
- the model is written from the calls its layer factories recorded while building it
  (engine/nn/model.py, `BuildContext.make`), and initialised in the order they initialised it;
- the random streams, batch order, splits, loss wrapping, penalties, clipping and early stopping
  are engine/core/portable.py's definitions, and the loop is engine/io/export_template.py's `train`,
  each copied in by its source together with whatever of portable.py it uses.

No registry key appears here: a new entry exports with no edit to this file.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import json
import math
import symtable
import sys
import textwrap
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..core import portable
from ..core.errors import SpecError
from ..core.registry import (
    DATASETS,
    FEATURES,
    INITIALIZERS,
    LOSSES,
    NORMALIZERS,
    OPTIMIZERS,
    SCHEDULES,
)
from ..core.spec import ExperimentSpec, load_spec
from ..data.datasets import load_dataset
from ..nn import model as engine_model
from ..nn.model import StreamRef
from ..train.trainer import loss_wrapping, output_dim
from ..train.transfer import frozen_layers, pretrain_spec, teacher_spec
from . import export_template

MAX_LINE = 99
# The modules the script imports, by the names its code (and every copied source) uses.
IMPORTS = {"argparse": "import argparse", "json": "import json", "math": "import math",
           "OrderedDict": "from collections import OrderedDict", "torch": "import torch",
           "nn": "from torch import nn"}
_MODULES = {"argparse": "argparse", "json": json, "math": math, "torch": torch, "nn": nn}


class ExportError(ValueError):
    """A registry entry cannot be written into a standalone script (e.g. its factory uses a
    module the script does not import)."""


# ----------------------------------------------------------------------------- expressions


@dataclass
class Call:
    """A call expression, rendered on one line when it fits and one argument a line when not."""

    head: str
    args: list = field(default_factory=list)  # rendered expressions (str) or Calls
    kwargs: dict = field(default_factory=dict)

    def parts(self) -> list:
        return [*self.args, *({"key": k, "value": v} for k, v in self.kwargs.items())]


def _flat(node) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        return f"{node['key']}={_flat(node['value'])}"
    return f"{node.head}({', '.join(_flat(p) for p in node.parts())})"


def render(node, indent: int = 0, lead: int = 0) -> str:
    """`node` as source at `indent`, its first line following `lead` characters already
    written; a call too long for one line gets one argument per line (black's style)."""
    flat = _flat(node)
    if isinstance(node, str) or indent + lead + len(flat) <= MAX_LINE:
        return flat
    if isinstance(node, dict):
        key = f"{node['key']}="
        return key + render(node["value"], indent, lead + len(key))
    if len(node.parts()) == 1 and isinstance(node.parts()[0], Call):  # nn.Sequential(OrderedDict(
        return f"{node.head}({render(node.parts()[0], indent, lead + len(node.head) + 1)})"
    inner = " " * (indent + 4)
    lines = [inner + render(p, indent + 4) + "," for p in node.parts()]
    return node.head + "(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


def literal(value) -> str:
    """A Python literal (strings in double quotes, tuples as tuples)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


class Code(str):
    """Source text used as it is (a variable name, an expression)."""


# ----------------------------------------------------------------------------- definitions


def source_of(obj) -> str:
    """A function's or class's source, dedented, without registry decorators (other decorators,
    such as @torch.no_grad(), stay: they are part of what it does)."""
    source = textwrap.dedent(inspect.getsource(obj))
    node = ast.parse(source).body[0]
    lines = source.splitlines()
    drop = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr == "register":
            drop.update(range(dec.lineno - 1, dec.end_lineno))  # lineno is 1-based, the "@"s line
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")


def _referenced_globals(source: str) -> set[str]:
    """Names a definition reads from its module: free in every scope and not builtins."""
    names: set[str] = set()

    def walk(table, top):
        for sym in table.get_symbols():
            if sym.is_referenced() and (sym.is_global() or (top and not sym.is_assigned())):
                names.add(sym.get_name())
        for child in table.get_children():
            walk(child, False)
    walk(symtable.symtable(source, "<export>", "exec"), True)
    return {n for n in names if not hasattr(builtins, n)}


def _is_torch(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "torch"


def torch_name(obj) -> str:
    """How the script names a torch class or function: nn.X, nn.init.x_, torch.optim.X, ..."""
    name = obj.__name__
    for prefix, module in (("nn.", nn), ("nn.init.", nn.init), ("torch.optim.", torch.optim),
                           ("torch.optim.lr_scheduler.", torch.optim.lr_scheduler),
                           ("torch.", torch)):
        if getattr(module, name, None) is obj:
            return prefix + name
    return f"{obj.__module__}.{obj.__qualname__}"


class Script:
    """Collects the definitions the script needs, each once and before its first use, and
    writes calls to registry factories and recorded modules."""

    def __init__(self):
        self.defined: dict[str, object] = {}
        self.pending: list[str] = []  # sources not yet placed in a section
        self.streams: list[str] = []  # StreamRefs met in the model (e.g. "dropout")

    # -- definitions
    def ref(self, obj) -> str:
        """The name the script's code uses for `obj`, copying its definition in when needed."""
        if isinstance(obj, types.ModuleType) or _is_torch(obj):
            return torch_name(obj)
        if obj is OrderedDict:
            return "OrderedDict"
        self.define(obj.__name__, obj)
        return obj.__name__

    def define(self, name: str, obj) -> None:
        if name in self.defined:
            if self.defined[name] is not obj:
                raise ExportError(f"two different definitions are both called {name!r}; "
                                  "rename one of them")
            return
        self.defined[name] = obj
        if callable(obj):
            if name == "<lambda>" or "<locals>" in getattr(obj, "__qualname__", ""):
                raise ExportError(f"{obj!r} is a lambda or is defined inside a function, so its "
                                  "source cannot stand alone in a script; define it at the top "
                                  "level of its module")
            try:
                source = source_of(obj)
            except (OSError, TypeError):  # a builtin, or code with no source file
                raise ExportError(f"{name!r} has no Python source to copy into a script") from None
            module = sys.modules[obj.__module__].__dict__
        elif isinstance(obj, str) and len(literal(obj)) > MAX_LINE:  # a text: a line a line
            lines = [literal(line) for line in obj.splitlines(keepends=True)]
            source, module = f"{name} = (\n" + "".join(f"    {v}\n" for v in lines) + ")", {}
        else:
            source, module = f"{name} = {literal(obj)}", {}
        for dep in sorted(_referenced_globals(source) - {name}):
            self._dependency(dep, module, name)
        self.pending.append(source)

    def _dependency(self, dep: str, module: dict, user: str) -> None:
        if dep in IMPORTS:
            if dep in _MODULES and module.get(dep, _MODULES[dep]) is not _MODULES[dep]:
                raise ExportError(f"{user} uses {dep!r} for something other than the script's "
                                  f"{IMPORTS[dep]!r}")
            return
        if dep not in module:
            raise ExportError(f"{user} uses {dep!r}, which its module does not define")
        value = module[dep]
        if isinstance(value, types.ModuleType) or _is_torch(value):
            raise ExportError(f"{user} uses {dep!r} ({value!r}); a standalone script can use "
                              f"only {', '.join(IMPORTS)} by those names")
        if callable(value) and getattr(value, "__name__", dep) != dep:  # imported under another
            self.define(value.__name__, value)                          # name: define, then bind
            self.pending.append(f"{dep} = {value.__name__}")
            self.defined.setdefault(dep, value)
        elif callable(value) or isinstance(value, (int, float, str, tuple, list, dict)):
            self.define(dep, value)
        else:
            raise ExportError(f"{user} uses {dep!r}, which cannot be written into a script")

    def take(self) -> list[str]:
        """The definitions added since the last call, separated as PEP 8 asks."""
        out = []
        for source in self.pending:
            out += [source, "", ""]
        self.pending = []
        return out

    # -- expressions
    def call(self, fn, /, *args, **kwargs) -> Call:
        """`fn(*args, **kwargs)` as the script writes it (keyword names are the callee's own, so
        any name, `target` or `fn` included, can be one)."""
        if isinstance(fn, partial):
            return self.call(fn.func, *fn.args, *args, **{**fn.keywords, **kwargs})
        return Call(self.ref(fn), [self.value(a) for a in args],
                    {k: self.value(v) for k, v in kwargs.items()})

    def value(self, v):
        if isinstance(v, Code):
            return str(v)
        if isinstance(v, nn.Module):
            if not hasattr(v, "built_by"):
                raise ExportError(f"a {type(v).__name__} module was not made through the build "
                                  "context (ctx.make), so the script cannot rebuild it")
            target, args, kwargs = v.built_by
            return self.call(target, *args, **kwargs)
        if isinstance(v, OrderedDict):
            return Call("OrderedDict", [], {k: self.value(m) for k, m in v.items()})
        if isinstance(v, StreamRef):
            if v.stream not in self.streams:
                self.streams.append(v.stream)
            return f"{v.stream}_gen"
        return literal(v)

    def entry_call(self, entry, choice_params, /, *args) -> Call:
        """A registry entry's exported form called with `args` and its resolved parameters."""
        return self.call(entry.exported, *args, **entry.resolve(choice_params))


def _comment(text: str, width: int = 96) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def _rule(title: str) -> str:
    return "# " + "-" * (93 - len(title)) + " " + title


def _assign(name: str, node, indent: int = 0) -> str:
    pad = " " * indent
    return pad + f"{name} = " + render(node, indent, len(name) + 3)


# ----------------------------------------------------------------------------- sections


def _header(spec: ExperimentSpec) -> list[str]:
    config = json.dumps(spec.to_dict(), indent=2).splitlines()
    return [
        "# Netlab experiment, exported as a standalone PyTorch training script.",
        "#",
        "#     python train.py [--steps N] [--save model.pt] [--history rows.json] [--threads N]",
        "#",
        "# It repeats what Netlab computes for this config, number for number: the same data,",
        "# initial weights, batch order and updates, because every random draw comes from one",
        "# seeded generator per purpose. The config it was made from:",
        "#",
        *["# " + line for line in config],
    ]


def _settings(spec: ExperimentSpec, script: Script) -> list[str]:
    t = spec.training
    device = {"auto": 'torch.device("cuda" if torch.cuda.is_available() else "cpu")',
              "cpu": 'torch.device("cpu")', "cuda": 'torch.device("cuda")'}[spec.device]
    script.ref(portable.generator)
    return [
        "parser = argparse.ArgumentParser(description=\"Train the exported Netlab experiment.\")",
        f'parser.add_argument("--steps", type=int, default={t.steps}, help="gradient steps")',
        'parser.add_argument("--save", help="write the final state_dict to this file")',
        'parser.add_argument("--history", help="write the printed rows and the outcome to this '
        'JSON file")',
        'parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: '
        'small models only lose time to more)")',
        *([f'parser.add_argument("--data", default={literal(spec.data.params[upload])}, '
           'help="the table to train on")'] if (upload := spec.data.upload) else []),
        "args = parser.parse_args()",
        "",
        f"SEED = {spec.seed}",
        "STEPS = args.steps",
        f"DEVICE = {device}",
        "torch.set_num_threads(args.threads)",
        "",
        "",
        *script.take(),
    ]


def _data(spec: ExperimentSpec, script: Script, scaling: str | None = None) -> list[str]:
    """scaling: the names of a (shift, scale) pair to use instead of fitting one."""
    d = spec.data
    entry = DATASETS[d.name]
    params = dict(d.params)
    if spec.data.upload:  # a user's file: --data names it on the machine that runs the script
        params[spec.data.upload] = Code("args.data")
    make = script.call(entry.exported, Code("data_gen"), **params)
    # the data's own seed when it has one (a sweep's variants share their data)
    lines = [f'data_gen = generator({"SEED" if d.seed is None else d.seed}, "data")']
    raw = "points" if d.features else "x"
    lines.append(_assign(f"{raw}, y, *_", make))  # *_: a set's class names, if it has them
    if d.subset is not None:
        lines += [f"# only the classes {list(d.subset)}, renumbered from 0",
                  _assign(f"{raw}, y", script.call(portable.keep_classes, Code(raw), Code("y"),
                                                   list(d.subset)))]
    if d.features:
        features = Code("[" + ", ".join(script.ref(FEATURES[f].factory) for f in d.features) + "]")
        lines += ["# the input features, computed from each point",
                  _assign("x", script.call(portable.feature_matrix, Code("points"), features))]
    ordered = {"ordered": True} if entry.tags.get("ordered") else {}  # one text: its end held out
    split = script.call(portable.split_indices, Code("len(y)"), d.val_fraction, d.test_fraction,
                        Code("data_gen"), **ordered)
    normalizer = NORMALIZERS[d.normalize]
    sequences = entry.tags.get("input") == "sequence"  # one scale per feature, at every step
    scale_lines = [
        *_comment(f"Normalisation '{d.normalize}': {normalizer.doc} The statistics come from the "
                  "train split only, so nothing leaks from validation or test data."),
        _assign("shift, scale", script.call(normalizer.exported, Code(
            "x[train_idx].flatten(0, 1)" if sequences else "x[train_idx]")))]
    if scaling is not None:  # fine-tuning: inputs scaled as the pretrained layers saw them
        scale_lines = ["# Inputs scaled with the pretraining data's statistics: the pretrained",
                       "# layers learned on inputs scaled that way.",
                       f"shift, scale = {scaling}"]
    scaled = [*scale_lines, "x = (x - shift) / scale"]
    if entry.tags.get("input") == "tokens":
        scaled = ["# token ids, not measurements: nothing to scale"]
    lines += [
        "", _assign("train_idx, val_idx, test_idx", split), "",
        *scaled,
        "splits = {name: (x[idx].to(DEVICE), y[idx].to(DEVICE))",
        '          for name, idx in (("train", train_idx), ("val", val_idx),',
        '                            ("test", test_idx))}',
        'print(", ".join(f"{len(labels)} {name}" for name, (_, labels) in splits.items()), '
        '"examples")',
    ]
    return [*script.take(), *_comment(f"{d.name}: {entry.doc}"), *lines]


def _model(net, script: Script) -> list[str]:
    layers = Call("OrderedDict", [], {name: script.value(m) for name, m in net.named_children()})
    body = [_assign("model", Call("nn.Sequential", [layers]))]
    streams = [f'{s}_gen = generator(SEED, "{s}", DEVICE)' for s in script.streams]
    paths = {id(m): name for name, m in net.named_modules()}
    init = ['init_gen = generator(SEED, "init")', "with torch.no_grad():"]
    for module, choice, bias in net.inits:
        name = paths[id(module)]  # a positional child (branch.0) is not an attribute name
        path = f"model.{name}" if all(part.isidentifier() for part in name.split(".")) else \
            f'model.get_submodule("{name}")'
        entry = INITIALIZERS[choice.name]
        call = script.entry_call(entry, choice.params, Code(f"{path}.weight"), Code("init_gen"))
        init.append("    " + render(call, 4))
        if bias is not None:  # a convolution made with bias=False has none
            init.append(f"    nn.init.constant_({path}.bias, {literal(bias)})")
    return [*script.take(), *streams, *([""] if streams else []),
            "# Named layers, with the names Netlab's charts use. The output layer has no",
            "# activation: the loss takes its raw outputs (class logits or predicted values).",
            *body, "",
            "# Initial weights: every linear map and convolution in the order Netlab builds",
            "# them, weight then bias, from the init stream.", *init,
            "model = model.to(DEVICE)", "print(model)",
            'print(f"{sum(p.numel() for p in model.parameters()):,} parameters")']


def _optimizer(spec: ExperimentSpec, script: Script, frozen: bool = False) -> list[str]:
    opt, sched = OPTIMIZERS[spec.optimizer.name], SCHEDULES[spec.schedule.name]
    params = "[p for p in model.parameters() if p.requires_grad]" if frozen else \
        "model.parameters()"
    optimizer = script.entry_call(opt, spec.optimizer.params, Code(params))
    scheduler = script.entry_call(sched, spec.schedule.params, Code("optimizer"), Code("STEPS"))
    return [*script.take(), *_comment(f"{opt.key}: {opt.doc}"), _assign("optimizer", optimizer),
            "", *_comment(f"Schedule '{sched.key}': {sched.doc}"), _assign("scheduler", scheduler)]


def _loss(spec: ExperimentSpec, task: str, script: Script) -> list[str]:
    entry = LOSSES[spec.loss.name]
    criterion = script.entry_call(entry, spec.loss.params)
    wrapping = {k: v for k, v in loss_wrapping(entry, task == "classification",
                                               spec.data.per_step).items() if v}
    loss = script.call(portable.task_loss, Code(render(criterion)), **wrapping) if wrapping \
        else criterion
    note = {"one_logit": "one logit per example: sigmoid(out) is the probability of class 1",
            "on_classes": "a regression loss on classes: softmax probabilities against one-hot "
                          "targets",
            "per_step": "a class at every step of a sequence: each step counts as an example"}
    return [*script.take(), *_comment(f"Loss '{entry.key}': {entry.doc}"),
            *[f"# ({note[k]})" for k in wrapping], _assign("loss_fn", loss)]


def _training(spec: ExperimentSpec, task: str, script: Script, phase: str | None = None,
              objective: bool = False, forcing: bool = False) -> list[str]:
    """phase: the name of a run trained before the main one (its summary is kept under that
    name, nothing is saved); objective: the update minimises `objective` (distillation)."""
    t, reg = spec.training, spec.regularization
    kwargs = {"steps": Code("STEPS"), "batch_size": t.batch_size,
              "batch_gen": Code('generator(SEED, "batches")'), "device": Code("DEVICE"),
              "log_every": t.log_every, "eval_every": t.eval_every,
              "classes": task == "classification"}
    if loss_wrapping(LOSSES[spec.loss.name], task == "classification")["one_logit"]:
        kwargs["one_logit"] = True
    if reg.l1 or reg.l2:
        kwargs.update(l1=reg.l1, l2=reg.l2)
    if t.grad_clip is not None:
        kwargs["clip"] = (t.grad_clip.mode, t.grad_clip.max)
    if t.early_stopping is not None:
        es = t.early_stopping
        kwargs["early_stopping"] = {"patience": es.patience, "min_delta": es.min_delta,
                                    "restore_best": es.restore_best}
    if SCHEDULES[spec.schedule.name].tags.get("on_metric"):
        kwargs["schedule_on_metric"] = True
    if t.augment is not None and t.augment.active:  # blank: the model input of a raw 0 pixel
        kwargs["augment"] = Code('(generator(SEED, "augment"), (-shift / scale).to(DEVICE), '
                                 f"{literal(t.augment.to_dict())})")
    if objective:
        kwargs["objective"] = Code("objective")
    lead = []
    if forcing:  # the decoder may read the true previous answers while it trains
        kwargs["on_batch"] = Code("teacher_forcing")
        lead = ["def teacher_forcing(xb, yb):",
                "    # the decoder may read the batch's true previous answers (teacher forcing)",
                "    model.out.targets = yb", "", ""]
    run = script.call(export_template.train, Code("model"), Code("optimizer"),
                      Code("scheduler"), Code("loss_fn"), Code("splits"), **kwargs)
    if phase is not None:
        return [*script.take(), *lead, _assign(f"{phase}_summary", run)]
    return [*script.take(), *lead,
            "# A row is printed at step 1, every log_every steps and at the last step.",
            _assign("summary", run),
            "if args.save:",
            "    torch.save(model.state_dict(), args.save)",
            "if args.history:",
            '    with open(args.history, "w") as f:',
            "        json.dump(summary, f)",
            "# One machine-readable line last: the outcome (--history writes the rows too).",
            'print("FINAL", json.dumps({k: v for k, v in summary.items() if k != "history"}))']


def _imports(body: str) -> list[str]:
    """The import lines for the names the script's code uses, in isort's order."""
    used = {node.id for node in ast.walk(ast.parse(body)) if isinstance(node, ast.Name)}
    stdlib = [IMPORTS[n] for n in ("argparse", "json", "math", "OrderedDict") if n in used]
    third = [IMPORTS[n] for n in ("torch", "nn") if n in used]
    return ["from __future__ import annotations", "", *sorted(stdlib[:3]), *stdlib[3:], "",
            *third]


# ----------------------------------------------------------------------------- entry point


def export_script(spec, data_path: str | None = None) -> str:
    """A runnable, standalone PyTorch script that trains `spec` and reproduces its numbers.
    data_path: what the script calls a user's table (its --data default and the config in its
    header), e.g. a placeholder where the real path is a server's upload folder. A spec with a
    pretrain or distill section trains that run first, as the engine does."""
    spec = load_spec(spec)
    # the header and --data name the table as `data_path`; the sections read the real one
    # (for its shapes; the script's own code reads args.data)
    shown = spec.with_upload(data_path) if data_path is not None else spec
    script = Script()
    sections = [[_rule("settings"), *_settings(shown, script)]]
    if spec.pretrain is not None:
        sections += _run_sections(pretrain_spec(spec), script, phase="pretraining")
        sections.append(["# Pretraining done: its net and its input scaling are kept.",
                         "pretrained, pre_shift, pre_scale = model, shift, scale",
                         "STEPS = args.steps"])
    elif spec.distill is not None:
        sections += _run_sections(teacher_spec(spec), script, phase="teacher")
        distill = script.ref(portable.distill_loss)
        d = spec.distill
        sections.append([
            *script.take(),
            "# The teacher is trained: it only answers from now on.",
            "teacher = model.eval()", "for p in teacher.parameters():",
            "    p.requires_grad_(False)", "STEPS = args.steps", "", "",
            "def objective(out, xb, loss):",
            "    # what the student's updates minimise: match the teacher's softened outputs",
            "    # (weight alpha) and the labels (1 - alpha); the printed loss stays the label loss",
            "    with torch.no_grad():", "        target = teacher(xb)",
            f"    return {distill}(out, target, loss, {literal(d.temperature)}, "
            f"{literal(d.alpha)})"])
    sections += _run_sections(spec, script)
    body = "\n\n\n".join("\n".join(s).rstrip() for s in sections) + "\n"
    return "\n".join(_header(shown)) + "\n" + "\n".join(_imports(body)) + "\n\n\n" + body


def _run_sections(spec: ExperimentSpec, script: Script, phase: str | None = None) -> list:
    """Data, model, optimizer, loss and training of one run (a phase's, or the main one)."""
    data = load_dataset(spec.data, spec.seed)  # for the input shape and the number of outputs
    # Built on the meta device without initialising: it allocates nothing, lets the engine
    # reject an impossible stack with its SpecError, and records every module's call.
    with torch.device("meta"):
        net = engine_model.build_model(spec, data.in_shape, output_dim(spec, data),
                                       device="meta", init=False)
    title = f" ({phase})" if phase else ""
    frozen = frozen_layers(spec, net)
    handover = []
    if spec.pretrain is not None:
        freeze = script.ref(portable.freeze)
        handover = [
            "", "# Start from the pretrained hidden layers; the output layer (other classes) "
            "stays new.",
            "model.load_state_dict({k: v for k, v in pretrained.state_dict().items()",
            '                       if not k.startswith("out.")}, strict=False)',
            *[f"{freeze}(model.{name})  # frozen: kept exactly as pretrained" for name in frozen]]
    lead = [f"STEPS = {spec.training.steps}  # this run's own steps"] if phase else []
    return [
        [_rule(f"data{title}"), *lead,
         *_data(spec, script, "pre_shift, pre_scale" if spec.pretrain else None)],
        [_rule(f"model{title}"), *_model(net, script), *script.take(), *handover],
        [_rule(f"optimizer and learning-rate schedule{title}"),
         *_optimizer(spec, script, frozen=bool(frozen))],
        [_rule(f"loss{title}"), *_loss(spec, data.task, script)],
        [_rule(f"training{title}"),
         *_training(spec, data.task, script, phase, objective=spec.distill is not None,
                    forcing=any(isinstance(m, portable.Seq2Seq) and m.forcing > 0
                                for m in net.modules()))],
    ]


__all__ = ["export_script", "ExportError", "Script", "source_of", "SpecError"]
