"""The ``pii_patterns`` pipe: validated pattern recognisers for structured PII.

It runs before ``ner_plus`` and puts what it finds in ``doc.ents``; ``ner_plus``
keeps preset entities and decodes the rest of the text around them. Every
recogniser finds candidates with a regular expression (or ``phonenumbers``)
and keeps only those that pass a validity check, so a match is a strong signal:

==============  =====================================================  =====
type            rule                                                   score
==============  =====================================================  =====
EMAIL_ADDRESS   local@domain.tld, TLD of 2-24 letters; any script's   0.95
                letters (müller@example.de, user@bücher.example)
PHONE_NUMBER    ``phonenumbers.PhoneNumberMatcher``, leniency VALID,   0.85
                in any of ``phone_regions`` (or with a +country code);
                not shaped like an IPv4, an SSN or a date (04.10.2025),
                not part of a longer number or an identifier
                (INV-2024-000123, #0612345678), not after a label that
                names another number (order, invoice, ISBN, ticket, ...)
                nor next to a currency (an amount);
                a line break inside a number counts as a space when the
                number starts with + or ( or has 3+ digits before it
PHONE_NUMBER    North American shape "(AAA) EEE-NNNN" that is not a    0.70
                VALID number (fictional 555 numbers, unassigned areas)
CREDIT_CARD     12-19 digits, one kind of separator (space, hyphen     0.90
                or dot), Luhn checksum
IBAN_CODE       country code, its registered length, mod-97 == 1       0.95
IP_ADDRESS      IPv4 / IPv6 that ``ipaddress`` parses                  0.80
URL             http(s)/ftp scheme + host                              0.85
URL             www. + host, no scheme                                 0.60
US_SSN          AAA-GG-SSSS, AAA GG SSSS or AAA.GG.SSSS; area not      0.85
                000, 666, 900-999; group not 00; serial not 0000; not a number
                known to be void (078-05-1120, 219-09-9999, 123-45-6789)
==============  =====================================================  =====

The recognisers see what a reader sees: they run on a normalised view of the
text (``spacy_ner_plus.textnorm``: NFKC, zero-width and other format characters
removed, dash, space and digit variants unified), and every match is mapped back
to the exact original character offsets. A zero-width space, a no-break space, an
en dash, a soft hyphen or fullwidth digits inside a number do not hide it.

The work is linear in the text: no expression can backtrack over a run more than
a constant number of times, the phone matcher runs on bounded windows (so junk
before a number can neither exhaust its candidate limit nor cost more than its
own length), and every check after a match looks at a bounded neighbourhood.

Scores are the rule's strength as we judge it, not calibrated probabilities;
they are in ``doc.spans["pii_patterns"].attrs["scores"]`` (spancat's
convention, spans sorted by start), registered with ``scored_spans``, so
``ent._.confidence`` reads them.

Token alignment: a match whose characters do not start and end on token
boundaries SPLITS the tokens it starts or ends in (``Doc.retokenize().split``):
"ip=10.0.0.1" is one spaCy token, and becomes "ip=" and "10.0.0.1", so the
entity, and the redaction made from its offsets, is exact to the character.
The splits are counted in the group's ``attrs["split"]``. A token inside an
entity already in ``doc.ents`` is never split (the match is blocked by it
anyway, see below) and such a match is kept in the span group expanded to the
tokens that cover it. Overlapping matches are resolved deterministically:
longest span (in characters, after alignment), then highest score, then
earliest start, then label; the losers are counted in ``attrs["overlapping"]``.
Matches that overlap an entity already in ``doc.ents`` stay in the span group
but not in ``doc.ents`` (like entity_ruler with ``overwrite_ents = false``),
counted in ``attrs["blocked_by_preset"]``. Nothing is dropped uncounted.

The component holds only settings and compiled expressions, so one instance
may serve many threads; it has no learned state, and its settings come from
the config at every load. Rules that need the model's entities in view (relative
dates, parts of addresses) are the ``pii_context`` pipe's, after the model.

Size: over 500 lines because each recogniser keeps its validity checks beside
it (the phone number's guards against versions, identifiers, amounts and
postcodes are a fifth of the file) and the token splitting that makes every
entity exact to the character belongs with the matches it splits for.
"""
import bisect
import ipaddress
import re
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup

