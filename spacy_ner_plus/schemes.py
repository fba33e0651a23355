"""Tagging schemes as data: parse, detect, validate, decode, encode, repair.

A span is a tuple ``(start, end, label)`` over token indices, ``end`` exclusive.

Schemes:
- ``IOB1``: ``I-X`` everywhere, ``B-X`` only where an X entity directly follows
  another X entity (CoNLL-2003's original files).
- ``IOB2`` (alias ``BIO``): every entity starts with ``B-X``.
- ``BIOES`` (aliases ``IOBES``, ``BILOU``): ``S-X`` for one-token entities,
  ``B-X I-X* E-X`` otherwise. ``L`` and ``U`` are read as ``E`` and ``S``.

Lenient decoding (used by ``tags_to_spans`` and therefore by ``repair``) is
conlleval's rule, extended to BIOES: a tag continues the open entity when the
label matches and the open entity has not been closed by ``E``/``S``;
otherwise it starts a new entity. Every non-``O`` token therefore ends up in
exactly one entity, so a repair never drops an entity.

Labels: the tag prefix is split at the first hyphen, so a label may hold
hyphens (``B-work-of-art``, ``I-DATE-TIME``), as in spaCy's ``ner``.
``label_problem`` says which labels the ``ner_plus`` component refuses.
"""
import unicodedata
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy

SpanTuple = Tuple[int, int, str]

SCHEME_ALIASES = {
    "IOB1": "IOB1",
    "IOB2": "IOB2",
    "BIO": "IOB2",
    "BIOES": "BIOES",
    "IOBES": "BIOES",
    "BILOU": "BIOES",
}
PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}
_BILOU_TO_BIOES = {"L": "E", "U": "S"}


class TagError(ValueError):
    """A tag that cannot be parsed: unknown prefix or empty label."""


def normalize_scheme(name: str) -> str:
    """Map a scheme name or alias to ``IOB1``, ``IOB2`` or ``BIOES``.

    name (str): e.g. "BIO", "iob2", "BILOU".
    RETURNS (str): the canonical scheme name.
    """
    key = name.upper()
    if key not in SCHEME_ALIASES:
        raise ValueError(
            f"Unknown tag scheme '{name}'. Choose one of: {', '.join(SCHEME_ALIASES)}"
        )
    return SCHEME_ALIASES[key]


def split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """Split a tag into (prefix, label). ``O`` gives ("O", None).

    Accepts B/I/E/S and the BILOU letters L/U (returned as E/S).
    RAISES (TagError): for an unknown prefix or a missing label.
    """
    if tag == "O":
        return "O", None
    prefix, sep, label = tag.partition("-")
    if not sep:
        raise TagError(
            f"tag '{tag}' has no prefix: expected O or PREFIX-LABEL such as B-{tag}"
        )
    prefix = _BILOU_TO_BIOES.get(prefix, prefix)
    if prefix not in ("B", "I", "E", "S"):
        raise TagError(f"tag '{tag}' has unknown prefix '{prefix}' (expected B, I, E, S, L, U)")
    if not label:
        raise TagError(f"tag '{tag}' has an empty label")
    return prefix, label


def describe_character(char: str) -> str:
    """A character as ``U+FEFF (ZERO WIDTH NO-BREAK SPACE)``, for messages about
    characters a reader cannot see.

    char (str): one character.
    RETURNS (str): its code point and Unicode name (or category for a nameless
        control character).
    """
    name = unicodedata.name(char, None) or f"control character, category {unicodedata.category(char)}"
    return f"U+{ord(char):04X} ({name})"


