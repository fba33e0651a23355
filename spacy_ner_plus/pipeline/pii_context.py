"""The ``pii_context`` pipe: rules after ``ner_plus`` that complete or correct its entities.

``pii_patterns`` finds structured values before the model; some PII is only
found, or only bounded right, with the model's entities in view. This pipe runs
after ``ner_plus`` (and after ``ner_plus_entity_filter``, if any) and changes
``doc.ents`` only where a rule below says so; it never removes a pattern
entity, and it never changes an entity of another type than the rule's:

==============  ==============================================================  =====
type            rule                                                            score
==============  ==============================================================  =====
DATE_TIME       a weekday ("Friday", "next Tuesday", "on Friday" gives          0.75
                "Friday"), a relative day with a part of the day or a time
                ("tomorrow morning", "yesterday at 5pm", "last night"), an
                offset ("two weeks ago", "3 days from now"). Merged with the
                model's DATE_TIME entities it overlaps ("yesterday at" + the
                model's "5pm"). Not: a bare "today"/"tomorrow", a period
                ("next week", "next sprint"), "Black Friday" and the like
STREET_ADDRESS  a flat, apartment, unit or suite number ("Flat 4B", "Apt. 12",  0.70
                "Unit 7") alone, or joined to the model's address next to it
                ("Flat 4B\\n12 Baker Street")
STREET_ADDRESS  a postcode-and-city line right after the model's address        model
                ("12 Baker Street\\nLondon NW1 6XE", "Hauptstr. 5, 10115
                Berlin", "Main St 4, Springfield, IL 62704"): the address takes
                it in, with a LOCATION entity the model made of the city
PERSON          a name the model's address swallowed ("Anna Keller, 12 Baker    model
                Street"): an address never starts with a line or comma-separated
                part of capitalised words without a digit or a street word;
                that part becomes a PERSON, the rest stays the address
(any)           separators at an entity's edges (", 12 rue de la Paix") are     model
                left out
==============  ==============================================================  =====

Our convention for DATE_TIME (docs/component.md, "What counts as PII") is
Presidio's ("absolute or relative dates or periods or times smaller than a
day") narrowed to expressions that point to a day or a moment: the corpus of
assets/pii holds "see u all tomorrow" and "next week" as text without PII, and
the rules keep to it. For STREET_ADDRESS: the street line, with the unit and a
postcode-and-city line when they are written with it, is one STREET_ADDRESS; a
city after a comma without a postcode is a LOCATION of its own.

Every changed or added entity is in ``doc.spans["pii_context"]`` with its score
(the model's score for a model entity the pipe re-bounded), registered with
``scored_spans`` so ``ent._.confidence`` reads it; ``attrs`` count what each rule
did. The work is linear in the text: the expressions have no nested repetition,
and every look around an entity is bounded.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup

from .scored_spans import register_scored_spans_key

CONTEXT_LABELS = ("DATE_TIME", "STREET_ADDRESS", "PERSON")
SPANS_KEY = "pii_context"
SCORES = {"DATE_TIME": 0.75, "STREET_ADDRESS": 0.70}

_WEEKDAY = r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day"
_PART_OF_DAY = r"(?:morning|afternoon|evening|night|noon|lunchtime)"
_CLOCK = r"(?:[0-9]{1,2}(?::[0-9]{2})?(?:[ \t]?(?:[ap]m|[ap]\.m\.))?|noon|midnight)"
_AT_TIME = rf"(?:[ \t]+(?:at|around|by|before|after)[ \t]+{_CLOCK})"
_COUNT = r"(?:[0-9]{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a[ \t]+few|a[ \t]+couple[ \t]+of|several)"
_UNIT = r"(?:minute|hour|day|week|fortnight|month|year)s?"
# words before a weekday that make it a name or an event, not a day
_NOT_A_DAY_BEFORE = re.compile(r"(?:\b(?:black|cyber|good|holy|ash|man|girl|super|giving|easter|palm|blue|casual)[ \t]+)$", re.IGNORECASE)
_RELATIVE_DATE = re.compile(
    rf"(?<![\w-])(?:"
    rf"(?:(?:next|last|this|coming|past)[ \t]+)?{_WEEKDAY}s?(?:[ \t]+{_PART_OF_DAY}|{_AT_TIME})?"
    rf"|(?:the[ \t]+day[ \t]+(?:before[ \t]+yesterday|after[ \t]+tomorrow)|yesterday|today|tomorrow|tonight)"
    rf"(?:[ \t]+{_PART_OF_DAY})?{_AT_TIME}"
    rf"|(?:yesterday|tomorrow|this|last)[ \t]+{_PART_OF_DAY}"
    rf"|the[ \t]+day[ \t]+(?:before[ \t]+yesterday|after[ \t]+tomorrow)"
    rf"|{_COUNT}[ \t]+{_UNIT}[ \t]+(?:ago|from[ \t]+now)"
    rf")(?![\w-])",
    re.IGNORECASE,
)
_UNIT_NUMBER = re.compile(r"(?<![\w-])(?:Flat|Apt\.?|Apartment|Unit|Suite|Ste\.)[ \t]+(?:[0-9]{1,5}[A-Za-z]?|[A-Z][0-9]{1,4})(?![\w-])")
# a postcode and a city, or a city and a postcode, as a line or comma-separated part ends
_CITY = r"[A-ZÀ-Þ][\w'-]*(?:[ \t]+(?:[A-ZÀ-Þ][\w'-]*|am|an|de|la|le|sur|en|upon))*"
_POSTAL_PART = re.compile(
    rf"(?:[0-9]{{5}}|[0-9]{{4}}(?:[ \t]?[A-Z]{{2}})?|[0-9]{{2}}-[0-9]{{3}})[ \t,]+{_CITY}(?:[ \t]+\([A-Z]{{2}}\))?"
    rf"|{_CITY}(?:,[ \t]*|[ \t]+)(?:[A-Z]{{1,2}}[0-9][A-Z0-9]?[ \t]?[0-9][A-Z]{{2}}|[A-Z]{{2}}[ \t]+[0-9]{{5}}(?:-[0-9]{{4}})?)"
)
# the part ends its line or clause, or prose goes on in lower case ("London NW1 6XE please")
_PART_END = re.compile(r"[ \t]*(?:[\n.,;:!?)]|$)|[ \t]+[a-z]")
# what may separate an address from its unit or its postal line
_GAP = re.compile(r"[ \t]*(?:,[ \t]*|\r?\n[ \t]*)?")
_STREET_WORDS = {
    "street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "drive", "dr", "way", "court", "ct", "place", "pl",
    "square", "sq", "terrace", "close", "crescent", "boulevard", "blvd", "highway", "hwy", "parkway", "row", "hill",
    "rue", "chemin", "allee", "allée", "platz", "weg", "gasse", "via", "viale", "piazza", "calle", "plaza", "ul", "al",
    "flat", "apt", "apartment", "unit", "suite", "studio", "po", "box",
    # Italian and Spanish street types come first and take a comma before the number
    "strada", "contrada", "incrocio", "rotonda", "canale", "borgo", "vicolo", "largo", "piazzale", "stretto",
    "corso", "appartamento", "piano", "avenida", "carrer", "camino", "paseo", "ronda", "travessera",
}
_NAME_PART = re.compile(r"[A-ZÀ-Þ][a-zß-ÿ'’-]+(?:[ \t]+[A-ZÀ-Þ][a-zß-ÿ'’-]+){1,3}")
_EDGE_TOKENS = {",", ";", ":", "-", "–", "|", "/"}
MAX_GAP = 8


def find_relative_dates(text: str) -> List[Tuple[int, int]]:
    """Character offsets of weekday names, relative days with a time and offsets
    ("two weeks ago"), per the module's convention."""
    found = []
    for m in _RELATIVE_DATE.finditer(text):
        if _NOT_A_DAY_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            continue
        found.append((m.start(), m.end()))
    return found


