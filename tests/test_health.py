"""The health verdict: each threshold pinned on synthetic evidence, then a verdict matrix on
real runs (healthy nets end ok, each sick case the issue names gets its status, over seeds),
with closed forms as the oracle where one exists (the stability limit of gradient descent)."""
import math
import re

import pytest
import torch

from engine import ExperimentSpec, Trainer
from engine.presets import load_preset
from engine.train import evidence as E
from engine.train import fixes as FX
from engine.train import health as H
from engine.train.evidence import Evidence, Net
from engine.train.fixes import usable_fixes, without_undo
from engine.train.health import assess

SPEC = ExperimentSpec.from_dict({"model": {"layers": [8, 8, 8]}})


def net(**kw) -> Net:
    base = dict(hidden=["fc1", "fc2", "fc3"], activations={"relu"}, suited_init="he_normal",
                init="he_normal", bias_init=0.0, has_norm=False, depth=3,
                normalize="standard", input_rms=1.0, chance_loss=math.log(3),
                noise_floor=None, adaptive=False)
    return Net(**{**base, **kw})


def layer(name, **stats):
    base = {"name": name, "act_grad_norm": 1.0, "update_ratio": 1e-3, "dead_frac": None,
            "saturated_frac": None}
    return {**base, **stats}


def row(*layers, step=10, signs=(), **metrics):
    r = {"step": step, "train_loss": 0.5, "train_acc": 0.8, "val_loss": None, **metrics,
         "layers": list(layers) + [layer("out")]}
    r["health"] = {"status": "ok", "signs": list(signs)}
    return r


def verdict(r, rows=(), spec=SPEC, facts=None, **kw):
    return assess(Evidence(row=r, rows=list(rows), spec=spec, net=facts or net(), **kw))


def persisted(status, n, make, **kw):
    """The verdict on a row after n-1 earlier rows that showed the same sign."""
    earlier = [{**make(), "step": 10 * (i + 1), "health": {"signs": [status]}} for i in range(n - 1)]
    return verdict({**make(), "step": 10 * n}, earlier, **kw)


# ----------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("status", ["vanishing", "dead", "saturated", "exploding"])
def test_a_sign_becomes_a_finding_only_once_it_persists(status):
    make = {"vanishing": lambda: row(layer("fc1", act_grad_norm=1e-6), layer("fc2")),
            "exploding": lambda: row(layer("fc1", act_grad_norm=1e6), layer("fc2")),
            "dead": lambda: row(layer("fc1", dead_frac=0.95), layer("fc2"), train_loss=1.1,
                                train_acc=0.34, step=50),
            "saturated": lambda: row(layer("fc1", saturated_frac=0.9), layer("fc2"),
                                     train_loss=1.1, train_acc=0.34, step=50)}[status]
    need = E.PERSIST[status]
    once = verdict(make())
    assert once["status"] == "ok" and status in once["signs"]
    assert persisted(status, need - 1, make)["status"] == "ok"
    assert persisted(status, need, make)["status"] == status


# ----------------------------------------------------------------------------- thresholds

def vanishing(ratio):
    return lambda: row(layer("fc1", act_grad_norm=ratio), layer("fc2"), layer("fc3"))


@pytest.mark.parametrize("ratio, expected", [
    (E.VANISHING_RATIO * 0.9, "vanishing"), (E.VANISHING_RATIO * 1.1, "ok"),
    (E.EXPLODING_RATIO * 1.1, "exploding"), (E.EXPLODING_RATIO * 0.9, "ok")])
def test_gradient_ratio_thresholds(ratio, expected):
    assert persisted(expected, 3, vanishing(ratio))["status"] == expected


def test_vanishing_names_the_cause_that_applies():
    sigmoid = persisted("vanishing", 3, vanishing(1e-6),
                        spec=SPEC.with_changes({"model.activation": "sigmoid",
                                                "model.init": "xavier_uniform"}),
                        facts=net(activations={"sigmoid"}, suited_init="xavier_uniform",
                                  init="xavier_uniform"))
    assert "sigmoid" in sigmoid["messages"][0]
    assert [f["label"] for f in sigmoid["fixes"]][:2] == ["Switch to ReLU + He init",
                                                          "Add BatchNorm layers"]
    relu_xavier = persisted("vanishing", 3, vanishing(1e-6),
                            spec=SPEC.with_changes({"model.init": "xavier_normal"}),
                            facts=net(init="xavier_normal"))
    text = relu_xavier["messages"][0]
    assert "sigmoid" not in text and "xavier_normal" in text and "halves" in text
    assert relu_xavier["fixes"][0]["label"] == "Use He init"
    relu_he = persisted("vanishing", 3, vanishing(1e-6))  # already ReLU + He: no such fix
    assert all("He" not in f["label"] for f in relu_he["fixes"])


