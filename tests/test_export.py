"""The exported script: standalone, runnable, and number for number the engine's run.

The oracle is the engine itself (Trainer, build_model, the registry factories): the export is a
second, independent implementation of the same experiment, so equal numbers mean both did the
same thing. A few specs run in real subprocesses (no Netlab on the path); the broad sweep over
optimizers, schedules, losses and datasets runs the script in-process with runpy, which is fast
because torch is already imported.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import io
import json
import math
import os
import re
import runpy
import subprocess
import symtable
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

from engine import Trainer, build_model, load_spec
from engine.__main__ import main as cli_main
from engine.core.errors import SpecError
from engine.core.portable import generator as portable_generator
from engine.core.registry import (
    ACTIVATIONS,
    ALL,
    DATASETS,
    FEATURES,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    NORMALIZERS,
    OPTIMIZERS,
    SCHEDULES,
    Registry,
)
from engine.core.seeding import generator as make_generator
from engine.io.export import Code, ExportError, Script, export_script, render

ALLOWED_IMPORTS = {"__future__", "argparse", "json", "math", "collections", "torch", "sklearn",
                   "pandas"}


# ----------------------------------------------------------------------------- helpers


def final_summary(stdout: str, history_file=None) -> dict:
    """The FINAL line (the outcome, one short line), with the rows from --history's file."""
    lines = [line for line in stdout.splitlines() if line.startswith("FINAL ")]
    assert len(lines) == 1, stdout[-2000:]
    summary = json.loads(lines[0][len("FINAL "):])
    assert "history" not in summary and len(lines[0]) < 2000, "the FINAL line stays short"
    if history_file is not None:
        with open(history_file) as f:
            full = json.load(f)
        assert {k: v for k, v in full.items() if k != "history"} == summary
        summary = full
    return summary


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module the source imports, wherever the import sits (for a
    relative import, the module's own name: `from ..core.portable import x` -> portable)."""
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[-1 if node.level else 0])
    return imported


def run_in_process(source: str, tmp_path, argv=()) -> tuple[dict, dict]:
    """Run the script as __main__ in this process; returns (FINAL summary, script globals)."""
    path = tmp_path / "train.py"
    path.write_text(source)
    old_argv = sys.argv
    sys.argv = [str(path), "--history", str(tmp_path / "history.json"), *argv]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            namespace = runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = old_argv
    return final_summary(out.getvalue(), tmp_path / "history.json"), namespace


def engine_run(config: dict) -> Trainer:
    trainer = Trainer(load_spec(config))
    trainer.run()
    return trainer


def assert_same_run(summary: dict, state: dict, trainer: Trainer) -> None:
    """Same logged rows (first batch loss included), same outcome, same final weights."""
    rows = trainer.history.rows
    assert [r["step"] for r in summary["history"]] == [r["step"] for r in rows]
    for mine, theirs in zip(summary["history"], rows):
        for key in ("train_loss", "val_loss", "lr", "train_acc", "val_acc"):
            if theirs[key] is None:
                assert key not in mine, (key, mine)
            else:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), \
                    (key, mine, theirs)
    assert summary["stopped"] == trainer.stopped
    assert summary["steps"] == trainer.step_count
    assert summary["restored_step"] == trainer.restored_step
    expected = trainer.model.state_dict()
    assert list(state) == list(expected)
    for k, v in expected.items():
        assert torch.allclose(state[k].float(), v.float(), rtol=1e-5, atol=1e-6), k
    if trainer.test_metrics is not None:
        assert summary["test"]["test_loss"] == pytest.approx(trainer.test_metrics["loss"], rel=1e-5)
        if trainer.test_metrics["acc"] is not None:
            assert summary["test"]["test_acc"] == pytest.approx(trainer.test_metrics["acc"])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two, and it cannot stall waiting for a
    second OpenMP thread when the cores are busy (measured on a loaded 2-core box: a small
    backward took 400 ms with two threads). The subprocesses run with one thread too, so both
    sides add their sums up in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def with_steps(config: dict, steps: int) -> dict:
    return {**config, "training": {**config.get("training", {}), "steps": steps}}


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    """A small table: two informative columns, a class label (3 values, not 0-based) and a
    continuous target."""
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(80, generator=g), torch.rand(80, generator=g) * 10
    label = torch.where(a + 0.1 * b > 0.5, 5, torch.where(a > -0.5, 3, 1))
    path = tmp_path_factory.mktemp("csv") / "table.csv"
    rows = ["a,b,label,value"] + [f"{x:.5f},{y:.5f},{int(c)},{x * 2 - y:.5f}"
                                  for x, y, c in zip(a.tolist(), b.tolist(), label.tolist())]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


