"""The run store: a run's spec, rows and summary survive its process; a killed process leaves
every row it committed and goes on from its checkpoint with the numbers it would have given;
several processes write at once; the CLI records, lists and resumes runs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.__main__ import main
from engine.runs.store import FINISHED, INTERRUPTED, RunStore, StoreWriter, resume
from tests.conftest import ROOT

SPEC = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                 "training": {"steps": 60, "log_every": 10}})


def test_a_recorded_run_reads_back_as_it_was_logged(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    t = Trainer(SPEC, callbacks=[StoreWriter(store, name="xor")]).run()
    (run,) = store.runs()
    assert run["name"] == "xor" and run["status"] == FINISHED
    assert ExperimentSpec.from_dict(run["spec"]) == SPEC
    assert store.rows(run["id"]) == json.loads(json.dumps(t.history.rows))  # every row, in order
    assert run["final"]["step"] == 60 and run["summary"]["steps"] == 60
    store.append(run["id"], {**t.history.rows[0], "train_loss": 123.0})  # append-only
    assert store.rows(run["id"])[0]["train_loss"] == t.history.rows[0]["train_loss"]
    csv_lines = store.metrics_csv(run["id"]).splitlines()
    assert csv_lines[0].split(",")[:4] == ["step", "epoch", "lr", "train_loss"]
    assert csv_lines[0].endswith(",health") and len(csv_lines) == 1 + len(t.history.rows)
    first = dict(zip(csv_lines[0].split(","), csv_lines[1].split(",")))
    assert float(first["train_loss"]) == t.history.rows[0]["train_loss"]
    assert first["health"] == t.history.rows[0]["health"]["status"]
    store.tag(run["id"], ["baseline", "xor", "xor"])
    assert store.runs()[0]["tags"] == ["baseline", "xor"]
    with pytest.raises(SpecError, match="tags"):
        store.tag(run["id"], [""])
    store.rename(run["id"], "renamed")
    assert store.runs()[0]["name"] == "renamed"
    assert store.delete(run["id"]) and store.runs() == [] and store.rows(run["id"]) == []


WRITER = """
import sys, time
from engine import ExperimentSpec, Trainer
from engine.train.callbacks import Callback
from engine.runs.store import RunStore, StoreWriter

class Slow(Callback):  # a logged row every ~20 ms, so the kill lands mid-run
    def on_log(self, trainer, row):
        time.sleep(0.02)

