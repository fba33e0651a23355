import json
import os
import subprocess
import sys

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_ner_plus.ml.shim import encoder_shim
from spacy_ner_plus.ml.transformer import encode_windows, get_tokenizer, get_transformer, inference_modules, wordpiece_labels
from spacy_ner_plus.ml.wordpieces import piece_cache

from conftest import TRAIN, train_examples


def make_nlp(**cfg):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus", config=cfg)
    return nlp


examples = train_examples


@pytest.fixture(scope="module")
def trained(trained_nlp):
    return trained_nlp, trained_nlp.meta["final_losses"]


def test_recipe_alignment_exercise():
    nlp = make_nlp()
    ner = nlp.get_pipe("ner_plus")
    nlp.initialize(lambda: examples(nlp))
    encoder = ner.model.get_ref("encoder")
    doc = Doc(nlp.vocab, words=["John", "lives", "in", "New", "York", "City", "."])
    tags = ["B-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    ids = [ner.tags.index(t) for t in tags]
    batch = encode_windows(encoder, [doc[:]])
    pieces = get_tokenizer(encoder).convert_ids_to_tokens(batch.input_ids[0])
    assert pieces == ["[CLS]", "john", "lives", "in", "new", "york", "city", ".", "[SEP]"]
    assert [ner.tags[i] if i >= 0 else -100 for i in wordpiece_labels(encoder, doc[:], ids)] == [-100, *tags, -100]


def test_subword_pieces_get_minus_100_and_no_gradient():
    nlp = make_nlp()
    ner = nlp.get_pipe("ner_plus")
    nlp.initialize(lambda: examples(nlp))
    encoder = ner.model.get_ref("encoder")
    doc = Doc(nlp.vocab, words=["Ingebrigtsen", "visited", "Reykjavik"])
    batch = encode_windows(encoder, [doc[:]])
    pieces = get_tokenizer(encoder).convert_ids_to_tokens(batch.input_ids[0])
    assert len(pieces) > 5  # real subword splits
    labels = wordpiece_labels(encoder, doc[:], [5, 0, 1])
    firsts = [int(p[0]) for p in batch.token_pieces[0]]
    assert [i for i, l in enumerate(labels) if l != -100] == firsts
    assert all(pieces[i].startswith("##") for i, l in enumerate(labels) if l == -100 and pieces[i] not in ("[CLS]", "[SEP]"))
    # The gradient reaches the transformer's output only at first pieces.
    captured = {}
    hf = encoder.layers[0].shims[0]._model

    def hook(module, inputs, output):
        output.last_hidden_state.register_hook(lambda g: captured.setdefault("g", g.clone()))

    handle = hf.register_forward_hook(hook)
    try:
        outputs, backprop = encoder.begin_update([doc[:]])
        backprop([numpy.ones_like(outputs[0])])
    finally:
        handle.remove()
    grad_rows = captured["g"][0].abs().sum(dim=-1).numpy()
    assert sorted(numpy.nonzero(grad_rows)[0].tolist()) == firsts


def test_overfit_then_save_and_load_identical(trained, tmp_path):
    nlp, losses = trained
    assert losses["ner_plus"] < 0.01
    for text, ents in TRAIN:
        doc = nlp(text)
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == ents
        assert all(0.5 < e._.confidence <= 1.0 for e in doc.ents)
        assert list(doc.spans["ner_plus"].attrs["scores"]) == [e._.confidence for e in doc.ents]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("ner_plus").labels == nlp.get_pipe("ner_plus").labels
    assert loaded.get_pipe("ner_plus").cfg["scheme"] == "IOB2"
    texts = [t for t, _ in TRAIN] + ["Anna met Peter in Berlin ."]
    for a, b in zip(nlp.pipe(texts), loaded.pipe(texts)):
        assert [(e.start, e.end, e.label_, e._.confidence) for e in a.ents] == [(e.start, e.end, e.label_, e._.confidence) for e in b.ents]


LONG_TEXT = " ".join(t for t, _ in TRAIN * 25)  # 350 tokens: three windows of 128 / stride 112
TEXTS = [t for t, _ in TRAIN] * 3 + ["Peter flew to London .", "Nothing here .", "", "Acme Corp hired John in New York City .", LONG_TEXT]


def annotations(docs):
    return [[(e.start, e.end, e.label_, e._.confidence) for e in d.ents] for d in docs]


@pytest.mark.parametrize("window_batch_size", [1, 32])
def test_same_entities_and_scores_whatever_the_batch_size(trained, monkeypatch, window_batch_size):
    """With window_batch_size 1 every window runs alone: scores are bit for bit the
    same whatever else is predicted. With the default, windows share forward passes,
    and float32 products of other shapes differ in the last bits (about 1e-6)."""
    nlp, _ = trained
    ner = nlp.get_pipe("ner_plus")
    monkeypatch.setattr(ner, "window_batch_size", window_batch_size)
    assert len(ner.doc_windows(nlp.make_doc(LONG_TEXT))) > 1
    runs = []
    # sort_buffer_tokens 0: batches of batch_size docs; > 0: docs gathered up to that many tokens
    for batch_size, buffer in ((1, 0), (2, 0), (7, 0), (64, 0), (64, 16384), (1, 5), (3, 40)):
        monkeypatch.setattr(ner, "sort_buffer_tokens", buffer)
        docs = list(nlp.pipe(TEXTS, batch_size=batch_size))
        assert [d.text for d in docs] == TEXTS  # order restored
        runs.append(annotations(docs))
    assert any(runs[0])
    for run in runs[1:]:
        if window_batch_size == 1:
            assert run == runs[0]
        else:
            assert [[e[:3] for e in doc] for doc in run] == [[e[:3] for e in doc] for doc in runs[0]]
            for doc_a, doc_b in zip(run, runs[0]):
                for a, b in zip(doc_a, doc_b):
                    assert a[3] == pytest.approx(b[3], abs=1e-5)


def test_windows_within_sentences_predict_a_document_as_its_sentences(trained, monkeypatch):
    """With within_sentences = "windows", a Doc of several sentences gets, bit for bit (one
    window per forward pass), the entities and scores each sentence gets alone;
    without it the windows run across sentences. A Doc without sentence
    boundaries is windowed as a whole either way."""
    nlp, _ = trained
    ner = nlp.get_pipe("ner_plus")
    monkeypatch.setattr(ner, "window_batch_size", 1)
    sentences = [nlp.make_doc(t) for t in ["Peter flew to London .", "Mary works for Acme Corp in Paris .", "John met Anna ."] * 3]
    words = [t.text for s in sentences for t in s]
    starts = [t.i == 0 for s in sentences for t in s]
    offsets = numpy.cumsum([0] + [len(s) for s in sentences])
    alone = [(o + e.start, o + e.end, e.label_, e._.confidence) for o, d in zip(offsets, nlp.pipe(sentences)) for e in d.ents]
    assert alone
    monkeypatch.setattr(ner, "within_sentences", "windows")
    document = nlp(Doc(nlp.vocab, words=words, sent_starts=starts))
    assert ner.doc_windows(document) == list(zip(offsets[:-1], offsets[1:]))
    assert [(e.start, e.end, e.label_, e._.confidence) for e in document.ents] == alone
    assert ner.doc_windows(Doc(nlp.vocab, words=words)) == [(0, len(words))]
    for setting in ("entities", "none"):
        monkeypatch.setattr(ner, "within_sentences", setting)
        assert ner.doc_windows(Doc(nlp.vocab, words=words, sent_starts=starts)) == [(0, len(words))]


def test_to_disk_and_to_bytes_give_identical_entities_and_scores(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    from_disk = spacy.load(tmp_path / "pipeline")
    from_bytes = spacy.blank("en")
    from_bytes.add_pipe("ner_plus")
    from_bytes.from_bytes(nlp.to_bytes())
    expected = annotations(nlp.pipe(TEXTS))
    assert any(len(doc) > 3 for doc in expected)  # the long document has entities in every window
    assert annotations(from_disk.pipe(TEXTS)) == expected
    assert annotations(from_bytes.pipe(TEXTS)) == expected


SETTINGS = {
    "window": 64,
    "stride": 40,
    "window_batch_size": 3,
    "sort_buffer_tokens": 100,
    "quantize": True,
    "spans_key": "other_key",
    "overwrite_ents": True,
    "class_weights": "inverse_frequency",
    "focal_gamma": 1.5,
    "max_grad_norm": 0.5,
}


def test_every_setting_comes_from_the_config_at_load(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    ner = loaded.get_pipe("ner_plus")
    assert {k: getattr(ner, k) for k in SETTINGS} != SETTINGS
    assert not set(SETTINGS) & set(ner.cfg)  # cfg holds learned state only
    for key, value in SETTINGS.items():
        override = {key: value, **({"stride": 40} if key == "window" else {})}  # stride <= window
        ner = spacy.load(tmp_path / "pipeline", config={"components": {"ner_plus": override}}).get_pipe("ner_plus")
        assert getattr(ner, key) == value, key
    changed = spacy.load(tmp_path / "pipeline", config={"components": {"ner_plus": {"window": 64, "stride": 40, "spans_key": "other_key"}}})
    doc = changed(LONG_TEXT)
    assert [w[1] - w[0] for w in changed.get_pipe("ner_plus").doc_windows(doc)][0] == 64
    assert "other_key" in doc.spans and "ner_plus" not in doc.spans
    assert [e._.confidence for e in doc.ents] == list(doc.spans["other_key"].attrs["scores"])


def test_scheme_is_fixed_by_training(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="scheme is fixed by training"):
        spacy.load(tmp_path / "pipeline", config={"components": {"ner_plus": {"scheme": "BIOES"}}})


def test_settings_saved_in_cfg_by_old_versions_are_read_once(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    cfg_path = tmp_path / "pipeline" / "ner_plus" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"window": 128, "stride": 96, "quantize": True, "sort_buffer_tokens": 16384})  # as 0.1.0 wrote them
    cfg_path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match=r"saved by spacy-ner-plus < 0.2.0.*'stride': 96.*'quantize': True"):
        loaded = spacy.load(tmp_path / "pipeline")
    ner = loaded.get_pipe("ner_plus")
    assert (ner.stride, ner.quantize) == (112, False)  # the config decides
    assert "stride" not in ner.cfg and "quantize" not in ner.cfg
    assert annotations(loaded.pipe(TEXTS)) == annotations(nlp.pipe(TEXTS))


THREAD_TEXTS = TEXTS + [LONG_TEXT.replace("Paris", "Berlin"), "Anna met Peter in Berlin ."]


@pytest.mark.parametrize("quantize", [False, True])
def test_eight_threads_give_the_entities_and_scores_of_sequential_calls(trained, tmp_path, quantize):
    from concurrent.futures import ThreadPoolExecutor

    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {"ner_plus": {"quantize": quantize}}})
    one_by_one = [annotations([loaded(t)])[0] for t in THREAD_TEXTS]
    piped = annotations(loaded.pipe(THREAD_TEXTS))
    assert any(one_by_one) and any(len(d) > 3 for d in one_by_one)

    def call(i):
        if i % 2:
            return "pipe", annotations(loaded.pipe(THREAD_TEXTS))
        order = THREAD_TEXTS[i % len(THREAD_TEXTS):] + THREAD_TEXTS[: i % len(THREAD_TEXTS)]
        return "call", [(t, annotations([loaded(t)])[0]) for t in order]

    transformer = get_transformer(loaded.get_pipe("ner_plus").model.get_ref("encoder"))
    mode = transformer.training
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(16)))
    expected = dict(zip(THREAD_TEXTS, one_by_one))
    for kind, result in results:
        if kind == "pipe":
            assert result == piped
        else:
            assert all(ents == expected[t] for t, ents in result)
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in transformer.modules())
    assert transformer.training == mode  # prediction never switched the shared module's mode


