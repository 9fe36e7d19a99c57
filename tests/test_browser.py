"""The playground in a real browser: Playwright driving Debian's Chromium (DESIGN.md §5).

One Streamlit server per module (a subprocess on a free port, NETLAB_GRACE_S=6) and one browser;
each test opens its own browser context, so closing it closes the page for real (the server
sees the websocket go away). What AppTest cannot show is checked here: the live fragment really
refreshes the loss chart, a reload reattaches to the same run, a one-click fix changes the
verdict, and a closed page stops its training thread (the server's CPU time goes flat).

No timing targets here (benchmarks/load.py measures latency and throughput); the waits below
only bound how long a broken page may take to show that it is broken.

    pytest -m browser tests/test_browser.py

Without /usr/bin/chromium (or the playwright package) these tests skip, except in CI (CI=true),
where they fail: install it with `apt-get install chromium` (never `playwright install`).
"""
from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # minutes: the full suite runs them

CHROMIUM = os.environ.get("NETLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GRACE_S = 6.0          # the run registry's grace period for this module's server (a reload on a
                       # busy CI machine must come back within it)
LOAD_TIMEOUT_MS = 60_000  # the first page load imports torch and the engine on a busy machine
STATUS = re.compile(r"\b(ready|running|paused|done|error) · step ([\d,]+)(?: / ([\d,]+))?")
VERDICT = re.compile(r"Health: (\w+)")


def long_run_query() -> str:
    """?cfg= for the default experiment with many steps: one core trains the default 1,500 steps
    in about a second, and the reload and close tests need a run that is still going."""
    config = json.loads((ROOT / "engine" / "presets" / "spiral_one_hidden.json").read_text())
    config = config["config"]
    config.setdefault("training", {})["steps"] = 100_000
    raw = json.dumps(config, separators=(",", ":")).encode()  # the URL format of ui/state.py
    return "?cfg=" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def _missing(what: str):
    message = (f"{what}; the browser tests need Debian's Chromium: apt-get install chromium "
               "(and pip install playwright; never `playwright install`)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


# ----------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: str):
        self.proc, self.url, self.log_path = proc, url, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]


@pytest.fixture(scope="module")
def server():
    with serve() as srv:
        yield srv


@contextlib.contextmanager
def serve(**env_vars):
    """`streamlit run app.py` on a free port, once it answers; stopped on exit. env_vars: more
    environment for the server (NETLAB_HOME: its run store). Its runs train in two worker
    processes (serve/workers.py), as a server on two cores does by default."""
    port = _free_port()
    log_path = os.path.join(tempfile.mkdtemp(prefix="netlab_browser_"), "server.log")
    env = {**os.environ, "NETLAB_GRACE_S": str(GRACE_S), "PYTHONPATH": str(ROOT),
           "NETLAB_WORKERS": "2",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env_vars}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(proc, f"http://127.0.0.1:{port}/", log_path)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{srv.log()}")
            try:
                with urllib.request.urlopen(srv.url + "_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within 90 s:\n{srv.log()}")
            time.sleep(0.5)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    ctx.set_default_timeout(20_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context):
    pg = context.new_page()
    pg.errors = []  # uncaught JavaScript exceptions on the page
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    return pg


# ----------------------------------------------------------------------------- helpers


def open_app(page, server, query: str = ""):
    page.goto(server.url + query)
    page.get_by_role("button", name="Step", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)


def button(page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def press(page, name: str) -> None:
    """Click the button; mid-rerun Streamlit may briefly show the old button row beside the
    new one, so wait until there is one."""
    wait_until(lambda: button(page, name).count() == 1, 10, what=f"one {name!r} button")
    button(page, name).click()


def wait_until(fn, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll fn() until it returns something truthy; return it, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def body_text(page) -> str:
    try:
        return page.inner_text("body", timeout=2000)
    except Exception:  # noqa: BLE001 - mid-navigation: no body yet
        return ""


def status(page):
    """(state, step, total) from the status line, or None while it is not drawn; total is None
    past the planned steps of a run that trains until paused."""
    m = STATUS.search(body_text(page))
    if not m:
        return None
    step, total = (int(g.replace(",", "")) if g else None for g in m.group(2, 3))
    return m.group(1), step, total


def verdicts(page) -> list[str]:
    return VERDICT.findall(body_text(page))


# Streamlit keeps the previous element around while it draws the next one, so two "Loss" charts
# can exist for a moment: the newest data is the longest trace.
LOSS_POINTS_JS = """() => {
  let n = -1;
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const t = el.layout && el.layout.title;
    const text = ((t && (t.text !== undefined ? t.text : t)) || '').replace(/<[^>]*>/g, '').trim();
    if (text === 'Loss' && el.data && el.data[0] && el.data[0].x) n = Math.max(n, el.data[0].x.length);
  }
  return n;
}"""


LOSS_LAST_STEP_JS = LOSS_POINTS_JS.replace("n = Math.max(n, el.data[0].x.length)",
                                           "n = Math.max(n, el.data[0].x[el.data[0].x.length - 1])")


def loss_last_step(page) -> int:
    """The step of the Loss chart's newest point (the count stops growing once a long run's
    series is thinned to charts.MAX_POINTS; the newest step keeps moving)."""
    try:
        return page.evaluate(LOSS_LAST_STEP_JS)
    except Exception:  # noqa: BLE001 - mid-navigation
        return -1


def loss_points(page) -> int:
    """Points of the train-loss trace in the Loss chart; -1 while there is no such chart."""
    try:
        return page.evaluate(LOSS_POINTS_JS)
    except Exception:  # noqa: BLE001 - mid-navigation
        return -1


def run_id(page) -> str | None:
    """run= of the address bar as the page sees it (location, not Playwright's cached URL)."""
    try:
        query = page.evaluate("location.search")
    except Exception:  # noqa: BLE001 - mid-navigation
        query = urlparse(page.url).query
    return parse_qs(query.lstrip("?")).get("run", [None])[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the server's training workers)."""
    found = [pid]
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(task) as f:
            for child in f.read().split():
                found += process_tree(int(child))
    return found


def cpu_share(pid: int, seconds: float) -> float:
    """Cores the process and its workers used on average over the next `seconds` (1.0 = one
    core busy)."""
    pids = process_tree(pid)

    def used() -> float:
        return sum(cpu_seconds(p) for p in pids if os.path.exists(f"/proc/{p}/stat"))
    c0, t0 = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - c0) / (time.monotonic() - t0)


def assert_no_exception(page):
    n = page.locator('[data-testid="stException"]').count()
    assert n == 0, f"Streamlit exception box on the page:\n{body_text(page)[:3000]}"


def pause(page):
    """Stop training so the next test does not share the CPU with this one's run."""
    try:
        if button(page, "Pause").is_enabled(timeout=2000):
            button(page, "Pause").click(timeout=2000)
    except Exception:  # noqa: BLE001 - best effort; the reaper pauses it after the grace period
        pass


# ----------------------------------------------------------------------------- tests


def test_default_page_has_no_errors(page, server):
    open_app(page, server)
    page.wait_for_timeout(1500)  # let the first run settle (URL sync, fragment's first draw)
    assert_no_exception(page)
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, [e.inner_text() for e in errors.all()]
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0, body_text(page)[:2000]
    assert not page.errors, page.errors
    for name in ("Start", "Pause", "Step", "Reset"):
        assert button(page, name).count() == 1, name
    assert button(page, "Start").is_enabled()
    assert not button(page, "Pause").is_enabled()
    assert "cfg" in parse_qs(urlparse(page.url).query)
    assert run_id(page) is None  # no run until Start or Step


NAV_LABELS_JS = """() => [...document.querySelectorAll('[data-testid="stSidebarNavLink"]')]
  .map(e => e.innerText.trim().split('\\n').pop().trim())"""


def test_every_page_url_is_served_by_the_router(page):
    """Bookmarks, shared links and reloads open a page's URL directly. A folder named pages/
    puts a fresh server in Streamlit's legacy multipage mode, where such a visit ran the page
    file without app.py (ui/page.py): so a server of its own, fresh, whose first visit is
    /concepts. Every URL must show its own page, Netlab's page config and one menu."""
    from engine import ExperimentSpec
    from engine.presets import load_preset
    from ui import state as S
    spec = ExperimentSpec.from_dict(load_preset("vanishing_sigmoid")["config"])
    cfg = S.encode_link(spec)
    visits = [  # (path, what the page must show, the path it ends on)
        ("concepts", "Concepts", "/concepts"),
        ("", "Start", "/"),
        ("playground", "Start", "/"),  # not a page of its own: sent to / (no "page not found")
        (f"?cfg={cfg}", "Start", "/"),
        (f"playground?cfg={cfg}", "Start", "/"),
        ("concepts", "Concepts", "/concepts"),
        ("optimizers", "Optimizer lab", "/optimizers"),
        ("runs", "Runs", "/runs"),
    ]
    with serve() as srv:
        for path, content, lands_on in visits:
            page.goto(srv.url + path)
            if content == "Start":
                button(page, "Start").wait_for(timeout=LOAD_TIMEOUT_MS)
            else:
                page.get_by_role("heading", name=content, exact=True).wait_for(
                    timeout=LOAD_TIMEOUT_MS)
            page.wait_for_timeout(800)  # the URL sync and the sidebar's last draw
            where = f"/{path}: {body_text(page)[:1500]}"
            assert page.title() == "Netlab", where
            assert page.locator('[data-testid="stSidebarNav"]').count() == 1, where
            assert page.evaluate(NAV_LABELS_JS) == ["Playground", "Concepts", "Optimizer lab",
                                                    "Runs"], where
            icon = page.locator('link[rel~="icon"]').first.get_attribute("href") or ""
            assert not icon.endswith("/favicon.png"), f"Streamlit's own icon: {where}"
            # drawn in the page: an icon fetched from a font server fails offline
            assert icon.startswith("data:"), f"the page icon is fetched from {icon[:80]}"
            assert page.get_by_text("Deploy", exact=True).count() == 0, f"Deploy shown: {where}"
            width = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()["width"]
            assert width > 1000, f"not the wide layout ({width:.0f} px): {where}"
            assert page.evaluate("location.pathname") == lands_on, where
            assert "Page not found" not in body_text(page), where
            assert_no_exception(page)
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0, where
            if "cfg=" in path:  # the bookmark's experiment, not the default one
                shown = parse_qs(page.evaluate("location.search").lstrip("?"))["cfg"][0]
                assert S.decode_link(shown) == spec.canonical(), where
        assert "Traceback" not in srv.log(), srv.log()
    assert not page.errors, page.errors


def test_start_draws_live_loss_chart(page, server):
    # a long run: the default 1,500 steps can end before the chart is first read, and then it
    # has nothing left to grow by
    open_app(page, server, long_run_query())
    assert loss_points(page) <= 0
    press(page, "Start")
    first = wait_until(lambda: loss_points(page) > 0 and loss_points(page), 10,
                       what="the loss chart's first points")
    wait_until(lambda: loss_points(page) >= first + 3, 10,
               what=f"the loss chart to grow past {first} points")
    state = wait_until(lambda: status(page), 5, what="the status line")
    assert state[0] in ("running", "done"), state
    assert state[1] > 0, state
    assert run_id(page)
    assert_no_exception(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert not page.errors, page.errors
    if state[0] == "running":
        pause(page)
        wait_until(lambda: (status(page) or ("",))[0] in ("paused", "done"), 10,
                   what="the run to pause")


def test_the_default_run_trains_until_paused(page, server):
    """Issue 31, item 1: like TensorFlow Playground, the first run goes on past its planned
    1,500 steps until Pause, and says so."""
    open_app(page, server)
    press(page, "Start")
    past = wait_until(lambda: (lambda s: s and s[0] == "running" and s[2] is None and s)(
        status(page)), 60, what="the run to pass its planned steps")
    assert past[1] > 1500 and "past the planned 1,500: on until Pause" in body_text(page)
    pause(page)
    wait_until(lambda: (status(page) or ("",))[0] == "paused", 10, what="the run to pause")
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_a_diverged_run_draws_its_blow_up(page, server):
    """Issue 31, item 7: lr_too_high drew one or two dots. Now every step up to the divergence
    is on a log axis, and the step it ended is marked."""
    open_app(page, server, "?preset=lr_too_high")
    press(page, "Start")
    wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 60,
               what="the run to diverge")
    assert "stopped: diverged" in body_text(page)
    chart = wait_until(lambda: page.evaluate("""() => {
      for (const el of document.querySelectorAll('.js-plotly-plot')) {
        const t = el.layout && el.layout.title;
        const text = ((t && (t.text !== undefined ? t.text : t)) || '').replace(/<[^>]*>/g, '');
        if (text.trim() === 'Loss' && el.data && el.data[0] && el.data[0].x.length > 2)
          return {points: el.data[0].y.filter(v => v !== null).length,
                  axis: el.layout.yaxis.type,
                  marks: (el.layout.annotations || []).map(a => a.text)};
      }
      return null;
    }"""), 20, what="the loss chart of the diverged run")
    assert chart["points"] >= 5 and chart["axis"] == "log", chart
    assert "diverged: loss not finite" in chart["marks"], chart
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_preset_vanishing_fix_changes_verdict(page, server):
    open_app(page, server, "?preset=vanishing_sigmoid")
    press(page, "Start")  # a finding needs three logged rows: steps 1, 10 and 20
    wait_until(lambda: "vanishing" in verdicts(page), 20, what="Health: vanishing")
    fix = page.get_by_role("button", name="Switch to ReLU + He init")
    fix.click()
    # the fix restarts the run with the new settings: the verdict is recomputed from its rows
    wait_until(lambda: (lambda v, s: v and "vanishing" not in v and s and s[1] > 1)(
        verdicts(page), status(page)), 30, what="a verdict other than vanishing after the fix")
    assert_no_exception(page)
    assert not page.errors, page.errors
    pause(page)


def start_long_run(page, server, who: str = "the run") -> tuple:
    """Open a long run's experiment, press Start and wait until it trains; its status."""
    open_app(page, server, long_run_query())
    press(page, "Start")
    return wait_until(lambda: (lambda s: s and s[0] == "running" and s[1] > 0 and s)(status(page)),
                      15, what=f"{who} to train")


def test_reload_reattaches_to_the_same_run(page, server):
    before = start_long_run(page, server)
    rid = wait_until(lambda: run_id(page), 5, what="run= in the URL")
    page.reload()
    page.get_by_role("button", name="Step", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)
    assert run_id(page) == rid, "the reload lost the run id"
    after = wait_until(lambda: (lambda s: s and s[1] > before[1] and s)(status(page)), 15,
                       what=f"the step count to pass {before[1]} after the reload")
    assert after[0] == "running", after
    # the browser's cookie brought its control back: a reload is the owner, not a watcher
    assert button(page, "Pause").is_enabled(), "the reload lost control of the run"
    assert "You are watching" not in body_text(page)
    points = wait_until(lambda: loss_points(page) > 0 and loss_points(page), 10,
                        what="the loss chart after the reload")
    # still training and drawing: the step count and the chart keep growing
    wait_until(lambda: (lambda s: s and s[1] > after[1])(status(page)), 10,
               what=f"the step count to pass {after[1]}")
    last = loss_last_step(page)
    wait_until(lambda: loss_last_step(page) > last, 10,
               what=f"the chart's newest point to pass step {last} ({points} points drawn)")
    assert run_id(page) == rid
    assert_no_exception(page)
    pause(page)


def test_closing_the_page_stops_training(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        page = ctx.new_page()
        start_long_run(page, server)
        busy = cpu_share(server.pid, 2.0)
        # the training worker keeps a core busy (less on a loaded machine, never near zero)
        assert busy > 0.2, f"server used only {busy:.0%} of a core while training"
        # read until drawn: mid-refresh the status line can be missing for a moment
        wait_until(lambda: (status(page) or ("",))[0] == "running", 5, what="'running'")
    finally:
        ctx.close()
    time.sleep(GRACE_S + 2)
    # the reaper pauses the unseen run after the grace period; allow a slow machine three tries
    shares = []
    for _ in range(3):
        shares.append(cpu_share(server.pid, 3.0))
        if shares[-1] < 0.05:
            break
    assert shares[-1] < 0.05, (f"server still busy after the page closed: {shares} cores "
                               f"(busy while training: {busy:.2f})\n{server.log()}")


def test_a_second_browser_watches_a_run_but_cannot_control_it(browser, server):
    """Copying the address bar hands over the view, never the controls (issue: a third browser
    that knew the run id pressed Reset and the owner's history was gone)."""
    owner_ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    guest_ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        owner = owner_ctx.new_page()
        start_long_run(owner, server, "the owner's run")
        rid = wait_until(lambda: run_id(owner), 5, what="run= in the owner's URL")
        guest = guest_ctx.new_page()
        guest.goto(owner.url)  # the owner's whole address bar, run id included
        guest.get_by_role("button", name="Step", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)
        wait_until(lambda: "You are watching" in body_text(guest), 10, what="the watching notice")
        seen = wait_until(lambda: (lambda s: s and s[0] == "running" and s)(status(guest)), 10,
                          what="the guest to see the run training")
        wait_until(lambda: (lambda s: s and s[1] > seen[1])(status(guest)), 10,
                   what="the guest's view to follow the run")
        assert not button(guest, "Pause").is_enabled()
        wait_until(lambda: loss_points(guest) > 0, 15, what="the guest's loss chart")
        before = status(owner)[1]
        press(guest, "Reset")
        wait_until(lambda: run_id(guest) not in (None, rid), 20,
                   what="the guest's own run id after Reset")
        wait_until(lambda: "You are watching" not in body_text(guest), 10,
                   what="the watching notice to go with the guest's own run")
        assert run_id(owner) == rid
        after = wait_until(lambda: (lambda s: s and s[0] == "running" and s[1] > before and s)(
            status(owner)), 10, what="the owner's run to go on untouched")
        assert after[1] > before, (before, after)
        assert button(owner, "Pause").is_enabled()
        assert_no_exception(guest)
        assert_no_exception(owner)
        pause(owner)
    finally:
        owner_ctx.close()
        guest_ctx.close()


# ----------------------------------------------------------------------------- uploads
# Real uploads through the sidebar's <input type=file>: the server's maxUploadSize (5 MB,
# .streamlit/config.toml), the page's own check (serve/uploads.py) and the CSV reader's bounds
# (engine/data/datasets.py) as a person meets them.

UPLOAD_LIMIT = 5 * 1024 * 1024
UPLOAD_INPUT = '[data-testid="stSidebar"] [data-testid="stFileUploaderDropzoneInput"]'
FILE_CHIP_ERROR = '[data-testid="stSidebar"] [data-testid="stFileChip"][aria-invalid="true"]'
PREVIEW = '[data-testid="stSidebar"] [data-testid="stDataFrame"]'
PLOT_TITLES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => {
  const t = el.layout && el.layout.title;
  return ((t && (t.text !== undefined ? t.text : t)) || '').replace(/<[^>]*>/g, '').trim();
})"""


def semicolon_csv(rows: int = 40) -> bytes:
    """a;b;label with integer labels 0/1: a small table the page accepts."""
    lines = ["a;b;label"] + [f"{i % 7};{(i * 3) % 5};{i % 2}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def big_csv(size: int = 6 * 1024 * 1024) -> bytes:
    """A well-formed numeric CSV of just over `size` bytes."""
    line = b"1234567,7654321,1\n"
    return b"a,b,label\n" + line * (size // len(line) + 1)


def wide_csv(columns: int = 160_000, rows: int = 10) -> bytes:
    """160,000 columns x 10 rows (~4.4 MB): under the size limit, far over the column limit."""
    header = ",".join(f"c{i}" for i in range(columns))
    row = ",".join("1" for _ in range(columns))
    return ("\n".join([header] + [row] * rows) + "\n").encode()


def choose(page, label: str, option: str):
    """Pick `option` in the selectbox labelled `label`, and wait until the box shows it."""
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until(lambda: box.input_value() == option, 10, what=f"{label} to show {option}")


def step_once(page, timeout: float = 30):
    """Press Step and wait for step 1 in the status line; on failure, show the page's text."""
    press(page, "Step")
    deadline = time.monotonic() + timeout
    while not (lambda s: s and s[1] == 1)(status(page)):
        if time.monotonic() > deadline:
            pytest.fail(f"no step 1 within {timeout:.0f} s after Step:\n{body_text(page)[:3000]}")
        time.sleep(0.2)


def open_csv_uploader(page, server):
    open_app(page, server)
    choose(page, "Dataset", "csv")
    page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=20_000)


def upload(page, name: str, data: bytes):
    page.locator(UPLOAD_INPUT).set_input_files({"name": name, "mimeType": "text/csv", "buffer": data})


def sidebar_text(page) -> str:
    try:
        return page.inner_text('[data-testid="stSidebar"]', timeout=2000)
    except Exception:  # noqa: BLE001 - mid-rerun
        return ""


def error_texts(page) -> list[str]:
    return [e.inner_text() for e in page.locator('[data-testid="stAlertContentError"]').all()]


def plot_titles(page) -> list[str]:
    try:
        return page.evaluate(PLOT_TITLES_JS)
    except Exception:  # noqa: BLE001 - mid-navigation
        return []


def stored_uploads(server) -> list[tuple[str, int]]:
    """(path, size) of every file in this server's upload store (the /tmp/netlab_uploads_*
    folder whose owner.pid is the server's pid)."""
    roots = []
    for root in glob.glob(os.path.join(tempfile.gettempdir(), "netlab_uploads_*")):
        try:
            with open(os.path.join(root, "owner.pid")) as f:
                if f.read().strip() == str(server.pid):
                    roots.append(root)
        except OSError:
            continue
    assert len(roots) == 1, f"expected one upload store owned by pid {server.pid}: {roots}"
    out = []
    for folder, _, files in os.walk(roots[0]):
        for name in files:
            path = os.path.join(folder, name)
            out.append((path, os.lstat(path).st_size))
    return out


def assert_nothing_over_the_limit_stored(server):
    big = [(p, s) for p, s in stored_uploads(server) if s > UPLOAD_LIMIT]
    assert not big, f"files over 5 MB in the upload store: {big}"


def assert_no_traceback(page):
    text = body_text(page)
    for marker in ("Traceback", 'File "/', "site-packages", str(ROOT), tempfile.gettempdir() + "/"):
        assert marker not in text, f"{marker!r} on the page:\n{text[:3000]}"


def test_upload_semicolon_csv_previews_and_trains(page, server):
    open_csv_uploader(page, server)
    data = semicolon_csv()
    upload(page, "tiny.csv", data)
    page.locator(PREVIEW).wait_for(timeout=20_000)  # the preview table in the sidebar
    page.get_by_role("combobox", name="Target column").wait_for(timeout=10_000)
    assert page.get_by_role("combobox", name="Target column").input_value() == "label"
    wait_until(lambda: "Upload a CSV file in the sidebar" not in body_text(page), 10,
               what="the main area to stop asking for a file")
    # stored once, privately: in the folder of the browser that the cookie names
    cookie = wait_until(lambda: next((c["value"] for c in page.context.cookies()
                                      if c["name"] == "netlab_browser"), None), 10,
                        what="the netlab_browser cookie")
    folder = hashlib.sha256(cookie.encode()).hexdigest()[:20]
    stored = [(p, s) for p, s in stored_uploads(server) if p.endswith(".csv")]
    assert [s for p, s in stored if os.path.basename(os.path.dirname(p)) == folder] == [len(data)], \
        stored
    step_once(page)
    page.wait_for_timeout(500)  # let the step's rerun settle before looking for errors
    assert error_texts(page) == []
    assert_no_exception(page)
    assert_no_traceback(page)
    assert not page.errors, page.errors
    pause(page)


def test_upload_over_5_mb_is_refused_and_the_page_goes_on(page, server):
    open_csv_uploader(page, server)
    upload(page, "big.csv", big_csv())
    chip = page.locator(FILE_CHIP_ERROR)
    chip.wait_for(timeout=30_000)  # the uploader marks the file as failed
    message = chip.text_content() or ""
    assert re.search(r"5(\.0)? ?MB|413", message), message
    assert page.locator(PREVIEW).count() == 0
    assert "Upload a CSV file (up to 5 MB) to train on your own table" in sidebar_text(page)
    assert_no_exception(page)
    assert_no_traceback(page)
    assert_nothing_over_the_limit_stored(server)
    # the page still works: back to a built-in dataset, one step trains
    choose(page, "Dataset", "spiral")
    wait_until(lambda: "Decision boundary" in plot_titles(page), 20, what="the spiral's chart")
    wait_until(lambda: "Upload a CSV file in the sidebar" not in body_text(page), 10,
               what="the rerun for spiral to end")
    step_once(page)
    assert_no_exception(page)
    assert not page.errors, page.errors
    pause(page)


def test_rewritten_upload_over_5_mb_is_refused_by_the_server(page, server):
    """The uploader's limit is only a hint to the browser: a request rewritten on its way (here
    by Playwright, in the field by any HTTP client) must meet the server's maxUploadSize."""
    small = semicolon_csv()
    big = big_csv()

    def swap_body(route, request):
        body = request.post_data_buffer
        if request.method == "PUT" and body and small in body:
            route.continue_(post_data=body.replace(small, big))
        else:
            route.continue_()

    open_csv_uploader(page, server)
    page.route("**/_stcore/upload_file/**", swap_body)
    with page.expect_response(lambda r: "/_stcore/upload_file/" in r.url
                              and r.request.method == "PUT", timeout=30_000) as answer:
        upload(page, "looks_small.csv", small)
    assert answer.value.status == 413, answer.value.status
    page.unroute("**/_stcore/upload_file/**")
    page.locator(FILE_CHIP_ERROR).wait_for(timeout=20_000)
    page.wait_for_timeout(500)
    assert page.locator(PREVIEW).count() == 0
    assert_no_exception(page)
    assert_no_traceback(page)
    assert_nothing_over_the_limit_stored(server)
    assert not [p for p, s in stored_uploads(server) if s == len(big)]
    assert not page.errors, page.errors


def test_upload_with_160000_columns_is_refused_quickly(page, server):
    open_csv_uploader(page, server)
    data = wide_csv()
    assert len(data) < UPLOAD_LIMIT
    upload(page, "wide.csv", data)
    wait_until(lambda: "160,000 columns" in sidebar_text(page), 30,
               what="the message about 160,000 columns")
    assert any("160,000 columns" in e for e in error_texts(page)), error_texts(page)
    assert page.locator(PREVIEW).count() == 0
    assert_no_exception(page)
    assert_no_traceback(page)
    assert_nothing_over_the_limit_stored(server)
    # still responsive: a built-in dataset draws its chart and trains
    choose(page, "Dataset", "spiral")
    # the old run's elements stay (faded) until the rerun ends
    wait_until(lambda: "160,000 columns" not in body_text(page), 10,
               what="the CSV message to go with the CSV")
    wait_until(lambda: "Decision boundary" in plot_titles(page), 20, what="the spiral's chart")
    wait_until(lambda: not page.locator('[data-stale="true"]').count(), 10,
               what="the rerun for spiral to end")
    step_once(page)
    assert_no_exception(page)
    assert not page.errors, page.errors
    pause(page)


def view_button(page, view: str):
    """The live panel's view switch (a segmented control: buttons whose text is the view)."""
    return page.locator("button").filter(has_text=re.compile(f"^{view}$")).first


def network_images(page) -> str:
    return page.evaluate("""() => { const el = [...document.querySelectorAll('.js-plotly-plot')]
        .find(e => ((e.layout || {}).title || {}).text?.includes('Network'));
        return el ? (el.layout.images || []).map(i => i.source.slice(-60)).join('') : ''; }""")


def test_the_network_view_draws_the_net_and_animates_while_training(page, server):
    open_app(page, server)
    view_button(page, "Network").click()
    before = wait_until(lambda: network_images(page), 20,
                        what="the network view of the untrained net")
    open_app(page, server, long_run_query())
    view_button(page, "Network").click()
    press(page, "Start")
    wait_until(lambda: (lambda s: s and s[0] == "running")(status(page)), 15,
               what="the run to train")
    frames, last, deadline = set(), None, time.monotonic() + 4
    while time.monotonic() < deadline:
        now = network_images(page)
        if now and now != last:
            frames.add(now)
        last = now
        page.wait_for_timeout(100)
    assert len(frames) >= 4, f"{len(frames)} network frames in 4 s while training"
    assert before not in frames
    assert_no_exception(page)
    press(page, "Pause")


LOSS_ZOOM_JS = """() => {
  const el = [...document.querySelectorAll('.js-plotly-plot')]
    .find(e => ((e.layout || {}).title || {}).text === 'Loss');
  if (!el) return null;
  window.__lossChart = window.__lossChart || el;
  const x = el.data[0].x;
  return {same: el === window.__lossChart, range: el.layout.xaxis.range, last: x[x.length - 1]};
}"""


def test_a_zoomed_chart_keeps_its_zoom_while_training(page, server):
    """A drag-zoom on the loss chart survives the live refreshes: the same chart is redrawn in
    place with the new points, inside the range the user chose."""
    open_app(page, server, long_run_query())
    press(page, "Start")
    wait_until(lambda: loss_last_step(page) > 200, 20, what="the loss chart to grow")
    drag = page.locator(".js-plotly-plot").filter(has_text="Loss").locator(".nsewdrag").first
    box = drag.bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    for k in range(1, 11):  # a person's drag: several moves while refreshes arrive
        page.mouse.move(box["x"] + (0.2 + 0.03 * k) * box["width"],
                        box["y"] + (0.2 + 0.06 * k) * box["height"])
        page.wait_for_timeout(30)
    page.mouse.up()
    zoomed = wait_until(lambda: page.evaluate(LOSS_ZOOM_JS), 5, what="the loss chart")
    page.wait_for_timeout(2000)  # about ten live refreshes
    later = page.evaluate(LOSS_ZOOM_JS)
    assert later["same"], "the loss chart was replaced, not redrawn in place"
    assert later["last"] > zoomed["last"], "the chart stopped updating"
    assert later["range"] == zoomed["range"], (zoomed, later)
    assert later["range"][1] < later["last"], "the zoom ended before the newest point"
    assert_no_exception(page)
    assert not page.errors, page.errors
    pause(page)


TITLE_COLOURS_JS = """() => [...document.querySelectorAll('.netlab-plot .gtitle')]
  .map(t => getComputedStyle(t).fill)
  .concat([getComputedStyle(document.querySelector('.stApp')).color])"""


def test_chart_titles_follow_the_page_theme(page, server):
    """Titles take the page's text colour, and follow a switch to dark without a redraw."""
    open_app(page, server)
    wait_until(lambda: page.locator(".netlab-plot .gtitle").count(), 20, what="a chart title")
    *titles, text = page.evaluate(TITLE_COLOURS_JS)
    assert titles and set(titles) == {text}
    page.emulate_media(color_scheme="dark")
    dark = wait_until(lambda: (lambda c: c[-1] != text and c)(page.evaluate(TITLE_COLOURS_JS)),
                      10, what="the page to turn dark")
    assert set(dark[:-1]) == {dark[-1]}, dark
    assert not page.errors, page.errors


def test_a_cnn_preset_trains_and_its_filters_and_feature_maps_render(page, server):
    open_app(page, server, "?preset=cnn_digits")
    press(page, "Start")
    wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 60,
               what="the CNN preset to finish its 600 steps")
    view_button(page, "Filters").click()
    def drawn():
        titles = plot_titles(page)
        return "Learned kernels (blue +, red −)" in titles and any(
            t.startswith("Feature maps of example 0: label ") for t in titles)
    wait_until(drawn, 20, what="the kernels and feature maps")
    cells = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .map(e => (e.data || []).filter(t => t.type === 'heatmap').length)""")
    # maps: the input, conv1's 6, pool1's 6 and the first 8 of conv2's 16; kernels: 6 + 16
    assert sorted(cells)[-2:] == [1 + 6 + 6 + 8, 6 + 16], cells
    # issue 31, item 6: the colours plotly.js draws with (its own "RdBu" is blue for low
    # values) match the captions: blue for positive kernels and for a probability that falls
    ends = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .filter(e => /^(Learned kernels|P\\(.*\\) lost when covered)/.test(
            ((e.layout.title && e.layout.title.text) || '').replace(/<[^>]*>/g, '')))
        .map(e => { const s = e._fullData[0].colorscale;
                    return [s[0][1], s[s.length - 1][1]]; })""")
    rgb = lambda c: [int(v) for v in re.findall(r"\d+", c)[:3]]  # noqa: E731
    assert len(ends) == 2, ends
    for low, high in ends:
        assert rgb(low)[0] > rgb(low)[2] and rgb(high)[2] > rgb(high)[0], ends  # red - , blue +
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_a_recurrent_preset_trains_and_draws_its_gradient_through_time(page, server):
    open_app(page, server, "?preset=rnn_sine_forecast")
    press(page, "Start")
    view_button(page, "Through time").click()

    def drawn():
        return any(t.endswith("dL/dh_t through time (log10)") for t in plot_titles(page))
    wait_until(drawn, 30, what="the dL/dh_t heatmap")
    wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 60,
               what="the preset to finish its 400 steps")
    page.wait_for_timeout(800)
    columns = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .flatMap(e => (e.data || []).filter(t => t.type === 'heatmap').map(t => t.x.length))""")
    assert columns and max(columns) == 400 // 20 + 1, columns  # a column per logged row
    assert_no_exception(page)
    assert not page.errors, page.errors


# Each chart's legend and x-axis title as drawn: [title, their boxes meet, legend inside chart]
LEGEND_CLEAR_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(el => {
  const legend = el.querySelector('.legend'), axis = el.querySelector('.xtitle');
  if (!legend || !axis) return [];
  const a = legend.getBoundingClientRect(), b = axis.getBoundingClientRect(),
        c = el.getBoundingClientRect();
  const meet = Math.min(a.right, b.right) > Math.max(a.left, b.left) &&
               Math.min(a.bottom, b.bottom) > Math.max(a.top, b.top);
  return [[el.layout.title.text, meet, a.bottom <= c.bottom + 1]];
})"""

