"""scripts/resume_to_jsonl.py and scripts/ade_to_jsonl.py on tiny files written in the corpora's formats
(tests/fixtures/spans/resume, tests/fixtures/spans/ade), and their JSONL through `convert`."""
import importlib.util
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import project_copy
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_ner_plus.cli import app
from spacy_ner_plus.training.spans import read_spans

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "spans"
runner = CliRunner()


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resume = load_script("resume_to_jsonl")
ade = load_script("ade_to_jsonl")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def spans_text(record):
    return [(record["text"][s["start"]:s["end"]], s["label"]) for s in record["spans"]]


# -- resume --------------------------------------------------------------------


@pytest.fixture
def resume_dir(tmp_path):
    """The fixture CVs zipped as the corpus ships them (a folder per zip, macOS metadata in the test zip)."""
    folder = tmp_path / "resume"
    folder.mkdir()
    with zipfile.ZipFile(folder / resume.TRAIN_ZIP, "w") as z:
        z.writestr("545_cvs_train_v2/", "")
        for path in sorted((FIXTURES / "resume" / "train").glob("*.xml")):
            z.write(path, f"545_cvs_train_v2/{path.name}")
    with zipfile.ZipFile(folder / resume.TEST_ZIP, "w") as z:
        for path in sorted((FIXTURES / "resume" / "test").glob("*.xml")):
            z.write(path, f"set_aside_test_v2_50cvs/{path.name}")
        z.writestr("__MACOSX/set_aside_test_v2_50cvs/._Kaggle_1.xml", b"\x00\x05\x16\x07 not xml")
    return folder


def test_label_names():
    assert resume.label_name("Companies worked at") == "COMPANIES_WORKED_AT"
    assert resume.label_name("Tech Tools") == "TECH_TOOLS"
    assert resume.label_name(" Email  Address ") == "EMAIL_ADDRESS"


def test_resume_records_and_split(resume_dir, tmp_path):
    out = tmp_path / "out"
    assert resume.main([str(resume_dir), str(out), "--dev-fraction", "0.25", "--seed", "3"]) == 0
    train, dev, test = (read_jsonl(out / f"{s}.jsonl") for s in ("train", "dev", "test"))
    report = json.loads((out / "report.json").read_text())
    # 4.xml is not well-formed XML (a bare '&'): reported, not in any split; 4 CVs left, 1 to dev
    assert len(train) == 3 and len(dev) == 1 and len(test) == 2
    assert report["counts"]["files not parsed"] == 1
    assert any("4.xml: not well-formed XML" in p for p in report["problems"])
    assert report["counts"]["macOS metadata entries skipped"] == 1
    # split by CV: each CV whole in one split, the same with the same seed
    names = [r["meta"]["cv"] for r in train + dev]
    assert sorted(names) == [f"545_cvs_train_v2/{n}.xml" for n in (1, 2, 3, 5)]
    assert report["dev_cvs"] == [r["meta"]["cv"] for r in dev]
    again = tmp_path / "again"
    resume.main([str(resume_dir), str(again), "--dev-fraction", "0.25", "--seed", "3"])
    assert (again / "dev.jsonl").read_text() == (out / "dev.jsonl").read_text()
    assert {r["meta"]["cv"] for r in test} == {"set_aside_test_v2_50cvs/Kaggle_1.xml", "set_aside_test_v2_50cvs/Indeed_2.xml"}


def test_resume_text_and_spans(resume_dir, tmp_path):
    out = tmp_path / "out"
    resume.main([str(resume_dir), str(out), "--dev-fraction", "0.25"])
    by_cv = {r["meta"]["cv"].rsplit("/", 1)[-1]: r for r in read_jsonl(out / "train.jsonl") + read_jsonl(out / "dev.jsonl")}
    first = by_cv["1.xml"]
    # the text of <cv> with the tags taken out, nothing else changed
    assert first["text"].startswith('\n"Jorge Palma  Data Analyst at Northwind Traders, Porto\nSkills: Python, SQL and teamwork.')
    assert spans_text(first) == [
        ("Jorge Palma", "NAME"), ("Data Analyst", "DESIGNATION"), ("Northwind Traders", "COMPANIES_WORKED_AT"), ("Porto", "LOCATION"),
        ("Python", "TECH_TOOLS"), ("SQL", "TECH_TOOLS"), ("teamwork", "SOFT_SKILLS"), ("jpalma@example.org", "EMAIL_ADDRESS"),
    ]
    # whitespace at a label's edges is left out of the span and counted
    assert ("BSc Mathematics", "DEGREE") in spans_text(by_cv["2.xml"])
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["labels trimmed of edge whitespace"] == 1


