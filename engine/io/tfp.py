"""Open a TensorFlow Playground link: its URL hash -> a Netlab config plus plain-language notes.

    config, notes = from_tfp("https://playground.tensorflow.org/#activation=tanh&...")

TensorFlow Playground (TFP, github.com/tensorflow/playground) keeps its whole state in the URL
hash as `name=value` pairs joined by `&` (src/state.ts). What each setting means was read from
its source, and the conversions below follow from it:

- src/state.ts: the settings, their types and defaults (learningRate 0.03, batchSize 10, noise 0,
  percTrainData 50, activation tanh, no regularization, networkShape 4,2, inputs x and y,
  dataset circle, regDataset reg-plane, problem classification); names of activations (relu,
  tanh, sigmoid, linear), regularizations (none, L1, L2), datasets (circle, xor, gauss, spiral;
  reg-plane, reg-gauss) and problems. A missing or blank value keeps the default; `networkShape=`
  (present, empty) means no hidden layer; `<control>_hide=true` hides a control.
- src/playground.ts: 500 points for classification, 1200 for regression; the generator gets
  noise/100; the first percTrainData% of the shuffled points train, the rest are the test set;
  the inputs are X1, X2, X1², X2², X1X2, sin(X1), sin(X2) on raw coordinates (the plot spans
  -6..6; there is no cosine input although the state has cosX/cosY); the output unit is tanh
  (classification) or linear (regression); one "epoch" walks the training points in order,
  updating every batchSize points; it trains until paused.
- src/nn.ts: error 0.5 (output - label)^2 with labels -1/+1; weights start uniform in
  [-0.5, 0.5] and biases at 0.1 (initZero: all 0); an update subtracts lr times the mean gradient
  over the batch, then lr * rate * penalty'(w) with L1 = |w| and L2 = 0.5 w^2 (weights only, not
  biases); an L1 step that would carry a weight across 0 sets it to 0 and freezes it.
- src/dataset.ts: circle radius 5 (inner disc < 2.5, ring 3.5..5); xor in +-5 padded by 0.3;
  gauss two clusters at (2, 2) and (-2, -2) with variance 0.5 + 7 * noise/100; spiral 1.75 turns
  out to radius 5; reg-plane target (X1 + X2)/10 and reg-gauss six +-1 bumps, both on +-6.
  Circle, xor and the regression sets compute the label at the point shifted by
  U(-R, R) * noise/100 (R the set's half-width) but keep the point; spiral moves the point by
  U(-1, 1) * noise/100; gauss widens the clusters.

Netlab's 2-D sets (engine/data/datasets.py) have the same shapes laid out in about [-1, 1], and their
`noise` is the standard deviation of Gaussian jitter in those units (of the target for
regression), so the noise is converted by matching the spread of TFP's jitter once its layout is
scaled to Netlab's: approximate by nature, and the notes say so.

Every bad link is a SpecError naming the setting and what is allowed; the link is bounded in
length before anything parses it.
"""
from __future__ import annotations

import math
import re
import zlib
from urllib.parse import unquote

from ..core.errors import SpecError
from ..core.inputs import short
from ..core.registry import OPTIMIZERS
from ..core.spec import MAX_LAYERS, REG_PARAMS, ExperimentSpec
from ..nn.model import MAX_UNITS

MAX_LINK_CHARS = 10_000  # a full TFP link is about 450 characters

# TFP's settings (src/state.ts State.PROPS) with their kinds, in TFP's order.
SETTINGS = {
    "activation": "choice", "regularization": "choice", "batchSize": "number",
    "dataset": "choice", "regDataset": "choice", "learningRate": "number",
    "regularizationRate": "number", "noise": "number", "networkShape": "shape", "seed": "text",
    "showTestData": "bool", "discretize": "bool", "percTrainData": "number", "x": "bool",
    "y": "bool", "xTimesY": "bool", "xSquared": "bool", "ySquared": "bool", "cosX": "bool",
    "sinX": "bool", "cosY": "bool", "sinY": "bool", "collectStats": "bool", "tutorial": "text",
    "problem": "choice", "initZero": "bool", "hideText": "bool",
}

