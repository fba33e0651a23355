"""The commands as a user runs them (typer's CliRunner, or ``python -m spacy_ner_plus`` in a
subprocess where the process matters: imports, terminals), on the trained fixture saved to disk."""
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import DocBin
from spacy.training import Example
from typer.testing import CliRunner

from spacy_ner_plus.cli import app, use_color
from spacy_ner_plus.evaluation.evaluate import entity_labels, evaluate_examples, predict_examples

from conftest import TRAIN

ROOT = Path(__file__).resolve().parents[1]
MIXED_IOB = ROOT / "tests" / "fixtures" / "malformed" / "mixed.iob"

DEV = TRAIN + [("Paris met John in Acme Corp .", [(0, 5, "PER"), (10, 14, "PER"), (18, 27, "ORG")])]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def plain(text: str) -> str:
    """Console text without colours and without wasabi's line wrapping."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def failed_cleanly(result, *phrases):
    """Exit 1 through typer.Exit with a message: no traceback, no uncaught exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    for phrase in phrases:
        assert plain(phrase) in plain(result.output), result.output
    return True


def tree(path: Path):
    """Every file under ``path`` with its bytes: equal trees have equal contents."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def gold_docs(nlp, data):
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}).reference for text, ents in data]


@pytest.fixture(scope="module")
def model_dir(trained_nlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def dev_path(trained_nlp, model_dir):
    path = model_dir.parent / "dev.spacy"
    DocBin(docs=gold_docs(trained_nlp, DEV)).to_disk(path)
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Make loading a pipeline an error: a refusal must come before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the output was checked")

    monkeypatch.setattr(spacy, "load", refuse)


@pytest.fixture
def disk_full_after_writing(monkeypatch):
    """nlp.to_disk writes everything, then fails (as a full disk does at its last file)."""
    real = Language.to_disk

    def to_disk(self, path, **kwargs):
        real(self, path, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Language, "to_disk", to_disk)


def previous_pipeline(model_dir, path):
    """An existing output: a copy of the model with a marker file only that copy has."""
    shutil.copytree(model_dir, path)
    (path / "previous.txt").write_text("the previous pipeline")
    return tree(path)


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_writes_the_metrics_of_the_library(trained_nlp, model_dir, dev_path, tmp_path):
    out = tmp_path / "eval"
    result = invoke("evaluate", model_dir, dev_path, "--output", out)
    assert result.exit_code == 0, result.output
    expected = evaluate_examples(
        predict_examples(trained_nlp, gold_docs(trained_nlp, DEV)), "IOB2", spans_key="ner_plus", model_labels=entity_labels(trained_nlp)
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(expected))
    assert metrics["unknown_gold_types"] == {} and metrics["warnings"] == []  # the model knows every gold type
    assert {label: d["support"] for label, d in metrics["per_type"].items()} == {"LOC": 2, "ORG": 2, "PER": 4}
    assert metrics["support"] == 8 and metrics["scheme"] == "IOB2"
    assert sum(n for kind, n in metrics["errors"].items() if kind != "spurious") == 8  # each gold entity once
    report = (out / "report.md").read_text()
    assert f"| **micro** | **{metrics['precision']:.4f}** | **{metrics['recall']:.4f}** | **{metrics['f1']:.4f}** | 8 |" in report
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "errors.html").is_file()
    assert f"{metrics['f1']:.4f}" in result.output  # the table on the console


def test_evaluate_reports_the_calibration_of_the_served_confidences_on_its_data(trained_nlp, dev_path, tmp_path):
    from spacy_ner_plus.calibration import Calibrator
    from spacy_ner_plus.metrics import ece

    ner = trained_nlp.get_pipe("ner_plus")
    saved = {k: ner.cfg[k] for k in ("calibration", "thresholds", "calibration_weights")}
    try:
        ner.set_calibration({label: Calibrator("temperature", 3.0) for label in ner.labels}, {})
        trained_nlp.to_disk(tmp_path / "calibrated")
        examples = predict_examples(trained_nlp, gold_docs(trained_nlp, DEV))
    finally:
        ner.cfg.update(saved)
    result = invoke("evaluate", tmp_path / "calibrated", dev_path, "--output", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    confidence = json.loads((tmp_path / "eval" / "metrics.json").read_text())["confidence"]
    served, raw, right = [], [], []
    for eg in examples:
        gold = {(e.start, e.end, e.label_) for e in eg.reference.ents}
        group = eg.predicted.spans["ner_plus"]
        served += list(group.attrs["scores"])
        raw += list(group.attrs["raw_scores"])
        right += [(s.start, s.end, s.label_) in gold for s in group]
    assert confidence["overall"]["ece"] == pytest.approx(ece(served, right))
    assert confidence["overall"]["ece_raw"] == pytest.approx(ece(raw, right))
    assert confidence["overall"]["ece"] != pytest.approx(confidence["overall"]["ece_raw"])  # T = 3 moved the scores
    assert "## Confidence calibration on this data" in (tmp_path / "eval" / "report.md").read_text()
    assert (tmp_path / "eval" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "confidence ECE" in result.output


def test_evaluate_fails_clearly_on_missing_inputs(model_dir, dev_path, tmp_path):
    assert failed_cleanly(invoke("evaluate", model_dir, tmp_path / "nope.spacy"), "nope.spacy: no such file")
    assert failed_cleanly(invoke("evaluate", tmp_path / "no_model", dev_path), "cannot load pipeline")
    assert failed_cleanly(invoke("evaluate", model_dir, dev_path, "--scheme", "IOB1"), "--scheme takes IOB2 or BIOES")
    bad = tmp_path / "bad.iob"
    bad.write_text("John B-PER\nlives O\nin O\nParis X-LOC\n", encoding="utf8")
    assert failed_cleanly(invoke("evaluate", model_dir, bad), "bad.iob:4")


def test_evaluate_warns_of_a_calibration_fitted_to_other_weights(model_dir, dev_path, tmp_path):
    from spacy_ner_plus.calibration import Calibrator

    # a calibrated pipeline, then its weights changed behind the calibration's back
    # (another checkpoint's weights copied in): the real stale_calibrations must see it
    nlp = spacy.load(model_dir)
    ner = nlp.get_pipe("ner_plus")
    ner.set_calibration({label: Calibrator("temperature", 2.0) for label in ner.labels}, {"PER": 0.3})
    nlp.to_disk(tmp_path / "calibrated")
    output = ner.model.get_ref("output")
    output.set_param("b", output.get_param("b") + 0.1)
    nlp.to_disk(tmp_path / "stale")

    fresh = invoke("evaluate", tmp_path / "calibrated", dev_path)
    assert fresh.exit_code == 0, fresh.output
    assert "⚠" not in fresh.output
    result = invoke("evaluate", tmp_path / "stale", dev_path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in plain(result.output).split("⚠ ")[1:]]
    assert len(warnings) == 1, result.output
    assert warnings[0].startswith("ner_plus: its calibration and thresholds were fitted to other weights")
    assert "run `python -m spacy_ner_plus calibrate` again" in warnings[0]


def test_evaluate_warns_of_gold_types_the_model_does_not_know(trained_nlp, model_dir, tmp_path):
    data = DEV + [("Ann saw the Eiffel Tower and the Louvre .", [(0, 3, "PER"), (12, 24, "LANDMARK"), (33, 39, "LANDMARK")]),
                  ("He speaks Dutch .", [(10, 15, "LANGUAGE")])]
    gold = tmp_path / "gold.spacy"
    DocBin(docs=gold_docs(trained_nlp, data)).to_disk(gold)
    out = tmp_path / "eval"
    result = invoke("evaluate", model_dir, gold, "--output", out)
    assert result.exit_code == 0, result.output
    # on stderr: seen when stdout goes to a file
    warning = plain(result.stderr)
    assert "⚠" in warning and "LANDMARK 2, LANGUAGE 1" in warning and "only count as misses" in warning
    assert "LANDMARK" not in result.stdout.split("type")[0]  # not mixed into the table output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unknown_gold_types"] == {"LANDMARK": 2, "LANGUAGE": 1}
    assert len(metrics["warnings"]) == 1 and "LANDMARK 2, LANGUAGE 1" in metrics["warnings"][0]
    assert metrics["per_type"]["LANDMARK"]["recall"] == 0.0 and metrics["per_type"]["LANGUAGE"]["support"] == 1
    assert "**Warning**: " + metrics["warnings"][0] in (out / "report.md").read_text()


def test_evaluate_lists_each_read_error_on_its_own_line(model_dir, tmp_path):
    bad = tmp_path / "bad.iob"
    bad.write_text("John B-PER\nlives O\nin O\nParis X-LOC\nand\nBerlin B-LOC\n", encoding="utf8")
    result = invoke("evaluate", model_dir, bad)
    assert failed_cleanly(result, "2 problem(s) in", "bad.iob")
    lines = result.output.splitlines()
    # each FILE:LINE: message whole on a line of its own, as grep and editors read them
    assert f"{bad}:4: tag 'X-LOC' has unknown prefix 'X' (expected B, I, E, S, L, U)" in lines
    assert f"{bad}:5: expected 2 columns (as on the first token line), found 1" in lines


# --- calibrate ---------------------------------------------------------------------------------


def test_calibrate_writes_a_calibrated_pipeline_and_its_report(model_dir, dev_path, tmp_path):
    before = tree(model_dir)
    out, report = tmp_path / "calibrated", tmp_path / "reports" / "calibration"
    result = invoke("calibrate", model_dir, dev_path, out, "--report", report, "--method", "temperature", "--min-spans", "2")
    assert result.exit_code == 0, result.output
    ner = spacy.load(out).get_pipe("ner_plus")
    assert set(ner.cfg["calibration"]) == set(ner.cfg["thresholds"]) == {"LOC", "ORG", "PER"}
    assert all(0.0 <= t <= 1.0 for t in ner.cfg["thresholds"].values())
    assert {c["method"] for c in ner.cfg["calibration"].values()} <= {"temperature", "identity"}
    assert sorted(p.name for p in report.iterdir()) == ["calibration.json", "calibration.md", "reliability.png", "thresholds.png"]
    data = json.loads((report / "calibration.json").read_text())
    assert set(data["per_type"]) == {"LOC", "ORG", "PER"}
    assert {label: d["threshold"] for label, d in data["per_type"].items()} == ner.cfg["thresholds"]
    assert tree(model_dir) == before  # the input is never written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated", "reports"]  # no temporaries left
    # fitted to the weights it is saved with: evaluate has nothing to warn about
    evaluated = invoke("evaluate", out, dev_path)
    assert evaluated.exit_code == 0, evaluated.output
    assert "⚠" not in evaluated.output


def test_calibrate_with_the_logistic_method_and_bootstrap_thresholds(model_dir, dev_path, tmp_path):
    from spacy_ner_plus.evaluation.calibrate import calibrate_pipeline

    out = tmp_path / "calibrated"
    args = ("--method", "logistic", "--min-spans", "2", "--bootstrap", "200", "--confidence", "0.9", "--seed", "3")
    result = invoke("calibrate", model_dir, dev_path, out, *args)
    assert result.exit_code == 0, result.output
    # the CLI stores exactly what the library computes with the same options
    nlp = spacy.load(model_dir)
    expected = calibrate_pipeline(nlp, list(DocBin().from_disk(dev_path).get_docs(nlp.vocab)), method="logistic",
                                  min_spans=2, bootstrap=200, confidence=0.9, seed=3)
    ner = spacy.load(out).get_pipe("ner_plus")
    assert ner.cfg["thresholds"] == {label: r.threshold for label, r in expected.items()}
    assert ner.cfg["calibration"] == {label: r.calibrator.to_dict() for label, r in expected.items()}
    assert {c["method"] for c in ner.cfg["calibration"].values()} <= {"logistic", "identity"}
    assert failed_cleanly(invoke("calibrate", model_dir, dev_path, tmp_path / "x", "--bootstrap", "10", "--confidence", "1.5"), "confidence")


def test_calibrate_fails_clearly_on_bad_dev(trained_nlp, model_dir, dev_path, tmp_path):
    out = tmp_path / "out"
    assert failed_cleanly(invoke("calibrate", model_dir, tmp_path / "nope.spacy", out), "nope.spacy: no such file")
    misc = tmp_path / "misc.spacy"
    DocBin(docs=gold_docs(trained_nlp, [("John met Mary in Berlin .", [(0, 4, "PER"), (17, 23, "MISC")])])).to_disk(misc)
    assert failed_cleanly(invoke("calibrate", model_dir, misc, out), "['MISC']", "LOC", "ORG", "PER")
    assert failed_cleanly(invoke("calibrate", model_dir, dev_path, out, "--policy", "precision:2"), "precision must be in (0, 1]")
    assert not out.exists()


@pytest.mark.parametrize("command", ["calibrate", "quantize"])
def test_output_equal_to_or_holding_the_input_is_refused(command, model_dir, dev_path, tmp_path, no_loading):
    inputs = [dev_path] if command == "calibrate" else []
    before = tree(model_dir)
    link = tmp_path / "link"
    link.symlink_to(model_dir, target_is_directory=True)
    for output, phrase in [
        (model_dir, "is the input pipeline"),
        (f"{model_dir}/.", "is the input pipeline"),
        (link, "is the input pipeline"),
        (model_dir.parent, "contains the input pipeline"),
        (model_dir / "ner_plus", "lies inside the input pipeline"),
    ]:
        assert failed_cleanly(invoke(command, model_dir, *inputs, output), phrase)
    assert tree(model_dir) == before


def test_an_installed_package_is_its_package_folder(model_dir, tmp_path, monkeypatch, no_loading):
    package_dir = tmp_path / "site-packages" / "en_fake"
    shutil.copytree(model_dir, package_dir / "en_fake-0.0.0")
    monkeypatch.setattr(spacy.util, "is_package", lambda name: name == "en_fake")
    monkeypatch.setattr(spacy.util, "get_package_path", lambda name: package_dir)
    assert failed_cleanly(invoke("quantize", "en_fake", package_dir), "is the input pipeline 'en_fake'")
    assert failed_cleanly(invoke("quantize", "en_fake", package_dir / "en_fake-0.0.0"), "lies inside the input pipeline")


def test_an_output_folder_that_is_not_a_pipeline_is_not_replaced(model_dir, dev_path, tmp_path, no_loading):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me")
    assert failed_cleanly(invoke("calibrate", model_dir, dev_path, folder), "no config.cfg")
    assert failed_cleanly(invoke("quantize", model_dir, folder / "todo.txt"), "is not a directory")
    assert (folder / "todo.txt").read_text() == "keep me"


def test_calibrate_replaces_a_previous_output_whole(model_dir, dev_path, tmp_path):
    out = tmp_path / "calibrated"
    previous_pipeline(model_dir, out)
    result = invoke("calibrate", model_dir, dev_path, out, "--min-spans", "2")
    assert result.exit_code == 0, result.output
    assert not (out / "previous.txt").exists()
    assert spacy.load(out).get_pipe("ner_plus").cfg["thresholds"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated"]


def test_calibrate_failing_midway_leaves_the_previous_output(model_dir, dev_path, tmp_path, disk_full_after_writing):
    out, report = tmp_path / "calibrated", tmp_path / "report"
    before = previous_pipeline(model_dir, out)
    result = invoke("calibrate", model_dir, dev_path, out, "--report", report)
    assert failed_cleanly(result, f"cannot write {out}", "No space left on device")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated"]  # no temporary, no report


# --- quantize ----------------------------------------------------------------------------------


def test_quantize_writes_quantize_true_and_the_loaded_pipe_predicts_in_int8(model_dir, tmp_path):
    out = tmp_path / "int8"
    result = invoke("quantize", model_dir, out)
    assert result.exit_code == 0, result.output
    assert spacy.util.load_config(out / "config.cfg")["components"]["ner_plus"]["quantize"] is True
    assert spacy.util.load_config(model_dir / "config.cfg")["components"]["ner_plus"]["quantize"] is False
    int8, fp32 = spacy.load(out), spacy.load(model_dir)
    assert int8.config["components"]["ner_plus"]["quantize"] is True
    # the setting is in effect: int8 products change the scores (the fp32 weights are the same)
    text = "Mary works for Acme Corp in Paris ."
    key = "ner_plus"
    raw_int8 = list(int8(text).spans[key].attrs["raw_scores"])
    raw_fp32 = list(fp32(text).spans[key].attrs["raw_scores"])
    assert raw_int8 and raw_fp32
    assert raw_int8 != raw_fp32


def test_quantize_needs_a_ner_plus_pipe(tmp_path):
    spacy.blank("en").to_disk(tmp_path / "blank")
    assert failed_cleanly(invoke("quantize", tmp_path / "blank", tmp_path / "out"), "has no ner_plus component")
    assert not (tmp_path / "out").exists()


def test_quantize_failing_midway_leaves_the_previous_output(model_dir, tmp_path, disk_full_after_writing):
    out = tmp_path / "int8"
    before = previous_pipeline(model_dir, out)
    assert failed_cleanly(invoke("quantize", model_dir, out), f"cannot write {out}", "No space left on device")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


# --- render ------------------------------------------------------------------------------------


def test_render_refuses_the_model_or_a_folder_as_its_page(model_dir, tmp_path, no_loading):
    texts = tmp_path / "in.txt"
    texts.write_text("John lives in Paris .\n", encoding="utf8")
    before = tree(model_dir)
    assert failed_cleanly(invoke("render", model_dir, texts, model_dir), "is the input pipeline")
    assert failed_cleanly(invoke("render", model_dir, texts, model_dir / "page.html"), "lies inside the input pipeline")
    assert failed_cleanly(invoke("render", model_dir, texts, tmp_path), "is a directory")
    assert tree(model_dir) == before


def test_render_failing_midway_leaves_the_previous_page(model_dir, tmp_path, monkeypatch):
    texts, page = tmp_path / "in.txt", tmp_path / "page.html"
    texts.write_text("John lives in Paris .\n", encoding="utf8")
    page.write_text("the previous page", encoding="utf8")
    real = Path.write_text

    def half_then_disk_full(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    assert failed_cleanly(invoke("render", model_dir, texts, page), f"cannot write {page}", "No space left on device")
    monkeypatch.undo()
    assert page.read_text(encoding="utf8") == "the previous page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "page.html"]


# --- the CLI as a process: imports, help, colours --------------------------------------------

HEAVY = ("spacy", "thinc", "torch", "transformers", "spacy_transformers", "fastapi", "uvicorn", "matplotlib", "ray", "numpy")


def imported_packages(*args, env=None):
    """Run ``python -X importtime -m spacy_ner_plus ARGS``: (the process, the top-level packages it imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "spacy_ner_plus", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", proc.stderr, re.M)
    assert names, proc.stderr  # else the check below proves nothing
    return proc, {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "args,exit_code,phrase",
    [
        (["--help"], 0, "convert"),
        (["convert", "--help"], 0, "--doc-mode"),
        (["annotate", "--help"], 0, "--engine"),
        (["convert"], 2, "Missing argument"),
        (["convert", "nope.iob", "out.spacy", "--chunk-tokens", "many"], 2, "Invalid value for '--chunk-tokens'"),
        (["convert", "nope.iob", "out.spacy"], 1, "nope.iob: no such file"),
        (["annotate", "model", "tests/conftest.py", "out.jsonl", "--on-error", "ignore"], 1, "--on-error takes skip|fail"),
        (["annotate", "model", "nope.jsonl", "out.jsonl"], 1, "nope.jsonl: no such file"),
        (["render", "model", "nope.txt", "out.html"], 1, "nope.txt: no such file"),
        (["evaluate", "model", "nope.spacy"], 1, "nope.spacy: no such file"),
    ],
)
def test_help_and_argument_errors_import_no_heavy_module(args, exit_code, phrase):
    proc, packages = imported_packages(*args)
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert phrase in plain((proc.stdout + proc.stderr).replace("│", " "))
    assert "spacy_ner_plus" in packages
    # spaCy and torch alone take seconds to import: none of them before a command has work to do
    assert not packages & set(HEAVY), sorted(packages & set(HEAVY))


def test_the_package_imports_nothing_heavy_and_still_loads_saved_pipelines():
    script = (
        "import sys, spacy_ner_plus\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "import spacy\n"
        # nothing of the package imported by hand: the entry points register the factories
        "nlp = spacy.load('tests/fixtures/saved_pipeline_0_2_0')\n"
        "assert nlp.get_pipe('ner_plus').__class__ is spacy_ner_plus.NerPlus\n"
        "assert spacy_ner_plus.register_scored_spans_key and spacy_ner_plus.stale_calibrations(nlp) == []\n"
        "print(nlp.pipe_names)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['ner_plus']"


def test_every_bracket_of_a_help_text_shows_in_the_help():
    import typer.main

    command = typer.main.get_command(app)
    checked = 0
    for name, sub in command.commands.items():
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.replace("│", " ").split())
        for param in sub.params:
            for bracket in re.findall(r"\\?\[[^\]]*\]", getattr(param, "help", None) or ""):
                checked += 1
                # written escaped (\\[ray]) so that Rich prints it instead of reading it as markup
                assert bracket.lstrip("\\") in shown, (name, param.name, bracket)
    assert checked
    annotate = " ".join(CliRunner().invoke(app, ["annotate", "--help"], env={"COLUMNS": "250"}).output.replace("│", " ").split())
    assert "pip install 'spacy-ner-plus[ray]'" in annotate


def no_color_env(**extra):
    """The environment without the variables that force colours on (CI sets some)."""
    forcing = ("NO_COLOR", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "ANSI_COLORS_DISABLED")
    env = {k: v for k, v in os.environ.items() if k not in forcing}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "args", [["convert", MIXED_IOB], ["convert", "nope.iob"], ["--help"], ["convert", "--help"], ["convert"]]
)
def test_piped_output_has_no_colour_codes(args, tmp_path):
    if args[0] == "convert" and len(args) == 2:
        args = [*args, tmp_path / "out.spacy"]
    # cwd: python -m finds this checkout's package first
    proc = subprocess.run([sys.executable, "-m", "spacy_ner_plus", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=no_color_env(), timeout=300)
    assert proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr, (proc.stdout, proc.stderr)


def run_in_terminal(args, env):
    """stdout and stderr of ``python -m spacy_ner_plus ARGS`` run on a pseudo-terminal."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "spacy_ner_plus", *map(str, args)], stdout=terminal, stderr=terminal,
                            stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(controller)
    return b"".join(chunks).decode("utf8", errors="replace")


def test_a_terminal_gets_colours_unless_no_color_is_set(tmp_path):
    env = no_color_env()
    args = ["convert", "nope.iob", tmp_path / "out.spacy"]
    coloured = run_in_terminal(args, env)
    assert "nope.iob: no such file" in coloured and "\x1b[" in coloured  # else the next check proves nothing
    plain_text = run_in_terminal(args, {**env, "NO_COLOR": "1"})
    assert "nope.iob: no such file" in plain_text and "\x1b" not in plain_text


def test_use_color_follows_the_stream_and_no_color(monkeypatch):
    class Terminal:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    with open(os.devnull, "w") as devnull:
        assert use_color(Terminal()) and not use_color(devnull)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Terminal())
