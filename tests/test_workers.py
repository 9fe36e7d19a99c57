"""Runs trained in worker processes (serve/workers.py), seen from the web process through
RemoteRun: the same numbers as a Trainer here, the buttons keep their meaning, reads come from
the worker, the caps hold across workers, a paused or unseen run leaves its worker idle, a dead
worker is reported, and a killed server's runs come back from the store."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.runs.store import RunStore
from serve.caps import CapError, Caps, RunDropped
from serve.registry import RunRegistry
from serve.runs import Run
from serve.workers import RemoteRun, WorkerPool
from tests.conftest import ROOT
from tests.test_runner import wait_for as _wait_for

SPEC = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [8]},
                                 "training": {"steps": 300, "log_every": 10}})
ENDLESS = ExperimentSpec.from_dict({**SPEC.to_dict(), "training": {"steps": 100_000}})


def caps(**kw):
    base = dict(max_trainers=8, max_params=10_000, max_steps=200_000, max_steps_per_s=0,
                grace_s=60, drop_after_s=3600)
    return Caps(**{**base, **kw})


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def wait_for(predicate, timeout=10.0):  # a worker's numbers come through a sync
    return _wait_for(predicate, timeout)


def stays_paused(run) -> int:
    """Asserts the run is paused in its worker and takes no step for 0.3 s; its step."""
    run.sync()
    assert run.state == Run.PAUSED
    steps = run.trainer.step_count
    time.sleep(0.3)
    run.sync()
    assert run.trainer.step_count == steps
    return steps


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store") / "runs.sqlite")
    workers = WorkerPool(2, store.location, caps())
    workers.store = store
    yield workers
    workers.shutdown()


def let_go(reg) -> None:
    """Drop a registry's runs (their workers stay, shared by the module)."""
    for run in reg.runs():
        reg.drop(run.id)
    reg._stop.set()


@pytest.fixture
def registry(pool):
    reg = RunRegistry(caps(), reap_every_s=0.1, store=pool.store, workers=pool)
    yield reg
    let_go(reg)


@pytest.mark.slow
def test_a_run_in_a_worker_gives_the_rows_and_predictions_of_a_trainer_here(registry):
    run = registry.create(SPEC, owner="alice")
    assert isinstance(run, RemoteRun) and run.state == Run.READY
    run.start()
    assert run.trainer.step_count >= 1 and run.trainer.history.rows  # the first row at once
    assert wait_for(lambda: run.trainer.done)
    alone = Trainer(SPEC).run()
    assert run.state == Run.DONE and run.trainer.stopped == "completed"
    assert same(run.trainer.history.rows, alone.history.rows)
    x = alone.data.x_val[:16]
    assert torch.equal(run.predict(x), alone.predict(x))  # computed in the worker
    assert torch.equal(run.trainer.data.x_train, alone.data.x_train)
    assert run.metrics("val")["accuracy"] == pytest.approx(alone.evaluate("val")["acc"])
    assert set(run.trainer.activation_samples()) == set(alone.activation_samples())
    assert run.network_snapshot()["task"] == "classification"
    from engine.lab.decode import embedding_map
    assert run.read(embedding_map) is None  # a module-level reader runs in the worker
    assert sum(p.numel() for p in run.trainer.model.parameters()) == alone.cost["params"]


@pytest.mark.slow
def test_pause_step_and_go_on_keep_their_meaning(registry, pool):
    run = registry.create(ENDLESS, owner="alice")
    run.start()
    assert wait_for(lambda: run.trainer.step_count > 200)
    run.pause()
    steps = stays_paused(run)
    run.step_once()
    assert run.trainer.step_count == steps + 1 and run.state == Run.PAUSED
    # a finished run goes on from where it ended
    short = registry.create(SPEC, owner="bob")
    short.start()
    assert wait_for(lambda: short.state == Run.DONE)
    assert short.can_continue and short.go_on()
    assert short.trainer.total_steps == 600 and short.state == Run.PAUSED


