"""Generate the PII corpus (assets/pii/*.iob) and convert its column files to DocBin.

The texts are ours: templates written for this project in six registers
(support tickets, e-mails, chat messages, HR notes, clinic appointment notes,
web forms), filled with Faker values (names and addresses from ten locales)
under a fixed seed, so the files are reproducible with the pinned Faker
(``pip install -e ".[pii]"``). Entity types are Presidio's: PERSON,
ORGANIZATION, LOCATION, STREET_ADDRESS, DATE_TIME, EMAIL_ADDRESS, PHONE_NUMBER,
CREDIT_CARD, IBAN_CODE, IP_ADDRESS, URL, US_SSN.

Splits are made BY TEMPLATE: every template belongs to exactly one of
train/dev/test, so dev and test measure generalisation to unseen phrasings.
Every register has templates without any PII (order numbers, amounts,
versions, ticket ids instead), so false positives are measured.

Texts are tokenized with spaCy's English tokenizer (``spacy.blank("en")``);
entity character offsets become token spans with ``Doc.char_span(...,
alignment_mode="strict")``, and a span that does not align stops the run
with the text and offsets (nothing is dropped).

Column format (one file per split, UTF-8, tab-separated):

    -DOCSTART-<TAB>REGISTER/TEMPLATE_ID<TAB>O      one line before every text
    TOKEN<TAB>SPACE<TAB>TAG                        one line per spaCy token
    (blank line after every text)

TOKEN is the token text escaped so that a whitespace token fits in a column:
``\\n`` is a line break, ``\\t`` a tab, ``\\s`` a space, ``\\r`` a carriage
return and ``\\\\`` a backslash (spaCy makes a token of the whitespace in
"Jane\\nDoe", so a line break is a token, and an entity split over lines
contains it). SPACE is ``_`` when a space follows the token and
``SpaceAfter=No`` when not (CoNLL-U's convention), so the text is rebuilt
exactly. TAG is IOB2. ``python -m spacy_ner_plus convert`` reads these files
too (token first, tag last), but then keeps escaped tokens literally and puts
a space after every token: use ``docbin`` below, which the ``pii`` workflow
runs, to get the Docs that spaCy's tokenizer makes of the original texts.

    python scripts/make_pii_corpus.py generate assets/pii
    python scripts/make_pii_corpus.py docbin assets/pii/train.iob corpus/pii/train.spacy
"""
import datetime
import hashlib
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin

SEED = 13
FAKER_VERSION = "40.63.0"
SPLITS = {"train": 1800, "dev": 400, "test": 400}
LABELS = (
    "PERSON", "ORGANIZATION", "LOCATION", "STREET_ADDRESS", "DATE_TIME", "EMAIL_ADDRESS",
    "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL", "US_SSN",
)
# names, companies and cities from these; addresses from those with a multi-line format
NAME_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_IN", "pt_BR", "pl_PL")
# it_IT's city() draws from a set, whose order changes with PYTHONHASHSEED: not reproducible
CITY_LOCALES = tuple(locale for locale in NAME_LOCALES if locale != "it_IT")
ADDRESS_LOCALES = ("en_US", "en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "it_IT", "pl_PL")
IBAN_LOCALES = ("de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT", "pl_PL")
PHONE_LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "en_IN": "IN"}
NO_PII_SHARE = 0.12
SPACE_AFTER_NO = "SpaceAfter=No"
DOCSTART = "-DOCSTART-"

