from spacy.training import Example
from typer.testing import CliRunner

from spacy_ner_plus.cli import app
from spacy_ner_plus.evaluate import evaluate_examples, predict_examples
from spacy_ner_plus.visualize import render_entities


def test_rendered_entities_carry_their_confidence(trained_nlp):
    doc = trained_nlp("John lives in New York City .")
    html = render_entities([doc])
    for ent in doc.ents:
        assert f"{ent.label_} {ent._.confidence:.2f}" in html
    assert html.startswith("<!DOCTYPE html>")


def test_render_command(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    (tmp_path / "in.txt").write_text("John lives in New York City .\nMary works for Acme Corp in Paris .\n", encoding="utf8")
    result = CliRunner().invoke(app, ["render", str(tmp_path / "model"), str(tmp_path / "in.txt"), str(tmp_path / "out.html")])
    assert result.exit_code == 0, result.output
    assert "Acme Corp" in (tmp_path / "out.html").read_text()


def test_evaluate_writes_an_error_page(trained_nlp, tmp_path):
    gold = Example.from_dict(trained_nlp.make_doc("Paris met John in Acme Corp ."), {"entities": [(0, 5, "PER"), (10, 14, "PER"), (18, 27, "ORG")]}).reference
    examples = predict_examples(trained_nlp, [gold])
    metrics = evaluate_examples(examples, "IOB2", tmp_path)
    page = (tmp_path / "errors.html").read_text()
    n_errors = sum(v for k, v in metrics["errors"].items() if k != "correct")
    assert page.count("<h3>") == min(n_errors, 20)
    assert "gold" in page and "predicted" in page
