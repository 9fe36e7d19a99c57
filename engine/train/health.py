"""The health verdict: findings judged on evidence, each naming the cause that applies to this
net, with one-click fixes that help.

Rules every finding keeps (DESIGN.md §2.2, docs/ARCHITECTURE.md "The health check"):
- Evidence persists. A sign seen on one logged row is recorded in that row's
  `health.signs`; it becomes a finding only once the last PERSIST[status] logged rows all show it
  (divergence excepted: a NaN is final). Trends (diverging, too slow, plateau, underfitting,
  overfitting) are judged over a window of rows to begin with.
- Dead and saturated units are counted on the data (up to PROBE_SIZE training examples, in eval
  mode), not on one mini-batch, and are a problem only when they hold learning back: the loss
  is not falling or the gradient reaching the layers below collapses, and the net does not fit
  its data.
- Fixes are cut to what helps (`usable_fixes`): no fix that changes nothing, none that changes a
  setting an earlier fix of the same verdict sets another way, none that puts back what the
  previous fix changed (`without_undo`).

Statuses, most urgent first: PRIORITY below. The thresholds are pinned by tests/test_health.py.
"""
from __future__ import annotations

import math

import torch

from ..core.registry import (
    ACTIVATIONS,
    OPTIMIZERS,
)
from ..nn.recurrent import with_cell
from .callbacks import Callback, Hooks, weight_params
from .curvature import gd_limits, sharpness
from .evidence import (
    ADAPTIVE_SLOW_LR,
    COLLAPSING_RATIO,
    CONVERGED_ACC,
    CONVERGED_LOSS,
    DEAD_BLOCKING,
    DEAD_FRAC,
    DIVERGED_EARLY,
    DIVERGING_FLOOR,
    DIVERGING_RISE,
    DIVERGING_ROWS,
    EXPLODING_RATIO,
    EXPLODING_UPDATE,
    FITS_ACC,
    FLAT_GAIN,
    GUESS,
    GUESS_AFTER,
    INIT_LOSS,
    LARGE_UPDATE,
    LOST_GROUND,
    OVERFIT_EVALS,
    OVERFIT_GAP,
    OVERFIT_RATIO,
    OVERFIT_RISE,
    OVERFIT_SMOOTH,
    PERSIST,
    PREACT_RMS,
    PROBE_SIZE,
    SATURATED_FRAC,
    SATURATION_MARGIN,
    SCHEDULED_LOW,
    SLOW_DROP,
    SLOW_UPDATE,
    SPIKES,
    STABILITY_ITERS,
    STABILITY_MAX_PARAMS,
    STILL_FLAT,
    STILL_HIGH,
    TIME_EXPLODING,
    TIME_ROWS,
    TIME_STUCK,
    TIME_VANISHING,
    UNSCALED_RMS,
    VANISHING_RATIO,
    WINDOW,
    Evidence,
    Net,
    net_facts,
    smoothed,
    time_ratios_of,
    train_loss_of,
)
from .fixes import (
    ADAM,
    HE,
    LEAKY_RELU,
    RELU,
    XAVIER,
    add_hidden_layer,
    bias_init_zero,
    clip_gradients,
    current_lr,
    early_stopping,
    fix,
    init_family,
    lower_lr,
    more_data,
    raise_lr,
    standardise_inputs,
    stronger_l2,
    usable_fixes,
    use_init,
    with_batchnorm,
    without_layer_overrides,
)

# status -> (severity, what it means), most urgent first. "problem": training is broken;
# "warning": it works, but worse than it could.
STATUSES = {
    "diverged": ("problem", "The loss became NaN or infinite; the run stopped."),
    "diverging": ("problem", "The loss climbs at every logged step: the step size is past the "
                             "stable limit."),
    "exploding": ("problem", "The gradient grows toward the input, or one step changes the "
                             "weights by more than their own size."),
    "unstable": ("problem", "The loss keeps jumping back up from where it had fallen: the steps "
                            "overshoot. The learning rate is too large."),
    "symmetric": ("problem", "All units of a layer have identical weights, so they stay copies "
                             "of one another."),
    "unscaled_inputs": ("problem", "Input features on a large scale push the first layer far "
                                   "outside its working range."),
    "vanishing": ("problem", "The gradient shrinks by orders of magnitude toward the input; "
                             "early layers barely learn."),
    "dead": ("problem", "Most ReLU units of a layer are silent for every training example, and "
                        "it holds learning back."),
    "saturated": ("warning", "Many squashing units sit at their flat ends, and it holds learning "
                             "back."),
    "too_slow": ("warning", "Steps change the weights by a tiny fraction and the loss hardly "
                            "moves: the learning rate is too small."),
    "not_learning": ("problem", "Past its first steps, the loss is no better than a constant "
                                "guess's: the net has learned nothing usable."),
    "underfitting": ("warning", "The loss has settled far above zero because the model is too "
                                "small for the data."),
    "plateau": ("warning", "The loss has stayed flat and high over the last steps."),
    "overfitting": ("warning", "Validation loss rises from its best while the training loss "
                               "falls."),
}
PRIORITY = tuple(STATUSES)

def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if 100 <= abs(x) < 1e7 else f"{x:.2g}"


def _learning_stalled(ev: Evidence) -> bool:
    """The loss fell by under 5% over the window (False while the run is younger than it)."""
    trend = ev.trend
    return trend is not None and trend[2] > -FLAT_GAIN * 5


def _finished(ev: Evidence) -> bool:
    row = ev.row
    if (row.get("train_acc") or 0) >= CONVERGED_ACC:
        return True
    loss = row.get("train_loss")
    return loss is not None and (loss < CONVERGED_LOSS or ev.at_noise_floor())


# ----------------------------------------------------------------------------- the checks
# Each check reads the evidence and returns (message, [fixes]) or None. Fix order matters: the
# first is the primary button.