# ---------------------------------------------------------------- templates
# {SLOT}: an entity (upper case) or a non-PII filler (lower case);
# [[a|b|]]: one alternative at random (may be empty, may contain slots).
# Lists are in their register's order; split_of() assigns them to splits.
TEMPLATES: Dict[str, List[str]] = {
    "ticket": [
        "Ticket {ticket}\nCustomer: {PERSON}\nEmail: {EMAIL}\nPhone: {PHONE}\n\nIssue: the invoice sent on {DATE} lists the wrong billing address. It should be {ADDRESS}.",
        "[[Hi|Hello]] support,\nmy card ending in {n4} was charged twice for order {order}. The full number is {CARD}; please refund the second charge to IBAN {IBAN}.\n{PERSON}",
        "Login failures for user {EMAIL} from IP {IP} since {DATETIME}. The account belongs to {PERSON} at {ORG}.",
        "Customer {PERSON} ({PHONE}) reports that {URL} returns an error 500 after the upgrade to version {version}.",
        "Priority: high\nReporter: {PERSON} <{EMAIL}>\nAffected host: {IP}\nSummary: VPN drops every {n} minutes since {DATE}.",
        "Refund request for order {order} ({amount}). Card: {CARD}. Cardholder: {PERSON}, {ADDRESS}.",
        "[[Escalated|Forwarded]] to {PERSON} in the {dept} team. Caller {PERSON} can be reached at {PHONE} or {EMAIL}.",
        "The package for {PERSON} was returned to our warehouse in {CITY}. Delivery address on file: {STREET}, {CITY}. Please confirm by {DATE}.",
        "User reports phishing mail pretending to be from {ORG} linking to {URL}. Sender address: {EMAIL}. Received {DATETIME}.",
        "Account verification for {PERSON}: SSN {SSN}, date of birth {DOB}, phone {PHONE}, card on file {CARD}.",
        "Reset the password for {EMAIL} (last login on {DATE} from {IP}) and notify {PERSON}.",
        "SEPA mandate failed for {ORG}: IBAN {IBAN} rejected on {DATE}. Contact: {PERSON}, {PHONE}.",
        "The {product} stopped syncing after version {version}. Tried restarting twice, no change. Ticket {ticket}.",
        "Order {order} shows as delivered but nothing arrived. Total was {amount}.",
        "Please close ticket {ticket}; the issue with the {product} was fixed in version {version}.",
    ],
    "email": [
        "Dear {PERSON},\n\nthank you for your application to {ORG}. We would like to invite you to an interview on {DATETIME} at our office in {CITY}.\n\nKind regards,\n{PERSON}\n{ORG}\n{PHONE}",
        "Hi {FIRST},\n\nas discussed, please wire the deposit of {amount} to IBAN {IBAN} (account holder {PERSON}) before {DATE}.\n\nThanks,\n{FIRST}",
        "From: {PERSON} <{EMAIL}>\nTo: {EMAIL}\nSubject: [[Contract|Renewal|Meeting]] {DATE}\n\n{FIRST}, the signed copy is at {URL}. Call me on {PHONE} if anything is missing.",
        "Hello {FIRST},\nour new office is at {ADDRESS}. From {DATE} please send all mail there.\nBest,\n{PERSON}, {ORG}",
        "Dear Mr. {LAST},\n\nwe noticed a sign-in to your account from {IP} in {COUNTRY} on {DATETIME}. If this was not you, reset your password at {URL}.\n\n{ORG} Security",
        "{FIRST},\n\nI forwarded the invoice from {ORG} to {PERSON} ({EMAIL}). The amount is {amount}, due on {DATE}.\n\nCheers,\n{FIRST}",
        "Dear Ms. {LAST},\n\nplease find attached the offer for {PERSON}. The start date is {DATE} and the position is based in {CITY}, {COUNTRY}.\n\nRegards,\n{PERSON}",
        "Hi team,\n\n{PERSON} from {ORG} will join the call on {DATETIME}. Dial-in: {PHONE}. Agenda: {URL}\n\n{FIRST}",
        "Good morning {FIRST},\n\nthe payment with card {CARD} failed. Please update your details at {URL} or call {PHONE}.\n\n{ORG} Billing",
        "Dear {PERSON},\n\nyour tax form is ready. For verification we have your SSN as {SSN} and your address as {ADDRESS}.\n\n{ORG}",
        "Hello,\nplease add {PERSON} ({EMAIL}, {PHONE}) to the distribution list for the {CITY} office.\nThanks, {FIRST}",
        "Hi {FIRST},\nthe server at {IP} will be down on {DATE} from {TIME} for maintenance. Status updates: {URL}\n{PERSON}",
        "Hi all,\n\nthe quarterly numbers are in: revenue grew {pct} and churn fell to {pct}. Slides follow next week.\n\nThanks",
        "Hello,\n\nthe meeting room on the {n}th floor is booked for the rest of the week. Please use the shared calendar.\n\nFacilities",
        "Team,\n\nversion {version} of the {product} ships next sprint. Please finish testing by the end of the week.",
    ],
    "chat": [
        "[[hey|hi|yo]] {FIRST}, can you send me {PERSON}'s number? [[nvm|never mind]], found it: {PHONE}",
        "my new email is {EMAIL} btw",
        "[[ok|okay|k]] so the meetup is at {STREET} on {DATE}, ask for {FIRST} at the door",
        "{FIRST}: did {PERSON} ever pay you back?\n{FIRST}: yeah, sent it to my IBAN {IBAN}",
        "lol the dashboard is at {URL} and it only works from {IP}",
        "can u call me at {PHONE} after {TIME}? im in {CITY} till {DATE}",
        "{FIRST} says the new guy at {ORG} is called {PERSON}",
        "reminder: dinner at {FIRST}'s place, {ADDRESS}, {DATETIME}",
        "pls don't post your ssn here!! ({SSN})",
        "[[fwd|fyi]]: {PERSON} - {EMAIL} - {PHONE}",
        "just landed in {CITY}, {COUNTRY}. text me on {PHONE}",
        "whats the wifi pw? also the printer is at {IP} if anyone needs it",
        "ok see u all tomorrow",
        "lol that demo crashed twice, version {version} is cursed",
        "brb, coffee",
    ],
    "hr": [
        "Employee: {PERSON}\nStart date: {DATE}\nDepartment: {dept}\nManager: {PERSON}\nHome address: {ADDRESS}\nSSN: {SSN}",
        "{PERSON} requested parental leave from {DATE} to {DATE}. Covering: {PERSON}.",
        "Exit interview with {PERSON} on {DATE}. Moving to {ORG} in {CITY}. Forwarding email: {EMAIL}.",
        "Payroll change for {PERSON}: new bank account {IBAN}, effective {DATE}.",
        "Reference check: spoke with {PERSON} of {ORG} ({PHONE}) about {PERSON}'s time there from {DATE} to {DATE}.",
        "Relocation of {PERSON} from {CITY} to {CITY} approved; the company apartment is at {STREET}.",
        "Emergency contact for {PERSON}: {PERSON} (spouse), {PHONE}.",
        "Background check for candidate {PERSON}, born {DOB}, SSN {SSN}, current address {ADDRESS}.",
        "Onboarding {DATE}:\n- laptop for {PERSON}\n- badge for {PERSON}\n- account {EMAIL}\n- VPN address {IP}",
        "Performance review of {PERSON} moved to {DATETIME}; reviewer {PERSON} is travelling to {COUNTRY}.",
        "Expense claim from {PERSON}: {amount}, paid with corporate card {CARD}.",
        "{PERSON} joined the {dept} team at {ORG} on {DATE} after six years at {ORG}.",
        "Headcount for the {dept} team stays at {n} until the end of the quarter.",
        "Reminder: the annual training must be completed within {n} days. No exceptions.",
        "Policy update: remote work requests now need approval from the department head.",
    ],
    "clinic": [
        "Appointment: {DATETIME}\nPatient: {PERSON}, DOB {DOB}\nPhone: {PHONE}\nReason: follow-up, blood pressure.",
        "Pt {PERSON} rescheduled to {DATETIME} with Dr. {LAST}. Confirmation sent to {EMAIL}.",
        "Referral for {PERSON} to {ORG}, {ADDRESS}. Insurance member SSN {SSN}.",
        "Dr. {LAST} saw {PERSON} on {DATE}; next visit in {n} weeks. Call the patient at {PHONE} with lab results.",
        "New patient: {PERSON}\nAddress: {ADDRESS}\nEmergency contact: {PERSON} ({PHONE})",
        "No-show on {DATE}: {PERSON}. Left a voicemail at {PHONE}.",
        "{PERSON} (DOB {DOB}) asked that results go to {EMAIL} instead of by post to {STREET}, {CITY}.",
        "Telehealth link for {PERSON}: {URL} - {DATETIME}.",
        "Co-pay of {amount} charged to card {CARD} for {PERSON} at the {CITY} clinic.",
        "Patient {PERSON} transferred from {ORG} in {CITY}; records requested on {DATE}.",
        "Vaccination appointment for {PERSON} and {PERSON} on {DATETIME} at our {CITY} clinic.",
        "Billing: patient {PERSON}, SSN {SSN}, balance {amount}, IBAN for refund {IBAN}.",
        "Clinic closed for staff training; all appointments moved by one day.",
        "Reminder to staff: update the allergy field before every prescription.",
        "Room {n} is out of service until further notice.",
    ],
    "form": [
        "First name: {FIRST}\nLast name: {LAST}\nEmail: {EMAIL}\nPhone: {PHONE}\nMessage: please call me back after {TIME}.",
        "Full name: {PERSON}\nStreet: {STREET}\nCity: {CITY}\nCountry: {COUNTRY}\nDate of birth: {DOB}",
        "Name: {PERSON}\nCard number: {CARD}\nBilling address: {ADDRESS}",
        "Company: {ORG}\nContact: {PERSON}\nWebsite: {URL}\nVAT contact email: {EMAIL}",
        "Applicant: {PERSON}\nSSN: {SSN}\nEmployer: {ORG}\nMonthly income: {amount}\nSalary account (IBAN): {IBAN}",
        "Name: {PERSON}; Email: {EMAIL}; IP: {IP}; Submitted: {DATETIME}",
        "Beneficiary: {PERSON}\nIBAN: {IBAN}\nBank: {ORG}\nReference: {order}",
        "Your name: {FIRST}\nYour email: {EMAIL}\nWhich office? {CITY}\nPreferred date: {DATE}",
        "Shipping to: {PERSON}, {ADDRESS}\nPhone (optional): {PHONE}",
        "Report a problem\nPage: {URL}\nYour email (optional): {EMAIL}\nDescribe the problem: the form resets after I enter my phone number.",
        "Guardian: {PERSON}\nChild: {FIRST} {LAST}\nPhone: {PHONE}\nPickup address: {STREET}, {CITY}",
        "Name: {PERSON}\nWork phone: {PHONE}\nHome phone: {PHONE}\nDate: {DATE}",
        "Product: {product}\nQuantity: {n}\nOrder number: {order}\nComments: arrived damaged.",
        "Rating: {n}/5\nWhat could we improve? Faster delivery and clearer tracking.",
        "Subscription: {product}\nPlan: annual\nCoupon: SAVE{n}",
    ],
}