def scored(nlp, texts):
    """Entities and calibrated scores of each text, as users read them."""
    return [[(e.start, e.end, e.label_, e._.confidence) for e in doc.ents] + [tuple(doc.spans["ner_plus"].attrs["scores"])] for doc in nlp.pipe(texts)]


@pytest.mark.parametrize("quantize", [False, True])
def test_model_copy_and_deepcopy_predict_like_the_original_and_share_no_lock_or_cache(trained, quantize):
    import copy

    from spacy_ner_plus.ml.transformer import set_quantize

    nlp, _ = trained
    ner = nlp.get_pipe("ner_plus")
    encoder = ner.model.get_ref("encoder")
    texts = THREAD_TEXTS[:4]
    set_quantize(encoder, quantize)
    try:
        expected = scored(nlp, texts)  # fills the original's wordpiece cache and inference module
        assert any(row[:-1] for row in expected)
        windows = ner._windows([nlp.make_doc(t) for t in texts])[0]
        model_copy = ner.model.copy()  # thinc deep-copies attrs: nothing there may hold a lock
        for a, b in zip(ner.model.predict(windows), model_copy.predict(windows)):
            numpy.testing.assert_array_equal(a, b)
        nlp_copy = copy.deepcopy(nlp)
        assert scored(nlp_copy, texts) == expected
        # thinc's Model.copy keeps no refs: find the copied encoder by its name
        copied_encoder = next(node for node in model_copy.walk() if node.name == "hf_token_encoder")
        for other in (copied_encoder, nlp_copy.get_pipe("ner_plus").model.get_ref("encoder")):
            mine, theirs = encoder_shim(encoder), encoder_shim(other)
            assert theirs.pieces is not mine.pieces and theirs.pieces.lock is not mine.pieces.lock
            assert theirs.inference is not mine.inference and theirs.inference.lock is not mine.inference.lock
            assert theirs.inference.quantize is quantize  # the setting is copied, the modules are not
            assert get_transformer(other) is not get_transformer(encoder)
            assert piece_cache(other).state is None or piece_cache(other).state is not piece_cache(encoder).state
        # training the copy changes the copy's predictions only: no shared weights, and no
        # inference module (an int8 copy) or cache of the original answers for the copy
        copy_ner = nlp_copy.get_pipe("ner_plus")
        before_update = scored(nlp_copy, texts)
        nlp_copy.update(examples(nlp_copy), sgd=Adam(1e-2), drop=0.0)
        assert scored(nlp_copy, texts) != before_update
        assert scored(nlp, texts) == expected
        assert copy_ner.weights_fingerprint() != ner.weights_fingerprint()
    finally:
        set_quantize(encoder, False)


