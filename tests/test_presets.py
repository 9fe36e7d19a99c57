"""Every preset keeps its word on seeds 0-4 (each claim of its explanation is a checked `expect`
entry: engine/presets/claims.py), and every fix its verdicts offer helps."""
import json
import math

import pytest
import torch

from engine import ExperimentSpec, Trainer
from engine.presets import list_presets, load_preset, preset_names
from engine.presets.claims import MEASURES, OPS, check, groups, margin, outcome, slack
from engine.train.callbacks import Nudge
from engine.train.fixes import without_undo

CONCEPT_IDS = {f"{g}{i}" for g, n in zip("ABCDEFGHI", (4, 3, 2, 4, 5, 8, 8, 6, 1))
               for i in range(1, n + 1)}
SEEDS = (0, 1, 2, 3, 4)
ROW_MEASURES = ("train_loss", "val_loss", "train_acc", "val_acc", "clip_frac", "saturated_min",
                "dead_max", "grad_ratio", "time_grad_ratio")


def test_there_are_enough_presets_with_valid_metadata_and_claims():
    presets = list_presets()
    assert len(presets) >= 12
    for p in presets:
        assert p["concepts"] and set(p["concepts"]) <= CONCEPT_IDS, p["name"]
        assert len(p["explanation"]) > 100 and p["title"] and p["summary"]
        ExperimentSpec.from_dict(p["config"])  # valid
        assert isinstance(p["expect"], list) and p["expect"], p["name"]
        for claim in p["expect"]:
            measure = claim["measure"]
            assert measure in MEASURES or measure.split("@")[0] in ROW_MEASURES, (p["name"], claim)
            assert len([k for k in claim if k in OPS]) == 1, (p["name"], claim)
            assert set(claim) <= {"measure", "set", "factor"} | set(OPS), (p["name"], claim)
            bound = claim[next(k for k in claim if k in OPS)]
            if isinstance(bound, dict) and "beside" in bound:  # what the page trains beside it
                assert p.get("compare"), (p["name"], "claims a side-by-side run but has none")


# Presets whose claims train the same runs (the adding problem's RNN, LSTM and GRU) are checked
# in one test: outcome() caches a run by its experiment, so each is trained once per seed.
GROUPS = groups()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("names", GROUPS, ids="+".join)
def test_preset_keeps_its_word_and_its_fixes_help(names, seed):
    """Every claim on every seed; on seed 0 also every fix its verdicts offer (the same run:
    outcome() trains it once, and a fix that is also a claimed variant is trained once)."""
    for name in names:
        failed = [(r["claim"], r["value"], r["bound"]) for r in check(name, seed)
                  if not r["holds"]]
        assert not failed, (name, seed, failed)
        if seed == 0:
            check_fixes(name)


@pytest.mark.slow
@pytest.mark.parametrize("names", GROUPS, ids="+".join)
def test_preset_claims_survive_a_nudge_of_the_starting_weights(names):
    """Seed 0 with every starting weight moved by one part in a million (callbacks.Nudge): what
    another CPU's rounding does. A claim that flips rests on chaos, not on its effect."""
    for name in names:
        failed = [(r["claim"], r["value"], r["bound"]) for r in check(name, 0, nudge=True)
                  if not r["holds"]]
        assert not failed, (name, failed)


def test_the_nudge_moves_every_weight_by_a_part_in_a_million_and_keeps_ties():
    spec = ExperimentSpec.from_dict({"model": {"layers": [8, 8]}, "training": {"steps": 1}})
    plain, nudged = Trainer(spec), Trainer(spec, callbacks=[Nudge(seed=3)])
    nudged._call("on_fit_start")
    for a, b in zip(plain.model.parameters(), nudged.model.parameters()):
        moved = (b - a).detach().abs()
        assert float(moved.max()) <= 1.01e-6 * float(a.abs().max()) + 1e-12
        assert float(moved.max()) > 0 or float(a.abs().max()) == 0
    zeros = spec.with_changes({"model.init": "zeros", "model.bias_init": 0.5})
    t = Trainer(zeros, callbacks=[Nudge(seed=3)])
    t._call("on_fit_start")
    for p in t.model.parameters():
        assert len(torch.unique(p)) == 1  # equal numbers stay equal: symmetry survives


