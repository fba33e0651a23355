import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2, IOBES
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

from spacy_ner_plus.evaluation.evaluate import (
    analyse_errors, confusion_array, entity_labels, evaluate_examples, overlap_scores, strict_scores, tag_sequences, touching_pairs, unknown_gold_types,
)
from spacy_ner_plus.metrics import prf

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
    """Non-overlapping spans, often adjacent (gap 0) and of the same type: the case
    where IOB2 needs B- to separate two entities and lenient scorers go wrong."""
    out, i = [], 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, min(3, n - i)))
            out.append((i, i + length, draw(st.sampled_from(LABELS))))
            i += length
            i += draw(st.integers(0, 2))
        else:
            i += 1
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
    assert strict_scores(examples, "BIOES") == ours


@given(examples=example_sets())
@settings(max_examples=100, deadline=None)
def test_strict_scores_equal_seqeval_classification_report(examples):
    """prf on seqeval's strict entities gives seqeval's own per-type and micro numbers."""
    ours = strict_scores(examples, "IOB2")
    y_true, y_pred = tag_sequences(examples, "IOB2")
    if not any(t != "O" for s in y_true + y_pred for t in s):
        assert ours["per_type"] == {} and ours["f1"] == 0.0
        return
    report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    for label, d in ours["per_type"].items():
        assert (d["precision"], d["recall"], d["f1"], d["support"]) == pytest.approx(
            (report[label]["precision"], report[label]["recall"], report[label]["f1-score"], report[label]["support"])
        )
    assert set(ours["per_type"]) == {k for k in report if not k.endswith(" avg")}
    micro = report["micro avg"]
    assert (ours["precision"], ours["recall"], ours["f1"], ours["support"]) == pytest.approx(
        (micro["precision"], micro["recall"], micro["f1-score"], micro["support"])
    )


def test_adjacent_same_type_entities_are_two_entities():
    """gold B-PER B-PER O B-LOC: a prediction merging the two PER is wrong, as in seqeval and spaCy."""
    gold = make_doc(4, [(0, 1, "PER"), (1, 2, "PER"), (3, 4, "LOC")])
    merged = Example(make_doc(4, [(0, 2, "PER"), (3, 4, "LOC")]), gold)
    exact = Example(make_doc(4, [(0, 1, "PER"), (1, 2, "PER"), (3, 4, "LOC")]), gold)
    y_true, y_pred = tag_sequences([merged], "IOB2")
    assert y_true == [["B-PER", "B-PER", "O", "B-LOC"]] and y_pred == [["B-PER", "I-PER", "O", "B-LOC"]]
    assert tag_sequences([merged], "BIOES") == ([["S-PER", "S-PER", "O", "S-LOC"]], [["B-PER", "E-PER", "O", "S-LOC"]])
    scores = strict_scores([merged])
    # 1 of 2 predictions right (LOC), 1 of 3 gold found
    assert (scores["precision"], scores["recall"]) == (0.5, pytest.approx(1 / 3))
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 1, "correct": 0}
    assert scores["f1"] == pytest.approx(0.4)
    assert scores["f1"] == pytest.approx(f1_score(y_true, y_pred, mode="strict", scheme=IOB2))
    assert scores["f1"] == pytest.approx(Scorer.score_spans([merged], "ents")["ents_f"])
    assert strict_scores([merged], "BIOES") == scores
    assert scores["f1"] == pytest.approx(f1_score(*tag_sequences([merged], "BIOES"), mode="strict", scheme=IOBES))
    assert strict_scores([exact])["f1"] == 1.0 == Scorer.score_spans([exact], "ents")["ents_f"]
    assert strict_scores([exact], "BIOES")["f1"] == 1.0


def test_iob2_and_bioes_scores_agree_across_sentences():
    # entities at sentence starts and ends, adjacent across a sentence boundary, one crossing it
    gold = make_doc(12, [(0, 2, "PER"), (2, 3, "PER"), (3, 4, "ORG"), (4, 5, "ORG"), (6, 10, "LOC")], sent_len=4)
    pred = make_doc(12, [(0, 3, "PER"), (3, 4, "ORG"), (4, 5, "ORG"), (6, 10, "LOC"), (11, 12, "PER")])
    examples = [Example(pred, gold)]
    assert strict_scores(examples, "IOB2") == strict_scores(examples, "BIOES")
    assert strict_scores(examples)["correct"] == 3
    assert strict_scores(examples)["f1"] == pytest.approx(Scorer.score_spans(examples, "ents")["ents_f"])


