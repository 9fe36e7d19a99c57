"""ExperimentSpec: defaults, JSON round trips, dotted-key changes, and every bad config refused
with a SpecError that names the dotted key and what is allowed (DESIGN.md §2.1)."""
import json

import pytest

from engine import ExperimentSpec, SpecError, Trainer, load_spec
from engine.core.registry import ACTIVATIONS, FEATURES, LOSSES, OPTIMIZERS
from engine.core.spec import MAX_LAYERS, Choice, GradClipSpec, LayerSpec, set_path
from engine.presets import load_preset, preset_names


def round_trip(spec):
    again = ExperimentSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    return again


# ----------------------------------------------------------------------------- defaults


def test_defaults_match_the_documented_config():
    d = ExperimentSpec().to_dict()
    assert d["seed"] == 0 and d["device"] == "auto"
    assert d["data"] == {"name": "spiral", "n": 600, "noise": 0.05, "classes": 3,
                         "features": ["x1", "x2"], "normalize": "standard",
                         "val_fraction": 0.2, "test_fraction": 0.0}
    assert d["model"] == {"activation": "relu", "init": "he_normal", "bias_init": 0.0,
                          "layers": [{"type": "linear", "units": 64},
                                     {"type": "linear", "units": 64}]}
    assert d["loss"] == "cross_entropy"
    assert d["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert d["schedule"] == "constant"
    assert d["regularization"] == {"l1": 0.0, "l2": 0.0}
    assert d["training"]["grad_clip"] is None and d["training"]["early_stopping"] is None
    assert d["training"]["log_every"] == 10 and "diagnostics" not in d
    json.dumps(d, allow_nan=False)


def test_a_config_with_the_old_logging_key_still_loads_and_is_written_with_the_new_one():
    old = ExperimentSpec.from_dict({"diagnostics": {"every": 7}, "training": {"steps": 50}})
    assert old.training.log_every == 7 and old.training.steps == 50
    assert old == ExperimentSpec.from_dict({"training": {"steps": 50, "log_every": 7}})
    d = old.to_dict()
    assert d["training"]["log_every"] == 7 and "diagnostics" not in d
    assert ExperimentSpec.from_dict({"diagnostics": {"every": 7},
                                     "training": {"steps": 50, "log_every": 7}}) == old
    with pytest.raises(SpecError, match="diagnostics.every.*training.log_every"):
        ExperimentSpec.from_dict({"diagnostics": {"every": 7}, "training": {"log_every": 8}})
    with pytest.raises(SpecError, match="unknown key diagnostics.often"):
        ExperimentSpec.from_dict({"diagnostics": {"often": 7}})
    assert [r["step"] for r in Trainer(old).run().history.rows] == [1, 7, 14, 21, 28, 35, 42,
                                                                     49, 50]


def test_partial_config_fills_defaults_and_default_loss_follows_task():
    assert ExperimentSpec.from_dict({}) == ExperimentSpec()
    reg = ExperimentSpec.from_dict({"data": {"name": "plane"}})
    assert reg.loss == Choice("mse")
    assert reg.data.classes is None and reg.data.n == 400
    assert ExperimentSpec.from_dict({"data": {"name": "circle"}}).data.classes == 2
    digits = ExperimentSpec.from_dict({"data": {"name": "digits"}})
    assert digits.data.features is None and digits.data.classes == 10
    assert "features" not in digits.to_dict()["data"]


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("config", [
    {},
    {"seed": 7, "device": "cpu"},
    {"model": {"layers": [16, 8, 4]}},
    {"model": {"layers": [16, {"type": "dropout", "p": 0.2}, {"type": "batchnorm"},
                          {"type": "residual", "units": 8, "depth": 3, "activation": "gelu",
                           "init": {"name": "normal", "std": 0.1}, "bias_init": 0.5},
                          {"type": "layernorm"}, {"type": "activation", "activation": "tanh"}],
               "output": {"name": "xavier_normal", "gain": 0.5}}},
    {"model": {"activation": {"name": "leaky_relu", "negative_slope": 0.2},
               "init": {"name": "he_uniform", "mode": "fan_out"}, "bias_init": 0.1}},
    {"optimizer": "adam"},
    {"optimizer": {"name": "adam", "lr": 0.003, "betas": [0.8, 0.9], "amsgrad": True}},
    {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}},
    {"schedule": {"name": "step", "step_size": 10, "gamma": 0.1}},
    {"schedule": "cosine"},
    {"loss": {"name": "cross_entropy", "label_smoothing": 0.1}},
    {"data": {"name": "circle"}, "loss": "bce"},
    {"data": {"name": "plane", "features": ["x1", "x2", "x1_sq"]}, "loss": {"name": "huber",
                                                                          "delta": 0.5}},
    {"data": {"name": "digits", "n": 100, "normalize": "minmax", "test_fraction": 0.2}},
    {"data": {"name": "csv", "path": "some.csv", "target": "y", "task": "regression"}},
    {"training": {"grad_clip": 2.5}},
    {"training": {"grad_clip": {"norm": 0.5}}},
    {"training": {"grad_clip": {"value": 0.1}}},
    {"training": {"early_stopping": True}},
    {"training": {"early_stopping": 4}},
    {"training": {"early_stopping": {"patience": 3, "min_delta": 0.01, "restore_best": False}}},
    {"training": {"batch_size": 8, "steps": 5, "eval_every": 2}},
    {"regularization": {"l1": 0.001, "l2": 0.01}},
    {"diagnostics": {"every": 3}},
])
def test_round_trip(config):
    spec = ExperimentSpec.from_dict(config)
    round_trip(spec)
    # and through the JSON text entry point
    assert ExperimentSpec.from_json(spec.to_json()) == spec
    assert load_spec(spec.to_json()) == spec


