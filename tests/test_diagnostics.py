"""The health verdict: each threshold pinned on synthetic rows, then the teaching effects on real
runs (the experiments the issue names, with the numbers they must show)."""
import math

import pytest
import torch

from engine import ExperimentSpec, Trainer
from engine import diagnostics as D
from engine.diagnostics import assess

SPEC = ExperimentSpec.from_dict({"model": {"layers": [8, 8, 8]}})


def layer(name, **stats):
    base = {"name": name, "act_grad_norm": 1.0, "update_ratio": 1e-3, "dead_frac": None,
            "saturated_frac": None}
    return {**base, **stats}


def row(*layers, step=10, **metrics):
    return {"step": step, "train_loss": 1.0, "train_acc": 0.5, **metrics,
            "layers": list(layers) + [layer("out")]}


def status(r, rows=(), spec=SPEC, diverged=None):
    return assess(list(rows), r, spec, diverged)["status"]


# ----------------------------------------------------------------------------- thresholds

@pytest.mark.parametrize("first, expected", [
    (D.VANISHING_RATIO * 0.9, "vanishing"), (D.VANISHING_RATIO * 1.1, "ok"),
    (D.EXPLODING_RATIO * 1.1, "exploding"), (D.EXPLODING_RATIO * 0.9, "ok")])
def test_gradient_ratio_thresholds(first, expected):
    r = row(layer("fc1", act_grad_norm=first), layer("fc2"), layer("fc3", act_grad_norm=1.0))
    assert status(r) == expected


def test_vanishing_message_names_layers_numbers_and_fix():
    h = assess([], row(layer("fc1", act_grad_norm=1e-6), layer("fc2", act_grad_norm=0.5)), SPEC)
    text = h["messages"][0]
    assert "fc1" in text and "fc2" in text and "1e-06" in text and "0.5" in text
    labels = [f["label"] for f in h["fixes"]]
    assert "Switch to ReLU + He init" in labels
    fixed = SPEC.with_changes(h["fixes"][0]["changes"])
    assert (fixed.model.activation.name, fixed.model.init.name) == ("relu", "he_normal")


def test_a_fully_dead_layer_is_reported_as_dead_not_vanishing():
    r = row(layer("fc1", act_grad_norm=0.0, dead_frac=0.2),
            layer("fc2", act_grad_norm=1.0, dead_frac=D.DEAD_BLOCKING))
    assert status(r) == "dead"


@pytest.mark.parametrize("frac, expected", [(D.DEAD_FRAC, "dead"), (D.DEAD_FRAC - 0.01, "ok")])
def test_dead_threshold(frac, expected):
    assert status(row(layer("fc1", dead_frac=frac), layer("fc2"))) == expected


@pytest.mark.parametrize("frac, expected", [(D.SATURATED_FRAC, "saturated"),
                                            (D.SATURATED_FRAC - 0.01, "ok")])
def test_saturated_threshold_reports_the_worst_layer(frac, expected):
    h = assess([], row(layer("fc1", saturated_frac=frac), layer("fc2", saturated_frac=frac / 2)),
               SPEC)
    assert h["status"] == expected
    if expected == "saturated":
        assert "fc1" in h["messages"][0]


@pytest.mark.parametrize("ratio, expected", [(D.EXPLODING_UPDATE * 1.5, "exploding"),
                                             (D.EXPLODING_UPDATE * 0.5, "ok")])
def test_update_ratio_threshold(ratio, expected):
    assert status(row(layer("fc1", update_ratio=ratio), layer("fc2"))) == expected


def test_priority_puts_divergence_first_and_lists_every_finding():
    r = row(layer("fc1", act_grad_norm=1e-9, dead_frac=0.7), layer("fc2"))
    h = assess([], r, SPEC, {"step": 5, "loss": "NaN"})
    assert h["status"] == "diverged"
    assert len(h["messages"]) == 3  # diverged, vanishing, dead


def flat_history(loss_start, loss_end, steps=D.PLATEAU_STEPS + 50, every=10, acc=0.6):
    n = steps // every
    return [row(layer("fc1"), layer("fc2"), step=(i + 1) * every,
                train_loss=loss_start + (loss_end - loss_start) * i / (n - 1), train_acc=acc)
            for i in range(n)]


def test_plateau_needs_a_flat_loss_over_the_window():
    rows = flat_history(1.0, 1.0 - D.PLATEAU_GAIN * 0.3)
    assert status(rows[-1], rows[:-1]) == "plateau"
    rows = flat_history(1.0, 0.8)
    assert status(rows[-1], rows[:-1]) == "ok"


