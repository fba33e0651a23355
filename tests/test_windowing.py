import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_ner_plus.windowing import make_windows, merge_windows, sentence_windows, token_weights


@st.composite
def documents(draw):
    n = draw(st.integers(1, 400))
    pieces = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    window = draw(st.integers(1, 64))
    stride = draw(st.integers(1, window))
    budget = draw(st.integers(6, 200))
    sents = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
    return pieces, window, stride, budget, sents


@given(doc=documents())
@settings(max_examples=300, deadline=None)
def test_windows_cover_every_token_within_budgets(doc):
    pieces, window, stride, budget, sents = doc
    windows = make_windows(pieces, window, stride, budget, sents)
    covered = numpy.zeros(len(pieces), dtype=bool)
    for start, end in windows:
        assert 0 <= start < end <= len(pieces)
        assert end - start <= window
        assert sum(pieces[start:end]) <= budget
        covered[start:end] = True
    assert covered.all()
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts))
    # consecutive windows touch or overlap: no gap, so nothing is lost at an edge
    assert all(b[0] <= a[1] for a, b in zip(windows, windows[1:]))


@given(doc=documents())
@settings(max_examples=300, deadline=None)
def test_sentence_windows_stay_inside_sentences_and_cover_every_token(doc):
    pieces, window, stride, budget, sents = doc
    sents = sents or [False] * len(pieces)
    windows = sentence_windows(pieces, window, stride, budget, sents)
    boundaries = [i for i, start in enumerate(sents) if start or i == 0] + [len(pieces)]
    covered = numpy.zeros(len(pieces), dtype=bool)
    for start, end in windows:
        sentence = max(b for b in boundaries if b <= start)
        assert end <= min(b for b in boundaries if b > start), "a window crosses a sentence start"
        assert end - start <= window and sum(pieces[start:end]) <= budget
        covered[start:end] = True
        # each sentence is windowed as if it were a Doc of its own
        own = make_windows(pieces[sentence : boundaries[boundaries.index(sentence) + 1]], window, stride, budget)
        assert (start - sentence, end - sentence) in own
    assert covered.all()
    assert windows == sorted(windows)


def test_sentence_windows_split_only_a_sentence_longer_than_a_window():
    pieces = [1] * 60
    sents = [i in (0, 10, 50) for i in range(60)]
    assert sentence_windows(pieces, 30, 20, 512, sents) == [(0, 10), (10, 40), (30, 50), (50, 60)]
    assert make_windows(pieces, 30, 20, 512, sents) == [(0, 30), (10, 40), (30, 60)]


def test_windows_overlap_and_prefer_sentence_starts():
    pieces = [1] * 100
    assert make_windows(pieces, 40, 30, 512) == [(0, 40), (30, 70), (60, 100)]
    sents = [i % 25 == 0 for i in range(100)]
    assert make_windows(pieces, 40, 30, 512, sents) == [(0, 40), (25, 65), (50, 90), (75, 100)]


def test_wordpiece_budget_shortens_windows():
    pieces = [3] * 30
    windows = make_windows(pieces, 20, 10, 30)
    assert all(sum(pieces[s:e]) <= 30 for s, e in windows)
    assert windows[0] == (0, 10)


def test_one_token_over_budget_is_an_error():
    with pytest.raises(ValueError, match="wordpieces"):
        make_windows([1, 50, 1], 10, 5, 20)


def test_single_window_merge_is_identity():
    scores = numpy.random.RandomState(0).dirichlet(numpy.ones(5), size=12).astype("float32")
    merged = merge_windows([(0, 12)], [scores], 12)
    assert numpy.array_equal(merged, scores)


@given(seed=st.integers(0, 1000), n=st.integers(2, 80))
@settings(max_examples=100, deadline=None)
def test_merge_does_not_depend_on_window_order(seed, n):
    rng = numpy.random.RandomState(seed)
    windows = make_windows([1] * n, 16, 8, 100)
    scores = [rng.dirichlet(numpy.ones(4), size=e - s).astype("float32") for s, e in windows]
    merged = merge_windows(windows, scores, n)
    perm = rng.permutation(len(windows))
    shuffled = merge_windows([windows[i] for i in perm], [scores[i] for i in perm], n)
    assert numpy.array_equal(merged, shuffled)
    assert numpy.allclose(merged.sum(axis=1), 1.0, atol=1e-5)


def test_weights_favour_the_window_centre():
    w = token_weights(10, 20, 100)
    assert w[0] == w[-1] == 1 and w.max() == 5
    assert numpy.array_equal(token_weights(0, 10, 100), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    assert (token_weights(0, 10, 10) == 10).all()


@st.composite
def single_window_documents(draw):
    n = draw(st.integers(1, 120))
    pieces = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    window = draw(st.integers(n, 200))
    stride = draw(st.integers(1, window))
    budget = draw(st.integers(sum(pieces), sum(pieces) + 50))
    sents = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**16))
    return pieces, window, stride, budget, sents, seed


