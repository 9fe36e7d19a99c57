"""Trainer: reproducible, resumable, stops for the right reasons, cleans up its hooks, and writes
rows that match the metrics contract (DESIGN.md §2.2)."""
import copy
import json
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from engine import Callback, CancelFit, ExperimentSpec, History, SpecError, Trainer
from engine.data.datasets import Dataset

SMALL = {
    "seed": 1,
    "data": {"name": "spiral", "n": 120, "val_fraction": 0.25},
    "model": {"layers": [8, {"type": "dropout", "p": 0.2}, 6]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "training": {"batch_size": 16, "steps": 30},
    "diagnostics": {"every": 5},
}


def spec(**over):
    config = copy.deepcopy(SMALL)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(config.get(k), dict) and "name" not in v:
            config[k].update(v)
        else:
            config[k] = v
    return ExperimentSpec.from_dict(config)


def params_of(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


# ----------------------------------------------------------------------------- reproducibility


def test_same_spec_same_seed_same_history_and_weights():
    a, b = Trainer(spec()).run(), Trainer(spec()).run()
    assert len(a.history) == 7  # steps 1, 5, 10, ..., 30
    assert a.history == b.history
    assert all(torch.equal(p, q) for p, q in zip(params_of(a), params_of(b)))


def test_a_different_seed_gives_a_different_run():
    a, c = Trainer(spec()).run(), Trainer(spec(seed=2)).run()
    assert a.history != c.history
    assert a.history.column("train_loss") != c.history.column("train_loss")


def test_two_interleaved_runs_do_not_disturb_each_other():
    ref = Trainer(spec()).run()
    a, b = Trainer(spec()), Trainer(spec(seed=5))
    for _ in range(30):
        a.step()
        b.step()
    assert a.history == ref.history


def test_run_is_resumable():
    once = Trainer(spec()).run(30)
    twice = Trainer(spec())
    twice.run(12)
    assert twice.step_count == 12 and not twice.done
    twice.run(18)
    assert once.history == twice.history
    stepped = Trainer(spec())
    while stepped.step():
        pass
    assert stepped.history == once.history
    assert all(torch.equal(p, q) for p, q in zip(params_of(once), params_of(stepped)))


def test_run_stops_at_the_planned_steps_and_step_returns_false_after():
    t = Trainer(spec())
    t.run(1000)
    assert t.step_count == 30 and t.stopped == "completed"
    before = params_of(t)
    assert t.step() is False
    t.run(5)
    assert t.step_count == 30 and len(t.history) == 7
    assert all(torch.equal(p, q) for p, q in zip(before, params_of(t)))
    assert t.summary()["stopped"] == "completed" and t.summary()["steps"] == 30


# ----------------------------------------------------------------------------- rows


ROW_KEYS = {"step", "epoch", "lr", "train_loss", "val_loss", "train_acc", "val_acc", "grad_norm",
            "layers", "health"}
ROW_EXTRAS = {"clip_frac", "train_eval_loss", "train_eval_acc"}
LAYER_KEYS = {"name", "act_grad_norm", "weight_grad_norm", "weight_norm", "update_ratio",
              "act_mean", "act_std", "saturated_frac", "dead_frac"}


def check_row(row):
    keys = set(row)
    assert ROW_KEYS <= keys and keys - ROW_KEYS <= ROW_EXTRAS, keys ^ ROW_KEYS
    json.dumps(row, allow_nan=False)  # strict JSON: no NaN/inf sneaks in
    assert set(row["health"]) >= {"status", "messages"}
    assert row["health"]["status"] in {"ok", "vanishing", "exploding", "dead", "saturated",
                                       "diverged", "plateau"}
    assert isinstance(row["health"]["messages"], list)
    if row["layers"] is not None:
        for layer in row["layers"]:
            assert set(layer) == LAYER_KEYS, set(layer) ^ LAYER_KEYS


def test_rows_match_the_metrics_contract():
    t = Trainer(spec(training={"grad_clip": 1.0})).run()
    rows = t.history.rows
    assert [r["step"] for r in rows] == [1, 5, 10, 15, 20, 25, 30]
    n_train = len(t.data.y_train)
    for row in rows:
        check_row(row)
        assert row["epoch"] == pytest.approx(row["step"] * 16 / n_train)
        assert row["lr"] == 0.1
        for k in ("train_loss", "val_loss", "train_acc", "val_acc", "grad_norm"):
            assert isinstance(row[k], float) and math.isfinite(row[k]), k
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert [lay["name"] for lay in row["layers"]] == ["fc1", "fc2", "out"]  # dropout hidden
        assert "clip_frac" in row
    # the history round-trips through JSON lines (metrics.jsonl)
    assert History.from_jsonl(t.history.to_jsonl()) == t.history


def test_regression_rows_have_no_accuracy():
    t = Trainer(spec(data={"name": "plane", "n": 80}, model={"layers": [4]})).run(5)
    for row in t.history.rows:
        check_row(row)
        assert row["train_acc"] is None and row["val_acc"] is None
        assert row["val_loss"] is not None


def test_train_loss_is_the_mean_of_the_batch_losses_since_the_last_row():
    losses = []
    t = Trainer(spec(model={"layers": [8, 6]}))
    orig = t.loss_fn

    def recording(out, y):
        value = orig(out, y)
        if torch.is_grad_enabled():
            losses.append(value.item())
        return value

    t.loss_fn = recording
    t.run(10)
    rows = t.history.rows
    assert rows[0]["train_loss"] == pytest.approx(losses[0], rel=1e-6)
    assert rows[1]["train_loss"] == pytest.approx(sum(losses[1:5]) / 4, rel=1e-6)
    assert rows[2]["train_loss"] == pytest.approx(sum(losses[5:10]) / 5, rel=1e-6)


def test_eval_every_limits_validation_passes():
    t = Trainer(spec(training={"eval_every": 10})).run()
    with_val = [r["step"] for r in t.history.rows if r["val_loss"] is not None]
    assert with_val == [1, 10, 20, 30]


def test_no_validation_split_gives_no_val_metrics():
    t = Trainer(spec(data={"val_fraction": 0.0})).run(5)
    assert all(r["val_loss"] is None and r["val_acc"] is None for r in t.history.rows)


def test_test_metrics_only_with_a_test_split():
    t = Trainer(spec(data={"test_fraction": 0.2})).run()
    assert len(t.data.y_test) == 24
    with torch.no_grad():
        t.model.eval()
        out = t.model(t.data.x_test)
    expected_loss = F.cross_entropy(out, t.data.y_test).item()
    expected_acc = (out.argmax(1) == t.data.y_test).float().mean().item()
    assert t.test_metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert t.test_metrics["acc"] == pytest.approx(expected_acc)
    assert t.summary()["test"] == t.test_metrics
    none = Trainer(spec()).run()
    assert none.test_metrics is None and none.summary()["test"] is None


def test_evaluate_is_in_eval_mode_and_restores_training_mode():
    t = Trainer(spec(model={"layers": [8, {"type": "dropout", "p": 0.5}, 6]}))
    t.run(3)
    a, b = t.evaluate("val"), t.evaluate("val")
    assert a == b  # dropout is off during evaluation: identical results
    assert t.model.training
    probs = t.predict(t.data.x_val)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(t.data.y_val)))


