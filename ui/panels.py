"""Page panels that combine Streamlit with the pure charts: health, live charts, data preview.

Kept out of the page file so that the page reads as layout only.
"""
from __future__ import annotations

import json
import time

import numpy as np
import streamlit as st
import torch

from engine import ExperimentSpec, SpecError
from engine.core.spec import DataSpec
from engine.data.datasets import Dataset, load_dataset
from engine.nn.model import describe
from engine.train.fixes import without_undo
from engine.train.health import STATUSES
from engine.train.trainer import lr_preview, output_dim
from serve.runs import Run

from . import charts
from .live_plot import live_plot

GRID = 60  # decision-boundary resolution (GRID x GRID model evaluations per refresh)
# A table's scatter shows at most this many rows (a fixed random sample): a 245,000-row CSV sent
# 8.1 MB of points to the browser on every redraw.
MAX_SCATTER = 2000
SEVERITY_COLORS = {"ok": "green", "problem": "red", "warning": "orange"}


@st.cache_data(max_entries=32, show_spinner=False)
def dataset_for(data_json: str, seed: int) -> Dataset | str:
    """The dataset a spec describes, or the message why it cannot be loaded, cached by its JSON:
    previews do not regenerate it, and a bad table is not parsed again on every rerun
    (st.cache_data keeps no exceptions, so the message is returned, not raised)."""
    try:
        return load_dataset(DataSpec.from_dict(json.loads(data_json)), seed)
    except SpecError as e:
        return str(e)


def spec_dataset(spec: ExperimentSpec) -> Dataset:
    data = dataset_for(json.dumps(spec.data.to_dict(), sort_keys=True), spec.seed)
    if isinstance(data, str):
        raise SpecError(data)
    return data


@st.cache_data(max_entries=64, show_spinner=False)
def _lr_curve(optimizer_json: str, schedule_json: str, steps: int):
    spec = ExperimentSpec.from_dict({"optimizer": json.loads(optimizer_json),
                                     "schedule": json.loads(schedule_json),
                                     "training": {"steps": steps}})
    return lr_preview(spec)


def schedule_preview(spec: ExperimentSpec, max_steps: int) -> None:
    """The LR over the planned run (cached on what it depends on; skipped past the server's
    step cap, where the run could not start anyway)."""
    if spec.training.steps > max_steps:
        st.caption(f"No preview: more than {max_steps:,} steps.")
        return
    steps, lrs = _lr_curve(json.dumps(spec.optimizer.to_dict()), json.dumps(spec.schedule.to_dict()),
                           spec.training.steps)
    fig = charts.lr_figure(steps, lrs, "Planned learning rate")
    live_plot(fig, "lr_preview", mode_bar=False)


def augment_preview(spec: ExperimentSpec, n: int = 8) -> None:
    """The first training images as they are and as augmentation changes them, drawn from the
    run's own augment stream: the same kind of change the first batches get."""
    from engine.core.portable import augment_images, generator

    data = spec_dataset(spec)
    x = data.x_train[:n].cpu()
    changed = augment_images(x, generator(spec.seed, "augment"), data.blank.cpu(),
                             **spec.training.augment.to_dict())
    names = data.class_names
    y = data.y_train[:n].cpu().numpy()
    live_plot(charts.digits_figure(
        np.concatenate([x[:, 0].numpy(), changed[:, 0].numpy()]), np.concatenate([y, y]),
        2 * n, class_names=names, columns=n, title="Above: as they are · below: augmented"),
        "augment_preview", mode_bar=False)


# ----------------------------------------------------------------------------- health


def health_panel(health: dict | None, on_fix, run=None) -> None:
    """The verdict in plain words with one-click fixes; on_fix(changes) applies one. A run
    started by a fix is never offered a fix that puts back what that fix changed."""
    if not health:
        st.info("Press **Start** or **Step**: the health check reads every logged step.")
        return
    status = health["status"]
    color = SEVERITY_COLORS[STATUSES.get(status, ("warning",))[0]] if status != "ok" else "green"
    if status == "ok":
        st.markdown(f":{color}-badge[Health: ok] Gradients, activations, updates and the loss "
                    "look normal.")
        return
    st.markdown(f":{color}-badge[Health: {status.replace('_', ' ')}]",
                help=STATUSES.get(status, (None, None))[1])
    for message in health["messages"]:
        st.markdown(f"- {message}")
    fixes = health.get("fixes") or []
    if run is not None and run.fixed_from is not None:
        fixes = without_undo(fixes, run.fixed_from, run.spec)
    if fixes:  # as wide as their labels, wrapping to a new row: a label is never cut
        with st.container(horizontal=True, wrap=True, gap="small"):
            for i, fix in enumerate(fixes):
                st.button(fix["label"], key=f"fix.{i}", on_click=on_fix, args=(fix["changes"],),
                          type="primary" if i == 0 else "secondary", width="content",
                          help="Changes the settings and restarts the run")


