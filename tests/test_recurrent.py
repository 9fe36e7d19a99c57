"""Recurrent layers against torch's own nn.RNN, nn.LSTM and nn.GRU (same weights, same outputs
and gradients), truncated BPTT against full BPTT, and the sequence datasets' definitions."""
import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.data.datasets import load_dataset
from engine.nn.model import build_model

TORCH = {"rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
         "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
         "lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {})}
LAYER = {"rnn_tanh": {"type": "rnn"}, "rnn_relu": {"type": "rnn", "nonlinearity": "relu"},
         "lstm": {"type": "lstm"}, "gru": {"type": "gru"}}


def ours(kind, units=5, layers=1, bidirectional=False, tbptt=0, length=7, seed=0):
    spec = ExperimentSpec.from_dict({
        "seed": seed, "data": {"name": "sine", "length": length, "n": 50},
        "model": {"init": "xavier_uniform", "bias_init": 0.1, "layers": [
            {**LAYER[kind], "units": units, "num_layers": layers,
             "bidirectional": bidirectional}]},
        "training": {"tbptt": tbptt}})
    return build_model(spec, (length, 1), 1).get_submodule(
        "rnn1" if kind.startswith("rnn") else f"{kind}1")


def twin(layer, kind, units, layers, bidirectional):
    """torch's module with our layer's weights."""
    cls, kw = TORCH[kind]
    ref = cls(1, units, num_layers=layers, bidirectional=bidirectional, batch_first=True, **kw)
    with torch.no_grad():
        for k in range(layers):
            for suffix in [f"l{k}"] + ([f"l{k}_reverse"] if bidirectional else []):
                for part in ("ih", "hh"):
                    lin = layer.cells[f"{part}_{suffix}"]
                    getattr(ref, f"weight_{part}_{suffix}").copy_(lin.weight)
                    getattr(ref, f"bias_{part}_{suffix}").copy_(lin.bias)
    return ref


@pytest.mark.parametrize("kind", list(TORCH))
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_a_recurrent_layer_computes_what_torchs_module_computes(kind, layers, bidirectional):
    layer = ours(kind, layers=layers, bidirectional=bidirectional)
    ref = twin(layer, kind, 5, layers, bidirectional)
    x = torch.randn(4, 7, 1, generator=torch.Generator().manual_seed(1), requires_grad=True)
    mine = layer(x)
    theirs = ref(x)[0]
    assert mine.shape == theirs.shape == (4, 7, 5 * (1 + bidirectional))
    assert torch.allclose(mine, theirs, atol=1e-6)
    weights = torch.linspace(-1, 1, mine.numel()).reshape(mine.shape)  # any loss will do
    g_mine, = torch.autograd.grad((mine * weights).sum(), x)
    g_theirs, = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.allclose(g_mine, g_theirs, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_truncated_bptt_is_full_bptt_when_it_covers_the_sequence_and_cuts_otherwise(kind):
    x = torch.randn(3, 9, 1, generator=torch.Generator().manual_seed(2), requires_grad=True)

    def input_grad(tbptt):
        layer = ours(kind, length=9, tbptt=tbptt)
        return torch.autograd.grad(layer(x)[:, -1].sum(), x)[0]
    full = input_grad(0)
    assert torch.equal(input_grad(9), full) and torch.equal(input_grad(50), full)
    cut = input_grad(4)  # the state is detached at steps 4 and 8: the last step sees x_8 only
    assert (cut[:, :8] == 0).all() and torch.equal(cut[:, 8], full[:, 8])
    assert (full[:, :8] != 0).any()


def test_the_watch_sees_every_step_and_the_gates():
    layer = ours("lstm", layers=2, bidirectional=True)
    seen = []
    layer.watch = lambda k, d, t, h, gates: seen.append((k, d, t, sorted(gates)))
    layer(torch.randn(2, 7, 1))
    assert len(seen) == 2 * 2 * 7
    assert seen[0] == (0, 0, 0, ["forget", "input", "output"])


def test_the_adding_problem_is_what_it_says():
    data = load_dataset(ExperimentSpec.from_dict(
        {"data": {"name": "adding", "n": 300, "length": 12, "normalize": "none"}}).data, 0)
    x, y = data.x_train, data.y_train
    assert x.shape[1:] == (12, 2) and y.shape[1:] == (1,)
    marks = x[:, :, 1]
    assert (marks.sum(1) == 2).all()
    assert (marks[:, :6].sum(1) == 1).all()  # one in each half
    assert torch.allclose((x[:, :, 0] * marks).sum(1, keepdim=True), y)
    assert abs(float(((y - 1) ** 2).mean()) - 1 / 6) < 0.03  # the trivial error, 1/6


def test_a_sine_sequence_continues_into_its_target():
    data = load_dataset(ExperimentSpec.from_dict(
        {"data": {"name": "sine", "n": 50, "length": 10, "noise": 0.0,
                  "normalize": "none"}}).data, 0)
    assert data.x_train.shape[1:] == (10, 1)
    assert (data.y_train.abs() <= 1).all() and data.y_train.shape[1:] == (1,)


@pytest.mark.parametrize("layers, why", [
    ([{"type": "lstm"}], None),
    ([{"type": "linear", "units": 4}, {"type": "gru"}], "needs a sequence"),
    ([{"type": "last_step"}, {"type": "last_step"}], "needs a sequence"),
])
def test_recurrent_layers_need_a_sequence(layers, why):
    spec = ExperimentSpec.from_dict({"data": {"name": "adding", "n": 100},
                                     "model": {"layers": layers}})
    if why is None:
        Trainer(spec).run(2)
        return
    with pytest.raises(SpecError, match=why):
        Trainer(spec)


@pytest.mark.slow
def test_an_lstm_solves_the_adding_problem_that_defeats_a_plain_rnn():
    """The same budget on sequences of 30: the LSTM's error falls far below the trivial 1/6,
    the RNN's stays near it (seed 0 here; the presets check five)."""
    def error(kind):
        spec = ExperimentSpec.from_dict({
            "data": {"name": "adding", "length": 30, "normalize": "none", "n": 2000},
            "model": {"layers": [{"type": kind, "units": 32}, {"type": "last_step"}]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"steps": 300, "batch_size": 64, "log_every": 100}})
        return Trainer(spec).run().evaluate("val")["loss"]
    assert error("lstm") < 0.02 < 0.12 < error("rnn")


def test_time_grad_is_dL_dh_t_through_every_later_step():
    """Oracle: the same first batch through a hand-written tanh recurrence with the run's initial
    weights, each h_t's gradient kept by autograd (retain_grad)."""
    from engine.core.portable import Batches, generator

    spec = ExperimentSpec.from_dict({
        "data": {"name": "adding", "n": 200, "length": 8, "normalize": "none"},
        "model": {"layers": [{"type": "rnn", "units": 6}, {"type": "last_step"}]},
        "training": {"steps": 1, "batch_size": 16}})
    t = Trainer(spec)
    start = {k: v.clone() for k, v in t.model.state_dict().items()}
    idx = Batches(len(t.data.y_train), 16, generator(0, "batches"), "cpu").next()
    t.run()
    x, y = t.data.x_train[idx], t.data.y_train[idx]
    W = start["rnn1.cells.ih_l0.weight"].requires_grad_()
    U = start["rnn1.cells.hh_l0.weight"]
    b = start["rnn1.cells.ih_l0.bias"] + start["rnn1.cells.hh_l0.bias"]
    h, hs = torch.zeros(16, 6), []
    for step in range(8):
        h = torch.tanh(x[:, step] @ W.T + h @ U.T + b)
        h.retain_grad()
        hs.append(h)
    out = hs[-1] @ start["out.weight"].T + start["out.bias"]
    torch.nn.functional.mse_loss(out, y).backward()
    expected = [float(hh.grad.norm(dim=1).mean() * 16) for hh in hs]
    row = t.history.rows[0]["layers"][0]
    assert row["name"] == "rnn1"
    assert row["time_grad"] == pytest.approx(expected, rel=1e-4)
    assert "gates" not in row  # a plain RNN has none


def test_lstm_rows_carry_each_gates_mean_per_step():
    spec = ExperimentSpec.from_dict({
        "data": {"name": "sine", "n": 100, "length": 5},
        "model": {"layers": [{"type": "lstm", "units": 4, "num_layers": 2}, {"type": "last_step"}]},
        "training": {"steps": 1, "batch_size": 8}})
    t = Trainer(spec)
    lstm = t.model.lstm1
    caught = []
    lstm.watch = None

    def spy(layer, direction, step, h, gates):  # our own watch, chained before the engine's
        if layer == 1 and not direction:
            caught.append(gates["forget"].detach().mean().item())
    original = t.diagnostics._watch_steps

    def both(name, module):
        engine_watch = original(name, module)
        return lambda *a: (spy(*a), engine_watch(*a))
    t.diagnostics._watch_steps = both
    t.run()
    gates = t.history.rows[0]["layers"][0]["gates"]
    assert sorted(gates) == ["forget", "input", "output"] and len(gates["forget"]) == 5
    assert gates["forget"] == pytest.approx(caught, rel=1e-6)
    assert len(t.history.rows[0]["layers"][0]["time_grad"]) == 5
    assert lstm.watch is None  # no watching outside logged steps


# ----------------------------------------------------------------------------- an answer per step

COPY = {"data": {"name": "copy", "n": 120, "length": 3, "delay": 2, "normalize": "none"},
        "model": {"layers": [{"type": "gru", "units": 8}]},
        "training": {"steps": 3, "batch_size": 8, "log_every": 1}}


def test_the_copy_task_asks_for_blanks_then_the_letters_in_order():
    data = load_dataset(ExperimentSpec.from_dict(COPY).data, 0)
    x, y = data.x_train, data.y_train
    assert x.shape[1:] == (8, 10) and y.shape[1:] == (8,)  # 3 + 2 + 3 steps; 9 symbols + go
    letters = x[:, :3, :9].argmax(2)
    assert (letters > 0).all() and torch.equal(y[:, 5:], letters)
    assert (y[:, :5] == 0).all() and (x[:, 5:, 9] == 1).all() and (x[:, :5, 9] == 0).all()
    assert data.class_names[0] == "blank" and data.classes == 9


def test_every_step_is_scored_as_an_example():
    """Oracle: cross-entropy and accuracy over all (example, step) pairs, by hand."""
    t = Trainer(ExperimentSpec.from_dict(COPY)).run()
    x, y = t.data.x_val, t.data.y_val
    t.model.eval()
    with torch.no_grad():
        out = t.model(x)
    assert out.shape == (len(y), 8, 9)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, 9), y.reshape(-1))
    acc = (out.argmax(-1) == y).float().mean()
    val = t.evaluate("val")
    assert val["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert val["acc"] == pytest.approx(float(acc), rel=1e-6)
    from engine.lab.metrics import report
    r = report(t, "val")
    assert r["examples"] == y.numel() and r["accuracy"] == pytest.approx(val["acc"])


def test_an_answer_per_step_needs_the_stack_to_end_on_a_sequence():
    spec = ExperimentSpec.from_dict({**COPY, "model": {"layers": [{"type": "gru"},
                                                                  {"type": "last_step"}]}})
    with pytest.raises(SpecError, match="answer at every step"):
        Trainer(spec)


# ----------------------------------------------------------------------------- a character model

CHARS_SPEC = {"data": {"name": "chars", "length": 12, "stride": 5},
              "model": {"layers": [{"type": "embedding", "dim": 6},
                                   {"type": "lstm", "units": 16}]},
              "training": {"steps": 40, "batch_size": 16, "log_every": 20}}


def test_the_character_windows_predict_the_next_character_and_hold_out_the_texts_end():
    from engine.data.datasets import CHARS
    from engine.data.texts import NETLAB_TEXT
    data = load_dataset(ExperimentSpec.from_dict(CHARS_SPEC).data, 0)
    assert data.x_train.dtype == torch.long and data.x_train.shape[1:] == (12,)
    assert torch.equal(data.x_train[:, 1:], data.y_train[:, :-1])  # the next character
    text = "".join(CHARS[int(i)] for i in data.x_train[0]) + CHARS[int(data.y_train[0, -1])]
    assert text == NETLAB_TEXT[:13]
    last_train = "".join(CHARS[int(i)] for i in data.x_train[-1])
    first_val = "".join(CHARS[int(i)] for i in data.x_val[0])
    assert NETLAB_TEXT.index(first_val) > NETLAB_TEXT.index(last_train)  # the end is held out


def test_greedy_writing_takes_the_likeliest_character_each_time():
    from engine.data.datasets import CHARS
    from engine.lab.decode import generate
    t = Trainer(ExperimentSpec.from_dict(CHARS_SPEC)).run()
    text = generate(t, "the ", 30, temperature=0)
    ids = [CHARS.index(c) for c in "the " + text]
    t.model.eval()
    with torch.no_grad():
        for k in range(4, len(ids)):
            logits = t.model(torch.tensor([ids[max(0, k - 12):k]]))[0, -1]
            assert int(logits.argmax()) == ids[k]
    assert generate(t, "the ", 30, 1.0, seed=3) == generate(t, "the ", 30, 1.0, seed=3)
    assert generate(t, "the ", 30, 1.0, seed=3) != generate(t, "the ", 30, 1.0, seed=4)
    assert len(generate(t, "ÄÖ§", 5, 0.5)) == 5  # characters the text never uses: left out
    with pytest.raises(SpecError, match="temperature"):
        generate(t, "a", 5, -1)


def test_the_embedding_map_is_the_vectors_principal_plane():
    from sklearn.decomposition import PCA

    from engine.lab.decode import embedding_map
    t = Trainer(ExperimentSpec.from_dict(CHARS_SPEC)).run()
    m = embedding_map(t)
    w = t.model.emb1.weight.detach().numpy()
    pca = PCA(2).fit(w)
    ref = pca.transform(w)
    for axis in range(2):  # each axis up to its sign
        mine = torch.tensor([m["x"], m["y"]][axis])
        theirs = torch.tensor(ref[:, axis], dtype=torch.float32)
        sign = 1.0 if float((mine * theirs).sum()) >= 0 else -1.0
        assert torch.allclose(mine, sign * theirs, atol=1e-4)
    assert m["explained"] == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-4)
    assert len(m["labels"]) == t.data.classes