def find_unit_numbers(text: str) -> List[Tuple[int, int]]:
    """Character offsets of "Flat 4B", "Apt. 12", "Unit 7", "Suite 300"."""
    return [(m.start(), m.end()) for m in _UNIT_NUMBER.finditer(text)]


def postal_part_after(text: str, end: int) -> Optional[int]:
    """Where a postcode-and-city part that follows ``end`` (after a comma or a line
    break) ends, or None. Looks at one line's worth of text only."""
    gap = _GAP.match(text, end, end + MAX_GAP)
    if gap is None or gap.end() == end:
        return None
    limit = min(len(text), gap.end() + 80)
    m = _POSTAL_PART.match(text, gap.end(), limit)
    if m is None or not _PART_END.match(text, m.end(), limit):
        return None
    return m.end()


def swallowed_name(text: str) -> Optional[Tuple[int, int]]:
    """(end of the name, start of the address) when ``text``, an address, starts
    with a part that is a name: 2-4 capitalised words, no digit, no street word,
    then a comma or a line break; else None."""
    m = _NAME_PART.match(text)
    if m is None:
        return None
    if any(word.lower().strip(".") in _STREET_WORDS for word in m.group(0).split()):
        return None
    gap = _GAP.match(text, m.end())
    rest = gap.end()
    if rest == m.end() or rest >= len(text) or not any(c.isdigit() for c in text[rest:]):
        return None
    return m.end(), rest