# ----------------------------------------------------------------------------- charts


def boundary_grid(data: Dataset, n: int = GRID):
    """A square grid covering every split's points with a margin, in raw coordinates."""
    pts = torch.cat([p for p in data.points.values() if len(p)])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.1 * (hi - lo).clamp_min(1e-3)
    xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), n)
    ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return xs.numpy(), ys.numpy(), torch.stack([gx.flatten(), gy.flatten()], 1)


def _split_points(data: Dataset) -> dict:
    out = {}
    for split in ("train", "val", "test"):
        xy = data.points.get(split)
        if xy is None or not len(xy):
            continue
        y = getattr(data, f"y_{split}").cpu().numpy()
        out[split] = (xy.numpy(), y[:, 0] if y.ndim > 1 else y)
    return out


def data_figure(data: Dataset, predict=None):
    """Boundary over the plane for 2-D sets (predict(x) -> outputs, or None before training),
    sample images for digits, a scatter for tables."""
    if data.points:
        xs, ys, grid = boundary_grid(data)
        outputs = None
        if predict is not None:
            out = predict(data.encode(grid)).float().cpu().numpy()
            outputs = out.reshape(len(ys), len(xs), -1)
            if data.task != "classification":
                outputs = outputs[..., 0]
        return charts.boundary_figure(xs, ys, outputs, _split_points(data), data.task)
    if data.symbols and data.y_train.ndim == 1:  # symbol strings with one answer each
        return _string_answers(data, predict)
    if data.x_train.ndim == 2 and not data.x_train.is_floating_point():  # token ids: text
        return _text_answers(data, predict)
    if data.x_train.ndim == 3 and data.y_train.ndim == 2 and data.task == "classification":
        return _step_answers(data, predict)
    if data.x_train.ndim == 3:  # sequences (n, steps, features)
        x, y = data.x_train[:6], data.y_train[:6]
        predicted = None if predict is None else predict(x).float().cpu().numpy()
        return charts.sequence_figure(x.cpu().numpy(), y.cpu().numpy(), predicted)
    x = data.x_train.cpu()
    y = data.y_train.cpu()
    if x.ndim == 2 and len(x) > MAX_SCATTER:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:MAX_SCATTER]
        x, y = x[keep], y[keep]
    x, y = x.numpy(), y.numpy()
    if x.ndim == 4:  # images (n, 1, H, W): show them raw-looking (normalised values are fine)
        return charts.digits_figure(x[:, 0], y, class_names=data.class_names)
    names = list(data.input_names or [f"input {i + 1}" for i in range(x.shape[1])])
    return charts.table_figure(x, y[:, 0] if y.ndim > 1 else y, names,
                               data.class_names if data.task == "classification" else None)


def _text_answers(data: Dataset, predict, n: int = 4):
    """A language model's windows as text: what it read, the next character at every step,
    and its guess at every step."""
    names = ["⏎" if c == "⏎" else (" " if c == "␣" else c) for c in data.class_names]
    x, y = data.x_val[:n] if len(data.y_val) else data.x_train[:n], \
        data.y_val[:n] if len(data.y_val) else data.y_train[:n]

    def spell(row):
        return "".join(names[int(c)] for c in row)
    guesses = None if predict is None else [spell(r) for r in predict(x).argmax(-1).cpu()]
    return charts.step_answers_figure([spell(r) for r in x.cpu()], [spell(r) for r in y.cpu()],
                                      guesses, title="Validation windows: read, next characters"
                                      " and the net's guess for each")


def _string_answers(data: Dataset, predict, n: int = 6):
    """Strings of symbols (one-hot channels; an all-zero step is padding) with their class and,
    once trained, the net's answer."""
    k = len(data.symbols)
    x, y = data.x_train[:n], data.y_train[:n]
    raw = x.cpu() * data.scale.cpu() + data.shift.cpu()  # back to 0/1 one-hot
    strings = ["".join(data.symbols[int(step[:k].argmax())] for step in seq if step[:k].max() > 0.5)
               for seq in raw]
    names = data.class_names
    answers = None if predict is None else [names[int(c)] for c in predict(x).argmax(-1).cpu()]
    return charts.step_answers_figure(strings, [names[int(c)] for c in y.cpu()], answers,
                                      title="Sample strings, their class and the net's answer")


def _step_answers(data: Dataset, predict, n: int = 6):
    """A class at every step (the copy and reversal tasks): inputs, targets and answers as
    symbols. The input channels are the classes one-hot, then any go flag."""
    names = [("·" if name == "blank" else name[:1]) for name in data.class_names]
    x, y = data.x_train[:n], data.y_train[:n]
    k = len(names)

    def spell(row):
        return " ".join(names[int(c)] for c in row)
    read = [" ".join("▶" if step[k:].sum() > 0 and names[int(step[:k].argmax())] == "·" else
                     names[int(step[:k].argmax())] for step in seq) for seq in x.cpu()]
    answers = None
    if predict is not None:
        answers = [spell(row) for row in predict(x).argmax(-1).cpu()]
    return charts.step_answers_figure(read, [spell(row) for row in y.cpu()], answers)


