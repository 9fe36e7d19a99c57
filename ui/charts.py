"""Charts: pure functions from History rows (and plain arrays) to plotly figures.

No Streamlit here, so every chart is testable on its own. Each figure has a fixed `uirevision`
(a zoom survives redraws of an unchanged chart; see docs/ARCHITECTURE.md for live training), and
every trace is thinned to at most MAX_POINTS.

Speed matters: the live view redraws several charts up to five times a second for every user,
and plotly's validation of graph objects cost more than everything else on a refresh (measured:
20 ms for the boundary alone). Figures are therefore written as plain dicts and wrapped without
validation, numbers are rounded to 4 significant digits, the boundary travels as a small PNG, and
scatter points are grouped into one trace per class instead of one colour string per point.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import plotly.graph_objects as go

MAX_POINTS = 500
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
MARGIN = dict(l=10, r=10, t=40, b=10)
NARROWEST = 480  # px: the live column of a 1280-px window, the narrowest a full-width chart gets
# Colour scales written out: figures go to the browser unvalidated (below), so a name reaches
# plotly.js, whose "RdBu", "Blues" and "Greys" run the other way from plotly.py's (its RdBu is
# blue for low values): the captions' "blue +, red -" would be drawn reversed.
DIVERGING = [[0.0, "rgb(178,24,43)"], [0.25, "rgb(244,165,130)"], [0.5, "rgb(247,247,247)"],
             [0.75, "rgb(146,197,222)"], [1.0, "rgb(33,102,172)"]]  # red -, white 0, blue +
BLUES = [[0.0, "#f4f8fc"], [1.0, "#1f5fa8"]]    # light for 0, dark blue for the most
GREYS = [[0.0, "#ffffff"], [1.0, "#000000"]]    # ink on paper: white 0, black 1


TAIL = 10  # newest rows thin() always keeps: a divergence's blow-up is logged step by step


def thin(rows: list[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most max_points + TAIL rows, evenly spaced, always keeping the newest TAIL."""
    if len(rows) <= max_points + TAIL:
        return rows
    head = rows[:-TAIL]
    stride = math.ceil(len(head) / max_points)
    return head[::stride] + rows[-TAIL:]


def _r(v):
    """4 significant digits: what a chart can show, and a third of the JSON. NaN and infinities
    become gaps (None): JSON has no NaN, and the browser would reject the whole figure."""
    return None if v is None or not math.isfinite(v) else float(f"{v:.4g}")


FEW_POINTS = 30  # up to this many points a line also marks each one: a single row stays visible

# The legend sits on the figure's bottom edge (container coordinates), not at a share of the
# plot's height below it: plotly.js then keeps that strip for the legend and lays the x-axis
# ticks and title out above it, so the two never meet, whatever the height or the number of
# legend rows. A paper-relative y (-0.3) landed on the axis title in half-width charts.
LEGEND = dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left")
# The title hangs from the top edge: a figure that widens its top margin (captions above its
# first row of panels) gets the room below the title, where plotly's default (the middle of
# the margin) would move the title down onto them.
TITLE_PAD = 10


def figure(traces: list[dict], title: str, revision: str, height: int = 300,
           frames: list[dict] | None = None, **layout) -> go.Figure:
    """A figure from plain trace dicts (and animation frames), wrapped without plotly's (slow)
    validation. The uirevision names the axis types too: a zoom kept from a linear axis, read
    on a log one, would show a range of powers of ten and an empty chart."""
    base = dict(title=dict(text=title, font=dict(size=14), yref="container", y=1,
                           yanchor="top", pad=dict(t=TITLE_PAD)),
                height=height, margin=MARGIN, legend=LEGEND)
    base.update(layout)
    axes = [(base.get(k) or {}).get("type", "linear") for k in ("xaxis", "yaxis")]
    base["uirevision"] = f"{revision}:{':'.join(axes)}"
    return go.Figure(dict(data=traces, layout=base, frames=frames or []), _validate=False)


def _line(x, y, name, **kw) -> dict:
    x = list(x)
    mode = "lines" if len(x) > FEW_POINTS else "lines+markers"  # one point draws no line
    return dict(type="scatter", mode=mode, x=x, y=[_r(v) for v in y], name=name,
                marker=dict(size=5), **kw)