def test_integer_layer_shorthand_equals_the_long_form():
    short = ExperimentSpec.from_dict({"model": {"layers": [16, 8]}})
    long = ExperimentSpec.from_dict({"model": {"layers": [{"type": "linear", "units": 16},
                                                          {"units": 8}]}})
    assert short == long
    assert short.model.layers == (LayerSpec(params={"units": 16}), LayerSpec(params={"units": 8}))
    assert short.to_dict()["model"]["layers"] == [{"type": "linear", "units": 16},
                                                  {"type": "linear", "units": 8}]


def test_choice_as_key_or_as_object():
    a = ExperimentSpec.from_dict({"model": {"init": "normal"}})
    b = ExperimentSpec.from_dict({"model": {"init": {"name": "normal"}}})
    assert a == b and a.model.init == Choice("normal")
    c = ExperimentSpec.from_dict({"model": {"init": {"name": "normal", "std": 0.1}}})
    assert c.model.init == Choice("normal", {"std": 0.1})
    assert c.to_dict()["model"]["init"] == {"name": "normal", "std": 0.1}
    assert a.to_dict()["model"]["init"] == "normal"  # no parameters: written as the key
    assert c.model.init.resolved(__import__("engine").registry.INITIALIZERS) == {"mean": 0.0,
                                                                                "std": 0.1}


def test_grad_clip_forms():
    def clip(v):
        return ExperimentSpec.from_dict({"training": {"grad_clip": v}}).training.grad_clip
    assert clip(None) is None
    assert clip(2) == GradClipSpec("norm", 2.0) == clip({"norm": 2})
    assert clip({"value": 0.5}) == GradClipSpec("value", 0.5)
    assert clip(2).to_dict() == {"norm": 2.0}
    assert clip({"value": 0.5}).to_dict() == {"value": 0.5}


def test_early_stopping_forms():
    def es(v):
        return ExperimentSpec.from_dict({"training": {"early_stopping": v}}).training.early_stopping
    assert es(None) is None and es(False) is None
    assert es(True).patience == 10 and es(True).restore_best is True
    assert es(3).patience == 3
    assert es({"min_delta": 0.1}).min_delta == 0.1


def test_optimizer_keeps_sibling_parameters_when_switched():
    # shared parameters: an Adam spec may carry SGD's momentum, ignored by Adam's factory
    spec = ExperimentSpec.from_dict({"optimizer": {"name": "adam", "lr": 0.02, "momentum": 0.9}})
    assert spec.optimizer.params == {"lr": 0.02, "momentum": 0.9}
    resolved = OPTIMIZERS[spec.optimizer.name].resolve(spec.optimizer.params)
    assert "momentum" not in resolved and resolved["lr"] == 0.02


