"""Bundled presets: one JSON file per one-click experiment, tagged with concept ids from
shared/CONCEPTS.md. A file holds a title, the concept ids, a one-line summary, an explanation of
what to watch (our own words), what the run is expected to show (`expect`, checked by
tests/test_presets.py) and the experiment config itself; `"until_paused": true` opens it with
the page's "Train until paused" on (TensorFlow Playground's way: the claims still hold at the
planned steps, and training on only goes further), otherwise the run stops at its planned steps,
the point its explanation describes."""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

from ..core.errors import SpecError
from ..core.inputs import short

HERE = Path(__file__).parent
REQUIRED = ("title", "concepts", "summary", "explanation", "config")


# The bundled set, listed once: a name is looked up here and never turned into a path, so
# `../../x`, `./xor_tanh` or a 10 KB string open nothing and cannot grow the cache below.
NAMES = tuple(sorted(p.stem for p in HERE.glob("*.json")))


@lru_cache(maxsize=None)
def _read(name: str) -> dict:
    preset = json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))
    missing = [k for k in REQUIRED if k not in preset]
    if missing:
        raise ValueError(f"preset {name} lacks {', '.join(missing)}")
    return {"name": name, **preset}


def preset_names() -> list[str]:
    return list(NAMES)


def load_preset(name: str) -> dict:
    """The preset as a fresh dict (callers may edit its config)."""
    if not isinstance(name, str) or name not in NAMES:
        close = difflib.get_close_matches(str(name)[:100].lower(), NAMES, n=3, cutoff=0.5)
        guess = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise SpecError(f"unknown preset {short(name)}{guess}; `python -m engine presets` "
                        f"lists all {len(NAMES)}")
    return json.loads(json.dumps(_read(name)))


def list_presets() -> list[dict]:
    """Every preset, ordered by its first concept id (A1, A2, ..., E1, ...)."""
    return sorted((load_preset(n) for n in preset_names()),
                  key=lambda p: (p["concepts"][0], p["name"]))