def test_entities_set_before_ner_plus_are_kept_and_decoded_around(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "pipeline")
    text = "John lives in New York City ."
    loaded = spacy.load(tmp_path / "pipeline")
    assert [(e.text, e.label_) for e in loaded(text).ents] == [("John", "PER"), ("New York City", "LOC")]
    ruler = loaded.add_pipe("entity_ruler", before="ner_plus")
    ruler.add_patterns([{"label": "CUSTOMER", "pattern": "John"}, {"label": "PLACE", "pattern": "York"}])
    doc = loaded(text)
    assert [(e.text, e.label_) for e in doc.ents if e.label_ in ("CUSTOMER", "PLACE")] == [("John", "CUSTOMER"), ("York", "PLACE")]
    predicted = [(s.start, s.end, s.label_) for s in doc.spans["ner_plus"]]
    assert all(not (s < 1 and 0 < e) and not (s < 5 and 4 < e) for s, e, _ in predicted)  # no overlap with tokens 0 and 4
    assert all(label in ("PER", "LOC", "ORG") for *_, label in predicted)
    assert [e._.confidence for e in doc.ents if e.label_ == "CUSTOMER"] == [None]
    overwrite = spacy.load(tmp_path / "pipeline", config={"components": {"ner_plus": {"overwrite_ents": True}}})
    overwrite.add_pipe("entity_ruler", before="ner_plus").add_patterns([{"label": "CUSTOMER", "pattern": "John"}])
    assert [(e.text, e.label_) for e in overwrite(text).ents] == [("John", "PER"), ("New York City", "LOC")]


