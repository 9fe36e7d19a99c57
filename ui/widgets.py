"""Pickers built from the engine's registries, and the layer-stack editor.

No option list is written here: every selectbox reads a registry, every number input reads a
Param's range, and every help text is the registry entry's teaching doc. Widget keys follow
ui/state.py ("w.<config path>"; layers by stable id, so removing layer 2 cannot shift the
settings of layer 3 onto it).
"""
from __future__ import annotations

import json

import streamlit as st

from engine.core.errors import SpecError
from engine.core.registry import (
    ACTIVATIONS,
    DATASETS,
    FEATURES,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    Param,
)
from engine.core.spec import (
    DEFAULT_FEATURES,
    DEFAULT_LOSS,
    DISTILL_PARAMS,
    MAX_LAYERS,
    PRETRAIN_PARAMS,
    LayerSpec,
)
from engine.nn.conv import PADDINGS, padding_of, window_arithmetic

from . import state as S
from .guard import guarded_callback

W = S.W


def _label(name) -> str:
    return str(name).replace("_", " ")  # a choice may be a number (a padding of 1)


def param_widget(p: Param, key: str, container=None, label: str | None = None,
                 on_change=None) -> None:
    """One input for a registry parameter, bounded by its range (the spec still validates)."""
    c = container or st
    label = label or _label(p.name)
    if key not in st.session_state:
        st.session_state[key] = S.widget_value(p.default)
    if p.choices is not None:
        c.selectbox(label, p.choices, key=key, help=p.doc, format_func=_label, on_change=on_change)
    elif isinstance(p.default, bool):
        c.checkbox(label, key=key, help=p.doc)
    elif isinstance(p.default, tuple):
        # a tuple (Adam's betas) edits as text: "0.9, 0.999"
        text_key = key + ".text"
        st.session_state.setdefault(text_key, ", ".join(f"{v:g}" for v in st.session_state[key]))
        text = c.text_input(label, key=text_key, help=p.doc + " (comma-separated)")
        try:
            st.session_state[key] = [float(v) for v in text.split(",")]
        except ValueError:
            st.session_state[key] = text  # the spec check reports it by name
    elif isinstance(p.default, str) or p.default is None:
        c.text_input(label, key=key, help=p.doc)
    elif isinstance(p.default, int):
        c.number_input(label, min_value=int(p.low) if p.low is not None else None,
                       max_value=int(p.high) if p.high is not None else None, step=1, key=key,
                       help=p.doc)
    else:
        lo = None if p.low is None or p.low_open else float(p.low)
        hi = None if p.high is None or p.high_open else float(p.high)
        c.number_input(label, min_value=lo, max_value=hi, key=key, help=p.doc, format="%g",
                       step=_step(p))


def _step(p: Param) -> float:
    if p.log:
        return float(p.default) / 10 if p.default else 0.001
    if p.high is not None and p.low is not None and p.high - p.low <= 1:
        return 0.01
    return 0.1


def _reset_params(path: str, registry) -> None:
    """A different choice was picked: show its own defaults, not the old one's values."""
    name = st.session_state.get(W + path)
    for key in [k for k in st.session_state.keys() if isinstance(k, str) and k.startswith(f"{W}{path}.")]:
        del st.session_state[key]
    if name and name in registry:
        for p in registry[name].params:
            st.session_state[f"{W}{path}.{p.name}"] = S.widget_value(p.default)


def choice_picker(label: str, registry, path: str, container=None, allow_default: bool = False,
                  columns: int = 2) -> None:
    """A registry selectbox plus its parameters. allow_default adds a "model default" option
    (per-layer overrides)."""
    c = container or st
    key = W + path
    current = st.session_state.get(key)
    offered = registry.offered()
    if current in registry and registry[current].key not in offered:  # from a link: kept, shown
        offered = offered + [registry[current].key]
    options = ([S.NO_OVERRIDE] if allow_default else []) + offered
    if current not in options:
        st.session_state[key] = options[0]
    c.selectbox(label, options, key=key, on_change=_reset_params, args=(path, registry),
                format_func=lambda k: "model default" if k == S.NO_OVERRIDE else _label(k),
                help=_choice_help(registry))
    name = st.session_state[key]
    if name == S.NO_OVERRIDE or not registry[name].params:
        return
    cols = c.columns(min(columns, len(registry[name].params)))
    for i, p in enumerate(registry[name].params):
        param_widget(p, f"{key}.{p.name}", cols[i % len(cols)])


