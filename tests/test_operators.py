"""The anonymization operators (spacy_ner_plus/service/operators.py): pure, no model."""
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_ner_plus.service.keys import Keyring
from spacy_ner_plus.service.operators import (
    Entity,
    Operator,
    OperatorError,
    OutputTooLarge,
    RedactedItem,
    RedactionRefused,
    apply_operator,
    merge_overlaps,
    parse_operators,
    redact,
    visible_chars,
)

KEY = b"k" * 32
RING = Keyring({"k1": KEY}, "k1")
HASHER = RING.hasher()
TYPES = ["PER", "LOC", "ORG"]


def test_redact_replace_default_and_offsets_in_output():
    text = "Call Anna Keller in Paris now"
    ents = [Entity(5, 16, "PER", 0.9), Entity(20, 25, "LOC", 0.8)]
    out, items = redact(text, ents, {})
    assert out == "Call <PER> in <LOC> now"
    assert [(i.entity_type, out[i.start : i.end], i.operator) for i in items] == [("PER", "<PER>", "replace"), ("LOC", "<LOC>", "replace")]


def test_redact_every_operator():
    text = "ab Anna cd Paris ef Acme gh Bob ij Rome"
    ents = [Entity(3, 7, "PER"), Entity(11, 16, "LOC"), Entity(20, 24, "ORG"), Entity(28, 31, "MISC"), Entity(35, 39, "CITY")]
    ops = {
        "PER": Operator("mask", masking_char="#", chars_to_mask=2, from_end=True),
        "LOC": Operator("redact"),
        "ORG": Operator("hash"),
        "MISC": Operator("keep"),
        "CITY": Operator("replace", new_value="[X]"),
    }
    out, items = redact(text, ents, ops, HASHER)
    digest = RING.token("ORG", "Acme")
    assert digest.startswith("<ORG_k1_") and len(digest) == len("<ORG_k1_>") + 32
    assert out == f"ab An## cd  ef {digest} gh Bob ij [X]"
    by_type = {i.entity_type: i for i in items}
    assert out[by_type["PER"].start : by_type["PER"].end] == "An##"
    assert by_type["LOC"].start == by_type["LOC"].end == out.index("  ef") + 1
    assert out[by_type["ORG"].start : by_type["ORG"].end] == digest
    assert out[by_type["MISC"].start : by_type["MISC"].end] == "Bob" and by_type["MISC"].operator == "keep"
    assert out[by_type["CITY"].start : by_type["CITY"].end] == "[X]"


def test_hash_is_keyed_and_stable():
    a = apply_operator(Operator("hash"), "anna@example.com", "EMAIL", HASHER)
    assert a == apply_operator(Operator("hash"), "anna@example.com", "EMAIL", HASHER)
    other = Keyring({"k1": b"other key 1234567890 other key 1234567890"}, "k1").hasher()
    assert a != apply_operator(Operator("hash"), "anna@example.com", "EMAIL", other)
    # not a plain hash a guesser could recompute without the key
    assert hashlib.sha256(b"anna@example.com").hexdigest()[:32] not in a
    with pytest.raises(ValueError, match="key"):
        apply_operator(Operator("hash"), "x", "PER", None)


def test_mask_counts_code_points():
    op = Operator("mask", chars_to_mask=3)
    assert apply_operator(op, "Zoe\u0301 X", "PER", None) == "***\u0301 X"
    assert apply_operator(Operator("mask"), "\U0001F600ab", "PER", None) == "***"
    assert apply_operator(Operator("mask", chars_to_mask=99), "ab", "PER", None) == "**"
    assert apply_operator(Operator("mask", chars_to_mask=0), "ab", "PER", None) == "ab"


# --- what the policy sets: max_visible, hide_original; the output bound ---------------
def test_mask_max_visible_raises_chars_to_mask():
    # a request asks to mask 1 character; the policy lets at most 4 stay visible
    op = Operator("mask", chars_to_mask=1, from_end=False, max_visible=4)
    assert apply_operator(op, "4111111111111111", "CREDIT_CARD", None) == "*" * 12 + "1111"
    assert apply_operator(Operator("mask", chars_to_mask=0, max_visible=0), "Anna", "PER", None) == "****"
    # a request that hides more than the policy demands keeps its choice
    assert apply_operator(Operator("mask", max_visible=4), "Anna Keller", "PER", None) == "*" * 11


