"""Issue 29 section 3, the pure parts: offsets in UTF-16 and UTF-8 (service/offsets.py), ad-hoc
recognisers and allow lists with time-bounded, safety-checked regexes (service/adhoc.py), and
the policy's allow/deny lists (service/policy.py). The served endpoints are tested in
tests/test_service_features_serve.py."""
import time

import pytest

pytest.importorskip("regex")

from spacy_ner_plus.service import regex_safety
from spacy_ner_plus.service.adhoc import apply_allow_list, compile_allow_list, compile_recognizers
from spacy_ner_plus.service.regex_safety import compile_safe, unsafe_reason
from spacy_ner_plus.service.decision import Candidate
from spacy_ner_plus.service.offsets import OFFSET_UNITS, OffsetError, convert_offsets, to_codepoints
from spacy_ner_plus.service.policy import PolicyError, PolicyViolation, policy_from_dict
from spacy_ner_plus.service.requests import ApiError

# emoji (astral, a surrogate pair in UTF-16), a ZWJ family, a flag, a combining acute, CJK, an
# astral CJK ideograph, a Gothic letter, a four-byte math letter
TEXTS = [
    "Anna 😀 Keller",
    "👨‍👩‍👧 family of Zoë at 東京 on 2021-05-03",
    "Cafe\u0301 owner Jose\u0301 Nu\u0301n\u0303ez, 🇩🇪 Berlin",
    "𠀋𠀌 中文名字 李小龙 𐌰𐌱 𝒜lice",
    "plain ascii only",
    "",
]


