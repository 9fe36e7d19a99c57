"""The engine code that the exported script carries verbatim: torch and math only.

Every definition here is used by the engine itself and copied, with inspect.getsource, into the
standalone script that `engine.io.export` writes, so the script and the engine share one definition
of the random streams, the batch order, the splits, the loss wrapping, the penalties, early
stopping and the two custom modules. Nothing here may import Netlab (tests/test_export.py
checks): the script must run where only torch is installed.

The exporter copies only the definitions a script uses, found by name, so each one is a
top-level function, class or constant and refers to its helpers by their names here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# ----------------------------------------------------------------------------- random streams

# One random stream per purpose: adding dropout must not reshuffle the data, and a new batch
# size must not change the initial weights.
STREAMS = {"data": 0, "init": 1, "batches": 2, "dropout": 3, "augment": 4, "forcing": 5,
           "noise": 6}  # noise: a surface's gradient noise (engine/lab/surfaces.py)
FIRST_STREAMS = 4  # seed * 4 + index seeds these, as before "augment" came: old runs repeat


def generator(seed, stream, device="cpu"):
    """The run's seeded torch.Generator for one purpose (a key of STREAMS). A stream added
    later is seeded past every seed the first four can take (seeds are below 2**31)."""
    index = STREAMS[stream]
    base = seed * FIRST_STREAMS + index if index < FIRST_STREAMS else \
        2**40 * (index - FIRST_STREAMS + 1) + seed
    return torch.Generator(device=device).manual_seed(base)


# ----------------------------------------------------------------------------- data


def split_indices(n, val_fraction, test_fraction, generator, ordered=False):
    """Shuffle once, then cut: test first, validation next, the rest trains. ordered: no
    shuffle, the examples' own order is kept and the end is held out (windows of one text:
    shuffled, every held-out window would overlap training windows)."""
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if ordered:
        order = torch.arange(n)
        return order[:n - n_test - n_val], order[n - n_test - n_val:n - n_test], order[n - n_test:]
    order = torch.randperm(n, generator=generator)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def keep_classes(x, y, subset):
    """Only the examples whose label is in `subset`, relabelled 0, 1, ... in the subset's order."""
    match = y[:, None] == torch.tensor(subset)[None, :]
    rows = match.any(1)
    return x[rows], match[rows].float().argmax(1)


def safe_scale(scale):
    """A constant column keeps its values: dividing by a zero spread would make them NaN."""
    return torch.where(scale > 1e-12, scale, torch.ones_like(scale))


def feature_matrix(points, features):
    """The input features computed from each 2-D point, one column per function."""
    return torch.stack([feature(points) for feature in features], 1)