# ----------------------------------------------------------------------------- changes


def test_with_changes_sets_dotted_keys_and_validates():
    base = ExperimentSpec()
    s = base.with_changes({"optimizer.lr": 0.3, "model.layers.1.units": 8, "seed": 4})
    assert s.optimizer.params["lr"] == 0.3 and s.optimizer.params["momentum"] == 0.9
    assert s.model.layers[1].params["units"] == 8
    assert s.seed == 4
    assert base.optimizer.params["lr"] == 0.1  # the original is untouched (frozen)
    # a choice written as its key gains parameters
    s2 = base.with_changes({"model.init": "normal", "model.init.std": 0.2})
    assert s2.model.init == Choice("normal", {"std": 0.2})
    # replacing a choice object by a bare key drops the old parameters
    s3 = s2.with_changes({"model.init": "xavier_uniform"})
    assert s3.model.init == Choice("xavier_uniform")
    # a missing section is created
    s4 = base.with_changes({"training.early_stopping.patience": 2})
    assert s4.training.early_stopping.patience == 2
    with pytest.raises(SpecError, match=r"optimizer\.lr"):
        base.with_changes({"optimizer.lr": -1})
    with pytest.raises(SpecError, match="no such list index"):
        base.with_changes({"model.layers.5.units": 3})


def test_set_path_on_plain_dicts():
    d = {"a": {"b": [1, {"c": 2}]}, "k": "relu", "n": 3}
    set_path(d, "a.b.1.c", 5)
    set_path(d, "a.b.0", 9)
    set_path(d, "k.negative_slope", 0.1)
    set_path(d, "new.x", 1)
    assert d == {"a": {"b": [9, {"c": 5}]}, "k": {"name": "relu", "negative_slope": 0.1},
                 "n": 3, "new": {"x": 1}}
    with pytest.raises(SpecError, match=r"cannot set n\.x"):
        set_path(d, "n.x", 1)
    with pytest.raises(SpecError, match="no such list index"):
        set_path(d, "a.b.x.c", 1)


# ----------------------------------------------------------------------------- bad configs
ACTS = ", ".join(ACTIVATIONS.keys())

