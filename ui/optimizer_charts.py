"""The optimizer lab's figures (pure functions: walks, curves and tables in, plotly figures out).

The surface is drawn as contours of log10(f - f_min + 1e-3), so a bowl's floor and a valley's
walls both show; trajectories are animated with plotly frames (the Play button and a slider),
each frame drawing every walk up to that step.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ui.charts import LEGEND, PALETTE, TITLE_PAD, _r, figure

GRID = 121          # contour resolution per axis
MAX_FRAMES = 60     # animation frames, spread over the longest walk
MAX_POINTS = 250    # points per path in a frame: 4 walks x 60 frames stay ~1.5 MB of JSON
FLOOR = 1e-3        # added before the log so the minimum itself has a colour
SURFACE_HEIGHT = 520


def _frame_steps(longest: int) -> list[int]:
    if longest <= 0:
        return [0]
    stride = max(1, math.ceil(longest / MAX_FRAMES))
    steps = list(range(0, longest + 1, stride))
    return steps if steps[-1] == longest else steps + [longest]


def _path_trace(walk: dict, label: str, color: str, upto: int | None = None) -> dict:
    """The walk's path up to step `upto`, thinned to MAX_POINTS evenly spaced points (the
    first and the last kept)."""
    points = walk["trajectory"][: None if upto is None else upto + 1]
    if len(points) > MAX_POINTS:
        stride = math.ceil((len(points) - 1) / (MAX_POINTS - 1))
        points = points[:-1:stride] + points[-1:]
    return dict(type="scatter", mode="lines+markers", x=[_r(p[0]) for p in points],
                y=[_r(p[1]) for p in points], name=label, line=dict(color=color, width=2),
                marker=dict(size=4, color=color), legendgroup=label)


def surface_figure(xs, ys, z, walks: list[tuple[str, dict]], minima, title: str) -> go.Figure:
    """Contours of the surface (z: len(ys) x len(xs) values of f), its minima as stars, and each
    walk's path, animated step by step."""
    z = np.asarray(z, dtype=float)
    finite = z[np.isfinite(z)]
    low = float(finite.min()) if finite.size else 0.0
    shown = np.log10(np.clip(z - low, 0, None) + FLOOR)
    contour = dict(type="contour", x=[_r(v) for v in xs], y=[_r(v) for v in ys],
                   z=[[_r(v) for v in row] for row in shown], colorscale="Viridis",
                   showscale=False, ncontours=30, line=dict(width=0.5), opacity=0.85,
                   hovertemplate="x %{x:.3g}, y %{y:.3g}<extra></extra>")
    stars = dict(type="scatter", mode="markers", x=[m[0] for m in minima],
                 y=[m[1] for m in minima], name="minimum",
                 marker=dict(symbol="star", size=14, color="white",
                             line=dict(color="black", width=1)))
    colors = [PALETTE[k % len(PALETTE)] for k in range(len(walks))]
    paths = [_path_trace(w, label, c) for (label, w), c in zip(walks, colors)]
    longest = max((len(w["trajectory"]) - 1 for _, w in walks), default=0)
    steps = _frame_steps(longest)
    frames = [dict(name=str(s), data=[_path_trace(w, label, c, s)
                                      for (label, w), c in zip(walks, colors)],
                   traces=list(range(2, 2 + len(walks)))) for s in steps]
    play = dict(type="buttons", showactive=False, x=0, y=-0.12, xanchor="left",
                buttons=[dict(label="Play", method="animate",
                              args=[None, dict(frame=dict(duration=60, redraw=False),
                                               transition=dict(duration=0), fromcurrent=False,
                                               mode="immediate")]),
                         dict(label="Pause", method="animate",
                              args=[[None], dict(frame=dict(duration=0, redraw=False),
                                                 mode="immediate")])])
    slider = dict(active=len(steps) - 1, x=0.12, len=0.88, y=-0.05,
                  currentvalue=dict(prefix="step "),
                  steps=[dict(label=str(s), method="animate",
                              args=[[str(s)], dict(frame=dict(duration=0, redraw=False),
                                                   mode="immediate")]) for s in steps])
    (x0, x1), (y0, y1) = (min(xs), max(xs)), (min(ys), max(ys))
    # the legend under the title, in container pixels: plotly.js keeps the plot below it (a
    # paper y of 1.08 drew it across the title), and the slider keeps the bottom
    legend = dict(LEGEND, y=1 - (TITLE_PAD + 26) / SURFACE_HEIGHT, yanchor="top")
    fig = figure([contour, stars, *paths], title, f"surface:{title}", height=SURFACE_HEIGHT,
                 xaxis=dict(range=[x0, x1], title=dict(text="x")),
                 yaxis=dict(range=[y0, y1], title=dict(text="y")),
                 frames=frames, updatemenus=[play], sliders=[slider], legend=legend)
    return fig


