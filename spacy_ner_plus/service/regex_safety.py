"""Regular expressions from clients, compiled so that they cannot hold up the service.

Two guards run before a pattern touches a request's text:
1. a static check (``unsafe_reason``) refuses patterns whose backtracking can explode:
   inside a repeated group, a variable-length piece whose characters can also start what
   follows it in the group (``(a+)+``, ``(\\w+\\s?)*``, ``(.*a){12}``), and alternatives of a
   repeated group that can start with the same character (``(a|a)*``, ``(a|aa)+``). Atomic
   groups and possessive quantifiers are exempt: they are never backtracked into. Character
   sets are compared on a sample of characters (ASCII and a few others), so the check errs
   towards refusing;
2. a probe runs the compiled pattern on adversarial strings built from its own characters
   (``PROBE_CHARS`` long) with the ``regex`` module's ``timeout`` (``PROBE_TIMEOUT_S``); one that
   runs out of time is refused (this catches polynomial blow-ups such as ``\\w*\\w*\\w*\\w*!``).
A refused pattern is ``ApiError(400, "unsafe_pattern")`` naming the request field. Matching
itself is bounded by the caller (adhoc.py passes ``timeout`` to every search).
"""
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import regex

from .requests import ApiError

FLAGS = regex.IGNORECASE | regex.DOTALL | regex.MULTILINE | regex.V0
PROBE_TIMEOUT_S = 0.05  # each adversarial probe at compile time
PROBE_CHARS = 256