def check_diverged(ev: Evidence):
    d = ev.divergence
    if not d:
        return None
    net, spec = ev.net, ev.spec
    first, chance = ev.first_loss, net.chance_loss if net else None
    stopped = (f"The loss or its gradient became {d['loss']} at step {d['step']}, so training "
               f"stopped there{d.get('kept', '')}.")
    unscaled = net and net.unscaled
    if d["step"] == 1:  # no update was taken: the start itself is broken
        causes, fixes = [], []
        if net and not net.init_suits:
            causes.append(f"the initial weights ({net.init} init)")
            fixes.append(use_init(spec, net.suited_init))
        if unscaled:
            causes.append(f"the unscaled inputs (a feature's typical size is {_fmt(net.input_rms)})")
            fixes.append(standardise_inputs(spec))
        why = " and ".join(causes) or "the initial weights or the inputs"
        return (f"{stopped} That was before any update, so the learning rate is not the cause: "
                f"{why} make the numbers overflow on the way through the layers.", fixes)
    if first is not None and chance and first > INIT_LOSS * chance:
        return (f"{stopped} It was already {_fmt(first)} before the first update (a constant guess "
                f"scores {_fmt(chance)}), so the initial weights are far too large for this net: "
                "every layer multiplies the signal up. Start from an init scaled to the layer "
                "width.", [use_init(spec, net.suited_init), clip_gradients(spec), lower_lr(spec)])
    if unscaled:
        return (f"{stopped} The inputs are unscaled (a feature's typical size is "
                f"{_fmt(net.input_rms)}), which stretches the loss surface so that this step size "
                "overshoots along the steep directions.", [standardise_inputs(spec), lower_lr(spec)])
    # a blow-up within a few steps overshoots by far more than 10x
    factor = 0.01 if d["step"] <= DIVERGED_EARLY else 0.1
    return (f"{stopped} The steps overshoot: each one lands where the gradient is larger, so the "
            "next step is larger still. Take smaller steps or cap the gradient's norm.",
            [lower_lr(spec, factor), clip_gradients(spec)])


def check_diverging(ev: Evidence):
    losses = [r["train_loss"] for r in (ev.rows + [ev.row])[-DIVERGING_ROWS:]
              if r.get("train_loss") is not None]
    if len(losses) < DIVERGING_ROWS or not all(math.isfinite(v) for v in losses):
        return None
    chance = ev.net.chance_loss if ev.net else None
    if not all(b > a for a, b in zip(losses, losses[1:])) or \
            losses[-1] < DIVERGING_RISE * min(losses) or \
            (chance and losses[-1] < DIVERGING_FLOOR * chance):  # 1e-4 -> 3e-4 harms nothing
        return None
    return (f"Diverging: the training loss has climbed from {_fmt(min(losses))} to "
            f"{_fmt(losses[-1])} over the last {DIVERGING_ROWS} logged steps and keeps rising. The "
            "step size is past the stable limit for this loss surface; smaller steps bring it "
            "back before it overflows.", [lower_lr(ev.spec), clip_gradients(ev.spec)])


def check_exploding(ev: Evidence):
    return check_exploding_in_depth(ev) or check_exploding_in_time(ev)


def check_exploding_in_depth(ev: Evidence):
    spec, net = ev.spec, ev.net
    chance, loss = (net.chance_loss if net else None), ev.row.get("train_loss")
    grad = ev.row.get("grad_norm")
    overflow = grad is not None and not math.isfinite(grad)
    huge = chance and loss is not None and loss > INIT_LOSS * chance
    too_large = net and (net.init_gain >= 2 or not net.init_suits)
    if (overflow or huge) and too_large and not net.unscaled:  # unscaled inputs: their own finding
        what = ("the gradient's norm overflowed" if overflow else
                f"the training loss is {_fmt(loss)} where a constant guess scores {_fmt(chance)}")
        return (f"Exploding: {what}. The initial weights ({spec.model.init.name} init, "
                f"{net.init_gain:.0f}x Xavier's scale) are far too large for this net, so every "
                "layer multiplies the signal and the gradient up; clipping only hides it. Start "
                "from an init scaled to the layer width.", [use_init(spec, net.suited_init)])
    ratio = ev.grad_ratio()
    if ratio and ratio[0] > EXPLODING_RATIO:
        r, first, last = ratio
        init = [] if net is None or net.init_suits else [use_init(spec, net.suited_init)]
        return (f"Exploding gradients: dL/dh grows from {_fmt(last['act_grad_norm'])} at "
                f"{last['name']} to {_fmt(first['act_grad_norm'])} at {first['name']} "
                f"({_fmt(r)}x). Every layer multiplies the gradient by more than 1, so the "
                "weights are too large for this depth.", [*init, clip_gradients(spec),
                                                          lower_lr(spec)])
    for lay in ev.hidden():
        ur = lay.get("update_ratio")
        if ur is not None and ur > EXPLODING_UPDATE:
            return (f"Huge updates: one step changed {lay['name']}'s weights by {_fmt(ur)}x their "
                    "own size (healthy is about 0.001-0.01), so each step throws away what the "
                    "last one learned. The step size is too large.",
                    [lower_lr(spec), clip_gradients(spec)])
    return None


