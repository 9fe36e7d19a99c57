"""Class subsets, pretraining with frozen layers, distillation and int8 weights, each against an
oracle: the pretraining run trained on its own, a hand-made KL divergence, torch's quantizer."""
import copy
import math
import warnings

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.core.portable import distill_loss, freeze
from engine.data.datasets import load_dataset
from engine.lab.quantize import quantization_report, quantize_model, quantize_tensor
from engine.train.transfer import pretrain_spec, teacher_spec

CNN = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
       {"type": "batchnorm2d"}, {"type": "maxpool", "kernel": 2},
       {"type": "conv2d", "filters": 6, "kernel": 3}, {"type": "linear", "units": 12}]


def transfer_spec(**changes) -> ExperimentSpec:
    spec = ExperimentSpec.from_dict({
        "data": {"name": "digits", "n": 500, "subset": [7, 8, 9]},
        "model": {"activation": "relu", "init": "he_normal", "layers": CNN},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"steps": 25, "batch_size": 16, "log_every": 5},
        "pretrain": {"classes": [0, 1, 2, 3], "steps": 30, "n": 600, "freeze": [0, 1]}})
    return spec.with_changes(changes)


# ----------------------------------------------------------------------------- data.subset

def test_a_subset_keeps_only_its_classes_renumbered_in_its_order():
    spec = ExperimentSpec.from_dict({"data": {"name": "shapes", "n": 400, "subset": [2, 0]}})
    full = load_dataset(ExperimentSpec.from_dict({"data": {"name": "shapes", "n": 400}}).data, 0)
    part = load_dataset(spec.data, 0)
    assert part.classes == 2 and part.class_names == ("cross", "horizontal bar")
    assert spec.data.classes == 2 and spec.to_dict()["data"]["subset"] == [2, 0]
    y_all = torch.cat([full.y_train, full.y_val])
    y_part = torch.cat([part.y_train, part.y_val])
    assert len(y_part) == int(((y_all == 2) | (y_all == 0)).sum())
    assert set(y_part.tolist()) == {0, 1}
    assert "subset" not in ExperimentSpec().to_dict()["data"]  # old configs read as before


@pytest.mark.parametrize("data, why", [
    ({"name": "digits", "subset": [1, 1]}, "different integers"),
    ({"name": "digits", "subset": [3, 10]}, "from 0 to 9"),
    ({"name": "digits", "subset": [3]}, "at least 2"),
    ({"name": "plane", "subset": [0, 1]}, "not a classification set"),
])
def test_a_bad_subset_is_named(data, why):
    with pytest.raises(SpecError, match=why):
        ExperimentSpec.from_dict({"data": data})


# ----------------------------------------------------------------------------- pretraining

@pytest.mark.parametrize("pretrain, why", [
    ({"classes": [0, 1], "freeze": [9]}, r"model.layers\[0\] to \[4\]"),
    ({"classes": [7, 1]}, r"share \[7\]"),
    ({"steps": 3}, "needs 'classes'"),
])
def test_a_bad_pretrain_section_is_named(pretrain, why):
    with pytest.raises(SpecError, match=why):
        transfer_spec(pretrain=pretrain)


def test_frozen_layers_stay_bit_identical_to_the_pretrained_ones():
    spec = transfer_spec()
    pre = Trainer(pretrain_spec(spec)).run()  # the oracle: the same pretraining on its own
    t = Trainer(spec)
    assert t.frozen == ["conv1", "bn1"]
    trainable = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert not trainable & {id(p) for n in t.frozen for p in getattr(t.model, n).parameters()}
    t.run()
    assert t.stopped == "completed" and t.phase["kind"] == "pretrain"
    assert t.phase["classes"] == [0, 1, 2, 3] and t.phase["steps"] == 30
    mine, theirs = t.model.state_dict(), pre.model.state_dict()
    for key in [k for k in mine if k.split(".")[0] in t.frozen]:  # weights and BN statistics
        assert torch.equal(mine[key], theirs[key]), key
    for key in ("conv2.conv.weight", "fc1.linear.weight"):  # what trains has moved on
        assert not torch.equal(mine[key], theirs[key]), key
    assert mine["out.weight"].shape[0] == 3 and theirs["out.weight"].shape[0] == 4
    # the fine-tuned run sees its inputs scaled as the pretraining did
    assert torch.equal(t.data.shift, pre.data.shift) and torch.equal(t.data.scale, pre.data.scale)


def test_frozen_layers_write_no_gradient_statistics_and_raise_no_alarm():
    t = Trainer(transfer_spec()).run()
    for row in t.history.rows:
        conv1 = next(lay for lay in row["layers"] or () if lay["name"] == "conv1")
        assert conv1["weight_grad_norm"] is None and conv1["update_ratio"] is None
        assert row["health"]["status"] not in ("vanishing", "exploding"), row["health"]


