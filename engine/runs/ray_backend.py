"""Sweeps past one machine: each variant one Ray Tune trial, on a cluster or a Ray started here.

    result = run_on_ray(plan(spec, grid, seeds), asha=True)   # same result shape as sweep.run

Ray is optional (requirements-ray.txt). With RAY_ADDRESS set (or `address`), the trials run on
that cluster; otherwise a Ray is started on this machine for the sweep. The engine travels to
the workers as a py_module, so a cluster needs nothing of Netlab installed. Each trial is a
plain Trainer reporting every logged row to Tune, so ASHA (asha=True) can stop the variants
that lag behind at each rung; a stopped variant's row says "stopped_early". A trial trains
exactly as the same variant would alone (a variant's spec carries its data seed), so its
numbers equal the local sweep's one-by-one figures. The runs are recorded into the store on
this machine when the trials end (rows without their per-layer detail).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

from ..core.errors import SpecError
from ..train.trainer import logged_rows

MISSING = ("--backend ray needs Ray, an optional part of Netlab: "
           "pip install -r requirements-ray.txt")

ENGINE = Path(__file__).resolve().parents[1]  # the engine package, shipped to the workers


def _ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise SpecError(MISSING) from None
    return ray, tune


def run_on_ray(variants, max_params: int | None = None, asha: bool = False, store=None,
               name: str = "sweep", address: str | None = None, grace: int = 2) -> dict:
    """Train every variant as one Tune trial (one CPU each); the result as sweep.run gives
    it. asha: stop the trials behind at each rung of `grace`, 3 x grace, ... logged rows."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no progress tables on our stdout
    ray, tune = _ray()
    from ray.tune.schedulers import ASHAScheduler

    from .sweep import best, ensembles_of_rows, new_sweep_id

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"py_modules": [str(ENGINE)]})
    payload = [{"spec": v.spec.to_dict(), "fold": v.fold, "folds": v.folds} for v in variants]
    validates = any(v.spec.data.val_fraction > 0 for v in variants)
    metric = "val_loss" if validates else "train_loss"
    rows_expected = max(logged_rows(v.spec) for v in variants) + 1  # + the summary

    def trainable(config):
        _train_trial(payload[config["variant"]], max_params, metric)

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=rows_expected,
                              grace_period=grace, reduction_factor=3) if asha else None
    with tempfile.TemporaryDirectory() as results:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"variant": tune.grid_search(list(range(len(variants))))},
            tune_config=tune.TuneConfig(metric=metric, mode="min", scheduler=scheduler),
            run_config=tune.RunConfig(name="netlab", storage_path=results, verbose=0))
        grid = tuner.fit()
        trials = {r.config["variant"]: r for r in grid}
    rows = []
    sweep_id = new_sweep_id()
    for v in variants:
        trial = trials[v.index]
        if trial.error is not None:
            raise SpecError(f"variant {v.label} failed on Ray: {str(trial.error)[:300]}")
        rows.append(_row(v, trial.metrics, store, name, sweep_id))
    return {"id": sweep_id, "variants": rows, "best": best(rows),
            "groups": [{"size": 1, "batched": False, "alone_because": "each variant is one "
                        "Ray trial"} for _ in rows],
            "ensembles": ensembles_of_rows(variants, rows), "backend": "ray", "asha": asha,
            "seconds": round(time.perf_counter() - t0, 3)}


def _train_trial(item: dict, max_params, metric: str) -> None:
    """One trial, inside a Ray worker: the variant's Trainer, each logged row reported."""
    from ray import tune

    from ..core.spec import ExperimentSpec
    from ..data.datasets import load_dataset
    from ..train.callbacks import Callback
    from ..train.trainer import Trainer
    from ..train.transfer import input_scaling

    spec = ExperimentSpec.from_dict(item["spec"])
    fold = None if item["fold"] is None else (item["fold"], item["folds"])
    data = load_dataset(spec.data, spec.seed, input_scaling(spec), fold)
    logged: list[dict] = []

    class Report(Callback):
        def on_log(self, t, row):
            row = {k: v for k, v in t.history.last.items() if k != "layers"}
            logged.append(row)
            report = {"step": row["step"], **{
                k: row[k] for k in ("train_loss", "val_loss", "train_acc", "val_acc")
                if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])}}
            report.setdefault(metric, math.inf)  # a row without it (diverged) ranks last
            tune.report(report)

    trainer = Trainer(spec, callbacks=[Report()], dataset=data, max_params=max_params)
    trainer.run()
    last = {k: v for k, v in (logged[-1] if logged else {}).items()
            if k in ("train_loss", "val_loss", "train_acc", "val_acc")
            and isinstance(v, (int, float)) and math.isfinite(v)}
    # one more report once the run has ended: its summary and rows for the store
    tune.report({"step": trainer.step_count, metric: math.inf, **last,
                 "summary": json.dumps(trainer.summary(), default=str),
                 "rows": json.dumps(logged)})


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _row(v, metrics: dict, store, name: str, sweep_id: str) -> dict:
    """The sweep's result row for a finished (or early-stopped) trial."""
    from .sweep import METRICS, result_row

    if "summary" not in metrics:  # stopped early: only its last report
        return result_row(v, {"steps": metrics.get("step"), "stopped": "stopped_early"},
                          {k: _finite(metrics.get(k)) for k in METRICS}, False, None)
    summary = json.loads(metrics["summary"])
    run_id = None
    if store is not None:
        run_id = store.create(v.spec.to_json(), f"{name} · {v.label}", tags=[sweep_id])
        rows = json.loads(metrics["rows"])
        if rows:
            store.append(run_id, *rows)
        store.finish(run_id, summary)
    final = summary.get("final") or {}
    return result_row(v, summary, {k: _finite(final.get(k)) for k in METRICS}, False, run_id)