def training_charts(rows: list[dict], log: bool, regression: bool, show_lr: bool,
                    best_step: int | None = None, diverged_at: int | None = None) -> None:
    """Loss and accuracy side by side (the LR curve instead of accuracy for regression, and
    under both when a schedule changes it); best_step and the step a run diverged at are
    marked on both."""
    c1, c2 = st.columns(2)
    with c1:
        live_plot(charts.loss_figure(rows, log, best_step, diverged_at), "loss", mode_bar=False)
    lr = charts.lr_figure([r["step"] for r in rows], [r["lr"] for r in rows])
    if regression:
        with c2:
            live_plot(lr, "lr_live", mode_bar=False)
        return
    with c2:
        live_plot(charts.accuracy_figure(rows, best_step, diverged_at), "acc", mode_bar=False)
    if show_lr:
        live_plot(lr, "lr_live", mode_bar=False)


def gradient_charts(rows: list[dict]) -> None:
    live_plot(charts.layer_lines(rows, "act_grad_norm", "Gradient norm dL/dh per layer"),
              "grad_lines")
    live_plot(charts.layer_heatmap(rows), "grad_heat")
    c1, c2 = st.columns(2)
    with c1:
        live_plot(charts.layer_lines(rows, "weight_norm", "Weight norm per layer"), "weight_norms")
    with c2:
        live_plot(charts.layer_lines(rows, "update_ratio", "Update ratio ||dW|| / ||W||"),
                  "update_ratio")
    steps = [r["step"] for r in rows]
    live_plot(charts.lr_figure(steps, [r["lr"] for r in rows]), "lr_rows")
    if any(r.get("clip_frac") is not None for r in rows):  # clipping is on: how often it acted
        live_plot(charts.clip_figure(rows), "clip_frac")


def throttled(name: str, run, max_age: float, build, content=None):
    """A figure rebuilt at most every `max_age` seconds while `run` trains, and whenever what it
    shows changed otherwise (the run stepped, or `content`, e.g. the previewed data, differs).
    Re-sending a kept figure costs little; rebuilding the boundary evaluates the whole grid."""
    cache = st.session_state.setdefault("_figures", {})
    serial = run.serial if run else None
    stamp = (serial, run.trainer.step_count if run else None, content)
    hit = cache.get(name)  # (built at, run serial, stamp, figure)
    now = time.monotonic()
    if hit and (hit[2] == stamp or (
            run is not None and run.active and hit[1] == serial and now - hit[0] < max_age)):
        return hit[3]
    fig = build()
    cache[name] = (now, serial, stamp, fig)
    return fig


# The costlier figures (boundary, network view, histograms) are rebuilt at every live refresh
# while a run trains, so every chart moves at one pace (~5 frames a second on a quiet server;
# 0.25 s here skipped every other 0.2 s refresh: 2.5). The floor only keeps a burst of reruns
# (clicks mid-run) from rebuilding them more often. Measured cost: the Network view's refreshes
# take ~7% of a small run's steps/s on 2 cores (they hold the run's lock while they read it).
REDRAW_EVERY_S = 0.15


def network_view(run, spec, data, max_params: int) -> None:
    """TFP's picture of the net: neurons in columns, links by weight (or by |dL/dW|), each
    neuron's output over the input plane. Before a run, the untrained net the spec builds (the
    same initial weights the run will start from), once it fits the server's limits."""
    from engine import build_model
    from engine.lab.netview import network_snapshot
    from engine.train.trainer import output_dim
    from ui.network import network_figure

    by_gradient = st.toggle("Colour by gradient", key="net_by_grad",
                            help="Links by |dL/dW| and neurons by the gradient reaching them, on "
                            "a log scale: a vanishing layer fades, a dead unit is framed red.")
    if by_gradient and (run is None or not run.trainer.step_count):
        st.caption("Gradients exist after the first step: press **Step**.")

    if run is None or not hasattr(run.trainer, "model"):
        why = untrained_net(spec, data, max_params)[1]
        if why:
            st.info(why)
            return

    def build():
        if run is not None and hasattr(run.trainer, "model"):
            snap = run.network_snapshot()
        else:
            snap = network_snapshot(build_model(spec, data.in_shape, output_dim(spec, data)),
                                    data)
        return network_figure(snap, "gradient" if by_gradient else "weight", revision="network")
    try:
        fig = throttled("network", run, REDRAW_EVERY_S, build,
                        content=(by_gradient, None if run else spec.to_json()))
    except ValueError as e:  # a layer the picture has no drawing for (a convolution): say so
        st.info(f"{str(e)[:1].upper()}{str(e)[1:]}. **Layer shapes** (left) lists every layer.")
        return
    live_plot(fig, "network", mode_bar=False)