def test_whitespace_tokens_never_start_or_end_an_entity(trained):
    nlp, _ = trained
    doc = nlp("John lives in New York City .\n\nMary works for Acme Corp in Paris .  ")
    spaces = [t.i for t in doc if t.is_space]
    assert spaces
    for group in (doc.ents, doc.spans["ner_plus"]):
        assert all(not doc[s.start].is_space and not doc[s.end - 1].is_space for s in group)


def test_training_or_initializing_drops_the_calibration_and_evaluate_knows_stale_ones(tmp_path):
    from spacy_ner_plus.calibration import Calibrator
    from spacy_ner_plus.pipeline.ner_plus import stale_calibrations

    nlp = make_nlp()
    exs = examples(nlp)
    nlp.initialize(lambda: exs)
    ner = nlp.get_pipe("ner_plus")
    ner.set_calibration({"PER": Calibrator("temperature", 2.0)}, {"PER": 0.5, "LOC": 0.3})
    assert stale_calibrations(nlp) == []
    nlp.to_disk(tmp_path / "calibrated")
    loaded = spacy.load(tmp_path / "calibrated")
    assert stale_calibrations(loaded) == []
    assert loaded.get_pipe("ner_plus").cfg["calibration_weights"] == ner.cfg["calibration_weights"]
    # weights changed behind the calibration's back (e.g. another checkpoint's weights copied in)
    output = loaded.get_pipe("ner_plus").model.get_ref("output")
    output.set_param("b", output.get_param("b") + 0.1)
    assert len(stale_calibrations(loaded)) == 1 and "fitted to other weights" in stale_calibrations(loaded)[0]
    with pytest.warns(UserWarning, match="calibration and thresholds dropped"):
        nlp.update(exs, sgd=Adam(1e-3))
    assert ner.cfg["calibration"] == {} and ner.cfg["thresholds"] == {}
    ner.set_calibration({}, {"PER": 0.5})
    with pytest.warns(UserWarning, match="calibration and thresholds dropped"):
        nlp.initialize(lambda: exs)
    assert ner.cfg["thresholds"] == {}
    with pytest.raises(ValueError, match="does not predict"):
        ner.set_calibration({}, {"DATE": 0.5})


