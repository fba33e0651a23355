"""The second PII test set (scripts/make_pii_testset.py) and its experiment (bench/accuracy/pii_testset.py)."""
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "pii_testset"
sys.path.insert(0, str(ROOT))

from bench.accuracy import pii_testset as bench_testset  # noqa: E402


def _load_script():
    spec = importlib.util.spec_from_file_location("make_pii_testset", ROOT / "scripts" / "make_pii_testset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_script()


def _read(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def _assert_well_formed(records):
    for r in records:
        previous_end = 0
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["text"], r["id"]
            assert s["text"] == s["text"].strip() and s["text"], r["id"]
            assert s["label"] in gen.LABELS, r["id"]
            assert s["start"] >= previous_end, f"{r['id']}: {s} overlaps the span before it"
            previous_end = s["end"]


# --------------------------------------------------------------- the generator
def test_written_part_is_deterministic_and_committed():
    first, second = gen.written_files(), gen.written_files()
    assert first == second
    for name, data in first.items():
        assert (ASSETS / name).read_bytes() == data, f"{name} is stale: run scripts/make_pii_testset.py written assets/pii_testset"
    assert gen.written_files(seed=gen.SEED + 1)["written.jsonl"] != first["written.jsonl"]  # the seed is used


def test_committed_records_are_well_formed():
    written, free = _read(ASSETS / "written.jsonl"), _read(ASSETS / "pii_free.jsonl")
    _assert_well_formed(written)
    assert len(written) >= 300 and len(free) >= 200
    assert all(r["spans"] for r in written)
    assert len({r["id"] for r in written + free}) == len(written) + len(free)
    labels = {s["label"] for r in written for s in r["spans"]}
    assert labels == set(gen.LABELS)  # every type is in the set


def test_pii_free_texts_hold_no_gold_span():
    written, free = _read(ASSETS / "written.jsonl"), _read(ASSETS / "pii_free.jsonl")
    assert all(r["spans"] == [] for r in free)
    values = {s["text"] for r in written for s in r["spans"] if len(s["text"]) >= 4}
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(v)}(?!\w)" for v in sorted(values, key=len, reverse=True)))
    hits = [(r["id"], m.group(0)) for r in free for m in pattern.finditer(r["text"])]
    assert hits == []


def test_check_records_refuses_bad_spans():
    good = gen.make_record("x", "log", "Anna in Leeds", [(0, 4, "PERSON"), (8, 13, "LOCATION")])
    gen.check_records([good])
    overlapping = gen.make_record("x", "log", "Anna in Leeds", [(0, 4, "PERSON"), (2, 13, "LOCATION")])
    with pytest.raises(ValueError, match="overlaps"):
        gen.check_records([overlapping])
    wrong_text = json.loads(json.dumps(good))
    wrong_text["spans"][0]["text"] = "Anne"
    with pytest.raises(ValueError, match="text is"):
        gen.check_records([wrong_text])
    with pytest.raises(ValueError, match="label"):
        gen.check_records([gen.make_record("x", "log", "Anna", [(0, 4, "NAME")])])
    with pytest.raises(ValueError, match="duplicate id"):
        gen.check_records([good, good])


def test_values_pass_their_own_checks():
    import random

    import phonenumbers

    from spacy_ner_plus.checksums import iban_valid, luhn_valid, us_ssn_valid

    v = gen.Values(random.Random(0))
    for _ in range(50):
        assert luhn_valid(re.sub(r"\D", "", v.card()))
        assert iban_valid(v.iban().replace(" ", ""))
        assert us_ssn_valid(*v.ssn().split("-"))
    for region in ("GB", "US", "DE", "FR", "ES", "NL", "JP"):
        assert phonenumbers.is_valid_number(phonenumbers.parse(v.phone(region), region))


def test_news_part_materialises_with_the_manifest_checksum(shared_data, tmp_path):
    manifest_path = ASSETS / "conll_manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf8"))
    data = gen.materialise_news(shared_data, manifest_path)
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert gen.make_manifest(shared_data) == manifest  # the manifest itself is reproducible
    records = [json.loads(line) for line in data.decode("utf8").splitlines()]
    _assert_well_formed(records)
    assert len(records) == manifest["texts"] == gen.N_NEWS
    assert all(r["unannotated"] == ["DATE_TIME"] for r in records)
    assert not {s["label"] for r in records for s in r["spans"]} & {"DATE_TIME"}
    # a changed manifest is refused, naming both checksums
    manifest["sha256"] = "0" * 64
    changed = tmp_path / "manifest.json"
    changed.write_text(json.dumps(manifest), encoding="utf8")
    with pytest.raises(ValueError, match="sha256"):
        gen.materialise_news(shared_data, changed)