@pytest.mark.parametrize(
    "counts,expected",
    [((0, 0, 0), (0.0, 0.0, 0.0)), ((0, 3, 0), (0.0, 0.0, 0.0)), ((0, 0, 4), (0.0, 0.0, 0.0)),
     ((2, 4, 8), (0.5, 0.25, 1 / 3)), ((3, 3, 3), (1.0, 1.0, 1.0))],
)
def test_prf_from_counts(counts, expected):
    assert prf(*counts) == pytest.approx(expected)


def test_overlap_criterion_counts_shared_tokens_of_the_same_type():
    # gold: SKILL 0-3, SKILL 5-6, ORG 8-10, PER 12-13; predicted: SKILL 1-2 (inside the first),
    # SKILL 4-7 (covers the second), LOC 8-10 (other type), PER 14-15 (no shared token)
    gold = make_doc(16, [(0, 3, "SKILL"), (5, 6, "SKILL"), (8, 10, "ORG"), (12, 13, "PER")])
    pred = make_doc(16, [(1, 2, "SKILL"), (4, 7, "SKILL"), (8, 10, "LOC"), (14, 15, "PER")])
    scores = overlap_scores([Example(pred, gold)])
    assert (scores["correct"], scores["support"]) == (2, 4)
    assert (scores["predicted_right"], scores["predicted"]) == (2, 4)
    assert scores["per_type"]["SKILL"]["f1"] == 1.0
    assert scores["per_type"]["ORG"]["recall"] == 0.0 and scores["per_type"]["LOC"]["precision"] == 0.0
    assert scores["per_type"]["PER"]["f1"] == 0.0
    # strict sees none of these as right; exact matches are right under both criteria
    assert strict_scores([Example(pred, gold)])["correct"] == 0
    assert overlap_scores([Example(gold, gold)])["f1"] == strict_scores([Example(gold, gold)])["f1"] == 1.0


@given(st.integers(1, 30).flatmap(lambda n: st.tuples(st.just(n), spans(n), spans(n))))
@settings(max_examples=100, deadline=None)
def test_overlap_scores_are_never_below_strict(case):
    n, gold_spans, pred_spans = case
    eg = Example(make_doc(n, pred_spans), make_doc(n, gold_spans))
    strict, overlap = strict_scores([eg]), overlap_scores([eg])
    assert overlap["recall"] >= strict["recall"] and overlap["precision"] >= strict["precision"]


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


