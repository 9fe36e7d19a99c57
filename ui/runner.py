"""Live runs: trainers stepping in background threads, shared by the whole server.

Measured rules (DESIGN.md §3): a browser reload starts a new Streamlit session, so a run kept in
session state would be lost on every reload. Runs live here instead, in one server-wide registry,
keyed by a random id that the page keeps in its URL. The page stamps `last_seen` on every
refresh; a reaper thread pauses runs nobody has looked at for `grace_s` (their thread ends and
training CPU drops to zero) and forgets them only after `drop_after_s`, because a paused run's
history is the user's work.

Nothing here calls st.*: the page reads a run's History (thread-safe) and asks the run, under its
lock, for predictions.

Fair sharing by time (`FairSlot`). Training threads take turns through `train_slots` slots, so
a page refresh competes with one training thread, not with every run on the server. Turns used
to be per STEP (a semaphore), so a run whose step costs 100 ms got 100x the time of one whose
step costs 1 ms (measured: a 1.9M-parameter digits run, batch 1797, took another user's moons
run from ~1,146 to 1.5 steps/s). Now the slot is handed out like Linux's CFS: each training
thread accumulates the slot time it used, the waiting thread with the least goes next, and a
thread that joins starts at the current minimum (a run paused for an hour cannot then take the
slot for an hour). With several runs the turn also rests for a share of itself (`shared_duty`:
the turn trains for that share of its time) while holding the slot, so the pages get the
interpreter; the rest is charged to the run that took the turn, so a slow run's rests cannot
hold the others back. Measured (benchmarks/fairness.py, 2 cores shared with other work): a moons
run (0.4 ms a step) next to a 1.9M-parameter digits run (batch 1797, ~115 ms a step, ~300x) got
1.7 steps/s and 0.9% of the training time with per-step turns; now ~560 steps/s and 50%.

A turn takes steps while they fit in `quantum_s` (10 ms; at least one step) and yields the
interpreter (`sleep(0)`) once per turn, not after every step: on a busy machine each yield also
hands the core to other processes, and per-step yields cost a light run ~40% (measured, alone:
~1,700 steps/s with per-step yields as before, ~2,800 with 10 ms turns; four light runs
together: ~190 vs ~290 steps/s each; 5, 10 and 20 ms measured alike). Page work in another
thread was not slowed either way (torch releases the GIL inside each op).

Caps. `max_runs` bounds the runs the server keeps (started or not) and `max_runs_per_owner` the
runs one browser keeps: a browser's new run replaces its own least recently seen run that is
not training; a full server forgets runs unseen for longer than `grace_s` (least recently seen
first, never a training one) and otherwise answers CapError.

Ownership. The run id is in the page URL, so whoever has the link could press its buttons. A
run records its `owner` (an opaque browser id from the page; None for CLI/tests: anyone may
control it) and its `controllers` (the owner plus browsers it shared control with through a
token, `share_control` / `grant`). The registry refuses a Reset of someone else's run.

Dropping frees the memory at once. A Run used to be freed only by Python's cycle collector,
which Streamlit no longer runs after each script (`postScriptGC = false`), so dropped runs
stayed resident (measured: 20 abandoned 1.97M-parameter runs took RSS from 425 to 1,267 MB and
it stayed there). `RunRegistry.drop` now stops and joins the run's thread, swaps `run.trainer`
for a `ForgottenTrainer`, releases the real trainer's model, optimizer, scheduler, callbacks,
diagnostics and batches, runs one `gc.collect()` per batch of drops and asks glibc to return
freed arenas (`malloc_trim(0)`, Linux only). What a page holding a dropped Run sees (the choice
made here): `run.state == Run.DROPPED` ("this run was forgotten"), `id`, `spec`, `owner` kept;
`run.trainer` is a `ForgottenTrainer` with the last step count, `total_steps`, `stopped`,
`device`, `test_metrics`, an empty History and `data = None` (the page then draws no chart);
`run.predict` raises `RunDropped`; Start and Step do nothing. A page that took `trainer =
run.trainer` before the drop keeps reading that Trainer's history, data and counters until its
rerun ends (only its model and optimizer are gone); reference counting frees them then.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import hmac
import itertools
import os
import secrets
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable

from engine import ExperimentSpec, SpecError, Trainer
from engine.history import History
from engine.inputs import short
from engine.store import StoreWriter


def _env(name: str, default, kind=float):
    try:
        return kind(os.environ.get(name, default))
    except ValueError:
        return kind(default)


@dataclass(frozen=True)
class Caps:
    """Limits for a shared server, read from the environment (NETLAB_*)."""

    max_trainers: int = field(default_factory=lambda: _env("NETLAB_MAX_TRAINERS", 8, int))
    max_params: int = field(default_factory=lambda: _env("NETLAB_MAX_PARAMS", 2_000_000, int))
    max_steps: int = field(default_factory=lambda: _env("NETLAB_MAX_STEPS", 100_000, int))
    max_steps_per_s: float = field(default_factory=lambda: _env("NETLAB_MAX_STEPS_PER_S", 0))
    train_slots: int = field(default_factory=lambda: _env("NETLAB_TRAIN_SLOTS", 1, int))
    shared_duty: float = field(default_factory=lambda: _env("NETLAB_SHARED_DUTY", 0.5))
    grace_s: float = field(default_factory=lambda: _env("NETLAB_GRACE_S", 20))
    drop_after_s: float = field(default_factory=lambda: _env("NETLAB_DROP_AFTER_S", 3600))
    max_runs: int = field(default_factory=lambda: _env("NETLAB_MAX_RUNS", 64, int))
    max_runs_per_owner: int = field(
        default_factory=lambda: _env("NETLAB_MAX_RUNS_PER_USER", 3, int))
    # runs one browser may train at once (0: no limit): a class shares the cores, and a student
    # with a second tab training would take two shares
    max_running_per_user: int = field(
        default_factory=lambda: _env("NETLAB_MAX_RUNNING_PER_USER", 1, int))
    # variants trained beside a run, in step with it (side by side: RNN vs LSTM vs GRU); they
    # share the run's turn in the training slot, so they slow the run, not the others
    max_twins: int = field(default_factory=lambda: _env("NETLAB_MAX_TWINS", 3, int))
    # slot time a run may use per turn before the next run's turn (0: one step a turn); a
    # steps/s cap (max_steps_per_s) always paces single steps
    quantum_s: float = field(default_factory=lambda: _env("NETLAB_TRAIN_QUANTUM_S", 0.01))
    # batch x parameters of one step: a turn is at least one step, so one step must stay short
    # for the fair share to mean anything (spiral n=20000 in one batch on a 1.97M-parameter net
    # took 1.7-3.2 s a step and froze every other run that long; the digits net of the issue,
    # 1797 x 1.9M = 3.4e9, takes ~0.1 s)
    max_step_work: float = field(default_factory=lambda: _env("NETLAB_MAX_STEP_WORK", 5e9))
    # batch x activation values per example of one step: its memory (a 1,024-filter convolution
    # on 32x32 images has 14,340 weights but leaves ~2M values per example behind)
    max_step_activations: float = field(
        default_factory=lambda: _env("NETLAB_MAX_STEP_ACTIVATIONS", 5e7))
    # a stored run's checkpoint at most this often while it trains (and at Pause and its end)
    checkpoint_s: float = field(default_factory=lambda: _env("NETLAB_CHECKPOINT_S", 30))

    def check_spec(self, spec: ExperimentSpec) -> None:
        if spec.training.steps > self.max_steps:
            raise SpecError(f"training.steps={spec.training.steps:,} is more than this server "
                            f"allows ({self.max_steps:,}); lower it")

    def check_step_work(self, trainer: Trainer, beside: list[Trainer] = ()) -> None:
        """One step's compute (batch x the larger of parameters and multiply-adds per example:
        a convolution reuses each weight at every position) and memory (batch x activation
        values per example) within the server's limits. `beside`: variants stepped in the same
        turn (side by side), whose work counts too."""
        total = sum(t.batches.size * max(t.cost["params"], t.cost["macs"])
                    for t in [trainer, *beside])
        if beside and total > self.max_step_work:
            raise SpecError(f"this run and the {len(beside)} variants beside it would train "
                            f"{total:.2g} example x weights in one turn, more than this server "
                            f"allows ({self.max_step_work:.0e}); turn side by side off, or use "
                            "a smaller model or batch")
        params, macs = trainer.cost["params"], trainer.cost["macs"]
        batch, work = trainer.batches.size, max(params, macs)
        if batch * work > self.max_step_work:
            most = max(1, int(self.max_step_work // max(work, 1)))
            what = f"{params:,} parameters" if params >= macs else \
                f"{macs:,} multiply-adds each"
            raise SpecError(f"one step trains {batch:,} examples through {what}, more than this "
                            f"server allows in one step ({self.max_step_work:.0e}) so that runs "
                            f"can share it; use a batch of at most {most:,} or a smaller model")
        values = trainer.cost["activations"]
        if batch * values > self.max_step_activations:
            most = max(1, int(self.max_step_activations // max(values, 1)))
            raise SpecError(f"one step of {batch:,} examples keeps {batch * values:,} values in "
                            f"memory ({values:,} per example), more than this server allows "
                            f"({self.max_step_activations:.0e}); use a batch of at most "
                            f"{most:,}, fewer filters or smaller images")


class CapError(Exception):
    """A server limit was hit; the message says which and what to do."""


class RunDropped(RuntimeError):
    """The run was forgotten by the server (unseen too long, or replaced); start a new one."""


# ----------------------------------------------------------------------------- fair slot


class FairSlot:
    """`slots` training slots handed out by least accumulated slot time (CFS-like).

    Each training thread `join`s with a key (its own, unique per thread), `acquire`s a slot,
    calls `switch(key, used)` after each turn (charging `used` seconds and handing the slot to
    the waiting thread with the least time, if it has less than this one), and `leave`s when
    it ends. A thread waiting for a slot sleeps on its own Event, so only the thread that gets
    the slot wakes up.
    """

    def __init__(self, slots: int = 1):
        self.slots = max(1, slots)
        self._lock = threading.Lock()
        self._time: dict[object, float] = {}          # accumulated slot seconds per member
        self._holders: set[object] = set()
        self._waiting: dict[object, threading.Event] = {}

    def join(self, key) -> None:
        with self._lock:
            self._time[key] = min(self._time.values(), default=0.0)

    def leave(self, key) -> None:
        with self._lock:
            self._time.pop(key, None)
            self._waiting.pop(key, None)
            if key in self._holders:
                self._holders.discard(key)
                self._dispatch()

    @property
    def members(self) -> int:
        """Training threads sharing the slots now."""
        return len(self._time)

    def used(self, key) -> float:
        with self._lock:
            return self._time.get(key, 0.0)

    def acquire(self, key, halt: threading.Event | None = None) -> bool:
        """Wait for a slot; False if `halt` was set first."""
        with self._lock:
            first = not self._waiting or \
                self._time[key] <= min(self._time[k] for k in self._waiting)
            if len(self._holders) < self.slots and first:
                self._holders.add(key)
                return True
            event = self._waiting[key] = threading.Event()
        return self._wait(key, event, halt)

    def release(self, key, used: float) -> None:
        with self._lock:
            self._time[key] = self._time.get(key, 0.0) + used
            self._holders.discard(key)
            self._dispatch()

    def switch(self, key, used: float, halt: threading.Event | None = None) -> bool:
        """Charge a finished turn; keep the slot unless a waiting thread has used less, else
        hand it over and wait for the next turn. False if `halt` was set while waiting."""
        with self._lock:
            mine = self._time[key] = self._time.get(key, 0.0) + used
            if not self._waiting:
                return True
            nxt = min(self._waiting, key=self._time.__getitem__)
            if self._time[nxt] >= mine:
                return True
            self._holders.discard(key)
            self._holders.add(nxt)
            self._waiting.pop(nxt).set()
            event = self._waiting[key] = threading.Event()
        return self._wait(key, event, halt)

    def _wait(self, key, event: threading.Event, halt) -> bool:
        while not event.wait(0.05):
            if halt is not None and halt.is_set():
                with self._lock:
                    if key in self._holders:  # handed the slot just now: take it, the caller
                        return True           # sees halt and leaves (which passes it on)
                    self._waiting.pop(key, None)
                    return False
        return True

    def _dispatch(self) -> None:  # under self._lock
        while len(self._holders) < self.slots and self._waiting:
            nxt = min(self._waiting, key=self._time.__getitem__)
            self._holders.add(nxt)
            self._waiting.pop(nxt).set()


# ----------------------------------------------------------------------------- memory


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc keeps them in its arenas otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl), or no libc found
        pass


class ForgottenTrainer:
    """What a dropped run keeps of its Trainer: the figures its status line shows."""

    def __init__(self, trainer: Trainer):
        self.spec = trainer.spec
        self.step_count = trainer.step_count
        self.total_steps = trainer.total_steps
        self.stopped = trainer.stopped
        self.device = trainer.device
        self.test_metrics = trainer.test_metrics
        self.seconds = trainer.seconds
        self.history = History()
        self.data = None
        self.done = True

    def activation_samples(self) -> dict:
        return {}

    def predict(self, x):
        raise RunDropped("This run was forgotten by the server; start a new one.")

    def step(self) -> bool:
        return False


_HEAVY = ("model", "optimizer", "scheduler", "callbacks", "diagnostics", "batches", "loss_fn",
          "_last_good", "_outs", "_ys", "_loss_sum", "_correct", "row")


def _moved(store, run_id: str) -> str:
    new_id = uuid.uuid4().hex
    store.rekey(run_id, new_id)
    return new_id


def _release(trainer) -> None:
    """Drop the trainer's references to its heavy state, so reference counting frees it even
    where something (a page mid-rerun) still holds the Trainer. Its data, history and counters
    stay for such a page until it lets go."""
    diag = getattr(trainer, "diagnostics", None)
    if diag is not None and hasattr(diag, "release"):
        diag.release()
    for name in _HEAVY:
        if hasattr(trainer, name):
            setattr(trainer, name, None)


# ----------------------------------------------------------------------------- runs


class Controlled:
    """Who may press a run's buttons: its owner and the browsers it shared control with. Held
    by the web process for a run trained here (Run) or in a worker (ui/workers.RemoteRun)."""

    def _init_control(self, owner: str | None) -> None:
        self.owner = owner
        self.controllers: set[str] = {owner} if owner is not None else set()
        self._control_token: str | None = None
        self._control_lock = threading.Lock()  # not a run's lock: a step may hold that 0.1 s

    def can_control(self, browser_id: str | None) -> bool:
        """Ownerless runs (CLI, tests) anyone may control; others their controllers."""
        return self.owner is None or (browser_id is not None and browser_id in self.controllers)

    def share_control(self) -> str:
        """A fresh control token (the previous one stops working); whoever presents it to
        `grant` joins the controllers."""
        with self._control_lock:
            self._control_token = secrets.token_urlsafe(24)
            return self._control_token

    def revoke_control(self) -> None:
        """The owner takes control back: the token stops working and only the owner controls."""
        with self._control_lock:
            self._control_token = None
            self.controllers = {self.owner} if self.owner is not None else set()

    @property
    def shared(self) -> bool:
        """Control was shared: a live token, or browsers besides the owner."""
        return self._control_token is not None or len(self.controllers) > 1

    def grant(self, browser_id: str | None, token) -> bool:
        with self._control_lock:
            expected = self._control_token
            if not browser_id or not expected or not isinstance(token, str):
                return False
            if not hmac.compare_digest(token.encode(), expected.encode()):
                return False
            self.controllers.add(browser_id)
            return True


class Run(Controlled):
    READY, RUNNING, PAUSED, DONE, ERROR, DROPPED = \
        "ready", "running", "paused", "done", "error", "dropped"

    _serials = itertools.count(1)

    def __init__(self, run_id: str, spec: ExperimentSpec, registry: "RunRegistry",
                 owner: str | None = None, twins=(), label: str | None = None,
                 compare: str | None = None, name: str | None = None, trainer=None,
                 tags: list[str] = ()):
        self.id = run_id
        self.serial = next(self._serials)  # unique per Run object (a Reset keeps the id)
        self.token = secrets.token_hex(8)  # the same, across processes (ui/workers.py)
        self.registry = registry
        self.lock = threading.RLock()  # held for each step and for every read of the model
        self.spec = spec
        self.fixed_from = None  # the spec a one-click fix was applied to, if it came from one
        self._init_control(owner)
        # recorded in the server's run store (engine/store.py) under this run's id, so the run
        # outlives the server; `trainer`: one already going on from the store (restore)
        callbacks = [] if registry.store is None or trainer is not None else [
            StoreWriter(registry.store, name=name, run_id=run_id, browser=owner,
                        checkpoint_every=registry.caps.checkpoint_s, tags=tags)]
        self.trainer = trainer or Trainer(spec, max_params=registry.caps.max_params,
                                          callbacks=callbacks)
        registry.caps.check_step_work(self.trainer)
        # side by side: (label, Trainer) of each variant, stepped right after the run's own
        # step, so every chart compares them at the same step; `label` names the run itself
        if len(twins) > registry.caps.max_twins:
            raise CapError(f"This server trains at most {registry.caps.max_twins} variants "
                           "beside a run.")
        self.label = label
        self.compare = compare if twins else None  # the comparison the twins come from
        self.twins: list[tuple[str, Trainer]] = []
        for twin_label, twin_spec in twins:
            twin = Trainer(twin_spec, max_params=registry.caps.max_params)
            registry.caps.check_step_work(twin)
            self.twins.append((twin_label, twin))
        if self.twins:  # one turn steps them all: their work adds up
            registry.caps.check_step_work(self.trainer, [t for _, t in self.twins])
        self.state = self.READY
        self.error: str | None = None
        self.last_seen = time.monotonic()
        self.steps_per_s = 0.0
        self.endless = False  # train until paused (TFP's way), up to the server's step cap
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # -- control (called from page callbacks)
    @property
    def can_continue(self) -> bool:
        """Finished its plan (not diverged, not stopped early) and below the server's step cap:
        Start trains it on."""
        return self.state == self.DONE and self._room() > 0

    def _room(self) -> int:
        """Steps this run may still be extended by: 0 unless it completed with the weights it
        ended with (early stopping may have put back earlier ones: going on from them would
        not be this run), else up to the server's step cap."""
        t = self.trainer
        if getattr(t, "stopped", None) != "completed" or not hasattr(t, "extend") \
                or getattr(t, "restored_step", None) is not None:
            return 0
        return max(0, self.registry.caps.max_steps - t.total_steps)

    def go_on(self) -> bool:
        """Plan another `training.steps` steps (within the server's cap) after a completed run;
        the model, optimizer and random streams go on where they were. False when it cannot."""
        with self.lock:
            if not self.can_continue:
                return False
            self._plan_more()
            self.state = self.PAUSED
            return True

    def _plan_more(self) -> bool:
        """Extend a trainer that completed by another `training.steps`, within the server's
        step cap; False when it did not complete or the cap is reached."""
        room = self._room()
        if room:
            more = min(self.spec.training.steps, room)
            self.trainer.extend(more)
            for _, twin in self.twins:  # variants that completed go on too, in step
                if twin.stopped == "completed" and twin.restored_step is None:
                    twin.extend(more)
        return room > 0

    def start(self) -> None:
        # registry.starting: the check and the start together, or ten Starts pressed at once
        # all pass a cap that has room for two
        with self.lock, self.registry.starting:
            if self.state in (self.RUNNING, self.DONE, self.ERROR, self.DROPPED):
                return
            self.registry.check_start(self)
            if self.trainer.step_count == 0:
                # the first step (a logged row) before Start returns, so the page that pressed
                # Start draws a chart at once instead of on its next refresh
                if not self._step_in_slot():
                    return
                if self.done:
                    self.state = self.DONE
                    return
            self.state = self.RUNNING
            # each thread gets its own halt event: an old thread told to stop (pause without
            # waiting) must never be revived by a Start that comes before it noticed
            self._halt = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._halt,),
                                            name=f"netlab-train-{self.id[:8]}", daemon=True)
            self._thread.start()

    def pause(self, wait: bool = True) -> None:
        self._halt.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self.lock:
            if self.state == self.RUNNING:
                self.state = self.PAUSED
            if wait:  # the thread has stopped: a checkpoint of where the user paused
                self._save()

    def _save(self) -> None:
        """(Under self.lock.) A checkpoint in the store, if the run is stored and has moved
        since its last one: Pause and Step are save points."""
        writer = self.trainer.callback("store") if isinstance(self.trainer, Trainer) else None
        if writer is not None and self.trainer._started and \
                writer.saved_step != self.trainer.step_count:
            try:
                writer.save(self.trainer)
            except Exception:  # noqa: BLE001 - a full disk must not break Pause
                traceback.print_exc()

    def step_once(self) -> None:
        self.pause()
        with self.lock:
            if self.state in (self.DONE, self.ERROR, self.DROPPED):
                return
            self._step_in_slot()
            if self.done:
                self.state = self.DONE
            elif self.state == self.READY:
                self.state = self.PAUSED
            self._save()

    @property
    def size(self) -> int:
        """Networks this run trains: itself and its variants."""
        return 1 + len(self.twins)

    def _step(self) -> None:
        """One step of the run and of each variant beside it that is still going (a variant
        that diverged stops; the others go on). A variant's failure names the variant."""
        self.trainer.step()
        for label, twin in self.twins:
            try:
                twin.step()
            except Exception as e:  # noqa: BLE001 - re-raised with the variant's name
                raise RuntimeError(f"{label}, beside the run: {type(e).__name__}: {e}") from e

    @property
    def done(self) -> bool:
        """The run and every variant beside it have stopped."""
        return self.trainer.done and all(t.done for _, t in self.twins)

    def trainers(self) -> list[tuple[str | None, Trainer]]:
        """(label, Trainer) of the run and each variant, the run first."""
        return [(self.label, self.trainer), *self.twins]

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def refresh(self) -> None:
        """Nothing to do: only this process sees this run (ui/workers.RemoteRun asks)."""

    lost = False  # a run trained here is never lost to a dead worker (ui/workers.RemoteRun)

    @property
    def active(self) -> bool:
        return self.state == self.RUNNING

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the training thread
    def _loop(self, halt: threading.Event) -> None:
        caps, slot = self.registry.caps, self.registry.slot
        cap = caps.max_steps_per_s
        quantum = 0.0 if cap else caps.quantum_s  # a steps/s cap paces single steps
        key = halt  # unique per thread
        self._rate = (time.perf_counter(), 0)
        slot.join(key)
        try:
            if not slot.acquire(key, halt):
                return
            while True:
                t_turn = time.perf_counter()
                if self._turn(halt, quantum):
                    return
                # With several runs the turn also rests, holding the slot, for a share of its
                # time, so the pages always get the interpreter for part of every second
                # (measured: 5 runs stepping back to back left pages under 1 update/s). The
                # rest is charged to this run below: it cannot hold the others back.
                duty = caps.shared_duty
                if 0 < duty < 1 and slot.members > 1:
                    halt.wait((time.perf_counter() - t_turn) * (1 / duty - 1))
                used = time.perf_counter() - t_turn
                if halt.is_set():
                    return
                if cap:  # wait out the step's share of a second without the slot
                    slot.release(key, used)
                    time.sleep(max(0.0, 1.0 / cap - used))
                    if not slot.acquire(key, halt):
                        return
                elif not slot.switch(key, used, halt):
                    return
                # between turns a page thread waiting for the interpreter gets it now, not at
                # the next 5 ms GIL switch interval
                time.sleep(0)
        finally:
            slot.leave(key)

    def _turn(self, halt: threading.Event, quantum: float) -> bool:
        """Steps while they fit in `quantum` (at least one). True when the loop must end."""
        t0 = time.perf_counter()
        while True:
            with self.lock:
                if halt.is_set():
                    return True
                if not self._guarded(self._step) or self.done:
                    if self.endless and self.state == self.RUNNING and self._plan_more():
                        continue  # "until paused": the run goes on, up to the step cap
                    if self.state == self.RUNNING:
                        self.state = self.ERROR if self.error else self.DONE
                    return True
            now = time.perf_counter()
            t_rate, n_rate = self._rate
            n_rate += 1
            if now - t_rate >= 0.5:
                self.steps_per_s, t_rate, n_rate = n_rate / (now - t_rate), now, 0
            self._rate = (t_rate, n_rate)
            if now - t0 >= quantum:
                return False

    def _step_in_slot(self) -> bool:
        """One step from a page's callback (Step, Start's first step), taking its turn through
        the training slot like the threads do: N pages pressing Step on heavy nets would
        otherwise all step at once, outside the fair share."""
        slot, key = self.registry.slot, object()
        slot.join(key)
        try:
            slot.acquire(key)
            t0 = time.perf_counter()
            try:
                return self._guarded(self._step)
            finally:
                slot.release(key, time.perf_counter() - t0)
        finally:
            slot.leave(key)

    def _guarded(self, fn) -> bool:
        """Run fn; an unexpected exception becomes the run's error message, not a dead thread."""
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - shown to the user, full trace in the server log
            traceback.print_exc()
            self.error = f"{type(e).__name__}: {short(str(e), 200)[1:-1]}"
            self.state = self.ERROR
            return False

    # -- reads for the page
    def predict(self, x):
        with self.lock:
            return self.trainer.predict(x)

    def network_snapshot(self, **kw) -> dict:
        """The network view's data (engine/netview.py), read between two steps: the snapshot
        puts the model in eval mode while it runs."""
        from engine.netview import network_snapshot

        with self.lock:
            return network_snapshot(self.trainer.model, self.trainer.data, **kw)

    def feature_maps(self, split: str, index: int, patch: int) -> tuple:
        """The convolutions' kernels, the feature maps of example `index` of a split and its
        occlusion map for its label (engine/featuremaps.py), read between two steps."""
        from engine.featuremaps import inspect_cnn

        with self.lock:
            return inspect_cnn(self.trainer.model, self.trainer.data, split, index, patch,
                               self.trainer.eval_chunk)

    def metrics(self, split: str, threshold: float | None = None) -> dict:
        """engine.metrics.report of a split, and its first mistakes, read between two steps."""
        from engine.metrics import mistakes, report

        with self.lock:
            return {**report(self.trainer, split, threshold),
                    "mistakes": mistakes(self.trainer, split, threshold)}

    def write(self, prompt: str, length: int, temperatures) -> dict:
        """engine.decode.generate at each temperature, read between two steps."""
        from engine.decode import generate

        with self.lock:
            return {t: generate(self.trainer, prompt, length, t, seed=0) for t in temperatures}

    def read(self, fn, *args):
        """fn(trainer, *args) between two steps (a figure's data that reads the model)."""
        with self.lock:
            return fn(self.trainer, *args)

    def quantization(self, split: str) -> dict:
        """engine.quantize.quantization_report of a split, read between two steps."""
        from engine.quantize import quantization_report

        with self.lock:
            return quantization_report(self.trainer, split)

    # -- the registry lets go of this run
    def _forget(self, replaced: bool = False) -> None:
        """Stop the thread, then keep only what a page still holding this Run may read. A
        stored run keeps its last checkpoint (and is paused in the store if it had not ended);
        `replaced` (a Reset under the same id): it moves to an id of its own first."""
        self.pause(wait=True)
        with self.lock:
            trainer = self.trainer
            if isinstance(trainer, ForgottenTrainer):
                return
            writer = trainer.callback("store")
            if writer is not None and writer.run_id is not None:
                try:
                    if replaced and writer.store.exists(writer.run_id):
                        writer.run_id = _moved(writer.store, writer.run_id)
                    writer.close(trainer)
                except Exception:  # noqa: BLE001 - the store must not keep memory held
                    traceback.print_exc()
            self.trainer = ForgottenTrainer(trainer)
            twins, self.twins = self.twins, []
            self.state = self.DROPPED
            self.steps_per_s = 0.0
            _release(trainer)
            for _, twin in twins:
                _release(twin)
        self._thread = None