# The greedy/beam table: its cells drawn inside the table's area, and how many cells it has
TABLE_ROWS_JS = """() => {
  const el = [...document.querySelectorAll('.js-plotly-plot')]
    .find(e => (e.layout?.title?.text || '').startsWith('Validation sequences'));
  if (!el || !el._fullLayout) return null;
  const top = el.getBoundingClientRect().top + el._fullLayout._size.t;
  const bottom = top + el._fullLayout._size.h;
  const shown = [...el.querySelectorAll('.cell-text')].map(t => t.getBoundingClientRect())
    .filter(r => r.height > 0 && r.top >= top - 1 && r.bottom <= bottom + 1).length;
  const columns = el.data[0].cells.values;
  return {shown, cells: columns.length * (columns[0].length + 1)};  // the header's too
}"""


def test_legends_clear_axis_titles_and_the_beam_table_shows_every_row(page, server):
    """Issue 31, item 5, at 1280x800: in half a column the legends sat on their x-axis titles
    (four schedules side by side, the run's own loss and accuracy), and the greedy/beam table
    showed three and a half of its four rows."""
    page.set_viewport_size({"width": 1280, "height": 800})
    for preset, legends in (("schedules_side_by_side", 4), ("seq2seq_attention_reverse", 2)):
        open_app(page, server, f"?preset={preset}&stop=planned")
        press(page, "Start")
        wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 120,
                   what=f"{preset} to finish its planned steps")
        charts = wait_until(lambda: (lambda c: len(c) >= legends and c)(
            page.evaluate(LEGEND_CLEAR_JS)), 20, what=f"{legends} charts with legends")
        assert all(not meet and inside for _, meet, inside in charts), charts
    view_button(page, "Through time").click()
    wait_until(lambda: page.evaluate(TABLE_ROWS_JS), 30, what="the greedy/beam table")
    page.wait_for_timeout(500)  # drawn, and not redrawn meanwhile: the run is done
    table = page.evaluate(TABLE_ROWS_JS)
    assert table["shown"] == table["cells"], table
    assert_no_exception(page)
    assert not page.errors, page.errors

