"""Generate the second PII test set (issue 29, part 4): text that no template of ours produced.

``scripts/make_pii_corpus.py`` (the training corpus) fills six registers of prose templates with
Faker values. Nothing here reuses its templates, value generators or insertion rules: the values
come from this file's own small lists and rules (names of many cultures, checksummed card and IBAN
numbers, phone numbers written as each country writes them nationally, addresses in seven
countries' formats), Faker is not used, and ``phonenumbers`` serves only to keep the phone numbers
a network could route (``is_valid_number`` for their region). Two parts:

(a) ``news``: real sentences, the CoNLL++ test set (``conll2003/test.iob`` of the shared data),
    PER/ORG/LOC mapped to PERSON/ORGANIZATION/LOCATION (MISC dropped: its tokens are no PII), half of
    them with one clause of structured PII appended by the rules of ``news_clause``. Reuters text
    may not be copied into the repository, so the repository holds the manifest
    (``assets/pii_testset/conll_manifest.json``: sentence numbers, the appended clauses with their
    spans, counts and the sha256 of the materialised file) and ``conll`` materialises the JSONL from
    the shared data into an untracked path, checking the input's md5 and the output's sha256.
    CoNLL does not annotate dates ("1996-08-30", "Tuesday"), so these records carry
    ``"unannotated": ["DATE_TIME"]``: the scorer ignores DATE_TIME predictions on them, and no
    clause inserts a date.
(b) written registers, committed (``assets/pii_testset/written.jsonl`` and ``pii_free.jsonl``):
    log lines, tables, CSV rows, code snippets, chat with typos, postal addresses from UK, US, DE,
    FR, ES, NL and JP (romaji), and notes with weekday names and relative dates; the PII-free texts
    are the same registers without any PII (for false positives per 10,000 words).

Record (one JSON object a line, UTF-8, keys in this order)::

    {"id": "log-0007", "register": "log", "text": "...",
     "spans": [{"start": 0, "end": 20, "label": "DATE_TIME", "text": "2025-03-14T09:21:07Z"}],
     "unannotated": []}

Offsets are code points; ``text`` of a span repeats ``text[start:end]`` (checked). Labelling follows
``assets/pii/README.md``; the choices it does not make are listed in ``assets/pii_testset/README.md``.

    python scripts/make_pii_testset.py written assets/pii_testset
    python scripts/make_pii_testset.py manifest ../shared/data assets/pii_testset/conll_manifest.json
    python scripts/make_pii_testset.py conll ../shared/data corpus/pii_testset/conll.jsonl
    python scripts/make_pii_testset.py check assets/pii_testset     # regenerate, compare the bytes

Size: over 500 lines because the value rules and the eight registers' shapes are the test set
itself; splitting them over modules would only scatter one generator.
"""
import hashlib
import json
import random
import re
import string
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import typer

SEED = 29
LABELS = (
    "PERSON", "ORGANIZATION", "LOCATION", "STREET_ADDRESS", "PHONE_NUMBER", "DATE_TIME",
    "EMAIL_ADDRESS", "URL", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
)
CONLL_FILE = Path("conll2003") / "test.iob"
CONLL_MD5 = "e0a90f168bfe82745c137ae2f76a6c64"  # from the shared data's README
CONLL_MAP = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "LOCATION"}
N_NEWS = 500  # sentences drawn from CoNLL++ test
NEWS_WITH_CLAUSE = 0.5
WRITTEN = {"log": 70, "table": 45, "csv": 45, "code": 50, "chat": 80, "address": 70, "note": 60}
PII_FREE = {"log": 60, "table": 30, "csv": 30, "code": 40, "chat": 60, "note": 40}
Span = Tuple[int, int, str]

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])

# ------------------------------------------------------------------ our own lists
# (first names, last names) per culture; particles and hyphens kept as people write them
NAMES: Dict[str, Tuple[Sequence[str], Sequence[str]]] = {
    "en": (("Oliver", "Grace", "Callum", "Hannah", "Declan", "Maisie", "Reuben", "Tamsin"),
           ("Whitcombe", "Brennan", "Ashdown", "Fairweather", "Lockhart", "Pemberton", "Quigley")),
    "us": (("Tyler", "Brianna", "Marcus", "Kayla", "DeShawn", "Madison", "Cody", "Jolene"),
           ("Hollister", "Washington", "Kowalczyk", "McAllister", "Dubois", "Ramirez-Ortiz")),
    "de": (("Jürgen", "Annika", "Lukas", "Friederike", "Malte", "Svenja", "Till"),
           ("Weißmüller", "Hoffmann", "Schäfer", "von Arnim", "Kleinschmidt", "Brückner")),
    "fr": (("Théo", "Clémence", "Étienne", "Margaux", "Loïc", "Solène"),
           ("Lefèvre", "Dubreuil", "de la Tour", "Marchand", "Rousseau-Blanc")),
    "es": (("Joaquín", "Itziar", "Álvaro", "Nerea", "Íñigo", "Lucía"),
           ("García Olmedo", "Etxeberria", "de la Cruz", "Sánchez", "Urquijo")),
    "nl": (("Sander", "Femke", "Joost", "Anouk", "Bram", "Lieke"),
           ("van der Berg", "de Jong", "Bakker", "van Leeuwen", "Visser")),
    "jp": (("Haruto", "Yui", "Kenji", "Aoi", "Sota", "Mei"),
           ("Sato", "Takahashi", "Watanabe", "Kobayashi", "Yamamoto")),
    "other": (("Chukwuemeka", "Oluwaseun", "Zeynep", "Mehmet", "Priyanka", "Aarav", "Małgorzata",
               "Siobhán", "Nguyen Thi", "Yusuf", "Aroha", "Sigrún", "Thandiwe", "Bao"),
              ("Okafor", "Adeyemi", "Yılmaz", "Öztürk", "Raghunathan", "Wójcik", "Ní Bhriain",
               "Tran", "Al-Masri", "Ngata", "Jónsdóttir", "Dlamini", "Kovačević")),
}
SINGLE_NAMES = ("Oluwaseun", "Sigrún", "Kenji", "Thandiwe", "Aroha", "Bao", "Zeynep", "Íñigo", "Femke", "Malte")
# not names: forms of address, nicknames of nobody, contractions and chat words (no span)
NOT_NAMES = ("bro", "mate", "dude", "hun", "boss", "fam", "buddy", "sis", "champ", "chief", "pal", "babe")
CONTRACTIONS = ("gonna", "wanna", "y'all", "ain't", "dunno", "lemme", "gotta", "innit", "tryna", "imma",
                "shoulda", "coulda", "kinda", "gimme", "ya'll", "c'mon", "ma'am")
