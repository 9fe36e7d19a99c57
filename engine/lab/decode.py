"""Reading a trained sequence model: a character model's greedy and sampled continuations of
a prompt and its embedding vectors in two dimensions, any recurrent layer's hidden-state
trajectories, and an encoder-decoder's greedy and beam-search answers and attention.

    generate(trainer, "a network ", 120, temperature=0.8, seed=0)

At each step the model reads the last `window` characters (the length it trained on) and gives
a distribution over the next one: temperature 0 takes the most likely character (greedy),
otherwise one is drawn from softmax(logits / temperature) with a seeded generator, so the same
call writes the same text.
"""
from __future__ import annotations

import torch

from ..core.errors import SpecError

MAX_CHARS = 2000


def _alphabet(trainer) -> tuple[str, ...]:
    from ..data.datasets import CHARS
    if trainer.spec.data.name != "chars":
        raise SpecError("writing text needs the character model's data (chars)")
    return CHARS


@torch.no_grad()
def generate(trainer, prompt: str, length: int, temperature: float = 1.0, seed: int = 0) -> str:
    """`length` characters after `prompt` (characters the text never uses are left out)."""
    chars = _alphabet(trainer)
    if not 0 <= temperature <= 10:
        raise SpecError(f"temperature={temperature!r} is not allowed: expected 0 (greedy) to 10")
    if not 1 <= length <= MAX_CHARS:
        raise SpecError(f"length={length!r} is not allowed: expected 1 to {MAX_CHARS}")
    ids = [chars.index(c) for c in str(prompt).lower() if c in chars] or [chars.index(" ")]
    window = trainer.spec.data.params["length"]
    gen = torch.Generator().manual_seed(seed)
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        out = []
        for _ in range(length):
            x = torch.tensor([ids[-window:]], device=trainer.device)
            logits = model(x)[0, -1].float().cpu()
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, 0), 1,
                                            generator=gen))
            ids.append(nxt)
            out.append(chars[nxt])
    finally:
        model.train(was_training)
    return "".join(out)


@torch.no_grad()
def embedding_map(trainer) -> dict | None:
    """The first embedding layer's vectors on their two principal axes: {"x", "y", "labels",
    "explained"} (the share of the vectors' variance the two axes keep), or None."""
    emb = next((m for m in trainer.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if emb is None:
        return None
    from ..data.datasets import CHAR_NAMES
    w = emb.weight.detach().float().cpu()
    centred = w - w.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ v[:2].T if v.shape[0] >= 2 else torch.cat([centred @ v[:1].T,
                                                              torch.zeros(len(w), 1)], 1)
    var = s.square()
    return {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "labels": list(CHAR_NAMES),
            "explained": float(var[:2].sum() / var.sum()) if var.sum() > 0 else 0.0}


@torch.no_grad()
def hidden_trajectories(trainer, examples: int = 4, split: str = "val") -> dict | None:
    """The first recurrent layer's hidden state h_t (its last stacked layer, forward direction)
    at every step of the first `examples` sequences of a split, projected on the two principal
    axes of all those states: {"layer", "paths": [[[x, y] per step] per example], "explained"}.
    None without a recurrent layer."""
    from ..core.portable import Recurrent
    name, layer = next(((n, m) for n, m in trainer.model.named_children()
                        if isinstance(m, Recurrent)), (None, None))
    if layer is None:
        return None
    x = getattr(trainer.data, f"x_{split}")[:examples]
    if len(x) == 0:
        return None
    states: dict[int, torch.Tensor] = {}
    top = layer.layers - 1

    def watch(k, direction, t, h, gates):
        if k == top and not direction:
            states[t] = h.detach().float().cpu()

    model, was_training, before = trainer.model, trainer.model.training, layer.watch
    model.eval()
    layer.watch = watch
    try:
        model(x)
    finally:
        layer.watch = before
        model.train(was_training)
    h = torch.stack([states[t] for t in sorted(states)], 1)  # (examples, steps, units)
    flat = h.reshape(-1, h.shape[-1])
    centred = flat - flat.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    axes = v[:2] if v.shape[0] >= 2 else torch.cat([v[:1], torch.zeros_like(v[:1])])
    xy = (centred @ axes.T).reshape(h.shape[0], h.shape[1], 2)
    var = s.square()
    return {"layer": name, "paths": xy.tolist(),
            "explained": float(var[:2].sum() / var.sum()) if var.sum() > 0 else 0.0}


def _seq2seq(trainer):
    from ..core.portable import Seq2Seq
    module = getattr(trainer.model, "out", None)
    if not isinstance(module, Seq2Seq):
        raise SpecError("beam search and attention maps need a seq2seq model")
    return module


@torch.no_grad()
def beam_search(trainer, x: torch.Tensor, width: int = 3) -> list[list[int]]:
    """Each input's answer sequence by beam search: keep the `width` likeliest partial answers
    (by summed log-probability) at every step, extend each by every class, keep the best
    `width` again; width 1 is greedy decoding."""
    if not 1 <= width <= 16:
        raise SpecError(f"width={width!r} is not allowed: expected 1 to 16")
    module = _seq2seq(trainer)
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        answers = []
        for example in x.to(trainer.device):
            memory, h = module.encode(example[None])
            beams = [(0.0, [], h)]
            for _ in range(x.shape[1]):
                grown = []
                for score, seq, state in beams:
                    token = torch.tensor([seq[-1] if seq else module.classes],
                                         device=trainer.device)
                    logits, new_state, _ = module.step(token, state, memory)
                    top = torch.log_softmax(logits[0].float(), 0).topk(width)
                    grown += [(score + lp, seq + [k], new_state)
                              for lp, k in zip(top.values.tolist(), top.indices.tolist())]
                beams = sorted(grown, key=lambda b: -b[0])[:width]
            answers.append(beams[0][1])
    finally:
        trainer.model.train(was_training)
    return answers


def greedy_and_beam(trainer, x: torch.Tensor, width: int = 3) -> tuple[list, list]:
    """Each input's answer by greedy decoding and by a beam of `width`."""
    return beam_search(trainer, x, 1), beam_search(trainer, x, width)


@torch.no_grad()
def attention_map(trainer, index: int = 0, split: str = "val") -> dict | None:
    """Where the decoder looked while answering example `index` of a split: {"weights"
    (answers x inputs), "inputs", "answers", "targets"} as class indices; None without
    attention."""
    module = _seq2seq(trainer)
    x, y = getattr(trainer.data, f"x_{split}"), getattr(trainer.data, f"y_{split}")
    if module.attention == "none" or not 0 <= index < len(x):
        return None
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        out = trainer.model(x[index:index + 1])
    finally:
        trainer.model.train(was_training)
    return {"weights": module.weights[0].float().cpu().tolist(),
            "inputs": x[index].argmax(-1).tolist(), "answers": out[0].argmax(-1).tolist(),
            "targets": y[index].tolist()}