def test_update_ratio_threshold():
    make = lambda r: lambda: row(layer("fc1", update_ratio=r), layer("fc2"))  # noqa: E731
    assert persisted("exploding", 2, make(E.EXPLODING_UPDATE * 1.5))["status"] == "exploding"
    assert persisted("exploding", 2, make(E.EXPLODING_UPDATE * 0.5))["status"] == "ok"


@pytest.mark.parametrize("frac, loss, acc, expected", [
    (E.DEAD_FRAC, 1.1, 0.34, "dead"),          # silent and no better than a guess
    (E.DEAD_FRAC - 0.01, 1.1, 0.34, "ok"),     # under the threshold
    (0.8, 0.1, E.FITS_ACC, "ok"),              # silent units on a net that fits its data
])
def test_dead_units_count_only_when_they_hold_learning_back(frac, loss, acc, expected):
    make = lambda: row(layer("fc1", dead_frac=frac), layer("fc2"), step=50,  # noqa: E731
                       train_loss=loss, train_acc=acc)
    assert persisted("dead", 3, make)["status"] == expected


def test_dead_is_judged_on_the_probe_not_the_batch():
    make = lambda: row(layer("fc1", dead_frac=0.66), layer("fc2"), step=50,  # noqa: E731
                       train_loss=1.1, train_acc=0.34)
    assert persisted("dead", 3, make)["status"] == "dead"
    on_data = persisted("dead", 3, make, probe={"fc1": {"dead_frac": 0.38}})
    assert on_data["status"] == "ok"


def test_dead_message_and_fixes_name_the_bias_and_never_say_never():
    spec = SPEC.with_changes({"model.bias_init": -3.0})
    make = lambda: row(layer("fc1", dead_frac=0.95), layer("fc2"), step=50,  # noqa: E731
                       train_loss=1.1, train_acc=0.34)
    h = persisted("dead", 3, make, spec=spec, facts=net(bias_init=-3.0))
    assert h["status"] == "dead" and "-3" in h["messages"][0]
    assert "never" not in h["messages"][0]
    assert [f["label"] for f in h["fixes"]][:2] == ["Bias init 0", "Switch to leaky ReLU"]


@pytest.mark.parametrize("frac, expected", [(E.SATURATED_FRAC, "saturated"),
                                            (E.SATURATED_FRAC - 0.01, "ok")])
def test_saturated_threshold(frac, expected):
    make = lambda: row(layer("fc1", saturated_frac=frac), layer("fc2"), step=50,  # noqa: E731
                       train_loss=1.1, train_acc=0.34)
    spec = SPEC.with_changes({"model.activation": "tanh", "model.init": "xavier_uniform"})
    h = persisted("saturated", 3, make, spec=spec,
                  facts=net(activations={"tanh"}, init="xavier_uniform",
                            suited_init="xavier_uniform"))
    assert h["status"] == expected
    if expected == "saturated":  # Xavier is in place: not offered again
        assert all("Xavier" not in f["label"] for f in h["fixes"])


def test_a_saturated_net_that_fits_its_data_is_ok():
    make = lambda: row(layer("fc1", saturated_frac=0.9), layer("fc2"), step=50,  # noqa: E731
                       train_loss=0.05, train_acc=0.99)
    assert persisted("saturated", 3, make)["status"] == "ok"


def loss_rows(losses, every=10, acc=0.6, **kw):
    return [row(layer("fc1"), layer("fc2"), step=(i + 1) * every, train_loss=v, train_acc=acc,
                **kw) for i, v in enumerate(losses)]


def judged(rows, signs=(), **kw):
    """The verdict on the last row, the earlier ones having shown `signs` (persistence)."""
    for r in rows[:-1]:
        r["health"] = {"signs": list(signs)}
    return verdict(rows[-1], rows[:-1], first_loss=rows[0]["train_loss"], **kw)


def test_diverging_needs_a_steady_climb():
    climb = loss_rows([0.6 * 1.2 ** i for i in range(E.DIVERGING_ROWS)])
    assert judged(climb)["status"] == "diverging"
    assert judged(climb)["fixes"][0]["label"].startswith("Lower LR 10x")
    noisy = loss_rows([0.6, 0.9, 0.8, 1.0, 1.1, 1.4])  # one dip: noise, not divergence
    assert judged(noisy)["status"] == "ok"
    tiny = loss_rows([1e-4 * 1.3 ** i for i in range(E.DIVERGING_ROWS)])  # harms nothing
    assert judged(tiny)["status"] == "ok"


