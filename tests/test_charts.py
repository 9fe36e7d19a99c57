"""Charts never lie empty: a single logged row is drawn, a constant learning rate sits at its
value, a diverged net's boundary shows "no prediction" instead of black, clipping is charted."""
import json
import math

import numpy as np
import plotly.io as pio

from ui import charts, optimizer_charts


def row(step, **kw):
    return {"step": step, "lr": 0.01, "train_loss": 0.5, "val_loss": 0.6, "train_acc": 0.8,
            "val_acc": 0.7, "layers": None, **kw}


def as_json(fig) -> dict:
    """What the browser receives; json.loads fails on NaN written as a bare token."""
    return json.loads(pio.to_json(fig, validate=False), parse_constant=lambda c: 1 / 0)


def test_a_single_logged_row_is_drawn_as_a_point():
    fig = as_json(charts.loss_figure([row(1)]))
    train = fig["data"][0]
    assert train["x"] == [1] and "markers" in train["mode"]


def test_long_series_are_plain_lines():
    fig = as_json(charts.loss_figure([row(s) for s in range(1, 200)]))
    assert fig["data"][0]["mode"] == "lines"


def test_a_constant_learning_rate_is_drawn_at_its_value():
    fig = as_json(charts.lr_figure([1, 10, 20], [0.01, 0.01, 0.01]))
    lo, hi = fig["layout"]["yaxis"]["range"]
    assert lo < 0.01 < hi and hi - lo < 0.1, (lo, hi)  # not plotly's -1..1 around a flat line
    assert lo >= 0, "a positive rate is not drawn on a negative axis"


def test_a_changing_learning_rate_keeps_autoscale():
    fig = as_json(charts.lr_figure([1, 10], [0.1, 0.01]))
    assert "range" not in fig["layout"]["yaxis"]


def test_nan_outputs_are_no_prediction_not_black():
    probs = np.full((4, 4, 3), 1 / 3)
    probs[0, 0] = [0.9, 0.05, 0.05]
    probs[1:3, 1:3] = np.nan
    rgb = charts.class_image(probs)
    assert (rgb[1:3, 1:3] == charts.NO_PREDICTION).all()
    assert rgb[0, 0].tolist() != list(charts.NO_PREDICTION) and rgb[0, 0].max() > 0


def test_a_regression_surface_with_nan_is_valid_json():
    xs = ys = np.linspace(-1, 1, 3)
    out = np.zeros((3, 3))
    out[1, 1] = np.nan
    out[0, 0] = np.inf
    fig = as_json(charts.boundary_figure(xs, ys, out, {}, "regression"))
    z = fig["data"][0]["z"]
    assert z[1][1] is None and z[0][0] is None and z[2][2] == 0


def test_nan_metrics_become_gaps():
    fig = as_json(charts.loss_figure([row(1), row(2, train_loss=math.nan), row(3)]))
    assert None in fig["data"][0]["y"] or len(fig["data"][0]["y"]) == 2


def test_clipping_share_is_charted_as_a_fraction():
    fig = as_json(charts.clip_figure([row(1, clip_frac=1.0), row(10, clip_frac=0.25)]))
    assert fig["data"][0]["y"] == [1.0, 0.25]
    assert fig["layout"]["yaxis"]["range"][1] >= 1


def test_eval_mode_train_curve_appears_only_where_rows_have_it_and_says_what_it_is():
    rows = [{"step": s, "train_loss": 1.0 / s, "val_loss": 2.0 / s, "train_acc": 0.5,
             "val_acc": 0.4} for s in range(1, 50)]
    names = [t.name for t in charts.loss_figure(rows).data]
    assert names == ["train (batches)", "validation"]
    rows[-1].update(train_eval_loss=0.01, train_eval_acc=0.9)
    fig = charts.loss_figure(rows)
    assert [t.name for t in fig.data] == ["train (batches)", "validation", "train (eval mode)"]
    assert fig.data[2].line.dash == "dot" and fig.data[1].line.dash == "dash"


def test_the_best_step_is_marked_on_loss_and_accuracy():
    rows = [{"step": s, "train_loss": 1.0, "val_loss": abs(s - 20) + 1.0, "train_acc": 0.5,
             "val_acc": 0.5} for s in range(1, 50)]
    for fig in (charts.loss_figure(rows, best_step=20), charts.accuracy_figure(rows, 20)):
        (shape,) = fig.layout.shapes
        assert shape.x0 == shape.x1 == 20
        assert fig.layout.annotations[0].text == "best val loss"
    assert not charts.loss_figure(rows).layout.shapes


