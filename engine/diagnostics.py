"""Per-layer activation and gradient statistics, and a health verdict with advice.

On a logged step the Diagnostics callback hooks every shown layer for that one step:
a forward hook keeps the layer's output h, and a tensor hook on h catches dL/dh during backward.
All hooks are removed at the end of the step (and at fit end, should a step have failed).

Why dL/dh and not only the weight gradients: in a deep sigmoid net the weight-gradient norms stay
within a small factor across layers, while dL/dh shrinks by orders of magnitude from the output
toward the input. The latter is the vanishing gradient.

Statistics of a layer (DESIGN.md §2.2):
  act_grad_norm   mean over examples of || dL_i / dh_i ||, L_i the i-th example's own loss
                  (= batch_size * per-row norm of dL/dh, since the batch loss is a mean)
  weight_norm, weight_grad_norm   Frobenius norms over the layer's weight matrices
  update_ratio    ||W_after - W_before|| / ||W_before|| for this step
  act_mean, act_std
  dead_frac       ReLU layers: share of units that are exactly zero for every example in the batch
  saturated_frac  sigmoid/tanh-like layers: share of outputs within 0.02 of a bound
"""
from __future__ import annotations

import math

import torch

from .callbacks import Callback, weight_params
from .registry import OPTIMIZERS

# ----------------------------------------------------------------------------- thresholds
# Documented in docs/ARCHITECTURE.md and pinned by tests/test_diagnostics.py.
VANISHING_RATIO = 1e-3   # dL/dh at the first hidden layer / at the last hidden layer below this
EXPLODING_RATIO = 1e3    # ... above this
EXPLODING_UPDATE = 1.0   # one step changed a layer's weights by more than their own norm
DEAD_FRAC = 0.6          # most of a layer's ReLU units silent on the whole batch (deep nets at
                         # init reach ~0.5 from correlated inputs alone, so 0.5 would cry wolf)
DEAD_BLOCKING = 0.9      # a layer this dead blocks the gradient: report dead, not vanishing
SATURATED_FRAC = 0.3     # 30% of a layer's squashed outputs pinned near a bound
SATURATION_MARGIN = 0.02
PLATEAU_STEPS = 200      # look back at least this many steps ...
PLATEAU_GAIN = 0.01      # ... and call it a plateau if the train loss moved by under 1%
PLATEAU_HIGH = 0.5       # while still above half the run's first loss (low and flat = done)
CONVERGED_ACC = 0.99     # a flat loss at this train accuracy is a finished run, not a plateau
CONVERGED_LOSS = 1e-3
SAMPLE_SIZE = 2048       # activation values kept per layer for histograms

PRIORITY = ("diverged", "exploding", "vanishing", "dead", "saturated", "plateau")


