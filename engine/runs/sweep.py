"""Sweeps: many variants of one experiment, trained together and compared in one table.

    variants = plan(spec, grid={"optimizer.lr": [0.001, 0.01, 0.1]}, seeds=[0, 1, 2])
    result = run(variants)            # batched where the variants share a shape (batched.py)
    result["variants"][0]             # its changes, seed, final metrics, health, run id
    result["ensembles"]               # per setting over its seeds: mean +- spread, ensemble acc

A variant is the base spec with some dotted keys changed (any scalar setting: rates, widths,
initialisers, penalties, ...) and a seed. When a sweep varies the seed (or cross-validates),
every variant keeps the base run's data (`data.seed`): the seeds then vary what training draws
(initial weights, batch order, dropout), and every variant is scored on the same validation
examples, so they compare, and average into an ensemble, on equal terms. A variant's spec says
so, and trains to the same numbers on its own.

Random search draws `random` variants from the grid's values and the `ranges` (uniform, or
log-uniform for `log` ranges) with its own seed. k-fold cross-validation (`folds` = k) trains
each setting k times, each fold of the training examples validating once (data.fold_split).
"""
from __future__ import annotations

import itertools
import json
import math
import random as random_module
import time
import uuid
from dataclasses import dataclass

import torch

from ..core.errors import SpecError
from ..core.inputs import NotJSON, parse_json, short
from ..core.spec import ExperimentSpec, set_path
from ..data.datasets import load_dataset
from ..train.transfer import input_scaling
from .batched import BatchedRuns, shape_key, why_not

MAX_VARIANTS = 1024
METRICS = ("train_loss", "val_loss", "train_acc", "val_acc")


@dataclass
class Variant:
    index: int
    changes: dict  # dotted key -> value, as given (the seed and fold apart)
    seed: int
    fold: int | None
    folds: int
    spec: ExperimentSpec

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.changes.items()] + [f"seed {self.seed}"]
        if self.fold is not None:
            parts.append(f"fold {self.fold + 1}/{self.folds}")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- the plan


def parse_value(text: str):
    """A grid value as written on the command line: JSON where it parses (0.1, 8, true,
    "relu"), else the text itself (relu)."""
    try:
        return parse_json(text, "--grid value", 10_000)
    except NotJSON:
        return text


def parse_grid(items: list[str]) -> dict[str, list]:
    """["optimizer.lr=0.001,0.01", "model.layers.0.units=8,16"] -> {key: [values]}."""
    grid: dict[str, list] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise SpecError(f"--grid {short(item)}: expected KEY=VALUE,VALUE,..., e.g. "
                            "optimizer.lr=0.001,0.01,0.1")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def parse_range(item: str) -> tuple[str, tuple[float, float, bool]]:
    """"optimizer.lr=log:1e-4..1e-1" or "regularization.l2=0..0.01" -> (key, (low, high, log))."""
    key, sep, text = item.partition("=")
    log = text.startswith("log:")
    low, dots, high = text.removeprefix("log:").partition("..")
    try:
        bounds = (float(low), float(high))
    except ValueError:
        bounds = None
    if not sep or not dots or bounds is None or not bounds[0] < bounds[1] or \
            (log and bounds[0] <= 0):
        raise SpecError(f"--range {short(item)}: expected KEY=LOW..HIGH or KEY=log:LOW..HIGH "
                        "with LOW < HIGH (log: LOW > 0), e.g. optimizer.lr=log:1e-4..1e-1")
    return key.strip(), (*bounds, log)


def parse_seeds(text: str) -> list[int]:
    """"0-4" -> [0, 1, 2, 3, 4]; "0,3,7" and "0-2,9" too."""
    seeds: list[int] = []
    for part in str(text).split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise SpecError(f"--seeds {short(text)}: expected seeds like 0-4 or 0,3,7") from None
        if not 0 <= lo <= hi < 2**31:
            raise SpecError(f"--seeds {short(text)}: each range goes up, between 0 and 2**31 - 1")
        if len(seeds) + hi - lo + 1 > MAX_VARIANTS:
            raise SpecError(f"--seeds {short(text)}: at most {MAX_VARIANTS:,} seeds (a sweep "
                            f"trains at most {MAX_VARIANTS:,} variants)")
        seeds += range(lo, hi + 1)
    return list(dict.fromkeys(seeds))


