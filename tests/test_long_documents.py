"""Long and pathological documents never crash and never exceed the backbone."""
import base64
import warnings

import numpy

import pytest

from spacy_ner_plus.ml.transformer import encode_windows, max_sequence_length

PATHOLOGICAL = {
    "10k-char token": "x" * 10_000,
    "base64": base64.b64encode(bytes(range(256)) * 20).decode(),
    "long url": "see https://example.org/" + "/".join(f"segment{i}?q={i}&r=%20" for i in range(300)) + " now",
    "emoji": "John 😀😀😀 lives in 🇫🇷 Paris 👩‍👩‍👧‍👦 .",
    "control chars": "John\x00\x01\x02 lives\x7f in\u200b New York\u2028City .",
    "rtl": "John lives in ירושלים and مرحبا بالعالم Paris .",
    "cjk": "John lives in 東京都渋谷区神南一丁目 and 北京市海淀区 .",
    "empty": "",
    "whitespace": "   \n\t  ",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input(trained_nlp, name):
    ner = trained_nlp.get_pipe("ner_plus")
    encoder = ner.model.get_ref("encoder")
    doc = trained_nlp.make_doc(PATHOLOGICAL[name])
    limit = max_sequence_length(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        windows = ner.doc_windows(doc)
        for start, end in windows:
            assert encode_windows(encoder, [doc[start:end]]).input_ids.shape[1] <= limit
        doc = trained_nlp(doc)
    spans = [(e.start, e.end) for e in doc.ents]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    covered = set()
    for start, end in windows:
        covered.update(range(start, end))
    assert covered == set(range(len(doc)))


def test_overlong_tokens_are_cut_with_a_warning(trained_nlp):
    doc = trained_nlp.make_doc(PATHOLOGICAL["base64"] + " unique-" + "+/" * 40)
    with pytest.warns(UserWarning, match="max_wordpieces_per_token"):
        trained_nlp(doc)


def test_a_document_far_longer_than_the_backbone(trained_nlp):
    text = " ".join(["John lives in New York City ."] * 400)  # 2,800 tokens, about 5x 512 wordpieces
    doc = trained_nlp(text)
    ner = trained_nlp.get_pipe("ner_plus")
    assert len(ner.doc_windows(doc)) > 20
    spans = [(e.start, e.end) for e in doc.ents]
    assert len(spans) >= 400 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


ORACLE = {"John": "B-PER", "New": "B-LOC", "York": "I-LOC", "City": "I-LOC"}


class OracleModel:
    """A context-free stand-in for the model: each token's logits depend on its text only,
    so any difference between windowed and whole-document output comes from windowing."""

    def __init__(self, real, tags):
        self.real, self.tags, self.ops = real, tags, real.ops

    def get_ref(self, name):
        return self.real.get_ref(name)

    def predict(self, windows):
        out = []
        for span in windows:
            logits = numpy.full((len(span), len(self.tags)), -4.0, dtype="float32")
            for i, token in enumerate(span):
                logits[i, self.tags.index(ORACLE.get(token.text, "O"))] = 4.0
            out.append(logits)
        return out


@pytest.mark.parametrize("window,stride", [(6, 3), (7, 7), (5, 2), (128, 96)])
def test_entities_on_window_edges_are_recovered(trained_nlp, monkeypatch, window, stride):
    ner = trained_nlp.get_pipe("ner_plus")
    monkeypatch.setattr(ner, "model", OracleModel(ner.model, ner.tags))
    monkeypatch.setattr(ner, "window", window)
    monkeypatch.setattr(ner, "stride", stride)
    doc = trained_nlp.make_doc(" ".join(["John lives in New York City ."] * 30))
    windows = ner.doc_windows(doc)
    edges = {e for w in windows for e in w}
    entities = [(e.start, e.end) for e in trained_nlp(doc).ents]
    cut = [(s, e) for s, e in entities if any(s < edge < e for edge in edges)]
    if window in (5, 6):
        assert cut  # entities really do straddle window edges
    assert [doc[s:e].text for s, e in entities] == ["John", "New York City"] * 30
    assert entities == [(7 * i, 7 * i + 1) if j == 0 else (7 * i + 3, 7 * i + 6) for i in range(30) for j in range(2)]


def test_wordpiece_cache_overflow_keeps_every_word(trained_nlp, monkeypatch):
    from spacy_ner_plus.ml import wordpieces

    encoder = trained_nlp.get_pipe("ner_plus").model.get_ref("encoder")
    expected = wordpieces.word_pieces(encoder, ["alpha", "beta", "gamma", "delta"])
    monkeypatch.setattr(wordpieces, "CACHE_LIMIT", 3)
    wordpieces.piece_state(encoder).data.clear()
    wordpieces.word_pieces(encoder, ["alpha", "beta"])
    # two cached words and two new ones overflow the cache: all four must still come back
    assert wordpieces.word_pieces(encoder, ["alpha", "beta", "gamma", "delta"]) == expected
    wordpieces.piece_state(encoder).data.clear()