def test_a_diverged_run_is_drawn_on_a_log_axis_with_its_end_marked():
    """Issue 31, item 7: the blow-up rows (one per step before the divergence) on a log axis,
    the diverged step marked in red, beside the best step's mark."""
    rows = [{"step": 1, "train_loss": 1.3, "val_loss": 1.2}] + [
        {"step": s, "train_loss": 10.0 ** (3 * s), "val_loss": None} for s in range(2, 8)] + [
        {"step": 8, "train_loss": None, "val_loss": None}]
    fig = charts.loss_figure(rows, best_step=1, diverged_at=8)
    assert fig.layout.yaxis.type == "log"
    assert [(sh.x0, sh.line.color) for sh in fig.layout.shapes] == [(1, "#2ca02c"),
                                                                    (8, "#d62728")]
    assert [a.text for a in fig.layout.annotations] == ["best val loss",
                                                        "diverged: loss not finite"]
    train = fig.data[0]
    assert list(train.x) == list(range(1, 8)) and train.mode == "lines+markers"
    assert charts.loss_figure(rows).layout.yaxis.type != "log"


def test_thinning_keeps_the_newest_rows_whole():
    rows = [{"step": s} for s in range(1, 2001)]
    kept = charts.thin(rows)
    assert len(kept) <= charts.MAX_POINTS + charts.TAIL
    assert [r["step"] for r in kept[-charts.TAIL:]] == list(range(1991, 2001))
    assert kept[0]["step"] == 1 and charts.thin(rows[:100]) == rows[:100]


def _layer_rows(values_by_step):
    return [{"step": s, "layers": [{"name": "fc1", "weight_norm": a},
                                   {"name": "fc2", "weight_norm": b}]}
            for s, (a, b) in values_by_step.items()]


def test_per_layer_lines_use_a_log_axis_only_across_a_decade():
    """A log axis over a narrow range crowds its minor labels (seen on the weight norms)."""
    narrow = charts.layer_lines(_layer_rows({1: (3.1, 2.9), 10: (3.4, 3.0)}), "weight_norm", "w")
    assert narrow.layout.yaxis.type != "log" and narrow.layout.yaxis.tickformat
    wide = charts.layer_lines(_layer_rows({1: (1e-3, 2.0), 10: (1e-2, 3.0)}), "weight_norm", "w")
    assert wide.layout.yaxis.type == "log"


def test_panel_grids_stay_inside_the_figure():
    """Rounding once put a bottom row at -5.6e-17 (3 rows), and plotly refused the figure."""
    from ui.charts import _grid_axes
    for n in range(1, 31):
        for cols in (1, 2, 3, 4, 12):
            for xd, yd in _grid_axes(n, cols):
                assert 0.0 <= xd[0] < xd[1] <= 1.0 and 0.0 <= yd[0] < yd[1] <= 1.0, (n, cols)


def test_a_zoom_is_not_kept_across_a_change_of_axis_type():
    """A linear range read on a log axis is a range of powers of ten: an empty chart."""
    from ui.charts import loss_figure
    rows = [{"step": i, "train_loss": 1 / (i + 1), "val_loss": None} for i in range(50)]
    linear, log = loss_figure(rows, False).layout.uirevision, loss_figure(rows, True).layout.uirevision
    assert linear != log and linear == loss_figure(rows[:10], False).layout.uirevision


def test_a_gradient_through_time_of_exactly_zero_is_drawn_at_the_floor_not_left_blank():
    rows = [{"step": s, "layers": [{"name": "rnn1", "time_grad": g}]}
            for s, g in ((1, [0.001, 0.1, 1.0]), (2, [0.0, 0.01, 10.0]))]
    trace = charts.time_grad_heatmap(rows, "rnn1").to_dict()["data"][0]
    assert trace["z"] == [[-3.0, -3.0], [-1.0, -2.0], [0.0, 1.0]]  # time step x training step
    assert trace["text"][0][1].endswith("it is exactly 0)") and trace["text"][0][0] == ""
    shared = charts.time_grad_range([(rows, "rnn1")])
    assert shared == (-3.0, 1.0)
    side = charts.time_grad_heatmap(rows, "rnn1", "LSTM", (-5.0, 2.0)).to_dict()
    assert side["data"][0]["zmin"] == -5.0 and side["data"][0]["z"][0][1] == -5.0
    assert side["layout"]["title"]["text"] == "LSTM · rnn1"


