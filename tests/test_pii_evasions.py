"""PII written to slip past the patterns (issue 28, finding 6): each is found, with its exact
ORIGINAL character offsets and its type, by the recognisers and by the pipe."""
import pytest
import spacy

pytest.importorskip("phonenumbers")

from spacy_ner_plus.pipeline import pii_patterns  # noqa: E402,F401  (registers the factory)
from spacy_ner_plus.pipeline.pii_patterns import find_pii  # noqa: E402

ZWSP, ZWNJ, ZWJ, WJ, BOM = "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"
LRM, RLM, LRE, PDF = "\u200e", "\u200f", "\u202a", "\u202c"
SHY, NBSP, THIN, NNBSP, IDEO = "\u00ad", "\u00a0", "\u2009", "\u202f", "\u3000"
EN, EM, MINUS, NBHY, FIGDASH, FWHY = "\u2013", "\u2014", "\u2212", "\u2011", "\u2012", "\uff0d"


CARD_GROUPS = ["4111", "1111", "1111", "1111"]  # a Luhn-valid test card number


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


# (what the evasion is, the PII as written, its type); each is put inside a sentence
EVASIONS = [
    ("SSN, zero-width space inside a group", f"53{ZWSP}6-22-1234", "US_SSN"),
    ("SSN, zero-width space before the separator", f"536{ZWSP}-22-1234", "US_SSN"),
    ("SSN, no-break spaces", f"536{NBSP}22{NBSP}1234", "US_SSN"),
    ("SSN, en dashes", f"536{EN}22{EN}1234", "US_SSN"),
    ("SSN, em dashes", f"536{EM}22{EM}1234", "US_SSN"),
    ("SSN, minus signs", f"536{MINUS}22{MINUS}1234", "US_SSN"),
    ("SSN, non-breaking hyphens", f"536{NBHY}22{NBHY}1234", "US_SSN"),
    ("SSN, dots", "536.22.1234", "US_SSN"),
    ("SSN, fullwidth digits", fullwidth("536") + "-" + fullwidth("22") + "-" + fullwidth("1234"), "US_SSN"),
    ("SSN, fullwidth hyphen-minus", f"536{FWHY}22{FWHY}1234", "US_SSN"),
    ("SSN, soft hyphens inside groups", f"53{SHY}6-22-12{SHY}34", "US_SSN"),
    ("SSN, right-to-left mark", f"536{RLM}-22-1234", "US_SSN"),
    ("SSN, word joiner", f"536{WJ}-22-1234", "US_SSN"),
    ("SSN, byte order mark", f"536-22{BOM}-1234", "US_SSN"),
    ("SSN, thin spaces", f"536{THIN}22{THIN}1234", "US_SSN"),
    ("SSN, Arabic-Indic digits", "\u0665\u0663\u0666-\u0662\u0662-\u0661\u0662\u0663\u0664", "US_SSN"),
    ("SSN, variation selector", "536\ufe0f-22-1234", "US_SSN"),
    ("SSN, combining grapheme joiner", "536\u034f-22-1234", "US_SSN"),
    ("SSN, mixed: fullwidth digits, en dash, zero-width space", fullwidth("536") + EN + fullwidth("22") + ZWSP + EN + fullwidth("1234"), "US_SSN"),
    ("card, zero-width spaces between groups", ZWSP.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, no-break spaces", NBSP.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, en dashes", EN.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, dots", "4111.1111.1111.1111", "CREDIT_CARD"),
    ("card, fullwidth digits", " ".join(fullwidth(g) for g in CARD_GROUPS), "CREDIT_CARD"),
    ("card, fullwidth digits, no separator", fullwidth("5500000000000004"), "CREDIT_CARD"),
    ("card, soft hyphens", SHY.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, mixed space variants", f"4111{NBSP}1111{THIN}1111{NNBSP}1111", "CREDIT_CARD"),
    ("card, ideographic spaces", IDEO.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, figure dashes", FIGDASH.join(CARD_GROUPS), "CREDIT_CARD"),
    ("card, zero-width joiner and non-joiner", f"4111{ZWJ}1111 1111{ZWNJ}1111", "CREDIT_CARD"),
    ("phone, zero-width space after the country code", f"+44{ZWSP}20 7946 0958", "PHONE_NUMBER"),
    ("phone, no-break spaces", f"+44{NBSP}20{NBSP}7946{NBSP}0958", "PHONE_NUMBER"),
    ("phone, en dash", f"(650) 253{EN}0000", "PHONE_NUMBER"),
    ("phone, fullwidth digits and plus", fullwidth("+44") + " " + fullwidth("20") + " " + fullwidth("7946") + " " + fullwidth("0958"), "PHONE_NUMBER"),
    ("phone, fullwidth brackets", "\uff08650\uff09 253-0000", "PHONE_NUMBER"),
    ("phone, soft hyphen", f"+44 20 79{SHY}46 0958", "PHONE_NUMBER"),
    ("e-mail, zero-width space in the local part", f"ja{ZWSP}ne@example.com", "EMAIL_ADDRESS"),
    ("e-mail, fullwidth at sign", "jane\uff20example.com", "EMAIL_ADDRESS"),
    ("e-mail, fullwidth letters", fullwidth("jane") + "@example.com", "EMAIL_ADDRESS"),
    ("e-mail, IDN local part", "müller@example.de", "EMAIL_ADDRESS"),
    ("e-mail, IDN domain", "user@bücher.example", "EMAIL_ADDRESS"),
    ("e-mail, decomposed umlaut", "mu\u0308ller@example.de", "EMAIL_ADDRESS"),
    ("e-mail, soft hyphen in the domain", f"jane@exam{SHY}ple.com", "EMAIL_ADDRESS"),
    ("IBAN, no-break spaces", NBSP.join(["DE89", "3704", "0044", "0532", "0130", "00"]), "IBAN_CODE"),
    ("IBAN, zero-width spaces", ZWSP.join(["DE89", "3704", "0044", "0532", "0130", "00"]), "IBAN_CODE"),
    ("IBAN, thin spaces", THIN.join(["GB82", "WEST", "1234", "5698", "7654", "32"]), "IBAN_CODE"),
    ("IBAN, fullwidth", fullwidth("DE89370400440532013000"), "IBAN_CODE"),
    ("IP, fullwidth digits", ".".join(fullwidth(part) for part in ("192", "168", "0", "1")), "IP_ADDRESS"),
    ("IP, fullwidth full stops", "192\uff0e168\uff0e0\uff0e1", "IP_ADDRESS"),
    ("IP, zero-width space", f"192.168{ZWSP}.0.1", "IP_ADDRESS"),
    ("URL, zero-width space in the host", f"https://exa{ZWSP}mple.com/x", "URL"),
    ("URL, fullwidth scheme", fullwidth("https://") + "example.com/x", "URL"),
]
# marks around a number that a reader does not see are not part of it
EDGES = [
    ("SSN, left-to-right mark before it", f"{LRM}536-22-1234", "536-22-1234", "US_SSN"),
    ("SSN, bidi embedding around it", f"{LRE}536-22-1234{PDF}", "536-22-1234", "US_SSN"),
    ("card, zero-width spaces around it", f"{ZWSP}4111 1111 1111 1111{ZWSP}", "4111 1111 1111 1111", "CREDIT_CARD"),
]


def test_the_table_is_large_and_every_type_is_in_it():
    assert len(EVASIONS) + len(EDGES) >= 40
    assert {label for _, _, label in EVASIONS} == set(pii_patterns.PATTERN_LABELS)


def _sentence(pii: str) -> str:
    return f"Note: {pii} ok."


@pytest.mark.parametrize("what,pii,label", EVASIONS, ids=[e[0] for e in EVASIONS])
def test_evasion_found_with_original_offsets(what, pii, label):
    text = _sentence(pii)
    start = text.index(pii)
    found = {(m.start, m.end, m.label) for m in find_pii(text)}
    assert (start, start + len(pii), label) in found, (what, found)


@pytest.mark.parametrize("what,written,pii,label", EDGES, ids=[e[0] for e in EDGES])
def test_invisible_characters_at_the_edges_are_left_out(what, written, pii, label):
    text = _sentence(written)
    start = text.index(pii)
    assert (start, start + len(pii), label) in {(m.start, m.end, m.label) for m in find_pii(text)}


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns")
    return nlp


@pytest.mark.parametrize("what,pii,label", EVASIONS, ids=[e[0] for e in EVASIONS])
def test_the_pipe_sets_an_entity_over_the_evasion(nlp, what, pii, label):
    text = _sentence(pii)
    start, end = text.index(pii), text.index(pii) + len(pii)
    ents = [e for e in nlp(text).ents if e.label_ == label]
    # the entity covers the PII (expanded to tokens, never less) and no more than its tokens
    assert len(ents) == 1, (what, [(e.text, e.label_) for e in nlp(text).ents])
    ent = ents[0]
    assert ent.start_char <= start and ent.end_char >= end
    # expanding to tokens may take in punctuation next to the PII, never a word
    assert not any(c.isalnum() for c in text[ent.start_char:start] + text[end:ent.end_char]), (what, ent.text)


def test_plain_text_is_unchanged_and_not_over_matched():
    # the view changes characters, not what counts as PII
    for text in ("order 536221234 shipped", "version 1.2.3.4.5", "Café — open 9–5, tel. extension 12"):
        assert [m.label for m in find_pii(text)] == [], text
