"""What the health verdict reads: the thresholds (pinned by tests/test_health.py), the net's
facts (its layers, a constant guess's loss, its inputs' scale) and `Evidence`, the rows one
verdict judges, with the trends read from them (loss spikes, validation losses smoothed over
evaluations, dL/dh_t across a sequence).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import cached_property
from statistics import median

from ..core.registry import (
    ACTIVATIONS,
    DATASETS,
    LAYERS,
    LOSSES,
    NORMALIZERS,
    OPTIMIZERS,
)
from .callbacks import weight_params
from .fixes import (
    HE,
    init_family,
)

# ----------------------------------------------------------------------------- thresholds
VANISHING_RATIO = 1e-3   # dL/dh at the first hidden layer / at the last hidden layer below this
EXPLODING_RATIO = 1e3    # ... above this
COLLAPSING_RATIO = 1e-2  # dead/saturated units "hold learning back" when the ratio is below this
EXPLODING_UPDATE = 1.0   # one step changed a layer's weights by more than their own norm
LARGE_UPDATE = 0.05      # a step this large (50x a healthy 0.001) can push ReLUs off for good
DEAD_FRAC = 0.6          # most of a layer's ReLU units silent for every probed example
DEAD_BLOCKING = 0.9      # a layer this dead blocks the gradient: report dead, not vanishing
SATURATED_FRAC = 0.3     # 30% of a layer's squashed outputs pinned near a bound
SATURATION_MARGIN = 0.02
PROBE_SIZE = 1024        # training examples dead and saturated units are counted on
FITS_ACC = 0.95          # a classifier at this train accuracy fits its data: units are fine
UNSCALED_RMS = 4.0       # an input feature whose root-mean-square exceeds this is unscaled ...
PREACT_RMS = 5.0         # ... and a problem when the first layer's pre-activations exceed this
DIVERGED_EARLY = 20      # a NaN this early calls for a 100x smaller learning rate, not 10x
INIT_LOSS = 20.0         # a first loss this many times the chance loss: the init is too large
WINDOW = 200             # steps over which trends are judged
WINDOW_ROWS = 50         # logged rows a trend reads at most (spread over the window)
FLAT_GAIN = 0.01         # the train loss moved by under 1% over the window: flat ...
STILL_FLAT = 0.03        # ... and stays flat while under 3% (mini-batch noise would make a
                         # finding blink on and off at one threshold)
STILL_HIGH = 0.5         # ... while above half the run's first loss (low and flat = done)
CONVERGED_ACC = 0.99     # a flat loss at this train accuracy is a finished run
CONVERGED_LOSS = 1e-3
NOISE_FLOOR = 1.5        # a regression within 1.5x its noise variance (MSE) is at its floor
SLOW_UPDATE = 1e-4       # median update ratio below this: the steps are too small
SLOW_DROP = 0.1          # ... and the loss fell by under 10% over the window
ADAPTIVE_SLOW_LR = 1e-4  # Adam-like optimizers are called slow only below this rate
DIVERGING_ROWS = 6       # logged rows a climbing loss is judged on
DIVERGING_RISE = 2.0     # the loss rose at every one of them, ending this many times above
                         # the lowest ...
DIVERGING_FLOOR = 0.5    # ... and at half a constant guess's loss or more (it is unlearning)
OVERFIT_SMOOTH = 3       # validation losses are judged as medians of this many evaluations in
                         # a row: one pass on a lucky or unlucky draw of weights moves none
OVERFIT_RISE = 0.05      # the latest median 5% above the lowest one ...
OVERFIT_EVALS = 5        # ... this many evaluations after it, while the train loss fell ...
OVERFIT_GAP = 0.1        # ... and train accuracy 10 points above validation's (regression:
OVERFIT_RATIO = 1.5      # validation loss 1.5x the training loss): a gap that matters
SPIKE = 3.0              # a logged train loss this many times the lowest before it in the
SPIKE_SIZE = 0.1         # window, and above it by a tenth of a constant guess's loss, is a
SPIKES = 3               # spike; this many in one window: the steps overshoot (measured: 0 on
                         # every healthy preset, up to 2 with SGD at 0.2 clipped at norm 1,
                         # where a lower rate only slows it, 3-5 with Adam at 0.5 on the spiral)
LOST_GROUND = 1.5        # a validation loss (median of 3) this far above its best, with a
                         # training loss no lower: the run is losing what it learned
GUESS = 0.9              # a loss at 90% of a constant guess's or above has learned nothing ...
GUESS_AFTER = 20         # ... once this many steps have been taken

# logged rows a sign must hold on in a row before it is reported
STABILITY_MAX_PARAMS = 100_000  # the diverging verdict measures 2/L only on nets this small
STABILITY_ITERS = 30
SCHEDULED_LOW = 0.5     # too_slow stays quiet where a schedule has the rate below this share
                        # of the spec's (measured: cosine runs were called too slow at their end)
TIME_VANISHING = 1e-2   # dL/dh_t at a sequence's first step / at its last step, below this
TIME_EXPLODING = 1e2    # ... above this (the median over the last TIME_ROWS logged rows)
TIME_ROWS = 5
TIME_STUCK = 0.5        # ... and it matters while the train loss is above half a constant guess's
PERSIST = {"exploding": 2, "unstable": 2, "symmetric": 2, "unscaled_inputs": 2, "vanishing": 3,
           "dead": 3, "saturated": 3, "underfitting": 2, "plateau": 2, "too_slow": 2}


# ----------------------------------------------------------------------------- the net's facts


@dataclass
class Net:
    """What the causes depend on, read once from the spec and model."""
    hidden: list[str]                # hidden layer names that have statistics, in order
    activations: set[str]            # activation keys of hidden layers
    suited_init: str                 # the init that suits the model's activation
    init: str
    bias_init: float
    has_norm: bool                   # BatchNorm or LayerNorm present
    depth: int                       # hidden linear layers (a residual block counts its depth)
    normalize: str
    input_rms: float                 # the largest feature RMS of the encoded train inputs
    chance_loss: float | None        # the loss of a constant guess
    noise_floor: float | None        # a regression's irreducible MSE (generated data)
    adaptive: bool                   # Adam-like optimizer
    linear_data: bool = False        # a dataset a linear model fits (its registry tag)
    init_gain: float = 1.0           # the widest hidden weight std / Xavier's std for that layer
    recurrent: dict = field(default_factory=dict)  # recurrent layer name -> (type, spec index)

    @property
    def squashing(self) -> bool:
        return any(ACTIVATIONS[a].tags.get("bounds") for a in self.activations)

    @property
    def relu_like(self) -> bool:
        return bool(self.activations) and all(
            init_family(ACTIVATIONS[a].tags["init"]) == init_family(HE) for a in self.activations)

    @property
    def nonlinear(self) -> bool:
        return any(not ACTIVATIONS[a].tags.get("linear") for a in self.activations)

    @property
    def init_suits(self) -> bool:
        """The init is of the family the activation wants (He for ReLU-like, Xavier for tanh)."""
        return init_family(self.init) == init_family(self.suited_init)

    @property
    def unscaled(self) -> bool:
        """Raw inputs on a large scale (the cause several findings name)."""
        return bool(NORMALIZERS[self.normalize].tags.get("raw")) and self.input_rms > UNSCALED_RMS


def net_facts(spec, model, data) -> Net:
    info = model.layer_info
    hidden = [n for n, i in info.items() if i["shown"] and n != "out"]
    acts = {i["activation"] for n, i in info.items() if i.get("activation") and n != "out"}
    # linear maps in the stack: one per weighted layer, `depth` of them in a block that has one
    depth = sum(layer.get("depth") if layer.entry.param("depth") else 1
                for layer in spec.model.layers if "init" in layer.entry.tags.get("uses", ()))
    x = data.x_train
    rms = float(x.float().flatten(1).pow(2).mean(0).sqrt().max()) if x.numel() else 0.0
    loss_entry = LOSSES[spec.loss.name]
    chance = noise = None
    if data.task == "classification":
        chance = math.log(data.classes) if not loss_entry.tags.get("binary") else math.log(2)
    elif loss_entry.tags.get("squared"):
        chance = float(data.y_train.float().var()) if len(data.y_train) > 1 else None
        if spec.data.noise:  # noise 0 (or a table, which has none): no floor to reach
            noise = spec.data.noise ** 2
    gains = [float(w.detach().float().std()) / math.sqrt(2 / (w.shape[0] + w.shape[1]))
             for n in hidden for w in weight_params(getattr(model, n))
             if w.dim() == 2 and w.numel() > 1]
    recurrent = {n: (i["type"], i["spec_index"]) for n, i in info.items()
                 if i["type"] in LAYERS and LAYERS[i["type"]].tags.get("recurrent")}
    return Net(hidden=hidden, activations=acts, recurrent=recurrent,
               suited_init=ACTIVATIONS[spec.model.activation.name].tags["init"],
               init=spec.model.init.name, bias_init=spec.model.bias_init,
               has_norm=any(LAYERS[i["type"]].tags.get("normalizes") for i in info.values()
                            if i["type"] in LAYERS),
               depth=depth,
               normalize=spec.data.normalize, input_rms=rms, chance_loss=chance,
               noise_floor=noise,
               adaptive=bool(OPTIMIZERS[spec.optimizer.name].tags.get("adaptive")),
               linear_data=bool(DATASETS[spec.data.name].tags.get("linear")),
               init_gain=max(gains) if gains else 1.0)


# ----------------------------------------------------------------------------- evidence


def grad_ratio(row: dict) -> tuple[float, dict, dict] | None:
    """(dL/dh at the first hidden layer / at the last, first, last) on one logged row, or None
    with under two hidden layers that have a gradient."""
    hidden = [lay for lay in row.get("layers") or () if lay["name"] != "out"
              and lay.get("act_grad_norm") is not None]
    if len(hidden) < 2:
        return None
    first, last = hidden[0], hidden[-1]
    g0, g1 = first["act_grad_norm"], last["act_grad_norm"]
    ratio = g0 / g1 if g1 > 0 else (math.inf if g0 > 0 else 1.0)
    return ratio, first, last


@dataclass
class Evidence:
    """Everything one verdict reads. `rows` are the logged rows before `row`, oldest first;
    `probe` holds data-wide unit statistics per layer (None: use the batch's)."""
    row: dict
    rows: list[dict]
    spec: object
    net: Net | None = None
    divergence: dict | None = None
    first_loss: float | None = None
    first_row: dict | None = None                 # the run's first logged row
    best: dict | None = None                      # the row with the lowest val_loss so far
    probe: dict | None = None                     # {layer: {"dead_frac", "saturated_frac"}}
    preact_rms: float | None = None               # first hidden layer's pre-activation RMS
    symmetric: list[str] = field(default_factory=list)  # layers whose units are all identical
    evals: list[dict] = field(default_factory=list)     # the last evaluated rows before this one
    overshot: bool = False                              # the run was found unstable before
    every: int = 10                                     # training.log_every: steps between rows

    def hidden(self) -> list[dict]:
        return [lay for lay in self.row.get("layers") or () if lay["name"] != "out"]

    def unit_stat(self, key: str) -> dict[str, float]:
        """{layer: dead_frac or saturated_frac}, on the probed data when there is a probe."""
        if self.probe is not None:
            return {n: s[key] for n, s in self.probe.items() if s.get(key) is not None}
        return {lay["name"]: lay[key] for lay in self.hidden() if lay.get(key) is not None}

    def grad_ratio(self) -> tuple[float, dict, dict] | None:
        return grad_ratio(self.row)

    def row_layer(self, name: str) -> dict:
        return next(lay for lay in self.row.get("layers") or () if lay["name"] == name)

    @cached_property
    def window_losses(self) -> list[float]:
        """The window's finite train losses, oldest first."""
        return [r["train_loss"] for r in self.window if math.isfinite(r["train_loss"])]

    @cached_property
    def spike_count(self) -> int:
        """The jumps back up in the window's train loss (`spikes`); 0 without a guess's loss."""
        chance = self.net.chance_loss if self.net else None
        return spikes(self.window_losses, chance) if chance else 0

    @cached_property
    def overshooting(self) -> bool:
        """The training loss spiked within the window, or the validation loss leapt SPIKE-fold
        from one evaluation to the next among the last ones, the training loss doubling with it:
        jumps in the loss (and units knocked off) are then the step size's doing. (Overfitting
        raises the validation loss too, but by degrees and alone.)"""
        chance = self.net.chance_loss if self.net else None
        if not chance:
            return False
        evals = [r for r in [*self.evals, self.row] if r.get("val_loss") is not None and
                 train_loss_of(r) is not None]
        leaps = any(b["val_loss"] >= SPIKE * a["val_loss"] and
                    b["val_loss"] - a["val_loss"] >= SPIKE_SIZE * chance and
                    train_loss_of(b) >= 2 * train_loss_of(a) for a, b in zip(evals, evals[1:]))
        return leaps or self.spike_count > 0

    def last_evals(self, n: int) -> list[dict]:
        """The last n evaluated rows, this row's (or the latest) evaluation last."""
        last = self.last_eval
        if last is None:
            return []
        return [r for r in self.evals if r is not last][-(n - 1):] + [last]

    def seen(self, status: str) -> int:
        """Logged rows in a row, ending with the previous one, whose signs include `status`."""
        n = 0
        for r in reversed(self.rows):
            if status not in ((r.get("health") or {}).get("signs") or ()):
                break
            n += 1
        return n

    @cached_property
    def window(self) -> list[dict]:
        """Rows of the last WINDOW steps with a train loss (this row included), oldest first;
        at most about WINDOW_ROWS of them, evenly spread (logging every step would otherwise
        make each verdict walk 200 rows)."""
        start = bisect.bisect_left(self.rows, self.row["step"] - self.span, key=lambda r: r["step"])
        rows = self.rows[start:]
        rows = rows[::-(-len(rows) // WINDOW_ROWS)] if rows else rows
        return [r for r in rows + [self.row] if r.get("train_loss") is not None]

    @property
    def span(self) -> int:
        """The steps a trend is judged over: WINDOW, or four logged rows when rows are sparser."""
        return max(WINDOW, 4 * self.every)

    @cached_property
    def trend(self) -> tuple[float, float, float] | None:
        """(start, end, relative change) of the train loss over the last WINDOW steps, averaging
        a quarter of the rows at each end (mini-batch losses are noisy); None while the run is
        younger than the window."""
        if self.row["step"] < self.span:
            return None
        window = self.window
        if len(window) < 4 or window[0]["step"] > self.row["step"] - self.span * 0.9:
            return None
        k = max(1, len(window) // 4)
        start = sum(r["train_loss"] for r in window[:k]) / k
        end = sum(r["train_loss"] for r in window[-k:]) / k
        return start, end, (end - start) / max(abs(start), 1e-12)

    @cached_property
    def median_update(self) -> float | None:
        """The median update ratio of the hidden layers over (up to 10 rows spread across) the
        window."""
        rows = self.window[::max(1, len(self.window) // 10)]
        ratios = sorted(lay["update_ratio"] for r in rows for lay in r.get("layers") or ()
                        if lay["name"] != "out" and lay.get("update_ratio") is not None)
        return ratios[len(ratios) // 2] if ratios else None

    def fits(self) -> bool:
        """The net fits its training data: units that are off or pinned do it no harm. A
        regression with no known noise floor fits when it explains 90% of the target's variance."""
        acc = self.row.get("train_acc")
        if acc is not None:
            return acc >= FITS_ACC
        if self.net is not None and self.net.noise_floor is None:
            loss, chance = self.row.get("train_loss"), self.net.chance_loss
            return loss is not None and chance is not None and loss <= 0.1 * chance
        return self.at_noise_floor()

    @property
    def last_eval(self) -> dict | None:
        """This row if it was evaluated, else the latest evaluated row before it."""
        if self.row.get("val_loss") is not None:
            return self.row
        return self.evals[-1] if self.evals else None

    def at_noise_floor(self) -> bool:
        loss = self.row.get("train_loss")
        floor = self.net.noise_floor if self.net else None
        return loss is not None and floor is not None and loss <= NOISE_FLOOR * max(floor, 1e-12)


def spikes(losses: list[float], chance: float) -> int:
    """How many times the losses jump up to SPIKE times the lowest before them (and by
    SPIKE_SIZE of a constant guess's loss): each jump counts once, until it has come down."""
    n, low, up = 0, math.inf, False
    for loss in losses:
        jump = loss >= SPIKE * low
        if jump and loss - low >= SPIKE_SIZE * chance and not up:
            n += 1
        up = jump
        low = min(low, loss)
    return n


def time_ratios_of(rows: list[dict]) -> dict[str, float]:
    """time_ratios over the last TIME_ROWS of a run's logged rows."""
    ratios: dict[str, list[float]] = {}
    for r in rows[-TIME_ROWS:]:
        for lay in r.get("layers") or ():
            g = lay.get("time_grad")
            # a non-finite gradient is written as null: that row has no ratio to give
            if g and len(g) > 1 and g[0] is not None and g[-1] is not None and \
                    math.isfinite(g[0]) and math.isfinite(g[-1]) and g[-1] > 0:
                ratios.setdefault(lay["name"], []).append(g[0] / g[-1])
    return {name: sorted(v)[len(v) // 2] for name, v in ratios.items()}


def train_loss_of(row: dict) -> float | None:
    """The train loss to compare with validation's: eval mode where the model has dropout or
    BatchNorm (those rows carry it), else the running mean."""
    return row.get("train_eval_loss", row.get("train_loss"))


def smoothed(evals: list[dict]) -> dict | None:
    """The median validation and train loss (and accuracies) of these evaluated rows, as one
    row stamped with the step of the evaluation in the middle: what a trend is judged on, so
    that one pass on a lucky or unlucky draw of weights moves nothing."""
    trains = [train_loss_of(r) for r in evals]
    if not evals or any(t is None for t in trains):
        return None
    out = {"step": evals[len(evals) // 2]["step"],
           "val_loss": median([r["val_loss"] for r in evals]), "train_loss": median(trains)}
    accs = [r.get("train_eval_acc", r.get("train_acc")) for r in evals]
    val_accs = [r.get("val_acc") for r in evals]
    if None not in accs and None not in val_accs:
        out["acc_gap"] = median([a - v for a, v in zip(accs, val_accs)])
    return out
