"""What a preset's `expect` block means: each claim of its explanation as a number measured on
a finished run, compared with a bound or with the same number on a twin run.

    {"measure": "val_acc", "above": 0.85}
    {"measure": "train_loss", "below": {"twin": {"model.init": "xavier_uniform"}}}
    {"measure": "train_loss@50", "above": {"twin": {...}}}      # a logged row's train loss
    {"measure": "time_grad_ratio@1", "above": 100}              # that row's dL/dh_t ratio
    {"measure": "statuses", "includes": "saturated"}            # some row's verdict
    {"measure": "status", "differs": "ok"}                      # the last verdict is not "ok"
    {"measure": "fixes", "includes": "Switch to an LSTM"}       # a fix some row offers
    {"measure": "gap_loss", "below": {"preset": "overfitting_small_data"}}
    {"measure": "val_acc", "above": 0.9, "set": {"optimizer.lr": 0.1}}  # measured on a variant
    {"measure": "update_median", "below": {"twin": {...}}, "factor": 0.1}  # 10x below the twin's
    {"measure": "val_loss", "equals": {"of": "best_val_loss"}}  # another measure of the run
    {"measure": "gap_loss", "below": {"beside": 1}}     # variant 1 of the preset's side by side

Measures (MEASURES below) are taken after the run ended, on the model it ended with (after
early stopping restored its best weights), in eval mode over whole splits, so train and
validation numbers compare like with like.

A claim is a fact about the effect it names only if it holds with margin (`margin` below). Its
slack on a seed is how far the value sits on the right side of the bound (or of the twin's value
on the same seed). On 20 seeds the worst slack must be positive and at least MARGIN_SPREADS of
the seeds' spread below the median (median slack - worst slack): a seed worse than any seen by a
third of that spread would still keep the claim. (A spread on the good side, one seed far ahead,
costs nothing.) And it must hold on a run whose starting weights were nudged by one part in a
million (callbacks.Nudge), which stands in for another CPU's rounding. A claim that
only holds on the seeds it was tuned on, or that flips when the weights move by 1e-6, rests on
chance or on chaos. tests/test_presets.py checks every claim on seeds 0-4 and on nudged seed 0;
benchmarks/claim_margins.py prints the 20-seed table.
"""
from __future__ import annotations

import json
import math

import torch

from ..core.spec import ExperimentSpec
from ..nn.model import count_params
from ..train.callbacks import Nudge
from ..train.evidence import grad_ratio, time_ratios_of
from . import load_preset


def _ratio(row: dict | None) -> float | None:
    """dL/dh at the first hidden layer / at the last hidden layer, on one logged row (None where
    the last one's is zero: no ratio to claim)."""
    found = grad_ratio(row or {})
    return found[0] if found and found[2]["act_grad_norm"] else None


def _row_at(rows: list[dict], step: int) -> dict:
    return min(rows, key=lambda r: abs(r["step"] - step))


def _layer_extreme(row: dict, key: str, pick) -> float | None:
    values = [lay[key] for lay in row.get("layers") or () if lay.get(key) is not None]
    return pick(values) if values else None


class Outcome:
    """A finished run's numbers, measured once."""

    def __init__(self, trainer):
        t = trainer
        self.rows = t.history.rows
        self.stopped = t.stopped
        self.restored_step = t.restored_step
        self.train = t.evaluate("train")
        self.val = t.evaluate("val")
        self.steps = t.step_count
        self.trainer = t  # for measures that need the model (boundary_length)

    def measure(self, name: str):
        if "@" in name:  # a logged row's number near a step: "train_loss@50"
            key, step = name.split("@")
            row = _row_at(self.rows, int(step))
            if key in ("saturated_min", "dead_max"):
                return _layer_extreme(row, "saturated_frac" if key == "saturated_min" else
                                      "dead_frac", min if key == "saturated_min" else max)
            if key == "grad_ratio":
                return _ratio(row)
            if key == "time_grad_ratio":  # that row's dL/dh_t, first time step / last
                return next(iter(time_ratios_of([row]).values()), None)
            return row.get(key)
        return MEASURES[name](self)


