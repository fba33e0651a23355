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
