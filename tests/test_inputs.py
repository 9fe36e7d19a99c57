"""Everything that arrives from outside (config text and files, CSV tables, share links, preset
names) gets a one-line SpecError with bounded work: engine/core/inputs.py and the readers built on it.

Each crafted case here was a crash, a hang or minutes of work before (see engine/core/inputs.py).
The CLI side of the same inputs is in tests/test_cli.py, the page side in
tests/test_crafted_links.py.
"""
import copy
import io
import json
import math
import os
import random
import threading
import zlib

import pytest
import torch

from engine import ExperimentSpec, SpecError, load_spec
from engine.core import inputs
from engine.core.inputs import NotJSON, inflate, nesting_depth, parse_json, read_user_file, short
from engine.data.datasets import MAX_CSV_COLUMNS, csv_preview, read_csv
from engine.presets import _read, load_preset, preset_names

MB = 1 << 20


def refused(fn, *args, **kw) -> str:
    """The SpecError message fn raises (the test fails on any other outcome)."""
    with pytest.raises(SpecError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= 400, f"a {len(msg)}-character message: {msg[:300]}"
    return msg


def _id(value) -> str:
    """Test ids for huge parameters (pytest would print a 5 MB one in full)."""
    return short(value, 30) if not isinstance(value, list) else ""


def assert_parts(msg: str, parts):
    for part in parts:
        assert part in msg, f"{part!r} missing from: {msg}"


# ----------------------------------------------------------------------------- short()


@pytest.mark.parametrize("value", [
    "x" * 75_000_000 + "tail.csv", 10 ** 5000, -(10 ** 400), [[[[[[1]]]]]] * 10_000,
    {str(i): list(range(1000)) for i in range(1000)}, b"\x00" * 10_000, "\x00\n" * 1000,
], ids=lambda v: type(v).__name__)
def test_short_is_bounded_for_any_value(value):
    text = short(value)
    assert len(text) <= 80 and "\n" not in text


def test_short_keeps_small_values_exact_and_the_tail_of_long_strings():
    assert short("relux") == "'relux'" and short(-3) == "-3" and short(2 ** 31) == "2147483648"
    assert short(["x1", "x1"]) == "['x1', 'x1']" and short(None) == "None"
    long_path = "/tmp/" + "d" * 500 + "/nope.csv"
    assert short(long_path).endswith("nope.csv'") and "…" in short(long_path)
    assert "5,001 digits" in short(10 ** 5000)


# ----------------------------------------------------------------------------- parse_json


@pytest.mark.parametrize("data, expected", [
    (b'\xef\xbb\xbf{"seed": 3}', {"seed": 3}),  # a byte-order mark (Windows Notepad)
    ('\ufeff{"seed": 3}', {"seed": 3}),
    ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', {"a": "[" * 50}),
    ("[" * 32 + "]" * 32, json.loads("[" * 32 + "]" * 32)),
    ('{"n": 12345678901234567890, "m": -1e300}', {"n": 12345678901234567890, "m": -1e300}),
    ('{"path": "C:\\\\data\\\\x.csv"}', {"path": "C:\\data\\x.csv"}),
], ids=_id)
def test_parse_json_accepts(data, expected):
    assert parse_json(data, "config", MB) == expected


@pytest.mark.parametrize("data, parts", [
    (bytes(range(256)) * 4, ["config", "not UTF-8"]),
    (b"\xff\xfe{\x00}\x00", ["config", "not UTF-8"]),
    ("[" * 100_000 + "]" * 100_000, ["config", "100,000 levels", "at most 32"]),
    ("[" * 33 + "]" * 33, ["33 levels", "at most 32"]),
    ('{"seed": ' + "9" * 400 + "}", ["seed=", "400-digit integer", "at most 20 digits"]),
    ('{"seed": ' + "9" * 5000 + "}", ["seed=", "5,000-digit integer", "at most 20 digits"]),
    ('{"model": {"layers": [8, -' + "1" * 21 + "]}}", ["model.layers[1]=", "21-digit"]),
    ('{"optimizer": {"lr": 1' + "0" * 400 + ".0}}", ["optimizer.lr=", "64-bit float"]),
    ('{"optimizer": {"lr": 1e400}}', ["optimizer.lr=1e400", "64-bit float"]),
    ('{"optimizer": {"lr": NaN}}', ["optimizer.lr=NaN", "no NaN or Infinity"]),
    ('{"x": [Infinity]}', ["x[0]=Infinity"]),
    ("-Infinity", ["config: -Infinity is not allowed"]),
    ('{"seed": 1,}', ["not valid JSON", "line 1 column 12"]),
    ('{"a": 1,\n "b": [8,, 8]}', ["not valid JSON", "line 2"]),
    ("", ["not valid JSON"]),
    (b"x" * (MB + 1), ["config is 1 MB", "at most 1 MB"]),
    ("x" * (MB + 1), ["1,048,577 characters", "at most 1,048,576"]),
    (12, ["config must be JSON text"]),
], ids=_id)
def test_parse_json_refuses_with_a_message(data, parts):
    assert_parts(refused(parse_json, data, "config", MB), parts)


def test_a_syntax_error_is_told_apart_from_a_broken_bound():
    with pytest.raises(NotJSON):
        parse_json("relu", "--set x", 100)
    with pytest.raises(SpecError) as e:
        parse_json("9" * 30, "--set x", 100)
    assert not isinstance(e.value, NotJSON)


def test_nesting_depth_ignores_brackets_in_strings_and_escaped_quotes():
    assert nesting_depth('{"a": "\\"[[[", "b": [{"c": "]]]"}]}') == 3
    assert nesting_depth("") == 0


def test_recursion_inside_json_is_a_spec_error_too(monkeypatch):
    """The depth scan runs first; should it ever be bypassed, json's RecursionError is caught."""
    monkeypatch.setattr(inputs, "MAX_DEPTH", 10 ** 9)
    assert_parts(refused(parse_json, "[" * 100_000 + "]" * 100_000, "config", MB),
                 ["nests too deep"])


# ----------------------------------------------------------------------------- read_user_file


def _fifo(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return str(path)


def _link_to_dev_zero(tmp_path):
    path = tmp_path / "zero.json"
    os.symlink("/dev/zero", path)
    return str(path)


def _folder(tmp_path):
    return str(tmp_path)


def _big_file(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MB + 10))
    return str(path)


FILES = {
    "missing": (lambda t: str(t / "nope.json"), ["no file", "nope.json"]),
    "folder": (_folder, ["is a folder"]),
    "/dev/zero": (lambda t: "/dev/zero", ["'/dev/zero'", "system file"]),
    "/proc file": (lambda t: "/proc/self/environ", ["'/proc/self/environ'", "system file"]),
    "symlink to /dev/zero": (_link_to_dev_zero, ["zero.json", "system file"]),
    "FIFO": (_fifo, ["pipe.json", "not a regular file"]),
    "http URL": (lambda t: "http://127.0.0.1:9/x.json", ["is a URL", "local files"]),
    "s3 URL": (lambda t: "s3://bucket/x.json", ["is a URL"]),
    "too large": (_big_file, ["big.json", "at most 1 MB"]),
    "NUL in the name": (lambda t: "a\x00b", ["cannot open"]),
    "name too long": (lambda t: "x" * 100_000, ["cannot open", "…"]),
    "not a path": (lambda t: 12, ["must be a file path"]),
    "bytes path": (lambda t: b"/etc/passwd", ["must be a file path"]),
}


@pytest.mark.parametrize("name", list(FILES))
def test_read_user_file_refuses(tmp_path, name):
    make, parts = FILES[name]
    path = make(tmp_path)
    result = {}

    def read():  # in a thread: a FIFO opened for reading would block forever
        try:
            read_user_file(path, "config file", MB)
        except SpecError as e:
            result["msg"] = str(e)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["other"] = e
    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"read_user_file({name}) hangs"
    assert "other" not in result, result.get("other")
    assert len(result["msg"]) <= 400
    assert_parts(result["msg"], ["config file", *parts])


def test_read_user_file_reads_a_regular_file_at_its_limit(tmp_path):
    path = tmp_path / "ok.json"
    path.write_bytes(b"x" * 100)
    assert read_user_file(path, "config file", 100) == b"x" * 100
    assert "at most 99 bytes" in refused(read_user_file, path, "config file", 99)


# ----------------------------------------------------------------------------- inflate


def test_inflate_round_trip_and_limit():
    data = json.dumps({"seed": 1, "layers": list(range(100))}).encode()
    assert inflate(zlib.compress(data), len(data)) == data
    assert "too large" in refused(inflate, zlib.compress(data), len(data) - 1)


def test_a_zlib_bomb_stops_at_the_limit():
    bomb = zlib.compress(b'{"seed":' + b" " * 50 * MB + b"0}", 9)
    assert len(bomb) < 100_000  # 50 MB in a link-sized blob
    assert_parts(refused(inflate, bomb, 256 * 1024, "the link"),
                 ["the link is too large", "256 KB"])


@pytest.mark.parametrize("data", [b"not zlib at all", zlib.compress(b'{"seed": 1}')[:-4], b""], ids=_id)
def test_damaged_compressed_data(data):
    assert "damaged" in refused(inflate, data, 1000)


# ----------------------------------------------------------------------------- share links


def test_link_decoder_bounds_and_names_the_key():
    from ui.state import MAX_LINK_CHARS
    from ui.state import decode_link as decode
    from ui.state import encode_link as encode

    def link(raw: bytes) -> str:
        import base64
        return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")
    assert "too long" in refused(decode, "A" * (MAX_LINK_CHARS + 1))
    assert "too large" in refused(decode, link(b'{"seed":' + b" " * 15_000_000 + b"0}"))
    assert "seed=<a 400-digit integer>" in refused(decode, link(b'{"seed":' + b"9" * 400 + b"}"))
    assert "nests" in refused(decode, link(b"[" * 100_000))
    assert "damaged" in refused(decode, "é")
    msg = refused(decode, link(json.dumps({"data": {"name": "x" * 50_000}}).encode()))
    assert "data.name" in msg and "x" * 100 not in msg
    spec = ExperimentSpec.from_dict({"seed": 4, "model": {"layers": [8, 3]}})
    assert decode(encode(spec)) == spec.canonical()


def test_the_largest_reasonable_link_fits_with_margin():
    """200 layers, every override set, a long CSV path: the limits must leave room for it."""
    from ui.state import MAX_LINK_CHARS, MAX_LINK_JSON
    from ui.state import decode_link as decode
    from ui.state import encode_link as encode
    r = random.Random(0)
    layers = [{"type": "residual", "units": r.randint(1, 4096), "depth": r.randint(1, 4),
               "activation": {"name": "elu", "alpha": round(r.uniform(0.1, 5), 6)},
               "init": {"name": "uniform", "a": round(-r.random(), 6), "b": round(r.random(), 6)},
               "bias_init": round(r.uniform(-1, 1), 6)} for _ in range(200)]
    spec = ExperimentSpec.from_dict({
        "data": {"name": "csv", "path": "/srv/uploads/" + "a" * 200 + ".csv", "target": "y" * 100},
        "model": {"layers": layers}, "optimizer": {"name": "adam", "lr": 0.00123,
                                                   "betas": [0.85, 0.995], "amsgrad": True}})
    code = encode(spec)
    assert len(code) * 2 < MAX_LINK_CHARS
    assert len(zlib.decompress(__import__("base64").urlsafe_b64decode(code + "==="))) * 4 \
        < MAX_LINK_JSON
    assert decode(code) == spec.canonical()


# ----------------------------------------------------------------------------- config files


def test_a_config_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"seed": 5}).encode())
    assert load_spec(str(path)).seed == 5
    assert load_spec(path).seed == 5  # a pathlib.Path as well


