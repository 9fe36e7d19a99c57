"""Netlab: streamlit entry point. Routing only; each page lives in pages/ (ui/page.py)."""
import sys

import streamlit as st
import torch

from serve import settings
from ui.guard import show_unexpected, stop_for_settings
from ui.identity import remember_browser
from ui.page import pages, routed
from ui.server import run_registry


@st.cache_resource
def bad_settings() -> list[str]:
    """Once per server, before anything reads them: the NETLAB_* values it cannot use. A name
    that is no setting (a typo) is only reported in the log."""
    for line in settings.unknown():
        print(f"netlab: {line}", file=sys.stderr, flush=True)
    return settings.problems()


@st.cache_resource
def warm_torch() -> None:
    """Once per server, not per rerun (this file runs on every rerun)."""
    # One intra-op thread per training run: the models here are small, and several runs plus the
    # page renderer sharing 2 cores with OpenMP threads spinning against each other were measured
    # up to 50x slower. Each run gets a core of its own instead.
    torch.set_num_threads(settings.get("NETLAB_TORCH_THREADS"))
    # Measured (DESIGN.md §3): the first optimizer costs ~0.8 s to create; pay it at startup,
    # not on a user's first Start.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


problems = bad_settings()
if problems:
    stop_for_settings(problems)
# First, the run registry: its worker processes take seconds to start (torch's import), and
# started here, on the server's first page load, they boot while that page is drawn instead of
# keeping the first Start waiting (measured: 6.1 s from Start to 'running' on a fresh server).
run_registry()
warm_torch()
# An emoji icon is drawn in the page; a ":material/..." one is fetched from a font server (the
# favicon only: the menu's icons come with Streamlit) and fails offline.
st.set_page_config(page_title="Netlab", page_icon="🧠", layout="wide")
# Streamlit leaves 6rem above the title; at 1280x800 that pushed the decision boundary below the
# fold. 2rem keeps the title clear of the header.
st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2rem}</style>")
page = st.navigation(pages())
with routed():
    try:
        page.run()
    except Exception:  # noqa: BLE001 - last resort: a short message here, the trace in the log
        show_unexpected(page.title)
remember_browser()  # last: its (empty) element leaves no gap above the title