def test_the_reversal_answer_is_the_mirrored_letter():
    data = load_dataset(ExperimentSpec.from_dict(
        {"data": {"name": "reverse", "n": 50, "length": 5, "normalize": "none"}}).data, 0)
    letters = data.x_train.argmax(2)
    assert torch.equal(data.y_train, letters.flip(1)) and data.classes == 8


def test_hidden_paths_are_the_states_on_their_principal_plane():
    """Oracle: the layer's own output sequence (h_t at every step) through scikit-learn's PCA."""
    from sklearn.decomposition import PCA

    from engine.lab.decode import hidden_trajectories
    spec = ExperimentSpec.from_dict({"data": {"name": "adding", "n": 200, "length": 9},
                                     "model": {"layers": [{"type": "lstm", "units": 6},
                                                          {"type": "last_step"}]},
                                     "training": {"steps": 20}})
    t = Trainer(spec).run()
    paths = hidden_trajectories(t, examples=3)
    assert paths["layer"] == "lstm1"
    xy = torch.tensor(paths["paths"])
    assert xy.shape == (3, 9, 2)
    with torch.no_grad():
        h = t.model.lstm1(t.data.x_val[:3]).reshape(-1, 6).numpy()
    ref = torch.tensor(PCA(2).fit_transform(h), dtype=torch.float32).reshape(3, 9, 2)
    for axis in range(2):
        sign = 1.0 if float((xy[..., axis] * ref[..., axis]).sum()) >= 0 else -1.0
        assert torch.allclose(xy[..., axis], sign * ref[..., axis], atol=1e-4)
    assert t.model.lstm1.watch is None  # the watch it borrowed is given back