def untrained_net(spec, data, max_params: int):
    """(describe() of the net `spec` builds, None), or (None, why the page does not build it
    before a run): it cannot be built, or it is over this server's parameter limit (building
    it for a picture would take the page's memory)."""
    d, error = describe_rows(spec, data)
    if error:
        return None, f"This network cannot be built: {error}"
    if d["total_params"] > max_params:
        return None, (f"Not drawn before a run: {d['total_params']:,} parameters is over this "
                      f"server's limit of {max_params:,}.")
    return d, None


def filters_view(run, spec, data, max_params: int) -> None:
    """A CNN from the inside: each convolution's kernels, and the maps every image layer makes
    of one example (its label and the net's guess beside it). Before a run, the untrained net
    the spec builds (the weights the run will start from), once it fits the server's limits."""
    from engine import build_model
    from engine.lab.featuremaps import has_convolutions, inspect_cnn
    from engine.train.trainer import eval_chunk

    trained = run is not None and hasattr(run.trainer, "model")
    if not trained:
        d, why = untrained_net(spec, data, max_params)
        if why:
            st.info(why)
            return
        chunk = eval_chunk(d["total_activations"])
        out = output_dim(spec, data)
    shape_only = None if trained else build_model(spec, data.in_shape, out, device="meta",
                                                  init=False)
    if not has_convolutions(run.trainer.model if trained else shape_only):
        st.info("Filters and feature maps belong to convolutional nets: on image data (digits, "
                "shapes), add a **conv2d** layer.")
        return
    split = "val" if len(data.x_val) else "train"
    n = len(getattr(data, f"x_{split}"))
    c1, c2 = st.columns(2)
    index = c1.number_input(f"Example ({split} split, 0 to {n - 1})", 0, n - 1, 0,
                            key="fmap_index", help="The image whose feature maps are drawn.")
    side = data.in_shape[-1]
    patch = c2.select_slider("Occlusion patch (pixels)", [1, 3, 5, 7], 3 if side <= 8 else 5,
                             key="occlusion_patch", help="The square that hides part of the "
                             "image in the occlusion map: make it as large as a feature.")

    def read():
        if trained:
            return run.feature_maps(split, index, patch)
        return inspect_cnn(build_model(spec, data.in_shape, out), data, split, index, patch,
                           chunk)

    def build():
        return cnn_figures(*read(), data, split, index, patch)
    filters, fmaps, image, drop = throttled(
        "filters", run, REDRAW_EVERY_S, build,
        content=(index, patch, None if run else spec.to_json()))
    live_plot(fmaps, "fmaps", mode_bar=False)
    c1, c2 = st.columns(2)
    with c1:
        live_plot(image, "occlusion_input", mode_bar=False)
    with c2:
        live_plot(drop, "occlusion", mode_bar=False)
    st.caption("Occlusion sensitivity: each pixel of the right map says how much the "
               "probability of the example's label falls when a square centred there is hidden "
               "(blue: it falls, red: it rises). The net relies on the blue places.")
    live_plot(filters, "filters", mode_bar=False)


def cnn_figures(kernels, maps, occlusion, data, split: str, index: int, patch: int):
    """(kernels, feature maps, the example, its occlusion map) as figures; the last of `maps`
    holds the net's output scores, which name its guess."""
    scores = maps.pop()["values"]
    names = data.class_names or [str(c) for c in range(len(scores))]
    label = int(getattr(data, f"y_{split}")[index])
    guess = max(range(len(scores)), key=scores.__getitem__) if len(scores) > 1 else None
    filters = charts.image_rows_figure(
        [(f"{k['name']} · {k['filters']} filters of {len(k['kernels'][0])}x"
          f"{len(k['kernels'][0])}" + (f", mean over {k['in_channels']} input channels"
                                     if k["averaged"] else ""), k["kernels"])
         for k in kernels], "Learned kernels (blue +, red −)", "filters", diverging=True)
    title = f"Feature maps of example {index}: label {names[label]}" + (
        f", the net says {names[guess]}" if guess is not None else "")
    fmaps = charts.image_rows_figure(
        [(f"{m['name']} · {m['channels']} channel{'s' if m['channels'] > 1 else ''}" +
          (f" (first {len(m['maps'])})" if len(m["maps"]) < m["channels"] else ""), m["maps"])
         for m in maps], title, "fmaps")
    image = charts.image_rows_figure([("input", maps[0]["maps"][:1])],
                                     f"Example {index}", "occlusion-input")
    drop = charts.image_rows_figure(
        [(f"occlusion, {patch}x{patch} patch", [occlusion])],
        f"P({names[label]}) lost when covered", "occlusion", diverging=True)
    return filters, fmaps, image, drop


