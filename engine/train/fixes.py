"""The one-click fixes the health verdict offers, and the rules that cut a verdict's list to
what helps.

A fix is {"label", "changes"}: dotted keys the page applies to the spec (ExperimentSpec
.with_changes) before it trains afresh. Each builder takes the spec and returns a fix, or None
where it does not apply to this net (no BatchNorm fix for a CNN, no L2 on a pretrained net).
`usable_fixes` drops a fix that changes nothing or contradicts an earlier one; `without_undo`
drops one that puts back what the previous fix changed. Which fix each situation gets, and why
(each measured to help on several seeds), is in engine/train/health.py beside its check.
"""
from __future__ import annotations

from ..core.errors import SpecError
from ..core.registry import (
    ACTIVATIONS,
    DATASETS,
    INITIALIZERS,
    NORMALIZERS,
    OPTIMIZERS,
)

# The choices the advice prescribes by name (its texts name them as well); tests/test_health.py
# checks that each is a registered entry.
RELU, HE, XAVIER, LEAKY_RELU = "relu", "he_normal", "xavier_uniform", "leaky_relu"
ADAM = {"name": "adam", "lr": 0.003}  # for a plateau under a non-adaptive optimizer
LINEAR_LAYER, RESIDUAL, BATCHNORM, BARE_ACTIVATION = "linear", "residual", "batchnorm", "activation"
IDENTITY = "linear"  # the activation that adds no bend


# ----------------------------------------------------------------------------- fixes


def fix(label: str, changes: dict) -> dict:
    return {"label": label, "changes": changes}


def without_layer_overrides(spec, key: str) -> dict:
    """Changes that clear a per-layer override, so a model-wide fix reaches every layer."""
    return {f"model.layers.{i}.{key}": None for i, layer in enumerate(spec.model.layers)
            if getattr(layer, key) is not None}


def init_family(name: str) -> str:
    """He for he_normal and he_uniform, Xavier for both Xavier forms (the registry's tag)."""
    return INITIALIZERS[name].tags.get("family", name)


def use_init(spec, name: str) -> dict:
    return fix(f"Use {init_family(name)} init",
               {"model.init": name, **without_layer_overrides(spec, "init")})


def current_lr(spec) -> float:
    return spec.optimizer.resolved(OPTIMIZERS)["lr"]


def _lr_fix(spec, factor: float) -> dict:
    lr = current_lr(spec)
    bounds = OPTIMIZERS[spec.optimizer.name].param("lr")
    new = min(max(lr * factor, bounds.low or 0.0), bounds.high)
    word = "Lower" if factor < 1 else "Raise"
    times = f"{max(factor, 1 / factor):g}x"
    return fix(f"{word} LR {times} ({lr:g} → {new:.3g})", {"optimizer.lr": float(f"{new:.3g}")})


def lower_lr(spec, factor: float = 0.1) -> dict:
    return _lr_fix(spec, factor)


def raise_lr(spec) -> dict:
    return _lr_fix(spec, 10.0)


def clip_gradients(spec) -> dict | None:
    """Clip the gradient's norm at 1, unless the run already clips as tightly (or by value)."""
    clip = spec.training.grad_clip
    if clip is not None and (clip.mode != "norm" or clip.max <= 1.0):
        return None
    return fix("Clip gradients at norm 1", {"training.grad_clip": 1.0})


def with_batchnorm(spec) -> dict | None:
    """BatchNorm between each linear layer and its activation (where it keeps the activation's
    input centred and scaled); after a residual block, whose inside it cannot reach. None for a
    net with convolutional or recurrent layers: the dense BatchNorm cannot reach them, and one
    after the dense head alone did not help (measured: a CNN with biases at -3 went from 0.65
    to 2.26, a constant guess's loss)."""
    if any(layer.entry.tags.get("image_only") or layer.entry.tags.get("sequence_only")
           for layer in spec.model.layers):
        return None
    layers = []
    for layer in spec.model.layers:
        d = layer.to_dict()
        bends = not ACTIVATIONS[(layer.activation or spec.model.activation).name].tags.get("linear")
        if layer.type == LINEAR_LAYER and bends:
            act = d.pop("activation", None)
            layers += [{**d, "activation": IDENTITY}, {"type": BATCHNORM},
                       {"type": BARE_ACTIVATION, **({"activation": act} if act else {})}]
            continue
        layers.append(d)
        if layer.type == RESIDUAL:
            layers.append({"type": BATCHNORM})
    return fix("Add BatchNorm layers", {"model.layers": layers})


