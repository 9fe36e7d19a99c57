"""The CLI contract (DESIGN.md §2.3), run as a user would: a subprocess per command."""
import json
import subprocess
import sys
import time

import pytest
import torch

from engine import ExperimentSpec, SpecError
from tests.conftest import ROOT


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": {"name": "xor"}, "model": {"layers": [8]},
                                "training": {"steps": 60}, "diagnostics": {"every": 20}}))
    return path


@pytest.mark.slow
def test_train_writes_every_output(tmp_path, config):
    out = tmp_path / "run"
    r = cli("train", config, "--set", "optimizer.lr=0.3", "--set", "seed=3", "--out", out)
    assert r.returncode == 0, r.stderr
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["optimizer"]["lr"] == 0.3 and resolved["seed"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 20, 40, 60]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "completed" and summary["steps"] == 60
    assert set(summary) >= {"steps", "stopped", "final", "best", "test", "health", "seconds"}
    assert "layers" not in summary["final"]
    state = torch.load(out / "model.pt")
    assert set(state) == {"fc1.linear.weight", "fc1.linear.bias", "out.weight", "out.bias"}


@pytest.mark.slow
def test_steps_override_and_preset(tmp_path):
    r = cli("train", "--preset", "lr_too_high", "--steps", "40", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["stopped"] == "diverged" and summary["health"]["status"] == "diverged"
    assert json.loads((tmp_path / "p" / "config.json").read_text())["training"]["steps"] == 40


@pytest.mark.slow
def test_set_reaches_into_a_presets_layer_shorthand():
    r = cli("describe", "--preset", "lr_too_high", "--set", "model.layers.0.units=8")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["output_shape"] == [8]


@pytest.mark.slow
def test_describe_reports_shapes_and_params(config):
    r = cli("describe", config)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [(layer["name"], layer["output_shape"], layer["params"]) for layer in d["layers"]] == \
        [("fc1", [8], 2 * 8 + 8), ("out", [2], 8 * 2 + 2)]
    assert d["total_params"] == 42


def test_presets_lists_names_and_concepts():
    r = cli("presets")
    assert r.returncode == 0
    assert "vanishing_sigmoid" in r.stdout and "E1" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "{config}", "--set", "optimizer.lr=-1", "--out", "{tmp}"], "optimizer.lr=-1"),
    (["train", "{config}", "--set", "model.activation=relux", "--out", "{tmp}"], "unknown activation 'relux'"),
    (["train", "{config}", "--set", "nonsense", "--out", "{tmp}"], "expected KEY=VALUE"),
    (["train", "{tmp}/missing.json", "--out", "{tmp}"], "cannot read config file"),
    (["train", "{bad}", "--out", "{tmp}"], "not valid JSON"),
    (["train", "--preset", "nope", "--out", "{tmp}"], "unknown preset 'nope'"),
    (["train", "{config}"], "--out"),
    (["describe", "{config}", "--set", "model.layers.0.units=0"], "model.layers[0].units=0"),
    (["frobnicate"], "invalid choice"),
])
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(tmp_path, config, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    args = [a.format(config=config, tmp=tmp_path, bad=bad) for a in args]
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- crafted input
# Each case was a traceback, a hang, a fetch or an out-of-memory kill before engine/core/inputs.py.
# Files are written by name into the test's folder; "{tmp}" and "{config}" are filled in.

def _json(value) -> bytes:
    return json.dumps(value).encode()


SMALL = {"data": {"name": "xor"}, "model": {"layers": [8]}, "training": {"steps": 5}}
CRAFTED_FILES = {
    "int400.json": b'{"seed": ' + b"9" * 400 + b"}",
    "int5000.json": b'{"seed": ' + b"9" * 5000 + b"}",
    "deep.json": b"[" * 100_000 + b"]" * 100_000,
    "features.json": _json({"data": {"features": [["x1"]]}}),
    "binary.json": bytes(range(256)) * 40,
    "nan.json": b'{"optimizer": {"name": "sgd", "lr": NaN}}',
    "bom.json": b"\xef\xbb\xbf" + _json(SMALL),
    "devzero_data.json": _json({"data": {"name": "csv", "path": "/dev/zero", "target": "y"}}),
    "url_data.json": _json({"data": {"name": "csv", "path": "http://127.0.0.1:9/x.csv",
                                     "target": "y"}}),
    "huge_net.json": _json({"data": {"name": "xor"}, "model": {"layers": [8192] * 200},
                            "training": {"steps": 1}}),
    "small.json": _json(SMALL),
    "existing_file": b"not a folder",
}
CRAFTED = [
    # (arguments, exit code, message on stderr)
    (["describe", "{tmp}/int400.json"], 2, "seed=<a 400-digit integer> is not allowed"),
    (["describe", "{tmp}/int5000.json"], 2, "seed=<a 5,000-digit integer> is not allowed"),
    (["describe", "{tmp}/deep.json"], 2, "nests 100,000 levels deep; at most 32"),
    (["describe", "{tmp}/features.json"], 2, "data.features: unknown feature ['x1']"),
    (["describe", "{tmp}/binary.json"], 2, "binary.json' is not UTF-8 text"),
    (["describe", "{tmp}/nan.json"], 2, "optimizer.lr=NaN is not allowed"),
    (["describe", "{tmp}/bom.json"], 0, ""),
    (["describe", "{tmp}"], 2, "is a folder, not a file"),
    (["describe", "/dev/zero"], 2, "'/dev/zero' is a system file"),
    (["describe", "{tmp}/missing.json"], 2, "no file"),
    (["describe", "{tmp}/devzero_data.json"], 2, "data.path: '/dev/zero' is a system file"),
    (["describe", "{tmp}/url_data.json"], 2, "data.path: 'http://127.0.0.1:9/x.csv' is a URL"),
    (["train", "{tmp}/small.json", "--out", "/proc/netlab"], 2,
     "--out: cannot write to '/proc/netlab'"),
    (["train", "{tmp}/small.json", "--out", "{tmp}/existing_file"], 2,
     "it is an existing file, not a folder"),
    (["train", "{tmp}/huge_net.json", "--out", "{tmp}/o"], 2,
     "13,356,335,106 parameters; at most 2,000,000"),
    (["train", "{tmp}/small.json", "--max-params", "10", "--out", "{tmp}/o"], 2,
     "42 parameters; at most 10 are allowed"),
    (["train", "{tmp}/small.json", "--max-params", "0", "--out", "{tmp}/o"], 2,
     "--max-params 0 is not allowed"),
    (["train", "{tmp}/small.json", "--steps", "9" * 5000, "--out", "{tmp}/o"], 2,
     "is not an integer of at most 20 digits"),
    (["describe", "{tmp}/small.json", "--set", "seed=" + "9" * 5000], 2,
     "--set seed: <a 5,000-digit integer> is not allowed"),
    (["describe", "{tmp}/small.json", "--set", "model.layers=" + "[" * 50 + "]" * 50], 2,
     "--set model.layers nests 50 levels deep"),
    (["describe", "{tmp}/small.json", "--set", "seed=1e999"], 2, "64-bit float"),
    (["train", "--preset", "../../etc/passwd", "--out", "{tmp}/o"], 2, "unknown preset"),
    (["train", "--preset", "./xor_tanh", "--out", "{tmp}/o"], 2, "unknown preset './xor_tanh'"),
]


@pytest.mark.parametrize("args, code, message", CRAFTED,
                         ids=[" ".join(a)[:60] for a, _, _ in CRAFTED])
@pytest.mark.slow
def test_crafted_input_gets_a_one_line_answer(tmp_path, args, code, message):
    for name, content in CRAFTED_FILES.items():
        (tmp_path / name).write_bytes(content)
    r = cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == code, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert message in r.stderr
    if code:
        assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 600


@pytest.mark.slow
def test_the_url_in_data_path_is_never_fetched(tmp_path):
    """A local server counts requests: pandas.read_csv(path) would have fetched the URL."""
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 10)

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/x.csv"
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"data": {"name": "csv", "path": url, "target": "y"}}))
        r = cli("train", config, "--out", tmp_path / "o")
    finally:
        server.shutdown()
    assert r.returncode == 2 and "is a URL" in r.stderr
    assert hits == []


