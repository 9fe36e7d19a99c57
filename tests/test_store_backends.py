"""The run store on each backend: a SQLite file (the default) and PostgreSQL (what several
replicas of a hosted Netlab share). The same operations, the same numbers on resume, several
processes writing at once, a killed writer's rows kept, and a second 'replica' finding a run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine import ExperimentSpec, SpecError, Trainer
from engine.runs.store import FINISHED, RunStore, StoreWriter, resume
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each starts servers or processes: the full suite runs them

SPEC = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                 "training": {"steps": 60, "log_every": 10}})


def test_every_operation_of_the_store(store_url):
    store = RunStore(store_url)
    t = Trainer(SPEC, callbacks=[StoreWriter(store, name="xor", browser="b" * 32,
                                             tags=["F6"])]).run()
    (run,) = store.runs()
    rid = run["id"]
    assert run["name"] == "xor" and run["status"] == FINISHED and run["tags"] == ["F6"]
    assert run["browser"] == "b" * 32 and run["checkpoint"] == 60
    assert store.runs(browser="c" * 32) == [] and len(store.runs(browser="b" * 32)) == 1
    assert store.rows(rid) == json.loads(json.dumps(t.history.rows))
    store.append(rid, {**t.history.rows[0], "train_loss": 9.0})  # append-only
    assert store.rows(rid)[0]["train_loss"] == t.history.rows[0]["train_loss"]
    assert store.metrics_csv(rid).count("\n") == len(t.history.rows) + 1
    store.rename(rid, "renamed")
    store.tag(rid, ["a", "b"])
    store.rekey(rid, "f" * 32)
    moved = store.run("f" * 32)
    assert moved["name"] == "renamed" and moved["tags"] == ["a", "b"]
    assert moved["checkpoint"] == 60 and len(store.rows("f" * 32)) == len(t.history.rows)
    assert store.run(rid) is None
    back = resume(store, "f" * 32)
    assert back.done and json.dumps(back.history.rows) == json.dumps(t.history.rows)
    assert store.delete("f" * 32) and store.runs() == [] and store.rows("f" * 32) == []
    assert store.checkpoint("f" * 32) is None


def test_a_run_resumes_from_the_store_with_the_numbers_of_one_never_stopped(store_url):
    store = RunStore(store_url)
    spec = ExperimentSpec.from_dict({**SPEC.to_dict(), "model": {"layers": [
        8, {"type": "dropout", "p": 0.2}, 8]}, "training": {"steps": 120, "log_every": 10}})
    first = Trainer(spec, callbacks=[StoreWriter(store, checkpoint_every=0)])
    first.run(47)
    first.callback("store").close(first)  # the process lets go: paused, checkpointed
    rid = first.callback("store").run_id
    assert store.run(rid)["status"] == "paused"
    resume(store, rid).run()
    assert json.dumps(store.rows(rid)) == json.dumps(Trainer(spec).run().history.rows)
    assert store.run(rid)["status"] == FINISHED


WRITER = """
import sys, time
from engine import ExperimentSpec, Trainer
from engine.train.callbacks import Callback
from engine.runs.store import RunStore, StoreWriter

class Slow(Callback):
    def on_log(self, trainer, row):
        time.sleep(0.02)

spec = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                 "training": {"steps": int(sys.argv[2]), "log_every": 1}})
writer = StoreWriter(RunStore(sys.argv[1]), name=sys.argv[3], flush_every=0)
Trainer(spec, callbacks=[writer, Slow()]).run()
"""


def writer(url, steps, name):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, url, str(steps), name], cwd=ROOT,
                            env=env)


def test_processes_write_at_once_and_a_killed_one_keeps_its_rows(store_url):
    RunStore(store_url)  # the tables, before the writers race for them
    procs = [writer(store_url, 40, f"writer {k}") for k in range(3)]
    killed = writer(store_url, 100_000, "killed")
    try:
        assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
        deadline = time.time() + 60
        while time.time() < deadline and not any(
                r["name"] == "killed" and (r["final"]["step"] or 0) >= 20
                for r in RunStore(store_url).runs()):
            time.sleep(0.1)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    store = RunStore(store_url)
    runs = {r["name"]: r for r in store.runs()}
    for k in range(3):
        assert [row["step"] for row in store.rows(runs[f"writer {k}"]["id"])] == \
            list(range(1, 41))
    rows = store.rows(runs["killed"]["id"])
    assert runs["killed"]["status"] == "interrupted" and len(rows) >= 20
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_second_replica_finds_a_run_the_first_one_trained(store_url):
    """Two app servers on one store (what a PostgreSQL URL is for): a run stepped on one is
    brought back by the other for the same browser, at the same step."""
    from serve.caps import Caps
    from serve.registry import RunRegistry
    one = RunRegistry(Caps(), reap_every_s=3600, store=RunStore(store_url))
    two = RunRegistry(Caps(), reap_every_s=3600, store=RunStore(store_url))
    try:
        run = one.create(SPEC, owner="me")
        for _ in range(25):
            run.step_once()
        seen = json.dumps(run.trainer.history.rows)
        one.drop(run.id)  # the first replica lets go (its reaper, or a restart)
        back = two.restore(run.id, owner="me")
        assert back.trainer.step_count == 25 and json.dumps(back.trainer.history.rows) == seen
        assert two.restore(run.id, owner="someone else") is None
    finally:
        one.shutdown()
        two.shutdown()


def test_the_store_location_comes_from_the_environment_and_bad_ones_are_named(
        tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAB_STORE", f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    RunStore()
    assert (tmp_path / "elsewhere.sqlite").exists()
    with pytest.raises(SpecError, match="mysql:// is not known"):
        RunStore("mysql://u:p@h/db")
    with pytest.raises(SpecError, match=r"cannot be opened") as e:
        RunStore("postgresql://someone:secret@127.0.0.1:1/nowhere")
    assert "secret" not in str(e.value) and "someone:***@" in str(e.value)
