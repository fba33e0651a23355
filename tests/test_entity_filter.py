"""ner_plus_entity_filter: rules that remove known false positives from doc.ents."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

import spacy_ner_plus  # noqa: F401  (registers the factory when the package is not installed)

ROOT = Path(__file__).resolve().parents[1]

RULES = [
    {"label": "ORG", "pattern": [{"LOWER": "reuters"}]},
    {"label": "PER", "pattern": [{"IS_UPPER": True, "LENGTH": {">=": 4}}]},
]


@pytest.fixture(scope="module")
def model_dir(trained_nlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("filter") / "model"
    trained_nlp.to_disk(path)
    return path


def doc_with_ents(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [Span(doc, start, end, label=label) for start, end, label in ents]
    return doc


def test_removes_only_entities_of_the_rule_type_that_the_pattern_matches_exactly():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("ner_plus_entity_filter", config={"rules": RULES})
    #                       0       1     2    3       4      5      6    7      8
    doc = doc_with_ents(nlp, "Reuters said JOHN Smith met Reuters Group and SOCCER", [(0, 1, "ORG"), (2, 4, "PER"), (5, 7, "ORG"), (8, 9, "PER")])
    assert [(e.text, e.label_) for e in pipe.removed(doc)] == [("Reuters", "ORG"), ("SOCCER", "PER")]
    doc = pipe(doc)
    # "JOHN Smith": the pattern matches JOHN, not the whole entity; "Reuters Group": not exactly "reuters"
    assert [(e.text, e.label_) for e in doc.ents] == [("JOHN Smith", "PER"), ("Reuters Group", "ORG")]
    assert [t.ent_iob_ for t in doc] == ["O", "O", "B", "I", "O", "B", "I", "O", "O"]
    other_type = doc_with_ents(nlp, "Reuters", [(0, 1, "PER")])
    assert [(e.text, e.label_) for e in pipe(other_type).ents] == [("Reuters", "PER")]


def test_config_and_initialize_rules_survive_saving_and_loading(tmp_path):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("ner_plus_entity_filter", name="drop_fp", config={"rules": RULES[:1]})
    nlp.initialize()
    pipe.initialize(rules=[{"label": "ORG", "pattern": [{"ORTH": "Wall"}, {"ORTH": "Street"}]}])
    text, ents = "Reuters said Wall Street fell", [(0, 1, "ORG"), (2, 4, "ORG")]
    assert [e.text for e in pipe.removed(doc_with_ents(nlp, text, ents))] == ["Reuters", "Wall Street"]
    pipe.initialize(rules=pipe.added)  # initializing again replaces the added rules, no duplicates
    assert len(pipe.rules) == 2 and len(pipe.matcher) == 2
    nlp.to_disk(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "drop_fp" / "rules.json").read_text()) == pipe.added  # the config keeps its own
    loaded = spacy.load(tmp_path / "p")
    assert list(loaded.get_pipe("drop_fp")(doc_with_ents(loaded, text, ents)).ents) == []
    assert loaded.get_pipe("drop_fp").rules == pipe.rules
    copy = spacy.blank("en")
    copy.add_pipe("ner_plus_entity_filter", name="drop_fp", config={"rules": RULES[:1]})
    copy.from_bytes(nlp.to_bytes())
    assert copy.get_pipe("drop_fp").rules == pipe.rules  # loading again replaces the added rules, no duplicates
    copy.from_bytes(nlp.to_bytes())
    assert copy.get_pipe("drop_fp").rules == pipe.rules


@pytest.mark.parametrize(
    "rule,message",
    [
        ({"label": "ORG"}, "a rule is"),
        ({"label": "ORG", "pattern": [{"LOWER": "x"}], "note": 1}, "a rule is"),
        ({"label": "", "pattern": [{"LOWER": "x"}]}, "label must be an entity type"),
        ({"label": "ORG", "pattern": [{"LOWR": "x"}]}, "not a spaCy Matcher token pattern"),
    ],
)
def test_a_bad_rule_is_a_clear_error_naming_it(rule, message):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=r"\[components.entity_filter\] rules\[1\]: " + message):
        nlp.add_pipe("ner_plus_entity_filter", name="entity_filter", config={"rules": [RULES[0], rule]})


def test_spacy_assemble_adds_rules_behind_a_trained_pipeline(model_dir, tmp_path):
    """The mini workflow's way: source the trained pipes, add the filter, no retraining."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"label": "PER", "pattern": [{"LOWER": "john"}]}]))
    config = tmp_path / "filtered.cfg"
    config.write_text(
        "\n".join(
            [
                "[paths]", f'model = "{model_dir}"', "",
                "[nlp]", 'lang = "en"', 'pipeline = ["ner_plus","entity_filter"]', "",
                "[components]", "",
                "[components.ner_plus]", "source = ${paths.model}", "",
                "[components.entity_filter]", 'factory = "ner_plus_entity_filter"', "",
                "[initialize]", "", "[initialize.components]", "", "[initialize.components.entity_filter]", "",
                "[initialize.components.entity_filter.rules]", '@readers = "srsly.read_json.v1"', f'path = "{rules}"', "",
            ]
        )
    )
    out = tmp_path / "filtered"
    proc = subprocess.run([sys.executable, "-m", "spacy", "assemble", str(config), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    original, filtered = spacy.load(model_dir), spacy.load(out)
    text = "John lives in New York City ."
    before = [(e.text, e.label_) for e in original(text).ents]
    assert ("John", "PER") in before
    doc = filtered(text)
    assert [(e.text, e.label_) for e in doc.ents] == [x for x in before if x != ("John", "PER")]
    assert [e._.confidence for e in doc.ents] == [e._.confidence for e in original(text).ents if e.text != "John"]


def test_dropped_type_rules_name_the_texts_annotated_only_with_dropped_types(tmp_path):
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = [
        doc_with_ents(nlp, "Chicago beat Boston", [(0, 1, "ORG"), (2, 3, "LOC")]),
        doc_with_ents(nlp, "Chicago is cold", [(0, 1, "LOC")]),  # ORG elsewhere: no rule
        doc_with_ents(nlp, "Wall Street and Israeli stocks", [(0, 2, "LOC"), (3, 4, "MISC")]),
    ]
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    script = [sys.executable, "scripts/dropped_type_rules.py", str(tmp_path / "train.spacy"), "--keep", "PER,ORG"]
    proc = subprocess.run([*script, "--output", str(tmp_path / "all.json")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "no mention of type PER" in " ".join(proc.stdout.split())  # a kept type it never saw: a typo?
    script[-1] = "ORG"
    assert subprocess.run([*script, "--output", str(tmp_path / "all.json")], cwd=ROOT).returncode == 0
    assert json.loads((tmp_path / "all.json").read_text()) == [
        {"label": "ORG", "pattern": [{"ORTH": "Boston"}]},
        {"label": "ORG", "pattern": [{"ORTH": "Israeli"}]},
        {"label": "ORG", "pattern": [{"ORTH": "Wall"}, {"ORTH": "Street"}]},
    ]
    assert subprocess.run([*script, "--from-types", "MISC", "--output", str(tmp_path / "misc.json")], cwd=ROOT).returncode == 0
    assert json.loads((tmp_path / "misc.json").read_text()) == [{"label": "ORG", "pattern": [{"ORTH": "Israeli"}]}]
    proc = subprocess.run([*script, "--from-types", "ORG", "--output", str(tmp_path / "x.json")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "names a kept type" in " ".join(proc.stdout.split())


# --- the PII pipeline's PERSON rules -------------------------------------------


def person_filter():
    from spacy_ner_plus.pipeline.entity_filter import person_not_names

    nlp = spacy.blank("en")
    return nlp, nlp.add_pipe("ner_plus_entity_filter", config={"rules": person_not_names()})


@pytest.mark.parametrize("text,start,end", [
    ("Bro, that was wild", 0, 1),
    ("thanks mate", 1, 2),
    ("ok see you", 0, 1),
    ("Ok", 0, 1),
    ("hey y'all", 1, 3),
    ("I am gonna be late", 3, 4),  # the "na" of "gon na"
    ("I am gonna be late", 2, 4),
    ("we gotta go", 2, 3),
    ("lol", 0, 1),
])
def test_person_on_nicknames_and_contractions_is_removed(text, start, end):
    nlp, pipe = person_filter()
    doc = pipe(doc_with_ents(nlp, text, [(start, end, "PERSON")]))
    assert list(doc.ents) == [], (text, [t.text for t in doc])


@pytest.mark.parametrize("text,start,end", [
    ("Will and Grace met Mark", 0, 1),
    ("Will and Grace met Mark", 2, 3),
    ("Will and Grace met Mark", 4, 5),
    ("Mate Horvat called", 0, 2),
    ("Mate called", 0, 1),  # a given name in some locales: kept when capitalised
    ("Ms Na called", 1, 2),
    ("Bo Diddley played", 0, 2),
    ("ask Sunny", 1, 2),
])
def test_real_names_that_look_like_words_are_kept(text, start, end):
    nlp, pipe = person_filter()
    doc = pipe(doc_with_ents(nlp, text, [(start, end, "PERSON")]))
    assert [(e.start, e.end) for e in doc.ents] == [(start, end)]


def test_person_rules_apply_to_their_label_only():
    from spacy_ner_plus.pipeline.entity_filter import person_not_names

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("ner_plus_entity_filter", config={"rules": person_not_names("PER")})
    doc = pipe(doc_with_ents(nlp, "ok Bro", [(0, 1, "ORG"), (1, 2, "PER")]))
    assert [(e.text, e.label_) for e in doc.ents] == [("ok", "ORG")]


def test_no_word_removed_in_any_case_is_a_name_in_fakers_lists():
    pytest.importorskip("faker")
    import importlib

    from spacy_ner_plus.pipeline.entity_filter import PERSON_NOT_NAMES

    names = set()
    for locale in ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_IN", "pt_BR", "pl_PL"):
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female", "last_names"):
            names.update(n.lower() for n in getattr(provider, attr, ()))
    assert len(names) > 5000
    assert sorted(set(PERSON_NOT_NAMES) & names) == []


def test_person_rules_from_the_config_registry():
    nlp = spacy.blank("en")
    config = {"rules": {"@misc": "spacy-ner-plus.person_not_names.v1", "label": "PERSON"}}
    pipe = nlp.add_pipe("ner_plus_entity_filter", config=config)
    assert [e.text for e in pipe.removed(doc_with_ents(nlp, "yo Anna", [(0, 1, "PERSON"), (1, 2, "PERSON")]))] == ["yo"]


def test_the_service_does_not_report_what_the_filter_removed(model_dir):
    from spacy_ner_plus.service.decision import ServedModel

    nlp = spacy.load(model_dir)
    served = ServedModel(nlp, "filtered", {}, {})
    text = "John lives in New York City ."
    before = {(c.start, c.end, c.label, c.source) for c in served.candidates(nlp(text))}
    assert (0, 4, "PER", "model") in before
    nlp.add_pipe("ner_plus_entity_filter", config={"rules": [{"label": "PER", "pattern": [{"ORTH": "John"}]}]})
    after = {(c.start, c.end, c.label, c.source) for c in served.candidates(nlp(text))}
    assert after == before - {(0, 4, "PER", "model")}
