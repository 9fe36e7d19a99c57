"""Bounded reading of everything that arrives from outside: config files, uploaded tables, share
links, CLI arguments.

Each function checks a size, a depth or a kind of file *before* the step that could blow up on it,
and answers with a one-line SpecError (what is wrong, where, what is allowed). Measured before
these checks existed: a 97 KB link inflated to 75 MB and its value was echoed into the page
(the browser froze for minutes); a 100,000-deep `[[[...` config raised RecursionError; a
5,000-digit integer raised ValueError inside json; `/dev/zero` as a config file never returned.
"""
from __future__ import annotations

import json
import math
import os
import re
import reprlib
import stat
import zlib
from itertools import accumulate

from .errors import SpecError

MAX_DEPTH = 32  # a real config nests 5 deep (config.model.layers[i].init.name)
MAX_INT_DIGITS = 20  # a 64-bit integer has 19 digits; anything longer is not a setting
# Real paths under these are kernel interfaces, not files a user means: /proc/self/environ would
# echo the server's environment into an error message, /dev/zero never ends.
SYSTEM_DIRS = ("/proc", "/sys", "/dev")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# ----------------------------------------------------------------------------- echoing values


class _Short(reprlib.Repr):
    """reprlib bounds lists, dicts and nesting; integers are written by size instead of in full
    (Python refuses to print one of more than 4,300 digits, and a 400-digit one helps nobody)."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 4, 4, 4
        self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 4
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_int(self, x, level):
        if x.bit_length() <= 64:
            return repr(x)
        digits = int(x.bit_length() * 0.30103) + 1  # log10(2): no str() of a huge number
        return f"<an integer of about {digits:,} digits>"


def short(value, limit: int = 80) -> str:
    """A repr of `value` of at most `limit` characters, for error messages that echo user input.

    Strings keep their head and tail (a long path still shows its file name); everything else is
    cut at the end with "…"."""
    if isinstance(value, str):
        text = repr(value) if len(value) <= limit else ""
        if not text or len(text) > limit:
            keep = max(limit - 3, 2) // 2
            text = repr(value[:keep])[:-1] + "…" + repr(value[len(value) - keep:])[1:]
    else:
        text = _Short(limit).repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def size_text(n: int) -> str:
    """1,234,567 -> '1.2 MB': sizes in messages read like the limits they are compared with."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB".replace(".0 MB", " MB")
    return f"{n / 1024:.1f} KB".replace(".0 KB", " KB") if n >= 1024 else f"{n} bytes"


# ----------------------------------------------------------------------------- JSON


class NotJSON(SpecError):
    """The text is not JSON at all (a syntax error), as opposed to JSON that breaks a bound.
    The CLI's `--set KEY=VALUE` reads such text as a plain string."""


class _Refused:
    """Stands in for a number json must not convert (a 5,000-digit integer makes int() raise,
    a 400-digit one overflows float() later; 1e400 reads as infinity; NaN is not JSON). After
    parsing, parse_json looks for it and names its key in the message."""

    def __init__(self, text: str, reason: str):
        self.text, self.reason = text, reason


