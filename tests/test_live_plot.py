"""ui/live_plot.py: what the component sends and where plotly.js comes from. Drawing in place
and keeping a zoom are checked in a real browser (tests/test_browser.py)."""
import json
import os

import streamlit as st
from streamlit.testing.v1 import AppTest

from ui import live_plot


def _static_file(address: str) -> str:
    root = os.path.join(os.path.dirname(st.__file__), "static")
    return os.path.join(root, *address.split("/"))


def test_plotly_js_comes_from_streamlit_s_bundle_and_the_fallback_exists():
    module = live_plot.PLOTLY_SOURCES["module"]
    assert module is not None, "the pinned Streamlit has one PlotlyChart bundle"
    assert os.path.isfile(_static_file(module))
    assert live_plot.PLOTLY_SOURCES["script"] == \
        f"component/{live_plot._PLOTLY_FILES.name}/plotly.min.js"
    fallback = os.path.join(live_plot._PLOTLY_FILES.path, "plotly.min.js")
    assert os.path.getsize(fallback) > 1_000_000


def _page():
    import plotly.graph_objects as go

    from ui.live_plot import live_plot as draw
    draw(go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout=dict(height=220, uirevision="r")), "a")
    draw({"data": [{"type": "bar", "x": [1], "y": [2]}], "layout": {}}, "b", mode_bar=False)


def test_each_figure_travels_whole_in_the_theme_with_its_height():
    at = AppTest.from_function(_page).run()
    assert not at.exception
    sent = [json.loads(e.proto.json) for e in at.get("bidi_component")]
    assert [e.proto.component_name for e in at.get("bidi_component")] == [live_plot.NAME] * 2
    first, second = (json.loads(s["figure"]) for s in sent)
    assert first["data"][0]["y"] == [3, 4] and first["layout"]["uirevision"] == "r"
    assert first["layout"]["template"] == live_plot.THEME == second["layout"]["template"]
    assert [s["height"] for s in sent] == [220, live_plot.DEFAULT_HEIGHT]
    assert [s["config"]["displayModeBar"] for s in sent] == ["hover", False]