TITLES = ("", "", "", "Dr. ", "Mr. ", "Ms. ")
DEPTS = ("Finance", "Sales", "Engineering", "Support", "Legal", "Marketing", "Operations", "Procurement")
PRODUCTS = ("mobile app", "desktop client", "smart thermostat", "router", "photo printer", "fitness tracker",
            "cloud backup plan", "premium plan", "e-reader", "label printer")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


@dataclass
class Text:
    """A generated text with its entities as (start_char, end_char, label)."""

    template_id: str
    text: str
    entities: List[Tuple[int, int, str]]


def split_of(register: str, index: int) -> str:
    """The split of a register's template: the last three of each register are the
    texts without PII (one per split); of the others, every fifth from index 3 goes
    to dev, every fifth from index 4 to test, the rest to train."""
    n_pii = len(TEMPLATES[register]) - 3
    if index >= n_pii:
        return ("train", "dev", "test")[index - n_pii]
    return {3: "dev", 4: "test"}.get(index % 5, "train")


def templates_of(split: str) -> List[Tuple[str, str]]:
    """(template id, template) of a split, in a fixed order."""
    return [
        (f"{register}/{i:02d}", template)
        for register, templates in TEMPLATES.items()
        for i, template in enumerate(templates)
        if split_of(register, i) == split
    ]


