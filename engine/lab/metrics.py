"""Classification metrics for a trained run: confusion matrix, per-class precision/recall/F1,
ROC and precision-recall curves with their areas, one class against the rest.

    from engine.lab.metrics import report
    r = report(trainer, "val")        # accuracy, confusion matrix, per-class table, curves
    r = report(trainer, "test", 0.3)  # two classes: class 1 wherever its probability >= 0.3

Pure torch. The curve functions follow scikit-learn's definitions exactly (roc_curve with
drop_intermediate=False, auc, precision_recall_curve, average_precision_score): one point per
distinct score, so tied scores move together, and the counts are accumulated in float64.
"""
from __future__ import annotations

import math

import torch

from ..core.errors import SpecError
from ..core.portable import predict_classes

SPLITS = ("train", "val", "test")
CURVE_POINTS = 500  # at most this many points of a curve go into a report (charts need no more)


# ----------------------------------------------------------------------------- scores of a run


def _split_inputs(trainer, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's inputs and labels, refusing what has no class metrics: an unknown split name,
    a regression run, an empty split."""
    if split not in SPLITS:
        raise SpecError(f"split={split!r} is not allowed; allowed: {', '.join(SPLITS)}")
    data = trainer.data
    if data.task != "classification":
        raise SpecError(f"class metrics need class labels, but this run is a regression: the "
                        f"{split!r} split has continuous targets")
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    y = y.flatten()  # a class at every step of a sequence: each step is scored
    if len(y) == 0:
        hint = f"; set data.{split}_fraction above 0" if split != "train" else ""
        raise SpecError(f"the {split!r} split is empty: there is nothing to score{hint}")
    return x, y


@torch.no_grad()
def class_scores(trainer, split: str) -> torch.Tensor:
    """Class probabilities (n, k) of every example in a split ('train', 'val' or 'test'), on the
    CPU. They come from Trainer.predict, in eval mode (dropout off, BatchNorm's running
    statistics) with the model's training mode restored after, so they are the probabilities
    the engine itself shows. A single-logit binary model (the 'bce' loss) gives [1 - p, p]."""
    x, _ = _split_inputs(trainer, split)
    # chunked like Trainer.evaluate, so a large split does not need one huge forward pass
    step = trainer.eval_chunk
    chunks = [trainer.predict(x[i:i + step]) for i in range(0, len(x), step)]
    probs = torch.cat(chunks).cpu()
    return probs.flatten(0, 1) if probs.dim() == 3 else probs  # a class at every step


@torch.no_grad()
def _outputs(trainer, x: torch.Tensor) -> torch.Tensor:
    """Raw model outputs (logits) in eval mode, chunked like Trainer.evaluate."""
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        step = trainer.eval_chunk
        out = torch.cat([trainer.model(x[i:i + step]) for i in range(0, len(x), step)])
    finally:
        trainer.model.train(was_training)
    return out


def _check_threshold(threshold, k: int) -> None:
    if threshold is None:
        return
    if k != 2:
        raise SpecError(f"threshold={threshold!r} needs exactly 2 classes; this run has {k}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise SpecError(f"threshold={threshold!r} is not allowed: expected a probability of "
                        "class 1 between 0 and 1")


def _decide(trainer, x: torch.Tensor, scores: torch.Tensor | None, threshold) -> torch.Tensor:
    if threshold is not None:
        return (scores[:, 1] >= threshold).long()
    # the engine's own rule on the logits (the sign of a single logit, else the largest):
    # sigmoid and softmax can round two different logits to one probability, and then argmax
    # of the probabilities would disagree with the accuracy Trainer.evaluate reports
    return predict_classes(_outputs(trainer, x), trainer.binary).cpu().flatten()


def predicted_classes(trainer, split: str, threshold: float | None = None) -> torch.Tensor:
    """The predicted class of every example in a split, on the CPU. threshold=None is the
    engine's rule (the class Trainer.evaluate counts as the answer); with two classes a
    threshold predicts class 1 wherever its probability is >= threshold."""
    x, _ = _split_inputs(trainer, split)
    _check_threshold(threshold, trainer.data.classes)
    scores = class_scores(trainer, split) if threshold is not None else None
    return _decide(trainer, x, scores, threshold)


# ----------------------------------------------------------------------------- counts


def _labels(y, name: str) -> torch.Tensor:
    y = torch.as_tensor(y).flatten().cpu()
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, not {y.dtype}")
    return y.long()


def confusion_matrix(y_true, y_pred, k: int) -> torch.Tensor:
    """A (k, k) int64 count matrix: row = true class, column = predicted class."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"class indices must lie in 0..{k - 1}")
    return torch.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den is 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def per_class(y_true, y_pred, k: int) -> dict:
    """Precision, recall, F1 and support of each class 0..k-1 (lists), with their macro average
    (every class counts the same) and weighted average (classes weighted by support).

    A class never predicted has precision 0 and a class absent from y_true has recall 0, as
    scikit-learn's precision_recall_fscore_support(zero_division=0) gives; both still count in
    the macro average."""
    cm = confusion_matrix(y_true, y_pred, k).double()
    tp, predicted, support = cm.diagonal(), cm.sum(0), cm.sum(1)
    scores = {"precision": _ratio(tp, predicted), "recall": _ratio(tp, support),
              # 2 tp / (2 tp + fp + fn): F1 without dividing by a precision or recall of 0
              "f1": _ratio(2 * tp, predicted + support)}
    total = support.sum()
    macro = {name: float(v.mean()) for name, v in scores.items()}
    weighted = {name: float((v * support).sum() / total) if total > 0 else 0.0
                for name, v in scores.items()}
    return {**{name: v.tolist() for name, v in scores.items()},
            "support": support.long().tolist(), "macro": macro, "weighted": weighted}


# ----------------------------------------------------------------------------- curves


def _scored(scores, positives) -> tuple[torch.Tensor, torch.Tensor]:
    # float64 straight from Python numbers: as float32 first, 0.1 would not stay 0.1
    s = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
    y = torch.as_tensor(positives).flatten().cpu()
    if s.shape != y.shape or len(s) == 0:
        raise ValueError(f"need one positive/negative flag per score; got {len(s)} scores and "
                         f"{len(y)} flags")
    return s, (y != 0).double()


def _counts_at_thresholds(scores, positives):
    """False and true positives when every example scoring >= t is called positive, for each
    distinct score t from the highest down (scikit-learn's confusion_matrix_at_thresholds)."""
    s, y = _scored(scores, positives)
    order = torch.sort(s, descending=True, stable=True).indices
    s, y = s[order], y[order]
    # the last example of each run of equal scores: tied examples cross a threshold together
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tps = torch.cumsum(y, 0)[last]
    fps = 1 + last.double() - tps
    return fps, tps, s[last]


def roc_curve(scores, positives) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(false positive rate, true positive rate, thresholds), float64, one point per distinct
    score from the highest down after a first point (0, 0) at threshold +inf: as scikit-learn's
    roc_curve(drop_intermediate=False). Without negatives the false positive rates are NaN,
    without positives the true positive rates are."""
    fps, tps, thresholds = _counts_at_thresholds(scores, positives)
    zero = torch.zeros(1, dtype=torch.float64)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), thresholds])
    fpr = fps / fps[-1] if fps[-1] > 0 else torch.full_like(fps, math.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else torch.full_like(tps, math.nan)
    return fpr, tpr, thresholds


def auc(x, y) -> float:
    """Area under the curve through the points (x, y) by the trapezoid rule; x must be
    monotonic (either way), as scikit-learn's auc requires."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten().cpu()
    y = torch.as_tensor(y, dtype=torch.float64).flatten().cpu()
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"need at least 2 points with one y per x; got {len(x)} x, {len(y)} y")
    dx = torch.diff(x)
    direction = 1.0
    if (dx < 0).any():
        if not (dx <= 0).all():
            raise ValueError("x is neither increasing nor decreasing")
        direction = -1.0
    return direction * float((dx * (y[1:] + y[:-1]) / 2).sum())


