"""Convolutional layers (engine/nn/conv.py) and describe()'s arithmetic, checked against torch:
output sizes and parameter counts against the real modules, multiply-adds against torch's own
FLOP counter, receptive fields against hand-worked cases."""
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine import ExperimentSpec, SpecError, Trainer, build_model
from engine.core.portable import Dropout
from engine.core.spec import DataSpec
from engine.data.datasets import SHAPES, load_dataset, make_shapes
from engine.nn.conv import output_size
from engine.nn.model import describe
from engine.train.health import silent


def spec_of(layers, data=None, **extra):
    return ExperimentSpec.from_dict({"data": data or {"name": "shapes", "n": 64},
                                     "model": {"activation": "relu", "layers": layers}, **extra})


def random_stack(rng: random.Random, size: int) -> list[dict]:
    """A random conv stack that fits a size x size image (sizes tracked with output_size)."""
    layers, channels = [], 1
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.2:  # the blocks keep the size
            filters = rng.choice([2, 4])
            layers.append(rng.choice([{"type": "resblock2d", "filters": filters,
                                       "batchnorm": rng.random() < 0.5},
                                      {"type": "inception", "filters": filters}]))
            channels = filters * (4 if layers[-1]["type"] == "inception" else 1)
            continue
        if rng.random() < 0.3 and size >= 4:
            kind = rng.choice(["maxpool", "avgpool"])
            k = rng.choice([2, 3])
            s = rng.choice([1, 2])
            layers.append({"type": kind, "kernel": k, "stride": s})
            size = output_size(size, k, s)
            continue
        k = rng.choice([1, 3, 5])
        d = rng.choice([1, 1, 2])
        s = rng.choice([1, 1, 2])
        pad = rng.choice(["valid", "same", 1, 2]) if s == 1 else rng.choice(["valid", 1, 2])
        p = {"valid": 0, "same": d * (k - 1) // 2}.get(pad, pad)
        if d * (k - 1) + 1 > size + 2 * p:
            continue
        filters = rng.choice([2, 4, 6])
        groups = rng.choice([g for g in (1, 2) if channels % g == 0 and filters % g == 0])
        layers.append({"type": "conv2d", "filters": filters, "kernel": k, "stride": s,
                       "padding": pad, "dilation": d, "groups": groups,
                       "bias": rng.random() < 0.7})
        size, channels = output_size(size, k, s, p, d), filters
        if rng.random() < 0.3:
            layers.append({"type": "batchnorm2d"})
    return layers + [rng.choice([{"type": "globalavgpool"}, {"type": "flatten"}, 8])]


@pytest.mark.parametrize("seed", range(16))
def test_describe_matches_torch_on_random_stacks(seed):
    rng = random.Random(seed)
    size = rng.choice([8, 12, 16])
    spec = spec_of(random_stack(rng, size), {"name": "shapes", "n": 64, "size": size,
                                            "shift": 0})
    d = describe(spec, (1, size, size), 4)
    net = build_model(spec, (1, size, size), 4)
    x = torch.randn(2, 1, size, size)
    for row, (name, module) in zip(d["layers"], net.named_children()):
        assert row["name"] == name
        with FlopCounterMode(display=False) as flops:
            x = module(x)
        assert row["output_shape"] == list(x.shape[1:]), name
        assert row["params"] == sum(p.numel() for p in module.parameters()), name
        assert row["macs"] * 2 * 2 == flops.get_total_flops(), name  # 2 FLOPs a MAC, batch 2
        if row["formula"]:  # the layer's last window's size worked out lands on torch's size
            last = row["formula"].split("; ")[-1]
            assert int(last.split("= ")[1].split()[0]) == x.shape[-1], row["formula"]
    assert d["total_params"] == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("layers,fields", [
    ([{"type": "conv2d"}], [(3, 1)]),
    ([{"type": "conv2d"}, {"type": "conv2d"}], [(3, 1), (5, 1)]),
    # a 2x2 pool adds one pixel and doubles the jump: the next 3x3 kernel spans 2 jumps of 2
    ([{"type": "conv2d"}, {"type": "maxpool"}, {"type": "conv2d"}], [(3, 1), (4, 2), (8, 2)]),
    ([{"type": "conv2d", "dilation": 2}], [(5, 1)]),
    ([{"type": "conv2d", "kernel": 5, "stride": 2}, {"type": "conv2d"}], [(5, 2), (9, 2)]),
    # a residual block's two 3x3 convolutions; an inception block's widest branch (5x5)
    ([{"type": "resblock2d"}], [(5, 1)]),
    ([{"type": "inception"}, {"type": "inception"}], [(5, 1), (9, 1)]),
    ([{"type": "maxpool"}, {"type": "inception"}], [(2, 2), (10, 2)]),
    # a global pool sees the whole 16x16 canvas, and so does everything after it
    ([{"type": "conv2d"}, {"type": "globalavgpool"}, 4], [(3, 1), (16, None), (16, None)]),
])
def test_receptive_fields_by_hand(layers, fields):
    d = describe(spec_of(layers), (1, 16, 16), 4)
    got = [(r["receptive_field"], r["jump"]) for r in d["layers"] if r["type"] != "output"]
    assert got[:len(fields)] == fields


def test_a_receptive_field_stops_at_the_image_edges():
    """Padding lets a 15x15 kernel sit on an 8x8 image; what one value sees is still 8x8."""
    d = describe(spec_of([{"type": "conv2d", "kernel": 15, "padding": "same"}],
                         {"name": "digits"}), (1, 8, 8), 10)
    assert [(r["receptive_field"], r["jump"]) for r in d["layers"]] == [(8, 1), (8, None),
                                                                         (8, None)]


def test_flat_inputs_have_no_receptive_field():
    d = describe(ExperimentSpec.from_dict({"model": {"layers": [4]}}), (2,), 2)
    assert {r["receptive_field"] for r in d["layers"]} == {None}


def test_an_uneven_size_is_reported_with_the_formula():
    d = describe(spec_of([{"type": "conv2d", "stride": 2}]), (1, 16, 16), 4)
    assert d["layers"][0]["output_shape"] == [8, 7, 7]
    assert d["layers"][0]["formula"] == "(16 - 3 + 2*0)/2 + 1 = 7 (rounded down from 7.5)"
    assert d["layers"][0]["note"] == (
        "(W - F + 2P)/S + 1 = (16 - 3 + 2*0)/2 + 1 = 7.5, not whole: the kernel's last position "
        "stops 1 pixel(s) short of the input's right and bottom edges")
    padded = describe(spec_of([{"type": "conv2d", "stride": 2, "padding": 1}]), (1, 16, 16), 4)
    assert "8.5, not whole" in padded["layers"][0]["note"] and "padded input" in \
        padded["layers"][0]["note"]
    even = describe(spec_of([{"type": "conv2d", "kernel": 4, "stride": 2, "padding": 1}]),
                    (1, 16, 16), 4)
    assert even["layers"][0]["output_shape"] == [8, 8, 8] and even["layers"][0]["note"] is None


@pytest.mark.parametrize("layers,message", [
    ([{"type": "maxpool"}, {"type": "maxpool"}, {"type": "conv2d", "kernel": 5}],
     r"model.layers\[2\] \(conv2d, conv1\): its kernel is 5, larger than its 4x4 input"),
    ([{"type": "conv2d", "kernel": 7, "dilation": 3}],
     r"its kernel spans 19 pixels, larger than its 16x16 input"),
    ([{"type": "conv2d", "padding": "same", "stride": 2}], r"padding 'same' .* stride 1"),
    ([{"type": "conv2d", "padding": "same", "kernel": 4}],
     r"padding 'same' needs a kernel of odd span .* kernel 4 spans 4 pixels"),
    ([{"type": "avgpool", "kernel": 8, "stride": 8}, 4, {"type": "avgpool"}],
     r"model.layers\[2\]: an avgpool layer needs an image"),
    ([{"type": "conv2d", "filters": 6, "groups": 4}], r"groups=4 must divide both its 1 input"),
    ([{"type": "maxpool", "kernel": 8, "stride": 8}, {"type": "maxpool", "kernel": 3}],
     r"model.layers\[1\] \(maxpool, pool2\): its kernel is 3, larger than its 2x2 input"),
    ([4, {"type": "conv2d"}], r"a conv2d layer needs an image .* shape \[4\]"),
])
def test_impossible_stacks_are_refused_with_the_layer_named(layers, message):
    with pytest.raises(SpecError, match=message):
        build_model(spec_of(layers), (1, 16, 16), 4)
    with pytest.raises(SpecError, match=message):
        describe(spec_of(layers), (1, 16, 16), 4)


def test_conv_layers_refuse_flat_data():
    """On points, when the spec is read; on images, after a layer that flattened them, when the
    model is built (the shape is known only then)."""
    with pytest.raises(SpecError, match=r"needs images .*'moons' is not an image set"):
        ExperimentSpec.from_dict({"data": {"name": "moons"},
                                  "model": {"layers": [{"type": "conv2d"}]}})
    spec = ExperimentSpec.from_dict({"data": {"name": "digits"},
                                     "model": {"layers": [8, {"type": "conv2d"}]}})
    with pytest.raises(SpecError, match=r"needs an image .* shape \[8\]"):
        Trainer(spec)


def test_padding_takes_its_choices_and_nothing_else():
    make = lambda pad: ExperimentSpec.from_dict(  # noqa: E731
        {"data": {"name": "digits"},
         "model": {"layers": [{"type": "conv2d", "padding": pad}]}}).model.layers[0]
    assert make(1.0).get("padding") == 1 and type(make(1.0).get("padding")) is int
    assert make("same").get("padding") == "same"
    for bad in (True, 5, "full", -1):
        with pytest.raises(SpecError, match=r"padding.*one of 'valid', 'same', 1, 2, 3, 4"):
            make(bad)


def test_a_channel_is_silent_only_if_zero_everywhere():
    h = torch.rand(3, 4, 5, 5)
    h[:, 1] = 0          # dead: zero for every example at every position
    h[0, 2, 2, 2] = 0    # one zero pixel does not kill a channel
    h[:, 3, :, :2] = 0   # nor does a zero region
    assert silent(h).tolist() == [False, True, False, False]
    flat = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert silent(flat).tolist() == [True, False]


def test_a_conv_layer_with_dead_channels_is_counted_per_channel():
    spec = spec_of([{"type": "conv2d", "filters": 4, "bias_init": -50.0}, 8],
                   training={"steps": 2, "log_every": 1})
    trainer = Trainer(spec)
    trainer.run(2)
    conv = next(lay for lay in trainer.history.rows[-1]["layers"] if lay["name"] == "conv1")
    assert conv["dead_frac"] == 1.0  # a bias of -50 silences every channel of a ReLU conv


def test_channel_dropout_drops_whole_channels():
    gen = torch.Generator().manual_seed(0)
    drop = Dropout(0.5, gen, channels=True)
    x = torch.ones(64, 8, 4, 4)
    y = drop(x)
    per_channel = y.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))  # one value per channel
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}      # kept ones scaled by 1/(1-p)
    assert abs(float((per_channel[..., 0] == 0).float().mean()) - 0.5) < 0.06
    assert torch.equal(drop.eval()(x), x)