def test_margin_reads_the_worst_seed_against_the_spread_below_the_median():
    held = [{"holds": True, "slack": s} for s in (0.5, 0.6, 0.7, 0.9, 1.0)]
    m = margin(held)
    assert m["worst"] == 0.5 and m["median"] == 0.7 and m["with_margin"]  # 0.5 >= 0.2 / 3
    thin = [{"holds": True, "slack": s} for s in (0.01, 0.6, 0.7, 0.9, 1.0)]
    assert not margin(thin)["with_margin"]  # holds on every seed, but by a hair
    far_ahead = held[:-1] + [{"holds": True, "slack": 50.0}]  # one seed far on the good side
    assert margin(far_ahead)["with_margin"]
    assert not margin(held, nudged={"holds": False, "slack": -0.1})["with_margin"]
    assert slack("above", 0.5, 0.05, "grad_ratio_first") == pytest.approx(math.log(10))
    assert slack("below", 0.02, 0.1, "time_grad_ratio") == pytest.approx(0.08)
    assert slack("below", 0.01, 0.05, "train_loss", factor=True) == pytest.approx(math.log(5))


def test_the_groups_cover_every_preset_once():
    assert sorted(n for g in GROUPS for n in g) == sorted(preset_names())


# ----------------------------------------------------------------------------- fixes

def offered(rows) -> dict[str, tuple[str, dict]]:
    """label -> (the status it was offered for, the fix) over every row of a run."""
    out = {}
    for r in rows:
        for f in r["health"]["fixes"]:
            out.setdefault(f["label"], (f["for"], f))
    return out


def check_fixes(name: str) -> None:
    """Every fix offered on the preset's run (seed 0) helps (its status goes, or the loss it
    targets falls by 10%; the validation loss by 5% for overfitting) and is not undone by a
    later fix; no fix is a no-op, and no two set
    one key differently."""
    spec = ExperimentSpec.from_dict(load_preset(name)["config"])
    base = outcome(name, 0)
    base_statuses = {r["health"]["status"] for r in base.rows}
    for r in base.rows:
        claimed = {}
        for f in r["health"]["fixes"]:
            assert spec.with_changes(f["changes"]).to_dict() != spec.to_dict(), f
            for key, value in f["changes"].items():
                assert claimed.setdefault(key, value) == value, (r["health"]["fixes"])
    for label, (status, fix) in offered(base.rows).items():
        fixed_spec = spec.with_changes(fix["changes"])
        after = outcome(name, 0, json.dumps(fix["changes"], sort_keys=True))
        statuses = {r["health"]["status"] for r in after.rows}
        # overfitting's fixes target the validation loss (by 5%: they trade training fit for it)
        target, before, gain = ((after.val, base.val, 0.95) if status == "overfitting"
                                else (after.train, base.train, 0.9))
        improved = target["loss"] is not None and before["loss"] is not None and \
            target["loss"] < gain * before["loss"]
        gone = status not in statuses
        assert gone or improved, (name, label, status, before["loss"], target["loss"], statuses,
                                  base_statuses)
        later = [f for r in after.rows for f in r["health"]["fixes"]]
        assert without_undo(later, spec, fixed_spec) == later, (name, label, [
            f["label"] for f in later if f not in without_undo(later, spec, fixed_spec)])


def test_fix_chains_the_issue_names_do_not_loop():
    """deep_relu_xavier -> Switch to leaky ReLU -> never 'Switch to ReLU + He init'."""
    spec = ExperimentSpec.from_dict(load_preset("deep_relu_xavier")["config"])
    leaky = spec.with_changes({"model.activation": "leaky_relu"})
    t = Trainer(leaky).run()
    labels = {f["label"] for r in t.history.rows for f in r["health"]["fixes"]}
    assert "Switch to ReLU + He init" not in labels and "Use He init" in labels, labels
    # spiral_linear (Adam 0.01 already) is never offered Adam or a higher rate
    t = Trainer(ExperimentSpec.from_dict(load_preset("spiral_linear")["config"])).run()
    labels = {f["label"] for r in t.history.rows for f in r["health"]["fixes"]}
    assert not any("Adam" in x or "Raise LR" in x for x in labels), labels
    json.dumps(t.history.rows[-1]["health"])  # the verdict is plain JSON