@pytest.mark.parametrize("content, parts", [
    (bytes(range(256)), ["config file", "bad.json", "not UTF-8"]),
    (b'{"seed": ' + b"9" * 5000 + b"}", ["seed=<a 5,000-digit integer>"]),
    (b"[" * 100_000, ["nests 100,000 levels"]),
    (b'{"data": {"features": [["x1"]]}}', ["data.features", "['x1']"]),
    (b"x" * (2 * MB), ["bad.json", "2 MB", "at most 1 MB"]),
], ids=_id)
def test_bad_config_files(tmp_path, content, parts):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert_parts(refused(load_spec, str(path)), parts)


# ----------------------------------------------------------------------------- fuzzing from_dict

VALID = {
    "seed": 1, "device": "cpu",
    "data": {"name": "spiral", "n": 200, "noise": 0.1, "classes": 3, "features": ["x1", "x2"],
             "normalize": "standard", "val_fraction": 0.2, "test_fraction": 0.0},
    "model": {"activation": "relu", "init": {"name": "normal", "std": 0.1}, "bias_init": 0.0,
              "layers": [8, {"type": "linear", "units": 4, "activation": "tanh",
                             "init": "xavier_uniform", "bias_init": 0.1},
                         {"type": "dropout", "p": 0.1}, {"type": "residual", "units": 4,
                                                         "depth": 2}],
              "output": "xavier_normal"},
    "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-8},
    "schedule": {"name": "step", "step_size": 10, "gamma": 0.5},
    "regularization": {"l1": 0.0, "l2": 0.01},
    "training": {"batch_size": 16, "steps": 10, "grad_clip": {"norm": 1.0},
                 "early_stopping": {"patience": 3}, "eval_every": 0},
    "diagnostics": {"every": 5},
}
ATOMS = [None, True, False, 0, 1, -1, 3, 2 ** 31, 2 ** 63, 10 ** 400, 10 ** 5000, -(10 ** 30),
         0.5, -0.0, 1e308, 5e-324, math.nan, math.inf, -math.inf, "", "x", "relu", "linear",
         "name", "x1", "norm", "csv", "a" * 100_000, "\x00", "é\n", [1] * 100_000,
         {"name": "relu", "k" * 5000: 1}, {(1, 2): 3}, {1: 2}, (1, 2), b"bytes", {"x1"}]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(VALID) if p]


