from concurrent.futures import ThreadPoolExecutor

import pytest
import spacy
from spacy.tokens import Span

pytest.importorskip("phonenumbers")

from spacy_ner_plus.pipeline import pii_patterns  # noqa: E402  (registers the factory)
from spacy_ner_plus.pipeline.pii_patterns import (  # noqa: E402
    SCORES,
    entity_source,
    find_credit_cards,
    find_email_addresses,
    find_ibans,
    find_ip_addresses,
    find_phone_numbers,
    find_pii,
    find_urls,
    find_us_ssns,
    iban_valid,
    luhn_valid,
    resolve_overlaps,
    us_ssn_valid,
)


def texts(matches, text):
    return [text[m.start:m.end] for m in matches]


@pytest.fixture
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns")
    return nlp


# --- recognisers --------------------------------------------------------------


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")  # Amex test number
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111 1111")


def test_credit_cards_need_luhn_and_one_separator():
    text = "cards: 4111-1111-1111-1111, 4111 1111 1111 1111 and 378282246310005."
    assert texts(find_credit_cards(text), text) == ["4111-1111-1111-1111", "4111 1111 1111 1111", "378282246310005"]
    for bad in ("4111-1111-1111-1112", "4111 1111-1111 1111", "order 4111111111"):
        assert list(find_credit_cards(bad)) == [], bad


def test_credit_card_wrapped_over_a_line_break():
    text = "card 4111 1111\n1111 1111 ok"
    assert texts(find_credit_cards(text), text) == ["4111 1111\n1111 1111"]


def test_iban_mod97_and_country_length():
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("DE88 3704 0044 0532 0130 00")  # check digits
    assert not iban_valid("DE89 3704 0044 0532 0130 0")  # DE is 22 characters
    assert not iban_valid("XX89 3704 0044 0532 0130 00")  # no such country


def test_iban_candidates_cut_at_the_country_length():
    text = "IBAN DE89370400440532013000, or GB82 WEST 1234 5698 7654 32 BANK"
    assert texts(find_ibans(text), text) == ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"]
    assert list(find_ibans("DE88 3704 0044 0532 0130 00")) == []


@pytest.mark.parametrize(
    "ssn,valid",
    [
        ("536-22-1234", True),
        ("000-12-3456", False),
        ("666-12-3456", False),
        ("912-34-5678", False),
        ("123-00-4567", False),
        ("123-45-0000", False),
        ("078-05-1120", False),
    ],
)
def test_ssn_ranges(ssn, valid):
    assert us_ssn_valid(*ssn.split("-")) is valid
    assert (len(list(find_us_ssns(f"SSN {ssn}."))) == 1) is valid


def test_ssn_separators_must_agree():
    assert texts(find_us_ssns("a 536 22 1234 b"), "a 536 22 1234 b") == ["536 22 1234"]
    assert list(find_us_ssns("a 536-22 1234 b")) == []
    assert list(find_us_ssns("a 536221234 b")) == []


def test_ip_addresses_v4_and_v6_validated():
    text = "from 192.168.0.1, 2001:db8::1 and fe80::1%eth0; not 256.1.1.1, 10:30:00 or 1.2.3."
    assert sorted(texts(find_ip_addresses(text), text)) == ["192.168.0.1", "2001:db8::1", "fe80::1%eth0"]


def test_ipv6_clause_colon_is_not_part_of_the_address():
    text = "blocked 2001:db8::1: see log"
    assert texts(find_ip_addresses(text), text) == ["2001:db8::1"]


def test_phone_regions_decide_national_formats():
    text = "call (650) 253-0000 or 030 1234567 or +44 20 7946 0958"
    us = texts(find_phone_numbers(text, ["US"]), text)
    de = texts(find_phone_numbers(text, ["DE"]), text)
    assert us == ["(650) 253-0000", "+44 20 7946 0958"]
    assert de == ["030 1234567", "+44 20 7946 0958"]


def test_phone_numbers_not_dates_ips_or_ssns():
    text = "on 04.10.2025 11:00 from 190.140.60.180 with SSN 536-22-1234"
    assert list(find_phone_numbers(text, ["US", "DE", "FR", "GB", "IN"])) == []


