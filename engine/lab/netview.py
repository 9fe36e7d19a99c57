"""The network view (TensorFlow Playground's picture of the net): what every neuron computes over
the input plane, and the weights between neurons, as a plain dict for ui/network.py to draw.

    snap = network_snapshot(trainer.model, trainer.data)   # any time: before, during, after a run
    fig = ui.network.network_figure(snap)

Columns. The net is read as columns of neurons, left to right: the inputs, one column per layer
that maps a vector to a new vector with weights (a linear layer `fcK`, a residual block `resK`),
and the output layer. Layers that keep the width and have no weights between units (activation,
batchnorm, layernorm, dropout, the flatten in front of an image net) are folded into the column
before them: a column shows its units as the *next* column's weights see them, e.g. the column
`fc1` of fc1 -> bn1 -> act1 shows bn1/act1's output (its `layers` lists what was folded in and
`watch` names the module whose output the maps are). A bare linear layer's own output is already
after its activation, like TFP's neurons.

Links. Between a column and the next one: the next layer's weight matrix restricted to the shown
units, `weight[dst][src]` as torch stores it (`W[j, i]`: from unit i to unit j). A residual block
h + F(h) has no single input->output matrix (F is `depth` linear+activation layers); its links are
its projection's weights when it has one (`kind: "projection"`) and otherwise the skip path drawn
as identity links of weight 1 (`kind: "identity"`, no gradient); `note` says so.

Gradients (`has_grad`), from the latest backward pass (each weight's `.grad`; the trainer keeps
them after its step):
  link `grad`       |dL/dW[j, i]| of the drawn weight (None for identity links)
  unit `bias_grad`  |dL/db_j|: the gradient at unit j's pre-activation, summed over the batch
  unit `unit_grad`  || dL/dW_next[:, j] ||: the norm of the gradient of the weights that read
                    unit j (the next column's matrix; a residual block without projection: its
                    first body layer). dL/dh itself is not kept by the trainer. It is zero for a
                    unit that is silent on the whole batch (a dead ReLU) and tiny where the
                    gradient vanishes. None in the output column.

Unit maps (2-D data only, `plane` not None): each shown unit's value over a grid x grid square of
the input plane in raw coordinates (covering every split's points with a 10% margin, as the
decision-boundary chart does), `map[r][c]` at (xs[c], ys[r]): row 0 is the lowest y. `range` is
[min, max] of the map, or, without a plane, over up to RANGE_SAMPLE training examples.

It never changes the model: eval mode under no_grad (BatchNorm reads its running statistics and
does not update them, dropout is off and draws no random numbers), every module's train/eval
flag restored afterwards, hooks removed; no random generator is used. It does switch the model
to eval mode while it runs, so call it where nothing else is using the model: in the page under
the run's lock (`with run.lock:` in serve/runs.py, as `Run.predict` does), never beside a step.

Cost (one CPU thread, grid 24): ~1.2 ms for the default net (spiral, 64-64 ReLU), ~10-20 ms for
30 layers of 32 (deep_relu_he), most of it turning the maps into lists.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..core.portable import Residual
from ..core.registry import FEATURES

RANGE_SAMPLE = 256  # training examples a unit's range is measured on when there is no plane
MARGIN = 0.1        # grid margin around the points, as a share of their span (as the boundary)
UNIT_GRAD = ("norm of the gradient of the weights that read the unit (the next column's "
             "matrix, column j); None in the output column")


def _finite_list(a: np.ndarray):
    """ndarray -> nested lists, non-finite values as None (JSON has no NaN)."""
    if np.isfinite(a).all():
        return a.tolist()
    return np.where(np.isfinite(a), a, None).tolist()


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def plane_grid(data, n: int):
    """(xs, ys, points (n*n, 2)) covering every split's raw points with a margin; point k is at
    (xs[k % n], ys[k // n])."""
    pts = torch.cat([p for p in data.points.values() if len(p)]).float().cpu()
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = MARGIN * (hi - lo).clamp_min(1e-3)
    xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), n)
    ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return xs, ys, torch.stack([gx.flatten(), gy.flatten()], 1)


def _input_labels(data, size: int) -> list[str]:
    if data.features is not None:
        return [FEATURES[f].tags.get("label", f) for f in data.features]
    shape = data.in_shape
    if len(shape) == 3:  # (channels, height, width) -> flattened in that order
        c, h, w = shape
        return [f"pixel ({i // w % h}, {i % w})" + (f" ch{i // (h * w)}" if c > 1 else "")
                for i in range(size)]
    return [f"input {i + 1}" for i in range(size)]