def test_long_doc_is_windowed_and_decoded_once():
    nlp = make_nlp(window=6, stride=3)
    exs = examples(nlp)
    nlp.initialize(lambda: exs)
    optimizer = Adam(1e-3)
    for _ in range(40):
        nlp.update(exs, sgd=optimizer)
    ner = nlp.get_pipe("ner_plus")
    doc = nlp.make_doc(" ".join(t for t, _ in TRAIN * 3))
    assert len(ner.doc_windows(doc)) > 3
    doc = nlp(doc)
    spans = [(e.start, e.end) for e in doc.ents]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert [e.text for e in doc.ents if e.label_ == "LOC"].count("New York City") == 3


def test_missing_annotation_is_ignored_by_the_loss():
    nlp = make_nlp()
    ner = nlp.get_pipe("ner_plus")
    nlp.initialize(lambda: examples(nlp))
    doc = nlp.make_doc("John lives in Rome")
    eg = Example.from_dict(doc, {"entities": ["U-PER", "-", "-", "U-LOC"]})
    ids = ner.gold_tag_ids(eg)
    assert ids[1] == ids[2] == -1 and ner.tags[ids[0]] == "B-PER" and ner.tags[ids[3]] == "B-LOC"
    windows, owners, _ = ner._windows([doc])
    scores = ner.model.predict(windows)
    _, grads = ner._window_loss([eg], owners, scores)
    assert numpy.all(grads[0][1:3] == 0) and numpy.any(grads[0][0] != 0)