def _value(r: random.Random, depth=0):
    k = r.random()
    if depth > 3 or k < 0.5:
        return r.choice(ATOMS)
    if k < 0.6:  # deep nesting
        v = r.choice(ATOMS)
        for _ in range(r.choice([2, 40, 2000])):
            v = [v] if r.random() < 0.5 else {"name": v}
        return v
    if k < 0.8:
        return [_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    keys = ["name", "type", "units", "norm", "value", "patience", "lr", "x1", "", "zz", 7]
    return {r.choice(keys): _value(r, depth + 1) for _ in range(r.randint(0, 3))}


def _mutate(r: random.Random, config: dict) -> dict:
    config = copy.deepcopy(config)
    for _ in range(r.randint(1, 3)):
        path = r.choice(PATHS)
        node = config
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a parent
        if isinstance(node, dict) and r.random() < 0.2:
            if r.random() < 0.5:
                del node[path[-1]]
            else:
                node[r.choice([1, (1, 2), None, "extra", 2.5, "k" * 10_000])] = _value(r)
        else:
            node[path[-1]] = _value(r)
    return config


def test_fuzzed_configs_only_ever_raise_short_spec_errors():
    """Values of every JSON (and Python) type injected at random paths of a valid config.
    Before the fixes this found: RecursionError from repr() of deep values in messages
    (Param.check, _require_mapping, Registry lookup, layers, grad_clip), TypeError from a list
    as a feature name (unhashable), OverflowError from float() of a 400-digit integer, and
    messages of up to 75 MB echoing the value."""
    r = random.Random(1234)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(3000):
        config = _mutate(r, VALID)
        try:
            ExperimentSpec.from_dict(config)
            outcomes["ok"] += 1
        except SpecError as e:
            msg = str(e)
            assert len(msg) <= 400, f"a {len(msg)}-character message: {msg[:300]}"
            outcomes["refused"] += 1
    assert outcomes["refused"] > 2000 and outcomes["ok"] > 10  # the fuzz reaches both sides


def test_fuzzed_json_text_only_ever_raises_spec_errors():
    """Tokens JSON readers choke on, spliced into a valid config's text."""
    r = random.Random(99)
    text = json.dumps(VALID)
    tokens = ["9" * 400, "-" + "9" * 5000, "1e400", "NaN", "-Infinity", "[" * 5000, "{" * 40,
              '"\\ud800"', '"\\u0000"', "\ufeff", "\x00", "é", "1" + "0" * 400 + ".5", "[]", "{}",
              '"' + "x" * 10_000 + '"', "null", "true", ",", ":", "]]]]"]
    for _ in range(1500):
        at = r.randrange(len(text))
        crafted = text[:at] + r.choice(tokens) + text[at + r.randint(0, 8):]
        try:
            ExperimentSpec.from_json(crafted if r.random() < 0.5 else crafted.encode("utf-8",
                                                                                       "replace"))
        except SpecError as e:
            assert len(str(e)) <= 400, str(e)[:300]


@pytest.mark.parametrize("config, parts", [
    ({"data": {"features": [["x1"]]}}, ["data.features", "unknown feature ['x1']"]),
    ({"data": {"features": [{"a": 1}]}}, ["data.features", "unknown feature"]),
    ({"model": {"layers": [[8]]}}, ["model.layers[0]", "object"]),
    ({"model": {"layers": [False]}}, ["model.layers[0]", "object"]),
    ({"model": {"activation": {"name": ["relu"]}}}, ["model.activation", "unknown activation"]),
    ({"model": {"activation": {"name": {"relu": 1}}}}, ["unknown activation {'relu': 1}"]),
    ({"loss": {"name": None}}, ["loss", "unknown loss None"]),
    ({"device": ["cpu"]}, ["config.device=['cpu']"]),
    ({"seed": 10 ** 400}, ["config.seed=<an integer of about 401 digits>", "2147483647"]),
    ({"seed": 10 ** 5000}, ["config.seed=<an integer of about 5,001 digits>"]),
    ({"optimizer": {"name": "sgd", "lr": 10 ** 400}}, ["optimizer.lr=<an integer", "<= 10"]),
    ({"optimizer": {"name": "sgd", "lr": -(10 ** 400)}}, ["optimizer.lr=", "> 0"]),
    ({"training": {"grad_clip": 10 ** 400}}, ["training.grad_clip.norm=<an integer"]),
    ({"training": {"early_stopping": 10 ** 400}}, ["training.early_stopping.patience="]),
    ({"data": {"name": "circle", "classes": [[[[[[[[[[3]]]]]]]]]]}}, ["data.classes=[[[", "2"]),
    ({"model": {"layers": [8] * 10 ** 6}}, ["1000000 layers", "at most 200"]),
    ({"data": {"name": "x" * 10 ** 6}}, ["data.name", "unknown dataset", "…"]),
    ({"data": {"name": "csv", "path": "p" * 10_000, "target": "y"}},
     ["data.path=", "at most 4,096 characters"]),
    ({1: 2}, ["unknown key config.1"]),
    ({("a", "b"): 2}, ["unknown key config.('a', 'b')"]),
    ({"k" * 10_000: 1}, ["unknown key config.'kkk", "allowed keys in config"]),
    ({"optimizer": {"name": "sgd", "k\n" * 100: 1}}, ["unknown parameter optimizer.'k\\nk"]),
], ids=lambda v: short(v, 40) if isinstance(v, dict) else "")
def test_odd_types_get_a_message_naming_the_key(config, parts):
    assert_parts(refused(ExperimentSpec.from_dict, config), parts)


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["../../x", "../../../../etc/passwd", "./xor_tanh",
                                  "././xor_tanh", "xor_tanh.json", "XOR_TANH", "", "p" * 10_000,
                                  "xor_tanh\x00", None, 5, ["xor_tanh"], {"xor_tanh": 1}],
                         ids=lambda v: short(v, 20))