def flat(start, end, steps=E.WINDOW + 50, every=10, **kw):
    n = steps // every
    return loss_rows([start + (end - start) * i / (n - 1) for i in range(n)], every, **kw)


FLAT = ("plateau", "underfitting", "too_slow")
GUESS = math.log(3)  # a constant guess's loss on three classes


def test_a_plateau_is_a_flat_loss_no_better_than_a_guess():
    assert judged(flat(GUESS, GUESS * (1 - E.FLAT_GAIN * 0.3)), FLAT)["status"] == "plateau"
    # a row no better than a guess past the first window is never ok: not learning, until
    # the plateau has persisted and says so with its own advice
    assert judged(flat(GUESS, GUESS))["status"] == "not_learning"
    assert judged(flat(GUESS, 0.8 * GUESS), FLAT)["status"] == "ok"  # falling
    # rising is not flat, but a loss above a guess's past the first window is not learning
    assert judged(flat(GUESS, 1.2 * GUESS), FLAT)["status"] == "not_learning"
    assert judged(flat(GUESS, GUESS, steps=E.WINDOW - 20), FLAT)["status"] == "ok"  # too young
    assert judged(flat(0.01, 0.01, acc=E.CONVERGED_ACC), FLAT)["status"] == "ok"  # finished
    # flat well below a guess: converged on noisy, overlapping classes, not stuck
    assert judged(flat(0.6, 0.6), FLAT)["status"] == "ok"
    adam = judged(flat(GUESS, GUESS), FLAT, facts=net(adaptive=True))
    assert adam["status"] == "plateau" and "Adam" not in adam["messages"][0] and not adam["fixes"]


def test_underfitting_is_a_linear_model_stuck_short_of_non_linear_data():
    linear = net(hidden=[], activations=set(), depth=0)
    spec = SPEC.with_changes({"model.layers": []})
    h = judged(flat(0.75, 0.75), FLAT, spec=spec, facts=linear)
    assert h["status"] == "underfitting"
    assert [f["label"] for f in h["fixes"]] == ["Add a hidden layer of 64 relu units"]
    assert judged(flat(0.75, 0.75), FLAT, spec=spec,
                  facts=net(hidden=[], activations=set(), linear_data=True))["status"] == "ok"
    assert judged(flat(0.75, 0.75), FLAT)["status"] == "ok"  # a non-linear net: not this


def test_too_slow_needs_tiny_steps_and_a_loss_still_falling_slowly():
    def slow(end, ratio, start=1.0):
        rows = flat(start, end)
        for r in rows:
            for lay in r["layers"]:
                lay["update_ratio"] = ratio
        return rows
    h = judged(slow(0.95, E.SLOW_UPDATE / 10), FLAT)
    assert h["status"] == "too_slow" and h["fixes"][0]["label"].startswith("Raise LR 10x")
    assert judged(slow(0.95, E.SLOW_UPDATE * 2), FLAT)["status"] == "ok"   # normal steps
    assert judged(slow(0.95, 0.0), FLAT)["status"] == "ok"                # nothing moves at all
    converged = judged(slow(0.4998, E.SLOW_UPDATE / 10, 0.5))  # flat, no earlier evidence
    assert "too_slow" not in converged["signs"]
    annealed = slow(0.95, E.SLOW_UPDATE / 10)
    for r in annealed:
        r["lr"] = SPEC.optimizer.params["lr"] * 0.1  # a schedule took the rate down
    assert judged(annealed, FLAT)["status"] == "ok"


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "one_cycle"])
def test_an_annealing_schedule_is_not_called_too_slow(schedule):
    """Measured before the fix: spiral, SGD with momentum 0.1, 1000 steps: the cosine and
    one-cycle runs ended 'too_slow' with the fix 'Raise LR' (seeds 0, 1, 4)."""
    config = {"data": {"name": "spiral"}, "schedule": schedule,
              "model": {"layers": [16, 16], "activation": "tanh"},
              "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
              "training": {"steps": 1000}}
    assert "too_slow" not in statuses(train(config))


def test_a_regression_at_its_noise_floor_is_healthy():
    floor = net(noise_floor=0.01, chance_loss=1.0)
    assert judged(flat(0.0105, 0.0105, acc=None), FLAT, facts=floor)["status"] == "ok"
    assert judged(flat(0.95, 0.95, acc=None), FLAT, facts=floor)["status"] == "plateau"


def test_trends_are_judged_when_rows_are_sparse():
    rows = flat(GUESS, GUESS, steps=1000, every=100)
    assert judged(rows, FLAT, every=100)["status"] == "plateau"