def test_update_in_passes_of_window_batch_size_equals_one_pass():
    """A batch of whole documents runs in passes of window_batch_size windows (memory bounded
    by it): the loss and the weights after the update are those of one pass over all windows."""
    results = {}
    # no dropout inside the transformer either: its masks would differ with the passes' shapes
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    for size in (100, 1):
        nlp = make_nlp(window=8, stride=6, window_batch_size=size, model={"encoder": {"transformer_config": no_dropout}})
        ner = nlp.get_pipe("ner_plus")
        fix_random_seed(0)
        exs = examples(nlp)
        nlp.initialize(lambda: exs)
        # two long docs: the training examples' words joined, with their entities
        words = [t.text for eg in exs for t in eg.reference]
        ents = [tag for eg in exs for tag in eg.get_aligned_ner()]
        long_eg = Example.from_dict(Doc(nlp.vocab, words=words), {"entities": ents})
        windows, _, _ = ner._windows([long_eg.predicted, exs[0].predicted])
        assert len(windows) >= 3  # several passes of one window
        losses = {}
        ner.update([long_eg, exs[0]], drop=0.0, sgd=Adam(0.001), losses=losses)
        results[size] = (losses["ner_plus"], [p.detach().clone() for p in encoder_shim(ner.model.get_ref("encoder")).hf.transformer.parameters()])
    assert results[1][0] == pytest.approx(results[100][0], rel=1e-5)
    for a, b in zip(results[1][1], results[100][1]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("gamma,weights", [(0.0, "none"), (2.0, "none"), (2.0, {"PER": 3.0})])
def test_loss_gradient_matches_finite_differences(gamma, weights):
    nlp = make_nlp(focal_gamma=gamma, class_weights=weights)
    ner = nlp.get_pipe("ner_plus")
    exs = examples(nlp)
    nlp.initialize(lambda: exs)
    _, owners, _ = ner._windows([eg.predicted for eg in exs])
    rng = numpy.random.RandomState(0)
    scores = [rng.normal(size=(e - s, len(ner.tags))).astype("float64") for _, s, e in owners]
    loss, grads = ner._window_loss(exs, owners, scores)
    eps = 1e-5
    for w, t, k in [(0, 0, 5), (0, 3, 1), (1, 2, 0), (1, 4, 3)]:
        bumped = [s.copy() for s in scores]
        bumped[w][t, k] += eps
        numeric = (ner._window_loss(exs, owners, bumped)[0] - loss) / eps
        assert numeric == pytest.approx(float(grads[w][t, k]), rel=1e-3, abs=1e-5)


def test_inverse_frequency_weights_and_labels_argument():
    nlp = make_nlp(class_weights="inverse_frequency", scheme="BIOES")
    ner = nlp.get_pipe("ner_plus")
    nlp.initialize(lambda: examples(nlp), )
    weights = dict(zip(ner.tags, ner.cfg["tag_weights"]))
    assert weights["O"] < weights["B-PER"]
    nlp_sqrt = make_nlp(class_weights="sqrt_inverse_frequency", scheme="BIOES")
    nlp_sqrt.initialize(lambda: examples(nlp_sqrt))
    sqrt = dict(zip(ner.tags, nlp_sqrt.get_pipe("ner_plus").cfg["tag_weights"]))
    # the same order, a smaller spread; the average weight per gold token stays 1 in both
    assert sqrt["O"] < sqrt["B-PER"] and sqrt["B-PER"] / sqrt["O"] == pytest.approx((weights["B-PER"] / weights["O"]) ** 0.5)
    counts = numpy.zeros(len(ner.tags))
    for eg in examples(nlp):
        ids = ner.gold_tag_ids(eg)
        counts += numpy.bincount(ids[ids >= 0], minlength=len(ner.tags))
    for w in (weights, sqrt):
        assert sum(w[t] * c for t, c in zip(ner.tags, counts)) == pytest.approx(counts.sum())
    nlp2 = make_nlp()
    nlp2.get_pipe("ner_plus").initialize(lambda: examples(nlp2), nlp=nlp2, labels=["LOC", "ORG", "PER", "DATE"])
    assert nlp2.get_pipe("ner_plus").labels == ("LOC", "ORG", "PER", "DATE")


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="stride"):
        make_nlp(window=4, stride=8)
    with pytest.raises(ValueError, match="class_weights"):
        make_nlp(class_weights="balanced")
    with pytest.raises(ValueError, match="sort_buffer_tokens"):
        make_nlp(sort_buffer_tokens=-1)
    nlp = make_nlp()
    with pytest.raises(ValueError, match="no entity labels"):
        nlp.initialize(lambda: [Example.from_dict(nlp.make_doc("no ents"), {})])


def test_factory_registered_by_entry_point():
    from importlib.metadata import entry_points

    factories = {ep.name for ep in entry_points(group="spacy_factories")}
    assert "ner_plus" in factories


