"""Live runs: trainers stepping in background threads, shared by the whole server.

Measured rules (DESIGN.md §3): a browser reload starts a new Streamlit session, so a run kept in
session state would be lost on every reload. Runs live here instead, in one server-wide registry,
keyed by a random id that the page keeps in its URL. The page stamps `last_seen` on every
refresh; a reaper thread pauses runs nobody has looked at for `grace_s` (their thread ends and
training CPU drops to zero) and forgets them only after `drop_after_s`, because a paused run's
history is the user's work.

Nothing here calls st.*: the page reads a run's History (thread-safe) and asks the run, under its
lock, for predictions.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

from engine import ExperimentSpec, SpecError, Trainer


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

    def check_spec(self, spec: ExperimentSpec) -> None:
        if spec.training.steps > self.max_steps:
            raise SpecError(f"training.steps={spec.training.steps:,} is more than this server "
                            f"allows ({self.max_steps:,}); lower it")


class CapError(Exception):
    """A server limit was hit; the message says which and what to do."""


class Run:
    READY, RUNNING, PAUSED, DONE, ERROR = "ready", "running", "paused", "done", "error"

    _serials = itertools.count(1)

    def __init__(self, run_id: str, spec: ExperimentSpec, registry: "RunRegistry"):
        self.id = run_id
        self.serial = next(self._serials)  # unique per Run object (a Reset keeps the id)
        self.registry = registry
        self.lock = threading.RLock()  # held for each step and for every read of the model
        self.spec = spec
        self.trainer = Trainer(spec, max_params=registry.caps.max_params)
        self.state = self.READY
        self.error: str | None = None
        self.last_seen = time.monotonic()
        self.steps_per_s = 0.0
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # -- control (called from page callbacks)
    def start(self) -> None:
        with self.lock:
            if self.state in (self.RUNNING, self.DONE, self.ERROR):
                return
            if self.registry.running_count() >= self.registry.caps.max_trainers:
                raise CapError(f"The server is training {self.registry.caps.max_trainers} "
                               "networks at once, its limit. Try again in a minute, or use Step.")
            if self.trainer.step_count == 0:
                # the first step (a logged row) before Start returns, so the page that pressed
                # Start draws a chart at once instead of on its next refresh
                if not self._guarded(self.trainer.step):
                    return
                if self.trainer.done:
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

    def step_once(self) -> None:
        self.pause()
        with self.lock:
            if self.state in (self.DONE, self.ERROR):
                return
            self._guarded(self.trainer.step)
            if self.trainer.done:
                self.state = self.DONE
            elif self.state == self.READY:
                self.state = self.PAUSED

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    @property
    def active(self) -> bool:
        return self.state == self.RUNNING

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the training thread
    def _loop(self, halt: threading.Event) -> None:
        cap = self.registry.caps.max_steps_per_s
        t_rate, n_rate = time.perf_counter(), 0
        while not halt.is_set():
            t_step = time.perf_counter()
            # Runs take turns through the registry's training slots: a thread waiting on the
            # slot sleeps instead of fighting for the GIL, so page refreshes compete with one
            # training thread, not with every run on the server (measured: with 10 runs
            # stepping freely the pages got a tenth of the interpreter and stalled).
            with self.registry.train_slot:
                t_slot = time.perf_counter()
                with self.lock:
                    if halt.is_set():
                        break
                    if not self._guarded(self.trainer.step) or self.trainer.done:
                        if self.state == self.RUNNING:
                            self.state = self.ERROR if self.error else self.DONE
                        break
                # With several runs the slot also rests for a share of each step's time, so
                # the pages always get the interpreter for part of every second (measured:
                # 5 runs stepping back to back left pages under 1 update/s).
                self._rest(time.perf_counter() - t_slot)
            n_rate += 1
            now = time.perf_counter()
            if now - t_rate >= 0.5:
                self.steps_per_s, t_rate, n_rate = n_rate / (now - t_rate), now, 0
            # sleep(0) still hands the interpreter to a waiting page thread between steps
            time.sleep(max(0.0, 1.0 / cap - (now - t_step)) if cap else 0)

    def _rest(self, step_seconds: float) -> None:
        duty = self.registry.caps.shared_duty
        if 0 < duty < 1 and self.registry.running_count() > 1:
            time.sleep(step_seconds * (1 / duty - 1))

    def _guarded(self, fn) -> bool:
        """Run fn; an unexpected exception becomes the run's error message, not a dead thread."""
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - shown to the user, full trace in the server log
            traceback.print_exc()
            self.error = f"{type(e).__name__}: {e}"
            self.state = self.ERROR
            return False

    # -- reads for the page
    def predict(self, x):
        with self.lock:
            return self.trainer.predict(x)


class RunRegistry:
    """All live runs of this server, and the reaper that pauses the abandoned ones."""

    def __init__(self, caps: Caps | None = None, reap_every_s: float = 1.0):
        self.caps = caps or Caps()
        self.train_slot = threading.BoundedSemaphore(max(1, self.caps.train_slots))
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._reap_every = reap_every_s
        self._reaper = threading.Thread(target=self._reap_loop, name="netlab-reaper", daemon=True)
        self._stop = threading.Event()
        self._reaper.start()

    def create(self, spec: ExperimentSpec, run_id: str | None = None) -> Run:
        """A new run (not started). Raises SpecError for a spec this server will not train."""
        self.caps.check_spec(spec)
        run = Run(run_id or uuid.uuid4().hex, spec, self)
        with self._lock:
            old = self._runs.get(run.id)
            self._runs[run.id] = run
        if old is not None:
            old.pause(wait=False)
        return run

    def get(self, run_id: str | None) -> Run | None:
        with self._lock:
            return self._runs.get(run_id) if run_id else None

    def running_count(self) -> int:
        with self._lock:
            return sum(r.active for r in self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)

    def reap(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            idle = now - run.last_seen
            if run.active and idle > self.caps.grace_s:
                run.pause(wait=False)
            if idle > self.caps.drop_after_s:
                run.pause(wait=False)
                with self._lock:
                    self._runs.pop(run.id, None)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self._reap_every):
            self.reap()

    def shutdown(self) -> None:
        self._stop.set()
        for run in list(self._runs.values()):
            run.pause()
