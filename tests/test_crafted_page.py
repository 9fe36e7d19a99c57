"""Crafted links and uploads against the playground (AppTest): every one gets a short message that
says what is wrong, never a traceback, never a server file, never another browser's run or
upload, and the server's memory stays bounded.

AppTest hands an upload to the page without the browser's size check, as a rewritten request
does, so the page's own limits are what these tests see.

The engine side of the same inputs (config files, CLI arguments, CSV files) is in
tests/test_inputs.py and tests/test_cli.py.
"""
import base64
import json
import tracemalloc
import zlib

import pytest
from streamlit.testing.v1 import AppTest

from engine import ExperimentSpec
from tests.test_app import (  # noqa: F401
    APP,
    button,
    figures,
    fresh_server,
    live_registries,
    spec_of,
    upload_store,
)
from ui import state as S

MAX_MESSAGE = 600  # characters: a message that echoes a crafted value is a bug (it froze tabs)


def link(raw: bytes) -> str:
    """?cfg= as ui/state.py writes it, around arbitrary bytes."""
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def config_link(text: str) -> str:
    return link(text.encode())


def valid_config(**changes) -> dict:
    d = ExperimentSpec().to_dict()
    for path, value in changes.items():
        node = d
        *head, last = path.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    return d


def open_page(query: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    return at


def messages(at) -> list[str]:
    return [e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind)]


def page_text(at) -> str:
    parts = messages(at) + [m.value for m in at.markdown] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def assert_clean(at):
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    for leak in ("Traceback", 'File "/', "site-packages", "root:x:0"):
        assert leak not in text, f"{leak!r} shown in the page:\n{text[:2000]}"
    for m in messages(at):
        assert len(m) <= MAX_MESSAGE, f"a {len(m)}-character message: {m[:200]}..."


