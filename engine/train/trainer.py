"""Trainer: one experiment, advanced a step at a time, reporting through callbacks.

    trainer = Trainer(spec)          # data, model, optimizer and schedule built once here
    trainer.run(200)                 # resumable: run(200) again continues from step 200
    trainer.step()                   # a single step (the UI's Step button)
    trainer.history.rows             # metrics rows (DESIGN.md §2.2)
    state = trainer.state_dict()     # a checkpoint, between steps; a fresh Trainer of the same
    Trainer(spec).load_state_dict(state)  # spec goes on from it with identical numbers

The hot path never waits for the GPU: losses and accuracies accumulate as tensors and reach the
host once per logged row. Divergence is checked before each update: the loss every step on the
CPU (where it costs nothing) and the gradients too on logged steps; on CUDA both only every
`training.log_every` steps, restoring the last finite weights when a check fails.
"""
from __future__ import annotations

import math
import threading
import time

import torch

from ..core.errors import SpecError
from ..core.portable import Batches, Dropout, Seq2Seq, augment_images, predict_classes, task_loss
from ..core.registry import LOSSES, OPTIMIZERS, SCHEDULES
from ..core.seeding import generator as make_generator
from ..core.spec import ExperimentSpec, load_spec
from ..data.datasets import Dataset, load_dataset
from ..nn.model import build_model, count_params, describe
from .callbacks import Callback, CancelFit, EarlyStopping, GradClip, Regularization, TeacherForcing
from .diagnostics import Diagnostics
from .health import HealthCheck
from .history import History
from .transfer import freeze_layers, input_scaling, phase_callbacks, teacher_spec

EVAL_CHUNK = 4096
# At most this many activation values in one evaluation forward pass (~200 MB in float32): a
# wide convolution's 4,096 examples would need gigabytes at once.
EVAL_ACTIVATIONS = 50_000_000