def test_replace_containing_the_original_is_refused_when_hidden():
    op = Operator("replace", new_value="Dear anna  KELLER!", hide_original=True, where="operators.PER", rule="types.PER.always_redact in p.toml")
    with pytest.raises(RedactionRefused) as err:
        apply_operator(op, "Anna Keller", "PER", None)
    assert err.value.where == "operators.PER" and "always_redact" in str(err.value) and "Anna" not in str(err.value)
    # without the policy's flag the client's replacement stands (a permissive policy)
    assert apply_operator(Operator("replace", new_value="Anna Keller"), "Anna Keller", "PER", None) == "Anna Keller"
    assert apply_operator(Operator("replace", new_value="<NAME>", hide_original=True), "Anna Keller", "PER", None) == "<NAME>"


def test_visible_chars_tells_redacted_from_kept():
    text = "Anna met Bob and Carl in Rome"
    ents = [Entity(0, 4, "PER"), Entity(9, 12, "ORG"), Entity(17, 21, "LOC"), Entity(25, 29, "MISC")]
    ops = {"PER": Operator("mask", chars_to_mask=0), "ORG": Operator("keep"), "LOC": Operator("mask", chars_to_mask=2), "MISC": Operator("replace", new_value="rome")}
    _, items = redact(text, ents, ops)
    assert [(i.entity_type, i.visible_chars) for i in items] == [("PER", 4), ("ORG", 3), ("LOC", 2), ("MISC", 4)]
    _, items = redact(text, ents, {"DEFAULT": Operator("redact")})
    assert all(i.visible_chars == 0 for i in items)
    assert [(i.input_start, i.input_end) for i in items] == [(0, 4), (9, 12), (17, 21), (25, 29)]
    assert visible_chars(Operator("hash"), "Anna", "<PER_k1_00>") == 0


def test_redact_output_is_bounded():
    # finding 2: a long new_value on many short entities made 200 MB from a 114 KB request
    text = "a " * 50_000
    ents = [Entity(i, i + 1, "PER") for i in range(0, len(text), 2)]
    with pytest.raises(OutputTooLarge, match="1000000"):
        redact(text, ents, {"PER": Operator("replace", new_value="x" * 64)}, max_output_chars=1_000_000)
    out, _ = redact(text, ents, {"PER": Operator("replace", new_value="xy")}, max_output_chars=150_000)
    assert len(out) == 150_000
    with pytest.raises(OutputTooLarge):
        redact(text, ents, {"PER": Operator("replace", new_value="xy")}, max_output_chars=149_999)


def test_adjacent_entities_stay_apart():
    text = "AnnaBob!"
    out, items = redact(text, [Entity(4, 7, "PER"), Entity(0, 4, "PER")], {"DEFAULT": Operator("replace", new_value="_")})
    assert out == "__!"
    assert [(i.start, i.end) for i in items] == [(0, 1), (1, 2)]


def test_overlap_merges_to_union_and_hiding_beats_keep():
    text = "x New York City y"
    ents = [Entity(2, 10, "LOC", 0.99), Entity(6, 15, "ORG", 0.4)]
    ops = {"LOC": Operator("keep"), "ORG": Operator("replace")}
    out, items = redact(text, ents, ops)
    # LOC would keep its text, but it overlaps an ORG to hide: the union is hidden as ORG
    assert out == "x <ORG> y"
    assert items == [RedactedItem("ORG", 2, 7, "replace")]
    # both hide: the higher score names the region
    out, items = redact(text, ents, {"DEFAULT": Operator("replace")})
    assert out == "x <LOC> y" and items[0].entity_type == "LOC"


def test_redact_rejects_bad_entities():
    with pytest.raises(ValueError, match="ends after the text"):
        redact("abc", [Entity(1, 9, "PER")], {})
    with pytest.raises(ValueError, match="bad offsets"):
        redact("abc", [Entity(2, 2, "PER")], {})


