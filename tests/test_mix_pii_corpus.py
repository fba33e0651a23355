"""scripts/mix_pii_corpus.py: CoNLL-2003 sentences mapped to PII types and mixed into the PII corpus,
on tiny CoNLL files written here (the real corpus is never needed)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("mix_pii_corpus", ROOT / "scripts" / "mix_pii_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mix = _load_script()

SENTENCES = [
    [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O"), ("to", "O"), ("boycott", "O"), ("British", "B-MISC"), ("lamb", "O"), (".", "O")],
    [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visited", "O"), ("New", "B-LOC"), ("York", "I-LOC"), (".", "O")],
    [("Reuters", "B-ORG"), ("says", "O"), ("World", "B-MISC"), ("Cup", "I-MISC"), ("tickets", "O"), ("sold", "O"), ("out", "O"), (".", "O")],
    [("Shares", "O"), ("rose", "O"), ("3", "O"), ("percent", "O"), (".", "O")],
]


def write_conll(path: Path, sentences, copies: int = 1) -> Path:
    """CoNLL-2003's layout: -DOCSTART- line, TOKEN POS CHUNK NER, blank line between sentences."""
    body = []
    for i in range(copies):
        for sentence in sentences:
            # a number per copy, so every sentence of the file is distinct
            body.append("\n".join(f"{w} NNP B-NP {t}" for w, t in sentence + [(f"n{i}", "O")]))
    path.write_text("-DOCSTART- -X- -X- O\n\n" + "\n\n".join(body) + "\n", encoding="utf8")
    return path


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def test_mapping_per_org_loc_to_pii_types_and_misc_to_outside(tmp_path):
    nlp = spacy.blank("en")
    docs, report = mix.read_mapped_conll(write_conll(tmp_path / "train.iob", SENTENCES), nlp.vocab)
    assert [ents(d) for d in docs] == [
        [("EU", "ORGANIZATION")],
        [("Peter Blackburn", "PERSON"), ("New York", "LOCATION")],
        [("Reuters", "ORGANIZATION")],
        [],
    ]
    # MISC tokens stay, tagged outside (not missing), and are counted
    first = docs[0]
    assert [t.text for t in first][:3] == ["EU", "rejects", "German"]
    assert first[2].ent_iob_ == "O" and first[6].ent_iob_ == "O"
    assert report == {"dropped MISC": 3}
    # no whitespace in CoNLL: a space after every token
    assert all(t.whitespace_ == " " for d in docs for t in d)


def test_sample_is_deterministic_and_keeps_sentences_without_entities(tmp_path):
    nlp = spacy.blank("en")
    path = write_conll(tmp_path / "train.iob", SENTENCES, copies=10)  # 40 distinct sentences
    texts = lambda docs: [d.text for d in docs]  # noqa: E731
    a, report = mix.read_mapped_conll(path, nlp.vocab, sentences=12, seed=3)
    b, _ = mix.read_mapped_conll(path, nlp.vocab, sentences=12, seed=3)
    c, _ = mix.read_mapped_conll(path, nlp.vocab, sentences=12, seed=4)
    assert texts(a) == texts(b) and texts(a) != texts(c)
    assert len(a) == 12 and len(set(texts(a))) == 12
    assert report["sentences left out"] == 28
    # MISC counted in the sample only: one per "EU ... German ... British" (2) and "World Cup" (1)
    misc = sum(2 if d.text.startswith("EU") else d.text.startswith("Reuters") for d in a)
    assert report.get("dropped MISC", 0) == misc
    everything, _ = mix.read_mapped_conll(path, nlp.vocab)
    assert len(everything) == 40
    # the 40 sentences include 10 without an entity; a draw of all 40 keeps them
    drawn_all, _ = mix.read_mapped_conll(path, nlp.vocab, sentences=40, seed=0)
    assert sum(not d.ents for d in drawn_all) == 10


def test_sample_larger_than_the_file_is_an_error_naming_it(tmp_path):
    path = write_conll(tmp_path / "train.iob", SENTENCES)
    with pytest.raises(mix.MixError, match=r"train\.iob: cannot sample 5 of its 4 sentences"):
        mix.read_mapped_conll(path, spacy.blank("en").vocab, sentences=5)