ORGS = ("Harbourline Freight Ltd", "Kestrel Analytics", "Weißmüller & Söhne GmbH", "Banco Ribera",
        "Van Dijk Installaties B.V.", "Société Lumière SARL", "Takeda-Mori Shoji", "Northgate Credit Union",
        "Pinecrest Veterinary Clinic", "Ostrander Legal LLP", "Grupo Almendral", "Fjordvik Shipping AS",
        "Bluewren Software", "St. Aldhelm's Hospital", "Okafor & Partners", "Rheinwerk Solar AG")
CITIES = {
    "UK": ("Leeds", "Bristol", "Norwich", "Aberdeen", "Cardiff", "London"),
    "US": ("Tulsa", "Spokane", "Savannah", "Boise", "Albany", "Fresno"),
    "DE": ("Bielefeld", "Leipzig", "Freiburg", "Kiel", "Regensburg", "Berlin"),
    "FR": ("Nantes", "Rennes", "Lille", "Grenoble", "Dijon", "Paris"),
    "ES": ("Zaragoza", "Valladolid", "Bilbao", "Málaga", "Murcia", "Madrid"),
    "NL": ("Utrecht", "Groningen", "Haarlem", "Eindhoven", "Zwolle", "Amsterdam"),
    "JP": ("Sapporo", "Fukuoka", "Sendai", "Kanazawa", "Okayama", "Tokyo"),
}
COUNTRIES = {"UK": "United Kingdom", "US": "the United States", "DE": "Germany", "FR": "France",
             "ES": "Spain", "NL": "the Netherlands", "JP": "Japan"}
STREETS = {
    "UK": ("Baker Street", "Lyndhurst Road", "Albion Terrace", "Cromwell Avenue", "Mill Lane"),
    "US": ("Larkin St", "Maple Avenue", "Old Mill Rd", "W 34th Street", "Cedar Ridge Drive"),
    "DE": ("Lindenstraße", "Am Kupfergraben", "Hauptstr.", "Schillerweg", "Bahnhofstraße"),
    "FR": ("rue des Lilas", "avenue Jean Jaurès", "boulevard Voltaire", "impasse du Moulin"),
    "ES": ("Calle de Alcalá", "Avenida de la Constitución", "Calle Mayor", "Paseo de Gracia"),
    "NL": ("Keizersgracht", "Oudegracht", "Lange Voorhout", "Kerkstraat", "Vondelstraat"),
    "JP": ("Marunouchi", "Jingumae", "Nishi-Shinjuku", "Umeda", "Tenjin"),
}
DOMAINS = ("example.com", "mail.example.org", "example.co.uk", "post.example.net", "firma.example.de",
           "correo.example.es", "example.jp", "webmail.example.fr")
HOSTS = ("portal.example.com", "files.example.net", "intranet.example.org", "shop.example.co.uk",
         "app.example.io", "docs.example.de")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SERVICES = ("auth", "billing", "gateway", "sync-worker", "mailer", "cron", "api", "scheduler")
PRODUCTS = ("USB-C hub", "desk lamp", "trail shoes", "espresso beans", "label tape", "HDMI cable",
            "yoga mat", "spare filter", "notebook A5", "rain jacket")
TYPOS = {"the": "teh", "you": "u", "tomorrow": "tmrw", "because": "bc", "please": "pls", "know": "kno",
         "really": "rly", "definitely": "definately", "receive": "recieve", "address": "adress"}


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode("utf8"))


class Builder:
    """Text written piece by piece; ``e`` adds a labelled piece (its offsets are exact by construction)."""

    def __init__(self) -> None:
        self.parts: List[str] = []
        self.spans: List[Span] = []
        self.n = 0

    def t(self, text: str) -> "Builder":
        self.parts.append(text)
        self.n += len(text)
        return self

    def e(self, text: str, label: str) -> "Builder":
        start = self.n
        self.t(text)
        self.spans.append((start, self.n, label))
        return self

    def add(self, piece: Tuple[str, List[Span]]) -> "Builder":
        """Append a (text, spans) piece made elsewhere."""
        text, spans = piece
        for s, e, label in spans:
            self.spans.append((self.n + s, self.n + e, label))
        return self.t(text)

    def text(self) -> str:
        return "".join(self.parts)


def make_record(rid: str, register: str, text: str, spans: Sequence[Span], unannotated: Sequence[str] = ()) -> Dict:
    return {
        "id": rid,
        "register": register,
        "text": text,
        "spans": [{"start": s, "end": e, "label": label, "text": text[s:e]} for s, e, label in sorted(spans)],
        "unannotated": list(unannotated),
    }


def check_records(records: Sequence[Dict]) -> None:
    """RAISES (ValueError) naming the record: a span out of range, empty, with outer whitespace,
    of an unknown label, whose text differs from the record's, overlapping another; a duplicate id."""
    ids = set()
    for r in records:
        if r["id"] in ids:
            raise ValueError(f"duplicate id {r['id']}")
        ids.add(r["id"])
        previous_end = 0
        for span in r["spans"]:
            s, e = span["start"], span["end"]
            where = f"record {r['id']}: {span}"
            if not 0 <= s < e <= len(r["text"]):
                raise ValueError(f"{where} is outside the text (length {len(r['text'])})")
            if span["label"] not in LABELS:
                raise ValueError(f"{where}: label not one of {LABELS}")
            if r["text"][s:e] != span["text"] or span["text"] != span["text"].strip():
                raise ValueError(f"{where}: text is {r['text'][s:e]!r} or has outer whitespace")
            if s < previous_end:
                raise ValueError(f"{where} overlaps the span before it")
            previous_end = e


