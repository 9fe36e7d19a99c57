"""What the Runs page draws, as plain functions of stored runs (engine/runs/store.py): the table, the
settings that differ between runs, their curves overlaid, and a sweep's results."""
from __future__ import annotations

import datetime as dt
import json
import math

import plotly.graph_objects as go

from engine.presets.concepts import CONCEPTS
from ui import charts

STATUS = {"running": "▶ training", "paused": "⏸ paused", "finished": "✓ finished",
          "interrupted": "⚠ interrupted"}


def when(timestamp: float, now: float | None = None) -> str:
    """"3 min ago", "yesterday 14:02", "2026-11-20 09:15": how long since a run began."""
    now = dt.datetime.now().timestamp() if now is None else now
    age = now - timestamp
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min ago"
    if age < 24 * 3600:
        return f"{int(age // 3600)} h ago"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _num(value):
    return None if value is None or not math.isfinite(value) else float(f"{value:.4g}")


def table(runs: list[dict], now: float | None = None) -> list[dict]:
    """One row per stored run, for st.dataframe."""
    out = []
    for r in runs:
        final, summary = r["final"], r["summary"] or {}
        verdict = (summary.get("health") or {}).get("status")
        concepts = [t for t in r["tags"] if t in CONCEPTS]
        out.append({"name": r["name"], "status": STATUS.get(r["status"], r["status"]),
                    "concepts": ", ".join(concepts),
                    "data": r["spec"]["data"]["name"], "steps": final.get("step"),
                    "train loss": _num(final.get("train_loss")),
                    "val loss": _num(final.get("val_loss")),
                    "val acc": _num(final.get("val_acc")),
                    "verdict": verdict or ("diverged" if summary.get("stopped") == "diverged"
                                           else None),
                    "tags": ", ".join(t for t in r["tags"] if t not in CONCEPTS),
                    "began": when(r["created"], now)})
    return out


def flatten(value, prefix: str = "") -> dict:
    """A spec dict as dotted keys (model.layers.0.units: 8), the way --set and sweeps name
    settings."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def differences(runs: list[dict]) -> list[dict]:
    """The settings on which the runs' specs differ: one row per dotted key, one column per
    run (its name; "—" where a run has no such setting)."""
    flat = [flatten(r["spec"]) for r in runs]
    keys = sorted({k for f in flat for k in f})
    names = _unique([r["name"] for r in runs])
    rows = []
    for key in keys:
        values = [f.get(key, "—") for f in flat]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            rows.append({"setting": key, **{n: _show(v) for n, v in zip(names, values)}})
    return rows


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _unique(names: list[str]) -> list[str]:
    """The names, made distinct where two runs share one (a table needs distinct columns)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def overlay(named_rows: list[tuple[str, list[dict]]], metric: str) -> go.Figure | None:
    """The runs' curves on one chart: loss or accuracy (training solid, validation dashed,
    one colour per run) or the gradient norm. None when no run has that metric."""
    named_rows = list(zip(_unique([n for n, _ in named_rows]), [r for _, r in named_rows]))
    if metric in ("loss", "acc"):
        if not any(r.get(f"train_{metric}") is not None for _, rows in named_rows
                   for r in rows):
            return None
        title = "Loss" if metric == "loss" else "Accuracy"
        return charts.side_by_side_figure(named_rows, metric, title, height=320)
    traces = []
    for k, (name, rows) in enumerate(named_rows):
        x, y = charts._series(charts.thin(rows), metric)
        if x:
            traces.append(charts._line(x, y, name,
                                       line=dict(color=charts.PALETTE[k % len(charts.PALETTE)])))
    if not traces:
        return None
    return charts.figure(traces, "Gradient norm (all weights)", f"runs:{metric}", height=320,
                         xaxis=dict(title=dict(text="step")),
                         yaxis=charts._log_axis([t["y"] for t in traces]))


def sweep_table(result: dict) -> list[dict]:
    """A sweep's variants, one row each: what changed, seed, fold, final metrics, verdict."""
    rows = []
    for v in result["variants"]:
        row = {"best": "★" if v["index"] == result["best"] else "", **{
            k: _show(val) if not isinstance(val, (int, float)) else val
            for k, val in v["changes"].items()}, "seed": v["seed"]}
        if v["fold"] is not None:
            row["fold"] = v["fold"] + 1
        row.update({"train loss": _num(v["final"]["train_loss"]),
                    "val loss": _num(v["final"]["val_loss"]),
                    "val acc": _num(v["final"]["val_acc"]),
                    "verdict": v["health"] or v["stopped"], "batched": v["batched"]})
        rows.append(row)
    return rows


def parallel_coordinates(result: dict) -> go.Figure | None:
    """Each variant a line across its settings and its final losses, coloured by validation
    loss (training loss where nothing validates): which settings lead where."""
    variants = [v for v in result["variants"] if v["stopped"] != "diverged"]
    if len(variants) < 2:
        return None
    key = "val_loss" if any(v["final"]["val_loss"] is not None for v in variants) \
        else "train_loss"
    variants = [v for v in variants if v["final"][key] is not None]
    if len(variants) < 2:
        return None
    dims = []
    for setting in dict.fromkeys(k for v in variants for k in v["changes"]):
        values = [v["changes"].get(setting) for v in variants]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            positive = all(x > 0 for x in values)
            log = positive and max(values) >= 10 * min(values)
            scale = (lambda x: math.log10(x)) if log else (lambda x: x)  # noqa: E731
            dim = dict(label=setting + (" (log scale)" if log else ""),
                       values=[scale(x) for x in values])
            distinct = sorted(set(values))
            if len(distinct) <= 12:  # ticks at the values tried, labelled as written
                dim.update(tickvals=[scale(x) for x in distinct],
                           ticktext=[f"{x:g}" for x in distinct])
            dims.append(dim)
        else:
            labels = list(dict.fromkeys(json.dumps(x) if not isinstance(x, str) else x
                                        for x in values))
            codes = [labels.index(json.dumps(x) if not isinstance(x, str) else x)
                     for x in values]
            dims.append(dict(label=setting, values=codes, tickvals=list(range(len(labels))),
                             ticktext=labels))
    seeds = sorted({v["seed"] for v in variants})
    if len(seeds) > 1:
        dims.append(dict(label="seed", values=[v["seed"] for v in variants], tickvals=seeds,
                         ticktext=[str(s) for s in seeds]))
    for metric in ("train_loss", "val_loss", "val_acc"):
        values = [v["final"][metric] for v in variants]
        if all(x is not None for x in values):
            dims.append(dict(label=metric.replace("_", " "), values=values))
    colour = [v["final"][key] for v in variants]
    fig = go.Figure(go.Parcoords(line=dict(color=colour, colorscale="Viridis",
                                           reversescale=True, showscale=True,
                                           colorbar=dict(title=key.replace("_", " "))),
                                 dimensions=dims))
    # the axis labels sit above the axes: the title goes higher still
    fig.update_layout(height=400, margin=dict(l=70, r=40, t=100, b=30),
                      title=dict(text="Each variant, across its settings and results",
                                 font=dict(size=14), y=0.97, yanchor="top"))
    return fig
