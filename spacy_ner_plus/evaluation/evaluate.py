"""Entity-level evaluation: seqeval strict scores and an error analysis.

Entities are read by seqeval in strict mode from the gold and predicted tag
sequences (one sequence per sentence when the gold docs have sentence
boundaries, else per doc) and scored per type from their counts (``prf``,
the one precision/recall/F1 helper of the package). For spans that never
overlap, strict IOB2 and BIOES scoring both equal exact span matching, which
is what spaCy's Scorer ``ents_f`` computes; tests check the three agree,
adjacent same-type entities included.

Error categories, per gold/predicted entity pair that is not an exact match:
- ``type``: same boundaries, other label (a confusion LOC -> ORG);
- ``boundary``: overlapping, same label, other boundaries;
- ``boundary+type``: overlapping, other boundaries and label;
- ``spurious``: a predicted entity that overlaps no gold entity;
- ``missed``: a gold entity that overlaps no predicted entity.

Gold entities of a type the pipeline cannot predict (``entity_labels``) can
only be misses; ``evaluate_examples`` names those types and their counts in
``unknown_gold_types`` and ``warnings`` instead of scoring them without a word.
"""
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from seqeval.scheme import IOB2, IOBES, Entities
from spacy.tokens import Doc, Span
from spacy.training import Example

from ..decoding import join_touching
from ..metrics import prf
from ..schemes import SpanTuple, spans_to_tags

NONE_LABEL = "O"
SEQEVAL_SCHEMES = {"IOB2": IOB2, "BIOES": IOBES}


def doc_spans(doc: Doc) -> List[SpanTuple]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def _segments(eg: Example) -> List[Tuple[int, int]]:
    """Gold sentences, merged where a gold or predicted entity crosses a boundary."""
    doc = eg.reference
    if not doc.has_annotation("SENT_START"):
        return [(0, len(doc))]
    inside = set()
    for d in (eg.reference, eg.predicted):
        for ent in d.ents:
            inside.update(range(ent.start + 1, ent.end))
    starts = [s.start for s in doc.sents if s.start not in inside] + [len(doc)]
    return list(zip(starts, starts[1:]))


def tag_sequences(examples: Sequence[Example], scheme: str = "IOB2") -> Tuple[List[List[str]], List[List[str]]]:
    """Gold and predicted tags, one sequence per gold sentence, in ``scheme``.

    Sentences that an entity crosses are scored together, so scores equal
    exact span matching; tokenizations must match.
    """
    y_true: List[List[str]] = []
    y_pred: List[List[str]] = []
    for eg in examples:
        if len(eg.reference) != len(eg.predicted):
            raise ValueError(
                f"gold and predicted docs differ in length ({len(eg.reference)} vs "
                f"{len(eg.predicted)} tokens): evaluation needs the gold tokenization"
            )
        for start, end in _segments(eg):
            for doc, out in ((eg.reference, y_true), (eg.predicted, y_pred)):
                spans = [(s - start, e - start, label) for s, e, label in doc_spans(doc) if start <= s < end]
                out.append(spans_to_tags(spans, end - start, scheme))
    return y_true, y_pred


def strict_scores(examples: Sequence[Example], scheme: str = "IOB2") -> Dict[str, Any]:
    """Micro and per-type precision, recall, F1 in seqeval's strict mode.

    Entities are read from the tag sequences by seqeval (``seqeval.scheme.Entities``,
    what its strict mode scores), counted per type, and turned into scores by ``prf``;
    a test checks the result equals seqeval's ``classification_report``.
    RETURNS (Dict[str, Any]): keys precision, recall, f1, support (gold entities),
        predicted, correct, and per_type (label -> the same keys).
    """
    y_true, y_pred = tag_sequences(examples, scheme)
    gold = Entities(y_true, SEQEVAL_SCHEMES[scheme])
    pred = Entities(y_pred, SEQEVAL_SCHEMES[scheme])
    per_type = {}
    for label in sorted(gold.unique_tags | pred.unique_tags):
        gold_set, pred_set = gold.filter(label), pred.filter(label)
        per_type[label] = _scores(len(gold_set & pred_set), len(pred_set), len(gold_set))
    micro = _scores(*(sum(d[k] for d in per_type.values()) for k in ("correct", "predicted", "support")))
    return {**micro, "per_type": per_type}