def test_a_diverged_variant_does_not_flatten_the_others_side_by_side():
    calm = [{"step": s, "train_loss": v} for s, v in ((1, 0.4), (2, 0.2), (3, 0.1))]
    wild = [{"step": s, "train_loss": v} for s, v in ((1, 0.5), (2, 50.0), (3, 1e36))]
    fig = charts.side_by_side_figure([("calm", calm), ("wild", wild)], "loss", "Loss").to_dict()
    assert list(fig["layout"]["yaxis"]["range"]) == [0, 0.75]  # 1.5 x the highest first loss
    both_calm = charts.side_by_side_figure([("a", calm), ("b", calm)], "loss", "L").to_dict()
    assert "range" not in both_calm["layout"]["yaxis"]
    logged = charts.side_by_side_figure([("calm", calm), ("wild", wild)], "loss", "L",
                                        log=True).to_dict()
    assert logged["layout"]["yaxis"]["type"] == "log" and "range" not in logged["layout"]["yaxis"]


def test_colour_scales_reach_the_browser_as_written():
    """Issue 31, item 6: figures go to plotly.js unvalidated, where "RdBu" runs blue to red,
    the reverse of plotly.py's: the occlusion map drew "it falls" red under a caption saying
    blue. Every scale but Viridis (the same in both) is written out, with the ends the
    captions name."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    named = [(path.name, m.group(1)) for path in (root / "ui").glob("*.py")
             for m in re.finditer(r"colorscale=\"(\w+)\"", path.read_text())
             if m.group(1) != "Viridis"]
    assert not named, named
    red, blue = (0, "rgb(178,24,43)"), (1, "rgb(33,102,172)")
    fig = charts.image_rows_figure([("patch", [[[-1.0, 0.5]]])], "Occlusion", "occ",
                                   diverging=True)
    scale = fig.data[0].colorscale
    assert tuple(scale[0]) == red and tuple(scale[-1]) == blue  # negative red, positive blue


# ----------------------------------------------------------------------------- overlaps
# Issue 31, item 5: at 1280x800 axis titles sat on legends, the Mistakes title on the first
# captions, sample-sequence captions on each other, and the greedy/beam table lost its rows.


def _legend_figures():
    rows = [row(s, train_eval_loss=0.4, train_eval_acc=0.8) for s in range(1, 40)]
    variants = [(f"variant {k}", rows) for k in range(4)]
    layers = [{"step": s, "layers": [{"name": f"conv{k}", "act_grad_norm": 0.1 * (k + 1)}
                                     for k in range(5)]} for s in range(1, 20)]
    three = {"classes": 3, "one_vs_rest": [
        {"name": f"c{k}", "class": k, "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "auc": 0.5}
        for k in range(3)]}
    yield "loss", charts.loss_figure(rows, best_step=20)
    yield "accuracy", charts.accuracy_figure(rows, 20)
    yield "side by side", charts.side_by_side_figure(variants, "loss", "Loss", x_key="epoch")
    yield "gates", charts.gates_figure({"input": [0.5] * 9, "forget": [0.4] * 9,
                                        "output": [0.6] * 9}, "lstm1")
    yield "layers", charts.layer_lines(layers, "act_grad_norm", "Gradient norm")
    yield "roc", charts.curve_figure(three, "roc")


def test_legends_keep_a_strip_of_their_own_under_the_x_axis_title():
    """A legend at a share of the plot's height below it (y=-0.3) landed on the x-axis title as
    soon as the chart was half a column wide. On the figure's bottom edge, in container
    coordinates, plotly.js sets the legend's height aside and lays the axis out above it."""
    for name, fig in _legend_figures():
        legend = as_json(fig)["layout"]["legend"]
        assert (legend.get("yref"), legend.get("y"), legend.get("yanchor")) == \
            ("container", 0, "bottom"), (name, legend)
        assert legend.get("orientation") == "h", name


def test_side_by_side_charts_grow_with_their_legend():
    """Half a column wide, the legend takes a row per variant: four of them left the curves a
    sliver of a 300-px chart."""
    rows = [row(s) for s in range(1, 20)]
    two, four = (charts.side_by_side_figure([(f"v{k}", rows) for k in range(n)], "loss", "L")
                 for n in (2, 4))
    assert four.layout.height - two.layout.height >= 2 * 20


