"""The project workflow end to end (convert -> train -> calibrate -> evaluate ->
package) on a tiny corpus whose labels have hyphens, run as a user runs it:
`spacy project run all` in a copy of the project."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    [("Anna", "B-PER"), ("read", "O"), ("War", "B-work-of-art"), ("and", "I-work-of-art"), ("Peace", "I-work-of-art"), (".", "O")],
    [("Peter", "B-PER"), ("loves", "O"), ("Hamlet", "B-work-of-art"), (".", "O")],
    [("Mary", "B-PER"), ("saw", "O"), ("Swan", "B-work-of-art"), ("Lake", "I-work-of-art"), ("on", "O"), ("Monday", "B-DATE-TIME"), (".", "O")],
    [("John", "B-PER"), ("wrote", "O"), ("nothing", "O"), ("on", "O"), ("Friday", "B-DATE-TIME"), (".", "O")],
]


def write_iob(path: Path, sentences) -> None:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n", encoding="utf8")


@pytest.mark.slow
def test_the_workflow_runs_end_to_end_with_hyphenated_labels(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("project.yml",):
        shutil.copy(ROOT / name, project / name)
    for folder in ("configs", "spacy_ner_plus"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    data = project / "assets" / "hyphen"
    data.mkdir(parents=True)
    write_iob(data / "train.iob", SENTENCES * 4)
    write_iob(data / "dev.iob", SENTENCES)
    write_iob(data / "test.iob", SENTENCES)
    # 16 sentences in batches of 32: one step per epoch; 12 epochs, evaluated every 11 steps
    args = [
        sys.executable, "-m", "spacy", "project", "run", "all", str(project),
        "--vars.train", "assets/hyphen/train.iob", "--vars.dev", "assets/hyphen/dev.iob",
        "--vars.test", "assets/hyphen/test.iob", "--vars.name", "hyphen", "--vars.max_epochs", "12",
        "--vars.eval_frequency", "11", "--vars.package_name", "hyphen_test",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((project / "metrics" / "hyphen" / "metrics.json").read_text())
    assert {"work-of-art", "DATE-TIME", "PER"} <= set(metrics["per_type"])
    calibrated = spacy.load(project / "training" / "hyphen" / "model-calibrated")
    ner = calibrated.get_pipe("ner_plus")
    assert set(ner.labels) == {"DATE-TIME", "PER", "work-of-art"}
    assert set(ner.cfg["thresholds"]) == set(ner.labels)
    doc = calibrated("Anna read War and Peace on Monday .")
    assert {s.label_ for s in doc.spans["ner_plus"]} <= set(ner.labels)
    wheels = list((project / "packages").glob("en_hyphen_test-*/dist/*.whl"))
    assert len(wheels) == 1
    # what the wheel holds: a sentencizer first, so plain text gets the sentence path of the config
    packaged = spacy.load(project / "training" / "hyphen" / "model-packaged")
    assert packaged.pipe_names == ["sentencizer", "ner_plus"] and packaged.get_pipe("ner_plus").within_sentences == "windows"
    assert packaged.get_pipe("ner_plus").cfg["thresholds"] == ner.cfg["thresholds"]
    assert len(list(packaged("Anna read War and Peace. Peter loves Hamlet.").sents)) == 2
