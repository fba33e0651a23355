import numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spacy_ner_plus import schemes
import pytest

from spacy_ner_plus.decoding import (
    bias_vector,
    constraints_for,
    decode,
    decode_scored,
    join_touching,
    label_columns,
    run_confidence,
    span_confidence,
    viterbi,
)


def brute_force(log_probs, tags, scheme):
    import itertools

    best = -numpy.inf
    for path in itertools.product(range(len(tags)), repeat=log_probs.shape[0]):
        seq = [tags[i] for i in path]
        if schemes.find_errors(seq, scheme):
            continue
        score = sum(log_probs[t, i] for t, i in enumerate(path))
        best = max(best, score)
    return best


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_any_score_matrix_decodes_to_valid_spans(data):
    scheme = data.draw(st.sampled_from(["IOB2", "BIOES"]))
    tags = schemes.tag_names(["PER", "LOC"], scheme)
    n = data.draw(st.integers(0, 30))
    raw = data.draw(arrays("float64", (n, len(tags)), elements=st.floats(0.0, 1.0)))
    probs = (raw + 1e-9) / (raw + 1e-9).sum(axis=1, keepdims=True)
    constraints = schemes.transition_constraints(tags, scheme)
    path = viterbi(numpy.log(probs), constraints)
    assert schemes.find_errors([tags[i] for i in path], scheme) == []
    spans = decode(probs, tags, constraints)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    index = {t: i for i, t in enumerate(tags)}
    for span in spans:
        assert 0.0 <= span_confidence(probs, span, index, scheme) <= 1.0
    # join_touching: no two joined entities of one type touch; the tokens covered stay the same
    joined = join_touching(spans)
    assert all(a[1] < b[0] or (a[1] == b[0] and a[2] != b[2]) for a, b in zip(joined, joined[1:]))
    assert sum(e - s for s, e, _ in joined) == sum(e - s for s, e, _ in spans)
    columns = label_columns(tags)
    for span in joined:
        assert 0.0 <= run_confidence(probs, span, columns) <= 1.0


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_viterbi_is_optimal_among_valid_paths(data):
    scheme = data.draw(st.sampled_from(["IOB2", "BIOES"]))
    tags = schemes.tag_names(["X"], scheme)
    n = data.draw(st.integers(1, 5))
    log_probs = data.draw(arrays("float64", (n, len(tags)), elements=st.floats(-5.0, 0.0)))
    path = viterbi(log_probs, schemes.transition_constraints(tags, scheme))
    score = sum(log_probs[t, i] for t, i in enumerate(path))
    assert abs(score - brute_force(log_probs, tags, scheme)) < 1e-9


