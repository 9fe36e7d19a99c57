"""A live run: a Trainer (and the variants beside it) stepping in a background thread of this
process, in turns of the server's fair slot (serve/fair.py), held by the run registry
(serve/registry.py).

Measured rules (DESIGN.md §3): a browser reload starts a new Streamlit session, so a run kept in
session state would be lost on every reload. Runs live here instead, in one server-wide registry,
keyed by a random id that the page keeps in its URL. The page stamps `last_seen` on every
refresh; a reaper thread pauses runs nobody has looked at for `grace_s` (their thread ends and
training CPU drops to zero) and forgets them only after `drop_after_s`, because a paused run's
history is the user's work.

Nothing here calls st.*: the page reads a run's History (thread-safe) and asks the run, under its
lock, for predictions.

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
import hmac
import itertools
import secrets
import sys
import threading
import time
import traceback
import uuid

from engine import ExperimentSpec, Trainer
from engine.core.inputs import short
from engine.runs.store import StoreWriter
from engine.train.history import History

from .caps import CapError, RunDropped


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

    def __init__(self, run_id: str, spec: ExperimentSpec, registry,
                 owner: str | None = None, twins=(), label: str | None = None,
                 compare: str | None = None, name: str | None = None, trainer=None,
                 tags: list[str] = ()):
        self.id = run_id
        self.serial = next(self._serials)  # unique per Run object (a Reset keeps the id)
        self.token = secrets.token_hex(8)  # the same, across processes (serve/workers.py)
        self.registry = registry
        self.lock = threading.RLock()  # held for each step and for every read of the model
        self.spec = spec
        self.fixed_from = None  # the spec a one-click fix was applied to, if it came from one
        self._init_control(owner)
        # recorded in the server's run store (engine/runs/store.py) under this run's id, so the run
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
        self.paused_why: str | None = None  # the server paused it (the reaper), and why
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
            self.paused_why = None
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

    def pause(self, wait: bool = True, why: str | None = None) -> None:
        """Stop training (`wait`: until the thread has stopped, then a checkpoint). `why`: the
        server paused it, not its page (the page says so)."""
        self._halt.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self.lock:
            if self.state == self.RUNNING:
                self.state = self.PAUSED
                self.paused_why = why
            if wait:  # the thread has stopped: a checkpoint of where the user paused
                self._save()

    @property
    def _writer(self):
        """The StoreWriter recording this run, or None (not stored; a forgotten run's trainer)."""
        return self.trainer.callback("store") if isinstance(self.trainer, Trainer) else None

    def _save(self) -> None:
        """(Under self.lock.) A checkpoint in the store, if the run is stored and has moved
        since its last one: Pause and Step are save points."""
        writer = self._writer
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

    @property
    def store_failure(self) -> str | None:
        """Why the run store cannot take this run's rows right now (a full disk, say), or
        None: the run trains on and its writer keeps the rows to write later."""
        writer = self._writer
        return writer.failure if writer is not None else None

    def catch_up_store(self) -> None:
        """A stopped run whose store failed (a full disk) writes what it kept, once the store
        works again (the reaper asks every second; a running one retries at each row)."""
        writer = self._writer
        if writer is not None and writer.failure is not None and not self.active:
            with self.lock:
                writer.catch_up(self.trainer)

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
        """The network view's data (engine/lab/netview.py), read between two steps: the snapshot
        puts the model in eval mode while it runs."""
        from engine.lab.netview import network_snapshot

        with self.lock:
            return network_snapshot(self.trainer.model, self.trainer.data, **kw)

    def feature_maps(self, split: str, index: int, patch: int) -> tuple:
        """The convolutions' kernels, the feature maps of example `index` of a split and its
        occlusion map for its label (engine/lab/featuremaps.py), read between two steps."""
        from engine.lab.featuremaps import inspect_cnn

        with self.lock:
            return inspect_cnn(self.trainer.model, self.trainer.data, split, index, patch,
                               self.trainer.eval_chunk)

    def metrics(self, split: str, threshold: float | None = None) -> dict:
        """engine.lab.metrics.report of a split, and its first mistakes, read between two steps."""
        from engine.lab.metrics import mistakes, report

        with self.lock:
            return {**report(self.trainer, split, threshold),
                    "mistakes": mistakes(self.trainer, split, threshold)}

    def write(self, prompt: str, length: int, temperatures) -> dict:
        """engine.lab.decode.generate at each temperature, read between two steps."""
        from engine.lab.decode import generate

        with self.lock:
            return {t: generate(self.trainer, prompt, length, t, seed=0) for t in temperatures}

    def read(self, fn, *args):
        """fn(trainer, *args) between two steps (a figure's data that reads the model)."""
        with self.lock:
            return fn(self.trainer, *args)

    def quantization(self, split: str) -> dict:
        """engine.lab.quantize.quantization_report of a split, read between two steps."""
        from engine.lab.quantize import quantization_report

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
