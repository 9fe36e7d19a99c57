"""Datasets: shapes, labels, determinism, geometry at noise 0, features, normalisation fitted on
the train split only, split sizes, digits, and CSV files with clear errors."""
import math

import pytest
import torch

from engine import ExperimentSpec, SpecError
from engine.core.registry import DATASETS
from engine.core.spec import DataSpec
from engine.data.datasets import load_dataset

PLANE = DATASETS.where(input="plane")
CLASSIFICATION_2D = [k for k in PLANE if DATASETS[k].tags["task"] == "classification"]
REGRESSION_2D = [k for k in PLANE if DATASETS[k].tags["task"] == "regression"]


def load(seed=0, **data):
    return load_dataset(DataSpec.from_dict(data), seed)


def raw(name, seed=0, **data):
    """All points (train + val + test) in their raw coordinates, with their targets."""
    ds = load(seed, name=name, normalize="none", val_fraction=0.0, **data)
    return ds.points["train"], ds.y_train


def test_the_2d_sets_tested_by_name_are_registered_with_their_task():
    """The geometry tests below name these sets; a new 2-D set is one registry entry and joins
    the parametrized tests through its tags, with no list here to edit."""
    assert {"circle", "xor", "gaussians", "spiral", "moons"} <= set(CLASSIFICATION_2D)
    assert {"plane", "multi_gaussian"} <= set(REGRESSION_2D)


@pytest.mark.parametrize("name", CLASSIFICATION_2D)
def test_classification_sets_shapes_and_labels(name):
    ds = load(name=name, n=200, val_fraction=0.2, test_fraction=0.1)
    classes = DataSpec.from_dict({"name": name}).classes
    assert ds.task == "classification" and ds.classes == classes == ds.out_dim
    assert ds.in_shape == (2,)
    assert ds.x_train.shape == (140, 2) and ds.x_val.shape == (40, 2) and ds.x_test.shape == (20, 2)
    y = torch.cat([ds.y_train, ds.y_val, ds.y_test])
    assert y.dtype == torch.long and y.shape == (200,)
    assert y.min() >= 0 and y.max() < classes
    counts = torch.bincount(y, minlength=classes)
    assert (counts > 0.3 * 200 / classes).all(), f"classes are badly unbalanced: {counts}"
    assert torch.isfinite(ds.x_train).all()


@pytest.mark.parametrize("name", ["gaussians", "spiral"])
def test_class_count_is_a_parameter(name):
    for k in (2, 5, 8):
        _, y = raw(name, classes=k, n=400)
        assert sorted(y.unique().tolist()) == list(range(k))


@pytest.mark.parametrize("name", REGRESSION_2D)
def test_regression_sets_shapes(name):
    ds = load(name=name, n=100, val_fraction=0.2)
    assert ds.task == "regression" and ds.classes is None and ds.out_dim == 1
    assert ds.y_train.shape == (80, 1) and ds.y_train.dtype == torch.float32


@pytest.mark.parametrize("name", PLANE + ["digits"])
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = load(3, name=name, n=100), load(3, name=name, n=100), load(4, name=name, n=100)
    for split in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert not torch.equal(a.x_train, c.x_train)


def test_data_does_not_depend_on_the_rest_of_the_spec():
    a = ExperimentSpec.from_dict({"seed": 2, "model": {"layers": [8]}})
    b = ExperimentSpec.from_dict({"seed": 2, "model": {"layers": [32, 32]},
                                  "training": {"batch_size": 7}})
    da, db = load_dataset(a.data, a.seed), load_dataset(b.data, b.seed)
    assert torch.equal(da.x_train, db.x_train) and torch.equal(da.y_val, db.y_val)


# ----------------------------------------------------------------------------- geometry (noise 0)


def test_circle_geometry():
    x, y = raw("circle", n=400, noise=0.0)
    r = x.norm(dim=1)
    assert (r[y == 0] <= 0.5 + 1e-6).all()
    assert ((r[y == 1] >= 0.7 - 1e-6) & (r[y == 1] <= 1.0 + 1e-6)).all()
    assert (y == 0).sum() == 200


