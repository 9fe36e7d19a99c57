"""The worker side of training off the web process: a worker process's main, and `WorkerHost`,
the runs one worker (or one Ray actor, serve/ray_runs.py) holds.

`WorkerHost` holds the worker's runs in a RunRegistry of ordinary `Run`s (threads, fair slot,
steps/s caps, checkpoints into the run store: serve/runs.py) and answers calls that name a run by
id and token. Every answer is plain values, pickled back (tensors moved to the CPU first).

A worker watches its parent: when the web server is gone (even killed with SIGKILL), it pauses
its runs, which checkpoints them into the store, and exits. A server started again on the same
store restores them on their `?run=` links.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import secrets
import signal
import sys
import threading
import time
import traceback
from multiprocessing.managers import BaseManager

from engine import ExperimentSpec, SpecError

from . import settings
from .caps import CapError, Caps, RunDropped
from .registry import RunRegistry
from .runs import Run

SWEEP_KEPT_S = 60.0  # a finished sweep's result waits this long for its page to read it


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def packed(*args, **kw) -> bytes:
    """A call's arguments as WorkerHost.invoke takes them."""
    return pickle.dumps((args, kw), protocol=pickle.HIGHEST_PROTOCOL)


def worker_count() -> int:
    """NETLAB_WORKERS: 0 trains in threads of the web process (as before workers); unset or
    "auto": one worker per core."""
    count = settings.get("NETLAB_WORKERS")
    return cores() if count == "auto" else count


class WorkerGone(CapError):
    """The worker process that trained a run stopped, or cannot be reached or started: the
    page says so, as it says a limit was hit."""


def _counters(trainer) -> dict:
    """A trainer's figures the page shows, as plain values."""
    return {"step_count": trainer.step_count, "total_steps": trainer.total_steps,
            "stopped": trainer.stopped, "restored_step": trainer.restored_step,
            "device": str(trainer.device), "test_metrics": trainer.test_metrics,
            "seconds": trainer.seconds, "phase": trainer.phase}