def test_confidence_formula():
    tags = schemes.tag_names(["PER"], "IOB2")  # O, B-PER, I-PER
    probs = numpy.array([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3]])
    index = {t: i for i, t in enumerate(tags)}
    assert abs(span_confidence(probs, (0, 2, "PER"), index, "IOB2") - 0.8 * 0.7 * (1 - 0.3)) < 1e-12
    tags = schemes.tag_names(["PER"], "BIOES")  # O B I E S
    probs = numpy.array([[0.0, 0.9, 0.0, 0.0, 0.1], [0.1, 0.0, 0.0, 0.8, 0.1]])
    index = {t: i for i, t in enumerate(tags)}
    assert abs(span_confidence(probs, (0, 2, "PER"), index, "BIOES") - 0.72) < 1e-12


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_greedy_shortcut_equals_the_full_viterbi(data):
    """viterbi returns the per-token argmax when the scheme allows it, else runs
    its dynamic programme; either way its path scores what a plain-Python
    dynamic programme over the valid paths finds (longer sequences than the
    brute force above can enumerate)."""
    scheme = data.draw(st.sampled_from(["IOB2", "BIOES"]))
    tags = schemes.tag_names(["PER", "LOC"], scheme)
    n = data.draw(st.integers(1, 12))
    log_probs = data.draw(arrays("float64", (n, len(tags)), elements=st.floats(-8.0, 0.0)))
    constraints = schemes.transition_constraints(tags, scheme)
    path = viterbi(log_probs, constraints)
    tag_ids = range(len(tags))
    best = {b: log_probs[0, b] if constraints["start"][b] else -numpy.inf for b in tag_ids}
    for t in range(1, n):
        best = {b: max(best[a] for a in tag_ids if constraints["transition"][a, b]) + log_probs[t, b] for b in tag_ids}
    optimum = max(best[b] for b in tag_ids if constraints["end"][b])
    assert schemes.find_errors([tags[i] for i in path], scheme) == []
    assert abs(sum(log_probs[t, i] for t, i in enumerate(path)) - optimum) < 1e-6


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_decoding_around_fixed_tokens_and_whitespace_is_optimal_and_respects_both(data):
    """Preset entities (tokens that must stay outside) and whitespace tokens (no
    entity starts or ends there): the decoded path obeys both and scores what a
    brute force over all paths that obey them finds."""
    import itertools

    from spacy_ner_plus.decoding import constraints_for

    scheme = data.draw(st.sampled_from(["IOB2", "BIOES"]))
    tags = schemes.tag_names(["X", "Y"], scheme)
    n = data.draw(st.integers(1, 5 if scheme == "IOB2" else 4))
    raw = data.draw(arrays("float64", (n, len(tags)), elements=st.floats(0.01, 1.0)))
    probs = raw / raw.sum(axis=1, keepdims=True)
    no_edge = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    start = data.draw(st.integers(0, n))
    fixed = [(start, data.draw(st.integers(start, n)))]
    fixed_tokens = set(range(*fixed[0]))
    constraints = constraints_for(tags, scheme)
    spans = decode(probs, tags, constraints, fixed_outside=fixed, no_edge=no_edge)

    def obeys(found):
        return all(
            not (set(range(s, e)) & fixed_tokens) and not no_edge[s] and not no_edge[e - 1] for s, e, _ in found
        )

    assert obeys(spans)
    log_probs = numpy.log(probs)
    best = -numpy.inf
    for path in itertools.product(range(len(tags)), repeat=n):
        seq = [tags[i] for i in path]
        if schemes.find_errors(seq, scheme) or not obeys(schemes.tags_to_spans(seq)):
            continue
        best = max(best, sum(log_probs[t, i] for t, i in enumerate(path)))
    encoded = schemes.spans_to_tags(spans, n, scheme)
    score = sum(log_probs[t, tags.index(tag)] for t, tag in enumerate(encoded))
    assert abs(score - best) < 1e-9


def test_a_whitespace_token_may_sit_inside_an_entity_but_not_at_its_edge():
    from spacy_ner_plus.decoding import constraints_for

    tags = schemes.tag_names(["LOC"], "IOB2")  # O B-LOC I-LOC
    # "New \n York City" wants B I I I; "York \n" wants to end the entity on the newline
    probs = numpy.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]])
    constraints = constraints_for(tags, "IOB2")
    assert decode(probs, tags, constraints) == [(0, 5, "LOC")]
    assert decode(probs, tags, constraints, no_edge=[False, True, False, False, False]) == [(0, 5, "LOC")]
    spans = decode(probs, tags, constraints, no_edge=[False, True, False, False, True])
    assert spans == [(0, 4, "LOC")]
    assert decode(probs, tags, constraints, fixed_outside=[(2, 3)]) == [(0, 2, "LOC"), (3, 5, "LOC")]


def test_join_touching_joins_runs_of_one_type_only():
    spans = [(0, 1, "X"), (1, 3, "X"), (3, 4, "X"), (4, 5, "Y"), (6, 7, "Y"), (7, 8, "Y"), (9, 10, "X")]
    assert join_touching(spans) == [(0, 4, "X"), (4, 5, "Y"), (6, 8, "Y"), (9, 10, "X")]
    assert join_touching([]) == []


