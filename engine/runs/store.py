"""The run store: every run's spec, metrics rows and summary in one SQLite file, written as the
run goes, so a run outlives the process that trained it (issue "Runs that last").

A run's checkpoint (Trainer.state_dict: weights, optimizer, schedule, every random stream,
counters, history and callback state) is written as the run goes: at its first logged step, then
at most once per `checkpoint_every` seconds on a logged step and always when it ends (a process
that dies loses at most that many seconds of training); `resume` continues a stored
run from it with the numbers an uninterrupted run would have given.

The file lives in NETLAB_HOME (default ~/.netlab) as runs.sqlite, in WAL mode: readers never
block the writer, several processes may write their own runs at once, and a row is on disk once
its transaction commits (a StoreWriter commits the rows logged since its last write at most
every FLUSH_EVERY_S, and before each checkpoint; a process killed mid-run leaves every row
committed before the kill). Rows are only ever appended; a run's status and summary are updated
in place. A store that fails (a full disk, a lock held too long) never stops a run: the writer
keeps its rows and tries again.

    store = RunStore()                       # NETLAB_HOME/runs.sqlite
    trainer = Trainer(spec, callbacks=[StoreWriter(store, name="my run")])
    store.runs()                             # [{"id", "name", "spec", "status", "final", ...}]
    store.rows(run_id)                       # the logged rows, oldest first
    trainer = resume(store, run_id).run()    # go on from its last checkpoint
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import torch

from ..core.errors import SpecError
from ..core.inputs import MAX_DEPTH, nesting_depth
from ..train.callbacks import Callback

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
    created {real} NOT NULL, updated {real} NOT NULL, summary TEXT,
    tags TEXT NOT NULL DEFAULT '[]'{more}
);
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step {int} NOT NULL,
    row TEXT NOT NULL, PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE, step {int} NOT NULL,
    state {blob} NOT NULL, saved {real} NOT NULL
);
"""
LATER_COLUMNS = ("owner", "browser")  # added to SQLite stores written before they came
LOW_SPACE = 1 << 20  # bytes free on the store's disk below which it is called full (a
# checkpoint of a small net is tens of KB, of the largest allowed one ~10 MB)


class _SQLite:
    """The embedded default: one file, WAL mode (readers never block the writer)."""

    def __init__(self, path: Path):
        self.path, self.where = path, str(path)
        self.location = str(path.resolve())
        self.errors: tuple = (sqlite3.Error, OSError)

    @contextlib.contextmanager
    def connect(self):
        """A connection for one transaction: committed (or rolled back) and closed."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
            with db:
                yield db
        finally:
            db.close()

    def space_problem(self) -> str | None:
        """The volume holding the file is (nearly) full, or None: a full disk makes every
        write fail while reads of what was written may still work."""
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return None
        return (f"the disk holding the run store {self.where} is full ({free // 1024:,} KB "
                "left)") if free < LOW_SPACE else None

    def create_tables(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA.format(real="REAL", int="INTEGER", blob="BLOB", more=""))
            columns = {c[1] for c in db.execute("PRAGMA table_info(runs)")}
            for column in LATER_COLUMNS:
                if column not in columns:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")


class _PostgresConnection:
    """psycopg's connection with SQLite's ? placeholders (every statement here uses them)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, args=()):
        return self.conn.execute(sql.replace("?", "%s"), args)

    def executemany(self, sql: str, rows):
        with self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


class _Postgres:
    """A database every replica of a hosted Netlab shares (issue 19): postgresql://..."""

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise SpecError("a postgresql:// run store needs psycopg: pip install -r "
                            "requirements-postgres.txt") from None
        self.psycopg, self.url = psycopg, url
        self.location = url
        self.where = re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)  # no password shown
        self.errors = (psycopg.Error, OSError)

    @contextlib.contextmanager
    def connect(self):
        with self.psycopg.connect(self.url, connect_timeout=30) as conn:  # commits, closes
            yield _PostgresConnection(conn)

    def space_problem(self) -> None:
        """The database server manages its own disk: its errors say when it is full."""
        return None

    def create_tables(self) -> None:
        with self.connect() as db:
            # replicas starting at once would race to create the same tables
            db.execute("SELECT pg_advisory_xact_lock(7046)")
            for statement in SCHEMA.format(real="DOUBLE PRECISION", int="BIGINT", blob="BYTEA",
                                           more=", owner TEXT, browser TEXT").split(";"):
                if statement.strip():
                    db.execute(statement)