class PiiContext:
    """Rules after the model: sets ``doc.ents`` and a scored SpanGroup."""

    def __init__(self, nlp: Language, name: str, *, labels: Sequence[str], spans_key: str):
        unknown = sorted(set(labels) - set(CONTEXT_LABELS))
        if unknown:
            raise ValueError(f"pii_context: unknown label(s) {unknown}; known: {', '.join(CONTEXT_LABELS)}")
        if not spans_key:
            raise ValueError("pii_context: spans_key must be a non-empty string")
        self.name = name
        self.labels = tuple(labels)
        self.spans_key = spans_key
        register_scored_spans_key(spans_key)

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text
        ents = _Entities(doc)
        counts = {"dates": 0, "units": 0, "postal_lines": 0, "names_split": 0, "edges_trimmed": 0, "blocked": 0}

        def place(start: int, end: int, label: str, score: float, absorb: Sequence[str]) -> bool:
            """Put [start, end) as ``label``, absorbing the overlapping entities of the
            ``absorb`` types (the union is taken); refused when another type overlaps."""
            span = doc.char_span(start, end, label=label, alignment_mode="expand")
            if span is None or not len(span):
                return False
            overlapping = ents.overlapping(span.start, span.end)
            if any(e.label_ not in absorb for e in overlapping):
                counts["blocked"] += 1
                return False
            lo = min([span.start] + [e.start for e in overlapping])
            hi = max([span.end] + [e.end for e in overlapping])
            merged = _trim(Span(doc, lo, hi, label=label))
            if merged is None:
                return False
            best = max([score] + [ents.score(e, score) for e in overlapping if e.label_ == label])
            for e in overlapping:
                ents.remove(e)
            ents.add(merged, best)
            return True

        # separators at the edges of the model's entities
        for ent in ents.all():
            cut = _trim(ent)
            if cut is not None and (cut.start, cut.end) == (ent.start, ent.end):
                continue
            counts["edges_trimmed"] += 1
            score = ents.score(ent, 0.5)
            ents.remove(ent)
            if cut is not None:
                ents.add(cut, score)
        if "PERSON" in self.labels:
            for ent in [e for e in ents.all() if e.label_ == "STREET_ADDRESS"]:
                split = swallowed_name(ent.text)
                if split is None:
                    continue
                person = doc.char_span(ent.start_char, ent.start_char + split[0], label="PERSON")
                address = doc.char_span(ent.start_char + split[1], ent.end_char, label="STREET_ADDRESS")
                if person is None or address is None:
                    continue
                score = ents.score(ent, SCORES["STREET_ADDRESS"])
                ents.remove(ent)
                ents.add(person, score)
                ents.add(address, score)
                counts["names_split"] += 1
        if "STREET_ADDRESS" in self.labels:
            for start, end in find_unit_numbers(text):
                unit = doc.char_span(start, end, alignment_mode="expand")
                if unit is None or ents.overlapping(unit.start, unit.end):
                    continue  # inside an entity already (the model's address holds it)
                # joined to an address right after it ("Flat 4B\n12 Baker Street")
                gap = _GAP.match(text, end, end + MAX_GAP)
                nxt = ents.starting_at_char(gap.end()) if gap else None
                stop = nxt.end_char if nxt is not None and nxt.label_ == "STREET_ADDRESS" else end
                if place(start, stop, "STREET_ADDRESS", SCORES["STREET_ADDRESS"], ("STREET_ADDRESS",)):
                    counts["units"] += 1
            for ent in [e for e in ents.all() if e.label_ == "STREET_ADDRESS"]:
                end = postal_part_after(text, ent.end_char)
                if end is not None and place(ent.start_char, end, "STREET_ADDRESS", ents.score(ent, SCORES["STREET_ADDRESS"]), ("STREET_ADDRESS", "LOCATION")):
                    counts["postal_lines"] += 1
        if "DATE_TIME" in self.labels:
            for start, end in find_relative_dates(text):
                if place(start, end, "DATE_TIME", SCORES["DATE_TIME"], ("DATE_TIME",)):
                    counts["dates"] += 1
        doc.set_ents(ents.all(), default="outside")
        changed = ents.changed()
        doc.spans[self.spans_key] = SpanGroup(
            doc, name=self.spans_key, spans=[span for span, _ in changed], attrs={"scores": [score for _, score in changed], **counts}
        )
        return doc


