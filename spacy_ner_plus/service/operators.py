"""Anonymization operators for detected entities: pure functions, no model.

``redact(text, entities, operators, hasher)`` replaces each entity of
``text`` by what its type's operator makes of it and returns the new text
with one item per replaced region whose offsets refer to the NEW text.

Operators (``{"type": NAME, ...params}``, the shape Presidio's anonymizer uses):
- ``replace``: the entity becomes ``new_value`` (default ``<TYPE>``).
- ``mask``: ``chars_to_mask`` characters (default: all) become ``masking_char``
  (default ``*``), counted from the start, or from the end with ``from_end``.
- ``redact``: the entity is removed (its item has ``start == end``).
- ``hash``: a keyed token ``<TYPE_KEYID_DIGEST>`` (keys.py): one value of one
  type gives one token in every request, and without the key nobody can
  confirm a guess by hashing it.
- ``keep``: the text stays; the item is still reported.

Which operators a request may choose, and with which parameters, is the
operator policy's decision (policy.py): it fills in the two fields a request
cannot set, ``max_visible`` (a mask never leaves more characters visible) and
``hide_original`` (a replacement may not contain the entity's text).

Offsets count Unicode code points (Python ``str`` indices, as spaCy's
``start_char``/``end_char``), not bytes or UTF-16 units; ``mask`` masks code
points, so a letter with a combining mark becomes two mask characters.

Overlapping entities (they share a character; merely adjacent ones do not)
are merged into one region, the union of their extents, so no character of
any of them survives. The region takes the type and operator of one member:
an operator that hides text wins over ``keep``; then the highest score, the
longest span, the earliest start and the type name decide, so the result
does not depend on the order of ``entities``.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

OPERATOR_NAMES = ("replace", "mask", "redact", "hash", "keep")
DEFAULT_KEY = "DEFAULT"
# Parameter name -> Python type, per operator; anything else is an error.
_PARAMS: Dict[str, Dict[str, type]] = {
    "replace": {"new_value": str},
    "mask": {"masking_char": str, "chars_to_mask": int, "from_end": bool},
    "redact": {},
    "hash": {},
    "keep": {},
}


class OperatorError(ValueError):
    """A bad operator specification.

    kind (str): "unknown_type" (an entity type nobody knows), "unknown_operator"
        (not one of OPERATOR_NAMES) or "invalid" (a bad or unknown parameter).
    field (str): where, as a dotted path under ``operators`` (e.g. "operators.PER.masking_char").
    """

    def __init__(self, kind: str, field: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


class RedactionRefused(ValueError):
    """An operator whose result would break its policy (a replacement that contains the entity's text).

    where (str): the request field the operator came from (e.g. "operators.PER").
    rule (str): the policy rule, as policy.py names it.
    """

    def __init__(self, where: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.rule = rule


class OutputTooLarge(ValueError):
    """The redacted text would exceed ``max_output_chars``; nothing of it is returned."""


@dataclass(frozen=True)
class Operator:
    """One operator with its parameters (defaults as documented above).

    max_visible (Optional[int]): set by the policy, never by a request: a mask leaves at
        most this many characters of the entity visible (chars_to_mask is raised to meet it).
    hide_original (bool): set by the policy: a replacement containing the entity's text is refused.
    where (str): the request field the operator came from, for error messages.
    rule (str): the policy rule behind ``max_visible``/``hide_original``, for error messages.
    """

    name: str
    new_value: Optional[str] = None
    masking_char: str = "*"
    chars_to_mask: Optional[int] = None
    from_end: bool = False
    max_visible: Optional[int] = None
    hide_original: bool = False
    where: str = field(default="", compare=False)
    rule: str = field(default="", compare=False)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": self.name}
        for key in _PARAMS[self.name]:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class Entity:
    """An entity to redact: code-point offsets into the input text."""

    start: int
    end: int
    entity_type: str
    score: Optional[float] = None


@dataclass(frozen=True)
class RedactedItem:
    """One replaced region: code-point offsets into the OUTPUT text.

    input_start / input_end (int): the region in the INPUT text.
    visible_chars (int): characters of the region's text the output still shows
        (0: redacted; the region's length: kept, e.g. ``keep`` or a mask of 0 characters).
    """

    entity_type: str
    start: int
    end: int
    operator: str
    input_start: int = field(default=0, compare=False)
    input_end: int = field(default=0, compare=False)
    visible_chars: int = field(default=0, compare=False)


def parse_operators(spec: Mapping[str, Any], known_types: Iterable[str]) -> Dict[str, Operator]:
    """Check a request's ``operators`` object and build its operators.

    spec (Mapping[str, Any]): ``{"DEFAULT" | TYPE: {"type": NAME, ...params}}``.
    known_types (Iterable[str]): the entity types the service can detect.
    RETURNS (Dict[str, Operator]): operator per key of ``spec``.
    RAISES (OperatorError): an unknown type or operator name, or a bad parameter.
    """
    known = set(known_types)
    operators: Dict[str, Operator] = {}
    for key, params in spec.items():
        where = f"operators.{key}"
        if key != DEFAULT_KEY and key not in known:
            raise OperatorError("unknown_type", where, f"unknown entity type '{clip(key)}' in operators; known: {sorted(known)} and {DEFAULT_KEY}")
        if not isinstance(params, Mapping):
            raise OperatorError("invalid", where, f"{where} must be an object like {{\"type\": \"replace\"}}")
        name = params.get("type")
        if not isinstance(name, str):
            raise OperatorError("invalid", f"{where}.type", f"{where}.type must be one of {list(OPERATOR_NAMES)}")
        if name not in _PARAMS:
            raise OperatorError("unknown_operator", f"{where}.type", f"unknown operator '{clip(name)}' at {where}.type; use one of {list(OPERATOR_NAMES)}")
        kwargs: Dict[str, Any] = {}
        for param, value in params.items():
            if param == "type":
                continue
            expected = _PARAMS[name].get(param)
            if expected is None:
                allowed = sorted(_PARAMS[name]) or "none"
                raise OperatorError("invalid", f"{where}.{param}", f"{where}: operator '{name}' has no parameter '{clip(param)}' (parameters: {allowed})")
            # bool is an int in Python; chars_to_mask: true must still be refused
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise OperatorError("invalid", f"{where}.{param}", f"{where}.{param} must be a {expected.__name__}")
            kwargs[param] = value
        op = Operator(name, **kwargs, where=where)
        if name == "mask":
            if len(op.masking_char) != 1:
                raise OperatorError("invalid", f"{where}.masking_char", f"{where}.masking_char must be exactly one character")
            if op.chars_to_mask is not None and op.chars_to_mask < 0:
                raise OperatorError("invalid", f"{where}.chars_to_mask", f"{where}.chars_to_mask must be >= 0")
        operators[key] = op
    return operators


def operator_for(entity_type: str, operators: Mapping[str, Operator]) -> Operator:
    """The operator of ``entity_type``: its own, else DEFAULT, else ``replace``."""
    return operators.get(entity_type) or operators.get(DEFAULT_KEY) or Operator("replace")


def apply_operator(op: Operator, value: str, entity_type: str, hasher: Optional[Callable[[str, str], str]]) -> str:
    """What ``op`` makes of the entity text ``value``.

    hasher (Optional[Callable[[str, str], str]]): (type, text) -> token, for ``hash`` (keys.Keyring.hasher).
    RAISES (ValueError): ``hash`` without a hasher.
    RAISES (RedactionRefused): a replacement containing ``value`` under ``hide_original``.
    """
    if op.name == "replace":
        if op.new_value is None:
            return f"<{entity_type}>"
        if op.hide_original and _contains(op.new_value, value):
            raise RedactionRefused(op.where, op.rule, f"{op.where}.new_value: the replacement of a {entity_type} may not contain the entity's text (rule {op.rule})")
        return op.new_value
    if op.name == "mask":
        n = _masked_count(op, value)
        if op.from_end:
            return value[: len(value) - n] + op.masking_char * n
        return op.masking_char * n + value[n:]
    if op.name == "redact":
        return ""
    if op.name == "hash":
        if hasher is None:
            raise ValueError("the hash operator needs a key")
        return hasher(entity_type, value)
    if op.name == "keep":
        return value
    raise ValueError(f"unknown operator '{op.name}'")


def visible_chars(op: Operator, value: str, replacement: str) -> int:
    """How many characters of the entity text ``value`` its ``replacement`` still shows."""
    if op.name == "keep":
        return len(value)
    if op.name == "mask":
        return len(value) - _masked_count(op, value)
    if op.name == "replace":
        return len(value) if _contains(replacement, value) else 0
    return 0


def _masked_count(op: Operator, value: str) -> int:
    n = len(value) if op.chars_to_mask is None else min(op.chars_to_mask, len(value))
    return n if op.max_visible is None else max(n, len(value) - op.max_visible)


def _contains(haystack: str, needle: str) -> bool:
    """Whether ``haystack`` shows ``needle``, ignoring case and runs of whitespace."""
    needle = " ".join(needle.casefold().split())
    return bool(needle) and needle in " ".join(haystack.casefold().split())


def merge_overlaps(entities: Sequence[Entity], operators: Mapping[str, Operator]) -> List[Tuple[int, int, str, Operator]]:
    """Regions to replace: overlapping entities merged (module docstring).

    RETURNS (List[Tuple[int, int, str, Operator]]): (start, end, type, operator),
        sorted by start, pairwise disjoint (adjacent ones stay apart).
    RAISES (ValueError): an entity with end <= start or a negative start.
    """
    for e in entities:
        if e.start < 0 or e.end <= e.start:
            raise ValueError(f"entity {e.entity_type} has bad offsets [{e.start}, {e.end})")
    ordered = sorted(entities, key=lambda e: (e.start, e.end, e.entity_type))
    clusters: List[List[Entity]] = []
    end = -1
    for e in ordered:
        if clusters and e.start < end:
            clusters[-1].append(e)
            end = max(end, e.end)
        else:
            clusters.append([e])
            end = e.end
    regions = []
    for members in clusters:

        def rank(e: Entity) -> Tuple:
            hides = operator_for(e.entity_type, operators).name != "keep"
            score = -1.0 if e.score is None else e.score
            return (hides, score, e.end - e.start, -e.start, e.entity_type)

        winner = max(members, key=rank)
        start = min(e.start for e in members)
        stop = max(e.end for e in members)
        regions.append((start, stop, winner.entity_type, operator_for(winner.entity_type, operators)))
    return regions


def redact(
    text: str,
    entities: Sequence[Entity],
    operators: Mapping[str, Operator],
    hasher: Optional[Callable[[str, str], str]] = None,
    max_output_chars: Optional[int] = None,
) -> Tuple[str, List[RedactedItem]]:
    """Apply the operators to every entity of ``text``.

    text (str): the input text.
    entities (Sequence[Entity]): code-point offsets into ``text``, in any order, may overlap.
    operators (Mapping[str, Operator]): per type and/or DEFAULT (parse_operators, policy.resolve_operators).
    hasher (Optional[Callable[[str, str], str]]): (type, text) -> token of the ``hash`` operator (keys.Keyring.hasher).
    max_output_chars (Optional[int]): the longest output allowed; checked as it grows, so a
        request cannot make the service build more than that.
    RETURNS (Tuple[str, List[RedactedItem]]): the new text and its items, offsets into the new text.
    RAISES (ValueError): an entity outside ``text`` or ``hash`` without a hasher.
    RAISES (RedactionRefused): an operator whose result its policy forbids.
    RAISES (OutputTooLarge): the output would exceed ``max_output_chars``.
    """
    for e in entities:
        if e.end > len(text):
            raise ValueError(f"entity {e.entity_type} [{e.start}, {e.end}) ends after the text ({len(text)} characters)")
    pieces: List[str] = []
    items: List[RedactedItem] = []
    cursor = 0
    out_len = 0
    for start, end, entity_type, op in merge_overlaps(entities, operators):
        pieces.append(text[cursor:start])
        out_len += start - cursor
        value = text[start:end]
        replacement = apply_operator(op, value, entity_type, hasher)
        pieces.append(replacement)
        items.append(RedactedItem(entity_type, out_len, out_len + len(replacement), op.name, start, end, visible_chars(op, value, replacement)))
        out_len += len(replacement)
        cursor = end
        if max_output_chars is not None and out_len + (len(text) - cursor) > max_output_chars:
            raise OutputTooLarge(f"the redacted text would exceed {max_output_chars} characters")
    pieces.append(text[cursor:])
    out_len += len(text) - cursor
    if max_output_chars is not None and out_len > max_output_chars:
        raise OutputTooLarge(f"the redacted text would exceed {max_output_chars} characters")
    return "".join(pieces), items


def clip(name: Any, limit: int = 64) -> str:
    """A client-supplied name, shortened for an error message."""
    name = str(name)
    return name if len(name) <= limit else name[:limit] + "..."
