"""What one Netlab server holds for every session and page: the live runs, the run store and
the uploaded files (each a st.cache_resource, so every page of every session shares one)."""
from __future__ import annotations

import threading
import traceback

import streamlit as st

from engine import SpecError
from engine.core.inputs import short
from engine.runs.store import RunStore
from serve.caps import Caps
from serve.ray_runs import RayPool, ray_address
from serve.registry import RunRegistry
from serve.settings import get as setting
from serve.uploads import UploadStore
from serve.worker_host import worker_count
from serve.workers import WorkerPool
from ui import state as S


@st.cache_resource
def run_store() -> RunStore | None:
    """The run store in NETLAB_HOME (engine/runs/store.py), or None where it cannot be opened (an
    unwritable home): runs then live in memory only, as before the store, and the Runs page
    says why."""
    try:
        return RunStore()
    except SpecError:
        traceback.print_exc()
        return None


def store_problem() -> str | None:
    """Why runs are not being kept (None: they are)."""
    if run_store() is not None:
        return None
    try:
        RunStore()
    except SpecError as e:
        return str(e)
    return None


@st.cache_resource
def upload_store() -> UploadStore:
    return UploadStore()


@st.cache_resource
def run_registry() -> RunRegistry:
    """The server's runs. They train in NETLAB_WORKERS worker processes (default: one per core;
    serve/workers.py), on Ray actors when NETLAB_RAY_ADDRESS is set (serve/ray_runs.py), or with
    NETLAB_WORKERS=0 in threads of this process."""
    store = run_store()
    caps = Caps()
    workers, problem = _workers(store, caps)
    runs = RunRegistry(caps, store=store, workers=workers)
    runs.problem = problem
    # a forgotten run takes its uploaded file with it (unless another run still reads it)
    runs.on_drop.append(lambda run: upload_store().release(S.upload_of(run.spec),
                                                           paths_in_use(runs)))
    return runs


def _workers(store: RunStore | None, caps: Caps) -> tuple:
    """(where runs train, why not where the server was told to, or None)."""
    location = store.location if store is not None else None
    address, problem = ray_address(), None
    if address:
        try:
            return RayPool(address, location, caps), None
        except Exception as e:  # noqa: BLE001 - Ray missing or unreachable: said on the page
            traceback.print_exc()
            problem = (f"NETLAB_RAY_ADDRESS={address} is set, but Ray cannot be used "
                       f"({short(str(e), 200)[1:-1]}); runs train in worker processes of this "
                       "server instead.")
    size = worker_count()
    return (WorkerPool(size, location, caps) if size else None), problem


def training_problem() -> str | None:
    """Why runs do not train where the server was told to (None: they do)."""
    return run_registry().problem


def paths_in_use(runs: RunRegistry) -> set[str]:
    return {S.upload_of(r.spec) for r in runs.runs() if S.upload_of(r.spec)}


@st.cache_resource
def sweep_slots() -> threading.Semaphore:
    """Sweeps the Runs page may train at once on this server (NETLAB_SWEEPS_AT_ONCE, 1): a
    sweep trains outside the slot the live runs share, so a class pressing Run sweep together
    would otherwise take every core."""
    return threading.Semaphore(setting("NETLAB_SWEEPS_AT_ONCE"))
