"""spacy_ner_plus.presidio with the real presidio-analyzer AnalyzerEngine and presidio-anonymizer
AnonymizerEngine: our entities, scores and explanations reach Presidio's results, Presidio's own
recognizers, context enhancer, thresholds and anonymizer keep working, and the pipeline runs once per
text without any model download."""
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

pytest.importorskip("presidio_analyzer")
pytest.importorskip("presidio_anonymizer")

from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import SpacyRecognizer  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402

from spacy_ner_plus.calibration import Calibrator  # noqa: E402
from spacy_ner_plus.presidio import (  # noqa: E402
    NerPlusNlpEngine,
    NerPlusPipeline,
    NerPlusRecognizer,
    analyzer_engine,
    replace_spacy_recognizers,
)

PII_MODEL = Path("/work/main/training/pii/model-calibrated")
TEXT = "John lives in New York City . Mail john@example.com or pay with 4111 1111 1111 1111 ."
OURS = "NerPlusRecognizer"
CONLL = {"PER": "PERSON", "LOC": "LOCATION", "ORG": "ORGANIZATION"}
# raw 0 -> 0.05, raw 1 -> 0.65: calibrated scores differ from the raw ones and never reach 0.66
CALIBRATOR = Calibrator(method="isotonic", x=[0.0, 1.0], y=[0.05, 0.65])
# LOC at 1.0: every LOC candidate (New York City included) stays below its threshold
THRESHOLDS = {"PER": 0.3, "ORG": 0.3, "LOC": 1.0}


@pytest.fixture
def calibrated(trained_nlp):
    """trained_nlp with CALIBRATOR and THRESHOLDS, its calibration restored afterwards."""
    ner = trained_nlp.get_pipe("ner_plus")
    saved = {k: ner.cfg.get(k) for k in ("calibration", "thresholds", "calibration_weights", "calibration_decoding")}
    ner.set_calibration({label: CALIBRATOR for label in ner.labels}, THRESHOLDS)
    try:
        yield trained_nlp
    finally:
        ner.cfg.update(saved)