def _column_kind(name: str, module: nn.Module, info: dict) -> str | None:
    """'linear' / 'residual' / 'output' for a layer that starts a column, None for one that folds
    into the column before it. Anything else with weights is not an MLP-style layer."""
    if name == "out" or info.get("type") == "output":
        return "output"
    if isinstance(module, Residual):
        return "residual"
    if isinstance(module, nn.Sequential) and isinstance(getattr(module, "linear", None), nn.Linear):
        return "linear"
    if isinstance(module, nn.Linear):
        return "linear"
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
    if isinstance(module, norms) or not any(True for _ in module.parameters()):
        return None
    raise ValueError(f"the network view draws MLP-style nets (linear, residual, activation, "
                     f"batchnorm, layernorm, dropout); layer {name} "
                     f"({info.get('type', type(module).__name__)}) is not one of them")


def _entry_linear(kind: str, module: nn.Module) -> nn.Linear:
    """The weight matrix that reads the previous column (a residual block without projection:
    its first body layer, which reads the block's input unchanged)."""
    if kind == "residual":
        return module.proj if module.proj is not None else next(
            m for m in module.body if isinstance(m, nn.Linear))
    return module.linear if isinstance(module, nn.Sequential) else module


def _columns(model) -> list[dict]:
    """The column plan: name, kind, the modules folded in, and the module to watch."""
    info = getattr(model, "layer_info", {})
    cols = [{"name": "inputs", "kind": "input", "layers": [], "module": None, "watch": None}]
    for name, module in model.named_children():
        kind = _column_kind(name, module, info.get(name, {}))
        if kind is None:
            cols[-1]["layers"].append(name)
            cols[-1]["watch"] = name
            continue
        cols.append({"name": name, "kind": kind, "layers": [name], "module": module,
                     "watch": name})
    return cols


def network_snapshot(model, data, grid: int = 24, max_units: int = 12) -> dict:
    """A JSON-friendly picture of `model` (a Net) on `data` (its Dataset): see the module doc.

    {"plane": {"grid": n, "xs": [...], "ys": [...], "extent": [x0, x1, y0, y1]} | None,
     "task": "classification" | "regression", "has_grad": bool, "max_units": k,
     "unit_grad": "<what unit_grad measures>",
     "columns": [{"name": "inputs" | "fc1" | "res1" | "out", "kind": "input" | "linear" |
                  "residual" | "output", "layers": [folded layer names], "watch": name | None,
                  "activation": key | None, "size": units in all, "shown": units shown (the
                  first ones), "hidden": size - shown, "block": {"depth": d, "projection":
                  bool} for a residual block else None,
                  "units": [{"index": j, "label": str, "bias": float | None,
                             "bias_grad": float | None, "unit_grad": float | None,
                             "range": [lo, hi] | None, "map": [[...] * n] * n | None}]}],
     "links": [{"src": column index, "dst": column index, "kind": "linear" | "projection" |
                "identity", "param": "fc2.linear.weight" | None, "note": str | None,
                "weight": [[w(dst j <- src i)]], "grad": [[|dL/dW|]] | None}]}
    """
    plan = _columns(model)
    plane = data.features is not None and bool(data.points)
    if plane:
        xs, ys, pts = plane_grid(data, grid)
        x_in = data.encode(pts.to(data.shift.device))
    else:
        x_in = data.x_train[:RANGE_SAMPLE]
    outputs = _watched_outputs(model, plan, x_in)
    sizes = [outputs[i].shape[1] for i in range(len(plan))]
    shown = [min(s, max_units) for s in sizes]
    columns = [_column(c, outputs[i], sizes[i], shown[i], data, model, grid if plane else None)
               for i, c in enumerate(plan)]
    links = [_link(model, plan[i], i, shown[i - 1], shown[i]) for i in range(1, len(plan))]
    # unit_grad: how strongly the loss pulls on each unit, from the matrix that reads it
    for i in range(1, len(plan)):
        g = _reader(plan[i]).weight.grad
        if g is not None:
            norms = g.detach()[:, :shown[i - 1]].float().norm(dim=0).cpu().numpy()
            for j, unit in enumerate(columns[i - 1]["units"]):
                unit["unit_grad"] = _num(norms[j])
    has_grad = any(p.grad is not None for p in model.parameters())
    snap = {"plane": None, "task": data.task, "has_grad": has_grad, "max_units": max_units,
            "unit_grad": UNIT_GRAD, "columns": columns, "links": links}
    if plane:
        snap["plane"] = {"grid": grid, "xs": xs.tolist(), "ys": ys.tolist(),
                         "extent": [float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])]}
    return snap


