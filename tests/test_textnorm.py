import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_ner_plus.textnorm import normalize

# format characters (category Cf): removed wherever they are
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u202a", "\u202c", "\u2066", "\u2069"]


def test_ascii_is_its_own_view():
    text = "Call 650-253-0000, mail jane@example.com.\n\tDone."
    view = normalize(text)
    assert view.text == text and not view.changed
    assert view.to_original(5, 17) == (5, 17)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("536\u200b-22-1234", "536-22-1234"),
        ("a\u00a0b\u2009c\u3000d", "a b c d"),
        ("x\u2013y\u2014z\u2212w\u2011v", "x-y-z-w-v"),
        ("\uff14\uff11\u0661\u0967", "4111"),
        ("mu\u0308ller", "müller"),
        ("\ufb01le", "file"),
        ("line\u2028next", "line\nnext"),
    ],
)
def test_view_is_what_a_reader_sees(text, expected):
    assert normalize(text).text == expected


def test_offsets_map_back_to_the_original():
    text = "SSN \u200e\uff15\uff13\uff16\u2013\uff12\uff12\u200b\u2013\uff11\uff12\uff13\uff14\u200f."
    view = normalize(text)
    assert view.text == "SSN 536-22-1234."
    start = view.text.index("536")
    original = view.to_original(start, start + len("536-22-1234"))
    # the marks at the edges are outside, the zero-width space inside is in
    assert original == (text.index("\uff15"), text.index("\uff14") + 1)
    with pytest.raises(ValueError, match="start < end"):
        view.to_original(3, 3)


def test_an_invisible_mark_goes_with_its_character():
    # a variation selector or combining grapheme joiner is part of the character before it
    # (one grapheme): removed from the view, but mapped with that character
    text = "4\ufe0f5\u034f6"
    view = normalize(text)
    assert view.text == "456"
    assert [view.to_original(i, i + 1) for i in range(3)] == [(0, 2), (2, 4), (4, 5)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list("ab1- .@") + ["\u00e9", "\uff11"]), st.lists(st.sampled_from(INVISIBLE), max_size=2)), max_size=40))
def test_invisible_characters_vanish_and_every_character_maps_to_itself(pieces):
    text = "".join(char + "".join(marks) for char, marks in pieces)
    view = normalize(text)
    # every visible character gives one character of the view, in order, mapped to its position
    assert len(view.text) == len(pieces)
    position = 0
    for i, (char, marks) in enumerate(pieces):
        assert view.to_original(i, i + 1) == (position, position + 1)
        position += 1 + len(marks)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_maps_monotonically_inside_the_original(text):
    view = normalize(text)
    n = len(view.text)
    previous = (0, 0)
    for i in range(n):
        start, end = view.to_original(i, i + 1)
        assert 0 <= start < end <= len(text)
        assert start >= previous[0] and end >= previous[1]
        previous = (start, end)
    if n:
        assert view.to_original(0, n) == (view.to_original(0, 1)[0], view.to_original(n - 1, n)[1])


def test_linear_in_the_text():
    def seconds(text):
        started = time.perf_counter()
        normalize(text)
        return time.perf_counter() - started

    normalize("\u00a0")  # the table is built once per process
    unit = "\uff11\u200b\u2013\u00a0\u00e9"
    small = min(seconds(unit * 2_000) for _ in range(3))
    large = min(seconds(unit * 20_000) for _ in range(3))
    assert large <= 3 * 10 * small