def test_int8_quantization_is_saved_and_close_to_fp32(trained, tmp_path):
    from typer.testing import CliRunner

    from spacy_ner_plus.cli import app

    nlp, _ = trained
    nlp.to_disk(tmp_path / "fp32")
    result = CliRunner().invoke(app, ["quantize", str(tmp_path / "fp32"), str(tmp_path / "int8")])
    assert result.exit_code == 0, result.output
    int8 = spacy.load(tmp_path / "int8")
    ner = int8.get_pipe("ner_plus")
    assert ner.quantize is True
    texts = [t for t, _ in TRAIN]
    fp32_docs, int8_docs = list(nlp.pipe(texts)), list(int8.pipe(texts))
    inference = inference_modules(ner.model.get_ref("encoder"))
    assert inference.module is not None  # the int8 copy was used
    qlinears = [m for m in inference.module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert qlinears and all(m.weight().qscheme() == torch.per_channel_affine for m in qlinears)
    source = get_transformer(ner.model.get_ref("encoder"))  # quantized in a copy, the stored weights untouched
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in source.modules())
    for a, b in zip(fp32_docs, int8_docs):
        assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
        for x, y in zip(a.ents, b.ents):
            assert x._.confidence == pytest.approx(y._.confidence, abs=0.05)
    # the stored weights stay fp32: saving the int8 pipeline again loses nothing
    int8.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    assert [(e.text, e._.confidence) for e in again(texts[0]).ents] == [(e.text, e._.confidence) for e in int8(texts[0]).ents]


N_PROCESS_SCRIPT = """
import json, sys
import spacy, torch
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])
torch.set_num_threads(2)
def ents(docs):
    return [[(e.start, e.end, e.label_, e._.confidence) for e in d.ents] for d in docs]
one = ents(nlp.pipe(texts))  # the parent's torch thread pool runs before the fork
two = ents(nlp.pipe(texts, n_process=2, batch_size=3))
print(json.dumps([one, two]))
"""


