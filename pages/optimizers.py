"""Optimizer lab: optimizers walking 2-D surfaces, learning rates against 2/L and the range test,
every schedule, and batch sizes at matched epochs."""
from __future__ import annotations

import json

import numpy as np
import streamlit as st

from engine import ExperimentSpec, SpecError
from engine.core.registry import OPTIMIZERS, SCHEDULES
from engine.lab.batch_sizes import batch_size_experiment
from engine.lab.lr_range import lr_range_test
from engine.lab.surfaces import SURFACES, closed_form, steps_to, surface_values, walk
from engine.presets import load_preset
from engine.train.curvature import sharpness
from engine.train.trainer import Trainer, lr_preview
from serve.caps import Caps
from ui import charts
from ui import optimizer_charts as oc
from ui.page import ensure_routed
from ui.widgets import param_widget

ensure_routed()

MAX_WALK_STEPS = 2000   # per walker (measured ~0.35 ms a step: 4 walkers ~3 s at most, cached)
MAX_WALKERS = 4
MAX_RUN_STEPS = 1000    # per training run the page starts (the rate and schedule comparisons)
MAX_BATCH_STEPS = 5000  # per batch-size run (the single-example one is the longest)
REACHED = 1e-6          # "reached the minimum": f - f_min below this
FALLBACK = "tfp_circle"  # the experiment used when the Playground has none yet
CAPS = Caps()


# ----------------------------------------------------------------------------- cached work
@st.cache_data(max_entries=64, show_spinner=False)
def walks_for(surface: str, params_json: str, walkers_json: str, schedule: str, steps: int,
              start: tuple[float, float], seed: int) -> list:
    """[(label, walk result or error text)] for each walker row."""
    params, out = json.loads(params_json), []
    for row in json.loads(walkers_json):
        label = _walker_label(row)
        opt = {"name": row["optimizer"], "lr": row["lr"]}
        if OPTIMIZERS[row["optimizer"]].param("momentum") is not None:
            opt["momentum"] = row.get("momentum") or 0.0
        try:
            out.append((label, walk(surface, opt, steps, start, params, {"name": schedule},
                                    seed)))
        except SpecError as e:
            out.append((label, str(e)))
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def surface_grid(surface: str, params_json: str):
    (x0, x1), (y0, y1) = SURFACES[surface].tags["window"]
    xs, ys = np.linspace(x0, x1, oc.GRID), np.linspace(y0, y1, oc.GRID)
    return xs.tolist(), ys.tolist(), surface_values(surface, json.loads(params_json), xs,
                                                    ys).tolist()


@st.cache_data(max_entries=16, show_spinner=False)
def rate_facts(spec_json: str) -> dict:
    """The range test and the sharpness at initialisation of an experiment."""
    spec = ExperimentSpec.from_json(spec_json)
    trainer = Trainer(spec, max_params=CAPS.max_params)
    return {"sharpness": sharpness(trainer), "range": lr_range_test(spec)}


@st.cache_data(max_entries=16, show_spinner=False)
def train_variants(spec_json: str, changes_json: str) -> list[dict]:
    """Train the experiment once per (label, changes): its logged rows, verdict and end."""
    spec = ExperimentSpec.from_json(spec_json)
    out = []
    for label, changes in json.loads(changes_json):
        t = Trainer(spec.with_changes(changes), max_params=CAPS.max_params).run()
        rows = t.history.rows
        val = t.evaluate("val")
        out.append({"label": label, "rows": [{k: r.get(k) for k in ("step", "epoch",
                                                                      "train_loss", "lr")}
                                             for r in rows],
                    "status": (rows[-1].get("health") or {}).get("status") if rows else None,
                    "stopped": t.stopped, "val_loss": val["loss"], "val_acc": val["acc"],
                    "steps": t.step_count})
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def too_large(spec_json: str) -> str | None:
    """Why one step of the experiment is more than this server allows (the Playground's
    limits), or None. Cached: it builds the data and the model, and every rerun asks."""
    try:
        CAPS.check_step_work(Trainer(ExperimentSpec.from_json(spec_json),
                                     max_params=CAPS.max_params))
    except SpecError as e:
        return str(e)
    return None


