"""The learning-rate range test (Leslie Smith, 2015; fastai's lr_find): train the experiment with
a rate that grows exponentially every step, record each batch's loss, and stop once the loss has
blown up. The loss against the rate shows three regions: too small (flat), good (falling), too
large (rising). The suggestion is a tenth of the rate at the lowest (smoothed) loss: measured
on the bundled presets it moved least with the test's length, while the rate of the steepest
fall (also given) jumped by 10x between 100 and 300 steps. Over 500 steps (the default) it
lands within a factor of 3 of the rates the presets were tuned to (the circle net's SGD
0.1-0.2, Adam on spiral 0.02-0.04, the digits CNN 0.003, the sine RNN 0.01). Where the loss
barely fell (by less than a fifth), nothing is suggested: the test was too short to show this
net's good rates.

It runs as a callback on the ordinary Trainer (the same model, data, optimizer and random
streams as a real run of the spec), with the schedule set to constant so the callback alone
sets the rate.
"""
from __future__ import annotations

import math

from ..core.errors import SpecError
from ..core.spec import ExperimentSpec, load_spec
from ..train.callbacks import Callback

SMOOTHING = 0.9     # exponential moving average of the loss, bias-corrected
STOP_FACTOR = 4.0   # stop once the smoothed loss is this many times its lowest
SKIP = 0.1          # the first tenth of the points is too noisy to judge a slope from
MIN_DROP = 0.8      # suggest a rate only where the smoothed loss fell below this share of its start


class LrRange(Callback):
    """Sets the rate of step k to low * (high / low)^(k / (steps - 1)) before the step, records
    (rate, batch loss) after it, and ends the run once the smoothed loss has blown up."""
    order, name = 5, "lr_range"
    state = ("lrs", "losses", "smoothed", "_avg")

    def __init__(self, low: float, high: float, steps: int):
        self.low, self.high, self.steps = low, high, steps
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._avg = 0.0

    def rate(self, k: int) -> float:
        return self.low * (self.high / self.low) ** (k / max(1, self.steps - 1))

    def on_step_start(self, trainer):
        lr = self.rate(trainer.step_count)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr

    def on_step_end(self, trainer):
        loss = float(trainer.batch_loss) if trainer.batch_loss is not None else math.nan
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.losses.append(loss)
        if not math.isfinite(loss):
            trainer.stop("lr_range")
            return
        self._avg = SMOOTHING * self._avg + (1 - SMOOTHING) * loss
        smooth = self._avg / (1 - SMOOTHING ** len(self.losses))
        self.smoothed.append(smooth)
        if smooth > STOP_FACTOR * min(self.smoothed):
            trainer.stop("lr_range")


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """`steepest`: the rate where the smoothed loss falls fastest per factor of rate, before
    its lowest point, each slope taken across a window of a twentieth of the points on either
    side (a batch's noise makes neighbouring points useless for a slope); `min_over_10`: a
    tenth of the rate at the lowest smoothed loss. None where the loss never fell."""
    n = min(len(lrs), len(smoothed))
    if n < 5:
        return {"steepest": None, "min_over_10": None}
    lowest = min(range(n), key=smoothed.__getitem__)
    w = max(1, n // 20)
    slopes = [((smoothed[k + w] - smoothed[k - w]) / math.log(lrs[k + w] / lrs[k - w]), k)
              for k in range(max(w, int(SKIP * n)), min(lowest, n - 1 - w) + 1)]
    falling = [(s, k) for s, k in slopes if s < 0]
    return {"steepest": lrs[min(falling)[1]] if falling else None,
            "min_over_10": lrs[lowest] / 10 if lowest > 0 else None}


def lr_range_test(spec, low: float = 1e-5, high: float = 10.0, steps: int = 500) -> dict:
    """The range test of `spec`: {"lr", "loss", "smoothed", "suggested" (min_over_10, or None
    where the loss fell by less than a fifth), "steepest", "min_over_10", "drop" (lowest
    smoothed loss / first), "stopped_at", "optimizer"}."""
    spec = load_spec(spec)
    if not (0 < low < high) or not math.isfinite(high):
        raise SpecError(f"the rates must satisfy 0 < low < high; got low={low:g}, high={high:g}")
    if not isinstance(steps, int) or not 10 <= steps <= 10_000:
        raise SpecError(f"steps={steps!r} is not allowed: expected an integer from 10 to 10,000")
    from ..train.trainer import Trainer

    probe = ExperimentSpec.from_dict({
        **spec.to_dict(), "schedule": "constant",
        "training": {**spec.training.to_dict(), "steps": steps, "early_stopping": None,
                     "log_every": steps, "eval_every": steps}})
    cb = LrRange(low, high, steps)
    trainer = Trainer(probe, callbacks=[cb])
    trainer.run()
    found = suggest(cb.lrs, cb.smoothed)
    finite = [v for v in cb.smoothed if math.isfinite(v)]
    drop = min(finite) / finite[0] if finite and finite[0] > 0 else None
    return {"lr": cb.lrs, "loss": cb.losses, "smoothed": cb.smoothed,
            "suggested": found["min_over_10"] if drop is not None and drop < MIN_DROP
            else None, "steepest": found["steepest"], "min_over_10": found["min_over_10"],
            "drop": drop,
            "stopped_at": cb.lrs[-1] if trainer.stopped != "completed" else None,
            "optimizer": spec.optimizer.name}