# ----------------------------------------------------------------------------- subprocess runs
# Each runs the script with a bare environment (no PYTHONPATH, cwd outside the repo), so an
# import of Netlab would fail. They start together to share the cost of importing torch.

CIRCLE = {  # hand-made features, bce, adam, warm-up cosine, L1 and L2, clipping by value
    "seed": 3,
    "data": {"name": "circle", "n": 300, "features": ["x1", "x2", "x1_sq", "x2_sq", "x1_x2"],
             "test_fraction": 0.1},
    "model": {"activation": "tanh", "init": "xavier_uniform", "layers": [16, 8]},
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.02},
    "schedule": {"name": "warmup_cosine", "warmup": 5},
    "regularization": {"l1": 0.001, "l2": 0.01},
    "training": {"steps": 1000, "batch_size": 16, "grad_clip": {"value": 0.5}},
    "diagnostics": {"every": 7},
}
DIGITS = {  # images, some classes: flatten, label smoothing, Nesterov, weight decay, step decay
    "data": {"name": "digits", "n": 600, "test_fraction": 0.2, "subset": [8, 0, 3, 5]},
    "model": {"layers": [32, 16]},
    "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 0.001},
    "schedule": {"name": "step", "step_size": 6, "gamma": 0.5},
    "training": {"steps": 20, "batch_size": 64, "eval_every": 10},
    "diagnostics": {"every": 5},
}
REGRESSION = {  # every layer type with per-layer overrides and a custom output init; huber,
    # centred RMSprop, plateau schedule, early stopping with restore, clipping by norm
    "data": {"name": "multi_gaussian", "n": 300},
    "model": {"activation": "gelu", "output": {"name": "normal", "std": 0.1}, "layers": [
        {"type": "residual", "units": 16, "depth": 2},
        {"type": "batchnorm"},
        {"type": "dropout", "p": 0.2},
        {"type": "residual", "units": 16, "depth": 1, "activation": "tanh"},
        {"type": "layernorm"},
        {"type": "activation", "activation": {"name": "prelu", "init": 0.1}},
        {"type": "linear", "units": 8, "init": "orthogonal", "bias_init": 0.1,
         "activation": {"name": "leaky_relu", "negative_slope": 0.2}}]},
    "loss": {"name": "huber", "delta": 0.5},
    "optimizer": {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
    "schedule": {"name": "reduce_on_plateau", "patience": 0},
    "training": {"steps": 80, "grad_clip": 1.0, "early_stopping": {"patience": 2}},
    "diagnostics": {"every": 5},
}
SUBPROCESS_SPECS = {"circle": (CIRCLE, 25), "digits": (DIGITS, None),
                    "regression": (REGRESSION, None)}


@pytest.fixture(scope="module")
def subprocess_runs(tmp_path_factory):
    """name -> (returncode, stdout, stderr, state_dict or None, script source, --history file)."""
    work = tmp_path_factory.mktemp("export_runs")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"  # see one_thread
    procs = {}
    for name, (config, steps) in SUBPROCESS_SPECS.items():
        source = export_script(load_spec(config))
        (work / f"{name}.py").write_text(source)
        argv = [sys.executable, f"{name}.py", "--save", f"{name}.pt", "--history", f"{name}.json"]
        if steps is not None:
            argv += ["--steps", str(steps)]
        procs[name] = (subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True), source)
    results = {}
    for name, (proc, source) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        pt = work / f"{name}.pt"
        state = torch.load(pt) if pt.exists() else None
        results[name] = (proc.returncode, stdout, stderr, state, source, work / f"{name}.json")
    return results


