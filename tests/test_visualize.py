import html
import json
import re
from typing import List, Tuple

from spacy.tokens import Span, SpanGroup
from spacy.training import Example
from typer.testing import CliRunner

from spacy_ner_plus.cli import app
from spacy_ner_plus.evaluation.evaluate import evaluate_examples, predict_examples
from spacy_ner_plus.evaluation.visualize import errors_page, render_entities

# displaCy's entity markup (spacy.displacy.templates.TPL_ENT, newlines included): the
# entity text, then its label
MARK = re.compile(r'\n<mark class="entity"[^>]*>\n    (.*?)\n    <span[^>]*>(.*?)</span>\n</mark>\n', re.S)
BLOCK = re.compile(r'<div class="entities"[^>]*>(.*?)</div>', re.S)


def marked_entities(page: str) -> List[List[Tuple[int, int, str, str]]]:
    """(start_char, end_char, text, label) of each marked entity, one list per rendered text.

    Offsets are recomputed from the unmarked text around the marks, so a mark
    drawn over the wrong characters shows up as wrong offsets."""
    out = []
    for block in BLOCK.findall(page):
        ents, offset, last = [], 0, 0
        for m in MARK.finditer(block):
            offset += len(html.unescape(block[last : m.start()]))
            text = html.unescape(m.group(1))
            ents.append((offset, offset + len(text), text, html.unescape(m.group(2))))
            offset, last = offset + len(text), m.end()
        out.append(ents)
    return out


def scored_doc(nlp, text, ents, scores):
    """A Doc with ``ents`` and a ner_plus span group scoring the first len(scores) of them."""
    doc = nlp.make_doc(text)
    spans = [doc.char_span(s, e, label=label) for s, e, label in ents]
    doc.ents = spans
    group = SpanGroup(doc, name="ner_plus", spans=spans[: len(scores)])
    group.attrs["scores"] = list(scores)
    doc.spans["ner_plus"] = group
    return doc


def test_rendered_labels_carry_two_decimal_confidences_at_the_entity_offsets(trained_nlp):
    text = "Mary met John Smith in Paris and Acme Corp ."
    doc = scored_doc(trained_nlp, text, [(0, 4, "PER"), (9, 19, "PER"), (23, 28, "LOC"), (33, 42, "ORG")], [0.456, 0.9999, 0.07])
    assert [e._.confidence for e in doc.ents] == [0.456, 0.9999, 0.07, None]
    page = render_entities([doc])
    assert page.startswith("<!DOCTYPE html>")
    # the last entity has no score (another component set it): its label stands alone
    assert marked_entities(page) == [
        [(0, 4, "Mary", "PER 0.46"), (9, 19, "John Smith", "PER 1.00"), (23, 28, "Paris", "LOC 0.07"), (33, 42, "Acme Corp", "ORG")]
    ]


def test_rendered_entities_are_the_pipelines(trained_nlp):
    docs = list(trained_nlp.pipe(["John lives in New York City .", "Mary works for Acme Corp in Paris ."]))
    assert all(len(doc.ents) for doc in docs)  # else the comparison below proves nothing
    expected = [[(e.start_char, e.end_char, e.text, f"{e.label_} {e._.confidence:.2f}") for e in doc.ents] for doc in docs]
    assert marked_entities(render_entities(docs)) == expected