def _seed(*parts: object) -> int:
    # zlib.crc32, not hash(): str hashes change per process
    return zlib.crc32("/".join(map(str, parts)).encode("utf8"))


class Filler:
    """Slot values for one split, from Faker instances and a Random seeded per split."""

    def __init__(self, seed: int, split: str, nlp: Language):
        from faker import Faker
        import phonenumbers

        self.nlp = nlp

        self.rng = random.Random(_seed(seed, split))
        self.fakers = {}
        for locale in sorted(set(NAME_LOCALES + ADDRESS_LOCALES + IBAN_LOCALES + tuple(PHONE_LOCALES))):
            fake = Faker(locale)
            fake.seed_instance(_seed(seed, split, locale))
            self.fakers[locale] = fake
        self._phonenumbers = phonenumbers
        self.entities: Dict[str, Tuple[str, Callable[[], str]]] = {
            "PERSON": ("PERSON", self.person),
            "FIRST": ("PERSON", lambda: self.locale_fake(NAME_LOCALES).first_name()),
            "LAST": ("PERSON", lambda: self.locale_fake(NAME_LOCALES).last_name()),
            "ORG": ("ORGANIZATION", lambda: self.locale_fake(NAME_LOCALES).company()),
            "CITY": ("LOCATION", lambda: self.locale_fake(CITY_LOCALES).city()),
            "COUNTRY": ("LOCATION", lambda: self.fakers["en_US"].country()),
            "STREET": ("STREET_ADDRESS", lambda: self.locale_fake(ADDRESS_LOCALES).street_address()),
            "ADDRESS": ("STREET_ADDRESS", self.address),
            "DATE": ("DATE_TIME", self.date),
            "DOB": ("DATE_TIME", self.birth_date),
            "TIME": ("DATE_TIME", self.time),
            "DATETIME": ("DATE_TIME", self.date_time),
            "EMAIL": ("EMAIL_ADDRESS", self.email),
            "PHONE": ("PHONE_NUMBER", self.phone),
            "CARD": ("CREDIT_CARD", self.card),
            "IBAN": ("IBAN_CODE", self.iban),
            "IP": ("IP_ADDRESS", self.ip),
            "URL": ("URL", self.url),
            "SSN": ("US_SSN", self.ssn),
        }
        self.fillers: Dict[str, Callable[[], str]] = {
            "ticket": lambda: f"{self.rng.choice(['TCK', 'INC', 'SR'])}-{self.rng.randrange(10000, 999999)}",
            "order": lambda: f"#{self.rng.choice(['A', 'B', 'W', ''])}{self.rng.randrange(100000, 9999999)}",
            "amount": lambda: self.rng.choice(["$", "EUR ", "£"]) + f"{self.rng.randrange(5, 5000):,}.{self.rng.randrange(100):02d}",
            "n": lambda: str(self.rng.randrange(2, 30)),
            "n4": lambda: f"{self.rng.randrange(10000):04d}",
            "pct": lambda: f"{self.rng.randrange(1, 40)}.{self.rng.randrange(10)}%",
            "version": lambda: f"{self.rng.randrange(1, 12)}.{self.rng.randrange(20)}.{self.rng.randrange(10)}",
            "dept": lambda: self.rng.choice(DEPTS),
            "product": lambda: self.rng.choice(PRODUCTS),
        }

    def locale_fake(self, locales: Sequence[str]):
        return self.fakers[self.rng.choice(locales)]

    def person(self) -> str:
        fake = self.locale_fake(NAME_LOCALES)
        return fake.first_name() + " " + fake.last_name() if self.rng.random() < 0.7 else fake.name()

    def address(self) -> str:
        # Faker's multi-line formats: an address split over line breaks, or one line with commas
        text = self.locale_fake(ADDRESS_LOCALES).address()
        lines = [line.strip() for line in text.split("\n")]
        return ("\n" if self.rng.random() < 0.6 else ", ").join(lines)

    def date(self) -> str:
        # fixed bounds: Faker's relative ones ("-3y") move with today's date
        day = self.fakers["en_US"].date_between(datetime.date(2023, 1, 1), datetime.date(2026, 12, 31))
        style = self.rng.randrange(6)
        if style == 0:
            return day.isoformat()
        if style == 1:
            return day.strftime("%m/%d/%Y")
        if style == 2:
            return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
        if style == 3:
            return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"
        if style == 4:
            return f"{day.strftime('%A')}, {MONTHS[day.month - 1]} {day.day}"
        return day.strftime("%d.%m.%Y")

    def birth_date(self) -> str:
        day = self.fakers["en_US"].date_between(datetime.date(1935, 1, 1), datetime.date(2024, 12, 31))
        return day.strftime("%m/%d/%Y") if self.rng.random() < 0.5 else f"{MONTHS[day.month - 1]} {day.day}, {day.year}"

    def time(self) -> str:
        hour, minute = self.rng.randrange(7, 20), self.rng.choice([0, 15, 30, 45])
        if self.rng.random() < 0.5:
            return f"{hour:02d}:{minute:02d}"
        return f"{(hour - 1) % 12 + 1}:{minute:02d} {'AM' if hour < 12 else 'PM'}"

    def date_time(self) -> str:
        return self.date() + self.rng.choice([" at ", " ", ", "]) + self.time()

    def email(self) -> str:
        fake = self.locale_fake(("en_US", "en_GB", "de_DE", "fr_FR"))
        return fake.email() if self.rng.random() < 0.6 else fake.company_email()

    def phone(self) -> str:
        """A Faker phone number that ``phonenumbers`` finds valid for its locale's
        region (Faker also makes numbers no network could route; real ones are valid)."""
        pn = self._phonenumbers
        for _ in range(50):
            locale = self.rng.choice(sorted(PHONE_LOCALES))
            number = self.fakers[locale].phone_number()
            try:
                parsed = pn.parse(number, PHONE_LOCALES[locale])
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(parsed) and "x" not in number.lower():
                return number
        raise RuntimeError("no valid phone number in 50 Faker draws")

    def card(self) -> str:
        digits = self.fakers["en_US"].credit_card_number()
        style = self.rng.randrange(3)
        if style == 0 or len(digits) not in (15, 16):
            return digits
        sep = " " if style == 1 else "-"
        groups = [digits[:4], digits[4:10], digits[10:]] if len(digits) == 15 else [digits[i:i + 4] for i in range(0, 16, 4)]
        return sep.join(groups)

    def iban(self) -> str:
        code = self.locale_fake(IBAN_LOCALES).iban()
        if self.rng.random() < 0.5:
            return " ".join(code[i:i + 4] for i in range(0, len(code), 4))
        return code

    def ip(self) -> str:
        import ipaddress

        fake = self.fakers["en_US"]
        kind = self.rng.randrange(4)
        if kind == 0:
            return fake.ipv4_private()
        if kind == 1:
            return fake.ipv4_public()
        address = fake.ipv6()
        return address if kind == 2 else ipaddress.IPv6Address(address).compressed

    def url(self) -> str:
        fake = self.fakers["en_US"]
        kind = self.rng.randrange(3)
        if kind == 0:
            return fake.url().rstrip("/")
        if kind == 1:
            return fake.uri()
        return "www." + fake.domain_name() + "/" + fake.uri_path()

    def ssn(self) -> str:
        value = self.fakers["en_US"].ssn()
        return value.replace("-", " ") if self.rng.random() < 0.15 else value

    def render(self, template: str, template_id: str) -> Text:
        """Fill a template; entity values are stripped so that they start and end on a token."""
        out: List[str] = []
        entities: List[Tuple[int, int, str]] = []
        self._render_into(template, out, entities)
        return Text(template_id, *_one_final_period("".join(out), entities, self.nlp))

    def _render_into(self, template: str, out: List[str], entities: List[Tuple[int, int, str]]) -> None:
        position = 0
        for match in _TEMPLATE_PART.finditer(template):
            out.append(template[position:match.start()])
            position = match.end()
            if match.group("alternatives") is not None:
                self._render_into(self.rng.choice(match.group("alternatives").split("|")), out, entities)
                continue
            slot = match.group("slot")
            if slot in self.fillers:
                out.append(self.fillers[slot]())
                continue
            if slot not in self.entities:
                raise KeyError(f"unknown slot {{{slot}}} in template {template!r}")
            label, make = self.entities[slot]
            value = make().strip()
            start = sum(map(len, out))
            out.append(value)
            entities.append((start, start + len(value), label))
        out.append(template[position:])


