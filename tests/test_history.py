"""History stays bounded on long runs and still tells the whole story: old rows are thinned on a
uniform grid, recent rows keep their per-layer detail, and the chosen rows (first, best,
health-status changes) survive. Counts only: nothing here is timed."""
import math
import random
import threading

import pytest

from engine.train.history import MAX_LAYER_ENTRIES, MAX_ROWS, History


def layers(n, step):
    return [{"name": f"fc{i}", "act_grad_norm": 1.0 / (step + i + 1), "weight_norm": 1.0}
            for i in range(n)]


def row(step, n_layers=0, val_loss=None, status="ok"):
    r = {"step": step, "train_loss": 1.0 / step, "val_loss": val_loss,
         "health": {"status": status, "messages": []}}
    if n_layers:
        r["layers"] = layers(n_layers, step)
    return r


def entries(h):
    return sum(len(r.get("layers") or ()) for r in h.rows)


def test_short_history_is_kept_whole_and_round_trips():
    rows = [row(s, 3, val_loss=1.0 / s) for s in range(1, 101)]
    h = History(rows)
    assert h.rows == rows and len(h) == 100 and h.appended == 100
    assert History.from_jsonl(h.to_jsonl()) == h
    assert h[0] == rows[0] and h[-1] == rows[-1] and h.last == rows[-1]


def test_values_are_cleaned():
    h = History([{"step": 1, "train_loss": math.nan, "layers": [{"name": "a", "x": math.inf}],
                  "health": {"status": "ok", "messages": ["m"]}}])
    assert h.last["train_loss"] is None and h.last["layers"][0]["x"] is None
    assert h.last["health"] == {"status": "ok", "messages": ["m"]}


def test_rows_are_capped_in_step_order_and_cover_the_whole_run():
    h = History(max_rows=400)
    for s in range(1, 20_001):
        h.append(row(s))
    steps = [r["step"] for r in h.rows]
    assert len(steps) <= 400
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert steps[0] == 1 and steps[-1] == 20_000
    # the newest quarter is dense ...
    assert steps[-100:] == list(range(20_000 - 99, 20_001))
    # ... and the older part is a uniform grid reaching back to the start (compaction runs in
    # batches: it leaves 300 rows, the newest 100 dense, so at most the newest 200 are not yet
    # on the grid)
    old = [s for s in steps if s <= 20_000 - 200]
    gaps = {b - a for a, b in zip(old, old[1:])}
    assert len(gaps) == 1, gaps
    assert len(old) >= 100 and old[1] - old[0] <= 20_000 / 100


def test_first_best_and_status_changes_survive_with_their_detail():
    rng = random.Random(0)
    h = History(max_rows=200, max_layer_entries=2_000)
    appended = []
    statuses = {3_000: "plateau", 3_500: "ok", 7_777: "vanishing", 7_900: "ok"}
    status = "ok"
    for s in range(1, 10_001):
        status = statuses.get(s, status)
        loss = rng.uniform(0.5, 2.0) if s % 3 == 0 else None
        if s == 4_321:
            loss = 0.1  # the best, early enough to be in the thinned part
        r = row(s, 20, val_loss=loss, status=status)
        appended.append(r)
        h.append(r)
    rows = {r["step"]: r for r in h.rows}
    for step in (1, 4_321, *statuses):
        assert step in rows, step
        assert len(rows[step]["layers"]) == 20, step
    assert h.best["step"] == 4_321 and h.best["val_loss"] == 0.1
    assert len(h) <= 200 and entries(h) <= 2_000


def test_recent_rows_keep_their_detail():
    h = History(max_rows=1_000, max_layer_entries=2_000)
    for s in range(1, 5_001):
        h.append(row(s, 50))
    rows = h.rows
    # half the layer budget (1,000 entries = 20 rows of 50 layers) of the newest rows is dense
    assert all(len(r["layers"]) == 50 for r in rows[-20:])
    detailed = [r["step"] for r in rows if r.get("layers")]
    assert detailed[0] == 1 and detailed[-1] == 5_000
    assert len(detailed) * 50 == entries(h) == h.layer_entries <= 2_000
    # charts see rows without detail as "not measured", never a missing key error
    column = h.layer_column("fc0", "weight_norm")
    assert len(column) == len(rows) and None in column and column[-1] == 1.0


@pytest.mark.slow
def test_memory_bound_at_the_step_cap_with_200_layers():
    """100,000 rows of 200 layers: the uncapped History held 20 million layer entries (~10 GB)."""
    layer_list = layers(200, 0)
    h = History()
    for s in range(1, 100_001):
        h.append({"step": s, "train_loss": 1.0, "val_loss": None, "layers": layer_list,
                  "health": {"status": "ok", "messages": []}})
        if s % 10_000 == 0:
            assert len(h) <= MAX_ROWS and h.layer_entries <= MAX_LAYER_ENTRIES + 200
    assert len(h) <= MAX_ROWS
    assert h.layer_entries == entries(h) <= MAX_LAYER_ENTRIES
    steps = [r["step"] for r in h.rows]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 100_000
    assert h.appended == 100_000