def evals(vals, trains, accs=None, val_accs=None):
    rows = []
    for i, (v, t) in enumerate(zip(vals, trains)):
        r = row(layer("fc1"), layer("fc2"), step=(i + 1) * 10, train_loss=t, val_loss=v,
                train_acc=accs[i] if accs else 1.0, val_acc=val_accs[i] if val_accs else 0.7)
        rows.append(r)
    return rows


def best_of(rows):
    return min((r for r in rows if r.get("val_loss") is not None), key=lambda r: r["val_loss"])


def overfit(rows):
    """The verdict on the last row with the evaluated rows before it as HealthCheck keeps them."""
    earlier = rows[:-1]
    return verdict(rows[-1], earlier, best=best_of(earlier),
                   evals=[r for r in earlier if r.get("val_loss") is not None][-E.OVERFIT_EVALS:])


def test_overfitting_needs_a_rising_validation_loss_a_falling_train_loss_and_a_gap():
    vals, trains = [1.0, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1], [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]
    h = overfit(evals(vals, trains))
    assert h["status"] == "overfitting" and "step 20" in h["messages"][0]
    assert overfit(evals(vals[:-1], trains[:-1]))["status"] == "ok"  # 4 evaluations: too few
    assert [f["label"] for f in h["fixes"]] == ["Early stopping", "L2 penalty 0.01",
                                                "More data (n 2400)"]
    # validation within OVERFIT_RISE of its best: noise
    assert overfit(evals([1.0, 0.5, 0.51, 0.52, 0.52, 0.51, 0.52], trains))["status"] == "ok"
    # an unlucky pass now and then moves no median
    assert overfit(evals([1.0, 0.5, 0.51, 0.9, 0.51, 0.52, 0.9], trains))["status"] == "ok"
    # a rise of 14% (the character model's 2.08 -> 2.38) is overfitting
    assert overfit(evals([3.4, 2.4, 2.08, 2.11, 2.16, 2.25, 2.31, 2.38],
                         [3.4, 2.6, 1.7, 1.5, 1.3, 1.1, 0.98, 0.87]))["status"] == "overfitting"
    # the train loss rose too: not overfitting
    assert overfit(evals(vals, [1.0, 0.5, 0.6, 0.55, 0.65, 0.6, 0.7]))["status"] == "ok"
    # the train loss jumped up (3x) with validation's: unstable, not overfitting
    assert overfit(evals(vals, [1.0, 0.5, 0.3, 0.95, 0.1, 0.05, 0.02]))["status"] == "ok"
    # a gap of under OVERFIT_GAP accuracy: a healthy net's validation noise
    assert overfit(evals(vals, trains, accs=[0.95] * 7, val_accs=[0.93] * 7))["status"] == "ok"


def test_the_best_is_a_median_of_evaluations_in_a_row():
    rows = evals([1.0, 0.3, 0.9, 0.8, 0.7], [1.0, 0.5, 0.4, 0.3, 0.2])
    assert E.smoothed(rows[:3])["val_loss"] == 0.9 and E.smoothed(rows[:3])["step"] == 20
    assert E.smoothed(rows[-3:])["val_loss"] == 0.8
    assert E.smoothed(rows[-3:])["acc_gap"] == pytest.approx(0.3)


def test_a_row_without_a_validation_pass_keeps_the_overfitting_verdict():
    rows = evals([1.0, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1], [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02])
    unevaluated = row(layer("fc1"), layer("fc2"), step=80, train_loss=0.01, train_acc=1.0)
    h = verdict(unevaluated, rows, best=best_of(rows), evals=rows[-E.OVERFIT_EVALS:])
    assert h["status"] == "overfitting"


def test_unscaled_inputs_need_large_features_and_large_pre_activations():
    facts = net(normalize="none", input_rms=12.0)
    spec = SPEC.with_changes({"data.normalize": "none"})
    make = lambda: row(layer("fc1"), layer("fc2"))  # noqa: E731
    h = persisted("unscaled_inputs", 2, make, spec=spec, facts=facts, preact_rms=40.0)
    assert h["status"] == "unscaled_inputs"
    assert [f["label"] for f in h["fixes"]] == ["Standardise the inputs"]
    assert persisted("unscaled_inputs", 2, make, spec=spec, facts=facts,
                     preact_rms=E.PREACT_RMS * 0.9)["status"] == "ok"


def test_symmetric_layers_are_found_exactly():
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(3, 4))
    model.add_module("fc2", torch.nn.Linear(4, 4))
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc2.weight.normal_()
    assert H.symmetric_layers(model, ["fc1", "fc2"]) == ["fc1"]
    with torch.no_grad():
        model.fc1.weight.fill_(0.1)
    assert H.symmetric_layers(model, ["fc1", "fc2"]) == ["fc1"]


