"""Concepts: every bundled preset, grouped by the concept it makes visible, one click to open."""
import streamlit as st

from engine import ExperimentSpec
from engine.nn.model import describe
from engine.presets import list_presets
from engine.presets.concepts import concept_title
from engine.train.trainer import output_dim
from ui.page import ensure_routed
from ui.panels import spec_dataset

COMPARED = "G5"  # classic architectures: their sizes side by side
# concepts a page shows rather than a preset: (page, where to look, in our words)
ON_PAGES = {"F6": ("pages/runs.py", "Runs", "Train a run in the Playground, then on the Runs page "
                   "select it and open **Sweep around this run**: a grid of settings, several "
                   "seeds (each setting's mean and spread, and the accuracy of the seeds' ensemble, "
                   "which averages the members' predicted probabilities) or k-fold "
                   "cross-validation (each fold of the data validates once), trained together, "
                   "with a results table and parallel coordinates.")}


@st.cache_data(show_spinner=False)
def architecture_table(names: tuple[str, ...]) -> list[dict]:
    """Parameters and multiply-adds of each named preset's net (describe(), nothing trained),
    smallest first."""
    rows = []
    for p in list_presets():
        if p["name"] not in names:
            continue
        spec = ExperimentSpec.from_dict(p["config"])
        data = spec_dataset(spec)
        d = describe(spec, data.in_shape, output_dim(spec, data))
        rows.append({"preset": p["title"], "data": spec.data.name,
                     "parameters": d["total_params"],
                     "multiply-adds per image": d["total_macs"]})
    return sorted(rows, key=lambda r: r["parameters"])

ensure_routed()

st.title("Concepts")
st.write("Each preset is a one-click experiment that makes one idea of deep learning visible. "
         "**Open in the playground** replaces the playground's settings with the preset's; press "
         "**Start** and watch what its note describes.")
by_concept: dict[str, list[dict]] = {}
for preset in list_presets():
    for concept in preset["concepts"]:
        by_concept.setdefault(concept, []).append(preset)
for concept in sorted(set(by_concept) | set(ON_PAGES)):
    if concept not in by_concept:
        page, name, how = ON_PAGES[concept]
        with st.expander(f"**{concept_title(concept)}** — the {name} page"):
            st.write(how)
            st.page_link(page, label=f"Open the {name} page", icon=":material/arrow_forward:")
        continue
    titles = ", ".join(p["title"] for p in by_concept[concept])
    with st.expander(f"**{concept_title(concept)}** — {titles}"):
        if concept == COMPARED:  # with LeNet's idea, the first of them (a G1 preset)
            compared = {p["name"] for p in by_concept[concept]} | {"cnn_digits"}
            st.dataframe(architecture_table(tuple(sorted(compared))), hide_index=True,
                         width="stretch")
            st.caption("Counted from each net as built (no training): weights, and the "
                       "multiply-adds of its convolutions and dense layers for one image.")
        for p in by_concept[concept]:
            st.markdown(f"**{p['title']}** — {p['summary']}")
            st.write(p["explanation"])
            st.page_link("pages/playground.py", label="Open in the playground",
                         query_params={"preset": p["name"]}, icon=":material/play_arrow:")