@pytest.mark.slow
def test_a_paused_run_leaves_its_worker_idle(registry, pool):
    run = registry.create(ENDLESS, owner="alice")
    run.start()
    pid = pool.pids()[run.host.index]
    # training uses the worker's CPU: a third of a CPU-second, however long a busy machine
    # takes to give it that (a share of wall time would depend on the machine's load)
    c0 = cpu_seconds(pid)
    assert wait_for(lambda: cpu_seconds(pid) - c0 > 0.3, timeout=20)
    run.pause()
    t0, c0 = time.time(), cpu_seconds(pid)
    time.sleep(1.0)
    idle = (cpu_seconds(pid) - c0) / (time.time() - t0)  # load only lowers this
    assert idle < 0.05, idle


@pytest.mark.slow
def test_an_unseen_run_is_paused_after_the_grace_period(pool):
    reg = RunRegistry(caps(grace_s=0.5), reap_every_s=0.1, store=pool.store, workers=pool)
    try:
        run = reg.create(ENDLESS, owner="alice")
        run.start()
        assert run.active
        assert wait_for(lambda: not run.active, timeout=5)
        stays_paused(run)
    finally:
        let_go(reg)


def test_a_reset_replaces_the_run_in_its_worker(registry):
    run = registry.create(ENDLESS, owner="alice")
    run.start()
    assert wait_for(lambda: run.trainer.step_count > 50)
    fixed = ExperimentSpec.from_dict({**ENDLESS.to_dict(), "model": {"layers": [4]}})
    new = registry.create(fixed, run.id, owner="alice")  # a fix restarts under the same id
    assert registry.get(run.id) is new and new.host.index == run.host.index
    assert run.state == Run.DROPPED and new.state == Run.READY
    with pytest.raises(RunDropped):  # the old object reaches the new run no more
        run.predict(new.trainer.data.x_val[:2])
    new.step_once()
    assert new.trainer.step_count == 1 and new.trainer.history.rows[0]["step"] == 1
    with pytest.raises(CapError, match="belongs to another browser"):
        registry.create(fixed, run.id, owner="mallory")


@pytest.mark.slow
def test_the_caps_hold_across_workers(registry):
    first, second = (registry.create(ENDLESS, owner="alice") for _ in range(2))
    assert first.host.index != second.host.index  # placed on the less loaded worker
    first.start()
    with pytest.raises(CapError, match="already training 1 network"):
        second.start()
    assert second.state == Run.READY
    first.pause()
    second.start()
    assert second.state == Run.RUNNING
    big = ExperimentSpec.from_dict({**SPEC.to_dict(), "model": {"layers": [512, 512]}})
    with pytest.raises(SpecError, match="parameters; at most 10,000"):  # the worker's own cap
        registry.create(big, owner="carol")


@pytest.mark.slow
def test_a_worker_that_dies_is_reported_and_its_run_comes_back_from_the_store(pool):
    reg = RunRegistry(caps(), reap_every_s=60, store=pool.store, workers=pool)
    try:
        run = reg.create(ENDLESS, owner="dave")
        run.start()
        assert wait_for(lambda: run.trainer.step_count > 100)
        run.pause()  # a checkpoint
        kept = run.trainer.step_count
        run.start()
        dead = run.host.index
        os.kill(pool.pids()[dead], signal.SIGKILL)
        assert wait_for(lambda: (run.sync(), run.state)[1] == Run.ERROR, timeout=10)
        assert run.lost and run.error == RemoteRun.LOST
        with pytest.raises(RunDropped, match="worker process that trained this run stopped"):
            run.predict(torch.zeros(1, 2))
        assert pool.worker(dead).alive and len(pool.pids()) == 2  # started again when needed
        run.sync()
        assert run.state == Run.ERROR  # the fresh worker does not pass for the dead one
        back = reg.restore(run.id, owner="dave")  # what a reload does
        assert back is not run and reg.get(run.id) is back and not back.lost
        assert back.trainer.step_count == kept and back.state == Run.PAUSED
        back.step_once()
        assert back.trainer.step_count == kept + 1
    finally:
        let_go(reg)


