"""Smoke test of benchmarks/overhead.py: it runs and prints well-formed JSON.

Never a timing assert here (DESIGN.md §1: benchmarks print figures; tests do not time).
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each starts servers or processes: the full suite runs them


def test_overhead_quick_prints_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # digits_wide (a 1.9M-parameter net) takes 3/4 of the time and checks nothing more
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick",
                           "--device", "cpu", "--threads", "1", "--cases",
                           "digits_mlp,spiral_small"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object on stdout

    for key in ("ratios", "targets", "meets_targets", "eval", "cases", "torch", "device",
                "torch_threads", "steps_per_repeat", "repeats"):
        assert key in result, key
    assert result["eval"] == "excluded"
    assert result["quick"] is True
    assert result["device"] == "cpu"
    assert result["torch_threads"] >= 1
    assert set(result["targets"]) == {"every_1", "every_50"}
    assert set(result["meets_targets"]) == set(result["targets"])
    assert all(isinstance(v, bool) for v in result["meets_targets"].values())

    assert set(result["cases"]) == {"digits_mlp", "spiral_small"}
    assert result["main_case"] == "digits_mlp"
    assert result["ratios"] == result["cases"]["digits_mlp"]["ratios"]
    for name, case in result["cases"].items():
        assert case["params"] > 0, name
        assert case["batch_size"] > 0, name
        assert set(case["steps_per_s"]) >= {"bare", "engine_every_1", "engine_every_50"}, name
        for figures in (case["steps_per_s"], case["ms_per_step"], case["ratios"],
                        case["with_eval"]["steps_per_s"], case["with_eval"]["ratios"]):
            assert all(isinstance(v, (int, float)) and v > 0 for v in figures.values()), \
                (name, figures)
    # the main case is the mid-size MLP: 64 -> 3 x 256 -> 10
    assert result["cases"]["digits_mlp"]["params"] == 64 * 256 + 256 + 2 * (256 * 256 + 256) \
        + 256 * 10 + 10


def test_overhead_rejects_unknown_case():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick",
                           "--cases", "nope"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown case" in proc.stderr


def test_cnn_lab_quick_prints_its_figures_as_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cnn_lab.py"), "--quick",
                           "--seeds", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["quick"] is True and result["seeds"] == [0]
    run = result["cnn_digits"]["runs"][0]
    assert run["steps"] == 20 and 0 <= run["val_acc"] <= 1
    assert run["int8"]["int8_bytes"] < run["int8"]["float_bytes"]
    assert result["cnn_vs_mlp_shapes"]["param_ratio_mlp64_to_cnn"] == 16708 / 700
    assert result["distill_quantize_digits"][0]["teacher_params"] == 13706
    assert result["transfer_digits"][0]["train_examples"] > 0


def test_sequence_lab_quick_prints_its_figures_as_json():
    result = quick_json("sequence_lab.py")
    assert result["quick"] is True and len(result["runs"]) == 3
    assert set(result["val_mse_by_length_and_cell"]["length 10"]) == {"rnn", "lstm", "gru"}
    assert all(r["steps"] == 20 and r["val_mse"] > 0 for r in result["runs"])


def test_optimizer_lab_quick_prints_its_figures_as_json():
    result = quick_json("optimizer_lab.py")
    assert set(result["rosenbrock"]) >= {"sgd", "momentum", "adam", "start", "target"}
    assert [r["lr"] for r in result["quadratic"]["runs"]][:2] == [0.005, 0.01]
    assert [r["label"] for r in result["batch_sizes"]["runs"]] == \
        ["full batch", "mini-batch", "single example"]
    assert set(result["lr_range"]) == {"sgd", "adam"}


def quick_json(script: str, *args: str) -> dict:
    """Run benchmarks/<script> --quick (a smoke test) and return its one JSON object."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # exactly one JSON object on stdout


def test_sweep_quick_prints_its_figures_as_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["nets"]) == {"tfp", "digits_mlp"} and result["quick"] is True
    for net, cases in result["nets"].items():
        assert set(cases) == {"log_every_10/n_1", "log_every_10/n_8"}, net
        for case in cases.values():
            assert case["batched_s"] > 0 and case["one_by_one_s"] > 0
            assert case["max_rel_diff"] < 1e-3  # 60 steps: far from any chaos
        assert cases["log_every_10/n_8"]["variants"] == 8


def test_load_server_side_prints_threads_and_workers_as_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), "--server-side",
                           "--sessions", "2", "--seconds", "1.5", "--backends", "threads,workers"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [(r["backend"], r["sessions"]) for r in result["table"]] == \
        [("threads", 2), ("workers", 2)]
    for row in result["table"]:
        assert row["total_steps_per_s"] > 0 and row["refused_by_caps"] == 0
        assert row["first_chart_s_max"] is not None
    workers = result["results"]["workers"]["2"]
    assert workers["web_cpu_percent"] < workers["cpu_percent"]  # the training is elsewhere


def test_class_memory_prints_its_figures_as_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "class_memory.py"),
                           "--learners", "2", "--seconds", "2", "--workers", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["paused_with_reason"] == 2 and result["runs_held_after_let_go"] == 0
    assert result["restored_steps"] == result["steps_when_paused"] > 0
    assert set(result["worker_rss_mb"]) == {"before", "training", "after_let_go"}


def test_first_start_prints_its_figures_as_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "first_start.py"),
                           "--workers", "1", "--presets", "xor_tanh"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("server_up_s", "page_drawn_s", "first_start_s", "second_start_s"):
        assert result[key] > 0, key
    assert set(result["preset_open_s"]) == {"xor_tanh"}
