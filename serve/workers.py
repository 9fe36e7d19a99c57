"""Training off the web process: runs live in worker processes, and the page reads them.

Why. With every run a thread of the Streamlit process, all runs and all page refreshes share one
interpreter lock (issue 19, measured on 2 cores: one session ~1,770 steps/s, ten ~70 each with
pages down to ~0.5 updates/s), and the whole server trains on about one core however many it has.
Here each run trains in one of `NETLAB_WORKERS` worker processes (default: one per core), so
training grows with cores and the web process only renders.

The parts:

- `WorkerHost` (serve/worker_host.py) lives in a worker, or in a Ray actor (serve/ray_runs.py),
  and holds the worker's runs.
- `WorkerPool` starts the workers (fresh Python processes serving a multiprocessing manager on a
  Unix socket; not forked: a fork of a threaded Streamlit process is unsafe) in the background
  when the server starts, places each
  new run on the worker with the fewest runs, keeps a Reset on its run's worker, and starts a
  worker again when one died.
- `RemoteRun` is the web side of one run: the same interface as `Run` (serve/runs.py), so the
  pages and the registry need not know where a run trains. Ownership, control links and the
  caps on runs per browser stay in the web process (RunRegistry); the worker enforces the per-run
  limits as before (parameters, step work, steps/s, twins).
- `MirrorTrainer` is what the page reads as `run.trainer`: the counters, a History kept equal to
  the worker's by `History.delta` (only new rows travel; all of it after a thinning), the dataset
  (fetched once) and the model's architecture (built on the meta device: no weights). Anything
  that reads the weights (predictions over the decision-boundary grid, the network view, feature
  maps, metrics, activation samples) is a call to the worker, which runs it under the run's lock
  between two steps: the web process never holds that lock.

A page's refresh costs one call (`sync`: touch, state, new rows; ~1 ms on a quiet worker); a
button is one call and a sync. A worker that dies takes its runs with it: their pages say so
and their last checkpoints are in the run store (Reset or reopen from the Runs page).

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
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from engine import ExperimentSpec
from engine.train.history import History

from .caps import CapError, Caps, RunDropped
from .runs import Controlled, ForgottenTrainer, Run
from .worker_host import WorkerGone, _Manager, cores, packed

# A page rerun reads run.state, run.trainer and the trainers several times: one sync serves them
# all when it is this recent.
FRESH_S = 0.1


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Worker:
    """One worker process and the proxy that reaches it (thread-safe: one connection per
    calling thread)."""

    def __init__(self, folder: str, index: int, store_location: str | None, threads: int,
                 caps: Caps, start_timeout: float = 120.0):
        # a new address for each process: multiprocessing keeps each thread's connection per
        # address, and would hand a restarted worker's callers the dead one's (BrokenPipeError)
        address = os.path.join(folder, f"worker-{index}-{secrets.token_hex(4)}.sock")
        key = secrets.token_bytes(32)
        self.failed = False
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
        settings = {"address": address, "key": key.hex(), "store": store_location,
                    "caps": dataclasses.asdict(caps), "threads": threads, "parent": os.getpid()}
        # a session of its own: Ctrl-C in the server's terminal reaches the server, whose
        # exit the worker notices, and not the worker mid-step
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from serve.worker_host import main; main()"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.process.stdin.write(json.dumps(settings).encode() + b"\n")
        self.process.stdin.close()
        ready = _readline(self.process.stdout, start_timeout)
        if ready.strip() != b"ready":
            self.process.kill()
            raise RuntimeError(f"the worker process did not start (exit code "
                               f"{self.process.poll()})")
        self.manager = _Manager(address=address, authkey=key)
        self.manager.connect()
        self.proxy = self.manager.host()

    @property
    def alive(self) -> bool:
        return not self.failed and self.process.poll() is None

    def fail(self) -> None:
        """A call found it gone (its socket closed): so it is, even if the process has not
        quite ended yet (a worker killed a moment ago still polls as running)."""
        self.failed = True
        self.process.kill()

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Checkpoint its runs, then end the process."""
        try:
            self.proxy.invoke("shutdown", packed())
        except Exception:  # noqa: BLE001 - gone already
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _readline(stream, timeout: float) -> bytes:
    """One line from a pipe, or b"" after `timeout` seconds."""
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0] if out else b""