def _all_spans(text):
    n = len(text)
    step = max(1, n // 12)
    points = sorted(set(list(range(0, n + 1, step)) + [n]))
    return [(a, b) for a in points for b in points if a <= b]


def _by_encoding(text, span, unit):
    start, end = span
    if unit == "codepoint":
        return span
    codec, width = {"utf16": ("utf-16-le", 2), "byte": ("utf-8", 1)}[unit]
    return (len(text[:start].encode(codec)) // width, len(text[:end].encode(codec)) // width)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("unit", OFFSET_UNITS)
def test_convert_offsets_matches_encoding_and_round_trips(text, unit):
    spans = _all_spans(text)
    converted = convert_offsets(text, spans, unit)
    assert converted == [_by_encoding(text, s, unit) for s in spans]
    assert to_codepoints(text, converted, unit) == spans
    if unit != "codepoint":
        codec, width = {"utf16": ("utf-16-le", 2), "byte": ("utf-8", 1)}[unit]
        encoded = text.encode(codec)
        for (s, e), (cs, ce) in zip(converted, spans):
            # the unit span decodes strictly (no split pair or sequence) to the same characters
            assert encoded[s * width : e * width].decode(codec) == text[cs:ce]


def test_convert_offsets_known_values():
    text = "a😀b\u0301中"
    # code points: a(0) 😀(1) b(2) U+0301(3) 中(4)
    assert convert_offsets(text, [(1, 2), (2, 4), (4, 5)], "utf16") == [(1, 3), (3, 5), (5, 6)]
    assert convert_offsets(text, [(1, 2), (2, 4), (4, 5)], "byte") == [(1, 5), (5, 8), (8, 11)]
    assert convert_offsets(text, [(0, 5)], "codepoint") == [(0, 5)]


def test_to_codepoints_refuses_an_offset_inside_a_character():
    text = "x😀y中"
    with pytest.raises(OffsetError) as err:
        to_codepoints(text, [(0, 1), (2, 4)], "utf16")  # 2: between the halves of the pair
    assert (err.value.index, err.value.which) == (1, "start") and "inside a character" in str(err.value)
    with pytest.raises(OffsetError) as err:
        to_codepoints(text, [(0, 7)], "byte")  # the end splits 中 (bytes 6..9)
    assert (err.value.index, err.value.which) == (0, "end")
    with pytest.raises(OffsetError, match="not an offset of a text of 5 UTF-16 code units"):
        to_codepoints(text, [(0, 6)], "utf16")
    with pytest.raises(OffsetError, match="after end"):
        to_codepoints(text, [(3, 1)], "utf16")
    with pytest.raises(ValueError, match="unknown offset unit"):
        convert_offsets(text, [], "utf32")


def test_convert_offsets_is_linear():
    text = ("Zoë 😀 東京 " * 20_000)[:200_000]
    spans = [(i, i + 3) for i in range(0, len(text) - 3, 7)]
    started = time.perf_counter()
    convert_offsets(text, spans, "utf16")
    convert_offsets(text, spans, "byte")
    # one cumulative pass: a per-span re-encoding of the prefix would take minutes here
    assert time.perf_counter() - started < 5.0


# --- regex safety --------------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern",
    [r"(a+)+$", r"(a|a)*$", r"(\w+\s?)*$", r"(a|aa)+b", r"(.*a){12}", r"^(x+x+)+y", r"(?:(?:a+)b?)*c", r"(a|b|ab)*c", r"([a-z0-9]+\.?)*@"],
)
def test_catastrophic_patterns_are_refused_not_run(pattern, monkeypatch):
    ran = []
    monkeypatch.setattr(regex_safety, "probes", lambda source: ran.append(source) or [])
    specs = [{"name": "r", "supported_entity": "X", "patterns": [{"name": "ok", "regex": r"\d{3}", "score": 0.5}, {"name": "bad", "regex": pattern, "score": 0.5}]}]
    with pytest.raises(ApiError) as err:
        compile_recognizers(specs)
    assert (err.value.status, err.value.kind, err.value.field) == (400, "unsafe_pattern", "ad_hoc_recognizers[0].patterns[1].regex")
    assert ran == [r"\d{3}"]  # the static check refused it before any probe ran it


@pytest.mark.parametrize(
    "pattern",
    [r"\b\d{3}-\d{4}\b", r"TCK-\d{6}", r"(\d{3}-){2}\d{4}", r"(?:\d{1,3}\.){3}\d{1,3}", r"[\w.+-]+@\w+([-.]\w+)*\.\w+", r"(?>a+)+b", r"(a++)+b"],
)
def test_ordinary_patterns_compile(pattern):
    assert unsafe_reason(pattern) is None
    assert compile_safe(pattern, "f") is not None


def test_probe_refuses_a_polynomial_pattern_the_static_check_lets_through():
    pattern = r"\w*\w*\w*\w*\w*\w*!"  # no repeated group, but O(n^6) on a run of word characters
    assert unsafe_reason(pattern) is None
    with pytest.raises(ApiError) as err:
        compile_safe(pattern, "allow_list[0]")
    assert err.value.kind == "unsafe_pattern" and "adversarial" in err.value.message and err.value.field == "allow_list[0]"


def test_invalid_regex_is_a_400_naming_the_field():
    with pytest.raises(ApiError) as err:
        compile_recognizers([{"supported_entity": "X", "patterns": [{"name": "p", "regex": "(?:a|b", "score": 0.1}]}])
    assert (err.value.status, err.value.kind, err.value.field) == (400, "unsafe_pattern", "ad_hoc_recognizers[0].patterns[0].regex")


def test_match_time_is_bounded(monkeypatch):
    # a slow pattern that passes both guards (the guards are switched off to get one)
    monkeypatch.setattr(regex_safety, "unsafe_reason", lambda source: None)
    monkeypatch.setattr(regex_safety, "probes", lambda source: [])
    (rec,) = compile_recognizers([{"supported_entity": "X", "patterns": [{"name": "p", "regex": r"(a|aa)+$", "score": 0.1}]}], match_timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(ApiError) as err:
        rec.find("a" * 60 + "!")
    elapsed = time.perf_counter() - started
    assert (err.value.status, err.value.kind, err.value.field) == (422, "pattern_timeout", "ad_hoc_recognizers[0].patterns[0].regex")
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "specs,status,kind,field",
    [
        ("x", 422, "invalid_field", "ad_hoc_recognizers"),
        ([{"supported_entity": "X"}], 422, "invalid_field", "ad_hoc_recognizers[0]"),
        ([{"supported_entity": "bad name", "deny_list": ["a"]}], 422, "invalid_field", "ad_hoc_recognizers[0].supported_entity"),
        ([{"supported_entity": "X", "supported_language": "de", "deny_list": ["a"]}], 400, "unsupported_language", "ad_hoc_recognizers[0].supported_language"),
        ([{"supported_entity": "X", "deny_list": ["a"], "colour": 1}], 422, "invalid_field", "ad_hoc_recognizers[0].#2"),
        ([{"supported_entity": "X", "patterns": [{"regex": "a", "score": 2}]}], 422, "invalid_field", "ad_hoc_recognizers[0].patterns[0].score"),
        ([{"supported_entity": "X", "patterns": [{"regex": "a" * 1001}]}], 413, "too_many", "ad_hoc_recognizers[0].patterns[0].regex"),
        ([{"supported_entity": "X", "deny_list": ["a"]}] * 33, 413, "too_many", "ad_hoc_recognizers"),
        ([{"supported_entity": "X", "deny_list": ["--"]}], 422, "invalid_field", "ad_hoc_recognizers[0].deny_list[0]"),
    ],
)
def test_recognizer_spec_errors_name_the_field(specs, status, kind, field):
    with pytest.raises(ApiError) as err:
        compile_recognizers(specs)
    assert (err.value.status, err.value.kind, err.value.field) == (status, kind, field)


# --- ad-hoc recognisers --------------------------------------------------------------
def test_patterns_deny_list_and_context():
    (rec,) = compile_recognizers(
        [
            {
                "name": "tickets", "supported_language": "en", "supported_entity": "TICKET_ID",
                "patterns": [{"name": "tck", "regex": r"TCK-\d{6}", "score": 0.3}],
                "deny_list": ["Project Bluebird", "Dr. No"], "context": ["ticket"],
            }
        ]
    )  # fmt: skip
    text = "Tickets: tck-123456 for project BLUEBIRD. xProject Bluebird, Dr. No! Later TCK-999999"
    found = [(text[c.start : c.end], c.source, round(c.score, 6), c.context_word) for c in rec.find(text)]
    assert found == [
        ("tck-123456", "ad_hoc", 0.65, "ticket"),  # case-insensitive (Presidio's flags); "Tickets" is context
        ("project BLUEBIRD", "deny_list", 1.0, "ticket"),
        ("Dr. No", "deny_list", 1.0, None),  # "xProject Bluebird" is not on a word boundary
        ("TCK-999999", "ad_hoc", 0.3, None),  # the context word is more than 5 words before
    ]
    c = rec.find(text)[0]
    assert (c.label, c.raw_score, c.recognizer, c.pattern) == ("TICKET_ID", 0.3, "tickets", "tck")


def test_context_boost_has_a_floor_and_a_cap():
    (rec,) = compile_recognizers([{"supported_entity": "X", "patterns": [{"name": "p", "regex": r"\d{4}", "score": 0.01}, {"name": "q", "regex": r"[A-Z]{2}\d", "score": 0.9}], "context": ["pin"]}])
    scores = {c.pattern: c.score for c in rec.find("my PIN 1234 or AB1")}
    assert scores == {"p": pytest.approx(0.4), "q": 1.0}


def test_deny_list_astral_and_combining_text():
    (rec,) = compile_recognizers([{"supported_entity": "NICK", "deny_list": ["Zoë", "東京"]}])
    text = "😀 zoë went to 東京 and Zoëy stayed"
    assert [text[c.start : c.end] for c in rec.find(text)] == ["zoë", "東京"]


# --- allow lists --------------------------------------------------------------------
def _cands(text, *words):
    out = []
    for w in words:
        i = text.index(w)
        out.append(Candidate(i, i + len(w), "PERSON", 0.9, "model"))
    return out


def test_allow_list_exact_and_regex():
    text = "Call Anna Keller or ACME support, not Bob"
    cands = _cands(text, "Anna Keller", "ACME support", "Bob")
    kept, counts = apply_allow_list(text, cands, ["ACME support", "anna keller"], "exact")
    assert [text[c.start : c.end] for c in kept] == ["Anna Keller", "Bob"] and counts == {"removed": 1, "kept_by_policy": 0}
    kept, counts = apply_allow_list(text, cands, compile_allow_list([r"ACME \w+", "Bo"], "regex"), "regex")
    # a full match is needed: "Bo" does not clear "Bob"
    assert [text[c.start : c.end] for c in kept] == ["Anna Keller", "Bob"] and counts["removed"] == 1
    kept, counts = apply_allow_list(text, cands, ["Bob", "Anna Keller"], "exact", allowed_types=frozenset({"LOCATION"}))
    assert len(kept) == 3 and counts == {"removed": 0, "kept_by_policy": 2}


def test_allow_list_regex_is_checked_and_time_bounded(monkeypatch):
    with pytest.raises(ApiError) as err:
        compile_allow_list(["ok", r"(\w+\s?)*$"], "regex")
    assert (err.value.kind, err.value.field) == ("unsafe_pattern", "allow_list[1]")
    with pytest.raises(ApiError) as err:
        compile_allow_list(["a"], "fuzzy")
    assert err.value.field == "allow_list_match"
    monkeypatch.setattr(regex_safety, "unsafe_reason", lambda source: None)
    monkeypatch.setattr(regex_safety, "probes", lambda source: [])
    slow = compile_allow_list([r"(a|aa)+$"], "regex")
    text = "a" * 60 + "!"
    with pytest.raises(ApiError) as err:
        apply_allow_list(text, [Candidate(0, len(text), "X", 1.0, "model")], slow, "regex", timeout=0.2)
    assert err.value.kind == "allow_list_timeout"


# --- the policy's lists ----------------------------------------------------------------
def test_policy_allow_and_deny_lists():
    policy = policy_from_dict(
        {
            "default": {"allow_list": ["Helpdesk"]},
            "types": {
                "LOC": {"always_redact": False, "client_allow_list": True, "operators": ["replace", "keep"]},
                "ORG": {"deny_list": ["Project Bluebird"]},
            },
        },
        "p.toml",
    )
    assert policy.for_type("PER").allow_list == frozenset({"Helpdesk"}) and not policy.for_type("PER").client_allow_list
    assert policy.deny_lists() == {"ORG": ("Project Bluebird",)}
    assert policy.check_allow_list(["LOC", "ORG", "PER"]) == frozenset({"LOC"})
    assert policy.describe(["PER"])["types"]["PER"]["allow_list_entries"] == 1


def test_policy_forbids_request_allow_lists_by_default_as_an_attacker_would_try():
    policy = policy_from_dict({}, "p.toml")
    # an attacker clearing everything with a regex allow list on /v1/redact is refused outright
    with pytest.raises(PolicyViolation) as err:
        policy.check_allow_list(["LOC", "ORG", "PER"])
    assert err.value.field == "allow_list" and err.value.rule == "default.client_allow_list (built-in)"
    # a policy that lets LOC be cleared still keeps PER redacted however the list is written
    mixed = policy_from_dict({"types": {"LOC": {"always_redact": False, "client_allow_list": True}}}, "p.toml")
    permitted = mixed.check_allow_list(["LOC", "PER"])
    text = "Anna in Rome"
    cands = [Candidate(0, 4, "PER", 0.9, "model"), Candidate(8, 12, "LOC", 0.9, "model")]
    kept, counts = apply_allow_list(text, cands, compile_allow_list([".*"], "regex"), "regex", allowed_types=permitted)
    assert [c.label for c in kept] == ["PER"] and counts == {"removed": 1, "kept_by_policy": 1}


@pytest.mark.parametrize(
    "data,where",
    [
        ({"default": {"deny_list": ["x"]}}, "default.deny_list: a deny list names its type"),
        ({"types": {"PER": {"client_allow_list": True}}}, "types.PER.client_allow_list = true contradicts default.always_redact (built-in) = true"),
        ({"types": {"PER": {"deny_list": ["ok", "--"]}}}, "types.PER.deny_list[1] has no letter or digit"),
        ({"types": {"PER": {"allow_list": ["ok", 3]}}}, "types.PER.allow_list[1] must be a non-empty string"),
        ({"types": {"PER": {"allow_list": "x"}}}, "types.PER.allow_list must be a list of strings"),
    ],
)
def test_policy_list_errors_name_the_key(data, where):
    with pytest.raises(PolicyError) as err:
        policy_from_dict(data, "p.toml")
    assert where in str(err.value)


def test_global_regex_flags_as_presidio():
    spec = {"supported_entity": "X", "patterns": [{"name": "p", "regex": "abc", "score": 0.5}]}
    (default,) = compile_recognizers([spec])
    (case_sensitive,) = compile_recognizers([{**spec, "global_regex_flags": 0}])
    assert len(default.find("ABC abc")) == 2 and len(case_sensitive.find("ABC abc")) == 1
    with pytest.raises(ApiError) as err:
        compile_recognizers([{**spec, "global_regex_flags": 64}])  # VERBOSE: not accepted
    assert err.value.field == "ad_hoc_recognizers[0].global_regex_flags"