def _one_final_period(text: str, entities: List[Tuple[int, int, str]], nlp: Language) -> Tuple[str, List[Tuple[int, int, str]]]:
    """Write an entity that ends in an abbreviation before a sentence period as people
    do, with one period that belongs to the entity ("Acme Ltd." not "Acme Ltd" + ".",
    "Sp. z o.o." not "Sp. z o.o.."): spaCy's tokenizer reads "Ltd." and "S.L.N.E." as
    one token, so the period cannot be outside the entity."""
    fixed: List[Tuple[int, int, str]] = []
    shift = 0
    for start, end, label in sorted(entities):
        start, end = start - shift, end - shift
        if text[end:end + 1] == ".":
            if text[end - 1] == ".":
                text = text[:end] + text[end + 1:]
                shift += 1
            elif nlp.make_doc(text[start:end].split()[-1] + ".")[-1].text != ".":
                end += 1
        fixed.append((start, end, label))
    return text, fixed


_TEMPLATE_PART = re.compile(r"\[\[(?P<alternatives>[^\]]*)\]\]|\{(?P<slot>[A-Za-z0-9]+)\}")


def hard_wrap(text: str, width: int) -> str:
    """Replace spaces by line breaks so that no line is longer than ``width`` where a
    space allows it, as mail clients wrap; offsets stay valid (one character for one),
    and entities that cross a wrap are then split over two lines."""
    chars = list(text)
    line_start = 0
    last_space = -1
    for i, char in enumerate(chars):
        if char == "\n":
            line_start, last_space = i + 1, -1
        elif char == " ":
            last_space = i
        if i - line_start >= width and last_space > line_start:
            chars[last_space] = "\n"
            line_start, last_space = last_space + 1, -1
    return "".join(chars)


