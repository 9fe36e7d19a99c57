"""All live runs of one server, keyed by a random id the page keeps in its URL, and the reaper.

Measured rules (DESIGN.md section 3): a browser reload starts a new Streamlit session, so a run
kept in session state would be lost on every reload. Runs live here instead, in one server-wide
registry. The page stamps `last_seen` on every refresh; a reaper thread pauses runs nobody has
looked at for `grace_s` (their thread ends and training CPU drops to zero) and forgets them only
after `drop_after_s`, because a paused run's history is the user's work.

Where runs train is the registry's `workers`: None trains each Run in a thread of this process;
a pool (serve/workers.WorkerPool, serve/ray_runs.RayPool) makes and restores the runs it trains
elsewhere (`new_run`, `restore_run`), so this module never needs to know how.
"""
from __future__ import annotations

import gc
import threading
import time
import traceback
import uuid
from typing import Callable

from engine import ExperimentSpec
from engine.runs.store import resume

from .caps import CapError, Caps
from .fair import FairSlot
from .runs import Run, _malloc_trim


class RunRegistry:
    """All live runs of this server, and the reaper that pauses and forgets abandoned ones.

    `on_drop`: callables `fn(run)` called after the registry let go of a Run (dropped, reaped,
    evicted by a cap, or replaced by a Reset under the same id: then after the new Run is in
    the registry). An exception in one is logged and does not stop the others."""

    def __init__(self, caps: Caps | None = None, reap_every_s: float = 1.0, store=None,
                 workers=None):
        self.caps = caps or Caps()
        self.store = store  # a RunStore every run is recorded into (None: runs live in memory)
        # where runs train: None in threads of this process, else a pool (serve/workers.py
        # WorkerPool, serve/ray_runs.py RayPool) that makes the runs it trains (new_run,
        # restore_run), which this registry holds as it holds its own
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
        else:  # a Reset by a browser given control keeps the run its owner's, there too
            run = self.workers.new_run(self, run_id, spec, owner=old.owner if old else owner,
                                       replaces=old is not None, twins=twins, label=label,
                                       compare=compare, name=name, tags=tags)
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
                run = self.workers.restore_run(self, run_id, owner)
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
            run.catch_up_store()
            idle = now - run.last_seen
            if idle > self.caps.grace_s and (run.active or idle > self.caps.drop_after_s):
                run.refresh()
                idle = now - run.last_seen
            if run.active and idle > self.caps.grace_s:
                run.pause(wait=False, why=f"its page had not been seen for {idle:.0f} s (a "
                          "closed or hidden tab, or a server too busy to refresh it)")
            if idle > self.caps.drop_after_s or self._unloadable(run, idle):
                with self._lock:
                    if self._runs.get(run.id) is run:
                        del self._runs[run.id]
                        gone.append(run)
        self._let_go(gone)

    def _unloadable(self, run, idle: float) -> bool:
        """A stored run nobody has looked at for `unload_after_s` and that is not training
        leaves memory: its checkpoint is in the store, and its page or link brings it back
        (a class's paused runs held ~160 MB per worker for an hour)."""
        return self.store is not None and idle > self.caps.unload_after_s and \
            run.state in (run.PAUSED, run.DONE) and run.trainer.step_count > 0

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
