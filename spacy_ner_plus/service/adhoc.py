"""Ad-hoc recognisers of one request and allow lists (their regexes: regex_safety.py).

A request may bring recognisers in Presidio's ``PatternRecognizer`` JSON shape::

    {"name": "ticket", "supported_language": "en", "supported_entity": "TICKET_ID",
     "patterns": [{"name": "ticket", "regex": "TCK-\\\\d{6}", "score": 0.6}],
     "deny_list": ["Project Bluebird"], "deny_list_score": 1.0, "context": ["ticket"]}

- ``patterns``: regular expressions (the third-party ``regex`` module, flags as Presidio's
  default: case-insensitive, ``.`` matches newlines, ``^``/``$`` at lines; or
  ``global_regex_flags``, Python's ``re`` flag values, of which IGNORECASE, MULTILINE,
  DOTALL, ASCII and UNICODE are accepted). Each match is a
  candidate with source "ad_hoc" and the pattern's score.
- ``deny_list``: words or phrases always reported as the type (source "deny_list", score
  ``deny_list_score``, default 1.0), matched case-insensitively on word boundaries: the
  characters before and after a match are not word characters (or the text ends there).
- ``context``: words that raise a match's score, in the spirit of Presidio's
  LemmaContextAwareEnhancer but simpler and documented: when one of the words (compared
  case-insensitively, a trailing plural "s" of the text's word ignored) is among the
  ``CONTEXT_WINDOW`` words just before the match, the score becomes
  ``min(1, max(score + CONTEXT_BOOST, CONTEXT_MIN_SCORE))``.

Regular expressions come from clients, so they are compiled by ``regex_safety.compile_safe``:
a static check refuses catastrophic patterns (``(a+)+``, ``(a|a)*``, ``(\\w+\\s?)*``) and a
short probe on adversarial strings refuses the rest that blow up, before the pattern ever runs
on a request's text; a refused pattern is ``ApiError(400, "unsafe_pattern")`` naming the field
(``ad_hoc_recognizers[0].patterns[1].regex``).
At match time every search has the ``regex`` module's ``timeout``: one recogniser may spend
``MATCH_TIMEOUT_S`` on one text, all its patterns together; beyond it the request fails
with ``ApiError(422, "pattern_timeout")``, never with a silently partial result.

Limits (constants below, documented in docs/service.md): recognisers per request, patterns
and deny-list words per recogniser, characters per pattern and per word, context words.
"""
import time
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import regex

from .decision import Candidate
from .regex_safety import FLAGS, compile_safe
from .requests import ApiError

MAX_RECOGNIZERS = 32
MAX_PATTERNS = 32  # per recogniser
MAX_REGEX_CHARS = 1_000
MAX_DENY_WORDS = 10_000  # per recogniser
MAX_WORD_CHARS = 200  # a deny-list, allow-list or context word
MAX_CONTEXT_WORDS = 100
MAX_ALLOW_LIST = 10_000
MATCH_TIMEOUT_S = 1.0  # one recogniser on one text, all its patterns together
CONTEXT_WINDOW = 5
CONTEXT_BOOST = 0.35
CONTEXT_MIN_SCORE = 0.4
SUPPORTED_LANGUAGES = ("en",)
_KEYS = {"name", "supported_language", "supported_entity", "patterns", "deny_list", "context", "deny_list_score", "version", "global_regex_flags"}
_PATTERN_KEYS = {"name", "regex", "score"}
_WORD = regex.compile(r"\w+")
_WORD_CHAR = regex.compile(r"\w")
ENTITY_NAME = regex.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
ACCEPTED_FLAGS = int(regex.IGNORECASE | regex.MULTILINE | regex.DOTALL | regex.ASCII | regex.UNICODE)


@dataclass(frozen=True)
class CompiledPattern:
    name: str
    regex: Any  # a compiled regex.Pattern
    score: float
    field: str  # e.g. ad_hoc_recognizers[0].patterns[1].regex


