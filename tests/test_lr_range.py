"""The learning-rate range test: the rates it tries are the exponential it promises, it reads a
quadratic's stability limit where theory puts it, and it suggests a tenth of the lowest-loss rate
(the steepest fall is given too)."""
import math

import pytest

from engine import ExperimentSpec, SpecError, Trainer
from engine.lab.lr_range import LrRange, lr_range_test, suggest
from engine.train.curvature import sharpness

LINEAR = ExperimentSpec.from_dict({"data": {"name": "plane"}, "model": {"layers": []},
                                   "optimizer": {"name": "sgd", "lr": 0.1},
                                   "training": {"batch_size": 100_000}})


def test_the_suggestion_is_a_tenth_of_the_lowest_loss_rate_once_the_loss_fell_enough():
    r = lr_range_test(LINEAR, 1e-3, 100.0, 100)
    assert r["drop"] < 0.1 and r["suggested"] == r["min_over_10"]
    lowest = min(range(len(r["smoothed"])), key=r["smoothed"].__getitem__)
    assert r["suggested"] == pytest.approx(r["lr"][lowest] / 10)
    flat = lr_range_test(LINEAR, 1e-7, 1e-6, 20)  # rates far too small to move the loss
    assert flat["drop"] > 0.8 and flat["suggested"] is None


def test_each_step_trains_at_the_exponential_rate():
    r = lr_range_test(LINEAR, 1e-4, 1e-1, 40)
    assert len(r["lr"]) == 40 and r["stopped_at"] is None  # 0.1 is below 2/L = 1: no blow-up
    for k, lr in enumerate(r["lr"]):
        assert lr == pytest.approx(1e-4 * 1000 ** (k / 39), rel=1e-12)


def test_full_batch_gd_on_a_quadratic_falls_until_2_over_L_then_blows_up():
    """Linear regression with MSE is a quadratic: every step with lr < 2/L (L the Hessian's
    top eigenvalue, measured independently) lowers the full-batch loss; past it, it grows."""
    limit = sharpness(Trainer(LINEAR))["stable_lr"]
    r = lr_range_test(LINEAR, 1e-3, 100.0, 100)
    below = [k for k, lr in enumerate(r["lr"]) if lr < 0.95 * limit]
    # (float32: at the noise floor two losses may tie within rounding)
    assert all(r["loss"][k + 1] <= r["loss"][k] * (1 + 1e-6) for k in below[:-1])
    assert r["loss"][below[-1]] < 0.01 * r["loss"][0]
    assert r["stopped_at"] is not None and limit < r["stopped_at"] < 8 * limit


def test_suggest_finds_the_steepest_fall_and_the_lowest_point():
    lrs = [10 ** (-6 + 7 * k / 199) for k in range(200)]
    # falls fastest at 1e-2 (tanh's steepest point), lowest near 3e-1, then rises
    loss = [1 - math.tanh(math.log10(lr) + 2) + max(0.0, math.log10(lr) + 0.5) ** 2 * 4
            for lr in lrs]
    found = suggest(lrs, loss)
    assert found["steepest"] == pytest.approx(1e-2, rel=0.1)
    lowest = lrs[min(range(200), key=loss.__getitem__)]
    assert found["min_over_10"] == pytest.approx(lowest / 10)
    assert suggest(lrs, [1.0 + k for k in range(200)]) == {"steepest": None, "min_over_10": None}


def test_a_blow_up_ends_the_test_and_a_nan_too():
    cb = LrRange(1e-3, 1e3, 50)
    t = Trainer(LINEAR.with_changes({"training.steps": 50}), callbacks=[cb]).run()
    assert t.stopped in ("lr_range", "diverged") and len(cb.lrs) < 50


def test_bad_settings_are_refused():
    with pytest.raises(SpecError, match="0 < low < high"):
        lr_range_test(LINEAR, 1.0, 0.1)
    with pytest.raises(SpecError, match="steps"):
        lr_range_test(LINEAR, steps=3)
