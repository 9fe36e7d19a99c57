"""Charts that update in place, so a zoomed chart keeps its zoom while the run trains.

st.plotly_chart names each chart by a hash of its figure: a figure with one more point is a new
element, and the browser throws the old chart away with the user's zoom (measured in Chromium:
every live refresh drew a new chart `<div>`, whatever `uirevision` said; a stable name does not
help either, the chart then keeps drawing its first figure). This component keeps one plotly
`<div>` per key and hands each new figure to `Plotly.react`, which redraws in place and, with the
fixed `uirevision` every figure of ui/charts.py carries, keeps what the user zoomed or panned.

plotly.js is the copy Streamlit bundles for its own charts (a content-hashed file the browser
caches for a year, shared with any st.plotly_chart); if a Streamlit release renames it, the
plotly package's copy, served by Streamlit's component file route (gzipped, but fetched again on
every visit). Nothing comes from the internet. The look follows Streamlit's own chart theme
(THEME), with titles and legends in the page's text colour (_CSS).
"""
from __future__ import annotations

import glob
import os

import plotly
import plotly.io as pio
import streamlit as st
import streamlit.components.v1 as components_v1

DEFAULT_HEIGHT = 450  # what st.plotly_chart gives a figure with no height
NAME = "netlab_plot"


def _streamlit_plotly() -> str | None:
    """The address of Streamlit's own plotly.js bundle (an ES module that sets window.Plotly when
    imported), or None if this Streamlit has no single such file."""
    found = glob.glob(os.path.join(os.path.dirname(st.__file__), "static", "static", "js",
                                   "PlotlyChart.*.js"))
    return f"static/js/{os.path.basename(found[0])}" if len(found) == 1 else None


# The fallback: the plotly package's folder of browser files (plotly.min.js among them), served
# read-only at component/<name>/...; Streamlit refuses paths that leave the folder.
_PLOTLY_FILES = components_v1.declare_component(
    "plotly_js", path=os.path.join(os.path.dirname(plotly.__file__), "package_data"))
PLOTLY_SOURCES = {"module": _streamlit_plotly(),
                  "script": f"component/{_PLOTLY_FILES.name}/plotly.min.js"}

# Streamlit's light chart theme, in the parts our figures use (read from its plotly charts in
# Chromium). Backgrounds are transparent and _CSS colours titles and legends like the page's
# text, so a dark page gets readable charts too.
_GREY = "#808495"
_GRID = "rgba(128, 132, 149, 0.2)"
_FONT = '"Source Sans", sans-serif'
THEME = {"layout": {
    "colorway": ["#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700",
                 "#ffd16a", "#6d3fc0", "#d5dae5"],
    "font": {"color": _GREY, "family": _FONT, "size": 12},
    "title": {"font": {"family": _FONT, "size": 16}, "pad": {"l": 4}, "xanchor": "left", "x": 0},
    "legend": {"bordercolor": "transparent", "font": {"size": 12}},
    "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
    "xaxis": {"gridcolor": _GRID, "zerolinecolor": _GRID, "tickcolor": _GRID, "showgrid": False,
              "zeroline": False, "automargin": True, "tickfont": {"color": _GREY, "size": 12},
              "title": {"font": {"color": _GREY, "size": 14}}},
    "yaxis": {"gridcolor": _GRID, "zerolinecolor": _GRID, "tickcolor": _GRID, "automargin": True,
              "tickfont": {"color": _GREY, "size": 12},
              "title": {"font": {"color": _GREY, "size": 14}}},
    "hoverlabel": {"bgcolor": "#FFFFFF", "bordercolor": "#DCD8D4",
                   "font": {"color": "#31333F", "family": _FONT, "size": 12}},
}}

_JS = """
const address = (path) => new URL(path, document.baseURI).href;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = address(src);
    s.onload = resolve;
    s.onerror = reject;
    document.head.appendChild(s);
  });
}

// One promise per page: the first chart loads plotly.js, the others wait for it.
function plotly(sources) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__netlabPlotly) {
    const bundled = sources.module ? import(address(sources.module)) : Promise.reject();
    window.__netlabPlotly = bundled.catch(() => null)
      .then(() => window.Plotly || loadScript(sources.script))
      .then(() => window.Plotly || Promise.reject(new Error("plotly.js")))
      .catch((e) => { window.__netlabPlotly = null; throw e; });
  }
  return window.__netlabPlotly;
}

export default function ({ data, parentElement }) {
  let el = parentElement.querySelector("div.netlab-plot");
  if (!el) {
    el = document.createElement("div");
    el.className = "netlab-plot";
    el.style.width = "100%";
    parentElement.appendChild(el);
    // resize with the column (plotly's own `responsive` leaves a window listener per chart);
    // a chart hidden meanwhile (a closed expander, another view) has nothing to resize
    new ResizeObserver(() => {
      if (el.data && window.Plotly && el.isConnected && el.offsetParent && el.clientWidth) {
        window.Plotly.Plots.resize(el).catch(() => {});
      }
    }).observe(el);
  }
  el.style.height = data.height + "px";
  if (el.netlabFigure === data.figure) return;  // the same figure again: nothing to redraw
  el.netlabFigure = data.figure;
  plotly(data.sources).then((P) => {
    if (el.netlabFigure !== data.figure) return;  // a newer figure came meanwhile: it draws
    if (!el.data) el.textContent = "";  // a failed load's message, if a retry got this far
    const fig = JSON.parse(data.figure);
    return P.react(el, fig.data, fig.layout, data.config);
  }, () => { el.textContent = "The chart library did not load: reload the page."; })
    .catch((e) => console.error("netlab chart", e));
}
"""

# Titles and legends take the page's text colour (plotly writes its colour inline, hence
# !important): dark on a light page, light on a dark one, following a theme switch at once.
_CSS = """
.netlab-plot .gtitle, .netlab-plot .legendtext, .netlab-plot .legendtitletext {
  fill: currentColor !important;
}
"""

_component = st.components.v2.component(NAME, js=_JS, css=_CSS, isolate_styles=False)


def live_plot(fig, key: str, *, mode_bar: bool = True) -> None:
    """Draw `fig` (a plotly Figure or a plain {"data", "layout"} dict) in the element named
    `key`; later calls with the same key redraw it in place. mode_bar: plotly's zoom/save
    buttons on hover, as st.plotly_chart shows them."""
    d = fig.to_plotly_json() if hasattr(fig, "to_plotly_json") else fig
    layout = dict(d.get("layout") or {}, template=THEME)
    _component(key=f"plot.{key}", data={  # prefixed: the component keeps state by key
        "figure": pio.to_json({"data": d.get("data") or [], "layout": layout}, validate=False),
        "sources": PLOTLY_SOURCES,
        "height": layout.get("height") or DEFAULT_HEIGHT,
        "config": {"displayModeBar": "hover" if mode_bar else False, "displaylogo": False},
    })
