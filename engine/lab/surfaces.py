"""2-D loss surfaces with known minima, and any registered optimizer and schedule walking them.

A surface is one entry of SURFACES: factory(xy, **params) -> f at the point xy (a tensor of two
numbers); the gradient is autograd's. Tags give what the page draws and the tests check:
`minima` (the points where f is lowest; a function of the parameters where they move them),
`start` (the default start), `window` ((x_lo, x_hi), (y_lo, y_hi)), `rates` (learning rates
that show each optimizer well from the start: the page's first walkers) and `noisy` (the
gradient is the bowl's plus noise, like a mini-batch's).

`walk` runs the optimizer exactly as training does: torch's own optimizer and scheduler classes
from the registries, on one float64 parameter of two numbers. `closed_form` gives, where one
exists, the facts the page shows next to it (the stable learning rates of gradient descent and
heavy-ball momentum on the quadratic bowl).
"""
from __future__ import annotations

import math

import torch

from ..core.errors import SpecError
from ..core.registry import OPTIMIZERS, SCHEDULES, Param, Registry
from ..core.seeding import generator as make_generator
from ..train.curvature import gd_limits

SURFACES = Registry("surface")
MAX_STEPS = 100_000
FAR = 1e6  # a walk this far from the origin (or with a non-finite f) has diverged


def _xy(xy):
    return xy[0], xy[1]


@SURFACES.register("quadratic", "A bowl, 1/2 (x^2 + kappa y^2): kappa times steeper across y "
                   "than along x. Its Hessian's eigenvalues are 1 and kappa, so one learning "
                   "rate must suit both.",
                   (Param("kappa", 100.0, "how much steeper the bowl is along y (the condition "
                          "number when kappa >= 1)", low=0.01, high=1e4, log=True),),
                   minima=lambda p: [(0.0, 0.0)], start=(1.0, 1.0),
                   window=((-1.5, 1.5), (-1.5, 1.5)),
                   rates={"sgd": 0.019, "momentum": 0.005, "adam": 0.05})
def quadratic(xy, kappa):
    x, y = _xy(xy)
    return 0.5 * (x ** 2 + kappa * y ** 2)


@SURFACES.register("rosenbrock", "(1 - x)^2 + 100 (y - x^2)^2: a long, curved, flat-bottomed "
                   "valley; finding it is easy, following it to (1, 1) is slow.",
                   minima=lambda p: [(1.0, 1.0)], start=(-1.5, 2.0),
                   window=((-2.0, 2.0), (-1.0, 3.0)),
                   rates={"sgd": 0.001, "momentum": 0.0005, "adam": 0.05})
def rosenbrock(xy):
    x, y = _xy(xy)
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


@SURFACES.register("beale", "(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2: "
                   "flat plateaus and sharp ridges around one minimum at (3, 0.5).",
                   minima=lambda p: [(3.0, 0.5)], start=(1.0, 1.5),
                   window=((-4.5, 4.5), (-4.5, 4.5)),
                   rates={"sgd": 0.005, "momentum": 0.001, "adam": 0.05})
def beale(xy):
    x, y = _xy(xy)
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2
            + (2.625 - x + x * y ** 3) ** 2)


@SURFACES.register("saddle", "x^2 - y^2: down along y, up along x. The gradient at (0, 0) is "
                   "zero, yet it is no minimum: gradient descent started exactly on y = 0 "
                   "walks into it and stays.",
                   minima=lambda p: [], start=(1.0, 0.0), window=((-1.5, 1.5), (-1.5, 1.5)),
                   rates={"sgd": 0.05, "momentum": 0.02, "adam": 0.05})
def saddle(xy):
    x, y = _xy(xy)
    return x ** 2 - y ** 2


@SURFACES.register("himmelblau", "(x^2 + y - 11)^2 + (x + y^2 - 7)^2: four minima of equal "
                   "height; which one a walk ends in depends on where it starts and how it "
                   "moves.",
                   minima=lambda p: [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186),
                                     (3.584428, -1.848127)], start=(0.0, 0.0),
                   window=((-5.0, 5.0), (-5.0, 5.0)),
                   rates={"sgd": 0.005, "momentum": 0.002, "adam": 0.1})
def himmelblau(xy):
    x, y = _xy(xy)
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


@SURFACES.register("noisy_bowl", "The bowl 1/2 (x^2 + y^2) seen through mini-batches: each "
                   "step's gradient is the true one plus noise whose spread shrinks as "
                   "1/sqrt(batch).",
                   (Param("noise", 1.0, "spread of one example's gradient noise", low=0.0,
                          high=100.0),
                    Param("batch", 1, "examples per step: the noise's spread is noise / "
                          "sqrt(batch)", low=1, high=10**6, log=True)),
                   minima=lambda p: [(0.0, 0.0)], start=(1.0, 1.0),
                   window=((-1.5, 1.5), (-1.5, 1.5)), noisy=True,
                   rates={"sgd": 0.1, "momentum": 0.02, "adam": 0.05})
def noisy_bowl(xy, noise, batch):
    x, y = _xy(xy)
    return 0.5 * (x ** 2 + y ** 2)


def _check_params(entry, given: dict, where: str) -> dict:
    for key in given:
        if entry.param(key) is None:
            allowed = ", ".join(p.name for p in entry.params) or "none"
            raise SpecError(f"{where}.{key} is not a parameter of {entry.key}; allowed: {allowed}")
    return {k: entry.param(k).check(v, f"{where}.{k}") for k, v in entry.resolve(given).items()}


