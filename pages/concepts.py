"""Concepts: every bundled preset, grouped by the concept it makes visible, one click to open."""
import streamlit as st

from engine.presets import list_presets
from ui.page import ensure_routed

ensure_routed()

st.title("Concepts")
st.write("Each preset is a one-click experiment that makes one idea of deep learning visible. "
         "Open one in the playground, press **Start**, and watch what its note describes.")
by_concept: dict[str, list[dict]] = {}
for preset in list_presets():
    for concept in preset["concepts"]:
        by_concept.setdefault(concept, []).append(preset)
for concept in sorted(by_concept):
    with st.expander(f"{concept}: {', '.join(p['title'] for p in by_concept[concept])}"):
        for p in by_concept[concept]:
            st.markdown(f"**{p['title']}** — {p['summary']}")
            st.write(p["explanation"])
            st.page_link("pages/playground.py", label="Open in the playground",
                         query_params={"preset": p["name"]}, icon=":material/play_arrow:")