def test_shapes_draws_each_shape_within_its_shift():
    x, y, names = make_shapes(torch.Generator().manual_seed(1), 400, 0.0, 16, 0)
    assert names["classes"] == SHAPES and x.shape == (400, 1, 16, 16)
    assert set(y.tolist()) == set(range(len(SHAPES)))
    centred = x[:, 0, 5:10, 5:10]  # shift 0: every shape in the centre 5x5 box
    assert torch.equal(centred.sum((1, 2)), x.sum((1, 2, 3)))
    pixels = {0: 5, 1: 5, 2: 9, 3: 16}  # bars, the cross and the hollow square
    assert all(int(x[i].sum()) == pixels[int(y[i])] for i in range(len(y)))
    moved, _, _ = make_shapes(torch.Generator().manual_seed(1), 400, 0.0, 16, 5)
    rows = moved[:, 0].sum(2).nonzero()[:, 1]
    # shift 5 reaches the top edge; 16 - 5 is odd, so the centred shape sits one pixel nearer
    # the top, and the bottom row stays empty
    assert int(rows.min()) == 0 and int(rows.max()) == 14


def test_shapes_refuses_a_shift_off_the_canvas():
    with pytest.raises(SpecError, match=r"data.shift=6 would move a 5x5 shape off a 16x16 "
                                        r"canvas: at most 5"):
        load_dataset(DataSpec.from_dict({"name": "shapes", "shift": 6}), 0)


