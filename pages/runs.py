"""Runs: every run this browser trained (kept in the run store across server restarts), to
compare, rename, tag, delete, export, open again, and sweep around."""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import traceback
import zipfile

import streamlit as st

from engine import ExperimentSpec, SpecError
from engine.core.registry import ACTIVATIONS, INITIALIZERS
from engine.io.export import ExportError, export_script
from engine.lab.compare import settings
from engine.runs.sweep import parse_seeds, parse_value, plan
from engine.runs.sweep import run as run_sweep
from engine.runs.tensorboard import write_events
from serve.caps import CapError, Caps
from serve.settings import get as setting
from serve.workers import sweep_in_worker
from ui import state as S
from ui import stored_runs as V
from ui.identity import browser_id
from ui.page import ensure_routed
from ui.server import run_registry, run_store, store_problem, sweep_slots

ensure_routed()

CAPS = Caps()
MAX_SWEEP = setting("NETLAB_MAX_SWEEP")  # variants one sweep may train here
# steps of all variants together: a sweep trains in this page's own turn, outside the training
# slot the live runs share, so it is bounded as a whole
MAX_SWEEP_STEPS = setting("NETLAB_MAX_SWEEP_STEPS")
PLAYGROUND = "pages/playground.py"

me = browser_id()
store, registry = run_store(), run_registry()


def open_in_playground(run_id: str) -> None:
    """The run becomes the Playground's: from this server's memory, else from its checkpoint."""
    try:
        held = registry.get(run_id)  # a run whose worker died comes back from the store
        run = held if held is not None and not held.lost else registry.restore(run_id, owner=me)
    except (SpecError, CapError) as e:
        st.session_state["runs_flash"] = ("error", f"This run cannot be opened: {e}")
        return
    if run is None:
        st.session_state["runs_flash"] = ("error", "This run is no longer in the store.")
        return
    S.load(run.spec)
    st.session_state["run_id"] = run.id
    st.session_state["compare"] = run.compare
    st.switch_page(PLAYGROUND, query_params={S.RUN: run.id})


def open_spec(spec: ExperimentSpec) -> None:
    """A spec (a sweep's best variant) becomes the Playground's experiment, untrained."""
    S.load(spec)
    st.session_state["run_id"] = None
    st.session_state["compare"] = None
    st.switch_page(PLAYGROUND)


def pick_runs(runs: list[dict]) -> list[dict]:
    """The table of runs, filtered by text and tags; returns the rows selected in it."""
    search, tag_pick = st.columns([2, 1])
    text = search.text_input("Find", placeholder="a name, a dataset, an optimizer…",
                             key="runs_find").strip().lower()
    all_tags = sorted({t for r in runs for t in r["tags"]})
    wanted = tag_pick.multiselect("With tags", all_tags, key="runs_tags")
    shown = [r for r in runs if (not text or text in r["name"].lower()
                                 or text in json.dumps(r["spec"]).lower())
             and all(t in r["tags"] for t in wanted)]
    st.caption(f"{len(shown)} of {len(runs)} runs. Select rows to compare them, or one to "
               "rename, tag, export, open or sweep around it.")
    picked = st.dataframe(V.table(shown), hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="multi-row", key="runs_table",
                          column_config={"val acc": st.column_config.NumberColumn(format="%.3f")})
    return [shown[i] for i in picked.selection.rows if i < len(shown)]


def compare(selected: list[dict], rows: dict) -> None:
    """The selected runs' curves overlaid, and the settings on which they differ."""
    named = [(r["name"], rows[r["id"]]) for r in selected]
    st.subheader("Curves" if len(selected) == 1 else f"{len(selected)} runs overlaid")
    cols = st.columns(3)
    for col, metric in zip(cols, ("loss", "acc", "grad_norm")):
        fig = V.overlay(named, metric)
        if fig is not None:
            col.plotly_chart(fig, width="stretch", key=f"runs_overlay_{metric}")
    if len(selected) > 1:
        diff = V.differences(selected)
        st.markdown("**Settings that differ**")
        if diff:
            st.dataframe(diff, hide_index=True, width="stretch")
        else:
            st.caption("None: these runs trained the same experiment.")