class RunRegistry:
    """All live runs of this server, and the reaper that pauses and forgets abandoned ones.

    `on_drop`: callables `fn(run)` called after the registry let go of a Run (dropped, reaped,
    evicted by a cap, or replaced by a Reset under the same id: then after the new Run is in
    the registry). An exception in one is logged and does not stop the others."""

    def __init__(self, caps: Caps | None = None, reap_every_s: float = 1.0, store=None,
                 workers=None):
        self.caps = caps or Caps()
        self.store = store  # a RunStore every run is recorded into (None: runs live in memory)
        # where runs train: None in threads of this process, else a ui.workers.WorkerPool (or
        # a Ray pool, ui/ray_runs.py) whose runs this registry holds as RemoteRuns
        self.workers = workers
        self.problem: str | None = None  # why runs do not train where the server was told to
        self.starting = threading.Lock()  # a Start's check of the caps and its start, as one
        self.slot = FairSlot(self.caps.train_slots)
        self.on_drop: list[Callable[[Run], None]] = []
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._restoring = threading.Lock()
        self._reap_every = reap_every_s
        self._reaper = threading.Thread(target=self._reap_loop, name="netlab-reaper", daemon=True)
        self._stop = threading.Event()
        self._reaper.start()

    def create(self, spec: ExperimentSpec, run_id: str | None = None,
               owner: str | None = None, twins=(), label: str | None = None,
               compare: str | None = None, name: str | None = None,
               tags: list[str] = ()) -> Run:
        """A new run (not started), or a fresh one under an existing id (Reset: it keeps the
        old run's owner and controllers). Raises SpecError for a spec this server will not
        train, CapError when `owner` may not replace that run or a run cap is hit. `twins`:
        (label, spec) of variants trained beside it, in step (`label` names the run, `compare`
        the comparison they come from). `name`, `tags`: its record in the run store."""
        self.caps.check_spec(spec)
        for _, twin_spec in twins:
            self.caps.check_spec(twin_spec)
        old = self.get(run_id)
        if old is not None and owner is not None and not old.can_control(owner):
            raise CapError("This run belongs to another browser: you can watch it, but not "
                           "change it. Start or Step on your own page trains a copy of your own.")
        if old is None:
            with self._lock:  # refuse before building a model that would be thrown away
                self._make_room(owner, run_id, apply=False)
        run_id = run_id or uuid.uuid4().hex
        if self.workers is None:
            run = Run(run_id, spec, self, owner=owner, twins=twins, label=label,
                      compare=compare, name=name, tags=tags)
        else:
            from ui.workers import RemoteRun

            host = self.workers.host(run_id)
            try:  # a Reset by a browser given control keeps the run its owner's, there too
                run = RemoteRun(run_id, spec, self, host, owner=old.owner if old else owner,
                                twins=twins, label=label, compare=compare, name=name,
                                tags=tags)
            except Exception:
                if old is None:  # nothing of this id is left in the worker
                    host.release()
                raise
        if old is not None:
            run.owner, run.controllers = old.owner, set(old.controllers)
            run._control_token = old._control_token
        with self._lock:
            current = self._runs.get(run.id)
            try:
                if current is not old and current is not None and owner is not None \
                        and not current.can_control(owner):
                    raise CapError("This run belongs to another browser: you can watch it, but "
                                   "not change it. Start or Step on your own page trains a copy "
                                   "of your own.")
                evicted = [] if current is not None else \
                    self._make_room(owner, run.id, apply=True)
            except CapError as e:
                refused = e
            else:
                refused = None
                self._runs[run.id] = run
        if refused is not None:  # built, then refused: it goes (from its worker too)
            run._forget()
            raise refused
        # a Reset's replaced Run frees by reference counting (its trainer released, measured);
        # the full collection (~80 ms with torch and streamlit loaded, every thread stalled)
        # is kept for evictions, which are rare
        self._let_go(evicted, collect=bool(evicted))
        if current is not None:  # a Reset: the old run, if stored, keeps its record elsewhere
            self._let_go([current], collect=False, replaced=True)
        return run

    def restore(self, run_id: str, owner: str | None = None) -> Run | None:
        """A run this server no longer holds, back from the store (after a restart, or once
        the reaper forgot it): its history and weights from its last checkpoint, ready to go
        on. None when the store has no such run or it is not `owner`'s (the command line's
        runs go on from the command line). Raises SpecError when it cannot be rebuilt (its
        uploaded file is gone, this server's limits) and CapError without room."""
        from engine.store import resume

        found = self.store.run(run_id) if self.store is not None else None
        if found is None or found["browser"] != owner:
            return None
        with self._restoring:  # two pages opening one run build it once
            with self._lock:
                held = self._runs.get(run_id)
                if held is not None and not held.lost:
                    return held
                if held is not None:  # its worker died: it comes back from the store
                    del self._runs[run_id]
                self._make_room(owner, run_id, apply=False)
            self.caps.check_spec(ExperimentSpec.from_dict(found["spec"]))
            if self.workers is not None:
                run = self._restore_remote(run_id, owner)
                if run is None:
                    return None
            else:
                trainer = resume(self.store, run_id, max_params=self.caps.max_params,
                                 checkpoint_every=self.caps.checkpoint_s)
                run = Run(run_id, trainer.spec, self, owner=owner, trainer=trainer,
                          name=found["name"])
                run.state = Run.DONE if trainer.done else \
                    Run.PAUSED if trainer.step_count else Run.READY
            with self._lock:
                evicted = self._make_room(owner, run_id, apply=True)
                self._runs[run_id] = run
        self._let_go(evicted, collect=bool(evicted))
        return run

    def _restore_remote(self, run_id: str, owner: str | None):
        """The run from a worker: the one already training it (a Ray actor another replica
        started), else one that resumes it from its checkpoint."""
        from ui.workers import RemoteRun

        host = self.workers.host(run_id)
        try:
            found = host("restore", run_id, owner)
            if found is None:
                host.release()
                return None
            return RemoteRun(run_id, ExperimentSpec.from_dict(found["spec"]), self, host,
                             owner=owner, twins=[(label, ExperimentSpec.from_dict(spec))
                                                 for label, spec in found["twins"]],
                             label=found["label"], compare=found["compare"], restored=found)
        except Exception:
            host.release()
            raise

    def check_start(self, run) -> None:
        """CapError when `run` may not start training now: the server trains at most
        `max_trainers` networks at once, and a browser `max_running_per_user` runs."""
        for r in self.runs():
            if r.active and r is not run:
                r.refresh()  # a run in a worker may have ended since its page last looked
        training = [r for r in self.runs() if r.active and r is not run]
        busy = sum(r.size for r in training)
        most = self.caps.max_trainers
        cores = getattr(self.workers, "cores", None)  # a Ray cluster: a core per actor
        if cores is not None:
            most = min(most, max(1, cores()))
        if busy + run.size > most:
            raise CapError(f"The server is training {busy} networks at once, and this run "
                           f"would add {run.size}: its limit is {most}. Try again in a minute, "
                           "or use Step.")
        most = self.caps.max_running_per_user
        if run.owner is not None and most and \
                sum(r.owner == run.owner for r in training) >= most:
            raise CapError(f"This browser is already training {most} network"
                           f"{'s' if most > 1 else ''} (in another tab or page), the most one "
                           "browser may train at once here. Pause it there first; a closed "
                           f"tab's run pauses by itself after {self.caps.grace_s:g} s.")

    def _make_room(self, owner: str | None, run_id: str | None, apply: bool) -> list[Run]:
        """(Under self._lock.) The runs to forget so that one more fits, removed from the
        registry when `apply`; CapError when there is no room."""
        evict: list[Run] = []
        others = [r for r in self._runs.values() if r.id != run_id]
        per_owner = max(1, self.caps.max_runs_per_owner)
        if owner is not None:
            mine = [r for r in others if r.owner == owner]
            excess = len(mine) - (per_owner - 1)
            if excess > 0:
                idle = sorted((r for r in mine if not r.active), key=lambda r: r.last_seen)
                if len(idle) < excess:
                    raise CapError(f"This browser already has {sum(r.active for r in mine)} "
                                   "networks training, "
                                   f"the most one browser may keep ({per_owner}). Pause or reset "
                                   "one of them first.")
                evict += idle[:excess]
        need = len(others) - len(evict) - (max(1, self.caps.max_runs) - 1)
        if need > 0:
            now = time.monotonic()
            idle = sorted((r for r in others if r not in evict and not r.active
                           and now - r.last_seen > self.caps.grace_s), key=lambda r: r.last_seen)
            if len(idle) < need:
                raise CapError(f"This server keeps {self.caps.max_runs} runs, its limit; try "
                               "again in a few minutes.")
            evict += idle[:need]
        if apply:
            for r in evict:
                self._runs.pop(r.id, None)
        return evict

    def get(self, run_id: str | None) -> Run | None:
        with self._lock:
            return self._runs.get(run_id) if run_id else None

    def runs(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def running_count(self) -> int:
        """Networks training now (a run with variants beside it counts each)."""
        with self._lock:
            return sum(r.size for r in self._runs.values() if r.active)

    def __len__(self) -> int:
        return len(self._runs)

    def refresh_every(self, fastest: float) -> float:
        """Seconds between two refreshes of a page whose run trains: at least `fastest`, and
        longer on a busy server, so that all pages keep moving. Runs in this process share the
        interpreter with the pages: 0.1 s per network training (measured: ten users training
        still see every chart move each second). Runs in workers leave it to the pages: 0.04 s
        per network, for the pages' own cost (benchmarks/server_sessions.py: ~9 ms of the web
        process per refresh, Streamlit's script run on top)."""
        per_network = 0.1 if self.workers is None else 0.04
        return max(fastest, per_network * self.running_count())

    def drop(self, run_id: str) -> bool:
        """Forget a run now (its thread stopped, its memory returned). False if unknown."""
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None:
            return False
        self._let_go([run])
        return True

    def _let_go(self, runs: list[Run], collect: bool = True, replaced: bool = False) -> None:
        """Forget runs already out of the registry: stop, release, collect once, callbacks."""
        if not runs:
            return
        for run in runs:
            run._forget(replaced)
        if collect:  # once per batch: a full collection costs ~80 ms with torch loaded
            gc.collect()
        _malloc_trim()  # ~3 ms; without it glibc kept ~200 MB of 20 dropped runs (measured)
        for run in runs:
            for fn in list(self.on_drop):
                try:
                    fn(run)
                except Exception:  # noqa: BLE001 - a broken hook must not stop the reaper
                    traceback.print_exc()

    def reap(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            runs = list(self._runs.values())
        gone = []
        for run in runs:
            idle = now - run.last_seen
            if idle > self.caps.grace_s and (run.active or idle > self.caps.drop_after_s):
                run.refresh()
                idle = now - run.last_seen
            if run.active and idle > self.caps.grace_s:
                run.pause(wait=False)
            if idle > self.caps.drop_after_s:
                with self._lock:
                    if self._runs.get(run.id) is run:
                        del self._runs[run.id]
                        gone.append(run)
        self._let_go(gone)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self._reap_every):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the reaper must outlive a bad run
                traceback.print_exc()

    def shutdown(self) -> None:
        self._stop.set()
        for run in self.runs():
            run.pause()  # a stored run checkpoints here
        if self.workers is not None:
            self.workers.shutdown()
