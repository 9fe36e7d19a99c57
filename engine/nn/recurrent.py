"""Recurrent layer types: rnn, lstm and gru over a sequence (steps, features), and last_step, the
head that keeps a sequence's last step. One registry entry each, like engine/nn/conv.py's.

The layers are portable.Recurrent, unrolled step by step with torch's equations, so the engine
can read dL/dh_t and the gates at every step; tests/test_recurrent.py holds them to torch's own
nn.RNN, nn.LSTM and nn.GRU with the same weights. Every weight matrix is initialised from the
layer's initializer (the model's by default) and its biases from bias_init, in the order
ih then hh, layer by layer, forward direction first.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..core.errors import SpecError
from ..core.portable import LastStep, Recurrent, Seq2Seq
from ..core.registry import DATASETS, LAYERS, Param

MAX_UNITS = 1024


def _sequence(in_shape) -> tuple[int, int]:
    steps, features = in_shape
    return steps, features


def _params(kind_params=()):
    return (Param("units", 32, "size of the hidden state h_t", low=1, high=MAX_UNITS, log=True),
            *kind_params,
            Param("num_layers", 1, "recurrent layers stacked, each reading the sequence of the "
                  "one below", low=1, high=4),
            Param("bidirectional", False, "also read the sequence backwards and join both "
                  "states: every step sees its future too"))


def packed_input(ctx) -> bool:
    """The layer reads packed sequences: padded ones whose last feature marks the real steps.
    Only the first layer sees that mask; the data must start with a recurrent layer."""
    if not ctx.spec.data.params.get("packed"):
        return False
    if ctx.index:
        return False
    return True


def _factory(kind_of):
    def factory(ctx, layer, in_shape):
        steps, features = _sequence(in_shape)
        masked = packed_input(ctx)  # the last feature is the mask
        if masked:
            features -= 1
        kind = kind_of(layer)
        units, layers = layer.get("units"), layer.get("num_layers")
        directions = 2 if layer.get("bidirectional") else 1
        if directions == 2 and DATASETS[ctx.spec.data.name].tags.get("causal"):
            raise SpecError(f"bidirectional=true would read the answers: in "
                            f"{ctx.spec.data.name} each step's target is the next input, which "
                            "the backward direction has already seen. Read forwards only")
        gates = Recurrent.GATES[kind]
        cells = OrderedDict()
        for k in range(layers):
            fan_in = features if k == 0 else units * directions
            for d in range(directions):
                suffix = f"l{k}" + ("_reverse" if d else "")
                cells[f"ih_{suffix}"] = ctx.weighted(ctx.make(nn.Linear, fan_in, gates * units),
                                                     layer)
                cells[f"hh_{suffix}"] = ctx.weighted(ctx.make(nn.Linear, units, gates * units),
                                                     layer)
        module = ctx.make(Recurrent, kind, cells, layers=layers,
                          bidirectional=directions == 2, tbptt=ctx.spec.training.tbptt,
                          **({"masked": True} if masked else {}))
        return module, (steps, units * directions)
    return factory


_TAGS = dict(sequence_only=True, recurrent=True, uses=("init", "bias_init"))
LAYERS.register("rnn", "A plain recurrent layer: h_t = act(W x_t + U h_(t-1) + b), the same three "
                "weight sets at every step.",
                _params((Param("nonlinearity", "tanh", "the activation inside the recurrence",
                               choices=("tanh", "relu")),)),
                prefix="rnn", **_TAGS)(_factory(lambda layer: f"rnn_{layer.get('nonlinearity')}"))
LAYERS.register("lstm", "Long short-term memory: a cell state c_t that input, forget and output "
                "gates write, keep and read, so gradients can travel many steps.", _params(),
                prefix="lstm", **_TAGS)(_factory(lambda layer: "lstm"))
LAYERS.register("gru", "Gated recurrent unit: update and reset gates blend the old state with a "
                "new candidate; fewer weights than an LSTM.", _params(),
                prefix="gru", **_TAGS)(_factory(lambda layer: "gru"))


@LAYERS.register("embedding", "Looks up a learned vector of `dim` numbers for each token (a "
                 "character): tokens used alike end up with similar vectors.",
                 (Param("dim", 16, "numbers per token", low=1, high=MAX_UNITS, log=True),),
                 prefix="emb", uses=("init",), tokens_only=True)
def _embedding(ctx, layer, in_shape):
    vocabulary = DATASETS[ctx.spec.data.name].tags.get("vocabulary")
    if vocabulary is None or len(in_shape) != 1:
        raise SpecError(f"an embedding reads tokens, one id per step; this input has shape "
                        f"{list(in_shape)}. Use it first, on token data "
                        f"({', '.join(DATASETS.where(input='tokens'))})")
    dim = layer.get("dim")
    return ctx.weighted(ctx.make(nn.Embedding, vocabulary, dim), layer), (in_shape[0], dim)


@LAYERS.register("seq2seq", "An encoder-decoder: a GRU encoder reads the whole sequence, a GRU "
                 "decoder writes one answer a step, feeding back its previous answer and "
                 "attending over the encoder's states. The last layer: it gives the answers.",
                 (Param("units", 64, "size of the encoder's and decoder's states", low=1,
                        high=MAX_UNITS, log=True),
                  Param("attention", "dot", "how the decoder looks at the inputs: dot "
                        "(Luong), additive (Bahdanau) or none (only the encoder's last state)",
                        choices=("dot", "additive", "none")),
                  Param("embed", 16, "numbers per previous answer fed back", low=1,
                        high=MAX_UNITS, log=True),
                  Param("teacher_forcing", 0.5, "while training, the chance the decoder reads "
                        "the true previous answer instead of its own", low=0.0, high=1.0)),
                 prefix="s2s", sequence_only=True, emits_output=True,
                 uses=("init", "bias_init"))
def _seq2seq(ctx, layer, in_shape):
    steps, features = _sequence(in_shape)
    entry = DATASETS[ctx.spec.data.name]
    classes = entry.tags.get("classes")
    if entry.tags.get("targets") != "steps" or not classes:
        raise SpecError(f"seq2seq writes a class at every step; use it on "
                        f"{', '.join(DATASETS.where(targets='steps', input='sequence'))}")
    units, embed = layer.get("units"), layer.get("embed")

    def linear(fan_in, fan_out, bias=True):
        return ctx.weighted(ctx.make(nn.Linear, fan_in, fan_out, bias=bias), layer)
    encoder = ctx.make(Recurrent, "gru", OrderedDict(ih_l0=linear(features, 3 * units),
                                                     hh_l0=linear(units, 3 * units)))
    cells = OrderedDict(embed=ctx.weighted(ctx.make(nn.Embedding, classes + 1, embed), layer),
                        ih=linear(embed, 3 * units), hh=linear(units, 3 * units))
    attention = layer.get("attention")
    if attention == "dot":
        cells["query"] = linear(units, units, bias=False)
    elif attention == "additive":
        cells.update(memory_map=linear(units, units),
                     state_map=linear(units, units, bias=False),
                     score=linear(units, 1, bias=False))
    cells["readout"] = linear(2 * units, classes)
    module = ctx.make(Seq2Seq, encoder, cells, classes, attention=attention,
                      forcing=layer.get("teacher_forcing"), generator=ctx.stream("forcing"))
    return module, (steps, classes)


@LAYERS.register("last_step", "Keeps the sequence's last step only (a many-to-one head): "
                 "(steps, units) -> (units).", prefix="last", sequence_only=True, hidden=True)
def _last_step(ctx, layer, in_shape):
    _, units = _sequence(in_shape)
    return ctx.make(LastStep), (units,)


def check_sequence_input(shape) -> None:
    if len(shape) != 2:
        tokens = ", ".join(DATASETS.where(input="tokens"))
        raise SpecError(f"it needs a sequence (steps, features), but its input has shape "
                        f"{list(shape)}. Recurrent layers go first on sequence data ("
                        f"{', '.join(DATASETS.where(input='sequence'))}), after an embedding on "
                        f"token data ({tokens}), before last_step or any linear layer")


CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}  # the recurrent layer types, as labelled


def with_cell(spec, index: int, kind: str) -> dict:
    """Layer `index` of `spec` as the recurrent cell `kind`, same size and options (a plain
    RNN's nonlinearity has no meaning in a gated cell): a config layer dict for with_changes."""
    layer = {k: v for k, v in spec.model.layers[index].to_dict().items() if k != "nonlinearity"}
    return {**layer, "type": kind}
