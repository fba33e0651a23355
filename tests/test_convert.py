"""convert: every malformed fixture is rejected with FILE:LINE errors; repair does what it promises."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_ner_plus.cli import app
from spacy_ner_plus.training.corpus import read_conll, result_to_docs

FIXTURES = Path(__file__).parent / "fixtures"
MALFORMED = FIXTURES / "malformed"
runner = CliRunner()

# file -> (lines with errors in fail mode, lines still errors in repair mode, repair kinds)
SUITE = {
    "iob2_orphan_i.iob": ([4], [], {"scheme": 1}),
    "bioes_unclosed.iob": ([4, 8, 8], [], {"scheme": 2}),
    "unknown_prefix.iob": ([2, 4], [2, 4], {}),
    "column_count.iob": ([3, 5], [5], {"columns": 1}),
    "empty_token.iob": ([2, 4], [4], {"empty-token": 1}),
    "not_utf8.iob": ([1, 3], [], {"utf8": 2}),
    "mixed.iob": ([6, 7], [6, 7], {}),
    "invisible_lines.iob": ([3, 5, 6], [], {"invisible-line": 3}),
    "bad_labels.iob": ([1, 3, 4, 7], [1, 3, 4, 7], {}),
}


def convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_suite_covers_every_fixture():
    assert set(SUITE) == {p.name for p in MALFORMED.glob("*.iob")}


@pytest.mark.parametrize("name", sorted(SUITE))
def test_fail_mode_lists_every_problem_and_writes_nothing(name, tmp_path):
    fail_lines, _, _ = SUITE[name]
    out = tmp_path / "out.spacy"
    result = convert(MALFORMED / name, out)
    assert result.exit_code == 1
    reported = [int(line.split(":")[1]) for line in result.output.splitlines() if line.startswith(str(MALFORMED / name) + ":")]
    assert reported == fail_lines
    assert "Traceback" not in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(SUITE))
def test_repair_mode(name, tmp_path):
    _, still_bad, kinds = SUITE[name]
    result = read_conll(MALFORMED / name, on_error="repair")
    assert [p.line for p in result.errors] == still_bad
    counted = {}
    for r in result.repairs:
        counted[r.kind] = counted.get(r.kind, 0) + 1
    assert counted == kinds
    out = tmp_path / "out.spacy"
    cli = convert(MALFORMED / name, out, "--on-error", "repair")
    assert cli.exit_code == (1 if still_bad else 0)
    assert out.exists() == (not still_bad)
    if kinds:
        assert f"{sum(kinds.values())} repair(s)" in cli.output


def test_repair_keeps_entities(tmp_path):
    out = tmp_path / "o.spacy"
    assert convert(MALFORMED / "bioes_unclosed.iob", out, "--on-error", "repair").exit_code == 0
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [[(e.text, e.label_) for e in d.ents] for d in docs] == [[("John Smith", "PER"), ("Rome", "LOC")], [("Anna", "PER"), ("left", "PER")]]


def test_bom_and_crlf_are_accepted(tmp_path):
    out = tmp_path / "o.spacy"
    result = convert(FIXTURES / "bom_crlf.iob", out)
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [t.text for d in docs for t in d] == ["John", "Smith", "Rome"]
    assert [(e.text, e.label_) for d in docs for e in d.ents] == [("John Smith", "PER"), ("Rome", "LOC")]


def test_invisible_lines_fail_mode_names_the_characters(tmp_path):
    result = convert(MALFORMED / "invisible_lines.iob", tmp_path / "o.spacy")
    assert result.exit_code == 1
    prefix = str(MALFORMED / "invisible_lines.iob") + ":"
    lines = {int(line.split(":")[1]): line for line in result.output.splitlines() if line.startswith(prefix)}
    assert lines[3].endswith(":3: line holds only invisible characters U+FEFF (ZERO WIDTH NO-BREAK SPACE)")
    assert lines[5].endswith(": line holds only invisible characters U+200B (ZERO WIDTH SPACE), U+200C (ZERO WIDTH NON-JOINER)")
    assert lines[6].endswith(": line holds only invisible characters U+200D (ZERO WIDTH JOINER), U+2060 (WORD JOINER)")
    assert "columns" not in result.output


def test_invisible_lines_repair_mode_reads_blank_lines_and_counts_them(tmp_path):
    out = tmp_path / "o.spacy"
    result = convert(MALFORMED / "invisible_lines.iob", out, "--on-error", "repair", "--doc-mode", "sentence")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # wasabi wraps warnings
    assert "3 repair(s): invisible-line 3" in text
    assert f"{MALFORMED / 'invisible_lines.iob'}:3: line holds only invisible characters U+FEFF (ZERO WIDTH NO-BREAK SPACE): read as a blank line" in text
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    # each invisible line ends a sentence, as a blank line would; no token holds an invisible character
    assert [[t.text for t in d] for d in docs] == [["John", "Smith"], ["Rome"], ["Anna"]]
    assert [[(e.text, e.label_) for e in d.ents] for d in docs] == [[("John Smith", "PER")], [("Rome", "LOC")], [("Anna", "PER")]]


@pytest.mark.parametrize("char", ["\ufeff", "\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\u200e"])
def test_every_invisible_format_character_is_a_blank_line(char, tmp_path):
    path = tmp_path / "in.iob"
    # an entity around the invisible line: read as blank, it splits the sentence, and
    # the orphan I-PER after it is repaired into a new entity, counted of its own kind
    path.write_text(f"John B-PER\n{char}\nSmith I-PER\n", encoding="utf8")
    result = read_conll(path, on_error="repair")
    assert result.errors == []
    assert [(r.line, r.kind) for r in result.repairs] == [(2, "invisible-line"), (3, "scheme")]
    assert [s.words for d in result.documents for s in d] == [["John"], ["Smith"]]
    failed = read_conll(path)
    assert [(p.line, p.message.split(" U+")[0]) for p in failed.errors] == [
        (2, "line holds only invisible characters"),
        (3, "'I-PER' does not continue an entity of type PER (IOB2 entities start with B-PER)"),
    ]


def test_hyphenated_labels_convert(tmp_path):
    path = tmp_path / "in.iob"
    path.write_text("Hamlet B-work-of-art\nPrince I-work-of-art\non O\nMonday B-DATE-TIME\n", encoding="utf8")
    out = tmp_path / "o.spacy"
    result = convert(path, out)
    assert result.exit_code == 0, result.output
    doc = next(DocBin().from_disk(out).get_docs(Vocab()))
    assert [(e.text, e.label_) for e in doc.ents] == [("Hamlet Prince", "work-of-art"), ("Monday", "DATE-TIME")]
    # the summary counts them under their whole names
    assert "work-of-art" in result.output and "DATE-TIME" in result.output
    bioes = tmp_path / "bioes.iob"
    bioes.write_text("Hamlet B-work-of-art\nPrince E-work-of-art\nMonday S-DATE-TIME\n", encoding="utf8")
    read = read_conll(bioes)
    assert read.scheme == "BIOES" and read.errors == []
    assert [s.spans for d in read.documents for s in d] == [[(0, 2, "work-of-art"), (2, 3, "DATE-TIME")]]


@pytest.mark.parametrize("on_error", ["fail", "repair"])
def test_labels_the_component_cannot_take_are_file_line_errors(on_error, tmp_path):
    path = MALFORMED / "bad_labels.iob"
    out = tmp_path / "o.spacy"
    result = convert(path, out, "--on-error", on_error)
    assert result.exit_code == 1
    assert not out.exists()
    text = result.output
    assert f"{path}:1: tag 'B-O': label 'O' cannot be used: 'O' cannot be a label" in text
    assert f"{path}:3: tag 'B-CITY NAME': label 'CITY NAME' cannot be used: a label cannot hold whitespace or control characters: U+0020 (SPACE) at position 4" in text
    assert f"{path}:4: tag 'I-CITY NAME'" in text
    assert f"{path}:7: tag 'B-LOC\\x07': label 'LOC\\x07' cannot be used: a label cannot hold whitespace or control characters: U+0007" in text
    assert ":8:" not in text  # work-of-art is fine


def test_doc_modes_and_summary(tmp_path):
    sample = Path(__file__).parents[1] / "assets" / "sample" / "dev.iob"
    by_doc = convert(sample, tmp_path / "d.spacy", "--doc-mode", "document")
    by_sent = convert(sample, tmp_path / "s.spacy", "--doc-mode", "sentence")
    assert by_doc.exit_code == by_sent.exit_code == 0
    docs = list(DocBin().from_disk(tmp_path / "d.spacy").get_docs(Vocab()))
    sents = list(DocBin().from_disk(tmp_path / "s.spacy").get_docs(Vocab()))
    counts = read_conll(sample).counts()
    assert len(docs) == counts["documents"] and len(sents) == counts["sentences"]
    assert sum(len(list(d.sents)) for d in docs) == counts["sentences"]
    assert sum(len(d.ents) for d in docs) == sum(len(d.ents) for d in sents) == counts["entities"]
    assert f"sentences     {counts['sentences']}" in by_doc.output.replace("\x1b", "")


def test_chunk_mode_packs_sentences_of_one_document(tmp_path):
    path = tmp_path / "in.iob"
    sents = [["A", "B", "C"], ["D", "E"], ["F", "G", "H", "I", "J"], ["K"]]
    body = "\n\n".join("\n".join(f"{w} B-PER" if w == "A" else f"{w} O" for w in s) for s in sents)
    path.write_text(f"-DOCSTART- O\n\n{body}\n\n-DOCSTART- O\n\nL O\nM O\n", encoding="utf8")
    result = convert(path, tmp_path / "c.spacy", "--doc-mode", "chunk", "--chunk-tokens", "5")
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(tmp_path / "c.spacy").get_docs(Vocab()))
    # greedy: 3+2 fit in 5; the 5-token sentence alone; K; a chunk never crosses -DOCSTART-
    assert [[t.text for t in d] for d in docs] == [list("ABCDE"), list("FGHIJ"), ["K"], ["L", "M"]]
    assert [[t.is_sent_start for t in d] for d in docs][0] == [True, False, False, True, False]
    assert [(e.text, e.label_) for e in docs[0].ents] == [("A", "PER")]
    # one sentence longer than --chunk-tokens stays whole
    result = convert(path, tmp_path / "c1.spacy", "--doc-mode", "chunk", "--chunk-tokens", "4")
    docs = list(DocBin().from_disk(tmp_path / "c1.spacy").get_docs(Vocab()))
    assert [len(d) for d in docs] == [3, 2, 5, 1, 2]
    assert convert(path, tmp_path / "c0.spacy", "--doc-mode", "chunk", "--chunk-tokens", "0").exit_code == 1
    # mixed: the same chunks, every other one of a document split into its sentences
    result = convert(path, tmp_path / "m.spacy", "--doc-mode", "mixed", "--chunk-tokens", "6")
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(tmp_path / "m.spacy").get_docs(Vocab()))
    # chunks ABC+DE | FGHIJ+K, then LM: the first whole (two sentences), the second split, LM whole
    assert [[t.text for t in d] for d in docs] == [list("ABCDE"), list("FGHIJ"), ["K"], ["L", "M"]]
    assert [len(list(d.sents)) for d in docs] == [2, 1, 1, 1]
    result = convert(path, tmp_path / "m1.spacy", "--doc-mode", "mixed", "--chunk-tokens", "2")
    docs = list(DocBin().from_disk(tmp_path / "m1.spacy").get_docs(Vocab()))
    # chunks ABC | DE | FGHIJ | K, then LM: whole, split, whole, split; whole
    assert [[t.text for t in d] for d in docs] == [list("ABC"), list("DE"), list("FGHIJ"), ["K"], ["L", "M"]]
    assert [len(list(d.sents)) for d in docs] == [1, 1, 1, 1, 1]
    assert sum(len(d) for d in docs) == 13  # every token once, as --doc-mode sentence gives
    # the API rejects it too, with or without -DOCSTART- markers
    plain = tmp_path / "plain.iob"
    plain.write_text("A B-PER\nB O\n", encoding="utf8")
    for source in (path, plain):
        with pytest.raises(ValueError, match="chunk_tokens"):
            result_to_docs(read_conll(source), Vocab(), "chunk", 0)


def test_labels_and_sample_select_a_subset_and_say_what_they_removed(tmp_path):
    path = tmp_path / "in.iob"
    rows = ["-DOCSTART- O", ""]
    for i in range(6):  # six sentences: a PER, a LOC inside an ORG's sentence, a MISC
        rows += [f"Ann{i} B-PER", "of O", f"Acme{i} B-ORG", f"City{i} B-LOC", "Inc I-LOC", f"Euro{i} B-MISC", ""]
    path.write_text("\n".join(rows), encoding="utf8")
    out = tmp_path / "o.spacy"
    result = convert(path, out, "--doc-mode", "sentence", "--labels", "PER,ORG")
    assert result.exit_code == 0, result.output
    assert "dropped LOC: 6" in result.output and "dropped MISC: 6" in result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [(e.text, e.label_) for e in docs[0].ents] == [("Ann0", "PER"), ("Acme0", "ORG")]
    assert [t.text for t in docs[0]] == ["Ann0", "of", "Acme0", "City0", "Inc", "Euro0"]  # tokens stay, now O
    assert [t.ent_iob_ for t in docs[0]][3:] == ["O", "O", "O"]

    result = convert(path, out, "--doc-mode", "sentence", "--labels", "PER", "--sample", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "sentences left out: 3" in result.output
    first = [d[0].text for d in DocBin().from_disk(out).get_docs(Vocab())]
    assert len(first) == 3 and first == sorted(first)  # file order
    assert convert(path, out, "--doc-mode", "sentence", "--sample", "3", "--seed", "1").exit_code == 0
    assert [d[0].text for d in DocBin().from_disk(out).get_docs(Vocab())] == first  # the seed, not the labels, draws
    assert convert(path, out, "--doc-mode", "sentence", "--sample", "3", "--seed", "2").exit_code == 0
    assert [d[0].text for d in DocBin().from_disk(out).get_docs(Vocab())] != first  # another draw (20 draws, 1 alike)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--labels", "PER,PERSON"], "no mention of type PERSON to keep (its types: LOC, PER)"),
        (["--labels", " , "], "no type to keep was named"),
        (["--sample", "3"], "cannot sample 3 of its 2 sentences"),
        (["--sample", "1", "--doc-mode", "document"], "use it with --doc-mode sentence, not document"),
    ],
)
def test_bad_selection_is_a_clear_error_naming_the_file(args, message, tmp_path):
    path = tmp_path / "in.iob"
    path.write_text("Ann B-PER\n\nRome B-LOC\n", encoding="utf8")
    args = args if "--doc-mode" in args else [*args, "--doc-mode", "sentence"]
    result = convert(path, tmp_path / "o.spacy", *args)
    assert result.exit_code == 1 and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "o.spacy").exists()


def test_scheme_override_and_columns(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("PER-x\tJohn\tS-PER\tz\nx\tRome\tS-LOC\tz\n", encoding="utf8")
    result = convert(path, tmp_path / "o.spacy", "--token-column", "1", "--tag-column", "2", "--scheme", "BILOU")
    assert result.exit_code == 0, result.output
    doc = next(DocBin().from_disk(tmp_path / "o.spacy").get_docs(Vocab()))
    assert [(e.text, e.label_) for e in doc.ents] == [("John", "PER"), ("Rome", "LOC")]


def test_missing_input_is_a_clear_error(tmp_path):
    result = convert(tmp_path / "nope.iob", tmp_path / "o.spacy")
    assert result.exit_code == 1 and "no such file" in " ".join(result.output.split())


def test_module_entry_point_runs(tmp_path):
    out = tmp_path / "o.spacy"
    proc = subprocess.run([sys.executable, "-m", "spacy_ner_plus", "convert", str(MALFORMED / "mixed.iob"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "mixed.iob:7: tag 'B-' has an empty label" in proc.stdout
    assert "Traceback" not in proc.stderr


EXPECTED_CONLL = {
    "train": (946, 14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "dev": (216, 3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "test": (231, 3453, 46435, {"LOC": 1646, "MISC": 723, "ORG": 1715, "PER": 1618}),
}


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(EXPECTED_CONLL))
def test_conll2003_counts_reproduced(shared_data, split, tmp_path):
    docs_n, sents_n, tokens_n, per_type = EXPECTED_CONLL[split]
    out = tmp_path / f"{split}.spacy"
    result = convert(shared_data / "conll2003" / f"{split}.iob", out, "--doc-mode", "document")
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert len(docs) == docs_n
    assert sum(len(list(d.sents)) for d in docs) == sents_n
    assert sum(len(d) for d in docs) == tokens_n
    assert Counter(e.label_ for d in docs for e in d.ents) == per_type


EXPECTED_BC5CDR = {
    "train": (4560, 118170, {"Chemical": 5203, "Disease": 4182}),
    "dev": (4581, 117453, {"Chemical": 5347, "Disease": 4246}),
    "test": (4797, 124750, {"Chemical": 5385, "Disease": 4424}),
}


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(EXPECTED_BC5CDR))
def test_bc5cdr_counts_reproduced(shared_data, split, tmp_path):
    sents_n, tokens_n, per_type = EXPECTED_BC5CDR[split]
    out = tmp_path / f"{split}.spacy"
    result = convert(shared_data / "bc5cdr" / f"{split}.iob", out, "--doc-mode", "sentence")
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert len(docs) == sents_n
    assert sum(len(d) for d in docs) == tokens_n
    assert Counter(e.label_ for d in docs for e in d.ents) == per_type