def standardise_inputs(spec) -> dict:
    return fix("Standardise the inputs", {"data.normalize": NORMALIZERS.default()})


def add_hidden_layer(spec) -> dict:
    changes = {"model.layers": [64] + [layer.to_dict() for layer in spec.model.layers]}
    act = spec.model.activation.name
    if ACTIVATIONS[act].tags.get("linear"):  # a linear hidden layer would add no bend
        changes.update({"model.activation": RELU, "model.init": HE})
        act = RELU
    return fix(f"Add a hidden layer of 64 {act} units", changes)


def bias_init_zero() -> dict:
    """For ReLU units switched off by biases that start negative."""
    return fix("Bias init 0", {"model.bias_init": 0.0})


def early_stopping(spec) -> dict:
    return fix("Early stopping", {"training.early_stopping": {"patience": 10}})


def stronger_l2(spec) -> dict | None:
    """An L2 penalty of 0.01 (0.001 on a recurrent net), or ten times the current one. None for
    a pretrained run: the penalty pulls every weight toward zero, away from what pretraining
    learned (measured: 0.001 took a fine-tuned CNN's validation loss from 1.9 to 2.3)."""
    if spec.pretrain is not None:
        return None
    # measured: 0.01 took the character model's (an LSTM's) validation loss 2.36 -> 2.76, 0.001
    # to 2.05; dense and convolutional nets that overfit gained most from 0.01
    recurrent = any(layer.entry.tags.get("recurrent") or layer.type == "embedding"
                    for layer in spec.model.layers)
    l2 = spec.regularization.l2
    new = (0.001 if recurrent else 0.01) if not l2 else min(l2 * 10, 1.0)
    return fix(f"L2 penalty {new:g}", {"regularization.l2": new})


def more_data(spec) -> dict | None:
    entry = DATASETS[spec.data.name]
    n_param = entry.param("n")
    if n_param is None or spec.data.n is None:
        return None
    new = min(spec.data.n * 4, n_param.high)
    return fix(f"More data (n {new})", {"data.n": new})


def usable_fixes(spec, fixes) -> list[dict]:
    """Drop fixes that change nothing, cannot apply, or set a setting an earlier fix sets
    differently (the first, from the most urgent finding, wins)."""
    if not fixes:
        return []
    base = spec.to_dict()
    kept, claimed = [], {}
    for f in fixes:
        if f is None or f["label"] in (k["label"] for k in kept):
            continue
        try:
            changed = spec.with_changes(f["changes"]).to_dict()
        except (SpecError, ValueError, TypeError):
            continue
        if changed == base:
            continue
        if any(k in claimed and claimed[k] != v for k, v in f["changes"].items()):
            continue
        claimed.update(f["changes"])
        kept.append(f)
    return kept


def without_undo(fixes: list[dict], before, after) -> list[dict]:
    """The fixes that do not put back a setting the previous fix (before -> after) changed."""
    if before is None:
        return fixes
    old, new = _flat(before.to_dict()), _flat(after.to_dict())
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    kept = []
    for f in fixes:
        try:
            result = _flat(after.with_changes(f["changes"]).to_dict())
        except (SpecError, ValueError, TypeError):
            continue
        if not any(k in changed and result.get(k) == old.get(k) for k in result.keys() | old.keys()):
            kept.append(f)
    return kept


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = repr(v)
    return out
