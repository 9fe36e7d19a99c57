"""What one Netlab server holds for every session and page: the live runs, the run store and
the uploaded files (each a st.cache_resource, so every page of every session shares one)."""
from __future__ import annotations

import os
import threading
import traceback

import streamlit as st

from engine import SpecError
from engine.store import RunStore
from ui import state as S
from ui.runner import RunRegistry
from ui.uploads import UploadStore


@st.cache_resource
def run_store() -> RunStore | None:
    """The run store in NETLAB_HOME (engine/store.py), or None where it cannot be opened (an
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
    runs = RunRegistry(store=run_store())
    # a forgotten run takes its uploaded file with it (unless another run still reads it)
    runs.on_drop.append(lambda run: upload_store().release(S.upload_of(run.spec),
                                                           paths_in_use(runs)))
    return runs


def paths_in_use(runs: RunRegistry) -> set[str]:
    return {S.upload_of(r.spec) for r in runs.runs() if S.upload_of(r.spec)}


@st.cache_resource
def sweep_slots() -> threading.Semaphore:
    """Sweeps the Runs page may train at once on this server (NETLAB_SWEEPS_AT_ONCE, 1): a
    sweep trains outside the slot the live runs share, so a class pressing Run sweep together
    would otherwise take every core."""
    return threading.Semaphore(max(1, int(os.environ.get("NETLAB_SWEEPS_AT_ONCE", "1"))))
