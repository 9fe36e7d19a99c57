"""The optimizer lab's surfaces against closed forms and hand-written updates: gradient descent's
stability limit 2/L on the quadratic bowl, heavy-ball and Nesterov momentum's limits, the saddle
that only a perturbation escapes, and torch's SGD and Adam stepping exactly as their equations."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine import SpecError
from engine.lab.surfaces import SURFACES, closed_form, gd_limits, surface_values, walk
from tests.conftest import ROOT


def final_f(result):
    return result["trajectory"][-1][2]


@pytest.mark.parametrize("lr", [0.005, 0.01, 0.015, 0.0199])
def test_gd_on_the_kappa_100_bowl_converges_below_lr_0_02(lr):
    r = walk("quadratic", {"name": "sgd", "lr": lr}, 2000)
    assert r["stopped"] == "completed" and final_f(r) < 1e-6


@pytest.mark.parametrize("lr", [0.0201, 0.025, 0.04])
def test_gd_on_the_kappa_100_bowl_diverges_above_lr_0_02(lr):
    r = walk("quadratic", {"name": "sgd", "lr": lr}, 2000)
    fs = [f for _, _, f in r["trajectory"]]
    assert r["stopped"] == "diverged" or fs[-1] > 1e3 * fs[0]


def test_gd_overshoots_above_1_over_L_and_creeps_below_it():
    """Along y the distance is multiplied by 1 - lr * 100 each step: its sign flips above 0.01."""
    assert closed_form("quadratic", {}, {"name": "sgd"})["oscillates"] == pytest.approx(0.01)
    for lr, flips in ((0.009, False), (0.011, True)):
        ys = [y for _, y, _ in walk("quadratic", {"name": "sgd", "lr": lr}, 20)["trajectory"]]
        assert all(b * a < 0 for a, b in zip(ys, ys[1:])) == flips
        assert all(abs(b) < abs(a) for a, b in zip(ys, ys[1:]))


def spectral_radius(a: float, m: float, nesterov: bool) -> float:
    """Of torch's SGD update on f = lambda x^2 / 2 with a = lr * lambda, as a map of
    (x, lr * momentum buffer), written from torch's documented algorithm."""
    if nesterov:  # u' = m u + a x; x' = x - (a x + m u')
        matrix = [[1 - a - m * a, -m * m], [a, m]]
    else:         # u' = m u + a x; x' = x - u'
        matrix = [[1 - a, -m], [a, m]]
    return max(abs(np.linalg.eigvals(np.array(matrix))))


@pytest.mark.parametrize("m, nesterov", [(0.0, False), (0.5, False), (0.9, False),
                                         (0.99, False), (0.5, True), (0.9, True), (0.99, True)])
@pytest.mark.slow
def test_momentums_stability_limit_is_the_closed_form(m, nesterov):
    limit = gd_limits(100.0, m, nesterov)["stable"]
    assert spectral_radius(0.999 * limit * 100, m, nesterov) < 1
    assert spectral_radius(1.001 * limit * 100, m, nesterov) > 1
    opt = {"name": "sgd", "momentum": m, "nesterov": nesterov}
    below = walk("quadratic", {**opt, "lr": 0.98 * limit}, 3000)
    above = walk("quadratic", {**opt, "lr": 1.02 * limit}, 3000)
    assert final_f(below) < 1e-3 * below["trajectory"][0][2]
    assert above["stopped"] == "diverged" or final_f(above) > 1e3 * above["trajectory"][0][2]


def test_the_saddle_is_escaped_only_with_a_perturbation():
    exact = walk("saddle", {"name": "sgd", "lr": 0.1}, 200, start=(1.0, 0.0))
    x, y, f = exact["trajectory"][-1]
    assert abs(x) < 1e-9 and y == 0.0 and abs(f) < 1e-9  # walked into (0, 0) and stayed
    nudged = walk("saddle", {"name": "sgd", "lr": 0.1}, 200, start=(1.0, 1e-8))
    assert nudged["stopped"] == "diverged" or final_f(nudged) < -1.0
    again = walk("saddle", {"name": "sgd", "lr": 0.1}, 200, start=(1.0, 0.0), seed=7)
    assert again["trajectory"] == exact["trajectory"]  # no noise here: no seed moves it off


def grad_at(name, point):
    xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    SURFACES[name].build(xy).backward()
    return xy.grad


@pytest.mark.parametrize("name", SURFACES.keys())
def test_every_listed_minimum_is_flat_and_lowest_nearby(name):
    entry = SURFACES[name]
    p = entry.resolve({})
    (xl, xh), (yl, yh) = entry.tags["window"]
    assert xl <= entry.tags["start"][0] <= xh and yl <= entry.tags["start"][1] <= yh
    for point in entry.tags["minima"](p):
        assert grad_at(name, point).norm() < 1e-4, (name, point)
        f0 = float(entry.factory(torch.tensor(point, dtype=torch.float64), **p))
        for dx, dy in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
            nearby = torch.tensor([point[0] + dx, point[1] + dy], dtype=torch.float64)
            assert float(entry.factory(nearby, **p)) > f0


