import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from spacy_ner_plus.cli import app

runner = CliRunner()


def save_unbuffered(nlp, path: Path) -> Path:
    """Save ``nlp`` with ``sort_buffer_tokens = 0`` in its config: ``nlp.pipe``
    then predicts batches of ``--batch-size`` texts instead of 16,384-token
    buffers, so a short input reaches its output file batch by batch (as a
    long one does) and two runs that batch alike give the same bytes."""
    nlp.to_disk(path)
    config = path / "config.cfg"
    text, n = re.subn(r"(?m)^sort_buffer_tokens = \d+$", "sort_buffer_tokens = 0", config.read_text(encoding="utf8"))
    assert n == 1, "no sort_buffer_tokens setting in config.cfg"
    config.write_text(text, encoding="utf8")
    return path


@pytest.fixture(scope="module")
def model(trained_nlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("annotate") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def unbuffered_model(trained_nlp, tmp_path_factory):
    return save_unbuffered(trained_nlp, tmp_path_factory.mktemp("annotate") / "unbuffered")


SENTENCES = [
    "John lives in New York City .",
    "Mary works for Acme Corp in Paris .",
    "John and Mary met in Paris with Acme Corp .",
    "Nothing here .",
]


def write_input(path: Path, n: int, bad_every: int = 97) -> int:
    """A JSONL input of ``n`` lines, every ``bad_every``-th one bad; returns the bad count."""
    bad = 0
    with open(path, "w", encoding="utf8") as f:
        for i in range(1, n + 1):
            if i % bad_every == 0:
                f.write("{broken\n" if bad % 2 else '{"id": %d, "body": "no text"}\n' % i)
                bad += 1
            else:
                f.write(json.dumps({"id": i, "text": f"{SENTENCES[i % 4]} ({i})"}) + "\n")
    return bad


def summary(output: str) -> str:
    return " ".join(output.split())


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
    assert not out.exists() and not (tmp_path / "out.jsonl.part").exists() and not (tmp_path / "out.jsonl.part.progress").exists()


def test_annotate_plain_text_keeps_line_alignment(model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\ufeffJohn lives in New York City .\n\nMary works for Acme Corp in Paris .\n", encoding="utf8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["John lives in New York City .", "", "Mary works for Acme Corp in Paris ."]
    assert records[1]["entities"] == [] and len(records[2]["entities"]) == 3


def test_annotate_resume_after_sigkill_matches_an_uninterrupted_run(unbuffered_model, tmp_path):
    src = tmp_path / "in.jsonl"
    n_bad = write_input(src, 2000)
    reference = tmp_path / "reference.jsonl"
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(src), str(reference), "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    expected = reference.read_text(encoding="utf8").splitlines()
    assert len(expected) == 2000 - n_bad

    out = tmp_path / "out.jsonl"
    part = tmp_path / "out.jsonl.part"
    cmd = [sys.executable, "-m", "spacy_ner_plus", "annotate", str(unbuffered_model), str(src), str(out), "--batch-size", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and part.read_bytes().count(b"\n") >= 100:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    partial = part.read_bytes()
    assert 100 <= partial.count(b"\n") < len(expected) and not out.exists()
    # Whatever the kill hit, also leave the worst it could have hit: a
    # half-written record after the last checkpoint and a half-written
    # checkpoint.
    with open(part, "ab") as f:
        f.write(b'{"id": 123456, "text": "half a rec')
    with open(tmp_path / "out.jsonl.part.progress", "ab") as f:
        f.write(b'{"file": 0, "line": 29')

    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(src), str(out), "--batch-size", "8", "--resume"])
    assert result.exit_code == 0, result.output
    text = summary(result.output)
    assert f"Wrote {len(expected)} of 2000 lines" in text and f"; {n_bad} bad line(s) skipped" in text and "(resumed after " in text
    # Each bad line reported once, whether the killed run or the resumed one read it.
    reported = re.findall(r"in\.jsonl:(\d+):", text)
    assert sorted(map(int, reported)) == [i for i in range(1, 2001) if i % 97 == 0]
    assert out.read_text(encoding="utf8").splitlines() == expected
    assert not part.exists() and not (tmp_path / "out.jsonl.part.progress").exists()


def test_annotate_refuses_to_append_to_a_partial_output_without_resume(unbuffered_model, tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, 40)
    out = tmp_path / "out.jsonl"
    part = tmp_path / "out.jsonl.part"
    part.write_text('{"id": 1}\n', encoding="utf8")
    (tmp_path / "out.jsonl.part.progress").write_text("{}\n", encoding="utf8")
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(src), str(out)])
    assert result.exit_code == 1
    assert "--resume" in summary(result.output) and "--restart" in summary(result.output)
    assert part.read_text(encoding="utf8") == '{"id": 1}\n' and not out.exists()
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(src), str(out), "--restart"])
    assert result.exit_code == 0, result.output
    assert [json.loads(l)["id"] for l in out.read_text(encoding="utf8").splitlines()] == list(range(1, 41))
    assert not part.exists()


def test_annotate_resume_refuses_a_changed_input(unbuffered_model, tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, 20)
    out = tmp_path / "out.jsonl"
    from spacy_ner_plus.annotate.local import _run_header, partial_paths

    # The pair that a run killed before its first checkpoint leaves.
    part, journal = partial_paths(out)
    part.write_bytes(b"")
    journal.write_text(json.dumps(_run_header([src], str(unbuffered_model), "jsonl", "text", "skip")) + "\n", encoding="utf8")
    with open(src, "a", encoding="utf8") as f:
        f.write(json.dumps({"id": 21, "text": "Paris ."}) + "\n")
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(src), str(out), "--resume"])
    assert result.exit_code == 1
    assert "changed since" in summary(result.output) and "--restart" in summary(result.output)


