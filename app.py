"""Netlab: streamlit entry point. Routing only; each page lives in pages/."""
import streamlit as st
import torch

# Measured (DESIGN.md §3): the first optimizer costs ~0.8 s to create; pay it once at startup,
# not on a user's first Start.
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

st.set_page_config(page_title="Netlab", page_icon="🧠", layout="wide")
pages = [
    st.Page("pages/playground.py", title="Playground", icon="🧪", default=True),
    st.Page("pages/concepts.py", title="Concepts", icon="📚"),
]
st.navigation(pages).run()
