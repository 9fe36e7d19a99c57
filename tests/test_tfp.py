"""Opening TensorFlow Playground links (engine/io/tfp.py) and `python -m engine from-tfp`."""
import json
import math
from urllib.parse import quote

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.__main__ import main
from engine.core.portable import add_penalty_grads
from engine.io.tfp import MAX_LINK_CHARS, from_tfp

SITE = "https://playground.tensorflow.org/#"
# Links as TFP writes them (State.serialize: every setting in PROPS order, `regularization`
# left out when it is none, `tutorial` when unset).
DEFAULT = (SITE + "activation=tanh&batchSize=10&dataset=circle&regDataset=reg-plane&"
           "learningRate=0.03&regularizationRate=0&noise=0&networkShape=4,2&seed=0.27&"
           "showTestData=false&discretize=false&percTrainData=50&x=true&y=true&xTimesY=false&"
           "xSquared=false&ySquared=false&cosX=false&sinX=false&cosY=false&sinY=false&"
           "collectStats=false&problem=classification&initZero=false&hideText=false")
SPIRAL = (SITE + "activation=tanh&batchSize=10&dataset=spiral&regDataset=reg-plane&"
          "learningRate=0.03&regularizationRate=0&noise=50&networkShape=8,8,6,4,2&"
          "seed=0.71823&showTestData=false&discretize=false&percTrainData=70&x=true&y=true&"
          "xTimesY=true&xSquared=true&ySquared=true&cosX=false&sinX=true&cosY=false&sinY=true&"
          "collectStats=false&problem=classification&initZero=false&hideText=false")
REGRESSION = (SITE + "activation=relu&batchSize=20&dataset=circle&regDataset=reg-gauss&"
              "learningRate=0.01&regularizationRate=0&noise=30&networkShape=6,3&seed=0.49533&"
              "showTestData=true&discretize=false&percTrainData=80&x=true&y=true&"
              "xTimesY=false&xSquared=false&ySquared=false&cosX=false&sinX=false&cosY=false&"
              "sinY=false&collectStats=false&problem=regression&initZero=false&hideText=false")
L1 = (SITE + "activation=relu&regularization=L1&batchSize=5&dataset=xor&regDataset=reg-plane&"
      "learningRate=0.1&regularizationRate=0.003&noise=20&networkShape=4&seed=0.12345&"
      "showTestData=false&discretize=true&percTrainData=60&x=true&y=true&xTimesY=true&"
      "xSquared=false&ySquared=false&cosX=true&sinX=false&cosY=false&sinY=false&"
      "collectStats=false&problem=classification&initZero=false&hideText=false")
INIT_ZERO = (SITE + "activation=tanh&batchSize=10&dataset=gauss&regDataset=reg-plane&"
             "learningRate=0.03&regularizationRate=0&noise=0&networkShape=3&seed=0.5&"
             "showTestData=false&discretize=false&percTrainData=50&x=true&y=true&"
             "xTimesY=false&xSquared=false&ySquared=false&cosX=false&sinX=false&cosY=false&"
             "sinY=false&collectStats=false&problem=classification&initZero=true&hideText=false")
L2_PLANE = (SITE + "activation=linear&regularization=L2&batchSize=30&dataset=circle&"
            "regDataset=reg-plane&learningRate=0.003&regularizationRate=0.03&noise=0&"
            "networkShape=&seed=0.9&showTestData=false&discretize=false&percTrainData=90&"
            "x=true&y=true&xTimesY=false&xSquared=false&ySquared=false&cosX=false&sinX=false&"
            "cosY=false&sinY=false&collectStats=false&problem=regression&initZero=false&"
            "hideText=true")
LINKS = {"default": DEFAULT, "spiral": SPIRAL, "regression": REGRESSION, "l1": L1,
         "init_zero": INIT_ZERO, "l2_plane": L2_PLANE}


def notes_text(link) -> str:
    return "\n".join(from_tfp(link)[1])


@pytest.mark.parametrize("name", LINKS)
def test_real_links_give_configs_that_train(name):
    config, notes = from_tfp(LINKS[name])
    assert ExperimentSpec.from_dict(config).to_dict()  # valid as returned
    config["training"]["steps"] = 4
    trainer = Trainer(ExperimentSpec.from_dict(config), max_params=2_000_000)
    trainer.run()
    summary = trainer.summary()
    assert summary["steps"] == 4 and math.isfinite(summary["final"]["train_loss"])
    assert notes and all(isinstance(n, str) and n for n in notes)


def test_default_link_maps_key_by_key():
    c, _ = from_tfp(DEFAULT)
    assert c["data"] == {"name": "circle", "n": 500, "noise": 0.0, "features": ["x1", "x2"],
                         "normalize": "standard", "val_fraction": 0.5, "test_fraction": 0.0}
    assert c["model"] == {"activation": "tanh", "init": {"name": "uniform", "a": -0.5, "b": 0.5},
                          "bias_init": 0.1, "layers": [{"type": "linear", "units": 4},
                                                       {"type": "linear", "units": 2}]}
    assert c["loss"] == "bce"
    assert c["optimizer"] == {"name": "sgd", "lr": 0.03, "momentum": 0.0, "nesterov": False,
                              "weight_decay": 0.0}
    assert c["schedule"] == "constant"
    assert c["regularization"] == {"l1": 0.0, "l2": 0.0}
    # 250 training points in batches of 10: 25 updates per TFP epoch, 100 epochs
    assert c["training"] == {"batch_size": 10, "steps": 2500, "grad_clip": None,
                             "early_stopping": None}
    assert c["seed"] == from_tfp(DEFAULT)[0]["seed"]  # derived from "0.27", stable


