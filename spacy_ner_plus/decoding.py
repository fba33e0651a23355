"""Constrained Viterbi decoding and span confidence.

``viterbi`` finds the tag sequence of highest total log-probability among
the sequences the scheme allows (``schemes.transition_constraints``), so the
decoded entities are always well formed and never overlap.

Span confidence (raw, before calibration): the probability, under the
per-token distributions ``p``, that the tokens read exactly this entity,
type and both boundaries:
- IOB2: ``p[s, B-X] * prod_{s<t<e} p[t, I-X] * (1 - p[e, I-X])`` (the last
  factor only when a token follows: it must not continue the entity);
- BIOES: ``p[s, S-X]`` for one token, else
  ``p[s, B-X] * prod_{s<t<e-1} p[t, I-X] * p[e-1, E-X]``.
It lies in [0, 1], and is 1 only when every token is certain.
"""
from typing import Dict, List, Sequence

import numpy

from .schemes import SpanTuple, split_tag, tags_to_spans

_NEG_INF = -1e30


def viterbi(log_probs: numpy.ndarray, constraints: Dict[str, numpy.ndarray]) -> numpy.ndarray:
    """Best valid tag path.

    log_probs (numpy.ndarray): (n_tokens, n_tags) log-probabilities.
    constraints (Dict[str, numpy.ndarray]): boolean "start", "transition", "end".
    RETURNS (numpy.ndarray): (n_tokens,) tag indices.
    """
    n, n_tags = log_probs.shape
    if n == 0:
        return numpy.zeros((0,), dtype="int64")
    # The per-token argmax maximizes the unconstrained sum; when the scheme
    # allows it, it is the constrained optimum too (the usual case, no loop).
    greedy = log_probs.argmax(axis=1)
    if (
        constraints["start"][greedy[0]]
        and constraints["end"][greedy[-1]]
        and constraints["transition"][greedy[:-1], greedy[1:]].all()
    ):
        return greedy.astype("int64")
    scores = log_probs.astype("float64")
    trans = numpy.where(constraints["transition"], 0.0, _NEG_INF)
    best = scores[0] + numpy.where(constraints["start"], 0.0, _NEG_INF)
    back = numpy.zeros((n, n_tags), dtype="int64")
    for t in range(1, n):
        candidates = best[:, None] + trans  # [previous, next]
        back[t] = candidates.argmax(axis=0)
        best = candidates[back[t], numpy.arange(n_tags)] + scores[t]
    best = best + numpy.where(constraints["end"], 0.0, _NEG_INF)
    path = numpy.zeros(n, dtype="int64")
    path[-1] = int(best.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode(probs: numpy.ndarray, tags: Sequence[str], constraints: Dict[str, numpy.ndarray]) -> List[SpanTuple]:
    """Entities of the best valid path through per-token distributions ``probs``."""
    path = viterbi(numpy.log(numpy.clip(probs, 1e-12, 1.0)), constraints)
    return tags_to_spans([tags[i] for i in path])


def span_confidence(probs: numpy.ndarray, span: SpanTuple, tag_index: Dict[str, int], scheme: str) -> float:
    """Raw confidence of one entity (see module docstring)."""
    start, end, label = span
    n = probs.shape[0]
    if scheme == "BIOES":
        if end - start == 1:
            return float(probs[start, tag_index[f"S-{label}"]])
        inner = probs[start + 1 : end - 1, tag_index[f"I-{label}"]]
        value = probs[start, tag_index[f"B-{label}"]] * numpy.prod(inner) * probs[end - 1, tag_index[f"E-{label}"]]
    else:
        inner = probs[start + 1 : end, tag_index[f"I-{label}"]]
        value = probs[start, tag_index[f"B-{label}"]] * numpy.prod(inner)
        if end < n:
            value *= 1.0 - probs[end, tag_index[f"I-{label}"]]
    return float(min(1.0, max(0.0, value)))


def labels_of(tags: Sequence[str]) -> List[str]:
    """Entity labels of a tag list, in order of first appearance."""
    seen: List[str] = []
    for tag in tags:
        _, label = split_tag(tag)
        if label is not None and label not in seen:
            seen.append(label)
    return seen