def _flat_axis(values) -> dict:
    """A y-axis for a series that may be constant: plotly centres a flat line on a -1..1 axis
    (a constant lr of 0.01 read as "0"), so a flat series gets a range around its value."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or max(finite) != min(finite):
        return {}
    v = finite[0]
    half = abs(v) * 0.5 or 1.0
    return dict(range=[v - half, v + half], tickformat=".3~g")


def _log_axis(series) -> dict:
    """A log axis where the values span a decade or more. Over a narrower range plotly labels
    every minor tick of its log axis (2, 3, 4, ... 5, 6 in one crowded row, seen on the weight
    norms), so a narrow series gets a linear axis with plain labels instead."""
    positive = [v for values in series for v in values
                if v is not None and math.isfinite(v) and v > 0]
    if positive and max(positive) >= 10 * min(positive):
        return dict(type="log", exponentformat="power")
    return dict(tickformat=".3~g")


def _series(rows, key, x="step"):
    pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _step_axis(**kw) -> dict:
    return dict(title=dict(text="step"), **kw)


# What each curve is, in the legend: the running train metrics are means over the training
# batches since the previous row (dropout on, weights moving); the eval-mode ones are measured
# like validation's, on training examples.
LABELS = {"train_loss": "train (batches)", "train_acc": "train (batches)",
          "train_eval_loss": "train (eval mode)", "train_eval_acc": "train (eval mode)",
          "val_loss": "validation", "val_acc": "validation"}
DASH = {"val": "dash", "train_eval": "dot"}


def metric_figure(rows: list[dict], keys: tuple[str, ...], title: str, log: bool = False,
                  revision: str | None = None, marks=(), **layout) -> go.Figure:
    """Lines of row metrics against steps (train solid, eval-mode train dotted, validation
    dashed); keys no row has are left out. marks: (step, text, colour) drawn as a labelled
    vertical line at that step."""
    rows = thin(rows)
    traces = []
    for key in keys:
        x, y = _series(rows, key)
        if x or key in keys[:2]:
            dash = next((d for prefix, d in DASH.items() if key.startswith(prefix)), "solid")
            traces.append(_line(x, y, LABELS.get(key, key.replace("_", " ")),
                                line=dict(dash=dash)))
    yaxis = layout.pop("yaxis", {})
    if log:  # powers of ten throughout (plotly's default mixes 10^21 with 100T)
        yaxis.update(type="log", exponentformat="power")
    marks = [m for m in marks if m[0] is not None]
    if marks:
        layout["shapes"] = [dict(type="line", x0=step, x1=step, yref="paper", y0=0, y1=1,
                                 line=dict(color=colour, width=1.5, dash="dot"))
                            for step, _, colour in marks]
        layout["annotations"] = [dict(x=step, y=1, yref="paper", text=text, showarrow=False,
                                      yanchor="bottom", font=dict(size=10, color=colour),
                                      xanchor="right" if i % 2 else "left")
                                 for i, (step, text, colour) in enumerate(marks)]
    return figure(traces, title, revision or title, xaxis=_step_axis(), yaxis=yaxis, **layout)


def _marks(best_step: int | None, diverged_at: int | None) -> list:
    return [(best_step, "best val loss", "#2ca02c"),
            (diverged_at, "diverged: loss not finite", "#d62728")]


def side_by_side_figure(variants: list[tuple[str, list[dict]]], metric: str, title: str,
                        log: bool = False, x_key: str = "step", **layout) -> go.Figure:
    """One colour per variant (the run first): its training batches' `metric` solid and its
    validation's dashed, against the same steps (or epochs: x_key)."""
    traces = []
    for k, (label, rows) in enumerate(variants):
        color = PALETTE[k % len(PALETTE)]
        for key, dash in ((f"train_{metric}", "solid"), (f"val_{metric}", "dash")):
            x, y = _series(thin(rows), key, x_key)
            if x:
                traces.append(_line(x, y, label if dash == "solid" else f"{label}, validation",
                                    line=dict(dash=dash, color=color),
                                    legendgroup=label, showlegend=dash == "solid"))
    yaxis = layout.pop("yaxis", {})
    if log:
        yaxis["type"] = "log"
    elif metric == "loss":  # a diverged variant (1e36) would flatten the others to a line at 0
        firsts = [t["y"][0] for t in traces if t["y"] and t["y"][0] is not None]
        values = [v for t in traces for v in t["y"] if v is not None]
        if firsts and values and max(values) > 10 * max(firsts):
            yaxis["range"] = [0, 1.5 * max(firsts)]
    # half a column wide, the legend takes a row per variant: the figure grows by it, so that
    # four variants still leave the curves room
    layout.setdefault("height", 260 + 20 * len(variants))
    return figure(traces, title, f"side:{metric}:{x_key}",
                  xaxis=dict(title=dict(text=x_key)), yaxis=yaxis, **layout)


def loss_figure(rows, log=False, best_step=None, diverged_at=None):
    """The losses; a run that diverged is drawn on a log axis, where its blow-up (the rows of
    every step before it) reads as the straight climb it is, and the step it ended is marked."""
    return metric_figure(rows, ("train_loss", "val_loss", "train_eval_loss"), "Loss",
                         log or diverged_at is not None, "loss",
                         marks=_marks(best_step, diverged_at))


def accuracy_figure(rows, best_step=None, diverged_at=None):
    return metric_figure(rows, ("train_acc", "val_acc", "train_eval_acc"), "Accuracy",
                         revision="acc", marks=_marks(best_step, diverged_at),
                         yaxis=dict(range=[0, 1.02]))


def lr_figure(steps, lrs, title="Learning rate") -> go.Figure:
    return figure([_line(steps, lrs, "lr")], title, "lr", height=220, showlegend=False,
                  xaxis=_step_axis(), yaxis=dict(_flat_axis(lrs), exponentformat="power"))


def clip_figure(rows: list[dict]) -> go.Figure:
    """How often gradient clipping acted: the share of steps clipped between logged rows."""
    return metric_figure(rows, ("clip_frac",), "Share of steps clipped", revision="clip",
                         yaxis=dict(range=[0, 1.02], tickformat=".0%"), height=220,
                         showlegend=False)