def eval_chunk(activations_per_example: int) -> int:
    """Examples per evaluation forward pass for a model leaving this many values per example."""
    return max(1, min(EVAL_CHUNK, EVAL_ACTIVATIONS // max(activations_per_example, 1)))


CHECKPOINT_FORMAT = 1  # state_dict's layout; a checkpoint of another format is refused
FOLD = 64  # training steps whose predictions are scored together for train_acc
TRAIN_EVAL_SIZE = 2048  # training examples scored in eval mode on rows of mode-dependent models


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("device='cuda' but this machine has no CUDA GPU; allowed here: auto, cpu")
    return torch.device(name)


def make_loss(choice, task: str, per_step: bool = False):
    """Loss callable (output, target) for the task. Classification targets are class indices;
    bce uses a single logit; a regression loss on classes compares softmax with one-hot."""
    entry = LOSSES[choice.name]
    classification = task == "classification"
    return task_loss(entry.build(**choice.params),
                     **loss_wrapping(entry, classification, per_step))


def loss_wrapping(entry, classification: bool, per_step: bool = False) -> dict:
    """task_loss's keyword arguments for a loss entry on this task (the exporter writes them);
    per_step: the dataset has a class at every step of a sequence."""
    return {"one_logit": classification and bool(entry.tags.get("binary")),
            "on_classes": classification and entry.tags["task"] == "regression",
            "per_step": classification and per_step}


def output_dim(spec: ExperimentSpec, data: Dataset) -> int:
    return 1 if LOSSES[spec.loss.name].tags.get("binary") else data.out_dim


# how a divergence's message ends when the bad update was simply skipped
NOT_APPLIED = ", and the update that would have broken the weights was not applied"


def is_log_step(step: int, log_every: int, total_steps: int) -> bool:
    """A metrics row is logged at the first step, every `log_every` steps and at the last."""
    return step == 1 or step % log_every == 0 or step >= total_steps


def logged_rows(spec: ExperimentSpec) -> int:
    """The rows a run of `spec` logs over its planned steps."""
    t = spec.training
    return sum(is_log_step(step, t.log_every, t.steps) for step in range(1, t.steps + 1))


class Trainer:
    def __init__(self, spec, callbacks: list[Callback] = (), dataset: Dataset | None = None,
                 max_params: int | None = None):
        self.spec: ExperimentSpec = load_spec(spec)
        s = self.spec
        self.device = resolve_device(s.device)
        self.data = (dataset or load_dataset(s.data, s.seed, input_scaling(s))).to(self.device)
        self.max_params = max_params
        self.cost = self._check_fits()  # everything refused before anything is built
        self.binary = bool(LOSSES[s.loss.name].tags.get("binary"))
        self.eval_chunk = eval_chunk(self.cost["activations"])
        self._build()
        self.history = History()
        self.diagnostics = Diagnostics()
        # by order, the built-in ones first on ties (sorted() is stable): see callbacks.py
        self.callbacks: list[Callback] = sorted(self._default_callbacks() + list(callbacks),
                                                key=lambda cb: cb.order)
        # only the callbacks that use on_step_done are called there: the hot path pays nothing
        self._done_hooks = [cb for cb in self.callbacks if getattr(
            type(cb), "on_step_done", Callback.on_step_done) is not Callback.on_step_done]
        self.step_count = 0
        self._extra_steps = 0
        self.stopped: str | None = None  # completed | early_stopping | diverged | cancelled
        self.divergence: dict | None = None
        self.restored_step: int | None = None
        self.row: dict | None = None  # the metrics row being built during a logged step
        self.batch_loss: torch.Tensor | None = None
        self.seconds = 0.0
        self.test_metrics: dict | None = None
        self._started = False
        self._cancel = threading.Event()
        self._check_every = 1 if self.device.type == "cpu" else s.training.log_every
        self._last_good = None
        self._reset_accumulators()

    def _check_fits(self) -> dict:
        """What the spec asks of this data and this server, checked before anything is built:
        the loss fits the targets, the model (and a distillation teacher) within max_params.
        Returns the model's cost ({params, macs, activations}, counted on the meta device)."""
        s, data = self.spec, self.data
        if LOSSES[s.loss.name].tags.get("binary") and data.classes != 2:
            raise SpecError(f"loss={s.loss.name!r} needs exactly 2 classes; this data has "
                            f"{data.classes}")
        if data.task == "regression" and LOSSES[s.loss.name].tags["task"] == "classification":
            raise SpecError(f"loss={s.loss.name!r} needs class labels, but the target is continuous;"
                            f" allowed: {', '.join(LOSSES.where(task='regression'))}")
        d = describe(s, data.in_shape, output_dim(s, data))
        cost = {k: d[f"total_{k}"] for k in ("params", "macs", "activations")}
        most = self.max_params
        if s.distill is not None:  # the teacher is built at the first step: check it now
            try:
                taught = describe(teacher_spec(s), data.in_shape, output_dim(s, data))
            except SpecError as e:
                raise SpecError(f"distill.teacher: {e}") from None
            if most is not None and taught["total_params"] > most:
                raise SpecError(f"distill.teacher has {taught['total_params']:,} parameters; at "
                                f"most {most:,} are allowed here")
        if most is not None and cost["params"] > most:
            raise SpecError(f"the model has {cost['params']:,} parameters; at most "
                            f"{most:,} are allowed here. Use fewer or narrower layers")
        return cost

    def _build(self) -> None:
        """The model, its loss, optimizer, schedule and batches, from the spec's seed."""
        s = self.spec
        self.model = build_model(s, self.data.in_shape, output_dim(s, self.data), self.device)
        self.frozen = freeze_layers(s, self.model)  # pretrain.freeze: kept as pretrained
        self.params = list(self.model.parameters())  # walking the module tree costs ~20 us
        self.loss_fn = make_loss(s.loss, self.data.task, s.data.per_step)
        # what the update minimises: the loss, unless a phase (distillation) adds to it
        self.objective = lambda out, xb, loss: loss
        self.phase: dict | None = None  # a pretraining or teacher phase's summary, once trained
        self.optimizer = OPTIMIZERS[s.optimizer.name].build(
            [p for p in self.params if p.requires_grad], **s.optimizer.params)
        self.schedule_on_metric = bool(SCHEDULES[s.schedule.name].tags.get("on_metric"))
        # A steady schedule needs no scheduler: LambdaLR would still wrap optimizer.step and
        # cost ~10 us a step for nothing.
        steady = bool(SCHEDULES[s.schedule.name].tags.get("steady"))
        self._scheduled = not self.schedule_on_metric and not steady
        self.scheduler = None if steady else SCHEDULES[s.schedule.name].build(
            self.optimizer, s.training.steps, **s.schedule.params)
        self.batches = Batches(len(self.data.y_train), s.training.batch_size,
                               make_generator(s.seed, "batches"), self.device)
        augment = s.training.augment
        # training batches only; what moves into an image is blank canvas, a raw 0 pixel
        self._augment = None if augment is None or not augment.active else (
            make_generator(s.seed, "augment"), self.data.blank, augment.to_dict())
        self._mode_dependent = any(isinstance(m, (Dropout, torch.nn.modules.batchnorm._BatchNorm))
                                   for m in self.model.modules())

    def _default_callbacks(self) -> list[Callback]:
        s = self.spec
        cbs: list[Callback] = phase_callbacks(s)  # first: they set up the model and objective
        cbs += [TeacherForcing(m) for m in self.model.modules()
                if isinstance(m, Seq2Seq) and m.forcing > 0]
        if s.regularization.l1 or s.regularization.l2:
            cbs.append(Regularization(s.regularization.l1, s.regularization.l2))
        cbs.append(self.diagnostics)  # measures gradients before clipping changes them
        if s.training.grad_clip is not None:
            cbs.append(GradClip(s.training.grad_clip.mode, s.training.grad_clip.max))
        cbs.append(HealthCheck())
        es = s.training.early_stopping
        if es is not None:
            cbs.append(EarlyStopping(es.patience, es.min_delta, es.restore_best))
        return cbs

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.stopped is not None

    @property
    def total_steps(self) -> int:
        """The steps this run trains for: the planned `training.steps`, plus any `extend`."""
        return self.spec.training.steps + self._extra_steps

    def extend(self, steps: int) -> None:
        """Train `steps` more after a run that completed, from where it ended: the same model,
        optimizer state, batch order and random streams, as if the plan had been longer. The
        schedule was built for the planned steps, so its last rate holds from there on."""
        if self.stopped != "completed":
            raise ValueError(f"only a completed run can be extended, not one "
                             f"{self.stopped or 'running'}")
        if self.restored_step is not None:  # early stopping put the best weights back
            raise ValueError(f"the weights were restored from step {self.restored_step}; "
                             "training on from them would not be this run going on")
        self._extra_steps += steps
        self.stopped, self._finished, self.test_metrics = None, False, None

    def is_log_step(self, step: int) -> bool:
        return is_log_step(step, self.spec.training.log_every, self.total_steps)

    def _is_eval_step(self, step: int) -> bool:
        every = self.spec.training.eval_every
        return every == 0 or step % every == 0 or step == 1 or step >= self.total_steps

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason

    def cancel(self) -> None:
        """Thread-safe: ends a run() in progress after its current step (stopped='cancelled')."""
        self._cancel.set()

    def callback(self, name: str) -> Callback | None:
        """The callback called `name` (e.g. "health", "early_stopping"), or None."""
        return next((cb for cb in self.callbacks if cb.name == name), None)

    def activation_samples(self) -> dict:
        """The latest logged step's activations per layer (up to 2,048 values each, on the CPU),
        for histograms."""
        return dict(self.diagnostics.samples)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ------------------------------------------------------------------ loop
    def run(self, steps: int | None = None) -> "Trainer":
        """Advance up to `steps` steps (default: to the end of the planned run)."""
        target = self.total_steps if steps is None else min(self.total_steps, self.step_count + steps)
        while not self.done and self.step_count < target:
            if self._cancel.is_set():
                self.stop("cancelled")
                break
            self.step()
        if self.done:
            self._finish()
        return self

    def step(self) -> bool:
        """One gradient step. Returns False (and does nothing) once the run has stopped."""
        if self.done:
            return False
        t0 = time.perf_counter()
        try:
            if not self._started:  # a pretraining or teacher phase may be cancelled here too
                self._started = True
                self._call("on_fit_start")
            self._step()
        except CancelFit:
            self.stop("cancelled")
        self.seconds += time.perf_counter() - t0
        if self.step_count >= self.total_steps:
            self.stop("completed")
        if self.done:
            self._finish()
        for cb in self._done_hooks:
            cb.on_step_done(self)
        return True

    def _step(self):
        self.row = None
        self._call("on_step_start")
        idx = self.batches.next()
        xb, yb = self.data.x_train[idx], self.data.y_train[idx]
        if self._augment is not None:
            gen, blank, settings = self._augment
            xb = augment_images(xb, gen, blank, **settings)
        self._call("on_batch", xb, yb)
        if not self.model.training:  # evaluate()/predict() restore the mode; walking the
            self.model.train()        # module tree every step costs ~20 us
        out = self.model(xb)
        loss = self.loss_fn(out, yb)
        self.batch_loss = loss.detach()  # this step's batch loss, for callbacks (lr range test)
        self.optimizer.zero_grad(set_to_none=True)
        self.objective(out, xb, loss).backward()
        self._call("on_after_backward")
        step = self.step_count + 1
        log_step = self.is_log_step(step)
        if log_step or step % self._check_every == 0:
            if not self._finite(loss, step, log_step):
                return
        lr = self.lr()
        self.optimizer.step()
        if self._scheduled and step < self.spec.training.steps:
            self.scheduler.step()
        self.step_count = step
        self._loss_sum += loss.detach()
        self._seen += yb.numel()  # a sequence with a class at every step counts each step
        self._batches_since += 1
        if self.data.task == "classification":
            # argmax/eq/sum/add_ on every step cost ~12 us on CPU; batching them per row (or
            # per FOLD steps, to bound memory) costs one set of ops on a larger tensor
            self._outs.append(out.detach())
            self._ys.append(yb)
            if len(self._outs) >= FOLD:
                self._fold()
        if log_step:
            self.row = self._metrics_row(lr)
        self._call("on_step_end")
        if self.row is not None:
            self._log(self.row)

    def _finite(self, loss, step, log_step) -> bool:
        """Stop at the first non-finite loss or gradient without applying that update."""
        if log_step:  # gradients too, where a row is written anyway: one fused norm per list
            grads = [p.grad for p in self.params if p.grad is not None]
            total = loss.detach().float()
            if grads:
                total = total + torch.stack(torch._foreach_norm(grads)).sum()
            finite = math.isfinite(total.item())
        else:
            value = loss.item()
            finite = math.isfinite(value)
            if finite:  # kept until the next row: a divergence logs them (below)
                self._step_losses.append((step, value, self.lr()))
        if finite:
            if self._check_every > 1:
                self._last_good = (step, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return True
        value = float(loss.detach())
        kept = NOT_APPLIED
        if self._check_every > 1 and self._last_good is not None:
            self.model.load_state_dict(self._last_good[1])
            kept = f"; the weights from step {self._last_good[0]} were restored"
        self._diverge(step, value, self.lr(), kept, self._step_losses)
        return False

    def _diverge(self, step: int, value: float, lr: float, kept: str, step_losses) -> None:
        """Stop as diverged at `step` (its loss `value`), with a row saying so. step_losses:
        (step, batch loss, lr) of the steps since the last row, logged first: between two rows
        a loss can climb from 1 to 1e30, and the rows alone would draw only its two ends.
        Written now, they carry the run's verdict."""
        last_loss = next((r["train_loss"] for r in reversed(self.history.rows)
                          if r.get("train_loss") is not None), None)
        self.divergence = {"step": step, "loss": "NaN" if value != value else f"{value:g}",
                           "last_finite_loss": last_loss, "kept": kept}
        self.stop("diverged")
        self.row = self._bare_row(step, lr)
        self._call("on_step_end")
        diverged = self.row
        for s, batch_loss, rate in step_losses:
            self._log({**self._bare_row(s, rate, batch_loss), "health": diverged.get("health")})
        self._log(diverged)

    def _bare_row(self, step: int, lr: float, train_loss: float | None = None) -> dict:
        """A row with no statistics: a step before a divergence (its batch loss) or the step
        that diverged (nothing finite to show)."""
        return {"step": step, "epoch": step * self.batches.size / self.batches.n, "lr": lr,
                "train_loss": train_loss, "val_loss": None, "train_acc": None,
                "val_acc": None, "grad_norm": None, "layers": None}

    def _log(self, row):
        self.history.append(row)
        if self.schedule_on_metric:
            metric = row.get("val_loss") if row.get("val_loss") is not None else row.get("train_loss")
            if metric is not None:
                self.scheduler.step(metric)
        self._call("on_log", self.history.last)
        self.row = None

    def _fold(self):
        if self._outs:
            out, y = torch.cat(self._outs), torch.cat(self._ys)
            self._correct += (predict_classes(out, self.binary) == y).sum()
            self._outs.clear()
            self._ys.clear()

    def _reset_accumulators(self):
        self._outs, self._ys = [], []
        zero = torch.zeros((), device=self.device)
        self._loss_sum, self._correct = zero.clone(), zero.clone()
        self._seen, self._batches_since = 0, 0
        self._step_losses: list[tuple[int, float, float]] = []  # (step, batch loss, lr) of the
        # steps since the last row whose loss was read alone (every step on a CPU)

    def _metrics_row(self, lr: float) -> dict:
        step = self.step_count
        self._fold()
        stats = torch.stack([self._loss_sum / max(self._batches_since, 1),
                             self._correct / max(self._seen, 1)]).tolist()
        classification = self.data.task == "classification"
        row = {"step": step, "epoch": step * self.batches.size / self.batches.n, "lr": lr,
               "train_loss": stats[0], "val_loss": None,
               "train_acc": stats[1] if classification else None, "val_acc": None,
               "grad_norm": None, "layers": None}
        self._reset_accumulators()
        if self._is_eval_step(step) and len(self.data.y_val):
            val = self.evaluate("val")
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            if self._mode_dependent:
                # dropout and BatchNorm act differently while training: the running train
                # metrics are not comparable with validation's, these are
                fit = self.evaluate("train", limit=TRAIN_EVAL_SIZE)
                row["train_eval_loss"], row["train_eval_acc"] = fit["loss"], fit["acc"]
        return row

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val", limit: int | None = None) -> dict:
        """Mean loss and accuracy (None for regression) over a whole split (or its first `limit`
        examples), in eval mode."""
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        if limit is not None:
            x, y = x[:limit], y[:limit]
        if len(y) == 0:
            return {"loss": None, "acc": None}
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for i in range(0, len(y), self.eval_chunk):
            out = self.model(x[i:i + self.eval_chunk])
            yb = y[i:i + self.eval_chunk]
            loss_sum += self.loss_fn(out, yb) * len(yb)
            if self.data.task == "classification":
                correct += (predict_classes(out, self.binary) == yb).sum()
        self.model.train(was_training)
        loss, acc = (torch.stack([loss_sum / len(y), correct / y.numel()])).tolist()
        return {"loss": loss, "acc": acc if self.data.task == "classification" else None}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs for already-encoded inputs, in eval mode: class probabilities for
        classification, predicted targets for regression."""
        was_training = self.model.training
        self.model.eval()
        out = self.model(x.to(self.device))
        self.model.train(was_training)
        if self.data.task != "classification":
            return out
        if self.binary:
            p = torch.sigmoid(out[..., 0])
            return torch.stack([1 - p, p], -1)
        return out.softmax(-1)

    def _finish(self):
        if getattr(self, "_finished", False):
            return
        self._finished = True
        self._call("on_fit_end")
        if self.stopped != "diverged" and len(self.data.y_test):
            self.test_metrics = self.evaluate("test")

    # ------------------------------------------------------------------ checkpoints
    def random_streams(self) -> list[torch.Generator]:
        """Every generator training still draws from: batches, augmentation, and the model's own
        (dropout masks, teacher forcing), each once, in a fixed order. The data and the initial
        weights were drawn when the Trainer was built."""
        found = [self.batches.gen] + ([self._augment[0]] if self._augment else [])
        for module in self.model.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Generator) and all(value is not g for g in found):
                    found.append(value)
        return found

    def state_dict(self, history: bool = True) -> dict:
        """Everything this run needs to go on exactly where it stands, taken between two steps
        (or in on_step_done): weights, optimizer and schedule state, every random stream, the
        batch order, the counters, the partly summed row, the history and the callbacks' state.
        Only tensors and plain containers, so torch.load(..., weights_only=True) reads it. It
        refers to the live tensors: serialize it (torch.save, Trainer.save) before training on.
        history=False leaves the History out (the run store keeps every row already, and a
        long run's History is megabytes): load_state_dict then takes the rows instead."""
        b = self.batches
        return {
            "format": CHECKPOINT_FORMAT, "spec": self.spec.to_json(),
            "step_count": self.step_count, "extra_steps": self._extra_steps,
            # the newest logged row's step: past step_count for a divergence (its row is
            # logged at the step whose update was not applied)
            "logged_step": self.history.last["step"] if self.history.last else 0,
            "started": self._started, "finished": getattr(self, "_finished", False),
            "stopped": self.stopped, "divergence": self.divergence,
            "restored_step": self.restored_step, "seconds": self.seconds,
            "test_metrics": self.test_metrics,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "random": [g.get_state() for g in self.random_streams()],
            "batches": {"order": b._order, "pos": b._pos},
            "sums": {"loss": self._loss_sum, "correct": self._correct, "seen": self._seen,
                     "batches": self._batches_since, "outs": list(self._outs),
                     "ys": list(self._ys), "step_losses": list(self._step_losses)},
            "last_good": self._last_good,
            "history": self.history.state_dict() if history else None,
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks if _stateful(cb)},
        }

    def load_state_dict(self, state: dict, rows: list[dict] | None = None) -> "Trainer":
        """Go on from a checkpoint of this experiment (a fresh Trainer only). The callbacks'
        on_fit_start runs first, as it did for the original run: what they derive (the net's
        facts, a pretraining phase, a distillation teacher) comes out the same, and the
        checkpoint's weights then replace whatever a phase put in the model. `rows`: every row
        logged up to the checkpoint, for a checkpoint saved without its History (the History
        is a function of the rows appended to it, so appending them again rebuilds it)."""
        if self._started or self.step_count:
            raise ValueError("a checkpoint loads into a Trainer that has not trained yet")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SpecError(f"not a Netlab checkpoint of format {CHECKPOINT_FORMAT}")
        if state["spec"] != self.spec.to_json():
            raise SpecError("the checkpoint is of another experiment: its spec differs from "
                            "this run's")
        if state["started"]:
            self._started = True
            self._call("on_fit_start")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        streams = self.random_streams()
        if len(streams) != len(state["random"]):
            raise SpecError("the checkpoint's random streams do not match this run's")
        for g, saved in zip(streams, state["random"]):
            g.set_state(saved)
        here = lambda t: t.to(self.device)  # noqa: E731 - a checkpoint may be read on the CPU
        order = state["batches"]["order"]
        self.batches._order = None if order is None else here(order)
        self.batches._pos = state["batches"]["pos"]
        sums = state["sums"]
        self._loss_sum, self._correct = here(sums["loss"]), here(sums["correct"])
        self._seen, self._batches_since = sums["seen"], sums["batches"]
        self._outs, self._ys = [here(t) for t in sums["outs"]], [here(t) for t in sums["ys"]]
        self._step_losses = [tuple(x) for x in sums.get("step_losses", [])]  # older: none
        good = state["last_good"]
        self._last_good = None if good is None else (good[0], {k: here(v)
                                                               for k, v in good[1].items()})
        if state["history"] is not None:
            self.history.load_state_dict(state["history"])
        elif rows is None:
            raise ValueError("this checkpoint was saved without its History: pass its rows")
        else:
            for row in rows:
                self.history.append(row)
        for cb in self.callbacks:
            if _stateful(cb) and cb.name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.name])
        self.step_count, self._extra_steps = state["step_count"], state["extra_steps"]
        self.stopped, self.divergence = state["stopped"], state["divergence"]
        self.restored_step, self.seconds = state["restored_step"], state["seconds"]
        self.test_metrics, self._finished = state["test_metrics"], state["finished"]
        if self.stopped == "cancelled":  # an interruption, not an end: it goes on from here
            self.stopped, self._finished, self.test_metrics = None, False, None
        return self

    def save(self, path) -> None:
        """The checkpoint to a file (torch.save of state_dict())."""
        torch.save(self.state_dict(), path)

    @classmethod
    def resume(cls, path_or_state, callbacks: list[Callback] = (), **kw) -> "Trainer":
        """A Trainer going on from a checkpoint file (or a state_dict)."""
        state = load_checkpoint(path_or_state) if not isinstance(path_or_state, dict) \
            else path_or_state
        return cls(state["spec"], callbacks=callbacks, **kw).load_state_dict(state)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        last = self.history.last
        final = {k: v for k, v in last.items() if k != "layers"} if last else {}
        best = self.history.best  # over every row logged, not only those the History kept
        return {"steps": self.step_count, "stopped": self.stopped or "running", "final": final,
                "best": {"step": best["step"], "val_loss": best["val_loss"]} if best else None,
                "restored_step": self.restored_step,
                "test": self.test_metrics, "health": last.get("health") if last else None,
                "params": count_params(self.model), "device": str(self.device),
                "seconds": round(self.seconds, 3)}


def _stateful(cb) -> bool:
    """A callback whose `state` a checkpoint carries (duck-typed callbacks carry none)."""
    return isinstance(cb, Callback) and bool(cb.state)


def load_checkpoint(source, device: str | torch.device = "cpu") -> dict:
    """A checkpoint from a path, bytes or a file object. weights_only: it holds tensors and plain
    values, and nothing in it can run code."""
    import io

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        return torch.load(source, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch's advice to unpickle it
        # anyway is the one thing never to do with a file of unknown origin, so it is not shown
        raise SpecError(f"the checkpoint cannot be read ({type(e).__name__}): it is damaged "
                        "or not a Netlab checkpoint") from None


def lr_preview(spec: ExperimentSpec, points: int = 300) -> tuple[list[int], list[float]]:
    """The learning rate the schedule will give at each step of the planned run, computed on a
    dummy parameter (reduce_on_plateau depends on the run itself, so it previews as flat)."""
    import warnings

    s = load_spec(spec)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = OPTIMIZERS[s.optimizer.name].build([param], **s.optimizer.params)
    scheduler = SCHEDULES[s.schedule.name].build(optimizer, s.training.steps, **s.schedule.params)
    on_metric = bool(SCHEDULES[s.schedule.name].tags.get("on_metric"))
    stride = max(1, s.training.steps // points)
    steps, lrs = [], []
    with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended here
        warnings.simplefilter("ignore", UserWarning)
        for step in range(1, s.training.steps + 1):
            if step % stride == 0 or step == 1 or step == s.training.steps:
                steps.append(step)
                lrs.append(optimizer.param_groups[0]["lr"])
            if not on_metric and step < s.training.steps:
                scheduler.step()
    return steps, lrs
