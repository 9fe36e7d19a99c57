"""Several runs of one shape trained as one batched model: the sweep's fast path.

Sixty-four variants of a small net cost little more than one when each step is one vmapped
forward and backward (torch.func) and one update on stacked tensors, instead of 64 rounds of
tiny kernels and Python. Each variant is still an ordinary Trainer: it draws its own batches
from its own generator, its weights are views into the stacked tensors (so its model is always
current), and on every logged step it runs its own forward and backward with its callbacks, so
its metrics rows carry the same layer statistics and health verdict as a run trained alone.

    group = BatchedRuns([Trainer(spec_a), Trainer(spec_b), ...])   # why_not() says if it can
    group.run()                                                    # each trainer ends as if run()

Numbers agree with each run trained alone within float rounding (a batched matrix product adds
in another order), not bit for bit; tests/test_sweep.py holds them to it.

What batches: models without randomness or running statistics inside (no dropout, BatchNorm,
recurrent layers), optimizers with a batched update below (SGD with any momentum, Nesterov and
weight decay; Adam; AdamW), any schedule that does not watch the validation loss, L1/L2. The
rest (clipping, early stopping, augmentation, phases) trains one run at a time: `why_not` names
the reason. Runs whose hyperparameters differ (rates, momenta, decays, schedules, seeds,
initialisers, penalties) batch together; their model shapes, data shapes, loss, batch size and
steps must match (`shape_key`).
"""
from __future__ import annotations

import functools
import json
import time
import warnings

import torch
from torch.func import functional_call, grad_and_value, vmap

from ..core.portable import Dropout, Recurrent, Seq2Seq, predict_classes, task_loss
from ..core.registry import LOSSES, OPTIMIZERS, SCHEDULES
from ..train.trainer import NOT_APPLIED, loss_wrapping

# ----------------------------------------------------------------------------- updates
# One batched update per optimizer, on lists of stacked tensors [variants, ...]: the same
# arithmetic as the torch optimizer's single-tensor step, each variant's settings a column.
# `h` holds the settings as per-parameter columns (see _columns), `lr` this step's rates the
# same way. Fused list operations (torch._foreach_*) keep it to a few dozen kernels a step.