def check_unstable(ev: Evidence):
    """The loss jumps back up, again and again, from where it had fallen, or the run has lost
    what it learned (`_lost_ground`): the steps overshoot the valley they are in. With an
    adaptive optimizer every weight moves by about the rate on every step whatever its
    gradient, so a rate far too large shows this way, not as a slow climb; SGD with a large
    rate and momentum too."""
    net, trend = ev.net, ev.trend
    chance = net.chance_loss if net else None
    if not chance or trend is None or _finished(ev):
        return None
    losses, n = ev.window_losses, ev.spike_count
    lost = _lost_ground(ev)
    if n < (1 if ev.seen("unstable") else SPIKES) and lost is None:  # hysteresis: one spike
        return None                                                  # keeps it on
    adaptive = (" (an adaptive optimizer moves every weight by about the rate on every step)"
                if net.adaptive else "")
    if n >= SPIKES or lost is None:
        seen = (f"over the last {ev.span} steps the training loss jumped back up {n} "
                f"time{'s' if n > 1 else ''} from where it had fallen (its lowest: "
                f"{_fmt(min(losses))}; it peaked at {_fmt(max(losses))})")
    else:
        now, best = lost
        times = now["val_loss"] / best["val_loss"]
        seen = (f"the validation loss is {_fmt(now['val_loss'])}, {times:.1f}x its best "
                f"({_fmt(best['val_loss'])} around step {best['step']}), and the "
                f"training loss rose with it ({_fmt(best['train_loss'])} → "
                f"{_fmt(now['train_loss'])}): the net lost what it had learned")
    if net.init_gain >= 2 and not net.init_suits:
        # measured: SGD on weights started far too large, clipped at norm 1, got worse with a
        # 10x lower rate (0.31 -> 0.57): the size of the weights is the cause
        return (f"Unstable: {seen}. The initial weights ({ev.spec.model.init.name} init, "
                f"{net.init_gain:.0f}x Xavier's scale) make every step large; an init scaled to "
                "the layer width removes the cause.", [use_init(ev.spec, net.suited_init)])
    return (f"Unstable: {seen}. Steps this large overshoot the valley they are in{adaptive}. "
            "A smaller learning rate lets the net settle.", [lower_lr(ev.spec)])


def _lost_ground(ev: Evidence) -> tuple[dict, dict] | None:
    """(now, best) when the run is losing what it learned: the validation loss (medians, as
    overfitting reads them) LOST_GROUND times its best with the training loss no lower than it
    was there, so it is no overfitting (measured: tanh RNNs started with gain 3 or 4 ended 'ok'
    at 2.5-4x their best); None otherwise."""
    best, last = ev.best, ev.last_eval
    # with BatchNorm the validation pass uses running averages that lag behind the weights, so
    # its loss swings without the net having lost anything (measured: a deep sigmoid net with
    # BatchNorm, where a lower rate only slowed it): only a run seen overshooting counts there
    if best is None or last is None or not (ev.overshot or (ev.net and not ev.net.has_norm)):
        return None
    evals = ev.last_evals(OVERFIT_SMOOTH)
    now = smoothed(evals) if len(evals) == OVERFIT_SMOOTH else None
    if now is None or now["step"] <= best["step"] or best["val_loss"] <= 0 or \
            now["val_loss"] < LOST_GROUND * best["val_loss"] or \
            (now["train_loss"] < best["train_loss"] and not ev.overshooting):
        return None
    return now, best


def check_symmetric(ev: Evidence):
    if not ev.symmetric:
        return None
    spec, net = ev.spec, ev.net
    names = ", ".join(ev.symmetric)
    return (f"Symmetric units: every unit of {names} has the same weights ({spec.model.init.name} "
            "init), so they compute the same output and get the same update, and the layer acts "
            "like a single unit however wide it is. A random init breaks the tie.",
            [use_init(spec, net.suited_init if net else HE)])


def check_unscaled(ev: Evidence):
    net = ev.net
    if net is None or net.input_rms <= UNSCALED_RMS or ev.preact_rms is None or \
            ev.preact_rms <= PREACT_RMS:
        return None
    first = ev.net.hidden[0] if ev.net.hidden else "the first layer"
    return (f"Unscaled inputs: a feature's typical size is {_fmt(net.input_rms)} (normalisation: "
            f"{net.normalize}), so {first}'s pre-activations have a typical size of "
            f"{_fmt(ev.preact_rms)}, far outside the range where the activation works well (about "
            "-3 to 3), and the loss surface is stretched along the large features. Standardise "
            "the inputs.", [standardise_inputs(ev.spec)])


def time_ratios(ev: Evidence) -> dict[str, float]:
    """{recurrent layer: the median over the last TIME_ROWS logged rows of dL/dh_t at the first
    time step / at the last}: how much of the loss's gradient reaches a sequence's start."""
    return time_ratios_of([*ev.rows[-(TIME_ROWS - 1):], ev.row])


def _to_lstm(spec, index: int) -> dict:
    """The fix that swaps a plain recurrent layer for an LSTM of the same size."""
    return fix("Switch to an LSTM", {f"model.layers.{index}": with_cell(spec, index, "lstm")})


def check_vanishing_in_time(ev: Evidence):
    """A plain RNN whose gradient fades back through the steps while the loss stays high: the
    start of each sequence cannot reach the loss. (LSTMs and GRUs often start this way and
    then open their gates, so only the plain cell is called out.)"""
    loss, chance = ev.row.get("train_loss"), ev.net and ev.net.chance_loss
    if loss is None or not chance or loss < TIME_STUCK * chance:
        return None  # the net does well: whatever it needs of the past reaches it
    if ev.spec.training.tbptt:
        return None  # truncation stops the gradient on purpose: its zeros are not fading
    for name, ratio in time_ratios(ev).items():
        kind, index = ev.net.recurrent.get(name, (None, None))
        if kind == "rnn" and ratio < TIME_VANISHING:
            g = ev.row_layer(name)["time_grad"]
            seen = (f"only {_fmt(g[0])} at the first ({_fmt(ratio)}x over the last rows), so "
                    "what happened early in a sequence barely reaches the loss" if g[0] else
                    "exactly 0 at the first, so nothing that happened early in a sequence "
                    "reaches the loss (saturated units pass no gradient)")
            return (f"Vanishing gradients through time: in {name}, dL/dh_t is {_fmt(g[-1])} at "
                    f"the last step but {seen}. "
                    "A plain RNN multiplies the gradient by its recurrent weights and its "
                    "activation's slopes once per step, and the steps compound it. An LSTM "
                    "carries its cell state forward by additions, with a forget gate that "
                    "learns to keep it.",
                    [_to_lstm(ev.spec, index)])
    return None


