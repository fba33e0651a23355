"""``annotate --engine ray``: the same records, entities, confidences and bad
line counts as the local engine, on one local Ray instance shared by the
module."""
import json
import os
import re

import pytest
import torch

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from typer.testing import CliRunner  # noqa: E402

from spacy_ner_plus.annotate import ray_engine  # noqa: E402
from spacy_ner_plus.annotate.local import AnnotateStats, read_records  # noqa: E402
from spacy_ner_plus.cli import app  # noqa: E402

from test_annotate import save_unbuffered, summary, write_input  # noqa: E402

runner = CliRunner()
N_LINES = 120
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_USAGE_STATS_ENABLED")
    else:
        os.environ["RAY_USAGE_STATS_ENABLED"] = saved


@pytest.fixture(scope="module")
def model(trained_nlp, tmp_path_factory):
    # Batches of --batch-size texts in both engines (no 16,384-token sort
    # buffer in the local one): both predict the same batches, so the scores
    # can be compared bit for bit.
    return save_unbuffered(trained_nlp, tmp_path_factory.mktemp("ray") / "model")


@pytest.fixture(scope="module")
def data(model, tmp_path_factory):
    """The input, and the local engine's output and summary on it."""
    tmp = tmp_path_factory.mktemp("ray_data")
    src = tmp / "in.jsonl"
    n_bad = write_input(src, N_LINES, bad_every=37)
    local = tmp / "local.jsonl"
    # One torch thread, as in the actors below (--cpus-per-worker 1): the
    # thread count too changes float32 scores in their last digits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, ["annotate", str(model), str(src), str(local), "--batch-size", "8"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return src, n_bad, local.read_text(encoding="utf8").splitlines(), summary(result.output)


def bad_lines_reported(text):
    return sorted(int(n) for n in re.findall(r"in\.jsonl:(\d+):", text))