@dataclass(frozen=True)
class AdHocRecognizer:
    """One checked, compiled recogniser of a request (module docstring)."""

    name: str
    entity: str
    patterns: Tuple[CompiledPattern, ...]
    deny_words: Mapping[str, Tuple[Tuple[str, int], ...]]  # first word run (lower) -> (word lower, offset of the run)
    deny_list_score: float
    context: FrozenSet[str]
    field: str
    match_timeout: float = MATCH_TIMEOUT_S
    source_of_deny: str = "deny_list"

    def find(self, text: str, words: Optional[Sequence[Tuple[int, int]]] = None) -> List[Candidate]:
        """Every match of the recogniser in ``text`` as a Candidate (code-point offsets).

        text (str): the text.
        words (Optional[Sequence[Tuple[int, int]]]): the text's word spans (``word_spans``), to share
            one scan between recognisers; computed when None and needed.
        RETURNS (List[Candidate]): pattern matches (source "ad_hoc") and deny-list matches (source
            "deny_list"), sorted by offsets, context boosts applied.
        RAISES (ApiError): 422 pattern_timeout when the patterns take longer than ``match_timeout``.
        """
        if words is None and (self.deny_words or self.context):
            words = word_spans(text)
        out: List[Candidate] = []
        deadline = time.monotonic() + self.match_timeout
        for pattern in self.patterns:
            pos = 0
            while pos <= len(text):
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    m = pattern.regex.search(text, pos, timeout=remaining)
                except TimeoutError:
                    raise ApiError(
                        422, "pattern_timeout",
                        f"{pattern.field}: the recogniser's patterns took longer than {self.match_timeout} s on one text; simplify the pattern",
                        pattern.field,
                    ) from None  # fmt: skip
                if m is None:
                    break
                start, end = m.span()
                if end > start:
                    out.append(self._candidate(text, words, start, end, pattern.score, "ad_hoc", pattern.name))
                pos = end if end > start else end + 1
        if self.deny_words:
            for start, end in deny_matches(text, words or [], self.deny_words):
                out.append(self._candidate(text, words, start, end, self.deny_list_score, self.source_of_deny, None))
        out.sort(key=lambda c: (c.start, c.end, c.label))
        return out

    def _candidate(self, text: str, words, start: int, end: int, score: float, source: str, pattern: Optional[str]) -> Candidate:
        boosted, word = score, None
        if self.context and words is not None:
            word = context_word(text, words, start, self.context)
            if word is not None:
                boosted = min(1.0, max(score + CONTEXT_BOOST, CONTEXT_MIN_SCORE))
        return Candidate(start, end, self.entity, boosted, source, raw_score=score, recognizer=self.name, pattern=pattern, context_word=word)


