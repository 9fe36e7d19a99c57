"""History: the metrics rows of a run, the only thing charts read from the engine.

A row is one JSON object per logged step (DESIGN.md §2.2). The training thread appends under a
lock while a page reads snapshots, so the two never see a half-written list.

Bounded memory. A live run keeps its History in the server's memory for as long as the run is
kept, and a run may take 100,000 steps. Measured before the bound: a 200-layer net of 4 units
logging every step grew by ~123 KB a step (the per-layer detail: 200 dicts of 9 numbers), ~10 GB
at the 100,000-step cap. So a History holds at most `max_rows` rows and `max_layer_entries`
per-layer entries (the dicts in `row["layers"]`, summed over rows), and thins its OLD part when
either is exceeded:

- rows: the newest quarter of `max_rows` stays dense; the older rows are kept on a uniform grid
  (append number a multiple of a power-of-two stride, doubled as the run grows), so the charts
  still cover the whole run, at a lower resolution further back;
- detail: the newest rows holding half of `max_layer_entries` keep their `layers`; older rows keep
  them on a coarser grid of the same kind, and the others keep their metrics but lose `layers`
  (a chart reading a row without `layers` sees "not measured", as `layer_column` reports);
- chosen rows are never dropped and keep their detail: the first row, the row with the best
  `val_loss` so far, and the rows where `health["status"]` changed. (Safety valve, never reached
  by a healthy run since a verdict needs evidence that persists: of the status-change rows only
  the newest `max_rows // 8` are protected, and only the newest of those that fit in an eighth
  of `max_layer_entries` keep their detail.)

Compaction runs in batches: it triggers at the cap and brings the History down to three quarters
of it, so it costs O(rows) once per `max_rows // 4` appends (rows) and O(detailed rows) once per
`max_layer_entries // 4` entries (detail): amortised O(1) per append. Measured (tests/test_history,
benchmarks/fairness.py): 100,000 rows of 200 layers end at 2,684 rows and 18,291 layer entries,
~11 MB instead of ~10 GB; an append costs ~0.18 ms of which ~0.15 ms is `clean` (a 200-layer
step costs ~40 ms).

Rows are never edited in place: a row that loses its detail is replaced by a copy without
`layers`, so a snapshot a page is iterating stays consistent.

Whoever needs every row sees them as they are logged: the Trainer calls `on_log` with each new
row (`JsonlWriter` writes each one to metrics.jsonl), and `best` is tracked over every row
appended, not only the kept ones.
"""
from __future__ import annotations

import itertools
import json
import math
import threading
from collections import deque
from typing import Any, Iterable

