"""Charts: pure functions from History rows (and plain arrays) to plotly figures.

No Streamlit here, so every chart is testable on its own. Each figure has a fixed `uirevision`
so a user's zoom survives the live refreshes, and every trace is thinned to MAX_POINTS.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAX_POINTS = 1000
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
MARGIN = dict(l=10, r=10, t=40, b=10)


def thin(rows: list[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most max_points rows, evenly spaced, always keeping the newest one."""
    if len(rows) <= max_points:
        return rows
    stride = math.ceil(len(rows) / max_points)
    kept = rows[::stride]
    if kept[-1] is not rows[-1]:
        kept = kept[:-1] + [rows[-1]]
    return kept


def _layout(fig: go.Figure, title: str, revision: str, height: int = 300, **kw) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=MARGIN,
                      uirevision=revision, legend=dict(orientation="h", y=-0.3), **kw)
    return fig


def _series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_figure(rows: list[dict], keys: tuple[str, ...], title: str, log: bool = False,
                  revision: str | None = None) -> go.Figure:
    """Lines of row metrics against steps (train solid, validation dashed)."""
    rows = thin(rows)
    fig = go.Figure()
    for key in keys:
        x, y = _series(rows, key)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=key.replace("_", " "),
                                 line=dict(dash="dash" if key.startswith("val") else "solid")))
    fig.update_xaxes(title_text="step")
    if log:
        fig.update_yaxes(type="log")
    return _layout(fig, title, revision or title)


def loss_figure(rows, log=False):
    return metric_figure(rows, ("train_loss", "val_loss"), "Loss", log, "loss")


def accuracy_figure(rows):
    fig = metric_figure(rows, ("train_acc", "val_acc"), "Accuracy", revision="acc")
    return fig.update_yaxes(range=[0, 1.02])


def lr_figure(steps, lrs, title="Learning rate") -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(steps), y=list(lrs), mode="lines", name="lr"))
    fig.update_xaxes(title_text="step")
    return _layout(fig, title, "lr", height=220, showlegend=False)


# ----------------------------------------------------------------------------- per-layer


def _layer_names(rows) -> list[str]:
    for r in reversed(rows):
        if r.get("layers"):
            return [layer["name"] for layer in r["layers"]]
    return []


def _layer_series(rows, name, key):
    xs, ys = [], []
    for r in rows:
        for layer in r.get("layers") or ():
            if layer["name"] == name and layer.get(key) is not None:
                xs.append(r["step"])
                ys.append(layer[key])
    return xs, ys


def layer_lines(rows: list[dict], key: str, title: str, log: bool = True) -> go.Figure:
    """One line per layer of a per-layer statistic, colours from input (blue) to output."""
    rows = thin(rows)
    names = _layer_names(rows)
    fig = go.Figure()
    for i, name in enumerate(names):
        x, y = _layer_series(rows, name, key)
        if log:
            x, y = zip(*[(a, b) for a, b in zip(x, y) if b > 0]) if any(b > 0 for b in y) else ([], [])
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines", name=name,
                                 line=dict(color=_ramp(i, len(names)))))
    fig.update_xaxes(title_text="step")
    if log:
        fig.update_yaxes(type="log", exponentformat="power")
    return _layout(fig, title, f"lines-{key}")


