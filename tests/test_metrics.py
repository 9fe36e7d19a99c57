"""engine.lab.metrics against scikit-learn as the oracle: random labels and scores with ties, a class
never predicted, a class absent from the labels; then reports of real short runs."""
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from engine import ExperimentSpec, SpecError, Trainer
from engine.core.portable import predict_classes
from engine.lab import metrics

SEEDS = range(5)
# random cases: seed, classes, and whether a class is missing from the labels or predictions
CASES = [(seed, k, gaps) for seed in SEEDS for k in (2, 4) for gaps in (False, True)]


def random_case(seed, k, gaps=False, n=200):
    """Random labels, predictions and probabilities rounded to two decimals, so that many
    examples tie. gaps: class k-1 never occurs and class 0 is never predicted."""
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(0, k - 1 if gaps else k, (n,), generator=g)
    y_pred = torch.randint(1 if gaps else 0, k, (n,), generator=g)
    logits = 2 * torch.randn(n, k, generator=g, dtype=torch.float64)
    probs = (logits.softmax(1) * 100).round() / 100
    return y_true, y_pred, probs


def close(a, b):
    """Equal as floats, NaN equal to NaN."""
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=1e-12, atol=1e-12)


def quiet(fn, *args, **kw):
    """scikit-learn warns where a curve is undefined; the value is what is compared."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("seed,k,gaps", CASES)
def test_confusion_matrix_matches_sklearn(seed, k, gaps):
    y_true, y_pred, _ = random_case(seed, k, gaps)
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    assert cm.dtype == torch.int64 and cm.shape == (k, k)
    np.testing.assert_array_equal(cm.numpy(), sk.confusion_matrix(y_true, y_pred,
                                                                  labels=range(k)))


def test_confusion_matrix_rows_are_true_classes():
    cm = metrics.confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 1]), 3)
    assert cm.tolist() == [[0, 2, 0], [0, 1, 0], [0, 0, 0]]


def test_confusion_matrix_refuses_labels_out_of_range():
    with pytest.raises(ValueError, match="0..2"):
        metrics.confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


@pytest.mark.parametrize("seed,k,gaps", CASES)
def test_per_class_matches_sklearn(seed, k, gaps):
    y_true, y_pred, _ = random_case(seed, k, gaps)
    table = metrics.per_class(y_true, y_pred, k)
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(k),
                                                    zero_division=0)
    close(table["precision"], p)
    close(table["recall"], r)
    close(table["f1"], f)
    assert table["support"] == s.tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(k),
                                                        zero_division=0, average=average)
        close([table[average][m] for m in ("precision", "recall", "f1")], [p, r, f])
    if gaps:  # the zero_division rule: class 0 is never predicted, class k-1 never occurs
        assert table["precision"][0] == 0.0 and table["support"][k - 1] == 0
        assert table["recall"][k - 1] == 0.0
    else:
        assert min(table["support"]) > 0


# ----------------------------------------------------------------------------- curves


def binary_case(seed, n=300):
    y_true, _, probs = random_case(seed, 3, n=n)
    scores, positives = probs[:, 0], y_true == 0
    assert len(torch.unique(scores)) < n // 2  # the point of the case: many tied scores
    return scores, positives


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_curve_and_auc_match_sklearn(seed):
    scores, positives = binary_case(seed)
    fpr, tpr, thresholds = metrics.roc_curve(scores, positives)
    want = sk.roc_curve(positives.numpy(), scores.numpy(), drop_intermediate=False)
    for got, expected in zip((fpr, tpr, thresholds), want):
        np.testing.assert_array_equal(got.numpy(), expected)
    area = metrics.auc(fpr, tpr)
    assert area == pytest.approx(sk.auc(want[0], want[1]), abs=1e-12)
    assert area == pytest.approx(sk.roc_auc_score(positives.numpy(), scores.numpy()), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_pr_curve_and_average_precision_match_sklearn(seed):
    scores, positives = binary_case(seed)
    got = metrics.pr_curve(scores, positives)
    want = sk.precision_recall_curve(positives.numpy(), scores.numpy())
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b)
    assert metrics.average_precision(scores, positives) == pytest.approx(
        sk.average_precision_score(positives.numpy(), scores.numpy()), abs=1e-12)


def test_tied_scores_make_one_point():
    fpr, tpr, thresholds = metrics.roc_curve([0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0])
    assert fpr.tolist() == [0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0]
    assert thresholds.tolist() == [float("inf"), 0.5, 0.2]
    precision, recall, thresholds = metrics.pr_curve([0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0])
    assert precision.tolist() == [0.5, 2 / 3, 1.0] and recall.tolist() == [1.0, 1.0, 0.0]
    assert thresholds.tolist() == [0.2, 0.5]


@pytest.mark.parametrize("positives", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_curves_with_one_kind_of_example_match_sklearn(positives):
    scores = [0.1, 0.4, 0.4, 0.9]
    roc = metrics.roc_curve(scores, positives)
    for got, want in zip(roc, quiet(sk.roc_curve, positives, scores, drop_intermediate=False)):
        np.testing.assert_array_equal(got.numpy(), want)  # NaN where the rate is undefined
    for got, want in zip(metrics.pr_curve(scores, positives),
                         quiet(sk.precision_recall_curve, positives, scores)):
        np.testing.assert_array_equal(got.numpy(), want)
    assert metrics.average_precision(scores, positives) == pytest.approx(
        quiet(sk.average_precision_score, positives, scores), abs=1e-12)


def test_auc_follows_either_direction_and_refuses_a_zigzag():
    x, y = [1.0, 0.6, 0.2, 0.0], [1.0, 0.7, 0.7, 0.1]
    assert metrics.auc(x, y) == pytest.approx(sk.auc(x, y), abs=1e-12) and metrics.auc(x, y) > 0
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        metrics.auc([0.0, 1.0, 0.5], [0.0, 1.0, 1.0])


@pytest.mark.parametrize("seed,k,gaps", CASES)
def test_one_vs_rest_matches_sklearn(seed, k, gaps):
    y_true, _, probs = random_case(seed, k, gaps)
    rows = metrics.one_vs_rest(probs, y_true, k)
    assert [row["class"] for row in rows] == list(range(k))
    for c, row in enumerate(rows):
        positives, scores = (y_true == c).numpy(), probs[:, c].numpy()
        for got, want in zip(row["roc"], quiet(sk.roc_curve, positives, scores,
                                                drop_intermediate=False)):
            np.testing.assert_array_equal(got.numpy(), want)
        for got, want in zip(row["pr"], quiet(sk.precision_recall_curve, positives, scores)):
            np.testing.assert_array_equal(got.numpy(), want)
        if 0 < positives.sum() < len(positives):
            assert row["auc"] == pytest.approx(sk.roc_auc_score(positives, scores), abs=1e-12)
        else:  # scikit-learn warns that the ROC AUC is not defined, and gives NaN
            assert row["auc"] is None and np.isnan(quiet(sk.roc_auc_score, positives, scores))
        if positives.any():
            assert row["ap"] == pytest.approx(sk.average_precision_score(positives, scores),
                                              abs=1e-12)
        else:  # scikit-learn warns and gives 0, a number that means nothing here
            assert row["ap"] is None
    if gaps:  # class k-1 never occurs; with k=2 class 0 is then every example
        assert rows[k - 1]["auc"] is None and rows[k - 1]["ap"] is None
    if not gaps or k == 4:
        assert all(row["auc"] is not None for row in rows[:k - 1])


# ----------------------------------------------------------------------------- real runs


def trained(config):
    spec = ExperimentSpec.from_dict(config)
    trainer = Trainer(spec)
    trainer.run(spec.training.steps)
    return trainer


@pytest.fixture(scope="module")
def digits():
    return trained({"seed": 0, "data": {"name": "digits", "n": 300, "test_fraction": 0.2},
                    "model": {"layers": [16, {"type": "dropout", "p": 0.5}]},
                    "training": {"steps": 30}})


@pytest.fixture(scope="module")
def circle():
    # 2,400 training examples: long enough curves that the report thins them
    return trained({"seed": 0, "data": {"name": "circle", "n": 3000}, "loss": "bce",
                    "model": {"layers": [8]}, "training": {"steps": 30}})


def engine_view(trainer, split):
    """Labels, probabilities and predicted classes computed here, straight from the model."""
    x, y = getattr(trainer.data, f"x_{split}"), getattr(trainer.data, f"y_{split}")
    with torch.no_grad():
        trainer.model.eval()
        out = trainer.model(x)
        trainer.model.train()
    probs = trainer.predict(x)
    return y.numpy(), probs.numpy().astype(np.float64), predict_classes(out, trainer.binary).numpy()


def check_report_against_sklearn(trainer, split, r):
    y, probs, pred = engine_view(trainer, split)
    k = trainer.data.classes
    acc = trainer.evaluate(split)["acc"]
    # evaluate() divides in float32: the same count of correct answers, not the same bits
    assert r["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert round(r["accuracy"] * len(y)) == round(acc * len(y)) == int((pred == y).sum())
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert r["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=range(k)).tolist()
    p, rec, f, s = sk.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    close(r["per_class"]["precision"], p)
    close(r["per_class"]["recall"], rec)
    close(r["per_class"]["f1"], f)
    assert r["per_class"]["support"] == s.tolist()
    for c, row in enumerate(r["one_vs_rest"]):
        positives = y == c
        if positives.any() and not positives.all():
            assert row["auc"] == pytest.approx(sk.roc_auc_score(positives, probs[:, c]), abs=1e-9)
        if positives.any():
            assert row["ap"] == pytest.approx(
                sk.average_precision_score(positives, probs[:, c]), abs=1e-9)
    return y, probs


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_digits_report_matches_the_engine_and_sklearn(digits, split):
    r = metrics.report(digits, split)
    y, probs = check_report_against_sklearn(digits, split, r)
    assert r["classes"] == 10 and r["class_names"] == [str(c) for c in range(10)]
    assert r["examples"] == len(y) and r["split"] == split and r["threshold"] is None
    if len(np.unique(y)) == 10:
        assert r["auc"] == pytest.approx(sk.roc_auc_score(y, probs, multi_class="ovr"),
                                         abs=1e-9)
    else:
        assert r["auc"] is None
    json.dumps(r, allow_nan=False)  # plain JSON: no NaN, no Infinity


@pytest.mark.parametrize("split", ["train", "val"])
def test_binary_report_matches_the_engine_and_sklearn(circle, split):
    r = metrics.report(circle, split)
    y, probs = check_report_against_sklearn(circle, split, r)
    assert r["auc"] == pytest.approx(sk.roc_auc_score(y, probs[:, 1]), abs=1e-9)
    assert r["ap"] == pytest.approx(sk.average_precision_score(y, probs[:, 1]), abs=1e-9)
    json.dumps(r, allow_nan=False)


def test_class_scores_are_the_engines_probabilities(circle, digits):
    x = circle.data.x_val
    scores = metrics.class_scores(circle, "val")
    with torch.no_grad():
        circle.model.eval()
        p = torch.sigmoid(circle.model(x)[:, 0])
        circle.model.train()
    assert scores.shape == (len(x), 2)
    torch.testing.assert_close(scores[:, 1], p)
    torch.testing.assert_close(scores[:, 0], 1 - p)
    torch.testing.assert_close(metrics.class_scores(digits, "val"),
                               digits.predict(digits.data.x_val))


@pytest.mark.parametrize("training", [True, False])
def test_class_scores_run_in_eval_mode_and_restore_the_mode(digits, training):
    digits.model.train(training)
    first = metrics.class_scores(digits, "val")
    # dropout p=0.5 in this model: two passes in training mode could not agree
    assert torch.equal(first, metrics.class_scores(digits, "val"))
    assert not first.requires_grad
    metrics.report(digits, "val")
    assert digits.model.training == training
    digits.model.train()


def test_long_curves_are_thinned_but_scored_in_full(circle):
    r = metrics.report(circle, "train")
    y, probs, _ = engine_view(circle, "train")
    fpr, tpr, thresholds = sk.roc_curve(y, probs[:, 1], drop_intermediate=False)
    assert len(fpr) > metrics.CURVE_POINTS  # the case: a curve that must be thinned
    roc = r["one_vs_rest"][1]["roc"]
    assert 2 < len(roc["fpr"]) <= metrics.CURVE_POINTS
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert (roc["fpr"][0], roc["tpr"][0], roc["thresholds"][0]) == (0.0, 0.0, None)
    assert (roc["fpr"][-1], roc["tpr"][-1], roc["thresholds"][-1]) == (1.0, 1.0, thresholds[-1])
    points = set(zip(fpr.tolist(), tpr.tolist()))
    assert all(point in points for point in zip(roc["fpr"], roc["tpr"]))
    assert r["auc"] == pytest.approx(sk.auc(fpr, tpr), abs=1e-12)
    pr = r["one_vs_rest"][1]["pr"]
    precision, recall, _ = sk.precision_recall_curve(y, probs[:, 1])
    assert len(precision) > metrics.CURVE_POINTS
    assert 2 < len(pr["precision"]) <= metrics.CURVE_POINTS
    assert len(pr["thresholds"]) == len(pr["precision"]) - 1
    assert (pr["precision"][0], pr["recall"][0]) == (precision[0], recall[0])
    assert (pr["precision"][-1], pr["recall"][-1]) == (1.0, 0.0)
    assert r["ap"] == pytest.approx(sk.average_precision_score(y, probs[:, 1]), abs=1e-12)


# ----------------------------------------------------------------------------- threshold


def test_threshold_zero_predicts_everything_positive(circle):
    r = metrics.report(circle, "val", threshold=0.0)
    n = r["examples"]
    assert r["confusion_matrix"][0][0] == r["confusion_matrix"][1][0] == 0
    assert r["per_class"]["recall"][1] == 1.0 and r["per_class"]["precision"][0] == 0.0
    assert r["accuracy"] == pytest.approx(r["per_class"]["support"][1] / n)
    assert r["threshold"] == 0.0


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 1.0, "a score"])
def test_threshold_predicts_class_one_at_or_above_it(circle, threshold):
    y, probs, _ = engine_view(circle, "val")
    if threshold == "a score":  # an example right at the threshold counts as class 1
        threshold = float(np.sort(probs[:, 1])[len(probs) // 2])
        assert (probs[:, 1] == threshold).any()
    r = metrics.report(circle, "val", threshold=threshold)
    pred = (probs[:, 1] >= threshold).astype(int)
    assert r["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert r["auc"] == metrics.report(circle, "val")["auc"]  # the curves do not move


def test_the_threshold_point_lies_on_sklearns_curves(circle):
    """At a threshold equal to a score, the decision's (fpr, tpr) and (recall, precision) are
    points of scikit-learn's full curves for class 1."""
    y, probs, _ = engine_view(circle, "val")
    fpr, tpr, _ = sk.roc_curve(y, probs[:, 1], drop_intermediate=False)
    precision, recall, _ = sk.precision_recall_curve(y, probs[:, 1])
    for score in np.unique(probs[:, 1])[::7]:
        point = metrics.report(circle, "val", threshold=float(score))["threshold_point"]
        assert (np.isclose(fpr, point["roc"][0]) & np.isclose(tpr, point["roc"][1])).any()
        assert (np.isclose(recall, point["pr"][0]) & np.isclose(precision, point["pr"][1])).any(), \
            (score, point)
    # nothing called class 1: the PR curve's end; the ROC origin
    nothing = metrics.threshold_point([[10, 0], [5, 0]])
    assert nothing == {"roc": [0.0, 0.0], "pr": [0.0, 1.0]}
    assert (recall[-1], precision[-1]) == (0.0, 1.0)
    # a split without class 1: neither curve is defined
    assert metrics.threshold_point([[8, 2], [0, 0]]) == {"roc": None, "pr": None}
    assert metrics.report(circle, "val")["threshold_point"] is None


