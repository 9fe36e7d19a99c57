"""The Runs page under AppTest (the page file alone, see tests/page_alone.py): a browser's own
runs listed, overlaid and diffed; rename, tags, exports, delete with confirmation; a sweep around
a run with its table, parallel coordinates and ensembles. And the Playground bringing a run back
from the store after a server restart."""
import io
import json
import zipfile

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine import ExperimentSpec, Trainer
from engine.runs.store import RunStore, StoreWriter
from tests.conftest import ROOT
from tests.test_app import button, live_registries
from ui import state as S

PAGE = str(ROOT / "tests" / "page_alone.py")
APP = str(ROOT / "app.py")
ME, OTHER = "a" * 32, "b" * 32


def trained(store, lr: float, browser=ME, name=None, steps=60):
    spec = ExperimentSpec.from_dict({"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
                                     "optimizer": {"name": "sgd", "lr": lr},
                                     "training": {"steps": steps}})
    t = Trainer(spec, callbacks=[StoreWriter(store, name=name, browser=browser)]).run()
    return t.callback("store").run_id


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETLAB_TEST_PAGE", "runs.py")
    st.cache_resource.clear()
    yield RunStore()
    for registry in live_registries():
        registry.shutdown()
    st.cache_resource.clear()


def page(select=()):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["browser_id"] = ME
    if select:
        at.session_state["runs_table"] = {"selection": {"rows": list(select), "columns": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_a_browser_sees_its_runs_and_compares_them(store):
    slow = trained(store, 0.01, name="slow")
    fast = trained(store, 0.3, name="fast")
    trained(store, 0.1, browser=OTHER, name="someone else's")
    trained(store, 0.1, browser=None, name="from the CLI")
    at = page()
    listed = at.dataframe[0].value
    assert list(listed["name"]) == ["from the CLI", "fast", "slow"]  # newest first, not OTHER's
    assert set(listed["status"]) == {"✓ finished"}
    at = page(select=(1, 2))
    assert at.subheader[0].value == "2 runs overlaid"
    loss, acc, grad = charts(at)
    names = {t["name"] for t in loss["data"]}
    assert {"fast", "slow"} <= names and "slow, validation" in names
    rows = {r["step"]: r for r in RunStore().rows(fast)}
    fast_line = next(t for t in loss["data"] if t["name"] == "fast")
    assert fast_line["y"][-1] == pytest.approx(rows[max(rows)]["train_loss"], rel=1e-3)
    assert {t["name"] for t in grad["data"]} == {"fast", "slow"}
    diff = at.dataframe[1].value
    assert list(diff["setting"]) == ["optimizer.lr"]
    assert list(diff.iloc[0])[1:] == ["0.3", "0.01"]
    assert slow


@pytest.mark.slow
def test_one_run_is_renamed_tagged_exported_and_deleted_after_confirming(store):
    run_id = trained(store, 0.1, name="before")
    at = page(select=(0,))
    at.text_input(key=f"runs_name_{run_id}").set_value("after")
    at.text_input(key=f"runs_tagtext_{run_id}").set_value("baseline, F6")
    button(at, "Save name and tags").click().run()
    stored = store.run(run_id)
    assert stored["name"] == "after" and stored["tags"] == ["F6", "baseline"]
    at = page(select=(0,))
    assert at.dataframe[0].value.iloc[0]["concepts"] == "F6"  # a concept id reads as a concept
    downloads = {e.proto.label: e for e in at.get("download_button")}
    assert set(downloads) == {"Config (JSON)", "Metrics (CSV)", "PyTorch script",
                              "TensorBoard files (ZIP)"}
    button(at, "Delete 1 run…").click().run()
    assert "cannot be undone" in at.warning[0].value
    button(at, "Cancel").click().run()
    assert store.run(run_id) is not None
    button(at, "Delete 1 run…").click().run()
    button(at, "Yes, delete").click().run()
    assert store.run(run_id) is None and store.rows(run_id) == []
    assert any("Deleted 1 run" in s.value for s in at.success)


def downloaded(at) -> dict[str, bytes]:
    """What each download button serves (AppTest keeps the files in memory)."""
    import gc

    files = {}
    for o in gc.get_objects():
        if type(o).__name__ == "MediaFileManager":  # one per AppTest run so far: find the file
            files.update(o._storage._files_by_id)
    return {e.proto.label: files[e.proto.url.rsplit("/", 1)[-1].split(".")[0]].content
            for e in at.get("download_button")}


def test_the_exports_are_the_runs_own(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_id = trained(store, 0.1)
    files = downloaded(page(select=(0,)))
    assert json.loads(files["Config (JSON)"]) == store.run(run_id)["spec"]
    assert files["Metrics (CSV)"].decode() == store.metrics_csv(run_id)
    script = files["PyTorch script"].decode()
    compile(script, "run.py", "exec")
    from engine.io.export import export_script
    assert script == export_script(ExperimentSpec.from_dict(store.run(run_id)["spec"]))
    zipfile.ZipFile(io.BytesIO(files["TensorBoard files (ZIP)"])).extractall(tmp_path / "tb")
    (folder,) = list((tmp_path / "tb").iterdir())
    events = EventAccumulator(str(folder))
    events.Reload()
    steps = [r["step"] for r in store.rows(run_id) if r["val_loss"] is not None]
    assert [e.step for e in events.Scalars("loss/val")] == steps


@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.slow
def test_a_sweep_around_a_run_trains_its_variants_and_shows_them(store, monkeypatch, workers):
    """In the web process, and in a worker process (the default), with the same numbers."""
    monkeypatch.setenv("NETLAB_WORKERS", workers)
    trained(store, 0.1, name="base", steps=80)
    at = page(select=(0,))
    at.selectbox(key="sweep_key_0").set_value("optimizer.lr").run()
    at.text_input(key="sweep_values_0").set_value("0.03, 0.3")
    at.text_input(key="sweep_seeds").set_value("0-1")
    button(at, "Run sweep").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Sweep: 4 variants") for s in at.subheader)
    table = at.dataframe[1].value
    assert list(table["optimizer.lr"]) == [0.03, 0.03, 0.3, 0.3]
    assert list(table["seed"]) == [0, 1, 0, 1] and table["best"].tolist().count("★") == 1
    assert any(c["data"][0]["type"] == "parcoords" for c in charts(at))
    ensembles = at.dataframe[2].value
    assert len(ensembles) == 2 and all("±" in v for v in ensembles["val loss"])
    swept = [r for r in store.runs() if any(t.startswith("sweep:") for t in r["tags"])]
    assert len(swept) == 4 and all(r["browser"] == ME for r in swept)
    for r in swept:  # each variant's numbers are those it has trained alone, here
        alone = Trainer(ExperimentSpec.from_dict(r["spec"])).run().history.rows[-1]
        assert r["final"]["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-4)


def test_a_sweep_over_the_servers_limit_is_refused(store, monkeypatch):
    trained(store, 0.1)
    at = page(select=(0,))
    at.selectbox(key="sweep_key_0").set_value("optimizer.lr").run()
    at.text_input(key="sweep_values_0").set_value(", ".join(str(0.01 * k) for k in range(1, 12)))
    at.text_input(key="sweep_seeds").set_value("0-4")
    button(at, "Run sweep").click().run()
    assert "at most 32 are allowed" in at.error[0].value
    at.text_input(key="sweep_seeds").set_value("0")
    at.text_input(key="sweep_values_0").set_value("0.1")
    button(at, "Run sweep").click().run()
    assert "at least two variants" in at.error[0].value


@pytest.mark.slow
def test_the_playground_brings_a_run_back_after_a_server_restart(tmp_path, monkeypatch):
    """Step a run in the Playground; the server 'restarts' (its registry and caches gone, the
    store on disk); the same browser opening the run's link finds it at the same step with the
    same curves, and goes on."""
    monkeypatch.setenv("NETLAB_HOME", str(tmp_path / "home"))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["browser_id"] = ME
    at.run()
    for _ in range(12):
        button(at, "Step").click().run()
    run_id = at.session_state["run_id"]
    before = live_registries()[-1].get(run_id).trainer.history.rows
    for registry in live_registries():  # the server goes away without a word
        registry._stop.set()
    st.cache_resource.clear()
    again = AppTest.from_file(APP, default_timeout=60)
    again.session_state["browser_id"] = ME
    again.query_params[S.RUN] = run_id
    again.run()
    assert not again.exception
    assert any("brought back from the run store at step 12" in i.value for i in again.info)
    run = live_registries()[-1].get(run_id)
    assert run.trainer.step_count == 12 and run.trainer.history.rows == before
    button(again, "Step").click().run()
    assert run.trainer.step_count == 13
    stranger = AppTest.from_file(APP, default_timeout=60)  # another browser: not theirs
    stranger.session_state["browser_id"] = OTHER
    stranger.query_params[S.RUN] = "f" * 32
    stranger.run()
    assert any("no longer on this server" in i.value for i in stranger.info)
    for registry in live_registries():
        registry.shutdown()
    st.cache_resource.clear()


@pytest.mark.slow
def test_continue_in_the_playground_brings_the_run_back_into_this_server(store):
    """The button restores the stored run into the server's registry and makes it the
    session's run (the switch to the Playground itself needs the router: tests/test_browser)."""
    run_id = trained(store, 0.1, steps=200)
    at = page(select=(0,))
    button(at, "Open in the Playground").click().run()  # finished: "Open"
    assert at.session_state["run_id"] == run_id
    run = live_registries()[-1].get(run_id)
    assert run.trainer.done and run.trainer.step_count == 200
    assert run.trainer.history.rows == Trainer(run.spec).run().history.rows


def test_a_command_line_run_is_compared_and_exported_but_not_changed_here(store):
    run_id = trained(store, 0.1, browser=None, name="from the CLI")
    at = page(select=(0,))
    labels = [b.label for b in at.button]
    assert "Open a copy in the Playground" in labels
    assert not {"Save name and tags", "Delete 1 run…", "Open in the Playground"} & set(labels)
    assert "Config (JSON)" in [d.proto.label for d in at.get("download_button")]
    button(at, "Open a copy in the Playground").click().run()  # its experiment, untrained
    assert at.session_state["run_id"] is None
    assert at.session_state["spec"] == ExperimentSpec.from_dict(store.run(run_id)["spec"]) \
        .canonical()
    assert store.run(run_id)["status"] == "finished"


@pytest.mark.slow
def test_one_sweep_at_a_time_on_a_server(store):
    from ui.server import sweep_slots
    trained(store, 0.1)
    at = page(select=(0,))
    at.selectbox(key="sweep_key_0").set_value("optimizer.lr").run()
    at.text_input(key="sweep_values_0").set_value("0.03, 0.3")
    slots = sweep_slots()
    assert slots.acquire(blocking=False)  # another session's sweep is training
    try:
        button(at, "Run sweep").click().run()
        assert "another sweep is training" in at.error[0].value
    finally:
        slots.release()
    button(at, "Run sweep").click().run()
    assert not at.error and any(s.value.startswith("Sweep: 2 variants") for s in at.subheader)


def test_a_store_on_a_full_disk_is_said_never_no_runs(store, monkeypatch):
    """Issue 31, item 13: with the store's disk full another browser's Runs page said "No runs
    yet"; it says the store cannot be read now, or that new rows are not being saved."""
    import sqlite3

    trained(store, 0.1)

    def unreadable(self, *args, **kw):
        raise sqlite3.OperationalError("disk I/O error")
    with monkeypatch.context() as m:
        m.setattr(RunStore, "runs", unreadable)
        at = page()
        text = " ".join(w.value for w in at.warning)
        assert "cannot be read right now (disk I/O error)" in text and "reload" in text
        assert not any("No runs yet" in i.value for i in at.info)
    monkeypatch.setattr(RunStore, "space_problem", lambda self: "the disk holding it is full")
    at = page()
    assert any("New rows are not being saved: the disk holding it is full" in w.value
               for w in at.warning)
    assert len(at.dataframe) >= 1 and not any("No runs yet" in i.value for i in at.info)
