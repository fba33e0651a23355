"""Span-annotated exports (spaCy/Prodigy, Doccano, Label Studio) through training/spans.py and `convert`."""
from pathlib import Path

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_ner_plus.cli import app
from spacy_ner_plus.training.corpus import ConllFormatError
from spacy_ner_plus.training.spans import detect_format, read_span_docs, read_spans, split_sentences

SPANS = Path(__file__).parent / "fixtures" / "spans"
runner = CliRunner()

# file -> (format, error lines in fail mode, error lines in repair mode, repair kinds in repair mode)
SUITE = {
    "prodigy.jsonl": ("spacy", [], [], {}),
    "doccano.jsonl": ("doccano", [], [], {}),
    "labelstudio.json": ("labelstudio", [], [], {}),
    "long.jsonl": ("spacy", [], [], {}),
    "misaligned.jsonl": ("spacy", [1, 2, 4, 5], [5], {"expand": 2, "trim": 1}),
    "overlapping.jsonl": ("spacy", [1, 1, 2, 2, 3], [], {"overlap": 5, "duplicate": 1}),
    "empty_spans.jsonl": ("spacy", [1, 1], [], {"empty": 1, "whitespace": 1}),
    "bad_json.jsonl": ("spacy", [2, 3, 4, 5, 6], [2, 3, 4, 5, 6], {}),
    "bad_labels.jsonl": ("spacy", [1, 2, 3, 4], [1, 2, 3, 4], {}),
    "labelstudio_bad.json": ("labelstudio", [2, 60], [2, 60], {}),
    "labelstudio_utf16.json": ("labelstudio", [2, 2, 2, 55], [55], {"utf16": 3}),
}


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_suite_covers_every_fixture():
    assert set(SUITE) == {p.name for p in SPANS.iterdir() if p.is_file()}


@pytest.mark.parametrize("name", sorted(SUITE))
def test_format_is_detected(name):
    assert detect_format(SPANS / name) == SUITE[name][0]


@pytest.mark.parametrize("name", sorted(SUITE))
def test_problems_at_their_lines_in_both_modes(name):
    _, fail_lines, repair_lines, kinds = SUITE[name]
    failed = read_spans(SPANS / name)
    assert [p.line for p in failed.errors] == fail_lines
    assert all(str(p).startswith(f"{SPANS / name}:{p.line}: ") for p in failed.errors)
    repaired = read_spans(SPANS / name, on_error="repair")
    assert [p.line for p in repaired.errors] == repair_lines
    assert repaired.repair_counts() == dict(sorted(kinds.items()))


def test_prodigy_rejected_and_ignored_records_are_skipped_and_counted():
    result = read_spans(SPANS / "prodigy.jsonl")
    assert result.skipped == {"answer ignore": 1, "answer reject": 1}
    assert [ents(d) for d in result.docs] == [
        [("Ada Lovelace", "PER"), ("Charles Babbage", "PER"), ("London", "LOC")],
        [("Alan Turing", "PER"), ("Maida Vale", "LOC"), ("King's College", "ORG")],
        [],
    ]
    assert "Grace Hopper" not in " ".join(d.text for d in result.docs)
    # a whole record is one Doc, its text unchanged, with no sentence boundaries
    assert result.docs[1].text == "Alan Turing was born in Maida Vale. He studied at King's College."
    assert not result.docs[1].has_annotation("SENT_START")
    assert result.counts() == {"documents": 3, "sentences": None, "tokens": 30, "entities": 6, "per_type": {"LOC": 2, "ORG": 1, "PER": 3}}


def test_doccano_label_lists_and_entities_objects():
    docs = read_span_docs(SPANS / "doccano.jsonl")
    assert [ents(d) for d in docs] == [[("Aspirin", "DRUG"), ("nausea", "ADVERSE_EFFECT")], [("Ibuprofen", "DRUG"), ("400 mg", "DOSE")], []]