def one_run(r: dict) -> None:
    """Open or continue, rename and tag, export."""
    try:
        spec = ExperimentSpec.from_dict(r["spec"])
    except SpecError as e:  # stored by a Netlab that allowed what this one does not
        st.warning(f"**{r['name']}**: its config no longer loads here ({e}); its curves are "
                   "above.")
        return
    mine = r["browser"] == me  # else the command line's: compared and exported here only
    st.subheader(r["name"])
    summary = r["summary"] or {}
    facts = [V.STATUS.get(r["status"], r["status"]), f"step {r['final'].get('step') or 0:,}",
             f"checkpoint at step {r['checkpoint']:,}" if r["checkpoint"] is not None
             else "no checkpoint yet"]
    if summary.get("stopped"):
        facts.append(f"stopped: {summary['stopped']}")
    st.caption(" · ".join(facts))
    if not mine or r["checkpoint"] is None and r["status"] == "finished":
        if st.button("Open a copy in the Playground", type="primary", key="runs_copy",
                     help="Its experiment, untrained: "
                     + ("this run belongs to the command line, which resumes it"
                        if not mine else "this run has no checkpoint to go on from")):
            open_spec(spec)
    else:
        go_on = "Open in the Playground" if r["status"] == "finished" else \
            "Continue in the Playground"
        if st.button(go_on, type="primary", key="runs_open",
                     help="Its charts come back and Start trains on from its last checkpoint, "
                     "with the numbers it would have had without the stop."):
            open_in_playground(r["id"])
    manage, export = st.columns(2)
    if not mine:
        manage.caption("A run of the command line: rename, tag or delete it there "
                       "(`python -m engine runs`).")
    else:
        _manage(manage, r)
    with export:
        st.download_button("Config (JSON)", spec.to_json(indent=2), f"{r['id'][:8]}.json",
                           "application/json", key="runs_config")
        csv, zipped = exports(r["id"], r["updated"])
        st.download_button("Metrics (CSV)", csv, f"{r['id'][:8]}.csv", "text/csv",
                           key="runs_csv")
        try:
            st.download_button("PyTorch script", export_script(spec), f"{r['id'][:8]}.py",
                               "text/x-python", key="runs_script")
        except ExportError as e:
            st.caption(f"No script: {e}")
        st.download_button("TensorBoard files (ZIP)", zipped, f"{r['id'][:8]}-tb.zip",
                           "application/zip", key="runs_tb",
                           help="Unzip and run: tensorboard --logdir <folder>")


@st.cache_data(max_entries=16, show_spinner=False)
def exports(run_id: str, updated: float) -> tuple[str, bytes]:
    """A run's metrics CSV and its TensorBoard files zipped, made once per state of the run
    (`updated` changes with every write), not on every rerun of the page."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(buf, "w") as z:
        write_events(store.rows(run_id), folder)
        for f in os.listdir(folder):
            z.write(os.path.join(folder, f), f"{run_id[:8]}/{f}")
    return store.metrics_csv(run_id), buf.getvalue()


def _manage(where, r: dict) -> None:
    """Rename and tag one of this browser's runs."""
    with where:
        name = st.text_input("Name", value=r["name"], key=f"runs_name_{r['id']}",
                             max_chars=120)
        tags = st.text_input("Tags (comma-separated)", value=", ".join(r["tags"]),
                             key=f"runs_tagtext_{r['id']}")
        if st.button("Save name and tags", key="runs_save"):
            try:
                store.rename(r["id"], name.strip() or r["name"])
                store.tag(r["id"], [t.strip() for t in tags.split(",") if t.strip()])
                st.session_state["runs_flash"] = ("success", "Saved.")
            except SpecError as e:
                st.session_state["runs_flash"] = ("error", str(e))
            st.rerun()