# ----------------------------------------------------------------------------- per-layer


def _layer_names(rows) -> list[str]:
    for r in reversed(rows):
        if r.get("layers"):
            return [layer["name"] for layer in r["layers"]]
    return []


def _layer_series(rows, name, key, positive=False):
    xs, ys = [], []
    for r in rows:
        for layer in r.get("layers") or ():
            v = layer.get(key) if layer["name"] == name else None
            if v is not None and (v > 0 or not positive):
                xs.append(r["step"])
                ys.append(v)
    return xs, ys


def _ramp(i: int, n: int) -> str:
    """Input layers blue, output layers red: depth reads as colour."""
    t = i / max(n - 1, 1)
    return f"rgb({int(40 + 200 * t)},{int(90 + 40 * (1 - abs(2 * t - 1)))},{int(220 - 180 * t)})"


def layer_lines(rows: list[dict], key: str, title: str, log: bool = True) -> go.Figure:
    """One line per layer of a per-layer statistic, coloured from input (blue) to output (red).
    Only rows with layer detail count: a long run's History keeps detail on fewer old rows."""
    rows = thin([r for r in rows if r.get("layers")])
    names = _layer_names(rows)
    traces = [_line(*_layer_series(rows, name, key, positive=log), name,
                    line=dict(color=_ramp(i, len(names)))) for i, name in enumerate(names)]
    yaxis = _log_axis(t["y"] for t in traces) if log else {}
    return figure(traces, title, f"lines-{key}", xaxis=_step_axis(), yaxis=yaxis)


def layer_heatmap(rows: list[dict], key: str = "act_grad_norm", max_columns: int = 200) -> go.Figure:
    """Layers x steps heat strip of log10(key): vanishing shows as a dark band at the input side,
    exploding as a bright one."""
    rows = thin([r for r in rows if r.get("layers")], max_columns)
    names = _layer_names(rows)
    z = []
    for name in names:
        line = []
        for r in rows:
            v = next((lay.get(key) for lay in r["layers"] if lay["name"] == name), None)
            line.append(round(math.log10(v), 3) if v and v > 0 else None)
        z.append(line)
    trace = dict(type="heatmap", z=z, x=[r["step"] for r in rows], y=names, colorscale="Viridis",
                 colorbar=dict(title=dict(text="log10"), thickness=10),
                 hovertemplate="step %{x}<br>%{y}: 10^%{z:.2f}<extra></extra>")
    return figure([trace], "dL/dh per layer (log10), input at the top", "heat",
                  height=max(220, 40 + 22 * len(names)), xaxis=_step_axis(),
                  yaxis=dict(autorange="reversed"))


CAPTION_LEADING = 1.3  # plotly.js sets lines of text 1.3 font sizes apart


def _caption_room(captions: list[str], size: int) -> int:
    """Pixels the tallest of `captions` (in `size`-px type, lines split by <br>) takes above
    its panel: a grid keeps this much free above each row, the first row's in the top margin,
    so a caption meets neither the title nor the row above."""
    lines = max((c.count("<br>") + 1 for c in captions), default=1)
    return math.ceil(lines * size * CAPTION_LEADING) + 4


def _caption(text: str, xd, yd, size: int) -> dict:
    """A panel's caption, centred above it: plotly.js's default anchor ("auto") aligns an
    annotation in the left third of the figure by its left end and in the right third by its
    right end, which pushed the outer columns' captions into their neighbours'."""
    return dict(text=text, x=sum(xd) / 2, y=yd[1], xref="paper", yref="paper",
                xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=size))


def _columns_fitting(captions: list[str], size: int, most: int) -> int:
    """At most `most` columns, fewer where the longest caption line ("horizontal bar") would
    run into its neighbour's (a character of sans-serif type is under half its size wide)."""
    longest = max((len(line) for c in captions for line in c.split("<br>")), default=1)
    return max(1, min(most, int((NARROWEST - 20) / (0.5 * size * longest + 6))))


def _captioned_grid(n: int, cols: int, panel_px: int, room: int, gap: float):
    """A grid of rows `panel_px` tall, each with `room` pixels for its captions above it: the
    panels' domains, the figure's height and its margin (the title, then the first captions)."""
    row_px = panel_px + room
    margin = dict(MARGIN, t=MARGIN["t"] + room)
    height = math.ceil(n / cols) * row_px + margin["t"] + margin["b"]
    return list(_grid_axes(n, cols, gap, room / row_px)), height, margin


def _grid_axes(n: int, cols: int, gap: float = 0.04, vgap: float = 0.25):
    """Domains for a cols-wide grid of n small panels (make_subplots without its overhead).
    vgap: the share of each row's height left free below its panel (tick labels, and the next
    row's caption); a share, not a fixed fraction of the figure, so 30 panels still fit."""
    rows = math.ceil(n / cols)
    width = (1 - gap * (cols - 1)) / cols
    slot = 1 / rows
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = c * (width + gap)
        top = 1 - r * slot
        # clamped: rounding can leave a domain a hair outside [0, 1], which plotly refuses
        yield ([max(0.0, x0), min(1.0, x0 + width)],
               [max(0.0, top - slot * (1 - vgap)), min(1.0, top)])