def test_xor_geometry():
    x, y = raw("xor", n=400, noise=0.0)
    assert torch.equal(y, (x[:, 0] * x[:, 1] > 0).long())
    assert (x.abs() >= 0.1 - 1e-6).all() and (x.abs() <= 1.1 + 1e-6).all()  # margin round axes
    for sx in (-1, 1):  # every quadrant is populated
        for sy in (-1, 1):
            assert ((x[:, 0] * sx > 0) & (x[:, 1] * sy > 0)).sum() > 50


def test_gaussians_at_noise_zero_sit_on_their_centres():
    x, y = raw("gaussians", n=90, noise=0.0, classes=3)
    angle = 2 * math.pi * y.float() / 3
    centres = 0.6 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    torch.testing.assert_close(x, centres)


def test_spiral_geometry():
    x, y = raw("spiral", n=300, noise=0.0, classes=3)
    t = x.norm(dim=1)  # radius = position along the arm
    assert (t <= 1 + 1e-6).all()
    angle = 2 * math.pi * y.float() / 3 + 4.0 * t
    torch.testing.assert_close(x, torch.stack([t * torch.sin(angle), t * torch.cos(angle)], 1),
                               atol=1e-5, rtol=0)


def test_moons_geometry():
    x, y = raw("moons", n=200, noise=0.0)
    p = x / 0.8 + torch.tensor([0.5, 0.25])  # undo the centring and scaling
    upper, lower = p[y == 0], p[y == 1]
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(len(upper)))
    assert (upper[:, 1] >= -1e-6).all()
    torch.testing.assert_close((lower - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(len(lower)))
    assert (lower[:, 1] <= 0.5 + 1e-6).all()


def test_plane_target_is_exact_at_noise_zero():
    x, y = raw("plane", n=200, noise=0.0)
    torch.testing.assert_close(y[:, 0], 0.6 * x[:, 0] - 0.4 * x[:, 1])
    assert (x.abs() <= 1).all()


def test_plane_noise_has_the_requested_std():
    x, y = raw("plane", n=20000, noise=0.3)
    residual = y[:, 0] - (0.6 * x[:, 0] - 0.4 * x[:, 1])
    assert residual.std().item() == pytest.approx(0.3, rel=0.03)
    assert abs(residual.mean().item()) < 0.02


def test_multi_gaussian_target_at_noise_zero():
    x, y = raw("multi_gaussian", n=200, noise=0.0)
    bumps = [((-0.5, -0.5), 1.0), ((0.5, 0.5), 1.0), ((-0.5, 0.5), -1.0), ((0.5, -0.5), -1.0),
             ((0.0, 0.0), 0.5)]
    expected = sum(s * torch.exp(-((x[:, 0] - cx) ** 2 + (x[:, 1] - cy) ** 2) / (2 * 0.25 ** 2))
                   for (cx, cy), s in bumps)
    torch.testing.assert_close(y[:, 0], expected)


# ----------------------------------------------------------------------------- features


def test_features_are_computed_from_the_raw_point():
    feats = ["x1", "x2", "x1_sq", "x2_sq", "x1_x2", "sin_x1", "sin_x2"]
    ds = load(name="circle", n=100, normalize="none", features=feats)
    p = ds.points["train"]
    x1, x2 = p[:, 0], p[:, 1]
    expected = torch.stack([x1, x2, x1 ** 2, x2 ** 2, x1 * x2, torch.sin(3 * x1),
                            torch.sin(3 * x2)], 1)
    torch.testing.assert_close(ds.x_train, expected)
    torch.testing.assert_close(ds.x_val, torch.stack(
        [ds.points["val"][:, 0], ds.points["val"][:, 1], ds.points["val"][:, 0] ** 2,
         ds.points["val"][:, 1] ** 2, ds.points["val"][:, 0] * ds.points["val"][:, 1],
         torch.sin(3 * ds.points["val"][:, 0]), torch.sin(3 * ds.points["val"][:, 1])], 1))
    assert ds.in_shape == (7,)


def test_feature_order_and_subset():
    ds = load(name="xor", n=100, normalize="none", features=["x1_x2", "x1"])
    p = ds.points["train"]
    torch.testing.assert_close(ds.x_train, torch.stack([p[:, 0] * p[:, 1], p[:, 0]], 1))


def test_encode_maps_raw_points_like_the_training_inputs():
    ds = load(name="circle", n=100, features=["x1", "x1_sq", "x2_sq"])
    torch.testing.assert_close(ds.encode(ds.points["train"]), ds.x_train)
    torch.testing.assert_close(ds.encode(ds.points["val"]), ds.x_val)


# ----------------------------------------------------------------------------- normalisation


def test_standard_normalisation_uses_train_statistics_only():
    ds = load(name="moons", n=300, normalize="standard", val_fraction=0.3, test_fraction=0.2,
              features=["x1", "x2", "x1_sq"])
    torch.testing.assert_close(ds.x_train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(ds.x_train.std(0), torch.ones(3), atol=1e-5, rtol=0)
    p = ds.points["train"]
    f_train = torch.stack([p[:, 0], p[:, 1], p[:, 0] ** 2], 1)
    mean, std = f_train.mean(0), f_train.std(0)
    for split in ("val", "test"):
        q = ds.points[split]
        f = torch.stack([q[:, 0], q[:, 1], q[:, 0] ** 2], 1)
        torch.testing.assert_close(getattr(ds, f"x_{split}"), (f - mean) / std)
    # val/test statistics are not forced to 0/1 (they would be if fitted on all the data)
    assert ds.x_val.mean(0).abs().max() > 1e-3


def test_minmax_normalisation_uses_the_train_range():
    ds = load(name="plane", n=200, normalize="minmax", val_fraction=0.3)
    torch.testing.assert_close(ds.x_train.amin(0), torch.zeros(2))
    torch.testing.assert_close(ds.x_train.amax(0), torch.ones(2))
    p = ds.points["train"]
    lo, hi = p.amin(0), p.amax(0)
    torch.testing.assert_close(ds.x_val, (ds.points["val"] - lo) / (hi - lo))


def test_no_normalisation_keeps_raw_values_and_targets_are_never_scaled():
    a = load(name="plane", n=100, normalize="none")
    b = load(name="plane", n=100, normalize="standard")
    torch.testing.assert_close(a.x_train, a.points["train"])
    assert torch.equal(a.y_train, b.y_train)


def test_constant_feature_is_left_unscaled_not_divided_by_zero():
    # at noise 0 every gaussian point of class k is its centre; two classes: x2 = 0 +- 0
    ds = load(name="gaussians", n=40, noise=0.0, classes=2, features=["x1", "x2"])
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_val).all()


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("n,val,test", [(400, 0.2, 0.1), (101, 0.25, 0.0), (50, 0.0, 0.3),
                                        (37, 0.5, 0.4)])
def test_split_sizes_are_disjoint_and_cover_everything(n, val, test):
    ds = load(name="spiral", n=n, val_fraction=val, test_fraction=test, noise=0.1)
    n_test, n_val = round(n * test), round(n * val)
    assert len(ds.y_test) == n_test and len(ds.y_val) == n_val
    assert len(ds.y_train) == n - n_test - n_val
    pts = torch.cat([ds.points["train"], ds.points["val"], ds.points["test"]])
    assert len(torch.unique(pts, dim=0)) == n  # disjoint: no point appears twice
    everything, _ = raw("spiral", n=n, noise=0.1)
    assert torch.equal(torch.sort(pts[:, 0]).values, torch.sort(everything[:, 0]).values)


def test_split_is_shuffled():
    ds = load(name="gaussians", n=300, classes=3, val_fraction=0.3)
    # generated in class order 0,1,2,0,1,2...; a shuffled split breaks that pattern
    assert not torch.equal(ds.y_train[:30], torch.arange(30) % 3)
    assert len(ds.y_val.unique()) == 3


# ----------------------------------------------------------------------------- digits


def test_digits():
    ds = load(name="digits", n=200, normalize="none", val_fraction=0.25)
    assert ds.x_train.shape == (150, 1, 8, 8) and ds.x_val.shape == (50, 1, 8, 8)
    assert ds.in_shape == (1, 8, 8) and ds.classes == 10 and ds.out_dim == 10
    x = torch.cat([ds.x_train, ds.x_val])
    assert x.min() >= 0 and x.max() <= 16 and torch.equal(x, x.round())  # raw 0..16 ints
    y = torch.cat([ds.y_train, ds.y_val])
    assert y.min() >= 0 and y.max() <= 9 and len(y.unique()) == 10
    full = load(name="digits", normalize="none", val_fraction=0.0)
    assert full.x_train.shape == (1797, 1, 8, 8)


def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    ds = load(name="digits", n=60, normalize="none", val_fraction=0.0)
    images = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    for img, label in zip(ds.x_train[:10], ds.y_train[:10]):
        match = (images == img).flatten(1).all(1).nonzero()[:, 0]
        assert len(match) >= 1 and label.item() in bunch.target[match.numpy()].tolist()


def test_digits_standardised_per_pixel_on_train():
    ds = load(name="digits", n=300, normalize="standard")
    m = ds.x_train.mean(0)
    assert m.abs().max() < 1e-4
    s = ds.x_train.std(0)
    varying = s > 0
    torch.testing.assert_close(s[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- CSV


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def table(rows=20, extra=None, target=lambda i: i % 2):
    lines = ["a,b,label"]
    for i in range(rows):
        lines.append(f"{i * 0.5},{(i * 7) % 5 - 2.25},{target(i)}")
    text = "\n".join(lines) + "\n"
    return text if extra is None else extra(text)


def csv_data(path, target="label", task="classification", **kw):
    return load_dataset(DataSpec.from_dict({"name": "csv", "path": path, "target": target,
                                            "task": task, "normalize": "none", **kw}), 0)


def test_csv_classification(tmp_path):
    path = write(tmp_path, table(target=lambda i: [3, 7, 11][i % 3]))
    ds = csv_data(path, val_fraction=0.0)
    assert ds.task == "classification" and ds.classes == 3 and ds.in_shape == (2,)
    # labels 3, 7, 11 become class indices 0, 1, 2
    assert sorted(ds.y_train.unique().tolist()) == [0, 1, 2]
    order = torch.argsort(ds.x_train[:, 0])
    torch.testing.assert_close(ds.x_train[order, 0], torch.arange(20) * 0.5)
    assert ds.y_train[order].tolist() == [i % 3 for i in range(20)]


def test_csv_regression(tmp_path):
    path = write(tmp_path, table(target=lambda i: i * 1.5 - 2))
    ds = csv_data(path, task="regression", val_fraction=0.0)
    assert ds.task == "regression" and ds.y_train.shape == (20, 1)
    order = torch.argsort(ds.x_train[:, 0])
    torch.testing.assert_close(ds.y_train[order, 0], torch.arange(20) * 1.5 - 2)


def test_csv_trains_through_the_trainer(tmp_path):
    from engine import Trainer
    path = write(tmp_path, table())
    spec = ExperimentSpec.from_dict({"data": {"name": "csv", "path": path, "target": "label"},
                                     "model": {"layers": [4]}, "training": {"steps": 2}})
    trainer = Trainer(spec).run()
    assert trainer.stopped == "completed"


@pytest.mark.parametrize("make,target,task,expected", [
    # a text column: named, with a text value from it
    (lambda: table(extra=lambda t: t.replace("\n3.0,", "\n3.0x,")), "label", "classification",
     ["column 'a'", "not numeric", "3.0x"]),
    (lambda: "a,name,label\n" + "".join(f"{i},n{i},{i % 2}\n" for i in range(12)), "label",
     "classification", ["column 'name'", "not numeric", "'n0'"]),
    # a True/False column is not numeric either (and must not crash)
    (lambda: "a,flag,label\n" + "".join(f"{i},{i % 2 == 0},{i % 2}\n" for i in range(12)),
     "label", "classification", ["column 'flag'", "not numeric", "True"]),
    # missing values: column and line (header is line 1, first data row line 2)
    (lambda: table(extra=lambda t: t.replace("\n2.0,", "\n,")), "label", "classification",
     ["column 'a'", "1 missing", "line 6"]),
    (lambda: table(extra=lambda t: t.replace("\n2.0,", "\n,").replace("\n3.0,", "\n,")), "label",
     "classification", ["column 'a'", "2 missing", "line 6"]),
    (lambda: "a,b,label\n" + "".join(f"{i},1.5,{i % 2}\n" for i in range(12)), "label",
     "classification", ["column 'b'", "same value"]),
    (lambda: table(), "y", "classification", ["data.target", "'y'", "a, b, label"]),
    (lambda: table(target=lambda i: i * 0.5 + 0.25), "label", "classification",
     ["'label'", "non-integer", "regression"]),
    (lambda: table(target=lambda i: 1), "label", "classification", ["'label'", "1 distinct"]),
    (lambda: table(rows=5), "label", "classification", ["5 rows", "at least 10"]),
    (lambda: "label\n" + "".join(f"{i % 2}\n" for i in range(12)), "label", "classification",
     ["input column"]),
    (lambda: "", "label", "classification", ["data.path", "cannot read"]),
])
def test_csv_errors_are_clear(tmp_path, make, target, task, expected):
    path = write(tmp_path, make())
    with pytest.raises(SpecError) as e:
        csv_data(path, target=target, task=task)
    msg = str(e.value)
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_csv_missing_file(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(SpecError) as e:
        csv_data(missing)
    assert "data.path" in str(e.value) and "nope.csv" in str(e.value)


def test_csv_errors_reach_the_trainer_as_spec_errors(tmp_path):
    from engine import Trainer
    path = write(tmp_path, table(extra=lambda t: t.replace("\n2.0,", "\n,")))
    spec = ExperimentSpec.from_dict({"data": {"name": "csv", "path": path, "target": "label"}})
    with pytest.raises(SpecError, match="missing"):
        Trainer(spec)


def test_csv_text_labels_become_classes_in_sorted_order_with_their_names(tmp_path):
    path = write(tmp_path, table(target=lambda i: ["dog", "cat", "emu"][i % 3]))
    ds = csv_data(path, val_fraction=0.0)
    assert ds.classes == 3 and ds.class_names == ("cat", "dog", "emu")
    assert ds.input_names == ("a", "b")
    # row i is dog, cat, emu in turn: classes 1, 0, 2
    raw = load_dataset(DataSpec.from_dict({"name": "csv", "path": path, "target": "label",
                                           "val_fraction": 0.0, "normalize": "none"}), 0)
    order = raw.x_train[:, 0] * 2  # column a is i * 0.5
    assert all(int(c) == [1, 0, 2][int(i) % 3] for i, c in zip(order, raw.y_train))


def test_csv_columns_can_be_left_out(tmp_path):
    path = write(tmp_path, table())
    ds = csv_data(path, ignore=["b"])
    assert ds.in_shape == (1,) and ds.input_names == ("a",)
    for bad, words in [(["nope"], ["data.ignore", "'nope'", "not a column"]),
                       (["label"], ["data.ignore", "the target"])]:
        with pytest.raises(SpecError) as e:
            csv_data(path, ignore=bad)
        assert all(w in str(e.value) for w in words), str(e.value)


def test_a_text_column_is_fine_once_left_out(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,a,b,label\n" + "".join(f"r{i},{i},{(i * 7) % 5},{i % 2}\n"
                                              for i in range(30)))
    with pytest.raises(SpecError, match="column 'id' is not numeric.*leave it out"):
        csv_data(str(path))
    assert csv_data(str(path), ignore=["id"]).input_names == ("a", "b")


def test_a_true_false_target_is_two_classes(tmp_path):
    """Found in review: a bool column was refused with advice to pick the task it had."""
    path = tmp_path / "b.csv"
    path.write_text("a,b,survived\n" + "".join(f"{i},{(i * 7) % 5},{'True' if i % 3 else 'False'}\n"
                                              for i in range(30)))
    ds = csv_data(str(path), target="survived", val_fraction=0.0)
    assert ds.classes == 2 and ds.class_names == ("False", "True")
    with pytest.raises(SpecError) as e:
        csv_data(str(path), target="survived", task="regression")
    assert "needs data.task 'classification'" in str(e.value)
