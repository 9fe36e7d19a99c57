"""Sweeps: the batched path gives each variant the numbers it gets trained alone (within float
rounding), variants are planned and validated as asked, k-fold folds are disjoint and cover the
data, seed ensembles average correctly, and the CLI writes results.json and the store."""
import json
import math

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.__main__ import main
from engine.data.datasets import load_dataset
from engine.runs.batched import BatchedRuns, dense_layers, why_not
from engine.runs.store import RunStore, resume
from engine.runs.sweep import parse_grid, parse_range, parse_seeds, plan, run

TFP = {"data": {"name": "spiral", "n": 300}, "model": {"layers": [8, 8], "activation": "tanh"},
       "training": {"steps": 200, "log_every": 10, "batch_size": 10}}


def spec(base=TFP, **changes) -> ExperimentSpec:
    config = json.loads(json.dumps(base))
    for key, value in changes.items():
        node = config
        *path, last = key.split("__")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return ExperimentSpec.from_dict(config)


def close(a: float | None, b: float | None, rtol=1e-4, atol=1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= atol + rtol * abs(a)


def assert_same_runs(alone: list, batched: list):
    """Every row's metrics within float rounding; the same stops, verdicts and layers."""
    for a, b in zip(alone, batched):
        assert a.stopped == b.stopped and a.step_count == b.step_count
        assert [r["step"] for r in a.history.rows] == [r["step"] for r in b.history.rows]
        for ra, rb in zip(a.history.rows, b.history.rows):
            for key in ("train_loss", "val_loss", "train_acc", "val_acc", "grad_norm", "lr"):
                assert close(ra.get(key), rb.get(key)), (ra["step"], key, ra.get(key),
                                                         rb.get(key))
            assert (ra.get("health") or {}).get("status") == (rb.get("health") or {}).get("status")
            assert [lay["name"] for lay in ra.get("layers") or ()] == \
                [lay["name"] for lay in rb.get("layers") or ()]
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.allclose(pa, pb, rtol=1e-3, atol=1e-5)


def train_both(specs: list[ExperimentSpec], **kw):
    alone = [Trainer(s, **kw).run() for s in specs]
    together = [Trainer(s, **kw) for s in specs]
    assert all(why_not(t) is None for t in together), [why_not(t) for t in together]
    BatchedRuns(together).run()
    return alone, together


OPTIMIZERS = [{"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.03, "momentum": 0.9},
              {"name": "sgd", "lr": 0.03, "momentum": 0.9, "nesterov": True,
               "weight_decay": 0.001},
              {"name": "sgd", "lr": 0.05, "momentum": 0.5}]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.slow
def test_batched_variants_train_as_each_would_alone(optimizer):
    """Rates, momenta, decays, schedules, seeds, initialisers and penalties, mixed in one group
    of a dense net (batched matrix products)."""
    specs = []
    for k in range(6):
        opt = OPTIMIZERS[k % 4] if optimizer == "sgd" else \
            {"name": optimizer, "lr": [0.01, 0.003][k % 2],
             "weight_decay": [0.0, 0.01][k // 3]}
        specs.append(spec(seed=k, optimizer=opt,
                          schedule=["constant", "cosine", "warmup_cosine", "step"][k % 4],
                          regularization={"l1": 1e-4 * (k % 2), "l2": 1e-3 * (k % 3)},
                          model__init=["xavier_uniform", "he_normal"][k % 2]))
    alone, together = train_both(specs)
    assert dense_layers(together[0].model) is not None
    assert_same_runs(alone, together)


@pytest.mark.parametrize("config", [
    {"data": {"name": "digits"}, "model": {"activation": "relu", "layers": [
        {"type": "conv2d", "filters": 4, "padding": "same"}, {"type": "maxpool"},
        {"type": "flatten"}, 16]}, "training": {"steps": 60, "log_every": 20, "batch_size": 32}},
    {"data": {"name": "spiral", "n": 200}, "model": {"activation": "relu", "layers": [
        {"type": "residual", "units": 8, "depth": 2}]}, "training": {"steps": 100}},
    {"data": {"name": "plane", "n": 200}, "model": {"layers": [6]}, "loss": "huber",
     "training": {"steps": 100}},
    {"data": {"name": "xor", "n": 200}, "model": {"layers": [4]}, "loss": "bce",
     "training": {"steps": 100}},
], ids=["conv", "residual", "regression", "one-logit"])
@pytest.mark.slow
def test_other_shapes_batch_through_vmap_with_the_same_numbers(config):
    specs = [spec(config, seed=k, optimizer={"name": "adam", "lr": 0.003 * (k + 1)})
             for k in range(3)]
    alone, together = train_both(specs)
    assert_same_runs(alone, together)


def test_a_variant_that_diverges_stops_alone_and_leaves_the_others_as_they_were():
    plane = {**TFP, "data": {"name": "plane", "n": 200}, "model": {"layers": [8]}}
    specs = [spec(plane, optimizer={"name": "sgd", "lr": lr}, seed=1) for lr in (0.05, 10.0, 0.1)]
    alone, together = train_both(specs)
    assert [t.stopped for t in together] == ["completed", "diverged", "completed"]
    assert together[1].divergence["step"] == alone[1].divergence["step"]
    assert together[1].history.last["health"]["status"] == "diverged"
    assert_same_runs(alone, together)


def test_what_does_not_batch_says_why():
    assert "Dropout" in why_not(Trainer(spec(model__layers=[8, {"type": "dropout", "p": 0.2}])))
    assert "clipping" in why_not(Trainer(spec(training__grad_clip=1.0)))
    assert "rmsprop" in why_not(Trainer(spec(optimizer="rmsprop")))
    assert "validation loss" in why_not(Trainer(spec(schedule="reduce_on_plateau")))
    assert "more than the rate" in why_not(Trainer(spec(schedule={
        "name": "one_cycle", "cycle_momentum": True}, optimizer={"name": "sgd",
                                                                "momentum": 0.9})))
    with pytest.raises(ValueError, match="shape"):
        BatchedRuns([Trainer(spec()), Trainer(spec(model__layers=[8, 9]))])


@pytest.mark.slow
def test_a_batched_variant_leaves_a_checkpoint_that_goes_on_as_the_run_alone(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    specs = [spec(seed=k, optimizer={"name": name, "lr": 0.01, "momentum": 0.9}
                  if name == "sgd" else {"name": name, "lr": 0.01}, schedule="cosine")
             for k, name in enumerate(["sgd", "adam"])]
    variants = plan(specs[0], grid={"optimizer": [s.to_dict()["optimizer"] for s in specs]})
    result = run(variants, store=store)
    assert result["groups"] == [{"size": 1, "batched": False, "alone_because":
                                 "no other variant has its shape"}] * 2  # two optimizers
    pair = plan(specs[1], seeds=[0, 1])
    result = run(pair, store=store)
    assert result["groups"][0]["batched"]
    alone = Trainer(pair[1].spec).run()
    alone.extend(30)
    alone.run()
    resumed = resume(store, result["variants"][1]["run_id"])
    assert resumed.done and resumed.step_count == 200
    resumed.extend(30)
    resumed.run()
    assert close(resumed.history.last["train_loss"], alone.history.last["train_loss"], 1e-3)
    assert close(resumed.history.last["val_loss"], alone.history.last["val_loss"], 1e-3)


# ----------------------------------------------------------------------------- planning


def test_a_grid_times_seeds_gives_every_combination_on_the_base_runs_data():
    base = spec(seed=7)
    variants = plan(base, {"optimizer.lr": [0.01, 0.1], "model.layers.0.units": [4, 16]},
                    seeds=[0, 1, 2])
    assert len(variants) == 12
    assert {(v.changes["optimizer.lr"], v.changes["model.layers.0.units"], v.seed)
            for v in variants} == {(lr, u, s) for lr in (0.01, 0.1) for u in (4, 16)
                                   for s in (0, 1, 2)}
    v = variants[5]
    assert v.spec.optimizer.params["lr"] == v.changes["optimizer.lr"] and v.spec.seed == v.seed
    assert v.spec.model.layers[0].params["units"] == v.changes["model.layers.0.units"]
    assert all(v.spec.data.seed == 7 for v in variants)  # the data stays the base run's
    # a variant's spec trains alone to the numbers it had in the sweep
    result = run(variants[:3])
    alone = Trainer(variants[2].spec).run()
    assert close(result["variants"][2]["final"]["val_loss"], alone.history.last["val_loss"])
    assert plan(base, {"optimizer.lr": [0.1]})[0].spec.data.seed is None  # no seeds: as given


def test_a_random_search_is_reproducible_and_stays_in_its_ranges():
    ranges = dict([parse_range("optimizer.lr=log:1e-4..1e-1"),
                   parse_range("regularization.l2=0..0.01")])
    a = plan(spec(), {"model.activation": ["relu", "tanh"]}, random=20, ranges=ranges,
             search_seed=3)
    b = plan(spec(), {"model.activation": ["relu", "tanh"]}, random=20, ranges=ranges,
             search_seed=3)
    assert [v.changes for v in a] == [v.changes for v in b] and len(a) == 20
    lrs = [v.changes["optimizer.lr"] for v in a]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert sum(lr < 3.2e-3 for lr in lrs) >= 4  # log-uniform: the low decades are drawn too
    assert {v.changes["model.activation"] for v in a} == {"relu", "tanh"}
    assert [v.changes for v in plan(spec(), random=20, ranges=ranges, search_seed=4)] != \
        [v.changes for v in a]


def test_bad_sweeps_are_refused_with_what_is_allowed():
    with pytest.raises(SpecError, match="variant optimizer.lr=-1"):
        plan(spec(), {"optimizer.lr": [0.1, -1]})
    with pytest.raises(SpecError, match="at most 1,024"):
        plan(spec(), {"optimizer.lr": list(range(1, 300))}, seeds=list(range(5)))
    with pytest.raises(SpecError, match="--random"):
        plan(spec(), ranges=dict([parse_range("optimizer.lr=0.1..1")]))
    for bad in ("optimizer.lr", "=1,2", "lr="):
        with pytest.raises(SpecError, match="KEY=VALUE"):
            parse_grid([bad])
    for bad in ("optimizer.lr=1..0.1", "x=log:0..1", "x=1", "x=a..b"):
        with pytest.raises(SpecError, match="LOW..HIGH"):
            parse_range(bad)
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    for bad in ("a", "3-1", "-1"):
        with pytest.raises(SpecError, match="seeds"):
            parse_seeds(bad)
    assert parse_grid(["model.activation=relu,tanh", "optimizer.lr=0.1,1e-3"]) == {
        "model.activation": ["relu", "tanh"], "optimizer.lr": [0.1, 0.001]}


# ----------------------------------------------------------------------------- k-fold, ensembles


def test_k_fold_folds_are_disjoint_and_cover_the_training_examples():
    s = spec(data={"name": "spiral", "n": 203, "val_fraction": 0.2, "test_fraction": 0.1})
    whole = load_dataset(s.data, s.seed)
    shared = torch.cat([whole.x_train, whole.x_val])
    vals = []
    for i in range(5):
        fold = load_dataset(s.data, s.seed, fold=(i, 5))
        assert torch.allclose(fold.x_test * fold.scale + fold.shift,  # the test split stays
                              whole.x_test * whole.scale + whole.shift, atol=1e-5)  # apart
        assert len(fold.x_train) + len(fold.x_val) == len(shared)
        assert len(fold.x_val) in (len(shared) // 5, len(shared) // 5 + 1)
        raw = fold.x_val * fold.scale + fold.shift  # undo this fold's own scaling
        vals.append(raw)
        rows = {tuple(r) for r in (fold.x_train * fold.scale + fold.shift).round(decimals=4)
                .tolist()}
        assert not rows & {tuple(r) for r in raw.round(decimals=4).tolist()}
    pooled = torch.cat(vals).round(decimals=4)
    expected = (shared * whole.scale + whole.shift).round(decimals=4)
    assert sorted(map(tuple, pooled.tolist())) == sorted(map(tuple, expected.tolist()))
    with pytest.raises(SpecError, match="overlapping windows"):
        chars = ExperimentSpec.from_dict({"data": {"name": "chars"},
                                          "model": {"layers": [{"type": "lstm", "units": 8}]}})
        load_dataset(chars.data, 0, fold=(0, 3))


def test_cross_validation_and_seed_ensembles_summarise_their_members():
    folds = run(plan(spec(training__steps=60), folds=3))
    (cv,) = folds["ensembles"]
    vals = [r["final"]["val_loss"] for r in folds["variants"]]
    assert cv["over"] == "folds" and cv["val_loss"]["n"] == 3
    assert math.isclose(cv["val_loss"]["mean"], sum(vals) / 3)
    assert cv["ensemble_val_acc"] is None  # each fold validates on other examples
    seeds = plan(spec(training__steps=150, optimizer={"name": "adam", "lr": 0.01}),
                 seeds=[0, 1, 2, 3])
    result = run(seeds)
    (ens,) = result["ensembles"]
    accs = [r["final"]["val_acc"] for r in result["variants"]]
    mean = sum(accs) / 4
    assert math.isclose(ens["val_acc"]["mean"], mean)
    assert math.isclose(ens["val_acc"]["std"], math.sqrt(sum((a - mean) ** 2 for a in accs) / 3))
    members = [Trainer(v.spec).run() for v in seeds]  # the ensemble, by hand
    data = members[0].data
    probs = sum(m.predict(data.x_val) for m in members) / 4
    assert math.isclose(ens["ensemble_val_acc"],
                        float((probs.argmax(-1) == data.y_val).float().mean()), abs_tol=1e-6)


# ----------------------------------------------------------------------------- the CLI


def test_the_cli_sweep_writes_results_and_records_every_variant(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    out = tmp_path / "sweep"
    assert main(["sweep", "--preset", "tfp_circle", "--steps", "100", "--grid",
                 "optimizer.lr=0.001,0.01,0.1", "--seeds", "0-1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 variants (6 batched)" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["grid"] == {"optimizer.lr": [0.001, 0.01, 0.1]} and result["seeds"] == [0, 1]
    assert len(result["variants"]) == 6 and len(result["ensembles"]) == 3
    row = result["variants"][0]
    assert {"changes", "seed", "final", "health", "run_id", "spec"} <= set(row)
    assert row["changes"] == {"optimizer.lr": 0.001} and row["seed"] == 0
    best = result["variants"][result["best"]]
    assert best["final"]["val_loss"] == min(r["final"]["val_loss"] for r in result["variants"])
    runs = RunStore().runs()
    assert len(runs) == 6 and all(r["tags"] == [result["id"]] for r in runs)
    assert {r["id"] for r in runs} == {r["run_id"] for r in result["variants"]}
    assert main(["sweep", "--preset", "tfp_circle", "--out", str(out)]) == 2
    assert "nothing to sweep" in capsys.readouterr().err
    assert main(["sweep", "--preset", "tfp_circle", "--grid", "optimizer.lr=-1", "--out",
                 str(out)]) == 2
    assert "variant optimizer.lr=-1" in capsys.readouterr().err


@pytest.mark.parametrize("schedule", [{"name": "exponential", "gamma": 0.99},
                                      {"name": "step", "step_size": 30, "gamma": 0.5},
                                      "cosine"])
def test_a_batched_variant_ends_with_its_schedule_where_the_run_alone_ends(schedule):
    """Its optimizer's rate and its scheduler's state, then 20 more steps (extend)."""
    specs = [spec(seed=k, schedule=schedule, optimizer={"name": "sgd", "lr": 0.05,
                                                        "momentum": 0.9 * k})
             for k in range(2)]
    alone, together = train_both(specs)
    for a, b in zip(alone, together):
        assert b.lr() == pytest.approx(a.lr(), rel=1e-12)
        assert b.scheduler.state_dict() == a.scheduler.state_dict()
        for t in (a, b):
            t.extend(20)
            t.run()
    assert_same_runs(alone, together)