def test_misaligned_span_is_reported_with_its_context_and_expanded_in_repair():
    failed = read_spans(SPANS / "misaligned.jsonl")
    first = str(failed.errors[0])
    assert first.startswith(f"{SPANS / 'misaligned.jsonl'}:1: record 1: span 1 (5-18 ORG) does not fall on token boundaries")
    assert '"The W[ellcome Trust] funds research."' in first and '["Wellcome", "Trust"]' in first
    assert "has whitespace at its edges" in str(failed.errors[1])
    # the span's own "text" contradicts its offsets: never repaired
    assert "the span's own text \"Olso\"" in str(failed.errors[3])
    repaired = read_spans(SPANS / "misaligned.jsonl", on_error="repair")
    assert [ents(d) for d in repaired.docs] == [[("Wellcome Trust", "ORG")], [("London", "LOC")], [("Oslo", "LOC")], [("Rome", "LOC"), ("Enel", "ORG")]]
    # fail mode keeps only the error-free records (and the command writes none of them)
    assert [ents(d) for d in failed.docs] == [[("Oslo", "LOC")]]


def test_overlaps_resolved_longest_then_earliest_then_first_in_record():
    result = read_spans(SPANS / "overlapping.jsonl", on_error="repair")
    assert [ents(d) for d in result.docs] == [
        [("New York City Ballet", "ORG")],  # the longest of three nested spans
        [("Paris Hilton", "PER"), ("Jordan", "PER"), ("Jordan", "LOC")],  # same tokens, two labels: the first in the record
        [("Alpha Beta", "ORG")],  # equal length: the earliest
    ]
    removed = [str(r) for r in result.repairs if r.kind == "overlap"]
    assert any('span 4 (17-23 LOC "Jordan") overlaps span 3 (17-23 PER "Jordan")' in r for r in removed)
    failed = read_spans(SPANS / "overlapping.jsonl")
    assert failed.docs == [] and "overlaps" in str(failed.errors[0])


def test_empty_and_whitespace_spans():
    failed = read_spans(SPANS / "empty_spans.jsonl")
    assert "is empty at" in str(failed.errors[0]) and "is whitespace only at" in str(failed.errors[1])
    repaired = read_spans(SPANS / "empty_spans.jsonl", on_error="repair")
    assert [ents(d) for d in repaired.docs] == [[("Berlin", "LOC")], [("Madrid", "LOC")]]


def test_bad_json_and_bad_records_name_the_line():
    messages = [str(p) for p in read_spans(SPANS / "bad_json.jsonl").errors]
    path = SPANS / "bad_json.jsonl"
    assert messages[0].startswith(f"{path}:2: record 2: not JSON: ")
    assert messages[1] == f"{path}:3: record 3: no 'text' string"
    assert "must be a JSON object, not a list" in messages[2]
    assert "'start' must be an integer character offset, not \"0\"" in messages[3]
    assert "offsets outside the text (0-6)" in messages[4]


def test_labels_ner_plus_cannot_take_are_errors_in_both_modes():
    for mode in ("fail", "repair"):
        messages = [p.message for p in read_spans(SPANS / "bad_labels.jsonl", on_error=mode).errors]
        assert "label \"O\" cannot be used" in messages[0]
        assert "label \"Soft Skills\" cannot be used: a label cannot hold whitespace" in messages[1]
        assert "label 3 cannot be used: a label must be a string" in messages[2]
        assert "the label is empty" in messages[3]


def test_labelstudio_latest_annotation_by_default():
    result = read_spans(SPANS / "labelstudio.json")
    # task 101: annotator 2 updated last (annotator 3's later annotation was cancelled); task 103 has none
    assert [ents(d) for d in result.docs] == [[("Maria Garcia", "PER"), ("Acme Corp", "ORG"), ("Madrid", "LOC")], [("Tom Baker", "PER"), ("Rome", "LOC")]]
    assert result.skipped == {"cancelled annotations": 1, "tasks without annotation": 1}


@pytest.mark.parametrize("annotator,expected", [
    ("1", [[("Maria Garcia", "PER"), ("Acme Corp", "ORG")], [("Tom Baker", "PER"), ("Rome", "LOC")]]),
    ("2", [[("Maria Garcia", "PER"), ("Acme Corp", "ORG"), ("Madrid", "LOC")]]),
    ("bob@example.org", [[("Maria Garcia", "PER"), ("Acme Corp", "ORG"), ("Madrid", "LOC")]]),
])
def test_labelstudio_annotator_chooses_whose_annotations(annotator, expected):
    result = read_spans(SPANS / "labelstudio.json", annotator=annotator)
    assert result.errors == []
    assert [ents(d) for d in result.docs] == expected