@st.cache_data(max_entries=16, show_spinner=False)
def batch_runs(spec_json: str, epochs: float) -> list[dict]:
    return batch_size_experiment(ExperimentSpec.from_json(spec_json), epochs,
                                 max_steps=MAX_BATCH_STEPS, max_params=CAPS.max_params)


# ----------------------------------------------------------------------------- helpers
def _walker_label(row: dict) -> str:
    momentum = row.get("momentum") or 0.0
    extra = f", momentum {momentum:g}" if momentum and \
        OPTIMIZERS[row["optimizer"]].param("momentum") is not None else ""
    return f"{row['optimizer']} lr {row['lr']:g}{extra}"


def default_walkers(surface: str) -> list[dict]:
    rates = SURFACES[surface].tags["rates"]
    return [{"optimizer": "sgd", "lr": rates["sgd"], "momentum": 0.0},
            {"optimizer": "sgd", "lr": rates["momentum"], "momentum": 0.9},
            {"optimizer": "adam", "lr": rates["adam"], "momentum": 0.0}]


def experiment() -> tuple[ExperimentSpec, str]:
    """The Playground's experiment if this session has one it can train here, else the default;
    and where it came from. A CSV experiment stays in the Playground, which checks that the
    file is this browser's upload (a link can name any path)."""
    fallback = ExperimentSpec.from_dict(load_preset(FALLBACK)["config"])
    spec = st.session_state.get("spec")
    if not isinstance(spec, ExperimentSpec):
        return fallback, "TensorFlow Playground's circle net (open the Playground to use your own)"
    if spec.data.upload:
        return fallback, ("TensorFlow Playground's circle net (experiments on your own CSV "
                          "train in the Playground only)")
    why = too_large(spec.to_json())
    if why:
        return fallback, ("TensorFlow Playground's circle net (the Playground's experiment is "
                          f"too large to train here: {why})")
    return spec, "the Playground's current experiment"


def rate_of(spec: ExperimentSpec) -> float:
    """The learning rate the spec trains with (its optimizer's default when none is written)."""
    return spec.optimizer.resolved(OPTIMIZERS)["lr"]


def capped(spec: ExperimentSpec) -> ExperimentSpec:
    return spec.with_changes({"training.steps": min(spec.training.steps, MAX_RUN_STEPS),
                              "training.early_stopping": None})


def describe_spec(spec: ExperimentSpec, source: str) -> None:
    layers = ", ".join(str(layer.params.get("units") or layer.type)
                       for layer in spec.model.layers)
    st.caption(f"On {source}: {spec.data.name}, layers [{layers}], {spec.optimizer.name} at "
               f"lr {rate_of(spec):g}, batch {spec.training.batch_size}, seed {spec.seed}.")


