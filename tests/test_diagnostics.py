"""Per-layer statistics on real runs: the teaching effects the issue names, with the numbers
they must show (the verdict built on them: tests/test_health.py)."""
import math

import pytest
import torch

from engine import ExperimentSpec, Trainer
from engine.train import evidence as E

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
    assert "vanishing" in xavier["health"]["signs"] and "vanishing" not in he["health"]["signs"]


def test_deep_sigmoid_net_is_diagnosed_vanishing():
    r, _ = first_row({"model": {"activation": "sigmoid", "init": "xavier_uniform",
                                "layers": [32] * 10}})
    assert grad_ratio(r) < E.VANISHING_RATIO
    assert "vanishing" in r["health"]["signs"]


EXPLODING = {"model": {"init": {"name": "normal", "std": 1.0}, "layers": [64, 64, 64]},
             "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9}}


def test_large_init_and_high_lr_diverge_and_stop_at_once_with_finite_weights():
    trainer = Trainer(ExperimentSpec.from_dict({**EXPLODING, "training": {"steps": 300}})).run()
    assert trainer.stopped == "diverged" and trainer.step_count < 300
    last = trainer.history.last
    assert last["health"]["status"] == "diverged"
    assert "lower lr" in " ".join(f["label"].lower() for f in last["health"]["fixes"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_clipping_keeps_the_same_run_stable():
    config = {**EXPLODING, "training": {"steps": 300, "grad_clip": 1.0}}
    trainer = Trainer(ExperimentSpec.from_dict(config)).run()
    assert trainer.stopped == "completed"
    assert all(math.isfinite(r["train_loss"]) for r in trainer.history.rows)
    assert max(r["clip_frac"] for r in trainer.history.rows) == 1.0  # clipping really acted


def test_negative_bias_init_silences_most_units_at_once():
    r, _ = first_row({"model": {"bias_init": -3.0, "layers": [64, 64]}})
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


def test_image_layers_log_per_channel_statistics_of_their_output():
    """Oracle: the conv layer's output caught by our own forward hook on the same logged step."""
    spec = ExperimentSpec.from_dict({
        "data": {"name": "digits", "n": 200},
        "model": {"activation": "relu", "bias_init": -3.0, "layers": [
            {"type": "conv2d", "filters": 5}, {"type": "maxpool"}, 8]},
        "training": {"steps": 1, "batch_size": 16}})
    t = Trainer(spec)
    caught = {}
    def catch(module, inputs, out):  # the training forward comes first; evaluation after
        caught.setdefault("h", out.detach())
    t.model.conv1.register_forward_hook(catch)
    t.run()
    h = caught["h"]
    conv1 = t.history.rows[0]["layers"][0]
    assert conv1["name"] == "conv1"
    assert conv1["channels"]["mean"] == pytest.approx(h.mean((0, 2, 3)).tolist(), rel=1e-5)
    assert conv1["channels"]["std"] == pytest.approx(h.std((0, 2, 3)).tolist(), rel=1e-4)
    dead = [bool(h[:, c].abs().max() == 0) for c in range(5)]
    assert conv1["channels"]["dead"] == dead and any(dead)  # bias -3 silences some
    assert conv1["dead_frac"] == pytest.approx(sum(dead) / 5)
    assert "channels" not in t.history.rows[0]["layers"][2]  # a dense layer has none