def _choice_help(registry) -> str:
    lines = [f"**{_label(e.key)}**: {e.doc}" for e in registry if e.tags.get("offered", True)]
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- data


def _dataset_changed() -> None:
    """A new dataset: its own parameters at their defaults, and a loss that fits its task."""
    entry = DATASETS[st.session_state[W + "data.name"]]
    for p in entry.params:
        st.session_state[W + "data." + p.name] = S.widget_value(p.default)
    if entry.tags.get("input") == "plane" and not st.session_state.get(W + "data.features"):
        st.session_state[W + "data.features"] = list(DEFAULT_FEATURES)
    # another set's classes and layers: no subset, no pretraining, a teacher of its kind
    st.session_state[W + "data.subset"] = []
    st.session_state[W + "pretrain.on"] = False
    st.session_state[W + "pretrain.classes"] = []
    st.session_state[S.FROZEN] = []
    st.session_state[W + "distill.teacher"] = json.dumps(S.default_teacher(entry.key))
    _stack_follows_input(entry)
    _loss_follows_task()


def _stack_follows_input(entry) -> None:
    """Sequence data needs a recurrent layer (token data an embedding before it): a stack
    without one becomes an LSTM, with last_step where one answer per sequence is wanted and none
    where every step wants one; a recurrent stack left on other data becomes the default dense
    one."""
    ids = st.session_state["layer_ids"]
    kinds = [st.session_state.get(f"{W}layer.{lid}.type") for lid in ids]
    recurrent = any(LAYERS[k].tags.get("sequence_only") for k in kinds if k in LAYERS)
    tokens = entry.tags.get("input") == "tokens"
    sequence = tokens or entry.tags.get("input") == "sequence"
    per_step = entry.tags.get("targets") == "steps"
    if not sequence and not recurrent:
        return
    if not sequence:
        _set_stack([LayerSpec(type="linear", params={"units": 8})] * 2)
        return
    if not recurrent:
        _set_stack([*([LayerSpec(type="embedding")] if tokens else []), LayerSpec(type="lstm"),
                    *([] if per_step else [LayerSpec(type="last_step")])])
        return
    keep = [lid for lid, k in zip(ids, kinds)  # an answer per step: no last_step
            if not (per_step and k == "last_step") and (tokens or k != "embedding")]
    if tokens and kinds[0] != "embedding":
        keep = _new_layers([LayerSpec(type="embedding")]) + keep
    st.session_state["layer_ids"] = keep


def _new_layers(layers) -> list[str]:
    ids = []
    for layer in layers:
        lid = S.new_layer_id()
        for k, v in S.layer_keys(lid, layer).items():
            st.session_state[k] = v
        ids.append(lid)
    return ids


def _set_stack(layers) -> None:
    st.session_state["layer_ids"] = _new_layers(layers)


def _loss_follows_task() -> None:
    """The dataset (or a table's task setting) says what is predicted: a loss written for the
    other task, or bce on more than two classes, gives way to the task's default loss."""
    entry = DATASETS[st.session_state[W + "data.name"]]
    task = entry.tags.get("task") or st.session_state.get(W + "data.task") or "classification"
    loss = LOSSES[st.session_state[W + "loss"]]
    binary_ok = not loss.tags.get("binary") or entry.tags.get("classes") == 2
    if loss.tags["task"] != task or not binary_ok:
        st.session_state[W + "loss"] = DEFAULT_LOSS[task]
        _reset_params("loss", LOSSES)