def surface_values(name: str, params: dict, xs, ys) -> torch.Tensor:
    """f on a grid (for the contour plot): xs along x, ys along y -> (len(ys), len(xs))."""
    entry = SURFACES[name]
    p = _check_params(entry, params, name)
    gx, gy = torch.meshgrid(torch.as_tensor(xs, dtype=torch.float64),
                            torch.as_tensor(ys, dtype=torch.float64), indexing="xy")
    with torch.no_grad():
        return entry.factory(torch.stack([gx, gy]), **p)


# One piece on purpose: one optimizer loop (check, step, record, stop), read top to bottom.
def walk(name: str, optimizer: dict, steps: int, start=None, params: dict | None = None,
         schedule: dict | None = None, seed: int = 0, until: float | None = None) -> dict:
    """Run `optimizer` ({"name", **its parameters}) with `schedule` from `start` for `steps`
    steps on surface `name`; stop early where it diverges (or, with `until`, once f is below
    it). Returns the trajectory as [x, y, f] per point (the start first), the learning rate
    and step length of each step, and why it stopped ("completed", "diverged", "reached")."""
    entry = SURFACES[name]
    p = _check_params(entry, params or {}, name)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise SpecError(f"steps={steps!r} is not allowed: expected an integer from 1 to "
                        f"{MAX_STEPS:,}")
    start = entry.tags["start"] if start is None else start
    if len(start) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) and abs(v) <= FAR for v in start):
        raise SpecError(f"start={list(start)!r} is not allowed: expected two finite numbers, "
                        f"e.g. {list(entry.tags['start'])}")
    optimizer = dict(optimizer)
    opt_entry = OPTIMIZERS[optimizer.pop("name", OPTIMIZERS.default())]
    opt_params = _check_params(opt_entry, optimizer, "optimizer")
    schedule = dict(schedule or {"name": "constant"})
    sched_entry = SCHEDULES[schedule.pop("name", "constant")]
    if sched_entry.tags.get("on_metric"):
        raise SpecError(f"schedule {sched_entry.key} follows a validation loss, which a surface "
                        "has not; pick another")
    sched_params = _check_params(sched_entry, schedule, "schedule")

    xy = torch.nn.Parameter(torch.tensor([float(v) for v in start], dtype=torch.float64))
    opt = opt_entry.build([xy], **opt_params)
    scheduler = sched_entry.build(opt, steps, **sched_params)
    noise = (p["noise"] / math.sqrt(p["batch"])) if entry.tags.get("noisy") else 0.0
    gen = make_generator(seed, "noise")

    def f_of(point):  # f with its graph: the next step's backward reuses it
        return entry.factory(point, **p)

    loss = f_of(xy)
    path, lrs, lengths = [[*xy.detach().tolist(), loss.item()]], [], []
    stopped = "completed"
    for step in range(steps):
        if until is not None and path[-1][2] < until:
            stopped = "reached"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if noise:  # a mini-batch's gradient: the true one plus zero-mean noise
            xy.grad.add_(torch.randn(2, generator=gen, dtype=torch.float64) * noise)
        lr = opt.param_groups[0]["lr"]
        before = path[-1]
        opt.step()
        if step < steps - 1:
            scheduler.step()
        loss = f_of(xy)
        x, y = xy.detach().tolist()
        f = loss.item()
        if not (math.isfinite(f) and math.isfinite(x) and math.isfinite(y)
                and max(abs(x), abs(y)) <= FAR):
            stopped = "diverged"
            break
        path.append([x, y, f])
        lrs.append(lr)
        lengths.append(math.hypot(x - before[0], y - before[1]))
    return {"surface": name, "params": p, "optimizer": {"name": opt_entry.key, **opt_params},
            "schedule": {"name": sched_entry.key, **sched_params}, "start": list(start),
            "trajectory": path, "lr": lrs, "step_length": lengths, "stopped": stopped,
            "minima": [list(m) for m in entry.tags["minima"](p)]}


def steps_to(result: dict, below: float) -> int | None:
    """The first step at which f is under `below`, or None."""
    return next((k for k, (_, _, f) in enumerate(result["trajectory"]) if f < below), None)


# ----------------------------------------------------------------------------- closed forms

def closed_form(name: str, params: dict | None, optimizer: dict) -> dict | None:
    """What theory says about this walk, where it says something exact: on the quadratic,
    the rate limits for SGD with or without momentum (adaptive optimizers rescale every
    coordinate, so no single limit applies to them)."""
    entry = SURFACES[name]
    p = _check_params(entry, params or {}, name)
    if name != "quadratic":
        return None
    kappa = p["kappa"]
    L, mu = max(1.0, kappa), min(1.0, kappa)
    facts = {"hessian_eigenvalues": [mu, L], "condition_number": L / mu,
             "best_gd_lr": 2 / (L + mu), "best_gd_rate": (L - mu) / (L + mu)}
    opt = dict(optimizer)
    if opt.get("name", OPTIMIZERS.default()) == "sgd":
        # weight decay adds wd x to the gradient: every curvature grows by wd
        curvature = L + float(opt.get("weight_decay", 0.0) or 0.0)
        facts.update(gd_limits(curvature, opt.get("momentum", 0.0),
                               bool(opt.get("nesterov", False))))
    return facts