def side_by_side_names(page) -> list[str]:
    """The legend of the 'Loss, side by side' chart: one name per variant. The first such chart
    only: while a refresh replaces it, the old element can still be in the page for a moment."""
    return page.evaluate("""() => ([...document.querySelectorAll('.js-plotly-plot')]
        .find(e => e.layout?.title?.text === 'Loss, side by side')?.data || [])
        .filter(t => t.showlegend !== false).map(t => t.name)""")


def test_a_preset_trains_its_variants_side_by_side(page, server):
    """rnn_exploding_clipped trains the same RNN with and without clipping, in step: both
    curves on one chart, both heatmaps in columns."""
    open_app(page, server, "?preset=rnn_exploding_clipped")
    press(page, "Start")
    wait_until(lambda: "Loss, side by side" in plot_titles(page), 30,
               what="the side-by-side loss chart")
    wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 150,
               what="both runs to finish their 600 steps")
    page.wait_for_timeout(800)
    names = side_by_side_names(page)
    assert names == ["no clipping (this run)", "clip norm at 1"], names
    view_button(page, "Through time").click()
    wait_until(lambda: sum(" · rnn1" in t for t in plot_titles(page)) == 2, 20,
               what="the two heatmaps")
    titles = [t for t in plot_titles(page) if " · rnn1" in t]
    assert titles == ["no clipping (this run) · rnn1", "clip norm at 1 · rnn1"]
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_a_comparison_preset_shows_its_effect_beside_its_twin(page, server):
    """dropout_regularizes trains the same net without dropout beside it by default: pressing
    Start shows both loss curves on one chart, no setting to find first (issue 29)."""
    open_app(page, server, "?preset=dropout_regularizes")
    press(page, "Start")
    wait_until(lambda: "Loss, side by side" in plot_titles(page), 30,
               what="the side-by-side loss chart")
    page.wait_for_timeout(800)
    names = side_by_side_names(page)
    assert names == ["with dropout (this run)", "without"], names
    if os.environ.get("NETLAB_SHOTS"):  # a screenshot to look at, where asked for
        page.screenshot(path=os.path.join(os.environ["NETLAB_SHOTS"], "comparison_preset.png"),
                        full_page=True)
    press(page, "Pause")
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_a_deep_preset_fits_one_screen(page, server):
    open_app(page, server, "?preset=deep_relu_he")
    top = page.get_by_text("Show every layer").first.bounding_box()
    bottom = page.get_by_role("button", name="Add a layer").first.bounding_box()
    assert top and bottom
    assert bottom["y"] - top["y"] < 700, f"the 30-layer stack takes {bottom['y'] - top['y']:.0f} px"
    assert_no_exception(page)