def test_render_command(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    texts = ["John lives in New York City .", "Mary works for Acme Corp in Paris ."]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    out = tmp_path / "pages" / "new" / "out.html"  # parent folders are created
    result = CliRunner().invoke(app, ["render", str(tmp_path / "model"), str(tmp_path / "in.txt"), str(out)])
    assert result.exit_code == 0, result.output
    expected = [[(e.start_char, e.end_char, e.text, f"{e.label_} {e._.confidence:.2f}") for e in doc.ents] for doc in trained_nlp.pipe(texts)]
    assert marked_entities(out.read_text(encoding="utf8")) == expected
    assert any(expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.html"]  # no temporary left


def test_error_page_shows_gold_and_scored_predictions(trained_nlp):
    text = "Paris met John in Acme Corp ."
    gold = scored_doc(trained_nlp, text, [(0, 5, "PER"), (10, 14, "PER"), (18, 27, "ORG")], [])
    pred = scored_doc(trained_nlp, text, [(0, 5, "LOC"), (10, 14, "PER")], [0.42, 0.875])
    examples = [Example(pred, gold)]
    samples = [
        {"doc": 0, "kind": "type", "gold": {"start": 0, "end": 1}, "pred": {"start": 0, "end": 1}},
        {"doc": 0, "kind": "missed", "gold": {"start": 4, "end": 6}, "pred": None},
    ]
    page = errors_page(examples, samples, context=8)
    sections = page.split("<h3>")[1:]
    assert [s.split("</h3>")[0] for s in sections] == ["doc 0: type", "doc 0: missed"]
    gold_part, pred_part = sections[0].split("<h4>predicted</h4>")
    assert marked_entities(gold_part) == [[(0, 5, "Paris", "PER"), (10, 14, "John", "PER"), (18, 27, "Acme Corp", "ORG")]]
    assert marked_entities(pred_part) == [[(0, 5, "Paris", "LOC 0.42"), (10, 14, "John", "PER 0.88")]]


def test_evaluate_writes_an_error_page(trained_nlp, tmp_path):
    gold = Example.from_dict(trained_nlp.make_doc("Paris met John in Acme Corp ."), {"entities": [(0, 5, "PER"), (10, 14, "PER"), (18, 27, "ORG")]}).reference
    examples = predict_examples(trained_nlp, [gold])
    metrics = evaluate_examples(examples, "IOB2", tmp_path)
    page = (tmp_path / "errors.html").read_text()
    n_errors = sum(v for k, v in metrics["errors"].items() if k != "correct")
    assert n_errors > 0  # "Paris" as a person is not what the pipeline learned
    assert page.count("<h3>") == min(n_errors, 20)
    # every error shows the gold entities of its context, then the predicted ones
    assert page.count("<h4>gold</h4>") == page.count("<h4>predicted</h4>") == page.count("<h3>")


def test_render_command_renders_the_text_of_jsonl_records(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    texts = ["John lives in New York City .", "Mary works for Acme Corp in Paris ."]
    expected = [[(e.start_char, e.end_char, e.text, f"{e.label_} {e._.confidence:.2f}") for e in doc.ents] for doc in trained_nlp.pipe(texts)]
    assert any(expected)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf8")
    (tmp_path / "body.json").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)), encoding="utf8")
    for name, args in (("in.jsonl", []), ("body.json", ["--text-key", "body"])):
        out = tmp_path / f"{name}.html"
        result = CliRunner().invoke(app, ["render", str(tmp_path / "model"), str(tmp_path / name), str(out), *args])
        assert result.exit_code == 0, result.output
        page = out.read_text(encoding="utf8")
        assert marked_entities(page) == expected  # the texts, not the JSON lines
        assert '"id"' not in html.unescape(page)
    # --input-format text shows a JSONL file as it is
    out = tmp_path / "raw.html"
    result = CliRunner().invoke(app, ["render", str(tmp_path / "model"), str(tmp_path / "in.jsonl"), str(out), "--input-format", "text"])
    assert result.exit_code == 0, result.output
    # the page's text without its labels, tags and whitespace (a mark adds some around an entity)
    shown = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<span[^>]*>.*?</span>", "", out.read_text(encoding="utf8"), flags=re.S)))
    assert '{"id":0,"text":"Johnlives' in "".join(shown.split())


def test_render_command_names_a_bad_jsonl_line(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    (tmp_path / "in.jsonl").write_text('{"text": "John ."}\n{"body": "Paris ."}\n', encoding="utf8")
    out = tmp_path / "out.html"
    result = CliRunner().invoke(app, ["render", str(tmp_path / "model"), str(tmp_path / "in.jsonl"), str(out)])
    assert result.exit_code == 1
    assert "in.jsonl:2: no string under the key 'text': nothing rendered" in " ".join(result.output.split())
    assert not out.exists()
