"""Sweeps batched vs one by one, on this machine's CPU (one torch thread), as one JSON object.

    PYTHONPATH=. python benchmarks/sweep.py [--quick] [--device cpu|cuda]

For N = 1, 8 and 64 variants of a learning-rate x seed grid (the data held fixed, as a sweep
holds it), the wall time of engine.runs.sweep.run trained batched (one stacked model, engine/
batched.py) and one by one (a Trainer each), for two nets:
- tfp: the TensorFlow Playground's size, 2 -> 8 -> 8 -> 2 tanh on the circle, batch 10;
- digits_mlp: 64 -> 128 -> 64 -> 10 ReLU on the 8x8 digits, batch 32.
Each run logs every `log_every` steps (its diagnostics and verdict on each logged step, per
variant, as a Trainer does): logged steps cost the same either way, so the figures are given at
log_every 10 (the default) and 100. Also: the largest relative difference of a final training
loss between the two paths (float rounding: a batched product adds in another order), and for
N <= 8 the same difference between two runs alone whose first weight matrix differs by one ulp
(`one_ulp_rel_diff`): where training is chaotic (a high rate with momentum) any rounding grows,
and the batched path's difference is of that size, not larger.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from engine import ExperimentSpec
from engine.runs.sweep import plan, run

NETS = {
    "tfp": {"data": {"name": "circle", "n": 500}, "model": {"layers": [8, 8],
                                                             "activation": "tanh"},
            "training": {"batch_size": 10}},
    "digits_mlp": {"data": {"name": "digits"}, "model": {"layers": [128, 64],
                                                           "activation": "relu"},
                   "training": {"batch_size": 32}},
}
RATES = [0.003, 0.01, 0.03, 0.1]


def variants(net: str, n: int, steps: int, log_every: int, device: str):
    config = json.loads(json.dumps(NETS[net]))
    config["training"].update(steps=steps, log_every=log_every)
    config.update(device=device, optimizer={"name": "sgd", "lr": 0.03, "momentum": 0.9})
    base = ExperimentSpec.from_dict(config)
    if n == 1:
        return plan(base, seeds=[0])
    seeds = list(range(n // len(RATES))) if n >= len(RATES) else [0]
    return plan(base, {"optimizer.lr": RATES[:n] if n < len(RATES) else RATES}, seeds=seeds)


def measure(net: str, n: int, steps: int, log_every: int, device: str) -> dict:
    out = {}
    finals = {}
    for mode in ("batched", "one_by_one"):
        vs = variants(net, n, steps, log_every, device)
        t0 = time.perf_counter()
        result = run(vs, batched=mode == "batched")
        out[f"{mode}_s"] = round(time.perf_counter() - t0, 3)
        finals[mode] = [r["final"]["train_loss"] for r in result["variants"]]
        out["variants"] = len(vs)
    out["speedup"] = round(out["one_by_one_s"] / out["batched_s"], 2)
    out["max_rel_diff"] = max(abs(a - b) / max(abs(a), 1e-12)
                              for a, b in zip(finals["batched"], finals["one_by_one"]))
    if n <= 8:
        out["one_ulp_rel_diff"] = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(
            finals["one_by_one"], nudged(variants(net, n, steps, log_every, device))))
    return out


def nudged(vs) -> list[float]:
    """Each variant's final training loss alone, its first weight matrix moved by one ulp."""
    from engine import Trainer

    out = []
    for v in vs:
        t = Trainer(v.spec)
        with torch.no_grad():
            w = next(t.model.parameters())
            w.copy_(torch.nextafter(w, torch.full_like(w, float("inf"))))
        out.append(t.run().history.last["train_loss"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and variants")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: this machine has no CUDA GPU", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    steps = 60 if args.quick else 1000
    sizes = [1, 8] if args.quick else [1, 8, 64]
    logs = [10] if args.quick else [10, 100]
    result = {"device": args.device, "torch": torch.__version__, "torch_threads": 1,
              "steps": steps, "quick": args.quick, "nets": {}}
    run(variants("tfp", 2, 20, 10, args.device))  # warm up: first calls load and allocate
    for net in NETS:
        single = None
        rows = {}
        for log_every in logs:
            for n in sizes:
                m = measure(net, n, steps, log_every, args.device)
                if n == 1:
                    single = m["one_by_one_s"]
                m["batched_in_single_runs"] = round(m["batched_s"] / single, 2)
                rows[f"log_every_{log_every}/n_{n}"] = m
        result["nets"][net] = rows
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