@pytest.mark.parametrize(
    "spec,kind,field",
    [
        ({"FOO": {"type": "replace"}}, "unknown_type", "operators.FOO"),
        ({"PER": {"type": "encrypt"}}, "unknown_operator", "operators.PER.type"),
        ({"PER": {"type": "mask", "masking_char": "**"}}, "invalid", "operators.PER.masking_char"),
        ({"PER": {"type": "mask", "chars_to_mask": -1}}, "invalid", "operators.PER.chars_to_mask"),
        ({"PER": {"type": "mask", "chars_to_mask": True}}, "invalid", "operators.PER.chars_to_mask"),
        ({"PER": {"type": "replace", "new_value": 3}}, "invalid", "operators.PER.new_value"),
        ({"PER": {"type": "redact", "new_value": "x"}}, "invalid", "operators.PER.new_value"),
        ({"PER": "replace"}, "invalid", "operators.PER"),
        ({"DEFAULT": {}}, "invalid", "operators.DEFAULT.type"),
    ],
)
def test_parse_operators_names_the_problem(spec, kind, field):
    with pytest.raises(OperatorError) as err:
        parse_operators(spec, TYPES)
    assert err.value.kind == kind and err.value.field == field


def test_parse_operators_builds_operators():
    ops = parse_operators({"DEFAULT": {"type": "hash"}, "PER": {"type": "mask", "masking_char": "x", "from_end": True}}, TYPES)
    assert ops["DEFAULT"] == Operator("hash")
    assert ops["PER"] == Operator("mask", masking_char="x", from_end=True)
    assert ops["PER"].to_dict() == {"type": "mask", "masking_char": "x", "from_end": True}


# --- properties ---------------------------------------------------------------
ALPHABET = st.sampled_from(list("ab \r\n\u0301\U0001F600é-"))
OPERATORS = st.sampled_from(
    [Operator("replace"), Operator("replace", new_value=""), Operator("mask"), Operator("mask", chars_to_mask=1, from_end=True), Operator("redact"), Operator("hash"), Operator("keep")]
)


@st.composite
def texts_with_entities(draw):
    text = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=40))
    n = draw(st.integers(0, 6))
    ents = []
    for _ in range(n):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        score = draw(st.one_of(st.none(), st.floats(0, 1)))
        ents.append(Entity(start, end, draw(st.sampled_from(TYPES)), score))
    ops = {t: draw(OPERATORS) for t in TYPES if draw(st.booleans())}
    return text, ents, ops


@settings(max_examples=200, deadline=None)
@given(texts_with_entities(), st.randoms())
def test_redact_properties(case, rnd):
    text, ents, ops = case
    out, items = redact(text, ents, ops, HASHER)
    regions = merge_overlaps(ents, ops)
    assert len(items) == len(regions)
    # items sorted, disjoint, inside the output
    for a, b in zip(items, items[1:]):
        assert a.end <= b.start
    # the text between items is the input text between regions, in order: nothing else changed
    cursor_in, cursor_out = 0, 0
    for item, (start, end, etype, op) in zip(items, regions):
        assert out[cursor_out : item.start] == text[cursor_in:start]
        assert item.entity_type == etype and item.operator == op.name
        replaced = out[item.start : item.end]
        assert replaced == apply_operator(op, text[start:end], etype, HASHER)
        if op.name != "keep":
            # every covered character of an entity whose operator hides is gone (masks keep the length)
            assert op.name == "mask" or replaced != text[start:end] or replaced == ""
        cursor_in, cursor_out = end, item.end
    assert out[cursor_out:] == text[cursor_in:]
    # every character covered by an entity lies in exactly one region
    covered = {i for e in ents for i in range(e.start, e.end)}
    in_regions = {i for s, e, _, _ in regions for i in range(s, e)}
    assert covered == in_regions
    # the order of the entities does not matter
    shuffled = list(ents)
    rnd.shuffle(shuffled)
    assert redact(text, shuffled, ops, HASHER) == (out, items)


@settings(max_examples=100, deadline=None)
@given(texts_with_entities())
def test_keep_everything_is_identity(case):
    text, ents, _ = case
    out, items = redact(text, ents, {"DEFAULT": Operator("keep")})
    assert out == text
    assert all(i.operator == "keep" for i in items)
