"""pii_context: rules after the model (relative dates, units and postal lines of addresses,
a name an address swallowed, separators at entity edges). The model's entities are
written into doc.ents by hand, as ner_plus would leave them."""
import pytest
import spacy
from spacy.tokens import Span

from spacy_ner_plus.pipeline import pii_context, pii_patterns  # noqa: F401  (register the factories)
from spacy_ner_plus.pipeline.pii_context import SCORES, find_relative_dates, find_unit_numbers, postal_part_after, swallowed_name


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_context")
    return nlp


def run(nlp, text, ents=()):
    """The pipe on ``text`` with ``ents`` ((substring, label), as the model found them) preset."""
    doc = nlp.make_doc(text)
    spans = []
    for value, label in ents:
        start = text.index(value)
        spans.append(doc.char_span(start, start + len(value), label=label, alignment_mode="strict"))
    doc.ents = spans
    doc = nlp.get_pipe("pii_context")(doc)
    return [(e.text, e.label_) for e in doc.ents], doc


def found(finder, text):
    return [text[s:e] for s, e in finder(text)]


# --- relative dates -------------------------------------------------------------


@pytest.mark.parametrize("text,dates", [
    ("Let's meet next Tuesday at the office.", ["next Tuesday"]),
    ("I saw her on Friday.", ["Friday"]),
    ("call me yesterday at 5pm or tomorrow at 9:30 a.m.", ["yesterday at 5pm", "tomorrow at 9:30 a.m."]),
    ("That was two weeks ago, see you tomorrow morning.", ["two weeks ago", "tomorrow morning"]),
    ("see you this morning, not the day after tomorrow", ["this morning", "the day after tomorrow"]),
    ("shipped 3 days ago, back 2 weeks from now", ["3 days ago", "2 weeks from now"]),
    ("Mondays and last night", ["Mondays", "last night"]),
])
def test_relative_dates_found(text, dates):
    assert found(find_relative_dates, text) == dates


@pytest.mark.parametrize("text", [
    "ok see u all tomorrow",  # a bare relative day: not PII in our corpus
    "the sprint ends next week; version 2.3 ships next month",  # periods
    "Black Friday and Cyber Monday deals, Good Friday service",
    "in the morning we had 3 days of rain",  # a duration, no anchor
    "2024-03-01 12:34:56 INFO job done today",
    "Fridays-only-build failed",
])
def test_not_relative_dates(text):
    assert found(find_relative_dates, text) == []


def test_relative_date_merges_with_the_models_time_and_trims_its_conjunction(nlp):
    ents, doc = run(nlp, "I saw her on Friday and again yesterday at 5pm.", [("Friday and", "DATE_TIME"), ("5pm", "DATE_TIME")])
    assert ents == [("Friday", "DATE_TIME"), ("yesterday at 5pm", "DATE_TIME")]
    assert doc.spans["pii_context"].attrs["dates"] == 2


def test_relative_date_never_overrides_another_type(nlp):
    ents, doc = run(nlp, "Sunday Times reporter", [("Sunday Times", "ORGANIZATION")])
    assert ents == [("Sunday Times", "ORGANIZATION")]
    assert doc.spans["pii_context"].attrs["blocked"] == 1


def test_model_date_with_a_weekday_is_kept_whole(nlp):
    ents, _ = run(nlp, "on Friday, March 4 at 10:00 we meet", [("Friday, March 4 at 10:00", "DATE_TIME")])
    assert ents == [("Friday, March 4 at 10:00", "DATE_TIME")]


# --- addresses ------------------------------------------------------------------


def test_unit_numbers():
    assert found(find_unit_numbers, "Flat 4B, Apt. 12, Apt 3, Unit 7 and Suite 300; unit 7 of the course, Flat rate 5") == [
        "Flat 4B", "Apt. 12", "Apt 3", "Unit 7", "Suite 300"]


def test_unit_alone_is_an_address_and_joins_the_models_address_after_it(nlp):
    ents, _ = run(nlp, "He lives in Flat 4B, and she in Apt 12. Unit 7 is empty.")
    assert ents == [("Flat 4B", "STREET_ADDRESS"), ("Apt 12", "STREET_ADDRESS"), ("Unit 7", "STREET_ADDRESS")]
    ents, _ = run(nlp, "Flat 4B\n12 Baker Street\nLondon NW1 6XE", [("12 Baker Street\nLondon NW1 6XE", "STREET_ADDRESS")])
    assert ents == [("Flat 4B\n12 Baker Street\nLondon NW1 6XE", "STREET_ADDRESS")]


@pytest.mark.parametrize("text,street,address", [
    ("Send it to 12 Baker Street\nLondon NW1 6XE please.", "12 Baker Street", "12 Baker Street\nLondon NW1 6XE"),
    ("to Hauptstr. 5, 10115 Berlin.", "Hauptstr. 5", "Hauptstr. 5, 10115 Berlin"),
    ("at 221 Main St, Springfield, IL 62704.", "221 Main St", "221 Main St, Springfield, IL 62704"),
    ("ul. Długa 5/3\n00-001 Warszawa", "ul. Długa 5/3", "ul. Długa 5/3\n00-001 Warszawa"),
    ("Maredreef 4\n7748 VK Stadskanaal", "Maredreef 4", "Maredreef 4\n7748 VK Stadskanaal"),
])
def test_postal_line_after_the_models_street_joins_it(nlp, text, street, address):
    ents, _ = run(nlp, text, [(street, "STREET_ADDRESS")])
    assert ents == [(address, "STREET_ADDRESS")]