def generate_split(split: str, n_texts: int, seed: int = SEED) -> List[Text]:
    """The texts of one split (independent of the other splits: each has its own seeds).

    split (str): "train", "dev" or "test".
    n_texts (int): how many texts.
    seed (int): the generator seed.
    RETURNS (List[Text]): texts with their entity character offsets.
    """
    filler = Filler(seed, split, spacy.blank("en"))
    templates = templates_of(split)
    without_pii = [t for t in templates if not _has_entity_slot(t[1])]
    with_pii = [t for t in templates if _has_entity_slot(t[1])]
    texts = []
    for _ in range(n_texts):
        # a fixed share of texts without PII in every split (by template count it
        # would be 1 in 9 in train but 1 in 3 in dev and test)
        pool = without_pii if filler.rng.random() < NO_PII_SHARE else with_pii
        template_id, template = filler.rng.choice(pool)
        text = filler.render(template, template_id)
        if template_id.startswith(("email/", "clinic/")) and filler.rng.random() < 0.5:
            text = Text(text.template_id, hard_wrap(text.text, filler.rng.randrange(40, 72)), text.entities)
        texts.append(text)
    return texts


def _has_entity_slot(template: str) -> bool:
    return any(m.group("slot") and m.group("slot").isupper() for m in _TEMPLATE_PART.finditer(template))


