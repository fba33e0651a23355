"""runtime = "onnxruntime": the encoder exported by ``export-onnx`` and run by ONNX Runtime
gives the entities and scores of torch fp32, refuses an export of other weights, and works
from threads, forked processes, annotate and a packaged wheel (issue 30, part 1)."""
import copy
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import spacy  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from spacy_ner_plus.cli import app  # noqa: E402
from spacy_ner_plus.ml.onnx_runtime import FILES, META_FILE, OnnxEncoder, StaleExportError, file_sha256  # noqa: E402
from spacy_ner_plus.ml.transformer import inference_modules  # noqa: E402

runner = CliRunner()
TEXTS = [
    "John lives in New York City .",
    "Mary works for Acme Corp in Paris .",
    "Anna met Peter in Berlin .",
    "Nothing here .",
    "Acme Corp hired John in Paris and Mary in New York City .",
]
# about 1,100 tokens: several overlapping windows of 128 tokens, merged
LONG = " ".join(f"John met Mary {i} times in Paris while Acme Corp grew in New York City ." for i in range(70))
TORCH = {"components": {"ner_plus": {"runtime": "torch", "quantize": False}}}
ONNX_FP32 = {"components": {"ner_plus": {"runtime": "onnxruntime", "quantize": False}}}


@pytest.fixture(scope="module")
def exported(trained_nlp, tmp_path_factory) -> Path:
    """The trained pipeline saved and exported with --int8 (fp32 and int8 files)."""
    path = tmp_path_factory.mktemp("onnx") / "pipeline"
    trained_nlp.to_disk(path)
    result = runner.invoke(app, ["export-onnx", str(path), "--int8"])
    assert result.exit_code == 0, result.output
    return path


def annotations(nlp, texts):
    out = []
    for doc in nlp.pipe(texts):
        group = doc.spans[nlp.get_pipe("ner_plus").spans_key]
        out.append(([(e.start, e.end, e.label_) for e in doc.ents], [(s.start, s.end, s.label_) for s in group], list(group.attrs["scores"])))
    return out


def assert_same(expected, found, tolerance=1e-4):
    assert [e[0] for e in found] == [e[0] for e in expected]
    assert [e[1] for e in found] == [e[1] for e in expected]
    for (_, _, want), (_, _, got) in zip(expected, found):
        numpy.testing.assert_allclose(got, want, atol=tolerance, rtol=0)


