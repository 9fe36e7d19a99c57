"""The optimizer lab's figures on this machine's CPU (one torch thread), as one JSON object.

    PYTHONPATH=. python benchmarks/optimizer_lab.py [--quick]

- rosenbrock: steps to reach f < 1e-6 on Rosenbrock from (-1.5, 2) for SGD, SGD with momentum
  0.9 and Adam, each at its best rate on a grid (the fewest steps; a rate that diverges or does
  not get there within the budget is not best), with the seconds the walk took;
- quadratic: GD on 1/2 (x^2 + 100 y^2) from (1, 1) at rates around 2/L = 0.02: f after 500
  steps (the closed form says converge below 0.02, diverge above);
- batch_sizes: the TensorFlow Playground circle net at 5 epochs with full-batch, mini-batch and
  single-example updates (engine/lab/batch_sizes.py);
- lr_range: the range test's suggestion for that net with SGD and with Adam.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from engine import ExperimentSpec
from engine.lab.batch_sizes import batch_size_experiment
from engine.lab.lr_range import lr_range_test
from engine.lab.surfaces import steps_to, walk
from engine.presets import load_preset

TARGET = 1e-6
OPTIMIZERS = {"sgd": {"name": "sgd"}, "momentum": {"name": "sgd", "momentum": 0.9},
              "adam": {"name": "adam"}}
GRID = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1]


def rosenbrock(budget: int, grid: list[float]) -> dict:
    out = {}
    for label, opt in OPTIMIZERS.items():
        tried = []
        for lr in grid:
            t0 = time.perf_counter()
            r = walk("rosenbrock", {**opt, "lr": lr}, budget, start=(-1.5, 2.0), until=TARGET)
            tried.append({"lr": lr, "steps": steps_to(r, TARGET), "stopped": r["stopped"],
                          "seconds": round(time.perf_counter() - t0, 3)})
        reached = [t for t in tried if t["steps"] is not None]
        best = min(reached, key=lambda t: t["steps"]) if reached else None
        out[label] = {"best": best, "tried": tried}
    return out


def quadratic(steps: int) -> list[dict]:
    rows = []
    for lr in (0.005, 0.01, 0.019, 0.0199, 0.0201, 0.021, 0.03):
        r = walk("quadratic", {"name": "sgd", "lr": lr}, steps, start=(1.0, 1.0))
        rows.append({"lr": lr, "f_end": r["trajectory"][-1][2], "stopped": r["stopped"]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small budgets: a smoke test")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    budget, grid, epochs = (200, GRID[::5], 1) if args.quick else (20_000, GRID, 5)
    circle = ExperimentSpec.from_dict(load_preset("tfp_circle")["config"])
    t0 = time.perf_counter()
    result = {
        "benchmark": "optimizer_lab", "quick": args.quick, "torch": torch.__version__,
        "rosenbrock": {"start": [-1.5, 2.0], "target": TARGET, "budget": budget,
                       **rosenbrock(budget, grid)},
        "quadratic": {"kappa": 100, "stable_below": 0.02, "steps": 500,
                      "runs": quadratic(50 if args.quick else 500)},
        "batch_sizes": {"preset": "tfp_circle", "epochs": epochs,
                        "runs": batch_size_experiment(circle, epochs)},
        "lr_range": {opt: {k: v for k, v in lr_range_test(
            circle.with_changes({"optimizer": {"name": opt, "lr": 0.01}}),
            steps=20 if args.quick else 500).items() if k in ("suggested", "min_over_10",
                                                               "stopped_at")}
            for opt in ("sgd", "adam")},
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
