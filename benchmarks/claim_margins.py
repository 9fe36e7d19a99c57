"""Every claim of every preset on many seeds, with its margin: the table a claim must pass to be
taught (engine/presets/claims.py says what "with margin" means). For each claim: how many seeds
it held on, the worst and the median slack, the worst in spreads (median - worst), and
whether it still holds (and how far it moved) when the first seed's starting weights are nudged
by one part in a million. Prints one JSON object; `--markdown` prints the
table for an issue note. Runs spread over processes (`--jobs`, one per core by default), one
torch thread each.

    python benchmarks/claim_margins.py --seeds 0-19 [--only NAME ...] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seeds_arg(text: str) -> list[int]:
    """"0-19" or "0,3,5" or "7"."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _job(args) -> dict:
    """One group of presets on one seed (nudged or not): every claim's result."""
    names, seed, nudge = args
    import torch
    torch.set_num_threads(1)
    from engine.presets.claims import check
    t0 = time.perf_counter()
    results = {n: [_plain(r) for r in check(n, seed, nudge)] for n in names}
    return {"names": names, "seed": seed, "nudge": nudge, "results": results,
            "seconds": time.perf_counter() - t0}


def _plain(r: dict) -> dict:
    """A result JSON can carry (statuses are lists, numbers floats)."""
    return json.loads(json.dumps(r, default=str))


def claim_text(claim: dict) -> str:
    from engine.presets.claims import operator
    op = operator(claim)
    bound = claim[op]
    if isinstance(bound, dict) and "twin" in bound:
        bound = "twin " + ", ".join(f"{k}={json.dumps(v)}" for k, v in bound["twin"].items())
    elif isinstance(bound, dict):
        bound = ", ".join(f"{k} {v}" for k, v in bound.items())
    where = (" [" + ", ".join(f"{k}={json.dumps(v)}" for k, v in claim["set"].items()) + "]"
             if claim.get("set") else "")
    factor = f" x{claim['factor']}" if "factor" in claim else ""
    return f"{claim['measure']}{where} {op} {bound}{factor}"


def table(jobs: list[dict], seeds: list[int]) -> list[dict]:
    """One row per claim: its results over the seeds (in seed order) and on the nudged run."""
    from engine.presets import load_preset
    from engine.presets.claims import margin
    by = {}
    for j in jobs:
        for name, results in j["results"].items():
            by[(name, j["seed"], j["nudge"])] = results
    rows = []
    for name in dict.fromkeys(n for j in jobs for n in j["names"]):
        for i, claim in enumerate(load_preset(name)["expect"]):
            per_seed = [by[(name, s, False)][i] for s in seeds if (name, s, False) in by]
            nudged = by.get((name, seeds[0], True))
            m = margin(per_seed, nudged[i] if nudged else None)
            rows.append({"preset": name, "claim": claim_text(claim), **m,
                         "values": [r["value"] for r in per_seed],
                         "bounds": [r["bound"] for r in per_seed],
                         "failed_seeds": [s for s, r in zip(seeds, per_seed) if not r["holds"]]})
    return rows


def fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | claim | held | worst slack | median slack | worst / spread | nudge "
             "| margin |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nudge = {None: "–", True: "holds", False: "FAILS"}[r["nudge_holds"]]
        if r.get("nudge_shift") is not None:
            nudge += f" ({r['nudge_shift']:+.2g})"
        lines.append(f"| {r['preset']} | `{r['claim']}` | {r['held']}/{r['seeds']} | "
                     f"{fmt(r.get('worst'))} | {fmt(r.get('median'))} | "
                     f"{fmt(r.get('spreads'))} | {nudge} | "
                     f"{'yes' if r['with_margin'] else '**no**'} |")
    bad = sum(not r["with_margin"] for r in rows)
    lines.append(f"\n{len(rows) - bad} of {len(rows)} claims hold with margin.")
    return "\n".join(lines)


def main(argv=None):
    from engine.presets.claims import groups
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=seeds_arg, default=seeds_arg("0-19"))
    ap.add_argument("--only", nargs="*", help="presets (their group comes along)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--no-nudge", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--save", help="also write the JSON here")
    args = ap.parse_args(argv)
    chosen = [g for g in groups() if not args.only or set(g) & set(args.only)]
    work = [(g, s, False) for s in args.seeds for g in chosen]
    if not args.no_nudge:
        work += [(g, args.seeds[0], True) for g in chosen]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = list(pool.map(_job, work))
    rows = table(jobs, args.seeds)
    out = {"benchmark": "claim_margins", "seeds": args.seeds, "claims": len(rows),
           "with_margin": sum(r["with_margin"] for r in rows),
           "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(out, f, indent=1)
    print(markdown(rows) if args.markdown else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