MAX_ROWS = 4_000             # ~1-3 KB a row without detail: a few MB
MAX_LAYER_ENTRIES = 20_000   # ~600 B an entry: ~12 MB; 200 layers x 100 rows, 4 layers x 5,000


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN)."""
    cls = type(value)
    if cls is float:
        return value if value - value == 0.0 else None  # nan - nan and inf - inf are nan
    if isinstance(value, dict):
        return {k: (v if v - v == 0.0 else None) if type(v) is float else
                (v if type(v) in _ATOMS else clean(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, float):  # float subclasses (numpy.float64)
        return value if math.isfinite(value) else None
    return value


_ATOMS = frozenset((str, int, bool, type(None)))


def _status(row: dict):
    health = row.get("health")
    return health.get("status") if isinstance(health, dict) else None


class History:
    """Metrics rows, bounded (see the module docstring). `max_rows` / `max_layer_entries` None
    means unbounded."""

    def __init__(self, rows: Iterable[dict] = (), max_rows: int | None = MAX_ROWS,
                 max_layer_entries: int | None = MAX_LAYER_ENTRIES):
        if max_rows is not None and max_rows < 8:
            raise ValueError(f"max_rows={max_rows}; at least 8")
        if max_layer_entries is not None and max_layer_entries < 8:
            raise ValueError(f"max_layer_entries={max_layer_entries}; at least 8")
        self.max_rows = max_rows
        self.max_layer_entries = max_layer_entries
        self._lock = threading.Lock()
        self._rows: dict[int, dict] = {}     # append number -> row, in append (= step) order
        self._detailed: deque[int] = deque()  # append numbers of the kept rows with `layers`
        self._entries = 0                     # layer entries held, summed over rows
        self._seq = itertools.count()
        self._row_stride = 1                  # old rows kept: append number % stride == 0
        self._detail_stride = 1
        self._first: int | None = None
        self._best: tuple[float, int, dict] | None = None  # (val_loss, append number, row)
        self._changes: deque[int] = deque()   # append numbers of health-status changes
        self._last_status = None
        self.appended = 0                     # rows ever appended (kept or not)
        self.compactions = 0                  # thinnings so far: a copy that saw the same count
                                              # may take the new rows alone (`delta`)
        for r in rows:
            self.append(r)

    # ------------------------------------------------------------------ writing
    def append(self, row: dict) -> None:
        row = clean(row)
        with self._lock:
            seq = next(self._seq)
            self._rows[seq] = row
            self.appended += 1
            layers = row.get("layers")
            if layers:
                self._detailed.append(seq)
                self._entries += len(layers)
            if self._first is None:
                self._first = seq
            loss = row.get("val_loss")
            if isinstance(loss, (int, float)) and (self._best is None or loss < self._best[0]):
                self._best = (loss, seq, row)
            status = _status(row)
            if seq != self._first and status != self._last_status:
                self._changes.append(seq)
                if self.max_rows is not None and len(self._changes) > self.max_rows // 8:
                    self._changes.popleft()
            self._last_status = status
            if self.max_rows is not None and len(self._rows) > self.max_rows:
                self._thin_rows()
            if self.max_layer_entries is not None and self._entries > self.max_layer_entries:
                self._thin_detail()

    def _chosen(self) -> set[int]:
        chosen = set(self._changes)
        chosen.add(self._first)
        if self._best is not None:
            chosen.add(self._best[1])
        return chosen

    def _thin_rows(self) -> None:
        """Old rows down to a uniform grid, until the History holds 3/4 of max_rows."""
        seqs = list(self._rows)
        recent = max(1, self.max_rows // 4)
        old = seqs[:-recent]
        chosen = self._chosen()
        room = self.max_rows * 3 // 4 - recent
        kept, self._row_stride = _grid(old, chosen, lambda k: len(k) <= room, self._row_stride,
                                       seqs[-1])
        keep = set(kept)
        for s in old:
            if s not in keep:
                row = self._rows.pop(s)
                if row.get("layers"):
                    self._entries -= len(row["layers"])
        if len(keep) < len(old):
            self._detailed = deque(s for s in self._detailed if s in self._rows)
        self.compactions += 1

    def _thin_detail(self) -> None:
        """Old rows' `layers` down to a grid, until 3/4 of max_layer_entries are held."""
        budget = self.max_layer_entries
        detailed = list(self._detailed)
        size = {s: len(self._rows[s]["layers"]) for s in detailed}
        # the newest rows holding half the budget keep their detail (at least the newest row)
        recent, n = 0, 0
        for s in reversed(detailed):
            if n and recent + size[s] > budget // 2:
                break
            recent += size[s]
            n += 1
        old = detailed[:-n]
        protected = {self._first}
        if self._best is not None:
            protected.add(self._best[1])
        changes_room = budget // 8
        for s in reversed(self._changes):  # the newest status changes that fit in 1/8
            if s in size and s not in protected:
                if size[s] > changes_room:
                    break
                changes_room -= size[s]
                protected.add(s)
        room = budget * 3 // 4 - recent
        kept, self._detail_stride = _grid(old, protected,
                                          lambda k: sum(size[s] for s in k) <= room,
                                          self._detail_stride, detailed[-1])
        keep = set(kept)
        for s in old:
            if s not in keep:
                row = self._rows[s]
                self._rows[s] = {k: v for k, v in row.items() if k != "layers"}
                self._entries -= size[s]
        self._detailed = deque(kept + detailed[len(old):])
        self.compactions += 1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """All of the History as plain values: a loaded copy keeps thinning as this one would."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:  # under self._lock
        return {"rows": [[seq, row] for seq, row in self._rows.items()],
                "detailed": list(self._detailed), "entries": self._entries,
                "row_stride": self._row_stride, "detail_stride": self._detail_stride,
                "first": self._first, "best": list(self._best) if self._best else None,
                "changes": list(self._changes), "last_status": self._last_status,
                "appended": self.appended}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._rows = {seq: row for seq, row in state["rows"]}
            self._detailed, self._changes = deque(state["detailed"]), deque(state["changes"])
            self._entries, self._first = state["entries"], state["first"]
            self._row_stride, self._detail_stride = state["row_stride"], state["detail_stride"]
            best = state["best"]
            # the best row is the kept row itself where it is still held
            self._best = None if best is None else (best[0], best[1],
                                                    self._rows.get(best[1], best[2]))
            self._last_status, self.appended = state["last_status"], state["appended"]
            self._seq = itertools.count(self.appended)
            self.compactions += 1  # its rows changed under any copy taken before

    def delta(self, appended: int, compactions: int) -> dict:
        """What a copy of this History needs to equal it again, given the `appended` and
        `compactions` this History had when the copy last caught up: {"rows": the newer rows}
        when nothing was thinned since (appending them thins the copy exactly as this one was),
        else {"full": state_dict()}; with this History's "appended" and "compactions" now. A
        page mirroring a run trained in another process keeps its charts this way."""
        with self._lock:
            now = {"appended": self.appended, "compactions": self.compactions}
            if compactions == self.compactions and appended <= self.appended:
                return {**now, "rows": [self._rows[s] for s in range(appended, self.appended)]}
            return {**now, "full": self._state()}

    def catch_up(self, delta: dict) -> None:
        """Apply what `delta` returned."""
        if "full" in delta:
            self.load_state_dict(delta["full"])
        else:
            for row in delta["rows"]:
                self.append(row)

    # ------------------------------------------------------------------ reading
    @property
    def rows(self) -> list[dict]:
        """A snapshot, in step order: safe to iterate while training goes on."""
        with self._lock:
            return list(self._rows.values())

    def tail(self, n: int) -> list[dict]:
        """The newest n rows (the newest quarter of max_rows is never thinned)."""
        with self._lock:
            out = list(itertools.islice(reversed(self._rows.values()), max(0, n)))
        out.reverse()
        return out

    def since(self, start: int) -> list[dict]:
        """start < 0: the newest -start rows (as a negative list index did); start >= 0: the rows
        logged at step >= start. Positions are not stable under thinning, steps are."""
        if start < 0:
            return self.tail(-start)
        return [r for r in self.rows if r.get("step") is not None and r["step"] >= start]

    @property
    def best(self) -> dict | None:
        """The row with the lowest val_loss of all rows ever appended (the first on ties)."""
        with self._lock:
            return self._best[2] if self._best else None

    @property
    def layer_entries(self) -> int:
        """Per-layer entries held, summed over rows (what max_layer_entries bounds)."""
        return self._entries

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        with self._lock:
            if i == 0 and self._rows:
                return self._rows[self._first] if self._first in self._rows \
                    else next(iter(self._rows.values()))
            if i == -1 and self._rows:
                return next(reversed(self._rows.values()))
            return list(self._rows.values())[i]

    def __iter__(self):
        return iter(self.rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, History) and self.rows == other.rows

    @property
    def last(self) -> dict | None:
        with self._lock:
            return next(reversed(self._rows.values())) if self._rows else None

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    def layer_names(self) -> list[str]:
        for r in reversed(self.rows):
            if r.get("layers"):
                return [layer["name"] for layer in r["layers"]]
        return []

    def layer_column(self, name: str, key: str) -> list:
        """The value of `key` for layer `name` in every row (None where it was not measured, or
        where thinning took the row's detail)."""
        out = []
        for r in self.rows:
            layer = next((lay for lay in r.get("layers") or () if lay["name"] == name), None)
            out.append(layer.get(key) if layer else None)
        return out

    def to_jsonl(self) -> str:
        return "".join(json.dumps(r) + "\n" for r in self.rows)

    @classmethod
    def from_jsonl(cls, text: str, **limits) -> "History":
        return cls((json.loads(line) for line in text.splitlines() if line.strip()), **limits)


def _grid(seqs: list[int], protected, fits, stride: int, last: int) -> tuple[list[int], int]:
    """The sequence numbers on a grid of `stride` (plus the protected ones), the stride doubled
    until what is kept `fits`. The grid only coarsens, so a row thinned once stays thinned and
    old rows end up evenly spaced."""
    while True:
        kept = [s for s in seqs if s % stride == 0 or s in protected]
        if fits(kept) or stride > last:
            return kept, stride
        stride *= 2