# ----------------------------------------------------------------------------- packed sequences

@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_masked_layer_computes_what_torchs_packed_sequences_compute(kind, bidirectional):
    """Oracle: torch's own module on pack_padded_sequence; equal on every real step."""
    layer = ours(kind, layers=2, bidirectional=bidirectional, length=7)
    layer.masked = True
    ref = twin(layer, kind, 5, 2, bidirectional)
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([7, 3, 5, 1])
    x = torch.randn(4, 7, 1, generator=g)
    mask = (torch.arange(7)[None, :] < lengths[:, None]).float()[..., None]
    x = x * mask  # padding after each sequence's end
    mine = layer(torch.cat([x, mask], 2))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    theirs, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True,
                                                       total_length=7)
    real = mask.bool().expand_as(mine)
    assert torch.allclose(mine[real], theirs[real], atol=1e-5)
    if not bidirectional:  # padding at the end: the padded path agrees on every real step
        layer.masked = False
        padded = layer(x)
        assert torch.allclose(mine[real], padded[real], atol=1e-6)
    last = mine[torch.arange(4), lengths - 1]  # the forward state stays put after the end
    assert torch.allclose(mine[:, -1, :5], last[:, :5], atol=1e-6)


def test_embedded_reber_strings_wrap_a_reber_string_and_half_are_wrong():
    from engine.data.datasets import REBER
    data = load_dataset(ExperimentSpec.from_dict(
        {"data": {"name": "reber", "n": 300, "normalize": "none"}}).data, 0)
    x, y = data.x_train, data.y_train
    for i in range(len(y)):
        length = int(x[i, :, -1].sum())
        s = "".join(REBER[int(k)] for k in x[i, :length, :-1].argmax(1))
        assert s[0] == "B" and s[-1] == "E" and s[2] == "B" and s[-3] == "E"
        assert (s[1] == s[-2]) == bool(y[i])
        assert (x[i, length:] == 0).all()
    assert 0.4 < float(y.float().mean()) < 0.6
    spec = {"data": {"name": "reber", "n": 50}, "model": {"layers": [8, {"type": "gru"}]}}
    with pytest.raises(SpecError, match="first layer must be recurrent"):
        Trainer(ExperimentSpec.from_dict(spec))


