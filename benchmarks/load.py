"""Live-training load: N browser sessions press Start at once against one Streamlit server.

    python benchmarks/load.py [--sessions 1,5,10] [--seconds 10] [--steps 100000]
    python benchmarks/load.py --no-render            # plotly not drawn: measure the server
    python benchmarks/load.py --no-render --sessions 1,10,30 --backends threads,workers,ray
    python benchmarks/load.py --server-side --sessions 1,10,30 --backends threads,workers,ray
    python benchmarks/load.py --env NETLAB_MAX_STEPS_PER_S=50 --profile /tmp/prof   # A/B, py-spy

Prints one JSON object. For each N a fresh server is started (`streamlit run app.py` on a free
port, NETLAB_MAX_TRAINERS raised to the largest N so that every session may train), one headless
Chromium opens N browser contexts (one Streamlit session each) on the default experiment with
`training.steps` raised so that no run finishes inside the window, waits for every page to be
drawn, then presses Start in all of them within a few milliseconds, and watches for `--seconds`.

Two views of the same chart updates, per session:

    browser_view   an in-page monitor (a 50 ms timer) on the page's own clock: click -> the Loss
                   chart first has points (first_chart_s); an update is every time the chart
                   shows different data (its newest point changed; a refresh that brought
                   nothing new is not an update); max_gap_s the longest wait between updates
    server_view    the websocket, timed where Playwright delivers it: click -> the first Loss
                   chart delta, Loss deltas whose figure changed, fragment runs that finished
                   (fragment_runs_per_s), runs reported FINISHED_EARLY_FOR_RERUN
                   (interrupted_runs: cut short, or their output dropped because the next run
                   started before it was sent), and KB sent per second

A session stalls when its longest gap exceeds 2 s (or it never drew a chart). Also per N:
training steps/s per session (the last step count the page showed over the time since the click:
a lower bound when the page stalls; steps_per_s_shown is the status line's own figure), the
server's CPU (from /proc/<pid>/stat, 100 = one core) and RSS, and the browser's CPU.

The browser runs on the same machine as the server here, which real users' browsers do not:
drawing plotly charts costs Chromium about a core per live page. `--no-render` serves an empty
component in place of Streamlit's plotly chunk, so nothing is drawn, the browser costs less, and
the targets are judged on server_view instead of browser_view.

Backends (issue 19): where the server trains its runs. `threads`: in the web process
(NETLAB_WORKERS=0, as before); `workers`: in worker processes, one per core (the default);
`ray`: one Ray actor per run on a Ray started inside the server (NETLAB_RAY_ADDRESS=local,
requirements-ray.txt). The server's CPU and RSS count the web process and every process under
it (workers, Ray's own); `web_cpu_percent` and `web_rss_mb` the web process alone.

`--server-side` leaves the browser out: each session is a thread doing the server's side of a
page refresh (benchmarks/server_sessions.py), one fresh process per level. On 2 cores a browser
on the same machine takes most of the CPU with 10 pages or more (measured ~1.7 cores with plotly
stubbed out), so the browser levels there measure Chromium more than the server.

Targets (from the issue): click -> first chart < 1 s and >= 4 chart updates/s with one session,
10 sessions without stalls on 2 cores. `met` says which hold. Figures on a shared machine are
noisy; `machine` records the cores and load average.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("NETLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1500, "height": 1100}
STALL_S = 2.0
TARGETS = {"first_chart_s_max": 1.0, "updates_per_s_one_session": 4.0,
           "stalled_sessions_at_max_n": 0}
STATUS = re.compile(r"\b(ready|running|paused|done|error) · step ([\d,]+) / ([\d,]+)"
                    r"(?: · ([\d,.]+) steps/s)?")
CLK = os.sysconf("SC_CLK_TCK")

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

FINISHED_OK = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_SUCCESSFULLY")
FINISHED_FRAGMENT_OK = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_FRAGMENT_RUN_SUCCESSFULLY")
FINISHED_EARLY = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")
LOSS_TITLE = re.compile(r'\\"text\\":\s*\\"Loss\\"')  # the chart's title, in live_plot's JSON string
PLOTLY_CHUNK = re.compile(r"/static/js/PlotlyChart\.[^/]*\.js$")
PLOTLY_STUB = "export function PlotlyChart() { return null; }\nexport default PlotlyChart;\n"

# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env_overrides: dict | None = None, timeout: float = 120):
    """(process, base url) of `streamlit run app.py` on a free port, once it answers."""
    port = free_port()
    log = open(os.path.join(tempfile.mkdtemp(prefix="netlab_load_"), "server.log"), "w")
    env = {**os.environ, "PYTHONPATH": ROOT, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           **(env_overrides or {})}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}; log: {log.name}")
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"streamlit did not answer in {timeout:.0f} s; log: {log.name}")
        time.sleep(0.3)


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cfg_query(config: dict) -> str:
    """?cfg= for a config dict, encoded as ui/state.py does (base64url(zlib(JSON)))."""
    raw = json.dumps(config, separators=(",", ":")).encode()
    return "?cfg=" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def default_config(steps: int) -> dict:
    with open(os.path.join(ROOT, "engine", "presets", "spiral_one_hidden.json")) as f:
        config = json.load(f)["config"]
    config.setdefault("training", {})["steps"] = steps
    return config


# ----------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def browser_cpu_seconds(server_pid: int) -> float:
    """CPU time of this process's other descendants: the Playwright driver and Chromium."""
    skip = {server_pid} | descendants(server_pid)
    return sum(cpu_seconds(p) for p in descendants(os.getpid()) - skip)


