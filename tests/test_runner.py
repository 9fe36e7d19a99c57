"""The live-run registry without a browser: threads start and stop, the reaper pauses unseen
runs and forgets them later, and every cap answers with a message."""
import time

import pytest

from engine import ExperimentSpec, SpecError, Trainer
from serve.caps import CapError, Caps
from serve.registry import RunRegistry
from serve.runs import Run

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


def wait_for(predicate, timeout=20.0):  # returns as soon as it holds; a busy machine is slow
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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- fair sharing


def test_the_slot_is_shared_by_time_not_by_turns():
    """A 20 ms "step" and a 1 ms one (sleeps: no CPU needed) take turns through one slot: each
    gets about half the slot time, where per-step turns gave the slow one 95%."""
    from serve.fair import FairSlot

    slot = FairSlot(1)
    stop = time.monotonic() + 1.0
    spent = {}

    def worker(name, cost):
        key = object()
        slot.join(key)
        spent[name] = 0.0
        try:
            assert slot.acquire(key)
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                time.sleep(cost)
                used = time.perf_counter() - t0
                spent[name] += used
                assert slot.switch(key, used)
        finally:
            slot.leave(key)

    import threading
    threads = [threading.Thread(target=worker, args=a) for a in (("slow", 0.02), ("fast", 0.001))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    share = spent["fast"] / (spent["fast"] + spent["slow"])
    assert 0.3 < share < 0.7, spent
    assert slot.members == 0


def test_a_halted_thread_waiting_for_the_slot_gives_up():
    import threading

    from serve.fair import FairSlot

    slot = FairSlot(1)
    holder, waiter, halt = object(), object(), threading.Event()
    slot.join(holder)
    slot.join(waiter)
    assert slot.acquire(holder)
    result = []
    t = threading.Thread(target=lambda: result.append(slot.acquire(waiter, halt)))
    t.start()
    time.sleep(0.1)
    halt.set()
    t.join(timeout=2)
    assert result == [False]
    slot.leave(waiter)
    slot.leave(holder)


def test_two_runs_both_train(registry):
    a, b = registry.create(SPEC), registry.create(SPEC)
    a.start()
    b.start()
    assert wait_for(lambda: a.trainer.step_count > 30 and b.trainer.step_count > 30)
    a.pause()
    b.pause()
    assert registry.slot.members == 0


# ----------------------------------------------------------------------------- ownership


def test_the_owner_and_granted_browsers_control_a_run(registry):
    run = registry.create(SPEC, owner="alice")
    assert run.owner == "alice" and run.controllers == {"alice"}
    assert run.can_control("alice") and not run.can_control("bob") and not run.can_control(None)
    token = run.share_control()
    assert len(token) >= 20 and run.share_control() != token  # a fresh token each time
    token = run.share_control()
    assert not run.grant("bob", "wrong") and not run.grant("bob", None)
    assert not run.grant("bob", token[:-1]) and not run.can_control("bob")
    assert run.grant("bob", token) and run.can_control("bob")
    assert run.controllers == {"alice", "bob"}


def test_an_ownerless_run_anyone_may_control(registry):
    run = registry.create(SPEC)
    assert run.owner is None and run.can_control("anyone") and run.can_control(None)


def test_a_stranger_cannot_reset_a_run_but_its_controllers_can(registry):
    run = registry.create(SPEC, owner="alice")
    run.grant("bob", run.share_control())
    with pytest.raises(CapError, match="belongs to another browser"):
        registry.create(SPEC, run.id, owner="mallory")
    assert registry.get(run.id) is run and run.state == Run.READY
    again = registry.create(SPEC.with_changes({"optimizer.lr": 0.5}), run.id, owner="alice")
    assert again is not run and again.id == run.id and registry.get(run.id) is again
    assert again.owner == "alice" and again.controllers == {"alice", "bob"}
    assert run.state == Run.DROPPED  # the replaced Run let go of its trainer
    by_bob = registry.create(SPEC, run.id, owner="bob")  # a controller may reset it too
    assert by_bob.owner == "alice" and by_bob.can_control("bob")


# ----------------------------------------------------------------------------- run caps


def test_a_browsers_new_run_replaces_its_oldest_idle_one():
    reg = RunRegistry(caps(max_runs_per_owner=3, grace_s=60, drop_after_s=3600), reap_every_s=60)
    dropped = []
    reg.on_drop.append(dropped.append)
    try:
        runs = [reg.create(SPEC, owner="alice") for _ in range(3)]
        runs[0].touch()  # runs[1] is now the least recently seen
        other = reg.create(SPEC, owner="bob")
        fourth = reg.create(SPEC, owner="alice")
        assert dropped == [runs[1]] and runs[1].state == Run.DROPPED
        assert reg.get(runs[1].id) is None
        assert {r.id for r in reg.runs()} == {runs[0].id, runs[2].id, fourth.id, other.id}
        assert len(reg.create(SPEC).id) == 32  # ownerless runs count only toward the server cap
    finally:
        reg.shutdown()


def test_a_browser_trains_one_run_at_a_time_by_default():
    assert Caps().max_running_per_user == 1
    reg = RunRegistry(caps(max_trainers=8, max_runs_per_owner=3, grace_s=60), reap_every_s=60)
    try:
        first, second = (reg.create(SPEC, owner="alice") for _ in range(2))
        first.start()
        with pytest.raises(CapError, match=r"already training 1 network \(in another tab"):
            second.start()
        assert second.state == Run.READY and second.trainer.step_count == 0
        bobs = reg.create(SPEC, owner="bob")  # another browser is not held back
        bobs.start()
        assert bobs.state == Run.RUNNING
        second.step_once()  # a single step is not training on
        first.pause()
        second.start()
        assert second.state == Run.RUNNING
    finally:
        reg.shutdown()


def test_a_browser_with_all_its_runs_training_gets_a_message():
    reg = RunRegistry(caps(max_trainers=8, max_runs_per_owner=2, max_running_per_user=2,
                           grace_s=60), reap_every_s=60)
    try:
        runs = [reg.create(SPEC, owner="alice") for _ in range(2)]
        for run in runs:
            run.start()
        with pytest.raises(CapError, match=r"the most one browser may keep \(2\)"):
            reg.create(SPEC, owner="alice")
        assert all(r.state == Run.RUNNING for r in runs) and len(reg) == 2
        runs[1].pause()
        third = reg.create(SPEC, owner="alice")  # the paused one makes room
        assert runs[1].state == Run.DROPPED and runs[0].state == Run.RUNNING
        assert reg.get(third.id) is third
    finally:
        reg.shutdown()


def test_a_full_server_forgets_its_least_recently_seen_idle_run():
    reg = RunRegistry(caps(max_runs=3, grace_s=0.2, drop_after_s=3600), reap_every_s=60)
    try:
        a, b, c = (reg.create(SPEC) for _ in range(3))
        c.start()
        now = time.monotonic()
        a.last_seen, b.last_seen, c.last_seen = now - 5, now - 10, now - 20  # c trains unseen
        d = reg.create(SPEC)
        assert reg.get(b.id) is None and b.state == Run.DROPPED  # not c: it is training
        assert {r.id for r in reg.runs()} == {a.id, c.id, d.id}
        d.touch()
        a.touch()  # seen within the grace period: not forgotten
        with pytest.raises(CapError, match="This server keeps 3 runs, its limit; try again"):
            reg.create(SPEC)
        assert {r.id for r in reg.runs()} == {a.id, c.id, d.id} and c.state == Run.RUNNING
        c.pause()
    finally:
        reg.shutdown()


# ----------------------------------------------------------------------------- dropping


def test_drop_stops_the_run_calls_on_drop_and_leaves_page_reads_safe(registry):
    from serve.caps import RunDropped

    seen = []
    registry.on_drop.append(lambda r: seen.append((r.id, r.state)))
    registry.on_drop.append(lambda r: 1 / 0)  # a broken hook does not stop the drop
    run = registry.create(SPEC, owner="alice")
    run.start()
    assert wait_for(lambda: run.trainer.step_count > 20)
    held = run.trainer  # a page mid-rerun holding the trainer
    assert registry.drop(run.id) and not registry.drop(run.id)
    assert seen == [(run.id, Run.DROPPED)]
    assert registry.get(run.id) is None and not run.thread_alive and not run.active
    steps = run.trainer.step_count
    assert steps == held.step_count > 20
    # what a page reads from a dropped run: the state, the id, the spec, the counters
    assert run.state == Run.DROPPED and run.spec == SPEC and run.owner == "alice"
    assert run.trainer.history.rows == [] and run.trainer.data is None
    assert run.trainer.total_steps == SPEC.training.steps and run.trainer.activation_samples() == {}
    with pytest.raises(RunDropped, match="forgotten"):
        run.predict(held.data.x_val)
    run.start()
    run.step_once()
    assert run.state == Run.DROPPED and run.trainer.step_count == steps
    # the trainer the page held still reads, without its model
    assert len(held.history.rows) >= 1 and held.data is not None and held.model is None


def test_the_reaper_uses_drop(registry):
    seen = []
    registry.on_drop.append(seen.append)
    run = registry.create(SPEC)
    assert wait_for(lambda: seen, timeout=3)  # on_drop runs once the run has let go
    assert seen == [run] and run.state == Run.DROPPED and registry.get(run.id) is None


def test_a_step_too_heavy_to_share_is_refused_with_the_batch_that_fits():
    reg = RunRegistry(caps(max_params=2_000_000, max_step_work=1e6), reap_every_s=0.05)
    try:
        spec = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [64, 64]},
                                         "training": {"batch_size": 256}})
        with pytest.raises(SpecError, match=r"use a batch of at most [\d,]+ or a smaller model"):
            reg.create(spec)
        small = ExperimentSpec.from_dict({**spec.to_dict(), "training": {"batch_size": 8}})
        assert reg.create(small).trainer.batches.size == 8
    finally:
        reg.shutdown()