def test_error_analysis_ranks_the_most_frequent_false_positives(tmp_path):
    # three docs: "w3" predicted PER where nothing is (twice) and once cut from a gold ORG "w3 w4"
    gold = [make_doc(8, []), make_doc(8, [(5, 6, "ORG")]), make_doc(8, [(3, 5, "ORG")])]
    pred = [make_doc(8, [(3, 4, "PER")]), make_doc(8, [(3, 4, "PER"), (5, 6, "ORG")]), make_doc(8, [(3, 4, "PER"), (6, 7, "ORG")])]
    examples = [Example(p, g) for p, g in zip(pred, gold)]
    analysis = analyse_errors(examples)
    texts = [d[3:4].text for d in pred]
    assert len(set(texts)) == 1
    assert analysis["false_positives"] == [
        {"text": texts[0], "label": "PER", "count": 3, "spurious": 2},
        {"text": pred[2][6:7].text, "label": "ORG", "count": 1, "spurious": 1},
    ]
    assert analyse_errors(examples, max_false_positives=1)["false_positives"][0]["count"] == 3
    evaluate_examples(examples, "IOB2", tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["false_positives"] == analysis["false_positives"]
    table = (tmp_path / "report.md").read_text().split("## Most frequent false positives")[1]
    assert f"| {texts[0]} | PER | 3 | 2 |" in table


def test_touching_pairs_counted_and_scored_joined(tmp_path):
    # gold "w0 w1 w2" DIS and "w5" DIS; predicted in pieces: w0 | w1 w2 (joined: right), w4 | w5 (joined: wrong),
    # and w7 CHEM touching w8 DIS (other types: never joined)
    gold = make_doc(10, [(0, 3, "DIS"), (5, 6, "DIS")])
    pred = make_doc(10, [(0, 1, "DIS"), (1, 3, "DIS"), (4, 5, "DIS"), (5, 6, "DIS"), (7, 8, "CHEM"), (8, 9, "DIS")])
    examples = [Example(pred, gold)]
    assert touching_pairs(examples) == {"DIS": 2}
    metrics = evaluate_examples(examples, "IOB2", tmp_path)
    touching = metrics["if_touching_joined"]
    assert touching["pairs"] == {"DIS": 2}
    # joined: (0, 3) right, (4, 6) wrong, (7, 8) and (8, 9) wrong: P 1/4, R 1/2
    assert touching["precision"] == 0.25 and touching["recall"] == 0.5
    assert abs(metrics["f1"] - prf(1, 6, 2)[2]) < 1e-12
    assert "## Touching entities of one type" in (tmp_path / "report.md").read_text()
    alone = evaluate_examples([Example(make_doc(10, [(0, 3, "DIS")]), gold)], "IOB2", tmp_path / "none")
    assert alone["if_touching_joined"]["pairs"] == {} and alone["if_touching_joined"]["f1"] == alone["f1"]
    assert "## Touching entities" not in (tmp_path / "none" / "report.md").read_text()


def test_confusion_matrix_has_one_o_row_and_column(tmp_path):
    """Spurious and missed entities both count in the O row/column; O is listed once."""
    gold = make_doc(20, [(0, 2, "PER"), (4, 5, "LOC"), (7, 8, "ORG"), (10, 11, "ORG")])
    # PER right, LOC missed, ORG at 7 called LOC, ORG at 10 missed, two spurious PER, one spurious LOC
    pred = make_doc(20, [(0, 2, "PER"), (7, 8, "LOC"), (13, 14, "PER"), (15, 16, "PER"), (18, 19, "LOC")])
    examples = [Example(pred, gold)]
    expected = {
        "LOC": {"LOC": 0, "ORG": 0, "PER": 0, "O": 1},
        "ORG": {"LOC": 1, "ORG": 0, "PER": 0, "O": 1},
        "PER": {"LOC": 0, "ORG": 0, "PER": 1, "O": 0},
        "O": {"LOC": 1, "ORG": 0, "PER": 2, "O": 0},
    }
    analysis = analyse_errors(examples)
    assert analysis["labels"] == ["LOC", "ORG", "PER", "O"]
    assert analysis["confusion"] == expected
    labels, values = confusion_array(analysis)  # what confusion.png draws
    assert labels == ["LOC", "ORG", "PER", "O"]
    assert values.tolist() == [[expected[g][p] for p in labels] for g in labels]

    evaluate_examples(examples, "IOB2", tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["confusion"] == expected
    assert saved["errors"]["missed"] == 2 and saved["errors"]["spurious"] == 3
    report = (tmp_path / "report.md").read_text()
    matrix = report.split("## Confusion matrix")[1].split("![confusion matrix]")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in matrix.splitlines() if line.startswith("|")]
    assert rows[0] == ["gold \\ pred", "LOC", "ORG", "PER", "O"]
    assert rows[2:] == [[g] + [str(expected[g][p]) for p in labels] for g in labels]


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
    assert "| PER | 1.0000 | 1.0000 | 1.0000 | 1 |" in report
    assert "| LOC | 0.0000 | 0.0000 | 0.0000 | 1 |" in report
    assert "| **micro** | **0.5000** | **0.5000** | **0.5000** | 2 |" in report


def test_unknown_gold_types_are_counted_and_warned_of(tmp_path):
    gold = make_doc(12, [(0, 2, "PER"), (4, 5, "MISC"), (6, 7, "MISC"), (8, 9, "DATE")])
    pred = make_doc(12, [(0, 2, "PER"), (4, 5, "ORG")])
    examples = [Example(pred, gold)]
    assert unknown_gold_types(examples, LABELS) == {"DATE": 1, "MISC": 2}
    metrics = evaluate_examples(examples, "IOB2", tmp_path, model_labels=LABELS)
    assert metrics["unknown_gold_types"] == {"DATE": 1, "MISC": 2}
    [warning] = metrics["warnings"]
    assert "3 entities of types the pipeline does not predict (DATE 1, MISC 2; it knows LOC, ORG, PER)" in warning
    assert "only count as misses" in warning
    assert json.loads((tmp_path / "metrics.json").read_text())["warnings"] == [warning]
    assert f"**Warning**: {warning}." in (tmp_path / "report.md").read_text()
    # the scores are the same: the warning explains them, it does not change them
    plain = evaluate_examples(examples, "IOB2")
    assert "warnings" not in plain and {k: metrics[k] for k in plain} == plain
    assert evaluate_examples(examples, "IOB2", model_labels=LABELS + ["MISC", "DATE"])["warnings"] == []


def test_entity_labels_are_those_of_the_pipes_that_set_entities():
    import spacy
    from spacy.language import Language

    nlp = spacy.blank("en")
    assert entity_labels(nlp) == []
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "GPE", "pattern": "Paris"}, {"label": "ORG", "pattern": "Acme"}])
    nlp.add_pipe("ner_plus_entity_filter")  # removes entities: adds no type
    nlp.add_pipe("sentencizer")  # sets no entities
    assert entity_labels(nlp) == ["GPE", "ORG"]

    @Language.component("test_unlisted_entities", assigns=["doc.ents"])
    def unlisted(doc):
        return doc

    nlp.add_pipe("test_unlisted_entities")
    assert entity_labels(nlp) is None  # a pipe that sets entities without listing its types: nobody can say
