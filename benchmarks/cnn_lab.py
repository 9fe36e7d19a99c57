"""The CNN lab's figures, on this machine's CPU (one torch thread), printed as one JSON object.

    PYTHONPATH=. python benchmarks/cnn_lab.py [--seeds 0-4] [--quick]

- the default CNN preset (cnn_digits, LeNet's idea) on digits: final validation accuracy, the
  step and the training seconds at which validation accuracy first reached 95%, the whole run's
  seconds;
- CNN vs MLP on moving shapes (cnn_vs_mlp_shapes and its dense twins): accuracy and parameters;
- post-training int8 weights (engine.lab.quantize) of the CNN and of the distilled student
  (distill_quantize_digits): size and accuracy before and after;
- transfer (transfer_digits): fine-tuned from pretraining vs trained from scratch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from engine import ExperimentSpec, Trainer
from engine.lab.quantize import quantization_report
from engine.presets import load_preset
from engine.train.callbacks import Callback

TARGET = 0.95


class Clock(Callback):
    """The training seconds (Trainer.seconds: steps only) at every logged row."""
    name = "clock"

    def __init__(self):
        self.at = {}

    def on_log(self, trainer, row):
        self.at[row["step"]] = trainer.seconds


def run(preset: str, seed: int, steps: int | None = None, **changes) -> tuple[Trainer, Clock]:
    spec = ExperimentSpec.from_dict(load_preset(preset)["config"]).with_changes(
        {**changes, "seed": seed, **({"training.steps": steps} if steps else {})})
    clock = Clock()
    t0 = time.perf_counter()
    trainer = Trainer(spec, callbacks=[clock]).run()
    trainer.wall = time.perf_counter() - t0
    return trainer, clock


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-4", help="a range a-b or a comma list")
    ap.add_argument("--quick", action="store_true", help="few steps: a smoke test")
    args = ap.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    steps = 20 if args.quick else None
    out = {"benchmark": "cnn_lab", "torch": torch.__version__, "device": "cpu", "threads": 1,
           "seeds": seeds, "quick": args.quick}

    cnn = []
    for seed in seeds:
        t, clock = run("cnn_digits", seed, steps)
        first = next((r for r in t.history.rows if (r["val_acc"] or 0) >= TARGET), None)
        q = quantization_report(t)
        cnn.append({"seed": seed, "val_acc": t.evaluate("val")["acc"], "steps": t.step_count,
                    "train_seconds": round(t.seconds, 2), "wall_seconds": round(t.wall, 2),
                    "reached_95_at_step": first and first["step"],
                    "reached_95_after_s": first and round(clock.at[first["step"]], 2),
                    "int8": {k: q[k] for k in ("float_bytes", "int8_bytes", "ratio", "float_acc",
                                               "int8_acc")}})
    out["cnn_digits"] = {"runs": cnn, "val_acc": summary([c["val_acc"] for c in cnn]),
                         "train_seconds": summary([c["train_seconds"] for c in cnn])}

    shapes = []
    for seed in seeds:
        row = {"seed": seed}
        for label, layers in (("cnn", None), ("mlp_64", [64]), ("mlp_256_256", [256, 256])):
            t, _ = run("cnn_vs_mlp_shapes", seed, steps,
                       **({"model.layers": layers} if layers else {}))
            row[label] = {"val_acc": t.evaluate("val")["acc"],
                          "params": sum(p.numel() for p in t.model.parameters()),
                          "train_seconds": round(t.seconds, 2)}
        shapes.append(row)
    out["cnn_vs_mlp_shapes"] = {"runs": shapes, "param_ratio_mlp64_to_cnn":
                                shapes[0]["mlp_64"]["params"] / shapes[0]["cnn"]["params"]}

    student = []
    for seed in seeds:
        t, _ = run("distill_quantize_digits", seed, steps)
        q = quantization_report(t)
        student.append({"seed": seed, "teacher_val_acc": t.phase["val_acc"],
                        "teacher_params": t.phase["params"],
                        **{k: q[k] for k in ("float_bytes", "int8_bytes", "ratio", "float_acc",
                                             "int8_acc")}})
    out["distill_quantize_digits"] = student

    transfer = []
    for seed in seeds:
        tuned, _ = run("transfer_digits", seed)
        scratch, _ = run("transfer_digits", seed, pretrain=None)
        transfer.append({"seed": seed, "fine_tuned_val_acc": tuned.evaluate("val")["acc"],
                         "scratch_val_acc": scratch.evaluate("val")["acc"],
                         "train_examples": len(tuned.data.y_train)})
    out["transfer_digits"] = transfer
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
