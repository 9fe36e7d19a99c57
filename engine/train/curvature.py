"""How sharp a network's loss is where it stands: the largest eigenvalue L of the loss's Hessian
(the "sharpness"), by power iteration on Hessian-vector products. Gradient descent on a quadratic
with that curvature is stable only for learning rates below 2/L (gd_limits below), so
the page can draw 2/L next to the rate a run uses.

Hessian-vector products are exact (double backward through the loss, never a finite
difference) and the Hessian itself is never formed: a product costs about two backward passes.
"""
from __future__ import annotations

import torch

MAX_EXAMPLES = 1024  # the loss is measured on at most this many training examples


def hessian_vector(loss_of, params: list[torch.Tensor]):
    """A function v -> H v for the Hessian of loss_of() at params (v and Hv: lists shaped like
    params); the first-order graph is built once and reused."""
    loss = loss_of()
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def product(vs):
        return torch.autograd.grad(grads, params, vs, retain_graph=True)
    return product


def top_eigenvalue(product, params, iters: int = 50, tol: float = 1e-4,
                   generator: torch.Generator | None = None) -> dict:
    """Power iteration: the eigenvalue of largest magnitude of the symmetric map `product`
    (its Rayleigh quotient), and how many products it took. Stops when two estimates agree
    within `tol` (relative)."""
    gen = generator or torch.Generator().manual_seed(0)
    vs = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    estimate, steps = None, 0
    for steps in range(1, iters + 1):
        norm = torch.sqrt(sum((v * v).sum() for v in vs))
        if norm == 0:
            return {"value": 0.0, "iterations": steps}
        vs = [v / norm for v in vs]
        hv = product(vs)
        value = float(sum((v * h).sum() for v, h in zip(vs, hv)))
        if estimate is not None and abs(value - estimate) <= tol * max(abs(value), 1e-12):
            return {"value": value, "iterations": steps}
        estimate, vs = value, [h.detach() for h in hv]
    return {"value": estimate, "iterations": steps}


def sharpness(trainer, n: int = MAX_EXAMPLES, iters: int = 50, tol: float = 1e-4) -> dict:
    """The sharpness L of the trainer's training loss (the loss alone, no penalty) on its first
    `n` training examples: the Hessian's eigenvalue of largest magnitude (the top one near a
    minimum; where a negative one is larger, as at a saddle, `stable_lr` is None), in eval
    mode (dropout off, BatchNorm on its running statistics, so every product sees the same
    function), with 2/L: the largest stable rate of plain gradient descent on a quadratic that
    curved. The model's weights, gradients and mode are left as they were."""
    model, data = trainer.model, trainer.data
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = data.x_train[:n], data.y_train[:n]
    was_training = model.training
    model.eval()
    try:
        product = hessian_vector(lambda: trainer.loss_fn(model(x), y), params)
        found = top_eigenvalue(product, params, iters, tol)
    finally:
        model.train(was_training)
    value = found["value"]
    return {"sharpness": value, "stable_lr": 2 / value if value and value > 0 else None,
            "iterations": found["iterations"], "examples": len(y)}


def gd_limits(curvature: float, momentum: float = 0.0, nesterov: bool = False) -> dict:
    """Learning rates of (heavy-ball) gradient descent on a quadratic whose largest Hessian
    eigenvalue is `curvature` (L), in torch's SGD form (v <- m v + g; x <- x - lr v): it
    converges iff lr < `stable`. Plain GD (m = 0) multiplies the distance along the steepest
    direction by 1 - lr L each step, so it shrinks iff lr < 2/L and changes sign (overshoots)
    above `oscillates` = 1/L. With momentum the iteration on (x, lr v) has the characteristic
    polynomial z^2 - (1 + m - a) z + m, a = lr L, whose roots stay inside the unit circle iff
    a < 2 (1 + m); torch's Nesterov form gives z^2 - (1 + m)(1 - a) z + m (1 - a), stable iff
    a < 2 (1 + m) / (1 + 2 m). tests/test_surfaces.py checks both against the spectral radius
    of the iteration matrix."""
    L, m = float(curvature), float(momentum)
    if L <= 0:
        raise ValueError("the curvature must be positive")
    stable = 2 * (1 + m) / L if not nesterov else 2 * (1 + m) / ((1 + 2 * m) * L)
    return {"curvature": L, "stable": stable, "oscillates": 1 / L if m == 0 else None}