def metrics_view(run, data) -> None:
    """How a classifier errs, on a chosen split: the confusion matrix, precision, recall and F1
    per class, and the ROC and precision-recall curves (one class against the rest); with two
    classes a threshold slider moves the decision and its point on both curves."""
    if data.task != "classification":
        st.info("Precision, recall, the confusion matrix and ROC curves are for classification: "
                "this run predicts numbers (see the loss on the Overview).")
        return
    if run is None or not run.trainer.step_count:
        st.info("The metrics read a trained model: press **Start** or **Step**.")
        return
    splits = [s for s in ("val", "test", "train") if len(getattr(data, f"y_{s}"))]
    c1, c2 = st.columns([2, 3])
    split = c1.segmented_control("Split", splits, key="metrics_split", default=splits[0]) \
        or splits[0]
    threshold = None
    if data.classes == 2:
        threshold = c2.slider("Threshold: class 1 when its probability is at least", 0.0, 1.0,
                              0.5, 0.01, key="metrics_threshold",
                              help="Lower it and more examples count as class 1: recall rises, "
                              "precision usually falls.")
    from engine import SpecError
    try:
        r = throttled("metrics", run, REDRAW_EVERY_S, lambda: run.metrics(split, threshold),
                      content=(split, threshold))
    except SpecError as e:
        st.info(str(e))
        return
    names = r["class_names"]
    st.markdown(f"**Accuracy {r['accuracy']:.1%}** on {r['examples']:,} {split} examples"
                + (f" · AUC {r['auc']:.3f}" if r["auc"] is not None else "")
                + (f" · AP {r['ap']:.3f}" if r["ap"] is not None else ""))
    c1, c2 = st.columns([3, 4])
    with c1:
        live_plot(charts.confusion_figure(r["confusion_matrix"], names), "confusion",
                  mode_bar=False)
    with c2:
        per_class_table(r)
    point = r["threshold_point"] or {}  # where this threshold sits on class 1's curves
    c1, c2 = st.columns(2)
    with c1:
        live_plot(charts.curve_figure(r, "roc", point.get("roc")), "roc", mode_bar=False)
    with c2:
        live_plot(charts.curve_figure(r, "pr", point.get("pr")), "pr", mode_bar=False)
    mistakes(r, data, split)
    if point and point["pr"] == [0.0, 1.0]:
        st.caption("Nothing is called class 1 at this threshold: the table counts its precision "
                   "as 0, the curve's end as 1 (no false alarms).")
    quantization_panel(run, split)


def run_status(run, caps) -> str:
    """The run's status line: state, step, speed, epoch, how it stopped, device, the variants
    beside it. A trainer that has stopped (diverged, stopped early) is shown as done even in
    the moment before its run's thread marks it so: "running · stopped: diverged" was both.
    A run that trains until paused counts its steps against its plan, then says it goes on;
    one that ran into the server's step cap says so (`caps`: the server's ServerCaps)."""
    trainer = run.trainer
    rows = trainer.history.rows
    last = rows[-1] if rows else {}
    state = run.state
    # (a run training until paused completes each planned stretch and is extended at once)
    if trainer.stopped and state == Run.RUNNING and not (
            run.endless and trainer.stopped == "completed"):
        state = Run.DONE
    step, planned = trainer.step_count, run.spec.training.steps
    if run.endless and state in (Run.RUNNING, Run.PAUSED) and step > planned:
        parts = [f"**{state}**", f"step {step:,}", f"past the planned {planned:,}: "
                 "on until Pause"]
    else:
        parts = [f"**{state}**", f"step {step:,} / {trainer.total_steps:,}"]
    if state == Run.RUNNING and run.steps_per_s > 0:  # measured over half a second: none at first
        cap = caps.max_steps_per_s
        parts.append(f"{run.steps_per_s:,.0f} steps/s" +
                     (f" (this server allows {cap:g})" if cap else ""))
    if last.get("epoch") is not None:
        parts.append(f"epoch {last['epoch']:.1f}")
    if trainer.stopped and trainer.stopped != "completed":
        parts.append(f"stopped: {trainer.stopped.replace('_', ' ')}")
    elif state == Run.DONE and step > planned and step >= caps.max_steps:
        parts.append(f"stopped at this server's limit of {caps.max_steps:,} steps")
    if trainer.restored_step is not None:
        parts.append(f"weights restored from step {trainer.restored_step} (lowest "
                     "validation loss)")
    parts.append(f"device {trainer.device}")
    if run.twins:
        parts.append("beside it: " + ", ".join(label for label, _ in run.twins))
    return " · ".join(parts)


