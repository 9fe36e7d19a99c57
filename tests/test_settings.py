"""NETLAB_* settings (serve/settings.py): a bad value stops the server with a one-line message
instead of falling back to a default nobody chose; an unknown name is named with its likely
meaning."""
import re
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from serve import settings
from serve.caps import Caps
from serve.worker_host import cores, worker_count
from tests.conftest import ROOT


def test_every_default_is_allowed_by_its_own_rule():
    for name, s in settings.SETTINGS.items():
        assert settings.get(name, {}) == s.default
        if s.default not in ("", "auto"):
            assert s.parse(str(s.default)) == s.default, name


def test_caps_read_the_settings_when_made(monkeypatch):
    monkeypatch.setenv("NETLAB_MAX_TRAINERS", "5")
    monkeypatch.setenv("NETLAB_SHARED_DUTY", "0.25")
    caps = Caps()
    assert caps.max_trainers == 5 and caps.shared_duty == 0.25 and caps.max_runs == 64


@pytest.mark.parametrize("name, value, allowed", [
    ("NETLAB_MAX_TRAINERS", "eight", "a whole number >= 1"),
    ("NETLAB_MAX_TRAINERS", "0", "a whole number >= 1"),
    ("NETLAB_MAX_TRAINERS", "2.5", "a whole number >= 1"),
    ("NETLAB_SHARED_DUTY", "1.5", "a number > 0 and <= 1"),
    ("NETLAB_SHARED_DUTY", "nan", "a number > 0 and <= 1"),
    ("NETLAB_GRACE_S", "-1", "a number > 0"),
    ("NETLAB_WORKERS", "two", "'auto' or a whole number >= 0"),
    ("NETLAB_MAX_UPLOAD_MB", "5MB", "a whole number >= 1"),
])
def test_a_bad_value_is_named_with_what_is_allowed(name, value, allowed):
    with pytest.raises(settings.SettingError) as e:
        settings.get(name, {name: value})
    message = str(e.value)
    assert message.startswith(f"{name}={value!r} is not allowed") and allowed in message
    assert "\n" not in message and len(message) < 300


def test_every_bad_value_is_listed_at_once():
    env = {"NETLAB_MAX_TRAINERS": "eight", "NETLAB_WORKERS": "two", "NETLAB_MAX_RUNS": "10"}
    found = settings.problems(env)
    assert [line.split("=")[0] for line in found] == ["NETLAB_WORKERS", "NETLAB_MAX_TRAINERS"]
    assert settings.problems({"NETLAB_WORKERS": "auto", "NETLAB_MAX_TRAINERS": " 3 "}) == []


def test_workers_auto_zero_or_a_count(monkeypatch):
    for value, expected in [("auto", cores()), ("", cores()), ("0", 0), ("3", 3)]:
        monkeypatch.setenv("NETLAB_WORKERS", value)
        assert worker_count() == expected
    monkeypatch.setenv("NETLAB_WORKERS", "two")  # once silently 0: training in the web process
    with pytest.raises(settings.SettingError):
        worker_count()


def test_an_unknown_name_is_named_with_the_setting_it_likely_meant():
    env = {"NETLAB_MAX_TRAINER": "3", "NETLAB_COLOUR": "red", "NETLAB_TEST_PAGE": "x",
           "NETLAB_WORKERS": "1", "PATH": "/bin"}
    assert settings.unknown(env) == [
        "NETLAB_COLOUR is not a Netlab setting, so it changes nothing",
        "NETLAB_MAX_TRAINER is not a Netlab setting, so it changes nothing "
        "(did you mean NETLAB_MAX_TRAINERS?)"]


def test_every_setting_the_code_reads_is_in_the_table():
    """A NETLAB_* name in quotes anywhere in the app's code is a setting of the table (so
    the start-up check sees it), and every setting of the table is read somewhere."""
    read = set()
    for top in ("engine", "serve", "ui", "pages"):
        for path in (ROOT / top).rglob("*.py"):
            read |= set(re.findall(r"[\"'](NETLAB_[A-Z_]+)[\"']", path.read_text()))
    read |= set(re.findall(r"[\"'](NETLAB_[A-Z_]+)[\"']", (ROOT / "app.py").read_text()))
    read = {name for name in read if not name.startswith(settings.NOT_SETTINGS)}
    assert read - set(settings.SETTINGS) == set()
    assert set(settings.SETTINGS) - read == set()


def test_the_page_says_why_the_server_stops(monkeypatch):
    """On the first page run a bad value is shown and the server is asked to stop."""
    import ui.guard

    stopped = []
    monkeypatch.setattr(ui.guard, "exit_server", lambda: stopped.append(True))
    monkeypatch.setenv("NETLAB_WORKERS", "two")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.run()
        assert [e.value for e in at.error] == [
            "This Netlab server cannot start: NETLAB_WORKERS='two' is not allowed (worker "
            "processes that train runs ('auto': one per core; 0: in the web process)): expected "
            "'auto' or a whole number >= 0; unset it for the default ('auto')"]
        assert not at.exception and len(at.button) == 0  # nothing else was drawn
    finally:
        st.cache_resource.clear()
    deadline = time.monotonic() + 5
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stopped == [True]


def test_the_readme_names_every_setting():
    readme = (ROOT / "README.md").read_text()
    assert [name for name in settings.SETTINGS if name not in readme] == []
