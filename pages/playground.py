"""Playground: build a network, train it live, and watch every layer's health."""
from __future__ import annotations

import json
import re

import streamlit as st
import torch

from engine import ExperimentSpec, SpecError
from engine.core.registry import ACTIVATIONS, DATASETS, INITIALIZERS, LOSSES, OPTIMIZERS, SCHEDULES
from engine.core.spec import (
    AUG_PARAMS,
    CLIP_MODES,
    DATA_PARAMS,
    ES_PARAMS,
    REG_PARAMS,
    TOP_PARAMS,
    TRAINING_PARAMS,
)
from engine.data.datasets import csv_preview
from engine.io.export import ExportError, export_script
from engine.io.tfp import from_tfp
from engine.lab.compare import (
    AB,
    COMPARISONS,
    comparison_key,
    offered,
    one_change,
    settings,
    variants,
)
from engine.lab.compare import title as comparison_title
from engine.presets import list_presets, load_preset
from engine.runs.sweep import parse_value
from serve.caps import CapError
from serve.runs import Run
from serve.uploads import MB
from ui import panels, widgets
from ui import state as S
from ui.guard import guarded_callback, guarded_page
from ui.identity import browser_id
from ui.live_plot import live_plot
from ui.page import ensure_routed
from ui.server import paths_in_use, run_registry, training_problem, upload_store

ensure_routed()

W = S.W
LIVE_EVERY_S = 0.2    # refresh while training: 5 updates per second on a quiet server
IDLE_EVERY_S = 3.0    # refresh while paused: keeps the run stamped as seen
DEFAULT_PRESET = "tfp_circle"  # what a TensorFlow Playground user sees first
DEFAULT_SPEC = ExperimentSpec.from_dict(load_preset(DEFAULT_PRESET)["config"])
RUN_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as RunRegistry draws them
CONTROL = "control"  # ?control=<token>: a link the owner made to share control of a run
OFF = "off"  # the side-by-side picker's first option (no comparison is called that)
NEED_CSV = "Upload a CSV file the page can read (sidebar, under Data) first."


runs = run_registry()
uploads = upload_store()
me = browser_id()

# ----------------------------------------------------------------------------- session start
def start_session() -> None:
    """First draw of a session, and any link it was opened with: the experiment (?cfg=),
    the run (?run=, brought back from the store if the server forgot it), a control link
    (?control=) and a concept link (?preset=). Each leaves a one-line message."""
    url_error = S.init_from_url(DEFAULT_SPEC)
    if url_error:
        st.session_state["flash"] = ("error", url_error)
    # (name, canonical spec) of the preset last opened: a run of exactly that spec is stored under
    # the preset's title and concept tags
    st.session_state.setdefault("loaded_preset", (DEFAULT_PRESET, DEFAULT_SPEC.canonical()))
    if "run_id" not in st.session_state:
        linked = st.query_params.get(S.RUN)
        st.session_state["run_id"] = None
        shown = ("its experiment is shown" if S.CFG in st.query_params
                 else "the default experiment is shown")
        if linked is not None and not RUN_ID.fullmatch(linked):
            st.session_state["flash"] = ("warning", f"The run id in this link is not valid; {shown}.")
        elif linked is not None and (runs.get(linked) is None or runs.get(linked).lost):
            try:  # the server restarted, or forgot the run: the run store may still hold it
                restored = runs.restore(linked, owner=me)
            except (SpecError, CapError) as e:
                restored = None
                shown = f"it is kept in the run store but cannot be opened here ({e}); {shown}"
            if restored is not None:
                S.load(restored.spec)
                st.session_state["run_id"] = linked
                st.session_state["flash"] = ("info", "This run was brought back from the run store "
                                             f"at step {restored.trainer.step_count:,}" + (
                                                 "." if restored.trainer.done else
                                                 ": press Start to go on from there."))
            else:
                st.session_state["flash"] = ("info", "The run in this link is no longer on this "
                                             f"server; {shown}. Press Start to train it.")
        elif linked is not None:
            st.session_state["run_id"] = linked
    if CONTROL in st.query_params:  # a link the owner made on purpose: join the run's controllers
        linked_run = runs.get(st.session_state.get("run_id"))
        if linked_run is not None and linked_run.grant(me, st.query_params[CONTROL]):
            st.session_state["flash"] = ("success", "This browser can now control the shared run.")
        else:
            st.session_state["flash"] = ("warning", "This control link is no longer valid (its run "
                                         "is gone, or its owner made a new link). You can watch the "
                                         "run, and start your own copy.")
        del st.query_params[CONTROL]
    if "preset" in st.query_params:  # a concept link (?preset=NAME): load it once, then drop it
        try:
            preset = load_preset(st.query_params["preset"])
            S.load(adopt_preset(preset))
            st.session_state["run_id"] = None
            st.session_state["preset_pick"] = st.query_params["preset"]
            st.session_state["flash"] = ("info", f"Loaded the preset **{preset['title']}** "
                                         f"({', '.join(preset['concepts'])}): press **Start**.")
        except SpecError:  # the engine's message lists every preset: right for the CLI, long here
            st.session_state["flash"] = ("error", "This link names no known preset; the default "
                                         "experiment is shown. Pick one under **Presets**.")
        del st.query_params["preset"]


