"""Server-side sessions: what N Playground pages ask of one server, without a browser.

    python benchmarks/server_sessions.py MODE N SECONDS     # one level; prints one JSON object

benchmarks/load.py --server-side runs this once per backend and session count, each in a fresh
process, and prints the table. On a 2-core machine, real browser pages cost Chromium more than
the server costs (measured: 10 pages with plotly stubbed out took ~1.7 cores), so a browser on
the same machine decides what is measured. Here each session is a thread of this process, which
plays the web process. It does what the page's live panel asks of the server at each refresh:

- touch the run;
- read its rows;
- build the loss and accuracy figures and the decision boundary (a prediction over the grid);
- serialise them as they would be sent.

It refreshes at the page's own rate (RunRegistry.refresh_every).

MODE is where runs train: `threads` (threads of this process, as NETLAB_WORKERS=0),
`workers` (one worker process per core, the default), `ray` (an actor per run on a Ray started
here). Each session's run is the default page's experiment (spiral_one_hidden), 100,000 steps,
pressed Start at the same moment as the others.

Per session:
- create_s: building its run before Start (a Ray actor's process start is most of it);
- first_chart_s: from Start to the first refresh that drew rows;
- updates_per_s: refreshes that showed a new step;
- max_gap_s: the longest wait between two refreshes;
- steps_per_s: its run's steps over the window.

Per level: total steps/s, the CPU of this process and of every process under it (100 = one
core), and their RSS.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.load import STALL_S, cpu_seconds, default_config, memory_mb  # noqa: E402
from benchmarks.load import tree_cpu_seconds as tree_cpu
from benchmarks.load import tree_rss_mb as tree_rss


def registry_for(mode: str, n: int):
    import torch

    from serve.caps import Caps
    from serve.registry import RunRegistry
    caps = Caps(max_trainers=max(8, n), max_runs=max(64, n), max_steps=100_000, grace_s=60)
    if mode == "threads":
        torch.set_num_threads(int(os.environ.get("NETLAB_TORCH_THREADS", "1")))  # as app.py
        return RunRegistry(caps)
    if mode == "workers":
        from serve.worker_host import worker_count
        from serve.workers import WorkerPool
        os.environ.pop("NETLAB_WORKERS", None)
        return RunRegistry(caps, workers=WorkerPool(worker_count(), None, caps))
    if mode == "ray":
        from serve.ray_runs import RayPool
        return RunRegistry(caps, workers=RayPool("local", None, caps))
    raise SystemExit(f"unknown mode {mode!r}: threads, workers or ray")


def refresh(run, data) -> bool:
    """One refresh of the live panel's server side; True when it showed rows."""
    from ui import charts, panels

    run.touch()
    rows = run.trainer.history.rows
    figures = [charts.loss_figure(rows), charts.accuracy_figure(rows)]
    if rows:
        figures.append(panels.data_figure(data, run.predict))
    for fig in figures:
        fig.to_json()
    return bool(rows)


def session(registry, spec, index: int, go: threading.Event, stop: threading.Event,
            out: dict) -> None:
    from engine.data.datasets import load_dataset
    from engine.train.trainer import input_scaling

    data = load_dataset(spec.data, spec.seed, input_scaling(spec))
    t0 = time.monotonic()
    run = registry.create(spec, owner=f"session-{index}")
    out["create_s"] = time.monotonic() - t0  # a Ray actor's start is most of it
    go.wait()
    t_click = time.monotonic()
    try:
        run.start()
    except Exception as e:  # noqa: BLE001 - a cap: this session watches an untrained run
        out["refused"] = str(e)
    times, steps, first = [], [], None
    while not stop.is_set():
        t0 = time.monotonic()
        drew = refresh(run, data)
        now = time.monotonic()
        if drew and first is None:
            first = now - t_click
        times.append(now)
        steps.append(run.trainer.step_count)
        stop.wait(max(0.0, registry.refresh_every(0.2) - (now - t0)))
    run.pause(wait=False)
    out.update(t_click=t_click, times=times, steps=steps, first=first)


def measure(mode: str, n: int, seconds: float) -> dict:
    from engine import ExperimentSpec

    spec = ExperimentSpec.from_dict(default_config(100_000))
    registry = registry_for(mode, n)
    if mode == "workers":  # the workers start with the server; the window starts after
        for i in range(registry.workers.size):
            registry.workers.worker(i)
    go, stop = threading.Event(), threading.Event()
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=session, args=(registry, spec, i, go, stop, outs[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300  # every session built its run (ray: its actor) first
    while time.monotonic() < deadline and not all("create_s" in o for o in outs):
        time.sleep(0.1)
    time.sleep(0.5)
    pid = os.getpid()
    cpu0, web0, t0 = tree_cpu(pid), cpu_seconds(pid), time.monotonic()
    go.set()
    time.sleep(seconds)
    stop.set()
    cpu1, web1, t1 = tree_cpu(pid), cpu_seconds(pid), time.monotonic()
    rss, web_rss = tree_rss(pid), memory_mb(pid)[0]
    for t in threads:
        t.join(60)
    registry.shutdown()
    sessions = []
    for o in outs:
        times, steps = o.get("times", []), o.get("steps", [])
        ends = [o["t_click"], *times, t1] if times else [t0, t1]
        gaps = [b - a for a, b in zip(ends, ends[1:])]
        shown = sum(1 for a, b in zip(steps, steps[1:]) if b > a)
        window = t1 - o.get("t_click", t0)
        sessions.append({"first_chart_s": o.get("first"),
                         "updates_per_s": shown / window,
                         "max_gap_s": max(gaps),
                         "steps_per_s": (steps[-1] if steps else 0) / window})

    def stat(key, fn):
        values = [s[key] for s in sessions if s[key] is not None]
        return round(fn(values), 3) if values else None

    creates = [o["create_s"] for o in outs if "create_s" in o]
    return {"mode": mode, "sessions": n, "window_s": round(t1 - t0, 2),
            "refused": sum("refused" in o for o in outs),
            "create_s": {"median": round(statistics.median(creates), 3),
                         "max": round(max(creates), 3)} if creates else None,
            "first_chart_s": {"median": stat("first_chart_s", statistics.median),
                              "max": stat("first_chart_s", max)},
            "steps_per_s": {"median": stat("steps_per_s", statistics.median),
                            "min": stat("steps_per_s", min),
                            "total": stat("steps_per_s", sum)},
            "updates_per_s": {"median": stat("updates_per_s", statistics.median),
                              "min": stat("updates_per_s", min)},
            "max_gap_s": stat("max_gap_s", max),
            "stalled_sessions": sum(s["max_gap_s"] > STALL_S for s in sessions),
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "web_cpu_percent": round(100 * (web1 - web0) / (t1 - t0), 1),
            "rss_mb": round(rss, 1), "web_rss_mb": round(web_rss, 1)}


if __name__ == "__main__":
    mode, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(measure(mode, n, seconds)))
    sys.stdout.flush()
    os._exit(0)  # a local Ray's threads need not be waited for