def test_postal_line_takes_in_the_city_the_model_made_a_location(nlp):
    ents, _ = run(nlp, "Send it to 12 Baker Street\nLondon NW1 6XE please.", [("12 Baker Street", "STREET_ADDRESS"), ("London", "LOCATION")])
    assert ents == [("12 Baker Street\nLondon NW1 6XE", "STREET_ADDRESS")]


@pytest.mark.parametrize("text", [
    "12 Baker Street, London",  # a city without a postcode stays a LOCATION of its own
    "12 Baker Street, 2024 was a good year",
    "12 Baker Street\nInvoice 10023 Total",
])
def test_no_postal_line(text):
    assert postal_part_after(text, len("12 Baker Street")) is None


# --- a name swallowed by an address ---------------------------------------------


@pytest.mark.parametrize("text,person,address", [
    ("Anna Keller, 12 Baker Street, London", "Anna Keller", "12 Baker Street, London"),
    ("Ship to Anna Keller\n12 Baker Street\nLondon NW1 6XE", "Anna Keller", "12 Baker Street\nLondon NW1 6XE"),
    ("Peter Müller, Hauptstraße 5, 10115 Berlin", "Peter Müller", "Hauptstraße 5, 10115 Berlin"),
])
def test_address_never_starts_with_a_name(nlp, text, person, address):
    swallowed = text[text.index(person):]
    ents, doc = run(nlp, text, [(swallowed, "STREET_ADDRESS")])
    assert (person, "PERSON") in ents and (address, "STREET_ADDRESS") in ents, ents
    assert not any(label == "STREET_ADDRESS" and value.startswith(person) for value, label in ents)
    assert doc.spans["pii_context"].attrs["names_split"] == 1


@pytest.mark.parametrize("address", [
    "Strada Maura, 67 Appartamento 3\n10128, Torino (TO)",
    "Baker Street, London W1U 6TY",
    "Flat 49\nHughes Isle",
    "437 Schroeder Mall Suite 714, North Sheila, IN 45966",
    "Canale Farinelli, 78 Appartamento 4",
    "New Street Square, London",
])
def test_addresses_that_start_with_capitalised_words_are_not_split(address):
    assert swallowed_name(address) is None


def test_separators_at_the_edges_are_trimmed(nlp):
    text = "Address: Jean Dupont, 12 rue de la Paix, 75002 Paris"
    ents, doc = run(nlp, text, [("Jean Dupont", "PERSON"), (", 12 rue de la Paix, 75002 Paris", "STREET_ADDRESS")])
    assert ents == [("Jean Dupont", "PERSON"), ("12 rue de la Paix, 75002 Paris", "STREET_ADDRESS")]
    assert doc.spans["pii_context"].attrs["edges_trimmed"] == 1


def test_changed_entities_are_scored():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_context")
    doc = nlp("Unit 7 is empty; back two weeks ago")
    assert [(e.text, e._.confidence) for e in doc.ents] == [("Unit 7", SCORES["STREET_ADDRESS"]), ("two weeks ago", SCORES["DATE_TIME"])]


def test_labels_setting_limits_the_rules_and_is_checked():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_context", config={"labels": ["DATE_TIME"]})
    assert [e.label_ for e in nlp("Unit 7 closed two weeks ago").ents] == ["DATE_TIME"]
    with pytest.raises(ValueError, match="unknown label"):
        spacy.blank("en").add_pipe("pii_context", config={"labels": ["EMAIL"]})


def test_pattern_entities_are_left_alone():
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns", config={"labels": ["IP_ADDRESS"]})
    nlp.add_pipe("pii_context")
    doc = nlp("IP:203.0.113.9 on Friday")
    assert [(e.text, e.label_) for e in doc.ents] == [("203.0.113.9", "IP_ADDRESS"), ("Friday", "DATE_TIME")]


# --- cost: linear in the text, like the pattern side --------------------------------

PATHOLOGICAL = {
    "weekday_words": "next last this coming " * 5000,
    "spaces_after_next": "next" + " \t" * 50000 + "x",
    "counts_without_unit": "a few several two 3 " * 5000,
    "units_glued": "Flat4B Apt Unit Suite " * 5000,
    "postal_lookalikes": "12 Baker Street, " + "Aa " * 30000,
    "capitalised_words": "Anna Keller Bob Dylan " * 5000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_text_costs_about_what_prose_costs(nlp, name):
    import time

    text = PATHOLOGICAL[name]
    prose = ("The committee met in the morning and agreed on the plan for the year. " * (len(text) // 70 + 1))[: len(text)]

    def best(t):
        times = []
        for _ in range(3):
            doc = nlp.make_doc(t)
            if t.startswith("12 Baker Street"):  # the model's address, whose postal line is looked for
                doc.ents = [Span(doc, 0, 3, label="STREET_ADDRESS")]
            started = time.perf_counter()
            nlp.get_pipe("pii_context")(doc)
            times.append(time.perf_counter() - started)
        return min(times)

    # the pipe's own work (the doc is made outside the timing, as the tokenizer is not ours)
    assert best(text) < 10 * best(prose) + 0.05, name