def adopt_preset(preset: dict) -> ExperimentSpec:
    """The page's choices that come with a preset (what it trains side by side; whether it
    trains on until paused: its explanation describes its planned run unless it trains on
    like TFP's; its name, for the run store); returns its spec to open."""
    spec = ExperimentSpec.from_dict(preset["config"])
    st.session_state["compare"] = comparison_key(preset.get("compare"))
    st.session_state["endless"] = preset.get("until_paused", False)
    st.session_state["loaded_preset"] = (preset["name"], spec.canonical())
    return spec


def current_run() -> Run | None:
    """The run this page shows: its own, or one it watches."""
    return runs.get(st.session_state.get("run_id"))


def recovery_due(run: Run | None):
    """(run id, serial) when the page's run is gone from the server (its worker died, or the
    server let it go) and the page has not yet tried to bring this one back; else None."""
    rid = st.session_state.get("run_id")
    gone = run is None or run.lost or run.state == Run.DROPPED
    key = (rid, run.serial if run is not None else None)
    return key if rid and gone and st.session_state.get("recover_tried") != key else None


def recovered(run: Run | None) -> Run | None:
    """The page's run; or, where its worker process died or the server let it go from memory
    (nobody looked at it for NETLAB_UNLOAD_AFTER_S), the same run back from its last
    checkpoint in the store: the page goes on without a reload and says what happened. Tried
    once per run."""
    key = recovery_due(run)
    if key is None:
        return run
    st.session_state["recover_tried"] = key  # a failure is said once, not at every refresh
    rid = key[0]
    died = run is not None and run.lost
    try:
        back = runs.restore(rid, owner=run.owner if run is not None else me)
    except (SpecError, CapError) as e:
        flash("warning", "This run left the server and cannot be brought back here: " + str(e))
        return run
    if back is None:
        if died:
            flash("warning", "The process that trained this run stopped before the run was "
                  "saved. Press **Start** to train it again.")
        return run
    st.session_state["run_id"] = back.id
    why = ("The process that trained this run stopped" if died else "Nobody had looked at "
           "this run for a while, so the server let it go from memory")
    flash("info", f"{why}. It was brought back from its last checkpoint, at step "
          f"{back.trainer.step_count:,}" + (
              f" (one is saved at least every {runs.caps.checkpoint_s:g} s, so no more than "
              "that was lost)" if died else "") + (
              "." if back.trainer.done else ": press **Start** to go on."))
    return back


def in_control(run: Run | None) -> bool:
    return run is not None and run.can_control(me)


def flash(kind: str, text: str) -> None:
    st.session_state["flash"] = (kind, text)


def new_run(spec: ExperimentSpec) -> Run | None:
    """Replace the session's run with a fresh one for `spec` (same id, so the URL stays). A
    watched run is never replaced: the watcher gets a run of its own with a new id."""
    if not in_control(current_run()):
        st.session_state["run_id"] = None
    if spec.data.upload and not uploaded(S.upload_of(spec)):
        # the one check every button passes: a spec from a link or a watched run may name a
        # file this browser did not upload (another browser's table, a server file)
        flash("warning", NEED_CSV)
        return None
    compare, label, twins = side_by_side_variants(spec)
    loaded = st.session_state.get("loaded_preset")  # (name, spec) of the preset last opened
    preset = load_preset(loaded[0]) if loaded and loaded[1] == spec else None
    try:
        run = runs.create(spec, st.session_state.get("run_id"), owner=me, twins=twins,
                          label=label, compare=compare,
                          name=preset["title"] if preset else None,
                          tags=preset["concepts"] if preset else ())
    except (SpecError, CapError) as e:
        flash("error", f"Cannot build this network: {e}")
        return None
    st.session_state["run_id"] = run.id
    return run


def same_setup(run: Run, spec: ExperimentSpec) -> bool:
    """The run trains `spec` with the page's side-by-side choice (compared in one spelling: a
    run opened from a preset or a TensorFlow Playground link holds the spec as written)."""
    return run.spec.canonical() == spec.canonical() and \
        run.compare == st.session_state.get("compare")


def side_by_side_variants(spec: ExperimentSpec) -> tuple[str | None, str | None, list]:
    """The page's side-by-side choice for `spec`: (the comparison, the run's label, the variants
    beside it); (None, None, []) when it is off or does not apply to `spec` (then it is
    switched off)."""
    name = st.session_state.get("compare")
    if not name:
        return None, None, []
    try:
        found = variants(spec, name, panels.spec_dataset(spec))
    except SpecError as e:
        st.session_state["compare"] = None
        flash("warning", f"Side by side ({comparison_title(name)}) is off: {e}.")
        return None, None, []
    return name, found[0][0], found[1:]