class Host:
    """Calls to the worker that holds one run: host(method, *args). It stays with the worker
    process it first reached: once that one died, a call raises WorkerGone, even where a fresh
    worker has taken its place (which knows nothing of the run)."""

    def __init__(self, pool: "WorkerPool", index: int, run_id: str):
        self.pool, self.index, self.run_id = pool, index, run_id
        self.generation: int | None = None

    def __call__(self, method: str, *args, **kw):
        if self.generation is None:
            worker = self.pool.worker(self.index)
            self.generation = worker.generation
        else:  # its worker, never a fresh one: starting that took seconds, and knows nothing
            worker = self.pool.current(self.index)  # of the run
            if worker is None or worker.generation != self.generation or not worker.alive:
                raise WorkerGone("the worker process training this run stopped")
        try:
            return pickle.loads(worker.proxy.invoke(method, packed(*args, **kw)))
        except (EOFError, ConnectionError, FileNotFoundError) as e:  # the process, or its
            worker.fail()                                             # socket, is gone
            raise WorkerGone(f"the worker process training this run stopped ({type(e).__name__})"
                             ) from None

    def release(self) -> None:
        self.pool.forget(self.run_id)


class RemotePool:
    """What a pool of places that train runs (worker processes, Ray actors) does for the run
    registry: make a run on the place `host(run_id)` picks, or bring one back from it. A pool
    defines `host(run_id)`; the registry calls these two and holds the RemoteRuns they return."""

    def new_run(self, registry, run_id: str, spec: ExperimentSpec, replaces: bool = False,
                **kw) -> "RemoteRun":
        """A new run of `spec` (kw as RemoteRun takes them); `replaces`: a Reset of a run
        already on that worker, which keeps its place there if this one cannot be made."""
        host = self.host(run_id)
        try:
            return RemoteRun(run_id, spec, registry, host, **kw)
        except Exception:
            if not replaces:  # nothing of this id is left in the worker
                host.release()
            raise

    def restore_run(self, registry, run_id: str, owner: str | None) -> "RemoteRun | None":
        """The run from a worker: the one already training it (a Ray actor another replica
        started), else one that resumes it from its checkpoint (None: no such run of `owner`)."""
        host = self.host(run_id)
        try:
            found = host("restore", run_id, owner)
            if found is None:
                host.release()
                return None
            return RemoteRun(run_id, ExperimentSpec.from_dict(found["spec"]), registry, host,
                             owner=owner, twins=[(label, ExperimentSpec.from_dict(spec))
                                                 for label, spec in found["twins"]],
                             label=found["label"], compare=found["compare"], restored=found)
        except Exception:
            host.release()
            raise


