"""Calibration of a pipeline's ner_plus on DEV docs: run it, collect each
decoded entity's raw score and exactness, fit (calibration.py) and store the
calibrators and thresholds in the pipe.

A ``recall:R`` policy that no threshold reaches on DEV (a threshold only
removes decoded entities) gets a decoding bias (decoding.bias_vector): the
smallest value of ``BIAS_GRID`` at which the type's DEV recall, with its
threshold chosen as the policy does (the bootstrap lower bound included),
reaches R. Each value is tried by decoding DEV again from the per-token
distributions of the one forward pass (no second pass; a few hundred
milliseconds per value for ~500 sentences), and every type's calibrator and
threshold is fitted again on the entities decoded with it, since the bias
changes which entities there are. When no value reaches R, the bias of the
highest recall is kept (the smallest among ties, none when the bias never
raises it), with a note giving that recall and its precision. Several
``recall:R`` types are searched in label order, each with the biases chosen
before it held.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc

from .. import decoding
from ..calibration import METHODS, TypeCalibration, TypePredictions, calibrate_predictions, parse_policy
from ..metrics import prf
from ..pipeline.ner_plus import ner_plus_pipe_names

# Decoding biases tried for a recall:R policy, in log-probability units (b: a
# type's tag wins over O where its probability is above e^-b of O's: 0.78 at
# 0.25, 0.37 at 1, 0.05 at 3, 0.0003 at 8).
BIAS_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


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
    bias_grid: Sequence[float] = BIAS_GRID,
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
    bias_grid (Sequence[float]): decoding biases tried, in this order, for a
        ``recall:R`` type that thresholds cannot bring to R (module docstring); () tries none.
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
    if any(b <= 0 or not numpy.isfinite(b) for b in bias_grid):
        raise ValueError(f"the bias grid must hold finite numbers > 0, not {list(bias_grid)}")
    # DEV is decoded with no bias whatever the pipe holds: a bias stored by an earlier calibration decides nothing
    dev = DevDecoding(nlp, component, gold_docs)
    results, bias = search_decoding_bias(
        dev.predictions,
        lambda predictions: calibrate_predictions(
            predictions, method, policy, overrides, min_spans, default_threshold, bootstrap, confidence, seed
        ),
        bias_grid,
    )
    ner.set_calibration(
        {label: r.calibrator for label, r in results.items()}, {label: r.threshold for label, r in results.items()}, bias
    )
    return results


def search_decoding_bias(
    predict: Callable[[Dict[str, float]], Dict[str, TypePredictions]],
    fit: Callable[[Dict[str, TypePredictions]], Dict[str, TypeCalibration]],
    grid: Sequence[float] = BIAS_GRID,
) -> Tuple[Dict[str, TypeCalibration], Dict[str, float]]:
    """Calibration with a decoding bias for each ``recall:R`` type that its threshold
    cannot bring to R (module docstring).

    predict: decoding biases (label -> b) -> DEV's predictions per type.
    fit: DEV's predictions -> per type, calibrator and threshold (calibrate_predictions).
    RETURNS: the calibration of DEV decoded with the biases chosen, and the biases.
    """
    bias: Dict[str, float] = {}
    results = fit(predict(bias))
    for label in sorted(results):
        if results[label].reached is not False:  # another policy, or R reached
            continue
        target = parse_policy(results[label].policy)[1]
        tried = [(0.0, results)]
        for b in grid:
            trial = fit(predict({**bias, label: float(b)}))
            tried.append((float(b), trial))
            if trial[label].reached:
                break
        rows = [_search_row(b, r[label]) for b, r in tried]
        if tried[-1][1][label].reached:
            chosen = len(tried) - 1
            note = f"thresholds alone reach recall {rows[0]['recall_bound']:.3f} < {target}: decoding bias {rows[chosen]['bias']:g} reaches {rows[chosen]['recall_bound']:.3f}"
        else:
            # the highest recall (as the policy measures it); the smallest bias among ties
            chosen = max(range(len(tried)), key=lambda i: (rows[i]["recall_bound"], -i))
            note = (
                f"no decoding bias up to {tried[-1][0]:g} reaches recall {target}: bias {rows[chosen]['bias']:g} "
                f"gives the most, {rows[chosen]['recall_bound']:.3f}"
            )
        note += f" at precision {rows[chosen]['precision']:.3f} on DEV (with no bias: {rows[0]['precision']:.3f})"
        b, results = tried[chosen]
        if b:
            bias[label] = b
        results[label].bias_search = rows
        results[label].notes.append(note)
    for label, b in bias.items():
        results[label].decoding_bias = b
    return results, bias


def _search_row(bias: float, r: TypeCalibration) -> Dict:
    """One bias tried: what the type's threshold keeps on DEV."""
    kept = r.calibrated >= r.threshold
    tp = int(r.correct[kept].sum())
    precision, recall, _ = prf(tp, int(kept.sum()), r.n_gold)
    return {
        "bias": bias,
        "n_predicted": int(len(r.raw)),
        "threshold": r.threshold,
        "precision": precision,
        "recall": recall,
        "recall_bound": r.recall_bound,
        "reached": bool(r.reached),
    }