class WorkerHost:
    """The runs of one worker. Each call names its run by id and by the token `create` or
    `restore` returned (Run.token, random: unique across workers and actors, where a serial
    would start again at 1 in each), so a page still holding a run that a Reset replaced
    cannot press the new run's buttons (RunDropped)."""

    # Run methods a page may call through `call`
    CALLS = frozenset({"pause", "step_once", "go_on", "predict", "network_snapshot",
                       "feature_maps", "metrics", "write", "quantization", "read"})

    def __init__(self, store_location: str | None = None, caps: Caps | None = None,
                 exit_when_empty: bool = False):
        from engine.runs.store import RunStore

        # The web process enforces the limits on runs kept and trained at once (it sees every
        # worker's runs); here only the per-run limits hold.
        # No rest in a turn either (shared_duty): it leaves the interpreter to pages, and a
        # worker has none (measured: two workers resting trained on one core of two).
        caps = dataclasses.replace(caps or Caps(), max_runs=10**9, max_runs_per_owner=10**9,
                                   max_trainers=10**9, max_running_per_user=0,
                                   shared_duty=1.0)
        store = RunStore(store_location) if store_location is not None else None
        self.registry = RunRegistry(caps, store=store)
        self._sweeps: dict[str, dict] = {}
        self._exit_when_empty = exit_when_empty  # a Ray actor: it ends with its run
        self._exiting = threading.Lock()  # held while a run arrives and while the actor ends
        if exit_when_empty:
            self.registry.on_drop.append(lambda run: self._maybe_exit())

    def _maybe_exit(self) -> None:
        """A Ray actor with no run and no sweep left ends, a second later (after its answer to
        the drop), unless one arrived meanwhile."""
        def end():
            with self._exiting:
                if not len(self.registry) and not self._sweeps:
                    os._exit(0)
        if self._exit_when_empty:
            threading.Timer(1.0, end).start()

    def create(self, run_id: str, spec: dict, owner, twins, label, compare, name, tags) -> str:
        with self._exiting:
            run = self.registry.create(
                ExperimentSpec.from_dict(spec), run_id, owner=owner,
                twins=[(lab, ExperimentSpec.from_dict(s)) for lab, s in twins], label=label,
                compare=compare, name=name, tags=list(tags))
        return run.token

    def restore(self, run_id: str, owner) -> dict | None:
        """A run of `owner`'s: held here already (another replica started it; with its
        variants beside it), else back from the store's checkpoint. None when there is
        none."""
        with self._exiting:
            run = self.registry.get(run_id)
            if run is None:
                run = self.registry.restore(run_id, owner)
            elif run.owner != owner:
                run = None
        if run is None:
            return None
        return {"token": run.token, "spec": run.spec.to_dict(), "label": run.label,
                "compare": run.compare,
                "twins": [(lab, t.spec.to_dict()) for lab, t in run.twins]}

    def _run(self, run_id: str, token: str) -> Run:
        run = self.registry.get(run_id)
        if run is None or run.token != token:
            raise RunDropped("This run was forgotten by the server; start a new one.")
        return run

    def call(self, run_id: str, token: str, method: str, *args, **kw):
        if method not in self.CALLS:
            raise ValueError(f"{method} is not a run call")
        return getattr(self._run(run_id, token), method)(*args, **kw)

    def start(self, run_id: str, token: str, endless: bool) -> None:
        run = self._run(run_id, token)
        run.endless = endless
        run.start()

    def set_endless(self, run_id: str, token: str, endless: bool) -> None:
        """"Train until paused", switched while the run trains: its loop reads it live."""
        self._run(run_id, token).endless = endless

    def data(self, run_id: str, token: str, index: int):
        """The dataset of the run (index 0) or of a variant beside it, on the CPU."""
        trainer = self._run(run_id, token).trainers()[index][1]
        return None if trainer.data is None else trainer.data.to("cpu")

    def activation_samples(self, run_id: str, token: str, index: int) -> dict:
        return self._run(run_id, token).trainers()[index][1].activation_samples()

    def sync(self, run_id: str, token: str, known, touch: bool) -> dict | None:
        """The run's state and each trainer's counters and History delta (`known`: the
        (appended, compactions) each mirror last saw); None when the run is gone."""
        run = self.registry.get(run_id)
        if run is None or run.token != token:
            return None
        if touch:
            run.touch()
        trainers = run.trainers()
        return {"state": run.state, "error": run.error, "steps_per_s": run.steps_per_s,
                "can_continue": run.can_continue, "idle": time.monotonic() - run.last_seen,
                "store_failure": run.store_failure, "paused_why": run.paused_why,
                "trainers": [{**_counters(t), "history": t.history.delta(*seen)}
                             for (_, t), seen in zip(trainers, known)]}

    def drop(self, run_id: str, token: str) -> None:
        run = self.registry.get(run_id)
        if run is not None and run.token == token:
            self.registry.drop(run_id)

    def runs(self) -> int:
        return len(self.registry) + len(self._sweeps)

    # -- sweeps (the Runs page's): trained here, in a thread, the page polls their progress
    def sweep_start(self, variants, name: str, browser: str | None) -> str:
        """engine.runs.sweep.run of `variants` in a thread of this worker, recorded into its store;
        returns the token `sweep_status` takes."""
        from engine.runs import sweep

        caps = self.registry.caps
        token = secrets.token_hex(8)
        state = self._sweeps[token] = {"done": 0, "total": len(variants), "result": None,
                                       "error": None, "finished": False, "cancelled": False}

        def progress(done: int, total: int) -> None:
            state["done"] = done
            if state["cancelled"]:  # between two groups of variants: the rest is not trained
                raise SpecError("the sweep was stopped: its page went away")

        def work():
            try:
                state["result"] = sweep.run(
                    variants, store=self.registry.store, name=name, browser=browser,
                    max_params=caps.max_params, check=caps.check_step_work, progress=progress)
            except Exception as e:  # noqa: BLE001 - handed to the page by sweep_status
                if not isinstance(e, SpecError):
                    traceback.print_exc()
                state["error"] = e if isinstance(e, SpecError) else \
                    RuntimeError(f"{type(e).__name__}: {str(e)[:300]}")
            finally:
                state["finished"] = True
                # a page that stopped polling (it reran, its tab closed) never reads it
                threading.Timer(SWEEP_KEPT_S, self._forget_sweep, (token,)).start()

        threading.Thread(target=work, name=f"netlab-sweep-{token}", daemon=True).start()
        return token

    def sweep_cancel(self, token: str) -> None:
        """Its page stopped waiting (a rerun, a closed tab): it ends after the variants
        training now, so that a sweep nobody watches does not hold the CPU."""
        if token in self._sweeps:
            self._sweeps[token]["cancelled"] = True

    def _forget_sweep(self, token: str) -> None:
        self._sweeps.pop(token, None)
        self._maybe_exit()

    def sweep_status(self, token: str) -> dict:
        """{"done", "total", "finished", "result"}; a finished sweep is forgotten here once
        read, and its error raised."""
        state = self._sweeps[token]
        if state["finished"]:
            self._forget_sweep(token)
            if state["error"] is not None:
                raise state["error"]
        return {k: state[k] for k in ("done", "total", "finished", "result")}

    def invoke(self, method: str, payload: bytes) -> bytes:
        """method(*args, **kw) with both ways pickled by plain pickle: a multiprocessing
        connection pickles tensors through torch's sharing reductions, which hand over file
        descriptors that only a process of the same family may open."""
        if method.startswith("_") or method == "invoke":
            raise ValueError(f"{method} is not a worker call")
        args, kw = pickle.loads(payload)
        return _dumps(getattr(self, method)(*args, **kw))

    def shutdown(self) -> None:
        """Let go of every run: each stored one checkpoints and is marked paused, so a server
        started again may restore it at once."""
        for run in self.registry.runs():
            self.registry.drop(run.id)
        self.registry.shutdown()