class WorkerPool(RemotePool):
    """`size` worker processes, started in the background; runs are placed on the one with the
    fewest runs and stay there."""

    RETRY_S = 5.0  # a worker that failed to start is not tried again sooner

    def __init__(self, size: int, store_location: str | None = None, caps: Caps | None = None):
        # caps: the web registry's, so that a worker holds each run to the same limits
        self.size, self.store_location, self.caps = max(1, size), store_location, caps or Caps()
        self.threads = max(1, cores() // self.size)  # torch threads per worker: no oversubscription
        self.folder = tempfile.mkdtemp(prefix="netlab-workers-")  # their sockets
        self._workers: list[_Worker | None] = [None] * self.size
        self._ready = [threading.Event() for _ in range(self.size)]
        self._errors: list[tuple[float, str] | None] = [None] * self.size
        self._starting = [threading.Lock() for _ in range(self.size)]  # one (re)start at a time
        self._generations = 0
        self._lock = threading.Lock()  # placements; never held while a worker starts
        self._placed: dict[str, int] = {}  # run id -> worker index
        threading.Thread(target=self._start_all, name="netlab-worker-start",
                         daemon=True).start()

    def _start_all(self) -> None:
        """One after the other: started together on a 2-core server, beside the first page
        being drawn, each took seconds longer, and the first Start waited for worker 0 (where
        a first run goes) to be ready."""
        for i in range(self.size):
            self._start(i)

    def _start(self, i: int) -> None:
        with self._starting[i]:
            self._start_locked(i)

    def _start_locked(self, i: int) -> None:  # under self._starting[i]
        try:
            worker = _Worker(self.folder, i, self.store_location, self.threads, self.caps)
            with self._lock:
                self._generations += 1
                worker.generation = self._generations
            self._workers[i], self._errors[i] = worker, None
        except Exception as e:  # noqa: BLE001 - reported to whoever needs the worker
            traceback.print_exc()
            self._workers[i] = None
            self._errors[i] = (time.monotonic(), f"{type(e).__name__}: {e}")
        finally:
            self._ready[i].set()

    def current(self, i: int) -> _Worker | None:
        """Worker i as it is now (dead, or not started yet: None), never started for it."""
        return self._workers[i]

    def worker(self, i: int, timeout: float = 60.0) -> _Worker:
        """Worker i, started again if it died (its runs are lost with it). A page at a time
        restarts it while the others wait; the other workers' pages are not held up."""
        if not self._ready[i].wait(timeout):
            raise WorkerGone("the training worker is still starting; try again in a moment")
        worker = self._workers[i]
        if worker is not None and worker.alive:
            return worker
        with self._starting[i]:
            worker = self._workers[i]
            if worker is None or not worker.alive:
                failed = self._errors[i]
                if failed is None or time.monotonic() - failed[0] >= self.RETRY_S:
                    self._start_locked(i)
                    worker = self._workers[i]
            if worker is None or not worker.alive:
                raise WorkerGone("the training worker cannot start: "
                                 f"{(self._errors[i] or (0, 'it stopped'))[1]}")
            return worker

    def host(self, run_id: str) -> Host:
        """The worker holding `run_id`, or for a new run the one with the fewest runs."""
        with self._lock:
            if run_id not in self._placed:
                load = [0] * self.size
                for i in self._placed.values():
                    load[i] += 1
                self._placed[run_id] = min(range(self.size), key=load.__getitem__)
            return Host(self, self._placed[run_id], run_id)

    def forget(self, run_id: str) -> None:
        """The run left its worker: a new run under its id may go elsewhere."""
        with self._lock:
            self._placed.pop(run_id, None)

    def pids(self) -> list[int]:
        """The workers' process ids (benchmarks, tests)."""
        return [w.pid for w in self._workers if w is not None and w.alive]

    def shutdown(self) -> None:
        for i, worker in enumerate(self._workers):
            if worker is not None and self._ready[i].is_set():
                worker.stop()


def sweep_in_worker(pool, variants, name: str, browser: str | None, progress=None,
                    poll_s: float = 0.2) -> dict:
    """A sweep trained by a worker of `pool` (a WorkerPool or a RayPool: then an actor of its
    own), polled until it ends: the web process only reports its progress(done, total)."""
    host = pool.host(f"sweep-{secrets.token_hex(8)}")
    token = None
    try:
        token = host("sweep_start", variants, name, browser)
        while True:
            status = host("sweep_status", token)
            if progress is not None:
                progress(status["done"], status["total"])
            if status["finished"]:
                token = None
                return status["result"]
            time.sleep(poll_s)
    finally:
        if token is not None:  # the page stopped waiting (Streamlit interrupted this run)
            try:
                host("sweep_cancel", token)
            except CapError:  # the worker is gone: so is the sweep
                pass
        host.release()


class MirrorTrainer:
    """The page's view of a Trainer in a worker: the figures of its last sync, its History
    (kept equal to the worker's), its dataset (fetched once) and its architecture."""

    def __init__(self, run: "RemoteRun", index: int, spec: ExperimentSpec):
        self._run, self._index, self.spec = run, index, spec
        self.history = History()
        self.seen = (0, 0)  # the worker History's (appended, compactions) at the last catch-up
        self.step_count, self.total_steps, self.seconds = 0, spec.training.steps, 0.0
        self.stopped = self.restored_step = self.test_metrics = self.phase = None
        self.device = "cpu"
        self._data = self._model = None
        self._fetch = threading.Lock()

    def update(self, status: dict) -> None:
        self.history.catch_up(status["history"])
        self.seen = (status["history"]["appended"], status["history"]["compactions"])
        for key in ("step_count", "total_steps", "stopped", "restored_step", "device",
                    "test_metrics", "seconds", "phase"):
            setattr(self, key, status[key])

    @property
    def done(self) -> bool:
        return self.stopped is not None

    @property
    def data(self):
        with self._fetch:
            if self._data is None:
                self._data = self._run._call("data", self._index)
            return self._data

    @property
    def model(self):
        """The model's modules with no weights (on the meta device, else the CPU): for what the
        page asks of its architecture. Its weights live in the worker."""
        if self._model is None:
            import torch

            from engine.nn.model import build_model
            from engine.train.trainer import output_dim

            data = self.data
            try:
                self._model = build_model(self.spec, data.in_shape, output_dim(self.spec, data),
                                          torch.device("meta"))
            except Exception:  # noqa: BLE001 - an initializer the meta device cannot run
                self._model = build_model(self.spec, data.in_shape, output_dim(self.spec, data),
                                          torch.device("cpu"))
        return self._model

    def activation_samples(self) -> dict:
        return self._run._call("activation_samples", self._index)

    def callback(self, name: str):
        return None


class RemoteRun(Controlled):
    """A run trained by a worker, seen from the web process with Run's interface."""

    READY, RUNNING, PAUSED, DONE, ERROR, DROPPED = (Run.READY, Run.RUNNING, Run.PAUSED, Run.DONE,
                                                    Run.ERROR, Run.DROPPED)
    LOST = "The worker process that trained this run stopped."

    def __init__(self, run_id: str, spec: ExperimentSpec, registry, host,
                 owner: str | None = None, twins=(), label: str | None = None,
                 compare: str | None = None, name: str | None = None, tags=(),
                 restored: dict | None = None):
        self.id, self.spec, self.registry, self.host = run_id, spec, registry, host
        self.serial = next(Run._serials)
        self._init_control(owner)
        if restored is None:
            self._remote = host("create", run_id, spec.to_dict(), owner,
                                [(lab, s.to_dict()) for lab, s in twins], label, compare, name,
                                list(tags))
        else:
            self._remote = restored["token"]
        self.fixed_from = None
        self.label = label
        self.compare = compare if twins else None
        self._endless = False
        self.lost = False  # its worker died: a reload restores it from the store
        self.last_seen = time.monotonic()
        self._mirrors: list = [MirrorTrainer(self, 0, spec)] + [
            MirrorTrainer(self, i + 1, s) for i, (_, s) in enumerate(twins)]
        self._labels = [label] + [lab for lab, _ in twins]
        self._state, self.error, self.steps_per_s = self.READY, None, 0.0
        self._can_continue = False
        self.store_failure: str | None = None  # as Run's, as of the last sync
        self.paused_why: str | None = None
        self._synced = 0.0
        self._sync_lock = threading.RLock()  # a sync, and the reaper letting go, one at a time
        self.sync()

    # -- calls to the worker
    def _call(self, method: str, *args, **kw):
        """A call about this run. RunDropped once it was let go, or when its worker died (the
        run is then in error, `lost`)."""
        if self._state == self.DROPPED:
            raise RunDropped("This run was forgotten by the server; start a new one.")
        try:
            return self.host(method, self.id, self._remote, *args, **kw)
        except WorkerGone:
            with self._sync_lock:
                if self._state != self.DROPPED:
                    self._state, self.error, self.lost = self.ERROR, self.LOST, True
            raise RunDropped(self.LOST) from None

    def _command(self, method: str, *args):
        try:
            return self._call("call", method, *args)
        except RunDropped:
            return None
        finally:
            self.sync()

    def sync(self, touch: bool = False) -> None:
        """The run's state and new rows from the worker (`touch`: a page is looking)."""
        with self._sync_lock:
            if self._state == self.DROPPED or self.lost:
                return
            try:
                status = self._call("sync", [m.seen for m in self._mirrors], touch)
            except RunDropped:
                return
            self._synced = time.monotonic()
            if status is None:  # the worker let go of it (unseen for too long)
                self._let_go()
                return
            for mirror, figures in zip(self._mirrors, status["trainers"]):
                mirror.update(figures)
            self._state, self.error = status["state"], status["error"]
            # a page on another replica may be looking at it
            self.last_seen = max(self.last_seen, time.monotonic() - status["idle"])
            self.steps_per_s, self._can_continue = status["steps_per_s"], status["can_continue"]
            # an older worker sends neither
            self.store_failure, self.paused_why = status.get("store_failure"), \
                status.get("paused_why")

    def _fresh(self) -> None:
        if time.monotonic() - self._synced > FRESH_S:
            self.sync()

    # -- Run's interface
    @property
    def state(self) -> str:
        self._fresh()
        return self._state

    @property
    def trainer(self):
        self._fresh()
        return self._mirrors[0]

    @property
    def twins(self) -> list:
        return list(zip(self._labels[1:], self._mirrors[1:]))

    def trainers(self) -> list:
        self._fresh()
        return list(zip(self._labels, self._mirrors))

    @property
    def size(self) -> int:
        return len(self._mirrors)

    @property
    def done(self) -> bool:
        return all(m.done for m in self._mirrors)

    @property
    def active(self) -> bool:
        """As of the last sync: the reaper and the caps ask this often."""
        return self._state == self.RUNNING

    @property
    def can_continue(self) -> bool:
        self._fresh()
        return self._can_continue

    @property
    def endless(self) -> bool:
        return self._endless

    @endless.setter
    def endless(self, value: bool) -> None:
        """"Train until paused": the worker's loop reads it live, as a thread's would."""
        self._endless = bool(value)
        try:
            self._call("set_endless", self._endless)
        except RunDropped:
            pass

    def catch_up_store(self) -> None:
        """Its worker's reaper writes what a failing store could not take."""

    def touch(self) -> None:
        self.last_seen = time.monotonic()
        self.sync(touch=True)

    def refresh(self) -> None:
        """last_seen as the worker knows it: a page served by another replica touches it
        there (the reaper asks before it pauses or forgets a run)."""
        self.sync()

    def start(self) -> None:
        with self.registry.starting:  # the caps' check and the start, as one
            if self.state in (self.RUNNING, self.DONE, self.ERROR, self.DROPPED):
                return
            self.registry.check_start(self)
            try:
                self._call("start", self._endless)
            except RunDropped:
                pass
            finally:
                self.sync()

    def pause(self, wait: bool = True, why: str | None = None) -> None:
        self._command("pause", wait, why)

    def step_once(self) -> None:
        self._command("step_once")

    def go_on(self) -> bool:
        return bool(self._command("go_on"))

    def predict(self, x):
        return self._call("call", "predict", x)

    def network_snapshot(self, **kw) -> dict:
        return self._call("call", "network_snapshot", **kw)

    def feature_maps(self, split: str, index: int, patch: int) -> tuple:
        return self._call("call", "feature_maps", split, index, patch)

    def metrics(self, split: str, threshold: float | None = None) -> dict:
        return self._call("call", "metrics", split, threshold)

    def write(self, prompt: str, length: int, temperatures) -> dict:
        return self._call("call", "write", prompt, length, list(temperatures))

    def read(self, fn, *args):
        """fn(trainer, *args) in the worker, between two steps: fn must be importable there (a
        module-level function, not a lambda)."""
        return self._call("call", "read", fn, *args)

    def quantization(self, split: str) -> dict:
        return self._call("call", "quantization", split)

    # -- the registry lets go of this run
    def _forget(self, replaced: bool = False) -> None:
        """Stop it in the worker, which checkpoints it (a Reset replaced it there already)."""
        if not replaced:
            if self._state != self.DROPPED and not self.lost:
                try:
                    self.host("drop", self.id, self._remote)
                except WorkerGone:
                    pass
            if self.registry.get(self.id) is None:  # no new run took its id meanwhile
                self.host.release()
        self._let_go()

    def _let_go(self) -> None:
        with self._sync_lock:
            if self._state == self.DROPPED:
                return
            self._mirrors = [ForgottenTrainer(self._mirrors[0])]
            self._labels = self._labels[:1]
            self._state, self.steps_per_s = self.DROPPED, 0.0
