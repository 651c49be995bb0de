"""Top-1 and top-k accuracy of classifier scores, as an `evaluate` metric that loads by path, offline.

This file is an `evaluate` metric script: `evaluate.load` copies it into its module cache and imports it on its own,
so it imports nothing from its package.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy: the fraction of examples whose reference class is among the k highest-scoring classes. Reports
top-1 accuracy (as `accuracy`) and top-k accuracy (as `top{k}_accuracy`, k=5 by default) when there are more than k
classes; with k classes or fewer every example is a top-k hit, so top-k says nothing and is left out.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one score per class for each example (logits or probabilities).
    references (`list` of `int`): the index of the true class of each example.
    k (`int`, defaults to 5): the k of top-k accuracy.
Returns:
    accuracy (`float`): top-1 accuracy, in [0, 1].
    top{k}_accuracy (`float`): top-k accuracy, in [0, 1]; only when there are more than k classes.
Examples:
    >>> metric = evaluate.load("path/to/topk_accuracy.py")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], references=[2, 0], k=2)
    {'accuracy': 0.5, 'top2_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    """Top-1 and top-k accuracy from per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions: list, references: list, k: int = 5) -> dict[str, float]:
        scores = np.asarray(predictions, dtype=np.float32)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(
                f"predictions must be one row of class scores per reference, got shape {scores.shape} for "
                f"{len(labels)} references; pass the logits of every example."
            )
        num_classes = scores.shape[1]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"references must be class indices in [0, {num_classes}), got {sorted(set(labels))}.")
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}.")
        # A stable sort keeps the lowest class index first among equal scores, as argmax does.
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        hits = ranked == labels[:, None]
        scores = {"accuracy": float(np.mean(hits[:, 0]))}
        if k < num_classes:
            scores[f"top{k}_accuracy"] = float(np.mean(hits.any(axis=1)))
        return scores