def test_priority_puts_divergence_first_and_masks_what_it_explains():
    r = row(layer("fc1", act_grad_norm=1e-9, dead_frac=0.95), layer("fc2"), step=50,
            train_loss=1.1, train_acc=0.3)
    h = verdict(r, divergence={"step": 5, "loss": "NaN"})
    assert h["status"] == "diverged" and len(h["messages"]) == 1
    assert list(H.STATUSES) == list(H.PRIORITY) == list(H.CHECKS)


# ----------------------------------------------------------------------------- fixes

def test_fixes_that_change_nothing_or_pull_the_other_way_are_dropped():
    lower, higher = FX.lower_lr(SPEC), FX.raise_lr(SPEC)
    same = FX.fix("Use ReLU", {"model.activation": "relu"})  # the default already
    assert [f["label"] for f in usable_fixes(SPEC, [lower, same, higher])] == [lower["label"]]
    leaky = FX.fix("Leaky", {"model.activation": "leaky_relu"})
    relu_he = FX.fix("ReLU+He", {"model.activation": "relu", "model.init": "he_normal"})
    assert usable_fixes(SPEC.with_changes({"model.activation": "tanh"}), [leaky, relu_he]) == [leaky]


def test_a_fix_is_never_undone_by_the_next_one():
    before = SPEC.with_changes({"model.activation": "relu", "model.init": "xavier_normal"})
    after = before.with_changes({"model.activation": "leaky_relu"})
    offered = [FX.fix("Switch to ReLU + He init", {"model.activation": "relu",
                                                  "model.init": "he_normal"}),
               FX.use_init(after, "he_normal")]
    assert [f["label"] for f in without_undo(offered, before, after)] == ["Use He init"]
    assert without_undo(offered, None, after) == offered


# ----------------------------------------------------------------------------- real runs


def train(config, seed=0, steps=None):
    spec = ExperimentSpec.from_dict(config).with_changes({"seed": seed})
    if steps:
        spec = spec.with_changes({"training.steps": steps})
    return Trainer(spec).run()


def statuses(trainer):
    return [r["health"]["status"] for r in trainer.history.rows]