def test_detokenize_maps_conll_tags():
    tokens = [("Mr", "O"), ("John", "B-PER"), ("Smith", "I-PER"), ("of", "O"), ("Acme", "B-ORG"), (",", "O"),
              ("German", "B-MISC"), ("Bonn", "B-LOC"), ("Paris", "B-LOC"), (".", "O")]
    text, spans = gen.detokenize(tokens)
    assert text == "Mr John Smith of Acme, German Bonn Paris."
    assert [(text[s:e], label) for s, e, label in spans] == [
        ("John Smith", "PERSON"), ("Acme", "ORGANIZATION"), ("Bonn", "LOCATION"), ("Paris", "LOCATION")]


# --------------------------------------------------------------- the scorer
def _record(text, spans, unannotated=()):
    return gen.make_record("r", "log", text, spans, unannotated)


TEXT = "0123456789 abcdefghij"
GOLD = _record(TEXT, [(0, 10, "PHONE_NUMBER")])


@pytest.mark.parametrize("pred,hit", [
    ((0, 10), True),    # exact
    ((0, 9), True),     # 9/10 = 0.9: on the boundary, counts
    ((0, 11), True),    # 10/11
    ((1, 10), True),    # 9/10
    ((1, 11), False),   # 9/11 < 0.9
    ((0, 8), False),    # 8/10
    ((2, 21), False),   # far too long
])
def test_overlap_rule(pred, hit):
    s = bench_testset.score([GOLD], [[(pred[0], pred[1], "PHONE_NUMBER")]])
    assert s["per_type"]["PHONE_NUMBER"]["tp"] == int(hit)
    assert s["agnostic"]["tp"] == int(hit)