def start_run(run: Run | None) -> None:
    if run is None:
        return
    run.endless = bool(st.session_state.get("endless"))
    try:
        run.start()
    except CapError as e:
        flash("warning", str(e))


# ----------------------------------------------------------------------------- button callbacks
def edited_or_flash() -> ExperimentSpec | None:
    if not st.session_state.get("data_ready", True):
        flash("warning", NEED_CSV)
        return None
    spec, error = S.edited_spec()
    if error:
        flash("error", f"Fix the settings first: {error}")
        return None
    return spec


def run_for(spec: ExperimentSpec) -> Run | None:
    """The session's run if it can go on with `spec`, else a fresh one. A run that has not
    stepped yet simply takes the new settings; one with progress keeps its own (Reset applies
    the new ones). A run that completed its steps goes on with another `training.steps` when
    the settings are unchanged; with changed settings, or after a divergence or early stop, a
    new run starts."""
    run = current_run()
    if in_control(run) and same_setup(run, spec) and run.go_on():
        return run
    if not in_control(run) or run.state in (Run.DONE, Run.ERROR, Run.DROPPED) or (
            run.trainer.step_count == 0 and not same_setup(run, spec)):
        return new_run(spec)
    return run


@guarded_callback
def on_start():
    spec = edited_or_flash()
    if spec is not None:
        start_run(run_for(spec))


@guarded_callback
def on_endless():
    run = current_run()
    if in_control(run):
        run.endless = bool(st.session_state.get("endless"))


@guarded_callback
def on_pause():
    run = current_run()
    if in_control(run):
        run.pause()


@guarded_callback
def on_step():
    spec = edited_or_flash()
    run = run_for(spec) if spec is not None else None
    if run:
        run.step_once()


@guarded_callback
def on_compare():
    """The side-by-side choice is a setting like the others: a run that has not stepped (or
    has ended) takes it at once; one in progress keeps training as it is until Reset (the
    page says so), so picking never throws away a run's progress."""
    pick = st.session_state.get("compare_pick", OFF)
    st.session_state["compare"] = None if pick == OFF else pick
    spec = edited_or_flash()
    run = current_run()
    if spec is None or (in_control(run) and run.trainer.step_count > 0
                        and run.state not in (Run.DONE, Run.ERROR, Run.DROPPED)):
        return
    new_run(spec)


@guarded_callback
def on_reset():
    spec = edited_or_flash()
    if spec is None:
        return
    run = current_run()
    if in_control(run):
        run.pause()
    new_run(spec)


def best_step(trainer) -> int | None:
    """The step of the lowest validation loss, marked on the curves where it matters: early
    stopping restores its weights, or the net is overfitting since then."""
    best, last = trainer.history.best, trainer.history.last
    status = ((last or {}).get("health") or {}).get("status")
    if best is None or (trainer.spec.training.early_stopping is None and status != "overfitting"):
        return None
    return best["step"]


@guarded_callback
def on_fix(changes: dict):
    run = current_run()  # the fix was worked out from the run's spec (layer indices and all)
    spec = run.spec if run else st.session_state["spec"]
    try:
        fixed = spec.with_changes(changes)
    except SpecError as e:
        return flash("error", f"That fix does not apply here: {e}")
    S.load(fixed)
    run = new_run(fixed)
    if run is not None:
        run.fixed_from = spec  # its verdict never offers to put back what this fix changed
        start_run(run)
        flash("success", "Applied the fix and restarted the run.")


def open_experiment(spec: ExperimentSpec) -> None:
    """Make `spec` the page's experiment (a preset, a TensorFlow Playground link): the run in
    hand pauses and a fresh one for `spec` takes its place."""
    run = current_run()
    if in_control(run):
        run.pause()
    S.load(spec)
    new_run(spec)


@guarded_callback
def on_preset():
    preset = load_preset(st.session_state["preset_pick"])
    open_experiment(adopt_preset(preset))
    flash("info", f"Loaded **{preset['title']}**. {preset['summary']} Press Start.")


@guarded_callback
def on_tfp_link():
    """A TensorFlow Playground link pasted in the sidebar becomes the experiment, with a note of
    what does not carry over."""
    text = (st.session_state.get("tfp_link") or "").strip()
    if not text:
        return
    try:
        config, notes = from_tfp(text)
        spec = ExperimentSpec.from_dict(config)
    except SpecError as e:
        flash("error", f"This TensorFlow Playground link could not be opened: {e}")
        return
    open_experiment(spec)
    st.session_state["endless"] = True  # TensorFlow Playground trains until paused
    st.session_state["tfp_link"] = ""
    st.session_state["tfp_notes"] = notes
    flash("info", "Opened the TensorFlow Playground link: press **Start**. What differs from "
          "TFP is listed under **From TensorFlow Playground** in the sidebar.")


@guarded_callback
def on_share_control(run: Run):
    if in_control(run):
        st.session_state["control_token"] = (run.id, run.share_control())


@guarded_callback
def on_stop_sharing(run: Run):
    if run.owner == me:  # only the owner takes control back
        run.revoke_control()
        st.session_state.pop("control_token", None)
        flash("success", "Only this browser controls the run now; the control link no longer "
              "works, and the others watch.")


def control_panel(run: Run, base: str) -> None:
    """Sharing control is a deliberate act: a link with a fresh token, never the address bar."""
    st.button("Make a control link", on_click=on_share_control, args=(run,),
              help="Whoever opens it can start, pause and reset this run, as you can.")
    token = st.session_state.get("control_token")
    if token and token[0] == run.id:
        st.caption("Control link: whoever opens it controls this run too. Making a new link "
                   "cancels this one.")
        query = f"{S.share_query(run.spec, keep_path=True)}&{S.RUN}={run.id}&{CONTROL}={token[1]}"
        st.code(base + query, language=None)  # one line; the copy button takes all of it
    if run.owner == me and run.shared:
        st.button("Stop sharing control", on_click=on_stop_sharing, args=(run,),
                  help="Cancels the control link; browsers that joined through it only watch.")


# ----------------------------------------------------------------------------- sidebar
def uploaded(path) -> bool:
    """Only files this browser uploaded are read: a link could name any path on the server.
    A browser given control of a run (a control link) may also use that run's own file."""
    if uploads.owns(me, path):
        return True
    run = current_run()
    return run is not None and run.owner is not None and run.can_control(me) and \
        path == S.upload_of(run.spec) and uploads.owns(run.owner, path)