@pytest.mark.parametrize("seed", range(3))
def test_best_is_exact_against_every_row_appended(seed):
    rng = random.Random(seed)
    h = History(max_rows=64, max_layer_entries=64)
    appended = []
    for s in range(1, 3_001):
        loss = None if rng.random() < 0.3 else rng.choice([rng.uniform(0, 5), math.nan, 1.0])
        r = row(s, 2, val_loss=loss)
        appended.append(r)
        h.append(r)
    finite = [r for r in appended if r["val_loss"] is not None and math.isfinite(r["val_loss"])]
    oracle = min(finite, key=lambda r: r["val_loss"])  # the first of equal minima
    assert (h.best["step"], h.best["val_loss"]) == (oracle["step"], oracle["val_loss"])
    assert h.best["step"] in {r["step"] for r in h.rows}
    assert len(h) <= 64


def test_since_is_by_step_and_negative_means_the_newest_rows():
    h = History(max_rows=40)
    for s in range(1, 1_001):
        h.append(row(s))
    assert [r["step"] for r in h.since(-5)] == [996, 997, 998, 999, 1000]
    assert h.tail(3) == h.rows[-3:]
    assert all(r["step"] >= 990 for r in h.since(990)) and h.since(990)[-1]["step"] == 1000
    assert h.since(0) == h.rows


def test_readers_see_consistent_snapshots_while_a_writer_appends():
    h = History(max_rows=300, max_layer_entries=1_500)
    errors = []
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                rows = h.rows
                steps = [r["step"] for r in rows]
                assert steps == sorted(steps)
                for r in rows:  # a row's detail never vanishes under a reader
                    if r.get("layers"):
                        assert len(r["layers"]) == 10
                h.layer_column("fc3", "weight_norm")
                h.since(-20)
                if rows:
                    assert h[0]["step"] == 1 and h.last["step"] >= rows[-1]["step"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for s in range(1, 20_001):
        h.append(row(s, 10, val_loss=1.0 / s if s % 7 == 0 else None))
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(h) <= 300 and h.layer_entries <= 1_500


def test_a_trainer_with_a_thinned_history_still_logs_every_row_and_the_exact_best(tmp_path):
    """The History keeps a thinned view; metrics.jsonl (JsonlWriter) and summary's best see
    every row as it is logged."""
    import json

    from engine import ExperimentSpec, Trainer
    from engine.train.callbacks import JsonlWriter

    path = tmp_path / "metrics.jsonl"
    spec = ExperimentSpec.from_dict({"data": {"name": "moons", "n": 200},
                                     "model": {"layers": [8, 8]},
                                     "optimizer": {"name": "sgd", "lr": 0.3},
                                     "training": {"steps": 400, "batch_size": 16},
                                     "diagnostics": {"every": 1}})
    t = Trainer(spec, callbacks=[JsonlWriter(str(path))])
    t.history = History(max_rows=32, max_layer_entries=40)
    t.run()
    logged = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 401))
    assert all(r["layers"] for r in logged)  # every row written with its detail
    assert len(t.history) <= 32 and t.history.layer_entries <= 40
    oracle = min((r for r in logged if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    assert t.summary()["best"] == {"step": oracle["step"], "val_loss": oracle["val_loss"]}
    assert t.summary()["final"]["step"] == 400


@pytest.mark.parametrize("seed", range(3))
def test_a_copy_fed_by_delta_stays_equal_through_thinning(seed):
    """What a page in the web process holds of a run trained in a worker (serve/workers.py): it
    catches up at random moments, sometimes after many thinnings, and always equals the
    original, rows, detail, best and later thinning alike."""
    rng = random.Random(seed)
    original = History(max_rows=40, max_layer_entries=120)
    copy = History(max_rows=40, max_layer_entries=120)
    seen, kinds = (0, 0), set()
    for step in range(1, 600):
        original.append(row(step, n_layers=rng.choice([0, 3]), val_loss=rng.random(),
                            status=rng.choice(["ok", "ok", "ok", "vanishing"])))
        if rng.random() < 0.2 or step == 599:
            delta = original.delta(*seen)
            kinds.add("full" if "full" in delta else "rows")
            copy.catch_up(delta)
            seen = (delta["appended"], delta["compactions"])
            assert copy.rows == original.rows and copy.best == original.best
            assert copy.state_dict() == original.state_dict()
    assert kinds == {"full", "rows"} and original.compactions > 10
    assert original.delta(*seen)["rows"] == []  # nothing new: nothing sent