class Diagnostics(Callback):
    def __init__(self):
        self._handles: list = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._before: dict[str, list[torch.Tensor]] = {}
        self._grad_norms: dict[str, torch.Tensor] = {}
        self._global_grad_norm = None
        self.samples: dict[str, torch.Tensor] = {}  # latest activations per layer (CPU), for plots
        self._layer_cache = None
        self.active = False

    # -- hooks live for one logged step only
    def on_step_start(self, trainer):
        self._remove_hooks()
        self.active = trainer.is_log_step(trainer.step_count + 1)
        if not self.active:
            return
        self._outputs.clear()
        self._grads.clear()
        for name, module in trainer.model.named_children():
            if trainer.model.layer_info[name]["shown"]:
                self._handles.append(module.register_forward_hook(self._capture(name)))

    def _capture(self, name):
        def forward_hook(module, inputs, output):
            self._outputs[name] = output.detach()
            if output.requires_grad:
                self._handles.append(output.register_hook(self._catch_grad(name)))
        return forward_hook

    def _catch_grad(self, name):
        def grad_hook(grad):
            self._grads[name] = grad.detach()
        return grad_hook

    def _remove_hooks(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def on_after_backward(self, trainer):
        if not self.active:
            return
        # The training forward and backward are captured now. Drop the hooks before the
        # validation pass of this logged step runs the model again and overwrites them.
        self._remove_hooks()
        grads = [p.grad.detach() for p in trainer.model.parameters() if p.grad is not None]
        self._global_grad_norm = _norm(grads) if grads else None
        self._before.clear()
        self._grad_norms.clear()
        for name, module, ws in self._layers(trainer):
            if ws:
                self._before[name] = [w.detach().clone() for w in ws]
                gs = [w.grad for w in ws if w.grad is not None]
                if gs:
                    self._grad_norms[name] = _norm(gs)

    def on_step_end(self, trainer):
        if not self.active:
            return
        self._remove_hooks()
        row = trainer.row
        if row is None:
            return
        names, stats = [], []
        for name, module, ws in self._layers(trainer):
            if name not in self._outputs:
                continue
            names.append(name)
            stats.append(self._layer_stats(name, ws, trainer.model.layer_info[name]))
        values = torch.stack([s for layer in stats for s in layer.values()]).tolist() if stats else []
        layers, i = [], 0
        for name, layer in zip(names, stats):
            entry = {"name": name}
            for key in layer:
                entry[key] = values[i]
                i += 1
            for key in ("weight_norm", "weight_grad_norm", "update_ratio", "dead_frac",
                        "saturated_frac", "act_grad_norm"):
                entry.setdefault(key, None)
            layers.append(entry)
        row["layers"] = layers
        row["grad_norm"] = float(self._global_grad_norm) if self._global_grad_norm is not None else None
        for name in names:
            h = self._outputs[name]
            self.samples[name] = h.flatten()[:SAMPLE_SIZE].float().cpu()
        self._outputs.clear()
        self._grads.clear()
        self._before.clear()

    def on_fit_end(self, trainer):
        self._remove_hooks()

    def _layers(self, trainer) -> list[tuple[str, torch.nn.Module, list[torch.Tensor]]]:
        """(name, module, weight matrices) of every shown layer, worked out once per model."""
        if self._layer_cache is None or self._layer_cache[0] is not trainer.model:
            layers = [(n, m, weight_params(m)) for n, m in trainer.model.named_children()
                      if trainer.model.layer_info[n]["shown"]]
            self._layer_cache = (trainer.model, layers)
        return self._layer_cache[1]

    def _layer_stats(self, name, weights, info) -> dict[str, torch.Tensor]:
        """Scalar tensors only: all layers are moved to the host in one transfer.
        (Measured on CPU: torch.std is 5-25x slower than the two-pass norm below, and
        `amax(|h|) == 0` finds dead units 3x faster than `(h == 0).all()`.)"""
        h = self._outputs[name].float()
        mean = h.mean()
        std = torch.linalg.vector_norm(h - mean) / math.sqrt(h.numel() - 1) \
            if h.numel() > 1 else h.new_zeros(())
        out = {"act_mean": mean, "act_std": std}
        if info.get("dies"):
            out["dead_frac"] = (h.flatten(1).abs().amax(0) == 0).float().mean()
        if info.get("bounds"):
            lo, hi = info["bounds"]
            out["saturated_frac"] = ((h <= lo + SATURATION_MARGIN) |
                                     (h >= hi - SATURATION_MARGIN)).float().mean()
        g = self._grads.get(name)
        if g is not None:
            out["act_grad_norm"] = g.flatten(1).float().norm(dim=1).mean() * g.shape[0]
        before = self._before.get(name)
        if before:
            after = [w.detach() for w in weights]
            w_norm = _norm(before)
            out["weight_norm"] = _norm(after)
            out["update_ratio"] = _norm([a - b for a, b in zip(after, before)]) / w_norm.clamp_min(1e-12)
            if name in self._grad_norms:
                out["weight_grad_norm"] = self._grad_norms[name]
        return out


class HealthCheck(Callback):
    """Writes the verdict into every logged row (after Diagnostics filled in the layers)."""

    def on_step_end(self, trainer):
        if trainer.row is not None:
            recent = trainer.history.since(-PLATEAU_STEPS - 10)  # enough rows for the plateau window
            first = trainer.history[0]["train_loss"] if len(trainer.history) else None
            trainer.row["health"] = assess(recent, trainer.row, trainer.spec, trainer.divergence,
                                           first)


def _norm(tensors) -> torch.Tensor:
    """The norm of a list of tensors taken as one vector (one fused kernel for the list)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm([t.float() for t in tensors])))


# ----------------------------------------------------------------------------- the verdict


def _fmt(x: float) -> str:
    return f"{x:.2g}" if x is not None else "n/a"


def _fix(label: str, changes: dict) -> dict:
    return {"label": label, "changes": changes}


def _hidden(row) -> list[dict]:
    return [lay for lay in row.get("layers") or () if lay["name"] != "out"]


def _without_layer_overrides(spec, key: str) -> dict:
    """Changes that clear a per-layer override, so a model-wide fix reaches every layer."""
    return {f"model.layers.{i}.{key}": None for i, layer in enumerate(spec.model.layers)
            if getattr(layer, key) is not None}


def _relu_he(spec) -> dict:
    return {"model.activation": "relu", "model.init": "he_normal",
            **_without_layer_overrides(spec, "activation"), **_without_layer_overrides(spec, "init")}


def _with_batchnorm(spec) -> list:
    layers = []
    for layer in spec.model.layers:
        layers.append(layer.to_dict())
        if layer.type in ("linear", "residual"):
            layers.append({"type": "batchnorm"})
    return layers


def _lr(spec) -> float:
    return spec.optimizer.resolved(OPTIMIZERS)["lr"]


def assess(rows: list[dict], row: dict, spec, diverged: dict | None = None,
           first_loss: float | None = None) -> dict:
    """The health of a run at `row` (rows: recent history before it; first_loss: the run's
    first logged train loss, default the first of `rows`). Returns
    {"status", "messages", "fixes"}: status the most urgent finding (PRIORITY), messages one plain
    sentence per finding with the layer and the numbers, fixes one-click spec changes."""
    found: dict[str, list[str]] = {}
    fixes: list[dict] = []
    lr = _lr(spec)

    def add(status, message, *new_fixes):
        found.setdefault(status, []).append(message)
        for f in new_fixes:
            if f["label"] not in (x["label"] for x in fixes):
                fixes.append(f)

    lower_lr = _fix(f"Lower LR 10x ({lr:g} → {lr / 10:g})", {"optimizer.lr": lr / 10})
    clip = _fix("Clip gradients at norm 1", {"training.grad_clip": 1.0})

    if diverged:
        add("diverged", f"The loss became {diverged['loss']} at step {diverged['step']}, so training "
            f"stopped there{diverged.get('kept', '')}. Steps this large overshoot the minimum and "
            "feed on themselves; take smaller steps or cap the gradient.", lower_lr, clip)

    hidden = [lay for lay in _hidden(row) if lay.get("act_grad_norm") is not None]
    blocked = any((lay.get("dead_frac") or 0) >= DEAD_BLOCKING for lay in _hidden(row))
    if len(hidden) >= 2 and not blocked:
        first, last = hidden[0], hidden[-1]
        g0, g1 = first["act_grad_norm"], last["act_grad_norm"]
        ratio = g0 / g1 if g1 > 0 else (math.inf if g0 > 0 else 1.0)
        if ratio < VANISHING_RATIO:
            add("vanishing", f"Vanishing gradients: dL/dh is {_fmt(g1)} at {last['name']} but "
                f"only {_fmt(g0)} at {first['name']} ({_fmt(ratio)}x), so the early layers barely "
                "learn. Each sigmoid/tanh layer multiplies the gradient by its slope (at most "
                "0.25 for sigmoid); ReLU with He init, BatchNorm or residual connections keep "
                "it alive.", _fix("Switch to ReLU + He init", _relu_he(spec)),
                _fix("Add BatchNorm layers",
                     {"model.layers": _with_batchnorm(spec)}))
        elif ratio > EXPLODING_RATIO:
            add("exploding", f"Exploding gradients: dL/dh grows from {_fmt(g1)} at {last['name']} "
                f"to {_fmt(g0)} at {first['name']} ({_fmt(ratio)}x). The weights are too large "
                "for the depth: use a variance-preserving init, clip the gradient or lower "
                "the learning rate.", clip, lower_lr)
    for lay in _hidden(row):
        ur = lay.get("update_ratio")
        if ur is not None and ur > EXPLODING_UPDATE:
            add("exploding", f"Huge updates: one step changed {lay['name']}'s weights by "
                f"{_fmt(ur)}x their own size (healthy is about 0.001). Lower the learning rate "
                "or clip the gradient.", lower_lr, clip)
            break
    dead = _worst(row, "dead_frac", DEAD_FRAC)
    if dead:
        worst, others = dead
        extra = [_fix("Bias init 0", {"model.bias_init": 0.0})] if spec.model.bias_init < 0 else []
        add("dead", f"Dead ReLUs: {worst['dead_frac']:.0%} of {worst['name']}'s units output zero "
            f"for every example{others}, so no gradient reaches their weights and they never "
            "recover. Leaky ReLU keeps a small slope below zero; a lower learning rate or a "
            "non-negative bias init avoids killing them.",
            _fix("Switch to leaky ReLU", {"model.activation": "leaky_relu",
                                          **_without_layer_overrides(spec, "activation")}),
            *extra, lower_lr)
    saturated = _worst(row, "saturated_frac", SATURATED_FRAC)
    if saturated:
        worst, others = saturated
        add("saturated", f"Saturated units: {worst['saturated_frac']:.0%} of {worst['name']}'s "
            f"outputs sit at the flat ends of the squashing function{others}, where its slope is "
            "nearly zero. The inputs to these layers are too large: use Xavier init, normalise "
            "the inputs, or add BatchNorm.", _fix("Use Xavier init", {
                "model.init": "xavier_uniform", **_without_layer_overrides(spec, "init")}),
            _fix("Add BatchNorm layers",
                 {"model.layers": _with_batchnorm(spec)}))
    plateau = _plateau(rows + [row], first_loss)
    if plateau:
        raised = min(lr * 3, 10.0)  # the registry's upper bound for a learning rate
        add("plateau", plateau, _fix(f"Raise LR ({lr:g} → {raised:g})", {"optimizer.lr": raised}),
            _fix("Switch to Adam (lr 0.01)", {"optimizer": {"name": "adam", "lr": 0.01}}))
    status = next((s for s in PRIORITY if s in found), "ok")
    messages = [m for s in PRIORITY for m in found.get(s, [])]
    return {"status": status, "messages": messages, "fixes": fixes}


def _worst(row: dict, key: str, threshold: float):
    """(the hidden layer with the largest `key`, a note naming the other layers over threshold),
    or None when no layer reaches it."""
    over = sorted((lay for lay in _hidden(row) if (lay.get(key) or 0) >= threshold),
                  key=lambda lay: lay[key], reverse=True)
    if not over:
        return None
    others = ", ".join(f"{lay['name']} {lay[key]:.0%}" for lay in over[1:])
    return over[0], f" (also {others})" if others else ""


def _plateau(rows: list[dict], first_loss: float | None) -> str | None:
    """A flat train loss that is still high: the run is stuck, not finished."""
    if not rows or rows[-1]["step"] < PLATEAU_STEPS:
        return None
    last = rows[-1]
    if (last.get("train_acc") or 0) >= CONVERGED_ACC:
        return None
    if last.get("train_loss") is None or last["train_loss"] < CONVERGED_LOSS:
        return None
    window = [r for r in rows if r["step"] >= last["step"] - PLATEAU_STEPS and
              r.get("train_loss") is not None]
    if len(window) < 4 or window[0]["step"] > last["step"] - PLATEAU_STEPS * 0.9:
        return None
    k = max(1, len(window) // 4)  # average a few rows at each end: mini-batch losses are noisy
    start = sum(r["train_loss"] for r in window[:k]) / k
    end = sum(r["train_loss"] for r in window[-k:]) / k
    change = (end - start) / max(abs(start), 1e-12)
    first = first_loss if first_loss is not None else next(
        (r["train_loss"] for r in rows if r.get("train_loss") is not None), end)
    if abs(change) >= PLATEAU_GAIN or end < PLATEAU_HIGH * first:
        return None
    return (f"Plateau: the training loss has stayed near {_fmt(end)} for the last "
            f"{last['step'] - window[0]['step']} steps ({change:+.1%}), still "
            f"{end / max(first, 1e-12):.0%} of where it started. Try a larger learning rate or "
            "an adaptive optimizer such as Adam, and check for dead or saturated units.")
