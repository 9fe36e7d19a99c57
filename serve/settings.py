"""Every NETLAB_* setting of a server in one table, each parsed and checked the same way.

A typo in a value used to fall back to the default without a word (NETLAB_MAX_TRAINERS=eight
ran with 8; NETLAB_WORKERS=two trained in the web process). Now `get(name)` raises SettingError
naming the setting, the value and what is allowed, and `problems()` lists every bad value at
once: app.py calls it on the server's first page run and stops the server with one line per
problem (serve is the only place that knows them all; the engine reads its own few through
engine.core.inputs.env_int, which is as strict, and they are listed here too so one check sees
them all). An unknown NETLAB_* name (a typo in the name) is reported, with the setting it most
likely meant, but does not stop the server.

Adding a setting is one entry in SETTINGS.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Callable


class SettingError(ValueError):
    """A NETLAB_* value the server cannot use; the message names it and what is allowed."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    parse: Callable[[str], object]  # text -> value; ValueError(what is allowed) when it is not
    meaning: str


def number(kind: type, low: float, high: float | None = None, above: bool = False):
    """A parser for a whole number (kind=int) or any number, at least `low` (more than it, with
    `above`) and at most `high`."""
    what = "a whole number" if kind is int else "a number"
    bound = f"> {low:g}" if above else f">= {low:g}"
    allowed = f"{what} {bound}" + (f" and <= {high:g}" if high is not None else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {allowed}") from None
        if value != value or (value <= low if above else value < low) or \
                (high is not None and value > high):
            raise ValueError(f"expected {allowed}")
        return value
    return parse


def workers(text: str):
    """'auto' (one worker per core) or a whole number of worker processes (0: train in the web
    process)."""
    if text.lower() == "auto":
        return "auto"
    try:
        return number(int, 0)(text)
    except ValueError:
        raise ValueError("expected 'auto' or a whole number >= 0") from None


def text(value: str) -> str:
    return value


SETTINGS = {s.name: s for s in [
    # where runs train and are kept
    Setting("NETLAB_WORKERS", "auto", workers,
            "worker processes that train runs ('auto': one per core; 0: in the web process)"),
    Setting("NETLAB_RAY_ADDRESS", "", text, "a Ray cluster to train runs on ('auto', 'local', "
            "or an address; unset: local worker processes)"),
    Setting("NETLAB_HOME", "", text, "the folder of the run store (default ~/.netlab)"),
    Setting("NETLAB_STORE", "", text, "the run store: a path, sqlite:/// or postgresql:// URL"),
    Setting("NETLAB_TORCH_THREADS", 1, number(int, 1), "torch threads per training process"),
    # what one run may use
    Setting("NETLAB_MAX_PARAMS", 2_000_000, number(int, 1), "parameters one model may have"),
    Setting("NETLAB_MAX_STEPS", 100_000, number(int, 1), "steps one run may train"),
    Setting("NETLAB_MAX_STEPS_PER_S", 0.0, number(float, 0),
            "steps a second one run may take (0: no cap)"),
    Setting("NETLAB_MAX_STEP_WORK", 5e9, number(float, 0, above=True),
            "batch x weights (or multiply-adds) of one step"),
    Setting("NETLAB_MAX_STEP_ACTIVATIONS", 5e7, number(float, 0, above=True),
            "batch x activation values per example of one step (its memory)"),
    Setting("NETLAB_MAX_TWINS", 3, number(int, 0), "variants trained beside one run"),
    Setting("NETLAB_CHECKPOINT_S", 30.0, number(float, 0, above=True),
            "seconds between a stored run's checkpoints while it trains"),
    # how many, and how runs share the server
    Setting("NETLAB_MAX_TRAINERS", 8, number(int, 1), "networks the server trains at once"),
    Setting("NETLAB_MAX_RUNS", 64, number(int, 1), "runs the server keeps, started or not"),
    Setting("NETLAB_MAX_RUNS_PER_USER", 3, number(int, 1), "runs one browser keeps"),
    Setting("NETLAB_MAX_RUNNING_PER_USER", 1, number(int, 0),
            "runs one browser trains at once (0: no limit)"),
    Setting("NETLAB_TRAIN_SLOTS", 1, number(int, 1), "training threads stepping at once"),
    Setting("NETLAB_SHARED_DUTY", 0.5, number(float, 0, 1, above=True),
            "the share of a turn spent training while several runs share the slot"),
    Setting("NETLAB_TRAIN_QUANTUM_S", 0.01, number(float, 0), "slot time of one turn"),
    Setting("NETLAB_GRACE_S", 20.0, number(float, 0, above=True),
            "seconds unseen before a run pauses"),
    Setting("NETLAB_DROP_AFTER_S", 3600.0, number(float, 0, above=True),
            "seconds unseen before a paused run is forgotten"),
    Setting("NETLAB_UNLOAD_AFTER_S", 120.0, number(float, 0, above=True),
            "seconds unseen before a stored run that is not training leaves memory (its "
            "link brings it back from the store)"),
    # the Runs page's sweeps
    Setting("NETLAB_MAX_SWEEP", 32, number(int, 1), "variants one sweep may train"),
    Setting("NETLAB_MAX_SWEEP_STEPS", 100_000, number(int, 1), "steps of one sweep's variant"),
    Setting("NETLAB_SWEEPS_AT_ONCE", 1, number(int, 1), "sweeps the server trains at once"),
    # uploads
    Setting("NETLAB_MAX_UPLOAD_MB", 5, number(int, 1), "megabytes of one uploaded file"),
    Setting("NETLAB_UPLOAD_DISK_MB", 200, number(int, 1), "megabytes all uploads may take"),
    Setting("NETLAB_MAX_CSV_MB", 50, number(int, 1), "megabytes of a CSV the engine reads"),
]}
# names the test suite and the benchmarks use; never a server's setting, never reported
NOT_SETTINGS = ("NETLAB_TEST_", "NETLAB_CHROMIUM", "NETLAB_SHOTS")


def get(name: str, environ=None):
    """The setting's value from the environment (its default when unset or blank); SettingError
    when the value is not allowed."""
    setting = SETTINGS[name]
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return setting.default
    try:
        return setting.parse(raw)
    except ValueError as e:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise SettingError(f"{name}={shown!r} is not allowed ({setting.meaning}): {e}; "
                           f"unset it for the default ({setting.default!r})") from None


def problems(environ=None) -> list[str]:
    """One line for each NETLAB_* value the server cannot use (empty: all good)."""
    environ = os.environ if environ is None else environ
    found = []
    for name in SETTINGS:
        try:
            get(name, environ)
        except SettingError as e:
            found.append(str(e))
    return found


def unknown(environ=None) -> list[str]:
    """One line for each NETLAB_* name that is no setting, with the one it most likely meant."""
    environ = os.environ if environ is None else environ
    lines = []
    for name in sorted(environ):
        if not name.startswith("NETLAB_") or name in SETTINGS or name.startswith(NOT_SETTINGS):
            continue
        near = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.8)
        lines.append(f"{name} is not a Netlab setting, so it changes nothing"
                     + (f" (did you mean {near[0]}?)" if near else ""))
    return lines
