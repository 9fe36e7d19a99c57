"""Full-batch, mini-batch and single-example updates of one experiment, at a matched number of
epochs (every variant sees each training example the same number of times): how many steps an
epoch takes, how noisy each step's loss is, what it costs in time and where it ends.

Each variant is the spec with another batch size and the step count that makes the epochs
match; everything else (model, data, rate, seed) is the spec's own.
"""
from __future__ import annotations

import math
import statistics

from ..core.errors import SpecError
from ..core.spec import load_spec
from ..train.callbacks import Callback

TAIL = 0.2  # the loss noise is measured over the last fifth of each run's steps (at least 3)
MAX_STEPS = 200_000


class BatchLosses(Callback):
    """Every step's batch loss (a float per step: cheap next to the step itself)."""
    name = "batch_losses"

    def __init__(self):
        self.losses: list[float] = []

    def on_step_end(self, trainer):
        if trainer.batch_loss is not None:
            self.losses.append(float(trainer.batch_loss))


def loss_noise(losses: list[float]) -> float | None:
    """How much one step's batch loss jumps from the last, over the run's last steps: the
    spread of successive differences / sqrt(2) (the spread of the losses themselves would count
    the progress too), relative to their mean. None with fewer than 3 losses."""
    tail = losses[-max(3, int(len(losses) * TAIL)):]
    if len(tail) < 3:
        return None
    mean = statistics.fmean(tail)
    diffs = [b - a for a, b in zip(tail, tail[1:])]
    return statistics.pstdev(diffs) / math.sqrt(2) / mean if mean > 0 else None


def variants(n_train: int, batch_size: int) -> list[tuple[str, int]]:
    """(label, batch size): the whole training set, the spec's mini-batch, one example."""
    out = [("full batch", n_train)]
    if 1 < batch_size < n_train:
        out.append(("mini-batch", batch_size))
    if n_train > 1:
        out.append(("single example", 1))
    return out


def batch_size_experiment(spec, epochs: float = 5.0, max_steps: int = MAX_STEPS,
                          max_params: int | None = None) -> list[dict]:
    """Train `spec` once per batch size of `variants` for `epochs` epochs each; one dict per
    variant: label, batch, steps_per_epoch, steps, seconds (training time), train_loss,
    val_loss, val_acc, loss_noise, stopped, and `curve`: (epoch, train loss) at each logged
    row. SpecError where a variant would take more than `max_steps` steps."""
    from ..train.trainer import Trainer

    spec = load_spec(spec)
    if not (isinstance(epochs, (int, float)) and 0 < epochs <= 1000):
        raise SpecError(f"epochs={epochs!r} is not allowed: expected a number above 0 and at "
                        "most 1,000")
    probe = Trainer(spec, max_params=max_params)
    n = len(probe.data.y_train)
    out = []
    for label, batch in variants(n, spec.training.batch_size):
        steps = max(1, math.ceil(epochs * n / batch))
        if steps > max_steps:
            raise SpecError(f"{label} updates would take {steps:,} steps for {epochs:g} epochs "
                            f"of {n:,} examples; use fewer epochs (at most {max_steps:,} steps)")
        variant = spec.with_changes({"training.batch_size": batch, "training.steps": steps,
                                     "training.early_stopping": None,
                                     "training.log_every": max(1, steps // 50),
                                     "training.eval_every": steps})
        cb = BatchLosses()
        t = Trainer(variant, callbacks=[cb], dataset=probe.data).run()
        train, val = t.evaluate("train"), t.evaluate("val")
        out.append({"label": label, "batch": batch, "steps_per_epoch": math.ceil(n / batch),
                    "steps": t.step_count, "seconds": t.seconds, "train_loss": train["loss"],
                    "val_loss": val["loss"], "val_acc": val["acc"],
                    "loss_noise": loss_noise(cb.losses), "stopped": t.stopped,
                    "curve": [(r["epoch"], r["train_loss"]) for r in t.history.rows
                              if r.get("train_loss") is not None]})
    return out