def test_a_small_cnn_learns_the_shapes():
    """Two conv layers and a global pool: a net that sees a shape wherever it is."""
    spec = spec_of([{"type": "conv2d", "filters": 8, "padding": "same"}, {"type": "maxpool"},
                    {"type": "conv2d", "filters": 8, "padding": "same"},
                    {"type": "globalavgpool"}],
                   {"name": "shapes", "n": 800}, optimizer={"name": "adam", "lr": 0.01},
                   training={"steps": 300, "batch_size": 32})
    trainer = Trainer(spec)
    trainer.run(spec.training.steps)
    assert trainer.history.rows[-1]["val_acc"] >= 0.9


def test_the_calculators_arithmetic_is_torchs_output_size_on_random_windows():
    from engine.nn.conv import window_arithmetic
    rng = random.Random(0)
    for _ in range(300):
        size, k, s, p, d = (rng.randint(1, 20), rng.randint(1, 7), rng.randint(1, 4),
                            rng.randint(0, 3), rng.randint(1, 3))
        r = window_arithmetic(size, k, s, p, d)
        conv = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
        try:
            real = conv(torch.zeros(1, 1, size, size)).shape[-1]
        except RuntimeError:  # torch: the kernel does not fit
            assert r["error"] and "spans" in r["error"], (size, k, s, p, d)
            continue
        assert r["error"] is None and r["size"] == real, (size, k, s, p, d, r)
        assert r["exact"] == (size + 2 * p - d * (k - 1) - 1) / s + 1
        assert (r["left_over"] == 0) == (r["exact"] == real)