def plan(base: ExperimentSpec, grid: dict | None = None, seeds: list[int] | None = None,
         random: int = 0, ranges: dict | None = None, search_seed: int = 0,
         folds: int = 0, max_variants: int = MAX_VARIANTS) -> list[Variant]:
    """Every variant of the sweep, each a validated spec. grid: {dotted key: [values]} (all
    combinations, or `random` draws from them and the `ranges`); seeds: each setting once per
    seed (default: the base's); folds: k-fold cross-validation."""
    grid, ranges = dict(grid or {}), dict(ranges or {})
    seeds = list(seeds) if seeds else [base.seed]
    if folds and not 2 <= folds <= 20:
        raise SpecError(f"folds={folds}: cross-validation takes 2 to 20 folds")
    if random:
        # checked before drawing: a billion draws would fill the memory before any other check
        if random * len(seeds) * max(folds, 1) > max_variants:
            raise SpecError(f"--random {random:,} with {len(seeds)} seed(s) and "
                            f"{max(folds, 1)} fold(s) is {random * len(seeds) * max(folds, 1):,} "
                            f"variants; at most {max_variants:,} are allowed")
        draw = random_module.Random(search_seed)
        settings = [{**{k: draw.choice(v) for k, v in grid.items()},
                     **{k: _draw(draw, *r) for k, r in ranges.items()}} for _ in range(random)]
    elif ranges:
        raise SpecError("ranges are for a random search: give --random N as well")
    else:
        settings = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    count = len(settings) * len(seeds) * max(folds, 1)
    if count > max_variants:
        raise SpecError(f"the sweep has {count:,} variants; at most {max_variants:,} are "
                        "allowed. Use fewer values, seeds or folds, or a random search")
    same_data = len(seeds) > 1 or folds or seeds != [base.seed]
    data_seed = base.data.seed if base.data.seed is not None else base.seed
    variants = []
    for changes in settings:
        for seed in seeds:
            config = base.to_dict()
            for key, value in changes.items():
                set_path(config, key, value)
            config["seed"] = seed
            if same_data:
                config["data"]["seed"] = data_seed
            try:
                spec = ExperimentSpec.from_dict(config)
            except SpecError as e:
                where = ", ".join(f"{k}={v}" for k, v in changes.items()) or "the base"
                raise SpecError(f"variant {where}: {e}") from None
            for fold in range(folds) if folds else [None]:
                variants.append(Variant(len(variants), changes, seed, fold, folds, spec))
    return variants


def _draw(draw: random_module.Random, low: float, high: float, log: bool) -> float:
    value = math.exp(draw.uniform(math.log(low), math.log(high))) if log else \
        draw.uniform(low, high)
    return float(f"{value:.4g}")  # a rate of 0.003162 reads better than 0.0031622776601683794


# ----------------------------------------------------------------------------- running


def run(variants: list[Variant], batched: bool = True, store=None, name: str = "sweep",
        max_params: int | None = None, progress=None, browser: str | None = None,
        check=None) -> dict:
    """Train every variant; return the results (see results.json in the CLI). Variants that
    share a shape train as one batched model (batched=False: each alone, the reference the
    batched path is tested against). store: a RunStore each variant is recorded into, tagged
    with the sweep's id (browser: the app's browser that ran it). progress(done, total):
    called as variants finish. check(trainer): raises for a variant this caller will not train
    (a server's limits), before anything trains."""
    from ..train.trainer import Trainer
    from .store import StoreWriter

    t0 = time.perf_counter()
    sweep_id = new_sweep_id()
    datasets: dict = {}
    trainers = []
    for v in variants:
        data_seed = v.spec.seed if v.spec.data.seed is None else v.spec.data.seed
        key = (json.dumps(v.spec.data.to_dict(), sort_keys=True), data_seed, v.fold,
               v.spec.pretrain is not None)
        if key not in datasets:  # variants on the same data share one copy of it
            datasets[key] = load_dataset(v.spec.data, v.spec.seed, input_scaling(v.spec),
                                         None if v.fold is None else (v.fold, v.folds))
        callbacks = []
        if store is not None:
            callbacks.append(StoreWriter(store, name=f"{name} · {v.label}",
                                         checkpoint_every=math.inf, browser=browser))
        trainers.append(Trainer(v.spec, callbacks=callbacks, dataset=datasets[key],
                                max_params=max_params))
        if check is not None:
            check(trainers[-1])
    groups = _groups(trainers) if batched else [[k] for k in range(len(trainers))]
    reasons = {g[0]: why_not(trainers[g[0]]) for g in groups if len(g) == 1}
    done = 0
    for members in groups:
        if len(members) > 1:
            BatchedRuns([trainers[k] for k in members]).run()
        else:
            trainers[members[0]].run()
        done += len(members)
        if progress is not None:
            progress(done, len(trainers))
    if store is not None:
        for t in trainers:
            writer = t.callback("store")
            if writer.run_id:
                store.tag(writer.run_id, [sweep_id])
    rows = [_row(v, t, len(g) > 1) for g in groups for v, t in
            ((variants[k], trainers[k]) for k in g)]
    rows.sort(key=lambda r: r["index"])
    return {"id": sweep_id, "variants": rows, "best": best(rows),
            "groups": [{"size": len(g), "batched": len(g) > 1,
                        "alone_because": None if len(g) > 1 else
                        (reasons[g[0]] or ("no other variant has its shape" if batched
                                           else "the sweep trained one by one"))}
                       for g in groups],
            "ensembles": ensembles(variants, trainers, rows),
            "seconds": round(time.perf_counter() - t0, 3)}


