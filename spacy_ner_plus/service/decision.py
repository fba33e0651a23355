"""The model as the service sees it: every decoded candidate of a text with its calibrated
score and source (model, pattern, other component), and the decision per type
(detected, below threshold, near threshold) under the effective thresholds."""
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..pipeline.bounded_tokenizer import bound_tokenizer
from ..pipeline.ner_plus import ner_plus_pipe_names
from ..pipeline.scored_spans import SPAN_RAW_SCORES, SPAN_SCORES, SPAN_WINDOW_VOTES, SPAN_WINDOWS

NEAR_THRESHOLD = 0.1


# --- the model as the service sees it --------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One entity candidate of a text: code-point offsets, calibrated score (None: a rule without one).

    The fields after ``source`` explain the decision (``return_decision_process``): the score
    before calibration or before a context boost, the ad-hoc recogniser and pattern that found
    it, the context word that raised its score, and for model entities the windows of the
    pipeline that covered it (how many, how many of them agreed on the entity).
    """

    start: int
    end: int
    label: str
    score: Optional[float]
    source: str  # "model" | "pattern" (pii_patterns) | "other" (before ner_plus) | "ad_hoc" | "deny_list"
    raw_score: Optional[float] = None
    recognizer: Optional[str] = None
    pattern: Optional[str] = None
    context_word: Optional[str] = None
    windows: Optional[Tuple[int, int]] = None  # (windows covering the entity, windows agreeing)


class Candidates(list):
    """The candidates of one text (a list), with ``n_windows``: how many windows ner_plus split
    the text into (1 for a text that fits one window, 0 for a text without tokens)."""

    n_windows: int = 0


def _entity_sources() -> Optional[Callable[..., Dict[Tuple[int, int, int], str]]]:
    try:
        from ..pipeline.pii_patterns import entity_sources
    except ImportError:  # the pii_patterns component is optional
        return None
    return entity_sources


class ServedModel:
    """A loaded pipeline with its one ner_plus pipe, thresholds and their bounds.

    The pipeline's tokenizer is wrapped in a BoundedTokenizer (changed in place), so
    no text makes the tokenizer's work grow faster than the text: a whitespace-free
    run longer than 64 characters is cut into word and punctuation pieces before
    spaCy's tokenizer sees it (see ``pipeline.bounded_tokenizer``).

    nlp (Language): the pipeline.
    min_thresholds / max_thresholds (Dict[str, float]): see ServeSettings.
    RAISES (ValueError): no or several ner_plus pipes, bounds outside [0, 1] or not
        around the pipeline's threshold, a bound for an unknown type.
    """

    def __init__(self, nlp, name: str, min_thresholds: Dict[str, float], max_thresholds: Dict[str, float]) -> None:
        self.nlp = bound_tokenizer(nlp)
        pipes = ner_plus_pipe_names(nlp)
        if len(pipes) != 1:
            raise ValueError(f"'{name}' has {len(pipes)} ner_plus components ({pipes}); the service needs exactly one")
        self.pipe = nlp.get_pipe(pipes[0])
        self.spans_key: str = self.pipe.spans_key
        self.model_labels: List[str] = list(self.pipe.labels)
        patterns = [nlp.get_pipe(n) for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory == "pii_patterns"]
        if len(patterns) > 1:
            raise ValueError(f"'{name}' has {len(patterns)} pii_patterns components; the service handles one")
        self.pattern_labels: List[str] = sorted(patterns[0].labels) if patterns else []
        self.pattern_key: Optional[str] = patterns[0].spans_key if patterns else None
        self.labels: List[str] = sorted(set(self.model_labels) | set(self.pattern_labels))
        self.entity_sources = _entity_sources()
        pipeline_thresholds = self.pipe.cfg.get("thresholds", {})
        self.thresholds: Dict[str, float] = {label: float(pipeline_thresholds.get(label, 0.0)) for label in self.model_labels}
        self.bounds: Dict[str, Tuple[float, float]] = {}
        for option, given in (("--min-threshold", min_thresholds), ("--max-threshold", max_thresholds)):
            unknown = sorted(set(given) - set(self.model_labels) - {""})
            if unknown:
                raise ValueError(f"{option} names {unknown}, not types of the model {self.model_labels}")
        for label, t in self.thresholds.items():
            lo = float(min_thresholds.get(label, min_thresholds.get("", 0.0)))
            hi = float(max_thresholds.get(label, max_thresholds.get("", t)))
            if not 0.0 <= lo <= t <= hi <= 1.0:
                raise ValueError(
                    f"threshold bounds of {label}: need 0 <= min ({lo}) <= the pipeline's threshold ({t:.4f}) <= max ({hi}) <= 1"
                )
            self.bounds[label] = (lo, hi)
        calibration = self.pipe.cfg.get("calibration", {})
        self.calibration: Dict[str, str] = {label: calibration.get(label, {}).get("method", "none") for label in self.model_labels}
        # added to a type's tag scores before decoding (calibrate's recall policies): it changes
        # which entities there are, not their confidences
        bias = self.pipe.cfg.get("decoding_bias") or {}
        self.decoding_bias: Dict[str, float] = {label: float(bias.get(label, 0.0)) for label in self.model_labels}
        meta = nlp.meta
        self.info = {
            "name": f"{meta.get('lang', 'xx')}_{meta.get('name', 'pipeline')}",
            "version": str(meta.get("version", "0.0.0")),
            "path": name,
        }
        self.config_hash = short_hash(
            {
                "model": self.info,
                "pipeline": nlp.pipe_names,
                "labels": self.labels,
                "thresholds": self.thresholds,
                "calibration": calibration,
                "decoding_bias": self.decoding_bias,
                "bounds": self.bounds,
            }
        )

    def candidates(self, doc) -> "Candidates":
        """Every candidate of ``doc``: the ner_plus span group (all decoded entities,
        calibrated and raw scores, window votes) less those a component after ner_plus removed
        or re-bounded (at or above the pipeline's threshold, yet not in ``doc.ents``), and the
        entities of ``doc.ents`` that are not the model's as decoded (preset by a component
        before it, or set by one after it).
        Linear in the entities: the sources are indexed once per doc."""
        group = doc.spans.get(self.spans_key)
        out = Candidates()
        seen = set()
        if group is not None:
            ents = {(e.start, e.end, e.label_) for e in doc.ents}
            used = self.pipe.cfg.get("thresholds", {})  # what ner_plus applied to this doc
            scores = group.attrs.get(SPAN_SCORES, [])
            raw = group.attrs.get(SPAN_RAW_SCORES) or [None] * len(scores)
            votes = group.attrs.get(SPAN_WINDOW_VOTES) or [None] * len(scores)
            out.n_windows = int(group.attrs.get(SPAN_WINDOWS, 1 if len(doc) else 0))
            for span, score, raw_score, vote in zip(group, scores, raw, votes):
                key = (span.start, span.end, span.label_)
                if key not in ents and score >= used.get(span.label_, 0.0):
                    # ner_plus put it in doc.ents; a component after it (entity_filter,
                    # pii_context) removed it or changed its bounds: the pipeline's word stands
                    continue
                windows = None if vote is None else (int(vote[0]), int(vote[1]))
                raw_score = None if raw_score is None else float(raw_score)
                out.append(Candidate(span.start_char, span.end_char, span.label_, float(score), "model", raw_score=raw_score, windows=windows))
                seen.add(key)
        sources: Dict[Tuple[int, int, int], str] = {}
        if self.entity_sources is not None and self.pattern_key is not None:
            sources = self.entity_sources(doc, pattern_key=self.pattern_key, model_key=self.spans_key)
        for ent in doc.ents:
            if (ent.start, ent.end, ent.label_) in seen:
                continue
            # not in the index: preset by a component that is not pii_patterns (an entity_ruler)
            source = sources.get((ent.start, ent.end, ent.label), "other")
            score = ent._.confidence if ent.has_extension("confidence") else None
            out.append(Candidate(ent.start_char, ent.end_char, ent.label_, None if score is None else float(score), source))
        out.sort(key=lambda c: (c.start, c.end, c.label))
        return out


@dataclass
class Decision:
    """The reported entities of one text and the per-type counts behind them."""

    entities: List[Tuple[Candidate, Optional[float]]]  # (candidate, threshold applied; None for a rule decision)
    counts: Dict[str, Dict[str, int]]
    scores: List[Tuple[str, float]]  # (type, calibrated score) of every model candidate considered


def decide(candidates: Sequence[Candidate], thresholds: Dict[str, float], types: Optional[Sequence[str]]) -> Decision:
    """Apply the thresholds to the model's candidates (module docstring).

    candidates (Sequence[Candidate]): ServedModel.candidates of one text.
    thresholds (Dict[str, float]): the effective threshold per model type.
    types (Optional[Sequence[str]]): report only these types (None: all).
    RETURNS (Decision): reported entities in text order, counts per type.
    """
    wanted = None if types is None else set(types)
    entities: List[Tuple[Candidate, Optional[float]]] = []
    counts: Dict[str, Dict[str, int]] = {}
    scores: List[Tuple[str, float]] = []
    for c in candidates:
        if wanted is not None and c.label not in wanted:
            continue
        count = counts.setdefault(c.label, {"detected": 0, "below_threshold": 0, "near_threshold": 0})
        if c.source != "model" or c.score is None:
            entities.append((c, None))
            count["detected"] += 1
            continue
        t = thresholds.get(c.label, 0.0)
        scores.append((c.label, c.score))
        if abs(c.score - t) < NEAR_THRESHOLD:
            count["near_threshold"] += 1
        if c.score >= t:
            entities.append((c, t))
            count["detected"] += 1
        else:
            count["below_threshold"] += 1
    return Decision(entities, counts, scores)


def short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf8")).hexdigest()[:16]