def dataset_picker(container=None) -> None:
    c = container or st
    c.selectbox("Dataset", DATASETS.keys(), key=W + "data.name", on_change=_dataset_changed,
                format_func=_label, help=_choice_help(DATASETS))
    entry = DATASETS[st.session_state[W + "data.name"]]
    # every parameter of the dataset, except the file and its columns: the upload section
    # (pages/playground.py) edits those
    own = [p for p in entry.params if p.name not in
           {entry.tags.get(t) for t in ("upload", "column", "leave_out")}]
    for row in range(0, len(own), 3):
        cols = c.columns(3 if len(own) > 3 else len(own))
        for col, p in zip(cols, own[row:row + 3]):
            param_widget(p, W + "data." + p.name, col, on_change=_loss_follows_task)
    if entry.tags.get("input") == "plane":
        c.multiselect("Input features", FEATURES.keys(), key=W + "data.features",
                      format_func=lambda k: FEATURES[k].tags["label"], help="Hand-made features "
                      "computed from each point (x1, x2) before the network sees it: "
                      + "; ".join(f"{e.tags['label']} = {e.doc}" for e in FEATURES))


def class_labels() -> tuple[list[int], callable] | None:
    """The edited dataset's class labels and how to show one ("2 · cross"), or None where they
    are known only once a table is read."""
    entry = DATASETS[st.session_state[W + "data.name"]]
    if entry.tags.get("task") != "classification":
        return None
    total = entry.tags.get("classes") or st.session_state.get(W + "data.classes")
    if not isinstance(total, int):
        return None
    names = entry.tags.get("class_names")
    return list(range(total)), (lambda c: f"{c} · {names[c]}") if names else str


def _keep_known(key: str, allowed) -> None:
    """A multiselect's kept value may name options that are gone (fewer classes, a removed
    layer): Streamlit refuses those, so they are dropped first."""
    st.session_state[key] = [v for v in st.session_state.get(key) or [] if v in allowed]


def _class_phases(classes, show) -> None:
    """The class subset and the pretraining on other classes, with its frozen layers."""
    _keep_known(W + "data.subset", classes)
    st.multiselect("Train on these classes (none picked: all)", classes, key=W + "data.subset",
                   format_func=show, help="Keep only some classes, renumbered from 0 in the "
                   "order picked.")
    st.checkbox("Pretrain on other classes first", key=W + "pretrain.on",
                help="Transfer learning: the hidden layers first learn other classes of the "
                "same data; this run starts from them with a new output layer.")
    if st.session_state[W + "pretrain.on"]:
        rest = [c for c in classes if c not in (st.session_state[W + "data.subset"] or [])]
        _keep_known(W + "pretrain.classes", rest)
        st.multiselect("Pretrain on", rest, key=W + "pretrain.classes", format_func=show,
                       help="Classes the run itself never trains on (pick the run's own "
                       "classes above).")
        c1, c2 = st.columns(2)
        param_widget(PRETRAIN_PARAMS["steps"], W + "pretrain.steps", c1, "pretrain steps")
        param_widget(PRETRAIN_PARAMS["n"], W + "pretrain.n", c2, "pretrain examples")
        ids = list(st.session_state.get("layer_ids", []))
        # by layer id (a moved layer stays frozen), held in S.FROZEN
        st.session_state["freeze_pick"] = [lid for lid in st.session_state.get(S.FROZEN) or []
                                           if lid in ids]
        names = {lid: f"{k + 1} · {_label(st.session_state.get(f'{W}layer.{lid}.type', '?'))}"
                 for k, lid in enumerate(ids)}
        st.multiselect("Freeze these layers", ids, key="freeze_pick",
                       on_change=lambda: st.session_state.update(
                           {S.FROZEN: list(st.session_state["freeze_pick"])}),
                       format_func=names.get,
                       help="Frozen layers keep their pretrained weights exactly: no "
                       "gradient, no update, BatchNorm statistics fixed. Freeze the first "
                       "layers (general features) and train the rest.")


