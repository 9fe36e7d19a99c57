"""Runs as named Ray actors, past one machine (issue 19).

With NETLAB_RAY_ADDRESS set, each run trains in a Ray actor of its own instead of a local worker
process: a `WorkerHost` (serve/worker_host.py) named `run-<id>` in the namespace "netlab" and detached
from the replica that started it. So any Streamlit replica behind a load balancer reaches any
run: a reload served by another replica finds the actor by name (RunRegistry.restore), and a
replica that restarts leaves its runs training. The run store must then be one every machine
reaches (PostgreSQL, NETLAB_STORE).

    NETLAB_RAY_ADDRESS=auto                 the Ray cluster this machine belongs to (`ray start`)
    NETLAB_RAY_ADDRESS=ray://HEAD:10001     a cluster through Ray Client
    NETLAB_RAY_ADDRESS=local                a Ray started inside this server (one machine: to try)

Who looks after an actor. A page's refresh touches its run in the actor, whichever replica
serves it; the actor's own reaper pauses a run nobody touched for NETLAB_GRACE_S and forgets
it after NETLAB_DROP_AFTER_S, checkpointing it into the store, and the actor then exits. A
replica's reaper asks the actor before it pauses or forgets a run (`RemoteRun.refresh`), so a
run watched through another replica keeps training.

Ray is optional (requirements-ray.txt); asking for it without it installed says so.
"""
from __future__ import annotations

import pickle
import threading
from pathlib import Path

from engine import SpecError

from . import settings
from .caps import Caps
from .worker_host import WorkerGone, WorkerHost, packed
from .workers import RemotePool

NAMESPACE = "netlab"
ROOT = Path(__file__).resolve().parent.parent


def ray_address() -> str | None:
    """NETLAB_RAY_ADDRESS, or None: runs train in local worker processes."""
    return settings.get("NETLAB_RAY_ADDRESS") or None


def _ray():
    try:
        import ray
    except ImportError:
        raise SpecError("Ray is not installed (an optional part of Netlab): pip install -r "
                        "requirements-ray.txt") from None
    return ray


def _init_in_a_lasting_thread(ray, address: str | None) -> None:
    """ray.init from a thread that never ends. Started from a Streamlit script run, a local
    Ray's processes (GCS, raylet, workers) died when the run ended (measured: every Ray
    process defunct a second after the first page, and the page stalled on "Failed to
    connect to GCS"); from a thread that lasts they stay up. Likely a parent-death signal,
    which Linux ties to the thread that started them. The engine and this package travel to
    the cluster."""
    done: list = []
    ready = threading.Event()

    def start() -> None:
        try:
            ray.init(address=address, namespace=NAMESPACE, include_dashboard=False,
                     log_to_driver=False, configure_logging=False,
                     runtime_env={"py_modules": [str(ROOT / "engine"), str(ROOT / "ui")]})
            done.append(None)
        except Exception as e:  # noqa: BLE001 - raised in the caller's thread
            done.append(e)
        ready.set()
        threading.Event().wait()  # keep the thread, and so the local Ray, alive

    threading.Thread(target=start, name="netlab-ray", daemon=True).start()
    ready.wait()
    if done[0] is not None:
        raise done[0]


class RayHost:
    """Calls to the actor of one run: host(method, *args), as serve.workers.Host."""

    index = 0

    def __init__(self, pool: "RayPool", run_id: str):
        self.pool, self.run_id = pool, run_id

    def __call__(self, method: str, *args, **kw):
        ray = self.pool.ray
        try:
            return pickle.loads(ray.get(self.pool.actor(self.run_id).invoke.remote(
                method, packed(*args, **kw))))
        except ray.exceptions.RayTaskError as e:  # the call raised: its own error, not the
            raise e.cause from None               # remote traceback Ray wraps it in
        except ray.exceptions.RayError as e:      # the actor died, the cluster is unreachable
            self.pool.lost(self.run_id)
            raise WorkerGone(f"the Ray actor training this run stopped ({type(e).__name__})"
                             ) from None

    def release(self) -> None:
        self.pool.release(self.run_id)


class RayPool(RemotePool):
    """Where runs train on a Ray cluster: one detached, named actor per run."""

    def __init__(self, address: str, store_location: str | None, caps: Caps | None = None):
        self.ray = ray = _ray()
        if not ray.is_initialized():
            _init_in_a_lasting_thread(ray, None if address == "local" else address)
        self.store_location, self.caps = store_location, caps or Caps()
        # max_concurrency: the page's calls are answered while the run's thread trains
        self._actor_class = ray.remote(max_concurrency=16)(WorkerHost)
        self._options = dict(namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
        self._actors: dict[str, object] = {}

    def actor(self, run_id: str):
        """The run's actor: known here, found by name (another replica made it), or new."""
        handle = self._actors.get(run_id)
        if handle is None:
            handle = self._actors[run_id] = self._actor_class.options(
                name=f"run-{run_id}", **self._options).remote(self.store_location, self.caps,
                                             exit_when_empty=True)
        return handle

    def host(self, run_id: str) -> RayHost:
        return RayHost(self, run_id)

    def lost(self, run_id: str) -> None:
        self._actors.pop(run_id, None)

    def release(self, run_id: str) -> None:
        """The run left its actor (dropped, or never there): the actor ends, unless it holds a
        run still (a Reset's new one)."""
        handle = self._actors.pop(run_id, None)
        if handle is None:
            return
        try:
            if not pickle.loads(self.ray.get(handle.invoke.remote("runs", packed()))):
                self.ray.kill(handle)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def pids(self) -> list[int]:
        return []

    def cores(self) -> int:
        """The cluster's CPUs: each run's actor is a process, and more of them training than
        cores leaves each page's calls waiting on a starved process (measured on 2 cores: ten
        runs training in ten actors, the pages' refreshes stalled for the whole 10 s window).
        RunRegistry.check_start trains at most this many at once."""
        return int(self.ray.cluster_resources().get("CPU", 1))

    def shutdown(self) -> None:
        """Nothing: the actors outlive this replica (another one, or this one restarted,
        reaches them by name); their own reapers let go of runs nobody looks at."""