class AlignmentError(ValueError):
    """An entity whose character offsets do not fall on token boundaries."""


def text_to_doc(nlp: Language, text: Text) -> Doc:
    """Tokenize a text and set its entities from their character offsets.

    RAISES (AlignmentError): naming the template, offsets and tokens of a span
        that does not start and end on a token boundary.
    """
    doc = nlp.make_doc(text.text)
    spans = []
    for start, end, label in text.entities:
        span = doc.char_span(start, end, label=label, alignment_mode="strict")
        if span is None:
            tokens = [t.text for t in doc.char_span(start, end, alignment_mode="expand")]
            raise AlignmentError(
                f"template {text.template_id}: {label} at characters {start}-{end} "
                f"({text.text[start:end]!r}) does not align to tokens {tokens}; change the template"
            )
        spans.append(span)
    doc.ents = spans
    return doc


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "\\s"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def escape_token(text: str) -> str:
    """A token as it is written in the column file (whitespace and backslashes escaped)."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def unescape_token(text: str) -> str:
    """The token text of a column file entry; RAISES (ValueError) on an unknown escape."""
    def replace(match: "re.Match[str]") -> str:
        if match.group(0) not in _UNESCAPES:
            raise ValueError(f"unknown escape {match.group(0)!r} in token {text!r} (known: {', '.join(_UNESCAPES)})")
        return _UNESCAPES[match.group(0)]

    return re.sub(r"\\.?", replace, text)


def doc_to_lines(doc: Doc, template_id: str) -> List[str]:
    lines = [f"{DOCSTART}\t{template_id}\tO"]
    for token in doc:
        tag = "O" if token.ent_iob_ == "O" else f"{token.ent_iob_}-{token.ent_type_}"
        lines.append(f"{escape_token(token.text)}\t{'_' if token.whitespace_ else SPACE_AFTER_NO}\t{tag}")
    return lines + [""]


def write_split(nlp: Language, texts: Sequence[Text], path: Path) -> Dict[str, object]:
    """Write a split's column file; RETURNS its counts."""
    lines: List[str] = []
    labels: Counter = Counter()
    n_tokens = 0
    n_empty = 0
    for text in texts:
        doc = text_to_doc(nlp, text)
        lines.extend(doc_to_lines(doc, text.template_id))
        labels.update(ent.label_ for ent in doc.ents)
        n_tokens += len(doc)
        n_empty += not doc.ents
    path.write_text("\n".join(lines), encoding="utf8")
    return {"texts": len(texts), "texts_without_pii": n_empty, "tokens": n_tokens, "entities": dict(sorted(labels.items()))}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_readme(out: Path, counts: Dict[str, Dict[str, object]], seed: int) -> None:
    rows = []
    for split, c in counts.items():
        path = out / f"{split}.iob"
        rows.append(
            f"| {split} | {c['texts']} | {c['texts_without_pii']} | {c['tokens']:,} | {sum(c['entities'].values()):,} "
            f"| {path.stat().st_size:,} | `{md5(path)}` |"
        )
    per_type = "\n".join(
        f"| {label} | " + " | ".join(str(counts[s]["entities"].get(label, 0)) for s in counts) + " |" for label in LABELS
    )
    text = f"""# PII corpus (generated)

Written by `python scripts/make_pii_corpus.py generate assets/pii` (seed {seed}, Faker {FAKER_VERSION}); do not edit
by hand: `tests/test_pii_corpus.py` regenerates the dev split and compares checksums. Synthetic texts from our own
templates in six registers; no real person's data. Splits are by template. Format: see the script's docstring
(token, `_`/`SpaceAfter=No`, IOB2 tag; `\\n` is a line-break token; `-DOCSTART-` line before each text with its
template id).

| split | texts | texts without PII | tokens | entities | bytes | md5 |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

| type | """ + " | ".join(counts) + """ |
|---|""" + "---|" * len(counts) + "\n" + per_type + "\n"
    (out / "README.md").write_text(text, encoding="utf8")