BAD = [
    ({"foo": 1}, ["config.foo", "seed", "training"]),
    ({"model": {"foo": 1}}, ["model.foo", "activation", "layers"]),
    ({"training": {"early": 1}}, ["training.early", "early_stopping"]),
    ({"data": {"noise_level": 0.1}}, ["data.noise_level", "noise"]),
    ({"model": {"layers": [{"type": "dropout", "units": 3}]}}, ["model.layers[0].units", "p"]),
    ({"model": {"activation": "relux"}}, ["model.activation", "'relux'", ACTS]),
    ({"model": {"layers": [{"units": 8, "activation": "nope"}]}},
     ["model.layers[0].activation", "'nope'", "relu"]),
    ({"model": {"init": "glorot"}}, ["model.init", "'glorot'", "xavier_uniform"]),
    ({"model": {"layers": [{"type": "linear", "units": 0}]}}, ["model.layers[0].units=0", ">= 1"]),
    ({"model": {"layers": [8, -3]}}, ["model.layers[1].units=-3", ">= 1"]),
    ({"model": {"layers": [{"type": "conv"}]}}, ["model.layers[0].type", "'conv'", "residual"]),
    ({"optimizer": {"name": "sgd", "lr": 0}}, ["optimizer.lr=0", "> 0"]),
    ({"optimizer": {"name": "adam", "lr": -0.1}}, ["optimizer.lr=-0.1", "> 0"]),
    ({"optimizer": {"name": "sgd", "lr": "0.1"}}, ["optimizer.lr='0.1'", "a number > 0"]),
    ({"optimizer": {"name": "sgd", "lr": float("nan")}}, ["optimizer.lr", "a number"]),
    ({"optimizer": {"name": "sgd", "momentum": 1.0}}, ["optimizer.momentum=1.0", "< 1"]),
    ({"optimizer": {"name": "rmsprop", "foo": 1}}, ["optimizer.foo", "rmsprop", "alpha"]),
    ({"optimizer": {"name": "sgdd"}}, ["optimizer", "'sgdd'", "adam"]),
    ({"optimizer": {"lr": 0.1}}, ["optimizer", "name", "sgd"]),
    ({"optimizer": {"name": "sgd", "nesterov": True}}, ["optimizer.nesterov", "momentum > 0"]),
    ({"optimizer": "adagrad", "schedule": {"name": "one_cycle", "cycle_momentum": True}},
     ["schedule.cycle_momentum", "'adagrad'", "sgd, rmsprop, adam, adamw"]),
    ({"optimizer": {"name": "adam", "betas": [0.9]}}, ["optimizer.betas", "a list of 2 numbers"]),
    ({"model": {"layers": [{"type": "dropout", "p": 1}]}}, ["model.layers[0].p=1", "< 1"]),
    ({"model": {"layers": [{"type": "dropout", "p": -0.1}]}}, ["model.layers[0].p=-0.1", ">= 0"]),
    ({"data": {"val_fraction": 1.5}}, ["data.val_fraction=1.5", "<= 0.9"]),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
     ["data.val_fraction", "data.test_fraction", "0.9"]),
    ({"data": {"name": "circle", "classes": 3}}, ["data.classes=3", "circle", "2"]),
    ({"data": {"classes": 9}}, ["data.classes=9", "<= 8"]),
    ({"data": {"name": "digits", "features": ["x1"]}}, ["data.features", "spiral"]),
    ({"data": {"features": ["x3"]}}, ["data.features", "'x3'", ", ".join(FEATURES.keys())]),
    ({"data": {"features": []}}, ["data.features", "non-empty"]),
    ({"data": {"features": ["x1", "x1"]}}, ["data.features", "twice"]),
    ({"data": {"name": "mnist"}}, ["data.name", "'mnist'", "digits"]),
    ({"data": {"name": "spiral", "path": "a.csv"}}, ["data.path", "spiral"]),
    ({"data": {"name": "csv", "target": "y"}}, ["data.path", "string"]),
    ({"data": {"normalize": "zscore"}}, ["data.normalize='zscore'", "'standard'", "'minmax'"]),
    ({"data": {"n": 5}}, ["data.n=5", ">= 10"]),
    ({"data": {"classes": 3}, "loss": "bce"}, ["bce", "2 classes", "cross_entropy"]),
    ({"data": {"name": "plane"}, "loss": "cross_entropy"},
     ["loss='cross_entropy'", "regression", ", ".join(LOSSES.where(task="regression"))]),
    ({"data": {"name": "plane"}, "loss": "bce"}, ["loss='bce'", "regression"]),
    ({"data": {"val_fraction": 0}, "training": {"early_stopping": True}},
     ["training.early_stopping", "data.val_fraction > 0"]),
    ({"training": {"grad_clip": "x"}}, ["training.grad_clip", '{"norm": x}', '{"value": x}']),
    ({"training": {"grad_clip": {"norm": -1}}}, ["training.grad_clip.norm=-1", "> 0"]),
    ({"training": {"grad_clip": {"max": 1}}}, ["training.grad_clip", '{"norm": x}']),
    ({"training": {"batch_size": 0}}, ["training.batch_size=0", ">= 1"]),
    ({"training": {"steps": 2.5}}, ["training.steps=2.5", "an integer"]),
    ({"training": {"steps": float("inf")}}, ["training.steps", "an integer"]),
    ({"training": {"early_stopping": {"patience": 0}}},
     ["training.early_stopping.patience=0", ">= 1"]),
    ({"training": {"early_stopping": {"wait": 3}}}, ["training.early_stopping.wait", "patience"]),
    ({"seed": -1}, ["config.seed=-1", ">= 0"]),
    ({"seed": 2 ** 31}, ["config.seed", "2147483647"]),
    ({"seed": True}, ["config.seed=True", "an integer"]),
    ({"device": "tpu"}, ["config.device='tpu'", "'auto'", "'cpu'", "'cuda'"]),
    ({"schedule": {"name": "step", "gamma": 0}}, ["schedule.gamma=0", "> 0"]),
    ({"schedule": {"name": "cosine", "warmup": 5}}, ["schedule.warmup", "cosine", "eta_min"]),
    ({"loss": {"name": "cross_entropy", "label_smoothing": 1}}, ["loss.label_smoothing=1", "< 1"]),
    ({"regularization": {"l2": -0.1}}, ["regularization.l2=-0.1", ">= 0"]),
    ({"regularization": {"dropout": 0.1}}, ["regularization.dropout", "l1", "l2"]),
    ({"diagnostics": {"every": 0}}, ["diagnostics.every=0", ">= 1"]),
    ({"model": {"bias_init": "zero"}}, ["model.bias_init='zero'", "a number"]),
    ({"model": {"layers": "64"}}, ["model.layers", "list"]),
    ({"model": {"layers": [True]}}, ["model.layers[0]", "object"]),
    ({"model": {"layers": [8] * (MAX_LAYERS + 1)}}, ["model.layers", f"at most {MAX_LAYERS}"]),
    ({"data": "spiral"}, ["data", "object"]),
    ([1, 2], ["config", "object"]),
]