def test_phone_in_parentheses_excludes_the_bracket():
    text = "Mr X (+44 20 7946 0958) called"
    assert texts(find_phone_numbers(text, ["GB"]), text) == ["+44 20 7946 0958"]


def test_urls_trailing_punctuation_and_brackets():
    text = "see https://example.com/a?b=1. (www.example.org/x) https://en.wikipedia.org/wiki/Foo_(bar) http://nohost"
    found = list(find_urls(text))
    assert texts(found, text) == ["https://example.com/a?b=1", "www.example.org/x", "https://en.wikipedia.org/wiki/Foo_(bar)"]
    assert [m.score for m in found] == [SCORES["URL"], SCORES["URL_NO_SCHEME"], SCORES["URL"]]


def test_email_addresses():
    text = "(jane.doe+tag@example.co.uk), not jane@localhost or @handle."
    assert texts(find_email_addresses(text), text) == ["jane.doe+tag@example.co.uk"]


# --- the component ------------------------------------------------------------


def test_component_sets_entities_with_offsets_and_scores(nlp):
    text = "Mail (jane@example.com) or call +44 20 7946 0958; card 4111-1111-1111-1111."
    doc = nlp(text)
    got = [(e.text, e.label_) for e in doc.ents]
    assert got == [
        ("jane@example.com", "EMAIL_ADDRESS"),
        ("+44 20 7946 0958", "PHONE_NUMBER"),
        ("4111-1111-1111-1111", "CREDIT_CARD"),
    ]
    for ent in doc.ents:
        assert text[ent.start_char:ent.end_char] == ent.text
    group = doc.spans["pii_patterns"]
    assert [s.start for s in group] == sorted(s.start for s in group)
    assert list(group.attrs["scores"]) == [SCORES["EMAIL_ADDRESS"], SCORES["PHONE_NUMBER"], SCORES["CREDIT_CARD"]]
    assert [entity_source(e) for e in doc.ents] == ["pattern"] * 3


def test_match_inside_a_token_splits_it_and_is_counted(nlp):
    doc = nlp("ip=10.0.0.1; ssn#536-22-1234 and 10.0.0.2")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("10.0.0.1", "IP_ADDRESS"),
        ("536-22-1234", "US_SSN"),
        ("10.0.0.2", "IP_ADDRESS"),
    ]
    assert [t.text for t in doc][:4] == ["ip=", "10.0.0.1", ";", "ssn#"]
    assert doc.text == "ip=10.0.0.1; ssn#536-22-1234 and 10.0.0.2"
    assert doc.spans["pii_patterns"].attrs["split"] == 2


# a structured value inside a larger token, and what must be redacted of it
GLUED = [
    ("request from |203.0.113.9| denied", "203.0.113.9", "IP_ADDRESS"),
    ("IP:203.0.113.9 blocked", "203.0.113.9", "IP_ADDRESS"),
    ("user=anna@example.com; role=admin", "anna@example.com", "EMAIL_ADDRESS"),
    ("Call Anna (+44 20 7946 0958) today.", "+44 20 7946 0958", "PHONE_NUMBER"),
    ("x|10.1.2.3|10.1.2.4|y", "10.1.2.3", "IP_ADDRESS"),
    ("host=fe80::1%eth0,port=22", "fe80::1%eth0", "IP_ADDRESS"),
    ("ssn:536-22-1234.", "536-22-1234", "US_SSN"),
]


@pytest.mark.parametrize("text,value,label", GLUED, ids=[g[0] for g in GLUED])
def test_value_inside_a_token_has_its_own_offsets_and_is_redacted_exactly(nlp, text, value, label):
    from spacy_ner_plus.service.operators import Entity, Operator, redact

    doc = nlp(text)
    start = text.index(value)
    ents = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
    assert (start, start + len(value), label) in ents, ents
    redacted, _ = redact(text, [Entity(e.start_char, e.end_char, e.label_) for e in doc.ents], {"DEFAULT": Operator("replace")})
    assert redacted == text.replace(value, f"<{label}>", 1) if len(ents) == 1 else value not in redacted
    assert doc.text == text  # splitting tokens never changes the text