@pytest.mark.parametrize("name", list(SUBPROCESS_SPECS))
@pytest.mark.slow
def test_script_runs_standalone_and_matches_the_engine(subprocess_runs, name):
    code, stdout, stderr, state, _, history = subprocess_runs[name]
    assert code == 0, stderr[-3000:]
    config, steps = SUBPROCESS_SPECS[name]
    if steps is not None:  # --steps N trains like the same config with training.steps = N
        config = with_steps(config, steps)
    summary = final_summary(stdout, history)
    assert_same_run(summary, state, engine_run(config))


@pytest.mark.slow
def test_script_prints_a_row_per_evaluation(subprocess_runs):
    stdout = subprocess_runs["digits"][1]
    rows = [line for line in stdout.splitlines() if line.startswith("step ")]
    assert [int(r.split()[1]) for r in rows] == [1, 5, 10, 15, 20]
    evaluated = [r for r in rows if "val_loss" in r]
    assert [int(r.split()[1]) for r in evaluated] == [1, 10, 20]  # eval_every=10, plus first/last
    assert re.fullmatch(r"step 10 lr \S+ train_loss \S+ train_acc \S+ val_loss \S+ val_acc \S+",
                        evaluated[1])


def test_early_stopping_and_plateau_really_happened(subprocess_runs):
    """The regression spec is meant to exercise both; if it stopped doing so the comparison
    above would no longer cover them."""
    summary = final_summary(subprocess_runs["regression"][1], subprocess_runs["regression"][5])
    assert summary["stopped"] == "early_stopping" and summary["restored_step"] is not None
    assert len({row["lr"] for row in summary["history"]}) > 1


def test_state_dict_matches_the_engine_model(subprocess_runs):
    """Same layer names, nesting and shapes as engine.nn.model.build_model, for every layer type."""
    state = subprocess_runs["regression"][3]
    engine_state = build_model(load_spec(REGRESSION), (2,), 1).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == \
        [(k, tuple(v.shape)) for k, v in engine_state.items()]
    assert {k.split(".")[0] for k in state} == {"res1", "bn1", "res2", "ln1", "act1", "fc1", "out"}
    assert "res1.proj.weight" in state and "res2.proj.weight" not in state


@pytest.mark.parametrize("name", list(SUBPROCESS_SPECS))
def test_script_imports_nothing_of_netlab(subprocess_runs, name):
    source = subprocess_runs[name][4]
    assert "import engine" not in source and "from engine" not in source
    imported = imported_modules(source)
    assert "torch" in imported
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


# ----------------------------------------------------------------------------- in-process sweep
# Every optimizer and every schedule at least once, with every loss wrapping (plain, bce's one
# logit, a regression loss on classes), every dataset and a spread of activations/initializers.

