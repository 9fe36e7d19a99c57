"""Every preset runs and shows the effect its explanation promises (its `expect` block)."""
import json
from functools import lru_cache

import pytest

from engine import ExperimentSpec, Trainer
from engine.presets import list_presets, load_preset, preset_names

CONCEPT_IDS = {f"{g}{i}" for g, n in zip("ABCDEFGHI", (4, 3, 2, 4, 5, 8, 8, 6, 1))
               for i in range(1, n + 1)}


@lru_cache(maxsize=None)
def final(name: str, changes: str = "{}") -> tuple[dict, str]:
    """The last row (with the last evaluation's val metrics and the first row's health under
    `first_health`) and why the run stopped."""
    spec = ExperimentSpec.from_dict(load_preset(name)["config"]).with_changes(json.loads(changes))
    trainer = Trainer(spec).run()
    rows = trainer.history.rows
    evaluated = [r for r in rows if r.get("val_loss") is not None]
    return {**rows[-1], **{k: evaluated[-1][k] for k in ("val_loss", "val_acc")},
            "first_health": rows[0]["health"]}, trainer.stopped


def gap(row):
    return row["train_acc"] - row["val_acc"]


def weight_norm(row):
    return sum(layer["weight_norm"] or 0 for layer in row["layers"])


CHECKS = {
    "health": lambda row, stopped, v: row["health"]["status"] == v,
    "health_not": lambda row, stopped, v: row["health"]["status"] != v,
    "health_first": lambda row, stopped, v: row["first_health"]["status"] == v,
    "stopped": lambda row, stopped, v: stopped == v,
    "val_acc_above": lambda row, stopped, v: row["val_acc"] > v,
    "val_acc_below": lambda row, stopped, v: row["val_acc"] < v,
    "gap_above": lambda row, stopped, v: gap(row) > v,
    "smaller_gap_than": lambda row, stopped, v: gap(row) < gap(final(v)[0]),
    "smaller_weights_than": lambda row, stopped, v: weight_norm(row) < weight_norm(final(v)[0]),
    "better_than": lambda row, stopped, v: row[v["metric"]] < final(v["preset"])[0][v["metric"]],
}


def test_there_are_enough_presets_with_valid_metadata():
    presets = list_presets()
    assert len(presets) >= 12
    for p in presets:
        assert p["concepts"] and set(p["concepts"]) <= CONCEPT_IDS, p["name"]
        assert len(p["explanation"]) > 100 and p["title"] and p["summary"]
        assert set(p["expect"]) <= set(CHECKS) | {"worse_than"}, p["name"]
        ExperimentSpec.from_dict(p["config"])  # valid


@pytest.mark.parametrize("name", preset_names())
def test_preset_shows_its_effect(name):
    expect = load_preset(name)["expect"]
    row, stopped = final(name)
    for key, value in expect.items():
        if key == "worse_than":
            other = final(name, json.dumps(value["set"]))[0]
            assert row[value["metric"]] > other[value["metric"]], (name, row[value["metric"]],
                                                                   other[value["metric"]])
        else:
            assert CHECKS[key](row, stopped, value), (name, key, value, stopped, row["health"],
                                                      {k: row.get(k) for k in ("train_acc", "val_acc", "train_loss")})
