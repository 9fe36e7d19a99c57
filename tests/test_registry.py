"""Registry meta-tests: every entry of every registry builds, trains one step through the
Trainer, and survives a JSON round trip of the spec that uses it.

A new registry entry is covered automatically; a new *registry* fails
test_every_registry_has_a_spec_builder until it gets a builder here.
"""
import json
import math

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.core.registry import ALL, Param
from engine.core.spec import DataSpec

# A tiny, fast base experiment; each case overrides one choice.
BASE = {
    "seed": 3,
    "data": {"name": "gaussians", "n": 60, "val_fraction": 0.2},
    "model": {"layers": [6]},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "training": {"batch_size": 16, "steps": 5},
    "diagnostics": {"every": 1},
}


def merge(base, over):
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "name" not in v:
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def csv_file(tmp_path, task="classification"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    lines = ["a,b,c,label"]
    for i, row in enumerate(x.tolist()):
        target = i % 3 if task == "classification" else round(row[0] - row[1], 4)
        lines.append(",".join(f"{v:.4f}" for v in row) + f",{target}")
    path = tmp_path / f"table_{task}.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def config_for(kind, key, tmp_path):
    """A config that exercises registry entry `key` of registry `kind`."""
    if kind == "activation":
        return merge(BASE, {"model": {"activation": key, "layers": [6, 5]}})
    if kind == "initializer":
        return merge(BASE, {"model": {"init": key}})
    if kind == "optimizer":
        return merge(BASE, {"optimizer": {"name": key}})
    if kind == "schedule":
        return merge(BASE, {"schedule": key})
    if kind == "loss":
        if key == "bce":
            return merge(BASE, {"data": {"name": "circle", "n": 60}, "loss": key})
        return merge(BASE, {"loss": key})
    if kind == "dataset":
        if key == "csv":
            return merge(BASE, {"data": {"name": "csv", "path": csv_file(tmp_path),
                                         "target": "label"}})
        if key == "digits":
            return merge(BASE, {"data": {"name": "digits", "n": 50}})
        if ALL["dataset"][key].tags.get("targets") == "steps":  # an answer at every step
            first = [{"type": "embedding"}] if ALL["dataset"][key].tags["input"] == "tokens" else []
            data = {"name": key} if key == "chars" else {"name": key, "n": 60}
            return merge(BASE, {"data": data,
                                "model": {"layers": [*first, {"type": "rnn", "units": 6}]}})
        if ALL["dataset"][key].param("packed"):  # packed sequences: a recurrent layer first
            return merge(BASE, {"data": {"name": key, "n": 60}, "model": {"layers": [
                {"type": "rnn", "units": 6}, {"type": "last_step"}]}})
        return merge(BASE, {"data": {"name": key, "n": 60}})
    if kind == "feature":
        return merge(BASE, {"data": {"features": [key]}})
    if kind == "normalization":
        return merge(BASE, {"data": {"normalize": key}})
    if kind == "layer":
        layer = {"type": key}
        if key in ("linear", "residual"):
            layer["units"] = 5
        if key == "activation":
            layer["activation"] = "tanh"
        if ALL["layer"][key].tags.get("image_only"):  # convolutional: on images, first
            return merge(BASE, {"data": {"name": "digits", "n": 50},
                                "model": {"layers": [layer, 6]}})
        if ALL["layer"][key].tags.get("emits_output"):  # an encoder-decoder: the answers
            return merge(BASE, {"data": {"name": "reverse", "n": 50, "length": 4},
                                "model": {"layers": [layer]}})
        if ALL["layer"][key].tags.get("sequence_only"):  # recurrent: on sequences, first
            return merge(BASE, {"data": {"name": "sine", "n": 50, "length": 5},
                                "model": {"layers": [layer, 6]}})
        if key == "embedding":  # token ids
            return merge(BASE, {"data": {"name": "chars", "length": 8},
                                "model": {"layers": [layer, {"type": "gru", "units": 4}]}})
        return merge(BASE, {"model": {"layers": [6, layer]}})
    raise AssertionError(f"no spec builder for registry {kind!r}")


CASES = [(kind, entry.key) for kind, reg in ALL.items() for entry in reg]
# Regression losses are also written for regression data: check them there too.
EXTRA = [("loss-regression", e.key) for e in ALL["loss"] if e.tags.get("task") == "regression"]


def test_every_registry_has_a_spec_builder(tmp_path):
    for kind, reg in ALL.items():
        assert len(reg) > 0, kind
        config_for(kind, reg.keys()[0], tmp_path)  # raises for an unknown registry


def _one_step(config):
    spec = ExperimentSpec.from_dict(config)
    assert ExperimentSpec.from_dict(json.loads(spec.to_json())) == spec
    trainer = Trainer(spec)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer.step() is True
    assert trainer.step_count == 1
    row = trainer.history.rows[0]
    assert row["step"] == 1
    assert math.isfinite(row["train_loss"])
    after = list(trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), "the step changed nothing"
    return spec, trainer


@pytest.mark.parametrize("kind,key", CASES + EXTRA)
def test_entry_builds_trains_one_step_and_round_trips(kind, key, tmp_path):
    if kind == "loss-regression":
        config = merge(BASE, {"data": {"name": "plane", "n": 60}, "loss": key})
    else:
        config = config_for(kind, key, tmp_path)
    spec, trainer = _one_step(config)
    # the entry really is in the spec that was trained
    text = spec.to_json()
    assert f'"{key}"' in text or kind == "layer" and f'"type": "{key}"' in text


def test_csv_regression_trains_one_step(tmp_path):
    config = merge(BASE, {"data": {"name": "csv", "path": csv_file(tmp_path, "regression"),
                                   "target": "label", "task": "regression"}})
    spec, trainer = _one_step(config)
    assert spec.loss.name == "mse"  # the default loss follows the task
    assert trainer.data.task == "regression"


@pytest.mark.slow
def test_every_layer_type_accepts_image_input_after_a_linear_layer():
    for key in ALL["layer"].keys():
        layer = {"type": key, **({"units": 5} if key in ("linear", "residual") else {})}
        config = merge(BASE, {"data": {"name": "digits", "n": 40},
                              "model": {"layers": [6, layer]}})
        if ALL["layer"][key].tags.get("image_only"):  # after a linear layer there is no image
            with pytest.raises(SpecError, match=rf"model.layers\[1\]: an? {key} layer needs an "
                               r"image \(channels, height, width\), but its input has shape \[6\]"):
                _one_step(config)
        elif key == "embedding":  # nor token ids
            with pytest.raises(SpecError, match=r"an embedding reads tokens"):
                _one_step(config)
        elif ALL["layer"][key].tags.get("sequence_only"):  # nor a sequence
            with pytest.raises(SpecError, match=rf"model.layers\[1\] \({key}, \w+\): it needs a "
                               r"sequence \(steps, features\), but its input has shape \[6\]"):
                _one_step(config)
        else:
            _one_step(config)


def test_no_real_entry_takes_a_key_the_tests_use():
    """tests/test_extending.py registers throwaway entries under test_*: keep that free."""
    assert [f"{kind}.{e.key}" for kind, reg in ALL.items() for e in reg
            if e.key.startswith("test_")] == []


@pytest.mark.parametrize("kind", list(ALL))
def test_entries_have_docs_and_sane_params(kind):
    reg = ALL[kind]
    for entry in reg:
        assert isinstance(entry.doc, str) and entry.doc.strip(), f"{kind} {entry.key} has no doc"
        names = [p.name for p in entry.params]
        assert len(names) == len(set(names)), f"{kind} {entry.key} repeats a parameter"
        for p in entry.params:
            where = f"{kind}.{entry.key}.{p.name}"
            assert p.doc.strip(), f"{where} has no doc"
            if p.default is None:
                # a required value (csv path/target): None must be refused with the key named
                with pytest.raises(SpecError, match=rf"{where}.*non-empty string"):
                    p.check(None, where)
                assert p.check("x.csv", where) == "x.csv"
                continue
            assert p.check(p.default, where) == p.default, where
            if p.choices is not None:
                assert p.default in p.choices
                with pytest.raises(SpecError, match=where):
                    p.check("not-a-choice", where)
                continue
            if isinstance(p.default, bool):
                with pytest.raises(SpecError, match=where):
                    p.check(1, where)
                continue
            if p.low is not None and not isinstance(p.default, tuple):
                bad = p.low if p.low_open else p.low - 1
                with pytest.raises(SpecError, match=where):
                    p.check(bad, where)
            if p.high is not None and not isinstance(p.default, tuple):
                bad = p.high if p.high_open else p.high + 1
                with pytest.raises(SpecError, match=where):
                    p.check(bad, where)
            with pytest.raises(SpecError, match=where):
                p.check("text", where)


def test_param_check_coerces_and_rejects():
    p = Param("units", 64, low=1, high=10)
    assert p.check(3.0, "k") == 3 and isinstance(p.check(3.0, "k"), int)
    for bad in (2.5, True, "3", float("nan"), 0, 11):
        with pytest.raises(SpecError, match=r"k=.* is not allowed: expected an integer >= 1"):
            p.check(bad, "k")
    q = Param("lr", 0.1, low=0.0, low_open=True)
    assert q.check(1, "lr") == 1.0 and isinstance(q.check(1, "lr"), float)
    with pytest.raises(SpecError, match="> 0"):
        q.check(0.0, "lr")
    with pytest.raises(SpecError):
        q.check(float("inf"), "lr")
    t = Param("betas", (0.9, 0.999), low=0.0, high=1.0, high_open=True)
    assert t.check([0.5, 0.6], "b") == (0.5, 0.6)
    for bad in ([0.5], [0.5, 1.0], "ab", 0.5):
        with pytest.raises(SpecError):
            t.check(bad, "b")


def test_unknown_key_names_the_registry_and_lists_the_keys():
    for kind, reg in ALL.items():
        with pytest.raises(SpecError) as e:
            reg["definitely-not-registered"]
        msg = str(e.value)
        assert "definitely-not-registered" in msg
        assert all(k in msg for k in reg.keys())


def test_dataclass_defaults_agree_with_from_dict_defaults():
    assert ExperimentSpec() == ExperimentSpec.from_dict({})
    assert DataSpec() == DataSpec.from_dict({})
    assert ExperimentSpec.from_dict(json.loads(ExperimentSpec().to_json())) == ExperimentSpec()
    # the dataset's own defaults fill in when absent
    spiral = ALL["dataset"]["spiral"]
    d = DataSpec.from_dict({"name": "spiral"})
    for p in spiral.params:
        assert getattr(d, p.name) == p.default


def test_an_old_name_loads_as_its_entry_and_is_listed_nowhere():
    from engine import ExperimentSpec
    from engine.core.registry import ACTIVATIONS

    spec = ExperimentSpec.from_dict({"model": {"activation": "swish",
                                               "layers": [{"units": 4, "activation": "swish"}]}})
    assert spec.model.activation.name == "silu" and spec.model.layers[0].activation.name == "silu"
    assert spec.to_dict()["model"]["activation"] == "silu"
    assert "swish" in ACTIVATIONS and "swish" not in ACTIVATIONS.keys()
    assert "swish" not in ACTIVATIONS.offered()


def test_softmax_is_valid_in_a_config_but_not_offered_for_hidden_layers():
    from engine import ExperimentSpec
    from engine.core.registry import ACTIVATIONS

    assert "softmax" not in ACTIVATIONS.offered()
    assert ExperimentSpec.from_dict({"model": {"activation": "softmax"}}).model.activation.name \
        == "softmax"