def _sharpness(o) -> dict:
    """engine.train.curvature.sharpness of the finished run: 2/L, the largest rate at which plain
    gradient descent is stable on a quadratic that curved (exact for a linear model)."""
    from ..train.curvature import sharpness
    return sharpness(o.trainer)


def _median_update(o) -> float | None:
    ratios = sorted(lay["update_ratio"] for r in o.rows for lay in r.get("layers") or ()
                    if lay["name"] != "out" and lay.get("update_ratio") is not None)
    return ratios[len(ratios) // 2] if ratios else None


def _late(o) -> list[float]:
    """The logged train losses of the run's last two thirds (past the first fast fall)."""
    rows = [r for r in o.rows if r.get("train_loss") is not None]
    return [r["train_loss"] for r in rows[len(rows) // 3:]]


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5


def _boundary_length(o, n: int = 101) -> int | None:
    """How many neighbouring cells of an n x n grid over the data (2-D sets only) the model
    puts in different classes: fewer means a smoother decision boundary."""

    data = o.trainer.data
    if data.points is None or data.task != "classification":
        return None
    pts = torch.cat([p for p in data.points.values() if len(p)])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    xs, ys = torch.linspace(float(lo[0]), float(hi[0]), n), torch.linspace(float(lo[1]), float(hi[1]), n)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    cls = o.trainer.predict(data.encode(grid)).argmax(1).reshape(n, n)
    return int((cls[1:] != cls[:-1]).sum() + (cls[:, 1:] != cls[:, :-1]).sum())


def _phase(o, key: str):
    return (o.trainer.phase or {}).get(key)


def _int8(o) -> dict:
    if not hasattr(o, "_int8"):
        from ..lab.quantize import quantization_report
        o._int8 = quantization_report(o.trainer, "val")
    return o._int8


def _report(o) -> dict:
    if not hasattr(o, "_report"):
        from ..lab.metrics import report
        o._report = report(o.trainer, "val")
    return o._report


def _occlusion_on_shape(o, examples: int = 20, margin: int = 1) -> float | None:
    """The share of the first validation images whose occlusion map peaks on the shape (within
    `margin` pixels of the box around its bright pixels): the net looks where the shape is."""
    from ..lab.featuremaps import occlusion_map

    data = o.trainer.data
    if data.x_val.dim() != 4:
        return None
    hits = 0
    for i in range(min(examples, len(data.y_val))):
        image = data.x_val[i]
        raw = image * data.scale.reshape(image.shape) + data.shift.reshape(image.shape)
        rows, cols = torch.nonzero(raw[0] > 0.5, as_tuple=True)
        heat = torch.tensor(occlusion_map(o.trainer.model, image, int(data.y_val[i]), 3,
                                          data.blank))
        r, c = divmod(int(heat.argmax()), heat.shape[1])
        hits += int(rows.min() - margin <= r <= rows.max() + margin and
                    cols.min() - margin <= c <= cols.max() + margin)
    return hits / min(examples, len(data.y_val))


def _unigram_loss(o) -> float | None:
    """The validation loss of a guess that knows only how often each class occurs in training:
    the baseline a sequence model must beat to have learned anything about order."""
    data = o.trainer.data
    if data.task != "classification":
        return None
    counts = torch.bincount(data.y_train.flatten(), minlength=data.classes).float() + 1
    log_p = (counts / counts.sum()).log()
    return float(-log_p[data.y_val.flatten()].mean())


def _known_words(o, temperature: float, chars: int = 400) -> float | None:
    """The share of the words a character model writes (after "the ") that occur in its text."""
    from ..data.texts import NETLAB_TEXT
    from ..lab.decode import generate
    if o.trainer.spec.data.name != "chars":
        return None
    known = set(NETLAB_TEXT.split())
    words = generate(o.trainer, "the ", chars, temperature, seed=0).split()[:-1]  # last: cut
    return sum(w in known for w in words) / max(len(words), 1)


def _half_acc(o, second: bool) -> float | None:
    """Validation accuracy on the first (or second) half of the steps of a task with an answer
    at every step (reversal: the first half depends on letters not yet read)."""
    data = o.trainer.data
    if data.y_val.dim() != 2 or data.task != "classification":
        return None
    right = o.trainer.predict(data.x_val).argmax(-1) == data.y_val
    half = data.y_val.shape[1] // 2
    return float((right[:, half:] if second else right[:, :half]).float().mean())


def _attention_on_mirror(o, examples: int = 20) -> float | None:
    """The mean attention an encoder-decoder pays, answering step t, to input step T-1-t (the
    letter a reversal needs), over the first validation sequences."""
    from ..lab.decode import attention_map
    maps = [attention_map(o.trainer, i) for i in range(min(examples, len(o.trainer.data.y_val)))]
    if not maps or maps[0] is None:
        return None
    steps = len(maps[0]["weights"])
    return sum(m["weights"][t][steps - 1 - t] for m in maps for t in range(steps)) / (
        len(maps) * steps)


def _receptive_field(o) -> int | None:
    """The receptive field of the last layer that still has positions (before a global pool
    or a dense layer), in input pixels."""
    from ..nn.model import describe
    from ..train.trainer import output_dim

    t = o.trainer
    rows = describe(t.spec, t.data.in_shape, output_dim(t.spec, t.data))["layers"]
    spatial = [r for r in rows if r.get("jump") is not None]
    return spatial[-1]["receptive_field"] if spatial else None


MEASURES = {
    "stopped": lambda o: o.stopped,
    "params": lambda o: count_params(o.trainer.model),
    "trainable_params": lambda o: sum(p.numel() for p in o.trainer.model.parameters()
                                      if p.requires_grad),
    "phase_val_acc": lambda o: _phase(o, "val_acc"),
    "phase_params": lambda o: _phase(o, "params"),
    "int8_ratio": lambda o: _int8(o)["ratio"],
    "int8_acc_drop": lambda o: _int8(o)["float_acc"] - _int8(o)["int8_acc"],
    "auc": lambda o: _report(o)["auc"],
    "macro_f1": lambda o: _report(o)["per_class"]["macro"]["f1"],
    "occlusion_on_shape": _occlusion_on_shape,
    "receptive_field": _receptive_field,
    "unigram_loss": _unigram_loss,
    "attention_on_mirror": _attention_on_mirror,
    "first_half_acc": lambda o: _half_acc(o, second=False),
    "second_half_acc": lambda o: _half_acc(o, second=True),
    "known_words_cool": lambda o: _known_words(o, 0.5),
    "known_words_hot": lambda o: _known_words(o, 1.5),
    "time_grad_ratio": lambda o: next(iter(time_ratios_of(o.rows).values()), None),
    "status": lambda o: o.rows[-1]["health"]["status"],
    "statuses": lambda o: sorted({r["health"]["status"] for r in o.rows}),
    "fixes": lambda o: sorted({f["label"] for r in o.rows for f in r["health"]["fixes"]}),
    "stable_lr": lambda o: _sharpness(o)["stable_lr"],
    "train_loss": lambda o: o.train["loss"],
    "train_acc": lambda o: o.train["acc"],
    "val_loss": lambda o: o.val["loss"],
    "val_acc": lambda o: o.val["acc"],
    "gap_loss": lambda o: o.val["loss"] - o.train["loss"],
    "gap_acc": lambda o: o.train["acc"] - o.val["acc"],
    "loss_drop": lambda o: 1 - o.train["loss"] / o.rows[0]["train_loss"],
    "grad_ratio_first": lambda o: _ratio(o.rows[0]),
    "grad_ratio_last": lambda o: _ratio(next((r for r in reversed(o.rows) if r.get("layers")),
                                             None)),
    "weight_norm": lambda o: sum(lay["weight_norm"] or 0 for lay in o.rows[-1]["layers"] or ()),
    "clip_frac_first": lambda o: next((r["clip_frac"] for r in o.rows if "clip_frac" in r), None),
    "clip_frac_last": lambda o: o.rows[-1].get("clip_frac"),
    "update_median": _median_update,
    "late_train_loss": lambda o: sum(_late(o)) / len(_late(o)),
    "late_train_loss_std": lambda o: _std(_late(o)),
    "boundary_length": _boundary_length,
    "best_val_step": lambda o: min((r for r in o.rows if r.get("val_loss") is not None),
                                   key=lambda r: r["val_loss"])["step"],
    "steps_after_best": lambda o: o.steps - o.restored_step if o.restored_step else None,
    "restored_step": lambda o: o.restored_step,
    "stop_step": lambda o: o.steps,
    "best_val_loss": lambda o: min(r["val_loss"] for r in o.rows if r.get("val_loss") is not None),
    "last_val_acc": lambda o: next(r["val_acc"] for r in reversed(o.rows)
                                   if r.get("val_acc") is not None),
    "last_val_loss": lambda o: next(r["val_loss"] for r in reversed(o.rows)
                                    if r.get("val_loss") is not None),
}

OPS = {"above": lambda v, b: v is not None and b is not None and v > b,
       "below": lambda v, b: v is not None and b is not None and v < b,
       "at_most": lambda v, b: v is not None and b is not None and v <= b,
       "at_least": lambda v, b: v is not None and b is not None and v >= b,
       "equals": lambda v, b: v == b,
       "differs": lambda v, b: v != b,                    # "status differs ok": not healthy
       "includes": lambda v, b: b in v,
       "excludes": lambda v, b: b not in v}


_RUNS: dict[str, Outcome] = {}  # canonical spec JSON (and nudge) -> its finished run
MAX_RUNS = 256
MARGIN_SPREADS = 1 / 3  # the worst seed's slack, in spreads (median - worst) it must reach


def outcome(name: str, seed: int, changes: str = "{}", nudge: bool = False) -> Outcome:
    """The preset `name` run on `seed` with `changes` (JSON of dotted keys), cached by the
    experiment itself: a variant one preset claims may be another preset's run (the adding
    problem's RNN, LSTM and GRU), trained once. `nudge`: its starting weights moved by one part
    in a million (callbacks.Nudge)."""
    from ..train.trainer import Trainer

    spec = ExperimentSpec.from_dict(load_preset(name)["config"]).with_changes(
        {**json.loads(changes), "seed": seed})
    key = spec.canonical().to_json(sort_keys=True) + ("+nudge" if nudge else "")
    if key not in _RUNS:
        if len(_RUNS) >= MAX_RUNS:
            _RUNS.pop(next(iter(_RUNS)))
        _RUNS[key] = Outcome(Trainer(spec, callbacks=[Nudge(seed=seed)] if nudge else []).run())
    return _RUNS[key]


def _bound(claim_value, name: str, seed: int, measure: str, nudge: bool):
    """A claim's bound: a number or status, or the same measure on a twin run."""
    if isinstance(claim_value, dict) and "twin" in claim_value:
        twin = json.dumps(claim_value["twin"], sort_keys=True)
        return outcome(name, seed, twin, nudge).measure(measure)
    if isinstance(claim_value, dict) and "preset" in claim_value:
        return outcome(claim_value["preset"], seed, nudge=nudge).measure(measure)
    if isinstance(claim_value, dict) and "of" in claim_value:  # another measure of this run
        return outcome(name, seed, nudge=nudge).measure(claim_value["of"])
    if isinstance(claim_value, dict) and "beside" in claim_value:  # what the page shows beside it
        changes = beside(name, seed)[claim_value["beside"]][1]
        return outcome(name, seed, json.dumps(changes, sort_keys=True), nudge).measure(measure)
    return claim_value


def beside(name: str, seed: int) -> list[tuple[str, dict]]:
    """(label, changes) of the variants the preset trains side by side by default."""
    from ..lab.compare import comparison_key, variant_changes
    preset = load_preset(name)
    spec = ExperimentSpec.from_dict(preset["config"]).with_changes({"seed": seed})
    data = outcome(name, seed).trainer.data
    return variant_changes(spec, comparison_key(preset.get("compare")), data)


def check(name: str, seed: int, nudge: bool = False) -> list[dict]:
    """Every claim of preset `name` on `seed`: {"claim", "value", "bound", "holds", "slack"}."""
    results = []
    for claim in load_preset(name)["expect"]:
        measure = claim["measure"]
        run = outcome(name, seed, json.dumps(claim.get("set", {}), sort_keys=True), nudge)
        value = run.measure(measure)
        op = operator(claim)
        bound = _bound(claim[op], name, seed, measure, nudge)
        if "factor" in claim and bound is not None:  # "ten times less than the twin's"
            bound = bound * claim["factor"]
        results.append({"claim": claim, "value": value, "bound": bound,
                        "holds": OPS[op](value, bound),
                        "slack": slack(op, value, bound, measure, "factor" in claim)})
    return results


def operator(claim: dict) -> str:
    (op,) = [k for k in claim if k in OPS]
    return op


# Measures that span orders of magnitude (a gradient ratio of 1e-6 or 1e-2): a lower bound on
# one is a factor ("at least a hundredth"), so its slack is taken in natural-log units, and ten
# times above the bound counts the same at any scale. An upper bound on one ("under a tenth")
# is judged in plain units: the seeds that keep it sit near zero, where logs would make a
# ratio of 1e-9 look a world away from one of 1e-7.
ORDERED = ("above", "below", "at_least", "at_most")  # the operators a slack is measured for
LOG_MEASURES = ("grad_ratio_first", "grad_ratio_last", "grad_ratio", "time_grad_ratio",
                "update_median")


def slack(op: str, value, bound, measure: str = "", factor: bool = False) -> float | None:
    """How far a numeric claim holds: the value's distance to the bound on the claim's side
    (negative: it fails), as a log ratio for a lower bound on LOG_MEASURES and for a claim with
    a factor ("under half the twin's" is a ratio whatever the loss's scale on that seed); None
    for statuses, fixes and exact equalities."""
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, bound))
    if not numeric or op not in ORDERED:
        return None
    if not all(math.isfinite(x) for x in (value, bound)):  # a diverged run's loss: no distance
        return None if OPS[op](value, bound) else -math.inf
    if factor or (measure.split("@")[0] in LOG_MEASURES and op in ("above", "at_least")):
        if value <= 0 or bound <= 0:  # a ratio of exactly 0: no log, only a side
            return None if value == bound else (math.inf if OPS[op](value, bound) else -math.inf)
        value, bound = math.log(value), math.log(bound)
    return value - bound if op in ("above", "at_least") else bound - value


def margin(per_seed: list[dict], nudged: dict | None = None) -> dict:
    """One claim's results over seeds (check()'s entries, one per seed) and on a nudged run of
    the first of those seeds: the worst and the median slack, the seed-to-seed spread below the
    median (median - worst), the worst in those spreads, how far the nudge moved the slack,
    and whether the claim holds with margin (see the module's doc)."""
    holds = all(r["holds"] for r in per_seed) and (nudged is None or nudged["holds"])
    slacks = [r["slack"] for r in per_seed]
    out = {"seeds": len(per_seed), "held": sum(r["holds"] for r in per_seed),
           "nudge_holds": None if nudged is None else nudged["holds"]}
    if any(x is None for x in slacks) or not slacks:
        return {**out, "with_margin": holds}
    ordered = sorted(slacks)
    worst, median = ordered[0], ordered[len(ordered) // 2]
    if worst == math.inf:  # a ratio of exactly 0 below any bound, on every seed
        return {**out, "worst": worst, "median": median, "with_margin": holds}
    spread = median - worst
    out.update(worst=worst, median=median, spread=spread,
               spreads=worst / spread if 0 < spread < math.inf else None,
               nudge_shift=None if nudged is None or nudged["slack"] is None
               else nudged["slack"] - slacks[0],
               with_margin=holds and worst > 0 and worst >= MARGIN_SPREADS * spread)
    return out


# Presets whose claims train the same runs (the adding problem's RNN, LSTM and GRU) are checked
# together: outcome() caches a run by its experiment, so each is trained once per seed.
TOGETHER = (("rnn_adding_vanishes", "lstm_gru_adding"),)


def groups() -> list[tuple[str, ...]]:
    """Every preset once, those that share runs in one group."""
    from . import preset_names
    return list(TOGETHER) + [(n,) for n in preset_names() if not any(n in g for g in TOGETHER)]