def test_a_browser_given_control_may_reset_the_run_in_its_worker(registry):
    run = registry.create(SPEC, owner="alice")
    assert run.grant("bob", run.share_control())
    fresh = registry.create(ENDLESS, run.id, owner="bob")  # a Reset (or a fix) by bob
    assert fresh.owner == "alice" and fresh.can_control("bob")
    fresh.step_once()
    assert fresh.trainer.step_count == 1
    assert registry.store.run(run.id)["browser"] == "alice"


@pytest.mark.slow
def test_train_until_paused_switched_while_training_reaches_the_worker(registry):
    planned = ExperimentSpec.from_dict({**SPEC.to_dict(), "training": {"steps": 3000}})
    run = registry.create(planned, owner="alice")
    run.start()
    run.endless = True
    assert wait_for(lambda: run.trainer.step_count > 3500, timeout=20)
    assert run.state == Run.RUNNING
    run.endless = False  # it stops at the end of the plan it reached
    assert wait_for(lambda: run.state == Run.DONE, timeout=20)
    assert run.trainer.step_count == run.trainer.total_steps > 3000


def test_a_run_the_worker_refuses_leaves_no_placement_behind(registry, pool):
    big = ExperimentSpec.from_dict({**SPEC.to_dict(), "model": {"layers": [512, 512]}})
    with pytest.raises(SpecError):
        registry.create(big, "c" * 32, owner="carol")
    assert "c" * 32 not in pool._placed and registry.get("c" * 32) is None


