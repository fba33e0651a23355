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

Prediction (``is_train=False``) is safe to run from several threads at once:
it never goes through the shim, whose ``predict`` switches the one shared
module to eval mode and back to train mode around every call (so a
concurrent call could run with dropout on). It runs an eval-mode view of the
transformer that shares its parameters (or, with ``quantize``, an int8 copy),
built once under a lock; the wordpiece cache is only ever replaced, never
cleared under a reader.

With ``lora`` set, ``initialize`` wraps the transformer in peft's LoRA
adapters: only the adapters (and the thinc head and lexical features) have
gradients, so the optimizer never sees the frozen backbone. Saving merges the
adapters into the weights (a plain Hugging Face model: the pipeline loads and
predicts without peft), or with ``merge = false`` keeps only the adapter and
takes the frozen weights from the backbone named in the config at load time,
after checking that they are the ones it was trained on. Prediction runs a
merged copy of an adapted transformer, so it costs what a fully fine-tuned
one does.
"""
import copy
import hashlib
from io import BytesIO
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
import warnings

import torch

import numpy
import srsly
from spacy.tokens import Span
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers.hf_shim import HFShim
from spacy_transformers.layers.transformer_model import huggingface_from_pretrained
from thinc.api import ArgsKwargs, Model, get_torch_default_device, torch2xp, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.types import Floats2d, Ints1d

_CACHE_LIMIT = 200_000


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


class PieceCache:
    """Holds the PieceState of the current tokenizer. Not a dict on purpose:
    thinc serializes msgpack-able attrs with the model, and this must not be
    saved. The state is replaced as a whole (under a lock) when the tokenizer
    object changes, so a thread that holds the old one keeps a consistent view."""

    def __init__(self) -> None:
        self.state: Optional[PieceState] = None
        self.lock = threading.Lock()

    @property
    def data(self) -> Dict[str, List[int]]:
        return self.state.data if self.state is not None else {}


def _cache(model: Model) -> PieceState:
    """The PieceState of the model's current tokenizer (initialize or
    from_disk may have put in a new one: it then starts empty)."""
    holder: PieceCache = model.attrs["piece_cache"]
    tokenizer = get_tokenizer(model)
    state = holder.state
    if state is not None and state.tokenizer is tokenizer:
        return state
    with holder.lock:
        if holder.state is None or holder.state.tokenizer is not tokenizer:
            holder.state = _piece_state(model, tokenizer)
        return holder.state


def _piece_state(model: Model, tokenizer) -> PieceState:
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
    return PieceState(tokenizer, (probe[:cut], probe[cut + 1 :]), _max_sequence_length(model), backend)


class InferenceModules:
    """The modules prediction runs: an eval-mode view of the transformer that
    shares its parameters and buffers, or a copy: with ``quantize`` (on CPU)
    an int8 dynamically quantized one, and for a LoRA-adapted transformer one
    with the adapters merged into the weights. Each is built once per
    transformer object and device, under a lock; ``invalidate`` drops a copy
    when the weights change (the view sees new weights by itself)."""

    def __init__(self) -> None:
        self.quantize = False
        self.lock = threading.Lock()
        self._key: Optional[Tuple[str, bool]] = None  # (device, quantize) of the module built for _source
        self._source: Optional[torch.nn.Module] = None
        self._module: Optional[torch.nn.Module] = None
        self._copied = False

    def get(self, transformer: torch.nn.Module) -> torch.nn.Module:
        device = next(transformer.parameters()).device
        quantize = self.quantize and device.type == "cpu"
        key = (str(device), quantize)
        module = self._module
        if self._key == key and self._source is transformer and module is not None:
            return module
        with self.lock:
            if self._key != key or self._source is not transformer or self._module is None:
                adapted = is_adapted(transformer)
                self._copied = quantize or adapted
                if adapted:  # the merged copy is ours: quantize it in place, no second copy
                    module = merged_copy(transformer).eval()
                    self._module = _quantize_in_place(module) if quantize else module
                else:
                    self._module = _quantize_in_place(copy.deepcopy(transformer).eval()) if quantize else _eval_view(transformer)
                self._source, self._key = transformer, key
            return self._module

    def invalidate(self) -> None:
        with self.lock:
            if self._copied:
                self._key, self._source, self._module = None, None, None


def _eval_view(transformer: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree in eval mode whose parameters and buffers are
    the original's tensors (no weights copied; in-place updates show through)."""
    shared = {id(t): t for t in list(transformer.parameters()) + list(transformer.buffers())}
    return copy.deepcopy(transformer, memo=shared).eval()


