"""spaCy tokens to wordpieces, exactly aligned: the encoder's input.

Each spaCy token is split into wordpieces on its own (as
``is_split_into_words=True`` does; RoBERTa-style tokenizers need
``add_prefix_space: true`` in ``tokenizer_config``), so the alignment between
tokens and wordpieces is exact by construction. A word -> ids cache per
tokenizer saves the tokenizer calls; it is only ever replaced, never cleared
under a reader, so it is safe from several threads (it lives on the encoder's
shim, see ml/shim.py).
"""
from typing import Dict, List, Sequence, Tuple
import warnings

import numpy
from spacy.tokens import Span
from thinc.api import Model
from thinc.types import Ints1d

from .shim import PieceCache, encoder_shim, get_tokenizer

CACHE_LIMIT = 200_000


class PieceState:
    """What the encoder knows about one tokenizer: its special tokens, the
    sequence limit, a word -> wordpiece ids cache and, for a fast tokenizer,
    a private copy of its Rust backend with padding and truncation off (so no
    call ever switches them on the shared tokenizer)."""

    def __init__(self, tokenizer, specials: Tuple[List[int], List[int]], limit: int, backend) -> None:
        self.tokenizer = tokenizer
        self.specials = specials
        self.limit = limit
        self.backend = backend
        self.data: Dict[str, List[int]] = {}


class WordpieceBatch:
    """Padded wordpiece ids of a batch of windows and, per token, where its pieces are."""

    def __init__(self, input_ids: numpy.ndarray, attention_mask: numpy.ndarray, token_pieces: List[List[Ints1d]]):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        # token_pieces[b][t]: positions (in row b) of token t's wordpieces
        self.token_pieces = token_pieces


def piece_cache(model: Model) -> PieceCache:
    """The holder of an HFTokenEncoder's wordpiece state."""
    return encoder_shim(model).pieces


def piece_state(model: Model) -> PieceState:
    """The PieceState of the model's current tokenizer (initialize or
    from_disk may have put in a new one: it then starts empty)."""
    holder = piece_cache(model)
    tokenizer = get_tokenizer(model)
    state = holder.state
    if state is not None and state.tokenizer is tokenizer:
        return state
    with holder.lock:
        if holder.state is None or holder.state.tokenizer is not tokenizer:
            holder.state = _new_piece_state(model, tokenizer)
        return holder.state


def _new_piece_state(model: Model, tokenizer) -> PieceState:
    probe = tokenizer.build_inputs_with_special_tokens([-1])
    cut = probe.index(-1)
    if tokenizer.build_inputs_with_special_tokens([-1, -2]) != probe[:cut] + [-1, -2] + probe[cut + 1 :]:
        raise ValueError(
            f"{type(tokenizer).__name__} does not frame a sequence as fixed special tokens "
            "before and after it; HFTokenEncoder cannot align its wordpieces"
        )
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The embedded tokenizer.json pads and truncates to 128; a private copy
        # with both off gives each word's full ids without touching the shared one.
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
    return PieceState(tokenizer, (probe[:cut], probe[cut + 1 :]), _sequence_limit(model), backend)


def _sequence_limit(model: Model) -> int:
    hf = encoder_shim(model).hf
    limits = [hf.transformer.config.max_position_embeddings]
    tok_limit = getattr(hf.tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 100_000:
        limits.append(tok_limit)
    if getattr(hf.transformer.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits.append(hf.transformer.config.max_position_embeddings - 2)
    return min(limits)


def max_sequence_length(model: Model) -> int:
    """The most wordpieces one window may hold, special tokens included."""
    return piece_state(model).limit


def n_special_tokens(model: Model) -> int:
    prefix, suffix = piece_state(model).specials
    return len(prefix) + len(suffix)


def word_pieces(model: Model, words: Sequence[str]) -> List[List[int]]:
    """Wordpiece ids of each word, cached; never empty, at most the configured maximum.

    A word the tokenizer turns into nothing (whitespace, control characters)
    becomes the unknown token, so every spaCy token has a vector. Safe to call
    from several threads: new words are looked up in this call's own dict, and
    a full cache is replaced by a new one rather than cleared.
    """
    state = piece_state(model)
    cache = state.data
    found = {w: cache.get(w) for w in words}
    missing = [w for w, ids in found.items() if ids is None]
    if not missing:
        return [found[w] for w in words]  # type: ignore[misc]
    tokenizer = state.tokenizer
    limit = model.attrs["max_wordpieces_per_token"]
    if state.backend is not None:
        # the Rust tokenizer itself: the same ids without the wrapper's per-word dicts
        batch = state.backend.encode_batch([[w] for w in missing], is_pretokenized=True, add_special_tokens=False)
        encoded = [e.ids for e in batch]
    else:
        encoded = tokenizer([[w] for w in missing], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    n_cut = 0
    new: Dict[str, List[int]] = {}
    for word, ids in zip(missing, encoded):
        if not ids:
            ids = [tokenizer.unk_token_id]
        elif len(ids) > limit:
            ids = ids[:limit]
            n_cut += 1
        new[word] = list(ids)
    if n_cut:
        warnings.warn(
            f"{n_cut} token(s) split into more than {limit} wordpieces were cut to "
            f"{limit} (max_wordpieces_per_token)"
        )
    found.update(new)
    if len(cache) + len(new) > CACHE_LIMIT:
        state.data = new  # start afresh; a reader of the old dict still sees all of it
    else:
        cache.update(new)
    return [found[w] for w in words]  # type: ignore[misc]


def encode_windows(model: Model, windows: Sequence[Span]) -> WordpieceBatch:
    """The padded wordpiece ids of ``windows`` and where each token's pieces are.

    RAISES (ValueError): a window with more wordpieces than the backbone takes.
    """
    state = piece_state(model)
    prefix, suffix = state.specials
    rows: List[List[int]] = []
    token_pieces: List[List[Ints1d]] = []
    offset = len(prefix)
    limit = state.limit
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
    pad = state.tokenizer.pad_token_id or 0
    input_ids = numpy.full((len(rows), width), pad, dtype="int64")
    mask = numpy.zeros((len(rows), width), dtype="int64")
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return WordpieceBatch(input_ids, mask, token_pieces)


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