def test_mistakes_are_the_examples_off_the_diagonal(digits, circle):
    for trainer, threshold in ((digits, None), (circle, 0.9)):
        r = metrics.report(trainer, "val", threshold)
        wrong = metrics.mistakes(trainer, "val", threshold, limit=5)
        cm = np.asarray(r["confusion_matrix"])
        assert wrong["count"] == cm.sum() - np.trace(cm)
        y, probs, _ = engine_view(trainer, "val")
        pred = probs.argmax(1) if threshold is None else (probs[:, 1] >= threshold).astype(int)
        expected = np.nonzero(pred != y)[0][:5]
        assert wrong["index"] == expected.tolist()
        assert wrong["true"] == y[expected].tolist()
        assert wrong["predicted"] == pred[expected].tolist()


def test_predicted_classes_are_the_engines_or_the_thresholds(circle, digits):
    for trainer in (circle, digits):
        _, _, pred = engine_view(trainer, "val")
        np.testing.assert_array_equal(metrics.predicted_classes(trainer, "val").numpy(), pred)
    _, probs, _ = engine_view(circle, "val")
    np.testing.assert_array_equal(metrics.predicted_classes(circle, "val", 0.7).numpy(),
                                  (probs[:, 1] >= 0.7).astype(int))


def test_a_threshold_changes_the_predictions(circle):
    low, high = (metrics.report(circle, "val", threshold=t)["confusion_matrix"]
                 for t in (0.2, 0.8))
    assert low != high and sum(row[1] for row in low) > sum(row[1] for row in high)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, True, "0.5"])
