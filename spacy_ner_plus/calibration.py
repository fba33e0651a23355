"""Calibration of entity confidences and per-type thresholds.

Target: for each entity type, map the raw span confidence (decoding.py) to
the probability that a predicted span is exactly right (type and both
boundaries), fitted on predictions against DEV gold.

Methods (per type):
- ``temperature``: ``sigmoid(logit(raw) / T)``, T > 0 fitted by minimising
  the negative log-likelihood (one parameter; keeps the ranking).
- ``isotonic``: a monotone step function (scikit-learn's IsotonicRegression),
  stored as its breakpoints and applied with linear interpolation.
- ``logistic``: ``sigmoid(a * logit(raw) + b * log(length) + c)`` (Platt
  scaling with the entity's length in tokens as a second feature; scikit-
  learn's LogisticRegression). The raw score is a product of per-token
  probabilities and shrinks with length, so the same raw score means more for
  a long entity than for a short one; the length term learns by how much.
- ``logistic_pooled``: one logistic regression over every type's DEV
  predictions, ``sigmoid(a * logit(raw) + b * log(length) + c_type)``: the
  weights of the score and the length are shared, each type has its own
  intercept. A type with few predictions borrows the others' slopes instead
  of fitting its own; stored per type as a ``logistic`` calibrator.

This module is the maths only: it knows no pipeline. Running a pipeline on
DEV and storing the result in its ner_plus is evaluation/calibrate.py; the
report and plots are evaluation/calibration_report.py.

Fitted maps never say 0 or 1: a frequency estimated from ``n`` DEV
predictions is never certain. By Laplace's rule of succession (``s`` right out
of ``n`` gives ``(s + 1) / (n + 2)``), each ``isotonic`` step holds
``(s + 1) / (n + 2)`` of its own predictions instead of ``s / n`` (steps then
pooled again where that broke the order), and ``temperature`` and ``logistic``
maps are clipped to ``[1 / (n + 2), (n + 1) / (n + 2)]`` of the type's ``n``
(their ``bounds``). This happens at fit time: a saved calibrator maps raw
scores exactly as before. So an entity that a threshold of 0 keeps ("keep what
the model decodes") has a confidence of at least ``1 / (n + 2)``: DEV held
``n`` such predictions and few or none were right, not an impossible 0.

Fallbacks, each reported: a type with fewer than ``min_spans`` DEV
predictions (or only right or only wrong ones) keeps the identity map; a type
absent from DEV keeps the default threshold.

Threshold policies, per type, over the calibrated scores of its DEV
predictions (recall counts every gold entity of the type, found or not):
``max_f1``, ``fbeta:B`` (maximise F-beta), ``precision:P`` (the lowest
threshold whose precision is at least P: the most recall that keeps P; when
no threshold reaches P, the one of highest precision, with a warning),
``recall:R`` (the highest threshold whose recall is at least R). A threshold
only removes decoded entities, so it cannot lift recall above the decoder's:
when no threshold reaches R, calibrate (evaluation/calibrate.py) looks for the
smallest decoding bias of the type that does (``TypeCalibration.reached``).

With ``bootstrap`` (Poisson) resamples of the type's DEV predictions,
thresholds account for DEV's sampling noise: ``precision:P`` takes the lowest
threshold whose precision is at least P in all but ``1 - confidence`` of the
resamples (a percentile lower bound; ``recall:R`` likewise), and a
``max_f1``/``fbeta`` threshold is kept only when choosing a threshold beats
keeping every prediction out of bag beyond DEV's noise: on each resample the
best threshold is chosen and its gain measured on the predictions that
resample left out; unless the gain is positive on at least ``confidence`` of
the resamples, the threshold is 0 (keep all).

Size: just over 500 lines: four calibrators and four threshold policies with
their bootstrap bounds are one concern (DEV predictions -> calibrated scores
and thresholds); the pipeline side is evaluation/calibrate.py.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy

from .metrics import N_BINS, brier, ece, fbeta, prf

_EPS = 1e-6


@dataclass
class Calibrator:
    """A per-type map from raw to calibrated confidence (JSON-serializable via to_dict)."""

    method: str = "identity"
    temperature: float = 1.0
    x: List[float] = field(default_factory=list)
    y: List[float] = field(default_factory=list)
    # logistic: weights of logit(raw) and log(length), and the intercept
    coef: List[float] = field(default_factory=list)
    # [lowest, highest] calibrated score (Laplace's bounds of the fit, module docstring); [] for none
    bounds: List[float] = field(default_factory=list)

    def __call__(self, raw: numpy.ndarray, lengths: Optional[Sequence[int]] = None) -> numpy.ndarray:
        """Calibrated scores of entities with these raw scores (and lengths in tokens).

        RAISES (ValueError): a length-aware calibrator called without lengths,
            or a method this release does not know.
        """
        raw = numpy.asarray(raw, dtype="float64")
        if self.method == "identity":
            out = raw
        elif self.method == "temperature":
            out = _sigmoid(_logit(raw) / self.temperature)
        elif self.method == "isotonic":
            out = numpy.interp(raw, self.x, self.y)
        elif self.method == "logistic":
            if lengths is None:
                raise ValueError("the logistic calibrator needs each entity's length in tokens")
            a, b, c = self.coef
            out = _sigmoid(a * _logit(raw) + b * numpy.log(numpy.asarray(lengths, dtype="float64")) + c)
        else:
            raise ValueError(f"unknown calibrator method {self.method!r}: a calibrator is one of {', '.join(CALIBRATOR_METHODS)}")
        if self.bounds:
            out = numpy.clip(out, self.bounds[0], self.bounds[1])
        return out

    def to_dict(self) -> Dict:
        data = {"method": self.method, "temperature": self.temperature, "x": list(self.x), "y": list(self.y)}
        if self.coef:
            data["coef"] = list(self.coef)
        if self.bounds:
            data["bounds"] = list(self.bounds)
        return data

    @classmethod
    def from_dict(cls, data: Dict) -> "Calibrator":
        """The calibrator ``to_dict`` gave. RAISES (ValueError): a method this
        release does not know (calibrated by a newer release, an edited cfg)."""
        method = data.get("method")
        if method not in CALIBRATOR_METHODS:
            raise ValueError(f"unknown calibrator method {method!r}: a calibrator is one of {', '.join(CALIBRATOR_METHODS)}")
        return cls(
            method,
            float(data["temperature"]),
            list(data["x"]),
            list(data["y"]),
            list(data.get("coef", [])),
            list(data.get("bounds", [])),
        )


# What a stored calibrator may be (logistic_pooled is fitted jointly but stored as logistic).
CALIBRATOR_METHODS = ("identity", "temperature", "isotonic", "logistic")


def laplace_bounds(n: int) -> List[float]:
    """The range of a frequency estimated from ``n`` observations by Laplace's
    rule of succession: ``[1 / (n + 2), (n + 1) / (n + 2)]``."""
    return [1.0 / (n + 2), (n + 1.0) / (n + 2)]


def _laplace_isotonic(raw: numpy.ndarray, y: numpy.ndarray, fitted: numpy.ndarray) -> Tuple[List[float], List[float]]:
    """Breakpoints of an isotonic fit whose steps hold ``(s + 1) / (n + 2)``, from
    the fit's points sorted by raw score and the fit at each (its step's ``s / n``)."""
    from sklearn.isotonic import IsotonicRegression

    edges = numpy.flatnonzero(numpy.diff(fitted)) + 1
    starts = numpy.concatenate([[0], edges])
    ends = numpy.concatenate([edges, [len(raw)]])
    n = (ends - starts).astype("float64")
    s = numpy.add.reduceat(y, starts)
    shrunk = (s + 1.0) / (n + 2.0)
    # shrinking moves small steps more than large ones, which can break the order:
    # pool adjacent violators again, each step weighing its n + 2 (pseudo-)counts
    steps = numpy.arange(len(starts), dtype="float64")
    values = IsotonicRegression().fit(steps, shrunk, sample_weight=n + 2.0).predict(steps)
    xs: List[float] = []
    ys: List[float] = []
    for start, end, value in zip(starts, ends, values):
        for x in (raw[start], raw[end - 1]):
            if not xs or x > xs[-1]:
                xs.append(float(x))
                ys.append(float(value))
    return xs, ys


def _logit(p: numpy.ndarray) -> numpy.ndarray:
    p = numpy.clip(p, _EPS, 1 - _EPS)
    return numpy.log(p) - numpy.log1p(-p)


def _sigmoid(z: numpy.ndarray) -> numpy.ndarray:
    return 1.0 / (1.0 + numpy.exp(-z))


METHODS = ("temperature", "isotonic", "logistic", "logistic_pooled")


def fit_calibrator(raw: Sequence[float], correct: Sequence[bool], method: str, lengths: Optional[Sequence[int]] = None) -> Calibrator:
    """Fit one type's calibrator. RAISES (ValueError) for an unknown method,
    or ``logistic`` without the entities' lengths."""
    raw = numpy.asarray(raw, dtype="float64")
    y = numpy.asarray(correct, dtype="float64")
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        if lengths is None or len(lengths) != len(raw):
            raise ValueError("the logistic calibrator needs each entity's length in tokens")
        features = numpy.column_stack([_logit(raw), numpy.log(numpy.asarray(lengths, dtype="float64"))])
        # weak L2 (C=100): two features and hundreds of points; lbfgs is deterministic
        model = LogisticRegression(C=100.0).fit(features, y.astype(int))
        a, b = (float(v) for v in model.coef_[0])
        return Calibrator("logistic", coef=[a, b, float(model.intercept_[0])], bounds=laplace_bounds(len(raw)))
    if method == "logistic_pooled":
        return fit_pooled_logistic({"": (raw, correct, lengths)})[""]
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        z = _logit(raw)

        def nll(log_t: float) -> float:
            p = numpy.clip(_sigmoid(z / numpy.exp(log_t)), _EPS, 1 - _EPS)
            return float(-(y * numpy.log(p) + (1 - y) * numpy.log1p(-p)).mean())

        best = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-8})
        return Calibrator("temperature", float(numpy.exp(best.x)), bounds=laplace_bounds(len(raw)))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        order = numpy.lexsort((y, raw))
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw[order], y[order])
        x, steps = _laplace_isotonic(raw[order], y[order], model.predict(raw[order]))
        return Calibrator("isotonic", 1.0, x, steps)
    raise ValueError(f"unknown calibration method '{method}': use one of {', '.join(METHODS)}")


