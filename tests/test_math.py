"""The engine's math against oracles: theory for initializers, closed forms and
torch.nn.functional for activations and losses, finite differences for backprop, and autograd
(computed independently, per example) for the diagnostics the UI shows.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from engine import ExperimentSpec, Trainer, build_model
from engine.core.registry import ACTIVATIONS, INITIALIZERS, LOSSES, SCHEDULES
from engine.core.spec import Choice
from engine.train.callbacks import Regularization
from engine.train.trainer import make_loss

# ============================================================================ initializers
# Weight shape (out, in) as nn.Linear stores it: fan_in = in, fan_out = out.
OUT, IN = 500, 2000  # 1e6 samples: relative standard error of a std estimate ~ 0.07%


def fill(key, shape=(OUT, IN), seed=0, **params):
    t = torch.empty(shape)
    INITIALIZERS[key].build(t, torch.Generator().manual_seed(seed), **params)
    return t


def assert_normal(t, mean, std):
    n = t.numel()
    assert abs(t.mean().item() - mean) < 6 * std / math.sqrt(n) + 1e-12
    assert t.std().item() == pytest.approx(std, rel=0.01)
    # a Gaussian has ~0.27% of its mass beyond 3 std, a uniform none
    beyond = ((t - mean).abs() > 3 * std).float().mean().item()
    assert 0.002 < beyond < 0.0035


def assert_uniform(t, lo, hi):
    assert t.min().item() >= lo and t.max().item() <= hi
    width = hi - lo
    assert t.min().item() < lo + 0.001 * width and t.max().item() > hi - 0.001 * width
    assert t.mean().item() == pytest.approx((lo + hi) / 2, abs=6 * width / math.sqrt(12 * t.numel()))
    assert t.std().item() == pytest.approx(width / math.sqrt(12), rel=0.01)


def test_he_normal_fan_in_and_fan_out():
    assert_normal(fill("he_normal"), 0.0, math.sqrt(2 / IN))
    assert_normal(fill("he_normal", mode="fan_out"), 0.0, math.sqrt(2 / OUT))


def test_he_uniform_bound():
    b = math.sqrt(6 / IN)
    assert_uniform(fill("he_uniform"), -b, b)
    b = math.sqrt(6 / OUT)
    assert_uniform(fill("he_uniform", mode="fan_out"), -b, b)


def test_xavier_uniform_and_normal_with_gain():
    b = 1.3 * math.sqrt(6 / (IN + OUT))
    assert_uniform(fill("xavier_uniform", gain=1.3), -b, b)
    assert_normal(fill("xavier_normal", gain=0.7), 0.0, 0.7 * math.sqrt(2 / (IN + OUT)))


def test_lecun_normal_linear_and_conv_fan_in():
    assert_normal(fill("lecun_normal"), 0.0, math.sqrt(1 / IN))
    # a conv filter bank (out, in, k, k): fan_in = in * k * k
    assert_normal(fill("lecun_normal", shape=(4000, 8, 3, 3)), 0.0, math.sqrt(1 / 72))


def test_fixed_scale_initializers():
    assert_uniform(fill("uniform", a=-0.2, b=0.5), -0.2, 0.5)
    assert_normal(fill("normal", mean=0.3, std=0.02), 0.3, 0.02)
    assert torch.equal(fill("constant", (7, 5), value=0.7), torch.full((7, 5), 0.7))
    assert torch.equal(fill("zeros", (7, 5)), torch.zeros(7, 5))
    # defaults from the registry: uniform(-0.05, 0.05), normal(0, 0.01)
    assert_uniform(fill("uniform"), -0.05, 0.05)
    assert_normal(fill("normal"), 0.0, 0.01)


def test_torch_default_bound_is_one_over_sqrt_fan_in():
    b = 1 / math.sqrt(IN)
    assert_uniform(fill("torch_default"), -b, b)


@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (50, 50)])
def test_orthogonal_gives_gain_squared_identity(shape):
    gain = 1.5
    w = fill("orthogonal", shape, gain=gain).double()
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    eye = torch.eye(min(rows, cols), dtype=torch.float64)
    torch.testing.assert_close(gram, gain ** 2 * eye, atol=1e-5, rtol=0)


def test_initializers_are_all_covered_and_use_the_generator():
    tested = {"he_normal", "he_uniform", "xavier_uniform", "xavier_normal", "lecun_normal",
              "uniform", "normal", "constant", "zeros", "torch_default", "orthogonal"}
    assert tested == set(INITIALIZERS.keys()), "a new initializer needs a theory test here"
    for key in tested - {"constant", "zeros"}:
        a, b, c = fill(key, (20, 30), 1), fill(key, (20, 30), 1), fill(key, (20, 30), 2)
        assert torch.equal(a, b), key
        assert not torch.equal(a, c), key


def test_model_applies_init_bias_and_overrides():
    spec = ExperimentSpec.from_dict({
        "model": {"init": {"name": "constant", "value": 0.25}, "bias_init": 0.3,
                  "layers": [4, {"type": "linear", "units": 3, "init": "zeros", "bias_init": -1}],
                  "output": {"name": "constant", "value": -0.5}}})
    m = build_model(spec, (2,), 3)
    assert torch.equal(m.fc1.linear.weight, torch.full((4, 2), 0.25))
    assert torch.equal(m.fc1.linear.bias, torch.full((4,), 0.3))
    assert torch.equal(m.fc2.linear.weight, torch.zeros(3, 4))
    assert torch.equal(m.fc2.linear.bias, torch.full((3,), -1.0))
    assert torch.equal(m.out.weight, torch.full((3, 3), -0.5))
    assert torch.equal(m.out.bias, torch.zeros(3))  # the output bias is not the model's bias_init


def test_forward_matches_a_hand_written_network():
    spec = ExperimentSpec.from_dict({"model": {"activation": "tanh", "layers": [
        5, {"type": "residual", "units": 4, "depth": 2, "activation": "relu"},
        {"type": "layernorm"}]}})
    m = build_model(spec, (3,), 2).double()
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = torch.tanh(x @ m.fc1.linear.weight.T + m.fc1.linear.bias)
    r = m.res1
    h = h @ r.proj.weight.T + r.proj.bias  # 5 -> 4 needs a projection
    f = torch.relu(h @ r.body.linear1.weight.T + r.body.linear1.bias)
    f = torch.relu(f @ r.body.linear2.weight.T + r.body.linear2.bias)
    h = h + f
    mu, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
    h = (h - mu) / torch.sqrt(var + 1e-5) * m.ln1.weight + m.ln1.bias
    out = h @ m.out.weight.T + m.out.bias  # no activation on the output layer
    torch.testing.assert_close(m(x), out)


# ============================================================================ activations
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

# key -> (params, closed form, torch.nn.functional equivalent)
ACTIVATION_ORACLES = {
    "linear": ({}, lambda x: x, lambda x: x),
    "sigmoid": ({}, lambda x: 1 / (1 + torch.exp(-x)), torch.sigmoid),
    "tanh": ({}, lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
             torch.tanh),
    "relu": ({}, lambda x: torch.where(x > 0, x, torch.zeros_like(x)), F.relu),
    "leaky_relu": ({"negative_slope": 0.2}, lambda x: torch.where(x > 0, x, 0.2 * x),
                   lambda x: F.leaky_relu(x, 0.2)),
    "prelu": ({"init": 0.3}, lambda x: torch.where(x > 0, x, 0.3 * x),
              lambda x: F.prelu(x, torch.tensor([0.3], dtype=x.dtype))),
    "elu": ({"alpha": 0.5}, lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1)),
            lambda x: F.elu(x, 0.5)),
    "selu": ({}, lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1)),
             F.selu),
    "gelu": ({}, lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))), F.gelu),
    "silu": ({}, lambda x: x / (1 + torch.exp(-x)), F.silu),
    "softplus": ({"beta": 2.0}, lambda x: torch.log1p(torch.exp(2.0 * x)) / 2.0,
                 lambda x: F.softplus(x, beta=2.0)),
    "hard_sigmoid": ({}, lambda x: torch.clamp(x / 6 + 0.5, 0, 1), F.hardsigmoid),
    "softmax": ({}, lambda x: torch.exp(x) / torch.exp(x).sum(1, keepdim=True),
                lambda x: F.softmax(x, dim=1)),
}


def test_every_activation_has_an_oracle():
    assert set(ACTIVATION_ORACLES) == set(ACTIVATIONS.keys())


@pytest.mark.parametrize("key", list(ACTIVATION_ORACLES))
def test_activation_values_and_derivatives(key):
    params, closed, functional = ACTIVATION_ORACLES[key]
    module = ACTIVATIONS[key].build(**params).double()
    g = torch.Generator().manual_seed(1)
    # continuous random inputs over [-5, 5]: never exactly on a kink (0, +-3)
    x = (10 * torch.rand(64, 5, generator=g, dtype=torch.float64) - 5)
    v = torch.randn(64, 5, generator=g, dtype=torch.float64)  # random cotangent: full Jacobian use
    grads = []
    for fn in (module, closed, functional):
        xi = x.clone().requires_grad_()
        y = fn(xi)
        (gx,) = torch.autograd.grad((y * v).sum(), xi)
        grads.append((y.detach(), gx))
    (y_eng, g_eng), (y_cf, g_cf), (y_fn, g_fn) = grads
    torch.testing.assert_close(y_eng, y_cf)
    torch.testing.assert_close(y_eng, y_fn)
    torch.testing.assert_close(g_eng, g_cf)
    torch.testing.assert_close(g_eng, g_fn)


def test_activation_derivative_closed_forms():
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)[:, None] + 1e-3

    def d(key, **params):
        xi = x.clone().requires_grad_()
        ACTIVATIONS[key].build(**params).double()(xi).sum().backward()
        return xi.grad

    s = torch.sigmoid(x)
    torch.testing.assert_close(d("sigmoid"), s * (1 - s))
    assert d("sigmoid").max().item() <= 0.25  # the teaching doc's claim
    torch.testing.assert_close(d("tanh"), 1 - torch.tanh(x) ** 2)
    torch.testing.assert_close(d("relu"), (x > 0).double())
    torch.testing.assert_close(d("leaky_relu"), torch.where(x > 0, 1.0, 0.01).double())
    torch.testing.assert_close(d("softplus", beta=3.0), torch.sigmoid(3.0 * x))
    torch.testing.assert_close(d("hard_sigmoid"), ((x > -3) & (x < 3)).double() / 6)


# ============================================================================ losses
def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_regression_losses_closed_forms():
    a, b = _rand(30, 2, seed=1) * 2, _rand(30, 2, seed=2)
    d = a - b
    torch.testing.assert_close(LOSSES["mse"].build()(a, b), (d ** 2).mean())
    torch.testing.assert_close(LOSSES["mae"].build()(a, b), d.abs().mean())
    for delta in (1.0, 0.5):
        huber = torch.where(d.abs() < delta, 0.5 * d ** 2, delta * (d.abs() - 0.5 * delta)).mean()
        torch.testing.assert_close(LOSSES["huber"].build(delta=delta)(a, b), huber)
    torch.testing.assert_close(LOSSES["huber"].build()(a, b),
                               F.huber_loss(a, b, delta=1.0))  # default delta 1


def test_cross_entropy_with_and_without_label_smoothing():
    z, y = _rand(40, 4, seed=3) * 3, torch.arange(40) % 4
    logp = z - torch.logsumexp(z, 1, keepdim=True)
    nll = -logp[torch.arange(40), y]
    torch.testing.assert_close(LOSSES["cross_entropy"].build()(z, y), nll.mean())
    eps = 0.1
    smooth = ((1 - eps) * nll - eps * logp.mean(1)).mean()
    torch.testing.assert_close(LOSSES["cross_entropy"].build(label_smoothing=eps)(z, y), smooth)
    torch.testing.assert_close(LOSSES["cross_entropy"].build(label_smoothing=eps)(z, y),
                               F.cross_entropy(z, y, label_smoothing=eps))


def test_bce_on_one_logit_and_its_gradient():
    z, y = (_rand(50, 1, seed=4).float() * 3).requires_grad_(), torch.arange(50) % 2
    loss = make_loss(Choice("bce"), "classification")(z, y)
    p = torch.sigmoid(z[:, 0])
    yf = y.float()
    expected = -(yf * torch.log(p) + (1 - yf) * torch.log(1 - p)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(z[:, 0], yf))
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g[:, 0], (p - yf).detach() / 50)  # d/dz = (sigmoid(z) - y) / n
    # numerically stable at extreme logits (a naive log(sigmoid) gives inf)
    big = torch.tensor([[100.0], [-100.0]])
    far = make_loss(Choice("bce"), "classification")(big, torch.tensor([0, 1]))
    assert far.item() == pytest.approx(100.0)


@pytest.mark.parametrize("choice", [Choice("mse"), Choice("mae"), Choice("huber", {"delta": 0.3})])
def test_regression_loss_on_classes_compares_softmax_with_one_hot(choice):
    z, y = _rand(30, 3, seed=5) * 2, torch.arange(30) % 3
    p = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    d = p - torch.eye(3, dtype=torch.float64)[y]
    expected = {"mse": (d ** 2).mean(), "mae": d.abs().mean(),
                "huber": torch.where(d.abs() < 0.3, 0.5 * d ** 2, 0.3 * (d.abs() - 0.15)).mean()}
    torch.testing.assert_close(make_loss(choice, "classification")(z, y), expected[choice.name])


def test_make_loss_passes_regression_and_multiclass_through():
    a, b = _rand(10, 1, seed=6), _rand(10, 1, seed=7)
    torch.testing.assert_close(make_loss(Choice("mse"), "regression")(a, b), ((a - b) ** 2).mean())
    z, y = _rand(10, 3, seed=8), torch.arange(10) % 3
    torch.testing.assert_close(make_loss(Choice("cross_entropy"), "classification")(z, y),
                               F.cross_entropy(z, y))


# ============================================================================ backprop
def test_backprop_matches_finite_differences():
    """gradcheck: autograd through the engine's model equals central finite differences, for the
    input and every parameter, with the engine's own loss on top."""
    spec = ExperimentSpec.from_dict({"model": {"activation": "tanh", "layers": [
        {"type": "linear", "units": 5, "activation": "gelu"},
        {"type": "batchnorm"},
        {"type": "residual", "units": 4, "depth": 2, "activation": "softplus"},
        {"type": "layernorm"},
        {"type": "linear", "units": 4, "activation": "elu"},
        {"type": "activation", "activation": "sigmoid"}]}})
    model = build_model(spec, (3,), 3).double().train()
    loss_fn = make_loss(spec.loss, "classification")
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    x = _rand(6, 3, seed=9).requires_grad_()
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def f(x, *ps):
        out = torch.func.functional_call(model, dict(zip(names, ps)), (x,))
        return loss_fn(out, y)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