def test_spiral_link_features_shape_and_noise():
    c, _ = from_tfp(SPIRAL)
    assert c["data"]["name"] == "spiral" and c["data"]["classes"] == 2
    assert c["data"]["features"] == ["x1", "x2", "x1_sq", "x2_sq", "x1_x2", "sin_x1", "sin_x2"]
    assert [layer["units"] for layer in c["model"]["layers"]] == [8, 8, 6, 4, 2]
    assert c["data"]["val_fraction"] == pytest.approx(0.3)
    # TFP moves spiral points by U(-1, 1) * 0.5 on a radius of 5 -> std 0.5 / (5 sqrt 3)
    assert c["data"]["noise"] == pytest.approx(0.5 / (5 * math.sqrt(3)), rel=1e-3)


def test_regression_link():
    c, notes = from_tfp(REGRESSION)
    assert c["data"]["name"] == "multi_gaussian" and c["data"]["n"] == 1200
    assert "classes" not in c["data"] and c["loss"] == "mse"
    assert c["data"]["val_fraction"] == pytest.approx(0.2)
    assert c["data"]["noise"] == pytest.approx(0.3, rel=1e-3)
    assert c["model"]["activation"] == "relu" and c["optimizer"]["lr"] == 0.01
    assert c["training"]["batch_size"] == 20
    text = "\n".join(notes)
    assert "1200 points" in text and "twice TFP's" in text and "halve optimizer.lr" in text
    assert "showTestData=true" in text


def test_l1_link():
    c, notes = from_tfp(L1)
    assert c["regularization"] == {"l1": 0.003, "l2": 0.0}
    assert c["data"]["name"] == "xor" and c["data"]["features"] == ["x1", "x2", "x1_x2"]
    # xor: labels from points shifted by U(-5, 5) * 0.2 on a +-5 layout -> std 0.2 / sqrt 3
    assert c["data"]["noise"] == pytest.approx(0.2 / math.sqrt(3), rel=1e-3)
    text = "\n".join(notes)
    assert "regularization.l1 = regularizationRate = 0.003" in text
    assert "freezes it" in text and "subgradient" in text
    assert "cosX=true" in text and "no cosine" in text
    assert "discretize=true" in text


def test_init_zero_link_and_its_symmetry():
    c, notes = from_tfp(INIT_ZERO)
    assert c["model"]["init"] == "zeros" and c["model"]["bias_init"] == 0.0
    assert c["data"]["name"] == "gaussians" and c["data"]["classes"] == 2
    # TFP's gauss variance is 0.5 at noise 0; scaled to Netlab's centres: 0.15
    assert c["data"]["noise"] == pytest.approx(1.2 / (4 * math.sqrt(2)) * math.sqrt(0.5), rel=1e-3)
    assert "symmetry" in "\n".join(notes) and "only the output bias learns" in "\n".join(notes)
    c["training"]["steps"] = 20
    trainer = Trainer(ExperimentSpec.from_dict(c))
    trainer.run()
    state = trainer.model.state_dict()
    hidden = [v for k, v in state.items() if not k.startswith("out.")]
    assert all(torch.count_nonzero(v) == 0 for v in hidden)  # tanh(0) = 0: no gradient reaches them
    assert torch.count_nonzero(state["out.weight"]) == 0


def test_l2_link_and_penalty_equivalence():
    c, notes = from_tfp(L2_PLANE)
    assert c["data"]["name"] == "plane" and c["model"]["layers"] == []
    assert c["model"]["activation"] == "linear" and c["data"]["val_fraction"] == pytest.approx(0.1)
    assert c["regularization"] == {"l1": 0.0, "l2": 0.015}
    text = "\n".join(notes)
    assert "regularizationRate / 2 = 0.015" in text and "no hidden layer" in text
    assert "hideText=true" in text
    # TFP (nn.ts) steps each weight by lr * rate * w for L2 and lr * rate * sign(w) for L1:
    # Netlab's penalty gradients with l2 = rate / 2 and l1 = rate are the same
    rate, w = 0.03, torch.tensor([[0.5, -2.0, 0.0]], requires_grad=True)
    w.grad = torch.zeros_like(w)
    add_penalty_grads([w], 0.0, rate / 2)
    assert torch.allclose(w.grad, rate * w.detach())
    w.grad = torch.zeros_like(w)
    add_penalty_grads([w], rate, 0.0)
    assert torch.allclose(w.grad, rate * torch.sign(w.detach()))