def channel_heatmap(layers: list[dict]) -> go.Figure | None:
    """One row per image layer, one cell per channel: its mean activation on the logged batch,
    dead channels (zero everywhere, for every example) crossed out. None without image layers."""
    rows = [lay for lay in layers if lay.get("channels")]
    if not rows:
        return None
    width = max(len(lay["channels"]["mean"]) for lay in rows)
    z = [[_r(v) for v in lay["channels"]["mean"]] + [None] * (width - len(lay["channels"]["mean"]))
         for lay in rows]
    names = [lay["name"] for lay in rows]
    dead_x = [c for lay in rows for c, d in enumerate(lay["channels"]["dead"]) if d]
    dead_y = [lay["name"] for lay in rows for d in lay["channels"]["dead"] if d]
    traces = [dict(type="heatmap", z=z, x=list(range(width)), y=names, colorscale="Viridis",
                   colorbar=dict(title=dict(text="mean"), thickness=10),
                   hovertemplate="%{y} channel %{x}: mean %{z:.3g}<extra></extra>")]
    if dead_x:
        traces.append(dict(type="scatter", mode="markers", x=dead_x, y=dead_y, name="dead",
                           marker=dict(symbol="x", size=9, color="#d62728"),
                           hovertemplate="%{y} channel %{x}: dead<extra></extra>"))
    return figure(traces, "Mean activation per channel" + (" (✕: dead)" if dead_x else ""),
                  "channels", height=90 + 28 * len(rows),
                  xaxis=dict(title=dict(text="channel")),
                  yaxis=dict(autorange="reversed", type="category"))


def _time_grads(rows: list[dict], name: str) -> list[tuple[int, list[float]]]:
    return [(r["step"], lay["time_grad"]) for r in rows for lay in r.get("layers") or ()
            if lay["name"] == name and lay.get("time_grad")]


def time_grad_range(runs: list[tuple[list[dict], str]]) -> tuple[float, float] | None:
    """(lowest, highest) log10 dL/dh_t over several runs' layers: side by side, one colour
    means one size in every heatmap."""
    logs = [math.log10(v) for rows, name in runs for _, g in _time_grads(rows, name)
            for v in g if v > 0 and math.isfinite(v)]
    return (_r(min(logs)), _r(max(logs))) if logs else None


def time_grad_heatmap(rows: list[dict], name: str, label: str | None = None,
                      zrange: tuple[float, float] | None = None) -> go.Figure:
    """A recurrent layer's dL/dh_t over time steps (up) and training steps (across), log10: a
    gradient that vanishes back through time shows as a colour fading towards step 0. Side by
    side, `label` names the variant (the title is only its name and the layer's) and `zrange`
    is the colour scale all variants share."""
    logged = _time_grads(rows, name)
    steps = [s for s, _ in logged]
    length = max((len(g) for _, g in logged), default=0)
    z = [[_r(math.log10(g[t])) if t < len(g) and g[t] > 0 else None for _, g in logged]
         for t in range(length)]
    trace = dict(type="heatmap", x=steps, y=list(range(length)), z=z, colorscale="Viridis",
                 colorbar=dict(title=dict(text="log10"), thickness=10),
                 hovertemplate="training step %{x}, time step %{y}: 10^%{z:.2f}<extra></extra>")
    if zrange is not None:
        trace.update(zmin=zrange[0], zmax=zrange[1])
    zeros = [(i, j) for j, (_, g) in enumerate(logged) for i in range(len(g)) if g[i] == 0]
    if zeros:  # no gradient at all (saturated units): the lowest colour, not a blank cell
        floor = zrange[0] if zrange else min((v for row in z for v in row if v is not None),
                                             default=0.0)
        text = [["" for _ in logged] for _ in range(length)]
        for i, j in zeros:
            z[i][j], text[i][j] = floor, " (drawn at the floor: it is exactly 0)"
        trace.update(text=text, hovertemplate="training step %{x}, time step %{y}: "
                     "10^%{z:.2f}%{text}<extra></extra>")
    title = f"{label} · {name}" if label else f"{name}: dL/dh_t through time (log10)"
    return figure([trace], title, f"time_grad:{label}:{name}",
                  height=320, xaxis=dict(title=dict(text="training step")),
                  yaxis=dict(title=dict(text="time step t")))


def trajectories_figure(t: dict) -> go.Figure:
    """Each sequence's hidden state moving step by step through the plane of the states' two
    main directions; a circle marks its first step."""
    traces = []
    for k, path in enumerate(t["paths"]):
        xs, ys = [_r(p[0]) for p in path], [_r(p[1]) for p in path]
        traces.append(dict(type="scatter", mode="lines+markers", x=xs, y=ys,
                           name=f"sequence {k + 1}", marker=dict(size=4),
                           hovertemplate="step %{text}<extra></extra>",
                           text=list(range(len(path)))))
        traces.append(dict(type="scatter", mode="markers", x=xs[:1], y=ys[:1], showlegend=False,
                           marker=dict(size=10, symbol="circle-open"), hoverinfo="skip"))
    return figure(traces, f"{t['layer']}: hidden-state paths of validation sequences "
                  f"({t['explained']:.0%} of their spread)", f"paths:{t['layer']}", height=340)


