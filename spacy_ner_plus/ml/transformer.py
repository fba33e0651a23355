"""A Hugging Face encoder that maps windows (Spans) to one vector per spaCy token.

Each spaCy token is split into wordpieces on its own (ml/wordpieces.py), so
the alignment between tokens and wordpieces is exact by construction: the
token's vector is its first wordpiece's (``pooling = "first"``, the -100
recipe: the loss and the prediction see only first subwords) or the mean of
its wordpieces (``pooling = "mean"``).

The HF model, tokenizer and weights live in the encoder's shim (ml/shim.py,
spacy-transformers' ``HFShim``), which serializes them with the pipeline, so a
trained pipeline loads offline. With ``lora`` set, ``initialize`` wraps the
transformer in LoRA adapters (ml/lora.py).

Prediction (``is_train=False``) is safe to run from several threads at once:
it never goes through the shim's ``predict`` but runs the shim's inference
module (ml/inference.py: an eval-mode view, or an int8 or merged copy, built
once under a lock), or with ``runtime = "onnxruntime"`` the pipe's ONNX export
(ml/onnx_runtime.py: one ONNX Runtime session per process). ``model.attrs``
holds only settings; the locks and caches
live on the shim, so ``Model.copy`` and ``copy.deepcopy`` work and the copy
shares neither with the original.
"""
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from spacy.tokens import Span
from spacy_transformers.layers.transformer_model import huggingface_from_pretrained
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.types import Floats2d

from ._private import unloaded_hf_objects
from .inference import InferenceModules
from .lora import lora_settings
from .shim import EncoderShim, encoder_shim, get_tokenizer, get_transformer
from .wordpieces import (  # noqa: F401  (re-exported: bench/ and tests import them from here)
    WordpieceBatch,
    encode_windows,
    max_sequence_length,
    n_special_tokens,
    word_pieces,
    wordpiece_labels,
)

__all__ = [
    "HFTokenEncoder",
    "get_tokenizer",
    "get_transformer",
    "set_quantize",
    "set_runtime",
    "invalidate_inference",
    "inference_modules",
    "encode_windows",
    "max_sequence_length",
    "n_special_tokens",
    "word_pieces",
    "wordpiece_labels",
]