def loss_by_step_figure(walks: list[tuple[str, dict]], floor: float | None) -> go.Figure:
    """f - floor against the step on a log axis; f itself on a linear one where the surface
    has no minimum (floor None: a saddle's f falls without bound)."""
    traces = []
    for k, (label, w) in enumerate(walks):
        ys = [p[2] if floor is None else max(p[2] - floor, 1e-300) for p in w["trajectory"]]
        traces.append(dict(type="scatter", mode="lines", x=list(range(len(ys))),
                           y=[_r(v) for v in ys], name=label,
                           line=dict(color=PALETTE[k % len(PALETTE)])))
    if floor is None:
        return figure(traces, "f by step", "surface_f_linear", height=320,
                      xaxis=dict(title=dict(text="step")))
    return figure(traces, "f − f_min by step (log scale)", "surface_f", height=320,
                  xaxis=dict(title=dict(text="step")),
                  yaxis=dict(type="log", exponentformat="power"))


def schedules_figure(curves: list[tuple[str, list[int], list[float]]]) -> go.Figure:
    """Every schedule's learning rate over the planned steps, one line each."""
    traces = [dict(type="scatter", mode="lines", x=steps, y=[_r(v) for v in lrs], name=name,
                   line=dict(color=PALETTE[k % len(PALETTE)]))
              for k, (name, steps, lrs) in enumerate(curves)]
    return figure(traces, "Learning rate by step, every schedule", "schedules", height=340,
                  xaxis=dict(title=dict(text="step")), yaxis=dict(exponentformat="power"))


def lr_range_figure(result: dict, marks: dict[str, float | None]) -> go.Figure:
    """The range test's batch losses and their smoothed curve against the rate (log axis), with
    vertical lines at the marked rates (the suggestion, 2/L, the run's own)."""
    lrs = result["lr"]
    traces = [dict(type="scatter", mode="markers", x=lrs, y=[_r(v) for v in result["loss"]],
                   name="batch loss", marker=dict(size=4, color="#bbbbbb")),
              dict(type="scatter", mode="lines", x=lrs[:len(result["smoothed"])],
                   y=[_r(v) for v in result["smoothed"]], name="smoothed",
                   line=dict(color=PALETTE[0], width=2))]
    shapes, notes = [], []
    for k, (label, lr) in enumerate((m for m in marks.items() if m[1])):
        color = PALETTE[(k + 1) % len(PALETTE)]
        shapes.append(dict(type="line", x0=lr, x1=lr, yref="paper", y0=0, y1=1,
                           line=dict(color=color, dash="dot", width=1.5)))
        notes.append(dict(x=math.log10(lr), y=1 - 0.08 * k, yref="paper", text=label,
                          showarrow=False, xanchor="left", font=dict(size=11, color=color)))
    finite = [v for v in result["smoothed"] if math.isfinite(v)]
    top = 2.5 * max(finite[:max(1, len(finite) // 10)]) if finite else None
    return figure(traces, "Learning-rate range test: loss as the rate grows", "lr_range",
                  height=340, xaxis=dict(type="log", exponentformat="power",
                                         title=dict(text="learning rate")),
                  yaxis=dict(range=[0, top]) if top else {}, shapes=shapes, annotations=notes)
