"""Which browser is this? A random id kept in a first-party cookie.

A reload starts a new Streamlit session (DESIGN.md §3), so the session cannot remember who
started a run. The run id travels in the address bar, and anyone who copies the address has it,
so the id cannot be what grants control either. What stays with one browser across reloads and
does not travel with a copied link is a cookie: the first visit draws a random id, a tiny script
stores it (Streamlit can read cookies but not set them), and every later session of the same
browser reads it back from the websocket's request headers.

If the cookie cannot be stored (cookies blocked), the id still holds for the session: the
person controls their runs until they reload, then watches them and can start a copy.
"""
from __future__ import annotations

import re
import uuid

import streamlit as st

COOKIE = "netlab_browser"
_VALID = re.compile(r"[0-9a-f]{32}")
_ONE_YEAR_S = 365 * 24 * 3600


def browser_id() -> str:
    """This browser's id: from its cookie, or drawn now (and stored in the cookie)."""
    if "browser_id" not in st.session_state:
        try:
            cookie = st.context.cookies.get(COOKIE)
        except Exception:  # noqa: BLE001 - no request context (AppTest, bare script run)
            cookie = None
        valid = isinstance(cookie, str) and _VALID.fullmatch(cookie)
        st.session_state["browser_id"] = cookie if valid else uuid.uuid4().hex
        st.session_state["browser_cookie_known"] = cookie == st.session_state["browser_id"]
    return st.session_state["browser_id"]


def remember_browser() -> None:
    """Store the id in the browser's cookie unless the browser sent it already. The value is
    32 hex characters we drew ourselves, so it is safe to write into the script."""
    bid = browser_id()
    if st.session_state.get("browser_cookie_known"):
        return
    # Secure where the page is served over HTTPS, so the id never travels in clear text. (It
    # cannot be HttpOnly: only a server's Set-Cookie can say that, and Streamlit sets none.)
    st.html(f"<script>document.cookie = '{COOKIE}={bid}; path=/; max-age={_ONE_YEAR_S}; "
            "SameSite=Strict' + (location.protocol === 'https:' ? '; Secure' : '');</script>",
            unsafe_allow_javascript=True)