def per_class_table(r: dict) -> None:
    """Precision, recall, F1, support, AUC and AP per class, and their macro and weighted
    averages."""
    names, table = r["class_names"], r["per_class"]
    area = {row["class"]: row for row in r["one_vs_rest"]}
    rows = [{"class": names[c], "precision": round(table["precision"][c], 3),
             "recall": round(table["recall"][c], 3), "F1": round(table["f1"][c], 3),
             "support": table["support"][c],
             "AUC": None if area[c]["auc"] is None else round(area[c]["auc"], 3),
             "AP": None if area[c]["ap"] is None else round(area[c]["ap"], 3)}
            for c in range(len(names))]
    for avg in ("macro", "weighted"):
        rows.append({"class": f"{avg} average", **{k: round(table[avg][key], 3) for k, key in
                     (("precision", "precision"), ("recall", "recall"), ("F1", "f1"))},
                     "support": sum(table["support"])})
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption("Precision: of the examples called this class, the share that are. Recall: "
               "of the examples of this class, the share found. F1: their harmonic mean. "
               "AUC and AP: the areas under this class's ROC and precision-recall curves "
               "(this class against the rest), whatever the threshold.")


def mistakes(r: dict, data, split: str) -> None:
    """The images the net gets wrong on this split (true → predicted)."""
    names, wrong = r["class_names"], r["mistakes"]
    x = getattr(data, f"x_{split}")
    if wrong["index"] and x.dim() == 4:  # images: look at what the net gets wrong
        shown = x[wrong["index"]].cpu()[:, 0].numpy()
        live_plot(charts.digits_figure(
            shown, np.asarray(wrong["true"]), len(shown), columns=8,
            title=f"Mistakes: {len(shown)} of the {wrong['count']:,} {split} examples it gets "
                  "wrong (true → predicted)",
            captions=[f"{names[t]}<br>→ {names[p]}" for t, p in zip(wrong["true"],
                                                                    wrong["predicted"])]),
            "mistakes", mode_bar=False)
    elif not wrong["count"]:
        st.caption(f"No mistakes on the {split} split.")

def quantization_panel(run, split: str) -> None:
    """Post-training int8 weights: the model's size and accuracy before and after, on demand
    (a copy is rounded; the run itself is untouched)."""
    key = (run.id, split)  # a result stays until asked again (the run may train on meanwhile)

    def quantize():
        step = run.trainer.step_count
        st.session_state["quantized"] = (key, step, run.quantization(split))
    st.button("Round the weights to int8", key="quantize", on_click=quantize,
              help="Store every weight as an 8-bit integer with one scale per output channel: "
              "about 4x smaller. The table shows what that costs in accuracy.")
    held = st.session_state.get("quantized")
    if not held or held[0] != key:
        return
    step, r = held[1], held[2]
    st.caption(f"The model as it was at step {step:,}:")
    kb = lambda b: f"{b / 1024:,.1f} KB"  # noqa: E731
    st.dataframe([
        {"weights": kind, "size": kb(r[f"{key}_bytes"]),
         f"{split} accuracy": f"{r[f'{key}_acc']:.1%}", f"{split} loss": f"{r[f'{key}_loss']:.4g}"}
        for kind, key in (("float32", "float"), ("int8", "int8"))], hide_index=True,
        width="stretch")
    change = r["int8_acc"] - r["float_acc"]
    st.caption(f"{r['ratio']:.2f}x smaller; accuracy {'+' if change >= 0 else '−'}"
               f"{abs(change):.1%}. Each weight moved by at most half its channel's step "
               f"(largest change {r['max_error']:.2g}); biases stay float32.")


def phase_summary(trainer) -> None:
    """What trained before this run: the pretraining run or the teacher."""
    p = trainer.phase
    if p is None:
        if trainer.spec.pretrain or trainer.spec.distill:
            st.caption("The first step trains the " + ("pretraining run" if trainer.spec.pretrain
                                                       else "teacher") + " first.")
        return
    acc = f"validation accuracy {p['val_acc']:.1%}" if p["val_acc"] is not None else \
        f"validation loss {p['val_loss']:.4g}" if p["val_loss"] is not None else "no validation"
    if p["kind"] == "pretrain":
        frozen = ", ".join(p["frozen"]) or "none (every layer fine-tuned)"
        st.caption(f"Pretrained on classes {', '.join(map(str, p['classes']))} for "
                   f"{p['steps']:,} steps ({acc} on those classes, {p['seconds']:.1f} s). "
                   f"Frozen: {frozen}.")
    else:
        mine = sum(q.numel() for q in trainer.model.parameters())
        ratio = p["params"] / max(mine, 1)
        size = f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"
        st.caption(f"Teacher: {p['params']:,} parameters, {p['steps']:,} steps, {acc}. This "
                   f"student: {mine:,} parameters ({size}), temperature "
                   f"{p['temperature']:g}, alpha {p['alpha']:g}.")


