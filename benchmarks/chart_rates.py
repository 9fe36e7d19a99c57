"""Frames per second of each live chart in a real browser (Playwright + Debian Chromium).

    python benchmarks/chart_rates.py [--seconds 6] [--preset spiral_one_hidden]

Starts the app, opens the preset with many steps, presses Start, and for each view (Overview,
Network, Gradients, Activations) samples every chart's content every 50 ms: a chart whose drawn
data changed between two samples counts a frame. Also times the first paint (the Start button
and the first chart after page load). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from load import ARGS, CHROMIUM, cfg_query, start_server, stop_server  # noqa: E402

# A fingerprint of what each chart shows: its title, its traces' point counts and last values (an
# image trace's source), its neuron images' sources; two samples differing means new data.
FINGERPRINTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(el => {
  const title = (el.layout && el.layout.title && el.layout.title.text) || '';
  const data = (el.data || []).map(t => {
    if (t.source) return 'image:' + t.source.length + t.source.slice(-80);  // the boundary's PNG
    const v = t.x || t.z || [];
    return (v.length || 0) + ':' + JSON.stringify(v.length ? v[v.length - 1] : null).slice(0, 80);
  }).join('|');
  const images = ((el.layout && el.layout.images) || []).map(i => (i.source || '').slice(-40)).join('');
  return [title, data + '#' + images.length + images.slice(0, 400)];
})"""


def view_button(page, view: str):
    """The live panel's view switch (a segmented control: buttons whose text is the view)."""
    return page.locator("button").filter(has_text=re.compile(f"^{view}$")).first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="sampling time per view")
    ap.add_argument("--preset", default="spiral_one_hidden")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from engine.presets import load_preset

    config = load_preset(args.preset)["config"]
    config.setdefault("training", {})["steps"] = 100_000
    proc, url = start_server()
    out: dict = {"preset": args.preset, "first_paint_s": [], "views": {}}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(3):  # the first visit after a start also warms the server
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                t0 = time.perf_counter()
                page.goto(url)
                page.get_by_role("button", name="Start").first.wait_for(timeout=60_000)
                start_s = time.perf_counter() - t0
                page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0",
                                       timeout=60_000)
                out["first_paint_s"].append({"start_button": round(start_s, 2),
                                             "first_chart": round(time.perf_counter() - t0, 2)})
                page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url.rstrip("/") + "/" + cfg_query(config))
            page.get_by_role("button", name="Start").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Start").first.click()
            page.wait_for_timeout(1500)
            for view in ("Overview", "Network", "Gradients", "Activations"):
                view_button(page, view).click()
                page.wait_for_timeout(1500)
                last, frames, t_end = None, {}, time.monotonic() + args.seconds
                while time.monotonic() < t_end:
                    now = dict(page.evaluate(FINGERPRINTS_JS))
                    if last is not None:
                        for title, sig in now.items():
                            if last.get(title) != sig:
                                frames[title] = frames.get(title, 0) + 1
                    last = now
                    page.wait_for_timeout(50)
                out["views"][view] = {title or "(untitled)": round(frames.get(title, 0) / args.seconds, 2)
                                      for title in (last or {})}
            browser.close()
    finally:
        stop_server(proc)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