def test_labelstudio_unknown_annotator_is_an_error():
    result = read_spans(SPANS / "labelstudio.json", annotator="9")
    assert [p.message for p in result.errors] == ["no task has an annotation by '9' (compared with completed_by: an id, or a user's id or email)"]


def test_labelstudio_problems_name_the_task_and_the_line_it_starts_on():
    messages = [str(p) for p in read_spans(SPANS / "labelstudio_bad.json").errors]
    assert messages[0] == f"{SPANS / 'labelstudio_bad.json'}:2: task 1 (id 201): result 1 (0-9): a region needs exactly one label, it has [\"PER\", \"ORG\"]"
    assert messages[1].startswith(f"{SPANS / 'labelstudio_bad.json'}:60: task 3: not JSON")


def test_labelstudio_utf16_offsets_are_converted_in_repair_only():
    # an emoji is two UTF-16 code units: Label Studio's offsets after it are one too far per emoji
    failed = read_spans(SPANS / "labelstudio_utf16.json")
    assert "the offsets count UTF-16 code units" in failed.errors[0].message
    assert "the offsets are outside the text (0-53)" in failed.errors[2].message
    # offsets that match neither way stay an error
    assert failed.errors[3].message.endswith("(offsets counted in other units?)")
    repaired = read_spans(SPANS / "labelstudio_utf16.json", on_error="repair")
    assert [ents(d) for d in repaired.docs] == [[("Hilton", "ORG"), ("Lisbon", "LOC"), ("Ana Lima", "PER")]]
    assert "converted to characters 44-52" in repaired.repairs[2].message


def test_sentence_mode_splits_but_never_cuts_an_entity():
    whole = read_spans(SPANS / "long.jsonl")
    assert len(whole.docs) == 1 and len(whole.docs[0].ents) == 5
    result = read_spans(SPANS / "long.jsonl", doc_mode="sentence")
    # the sentencizer ends a sentence at "Yahoo!": inside the ORG entity, so that cut is not made
    assert result.joined == 1
    texts = [d.text for d in result.docs]
    assert texts[0] == "The company Yahoo! Inc. hired Jane Doe in May. "
    assert [ents(d) for d in result.docs] == [
        [("Yahoo! Inc.", "ORG"), ("Jane Doe", "PER")],
        [("Sunnyvale", "LOC")],
        [],
        [("Jane Doe", "PER"), ("Acme", "ORG")],
    ]
    # every piece is one sentence; together they hold every token and entity of the record
    assert all(len(list(d.sents)) == 1 for d in result.docs)
    assert "".join(texts) == whole.docs[0].text
    assert result.counts()["sentences"] == 4 and result.counts()["entities"] == 5


def test_split_sentences_joins_every_sentence_an_entity_runs_through():
    from spacy.tokens import Doc

    words = ["A", ".", "B", ".", "C", ".", "D", "."]
    spaces = [False, True, False, True, False, True, False, False]
    doc = Doc(Vocab(), words=words, spaces=spaces, sent_starts=[i % 2 == 0 for i in range(8)], ents=["B-X", "I-X", "I-X", "I-X", "I-X", "O", "O", "O"])
    pieces, joined = split_sentences(doc)
    assert [p.text for p in pieces] == ["A. B. C. ", "D."] and joined == 2
    assert ents(pieces[0]) == [("A. B. C", "X")]


def test_labels_keeps_the_named_types():
    result = read_spans(SPANS / "prodigy.jsonl", labels=["PER"])
    assert result.counts()["per_type"] == {"PER": 3}
    assert result.dropped == {"dropped LOC": 2, "dropped ORG": 1}
    with pytest.raises(ValueError, match="no mention of type GPE"):
        read_spans(SPANS / "prodigy.jsonl", labels=["GPE"])


def test_read_span_docs_raises_with_every_problem():
    with pytest.raises(ConllFormatError) as info:
        read_span_docs(SPANS / "bad_labels.jsonl")
    assert len(info.value.errors) == 4