def attention_figure(att: dict, names: list[str]) -> go.Figure:
    """The decoder's attention: one row per answer, one column per input, each row summing to
    1; reversal shows as the anti-diagonal."""
    trace = dict(type="heatmap", z=[[_r(v) for v in row] for row in att["weights"]],
                 x=[f"{k}:{names[i]}" for k, i in enumerate(att["inputs"])],
                 y=[f"{k}:{names[i]}" for k, i in enumerate(att["answers"])],
                 colorscale=BLUES, zmin=0, zmax=1,
                 hovertemplate="answer %{y} looked at input %{x}: %{z:.2f}<extra></extra>")
    return figure([trace], "Attention while answering validation sequence 1 (rows: answers, "
                  "columns: inputs)", "attention", height=360,
                  xaxis=dict(title=dict(text="input step"), type="category"),
                  yaxis=dict(title=dict(text="answer step"), type="category",
                             autorange="reversed"))


def gates_figure(gates: dict[str, list[float]], name: str) -> go.Figure:
    """Each gate's mean value at every time step of the latest logged batch."""
    traces = [_line(range(len(v)), v, gate) for gate, v in gates.items()]
    return figure(traces, f"{name}: gate values over time (latest logged batch)",
                  f"gates:{name}", height=260, xaxis=dict(title=dict(text="time step t")),
                  yaxis=dict(range=[0, 1]))


def activation_histograms(samples: dict, layers: list[dict], bins: int = 40) -> go.Figure:
    """Small multiples: each layer's activation values, titled with dead/saturated shares."""
    names = [lay["name"] for lay in layers if lay["name"] in samples]
    if not names:
        return figure([], "Activations (start training to see them)", "hist", height=200)
    by_name = {lay["name"]: lay for lay in layers}
    cols = min(4, len(names))
    n_rows = math.ceil(len(names) / cols)
    traces, layout, notes = [], {}, []
    for i, (name, (xd, yd)) in enumerate(zip(names, _grid_axes(len(names), cols))):
        values = np.asarray(samples[name], dtype=float)
        counts, edges = np.histogram(values, bins=bins)
        suffix = "" if i == 0 else str(i + 1)
        traces.append(dict(type="bar", x=[_r(v) for v in (edges[:-1] + edges[1:]) / 2],
                           y=counts.tolist(), marker=dict(color=_ramp(i, len(names))),
                           xaxis=f"x{suffix}", yaxis=f"y{suffix}", showlegend=False, name=name))
        layout[f"xaxis{suffix}"] = dict(domain=xd, anchor=f"y{suffix}")
        layout[f"yaxis{suffix}"] = dict(domain=yd, anchor=f"x{suffix}")
        lay = by_name[name]
        caption = [name]
        if lay.get("dead_frac") is not None:
            caption.append(f"dead {lay['dead_frac']:.0%}")
        if lay.get("saturated_frac") is not None:
            caption.append(f"saturated {lay['saturated_frac']:.0%}")
        notes.append(_caption(" · ".join(caption), xd, yd, 11))
    return figure(traces, "Activation distributions (latest logged step)", "hist",
                  height=180 * n_rows + 60, bargap=0.05, annotations=notes, **layout)


# ----------------------------------------------------------------------------- data and boundary


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


NO_PREDICTION = (215, 215, 215)  # light grey: where the model's output is not a number


def class_image(probs: np.ndarray) -> np.ndarray:
    """(H, W, C) class probabilities -> RGB image: the winning class's colour, faded toward
    white where the model is unsure (max probability near 1/C)."""
    colors = np.stack([_rgb(PALETTE[c % len(PALETTE)]) for c in range(probs.shape[-1])])
    valid = np.isfinite(probs).all(-1)
    probs = np.where(valid[..., None], probs, 0.0)
    winner = probs.argmax(-1)
    k = probs.shape[-1]
    confidence = (probs.max(-1) - 1.0 / k) / (1.0 - 1.0 / k)
    alpha = 0.15 + 0.55 * np.clip(confidence, 0, 1)[..., None]
    rgb = (255 * (1 - alpha) + colors[winner] * alpha).astype(np.uint8)
    rgb[~valid] = NO_PREDICTION  # a NaN output (a diverged net) is "no prediction", not black
    return rgb


def png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image  # pillow ships with streamlit
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _point_traces(points, task) -> list[dict]:
    traces = []
    for split, (xy, labels) in points.items():
        if len(xy) == 0:
            continue
        symbol = "circle" if split == "train" else "x"
        common = dict(type="scatter", mode="markers", hovertemplate="%{x:.2f}, %{y:.2f}<extra></extra>")
        if task != "classification":
            traces.append(dict(common, x=xy[:, 0].round(3).tolist(), y=xy[:, 1].round(3).tolist(),
                               name=split, marker=dict(
                                   color=np.asarray(labels).round(3).tolist(), colorscale=DIVERGING,
                                   cmid=0, size=6, symbol=symbol, line=dict(color="black", width=0.4))))
            continue
        labels = np.asarray(labels)
        for c in np.unique(labels):
            sel = xy[labels == c]
            traces.append(dict(common, x=sel[:, 0].round(3).tolist(), y=sel[:, 1].round(3).tolist(),
                               name=f"{split} · class {int(c)}", legendgroup=split,
                               showlegend=False,
                               marker=dict(color=PALETTE[int(c) % len(PALETTE)], symbol=symbol,
                                           size=6 if split == "train" else 7,
                                           line=dict(color="white", width=0.6))))
    return traces


