"""Adding a choice is one entry: an activation, an optimizer, a dataset with a parameter of its
own and a layer type, each registered from this test module only (no Netlab file edited), are
validated, built, trained, offered by the page's pickers, carried through the URL and the
widgets, and exported to a standalone script that reproduces the engine's numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from engine import ExperimentSpec, SpecError, Trainer
from engine.core.registry import ACTIVATIONS, DATASETS, LAYERS, OPTIMIZERS, Param
from engine.io.export import export_script
from tests.conftest import ROOT
from ui import state as S

# Keys no real entry takes (tests/test_registry.py keeps "test_" free), so adding the docs'
# own example (`nadam`) to the registry never clashes with this test.
ACT, OPT, DATA, LAYER = "test_squared_relu", "test_nadam", "test_rings", "test_rmsnorm"


class SquaredReLU(nn.Module):
    """relu(x)^2 * scale: smooth at zero, unbounded above."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return torch.relu(x) ** 2 * self.scale


def make_rings(generator, n, noise, rings):
    """Concentric rings, the class alternating from ring to ring."""
    ring = torch.randint(0, rings, (n,), generator=generator)
    radius = (ring + 0.5) / rings
    angle = 2 * torch.pi * torch.rand(n, generator=generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return x + noise * torch.randn(n, 2, generator=generator), ring % 2


def rmsnorm_layer(ctx, layer, in_shape):
    return ctx.make(nn.RMSNorm, in_shape[0], eps=layer.get("eps")), in_shape


@pytest.fixture
def extended():
    """The four throwaway entries, removed again afterwards (the registries are global)."""
    ACTIVATIONS.add(ACT, SquaredReLU, "relu(x) squared, times a scale.",
                    (Param("scale", 1.0, "output scale", low=0.0, low_open=True, high=10.0),),
                    init="he_normal")
    OPTIMIZERS.add(OPT, torch.optim.NAdam, "Adam with Nesterov momentum.",
                   (Param("lr", 0.002, "learning rate", low=0.0, low_open=True, high=10.0),
                    Param("momentum_decay", 0.004, "momentum decay", low=0.0, high=1.0)))
    DATASETS.add(DATA, make_rings, "Concentric rings of alternating class.",
                 (Param("n", 300, "number of examples", low=10, high=5000),
                  Param("noise", 0.03, "std of the Gaussian noise", low=0.0, high=1.0),
                  Param("rings", 4, "number of rings", low=2, high=12)),
                 task="classification", input="plane", classes=2)
    LAYERS.add(LAYER, rmsnorm_layer, "Divides each example by its root mean square.",
               (Param("eps", 1e-6, "added under the root", low=0.0, low_open=True, high=1.0),),
               prefix="testrms", flat_only=True)
    yield
    for registry, key in ((ACTIVATIONS, ACT), (OPTIMIZERS, OPT),
                          (DATASETS, DATA), (LAYERS, LAYER)):
        registry.remove(key)


CONFIG = {
    "seed": 2,
    "data": {"name": DATA, "rings": 5, "n": 200},
    "model": {"activation": {"name": ACT, "scale": 0.5},
              "layers": [16, {"type": LAYER, "eps": 1e-5}, 8]},
    "optimizer": {"name": OPT, "lr": 0.01},
    "training": {"steps": 30, "batch_size": 16, "log_every": 5},
}


def test_new_entries_validate_build_and_train(extended):
    spec = ExperimentSpec.from_dict(CONFIG)
    assert spec.data.rings == 5 and spec.data.params == {"n": 200, "noise": 0.03, "rings": 5}
    assert spec.data.classes == 2  # the dataset's fixed class count, from its tag
    trainer = Trainer(spec).run()
    assert trainer.stopped == "completed" and trainer.step_count == 30
    assert isinstance(trainer.model.fc1.act, SquaredReLU) and trainer.model.fc1.act.scale == 0.5
    assert isinstance(trainer.model.testrms1, nn.RMSNorm) and trainer.model.testrms1.eps == 1e-5
    assert isinstance(trainer.optimizer, torch.optim.NAdam)
    labels = torch.cat([trainer.data.y_train, trainer.data.y_val])
    assert set(labels.tolist()) == {0, 1}
    for bad, words in [({"data": {"name": DATA, "rings": 20}}, ["data.rings=20", "<= 12"]),
                       ({"data": {"name": "spiral", "rings": 3}}, ["data.rings", "spiral"]),
                       ({"data": {"name": DATA, "classes": 3}}, ["exactly 2 classes"]),
                       ({"model": {"activation": {"name": ACT, "scale": 0}}},
                        ["scale=0", "> 0"]),
                       ({"model": {"layers": [{"type": LAYER, "eps": 2}]}}, ["eps=2"])]:
        with pytest.raises(SpecError) as e:
            ExperimentSpec.from_dict(bad)
        assert all(w in str(e.value) for w in words), (words, str(e.value))


def test_new_entries_round_trip_the_url_and_the_widgets(extended):
    spec = ExperimentSpec.from_dict(CONFIG).canonical()
    assert S.decode_link(S.encode_link(spec)).canonical() == spec
    state: dict = {}
    S.load(spec, state)
    assert state["w.data.rings"] == 5 and state["w.model.activation.scale"] == 0.5
    assert ExperimentSpec.from_dict(S.collect(state)).canonical() == spec


def test_new_entries_appear_in_the_pages_pickers(extended):
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    try:
        label = lambda key: key.replace("_", " ")  # noqa: E731 - how a picker shows a key
        assert label(DATA) in at.selectbox(key="w.data.name").options
        assert label(ACT) in at.selectbox(key="w.model.activation").options
        assert label(OPT) in at.selectbox(key="w.optimizer").options
        assert any(b.label == f"+ {label(LAYER)}" for b in at.button)
        at.selectbox(key="w.data.name").set_value(DATA).run()
        at.number_input(key="w.data.rings").set_value(6).run()  # its own parameter's widget
        at.selectbox(key="w.model.activation").set_value(ACT).run()
        at.selectbox(key="w.optimizer").set_value(OPT).run()
        next(b for b in at.button if b.label == f"+ {label(LAYER)}").click().run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        spec = at.session_state["spec"]
        assert spec.data.name == DATA and spec.data.rings == 6
        assert spec.model.activation.name == ACT and spec.optimizer.name == OPT
        assert spec.model.layers[-1].type == LAYER
    finally:
        from tests.test_app import live_registries
        for registry in live_registries():
            registry.shutdown()
        st.cache_resource.clear()


@pytest.mark.slow
def test_new_entries_export_to_a_standalone_script_with_the_engines_numbers(extended, tmp_path):
    source = export_script(CONFIG)
    assert "class SquaredReLU(nn.Module)" in source and "def make_rings(" in source
    assert "nn.RMSNorm(16, eps=1e-05)" in source and "torch.optim.NAdam(" in source
    (tmp_path / "train.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "train.py", "--history", "rows.json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((tmp_path / "rows.json").read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = Trainer(CONFIG).run().history.rows
    finally:
        torch.set_num_threads(before)
    assert [r["step"] for r in final["history"]] == [r["step"] for r in rows]
    for mine, theirs in zip(final["history"], rows):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)


def test_a_layer_factory_that_torch_refuses_is_a_one_line_spec_error():
    """Any exception from a factory (here torch's own ValueError) names the layer instead of
    reaching the page as a traceback."""
    def refused(ctx, layer, in_shape):
        return ctx.make(nn.Linear, in_shape[0], -1), in_shape  # torch: no negative size

    LAYERS.add("test_refused", refused, "A layer torch will not build.", (),
               prefix="testref", flat_only=True)
    try:
        with pytest.raises(SpecError) as e:
            Trainer(ExperimentSpec.from_dict({"model": {"layers": [4, {"type": "test_refused"}]}}))
        message = str(e.value)
        assert message.startswith("model.layers[1] (test_refused, testref1) cannot be built")
        assert "\n" not in message
    finally:
        LAYERS.remove("test_refused")


def test_an_image_layer_on_points_is_refused_when_the_spec_is_read():
    for layer in ("conv2d", "maxpool", "flatten"):
        with pytest.raises(SpecError, match=rf"model.layers\[0\]: an? {layer} layer needs images"
                                            r".*'circle' is not an image set; use it with digits"):
            ExperimentSpec.from_dict({"data": {"name": "circle"}, "model": {"layers": [
                {"type": layer}, 4]}})
