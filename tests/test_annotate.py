import json

import pytest

from typer.testing import CliRunner

from spacy_ner_plus.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model(trained_nlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("annotate") / "model"
    trained_nlp.to_disk(path)
    return path


def test_annotate_jsonl_reports_bad_lines_and_keeps_the_rest(model, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"id": 1, "text": "John lives in New York City ."}\n'
        b"not json\n"
        b'{"id": 3, "body": "no text key"}\n'
        b'[1, 2]\n'
        b'{"id": 5, "text": "Mary works for Acme Corp in Paris ."}\n'
        b'{"id": 6, "text": "caf\xe9"}\n'
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for line in (2, 3, 4, 6):
        assert f"in.jsonl:{line}:" in text
    assert "Wrote 2 of 6 lines" in text and "4 bad line(s) skipped" in text
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [1, 5]
    first = records[0]
    assert [(e["label"], first["text"][e["start"]:e["end"]]) for e in first["entities"]] == [("PER", "John"), ("LOC", "New York City")]
    assert all(0.0 <= e["confidence"] <= 1.0 for e in first["entities"])


def test_annotate_fail_mode_writes_nothing(model, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "John ."}\n{"text": 5}\n', encoding="utf8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--on-error", "fail"])
    assert result.exit_code == 1
    assert "in.jsonl:2: no string under the key 'text'" in " ".join(result.output.split())
    assert not out.exists() and not (tmp_path / "out.jsonl.part").exists()


def test_annotate_plain_text_keeps_line_alignment(model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\ufeffJohn lives in New York City .\n\nMary works for Acme Corp in Paris .\n", encoding="utf8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["John lives in New York City .", "", "Mary works for Acme Corp in Paris ."]
    assert records[1]["entities"] == [] and len(records[2]["entities"]) == 3