def fit_pooled_logistic(data: Dict[str, Tuple[Sequence[float], Sequence[bool], Optional[Sequence[int]]]]) -> Dict[str, Calibrator]:
    """One logistic regression over every type: per label, a ``logistic``
    Calibrator with the shared weights of logit(raw) and log(length) and the
    label's own intercept.

    data: label -> (raw scores, exactly right, lengths in tokens).
    RAISES (ValueError): a label without lengths.
    """
    from sklearn.linear_model import LogisticRegression

    labels = sorted(data)
    features, targets = [], []
    for i, label in enumerate(labels):
        raw, correct, lengths = data[label]
        if lengths is None or len(lengths) != len(raw):
            raise ValueError(f"the logistic_pooled calibrator needs each entity's length in tokens ({label or 'the type'})")
        raw = numpy.asarray(raw, dtype="float64")
        onehot = numpy.zeros((len(raw), len(labels)))
        onehot[:, i] = 1.0
        features.append(numpy.column_stack([_logit(raw), numpy.log(numpy.asarray(lengths, dtype="float64")), onehot]))
        targets.append(numpy.asarray(correct, dtype=int))
    # the one-hot columns are the intercepts; weak L2 (C=100) as for the per-type fit
    model = LogisticRegression(C=100.0, fit_intercept=False).fit(numpy.vstack(features), numpy.concatenate(targets))
    a, b, *intercepts = (float(v) for v in model.coef_[0])
    return {
        label: Calibrator("logistic", coef=[a, b, intercepts[i]], bounds=laplace_bounds(len(data[label][0])))
        for i, label in enumerate(labels)
    }