# ----------------------------------------------------------------------------- the page

MONITOR_JS = """() => {
  if (window.__nl) return;
  const nl = window.__nl = {click: null, first: null, updates: [], sig: null};
  setInterval(() => {
    // Streamlit keeps the previous element for a moment while it draws the next: the newest
    // Loss chart is the one with the longest train-loss trace.
    let best = null;
    for (const el of document.querySelectorAll('.js-plotly-plot')) {
      const t = el.layout && el.layout.title;
      const text = ((t && (t.text !== undefined ? t.text : t)) || '').replace(/<[^>]*>/g, '').trim();
      const d = el.data && el.data[0];
      if (text !== 'Loss' || !d || !d.x || !d.x.length) continue;
      if (best === null || d.x.length > best.x.length) best = d;
    }
    if (nl.click === null || best === null) return;
    const now = performance.now(), n = best.x.length;
    const sig = n + ':' + best.x[n - 1] + ':' + best.y[n - 1];
    if (nl.first === null) nl.first = now;
    if (sig !== nl.sig) { nl.updates.push(now); nl.sig = sig; }
  }, 50);
}"""

CLICK_JS = """() => {
  const b = Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Start');
  if (!b || b.disabled) return false;
  window.__nl.click = performance.now();
  b.click();
  return true;
}"""

RESULT_JS = """() => {
  const nl = window.__nl, c = nl.click;
  return {now: performance.now() - c, first: nl.first === null ? null : nl.first - c,
          updates: nl.updates.map(t => t - c)};
}"""


def status(page):
    try:
        m = STATUS.search(page.inner_text("body", timeout=5000))
    except Exception:  # noqa: BLE001
        return None
    if not m:
        return None
    return {"state": m.group(1), "step": int(m.group(2).replace(",", "")),
            "steps_per_s_shown": float(m.group(4).replace(",", "")) if m.group(4) else None}