def compile_safe(source: str, field: str, flags: int = FLAGS) -> Any:
    """``source`` compiled with ``flags`` after the static check and the probe (module docstring).

    RAISES (ApiError): 400 unsafe_pattern naming ``field``: invalid syntax, catastrophic
        backtracking found by the check, or a probe that ran out of time.
    """
    try:
        compiled = regex.compile(source, flags)
    except (regex.error, ValueError, OverflowError, RecursionError) as err:
        raise ApiError(400, "unsafe_pattern", f"{field} is not a valid regular expression: {getattr(err, 'msg', err)}", field) from None
    try:
        reason = unsafe_reason(source)
    except RecursionError:
        reason = "it nests groups too deeply to be checked"
    if reason is not None:
        raise ApiError(400, "unsafe_pattern", f"{field} was refused, not run: {reason}", field)
    for probe in probes(source):
        try:
            compiled.search(probe, timeout=PROBE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(
                400, "unsafe_pattern",
                f"{field} was refused: on an adversarial string of {len(probe)} characters it ran longer than {PROBE_TIMEOUT_S} s (catastrophic backtracking)",
                field,
            ) from None  # fmt: skip
    return compiled


_SAMPLE = "".join(chr(c) for c in range(32, 127)) + "\t\n\u00a0\u00e9\u00df\u0436\u4e2d\u0661\U0001f600\u0301"
_ESCAPE_ARGS = {"p": True, "P": True, "N": True, "x": False, "u": False, "U": False}


@dataclass
class _Node:
    """A piece of a parsed pattern: an atom (one character set) or a group of alternatives."""

    chars: FrozenSet[str]  # the sample characters it can match (for groups: of all its atoms)
    first: FrozenSet[str]  # the sample characters it can start with
    nullable: bool
    variable: bool  # its length can vary (a quantifier with min != max, or inside a group)
    qmin: int = 1
    qmax: Optional[int] = 1
    safe: bool = False  # atomic group or possessive quantifier: never backtracked into
    branches: Optional[List[List["_Node"]]] = None


class _Parser:
    """A small parser of the regex syntax, enough to find repeated groups and what they hold.
    It errs towards refusing: an escape or construct it does not know counts as any character."""

    def __init__(self, source: str) -> None:
        self.s = source
        self.i = 0
        self.cache: Dict[str, FrozenSet[str]] = {}

    def charset(self, atom: str) -> FrozenSet[str]:
        if atom not in self.cache:
            try:
                compiled = regex.compile(atom, FLAGS)
                self.cache[atom] = frozenset(c for c in _SAMPLE if compiled.fullmatch(c))
            except regex.error:
                self.cache[atom] = frozenset(_SAMPLE)
        return self.cache[atom]

    def parse(self) -> List[List[_Node]]:
        branches = self.alternatives()
        return branches

    def alternatives(self) -> List[List[_Node]]:
        branches: List[List[_Node]] = [[]]
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == ")":
                break
            if c == "|":
                self.i += 1
                branches.append([])
                continue
            node = self.element()
            if node is not None:
                self.quantifier(node)
                branches[-1].append(node)
        return branches

    def element(self) -> Optional[_Node]:
        s, i = self.s, self.i
        c = s[i]
        if c == "\\":
            j = i + 2
            letter = s[i + 1] if i + 1 < len(s) else ""
            if letter in _ESCAPE_ARGS and j < len(s) and s[j] == "{":
                close = s.find("}", j)
                j = len(s) if close < 0 else close + 1
            elif letter == "x":
                j = i + 4
            elif letter == "u":
                j = i + 6
            elif letter == "U":
                j = i + 10
            self.i = j
            if letter in "bBAZzG":
                return _Node(frozenset(), frozenset(), True, False)
            if letter.isdigit() or letter == "g":
                everything = frozenset(_SAMPLE)
                return _Node(everything, everything, True, True)
            chars = self.charset(s[i:j])
            return _Node(chars, chars, False, False)
        if c == "[":
            j = i + 1
            if j < len(s) and s[j] == "^":
                j += 1
            if j < len(s) and s[j] == "]":
                j += 1
            depth = 1
            while j < len(s) and depth:
                if s[j] == "\\":
                    j += 2
                    continue
                if s[j] == "[" and j + 1 < len(s) and s[j + 1] == ":":
                    close = s.find(":]", j + 2)
                    j = j + 1 if close < 0 else close + 2
                    continue
                if s[j] == "]":
                    depth -= 1
                j += 1
            self.i = j
            chars = self.charset(s[i:j])
            return _Node(chars, chars, False, False)
        if c == "(":
            return self.group()
        if c in "^$":
            self.i += 1
            return _Node(frozenset(), frozenset(), True, False)
        self.i += 1
        chars = self.charset(regex.escape(c) if c != "." else ".")
        return _Node(chars, chars, False, False)

    def group(self) -> Optional[_Node]:
        s = self.s
        self.i += 1
        atomic = lookaround = False
        if s.startswith("?", self.i):
            rest = s[self.i + 1 : self.i + 4]
            if rest.startswith("#"):
                close = s.find(")", self.i)
                self.i = len(s) if close < 0 else close + 1
                return None
            if rest.startswith("P="):
                close = s.find(")", self.i)
                self.i = len(s) if close < 0 else close + 1
                everything = frozenset(_SAMPLE)
                return _Node(everything, everything, True, True)
            if rest.startswith(">"):
                atomic = True
                self.i += 2
            elif rest.startswith(("=", "!", "<=", "<!")):
                lookaround = True
                self.i += 2 if rest[0] in "=!" else 3
            elif rest.startswith(("P<", "<")):
                close = s.find(">", self.i)
                self.i = len(s) if close < 0 else close + 1
            elif rest.startswith(":"):
                self.i += 2
            else:  # inline flags: (?i) or (?i:...)
                j = self.i + 1
                while j < len(s) and s[j] not in ":)":
                    j += 1
                if j >= len(s) or s[j] == ")":
                    self.i = j + 1
                    return None
                self.i = j + 1
        branches = self.alternatives()
        self.i += 1  # the closing parenthesis
        if lookaround:
            return _Node(frozenset(), frozenset(), True, False)
        chars = frozenset().union(*(n.chars for b in branches for n in b)) if any(branches) else frozenset()
        first: FrozenSet[str] = frozenset()
        nullable = False
        for branch in branches:
            f, null = _first(branch)
            first |= f
            nullable |= null
        variable = len(branches) > 1 or any(n.variable for b in branches for n in b)
        return _Node(chars, first, nullable, variable, safe=atomic, branches=branches)

    def quantifier(self, node: _Node) -> None:
        s = self.s
        if self.i >= len(s):
            return
        c = s[self.i]
        if c in "*+?":
            node.qmin, node.qmax = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.i += 1
        elif c == "{":
            m = regex.match(r"\{(\d*)(,?)(\d*)\}", s[self.i :])
            if m is None or (not m.group(1) and not m.group(3)):
                return
            lo = int(m.group(1) or 0)
            hi = int(m.group(3)) if m.group(3) else (None if m.group(2) else lo)
            node.qmin, node.qmax = lo, hi
            self.i += m.end()
        else:
            return
        if self.i < len(s) and s[self.i] == "+":
            node.safe = True
            self.i += 1
        elif self.i < len(s) and s[self.i] == "?":
            self.i += 1
        if node.qmin == 0:
            node.nullable = True
        if node.qmax is None or node.qmax != node.qmin:
            node.variable = True


def _first(branch: Sequence[_Node]) -> Tuple[FrozenSet[str], bool]:
    """The characters ``branch`` can start with, and whether it can match nothing."""
    first: FrozenSet[str] = frozenset()
    for node in branch:
        first |= node.first
        if not node.nullable:
            return first, False
    return first, True


def unsafe_reason(source: str) -> Optional[str]:
    """Why ``source`` can backtrack catastrophically (module docstring), or None."""
    parser = _Parser(source)
    tree = parser.parse()
    return _check_branches(tree, False)


def _check_branches(branches: List[List[_Node]], repeated: bool) -> Optional[str]:
    for branch in branches:
        for node in branch:
            if node.branches is None:
                continue
            repeats = (node.qmax is None or node.qmax > 1) and not node.safe
            if repeats:
                reason = _check_repeated(node)
                if reason is not None:
                    return reason
            reason = _check_branches(node.branches, repeated or repeats)
            if reason is not None:
                return reason
    return None


def _check_repeated(group: _Node) -> Optional[str]:
    """A repeated group: its alternatives must start differently, and no variable-length piece may
    be followed (in the group, or by the group's next repetition) by something it can also match."""
    assert group.branches is not None
    firsts = [_first(b)[0] for b in group.branches]
    for a in range(len(firsts)):
        for b in range(a + 1, len(firsts)):
            if firsts[a] & firsts[b]:
                return "a repeated group has alternatives that can match the same text (like (a|a)* or (a|aa)+)"
    wrap = group.first
    for branch in group.branches:
        for k, node in enumerate(branch):
            if not node.variable or node.safe:
                continue
            follow, _ = _first(branch[k + 1 :])
            if _first(branch[k + 1 :])[1]:
                follow |= wrap
            if node.chars & follow:
                return "a repeated group holds a variable-length piece that can also match what follows it (nested quantifiers, like (a+)+ or (\\w+\\s?)*)"
    return None


def probes(source: str) -> List[str]:
    """Adversarial strings for ``source``: long runs of the characters it names and of common
    classes, each followed by a character that makes a match fail at the end."""
    literals = sorted({c for c in source if c.isalnum() or c in " -_.@"})[:8]
    seeds = list(dict.fromkeys(literals + ["a", "1", " "]))
    out = []
    for seed in seeds:
        for tail in ("!", "\n!"):
            out.append(seed * PROBE_CHARS + tail)
    alternating = "".join(seeds) * (PROBE_CHARS // max(1, len(seeds)))
    out.append(alternating + "!")
    return out