def _ramp(i: int, n: int) -> str:
    """Input layers blue, output layers red: depth reads as colour."""
    t = i / max(n - 1, 1)
    return f"rgb({int(40 + 200 * t)},{int(90 + 40 * (1 - abs(2 * t - 1)))},{int(220 - 180 * t)})"


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
            line.append(math.log10(v) if v and v > 0 else None)
        z.append(line)
    fig = go.Figure(go.Heatmap(z=z, x=[r["step"] for r in rows], y=names, colorscale="Viridis",
                               colorbar=dict(title="log10", thickness=10),
                               hovertemplate="step %{x}<br>%{y}: 10^%{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="step")
    return _layout(fig, "dL/dh per layer (log10), input at the top", "heat",
                   height=max(220, 40 + 22 * len(names)))


def activation_histograms(samples: dict, layers: list[dict], bins: int = 40) -> go.Figure:
    """Small multiples: each layer's activation values, titled with dead/saturated shares."""
    names = [lay["name"] for lay in layers if lay["name"] in samples]
    if not names:
        return _layout(go.Figure(), "Activations (start training to see them)", "hist", height=200)
    cols = min(4, len(names))
    n_rows = math.ceil(len(names) / cols)
    by_name = {lay["name"]: lay for lay in layers}

    def caption(name):
        lay = by_name[name]
        parts = [name]
        if lay.get("dead_frac") is not None:
            parts.append(f"dead {lay['dead_frac']:.0%}")
        if lay.get("saturated_frac") is not None:
            parts.append(f"saturated {lay['saturated_frac']:.0%}")
        return " · ".join(parts)

    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[caption(n) for n in names])
    for i, name in enumerate(names):
        values = np.asarray(samples[name], dtype=float)
        fig.add_trace(go.Histogram(x=values, nbinsx=bins, name=name, showlegend=False,
                                   marker_color=_ramp(i, len(names))),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font_size=11)
    return _layout(fig, "Activation distributions (latest logged step)", "hist",
                   height=180 * n_rows + 60, bargap=0.05)


# ----------------------------------------------------------------------------- data and boundary


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def class_image(probs: np.ndarray) -> np.ndarray:
    """(H, W, C) class probabilities -> RGB image: the winning class's colour, faded toward
    white where the model is unsure (max probability near 1/C)."""
    colors = np.stack([_rgb(PALETTE[c % len(PALETTE)]) for c in range(probs.shape[-1])])
    winner = probs.argmax(-1)
    k = probs.shape[-1]
    confidence = (probs.max(-1) - 1.0 / k) / (1.0 - 1.0 / k)
    alpha = 0.15 + 0.55 * np.clip(confidence, 0, 1)[..., None]
    return (255 * (1 - alpha) + colors[winner] * alpha).astype(np.uint8)


def boundary_figure(xs: np.ndarray, ys: np.ndarray, outputs: np.ndarray | None,
                    points: dict[str, tuple[np.ndarray, np.ndarray]], task: str) -> go.Figure:
    """Decision boundary (classification: outputs (H, W, C) probabilities) or prediction surface
    (regression: outputs (H, W)) over the plane, with the data points on top.
    points: split name -> (xy (n, 2), labels or targets)."""
    fig = go.Figure()
    if outputs is not None:
        if task == "classification":
            fig.add_trace(go.Image(z=class_image(outputs), x0=xs[0], dx=xs[1] - xs[0], y0=ys[0],
                                   dy=ys[1] - ys[0], hoverinfo="skip"))
        else:
            fig.add_trace(go.Heatmap(z=outputs, x=xs, y=ys, colorscale="RdBu", zmid=0,
                                     opacity=0.75, colorbar=dict(thickness=10),
                                     hovertemplate="prediction %{z:.2f}<extra></extra>"))
    for split, (xy, labels) in points.items():
        if len(xy) == 0:
            continue
        symbol = "circle" if split == "train" else "x"
        if task == "classification":
            color = [PALETTE[int(c) % len(PALETTE)] for c in labels]
            marker = dict(color=color, size=6 if split == "train" else 7, symbol=symbol,
                          line=dict(color="white", width=0.6))
        else:
            marker = dict(color=labels, colorscale="RdBu", cmid=0, size=6, symbol=symbol,
                          line=dict(color="black", width=0.4))
        fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=split,
                                 marker=marker, hovertemplate="%{x:.2f}, %{y:.2f}<extra></extra>"))
    fig.update_xaxes(range=[xs[0], xs[-1]], title_text="x1", constrain="domain")
    fig.update_yaxes(range=[ys[0], ys[-1]], title_text="x2", scaleanchor="x", scaleratio=1)
    title = "Decision boundary" if task == "classification" else "Prediction surface"
    return _layout(fig, title, "boundary", height=420)


def digits_figure(images: np.ndarray, labels: np.ndarray, n: int = 24) -> go.Figure:
    """A strip of 8x8 digit images with their labels."""
    n = min(n, len(images))
    cols = min(12, n)
    fig = make_subplots(rows=math.ceil(n / cols), cols=cols,
                        subplot_titles=[str(int(v)) for v in labels[:n]],
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    for i in range(n):
        fig.add_trace(go.Heatmap(z=images[i][::-1], colorscale="Greys", showscale=False,
                                 hoverinfo="skip"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "Sample images and labels", "digits", height=90 * math.ceil(n / cols) + 60)


def table_figure(x: np.ndarray, y: np.ndarray, names: list[str]) -> go.Figure:
    """First two input columns of a table dataset, coloured by target."""
    fig = go.Figure(go.Scatter(x=x[:, 0], y=x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)),
                               mode="markers", marker=dict(color=y, colorscale="Viridis", size=6)))
    fig.update_xaxes(title_text=names[0])
    if len(names) > 1:
        fig.update_yaxes(title_text=names[1])
    return _layout(fig, "Data (first two input columns)", "table", height=360)