def word_spans(text: str) -> List[Tuple[int, int]]:
    """(start, end) of every run of word characters (``\\w+``) in ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def context_word(text: str, words: Sequence[Tuple[int, int]], start: int, context: FrozenSet[str]) -> Optional[str]:
    """The first of the ``CONTEXT_WINDOW`` words before ``start`` (nearest first) that is a context word."""
    import bisect

    i = bisect.bisect_right(words, (start, -1)) - 1
    # words[i] may contain start (a match inside a word): only words that end before it count
    while i >= 0 and words[i][1] > start:
        i -= 1
    for j in range(i, max(-1, i - CONTEXT_WINDOW), -1):
        word = text[words[j][0] : words[j][1]].lower()
        if word in context:
            return word
        if word.endswith("s") and word[:-1] in context:
            return word[:-1]
    return None


def deny_matches(text: str, words: Sequence[Tuple[int, int]], index: Mapping[str, Tuple[Tuple[str, int], ...]]) -> List[Tuple[int, int]]:
    """Spans of deny-list entries in ``text``: case-insensitive, on word boundaries. Linear in the
    words of the text times the entries sharing a first word (one dictionary look-up per word)."""
    found = set()
    n = len(text)
    for ws, we in words:
        entries = index.get(text[ws:we].lower())
        if not entries:
            continue
        for word, offset in entries:
            start = ws - offset
            end = start + len(word)
            if start < 0 or end > n or text[start:end].lower() != word:
                continue
            if start > 0 and _WORD_CHAR.match(text, start - 1) and _WORD_CHAR.match(text, start):
                continue
            if end < n and _WORD_CHAR.match(text, end) and _WORD_CHAR.match(text, end - 1):
                continue
            found.add((start, end))
    return sorted(found)


# --- compiling a request's recognisers -------------------------------------------------
def compile_recognizers(
    specs: Any,
    field: str = "ad_hoc_recognizers",
    *,
    max_recognizers: int = MAX_RECOGNIZERS,
    max_patterns: int = MAX_PATTERNS,
    max_regex_chars: int = MAX_REGEX_CHARS,
    max_deny_words: int = MAX_DENY_WORDS,
    match_timeout: float = MATCH_TIMEOUT_S,
) -> List[AdHocRecognizer]:
    """Check and compile a request's ad-hoc recognisers (module docstring).

    specs (Any): the request's list of recogniser objects (None: none).
    field (str): the request field, the prefix of error paths.
    max_* (int): the limits (module constants by default).
    match_timeout (float): seconds one recogniser may spend on one text.
    RETURNS (List[AdHocRecognizer]): in the order given.
    RAISES (ApiError): 422 invalid_field (wrong shape or type), 400 unsupported_language,
        400 unsafe_pattern (a catastrophic or invalid regex), 413 too_many (a limit).
    """
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise ApiError(422, "invalid_field", f"{field} must be a list of recogniser objects", field)
    if len(specs) > max_recognizers:
        raise ApiError(413, "too_many", f"{field} holds {len(specs)} recognisers; the limit is {max_recognizers}", field)
    out = []
    for i, spec in enumerate(specs):
        where = f"{field}[{i}]"
        if not isinstance(spec, dict):
            raise ApiError(422, "invalid_field", f"{where} must be an object", where)
        for position, key in enumerate(spec):
            if key not in _KEYS:
                raise ApiError(422, "invalid_field", f"{where}: unknown key at position {position} (known: {sorted(_KEYS)})", f"{where}.#{position}")
        entity = spec.get("supported_entity")
        if not isinstance(entity, str) or not ENTITY_NAME.match(entity):
            raise ApiError(422, "invalid_field", f"{where}.supported_entity must be an entity name (a letter, then letters, digits or _; at most 64)", f"{where}.supported_entity")
        language = spec.get("supported_language", "en")
        if language not in SUPPORTED_LANGUAGES:
            raise ApiError(400, "unsupported_language", f"{where}.supported_language: this service analyzes {list(SUPPORTED_LANGUAGES)} only", f"{where}.supported_language")
        name = spec.get("name", f"ad_hoc_{i}")
        if not isinstance(name, str) or len(name) > MAX_WORD_CHARS:
            raise ApiError(422, "invalid_field", f"{where}.name must be a string of at most {MAX_WORD_CHARS} characters", f"{where}.name")
        flags = spec.get("global_regex_flags")
        if flags is not None and (not isinstance(flags, int) or isinstance(flags, bool) or flags & ~ACCEPTED_FLAGS or flags < 0):
            raise ApiError(
                422, "invalid_field", f"{where}.global_regex_flags must be a sum of Python re flags IGNORECASE, MULTILINE, DOTALL, ASCII, UNICODE",
                f"{where}.global_regex_flags",
            )  # fmt: skip
        flags = FLAGS if flags is None else flags | regex.V0
        patterns = _patterns(spec.get("patterns"), f"{where}.patterns", max_patterns, max_regex_chars, flags)
        words = _word_list(spec.get("deny_list"), f"{where}.deny_list", max_deny_words)
        context = _word_list(spec.get("context"), f"{where}.context", MAX_CONTEXT_WORDS)
        if not patterns and not words:
            raise ApiError(422, "invalid_field", f"{where}: a recogniser needs patterns or a deny_list", where)
        deny_score = _score(spec.get("deny_list_score", 1.0), f"{where}.deny_list_score")
        out.append(
            AdHocRecognizer(
                name=name,
                entity=entity,
                patterns=tuple(patterns),
                deny_words=deny_index(words, f"{where}.deny_list"),
                deny_list_score=deny_score,
                context=frozenset(w.lower() for w in context),
                field=where,
                match_timeout=match_timeout,
            )
        )
    return out


def deny_recognizer(entity: str, words: Sequence[str], field: str, score: float = 1.0) -> AdHocRecognizer:
    """A recogniser of deny-list words only (the policy's ``deny_list`` of a type).

    RAISES (ApiError): a word without a word character (``field`` names it).
    """
    return AdHocRecognizer(name=f"deny_list:{entity}", entity=entity, patterns=(), deny_words=deny_index(words, field), deny_list_score=score, context=frozenset(), field=field)


def deny_index(words: Sequence[str], field: str) -> Dict[str, Tuple[Tuple[str, int], ...]]:
    """Deny-list words indexed by their first run of word characters (lower-cased)."""
    index: Dict[str, List[Tuple[str, int]]] = {}
    for j, word in enumerate(words):
        m = _WORD.search(word)
        if m is None:
            raise ApiError(422, "invalid_field", f"{field}[{j}] has no letter or digit: it cannot be matched on word boundaries", f"{field}[{j}]")
        lowered = word.lower()
        if len(lowered) != len(word):  # a character whose lower case is longer (e.g. U+0130)
            lowered = word
        entries = index.setdefault(word[m.start() : m.end()].lower(), [])
        if (lowered, m.start()) not in entries:
            entries.append((lowered, m.start()))
    return {k: tuple(v) for k, v in index.items()}


def _patterns(specs: Any, where: str, max_patterns: int, max_chars: int, flags: int) -> List[CompiledPattern]:
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise ApiError(422, "invalid_field", f"{where} must be a list of {{name, regex, score}} objects", where)
    if len(specs) > max_patterns:
        raise ApiError(413, "too_many", f"{where} holds {len(specs)} patterns; the limit is {max_patterns}", where)
    out = []
    for j, spec in enumerate(specs):
        at = f"{where}[{j}]"
        if not isinstance(spec, dict):
            raise ApiError(422, "invalid_field", f"{at} must be an object with name, regex and score", at)
        for position, key in enumerate(spec):
            if key not in _PATTERN_KEYS:
                raise ApiError(422, "invalid_field", f"{at}: unknown key at position {position} (known: {sorted(_PATTERN_KEYS)})", f"{at}.#{position}")
        source = spec.get("regex")
        if not isinstance(source, str) or not source:
            raise ApiError(422, "invalid_field", f"{at}.regex must be a non-empty string", f"{at}.regex")
        if len(source) > max_chars:
            raise ApiError(413, "too_many", f"{at}.regex has {len(source)} characters; the limit is {max_chars}", f"{at}.regex")
        name = spec.get("name", f"pattern_{j}")
        if not isinstance(name, str) or len(name) > MAX_WORD_CHARS:
            raise ApiError(422, "invalid_field", f"{at}.name must be a string of at most {MAX_WORD_CHARS} characters", f"{at}.name")
        out.append(CompiledPattern(name, compile_safe(source, f"{at}.regex", flags), _score(spec.get("score", 0.5), f"{at}.score"), f"{at}.regex"))
    return out


def _word_list(value: Any, where: str, limit: int) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ApiError(422, "invalid_field", f"{where} must be a list of strings", where)
    if len(value) > limit:
        raise ApiError(413, "too_many", f"{where} holds {len(value)} entries; the limit is {limit}", where)
    for j, word in enumerate(value):
        if not word or len(word) > MAX_WORD_CHARS:
            raise ApiError(422, "invalid_field", f"{where}[{j}] must have 1 to {MAX_WORD_CHARS} characters", f"{where}[{j}]")
    return list(value)


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ApiError(422, "invalid_field", f"{where} must be a number in [0, 1]", where)
    return float(value)


# --- allow lists ----------------------------------------------------------------------
def compile_allow_list(allow_list: Any, match: str = "exact", field: str = "allow_list") -> Optional[Any]:
    """A request's allow list, checked: a frozenset of texts ("exact") or one compiled,
    safety-checked regex that must match an entity's whole text ("regex"). None: no list.

    RAISES (ApiError): 422 for a wrong shape or an unknown ``match``; 400 unsafe_pattern.
    """
    if allow_list is None:
        return None
    if match not in ("exact", "regex"):
        raise ApiError(422, "invalid_field", "allow_list_match must be 'exact' or 'regex'", "allow_list_match")
    if not isinstance(allow_list, list) or not all(isinstance(w, str) for w in allow_list):
        raise ApiError(422, "invalid_field", f"{field} must be a list of strings", field)
    if len(allow_list) > MAX_ALLOW_LIST:
        raise ApiError(413, "too_many", f"{field} holds {len(allow_list)} entries; the limit is {MAX_ALLOW_LIST}", field)
    if match == "exact":
        return frozenset(allow_list)
    if len(allow_list) > MAX_PATTERNS:
        raise ApiError(413, "too_many", f"{field} holds {len(allow_list)} regular expressions; the limit is {MAX_PATTERNS}", field)
    for j, source in enumerate(allow_list):
        if not source or len(source) > MAX_REGEX_CHARS:
            raise ApiError(422, "invalid_field", f"{field}[{j}] must have 1 to {MAX_REGEX_CHARS} characters", f"{field}[{j}]")
        compile_safe(source, f"{field}[{j}]")
    if not allow_list:
        return frozenset()
    return compile_safe("|".join(f"(?:{s})" for s in allow_list), field)


def apply_allow_list(
    text: str,
    candidates: Sequence[Candidate],
    allow_list: Any,
    match: str = "exact",
    allowed_types: Optional[FrozenSet[str]] = None,
    timeout: float = MATCH_TIMEOUT_S,
) -> Tuple[List[Candidate], Dict[str, int]]:
    """Drop the candidates whose covered text is allowed.

    text (str): the text the candidates index.
    candidates (Sequence[Candidate]): the candidates.
    allow_list (Any): compile_allow_list's result, or a raw list (compiled here).
    match (str): "exact" (the entity's text equals an entry, case-sensitive) or "regex" (one of the
        expressions matches the entity's whole text; Presidio searches, this needs a full match so
        that a pattern cannot clear an entity by matching a part of it).
    allowed_types (Optional[FrozenSet[str]]): the types the list may clear (None: all); a candidate
        of another type stays and is counted as "kept_by_policy".
    timeout (float): seconds all regex matches of one text may take.
    RETURNS (Tuple[List[Candidate], Dict[str, int]]): the candidates kept, and the counts
        {"removed": n, "kept_by_policy": m}.
    RAISES (ApiError): 422 allow_list_timeout when the regex takes longer than ``timeout``.
    """
    counts = {"removed": 0, "kept_by_policy": 0}
    if isinstance(allow_list, list):
        allow_list = compile_allow_list(allow_list, match)
    if allow_list is None or (isinstance(allow_list, frozenset) and not allow_list):
        return list(candidates), counts
    deadline = time.monotonic() + timeout
    kept: List[Candidate] = []
    for c in candidates:
        covered = text[c.start : c.end]
        if isinstance(allow_list, frozenset):
            allowed = covered in allow_list
        else:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                allowed = allow_list.fullmatch(covered, timeout=remaining) is not None
            except TimeoutError:
                raise ApiError(422, "allow_list_timeout", f"allow_list: the expressions took longer than {timeout} s on one text", "allow_list") from None
        if not allowed:
            kept.append(c)
        elif allowed_types is not None and c.label not in allowed_types:
            counts["kept_by_policy"] += 1
            kept.append(c)
        else:
            counts["removed"] += 1
    return kept, counts