def _sweep(csv_path):
    small = {"n": 160}
    return {
        "sgd-constant": {"data": {"name": "spiral", **small}, "model": {"layers": [16]},
                         "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
        "adagrad-step-mse_on_classes": {
            "data": {"name": "gaussians", "classes": 4, **small}, "loss": "mse",
            "model": {"activation": "sigmoid", "init": {"name": "xavier_normal", "gain": 1.5},
                      "layers": [12]},
            "optimizer": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01},
            "schedule": {"name": "step", "step_size": 3}},
        "rmsprop-exponential-mae_on_classes": {
            "data": {"name": "moons", **small, "normalize": "minmax"}, "loss": "mae",
            "model": {"activation": {"name": "elu", "alpha": 0.5},
                      "init": {"name": "he_uniform", "mode": "fan_out"}, "layers": [12]},
            "optimizer": {"name": "rmsprop", "lr": 0.01}, "schedule": {"name": "exponential",
                                                                       "gamma": 0.9}},
        "adam-cosine-xor": {
            "data": {"name": "xor", **small, "features": ["x1_x2", "sin_x1", "sin_x2"]},
            "model": {"activation": {"name": "softplus", "beta": 2.0},
                      "init": {"name": "uniform", "a": -0.3, "b": 0.2}, "layers": [12]},
            "optimizer": {"name": "adam", "lr": 0.01, "amsgrad": True},
            "schedule": {"name": "cosine", "eta_min": 0.001}},
        "adamw-warmup-plane": {
            "data": {"name": "plane", **small, "normalize": "none"},
            "model": {"activation": "silu", "init": {"name": "normal", "std": 0.3},
                      "bias_init": 0.05, "layers": [12]},
            "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": {"name": "warmup_cosine",
                                                                     "warmup": 4}},
        "adadelta-one_cycle-multi_gaussian": {
            "data": {"name": "multi_gaussian", **small}, "loss": "mae",
            "model": {"activation": "swish", "init": "torch_default", "layers": [12]},
            "optimizer": {"name": "adadelta"}, "schedule": {"name": "one_cycle"}},
        "adam-one_cycle_momentum-circle": {
            "data": {"name": "circle", **small}, "loss": "cross_entropy",
            "model": {"activation": "hard_sigmoid", "init": {"name": "constant", "value": 0.05},
                      "layers": [8, {"type": "linear", "units": 8, "init": "zeros"}]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "schedule": {"name": "one_cycle", "cycle_momentum": True}},
        "sgd-plateau-csv": {
            "data": {"name": "csv", "path": csv_path, "target": "label"},
            "model": {"activation": "softmax", "init": {"name": "orthogonal", "gain": 2.0},
                      "layers": [8]},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "schedule": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5},
            "diagnostics": {"every": 2}},
        "csv-regression": {
            "data": {"name": "csv", "path": csv_path, "target": "value", "task": "regression"},
            "model": {"activation": "linear", "layers": [4]}, "optimizer": {"name": "adam"}},
        "cnn-shapes": {  # every convolutional layer type, grouped and dilated, no bias
            "data": {"name": "shapes", "n": 160, "size": 12, "shift": 2},
            "model": {"activation": "relu", "init": "he_uniform", "layers": [
                {"type": "conv2d", "filters": 4, "padding": "same", "bias_init": 0.1},
                {"type": "batchnorm2d"}, {"type": "maxpool"},
                {"type": "conv2d", "filters": 8, "groups": 2, "dilation": 2, "padding": 1,
                 "bias": False, "activation": "tanh", "init": "xavier_normal"},
                {"type": "dropout2d", "p": 0.2}, {"type": "avgpool", "kernel": 3, "stride": 1},
                {"type": "conv2d", "filters": 8, "kernel": 1},
                {"type": "globalavgpool"}, 8]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"augment": {"shift": 2, "rotate": 15.0, "noise": 0.1, "flip": True}}},
        "cnn-blocks": {  # ResNet's and Inception's blocks, with and without BatchNorm
            "data": {"name": "shapes", "n": 160, "size": 12, "shift": 2},
            "model": {"activation": "relu", "layers": [
                {"type": "resblock2d", "filters": 4},
                {"type": "resblock2d", "filters": 4, "batchnorm": False, "activation": "tanh"},
                {"type": "maxpool"}, {"type": "inception", "filters": 2},
                {"type": "globalavgpool"}]},
            "optimizer": {"name": "adam", "lr": 0.01}},
        "cnn-digits-flatten": {
            "data": {"name": "digits", "n": 160},
            "model": {"layers": [{"type": "conv2d", "filters": 4, "stride": 2},
                                 {"type": "flatten"}, {"type": "dropout", "p": 0.1}]},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
        "data-seed": {  # the data drawn by its own seed, the run's seed for the rest
            "seed": 3, "data": {"name": "spiral", "n": 120, "seed": 11},
            "model": {"layers": [8]}, "optimizer": {"name": "sgd", "lr": 0.1}},
        "digits-linear": {
            "data": {"name": "digits", "n": 200, "noise": 0.1}, "model": {"layers": []},
            "optimizer": {"name": "sgd", "lr": 0.01}, "schedule": {"name": "step",
                                                                   "step_size": 2}},
    }


SWEEP_NAMES = list(_sweep("x.csv"))


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_sweep_matches_the_engine(name, csv_file, tmp_path):
    config = with_steps(_sweep(csv_file)[name], 12)
    config["diagnostics"] = config.get("diagnostics", {"every": 4})
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))


