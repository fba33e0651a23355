"""LoRA fine-tuning of the encoder ([components.ner_plus.model.encoder.lora], peft)."""
import json
from pathlib import Path
import subprocess
import sys

import numpy
import pytest
import spacy
import torch
from thinc.api import Adam

from conftest import train_examples
from spacy_ner_plus.ml.inference import eval_view
from spacy_ner_plus.ml.lora import is_adapted, lora_settings, merged_copy
from spacy_ner_plus.ml.transformer import encode_windows, get_transformer, inference_modules

pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}
TEXTS = ["John lives in New York City .", "Mary works for Acme Corp in Paris .", "Acme Corp hired John in Paris ."]


def lora_nlp(merge: bool = True, **lora):
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus", config={"model": {"encoder": {"lora": {**LORA, "merge": merge, **lora}}}})
    examples = train_examples(nlp)
    nlp.initialize(lambda: examples)
    return nlp, examples


def encoder(nlp):
    return nlp.get_pipe("ner_plus").model.get_ref("encoder")


def predictions(nlp):
    out = []
    for doc in nlp.pipe(TEXTS):
        out.append(([(e.start, e.end, e.label_) for e in doc.ents], list(doc.spans["ner_plus"].attrs["scores"])))
    return out


def save(nlp, path, merge: bool) -> None:
    """nlp.to_disk with the encoder's lora.merge set to ``merge`` for this save only."""
    shim = encoder(nlp).layers[0].shims[0]
    shim.lora["merge"] = merge
    try:
        nlp.to_disk(path)
    finally:
        shim.lora["merge"] = True


@pytest.fixture(scope="module")
def trained():
    """A LoRA pipeline trained until its adapters are far from their zero start."""
    nlp, examples = lora_nlp()
    optimizer = Adam(5e-3)
    for _ in range(12):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp


def test_updates_change_only_adapters_head_and_lexical_features():
    nlp, examples = lora_nlp()
    pipe = nlp.get_pipe("ner_plus")
    transformer = get_transformer(encoder(nlp))
    assert is_adapted(transformer)
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    thinc_before = {(id(n), p): n.get_param(p).copy() for n in pipe.model.walk() for p in n.param_names if n.has_param(p)}
    optimizer = Adam(1e-3)
    for _ in range(2):  # B starts at zero, so A has no gradient before B's first step
        nlp.update(examples, sgd=optimizer, drop=0.0)
    after = transformer.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapters = {k for k in before if "lora_" in k}
    assert adapters and changed == adapters  # the frozen backbone is bit-identical
    # the output layer and the lexical embeddings train fully
    for node in pipe.model.walk():
        for name in node.param_names:
            if node.has_param(name) and node.name in ("linear", "hashembed"):
                assert not numpy.array_equal(thinc_before[(id(node), name)], node.get_param(name)), (node.name, name)
    # the optimizer has state for the adapters and thinc's parameters only
    shim_id = encoder(nlp).layers[0].shims[0].id
    torch_keys = [key[1] for key in optimizer.mom1 if key[0] == shim_id]
    assert torch_keys and all("lora_" in key for key in torch_keys)


@pytest.mark.parametrize("merge", [True, False])
def test_save_and_load_give_identical_entities_and_scores(trained, tmp_path, merge):
    save(trained, tmp_path / "nlp", merge)
    loaded = spacy.load(tmp_path / "nlp")
    assert is_adapted(get_transformer(encoder(loaded))) is not merge
    expected = predictions(trained)
    assert any(ents for ents, _ in expected)
    assert predictions(loaded) == expected
    assert loaded.get_pipe("ner_plus").weights_fingerprint() == trained.get_pipe("ner_plus").weights_fingerprint()
    size = sum(f.stat().st_size for f in (tmp_path / "nlp").rglob("*") if f.is_file())
    if merge:
        assert size > 80e6  # the whole transformer
    else:
        assert size < 10e6  # tokenizer, adapter, head


def test_merged_pipeline_loads_and_predicts_without_peft(trained, tmp_path):
    trained.to_disk(tmp_path / "nlp")
    script = (
        "import json, sys; sys.modules['peft'] = None\n"
        "import spacy\n"
        f"nlp = spacy.load({str(tmp_path / 'nlp')!r})\n"
        f"out = [([(e.start, e.end, e.label_) for e in d.ents], list(d.spans['ner_plus'].attrs['scores'])) for d in nlp.pipe({TEXTS!r})]\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = [(list(map(tuple, ents)), scores) for ents, scores in json.loads(proc.stdout.strip().splitlines()[-1])]
    assert loaded == predictions(trained)


def test_merged_weights_equal_the_adapters_to_1e_5(trained):
    enc = encoder(trained)
    transformer = get_transformer(enc)
    merged = merged_copy(transformer).eval()
    base_weight = transformer.base_model.model.encoder.layer[0].attention.self.query.base_layer.weight
    assert not torch.equal(merged.encoder.layer[0].attention.self.query.weight, base_weight)  # adapters moved it
    docs = [trained.make_doc(t) for t in TEXTS]
    batch = encode_windows(enc, [doc[:] for doc in docs])
    inputs = {"input_ids": torch.tensor(batch.input_ids), "attention_mask": torch.tensor(batch.attention_mask)}
    with torch.no_grad():
        unmerged = eval_view(transformer)(**inputs).last_hidden_state
        merged_out = merged(**inputs).last_hidden_state
    assert torch.allclose(unmerged, merged_out, atol=1e-5, rtol=0)


def test_int8_prediction_of_an_adapted_pipe_quantizes_its_merged_copy_only(trained):
    from spacy_ner_plus.ml.transformer import set_quantize

    enc = encoder(trained)
    transformer = get_transformer(enc)
    fp32 = predictions(trained)
    set_quantize(enc, True)
    try:
        int8 = predictions(trained)
        module = inference_modules(enc).module
        assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in module.modules())
        assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in transformer.modules())
        assert is_adapted(transformer)  # the trained module keeps its adapters, unmerged
    finally:
        set_quantize(enc, False)
    assert [ents for ents, _ in int8] == [ents for ents, _ in fp32]
    for (_, a), (_, b) in zip(int8, fp32):
        assert numpy.allclose(a, b, atol=0.05)


def test_an_adapter_refuses_other_backbone_weights(trained, tmp_path):
    save(trained, tmp_path / "nlp", merge=False)
    other = merged_copy(get_transformer(encoder(trained)))  # the backbone with other weights
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="trained on other backbone weights"):
        spacy.load(tmp_path / "nlp", config={"components": {"ner_plus": {"model": {"encoder": {"name": str(tmp_path / "other")}}}}})


def test_lora_settings_are_checked():
    assert lora_settings(None) is None
    assert lora_settings({"r": 16})["alpha"] == 16
    with pytest.raises(ValueError, match="unknown setting"):
        lora_settings({"rank": 8})
    with pytest.raises(ValueError, match="r must be a positive integer"):
        lora_settings({"r": 0})
    with pytest.raises(ValueError, match="dropout"):
        lora_settings({"dropout": 1.5})


def test_without_peft_lora_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"spacy-ner-plus\[lora\]"):
        lora_nlp()


def test_the_lora_config_builds_and_adapts():
    config = spacy.util.load_config(ROOT / "configs" / "ner_plus_lora.cfg", interpolate=True)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = train_examples(nlp)
    nlp.initialize(lambda: examples)
    transformer = get_transformer(encoder(nlp))
    assert is_adapted(transformer)
    trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    assert 0 < trainable < 0.05 * sum(p.numel() for p in transformer.parameters())