def _quantize_in_place(module: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of the Linear layers of a module the caller owns."""
    # per-channel weight scales: on CoNLL++ the int8 F1 loss was 0.63 against 1.85
    # with one scale per matrix, at the same speed, 1.49x fp32
    # (bench/int8_variants.py, docs/BENCHMARKS.md)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: qconfig}, inplace=True).eval()


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
    lora: Optional[Dict[str, Any]] = None,
) -> Model[List[Span], List[Floats2d]]:
    if pooling not in ("first", "mean"):
        raise ValueError(f"pooling must be 'first' or 'mean', not '{pooling}'")
    settings = lora_settings(lora)
    hf = HFObjects(None, None, None, dict(tokenizer_config), dict(transformer_config))
    # spacy-transformers' HFWrapper, with a shim that knows how to save adapters
    shim = EncoderShim(hf, name, settings, mixed_precision=mixed_precision, grad_scaler_config=dict(grad_scaler_config))
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
            "piece_cache": PieceCache(),
            "inference": InferenceModules(),
        },
    )


# --- LoRA ---------------------------------------------------------------------
LORA_DEFAULTS: Dict[str, Any] = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.1,
    # None: peft's default for the model type (query and value for BERT)
    "target_modules": None,
    # the pooler's output is never used; adapters there would get no gradient
    "exclude_modules": ".*pooler.*",
    "merge": True,
}


def lora_settings(config: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The encoder's ``lora`` block with its defaults, or None when LoRA is off.

    RAISES (ValueError): on an unknown key or a value of the wrong kind.
    """
    if config is None:
        return None
    unknown = sorted(set(config) - set(LORA_DEFAULTS))
    if unknown:
        raise ValueError(f"[model.encoder.lora]: unknown setting(s) {unknown}; known: {sorted(LORA_DEFAULTS)}")
    settings = {**LORA_DEFAULTS, **config}
    if not isinstance(settings["r"], int) or isinstance(settings["r"], bool) or settings["r"] < 1:
        raise ValueError(f"[model.encoder.lora] r must be a positive integer, not {settings['r']!r}")
    if not isinstance(settings["alpha"], (int, float)) or settings["alpha"] <= 0:
        raise ValueError(f"[model.encoder.lora] alpha must be a positive number, not {settings['alpha']!r}")
    if not isinstance(settings["dropout"], (int, float)) or not 0 <= settings["dropout"] < 1:
        raise ValueError(f"[model.encoder.lora] dropout must be in [0, 1), not {settings['dropout']!r}")
    targets = settings["target_modules"]
    if targets is not None and not isinstance(targets, str):
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"[model.encoder.lora] target_modules must be module names or a regex, not {targets!r}")
        settings["target_modules"] = list(targets)
    if not isinstance(settings["merge"], bool):
        raise ValueError(f"[model.encoder.lora] merge must be true or false, not {settings['merge']!r}")
    return settings


def _peft():
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "LoRA ([components.*.model.encoder.lora]) needs the peft library: pip install 'spacy-ner-plus[lora]'"
        ) from err
    return peft


def is_adapted(transformer: Optional[torch.nn.Module]) -> bool:
    """Whether the transformer is a peft model (LoRA adapters on a frozen backbone)."""
    return transformer is not None and getattr(transformer, "peft_config", None) is not None


def adapt(transformer: torch.nn.Module, settings: Dict[str, Any]) -> torch.nn.Module:
    """Wrap a Hugging Face transformer in LoRA adapters; its own weights are frozen."""
    peft = _peft()
    config = peft.LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=settings["target_modules"],
        exclude_modules=settings["exclude_modules"],
    )
    return peft.get_peft_model(transformer, config)


def merged_copy(transformer: torch.nn.Module) -> torch.nn.Module:
    """A plain Hugging Face model with the adapters merged in; ``transformer`` is unchanged."""
    return copy.deepcopy(transformer).merge_and_unload()


def effective_state_dict(model: Model) -> Dict[str, torch.Tensor]:
    """The weights the encoder predicts with: the transformer's own state,
    or for an adapted one the state of its merged copy (so a pipeline has the
    same weights whether it holds adapters, was saved merged, or loaded an adapter)."""
    transformer = get_transformer(model)
    if transformer is None:
        return {}
    return merged_copy(transformer).state_dict() if is_adapted(transformer) else transformer.state_dict()