def _reason(e: Exception) -> str:
    """An error's first line (sqlite3's and psycopg's messages run on), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _database(location):
    """A path or sqlite:/// URL: SQLite; postgresql://: PostgreSQL; None: NETLAB_STORE, else
    NETLAB_HOME/runs.sqlite."""
    location = location if location is not None else os.environ.get("NETLAB_STORE") or \
        home() / "runs.sqlite"
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return _Postgres(text)
    if "://" in text and not text.startswith("sqlite:///"):
        raise SpecError(f"the run store {text.split('://')[0]}:// is not known; allowed: a "
                        "file path, sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB")
    return _SQLite(Path(text.removeprefix("sqlite:///") if text.startswith("sqlite:///")
                        else text))


CHECKPOINT_EVERY_S = 30.0  # a run's checkpoint at most this often (and always at its end)
# Logged rows are written together at most this often (and before every checkpoint and at the
# end): a transaction per row was up to 170 a second for one fast run, and a class of them
# would queue on SQLite's one writer. A process killed loses at most this much of its log.
FLUSH_EVERY_S = 0.5
MAX_TAGS = 20
CSV_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "train_acc", "val_acc",
               "grad_norm", "clip_frac")
# A run is "running" while a live process trains it (or holds it paused); "paused" once that
# process let go of it before its end (the app forgot an unwatched run); "finished" when it
# ended. One whose process died while it ran reads as "interrupted" (its owner's pid is gone
# from this host). Paused and interrupted runs go on from their checkpoint.
RUNNING, PAUSED, FINISHED, INTERRUPTED = "running", "paused", "finished", "interrupted"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    """Whether the process that wrote `owner` may still run (unknown hosts count as alive)."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def home() -> Path:
    """NETLAB_HOME, else ~/.netlab: where the store and its files live."""
    return Path(os.environ.get("NETLAB_HOME") or Path.home() / ".netlab")