def phases_section(spec) -> None:
    """Some classes only; pretraining on others with layers frozen (both for one class per
    example); distilling from a teacher (any classifier)."""
    entry = DATASETS[st.session_state[W + "data.name"]]
    if entry.tags.get("task") != "classification":
        return
    labels = None if entry.tags.get("targets") == "steps" else class_labels()
    on = bool(spec.data.subset or spec.pretrain or spec.distill)
    title = "Classes, transfer learning and distillation" if labels else "Distillation"
    with st.expander(title, expanded=on):
        if labels:
            _class_phases(*labels)
        st.checkbox("Distil from a teacher", key=W + "distill.on",
                    help="Knowledge distillation: a larger teacher trains first; this model then "
                    "learns from the teacher's softened outputs as well as the labels.")
        if st.session_state[W + "distill.on"]:
            st.text_area("Teacher layers (JSON, like a config's model.layers)",
                         key=W + "distill.teacher", height=100)
            c1, c2, c3 = st.columns(3)
            for col, name in zip((c1, c2, c3), DISTILL_PARAMS):
                param_widget(DISTILL_PARAMS[name], f"{W}distill.{name}", col,
                             "teacher steps" if name == "steps" else None)


# ----------------------------------------------------------------------------- conv arithmetic

WINDOWS = ("conv2d", "maxpool", "avgpool")  # the stack's sliding-window layer types
CALC = ("size", "kernel", "stride", "padding", "dilation")
# the largest value each input takes: the conv2d entry's own ranges (padding: as much as 'same'
# adds to its widest kernel)
CALC_MAX = {"size": 64, "kernel": 15, "stride": 8, "dilation": 8, "padding": 8 * 14 // 2}


def _calc_load(lid: str, size: int) -> None:
    """The calculator starts from the picked layer's own numbers."""
    kind = st.session_state[f"{W}layer.{lid}.type"]
    entry = LAYERS[kind]
    values = entry.resolve({p.name: st.session_state.get(f"{W}layer.{lid}.{p.name}", p.default)
                            for p in entry.params})
    kernel = int(values["kernel"])
    dilation = int(values.get("dilation", 1))
    padding = values.get("padding", 0)
    st.session_state.update({"calc.size": size, "calc.kernel": kernel,
                             "calc.stride": int(values["stride"]), "calc.dilation": dilation,
                             "calc.padding": padding_of(padding, kernel, dilation)})


def _as_layer_value(kind: str, name: str, value: int):
    """A calculator number as the layer's own parameter value (padding 0 is 'valid', the padding
    that keeps the size is 'same'), or SpecError naming what the layer allows."""
    param = LAYERS[kind].param(name)
    if name == "padding":
        same = padding_of("same", st.session_state["calc.kernel"],
                          st.session_state["calc.dilation"])
        if value == 0:
            return "valid"
        if value == same and st.session_state["calc.stride"] == 1 and value not in PADDINGS:
            return "same"
    return param.check(value, f"{kind} {name}")


@guarded_callback
def _calc_apply(lid: str) -> None:
    """Write the calculator's kernel, stride, padding and dilation into the layer itself, or
    say which number the layer cannot take (and change nothing)."""
    kind = st.session_state[f"{W}layer.{lid}.type"]
    values = {}
    try:
        for name in CALC[1:]:
            if LAYERS[kind].param(name) is not None:
                values[name] = _as_layer_value(kind, name, st.session_state[f"calc.{name}"])
            elif name == "padding" and st.session_state["calc.padding"]:
                raise SpecError(f"a {kind} layer takes no padding")
            elif name == "dilation" and st.session_state["calc.dilation"] != 1:
                raise SpecError(f"a {kind} layer has no dilation")
    except SpecError as e:
        st.session_state["flash"] = ("warning", f"Not applied: {e}.")
        return
    for name, value in values.items():
        st.session_state[f"{W}layer.{lid}.{name}"] = value


def conv_calculator(shapes: dict[int, dict], input_shape) -> None:
    """(W - F + 2P)/S + 1 for one sliding-window layer of the stack, with its input's real size:
    change the numbers, see the output size, apply them to the layer."""
    ids = st.session_state.get("layer_ids", [])
    picks = [i for i, lid in enumerate(ids)
             if st.session_state.get(f"{W}layer.{lid}.type") in WINDOWS and i in shapes]
    if not picks:
        return
    with st.expander("Conv arithmetic"):
        def size_into(i):  # the real input size of stack layer i
            shape = shapes[i - 1]["output_shape"] if i else input_shape
            return int(shape[-1]) if len(shape) == 3 else None
        labels = {i: f"{i + 1} · {st.session_state[f'{W}layer.{ids[i]}.type']} "
                     f"({size_into(i)}x{size_into(i)} in)" for i in picks}
        if st.session_state.get("calc.layer") not in picks:
            st.session_state["calc.layer"] = picks[0]
            st.session_state.pop("calc.for", None)
        i = st.selectbox("Layer", picks, key="calc.layer", format_func=labels.get)
        lid = ids[i]
        if st.session_state.get("calc.for") != (lid, size_into(i)):
            st.session_state["calc.for"] = (lid, size_into(i))
            _calc_load(lid, size_into(i))
        cols = st.columns(5)
        helps = {"size": "W: the input's width (and height)", "kernel": "k: the kernel's size",
                 "stride": "S: pixels between two positions", "padding": "P: zeros on each side",
                 "dilation": "d: spacing of the kernel's taps (F = d(k - 1) + 1)"}
        symbols = {"size": "W", "kernel": "k", "stride": "S", "padding": "P", "dilation": "d"}
        for col, name in zip(cols, CALC):
            col.number_input(symbols[name], min_value=0 if name == "padding" else 1,
                             max_value=CALC_MAX[name], step=1, key=f"calc.{name}",
                             help=helps[name])
        r = window_arithmetic(*(int(st.session_state[f"calc.{n}"]) for n in CALC))
        if r["error"]:
            st.error(f"No output: {r['error']}.")
        else:
            text = f"**(W − F + 2P)/S + 1** = {r['formula']}"
            if r["left_over"]:
                text += (f" → **{r['size']}** (rounded down: the last {r['left_over']} "
                         "pixel(s) of each row are never the start of a window)")
            else:
                text += f" → **{r['size']}x{r['size']}**, whole"
            st.markdown(text)
        st.button(f"Apply to layer {i + 1}", on_click=_calc_apply, args=(lid,),
                  disabled=bool(r["error"]), help="Set this layer's kernel, stride, padding "
                  "and dilation to these numbers (the input size comes from the layers "
                  "before it).")


# ----------------------------------------------------------------------------- layer stack


@guarded_callback
def _add_layer(kind: str) -> None:
    if len(st.session_state["layer_ids"]) >= MAX_LAYERS:  # a scripted client could add forever
        st.session_state["flash"] = ("warning", f"A network here has at most {MAX_LAYERS} "
                                     "layers in its stack.")
        return
    lid = S.new_layer_id()
    for k, v in S.layer_keys(lid, LayerSpec(type=kind)).items():
        st.session_state[k] = v
    st.session_state["layer_ids"] = st.session_state["layer_ids"] + [lid]


@guarded_callback
def _move_layer(lid: str, delta: int) -> None:
    ids = list(st.session_state["layer_ids"])
    if lid not in ids:  # a stale button (the layer was removed by another click)
        return
    i = ids.index(lid)
    j = i + delta
    if 0 <= j < len(ids):
        ids[i], ids[j] = ids[j], ids[i]
        st.session_state["layer_ids"] = ids


@guarded_callback
def _remove_layer(lid: str) -> None:
    _drop_layer(lid)


def _drop_layer(lid: str) -> None:
    st.session_state["layer_ids"] = [x for x in st.session_state["layer_ids"] if x != lid]
    for key in [k for k in st.session_state.keys() if isinstance(k, str) and k.startswith(f"{W}layer.{lid}.")]:
        del st.session_state[key]


COMPACT_AFTER = 8  # a longer stack is shown as blocks of repeated layers, one row a block
MAX_PATTERN = 4    # a block repeats up to this many layers (linear, batchnorm, activation, ...)


def layer_blocks(ids: list[str], state) -> list[list[list[str]]]:
    """The stack as blocks, each a list of copies of one pattern of layers (a copy: its layer
    ids). A 30-layer preset of identical layers is one block of 30 one-layer copies; ten
    (linear, batchnorm, activation) triples are one block of 10 copies. From the top, the
    pattern that covers the most layers is taken (the shortest one on a tie)."""
    settings = [json.dumps(S.collect_layer(lid, state), sort_keys=True) for lid in ids]
    blocks, i = [], 0
    while i < len(ids):
        best_k, best_r = 1, 1
        for k in range(1, MAX_PATTERN + 1):
            r = 1
            while i + (r + 1) * k <= len(ids) and \
                    settings[i + r * k:i + (r + 1) * k] == settings[i:i + k]:
                r += 1
            if r > 1 and k * r > best_k * best_r:
                best_k, best_r = k, r
        blocks.append([ids[i + c * best_k:i + (c + 1) * best_k] for c in range(best_r)])
        i += best_k * best_r
    return blocks


@guarded_callback
def _set_copies(block: list[list[str]], key: str) -> None:
    """A block's repeat count changed: copies of its last copy are added after it, or its
    last copies removed."""
    ids = list(st.session_state["layer_ids"])
    flat = [lid for copy in block for lid in copy]
    if not flat or any(lid not in ids for lid in flat):  # a stale widget
        return
    k = len(block[0])
    want = max(1, min(int(st.session_state[key]), (MAX_LAYERS - len(ids) + len(flat)) // k))
    end = ids.index(flat[-1]) + 1
    if want < len(block):
        for copy in block[want:]:
            for lid in copy:
                _drop_layer(lid)
        return
    layers = [LayerSpec.from_dict(S.collect_layer(lid, st.session_state), "layer")
              for lid in block[-1]]
    new = []
    for _ in range(want - len(block)):
        for layer in layers:
            lid = S.new_layer_id()
            for key_, v in S.layer_keys(lid, layer).items():
                st.session_state[key_] = v
            new.append(lid)
    st.session_state["layer_ids"] = ids[:end] + new + ids[end:]


def _compact_stack(ids: list[str], shapes: dict[int, dict]) -> None:
    """One row per block: what it repeats, how many times, its names and shapes, and its
    repeat count."""
    start = 0
    for block in layer_blocks(ids, st.session_state):
        pattern = [S.collect_layer(lid, st.session_state) for lid in block[0]]
        n = sum(len(copy) for copy in block)
        with st.container(border=True):
            info_a, info_b = shapes.get(start), shapes.get(start + n - 1)
            names = ""
            if info_a and info_b:
                params = sum(shapes[i]["params"] for i in range(start, start + n) if i in shapes)
                names = (f" · `{info_a['name']}`" + (f"…`{info_b['name']}`" if n > 1 else "")
                         + f" → {info_b['output_shape']} · {params:,} params")
            kinds = " → ".join(_label(layer["type"]) for layer in pattern)
            repeat = f" ×{len(block)}" if len(block) > 1 and len(pattern) > 1 else ""
            label = f"**{start + 1}{f'–{start + n}' if n > 1 else ''}. {kinds}{repeat}**"
            what = "; ".join(", ".join(f"{k} {v if not isinstance(v, dict) else v.get('name')}"
                                       for k, v in layer.items() if k != "type" and v is not None)
                             for layer in pattern)
            st.markdown(f"{label}{names}" + (f"  \n{what}" if what.strip("; ") else ""),
                        help=" ".join(LAYERS[layer["type"]].doc for layer in pattern))
            row = st.columns([3, 1], vertical_alignment="bottom")
            key = f"copies.{block[0][0]}"
            st.session_state[key] = len(block)
            row[0].number_input("copies", min_value=1, max_value=MAX_LAYERS, step=1, key=key,
                                on_change=_set_copies, args=(block, key),
                                help="How many times this block repeats: more adds copies of "
                                "it, fewer removes its last ones.")
            row[1].button("", icon=":material/close:", key=f"rmblock.{block[0][0]}",
                          on_click=_remove_block, args=(block,), help="Remove this block",
                          width="stretch")
        start += n


@guarded_callback
def _remove_block(block: list[list[str]]) -> None:
    for copy in block:
        for lid in copy:
            _drop_layer(lid)


# Layout, in the order the rows appear on the page (one pass over the stack).
def layer_stack_editor(shapes: dict[int, dict] | None = None) -> None:
    """The hidden layers, one bordered row each: type, its parameters, per-layer overrides,
    and move/remove buttons. `shapes` maps stack index -> describe() row for the caption. A
    stack longer than COMPACT_AFTER is shown as blocks of identical layers (a toggle shows
    every layer)."""
    ids = st.session_state["layer_ids"]
    if not ids:
        task = DATASETS[st.session_state[W + "data.name"]].tags.get("task")
        kind = {"regression": "linear regression",
                "classification": "logistic regression; softmax regression for more than "
                "two classes"}.get(task, "linear regression for a number, logistic regression "
                                        "for classes")
        st.caption(f"No hidden layers: the model is a single linear map ({kind}).")
    if len(ids) > COMPACT_AFTER:
        st.toggle("Show every layer", key="stack_expanded",
                  help="Long stacks are shown as blocks of identical layers; switch this on to "
                  "edit each layer on its own.")
        if not st.session_state.get("stack_expanded"):
            _compact_stack(ids, shapes or {})
            _add_buttons()
            return
    for i, lid in enumerate(ids):
        prefix = f"{W}layer.{lid}"
        kind = st.session_state[f"{prefix}.type"]
        entry = LAYERS[kind]
        with st.container(border=True):
            info = (shapes or {}).get(i)
            caption = f"**{i + 1}. {_label(kind)}**"
            if info:
                caption += f" · `{info['name']}` → {info['output_shape']} · {info['params']:,} params"
                if info.get("jump"):  # a window over an image: how much of it one value sees
                    caption += f" · sees {info['receptive_field']}x{info['receptive_field']} px"
            st.markdown(caption, help=entry.doc)
            if info and info.get("note"):
                st.caption(info["note"])
            n = len(entry.params)
            if n > 3:  # a convolution's seven settings: two a row (the column is narrow),
                for start in range(0, n, 2):  # the buttons on a row of their own
                    for col, p in zip(st.columns(2, gap="small"), entry.params[start:start + 2]):
                        param_widget(p, f"{prefix}.{p.name}", col)
                row, n = st.columns([6, 1, 1, 1], vertical_alignment="bottom", gap="small"), 1
            else:
                row = st.columns([3] * n + [1, 1, 1], vertical_alignment="bottom", gap="small")
                for col, p in zip(row, entry.params):
                    param_widget(p, f"{prefix}.{p.name}", col)
            row[n].button("", icon=":material/arrow_upward:", key=f"up.{lid}",
                          on_click=_move_layer, args=(lid, -1), disabled=i == 0,
                          help="Move up", width="stretch")
            row[n + 1].button("", icon=":material/arrow_downward:", key=f"down.{lid}",
                              on_click=_move_layer, args=(lid, 1), disabled=i == len(ids) - 1,
                              help="Move down", width="stretch")
            row[n + 2].button("", icon=":material/close:", key=f"rm.{lid}",
                              on_click=_remove_layer, args=(lid,), help="Remove this layer",
                              width="stretch")
            uses = entry.tags.get("uses", ())
            if uses:
                with st.expander("Activation, init and bias", expanded=False):
                    if "activation" in uses:
                        choice_picker("Activation", ACTIVATIONS, f"layer.{lid}.activation",
                                      allow_default=True)
                    if "init" in uses:
                        choice_picker("Initializer", INITIALIZERS, f"layer.{lid}.init",
                                      allow_default=True)
                    if "bias_init" in uses:
                        st.session_state.setdefault(f"{prefix}.bias_init", None)
                        st.number_input("Bias init", key=f"{prefix}.bias_init",
                                        format="%g", placeholder="model default",
                                        help="Starting value of every bias in this layer.")
    _add_buttons()


def _add_buttons() -> None:
    """Every layer type, behind one button: eighteen buttons in a narrow column cut their
    labels ("+ act…") and filled a screen. Inside, the labels are whole and wrap in rows."""
    with st.popover("Add a layer", icon=":material/add:", width="stretch"):
        with st.container(horizontal=True, wrap=True, gap="small"):
            for entry in LAYERS:
                st.button(f"+ {_label(entry.key)}", key=f"add.{entry.key}", on_click=_add_layer,
                          args=(entry.key,), help=entry.doc, width="content")