CUT_LABELS_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll(
      '[data-testid="stSidebar"] *, [data-testid="stMain"] *, [data-testid="stPopoverBody"] *')) {
    if (el.closest('.js-plotly-plot, [data-testid="stCode"], [data-testid="stDataFrame"], ' +
                   '[data-testid="stIconMaterial"], [data-testid="stMarkdownPre"]')) continue;
    const cs = getComputedStyle(el);
    const select = el.tagName === 'INPUT' && el.closest('[data-testid="stSelectbox"]');
    if (!select && cs.textOverflow !== 'ellipsis' &&
        !(cs.overflow === 'hidden' && cs.whiteSpace === 'nowrap')) continue;
    const text = (select ? el.value : (el.innerText || '')).trim();
    if (!text || el.clientWidth <= 1) continue;  // hidden: an icon's screen-reader text
    if (el.scrollWidth > el.clientWidth + 1) out.push(text.slice(0, 60));
  }
  return out;
}"""


def cut_labels(page) -> list[str]:
    """Labels drawn with their end cut off ("+ act…", "xavier unif"). The preset picker's
    titles are sentences: the list it opens shows them whole."""
    titles = {o for o in page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid="stSelectbox"] input')].map(e => e.value)""") if " · " in o}
    return [t for t in page.evaluate(CUT_LABELS_JS) if t not in titles]