def test_a_bidirectional_layer_may_not_read_the_next_character():
    spec = ExperimentSpec.from_dict({"data": {"name": "chars"}, "model": {"layers": [
        {"type": "embedding"}, {"type": "gru", "bidirectional": True}]}})
    with pytest.raises(SpecError, match="would read the answers"):
        Trainer(spec)


# ----------------------------------------------------------------------------- encoder-decoder

def s2s_trainer(attention="dot", forcing=0.5, steps=30, **data):
    return Trainer(ExperimentSpec.from_dict({
        "data": {"name": "reverse", "n": 200, "length": 5, **data},
        "model": {"layers": [{"type": "seq2seq", "units": 8, "embed": 4,
                              "attention": attention, "teacher_forcing": forcing}]},
        "training": {"steps": steps, "batch_size": 16}})).run()


@pytest.mark.parametrize("attention", ["dot", "additive", "none"])
def test_a_decoder_step_is_a_gru_cell_and_its_attention_by_hand(attention):
    t = s2s_trainer(attention, steps=3)
    m = t.model.out
    memory = torch.randn(2, 5, 8)
    h = torch.randn(2, 8)
    token = torch.tensor([3, 8])  # 8: the start token
    cell = torch.nn.GRUCell(4, 8)
    with torch.no_grad():
        cell.weight_ih.copy_(m.cells["ih"].weight)
        cell.bias_ih.copy_(m.cells["ih"].bias)
        cell.weight_hh.copy_(m.cells["hh"].weight)
        cell.bias_hh.copy_(m.cells["hh"].bias)
        new_h = cell(m.cells["embed"].weight[token], h)
        if attention == "dot":
            scores = torch.einsum("btu,bu->bt", memory, new_h @ m.cells["query"].weight.T)
        elif attention == "additive":
            mixed = torch.tanh(memory @ m.cells["memory_map"].weight.T + m.cells["memory_map"].bias
                               + (new_h @ m.cells["state_map"].weight.T)[:, None])
            scores = (mixed @ m.cells["score"].weight.T)[:, :, 0]
        context = memory[:, -1] if attention == "none" else \
            torch.einsum("bt,btu->bu", torch.softmax(scores, 1), memory)
        expected = torch.cat([new_h, context], 1) @ m.cells["readout"].weight.T + \
            m.cells["readout"].bias
        logits, state, weights = m.step(token, h, memory)
    assert torch.allclose(state, new_h, atol=1e-6) and torch.allclose(logits, expected, atol=1e-5)
    assert (weights is None) == (attention == "none")