def overlap_scores(examples: Sequence[Example]) -> Dict[str, Any]:
    """Micro and per-type scores under the overlap criterion.

    A gold entity is found when a predicted entity of its type shares a token
    with it (recall); a predicted entity is right when it shares a token with a
    gold entity of its type (precision). For long spans with loose boundaries
    (resume skills, job titles), where strict matching counts "Java, Python"
    against "Java" as two errors. One pass over each doc's tokens.
    RETURNS (Dict[str, Any]): precision, recall, f1 and per_type, as ``strict_scores``
        (``correct`` counts found gold entities, ``predicted_right`` right predictions).
    """
    found: Counter = Counter()
    right: Counter = Counter()
    support: Counter = Counter()
    predicted: Counter = Counter()
    for eg in examples:
        for doc, other, hits, totals in ((eg.reference, eg.predicted, found, support), (eg.predicted, eg.reference, right, predicted)):
            label_at = [None] * len(other)
            for ent in other.ents:
                label_at[ent.start : ent.end] = [ent.label_] * len(ent)
            for ent in doc.ents:
                totals[ent.label_] += 1
                if ent.label_ in label_at[ent.start : ent.end]:
                    hits[ent.label_] += 1

    def scores(label_found: int, label_right: int, n_gold: int, n_pred: int) -> Dict[str, Any]:
        precision = label_right / n_pred if n_pred else 0.0
        recall = label_found / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": n_gold, "predicted": n_pred,
                "correct": label_found, "predicted_right": label_right}

    per_type = {label: scores(found[label], right[label], support[label], predicted[label]) for label in sorted(support | predicted)}
    micro = scores(sum(found.values()), sum(right.values()), sum(support.values()), sum(predicted.values()))
    return {**micro, "per_type": per_type}


def _scores(correct: int, predicted: int, support: int) -> Dict[str, Any]:
    precision, recall, f1 = prf(correct, predicted, support)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted, "correct": correct}


