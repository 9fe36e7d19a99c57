"""The sequence lab's figures on this machine's CPU (one torch thread), as one JSON object: the
adding problem for each cell type, sequence length and seed, with the same budget.

    PYTHONPATH=. python benchmarks/sequence_lab.py [--lengths 10,30,60] [--seeds 0-2] [--quick]

Per run: the final validation MSE (always guessing 1 scores 1/6 = 0.167), dL/dh_t at the first
step over the last (the median over the last logged rows, as the health check reads it), the
verdict, and the training seconds.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from engine import ExperimentSpec, Trainer
from engine.train.evidence import time_ratios_of

CELLS = ("rnn", "lstm", "gru")


def run(cell: str, length: int, seed: int, steps: int) -> dict:
    spec = ExperimentSpec.from_dict({
        "seed": seed, "data": {"name": "adding", "length": length, "normalize": "none"},
        "model": {"layers": [{"type": cell, "units": 32}, {"type": "last_step"}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"steps": steps, "batch_size": 64, "log_every": 20}})
    t = Trainer(spec).run()
    rows = t.history.rows
    ratio = next(iter(time_ratios_of(rows).values()))
    return {"cell": cell, "length": length, "seed": seed, "steps": t.step_count,
            "val_mse": t.evaluate("val")["loss"], "time_grad_ratio": ratio,
            "status": rows[-1]["health"]["status"], "train_seconds": round(t.seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="10,30,60")
    ap.add_argument("--seeds", default="0-2", help="a range a-b or a comma list")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="20 steps, length 10, seed 0")
    args = ap.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in args.seeds.split(",")]
    lengths = [int(v) for v in args.lengths.split(",")]
    steps = args.steps
    if args.quick:
        lengths, seeds, steps = [10], [0], 20
    torch.set_num_threads(1)
    runs = [run(cell, length, seed, steps) for length in lengths for cell in CELLS
            for seed in seeds]
    table = {}
    for r in runs:
        cell = table.setdefault(f"length {r['length']}", {}).setdefault(r["cell"], [])
        cell.append(round(r["val_mse"], 4))
    json.dump({"benchmark": "sequence_lab", "task": "adding", "units": 32, "steps": steps,
               "batch_size": 64, "optimizer": "adam 0.01", "torch": torch.__version__,
               "threads": 1, "quick": args.quick, "val_mse_by_length_and_cell": table,
               "runs": runs}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