def test_the_optimizer_surface_legend_sits_below_the_title():
    walk = {"trajectory": [[0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]}
    xs = ys = [-1.0, 0.0, 1.0]
    fig = as_json(optimizer_charts.surface_figure(xs, ys, [[1.0] * 3] * 3, [("sgd", walk)],
                                                  [(0, 0)], "bowl"))
    legend, height = fig["layout"]["legend"], fig["layout"]["height"]
    assert legend["yref"] == "container" and legend["yanchor"] == "top"
    assert (1 - legend["y"]) * height >= charts.TITLE_PAD + 14 * 1.3  # the title's line


def _caption_boxes(fig, width: int = charts.NARROWEST):
    """(left, top, right, bottom) in pixels of each panel caption of a figure `width` px wide,
    at most as big as its text can be (half an em a character, 1.3 ems a line), and of each
    panel's domain."""
    layout = as_json(fig)["layout"]
    m = layout["margin"]
    w, h = width - m["l"] - m["r"], layout["height"] - m["t"] - m["b"]
    captions = []
    for a in layout["annotations"]:
        assert a["xanchor"] == "center" and a["yanchor"] == "bottom", a  # "auto" shifts them
        lines = a["text"].split("<br>")
        half = max(map(len, lines)) * 0.5 * a["font"]["size"] / 2
        x, bottom = m["l"] + a["x"] * w, m["t"] + (1 - a["y"]) * h
        captions.append((x - half, bottom - len(lines) * 1.3 * a["font"]["size"], x + half,
                         bottom))
    panels = [(m["l"] + v["domain"][0] * w, 0, m["l"] + v["domain"][1] * w, 0)
              for k, v in sorted(layout.items()) if k.startswith("xaxis")]
    heights = [(m["t"] + (1 - v["domain"][1]) * h, m["t"] + (1 - v["domain"][0]) * h)
               for k, v in sorted(layout.items()) if k.startswith("yaxis")]
    return captions, [(p[0], top, p[2], bottom) for p, (top, bottom) in zip(panels, heights)]


def _meet(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5


def _assert_captions_clear(fig):
    """No caption meets another, a panel or the title's line at the top."""
    captions, panels = _caption_boxes(fig)
    title_bottom = charts.TITLE_PAD + 14 * 1.3
    for i, c in enumerate(captions):
        assert c[1] >= title_bottom, (i, c)
        assert not [j for j, d in enumerate(captions) if j != i and _meet(c, d)], (i, c)
        assert not [p for p in panels if _meet(c, p)], (i, c)


def test_mistake_captions_clear_the_title_and_the_row_above():
    """Two-line captions ("9<br>→ 4") sat on the Mistakes title and, in a second row, on the
    images above; long class names ran into each other eight to a row."""
    digits = charts.digits_figure(np.zeros((16, 8, 8)), np.zeros(16), 16, columns=8,
                                  title="Mistakes", captions=[f"{k % 10}<br>→ {(k + 1) % 10}"
                                                              for k in range(16)])
    _assert_captions_clear(digits)
    shapes = ["horizontal bar", "vertical bar", "cross", "square"]
    named = charts.digits_figure(np.zeros((16, 8, 8)), np.zeros(16), 16, columns=8,
                                 title="Mistakes", captions=[
                                     f"{shapes[k % 4]}<br>→ {shapes[(k + 1) % 4]}"
                                     for k in range(16)])
    _assert_captions_clear(named)
    preview = charts.digits_figure(np.zeros((24, 8, 8)), np.arange(24) % 4, class_names=shapes)
    _assert_captions_clear(preview)


def test_sample_sequence_captions_do_not_run_into_each_other():
    """"target -0.61 · predicted -0.329" is wider than a third of the 500-px live column."""
    x = np.zeros((6, 10, 2))
    y, predicted = np.full((6, 1), -0.6123), np.full((6, 1), -0.32912)
    for fig in (charts.sequence_figure(x, y, predicted), charts.sequence_figure(x, y)):
        _assert_captions_clear(fig)


def test_table_cells_wrap_at_spaces_like_plotly():
    from ui.charts import _wrapped_lines
    assert _wrapped_lines("G G A D G H C B", 14) == 2  # "G G A D G H C" + "B"
    assert _wrapped_lines("G G A D G H C B", 15) == 1
    assert _wrapped_lines("a<br>b c", 3) == 2
    assert _wrapped_lines("abcdefghij", 4) == 1  # a long word overflows: plotly.js breaks none


def test_the_greedy_and_beam_table_is_as_tall_as_its_rows():
    """Four columns of a 480-px table wrap "G G A D G H C B" onto two lines; plotly.js drew the
    rows that did not fit behind a scroll bar, and the table read as three and a half rows.
    Measured in Chromium: a two-line row is 46 px, a one-line one 20 px."""
    spelled = ["G G A D G H C B"] * 4

    def table(n):
        return charts.step_answers_figure(spelled[:1] * n, spelled[:1] * n, spelled[:1] * n,
                                          more={"beam search (3 beams)": spelled[:1] * n})
    margins = charts.MARGIN["t"] + charts.MARGIN["b"]
    assert table(4).layout.height >= margins + 46 + 4 * 46  # the header wraps as well
    assert table(8).layout.height - table(4).layout.height >= 4 * 46
    short = charts.step_answers_figure(["a b"] * 6, ["b a"] * 6)
    assert short.layout.height >= margins + 28 + 6 * 20