def analyse_errors(examples: Sequence[Example], max_examples: int = 20, context: int = 6, max_false_positives: int = 20) -> Dict[str, Any]:
    """Classify every non-exact entity and build a confusion matrix.

    The confusion matrix counts, for each gold entity, the label of the
    predicted entity matching it exactly or else overlapping it most (``O``
    when none), and for each spurious prediction a row ``O``.
    ``false_positives`` ranks the predicted (text, label) pairs that are not
    a gold entity, most frequent first, with how many of them overlap no
    gold entity at all (spurious): the error analysis that finds a rule.
    RETURNS (Dict[str, Any]): counts, confusion (gold -> predicted -> n),
        false_positives, examples.
    """
    counts: Counter = Counter()
    wrong: Counter = Counter()
    spurious: Counter = Counter()
    confusion: Dict[str, Counter] = {}
    samples: List[Dict[str, Any]] = []
    for doc_index, eg in enumerate(examples):
        gold = doc_spans(eg.reference)
        pred = doc_spans(eg.predicted)
        pred_set = set(pred)
        matched_pred = set()
        for g in gold:
            gs, ge, gl = g
            if g in pred_set:
                confusion.setdefault(gl, Counter())[gl] += 1
                counts["correct"] += 1
                matched_pred.add(g)
                continue
            overlaps = [p for p in pred if p[0] < ge and gs < p[1]]
            if not overlaps:
                kind, best = "missed", None
            else:
                best = max(overlaps, key=lambda p: (min(p[1], ge) - max(p[0], gs), -p[0]))
                matched_pred.update(overlaps)
                if (best[0], best[1]) == (gs, ge):
                    kind = "type"
                else:
                    kind = "boundary" if best[2] == gl else "boundary+type"
            counts[kind] += 1
            confusion.setdefault(gl, Counter())[best[2] if best else NONE_LABEL] += 1
            if len(samples) < max_examples:
                samples.append(_sample(eg, doc_index, kind, g, best, context))
        gold_set = set(gold)
        for p in pred:
            if p not in gold_set:
                wrong[(eg.predicted[p[0]:p[1]].text, p[2])] += 1
            if p not in matched_pred and not any(g[0] < p[1] and p[0] < g[1] for g in gold):
                spurious[(eg.predicted[p[0]:p[1]].text, p[2])] += 1
                counts["spurious"] += 1
                confusion.setdefault(NONE_LABEL, Counter())[p[2]] += 1
                if len(samples) < max_examples:
                    samples.append(_sample(eg, doc_index, "spurious", None, p, context))
    # O last and once: it is both a row (spurious) and a column (missed)
    entity_labels = {l for row in confusion.values() for l in row} | set(confusion)
    labels = sorted(entity_labels - {NONE_LABEL}) + [NONE_LABEL]
    matrix = {g: {p: int(confusion.get(g, Counter())[p]) for p in labels} for g in labels}
    for kind in ("correct", "type", "boundary", "boundary+type", "spurious", "missed"):
        counts.setdefault(kind, 0)
    false_positives = [
        {"text": text, "label": label, "count": n, "spurious": spurious[(text, label)]}
        for (text, label), n in sorted(wrong.items(), key=lambda item: (-item[1], item[0]))[:max_false_positives]
    ]
    return {"counts": dict(counts), "labels": labels, "confusion": matrix, "false_positives": false_positives, "examples": samples}


def _sample(eg: Example, doc_index: int, kind: str, gold: Optional[SpanTuple], pred: Optional[SpanTuple], context: int) -> Dict[str, Any]:
    doc = eg.reference
    anchor = gold or pred
    assert anchor is not None
    left = max(0, anchor[0] - context)
    right = min(len(doc), anchor[1] + context)
    return {
        "doc": doc_index,
        "kind": kind,
        "gold": None if gold is None else {"text": doc[gold[0]:gold[1]].text, "label": gold[2], "start": gold[0], "end": gold[1]},
        "pred": None if pred is None else {"text": doc[pred[0]:pred[1]].text, "label": pred[2], "start": pred[0], "end": pred[1]},
        "context": doc[left:right].text,
    }


def touching_pairs(examples: Sequence[Example]) -> Dict[str, int]:
    """Per label, how many pairs of predicted entities of that type touch
    (``B-X B-X``: often one mention cut in pieces)."""
    pairs: Counter = Counter()
    for eg in examples:
        pred = doc_spans(eg.predicted)
        for a, b in zip(pred, pred[1:]):
            if a[1] == b[0] and a[2] == b[2]:
                pairs[a[2]] += 1
    return dict(sorted(pairs.items()))


def join_touching_examples(examples: Sequence[Example]) -> List[Example]:
    """The examples with each run of touching predicted entities of one type joined into one."""
    joined = []
    for eg in examples:
        doc = eg.predicted.copy()
        doc.ents = [Span(doc, s, e, label=label) for s, e, label in join_touching(doc_spans(eg.predicted))]
        joined.append(Example(doc, eg.reference))
    return joined


def confusion_array(analysis: Dict[str, Any]) -> Tuple[List[str], numpy.ndarray]:
    """The confusion matrix of ``analyse_errors`` as (labels, counts[gold, predicted])."""
    labels = analysis["labels"]
    return labels, numpy.array([[analysis["confusion"][g][p] for p in labels] for g in labels], dtype=int).reshape(len(labels), len(labels))


