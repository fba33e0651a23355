"""A Hugging Face encoder that maps windows (Spans) to one vector per spaCy token.

Each spaCy token is split into wordpieces on its own (as
``is_split_into_words=True`` does; RoBERTa-style tokenizers need
``add_prefix_space: true`` in ``tokenizer_config``), so the alignment between
tokens and wordpieces is exact by construction: the token's vector is its
first wordpiece's (``pooling = "first"``, the -100 recipe: the loss and the
prediction see only first subwords) or the mean of its wordpieces
(``pooling = "mean"``).

The HF model, tokenizer and weights live in spacy-transformers' ``HFShim``,
which serializes them with the pipeline, so a trained pipeline loads offline.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import warnings

import numpy
from spacy.tokens import Span
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers.hf_wrapper import HFWrapper
from spacy_transformers.layers.transformer_model import huggingface_from_pretrained
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.types import Floats2d, Ints1d

_CACHE_LIMIT = 200_000


class PieceCache:
    """Word -> wordpiece ids, and the tokenizer's special tokens, for one
    tokenizer. Not a dict on purpose: thinc serializes msgpack-able attrs with
    the model, and this cache must not be saved."""

    def __init__(self) -> None:
        self.data: Dict[str, List[int]] = {}
        self.tokenizer = None
        self.specials: Tuple[List[int], List[int]] = ([], [])
        self.limit = 0


def _cache(model: Model) -> PieceCache:
    """The model's cache, emptied whenever the tokenizer object changed
    (initialize or from_disk put in a new one)."""
    cache = model.attrs["piece_cache"]
    tokenizer = get_tokenizer(model)
    if cache.tokenizer is not tokenizer:
        probe = tokenizer.build_inputs_with_special_tokens([-1])
        cut = probe.index(-1)
        if tokenizer.build_inputs_with_special_tokens([-1, -2]) != probe[:cut] + [-1, -2] + probe[cut + 1 :]:
            raise ValueError(
                f"{type(tokenizer).__name__} does not frame a sequence as fixed special tokens "
                "before and after it; HFTokenEncoder cannot align its wordpieces"
            )
        cache.data.clear()
        cache.tokenizer = tokenizer
        cache.specials = (probe[:cut], probe[cut + 1 :])
        cache.limit = _max_sequence_length(model)
    return cache


class WordpieceBatch:
    """Padded wordpiece ids of a batch of windows and, per token, where its pieces are."""

    def __init__(self, input_ids: numpy.ndarray, attention_mask: numpy.ndarray, token_pieces: List[List[Ints1d]]):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        # token_pieces[b][t]: positions (in row b) of token t's wordpieces
        self.token_pieces = token_pieces


def HFTokenEncoder(
    name: str,
    pooling: str = "first",
    max_wordpieces_per_token: int = 16,
    tokenizer_config: Dict = {},
    transformer_config: Dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: Dict = {},
) -> Model[List[Span], List[Floats2d]]:
    if pooling not in ("first", "mean"):
        raise ValueError(f"pooling must be 'first' or 'mean', not '{pooling}'")
    hf = HFObjects(None, None, None, dict(tokenizer_config), dict(transformer_config))
    wrapper = HFWrapper(
        hf,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        mixed_precision=mixed_precision,
        grad_scaler_config=dict(grad_scaler_config),
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
            "piece_cache": PieceCache(),
        },
    )


def get_tokenizer(model: Model):
    return model.layers[0].shims[0]._hfmodel.tokenizer


def max_sequence_length(model: Model) -> int:
    """The most wordpieces one window may hold, special tokens included."""
    return _cache(model).limit


def _max_sequence_length(model: Model) -> int:
    hf = model.layers[0].shims[0]._hfmodel
    limits = [hf.transformer.config.max_position_embeddings]
    tok_limit = getattr(hf.tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 100_000:
        limits.append(tok_limit)
    if getattr(hf.transformer.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits.append(hf.transformer.config.max_position_embeddings - 2)
    return min(limits)


def n_special_tokens(model: Model) -> int:
    prefix, suffix = _cache(model).specials
    return len(prefix) + len(suffix)


def word_pieces(model: Model, words: Sequence[str]) -> List[List[int]]:
    """Wordpiece ids of each word, cached; never empty, at most the configured maximum.

    A word the tokenizer turns into nothing (whitespace, control characters)
    becomes the unknown token, so every spaCy token has a vector.
    """
    cache = _cache(model).data
    missing = list({w for w in words if w not in cache})
    if missing and len(cache) + len(missing) > _CACHE_LIMIT:
        # start afresh; every word of this call is then missing
        cache.clear()
        missing = list(dict.fromkeys(words))
    if missing:
        tokenizer = get_tokenizer(model)
        limit = model.attrs["max_wordpieces_per_token"]
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.padding is None and backend.truncation is None:
            # the Rust tokenizer itself: the same ids without the wrapper's per-word dicts.
            # A backend set to pad or truncate (the embedded backbone's tokenizer.json pads
            # to 128) goes through the wrapper once, which switches both off for its call.
            batch = backend.encode_batch([[w] for w in missing], is_pretokenized=True, add_special_tokens=False)
            encoded = [e.ids for e in batch]
        else:
            encoded = tokenizer([[w] for w in missing], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        n_cut = 0
        for word, ids in zip(missing, encoded):
            if not ids:
                ids = [tokenizer.unk_token_id]
            elif len(ids) > limit:
                ids = ids[:limit]
                n_cut += 1
            cache[word] = list(ids)
        if n_cut:
            warnings.warn(
                f"{n_cut} token(s) split into more than {limit} wordpieces were cut to "
                f"{limit} (max_wordpieces_per_token)"
            )
    return [cache[w] for w in words]


def encode_windows(model: Model, windows: Sequence[Span]) -> WordpieceBatch:
    cache = _cache(model)
    prefix, suffix = cache.specials
    rows: List[List[int]] = []
    token_pieces: List[List[Ints1d]] = []
    offset = len(prefix)
    limit = cache.limit
    for span in windows:
        pieces = word_pieces(model, [t.text for t in span])
        ids = prefix + [i for p in pieces for i in p] + suffix
        if len(ids) > limit:
            raise ValueError(
                f"window of {len(span)} tokens has {len(ids)} wordpieces, more than the "
                f"backbone's {limit}: lower the window size or max_wordpieces_per_token"
            )
        positions = []
        start = offset
        for p in pieces:
            positions.append(numpy.arange(start, start + len(p), dtype="int64"))
            start += len(p)
        rows.append(ids)
        token_pieces.append(positions)
    width = max((len(r) for r in rows), default=0)
    pad = get_tokenizer(model).pad_token_id or 0
    input_ids = numpy.full((len(rows), width), pad, dtype="int64")
    mask = numpy.zeros((len(rows), width), dtype="int64")
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return WordpieceBatch(input_ids, mask, token_pieces)


def init(model: Model, X: Optional[List[Span]] = None, Y=None) -> None:
    shim = model.layers[0].shims[0]
    if shim._hfmodel.transformer is None:
        hf = huggingface_from_pretrained(
            model.attrs["name"], dict(shim._hfmodel._init_tokenizer_config), dict(shim._hfmodel._init_transformer_config)
        )
        shim._model = hf.transformer
        shim._hfmodel = HFObjects(hf.tokenizer, hf.transformer, hf.vocab_file_contents)
    model.set_dim("nO", shim._hfmodel.transformer.config.hidden_size)


def forward(model: Model, windows: List[Span], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    batch = encode_windows(model, windows)
    hidden, backprop_hidden = model.layers[0](batch, is_train)
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


def _convert_inputs(model: Model, batch: WordpieceBatch, is_train: bool):
    device = model.shims[0]._hfmodel.transformer.device
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


def wordpiece_labels(model: Model, window: Span, labels: Sequence[int], ignore: int = -100) -> List[int]:
    """The recipe's per-wordpiece label row for one window: each token's label on
    its first wordpiece, ``ignore`` (-100) on special tokens and non-first pieces.

    This is the alignment the encoder uses: with ``pooling = "first"`` only
    the wordpieces carrying a label reach the output layer and the loss.
    """
    batch = encode_windows(model, [window])
    row = [ignore] * int(batch.attention_mask[0].sum())
    for positions, label in zip(batch.token_pieces[0], labels):
        row[int(positions[0])] = label
    return row
