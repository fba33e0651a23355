"""The ``ner_plus`` pipe: transformer token classification with scored entities."""
import copy
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from itertools import islice
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
import torch
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import minibatch
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d

from . import decoding, schemes, windowing
from .calibration import Calibrator
from .layers.transformer import max_sequence_length, n_special_tokens, word_pieces

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy-ner-plus.TokenClassifier.v1"
dropout = 0.1

[model.encoder]
@architectures = "spacy-ner-plus.HFTokenEncoder.v1"
pooling = "first"
max_wordpieces_per_token = 16

[model.encoder.name]
@misc = "spacy-ner-plus.embedded_backbone.v1"

[model.lexical]
@architectures = "spacy-ner-plus.LexicalFeatures.v1"
attrs = ["SHAPE", "PREFIX", "SUFFIX"]
width = 32
rows = 5000
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]

SPAN_SCORES = "scores"
SPAN_RAW_SCORES = "raw_scores"
_SPANS_KEYS = {"ner_plus"}


def _one_torch_thread_after_fork() -> None:
    """A process forked from one whose torch thread pool already ran (spaCy's
    ``nlp.pipe(n_process=N)`` forks its workers) hangs at its first parallel
    torch op: the OpenMP pool does not survive a fork. One thread per forked
    worker avoids the pool; N workers still use N cores."""
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


os.register_at_fork(after_in_child=_one_torch_thread_after_fork)


def _confidence_getter(span: Span) -> Optional[float]:
    """The calibrated score of ``span`` in a ner_plus span group, or None.

    The group's spans are sorted by start (set_annotations writes them so),
    so the lookup is a binary search: O(log n) per entity on long documents.
    """
    for key in _SPANS_KEYS:
        group = span.doc.spans.get(key)
        if group is None or SPAN_SCORES not in group.attrs:
            continue
        lo, hi = 0, len(group)
        while lo < hi:
            mid = (lo + hi) // 2
            if group[mid].start < span.start:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(group):
            candidate = group[lo]
            if candidate.start == span.start and candidate.end == span.end and candidate.label == span.label:
                return float(group.attrs[SPAN_SCORES][lo])
    return None


if not Span.has_extension("confidence"):
    Span.set_extension("confidence", getter=_confidence_getter)