def test_without_freezing_every_layer_starts_pretrained_and_trains():
    spec = transfer_spec(**{"pretrain.freeze": [], "training.steps": 1})
    pre = Trainer(pretrain_spec(spec)).run()
    start = {}

    class Grab:
        order, name = 5, "grab"

        def __getattr__(self, hook):
            return lambda *a: None

        def on_step_start(self, trainer):
            start.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
    Trainer(spec, callbacks=[Grab()]).run()
    for key, value in pre.model.state_dict().items():
        if not key.startswith("out."):
            assert torch.equal(start[key], value), key


def test_freeze_keeps_a_layer_in_eval_mode_through_train_calls_and_copies():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    freeze(net[1])
    freeze(net[2])
    for model in (net, copy.deepcopy(net)):
        model.train()
        assert model.training and model[0].training
        assert not model[1].training and not model[2].training
        assert not any(p.requires_grad for p in model[1].parameters())


@pytest.mark.parametrize("phase", ["pretrain", "distill"])
def test_the_exported_script_trains_the_phase_first_and_matches_the_engine(phase, tmp_path):
    from engine.io.export import export_script
    from tests.test_export import assert_same_run, run_in_process

    spec = transfer_spec(**{"model.layers": CNN[:1] + CNN[2:]}) if phase == "pretrain" else \
        ExperimentSpec.from_dict({
            "data": {"name": "digits", "n": 300},
            "model": {"layers": [{"type": "linear", "units": 8}, {"type": "dropout", "p": 0.2}]},
            "training": {"steps": 15, "log_every": 5, "augment": {"noise": 0.1}},
            "distill": {"teacher": [{"type": "linear", "units": 24}, {"type": "dropout"}],
                        "steps": 20, "temperature": 3, "alpha": 0.7}})
    source = export_script(spec)
    summary, namespace = run_in_process(source, tmp_path)
    trainer = Trainer(spec).run()
    assert_same_run(summary, namespace["model"].state_dict(), trainer)
    kept = namespace.get("pretraining_summary") or namespace.get("teacher_summary")
    assert kept["steps"] == trainer.phase["steps"]
    assert kept["history"][-1]["val_acc"] == pytest.approx(trainer.phase["rows"][-1]["val_acc"])
    if phase == "pretrain":  # the frozen layers' weights are the pretrained net's, exactly
        for key, value in namespace["pretrained"].state_dict().items():
            if key.split(".")[0] in trainer.frozen:
                assert torch.equal(namespace["model"].state_dict()[key], value), key


def test_cancelling_during_pretraining_stops_the_run():
    t = Trainer(transfer_spec(**{"pretrain.steps": 5000}))
    t.cancel()
    t.run()
    assert t.stopped == "cancelled" and t.step_count == 0 and t.phase is None


# ----------------------------------------------------------------------------- distillation