def test_labels_are_whole_and_the_page_is_compact_on_a_laptop_screen(page, server):
    """Issue 31, items 3 and 8: at 1280 px no button, picker or checkbox label is cut (the
    eighteen "+ layer" buttons live in one "Add a layer" menu, fix buttons are as wide as
    their labels); ten repeated (linear, batchnorm, activation) layers are one block, not a
    7,005 px page; Side by side and A/B sit near the top of the sidebar."""
    page.set_viewport_size({"width": 1280, "height": 800})
    open_app(page, server, "?preset=vanishing_sigmoid")
    press(page, "Start")
    wait_until(lambda: button(page, "Switch to ReLU + He init").count(), 60,
               what="the vanishing verdict's fix buttons")
    assert cut_labels(page) == []
    press(page, "Add a layer")
    wait_until(lambda: button(page, "+ batchnorm2d").is_visible(), 10, what="the layer menu")
    assert cut_labels(page) == []
    page.keyboard.press("Escape")
    pause(page)
    open_app(page, server, "?preset=batchnorm_deep_sigmoid")
    page.wait_for_timeout(1500)
    heights = page.evaluate("""() => ({
        main: document.querySelector('[data-testid="stMain"]').scrollHeight,
        side: document.querySelector('[data-testid="stSidebarContent"]').scrollHeight})""")
    assert heights["main"] < 2000 and heights["side"] < 2600, heights
    compare = page.get_by_role("heading", name="Compare").bounding_box()
    seed = page.get_by_role("spinbutton", name="seed").bounding_box()
    assert compare and compare["y"] < 900 and seed["y"] < compare["y"] + 300, (compare, seed)
    assert cut_labels(page) == []
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_the_decision_boundary_is_above_the_fold_on_a_laptop_screen(page, server):
    """At 1280x800 the first screen holds the controls and the whole decision boundary."""
    page.set_viewport_size({"width": 1280, "height": 800})
    open_app(page, server)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=LOAD_TIMEOUT_MS)
    wait_until(lambda: "Decision boundary" in (page.evaluate(
        "() => document.querySelector('.js-plotly-plot')?.layout?.title?.text") or ""), 20,
        what="the decision boundary chart")
    box = chart.bounding_box()
    start = button(page, "Start").bounding_box()
    assert start["y"] + start["height"] <= 800 and box["y"] >= 0
    assert box["y"] + box["height"] <= 800, f"the boundary ends at {box['y'] + box['height']:.0f} px"