def boundary_figure(xs: np.ndarray, ys: np.ndarray, outputs: np.ndarray | None,
                    points: dict[str, tuple[np.ndarray, np.ndarray]], task: str) -> go.Figure:
    """Decision boundary (classification: outputs (H, W, C) probabilities) or prediction surface
    (regression: outputs (H, W)) over the plane, with the data points on top (circles: train,
    crosses: validation and test). points: split name -> (xy (n, 2), labels or targets)."""
    traces = []
    dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    if outputs is not None and task == "classification":
        # image row i is drawn at y0 + i*dy: row 0 of the grid is its lowest y
        traces.append(dict(type="image", source=png_data_uri(class_image(outputs)),
                           x0=float(xs[0]), dx=dx, y0=float(ys[0]), dy=dy, hoverinfo="skip"))
    elif outputs is not None:
        z = np.asarray(outputs, dtype=float).round(3)
        traces.append(dict(type="heatmap", z=np.where(np.isfinite(z), z, None).tolist(),
                           x=xs.round(4).tolist(), y=ys.round(4).tolist(), colorscale=DIVERGING,
                           zmid=0, opacity=0.75, colorbar=dict(thickness=10),
                           hovertemplate="prediction %{z:.2f}<extra></extra>"))
    traces += _point_traces(points, task)
    title = "Decision boundary" if task == "classification" else "Prediction surface"
    return figure(traces, title, "boundary", height=420,
                  xaxis=dict(range=[float(xs[0]), float(xs[-1])], title=dict(text="x1"),
                             constrain="domain"),
                  yaxis=dict(range=[float(ys[0]), float(ys[-1])], title=dict(text="x2"),
                             scaleanchor="x", scaleratio=1, autorange=False))


def digits_figure(images: np.ndarray, labels: np.ndarray, n: int = 24,
                  class_names=None, columns: int | None = None,
                  title: str = "Sample images and labels", captions=None) -> go.Figure:
    """A strip of images (8x8 digits, the shapes' canvases) with their labels (class names when
    the set has them), or with `captions` of their own."""
    n = min(n, len(images))
    cols = min(columns or (8 if class_names else 12), n)
    if captions:
        texts = list(captions[:n])
    elif class_names:
        texts = [class_names[int(k)].replace(" ", "<br>") for k in labels[:n]]
    else:
        texts = [str(int(k)) for k in labels[:n]]
    cols = _columns_fitting(texts, 10, cols)
    room = _caption_room(texts, 10)  # "3<br>→ 8": two lines, above the first row too
    cells, height, margin = _captioned_grid(n, cols, 80 if class_names else 72, room, gap=0.01)
    traces, layout, notes = [], {}, []
    for i, (xd, yd) in enumerate(cells):
        suffix = "" if i == 0 else str(i + 1)
        traces.append(dict(type="heatmap", z=np.asarray(images[i])[::-1].round(2).tolist(),
                           colorscale=GREYS, showscale=False, hoverinfo="skip",
                           xaxis=f"x{suffix}", yaxis=f"y{suffix}"))
        # square pixels, the image centred under its caption in a cell of either shape
        layout[f"xaxis{suffix}"] = dict(domain=xd, anchor=f"y{suffix}", visible=False,
                                        constrain="domain")
        layout[f"yaxis{suffix}"] = dict(domain=yd, anchor=f"x{suffix}", visible=False,
                                        scaleanchor=f"x{suffix}", constrain="domain")
        notes.append(_caption(texts[i], xd, yd, 10))
    return figure(traces, title, "digits", height=height, margin=margin, annotations=notes,
                  **layout)


def sequence_figure(x: np.ndarray, y: np.ndarray, predicted: np.ndarray | None = None,
                    n: int = 6) -> go.Figure:
    """The first sequences, one small chart each: the first input feature over the steps (a
    marker where a second feature, the adding problem's marks, is on), titled with the target
    and, once trained, the prediction."""
    n = min(n, len(x))
    cols = 3
    # target and prediction on two lines: on one, a third of the 500-px live column is too
    # narrow and each caption ran into the next
    texts = [f"target {float(np.ravel(y[i])[0]):.3g}" + (
        "" if predicted is None else f"<br>predicted {float(np.ravel(predicted[i])[0]):.3g}")
        for i in range(n)]
    cells, height, margin = _captioned_grid(n, cols, 94, _caption_room(texts, 11), gap=0.06)
    traces, layout, notes = [], {}, []
    for i, (xd, yd) in enumerate(cells):
        suffix = "" if i == 0 else str(i + 1)
        steps = list(range(x.shape[1]))
        traces.append(dict(type="scatter", mode="lines", x=steps, y=[_r(v) for v in x[i, :, 0]],
                           line=dict(width=1.5, color="#1f77b4"), showlegend=False,
                           xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                           hovertemplate="step %{x}: %{y:.3g}<extra></extra>"))
        if x.shape[2] > 1:  # a mark channel: where it is on
            marked = [t for t in steps if x[i, t, 1] > x[:, :, 1].mean()]
            traces.append(dict(type="scatter", mode="markers", x=marked,
                               y=[_r(x[i, t, 0]) for t in marked], showlegend=False,
                               marker=dict(size=9, color="#d62728"), xaxis=f"x{suffix}",
                               yaxis=f"y{suffix}", hovertemplate="marked step %{x}<extra></extra>"))
        layout[f"xaxis{suffix}"] = dict(domain=xd, anchor=f"y{suffix}", showticklabels=False)
        layout[f"yaxis{suffix}"] = dict(domain=yd, anchor=f"x{suffix}", showticklabels=False)
        notes.append(_caption(texts[i], xd, yd, 11))
    return figure(traces, "Sample sequences" + (" (red: marked steps)" if x.shape[2] > 1 else ""),
                  "sequences", height=height, margin=margin, annotations=notes, **layout)