# ----------------------------------------------------------------------------- stopping


def test_early_stopping_stops_and_restores_the_best_weights():
    s = ExperimentSpec.from_dict({
        "seed": 0, "data": {"name": "spiral", "n": 150, "noise": 0.3},
        "model": {"layers": [32, 32]}, "optimizer": {"name": "adam", "lr": 0.03},
        "training": {"batch_size": 32, "steps": 3000, "early_stopping": {"patience": 3}},
        "diagnostics": {"every": 10}})
    t = Trainer(s).run()
    assert t.stopped == "early_stopping"
    assert t.step_count < 3000
    rows = [r for r in t.history.rows if r["val_loss"] is not None]
    best = min(rows, key=lambda r: r["val_loss"])
    # patience 3: the three evaluations after the best one did not improve, then it stopped
    assert rows[-1]["step"] == rows[rows.index(best) + 3]["step"] == t.step_count
    assert all(r["val_loss"] >= best["val_loss"] for r in rows[rows.index(best):])
    assert t.restored_step == best["step"]
    assert t.evaluate("val")["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    assert t.history.rows[-1]["val_loss"] != pytest.approx(best["val_loss"], rel=1e-6)
    assert t.summary()["best"] == {"step": best["step"], "val_loss": best["val_loss"]}


def test_early_stopping_without_restore_keeps_the_last_weights():
    s = ExperimentSpec.from_dict({
        "seed": 0, "data": {"name": "spiral", "n": 150, "noise": 0.3},
        "model": {"layers": [32, 32]}, "optimizer": {"name": "adam", "lr": 0.03},
        "training": {"batch_size": 32, "steps": 3000,
                     "early_stopping": {"patience": 3, "restore_best": False}},
        "diagnostics": {"every": 10}})
    t = Trainer(s).run()
    assert t.stopped == "early_stopping" and t.restored_step is None
    assert t.evaluate("val")["loss"] == pytest.approx(t.history.rows[-1]["val_loss"], rel=1e-6)


class StubTrainer:
    def __init__(self):
        self.model = torch.nn.Linear(2, 1)
        self.stopped = None
        self.restored_step = None

    def stop(self, reason):
        self.stopped = self.stopped or reason


@pytest.mark.parametrize("losses,patience,min_delta,stop_after,best_step", [
    ([1.0, 0.9, 0.8, 0.7], 2, 0.0, None, 4),
    ([1.0, 0.9, 0.9, 0.9], 2, 0.0, 4, 2),        # an equal loss is no improvement
    ([1.0, 0.9, 0.95, 0.85, 0.9, 0.91], 2, 0.0, 6, 4),
    ([1.0, 0.95, 0.99, 0.93], 2, 0.06, 3, 1),    # improvements under min_delta do not count
    ([1.0, 1.2], 1, 0.0, 2, 1),
])
def test_early_stopping_rule(losses, patience, min_delta, stop_after, best_step):
    from engine.train.callbacks import EarlyStopping
    cb, t = EarlyStopping(patience, min_delta), StubTrainer()
    stopped_at = None
    for step, loss in enumerate(losses, 1):
        with torch.no_grad():
            t.model.weight.fill_(step)  # the weights "at" this evaluation
        cb.on_log(t, {"step": step, "val_loss": loss})
        if t.stopped:
            stopped_at = step
            break  # the trainer evaluates no more after a stop
    assert stopped_at == stop_after
    assert cb.best_step == best_step
    cb.on_fit_end(t)
    assert t.restored_step == best_step
    assert torch.equal(t.model.weight, torch.full((1, 2), float(best_step)))


def test_cancel_from_a_callback():
    class CancelAt(Callback):
        def on_step_end(self, trainer):
            if trainer.step_count == 7:
                trainer.cancel()

    t = Trainer(spec(), callbacks=[CancelAt()]).run()
    assert t.stopped == "cancelled" and t.step_count == 7
    assert t.step() is False


def test_cancel_fit_raised_in_a_callback():
    class Raise(Callback):
        def on_after_backward(self, trainer):
            if trainer.step_count == 4:  # during step 5, a logged step with hooks in place
                raise CancelFit()

    t = Trainer(spec(), callbacks=[Raise()]).run()
    assert t.stopped == "cancelled" and t.step_count == 4
    assert_no_hooks(t.model, t)


def test_cancel_from_another_thread():
    reached, go_on = threading.Event(), threading.Event()

    class Gate(Callback):
        def on_step_end(self, trainer):
            if trainer.step_count == 6:
                reached.set()
                assert go_on.wait(10)

    t = Trainer(spec(training={"steps": 10_000}), callbacks=[Gate()])
    worker = threading.Thread(target=t.run)
    worker.start()
    assert reached.wait(10)
    t.cancel()
    go_on.set()
    worker.join(10)
    assert not worker.is_alive()
    assert t.stopped == "cancelled" and t.step_count == 6
    assert t.summary()["stopped"] == "cancelled"


def test_divergence_stops_at_once_and_keeps_finite_weights():
    s = ExperimentSpec.from_dict({
        "seed": 0, "data": {"name": "plane", "n": 100}, "model": {"layers": [16, 16]},
        "optimizer": {"name": "sgd", "lr": 10.0}, "training": {"batch_size": 16, "steps": 200},
        "diagnostics": {"every": 10}})
    t = Trainer(s).run()
    assert t.stopped == "diverged"
    assert t.step_count < 200
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    last = t.history.rows[-1]
    assert last["step"] == t.step_count + 1 and last["train_loss"] is None
    assert last["health"]["status"] == "diverged"
    assert any("lower" in m.lower() or "smaller" in m.lower() for m in last["health"]["messages"])
    check_row(last)
    assert t.summary()["stopped"] == "diverged"
    assert t.step() is False
    assert_no_hooks(t.model, t)


def test_a_divergence_logs_its_blow_up_step_by_step():
    """Issue 31, item 7: rows every 10 steps drew a diverging run as one or two dots. The steps
    since the last row are logged at a divergence, each with its batch loss, checked against a
    plain PyTorch loop of full-batch gradient descent from the same weights."""
    import copy

    s = ExperimentSpec.from_dict({
        "seed": 0, "data": {"name": "spiral", "n": 200}, "model": {
            "layers": [32, 32], "activation": "leaky_relu"},
        "optimizer": {"name": "sgd", "lr": 5.0, "momentum": 0.0},
        "training": {"batch_size": 10_000, "steps": 200, "log_every": 10}})
    t = Trainer(s)
    plain = copy.deepcopy(t.model)
    t.run()
    assert t.stopped == "diverged"
    x, y = t.data.x_train, t.data.y_train
    opt = torch.optim.SGD(plain.parameters(), lr=5.0)
    losses = {}
    for step in range(1, t.step_count + 2):
        loss = torch.nn.functional.cross_entropy(plain(x), y)
        losses[step] = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not math.isfinite(losses[t.step_count + 1])  # the step that diverged
    rows = t.history.rows
    tail = [r for r in rows if r["step"] > 1 and r["val_loss"] is None]
    assert [r["step"] for r in tail] == list(range(2, t.step_count + 2)), "every step, in order"
    for r in tail[:-1]:
        assert r["train_loss"] == pytest.approx(losses[r["step"]], rel=1e-3)
        check_row(r)
    assert tail[-1]["train_loss"] is None and rows[-1] is tail[-1]
    assert max(r["train_loss"] for r in tail[:-1]) > 1e6 * rows[0]["train_loss"], "a blow-up"


def test_a_nan_loss_applies_no_update():
    base = Trainer(spec())
    d = base.data
    x_train = d.x_train.clone()
    x_train[0, 0] = float("nan")  # the first batch of a full-batch run contains it
    poisoned = Dataset(**{**d.__dict__, "x_train": x_train})
    t = Trainer(spec(training={"batch_size": 1000}), dataset=poisoned)
    before = params_of(t)
    t.run()
    assert t.stopped == "diverged" and t.step_count == 0
    assert t.divergence["step"] == 1 and t.divergence["loss"] == "NaN"
    assert all(torch.equal(p, q) for p, q in zip(before, params_of(t)))


# ----------------------------------------------------------------------------- hooks


def assert_no_hooks(model, trainer=None):
    for name, m in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            assert not getattr(m, kind, None), f"{name} keeps {kind}"
    if trainer is not None:
        assert not trainer.diagnostics._hooks._handles  # tensor hooks included


def test_hooks_are_removed_after_runs_and_between_steps():
    t = Trainer(spec(model={"layers": [8, {"type": "residual", "units": 6}, {"type": "batchnorm"}]}))
    for _ in range(6):  # steps 1 and 5 are logged, the others not
        t.step()
        assert_no_hooks(t.model, t)
    t.run()
    assert_no_hooks(t.model, t)


def test_hooks_are_removed_when_a_callback_fails_mid_step():
    class Boom(Callback):
        def on_after_backward(self, trainer):
            raise RuntimeError("boom")

    t = Trainer(spec(), callbacks=[Boom()])
    with pytest.raises(RuntimeError):
        t.step()
    # the next logged step starts by dropping whatever the failed one left
    t.callbacks.pop()
    t.step()
    assert_no_hooks(t.model, t)


# ----------------------------------------------------------------------------- schedules


def expected_plateau_lrs(val_losses, lr0, factor, patience, threshold=1e-4, eps=1e-8):
    """torch's ReduceLROnPlateau rule ('min', relative threshold; a cut smaller than eps is
    skipped), written out: the LR in force for each row given the losses of the rows before it."""
    lrs, lr, best, bad = [], lr0, math.inf, 0
    for loss in val_losses:
        lrs.append(lr)
        if loss < best * (1 - threshold):
            best, bad = loss, 0
        else:
            bad += 1
        if bad > patience:
            if lr - lr * factor > eps:
                lr = lr * factor
            bad = 0
    return lrs


def test_reduce_on_plateau_lowers_the_lr_when_val_loss_stalls():
    # a tiny learning rate: the validation loss barely moves, so it counts as stalled
    t = Trainer(spec(optimizer={"name": "sgd", "lr": 1e-6},
                     schedule={"name": "reduce_on_plateau", "factor": 0.5, "patience": 2},
                     training={"steps": 60}, diagnostics={"every": 2})).run()
    rows = t.history.rows
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == 1e-6 and lrs[-1] < 1e-6
    want = expected_plateau_lrs([r["val_loss"] for r in rows], 1e-6, 0.5, 2)
    assert lrs == pytest.approx(want, rel=1e-9)
    assert len(set(lrs)) >= 3  # more than one cut


def test_reduce_on_plateau_keeps_the_lr_while_val_loss_improves():
    t = Trainer(spec(optimizer={"name": "adam", "lr": 0.01},
                     schedule={"name": "reduce_on_plateau", "factor": 0.5, "patience": 20},
                     training={"steps": 40})).run()
    assert {r["lr"] for r in t.history.rows} == {0.01}


def test_a_lone_leftover_example_is_skipped_so_batchnorm_trains():
    # 481 training examples, batch 32: each epoch would end with a batch of one
    spec = ExperimentSpec.from_dict({"data": {"name": "spiral", "n": 601},
                                     "model": {"layers": [16, {"type": "batchnorm"}]},
                                     "training": {"steps": 40, "batch_size": 32}})
    trainer = Trainer(spec).run()
    assert trainer.stopped == "completed"


def test_batchnorm_with_batches_of_one_is_rejected():
    with pytest.raises(SpecError, match="batch_size=1 cannot train a batchnorm"):
        ExperimentSpec.from_dict({"model": {"layers": [8, {"type": "batchnorm"}]},
                                  "training": {"batch_size": 1}})


def test_the_parameter_cap_is_checked_before_anything_is_allocated():
    huge = ExperimentSpec.from_dict({"model": {"layers": [8192] * 200}})
    with pytest.raises(SpecError, match="at most 1,000 are allowed"):
        Trainer(huge, max_params=1000)


def test_callbacks_run_by_order_and_old_on_eval_callbacks_still_hear_every_row():
    heard, seen_order = [], []

    class Old(Callback):  # written against the on_eval name
        def on_eval(self, trainer, row):
            heard.append(row["step"])

    class First(Callback):
        order = 0

        def on_step_end(self, trainer):
            seen_order.append(trainer.row is not None and "health" not in trainer.row)

    t = Trainer(spec(), callbacks=[Old(), First()])
    assert [cb.order for cb in t.callbacks] == sorted(cb.order for cb in t.callbacks)
    assert t.callbacks[0].__class__ is First and t.callback("health") is not None
    assert [cb.name for cb in t.callbacks if cb.order < 100][1:] == [
        "diagnostics", "health"]  # spec(): no penalty, clipping or early stopping
    t.run(20)
    assert heard == [r["step"] for r in t.history.rows]
    assert seen_order[0]  # order 0 ran before HealthCheck wrote the verdict


def test_a_completed_run_extended_trains_on_as_if_planned_longer():
    """Start after the end continues: the same model, optimizer state, batches and dropout
    masks, so 100 steps then 50 more are the 150-step run, row for row."""
    config = {"data": {"name": "moons", "n": 200}, "seed": 4,
              "model": {"layers": [16, {"type": "dropout", "p": 0.2}, 8]},
              "optimizer": {"name": "adam", "lr": 0.01},
              "training": {"steps": 100, "log_every": 10}}
    first = Trainer(config).run()
    assert first.stopped == "completed"
    first.extend(50)
    assert first.stopped is None and first.total_steps == 150
    first.run()
    whole = Trainer({**config, "training": {"steps": 150, "log_every": 10}}).run()
    assert first.stopped == "completed" and first.step_count == 150
    assert [r["step"] for r in first.history.rows] == [r["step"] for r in whole.history.rows]
    for a, b in zip(first.history.rows, whole.history.rows):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    for (k, v), w in zip(first.model.state_dict().items(), whole.model.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="completed"):
        Trainer({"data": {"name": "plane", "n": 100}, "model": {"layers": [16, 16]},
                 "optimizer": {"name": "sgd", "lr": 10.0}, "training": {"steps": 40}}
                ).run().extend(10)  # diverged: nothing to go on from


def test_an_extended_run_keeps_the_schedules_last_rate():
    t = Trainer({"data": {"name": "moons", "n": 200}, "schedule": "cosine",
                 "training": {"steps": 60, "log_every": 10}}).run()
    last = t.lr()
    t.extend(40)
    t.run()
    assert [r["lr"] for r in t.history.rows if r["step"] > 60] == [last] * 4


def test_a_run_whose_best_weights_were_restored_is_not_extended():
    """Found in review: going on from restored weights would not be the same run going on."""
    t = Trainer({"data": {"name": "moons", "n": 200}, "model": {"layers": [8]},
                 "optimizer": {"name": "sgd", "lr": 0.5},
                 "training": {"steps": 60, "log_every": 5, "early_stopping": 1000}}).run()
    assert t.stopped == "completed" and t.restored_step is not None
    with pytest.raises(ValueError, match="restored"):
        t.extend(10)


@pytest.mark.parametrize("steps,every", [(200, 10), (205, 10), (7, 3), (1, 5)])
def test_logged_rows_counts_the_rows_a_run_logs(steps, every):
    """What ASHA's rungs are measured in (engine/runs/ray_backend.py) is what a run logs."""
    from engine.train.trainer import logged_rows
    spec = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [4]},
                                     "training": {"steps": steps, "log_every": every}})
    assert logged_rows(spec) == len(Trainer(spec).run().history.rows)
