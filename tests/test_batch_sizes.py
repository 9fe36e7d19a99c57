"""Full-batch, mini-batch and single-example updates at matched epochs (concept D1)."""
import math

import pytest

from engine import ExperimentSpec, SpecError
from engine.lab.batch_sizes import batch_size_experiment, loss_noise, variants
from engine.presets import load_preset

CIRCLE = ExperimentSpec.from_dict(load_preset("tfp_circle")["config"])


def test_the_three_batch_sizes_and_no_duplicates():
    assert variants(320, 10) == [("full batch", 320), ("mini-batch", 10), ("single example", 1)]
    assert variants(320, 1000) == [("full batch", 320), ("single example", 1)]
    assert variants(320, 1) == [("full batch", 320), ("single example", 1)]


@pytest.mark.parametrize("seed", [0, 1])
def test_matched_epochs_and_the_noise_grows_as_the_batch_shrinks(seed):
    rows = batch_size_experiment(CIRCLE.with_changes({"seed": seed}), epochs=2)
    n = rows[0]["batch"]  # the full batch is the training set
    for r in rows:
        assert r["steps_per_epoch"] == math.ceil(n / r["batch"])
        assert r["steps"] == math.ceil(2 * n / r["batch"]) and r["stopped"] == "completed"
    full, mini, single = (r["loss_noise"] for r in rows)
    assert full is None  # two steps: no jump to measure
    assert mini < single
    assert rows[2]["steps"] == 2 * n and rows[0]["steps"] == 2


def test_loss_noise_is_the_jump_from_step_to_step_not_the_progress():
    falling = [10.0 - k for k in range(10)]  # steady progress, no noise
    assert loss_noise(falling) == pytest.approx(0.0)
    # last three: 1, 3, 1 -> jumps +2, -2 (spread 2), / sqrt(2), / mean 5/3
    assert loss_noise([5.0] * 7 + [1.0, 3.0, 1.0]) == pytest.approx(2 / math.sqrt(2) / (5 / 3))
    assert loss_noise([1.0, 2.0]) is None


@pytest.mark.slow
def test_too_many_steps_are_refused():
    with pytest.raises(SpecError, match="fewer epochs"):
        batch_size_experiment(CIRCLE, epochs=1000)
    with pytest.raises(SpecError, match="epochs"):
        batch_size_experiment(CIRCLE, epochs=0)