def test_a_type_that_is_not_conll_2003s_is_an_error(tmp_path):
    path = write_conll(tmp_path / "bio.iob", [[("aspirin", "B-Chemical"), ("helps", "O")]])
    with pytest.raises(mix.MixError, match="Chemical are not CoNLL-2003's"):
        mix.read_mapped_conll(path, spacy.blank("en").vocab)


def test_missing_corpus_error_names_the_project_variable(tmp_path):
    with pytest.raises(mix.MixError, match=r"nowhere/train\.iob: no CoNLL-2003 file there \(missing\); set the project variable pii_conll"):
        mix.read_mapped_conll(tmp_path / "nowhere" / "train.iob", spacy.blank("en").vocab)
    with pytest.raises(mix.MixError, match=r"\(a directory\); set the project variable pii_conll"):
        mix.read_mapped_conll(tmp_path, spacy.blank("en").vocab)


def _pii_docbin(path: Path, nlp) -> Path:
    docs = [
        Doc(nlp.vocab, words=["Call", "Anna", "Keller", "at", "555-0100"], ents=["O", "B-PERSON", "I-PERSON", "O", "B-PHONE_NUMBER"]),
        Doc(nlp.vocab, words=["Order", "4411", "shipped"], ents=["O", "O", "O"]),
    ]
    DocBin(docs=docs).to_disk(path)
    return path


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "mix_pii_corpus.py"), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_mix_cli_writes_every_pii_text_and_the_sample_shuffled_with_the_seed(tmp_path):
    nlp = spacy.blank("en")
    pii = _pii_docbin(tmp_path / "pii.spacy", nlp)
    conll = write_conll(tmp_path / "train.iob", SENTENCES, copies=5)
    outputs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        proc = _run("mix", pii, conll, tmp_path / f"{name}.spacy", "--sentences", 6, "--seed", seed)
        assert proc.returncode == 0, proc.stderr
        outputs.append([d.text for d in DocBin().from_disk(tmp_path / f"{name}.spacy").get_docs(nlp.vocab)])
    a, b, c = outputs
    assert a == b and a != c
    assert len(a) == 8 and {"Call Anna Keller at 555-0100 ", "Order 4411 shipped "} <= set(a)
    mixed = list(DocBin().from_disk(tmp_path / "a.spacy").get_docs(nlp.vocab))
    labels = {e.label_ for d in mixed for e in d.ents}
    assert labels <= {"PERSON", "ORGANIZATION", "LOCATION", "PHONE_NUMBER"} and "MISC" not in labels


def test_mix_cli_missing_corpus_fails_naming_the_variable_and_zero_sentences_needs_none(tmp_path):
    nlp = spacy.blank("en")
    pii = _pii_docbin(tmp_path / "pii.spacy", nlp)
    proc = _run("mix", pii, tmp_path / "conll2003" / "train.iob", tmp_path / "out.spacy", "--sentences", 3)
    assert proc.returncode == 1
    assert "no CoNLL-2003 file there" in proc.stderr and "pii_conll" in proc.stderr
    assert not (tmp_path / "out.spacy").exists()
    proc = _run("mix", pii, tmp_path / "conll2003" / "train.iob", tmp_path / "out.spacy", "--sentences", 0)
    assert proc.returncode == 0, proc.stderr
    assert len(list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(nlp.vocab))) == 2


def test_project_step_reads_the_conll_path_from_its_variable():
    """project.yml's pii-mix-corpus takes the CoNLL files from ${vars.pii_conll}, default ../shared/data."""
    import srsly

    project = srsly.read_yaml(ROOT / "project.yml")
    assert project["vars"]["pii_conll"] == "../shared/data/conll2003"
    step = next(c for c in project["commands"] if c["name"] == "pii-mix-corpus")
    assert any("${vars.pii_conll}/train.iob" in line and "--sentences ${vars.pii_conll_sentences}" in line and "--seed ${vars.pii_mix_seed}" in line for line in step["script"])
    # not a dep: spaCy's own "missing dependency" would not name the variable
    assert not any("pii_conll" in dep for dep in step["deps"])