# A table's geometry in plotly.js (measured in Chromium): a cell's text wraps at its spaces to
# the column's width less 8 px each side; a row is cells.height (20 px; the header's 28) while
# it is one line, and 15 px plus 1.3 font sizes a line once it wraps.
TABLE_FONT = 12
CELL_PAD = 16
MONO_CHAR, TEXT_CHAR = 7.3, 7.0  # px a 12-px character takes: monospace, sans-serif (at most)


def _wrapped_lines(text: str, chars: int) -> int:
    """Lines `text` takes in a cell `chars` characters wide: broken at <br>, wrapped at spaces
    (a longer word overflows its line, as plotly.js draws it)."""
    lines = 0
    for part in str(text).split("<br>"):
        lines, used = lines + 1, 0
        for word in part.split(" "):
            if used and used + 1 + len(word) > chars:
                lines, used = lines + 1, len(word)
            else:
                used += len(word) + (1 if used else 0)
    return lines


def _table_row_px(texts: list[str], chars: int, one_line_px: int) -> int:
    lines = max(_wrapped_lines(t, chars) for t in texts)
    return one_line_px if lines == 1 else math.ceil(15 + lines * TABLE_FONT * CAPTION_LEADING)


def table_height(header: list[str], columns: list[list[str]], width: int = NARROWEST) -> int:
    """The figure height that shows every row of a table `width` px wide: plotly.js draws
    what does not fit behind a scroll bar, which read as a table of its first rows only."""
    column_px = (width - MARGIN["l"] - MARGIN["r"]) / len(columns) - CELL_PAD
    mono, text = max(1, int(column_px / MONO_CHAR)), max(1, int(column_px / TEXT_CHAR))
    rows = sum(_table_row_px([col[k] for col in columns], mono, 20)
               for k in range(len(columns[0])))
    return MARGIN["t"] + _table_row_px(header, text, 28) + rows + MARGIN["b"] + 4


def step_answers_figure(inputs: list[str], targets: list[str],
                        predicted: list[str] | None = None,
                        title: str = "Sample sequences (one symbol a step; · blank, ▶ go)",
                        more: dict[str, list[str]] | None = None) -> go.Figure:
    """Sequences with an answer at every step, as text: what the net read, what it should
    answer at each step, what it answers, and any `more` columns (header -> cells)."""
    header = ["read", "should answer"] + (["answers"] if predicted is not None else [])
    columns = [inputs, targets] + ([predicted] if predicted is not None else [])
    for name, cells in (more or {}).items():
        header.append(name)
        columns.append(cells)
    trace = dict(type="table", header=dict(values=header, align="left",
                                           font=dict(size=TABLE_FONT)),
                 cells=dict(values=columns, align="left",
                            font=dict(family="monospace", size=TABLE_FONT)))
    return figure([trace], title, "steps", height=table_height(header, columns))


def embedding_figure(points: dict) -> go.Figure:
    """Each token's embedding vector on the vectors' two principal axes, labelled."""
    trace = dict(type="scatter", mode="text", x=[_r(v) for v in points["x"]],
                 y=[_r(v) for v in points["y"]], text=points["labels"],
                 textfont=dict(size=14), hoverinfo="text")
    return figure([trace], f"Embeddings on their two main axes ({points['explained']:.0%} of "
                  "their spread): characters used alike sit close", "embedding", height=360)


