"""Side by side: the variants of a comparison are the experiment with one thing changed, and a
variant trained beside a run, in step, gives exactly the numbers it gives trained alone."""
import math

import pytest

from engine import ExperimentSpec, SpecError, Trainer
from engine.lab.compare import (
    AB,
    COMPARISONS,
    comparison_key,
    offered,
    one_change,
    summary,
    title,
    variant_changes,
    variants,
)
from engine.presets import list_presets
from serve.caps import CapError, Caps
from serve.registry import RunRegistry
from serve.runs import Run

RNN = ExperimentSpec.from_dict({
    "data": {"name": "adding", "length": 10, "n": 200, "normalize": "none"},
    "model": {"layers": [{"type": "rnn", "units": 6, "nonlinearity": "relu",
                          "num_layers": 2, "bidirectional": True}, {"type": "last_step"}]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"steps": 12, "batch_size": 16, "log_every": 3}})
SEQ = (10, 2)


def test_cells_swap_every_recurrent_layer_and_keep_its_size():
    found = variants(RNN, "cells", SEQ)
    assert [label for label, _ in found] == ["RNN (this run)", "LSTM", "GRU"]
    assert found[0][1] is RNN
    for (_, spec), kind in zip(found, ["rnn", "lstm", "gru"]):
        layer = spec.model.layers[0].to_dict()
        assert layer["type"] == kind and layer["units"] == 6
        assert layer["num_layers"] == 2 and layer["bidirectional"] is True
        assert ("nonlinearity" in layer) == (kind == "rnn")  # a gated cell has none
        assert spec.model.layers[1].type == "last_step"
        assert spec.to_dict()["training"] == RNN.to_dict()["training"]


def test_clipping_toggles_and_tbptt_lists_distinct_lengths_the_run_first():
    on = variants(RNN, "clipping", SEQ)
    assert on[0][1].training.grad_clip is None and on[1][1].training.grad_clip.max == 1.0
    clipped = RNN.with_changes({"training.grad_clip": {"value": 0.5}})
    off = variants(clipped, "clipping", SEQ)
    assert off[0][0] == "clip value at 0.5 (this run)" and off[1][1].training.grad_clip is None
    lengths = [s.training.tbptt for _, s in variants(RNN, "tbptt", SEQ)]
    assert lengths == [0, 5, 2]
    mine = RNN.with_changes({"training.tbptt": 5})
    assert [s.training.tbptt for _, s in variants(mine, "tbptt", SEQ)] == [5, 0, 2]


def test_rates_are_a_tenth_three_and_ten_times_within_the_optimizers_bounds():
    found = variants(RNN, "rates", SEQ)
    assert [label for label, _ in found] == ["lr 0.01 (this run)", "lr 0.001", "lr 0.03",
                                             "lr 0.1"]
    assert [s.optimizer.params["lr"] for _, s in found[1:]] == [0.001, 0.03, 0.1]
    high = RNN.with_changes({"optimizer.lr": 2.0})  # x10 would pass adam's limit of 10
    assert [label for label, _ in variants(high, "rates", SEQ)] == \
        ["lr 2 (this run)", "lr 0.2", "lr 6"]


def test_optimizers_and_schedules_leave_out_the_runs_own():
    adam = RNN  # adam at lr 0.01, as one of the tried optimizers
    found = variants(adam, "optimizers", SEQ)
    assert [label for label, _ in found] == ["adam lr 0.01 (this run)", "sgd lr 0.1",
                                             "sgd + momentum 0.9 lr 0.01"]
    assert found[2][1].optimizer.params == {"lr": 0.01, "momentum": 0.9}
    assert found[2][1].model == RNN.model and found[2][1].data == RNN.data
    cosine = RNN.with_changes({"schedule": "cosine"})
    assert [label for label, _ in variants(cosine, "schedules", SEQ)] == \
        ["cosine (this run)", "constant", "warmup_cosine", "one_cycle"]


def test_batch_sizes_match_the_runs_epochs_and_are_drawn_against_epochs():
    data = Trainer(RNN).data  # 200 sequences: 140 to train on
    n = len(data.y_train)
    found = variants(RNN, "batch_sizes", data)
    epochs = RNN.training.steps * RNN.training.batch_size / n
    assert [label for label, _ in found] == [
        "batch 16: 12 steps (this run)", f"full batch ({n}): {math.ceil(epochs)} steps",
        f"one example (1): {math.ceil(epochs * n)} steps"]
    for _, spec in found:  # every variant sees each example about as often
        seen = spec.training.steps * spec.training.batch_size / n
        assert epochs <= seen < epochs + spec.training.batch_size / n
    assert COMPARISONS["batch_sizes"].tags["x"] == "epoch"
    with pytest.raises(SpecError, match="not known"):
        variants(RNN, "batch_sizes", SEQ)