def augment_images(x, generator, blank, shift=0, rotate=0.0, noise=0.0, flip=False):
    """A training batch of images (n, channels, height, width) changed at random, each image on
    its own: turned by up to `rotate` degrees either way, moved by up to `shift` whole pixels
    up/down and left/right, mirrored left-right half the time if `flip`, then Gaussian noise of
    std `noise` on every pixel. What moves in from outside the image is `blank` (the model
    input of an empty pixel). Every draw comes from `generator` (on the CPU, in a fixed order),
    so the engine and an exported script change the same batch the same way on any device."""
    n, _, height, width = x.shape
    angle = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * rotate
    moves = torch.randint(-shift, shift + 1, (2, n), generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    if rotate or shift or flip:
        theta = torch.deg2rad(angle)
        cos, sin = torch.cos(theta), torch.sin(theta)
        sign = torch.where(mirror, -1.0, 1.0).double()
        # grid_sample reads the output pixel at (u, v) from the input at A @ (u, v) + t (in
        # coordinates running -1..1 across the image): A turns and mirrors, t moves
        affine = torch.stack([torch.stack([cos * sign, -sin, -2 * moves[0] / width], 1),
                              torch.stack([sin * sign, cos, -2 * moves[1] / height], 1)], 1)
        grid = nn.functional.affine_grid(affine.float().to(x.device), list(x.shape),
                                         align_corners=False)
        x = nn.functional.grid_sample(x - blank, grid, align_corners=False) + blank
    if noise:
        x = x + noise * torch.randn(x.shape, generator=generator).to(x.device)
    return x


class Batches:
    """Mini-batches without replacement: a fresh seeded permutation of the train set every
    epoch."""

    def __init__(self, n, batch_size, generator, device):
        self.n, self.size, self.gen, self.device = n, min(batch_size, n), generator, device
        self._order, self._pos = None, n

    def next(self):
        # a lone example left at the end of an epoch is skipped: BatchNorm cannot normalise a
        # batch of one, and a one-example step is mostly noise
        if self.n - self._pos < min(2, self.n):
            self._order = torch.randperm(self.n, generator=self.gen).to(self.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.size]
        self._pos += self.size
        return idx


# ----------------------------------------------------------------------------- modules


class Dropout(nn.Module):
    """Inverted dropout drawing its masks from the run's own generator (nn.Dropout uses torch's
    global one, which would make two runs in one process disturb each other's numbers).
    channels=True drops whole channels of an image (batch, channels, height, width)."""

    def __init__(self, p, generator=None, channels=False):
        super().__init__()
        self.p, self.generator, self.channels = p, generator, channels

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        shape = (*x.shape[:2], *[1] * (x.dim() - 2)) if self.channels else x.shape
        keep = torch.rand(shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}" + (", channels=True" if self.channels else "")


class Residual(nn.Module):
    """h + F(h), F = k x (linear -> activation). The identity path hands the gradient straight to
    earlier layers, which is why very deep residual stacks still train. `proj` (a linear map,
    built and initialised before the body) matches the widths when they differ."""

    def __init__(self, proj, body):
        super().__init__()
        self.proj = proj
        self.body = body

    def forward(self, x):
        h = x if self.proj is None else self.proj(x)
        return h + self.body(h)


class Concat(nn.Module):
    """Branches side by side on the same input, their outputs joined along the channels
    (Inception's block: several kernel sizes at once)."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleDict(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches.values()], 1)


class Recurrent(nn.Module):
    """A recurrent layer unrolled over time step by step, so that every hidden state h_t is a
    tensor of its own: gradients reach h_t through the later steps as well as through the output
    (dL/dh_t, the quantity backpropagation through time multiplies step by step), and each gate
    can be read. kind: rnn_tanh, rnn_relu, lstm or gru, with torch's equations and gate order
    (lstm: input, forget, cell, output; gru: reset, update, new). `cells` maps ih_l{k} and
    hh_l{k} (+ "_reverse" for the backward direction) to linear maps, like torch's
    weight_ih_l{k} and weight_hh_l{k} with their biases. Input (batch, steps, features), output
    (batch, steps, units x directions). tbptt > 0: the state is detached every tbptt steps
    (truncated backpropagation through time). masked: the input's last feature is 1 on a
    sequence's real steps and 0 on the padding after it, and the state stays as it was on
    padding (what torch's packed sequences compute; the backward direction starts at each
    sequence's own end). `watch`, when set, is called with (layer, direction, t, h, gates) at
    every step (the diagnostics read it on logged steps)."""

    GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}

    def __init__(self, kind, cells, layers=1, bidirectional=False, tbptt=0, masked=False):
        super().__init__()
        self.kind, self.layers, self.bidirectional, self.tbptt = kind, layers, bidirectional, tbptt
        self.masked = masked
        self.cells = nn.ModuleDict(cells)
        self.watch = None

    def forward(self, x):
        mask = None
        if self.masked:
            x, mask = x[..., :-1], x[..., -1:]
        for layer in range(self.layers):
            outs = [self._direction(x, layer, 0, mask)]
            if self.bidirectional:
                back = None if mask is None else mask.flip(1)
                outs.append(self._direction(x.flip(1), layer, 1, back).flip(1))
            x = torch.cat(outs, 2) if self.bidirectional else outs[0]
        return x

    def _direction(self, x, layer, direction, mask=None):
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        ih, hh = self.cells[f"ih_{suffix}"], self.cells[f"hh_{suffix}"]
        xs = ih(x)  # the input's share of every step at once
        h = x.new_zeros(x.shape[0], hh.in_features)
        c = h
        out = []
        for t in range(x.shape[1]):
            if self.tbptt and t and t % self.tbptt == 0:
                h, c = h.detach(), c.detach()
            new_h, new_c, gates = self._step(xs[:, t], hh(h), h, c)
            if mask is None:
                h, c = new_h, new_c
            else:  # padding: the state stays
                m = mask[:, t]
                h, c = m * new_h + (1 - m) * h, m * new_c + (1 - m) * c
            if self.watch is not None:
                self.watch(layer, direction, t, h, gates)
            out.append(h)
        return torch.stack(out, 1)

    def _step(self, xt, ht, h, c):
        """One step: (new h, new c, the gates' values by name)."""
        if self.kind == "lstm":
            i, f, g, o = (xt + ht).chunk(4, 1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            return o * torch.tanh(c), c, {"input": i, "forget": f, "output": o}
        if self.kind == "gru":
            xr, xz, xn = xt.chunk(3, 1)
            hr, hz, hn = ht.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, c, {"reset": r, "update": z}
        act = torch.tanh if self.kind == "rnn_tanh" else torch.relu
        return act(xt + ht), c, {}


class Seq2Seq(nn.Module):
    """An encoder-decoder with attention, answering a class at every step. The encoder (a GRU,
    portable.Recurrent) reads the whole input; the decoder, a GRU cell of the same size, starts
    from the encoder's last state and at each step reads the previous answer (a start token
    first), attends over the encoder's states and gives the next answer's logits. attention:
    "dot" (Luong's general score h_enc . W h_dec), "additive" (Bahdanau's v . tanh(W h_enc +
    U h_dec)) or "none" (the encoder's last state is the only context). forcing: the chance,
    while training, that the decoder reads the true previous answer instead of its own guess
    (teacher forcing; `targets` is set for one training forward, then cleared). `weights` keeps
    the last forward's attention, (batch, answers, inputs)."""

    def __init__(self, encoder, cells, classes, attention="dot", forcing=0.0, generator=None):
        super().__init__()
        self.encoder, self.cells = encoder, nn.ModuleDict(cells)
        self.classes, self.attention, self.forcing, self.generator = (classes, attention,
                                                                      forcing, generator)
        self.targets = None
        self.weights = None

    def encode(self, x):
        memory = self.encoder(x)
        return memory, memory[:, -1]

    def step(self, token, h, memory):
        """One answer: (logits, the decoder's new state, the attention over the inputs)."""
        xr, xz, xn = self.cells["ih"](self.cells["embed"](token)).chunk(3, 1)
        hr, hz, hn = self.cells["hh"](h).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        if self.attention == "none":
            weights, context = None, memory[:, -1]
        else:
            if self.attention == "dot":
                scores = (memory @ self.cells["query"](h)[:, :, None])[:, :, 0]
            else:
                keys = self.cells["memory_map"](memory) + self.cells["state_map"](h)[:, None]
                scores = self.cells["score"](torch.tanh(keys))[:, :, 0]
            weights = torch.softmax(scores, 1)
            context = (weights[:, :, None] * memory).sum(1)
        return self.cells["readout"](torch.cat([h, context], 1)), h, weights

    def forward(self, x):
        memory, h = self.encode(x)
        targets, self.targets = self.targets, None  # teacher forcing: this forward only
        token = torch.full((x.shape[0],), self.classes, dtype=torch.long, device=x.device)
        outs, seen = [], []
        for t in range(x.shape[1]):
            logits, h, weights = self.step(token, h, memory)
            outs.append(logits)
            seen.append(weights)
            token = logits.argmax(1)
            if targets is not None and self.forcing > 0:
                use = torch.rand(x.shape[0], generator=self.generator,
                                 device=x.device) < self.forcing
                token = torch.where(use, targets[:, t], token)
        self.weights = None if seen[0] is None else torch.stack(seen, 1).detach()
        return torch.stack(outs, 1)


class LastStep(nn.Module):
    """A sequence's last step: (batch, steps, units) -> (batch, units)."""

    def forward(self, x):
        return x[:, -1]


# ----------------------------------------------------------------------------- loss and classes


def task_loss(criterion, one_logit=False, on_classes=False, per_step=False):
    """The loss as training uses it. one_logit: a two-class loss on a single output (sigmoid
    inside, e.g. BCEWithLogitsLoss); on_classes: a regression loss on class labels, comparing
    softmax probabilities with one-hot targets; per_step: a class at every step of a sequence,
    outputs (batch, steps, classes): every step counts as one more example."""
    if one_logit:
        loss = lambda out, y: criterion(out[:, 0], y.float())  # noqa: E731
    elif on_classes:
        loss = lambda out, y: criterion(out.softmax(1), nn.functional.one_hot(y, out.shape[1]).float())  # noqa: E731,E501
    else:
        loss = criterion
    if per_step:
        return lambda out, y: loss(out.flatten(0, 1), y.flatten())
    return loss


def predict_classes(out, one_logit=False):
    """Class indices from the outputs: the sign of the one logit, or the largest output."""
    return (out[..., 0] > 0).long() if one_logit else out.argmax(-1)


# ----------------------------------------------------------------------------- the update


def distill_loss(student_out, teacher_out, hard_loss, temperature, alpha):
    """Knowledge distillation (Hinton et al., 2015): alpha * T^2 * KL(teacher || student), both
    softened by temperature T, plus (1 - alpha) * the loss on the true labels. The T^2 keeps the
    soft part's gradients the same size whatever T is (they shrink as 1/T^2 otherwise)."""
    t = temperature
    student, teacher = student_out.flatten(0, -2), teacher_out.flatten(0, -2)  # steps: examples
    soft = nn.functional.kl_div(nn.functional.log_softmax(student / t, -1),
                                nn.functional.log_softmax(teacher / t, -1),
                                reduction="batchmean", log_target=True)
    return alpha * t * t * soft + (1 - alpha) * hard_loss


def _stay_in_eval(module, mode=True):
    return nn.Module.train(module, False)


def freeze(module):
    """Keep a layer exactly as it is: no gradients for its parameters, and always in eval mode
    (a frozen BatchNorm keeps its running averages; a frozen dropout layer passes all through)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.train = _stay_in_eval.__get__(module)  # model.train() reaches every child this way
    module.train(False)
    return module


def weight_params(model):
    """Weight matrices and filters (dim >= 2): what L1/L2 penalise and update ratios watch.
    Biases and norm scales are left alone, as is usual."""
    return [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]


def add_penalty_grads(weights, l1, l2):
    """Add the gradient of l1 * sum|w| + l2 * sum w^2 straight to the weight gradients: the same
    update as putting the penalty in the loss, without building it into the graph each step, and
    the logged loss stays the data loss."""
    weights = [w for w in weights if w.grad is not None]
    grads = [w.grad for w in weights]
    if l2:
        torch._foreach_add_(grads, weights, alpha=2 * l2)
    if l1:
        torch._foreach_add_(grads, torch._foreach_sign(weights), alpha=l1)


def clip_gradients(params, mode, limit):
    """Clip the gradients' global norm to `limit` (mode "norm") or each entry to +-limit
    ("value"). Returns a bool tensor: whether clipping changed anything."""
    if mode == "norm":
        return torch.nn.utils.clip_grad_norm_(params, limit) > limit
    hit = torch.stack([p.grad.abs().max() for p in params]).max() > limit
    torch.nn.utils.clip_grad_value_(params, limit)
    return hit


class EarlyStop:
    """Watches the validation loss: `update` says when it has not improved by min_delta for
    `patience` evaluations, and keeps a copy of the best weights (restore_best)."""

    def __init__(self, patience, min_delta=0.0, restore_best=True):
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.best_loss, self.best_step, self.best_state, self.waited = math.inf, None, None, 0

    def update(self, loss, step, model):
        """True when training should stop now."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.waited = loss, step, 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience
