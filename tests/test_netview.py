"""The network view: engine.lab.netview.network_snapshot (checked against the model run by hand and
against p.grad) and ui.network.network_figure (builds, counts, size)."""
import json

import numpy as np
import pytest
import torch

from engine.lab.netview import network_snapshot
from engine.presets import load_preset
from engine.train.trainer import Trainer
from ui.network import network_figure

RES_BN = {"model": {"layers": [{"type": "linear", "units": 16}, {"type": "batchnorm"},
                               {"type": "dropout", "p": 0.3},
                               {"type": "residual", "units": 8, "depth": 2},
                               {"type": "residual", "units": 8, "depth": 1}]},
          "training": {"batch_size": 16}}
DIGITS = {"data": {"name": "digits", "n": 300}, "model": {"layers": [20]}}


def trainer(config, steps=0):
    t = Trainer(config)
    if steps:
        t.run(steps)
    return t


@pytest.fixture(scope="module")
def default():
    return trainer({}, steps=3)


@pytest.fixture(scope="module")
def resbn():
    return trainer(RES_BN, steps=3)


def grid_outputs(t, snap):
    """The snapshot's grid run through the model by hand, layer by layer, in eval mode:
    {layer name: output (n*n, units)}, the inputs under "inputs"."""
    xs = torch.tensor(snap["plane"]["xs"])
    ys = torch.tensor(snap["plane"]["ys"])
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # row r: y = ys[r]; column c: x = xs[c]
    x = t.data.encode(torch.stack([gx.flatten(), gy.flatten()], 1))
    out = {"inputs": x}
    was = t.model.training
    t.model.eval()
    with torch.no_grad():
        for name, module in t.model.named_children():
            x = module(x)
            out[name] = x
    t.model.train(was)
    return out


def as_array(m):
    return np.array(m, dtype=float)


# ----------------------------------------------------------------------------- shapes and counts


def test_default_mlp_shapes(default):
    snap = network_snapshot(default.model, default.data, grid=24, max_units=12)
    json.dumps(snap, allow_nan=False)
    cols = snap["columns"]
    assert [c["name"] for c in cols] == ["inputs", "fc1", "fc2", "out"]
    assert [c["kind"] for c in cols] == ["input", "linear", "linear", "output"]
    assert [c["size"] for c in cols] == [2, 64, 64, 3]
    assert [c["shown"] for c in cols] == [2, 12, 12, 3]
    assert [c["hidden"] for c in cols] == [0, 52, 52, 0]
    assert [u["label"] for u in cols[0]["units"]] == ["x1", "x2"]
    assert [u["label"] for u in cols[-1]["units"]] == ["class 0", "class 1", "class 2"]
    assert cols[1]["activation"] == "relu"
    for c in cols:
        assert len(c["units"]) == c["shown"]
        for u in c["units"]:
            assert as_array(u["map"]).shape == (24, 24)
            lo, hi = u["range"]
            assert lo == pytest.approx(as_array(u["map"]).min())
            assert hi == pytest.approx(as_array(u["map"]).max())
    assert all(u["bias"] is None for u in cols[0]["units"])
    assert all(u["bias"] is not None for c in cols[1:] for u in c["units"])
    links = snap["links"]
    assert [(lk["src"], lk["dst"], lk["kind"]) for lk in links] == [
        (0, 1, "linear"), (1, 2, "linear"), (2, 3, "linear")]
    assert [as_array(lk["weight"]).shape for lk in links] == [(12, 2), (12, 12), (3, 12)]
    assert [lk["param"] for lk in links] == ["fc1.linear.weight", "fc2.linear.weight", "out.weight"]
    np.testing.assert_array_equal(as_array(links[1]["weight"]),
                                  default.model.fc2.linear.weight.detach()[:12, :12].numpy())
    np.testing.assert_array_equal(as_array(links[0]["weight"])[:, 0],
                                  default.model.fc1.linear.weight.detach()[:12, 0].numpy())
    x0, x1, y0, y1 = snap["plane"]["extent"]
    pts = torch.cat(list(default.data.points.values()))
    assert x0 < pts[:, 0].min() and x1 > pts[:, 0].max()
    assert y0 < pts[:, 1].min() and y1 > pts[:, 1].max()
    assert snap["plane"]["grid"] == 24 and len(snap["plane"]["xs"]) == 24


def test_residual_batchnorm_dropout_shapes(resbn):
    snap = network_snapshot(resbn.model, resbn.data, grid=10)
    json.dumps(snap, allow_nan=False)
    cols = snap["columns"]
    assert [c["name"] for c in cols] == ["inputs", "fc1", "res1", "res2", "out"]
    assert cols[1]["layers"] == ["fc1", "bn1", "drop1"] and cols[1]["watch"] == "drop1"
    assert [c["kind"] for c in cols] == ["input", "linear", "residual", "residual", "output"]
    assert [c["size"] for c in cols] == [2, 16, 8, 8, 3]
    assert [c["hidden"] for c in cols] == [0, 4, 0, 0, 0]
    assert cols[2]["block"] == {"depth": 2, "projection": True}
    assert cols[3]["block"] == {"depth": 1, "projection": False}
    links = snap["links"]
    assert [lk["kind"] for lk in links] == ["linear", "projection", "identity", "linear"]
    proj, ident = links[1], links[2]
    np.testing.assert_array_equal(as_array(proj["weight"]),
                                  resbn.model.res1.proj.weight.detach()[:8, :12].numpy())
    assert proj["param"] == "res1.proj.weight" and "projection" in proj["note"]
    np.testing.assert_array_equal(as_array(ident["weight"]), np.eye(8))
    assert ident["grad"] is None and ident["param"] is None and "F(h)" in ident["note"]
    # a residual block's bias is its projection's; without one it has none
    proj_bias = resbn.model.res1.proj.bias.detach()
    assert cols[2]["units"][0]["bias"] == pytest.approx(float(proj_bias[0]))
    assert all(u["bias"] is None for u in cols[3]["units"])


def test_digits_flattened_without_plane_maps():
    t = trainer(DIGITS)
    snap = network_snapshot(t.model, t.data)
    json.dumps(snap, allow_nan=False)
    assert snap["plane"] is None
    cols = snap["columns"]
    assert [c["name"] for c in cols] == ["inputs", "fc1", "out"]
    assert cols[0]["layers"] == ["flatten"] and cols[0]["size"] == 64
    assert [c["shown"] for c in cols] == [12, 12, 10] and cols[0]["hidden"] == 52
    assert cols[0]["units"][9]["label"] == "pixel (1, 1)"
    assert all(u["map"] is None for c in cols for u in c["units"])
    # ranges over training examples: the first pixels of the flattened images, normalised
    x = t.data.x_train[:256].flatten(1)
    lo, hi = cols[0]["units"][3]["range"]
    assert lo == pytest.approx(float(x[:, 3].min())) and hi == pytest.approx(float(x[:, 3].max()))
    assert as_array(snap["links"][0]["weight"]).shape == (12, 12)


def test_wider_than_max_units():
    t = trainer({"model": {"layers": [30, {"type": "linear", "units": 4}]}})
    snap = network_snapshot(t.model, t.data, grid=8, max_units=5)
    cols = snap["columns"]
    assert [(c["size"], c["shown"], c["hidden"]) for c in cols] == [
        (2, 2, 0), (30, 5, 25), (4, 4, 0), (3, 3, 0)]
    assert [as_array(lk["weight"]).shape for lk in snap["links"]] == [(5, 2), (4, 5), (3, 4)]
    fig = network_figure(snap)
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert "+25 more" in texts and sum("more" in tx for tx in texts) == 1


# ----------------------------------------------------------------------------- values


def test_unit_maps_equal_a_direct_computation(default):
    snap = network_snapshot(default.model, default.data, grid=16)
    direct = grid_outputs(default, snap)
    for col in snap["columns"]:
        expected = direct[col["watch"] or col["name"]].reshape(16, 16, -1)
        for u in col["units"]:
            np.testing.assert_allclose(as_array(u["map"]), expected[..., u["index"]].numpy(),
                                       rtol=1e-6, atol=1e-6)
    # the output column is the logits the decision boundary is drawn from
    probs = default.predict(direct["inputs"]).reshape(16, 16, 3)
    logits = np.stack([as_array(u["map"]) for u in snap["columns"][-1]["units"]], -1)
    np.testing.assert_allclose(torch.softmax(torch.tensor(logits), -1).numpy(), probs.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_maps_through_batchnorm_and_residual_blocks(resbn):
    snap = network_snapshot(resbn.model, resbn.data, grid=12)
    direct = grid_outputs(resbn, snap)
    for col in snap["columns"]:
        expected = direct[col["watch"] or col["name"]].reshape(12, 12, -1)
        maps = np.stack([as_array(u["map"]) for u in col["units"]], -1)
        np.testing.assert_allclose(maps, expected[..., :col["shown"]].numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_gradients_equal_p_grad_after_a_step():
    t = trainer(RES_BN)
    before = network_snapshot(t.model, t.data, grid=4)
    assert before["has_grad"] is False
    assert all(lk["grad"] is None for lk in before["links"])
    assert all(u["unit_grad"] is None and u["bias_grad"] is None
               for c in before["columns"] for u in c["units"])
    t.step()
    m = t.model
    snap = network_snapshot(m, t.data, grid=4)
    assert snap["has_grad"] is True
    cols, links = snap["columns"], snap["links"]
    readers = [m.fc1.linear.weight, m.res1.proj.weight, m.res2.body.linear1.weight, m.out.weight]
    for lk, w in zip(links, readers):
        n_dst, n_src = as_array(lk["weight"]).shape
        if lk["kind"] == "identity":
            assert lk["grad"] is None
        else:
            np.testing.assert_array_equal(as_array(lk["grad"]),
                                          w.grad[:n_dst, :n_src].abs().numpy())
        # unit_grad: column norm of the gradient of the matrix that reads the column
        src = cols[lk["src"]]
        expected = w.grad[:, :src["shown"]].norm(dim=0).numpy()
        np.testing.assert_allclose([u["unit_grad"] for u in src["units"]], expected, rtol=1e-6)
    np.testing.assert_array_equal([u["bias_grad"] for u in cols[1]["units"]],
                                  m.fc1.linear.bias.grad[:12].abs().numpy())
    np.testing.assert_array_equal([u["bias_grad"] for u in cols[2]["units"]],
                                  m.res1.proj.bias.grad[:8].abs().numpy())
    assert all(u["unit_grad"] is None for u in cols[-1]["units"])
    np.testing.assert_array_equal([u["bias_grad"] for u in cols[-1]["units"]],
                                  m.out.bias.grad.abs().numpy())


def test_snapshot_changes_nothing(resbn):
    t = resbn
    model = t.model
    assert model.training  # left in train mode by its last step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    gens = [m.generator for m in model.modules() if getattr(m, "generator", None) is not None]
    gens.append(t.batches.gen)
    gen_states = [g.get_state() for g in gens]
    global_rng, np_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
    assert len(gens) == 2 and any(k.endswith("running_mean") for k in state)

    network_snapshot(model, t.data)

    after = model.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k  # weights and BatchNorm buffers, bit for bit
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(g.get_state(), s) for g, s in zip(gens, gen_states))
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert (np.random.get_state()[1] == np_rng).all()
    model.eval()  # an eval-mode model stays in eval mode
    network_snapshot(model, t.data, grid=4)
    assert not any(m.training for m in model.modules())
    model.train()


# ----------------------------------------------------------------------------- the figure


def counts(fig):
    hover = fig["data"][-1]  # neurons
    links = fig["data"][-2]  # link midpoints
    return len(fig["layout"]["images"]), len(hover["x"]), len(links["x"])


def test_figure_default_net(default):
    snap = network_snapshot(default.model, default.data)
    for color_by in ("weight", "gradient"):
        fig = network_figure(snap, color_by, revision="r1")
        text = json.dumps(fig, allow_nan=False)
        assert len(text) < 300_000
        assert fig["layout"]["uirevision"] == "r1"
        assert counts(fig) == (2 + 12 + 12 + 3, 29, 2 * 12 + 12 * 12 + 12 * 3)
        segments = sum(tr["x"].count(None) for tr in fig["data"][:-2])
        assert segments == 2 * 12 + 12 * 12 + 12 * 3  # every link drawn once
        assert all(img["source"].startswith("data:image/png;base64,")
                   for img in fig["layout"]["images"])
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert texts.count("+52 more") == 2
    with pytest.raises(ValueError):
        network_figure(snap, "size")


def test_figure_residual_identity_links_and_no_grad_yet():
    t = trainer(RES_BN)
    snap = network_snapshot(t.model, t.data, grid=8)
    fig = network_figure(snap, "gradient")  # before any step: drawn grey, says so
    json.dumps(fig, allow_nan=False)
    assert "no gradient" in fig["layout"]["title"]["text"]
    # identity links: one per unit (the diagonal), not 8 x 8
    assert counts(fig) == (2 + 12 + 8 + 8 + 3, 33, 2 * 12 + 12 * 8 + 8 + 8 * 3)
    dotted = [tr for tr in fig["data"] if tr.get("line", {}).get("dash") == "dot"]
    assert sum(tr["x"].count(None) for tr in dotted) == 8


def test_figure_many_layers_and_digits():
    t = trainer(load_preset("deep_relu_he")["config"])
    snap = network_snapshot(t.model, t.data)
    assert len(snap["columns"]) == 32
    fig = network_figure(snap, max_columns=8)
    text = json.dumps(fig, allow_nan=False)
    assert len(text) < 300_000
    titles = [a["text"] for a in fig["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert len(titles) == 7 + 1  # 4 first + 3 last columns + the "…" slot
    assert any("25 more layers" in a["text"] for a in fig["layout"]["annotations"])
    # links only between neighbours: inputs-fc1-fc2-fc3, fc29-fc30-out
    assert counts(fig) == (2 + 12 * 5 + 3, 65, 2 * 12 + 12 * 12 * 2 + 12 * 12 + 12 * 3)

    t = trainer(DIGITS)
    fig = network_figure(network_snapshot(t.model, t.data))
    json.dumps(fig, allow_nan=False)
    assert counts(fig) == (0, 12 + 12 + 10, 12 * 12 + 10 * 12)
    assert len(fig["data"][-1]["marker"]["color"]) == 34  # squares coloured by bias


def test_dead_units_are_framed():
    t = trainer({"model": {"layers": [6, 6]}})
    with torch.no_grad():
        t.model.fc2.linear.bias[2] = -1e3  # fc2 unit 2 is 0 on the whole plane: a dead ReLU
    t.step()
    snap = network_snapshot(t.model, t.data, grid=8)
    unit = snap["columns"][2]["units"][2]
    assert unit["range"] == [0.0, 0.0] and unit["unit_grad"] == 0.0  # out.weight.grad[:, 2]
    for color_by in ("weight", "gradient"):
        marker = network_figure(snap, color_by)["data"][-1]["marker"]
        border = marker["line"]["color"]
        assert border[2 + 6 + 2] == "#d62728"
        assert sum(b == "#d62728" for b in border) == 1


@pytest.mark.gpu
def test_cuda_model_snapshot_matches_cpu_and_changes_nothing():
    gpu = trainer({**RES_BN, "device": "cuda"}, steps=2)
    cpu = trainer({**RES_BN, "device": "cpu"})
    cpu.model.load_state_dict(gpu.model.state_dict())  # the same weights and BatchNorm stats
    assert next(gpu.model.parameters()).is_cuda
    state = {k: v.clone() for k, v in gpu.model.state_dict().items()}
    snap, ref = network_snapshot(gpu.model, gpu.data, grid=8), network_snapshot(cpu.model,
                                                                               cpu.data, grid=8)
    assert all(torch.equal(gpu.model.state_dict()[k], v) for k, v in state.items())
    assert gpu.model.training and snap["has_grad"]
    json.dumps(network_figure(snap, "gradient"), allow_nan=False)
    for a, b in zip(snap["columns"], ref["columns"]):
        np.testing.assert_allclose(np.stack([as_array(u["map"]) for u in a["units"]]),
                                   np.stack([as_array(u["map"]) for u in b["units"]]),
                                   rtol=1e-3, atol=1e-3)