class _Entities:
    """The entities of a doc being edited, with the token that each covers, so finding
    what overlaps a span costs its length, not the number of entities."""

    def __init__(self, doc: Doc):
        self.doc = doc
        self.owner: List[Optional[Span]] = [None] * len(doc)
        self.scores: Dict[Tuple[int, int, str], float] = {}  # the entities this pipe set
        self.token_at_char = {token.idx: token.i for token in doc}
        for ent in doc.ents:
            self._own(ent, ent)

    def _own(self, span: Span, value: Optional[Span]) -> None:
        for i in range(span.start, span.end):
            self.owner[i] = value

    def overlapping(self, start: int, end: int) -> List[Span]:
        found: List[Span] = []
        for i in range(start, end):
            ent = self.owner[i]
            if ent is not None and (not found or found[-1] is not ent):
                found.append(ent)
        return found

    def starting_at_char(self, char: int) -> Optional[Span]:
        i = self.token_at_char.get(char)
        ent = None if i is None else self.owner[i]
        return ent if ent is not None and ent.start == i else None

    def score(self, span: Span, default: float) -> float:
        key = (span.start, span.end, span.label_)
        if key in self.scores:
            return self.scores[key]
        score = span._.confidence if span.has_extension("confidence") else None
        return default if score is None else float(score)

    def remove(self, span: Span) -> None:
        self._own(span, None)
        self.scores.pop((span.start, span.end, span.label_), None)

    def add(self, span: Span, score: float) -> None:
        self._own(span, span)
        self.scores[(span.start, span.end, span.label_)] = score

    def all(self) -> List[Span]:
        return self.overlapping(0, len(self.doc))

    def changed(self) -> List[Tuple[Span, float]]:
        return [(e, self.scores[(e.start, e.end, e.label_)]) for e in self.all() if (e.start, e.end, e.label_) in self.scores]


def _trim(span: Span) -> Optional[Span]:
    """``span`` without separator and white-space tokens at its edges (None if nothing is left)."""
    start, end = span.start, span.end
    doc = span.doc
    while start < end and (doc[start].is_space or doc[start].text in _EDGE_TOKENS):
        start += 1
    while end > start and (doc[end - 1].is_space or doc[end - 1].text in _EDGE_TOKENS or doc[end - 1].lower_ in ("and", "or")):
        end -= 1
    if start == end:
        return None
    if (start, end) == (span.start, span.end):
        return span
    return Span(doc, start, end, label=span.label)


@Language.factory(
    "pii_context",
    assigns=["doc.ents", "doc.spans"],
    default_config={"labels": list(CONTEXT_LABELS), "spans_key": SPANS_KEY},
)
def make_pii_context(nlp: Language, name: str, labels: List[str], spans_key: str) -> PiiContext:
    """Create the ``pii_context`` pipe (after ``ner_plus``).

    labels (List[str]): the rules to apply, by the type they set: DATE_TIME
        (relative dates), STREET_ADDRESS (units, postal lines), PERSON (a name an
        address swallowed).
    spans_key (str): the key of the scored SpanGroup of changed entities in ``doc.spans``.
    """
    return PiiContext(nlp, name, labels=labels, spans_key=spans_key)