def test_overlap_is_intersection_over_union():
    assert bench_testset.overlap((0, 10), (0, 10)) == 1.0
    assert bench_testset.overlap((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert bench_testset.overlap((0, 10), (10, 20)) == 0.0
    assert bench_testset.overlap((3, 14), (0, 14)) == pytest.approx(11 / 14)  # "IP:203.0.113.9" for "203.0.113.9"


def test_wrong_type_counts_only_type_agnostic():
    s = bench_testset.score([GOLD], [[(0, 10, "US_SSN")]])
    assert s["agnostic"] == {"p": 1.0, "r": 1.0, "f2": 1.0, "tp": 1, "pred": 1, "gold": 1}
    assert s["per_type"]["PHONE_NUMBER"]["r"] == 0.0 and s["per_type"]["US_SSN"]["p"] == 0.0


def test_duplicates_count_once_and_matching_is_one_to_one():
    s = bench_testset.score([GOLD], [[(0, 10, "PHONE_NUMBER"), (0, 10, "PHONE_NUMBER")]])
    assert s["per_type"]["PHONE_NUMBER"] == {"p": 1.0, "r": 1.0, "f2": 1.0, "tp": 1, "pred": 1, "gold": 1}
    # same span, two types: one agnostic prediction
    assert bench_testset.score([GOLD], [[(0, 10, "PHONE_NUMBER"), (0, 10, "US_SSN")]])["agnostic"]["pred"] == 1
    # two different predictions over one gold span: one hit, one false positive
    s = bench_testset.score([GOLD], [[(0, 10, "PHONE_NUMBER"), (0, 9, "PHONE_NUMBER")]])
    assert s["per_type"]["PHONE_NUMBER"]["tp"] == 1 and s["per_type"]["PHONE_NUMBER"]["pred"] == 2
    assert s["per_type"]["PHONE_NUMBER"]["p"] == 0.5


def test_unannotated_and_outside_types_are_not_judged():
    record = _record(TEXT, [(0, 10, "PHONE_NUMBER")], unannotated=["DATE_TIME"])
    s = bench_testset.score([record], [[(0, 10, "PHONE_NUMBER"), (11, 21, "DATE_TIME"), (11, 21, "NRP")]])
    assert s["agnostic"]["pred"] == 1 and "DATE_TIME" not in s["per_type"]
    assert bench_testset.outside_types([[(11, 21, "NRP")]]) == {"NRP": 1}


def test_false_positives_per_10k_words():
    free = [_record("one two three four five", []), _record("six seven eight nine ten", [])]
    fp = bench_testset.false_positives(free, [[(0, 3, "PERSON"), (0, 3, "LOCATION")], []])
    assert fp["fp"] == 1 and fp["words"] == 10 and fp["per_10k_words"] == 1000.0


def test_targets_judge_met_and_missed():
    per = {"PERSON": {"p": 0.95, "r": 0.96, "f2": 0.96}, "ORGANIZATION": {"p": 0.9, "r": 0.7, "f2": 0.73},
           "LOCATION": {"p": 0.9, "r": 0.9, "f2": 0.9}, "STREET_ADDRESS": {"p": 1, "r": 0.9, "f2": 0.9},
           "PHONE_NUMBER": {"p": 1, "r": 0.5, "f2": 0.5}}
    results = {
        "ours": {"status": "ok", "scores": {"agnostic": {"f2": 0.86}, "per_type": per}, "pii_free": {"per_10k_words": 1.5}},
        "presidio_ours": {"status": "ok", "scores": {"agnostic": {"f2": 0.84}}},
    }
    t = bench_testset.targets(results)
    assert t["agnostic_f2>=0.85"]["met"] and not t["agnostic_f2>=presidio_ours+0.03"]["met"]
    assert t["PERSON recall>=0.95 at precision>=0.90"]["met"] and t["LOCATION F2>=0.80"]["met"]
    assert not t["ORGANIZATION F2>=0.80"]["met"] and t["STREET_ADDRESS recall>=0.90"]["met"]
    assert not t["PHONE_NUMBER recall>=0.90"]["met"] and not t["false positives<=1 per 10k words"]["met"]
    results["presidio_ours"] = {"status": "unavailable: no module"}
    assert bench_testset.targets(results)["agnostic_f2>=presidio_ours+0.03"]["met"] is None


# --------------------------------------------------------------- the experiment
@pytest.mark.slow
def test_experiment_runs_quick_on_a_tiny_pipeline(trained_nlp, tmp_path):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("pii_patterns")
    nlp.add_pipe("ner_plus", source=trained_nlp)
    nlp.to_disk(tmp_path / "model")
    results = bench_testset.main([
        "--model", str(tmp_path / "model"), "--quick", "--per-register", "4", "--output", str(tmp_path / "out.json"),
        "--ledger", str(tmp_path / "ledger"), "--news", str(tmp_path / "absent.jsonl"), "--data", str(tmp_path / "no-data"),
    ])
    assert json.loads((tmp_path / "out.json").read_text())["meta"]["quick"] is True
    assert list((tmp_path / "ledger" / "pii_testset").glob("*.json"))
    assert results["meta"]["notes"] and "news part left out" in results["meta"]["notes"][0]
    assert results["meta"]["texts"] == {"written": 7 * 4}
    assert results["ours"]["status"] == results["patterns"]["status"] == "ok"
    assert results["presidio_default"]["status"].startswith(("not installable", "ok", "unavailable"))
    if importlib.util.find_spec("presidio_analyzer") and (ROOT / "spacy_ner_plus" / "presidio.py").is_file():
        assert results["presidio_ours"]["status"] == "ok"
        assert results["presidio_ours"]["scores"]["per_type"]["EMAIL_ADDRESS"]["tp"] > 0
    # the patterns find the structured values the rules wrote; the free texts are judged
    patterns = results["patterns"]["scores"]["per_type"]
    assert patterns["EMAIL_ADDRESS"]["tp"] > 0 and "PERSON" not in {t for t, s in patterns.items() if s["pred"]}
    assert results["patterns"]["pii_free"]["texts"] == 6 * 4
    assert set(results["targets"]) >= {"agnostic_f2>=0.85", "false positives<=1 per 10k words"}
