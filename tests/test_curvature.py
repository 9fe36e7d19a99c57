"""The sharpness estimate (power iteration on Hessian-vector products) against the exact Hessian
of a small net, formed in full by torch.autograd.functional.hessian."""
import pytest
import torch
from torch.func import functional_call

from engine import ExperimentSpec, Trainer
from engine.train.curvature import hessian_vector, sharpness, top_eigenvalue


def exact_hessian(trainer, n):
    model = trainer.model.eval()
    names = [k for k, p in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    x, y = trainer.data.x_train[:n], trainer.data.y_train[:n]

    def loss(theta):
        parts, k = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            parts[name] = theta[k:k + size].reshape(shape)
            k += size
        return trainer.loss_fn(functional_call(model, parts, (x,)), y)
    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("config", [
    {"data": {"name": "xor", "n": 200}, "model": {"activation": "tanh", "layers": [4]}},
    {"data": {"name": "moons", "n": 200}, "model": {"layers": [6, 5]}, "training": {"steps": 30},
     "optimizer": {"name": "adam", "lr": 0.05}},
    {"data": {"name": "sine", "n": 100, "length": 6},
     "model": {"layers": [{"type": "gru", "units": 3}, {"type": "last_step"}]}},
])
def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian(config):
    trainer = Trainer(ExperimentSpec.from_dict(config))
    trainer.run(config.get("training", {}).get("steps", 0) or 0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    mode = trainer.model.training
    found = sharpness(trainer, n=128, iters=500, tol=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.model.training == mode
    eigenvalues = torch.linalg.eigvalsh(exact_hessian(trainer, 128))
    top = eigenvalues[eigenvalues.abs().argmax()]
    assert found["sharpness"] == pytest.approx(float(top), rel=1e-3)
    assert found["stable_lr"] == pytest.approx(2 / float(top), rel=1e-3)


def test_power_iteration_on_a_known_matrix():
    matrix = torch.diag(torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64))
    param = torch.zeros(3, dtype=torch.float64)
    found = top_eigenvalue(lambda vs: [matrix @ vs[0]], [param], iters=200, tol=1e-12)
    assert found["value"] == pytest.approx(3.0, rel=1e-9)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    product = hessian_vector(lambda: (w[0] ** 2) * w[1] + w[1] ** 3, [w])  # H = [[4, 2], [2, 12]]
    (hv,) = product([torch.tensor([1.0, 0.0])])
    assert hv.tolist() == [4.0, 2.0]