def check_exploding_in_time(ev: Evidence):
    if ev.spec.training.tbptt:
        return None  # the gradient does not reach the first step at all
    for name, ratio in time_ratios(ev).items():
        if ratio > TIME_EXPLODING:
            g = ev.row_layer(name)["time_grad"]
            return (f"Exploding gradients through time: in {name}, dL/dh_t grows from "
                    f"{_fmt(g[-1])} at the last step to {_fmt(g[0])} at the first "
                    f"({_fmt(ratio)}x): every step multiplies it by more than 1. Clipping "
                    "caps the step it causes; smaller recurrent weights or a lower rate keep "
                    "it from growing.", [clip_gradients(ev.spec), lower_lr(ev.spec)])
    return None


def check_vanishing(ev: Evidence):
    ratio = ev.grad_ratio()
    if ratio is None or ratio[0] >= VANISHING_RATIO:
        return check_vanishing_in_time(ev)
    if any(v >= DEAD_BLOCKING for v in ev.unit_stat("dead_frac").values()):
        return None  # a dead layer blocks the gradient: that is the finding, not vanishing
    r, first, last = ratio
    spec, net = ev.spec, ev.net
    seen = (f"Vanishing gradients: dL/dh is {_fmt(last['act_grad_norm'])} at {last['name']} but "
            f"only {_fmt(first['act_grad_norm'])} at {first['name']} ({_fmt(r)}x), so the early "
            "layers barely learn.")
    if net is None:
        return seen, []
    norm = [] if net.has_norm else [with_batchnorm(spec)]
    if net.squashing:
        relu = fix("Switch to ReLU + He init", {"model.activation": RELU,
                                               "model.init": HE,
                                               **without_layer_overrides(spec, "activation"),
                                               **without_layer_overrides(spec, "init")})
        return (f"{seen} Each sigmoid or tanh layer multiplies the gradient by its slope (at most "
                f"0.25 for sigmoid, under 1 for tanh away from zero), and {net.depth} layers "
                "compound it. ReLU with He init or BatchNorm keeps it alive.", [relu, *norm])
    if net.relu_like and net.bias_init < 0:
        return (f"{seen} The biases start at {net.bias_init:g}, which switches most ReLU units "
                "off: a silent unit passes no gradient, so little of it reaches the early "
                "layers. Start the biases at 0.", [bias_init_zero()])
    if net.relu_like and init_family(net.init) != init_family(HE):
        return (f"{seen} The init ({net.init}) gives weights too small for ReLU-like units: "
                "ReLU zeroes half its inputs, so each layer halves the signal's variance, forward "
                f"and backward, and {net.depth} layers compound it. He init doubles the variance "
                "to make up for it.", [use_init(spec, HE), *norm])
    if not net.nonlinear:
        return (f"{seen} The weights are too small for this depth ({net.init} init): each linear "
                "layer shrinks the signal.", [use_init(spec, XAVIER)])
    if net.has_norm:
        return (f"{seen} The init already suits the activation and the net has normalisation, "
                f"so the gradient is lost to depth ({net.depth} layers) and to units that have "
                "gone quiet; residual connections give it a path around the layers.", [])
    return (f"{seen} The init already suits the activation, so the gradient is lost to depth "
            f"({net.depth} layers) and to units that have gone quiet. BatchNorm or residual "
            "connections give it a steadier path.", norm)


def _holding_back(ev: Evidence) -> str | None:
    """Why silent or pinned units matter here, or None when they do not (the net fits its data,
    or the loss is falling and the gradient gets through)."""
    if ev.fits():
        return None
    ratio = ev.grad_ratio()
    if ratio and ratio[0] < COLLAPSING_RATIO:
        return f"the gradient reaching {ratio[1]['name']} is {_fmt(ratio[0])}x that at {ratio[2]['name']}"
    if _learning_stalled(ev):
        trend = ev.trend
        return f"the training loss moved {trend[2]:+.0%} over the last {WINDOW} steps"
    loss, chance = ev.row.get("train_loss"), ev.net.chance_loss if ev.net else None
    if loss is not None and chance and ev.row["step"] >= GUESS_AFTER and loss >= GUESS * chance:
        return f"the training loss ({_fmt(loss)}) is no better than a constant guess ({_fmt(chance)})"
    return None


