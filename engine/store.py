"""The run store: every run's spec, metrics rows and summary in one SQLite file, written as the
run goes, so a run outlives the process that trained it (issue "Runs that last").

The file lives in NETLAB_HOME (default ~/.netlab) as runs.sqlite, in WAL mode: readers never
block the writer, several processes may write their own runs at once, and a row is on disk once
its transaction commits (each logged row is its own transaction; a process killed mid-run leaves
every row committed before the kill). Rows are only ever appended; a run's status and summary
are updated in place.

    store = RunStore()                       # NETLAB_HOME/runs.sqlite
    trainer = Trainer(spec, callbacks=[StoreWriter(store, name="my run")])
    store.runs()                             # [{"id", "name", "spec", "status", "final", ...}]
    store.rows(run_id)                       # the logged rows, oldest first
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

from .callbacks import Callback
from .errors import SpecError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, summary TEXT, tags TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step INTEGER NOT NULL,
    row TEXT NOT NULL, PRIMARY KEY (run_id, step)
);
"""
MAX_TAGS = 20
CSV_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "train_acc", "val_acc",
               "grad_norm", "clip_frac")
RUNNING, FINISHED = "running", "finished"  # a run still "running" whose process died: see status


def home() -> Path:
    """NETLAB_HOME, else ~/.netlab: where the store and its files live."""
    return Path(os.environ.get("NETLAB_HOME") or Path.home() / ".netlab")


class RunStore:
    """One SQLite file of runs. Each method opens its own short transaction, so one store may
    be shared by threads (a connection per thread) and processes (the file's own locking)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else home() / "runs.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise SpecError(f"the run store {self.path} cannot be opened: {e}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
        return db

    # -- writing
    def create(self, spec_json: str, name: str | None = None, run_id: str | None = None) -> str:
        run_id = run_id or uuid.uuid4().hex
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, spec, status, created, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, name or f"run {run_id[:8]}", spec_json, RUNNING, now, now))
        return run_id

    def append(self, run_id: str, row: dict) -> None:
        """One logged row (append-only: a step already stored is kept as it was)."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO rows (run_id, step, row) VALUES (?, ?, ?)",
                       (run_id, int(row["step"]), json.dumps(row)))
            db.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), run_id))

    def finish(self, run_id: str, summary: dict) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status = ?, summary = ?, updated = ? WHERE id = ?",
                       (FINISHED, json.dumps(summary), time.time(), run_id))

    def rename(self, run_id: str, name: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))

    def tag(self, run_id: str, tags: list[str]) -> None:
        """Set a run's tags (each a non-empty string of at most 64 characters, at most 20)."""
        if not isinstance(tags, (list, tuple)) or len(tags) > MAX_TAGS or not all(
                isinstance(t, str) and 0 < len(t) <= 64 for t in tags):
            raise SpecError(f"tags must be a list of at most {MAX_TAGS} non-empty names of at "
                            "most 64 characters")
        with self._connect() as db:
            db.execute("UPDATE runs SET tags = ? WHERE id = ?",
                       (json.dumps(sorted(set(tags))), run_id))

    def delete(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    # -- reading
    def runs(self) -> list[dict]:
        """Every run, newest first: id, name, spec (a dict), status, created, updated, tags,
        summary (None until it finished) and final (its last row's metrics)."""
        with self._connect() as db:
            found = db.execute("SELECT id, name, spec, status, created, updated, summary, tags "
                               "FROM runs ORDER BY created DESC").fetchall()
            out = []
            for rid, name, spec, status, created, updated, summary, tags in found:
                last = db.execute("SELECT row FROM rows WHERE run_id = ? ORDER BY step DESC "
                                  "LIMIT 1", (rid,)).fetchone()
                final = json.loads(last[0]) if last else {}
                out.append({"id": rid, "name": name, "spec": json.loads(spec), "status": status,
                            "created": created, "updated": updated, "tags": json.loads(tags),
                            "summary": json.loads(summary) if summary else None,
                            "final": {k: final.get(k) for k in ("step", "train_loss", "val_loss",
                                                                "train_acc", "val_acc")}})
            return out

    def rows(self, run_id: str) -> list[dict]:
        with self._connect() as db:
            return [json.loads(r) for (r,) in db.execute(
                "SELECT row FROM rows WHERE run_id = ? ORDER BY step", (run_id,))]

    def metrics_csv(self, run_id: str) -> str:
        """The run's metrics rows as CSV: one line per logged step, the run-wide numbers
        (per-layer statistics and the verdict's details stay in the rows' JSON)."""
        import csv
        import io

        rows = self.rows(run_id)
        columns = [k for k in CSV_COLUMNS if any(k in r for r in rows)]
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns + ["health"])
        for r in rows:
            w.writerow([r.get(k) if r.get(k) is not None else "" for k in columns]
                       + [(r.get("health") or {}).get("status", "")])
        return out.getvalue()


class StoreWriter(Callback):
    """Records a run into a RunStore as it trains: created at the first step, every logged row
    appended as it is logged, the summary written when the run ends."""
    name = "store"

    def __init__(self, store: RunStore, name: str | None = None):
        self.store, self.run_name = store, name
        self.run_id: str | None = None

    def on_fit_start(self, trainer):
        self.run_id = self.store.create(trainer.spec.to_json(), self.run_name)

    def on_log(self, trainer, row):
        if self.run_id is not None:
            self.store.append(self.run_id, trainer.history.last)

    def on_fit_end(self, trainer):
        if self.run_id is not None:
            self.store.finish(self.run_id, trainer.summary())