SERVER = textwrap.dedent("""
    import sys, time
    from engine import ExperimentSpec
    from engine.runs.store import RunStore
    from serve.caps import Caps
    from serve.registry import RunRegistry
    from serve.workers import WorkerPool
    store = RunStore(sys.argv[1])
    reg = RunRegistry(Caps(), store=store, workers=WorkerPool(1, store.location))
    spec = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [8]},
                                     "training": {"steps": 100000}})
    run = reg.create(spec, "a" * 32, owner="erin")
    run.start()
    while run.trainer.step_count < 500:
        time.sleep(0.05)
    print(run.host.pool.pids()[0], flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
def test_a_killed_servers_runs_come_back_from_the_store(tmp_path):
    """SIGKILL the web process: its worker checkpoints the run and exits; a new server on the
    same store restores it at the step it reached."""
    store = tmp_path / "runs.sqlite"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(store)], cwd=ROOT,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        worker = int(server.stdout.readline())
        server.kill()
        server.wait()
        assert wait_for(lambda: not os.path.exists(f"/proc/{worker}") or
                        open(f"/proc/{worker}/stat").read().split()[2] == "Z", timeout=20)
    finally:
        server.kill()
    kept = RunStore(store).run("a" * 32)
    assert kept["status"] == "paused" and kept["checkpoint"] >= 500
    pool = WorkerPool(1, str(store), caps())
    reg = RunRegistry(caps(), reap_every_s=60, store=RunStore(store), workers=pool)
    try:
        assert reg.restore("a" * 32, owner="mallory") is None  # not theirs
        run = reg.restore("a" * 32, owner="erin")
        assert run.trainer.step_count == kept["checkpoint"] and run.state == Run.PAUSED
        run.step_once()
        assert run.trainer.step_count == kept["checkpoint"] + 1
    finally:
        reg.shutdown()


# ----------------------------------------------------------------------------- the page


@pytest.fixture
def page_server(monkeypatch):
    """The Playground under AppTest with its runs in one worker process."""
    import streamlit as st

    from tests.test_app import live_registries
    monkeypatch.setenv("NETLAB_WORKERS", "1")
    st.cache_resource.clear()
    yield
    for registry in live_registries():
        registry.shutdown()
    st.cache_resource.clear()


@pytest.mark.slow
def test_the_playground_drives_a_run_in_a_worker(page_server):
    import threading

    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, button, figures, live_registries, no_problems
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.number_input(key="w.training.steps").set_value(50_000).run()  # no end before Pause
    button(at, "Start").click().run()
    registry = live_registries()[-1]
    run = registry.get(at.session_state["run_id"])
    assert isinstance(run, RemoteRun) and run.state == Run.RUNNING
    assert not [t for t in threading.enumerate() if t.name.startswith("netlab-train")]
    loss = next(f for f in figures(at) if f["layout"]["title"]["text"] == "Loss")
    assert any(len(trace.get("x") or ()) for trace in loss["data"])  # drawn at the first rerun
    button(at, "Pause").click().run()
    paused = run.trainer.step_count
    assert run.state == Run.PAUSED
    button(at, "Step").click().run()
    assert run.trainer.step_count == paused + 1
    assert f"step {paused + 1:,} /" in " ".join(m.value for m in at.markdown)
    # a reload: a new session on the run's link finds the same run
    again = AppTest.from_file(APP, default_timeout=60)
    again.query_params["run"] = run.id
    again.run()
    assert again.session_state["run_id"] == run.id
    assert f"step {paused + 1:,} /" in " ".join(m.value for m in again.markdown)
    button(at, "Reset").click().run()
    fresh = registry.get(at.session_state["run_id"])
    assert fresh is not run and fresh.id == run.id and fresh.trainer.step_count == 0
    assert run.state == Run.DROPPED
    no_problems(at)


@pytest.mark.slow
def test_a_fix_restarts_the_run_in_its_worker(page_server):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, button, live_registries, no_problems, spec_of
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.selectbox(key="preset_pick").set_value("vanishing_sigmoid").run()
    button(at, "Load preset").click().run()
    at.number_input(key="w.training.log_every").set_value(1).run()
    for _ in range(3):  # a finding needs evidence on three logged rows in a row
        button(at, "Step").click().run()
    assert "Health: vanishing" in " ".join(m.value for m in at.markdown)
    next(b for b in at.button if b.label == "Switch to ReLU + He init").click().run()
    no_problems(at)
    run = live_registries()[-1].get(at.session_state["run_id"])
    assert isinstance(run, RemoteRun) and run.spec == spec_of(at)
    assert run.spec.model.activation.name == "relu" and run.state in (Run.RUNNING, Run.DONE)
    run.pause()


@pytest.mark.slow
def test_a_server_told_to_use_ray_without_it_says_so_and_trains_in_workers(page_server,
                                                                         monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, button, live_registries
    monkeypatch.setenv("NETLAB_RAY_ADDRESS", "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # not installed
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    warning = " ".join(w.value for w in at.warning)
    assert "NETLAB_RAY_ADDRESS=auto is set, but Ray cannot be used" in warning
    assert "pip install -r requirements-ray.txt" in warning
    button(at, "Step").click().run()
    run = live_registries()[-1].get(at.session_state["run_id"])
    assert isinstance(run, RemoteRun) and run.trainer.step_count == 1


@pytest.mark.slow
def test_two_servers_on_one_store_hand_a_run_over_through_their_workers(store_url):
    """Two servers (registries with their own workers) on one store, SQLite and PostgreSQL:
    the first trains a run and lets it go; the second's worker brings it back."""
    first_pool, second_pool = WorkerPool(1, store_url, caps()), WorkerPool(1, store_url, caps())
    first = RunRegistry(caps(), reap_every_s=60, store=RunStore(store_url), workers=first_pool)
    second = RunRegistry(caps(), reap_every_s=60, store=RunStore(store_url), workers=second_pool)
    try:
        run = first.create(SPEC, owner="erin")
        for _ in range(5):
            run.step_once()
        rows = run.trainer.history.rows
        first.drop(run.id)  # paused and checkpointed into the shared store
        back = second.restore(run.id, owner="erin")
        assert back.trainer.step_count == 5 and back.trainer.history.rows == rows
        back.step_once()
        assert back.trainer.step_count == 6
    finally:
        first.shutdown()
        second.shutdown()


def test_a_sweep_whose_page_stops_waiting_stops_in_its_worker():
    """Streamlit interrupts the page's polling (a rerun, a closed tab): the worker is told,
    and the sweep ends after the variants training then, not after all of them."""
    from engine.runs.sweep import plan
    from serve.worker_host import WorkerHost
    from serve.workers import sweep_in_worker

    worker = WorkerHost()

    def host(method, *args):
        return getattr(worker, method)(*args)
    host.release = lambda: None
    pool = type("InProcess", (), {"host": lambda self, run_id: host})()
    base = ExperimentSpec.from_dict({**SPEC.to_dict(), "training": {"steps": 400}})
    variants = plan(base, {"optimizer.name": ["adagrad", "rmsprop", "adadelta", "adam"]})

    class Interrupted(Exception):  # what Streamlit raises in a script it stops
        pass

    def progress(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        sweep_in_worker(pool, variants, "sweep", None, progress=progress)
    state = next(iter(worker._sweeps.values()))
    assert wait_for(lambda: state["finished"])
    assert isinstance(state["error"], SpecError) and "page went away" in str(state["error"])
    assert state["done"] < len(variants)  # each optimizer trains alone: it stopped early


def test_a_store_failing_in_a_worker_reaches_the_page(tmp_path):
    """Issue 31, item 13: the run trains in a worker, its store writer fails there (a full
    disk); the page's RemoteRun learns it at its next sync, and when it clears."""
    from serve.worker_host import WorkerHost

    worker = WorkerHost(str(tmp_path / "runs.sqlite"))

    def host(method, *args, **kw):
        return getattr(worker, method)(*args, **kw)
    host.release = lambda: None
    registry = RunRegistry(Caps())
    try:
        run = RemoteRun("r" * 32, SPEC, registry, host, owner="me")
        run.step_once()
        writer = worker.registry.get("r" * 32).trainer.callback("store")
        assert run.store_failure is None
        writer.failure = "database or disk is full"
        run.sync()
        assert run.store_failure == "database or disk is full"
        writer.failure = None
        run.sync()
        assert run.store_failure is None
    finally:
        registry.shutdown()
        worker.registry.shutdown()


@pytest.mark.slow
def test_a_killed_worker_s_run_comes_back_on_the_page_without_a_reload(page_server,
                                                                      monkeypatch):
    """Issue 31, item 14: after its worker was killed the page kept showing "running", the
    first reload an error box and a disabled Start. Now the page itself brings the run back
    from its last checkpoint (one at the first logged step, then every NETLAB_CHECKPOINT_S),
    says so, and Start goes on; no more than the checkpoint interval of training is lost."""
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, button, live_registries, no_problems
    monkeypatch.setenv("NETLAB_CHECKPOINT_S", "1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.number_input(key="w.training.steps").set_value(50_000).run()
    button(at, "Start").click().run()
    registry = live_registries()[-1]
    run = registry.get(at.session_state["run_id"])
    started = time.monotonic()
    assert wait_for(lambda: (run.sync(), run.trainer.step_count)[1] > 300
                    and time.monotonic() - started > 2.5, timeout=30)
    run.sync()
    at_kill, rate = run.trainer.step_count, run.trainer.step_count / (time.monotonic() - started)
    for pid in registry.workers.pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    at.run()  # the page's next refresh
    no_problems(at)
    back = registry.get(at.session_state["run_id"])
    assert back is not run and back.id == run.id and not back.lost
    assert back.state == Run.PAUSED
    said = " ".join(i.value for i in at.info)
    assert f"brought back from its last checkpoint, at step {back.trainer.step_count:,}" in said
    assert 0 <= at_kill - back.trainer.step_count <= rate * (1.0 + 1.5), (at_kill, rate)
    assert not any(b.disabled for b in at.button if b.label == "Start")
    button(at, "Start").click().run()
    assert wait_for(lambda: (back.sync(), back.trainer.step_count)[1] > at_kill, timeout=30)
    button(at, "Pause").click().run()
    no_problems(at)
