"""Multi-label scores: mean average precision (mAP) and F1 at a 0.5 threshold, as an `evaluate` metric loaded by path.

This file is an `evaluate` metric script: `evaluate.load` copies it into its module cache and imports it on its own,
so it imports nothing from its package. The training code imports its numpy functions directly.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Multi-label classification scores. Average precision (AP) of a label ranks the examples by that label's score and
averages the precision at each positive example (ties share a threshold, as scikit-learn's
`average_precision_score`); mAP is the mean over the labels with at least one positive. F1 counts a label as
predicted when its probability is at least `threshold`: `f1_micro` pools every (example, label) decision, `f1_macro`
averages the per-label F1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one probability (sigmoid of the logit) per label for each example.
    references (`list` of `list` of `int`): the 0/1 targets of each example, one per label.
    threshold (`float`, defaults to 0.5): the probability from which a label counts as predicted.
Returns:
    mAP (`float`): mean average precision over the labels that have positives, in [0, 1].
    f1_micro (`float`), f1_macro (`float`): F1 at the threshold, in [0, 1].
Examples:
    >>> metric = evaluate.load("path/to/multilabel.py")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.6, 0.7]], references=[[1, 0], [0, 1]])
    {'mAP': 1.0, 'f1_micro': 0.8, 'f1_macro': 0.8333333333333333}
"""


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Per-label probabilities of multi-label logits (in float64)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of each label (column) of (N, L) scores against 0/1 targets; NaN for a label without positives."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    result = np.full(scores.shape[1], np.nan)
    for label in range(scores.shape[1]):
        positives = targets[:, label].sum()
        if positives == 0:
            continue
        order = np.argsort(-scores[:, label], kind="stable")
        ranked_scores, hits = scores[order, label], targets[order, label]
        # One point per distinct score, at the last example sharing it: tied examples enter the ranking together.
        last_of_tie = np.r_[np.flatnonzero(np.diff(ranked_scores)), len(ranked_scores) - 1]
        true_positives = np.cumsum(hits)[last_of_tie]
        precision = true_positives / (last_of_tie + 1)
        recall_gain = np.diff(np.r_[0, true_positives]) / positives
        result[label] = float(np.sum(precision * recall_gain))
    return result


def f1_scores(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> tuple[float, np.ndarray]:
    """Micro-averaged F1 and the F1 of each label, predicting a label where its probability is >= `threshold`."""
    predicted = np.asarray(probabilities) >= threshold
    actual = np.asarray(targets) > 0.5
    true_positives = (predicted & actual).sum(axis=0)
    false_positives = (predicted & ~actual).sum(axis=0)
    false_negatives = (~predicted & actual).sum(axis=0)
    micro_denominator = 2 * true_positives.sum() + false_positives.sum() + false_negatives.sum()
    micro = 2 * true_positives.sum() / micro_denominator if micro_denominator else 1.0
    denominators = 2 * true_positives + false_positives + false_negatives
    # A label never present and never predicted is predicted perfectly.
    per_label = np.where(denominators > 0, 2 * true_positives / np.maximum(denominators, 1), 1.0)
    return float(micro), per_label


def multilabel_scores(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """mAP, micro F1 and macro F1 of (N, L) probabilities against 0/1 targets."""
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(
            f"predictions and references must both be (examples, labels), got {probabilities.shape} and "
            f"{targets.shape}; pass one probability and one 0/1 target per label for every example."
        )
    ap = average_precision(probabilities, targets)
    micro, per_label = f1_scores(probabilities, targets, threshold)
    mean_ap = float(np.nanmean(ap)) if not np.isnan(ap).all() else 0.0
    return {"mAP": mean_ap, "f1_micro": micro, "f1_macro": float(per_label.mean())}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultiLabelScores(evaluate.Metric):
    """mAP and F1@threshold of multi-label probabilities."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions: list, references: list, threshold: float = 0.5) -> dict[str, float]:
        return multilabel_scores(np.asarray(predictions), np.asarray(references), threshold)
