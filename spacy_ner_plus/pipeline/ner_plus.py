"""The ``ner_plus`` pipe: transformer token classification with scored entities.

The pipe orchestrates: windows (windowing.py) -> encoder (ml/) -> merge
(windowing.merge_windows) -> decode (decoding.py) -> calibrate
(calibration.py) -> annotations (``doc.ents``, the scored span group of
scored_spans.py). Saving, reading older pipelines and checking a calibration
against the weights is ner_plus_state.py; the loss is ml/loss.py.

Thread safety: ``nlp(text)``, ``nlp.pipe(texts)``, ``predict`` and
``set_annotations`` may run in several threads at once on one loaded
pipeline; they read the model and the learned state and change nothing
shared (the inference modules are built once under a lock, see
ml/inference.py). Training (``update``, ``initialize``), loading and
``set_calibration`` change the pipe and must not run while other threads predict.

Size: over 500 lines because the factory documents each of its 17 settings and
holds the default model config beside the pipe, as spaCy's own pipes do (about
140 lines); the pipe class itself is orchestration.
"""
import os
import warnings
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

from .. import decoding, schemes, windowing
from ..calibration import Calibrator
from ..ml.loss import clip_global_grad_norm, frequency_class_weights, softmax, token_classification_loss
from ..ml.transformer import invalidate_inference, max_sequence_length, n_special_tokens, set_quantize, set_runtime, word_pieces
from .ner_plus_state import (  # noqa: F401  (ner_plus_pipe_names, stale_calibrations: re-exported)
    RUNTIMES,
    current_settings,
    exact_state,
    load_onnx_export,
    ner_plus_pipe_names,
    restore_learned_state,
    save_onnx_export,
    stale_calibrations,
    weights_fingerprint,
)
from .scored_spans import SPAN_RAW_SCORES, SPAN_SCORES, SPAN_WINDOW_VOTES, SPAN_WINDOWS, register_scored_spans_key  # noqa: F401  (re-exported)

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

WITHIN_SENTENCES = ("none", "entities", "windows")