class RunStore:
    """The runs, in SQLite (a file; the default) or PostgreSQL (a URL). Each method opens a
    connection for one short transaction and closes it, so one store may be shared by threads,
    processes and, with PostgreSQL, machines."""

    def __init__(self, location: str | os.PathLike | None = None):
        self.db = _database(location)
        self.where = self.db.where  # what messages call it (never a password)
        self.location = self.db.location  # what another process opens it by (a worker)
        self.errors = self.db.errors
        self.damaged: list[str] = []  # records the last runs() left out, each named
        # a store file of 0 bytes holds no runs: a truncated one (a full disk, a crash) would
        # otherwise become a new empty store without a word
        path = getattr(self.db, "path", None)
        self.notice = (f"the run store {self.where} was an empty file (0 bytes), so it holds no "
                       "runs; a new store starts in it" if path is not None and path.is_file()
                       and path.stat().st_size == 0 else None)
        try:
            self.db.create_tables()
        except self.errors as e:
            reason = _reason(e)
            if any(w in reason for w in ("not a database", "malformed", "corrupt")):
                raise SpecError(f"the run store {self.where} is damaged ({reason}): move the "
                                "file aside (keep it: sqlite3's .recover may save its runs) and "
                                "start again; a new, empty store is made in its place") from None
            raise SpecError(f"the run store {self.where} cannot be opened: {reason}") from None

    def _connect(self):
        return self.db.connect()

    def space_problem(self) -> str | None:
        """Why new rows cannot be written now (its disk is full), or None."""
        return self.db.space_problem()

    # -- writing
    def create(self, spec_json: str, name: str | None = None, run_id: str | None = None,
               browser: str | None = None, tags: list[str] = ()) -> str:
        """A new run. browser: the app's browser id of whoever trains it (None: the CLI or a
        script); the Runs page shows a browser its own runs and those without one."""
        run_id = run_id or uuid.uuid4().hex
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, spec, status, created, updated, owner, "
                       "browser, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (run_id, name or f"run {run_id[:8]}", spec_json, RUNNING, now, now,
                        this_process(), browser, json.dumps(sorted(set(tags)))))
        return run_id

    def exists(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def rekey(self, run_id: str, new_id: str) -> None:
        """The run goes on under another id, with its rows and checkpoint (the app's Reset
        keeps the page's run id for the new run; the old one stays in the store)."""
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, spec, status, created, updated, summary, "
                       "tags, owner, browser) SELECT ?, name, spec, status, created, updated, "
                       "summary, tags, owner, browser FROM runs WHERE id = ?", (new_id, run_id))
            for table in ("rows", "checkpoints"):
                db.execute(f"UPDATE {table} SET run_id = ? WHERE run_id = ?", (new_id, run_id))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def pause(self, run_id: str) -> None:
        """The process let go of the run before its end: it waits for someone to go on."""
        with self._connect() as db:
            db.execute("UPDATE runs SET status = ?, updated = ? WHERE id = ? AND status = ?",
                       (PAUSED, time.time(), run_id, RUNNING))

    def reopen(self, run_id: str, after_step: int) -> None:
        """A stored run goes on in this process from its checkpoint at `after_step`: rows logged
        after it are dropped (the resumed run logs them again) and it is running again."""
        with self._connect() as db:
            db.execute("DELETE FROM rows WHERE run_id = ? AND step > ?", (run_id, after_step))
            db.execute("UPDATE runs SET status = ?, summary = NULL, owner = ?, updated = ? "
                       "WHERE id = ?", (RUNNING, this_process(), time.time(), run_id))

    def save_checkpoint(self, run_id: str, state: dict) -> int:
        """Replace the run's checkpoint with `state` (Trainer.state_dict()); returns its bytes."""
        buf = io.BytesIO()
        torch.save(state, buf)
        blob = buf.getvalue()
        with self._connect() as db:
            db.execute("INSERT INTO checkpoints (run_id, step, state, saved) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (run_id) DO UPDATE SET step = excluded.step, "
                       "state = excluded.state, saved = excluded.saved",
                       (run_id, int(state["step_count"]), blob, time.time()))
        return len(blob)

    def checkpoint(self, run_id: str, device="cpu") -> dict | None:
        """The run's last checkpoint (None if it has none yet)."""
        from ..train.trainer import load_checkpoint

        with self._connect() as db:
            found = db.execute("SELECT state FROM checkpoints WHERE run_id = ?",
                               (run_id,)).fetchone()
        return load_checkpoint(bytes(found[0]), device) if found else None

    def append(self, run_id: str, *rows: dict) -> None:
        """Logged rows, in one transaction (append-only: a step already stored is kept as it
        was)."""
        with self._connect() as db:
            db.executemany("INSERT INTO rows (run_id, step, row) VALUES (?, ?, ?) "
                           "ON CONFLICT DO NOTHING",
                           [(run_id, int(row["step"]), json.dumps(row)) for row in rows])
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
    def listing(self, browser: str | None = None) -> tuple[list[dict], str | None]:
        """(runs(browser=browser), None), or ([], why) when the store cannot be read right now
        (a full disk, a lock held too long): a page says so instead of "no runs"."""
        try:
            return self.runs(browser=browser), None
        except self.errors as e:
            return [], f"the run store {self.where} cannot be read right now ({_reason(e)})"

    def runs(self, run_id: str | None = None, browser: str | None = None) -> list[dict]:
        """Every run (or the one `run_id`; or, given `browser`, that browser's runs and those
        of no browser), newest first: id, name, spec (a dict), status (running, paused,
        finished or interrupted), created, updated, tags, browser, summary (None until it
        finished), final (its last row's metrics) and checkpoint (the step of its last
        checkpoint, or None)."""
        where, args = "", ()
        if run_id is not None:
            where, args = "WHERE r.id = ?", (run_id,)
        elif browser is not None:
            where, args = "WHERE r.browser = ? OR r.browser IS NULL", (browser,)
        with self._connect() as db:
            # one statement, each run's last row by the (run_id, step) key: a class's thousands
            # of runs were a query each
            found = db.execute(
                "SELECT r.id, r.name, r.spec, r.status, r.created, r.updated, r.summary, "
                "r.tags, r.owner, c.step, r.browser, (SELECT w.row FROM rows w WHERE "
                "w.run_id = r.id ORDER BY w.step DESC LIMIT 1) FROM runs r LEFT JOIN "
                f"checkpoints c ON c.run_id = r.id {where} ORDER BY r.created DESC",
                args).fetchall()
            out, self.damaged = [], []
            for rid, name, spec, status, created, updated, summary, tags, owner, ck, browser_id, \
                    last in found:
                try:  # one damaged record (not JSON, nested past reason) hides no other
                    final = _record(last) if last else {}
                    record = {"id": rid, "name": name, "spec": _record(spec, dict),
                              "tags": _record(tags, list),
                              "summary": _record(summary, dict) if summary else None}
                except ValueError as e:
                    self.damaged.append(f"run {str(rid)[:8]}: {e}; it is left out")
                    continue
                if status == RUNNING and not _alive(owner):
                    status = INTERRUPTED
                out.append({**record, "status": status, "created": created, "updated": updated,
                            "final": {k: final.get(k) for k in ("step", "train_loss", "val_loss",
                                                                "train_acc", "val_acc")},
                            "checkpoint": ck, "browser": browser_id, "owner": owner})
            return out

    def run(self, run_id: str) -> dict | None:
        """One run as runs() lists it, or None."""
        found = self.runs(run_id)
        return found[0] if found else None

    def rows(self, run_id: str) -> list[dict]:
        with self._connect() as db:
            return [json.loads(r) for (r,) in db.execute(
                "SELECT row FROM rows WHERE run_id = ? ORDER BY step", (run_id,))]

    def metrics_csv(self, run_id: str) -> str:
        """The run's metrics rows as CSV: one line per logged step, the run-wide numbers
        (per-layer statistics and the verdict's details stay in the rows' JSON)."""
        import csv

        rows = self.rows(run_id)
        columns = [k for k in CSV_COLUMNS if any(k in r for r in rows)]
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns + ["health"])
        for r in rows:
            w.writerow([r.get(k) if r.get(k) is not None else "" for k in columns]
                       + [(r.get("health") or {}).get("status", "")])
        return out.getvalue()


