"""Every preset on several seeds: how it ended, its final health, and each claim of its
explanation (engine/presets/claims.py) with the number measured. Prints one JSON object;
`--markdown` prints the table for an issue note. Runs where the presets say (device auto: the
GPU when there is one).

    python benchmarks/preset_health.py --seeds 0 1 2 3 4 [--only NAME ...] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from engine.presets import preset_names  # noqa: E402
from engine.presets.claims import check, operator, outcome  # noqa: E402


def run(name: str, seed: int) -> dict:
    base = outcome(name, seed)
    claims = check(name, seed)
    return {"preset": name, "seed": seed, "stopped": base.stopped,
            "status": base.measure("status"),
            "statuses": [s for s in base.measure("statuses") if s != "ok"],
            "val_acc": base.val["acc"], "device": str(base.trainer.device),
            "claims": [{"claim": c["claim"], "value": c["value"], "bound": c["bound"],
                        "holds": c["holds"]} for c in claims]}


def fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}"
    if isinstance(x, list):
        return ", ".join(map(str, x)) or "–"
    return str(x)


def claim_text(c: dict) -> str:
    claim = c["claim"]
    op = operator(claim)
    where = " (variant)" if claim.get("set") else ""
    bound = fmt(c["bound"]) if not isinstance(c["bound"], list) else fmt(c["bound"])
    return f"{claim['measure']}{where} {fmt(c['value'])} {op} {bound}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = [run(n, s) for n in (args.only or preset_names()) for s in args.seeds]
    failed = sum(not c["holds"] for r in results for c in r["claims"])
    if not args.markdown:
        print(json.dumps({"benchmark": "preset_health", "runs": results,
                          "claims_failed": failed}, indent=1, default=str))
        return
    print("| preset | seed | stopped | final status | statuses seen | val acc | claims held | the first claim's number |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        held = sum(c["holds"] for c in r["claims"])
        first = claim_text(r["claims"][0]) if r["claims"] else "–"
        print(f"| {r['preset']} | {r['seed']} | {r['stopped']} | {r['status']} | "
              f"{fmt(r['statuses'])} | {fmt(r['val_acc'])} | {held}/{len(r['claims'])} | {first} |")
    print(f"\nclaims failed: {failed}")


if __name__ == "__main__":
    main()