# ----------------------------------------------------------------------------- sections
# Layout, in the order it appears on the page: controls, walkers, figure, facts.
def surfaces_section() -> None:
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    surface = c1.selectbox("Surface", SURFACES.keys(), key="opt_surface",
                           help=" · ".join(f"{e.key}: {e.doc}" for e in SURFACES))
    entry = SURFACES[surface]
    if st.session_state.get("opt_walkers_for") != surface:  # new surface: its own start, rates
        st.session_state["opt_walkers_for"] = surface
        st.session_state["opt_walkers"] = default_walkers(surface)
        st.session_state["opt_x"], st.session_state["opt_y"] = map(float, entry.tags["start"])
    st.caption(entry.doc)
    c2.number_input("start x", key="opt_x", format="%g")
    c3.number_input("start y", key="opt_y", format="%g")
    c4.number_input("steps", 1, MAX_WALK_STEPS, 200, key="opt_steps")
    params = {}
    if entry.params:
        cols = st.columns(len(entry.params) + 1)
        for col, p in zip(cols, entry.params):
            key = f"opt_param_{surface}_{p.name}"
            st.session_state.setdefault(key, p.default)
            param_widget(p, key, col)
            params[p.name] = st.session_state[key]
    schedule = st.selectbox("Schedule (every walker)", [k for k in SCHEDULES.offered()
                                                        if not SCHEDULES[k].tags.get("on_metric")],
                            key="opt_schedule", help="The learning rate each step, from the "
                            "registry's schedules (reduce_on_plateau needs a validation loss).")
    st.markdown("**Walkers** (add, edit or delete rows; momentum counts for SGD and RMSprop)")
    walkers = st.data_editor(
        st.session_state["opt_walkers"], num_rows="dynamic", key=f"opt_editor_{surface}",
        hide_index=True, width="stretch",
        column_config={"optimizer": st.column_config.SelectboxColumn(
            "optimizer", options=OPTIMIZERS.offered(), required=True),
            "lr": st.column_config.NumberColumn("lr", min_value=1e-6, max_value=10.0,
                                                format="%g", required=True),
            "momentum": st.column_config.NumberColumn("momentum", min_value=0.0,
                                                      max_value=0.999, format="%g")})
    rows = [dict(r) for r in walkers if r.get("optimizer") and r.get("lr")]
    if len(rows) > MAX_WALKERS:
        st.caption(f"The first {MAX_WALKERS} walkers are drawn.")
        rows = rows[:MAX_WALKERS]
    if not rows:
        st.info("Add a walker: an optimizer and its learning rate.")
        return
    start = (float(st.session_state["opt_x"]), float(st.session_state["opt_y"]))
    params_json = json.dumps(params, sort_keys=True)
    try:
        found = walks_for(surface, params_json, json.dumps(rows), schedule,
                          int(st.session_state["opt_steps"]), start, 0)
        xs, ys, z = surface_grid(surface, params_json)
    except SpecError as e:
        st.error(f"These settings do not make a walk: {e}")
        return
    for label, result in found:
        if isinstance(result, str):
            st.error(f"{label}: {result}")
    walks = [(label, r) for label, r in found if not isinstance(r, str)]
    if not walks:
        return
    minima = walks[0][1]["minima"]
    f_min = min((float(surface_values(surface, params, [m[0]], [m[1]])[0][0]) for m in minima),
                default=None)
    st.plotly_chart(oc.surface_figure(xs, ys, z, walks, minima, f"{surface}: press Play"),
                    width="stretch", key="opt_surface_chart")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(oc.loss_by_step_figure(walks, f_min), width="stretch",
                        key="opt_f_chart")
    with right:
        outcome_table(walks, f_min)
    facts(surface, params, rows, schedule)


def outcome_table(walks, f_min) -> None:
    table = []
    for label, w in walks:
        reached = None if f_min is None else steps_to(w, f_min + REACHED)
        end = w["trajectory"][-1]
        table.append({"walker": label,
                      "end": "diverged" if w["stopped"] == "diverged" else
                      (f"f − f_min < 1e-6 at step {reached}" if reached is not None
                       else f"f = {end[2]:.3g} at step {len(w['trajectory']) - 1}"),
                      "ends at": f"({end[0]:.3g}, {end[1]:.3g})"})
    st.dataframe(table, hide_index=True, width="stretch")


def facts(surface: str, params: dict, rows: list[dict], schedule: str) -> None:
    """What theory says, next to what the walkers did. A verdict per walker only at a constant
    rate: the limit holds for each step's rate, and a schedule changes it."""
    general = closed_form(surface, params, {"name": "sgd"})
    if general is None:
        return
    steady = bool(SCHEDULES[schedule].tags.get("steady"))
    notes = []
    for row in rows if steady else []:
        opt = {"name": row["optimizer"], "lr": row["lr"], "momentum": row.get("momentum") or 0.0}
        found = closed_form(surface, params, opt)
        if "stable" not in found:
            notes.append(f"- **{_walker_label(row)}**: an adaptive optimizer divides each "
                         "coordinate's step by its own recent gradient size, so no single "
                         "rate limit like 2/L applies to it.")
            continue
        lr, limit = row["lr"], found["stable"]
        verdict = "converges" if lr < limit else "diverges"
        line = (f"- **{_walker_label(row)}**: {verdict}, since lr {lr:g} is "
                f"{'below' if lr < limit else 'above'} the stable limit {limit:.4g}")
        if found.get("oscillates") is not None and lr < limit:
            line += (f"; it overshoots along the steep direction every step (lr above 1/L = "
                     f"{found['oscillates']:.4g})" if lr > found["oscillates"] else
                     f"; it never overshoots (lr below 1/L = {found['oscillates']:.4g})")
        notes.append(line + ".")
    mu, L = general["hessian_eigenvalues"]
    text = (f"**Closed form.** The Hessian's eigenvalues are {mu:g} and {L:g} (condition number "
            f"{general['condition_number']:g}). Gradient descent multiplies the distance along "
            f"each direction by 1 − lr·λ per step, so it converges only for lr < 2/L = "
            f"{2 / L:.4g}; the best single rate is 2/(L + μ) = {general['best_gd_lr']:.4g}, "
            f"which still shrinks the error only by {general['best_gd_rate']:.4f} per step. "
            "Heavy-ball momentum m stretches the limit to 2(1 + m)/L.")
    if not steady:
        text += (" With a schedule the limit holds for each step's rate: a walk that starts "
                 "above it can still settle once its rate has fallen below it.")
    st.markdown("\n".join([text, *notes]))