def test_rosenbrock_gradient_is_its_derivative():
    x, y = -1.5, 2.0
    assert grad_at("rosenbrock", (x, y)).tolist() == pytest.approx(
        [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def test_a_surface_step_with_sgd_and_adam_equals_the_hand_written_update():
    def grad(p):
        x, y = p
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    lr, m = 1e-4, 0.9
    p, v = np.array([-1.5, 2.0]), np.zeros(2)
    for _ in range(5):  # torch's SGD with momentum: v = m v + g; x -= lr v
        v = m * v + grad(p)
        p = p - lr * v
    sgd = walk("rosenbrock", {"name": "sgd", "lr": lr, "momentum": m}, 5)
    assert sgd["trajectory"][-1][:2] == pytest.approx(p.tolist(), rel=1e-12)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, mo, ve = np.array([-1.5, 2.0]), np.zeros(2), np.zeros(2)
    for t in range(1, 6):  # Kingma and Ba's Algorithm 1
        g = grad(p)
        mo, ve = b1 * mo + (1 - b1) * g, b2 * ve + (1 - b2) * g * g
        p = p - lr * (mo / (1 - b1 ** t)) / (np.sqrt(ve / (1 - b2 ** t)) + eps)
    adam = walk("rosenbrock", {"name": "adam", "lr": lr}, 5)
    assert adam["trajectory"][-1][:2] == pytest.approx(p.tolist(), rel=1e-10)
    assert adam["step_length"][0] == pytest.approx(lr * math.sqrt(2), rel=1e-6)  # sign-like


def test_the_noisy_bowls_gradient_noise_shrinks_as_one_over_root_batch():
    for batch in (1, 16):
        ends = np.array([walk("noisy_bowl", {"name": "sgd", "lr": 1.0}, 1, start=(0.0, 0.0),
                              params={"noise": 2.0, "batch": batch}, seed=s)["trajectory"][1][:2]
                         for s in range(400)])
        assert ends.std() == pytest.approx(2.0 / math.sqrt(batch), rel=0.1)
        assert abs(ends.mean()) < 4 * 2.0 / math.sqrt(batch) / math.sqrt(800)


def test_a_schedule_sets_each_steps_rate_and_the_grid_covers_the_window():
    r = walk("quadratic", {"name": "sgd", "lr": 0.01}, 10, schedule={"name": "step",
                                                                    "step_size": 5, "gamma": 0.5})
    assert r["lr"] == [0.01] * 5 + [0.005] * 5
    z = surface_values("quadratic", {"kappa": 4.0}, [0.0, 1.0], [0.0, 1.0, 2.0])
    assert z.tolist() == [[0.0, 0.5], [2.0, 2.5], [8.0, 8.5]]


def test_bad_walks_are_refused_with_the_allowed_values():
    with pytest.raises(SpecError, match="kappa"):
        walk("quadratic", {"name": "sgd"}, 5, params={"kappa": 0})
    with pytest.raises(SpecError, match="two finite numbers"):
        walk("quadratic", {"name": "sgd"}, 5, start=(1.0, float("nan")))
    with pytest.raises(SpecError, match="steps"):
        walk("quadratic", {"name": "sgd"}, 0)
    with pytest.raises(SpecError, match="validation loss"):
        walk("quadratic", {"name": "sgd"}, 5, schedule={"name": "reduce_on_plateau"})
    with pytest.raises(SpecError, match="momentum"):
        walk("quadratic", {"name": "sgd", "momentum": 2}, 5)


@pytest.mark.slow
def test_the_surface_command_prints_the_trajectory_as_json(capsys):
    from engine.__main__ import main

    out = subprocess.run([sys.executable, "-m", "engine", "surface", "quadratic", "--optimizer",
                          "sgd", "--lr", "0.019", "--steps", "200", "--start", "1,1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["trajectory"]) == 201 and result["trajectory"][0] == [1.0, 1.0, 50.5]
    assert all(len(p) == 3 for p in result["trajectory"])
    assert result["closed_form"]["stable"] == pytest.approx(0.02)
    assert result["trajectory"][-1][2] < 1e-3
    assert main(["surface", "rosenbrock", "--optimizer", "sgd", "--lr", "0.001", "--momentum",
                 "0.9", "--steps", "50", "--start", "-1.5,2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["optimizer"]["momentum"] == 0.9 and result["start"] == [-1.5, 2.0]
    for args, message in ((("quadratic", "--gamma", "0.5"), "--gamma is not"),
                          (("quadratic", "--start", "1"), "two numbers"),
                          (("nope",), "unknown surface"),
                          (("quadratic", "--lr", "2x"), "optimizer.lr='2x' is not allowed")):
        assert main(["surface", *args]) == 2
        assert message in capsys.readouterr().err
