import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

from spacy_ner_plus.evaluate import analyse_errors, evaluate_examples, strict_scores, tag_sequences

VOCAB = Vocab()
LABELS = ["PER", "LOC", "ORG"]


def make_doc(n, spans, sent_len=None):
    words = [f"w{i}" for i in range(n)]
    sent_starts = None
    if sent_len:
        sent_starts = [i % sent_len == 0 for i in range(n)]
    doc = Doc(VOCAB, words=words, sent_starts=sent_starts)
    doc.ents = [Span(doc, s, e, label=l) for s, e, l in spans]
    return doc


@st.composite
def spans(draw, n):
    out, i = [], 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, min(3, n - i)))
            out.append((i, i + length, draw(st.sampled_from(LABELS))))
            i += length
        i += draw(st.integers(1, 2))
    return out


@st.composite
def example_sets(draw):
    examples = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 20))
        gold = make_doc(n, draw(spans(n)), sent_len=draw(st.sampled_from([None, 5])))
        pred = make_doc(n, draw(spans(n)))
        examples.append(Example(pred, gold))
    return examples


@given(examples=example_sets())
@settings(max_examples=150, deadline=None)
def test_strict_f1_equals_spacy_scorer_and_seqeval(examples):
    ours = strict_scores(examples, "IOB2")
    spacy_f = Scorer.score_spans(examples, "ents")["ents_f"]
    y_true, y_pred = tag_sequences(examples, "IOB2")
    seqeval_f = f1_score(y_true, y_pred, mode="strict", scheme=IOB2, zero_division=0) if any(
        t != "O" for s in y_true + y_pred for t in s
    ) else 0.0
    if spacy_f is None:  # no gold and no predicted entity
        assert ours["f1"] == 0.0
    else:
        assert ours["f1"] == pytest.approx(spacy_f)
    assert ours["f1"] == pytest.approx(seqeval_f)
    assert strict_scores(examples, "BIOES")["f1"] == pytest.approx(ours["f1"])


def test_error_analysis_categories():
    gold = make_doc(20, [(0, 2, "PER"), (4, 5, "LOC"), (7, 9, "ORG"), (11, 12, "PER"), (15, 16, "LOC")])
    pred = make_doc(20, [(0, 2, "PER"), (4, 5, "ORG"), (7, 8, "ORG"), (11, 13, "LOC"), (18, 19, "PER")])
    analysis = analyse_errors([Example(pred, gold)])
    assert analysis["counts"] == {"correct": 1, "type": 1, "boundary": 1, "boundary+type": 1, "missed": 1, "spurious": 1}
    confusion = analysis["confusion"]
    assert confusion["LOC"]["ORG"] == 1 and confusion["LOC"]["O"] == 1 and confusion["O"]["PER"] == 1
    assert confusion["PER"]["PER"] == 1 and confusion["PER"]["LOC"] == 1
    kinds = {s["kind"] for s in analysis["examples"]}
    assert kinds == {"type", "boundary", "boundary+type", "missed", "spurious"}


def test_evaluate_writes_outputs(tmp_path):
    gold = make_doc(10, [(0, 2, "PER"), (4, 5, "LOC")])
    pred = make_doc(10, [(0, 2, "PER"), (4, 5, "ORG")])
    metrics = evaluate_examples([Example(pred, gold)], "IOB2", tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "per_type"} <= set(saved)
    assert saved["f1"] == pytest.approx(0.5) == metrics["f1"]
    assert saved["per_type"]["PER"]["f1"] == pytest.approx(1.0)
    assert saved["per_type"]["LOC"]["recall"] == 0.0
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert "| LOC | O |" not in report and "type" in report