def test_n_process_2_does_not_hang_and_gives_the_same_entities(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path / "model")
    texts = [t for t, _ in TRAIN] * 2 + ["Peter flew to London .", ""]
    # without the component's one-thread-after-fork rule the forked workers never answer
    proc = subprocess.run(
        [sys.executable, "-c", N_PROCESS_SCRIPT, str(tmp_path / "model"), json.dumps(texts)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any(one) and [[e[:3] for e in d] for d in two] == [[e[:3] for e in d] for d in one]
    for doc_a, doc_b in zip(one, two):
        for a, b in zip(doc_a, doc_b):
            assert a[3] == pytest.approx(b[3], abs=1e-5)


FORK_SCRIPT = """
import json, multiprocessing, os, sys
import torch
torch.set_num_threads(2)
import spacy_ner_plus  # noqa: F401
# the package imports lazily: import what a loaded pipeline imports (the pipe and its layers)
import spacy_ner_plus.pipeline.ner_plus, spacy_ner_plus.ml.architectures  # noqa: F401,E401
torch.ones(256, 256) @ torch.ones(256, 256)  # the parent's thread pool runs before the fork

def child(queue):
    queue.put([torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM")])

ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
proc = ctx.Process(target=child, args=(queue,))
proc.start()
print(json.dumps([torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM"), queue.get(timeout=60)]))
proc.join(60)
"""


def test_importing_the_package_changes_no_forked_process():
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parent_threads, parent_env, (child_threads, child_env) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (parent_threads, child_threads) == (2, 2)
    assert parent_env is None and child_env is None


def test_word_pieces_match_the_tokenizer_and_follow_a_new_tokenizer():
    from transformers import AutoTokenizer

    from spacy_ner_plus.ml.backbone import embedded_backbone_path
    from spacy_ner_plus.ml.transformer import word_pieces

    nlp = make_nlp()
    nlp.initialize(lambda: examples(nlp))
    encoder = nlp.get_pipe("ner_plus").model.get_ref("encoder")
    words = ["Ingebrigtsen", "naïve", "Zürich", "\u200b", "3.5%", "U.S.", "co-operate", "😀"]
    tokenizer = get_tokenizer(encoder)
    expected = tokenizer([[w] for w in words], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    expected = [ids or [tokenizer.unk_token_id] for ids in expected]
    assert word_pieces(encoder, words) == expected  # the Rust fast path gives the wrapper's ids
    # a tokenizer whose backend pads takes the wrapper's path, with the same result
    padded = AutoTokenizer.from_pretrained(str(embedded_backbone_path()))
    padded.backend_tokenizer.enable_padding(length=8)
    padded.backend_tokenizer.enable_truncation(max_length=1)
    encoder_shim(encoder).hf.tokenizer = padded
    assert piece_cache(encoder).state.data  # filled by the first tokenizer ...
    assert word_pieces(encoder, words[:2]) == expected[:2]
    assert set(piece_cache(encoder).state.data) == set(words[:2])  # ... and emptied for the new one
    assert word_pieces(encoder, words[2:]) == expected[2:]  # later calls: no padding, no truncation


def test_bioes_with_mean_pooling_trains_and_round_trips(tmp_path):
    from thinc.api import Config

    from spacy_ner_plus.pipeline.ner_plus import DEFAULT_MODEL_CONFIG

    model = Config().from_str(DEFAULT_MODEL_CONFIG.replace('pooling = "first"', 'pooling = "mean"'))["model"]
    spacy.util.fix_random_seed(0)
    nlp = make_nlp(scheme="BIOES", model=model)
    ner = nlp.get_pipe("ner_plus")
    exs = examples(nlp)
    nlp.initialize(lambda: exs)
    assert ner.model.get_ref("encoder").attrs["pooling"] == "mean"
    assert "S-PER" in ner.tags and "E-LOC" in ner.tags
    optimizer = Adam(1e-3)
    for _ in range(40):
        losses = nlp.update(exs, sgd=optimizer)
    assert losses["ner_plus"] < 0.05
    for text, ents in TRAIN:
        assert [(e.start_char, e.end_char, e.label_) for e in nlp(text).ents] == ents
    nlp.to_disk(tmp_path / "bioes")
    loaded = spacy.load(tmp_path / "bioes")
    assert loaded.get_pipe("ner_plus").cfg["scheme"] == "BIOES"
    assert annotations(loaded.pipe(TEXTS)) == annotations(nlp.pipe(TEXTS))


def test_join_touching_reads_touching_pieces_as_one_entity_and_a_calibration_in_the_other_mode_is_stale(tmp_path, monkeypatch):
    from spacy_ner_plus.pipeline import ner_plus as pipeline_component
    from spacy_ner_plus.pipeline.ner_plus import stale_calibrations

    nlp = make_nlp()
    nlp.initialize(lambda: examples(nlp))
    ner = nlp.get_pipe("ner_plus")
    tags = ner.tags
    # "Ann Lee lives here": the model cuts the name in two (B-PER B-PER)
    probs = numpy.full((4, len(tags)), 0.01)
    for t, tag, p in [(0, "B-PER", 0.8), (1, "B-PER", 0.6), (1, "I-PER", 0.3), (2, "O", 0.9), (3, "O", 0.9)]:
        probs[t, tags.index(tag)] = p
    probs /= probs.sum(axis=1, keepdims=True)
    monkeypatch.setattr(pipeline_component.windowing, "merge_windows", lambda ranges, parts, n: probs)
    doc = nlp("Ann Lee lives here")
    assert [(e.text, e.label_) for e in doc.ents] == [("Ann", "PER"), ("Lee", "PER")]
    ner.set_calibration({}, {"PER": 0.0})
    assert stale_calibrations(nlp) == []
    ner.join_touching = True
    doc = nlp("Ann Lee lives here")
    assert [(e.text, e.label_) for e in doc.ents] == [("Ann Lee", "PER")]
    per = [tags.index(t) for t in tags if t.endswith("-PER")]
    q = probs[:, per].sum(axis=1)
    assert abs(doc.ents[0]._.confidence - q[0] * q[1] * (1 - q[2])) < 1e-6
    assert len(stale_calibrations(nlp)) == 1 and "join_touching = False" in stale_calibrations(nlp)[0]
    ner.set_calibration({}, {"PER": 0.0})
    assert stale_calibrations(nlp) == []
    nlp.to_disk(tmp_path / "joined")
    # a setting comes from the config: the attribute set above is not saved
    loaded = spacy.load(tmp_path / "joined")
    assert not loaded.get_pipe("ner_plus").join_touching
    assert "join_touching = True" in stale_calibrations(loaded)[0]
    joined = spacy.load(tmp_path / "joined", config={"components": {"ner_plus": {"join_touching": True}}})
    assert joined.get_pipe("ner_plus").join_touching and stale_calibrations(joined) == []