def test_only_bundled_presets_load(name):
    before = _read.cache_info().currsize
    with pytest.raises(SpecError) as e:
        load_preset(name)
    msg = str(e.value)
    assert msg.startswith("unknown preset ") and "`python -m engine presets` lists all" in msg
    assert len(msg) < 200 and "p" * 100 not in msg  # one line, however many presets there are
    if isinstance(name, str) and "xor" in name.lower():
        assert "did you mean xor_tanh" in msg
    assert _read.cache_info().currsize == before, "a crafted name reached the file cache"


def test_every_bundled_preset_still_loads():
    names = preset_names()
    assert "xor_tanh" in names and len(names) == len(set(names)) >= 20
    for name in names:
        preset = load_preset(name)
        assert preset["name"] == name and "config" in preset


# ----------------------------------------------------------------------------- CSV tables


def table_rows(rows=20):
    return [("a", "b", "label")] + [(f"{i * 0.5}", f"{(i * 7) % 5 - 2.25}", f"{i % 3}")
                                    for i in range(rows)]


def write_table(tmp_path, rows, sep=",", name="t.csv", line_end="\n"):
    path = tmp_path / name
    path.write_text(line_end.join(sep.join(r) for r in rows) + line_end)
    return str(path)


@pytest.mark.parametrize("sep, line_end", [(";", "\n"), ("\t", "\n"), (",", "\r\n"), (";", "\r")])
def test_semicolon_and_tab_files_give_the_comma_files_tensors(tmp_path, sep, line_end):
    x, y = read_csv(write_table(tmp_path, table_rows(), ","), "label", "classification")
    x2, y2 = read_csv(write_table(tmp_path, table_rows(), sep, "other.csv", line_end), "label",
                      "classification")
    assert x.shape == (20, 2)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_a_quoted_header_with_commas_in_a_semicolon_file(tmp_path):
    rows = [('"weight, kg"', '"height, m"', "label")] + table_rows()[1:]
    x, _ = read_csv(write_table(tmp_path, rows, ";"), "label", "classification")
    assert x.shape == (20, 2)


