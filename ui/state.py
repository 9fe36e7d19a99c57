"""Spec <-> widgets <-> URL.

The experiment being edited lives in two forms: the widgets' values in st.session_state (keys
"w.<dotted config path>", layers keyed by a stable per-layer id) and the last *valid*
ExperimentSpec (session_state["spec"]). Loading a spec (URL, preset, one-click fix) writes every
widget key; after the widgets are drawn, `collect()` reads them back into a config dict, and only
a config that validates replaces the spec, so a bad value shows a message and loses nothing.

The URL carries the spec as `?cfg=<base64url(zlib(JSON))>`, the live run's id as `?run=`, the
side-by-side choice as `?compare=` and `?stop=planned` when runs stop at their planned steps
instead of training until paused (the page's default). A share link is the URL without `run`.
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from urllib.parse import quote

import streamlit as st

from engine import ExperimentSpec, SpecError
from engine.core.inputs import inflate, parse_json
from engine.core.registry import (
    ACTIVATIONS,
    DATASETS,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
)
from engine.core.spec import (
    AUG_PARAMS,
    DISTILL_PARAMS,
    PRETRAIN_PARAMS,
    AugmentSpec,
    DistillSpec,
    PretrainSpec,
)

CFG, RUN = "cfg", "run"
COMPARE = "compare"  # ?compare=: the side-by-side or A/B choice, e.g. clipping
MAX_COMPARE_CHARS = 400
STOP, PLANNED = "stop", "planned"  # ?stop=planned: "Train until paused" is off
SHARED_PATH = "upload.csv"  # what a share link says instead of the server path of an upload
W = "w."
NO_OVERRIDE = ""  # the per-layer picker's "use the model default" option

# Choice fields edited with a registry picker: config path -> registry
CHOICES = {"model.activation": ACTIVATIONS, "model.init": INITIALIZERS, "loss": LOSSES,
           "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
SCALARS = ("seed", "device", "data.normalize", "data.val_fraction", "data.test_fraction",
           "model.bias_init", "regularization.l1", "regularization.l2", "training.batch_size",
           "training.steps", "training.log_every", "training.tbptt")
# scalars to_dict leaves out at their default (older configs have none of them)
UNWRITTEN = {"training.tbptt": 0}
# Settings with no widget yet: carried through unchanged from the loaded spec, so a config from
# the CLI or a link keeps them.
HIDDEN = ("model.output", "training.eval_every", "training.early_stopping.min_delta",
          "training.early_stopping.restore_best",
          "data.seed")  # a sweep variant's data seed: it opens here with the sweep's data


# ----------------------------------------------------------------------------- URL


def encode_link(spec: ExperimentSpec) -> str:
    raw = json.dumps(spec.canonical().to_dict(), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


# Measured: the link of a 200-layer net with every per-layer override and a long CSV path is
# ~4,900 characters and inflates to ~21 KB of JSON. Four times that is still a link; a 97 KB
# crafted one had expanded to 75 MB and its echoed value froze the browser.
MAX_LINK_CHARS = 20_000
MAX_LINK_JSON = 256 * 1024
LINK = "the experiment in this link"


def decode_link(text: str) -> ExperimentSpec:
    """?cfg= -> spec, with every step bounded: the text's length before decoding, the inflated
    size while inflating, the JSON's depth and numbers before building anything. Messages never
    echo the link itself."""
    if not isinstance(text, str):
        raise SpecError(f"{LINK} is damaged (it is not text)")
    if len(text) > MAX_LINK_CHARS:
        raise SpecError(f"{LINK} is too long ({len(text):,} characters; a Netlab link has at most "
                        f"{MAX_LINK_CHARS:,})")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise SpecError(f"{LINK} is damaged (it may have been cut off when copied)") from None
    raw = inflate(packed, MAX_LINK_JSON, LINK)
    return ExperimentSpec.from_dict(parse_json(raw, LINK, MAX_LINK_JSON))


# ----------------------------------------------------------------------------- dotted access


def _get(d: dict, path: str):
    """The value at a dotted path of a config dict, or None where the path does not exist."""
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _put(d: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value


def widget_value(value):
    """A parameter value as its widget holds it: a tuple (Adam's betas, columns left out) as a
    list."""
    return list(value) if isinstance(value, tuple) else value


def choice_keys(path: str, choice, registry) -> dict:
    """Widget values for a choice: its name and every parameter of its entry (resolved)."""
    out = {W + path: choice.name}
    for name, value in choice.resolved(registry).items():
        out[f"{W}{path}.{name}"] = widget_value(value)
    return out


def read_choice(path: str, registry, state=None):
    """The choice as a config value from widget state (defaults dropped by canonical())."""
    state = st.session_state if state is None else state
    name = state.get(W + path)
    if name in (None, NO_OVERRIDE):
        return None
    params = {}
    for p in registry[name].params:
        key = f"{W}{path}.{p.name}"
        if key in state:
            params[p.name] = state[key]
    return {"name": name, **params}


# ----------------------------------------------------------------------------- spec -> widgets


def new_layer_id() -> str:
    return uuid.uuid4().hex[:8]


def layer_keys(lid: str, layer) -> dict:
    prefix = f"{W}layer.{lid}"
    out = {f"{prefix}.type": layer.type}
    for name, value in layer.entry.resolve(layer.params).items():
        out[f"{prefix}.{name}"] = value
    uses = layer.entry.tags.get("uses", ())
    if "activation" in uses:
        if layer.activation is not None:
            out.update(choice_keys(f"layer.{lid}.activation", layer.activation, ACTIVATIONS))
        else:
            out[f"{prefix}.activation"] = NO_OVERRIDE
    if "init" in uses:
        if layer.init is not None:
            out.update(choice_keys(f"layer.{lid}.init", layer.init, INITIALIZERS))
        else:
            out[f"{prefix}.init"] = NO_OVERRIDE
    if "bias_init" in uses:
        out[f"{prefix}.bias_init"] = layer.bias_init
    return out


def widget_values(spec: ExperimentSpec) -> tuple[dict, list[str]]:
    """Every widget key for `spec`, and fresh layer ids in stack order."""
    d = spec.to_dict()
    out = {W + path: _get(d, path) for path in SCALARS}
    for path, default in UNWRITTEN.items():
        if out[W + path] is None:
            out[W + path] = default
    out[W + "data.name"] = spec.data.name
    for name, value in spec.data.params.items():
        out[W + "data." + name] = widget_value(value)
    out[W + "data.features"] = list(spec.data.features or ())
    for path, registry in CHOICES.items():
        out.update(choice_keys(path, _get_attr(spec, path), registry))
    clip = spec.training.grad_clip
    out[W + "training.clip_mode"] = clip.mode if clip else "off"
    out[W + "training.clip_max"] = clip.max if clip else 1.0
    es = spec.training.early_stopping
    out[W + "training.es_on"] = es is not None
    out[W + "training.es_patience"] = es.patience if es else 10
    augment = spec.training.augment or AugmentSpec()
    for name in AUG_PARAMS:
        out[f"{W}training.augment.{name}"] = getattr(augment, name)
    out.update(phase_values(spec))
    ids = []
    for layer in spec.model.layers:
        lid = new_layer_id()
        ids.append(lid)
        out.update(layer_keys(lid, layer))
    # frozen layers by their ids: moving or removing a layer keeps the right ones frozen
    frozen = spec.pretrain.freeze if spec.pretrain else ()
    out[FROZEN] = [ids[i] for i in frozen if i < len(ids)]
    return out, ids


# The ids of the layers pretraining freezes (not a widget's own key: a widget whose options
# change, as a reordered stack's do, starts over; this list outlives it)
FROZEN = W + "pretrain.frozen_ids"

# The teacher a distillation starts with when it is switched on: a wider net of the same kind.
DEFAULT_TEACHER = {"image": [{"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same"},
                             {"type": "maxpool", "kernel": 2},
                             {"type": "conv2d", "filters": 32, "kernel": 3, "padding": "same"},
                             {"type": "maxpool", "kernel": 2}, {"type": "linear", "units": 64}],
                   "sequence": [{"type": "lstm", "units": 64}],
                   "tokens": [{"type": "embedding", "dim": 16}, {"type": "lstm", "units": 128}],
                   "other": [{"type": "linear", "units": 128}, {"type": "linear", "units": 128}]}


def default_teacher(dataset: str) -> list[dict]:
    tags = DATASETS[dataset].tags
    kind = tags.get("input") if tags.get("input") in DEFAULT_TEACHER else "other"
    head = [{"type": "last_step"}] if kind == "sequence" and tags.get("targets") != "steps" \
        else []
    return DEFAULT_TEACHER[kind] + head


def phase_values(spec: ExperimentSpec) -> dict:
    """Widget values of the class subset, pretraining and distillation (off: the defaults a
    switch-on starts from)."""
    pre = spec.pretrain or PretrainSpec()
    dist = spec.distill
    teacher = [layer.to_dict() for layer in dist.teacher] if dist else \
        default_teacher(spec.data.name)
    dist = dist or DistillSpec()
    return {W + "data.subset": list(spec.data.subset or ()),
            W + "pretrain.on": spec.pretrain is not None,
            W + "pretrain.classes": list(pre.classes),
            **{f"{W}pretrain.{k}": getattr(pre, k) for k in PRETRAIN_PARAMS},
            W + "distill.on": spec.distill is not None,
            W + "distill.teacher": json.dumps(teacher),
            **{f"{W}distill.{k}": getattr(dist, k) for k in DISTILL_PARAMS}}


def collect_phases(d: dict, state) -> None:
    """The class subset, pretrain and distill sections from their widgets, into config `d`."""
    subset = state.get(W + "data.subset") or []
    if subset:
        d["data"]["subset"] = list(subset)
    if state.get(W + "pretrain.on"):
        ids = list(state.get("layer_ids") or [])
        frozen = [ids.index(lid) for lid in state.get(FROZEN) or [] if lid in ids]
        d["pretrain"] = {"classes": list(state.get(W + "pretrain.classes") or []),
                         "freeze": sorted(frozen),
                         **{k: state.get(f"{W}pretrain.{k}", p.default)
                            for k, p in PRETRAIN_PARAMS.items()}}
    if state.get(W + "distill.on"):
        text = state.get(W + "distill.teacher") or ""
        try:
            teacher = json.loads(text)
        except ValueError:
            teacher = text  # from_dict names it: "distill.teacher=... is not allowed"
        d["distill"] = {"teacher": teacher, **{k: state.get(f"{W}distill.{k}", p.default)
                                               for k, p in DISTILL_PARAMS.items()}}


def _get_attr(obj, path: str):
    for k in path.split("."):
        obj = getattr(obj, k)
    return obj


def load(spec: ExperimentSpec, state=None) -> None:
    """Make `spec` the edited experiment: every widget shows it from the next draw on."""
    state = st.session_state if state is None else state
    for key in [k for k in state.keys() if isinstance(k, str) and k.startswith(W)]:
        del state[key]
    values, ids = widget_values(spec)
    for k, v in values.items():
        state[k] = v
    state["layer_ids"] = ids
    d = spec.to_dict()
    state["hidden"] = {path: _get(d, path) for path in HIDDEN}
    state["spec"] = spec.canonical()
    state.pop("tfp_notes", None)  # notes on a TensorFlow Playground link belong to that link



# ----------------------------------------------------------------------------- widgets -> spec


def collect(state=None) -> dict:
    """The config dict the widgets describe now (not yet validated)."""
    state = st.session_state if state is None else state
    d: dict = {}
    for path in SCALARS:
        _put(d, path, state[W + path])
    name = state[W + "data.name"]
    entry = DATASETS[name]
    data = {"name": name}
    for p in entry.params:
        data[p.name] = state.get(W + "data." + p.name, p.default)
    if entry.tags.get("input") == "plane":
        data["features"] = list(state.get(W + "data.features") or [])
    d["data"].update(data)
    for path, registry in CHOICES.items():
        _put(d, path, read_choice(path, registry, state))
    mode = state[W + "training.clip_mode"]
    d["training"]["grad_clip"] = None if mode == "off" else {mode: state[W + "training.clip_max"]}
    d["training"]["early_stopping"] = (
        {"patience": state[W + "training.es_patience"]} if state[W + "training.es_on"] else None)
    if entry.tags.get("input") == "image":  # augmentation changes images only; all off: none
        augment = {name: state.get(f"{W}training.augment.{name}", p.default)
                   for name, p in AUG_PARAMS.items()}
        d["training"]["augment"] = augment if any(augment.values()) else None
    if entry.tags.get("task") == "classification":
        collect_phases(d, state)
    d["model"]["layers"] = [collect_layer(lid, state) for lid in state["layer_ids"]]
    for path, value in state.get("hidden", {}).items():
        parent = _get(d, path.rsplit(".", 1)[0])
        if value is not None and isinstance(parent, dict):  # early stopping may be off now
            parent[path.rsplit(".", 1)[1]] = value
    return d


def collect_layer(lid: str, state) -> dict:
    prefix = f"{W}layer.{lid}"
    kind = state[f"{prefix}.type"]
    entry = LAYERS[kind]
    layer = {"type": kind}
    for p in entry.params:
        layer[p.name] = state.get(f"{prefix}.{p.name}", p.default)
    uses = entry.tags.get("uses", ())
    if "activation" in uses:
        layer["activation"] = read_choice(f"layer.{lid}.activation", ACTIVATIONS, state)
    if "init" in uses:
        layer["init"] = read_choice(f"layer.{lid}.init", INITIALIZERS, state)
    if "bias_init" in uses:
        layer["bias_init"] = state.get(f"{prefix}.bias_init")
    return layer


def edited_spec(state=None) -> tuple[ExperimentSpec, str | None]:
    """(spec, error): the widgets' experiment if it validates, else the last valid one and
    the message saying what is wrong."""
    state = st.session_state if state is None else state
    try:
        spec = ExperimentSpec.from_dict(collect(state)).canonical()
    except SpecError as e:
        return state["spec"], str(e)
    state["spec"] = spec
    return spec, None


def init_from_url(default: ExperimentSpec) -> str | None:
    """First draw of a session: load the URL's spec (or the default). Returns an error message
    when the link's spec was unusable and the default was loaded instead."""
    if "spec" in st.session_state:
        return None
    error = None
    spec = default
    if CFG in st.query_params:
        try:
            spec = decode_link(st.query_params[CFG])
        except SpecError as e:
            error = f"This link's experiment could not be loaded: {e}. Showing the default instead."
    load(spec)
    st.session_state["endless"] = st.query_params.get(STOP) != PLANNED
    linked = st.query_params.get(COMPARE)
    if linked and len(linked) <= MAX_COMPARE_CHARS:  # checked against what applies when drawn
        st.session_state["compare"] = linked
    return error


def sync_url(spec: ExperimentSpec, run_id: str | None, compare: str | None = None,
             endless: bool = True) -> None:
    """The address bar holds the experiment, its side-by-side choice, whether runs stop at
    their planned steps and the page's run."""
    code = encode_link(spec)
    if st.query_params.get(CFG) != code:
        st.query_params[CFG] = code
    _sync_param(COMPARE, compare or None)
    _sync_param(STOP, None if endless else PLANNED)
    sync_run(run_id)


def _sync_param(name: str, value: str | None) -> None:
    """?name=value in the address bar, or no ?name= at all for None."""
    if value and st.query_params.get(name) != value:
        st.query_params[name] = value
    elif not value and name in st.query_params:
        del st.query_params[name]


def sync_run(run_id: str | None) -> None:
    """Put the page's run id in the address bar. The live fragment calls this too, so the
    address bar follows the page's run even when a full rerun's update did not reach it (seen
    in Chromium: after a watcher's Reset the page showed its own new run while the address bar
    kept the watched one; every rerun, a fragment's included, reads the browser's query string
    as it was sent, so a stale one is corrected on the next refresh)."""
    _sync_param(RUN, run_id)


def upload_of(spec: ExperimentSpec) -> str | None:
    """The path of the user's file the spec trains on (a dataset tagged `upload` names the
    parameter that holds it), or None."""
    return spec.data.params.get(spec.data.upload) if spec.data.upload else None


def shareable(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with an uploaded file's server path replaced by a placeholder."""
    return spec.with_upload(SHARED_PATH) if upload_of(spec) else spec


def share_query(spec: ExperimentSpec, keep_path: bool = False, compare: str | None = None,
                endless: bool = True) -> str:
    """?cfg= for a link. An uploaded file's path is left out unless asked for: the recipient
    cannot read another browser's upload anyway, and the path would show the server's folders
    and let anyone confirm a guess of the file's content (its name is a hash of it)."""
    query = f"?{CFG}={encode_link(spec if keep_path else shareable(spec))}"
    return query + (f"&{COMPARE}={quote(compare, safe='')}" if compare else "") + (
        "" if endless else f"&{STOP}={PLANNED}")