def _watched_outputs(model, plan: list[dict], x_in: torch.Tensor) -> dict[int, torch.Tensor]:
    """One forward pass in eval mode (every module's mode restored after), keeping each
    column's watched output flattened to (points, units); column 0 is the input itself."""
    children = dict(model.named_children())
    watch = {c["watch"]: i for i, c in enumerate(plan) if c["watch"] is not None}
    outputs: dict[int, torch.Tensor] = {}
    modes = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        for name, i in watch.items():
            def keep(module, inputs, output, i=i):
                outputs[i] = output.detach().flatten(1)
            handles.append(children[name].register_forward_hook(keep))
        model.eval()
        with torch.no_grad():
            model(x_in)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    outputs[0] = outputs.get(0, x_in.flatten(1))  # inputs: what the first column's weights read
    return outputs


def _column(c: dict, output: torch.Tensor, size: int, shown: int, data, model,
            grid: int | None) -> dict:
    """One column of the snapshot: its first `shown` units with their bias, range and (on the
    input plane, `grid` points a side) map."""
    vals = output[:, :shown].double().cpu().numpy()  # (points, shown)
    maps = _finite_list(vals.T.reshape(shown, grid, grid)) if grid else None
    lo, hi = _finite_list(vals.min(0)), _finite_list(vals.max(0))
    bias = _bias(c)
    b = bias.detach()[:shown].float().cpu().numpy() if bias is not None else None
    bg = (bias.grad.detach()[:shown].abs().float().cpu().numpy()
          if bias is not None and bias.grad is not None else None)
    labels = _labels(c, data, size, shown)
    units = [{"index": j, "label": labels[j],
              "bias": _num(b[j]) if b is not None else None,
              "bias_grad": _num(bg[j]) if bg is not None else None,
              "unit_grad": None, "range": [lo[j], hi[j]],
              "map": maps[j] if maps is not None else None} for j in range(shown)]
    lay = getattr(model, "layer_info", {}).get(c["name"], {})
    block = ({"depth": _depth(c["module"]), "projection": c["module"].proj is not None}
             if c["kind"] == "residual" else None)
    return {"name": c["name"], "kind": c["kind"], "layers": c["layers"], "watch": c["watch"],
            "activation": lay.get("activation"), "size": size, "shown": shown,
            "hidden": size - shown, "block": block, "units": units}


def _bias(c: dict):
    """The bias of the column's units: its reading layer's (a residual block's projection's;
    a block without one adds to its input and has none of its own)."""
    if c["kind"] == "input":
        return None
    if c["kind"] == "residual":
        return c["module"].proj.bias if c["module"].proj is not None else None
    return _entry_linear(c["kind"], c["module"]).bias


def _reader(c: dict) -> nn.Linear:
    """The matrix that reads the column before `c`."""
    return _entry_linear(c["kind"], c["module"])


def _link(model, c: dict, i: int, n_src: int, n_dst: int) -> dict:
    """The links from column i - 1 into column i (`c`): the reading matrix's shown part, or
    identity links for a residual block that adds to its input."""
    if c["kind"] == "residual" and c["module"].proj is None:
        return {"src": i - 1, "dst": i, "kind": "identity", "param": None,
                "note": "skip path h -> h + F(h): the block adds F(h) (its "
                        f"{_depth(c['module'])} linear layers) to its input, which is no single "
                        "matrix; identity links of weight 1 are drawn",
                "weight": np.eye(n_dst, n_src).tolist(), "grad": None}
    reader = _reader(c)
    names = {id(p): n for n, p in model.named_parameters()}
    g = reader.weight.grad
    note = None
    if c["kind"] == "residual":
        note = ("the block's projection to its width; the block then adds F(h) (its "
                f"{_depth(c['module'])} linear layers), which is no single matrix")
    return {"src": i - 1, "dst": i,
            "kind": "projection" if c["kind"] == "residual" else "linear",
            "param": names.get(id(reader.weight)), "note": note,
            "weight": _finite_list(reader.weight.detach()[:n_dst, :n_src].float().cpu().numpy()),
            "grad": _finite_list(g.detach()[:n_dst, :n_src].abs().float().cpu().numpy())
            if g is not None else None}


def _labels(column: dict, data, size: int, shown: int) -> list[str]:
    if column["kind"] == "input":
        return _input_labels(data, size)[:shown]
    if column["kind"] == "output":
        if data.task == "classification":
            return ["logit (class 1 vs 0)"] if size == 1 else [f"class {j}" for j in range(shown)]
        return [f"output {j + 1}" for j in range(shown)]
    return [f"{column['name']}·{j}" for j in range(shown)]


def _depth(block: Residual) -> int:
    return sum(isinstance(m, nn.Linear) for m in block.body)