def check_dead(ev: Evidence):
    dead = {n: v for n, v in ev.unit_stat("dead_frac").items() if v >= DEAD_FRAC}
    if not dead:
        return None
    blocking = any(v >= DEAD_BLOCKING for v in dead.values())
    why = _holding_back(ev) or ("the layer passes no gradient down" if blocking and not ev.fits()
                                else None)
    if why is None:
        return None
    spec, net = ev.spec, ev.net
    worst = max(dead, key=dead.get)
    others = ", ".join(f"{n} {v:.0%}" for n, v in dead.items() if n != worst)
    where = "the probed training examples" if ev.probe is not None else "the batch"
    text = (f"Dead ReLUs: {dead[worst]:.0%} of {worst}'s units output zero for every one of "
            f"{where}{f' (also {others})' if others else ''}, and {why}. A silent unit passes "
            "no gradient to its weights; it comes back only if the layers below move its input.")
    fixes = []
    if net and net.bias_init < 0:
        text += f" The biases start at {net.bias_init:g}, which switches units off before training."
        fixes.append(bias_init_zero())
    if net and net.relu_like and init_family(net.init) != init_family(HE) and \
            not (net.bias_init < 0):
        text += (f" With {net.init} init the signal shrinks at every ReLU layer, so higher up "
                 "the biases outweigh it and can switch units off for every input; He init "
                 "keeps the signal's size.")
        fixes.append(use_init(spec, HE))
    first = (ev.first_row or (ev.rows[0] if ev.rows else ev.row)).get("layers") or ()
    grew = all((lay.get("dead_frac") or 0) < DEAD_FRAC for lay in first if lay["name"] in dead)
    jumps = [lay.get("update_ratio") or 0 for r in ev.window for lay in r.get("layers") or ()
             if lay["name"] in dead]
    overshooting = ev.overshot or ev.overshooting  # now, or found unstable earlier in the run
    if overshooting or (grew and jumps and max(jumps) >= LARGE_UPDATE):
        # the step size killed them: a leaky slope would leave the steps as large (measured:
        # Adam at 0.5 on the spiral, leaky ReLU took the validation loss 1.1 -> 6.8)
        text += (" The run has been unstable (its loss jumped back up from where it had fallen)"
                 if overshooting else " The units were alive at the start and steps changed "
                 f"weights by up to {_fmt(max(jumps))}x their size")
        text += ": large updates push ReLUs off. Smaller steps avoid it."
        fixes.append(lower_lr(spec))
    elif ACTIVATIONS[spec.model.activation.name].tags.get("dies"):  # ReLU
        text += " Leaky ReLU keeps a small slope below zero, so quiet units still learn."
        fixes.append(fix("Switch to leaky ReLU", {"model.activation": LEAKY_RELU,
                                                  **without_layer_overrides(spec, "activation")}))
    return text, fixes


def check_saturated(ev: Evidence):
    sat = {n: v for n, v in ev.unit_stat("saturated_frac").items() if v >= SATURATED_FRAC}
    if not sat:
        return None
    why = _holding_back(ev)
    if why is None:
        return None
    spec, net = ev.spec, ev.net
    worst = max(sat, key=sat.get)
    others = ", ".join(f"{n} {v:.0%}" for n, v in sat.items() if n != worst)
    text = (f"Saturated units: {sat[worst]:.0%} of {worst}'s outputs sit at the flat ends of "
            f"the squashing function{f' (also {others})' if others else ''}, where its slope is "
            f"nearly zero, and {why}.")
    fixes = []
    if net and net.init_gain >= 2 and init_family(net.init) != init_family(XAVIER):
        text += (f" The init ({net.init}) drew weights {net.init_gain:.0f}x larger than Xavier's "
                 "for the layer width, so each unit's input is too large; Xavier init scales the "
                 "weights to the width.")
        fixes.append(use_init(spec, XAVIER))
    elif net and net.unscaled:
        text += " The inputs are unscaled, so the first layer's inputs are too large."
        fixes.append(standardise_inputs(spec))
    elif net and not net.has_norm:
        text += " The weights grew during training; BatchNorm keeps each layer's input centred."
        fixes.append(with_batchnorm(spec))
    return text, fixes


def check_too_slow(ev: Evidence):
    trend = ev.trend
    if trend is None or _finished(ev):
        return None
    if ev.net and ev.net.adaptive and current_lr(ev.spec) >= ADAPTIVE_SLOW_LR:
        # Adam's step is about lr per weight whatever the gradient; its updates shrink near a
        # minimum because the gradient's sign turns noisy, not because lr is small
        return None
    current = ev.row.get("lr")
    if current is not None and current < SCHEDULED_LOW * current_lr(ev.spec):
        # a schedule has lowered the rate on purpose (annealing at the end, warming up at the
        # start): small steps are its plan, and raising the base rate would not change them
        return None
    if any(not TIME_VANISHING <= r <= TIME_EXPLODING for r in time_ratios(ev).values()):
        # the gradient fades or grows through time: small steps are its symptom, and a larger
        # rate on such a net blew up (measured: a gain-4 tanh RNN, 0.05 -> 0.5 diverged)
        return None
    held = ev.seen("too_slow") > 0
    # hysteresis: it takes evidence to switch the finding on, and counter-evidence (fast
    # falls, larger steps) to switch it off; a noisy flat stretch does not
    loose = 1.5 if held else 1.0
    rate = trend[2] * WINDOW / ev.span  # the change per WINDOW steps, whatever the logging
    # still falling, only slowly (to begin with: a flat loss may be converged or stuck)
    if rate <= -SLOW_DROP * loose or (not held and rate >= -FLAT_GAIN):
        return None
    ratio = ev.median_update
    if ratio is None or not 0 < ratio < SLOW_UPDATE * loose:
        return None
    vals = [r["val_loss"] for r in ev.window if r.get("val_loss") is not None]
    if not held and len(vals) >= 2 and (vals[0] - vals[-1]) / max(vals[0], 1e-12) < -trend[2] / 4:
        return None  # validation improves less than training: larger steps would not help it
    start, end, change = trend
    return (f"Learning too slowly: a step changes the weights by about {_fmt(ratio)} of their size "
            f"(healthy is about 0.001-0.01), and the training loss moved {change:+.0%} over the "
            f"last {WINDOW} steps (to {_fmt(end)}). The learning rate is too small.",
            [raise_lr(ev.spec)])


def _flat_gain(ev: Evidence, status: str) -> float:
    """The flatness threshold: looser once the finding holds (hysteresis)."""
    return STILL_FLAT if ev.seen(status) > 0 else FLAT_GAIN


def _flat_and_high(ev: Evidence, status: str = "plateau"):
    trend = ev.trend
    if trend is None or _finished(ev):
        return None
    start, end, change = trend
    first = ev.first_loss if ev.first_loss is not None else end
    if abs(change) >= _flat_gain(ev, status) or end < STILL_HIGH * first:
        return None
    return trend