def _with_entry(kind: str, key: str, csv_path: str) -> dict:
    """A tiny config that uses registry entry `key` of `kind` with its defaults."""
    config = {"data": {"name": "spiral", "n": 120}, "model": {"layers": [8]},
              "training": {"steps": 6, "batch_size": 16, "log_every": 3}}
    if kind == "dataset":
        entry = DATASETS[key]
        config["data"] = {"name": key, **({"n": 120} if entry.param("n") else {})}
        if entry.tags.get("upload"):
            config["data"] |= {entry.tags["upload"]: csv_path, entry.tags["column"]: "label"}
        if entry.param("packed"):  # packed sequences: a recurrent layer reads the mask
            config["model"]["layers"] = [{"type": "rnn", "units": 6}, {"type": "last_step"}]
        if entry.tags.get("targets") == "steps":  # an answer at every step: a recurrent stack
            config["model"]["layers"] = [{"type": "rnn", "units": 6}]
        if entry.tags.get("input") == "tokens":  # ids: an embedding first
            config["model"]["layers"].insert(0, {"type": "embedding", "dim": 4})
    elif kind == "feature":
        config["data"]["features"] = [key]
    elif kind == "normalization":
        config["data"]["normalize"] = key
    elif kind == "layer":
        config["model"]["layers"] = [{"type": key}, 8]
        if LAYERS[key].tags.get("image_only"):  # a convolutional layer reads images
            config["data"] = {"name": "digits", "n": 120}
        if LAYERS[key].tags.get("sequence_only"):  # a recurrent layer reads sequences
            config["data"] = {"name": "sine", "n": 120, "length": 6}
        if LAYERS[key].tags.get("emits_output"):  # an encoder-decoder answers every step
            config["data"] = {"name": "reverse", "n": 120, "length": 4}
            config["model"]["layers"] = [{"type": key, "units": 6}]
        if key == "embedding":  # token ids, an answer for every one
            config["data"] = {"name": "chars", "length": 8, "stride": 16}
            config["model"]["layers"] = [{"type": key}, {"type": "gru", "units": 6}]
    elif kind in ("activation", "initializer"):
        config["model"]["activation" if kind == "activation" else "init"] = key
    elif kind == "loss":
        config["loss"] = key
        if LOSSES[key].tags.get("binary"):
            config["data"]["name"] = "circle"
    else:
        config[kind] = {"name": key}
    return config


ENTRIES = [(kind, key) for kind, registry in ALL.items() for key in registry.keys()]


@pytest.mark.parametrize("kind,key", ENTRIES, ids=[f"{k}-{e}" for k, e in ENTRIES])
def test_every_registry_entry_exports_a_run_with_the_engines_numbers(kind, key, csv_file,
                                                                     tmp_path):
    """A new entry of any registry is covered here with no edit: its experiment, exported and
    run, repeats the engine's rows and weights."""
    config = _with_entry(kind, key, csv_file)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))


def test_save_writes_the_trained_weights(tmp_path):
    config = with_steps({"data": {"name": "xor", "n": 100}, "model": {"layers": [8]}}, 5)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path,
                                        ["--save", str(tmp_path / "m.pt"), "--steps", "3"])
    saved = torch.load(tmp_path / "m.pt")
    assert summary["steps"] == 3
    for k, v in namespace["model"].state_dict().items():
        assert torch.equal(saved[k], v)


def test_a_diverging_run_stops_before_the_bad_update(tmp_path):
    config = with_steps({"data": {"name": "plane", "n": 100}, "model": {"layers": [16, 16]},
                         "optimizer": {"name": "sgd", "lr": 10.0}}, 40)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    trainer = engine_run(config)
    assert trainer.stopped == summary["stopped"] == "diverged"
    assert summary["steps"] == trainer.step_count
    assert all(torch.isfinite(p).all() for p in namespace["model"].parameters())


# ----------------------------------------------------------------------------- export API / CLI