def rates_section() -> None:
    spec, source = experiment()
    describe_spec(spec, source)
    try:
        found = rate_facts(spec.to_json())
    except SpecError as e:
        st.error(f"This experiment cannot be tested here: {e}")
        return
    sharp, rng = found["sharpness"], found["range"]
    own = rate_of(spec)
    marks = {"suggested": rng["suggested"], "2/L at the start": sharp["stable_lr"],
             "this run's rate": own}
    st.plotly_chart(oc.lr_range_figure(rng, marks), width="stretch", key="opt_range_chart")
    two_over_l = sharp["stable_lr"]
    if len(rng["lr"]) < 2:
        st.warning("The loss was not a number from the first step of the range test: this "
                   "experiment diverges at any rate (see its verdict in the Playground).")
        return
    text = (f"The range test trained {len(rng['lr'])} steps with the rate growing from "
            f"{rng['lr'][0]:.0e}, ×{rng['lr'][1] / rng['lr'][0]:.3f} a step")
    if rng["stopped_at"]:
        text += f", until the loss blew up at {rng['stopped_at']:.3g}"
    text += (f"; its smoothed loss was lowest at {rng['min_over_10'] * 10:.3g}, and a tenth of "
             f"that, **{rng['suggested']:.3g}**, is the suggestion (the fall was steepest at "
             f"{rng['steepest']:.3g})." if rng["suggested"] else
             f"; the loss fell by only {1 - (rng['drop'] or 1):.0%}, too little to suggest a "
             "rate: this net needs more steps than the test gives it to show its good rates.")
    if two_over_l:
        text += (f" At the start the loss's sharpness is L = {sharp['sharpness']:.3g} (the top "
                 "eigenvalue of its Hessian, by power iteration), so plain gradient descent on "
                 f"a bowl that curved is stable only below 2/L = {two_over_l:.3g}; momentum "
                 "and adaptive optimizers move that limit.")
    st.markdown(text)
    if not rng["suggested"]:
        return
    base = rng["suggested"]
    variants = [("suggested ÷ 100", base / 100), ("suggested", base),
                ("suggested × 10", base * 10), ("suggested × 100", base * 100)]
    if st.button("Train at four rates, side by side", key="opt_train_rates"):
        st.session_state["opt_rates_for"] = spec.to_json()
    if st.session_state.get("opt_rates_for") != spec.to_json():
        st.caption("Trains this experiment (at most "
                   f"{MAX_RUN_STEPS:,} steps) at each rate: " +
                   ", ".join(f"{label} {lr:.3g}" for label, lr in variants) + ".")
        return
    changes = [(f"{label}: {min(lr, 10.0):.3g}", {"optimizer.lr": min(lr, 10.0)})
               for label, lr in variants]
    with st.spinner("Training four runs…"):
        runs = train_variants(capped(spec).to_json(), json.dumps(changes))
    show_runs(runs, "Training loss at four rates")


def loss_curves(runs: list[tuple[str, list[dict]]], title: str, x_key: str):
    """The runs' training losses, one colour each, on a log axis (the Playground's side-by-side
    chart)."""
    return charts.side_by_side_figure(runs, "loss", title, log=True, x_key=x_key,
                                      yaxis=dict(exponentformat="power"))