def check_faker_version() -> None:
    import faker

    if faker.VERSION != FAKER_VERSION:
        raise SystemExit(
            f"Faker {faker.VERSION} is installed but the corpus is defined by Faker {FAKER_VERSION}: "
            f"pip install faker=={FAKER_VERSION} (or pip install -e '.[pii]')"
        )


def read_column_docs(path: Path, nlp: Language) -> List[Doc]:
    """Docs of a PII column file, one per text, with the original whitespace.

    The file is read strictly by ``spacy_ner_plus.training.corpus.read_conll`` (every
    problem as FILE:LINE); escaped tokens are restored and the SPACE column
    sets each token's trailing space.
    RAISES (ConllFormatError): with every FILE:LINE problem.
    """
    from spacy_ner_plus import schemes
    from spacy_ner_plus.training.corpus import ConllFormatError, Problem, read_conll

    result = read_conll(path, scheme="IOB2")
    errors = list(result.errors)
    raw_lines = path.read_text(encoding="utf8").split("\n")
    docs = []
    for document in result.documents:
        words: List[str] = []
        spaces: List[bool] = []
        tags: List[str] = []
        for sentence in document:
            for word, tag, lineno in zip(sentence.words, sentence.tags, sentence.lines):
                columns = raw_lines[lineno - 1].rstrip("\r").split("\t")
                if len(columns) != 3 or columns[1] not in ("_", SPACE_AFTER_NO):
                    errors.append(Problem(str(path), lineno, f"expected TOKEN<TAB>_|{SPACE_AFTER_NO}<TAB>TAG, found {len(columns)} column(s) {columns[1:2]}"))
                    continue
                try:
                    words.append(unescape_token(word))
                except ValueError as err:
                    errors.append(Problem(str(path), lineno, str(err)))
                    continue
                spaces.append(columns[1] == "_")
                tags.append(tag)
        if words and not errors:
            ents = schemes.spans_to_tags(schemes.tags_to_spans(tags), len(tags), "IOB2")
            docs.append(Doc(nlp.vocab, words=words, spaces=spaces, ents=ents))
    if errors:
        raise ConllFormatError(sorted(errors, key=lambda p: p.line))
    return docs


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def generate(
    out_dir: Path = typer.Argument(..., help="directory for train.iob, dev.iob, test.iob and README.md"),
    seed: int = typer.Option(SEED, help="generator seed"),
    splits: Optional[List[str]] = typer.Option(None, "--split", help="only these splits (default: all)"),
) -> None:
    """Generate the column files of the PII corpus."""
    check_faker_version()
    nlp = spacy.blank("en")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n_texts in SPLITS.items():
        if splits and split not in splits:
            continue
        try:
            counts[split] = write_split(nlp, generate_split(split, n_texts, seed), out_dir / f"{split}.iob")
        except AlignmentError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out_dir / split}.iob: {counts[split]}")
    if not splits:
        write_readme(out_dir, counts, seed)


@app.command()
def docbin(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a PII column file"),
    output_path: Path = typer.Argument(..., help="the .spacy file to write"),
) -> None:
    """Convert a PII column file to a DocBin, one Doc per text, whitespace restored."""
    from spacy_ner_plus.training.corpus import ConllFormatError

    nlp = spacy.blank("en")
    try:
        docs = read_column_docs(input_path, nlp)
    except ConllFormatError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=False).to_disk(output_path)
    labels = Counter(ent.label_ for doc in docs for ent in doc.ents)
    typer.echo(f"{output_path}: {len(docs)} docs, {sum(len(d) for d in docs):,} tokens, entities {dict(sorted(labels.items()))}")


if __name__ == "__main__":
    app()