def _col(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per variant, shaped to broadcast over `like` and in its dtype: settings are
    held in float64 and cast last, as torch casts a Python float when it applies it."""
    x = x.view(-1, *[1] * (like.dim() - 1))
    return x if x.dtype == torch.bool else x.to(like.dtype)


def _sgd(params, grads, state, h, lr):
    d = torch._foreach_add(grads, torch._foreach_mul(params, h["weight_decay"]))
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = bufs = [g.clone() for g in d]
    else:
        bufs = state["momentum_buffer"] = torch._foreach_add(
            torch._foreach_mul(state["momentum_buffer"], h["momentum"]),
            torch._foreach_mul(d, h["undamped"]))
    if h["any_nesterov"]:
        ahead = torch._foreach_add(d, torch._foreach_mul(bufs, h["momentum"]))
        d = [torch.where(n, a, b) for n, a, b in zip(h["nesterov"], ahead, bufs)]
    else:
        d = bufs
    return torch._foreach_sub(params, torch._foreach_mul(d, _columns(lr, params)))


def _adam(decoupled: bool):
    def update(params, grads, state, h, lr):
        state["step"] = step = state.get("step", 0) + 1
        if decoupled:
            params = torch._foreach_mul(params, _columns(1 - lr * h["decay"], params))
        else:
            grads = torch._foreach_add(grads, torch._foreach_mul(params, h["weight_decay"]))
        avgs = state.get("exp_avg") or [torch.zeros_like(p) for p in params]
        sqs = state.get("exp_avg_sq") or [torch.zeros_like(p) for p in params]
        avgs = torch._foreach_add(avgs, torch._foreach_mul(torch._foreach_sub(grads, avgs), h["1-beta1"]))
        sqs = torch._foreach_add(torch._foreach_mul(sqs, h["beta2"]),
                             torch._foreach_mul(torch._foreach_mul(grads, grads), h["1-beta2"]))
        state["exp_avg"], state["exp_avg_sq"] = avgs, sqs
        root2 = _columns((1 - h["b2"] ** step).sqrt(), params)
        denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(sqs), root2), h["eps"])
        size = _columns(lr / (1 - h["b1"] ** step), params)  # in float64, cast last
        return torch._foreach_sub(params, torch._foreach_mul(torch._foreach_div(avgs, denom), size))
    return update


def _columns(values: torch.Tensor, params) -> list[torch.Tensor]:
    return [_col(values, p) for p in params]


def _settings(trainers, params) -> dict:
    """Each variant's resolved optimizer settings, read from its own torch optimizer: the
    per-variant vectors (float64) and, for each stacked parameter, their columns."""
    groups = [t.optimizer.param_groups[0] for t in trainers]
    device = trainers[0].device

    def vector(values, dtype=torch.float64):
        return torch.tensor(values, device=device, dtype=dtype)

    get = lambda key, default=0.0: [float(g.get(key, default)) for g in groups]  # noqa: E731
    betas = [g.get("betas", (0.9, 0.999)) for g in groups]
    b1, b2 = vector([b[0] for b in betas]), vector([b[1] for b in betas])
    nesterov = vector([bool(g.get("nesterov")) for g in groups], torch.bool)
    decay = vector(get("weight_decay"))
    h = {"b1": b1, "b2": b2, "decay": decay,
         "any_nesterov": bool(nesterov.any()), "nesterov": _columns(nesterov, params)}
    for name, values in (("weight_decay", decay),
                         ("momentum", vector(get("momentum"))),
                         ("undamped", 1 - vector(get("dampening"))),
                         ("eps", vector(get("eps", 1e-8))), ("1-beta1", 1 - b1),
                         ("beta2", b2), ("1-beta2", 1 - b2)):
        h[name] = _columns(values, params)
    return h


UPDATES = {"sgd": _sgd, "adam": _adam(False), "adamw": _adam(True)}


def _write_back(trainer, v: int, names, state: dict, kind: str) -> None:
    """Variant v's optimizer state into its own torch optimizer (a checkpoint reads it there)."""
    params = dict(trainer.model.named_parameters())
    for i, name in enumerate(names):
        p = params[name]
        if kind == "sgd" and "momentum_buffer" in state and \
                trainer.optimizer.param_groups[0]["momentum"]:  # torch keeps none without it
            trainer.optimizer.state[p] = {"momentum_buffer": state["momentum_buffer"][i][v].clone()}
        elif kind in ("adam", "adamw") and "step" in state:
            trainer.optimizer.state[p] = {"step": torch.tensor(float(state["step"])),
                                          "exp_avg": state["exp_avg"][i][v].clone(),
                                          "exp_avg_sq": state["exp_avg_sq"][i][v].clone()}


# ----------------------------------------------------------------------------- what batches


def why_not(trainer) -> str | None:
    """Why this run cannot join a batched group (None: it can)."""
    s = trainer.spec
    if s.optimizer.name not in UPDATES:
        return f"the {s.optimizer.name} optimizer has no batched update"
    group = trainer.optimizer.param_groups[0]
    for flag in ("amsgrad", "maximize"):
        if group.get(flag):
            return f"{flag} has no batched update"
    if SCHEDULES[s.schedule.name].tags.get("on_metric"):
        return "its schedule watches the validation loss"
    if lr_table(trainer) is None:
        return "its schedule changes more than the rate"
    for what, on in (("gradient clipping", s.training.grad_clip), ("early stopping",
                     s.training.early_stopping), ("augmentation", trainer._augment),
                     ("pretraining", s.pretrain), ("distillation", s.distill)):
        if on:
            return f"it uses {what}"
    for m in trainer.model.modules():
        if isinstance(m, (Dropout, Recurrent, Seq2Seq, torch.nn.modules.batchnorm._BatchNorm)):
            return f"its model has a {type(m).__name__} layer"
    if any(True for _ in trainer.model.buffers()) or any(not p.requires_grad
                                                        for p in trainer.model.parameters()):
        return "its model has buffers or frozen weights"
    extra = [cb.name for cb in trainer.callbacks if cb.name not in BATCHED_CALLBACKS]
    if extra:
        return f"it has the callback {extra[0]!r}"
    if trainer.step_count or trainer._started:
        return "it has already trained"
    return None


# callbacks that run on logged steps only and so keep their meaning in a batched group
BATCHED_CALLBACKS = {"diagnostics", "health", "regularization", "store"}


def shape_key(trainer) -> str:
    """Runs with equal keys can train as one batched model."""
    s, d = trainer.spec, trainer.data
    return json.dumps({
        "model": str(trainer.model), "params": [(n, list(p.shape)) for n, p in
                                                trainer.model.named_parameters()],
        "data": [list(d.x_train.shape), list(d.x_val.shape), d.task, str(d.x_train.dtype)],
        "loss": s.to_dict()["loss"],
        "optimizer": s.optimizer.name, "device": str(trainer.device),
        "training": [s.training.steps, s.training.batch_size, s.training.log_every,
                     s.training.eval_every, trainer.total_steps]})


def lr_table(trainer) -> tuple[float, ...] | None:
    """The rate at every step of the run, from the run's own schedule on a stand-in parameter
    (stepped as the Trainer steps it: after each update but the last). None when the schedule
    moves another setting too (one-cycle's momentum), which the batched update holds fixed."""
    s = trainer.spec
    return _table(json.dumps(s.to_dict()["optimizer"]), json.dumps(s.to_dict()["schedule"]),
                  s.training.steps, trainer.total_steps)


@functools.lru_cache(maxsize=256)  # a sweep's variants mostly share a few schedules
def _table(optimizer: str, schedule: str, steps: int, total: int):
    from ..core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict({"optimizer": json.loads(optimizer),
                                     "schedule": json.loads(schedule)})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = OPTIMIZERS[spec.optimizer.name].build([param], **spec.optimizer.params)
    entry = SCHEDULES[spec.schedule.name]
    scheduler = None if entry.tags.get("steady") else entry.build(opt, steps,
                                                                  **spec.schedule.params)
    fixed = {k: v for k, v in opt.param_groups[0].items() if k not in ("lr", "params")}
    rates = []
    with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended
        warnings.simplefilter("ignore", UserWarning)
        for step in range(1, total + 1):
            rates.append(opt.param_groups[0]["lr"])
            if scheduler is not None and step < steps:
                scheduler.step()
                if any(opt.param_groups[0].get(k) != v for k, v in fixed.items()):
                    return None
    return tuple(rates)


# ----------------------------------------------------------------------------- the group


class _Draws:
    """Every run's next batch by Batches.next's own rule (a fresh permutation from the run's
    generator when fewer than two examples are left), drawn for all at once: the runs share n
    and the batch size, so their epochs turn together. Each run's Batches gets its order at
    once and its position when it leaves the group (sync)."""

    def __init__(self, batches: list):
        self.batches = batches
        self.pos, self.order = batches[0]._pos, None

    def next(self, live: list[bool]) -> torch.Tensor:
        b0 = self.batches[0]
        if b0.n - self.pos < min(2, b0.n):
            for b, alive in zip(self.batches, live):
                if alive:
                    b._order = torch.randperm(b.n, generator=b.gen).to(b.device)
            self.order, self.pos = torch.stack([b._order for b in self.batches]), 0
        idx = self.order[:, self.pos:self.pos + b0.size]
        self.pos += b0.size
        return idx

    def sync(self, v: int) -> None:
        self.batches[v]._pos = self.pos


def _acts_alone(module: torch.nn.Module) -> bool:
    """Whether a parameter-free module treats each variant's slice on its own (an elementwise
    activation does; a softmax over the batch axis or a flatten would not)."""
    if any(True for _ in module.parameters()) or any(True for _ in module.children()):
        return False
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    try:
        whole = module(x)
        return all(torch.equal(whole[v], module(x[v])) for v in range(3))
    except Exception:  # noqa: BLE001 - a module that cannot take the probe is not one
        return False


def dense_layers(model) -> list | None:
    """The model's modules in order when it is Linear layers and elementwise modules in plain
    Sequential containers (else None): stacked runs of it go through batched matrix products,
    without vmap's per-call overhead."""
    if isinstance(model, torch.nn.Linear):
        return [model]
    if type(model).forward is torch.nn.Sequential.forward:
        found = [dense_layers(m) for m in model.children()]
        return None if not found or None in found else [m for part in found for m in part]
    return [model] if _acts_alone(model) else None


def _per_example_loss(trainer):
    """The run's loss with reduction "none", or None when the loss has no such switch."""
    s = trainer.spec
    entry = LOSSES[s.loss.name]
    criterion = entry.build(**s.loss.params)
    if getattr(criterion, "reduction", None) != "mean":
        return None
    criterion.reduction = "none"
    return task_loss(criterion, **loss_wrapping(entry, trainer.data.task == "classification",
                                                s.data.per_step))


class BatchedRuns:
    """Trainers of one shape_key, none started, each passing why_not, trained in step."""

    def __init__(self, trainers: list):
        if not trainers:
            raise ValueError("no runs to batch")
        keys = {shape_key(t) for t in trainers}
        reasons = [why_not(t) for t in trainers]
        if len(keys) > 1 or any(reasons):
            raise ValueError(next((r for r in reasons if r), "the runs differ in shape"))
        self.trainers = trainers
        first = trainers[0]
        self.device, self.kind = first.device, first.spec.optimizer.name
        self.names = [n for n, _ in first.model.named_parameters()]
        # the stacked weights; each trainer's parameters become views into them, so a
        # trainer's own model (its diagnostics, predictions, checkpoint) always sees its weights
        self.params = []
        for name in self.names:
            stacked = torch.stack([dict(t.model.named_parameters())[name].detach()
                                   for t in trainers])
            self.params.append(stacked)
            for v, t in enumerate(trainers):
                dict(t.model.named_parameters())[name].data = stacked[v]
        self.weight = [p.dim() >= 3 for p in self.params]  # what L1/L2 penalise (see portable)
        self.state: dict = {}
        self.settings = _settings(trainers, self.params)
        self.rates = [lr_table(t) for t in trainers]  # Python floats, for the rows
        self.lrs = torch.tensor(self.rates, device=self.device, dtype=torch.float64)
        reg = [t.spec.regularization for t in trainers]
        f64 = {"device": self.device, "dtype": torch.float64}
        self.l1 = _columns(torch.tensor([float(r.l1) for r in reg], **f64), self.params)
        self.l2 = _columns(torch.tensor([2 * float(r.l2) for r in reg], **f64), self.params)
        self.penalised = any(r.l1 or r.l2 for r in reg)
        self.draws = _Draws([t.batches for t in trainers])
        self.shared_x = all(t.data.x_train is first.data.x_train for t in trainers)
        self.binary, self.task = first.binary, first.data.task
        self._loss = _per_example_loss(first)
        self.dense = dense_layers(first.model) if self._loss is not None else None
        if self.dense is None:
            base, loss_fn = first.model, first.loss_fn

            def loss_of(params, x, y):
                out = functional_call(base, dict(zip(self.names, params)), (x,))
                return loss_fn(out, y), out
            self._vmapped = vmap(grad_and_value(loss_of, has_aux=True))
        n = len(trainers)
        self.loss_sum = torch.zeros(n, device=self.device)
        self.correct = torch.zeros(n, device=self.device)
        self.seen = self.since = 0
        self.step_losses = [[] for _ in trainers]  # as Trainer._step_losses, per run

    # -- the forward and backward of every run at once
    def _gradients(self, xb, yb):
        """(gradients per stacked parameter, each run's loss [V], outputs [V, batch, ...])."""
        if self.dense is None:
            grads, (loss, out) = self._vmapped(self.params, xb, yb)
            return list(grads), loss.detach(), out.detach()
        params = [p.detach().requires_grad_() for p in self.params]
        x, k = xb, 0
        for module in self.dense:
            if isinstance(module, torch.nn.Linear):
                w = params[k]
                bias = params[k + 1] if module.bias is not None else None
                k += 2 if bias is not None else 1
                x = torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2)) if bias is not None \
                    else torch.bmm(x, w.transpose(1, 2))
            else:
                x = module(x)
        v = len(self.trainers)
        per_example = self._loss(x.flatten(0, 1), yb.flatten(0, 1))
        loss = per_example.reshape(v, -1).mean(1)
        grads = torch.autograd.grad(loss.sum(), params)
        return list(grads), loss.detach(), x.detach()

    def _batch(self, live: list[bool]):
        idx = self.draws.next(live)
        if self.shared_x:
            data = self.trainers[0].data
            return data.x_train[idx], data.y_train[idx]
        return torch.stack([t.data.x_train[i] for t, i in zip(self.trainers, idx)]), \
            torch.stack([t.data.y_train[i] for t, i in zip(self.trainers, idx)])

    # -- one step for the whole group
    # One piece on purpose: it follows Trainer.step line for line (forward, loss, backward,
    # clip, update, schedule, log), so the two can be read side by side; tests/test_sweep.py
    # checks they give the same numbers.
    def step(self) -> bool:
        """One step of every run still going. False once all have stopped."""
        live = [not t.done for t in self.trainers]
        if not any(live):
            return False
        t0 = time.perf_counter()
        first = self.trainers[live.index(True)]
        step = first.step_count + 1
        log_step = first.is_log_step(step)
        xb, yb = self._batch(live)
        grads, loss, out = self._gradients(xb, yb)
        if self.penalised:  # the penalty's gradient, as Regularization adds it
            w = [p for p, is_weight in zip(self.params, self.weight) if is_weight]
            idx = [i for i, is_weight in enumerate(self.weight) if is_weight]
            l1 = [self.l1[i] for i in idx]
            l2 = [self.l2[i] for i in idx]
            added = torch._foreach_add(torch._foreach_add([grads[i] for i in idx], torch._foreach_mul(w, l2)),
                                   torch._foreach_mul(torch._foreach_sign(w), l1))
            for i, g in zip(idx, added):
                grads[i] = g
        if log_step:  # each run's own forward and backward, for its diagnostics
            for v, t in enumerate(self.trainers):
                if live[v]:
                    self._observe(t, xb[v], yb[v])
        finite = torch.isfinite(loss)
        if log_step:  # gradients too, where a row is written (as Trainer._finite)
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).sum(0)
            finite = finite & torch.isfinite(norms)
        finite, values = finite.tolist(), loss.tolist()
        for v, t in enumerate(self.trainers):
            if live[v] and not finite[v]:
                self._diverged(t, v, step, values[v])
                live[v] = False
            elif live[v] and not log_step:  # as Trainer keeps them: a divergence logs them
                self.step_losses[v].append((step, values[v], self.rates[v][step - 1]))
            elif log_step:
                self.step_losses[v].clear()
        new = UPDATES[self.kind](self.params, grads, self.state, self.settings,
                                 self.lrs[:, step - 1])
        with torch.no_grad():
            if all(live):
                torch._foreach_copy_(self.params, new)
            else:
                keep = torch.tensor(live, device=self.device)
                for p, q in zip(self.params, new):
                    p.copy_(torch.where(_col(keep, p), q, p))
        self.loss_sum += loss
        self.since += 1
        if self.task == "classification":
            self.correct += (predict_classes(out, self.binary) == yb).flatten(1).sum(1)
            self.seen += yb[0].numel()
        rows = self._rows(step) if log_step else None
        seconds = (time.perf_counter() - t0) / max(1, sum(live))
        for v, t in enumerate(self.trainers):
            if not live[v]:
                continue
            t.step_count = step
            t.seconds += seconds
            if rows is not None:
                t.row = rows[v]
                t._call("on_step_end")
                t._log(t.row)
            if step >= t.total_steps:
                t.stop("completed")
                self._end(t, v)
        return any(not t.done for t in self.trainers)

    def _observe(self, t, xb, yb) -> None:
        """Trainer._step's logged-step work but the update: hooks, forward, backward, the
        callbacks that read gradients. Its gradients go to the diagnostics only."""
        t.row = None
        t._call("on_step_start")
        t._call("on_batch", xb, yb)
        out = t.model(xb)
        loss = t.loss_fn(out, yb)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t._call("on_after_backward")

    def _diverged(self, t, v: int, step: int, value: float) -> None:
        """As Trainer._finite: stop without applying the update, with a row saying so (and
        the steps since the last row before it)."""
        if not t.is_log_step(step):  # diagnostics off, as for a step that logs nothing
            t._call("on_step_start")
        t._diverge(step, value, self.rates[v][step - 1], NOT_APPLIED, self.step_losses[v])
        self._end(t, v)

    def _rows(self, step: int) -> list[dict]:
        """Every run's metrics row for this logged step, as Trainer._metrics_row writes it."""
        n = max(self.since, 1)
        stats = torch.stack([self.loss_sum / n, self.correct / max(self.seen, 1)], 1).tolist()
        classification = self.task == "classification"
        rows = []
        for v, t in enumerate(self.trainers):
            # the rate from the table, not written into the optimizer: its schedule is replayed
            # from the start when the run leaves the group (_end)
            row = {"step": step, "epoch": step * t.batches.size / t.batches.n,
                   "lr": self.rates[v][step - 1],
                   "train_loss": stats[v][0], "val_loss": None,
                   "train_acc": stats[v][1] if classification else None, "val_acc": None,
                   "grad_norm": None, "layers": None}
            if not t.done and t._is_eval_step(step) and len(t.data.y_val):  # (ended: unused)
                val = t.evaluate("val")
                row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            rows.append(row)
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = self.since = 0
        return rows

    def _end(self, t, v: int) -> None:
        """The run has stopped: it leaves the group as a Trainer of its own (weights copied out
        of the stack; its batches, optimizer and schedule holding their state), then finishes
        as Trainer.step finishes a run."""
        for p in t.model.parameters():
            p.data = p.data.clone()
        self.draws.sync(v)
        _write_back(t, v, self.names, self.state, self.kind)
        if t.scheduler is not None and t._scheduled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(min(t.step_count, t.spec.training.steps - 1)):
                    t.scheduler.step()
        t._finish()
        for cb in t._done_hooks:
            cb.on_step_done(t)

    def run(self) -> list:
        for t in self.trainers:
            if not t._started:
                t._started = True
                t._call("on_fit_start")
        while self.step():
            pass
        return self.trainers
