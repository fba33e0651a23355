"""Offsets in the unit a client indexes strings by.

The service finds entities at Python code-point offsets. JavaScript, Java and .NET
index strings by UTF-16 code units (an astral character such as an emoji is two of
them), and byte-oriented clients index the UTF-8 bytes. ``convert_offsets`` maps
code-point offsets to either; ``to_codepoints`` maps them back (offsets a client sends,
e.g. Presidio's ``analyzer_results``).

A code-point boundary is always a boundary in both other units, so a converted span
never splits a surrogate pair or a UTF-8 sequence. The inverse checks it: an offset
inside a character is an ``OffsetError``. Combining marks are characters of their own
(a code point each); a span may end between a letter and its combining mark if the
code-point span did.

Both conversions are linear in the text: the distinct offsets are sorted and each
stretch of text between two of them is encoded (or decoded) once.
"""
from typing import Dict, List, Sequence, Tuple

OFFSET_UNITS = ("codepoint", "utf16", "byte")
_CODECS = {"utf16": ("utf-16-le", 2), "byte": ("utf-8", 1)}


class OffsetError(ValueError):
    """An offset that is not a character boundary in its unit, or outside the text.

    index (int): the span's position in the list given.
    which (str): "start" or "end".
    """

    def __init__(self, message: str, index: int, which: str) -> None:
        super().__init__(message)
        self.index = index
        self.which = which


def _check_unit(unit: str) -> None:
    if unit not in OFFSET_UNITS:
        raise ValueError(f"unknown offset unit {unit!r}; use one of {list(OFFSET_UNITS)}")


def convert_offsets(text: str, spans: Sequence[Tuple[int, int]], unit: str) -> List[Tuple[int, int]]:
    """Code-point spans of ``text`` as offsets in ``unit``.

    text (str): the text the spans index.
    spans (Sequence[Tuple[int, int]]): (start, end) code-point offsets, 0 <= start <= end <= len(text).
    unit (str): "codepoint" (returned as given), "utf16" (UTF-16 code units) or "byte" (UTF-8 bytes).
    RETURNS (List[Tuple[int, int]]): the spans in ``unit``, in the order given.
    RAISES (ValueError): an unknown unit; an offset outside the text (OffsetError).
    """
    _check_unit(unit)
    for i, (start, end) in enumerate(spans):
        if not 0 <= start <= end <= len(text):
            which = "start" if not 0 <= start <= len(text) else "end"
            raise OffsetError(f"span {i} ({start}, {end}) is not a span of a text of {len(text)} characters", i, which)
    if unit == "codepoint" or text.isascii():
        return [(int(s), int(e)) for s, e in spans]
    codec, width = _CODECS[unit]
    at: Dict[int, int] = {}
    previous, position = 0, 0
    for offset in sorted({o for span in spans for o in span}):
        position += len(text[previous:offset].encode(codec)) // width
        at[offset] = position
        previous = offset
    return [(at[s], at[e]) for s, e in spans]


def to_codepoints(text: str, spans: Sequence[Tuple[int, int]], unit: str) -> List[Tuple[int, int]]:
    """Spans of ``text`` given in ``unit`` as code-point offsets (the inverse of convert_offsets).

    text (str): the text the spans index.
    spans (Sequence[Tuple[int, int]]): (start, end) offsets in ``unit``.
    unit (str): one of OFFSET_UNITS.
    RETURNS (List[Tuple[int, int]]): the spans as code-point offsets, in the order given.
    RAISES (OffsetError): an offset outside the text, start > end, or an offset inside a
        character (between the two halves of a surrogate pair, inside a UTF-8 sequence);
        ``index`` and ``which`` say which.
    """
    _check_unit(unit)
    if unit == "codepoint" or text.isascii():
        size = len(text)
        encoded = None
    else:
        codec, width = _CODECS[unit]
        encoded = text.encode(codec)
        size = len(encoded) // width
    where: Dict[int, Tuple[int, str]] = {}
    for i, (start, end) in enumerate(spans):
        for which, offset in (("start", start), ("end", end)):
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size:
                raise OffsetError(f"span {i}: {which} {offset!r} is not an offset of a text of {size} {_unit_name(unit)}", i, which)
            where.setdefault(offset, (i, which))
        if start > end:
            raise OffsetError(f"span {i}: start {start} is after end {end}", i, "start")
    if encoded is None:
        return [(int(s), int(e)) for s, e in spans]
    at: Dict[int, int] = {}
    previous, position = 0, 0
    for offset in sorted(where):
        try:
            position += len(encoded[previous * width : offset * width].decode(codec))
        except UnicodeDecodeError:
            i, which = where[offset]
            raise OffsetError(
                f"span {i}: {which} {offset} falls inside a character (a {_unit_name(unit)} offset must be a character boundary)", i, which
            ) from None
        at[offset] = position
        previous = offset
    return [(at[s], at[e]) for s, e in spans]


def _unit_name(unit: str) -> str:
    return {"codepoint": "characters", "utf16": "UTF-16 code units", "byte": "UTF-8 bytes"}[unit]
