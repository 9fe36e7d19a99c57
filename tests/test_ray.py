"""Sweeps on Ray Tune, on a Ray the test starts on this machine: each variant a trial with the
numbers it has trained alone, ASHA stopping the laggards, and a clear message without Ray."""
import json
import sys

import pytest

from engine import ExperimentSpec, SpecError
from engine.__main__ import main
from engine.runs.store import RunStore
from engine.runs.sweep import plan, run
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each starts servers or processes: the full suite runs them

BASE = {"data": {"name": "spiral", "n": 300}, "model": {"layers": [8, 8]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"steps": 200, "log_every": 10}}


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")  # requirements-ray.txt; CI installs it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"py_modules": [str(ROOT / "engine"), str(ROOT / "ui")]})
    yield ray
    ray.shutdown()


def test_a_sweep_on_ray_gives_each_variant_its_own_numbers(ray, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    config = tmp_path / "base.json"
    config.write_text(json.dumps(BASE))
    assert main(["sweep", str(config), "--grid", "optimizer.lr=0.01,0.3", "--seeds", "0-1",
                 "--backend", "ray", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    local = run(plan(ExperimentSpec.from_dict(BASE), {"optimizer.lr": [0.01, 0.3]},
                     seeds=[0, 1]), batched=False)
    assert [r["final"] for r in result["variants"]] == [r["final"] for r in local["variants"]]
    assert [r["stopped"] for r in result["variants"]] == ["completed"] * 4
    assert result["best"] == local["best"] and len(result["ensembles"]) == 2
    stored = {r["id"]: r for r in RunStore().runs()}
    assert set(stored) == {r["run_id"] for r in result["variants"]}
    one = result["variants"][1]
    rows = RunStore().rows(one["run_id"])
    assert rows[-1]["step"] == 200 and rows[-1]["val_loss"] == one["final"]["val_loss"]


def test_asha_stops_trials_that_lag_and_never_picks_one(ray):
    """The good rates first: with two trials at a time (num_cpus=2) they set each rung's bar
    before the slow rates reach it, so ASHA, which decides as results arrive, must stop some."""
    variants = plan(ExperimentSpec.from_dict(BASE), {"optimizer.lr": [
        0.3, 1.0, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001]})
    from engine.runs.ray_backend import run_on_ray
    result = run_on_ray(variants, asha=True)
    stopped = [r for r in result["variants"] if r["stopped"] == "stopped_early"]
    assert stopped and all(r["steps"] < 200 for r in stopped)
    best = result["variants"][result["best"]]
    assert best["stopped"] == "completed" and best["steps"] == 200
    finished = [r["final"]["val_loss"] for r in result["variants"] if r["stopped"] == "completed"]
    assert best["final"]["val_loss"] == min(finished)


def test_without_ray_the_message_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    from engine.runs.ray_backend import run_on_ray
    with pytest.raises(SpecError, match="pip install -r requirements-ray.txt"):
        run_on_ray(plan(ExperimentSpec.from_dict(BASE), {"optimizer.lr": [0.1, 0.3]}))
    assert main(["sweep", "--preset", "xor_tanh", "--grid", "optimizer.lr=0.1,0.3", "--backend",
                 "ray", "--out", str(tmp_path / "o"), "--no-store"]) == 2
    assert "requirements-ray.txt" in capsys.readouterr().err
    assert main(["sweep", "--preset", "xor_tanh", "--grid", "optimizer.lr=0.1,0.3", "--asha",
                 "--out", str(tmp_path / "o")]) == 2


# ----------------------------------------------------------------------------- live runs


def test_a_run_on_a_ray_actor_is_reached_from_another_replica(ray, tmp_path):
    """Each run a named, detached actor: a second replica (its own registry and pool) restores
    the run a first one started, sees it train and pauses it; dropping it ends the actor."""
    from serve.caps import Caps
    from serve.ray_runs import RayPool
    from serve.registry import RunRegistry
    from serve.runs import Run

    store = RunStore(tmp_path / "runs.sqlite")
    spec = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [8]},
                                     "training": {"steps": 100_000}})
    caps = Caps(max_steps=200_000, grace_s=60, drop_after_s=3600)
    first = RunRegistry(caps, reap_every_s=0.2, store=store,
                        workers=RayPool("local", store.location, caps))
    second = RunRegistry(caps, reap_every_s=0.2, store=store,
                         workers=RayPool("local", store.location, caps))
    try:
        run = first.create(spec, owner="alice")
        run.start()
        assert run.state == Run.RUNNING and run.trainer.step_count >= 1
        assert f"run-{run.id}" in {a["name"] for a in ray.util.list_named_actors(True)}
        assert second.restore(run.id, owner="mallory") is None  # not theirs
        big = ExperimentSpec.from_dict({**spec.to_dict(), "model": {"layers": [2048, 2048]}})
        with pytest.raises(SpecError) as refused:  # the actor's own error, not Ray's wrapper
            first.create(big, owner="alice")
        assert "Traceback" not in str(refused.value) and "parameters" in str(refused.value)
        seen = second.restore(run.id, owner="alice")  # a reload served by the other replica
        assert seen.state == Run.RUNNING
        steps = seen.trainer.step_count
        deadline = __import__("time").time() + 10
        while seen.trainer.step_count <= steps + 100 and __import__("time").time() < deadline:
            seen.touch()
        assert seen.trainer.step_count > steps + 100
        seen.pause()
        run.sync()
        assert run.state == Run.PAUSED  # one run, whichever replica presses the button
        first.drop(run.id)
        deadline = __import__("time").time() + 30  # the actor ends once it holds no run
        while f"run-{run.id}" in {a["name"] for a in ray.util.list_named_actors(True)} \
                and __import__("time").time() < deadline:
            __import__("time").sleep(0.1)
        assert f"run-{run.id}" not in {a["name"] for a in ray.util.list_named_actors(True)}
    finally:
        first.shutdown()
        second.shutdown()
