"""engine/featuremaps.py: kernels and feature maps read from a CNN without changing it."""
import torch

from engine import ExperimentSpec, Trainer
from engine.featuremaps import conv_filters, feature_maps, has_convolutions

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
