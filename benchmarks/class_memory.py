"""A class's runs and the workers' memory: N learners press Start, then every page goes away.

    python benchmarks/class_memory.py [--learners 10] [--seconds 30] [--workers 2]

No browser: serve.registry driven directly, with its runs in worker processes and a run store
in a fresh folder, as a server runs by default. Each learner's run is the Playground's first
experiment (tfp_circle) set to train until paused. After `--seconds` of training every page
is gone: the reaper is asked, as time passes for it, at the grace period (the runs pause and
say why) and past NETLAB_UNLOAD_AFTER_S (the stored runs leave memory). Prints one JSON
object: each worker's RSS (MB, /proc/<pid>/status) before any run, while the runs train, and
a second after they were let go; how many runs paused with a reason; and the steps one run
kept when it came back from the store.

Issue 31, item 15 measured 163/195 MB per worker before, ~325 MB while ten runs trained, and
no memory given back 75 s after every session closed (the runs stayed an hour).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import ExperimentSpec  # noqa: E402
from engine.presets import load_preset  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from serve.caps import Caps  # noqa: E402
from serve.registry import RunRegistry  # noqa: E402
from serve.workers import WorkerPool  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="netlab_class_memory_")
    store = RunStore(Path(home) / "runs.sqlite")
    caps = Caps(max_trainers=args.learners, max_runs=4 * args.learners)
    pool = WorkerPool(args.workers, store.location, caps)
    registry = RunRegistry(caps, reap_every_s=3600, store=store, workers=pool)
    spec = ExperimentSpec.from_dict(load_preset("tfp_circle")["config"])
    try:
        for i in range(args.workers):
            pool.worker(i)
        time.sleep(1.0)
        before = {pid: rss_mb(pid) for pid in pool.pids()}
        runs = []
        for k in range(args.learners):
            run = registry.create(spec, owner=f"{k:032x}")
            run.endless = True
            run.start()
            runs.append(run)
        time.sleep(args.seconds)
        for run in runs:
            run.sync()
        training = {pid: rss_mb(pid) for pid in pool.pids()}
        steps = [run.trainer.step_count for run in runs]
        now = time.monotonic()
        registry.reap(now + caps.grace_s + 1)  # every page gone for the grace period
        for run in runs:
            run.sync()
        paused = sum(run.state == run.PAUSED and bool(run.paused_why) for run in runs)
        kept = runs[0].trainer.step_count
        registry.reap(now + caps.unload_after_s + 1)  # ... and past the unload time
        time.sleep(1.0)
        after = {pid: rss_mb(pid) for pid in pool.pids()}
        back = registry.restore(runs[0].id, owner=runs[0].owner)
        print(json.dumps({
            "learners": args.learners, "seconds": args.seconds, "workers": args.workers,
            "steps_per_run": {"min": min(steps), "max": max(steps)},
            "worker_rss_mb": {"before": list(before.values()),
                              "training": list(training.values()),
                              "after_let_go": list(after.values())},
            "paused_with_reason": paused,
            "runs_held_after_let_go": len(registry.runs()) - (back is not None),
            "restored_steps": back.trainer.step_count if back else None,
            "steps_when_paused": kept,
            "machine": {"cores": os.cpu_count(), "load": os.getloadavg()[0]},
        }, indent=1))
    finally:
        registry.shutdown()


if __name__ == "__main__":
    main()
