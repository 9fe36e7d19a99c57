"""The last line of defence between an unexpected exception and the page.

Every input is validated before use (engine/core/inputs.py), so nothing here should ever fire. If
something does, the person sees one short sentence and a reference, the server log gets the
full trace under the same reference, and no file path or code line reaches the browser.
Streamlit's own control flow (st.rerun, st.stop, st.switch_page) raises BaseExceptions, which
pass through untouched.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import uuid

import streamlit as st

log = logging.getLogger("netlab")

MESSAGE = ("Something went wrong while drawing this part of the page (reference {ref}). Your "
           "settings are kept; reload the page, and if it happens again, report the reference.")


def _record(where: str) -> str:
    ref = uuid.uuid4().hex[:8]
    log.exception("unexpected error in %s (reference %s)", where, ref)
    return ref


def show_unexpected(where: str) -> None:
    """Call from an `except Exception` block: log the trace, show a short message."""
    st.error(MESSAGE.format(ref=_record(where)))


def guarded_page(fn):
    """Wrap a function that draws (a page body, a fragment): an exception becomes a message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the last resort: reported, never shown raw
            show_unexpected(fn.__qualname__)
    return wrapper


def guarded_callback(fn):
    """Wrap a widget callback: callbacks run before the script, so the message is kept in
    session state and shown by the page's flash area on this rerun."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the last resort: reported, never shown raw
            st.session_state["flash"] = ("error", MESSAGE.format(ref=_record(fn.__qualname__)))
    return wrapper


def exit_server() -> None:
    """Stop this Streamlit server as Ctrl+C would (tests replace it)."""
    os.kill(os.getpid(), signal.SIGTERM)


def stop_for_settings(problems: list[str]) -> None:
    """A NETLAB_* value the server cannot use (serve/settings.py): one line each in the log,
    the same on the page that asked, then the server stops (a second later, so the page gets the
    message) rather than run with a default nobody chose."""
    for line in problems:
        print(f"netlab: {line}; the server stops", file=sys.stderr, flush=True)
    st.error("This Netlab server cannot start: " + " ".join(problems))
    threading.Timer(1.0, exit_server).start()
    st.stop()