@pytest.fixture(scope="module")
def saved_path(trained_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("presidio") / "pipeline"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def ruled_nlp(saved_path):
    """The trained pipeline behind an entity_ruler (PROJECT, MISC) and pii_patterns."""
    pytest.importorskip("phonenumbers")
    nlp = spacy.load(saved_path)
    nlp.add_pipe("pii_patterns", first=True)
    ruler = nlp.add_pipe("entity_ruler", first=True)
    ruler.add_patterns(
        [{"label": "PROJECT", "pattern": "Falcon"}, {"label": "MISC", "pattern": [{"LOWER": "german"}]}]
    )
    return nlp


class CountingTokenizer:
    """Wraps a pipeline's tokenizer and counts the texts it makes Docs of (one per pipeline run)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, text):
        self.calls += 1
        return self.tokenizer(text)

    def pipe(self, texts, batch_size=1000):
        for text in texts:
            yield self(text)


def ours(results):
    return [r for r in results if r.recognition_metadata["recognizer_name"] == OURS]


def test_presidio_reports_our_thresholded_entities_with_calibrated_scores_and_explanations(calibrated):
    analyzer = analyzer_engine(calibrated)
    recognizer = next(r for r in analyzer.registry.recognizers if isinstance(r, NerPlusRecognizer))
    doc = calibrated(TEXT)  # the same pipeline on the same text, outside Presidio
    group = doc.spans["ner_plus"]
    by_span = {(s.start_char, s.end_char, s.label_): (c, r) for s, c, r in zip(group, group.attrs["scores"], group.attrs["raw_scores"])}
    assert any(s.label_ == "LOC" and s.text == "New York City" for s in group), "the candidate under its threshold"

    results = ours(analyzer.analyze(TEXT, language="en", return_decision_process=True))
    expected = sorted((e.start_char, e.end_char, CONLL[e.label_]) for e in doc.ents)
    assert sorted((r.start, r.end, r.entity_type) for r in results) == expected
    assert "LOCATION" not in {r.entity_type for r in results}, "LOC's threshold is 1.0: Presidio's threshold 0 cannot bring it back"
    assert any(r.entity_type == "PERSON" and TEXT[r.start : r.end] == "John" for r in results)
    for r in results:
        label = {v: k for k, v in CONLL.items()}[r.entity_type]
        calibrated_score, raw = by_span[(r.start, r.end, label)]
        assert r.score == pytest.approx(calibrated_score) and r.score != 0.85
        assert calibrated_score == pytest.approx(float(CALIBRATOR([raw])[0]))
        e = r.analysis_explanation
        assert (e.label, e.source, e.threshold) == (label, "model", THRESHOLDS[label])
        assert e.raw_score == pytest.approx(raw) and e.calibrated_score == pytest.approx(calibrated_score)
        assert e.original_score == pytest.approx(calibrated_score) and e.recognizer == OURS
        assert {"raw_score", "calibrated_score", "threshold", "source"} <= set(e.to_dict())
        assert f"threshold {THRESHOLDS[label]:.4f}" in e.textual_explanation
        assert r.recognition_metadata["recognizer_identifier"] == recognizer.id


def test_presidio_score_threshold_only_drops_more(calibrated):
    analyzer = analyzer_engine(calibrated)
    assert ours(analyzer.analyze(TEXT, language="en", score_threshold=0.0))
    # every calibrated score is at most 0.65: Presidio's 0.66 drops all of ours, not Presidio's email (1.0)
    kept = analyzer.analyze(TEXT, language="en", score_threshold=0.66)
    assert not ours(kept) and "EMAIL_ADDRESS" in {r.entity_type for r in kept}
    strict = analyzer_engine(calibrated, default_score_threshold=0.66)
    assert not ours(strict.analyze(TEXT, language="en"))


def test_presidio_default_recognizers_still_fire_and_spacy_recognizer_is_replaced(trained_nlp):
    analyzer = analyzer_engine(trained_nlp)
    names = {r.name for r in analyzer.registry.recognizers}
    assert {"EmailRecognizer", "CreditCardRecognizer", "PhoneRecognizer", OURS} <= names
    assert not any(isinstance(r, SpacyRecognizer) for r in analyzer.registry.recognizers)
    results = analyzer.analyze(TEXT, language="en")
    found = {(r.entity_type, TEXT[r.start : r.end], r.recognition_metadata["recognizer_name"]) for r in results}
    assert ("EMAIL_ADDRESS", "john@example.com", "EmailRecognizer") in found
    assert ("CREDIT_CARD", "4111 1111 1111 1111", "CreditCardRecognizer") in found
    assert ("PERSON", "John", OURS) in found
    assert set(analyzer.get_supported_entities("en")) >= {"PERSON", "LOCATION", "ORGANIZATION", "EMAIL_ADDRESS"}

    alone = analyzer_engine(trained_nlp, keep_default_recognizers=False)
    assert [r.name for r in alone.registry.recognizers] == [OURS]
    assert {r.entity_type for r in alone.analyze(TEXT, language="en")} <= {"PERSON", "LOCATION", "ORGANIZATION"}


def test_presidio_users_registry_keeps_its_recognizers_without_spacy_recognizer(trained_nlp):
    registry = RecognizerRegistry()
    registry.add_recognizer(SpacyRecognizer())
    registry.add_recognizer(PatternRecognizer(supported_entity="TICKET", patterns=[Pattern("ticket", r"TCK-\d{4}", 0.6)]))
    analyzer = analyzer_engine(trained_nlp, registry=registry)
    assert analyzer.registry is registry
    assert sorted(r.name for r in registry.recognizers) == sorted([OURS, "PatternRecognizer"])
    text = "John lives in New York City . Ticket TCK-1234 ."
    found = {(r.entity_type, text[r.start : r.end]) for r in analyzer.analyze(text, language="en")}
    assert ("TICKET", "TCK-1234") in found and ("PERSON", "John") in found
    assert replace_spacy_recognizers(RecognizerRegistry(recognizers=[SpacyRecognizer()]), NerPlusRecognizer(trained_nlp)) == ["SpacyRecognizer"]


def test_presidio_context_enhancer_reads_our_tokens_and_lemmas(trained_nlp):
    analyzer = analyzer_engine(trained_nlp)
    artifacts = analyzer.nlp_engine.process_text("Phone : 212-555-0187", "en")
    assert artifacts.lemmas == ["phone", ":", "212", "-", "555", "-", "0187"], "lowercased text: the pipeline has no lemmatizer"

    def phone(text, **kwargs):
        results = analyzer.analyze(text, language="en", entities=["PHONE_NUMBER"], return_decision_process=True, **kwargs)
        return next(r for r in results if r.recognition_metadata["recognizer_name"] == "PhoneRecognizer")

    boosted = phone("John lives in New York City . Phone : 212-555-0187 .")
    assert boosted.analysis_explanation.supportive_context_word == "phone"
    assert boosted.analysis_explanation.score_context_improvement > 0
    plain = phone("John lives in New York City . Dial 212-555-0187 .")
    assert plain.analysis_explanation.score_context_improvement == 0 and plain.score < boosted.score
    # context given with the request reaches the enhancer too
    assert phone("John lives in New York City . Dial 212-555-0187 .", context=["telephone"]).score == pytest.approx(boosted.score)


def test_presidio_anonymizer_redacts_at_our_offsets(trained_nlp):
    text = "Zoë lives in New York City . Mary works for Acme Corp in Paris ."
    analyzer = analyzer_engine(trained_nlp, keep_default_recognizers=False)
    results = analyzer.analyze(text, language="en")
    doc = trained_nlp(text)
    assert sorted((r.start, r.end) for r in results) == [(e.start_char, e.end_char) for e in doc.ents]
    assert ("PERSON", "Zoë") in {(r.entity_type, text[r.start : r.end]) for r in results}
    expected, last = [], 0
    for ent in doc.ents:
        expected += [text[last : ent.start_char], f"<{CONLL[ent.label_]}>"]
        last = ent.end_char
    expected.append(text[last:])
    assert AnonymizerEngine().anonymize(text=text, analyzer_results=results).text == "".join(expected)


def test_presidio_runs_the_pipeline_once_per_text(trained_nlp, monkeypatch, tmp_path):
    counter = CountingTokenizer(trained_nlp.tokenizer)
    monkeypatch.setattr(trained_nlp, "tokenizer", counter)
    analyzer = analyzer_engine(trained_nlp)
    texts = [TEXT, "Mary works for Acme Corp in Paris ."]
    single = [sorted((r.entity_type, r.start, r.end, r.score) for r in analyzer.analyze(t, language="en")) for t in texts]
    assert counter.calls == 2
    batch = list(BatchAnalyzerEngine(analyzer).analyze_iterator(texts, language="en", batch_size=2))
    assert counter.calls == 4
    assert [sorted((r.entity_type, r.start, r.end, r.score) for r in rs) for rs in batch] == single

    # under another NlpEngine (Presidio's own, over a blank pipeline), the recognizer runs ours itself
    spacy.blank("en").to_disk(tmp_path / "blank")
    other = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(tmp_path / "blank")}])
    other.load()
    engine = AnalyzerEngine(nlp_engine=other, registry=RecognizerRegistry(recognizers=[NerPlusRecognizer(trained_nlp)]))
    results = engine.analyze(TEXT, language="en")
    assert counter.calls == 5
    assert sorted((r.entity_type, r.start, r.end, r.score) for r in results) == [x for x in single[0] if x[0] in CONLL.values()]


def test_presidio_mapping_is_documented_overridable_and_strict(trained_nlp, ruled_nlp):
    engine = NerPlusNlpEngine(trained_nlp)
    assert sorted(engine.get_supported_entities()) == ["LOCATION", "ORGANIZATION", "PERSON"]
    renamed = analyzer_engine(trained_nlp, mapping={"PER": "NAME", "ORG": None}, keep_default_recognizers=False)
    types = {r.entity_type for r in renamed.analyze("Mary works for Acme Corp in Paris .", language="en")}
    assert "NAME" in types and not types & {"PERSON", "ORGANIZATION"}
    assert sorted(renamed.get_supported_entities("en")) == ["LOCATION", "NAME"]
    with pytest.raises(ValueError, match=r"mapping\['PER'\] is ''"):
        NerPlusPipeline(trained_nlp, {"PER": ""})
    with pytest.raises(ValueError, match="needs exactly one"):
        NerPlusPipeline(spacy.blank("en"))

    # a label no mapping names: an error at construction, naming it and the way out
    with pytest.raises(ValueError, match=r"no Presidio entity for label\(s\) \['PROJECT'\].*mapping="):
        analyzer_engine(ruled_nlp)
    pipeline = NerPlusPipeline(ruled_nlp, {"PROJECT": "PROJECT_NAME"})
    doc = ruled_nlp("Falcon is German . John lives in New York City .")
    # ... and at analysis, for a label no component declared
    doc.ents = list(doc.ents) + [Span(doc, len(doc) - 1, len(doc), label="SECRET")]
    with pytest.raises(ValueError, match="label 'SECRET'"):
        pipeline.entities(doc)


def test_presidio_reports_pattern_and_rule_entities_with_their_source(ruled_nlp):
    analyzer = analyzer_engine(ruled_nlp, mapping={"PROJECT": "PROJECT_NAME"}, keep_default_recognizers=False)
    text = "Falcon is German . John lives in New York City . Call +44 20 7946 0958 ."
    results = {text[r.start : r.end]: r for r in analyzer.analyze(text, language="en", return_decision_process=True)}
    project = results["Falcon"]
    assert (project.entity_type, project.score, project.analysis_explanation.source) == ("PROJECT_NAME", 1.0, "other")
    assert "German" not in results, "MISC is dropped by DEFAULT_MAPPING"
    phone = results["+44 20 7946 0958"]
    e = phone.analysis_explanation
    assert (phone.entity_type, e.source, e.calibrated_score, e.threshold) == ("PHONE_NUMBER", "pattern", None, None)
    assert phone.score == e.raw_score == pytest.approx(0.85)


def test_presidio_engine_never_downloads_a_model(saved_path, monkeypatch):
    loaded = []
    real_load = spacy.load

    def no_download(*args, **kwargs):
        raise AssertionError(f"spacy.cli.download{args}")

    def load(name, *args, **kwargs):
        loaded.append(str(name))
        return real_load(name, *args, **kwargs)

    monkeypatch.setattr(spacy.cli, "download", no_download)
    monkeypatch.setattr(spacy, "load", load)
    analyzer = analyzer_engine(str(saved_path))
    assert ("PERSON", "John") in {(r.entity_type, TEXT[r.start : r.end]) for r in analyzer.analyze(TEXT, language="en")}
    assert loaded == [str(saved_path)], "only our pipeline is loaded, no en_core_web_* model"


@pytest.mark.slow
def test_presidio_with_the_pii_workflows_calibrated_pipeline():
    if not (PII_MODEL / "meta.json").exists():
        pytest.skip(f"{PII_MODEL} not found: it is built by `spacy project run pii` (not in CI)")
    nlp = spacy.load(PII_MODEL)
    thresholds = nlp.get_pipe("ner_plus").cfg["thresholds"]
    text = "Anna Keller from Siemens AG in Munich called +44 20 7946 0958 on 3 May 2021 about IBAN DE89370400440532013000."
    alone = analyzer_engine(nlp, keep_default_recognizers=False).analyze(text, language="en", return_decision_process=True)
    assert sorted((r.start, r.end) for r in alone) == sorted((e.start_char, e.end_char) for e in nlp(text).ents)
    assert {"PERSON", "PHONE_NUMBER", "IBAN_CODE"} <= {r.entity_type for r in alone}
    for r in alone:
        e = r.analysis_explanation
        if e.source == "model":
            assert e.threshold == pytest.approx(thresholds.get(e.label, 0.0)) and r.score >= e.threshold
        else:
            assert e.source == "pattern" and e.calibrated_score is None
    # with Presidio's recognizers: where both find the same span and type, Presidio keeps the higher score
    results = analyzer_engine(nlp).analyze(text, language="en")
    redacted = AnonymizerEngine().anonymize(text=text, analyzer_results=results).text
    assert "Anna Keller" not in redacted and "7946" not in redacted and "DE89" not in redacted
