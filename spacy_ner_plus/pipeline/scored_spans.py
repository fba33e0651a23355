"""Scored spans: every decoded entity with its score in a ``doc.spans`` group (spancat's
convention, ``attrs["scores"]`` aligned with the spans) and ``Span._.confidence``, which looks
an entity up in the groups registered here. ``ner_plus`` and ``pii_patterns`` write such groups."""
from typing import Dict, Optional

from spacy.tokens import Span

SPAN_SCORES = "scores"
SPAN_RAW_SCORES = "raw_scores"
# ner_plus also writes how many windows the Doc was split into, and per span [covering, agreeing]
# windows (windowing.window_agreement), so a service can say when a text was windowed
SPAN_WINDOWS = "n_windows"
SPAN_WINDOW_VOTES = "window_votes"
# doc.spans keys whose groups carry attrs["scores"] for Span._.confidence, in lookup order.
_SCORED_KEYS: Dict[str, None] = {"ner_plus": None}


def register_scored_spans_key(key: str) -> None:
    """Make ``Span._.confidence`` look entities up in ``doc.spans[key]`` too.

    The group must follow spancat's convention, ``attrs["scores"]`` aligned
    with its spans, and keep its spans sorted by start.
    """
    _SCORED_KEYS.setdefault(key, None)


def _confidence_getter(span: Span) -> Optional[float]:
    """The score of ``span`` in a registered scored span group, or None.

    The group's spans are sorted by start (set_annotations writes them so),
    so the lookup is a binary search: O(log n) per entity on long documents.
    """
    for key in tuple(_SCORED_KEYS):
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