def HFTokenEncoder(
    name: str,
    pooling: str = "first",
    max_wordpieces_per_token: int = 16,
    tokenizer_config: Optional[Dict] = None,
    transformer_config: Optional[Dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[Dict] = None,
    lora: Optional[Dict[str, Any]] = None,
) -> Model[List[Span], List[Floats2d]]:
    if pooling not in ("first", "mean"):
        raise ValueError(f"pooling must be 'first' or 'mean', not '{pooling}'")
    settings = lora_settings(lora)
    hf = unloaded_hf_objects(tokenizer_config or {}, transformer_config or {})
    # spacy-transformers' HFWrapper, with a shim that knows how to save adapters
    shim = EncoderShim(hf, name, settings, mixed_precision=mixed_precision, grad_scaler_config=dict(grad_scaler_config or {}))
    wrapper = Model(
        "hf-pytorch",
        pytorch_forward,
        attrs={"convert_inputs": _convert_inputs, "convert_outputs": _convert_outputs},
        shims=[shim],
        dims={"nI": None, "nO": None},
    )
    return Model(
        "hf_token_encoder",
        forward,
        init=init,
        layers=[wrapper],
        dims={"nO": None},
        attrs={
            "name": name,
            "pooling": pooling,
            "max_wordpieces_per_token": max_wordpieces_per_token,
            "mixed_precision": mixed_precision,
        },
    )


def inference_modules(model: Model) -> InferenceModules:
    """What an HFTokenEncoder predicts with (see ml/inference.py)."""
    return encoder_shim(model).inference


def set_quantize(model: Model, quantize: bool) -> None:
    """Predict with an int8 copy of the transformer's linear layers (CPU only)."""
    inference = inference_modules(model)
    inference.quantize = bool(quantize)
    inference.invalidate()


def set_runtime(model: Model, runtime: str, export: Optional[Any] = None) -> None:
    """Predict with torch ("torch") or with the ONNX export ``export`` ("onnxruntime";
    an onnx_runtime.OnnxEncoder, None when the pipe has none)."""
    inference = inference_modules(model)
    inference.runtime = runtime
    inference.onnx = export


def invalidate_inference(model: Model) -> None:
    """The weights changed (an update): drop a quantized copy made from the old ones."""
    inference_modules(model).invalidate()


def init(model: Model, X: Optional[List[Span]] = None, Y=None) -> None:
    shim = encoder_shim(model)
    shim.load_pretrained(huggingface_from_pretrained)
    shim.adapt()
    model.set_dim("nO", shim.hf.transformer.config.hidden_size)


def forward(model: Model, windows: List[Span], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    batch = encode_windows(model, windows)
    if is_train:
        hidden, backprop_hidden = model.layers[0](batch, is_train)
    else:
        hidden, backprop_hidden = _predict_hidden(model, batch), None
    xp = model.ops.xp
    pooling = model.attrs["pooling"]
    outputs: List[Floats2d] = []
    for b, positions in enumerate(batch.token_pieces):
        if pooling == "first":
            index = xp.asarray([p[0] for p in positions], dtype="int64")
            outputs.append(hidden[b, index])
        else:
            outputs.append(xp.stack([hidden[b, xp.asarray(p)].mean(axis=0) for p in positions]) if positions else hidden[b, :0])

    def backprop(d_outputs: List[Floats2d]) -> List[Span]:
        if backprop_hidden is None:
            raise ValueError("HFTokenEncoder: no gradient of a prediction (is_train=False)")
        d_hidden = xp.zeros_like(hidden)
        for b, (positions, d_out) in enumerate(zip(batch.token_pieces, d_outputs)):
            if pooling == "first":
                index = xp.asarray([p[0] for p in positions], dtype="int64")
                d_hidden[b, index] = d_out
            else:
                for t, p in enumerate(positions):
                    d_hidden[b, xp.asarray(p)] = d_out[t] / len(p)
        backprop_hidden(d_hidden)
        return windows

    return outputs, backprop


def _predict_hidden(model: Model, batch: WordpieceBatch):
    """Last hidden states of a batch from the inference module (see ml/inference.py)."""
    inference = inference_modules(model)
    if inference.runtime == "onnxruntime":
        if inference.onnx is None:
            raise ValueError(
                'runtime = "onnxruntime" needs an ONNX export of the encoder, read when the pipeline is loaded from '
                "a directory: run `python -m spacy_ner_plus export-onnx PIPELINE_DIR` and load it with spacy.load"
            )
        return model.ops.asarray(inference.onnx.run(batch.input_ids, batch.attention_mask, inference.quantize))
    transformer = get_transformer(model)
    if transformer is None:
        raise ValueError("HFTokenEncoder: the transformer is not loaded; initialize the pipeline or load a trained one")
    module = inference.get(transformer)
    device = next(transformer.parameters()).device
    mixed = device.type == "cuda" and model.attrs["mixed_precision"]
    with torch.no_grad(), torch.autocast(device_type="cuda", enabled=mixed):
        output = module(
            input_ids=xp2torch(model.ops.asarray(batch.input_ids), device=device),
            attention_mask=xp2torch(model.ops.asarray(batch.attention_mask), device=device),
        )
    return torch2xp(output.last_hidden_state.float())


def _convert_inputs(model: Model, batch: WordpieceBatch, is_train: bool):
    # `model` is the hf-pytorch wrapper layer: its one shim is the EncoderShim
    device = model.shims[0].hf.transformer.device
    kwargs = {
        "input_ids": xp2torch(model.ops.asarray(batch.input_ids), device=device),
        "attention_mask": xp2torch(model.ops.asarray(batch.attention_mask), device=device),
    }
    return ArgsKwargs(args=(), kwargs=kwargs), lambda d: []


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, output = inputs_outputs
    hidden_torch = output.last_hidden_state
    hidden = torch2xp(hidden_torch)

    def backprop(d_hidden) -> ArgsKwargs:
        return ArgsKwargs(args=(hidden_torch,), kwargs={"grad_tensors": (xp2torch(d_hidden, device=hidden_torch.device),)})

    return hidden, backprop