def label_problem(label: str) -> Optional[str]:
    """Why the ``ner_plus`` component cannot take ``label``, or None when it can.

    Every label spaCy's ``ner`` takes is fine, hyphens included
    (``work-of-art``, ``DATE-TIME``). Refused: a label that is not a string or
    is empty; one holding whitespace or control characters (a tag written
    with them cannot be read back from a column file, and shows as something
    else in reports); and ``O``, which would clash with the outside tag (and
    with the ``O`` row of evaluate's confusion matrix).

    label (str): an entity label, without tag prefix.
    RETURNS (Optional[str]): None, or a message saying what is wrong.
    """
    if not isinstance(label, str):
        return f"a label must be a string, not {type(label).__name__}"
    if not label:
        return "the label is empty"
    if label == "O":
        return "'O' cannot be a label: it is the tag of tokens outside any entity"
    for position, char in enumerate(label):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Zs", "Zl", "Zp"):
            return f"a label cannot hold whitespace or control characters: {describe_character(char)} at position {position}"
    return None


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Guess the scheme of tag sequences (unparseable tags are ignored).

    Any E/S/L/U prefix means BIOES. Otherwise, when entities start with I-
    and B- is only ever used right after an entity of the same label, the
    data is IOB1; everything else is IOB2.
    RETURNS (str): "IOB1", "IOB2" or "BIOES".
    """
    i_starts = 0
    b_after_outside = 0
    for tags in tag_sequences:
        prev: Tuple[str, Optional[str]] = ("O", None)
        for tag in tags:
            try:
                prefix, label = split_tag(tag)
            except TagError:
                prev = ("O", None)
                continue
            if prefix in ("E", "S"):
                return "BIOES"
            if prefix == "I" and prev[1] != label:
                i_starts += 1
            elif prefix == "B" and prev[1] != label:
                b_after_outside += 1
            prev = (prefix, label)
    return "IOB1" if i_starts and not b_after_outside else "IOB2"


def find_errors(tags: Sequence[str], scheme: str) -> List[Tuple[int, str]]:
    """Every place where ``tags`` is ill-formed for ``scheme``.

    tags (Sequence[str]): one sentence's tags.
    scheme (str): scheme name or alias.
    RETURNS (List[Tuple[int, str]]): (token index, message), in token order.
    """
    scheme = normalize_scheme(scheme)
    allowed = PREFIXES[scheme]
    parsed: List[Tuple[str, Optional[str]]] = []
    errors: List[Tuple[int, str]] = []
    for i, tag in enumerate(tags):
        try:
            prefix, label = split_tag(tag)
        except TagError as err:
            errors.append((i, str(err)))
            parsed.append(("?", None))
            continue
        if prefix != "O" and prefix not in allowed:
            errors.append((i, f"tag '{tag}': prefix '{tag.split('-')[0]}' is not part of {scheme}"))
            parsed.append(("?", None))
            continue
        parsed.append((prefix, label))
    n = len(parsed)
    for i, (prefix, label) in enumerate(parsed):
        if prefix in ("O", "?"):
            continue
        prev_p, prev_l = parsed[i - 1] if i > 0 else ("O", None)
        next_p, next_l = parsed[i + 1] if i + 1 < n else ("O", None)
        continues_prev = prev_l == label and prev_p in ("B", "I")
        tag = tags[i]
        if scheme == "IOB2" and prefix == "I" and not continues_prev:
            errors.append((i, f"'{tag}' does not continue an entity of type {label} (IOB2 entities start with B-{label})"))
        elif scheme == "IOB1" and prefix == "B" and prev_l != label:
            errors.append((i, f"'{tag}' follows no {label} entity (IOB1 uses B- only between two adjacent {label} entities)"))
        elif scheme == "BIOES":
            if prefix in ("I", "E") and not continues_prev:
                errors.append((i, f"'{tag}' does not continue an entity of type {label} (BIOES entities start with B-{label} or S-{label})"))
            if prefix in ("B", "I") and not (next_l == label and next_p in ("I", "E")):
                errors.append((i, f"'{tag}' is not followed by I-{label} or E-{label}: the entity is never closed"))
    errors.sort(key=lambda e: e[0])
    return errors


def tags_to_spans(tags: Sequence[str]) -> List[SpanTuple]:
    """Decode tags of any scheme into spans, leniently (see module docstring).

    For a sequence that is well formed for its scheme, this is the exact
    decoding. RAISES (TagError) on a tag that cannot be parsed.
    """
    spans: List[SpanTuple] = []
    start: Optional[int] = None
    current: Optional[str] = None
    closed = True
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix == "O":
            if current is not None:
                spans.append((start, i, current))  # type: ignore[arg-type]
            start, current, closed = None, None, True
            continue
        starts_new = prefix in ("B", "S") or closed or current != label
        if starts_new:
            if current is not None:
                spans.append((start, i, current))  # type: ignore[arg-type]
            start, current = i, label
        closed = prefix in ("E", "S")
    if current is not None:
        spans.append((start, len(tags), current))  # type: ignore[arg-type]
    return spans


def spans_to_tags(spans: Iterable[SpanTuple], length: int, scheme: str) -> List[str]:
    """Encode non-overlapping spans as tags of ``scheme``.

    spans (Iterable[SpanTuple]): (start, end, label), end exclusive.
    length (int): number of tokens.
    scheme (str): scheme name or alias.
    RETURNS (List[str]): the tags.
    """
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    prev_end, prev_label = -1, None
    for start, end, label in sorted(spans):
        if start < prev_end:
            raise ValueError(f"overlapping spans at token {start}")
        if not 0 <= start < end <= length:
            raise ValueError(f"span ({start}, {end}) out of range for {length} tokens")
        if scheme == "BIOES":
            if end - start == 1:
                tags[start] = f"S-{label}"
            else:
                tags[start] = f"B-{label}"
                tags[end - 1] = f"E-{label}"
                for i in range(start + 1, end - 1):
                    tags[i] = f"I-{label}"
        else:
            first = "B"
            if scheme == "IOB1" and not (prev_end == start and prev_label == label):
                first = "I"
            tags[start] = f"{first}-{label}"
            for i in range(start + 1, end):
                tags[i] = f"I-{label}"
        prev_end, prev_label = end, label
    return tags


def repair(tags: Sequence[str], scheme: str) -> Tuple[List[str], List[Tuple[int, str]]]:
    """Re-encode ``tags`` so they are well formed for ``scheme``.

    The rule: decode leniently (``tags_to_spans``) and encode again. Each
    changed position is reported. RAISES (TagError) on unparseable tags,
    which no rule can repair.
    RETURNS (Tuple[List[str], List[Tuple[int, str]]]): new tags, (index, "old -> new").
    """
    fixed = spans_to_tags(tags_to_spans(tags), len(tags), scheme)
    changes = [(i, f"{old} -> {new}") for i, (old, new) in enumerate(zip(tags, fixed)) if old != new]
    return fixed, changes


def tag_names(labels: Sequence[str], scheme: str) -> List[str]:
    """All tags of ``scheme`` for ``labels``: "O" first, then per label in order."""
    scheme = normalize_scheme(scheme)
    prefixes = ("B", "I", "E", "S") if scheme == "BIOES" else ("B", "I")
    return ["O"] + [f"{p}-{label}" for label in labels for p in prefixes]


def from_biluo(tag: str, scheme: str) -> str:
    """spaCy's BILUO tag (``Example.get_aligned_ner``) as a tag of ``scheme``
    ("BIOES": L and U become E and S; "BIO"/"IOB2": they become I and B).

    tag (str): a BILUO tag, "O" or e.g. "U-PER".
    scheme (str): "BIOES" or "IOB2" (and their aliases).
    """
    prefix, label = tag[0], tag[2:]
    if prefix == "O":
        return "O"
    if normalize_scheme(scheme) == "BIOES":
        return _BILOU_TO_BIOES.get(prefix, prefix) + "-" + label
    return {"U": "B", "L": "I"}.get(prefix, prefix) + "-" + label


def transition_constraints(tags: Sequence[str], scheme: str) -> Dict[str, numpy.ndarray]:
    """Masks of the valid starts, transitions and ends of a scheme.

    RETURNS (Dict[str, numpy.ndarray]): "start" (n,), "transition" (n, n)
        indexed [previous, next], "end" (n,), each boolean.
    """
    scheme = normalize_scheme(scheme)
    if scheme == "IOB1":
        raise ValueError("Models predict IOB2 or BIOES; IOB1 is an input format only")
    parsed = [split_tag(t) for t in tags]
    n = len(tags)
    start = numpy.zeros(n, dtype=bool)
    end = numpy.zeros(n, dtype=bool)
    trans = numpy.zeros((n, n), dtype=bool)
    opens = ("B", "I") if scheme == "BIOES" else ()
    for j, (p, label) in enumerate(parsed):
        start[j] = p in ("O", "B", "S")
        end[j] = p not in opens
        for i, (pp, plabel) in enumerate(parsed):
            if p in ("O", "B", "S"):
                trans[i, j] = pp not in opens
            else:  # I (and E) continue an open entity of the same label
                trans[i, j] = pp in ("B", "I") and plabel == label
    return {"start": start, "transition": trans, "end": end}