def test_cli_export_prints_a_script_that_compiles(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": {"name": "moons"}, "model": {"layers": [8]}}))
    assert cli_main(["export", str(path)]) == 0
    source = capsys.readouterr().out
    compile(source, "train.py", "exec")
    assert '"name": "moons"' in source  # the config sits in the header comment


@pytest.mark.slow
def test_every_preset_exports_a_standalone_script():
    from engine.presets import load_preset, preset_names

    for name in preset_names():
        source = export_script(load_spec(load_preset(name)["config"]))
        compile(source, f"{name}.py", "exec")
        assert imported_modules(source) <= ALLOWED_IMPORTS, name


@pytest.mark.gpu
def test_script_matches_the_engine_on_cuda(tmp_path):
    """device "cuda": data, model, batches and dropout masks live on the GPU in both."""
    config = with_steps({**EVERY_LAYER_SMALL, "device": "cuda"}, 10)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    trainer = engine_run(config)
    assert next(namespace["model"].parameters()).is_cuda
    state = {k: v.cpu() for k, v in namespace["model"].state_dict().items()}
    expected = trainer.model.state_dict()
    assert summary["history"][0]["train_loss"] == pytest.approx(
        trainer.history.rows[0]["train_loss"], rel=1e-5)
    for k, v in expected.items():
        assert torch.allclose(state[k].float(), v.cpu().float(), rtol=1e-4, atol=1e-5), k


EVERY_LAYER_SMALL = {
    "data": {"name": "spiral", "n": 200},
    "model": {"layers": [{"type": "residual", "units": 16}, {"type": "batchnorm"},
                         {"type": "dropout", "p": 0.2}, {"type": "layernorm"}, 8]},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
}


def test_export_rejects_an_impossible_stack():
    with pytest.raises(SpecError, match="flat vector"):
        export_script(load_spec({"data": {"name": "digits"},
                                 "model": {"layers": [{"type": "batchnorm"}]}}))


# ----------------------------------------------------------------------------- registry entries
# Every entry of every registry is written by the exporter from the entry alone (a torch class as
# itself, anything else copied in by its source). Each written form, run with nothing but the
# script's own imports, must do what the registry's factory does.


def exported(entry, params: dict, *args: str):
    """(expression, namespace): the entry called as the script calls it, and the definitions it
    needs executed in a namespace that holds only the script's imports."""
    script = Script()
    expr = render(script.call(entry.exported, *map(Code, args), **params))
    namespace = {"torch": torch, "nn": nn, "math": math, "OrderedDict": OrderedDict}
    exec("\n".join(script.take()), namespace)
    return expr, namespace


def _nondefault(entry) -> dict:
    """Parameter values other than the defaults, so that a form ignoring one shows."""
    out = {}
    for p in entry.params:
        d = p.default
        if p.choices:
            out[p.name] = p.choices[-1]
        elif isinstance(d, bool):
            out[p.name] = not d
        elif isinstance(d, int):
            out[p.name] = d + 1
        elif isinstance(d, float):
            out[p.name] = d * 0.5 + 0.01 if p.high is None else min(p.high * 0.99, d * 0.5 + 0.01)
        else:
            out[p.name] = d
    return entry.resolve(out)


@pytest.mark.parametrize("key", ACTIVATIONS.keys())
def test_activation_export_matches_registry(key):
    entry = ACTIVATIONS[key]
    params = _nondefault(entry)
    expr, namespace = exported(entry, params)
    mine, theirs = eval(expr, namespace), entry.build(**params)
    x = torch.linspace(-5, 5, 60).reshape(6, 10)
    assert type(mine) is type(theirs)
    assert torch.equal(mine(x), theirs(x))


@pytest.mark.parametrize("key", INITIALIZERS.keys())
def test_init_export_matches_registry(key):
    entry = INITIALIZERS[key]
    params = _nondefault(entry)
    if key == "uniform":
        params.update(a=-0.2, b=0.3)
    mine, theirs = torch.empty(7, 5), torch.empty(7, 5)
    expr, namespace = exported(entry, params, "w", "init_gen")
    exec(expr, {**namespace, "w": mine, "init_gen": torch.Generator().manual_seed(1)})
    entry.build(theirs, torch.Generator().manual_seed(1), **params)
    assert torch.equal(mine, theirs)


def _stepped(make_optimizer, steps=4):
    """Parameters after a few steps on a fixed quadratic, from a fixed start."""
    w = nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3))
    opt = make_optimizer([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - 0.3) ** 2).sum().backward()
        opt.step()
    return w.detach()


@pytest.mark.parametrize("key", OPTIMIZERS.keys())
def test_optimizer_export_matches_registry(key):
    entry = OPTIMIZERS[key]
    params = _nondefault(entry)
    expr, namespace = exported(entry, params, "params")
    assert expr.startswith("torch.optim.")  # a torch class is written as itself
    assert torch.equal(_stepped(lambda ps: eval(expr, {**namespace, "params": ps})),
                       _stepped(lambda ps: entry.build(ps, **params)))