def parse_policy(text: str) -> Tuple[str, float]:
    """"max_f1" -> ("max_f1", 1.0); "precision:0.95" -> ("precision", 0.95); also recall:R, fbeta:B."""
    name, _, value = text.partition(":")
    if name == "max_f1" and not value:
        return "fbeta", 1.0
    if name in ("precision", "recall", "fbeta") and value:
        number = float(value)
        if name != "fbeta" and not 0 < number <= 1:
            raise ValueError(f"policy '{text}': {name} must be in (0, 1]")
        if name == "fbeta" and number <= 0:
            raise ValueError(f"policy '{text}': beta must be > 0")
        return name, number
    raise ValueError(f"unknown policy '{text}': use max_f1, precision:P, recall:R or fbeta:B")


def threshold_curve(scores: Sequence[float], correct: Sequence[bool], n_gold: int) -> Dict[str, numpy.ndarray]:
    """Precision, recall and F1 when keeping predictions with score >= each candidate threshold.

    Candidates are the distinct scores (ascending), so each threshold keeps a
    different set; keeping all predictions is the first candidate.
    """
    scores = numpy.asarray(scores, dtype="float64")
    y = numpy.asarray(correct, dtype=bool)
    thresholds = numpy.unique(scores)
    kept = numpy.array([(scores >= t).sum() for t in thresholds], dtype="float64")
    tp = numpy.array([(y & (scores >= t)).sum() for t in thresholds], dtype="float64")
    precision = numpy.divide(tp, kept, out=numpy.zeros_like(tp), where=kept > 0)
    recall = tp / n_gold if n_gold else numpy.zeros_like(tp)
    denom = precision + recall
    f1 = numpy.divide(2 * precision * recall, denom, out=numpy.zeros_like(tp), where=denom > 0)
    return {"threshold": thresholds, "precision": precision, "recall": recall, "f1": f1}


