"""Concepts: every bundled preset, grouped by the concept it makes visible, one click to open."""
import streamlit as st

from engine.presets import list_presets
from engine.presets.concepts import concept_title
from ui.page import ensure_routed

ensure_routed()

st.title("Concepts")
st.write("Each preset is a one-click experiment that makes one idea of deep learning visible. "
         "**Open in the playground** replaces the playground's settings with the preset's; press "
         "**Start** and watch what its note describes.")
by_concept: dict[str, list[dict]] = {}
for preset in list_presets():
    for concept in preset["concepts"]:
        by_concept.setdefault(concept, []).append(preset)
for concept in sorted(by_concept):
    titles = ", ".join(p["title"] for p in by_concept[concept])
    with st.expander(f"**{concept_title(concept)}** — {titles}"):
        for p in by_concept[concept]:
            st.markdown(f"**{p['title']}** — {p['summary']}")
            st.write(p["explanation"])
            st.page_link("pages/playground.py", label="Open in the playground",
                         query_params={"preset": p["name"]}, icon=":material/play_arrow:")