def activation_charts(run, rows: list[dict]) -> None:
    last = next((r for r in reversed(rows) if r.get("layers")), None)
    if last is None:
        st.info("Activation histograms appear after the first logged step.")
        return
    samples = run.trainer.activation_samples()
    fig = throttled("hist", run, REDRAW_EVERY_S,
                    lambda: charts.activation_histograms(samples, last["layers"]))
    live_plot(fig, "hist")
    channels = charts.channel_heatmap(last["layers"])
    if channels is not None:  # a convolution's unit is its channel
        live_plot(channels, "channels")
    shares = [(key, title) for key, title in (("dead_frac", "Dead ReLU share per layer"),
                                              ("saturated_frac", "Saturated share per layer"))
              if any(lay.get(key) is not None for lay in last["layers"])]
    for col, (key, title) in zip(st.columns(max(len(shares), 1)), shares):
        with col:
            live_plot(charts.layer_lines(rows, key, title, log=False), key)
    if not shares:
        st.caption("No ReLU or squashing layers here, so there are no dead or saturated shares "
                   "to track.")


def writing_panel(run) -> None:
    """A character model writes: one continuation of a prompt per temperature, on demand, and
    its embedding vectors on their two main axes."""
    from engine.lab.decode import embedding_map

    trainer = run.trainer
    c1, c2 = st.columns([3, 1])
    c1.text_input("Prompt", "the network ", key="write_prompt", max_chars=200)
    c2.number_input("characters", 20, 500, 150, 10, key="write_length")
    key = (run.id, st.session_state["write_prompt"], st.session_state["write_length"])

    def write():  # kept until asked again: the run may train on meanwhile
        step = trainer.step_count
        st.session_state["written"] = (key, step, run.write(
            st.session_state["write_prompt"], st.session_state["write_length"],
            WRITE_TEMPERATURES))
    st.button("Write at four temperatures", key="write", on_click=write,
              help="Temperature 0 always takes the likeliest next character; higher ones draw "
              "from the net's guess, flattened: more surprise, more mistakes.")
    held = st.session_state.get("written")
    if held and held[0] == key:
        st.caption(f"Written by the model as it was at step {held[1]:,}:")
        for temperature, text in held[2].items():
            st.markdown(f"**T = {temperature:g}**")
            st.code(st.session_state["write_prompt"] + text, language=None, wrap_lines=True)
    points = run.read(embedding_map)
    if points is not None:
        live_plot(charts.embedding_figure(points), "embedding", mode_bar=False)


WRITE_TEMPERATURES = (0.0, 0.5, 1.0, 1.5)


def seq2seq_panel(run) -> None:
    """An encoder-decoder at work: where it looked for each answer, and greedy decoding beside
    beam search on the first validation sequences."""
    from engine.lab.decode import attention_map, greedy_and_beam

    trainer = run.trainer
    names = [n[:1] for n in trainer.data.class_names]
    att = throttled("attention", run, REDRAW_EVERY_S, lambda: run.read(attention_map))
    if att is not None:
        live_plot(charts.attention_figure(att, names), "attention")
    x = trainer.data.x_val[:4]

    def both():
        def spell(seq):
            return " ".join(names[int(k)] for k in seq)
        greedy, beam = run.read(greedy_and_beam, x, 3)
        return charts.step_answers_figure(
            [spell(r) for r in x.argmax(-1).cpu()], [spell(r) for r in trainer.data.y_val[:4]],
            [spell(g) for g in greedy], more={"beam search (3 beams)": [spell(b) for b in beam]},
            title="Validation sequences: greedy answers and beam search")
    live_plot(throttled("beams", run, REDRAW_EVERY_S, both), "beams")


def side_by_side(run, log: bool) -> None:
    """The run and the variants trained beside it: loss (and accuracy) overlaid step for step,
    and each one's numbers in a table."""
    from engine.lab.compare import COMPARISONS, summary
    trainers = run.trainers()  # once: a Reset elsewhere may replace the run's trainers
    data = trainers[0][1].data
    if data is None:  # forgotten between two reads
        return
    variants = [(label, t.history.rows) for label, t in trainers]
    classification = data.task == "classification"
    x_key = COMPARISONS[run.compare].tags.get("x", "step") \
        if run.compare and run.compare in COMPARISONS else "step"
    c1, c2 = st.columns(2) if classification else (st.container(), None)
    with c1:
        live_plot(charts.side_by_side_figure(variants, "loss", "Loss, side by side", log,
                                             x_key=x_key), "side_loss", mode_bar=False)
    if classification:
        with c2:
            live_plot(charts.side_by_side_figure(variants, "acc", "Accuracy, side by side",
                                                 x_key=x_key, yaxis=dict(range=[0, 1.02])),
                      "side_acc", mode_bar=False)
    table = []
    for label, t in trainers:
        s = summary(t)
        table.append({"variant": label, "step": s["step"],
                      "train loss": _num(s["train_loss"]), "val loss": _num(s["val_loss"]),
                      **({"val accuracy": f"{s['val_acc']:.1%}"} if s["val_acc"] is not None
                         else {}),
                      "verdict": (s["stopped"] if s["stopped"] not in (None, "completed")
                                  else s["health"]) or "",
                      **({"dL/dh first / last step": _num(s["time_ratio"])}
                         if s["time_ratio"] is not None else {})})
    st.dataframe(table, hide_index=True, width="stretch")