def delete(selected: list[dict]) -> None:
    """Delete this browser's selected runs, after a second click that says what goes."""
    ids = [r["id"] for r in selected if r["browser"] == me]
    if not ids:
        return
    st.divider()
    plural = "s" if len(ids) > 1 else ""
    if st.session_state.get("runs_delete") != ids:
        if st.button(f"Delete {len(ids)} run{plural}…", key="runs_delete_ask"):
            st.session_state["runs_delete"] = ids
            st.rerun()
        return
    st.warning(f"Delete {len(ids)} run{plural} with their curves and checkpoints? This cannot "
               "be undone.")
    yes, no = st.columns(2)
    if yes.button("Yes, delete", type="primary", key="runs_delete_yes"):
        for run_id in ids:
            registry.drop(run_id)  # a run still live here stops writing first
            store.delete(run_id)
        st.session_state.pop("runs_delete")
        st.session_state["runs_flash"] = ("success", f"Deleted {len(ids)} run{plural}.")
        st.rerun()
    if no.button("Cancel", key="runs_delete_no"):
        st.session_state.pop("runs_delete")
        st.rerun()

# ----------------------------------------------------------------------------- sweep


EXAMPLES = {"optimizer.lr": "0.001, 0.01, 0.1", "optimizer.name": "sgd, adam",
            "model.activation": ", ".join(list(ACTIVATIONS.keys())[:3]),
            "model.init": ", ".join(list(INITIALIZERS.keys())[:2]),
            "training.batch_size": "10, 32, 100", "regularization.l2": "0, 0.001, 0.01"}

# Layout, in the order it appears on the page: the grid's inputs, the plan, the results.
def sweep_around(r: dict) -> None:
    """A grid of settings, seeds or folds around one run, trained here."""
    base = ExperimentSpec.from_dict(r["spec"])
    with st.expander("Sweep around this run: a grid of settings, seeds, cross-validation"):
        st.caption("Every combination of the values below, each once per seed (or once per "
                   "fold), trained together: variants that share a shape train as one batched "
                   "model. The data stays this run's, so every variant is scored on the same "
                   "examples and seeds average into an ensemble.")
        options = settings(base)
        grid = {}
        for k in range(3):
            key_col, values_col = st.columns([1, 2])
            key = key_col.selectbox(f"Setting {k + 1}", [None, *options], key=f"sweep_key_{k}",
                                    format_func=lambda x: "—" if x is None else
                                    f"{options[x]} ({x})")
            values = values_col.text_input("Values (comma-separated)", key=f"sweep_values_{k}",
                                           placeholder=EXAMPLES.get(key or "", "1, 2, 3"),
                                           disabled=key is None)
            if key and values.strip():
                grid[key] = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        seeds_col, folds_col = st.columns(2)
        seeds_text = seeds_col.text_input("Seeds", value=str(base.seed), key="sweep_seeds",
                                          help="e.g. 0-4: each setting five times, for its "
                                          "spread and an ensemble")
        folds = folds_col.selectbox("Cross-validation", [0, 3, 5], key="sweep_folds",
                                    format_func=lambda f: "off" if not f else f"{f} folds")
        if st.button("Run sweep", key="sweep_run", type="primary"):
            try:
                seeds = parse_seeds(seeds_text)
                variants = plan(base, grid, seeds, folds=folds, max_variants=MAX_SWEEP)
                total = sum(v.spec.training.steps for v in variants)
                if len(variants) < 2:
                    raise SpecError("a sweep needs at least two variants: give a setting "
                                    "several values, several seeds or folds")
                if total > MAX_SWEEP_STEPS:
                    raise SpecError(f"the sweep would train {total:,} steps in all; this "
                                    f"server allows {MAX_SWEEP_STEPS:,}. Use fewer variants "
                                    "or steps")
                for v in variants:
                    CAPS.check_spec(v.spec)
                if not sweep_slots().acquire(blocking=False):
                    raise SpecError("another sweep is training on this server; try again when "
                                    "it has finished (they take seconds)")
                try:
                    bar = st.progress(0.0, "Training…")

                    def progress(done, n):
                        bar.progress(done / n, f"{done}/{n} trained")
                    if registry.workers is None:
                        result = run_sweep(
                            variants, store=store, name=f"sweep of {r['name']}",
                            max_params=CAPS.max_params, browser=me,
                            check=CAPS.check_step_work, progress=progress)
                    else:  # a worker trains it; this page only shows how far it got
                        result = sweep_in_worker(registry.workers, variants,
                                                 f"sweep of {r['name']}", me, progress)
                finally:
                    sweep_slots().release()
                st.session_state["sweep_result"] = result
            except SpecError as e:
                st.error(f"Cannot run this sweep: {e}")
            except Exception as e:  # noqa: BLE001 - a message, the trace in the server's log
                traceback.print_exc()
                st.error(f"The sweep failed ({type(e).__name__}): {str(e)[:300]}")