def test_a_wide_convolution_is_held_to_its_compute_and_memory_not_its_few_weights():
    """14,340 weights, but 9.4M multiply-adds and ~1M values per example: a parameter count
    alone let it through (a review measured 2.5 GB for one forward pass of 256 examples)."""
    wide = {"data": {"name": "shapes", "n": 2000, "size": 32},
            "model": {"layers": [{"type": "conv2d", "filters": 1024, "padding": "same"},
                                 {"type": "globalavgpool"}]}}
    reg = RunRegistry(caps(max_params=2_000_000), reap_every_s=0.05)
    try:
        with pytest.raises(SpecError, match=r"through 9,441,280 multiply-adds each, more than "
                                            r"this server allows .* batch of at most 529 "):
            reg.create(ExperimentSpec.from_dict({**wide, "training": {"batch_size": 1024}}))
        with pytest.raises(SpecError, match=r"keeps 67,174,656 values in memory \(1,049,604 per "
                                            r"example\), .* batch of at most 47,"):
            reg.create(ExperimentSpec.from_dict({**wide, "training": {"batch_size": 64}}))
        small = reg.create(ExperimentSpec.from_dict({**wide, "training": {"batch_size": 16}}))
        assert small.trainer.eval_chunk == 47  # evaluation passes are cut to fit as well
    finally:
        reg.shutdown()