def _short_of_fit(ev: Evidence) -> bool:
    """The model is clearly short of fitting its training data: a classifier under FITS_ACC, a
    regression above its noise floor (or, with no known floor, explaining under half the
    target's variance)."""
    row, net = ev.row, ev.net
    if row.get("train_acc") is not None:
        return row["train_acc"] < FITS_ACC
    loss = row.get("train_loss")
    if loss is None or net is None:
        return False
    if net.noise_floor is not None and net.noise_floor > 1e-6:
        return not ev.at_noise_floor()
    return net.chance_loss is not None and loss > STILL_HIGH * net.chance_loss


def check_underfitting(ev: Evidence):
    """A flat loss short of fitting, on a model that can only draw straight boundaries (or fit a
    plane), on data not known to be linear: the linear model on the spiral."""
    net, trend = ev.net, ev.trend
    if net is None or trend is None or abs(trend[2]) >= _flat_gain(ev, "underfitting") or \
            _finished(ev) or \
            not _short_of_fit(ev) or net.nonlinear or net.linear_data:
        return None
    last = ev.last_eval
    end = trend[1]
    if last is not None and last["val_loss"] > 1.5 * end:
        return None  # a gap: not a capacity problem
    shape = "fit a plane" if ev.row.get("train_acc") is None else "draw straight boundaries"
    return (f"Underfitting: the training loss has settled at {_fmt(end)} and no longer moves, "
            f"short of fitting the training data. Without a non-linear hidden layer the model "
            f"can only {shape}; if the data needs bends, a hidden layer lets it make them.",
            [add_hidden_layer(ev.spec)])


def check_plateau(ev: Evidence):
    """A flat loss no better than a constant guess: stuck, not converged on noisy data."""
    trend = _flat_and_high(ev)
    chance = ev.net.chance_loss if ev.net else None
    if trend is None or (chance and trend[1] < GUESS * chance):
        return None
    start, end, change = trend
    text = (f"Plateau: the training loss has stayed near {_fmt(end)} for the last {ev.span} "
            f"steps ({change:+.1%}), no better than a constant guess"
            f"{f' ({_fmt(chance)})' if chance else ''}: the net has learned nothing yet.")
    if ev.net and ev.net.adaptive:
        return text + " Look for dead or saturated units in the layer charts.", []
    return (text + " An adaptive optimizer such as Adam scales each weight's step to its own "
            "gradient and often gets out.",
            [fix("Switch to Adam (lr 0.003)", {"optimizer": dict(ADAM)})])


def check_not_learning(ev: Evidence):
    """Past the first trend window, the latest validation loss (else the training loss) is no
    better than a constant guess's (GUESS of it), and the training loss is not far below it (that
    would be memorising): whatever the run does, it has learned nothing usable. Flat at that
    level is a plateau, which says so
    with its own advice; this is the rest: a loss that wanders, creeps or climbs there. A more
    specific finding (dead, saturated, vanishing, a rate too small or too large) names the cause
    and masks this one."""
    net, row = ev.net, ev.row
    chance, loss = (net.chance_loss if net else None), row.get("train_loss")
    if not chance or loss is None or not math.isfinite(loss) or row["step"] < ev.span or \
            _finished(ev):
        return None
    last = ev.last_eval
    val = last.get("val_loss") if last else None
    # what it does on data it never saw is what counts; without validation, the training loss.
    # A net far below the guess on its training data and not on validation data memorised it:
    # that is overfitting's finding
    if (val if val is not None else loss) < GUESS * chance or loss < STILL_HIGH * chance:
        return None
    if ev.seen("plateau") and check_plateau(ev):
        return None  # a plateau found on this row too: it says so with its own advice
    seen = (f"the training loss ({_fmt(loss)}) is" if val is None else
            f"the validation loss ({_fmt(val)}; training: {_fmt(loss)}) is")
    text = (f"Not learning: after {row['step']} steps {seen} no better than a constant guess's "
            f"({_fmt(chance)}), so whatever the net computes, it has not picked up a pattern that "
            "holds beyond the examples it trained on.")
    fixes = []
    if net.bias_init < 0 and net.relu_like:
        text += (f" The biases start at {net.bias_init:g}, which switches most ReLU units off "
                 "before training: few pass any gradient. Start them at 0.")
        fixes.append(bias_init_zero())
    else:
        text += (" Look at the layer charts for silent or pinned units and at the update ratios "
                 "(healthy is about 0.001-0.01: far below, the rate is too small; far above, too "
                 "large), and check that the inputs carry the signal.")
    return text, fixes


def check_overfitting(ev: Evidence):
    """Judged on medians of OVERFIT_SMOOTH evaluations in a row (`smoothed`): the latest sits
    OVERFIT_RISE above the lowest (kept by HealthCheck), OVERFIT_EVALS evaluations or more after
    it, the train loss fell below its value there, the gap between them widened, and it
    matters (an accuracy gap of OVERFIT_GAP; a regression's validation loss
    OVERFIT_RATIO times its training loss). A row without a validation pass carries the latest
    evaluated one's verdict."""
    best, last = ev.best, ev.last_eval
    if best is None or last is None or best["step"] >= last["step"]:
        return None
    evals = ev.last_evals(OVERFIT_EVALS)
    if len(evals) < OVERFIT_EVALS or evals[0]["step"] <= best["step"] or ev.overshooting:
        return None  # too few evaluations since the best, or a run whose loss jumps about
    now, then = smoothed(evals[-OVERFIT_SMOOTH:]), {**best, "train_loss": train_loss_of(best)}
    if now is None or then["train_loss"] is None or \
            now["val_loss"] < then["val_loss"] * (1 + OVERFIT_RISE):
        return None
    # a train loss that rose with validation's is a net that got worse, not one that overfits
    if now["train_loss"] >= then["train_loss"] or \
            now["val_loss"] - now["train_loss"] <= then["val_loss"] - then["train_loss"]:
        return None
    # a gap that matters: in accuracy; in a regression, a loss ratio or a validation loss that
    # has lost much of its ground (measured: a gain-4 tanh RNN clipped at 1 went from 0.08 to 0.2
    # with a training loss still falling, and was called ok)
    if "acc_gap" in now:
        if now["acc_gap"] < OVERFIT_GAP:
            return None
    elif now["val_loss"] < OVERFIT_RATIO * now["train_loss"] and \
            now["val_loss"] < LOST_GROUND * then["val_loss"]:
        return None
    spec = ev.spec
    watching = spec.training.early_stopping is not None
    fixes = [None if watching else early_stopping(spec), stronger_l2(spec), more_data(spec)]
    text = (f"Overfitting: the validation loss was lowest around step {best['step']} "
            f"({_fmt(then['val_loss'])}) and has risen to {_fmt(now['val_loss'])} (medians of "
            f"{OVERFIT_SMOOTH} evaluations), while the training loss kept falling "
            f"({_fmt(then['train_loss'])} → {_fmt(now['train_loss'])}). The net is learning the "
            "training points' noise. ")
    text += ("Early stopping is watching: when it stops the run it puts back the weights of the "
             "best step. A penalty on large weights or more data narrow the gap itself."
             if watching else "Stop at the best step, penalise large weights or give it more data.")
    return text, fixes