class Frames:
    """What the server sent one page over its websocket, timed on arrival here: the Loss chart's
    deltas (the server's side of a chart update, however long the browser then takes to draw
    it), script/fragment runs that finished, and bytes."""

    def __init__(self):
        self.loss: list[float] = []      # arrival of a Loss chart whose figure changed
        self.finished: list[tuple[float, int]] = []  # (arrival, ScriptFinishedStatus)
        self.bytes: list[tuple[float, int]] = []
        self._last_spec = None

    def attach(self, page) -> None:
        page.on("websocket", lambda ws: ws.on("framereceived", self.on_frame))

    def on_frame(self, payload) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            return
        now = time.monotonic()
        self.bytes.append((now, len(payload)))
        try:
            msg = ForwardMsg.FromString(bytes(payload))
        except Exception:  # noqa: BLE001 - not a ForwardMsg: count its bytes only
            return
        kind = msg.WhichOneof("type")
        if kind == "script_finished":
            self.finished.append((now, msg.script_finished))
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element" \
                and msg.delta.new_element.WhichOneof("type") == "bidi_component":
            spec = msg.delta.new_element.bidi_component.json  # ui/live_plot.py's data
            if LOSS_TITLE.search(spec) and spec != self._last_spec:
                self._last_spec = spec
                self.loss.append(now)

    def summary(self, t_click: float, t_end: float) -> dict:
        runs = [(t, st) for t, st in self.finished if t_click <= t <= t_end]
        ok = sum(st in (FINISHED_OK, FINISHED_FRAGMENT_OK) for _, st in runs)
        loss = [t - t_click for t in self.loss if t_click <= t <= t_end]
        out = timeline(loss[0] if loss else None, loss, t_end - t_click)
        span = t_end - t_click
        out.update(runs_per_s=ok / span, interrupted_runs=sum(st == FINISHED_EARLY for _, st in runs),
                   kb_per_s=sum(b for t, b in self.bytes if t_click <= t <= t_end) / 1024 / span)
        return out


def timeline(first: float | None, updates: list[float], end: float) -> dict:
    """Latency, rate and longest gap of chart updates (seconds after the click)."""
    ups = [t for t in updates if first is not None and t >= first]
    gaps = [b - a for a, b in zip(ups, ups[1:])] + ([end - ups[-1]] if ups else [])
    span = end - first if first is not None else 0.0
    max_gap = max(gaps) if gaps else None
    return {"first_chart_s": first, "updates_per_s": len(ups) / span if span > 0 else 0.0,
            "max_gap_s": max_gap, "stalled": max_gap is None or max_gap > STALL_S}


def open_pages(browser, url: str, n: int, render: bool):
    contexts, pages, frames = [], [], []
    for _ in range(n):
        ctx = browser.new_context(viewport=VIEWPORT)
        if not render:  # plotly's code is swapped for an empty component: nothing is drawn
            ctx.route(PLOTLY_CHUNK, lambda route: route.fulfill(
                status=200, content_type="application/javascript", body=PLOTLY_STUB))
        page = ctx.new_page()
        frames.append(Frames())
        frames[-1].attach(page)
        page.goto(url)
        page.get_by_role("button", name="Start", exact=True).wait_for(timeout=120_000)
        contexts.append(ctx)
        pages.append(page)
    for page in pages:  # the first draw (URL sync, data preview) has settled everywhere
        if render:
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length",
                                   timeout=60_000)
        page.evaluate(MONITOR_JS)
    return contexts, pages, frames


def warm_up(browser, url: str) -> float:
    """Seconds from a first Step on a freshly started server to its status line showing step 1:
    the cold start (the worker processes or Ray start with the first page). The window is
    measured after it, as in a class where the lecturer opened the page first."""
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        page = ctx.new_page()
        page.goto(url)
        page.get_by_role("button", name="Step", exact=True).wait_for(timeout=120_000)
        t0 = time.monotonic()
        page.get_by_role("button", name="Step", exact=True).click()
        deadline = t0 + 120
        while time.monotonic() < deadline:
            st = status(page)
            if st and st["step"] >= 1:
                return time.monotonic() - t0
            page.wait_for_timeout(50)
        raise RuntimeError("the warm-up page never showed step 1")
    finally:
        ctx.close()


# ----------------------------------------------------------------------------- one level