HEALTHY = {
    "tanh 2x64": {"model": {"activation": "tanh", "init": "xavier_uniform", "layers": [64, 64]},
                  "optimizer": {"name": "adam", "lr": 0.01}, "training": {"steps": 1000}},
    "sigmoid 1x32 on moons": {"data": {"name": "moons"},
                              "model": {"activation": "sigmoid", "init": "xavier_uniform",
                                        "layers": [32]},
                              "optimizer": {"name": "adam", "lr": 0.03},
                              "training": {"steps": 600}},
    "relu 2x64": {"model": {"layers": [64, 64]}, "optimizer": {"name": "adam", "lr": 0.01},
                  "training": {"steps": 800}},
    "regression at its noise floor": {
        "data": {"name": "multi_gaussian", "noise": 0.1}, "loss": "mse",
        "model": {"layers": [64, 64]}, "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"steps": 1500}},
    "xor_tanh": load_preset("xor_tanh")["config"],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(HEALTHY))
@pytest.mark.slow
def test_healthy_nets_end_ok_with_no_unit_alarm(name, seed):
    t = train(HEALTHY[name], seed)
    seen = statuses(t)
    assert seen[-1] == "ok", (t.history.last["health"]["messages"], t.evaluate("val"))
    assert not {"dead", "saturated", "vanishing", "exploding", "diverging"} & set(seen), seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_deep_he_relu_net_is_not_called_dead_for_its_quiet_start(seed):
    t = train(load_preset("deep_relu_he")["config"], seed, steps=60)
    assert "dead" not in statuses(t)
    first = t.history.rows[0]["layers"]
    assert max(lay["dead_frac"] or 0 for lay in first) > 0.3  # the batch does look quiet


def full_batch_gd(factor: float, seed: int):
    """Linear regression trained by full-batch gradient descent at `factor` times its
    stability limit 2/L, L the largest eigenvalue of the MSE loss's Hessian (closed form:
    2/n [X 1]^T [X 1] on the standardised training inputs)."""
    config = {"data": {"name": "plane", "n": 400, "noise": 0.05}, "loss": "mse",
              "model": {"layers": []}, "training": {"steps": 400, "batch_size": 320},
              "optimizer": {"name": "sgd", "lr": 0.1}, "seed": seed}
    probe = Trainer(ExperimentSpec.from_dict(config))
    x = probe.data.x_train
    a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    sharpness = float(torch.linalg.eigvalsh(2 * a.T @ a / len(x)).max())
    config["optimizer"]["lr"] = factor * 2 / sharpness
    return Trainer(ExperimentSpec.from_dict(config)).run()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_descent_past_its_stability_limit_is_diverging_before_nan(seed):
    over = full_batch_gd(1.01, seed)
    losses = [r["train_loss"] for r in over.history.rows]
    assert over.stopped == "completed" and losses[-1] > 100 * min(losses)  # no NaN yet
    assert over.history.last["health"]["status"] == "diverging"
    under = full_batch_gd(0.9, seed)
    assert "diverging" not in statuses(under)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raw_digit_pixels_are_unscaled_inputs_even_after_the_leaky_relu_fix(seed):
    config = load_preset("digits_raw_inputs")["config"]
    t = train({**config, "model": {**config["model"], "activation": "leaky_relu"}}, seed)
    last = t.history.last["health"]
    assert last["status"] == "unscaled_inputs", (t.history.last["train_loss"], last["messages"])
    assert last["fixes"][0]["label"] == "Standardise the inputs"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spiral_linear_is_underfitting_and_offered_a_hidden_layer(seed):
    t = train(load_preset("spiral_linear")["config"], seed)
    h = t.history.last["health"]
    assert h["status"] == "underfitting"
    labels = [f["label"] for f in h["fixes"]]
    assert labels[0].startswith("Add a hidden layer") and not any(
        "Adam" in x or "Raise LR" in x for x in labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_init_is_symmetric_and_offered_a_random_init(seed):
    t = train(load_preset("zero_init_symmetry")["config"], seed)
    h = t.history.last["health"]
    assert h["status"] == "symmetric" and h["fixes"][0]["label"] == "Use He init"


def test_a_huge_first_loss_is_blamed_on_the_init():
    t = train(load_preset("exploding_large_init")["config"])
    h = t.history.last["health"]
    assert h["status"] == "diverged" and "initial weights" in h["messages"][0]
    assert h["fixes"][0]["label"] == "Use He init"


def test_lower_lr_on_lr_too_high_does_not_offer_what_is_in_place():
    t = train(load_preset("lr_too_high")["config"])
    fix = next(f for f in t.history.last["health"]["fixes"] if f["label"].startswith("Lower"))
    fixed = train(ExperimentSpec.from_dict(load_preset("lr_too_high")["config"])
                  .with_changes(fix["changes"]).to_dict())
    for r in fixed.history.rows:
        for f in r["health"]["fixes"]:
            changed = fixed.spec.with_changes(f["changes"]).to_dict()
            assert changed != fixed.spec.to_dict(), f


# ----------------------------------------------------------------------------- review cases

HUGE_INIT = {"model": {"init": {"name": "normal", "std": 10.0}, "layers": [256] * 16},
             "training": {"steps": 300}}


def test_a_nan_before_any_update_blames_the_start_not_the_step_size():
    t = train(HUGE_INIT)
    h = t.history.last["health"]
    assert t.stopped == "diverged" and t.divergence["step"] == 1
    assert "before any update" in h["messages"][0]
    assert [f["label"] for f in h["fixes"]] == ["Use He init"]


@pytest.mark.slow
def test_a_huge_loss_kept_finite_by_clipping_is_exploding_not_slow():
    t = train({**HUGE_INIT, "training": {"steps": 300, "grad_clip": 1.0}})
    seen = statuses(t)
    assert t.stopped == "completed" and seen[-1] == "exploding", seen
    assert "too_slow" not in seen and t.history.last["health"]["fixes"][0]["label"] == "Use He init"


@pytest.mark.parametrize("eval_every", [50, 150])
@pytest.mark.slow
def test_overfitting_holds_however_rarely_validation_runs(eval_every):
    config = load_preset("overfitting_small_data")["config"]
    t = train({**config, "training": {**config["training"], "eval_every": eval_every},
               "diagnostics": {"every": 1 if eval_every == 150 else 10}})
    seen = statuses(t)
    assert seen[-1] == "overfitting"
    first = seen.index("overfitting")
    assert set(seen[first:]) == {"overfitting"}, "the verdict must not flicker between passes"


@pytest.mark.parametrize("config", [
    {"data": {"name": "gaussians", "noise": 0.6}, "model": {"layers": []},
     "optimizer": {"name": "adam", "lr": 0.01}, "training": {"steps": 1500}},
    {"data": {"name": "moons", "noise": 0.3}, "model": {"layers": [6]},
     "optimizer": {"name": "adam", "lr": 0.01}, "training": {"steps": 1500}},
    {"data": {"name": "gaussians", "noise": 0.6}, "model": {"layers": [32]},
     "optimizer": {"name": "adam", "lr": 3e-4}, "training": {"steps": 3000}},
    {"data": {"name": "plane", "noise": 0.0}, "loss": "mse",
     "model": {"activation": "tanh", "init": "xavier_uniform", "layers": [4]},
     "optimizer": {"name": "adam", "lr": 0.01}, "training": {"steps": 1500}},
], ids=["linear on overlapping blobs", "narrow net on noisy moons", "adam 3e-4 converged",
        "noise-free regression"])
@pytest.mark.slow
def test_no_capacity_or_speed_alarm_on_nets_that_have_converged(config):
    seen = set(statuses(train(config)))
    assert not seen & {"underfitting", "too_slow", "plateau"}, seen


def test_sparse_logging_still_judges_a_slow_run():
    config = load_preset("lr_too_low")["config"]
    t = train({**config, "diagnostics": {"every": 100}})
    assert statuses(t)[-1] == "too_slow"


def test_the_clip_fix_never_loosens_a_clip_in_place():
    assert FX.clip_gradients(SPEC)["changes"] == {"training.grad_clip": 1.0}
    assert FX.clip_gradients(SPEC.with_changes({"training.grad_clip": 0.1})) is None
    assert FX.clip_gradients(SPEC.with_changes({"training.grad_clip": {"value": 0.01}})) is None
    assert FX.clip_gradients(SPEC.with_changes({"training.grad_clip": 5.0})) is not None


def _helps(spec, fix, status):
    """The fix removes the status or lowers the final train loss by 10%."""
    before = Trainer(spec).run()
    after = Trainer(spec.with_changes(fix["changes"])).run()
    gone = status not in statuses(after)
    loss = [t.evaluate("train")["loss"] for t in (before, after)]
    return gone or (math.isfinite(loss[1]) and loss[1] < 0.9 * loss[0]), (loss, statuses(after))


@pytest.mark.slow
def test_the_fixes_offered_on_the_issues_sick_cases_help():
    digits = load_preset("digits_raw_inputs")["config"]
    cases = [ExperimentSpec.from_dict({**digits, "model": {**digits["model"],
                                                           "activation": "leaky_relu"}}),
             full_batch_gd(1.01, 0).spec]
    for spec in cases:
        last = Trainer(spec).run().history.last["health"]
        assert last["fixes"], last
        for fix in last["fixes"]:
            ok, why = _helps(spec, fix, fix["for"])
            assert ok, (fix["label"], why)


def test_every_choice_the_advice_prescribes_is_registered():
    """The advice names its remedies in one place (health.py's constants); each must be an entry
    of its registry, with the tags the advice reads."""
    from engine.core.registry import ACTIVATIONS, INITIALIZERS, LAYERS, OPTIMIZERS

    assert FX.RELU in ACTIVATIONS and FX.LEAKY_RELU in ACTIVATIONS
    assert ACTIVATIONS[FX.IDENTITY].tags.get("linear") and ACTIVATIONS[FX.RELU].tags.get("dies")
    assert not ACTIVATIONS[FX.LEAKY_RELU].tags.get("dies")
    assert INITIALIZERS[FX.HE].tags["family"] == "He" and INITIALIZERS[FX.XAVIER].tags["family"] == "Xavier"
    assert ACTIVATIONS[FX.RELU].tags["init"] == FX.HE
    assert FX.ADAM["name"] in OPTIMIZERS and OPTIMIZERS[FX.ADAM["name"]].tags.get("adaptive")
    assert all(k in LAYERS for k in (FX.LINEAR_LAYER, FX.RESIDUAL, FX.BATCHNORM, FX.BARE_ACTIVATION))
    assert LAYERS[FX.BATCHNORM].tags.get("batch_stats")
    ExperimentSpec.from_dict({"model": {"layers": FX.with_batchnorm(
        ExperimentSpec.from_dict({"model": {"layers": [8, {"type": FX.RESIDUAL, "units": 8}]}})
    )["changes"]["model.layers"]}})


# ----------------------------------------------------------------------------- through time

RNN_SPEC = ExperimentSpec.from_dict({"data": {"name": "adding", "length": 4},
                                     "model": {"layers": [{"type": "rnn", "units": 8},
                                                          {"type": "last_step"}]}})


def through_time(first, last, loss, kind="rnn"):
    """A recurrent layer's row whose dL/dh_t goes from `last` (the last step) to `first`."""
    facts = net(hidden=["rnn1"], activations=set(), recurrent={"rnn1": (kind, 0)},
                chance_loss=1 / 6)
    make = lambda: row(layer("rnn1", time_grad=[first, first * 2, last / 2, last]),  # noqa: E731
                       train_loss=loss, train_acc=None)
    return make, facts


@pytest.mark.parametrize("first, last, loss, kind, expected", [
    (1e-6, 1.0, 0.16, "rnn", "vanishing"),   # fades 10^6x while stuck at a guess's error
    (1e-6, 1.0, 0.01, "rnn", "ok"),          # fades, but the net does well: the past it needs
    (1e-6, 1.0, 0.16, "lstm", "ok"),         # gated cells often start so, then open their gates
    (0.02, 1.0, 0.16, "rnn", "ok"),          # a 50x fade is not the cause
    (1e4, 1.0, 0.16, "rnn", "exploding"),    # grows 10^4x back through time
    (1e4, 1.0, 0.01, "gru", "exploding"),
])
def test_the_verdict_through_time(first, last, loss, kind, expected):
    make, facts = through_time(first, last, loss, kind)
    status = "vanishing" if expected == "ok" else expected
    v = persisted(status, E.PERSIST.get(status, 1), make, spec=RNN_SPEC, facts=facts)
    assert v["status"] == expected, v
    if expected == "vanishing":
        assert "through time" in v["messages"][0]
        assert [f["label"] for f in v["fixes"]] == ["Switch to an LSTM"]
        changed = RNN_SPEC.with_changes(v["fixes"][0]["changes"])
        assert changed.model.layers[0].type == "lstm" and changed.model.layers[0].get("units") == 8
    if expected == "exploding":
        assert "through time" in v["messages"][0]
        assert "Clip gradients at norm 1" in [f["label"] for f in v["fixes"]]


def test_an_overflowed_gradient_through_time_is_no_ratio_and_no_crash():
    """A non-finite dL/dh_t is written as null; measured: SGD at 0.1 on a gain-3 tanh RNN
    crashed the verdict with a TypeError mid-run."""
    rows = [{"layers": [{"name": "rnn1", "time_grad": [None, 1.0]}]},
            {"layers": [{"name": "rnn1", "time_grad": [2.0, None]}]},
            {"layers": [{"name": "rnn1", "time_grad": [float("inf"), 1.0]}]}]
    assert E.time_ratios_of(rows) == {}
    rows.append({"layers": [{"name": "rnn1", "time_grad": [0.5, 1.0]}]})
    assert E.time_ratios_of(rows) == {"rnn1": 0.5}


def test_a_gradient_that_reaches_the_first_step_as_exactly_zero_is_said_so():
    make, facts = through_time(0.0, 1.0, 0.16)  # saturated units: nothing gets through
    v = persisted("vanishing", E.PERSIST["vanishing"], make, spec=RNN_SPEC, facts=facts)
    assert v["status"] == "vanishing"
    assert "exactly 0 at the first" in v["messages"][0] and "0x" not in v["messages"][0]


def test_truncated_bptt_zeros_are_no_vanishing():
    make, facts = through_time(0.0, 1.0, 0.16)  # truncation: nothing reaches the first steps
    truncated = RNN_SPEC.with_changes({"training.tbptt": 2})
    v = persisted("vanishing", E.PERSIST["vanishing"], make, spec=truncated, facts=facts)
    assert v["status"] != "vanishing", v


def test_gd_just_past_2_over_L_is_told_why_it_diverges():
    """Full-batch gradient descent on linear regression (a quadratic) at 1.01x its stability
    limit 2/L, measured independently at the start: the loss grows a little every step, the
    verdict is diverging, and it names 2/L (constant for a quadratic) and the run's rate."""
    from engine.train.curvature import sharpness
    base = ExperimentSpec.from_dict({"data": {"name": "plane"}, "model": {"layers": []},
                                     "optimizer": {"name": "sgd", "lr": 0.3},
                                     "training": {"batch_size": 100_000, "steps": 400}})
    limit = sharpness(Trainer(base))["stable_lr"]
    lr = round(1.01 * limit, 4)
    t = Trainer(base.with_changes({"optimizer.lr": lr})).run()
    health = t.history.rows[-1]["health"]
    assert health["status"] == "diverging"
    text = health["messages"][0]
    said = re.search(r"2/L = ([0-9.]+), and this run.s rate is ([0-9]+\.?[0-9]*)", text)
    assert said and float(said.group(2)) == pytest.approx(lr, rel=1e-3)
    assert float(said.group(1)) == pytest.approx(limit, rel=0.005)  # constant on a quadratic
    below = Trainer(base.with_changes({"optimizer.lr": round(0.99 * limit, 4)})).run()
    assert "diverging" not in statuses(below)
    adam = Trainer(base.with_changes({"optimizer": {"name": "adam", "lr": 5.0}})).run()
    assert not any("2/L" in m for r in adam.history.rows for m in r["health"]["messages"])