def test_teacher_forcing_feeds_the_true_answers_while_training_only():
    t = s2s_trainer(forcing=1.0, steps=3)
    m = t.model.out
    x, y = t.data.x_val[:4], t.data.y_val[:4]
    m.eval()
    with torch.no_grad():
        m.targets = y
        forced = m(x)
        assert m.targets is None  # one forward only
        memory, h = m.encode(x)
        token, by_hand = torch.full((4,), m.classes), []
        for step in range(5):
            logits, h, _ = m.step(token, h, memory)
            by_hand.append(logits)
            token = y[:, step]  # always the true answer
        free = m(x)
    assert torch.allclose(forced, torch.stack(by_hand, 1), atol=1e-6)
    assert not torch.allclose(forced, free)


def test_beam_search_of_width_one_is_greedy_and_wider_beams_score_no_worse():
    from engine.lab.decode import attention_map, beam_search
    t = s2s_trainer(steps=40)
    x = t.data.x_val[:6]
    t.model.eval()
    with torch.no_grad():
        greedy = t.model(x).argmax(-1).tolist()
    assert beam_search(t, x, 1) == greedy

    def score(example, answer):  # the summed log-probability of an answer, fed back
        m = t.model.out
        with torch.no_grad():
            memory, h = m.encode(example[None])
            token, total = torch.tensor([m.classes]), 0.0
            for k in answer:
                logits, h, _ = m.step(token, h, memory)
                total += float(torch.log_softmax(logits[0], 0)[k])
                token = torch.tensor([k])
        return total
    for example, narrow, wide in zip(x, greedy, beam_search(t, x, 4)):
        assert score(example, wide) >= score(example, narrow) - 1e-5
    att = attention_map(t, 0)
    assert len(att["weights"]) == 5 and all(abs(sum(r) - 1) < 1e-5 for r in att["weights"])


def test_an_encoder_decoder_is_the_last_layer_on_a_task_with_an_answer_per_step():
    with pytest.raises(SpecError, match="must be the last layer"):
        Trainer(ExperimentSpec.from_dict({"data": {"name": "reverse", "n": 50},
                                          "model": {"layers": [{"type": "seq2seq"}, 8]}}))
    with pytest.raises(SpecError, match="writes a class at every step"):
        Trainer(ExperimentSpec.from_dict({"data": {"name": "adding", "n": 50},
                                          "model": {"layers": [{"type": "seq2seq"}]}}))