def _as_is(value):
    return value


class _CpuPickler(pickle.Pickler):
    """Tensors leave a worker on the CPU: a prediction on a GPU run would otherwise open a CUDA
    context in the web process (or fail where it sees no GPU)."""

    def reducer_override(self, obj):
        import torch

        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            return _as_is, (obj.detach().cpu(),)
        return NotImplemented


def _dumps(value) -> bytes:
    import io

    out = io.BytesIO()
    _CpuPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


_HOST: WorkerHost | None = None


def _host() -> WorkerHost:
    return _HOST


class _Manager(BaseManager):
    pass


_Manager.register("host", callable=_host)


def main() -> None:
    """A worker process's main (run as `python -c`, not through multiprocessing's spawn, which
    would import the web server's own main module again). Its settings come as one JSON line on
    stdin, never on the command line, which any user of the machine may read: the socket's
    `address`, the authentication `key` (hex), the `store` location (a PostgreSQL URL holds a
    password), the `caps`, torch `threads` and the `parent` to watch. It prints "ready" once it
    listens."""
    global _HOST
    import torch

    settings = json.loads(sys.stdin.readline())
    torch.set_num_threads(max(1, settings["threads"]))
    _HOST = WorkerHost(settings["store"], Caps(**settings["caps"]))
    _warm_up()
    threading.Thread(target=_watch_parent, args=(settings["parent"],),
                     name="netlab-parent-watch", daemon=True).start()
    server = _Manager(address=settings["address"],
                      authkey=bytes.fromhex(settings["key"])).get_server()
    # stopped on purpose (systemd stops every process of the service): checkpoint first
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=_shut_down).start())
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)  # nobody reads the pipe from here on
    os.dup2(devnull, 1)
    server.serve_forever()


def _shut_down() -> None:
    try:
        _HOST.shutdown()
    finally:
        os._exit(0)


def _warm_up() -> None:
    """Two steps of the default experiment before the worker says it is ready: the first run
    built in a fresh process pays ~0.5 s of lazy imports and first kernel calls, which a
    user's first click would otherwise wait for (measured with benchmarks/load.py)."""
    from engine import Trainer

    Trainer(ExperimentSpec()).run(2)


def _watch_parent(parent: int) -> None:
    """When the web server is gone (even killed with SIGKILL), checkpoint every run and exit:
    a server started again restores them from the store."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _shut_down()