def r3(x):
    return None if x is None else round(x, 3)


def rounded(d: dict) -> dict:
    return {k: r3(v) if isinstance(v, float) else v for k, v in d.items()}


BACKENDS = {"threads": {"NETLAB_WORKERS": "0"}, "workers": {"NETLAB_WORKERS": "auto"},
            "ray": {"NETLAB_RAY_ADDRESS": "local"}}


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            total += memory_mb(p)[0]
        except OSError:  # gone meanwhile
            pass
    return total


def measure(browser, n: int, seconds: float, steps: int, max_trainers: int, render: bool,
            env: dict | None = None, profile_dir: str | None = None) -> dict:
    proc, url = start_server({"NETLAB_MAX_TRAINERS": str(max_trainers), "NETLAB_GRACE_S": "20",
                              **(env or {})})
    contexts, spy = [], None
    try:
        cold_start_s = warm_up(browser, url)
        rss_idle, _ = memory_mb(proc.pid)
        contexts, pages, frames = open_pages(browser, url + cfg_query(default_config(steps)), n,
                                             render)
        pages[0].wait_for_timeout(1000)  # let the server go idle after the page loads
        rss_before, _ = memory_mb(proc.pid)
        all_before = tree_rss_mb(proc.pid)
        cpu0, bcpu0, t0 = cpu_seconds(proc.pid), browser_cpu_seconds(proc.pid), time.monotonic()
        tcpu0 = tree_cpu_seconds(proc.pid)
        clicked, t_click = [], []
        for page in pages:
            t_click.append(time.monotonic())
            clicked.append(page.evaluate(CLICK_JS))
        click_spread = time.monotonic() - t0
        if profile_dir:  # sample the server's threads during the window (py-spy, not pausing it)
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(proc.pid), "-d", str(max(1, int(seconds) - 1)),
                 "-r", "100", "-f", "raw", "--threads", "--nonblocking",
                 "-o", os.path.join(profile_dir, f"server_{n}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait_for_timeout, not sleep: Playwright delivers the websocket frames while it waits
        pages[0].wait_for_timeout(max(0.0, 1000 * (t0 + seconds - time.monotonic())))
        cpu1, bcpu1, t1 = cpu_seconds(proc.pid), browser_cpu_seconds(proc.pid), time.monotonic()
        tcpu1 = tree_cpu_seconds(proc.pid)
        results = [p.evaluate(RESULT_JS) for p in pages]
        ends = [(status(p), time.monotonic()) for p in pages]
        rss, rss_peak = memory_mb(proc.pid)
        all_rss = tree_rss_mb(proc.pid)
        if spy is not None:
            spy.wait(timeout=30)
    finally:
        for ctx in contexts:
            ctx.close()
        stop_server(proc)

    sessions = []
    for i, r in enumerate(results):
        st, t_status = ends[i]
        browser_view = None
        if render:
            first = r["first"] / 1000 if r["first"] is not None else None
            browser_view = rounded(timeline(first, [t / 1000 for t in r["updates"]],
                                            r["now"] / 1000))
        sessions.append({
            "clicked": clicked[i],
            "state_at_end": st["state"] if st else None,
            # the step count the page showed last, over the time since the click: a lower bound
            # (a stalled page shows an old count)
            "steps_per_s": r3(st["step"] / (t_status - t_click[i])) if st else None,
            "steps_per_s_shown": st["steps_per_s_shown"] if st else None,
            "browser": browser_view,
            "server": rounded(frames[i].summary(t_click[i], t1)),
        })

    def stat(view, key, fn):
        values = [s[view][key] for s in sessions if s[view] and s[view][key] is not None]
        return r3(fn(values)) if values else None

    def view_summary(view):
        if not sessions[0][view]:
            return None
        return {"first_chart_s": {"median": stat(view, "first_chart_s", statistics.median),
                                  "max": stat(view, "first_chart_s", max)},
                "updates_per_s": {"median": stat(view, "updates_per_s", statistics.median),
                                  "min": stat(view, "updates_per_s", min)},
                "max_gap_s": stat(view, "max_gap_s", max),
                "stalled_sessions": sum(bool(s[view]["stalled"]) for s in sessions)}

    server = view_summary("server")
    server.update(
        fragment_runs_per_s={"median": stat("server", "runs_per_s", statistics.median),
                             "min": stat("server", "runs_per_s", min)},
        interrupted_runs=sum(s["server"]["interrupted_runs"] for s in sessions),
        kb_per_s_per_session=stat("server", "kb_per_s", statistics.median))
    sps = [s["steps_per_s"] for s in sessions if s["steps_per_s"] is not None]
    window = t1 - t0
    return {
        "sessions": n,
        "started": sum(s["state_at_end"] in ("running", "done") for s in sessions),
        "click_spread_s": r3(click_spread),
        "cold_start_s": r3(cold_start_s),
        "browser_view": view_summary("browser"),
        "server_view": server,
        "steps_per_s": {"median": r3(statistics.median(sps)) if sps else None,
                        "min": r3(min(sps)) if sps else None,
                        "total": r3(sum(sps)) if sps else None},
        "server_cpu_percent": round(100 * (tcpu1 - tcpu0) / window, 1),
        "web_cpu_percent": round(100 * (cpu1 - cpu0) / window, 1),
        "browser_cpu_percent": round(100 * (bcpu1 - bcpu0) / window, 1),
        "server_rss_mb": {"pages_open": round(all_before, 1), "end": round(all_rss, 1)},
        "web_rss_mb": {"idle": round(rss_idle, 1), "pages_open": round(rss_before, 1),
                       "end": round(rss, 1), "peak": round(rss_peak, 1)},
        "window_s": r3(window),
        "per_session": sessions,
    }


# ----------------------------------------------------------------------------- server side


def server_side(backends: list[str], levels: list[int], seconds: float) -> dict:
    """benchmarks/server_sessions.py for each backend and session count, a fresh process
    each; the table the issue asks for."""
    results = {}
    for backend in backends:
        results[backend] = {}
        for n in levels:
            print(f"[load] server side, {backend}: {n} session(s)...", file=sys.stderr)
            proc = subprocess.run(
                [sys.executable, os.path.join(ROOT, "benchmarks", "server_sessions.py"),
                 backend, str(n), str(seconds)], cwd=ROOT, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": ROOT}, timeout=600 + 10 * n)
            try:
                results[backend][str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                results[backend][str(n)] = {"error": proc.stderr[-2000:]}
    table = [{"backend": b, "sessions": int(n), "steps_per_s_per_run": r["steps_per_s"]["median"],
              "total_steps_per_s": r["steps_per_s"]["total"],
              "updates_per_s_per_session": r["updates_per_s"]["median"],
              "longest_stall_s": r["max_gap_s"], "first_chart_s_max": r["first_chart_s"]["max"],
              "refused_by_caps": r["refused"], "create_s_max": (r["create_s"] or {}).get("max"),
              "cpu_percent": r["cpu_percent"], "web_cpu_percent": r["web_cpu_percent"],
              "rss_mb": r["rss_mb"], "web_rss_mb": r["web_rss_mb"]}
             for b, by_n in results.items() for n, r in by_n.items() if "error" not in r]
    return {"table": table, "results": results, "seconds": seconds,
            "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2)
                                                            for x in os.getloadavg()]},
            "experiment": "spiral_one_hidden (the default page), 100,000 steps"}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", default="1,5,10", help="comma-separated session counts")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window per level")
    ap.add_argument("--steps", type=int, default=100_000,
                    help="training.steps of the experiment (high: no run ends in the window)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the server (e.g. OMP_NUM_THREADS=1); repeatable")
    ap.add_argument("--profile", metavar="DIR",
                    help="record the server with py-spy during each window into "
                         "DIR/server_<N>.txt (raw collapsed stacks; needs `pip install py-spy`)")
    ap.add_argument("--server-side", action="store_true",
                    help="no browser: sessions are threads doing a page refresh's server work "
                         "(benchmarks/server_sessions.py)")
    ap.add_argument("--backends", default="workers",
                    help=f"where the server trains, comma-separated: {', '.join(BACKENDS)}")
    ap.add_argument("--no-render", action="store_true",
                    help="serve an empty component in place of the browser's plotly code, so "
                         "that the browser, which shares this machine, draws nothing and the "
                         "server is what is measured; targets are then judged on server_view")
    args = ap.parse_args(argv)
    try:
        env = dict(kv.split("=", 1) for kv in args.env)
    except ValueError:
        print(f"--env: expected KEY=VALUE, got {args.env!r}", file=sys.stderr)
        return 2
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    try:
        levels = [int(x) for x in args.sessions.split(",") if x.strip()]
        assert levels and all(n >= 1 for n in levels)
    except (ValueError, AssertionError):
        print(f"--sessions: expected positive integers like 1,5,10, got {args.sessions!r}",
              file=sys.stderr)
        return 2
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        print(f"--backends: unknown {unknown}; allowed: {', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    if args.server_side:
        print(json.dumps(server_side(backends, levels, args.seconds), indent=1))
        return 0
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    max_trainers = max(levels)
    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for backend in backends:
                results[backend] = {}
                for n in levels:
                    print(f"[load] {backend}: {n} session(s)...", file=sys.stderr)
                    try:
                        results[backend][str(n)] = measure(
                            browser, n, args.seconds, args.steps, max_trainers,
                            not args.no_render, {**BACKENDS[backend], **env}, args.profile)
                    except Exception as e:  # noqa: BLE001 - the other levels still count
                        print(f"[load] {backend}, {n} session(s) failed: {e}", file=sys.stderr)
                        results[backend][str(n)] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            browser.close()

    view = "server_view" if args.no_render else "browser_view"
    met = {}
    for backend, levels_of in results.items():
        levels_of = {n: r for n, r in levels_of.items() if "error" not in r}
        if not levels_of:
            continue
        one = levels_of[min(levels_of, key=int)]
        top = levels_of[max(levels_of, key=int)]
        first = one[view]["first_chart_s"]["max"]
        met[backend] = {
            "first_chart_s_max": first is not None and first < TARGETS["first_chart_s_max"],
            "updates_per_s_one_session":
                (one[view]["updates_per_s"]["min"] or 0) >= TARGETS["updates_per_s_one_session"],
            "stalled_sessions_at_max_n":
                top[view]["stalled_sessions"] <= TARGETS["stalled_sessions_at_max_n"],
        }
    table = [{"backend": backend, "sessions": int(n), "steps_per_s_per_run":
              r["steps_per_s"]["median"], "total_steps_per_s": r["steps_per_s"]["total"],
              "updates_per_s_per_session": r[view]["updates_per_s"]["median"],
              "longest_stall_s": r[view]["max_gap_s"], "server_cpu_percent":
              r["server_cpu_percent"], "server_rss_mb": r["server_rss_mb"]["end"]}
             for backend, levels_of in results.items() for n, r in levels_of.items()
             if "error" not in r]
    out = {
        "targets": {**TARGETS, "max_n": max(levels), "stall_gap_s": STALL_S,
                    "judged_on": view, "note": "first chart and updates: the smallest N "
                    "(1 in the default run); stalls: the largest N"},
        "met": met,
        "table": table,
        "results": results,
        "config": {"experiment": "spiral_one_hidden (the default page)", "steps": args.steps,
                   "seconds": args.seconds, "NETLAB_MAX_TRAINERS": max_trainers,
                   "server_env": env, "backends": {b: BACKENDS[b] for b in backends},
                   "server_per_level": "fresh", "render": not args.no_render,
                   "browser": "one Chromium, one context per session, on the same machine as "
                   "the server"},
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