@pytest.mark.parametrize("key", SCHEDULES.keys())
def test_schedule_export_matches_registry(key):
    entry, steps = SCHEDULES[key], 30
    params = _nondefault(entry)
    params.update({k: v for k, v in {"warmup": 5, "step_size": 7}.items() if k in params})

    def rates(make):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        sched, out = make(opt), []
        for i in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if entry.tags.get("on_metric"):
                sched.step(1.0 if i < 3 else 2.0)  # stops improving at once
            else:
                sched.step()
        return out

    expr, namespace = exported(entry, params, "optimizer", "STEPS")
    mine = rates(lambda opt: eval(expr, {**namespace, "optimizer": opt, "STEPS": steps}))
    theirs = rates(lambda opt: entry.build(opt, steps, **params))
    assert mine == theirs
    assert len(set(theirs)) > 1 or key == "constant"  # the check would notice a change


@pytest.mark.parametrize("key", LOSSES.keys())
def test_loss_export_matches_registry(key):
    entry = LOSSES[key]
    params = _nondefault(entry)
    expr, namespace = exported(entry, params)
    mine, theirs = eval(expr, namespace), entry.build(**params)
    out, target = torch.linspace(-3, 3, 12), torch.linspace(1, 0, 12)
    if key == "cross_entropy":
        out, target = out.reshape(4, 3), torch.tensor([0, 2, 1, 2])
    assert torch.equal(mine(out, target), theirs(out, target))


def test_feature_and_normalizer_exports_match_registry():
    points = torch.rand(50, 2, generator=torch.Generator().manual_seed(0)) * 4 - 2
    for entry in FEATURES:
        expr, namespace = exported(entry, {}, "points")
        assert torch.equal(eval(expr, {**namespace, "points": points}), entry.factory(points))
    x_fit = torch.cat([points, torch.ones(50, 1)], 1)  # a constant column too
    for entry in NORMALIZERS:
        expr, namespace = exported(entry, {}, "x_fit")
        mine, theirs = eval(expr, {**namespace, "x_fit": x_fit}), entry.factory(x_fit)
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs)), entry.key


@pytest.mark.parametrize("key", DATASETS.keys())
def test_dataset_export_is_standalone_and_matches_registry(key, csv_file):
    """Every dataset's exported function runs with the script's imports alone (the engine's own
    source, or the entry's `code`) and draws the same examples."""
    entry = DATASETS[key]
    params = {p.name: p.default for p in entry.params}
    if key == "csv":
        params.update(path=csv_file, target="label")
    if key == "digits":
        params.update(n=300, noise=0.1)
    expr, namespace = exported(entry, params, "gen")
    x, y, *_ = eval(expr, {**namespace, "gen": make_generator(5, "data")})
    ex, ey = entry.factory(make_generator(5, "data"), **params)[:2]  # a table adds its names
    assert torch.equal(x, ex) and torch.equal(y, ey)


def test_the_shared_modules_import_nothing_of_netlab():
    """portable.py and export_template.py are copied into scripts: torch and math only (the
    template may use portable.py, whose definitions travel with it)."""
    import engine.core.portable as portable
    import engine.io.export_template as template

    assert imported_modules(inspect.getsource(portable)) <= {"__future__", "math", "torch"}
    assert imported_modules(inspect.getsource(template)) <= {"__future__", "torch", "portable"}


@pytest.mark.slow
def test_every_global_name_in_the_script_is_defined(csv_file):
    """A lint of the generated script: no name is read that nothing defines or imports, and
    every import is used."""
    for config in [CIRCLE, DIGITS, REGRESSION, *_sweep(csv_file).values()]:
        source = export_script(load_spec(config))
        table = symtable.symtable(source, "train.py", "exec")
        defined = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
        read = set()

        def walk(t):
            for s in t.get_symbols():
                if s.is_referenced() and (s.is_global() or t is table):
                    read.add(s.get_name())
            for child in t.get_children():
                walk(child)
        walk(table)
        undefined = {n for n in read - defined if not hasattr(builtins, n)}
        assert not undefined, undefined
        imported = {s.get_name() for s in table.get_symbols() if s.is_imported()}
        assert imported - read <= {"annotations"}, imported - read