# ============================================================================ diagnostics
DIAG_SPEC = {
    "seed": 5,
    "data": {"name": "gaussians", "n": 60, "classes": 3, "val_fraction": 0.2},
    "model": {"layers": [
        {"type": "linear", "units": 8, "activation": "relu", "bias_init": -0.4},
        {"type": "linear", "units": 6, "activation": "tanh",
         "init": {"name": "normal", "std": 2.0}},
        {"type": "residual", "units": 6, "depth": 1, "activation": "relu"},
        {"type": "layernorm"}]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
    "training": {"batch_size": 10_000, "steps": 3},  # one batch = the whole train split
    "diagnostics": {"every": 1},
}


def weights_of(module):
    return [p for p in module.parameters() if p.dim() >= 2]


def norm(ts):
    return torch.sqrt(sum((t.double() ** 2).sum() for t in ts)).item()


def one_logged_step(config):
    trainer = Trainer(ExperimentSpec.from_dict(config))
    before = copy.deepcopy(trainer.model)
    trainer.run(1)
    return trainer, before, trainer.history.rows[0]


def test_layer_statistics_match_per_example_autograd():
    trainer, before, row = one_logged_step(DIAG_SPEC)
    x, y = trainer.data.x_train, trainer.data.y_train
    n = len(y)
    layers = {lay["name"]: lay for lay in row["layers"]}
    names = [name for name, _ in before.named_children()]
    assert list(layers) == names == ["fc1", "fc2", "res1", "ln1", "out"]

    # act_grad_norm: mean over examples of || d loss_i / d h_i ||, each example on its own
    per_example = {name: [] for name in names}
    for i in range(n):
        h, hs = x[i:i + 1], []
        for name, module in before.named_children():
            h = module(h)
            hs.append(h)
        loss_i = F.cross_entropy(h, y[i:i + 1])
        for name, g in zip(names, torch.autograd.grad(loss_i, hs)):
            per_example[name].append(g.norm().item())
    for name in names:
        expected = sum(per_example[name]) / n
        assert layers[name]["act_grad_norm"] == pytest.approx(expected, rel=1e-4), name

    # activation statistics on the batch (= the whole train split), before the update
    with torch.no_grad():
        h, acts = x, {}
        for name, module in before.named_children():
            h = module(h)
            acts[name] = h
    for name in names:
        a = acts[name]
        assert layers[name]["act_mean"] == pytest.approx(a.mean().item(), rel=1e-4, abs=1e-6)
        assert layers[name]["act_std"] == pytest.approx(a.std().item(), rel=1e-4)
    dead = (acts["fc1"] == 0).all(0).float().mean().item()
    assert dead > 0, "the test setup should produce dead units"
    assert layers["fc1"]["dead_frac"] == pytest.approx(dead)
    sat = ((acts["fc2"] <= -1 + 0.02) | (acts["fc2"] >= 1 - 0.02)).float().mean().item()
    assert sat > 0.1, "the test setup should saturate tanh"
    assert layers["fc2"]["saturated_frac"] == pytest.approx(sat)
    for name in ("fc2", "res1", "ln1", "out"):  # res1: h + F(h) is never judged dead
        assert layers[name]["dead_frac"] is None
    for name in ("fc1", "res1", "ln1", "out"):
        assert layers[name]["saturated_frac"] is None

    # gradients of the batch loss, weights before and after the SGD step
    ref = copy.deepcopy(before)
    F.cross_entropy(ref(x), y).backward()
    all_grads = [p.grad for p in ref.parameters()]
    assert row["grad_norm"] == pytest.approx(norm(all_grads), rel=1e-4)
    after = dict(trainer.model.named_children())
    for name, module in ref.named_children():
        ws = weights_of(module)
        if not ws:
            assert layers[name]["update_ratio"] is None and layers[name]["weight_norm"] is None
            continue
        w_before = weights_of(dict(before.named_children())[name])
        w_after = weights_of(after[name])
        grad_norm = norm([w.grad for w in ws])
        assert layers[name]["weight_grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
        assert layers[name]["weight_norm"] == pytest.approx(norm(w_after), rel=1e-5)
        ratio = norm([a - b for a, b in zip(w_after, w_before)]) / norm(w_before)
        assert ratio > 0
        assert layers[name]["update_ratio"] == pytest.approx(ratio, rel=1e-4)
        # plain SGD: ||delta W|| = lr * ||grad W||
        assert layers[name]["update_ratio"] == pytest.approx(0.1 * grad_norm / norm(w_before),
                                                             rel=1e-3)


def test_logged_train_loss_is_the_batch_data_loss():
    trainer, before, row = one_logged_step(DIAG_SPEC)
    with torch.no_grad():
        expected = F.cross_entropy(before(trainer.data.x_train), trainer.data.y_train).item()
    assert row["train_loss"] == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        out = trainer.model(trainer.data.x_val)
    assert row["val_loss"] == pytest.approx(F.cross_entropy(out, trainer.data.y_val).item(),
                                            rel=1e-5)
    acc = (out.argmax(1) == trainer.data.y_val).float().mean().item()
    assert row["val_acc"] == pytest.approx(acc)


# ============================================================================ regularization
SMALL = {
    "seed": 2,
    "data": {"name": "gaussians", "n": 50},
    "model": {"layers": [6, 5], "activation": "tanh"},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
    "training": {"batch_size": 10_000, "steps": 3},
    "diagnostics": {"every": 1},
}


def expected_sgd_step(before, x, y, lr, penalty=None, transform=None):
    """Parameters after one plain SGD step computed with autograd on a copy."""
    ref = copy.deepcopy(before)
    loss = F.cross_entropy(ref(x), y)
    if penalty is not None:
        loss = loss + penalty(ref)
    params = list(ref.parameters())
    grads = torch.autograd.grad(loss, params)
    if transform is not None:
        grads = transform(grads)
    return [p.detach() - lr * g for p, g in zip(params, grads)], grads


def test_l1_l2_gradient_equals_autograd_of_the_penalty():
    l1, l2 = 0.01, 0.02
    # non-zero biases: a penalty that wrongly reached them would show (sign(0) = 0 hides it)
    config = {**SMALL, "model": {**SMALL["model"], "bias_init": 0.1},
              "regularization": {"l1": l1, "l2": l2}}
    trainer, before, row = one_logged_step(config)
    assert all((b != 0).all() for n, b in before.named_parameters() if n.startswith("fc")
               and n.endswith("bias"))

    def penalty(m):  # over weight matrices only, biases untouched
        ws = [p for name, p in m.named_parameters() if name.endswith("weight") and p.dim() == 2]
        assert len(ws) == 3
        return l1 * sum(w.abs().sum() for w in ws) + l2 * sum((w ** 2).sum() for w in ws)

    expected, _ = expected_sgd_step(before, trainer.data.x_train, trainer.data.y_train, 0.1,
                                    penalty)
    unregularized, _ = expected_sgd_step(before, trainer.data.x_train, trainer.data.y_train, 0.1)
    for (name, p), e, u in zip(trainer.model.named_parameters(), expected, unregularized):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)
        if name.endswith("bias"):
            torch.testing.assert_close(p.detach(), u, rtol=1e-5, atol=1e-7)
        else:
            assert not torch.allclose(p.detach(), u, rtol=1e-5, atol=1e-7), name
    # the logged loss is the data loss, without the penalty
    with torch.no_grad():
        data_loss = F.cross_entropy(before(trainer.data.x_train), trainer.data.y_train).item()
    assert row["train_loss"] == pytest.approx(data_loss, rel=1e-5)
    # Regularization.penalty agrees with the penalty above
    assert Regularization.penalty(before, l1, l2).item() == pytest.approx(
        penalty(before).item(), rel=1e-6)


# ============================================================================ gradient clipping
def test_clip_by_norm_rescales_the_global_gradient():
    limit = 0.05
    config = {**SMALL, "training": {**SMALL["training"], "grad_clip": {"norm": limit}}}
    trainer, before, row = one_logged_step(config)
    x, y = trainer.data.x_train, trainer.data.y_train
    _, raw = expected_sgd_step(before, x, y, 0.1)
    total = norm(raw)
    assert total > 2 * limit, "the setup must need clipping"
    expected, _ = expected_sgd_step(before, x, y, 0.1,
                                    transform=lambda gs: [g * limit / total for g in gs])
    for p, e in zip(trainer.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-4, atol=1e-7)
    step = [p.detach() - b.detach() for p, b in zip(trainer.model.parameters(), before.parameters())]
    assert norm(step) == pytest.approx(0.1 * limit, rel=1e-4)
    assert row["grad_norm"] == pytest.approx(total, rel=1e-4)  # measured before clipping
    assert row["clip_frac"] == 1.0


def test_clip_by_value_clamps_each_entry():
    limit = 0.02
    config = {**SMALL, "training": {**SMALL["training"], "grad_clip": {"value": limit}}}
    trainer, before, row = one_logged_step(config)
    x, y = trainer.data.x_train, trainer.data.y_train
    _, raw = expected_sgd_step(before, x, y, 0.1)
    flat = torch.cat([g.flatten() for g in raw]).abs()
    assert (flat > limit).any() and (flat < limit).any(), "some entries clipped, some not"
    expected, _ = expected_sgd_step(before, x, y, 0.1,
                                    transform=lambda gs: [g.clamp(-limit, limit) for g in gs])
    for p, e in zip(trainer.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-4, atol=1e-7)
    assert row["clip_frac"] == 1.0


def test_clip_frac_is_zero_when_the_limit_is_never_reached():
    config = {**SMALL, "training": {**SMALL["training"], "grad_clip": 1e5}}
    trainer, before, row = one_logged_step(config)
    expected, _ = expected_sgd_step(before, trainer.data.x_train, trainer.data.y_train, 0.1)
    for p, e in zip(trainer.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)
    assert row["clip_frac"] == 0.0


# ============================================================================ schedules
T, LR0 = 60, 0.2


def lrs(schedule):
    """The learning rate used at each step 1..T, read from the history rows."""
    trainer = Trainer(ExperimentSpec.from_dict({
        "seed": 1, "data": {"name": "gaussians", "n": 40, "val_fraction": 0.0},
        "model": {"layers": [3]}, "optimizer": {"name": "sgd", "lr": LR0},
        "schedule": schedule, "training": {"batch_size": 8, "steps": T},
        "diagnostics": {"every": 1}}))
    trainer.run()
    rows = trainer.history.rows
    assert [r["step"] for r in rows] == list(range(1, T + 1))
    return [r["lr"] for r in rows]


def cosine(k, total, lo=0.0, hi=LR0):
    return lo + (hi - lo) * (1 + math.cos(math.pi * k / total)) / 2


@pytest.mark.parametrize("schedule,closed_form", [
    ("constant", lambda k: LR0),
    ({"name": "step", "step_size": 7, "gamma": 0.5}, lambda k: LR0 * 0.5 ** (k // 7)),
    ({"name": "exponential", "gamma": 0.9}, lambda k: LR0 * 0.9 ** k),
    ({"name": "cosine", "eta_min": 0.01}, lambda k: cosine(k, T, lo=0.01)),
    ({"name": "warmup_cosine", "warmup": 10},
     lambda k: LR0 * (k + 1) / 11 if k < 10 else cosine(k - 10, T - 10)),
], ids=["constant", "step", "exponential", "cosine", "warmup_cosine"])
def test_schedule_closed_forms(schedule, closed_form):
    got = lrs(schedule)
    want = [closed_form(k) for k in range(T)]  # k = scheduler steps taken before step k + 1
    assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_one_cycle_endpoints_and_shape():
    got = lrs({"name": "one_cycle", "pct_start": 0.25, "div_factor": 10.0})
    peak = int(0.25 * T) - 1
    assert got[0] == pytest.approx(LR0 / 10, rel=1e-6)
    assert got[peak] == pytest.approx(LR0, rel=1e-6)
    assert got[-1] == pytest.approx(LR0 / 10 / 1e4, rel=1e-4)  # torch's final_div_factor 1e4
    assert all(a < b for a, b in zip(got[:peak], got[1:peak + 1]))
    assert all(a > b for a, b in zip(got[peak:-1], got[peak + 1:]))
    # cosine annealing both ways (torch's default anneal_strategy)
    mid = peak // 2
    assert got[mid] == pytest.approx(LR0 / 10 + (LR0 - LR0 / 10) * (1 - math.cos(math.pi * mid / peak)) / 2,
                                     rel=1e-5)


def test_every_schedule_is_covered():
    covered = {"constant", "step", "exponential", "cosine", "warmup_cosine", "one_cycle",
               "reduce_on_plateau"}  # reduce_on_plateau: tests/test_trainer.py
    assert covered == set(SCHEDULES.keys())


def test_scheduled_lr_is_the_lr_the_update_used():
    trainer = Trainer(ExperimentSpec.from_dict({
        **SMALL, "schedule": {"name": "exponential", "gamma": 0.5},
        "training": {"batch_size": 10_000, "steps": 5}}))
    trainer.run(2)
    before = copy.deepcopy(trainer.model)
    trainer.run(1)
    row = trainer.history.rows[-1]
    assert row["step"] == 3 and row["lr"] == pytest.approx(0.1 * 0.25)
    expected, _ = expected_sgd_step(before, trainer.data.x_train, trainer.data.y_train, 0.025)
    for p, e in zip(trainer.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)