def sweep_results(result: dict) -> None:
    """The last sweep's variants, their parallel coordinates, seeds and folds summarised."""
    st.subheader(f"Sweep: {len(result['variants'])} variants in {result['seconds']:.1f} s")
    batched = sum(g["size"] for g in result["groups"] if g["batched"])
    alone = {g["alone_because"] for g in result["groups"] if not g["batched"]}
    st.caption(f"{batched} trained batched" + (f"; one by one because {'; '.join(alone)}"
                                               if alone else "") + ".")
    st.dataframe(V.sweep_table(result), hide_index=True, width="stretch")
    fig = V.parallel_coordinates(result)
    if fig is not None:
        st.plotly_chart(fig, width="stretch", key="sweep_parcoords")
    if result["ensembles"]:
        st.markdown("**Over seeds and folds** (mean ± standard deviation)")
        st.dataframe([{**{k: json.dumps(v) for k, v in e["changes"].items()},
                       "over": f"{e['val_loss']['n'] if e['val_loss'] else '?'} {e['over']}",
                       "val loss": (f"{e['val_loss']['mean']:.4g} ± {e['val_loss']['std']:.2g}"
                                    if e["val_loss"] else None),
                       "val acc": (f"{e['val_acc']['mean']:.3f} ± {e['val_acc']['std']:.3f}"
                                   if e["val_acc"] else None),
                       "ensemble val acc": (None if e["ensemble_val_acc"] is None
                                            else f"{e['ensemble_val_acc']:.3f}")}
                      for e in result["ensembles"]], hide_index=True, width="stretch")
        st.caption("The ensemble averages its members' class probabilities on the validation "
                   "examples they share; with folds each member validates on other examples, "
                   "so there is no ensemble, only the spread.")
    if result["best"] is not None:
        best = result["variants"][result["best"]]
        if st.button(f"Open the best ({best['label']}) in the Playground", key="sweep_best"):
            open_spec(ExperimentSpec.from_dict(best["spec"]))


# ----------------------------------------------------------------------------- the page
st.title("Runs")
flash = st.session_state.pop("runs_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])
problem = store_problem()
stored = []
if not problem:  # a full disk or a lock held too long is said, never "No runs yet"
    stored, problem = store.listing(browser=me)
full = store.space_problem() if not problem else None
if full:
    st.warning(f"New rows are not being saved: {full}. Runs go on training and keep their rows "
               "to write when there is room; free some space on that disk (or set NETLAB_HOME "
               "to another one and restart the server).")
if not problem and store.damaged:  # named in the server log; here a count (ids are not ours)
    for line in store.damaged:
        print(f"netlab: run store {store.where}: {line}", file=sys.stderr)
    st.warning(f"{len(store.damaged)} stored run(s) could not be read (a damaged record) and "
               "are left out; the rest are listed.")
if problem and "right now" in problem:
    st.warning(f"{problem[0].upper()}{problem[1:]}. Runs go on training and keep their rows to "
               "write when it works again: reload this page in a while.")
elif problem:
    st.warning(f"Runs are not being kept on this server: {problem}." + (
        "" if "is damaged" in problem else " Set NETLAB_HOME to a writable folder and restart "
        "it."))
elif store.notice and not stored:  # until the new store holds a run
    st.info(store.notice[0].upper() + store.notice[1:] + ".")
elif not stored:
    st.info("No runs yet. Every run you train in the Playground is kept here, with its curves "
            "and its last checkpoint, even across a server restart.")
else:
    chosen = pick_runs(stored)
    if chosen:
        curves = {r["id"]: store.rows(r["id"]) for r in chosen}
        compare(chosen, curves)
        if len(chosen) == 1:
            one_run(chosen[0])
        delete(chosen)
        if len(chosen) == 1:
            sweep_around(chosen[0])
    if st.session_state.get("sweep_result"):
        sweep_results(st.session_state["sweep_result"])