@Language.factory(
    "ner_plus",
    assigns=["doc.ents", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BIO",
        "window": 128,
        "stride": 112,
        "within_sentences": "none",
        "window_batch_size": 32,
        "sort_buffer_tokens": 16384,
        "class_weights": "none",
        "focal_gamma": 0.0,
        "max_grad_norm": 1.0,
        "spans_key": "ner_plus",
        "quantize": False,
        "runtime": "torch",
        "overwrite_ents": False,
        "join_touching": False,
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
    within_sentences: str,
    window_batch_size: int,
    sort_buffer_tokens: int,
    class_weights: Union[str, Dict[str, float]],
    focal_gamma: float,
    max_grad_norm: float,
    spans_key: str,
    quantize: bool,
    runtime: str,
    overwrite_ents: bool,
    join_touching: bool,
    scorer: Optional[Callable],
) -> "NerPlus":
    """Create a ner_plus component.

    Every argument but ``model`` and ``scheme`` is a setting: it is read from
    the config at every load, so ``spacy.load(path, config=...)`` changes it.
    The scheme is fixed by training (the output layer has its tags).

    model (Model[List[Span], List[Floats2d]]): windows -> per-token tag logits
        (spacy-ner-plus.TokenClassifier.v1).
    scheme (str): the tag scheme the model predicts, "BIO" (IOB2) or "BIOES".
    window (int): most tokens per window; longer Docs are split.
    stride (int): most tokens between two window starts (window - stride overlap).
    within_sentences (str): what stays inside the sentences of a Doc that has
        sentence boundaries (``doc.sents``: from the converter, a
        ``sentencizer`` or a parser). "none": windows and entities may run
        across sentences (the sentences only place window starts).
        "entities": windows run across sentences (the model sees the
        context) but each sentence is decoded on its own, so no entity
        crosses a sentence start. "windows": each sentence is windowed,
        decoded and scored on its own, so a model trained on single sentences
        predicts a whole document as it predicts each sentence alone (training
        windows follow it too). A Doc without sentence boundaries is one unit
        whatever the setting.
    window_batch_size (int): windows per forward pass, at prediction and in
        training: a training batch with more windows (whole documents) runs in
        passes of this many, their gradients summed (the same loss as one
        pass), so training memory is bounded by it, not by the batch's longest
        document. Scores
        depend on which windows share a forward pass in the last bits of
        float32 (about 1e-6); 1 runs each window alone, so its scores are
        bit for bit the same whatever else is predicted, at about twice the cost.
    sort_buffer_tokens (int): ``nlp.pipe`` gathers Docs until they hold this
        many tokens and predicts them together, so windows of similar length
        from many Docs share a batch (little padding); 0 predicts each batch
        of ``batch_size`` Docs on its own, as other spaCy pipes do.
    class_weights (Union[str, Dict[str, float]]): "none", "inverse_frequency",
        "sqrt_inverse_frequency" (the square root of those weights: a milder
        push towards rare tags), or a weight per entity label (other tags
        weigh 1); used by initialize.
    focal_gamma (float): focal loss exponent; 0 is plain cross-entropy.
    max_grad_norm (float): clip the global gradient norm (all parameters
        together, as torch's clip_grad_norm_); 0 disables.
    spans_key (str): doc.spans key for every decoded candidate with its score.
    quantize (bool): predict on CPU with an int8 dynamically quantized copy of
        the transformer's linear layers, one weight scale per output channel
        (weights are stored in fp32; training always uses fp32). Activations
        get one scale per batch, so int8 scores depend slightly on which
        windows share a batch. `python -m spacy_ner_plus quantize` sets it on a
        trained pipeline. With runtime = "onnxruntime": predict with the int8
        ONNX file (`export-onnx --int8`).
    runtime (str): what runs the transformer at prediction: "torch" (eager
        PyTorch) or "onnxruntime" (ONNX Runtime on CPU, the export that
        `python -m spacy_ner_plus export-onnx` writes into the pipeline
        directory; needs `pip install 'spacy-ner-plus[onnx]'`). Training always
        uses torch. An export of other weights than the pipeline's is refused at
        load (ml/onnx_runtime.py).
    overwrite_ents (bool): False keeps the entities already in ``doc.ents``
        (from an entity_ruler or any component before this one) and decodes
        around them; True replaces them, as entity_ruler's option does.
    join_touching (bool): read each run of touching decoded entities of one
        type (``B-X B-X``: a mention cut in pieces) as one entity, every entity
        scored by the probability that exactly its tokens are of its type
        (decoding.run_confidence). A calibration fitted in the other mode is
        reported stale (``stale_calibrations``): calibrate again after changing it.
    scorer (Optional[Callable]): scoring method (spaCy's NER scorer).
    """
    return NerPlus(
        nlp.vocab,
        model,
        name,
        scheme=scheme,
        window=window,
        stride=stride,
        within_sentences=within_sentences,
        window_batch_size=window_batch_size,
        sort_buffer_tokens=sort_buffer_tokens,
        class_weights=class_weights,
        focal_gamma=focal_gamma,
        max_grad_norm=max_grad_norm,
        spans_key=spans_key,
        quantize=quantize,
        runtime=runtime,
        overwrite_ents=overwrite_ents,
        join_touching=join_touching,
        scorer=scorer,
    )


@dataclass
class DocProbabilities:
    """What ``predict_probabilities`` found for one Doc: the merged per-token
    distributions (n_tokens, n_tags) and the decoder's inputs taken from the Doc
    (segments decoded on their own, entities already set, whitespace tokens),
    the windows and what each predicted on its own (for the window votes)."""

    probs: numpy.ndarray
    segments: List[Tuple[int, int]]
    fixed_outside: List[Tuple[int, int]]
    no_edge: List[bool]
    ranges: List[Tuple[int, int]]
    window_labels: List[numpy.ndarray]


@dataclass
class DocPrediction:
    """What ``predict`` found for one Doc: entities and their confidences, the number of
    windows the Doc was split into and, per entity, (windows covering it, windows agreeing)."""

    spans: List[schemes.SpanTuple]
    confidences: List[float]
    n_windows: int = 0
    window_votes: Optional[List[Tuple[int, int]]] = None


class NerPlus(TrainablePipe):
    """Token-classification NER over overlapping windows of a Doc.

    ``predict`` splits each Doc into windows (windowing.make_windows), runs
    the model on them in length-sorted batches, merges the per-token
    distributions (windowing.merge_windows), decodes the Doc (or each of its
    sentences, by ``within_sentences``) once with a
    constrained Viterbi (decoding.decode) around the entities already set and
    scores each entity (decoding.span_confidence). ``set_annotations`` writes
    ``doc.ents`` (the entities at or above their type's threshold, beside the
    preset ones) and ``doc.spans[spans_key]`` (every decoded entity, with
    ``attrs["scores"]``). Settings are attributes that come from the config;
    ``cfg`` holds only learned state: labels, scheme, tag weights and the
    calibration set by ``set_calibration`` (until then scores are raw and
    every threshold is 0), with its per-type decoding bias (``decoding_bias``,
    decoding.bias_vector: empty unless calibrate chose one for a recall policy).
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "ner_plus",
        *,
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
        overwrite_ents: bool,
        join_touching: bool = False,
        within_sentences: str = "none",
        runtime: str = "torch",
        scorer: Optional[Callable] = None,
    ) -> None:
        scheme = schemes.normalize_scheme(scheme)
        if scheme == "IOB1":
            raise ValueError("ner_plus predicts BIO (IOB2) or BIOES, not IOB1")
        if not 0 < stride <= window:
            raise ValueError(f"ner_plus needs 0 < stride <= window, got stride={stride}, window={window}")
        if within_sentences not in WITHIN_SENTENCES:
            raise ValueError(f"within_sentences must be one of {', '.join(WITHIN_SENTENCES)}, not '{within_sentences}'")
        if window_batch_size < 1:
            raise ValueError(f"window_batch_size must be >= 1, got {window_batch_size}")
        if isinstance(class_weights, str) and class_weights not in ("none", "inverse_frequency", "sqrt_inverse_frequency"):
            raise ValueError("class_weights must be 'none', 'inverse_frequency', 'sqrt_inverse_frequency' or a dict label -> weight")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not '{runtime}'")
        if sort_buffer_tokens < 0:
            raise ValueError(f"sort_buffer_tokens must be >= 0 (0: batches of batch_size docs), got {sort_buffer_tokens}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.window = window
        self.stride = stride
        self.within_sentences = within_sentences
        self.window_batch_size = window_batch_size
        self.sort_buffer_tokens = sort_buffer_tokens
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma
        self.max_grad_norm = max_grad_norm
        self.spans_key = spans_key
        self.quantize = bool(quantize)
        self.overwrite_ents = bool(overwrite_ents)
        self.join_touching = bool(join_touching)
        register_scored_spans_key(spans_key)
        self.runtime = runtime
        set_quantize(self._encoder(), self.quantize)
        set_runtime(self._encoder(), runtime)
        self._pid = os.getpid()
        self.cfg: Dict[str, Any] = {
            "labels": [],
            "scheme": scheme,
            "tag_weights": [],
            "thresholds": {},
            "calibration": {},
            "calibration_weights": "",
            "calibration_decoding": self.decoding_mode,
            "decoding_bias": {},
        }

    # --- labels and tags -------------------------------------------------
    @property
    def decoding_mode(self) -> str:
        """How entities are read from the tags: "tags" or "join_touching"."""
        return "join_touching" if self.join_touching else "tags"

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
        problem = schemes.label_problem(label)
        if problem is not None:
            raise ValueError(f"ner_plus cannot take the label {label!r}: {problem}")
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
            by_sentence = sent_starts is not None and self.within_sentences == "windows"
            make = windowing.sentence_windows if by_sentence else windowing.make_windows
            for start, end in make(counts, self.window, self.stride, budget, sent_starts):
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
        for docs in _buffered(stream, batch_size, self.sort_buffer_tokens):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as e:
                error_handler(self.name, self, docs, e)

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [DocPrediction([], []) for _ in docs]
        bias = decoding.bias_vector(self.tags, self.cfg["decoding_bias"])
        return [self.decode_probabilities(p, bias) for p in self.predict_probabilities(docs)]

    def predict_probabilities(self, docs: Sequence[Doc]) -> List["DocProbabilities"]:
        """The model's part of ``predict``: per Doc, the merged per-token
        distributions and what decoding them needs, read from the Doc as it is now
        (its sentences and the entities already set). ``decode_probabilities``
        turns one into entities; calibrate decodes DEV's again with other biases."""
        docs = list(docs)
        tags = self.tags
        if not any(len(doc) for doc in docs):
            return [DocProbabilities(numpy.zeros((len(doc), len(tags)), dtype="float32"), [(0, len(doc))], [], [], [], []) for doc in docs]
        self._threads_after_fork()
        windows, owners, n_pieces = self._windows(docs)
        logits: List[Optional[Floats2d]] = [None] * len(windows)
        # Batches sorted by wordpieces waste little on padding; results go back in order.
        order = sorted(range(len(windows)), key=n_pieces.__getitem__)
        size = self.window_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                outputs = self.model.predict([windows[i] for i in chunk])
                for i, out in zip(chunk, outputs):
                    logits[i] = self.model.ops.to_numpy(out)
        per_doc: List[List[int]] = [[] for _ in docs]
        for w, (doc_i, _, _) in enumerate(owners):
            per_doc[doc_i].append(w)
        tag_labels = numpy.array([schemes.split_tag(t)[1] for t in tags], dtype=object)
        results = []
        for doc_i, doc in enumerate(docs):
            ranges = [owners[w][1:] for w in per_doc[doc_i]]
            results.append(
                DocProbabilities(
                    probs=windowing.merge_windows(ranges, [softmax(logits[w]) for w in per_doc[doc_i]], len(doc)),
                    segments=self._segments(doc),
                    fixed_outside=[] if self.overwrite_ents else [(e.start, e.end) for e in doc.ents],
                    no_edge=[t.is_space for t in doc],
                    ranges=ranges,
                    # what each window predicted on its own, for the service's decision explanation
                    window_labels=[tag_labels[logits[w].argmax(axis=1)] for w in per_doc[doc_i]],
                )
            )
        return results

    def decode_probabilities(self, found: "DocProbabilities", bias: Optional[numpy.ndarray] = None) -> DocPrediction:
        """Entities and raw confidences of one Doc from ``predict_probabilities``.

        bias (Optional[numpy.ndarray]): per tag, added to the log-probabilities before
            Viterbi (``decoding.bias_vector``); ``predict`` passes the stored ``decoding_bias``.
        """
        tags = self.tags
        spans, confidences = decoding.decode_scored(
            found.probs,
            tags,
            self.cfg["scheme"],
            found.segments,
            fixed_outside=found.fixed_outside,
            no_edge=found.no_edge,
            joined=self.join_touching,
            constraints=decoding.constraints_for(tags, self.cfg["scheme"]),
            bias=bias,
        )
        votes = windowing.window_agreement(found.ranges, found.window_labels, spans)
        return DocPrediction(spans, confidences, len(found.ranges), votes)

    def pipe_probabilities(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Tuple[Doc, "DocProbabilities"]]:
        """``predict_probabilities`` over a stream, in the batches ``pipe`` would predict
        together (so the same windows share a forward pass); the Docs are not changed."""
        for docs in _buffered(stream, batch_size, self.sort_buffer_tokens):
            yield from zip(docs, self.predict_probabilities(docs))

    def _segments(self, doc: Doc) -> List[windowing.Window]:
        """Token ranges decoded on their own: the sentences unless ``within_sentences`` is "none", else the Doc."""
        if self.within_sentences != "none" and doc.has_annotation("SENT_START"):
            return windowing.sentence_ranges([bool(t.is_sent_start) for t in doc])
        return [(0, len(doc))]

    def _threads_after_fork(self) -> None:
        """In a process forked after this pipe was made (``nlp.pipe(n_process=N)``
        forks its workers), torch's OpenMP pool inherited from the parent hangs at
        the first parallel op: the first prediction there sets one torch thread
        (N workers still use N cores). Nothing changes in the parent, nor in a
        forked process that never predicts."""
        pid = os.getpid()
        if pid != self._pid:
            torch.set_num_threads(1)
            self._pid = pid

    def set_annotations(self, docs: Iterable[Doc], predictions: List[DocPrediction]) -> None:
        """Write ``doc.spans[spans_key]`` (every decoded entity, ``attrs["scores"]``
        calibrated and ``attrs["raw_scores"]``) and ``doc.ents``: the entities whose
        calibrated score reaches their type's threshold, beside the entities that
        were there before (unless ``overwrite_ents``).

        A threshold of 0 keeps every entity the model decodes. Such an entity may
        sit where DEV's predictions were (nearly) all wrong; a calibrator fitted
        by this release then gives it the lowest value its fit allows, at least
        ``1 / (n + 2)`` for ``n`` DEV predictions (Laplace's rule, calibration.py),
        never 0. A type without a calibrator keeps its raw score."""
        thresholds = self.cfg["thresholds"]
        calibrators = {label: Calibrator.from_dict(d) for label, d in self.cfg["calibration"].items()}
        key = self.spans_key
        for doc, pred in zip(docs, predictions):
            candidates = [Span(doc, s, e, label=label) for s, e, label in pred.spans]
            scores = [
                float(calibrators[label]([raw], [end - start])[0]) if label in calibrators else raw
                for (start, end, label), raw in zip(pred.spans, pred.confidences)
            ]
            attrs = {SPAN_SCORES: scores, SPAN_RAW_SCORES: list(pred.confidences), SPAN_WINDOWS: pred.n_windows}
            if pred.window_votes is not None:
                attrs[SPAN_WINDOW_VOTES] = [list(v) for v in pred.window_votes]
            doc.spans[key] = SpanGroup(doc, name=key, spans=candidates, attrs=attrs)
            kept = [span for span, score in zip(candidates, scores) if score >= thresholds.get(span.label_, 0.0)]
            if self.overwrite_ents:
                doc.ents = kept
            else:
                doc.set_ents(kept, default="unmodified")

    # --- calibration -------------------------------------------------------
    def set_calibration(
        self, calibrators: Dict[str, Calibrator], thresholds: Dict[str, float], decoding_bias: Optional[Dict[str, float]] = None
    ) -> None:
        """Store per-type calibrators and thresholds, fitted to the current weights.

        calibrators (Dict[str, Calibrator]): raw -> calibrated score, per label.
        thresholds (Dict[str, float]): the calibrated score an entity of the
            label needs to enter ``doc.ents``.
        decoding_bias (Optional[Dict[str, float]]): per label, b >= 0 added to the
            log-probabilities of its tags before decoding (decoding.bias_vector);
            the calibrators and thresholds were fitted to entities decoded with it.
            None or {}: no bias (a bias stored before is dropped with the old calibration).
        """
        unknown = sorted((set(calibrators) | set(thresholds) | set(decoding_bias or {})) - set(self.labels))
        if unknown:
            raise ValueError(f"calibration for label(s) {unknown} that {self.name} does not predict (labels: {list(self.labels)})")
        bias = {label: float(b) for label, b in (decoding_bias or {}).items() if b}
        decoding.bias_vector(self.tags, bias)  # a negative or non-finite bias is an error here, not at the first text
        self.cfg["calibration"] = {label: c.to_dict() for label, c in calibrators.items()}
        self.cfg["thresholds"] = {label: float(t) for label, t in thresholds.items()}
        self.cfg["decoding_bias"] = bias
        self.cfg["calibration_weights"] = self.weights_fingerprint()
        self.cfg["calibration_decoding"] = self.decoding_mode

    def clear_calibration(self, reason: str) -> None:
        """Drop calibrators, thresholds and the decoding bias (with a warning saying ``reason``) when there are any."""
        if self.cfg["calibration"] or self.cfg["thresholds"] or self.cfg["decoding_bias"]:
            warnings.warn(f"{self.name}: calibration and thresholds dropped (with the decoding bias): {reason}; run calibrate again")
        self.cfg["calibration"] = {}
        self.cfg["thresholds"] = {}
        self.cfg["decoding_bias"] = {}
        self.cfg["calibration_weights"] = ""

    def weights_fingerprint(self) -> str:
        """SHA-256 of every weight of the model (thinc parameters and the transformer's state)."""
        return weights_fingerprint(self.model)

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
        gold = self._window_gold(examples, owners)
        n_labeled = int(sum((g >= 0).sum() for g in gold))
        loss = 0.0
        # passes of window_batch_size windows, each backpropagated before the next runs: memory
        # stays that of one pass however long the documents; the gradients add up in the model
        size = self.window_batch_size
        for start in range(0, len(windows), size):
            scores, backprop = self.model.begin_update(windows[start : start + size])
            part, d_scores = token_classification_loss(
                self.model.ops, scores, numpy.concatenate(gold[start : start + size]), self.cfg["tag_weights"], self.focal_gamma, n_labeled
            )
            backprop(d_scores)
            loss += part
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
            tag = schemes.from_biluo(biluo, scheme)
            if tag not in index:
                raise ValueError(
                    f"gold tag '{biluo}' (token {i} of doc '{example.reference.text[:40]}...') has a label "
                    f"the ner_plus component was not initialized with: {self.labels}"
                )
            ids[i] = index[tag]
        return ids

    def _window_gold(self, examples: Sequence[Example], owners: Sequence[Tuple[int, int, int]]) -> List[numpy.ndarray]:
        """Per window, the gold tag ids of the tokens it owns (``owners`` from ``_windows``)."""
        gold_docs = [self.gold_tag_ids(eg) for eg in examples]
        return [gold_docs[d][s:e] for d, s, e in owners]

    def _window_loss(self, examples: Sequence[Example], owners: Sequence[Tuple[int, int, int]], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        gold = numpy.concatenate(self._window_gold(examples, owners))
        return token_classification_loss(self.model.ops, scores, gold, self.cfg["tag_weights"], self.focal_gamma)

    def finish_update(self, sgd: Optimizer) -> None:
        self.clear_calibration("the weights are being trained")
        if self.max_grad_norm:
            clip_global_grad_norm(self.model, self.max_grad_norm)
        self.model.finish_update(sgd)
        invalidate_inference(self._encoder())  # an int8 copy of the old weights would be stale

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
        self.clear_calibration("the pipe is being initialized")
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
        invalidate_inference(self._encoder())
        self.cfg["tag_weights"] = self._tag_weights(examples)

    def _tag_weights(self, examples: Sequence[Example]) -> List[float]:
        setting = self.class_weights
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
        return frequency_class_weights(counts, setting)


    # --- serialization (the learned state: ner_plus_state.py) -------------
    def to_bytes(self, *, exclude=tuple()) -> bytes:
        data = srsly.msgpack_loads(super().to_bytes(exclude=exclude))
        data["exact"] = srsly.msgpack_dumps(exact_state(self.cfg))
        return srsly.msgpack_dumps(data)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "NerPlus":
        settings = current_settings(self)
        super().from_bytes(bytes_data, exclude=exclude)
        data = srsly.msgpack_loads(bytes_data)
        restore_learned_state(self, settings, srsly.msgpack_loads(data["exact"]) if "exact" in data else None)
        invalidate_inference(self._encoder())
        set_runtime(self._encoder(), self.runtime)  # an ONNX export is read from a directory only
        return self

    def to_disk(self, path, *, exclude=tuple()) -> None:
        super().to_disk(path, exclude=exclude)
        srsly.write_msgpack(Path(path) / "exact", exact_state(self.cfg))
        save_onnx_export(self, path)

    def from_disk(self, path, *, exclude=tuple()) -> "NerPlus":
        settings = current_settings(self)
        super().from_disk(path, exclude=exclude)
        exact = Path(path) / "exact"
        restore_learned_state(self, settings, srsly.read_msgpack(exact) if exact.exists() else None)
        invalidate_inference(self._encoder())
        set_runtime(self._encoder(), self.runtime, load_onnx_export(self, path))
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
