"""Sharing one server: fairness between a heavy and a light run, memory of abandoned runs and of
a long run's History. No browser, no network: serve.registry driven directly.

    python benchmarks/fairness.py [--seconds 6] [--quanta 0,0.01] [--baseline REV]
                                  [--abandoned 20] [--history-steps 500] [--skip ...]

Prints one JSON object:

    fairness    per scheduler variant ("fair q=<quantum>", and "baseline <REV>" with
                --baseline REV: ui/runner.py as it was at that git revision (before serve/), e.g. fa23dc4,
                the per-step semaphore before the fair slot): the light run's steps/s alone,
                then light and heavy together: steps/s of each, and each run's share of the
                time spent inside trainer.step (timed here with perf_counter around each step,
                not with the scheduler's own accounting)
    step_ms     the cost of one step of each run alone, and their ratio
    abandoned   RSS (MB, /proc/self/statm) before creating N ~1.9M-parameter runs (after one
                warm-up run: the first Trainer loads modules and kernels for good), after
                creating them (each started, so a step or more, then paused), and after the
                reaper dropped them (drop_after_s=5)
    history     rows and per-layer entries kept (and an estimate of their bytes) after
                --history-steps real steps of a 200-layer x 4-unit net logging every step,
                and after 100,000 synthetic rows of 200 layers, with and without the bounds

Figures on a shared machine are noisy; `machine` records the cores and load average.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

torch.set_num_threads(1)

from engine import ExperimentSpec, Trainer  # noqa: E402
from engine.train.history import History  # noqa: E402

LIGHT = {"data": {"name": "moons"}, "model": {"layers": [8]}, "training": {"steps": 100_000}}
HEAVY = {"data": {"name": "digits"}, "model": {"layers": [1024, 1024, 768]},
         "training": {"batch_size": 1797, "steps": 100_000}}
DEEP = {"data": {"name": "moons"}, "model": {"layers": [4] * 200},
        "training": {"steps": 100_000, "log_every": 1}}
ABANDONED = {"data": {"name": "digits"}, "model": {"layers": [1024, 1024, 768]},
             "training": {"batch_size": 256, "steps": 100_000}}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def timed(run) -> dict:
    """Wrap run.trainer.step to add up the seconds spent inside it."""
    box = {"s": 0.0, "n": 0}
    step = run.trainer.step

    def wrapper():
        t0 = time.perf_counter()
        try:
            return step()
        finally:
            box["s"] += time.perf_counter() - t0
            box["n"] += 1
    run.trainer.step = wrapper
    return box


def watch(runs, stop: threading.Event) -> threading.Thread:
    """A page's fragment: stamps the runs every 0.25 s so the reaper leaves them alone."""
    def loop():
        while not stop.wait(0.25):
            for r in runs:
                r.touch()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def train_for(runs, seconds: float) -> list[dict]:
    """Start the runs together, train `seconds`, pause them: per run steps/s and step seconds."""
    boxes = [timed(r) for r in runs]
    stop = threading.Event()
    watch(runs, stop)
    for r in runs:
        r.trainer.step()  # the synchronous first step of Start, out of the window
        r.start()
    before = [(b["s"], b["n"]) for b in boxes]
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = [(b["s"], b["n"]) for b in boxes]
    wall = time.perf_counter() - t0
    for r in runs:
        r.pause()
    stop.set()
    return [{"steps_per_s": (n1 - n0) / wall, "step_s": s1 - s0, "steps": n1 - n0}
            for (s0, n0), (s1, n1) in zip(before, after)]


