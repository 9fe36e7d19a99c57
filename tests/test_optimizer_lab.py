"""The Optimizer lab page under AppTest: walks on surfaces with the closed form beside them, the
range test with 2/L, every schedule, and batch sizes; each button trains what it says."""
import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "tests" / "page_alone.py")


@pytest.fixture
def lab(monkeypatch):
    monkeypatch.setenv("NETLAB_TEST_PAGE", "optimizers.py")
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    yield at
    st.cache_data.clear()


def charts(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def no_problems(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_bowl_shows_three_walkers_animated_and_the_closed_form(lab):
    no_problems(lab)
    surface = charts(lab)[0]
    kinds = [t["type"] for t in surface["data"]]
    assert kinds[:2] == ["contour", "scatter"] and len(kinds) == 5  # contour, minima, 3 paths
    names = [t["name"] for t in surface["data"][2:]]
    assert names == ["sgd lr 0.019", "sgd lr 0.005, momentum 0.9", "adam lr 0.05"]
    frames = surface["frames"]
    assert 2 <= len(frames) <= 61 and frames[-1]["name"] == "200"
    assert [len(t["x"]) for t in frames[0]["data"]] == [1, 1, 1]  # the start only
    assert len(frames[-1]["data"][0]["x"]) == 201  # under the thinning limit: every point
    text = markdown(lab)
    assert "2/L = 0.02" in text and "sgd lr 0.019**: converges" in text
    assert "overshoots along the steep direction" in text  # 0.019 > 1/L = 0.01
    assert "adaptive optimizer" in text
    table = next(d.value for d in lab.dataframe if "walker" in d.value.columns)
    assert list(table["walker"]) == names
    # plain GD crawls along the flat x direction (1 - 0.019 a step); momentum gets there
    assert table["end"][0].startswith("f = 0.000233 at step 200")
    assert table["end"][1].startswith("f − f_min < 1e-6 at step")


def test_long_walks_are_thinned_and_keep_their_last_point(lab):
    from ui.optimizer_charts import MAX_POINTS
    lab.session_state["opt_steps"] = 2000
    lab.run()
    no_problems(lab)
    surface = charts(lab)[0]
    paths = surface["data"][2:]
    assert all(len(p["x"]) <= MAX_POINTS for p in paths)
    assert all(len(t["x"]) <= MAX_POINTS for f in surface["frames"] for t in f["data"])
    assert len(json.dumps(surface)) < 3e6


def test_a_rate_above_2_over_L_diverges_and_kappa_moves_the_limit(lab):
    lab.session_state["opt_walkers"] = [{"optimizer": "sgd", "lr": 0.021, "momentum": 0.0}]
    lab.session_state["opt_steps"] = 400
    lab.run()
    no_problems(lab)
    assert "sgd lr 0.021**: diverges" in markdown(lab)
    ys = charts(lab)[0]["data"][2]["y"]
    assert abs(ys[-1]) > abs(ys[0])  # the steep direction grows
    lab.session_state["opt_param_quadratic_kappa"] = 10.0
    lab.run()
    assert "2/L = 0.2" in markdown(lab) and "sgd lr 0.021**: converges" in markdown(lab)


def test_another_surface_brings_its_own_start_and_rates(lab):
    lab.selectbox(key="opt_surface").set_value("rosenbrock").run()
    no_problems(lab)
    assert (lab.session_state["opt_x"], lab.session_state["opt_y"]) == (-1.5, 2.0)
    assert [w["lr"] for w in lab.session_state["opt_walkers"]] == [0.001, 0.0005, 0.05]
    assert "Closed form" not in markdown(lab)  # no exact limit for Rosenbrock
    surface = charts(lab)[0]
    assert surface["data"][1]["x"] == [1.0] and surface["data"][1]["y"] == [1.0]  # its minimum


@pytest.mark.slow
def test_the_range_test_marks_its_suggestion_and_2_over_L_and_trains_four_rates(lab):
    lab.session_state["opt_section"] = "Learning rates"
    lab.run()
    no_problems(lab)
    figure = charts(lab)[0]
    notes = [a["text"] for a in figure["layout"]["annotations"]]
    assert "2/L at the start" in notes and "this run's rate" in notes
    assert "sharpness is L =" in markdown(lab)
    lab.button(key="opt_train_rates").click().run()
    no_problems(lab)
    table = next(d.value for d in lab.dataframe if "run" in d.value.columns)
    assert len(table) == 4 and list(table["run"])[1].startswith("suggested: ")


@pytest.mark.slow
def test_every_schedule_is_drawn_and_trained(lab):
    from engine.core.registry import SCHEDULES
    lab.session_state["opt_section"] = "Schedules"
    lab.run()
    no_problems(lab)
    assert [t["name"] for t in charts(lab)[0]["data"]] == SCHEDULES.offered()
    lab.button(key="opt_train_schedules").click().run()
    no_problems(lab)
    table = next(d.value for d in lab.dataframe if "run" in d.value.columns)
    assert list(table["run"]) == SCHEDULES.offered()


def test_batch_sizes_train_at_matched_epochs(lab):
    lab.session_state["opt_section"] = "Batch sizes"
    lab.run()
    lab.button(key="opt_train_batches").click().run()
    no_problems(lab)
    table = next(d.value for d in lab.dataframe if "updates" in d.value.columns)
    assert list(table["updates"]) == ["full batch", "mini-batch", "single example"]
    assert list(table["steps"]) == [2 * 320 // b for b in table["batch"]]


def test_the_playgrounds_recurrent_experiment_is_read_and_a_csv_one_is_not(monkeypatch):
    from engine import ExperimentSpec
    monkeypatch.setenv("NETLAB_TEST_PAGE", "optimizers.py")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["spec"] = ExperimentSpec.from_dict({
        "data": {"name": "sine", "n": 200, "length": 8},
        "model": {"layers": [{"type": "lstm", "units": 8}, {"type": "last_step"}]},
        "optimizer": {"name": "adam"}, "training": {"steps": 50}})  # its default rate
    at.session_state["opt_section"] = "Schedules"
    at.run()
    no_problems(at)
    caption = next(c.value for c in at.caption if c.value.startswith("On "))
    assert "the Playground's current experiment: sine, layers [8, last_step], adam at lr " \
           "0.01" in caption
    at.session_state["spec"] = ExperimentSpec.from_dict({
        "data": {"name": "csv", "path": "/etc/passwd", "target": "x"}})
    at.run()
    no_problems(at)
    caption = next(c.value for c in at.caption if c.value.startswith("On "))
    assert "circle" in caption and "your own CSV train in the Playground only" in caption
