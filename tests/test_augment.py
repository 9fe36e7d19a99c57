"""Image augmentation (portable.augment_images, training.augment): each change checked against
an independent construction (a roll for whole-pixel moves, a mirror, the rotated centroid of a
single bright pixel), and the rules: training batches only, the run's own stream, images only."""
import math

import pytest
import torch

from engine import ExperimentSpec, SpecError, Trainer
from engine.core.portable import STREAMS, augment_images, generator
from engine.data.datasets import load_dataset


def _moves(seed: int, n: int, shift: int) -> torch.Tensor:
    """The moves augment_images draws for a batch of n: after the n angles, (2, n) integers."""
    g = generator(seed, "augment")
    torch.rand(n, generator=g, dtype=torch.float64)
    return torch.randint(-shift, shift + 1, (2, n), generator=g)


def test_whole_pixel_moves_are_rolls_with_blank_coming_in():
    x = torch.rand(6, 1, 9, 9)
    blank = torch.full((1, 9, 9), -0.5)
    out = augment_images(x, generator(3, "augment"), blank, shift=3)
    for i, (dx, dy) in enumerate(_moves(3, 6, 3).T.tolist()):
        expected = torch.roll(x[i], (dy, dx), (1, 2))
        rows, cols = torch.arange(9)[:, None] - dy, torch.arange(9)[None, :] - dx
        outside = (rows < 0) | (rows > 8) | (cols < 0) | (cols > 8)
        expected[:, outside] = -0.5
        assert torch.allclose(out[i], expected, atol=1e-5), (i, dx, dy)


def test_flips_mirror_left_right_about_half_the_time():
    x = torch.rand(200, 1, 6, 6)
    out = augment_images(x, generator(0, "augment"), torch.zeros(1, 6, 6), flip=True)
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    assert all(a != b for a, b in zip(same, mirrored))  # each one or the other
    assert 70 < sum(mirrored) < 130


def test_a_turn_moves_a_bright_pixel_along_its_circle():
    """The centroid of a single bright pixel, turned by the drawn angle about the centre."""
    size, (dx, dy) = 33, (8, 0)
    x = torch.zeros(50, 1, size, size)
    x[:, 0, size // 2 + dy, size // 2 + dx] = 1.0
    out = augment_images(x, generator(1, "augment"), torch.zeros(1, size, size), rotate=40.0)
    angles = (torch.rand(50, generator=generator(1, "augment"), dtype=torch.float64) * 2 - 1) * 40
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    turned = 0
    for img, degrees in zip(out[:, 0].double(), angles.tolist()):
        mass = img.sum()
        cx, cy = (img.sum(0) * coords).sum() / mass, (img.sum(1) * coords).sum() / mass
        t = math.radians(degrees)
        # grid_sample reads the output at u from the input at R(t) u: content turns by -t
        ex, ey = dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)
        assert abs(float(cx) - ex) < 0.3 and abs(float(cy) - ey) < 0.3, (degrees, cx, cy)
        assert math.hypot(float(cx), float(cy)) == pytest.approx(8, abs=0.3)  # on its circle
        turned += abs(degrees) > 5
    assert turned > 30


def test_noise_has_the_asked_spread_and_nothing_else_changes():
    x = torch.zeros(64, 1, 16, 16)
    out = augment_images(x, generator(2, "augment"), torch.zeros(1, 16, 16), noise=0.3)
    assert float(out.std()) == pytest.approx(0.3, rel=0.05) and abs(float(out.mean())) < 0.01
    same = augment_images(x + 1, generator(2, "augment"), torch.zeros(1, 16, 16))
    assert torch.equal(same, x + 1)  # nothing asked: the batch as it was


def test_the_first_streams_keep_their_seeds_and_augment_gets_its_own():
    """Adding a stream must not change any earlier run: seed * 4 + index, as before."""
    for seed in (0, 1, 7, 2**31 - 1):
        for name, index in list(STREAMS.items())[:4]:
            assert generator(seed, name).initial_seed() == seed * 4 + index
        assert generator(seed, "augment").initial_seed() > 4 * (2**31 - 1) + 3


SHAPES = {"data": {"name": "shapes", "n": 200, "shift": 2},
          "model": {"activation": "relu", "layers": [{"type": "conv2d", "filters": 4},
                                                     {"type": "globalavgpool"}]},
          "training": {"steps": 20, "batch_size": 16, "log_every": 5}}


def _with_augment(augment):
    return ExperimentSpec.from_dict({**SHAPES, "training": {**SHAPES["training"],
                                                            "augment": augment}})


def test_only_training_batches_change_and_runs_repeat():
    spec = _with_augment({"shift": 2, "noise": 0.2})
    a, b = Trainer(spec), Trainer(spec)
    a.run(20)
    b.run(20)
    assert [r["train_loss"] for r in a.history.rows] == [r["train_loss"] for r in b.history.rows]
    plain = Trainer(_with_augment(None))
    plain.run(20)
    assert [r["train_loss"] for r in a.history.rows] != \
        [r["train_loss"] for r in plain.history.rows]
    fresh = load_dataset(spec.data, spec.seed)
    for split in ("train", "val", "test"):  # the data themselves are never changed
        assert torch.equal(getattr(a.data, f"x_{split}").cpu(), getattr(fresh, f"x_{split}"))


def test_augment_is_for_images_and_written_only_when_on():
    with pytest.raises(SpecError, match=r"training.augment changes images, but 'moons' is not "
                                        r"an image set; allowed with: digits, shapes"):
        ExperimentSpec.from_dict({"data": {"name": "moons"}, "training": {"augment": {"shift": 1}}})
    with pytest.raises(SpecError, match=r"training.augment.rotate=90(.0)? is not allowed: expected a number >= 0 and <= 45"):
        _with_augment({"rotate": 90})
    assert "augment" not in _with_augment(None).to_dict()["training"]
    on = _with_augment({"flip": True})
    assert ExperimentSpec.from_dict(on.to_dict()) == on
    assert on.to_dict()["training"]["augment"] == {"shift": 0, "rotate": 0.0, "noise": 0.0,
                                                   "flip": True}