@pytest.mark.parametrize("config,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config_is_rejected_with_a_helpful_message(config, expected):
    with pytest.raises(SpecError) as e:
        ExperimentSpec.from_dict(config)
    msg = str(e.value)
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_bad_config_is_rejected_by_with_changes_too():
    with pytest.raises(SpecError, match=r"model\.layers\[0\]\.units=0"):
        ExperimentSpec().with_changes({"model.layers.0.units": 0})


@pytest.mark.parametrize("text,expected", [
    ('{"seed": 1,}', ["not valid JSON", "line 1", "column"]),
    ('{"seed": 1', ["not valid JSON"]),
    ("", ["not valid JSON"]),
    ('{"data": {"name": "spiral"},\n "model": {"layers": [8,, 8]}}', ["not valid JSON", "line 2"]),
    ('"spiral"', ["config", "object"]),
    ('{"optimizer": {"name": "sgd", "lr": NaN}}', ["optimizer.lr=NaN", "no NaN"]),
    ('{"seed": ' + "1" * 30 + "}", ["seed=<a 30-digit integer>", "at most 20 digits"]),
])
def test_malformed_json_text(text, expected):
    with pytest.raises(SpecError) as e:
        ExperimentSpec.from_json(text)
    for part in expected:
        assert part in str(e.value)


def test_json_text_may_be_bytes_or_start_with_a_byte_order_mark():
    spec = ExperimentSpec.from_dict({"seed": 2, "model": {"layers": [4]}})
    assert ExperimentSpec.from_json(b"\xef\xbb\xbf" + spec.to_json().encode()) == spec
    assert load_spec("\ufeff" + spec.to_json()) == spec


def test_load_spec_from_dict_path_and_missing_file(tmp_path):
    config = {"seed": 3, "model": {"layers": [4]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert load_spec(config) == load_spec(str(path)) == ExperimentSpec.from_dict(config)
    assert config == {"seed": 3, "model": {"layers": [4]}}  # the caller's dict is not modified
    with pytest.raises(SpecError, match="cannot read config file"):
        load_spec(str(tmp_path / "missing.json"))


def test_spec_is_frozen_and_hashable_parts_compare_by_value():
    spec = ExperimentSpec()
    with pytest.raises(Exception):
        spec.seed = 3  # frozen dataclass
    assert ExperimentSpec.from_dict({"seed": 1}) != spec


def test_an_optimizer_has_one_spelling_with_or_without_its_default_rate():
    """canonical(): two specs that train identically compare equal (the optimizer's rate is
    always written out, default or not)."""
    bare = load_spec({"optimizer": "adam"}).canonical()
    spelled = load_spec({"optimizer": {"name": "adam", "lr": 0.01}}).canonical()
    other = load_spec({"optimizer": {"name": "adam", "lr": 0.02}}).canonical()
    assert bare == spelled != other
    assert bare.canonical() == bare  # a fixed point


@pytest.mark.parametrize("name", preset_names())
def test_a_preset_survives_the_widgets_unchanged(name):
    """load -> widgets -> collect -> canonical gives the preset's own canonical spec back: what
    the page trains when Start is pressed on a preset is that preset (so its run is stored
    under its title and tags)."""
    from ui import state as S

    spec = ExperimentSpec.from_dict(load_preset(name)["config"])
    state: dict = {}
    S.load(spec, state)
    assert ExperimentSpec.from_dict(S.collect(state)).canonical() == spec.canonical()
