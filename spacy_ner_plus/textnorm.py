"""A normalised view of a text, for patterns that should see what a person sees, with a map
back to the original character offsets.

What a reader sees as "536-22-1234" may be written with a zero-width space inside, a no-break
space or an en dash as separator, fullwidth digits, or a soft hyphen. ``normalize`` returns a
view where those differences are gone, so one pattern finds them all:

- NFKC, per grapheme cluster (a character and the combining marks after it): fullwidth and
  other compatibility forms become their plain form ("４" -> "4", "＠" -> "@"), and "u" + U+0308
  becomes "ü";
- format characters (category Cf: zero-width space and joiners, soft hyphen, byte order mark,
  LRM/RLM and the other bidi controls, word joiner...) and other default-ignorable characters
  (variation selectors, combining grapheme joiner, Hangul fillers) are removed;
- dashes (category Pd: en dash, em dash, non-breaking hyphen, figure dash...) and the minus
  signs become "-";
- space separators (category Zs: no-break space, thin space, ideographic space...) become " ",
  line and paragraph separators (U+2028, U+2029, U+0085) become "\\n";
- decimal digits of every script (category Nd) become ASCII digits.

A match ``[start, end)`` in the view is mapped back with ``NormalizedText.to_original``: the
original span starts at the first original character of the view's ``start`` and ends after
the last original character of ``end - 1``, so removed characters inside a match are part of
it and removed characters at its edges are not; a removed mark that belongs to the character
before it (a variation selector, a combining grapheme joiner) goes with that character, as the
two are one grapheme.

The work is linear in the text: ASCII needs no change, so only runs of non-ASCII characters
are looked at, and the map is a sorted list of segments (one per changed cluster and per
unchanged stretch between them), searched by bisection.

A pure algorithm: it knows no pipe and no service.
"""
import bisect
import re
import sys
import threading
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# characters that are default-ignorable (Unicode DerivedCoreProperties) but not in category Cf
_IGNORABLE_NOT_CF = (
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0]
    + list(range(0x180B, 0x1810))
    + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)
_EXTRA_DASHES = {0x2212: "-", 0x2796: "-", 0x02D7: "-", 0x2043: "-", 0xFE63: "-", 0xFF0D: "-"}
_LINE_BREAKS = {0x2028: "\n", 0x2029: "\n", 0x0085: "\n"}

_table_lock = threading.Lock()
_table: Optional[Dict[str, str]] = None
_special_re: Optional["re.Pattern[str]"] = None
# a non-ASCII run, with the ASCII character before it: "e" + U+0301 composes to one character
_NON_ASCII_RUN = re.compile(r"[\x00-\x7f]?[^\x00-\x7f]+")


def load_tables() -> None:
    """Build the per-character replacement table from the Unicode database now
    (about 0.2 s, once per process) instead of in the first ``normalize`` call."""
    _replacements()


def _replacements() -> Tuple[Dict[str, str], "re.Pattern[str]"]:
    """The per-character replacements (built once, on first use, from the Unicode database)."""
    global _table, _special_re
    if _table is None:
        with _table_lock:
            if _table is None:
                table: Dict[str, str] = {}
                for cp in range(0x80, sys.maxunicode + 1):
                    category = unicodedata.category(chr(cp))
                    if category == "Cf":
                        table[chr(cp)] = ""
                    elif category == "Pd":
                        table[chr(cp)] = "-"
                    elif category == "Zs":
                        table[chr(cp)] = " "
                    elif category == "Nd":
                        table[chr(cp)] = str(unicodedata.decimal(chr(cp)))
                for cp in _IGNORABLE_NOT_CF:
                    table[chr(cp)] = ""
                table.update({chr(cp): value for cp, value in {**_EXTRA_DASHES, **_LINE_BREAKS}.items()})
                _special_re = re.compile("[" + "".join(re.escape(c) for c in sorted(table)) + "]")
                _table = table
    assert _special_re is not None
    return _table, _special_re


@dataclass(frozen=True)
class NormalizedText:
    """A text's normalised view and the map from the view's offsets to the original's.

    original (str): the text as given.
    text (str): the normalised view.
    """

    original: str
    text: str
    # segments, sorted by view offset: (view start, original start, original end, identity).
    # An identity segment maps character for character; any other maps each of its view
    # characters to the whole original range (one cluster).
    _view_starts: Tuple[int, ...]
    _segments: Tuple[Tuple[int, int, int, bool], ...]

    @property
    def changed(self) -> bool:
        """Whether the view differs from the original."""
        return self.text != self.original

    def to_original(self, start: int, end: int) -> Tuple[int, int]:
        """The original character offsets of the view's ``[start, end)``.

        start (int): a view offset, 0 <= start < end.
        end (int): a view offset, end <= len(text).
        RETURNS (Tuple[int, int]): the original ``(start, end)``.
        RAISES (ValueError): an empty or out-of-range span.
        """
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"to_original: need 0 <= start < end <= {len(self.text)}, got ({start}, {end})")
        return self._original_start(start), self._original_end(end - 1)

    def _segment(self, offset: int) -> Tuple[int, int, int, bool]:
        return self._segments[bisect.bisect_right(self._view_starts, offset) - 1]

    def _original_start(self, offset: int) -> int:
        view_start, orig_start, _, identity = self._segment(offset)
        return orig_start + (offset - view_start) if identity else orig_start

    def _original_end(self, offset: int) -> int:
        view_start, orig_start, orig_end, identity = self._segment(offset)
        return orig_start + (offset - view_start) + 1 if identity else orig_end


def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


def normalize(text: str) -> NormalizedText:
    """The normalised view of ``text`` (module docstring) with its offset map.

    text (str): any text.
    RETURNS (NormalizedText): the view; ``to_original`` maps its offsets back.
    """
    view_parts: List[str] = []
    view_starts: List[int] = []
    segments: List[Tuple[int, int, int, bool]] = []
    view_len = 0
    copied = 0  # original offset up to which the text has been copied or replaced

    def copy_until(orig_end: int) -> None:
        nonlocal view_len, copied
        if orig_end > copied:
            view_starts.append(view_len)
            segments.append((view_len, copied, orig_end, True))
            view_parts.append(text[copied:orig_end])
            view_len += orig_end - copied
            copied = orig_end

    if not text.isascii():
        table, special = _replacements()
        for run in _NON_ASCII_RUN.finditer(text):
            chunk = run.group(0)
            if unicodedata.is_normalized("NFKC", chunk) and special.search(chunk) is None:
                continue
            copy_until(run.start())
            i, n = 0, len(chunk)
            while i < n:
                j = i + 1
                while j < n and _is_mark(chunk[j]):
                    j += 1
                cluster = chunk[i:j]
                nfkc = unicodedata.normalize("NFKC", cluster)
                replaced = "".join(table.get(c, c) for c in nfkc)
                orig_start, orig_end = run.start() + i, run.start() + j
                if replaced == cluster:
                    copy_until(orig_end)
                else:
                    copy_until(orig_start)
                    if replaced:
                        view_starts.append(view_len)
                        segments.append((view_len, orig_start, orig_end, False))
                        view_parts.append(replaced)
                        view_len += len(replaced)
                    copied = orig_end
                i = j
    copy_until(len(text))
    if not segments:  # the empty text
        segments.append((0, 0, 0, True))
        view_starts.append(0)
    return NormalizedText(text, "".join(view_parts), tuple(view_starts), tuple(segments))
