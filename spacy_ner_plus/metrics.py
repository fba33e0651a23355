"""Scores of predictions, one helper each: precision/recall/F1 from counts, F-beta, expected
calibration error and Brier score. Pure functions of numbers: they know no pipeline, no Doc."""
from typing import Sequence, Tuple

import numpy

N_BINS = 15


def prf(tp: int, n_predicted: int, n_gold: int) -> Tuple[float, float, float]:
    """Precision, recall and F1 from counts; 0.0 where a denominator is 0
    (seqeval's and scikit-learn's ``zero_division=0``).

    tp (int): predictions that are exactly right.
    n_predicted (int): predictions.
    n_gold (int): gold entities.
    RETURNS (Tuple[float, float, float]): precision, recall, F1.
    """
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def fbeta(p: numpy.ndarray, r: numpy.ndarray, beta: float) -> numpy.ndarray:
    """F-beta of precision and recall arrays, elementwise; 0.0 where both are 0."""
    b2 = beta * beta
    denom = b2 * p + r
    return numpy.divide((1 + b2) * p * r, denom, out=numpy.zeros(numpy.broadcast(p, r).shape), where=denom > 0)


def ece(scores: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins over [0, 1]."""
    scores = numpy.asarray(scores, dtype="float64")
    y = numpy.asarray(correct, dtype="float64")
    if len(scores) == 0:
        return 0.0
    bins = numpy.minimum((scores * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(scores[mask].mean() - y[mask].mean())
    return float(total / len(scores))


def brier(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared difference between the scores and exactness (0 or 1)."""
    scores = numpy.asarray(scores, dtype="float64")
    if len(scores) == 0:
        return 0.0
    return float(((scores - numpy.asarray(correct, dtype="float64")) ** 2).mean())