CHECKS = {"diverged": check_diverged, "diverging": check_diverging, "exploding": check_exploding,
          "unstable": check_unstable,
          "symmetric": check_symmetric, "unscaled_inputs": check_unscaled,
          "vanishing": check_vanishing, "dead": check_dead, "saturated": check_saturated,
          "too_slow": check_too_slow, "not_learning": check_not_learning,
          "underfitting": check_underfitting,
          "plateau": check_plateau, "overfitting": check_overfitting}
assert tuple(CHECKS) == PRIORITY

# A finding that explains the others away: with symmetric units, "dead", "slow" or "flat" are
# what symmetry looks like; with a NaN nothing else matters.
MASKS = {"diverged": set(PRIORITY) - {"diverged"},
         "diverging": {"not_learning"}, "exploding": {"not_learning"},
         # units knocked off, a loss that will not settle, a validation loss that jumps: what
         # overshooting steps do; the cure is the rate
         "unstable": {"dead", "saturated", "too_slow", "not_learning", "underfitting", "plateau",
                      "overfitting"},
         "symmetric": {"vanishing", "dead", "saturated", "too_slow", "not_learning",
                       "underfitting", "plateau"},
         # a loss surface stretched along the large features: the jumps are its doing
         "unscaled_inputs": {"unstable", "saturated", "dead", "not_learning"},
         # silent, pinned or starved units make the steps tiny and the loss flat; the cure is
         # theirs, not a larger learning rate; and they are why the net does not learn
         "vanishing": {"too_slow", "plateau", "not_learning"},
         "dead": {"too_slow", "plateau", "not_learning"},
         "saturated": {"too_slow", "plateau", "not_learning"},
         "too_slow": {"plateau", "underfitting", "not_learning"},
         "underfitting": {"plateau", "not_learning"}}


def assess(ev: Evidence) -> dict:
    """The verdict for `ev.row`: {"status", "messages", "fixes", "signs"}. status is the most
    urgent finding (PRIORITY) or "ok"; signs are the checks that held on this row alone."""
    signs, found = [], {}
    masked: set[str] = set()
    for status, check in CHECKS.items():
        if status in masked:
            continue
        result = check(ev)
        if result is None:
            continue
        signs.append(status)
        if ev.seen(status) + 1 >= PERSIST.get(status, 1):
            found[status] = result
            masked |= MASKS.get(status, set())
    found = {s: r for s, r in found.items() if s not in masked}
    status = next(iter(found), "ok")
    fixes = usable_fixes(ev.spec, [{**f, "for": status} for status, (_, fs) in found.items()
                                   for f in fs if f is not None])
    return {"status": status, "messages": [m for m, _ in found.values()], "fixes": fixes,
            "signs": signs}


# ----------------------------------------------------------------------------- the callback