def load_runner(revision: str | None):
    """What the measures use (Caps, RunRegistry): today's from serve/, or ui/runner.py as it
    was at a git revision (before serve/ was split out of it), loaded as a separate module."""
    if not revision:
        from serve.caps import Caps
        from serve.registry import RunRegistry
        return types.SimpleNamespace(Caps=Caps, RunRegistry=RunRegistry)
    source = subprocess.run(["git", "show", f"{revision}:ui/runner.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="netlab_runner_head_"), "runner_head.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("runner_head", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["runner_head"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def make_caps(runner, **kw):
    fields = set(runner.Caps.__dataclass_fields__)
    base = dict(max_trainers=8, max_params=2_000_000, max_steps=100_000, max_steps_per_s=0,
                train_slots=1, shared_duty=0.5, grace_s=60, drop_after_s=3600)
    return runner.Caps(**{k: v for k, v in {**base, **kw}.items() if k in fields})


def step_ms(config: dict, n: int) -> float:
    t = Trainer(ExperimentSpec.from_dict(config))
    t.step()
    t0 = time.perf_counter()
    for _ in range(n):
        t.step()
    return (time.perf_counter() - t0) / n * 1000


def fairness(runner, seconds: float, **caps) -> dict:
    reg = runner.RunRegistry(make_caps(runner, **caps), reap_every_s=0.5)
    try:
        alone = train_for([reg.create(ExperimentSpec.from_dict(LIGHT))], seconds / 2)[0]
        light, heavy = train_for([reg.create(ExperimentSpec.from_dict(LIGHT)),
                                  reg.create(ExperimentSpec.from_dict(HEAVY))], seconds)
    finally:
        reg.shutdown()
    busy = light["step_s"] + heavy["step_s"]
    return {"light_alone_steps_per_s": round(alone["steps_per_s"], 1),
            "light_steps_per_s": round(light["steps_per_s"], 1),
            "heavy_steps_per_s": round(heavy["steps_per_s"], 2),
            "light_share": round(light["step_s"] / busy, 3) if busy else None,
            "heavy_share": round(heavy["step_s"] / busy, 3) if busy else None,
            "light_vs_alone": round(light["steps_per_s"] / alone["steps_per_s"], 3),
            "training_share_of_wall": round(busy / seconds, 3)}


def abandoned(runner, n: int) -> dict:
    # one run created, stepped and forgotten first: the first Trainer imports and caches things
    # for good (~220 MB here: the dataset loaders, torch's kernels), not the runs' memory
    warm = runner.RunRegistry(make_caps(runner))
    run = warm.create(ExperimentSpec.from_dict(ABANDONED))
    run.step_once()
    warm.reap(time.monotonic() + 7200)
    warm.shutdown()
    del run, warm
    gc.collect()
    reg = runner.RunRegistry(make_caps(runner, grace_s=0.2, drop_after_s=5.0, max_runs=1000),
                             reap_every_s=0.2)
    try:
        before = rss_mb()
        for _ in range(n):  # started and paused: a thread each, as from a page
            run = reg.create(ExperimentSpec.from_dict(ABANDONED))
            run.start()
            run.pause()
        del run
        created = rss_mb()
        deadline = time.monotonic() + 30
        while len(reg) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        dropped = rss_mb()
        kept = len(reg)
    finally:
        reg.shutdown()
    return {"runs": n, "rss_before_mb": round(before), "rss_created_mb": round(created),
            "rss_after_drop_mb": round(dropped), "growth_after_drop_mb": round(dropped - before),
            "runs_left": kept}


def size_of(obj, seen=None) -> int:
    """Bytes of a JSON-like structure (sys.getsizeof over dicts, lists and their contents)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(size_of(k, seen) + size_of(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(size_of(v, seen) for v in obj)
    return size


def history(steps: int) -> dict:
    t = Trainer(ExperimentSpec.from_dict(DEEP))
    t0 = time.perf_counter()
    t.run(steps)
    real = {"steps": steps, "rows": len(t.history), "layer_entries": t.history.layer_entries,
            "mb": round(size_of(t.history.rows) / 2 ** 20, 1),
            "seconds": round(time.perf_counter() - t0, 1)}
    row = dict(t.history.last)
    per_row = size_of(row)
    synthetic = History()
    for s in range(1, 100_001):
        row["step"] = s
        synthetic.append(row)
    return {"real_200_layers": real,
            "synthetic_100k_rows_200_layers": {
                "rows": len(synthetic), "layer_entries": synthetic.layer_entries,
                "mb": round(size_of(synthetic.rows) / 2 ** 20, 1),
                "unbounded_mb_estimate": round(per_row * 100_000 / 2 ** 20)}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--quanta", default="0,0.01", help="comma-separated quantum_s values")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure serve/runs.py as it was at this git revision")
    ap.add_argument("--abandoned", type=int, default=20)
    ap.add_argument("--history-steps", type=int, default=500)
    ap.add_argument("--skip", default="", help="comma-separated: fairness,abandoned,history")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()},
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if "abandoned" not in skip:  # first: the figures are the process's RSS
        out["abandoned"] = {"fair": abandoned(load_runner(None), args.abandoned)}
        if args.baseline:
            out["abandoned"][f"baseline {args.baseline}"] = abandoned(load_runner(args.baseline),
                                                                   args.abandoned)
    if "fairness" not in skip:
        light, heavy = step_ms(LIGHT, 300), step_ms(HEAVY, 5)
        out["step_ms"] = {"light": round(light, 3), "heavy": round(heavy, 1),
                          "ratio": round(heavy / light)}
        out["fairness"] = {}
        runner = load_runner(None)
        for q in (float(x) for x in args.quanta.split(",")):
            out["fairness"][f"fair q={q:g}"] = fairness(runner, args.seconds, quantum_s=q)
        if args.baseline:
            out["fairness"][f"baseline {args.baseline}"] = fairness(load_runner(args.baseline),
                                                                   args.seconds)
    if "history" not in skip:
        out["history"] = history(args.history_steps)
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
