"""engine/lab/featuremaps.py: kernels and feature maps read from a CNN without changing it."""
import torch

from engine import ExperimentSpec, Trainer
from engine.lab.featuremaps import conv_filters, feature_maps, has_convolutions

CNN = {"data": {"name": "shapes", "n": 120, "size": 12, "shift": 2},
       "model": {"activation": "relu", "layers": [
           {"type": "conv2d", "filters": 4, "padding": "same"}, {"type": "batchnorm2d"},
           {"type": "dropout2d", "p": 0.5}, {"type": "maxpool"},
           {"type": "conv2d", "filters": 20}, {"type": "globalavgpool"}]},
       "training": {"steps": 3, "batch_size": 16}}


def trained():
    trainer = Trainer(ExperimentSpec.from_dict(CNN))
    trainer.run(3)
    return trainer


def test_kernels_are_the_weights_averaged_over_input_channels():
    model = trained().model
    found = conv_filters(model, max_filters=16)
    assert [k["name"] for k in found] == ["conv1", "conv2"]
    first, second = found
    assert not first["averaged"] and first["filters"] == 4
    assert torch.allclose(torch.tensor(first["kernels"]), model.conv1.conv.weight[:, 0])
    assert second["averaged"] and second["in_channels"] == 4 and second["filters"] == 20
    assert len(second["kernels"]) == 16  # the first 16 of 20
    assert torch.allclose(torch.tensor(second["kernels"]),
                          model.conv2.conv.weight[:16].mean(1), atol=1e-6)


def test_feature_maps_are_each_layers_output_in_eval_mode():
    trainer = trained()
    model, image = trainer.model, trainer.data.x_val[3]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dropout_gen = model.drop1.generator.get_state()
    maps = feature_maps(model, image, max_maps=8)
    assert model.training  # its mode is put back
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert torch.equal(dropout_gen, model.drop1.generator.get_state())  # no random draw
    model.eval()
    with torch.no_grad():
        h, expected = image[None], {"input": image}
        for name, module in model.named_children():
            h = module(h)
            expected[name] = h[0]
    model.train()
    assert [m["name"] for m in maps] == ["input", "conv1", "bn1", "drop1", "pool1", "conv2",
                                         "scores"]
    for m in maps[:-1]:
        assert m["channels"] == expected[m["name"]].shape[0]
        assert torch.allclose(torch.tensor(m["maps"]), expected[m["name"]][:8], atol=1e-6)
    assert torch.allclose(torch.tensor(maps[-1]["values"]), h[0], atol=1e-6)


def test_an_mlp_has_no_convolutions():
    mlp = Trainer(ExperimentSpec.from_dict({"model": {"layers": [4]}, "training": {"steps": 1}}))
    assert not has_convolutions(mlp.model) and conv_filters(mlp.model) == []
    assert has_convolutions(trained().model)


def test_the_occlusion_map_peaks_where_the_planted_feature_is():
    """A net whose class-1 logit is the sum of a 2x2 block of pixels (a feature planted at rows
    and columns 5-6): the probability falls most when the 3x3 patch covers the whole block,
    i.e. centred on the block's four pixels, and not at all where it misses the block."""
    from engine.lab.featuremaps import occlusion_map
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1].view(8, 8)[5:7, 5:7] = 1.0
    image = torch.ones(1, 8, 8)
    drop = torch.tensor(occlusion_map(net, image, target=1, patch=3, fill=0.0))
    base = torch.softmax(torch.tensor([0.0, 4.0]), 0)[1]
    assert torch.isclose(drop.max(), base - 0.5)  # all four pixels hidden: logits 0 and 0
    peaks = {(r, c) for r in range(8) for c in range(8) if torch.isclose(drop[r, c], drop.max())}
    assert peaks == {(5, 5), (5, 6), (6, 5), (6, 6)}
    misses = [(r, c) for r in range(8) for c in range(8) if max(abs(r - 5.5), abs(c - 5.5)) > 2]
    assert all(float(drop[r, c]) == 0.0 for r, c in misses)
    assert net.training  # its mode is put back
    one_logit = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1, bias=False))
    with torch.no_grad():
        one_logit[1].weight.copy_(net[1].weight[1:])
    assert torch.allclose(torch.tensor(occlusion_map(one_logit, image, 1, 3, 0.0)).max(),
                          torch.sigmoid(torch.tensor(4.0)) - 0.5)