def _number_hooks(refused: list) -> dict:
    def refuse(text, reason):
        refused.append(True)
        return _Refused(text, reason)

    def parse_int(text):
        digits = len(text.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            return refuse(f"<a {digits:,}-digit integer>",
                          f"integers have at most {MAX_INT_DIGITS} digits")
        return int(text)

    def parse_float(text):
        value = float(text)  # linear in the length, never raises for JSON number syntax
        if math.isinf(value):
            shown = text if len(text) <= 40 else f"{text[:18]}…{text[-18:]}"
            return refuse(shown, "the number does not fit a 64-bit float")
        return value

    def parse_constant(name):
        return refuse(name, "JSON has no NaN or Infinity; write a number")

    return {"parse_int": parse_int, "parse_float": parse_float, "parse_constant": parse_constant}


def _find_refused(value, path: str = ""):
    """(dotted path, _Refused) of the first refused number in parsed JSON, or None. Recursive,
    but only over JSON whose depth was checked first."""
    if isinstance(value, _Refused):
        return path, value
    if isinstance(value, dict):
        items = ((f"{path}.{_path_key(k)}" if path else _path_key(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for p, v in items:
        found = _find_refused(v, p)
        if found:
            return found
    return None


def _path_key(key: str) -> str:
    return key if key.isprintable() and 0 < len(key) <= 40 else short(key, 40)


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal, escapes included
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, without recursion: brackets inside string literals
    do not count. json.loads recurses once per level, so this is checked before it runs."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def parse_json(data: str | bytes, what: str, max_bytes: int):
    """JSON text (or UTF-8 bytes, a byte-order mark accepted) -> Python values, with its size,
    nesting depth and numbers bounded. `what` names the input in messages ("config file 'x'")."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise SpecError(f"{what} is {size_text(len(data))}; at most {size_text(max_bytes)} "
                            "is allowed")
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SpecError(f"{what} is not UTF-8 text") from None
    elif not isinstance(data, str):
        raise SpecError(f"{what} must be JSON text, got {short(data)}")
    elif len(data) > max_bytes:
        raise SpecError(f"{what} has {len(data):,} characters; at most {max_bytes:,} are allowed")
    text = data.removeprefix("\ufeff")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise SpecError(f"{what} nests {depth:,} levels deep; at most {MAX_DEPTH} are allowed")
    refused: list = []
    try:
        value = json.loads(text, **_number_hooks(refused))
    except json.JSONDecodeError as e:
        raise NotJSON(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column "
                      f"{e.colno}") from None
    except RecursionError:  # backstop: the depth scan should have refused it already
        raise SpecError(f"{what} nests too deep; at most {MAX_DEPTH} levels are allowed") from None
    if refused:
        path, number = _find_refused(value)
        raise SpecError(f"{what}: {path + '=' if path else ''}{number.text} is not allowed: "
                        f"{number.reason}")
    return value


# ----------------------------------------------------------------------------- files


def _system_path(real: str) -> bool:
    return any(real == d or real.startswith(d + os.sep) for d in SYSTEM_DIRS)


def read_user_file(path, what: str, max_bytes: int) -> bytes:
    """The bytes of a local regular file of at most `max_bytes`, or a SpecError saying why not.

    Refused by name before anything is opened: URLs (pandas would fetch them), folders, devices,
    pipes and kernel files (/dev/zero never ends, a FIFO blocks open() forever). The read itself
    is bounded too, for a file that grows after the size check."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise SpecError(f"{what} must be a file path, got {short(path)}")
    path = os.fspath(path)
    shown = short(path)
    if _URL.match(path):
        raise SpecError(f"{what}: {shown} is a URL; only local files are allowed")
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError) as e:  # a NUL byte in the name, a symlink loop, ...
        raise SpecError(f"{what}: cannot open {shown} ({_reason(e)})") from None
    if _system_path(real):
        raise SpecError(f"{what}: {shown} is a system file (under /{real.split(os.sep)[1]}), "
                        "not a data file")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise SpecError(f"{what}: no file {shown}") from None
    except OSError as e:  # a name too long, no permission, ...
        raise SpecError(f"{what}: cannot open {shown} ({_reason(e)})") from None
    _check_regular(info, what, shown, max_bytes)
    try:
        # O_NONBLOCK: if the path became a FIFO since the stat, open() returns instead of waiting
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(os.fstat(f.fileno()), what, shown, max_bytes)
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise SpecError(f"{what}: cannot read {shown} ({_reason(e)})") from None
    if len(data) > max_bytes:
        raise SpecError(f"{what}: {shown} is larger than {size_text(max_bytes)}, the most "
                        "allowed")
    return data


def _check_regular(info: os.stat_result, what: str, shown: str, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"{what}: {shown} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"{what}: {shown} is not a regular file (a device, pipe or socket)")
    if info.st_size > max_bytes:
        raise SpecError(f"{what}: {shown} is {size_text(info.st_size)}; at most "
                        f"{size_text(max_bytes)} is allowed")


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


# ----------------------------------------------------------------------------- compressed data


def inflate(data: bytes, max_bytes: int, what: str = "the data") -> bytes:
    """zlib-decompress at most `max_bytes` (a 97 KB link expanded to 75 MB before this bound)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error:
        raise SpecError(f"{what} is damaged (not zlib data)") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise SpecError(f"{what} is too large: it expands to more than {size_text(max_bytes)}")
    if not inflater.eof:
        raise SpecError(f"{what} is damaged (it ends too early: was it cut off?)")
    return out


# ----------------------------------------------------------------------------- settings


def env_int(name: str, default: int, low: int = 1) -> int:
    """An integer setting from the environment, with a clear message when it is not one."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    value = int(text) if re.fullmatch(r"[0-9]{1,%d}" % MAX_INT_DIGITS, text) else None
    if value is None or value < low:
        raise SpecError(f"environment variable {name}={short(text)} is not allowed: expected an "
                        f"integer >= {low}")
    return value