def test_a_factory_that_cannot_stand_alone_is_refused_by_name():
    with pytest.raises(ExportError, match="lambda"):
        Script().call(lambda x: x)
    with pytest.raises(ExportError, match="uses 'os'"):
        Script().ref(_uses_os)


def _uses_os(path):
    return os.path.exists(path)


def test_two_definitions_with_one_name_are_refused():
    script = Script()
    script.ref(portable_generator)

    def generator(seed):  # a different function under the same name
        return seed
    with pytest.raises(ExportError, match="generator"):
        script.ref(generator)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_the_script_reads_semicolon_and_tab_tables_as_the_engine_does(sep, csv_file, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("\ufeff" + open(csv_file).read().replace(",", sep))  # with a byte-order mark
    config = with_steps(_sweep(str(path))["csv-regression"], 6)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))


def test_the_script_pins_torchs_threads_and_keeps_its_last_line_short(tmp_path):
    config = with_steps({"data": {"name": "xor", "n": 100}, "model": {"layers": [8]}}, 30)
    source = export_script(load_spec(config))
    torch.set_num_threads(3)
    try:
        run_in_process(source, tmp_path)  # final_summary checks the FINAL line is short
        assert torch.get_num_threads() == 1  # the script's default
        run_in_process(source, tmp_path, ["--threads", "2"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_the_script_reads_text_labels_and_leaves_columns_out_as_the_engine_does(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("id,a,b,label\n" + "".join(
        f"r{i},{i * 0.3:.2f},{(i * 7) % 5},{['dog', 'cat', 'emu'][i % 3]}\n" for i in range(60)))
    config = with_steps({"data": {"name": "csv", "path": str(path), "target": "label",
                                  "ignore": ["id"]}, "model": {"layers": [8]}}, 12)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))


def test_a_quoted_delimiter_in_the_header_reads_the_same_in_the_script(tmp_path):
    """Found in review: the script counted delimiters inside quotes ("height, cm";...)."""
    path = tmp_path / "eu.csv"
    path.write_text('"height, cm";"weight, kg";label\n' + "".join(
        f"{i * 0.5};{(i * 7) % 5};{'dog' if i % 2 else 'cat'}\n" for i in range(40)))
    config = with_steps({"data": {"name": "csv", "path": str(path), "target": "label"},
                         "model": {"layers": [4]}}, 8)
    summary, namespace = run_in_process(export_script(load_spec(config)), tmp_path)
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))


from engine.core.portable import safe_scale as _scale_alias  # noqa: E402 - the case under test


def _uses_an_alias(x):
    return _scale_alias(x)


_SCRATCH = Registry("scratch")  # not one of the app's: collecting this module adds no choice


@torch.no_grad()
@_SCRATCH.register("stacked", "a test entry with a decorator above register")
def _stacked(t, generator):
    t.fill_(0.5)


def test_definitions_copy_aliases_and_keep_decorators_above_the_registrys():
    script = Script()
    script.ref(_uses_an_alias)
    source = "\n".join(script.take())
    namespace = {"torch": torch, "nn": nn, "math": math}
    exec(source, namespace)
    assert torch.equal(namespace["_uses_an_alias"](torch.tensor([0.0, 2.0])),
                       torch.tensor([1.0, 2.0]))
    from engine.io.export import source_of
    stacked = source_of(_stacked)
    assert stacked.startswith("@torch.no_grad()\ndef _stacked(") and "register" not in stacked
    with pytest.raises(ExportError, match="no Python source"):
        Script().ref(math.sqrt)


def test_a_table_is_named_by_the_scripts_data_option(csv_file, tmp_path):
    """Found in review: the page's script pointed at the server's upload folder. With
    data_path the script names a placeholder and --data says where the table is."""
    config = with_steps(_sweep(csv_file)["csv-regression"], 6)
    source = export_script(load_spec(config), data_path="upload.csv")
    assert csv_file not in source and '"upload.csv"' in source
    summary, namespace = run_in_process(source, tmp_path, ["--data", csv_file])
    assert_same_run(summary, namespace["model"].state_dict(), engine_run(config))