BIG_INT = "9" * 400
DEEP = "[" * 100_000 + "]" * 100_000
CASES = {
    # name: (query parameters, expected message substring)
    "cfg not base64": ({"cfg": "not-a-real-spec"}, "could not be loaded"),
    "cfg too long (97 KB)": ({"cfg": "A" * 97_000}, "too long"),
    "cfg zlib bomb": ({"cfg": link(b'{"seed":' + b" " * 15_000_000 + b"0}")}, "too large"),
    "cfg not UTF-8": ({"cfg": link(b"\xff\xfe\x00garbage")}, "could not be loaded"),
    "cfg not an object": ({"cfg": config_link("[1, 2, 3]")}, "must be an object"),
    "cfg 400-digit integer": ({"cfg": config_link('{"seed": ' + BIG_INT + "}")}, "seed"),
    "cfg 400-digit float": ({"cfg": config_link('{"optimizer": {"name": "sgd", "lr": 1' +
                                                "0" * 400 + ".0}}")}, "optimizer.lr"),
    "cfg 100,000-deep nesting": ({"cfg": config_link(DEEP)}, "nest"),
    "cfg features [[x1]]": ({"cfg": config_link(json.dumps(valid_config(
        **{"data.features": [["x1"]]})))}, "data.features"),
    "cfg 50 KB value echoed": ({"cfg": config_link(json.dumps(valid_config(
        **{"data.name": "x" * 50_000})))}, "data.name"),
    "cfg NaN learning rate": ({"cfg": config_link('{"optimizer": {"name": "sgd", "lr": NaN}}')},
                              "could not be loaded"),
    "cfg server file as CSV": ({"cfg": S.encode_link(ExperimentSpec.from_dict(
        {"data": {"name": "csv", "path": "/etc/passwd", "target": "x"}}))}, "Upload a CSV"),
    "preset path traversal": ({"preset": "../../../../etc/passwd"}, "names no known preset"),
    "preset relative name": ({"preset": "./xor_tanh"}, "names no known preset"),
    "preset json file name": ({"preset": "xor_tanh.json"}, "names no known preset"),
    "preset 10 KB name": ({"preset": "p" * 10_000}, "names no known preset"),
    "run id not hex": ({"run": "../../etc"}, "not valid"),
    "run id unknown": ({"run": "0" * 32}, "no longer on this server"),
    "run id unknown with its cfg": ({"run": "0" * 32, "cfg": S.encode_link(ExperimentSpec())},
                                    "its experiment is shown"),
    "control token without run": ({"control": "x" * 40}, "no longer valid"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow
def test_a_crafted_link_gets_a_clear_message(name):
    query, expected = CASES[name]
    at = open_page(query)
    assert_clean(at)
    assert any(expected in m for m in messages(at)), (expected, messages(at))
    assert spec_of(at) is not None and button(at, "Start"), "the page still works"


@pytest.mark.slow
def test_a_zlib_bomb_link_is_refused_without_inflating_it():
    code = link(b'{"seed":' + b" " * 15_000_000 + b"0}")
    assert len(code) < 20_000, "the bomb fits in an accepted link length"
    open_page({})  # a cold first page run allocates ~100 MB of its own (imports, caches)
    tracemalloc.start()
    try:
        at = open_page({"cfg": code})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_clean(at)
    assert peak < 10_000_000, f"{peak / 1e6:.0f} MB allocated for a 15 MB bomb"


@pytest.mark.slow
def test_every_preset_name_is_read_once():
    """?preset=./xor_tanh, ././xor_tanh, ... each filled the preset cache before."""
    from engine.presets import _read, preset_names
    before = _read.cache_info().currsize
    for i in range(1, 30):
        open_page({"preset": "./" * i + "xor_tanh"})
    assert _read.cache_info().currsize <= max(before, len(preset_names()))


# ----------------------------------------------------------------------------- run ownership


def owner_with_a_run() -> tuple[AppTest, object]:
    owner = open_page({})
    button(owner, "Step").click().run()
    run = live_registries()[-1].get(owner.session_state["run_id"])
    assert run is not None and run.trainer.step_count == 1
    return owner, run


def test_a_second_browser_watches_a_run_but_cannot_control_it():
    owner, run = owner_with_a_run()
    watcher = open_page({"run": run.id, "cfg": owner.query_params["cfg"]})
    assert_clean(watcher)
    assert any("watching a run that another browser controls" in m for m in messages(watcher))
    assert watcher.session_state["run_id"] == run.id, "the watcher sees the run"
    assert button(watcher, "Pause").disabled
    # the attack from the issue: open the run's address with your own settings, press Reset
    watcher.number_input(key="w.optimizer.lr").set_value(0.5).run()
    button(watcher, "Reset").click().run()
    assert_clean(watcher)
    assert watcher.session_state["run_id"] != run.id, "the watcher got a run of its own"
    assert live_registries()[-1].get(run.id) is run, "the owner's run is untouched"
    assert run.trainer.step_count == 1 and len(run.trainer.history) == 1
    button(watcher, "Step").click().run()
    assert run.trainer.step_count == 1, "Step acted on the watcher's own run"


def test_the_owner_keeps_control_and_can_share_it_on_purpose():
    owner, run = owner_with_a_run()
    button(owner, "Make a control link").click().run()
    assert_clean(owner)
    rid, token = owner.session_state["control_token"]
    assert rid == run.id
    guest = open_page({"run": run.id, "control": token})
    assert_clean(guest)
    assert any("can now control" in m for m in messages(guest))
    assert not any("watching" in m for m in messages(guest))
    button(guest, "Step").click().run()
    assert run.trainer.step_count == 2, "the guest's Step advanced the shared run"
    assert "control" not in guest.query_params, "the token leaves the address bar at once"
    # a new link cancels the old one
    button(owner, "Make a control link").click().run()
    late = open_page({"run": run.id, "control": token})
    assert any("no longer valid" in m for m in messages(late))


def test_a_link_with_another_browsers_upload_is_not_read():
    owner = open_page({})
    path = upload_store().save(owner.session_state["browser_id"],
                               ("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))).encode())
    spec = ExperimentSpec.from_dict({"data": {"name": "csv", "path": path, "target": "label"}})
    stranger = open_page({"cfg": S.encode_link(spec)})
    assert_clean(stranger)
    assert any("Upload a CSV" in m for m in messages(stranger))
    assert stranger.session_state.get("w.data.path") in (None, "")


# ----------------------------------------------------------------------------- uploads


def rows_csv(n: int, sep: str = ",", header=("a", "b", "label")) -> bytes:
    lines = [sep.join(header)] + [sep.join((str(i % 17), str((i * 7) % 5), str(i % 2)))
                                  for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


WIDE = ",".join(f"c{i}" for i in range(160_000)).encode() + b"\n" + \
    b"\n".join(b",".join(b"1" for _ in range(160_000)) for _ in range(10)) + b"\n"
UPLOADS = {
    # name: (file content, expected message substring; None: it must train)
    "30 MB file": (b"a,b,label\n" + b"1,2,0\n" * 5_000_000, "up to 5 MB"),
    "160,000 columns": (WIDE, "160,000 columns; at most 1,000"),
    "250,000 rows": (rows_csv(250_000), "more than 200,000 rows"),
    "inf cell": (rows_csv(20).replace(b"\n3,", b"\ninf,", 1), "infinite values"),
    "text column": (rows_csv(20).replace(b"\n3,", b"\nthree,", 1), "is not numeric"),
    "binary file": (bytes(range(256)) * 40, "not UTF-8"),
    "empty file": (b"", "cannot read the file as CSV"),
    "semicolons": (rows_csv(40, ";"), None),
    "tabs": (rows_csv(40, "\t"), None),
    "byte-order mark": (b"\xef\xbb\xbf" + rows_csv(40), None),
}


def upload(at, content: bytes):
    at.selectbox(key="w.data.name").set_value("csv").run()
    at.file_uploader[0].upload("table.csv", content, "text/csv").run()


@pytest.mark.parametrize("name", list(UPLOADS))
@pytest.mark.slow
def test_a_crafted_upload_gets_a_clear_message(name):
    content, expected = UPLOADS[name]
    at = open_page({})
    tracemalloc.start()
    try:
        upload(at, content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_clean(at)
    # the page's own work on the file: the upload's bytes (held by Streamlit) plus a bounded
    # amount (the 160,000-column file took 1.7 GB before its width was checked first)
    assert peak < 3 * len(content) + 150_000_000, f"{peak / 1e6:.0f} MB for {name}"
    if expected is None:
        assert not at.error, messages(at)
        button(at, "Step").click().run()
        assert_clean(at)
        run = live_registries()[-1].get(at.session_state["run_id"])
        assert run.trainer.step_count == 1 and run.trainer.data.x_train.shape[1] == 2
    else:
        assert any(expected in m for m in messages(at)), (expected, messages(at))


def test_a_big_table_is_thinned_in_the_scatter():
    at = open_page({})
    upload(at, rows_csv(100_000))
    assert_clean(at)
    fig = figures(at)[-1]
    points = sum(len(trace.get("x") or []) for trace in fig["data"])
    assert 0 < points <= 2000, points


def test_a_forgotten_run_takes_its_upload_with_it():
    at = open_page({})
    upload(at, rows_csv(40))
    button(at, "Step").click().run()
    registry = live_registries()[-1]
    run = registry.get(at.session_state["run_id"])
    path = run.spec.data.path
    assert upload_store().owns(at.session_state["browser_id"], path)
    registry.drop(run.id)
    import os
    assert not os.path.exists(path), "the upload outlived its run"
    at.run()
    assert_clean(at)


def test_the_buttons_ask_for_a_readable_csv_first():
    at = open_page({})
    at.selectbox(key="w.data.name").set_value("csv").run()
    for label in ("Step", "Start", "Reset"):
        button(at, label).click().run()
        assert_clean(at)
        assert any("Upload a CSV file the page can read" in m for m in messages(at)), messages(at)
        assert not any("data.path=None" in m or "data.target=None" in m for m in messages(at))
    upload(at, WIDE)
    button(at, "Step").click().run()
    errors = [m for m in messages(at) if "160,000 columns" in m]
    assert len(errors) == 1 and not errors[0].startswith("Cannot read this CSV: data.path"), errors
    assert not any("data.target=None" in m for m in messages(at)), messages(at)


@pytest.mark.parametrize("url, address", [("http://127.0.0.1:8501", "http://127.0.0.1:8501/"),
                                          ("http://h/playground?cfg=x&run=y", "http://h/playground"),
                                          (None, "/")])
def test_share_links_start_from_the_page_address(url, address):
    from ui.panels import page_address
    assert page_address(url) == address


@pytest.mark.slow
def test_a_watchers_fix_never_trains_on_the_owners_upload():
    """A fix button builds from the watched run's spec, which names the owner's file: the one
    check in new_run refuses it (the watcher owned a run on the victim's table before)."""
    owner = open_page({})
    upload(owner, rows_csv(60))
    ids = owner.session_state["layer_ids"]
    at_layers = {f"w.layer.{i}.units": 8 for i in ids}
    for key, value in at_layers.items():
        owner.number_input(key=key).set_value(value).run()
    owner.selectbox(key="w.model.activation").set_value("sigmoid").run()
    for _ in range(8):
        button(owner, "+ linear").click().run()
    owner.number_input(key="w.training.log_every").set_value(1).run()
    for _ in range(3):  # a finding needs evidence on three logged rows
        button(owner, "Step").click().run()
    run = live_registries()[-1].get(owner.session_state["run_id"])
    fixes = run.trainer.history.last["health"].get("fixes") or []
    assert fixes, run.trainer.history.last["health"]
    watcher = open_page({"run": run.id, "cfg": owner.query_params["cfg"]})
    fix = next(b for b in watcher.button if b.key and b.key.startswith("fix."))
    fix.click().run()
    assert_clean(watcher)
    assert any("Upload a CSV file the page can read" in m for m in messages(watcher))
    mine = [r for r in live_registries()[-1].runs() if r.owner == watcher.session_state["browser_id"]]
    assert not mine, [r.spec.data.path for r in mine]


def test_share_links_leave_the_upload_path_out():
    at = open_page({})
    upload(at, rows_csv(40))
    path = at.session_state["w.data.path"]
    shared = S.decode_link(S.share_query(at.session_state["spec"])[len("?cfg="):])
    assert shared.data.path == S.SHARED_PATH and path not in S.share_query(at.session_state["spec"])
    stranger = open_page({"cfg": S.share_query(at.session_state["spec"])[len("?cfg="):]})
    assert_clean(stranger)
    assert any("Upload a CSV" in m for m in messages(stranger))


@pytest.mark.parametrize("prefix", ["\n", "\r\n", " \n", '"x\ny",'])
def test_the_column_cap_holds_after_blank_lines_and_quoted_newlines(prefix):
    at = open_page({})
    upload(at, prefix.encode() + WIDE)
    assert_clean(at)
    assert any("columns; at most 1,000" in m for m in messages(at)), messages(at)


def test_a_forgotten_runs_file_can_be_stored_again_from_the_same_upload():
    at = open_page({})
    upload(at, rows_csv(40))
    button(at, "Step").click().run()
    registry = live_registries()[-1]
    registry.drop(at.session_state["run_id"])
    at.run()  # the uploader still holds the file: the page stores it again
    assert upload_store().owns(at.session_state["browser_id"], at.session_state["w.data.path"])
    button(at, "Step").click().run()
    assert_clean(at)
    # the dropped run came back from the store at its step (1), and stepped on from there
    assert registry.get(at.session_state["run_id"]).trainer.step_count == 2


def test_the_owner_can_take_shared_control_back():
    owner, run = owner_with_a_run()
    button(owner, "Make a control link").click().run()
    _, token = owner.session_state["control_token"]
    guest = open_page({"run": run.id, "control": token})
    assert run.can_control(guest.session_state["browser_id"])
    button(owner, "Stop sharing control").click().run()
    assert_clean(owner)
    assert not run.can_control(guest.session_state["browser_id"]) and run.can_control(
        owner.session_state["browser_id"])
    button(guest, "Step").click().run()
    assert run.trainer.step_count == 1, "the guest's Step no longer reaches the owner's run"
    assert guest.session_state["run_id"] != run.id
    late = open_page({"run": run.id, "control": token})
    assert any("no longer valid" in m for m in messages(late))


def test_a_link_naming_a_readable_server_file_never_shows_its_contents(tmp_path):
    """Found in review: the export panel read the linked path (to size the model) and showed
    the file's first line in its error message."""
    private = tmp_path / "private.csv"
    private.write_text("secret_alpha,secret_beta\n" + "1,2\n" * 20)
    spec = ExperimentSpec.from_dict({"data": {"name": "csv", "path": str(private),
                                              "target": "nope"}})
    at = open_page({"cfg": S.encode_link(spec)})
    assert_clean(at)
    assert "secret_alpha" not in page_text(at)
    assert any("Upload a CSV" in m for m in messages(at))


def test_downloads_name_an_uploaded_table_by_a_placeholder(monkeypatch):
    import streamlit

    offered = []
    original = streamlit.download_button

    def recording(label, data, *args, **kwargs):
        offered.append((label, data))
        return original(label, data, *args, **kwargs)
    monkeypatch.setattr(streamlit, "download_button", recording)
    at = open_page({})
    path = upload_store().save(at.session_state["browser_id"],
                               ("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n"
                                                        for i in range(30))).encode())
    at.selectbox(key="w.data.name").set_value("csv").run()
    at.session_state["w.data.path"] = path
    at.run()
    assert_clean(at)
    texts = {label: data for label, data in offered}
    assert {"Download config JSON", "Download PyTorch script"} <= set(texts), list(texts)
    for label, data in texts.items():
        assert path not in data and S.SHARED_PATH in data, label