class HealthCheck(Callback):
    """Writes the verdict into every logged row, after Diagnostics filled in the layers. Runs
    the data-wide probe only when a batch shows the sign it confirms."""
    order, name = 40, "health"
    state = ("_symmetric_possible", "_evals", "_limit_note", "_best", "_overshot")

    def __init__(self):
        self.net: Net | None = None
        self._probe_idx = None
        self._symmetric_possible = True
        self._evals: list[dict] = []  # the last evaluated rows (overfitting reads them)
        self._limit_note: str | None = None  # why a diverging run diverges, measured once
        self._best: dict | None = None  # the lowest median of OVERFIT_SMOOTH evaluations in a row
        self._overshot = False  # found unstable at some row: dead units then blame the rate

    def on_fit_start(self, trainer):
        self.net = net_facts(trainer.spec, trainer.model, trainer.data)
        n = len(trainer.data.y_train)
        # a fixed sample that touches none of the run's random streams
        self._probe_idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:PROBE_SIZE] \
            .to(trainer.device)

    def on_step_end(self, trainer):
        row = trainer.row
        if row is None:
            return
        if self.net is None:
            self.on_fit_start(trainer)
        every = max(trainer.spec.training.log_every, 1)
        rows = trainer.history.since(-(max(WINDOW, 4 * every) // every) - 10)
        first = trainer.history[0] if len(trainer.history) else row
        ev = Evidence(row=row, rows=rows, spec=trainer.spec, net=self.net,
                      divergence=trainer.divergence, first_loss=first.get("train_loss"),
                      first_row=first, every=every, evals=list(self._evals),
                      best=self._best, overshot=self._overshot)  # rows before this one
        if row.get("layers") and not trainer.divergence:
            self._measure(trainer, ev)
        row["health"] = assess(ev)
        self._overshot = self._overshot or row["health"]["status"] == "unstable"
        if row["health"]["status"] == "diverging" and row["health"]["messages"]:
            note = self._stability_note(trainer)
            if note:
                row["health"]["messages"][0] += " " + note
        if row.get("val_loss") is not None:
            self._evals = (self._evals + [row])[-OVERFIT_EVALS:]
            recent = smoothed(self._evals[-OVERFIT_SMOOTH:]) \
                if len(self._evals) >= OVERFIT_SMOOTH else None
            if recent is not None and (self._best is None or
                                       recent["val_loss"] < self._best["val_loss"]):
                self._best = recent

    def _stability_note(self, trainer) -> str:
        """For gradient descent (SGD, with or without momentum) on a small net: the largest
        stable rate 2(1 + m)/L of a bowl as curved as the loss is now (L: the top eigenvalue of
        its Hessian, by power iteration), said only when the run's rate is above it. Measured
        once per run, at the first diverging verdict (a few dozen Hessian-vector products)."""
        if self._limit_note is None:
            self._limit_note = ""
            spec = trainer.spec
            opt = spec.optimizer.resolved(OPTIMIZERS)
            if spec.optimizer.name == "sgd" and trainer.cost["params"] <= STABILITY_MAX_PARAMS:
                found = sharpness(trainer, iters=STABILITY_ITERS)
                if found["sharpness"] and found["sharpness"] > 0:
                    limit = gd_limits(found["sharpness"], opt.get("momentum", 0.0),
                                      bool(opt.get("nesterov")))["stable"]
                    if opt["lr"] > limit:
                        self._limit_note = (
                            f"Measured now, the loss curves with sharpness L = "
                            f"{found['sharpness']:.4g} (the top eigenvalue of its Hessian): "
                            "gradient descent on a bowl that curved is stable only for rates "
                            f"below {'2(1 + momentum)/L' if opt.get('momentum') else '2/L'} = "
                            f"{limit:.4g}, and this run's rate is {opt['lr']:.4g}.")
        return self._limit_note

    def _measure(self, trainer, ev: Evidence):
        layers = ev.hidden()
        dead = any((lay.get("dead_frac") or 0) >= DEAD_FRAC for lay in layers)
        sat = any((lay.get("saturated_frac") or 0) >= SATURATED_FRAC * 0.7 for lay in layers)
        unscaled = self.net.input_rms > UNSCALED_RMS
        if dead or sat or unscaled:
            ev.probe, ev.preact_rms = self._probe(trainer, unscaled)
        if self._symmetric_possible:
            ev.symmetric = symmetric_layers(trainer.model, self.net.hidden)
            # exact symmetry is kept by gradient descent and never arises from random weights
            self._symmetric_possible = bool(ev.symmetric)

    @torch.no_grad()
    def _probe(self, trainer, preact: bool):
        """Dead and saturated shares per layer over the probe sample (dropout off), and the
        first hidden layer's pre-activation RMS. Touches no weight, statistic or random stream."""
        model, info = trainer.model, trainer.model.layer_info
        outputs = {}
        was_training = model.training
        # BatchNorm normalises with the probe's own statistics, as in training (its running
        # averages lag behind for the first dozens of steps), without updating them
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats] if len(self._probe_idx) > 1 else []
        kept = [(m.momentum, {k: b.clone() for k, b in m.named_buffers()}) for m in norms]
        with Hooks() as hooks:
            for name, module in model.named_children():
                if name in self.net.hidden and (info[name].get("dies") or info[name].get("bounds")):
                    hooks.add(module.register_forward_hook(
                        lambda m, i, o, name=name: outputs.__setitem__(name, o)))
            first = _first_linear(model, self.net.hidden)
            if preact and first is not None:
                hooks.add(first.register_forward_hook(
                    lambda m, i, o: outputs.__setitem__("__preact__", o)))
            model.eval()
            for m in norms:
                m.train()
                m.momentum = 0.0
            try:
                model(trainer.data.x_train[self._probe_idx])
            finally:
                model.train(was_training)
                for m, (momentum, buffers) in zip(norms, kept):  # put back bit for bit
                    m.momentum = momentum
                    for k, b in m.named_buffers():
                        b.copy_(buffers[k])
        stats = {}
        for name, h in outputs.items():
            if name == "__preact__":
                continue
            s = {}
            if info[name].get("dies"):
                s["dead_frac"] = float(silent(h).float().mean())
            h = h.float().flatten(1)
            if info[name].get("bounds"):
                lo, hi = info[name]["bounds"]
                s["saturated_frac"] = float(((h <= lo + SATURATION_MARGIN) |
                                             (h >= hi - SATURATION_MARGIN)).float().mean())
            stats[name] = s
        pre = outputs.get("__preact__")
        return stats, float(pre.float().pow(2).mean().sqrt()) if pre is not None else None


def _first_linear(model, hidden: list[str]):
    """The nn.Linear that reads the raw inputs, when the first hidden layer starts with one."""
    if not hidden:
        return None
    first = getattr(model, hidden[0])
    lin = getattr(first, "linear", None) or getattr(first, "proj", None)
    if lin is None and isinstance(first, torch.nn.Linear):
        lin = first
    return lin if isinstance(lin, torch.nn.Linear) else None



def silent(h: torch.Tensor) -> torch.Tensor:
    """Which units output exactly zero for every example of the batch h: per unit of a flat
    layer (batch, units), per channel of an image layer (batch, channels, height, width): a
    convolution's unit is its channel, one kernel applied everywhere."""
    dims = (0, *range(2, h.dim()))
    return h.abs().amax(dim=dims) == 0


@torch.no_grad()
def symmetric_layers(model, hidden: list[str]) -> list[str]:
    """Hidden layers of two or more units whose weight rows are all identical."""
    out = []
    for name in hidden:
        for w in weight_params(getattr(model, name)):
            if w.dim() == 2 and w.shape[0] >= 2 and \
                    float((w - w[:1]).abs().amax()) <= 1e-7 * float(w.detach().abs().amax()):
                out.append(name)
                break
    return out
