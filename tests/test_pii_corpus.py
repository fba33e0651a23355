import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import spacy
import srsly

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "pii"
SPLITS = ("train", "dev", "test")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_pii_corpus", ROOT / "scripts" / "make_pii_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load_script()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def template_ids(path: Path):
    return [line.split("\t")[1] for line in path.read_text(encoding="utf8").split("\n") if line.startswith(corpus.DOCSTART)]


@pytest.fixture(scope="module")
def dev_docs():
    return corpus.read_column_docs(ASSETS / "dev.iob", spacy.blank("en"))


def test_project_yml_checksums_match_the_files():
    assets = {a["dest"]: a["checksum"] for a in srsly.read_yaml(ROOT / "project.yml")["assets"]}
    for split in SPLITS:
        assert assets[f"assets/pii/{split}.iob"] == md5(ASSETS / f"{split}.iob"), split


def test_checked_in_dev_split_is_what_the_script_writes(tmp_path):
    faker = pytest.importorskip("faker")
    assert faker.VERSION == corpus.FAKER_VERSION, f"the corpus is defined by Faker {corpus.FAKER_VERSION}: pip install -e '.[dev]'"
    pytest.importorskip("phonenumbers")
    counts = corpus.write_split(spacy.blank("en"), corpus.generate_split("dev", corpus.SPLITS["dev"]), tmp_path / "dev.iob")
    assert md5(tmp_path / "dev.iob") == md5(ASSETS / "dev.iob")
    assert counts["texts"] == 400


def test_splits_share_no_template():
    ids = {split: set(template_ids(ASSETS / f"{split}.iob")) for split in SPLITS}
    assert not ids["train"] & ids["dev"]
    assert not ids["train"] & ids["test"]
    assert not ids["dev"] & ids["test"]
    # and the script's assignment is a partition of all templates
    assigned = [tid for split in SPLITS for tid, _ in corpus.templates_of(split)]
    assert len(assigned) == len(set(assigned)) == sum(len(t) for t in corpus.TEMPLATES.values())


def test_sizes_registers_types_and_texts_without_pii():
    for split, n_texts in corpus.SPLITS.items():
        path = ASSETS / f"{split}.iob"
        ids = template_ids(path)
        assert len(ids) == n_texts
        assert {tid.split("/")[0] for tid in ids} == {"ticket", "email", "chat", "hr", "clinic", "form"}
        assert path.stat().st_size < 1_000_000, "keep the shipped files small"
        tags = Counter(line.rsplit("\t", 1)[-1] for line in path.read_text(encoding="utf8").split("\n") if line and not line.startswith("-DOCSTART-"))
        labels = {tag[2:] for tag in tags if tag.startswith("B-")}
        assert labels == set(corpus.LABELS), split


def test_column_file_rebuilds_spacy_tokenization_and_text(dev_docs):
    nlp = spacy.blank("en")
    assert len(dev_docs) == 400
    for doc in dev_docs:
        assert [t.text for t in nlp.make_doc(doc.text)] == [t.text for t in doc]
    without_pii = sum(1 for d in dev_docs if not d.ents)
    assert 20 <= without_pii <= 100
    # entities split over a line break, inside parentheses and in lists are all there
    assert any("\n" in e.text for d in dev_docs for e in d.ents)
    assert any(e.start > 0 and d[e.start - 1].text == "(" and e.end < len(d) and d[e.end].text == ")" for d in dev_docs for e in d.ents)


def test_docs_equal_the_generated_texts(dev_docs):
    pytest.importorskip("faker")
    generated = corpus.generate_split("dev", corpus.SPLITS["dev"])
    for doc, text in zip(dev_docs, generated):
        assert doc.text == text.text
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == sorted(text.entities)


def test_misaligned_entity_fails_loudly():
    nlp = spacy.blank("en")
    text = corpus.Text("form/99", "Acme Ltd. is here", [(0, 8, "ORGANIZATION")])  # "Ltd." is one token
    with pytest.raises(corpus.AlignmentError, match=r"form/99: ORGANIZATION at characters 0-8"):
        corpus.text_to_doc(nlp, text)


@pytest.mark.parametrize("token", ["\n", "\n\n", " ", "\n  ", "C:\\new", "a\\sb", "plain"])
def test_token_escapes_round_trip(token):
    escaped = corpus.escape_token(token)
    assert not any(c.isspace() for c in escaped)
    assert corpus.unescape_token(escaped) == token


def test_unknown_escape_is_an_error():
    with pytest.raises(ValueError, match="unknown escape"):
        corpus.unescape_token("a\\qb")


def test_bad_space_column_names_file_and_line(tmp_path):
    path = tmp_path / "bad.iob"
    path.write_text("-DOCSTART-\tx/00\tO\nJane\t_\tB-PERSON\nDoe\tmaybe\tI-PERSON\n", encoding="utf8")
    with pytest.raises(Exception, match=r"bad.iob:3: expected TOKEN"):
        corpus.read_column_docs(path, spacy.blank("en"))


def test_hard_wrap_keeps_offsets():
    text = "Dear Jane Doe, thank you for the call about the contract with Acme Corp yesterday."
    wrapped = corpus.hard_wrap(text, 20)
    assert len(wrapped) == len(text)
    assert all(a == b or (a == " " and b == "\n") for a, b in zip(text, wrapped))
    assert max(len(line) for line in wrapped.split("\n")) <= 21