def csv_upload(container, entry) -> bool:
    """The sidebar's CSV section for a dataset that reads an uploaded table (its tags name the
    parameters for the file and the target column); True once the table can be read."""
    path_key, column_key = W + "data." + entry.tags["upload"], W + "data." + entry.tags["column"]
    leave_out_key = W + "data." + entry.tags["leave_out"]
    limit_mb = max(1, uploads.max_file_bytes // MB)
    file = container.file_uploader("CSV file", type=["csv"], max_upload_size=limit_mb,
                                   help="Input columns hold numbers; the target column may "
                                   "hold numbers or text labels (each label a class). Separated "
                                   f"by commas, semicolons or tabs; up to {limit_mb} MB. Pick the "
                                   "target column below.")
    path = st.session_state.get(path_key)
    if path and not uploaded(path):  # e.g. a link naming a server path, or a forgotten run's
        st.session_state[path_key] = None  # file: the uploader's file is stored again
        st.session_state.pop("upload_id", None)
    # the uploader hands the same file back on every rerun: store it once per upload
    if file is not None and st.session_state.get("upload_id") != file.file_id:
        st.session_state["upload_id"] = file.file_id
        try:
            st.session_state[path_key] = uploads.save(me, file.getvalue(), paths_in_use(runs))
        except SpecError as e:
            st.session_state["upload_error"] = f"This file was not stored: {e}."
        else:
            st.session_state.pop("upload_error", None)
    if st.session_state.get("upload_error"):
        container.error(st.session_state["upload_error"])
    path = st.session_state.get(path_key)
    if not path:
        container.caption(f"Upload a CSV file (up to {limit_mb} MB) to train on your own table.")
        return False
    try:
        head, columns = csv_preview(path, uploads.max_file_bytes)
    except SpecError as e:
        container.error(f"Cannot read this CSV: {str(e).removeprefix('data.path: ')}")
        return False
    container.dataframe(head, hide_index=True, height=200)
    if st.session_state.get(column_key) not in columns:
        st.session_state[column_key] = columns[-1]
    container.selectbox("Target column", columns, key=column_key)
    left = [c for c in st.session_state.get(leave_out_key) or [] if c in columns]
    st.session_state[leave_out_key] = [c for c in left if c != st.session_state[column_key]]
    container.multiselect("Leave out columns", [c for c in columns
                                                if c != st.session_state[column_key]],
                          key=leave_out_key, help="Columns that are not inputs: an id, a date, "
                          "a text column, a copy of the target.")
    return True


def side_by_side_picker(spec: ExperimentSpec) -> None:
    """Side by side: the comparisons that apply to this experiment."""
    try:
        names = offered(spec, panels.spec_dataset(spec))
    except SpecError:  # data that cannot load says so in the main column
        names = []
    chosen = st.session_state.get("compare")
    if chosen and chosen.startswith(AB):  # an A/B made below is an option while it is chosen
        names.append(chosen)
    elif chosen not in names:
        st.session_state["compare"] = None
    if names:
        # the picker has its own key: "compare" (None when off) is the page's choice, which a
        # preset or a link may set; a None value would show the placeholder, not "off"
        st.session_state["compare_pick"] = st.session_state.get("compare") or OFF
        st.selectbox("Side by side", [OFF, *names], key="compare_pick", on_change=on_compare,
                     format_func=lambda k: "off" if k == OFF else comparison_title(k),
                     help="Train variants of this experiment beside it, in step, on the same "
                     "data and seed: " + " ".join(
                         f"{COMPARISONS[k].tags['title']}: {COMPARISONS[k].doc}"
                         for k in names if not k.startswith(AB)) + " A run in progress takes "
                     "the choice at Reset, like any setting.")
    with st.expander("Change one thing (A/B)"):
        options = settings(spec)
        key = st.selectbox("Setting", list(options), key="ab_key",
                           format_func=lambda k: f"{options[k]} ({k})")
        st.text_input("Its value in B", key="ab_value", placeholder="e.g. 0.3, tanh, he_normal")
        st.button("Train A and B", key="ab_go", on_click=on_ab, args=(key,), width="stretch",
                  help="A is this experiment, B the same with this one setting changed: same "
                  "data, same seed, trained in step from the start and overlaid live.")


@guarded_callback
def on_ab(key: str) -> None:
    """Start this experiment (A) and its twin with one setting changed (B) from step 0."""
    spec = edited_or_flash()
    text = (st.session_state.get("ab_value") or "").strip()
    if spec is None:
        return
    if not text:
        flash("warning", "Give B's value for the setting first.")
        return
    name = one_change({key: parse_value(text)})
    try:
        variants(spec, name, panels.spec_dataset(spec))
    except SpecError as e:
        flash("error", f"B cannot be built: {e}")
        return
    st.session_state["compare"] = name
    run = current_run()
    if in_control(run):
        run.pause()
    run = new_run(spec)
    if run is not None:
        run.start()


# ----------------------------------------------------------------------------- sidebar sections
def presets_section() -> None:
    st.subheader("Presets")
    presets = list_presets()
    names = [p["name"] for p in presets]
    titles = {p["name"]: f"{', '.join(p['concepts'])} · {p['title']}" for p in presets}
    st.session_state.setdefault("preset_pick", DEFAULT_PRESET)
    st.selectbox("Preset to load", names, key="preset_pick", format_func=titles.get,
                 help="Pick an experiment and press Load preset; it replaces the settings below.")
    picked = load_preset(st.session_state["preset_pick"])
    st.caption(picked["summary"])  # a line; the explanation, a paragraph, folded
    with st.expander("What to watch"):
        st.caption(picked["explanation"])
    st.button("Load preset", on_click=on_preset, width="stretch")
    st.text_input("Open a TensorFlow Playground link", key="tfp_link", on_change=on_tfp_link,
                  placeholder="https://playground.tensorflow.org/#activation=tanh&…",
                  help="Paste a playground.tensorflow.org address and press Enter: its dataset, "
                  "noise, split, features, network, activation, learning rate, regularisation "
                  "and batch size become this experiment.")
    if st.session_state.get("tfp_notes"):
        with st.expander("From TensorFlow Playground: what differs"):
            for note in st.session_state["tfp_notes"]:
                st.markdown(f"- {note}")


def data_section() -> bool:
    """The data pickers; False while the picked dataset waits for the user's CSV."""
    st.subheader("Data")
    widgets.dataset_picker()
    dataset = DATASETS[st.session_state[W + "data.name"]]
    csv_ready = csv_upload(st, dataset) if dataset.tags.get("upload") else True
    c1, c2 = st.columns(2)
    widgets.param_widget(DATA_PARAMS["val_fraction"], W + "data.val_fraction", c1, "validation share")
    widgets.param_widget(DATA_PARAMS["test_fraction"], W + "data.test_fraction", c2, "test share")
    widgets.param_widget(DATA_PARAMS["normalize"], W + "data.normalize", st, "normalisation")
    return csv_ready


def training_section(spec: ExperimentSpec) -> None:
    st.subheader("Training")
    widgets.choice_picker("Loss", LOSSES, "loss")
    widgets.choice_picker("Optimizer", OPTIMIZERS, "optimizer")
    widgets.choice_picker("Schedule", SCHEDULES, "schedule")
    if not SCHEDULES[spec.schedule.name].tags.get("steady"):
        panels.schedule_preview(spec, runs.caps.max_steps)
    c1, c2 = st.columns(2)
    widgets.param_widget(TRAINING_PARAMS["batch_size"], W + "training.batch_size", c1, "batch size")
    widgets.param_widget(TRAINING_PARAMS["steps"], W + "training.steps", c2, "steps")
    # folded unless one of them is on: the sidebar was 2,600 px tall
    in_use = bool(spec.regularization.l1 or spec.regularization.l2 or spec.training.grad_clip
                  or spec.training.early_stopping)
    with st.expander("Regularisation, clipping, early stopping", expanded=in_use):
        c1, c2 = st.columns(2)
        widgets.param_widget(REG_PARAMS["l1"], W + "regularization.l1", c1, "L1")
        widgets.param_widget(REG_PARAMS["l2"], W + "regularization.l2", c2, "L2")
        c1, c2 = st.columns(2)
        c1.selectbox("Gradient clipping", ["off", *CLIP_MODES], key=W + "training.clip_mode",
                     help="norm: rescale the whole gradient when its norm exceeds the limit; "
                     "value: cap every gradient entry at +-limit.")
        c2.number_input("clip limit", key=W + "training.clip_max", format="%g",
                        disabled=st.session_state[W + "training.clip_mode"] == "off")
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")  # the label needs the room
        c1.checkbox("Early stopping", key=W + "training.es_on", help="Stop when the validation "
                    "loss stops improving and restore the best weights.")
        widgets.param_widget(ES_PARAMS["patience"], W + "training.es_patience", c2, "patience")
    if DATASETS[spec.data.name].tags.get("input") == "image":
        with st.expander("Augmentation (training images only)",
                         expanded=spec.training.augment is not None):
            c1, c2 = st.columns(2)
            for col, (name, p) in zip([c1, c2, c1, c2], AUG_PARAMS.items()):
                widgets.param_widget(p, f"{W}training.augment.{name}", col)
            if spec.training.augment is not None:
                panels.augment_preview(spec)
    if DATASETS[spec.data.name].tags.get("input") in ("sequence", "tokens"):
        widgets.param_widget(TRAINING_PARAMS["tbptt"], W + "training.tbptt", st,
                             "truncate backprop through time after (steps; 0: never)")


def compare_section(spec: ExperimentSpec) -> None:
    """Side by side, A/B and the seed they share, near the top: what is trained beside the
    experiment (they sat under 2,600 px of settings)."""
    st.subheader("Compare")
    side_by_side_picker(spec)
    c1, _ = st.columns(2)
    widgets.param_widget(TOP_PARAMS["seed"], W + "seed", c1)


def run_section(spec: ExperimentSpec) -> None:
    """The phases (pretraining, distillation), device and logging."""
    st.subheader("Run")
    widgets.phases_section(spec)
    c1, c2 = st.columns(2)  # two a row: in three, "auto" read "aut"
    devices = [d for d in TOP_PARAMS["device"].choices if d != "cuda" or torch.cuda.is_available()]
    if st.session_state.get(W + "device") not in devices:
        st.session_state[W + "device"] = "auto"
    c1.selectbox("device", devices, key=W + "device",
                 help="auto uses the GPU when this server has one.")
    widgets.param_widget(TRAINING_PARAMS["log_every"], W + "training.log_every", c2, "log every")


# ----------------------------------------------------------------------------- header
def header(spec: ExperimentSpec, spec_error: str | None, run: Run | None,
           waiting_for_csv: bool) -> tuple[bool, bool]:
    """Title, messages, the run's buttons and a warning when the settings moved on from the
    run. Returns (this browser controls the shown run, it is training)."""
    st.title("Netlab playground")
    if "flash" in st.session_state:
        kind, text = st.session_state.pop("flash")
        getattr(st, kind)(text)
    if training_problem():
        st.warning(training_problem())
    st.session_state["data_ready"] = not waiting_for_csv  # read by the buttons' callbacks
    if waiting_for_csv:
        st.info("Upload a CSV file in the sidebar to train on your own data.")
    elif spec_error:
        st.error(f"{spec_error}. The last valid settings are kept until this is fixed.")
    mine = run is None or in_control(run)
    if not mine:
        st.info("You are watching a run that another browser controls: it trains live here, "
                "but only its owner can pause or change it. **Start**, **Step** and **Reset** "
                "begin your own run with the settings on this page and leave theirs alone.",
                icon=":material/visibility:")
    buttons = st.columns([1, 1, 1, 1, 4], vertical_alignment="center")
    running = bool(run and run.active)
    buttons[0].button("Start", on_click=on_start, type="primary", disabled=running and mine,
                      width="stretch")
    buttons[1].button("Pause", on_click=on_pause, disabled=not (running and mine),
                      width="stretch")
    buttons[2].button("Step", on_click=on_step, width="stretch")
    buttons[3].button("Reset", on_click=on_reset, width="stretch")
    buttons[4].toggle("Train until paused", key="endless", on_change=on_endless,
                      help="Like TensorFlow Playground: the run goes on past its planned steps "
                      f"until you press Pause (this server stops a run at "
                      f"{runs.caps.max_steps:,} steps). The schedule's last rate holds after "
                      "the planned steps. Off: the run stops at its planned steps, the point a "
                      "preset's explanation describes (presets open with it off unless they "
                      "train on like TensorFlow Playground's).")
    if mine and run is not None and not same_setup(run, spec):
        if run.state == Run.DONE:
            st.warning("You changed settings since this run finished: **Start** or **Reset** "
                       "begins a new run with them.")
        else:
            st.warning("You changed settings since this run started. **Reset** applies them (a "
                       "new run starts); until then Start and Step continue the current run.")
    return mine, running


def page_data(spec: ExperimentSpec, waiting_for_csv: bool):
    """The experiment's dataset (cached), or None with the reason shown."""
    if waiting_for_csv:
        return None
    try:
        return panels.spec_dataset(spec)
    except SpecError as e:
        st.error(f"The data cannot be loaded: {e}")
        return None


# ----------------------------------------------------------------------------- network column
def network_column(spec: ExperimentSpec, data, run: Run | None, mine: bool,
                   waiting_for_csv: bool) -> None:
    st.subheader("Network")
    # one above the other: side by side, "xavier uniform" read "xavier unif"
    widgets.choice_picker("Activation (all layers)", ACTIVATIONS, "model.activation")
    widgets.choice_picker("Initializer (all layers)", INITIALIZERS, "model.init")
    st.number_input("Bias init (all layers)", key=W + "model.bias_init", format="%g",
                    help="Starting value of every bias; negative values can kill ReLUs.")
    described, shape_error = panels.describe_rows(spec, data) if data else (None, None)
    shapes = {}
    if described:  # describe() rows in build order; the flatten build_model inserts and the
        # output layer are not in the stack (a flatten layer the user added is, as "flatN")
        stack_rows = [r for r in described["layers"] if r["name"] not in ("flatten", "out")]
        shapes = dict(enumerate(stack_rows))
    widgets.layer_stack_editor(shapes)
    if shape_error:
        st.error(shape_error)
    if described:
        cap = runs.caps.max_params
        total = described["total_params"]
        msg = f"**{total:,} parameters** · input {described['input_shape']}"
        (st.warning if total > cap else st.caption)(
            msg + (f" · over this server's limit of {cap:,}" if total > cap else ""))
        with st.expander("Layer shapes"):
            panels.describe_table(described)
        widgets.conv_calculator(shapes, described["input_shape"])
    with st.expander("Export and share"):
        share_section(spec, run, mine, waiting_for_csv)


def share_section(spec: ExperimentSpec, run: Run | None, mine: bool,
                  waiting_for_csv: bool) -> None:
    # an uploaded table is named by a placeholder, as in share links: the server's upload
    # folder is nobody's business, and the file is on the user's machine anyway
    st.download_button("Download config JSON", S.shareable(spec).to_json(indent=2),
                       "netlab_config.json", "application/json", width="stretch")
    if waiting_for_csv:  # the script reads the data: never a file this browser did not upload
        st.caption("The PyTorch script can be downloaded once your CSV is uploaded.")
    else:
        try:
            script = export_script(spec, data_path=S.SHARED_PATH)
            st.download_button("Download PyTorch script", script, "netlab_train.py",
                               "text/x-python", width="stretch")
        except (SpecError, ExportError) as e:
            st.caption(f"Script export unavailable: {e}")
    base = panels.page_address(st.context.url)
    st.caption("Share link (the experiment, not the run):")
    st.code(base + S.share_query(spec, compare=st.session_state.get("compare"),  # one line: the
                                 endless=st.session_state.get("endless", True)),  # copy button
            language=None)  # takes all of it
    if run is not None and mine and run.owner is not None:
        control_panel(run, base)


# ----------------------------------------------------------------------------- live column
@guarded_page
def live_panel(spec: ExperimentSpec, data) -> None:
    """The run's status, health and the chosen view; a fragment that refreshes itself while
    the run trains (`spec`, `data`: the page's, for a page with no run yet)."""
    run = current_run()
    if recovery_due(run):  # gone just now: the whole page brings it back (recovered), once
        st.rerun(scope="app")
    if run is not None and run.state == Run.DROPPED:  # and it could not come back
        st.info("This run was forgotten by the server (nobody watched it for a long time). "
                "Press **Start** to train its settings again.")
        return
    if run is not None:
        run.touch()
        if run.lost:  # nothing of it can be drawn: its process is gone
            status_line(run, spec)
            return
    S.sync_run(run.id if run else None)
    trainer = run.trainer if run else None
    rows = trainer.history.rows if trainer else []
    if run is None:
        st.caption("Not started. Press **Start** to train, or **Step** to take one step.")
    else:
        status_line(run, spec)
    panels.health_panel(rows[-1].get("health") if rows else None, on_fix, run)
    view = st.segmented_control("View", ["Overview", "Network", "Gradients", "Activations",
                                         "Filters", "Metrics", "Through time"],
                                key="view", default="Overview", label_visibility="collapsed")
    shown = trainer.data if trainer else data
    shown_spec = trainer.spec if trainer else spec
    if view == "Metrics" and shown is not None:
        panels.metrics_view(run, shown)
    elif view == "Filters" and shown is not None:
        panels.filters_view(run, shown_spec, shown, runs.caps.max_params)
    elif view == "Network" and shown is not None:
        panels.network_view(run, shown_spec, shown, runs.caps.max_params)
    elif view == "Gradients":
        if rows:
            panels.gradient_charts(rows)
        else:
            st.info("Gradient charts appear after the first step.")
    elif view == "Activations":
        panels.activation_charts(run, rows)
    elif view == "Through time":
        panels.time_view(run, rows)
    elif view not in ("Metrics", "Filters", "Network"):
        overview(run, spec, shown)
    # the run stopped or started elsewhere: redraw the whole page (buttons, refresh rate)
    if run is not None and run.active != st.session_state.get("drawn_active"):
        st.session_state["drawn_active"] = run.active
        st.rerun(scope="app")


def status_line(run: Run, spec: ExperimentSpec) -> None:
    """State, step, speed, epoch, how it stopped, device, the variants beside it."""
    st.markdown(panels.run_status(run, runs.caps))
    if in_control(run) and same_setup(run, spec) and run.can_continue:
        st.caption(f"**Start** trains this model on for another {spec.training.steps:,} "
                   "steps (the schedule's last rate holds); **Reset** starts over.")
    if run.error and not run.lost:  # a lost run's page says what became of it (recovered)
        st.error(f"Training failed: {run.error}")
    if run.state == Run.PAUSED and run.paused_why:
        st.info(f"The server paused this run: {run.paused_why}. Press **Start** to go on.",
                icon=":material/pause_circle:")
    if run.store_failure:
        st.warning(f"This run cannot be saved right now: the run store failed "
                   f"({run.store_failure}). It trains on, and the rows it logs are kept here and "
                   "written as soon as the store works again; a full disk is the usual cause "
                   "(tell whoever runs this server). Until then a reload of this page may not "
                   "find the run.", icon=":material/save:")


def overview(run: Run | None, spec: ExperimentSpec, shown) -> None:
    """The Overview: a phase's summary, the curves (and the variants' beside them), the data
    with the model's predictions, a character model's writing and the test figures."""
    trainer = run.trainer if run else None
    rows = trainer.history.rows if trainer else []
    if trainer:
        panels.phase_summary(trainer)
    if rows:
        diverged = trainer.stopped == "diverged"
        if diverged:  # its loss spans many powers of ten: a linear axis shows a flat line
            st.toggle("log-scale loss", value=True, disabled=True, key="log_loss_diverged",
                      help="A run that diverged is always drawn on a log axis.")
        else:
            st.toggle("log-scale loss", key="log_loss")
        if run.twins:
            panels.side_by_side(run, st.session_state.get("log_loss", False))
        panels.training_charts(rows, st.session_state.get("log_loss", False),
                               trainer.data.task != "classification",
                               not SCHEDULES[trainer.spec.schedule.name].tags.get("steady"),
                               best_step(trainer), rows[-1]["step"] if diverged else None)
    if shown is not None:
        fig = panels.throttled("data_view", run, panels.REDRAW_EVERY_S,
                               lambda: panels.data_figure(shown, run.predict if rows else None),
                               content=None if run else (json.dumps(spec.data.to_dict()),
                                                         spec.seed))
        live_plot(fig, "data_view", mode_bar=False)
    if trainer and trainer.spec.data.name == "chars" and trainer.step_count:
        panels.writing_panel(run)
    if trainer and trainer.test_metrics:
        t = trainer.test_metrics
        st.caption(f"Test set: loss {t['loss']:.4g}" +
                   (f", accuracy {t['acc']:.1%}" if t["acc"] is not None else ""))


# ----------------------------------------------------------------------------- the page
start_session()
# Widget values are already in session state when the script starts, so the spec they describe
# is known before anything is drawn (and the sidebar can preview its schedule).
spec, _ = S.edited_spec()
with st.sidebar:
    presets_section()
    compare_section(spec)
    csv_ready = data_section()
    training_section(spec)
    run_section(spec)
spec, spec_error = S.edited_spec()  # again: the sidebar may have filled keys (a CSV's target)
# a link may name a file this browser did not upload (a server path, say)
waiting_for_csv = not csv_ready or bool(spec.data.upload and not uploaded(S.upload_of(spec)))
run = recovered(current_run())
S.sync_url(spec, run.id if run else None, st.session_state.get("compare"),
           st.session_state.get("endless", True))
mine, running = header(spec, spec_error, run, waiting_for_csv)
data = page_data(spec, waiting_for_csv)
left, right = st.columns([2, 4], gap="large")
with left:
    network_column(spec, data, run, mine, waiting_for_csv)
with right:
    st.session_state["drawn_active"] = running
    # busy servers refresh each page less often, so that every page keeps moving
    live_every = runs.refresh_every(LIVE_EVERY_S)
    st.fragment(live_panel, run_every=live_every if running else (IDLE_EVERY_S if run else None))(
        spec, data)
