"""The README's screenshot: the playground mid-training, taken with headless Chromium.

    python benchmarks/screenshot.py [--out docs/screenshot.png] [--preset spiral_one_hidden]

Starts the app on a free port, opens the preset's experiment (training.steps raised so the shot
is taken while the run is still going; the server's step cap slows it down so that the shot
catches it mid-way), presses Start, waits until `--at-step` steps are done
(the loss curve and the decision boundary have taken shape), and saves the viewport.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from load import ARGS, CHROMIUM, ROOT, cfg_query, start_server, status, stop_server  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshot.png"))
    ap.add_argument("--preset", default="spiral_one_hidden")
    ap.add_argument("--steps", type=int, default=5000, help="training.steps of the experiment")
    ap.add_argument("--at-step", type=int, default=600, help="take the shot after this step")
    ap.add_argument("--max-steps-per-s", type=float, default=150,
                    help="the server's per-run step cap (NETLAB_MAX_STEPS_PER_S), so the shot "
                         "catches the run mid-way; 0 for none")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1150)
    args = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with open(os.path.join(ROOT, "engine", "presets", f"{args.preset}.json")) as f:
        config = json.load(f)["config"]
    config.setdefault("training", {})["steps"] = args.steps
    proc, url = start_server({"STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal",
                              "NETLAB_MAX_STEPS_PER_S": f"{args.max_steps_per_s:g}"})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url + cfg_query(config))
            page.get_by_role("button", name="Start", exact=True).wait_for(timeout=120_000)
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Start", exact=True).click()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                s = status(page)
                if s and (s["step"] >= args.at_step or s["state"] not in ("running", "ready")):
                    break
                page.wait_for_timeout(200)
            page.wait_for_timeout(600)  # one more refresh: the charts match the status line
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            page.screenshot(path=args.out)
            print(json.dumps({"out": args.out, "status": status(page)}))
            browser.close()
    finally:
        stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