def test_a_token_inside_a_preset_entity_is_not_split(nlp):
    doc = nlp.make_doc("see IP:203.0.113.9 now")
    doc.ents = [Span(doc, 1, 2, label="CUSTOM")]
    doc = nlp.get_pipe("pii_patterns")(doc)
    assert [t.text for t in doc] == ["see", "IP:203.0.113.9", "now"]
    assert [(e.text, e.label_) for e in doc.ents] == [("IP:203.0.113.9", "CUSTOM")]
    group = doc.spans["pii_patterns"]
    assert group.attrs["blocked_by_preset"] == 1 and group.attrs["split"] == 0


def test_overlaps_longest_then_score_whatever_the_order():
    doc = spacy.blank("en")("a b c d")
    long_low = (Span(doc, 0, 3, label="URL"), 0.6)
    short_high = (Span(doc, 2, 4, label="EMAIL_ADDRESS"), 0.95)
    same_len_high = (Span(doc, 1, 4, label="IP_ADDRESS"), 0.9)
    for order in ([long_low, short_high, same_len_high], [same_len_high, short_high, long_low]):
        kept, left_out = resolve_overlaps(order)
        # "a b c" and "b c d" have the same length: the higher score wins
        assert [(s.start, s.end, s.label_) for s, _ in kept] == [(1, 4, "IP_ADDRESS")]
        assert left_out == 2


def test_ipv4_inside_ipv6_resolves_to_the_ipv6(nlp):
    doc = nlp("mapped ::ffff:192.0.2.128 here")
    assert [(e.text, e.label_) for e in doc.ents] == [("::ffff:192.0.2.128", "IP_ADDRESS")]
    assert doc.spans["pii_patterns"].attrs["overlapping"] == 1


def test_preset_entities_are_kept():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "CONTACT", "pattern": [{"TEXT": "jane@example.com"}]}])
    nlp.add_pipe("pii_patterns")
    doc = nlp("Write to jane@example.com or bob@example.org.")
    assert [(e.text, e.label_) for e in doc.ents] == [("jane@example.com", "CONTACT"), ("bob@example.org", "EMAIL_ADDRESS")]
    group = doc.spans["pii_patterns"]
    assert [s.text for s in group] == ["jane@example.com", "bob@example.org"]
    assert group.attrs["blocked_by_preset"] == 1
    assert [entity_source(e) for e in doc.ents] == ["other", "pattern"]


def test_no_pii_text(nlp):
    doc = nlp("Order #A4821 shipped on time; version 3.2.1 fixed it. Total $49.99.")
    assert doc.ents == ()
    assert len(doc.spans["pii_patterns"]) == 0


def test_bad_settings_are_clear_errors():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="unknown label"):
        nlp.add_pipe("pii_patterns", config={"labels": ["EMAIL_ADDRESS", "PERSON"]})
    with pytest.raises(ValueError, match="phone_regions"):
        nlp.add_pipe("pii_patterns", config={"phone_regions": ["XX"]})


def test_labels_setting_limits_the_recognisers():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns", config={"labels": ["EMAIL_ADDRESS"]})
    doc = nlp("jane@example.com 4111-1111-1111-1111")
    assert [e.label_ for e in doc.ents] == ["EMAIL_ADDRESS"]


def test_threads_give_the_sequential_result(nlp):
    texts_ = [f"user{i}@example.com from 10.0.{i}.1, card 4111 1111 1111 1111, tel +44 20 7946 09{i:02d}" for i in range(40)]
    expected = [[(e.start_char, e.end_char, e.label_) for e in nlp(t).ents] for t in texts_]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: [(e.start_char, e.end_char, e.label_) for e in nlp(t).ents], texts_))
    assert got == expected