def _num(v) -> str:
    return "" if v is None else f"{v:.3g}"


def time_view(run, rows: list[dict]) -> None:
    """Backpropagation through time, seen: each recurrent layer's dL/dh_t heatmap, its gates
    over the steps of the latest logged batch, and the hidden state's path through a few
    validation sequences."""
    from engine.core.portable import Seq2Seq
    if run is not None and isinstance(getattr(run.trainer.model, "out", None), Seq2Seq):
        seq2seq_panel(run)
        return
    last = next((r for r in reversed(rows) if r.get("layers")), None)
    recurrent = [lay for lay in (last or {}).get("layers") or () if lay.get("time_grad")]
    if not recurrent:
        st.info("This view is for recurrent layers (rnn, lstm, gru) on sequence data: it draws "
                "dL/dh_t at every time step. " + ("Start training to see it." if not rows else
                                                  "This model has none."))
        return
    if run.twins:  # every variant's first layer in columns; the run's own details below
        side_by_side_heatmaps(run)
    for k, lay in enumerate(recurrent):
        if k or not run.twins:
            live_plot(charts.time_grad_heatmap(rows, lay["name"]), f"time_grad:{lay['name']}")
        g = lay["time_grad"]
        if g[-1] and g[0] and g[-1] > 0 and g[0] > 0:  # null where a gradient overflowed
            st.caption(f"Latest batch: dL/dh_t is {g[-1]:.2g} at the last step and {g[0]:.2g} "
                       f"at the first ({g[0] / g[-1]:.2g}x): what the first steps can still "
                       "learn from the loss.")
        if lay.get("gates"):
            live_plot(charts.gates_figure(lay["gates"], lay["name"]), f"gates:{lay['name']}")
    from engine.lab.decode import hidden_trajectories
    paths = throttled("paths", run, REDRAW_EVERY_S, lambda: run.read(hidden_trajectories))
    if paths is not None:
        live_plot(charts.trajectories_figure(paths), "paths")


def side_by_side_heatmaps(run) -> None:
    """The first recurrent layer's dL/dh_t heatmap of the run and of each variant beside it,
    in columns, on one colour scale: the same task, data and seed."""
    found = []
    for label, t in run.trainers():
        rows = t.history.rows
        last = next((r for r in reversed(rows) if r.get("layers")), None)
        layer = next((lay["name"] for lay in (last or {}).get("layers") or ()
                      if lay.get("time_grad")), None)
        found.append((label, rows, layer))
    st.caption("**dL/dh_t through time (log10)**, side by side: each variant's first recurrent "
               "layer, one colour scale for all.")
    zrange = charts.time_grad_range([(rows, layer) for _, rows, layer in found if layer])
    for col, (label, rows, layer) in zip(st.columns(len(found)), found):
        with col:
            if layer is None:
                st.caption(f"{label}: no gradient through time logged yet.")
            else:
                live_plot(charts.time_grad_heatmap(rows, layer, label, zrange),
                          f"time_grad:{label}:{layer}")


def page_address(url: str | None) -> str:
    """The page's address without its query, ready for "?cfg=...": a bare host gets its "/"
    (st.context.url gives "http://host:port" for the root page)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url or "")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def describe_rows(spec: ExperimentSpec, data: Dataset):
    """(describe() of the spec's model, None), or (None, the message why it cannot be built)."""
    try:
        d = describe(spec, data.in_shape, output_dim(spec, data))
    except SpecError as e:
        return None, str(e)
    return d, None


def describe_table(d: dict) -> None:
    """Every layer's output shape, parameters and multiply-adds per example; for images also
    the receptive field (input pixels across that one value depends on) and its jump (input
    pixels between two neighbouring values)."""
    image = any(r["receptive_field"] for r in d["layers"])
    rows = []
    for r in d["layers"]:
        row = {"layer": r["name"], "type": r["type"], "output shape": str(r["output_shape"]),
               "parameters": r["params"], "multiply-adds": r["macs"]}
        if image:
            row["receptive field"] = f"{r['receptive_field']} px" + (
                f", jump {r['jump']}" if r["jump"] else " (all of it)")
            row["size: (W - F + 2P)/S + 1"] = r.get("formula") or ""
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(f"{d['total_params']:,} parameters · {d['total_macs']:,} multiply-adds per "
               "example (convolutions and linear maps)")
    for r in d["layers"]:
        if r.get("note"):
            st.caption(f"`{r['name']}`: {r['note']}")
