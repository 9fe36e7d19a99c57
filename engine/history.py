"""History: the metrics rows of a run, the only thing charts read from the engine.

A row is one JSON object per logged step (DESIGN.md §2.2). The training thread appends under a
lock while a page reads snapshots, so the two never see a half-written list.
"""
from __future__ import annotations

import json
import math
import threading
from typing import Any, Iterable


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class History:
    def __init__(self, rows: Iterable[dict] = ()):
        self._rows: list[dict] = [clean(r) for r in rows]
        self._lock = threading.Lock()

    def append(self, row: dict) -> None:
        row = clean(row)
        with self._lock:
            self._rows.append(row)

    @property
    def rows(self) -> list[dict]:
        """A snapshot: safe to iterate while training goes on."""
        with self._lock:
            return list(self._rows)

    def since(self, start: int) -> list[dict]:
        with self._lock:
            return self._rows[start:]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        return self._rows[i]

    def __iter__(self):
        return iter(self.rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, History) and self.rows == other.rows

    @property
    def last(self) -> dict | None:
        with self._lock:
            return self._rows[-1] if self._rows else None

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    def layer_names(self) -> list[str]:
        for r in reversed(self.rows):
            if r.get("layers"):
                return [layer["name"] for layer in r["layers"]]
        return []

    def layer_column(self, name: str, key: str) -> list:
        """The value of `key` for layer `name` in every row (None where it was not measured)."""
        out = []
        for r in self.rows:
            layer = next((lay for lay in r.get("layers") or () if lay["name"] == name), None)
            out.append(layer.get(key) if layer else None)
        return out

    def to_jsonl(self) -> str:
        return "".join(json.dumps(r) + "\n" for r in self.rows)

    @classmethod
    def from_jsonl(cls, text: str) -> "History":
        return cls(json.loads(line) for line in text.splitlines() if line.strip())