def test_a_threshold_outside_0_1_is_refused(circle, threshold):
    with pytest.raises(SpecError, match="between 0 and 1"):
        metrics.report(circle, "val", threshold=threshold)


def test_a_threshold_needs_two_classes(digits):
    with pytest.raises(SpecError, match="exactly 2 classes; this run has 10"):
        metrics.report(digits, "val", threshold=0.5)


# ----------------------------------------------------------------------------- refusals


def test_a_regression_run_is_refused():
    trainer = Trainer(ExperimentSpec.from_dict({"data": {"name": "plane", "n": 100},
                                                "training": {"steps": 2}}))
    with pytest.raises(SpecError, match="regression.*'val' split"):
        metrics.report(trainer, "val")
    with pytest.raises(SpecError, match="regression.*'train' split"):
        metrics.class_scores(trainer, "train")


def test_an_empty_split_is_refused(circle):
    assert len(circle.data.y_test) == 0
    with pytest.raises(SpecError, match="'test' split is empty.*data.test_fraction"):
        metrics.report(circle, "test")
    with pytest.raises(SpecError, match="'test' split is empty"):
        metrics.class_scores(circle, "test")


def test_an_unknown_split_is_refused(circle):
    with pytest.raises(SpecError, match="split='valid' is not allowed; allowed: train, val, test"):
        metrics.report(circle, "valid")