def test_resume_reports_what_it_cannot_use(resume_dir, tmp_path):
    out = tmp_path / "out"
    resume.main([str(resume_dir), str(out), "--dev-fraction", "0.25"])
    report = json.loads((out / "report.json").read_text())
    third = next(r for r in read_jsonl(out / "train.jsonl") + read_jsonl(out / "dev.jsonl") if r["meta"]["cv"].endswith("/3.xml"))
    # <b> keeps its text without a span; the nested label keeps the outer one; the empty label gives none
    assert "bold text" in third["text"]
    assert spans_text(third) == [("Rui Alves", "NAME"), ("chess", "HOBBY"), ("Java Developer", "DESIGNATION")]
    assert report["counts"]["elements not used"] == 1
    assert report["counts"]["nested labels"] == 1
    assert report["counts"]["empty labels"] == 1
    assert report["unknown_types"] == {"Hobby": 1}
    assert len([p for p in report["problems"] if "3.xml" in p]) == 3


def test_resume_jsonl_converts(resume_dir, tmp_path):
    out = tmp_path / "out"
    resume.main([str(resume_dir), str(out), "--dev-fraction", "0.25"])
    result = read_spans(out / "test.jsonl")
    assert result.errors == []
    assert [(e.text, e.label_) for e in result.docs[0].ents] == [("Pedro Neves", "NAME"), ("Excel", "TECH_TOOLS"), ("Power BI", "TECH_TOOLS")]
    # whole CVs: one Doc each
    assert len(result.docs) == 2 and result.counts()["sentences"] is None


def test_resume_missing_zip(tmp_path, capsys):
    assert resume.main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "no such file" in capsys.readouterr().err


# -- ADE -----------------------------------------------------------------------


def run_ade(tmp_path, *args):
    out = tmp_path / "ade_out"
    assert ade.main([str(FIXTURES / "ade"), str(out), *args]) == 0
    return out, json.loads((out / "report.json").read_text())


def all_records(out):
    return [r for s in ("train", "dev", "test") for r in read_jsonl(out / f"{s}.jsonl")]


def test_ade_places_mentions_in_their_sentence(tmp_path):
    out, report = run_ade(tmp_path)
    by_text = {r["text"]: r for r in all_records(out)}
    rash = by_text["Rash appeared after penicillin; penicillin was stopped and the rash cleared."]
    # two relation lines, one sentence: the union; the drug is its second occurrence (by the offsets)
    assert [(s["start"], s["label"]) for s in rash["spans"]] == [(0, "ADVERSE_EFFECT"), (32, "DRUG"), (63, "ADVERSE_EFFECT")]
    # overlapping mentions are all written (convert's repair resolves them)
    assert spans_text(by_text["Lithium toxicity developed on lithium."]) == [("Lithium toxicity", "ADVERSE_EFFECT"), ("Lithium", "DRUG"), ("lithium", "DRUG")]
    assert spans_text(by_text["She took methotrexate 15 mg weekly and developed pneumonitis."]) == [
        ("methotrexate", "DRUG"), ("15 mg weekly", "DOSE"), ("pneumonitis", "ADVERSE_EFFECT")]
    assert report["sentences"] == 11 and report["relation_lines"] == {"DRUG-AE.rel": 12, "DRUG-DOSE.rel": 2}


