"""Texts that made the request path super-linear (issue 28, finding 1) and ordinary prose of the
same length to compare them with. Shared by tests/test_service_adversarial.py and
bench/adversarial_paths.py; every generator is deterministic and returns exactly ``n`` characters
(the tail is cut or padded with spaces)."""
import random
from typing import Callable, Dict, List, Tuple

KNOWN_PHONE = "+44 20 7946 0958"
KNOWN_IBAN = "DE89 3704 0044 0532 0130 00"

_WORDS = (
    "the of and to in is was for on that with as by at from it his an were are which this be or has had not but "
    "first one their its new after who they have her she two been other when there all during into school time "
    "may years more most only over city some world would where later up such used many can state about national "
    "out known university united then made also between through because against company team government season "
    "report meeting customer order invoice shipment delivered yesterday please review attached contract payment "
    "account manager support ticket resolved thanks regards office Monday Tuesday London Paris Berlin Smith Maria"
).split()


def _fit(text: str, n: int) -> str:
    return text[:n] if len(text) >= n else text + " " * (n - len(text))


def prose(n: int, seed: int = 0) -> str:
    """Ordinary prose: sentences of common words, a few numbers, commas and full stops."""
    rng = random.Random(seed)
    parts: List[str] = []
    size = 0
    while size < n:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(1, 2030)))
        if len(words) > 8:
            words[4] += ","
        sentence = " ".join(words).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return _fit("".join(parts), n)


def parens(n: int) -> str:
    """One run of "(": spaCy's tokenizer re-searches the rest after each prefix."""
    return "(" * n


def emails(n: int) -> str:
    """E-mail addresses, one after another (a mailing-list CSV): 4,000 in 100 KB."""
    parts: List[str] = []
    size, i = 0, 0
    while True:
        part = f"user{i}@example{i % 97}.com, "
        if size + len(part) > n:
            break
        parts.append(part)
        size += len(part)
        i += 1
    return _fit("".join(parts), n)


_AREA_CODES = (212, 202, 305, 312, 415, 617, 650, 713)


def phone_lines(n: int, seed: int = 0) -> str:
    """Lines of phone-like junk: valid US, GB and DE numbers among dates, references and part
    numbers; thousands of candidates for libphonenumber's matcher."""
    rng = random.Random(seed)
    lines: List[str] = []
    size = 0
    while size < n:
        number = rng.choice(
            [
                f"({rng.choice(_AREA_CODES)}) {rng.randint(201, 989)}-{rng.randint(0, 9999):04d}",
                f"+44 20 7946 {rng.randint(0, 9999):04d}",
                f"+49 30 {rng.randint(1000000, 9999999)}",
            ]
        )
        junk = f"{rng.randint(1, 28)}/{rng.randint(1, 12)} ref {rng.randint(10, 99)}-{rng.randint(100, 999)} x{rng.randint(1, 9)}"
        line = f"tel {number} {junk}\n" if rng.random() < 0.5 else f"{junk} {rng.randint(1000, 99999)}\n"
        lines.append(line)
        size += len(line)
    return _fit("".join(lines), n)


def iban_words(n: int, seed: int = 0) -> str:
    """Words shaped like the start of an IBAN, too long to be one (the old expression tried
    every way to split them into groups), and one real IBAN at the end."""
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    tail = f" {KNOWN_IBAN}."
    parts: List[str] = []
    size = 0
    while size < n - len(tail):
        word = "GB82" + "".join(rng.choice(alphabet) for _ in range(40)) + " "
        parts.append(word)
        size += len(word)
    body = "".join(parts)[: n - len(tail)]
    if not body.endswith(" "):
        body = body[:-1] + " "
    return body + tail


def url_parens(n: int) -> str:
    """A URL followed by a run of ")": the old trimming loop counted the URL per character cut."""
    return "http://a.bc/" + ")" * (n - 12)


def ones_then_phone(n: int) -> str:
    """ "1 " repeated, then a phone number: junk that exhausted libphonenumber's 65,535 tries
    (140 KB hid the number)."""
    tail = f"call {KNOWN_PHONE} today."
    return "1 " * ((n - len(tail)) // 2) + " " * ((n - len(tail)) % 2) + tail


ADVERSARIAL: Dict[str, Callable[[int], str]] = {
    "parens": parens,
    "emails": emails,
    "phone_lines": phone_lines,
    "iban_words": iban_words,
    "url_parens": url_parens,
    "ones_then_phone": ones_then_phone,
}


def sizes(quick: bool = False) -> Tuple[int, ...]:
    return (10_000,) if quick else (10_000, 100_000, 1_000_000)