# TFP's defaults (src/state.ts class State). seed has none: TFP draws a random one.
DEFAULTS = {
    "activation": "tanh", "regularization": "none", "batchSize": 10.0, "dataset": "circle",
    "regDataset": "reg-plane", "learningRate": 0.03, "regularizationRate": 0.0, "noise": 0.0,
    "networkShape": [4, 2], "seed": None, "showTestData": False, "discretize": False,
    "percTrainData": 50.0, "x": True, "y": True, "xTimesY": False, "xSquared": False,
    "ySquared": False, "cosX": False, "sinX": False, "cosY": False, "sinY": False,
    "collectStats": False, "tutorial": None, "problem": "classification", "initZero": False,
    "hideText": False,
}

CHOICES = {
    "activation": ("relu", "tanh", "sigmoid", "linear"),
    "regularization": ("none", "L1", "L2"),
    "dataset": ("circle", "xor", "gauss", "spiral"),
    "regDataset": ("reg-plane", "reg-gauss"),
    "problem": ("classification", "regression"),
}

# TFP dataset -> (Netlab dataset, its fixed parameters)
DATASETS = {
    "circle": ("circle", {}), "xor": ("xor", {}), "gauss": ("gaussians", {"classes": 2}),
    "spiral": ("spiral", {"classes": 2}), "reg-plane": ("plane", {}),
    "reg-gauss": ("multi_gaussian", {}),
}

# TFP's inputs, in the order its network lists them (src/playground.ts INPUTS) -> Netlab features.
FEATURES = {"x": "x1", "y": "x2", "xSquared": "x1_sq", "ySquared": "x2_sq", "xTimesY": "x1_x2",
            "sinX": "sin_x1", "sinY": "sin_x2"}
NO_FEATURE = ("cosX", "cosY")  # in TFP's state, but neither TFP nor Netlab has such an input
DISPLAY = ("showTestData", "discretize", "collectStats", "hideText", "tutorial")

SAMPLES = {"classification": 500, "regression": 1200}  # NUM_SAMPLES_* in src/playground.ts
TFP_MAX_LAYERS, TFP_MAX_NEURONS = 6, 8  # the page's +/- buttons stop there
TFP_MAX_NOISE, TFP_NOISE_FALLBACK = 80, 50  # playground.ts: a noise above 80 becomes 50
EPOCHS = 100  # the run length written to training.steps, in TFP epochs
MAX_STEPS = 20_000