def test_run_confidence_formula():
    tags = schemes.tag_names(["PER", "LOC"], "IOB2")
    col = {t: i for i, t in enumerate(tags)}
    probs = numpy.zeros((4, len(tags)))
    for t, masses in enumerate([{"O": 0.7, "B-PER": 0.2, "B-LOC": 0.1}, {"B-PER": 0.6, "I-PER": 0.3, "O": 0.1},
                                {"B-PER": 0.5, "I-PER": 0.4, "B-LOC": 0.1}, {"O": 0.8, "I-PER": 0.15, "I-LOC": 0.05}]):
        for tag, p in masses.items():
            probs[t, col[tag]] = p
    columns = label_columns(tags)
    # q(PER) per token: 0.2, 0.9, 0.9, 0.15
    assert abs(run_confidence(probs, (1, 3, "PER"), columns) - 0.9 * 0.9 * (1 - 0.2) * (1 - 0.15)) < 1e-12
    # at the Doc's edges there is no outer factor
    assert abs(run_confidence(probs, (0, 2, "PER"), columns) - 0.2 * 0.9 * (1 - 0.9)) < 1e-12
    assert abs(run_confidence(probs, (2, 4, "PER"), columns) - 0.9 * 0.15 * (1 - 0.9)) < 1e-12
    bioes = schemes.tag_names(["PER"], "BIOES")
    assert sorted(bioes[i] for i in label_columns(bioes)["PER"]) == ["B-PER", "E-PER", "I-PER", "S-PER"]


def test_a_decoding_bias_makes_a_type_decode_where_its_probability_was_below_os():
    tags = schemes.tag_names(["DRUG", "AE"], "IOB2")  # O B-AE I-AE B-DRUG I-DRUG
    index = {t: i for i, t in enumerate(tags)}
    probs = numpy.full((4, len(tags)), 0.01)
    probs[:, index["O"]] = 0.96
    probs[1, index["O"]], probs[1, index["B-AE"]] = 0.6, 0.37  # AE's B-tag loses to O by a factor e^0.48
    probs[2, index["O"]], probs[2, index["B-DRUG"]] = 0.44, 0.53  # DRUG wins with no bias on it
    probs /= probs.sum(axis=1, keepdims=True)
    constraints = constraints_for(tags, "IOB2")
    assert decode(probs, tags, constraints) == [(2, 3, "DRUG")]
    assert decode(probs, tags, constraints, bias=bias_vector(tags, {"AE": 0.25})) == [(2, 3, "DRUG")]  # e^0.25 < e^0.48
    assert decode(probs, tags, constraints, bias=bias_vector(tags, {"AE": 0.75})) == [(1, 2, "AE"), (2, 3, "DRUG")]
    # the confidences stay those of the unbiased probabilities
    spans, confidences = decode_scored(probs, tags, "IOB2", [(0, 4)], bias=bias_vector(tags, {"AE": 0.75}))
    assert spans == [(1, 2, "AE"), (2, 3, "DRUG")]
    assert confidences == [span_confidence(probs, s, index, "IOB2") for s in spans]
    assert confidences[0] < 0.5


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_no_bias_or_zero_bias_decodes_bit_for_bit_as_without_one(data):
    scheme = data.draw(st.sampled_from(["IOB2", "BIOES"]))
    tags = schemes.tag_names(["PER", "LOC"], scheme)
    n = data.draw(st.integers(1, 25))
    raw = data.draw(arrays("float32", (n, len(tags)), elements=st.floats(0.0, 1.0, width=32)))
    probs = ((raw + 1e-6) / (raw + 1e-6).sum(axis=1, keepdims=True)).astype("float32")
    no_edge = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    joined = data.draw(st.booleans())
    assert bias_vector(tags, {}) is None and bias_vector(tags, {"PER": 0.0, "LOC": 0}) is None
    expected = decode_scored(probs, tags, scheme, [(0, n)], no_edge=no_edge, joined=joined)
    for bias in (None, numpy.zeros(len(tags))):
        assert decode_scored(probs, tags, scheme, [(0, n)], no_edge=no_edge, joined=joined, bias=bias) == expected
    # a bias on one type never takes entities away from it: the biased path scores its tokens higher
    biased = decode_scored(probs, tags, scheme, [(0, n)], no_edge=no_edge, joined=joined, bias=bias_vector(tags, {"PER": 3.0}))[0]
    per_tokens = lambda spans: sum(e - s for s, e, label in spans if label == "PER")
    assert per_tokens(biased) >= per_tokens(expected[0])


@pytest.mark.parametrize(
    "bias, message", [({"PER": -1.0}, ">= 0"), ({"PER": float("nan")}, ">= 0"), ({"PER": float("inf")}, ">= 0"), ({"ORG": 1.0}, "ORG")]
)
def test_a_bad_decoding_bias_is_an_error_naming_it(bias, message):
    with pytest.raises(ValueError, match=message):
        bias_vector(schemes.tag_names(["PER", "LOC"], "IOB2"), bias)