def test_a_byte_order_mark_csv_loads(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(",".join(r) for r in table_rows()).encode())
    x, _ = read_csv(str(path), "label", "classification")  # else the first column is '\ufeffa'
    assert x.shape == (20, 2)


@pytest.mark.parametrize("cell, parts", [
    ("inf", ["column 'b'", "1 infinite", "line 5"]),
    ("-inf", ["column 'b'", "line 5"]),
    ("1e400", ["column 'b'", "line 5"]),
    ("1e39", ["column 'b'", "line 5", "3.4e+38"]),  # finite, but inf as a float32 tensor
])
def test_infinite_cells_are_refused_by_column_and_line(tmp_path, cell, parts):
    rows = table_rows()
    rows[4] = (rows[4][0], cell, rows[4][2])  # data row 4 = line 5
    assert_parts(refused(read_csv, write_table(tmp_path, rows), "label", "regression"), parts)


def test_a_too_wide_table_is_refused_before_parsing(tmp_path):
    """160,000 columns took pandas 70 s and 1.7 GB before the header was checked."""
    width = 160_000
    path = tmp_path / "wide.csv"
    line = ",".join("1" for _ in range(width))
    path.write_text(",".join(f"c{i}" for i in range(width)) + "\n" + (line + "\n") * 10)
    for read in (lambda: read_csv(str(path), "c0", "regression"),
                 lambda: csv_preview(str(path), 50 * MB)):
        assert_parts(refused(read), ["data.path", "160,000 columns",
                                     f"at most {MAX_CSV_COLUMNS:,}"])