_HIDE = re.compile(r"^([A-Za-z][A-Za-z0-9]{0,39})_hide$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# ----------------------------------------------------------------------------- noise
# TFP noise n (0-50 on its slider) reaches the generators as f = n/100. Each function returns
# the standard deviation of Netlab's Gaussian jitter, in Netlab's units, with the spread of TFP's.

_SQRT3 = math.sqrt(3.0)
# Netlab's two gaussians sit 1.2 apart (centres at +-0.6, engine/data/datasets.py), TFP's 4*sqrt(2).
_GAUSS_SCALE = 1.2 / (4 * math.sqrt(2.0))
# Netlab's plane 0.6 x1 - 0.4 x2 turns a position jitter of std s into a target jitter of
# |slope| * s = sqrt(0.52) * s.
_PLANE_SLOPE = math.sqrt(0.6 ** 2 + 0.4 ** 2)
# Netlab's multi_gaussian: std of target(p + d) - target(p), p uniform in [-1, 1]^2 and d
# uniform in [-f, f] in each coordinate, measured
# (Monte Carlo, 200,000 points): 1.09 f at f = 0.05, 1.0 f at 0.3, 0.86 f at 0.5.
_BUMPS_FACTOR = 1.0

NOISE = {  # TFP set -> (conversion, what TFP's noise does, what Netlab's does instead)
    # label taken at the point shifted by U(-5, 5) * f on a radius-5 layout: U(-f, f) in Netlab's
    "circle": (lambda f: f / _SQRT3,
               "takes each label at the point shifted by up to ±noise/100 of its radius, leaving "
               "the point in place",
               "moves each point by Gaussian noise of that standard deviation"),
    "xor": (lambda f: f / _SQRT3,
            "takes each label at the point shifted by up to ±noise/100 of its half-width, "
            "leaving the point in place",
            "moves each point by Gaussian noise of that standard deviation"),
    # the point moved by U(-1, 1) * f in TFP units, 1/5 of the spiral's radius
    "spiral": (lambda f: f / (5 * _SQRT3),
               "moves each point by up to ±noise/100 in its own units (1/5 of the spiral's "
               "radius)", "moves each point by Gaussian noise of that standard deviation"),
    # variance 0.5 + 7 f (d3 linear scale [0, 0.5] -> [0.5, 4]), scaled to Netlab's centres
    "gauss": (lambda f: _GAUSS_SCALE * math.sqrt(0.5 + 7 * f),
              "sets the clusters' variance to 0.5 + 7 × noise/100 (never zero, even at noise 0)",
              "draws each cluster with that standard deviation"),
    "reg-plane": (lambda f: _PLANE_SLOPE / _SQRT3 * f,
                  "takes each target at the point shifted by up to ±noise/100 of its half-width",
                  "adds Gaussian noise of that standard deviation to each target instead: as "
                  "much as TFP's shift makes the target vary on Netlab's plane"),
    "reg-gauss": (lambda f: _BUMPS_FACTOR * f,
                  "takes each target at the point shifted by up to ±noise/100 of its half-width",
                  "adds Gaussian noise of that standard deviation to each target instead: as "
                  "much as TFP's shift makes the target vary on Netlab's bumps (measured)"),
}

SHAPES = {
    "circle": "Same shape, scaled from TFP's radius 5 to Netlab's 1.",
    "xor": "Same quadrants, scaled from TFP's ±5 to Netlab's ±1.",
    "gauss": "TFP's two clusters sit on the diagonal at (2, 2) and (-2, -2); Netlab's sit on the "
             "x1 axis: the same task turned 45 degrees.",
    "spiral": "Netlab's two arms turn about 0.6 times, TFP's 1.75 times, so TFP's spiral is "
              "harder to separate.",
    "reg-plane": "TFP's target is (X1 + X2)/10 over ±6; Netlab's plane is 0.6 x1 - 0.4 x2 over "
                 "±1: a different tilt, still a plane.",
    "reg-gauss": "TFP's target has six bumps of ±1 in a 3 x 2 grid; Netlab's multi_gaussian has "
                 "five: a similar bumpy landscape, not the same one.",
}


# ----------------------------------------------------------------------------- reading the link


def _hash(url_or_hash) -> str:
    """The part after '#', percent-decoding a link copied in encoded form."""
    if not isinstance(url_or_hash, str):
        raise SpecError(f"a TensorFlow Playground link must be text, got {short(url_or_hash)}")
    if len(url_or_hash) > MAX_LINK_CHARS:
        raise SpecError(f"the TensorFlow Playground link has {len(url_or_hash):,} characters; at "
                        f"most {MAX_LINK_CHARS:,} are allowed (a full TFP link has about 450)")
    text = url_or_hash.strip()
    for _ in range(3):  # a link encoded once or twice ('%3D' for '=', '%2C' for ',')
        if "%" not in text:
            break
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise SpecError("the TensorFlow Playground link has percent-escapes that are not "
                            "UTF-8 text") from None
        if decoded == text:
            break
        text = decoded
    text = text.replace("&amp;", "&")  # a link copied from HTML source
    if "#" in text:
        return text.split("#", 1)[1]
    if _URL.match(text) or text.startswith("playground.tensorflow.org"):
        return ""  # a page address without a hash: TFP opens with its defaults
    return text


def _pairs(hash_text: str, notes: list[str]) -> dict[str, str]:
    """name -> raw value; the last of a repeated name wins, as in TFP."""
    raw: dict[str, str] = {}
    repeated = []
    for part in hash_text.split("&"):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        hide = _HIDE.match(name)
        if name not in SETTINGS and not hide:
            raise SpecError(f"unknown TensorFlow Playground setting {short(name, 60)}; allowed: "
                            f"{', '.join(SETTINGS)} and <control>_hide")
        if name in raw:
            repeated.append(name)
        raw[name] = value
    if repeated:
        notes.append(f"The link sets {', '.join(sorted(set(repeated)))} more than once; the last "
                     "value counts, as in TFP.")
    return raw


def _number(name: str, text: str, allowed: str) -> float:
    value = text.strip()
    if len(value) > 40 or not _NUMBER.match(value):
        raise SpecError(f"TFP setting {name}={short(text, 60)} is not allowed: expected "
                        f"{allowed}")
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(f"TFP setting {name}={short(text, 60)} is not allowed: expected "
                        f"{allowed}")
    return number


def _checked(name: str, value: float, allowed: str, low=None, high=None, low_open=False,
             integer=False) -> float:
    bad = ((low is not None and (value < low or (low_open and value == low)))
           or (high is not None and value > high) or (integer and not value.is_integer()))
    if bad:
        raise SpecError(f"TFP setting {name}={_num(value)} is not allowed: expected {allowed}")
    return value


def _shape(text: str) -> list[int]:
    if not text.strip():
        return []
    parts = text.split(",")
    allowed = (f"a comma-separated list of at most {MAX_LAYERS} hidden-layer widths, each a "
               f"whole number from 1 to {MAX_UNITS} (e.g. 4,2; empty for no hidden layer)")
    if len(parts) > MAX_LAYERS:
        raise SpecError(f"TFP setting networkShape lists {len(parts):,} hidden layers; "
                        f"expected {allowed}")
    widths = []
    for part in parts:
        value = part.strip()
        if not value.isdecimal() or len(value) > 5 or not 1 <= int(value) <= MAX_UNITS:
            raise SpecError(f"TFP setting networkShape={short(text, 60)} is not allowed: "
                            f"{short(part, 30)} is not a width; expected {allowed}")
        widths.append(int(value))
    return widths


def parse(url_or_hash: str) -> tuple[dict, list[str]]:
    """A TFP link -> (its settings with TFP's defaults filled, notes about the reading).
    Values are typed: choices and text as str, numbers as float, booleans, networkShape a list;
    `<control>_hide` settings are gathered in `hidden` (names of hidden controls), and `given`
    holds the names the link itself sets."""
    notes: list[str] = []
    raw = _pairs(_hash(url_or_hash), notes)
    state = dict(DEFAULTS)
    hidden = []
    for name, text in raw.items():
        hide = _HIDE.match(name)
        if hide:
            if text.strip() not in ("true", "false", ""):  # blank: not hidden, as in TFP
                raise SpecError(f"TFP setting {short(name, 60)}={short(text, 40)} is not "
                                "allowed: expected true or false")
            if text.strip() == "true":
                hidden.append(hide.group(1))
            continue
        kind = SETTINGS[name]
        if kind == "shape":  # present, even empty, replaces the default (state.ts parseArray)
            state[name] = _shape(text)
            continue
        if not text.strip():  # TFP keeps the default for a blank value
            continue
        if kind == "choice":
            if text not in CHOICES[name]:
                raise SpecError(f"TFP setting {name}={short(text, 60)} is not allowed: expected "
                                f"one of {', '.join(CHOICES[name])}")
            state[name] = text
        elif kind == "bool":
            if text.strip() not in ("true", "false"):
                raise SpecError(f"TFP setting {name}={short(text, 40)} is not allowed: expected "
                                "true or false")
            state[name] = text.strip() == "true"
        elif kind == "number":
            state[name] = _number(name, text, _NUMBER_RULES[name])
        else:
            state[name] = text
    state["hidden"] = hidden
    state["given"] = set(raw)
    return state, notes


_NUMBER_RULES = {
    "learningRate": "a number > 0 and <= 10 (TFP offers 0.00001 to 10)",
    "batchSize": "a whole number from 1 to 1000000 (TFP offers 1 to 30)",
    "regularizationRate": "a number >= 0 (TFP offers 0 to 10)",
    "noise": "a number (TFP offers 0 to 50)",
    "percTrainData": "a number from 0 to 100 (TFP offers 10 to 90)",
}


# ----------------------------------------------------------------------------- the config


def _num(x: float):
    """A float as it reads in JSON and notes: 10.0 -> 10, 0.03 -> 0.03."""
    return int(x) if float(x).is_integer() and abs(x) < 1e15 else x


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def from_tfp(url_or_hash: str) -> tuple[dict, list[str]]:
    """A TensorFlow Playground URL (or its hash) -> (Netlab config dict, notes).

    The config is checked with ExperimentSpec.from_dict before it is returned. The notes say in
    plain words, one setting each, what did not carry over or behaves differently. A malformed
    link raises SpecError naming the setting and what is allowed. Each part of the config is
    one helper below, returning its values and its note, in the order the notes are shown."""
    s, reading = parse(url_or_hash)
    problem = s["problem"]
    tfp_set = s["dataset"] if problem == "classification" else s["regDataset"]
    name, fixed = DATASETS[tfp_set]
    n = SAMPLES[problem]
    lr, batch, rate, perc = _numbers(s)

    notes = [_data_note(problem, tfp_set, name, n)]
    data_noise, note = _noise(s["noise"], tfp_set)
    notes.append(note)
    val, note = _split(perc)
    notes.append(note)
    features, more = _inputs(s)
    notes += more
    notes.append(_network_note(s["networkShape"], s["activation"]))
    loss, note = _loss(problem)
    notes.append(note)
    n_train = n - round(n * val)
    notes.append(_optimizer_note(lr, batch, n_train))
    reg, note = _regularization(s["regularization"], rate)
    notes += [note] if note else []
    zero, note = _init(s["initZero"])
    notes.append(note)
    seed, note = _seed(s["seed"])
    notes.append(note)
    steps, note = _length(n_train, batch)
    notes.append(note)
    notes += _display_notes(s) + reading

    config = {
        "seed": seed,
        "data": {"name": name, "n": n, "noise": data_noise, **fixed,
                 "features": [FEATURES[f] for f in features], "normalize": "standard",
                 "val_fraction": val, "test_fraction": 0.0},
        "model": {"activation": s["activation"],
                  "init": "zeros" if zero else {"name": "uniform", "a": -0.5, "b": 0.5},
                  "bias_init": 0.0 if zero else 0.1,
                  "layers": [{"type": "linear", "units": u} for u in s["networkShape"]]},
        "loss": loss,
        "optimizer": {"name": "sgd", "lr": _num(lr), "momentum": 0.0, "nesterov": False,
                      "weight_decay": 0.0},
        "schedule": "constant",
        "regularization": reg,
        "training": {"batch_size": batch, "steps": steps, "grad_clip": None,
                     "early_stopping": None},
    }
    ExperimentSpec.from_dict(config)  # a SpecError here would be a bug in this module
    return config, notes


def _numbers(s: dict) -> tuple[float, int, float, float]:
    """The link's numbers, checked against what Netlab (and sense) allows: (learning rate,
    batch size, regularization rate, percent of points that train)."""
    lr = _checked("learningRate", s["learningRate"], _NUMBER_RULES["learningRate"], low=0.0,
                  high=OPTIMIZERS["sgd"].param("lr").high, low_open=True)
    batch = int(_checked("batchSize", s["batchSize"], _NUMBER_RULES["batchSize"], low=1,
                         high=1_000_000, integer=True))
    rate = _checked("regularizationRate", s["regularizationRate"],
                    _NUMBER_RULES["regularizationRate"], low=0.0)
    perc = _checked("percTrainData", s["percTrainData"], _NUMBER_RULES["percTrainData"],
                    low=0.0, high=100.0)
    return lr, batch, rate, perc


def _data_note(problem: str, tfp_set: str, name: str, n: int) -> str:
    return (f"Data: TFP's {problem} set {tfp_set} becomes Netlab's {name}"
            + (" (2 classes)" if problem == "classification" else "")
            + f", with TFP's {n} points. {SHAPES[tfp_set]} Netlab draws its own points with "
            "its own generator, so they are not TFP's points.")


def _noise(noise: float, tfp_set: str) -> tuple[float, str]:
    """data.noise for TFP's noise (playground.ts: above 80 it falls back to 50, below 0 it
    is 0)."""
    clamp = ""
    if noise > TFP_MAX_NOISE:
        clamp = (f" The link's noise {_num(noise)} is above TFP's limit of {TFP_MAX_NOISE}; TFP "
                 f"then uses {TFP_NOISE_FALLBACK}, and so does this config.")
        noise = float(TFP_NOISE_FALLBACK)
    elif noise < 0:
        clamp = f" The link's noise {_num(noise)} is below 0; TFP then uses 0, and so does this."
        noise = 0.0
    convert, tfp_how, netlab_how = NOISE[tfp_set]
    data_noise = min(_round(convert(noise / 100)), 1.0)
    return data_noise, (
        f"Noise (approximate): TFP's noise {_num(noise)} (its slider runs 0-50) becomes "
        f"data.noise {data_noise}. TFP {tfp_how}; Netlab {netlab_how}, in its [-1, 1] units. The "
        "value matches the spread of TFP's noise once its layout is scaled to Netlab's, not the "
        "exact points." + clamp)


def _split(perc: float) -> tuple[float, str]:
    """data.val_fraction (playground.ts: the first percTrainData% of the shuffled points
    train)."""
    val = round(1 - perc / 100, 6)
    note = (f"Split: percTrainData={_num(perc)} trains on {_num(perc)}% of the points; TFP's "
            f"test points become Netlab's validation share (data.val_fraction {min(val, 0.9)}); "
            "there is no test split.")
    if val > 0.9:
        note += (" Netlab keeps at least 10% of the points for training, so the validation "
                 "share is 0.9, not " + f"{_num(val)}.")
        val = 0.9
    return val, note


def _inputs(s: dict) -> tuple[list[str], list[str]]:
    """TFP's inputs that carry over (playground.ts INPUTS; a hidden input is removed from TFP's
    network), and the notes on them."""
    dropped = sorted(f for f in s["hidden"] if f in FEATURES and s[f])
    features = [f for f in FEATURES if s[f] and f not in dropped]
    more = ""
    if dropped:
        more += (f" The link hides {', '.join(dropped)} (…_hide=true), which takes it out of "
                 "TFP's network; it is left out here too.")
    if not features:
        more += (" The link turns on no input that Netlab has, so TFP's network would see "
                 "nothing of the points; this config uses X1 and X2 instead.")
        features = ["x", "y"]
    notes = [f"Inputs: {', '.join(f'{f} -> {FEATURES[f]}' for f in features)} "
             "(data.features). TFP feeds its raw coordinates (about -6..6) and features "
             "unscaled (X1² up to 36); Netlab's points lie in about [-1, 1] and "
             "data.normalize 'standard' rescales every input to unit spread on the training "
             "split, so the same learning rate does not take quite the same steps." + more]
    if any(f in features for f in ("sinX", "sinY")):
        notes.append("sin inputs: TFP's sin(X1) is taken on its -6..6 coordinates (about "
                     "sin(5 x1) in Netlab's units); Netlab's sin_x1 is sin(3 x1): the same idea "
                     "at a lower frequency.")
    cos_on = [f for f in NO_FEATURE if s[f]]
    if cos_on:
        notes.append(f"{' and '.join(cos_on)}=true: the link format has this setting but TFP's "
                     "page has no cosine input, so it did nothing in TFP; Netlab has no cosine "
                     "feature either, so it is dropped.")
    return features, notes


def _network_note(shape: list[int], activation: str) -> str:
    """playground.ts: one output unit, tanh or linear, after the hidden layers."""
    if shape:
        note = (f"Network: networkShape {','.join(map(str, shape))} becomes {len(shape)} hidden "
                f"linear layer(s) of {', '.join(map(str, shape))} units with activation "
                f"{activation} (model.layers, model.activation); Netlab adds the output layer "
                "itself.")
    else:
        note = ("Network: networkShape is empty, so there is no hidden layer: the output unit "
                "sits right on the inputs (model.layers is empty).")
    if len(shape) > TFP_MAX_LAYERS or any(u > TFP_MAX_NEURONS for u in shape):
        note += (f" TFP's page builds at most {TFP_MAX_LAYERS} hidden layers of "
                 f"{TFP_MAX_NEURONS} neurons; this link asks for more, and Netlab builds it as "
                 "given.")
    return note


def _loss(problem: str) -> tuple[str, str]:
    """nn.ts Errors.SQUARE: 0.5 (output - label)^2."""
    if problem == "classification":
        return "bce", (
            "Output and loss: TFP ends in one tanh unit trained with squared error "
            "0.5 × (output - label)² against labels -1/+1. Netlab ends in one logit trained with "
            "binary cross-entropy (loss 'bce', a sigmoid inside) on classes 0/1: the same single "
            "output unit with its boundary in the same place (TFP's output 0, Netlab's "
            "probability 0.5), but a different loss, so loss values do not compare with TFP's "
            "and the gradients differ in size.")
    return "mse", (
        "Output and loss: TFP ends in one linear unit with error 0.5 × (output - target)²; "
        "Netlab's loss 'mse' is the mean of (output - target)², whose gradient is twice TFP's: "
        "at the same learning rate Netlab steps twice as far (halve optimizer.lr to match).")


def _optimizer_note(lr: float, batch: int, n_train: int) -> str:
    """nn.ts updateWeights: w -= lr * mean gradient over the batch."""
    note = (f"Optimizer: learningRate {_num(lr)} becomes plain SGD with lr {_num(lr)}, momentum "
            "0 and a constant rate; like TFP, each update averages the gradient over batchSize "
            f"{batch} points (training.batch_size). TFP walks its training points in the same "
            "order every epoch; Netlab reshuffles them every epoch.")
    if batch > n_train:
        note += (f" batchSize {batch} is more than the {n_train} training points: TFP would "
                 "never update the weights; Netlab uses all of them in every batch.")
    return note


def _regularization(kind: str, rate: float) -> tuple[dict, str | None]:
    """nn.ts: L1 |w|, L2 0.5 w^2, a step of lr * rate * penalty'(w), weights only."""
    reg = {"l1": 0.0, "l2": 0.0}
    if kind == "none":
        return reg, (None if rate <= 0 else
                     f"Regularization: regularizationRate={_num(rate)} is ignored because "
                     "regularization is none (TFP ignores it too).")
    if rate <= 0:
        return reg, f"Regularization: {kind} at rate 0 does nothing, in TFP as here."
    key = kind.lower()
    wanted = rate if key == "l1" else rate / 2
    high = REG_PARAMS[key].high
    reg[key] = min(_round(wanted), high)
    if key == "l1":
        note = (f"Regularization: TFP's L1 penalty is rate × |w| (its gradient rate × sign(w)), "
                f"so regularization.l1 = regularizationRate = {reg['l1']}. TFP also sets a "
                "weight to exactly 0 and freezes it for good when a penalty step would carry it "
                "across zero; Netlab's L1 only pushes on it (subgradient), so weights hover near "
                "zero instead of sticking there.")
    else:
        note = (f"Regularization: TFP's L2 penalty is 0.5 × rate × w² (its gradient rate × w); "
                f"Netlab's adds l2 × w², whose gradient is 2 × l2 × w, so regularization.l2 = "
                f"regularizationRate / 2 = {reg['l2']}: the same shrinking step.")
    note += " Both penalise the weights of every layer, not the biases."
    if wanted > high:
        note += (f" TFP's rate {_num(rate)} asks for {key} = {_num(wanted)}, more than Netlab's "
                 f"maximum of {_num(high)}: it is capped at {_num(high)}.")
    return reg, note


def _init(zero: bool) -> tuple[bool, str]:
    """nn.ts: weights U(-0.5, 0.5), biases 0.1; initZero: all 0."""
    if zero:
        return True, (
            "initZero: every weight and bias starts at 0 (model.init 'zeros', model.bias_init "
            "0). Every unit of a layer then computes the same thing and gets the same gradient, "
            "so the units never become different (symmetry); with tanh, relu or linear hidden "
            "units the hidden weights get no gradient at all and only the output bias learns, "
            "in TFP as in Netlab.")
    return False, ("Initial weights: as in TFP, uniform in [-0.5, 0.5] (model.init uniform) "
                   "with hidden biases at 0.1 (model.bias_init); Netlab starts the output bias "
                   "at 0 (TFP: 0.1).")


def _seed(seed_text: str | None) -> tuple[int, str]:
    """TFP seeds seedrandom with a string; Netlab's seed is an integer derived from it."""
    if seed_text is None:
        return 0, "Seed: the link has none (TFP then picks a random one); seed 0 is used."
    seed = zlib.crc32(seed_text.encode("utf-8")) % 100_000
    return seed, (f"Seed: TFP's seed {short(seed_text, 40)} drives its own random generator, "
                  f"which Netlab cannot reproduce; seed {seed} is derived from it, so the same "
                  "link always gives the same Netlab run, with other points and starting "
                  "weights than TFP's.")


def _length(n_train: int, batch: int) -> tuple[int, str]:
    """TFP trains until paused; one TFP epoch is n_train // batch updates."""
    per_epoch = max(1, n_train // batch)
    steps = max(1, min(MAX_STEPS, EPOCHS * per_epoch))
    return steps, (f"Training length: TFP trains until you press pause; this config stops after "
                   f"training.steps {steps}, about {_num(round(steps / per_epoch, 1))} of TFP's "
                   f"epochs (passes over the {n_train} training points in batches of {batch}). "
                   "Raise training.steps to train longer.")


def _display_notes(s: dict) -> list[str]:
    """What only changes TFP's page, said once."""
    display = [f"{k}={short(s[k], 40) if k == 'tutorial' else str(s[k]).lower()}"
               for k in DISPLAY if k in s["given"] and s[k] is not None]
    hidden_controls = sorted(set(s["hidden"]) - set(FEATURES))
    if hidden_controls:
        display.append("hidden controls " + ", ".join(hidden_controls))
    if not display:
        return []
    return ["Display settings, which do not change training, are not carried over: "
            f"{'; '.join(display)}."]
