import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_ner_plus.windowing import make_windows, merge_windows, token_weights


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