def test_export_writes_the_files_the_meta_data_and_the_config(exported, trained_nlp):
    folder = exported / "ner_plus"
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["weights_fingerprint"] == trained_nlp.get_pipe("ner_plus").weights_fingerprint()
    assert meta["opset"] >= 17
    assert meta["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    for name in FILES.values():
        assert meta["files"][name]["sha256"] == file_sha256(folder / name)
    nlp = spacy.load(exported)  # the config now says onnxruntime and int8
    pipe = nlp.get_pipe("ner_plus")
    assert pipe.runtime == "onnxruntime" and pipe.quantize is True


def test_onnx_fp32_gives_the_entities_and_scores_of_torch_on_sentences_and_a_long_document(exported):
    torch_nlp = spacy.load(exported, config=TORCH)
    onnx_nlp = spacy.load(exported, config=ONNX_FP32)
    assert len(onnx_nlp.make_doc(LONG)) > 2 * onnx_nlp.get_pipe("ner_plus").window  # windows merged
    expected = annotations(torch_nlp, TEXTS + [LONG])
    assert sum(len(e[0]) for e in expected) > 10
    found = annotations(onnx_nlp, TEXTS + [LONG])
    assert_same(expected, found)
    inference = inference_modules(onnx_nlp.get_pipe("ner_plus").model.get_ref("encoder"))
    assert inference.module is None  # torch never ran the transformer
    assert os.getpid() in inference.onnx._sessions


def test_onnx_int8_predicts_from_its_own_file(exported):
    nlp = spacy.load(exported)
    annotations(nlp, TEXTS)
    sessions = inference_modules(nlp.get_pipe("ner_plus").model.get_ref("encoder")).onnx._sessions[os.getpid()]
    assert set(sessions) == {True}  # the int8 session, not the fp32 one


def test_an_export_of_other_weights_is_refused_at_load_with_both_fingerprints(exported, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(exported, changed)
    nlp = spacy.load(changed, config=TORCH)
    pipe = nlp.get_pipe("ner_plus")
    exported_fingerprint = pipe.weights_fingerprint()
    output = pipe.model.get_ref("output")
    output.set_param("b", output.get_param("b") + 0.01)
    nlp.to_disk(changed)
    now = pipe.weights_fingerprint()
    assert now != exported_fingerprint
    with pytest.raises(StaleExportError) as err:  # (the saved config says torch: it was loaded so)
        spacy.load(changed, config={"components": {"ner_plus": {"runtime": "onnxruntime", "quantize": True}}})
    message = str(err.value)
    assert exported_fingerprint in message and now in message
    assert f"python -m spacy_ner_plus export-onnx {changed} --int8" in message
    spacy.load(changed, config=TORCH)  # torch still loads it
    config = changed / "config.cfg"
    config.write_text(config.read_text().replace('runtime = "torch"', 'runtime = "onnxruntime"'))
    with pytest.raises(StaleExportError):
        spacy.load(changed)
    result = runner.invoke(app, ["export-onnx", str(changed)])  # export-onnx itself loads a stale pipeline
    assert result.exit_code == 0, result.output
    assert not (changed / "ner_plus" / FILES[True]).exists()  # the old int8 file went with its weights
    assert spacy.load(changed).get_pipe("ner_plus").quantize is False


def test_training_after_load_stops_the_export_and_it_is_not_saved(exported, tmp_path):
    from spacy.training import Example
    from thinc.api import Adam

    nlp = spacy.load(exported, config=ONNX_FP32)
    nlp.update([Example.from_dict(nlp.make_doc("John ."), {"entities": [(0, 4, "PER")]})], sgd=Adam(1e-3))
    with pytest.raises(ValueError, match="no longer matches the weights"):
        nlp("John lives in Paris .")
    nlp.to_disk(tmp_path / "trained")
    assert not (tmp_path / "trained" / "ner_plus" / FILES[False]).exists()
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        spacy.load(tmp_path / "trained", config=ONNX_FP32)


def test_onnxruntime_without_an_export_is_an_error_naming_the_command(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        spacy.load(tmp_path / "plain", config=ONNX_FP32)
    with pytest.raises(ValueError, match="runtime must be one of"):
        spacy.blank("en").add_pipe("ner_plus", config={"runtime": "tensorrt"})


def test_saving_elsewhere_and_copying_keep_the_export(exported, tmp_path):
    nlp = spacy.load(exported, config=ONNX_FP32)
    expected = annotations(nlp, TEXTS)
    nlp.to_disk(tmp_path / "saved")
    for name in (*FILES.values(), META_FILE):
        assert (tmp_path / "saved" / "ner_plus" / name).exists()
    assert annotations(spacy.load(tmp_path / "saved", config=ONNX_FP32), TEXTS) == expected
    copied = copy.deepcopy(nlp)
    assert inference_modules(copied.get_pipe("ner_plus").model.get_ref("encoder")).onnx._sessions == {}
    assert annotations(copied, TEXTS) == expected


@pytest.mark.parametrize("config", [ONNX_FP32, None], ids=["fp32", "int8"])
def test_eight_threads_give_what_one_thread_gives(exported, config):
    nlp = spacy.load(exported, config=config or {})
    texts = TEXTS * 8
    sequential = [annotations(nlp, [t]) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda t: annotations(nlp, [t]), texts))
    assert parallel == sequential


def _predict_in_child(args):
    path, texts = args
    nlp = _FORK_STATE["nlp"]
    export = inference_modules(nlp.get_pipe("ner_plus").model.get_ref("encoder")).onnx
    return annotations(nlp, texts), os.getpid() in export._sessions, sorted(export._sessions)


_FORK_STATE = {}


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_workers_make_their_own_session(exported):
    nlp = spacy.load(exported, config=ONNX_FP32)
    expected = annotations(nlp, TEXTS)  # the parent's session exists before the fork
    _FORK_STATE["nlp"] = nlp
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_predict_in_child, [(str(exported), TEXTS)] * 2, chunksize=1)
    finally:
        _FORK_STATE.clear()
    for found, own_session, _ in results:
        assert own_session
        assert_same(expected, found)
    parent_sessions = inference_modules(nlp.get_pipe("ner_plus").model.get_ref("encoder")).onnx._sessions
    assert list(parent_sessions) == [os.getpid()]
    assert annotations(nlp, TEXTS) == expected
    # spaCy's own multiprocessing forks as well
    docs = list(nlp.pipe(TEXTS, n_process=2, batch_size=2))
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in docs] == [e[0] for e in expected]