def test_ade_reports_mentions_it_cannot_place(tmp_path):
    out, report = run_ade(tmp_path)
    assert report["mentions_unplaced"] == {"ADVERSE_EFFECT missing": 1, "DRUG ambiguous": 1}
    rows = (out / "unplaced.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:6] == ["pmid", "label", "mention", "begin", "end", "reason"]
    assert rows[1].split("\t")[:6] == ["1003", "ADVERSE_EFFECT", "fever", "7", "12", "missing"]
    assert rows[2].split("\t")[:6] == ["1004", "DRUG", "X", "35", "36", "ambiguous (2 occurrences)"]
    by_text = {r["text"]: r for r in all_records(out)}
    # the rest of those sentences is kept
    assert spans_text(by_text["Fever followed aspirin."]) == [("aspirin", "DRUG")]
    assert spans_text(by_text["Drug X caused hives; drug X was stopped."]) == [("hives", "ADVERSE_EFFECT")]
    assert report["problems"] == ["DRUG-AE.rel:11: 2 fields, expected 8: line skipped"]


def test_ade_split_by_pubmed_id(tmp_path):
    out, report = run_ade(tmp_path, "--seed", "5")
    ids = {s: {r["meta"]["pmid"] for r in read_jsonl(out / f"{s}.jsonl")} for s in ("train", "dev", "test")}
    assert not (ids["train"] & ids["dev"] or ids["train"] & ids["test"] or ids["dev"] & ids["test"])
    # 11 PubMed IDs: 80/10/10 rounds to 9/1/1
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [9, 1, 1]
    assert ade.split_ids([str(i) for i in range(1000)], 5) == ade.split_ids([str(i) for i in reversed(range(1000))], 5)
    assert Counter(ade.split_ids([str(i) for i in range(1000)], 5).values()) == {"train": 800, "dev": 100, "test": 100}


def test_ade_dose_policy(tmp_path):
    out, report = run_ade(tmp_path)
    test = read_jsonl(out / "test.jsonl")
    dose = read_jsonl(out / "test_dose.jsonl")
    assert dose == [r for r in test if r["meta"]["dose_annotated"]]
    assert report["dose_sentences"] == 2
    dropped_out = tmp_path / "dropped"
    assert ade.main([str(FIXTURES / "ade"), str(dropped_out), "--dose", "drop"]) == 0
    records = all_records(dropped_out)
    assert all(s["label"] != "DOSE" for r in records for s in r["spans"])
    # the DRUG-DOSE-only sentence is left out; the one also in DRUG-AE.rel stays, without its dose
    assert "Insulin 4 units daily." not in {r["text"] for r in records}
    assert "She took methotrexate 15 mg weekly and developed pneumonitis." in {r["text"] for r in records}
    test_dose = read_jsonl(dropped_out / "test_dose.jsonl")
    assert test_dose == [r for r in read_jsonl(dropped_out / "test.jsonl") if r["meta"]["dose_annotated"]]


def test_ade_negatives_only_when_asked(tmp_path):
    out, _ = run_ade(tmp_path)
    assert all(r["spans"] for r in all_records(out) if "Fever" not in r["text"] and "hives" not in r["text"])
    out_neg = tmp_path / "neg"
    assert ade.main([str(FIXTURES / "ade"), str(out_neg), "--negatives"]) == 0
    report = json.loads((out_neg / "report.json").read_text())
    negatives = [r for r in all_records(out_neg) if r["meta"].get("negative")]
    # the NEG line repeating an annotated sentence is not added twice
    assert sorted(r["text"] for r in negatives) == ["Cisplatin was given in four cycles.", "Patients were followed for two years."]
    assert report["negative_sentences_added"] == 2 and all(r["spans"] == [] for r in negatives)


def test_ade_jsonl_converts_with_repairs_counted(tmp_path):
    out, _ = run_ade(tmp_path)
    every = tmp_path / "all.jsonl"
    every.write_text("".join((out / f"{s}.jsonl").read_text() for s in ("train", "dev", "test")))
    docbin = tmp_path / "all.spacy"
    failed = runner.invoke(app, ["convert", str(every), str(docbin)])
    # "Lithium" inside "Lithium toxicity": an overlap, an error unless repaired
    assert failed.exit_code == 1 and "overlaps" in failed.output
    result = runner.invoke(app, ["convert", str(every), str(docbin), "--on-error", "repair"])
    assert result.exit_code == 0, result.output
    assert "overlap 1" in result.output
    docs = list(DocBin().from_disk(docbin).get_docs(Vocab()))
    lithium = next(d for d in docs if d.text.startswith("Lithium toxicity"))
    assert [(e.text, e.label_) for e in lithium.ents] == [("Lithium toxicity", "ADVERSE_EFFECT"), ("lithium", "DRUG")]


# -- the workflows on the real corpora (slow; skipped where ../shared/data is absent) ---------------------

DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "resume").is_dir() or not (DATA / "ade").is_dir(), reason=f"no corpora at {DATA}")


