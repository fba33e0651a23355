"""spacy-ner-plus.mention_replace.v1: mention replacement as a corpus augmenter."""
import json
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example, biluo_tags_to_spans
from spacy.util import resolve_dot_names

from spacy_ner_plus.training.augment import create_mention_replace_augmenter

# words, spaces, IOB tags, sentence starts (None: no sentence annotation)
SENTENCES = [
    (["John", "Smith", "lives", "in", "New", "York", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
    (["Mary", "works", "for", "Acme", "Corp", "in", "Paris", "."], ["B-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "O"]),
    (["Berlin", "and", "Rome", "hosted", "Siemens", "."], ["B-LOC", "O", "B-LOC", "O", "B-ORG", "O"]),
    (["Peter", "met", "Anna", "Keller", "in", "Lisbon", "."], ["B-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O"]),
    (["Nothing", "to", "see", "here", "."], ["O"] * 5),
]


def make_doc(nlp, words: List[str], tags: List[str], sent_starts=None) -> Doc:
    spaces = [True] * (len(words) - 1) + [False]
    return Doc(nlp.vocab, words=words, spaces=spaces, ents=tags, sent_starts=sent_starts)


@pytest.fixture
def nlp():
    return spacy.blank("en")


@pytest.fixture
def train_docbin(tmp_path, nlp) -> Path:
    path = tmp_path / "train.spacy"
    DocBin(docs=[make_doc(nlp, w, t) for w, t in SENTENCES]).to_disk(path)
    return path


def pool_texts(nlp, path: Path) -> Dict[str, Set[str]]:
    pool: Dict[str, Set[str]] = {}
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        for ent in doc.ents:
            pool.setdefault(ent.label_, set()).add(ent.text)
    return pool


def examples(nlp) -> List[Example]:
    return [Example(nlp.make_doc(doc.text), doc) for doc in (make_doc(nlp, w, t) for w, t in SENTENCES)]


def outside_entities(doc: Doc) -> List[Tuple[str, str]]:
    """Tokens outside entities with their trailing whitespace, in order, with a marker per entity."""
    out, i = [], 0
    for ent in doc.ents:
        out.extend((t.text, t.whitespace_) for t in doc[i : ent.start])
        out.append((f"<{ent.label_}>", ent[-1].whitespace_))
        i = ent.end
    out.extend((t.text, t.whitespace_) for t in doc[i:])
    return out


def augment_all(augmenter, nlp, egs: List[Example]) -> List[Example]:
    out = []
    for eg in egs:
        produced = list(augmenter(nlp, eg))
        assert len(produced) == 1  # instead of, never in addition to: an epoch keeps its size
        out.extend(produced)
    return out


def signature(egs: List[Example]) -> List[Tuple[str, Tuple]]:
    return [(eg.reference.text, tuple((e.start, e.end, e.label_) for e in eg.reference.ents)) for eg in egs]


def test_augment_replaces_mentions_with_aligned_labels(nlp, train_docbin):
    augmenter = create_mention_replace_augmenter(train_docbin, level=1.0, seed=3)
    pool = pool_texts(nlp, train_docbin)
    originals = examples(nlp)
    for old, new in zip(originals, augment_all(augmenter, nlp, originals)):
        ref = new.reference
        assert [e.label_ for e in ref.ents] == [e.label_ for e in old.reference.ents]
        for old_ent, new_ent in zip(old.reference.ents, ref.ents):
            assert new_ent.text in pool[new_ent.label_]
            assert new_ent.text != old_ent.text  # every label has other mentions in this pool
        assert outside_entities(ref) == outside_entities(old.reference)
        # text round trip: the Doc's text is its tokens and spaces; predicted has the same words
        assert ref.text == "".join(t.text_with_ws for t in ref)
        assert [t.text for t in new.predicted] == [t.text for t in ref]
        assert new.predicted.text == ref.text
        assert list(new.alignment.x2y.lengths) == [1] * len(ref)
        assert list(new.alignment.x2y.data) == list(range(len(ref)))
        # the entity labels reach the predicted tokens one to one
        aligned = biluo_tags_to_spans(new.predicted, new.get_aligned_ner())
        assert [(s.start, s.end, s.label_) for s in aligned] == [(e.start, e.end, e.label_) for e in ref.ents]
    assert augmenter.counts["augmented"] == 4 and augmenter.counts["no_entities"] == 1
    assert augmenter.counts["replaced"] == 11


def test_multi_token_mention_keeps_internal_and_trailing_spaces(nlp, tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"LOC": ["Rio de Janeiro"]}))
    augmenter = create_mention_replace_augmenter(pool, level=1.0)
    doc = Doc(nlp.vocab, words=["In", "Paris", ",", "rain"], spaces=[True, False, True, False], ents=["O", "B-LOC", "O", "O"])
    (new,) = augmenter(nlp, Example(nlp.make_doc(doc.text), doc))
    assert new.reference.text == "In Rio de Janeiro, rain"
    assert [(e.text, e.label_) for e in new.reference.ents] == [("Rio de Janeiro", "LOC")]
    assert [t.text for t in new.reference] == ["In", "Rio", "de", "Janeiro", ",", "rain"]


def test_level_zero_passes_examples_through(nlp, train_docbin):
    augmenter = create_mention_replace_augmenter(train_docbin, level=0.0)
    originals = examples(nlp)
    out = augment_all(augmenter, nlp, originals)
    assert all(a is b for a, b in zip(out, originals))
    assert augmenter.counts["augmented"] == 0


def test_level_half_augments_some_not_all(nlp, train_docbin):
    augmenter = create_mention_replace_augmenter(train_docbin, level=0.5, seed=0)
    egs = examples(nlp)[:4] * 50  # 200 examples with entities
    augmented = sum(out is not eg for eg, out in zip(egs, augment_all(augmenter, nlp, egs)))
    assert 70 <= augmented <= 130


def test_example_without_entities_is_passed_unchanged(nlp, train_docbin):
    augmenter = create_mention_replace_augmenter(train_docbin, level=1.0)
    eg = examples(nlp)[4]
    assert list(augmenter(nlp, eg)) == [eg]


def test_same_seed_same_examples_other_seed_differs(nlp, train_docbin):
    egs = examples(nlp) * 5

    def run(seed):
        return signature(augment_all(create_mention_replace_augmenter(train_docbin, level=0.7, case_level=0.3, seed=seed), nlp, egs))

    first = run(1)
    assert first != signature(egs)
    assert run(1) == first
    assert run(2) != first


def test_json_pool_is_tokenized_with_make_doc(nlp, tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"PER": ["Dr. Jane O'Neil"], "LOC": ["Lisbon"]}))
    augmenter = create_mention_replace_augmenter(pool, level=1.0)
    (new,) = augmenter(nlp, examples(nlp)[0])
    assert [(e.text, e.label_) for e in new.reference.ents] == [("Dr. Jane O'Neil", "PER"), ("Lisbon", "LOC")]
    per = new.reference.ents[0]
    assert [t.text for t in per] == [t.text for t in nlp.make_doc("Dr. Jane O'Neil")]
    assert new.reference.text == "Dr. Jane O'Neil lives in Lisbon ."