spec = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                 "training": {"steps": int(sys.argv[2]), "log_every": 1}})
Trainer(spec, callbacks=[StoreWriter(RunStore(sys.argv[1]), name=sys.argv[3]), Slow()]).run()
"""


def writer(path, steps, name):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(steps), name],
                            cwd=ROOT, env=env)


@pytest.mark.slow
def test_a_killed_process_leaves_every_row_it_committed(tmp_path):
    path = tmp_path / "runs.sqlite"
    proc = writer(path, 100_000, "killed")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if path.exists() and any(r["final"]["step"] and r["final"]["step"] >= 20
                                     for r in RunStore(path).runs()):
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    store = RunStore(path)  # opens after the kill
    (run,) = store.runs()
    rows = store.rows(run["id"])
    # it never finished, and the process that wrote it is gone
    assert run["status"] == INTERRUPTED and run["summary"] is None
    assert len(rows) >= 20 and [r["step"] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.slow
def test_several_processes_write_their_runs_at_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    procs = [writer(path, 40, f"writer {k}") for k in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = RunStore(path)
    runs = store.runs()
    assert sorted(r["name"] for r in runs) == ["writer 0", "writer 1", "writer 2"]
    for r in runs:
        assert r["status"] == FINISHED
        assert [row["step"] for row in store.rows(r["id"])] == list(range(1, 41))


def test_the_cli_records_its_runs_and_lists_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    assert main(["train", "--preset", "xor_tanh", "--steps", "30", "--out",
                 str(tmp_path / "a")]) == 0
    assert main(["train", "--preset", "xor_tanh", "--steps", "30", "--out", str(tmp_path / "b"),
                 "--no-store"]) == 0
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["name"] == "xor_tanh" and run["status"] == FINISHED
    assert run["final"]["step"] == 30 and run["spec"]["data"]["name"] == "xor"
    assert main(["runs"]) == 0 and "xor_tanh" in capsys.readouterr().out


def test_a_store_that_cannot_be_opened_says_where(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpecError, match="cannot be opened"):
        RunStore(blocker / "runs.sqlite")
    monkeypatch.setenv("NETLAB_HOME", str(blocker))
    assert main(["runs"]) == 2
    assert "cannot be opened" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_cli_run_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path, capsys,
                                                                          monkeypatch):
    """`train` killed mid-run (SIGKILL: no cleanup), then `resume`: the stored rows and the
    weights equal those of the same run trained without a stop."""
    home = tmp_path / "home"
    monkeypatch.setenv("NETLAB_HOME", str(home))
    steps = 3000
    config = tmp_path / "config.json"
    spec = ExperimentSpec.from_dict({"data": {"name": "spiral", "n": 300},
                                     "model": {"layers": [16, {"type": "dropout", "p": 0.1},
                                                          16]},
                                     "training": {"steps": steps, "log_every": 10,
                                                  "batch_size": 16}})
    config.write_text(spec.to_json())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETLAB_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", str(config), "--out",
                             str(tmp_path / "out"), "--checkpoint-every", "0"], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            runs = RunStore().runs() if (home / "runs.sqlite").exists() else []
            if runs and (runs[0]["checkpoint"] or 0) >= 100:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (run,) = RunStore().runs()
    assert run["status"] == INTERRUPTED and 100 <= run["checkpoint"] < steps, run["checkpoint"]
    assert main(["resume", run["id"][:8]]) == 0
    assert "completed" in capsys.readouterr().out
    (run,) = RunStore().runs()
    assert run["status"] == FINISHED and run["checkpoint"] == steps
    alone = Trainer(spec).run()
    assert RunStore().rows(run["id"]) == json.loads(json.dumps(alone.history.rows))
    resumed = resume(RunStore(), run["id"])  # a finished run comes back finished
    assert resumed.done and resumed.step_count == steps
    for a, b in zip(alone.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert main(["resume", run["id"]]) == 2  # ended: it needs --steps to go further
    assert "--steps" in capsys.readouterr().err
    assert main(["resume", run["id"], "--steps", "20"]) == 0
    assert RunStore().runs()[0]["final"]["step"] == steps + 20
    # a prefix no stored run has (a name that is no id at all is refused before: test_cli.py)
    assert main(["resume", "ffff0000"]) == 2 and "no stored run" in capsys.readouterr().err


def test_a_checkpoint_is_of_its_own_experiment_and_loads_without_running_code(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    Trainer(SPEC, callbacks=[StoreWriter(store, checkpoint_every=0)]).run(30)
    (run,) = store.runs()
    assert run["checkpoint"] == 30 and run["status"] != FINISHED
    state = store.checkpoint(run["id"])
    other = ExperimentSpec.from_dict({**SPEC.to_dict(), "seed": 1})
    with pytest.raises(SpecError, match="another experiment"):
        Trainer(other).load_state_dict(state)
    with pytest.raises(ValueError, match="not trained yet"):
        Trainer(SPEC).run(1).load_state_dict(state)
    with pytest.raises(SpecError, match="cannot be read"):
        Trainer.resume(b"not a checkpoint")
    evil = tmp_path / "evil.pt"  # a pickle that would run code is refused, not run
    torch.save({"format": 1, "x": os.system}, evil)
    with pytest.raises(SpecError, match="cannot be read"):
        Trainer.resume(str(evil))
    assert store.delete(run["id"]) and store.checkpoint(run["id"]) is None


def test_runs_are_written_for_tensorboard_as_it_reads_them(tmp_path, capsys, monkeypatch):
    """Read back by TensorBoard's own loader: every logged value at its step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    live = tmp_path / "live"
    assert main(["train", "--preset", "xor_tanh", "--steps", "40", "--out", str(tmp_path / "a"),
                 "--tensorboard", str(live)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text()
            .splitlines()]
    assert main(["runs", "--tensorboard", str(tmp_path / "stored")]) == 0
    (folder,) = list((tmp_path / "stored").iterdir())
    for logdir in (live, folder):
        events = EventAccumulator(str(logdir))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert {"loss/train", "loss/val", "accuracy/val", "lr", "grad_norm"} <= set(tags)
        val = events.Scalars("loss/val")
        assert [e.step for e in val] == [r["step"] for r in rows if r["val_loss"] is not None]
        for e, r in zip(val, [r for r in rows if r["val_loss"] is not None]):
            assert e.value == pytest.approx(r["val_loss"], rel=1e-6)  # stored as float32
        layer = rows[-1]["layers"][0]
        assert f"layers/{layer['name']}/act_grad_norm" in tags


def test_a_diverged_run_comes_back_with_its_diverged_row(tmp_path):
    from engine.presets import load_preset
    store = RunStore(tmp_path / "runs.sqlite")
    spec = ExperimentSpec.from_dict(load_preset("lr_too_high")["config"])
    t = Trainer(spec, callbacks=[StoreWriter(store)]).run()
    assert t.stopped == "diverged"
    back = resume(store, t.callback("store").run_id)
    assert back.done and back.stopped == "diverged"
    assert back.history.last["health"]["status"] == "diverged"
    assert json.dumps(back.history.rows) == json.dumps(t.history.rows)


def test_a_run_is_not_resumed_twice_nor_reopened_without_a_checkpoint(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    live = store.create(SPEC.to_json(), "live elsewhere")
    with store._connect() as db:  # a live process of this host trains it (our parent)
        db.execute("UPDATE runs SET owner = ? WHERE id = ?",
                   (f"{__import__('socket').gethostname()}:{os.getppid()}", live))
    with pytest.raises(SpecError, match="being trained by another process"):
        resume(store, live)
    ray_like = store.create(SPEC.to_json(), "trained on Ray")  # rows and a summary, no checkpoint
    store.append(ray_like, {"step": 1, "train_loss": 0.7}, {"step": 60, "train_loss": 0.3})
    store.finish(ray_like, {"steps": 60, "stopped": "completed"})
    with pytest.raises(SpecError, match="no checkpoint to go on from"):
        resume(store, ray_like)
    assert [r["step"] for r in store.rows(ray_like)] == [1, 60]  # nothing was wiped
    # resumed but not trained: its later rows stay until training moves on
    t = Trainer(SPEC, callbacks=[StoreWriter(store, checkpoint_every=0)]).run(20)
    rid = t.callback("store").run_id
    t.callback("store").save(t)
    store.append(rid, {"step": 30, "train_loss": 0.1})  # logged after the checkpoint
    resume(store, rid)
    assert store.rows(rid)[-1]["step"] == 30
    resume(store, rid).run(1)
    assert [r["step"] for r in store.rows(rid)][-1] <= 21


def test_a_cancelled_run_is_paused_in_the_store_and_goes_on(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    t = Trainer(SPEC, callbacks=[StoreWriter(store)])
    t.run(25)
    t.cancel()
    t.run()  # stops at once: cancelled
    rid = t.callback("store").run_id
    found = store.run(rid)
    assert t.stopped == "cancelled" and found["status"] == "paused" and found["checkpoint"] == 25
    back = resume(store, rid)
    assert not back.done and back.step_count == 25
    back.run()
    assert json.dumps(store.rows(rid)) == json.dumps(Trainer(SPEC).run().history.rows)


def test_a_failing_store_never_stops_the_run_and_catches_up(tmp_path, monkeypatch, capsys):
    import sqlite3
    store = RunStore(tmp_path / "runs.sqlite")
    real, calls = store.append, []

    def flaky(run_id, *rows):
        calls.append(len(rows))
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        real(run_id, *rows)
    monkeypatch.setattr(store, "append", flaky)
    writer = StoreWriter(store, flush_every=0)
    t = Trainer(SPEC, callbacks=[writer]).run()
    assert t.stopped == "completed"
    assert "database is locked" in capsys.readouterr().err
    assert [r["step"] for r in store.rows(writer.run_id)] == [r["step"] for r in t.history.rows]
    assert store.run(writer.run_id)["status"] == FINISHED


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    """The store says when its disk is (nearly) full, and a listing that cannot be read says
    why instead of raising."""
    import shutil
    import sqlite3
    from collections import namedtuple

    from engine.runs import store as store_module
    store = RunStore(tmp_path / "runs.sqlite")
    assert store.space_problem() is None and store.listing() == ([], None)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    assert store.space_problem() == f"the disk holding the run store {store.where} is full " \
                                    "(4 KB left)"
    assert store_module.LOW_SPACE > 4096

    def unreadable(*args, **kw):
        raise sqlite3.OperationalError("disk I/O error\nmore text")
    monkeypatch.setattr(store, "runs", unreadable)
    assert store.listing() == ([], f"the run store {store.where} cannot be read right now "
                                   "(disk I/O error)")


def test_a_new_run_never_writes_into_an_older_run_of_the_same_id(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    old = Trainer(SPEC, callbacks=[StoreWriter(store, run_id="a" * 32)]).run(10)
    old.callback("store").flush()
    new = Trainer(SPEC, callbacks=[StoreWriter(store, run_id="a" * 32, name="new")]).run(3)
    assert new.callback("store").run_id == "a" * 32
    runs = {r["id"]: r for r in store.runs()}
    assert len(runs) == 2 and runs["a" * 32]["name"] == "new"
    (moved,) = [r for rid, r in runs.items() if rid != "a" * 32]
    assert moved["final"]["step"] == 10 and old.step_count == 10


def test_a_damaged_record_is_named_and_the_rest_still_listed(tmp_path, capsys, monkeypatch):
    """Issue 31, item 16: one non-JSON row or a deeply nested stored spec made `engine runs`
    fail for the whole store, and resume said "internal error (KeyError): 'logged_step'"."""
    import sqlite3

    store = RunStore(tmp_path / "runs.sqlite")
    for i in range(3):
        Trainer(SPEC, callbacks=[StoreWriter(store, name=f"run {i}")]).run()
    ids = [r["id"] for r in store.runs()]
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.execute("UPDATE runs SET spec = ? WHERE id = ?", ("not json {", ids[0]))
        db.execute("UPDATE runs SET spec = ? WHERE id = ?", ("[" * 100_000 + "]" * 100_000,
                                                              ids[1]))
    listed = store.runs()
    assert [r["id"] for r in listed] == [ids[2]]
    assert len(store.damaged) == 2 and all("left out" in line for line in store.damaged)
    assert {line[4:12] for line in store.damaged} == {ids[0][:8], ids[1][:8]}
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path))
    assert main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert ids[2][:8] in out and err.count("warning: run ") == 2
    store.save_checkpoint(ids[2], {"step_count": 60, "model": {}})  # no logged_step
    with pytest.raises(SpecError, match="checkpoint is damaged"):
        resume(store, ids[2])


def test_a_damaged_or_empty_store_file_is_said_so(tmp_path, capsys, monkeypatch):
    """Issue 31, item 16: a corrupt store got the advice to set NETLAB_HOME to a writable
    folder; a zero-length runs.sqlite silently became a new empty store."""
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage " * 100)
    with pytest.raises(SpecError, match=r"is damaged \(file is not a database\): move the file "
                                        r"aside"):
        RunStore(bad)
    empty = tmp_path / "runs.sqlite"
    empty.touch()
    assert "was an empty file (0 bytes)" in RunStore(empty).notice
    assert RunStore(empty).notice is None  # a real (if empty) store from then on
    empty.unlink()
    empty.touch()
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path))
    assert main(["runs"]) == 0
    assert "warning: the run store" in capsys.readouterr().err
    assert RunStore(tmp_path / "new.sqlite").notice is None  # no file yet: nothing to say
