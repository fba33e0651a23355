"""Calibration of a pipeline's ner_plus on DEV docs: run it, collect each
decoded entity's raw score and exactness, fit (calibration.py) and store the
calibrators and thresholds in the pipe."""
from typing import Dict, Optional, Sequence

from ..calibration import METHODS, TypeCalibration, TypePredictions, calibrate_predictions, parse_policy
from .evaluate import predict_examples
from ..pipeline.ner_plus import ner_plus_pipe_names


def calibrate_pipeline(
    nlp,
    gold_docs: Sequence,
    *,
    method: str = "isotonic",
    policy: str = "max_f1",
    overrides: Optional[Dict[str, str]] = None,
    min_spans: int = 30,
    default_threshold: float = 0.5,
    component: Optional[str] = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Dict[str, TypeCalibration]:
    """Fit calibrators and thresholds of a pipeline's ner_plus on DEV docs and store
    them in the pipe (``NerPlus.set_calibration``, with the weights' fingerprint).

    nlp (Language): the pipeline; changed in place.
    gold_docs (Sequence[Doc]): DEV docs with gold entities.
    method (str): "temperature", "isotonic", "logistic" (score and length) or
        "logistic_pooled" (score and length, one fit for every type, an intercept per type).
    policy (str): the default threshold policy; ``overrides`` maps labels to their own.
    min_spans (int): fewest DEV predictions of a type to fit its calibrator.
    default_threshold (float): the threshold of a type absent from DEV.
    component (Optional[str]): the ner_plus pipe to calibrate (default: the first).
    bootstrap (int): resamples for thresholds with confidence bounds (0: DEV's point estimates).
        1,000 by default: point max_f1 thresholds chosen on DEV lowered test F1 on CoNLL++ and
        BC5CDR (docs/BENCHMARKS.md).
    confidence (float): the bounds' level.
    seed (int): the resampling's seed.
    RETURNS (Dict[str, TypeCalibration]): per type, for the report.
    RAISES (ValueError): when DEV's labels do not match the model's.
    """
    overrides = dict(overrides or {})
    names = ner_plus_pipe_names(nlp)
    if component is None:
        if not names:
            raise ValueError("the pipeline has no ner_plus component to calibrate")
        component = names[0]
    ner = nlp.get_pipe(component)
    labels = list(ner.labels)
    gold_labels = sorted({e.label_ for d in gold_docs for e in d.ents})
    unknown = sorted(set(gold_labels) - set(labels))
    if unknown:
        raise ValueError(f"DEV has entity label(s) {unknown} that the model does not predict (model labels: {labels})")
    unknown = sorted(set(overrides) - set(labels))
    if unknown:
        raise ValueError(f"policy override(s) for unknown label(s) {unknown} (model labels: {labels})")
    for text in [policy, *overrides.values()]:
        parse_policy(text)
    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}': use one of {', '.join(METHODS)}")
    if bootstrap < 0 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap must be >= 0 and confidence in (0, 1), not {bootstrap} and {confidence}")
    predictions = collect_predictions(nlp, component, gold_docs)
    results = calibrate_predictions(
        predictions, method, policy, overrides, min_spans, default_threshold, bootstrap, confidence, seed
    )
    ner.set_calibration({label: r.calibrator for label, r in results.items()}, {label: r.threshold for label, r in results.items()})
    return results


def collect_predictions(nlp, component: str, gold_docs: Sequence) -> Dict[str, TypePredictions]:
    """Run the pipeline on the gold docs' words; per type, every decoded entity's
    raw score (from the span group, so thresholds already set filter nothing)
    and whether it is exactly right.

    A gold entity that overlaps an entity set before the ner_plus pipe (by a
    pattern component such as pii_patterns or an entity_ruler: in ``doc.ents``
    but not in the pipe's span group) is not the pipe's to find, so it does
    not count in the type's gold total (its recall, its threshold)."""
    ner = nlp.get_pipe(component)
    out = {label: TypePredictions() for label in ner.labels}
    key = ner.spans_key
    for eg in predict_examples(nlp, gold_docs):
        group = eg.predicted.spans[key]
        decoded = {(s.start, s.end, s.label_) for s in group}
        preset = [(e.start, e.end) for e in eg.predicted.ents if (e.start, e.end, e.label_) not in decoded]
        gold = {(e.start, e.end, e.label_) for e in eg.reference.ents}
        for start, end, label in gold:
            if not any(s < end and start < e for s, e in preset):
                out[label].n_gold += 1
        for span, score in zip(group, group.attrs["raw_scores"]):
            out[span.label_].raw.append(float(score))
            out[span.label_].correct.append((span.start, span.end, span.label_) in gold)
            out[span.label_].lengths.append(len(span))
    return out