def test_label_without_pool_is_kept_and_counted(nlp, tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"LOC": ["Lisbon", "Oslo"]}))
    augmenter = create_mention_replace_augmenter(pool, level=1.0)
    with pytest.warns(UserWarning, match="'PER'"):
        (new,) = augmenter(nlp, examples(nlp)[0])
    ents = [(e.text, e.label_) for e in new.reference.ents]
    assert ents[0] == ("John Smith", "PER") and ents[1][0] in ("Lisbon", "Oslo")
    assert augmenter.kept_without_pool == {"PER": 1}


def test_only_mention_of_its_label_is_kept(nlp, tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"PER": ["John Smith"], "LOC": ["New York"]}))
    augmenter = create_mention_replace_augmenter(pool, level=1.0)
    eg = examples(nlp)[0]
    with pytest.warns(UserWarning):
        assert list(augmenter(nlp, eg)) == [eg]  # nothing could change: the original itself
    assert augmenter.kept_without_pool == {"PER": 1, "LOC": 1}


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", r"bad\.json: cannot read the mention pool as JSON"),
        ('["Paris"]', r"bad\.json: the mention pool must be a JSON object"),
        ('{"LOC": "Paris"}', r"bad\.json: key 'LOC': expected a list"),
        ('{"LOC": ["Paris", ""]}', r"bad\.json: key 'LOC', item 1: expected a non-empty string"),
        ('{"LOC": ["Paris", 3]}', r"bad\.json: key 'LOC', item 1: expected a non-empty string, got 3"),
        ('{"LOC": []}', r"bad\.json: the mention pool holds no entity mention"),
    ],
)
def test_bad_json_pool_names_file_and_key(nlp, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    augmenter = create_mention_replace_augmenter(path, level=1.0)
    with pytest.raises(ValueError, match=message):
        list(augmenter(nlp, examples(nlp)[0]))


def test_missing_pool_file_is_an_error_naming_it(nlp, tmp_path):
    augmenter = create_mention_replace_augmenter(tmp_path / "nowhere.spacy", level=1.0)
    with pytest.raises(ValueError, match=r"nowhere\.spacy: no such file"):
        list(augmenter(nlp, examples(nlp)[0]))


def test_unreadable_docbin_is_an_error_naming_it(nlp, tmp_path):
    path = tmp_path / "broken.spacy"
    path.write_bytes(b"not a docbin")
    augmenter = create_mention_replace_augmenter(path, level=1.0)
    with pytest.raises(ValueError, match=r"broken\.spacy: cannot read it as a spaCy DocBin"):
        list(augmenter(nlp, examples(nlp)[0]))


def test_pool_is_read_once(nlp, train_docbin):
    augmenter = create_mention_replace_augmenter(train_docbin, level=1.0)
    augment_all(augmenter, nlp, examples(nlp))
    pool = augmenter._pool
    train_docbin.unlink()  # a second read would fail now
    augment_all(augmenter, nlp, examples(nlp))
    assert augmenter._pool is pool


@pytest.mark.parametrize("level,case_level", [(1.5, 0.0), (0.5, -0.1)])
def test_probabilities_out_of_range_are_rejected(train_docbin, level, case_level):
    with pytest.raises(ValueError, match="probability"):
        create_mention_replace_augmenter(train_docbin, level=level, case_level=case_level)


def test_case_level_changes_case_of_replacements(nlp, tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"PER": ["Anna maria Keller"], "LOC": ["Oslo"]}))
    eg = examples(nlp)[0]
    casings = {"Anna maria Keller": "PER", "anna maria keller": "PER", "ANNA MARIA KELLER": "PER", "Anna Maria Keller": "PER"}
    seen = set()
    augmenter = create_mention_replace_augmenter(pool, level=1.0, case_level=1.0, seed=0)
    for _ in range(60):
        (new,) = augmenter(nlp, eg)
        per = new.reference.ents[0].text
        assert per in casings
        seen.add(per)
    # case_level 1: always rewritten in one of the three casings, never as given
    assert seen == {"anna maria keller", "ANNA MARIA KELLER", "Anna Maria Keller"}
    unchanged = create_mention_replace_augmenter(pool, level=1.0, case_level=0.0)
    assert {list(unchanged(nlp, eg))[0].reference.ents[0].text for _ in range(10)} == {"Anna maria Keller"}