def test_ray_engine_preserve_order_writes_the_local_engines_bytes(model, data, tmp_path):
    src, n_bad, local_lines, local_summary = data
    out = tmp_path / "ray.jsonl"
    args = ["annotate", str(model), str(src), str(out), "--engine", "ray", "--workers", "2", "--batch-size", "8", "--preserve-order"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = summary(result.output)
    assert f"Wrote {N_LINES - n_bad} of {N_LINES} lines" in text and f"{n_bad} bad line(s) skipped" in text
    assert bad_lines_reported(text) == bad_lines_reported(local_summary) == [i for i in range(1, N_LINES + 1) if i % 37 == 0]
    assert out.read_text(encoding="utf8").splitlines() == local_lines
    assert not (tmp_path / "ray.jsonl.part").exists()


def test_ray_engine_unordered_gives_the_same_records_by_id(model, data, tmp_path):
    src, n_bad, local_lines, _ = data
    out = tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--engine", "ray", "--workers", "2", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    expected = {r["id"]: r for r in map(json.loads, local_lines)}
    assert len(got) == len(expected) and {r["id"]: r for r in got} == expected
    assert any(r["entities"] for r in got)


def test_ray_engine_parquet_holds_the_records_and_typed_entities(model, data, tmp_path):
    src, n_bad, local_lines, _ = data
    out = tmp_path / "ray.parquet"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--engine", "ray", "--workers", "1", "--batch-size", "8", "--format", "parquet", "--preserve-order"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "entities"]
    fields = [(f.name, str(f.type)) for f in table.schema.field("entities").type.value_type]
    assert fields == [("start", "int64"), ("end", "int64"), ("label", "string"), ("text", "string"), ("confidence", "double")]
    assert table.to_pylist() == [json.loads(line) for line in local_lines]


def test_ray_engine_fail_mode_stops_at_the_first_bad_line(model, data, tmp_path):
    src = data[0]
    out = tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--engine", "ray", "--on-error", "fail"])
    assert result.exit_code == 1
    assert "in.jsonl:37: no string under the key 'text' (nothing written" in summary(result.output)
    assert not out.exists() and not (tmp_path / "ray.jsonl.part").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left either


def test_ray_engine_says_when_the_model_does_not_load_on_a_worker(data, tmp_path):
    out = tmp_path / "ray.jsonl"
    missing = tmp_path / "no_model_here"
    result = runner.invoke(app, ["annotate", str(missing), str(data[0]), str(out), "--engine", "ray", "--workers", "1"])
    assert result.exit_code == 1
    assert f"cannot load pipeline '{missing}' on Ray node" in summary(result.output)
    # a clean exit, not an exception escaping the command (CliRunner keeps
    # Ray's own log lines, which may mention tracebacks of Ray's logging)
    assert isinstance(result.exception, SystemExit) and not out.exists()


def test_ray_engine_says_when_the_address_is_unreachable(model, data, tmp_path):
    out = tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(data[0]), str(out), "--engine", "ray", "--address", "ray://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the Ray cluster at ray://127.0.0.1:9" in summary(result.output)
    assert isinstance(result.exception, SystemExit)


TRICKY = b"".join(
    [
        b"\xef\xbb\xbfJohn lives in New York City .\r\n",  # BOM, CRLF
        b"\n",  # an empty text: annotated, as the local engine does
        b"Mary works for Acme Corp in Paris .\rstill line 3\n",  # a lone CR is no line break
        b"caf\xe9 au lait\n",  # not UTF-8: a bad line
        "Paris\u2028?\n".encode(),  # nor is U+2028 (str.splitlines, read_text's split, breaks there)
        b"the last line, with no newline",
    ]
)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_streamed_lines_are_the_lines_of_a_binary_file(tmp_path, chunk):
    # the read tasks split pyarrow streams with _lines; the local engine
    # iterates open(path, "rb"): same lines, same numbers, same problems
    path = tmp_path / "in.txt"
    path.write_bytes(TRICKY + b"\n\nx")
    with open(path, "rb") as f:
        assert list(ray_engine._lines(f, chunk)) == list(open(path, "rb"))
    with open(path, "rb") as f:
        local, streamed = AnnotateStats(), AnnotateStats()
        a = [(r.line, r.record) for r in read_records(f, "in.txt", "text", "text", "skip", local)]
        f.seek(0)
        b = [(r.line, r.record) for r in read_records(ray_engine._lines(f, chunk), "in.txt", "text", "text", "skip", streamed)]
    assert a == b and local.skipped == streamed.skipped and [p.line for p in local.skipped] == [4]


def test_ray_engine_streams_several_text_files_like_the_local_engine(model, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(TRICKY)
    second.write_bytes(b"Mary works for Acme Corp in Paris .\n\xff\nJohn lives in New York City .\n")
    local, out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = runner.invoke(app, ["annotate", str(model), str(first), str(second), str(local), "--batch-size", "2"])
    finally:
        torch.set_num_threads(threads)
    assert expected.exit_code == 0, expected.output
    result = runner.invoke(app, ["annotate", str(model), str(first), str(second), str(out), "--engine", "ray", "--workers", "2", "--batch-size", "2", "--preserve-order"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == local.read_bytes()
    text = summary(result.output)
    assert "Wrote 7 of 9 lines" in text and "2 bad line(s) skipped" in text
    assert f"{first}:4: bytes are not UTF-8 at byte 3" in text and f"{second}:2: bytes are not UTF-8 at byte 0" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "local.jsonl", "ray.jsonl"]


def test_the_driver_never_reads_or_holds_the_input(model, data, tmp_path, monkeypatch):
    """The input is read in read tasks and the blocks go from the object store
    to the writer actor: the driver neither reads a line nor materializes or
    fetches a block."""
    src, n_bad, local_lines, _ = data

    def refuse(*args, **kwargs):
        raise AssertionError("the driver materialized or read the input")

    monkeypatch.setattr(ray_engine, "read_records", refuse)  # the read tasks' modules are their own
    monkeypatch.setattr(ray_engine, "_lines", refuse)
    for name in ("from_items", "from_arrow", "from_arrow_refs", "from_pandas"):
        monkeypatch.setattr(ray.data, name, refuse)
    for name in ("take_all", "take", "materialize", "iter_batches", "iter_rows", "to_pandas", "to_arrow_refs"):
        monkeypatch.setattr(ray.data.Dataset, name, refuse)
    fetched = []
    real_get = ray.get

    def spy_get(refs, *args, **kwargs):
        values = real_get(refs, *args, **kwargs)
        fetched.extend(values if isinstance(values, list) else [values])
        return values

    monkeypatch.setattr(ray, "get", spy_get)
    out = tmp_path / "ray.jsonl"
    stats = ray_engine.annotate_with_ray(str(model), [src], out, workers=1, batch_size=8, preserve_order=True, progress=False)
    assert (stats.read, stats.written, len(stats.skipped)) == (N_LINES, N_LINES - n_bad, n_bad)
    assert out.read_text(encoding="utf8").splitlines() == local_lines
    import pyarrow as pa

    assert fetched and not any(isinstance(v, (pa.Table, pa.RecordBatch)) for v in fetched)


def test_ray_engine_reads_parquet_inputs_and_keeps_an_old_output_on_failure(model, tmp_path):
    import pyarrow as pa

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["John lives in New York City .", None, "Mary works for Acme Corp in Paris ."]}), src)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["annotate", str(model), str(src), str(out), "--engine", "ray", "--workers", "1", "--batch-size", "2", "--preserve-order"])
    assert result.exit_code == 0, result.output
    text = summary(result.output)
    assert "Wrote 2 of 3 lines" in text and f"{src}:2: no string under the column 'text': skipped" in text
    rows = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    assert [r["id"] for r in rows] == [1, 3] and all(r["entities"] for r in rows)
    # whole or nothing: a failing run leaves the previous output as it was, and no temporary
    before = out.read_bytes()
    with pytest.raises(ray_engine.BadLineError, match=r"in\.parquet:2: no string under the column 'text'"):
        ray_engine.annotate_with_ray(str(model), [src], out, fmt="parquet", on_error="fail", workers=1, batch_size=2, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.jsonl"]


def test_parquet_inputs_need_the_ray_engine(model, tmp_path):
    import pyarrow as pa

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["John lives in New York City ."]}), src)
    result = runner.invoke(app, ["annotate", str(model), str(src), str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert "Parquet inputs need --engine ray" in summary(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