@Language.factory(
    "ner_plus",
    assigns=["doc.ents", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BIO",
        "window": 128,
        "stride": 112,
        "window_batch_size": 32,
        "sort_buffer_tokens": 16384,
        "class_weights": "none",
        "focal_gamma": 0.0,
        "max_grad_norm": 1.0,
        "spans_key": "ner_plus",
        "quantize": False,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_ner_plus(
    nlp: Language,
    name: str,
    model: Model[List[Span], List[Floats2d]],
    scheme: str,
    window: int,
    stride: int,
    window_batch_size: int,
    sort_buffer_tokens: int,
    class_weights: Union[str, Dict[str, float]],
    focal_gamma: float,
    max_grad_norm: float,
    spans_key: str,
    quantize: bool,
    scorer: Optional[Callable],
) -> "NerPlus":
    """Create a ner_plus component.

    model (Model[List[Span], List[Floats2d]]): windows -> per-token tag logits
        (spacy-ner-plus.TokenClassifier.v1).
    scheme (str): the tag scheme the model predicts, "BIO" (IOB2) or "BIOES".
    window (int): most tokens per window; longer Docs are split.
    stride (int): most tokens between two window starts (window - stride overlap).
    window_batch_size (int): windows per forward pass at prediction.
    sort_buffer_tokens (int): ``nlp.pipe`` gathers Docs until they hold this
        many tokens and predicts them together, so windows of similar length
        from many Docs share a batch (little padding); 0 predicts each batch
        of ``batch_size`` Docs on its own, as other spaCy pipes do.
    class_weights (Union[str, Dict[str, float]]): "none", "inverse_frequency",
        or a weight per entity label (other tags weigh 1).
    focal_gamma (float): focal loss exponent; 0 is plain cross-entropy.
    max_grad_norm (float): clip the global gradient norm (all parameters
        together, as torch's clip_grad_norm_); 0 disables.
    spans_key (str): doc.spans key for every decoded candidate with its score.
    quantize (bool): predict on CPU with an int8 dynamically quantized copy of
        the transformer's linear layers, one weight scale per output channel
        (weights are stored in fp32; training always uses fp32). Activations
        get one scale per batch, so int8 scores depend slightly on which
        windows share a batch. `python -m spacy_ner_plus quantize` sets it on a
        trained pipeline.
    scorer (Optional[Callable]): scoring method (spaCy's NER scorer).
    """
    return NerPlus(
        nlp.vocab,
        model,
        name,
        scheme=scheme,
        window=window,
        stride=stride,
        window_batch_size=window_batch_size,
        sort_buffer_tokens=sort_buffer_tokens,
        class_weights=class_weights,
        focal_gamma=focal_gamma,
        max_grad_norm=max_grad_norm,
        spans_key=spans_key,
        quantize=quantize,
        scorer=scorer,
    )


@dataclass
class DocPrediction:
    """What ``predict`` found for one Doc: entities and their confidences."""

    spans: List[schemes.SpanTuple]
    confidences: List[float]


class NerPlus(TrainablePipe):
    """Token-classification NER over overlapping windows of a Doc.

    ``predict`` splits each Doc into windows (windowing.make_windows), runs
    the model on them in length-sorted batches, merges the per-token
    distributions (windowing.merge_windows), decodes the Doc once with a
    constrained Viterbi (decoding.viterbi) and scores each entity
    (decoding.span_confidence). ``set_annotations`` writes ``doc.ents`` (the
    entities at or above their type's threshold) and ``doc.spans[spans_key]``
    (every decoded entity, with ``attrs["scores"]``). ``calibrate`` (calibration.py)
    stores per-type calibrators and thresholds in ``cfg``; until then scores are
    raw and every threshold is 0.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "ner_plus",
        *,
        scheme: str = "BIO",
        window: int = 128,
        stride: int = 112,
        window_batch_size: int = 32,
        sort_buffer_tokens: int = 16384,
        class_weights: Union[str, Dict[str, float]] = "none",
        focal_gamma: float = 0.0,
        max_grad_norm: float = 1.0,
        spans_key: str = "ner_plus",
        quantize: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        scheme = schemes.normalize_scheme(scheme)
        if scheme == "IOB1":
            raise ValueError("ner_plus predicts BIO (IOB2) or BIOES, not IOB1")
        if not 0 < stride <= window:
            raise ValueError(f"ner_plus needs 0 < stride <= window, got stride={stride}, window={window}")
        if isinstance(class_weights, str) and class_weights not in ("none", "inverse_frequency"):
            raise ValueError("class_weights must be 'none', 'inverse_frequency' or a dict label -> weight")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        if sort_buffer_tokens < 0:
            raise ValueError(f"sort_buffer_tokens must be >= 0 (0: batches of batch_size docs), got {sort_buffer_tokens}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        _SPANS_KEYS.add(spans_key)
        self.cfg: Dict[str, Any] = {
            "labels": [],
            "scheme": scheme,
            "window": window,
            "stride": stride,
            "window_batch_size": window_batch_size,
            "sort_buffer_tokens": sort_buffer_tokens,
            "class_weights": class_weights,
            "tag_weights": [],
            "focal_gamma": focal_gamma,
            "max_grad_norm": max_grad_norm,
            "spans_key": spans_key,
            "thresholds": {},
            "calibration": {},
            "quantize": quantize,
        }
        self._int8: Optional[Tuple[Any, Any]] = None  # (fp32 module it was made from, int8 copy)

    # --- labels and tags -------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        return schemes.tag_names(self.labels, self.cfg["scheme"])

    def add_label(self, label: str) -> int:
        if not isinstance(label, str) or not label or "-" in label:
            raise ValueError(f"ner_plus labels are non-empty strings without '-', got {label!r}")
        if label in self.cfg["labels"]:
            return 0
        self._allow_extra_label()
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    # --- windows -----------------------------------------------------------
    def _encoder(self) -> Model:
        return self.model.get_ref("encoder")

    def doc_windows(self, doc: Doc) -> List[windowing.Window]:
        """The windows ``predict`` and ``update`` use for ``doc``."""
        return [(start, end) for _, start, end in self._windows([doc])[1]]

    def _windows(self, docs: Sequence[Doc]) -> Tuple[List[Span], List[Tuple[int, int, int]], List[int]]:
        """Every window of ``docs``: its Span, (doc index, start, end) and wordpiece count."""
        encoder = self._encoder()
        budget = max_sequence_length(encoder) - n_special_tokens(encoder)
        spans: List[Span] = []
        owners: List[Tuple[int, int, int]] = []
        n_pieces: List[int] = []
        # One tokenizer call for every new word of the batch, before any torch op:
        # the tokenizer's threads and torch's would otherwise take turns.
        pieces = word_pieces(encoder, [t.text for doc in docs for t in doc])
        offset = 0
        for i, doc in enumerate(docs):
            if len(doc) == 0:
                continue
            counts = [len(p) for p in pieces[offset : offset + len(doc)]]
            offset += len(doc)
            cumulative = numpy.cumsum([0] + counts)
            sent_starts = [bool(t.is_sent_start) for t in doc] if doc.has_annotation("SENT_START") else None
            for start, end in windowing.make_windows(counts, self.cfg["window"], self.cfg["stride"], budget, sent_starts):
                spans.append(doc[start:end])
                owners.append((i, start, end))
                n_pieces.append(int(cumulative[end] - cumulative[start]))
        return spans, owners, n_pieces

    # --- prediction --------------------------------------------------------
    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate a stream of Docs, yielding them in order.

        Docs are gathered until they hold ``sort_buffer_tokens`` tokens (or
        ``batch_size`` Docs when that is 0) and predicted together: ``predict``
        sorts all their windows by length, so a batch of 64 sentences does
        not pad a 3-token headline to the length of a 60-token sentence.
        """
        error_handler = self.get_error_handler()
        for docs in _buffered(stream, batch_size, self.cfg["sort_buffer_tokens"]):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as e:
                error_handler(self.name, self, docs, e)

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [DocPrediction([], []) for _ in docs]
        windows, owners, n_pieces = self._windows(docs)
        logits: List[Optional[Floats2d]] = [None] * len(windows)
        # Batches sorted by wordpieces waste little on padding; results go back in order.
        order = sorted(range(len(windows)), key=n_pieces.__getitem__)
        size = self.cfg["window_batch_size"]
        with torch.inference_mode(), self._inference_weights():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                outputs = self.model.predict([windows[i] for i in chunk])
                for i, out in zip(chunk, outputs):
                    logits[i] = self.model.ops.to_numpy(out)
        per_doc: List[List[int]] = [[] for _ in docs]
        for w, (doc_i, _, _) in enumerate(owners):
            per_doc[doc_i].append(w)
        tags = self.tags
        constraints = schemes.transition_constraints(tags, self.cfg["scheme"])
        tag_index = {tag: i for i, tag in enumerate(tags)}
        predictions = []
        for doc_i, doc in enumerate(docs):
            ranges = [owners[w][1:] for w in per_doc[doc_i]]
            probs = windowing.merge_windows(ranges, [_softmax(logits[w]) for w in per_doc[doc_i]], len(doc))
            spans = decoding.decode(probs, tags, constraints)
            confidences = [decoding.span_confidence(probs, s, tag_index, self.cfg["scheme"]) for s in spans]
            predictions.append(DocPrediction(spans, confidences))
        return predictions

    @contextmanager
    def _inference_weights(self) -> Iterator[None]:
        """Swap in the int8 copy of the transformer for prediction when ``quantize`` is set."""
        shim = self._encoder().layers[0].shims[0]
        fp32 = shim._model
        if not self.cfg.get("quantize") or fp32 is None or next(fp32.parameters()).device.type != "cpu":
            yield
            return
        if self._int8 is None or self._int8[0] is not fp32:
            # per-channel weight scales: on CoNLL++ the int8 F1 loss was 0.63 against 1.85
            # with one scale per matrix, at the same speed, 1.49x fp32
            # (bench/int8_variants.py, docs/BENCHMARKS.md)
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear: qconfig})
            self._int8 = (fp32, int8.eval())
        shim._model = self._int8[1]
        try:
            yield
        finally:
            shim._model = fp32

    def set_annotations(self, docs: Iterable[Doc], predictions: List[DocPrediction]) -> None:
        """Write ``doc.spans[spans_key]`` (every decoded entity, ``attrs["scores"]``
        calibrated and ``attrs["raw_scores"]``) and ``doc.ents`` (the entities whose
        calibrated score reaches their type's threshold)."""
        thresholds = self.cfg["thresholds"]
        calibrators = {label: Calibrator.from_dict(d) for label, d in self.cfg["calibration"].items()}
        key = self.cfg["spans_key"]
        for doc, pred in zip(docs, predictions):
            candidates = [Span(doc, s, e, label=label) for s, e, label in pred.spans]
            scores = [
                float(calibrators[label]([raw])[0]) if label in calibrators else raw
                for (_, _, label), raw in zip(pred.spans, pred.confidences)
            ]
            doc.spans[key] = SpanGroup(
                doc, name=key, spans=candidates, attrs={SPAN_SCORES: scores, SPAN_RAW_SCORES: list(pred.confidences)}
            )
            doc.ents = [span for span, score in zip(candidates, scores) if score >= thresholds.get(span.label_, 0.0)]

    # --- training ----------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "NerPlus.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        windows, owners, _ = self._windows([eg.predicted for eg in examples])
        set_dropout_rate(self.model, drop)
        scores, backprop = self.model.begin_update(windows)
        loss, d_scores = self._window_loss(examples, owners, scores)
        backprop(d_scores)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """Loss and gradient of ``scores``, the model's output on the windows of the examples' docs."""
        examples = list(examples)
        validate_examples(examples, "NerPlus.get_loss")
        _, owners, _ = self._windows([eg.predicted for eg in examples])
        return self._window_loss(examples, owners, scores)

    def gold_tag_ids(self, example: Example) -> numpy.ndarray:
        """Gold tag index per predicted token; -1 where the gold tag is unknown (ignored by the loss)."""
        index = {tag: i for i, tag in enumerate(self.tags)}
        scheme = self.cfg["scheme"]
        ids = numpy.full(len(example.predicted), -1, dtype="int64")
        for i, biluo in enumerate(example.get_aligned_ner()):
            if biluo is None or biluo == "-" or biluo == "":
                continue
            tag = _biluo_to(biluo, scheme)
            if tag not in index:
                raise ValueError(
                    f"gold tag '{biluo}' (token {i} of doc '{example.reference.text[:40]}...') has a label "
                    f"the ner_plus component was not initialized with: {self.labels}"
                )
            ids[i] = index[tag]
        return ids

    def _window_loss(self, examples: Sequence[Example], owners: Sequence[Tuple[int, int, int]], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        ops = self.model.ops
        gold_docs = [self.gold_tag_ids(eg) for eg in examples]
        gold = numpy.concatenate([gold_docs[d][s:e] for d, s, e in owners])
        logits = ops.to_numpy(ops.xp.concatenate(scores)).astype("float64")
        probs = _softmax(logits)
        labeled = gold >= 0
        n_labeled = max(1, int(labeled.sum()))
        rows = numpy.arange(len(gold))
        safe_gold = numpy.where(labeled, gold, 0)
        p_true = numpy.clip(probs[rows, safe_gold], 1e-12, 1.0)
        weights = numpy.asarray(self.cfg["tag_weights"] or [1.0] * probs.shape[1])[safe_gold] * labeled
        gamma = self.cfg["focal_gamma"]
        one_hot = numpy.zeros_like(probs)
        one_hot[rows[labeled], gold[labeled]] = 1.0
        if gamma:
            token_loss = -((1 - p_true) ** gamma) * numpy.log(p_true)
            coef = (1 - p_true) ** gamma - gamma * (1 - p_true) ** (gamma - 1) * p_true * numpy.log(p_true)
        else:
            token_loss = -numpy.log(p_true)
            coef = numpy.ones_like(p_true)
        loss = float((weights * token_loss).sum() / n_labeled)
        if not numpy.isfinite(loss):
            raise ValueError(
                "ner_plus: the loss is NaN or infinite. Lower the learning rate, check the "
                "gradient clipping (max_grad_norm) and look for empty or corrupt docs in the batch."
            )
        grad = ((weights * coef)[:, None] * (probs - one_hot) / n_labeled).astype("float32")
        d_scores = []
        offset = 0
        for score in scores:
            d_scores.append(ops.asarray(grad[offset : offset + len(score)]))
            offset += len(score)
        return loss, d_scores

    def finish_update(self, sgd: Optimizer) -> None:
        self._int8 = None  # the weights change: an int8 copy would be stale
        if self.cfg["max_grad_norm"]:
            clip_global_grad_norm(self.model, self.cfg["max_grad_norm"])
        self.model.finish_update(sgd)

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Set the labels (from ``labels`` or the data), the output width and the class weights."""
        validate_get_examples(get_examples, "NerPlus.initialize")
        examples = list(get_examples())
        self.cfg["labels"] = []
        if labels is None:
            labels = sorted({ent.label_ for eg in examples for ent in eg.reference.ents})
        for label in labels:
            self.add_label(label)
        if not self.labels:
            raise ValueError("ner_plus.initialize: no entity labels in the training data and none given with labels=")
        self.model.get_ref("output").set_dim("nO", len(self.tags))
        sample = [eg.predicted for eg in islice(examples, 16)]
        # The encoder must load its tokenizer before windows can be measured.
        self._encoder().initialize()
        windows, _, _ = self._windows(sample)
        self.model.initialize(X=windows[:16] or None)
        self.cfg["tag_weights"] = self._tag_weights(examples)

    def _tag_weights(self, examples: Sequence[Example]) -> List[float]:
        setting = self.cfg["class_weights"]
        tags = self.tags
        if setting == "none":
            return []
        if isinstance(setting, dict):
            unknown = set(setting) - set(self.labels)
            if unknown:
                raise ValueError(f"class_weights names unknown label(s) {sorted(unknown)}; labels are {self.labels}")
            return [1.0 if t == "O" else float(setting.get(schemes.split_tag(t)[1], 1.0)) for t in tags]
        counts = numpy.zeros(len(tags))
        for eg in examples:
            ids = self.gold_tag_ids(eg)
            counts += numpy.bincount(ids[ids >= 0], minlength=len(tags))
        present = counts > 0
        weights = numpy.ones(len(tags))
        # inverse frequency, scaled so that the average weight per gold token stays 1
        weights[present] = counts.sum() / (present.sum() * counts[present])
        weights *= counts.sum() / float((weights * counts).sum())
        return [float(w) for w in weights]


    # --- serialization ----------------------------------------------------
    # cfg is written as JSON, which rounds floats; thresholds and calibrators
    # must come back bit for bit, so they also travel as msgpack.
    _EXACT = ("thresholds", "calibration")

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        data = srsly.msgpack_loads(super().to_bytes(exclude=exclude))
        data["exact"] = srsly.msgpack_dumps({k: self.cfg[k] for k in self._EXACT})
        return srsly.msgpack_dumps(data)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "NerPlus":
        super().from_bytes(bytes_data, exclude=exclude)
        data = srsly.msgpack_loads(bytes_data)
        if "exact" in data:
            self.cfg.update(srsly.msgpack_loads(data["exact"]))
        return self

    def to_disk(self, path, *, exclude=tuple()) -> None:
        super().to_disk(path, exclude=exclude)
        srsly.write_msgpack(Path(path) / "exact", {k: self.cfg[k] for k in self._EXACT})

    def from_disk(self, path, *, exclude=tuple()) -> "NerPlus":
        super().from_disk(path, exclude=exclude)
        exact = Path(path) / "exact"
        if exact.exists():
            self.cfg.update(srsly.read_msgpack(exact))
        return self


def _buffered(stream: Iterable[Doc], batch_size: int, max_tokens: int) -> Iterator[List[Doc]]:
    """Lists of consecutive Docs: ``batch_size`` Docs each when ``max_tokens``
    is 0, else as many as reach ``max_tokens`` tokens (at least one Doc)."""
    if max_tokens == 0:
        yield from (list(batch) for batch in minibatch(stream, size=batch_size))
        return
    buffer: List[Doc] = []
    n_tokens = 0
    for doc in stream:
        buffer.append(doc)
        n_tokens += len(doc)
        if n_tokens >= max_tokens:
            yield buffer
            buffer, n_tokens = [], 0
    if buffer:
        yield buffer


def _biluo_to(tag: str, scheme: str) -> str:
    prefix, label = tag[0], tag[2:]
    if prefix == "O":
        return "O"
    if scheme == "BIOES":
        return {"U": "S", "L": "E"}.get(prefix, prefix) + "-" + label
    return {"U": "B", "L": "I"}.get(prefix, prefix) + "-" + label


def _softmax(logits: numpy.ndarray) -> numpy.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = numpy.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def clip_global_grad_norm(model: Model, max_norm: float) -> float:
    """Scale all gradients (thinc and PyTorch) so their joint L2 norm is at most ``max_norm``.

    RETURNS (float): the norm before clipping.
    """
    thinc_grads = []
    torch_grads = []
    for node in model.walk():
        for name in node.grad_names:
            thinc_grads.append((node, name))
        for shim in node.shims:
            torch_model = getattr(shim, "_model", None)
            if torch_model is not None and hasattr(torch_model, "parameters"):
                torch_grads.extend(p.grad for p in torch_model.parameters() if p.grad is not None)
    total = 0.0
    for node, name in thinc_grads:
        g = node.get_grad(name)
        total += float((g * g).sum())
    for g in torch_grads:
        total += float((g.detach().float() ** 2).sum())
    norm = total**0.5
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for node, name in thinc_grads:
            node.set_grad(name, node.get_grad(name) * scale)
        for g in torch_grads:
            g.mul_(scale)
    return norm
