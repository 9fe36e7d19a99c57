"""Runs that start from another network: pretraining (transfer learning) and a distillation
teacher. Each is a phase trained before this run's first step, from the same spec with a few keys
changed, so it is seeded and reproducible like the run itself.

    pretrain: {"classes": [0, 1, 2, 3, 4], "steps": 300, "freeze": [0, 1]}
        train the hidden layers on these classes first; this run (data.subset: the others) starts
        from those weights with a fresh output layer, and model.layers[0] and [1] stay exactly
        as pretrained (portable.freeze)
    distill: {"teacher": [layers...], "steps": 1000, "temperature": 4, "alpha": 0.9}
        train the teacher on the same data first; this run's model learns from the teacher's
        softened outputs as well as the labels (portable.distill_loss)

The phase's summary is kept on the trainer (`trainer.phase`) for the page.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..core.portable import distill_loss, freeze
from ..core.spec import ExperimentSpec
from ..data.datasets import load_dataset
from .callbacks import Callback, CancelFit

PHASE_CHUNK = 50  # steps between checks that the run was not cancelled meanwhile
PRETRAIN_VAL = 0.2  # the share of the pretraining classes' examples held out to report on


def pretrain_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """The pretraining run: the same spec on the pretraining classes, for pretrain.steps."""
    pre = spec.pretrain
    # the run may hold out most of its few examples; pretraining stands for a large labelled
    # set, so it trains on 80% of its classes' examples and reports on the rest
    data = replace(spec.data, subset=pre.classes, val_fraction=PRETRAIN_VAL, test_fraction=0.0)
    n = data.entry.param("n")
    if n is not None:  # a table has no n: it pretrains on every row of those classes
        data = data.with_params(n=pre.n or n.default)
    return _phase_spec(spec, data=data, steps=pre.steps)


def input_scaling(spec: ExperimentSpec):
    """(shift, scale) of the pretraining data, which a fine-tuned run must keep: features learned
    on inputs scaled one way mean something else on inputs scaled another (None: no pretrain)."""
    if spec.pretrain is None:
        return None
    pre = load_dataset(pretrain_spec(spec).data, spec.seed)
    return pre.shift, pre.scale


def teacher_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """The teacher's run: the same spec with the teacher's layers, for distill.steps."""
    return _phase_spec(spec, model=replace(spec.model, layers=spec.distill.teacher),
                       steps=spec.distill.steps)


def _phase_spec(spec, steps: int, **sections) -> ExperimentSpec:
    training = replace(spec.training, steps=steps, early_stopping=None)
    d = replace(spec, pretrain=None, distill=None, training=training, **sections).to_dict()
    return ExperimentSpec.from_dict(d)  # validated again: n and the subset must still fit


def frozen_layers(spec: ExperimentSpec, model) -> list[str]:
    """The names of the model's layers that pretrain.freeze keeps as they are."""
    if spec.pretrain is None or not spec.pretrain.freeze:
        return []
    keep = set(spec.pretrain.freeze)
    return [name for name, info in model.layer_info.items() if info.get("spec_index") in keep]


def freeze_layers(spec: ExperimentSpec, model) -> list[str]:
    """Freeze what the spec says (before the optimizer is built: it gets the rest only)."""
    names = frozen_layers(spec, model)
    for name in names:
        freeze(getattr(model, name))
    return names


def train_phase(spec: ExperimentSpec, trainer):
    """Train the phase's own run to its end, giving up if `trainer` is cancelled meanwhile. The
    phase is a whole run of the same kind of Trainer (so this module needs no import of it)."""
    phase = type(trainer)(spec, max_params=trainer.max_params)
    while not phase.done:
        if trainer._cancel.is_set():
            raise CancelFit()
        phase.run(PHASE_CHUNK)
    return phase


def _summary(kind: str, phase, **extra) -> dict:
    """What the page shows of a phase: its end figures and its curves."""
    val = phase.evaluate("val")
    rows = [{k: r.get(k) for k in ("step", "train_loss", "val_loss", "train_acc", "val_acc")}
            for r in phase.history.rows]
    return {"kind": kind, "steps": phase.step_count, "stopped": phase.stopped,
            "val_loss": val["loss"], "val_acc": val["acc"], "seconds": round(phase.seconds, 3),
            "params": sum(p.numel() for p in phase.model.parameters()), "rows": rows, **extra}


class Pretrain(Callback):
    """Before the first step: pretrain a copy on the other classes and start from its hidden
    layers (the output layer, sized for other classes, starts fresh)."""
    order, name = 0, "pretrain"

    def on_fit_start(self, trainer):
        source = train_phase(pretrain_spec(trainer.spec), trainer)
        mine = trainer.model.state_dict()
        taken = {k: v for k, v in source.model.state_dict().items()
                 if not k.startswith("out.") and k in mine and v.shape == mine[k].shape}
        trainer.model.load_state_dict(taken, strict=False)
        trainer.phase = _summary("pretrain", source, classes=list(trainer.spec.pretrain.classes),
                                 frozen=list(trainer.frozen))


class Distill(Callback):
    """Before the first step: train the teacher; from then on the objective adds the
    teacher-matching term (the logged train loss stays the loss on the true labels)."""
    order, name = 0, "distill"

    def on_fit_start(self, trainer):
        phase = train_phase(teacher_spec(trainer.spec), trainer)
        teacher = phase.model.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        d = trainer.spec.distill

        def objective(out, xb, hard_loss):
            with torch.no_grad():
                target = teacher(xb)
            return distill_loss(out, target, hard_loss, d.temperature, d.alpha)

        trainer.objective = objective
        trainer.phase = _summary("distill", phase, temperature=d.temperature, alpha=d.alpha)


def phase_callbacks(spec: ExperimentSpec) -> list[Callback]:
    return [cb() for section, cb in (("pretrain", Pretrain), ("distill", Distill))
            if getattr(spec, section) is not None]
