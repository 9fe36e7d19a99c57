"""What a newcomer waits for on a freshly started server: the first page, the first Start.

    python benchmarks/first_start.py [--workers 2] [--presets cnn_digits,reber_packed,...]

Starts `streamlit run app.py` on a free port with a fresh run store, opens it in headless
Chromium at 1280x800 and prints one JSON object:

    server_up_s          the command started -> its health check answers
    page_drawn_s         health answers -> the first page shows its Start button
    first_start_s        Start pressed -> the status line reads "running · step N" (N > 0)
    second_start_s       the same after Pause and Reset, on the now warm server
    preset_open_s        per preset: its ?preset= link opened -> loaded and settled

Issue 31, item 11: the first Start waited ~5 s for the worker processes (started when the
Playground page was first imported, side by side with each other and with the first page).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"running · step [1-9]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_running(page, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while not RUNNING.search(page.inner_text("body")):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the run never showed 'running'")
        time.sleep(0.05)
    return round(time.monotonic() - t0, 2)


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="2")
    ap.add_argument("--presets", default="cnn_digits,cnn_vs_mlp_shapes,reber_packed,"
                    "char_model_writes,batchnorm_deep_sigmoid")
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "NETLAB_WORKERS": args.workers, "PYTHONPATH": str(ROOT),
           "NETLAB_HOME": tempfile.mkdtemp(prefix="netlab_first_start_"),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    t0 = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                               "--server.port", str(port), "--server.headless", "true",
                               "--server.address", "127.0.0.1"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url + "_stcore/health", timeout=1)
                break
            except OSError:
                if time.monotonic() - t0 > 90:
                    raise
                time.sleep(0.1)
        up = time.monotonic()
        out = {"server_up_s": round(up - t0, 2)}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get(
                "NETLAB_CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            start = page.get_by_role("button", name="Start", exact=True)
            start.wait_for(timeout=120_000)
            out["page_drawn_s"] = round(time.monotonic() - up, 2)
            start.click()
            out["first_start_s"] = wait_running(page)
            page.get_by_role("button", name="Pause", exact=True).click()
            time.sleep(1.5)
            page.get_by_role("button", name="Reset", exact=True).click()
            time.sleep(2.0)
            start.click()
            out["second_start_s"] = wait_running(page)
            page.get_by_role("button", name="Pause", exact=True).click()
            out["preset_open_s"] = {}
            for name in filter(None, args.presets.split(",")):
                t = time.monotonic()
                page.goto(f"{url}?preset={name}")
                page.get_by_text("Loaded the preset").first.wait_for(timeout=120_000)
                while page.locator('[data-testid="stStatusWidget"]').count():
                    time.sleep(0.05)
                out["preset_open_s"][name] = round(time.monotonic() - t, 2)
            browser.close()
        out["machine"] = {"cores": os.cpu_count(), "load": round(os.getloadavg()[0], 2)}
        print(json.dumps(out, indent=1))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
