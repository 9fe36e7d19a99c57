"""The app's pages, and the call every file in pages/ makes before it draws anything.

app.py is the router: it warms torch, sets the page config, asks `st.navigation` for the page
and runs it inside the last-resort guard. The page files live in `pages/`, the folder DESIGN.md
names. Measured on Streamlit 1.67: a folder called `pages/` next to the entry script puts the
server in Streamlit's legacy multipage mode until some session calls `st.navigation` (that
call switches it off for every session, as the st.navigation docs say). In that window, which
opens at every server start, a direct visit to `/concepts` or `/playground` (a bookmark, a
shared link, a reload) runs the page file alone: no page config (the tab reads "concepts"),
no warm-up, no guard, a menu of file names. `ensure_routed()` closes the window: called first
by a page that runs without the router, it calls `st.navigation` (which ends legacy mode for
the whole server) and reruns, so the same URL is served again, now through app.py.
"""
from __future__ import annotations

import contextlib
import threading

import streamlit as st

_here = threading.local()  # each session's script runs on its own thread


def pages() -> list[st.Page]:
    """What st.navigation routes: Playground at /, Concepts at /concepts, Optimizer lab at
    /optimizers, Runs at /runs, and /playground, a
    hidden page that sends an old or hand-typed link to / with its query string (?cfg=, ?run=)."""
    # A page's identity (its script hash) is its url_path, inferred from the file name when
    # none is given; the default page is served at / whatever its url_path, so it takes one that
    # leaves /playground free for the redirect.
    playground = st.Page("pages/playground.py", title="Playground", icon=":material/science:",
                         url_path="home", default=True)

    def to_playground() -> None:
        st.switch_page(playground, query_params=st.query_params.to_dict())

    return [playground,
            st.Page("pages/concepts.py", title="Concepts", icon=":material/school:"),
            st.Page("pages/optimizers.py", title="Optimizer lab", icon=":material/insights:"),
            st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
            st.Page(to_playground, title="Playground", url_path="playground",
                    visibility="hidden")]


@contextlib.contextmanager
def routed():
    """app.py runs the chosen page inside this: the page knows the router is around it."""
    _here.routed = True
    try:
        yield
    finally:
        _here.routed = False


def ensure_routed() -> None:
    """The first statement of every page file after its imports (see the module doc)."""
    if getattr(_here, "routed", False):
        return
    st.navigation(pages())  # ends legacy mode for every session of this server
    st.rerun()
