"""A pipeline saved by release 0.2.0 (tests/fixtures/make_saved_pipeline.py, before the package
was laid out in subpackages) loads with today's code and predicts the same entities and scores."""
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_compat_pipeline_saved_by_0_2_0_predicts_identically():
    import spacy

    expected = json.loads((FIXTURES / "saved_pipeline_0_2_0.expected.json").read_text())
    nlp = spacy.load(FIXTURES / "saved_pipeline_0_2_0")
    docs = list(nlp.pipe([d["text"] for d in expected["docs"]]))
    assert len(docs) == len(expected["docs"])
    for doc, want in zip(docs, expected["docs"]):
        assert [[e.start_char, e.end_char, e.label_] for e in doc.ents] == [e[:3] for e in want["ents"]]
        assert [e._.confidence for e in doc.ents] == pytest.approx([e[3] for e in want["ents"]], abs=1e-6)
        group = doc.spans["ner_plus"]
        assert [[s.start_char, s.end_char, s.label_] for s in group] == want["spans"]
        assert list(group.attrs["scores"]) == pytest.approx(want["scores"], abs=1e-6)
    # the stored calibration applies: LOC's threshold of 0.95 keeps it out of doc.ents
    assert any(s.label_ == "LOC" for d in docs for s in d.spans["ner_plus"])
    assert not any(e.label_ == "LOC" for d in docs for e in d.ents)
