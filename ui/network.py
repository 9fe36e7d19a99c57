"""The network view: engine.lab.netview's snapshot -> a plotly figure (a plain dict), drawn the way
TensorFlow Playground draws a net.

Columns of neurons left to right; each neuron a small square showing its output over the input
plane (2-D data), scaled to its own range: orange positive, blue negative, white zero (hover for
the numbers). Links are lines whose colour and width follow the weight (orange positive, blue
negative, thicker = larger), or with color_by="gradient" the weight's |dL/dW| on a log scale over
GRAD_DECADES decades, so a layer whose gradient vanished fades out; squares fade with their
unit's gradient too. A unit that is 0 everywhere on the plane (a dead ReLU) is framed in red; in
the gradient view a unit that got no gradient on the latest batch is framed in light red.

Why layout images and not heatmap traces: a heatmap needs its own pair of axes per neuron, and a
plotly figure with ~100 axes is slow to lay out and redraw (every axis is laid out and drawn on
each update), while a layout image is one <image> element; a 24x24 PNG is ~1.5 KB against
~5 KB of heatmap numbers. Hover comes from one invisible marker trace over the neurons and one
over the link midpoints. Links are grouped into a few traces by colour and width bucket (lines
joined with gaps), not one trace per link: a 12-wide net has ~300 links, and ~300 traces make
plotly's redraw slow.

Many layers: past `max_columns` columns the first and last few are drawn with a "…" column
between them (links are drawn only between columns that are neighbours in the net).
"""
from __future__ import annotations

import math

import numpy as np

from .charts import MARGIN, png_data_uri

POSITIVE = np.array([245, 147, 34], dtype=float)   # TFP's orange
NEGATIVE = np.array([8, 119, 189], dtype=float)    # TFP's blue
ZERO = np.array([250, 250, 250], dtype=float)
NO_VALUE = (215, 215, 215)
GRAD_COLOR = "106,61,154"  # purple: a gradient has a size, not a sign
DEAD = "#d62728"           # frame of a unit that is 0 everywhere (a dead ReLU)
NO_GRAD = "#f7a1a1"        # gradient view: frame of a unit that got no gradient this batch
LEVELS = 6                 # width/opacity buckets for links
GRAD_DECADES = 5           # gradient colours span max/10^5 .. max
ROW_PX = 46                # vertical pixels per neuron row
SQUARE = 0.78              # neuron square: share of a row (layout images keep their aspect)