def image_rows_figure(rows: list[tuple[str, list]], title: str, revision: str,
                      diverging: bool = False) -> go.Figure:
    """Small images in rows, one row per layer: rows = [(caption, [2-D arrays])]. Each image has
    its own colour range (a faint map still shows its pattern); diverging: kernels, red for
    negative and blue for positive weights around a white zero."""
    cols = max((len(images) for _, images in rows), default=1) or 1
    cells = list(_grid_axes(len(rows) * cols, cols, gap=0.01, vgap=0.3))
    traces, layout, notes = [], {}, []
    for r, (caption, images) in enumerate(rows):
        for c, image in enumerate(images):
            i = r * cols + c
            xd, yd = cells[i]
            suffix = "" if i == 0 else str(i + 1)
            z = np.asarray(image, dtype=float)
            trace = dict(type="heatmap", z=z[::-1].round(3).tolist(), showscale=False,
                         xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                         hovertemplate="%{z:.3g}<extra></extra>")
            if diverging:
                top = float(np.abs(z).max()) or 1.0
                trace.update(colorscale=DIVERGING, zmin=-top, zmax=top)
            else:
                trace.update(colorscale="Viridis")
            traces.append(trace)
            layout[f"xaxis{suffix}"] = dict(domain=xd, anchor=f"y{suffix}", visible=False)
            layout[f"yaxis{suffix}"] = dict(domain=yd, anchor=f"x{suffix}", visible=False,
                                            scaleanchor=f"x{suffix}", constrain="domain")
        notes.append(dict(text=caption, x=0, y=cells[r * cols][1][1], xref="paper",
                          yref="paper", xanchor="left", yanchor="bottom", showarrow=False,
                          font=dict(size=11)))
    return figure(traces, title, revision, height=max(160, 110 * len(rows) + 50),
                  annotations=notes, **layout)


def confusion_figure(matrix: list[list[int]], names: list[str]) -> go.Figure:
    """Counts of (true class, predicted class): the diagonal is right, the rest says which
    classes the net mixes up."""
    z = np.asarray(matrix)
    labels = [str(n) for n in names]
    trace = dict(type="heatmap", z=z.tolist(), x=labels, y=labels,
                 colorscale=BLUES, showscale=False,
                 text=z.tolist(), texttemplate="%{text}",
                 hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>")
    side = max(260, 40 * len(labels) + 120)
    return figure([trace], "Confusion matrix", "confusion", height=side,
                  xaxis=dict(title=dict(text="predicted"), type="category", side="bottom"),
                  yaxis=dict(title=dict(text="true"), type="category", autorange="reversed"))


def curve_figure(report: dict, kind: str, point: tuple | None = None) -> go.Figure:
    """ROC (kind "roc": true against false positive rate) or precision-recall ("pr") curves,
    one per class against the rest (class 1 only for two classes), with each area in the
    legend; `point` marks the current threshold (x, y) on a two-class curve."""
    rows = report["one_vs_rest"]
    if report["classes"] == 2:
        rows = rows[1:]
    traces = []
    for i, row in enumerate(rows):
        if kind == "roc":
            x, y, area = row["roc"]["fpr"], row["roc"]["tpr"], row["auc"]
            label = f"AUC {area:.3f}" if area is not None else "AUC undefined"
        else:
            x, y, area = row["pr"]["recall"], row["pr"]["precision"], row["ap"]
            label = f"AP {area:.3f}" if area is not None else "AP undefined"
        traces.append(dict(type="scatter", mode="lines", x=x, y=y, name=f"{row['name']} · {label}",
                           line=dict(color=PALETTE[row["class"] % len(PALETTE)], width=2),
                           hovertemplate=f"{row['name']}<br>%{{x:.3f}}, %{{y:.3f}}<extra></extra>"))
    if kind == "roc":  # a coin flip's line, for comparison
        traces.append(dict(type="scatter", mode="lines", x=[0, 1], y=[0, 1], name="chance",
                           line=dict(color="#aaaaaa", dash="dot", width=1)))
    if point is not None:
        traces.append(dict(type="scatter", mode="markers", x=[point[0]], y=[point[1]],
                           name="this threshold", marker=dict(size=10, color="black")))
    axes = ("false positive rate", "true positive rate") if kind == "roc" else \
        ("recall", "precision")
    # many classes: the per-class table next to the curves holds their areas, not a legend
    return figure(traces, "ROC curve" if kind == "roc" else "Precision-recall curve", kind,
                  height=340, xaxis=dict(title=dict(text=axes[0]), range=[0, 1.02]),
                  yaxis=dict(title=dict(text=axes[1]), range=[0, 1.02]),
                  showlegend=len(rows) <= 3)


def table_figure(x: np.ndarray, y: np.ndarray, names: list[str],
                 classes: list[str] | None = None) -> go.Figure:
    """The first two input columns of a table dataset, named by their columns: one trace per class
    for classification (the legend maps each label to its class number), a colour scale for a
    continuous target."""
    second = x[:, 1] if x.shape[1] > 1 else np.zeros(len(x))
    if classes is None:
        traces = [dict(type="scatter", mode="markers", x=x[:, 0].round(4).tolist(),
                       y=second.round(4).tolist(), name="target",
                       marker=dict(color=np.asarray(y).round(4).tolist(), colorscale="Viridis",
                                   size=6, showscale=True))]
    else:
        y = np.asarray(y)
        traces = [dict(type="scatter", mode="markers", x=x[y == k, 0].round(4).tolist(),
                       y=second[y == k].round(4).tolist(), name=f"{label} (class {k})",
                       marker=dict(color=PALETTE[k % len(PALETTE)], size=6))
                  for k, label in enumerate(classes)]
    return figure(traces, "Data (first two input columns)", "table", height=360,
                  xaxis=dict(title=dict(text=names[0])),
                  yaxis=dict(title=dict(text=names[1] if len(names) > 1 else "")),
                  showlegend=classes is not None)
