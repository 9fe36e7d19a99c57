"""The live-run registry without a browser: threads start and stop, the reaper pauses unseen
runs and forgets them later, and every cap answers with a message."""
import time

import pytest

from engine import ExperimentSpec, SpecError
from ui.runner import Caps, CapError, Run, RunRegistry

SPEC = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [8]},
                                 "training": {"steps": 100_000}})


def caps(**kw):
    base = dict(max_trainers=2, max_params=10_000, max_steps=200_000, max_steps_per_s=0,
                train_slots=1, shared_duty=0.5, grace_s=0.3, drop_after_s=1.0)
    return Caps(**{**base, **kw})


@pytest.fixture
def registry():
    reg = RunRegistry(caps(), reap_every_s=0.05)
    yield reg
    reg.shutdown()


def wait_for(predicate, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_start_trains_in_a_thread_and_pause_stops_it(registry):
    run = registry.create(SPEC)
    run.start()
    assert run.trainer.step_count >= 1 and len(run.trainer.history) >= 1  # first row at once
    assert wait_for(lambda: run.trainer.step_count > 50)
    run.pause()
    assert run.state == Run.PAUSED and not run.thread_alive
    steps = run.trainer.step_count
    time.sleep(0.1)
    assert run.trainer.step_count == steps
    run.step_once()
    assert run.trainer.step_count == steps + 1


def test_an_unseen_run_is_paused_after_the_grace_period_then_forgotten(registry):
    run = registry.create(SPEC)
    run.start()
    assert wait_for(lambda: run.state == Run.PAUSED, timeout=3)
    assert not run.thread_alive
    assert registry.get(run.id) is run  # paused, its history kept
    assert wait_for(lambda: registry.get(run.id) is None, timeout=3)


def test_a_watched_run_keeps_training(registry):
    run = registry.create(SPEC)
    run.start()
    for _ in range(15):  # the page stamps it on every refresh
        run.touch()
        time.sleep(0.05)
    assert run.state == Run.RUNNING
    run.pause()


def test_too_many_trainers_gets_a_message(registry):
    runs = [registry.create(SPEC) for _ in range(3)]
    for run in runs[:2]:
        run.start()
        run.touch()
    with pytest.raises(CapError, match="2 networks at once"):
        runs[2].start()
    for run in runs[:2]:
        run.pause()


def test_parameter_and_step_caps_name_the_limit(registry):
    with pytest.raises(SpecError, match="at most 10,000 are allowed"):
        registry.create(SPEC.with_changes({"model.layers": [512, 512]}))
    with pytest.raises(SpecError, match="training.steps=300,000"):
        registry.create(SPEC.with_changes({"training.steps": 300_000}))


def test_a_finished_run_reports_done(registry):
    run = registry.create(SPEC.with_changes({"training.steps": 30}))
    run.start()
    assert wait_for(lambda: run.state == Run.DONE)
    assert run.trainer.stopped == "completed" and not run.thread_alive


def test_steps_per_second_cap_is_respected():
    reg = RunRegistry(caps(max_steps_per_s=50, grace_s=10), reap_every_s=0.05)
    run = reg.create(SPEC)
    run.start()
    time.sleep(1.0)
    run.pause()
    reg.shutdown()
    assert run.trainer.step_count <= 60


def test_an_exception_in_training_becomes_the_runs_error(registry, monkeypatch):
    run = registry.create(SPEC)
    run.trainer.step()  # a first step, so Start goes straight to the thread

    def boom():
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(run.trainer, "step", boom)
    run.start()
    assert wait_for(lambda: run.state == Run.ERROR)
    assert "simulated failure" in run.error and not run.thread_alive