def test_annotate_several_inputs_and_a_glob_in_order(model, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "a1", "text": "John ."}\n{"id": "a2", "text": "Paris ."}\n', encoding="utf8")
    (tmp_path / "b.jsonl").write_text('{"id": "b1", "text": "Mary ."}\nnot json\n', encoding="utf8")
    (tmp_path / "c.jsonl").write_text('{"id": "c1", "text": "Acme Corp ."}\n', encoding="utf8")
    out = tmp_path / "out" / "all.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(tmp_path / "c.jsonl"), str(tmp_path / "[ab].jsonl"), str(out)])
    assert result.exit_code == 0, result.output
    assert "b.jsonl:2: not JSON" in summary(result.output) and "Wrote 4 of 5 lines" in summary(result.output)
    assert [json.loads(l)["id"] for l in out.read_text(encoding="utf8").splitlines()] == ["c1", "a1", "a2", "b1"]
    result = runner.invoke(app, ["annotate", str(model), str(tmp_path / "*.csv"), str(out)])
    assert result.exit_code == 1 and "matches no file" in summary(result.output)


def records_of(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def test_annotate_reads_each_input_in_its_own_format(unbuffered_model, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "a1", "text": "John lives in New York City ."}\n{"id": "a2", "text": "Paris ."}\n', encoding="utf8")
    (tmp_path / "b.txt").write_text("Mary works for Acme Corp in Paris .\n{\"id\": \"not a record\"}\n", encoding="utf8")
    out = tmp_path / "mixed.jsonl"
    # two texts a batch: the mixed run and the runs of each file alone batch alike (same scores to the bit)
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt"), str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "Wrote 4 of 4 lines" in summary(result.output)
    # the same records as annotating each file alone: JSONL records kept, a text line becomes {"text": LINE}
    alone = []
    for name in ("a.jsonl", "b.txt"):
        single = tmp_path / f"{name}.out.jsonl"
        assert runner.invoke(app, ["annotate", str(unbuffered_model), str(tmp_path / name), str(single), "--batch-size", "2"]).exit_code == 0
        alone += records_of(single)
    mixed = records_of(out)
    assert mixed == alone
    assert [r.get("id") for r in mixed] == ["a1", "a2", None, None]
    assert mixed[3]["text"] == '{"id": "not a record"}'  # a line of a .txt file is text, whatever it looks like
    assert [(e["label"], e["text"]) for e in mixed[2]["entities"]] == [("PER", "Mary"), ("ORG", "Acme Corp"), ("LOC", "Paris")]
    # --input-format still reads every input one way
    forced = tmp_path / "forced.jsonl"
    result = runner.invoke(app, ["annotate", str(unbuffered_model), str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt"), str(forced), "--input-format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert "b.txt:1: not JSON" in summary(result.output) and "b.txt:2: no string under the key 'text'" in summary(result.output)


def test_annotate_resumes_a_run_over_mixed_formats(unbuffered_model, tmp_path):
    from spacy_ner_plus.annotate.local import _run_header, partial_paths

    (tmp_path / "a.jsonl").write_text('{"id": 1, "text": "John ."}\n', encoding="utf8")
    (tmp_path / "b.txt").write_text("Paris .\nMary .\n", encoding="utf8")
    inputs = [tmp_path / "a.jsonl", tmp_path / "b.txt"]
    reference = tmp_path / "reference.jsonl"
    assert runner.invoke(app, ["annotate", str(unbuffered_model), *map(str, inputs), str(reference)]).exit_code == 0
    out = tmp_path / "out.jsonl"
    part, journal = partial_paths(out)
    part.write_bytes(b"")  # killed before its first checkpoint
    journal.write_text(json.dumps(_run_header(inputs, str(unbuffered_model), ["jsonl", "text"], "text", "skip")) + "\n", encoding="utf8")
    result = runner.invoke(app, ["annotate", str(unbuffered_model), *map(str, inputs), str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()


def test_annotate_with_ray_explains_that_it_reads_one_format(model, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "John ."}\n', encoding="utf8")
    (tmp_path / "b.txt").write_text("Paris .\n", encoding="utf8")
    result = runner.invoke(app, ["annotate", str(model), str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt"), str(tmp_path / "o.jsonl"), "--engine", "ray"])
    assert result.exit_code == 1
    text = summary(result.output)
    assert "--engine ray reads all inputs in one format" in text and "a.jsonl" in text and "b.txt" in text and "--engine local" in text
    assert not (tmp_path / "o.jsonl").exists()


def test_annotate_resume_with_nothing_to_resume_is_refused_and_keeps_the_output(model, tmp_path, monkeypatch):
    import spacy

    from spacy_ner_plus.annotate.local import AnnotateError, annotate_files

    src = tmp_path / "in.jsonl"
    write_input(src, 10)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out)])
    assert result.exit_code == 0, result.output
    finished, stat = out.read_bytes(), out.stat()
    nlp = spacy.load(model)

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the refusal")

    monkeypatch.setattr(spacy, "load", refuse)
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--resume"])
    assert result.exit_code == 1
    assert f"{out} is already complete: there is no partial output (out.jsonl.part) to resume" in summary(result.output)
    assert out.read_bytes() == finished and out.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    with pytest.raises(AnnotateError, match="already complete"):
        annotate_files(nlp, [src], out, resume=True, progress=False)
    assert out.read_bytes() == finished

    missing = tmp_path / "never.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(missing), "--resume"])
    assert result.exit_code == 1
    assert "there is no partial output" in summary(result.output) and "run without --resume to start" in summary(result.output)
    assert not missing.exists() and not (tmp_path / "never.jsonl.part").exists()