def test_annotate_runs_the_onnx_export(exported, trained_nlp, tmp_path, monkeypatch):
    calls = []
    run = OnnxEncoder.run

    def counted(self, *args):
        calls.append(args[-1])
        return run(self, *args)

    monkeypatch.setattr(OnnxEncoder, "run", counted)
    onnx_fp32 = tmp_path / "onnx_fp32"
    spacy.load(exported, config=ONNX_FP32).to_disk(onnx_fp32)  # quantize = false in its config
    plain = tmp_path / "plain"
    trained_nlp.to_disk(plain)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf8")
    outputs = {}
    for name, model in (("onnx", onnx_fp32), ("torch", plain)):
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(app, ["annotate", str(model), str(src), str(out)])
        assert result.exit_code == 0, result.output
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert calls and set(calls) == {False}
    for got, want in zip(outputs["onnx"], outputs["torch"]):
        assert [(e["start"], e["end"], e["label"]) for e in got["entities"]] == [(e["start"], e["end"], e["label"]) for e in want["entities"]]
        numpy.testing.assert_allclose([e["confidence"] for e in got["entities"]], [e["confidence"] for e in want["entities"]], atol=1e-4)


@pytest.mark.slow
def test_the_packaged_wheel_holds_the_export(exported, tmp_path):
    source = tmp_path / "pipeline"
    shutil.copytree(exported, source)
    meta = json.loads((source / "meta.json").read_text())
    meta.update({"name": "onnxtest", "version": "0.0.1"})
    (source / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "pkgs").mkdir()
    built = subprocess.run([sys.executable, "-m", "spacy", "package", str(source), str(tmp_path / "pkgs"), "--build", "wheel", "--force"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = list((tmp_path / "pkgs").glob("*/dist/*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        config = zf.read(next(n for n in names if n.endswith("/config.cfg"))).decode()
    for name in (*FILES.values(), META_FILE):
        assert any(n.endswith(f"ner_plus/{name}") for n in names), name
    assert 'runtime = "onnxruntime"' in config


CONLL = """-DOCSTART- -X- -X- O

John NNP B-NP B-PER
lives VBZ B-VP O
in IN B-PP O
Paris NNP B-NP B-LOC
. . O O

Mary NNP B-NP B-PER
works VBZ B-VP O
for IN B-PP O
Acme NNP B-NP B-ORG
Corp NNP I-NP I-ORG
. . O O

-DOCSTART- -X- -X- O

Anna NNP B-NP B-PER
met VBD B-VP O
Peter NNP B-NP B-PER
in IN B-PP O
New NNP B-NP B-LOC
York NNP I-NP I-LOC
City NNP I-NP I-LOC
. . O O
"""


@pytest.mark.slow
def test_the_benchmark_runs_quick_and_reports_every_figure(trained_nlp, tmp_path):
    model = tmp_path / "model"
    trained_nlp.to_disk(model)
    conll = tmp_path / "test.iob"
    conll.write_text(CONLL, encoding="utf8")
    root = Path(__file__).resolve().parents[1]
    ledger = root / "bench" / "results" / "ledger" / "onnx_runtime"
    before = sorted(ledger.glob("*.json"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "bench", "onnx_runtime", "--quick", "--model", str(model), "--test", str(conll), "--gold", str(conll)],
                            capture_output=True, text=True, cwd=root, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quick record (not kept): " in result.stderr
    assert sorted(ledger.glob("*.json")) == before  # a smoke run leaves the project's ledger alone
    systems = json.loads(result.stdout[: result.stdout.index("\n}\n") + 3])
    assert set(systems) == {"torch_fp32", "onnxruntime_fp32", "onnxruntime_int8"}
    fp32 = systems["onnxruntime_fp32"]
    assert all(fp32["equality_vs_torch"][what]["same_entities"] for what in ("sentences", "documents"))
    assert all(fp32["equality_vs_torch"][what]["max_score_difference"] < 1e-4 for what in ("sentences", "documents"))
    for row in systems.values():
        assert row["sentences_words_per_s"] > 0 and row["short_p50_ms"] > 0
    accuracy = json.loads(result.stdout[result.stdout.index("\n}\n") + 3 :])
    assert accuracy["onnxruntime_fp32"]["f1"] == accuracy["torch_fp32"]["f1"]


def test_export_onnx_refuses_what_is_not_a_pipeline_with_ner_plus(tmp_path):
    result = runner.invoke(app, ["export-onnx", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not a pipeline directory (no config.cfg)" in " ".join(result.output.split())
    spacy.blank("en").to_disk(tmp_path / "blank")
    result = runner.invoke(app, ["export-onnx", str(tmp_path / "blank")])
    assert result.exit_code == 1 and "has no ner_plus component" in " ".join(result.output.split())