def test_settings_round_trip_through_disk_and_config(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns", config={"phone_regions": ["DE"]})
    text = "Ruf an: 030 1234567, mail jane@example.com"
    before = [(e.text, e.label_) for e in nlp(text).ents]
    assert before == [("030 1234567", "PHONE_NUMBER"), ("jane@example.com", "EMAIL_ADDRESS")]
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert [(e.text, e.label_) for e in loaded(text).ents] == before
    assert loaded.get_pipe("pii_patterns").phone_regions == ("DE",)
    us_only = spacy.load(tmp_path / "p", config={"components": {"pii_patterns": {"phone_regions": ["US"]}}})
    assert [(e.text, e.label_) for e in us_only(text).ents] == [("jane@example.com", "EMAIL_ADDRESS")]


# --- with ner_plus --------------------------------------------------------------


def _keeps_preset(nlp) -> bool:
    return "overwrite_ents" in nlp.get_pipe_config("ner_plus")


def test_end_to_end_with_ner_plus(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "ner")
    nlp = spacy.load(tmp_path / "ner")
    nlp.add_pipe("pii_patterns", first=True)
    assert nlp.pipe_names == ["pii_patterns", "ner_plus"]
    if not _keeps_preset(nlp):
        pytest.skip("this ner_plus overwrites preset doc.ents (no overwrite_ents setting yet)")
    text = "John lives in New York City . Mail john@example.com or call +44 20 7946 0958 ."
    doc = nlp(text)
    by_text = {e.text: (e.label_, entity_source(e)) for e in doc.ents}
    assert by_text["john@example.com"] == ("EMAIL_ADDRESS", "pattern")
    assert by_text["+44 20 7946 0958"] == ("PHONE_NUMBER", "pattern")
    assert by_text["John"] == ("PER", "model")
    assert by_text["New York City"] == ("LOC", "model")
    # the model's span group never holds the preset pattern entities
    assert all(s.label_ in ("PER", "LOC", "ORG") for s in doc.spans["ner_plus"])
    from spacy_ner_plus.pipeline import ner_plus as pipeline_component

    if hasattr(pipeline_component, "register_scored_spans_key"):
        email = next(e for e in doc.ents if e.label_ == "EMAIL_ADDRESS")
        assert email._.confidence == pytest.approx(SCORES["EMAIL_ADDRESS"])
    nlp.to_disk(tmp_path / "both")
    loaded = spacy.load(tmp_path / "both")
    assert loaded.pipe_names == ["pii_patterns", "ner_plus"]
    again = loaded(text)
    assert [(e.start, e.end, e.label_) for e in again.ents] == [(e.start, e.end, e.label_) for e in doc.ents]
    assert list(again.spans["ner_plus"].attrs["scores"]) == pytest.approx(list(doc.spans["ner_plus"].attrs["scores"]), abs=1e-5)


# --- linear paths (issue 28, finding 1) ---------------------------------------------


def test_entity_sources_index_agrees_with_entity_source():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "CONTACT", "pattern": [{"TEXT": "jane@example.com"}]}])
    nlp.add_pipe("pii_patterns")
    text = " ".join(f"user{i}@example.com" for i in range(300)) + " jane@example.com 10.0.0.1"
    doc = nlp(text)
    index = pii_patterns.entity_sources(doc)
    by_index = [index.get((e.start, e.end, e.label), "other") for e in doc.ents]
    assert by_index == [entity_source(e) for e in doc.ents]
    assert by_index.count("pattern") == 301 and by_index.count("other") == 1


def test_a_digit_before_a_number_is_looked_for_next_to_it_only():
    # the tail of a longer number is still refused; a digit far before is not a reason
    text = "on 25.12.2026 11:00 or 12 call +44 20 7946 0958"
    assert texts(find_phone_numbers(text, ["GB", "DE"]), text) == ["+44 20 7946 0958"]


def test_iban_candidates_do_not_swallow_the_next_one():
    text = "DE89 3704 0044 0532 0130 00 GB82 WEST 1234 5698 7654 32"
    assert texts(find_ibans(text), text) == ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"]
    # a longer run of the same shape is not an IBAN
    assert list(find_ibans("DE89370400440532013000X")) == []
    assert list(find_ibans("DE89 3704 0044 0532 0130 001")) == []