PATH_LENGTHS_JS = """() => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')]
        .find(e => (e.layout?.title?.text || '').includes('press Play'));
    return gd ? gd.data.slice(2).map(t => t.x.length) : null;
}"""


def test_the_optimizer_lab_animates_its_trajectories(page, server):
    page.goto(server.url + "optimizers")
    wait_until(lambda: page.evaluate(PATH_LENGTHS_JS) == [201, 201, 201], 30,
               what="three full 200-step paths on the bowl")
    page.locator(".updatemenu-button").filter(has_text="Play").first.click()
    seen = set()

    def growing():
        lengths = page.evaluate(PATH_LENGTHS_JS)
        seen.add(lengths[0])
        return lengths == [201, 201, 201] and len(seen) > 3
    wait_until(growing, 20, what="the paths to grow step by step back to 200 steps")
    assert min(seen) < 50, seen  # it started over from the start point
    assert_no_exception(page)
    assert not page.errors, page.errors



def config_query(config: dict) -> str:
    raw = json.dumps(config, separators=(",", ":")).encode()  # the URL format of ui/state.py
    return "?cfg=" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def train_to_the_end(page, server, config: dict) -> None:
    open_app(page, server, config_query(config) + "&stop=planned")
    press(page, "Start")
    wait_until(lambda: (lambda s: s and s[0] == "done")(status(page)), 60,
               what="the run to finish")