def plot_confusion(analysis: Dict[str, Any], path: Path) -> None:
    """Write the confusion matrix as a PNG heatmap (rows gold, columns predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = confusion_array(analysis)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(labels), 1 + 0.7 * len(labels)))
    im = ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    threshold = values.max() / 2 if values.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(values[i, j]), ha="center", va="center", color="white" if values[i, j] > threshold else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("Entity confusion (O = no entity)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_report(metrics: Dict[str, Any], analysis: Dict[str, Any]) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Strict entity-level scores (seqeval, {metrics['scheme']}), {metrics['support']} gold entities.",
        "",
    ]
    for warning in metrics.get("warnings", []):
        lines += [f"**Warning**: {warning}.", ""]
    lines += [
        "| type | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, d in metrics["per_type"].items():
        lines.append(f"| {label} | {d['precision']:.4f} | {d['recall']:.4f} | {d['f1']:.4f} | {d['support']} |")
    lines.append(f"| **micro** | **{metrics['precision']:.4f}** | **{metrics['recall']:.4f}** | **{metrics['f1']:.4f}** | {metrics['support']} |")
    if "overlap" in metrics:
        o = metrics["overlap"]
        lines += [
            "", "## Overlap criterion", "",
            "A gold entity is found when a predicted entity of its type shares a token with it (recall); a predicted "
            "entity is right when it shares a token with a gold entity of its type (precision). For types whose "
            "boundaries are loose (skills, job titles), where strict matching counts a near miss twice.", "",
            "| type | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |",
        ]
        for label, d in o["per_type"].items():
            lines.append(f"| {label} | {d['precision']:.4f} | {d['recall']:.4f} | {d['f1']:.4f} | {d['support']} |")
        lines.append(f"| **micro** | **{o['precision']:.4f}** | **{o['recall']:.4f}** | **{o['f1']:.4f}** | {o['support']} |")
    if "confidence" in metrics:
        c = metrics["confidence"]
        lines += [
            "", "## Confidence calibration on this data", "",
            "Expected calibration error (15 equal-width bins) and Brier score of every decoded entity's confidence "
            "against being exactly right: raw, and as served (`ent._.confidence`, after the pipeline's calibrators; "
            "the same as raw when it has none).", "",
            "| type | entities | ECE raw | ECE served | Brier raw | Brier served |", "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, d in [*c["per_type"].items(), ("**all**", c["overall"])]:
            lines.append(f"| {label} | {d['n']} | {d['ece_raw']:.4f} | {d['ece']:.4f} | {d['brier_raw']:.4f} | {d['brier']:.4f} |")
        lines += ["", "![reliability](reliability.png)"]
    lines += ["", "## Errors", "", "| kind | count |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in analysis["counts"].items()]
    labels = analysis["labels"]
    lines += ["", "## Confusion matrix (rows gold, columns predicted; O = no entity)", ""]
    lines.append("| gold \\ pred | " + " | ".join(labels) + " |")
    lines.append("| --- |" + " ---: |" * len(labels))
    for g in labels:
        lines.append(f"| {g} | " + " | ".join(str(analysis["confusion"][g][p]) for p in labels) + " |")
    lines += ["", "![confusion matrix](confusion.png)"]
    if analysis["false_positives"]:
        lines += [
            "", "## Most frequent false positives", "",
            "Predicted entities that are not a gold entity, by text and type; spurious: overlapping no gold entity.", "",
            "| predicted | type | count | spurious |", "| --- | --- | ---: | ---: |",
        ]
        for fp in analysis["false_positives"]:
            text = fp["text"].replace("|", "\\|")
            lines.append(f"| {text} | {fp['label']} | {fp['count']} | {fp['spurious']} |")
    touching = metrics.get("if_touching_joined")
    if touching and touching["pairs"]:
        pairs = ", ".join(f"{label} {n}" for label, n in touching["pairs"].items())
        lines += [
            "", "## Touching entities of one type", "",
            f"Pairs of predicted entities of one type that touch (`B-X B-X`, often one mention cut in pieces): {pairs}. "
            f"Each run joined into one entity, strict F1 would be {100 * touching['f1']:.2f} (P {100 * touching['precision']:.2f}, "
            f"R {100 * touching['recall']:.2f}) instead of {100 * metrics['f1']:.2f}. ner_plus decodes so with "
            "`join_touching = true`; judge it on dev data, and calibrate again after setting it.",
        ]
    lines += ["", "## Example errors", "", "Rendered in [errors.html](errors.html).", ""]
    for s in analysis["examples"]:
        gold = f"{s['gold']['text']!r} {s['gold']['label']}" if s["gold"] else "-"
        pred = f"{s['pred']['text']!r} {s['pred']['label']}" if s["pred"] else "-"
        lines.append(f"- doc {s['doc']}, **{s['kind']}**: gold {gold}, predicted {pred} — “{s['context']}”")
    return "\n".join(lines) + "\n"


def confidence_scores(examples: Sequence[Example], spans_key: str) -> Dict[str, Dict[str, List]]:
    """Per type, every scored entity in ``doc.spans[spans_key]``: its score
    (calibrated, when the pipe is), its raw score, and whether it is exactly right."""
    out: Dict[str, Dict[str, List]] = {}
    for eg in examples:
        group = eg.predicted.spans.get(spans_key)
        if group is None:
            continue
        gold = {(e.start, e.end, e.label_) for e in eg.reference.ents}
        raw_scores = group.attrs.get("raw_scores", group.attrs.get("scores", []))
        for span, score, raw in zip(group, group.attrs.get("scores", []), raw_scores):
            entry = out.setdefault(span.label_, {"scores": [], "raw": [], "correct": []})
            entry["scores"].append(float(score))
            entry["raw"].append(float(raw))
            entry["correct"].append((span.start, span.end, span.label_) in gold)
    return out


def confidence_summary(scored: Dict[str, Dict[str, List]]) -> Dict[str, Any]:
    """ECE (15 bins) and Brier of the raw and the served scores, overall and per type."""
    from ..metrics import brier, ece

    def summary(scores, raw, correct):
        return {"n": len(scores), "ece": ece(scores, correct), "ece_raw": ece(raw, correct),
                "brier": brier(scores, correct), "brier_raw": brier(raw, correct)}

    every = {key: [v for entry in scored.values() for v in entry[key]] for key in ("scores", "raw", "correct")}
    return {"overall": summary(every["scores"], every["raw"], every["correct"]),
            "per_type": {label: summary(e["scores"], e["raw"], e["correct"]) for label, e in scored.items()}}


# pipes that set doc.ents but only remove entities: they add no type to what the pipeline predicts
_FILTER_FACTORIES = ("ner_plus_entity_filter",)


def entity_labels(nlp: Any) -> Optional[List[str]]:
    """The entity types a pipeline can predict: the labels of every pipe that
    assigns ``doc.ents`` (ner_plus, pii_patterns, spaCy's ner and rulers).

    nlp (Language): the pipeline.
    RETURNS (Optional[List[str]]): the sorted types, or None when a pipe that
        assigns ``doc.ents`` does not list its labels (then nobody can say).
    """
    labels = set()
    for name, pipe in nlp.pipeline:
        meta = nlp.get_pipe_meta(name)
        if "doc.ents" not in meta.assigns or meta.factory in _FILTER_FACTORIES:
            continue
        pipe_labels = getattr(pipe, "labels", None)
        if not isinstance(pipe_labels, (tuple, list)) or not all(isinstance(label, str) for label in pipe_labels):
            return None
        labels.update(pipe_labels)
    return sorted(labels)


def unknown_gold_types(examples: Sequence[Example], model_labels: Iterable[str]) -> Dict[str, int]:
    """Gold entities per type that is not among ``model_labels``: each can only be a miss."""
    known = set(model_labels)
    counts: Counter = Counter(ent.label_ for eg in examples for ent in eg.reference.ents if ent.label_ not in known)
    return dict(sorted(counts.items()))


def evaluate_examples(
    examples: Sequence[Example],
    scheme: str = "IOB2",
    output: Optional[Path] = None,
    spans_key: Optional[str] = None,
    model_labels: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """Score examples; with ``output``, write metrics.json, report.md, confusion.png and
    errors.html (the example errors rendered with displaCy, for a reviewer).
    With ``spans_key`` (a ner_plus pipe's scored span group), also how well its
    confidences are calibrated on these examples, and reliability.png.

    examples (Sequence[Example]): predicted and gold docs.
    scheme (str): ``IOB2`` or ``BIOES``, the strict seqeval scheme.
    output (Optional[Path]): directory for the files above.
    spans_key (Optional[str]): a ner_plus pipe's scored span group.
    model_labels (Optional[Iterable[str]]): the types the pipeline can predict
        (``entity_labels``); given, ``unknown_gold_types`` counts the gold
        entities of any other type, and ``warnings`` says they can only be misses.
    RETURNS (Dict[str, Any]): the metrics written to metrics.json.
    """
    metrics = strict_scores(examples, scheme)
    metrics["scheme"] = scheme
    metrics["overlap"] = overlap_scores(examples)
    if model_labels is not None:
        unknown = unknown_gold_types(examples, model_labels)
        metrics["unknown_gold_types"] = unknown
        metrics["warnings"] = []
        if unknown:
            counts = ", ".join(f"{label} {n}" for label, n in unknown.items())
            metrics["warnings"].append(
                f"the gold data has {sum(unknown.values())} entities of types the pipeline does not predict ({counts}; "
                f"it knows {', '.join(sorted(set(model_labels))) or 'none'}): they can only count as misses, "
                "lowering recall and F1"
            )
    analysis = analyse_errors(examples)
    metrics["errors"] = analysis["counts"]
    metrics["confusion"] = analysis["confusion"]
    metrics["false_positives"] = analysis["false_positives"]
    # the scores with every touching run joined (decoding.join_touching: what ner_plus
    # decodes with join_touching = true, before its thresholds); nothing touches: the same
    pairs = touching_pairs(examples)
    joined = strict_scores(join_touching_examples(examples), scheme) if pairs else metrics
    metrics["if_touching_joined"] = {"pairs": pairs, **{k: joined[k] for k in ("f1", "precision", "recall")}}
    scored = confidence_scores(examples, spans_key) if spans_key else {}
    if scored:
        metrics["confidence"] = confidence_summary(scored)
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
        (output / "report.md").write_text(markdown_report(metrics, analysis), encoding="utf8")
        plot_confusion(analysis, output / "confusion.png")
        if scored:
            from .calibration_report import plot_reliability

            correct = [v for e in scored.values() for v in e["correct"]]
            plot_reliability(
                {"raw": ([v for e in scored.values() for v in e["raw"]], correct),
                 "served (calibrated)": ([v for e in scored.values() for v in e["scores"]], correct)},
                output / "reliability.png",
                "this data",
            )
        from .visualize import errors_page

        (output / "errors.html").write_text(errors_page(examples, analysis["examples"]), encoding="utf8")
    return metrics


def predict_examples(nlp: Any, gold_docs: Iterable[Doc], batch_size: int = 64) -> List[Example]:
    """Run ``nlp`` on copies of the gold docs' words (gold tokenization and sentences kept)."""
    gold_docs = list(gold_docs)
    inputs = []
    for gold in gold_docs:
        sent_starts = [bool(t.is_sent_start) for t in gold] if gold.has_annotation("SENT_START") else None
        inputs.append(Doc(nlp.vocab, words=[t.text for t in gold], spaces=[bool(t.whitespace_) for t in gold], sent_starts=sent_starts))
    predicted = list(nlp.pipe(inputs, batch_size=batch_size))
    return [Example(pred, gold) for pred, gold in zip(predicted, gold_docs)]