from ..checksums import IBAN_LENGTHS, iban_valid, luhn_valid, us_ssn_valid  # noqa: F401  (public here too)
from ..textnorm import load_tables, normalize
from .scored_spans import register_scored_spans_key

PATTERN_LABELS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL", "US_SSN")
# national formats of these regions are found without a +country code: the registers and
# countries of our users and of the PII corpora we check on (ES, IT and NL: "612 345 678"),
# each one more matcher pass over the text
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN")
SPANS_KEY = "pii_patterns"
SCORES = {
    "EMAIL_ADDRESS": 0.95,
    "PHONE_NUMBER": 0.85,
    "PHONE_NUMBER_SHAPED": 0.70,
    "CREDIT_CARD": 0.90,
    "IBAN_CODE": 0.95,
    "IP_ADDRESS": 0.80,
    "URL": 0.85,
    "URL_NO_SCHEME": 0.60,
    "US_SSN": 0.85,
}
SOURCE_PATTERN = "pattern"
SOURCE_MODEL = "model"
SOURCE_OTHER = "other"

# The expressions run on the normalised view (textnorm: ASCII digits, "-" for every dash, " " for
# every space), so they spell digits [0-9]. Each is linear in the text: no two ways to match
# the same characters inside a repetition, and a lookbehind so a run is tried from its start only.
# Local part and domain labels take any letter or digit (IDN: müller@example.de, user@bücher.example).
_EMAIL = re.compile(
    r"(?<![\w.%+-])[^\W_](?:[\w.%+-]*[\w%+-])?@(?:[^\W_](?:(?:[^\W_]|-)*[^\W_])?\.)+(?:[^\W\d_]{2,24}|xn--[A-Za-z0-9-]{1,59})(?![\w-])"
)
# digit groups of 3+ separated by one space, hyphen or dot; the separator check and Luhn come after
_CARD = re.compile(r"(?<![\w.+-])[0-9]{3,}(?:(?:[-.]|[ \t]|\r?\n)[0-9]{3,})*(?![\w-]|\.[0-9])")
# where an IBAN may start, and up to 30 characters after its check digits (single spaces between);
# a lookahead, so a candidate never consumes the start of the next one, and possessive: " ?X"
# can match a text one way only, so there is nothing to backtrack into
_IBAN = re.compile(r"(?<!\w)(?=([A-Z]{2})[0-9]{2}((?: ?[A-Z0-9]){1,30}+))")
_WORD_CHAR = re.compile(r"\w")
_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])")
# an embedded IPv4 is tried before a last hex group, and nothing ends before ".digit", so
# "::ffff:192.0.2.128" is one address, not "::ffff:192" beside "192.0.2.128"
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?(?:%[\w.]+)?(?![\w:]|\.[0-9])")
_URL = re.compile(r"(?<![\w@/])(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_URL_HOST = re.compile(r"^(?:(?:https?|ftp)://)?(?:[^@/\s]+@)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?::[0-9]{1,5})?(?:[/?#]|$)|^(?:https?|ftp)://(?:localhost|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[/?#]|$)", re.IGNORECASE)
_DATE = re.compile(r"(?:[0-9]{1,2}([./-])[0-9]{1,2}\1[0-9]{2,4}|[0-9]{4}([./-])[0-9]{1,2}\2[0-9]{1,2})(?:[ T][0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?)?")
# a digit right before a number, perhaps with one separator (and "$" matches before a final "\\n"):
# at most 3 characters, so it is searched in the 3 characters before the number only
_DIGIT_BEFORE = re.compile(r"[0-9][./:-]?$")
_DIGIT_BEFORE_REACH = 3
_DIGIT_AFTER = re.compile(r"[./:-]?[0-9]")
_CITY_AFTER = re.compile(r"[ \t]+[A-ZÀ-Þ]")
_WRAPPED_NUMBER = re.compile(r"[+(]|[0-9][0-9 ().-]{2,}\n")
# AAA-GG-SSSS with one kind of separator: hyphen, space or dot
_SSN = re.compile(r"(?<![\w-])(?<![0-9]\.)([0-9]{3})([-. ])([0-9]{2})\2([0-9]{4})(?![\w-])(?!\.[0-9])")
_TRAILING_PUNCT = ".,;:!?'\""
_CLOSING_BRACKETS = {")": "(", "]": "[", "}": "{"}
# libphonenumber's matcher gives up after 65,535 candidates, so junk before a number could hide
# it: it runs on windows of _PHONE_WINDOW characters, each seeing _PHONE_CONTEXT more on both
# sides (a candidate is at most a few hundred characters), and keeps the numbers that start
# inside the window
_PHONE_WINDOW = 16384
_PHONE_CONTEXT = 640
_ANY_DIGIT = re.compile(r"[0-9]")
# the tail of an identifier: a letter and a joiner right before the number ("INV-2024-000123",
# "#0612345678", "ref/030 1234567"); searched in the 2 characters before it only
_IDENTIFIER_BEFORE = re.compile(r"(?:[A-Za-z][-/_]|#)$")
_IDENTIFIER_BEFORE_REACH = 2
# a label naming another kind of number right before it, on its line ("order 1234567890",
# "ISBN 0306406152", "invoice no. 2024001234", "Ticket #: 612345678") or a currency ("EUR 612 345");
# searched in the _LABEL_BEFORE_REACH characters before the number only
_LABEL_BEFORE = re.compile(
    r"(?:\b(?:order|invoice|inv|ticket|case|ref|reference|tracking|isbn|issn|sku|serial|"
    r"receipt|transaction|txn|booking|confirmation|account|acct|id|po|build|version|pid)"
    r"\.?(?:[ \t]+(?:no|nr|number|num|id)\b\.?)?[ \t]*[#:]{0,2}[ \t]*"
    r"|(?:[$€£¥]|\b(?:eur|usd|gbp|chf|jpy|inr)\b)[ \t]*)$",
    re.IGNORECASE,
)
_LABEL_BEFORE_REACH = 40
_CURRENCY_AFTER = re.compile(r"[ \t]?(?:[$€£¥]|(?:eur|usd|gbp|chf|jpy|inr|euros?|dollars?|pounds?)\b)", re.IGNORECASE)
# "(555) 010-4477": the North American written shape, whatever libphonenumber says of the
# number (fictional 555 numbers and unassigned area codes are not VALID, but are phone numbers
# to a reader)
_NANP_SHAPED = re.compile(r"(?<![\w(])\([0-9]{3}\)[ \t]?[0-9]{3}[-. ][0-9]{4}(?![\w-]|[.][0-9])")
_DIGITS_IN_WORD = re.compile(r"(?<=[A-WYZa-wyz])[0-9]+(?=[A-Za-z@_]|\.[A-Za-z])")
@dataclass(frozen=True)
class PatternMatch:
    """A validated match: character offsets into the text, the type and the rule's score."""

    start: int
    end: int
    label: str
    score: float


def find_email_addresses(text: str) -> Iterator[PatternMatch]:
    for m in _EMAIL.finditer(text):
        yield PatternMatch(m.start(), m.end(), "EMAIL_ADDRESS", SCORES["EMAIL_ADDRESS"])


def find_phone_numbers(text: str, regions: Sequence[str]) -> Iterator[PatternMatch]:
    """Numbers that libphonenumber's matcher finds VALID for one of ``regions``
    (a number with a +country code is found whatever the region).

    The matcher runs on windows of the text (``_PHONE_WINDOW`` characters and
    ``_PHONE_CONTEXT`` on either side), so its limit of 65,535 candidates per call
    is never reached: junk before a number cannot hide it, and the work is linear."""
    import phonenumbers

    seen = set()
    # a wrapped line may break a number; one character for one keeps the offsets
    flat = text.replace("\r", " ").replace("\n", " ")
    # digits glued to a word ("AB12CD", "user12@", "example12.com") are never a number at
    # leniency VALID: nothing around them can extend the candidate, and the matcher rejects a
    # candidate that touches a Latin letter. Hiding them spares it a candidate per word in
    # codes, identifiers and addresses ("x" is left alone: it may start an extension)
    flat = _DIGITS_IN_WORD.sub(lambda m: "x" * len(m.group(0)), flat)
    for region in regions:
        for window_start in range(0, len(flat), _PHONE_WINDOW):
            window_end = window_start + _PHONE_WINDOW
            offset = max(0, window_start - _PHONE_CONTEXT)
            view = flat[offset:window_end + _PHONE_CONTEXT]
            if _ANY_DIGIT.search(view, window_start - offset) is None:
                continue  # no digit from the window's start on: no number starts in it
            for m in phonenumbers.PhoneNumberMatcher(view, region, leniency=phonenumbers.Leniency.VALID):
                start, end = offset + m.start, offset + m.end
                if not window_start <= start < window_end:
                    continue  # another window's number: it sees this one's context in full
                match = _checked_phone_number(text, start, end, seen)
                if match is not None:
                    yield match


def _checked_phone_number(text: str, start: int, end: int, seen: set) -> Optional[PatternMatch]:
    """The matcher's number at ``[start, end)`` once trimmed, or None when it is
    more likely something else or the tail of a longer number."""
    # the matcher takes in the "(" of "(+49 30 1234567)"; a number's own
    # brackets, as in "(030) 1234567", are balanced
    while start < end and text[start] == "(" and text.count("(", start, end) > text.count(")", start, end):
        start += 1
    while start < end and text[start].isspace():
        start += 1
    raw = text[start:end]
    # dotted quads, AAA-GG-SSSS and 04.10.2025 are valid numbers in some plan
    # but are IP addresses, SSNs and dates far more often
    if _IPV4.fullmatch(raw) or _SSN.fullmatch(raw) or _DATE.fullmatch(raw) or (start, end) in seen:
        return None
    if _DIGIT_BEFORE.search(text, max(0, start - _DIGIT_BEFORE_REACH), start) or _DIGIT_AFTER.match(text, end):
        # the tail of a longer number ("12.2026 11:00" in "25.12.2026 11:00")
        return None
    if "\n" in raw and (not _WRAPPED_NUMBER.match(raw) or (raw[0] not in "+(" and _CITY_AFTER.match(text, end))):
        # "Straße 3\n46026 Essen", "Platz 37-48\n93898 Rostock": a house number and the
        # next line's postcode, which a city follows
        return None
    if _names_another_number(text, start, end):
        return None
    seen.add((start, end))
    return PatternMatch(start, end, "PHONE_NUMBER", SCORES["PHONE_NUMBER"])


def _names_another_number(text: str, start: int, end: int) -> bool:
    """Whether the number at ``[start, end)`` is an identifier's tail, follows a label
    of another kind of number on its line (order, invoice, ISBN, ...) or is an amount.
    Only a bounded neighbourhood is looked at."""
    if text[start] == "+":
        return False  # "+44 ..." is written as a phone number, whatever comes before
    if _IDENTIFIER_BEFORE.search(text, max(0, start - _IDENTIFIER_BEFORE_REACH), start):
        return True
    line_start = max(text.rfind("\n", max(0, start - _LABEL_BEFORE_REACH), start) + 1, start - _LABEL_BEFORE_REACH)
    return bool(_LABEL_BEFORE.search(text, line_start, start) or _CURRENCY_AFTER.match(text, end))


def find_shaped_phone_numbers(text: str) -> Iterator[PatternMatch]:
    """"(AAA) EEE-NNNN" numbers, North America's written shape, that are not
    VALID numbers (``find_phone_numbers`` has those): a lower score."""
    for m in _NANP_SHAPED.finditer(text):
        if not _DIGIT_AFTER.match(text, m.end()) and not _names_another_number(text, m.start(), m.end()):
            yield PatternMatch(m.start(), m.end(), "PHONE_NUMBER", SCORES["PHONE_NUMBER_SHAPED"])


def _phone_numbers(text: str, regions: Sequence[str]) -> List[PatternMatch]:
    """VALID numbers, then the shaped ones at other places."""
    valid = list(find_phone_numbers(text, regions))
    starts = {m.start for m in valid}
    return valid + [m for m in find_shaped_phone_numbers(text) if m.start not in starts and m.start + 1 not in starts]


def find_credit_cards(text: str) -> Iterator[PatternMatch]:
    for m in _CARD.finditer(text):
        candidate = m.group(0)
        # one kind of separator: hyphens, dots, or white space (a wrapped line breaks a group)
        separators = {sep if sep in "-." else " " for sep in re.findall(r"[-.]|\s+", candidate)}
        digits = re.sub(r"[^0-9]", "", candidate)
        if len(separators) <= 1 and 12 <= len(digits) <= 19 and luhn_valid(digits):
            yield PatternMatch(m.start(), m.end(), "CREDIT_CARD", SCORES["CREDIT_CARD"])


def find_ibans(text: str) -> Iterator[PatternMatch]:
    """IBANs, compact or in groups (single spaces between): a country code, check
    digits and the country's registered number of characters, not followed by a
    word character (a longer run is not an IBAN), mod-97 == 1."""
    for m in _IBAN.finditer(text):
        length = IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        body = m.group(2)
        wanted = length - 4  # characters after the check digits
        taken = 0
        for i, char in enumerate(body):
            if char != " ":
                taken += 1
                if taken == wanted:
                    break
        if taken < wanted:
            continue
        end = m.start() + 4 + i + 1
        if _WORD_CHAR.match(text, end):
            continue
        if iban_valid(text[m.start():end]):
            yield PatternMatch(m.start(), end, "IBAN_CODE", SCORES["IBAN_CODE"])


def find_ip_addresses(text: str) -> Iterator[PatternMatch]:
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group(0))
        except ValueError:
            continue
        yield PatternMatch(m.start(), m.end(), "IP_ADDRESS", SCORES["IP_ADDRESS"])
    for m in _IPV6.finditer(text):
        candidate = m.group(0)
        # "at fe80::1:" ends a clause with a colon that is not part of the address
        for trimmed in (candidate, candidate.rstrip(":")):
            if trimmed.count(":") < 2:
                continue
            try:
                ipaddress.IPv6Address(trimmed)
            except ValueError:
                continue
            yield PatternMatch(m.start(), m.start() + len(trimmed), "IP_ADDRESS", SCORES["IP_ADDRESS"])
            break


def _url_end(url: str) -> int:
    """Where ``url`` ends once trailing sentence punctuation and closing brackets
    without an opening one inside the URL are cut (one pass: counts kept, not redone)."""
    opened = {opener: url.count(opener) for opener in _CLOSING_BRACKETS.values()}
    closed = {closer: url.count(closer) for closer in _CLOSING_BRACKETS}
    end = len(url)
    while end:
        char = url[end - 1]
        if char in _TRAILING_PUNCT:
            end -= 1
        elif char in closed and closed[char] > opened[_CLOSING_BRACKETS[char]]:
            closed[char] -= 1
            end -= 1
        else:
            break
    return end


def find_urls(text: str) -> Iterator[PatternMatch]:
    """URLs with a scheme or starting with www.; trailing sentence punctuation and
    closing brackets without an opening one inside the URL are not part of it."""
    for m in _URL.finditer(text):
        url = m.group(0)[: _url_end(m.group(0))]
        if not _URL_HOST.match(url):
            continue
        has_scheme = "://" in url[:8]
        yield PatternMatch(m.start(), m.start() + len(url), "URL", SCORES["URL"] if has_scheme else SCORES["URL_NO_SCHEME"])


def find_us_ssns(text: str) -> Iterator[PatternMatch]:
    for m in _SSN.finditer(text):
        if us_ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield PatternMatch(m.start(), m.end(), "US_SSN", SCORES["US_SSN"])


def find_pii(text: str, labels: Iterable[str] = PATTERN_LABELS, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> List[PatternMatch]:
    """Every validated match of the recognisers for ``labels`` (overlaps not resolved).

    The recognisers run on the normalised view of the text (``textnorm.normalize``:
    NFKC, zero-width and other format characters removed, dashes, spaces and digits
    unified), so "536\u200b-22-1234", "4111\u00a01111..." and fullwidth digits are found
    as a reader sees them; checksums run on the view's ASCII digits, and every match is
    mapped back to the ORIGINAL character offsets (a removed character inside a match
    is part of it, one at its edge is not).

    text (str): the text.
    labels (Iterable[str]): which of PATTERN_LABELS to look for.
    phone_regions (Sequence[str]): ISO 3166 regions for national phone formats.
    RETURNS (List[PatternMatch]): offsets into ``text``, sorted by start, then end.
    """
    labels = set(labels)
    view = normalize(text)
    seen = view.text
    finders = {
        "EMAIL_ADDRESS": lambda: find_email_addresses(seen),
        "PHONE_NUMBER": lambda: _phone_numbers(seen, phone_regions),
        "CREDIT_CARD": lambda: find_credit_cards(seen),
        "IBAN_CODE": lambda: find_ibans(seen),
        "IP_ADDRESS": lambda: find_ip_addresses(seen),
        "URL": lambda: find_urls(seen),
        "US_SSN": lambda: find_us_ssns(seen),
    }
    found = [match for label, finder in finders.items() if label in labels for match in finder()]
    if view.changed:
        found = [PatternMatch(*view.to_original(m.start, m.end), m.label, m.score) for m in found]
    return sorted(found, key=lambda m: (m.start, m.end, m.label))


def _overlaps_any(match: PatternMatch, ents: Sequence[Span]) -> bool:
    # entities are sorted and do not overlap: the one that may overlap starts before match.end
    i = bisect.bisect_left(ents, match.end, key=lambda e: e.start_char)
    return i > 0 and ents[i - 1].end_char > match.start


def split_tokens_at(doc: Doc, matches: Sequence[PatternMatch]) -> int:
    """Split the tokens that ``matches`` start or end inside (``Doc.retokenize().split``),
    so that every match's characters are whole tokens: "IP:203.0.113.9" becomes "IP:" and
    "203.0.113.9". Each piece is attached to itself (no parse is made up).

    doc (Doc): the doc, changed in place.
    matches (Sequence[PatternMatch]): character offsets into ``doc.text``.
    RETURNS (int): how many tokens were split.
    """
    starts = [token.idx for token in doc]
    cuts: Dict[int, set] = {}
    for match in matches:
        for offset in (match.start, match.end):
            i = bisect.bisect_right(starts, offset) - 1
            if i < 0 or offset == starts[i]:
                continue
            token = doc[i]
            if offset < token.idx + len(token.text):
                cuts.setdefault(i, set()).add(offset - token.idx)
    if not cuts:
        return 0
    with doc.retokenize() as retokenizer:
        for i, inside in cuts.items():
            token = doc[i]
            bounds = [0, *sorted(inside), len(token.text)]
            orths = [token.text[a:b] for a, b in zip(bounds, bounds[1:])]
            retokenizer.split(token, orths, heads=[(token, k) for k in range(len(orths))])
    return len(cuts)


def resolve_match_overlaps(matches: Sequence[PatternMatch]) -> Tuple[List[PatternMatch], int]:
    """``resolve_overlaps`` on character offsets (before any token is split):
    longest first, then highest score, then earliest start, then label.

    RETURNS (Tuple[List[PatternMatch], int]): the kept ones sorted by start, and
        how many were left out.
    """
    kept_starts: List[int] = []
    kept: List[PatternMatch] = []
    for match in sorted(matches, key=lambda m: (m.start - m.end, -m.score, m.start, m.label)):
        i = bisect.bisect_left(kept_starts, match.end)
        # kept matches are disjoint: only the one starting last before match.end may overlap
        if i > 0 and kept[i - 1].end > match.start:
            continue
        kept_starts.insert(i, match.start)
        kept.insert(i, match)
    return kept, len(matches) - len(kept)


def _priority(item: Tuple[Span, float]) -> Tuple[int, float, int, str]:
    span, score = item
    return (-(span.end_char - span.start_char), -score, span.start_char, span.label_)


def resolve_overlaps(candidates: Sequence[Tuple[Span, float]]) -> Tuple[List[Tuple[Span, float]], int]:
    """Keep non-overlapping spans: longest (characters) first, then highest score,
    then earliest start, then label (so the result never depends on input order).

    candidates (Sequence[Tuple[Span, float]]): spans of one Doc with their scores.
    RETURNS (Tuple[List[Tuple[Span, float]], int]): the kept ones sorted by start,
        and how many were left out.
    """
    taken = set()
    kept = []
    for span, score in sorted(candidates, key=_priority):
        tokens = range(span.start, span.end)
        if any(i in taken for i in tokens):
            continue
        taken.update(tokens)
        kept.append((span, score))
    kept.sort(key=lambda item: (item[0].start, item[0].end))
    return kept, len(candidates) - len(kept)


class PiiPatterns:
    """Pattern recognisers as a pipe: sets ``doc.ents`` and a scored SpanGroup."""

    def __init__(self, nlp: Language, name: str, *, labels: Sequence[str], phone_regions: Sequence[str], spans_key: str):
        import phonenumbers

        unknown = sorted(set(labels) - set(PATTERN_LABELS))
        if unknown:
            raise ValueError(f"pii_patterns: unknown label(s) {unknown}; known: {', '.join(PATTERN_LABELS)}")
        bad_regions = sorted(r for r in phone_regions if r not in phonenumbers.SUPPORTED_REGIONS)
        if bad_regions:
            raise ValueError(f"pii_patterns: phone_regions {bad_regions} are not regions libphonenumber knows (e.g. US, GB, DE)")
        if not spans_key:
            raise ValueError("pii_patterns: spans_key must be a non-empty string")
        load_tables()  # once per process, at load time rather than in the first request
        self.name = name
        self.labels = tuple(labels)
        self.phone_regions = tuple(phone_regions)
        self.spans_key = spans_key
        register_scored_spans_key(spans_key)

    def __call__(self, doc: Doc) -> Doc:
        matches, overlapping = resolve_match_overlaps(find_pii(doc.text, self.labels, self.phone_regions))
        preset = list(doc.ents)
        split = split_tokens_at(doc, [m for m in matches if not _overlaps_any(m, preset)])
        preset = list(doc.ents)  # the same entities, on the split tokens
        candidates: List[Tuple[Span, float]] = []
        for match in matches:
            # aligned unless it overlaps a preset entity, whose tokens are never split
            span = doc.char_span(match.start, match.end, label=match.label, alignment_mode="strict")
            if span is None:
                span = doc.char_span(match.start, match.end, label=match.label, alignment_mode="expand")
            if span is None or not len(span):
                # expand always finds the covering tokens of a non-empty match; a match
                # inside whitespace only would be a recogniser bug: say so, do not drop it
                raise ValueError(f"pii_patterns: {match.label} at characters {match.start}-{match.end} covers no token")
            candidates.append((span, match.score))
        kept, overlapping_tokens = resolve_overlaps(candidates)  # expanded blocked matches may share a token
        overlapping += overlapping_tokens
        taken = {i for ent in preset for i in range(ent.start, ent.end)}
        new_ents = [span for span, _ in kept if not any(i in taken for i in range(span.start, span.end))]
        doc.spans[self.spans_key] = SpanGroup(
            doc,
            name=self.spans_key,
            spans=[span for span, _ in kept],
            attrs={
                "scores": [score for _, score in kept],
                "split": split,
                "overlapping": overlapping,
                "blocked_by_preset": len(kept) - len(new_ents),
            },
        )
        if new_ents:
            doc.ents = sorted(preset + new_ents, key=lambda span: span.start)
        return doc


@Language.factory(
    "pii_patterns",
    assigns=["doc.ents", "doc.spans"],
    default_config={"labels": list(PATTERN_LABELS), "phone_regions": list(DEFAULT_PHONE_REGIONS), "spans_key": SPANS_KEY},
)
def make_pii_patterns(nlp: Language, name: str, labels: List[str], phone_regions: List[str], spans_key: str) -> PiiPatterns:
    """Create the ``pii_patterns`` pipe.

    labels (List[str]): the recognisers to run, a subset of PATTERN_LABELS.
    phone_regions (List[str]): ISO 3166 region codes whose national phone formats
        are recognised (numbers written with +country code are found anyway).
    spans_key (str): the key of the scored SpanGroup in ``doc.spans``.
    """
    return PiiPatterns(nlp, name, labels=labels, phone_regions=phone_regions, spans_key=spans_key)


def _in_group(span: Span, key: str) -> bool:
    """Whether ``doc.spans[key]`` holds ``span`` (same tokens and label): a binary
    search, as the group's spans are sorted by start (ner_plus and pii_patterns
    write them so)."""
    group = span.doc.spans.get(key)
    if group is None:
        return False
    i = bisect.bisect_left(group, span.start, key=lambda s: s.start)
    while i < len(group):
        candidate = group[i]
        if candidate.start != span.start:
            return False
        if candidate.end == span.end and candidate.label == span.label:
            return True
        i += 1
    return False


def entity_source(span: Span, pattern_key: str = SPANS_KEY, model_key: str = "ner_plus") -> str:
    """Which component found an entity (O(log n) in the span groups).

    span (Span): an entity of ``doc.ents``.
    pattern_key (str): the pii_patterns span group key.
    model_key (str): the ner_plus span group key.
    RETURNS (str): "pattern" when the span (same tokens and label) is in
        ``doc.spans[pattern_key]``, "model" when it is in ``doc.spans[model_key]``,
        else "other" (set by another component, e.g. an entity_ruler).
    """
    if _in_group(span, pattern_key):
        return SOURCE_PATTERN
    if _in_group(span, model_key):
        return SOURCE_MODEL
    return SOURCE_OTHER


def entity_sources(doc: Doc, pattern_key: str = SPANS_KEY, model_key: str = "ner_plus") -> Dict[Tuple[int, int, int], str]:
    """An index of which component found each span of a doc, built once (linear),
    so that looking up every entity costs O(1) each: ``entity_source`` for a whole doc.

    doc (Doc): the annotated doc.
    pattern_key (str): the pii_patterns span group key.
    model_key (str): the ner_plus span group key.
    RETURNS (Dict[Tuple[int, int, int], str]): (start token, end token, label id)
        -> "pattern" or "model"; a span not in it is "other". A span in both
        groups is "pattern", as in ``entity_source``.
    """
    index: Dict[Tuple[int, int, int], str] = {}
    for key, source in ((model_key, SOURCE_MODEL), (pattern_key, SOURCE_PATTERN)):
        group = doc.spans.get(key)
        if group is not None:
            index.update(((span.start, span.end, span.label), source) for span in group)
    return index