@given(doc=single_window_documents())
@settings(max_examples=200, deadline=None)
def test_merge_of_one_window_spanning_the_doc_is_that_window(doc):
    pieces, window, stride, budget, sents, seed = doc
    n = len(pieces)
    windows = make_windows(pieces, window, stride, budget, sents)
    assert windows == [(0, n)]
    scores = numpy.random.RandomState(seed).dirichlet(numpy.ones(5), size=n).astype("float32")
    assert numpy.array_equal(merge_windows(windows, [scores], n), scores)


# Two windows over 6 tokens that disagree on the overlap (tokens 2 and 3).
# Distance weights: window (0, 4) weighs tokens 2, 3 by 2, 1 (distance to its inner
# right edge); window (2, 6) by 1, 2. So token 2 leans to the first window, token 3
# to the second.
DISAGREE_WINDOWS = [(0, 4), (2, 6)]
FIRST = numpy.array([[0.8, 0.2]] * 4, dtype="float32")
SECOND = numpy.array([[0.2, 0.8]] * 4, dtype="float32")


def uniform_average(windows, scores, n_tokens):
    total = numpy.zeros((n_tokens, scores[0].shape[1]), dtype="float32")
    count = numpy.zeros((n_tokens, 1), dtype="float32")
    for (start, end), s in zip(windows, scores):
        total[start:end] += s
        count[start:end] += 1
    return total / count


def first_window_wins(windows, scores, n_tokens):
    merged = numpy.full((n_tokens, scores[0].shape[1]), numpy.nan, dtype="float32")
    for (start, end), s in zip(windows, scores):
        unset = numpy.isnan(merged[start:end, 0])
        merged[start:end][unset] = s[unset]
    return merged


def test_merge_of_disagreeing_windows_follows_the_distance_weights():
    merged = merge_windows(DISAGREE_WINDOWS, [FIRST, SECOND], 6)
    expected = numpy.array(
        [[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8], [0.2, 0.8]], dtype="float32"
    )
    assert numpy.allclose(merged, expected, atol=1e-6)
    # tokens seen by one window only keep its distribution exactly
    assert numpy.array_equal(merged[:2], FIRST[:2]) and numpy.array_equal(merged[4:], SECOND[2:])
    # the expectation discriminates: the other merge rules give something else on the overlap
    for other in (uniform_average, first_window_wins):
        alternative = other(DISAGREE_WINDOWS, [FIRST, SECOND], 6)
        assert numpy.array_equal(alternative[:2], expected[:2])  # same outside the overlap
        assert not numpy.allclose(alternative[2:4], expected[2:4], atol=0.05), other.__name__


def test_merge_of_three_windows_on_one_token():
    # token 4 lies in all three windows; weights 1 (last of (0, 5)), 3 (middle of
    # (2, 7)) and 1 (first of (4, 9), whose right edge is the doc's)
    windows = [(0, 5), (2, 7), (4, 9)]
    scores = [numpy.tile(numpy.array(v, dtype="float32"), (5, 1)) for v in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])]
    merged = merge_windows(windows, scores, 9)
    assert numpy.allclose(merged[4], [1 / 5, 3 / 5, 1 / 5], atol=1e-6)
    assert not numpy.allclose(uniform_average(windows, scores, 9)[4], merged[4], atol=0.05)
    assert not numpy.allclose(first_window_wins(windows, scores, 9)[4], merged[4], atol=0.05)


class DisagreeingModel:
    """A stand-in for ner_plus's model whose windows disagree: the window that
    starts at token 0 reads tokens ENTITY as one LOC entity (B-LOC 0.98, O 0.018),
    every other window reads them as O (0.998). Only the merge decides."""

    ENTITY = range(112, 128)

    def __init__(self, real, tags):
        self.real, self.tags, self.ops = real, list(tags), real.ops

    def get_ref(self, name):
        return self.real.get_ref(name)

    def predict(self, windows):
        out = []
        for span in windows:
            logits = numpy.full((len(span), len(self.tags)), -4.0, dtype="float32")
            logits[:, self.tags.index("O")] = 4.0
            if span.start == 0:
                for i in range(len(span)):
                    if i in self.ENTITY:
                        logits[i] = -4.0
                        logits[i, self.tags.index("O")] = 0.0
                        logits[i, self.tags.index("B-LOC" if i == self.ENTITY[0] else "I-LOC")] = 4.0
            out.append(logits)
        return out


