"""Every preset on several seeds: how it ended, its final health and the numbers its claims are
about. Prints one JSON object; `--markdown` prints the table for an issue note.

    python benchmarks/preset_health.py --seeds 0 1 2 3 4 [--only NAME ...] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from engine import ExperimentSpec, Trainer  # noqa: E402
from engine.presets import load_preset, preset_names  # noqa: E402


def grad_ratio(row: dict) -> float | None:
    hidden = [lay for lay in row.get("layers") or () if lay["name"] != "out"
              and lay.get("act_grad_norm") is not None]
    if len(hidden) < 2 or not hidden[-1]["act_grad_norm"]:
        return None
    return hidden[0]["act_grad_norm"] / hidden[-1]["act_grad_norm"]


def run(name: str, seed: int) -> dict:
    spec = ExperimentSpec.from_dict(load_preset(name)["config"]).with_changes({"seed": seed})
    t = Trainer(spec).run()
    rows = t.history.rows
    last = rows[-1]
    seen = []
    for r in rows:
        s = r["health"]["status"]
        if s != "ok" and s not in seen:
            seen.append(s)
    train, val = t.evaluate("train"), t.evaluate("val")
    return {"preset": name, "seed": seed, "stopped": t.stopped, "steps": t.step_count,
            "status": last["health"]["status"], "seen": seen,
            "fixes": [f["label"] for f in last["health"]["fixes"]],
            "train_loss": train["loss"], "val_loss": val["loss"], "train_acc": train["acc"],
            "val_acc": val["acc"], "first_loss": rows[0]["train_loss"],
            "ratio_first": grad_ratio(rows[0]), "ratio_last": grad_ratio(last),
            "restored_step": t.restored_step}


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = [run(n, s) for n in (args.only or preset_names()) for s in args.seeds]
    if not args.markdown:
        print(json.dumps(results, indent=1))
        return
    print("| preset | seed | stopped | final status | seen | train acc | val acc | val loss | dL/dh ratio (first→last row) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['preset']} | {r['seed']} | {r['stopped']} | {r['status']} | "
              f"{', '.join(r['seen']) or '–'} | {fmt(r['train_acc'])} | {fmt(r['val_acc'])} | "
              f"{fmt(r['val_loss'])} | {fmt(r['ratio_first'])} → {fmt(r['ratio_last'])} |")


if __name__ == "__main__":
    main()