def describe(spec) -> str:
    """A run's default name: its data, hidden layers and optimizer, e.g.
    "spiral · 8-8 tanh · adam 0.01"."""
    layers = "-".join(str(layer.params.get("units", layer.type)) for layer in spec.model.layers)
    rate = spec.optimizer.params.get("lr")
    return " · ".join(part for part in (
        spec.data.name, f"{layers or 'linear'} {spec.model.activation.name}",
        f"{spec.optimizer.name}{f' {rate:g}' if rate else ''}") if part)


class StoreWriter(Callback):
    """Records a run into a RunStore as it trains: created at the first step, the logged rows
    written together at most every `flush_every` seconds, a checkpoint at the first logged
    step, then on a logged step at most every `checkpoint_every` seconds and when the run
    ends, and the summary at the end.

    run_id: the new run's id (the app's page id; an older record under it moves aside), or,
    with `going_on` = the step of its checkpoint, a stored run this writer goes on with: rows
    stored after that step are dropped when training moves past it (resume). A store that
    fails is reported once on stderr and tried again; the run trains on."""
    name = "store"
    MAX_PENDING = 100_000  # rows kept for a store that keeps failing; older ones are given up

    def __init__(self, store: RunStore, name: str | None = None, run_id: str | None = None,
                 checkpoint_every: float = CHECKPOINT_EVERY_S, browser: str | None = None,
                 flush_every: float = FLUSH_EVERY_S, tags: list[str] = (),
                 going_on: int | None = None):
        self.store, self.run_name, self.run_id, self.tags = store, name, run_id, list(tags)
        self.every, self.browser, self.flush_every = checkpoint_every, browser, flush_every
        self._flushed_at = time.monotonic()
        # the first checkpoint at the first logged step: a process that dies before
        # `checkpoint_every` seconds still leaves one to go on from
        self._saved_at = -math.inf
        self._pending: list[dict] = []
        self._spec = None  # set at the start until the run's record is created
        self._going_on = going_on  # reopen the stored run when training moves on
        self.saved_step: int | None = going_on  # the step of the last checkpoint written
        self.failure: str | None = None  # the last store error, if it failed

    def _guarded(self, fn) -> bool:
        try:
            fn()
        except self.store.errors as e:
            if self.failure is None:
                print(f"netlab: the run store {self.store.where} failed ({e}); the run trains "
                      "on and its rows are kept to write later", file=sys.stderr)
            self.failure = str(e)
            return False
        self.failure = None
        return True

    def on_fit_start(self, trainer):
        if self._going_on is not None:
            return
        self._spec = trainer.spec
        self.run_id = self.run_id or uuid.uuid4().hex
        self._create()

    def _create(self) -> bool:
        """The run's record, once (a store that failed at the start is asked again before the
        rows: they cannot be written without it)."""
        if self._spec is None:  # created already, or a resumed run's
            return True

        def create():
            if self.store.exists(self.run_id):
                self.store.rekey(self.run_id, uuid.uuid4().hex)  # never write into another run
            self.store.create(self._spec.to_json(), self.run_name or describe(self._spec),
                              self.run_id, self.browser, self.tags)
        if not self._guarded(create):
            return False
        self._spec = None
        return True

    def catch_up(self, trainer) -> bool:
        """Write now what a failing store could not take (the run has stopped, so no logged
        row will try again): its rows, then, if it ended, its last checkpoint and summary.
        True once nothing is left to write."""
        if self.failure is None:
            return True
        if not self.flush():
            return False
        self.save(trainer)
        if trainer.done and self.failure is None:
            if trainer.stopped == "cancelled":
                self._guarded(lambda: self.store.pause(self.run_id))
            else:
                self._guarded(lambda: self.store.finish(self.run_id, trainer.summary()))
        return self.failure is None

    def _reopen(self) -> None:
        """Training moves past a resumed run's checkpoint: its later rows go, it runs again."""
        if self._going_on is not None and \
                self._guarded(lambda: self.store.reopen(self.run_id, self._going_on)):
            self._going_on = None

    def on_log(self, trainer, row):
        self._reopen()
        self._pending.append(trainer.history.last)
        del self._pending[:-self.MAX_PENDING]
        if time.monotonic() - self._flushed_at >= self.flush_every:
            self.flush()

    def flush(self) -> bool:
        """Write the rows logged since the last write (kept for later if the store fails)."""
        self._flushed_at = time.monotonic()
        if not self._create():
            return False
        if not self._pending:
            return True
        rows = list(self._pending)
        if self._guarded(lambda: self.store.append(self.run_id, *rows)):
            del self._pending[:len(rows)]
            return True
        return False

    def on_fit_end(self, trainer):
        self._reopen()
        if trainer.stopped == "cancelled":  # interrupted, not ended: it may go on from here
            self.save(trainer)
            self._guarded(lambda: self.store.pause(self.run_id))
        elif self.flush():
            self._guarded(lambda: self.store.finish(self.run_id, trainer.summary()))

    def on_step_done(self, trainer):
        self._reopen()
        due = trainer.is_log_step(trainer.step_count) and \
            time.monotonic() - self._saved_at >= self.every
        if trainer.done or due:
            self.save(trainer)
        if trainer.done and trainer.stopped != "cancelled" and self.failure is None:
            # again, now with the test metrics in the summary
            self._guarded(lambda: self.store.finish(self.run_id, trainer.summary()))

    def save(self, trainer) -> None:
        """A checkpoint now (between steps: the app calls it at Pause and Step)."""
        if not trainer._started:
            return
        self._reopen()
        if not self.flush():  # the rows first: a checkpoint never runs ahead of the log
            return
        # without the History: its rows are stored already (resume appends them again)
        state = trainer.state_dict(history=False)
        if self._guarded(lambda: self.store.save_checkpoint(self.run_id, state)):
            self._saved_at, self.saved_step = time.monotonic(), trainer.step_count

    def close(self, trainer) -> None:
        """The process lets go of the run: its last checkpoint, and paused if it had not ended
        (someone may go on from there)."""
        if not trainer._started:
            return
        self.save(trainer)
        if not trainer.done:
            self._guarded(lambda: self.store.pause(self.run_id))