def test_the_normalization_comparison_gives_back_the_plain_net():
    """BatchNorm before every sigmoid, taken away, is the plain deep sigmoid net, layer for
    layer (each linear layer applies its activation again)."""
    plain = [{"type": "linear", "units": 8}, {"type": "linear", "units": 8,
                                               "activation": "tanh"}]
    normed = [{"type": "linear", "units": 8, "activation": "linear"}, {"type": "batchnorm"},
              {"type": "activation"}, {"type": "linear", "units": 8, "activation": "linear"},
              {"type": "batchnorm"}, {"type": "activation", "activation": "tanh"}]
    spec = ExperimentSpec.from_dict({"model": {"activation": "sigmoid", "layers": normed}})
    (_, _), (_, without) = variants(spec, "normalization", (2,))
    assert without.model.layers == ExperimentSpec.from_dict(
        {"model": {"activation": "sigmoid", "layers": plain}}).model.layers
    with pytest.raises(SpecError, match="no BatchNorm"):
        variants(without, "normalization", (2,))


def test_only_the_comparisons_that_apply_are_offered():
    dense = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [4]}})
    assert offered(dense, (2,)) == ["clipping", "rates", "optimizers", "schedules"]
    # what a run has to take away: regularization, normalization, pretraining, a teacher
    removers = {"regularization", "normalization", "pretraining", "teacher"}
    assert offered(RNN, SEQ) == [k for k in COMPARISONS.keys()
                                 if k != "batch_sizes" and k not in removers]
    assert offered(RNN, Trainer(RNN).data) == [k for k in COMPARISONS.keys()  # knows n_train
                                               if k not in removers]
    taught = RNN.with_changes({"regularization.l2": 0.01, "training.early_stopping":
                               {"patience": 5}})
    (_, mine), (label, without) = variants(taught, "regularization", SEQ)
    assert mine == taught and label == "without"
    assert without == RNN.with_changes({"regularization.l1": 0.0})  # nothing else differs
    with pytest.raises(SpecError, match="no rnn, lstm or gru"):
        variants(dense, "cells", (2,))
    with pytest.raises(SpecError, match="too short"):
        variants(RNN, "tbptt", (2, 2))


def rows_of(trainer):
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in trainer.history.rows]


@pytest.fixture
def registry():
    reg = RunRegistry(Caps(max_trainers=2, max_params=100_000, max_steps=1_000,
                           max_steps_per_s=0, grace_s=60, drop_after_s=600, max_twins=2))
    yield reg
    reg.shutdown()


def test_a_variant_trained_beside_the_run_matches_it_trained_alone(registry):
    found = variants(RNN, "cells", SEQ)
    run = registry.create(RNN, twins=found[1:], label=found[0][0])
    while not run.done:
        run.step_once()
    assert run.state == Run.DONE
    for (label, twin), (_, spec) in zip(run.twins, found[1:]):
        alone = Trainer(spec).run()
        assert rows_of(twin) == rows_of(alone), label
        assert summary(twin)["val_loss"] == alone.history.rows[-1]["val_loss"]
    assert rows_of(run.trainer) == rows_of(Trainer(RNN).run())
    assert [label for label, _ in run.trainers()] == ["RNN (this run)", "LSTM", "GRU"]


