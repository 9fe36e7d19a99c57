"""Callbacks: everything optional in training plugs in here instead of as a flag in the loop.

Hooks, in the order the Trainer calls them each step:
    on_fit_start(trainer)           once, before the first step
    on_step_start(trainer)          before the batch is drawn
    on_batch(trainer, xb, yb)       the training batch, before the forward pass
    on_after_backward(trainer)      gradients exist, the optimizer has not stepped
    on_step_end(trainer)            after the update; trainer.row is a dict on logged steps
    on_log(trainer, row)            a finished metrics row was appended to the history (every
                                    logged row, evaluated or not; `on_eval` is its old name and
                                    still works)
    on_fit_end(trainer)             once, when the run stops for any reason
    on_step_done(trainer)           the step is over: its counters, a stop and the fit's end
                                    are settled, so trainer.state_dict() is whole here (the
                                    store's checkpoints are taken from this hook)
A callback raises CancelFit (or calls trainer.stop(reason)) to end the run after this step.

Within each hook, callbacks run by `order` (lowest first; equal orders keep the order given). The
built-in ones and why they sit where they do:
     5 Nudge            (claim checks only) moves the starting weights by a part in a million
    10 Regularization   adds the penalty's gradient before anyone reads the gradients
    20 Diagnostics      measures the gradients before clipping changes them
    30 GradClip         clips what the optimizer will use
    40 HealthCheck      reads the statistics Diagnostics wrote into the row
    50 EarlyStopping    reads the logged validation loss; restores weights at fit end
   100 (default)        a user's callbacks: they see finished rows and restored weights
Each has a `name` (trainer.callback(name) finds it).

A callback that keeps counts or memories across steps names them in `state`: a checkpoint saves
those attributes under the callback's `name` (so two stateful callbacks need two names), and a
resumed run gets them back (trainer.state_dict / load_state_dict). What on_fit_start derives
(facts about the net, a phase's teacher) is derived again on resume.
"""
from __future__ import annotations

import json
import os

import torch

from ..core.portable import EarlyStop, add_penalty_grads, clip_gradients, weight_params


class CancelFit(Exception):
    """Raised by a callback to end the run; the Trainer records stopped='cancelled'."""


class Callback:
    order = 100
    name = "callback"
    state: tuple[str, ...] = ()  # the attributes a resumed run needs back (see above)

    def state_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.state}

    def load_state_dict(self, state: dict) -> None:
        for key in self.state:
            if key in state:
                setattr(self, key, state[key])

    def on_fit_start(self, trainer): pass
    def on_step_start(self, trainer): pass
    def on_batch(self, trainer, xb, yb): pass
    def on_after_backward(self, trainer): pass
    def on_step_end(self, trainer): pass
    def on_log(self, trainer, row): self.on_eval(trainer, row)  # callbacks written before on_log
    def on_eval(self, trainer, row): pass
    def on_fit_end(self, trainer): pass
    def on_step_done(self, trainer): pass


class Hooks:
    """PyTorch hook handles held together: `with Hooks() as hooks:` removes every one on exit,
    and remove() can be called early (a logged step drops its hooks once backward has run)."""

    def __init__(self):
        self._handles: list = []

    def add(self, handle) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class Nudge(Callback):
    """Multiplies every starting weight by 1 + `scale` * u, u uniform in [-1, 1], after any
    pretraining or teacher phase: the difference another CPU's rounding makes, made on purpose.
    A teaching claim must survive it (engine/presets/claims.py); one that does not rests on
    chaos, not on the effect it names. Equal numbers in a tensor get the same factor, so exact
    symmetry (an all-zero or constant init), which rounding can never break, is kept."""
    order, name = 5, "nudge"

    def __init__(self, scale: float = 1e-6, seed: int = 0):
        self.scale, self.seed = scale, seed

    @torch.no_grad()
    def on_fit_start(self, trainer):
        gen = torch.Generator().manual_seed(self.seed)
        for p in trainer.model.parameters():
            values, index = torch.unique(p.detach().cpu(), return_inverse=True)
            u = torch.rand(len(values), generator=gen, dtype=torch.float64) * 2 - 1
            p.mul_((1 + self.scale * u)[index].to(p.device, p.dtype))


class Regularization(Callback):
    """Adds the gradient of l1*sum|w| + l2*sum w^2 straight to the weight gradients: the same
    update as putting the penalty in the loss, without building it into the graph each step.
    The logged loss stays the data loss, so runs with and without a penalty compare directly."""
    order, name = 10, "regularization"

    def __init__(self, l1: float, l2: float):
        self.l1, self.l2 = l1, l2

    def on_after_backward(self, trainer):
        add_penalty_grads(weight_params(trainer.model), self.l1, self.l2)

    @staticmethod
    def penalty(model, l1: float, l2: float) -> torch.Tensor:
        """The penalty itself, for reporting and for tests against autograd."""
        ws = weight_params(model)
        return sum(l1 * w.abs().sum() + l2 * (w ** 2).sum() for w in ws)


class TeacherForcing(Callback):
    """Hands each training batch's answers to the model's encoder-decoder, which may feed them
    back instead of its own guesses (portable.Seq2Seq; evaluation never gets them)."""
    order, name = 15, "teacher_forcing"

    def __init__(self, decoder):
        self.decoder = decoder

    def on_batch(self, trainer, xb, yb):
        self.decoder.targets = yb


class GradClip(Callback):
    """Clips gradients by global norm or by value, and counts how often it had to (telemetry in
    each row as clip_frac: the share of steps since the last row that were clipped)."""
    order, name = 30, "grad_clip"
    state = ("_clipped", "_steps")

    def __init__(self, mode: str, limit: float):
        self.mode, self.limit = mode, limit
        self._clipped = None
        self._steps = 0

    def on_after_backward(self, trainer):
        params = [p for p in trainer.params if p.grad is not None]
        hit = clip_gradients(params, self.mode, self.limit)
        self._clipped = hit.float() if self._clipped is None else self._clipped + hit
        self._steps += 1

    def on_step_end(self, trainer):
        if trainer.row is not None and self._steps:
            trainer.row["clip_frac"] = float(self._clipped) / self._steps
            self._clipped, self._steps = None, 0


class EarlyStopping(EarlyStop, Callback):
    """Stops when the validation loss has not improved by min_delta for `patience` evaluations,
    and (restore_best) puts back the weights of the best evaluation when the run ends. The rule
    is portable.EarlyStop, which the exported script runs too."""
    order, name = 50, "early_stopping"
    state = ("best_loss", "best_step", "best_state", "waited")

    def on_log(self, trainer, row):
        loss = row.get("val_loss")
        if loss is not None and self.update(loss, row["step"], trainer.model):
            trainer.stop("early_stopping")

    def on_fit_end(self, trainer):
        if self.restore_best and self.best_state is not None and trainer.stopped != "diverged":
            trainer.model.load_state_dict(self.best_state)
            trainer.restored_step = self.best_step


class JsonlWriter(Callback):
    """Appends every row to a metrics.jsonl file as it is logged (a crashed run keeps its log)."""
    name = "jsonl"

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "w").close()

    def on_log(self, trainer, row):
        with open(self.path, "a") as f:
            f.write(json.dumps(trainer.history.last) + "\n")


class Checkpoint(Callback):
    """Saves the model's state_dict when the run ends (after early stopping restored the best)."""
    name = "checkpoint"

    def __init__(self, path: str):
        self.path = path

    def on_fit_end(self, trainer):
        torch.save(trainer.model.state_dict(), self.path)