def test_the_runs_page_overlays_two_runs(page, server):
    """Two runs trained in the Playground, both selected on the Runs page: their loss curves
    on one chart and the setting that differs in a table."""
    base = {"data": {"name": "xor", "n": 200}, "model": {"layers": [4]},
            "training": {"steps": 300}}
    slow = {**base, "optimizer": {"name": "sgd", "lr": 0.003}}
    fast = {**base, "optimizer": {"name": "sgd", "lr": 0.3}}
    train_to_the_end(page, server, slow)
    train_to_the_end(page, server, fast)
    page.goto(server.url + "runs")
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(timeout=LOAD_TIMEOUT_MS)
    names = ["xor · 4 relu · sgd 0.3", "xor · 4 relu · sgd 0.003"]  # newest first
    wait_until(lambda: all(n in body_text(page) or True for n in names), 5, what="the table")
    box = table.bounding_box()
    for row in (0, 1):  # the selection column: the grid is drawn on a canvas
        page.mouse.click(box["x"] + 12, box["y"] + 35 * (row + 1) + 17)
        page.wait_for_timeout(600)
    wait_until(lambda: "2 runs overlaid" in body_text(page), 20, what="two runs overlaid")
    if os.environ.get("NETLAB_SHOTS"):  # a screenshot to look at, where asked for
        page.wait_for_timeout(2000)
        page.screenshot(path=os.path.join(os.environ["NETLAB_SHOTS"], "runs_overlay.png"),
                        full_page=True)
    traces = wait_until(lambda: page.evaluate("""() => [...document.querySelectorAll(
        '.js-plotly-plot')].filter(e => ((e.layout?.title?.text ?? e.layout?.title) || '')
        .replace(/<[^>]*>/g, '').trim() === 'Loss')
        .flatMap(e => e.data.map(t => [t.name, t.x.length]))"""), 20, what="the loss overlay")
    shown = {name for name, points in traces if points > 1}
    assert set(names) <= shown, traces
    assert "Settings that differ" in body_text(page)
    # the grids are canvases: the table's values are checked under AppTest (test_runs_page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 2
    assert_no_exception(page)
    page.mouse.click(box["x"] + 12, box["y"] + 35 * 2 + 17)  # keep only the fast run
    wait_until(lambda: button(page, "Open in the Playground").count() == 1, 20,
               what="one run selected")
    press(page, "Open in the Playground")
    page.get_by_role("button", name="Step", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)
    assert wait_until(lambda: status(page), 20, what="the status line") == ("done", 300, 300)
    wait_until(lambda: loss_points(page) > 1, 20, what="its loss chart")
    assert "You changed settings" not in body_text(page)
    assert_no_exception(page)
    assert not page.errors, page.errors