class DevDecoding:
    """DEV through a pipeline once, its ner_plus decoded again with any decoding bias.

    The components before the ner_plus pipe run on copies of the gold docs'
    words (gold tokenization and sentences kept, as evaluate's predict_examples);
    the pipe's model runs once, in the batches ``nlp.pipe`` would give it
    (``NerPlus.pipe_probabilities``); decoding with no bias annotates the docs
    and the components after it run, as ``nlp.pipe`` would. ``predictions(bias)``
    decodes the stored distributions again.
    """

    def __init__(self, nlp, component: str, gold_docs: Sequence, batch_size: int = 64) -> None:
        self.ner = nlp.get_pipe(component)
        self.gold_docs = list(gold_docs)
        names = nlp.pipe_names
        if component not in names:
            raise ValueError(f"the ner_plus pipe {component!r} is disabled: enable it to calibrate it")
        at = names.index(component)
        inputs = []
        for gold in self.gold_docs:
            sent_starts = [bool(t.is_sent_start) for t in gold] if gold.has_annotation("SENT_START") else None
            inputs.append(Doc(nlp.vocab, words=[t.text for t in gold], spaces=[bool(t.whitespace_) for t in gold], sent_starts=sent_starts))
        with nlp.select_pipes(enable=names[:at]):
            docs = list(nlp.pipe(inputs, batch_size=batch_size))
        pairs = list(self.ner.pipe_probabilities(docs, batch_size=batch_size))
        docs = [doc for doc, _ in pairs]
        self.found = [found for _, found in pairs]
        self.ner.set_annotations(docs, [self.ner.decode_probabilities(found) for found in self.found])
        with nlp.select_pipes(enable=names[at + 1 :]):
            docs = list(nlp.pipe(docs, batch_size=batch_size))
        self.unbiased = _type_predictions(self.ner, docs, self.gold_docs)

    def predictions(self, decoding_bias: Dict[str, float]) -> Dict[str, TypePredictions]:
        """Per type, the entities decoded with ``decoding_bias`` (label -> b), each with its raw
        score and exactness; the gold totals are those of the run without a bias."""
        vector = decoding.bias_vector(self.ner.tags, decoding_bias)
        if vector is None:
            return self.unbiased
        out = {label: TypePredictions(n_gold=p.n_gold) for label, p in self.unbiased.items()}
        for found, gold_doc in zip(self.found, self.gold_docs):
            gold = {(e.start, e.end, e.label_) for e in gold_doc.ents}
            pred = self.ner.decode_probabilities(found, vector)
            for (start, end, label), score in zip(pred.spans, pred.confidences):
                out[label].raw.append(float(score))
                out[label].correct.append((start, end, label) in gold)
                out[label].lengths.append(end - start)
        return out



def collect_predictions(nlp, component: str, gold_docs: Sequence) -> Dict[str, TypePredictions]:
    """Run the pipeline on the gold docs' words; per type, every decoded entity's
    raw score (from the span group, so thresholds already set filter nothing)
    and whether it is exactly right.

    A gold entity that overlaps an entity set before the ner_plus pipe (by a
    pattern component such as pii_patterns or an entity_ruler: in ``doc.ents``
    but not in the pipe's span group) is not the pipe's to find, so it does
    not count in the type's gold total (its recall, its threshold)."""
    return DevDecoding(nlp, component, gold_docs).unbiased


def _type_predictions(ner, docs: Sequence[Doc], gold_docs: Sequence[Doc]) -> Dict[str, TypePredictions]:
    """collect_predictions' count on docs the pipeline annotated."""
    out = {label: TypePredictions() for label in ner.labels}
    key = ner.spans_key
    for doc, gold_doc in zip(docs, gold_docs):
        group = doc.spans[key]
        decoded = {(s.start, s.end, s.label_) for s in group}
        preset = [(e.start, e.end) for e in doc.ents if (e.start, e.end, e.label_) not in decoded]
        gold = {(e.start, e.end, e.label_) for e in gold_doc.ents}
        for start, end, label in gold:
            if not any(s < end and start < e for s, e in preset):
                out[label].n_gold += 1
        for span, score in zip(group, group.attrs["raw_scores"]):
            out[span.label_].raw.append(float(score))
            out[span.label_].correct.append((span.start, span.end, span.label_) in gold)
            out[span.label_].lengths.append(len(span))
    return out