def test_distill_loss_is_the_softened_kl_and_its_gradient_the_closed_form():
    torch.manual_seed(0)
    s = torch.randn(5, 4, requires_grad=True)
    t_out, T = torch.randn(5, 4), 3.0
    p_t, p_s = torch.softmax(t_out / T, 1), torch.softmax(s / T, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    hard = torch.tensor(0.7)
    loss = distill_loss(s, t_out, hard, T, 0.8)
    assert math.isclose(loss.detach().item(), 0.8 * T * T * kl.detach().item() + 0.2 * 0.7, rel_tol=1e-5)
    loss.backward()
    # d/ds of T^2 KL(p_t || softmax(s/T)), averaged over the batch: T (p_s - p_t) / batch
    assert torch.allclose(s.grad, 0.8 * T * (p_s - p_t).detach() / 5, atol=1e-6)


def test_a_distilled_student_logs_its_label_loss_and_learns_from_the_teacher():
    spec = ExperimentSpec.from_dict({
        "data": {"name": "digits", "n": 400},
        "model": {"layers": [{"type": "linear", "units": 8}]},
        "training": {"steps": 20, "log_every": 5},
        "distill": {"teacher": [{"type": "linear", "units": 32}], "steps": 40,
                    "temperature": 2, "alpha": 0.5}})
    t = Trainer(spec).run()
    assert t.phase["kind"] == "distill" and t.phase["steps"] == 40
    assert t.phase["params"] == 64 * 32 + 32 + 32 * 10 + 10  # the teacher's
    teacher = Trainer(teacher_spec(spec)).run()
    assert math.isclose(t.phase["val_acc"], teacher.evaluate("val")["acc"])
    # the logged train loss is the label loss (comparable with an undistilled run's) ...
    row = t.history.rows[-1]
    assert 0 < row["train_loss"] < 5
    # ... while the update followed the distillation objective: not the plain run's weights
    plain = Trainer(spec.with_changes({"distill": None})).run()
    assert not torch.equal(plain.model.state_dict()["out.weight"], t.model.state_dict()["out.weight"])


@pytest.mark.parametrize("config, why", [
    ({"data": {"name": "plane"}}, "classification dataset"),
    ({"data": {"name": "circle"}, "loss": "bce"}, "multi-class loss"),
])
def test_distillation_needs_class_probabilities(config, why):
    with pytest.raises(SpecError, match=why):
        ExperimentSpec.from_dict({**config, "distill": {"teacher": [16]}})


# ----------------------------------------------------------------------------- int8 weights

def test_int8_values_are_torchs_per_channel_quantization():
    w = torch.randn(6, 3, 3, 3)
    q, scale = quantize_tensor(w)
    with warnings.catch_warnings():  # deprecated in torch, still the reference here
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_channel(w, scale.double(), torch.zeros(6, dtype=torch.long), 0,
                                         torch.qint8)
    assert torch.equal(q, ref.int_repr()) and int(q.abs().max()) == 127
    assert torch.allclose(ref.dequantize(), q.float() * scale[:, None, None, None])


def test_int8_sizes_are_the_closed_form_and_the_original_is_untouched():
    net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    before = copy.deepcopy(net.state_dict())
    q, sizes = quantize_model(net)
    weights, biases, rows = 20 * 30 + 30 * 5, 30 + 5, 30 + 5
    assert sizes["float_bytes"] == 4 * (weights + biases)
    assert sizes["int8_bytes"] == weights + 4 * rows + 4 * biases
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    step = net[0].weight.abs().amax(1, keepdim=True) / 127  # at most half a step away
    assert ((q[0].weight - net[0].weight).abs() <= step / 2 + 1e-7).all()


def test_the_report_scores_both_models_on_the_same_split():
    t = Trainer(ExperimentSpec.from_dict({"data": {"name": "digits", "n": 300},
                                          "training": {"steps": 60}})).run()
    report = quantization_report(t)
    assert report["float_acc"] == t.evaluate("val")["acc"]
    assert abs(report["int8_acc"] - report["float_acc"]) <= 0.05
    assert 3.5 < report["ratio"] < 4


# ----------------------------------------------------------------------------- review fixes

def test_distillation_over_steps_softens_each_steps_classes():
    """(batch, steps, classes): a per-step shift of the logits changes no softmax, so KL is 0;
    otherwise each (example, step) is one example of the batch mean."""
    torch.manual_seed(1)
    teacher = torch.randn(3, 5, 4)
    shifted = teacher + torch.randn(3, 5, 1)  # the same distributions
    assert distill_loss(shifted, teacher, torch.tensor(0.0), 2.0, 1.0).item() == \
        pytest.approx(0.0, abs=1e-6)
    student = torch.randn(3, 5, 4)
    flat = distill_loss(student.reshape(15, 4), teacher.reshape(15, 4), torch.tensor(0.0), 2.0, 1.0)
    assert distill_loss(student, teacher, torch.tensor(0.0), 2.0, 1.0).item() == \
        pytest.approx(flat.item(), rel=1e-6)


@pytest.mark.slow
def test_a_teacher_that_cannot_be_built_is_named_before_training():
    spec = ExperimentSpec.from_dict({"data": {"name": "copy", "n": 100},
                                     "model": {"layers": [{"type": "gru", "units": 8}]},
                                     "distill": {"teacher": [16, 16]}})
    with pytest.raises(SpecError, match=r"^distill.teacher: copy wants an answer at every step"):
        Trainer(spec)
    from ui.state import default_teacher
    for name in ("copy", "chars", "reber", "digits", "moons"):  # the page's defaults train
        config = {"data": {"name": name} | ({"n": 100} if name not in ("chars",) else {}),
                  "distill": {"teacher": default_teacher(name), "steps": 2},
                  "training": {"steps": 2}}
        if name in ("copy", "chars", "reber"):
            config["model"] = {"layers": default_teacher(name)}  # a student of the same kind
        assert Trainer(ExperimentSpec.from_dict(config)).run().phase["steps"] == 2, name


@pytest.mark.parametrize("data", [{"name": "copy", "subset": [1, 2]},
                                  {"name": "chars", "subset": [1, 2]}])
def test_a_class_subset_needs_one_class_per_example(data):
    with pytest.raises(SpecError, match="class at every step"):
        ExperimentSpec.from_dict({"data": data})


def test_a_cancel_during_the_teacher_phase_ends_the_run():
    import threading
    spec = ExperimentSpec.from_dict({"data": {"name": "digits", "n": 300},
                                     "distill": {"teacher": [64], "steps": 100_000}})
    t = Trainer(spec)
    threading.Timer(0.5, t.cancel).start()
    t.run()
    assert t.stopped == "cancelled" and t.step_count == 0 and t.phase is None
    assert not t.run().step_count  # and it stays stopped: no run without its teacher