def test_notes_say_what_differs():
    text = notes_text(DEFAULT)
    for needle in ("seed '0.27'", "tanh unit", "squared error", "-1/+1", "binary cross-entropy",
                   "until you press pause", "training.steps 2500", "Noise (approximate)",
                   "500 points", "data.val_fraction 0.5", "momentum 0",
                   "uniform in [-0.5, 0.5]", "Display settings", "showTestData=false",
                   "collectStats=false", "data.normalize 'standard'"):
        assert needle in text, needle
    assert "sin(3 x1)" in notes_text(SPIRAL) and "1.75 times" in notes_text(SPIRAL)


def test_empty_hash_and_bare_hash_give_tfp_defaults():
    defaults, notes = from_tfp(SITE)
    assert {**from_tfp(DEFAULT)[0], "seed": 0} == defaults
    assert "the link has none" in "\n".join(notes)
    assert from_tfp("https://playground.tensorflow.org/")[0] == defaults
    assert from_tfp("")[0] == defaults
    assert from_tfp(DEFAULT.split("#")[1])[0] == from_tfp(DEFAULT)[0]  # the hash alone


def test_percent_encoded_links():
    hash_part = SPIRAL.split("#")[1]
    expected = from_tfp(SPIRAL)[0]
    assert from_tfp(SITE + quote(hash_part, safe=""))[0] == expected
    assert from_tfp(quote(SPIRAL, safe=""))[0] == expected  # the whole URL, '#' included
    assert from_tfp(SPIRAL.replace("&", "&amp;"))[0] == expected  # copied from HTML


def test_settings_tfp_corrects_itself():
    c, notes = from_tfp(SITE + "noise=200")
    assert c["data"]["noise"] == pytest.approx(0.5 / math.sqrt(3), rel=1e-3)  # TFP: above 80 -> 50
    assert "above TFP's limit of 80" in "\n".join(notes)
    c, notes = from_tfp(SITE + "regularization=L2&regularizationRate=10")
    assert c["regularization"]["l2"] == 1.0 and "capped at 1" in "\n".join(notes)
    c, notes = from_tfp(SITE + "regularizationRate=0.1")
    assert c["regularization"] == {"l1": 0.0, "l2": 0.0} and "ignored" in "\n".join(notes)
    c, notes = from_tfp(SITE + "x=false&y=false&cosY=true")
    assert c["data"]["features"] == ["x1", "x2"] and "no input that Netlab has" in "\n".join(notes)
    c, _ = from_tfp(SITE + "x_hide=true&xSquared=true")  # TFP drops a hidden input
    assert c["data"]["features"] == ["x2", "x1_sq"]
    c, notes = from_tfp(SITE + "percTrainData=0")
    assert c["data"]["val_fraction"] == 0.9 and "at least 10%" in "\n".join(notes)


@pytest.mark.parametrize("link, message", [
    (SITE + "learningRate=abc", "learningRate='abc' is not allowed: expected a number > 0"),
    (SITE + "learningRate=0", "learningRate=0 is not allowed"),
    (SITE + "learningRate=1e400", "learningRate='1e400' is not allowed"),
    (SITE + "activation=softmax", "activation='softmax' is not allowed: expected one of relu, "
                                  "tanh, sigmoid, linear"),
    (SITE + "networkShape=" + ",".join(["4"] * 1000), "networkShape lists 1,000 hidden layers"),
    (SITE + "networkShape=4,0", "networkShape='4,0' is not allowed: '0' is not a width"),
    (SITE + "networkShape=4,two", "'two' is not a width"),
    (SITE + "batchSize=2.5", "batchSize=2.5 is not allowed: expected a whole number from 1"),
    (SITE + "percTrainData=120", "percTrainData=120 is not allowed"),
    (SITE + "x=maybe", "x='maybe' is not allowed: expected true or false"),
    (SITE + "regularization=L3", "regularization='L3' is not allowed: expected one of none, L1"),
    (SITE + "dataset=moons", "dataset='moons' is not allowed"),
    (SITE + "regDataset=reg-max", "regDataset='reg-max' is not allowed"),
    (SITE + "problem=ranking", "problem='ranking' is not allowed"),
    (SITE + "regularizationRate=-1", "regularizationRate=-1 is not allowed"),
    (SITE + "foo=1", "unknown TensorFlow Playground setting 'foo'; allowed: activation"),
    (SITE + "%ff", "percent-escapes that are not UTF-8"),
    (SITE + "seed=" + "9" * MAX_LINK_CHARS, "at most 10,000 are allowed"),
    (12, "must be text"),
])
def test_malformed_links_are_refused_by_name(link, message):
    with pytest.raises(SpecError) as e:
        from_tfp(link)
    assert message in str(e.value)
    assert len(str(e.value)) < 600


def test_cli_round_trip(capsys):
    assert main(["from-tfp", L1]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == from_tfp(L1)[0]
    assert out.startswith("{\n  \"seed\"")  # indent 2
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("note: ") for line in lines)
    assert len(lines) == len(from_tfp(L1)[1])


def test_cli_refuses_a_malformed_link_in_one_line(capsys):
    assert main(["from-tfp", SITE + "activation=softmax"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and "activation='softmax'" in err
    assert main(["from-tfp"]) == 2
    assert "url" in capsys.readouterr().err
