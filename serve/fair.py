"""Fair sharing by time (`FairSlot`). Training threads take turns through `train_slots` slots, so
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
"""
from __future__ import annotations

import threading


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