def state_fingerprint(state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and tensors."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _torch_bytes(state: Dict[str, torch.Tensor]) -> bytes:
    buffer = BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _torch_state(data: bytes) -> Dict[str, torch.Tensor]:
    return torch.load(BytesIO(data), map_location=get_torch_default_device())


class EncoderShim(HFShim):
    """spacy-transformers' HFShim, saving a LoRA-adapted transformer merged
    (``merge = true``: a plain Hugging Face model) or as its adapter alone,
    with a fingerprint of the frozen weights it was trained on."""

    def __init__(self, hf: HFObjects, name: str, lora: Optional[Dict[str, Any]], **kwargs) -> None:
        super().__init__(hf, **kwargs)
        self.name = name
        self.lora = lora
        self.base_fingerprint = ""

    def adapt(self) -> None:
        """Put LoRA adapters on the loaded transformer (once)."""
        hf = self._hfmodel
        if self.lora is None or is_adapted(hf.transformer):
            return
        self.base_fingerprint = state_fingerprint(hf.transformer.state_dict())
        self._set_transformer(adapt(hf.transformer, self.lora))

    def _set_transformer(self, transformer: torch.nn.Module) -> None:
        hf = self._hfmodel
        self._model = transformer
        self._hfmodel = HFObjects(hf.tokenizer, transformer, hf.vocab_file_contents)

    def to_bytes(self) -> bytes:
        data = super().to_bytes()
        transformer = self._hfmodel.transformer
        if not is_adapted(transformer):
            return data
        msg = srsly.msgpack_loads(data)
        settings = self.lora or LORA_DEFAULTS
        if settings["merge"]:
            msg["state"] = _torch_bytes(merged_copy(transformer).state_dict())
        else:
            peft = _peft()
            msg["state"] = _torch_bytes(peft.get_peft_model_state_dict(transformer))
            msg["adapter"] = {"lora": settings, "base_fingerprint": self.base_fingerprint, "base_name": self.name}
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data: bytes) -> "EncoderShim":
        msg = srsly.msgpack_loads(bytes_data)
        adapter = msg.get("adapter")
        if not adapter:
            return super().from_bytes(bytes_data)
        # an adapter saved alone: the frozen weights come from the backbone the config names
        from transformers import AutoModel

        try:
            base = AutoModel.from_pretrained(self.name, **dict(self._hfmodel._init_transformer_config))
        except (OSError, ValueError) as err:
            raise OSError(
                f"this pipeline keeps only its LoRA adapter (merge = false); its backbone {self.name} did not load: {err}. "
                f"Install the backbone it was trained on ({adapter['base_name']})"
            ) from err
        found = state_fingerprint(base.state_dict())
        if found != adapter["base_fingerprint"]:
            raise ValueError(
                f"this pipeline's LoRA adapter was trained on other backbone weights than those of {self.name} "
                f"(fingerprint {found[:12]}, expected {adapter['base_fingerprint'][:12]}; trained on "
                f"{adapter['base_name']}): install the backbone it was trained with, or save it with merge = true"
            )
        adapter_state = _torch_state(msg["state"])
        msg["state"] = _torch_bytes(base.state_dict())
        del msg["adapter"]
        super().from_bytes(srsly.msgpack_dumps(msg))
        self.base_fingerprint = found
        adapted = adapt(self._hfmodel.transformer, adapter["lora"])
        _peft().set_peft_model_state_dict(adapted, adapter_state)
        self._set_transformer(adapted)
        return self


# spacy-transformers offers no public accessor for the objects its HFShim
# holds; these two functions are the only places that reach into it.
def get_tokenizer(model: Model):
    """The Hugging Face tokenizer of an HFTokenEncoder."""
    return model.layers[0].shims[0]._hfmodel.tokenizer


def get_transformer(model: Model) -> Optional[torch.nn.Module]:
    """The Hugging Face transformer (torch module) of an HFTokenEncoder, None before initialize."""
    return model.layers[0].shims[0]._hfmodel.transformer


def set_quantize(model: Model, quantize: bool) -> None:
    """Predict with an int8 copy of the transformer's linear layers (CPU only)."""
    inference: InferenceModules = model.attrs["inference"]
    inference.quantize = bool(quantize)
    inference.invalidate()


def invalidate_inference(model: Model) -> None:
    """The weights changed (an update): drop a quantized copy made from the old ones."""
    model.attrs["inference"].invalidate()


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
    becomes the unknown token, so every spaCy token has a vector. Safe to call
    from several threads: new words are looked up in this call's own dict, and
    a full cache is replaced by a new one rather than cleared.
    """
    state = _cache(model)
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
    if len(cache) + len(new) > _CACHE_LIMIT:
        state.data = new  # start afresh; a reader of the old dict still sees all of it
    else:
        cache.update(new)
    return [found[w] for w in words]  # type: ignore[misc]


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
    shim: EncoderShim = model.layers[0].shims[0]
    if shim._hfmodel.transformer is None:
        hf = huggingface_from_pretrained(
            model.attrs["name"], dict(shim._hfmodel._init_tokenizer_config), dict(shim._hfmodel._init_transformer_config)
        )
        shim._model = hf.transformer
        shim._hfmodel = HFObjects(hf.tokenizer, hf.transformer, hf.vocab_file_contents)
    shim.adapt()
    model.set_dim("nO", shim._hfmodel.transformer.config.hidden_size)


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
    """Last hidden states of a batch from the inference module (see InferenceModules)."""
    transformer = get_transformer(model)
    if transformer is None:
        raise ValueError("HFTokenEncoder: the transformer is not loaded; initialize the pipeline or load a trained one")
    module = model.attrs["inference"].get(transformer)
    device = next(transformer.parameters()).device
    mixed = device.type == "cuda" and model.attrs["mixed_precision"]
    with torch.no_grad(), torch.autocast(device_type="cuda", enabled=mixed):
        output = module(
            input_ids=xp2torch(model.ops.asarray(batch.input_ids), device=device),
            attention_mask=xp2torch(model.ops.asarray(batch.attention_mask), device=device),
        )
    return torch2xp(output.last_hidden_state.float())


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