def test_too_many_rows(tmp_path, monkeypatch):
    from engine.data import datasets as data
    monkeypatch.setattr(data, "MAX_CSV_ROWS", 30)
    assert read_csv(write_table(tmp_path, table_rows(30)), "label", "classification")[0].shape \
        == (30, 2)
    assert_parts(refused(read_csv, write_table(tmp_path, table_rows(31)), "label",
                         "classification"), ["more than 30 rows"])


@pytest.mark.parametrize("make, parts", [
    (lambda t: "http://127.0.0.1:9/x.csv", ["data.path", "is a URL"]),
    (lambda t: "/dev/zero", ["data.path", "system file"]),
    (lambda t: str(t), ["data.path", "is a folder"]),
    (lambda t: (t / "latin1.csv").write_bytes("a,é,label\n".encode("latin-1")) and
     str(t / "latin1.csv"), ["data.path", "not UTF-8", "byte 3"]),
    (lambda t: (t / "big.csv").write_bytes(b"a,b\n" * (3 * MB)) and str(t / "big.csv"),
     ["data.path", "12 MB", "at most 2 MB"]),
])
def test_csv_files_refused(tmp_path, monkeypatch, make, parts):
    monkeypatch.setenv("NETLAB_MAX_CSV_MB", "2")
    assert_parts(refused(read_csv, make(tmp_path), "label", "classification"), parts)