def _record(text, kind=dict):
    """A stored JSON field read back (a store is a file anyone may have edited): ValueError
    naming what is wrong. Rows may hold NaN (a run that diverged), so json's own reader, with
    the nesting bounded first."""
    if not isinstance(text, (str, bytes)) or nesting_depth(text if isinstance(text, str)
                                                           else text.decode("utf-8", "replace")) \
            > MAX_DEPTH:
        raise ValueError(f"a stored field is damaged (not text, or nested past {MAX_DEPTH} "
                         "levels)")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"a stored field is not JSON ({str(e)[:80]})") from None
    if not isinstance(value, kind):
        raise ValueError(f"a stored field is damaged (a {type(value).__name__}, not a "
                         f"{kind.__name__})")
    return value

def resume(store: RunStore, run_id: str, callbacks=(),
           checkpoint_every: float = CHECKPOINT_EVERY_S, **trainer_kw):
    """A Trainer going on with stored run `run_id` from its last checkpoint, recording into the
    same run; a run that had ended comes back ended (its charts, weights and summary; `extend`
    trains it further). The stored rows after the checkpoint are dropped only once training
    moves on (they are logged again). Refused, with a message saying why: a run another live
    process is training, and a finished run without a checkpoint (trained on Ray) that could
    only start over. A run stopped before its first checkpoint starts over."""
    from ..train.trainer import Trainer

    found = store.run(run_id)
    if found is None:
        raise SpecError(f"no stored run {run_id!r}; `python -m engine runs` lists them")
    if found["status"] == RUNNING and found.get("owner") != this_process():
        raise SpecError(f"run {run_id[:8]} is being trained by another process "
                        f"({found.get('owner')}); wait until it ends or stops")
    state = store.checkpoint(run_id)
    if state is not None and not isinstance(state.get("logged_step") if isinstance(state, dict)
                                            else None, int):
        raise SpecError(f"run {run_id[:8]}'s checkpoint is damaged (it names no logged step); "
                        "its curves stay in the store, and its config trains it again")
    if state is None and found["status"] == FINISHED:
        raise SpecError(f"run {run_id[:8]} has no checkpoint to go on from (it trained on Ray, "
                        "or elsewhere); its curves stay in the store, and its config trains it "
                        "again from the start")
    last = state["logged_step"] if state is not None else 0
    writer = StoreWriter(store, run_id=run_id, checkpoint_every=checkpoint_every,
                         going_on=last)
    trainer = Trainer(found["spec"], callbacks=[writer, *callbacks], **trainer_kw)
    if state is not None:  # the rows up to the checkpoint's last logged one (a divergence
        # row is logged one step past the last update)
        trainer.load_state_dict(state, [r for r in store.rows(run_id) if r["step"] <= last])
    return trainer
