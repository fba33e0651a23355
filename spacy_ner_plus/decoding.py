"""Constrained Viterbi decoding and span confidence.

``viterbi`` finds the tag sequence of highest total log-probability among
the sequences the scheme allows (``schemes.transition_constraints``), so the
decoded entities are always well formed and never overlap. Two kinds of
position constraints come on top: tokens that must be outside any entity
(entities already set on the Doc: the decoder predicts around them) and
tokens that may lie inside an entity but neither start nor end one
(whitespace tokens).

Span confidence (raw, before calibration): the probability, under the
per-token distributions ``p``, that the tokens read exactly this entity,
type and both boundaries:
- IOB2: ``p[s, B-X] * prod_{s<t<e} p[t, I-X] * (1 - p[e, I-X])`` (the last
  factor only when a token follows: it must not continue the entity);
- BIOES: ``p[s, S-X]`` for one token, else
  ``p[s, B-X] * prod_{s<t<e-1} p[t, I-X] * p[e-1, E-X]``.
It lies in [0, 1], and is 1 only when every token is certain.

Joining touching entities (``join_touching``, the pipe's opt-in setting):
a model may cut one mention into pieces that touch, ``B-X B-X`` or
``B-X I-X B-X`` (``acute`` + ``renal failure``); ``join_touching`` reads
every run of touching entities of one type as one entity. A joined entity's
tag-sequence confidence would be tiny (the model gave ``I-X`` little mass
where it put ``B-X``), so in that mode every entity is scored by
``run_confidence``: the probability that exactly its tokens are of type X,
``prod_{s<=t<e} q[t, X] * (1 - q[s-1, X]) * (1 - q[e, X])`` with ``q[t, X]``
the mass of all of X's tags at t (the outer factors only where a token is).

Decoding bias (``bias_vector``, the pipe's ``decoding_bias``, chosen by
calibrate for a ``recall:R`` policy that thresholds cannot reach): ``b >= 0``
added to the log-probability of every tag of a type before Viterbi, so a token
reads as that type where ``p[t, X-tag] * e^b`` beats the other tags (b = 1:
where its probability is above 0.37 of O's). Only the path changes: every
confidence above is computed from the unbiased ``p``, so calibrators and
thresholds keep their meaning. No bias (None) decodes exactly as before.
"""
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy

from .schemes import SpanTuple, split_tag, tags_to_spans, transition_constraints

_NEG_INF = -1e30


def constraints_for(tags: Sequence[str], scheme: str) -> Dict[str, numpy.ndarray]:
    """The scheme's masks (schemes.transition_constraints) plus what position
    constraints need: "outside" (the O tag), "inner" (tags that may sit on a
    token that neither starts nor ends an entity: O and I-X) and "continues"
    [previous, next] (next carries on the entity of previous).

    Built once per tag set and scheme (a pipe asks for them at every batch; the
    transition mask costs a Python step per pair of tags): the arrays are read-only,
    the dict is the caller's own."""
    return dict(_constraints(tuple(tags), scheme))


@functools.lru_cache(maxsize=64)
def _constraints(tags: Tuple[str, ...], scheme: str) -> Dict[str, numpy.ndarray]:
    constraints = transition_constraints(tags, scheme)
    prefixes = [split_tag(t)[0] for t in tags]
    constraints["outside"] = numpy.array([p == "O" for p in prefixes])
    constraints["inner"] = numpy.array([p in ("O", "I") for p in prefixes])
    constraints["continues"] = constraints["transition"] & numpy.array([p in ("I", "E") for p in prefixes])[None, :]
    for array in constraints.values():
        array.flags.writeable = False
    return constraints