def choose_threshold(
    scores: Sequence[float],
    correct: Sequence[bool],
    n_gold: int,
    policy: str,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tuple[float, Optional[str]]:
    """One type's threshold under ``policy``; RETURNS (threshold, warning or None).

    bootstrap (int): resamples of the predictions for the confidence bounds
        described in the module's docstring; 0 uses DEV's point estimates.
    confidence (float): the bounds' confidence level.
    seed (int): the resampling's seed (the same inputs give the same threshold).
    """
    name, value = parse_policy(policy)
    if name == "recall":
        threshold, _, warning = recall_threshold(scores, correct, n_gold, value, bootstrap, confidence, seed)
        return threshold, warning
    curve = threshold_curve(scores, correct, n_gold)
    t, p, r = curve["threshold"], curve["precision"], curve["recall"]
    if len(t) == 0:
        return 0.0, "no predictions"
    if bootstrap:
        weights = numpy.random.default_rng(seed).poisson(1.0, size=(bootstrap, len(numpy.asarray(scores)))).astype("int32")
    quantile = 1.0 - confidence
    n_missed = n_gold - int(numpy.sum(correct))  # gold entities no prediction found
    if name == "fbeta":
        score = fbeta(p, r, value)
        best = int(score.argmax())  # argmax: the lowest threshold among ties
        if not bootstrap or best == 0:
            return float(t[best]), None
        # Out of bag: choose the threshold on each resample, measure its gain over keeping
        # all on the predictions that resample left out; selection's optimism stays out.
        kept, tp = _counts(scores, correct, t, weights)
        chosen = fbeta(_ratio(tp, kept), _ratio(tp, n_missed + tp[:, :1]), value).argmax(axis=1)
        out = (weights == 0).astype("int32")
        kept_o, tp_o = _counts(scores, correct, t, out)
        n_gold_o = n_missed * out.mean(axis=1, keepdims=True) + tp_o[:, :1]
        f_o = fbeta(_ratio(tp_o, kept_o), _ratio(tp_o, n_gold_o), value)
        gains = f_o[numpy.arange(bootstrap), chosen] - f_o[:, 0]
        share = float((gains > 0).mean())
        if share < confidence:
            return 0.0, (
                f"threshold {t[best]:.3f} raises DEV's F{value:g} by {score[best] - score[0]:+.4f} but beats keeping every "
                f"prediction out of bag in only {share:.0%} of {bootstrap} resamples (mean gain {gains.mean():+.4f}; "
                f"{confidence:.0%} needed), so it may fit DEV's noise: kept all"
            )
        return float(t[best]), None
    # precision:P (parse_policy names no other policy)
    bound = p if not bootstrap else numpy.quantile(_ratio(*reversed(_counts(scores, correct, t, weights))), quantile, axis=0)
    ok = numpy.nonzero(bound >= value)[0]
    if len(ok):
        return float(t[ok[0]]), None
    best = int(bound.argmax())
    what = "precision" if not bootstrap else f"the {confidence:.0%} lower bound of precision"
    return float(t[best]), f"{what} {value} is not reached on DEV (best {bound[best]:.3f})"


def recall_threshold(
    scores: Sequence[float], correct: Sequence[bool], n_gold: int, target: float, bootstrap: int = 0, confidence: float = 0.95, seed: int = 0
) -> Tuple[float, float, Optional[str]]:
    """``recall:target``'s threshold: the highest candidate (threshold_curve's) whose recall on DEV,
    or with ``bootstrap`` its ``confidence`` lower bound, reaches ``target``, else the lowest.
    RETURNS (threshold, that recall or bound at it, warning or None)."""
    curve = threshold_curve(scores, correct, n_gold)
    t, bound = curve["threshold"], curve["recall"]
    if not len(t):
        return 0.0, 0.0, "no predictions"
    if bootstrap:
        weights = numpy.random.default_rng(seed).poisson(1.0, size=(bootstrap, len(numpy.asarray(scores)))).astype("int32")
        tp = _counts(scores, correct, t, weights)[1]
        n_missed = n_gold - int(numpy.sum(correct))
        bound = numpy.quantile(_ratio(tp, n_missed + tp[:, :1]), 1.0 - confidence, axis=0)
    ok = numpy.nonzero(bound >= target)[0]
    if len(ok):
        return float(t[ok[-1]]), float(bound[ok[-1]]), None
    return float(t[0]), float(bound[0]), f"recall {target} is not reached on DEV (at most {bound[0]:.3f})"


def _ratio(a: numpy.ndarray, b: numpy.ndarray) -> numpy.ndarray:
    a = numpy.asarray(a, dtype="float64")
    b = numpy.asarray(b, dtype="float64")
    return numpy.divide(a, b, out=numpy.zeros(numpy.broadcast(a, b).shape), where=b > 0)


def _counts(
    scores: Sequence[float], correct: Sequence[bool], thresholds: numpy.ndarray, weights: numpy.ndarray
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Kept and right predictions at each threshold (columns) when the
    predictions are counted with each row of ``weights`` (a resample)."""
    scores = numpy.asarray(scores, dtype="float64")
    y = numpy.asarray(correct, dtype=bool)
    order = numpy.argsort(-scores, kind="stable")
    kept_cum = numpy.cumsum(weights[:, order], axis=1)
    tp_cum = numpy.cumsum(weights[:, order] * y[order], axis=1)
    # the predictions scoring >= each threshold are the first `count` in descending order
    count = len(scores) - numpy.searchsorted(numpy.sort(scores), thresholds, side="left")
    return kept_cum[:, count - 1], tp_cum[:, count - 1]


@dataclass
class TypeCalibration:
    """What calibrate found for one entity type on DEV."""

    label: str
    n_gold: int
    raw: numpy.ndarray
    correct: numpy.ndarray
    calibrator: Calibrator
    calibrated: numpy.ndarray
    threshold: float
    policy: str
    notes: List[str]
    # recall:R only: the recall (or its lower bound) at the threshold, and whether it reaches R
    recall_bound: Optional[float] = None
    reached: Optional[bool] = None
    # the type's decoding bias and, when calibrate searched one, each bias tried (evaluation/calibrate.py)
    decoding_bias: float = 0.0
    bias_search: List[Dict] = field(default_factory=list)

    def summary(self) -> Dict:
        kept = self.calibrated >= self.threshold
        tp_all, tp_kept = int(self.correct.sum()), int(self.correct[kept].sum())
        return {
            "n_gold": self.n_gold,
            "n_predicted": int(len(self.raw)),
            "method": self.calibrator.method,
            "policy": self.policy,
            "threshold": self.threshold,
            "ece_before": ece(self.raw, self.correct),
            "ece_after": ece(self.calibrated, self.correct),
            "brier_before": brier(self.raw, self.correct),
            "brier_after": brier(self.calibrated, self.correct),
            "precision_all": prf(tp_all, len(self.raw), self.n_gold)[0],
            "recall_all": prf(tp_all, len(self.raw), self.n_gold)[1],
            "precision_kept": prf(tp_kept, int(kept.sum()), self.n_gold)[0],
            "recall_kept": prf(tp_kept, int(kept.sum()), self.n_gold)[1],
            "recall_bound": self.recall_bound,
            "reached": self.reached,
            "decoding_bias": self.decoding_bias,
            "bias_search": self.bias_search,
            "notes": self.notes,
        }


def _identity_fallback(correct: Sequence[bool], min_spans: int) -> Optional[str]:
    """Why a type keeps the identity map (too few DEV predictions, or all right or
    all wrong), or None when its calibrator can be fitted."""
    correct = numpy.asarray(correct, dtype=bool)
    if len(correct) < min_spans:
        return f"{len(correct)} DEV predictions (< {min_spans}): raw confidence kept (identity map)"
    if correct.all() or not correct.any():
        return "DEV predictions are all right or all wrong: raw confidence kept (identity map)"
    return None


def calibrate_type(
    label: str,
    raw: Sequence[float],
    correct: Sequence[bool],
    n_gold: int,
    method: str,
    policy: str,
    min_spans: int,
    *,
    lengths: Optional[Sequence[int]] = None,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    fitted: Optional[Calibrator] = None,
) -> TypeCalibration:
    """Fit one type's calibrator and threshold, applying the documented fallbacks.

    lengths (Optional[Sequence[int]]): each prediction's length in tokens (the logistic methods need them).
    bootstrap, confidence, seed: the threshold's confidence bounds (choose_threshold).
    fitted (Optional[Calibrator]): the type's calibrator when it was fitted with
        other types' predictions (logistic_pooled); used unless a fallback applies.
    """
    raw = numpy.asarray(raw, dtype="float64")
    correct = numpy.asarray(correct, dtype=bool)
    notes: List[str] = []
    fallback = _identity_fallback(correct, min_spans)
    if fallback:
        calibrator = Calibrator()
        notes.append(fallback)
    else:
        calibrator = fitted if fitted is not None else fit_calibrator(raw, correct, method, lengths)
    calibrated = calibrator(raw, lengths)
    name, target = parse_policy(policy)
    bound = None
    if name == "recall":
        threshold, bound, warning = recall_threshold(calibrated, correct, n_gold, target, bootstrap, confidence, seed)
    else:
        threshold, warning = choose_threshold(calibrated, correct, n_gold, policy, bootstrap, confidence, seed)
    if warning:
        notes.append(warning)
    result = TypeCalibration(label, n_gold, raw, correct, calibrator, calibrated, threshold, policy, notes)
    if bound is not None:
        result.recall_bound, result.reached = bound, bound >= target
    return result


@dataclass
class TypePredictions:
    """A type's decoded entities on gold docs: raw scores, exactness, lengths in tokens, and the gold count."""

    raw: List[float] = field(default_factory=list)
    correct: List[bool] = field(default_factory=list)
    n_gold: int = 0
    lengths: List[int] = field(default_factory=list)


def calibrate_predictions(
    predictions: Dict[str, TypePredictions],
    method: str,
    policy: str,
    overrides: Dict[str, str],
    min_spans: int,
    default_threshold: float,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> Dict[str, TypeCalibration]:
    """Per type: fit the calibrator and choose the threshold (see calibrate_type).
    With ``logistic_pooled`` the types that pass calibrate_type's fallbacks
    are fitted together, the others keep their fallback."""
    results: Dict[str, TypeCalibration] = {}
    pooled: Dict[str, Calibrator] = {}
    if method == "logistic_pooled":
        fit = {
            label: (p.raw, p.correct, p.lengths or None)
            for label, p in predictions.items()
            if p.n_gold and not _identity_fallback(p.correct, min_spans)
        }
        pooled = fit_pooled_logistic(fit) if fit else {}
    for label, p in predictions.items():
        type_policy = overrides.get(label, policy)
        if p.n_gold == 0:
            scores = numpy.asarray(p.raw, dtype="float64")
            results[label] = TypeCalibration(
                label, 0, scores, numpy.asarray(p.correct, dtype=bool), Calibrator(), scores, default_threshold, type_policy,
                [f"absent from DEV: identity map and the default threshold {default_threshold}"],
            )
        else:
            results[label] = calibrate_type(
                label, p.raw, p.correct, p.n_gold, method, type_policy, min_spans,
                lengths=p.lengths or None, bootstrap=bootstrap, confidence=confidence, seed=seed, fitted=pooled.get(label),
            )
    return results