def test_the_csv_cap_setting_must_be_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLAB_MAX_CSV_MB", "lots")
    assert_parts(refused(read_csv, write_table(tmp_path, table_rows()), "label",
                         "classification"), ["NETLAB_MAX_CSV_MB='lots'", "integer >= 1"])


def test_a_file_like_source_is_bounded_too(tmp_path):
    text = "\n".join(",".join(r) for r in table_rows()).encode()
    x, _ = read_csv(io.BytesIO(text), "label", "classification")
    assert x.shape == (20, 2)
    assert "larger than" in refused(read_csv, io.BytesIO(text), "label", "classification",
                                    max_bytes=100)


def test_long_column_names_are_shortened_in_messages(tmp_path):
    rows = [("a" * 50_000, "b", "label")] + table_rows()[1:]
    msg = refused(read_csv, write_table(tmp_path, rows), "nope", "classification")
    assert "data.target" in msg and "'nope'" in msg


def test_preview_reads_the_first_rows_only(tmp_path):
    rows = table_rows(100)
    rows[60] = ("1", "2", "3", "4", "5")  # a broken row past the preview
    path = write_table(tmp_path, rows, ";")
    head, columns = csv_preview(path, 5 * MB)
    assert columns == ["a", "b", "label"] and len(head) == 5
    assert head["a"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert "cannot read the file as CSV" in refused(read_csv, path, "label", "classification")


@pytest.mark.parametrize("content, parts", [
    (b"a,\xff,label\n1,2,3\n", ["not UTF-8"]),
    (b"a,b\n" * MB, ["at most 1 MB"]),
    (b"", ["cannot read the file as CSV"]),
], ids=_id)
def test_preview_refuses_with_the_same_messages(tmp_path, content, parts):
    path = tmp_path / "p.csv"
    path.write_bytes(content)
    assert_parts(refused(csv_preview, str(path), MB), ["data.path", *parts])