def test_step_takes_its_turn_while_another_run_trains():
    """Step and Start's first step go through the training slot too (no deadlock, and the
    running run goes on)."""
    registry = RunRegistry(caps(grace_s=60, drop_after_s=120), reap_every_s=0.05)
    try:
        busy = registry.create(SPEC)
        other = registry.create(SPEC)
        busy.start()
        for _ in range(20):
            other.step_once()
        assert other.trainer.step_count == 20
        assert busy.active and wait_for(lambda: busy.trainer.step_count > 50)
        other.start()  # its first step also waits for its turn
        assert wait_for(lambda: other.trainer.step_count > 40)
    finally:
        registry.shutdown()


SHORT = ExperimentSpec.from_dict({"data": {"name": "xor"}, "model": {"layers": [8]},
                                  "training": {"steps": 100}})


def capped_run(max_steps: int):
    """A 100-step run on a server that allows `max_steps` steps per run."""
    reg = RunRegistry(caps(max_steps=max_steps), reap_every_s=10)
    return reg, reg.create(SHORT)


def test_a_completed_run_goes_on_up_to_the_servers_step_cap():
    reg, run = capped_run(250)
    try:
        run.start()
        assert wait_for(lambda: run.state == Run.DONE)
        assert run.can_continue and run.go_on() and run.trainer.total_steps == 200
        run.start()
        assert wait_for(lambda: run.state == Run.DONE) and run.trainer.step_count == 200
        assert run.go_on() and run.trainer.total_steps == 250  # the cap, not 300
        run.start()
        assert wait_for(lambda: run.state == Run.DONE)
        assert not run.can_continue and not run.go_on()
    finally:
        reg.shutdown()


def test_a_run_set_to_go_until_paused_trains_past_its_plan_up_to_the_cap():
    reg, run = capped_run(350)
    try:
        run.endless = True
        run.start()
        assert wait_for(lambda: run.trainer.step_count > 150)
        assert run.state == Run.RUNNING, "it did not stop at its planned 100 steps"
        assert wait_for(lambda: run.state == Run.DONE)
        assert run.trainer.step_count == 350, "it stops at the server's cap"
    finally:
        reg.shutdown()