def test_detect_format_from_content(tmp_path):
    spacy_file = tmp_path / "a.data"
    spacy_file.write_text('\n{"text": "x", "spans": []}\n')
    assert detect_format(spacy_file) == "spacy"
    doccano = tmp_path / "b.jsonl"
    doccano.write_text('{"text": "x", "entities": []}\n')
    assert detect_format(doccano) == "doccano"
    studio = tmp_path / "c.export"
    studio.write_text('  [{"data": {"text": "x"}}]')
    assert detect_format(studio) == "labelstudio"
    column = tmp_path / "d.data"
    column.write_text("EU\tB-ORG\n")
    assert detect_format(column) == "conll"
    unknown = tmp_path / "e.jsonl"
    unknown.write_text('{"sentence": "x"}\n')
    with pytest.raises(ValueError, match=r"e.jsonl:1: the first record has neither 'spans'.*keys: sentence"):
        detect_format(unknown)


# -- the convert command -------------------------------------------------------


def test_convert_writes_docbin_with_the_summary_table(tmp_path):
    out = tmp_path / "out.spacy"
    result = convert(SPANS / "prodigy.jsonl", out)
    assert result.exit_code == 0, result.output
    assert "skipped: answer reject: 1" in result.output and "skipped: answer ignore: 1" in result.output
    for row in ("docs", "documents", "tokens", "entities", "PER"):
        assert row in result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [ents(d) for d in docs][0] == [("Ada Lovelace", "PER"), ("Charles Babbage", "PER"), ("London", "LOC")]
    assert docs[1].text == "Alan Turing was born in Maida Vale. He studied at King's College."


def test_convert_fail_mode_lists_problems_and_writes_nothing(tmp_path):
    out = tmp_path / "out.spacy"
    result = convert(SPANS / "misaligned.jsonl", out)
    assert result.exit_code == 1
    reported = [int(line.split(":")[1]) for line in result.output.splitlines() if line.startswith(str(SPANS / "misaligned.jsonl") + ":")]
    assert reported == [1, 2, 4, 5]
    assert "--on-error repair fixes what a documented rule can" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_convert_repair_counts_repairs(tmp_path):
    out = tmp_path / "out.spacy"
    result = convert(SPANS / "overlapping.jsonl", out, "--on-error", "repair")
    assert result.exit_code == 0, result.output
    assert "6 repair(s): duplicate 1, overlap 5" in result.output
    assert len(list(DocBin().from_disk(out).get_docs(Vocab()))) == 3


def test_convert_sentence_mode_and_annotator(tmp_path):
    out = tmp_path / "long.spacy"
    result = convert(SPANS / "long.jsonl", out, "--doc-mode", "sentence")
    assert result.exit_code == 0, result.output
    assert "1 sentence boundary inside an entity not cut" in result.output
    assert len(list(DocBin().from_disk(out).get_docs(Vocab()))) == 4
    out = tmp_path / "ls.spacy"
    result = convert(SPANS / "labelstudio.json", out, "--annotator", "1")
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [ents(d) for d in docs][0] == [("Maria Garcia", "PER"), ("Acme Corp", "ORG")]


def test_convert_input_format_overrides_detection(tmp_path):
    renamed = tmp_path / "export.txt"  # .txt would be read as a column file
    renamed.write_text((SPANS / "doccano.jsonl").read_text())
    out = tmp_path / "out.spacy"
    assert convert(renamed, out).exit_code == 1
    result = convert(renamed, out, "--input-format", "doccano")
    assert result.exit_code == 0, result.output
    assert len(list(DocBin().from_disk(out).get_docs(Vocab()))) == 3


@pytest.mark.parametrize("args,message", [
    (["--doc-mode", "chunk"], "--doc-mode document|sentence"),
    (["--sample", "2"], "--sample"),
    (["--annotator", "1"], "--annotator chooses among Label Studio annotations"),
    (["--input-format", "brat"], "--input-format takes conll|spacy|doccano|labelstudio"),
])
def test_convert_refuses_options_that_do_not_apply(tmp_path, args, message):
    result = convert(SPANS / "prodigy.jsonl", tmp_path / "out.spacy", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out.spacy").exists()


def test_convert_still_reads_column_files(tmp_path):
    column = tmp_path / "c.iob"
    column.write_text("EU\tB-ORG\nrejects\tO\n")
    out = tmp_path / "c.spacy"
    result = convert(column, out, "--input-format", "conll")
    assert result.exit_code == 0, result.output
    assert [ents(d) for d in DocBin().from_disk(out).get_docs(Vocab())] == [[("EU", "ORG")]]