def dumps(records: Sequence[Dict]) -> bytes:
    check_records(records)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf8")


# ------------------------------------------------------------------ value rules
class Values:
    """Every value from one Random: the rules are ours (module docstring)."""

    def __init__(self, rng: random.Random) -> None:
        import phonenumbers

        self.rng = rng
        self._pn = phonenumbers

    def choice(self, seq):
        return self.rng.choice(seq)

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(n))

    # people, organisations, places
    def name_parts(self, culture: Optional[str] = None) -> Tuple[str, str]:
        firsts, lasts = NAMES[culture or self.choice(sorted(NAMES))]
        return self.choice(firsts), self.choice(lasts)

    def person(self, culture: Optional[str] = None) -> str:
        first, last = self.name_parts(culture)
        style = self.rng.random()
        if style < 0.7:
            return f"{first} {last}"
        if style < 0.85:
            return f"{first[0]}. {last}"
        return f"{first} {self.choice(string.ascii_uppercase)}. {last}"

    def country(self) -> str:
        return self.choice(sorted(CITIES))

    # structured values
    def phone(self, region: Optional[str] = None) -> str:
        """A number as written in its country, usually without the country code; valid for
        ``phonenumbers`` in its region (drawn again until it is)."""
        region = region or self.choice(("GB", "US", "DE", "FR", "ES", "NL", "JP"))
        for _ in range(200):
            number = self._phone_shape(region)
            try:
                parsed = self._pn.parse(number, region)
            except self._pn.NumberParseException:
                continue
            if self._pn.is_valid_number(parsed):
                return number
        raise RuntimeError(f"no valid {region} number in 200 draws")

    def _phone_shape(self, region: str) -> str:
        d, r = self.digits, self.rng.random()
        if region == "GB":
            if r < 0.45:
                return f"07{self.choice('45789')}{d(2)} {d(3)} {d(3)}"
            if r < 0.65:
                return f"07{self.choice('45789')}{d(2)}{d(6)}"
            if r < 0.85:
                return f"020 {self.choice('378')}{d(3)} {d(4)}"
            return f"+44 7{self.choice('45789')}{d(2)} {d(6)}"
        if region == "US":
            area, exchange = f"{self.choice('23456789')}{d(2)}", f"{self.choice('23456789')}{d(2)}"
            shapes = (f"({area}) {exchange}-{d(4)}", f"{area}.{exchange}.{d(4)}", f"{area}-{exchange}-{d(4)}",
                      f"+1 {area} {exchange} {d(4)}")
            return self.choice(shapes)
        if region == "DE":
            shapes = (f"030 {d(8)}", f"015{self.choice('1279')} {d(4)} {d(4)}", f"089 {d(3)} {d(4)}",
                      f"+49 30 {d(7)}", f"0{self.choice('2345678')}{d(2)} / {d(6)}")
            return self.choice(shapes)
        if region == "FR":
            first = self.choice(("06", "07", "01", "04"))
            if r < 0.45:
                return f"{first} {d(2)} {d(2)} {d(2)} {d(2)}"
            if r < 0.75:
                return f"{first}.{d(2)}.{d(2)}.{d(2)}.{d(2)}"
            return f"+33 {first[1]} {d(2)} {d(2)} {d(2)} {d(2)}"
        if region == "ES":
            if r < 0.5:
                return f"6{d(2)} {d(3)} {d(3)}"
            if r < 0.75:
                return f"91 {d(3)} {d(2)} {d(2)}"
            return f"+34 6{d(2)} {d(2)} {d(2)} {d(2)}"
        if region == "NL":
            shapes = (f"06-{d(8)}", f"06 {d(4)} {d(4)}", f"020 {d(3)} {d(4)}", f"+31 6 {d(4)} {d(4)}")
            return self.choice(shapes)
        if region == "JP":
            shapes = (f"090-{d(4)}-{d(4)}", f"080-{d(4)}-{d(4)}", f"03-{d(4)}-{d(4)}", f"06-{d(4)}-{d(4)}")
            return self.choice(shapes)
        raise ValueError(f"no phone rule for region {region}")

    def card(self) -> str:
        """A Luhn-valid card number (Visa 16, Mastercard 16 or Amex 15 digits)."""
        prefix, length = self.choice((("4", 16), ("5" + self.choice("12345"), 16), (self.choice(("34", "37")), 15)))
        body = prefix + self.digits(length - len(prefix) - 1)
        total = 0
        for i, ch in enumerate(reversed(body)):
            n = int(ch) * (2 if i % 2 == 0 else 1)
            total += n - 9 if n > 9 else n
        number = body + str((10 - total % 10) % 10)
        if self.rng.random() < 0.4:
            return number
        groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i:i + 4] for i in range(0, 16, 4)]
        return (" " if self.rng.random() < 0.7 else "-").join(groups)

    def iban(self) -> str:
        """An IBAN whose check digits we compute (ISO 13616 mod 97), printed or compact."""
        country, bban = self.choice((
            ("DE", self.digits(18)),
            ("GB", "".join(self.choice(string.ascii_uppercase) for _ in range(4)) + self.digits(14)),
            ("NL", "".join(self.choice(string.ascii_uppercase) for _ in range(4)) + self.digits(10)),
            ("FR", self.digits(23)),
            ("ES", self.digits(20)),
        ))
        numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
        code = f"{country}{98 - int(numeric) % 97:02d}{bban}"
        return " ".join(code[i:i + 4] for i in range(0, len(code), 4)) if self.rng.random() < 0.5 else code

    def ssn(self) -> str:
        area = self.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{self.rng.randrange(1, 100):02d}-{self.rng.randrange(1, 10000):04d}"

    def ip(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return f"203.0.113.{self.rng.randrange(1, 255)}"
        if r < 0.55:
            return f"198.51.100.{self.rng.randrange(1, 255)}"
        if r < 0.8:
            return f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
        groups = [f"{self.rng.randrange(1, 65536):x}" for _ in range(3)]
        return f"2001:db8:{groups[0]}::{groups[1]}:{groups[2]}"

    def email(self, person: Optional[str] = None) -> str:
        first, last = self.name_parts(self.choice(("en", "us", "de", "nl", "other")))
        first, last = _ascii(first).lower(), _ascii(last).lower().replace(" ", "")
        local = self.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last[:3]}{self.digits(2)}",
                             f"{last}+{self.choice(('news', 'shop', 'work'))}"))
        return f"{local}@{self.choice(DOMAINS)}"

    def url(self) -> str:
        host, r = self.choice(HOSTS), self.rng.random()
        path = self.choice(("account", "share", "invoice", "profile", "reset"))
        if r < 0.5:
            return f"https://{host}/{path}/{self.digits(5)}"
        if r < 0.7:
            return f"http://{host}/{path}?id={self.digits(6)}&ref=mail"
        if r < 0.85:
            return f"www.{host.split('.', 1)[1]}/{path}"
        return f"https://{host}"

    # dates and times
    def weekday(self) -> str:
        return self.choice(WEEKDAYS)

    def relative_date(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self.choice(("tomorrow", "yesterday", "tomorrow morning", "the day after tomorrow"))
        if r < 0.7:
            return f"{self.choice(('next', 'last', 'this'))} {self.weekday()}"
        if r < 0.85:
            return self.weekday()
        return f"{self.choice(('two', 'three', 'ten'))} days ago"

    def date(self) -> str:
        y, m, day = self.rng.randrange(2019, 2027), self.rng.randrange(1, 13), self.rng.randrange(1, 29)
        return self.choice((f"{day} {MONTHS[m - 1]} {y}", f"{day:02d}.{m:02d}.{y}", f"{m}/{day}/{y % 100:02d}",
                            f"{y}-{m:02d}-{day:02d}", f"{self.weekday()} {day} {MONTHS[m - 1]}"))

    def clock(self) -> str:
        h, mi = self.rng.randrange(0, 24), self.rng.choice((0, 5, 10, 20, 30, 45, 50))
        return self.choice((f"{h:02d}:{mi:02d}", f"{(h - 1) % 12 + 1}{'am' if h < 12 else 'pm'}", f"{h}h{mi:02d}"))

    def timestamp(self) -> str:
        y, m, day = self.rng.randrange(2023, 2027), self.rng.randrange(1, 13), self.rng.randrange(1, 29)
        h, mi, s = self.rng.randrange(24), self.rng.randrange(60), self.rng.randrange(60)
        return self.choice((f"{y}-{m:02d}-{day:02d}T{h:02d}:{mi:02d}:{s:02d}Z",
                            f"{y}-{m:02d}-{day:02d} {h:02d}:{mi:02d}:{s:02d},{self.digits(3)}",
                            f"{day:02d}/{MONTHS[m - 1]}/{y}:{h:02d}:{mi:02d}:{s:02d} +0000"))

    # addresses: (text, spans) with the whole postal address as one STREET_ADDRESS
    def street_line(self, country: str) -> str:
        street, n = self.choice(STREETS[country]), self.rng.randrange(1, 240)
        if country in ("UK", "US"):
            line = f"{n} {street}"
            if self.rng.random() < 0.3:
                line = (f"Flat {self.rng.randrange(1, 30)}{self.choice(('', 'B', 'C'))}, " if country == "UK"
                        else "") + line + (f" Apt {self.rng.randrange(1, 40)}" if country == "US" else "")
            return line
        if country in ("DE", "NL"):
            return f"{street} {n}" + (f"-{self.choice(('II', 'hs', 'A'))}" if country == "NL" and self.rng.random() < 0.3 else "")
        if country == "FR":
            return f"{n}{self.choice(('', ' bis'))} {street}"
        if country == "ES":
            return f"{street} {n}, {self.rng.randrange(1, 9)}º {self.choice('ABCD')}"
        return f"{self.rng.randrange(1, 5)}-{self.rng.randrange(1, 20)}-{self.rng.randrange(1, 30)} {street}"

    def postal_line(self, country: str) -> str:
        city, d = self.choice(CITIES[country]), self.digits
        if country == "UK":
            letters = "".join(self.choice("ABDEHLNPRSTUW") for _ in range(2))
            return f"{city}\n{self.choice(('LS', 'BS', 'NR', 'AB', 'CF', 'NW'))}{self.rng.randrange(1, 20)} {self.rng.randrange(1, 10)}{letters}"
        if country == "US":
            return f"{city}, {self.choice(('OK', 'WA', 'GA', 'ID', 'NY', 'CA'))} {d(5)}"
        if country == "NL":
            return f"{self.rng.randrange(1000, 9999)} {self.choice(string.ascii_uppercase)}{self.choice(string.ascii_uppercase)} {city}"
        if country == "JP":
            ward = self.choice(("Chuo-ku", "Kita-ku", "Naka-ku", "Minami-ku"))
            return f"{ward}, {city} {d(3)}-{d(4)}"
        return f"{d(5)} {city}"

    def address(self, country: Optional[str] = None, multiline: Optional[bool] = None) -> str:
        country = country or self.country()
        multiline = self.rng.random() < 0.5 if multiline is None else multiline
        text = self.street_line(country) + "\n" + self.postal_line(country)
        return text if multiline else text.replace("\n", ", ")


def _ascii(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii() and (c.isalnum() or c in " -"))


def typo(v: Values, text: str) -> str:
    """Chat spelling: some known words misspelt, sometimes all lower case (applied to words, not values)."""
    words = [TYPOS.get(w, w) if v.rng.random() < 0.6 else w for w in text.split(" ")]
    return " ".join(words)


# ------------------------------------------------------------------ written registers (PII)
def reg_log(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    ts = v.timestamp()
    b.e(ts, "DATE_TIME").t(f" {v.choice(('INFO', 'WARN', 'ERROR'))} {v.choice(SERVICES)}: ")
    if r < 0.2:
        b.t("login ok user=").e(v.email(), "EMAIL_ADDRESS").t(" src=").e(v.ip(), "IP_ADDRESS").t(f" session={v.digits(8)}")
    elif r < 0.35:
        b.t("blocked request |").e(v.ip(), "IP_ADDRESS").t(f"| GET /api/v2/orders/{v.digits(5)} 403")
    elif r < 0.5:
        b.t("peer IP:").e(v.ip(), "IP_ADDRESS").t(f" closed the connection after {v.rng.randrange(2, 900)} ms")
    elif r < 0.6:
        b.t("callback to ").e(v.url(), "URL").t(f" failed (status {v.choice(('500', '502', '504'))}), retry {v.rng.randrange(1, 5)}/5")
    elif r < 0.7:
        b.t('payment declined card="').e(v.card(), "CREDIT_CARD").t(f'" amount={v.rng.randrange(3, 900)}.{v.digits(2)} EUR')
    elif r < 0.8:
        b.t("sms sent to=").e(v.phone(), "PHONE_NUMBER").t(f" template=otp id={v.digits(6)}")
    elif r < 0.9:
        b.t("profile updated name='").e(v.person(), "PERSON").t("' by admin=").e(v.email(), "EMAIL_ADDRESS")
    else:
        b.t("payout queued iban=").e(v.iban().replace(" ", ""), "IBAN_CODE").t(f" batch={v.digits(4)}")
    return b


def reg_table(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    rows = v.rng.randrange(2, 5)
    if r < 0.5:
        b.t("| Name | Phone | City |\n|---|---|---|\n")
        for _ in range(rows):
            country = v.country()
            region = {"UK": "GB"}.get(country, country)
            b.t("| ").e(v.person(), "PERSON").t(" | ").e(v.phone(region), "PHONE_NUMBER").t(" | ").e(v.choice(CITIES[country]), "LOCATION").t(" |\n")
    else:
        b.t("Employee            Start        Email\n")
        for _ in range(rows):
            first, last = v.name_parts()
            name = f"{last}, {first}"
            date = v.date()
            b.e(name, "PERSON").t(" " * max(2, 20 - len(name))).e(date, "DATE_TIME").t(" " * max(2, 13 - len(date))).e(v.email(), "EMAIL_ADDRESS").t("\n")
    b.parts[-1] = b.parts[-1].rstrip("\n")
    b.n -= 1
    return b


def reg_csv(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    if r < 0.5:
        b.t("id,first_name,last_name,dob,ssn\n")
        for i in range(v.rng.randrange(1, 4)):
            first, last = v.name_parts("us")
            b.t(f"{v.digits(4)},").e(first, "PERSON").t(",").e(last, "PERSON").t(",")
            b.e(f"{v.rng.randrange(1950, 2005)}-{v.rng.randrange(1, 13):02d}-{v.rng.randrange(1, 29):02d}", "DATE_TIME").t(",").e(v.ssn(), "US_SSN").t("\n")
    else:
        b.t("customer;company;street;city;phone\n")
        for i in range(v.rng.randrange(1, 4)):
            country = v.choice(("DE", "FR", "NL", "ES"))
            b.t('"').e(v.person(country.lower()), "PERSON").t('";"').e(v.choice(ORGS), "ORGANIZATION").t('";"')
            b.e(v.street_line(country), "STREET_ADDRESS").t('";').e(v.choice(CITIES[country]), "LOCATION").t(";").e(v.phone(country), "PHONE_NUMBER").t("\n")
    b.parts[-1] = b.parts[-1].rstrip("\n")
    b.n -= 1
    return b


def reg_code(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    if r < 0.25:
        b.t('customer = {\n    "name": "').e(v.person(), "PERSON").t('",\n    "email": "').e(v.email(), "EMAIL_ADDRESS")
        b.t('",\n    "phone": "').e(v.phone(), "PHONE_NUMBER").t('",\n}')
    elif r < 0.45:
        b.t("INSERT INTO payments (holder, card, iban) VALUES ('").e(v.person(), "PERSON").t("', '").e(v.card(), "CREDIT_CARD")
        b.t("', '").e(v.iban(), "IBAN_CODE").t("');")
    elif r < 0.6:
        b.t(f"curl -s -H 'X-Forwarded-For: ").e(v.ip(), "IP_ADDRESS").t("' ").e(f"https://{v.choice(HOSTS)}/v1/users/{v.digits(4)}", "URL")
    elif r < 0.75:
        b.t("server:\n  bind: ").e(v.ip(), "IP_ADDRESS").t(f"\n  port: {v.rng.randrange(1024, 9999)}\n  admin_contact: ").e(v.email(), "EMAIL_ADDRESS")
    elif r < 0.88:
        b.t("# TODO(").e(v.choice(SINGLE_NAMES).lower(), "PERSON").t("): remove the test SSN ").e(v.ssn(), "US_SSN").t(" before release\nassert validate_ssn(x)")
    else:
        b.t("git commit --author=\"").e(v.person(), "PERSON").t(" <").e(v.email(), "EMAIL_ADDRESS").t('>" -m "fix rounding"')
    return b


def reg_chat(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    nick = v.choice(NOT_NAMES)
    if r < 0.15:
        b.t(typo(v, f"{nick} can you call me on ")).e(v.phone(), "PHONE_NUMBER").t(typo(v, f" when you're free? {v.choice(CONTRACTIONS)} be out till ")).e(v.clock(), "DATE_TIME")
    elif r < 0.3:
        b.t(typo(v, "ok so ")).e(v.choice(SINGLE_NAMES), "PERSON").t(typo(v, f" says we're meeting ")).e(v.relative_date(), "DATE_TIME").t(typo(v, f", {v.choice(CONTRACTIONS)} bring snacks"))
    elif r < 0.45:
        b.t(typo(v, f"{v.choice(CONTRACTIONS)} send the parcel to ")).e(v.address(v.choice(("UK", "US"))), "STREET_ADDRESS").t(" thx " + nick)
    elif r < 0.55:
        b.t(typo(v, "i'm in ")).e(f"flat {v.rng.randrange(1, 40)}{v.choice(('', 'B', 'C'))}", "STREET_ADDRESS").t(typo(v, f", ring twice {nick}"))
    elif r < 0.7:
        first, last = v.name_parts()
        b.t("did u see ").e(f"{first.lower()} {last.lower()}", "PERSON").t(typo(v, " at ")).e(v.choice(ORGS), "ORGANIZATION").t(" lol")
    elif r < 0.75:
        b.t(typo(v, "my new email is ")).e(v.email(), "EMAIL_ADDRESS").t(typo(v, f", {v.choice(CONTRACTIONS)} update the list"))
    elif r < 0.8:
        b.t(typo(v, f"{nick} the photos are at ")).e(v.url(), "URL").t(typo(v, ", please check"))
    elif r < 0.9:
        b.t(typo(v, f"{nick} im stuck in ")).e(v.choice(CITIES[v.country()]), "LOCATION").t(typo(v, " till ")).e(v.relative_date(), "DATE_TIME")
    else:
        b.t("text ").e(v.choice(SINGLE_NAMES), "PERSON").t(" on ").e(v.phone(), "PHONE_NUMBER").t(typo(v, f", {v.choice(CONTRACTIONS)} know the code"))
    return b


def reg_address(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    country = v.country()
    culture = {"UK": "en", "US": "us"}.get(country, country.lower())
    if r < 0.35:  # envelope block: the name line and the address are separate spans
        b.e(v.person(culture), "PERSON").t("\n").e(v.address(country, multiline=True), "STREET_ADDRESS")
    elif r < 0.6:  # "Name, 12 Baker Street, London": name, street, city separate (no postcode)
        b.t(v.choice(("Deliver to ", "Ship to: ", "Recipient: "))).e(v.person(culture), "PERSON").t(", ")
        b.e(v.street_line(country), "STREET_ADDRESS").t(", ").e(v.choice(CITIES[country]), "LOCATION")
    elif r < 0.8:
        b.t("Our ").e(v.choice(CITIES[country]), "LOCATION").t(" office moved to ").e(v.address(country, multiline=False), "STREET_ADDRESS")
        b.t(", ").e(COUNTRIES[country], "LOCATION").t(".")
    else:
        b.t(v.choice(("Billing address:\n", "Return to:\n"))).e(v.choice(ORGS), "ORGANIZATION").t("\n").e(v.address(country, multiline=True), "STREET_ADDRESS")
    return b


def reg_note(v: Values) -> Builder:
    b, r = Builder(), v.rng.random()
    if r < 0.3:
        b.t("Call moved to ").e(v.relative_date(), "DATE_TIME").t(" at ").e(v.clock(), "DATE_TIME").t("; ")
        b.e(v.person(), "PERSON").t(" from ").e(v.choice(ORGS), "ORGANIZATION").t(" will dial in.")
    elif r < 0.5:
        b.t("Reminder: ").e(v.person(), "PERSON").t(f"'s visa appointment is on ").e(v.weekday(), "DATE_TIME").t(" in ").e(v.choice(CITIES[v.country()]), "LOCATION").t(".")
    elif r < 0.7:
        b.t("Spoke to ").e(v.choice(SINGLE_NAMES), "PERSON").t(" ").e(v.relative_date(), "DATE_TIME").t(" - she'll send the signed lease from ").e(v.email(), "EMAIL_ADDRESS").t(".")
    elif r < 0.75:
        b.t("Form at ").e(v.url(), "URL").t(" signed by ").e(v.person(), "PERSON").t(" and sent back ").e(v.relative_date(), "DATE_TIME").t(".")
    elif r < 0.85:
        b.t("Refund of the deposit to ").e(v.iban(), "IBAN_CODE").t(" approved ").e(v.date(), "DATE_TIME").t(" by ").e(v.person(), "PERSON").t(".")
    else:
        b.t("Landlord: ").e(v.person(), "PERSON").t(", mobile ").e(v.phone(), "PHONE_NUMBER").t(", keys at ").e(v.address(multiline=False), "STREET_ADDRESS").t(".")
    return b


# ------------------------------------------------------------------ written registers (PII-free)
def free_log(v: Values) -> str:
    return v.choice((
        f"[{v.choice(SERVICES)}-{v.rng.randrange(1, 9)}] INFO cache warmed in {v.rng.randrange(20, 900)} ms ({v.rng.randrange(100, 9000)} entries)",
        f"WARN {v.choice(SERVICES)}: queue depth {v.rng.randrange(50, 5000)} above soft limit, shedding low-priority jobs",
        f"ERROR {v.choice(SERVICES)}: timeout after {v.rng.randrange(1, 60)}s waiting for lock orders_{v.digits(3)}",
        f"DEBUG gc pause {v.rng.randrange(1, 90)}.{v.digits(1)} ms, heap {v.rng.randrange(100, 900)} MB of {v.rng.randrange(1, 8)} GB",
        f"INFO build {v.rng.randrange(1, 9)}.{v.rng.randrange(30)}.{v.rng.randrange(99)} deployed to stage, {v.rng.randrange(3, 40)} pods healthy",
        f"job=reindex status=done rows={v.rng.randrange(1000, 99999)} elapsed={v.rng.randrange(1, 500)}s retries=0",
    ))


def free_table(v: Values) -> str:
    rows = [f"| {v.choice(PRODUCTS)} | {v.rng.randrange(1, 50)} | {v.rng.randrange(1, 300)}.{v.digits(2)} |" for _ in range(v.rng.randrange(2, 5))]
    return "| Item | Qty | Price |\n|---|---|---|\n" + "\n".join(rows)


def free_csv(v: Values) -> str:
    rows = [f"{v.digits(6)},{v.choice(PRODUCTS)},{v.rng.randrange(0, 500)},{v.choice(('in stock', 'backorder', 'discontinued'))}"
            for _ in range(v.rng.randrange(1, 5))]
    return "sku,description,qty,status\n" + "\n".join(rows)


def free_code(v: Values) -> str:
    return v.choice((
        f"def retry(fn, attempts={v.rng.randrange(2, 9)}):\n    for i in range(attempts):\n        try:\n            return fn()\n        except TimeoutError:\n            sleep(2 ** i)",
        f"SELECT sku, SUM(qty) FROM order_lines WHERE qty > {v.rng.randrange(1, 20)} GROUP BY sku;",
        f"const total = items.reduce((sum, it) => sum + it.price * it.qty, 0);  // v{v.rng.randrange(1, 5)}.{v.rng.randrange(10)}",
        f"timeout: {v.rng.randrange(5, 120)}s\nretries: {v.rng.randrange(1, 6)}\nlog_level: debug\nworkers: {v.rng.randrange(1, 32)}",
        f"for f in *.csv; do gzip -9 \"$f\"; done  # keeps {v.rng.randrange(2, 30)} days of exports",
    ))


def free_chat(v: Values) -> str:
    nick, c = v.choice(NOT_NAMES), v.choice(CONTRACTIONS)
    return typo(v, v.choice((
        f"{nick} {c} grab lunch, u coming?",
        f"lol {c} fix that bug before standup, {nick}",
        f"thx {nick}!! the build is green again",
        f"{c} need the charger back, {nick} its the white one",
        f"nah {nick}, the printer on floor {v.rng.randrange(1, 9)} is broken again",
        f"ok {nick} I really dunno why the tests fail, please check the logs",
        f"Cheers {nick}, {c} owe u a coffee",
    )))


def free_note(v: Values) -> str:
    return v.choice((
        f"Stock count: {v.rng.randrange(10, 900)} units of {v.choice(PRODUCTS)} on shelf {v.choice('ABCDEF')}{v.rng.randrange(1, 20)}.",
        f"The {v.choice(PRODUCTS)} order of {v.rng.randrange(2, 90)} pieces was short by {v.rng.randrange(1, 9)}; credit note requested.",
        f"Meeting notes: agreed to cut the backlog by {v.rng.randrange(5, 40)}% and review the budget line {v.digits(4)}.",
        f"Version {v.rng.randrange(1, 9)}.{v.rng.randrange(20)} fixes the rounding error in invoice totals above {v.rng.randrange(1, 99)}00 units.",
        f"Room temperature held at {v.rng.randrange(18, 24)} degrees; humidity {v.rng.randrange(30, 60)}%.",
    ))


PII_REGISTERS: Dict[str, Callable[[Values], Builder]] = {
    "log": reg_log, "table": reg_table, "csv": reg_csv, "code": reg_code, "chat": reg_chat,
    "address": reg_address, "note": reg_note,
}
FREE_REGISTERS: Dict[str, Callable[[Values], str]] = {
    "log": free_log, "table": free_table, "csv": free_csv, "code": free_code, "chat": free_chat, "note": free_note,
}


def written_records(seed: int = SEED) -> Tuple[List[Dict], List[Dict]]:
    """The committed part: (texts with PII, PII-free texts)."""
    pii, free = [], []
    for register, n in WRITTEN.items():
        v = Values(random.Random(_seed(seed, "pii", register)))
        for i in range(n):
            b = PII_REGISTERS[register](v)
            pii.append(make_record(f"{register}-{i:04d}", register, b.text(), b.spans))
    for register, n in PII_FREE.items():
        v = Values(random.Random(_seed(seed, "free", register)))
        texts = set()
        for i in range(n):
            for _ in range(50):  # distinct texts
                text = FREE_REGISTERS[register](v)
                if text not in texts:
                    break
            texts.add(text)
            free.append(make_record(f"free-{register}-{i:04d}", register, text, []))
    return pii, free


# ------------------------------------------------------------------ CoNLL++ sentences
NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "%", "'s", "n't", "'", "'re", "'ve", "'ll", "'d", "'m"}
NO_SPACE_AFTER = {"(", "[", "$"}


def read_conll(path: Path) -> List[List[Tuple[str, str]]]:
    """Sentences of a CoNLL column file as (token, tag); -DOCSTART- lines are skipped."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        cols = line.split()
        if cols[0] == "-DOCSTART-":
            continue
        current.append((cols[0], cols[-1]))
    if current:
        sentences.append(current)
    return sentences


def detokenize(tokens: Sequence[Tuple[str, str]]) -> Tuple[str, List[Span]]:
    """Join tokens as a reader writes them (no space before , . 's etc.) with mapped spans."""
    out, spans, n = [], [], 0
    starts: List[int] = []
    for i, (tok, _) in enumerate(tokens):
        if i and tok not in NO_SPACE_BEFORE and tokens[i - 1][0] not in NO_SPACE_AFTER:
            out.append(" ")
            n += 1
        starts.append(n)
        out.append(tok)
        n += len(tok)
    current: Optional[List] = None
    for i, (tok, tag) in enumerate(tokens):
        kind = tag[2:] if tag != "O" else None
        if current and (tag.startswith("B-") or kind != current[2]):
            spans.append(tuple(current))
            current = None
        if kind in CONLL_MAP:
            if current is None:
                current = [starts[i], starts[i] + len(tok), kind]
            else:
                current[1] = starts[i] + len(tok)
    if current:
        spans.append(tuple(current))
    return "".join(out), [(s, e, CONLL_MAP[k]) for s, e, k in spans]


def usable(tokens: Sequence[Tuple[str, str]]) -> bool:
    """A sentence of prose with an entity we keep: 8-50 tokens, mostly words, not a headline or table row."""
    words = [t for t, _ in tokens if re.search(r"[A-Za-z]", t)]
    return (8 <= len(tokens) <= 50 and len(words) >= 0.7 * len(tokens)
            and any(tag[2:] in CONLL_MAP for _, tag in tokens)
            and sum(t.isupper() for t in words) < 0.5 * len(words))


def news_clause(v: Values) -> Tuple[str, List[Span]]:
    """One clause of structured PII to append to a news sentence (our rules; no dates: module docstring)."""
    b, r = Builder(), v.rng.random()
    if r < 0.2:
        b.t(" Contact the desk on ").e(v.phone(), "PHONE_NUMBER").t(".")
    elif r < 0.3:
        b.t(" Full statement: ").e(v.url(), "URL")
    elif r < 0.45:
        b.t(" Tips to ").e(v.email(), "EMAIL_ADDRESS").t(" or ").e(v.phone(), "PHONE_NUMBER").t(".")
    elif r < 0.55:
        b.t(" (Filed from ").e(v.ip(), "IP_ADDRESS").t(" by ").e(v.person(), "PERSON").t(".)")
    elif r < 0.65:
        b.t(" Appeal donations: ").e(v.iban(), "IBAN_CODE").t(".")
    elif r < 0.8:
        country = v.country()
        b.t(" Correspondent ").e(v.person({"UK": "en", "US": "us"}.get(country, country.lower())), "PERSON").t(", ")
        b.e(v.address(country, multiline=False), "STREET_ADDRESS").t(".")
    elif r < 0.9:
        b.t(" Reader card ").e(v.card(), "CREDIT_CARD").t(" was charged twice.")
    else:
        b.t(" Subscriber SSN ").e(v.ssn(), "US_SSN").t(" on file.")
    return b.text(), b.spans


def make_manifest(data_dir: Path, seed: int = SEED) -> Dict:
    """Which sentences, which clause after each, and the counts and checksum of the materialised file."""
    path = data_dir / CONLL_FILE
    check_md5(path)
    sentences = read_conll(path)
    rng = random.Random(_seed(seed, "news"))
    chosen = sorted(rng.sample([i for i, s in enumerate(sentences) if usable(s)], N_NEWS))
    v = Values(random.Random(_seed(seed, "news-clauses")))
    items = []
    for i in chosen:
        clause = news_clause(v) if rng.random() < NEWS_WITH_CLAUSE else None
        items.append({"sentence": i, "clause": None if clause is None else {"text": clause[0], "spans": [list(s) for s in clause[1]]}})
    manifest = {"source": str(CONLL_FILE), "source_md5": CONLL_MD5, "seed": seed, "sentences": items}
    records = news_records(sentences, manifest)
    data = dumps(records)
    manifest.update(counts(records), sha256=hashlib.sha256(data).hexdigest())
    return manifest


def news_records(sentences: Sequence[Sequence[Tuple[str, str]]], manifest: Dict) -> List[Dict]:
    records = []
    for item in manifest["sentences"]:
        b = Builder().add(detokenize(sentences[item["sentence"]]))
        if item["clause"]:
            b.add((item["clause"]["text"], [tuple(s) for s in item["clause"]["spans"]]))
        records.append(make_record(f"conllpp-test-{item['sentence']:04d}", "news", b.text(), b.spans, ["DATE_TIME"]))
    return records


def check_md5(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (the shared data's conll2003/test.iob)")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != CONLL_MD5:
        raise ValueError(f"{path}: md5 {md5}, expected {CONLL_MD5} (CoNLL++ test, shared data README)")


def materialise_news(data_dir: Path, manifest_path: Path) -> bytes:
    """The news part's JSONL bytes from the shared data and the manifest; RAISES (ValueError) when
    its sha256 is not the manifest's."""
    manifest = json.loads(manifest_path.read_text(encoding="utf8"))
    path = data_dir / manifest["source"]
    check_md5(path)
    data = dumps(news_records(read_conll(path), manifest))
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise ValueError(f"materialised news part has sha256 {digest}, the manifest {manifest_path} says {manifest['sha256']}")
    return data


def counts(records: Sequence[Dict]) -> Dict:
    labels = Counter(s["label"] for r in records for s in r["spans"])
    return {
        "texts": len(records),
        "texts_without_spans": sum(not r["spans"] for r in records),
        "words": sum(len(r["text"].split()) for r in records),
        "spans": {label: labels[label] for label in LABELS if labels[label]},
    }


# ------------------------------------------------------------------ commands
def written_files(seed: int = SEED) -> Dict[str, bytes]:
    pii, free = written_records(seed)
    return {"written.jsonl": dumps(pii), "pii_free.jsonl": dumps(free)}


@app.command()
def written(out_dir: Path) -> None:
    """Write written.jsonl and pii_free.jsonl (the committed registers) and print their counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in written_files().items():
        (out_dir / name).write_bytes(data)
        records = [json.loads(line) for line in data.decode("utf8").splitlines()]
        print(name, json.dumps(counts(records)), hashlib.sha256(data).hexdigest())


@app.command()
def manifest(data_dir: Path, out: Path) -> None:
    """Write the news part's manifest (sentence numbers, clauses, counts, sha256)."""
    m = make_manifest(data_dir)
    out.write_text(json.dumps(m, ensure_ascii=False, indent=1) + "\n", encoding="utf8")
    print(json.dumps({k: m[k] for k in ("texts", "words", "spans", "sha256")}))


@app.command()
def conll(data_dir: Path, out: Path, manifest_path: Path = typer.Option(Path("assets/pii_testset/conll_manifest.json"), "--manifest")) -> None:
    """Materialise the news part (untracked: Reuters text stays out of the repository)."""
    data = materialise_news(data_dir, manifest_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"{out}: {len(data)} bytes, sha256 matches {manifest_path}")


@app.command()
def check(out_dir: Path) -> None:
    """Regenerate the committed files in memory; exit 1 naming a file whose bytes differ."""
    bad = [name for name, data in written_files().items() if (out_dir / name).read_bytes() != data]
    if bad:
        raise SystemExit(f"stale: {bad}; run python scripts/make_pii_testset.py written {out_dir}")
    print("up to date")


if __name__ == "__main__":
    app()
