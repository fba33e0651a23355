import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc
from spacy.vocab import Vocab

from spacy_ner_plus import schemes

LABELS = ["PER", "LOC", "ORG"]
VOCAB = Vocab()


def test_recipe_exercise_bio_to_spans():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert schemes.tags_to_spans(tags) == [(0, 2, "PER"), (3, 4, "LOC")]
    assert schemes.find_errors(tags, "IOB2") == []


@st.composite
def span_lists(draw, max_len=30):
    n = draw(st.integers(0, max_len))
    spans = []
    i = 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, min(4, n - i)))
            spans.append((i, i + length, draw(st.sampled_from(LABELS))))
            i += length
        else:
            i += draw(st.integers(1, 3))
    return n, [s for s in spans if s[1] <= n]


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES", "IOB1"])
@given(data=span_lists())
@settings(max_examples=200, deadline=None)
def test_spans_tags_spans_round_trip(scheme, data):
    n, spans = data
    tags = schemes.spans_to_tags(spans, n, scheme)
    assert schemes.find_errors(tags, scheme) == []
    assert schemes.tags_to_spans(tags) == spans


@given(tags=st.lists(st.sampled_from(["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]), max_size=25))
@settings(max_examples=300, deadline=None)
def test_repair_gives_valid_tags_and_keeps_every_entity_token(tags):
    for scheme in ("IOB2", "BIOES"):
        fixed, changes = schemes.repair(tags, scheme)
        assert schemes.find_errors(fixed, scheme) == []
        # no entity token is dropped and no label changes
        assert [t != "O" for t in fixed] == [t != "O" for t in tags]
        assert [schemes.split_tag(t)[1] for t in fixed] == [schemes.split_tag(t)[1] for t in tags]
        assert len(changes) == sum(a != b for a, b in zip(tags, fixed))


def test_find_errors_iob2_and_bioes():
    assert schemes.find_errors(["O", "I-PER"], "IOB2")[0][0] == 1
    assert schemes.find_errors(["B-PER", "I-LOC"], "IOB2")[0][0] == 1
    errors = schemes.find_errors(["B-PER", "O", "S-LOC", "E-LOC"], "BIOES")
    assert [i for i, _ in errors] == [0, 3]
    assert "prefix 'E' is not part of IOB2" in schemes.find_errors(["E-PER"], "IOB2")[0][1]


def test_iob1_rules():
    assert schemes.find_errors(["I-PER", "B-PER", "O", "I-LOC"], "IOB1") == []
    assert schemes.find_errors(["O", "B-PER"], "IOB1")[0][0] == 1
    assert schemes.tags_to_spans(["I-PER", "I-PER", "B-PER", "O"]) == [(0, 2, "PER"), (2, 3, "PER")]


@pytest.mark.parametrize(
    "sequences,expected",
    [
        ([["B-PER", "I-PER", "O"]], "IOB2"),
        ([["I-PER", "I-PER", "O", "I-LOC"], ["I-PER", "B-PER"]], "IOB1"),
        ([["S-PER", "O", "B-LOC", "E-LOC"]], "BIOES"),
        ([["U-PER", "O", "B-LOC", "L-LOC"]], "BIOES"),
    ],
)
def test_detect_scheme(sequences, expected):
    assert schemes.detect_scheme(sequences) == expected


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER"])
def test_split_tag_rejects_unparseable(tag):
    with pytest.raises(schemes.TagError):
        schemes.split_tag(tag)


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
@given(data=st.lists(st.integers(0, 8), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_transition_constraints_agree_with_validation(scheme, data):
    tags = schemes.tag_names(["PER", "LOC"], scheme)
    seq = [tags[i % len(tags)] for i in data]
    c = schemes.transition_constraints(tags, scheme)
    idx = [tags.index(t) for t in seq]
    allowed = c["start"][idx[0]] and c["end"][idx[-1]] and all(c["transition"][a, b] for a, b in zip(idx, idx[1:]))
    assert allowed == (schemes.find_errors(seq, scheme) == [])


@pytest.mark.parametrize("label", ["PER", "work-of-art", "DATE-TIME", "B-I", "-", "État", "O-ish", "X_1", "東京"])
def test_label_problem_accepts_what_spacy_ner_accepts(label):
    assert schemes.label_problem(label) is None


@pytest.mark.parametrize(
    "label,why",
    [
        ("", "empty"),
        ("O", "'O' cannot be a label"),
        ("CITY NAME", "U+0020 (SPACE) at position 4"),
        ("LOC\t", "U+0009"),
        ("LOC\x00", "U+0000 (control character, category Cc)"),
        ("A\u00a0B", "U+00A0 (NO-BREAK SPACE)"),
        ("A\u2028B", "U+2028 (LINE SEPARATOR)"),
        (None, "not NoneType"),
    ],
)
def test_label_problem_refuses_with_a_reason(label, why):
    problem = schemes.label_problem(label)
    assert problem is not None and why in problem


@given(
    label=st.text(min_size=1, max_size=12).filter(lambda s: schemes.label_problem(s) is None),
    data=span_lists(),
)
@settings(max_examples=200, deadline=None)
def test_every_accepted_label_round_trips_through_tags_and_docs(label, data):
    """A label label_problem accepts (hyphens included: the prefix is split at the
    first hyphen) survives spans -> tags -> spans in every scheme and in a spaCy Doc."""
    n, spans = data
    spans = [(s, e, label) for s, e, _ in spans]
    for scheme in ("IOB2", "BIOES", "IOB1"):
        tags = schemes.spans_to_tags(spans, n, scheme)
        assert schemes.find_errors(tags, scheme) == []
        assert schemes.tags_to_spans(tags) == spans
    if n:
        doc = Doc(VOCAB, words=["w"] * n, ents=schemes.spans_to_tags(spans, n, "IOB2"))
        assert [(e.start, e.end, e.label_) for e in doc.ents] == spans