# ----------------------------------------------------------------------------- the run store


def stored_registry(tmp_path, **caps):
    from engine.runs.store import RunStore
    return RunRegistry(Caps(**caps), reap_every_s=3600, store=RunStore(tmp_path / "runs.sqlite"))


@pytest.mark.slow
def test_a_stored_run_survives_its_server_and_goes_on_with_the_same_numbers(tmp_path):
    """A server trains a run part way and dies (its registry gone, no shutdown); a new server
    restores the run by its id: its history is back and it trains on to the numbers of a run
    never stopped."""
    spec = ExperimentSpec.from_dict({"data": {"name": "spiral", "n": 200},
                                     "model": {"layers": [8, 8]},
                                     "training": {"steps": 120, "log_every": 10}})
    first = stored_registry(tmp_path, checkpoint_s=0)
    run = first.create(spec, owner="me", name="my spiral")
    for _ in range(47):
        run.step_once()
    run.pause()
    # no shutdown: what is on disk is all that is left
    second = stored_registry(tmp_path)
    assert second.restore(run.id, owner="someone else") is None  # not theirs
    back = second.restore(run.id, owner="me")
    assert back.id == run.id and back.state == Run.PAUSED
    assert back.trainer.step_count == 47
    assert back.trainer.history.rows == run.trainer.history.rows
    back.trainer.run()
    alone = Trainer(spec).run()
    assert back.trainer.history.rows == alone.history.rows
    stored = second.store.run(run.id)
    assert stored["name"] == "my spiral" and stored["status"] == "finished"
    assert stored["browser"] == "me"
    assert second.restore("f" * 32, owner="me") is None
    first.shutdown()
    second.shutdown()


def test_a_reset_keeps_the_old_run_in_the_store_under_an_id_of_its_own(tmp_path):
    spec = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 100}, "model": {"layers": [4]},
                                     "training": {"steps": 50}})
    runs = stored_registry(tmp_path)
    run = runs.create(spec, owner="me")
    for _ in range(5):
        run.step_once()
    again = runs.create(spec, run.id, owner="me")  # Reset
    for _ in range(3):
        again.step_once()
    stored = {r["id"]: r for r in runs.store.runs()}
    assert len(stored) == 2 and stored[run.id]["checkpoint"] == 3  # Step is a save point
    (old,) = [r for rid, r in stored.items() if rid != run.id]
    assert old["status"] == "paused" and old["checkpoint"] == 5
    assert old["final"]["step"] == 1 and stored[run.id]["final"]["step"] == 1  # logged rows
    runs.drop(again.id)  # forgotten by the server: paused in the store, checkpointed
    assert runs.store.run(run.id)["status"] == "paused"
    assert runs.store.run(run.id)["checkpoint"] == 3
    runs.shutdown()


def test_the_server_says_why_it_paused_a_run_and_lets_a_stored_idle_one_go(tmp_path):
    """Issue 31, item 15: ten learners' runs were paused with no word on any page, and their
    memory stayed for an hour. A run the reaper pauses says why (until it starts again); a
    stored run nobody has looked at for unload_after_s and that is not training leaves
    memory, and comes back from the store as it was."""
    reg = stored_registry(tmp_path, grace_s=5, unload_after_s=60, drop_after_s=3600,
                          max_steps_per_s=0)
    try:
        run = reg.create(SPEC, owner="me")
        run.start()
        assert wait_for(lambda: run.trainer.step_count > 50)
        now = time.monotonic()
        reg.reap(now + 10)
        assert run.state == Run.PAUSED
        assert run.paused_why.startswith("its page had not been seen for 1") and \
            "hidden tab" in run.paused_why
        run.start()
        assert run.paused_why is None
        run.pause()
        assert run.paused_why is None  # paused by its page: nothing to explain
        steps = run.trainer.step_count
        reg.reap(now + 30)
        assert reg.get(run.id) is run  # unseen 30 s: kept
        reg.reap(now + 70)
        assert reg.get(run.id) is None and run.state == Run.DROPPED
        back = reg.restore(run.id, owner="me")
        assert back.trainer.step_count == steps and back.state == Run.PAUSED
        unstored = RunRegistry(caps(grace_s=5, unload_after_s=60, drop_after_s=3600))
        kept = unstored.create(SPEC, owner="me")
        kept.step_once()
        unstored.reap(time.monotonic() + 70)
        assert unstored.get(kept.id) is kept  # no store: letting it go would lose it
        unstored.shutdown()
    finally:
        reg.shutdown()
