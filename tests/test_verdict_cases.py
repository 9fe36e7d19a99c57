"""The sick runs a sceptical teacher found the verdict wrong on (issue 29), each on three seeds:
the verdict names what is wrong, never calls a failure healthy, and every fix it offers helps.
Oracles: a constant guess's loss (ln(classes), or the target's variance for a regression) and
the run's own best validation loss, not the health check's reasoning."""
import math

import pytest

from engine import ExperimentSpec, Trainer
from engine.presets import load_preset
from engine.train.evidence import GUESS, STILL_HIGH, net_facts

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
# name -> (preset, changes)
CASES = {
    "cnn with biases at -3": ("cnn_digits", {"model.bias_init": -3.0}),
    # the clipping preset as the issue measured it (it now trains for 600 steps)
    "tanh rnn, gain 3, unclipped": ("rnn_exploding_clipped", {"training.steps": 300}),
    "tanh rnn, gain 4": ("rnn_exploding_clipped",
                         {"model.init": {"name": "orthogonal", "gain": 4.0},
                          "training.steps": 300}),
    "adding problem, tbptt 10": ("rnn_adding_vanishes", {"training.tbptt": 10}),
    "cnn on 120 digits": ("cnn_digits", {"data.n": 120}),
    "character model": ("char_model_writes", {}),
    "adam at 0.5 on the spiral": ("spiral_one_hidden",
                                  {"optimizer": {"name": "adam", "lr": 0.5}}),
}
_RUNS: dict[str, Trainer] = {}


def spec_of(name: str, seed: int) -> ExperimentSpec:
    preset, changes = CASES[name]
    return ExperimentSpec.from_dict(load_preset(preset)["config"]).with_changes(
        {**changes, "seed": seed})


def run(spec: ExperimentSpec) -> Trainer:
    key = spec.canonical().to_json(sort_keys=True)
    if key not in _RUNS:
        _RUNS[key] = Trainer(spec).run()
    return _RUNS[key]


def guess_loss(t: Trainer) -> float:
    return net_facts(t.spec, t.model, t.data).chance_loss


def honest(t: Trainer) -> None:
    """What any verdict must respect. A run past its first 200 steps that does no better than a
    constant guess on validation (and is not memorising its training data) is not ok, once two
    logged rows in a row show it (a finding needs evidence that persists). A run whose
    validation loss ends far above its best is not ok at its end: 50% above, judged on medians
    of three evaluations in a row (the lowest single pass of a long run is a lucky draw)."""
    chance = guess_loss(t)
    val, in_a_row = None, 0
    for r in t.history.rows:
        val = r["val_loss"] if r.get("val_loss") is not None else val
        at_guess = r["step"] >= 200 and val is not None and val >= GUESS * chance and \
            (r.get("train_loss") or 0) >= STILL_HIGH * chance and (r.get("train_acc") or 0) < 0.99
        in_a_row = in_a_row + 1 if at_guess else 0
        if in_a_row >= 2:
            assert r["health"]["status"] != "ok", (r["step"], val, chance)
    vals = [r["val_loss"] for r in t.history.rows if r.get("val_loss") is not None]
    medians = [sorted(vals[i:i + 3])[1] for i in range(len(vals) - 2)]
    if medians and medians[-1] >= 1.5 * min(medians):
        assert t.history.last["health"]["status"] != "ok", (medians[-1], min(medians))


def offered(t: Trainer) -> dict[str, dict]:
    out = {}
    for r in t.history.rows:
        for f in r["health"]["fixes"]:
            out.setdefault(f["label"], f)
    return out


def helps(before: Trainer, after: Trainer, status: str) -> bool:
    """The status it was offered for is gone (and the loss no worse), or the loss it targets
    fell by 10% (the validation loss by 5% for overfitting), and nothing diverged."""
    if after.stopped == "diverged":
        return False
    gone = status not in {r["health"]["status"] for r in after.history.rows}
    split, gain = ("val", 0.95) if status == "overfitting" else ("train", 0.9)
    b, a = before.evaluate(split)["loss"], after.evaluate(split)["loss"]
    return math.isfinite(a) and (gone and a <= 1.05 * b or a < gain * b)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(CASES))
def test_the_verdict_is_honest_and_every_fix_helps(name, seed):
    spec = spec_of(name, seed)
    t = run(spec)
    honest(t)
    for label, f in offered(t).items():
        after = run(spec.with_changes(f["changes"]))
        assert helps(t, after, f["for"]), (name, seed, label, f["for"],
                                           t.evaluate("train"), after.evaluate("train"))
        honest(after)


@pytest.mark.parametrize("seed", SEEDS)
def test_adam_at_a_rate_far_too_large_is_told_to_lower_it(seed):
    """Measured: Adam at 0.5 on the spiral ends 'dead' or jumps about on every seed; the cause
    is the rate, so a lower rate is offered and leaky ReLU (which took the validation loss from
    1.1 to 6.8 on another CPU) is not, once the run has shown it overshoots."""
    t = run(spec_of("adam at 0.5 on the spiral", seed))
    statuses = [r["health"]["status"] for r in t.history.rows]
    assert "unstable" in statuses
    labels = {f["label"] for f in t.history.last["health"]["fixes"]}
    if t.history.last["health"]["status"] != "ok":
        assert any(x.startswith("Lower LR") for x in labels) and \
            "Switch to leaky ReLU" not in labels, labels


@pytest.mark.parametrize("seed", SEEDS)
def test_the_character_model_that_overfits_is_called_so(seed):
    t = run(spec_of("character model", seed))
    assert t.history.last["health"]["status"] == "overfitting"
    assert "L2 penalty 0.001" in {f["label"] for f in t.history.last["health"]["fixes"]}