@pytest.mark.slow
def test_max_params_raises_the_cap_from_the_environment_or_the_flag(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"name": "xor"}, "model": {"layers": [2048]},
                                  "training": {"steps": 1}}))  # 10,242 parameters
    import os
    env = {**os.environ, "NETLAB_MAX_PARAMS": "10000"}
    r = subprocess.run([sys.executable, "-m", "engine", "train", str(config), "--out",
                        str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2 and "10,242 parameters; at most 10,000" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engine", "train", str(config), "--out",
                        str(tmp_path / "b"), "--max-params", "20000"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    env["NETLAB_MAX_PARAMS"] = "many"
    r = subprocess.run([sys.executable, "-m", "engine", "train", str(config), "--out",
                        str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2 and "NETLAB_MAX_PARAMS='many'" in r.stderr


def test_an_unexpected_exception_is_one_line_exit_1(monkeypatch, capsys):
    """The last resort only: none of the crafted cases above reaches it."""
    from engine import __main__ as cli_main
    monkeypatch.setattr(cli_main, "cmd_presets", lambda args: 1 / 0)
    assert cli_main.main(["presets"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (ZeroDivisionError): division by zero; please "
                          "report it") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, env, expected", [(None, None, 1), ("2", None, 2), (None, "3", 3)])
def test_train_pins_torchs_threads(tmp_path, config, monkeypatch, flag, env, expected):
    """One thread unless asked, as the app does: torch's default (a thread per core) was measured
    9x slower for these small models on a busy machine."""
    from engine.__main__ import main

    if env is not None:
        monkeypatch.setenv("NETLAB_TORCH_THREADS", env)
    torch.set_num_threads(4)
    try:
        assert main(["train", str(config), "--out", str(tmp_path / "r"),
                     *(["--threads", flag] if flag else [])]) == 0
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(1)
    assert main(["train", str(config), "--out", str(tmp_path / "r"), "--threads", "0"]) == 2


def test_the_readme_commands_name_configs_that_exist_and_load():
    import re

    from engine import load_spec

    readme = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"python -m engine \w+ ([\w/.-]+\.json)", readme))
    assert paths, "the README shows the CLI with a config file"
    for path in paths:
        assert (ROOT / path).is_file(), f"the README names {path}, which the repo lacks"
        load_spec(str(ROOT / path))


# ----------------------------------------------------------------------------- issue 31's probe


def test_a_random_search_is_capped_before_it_draws():
    """--random 1000000000 once drew for 90 s and took 1.84 GB before any check."""
    from engine.runs.sweep import MAX_VARIANTS, plan

    base = ExperimentSpec.from_dict({"data": {"name": "xor"}})
    started = time.monotonic()
    with pytest.raises(SpecError, match=r"--random 1,000,000,000 .* at most 1,024 are allowed"):
        plan(base, random=1_000_000_000, ranges={"optimizer.lr": (1e-4, 1.0, True)})
    assert time.monotonic() - started < 1
    assert len(plan(base, random=MAX_VARIANTS, ranges={"optimizer.lr": (1e-4, 1.0, True)})) \
        == MAX_VARIANTS


def test_too_many_seeds_are_refused_for_that_reason():
    from engine.runs.sweep import parse_seeds

    with pytest.raises(SpecError, match="at most 1,024 seeds"):
        parse_seeds("0-100000")
    with pytest.raises(SpecError, match="at most 1,024 seeds"):
        parse_seeds("0-1000,2000-2100")
    with pytest.raises(SpecError, match="each range goes up"):
        parse_seeds("5-2")
    assert parse_seeds("0-1023") == list(range(1024))


@pytest.mark.parametrize("argv, message", [
    (["resume", ""], "expected a run's id or its first 4 or more characters"),
    (["resume", "ab"], "expected a run's id or its first 4 or more characters"),
    (["resume", "../x"], "expected a run's id"),
    (["runs", "--tensorboard", ""], "--tensorboard needs a folder"),
    (["runs", "--tensorboard", "  "], "--tensorboard needs a folder"),
])
def test_empty_or_short_names_are_refused_not_matched_against_everything(argv, message, capsys,
                                                                         tmp_path, monkeypatch):
    from engine.__main__ import main

    monkeypatch.setenv("NETLAB_HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_garbage_checkpoint_is_one_short_line():
    from engine.train.trainer import load_checkpoint

    with pytest.raises(SpecError) as e:
        load_checkpoint(b"PK\x03\x04 not a checkpoint at all")
    assert "damaged or not a Netlab checkpoint" in str(e.value) and "weights_only" not in \
        str(e.value) and len(str(e.value)) < 120