@pytest.fixture(scope="module")
def untrained_nlp():
    """A ner_plus pipeline with its backbone and labels but no training: the
    stand-in model replaces its predictions, only its windows and decoding run."""
    import spacy
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus")
    example = Example.from_dict(nlp.make_doc("John in Paris"), {"entities": [(0, 4, "PER"), (8, 13, "LOC")]})
    nlp.initialize(lambda: [example])
    return nlp


def test_component_merges_disagreeing_windows_by_distance(untrained_nlp, monkeypatch):
    from spacy.tokens import Doc

    from spacy_ner_plus import decoding, schemes

    nlp = untrained_nlp
    ner = nlp.get_pipe("ner_plus")
    tags = list(ner.tags)
    model = DisagreeingModel(ner.model, tags)
    monkeypatch.setattr(ner, "model", model)
    doc = Doc(nlp.vocab, words=["word"] * 200)
    windows = ner.doc_windows(doc)
    # the defaults (window 128, stride 112) overlap on tokens 112..127
    assert windows == [(0, 128), (112, 200)], "the test's entity sits on the overlap of these windows"
    predicted = [(e.start, e.end, e.label_) for e in nlp(doc).ents]
    # distance weights: tokens 112..119 lean to the first window (weights 16..9 against 1..8),
    # tokens 120..127 to the second
    assert predicted == [(112, 120, "LOC")]
    # the same doc under the other merge rules decodes differently, so this test discriminates
    logits = model.predict([doc[s:e] for s, e in windows])
    probs = [numpy.exp(x) / numpy.exp(x).sum(axis=1, keepdims=True) for x in logits]
    constraints = schemes.transition_constraints(tags, ner.cfg["scheme"])
    assert decoding.decode(merge_windows(windows, probs, len(doc)), tags, constraints) == predicted
    assert decoding.decode(uniform_average(windows, probs, len(doc)), tags, constraints) == []
    assert decoding.decode(first_window_wins(windows, probs, len(doc)), tags, constraints) == [(112, 128, "LOC")]


class TagByWordModel(DisagreeingModel):
    """Stand-in model: a token reads B-LOC where its word is "B", I-LOC where it is "I", else O."""

    def predict(self, windows):
        out = []
        for span in windows:
            logits = numpy.full((len(span), len(self.tags)), -4.0, dtype="float32")
            for i, token in enumerate(span):
                logits[i, self.tags.index({"B": "B-LOC", "I": "I-LOC"}.get(token.text, "O"))] = 4.0
            out.append(logits)
        return out


@pytest.mark.parametrize("join_touching", [False, True])
def test_component_keeps_entities_inside_sentences_unless_told_not_to(untrained_nlp, monkeypatch, join_touching):
    from spacy.tokens import Doc

    nlp = untrained_nlp
    ner = nlp.get_pipe("ner_plus")
    monkeypatch.setattr(ner, "model", TagByWordModel(ner.model, list(ner.tags)))
    monkeypatch.setattr(ner, "join_touching", join_touching)
    words = ["B", "I", "I", "I", "x"]

    def ents(within_sentences, sent_starts):
        monkeypatch.setattr(ner, "within_sentences", within_sentences)
        return [(e.start, e.end) for e in nlp(Doc(nlp.vocab, words=words, sent_starts=sent_starts)).ents]

    starts = [True, False, True, False, False]
    # across sentences the run is one entity; inside them the second sentence starts its own,
    # and join_touching does not glue it back across the sentence start
    assert ents("none", starts) == [(0, 4)]
    assert ents("entities", starts) == ents("windows", starts) == [(0, 2), (2, 4)]
    assert ents("entities", None) == ents("windows", None) == [(0, 4)]


def test_within_sentences_must_be_a_known_setting():
    import spacy

    with pytest.raises(ValueError, match="within_sentences must be one of none, entities, windows"):
        spacy.blank("en").add_pipe("ner_plus", config={"within_sentences": "sentences"})


def test_window_agreement_counts_covering_and_agreeing_windows():
    from spacy_ner_plus.windowing import window_agreement

    windows = [(0, 4), (2, 6), (4, 8)]
    labels = [
        ["PER", "PER", None, "LOC"],  # tokens 0-3
        [None, "LOC", "LOC", None],  # tokens 2-5
        ["LOC", None, None, None],  # tokens 4-7
    ]
    spans = [(0, 2, "PER"), (3, 5, "LOC"), (4, 5, "LOC"), (6, 8, "ORG")]
    assert window_agreement(windows, labels, spans) == [(1, 1), (1, 1), (2, 2), (1, 0)]
    # an entity no window holds whole (it straddles every window edge) has no votes
    assert window_agreement([(0, 3), (3, 6)], [["X"] * 3, ["X"] * 3], [(2, 4, "X")]) == [(0, 0)]