def test_a_flat_but_low_loss_is_not_a_plateau():
    rows = flat_history(0.2, 0.2)
    assert status(rows[-1], rows[:-1]) == "plateau"  # measured against its own first row
    assert assess(rows[:-1], rows[-1], SPEC, first_loss=1.1)["status"] == "ok"


def test_a_rising_loss_is_not_called_a_plateau():
    rows = flat_history(1.0, 1.2)
    assert status(rows[-1], rows[:-1]) == "ok"


def test_a_converged_run_is_not_a_plateau():
    rows = flat_history(0.01, 0.01, acc=D.CONVERGED_ACC)
    assert status(rows[-1], rows[:-1]) == "ok"


def test_too_short_a_run_is_not_a_plateau():
    rows = flat_history(1.0, 1.0, steps=D.PLATEAU_STEPS - 20)
    assert status(rows[-1], rows[:-1]) == "ok"


# ----------------------------------------------------------------------------- teaching effects

def first_row(config, steps=1):
    trainer = Trainer(ExperimentSpec.from_dict({**config, "training": {"steps": steps}})).run()
    return trainer.history.rows[0], trainer


def grad_ratio(r):
    hidden = [lay for lay in r["layers"] if lay["name"] != "out"]
    return hidden[0]["act_grad_norm"] / hidden[-1]["act_grad_norm"]


def test_he_keeps_gradients_through_30_relu_layers_where_xavier_loses_them():
    cfg = {"model": {"activation": "relu", "layers": [32] * 30}}
    xavier, _ = first_row({**cfg, "model": {**cfg["model"], "init": "xavier_normal"}})
    he, _ = first_row({**cfg, "model": {**cfg["model"], "init": "he_normal"}})
    # Xavier halves the variance at each ReLU: 30 layers lose ~2^15 in norm, orders of magnitude.
    assert grad_ratio(xavier) < 1e-3
    assert 0.1 < grad_ratio(he) < 10
    assert xavier["health"]["status"] == "vanishing" and he["health"]["status"] != "vanishing"


def test_deep_sigmoid_net_is_diagnosed_vanishing():
    r, _ = first_row({"model": {"activation": "sigmoid", "init": "xavier_uniform",
                                "layers": [32] * 10}})
    assert grad_ratio(r) < D.VANISHING_RATIO
    assert r["health"]["status"] == "vanishing"


EXPLODING = {"model": {"init": {"name": "normal", "std": 1.0}, "layers": [64, 64, 64]},
             "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.9}}


def test_large_init_and_high_lr_diverge_and_stop_at_once_with_finite_weights():
    trainer = Trainer(ExperimentSpec.from_dict({**EXPLODING, "training": {"steps": 300}})).run()
    assert trainer.stopped == "diverged" and trainer.step_count < 300
    last = trainer.history.last
    assert last["health"]["status"] == "diverged"
    assert "lower lr 10x" in " ".join(f["label"].lower() for f in last["health"]["fixes"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_clipping_keeps_the_same_run_stable():
    config = {**EXPLODING, "training": {"steps": 300, "grad_clip": 1.0}}
    trainer = Trainer(ExperimentSpec.from_dict(config)).run()
    assert trainer.stopped == "completed"
    assert all(math.isfinite(r["train_loss"]) for r in trainer.history.rows)
    assert max(r["clip_frac"] for r in trainer.history.rows) == 1.0  # clipping really acted


def test_negative_bias_init_is_diagnosed_dead():
    r, _ = first_row({"model": {"bias_init": -3.0, "layers": [64, 64]}})
    assert r["health"]["status"] == "dead"
    assert max(lay["dead_frac"] for lay in r["layers"] if lay["dead_frac"] is not None) >= 0.9


def test_spiral_needs_a_hidden_layer():
    base = {"data": {"name": "spiral"}, "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"steps": 1500}}
    linear = Trainer(ExperimentSpec.from_dict({**base, "model": {"layers": []}})).run()
    hidden = Trainer(ExperimentSpec.from_dict({**base, "model": {"layers": [64]}})).run()
    assert linear.evaluate("val")["acc"] < 0.65
    assert hidden.evaluate("val")["acc"] > 0.85


def test_residual_blocks_are_not_judged_by_their_activation_bounds():
    r, _ = first_row({"model": {"activation": "tanh", "init": "he_normal",
                                "layers": [{"type": "residual", "units": 32, "depth": 2}] * 2}})
    assert all(lay["saturated_frac"] is None and lay["dead_frac"] is None for lay in r["layers"])