def pr_curve(scores, positives) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(precision, recall, thresholds), float64, as scikit-learn's precision_recall_curve:
    thresholds are the distinct scores from the lowest up, and precision and recall have one
    more point, (precision 1, recall 0), past the highest. Without positives recall is 1."""
    fps, tps, thresholds = _counts_at_thresholds(scores, positives)
    precision = _ratio(tps, tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else torch.ones_like(tps)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    return (torch.cat([precision.flip(0), one]), torch.cat([recall.flip(0), zero]),
            thresholds.flip(0))


def average_precision(scores, positives) -> float:
    """Average precision: the precision at each threshold weighted by the recall it adds, with
    no interpolation (scikit-learn's average_precision_score). 0 without positives."""
    precision, recall, _ = pr_curve(scores, positives)
    return max(0.0, -float((torch.diff(recall) * precision[:-1]).sum()))


def one_vs_rest(probs, y_true, k: int) -> list[dict]:
    """For each class, its probability column scored against "this class or not": a dict with
    class, auc (ROC area), ap (average precision), roc (fpr, tpr, thresholds) and
    pr (precision, recall, thresholds). auc is None where the class is absent from y_true or is
    all of it (one side of the ROC curve is undefined); ap is None where it is absent."""
    probs, y = torch.as_tensor(probs).cpu(), _labels(y_true, "y_true")
    if probs.dim() != 2 or probs.shape != (len(y), k):
        raise ValueError(f"probs must have shape ({len(y)}, {k}), not {tuple(probs.shape)}")
    rows = []
    for c in range(k):
        positives = y == c
        has_pos, has_neg = bool(positives.any()), not bool(positives.all())
        roc, pr = roc_curve(probs[:, c], positives), pr_curve(probs[:, c], positives)
        rows.append({"class": c, "auc": auc(roc[0], roc[1]) if has_pos and has_neg else None,
                     "ap": average_precision(probs[:, c], positives) if has_pos else None,
                     "roc": roc, "pr": pr})
    return rows


# ----------------------------------------------------------------------------- the report


def _thin(n: int, limit: int = CURVE_POINTS) -> torch.Tensor:
    """Indices of at most `limit` points spread evenly over 0..n-1, both ends kept."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit, dtype=torch.float64).round().long().unique()


def _floats(t: torch.Tensor) -> list:
    """A JSON-friendly list: NaN and +-inf (the ROC curve's first threshold) become None."""
    return [v if math.isfinite(v) else None for v in t.tolist()]


def _curves_for_report(row: dict) -> dict:
    fpr, tpr, roc_thr = row["roc"]
    keep = _thin(len(fpr))
    precision, recall, pr_thr = row["pr"]
    # precision and recall have one point more than the thresholds: the last, which has none
    keep_pr = _thin(len(precision))
    return {"roc": {"fpr": _floats(fpr[keep]), "tpr": _floats(tpr[keep]),
                    "thresholds": _floats(roc_thr[keep])},
            "pr": {"precision": _floats(precision[keep_pr]), "recall": _floats(recall[keep_pr]),
                   "thresholds": _floats(pr_thr[keep_pr[keep_pr < len(pr_thr)]])}}


def _summary_area(rows: list[dict], key: str, k: int):
    """The run's single number: class 1's for two classes (scikit-learn's binary score), else the
    mean over classes (its one-vs-rest macro average); None where a class leaves it undefined."""
    if k == 2:
        return rows[1][key]
    values = [row[key] for row in rows]
    return None if None in values else sum(values) / k


def mistakes(trainer, split: str, threshold: float | None = None, limit: int = 16) -> dict:
    """The first `limit` examples of a split the net gets wrong (by the same decision rule as
    report): their indices in the split, true and predicted classes, and how many in all."""
    x, y = _split_inputs(trainer, split)
    _check_threshold(threshold, trainer.data.classes)
    pred = predicted_classes(trainer, split, threshold)
    wrong = (pred != y.cpu()).nonzero()[:, 0]
    return {"count": len(wrong), "index": wrong[:limit].tolist(),
            "true": y.cpu()[wrong[:limit]].tolist(), "predicted": pred[wrong[:limit]].tolist()}


def threshold_point(matrix) -> dict:
    """Where a two-class decision (its 2 x 2 confusion matrix) sits on class 1's curves, by the
    curves' own definitions: "roc" (false positive rate, true positive rate) and "pr" (recall,
    precision), each None where the split leaves it undefined (no examples of a class). With
    nothing called class 1 the PR point is the curve's end, precision 1 at recall 0 (scikit-
    learn's convention), where the per-class table counts that precision as 0."""
    (tn, fp), (fn, tp) = matrix
    positives, negatives = tp + fn, tn + fp
    roc = [fp / negatives, tp / positives] if positives and negatives else None
    if not positives:
        pr = None
    elif tp + fp == 0:
        pr = [0.0, 1.0]
    else:
        pr = [tp / positives, tp / (tp + fp)]
    return {"roc": roc, "pr": pr}


def report(trainer, split: str = "val", threshold: float | None = None) -> dict:
    """Everything above for one split of a classification run, as JSON-friendly lists and
    floats: accuracy, confusion matrix, per-class table, and one-vs-rest ROC and
    precision-recall curves with their AUC and AP (also summarised in auc and ap), and with a
    threshold its point on class 1's curves (threshold_point).

    threshold=None predicts what the engine predicts (its accuracy equals
    Trainer.evaluate(split)["acc"]); with two classes a threshold in [0, 1] predicts class 1
    wherever its probability is >= threshold. Curves longer than CURVE_POINTS are thinned for
    charts, ends kept; the areas are computed on the full curves. Non-finite numbers (the ROC
    curve's first threshold, +inf) are None. A regression run or an empty split raises
    SpecError."""
    x, y = _split_inputs(trainer, split)
    y = y.cpu()
    k = trainer.data.classes
    _check_threshold(threshold, k)
    probs = class_scores(trainer, split)
    pred = _decide(trainer, x, probs, threshold)
    names = list(trainer.data.class_names or [str(c) for c in range(k)])
    rows = one_vs_rest(probs, y, k)
    matrix = confusion_matrix(y, pred, k).tolist()
    return {"split": split, "examples": len(y), "classes": k, "class_names": names,
            "threshold": threshold,
            "threshold_point": threshold_point(matrix) if threshold is not None else None,
            "accuracy": float((pred == y).double().mean()),
            "confusion_matrix": matrix,
            "per_class": per_class(y, pred, k),
            "auc": _summary_area(rows, "auc", k), "ap": _summary_area(rows, "ap", k),
            "one_vs_rest": [{"class": row["class"], "name": names[row["class"]],
                             "auc": row["auc"], "ap": row["ap"], **_curves_for_report(row)}
                            for row in rows]}