def test_a_run_survives_a_server_restart(browser, tmp_path):
    """Train, pause, kill the server (SIGKILL: nothing written on the way out); a new server on
    the same run store: the run's link brings it back at the same step, and it trains on."""
    home = str(tmp_path / "home")
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        page = ctx.new_page()
        with serve(NETLAB_HOME=home) as first:
            state = start_long_run(page, first)
            wait_until(lambda: (lambda s: s and s[1] > state[1] + 200)(status(page)), 20,
                       what="a few hundred steps")
            press(page, "Pause")
            paused = wait_until(lambda: (lambda s: s and s[0] == "paused" and s)(status(page)),
                                10, what="the run to pause")
            rid = run_id(page)
            query = page.evaluate("location.search")
            first.proc.kill()  # no shutdown: only what is on disk survives
            first.proc.wait()
        with serve(NETLAB_HOME=home) as second:
            page.goto(second.url + query)
            page.get_by_role("button", name="Step", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)
            wait_until(lambda: "brought back from the run store" in body_text(page), 20,
                       what="the restored run's note")
            back = wait_until(lambda: status(page), 10, what="the status line")
            assert back[:2] == ("paused", paused[1]), (back, paused)
            assert run_id(page) == rid
            wait_until(lambda: loss_points(page) > 1, 20, what="its loss chart")
            press(page, "Start")
            wait_until(lambda: (lambda s: s and s[1] > paused[1] + 50)(status(page)), 20,
                       what="the restored run to train on")
            assert_no_exception(page)
            pause(page)
    finally:
        ctx.close()