def test_multi_sentence_doc_keeps_sentence_starts(nlp, train_docbin):
    words = SENTENCES[0][0] + SENTENCES[2][0]
    tags = SENTENCES[0][1] + SENTENCES[2][1]
    sent_starts = [True] + [False] * 6 + [True] + [False] * 5
    doc = make_doc(nlp, words, tags, sent_starts)
    # the second sentence starts with an entity, which gets replaced
    assert doc.ents[2].start == 7 and doc.ents[2][0].is_sent_start
    augmenter = create_mention_replace_augmenter(train_docbin, level=1.0, seed=0)
    (new,) = augmenter(nlp, Example(nlp.make_doc(doc.text), doc))
    ref = new.reference
    assert ref.has_annotation("SENT_START")
    sents = list(ref.sents)
    assert len(sents) == 2
    assert sents[0][-1].text == "." and sents[1][0].ent_iob_ == "B" and sents[1][0].ent_type_ == "LOC"
    assert [outside_entities(s.as_doc()) for s in sents] == [outside_entities(s.as_doc()) for s in doc.sents]


CONFIG = """
[paths]
train = null

[nlp]
lang = "en"
pipeline = []

[components]

[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}
max_length = 0
gold_preproc = false
limit = 0

[corpora.train.augmenter]
@augmenters = "spacy-ner-plus.mention_replace.v1"
mentions = ${paths.train}
level = 1.0
case_level = 0.0
seed = 7
"""


def test_config_corpus_uses_the_augmenter(train_docbin):
    config = spacy.util.load_config_from_str(CONFIG, overrides={"paths.train": str(train_docbin)}, interpolate=True)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    # what `spacy train` does: resolve the corpus by its dot name in the interpolated config
    (train_corpus,) = resolve_dot_names(config, ["corpora.train"])
    first = list(train_corpus(nlp))
    assert len(first) == len(SENTENCES)
    originals = list(DocBin().from_disk(train_docbin).get_docs(nlp.vocab))
    pool = pool_texts(nlp, train_docbin)
    for doc, eg in zip(originals, first):
        assert [e.label_ for e in eg.reference.ents] == [e.label_ for e in doc.ents]
        assert all(e.text in pool[e.label_] for e in eg.reference.ents)
        assert outside_entities(eg.reference) == outside_entities(doc)
    assert [eg.reference.text for eg in first[:4]] != [d.text for d in originals[:4]]
    # a corpus built again from the same config draws the same examples
    again = list(resolve_dot_names(config, ["corpora.train"])[0](nlp))
    assert signature(again) == signature(first)
