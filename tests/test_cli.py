"""The CLI contract (DESIGN.md §2.3), run as a user would: a subprocess per command."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": {"name": "xor"}, "model": {"layers": [8]},
                                "training": {"steps": 60}, "diagnostics": {"every": 20}}))
    return path


def test_train_writes_every_output(tmp_path, config):
    out = tmp_path / "run"
    r = cli("train", config, "--set", "optimizer.lr=0.3", "--set", "seed=3", "--out", out)
    assert r.returncode == 0, r.stderr
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["optimizer"]["lr"] == 0.3 and resolved["seed"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 20, 40, 60]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "completed" and summary["steps"] == 60
    assert set(summary) >= {"steps", "stopped", "final", "best", "test", "health", "seconds"}
    assert "layers" not in summary["final"]
    state = torch.load(out / "model.pt")
    assert set(state) == {"fc1.linear.weight", "fc1.linear.bias", "out.weight", "out.bias"}


def test_steps_override_and_preset(tmp_path):
    r = cli("train", "--preset", "lr_too_high", "--steps", "40", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["stopped"] == "diverged" and summary["health"]["status"] == "diverged"
    assert json.loads((tmp_path / "p" / "config.json").read_text())["training"]["steps"] == 40


def test_set_reaches_into_a_presets_layer_shorthand():
    r = cli("describe", "--preset", "lr_too_high", "--set", "model.layers.0.units=8")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["output_shape"] == [8]


def test_describe_reports_shapes_and_params(config):
    r = cli("describe", config)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [(layer["name"], layer["output_shape"], layer["params"]) for layer in d["layers"]] == \
        [("fc1", [8], 2 * 8 + 8), ("out", [2], 8 * 2 + 2)]
    assert d["total_params"] == 42


def test_presets_lists_names_and_concepts():
    r = cli("presets")
    assert r.returncode == 0
    assert "vanishing_sigmoid" in r.stdout and "E1" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "{config}", "--set", "optimizer.lr=-1", "--out", "{tmp}"], "optimizer.lr=-1"),
    (["train", "{config}", "--set", "model.activation=relux", "--out", "{tmp}"], "unknown activation 'relux'"),
    (["train", "{config}", "--set", "nonsense", "--out", "{tmp}"], "expected KEY=VALUE"),
    (["train", "{tmp}/missing.json", "--out", "{tmp}"], "cannot read config file"),
    (["train", "{bad}", "--out", "{tmp}"], "not valid JSON"),
    (["train", "--preset", "nope", "--out", "{tmp}"], "unknown preset 'nope'"),
    (["train", "{config}"], "--out"),
    (["describe", "{config}", "--set", "model.layers.0.units=0"], "model.layers[0].units=0"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, config, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    args = [a.format(config=config, tmp=tmp_path, bad=bad) for a in args]
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
