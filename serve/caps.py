"""The limits of a shared server (NETLAB_* settings) and the errors that say one was hit.

Caps. `max_runs` bounds the runs the server keeps (started or not) and `max_runs_per_owner` the
runs one browser keeps: a browser's new run replaces its own least recently seen run that is
not training; a full server forgets runs unseen for longer than `grace_s` (least recently seen
first, never a training one) and otherwise answers CapError. The per-run limits (parameters,
one step's work and memory, steps/s, twins) keep one user's run from freezing everyone else's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine import ExperimentSpec, SpecError, Trainer

from . import settings


def _env(name: str):
    """The setting's value, read when a Caps is made (so a test may set the environment)."""
    return field(default_factory=lambda: settings.get(name))


@dataclass(frozen=True)
class Caps:
    """Limits for a shared server, read from the environment (NETLAB_*, serve/settings.py)."""

    max_trainers: int = _env("NETLAB_MAX_TRAINERS")
    max_params: int = _env("NETLAB_MAX_PARAMS")
    max_steps: int = _env("NETLAB_MAX_STEPS")
    max_steps_per_s: float = _env("NETLAB_MAX_STEPS_PER_S")
    train_slots: int = _env("NETLAB_TRAIN_SLOTS")
    shared_duty: float = _env("NETLAB_SHARED_DUTY")
    grace_s: float = _env("NETLAB_GRACE_S")
    drop_after_s: float = _env("NETLAB_DROP_AFTER_S")
    # a stored run unseen this long that is not training leaves memory (the store keeps it)
    unload_after_s: float = _env("NETLAB_UNLOAD_AFTER_S")
    max_runs: int = _env("NETLAB_MAX_RUNS")
    max_runs_per_owner: int = _env("NETLAB_MAX_RUNS_PER_USER")
    # runs one browser may train at once (0: no limit): a class shares the cores, and a student
    # with a second tab training would take two shares
    max_running_per_user: int = _env("NETLAB_MAX_RUNNING_PER_USER")
    # variants trained beside a run, in step with it (side by side: RNN vs LSTM vs GRU); they
    # share the run's turn in the training slot, so they slow the run, not the others
    max_twins: int = _env("NETLAB_MAX_TWINS")
    # slot time a run may use per turn before the next run's turn (0: one step a turn); a
    # steps/s cap (max_steps_per_s) always paces single steps
    quantum_s: float = _env("NETLAB_TRAIN_QUANTUM_S")
    # batch x parameters of one step: a turn is at least one step, so one step must stay short
    # for the fair share to mean anything (spiral n=20000 in one batch on a 1.97M-parameter net
    # took 1.7-3.2 s a step and froze every other run that long; the digits net of the issue,
    # 1797 x 1.9M = 3.4e9, takes ~0.1 s)
    max_step_work: float = _env("NETLAB_MAX_STEP_WORK")
    # batch x activation values per example of one step: its memory (a 1,024-filter convolution
    # on 32x32 images has 14,340 weights but leaves ~2M values per example behind)
    max_step_activations: float = _env("NETLAB_MAX_STEP_ACTIVATIONS")
    # a stored run's checkpoint at most this often while it trains (and at Pause and its end)
    checkpoint_s: float = _env("NETLAB_CHECKPOINT_S")

    def check_spec(self, spec: ExperimentSpec) -> None:
        if spec.training.steps > self.max_steps:
            raise SpecError(f"training.steps={spec.training.steps:,} is more than this server "
                            f"allows ({self.max_steps:,}); lower it")

    def check_step_work(self, trainer: Trainer, beside: list[Trainer] = ()) -> None:
        """One step's compute (batch x the larger of parameters and multiply-adds per example:
        a convolution reuses each weight at every position) and memory (batch x activation
        values per example) within the server's limits. `beside`: variants stepped in the same
        turn (side by side), whose work counts too."""
        total = sum(t.batches.size * max(t.cost["params"], t.cost["macs"])
                    for t in [trainer, *beside])
        if beside and total > self.max_step_work:
            raise SpecError(f"this run and the {len(beside)} variants beside it would train "
                            f"{total:.2g} example x weights in one turn, more than this server "
                            f"allows ({self.max_step_work:.0e}); turn side by side off, or use "
                            "a smaller model or batch")
        params, macs = trainer.cost["params"], trainer.cost["macs"]
        batch, work = trainer.batches.size, max(params, macs)
        if batch * work > self.max_step_work:
            most = max(1, int(self.max_step_work // max(work, 1)))
            what = f"{params:,} parameters" if params >= macs else \
                f"{macs:,} multiply-adds each"
            raise SpecError(f"one step trains {batch:,} examples through {what}, more than this "
                            f"server allows in one step ({self.max_step_work:.0e}) so that runs "
                            f"can share it; use a batch of at most {most:,} or a smaller model")
        values = trainer.cost["activations"]
        if batch * values > self.max_step_activations:
            most = max(1, int(self.max_step_activations // max(values, 1)))
            raise SpecError(f"one step of {batch:,} examples keeps {batch * values:,} values in "
                            f"memory ({values:,} per example), more than this server allows "
                            f"({self.max_step_activations:.0e}); use a batch of at most "
                            f"{most:,}, fewer filters or smaller images")


class CapError(Exception):
    """A server limit was hit; the message says which and what to do."""


class RunDropped(RuntimeError):
    """The run was forgotten by the server (unseen too long, or replaced); start a new one."""