def new_sweep_id() -> str:
    """The tag a sweep's runs share in the store."""
    return f"sweep:{uuid.uuid4().hex[:12]}"


def _groups(trainers) -> list[list[int]]:
    """Indices of the variants to train together: equal shape keys among those that batch."""
    found: dict[str, list[int]] = {}
    alone = []
    for k, t in enumerate(trainers):
        if why_not(t) is None:
            found.setdefault(shape_key(t), []).append(k)
        else:
            alone.append([k])
    return list(found.values()) + alone


def _row(v: Variant, t, batched: bool) -> dict:
    summary = t.summary()
    writer = t.callback("store")
    return result_row(v, summary, summary["final"], batched,
                      writer.run_id if writer else None)


def result_row(v: Variant, summary: dict, final: dict, batched: bool,
               run_id: str | None) -> dict:
    """One variant's row of results.json, from its run's summary (Trainer.summary()) and
    final metrics (on Ray, a trial stopped early has only its last report's)."""
    health = summary.get("health") or {}
    return {"index": v.index, "changes": v.changes, "seed": v.seed, "fold": v.fold,
            "label": v.label, "spec": v.spec.to_dict(), "batched": batched,
            "steps": summary.get("steps"), "stopped": summary.get("stopped"),
            "final": {k: final.get(k) for k in METRICS}, "best": summary.get("best"),
            "test": summary.get("test"), "health": health.get("status"),
            "diagnosis": (health.get("messages") or [None])[0], "run_id": run_id,
            "seconds": summary.get("seconds")}


def best(rows: list[dict]) -> int | None:
    """The variant with the lowest final validation loss (training loss where none validates);
    variants that diverged or were stopped early (ASHA, on Ray) never win."""
    key = "val_loss" if any(r["final"]["val_loss"] is not None for r in rows) else "train_loss"
    scored = [r for r in rows if r["final"][key] is not None
              and r["stopped"] not in ("diverged", "stopped_early")
              and math.isfinite(r["final"][key])]
    return min(scored, key=lambda r: r["final"][key])["index"] if scored else None


def _spread(values: list) -> dict | None:
    values = [x for x in values if x is not None and math.isfinite(x)]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1)) \
        if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def ensembles_of_rows(variants: list[Variant], rows: list[dict]) -> list[dict]:
    """Per setting trained more than once: each final metric's mean and spread (sample
    standard deviation) over its seeds or folds. rows: the sweep's result rows, by index."""
    by_setting: dict[str, list[int]] = {}
    for k, v in enumerate(variants):
        by_setting.setdefault(json.dumps(v.changes, sort_keys=True), []).append(k)
    out = []
    for key, members in by_setting.items():
        if len(members) < 2:
            continue
        finals = [rows[k]["final"] for k in members]
        out.append({"changes": json.loads(key), "members": [variants[k].index for k in members],
                    "over": "folds" if variants[members[0]].fold is not None else "seeds",
                    **{m: _spread([f.get(m) for f in finals]) for m in METRICS},
                    "ensemble_val_acc": None})
    return out


@torch.no_grad()
def ensembles(variants: list[Variant], trainers: list, rows: list[dict]) -> list[dict]:
    """ensembles_of_rows, and over seeds the ensemble's validation accuracy: the members'
    class probabilities averaged (they share their validation data)."""
    out = ensembles_of_rows(variants, rows)
    for entry in out:
        members = [trainers[k] for k in entry["members"]]
        alive = [t for t in members if t.stopped != "diverged"]
        data = alive[0].data if alive else None
        if entry["over"] == "seeds" and data is not None and data.task == "classification" \
                and len(data.y_val) and all(t.data.x_val is data.x_val for t in alive):
            probs = sum(t.predict(data.x_val) for t in alive) / len(alive)
            entry["ensemble_val_acc"] = float((probs.argmax(-1) == data.y_val).float().mean())
    return out