def project_run(project, command, *overrides, timeout=900):
    import subprocess
    import sys

    args = [sys.executable, "-m", "spacy", "project", "run", command, str(project), "--vars.data", str(DATA), *overrides]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


def n_docs(path):
    return len(DocBin().from_disk(path))


@pytest.mark.slow
@needs_data
def test_convert_steps_on_the_real_corpora(tmp_path):
    project = project_copy(tmp_path)
    project_run(project, "resume-convert")
    corpus = project / "corpus"
    report = json.loads((corpus / "resume" / "jsonl" / "report.json").read_text())
    # the corpus README: 310 training CVs, the set-aside zip's 51 entries are 50 CVs and a macOS metadata file
    assert n_docs(corpus / "resume" / "train.spacy") + n_docs(corpus / "resume" / "dev.spacy") == 310
    assert n_docs(corpus / "resume" / "dev.spacy") == 31 and n_docs(corpus / "resume" / "test.spacy") == 50
    assert report["counts"].get("files not parsed", 0) == 0 and report["problems"] == []
    mentions = {label: report["splits"]["train"]["per_type"].get(label, 0) + report["splits"]["dev"]["per_type"].get(label, 0)
                for label in report["splits"]["train"]["per_type"]}
    assert mentions["TECH_TOOLS"] == 3823 and mentions["EMAIL_ADDRESS"] == 359 and len(mentions) == 12

    project_run(project, "healthcare-convert")
    report = json.loads((corpus / "healthcare" / "jsonl" / "report.json").read_text())
    # the corpus README: 4,272 annotated sentences from 1,644 abstracts, 213 with a dose
    assert report["sentences"] == 4272 and report["pubmed_ids"] == 1644 and report["dose_sentences"] == 213
    assert sum(report["splits"][s]["sentences"] for s in ("train", "dev", "test")) == 4272
    docs = sum(n_docs(corpus / "healthcare" / f"{s}.spacy") for s in ("train", "dev", "test"))
    assert docs == 4272
    assert n_docs(corpus / "healthcare" / "test_dose.spacy") == report["splits"]["test_dose"]["sentences"]

    project_run(project, "bc5cdr-convert")
    assert [n_docs(corpus / "bc5cdr" / f"{s}.spacy") for s in ("train", "dev", "test")] == [4560, 4581, 4797]


@pytest.mark.slow
@needs_data
def test_healthcare_workflow_end_to_end_with_two_training_steps(tmp_path):
    """The whole healthcare workflow, trained 2 steps (the scores mean nothing): the packaged pipeline
    has a sentencizer before ner_plus, a recall policy on ADVERSE_EFFECT, and reads plain text."""
    import spacy

    project = project_copy(tmp_path)
    project_run(project, "healthcare", "--vars.healthcare_max_steps", "2", "--vars.calibration_bootstrap", "0", timeout=1500)
    packaged = spacy.load(project / "training" / "healthcare" / "model-packaged")
    assert packaged.pipe_names == ["sentencizer", "ner_plus"]
    ner = packaged.get_pipe("ner_plus")
    assert set(ner.labels) == {"ADVERSE_EFFECT", "DOSE", "DRUG"}
    assert ner.within_sentences == "windows"
    calibration = json.loads((project / "metrics" / "healthcare" / "calibration" / "calibration.json").read_text())
    assert "recall:0.95" in json.dumps(calibration)
    doc = packaged("The patient took aspirin 100 mg daily. She developed a rash. It was stopped.")
    assert len(list(doc.sents)) == 3
    for name in ("metrics.json", "dose/metrics.json"):
        assert (project / "metrics" / "healthcare" / name).is_file()
    assert len(list((project / "packages").glob("en_ner_plus_healthcare-*/dist/*.whl"))) == 1