def viterbi(
    log_probs: numpy.ndarray,
    constraints: Dict[str, numpy.ndarray],
    allowed: Optional[numpy.ndarray] = None,
    no_end: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    """Best valid tag path.

    log_probs (numpy.ndarray): (n_tokens, n_tags) log-probabilities.
    constraints (Dict[str, numpy.ndarray]): boolean "start", "transition",
        "end" (and "continues", "outside" when ``no_end`` is given).
    allowed (Optional[numpy.ndarray]): (n_tokens, n_tags) tags each token may take.
    no_end (Optional[numpy.ndarray]): (n_tokens,) tokens at which no entity may end.
    RETURNS (numpy.ndarray): (n_tokens,) tag indices.
    """
    n, n_tags = log_probs.shape
    if n == 0:
        return numpy.zeros((0,), dtype="int64")
    scores = log_probs.astype("float64")
    if allowed is not None:
        scores = numpy.where(allowed, scores, _NEG_INF)
    trans_ok = constraints["transition"]
    # An entity that must not end at t: its tag at t is followed by one that continues it.
    no_end_trans = trans_ok & (constraints["outside"][:, None] | constraints["continues"]) if no_end is not None else trans_ok
    end_ok = constraints["end"] & (constraints["outside"] if no_end is not None and no_end[-1] else True)
    # The per-token argmax maximizes the unconstrained sum; when every
    # constraint allows it, it is the constrained optimum too (the usual case, no loop).
    greedy = scores.argmax(axis=1)
    steps_ok = trans_ok[greedy[:-1], greedy[1:]]
    if no_end is not None:
        steps_ok = numpy.where(no_end[:-1], no_end_trans[greedy[:-1], greedy[1:]], steps_ok)
    if (
        scores[numpy.arange(n), greedy].min() > _NEG_INF / 2
        and constraints["start"][greedy[0]]
        and end_ok[greedy[-1]]
        and steps_ok.all()
    ):
        return greedy.astype("int64")
    penalty = numpy.where(trans_ok, 0.0, _NEG_INF)
    no_end_penalty = numpy.where(no_end_trans, 0.0, _NEG_INF)
    best = scores[0] + numpy.where(constraints["start"], 0.0, _NEG_INF)
    back = numpy.zeros((n, n_tags), dtype="int64")
    for t in range(1, n):
        step = no_end_penalty if no_end is not None and no_end[t - 1] else penalty
        candidates = best[:, None] + step  # [previous, next]
        back[t] = candidates.argmax(axis=0)
        best = candidates[back[t], numpy.arange(n_tags)] + scores[t]
    best = best + numpy.where(end_ok, 0.0, _NEG_INF)
    path = numpy.zeros(n, dtype="int64")
    path[-1] = int(best.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def bias_vector(tags: Sequence[str], decoding_bias: Dict[str, float]) -> Optional[numpy.ndarray]:
    """Per tag column, the bias of its type (module docstring); None when no
    type has a bias other than 0 (decoding then costs nothing extra).

    RAISES (ValueError): a bias that is negative or not finite, or a label without tags.
    """
    labels = {split_tag(tag)[1] for tag in tags if tag != "O"}
    unknown = sorted(set(decoding_bias) - labels)
    if unknown:
        raise ValueError(f"decoding bias for unknown label(s) {unknown} (labels: {sorted(labels)})")
    bad = {label: b for label, b in decoding_bias.items() if not (numpy.isfinite(b) and b >= 0)}
    if bad:
        raise ValueError(f"a decoding bias must be a finite number >= 0, not {bad}")
    if not any(decoding_bias.values()):
        return None
    return numpy.array([0.0 if tag == "O" else float(decoding_bias.get(split_tag(tag)[1], 0.0)) for tag in tags])


def decode(
    probs: numpy.ndarray,
    tags: Sequence[str],
    constraints: Dict[str, numpy.ndarray],
    fixed_outside: Sequence[Tuple[int, int]] = (),
    no_edge: Optional[Sequence[bool]] = None,
    bias: Optional[numpy.ndarray] = None,
) -> List[SpanTuple]:
    """Entities of the best valid path through per-token distributions ``probs``.

    probs (numpy.ndarray): (n_tokens, n_tags) per-token distributions.
    tags (Sequence[str]): the tag of each column.
    constraints (Dict[str, numpy.ndarray]): from ``constraints_for``.
    fixed_outside (Sequence[Tuple[int, int]]): token ranges no entity may
        touch (entities already set: the decoder predicts around them).
    no_edge (Optional[Sequence[bool]]): per token, True where no entity may
        start or end (whitespace tokens); such a token may lie inside one.
    bias (Optional[numpy.ndarray]): (n_tags,) added to the log-probabilities
        before Viterbi (``bias_vector``); None: none.
    RETURNS (List[SpanTuple]): the entities, in order.
    """
    n = probs.shape[0]
    allowed = None
    no_end = None
    if no_edge is not None and any(no_edge):
        no_end = numpy.asarray(no_edge, dtype=bool)
        allowed = numpy.ones(probs.shape, dtype=bool)
        allowed[no_end] = constraints["inner"]
    if fixed_outside:
        allowed = numpy.ones(probs.shape, dtype=bool) if allowed is None else allowed
        for start, end in fixed_outside:
            allowed[max(0, start) : min(n, end)] = constraints["outside"]
    log_probs = numpy.log(numpy.clip(probs, 1e-12, 1.0))
    if bias is not None:
        log_probs = log_probs + bias
    path = viterbi(log_probs, constraints, allowed, no_end)
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


def join_touching(spans: Sequence[SpanTuple]) -> List[SpanTuple]:
    """Entities in order, each run of touching entities of one type (one ends
    where the next starts) joined into one."""
    joined: List[SpanTuple] = []
    for start, end, label in spans:
        if joined and joined[-1][1] == start and joined[-1][2] == label:
            joined[-1] = (joined[-1][0], end, label)
        else:
            joined.append((start, end, label))
    return joined


def label_columns(tags: Sequence[str]) -> Dict[str, numpy.ndarray]:
    """Per entity label, the columns of its tags (B-, I- and, in BIOES, E-, S-)."""
    columns: Dict[str, List[int]] = {}
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix != "O":
            columns.setdefault(label, []).append(i)
    return {label: numpy.asarray(cols) for label, cols in columns.items()}


def run_confidence(probs: numpy.ndarray, span: SpanTuple, columns: Dict[str, numpy.ndarray]) -> float:
    """Raw confidence of one entity when touching entities are joined: the
    probability that exactly tokens start..end-1 are of its type (module docstring).

    columns (Dict[str, numpy.ndarray]): from ``label_columns``.
    """
    start, end, label = span
    n = probs.shape[0]
    lo, hi = max(0, start - 1), min(n, end + 1)  # the entity and the tokens beside it
    typed = probs[lo:hi, columns[label]].sum(axis=1)
    value = numpy.prod(typed[start - lo : end - lo])
    if start > 0:
        value *= 1.0 - typed[0]
    if end < n:
        value *= 1.0 - typed[-1]
    return float(min(1.0, max(0.0, value)))


def decode_scored(
    probs: numpy.ndarray,
    tags: Sequence[str],
    scheme: str,
    segments: Sequence[Tuple[int, int]],
    *,
    fixed_outside: Sequence[Tuple[int, int]] = (),
    no_edge: Optional[Sequence[bool]] = None,
    joined: bool = False,
    constraints: Optional[Dict[str, numpy.ndarray]] = None,
    bias: Optional[numpy.ndarray] = None,
) -> Tuple[List[SpanTuple], List[float]]:
    """The entities of one document and their raw confidences.

    Each segment (token range) is decoded, joined and scored on its own, as if
    it were a document, so no entity crosses a segment start (the pipe passes
    its sentences when ``within_sentences`` asks for it, else one segment).

    probs (numpy.ndarray): (n_tokens, n_tags) per-token distributions.
    tags (Sequence[str]): the tag of each column.
    scheme (str): "IOB2" or "BIOES".
    segments (Sequence[Tuple[int, int]]): token ranges decoded on their own.
    fixed_outside (Sequence[Tuple[int, int]]): token ranges that stay outside any entity.
    no_edge (Optional[Sequence[bool]]): tokens that may neither start nor end an entity.
    joined (bool): join touching entities of a type and score them with
        ``run_confidence`` (else ``span_confidence``).
    constraints (Optional[Dict]): ``constraints_for(tags, scheme)``, when the caller has it.
    bias (Optional[numpy.ndarray]): per tag, added to the log-probabilities
        before Viterbi (``bias_vector``); the confidences ignore it.
    RETURNS (Tuple[List[SpanTuple], List[float]]): entities in order and their confidences.
    """
    if constraints is None:
        constraints = constraints_for(tags, scheme)
    tag_index = {tag: i for i, tag in enumerate(tags)}
    columns = label_columns(tags) if joined else {}
    spans: List[SpanTuple] = []
    confidences: List[float] = []
    for a, b in segments:
        fixed = [(start - a, end - a) for start, end in fixed_outside if start < b and end > a]
        edges = None if no_edge is None else list(no_edge[a:b])
        found = decode(probs[a:b], tags, constraints, fixed_outside=fixed, no_edge=edges, bias=bias)
        if joined:
            found = join_touching(found)
            scores = [run_confidence(probs[a:b], s, columns) for s in found]
        else:
            scores = [span_confidence(probs[a:b], s, tag_index, scheme) for s in found]
        spans.extend((start + a, end + a, label) for start, end, label in found)
        confidences.extend(scores)
    return spans, confidences