def test_url_trimming_counts_brackets_in_one_pass():
    text = "see (https://en.wikipedia.org/wiki/Foo_(bar)_(baz))). " + "http://a.bc/" + ")" * 5000
    assert texts(find_urls(text), text) == ["https://en.wikipedia.org/wiki/Foo_(bar)_(baz)", "http://a.bc/"]


def test_ssn_and_card_with_dots_but_not_inside_longer_dotted_numbers():
    assert texts(find_us_ssns("id 536.22.1234."), "id 536.22.1234.") == ["536.22.1234"]
    assert list(find_us_ssns("v 1.536.22.1234")) == [] and list(find_us_ssns("536.22.1234.5")) == []
    assert texts(find_credit_cards("pay 4111.1111.1111.1111 now"), "pay 4111.1111.1111.1111 now") == ["4111.1111.1111.1111"]
    assert list(find_credit_cards("4111.1111-1111.1111")) == []  # one kind of separator


@pytest.mark.parametrize("before", [1, 2, 8, 15, 16, 17, 30])
def test_phone_number_on_a_window_boundary_is_found_once(before):
    # the matcher runs on windows; a number that starts just before or after a window's
    # end, or runs across it, is found once, with its exact offsets
    boundary = pii_patterns._PHONE_WINDOW
    text = "word " * ((boundary - before) // 5) + "x" * ((boundary - before) % 5) + "(+44 20 7946 0958) ok"
    start = text.index("+44")
    found = [(m.start, m.end) for m in find_phone_numbers(text, ["US", "GB"])]
    assert found == [(start, start + len("+44 20 7946 0958"))]


# --- national phone formats and what is not a phone number -------------------


@pytest.mark.parametrize("number", [
    "07700 900 123",  # GB mobile
    "612 345 678",  # ES mobile
    "030 1234567",  # DE Berlin
    "06 12 34 56 78",  # FR mobile
    "(555) 010-4477",  # US, fictional but written as a phone number
    "020 7946 0958",  # GB London
])
def test_national_phone_formats_without_a_country_code(number):
    text = f"You can reach me on {number} after six."
    found = [m for m in find_pii(text, ["PHONE_NUMBER"]) if m.label == "PHONE_NUMBER"]
    assert texts(found, text) == [number]


@pytest.mark.parametrize("text", [
    "Released version 2.10.3 and 10.4.2.1 today",
    "order 1234567890 shipped",
    "Order #0612345678 was cancelled",
    "invoice INV-2024-000123 is overdue",
    "Invoice no. 2024001234 attached",
    "ISBN 0306406152 and ISBN 978-3-16-148410-0",
    "2024-03-01 12:34:56,789 INFO worker 612345 started",
    "[2024-03-01T12:34:56Z] pid 612345678 exited",
    "Total due: EUR 612 345 678 by Friday",
    "the fee was 612 345 678 € in the end",
    "Ticket #: 612345678",
    "tracking 030 1234567 ref",
])
def test_not_phone_numbers_versions_ids_amounts_timestamps(text):
    assert list(find_pii(text, ["PHONE_NUMBER"])) == [], text


def test_a_plus_number_is_a_phone_after_any_label():
    text = "order line: +44 20 7946 0958"
    assert texts(find_pii(text, ["PHONE_NUMBER"]), text) == ["+44 20 7946 0958"]


def test_shaped_number_scores_below_a_valid_one():
    text = "(555) 010-4477 or (650) 253-0000"
    scores = {text[m.start:m.end]: m.score for m in find_pii(text, ["PHONE_NUMBER"], ["US"])}
    assert scores == {"(555) 010-4477": SCORES["PHONE_NUMBER_SHAPED"], "(650) 253-0000": SCORES["PHONE_NUMBER"]}


def test_house_number_range_and_postcode_are_not_a_phone_number():
    text = "Arnd-Tlustek-Platz 37-48\n93898 Rostock"
    assert list(find_pii(text, ["PHONE_NUMBER"])) == []
    wrapped = "call +49 30\n1234567 Rostock office"  # a wrapped number that starts with + is still one
    assert texts(find_pii(wrapped, ["PHONE_NUMBER"]), wrapped) == ["+49 30\n1234567"]