def show_runs(runs: list[dict], title: str, x_key: str = "step") -> None:
    st.plotly_chart(loss_curves([(r["label"], r["rows"]) for r in runs], title, x_key),
                    width="stretch", key=f"opt_runs:{title}")
    st.dataframe([{"run": r["label"], "steps": r["steps"],
                   "ended": r["stopped"] if r["stopped"] != "completed" else "",
                   "verdict": r["status"] or "",
                   "val loss": None if r["val_loss"] is None else f"{r['val_loss']:.3g}",
                   **({"val accuracy": f"{r['val_acc']:.1%}"} if r["val_acc"] is not None
                      else {})} for r in runs], hide_index=True, width="stretch")


def schedules_section() -> None:
    spec, source = experiment()
    describe_spec(spec, source)
    steps = min(spec.training.steps, MAX_RUN_STEPS)
    names = [k for k in SCHEDULES.offered()]
    curves = []
    for name in names:
        preview = spec.with_changes({"schedule": name, "training.steps": steps})
        s, lrs = lr_preview(preview)
        curves.append((name, s, lrs))
    st.plotly_chart(oc.schedules_figure(curves), width="stretch", key="opt_schedules_chart")
    st.caption("Each schedule with its default settings, over this experiment's "
               f"{steps:,} steps from its rate (reduce_on_plateau cuts the rate only when the "
               "validation loss stalls, so its preview is flat).")
    if st.button("Train with each schedule", key="opt_train_schedules"):
        st.session_state["opt_schedules_for"] = spec.to_json()
    if st.session_state.get("opt_schedules_for") != spec.to_json():
        return
    with st.spinner(f"Training {len(names)} runs…"):
        runs = train_variants(capped(spec).to_json(),
                              json.dumps([(name, {"schedule": name}) for name in names]))
    show_runs(runs, "Training loss with each schedule")


def batches_section() -> None:
    spec, source = experiment()
    describe_spec(spec, source)
    epochs = st.number_input("epochs (each variant sees every training example this often)",
                             0.5, 50.0, 2.0, step=0.5, format="%g", key="opt_epochs")
    if st.button("Train with full-batch, mini-batch and single-example updates",
                 key="opt_train_batches"):
        st.session_state["opt_batches_for"] = (spec.to_json(), epochs)
    if st.session_state.get("opt_batches_for") != (spec.to_json(), epochs):
        return
    try:
        with st.spinner("Training three runs…"):
            rows = batch_runs(spec.to_json(), float(epochs))
    except SpecError as e:
        st.error(str(e))
        return
    curves = [(r["label"], [{"epoch": e, "train_loss": v} for e, v in r["curve"]]) for r in rows]
    st.plotly_chart(loss_curves(curves, "Training loss by epoch", "epoch"), width="stretch",
                    key="opt_batch_chart")
    st.dataframe([{"updates": r["label"], "batch": r["batch"],
                   "steps per epoch": r["steps_per_epoch"], "steps": r["steps"],
                   "seconds": f"{r['seconds']:.2f}",
                   "loss noise": "" if r["loss_noise"] is None else f"{r['loss_noise']:.3f}",
                   "train loss": f"{r['train_loss']:.3g}", "val loss": f"{r['val_loss']:.3g}",
                   **({"val accuracy": f"{r['val_acc']:.1%}"} if r["val_acc"] is not None
                      else {})} for r in rows], hide_index=True, width="stretch")
    st.caption("Loss noise: how much the batch loss jumps from one step to the next over "
               "each run's last fifth of steps, relative to the loss. Same rate for all three: "
               "a full batch takes one precise step an epoch, one example a step takes many "
               "cheap, noisy ones.")


SECTIONS = {"Surfaces": surfaces_section, "Learning rates": rates_section,
            "Schedules": schedules_section, "Batch sizes": batches_section}

st.title("Optimizer lab")
section = st.segmented_control("Section", list(SECTIONS), default="Surfaces", key="opt_section",
                               label_visibility="collapsed")
SECTIONS[section or "Surfaces"]()