def test_a_variant_that_diverges_stops_and_the_others_go_on(registry):
    wild = ExperimentSpec.from_dict({"data": {"name": "spiral"}, "model": {
        "layers": [64, 64, 64], "init": {"name": "normal", "std": 1.0}},
        "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9}, "training": {"steps": 60}})
    found = variants(wild, "clipping", (2,))
    run = registry.create(wild, twins=found[1:], label=found[0][0])
    while not run.done:
        run.step_once()
    assert run.trainer.stopped == "diverged"  # the gradient_clipping preset's net, unclipped
    twin = run.twins[0][1]
    assert twin.stopped == "completed" and twin.step_count == 60
    assert run.state == Run.DONE and summary(run.trainer)["stopped"] == "diverged"


def test_variants_go_on_with_the_run_and_are_capped(registry):
    found = variants(RNN, "cells", SEQ)
    run = registry.create(RNN, twins=found[1:], label=found[0][0])
    while not run.done:
        run.step_once()
    assert run.go_on()
    run.step_once()
    assert [t.step_count for _, t in run.trainers()] == [13, 13, 13]
    three = found[1:] + found[1:2]
    with pytest.raises(CapError, match="at most 2 variants"):
        registry.create(RNN, twins=three)
    big = RNN.with_changes({"model.layers.0.units": 400})
    with pytest.raises(SpecError, match="parameters"):
        registry.create(RNN, twins=[("big", big)])


def test_a_forgotten_run_lets_its_variants_go(registry):
    found = variants(RNN, "cells", SEQ)
    run = registry.create(RNN, twins=found[1:], label=found[0][0])
    run.step_once()
    twin = run.twins[0][1]
    registry.drop(run.id)
    assert run.twins == [] and twin.model is None and run.trainers()[0][0] == "RNN (this run)"


@pytest.mark.parametrize("preset", [p for p in list_presets() if p.get("compare")],
                         ids=lambda p: p["name"])
def test_a_presets_side_by_side_choice_applies_to_it(preset):
    spec = ExperimentSpec.from_dict(preset["config"])
    data = Trainer(spec).data
    name = comparison_key(preset["compare"])
    if name.startswith(AB):  # one change: B builds and differs from A
        (_, a), (_, b) = variants(spec, name, data)
        assert a == spec and b != spec and b.seed == spec.seed
    else:
        assert name in offered(spec, data)


def test_variants_count_against_the_servers_limits():
    caps = Caps(max_trainers=2, max_params=100_000, max_steps=1_000, max_steps_per_s=0,
                grace_s=60, drop_after_s=600, max_twins=3)
    reg = RunRegistry(caps)
    try:
        found = variants(RNN, "cells", SEQ)
        run = reg.create(RNN, twins=found[1:], label=found[0][0])
        assert run.size == 3
        with pytest.raises(CapError, match="would add 3: its limit is 2"):
            run.start()
        alone = reg.create(RNN)
        alone.start()
        assert reg.running_count() in (0, 1)  # 1 while it trains (it may finish at once)
        alone.pause()
        # each of the three fits alone (work = 16 x multiply-adds: 50k, 200k, 150k), not all
        heavy = Caps(max_step_work=300_000, max_twins=3)
        with pytest.raises(SpecError, match="variants beside it would train"):
            Run("x", RNN, RunRegistry(heavy), twins=found[1:], label=found[0][0])
    finally:
        reg.shutdown()


def test_a_variant_that_fails_is_named_in_the_runs_error(registry, monkeypatch):
    found = variants(RNN, "cells", SEQ)
    run = registry.create(RNN, twins=found[1:], label=found[0][0])
    twin = run.twins[1][1]
    monkeypatch.setattr(twin, "step", lambda: (_ for _ in ()).throw(ValueError("boom")))
    run.step_once()
    assert run.state == Run.ERROR and "GRU, beside the run: ValueError: boom" in run.error


def test_an_a_b_comparison_changes_one_setting_and_keeps_the_seed():
    spec = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [4]},
                                     "seed": 5})
    name = one_change({"optimizer.lr": 0.3})
    assert name == 'ab:{"optimizer.lr": 0.3}' and title(name) == "A/B: learning rate = 0.3"
    (la, a), (lb, b) = variants(spec, name, (2,))
    assert (la, lb) == ("A: this run", "B: learning rate = 0.3")
    assert a == spec and b == spec.with_changes({"optimizer.lr": 0.3}) and b.seed == 5
    assert comparison_key({"change": {"optimizer.lr": 0.3}}) == name
    assert comparison_key("cells") == "cells"
    with pytest.raises(SpecError, match="nothing would differ"):
        variants(spec, one_change({"seed": 5}), (2,))
    with pytest.raises(SpecError, match="cannot be built"):
        variants(spec, one_change({"optimizer.lr": -1}), (2,))
    with pytest.raises(SpecError, match="not an A/B"):
        variants(spec, "ab:[1]", (2,))
    with pytest.raises(SpecError, match="at least one setting"):
        one_change({})


@pytest.mark.parametrize("change, words", [
    ({"distill": None}, "distillation = off"),
    ({"model.layers": [64]}, "hidden layers = 64"),
    ({"model.layers": [{"type": "linear", "units": 64}, {"type": "dropout", "p": 0.5}]},
     "hidden layers = linear (units 64), dropout (p 0.5)"),
    ({"optimizer": {"name": "adam", "lr": 0.01}}, "optimizer = adam (lr 0.01)"),
    ({"model.activation": "leaky_relu", "training.grad_clip": None},
     "activation = leaky relu, gradient clipping = off"),
    ({"model.bias_init": -3}, "bias init = -3"),
])
def test_an_ab_change_is_named_in_words_not_config_text(change, words):
    """Issue 31, item 4: "beside it: B: distill = null" and "B: model.layers = [64]" were
    config text shown to learners."""
    from engine.lab.compare import one_change

    spec = ExperimentSpec.from_dict({})
    (_, _), (label, got) = variant_changes(spec, one_change(change), (2,))
    assert label == "B: " + words and got == change
    assert title(one_change(change)) == "A/B: " + words
    assert "null" not in label and "[" not in label and "{" not in label