def _g(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def unit_image(values, fade: float = 1.0) -> np.ndarray:
    """(n, n) values (row 0 = lowest y, None/NaN allowed) -> (n, n, 3) uint8 image with row 0 at
    the top, scaled to the map's own largest |value|: blue -, white 0, orange +; fade < 1 blends
    it toward white (opaque still, so the links behind stay hidden)."""
    v = np.array(values, dtype=float)
    valid = np.isfinite(v)
    v = np.where(valid, v, 0.0)
    scale = np.abs(v).max() or 1.0
    t = (v / scale)[..., None]
    rgb = ZERO * (1 - np.abs(t)) + np.where(t > 0, POSITIVE, NEGATIVE) * np.abs(t)
    rgb[~valid] = NO_VALUE
    rgb = (255 * (1 - fade) + rgb * fade).round().astype(np.uint8)
    return rgb[::-1]


def _pick_columns(n: int, max_columns: int) -> list[int | None]:
    """Column indices to draw, None for the "…" slot."""
    if n <= max_columns:
        return list(range(n))
    head = max(2, max_columns // 2)
    tail = max(1, max_columns - head - 1)
    return list(range(head)) + [None] + list(range(n - tail, n))


def _unit_y(k: int) -> list[float]:
    return [(k - 1) / 2 - r for r in range(k)]


def _title(col: dict) -> str:
    if col["kind"] == "input":
        name = "inputs"
    elif col["kind"] == "output":
        name = "output"
    else:
        name = col["name"] + (f" {col['activation']}" if col.get("activation") else "")
    folded = [n for n in col["layers"] if n != col["name"]]
    sub = f"{col['size']} unit" + ("s" if col["size"] != 1 else "")
    if folded:
        sub += " +" + "+".join(folded)
    if col.get("block"):
        sub += f"<br>h+F(h), F: {col['block']['depth']} layers"
    return f"<b>{name}</b><br>{sub}"


def _silent(col: dict, unit: dict, by_grad: bool) -> str | None:
    """Why a hidden unit is framed: "dead" (its output is 0 everywhere it was measured, the dead
    ReLU), or, in the gradient view, "no_grad" (the weights reading it got no gradient on the
    latest batch: the unit was silent on every example of it); None otherwise."""
    if col["kind"] in ("input", "output"):
        return None
    lo, hi = unit["range"] if unit["range"] else (None, None)
    if lo == 0 and hi == 0:
        return "dead"
    return "no_grad" if by_grad and unit["unit_grad"] == 0 else None


def _grad_level(g, top: float) -> float:
    """|grad| -> 0..1 on a log scale spanning GRAD_DECADES decades below the largest."""
    if g is None or not g > 0 or not top > 0:
        return 0.0
    return min(1.0, max(0.0, 1 + math.log10(g / top) / GRAD_DECADES))


def network_figure(snapshot: dict, color_by: str = "weight", revision: str | None = None, *,
                   max_columns: int = 8) -> dict:
    """The figure for a snapshot of engine.lab.netview.network_snapshot, as a plain dict
    ({"data": [...], "layout": {...}}, JSON-serialisable). color_by: "weight" or "gradient"
    (needs a snapshot taken after a backward pass; without one, links are drawn grey).
    ui.live_plot draws it as it is."""
    if color_by not in ("weight", "gradient"):
        raise ValueError(f"color_by={color_by!r}: expected 'weight' or 'gradient'")
    cols = snapshot["columns"]
    has_grad = bool(snapshot.get("has_grad"))
    by_grad = color_by == "gradient"
    slots = _pick_columns(len(cols), max_columns)
    slot_of = {c: s for s, c in enumerate(slots) if c is not None}
    rows = max(c["shown"] for c in cols)
    top = (rows - 1) / 2
    drawn = [lk for lk in snapshot["links"] if lk["src"] in slot_of and lk["dst"] in slot_of]
    traces = _link_traces(cols, drawn, slot_of, by_grad, has_grad)
    neurons, images, annotations = _neurons(snapshot, slots, by_grad, has_grad, top)
    traces.append(neurons)

    what = (f"|dL/dW| (purple, log scale over {GRAD_DECADES} decades)" if by_grad else
            "weight (orange +, blue −)")
    if by_grad and not has_grad:
        what = "no gradient yet (take a step)"
    title = f"Network · links: {what} · " + (
        "squares: each unit over the input plane" if snapshot.get("plane") else "squares: bias")
    layout = dict(
        title=dict(text=title, font=dict(size=14)), height=int(ROW_PX * (rows + 2.3) + 60),
        margin=MARGIN, uirevision=revision or "network", showlegend=False,
        hovermode="closest", plot_bgcolor="white", images=images, annotations=annotations,
        xaxis=dict(visible=False, range=[-0.5, len(slots) - 0.5], fixedrange=True),
        yaxis=dict(visible=False, range=[-top - 1.0, top + 1.3], fixedrange=True))
    return {"data": traces, "layout": layout}


def _link_traces(cols: list[dict], drawn: list[dict], slot_of: dict, by_grad: bool,
                 has_grad: bool) -> list[dict]:
    """The links, bucketed by colour and strength into a few line traces (one trace per link
    would be thousands), and one invisible marker trace on their midpoints for the hover. The
    scale is shared by the whole figure, so a faint layer is faint next to the others."""
    key = "grad" if by_grad else "weight"

    def values(lk):
        m = lk.get(key)
        return [] if m is None or lk["kind"] == "identity" else [
            abs(v) for row in m for v in row if v is not None]
    top_link = max((v for lk in drawn for v in values(lk)), default=0.0) or 1.0

    buckets: dict[tuple, tuple[list, list]] = {}
    mid_x, mid_y, mid_text = [], [], []
    for lk in drawn:
        src, dst = cols[lk["src"]], cols[lk["dst"]]
        xa, xb = slot_of[lk["src"]], slot_of[lk["dst"]]
        ya, yb = _unit_y(src["shown"]), _unit_y(dst["shown"])
        for j, row in enumerate(lk["weight"]):
            for i, w in enumerate(row):
                if lk["kind"] == "identity" and i != j:
                    continue
                g = lk["grad"][j][i] if lk["grad"] is not None else None
                bucket = _bucket(lk["kind"], w, g, top_link, by_grad, has_grad)
                xs, ys = buckets.setdefault(bucket, ([], []))
                xs += [xa, xb, None]
                ys += [round(ya[i], 3), round(yb[j], 3), None]
                mid_x.append(round((xa + xb) / 2, 3))
                mid_y.append(round((ya[i] + yb[j]) / 2, 3))
                text = f"{src['units'][i]['label']} → {dst['units'][j]['label']}<br>"
                if lk["kind"] == "identity":
                    text += "skip path (identity)"
                else:
                    text += f"w = {_g(w)}" + (f"<br>|dL/dW| = {_g(g)}" if g is not None else "")
                mid_text.append(text)
    traces = [dict(type="scatter", mode="lines", x=xs, y=ys, line=_bucket_line(*bucket),
                   hoverinfo="skip", showlegend=False)
              for bucket, (xs, ys) in sorted(buckets.items(),
                                             key=lambda kv: (kv[0][1], kv[0][0]))]
    traces.append(dict(type="scatter", mode="markers", x=mid_x, y=mid_y, text=mid_text,
                       hovertemplate="%{text}<extra></extra>", showlegend=False,
                       marker=dict(size=7, color="rgba(0,0,0,0)")))
    return traces


def _bucket(kind: str, w, g, top: float, by_grad: bool, has_grad: bool) -> tuple[str, int]:
    """(colour kind, strength level 0..LEVELS) of one link."""
    if kind == "identity":
        return "identity", 0
    if by_grad:
        if not has_grad:
            return "nograd", 0
        return "grad", math.ceil(_grad_level(g, top) * LEVELS)
    a = abs(w) / top if w is not None else 0.0
    return "pos" if (w or 0) > 0 else "neg", math.ceil(min(a, 1) * LEVELS)


def _bucket_line(kind: str, level: int) -> dict:
    t = level / LEVELS
    if kind == "identity":
        return dict(color="rgba(120,120,120,0.6)", width=1, dash="dot")
    if kind == "nograd":
        return dict(color="rgba(150,150,150,0.4)", width=0.8)
    if kind == "grad" and level == 0:  # zero gradient (or 10^5 x below the largest)
        return dict(color="rgba(150,150,150,0.25)", width=0.5, dash="dot")
    rgb = GRAD_COLOR if kind == "grad" else ",".join(
        str(int(c)) for c in (POSITIVE if kind == "pos" else NEGATIVE))
    return dict(color=f"rgba({rgb},{0.12 + 0.88 * t:.2f})", width=round(0.4 + 3.6 * t, 2))


def _neurons(snapshot: dict, slots: list, by_grad: bool, has_grad: bool,
             top: float) -> tuple[dict, list, list]:
    """(one hover trace over every unit, the units' images on 2-D data, the column titles and
    notes): a unit is its picture over the input plane, else a square coloured by its bias."""
    cols = snapshot["columns"]
    over = "over the plane" if snapshot.get("plane") else "over training examples"
    unit_grads = [u["unit_grad"] for c in cols for u in c["units"] if u["unit_grad"]]
    top_unit_grad = max(unit_grads, default=0.0)
    images, annotations = [], []
    nx, ny, ntext, nfill, nborder, nwidth = [], [], [], [], [], []
    for s, c in enumerate(slots):
        if c is None:
            hidden = slots[s + 1] - slots[s - 1] - 1
            annotations.append(dict(x=s, y=0, text=f"<b>⋯</b><br>{hidden} more layers",
                                    showarrow=False, font=dict(size=13, color="#555")))
            continue
        col = cols[c]
        ys = _unit_y(col["shown"])
        annotations.append(dict(x=s, y=top + 0.55, text=_title(col), showarrow=False,
                                yanchor="bottom", font=dict(size=11)))
        if col["hidden"]:
            annotations.append(dict(x=s, y=ys[-1] - 0.55, text=f"+{col['hidden']} more",
                                    showarrow=False, yanchor="top",
                                    font=dict(size=11, color="#555")))
        for unit, y in zip(col["units"], ys):
            silent = _silent(col, unit, by_grad and has_grad)
            fade = 1.0
            if by_grad and has_grad and col["kind"] != "output":
                fade = 0.15 + 0.85 * _grad_level(unit["unit_grad"], top_unit_grad)
            if unit["map"] is not None:
                images.append(dict(source=png_data_uri(unit_image(unit["map"], fade)), xref="x",
                                   yref="y", x=s, y=y, sizex=SQUARE * 0.75, sizey=SQUARE,
                                   xanchor="center", yanchor="middle", sizing="contain",
                                   layer="above"))
                nfill.append("rgba(0,0,0,0)")
            else:
                nfill.append(_bias_fill(unit["bias"], col, fade))
            nx.append(s)
            ny.append(round(y, 3))
            nborder.append({"dead": DEAD, "no_grad": NO_GRAD}.get(silent, "rgba(90,90,90,0.5)"))
            nwidth.append(2.5 if silent else 1)
            ntext.append(_unit_hover(unit, col, silent, over))
    trace = dict(type="scatter", mode="markers", x=nx, y=ny, text=ntext,
                 hovertemplate="%{text}<extra></extra>", showlegend=False,
                 marker=dict(symbol="square", size=int(ROW_PX * SQUARE) + 5, color=nfill,
                             line=dict(color=nborder, width=nwidth)))
    return trace, images, annotations


def _bias_fill(b, col: dict, fade: float) -> str:
    """A square's colour: its bias against the largest in its column, faded toward white."""
    rng = max(abs(u["bias"] or 0) for u in col["units"]) or 1.0
    t = 0 if b is None else b / rng
    rgb = ZERO * (1 - abs(t)) + (POSITIVE if t > 0 else NEGATIVE) * abs(t)
    rgb = 255 * (1 - fade) + rgb * fade  # faded toward white, still opaque
    return f"rgb({','.join(str(int(v)) for v in rgb)})"


def _unit_hover(unit: dict, col: dict, silent: str | None, over: str) -> str:
    lo, hi = unit["range"] if unit["range"] else (None, None)
    text = [f"<b>{unit['label']}</b> ({col['name']})"]
    if col["kind"] != "input":
        text.append(f"bias {_g(unit['bias'])}" + (
            f", |dL/db| {_g(unit['bias_grad'])}" if unit["bias_grad"] is not None else ""))
    text.append(f"output {_g(lo)} … {_g(hi)} {over}")
    if unit["unit_grad"] is not None:
        text.append(f"|dL/dW| of its outgoing weights {_g(unit['unit_grad'])}")
    if silent == "dead":
        text.append(f"<b>dead</b>: 0 everywhere {over}")
    elif silent == "no_grad":
        text.append("<b>no gradient</b> on the latest batch (silent on all of it)")
    return "<br>".join(text)
