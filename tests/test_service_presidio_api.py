"""The Presidio-compatible endpoints (service/presidio_api.py) against a real uvicorn server on
loopback, as a Presidio REST client would use them.

Two servers, one per policy: a permissive one (every operator, every type excludable, no API
keys), on which the request/response examples of Presidio's own REST documentation, written
out in tests/fixtures/presidio_rest/ with our words and values, are replayed; and one with the
built-in policy and API keys, on which a client tries to switch redaction off through the
Presidio parameters. Both serve the tiny ``trained_nlp`` pipeline (PER/LOC/ORG, thresholds
0.5) plus ``pii_patterns`` when phonenumbers is installed.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from test_service import HASH_KEY, HASH_RING, HAVE_PATTERNS  # noqa: E402
from test_service_edge import _env, _free_port, _save, _serve_cmd, _stop, _wait_ready  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "presidio_rest"
SENTENCE = "Mary works for Acme Corp in Paris ."
JSON = {"content-type": "application/json"}
# every operator, every type excludable and clearable by a request's allow list; and the
# policy's own lists: "Acme Corp" is never reported, "Globex" always is (as an ORG)
PERMISSIVE_POLICY = """
[default]
operators = ["replace", "mask", "redact", "hash", "keep"]
always_redact = false
client_may_exclude = true
client_allow_list = true

[types.ORG]
allow_list = ["Acme Corp"]
deny_list = ["Globex"]
"""


class PresidioServer:
    """A running server, its base URL, audit log and (optional) API key."""

    def __init__(self, tmp: Path, model: Path, policy: str, api_key: bool) -> None:
        self.tmp = tmp
        self.audit = tmp / "audit.jsonl"
        key_file = tmp / "hash.key"
        key_file.write_bytes(HASH_KEY + b"\n")
        args = ["--port", _free_port(), "--audit-log", self.audit, "--hash-key-file", key_file, "--torch-threads", 1, "--batch-wait-ms", 5]
        if policy:
            (tmp / "policy.toml").write_text(policy)
            args += ["--policy", tmp / "policy.toml"]
        self.headers = dict(JSON)
        if api_key:
            keys = tmp / "api-keys"
            made = subprocess.run(
                [sys.executable, "-m", "spacy_ner_plus.service.auth", "add", "presidio-client", "--file", str(keys)],
                capture_output=True, text=True, env=_env(), timeout=60, check=True,
            )  # fmt: skip
            args += ["--api-keys", keys]
            self.headers["Authorization"] = f"Bearer {made.stdout.strip()}"
        self.base = f"http://127.0.0.1:{args[1]}"
        stderr = tmp / "stderr.txt"
        self.proc = subprocess.Popen(_serve_cmd(model, *args), stdout=subprocess.DEVNULL, stderr=open(stderr, "wb"), env=_env())
        try:
            _wait_ready(self.proc, self.base, stderr)
        except Exception:
            _stop(self.proc)
            raise
        self.client = httpx.Client(base_url=self.base, timeout=120, headers=self.headers)

    def post(self, path: str, body) -> httpx.Response:
        return self.client.post(path, content=json.dumps(body).encode("utf8"))

    def audit_lines(self):
        return [json.loads(line) for line in self.audit.read_text(encoding="utf8").splitlines()]

    def stop(self) -> None:
        self.client.close()
        _stop(self.proc)


def _model(trained_nlp, tmp: Path) -> Path:
    extra = [("pii_patterns", True)] if HAVE_PATTERNS else []
    return _save(trained_nlp, tmp / "model", {"PER": 0.5, "LOC": 0.5, "ORG": 0.5}, extra)


@pytest.fixture(scope="module")
def permissive(trained_nlp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("presidio_permissive")
    srv = PresidioServer(tmp, _model(trained_nlp, tmp), PERMISSIVE_POLICY, api_key=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict(trained_nlp, tmp_path_factory):
    """The built-in policy (every type always redacted, keep off) and API keys."""
    tmp = tmp_path_factory.mktemp("presidio_strict")
    srv = PresidioServer(tmp, _model(trained_nlp, tmp), "", api_key=True)
    yield srv
    srv.stop()


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf8"))


def _same_shape(ours, theirs, where: str = "response") -> None:
    """``ours`` has every field of Presidio's example ``theirs``, with a value of the same JSON
    type (a null in the example allows anything; numbers are numbers, int or float)."""
    if theirs is None:
        return
    if isinstance(theirs, bool):
        assert isinstance(ours, bool), f"{where}: {ours!r} is not a boolean"
    elif isinstance(theirs, (int, float)):
        assert isinstance(ours, (int, float)) and not isinstance(ours, bool), f"{where}: {ours!r} is not a number"
    elif isinstance(theirs, str):
        assert isinstance(ours, str), f"{where}: {ours!r} is not a string"
    elif isinstance(theirs, list):
        assert isinstance(ours, list), f"{where}: {type(ours).__name__} is not a list"
        assert len(ours) > 0 or len(theirs) == 0, f"{where}: empty where Presidio's example has items"
        for i, item in enumerate(ours):
            _same_shape(item, theirs[min(i, len(theirs) - 1)], f"{where}.{i}")
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{where}: {type(ours).__name__} is not an object"
        missing = sorted(set(theirs) - set(ours))
        assert not missing, f"{where}: Presidio's fields {missing} are missing"
        for key, value in theirs.items():
            _same_shape(ours[key], value, f"{where}.{key}")


# --- Presidio's documented examples, replayed ------------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_presidio_api_replays_presidio_doc_examples(permissive, name):
    fx = _fixture(name)
    if fx["method"] == "GET":
        r = permissive.client.get(fx["path"])
    else:
        r = permissive.post(fx["path"], fx["request"])
    assert r.status_code == 200, r.text
    if fx["path"] == "/health":
        assert r.headers["content-type"].startswith("text/plain") and r.text == fx["response"]
        return
    body = r.json()
    _same_shape(body, fx["response"])
    if fx["path"] == "/anonymize":
        # the client's own results on a permissive policy: exactly Presidio's answer (items in any order)
        assert body["text"] == fx["response"]["text"]
        key = lambda i: (i["start"], i["end"], i["entity_type"])  # noqa: E731
        assert sorted(body["items"], key=key) == sorted(fx["response"]["items"], key=key)
    elif fx["path"].startswith("/supportedentities"):
        assert set(fx["response"]) <= set(body)
    elif fx["path"].startswith("/recognizers"):
        assert set(fx["response"]) <= set(body)


def test_presidio_api_analyze_finds_what_v1_finds(permissive):
    ours = permissive.post("/v1/analyze", {"text": SENTENCE}).json()["results"]
    presidio = permissive.post("/analyze", {"text": SENTENCE, "language": "en"}).json()
    spans = [(e["entity_type"], e["start"], e["end"]) for e in presidio]
    # the same as /v1: the policy's allow list clears ORG "Acme Corp" on every endpoint
    assert ("ORG", 15, 24) not in spans and ("ORG", 15, 24) not in [(e["entity_type"], e["start"], e["end"]) for e in ours]
    assert [(e["entity_type"], e["start"], e["end"], e["score"]) for e in ours] == [
        (e["entity_type"], e["start"], e["end"], e["score"]) for e in presidio
    ]
    assert ("PER", 0, 4) in spans
    for e in presidio:
        assert e["analysis_explanation"] is None
        assert e["recognition_metadata"]["recognizer_name"] in permissive.client.get("/recognizers").json()
    explained = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "return_decision_process": True}).json()
    per = next(e for e in explained if e["entity_type"] == "PER")
    assert per["analysis_explanation"]["recognizer"] == "ner_plus"
    assert per["analysis_explanation"]["score"] == per["score"] >= per["recognition_metadata"]["threshold"] == 0.5
    assert "threshold 0.5000 (pipeline)" in per["analysis_explanation"]["textual_explanation"]


def test_presidio_api_results_parse_with_presidio_classes(permissive):
    """presidio-analyzer's and presidio-anonymizer's own classes read our answers."""
    analyzer = pytest.importorskip("presidio_analyzer")
    anonymizer = pytest.importorskip("presidio_anonymizer")
    from presidio_anonymizer.entities import OperatorConfig, OperatorResult
    from presidio_anonymizer.entities import RecognizerResult as AnonymizerRecognizerResult

    text = SENTENCE + " Ring 0161 496 0724 or mail mary.major@example.com ."
    results = permissive.post("/analyze", {"text": text, "language": "en", "return_decision_process": True}).json()
    assert results
    parsed = [analyzer.RecognizerResult.from_json(r) for r in results]
    assert [(p.entity_type, p.start, p.end, p.score) for p in parsed] == [(r["entity_type"], r["start"], r["end"], r["score"]) for r in results]
    # /analyze's answer is /anonymize's analyzer_results, unchanged, as a Presidio client chains them
    anonymizers = {"DEFAULT": {"type": "replace", "new_value": "<X>"}, "PER": {"type": "mask", "masking_char": "*", "chars_to_mask": 2, "from_end": True}}
    body = permissive.post("/anonymize", {"text": text, "analyzer_results": results, "anonymizers": anonymizers}).json()
    items = [OperatorResult.from_json(i) for i in body["items"]]
    for item in items:
        assert body["text"][item.start : item.end] == item.text
    # Presidio's own engine, given the same results and operators, writes the same text
    engine = anonymizer.AnonymizerEngine()
    theirs = engine.anonymize(
        text=text,
        analyzer_results=[AnonymizerRecognizerResult.from_json(r) for r in results],
        operators={k: OperatorConfig(v["type"], {p: x for p, x in v.items() if p != "type"}) for k, v in anonymizers.items()},
    )
    assert body["text"] == theirs.text
    key = lambda i: (i.start, i.end)  # noqa: E731
    assert sorted(items, key=key) == sorted(theirs.items, key=key)


def test_presidio_api_language_entities_and_threshold(permissive):
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "de"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "language" and "'de'" in r.json()["error"]["message"]
    assert permissive.client.get("/supportedentities?language=fr").status_code == 400
    assert permissive.post("/analyze", {"text": SENTENCE}).status_code == 422  # language is required, as in Presidio
    only = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "entities": ["LOC"]}).json()
    assert {e["entity_type"] for e in only} == {"LOC"}
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "entities": ["PER", "US_DRIVER_LICENSE"]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "entities.1"
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "score_threshold": 1.5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "score_threshold"
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "correlation_id": "not a valid id!"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "correlation_id"


def test_presidio_api_anonymize_bad_input_names_the_field(permissive):
    text = "good morning, this is Ruth Okafor."
    cases = [
        ({"text": text, "analyzer_results": [{"start": 22, "end": 99, "score": 0.8, "entity_type": "PERSON"}]}, 422, "analyzer_results.0.start"),
        ({"text": text, "analyzer_results": [{"start": 22, "end": 33, "entity_type": "PERSON"}], "anonymizers": {"PERSON": {"type": "custom"}}}, 400, "anonymizers.#0.type"),  # a type the client made up is named by position
        ({"text": text, "analyzer_results": [], "anonymizers": {"DEFAULT": {"type": "hash", "hash_type": "md5"}}}, 422, "anonymizers.DEFAULT.hash_type"),
        ({"text": text, "analyzer_results": [], "anonymizers": {"DEFAULT": {"type": "mask", "masking_char": "##"}}}, 422, "anonymizers.DEFAULT.masking_char"),
        ({"text": text, "analyzer_results": [], "anonymizers": {"DEFAULT": {"type": "replace", "salt": "x"}}}, 422, "anonymizers.DEFAULT"),
    ]
    for body, status, field in cases:
        r = permissive.post("/anonymize", body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"].startswith(field), r.text
    # hash: the service's keyed token, whichever hash_type a Presidio client names
    body = permissive.post("/anonymize", {"text": text, "analyzer_results": [{"start": 22, "end": 33, "entity_type": "PER"}], "anonymizers": {"PER": {"type": "hash", "hash_type": "sha512"}}}).json()
    assert body["text"] == f"good morning, this is {HASH_RING.token('PER', 'Ruth Okafor')}."


# --- the edges and the policy apply, as on /v1 --------------------------------------
def test_presidio_api_needs_the_key_host_and_json(strict):
    no_key = {"content-type": "application/json"}
    for path, body in (("/analyze", {"text": SENTENCE, "language": "en"}), ("/anonymize", {"text": SENTENCE, "analyzer_results": []})):
        assert httpx.post(strict.base + path, json=body, headers=no_key).status_code == 401
        r = httpx.post(strict.base + path, content=json.dumps(body), headers={**strict.headers, "content-type": "text/plain"})
        assert r.status_code == 415
        r = httpx.post(strict.base + path, content=json.dumps(body), headers={**strict.headers, "host": "evil.example"})
        assert r.status_code == 421
    for path in ("/supportedentities", "/recognizers"):
        assert httpx.get(strict.base + path).status_code == 401
        assert strict.client.get(path).status_code == 200
    assert httpx.get(strict.base + "/health").text.endswith("is up")  # a probe, as /healthz: no key
    big = {"text": "x" * 2_000_000, "language": "en"}
    assert strict.post("/analyze", big).status_code == 413


def test_presidio_api_is_audited_without_the_text(strict):
    cid = "b2f1c0de-0000-4000-8000-00000000c1d2"
    r = strict.post("/analyze", {"text": SENTENCE, "language": "en", "correlation_id": cid})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    a = strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": []})
    lines = {line["request_id"]: line for line in strict.audit_lines()}
    line = lines[rid]
    assert line["endpoint"] == "/analyze" and line["correlation_id"] == cid and line["client_id"] == "presidio-client"
    assert line["entities"]["PER"]["detected"] == 1
    anon = lines[a.headers["x-request-id"]]
    assert anon["endpoint"] == "/anonymize" and anon["client_results"] == 0 and anon["added_by_policy"] >= 1
    log = strict.audit.read_text(encoding="utf8")
    for secret in ("Mary", "Acme", "Paris"):
        assert secret not in log


def test_presidio_api_cannot_switch_redaction_off(strict):
    """The built-in policy: every type always redacted, keep off, no type excludable, thresholds
    capped at the pipeline's own. What a Presidio client may try, and what it gets."""
    base = strict.post("/analyze", {"text": SENTENCE, "language": "en"}).json()
    assert ("PER", 0, 4) in [(e["entity_type"], e["start"], e["end"]) for e in base]
    # score_threshold 1.0 cannot raise a threshold above the bound (here the pipeline's own)
    capped = strict.post("/analyze", {"text": SENTENCE, "language": "en", "score_threshold": 1.0}).json()
    assert capped == base
    # entities: [] is no filter, as in Presidio's engine
    assert strict.post("/analyze", {"text": SENTENCE, "language": "en", "entities": []}).json() == base
    # keep where the policy forbids it: refused, naming the rule
    r = strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": base, "anonymizers": {"DEFAULT": {"type": "keep"}}})
    assert r.status_code == 403 and r.json()["error"]["kind"] == "policy_violation"
    assert r.json()["error"]["field"].startswith("anonymizers.DEFAULT") and "default.operators" in r.json()["error"]["message"]
    # a mask of 0 characters and a replacement that repeats the name: refused too
    zero = {"PER": {"type": "mask", "masking_char": "*", "chars_to_mask": 0}}
    assert strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": base, "anonymizers": zero}).status_code == 403
    echo = {"PER": {"type": "replace", "new_value": "Mary"}}
    assert strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": base, "anonymizers": echo}).status_code == 403
    # sending no results (or only some) does not leave a type visible: the server adds its own detections
    for results in ([], [e for e in base if e["entity_type"] != "PER"]):
        body = strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": results}).json()
        assert "Mary" not in body["text"] and body["text"].startswith("<PER>")
        assert ("PER", "replace") in [(i["entity_type"], i["operator"]) for i in body["items"]]
    # a client's own type follows the policy's [default]: keep is refused for it as well
    own = [{"start": 15, "end": 24, "entity_type": "COMPANY", "score": 0.9}]
    r = strict.post("/anonymize", {"text": SENTENCE, "analyzer_results": own, "anonymizers": {"COMPANY": {"type": "keep"}}})
    assert r.status_code == 403
    # an empty allow list (a Presidio client's default) clears nothing and is answered
    assert strict.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": [], "allow_list_match": "exact"}).json() == base
    # an allow list that matches everything: no type's policy lets a request's allow list clear it
    for match in ("regex", "exact"):
        r = strict.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": [".*", "Mary"], "allow_list_match": match})
        assert r.status_code == 403 and r.json()["error"]["field"] == "allow_list" and "client_allow_list" in r.json()["error"]["message"]


def test_presidio_api_ad_hoc_recognizers_context_and_deny_lists(permissive):
    fx = _fixture("analyze_ad_hoc.json")
    results = permissive.post("/analyze", fx["request"]).json()
    ticket = next(e for e in results if e["entity_type"] == "TICKET_ID")
    assert (ticket["start"], ticket["end"], ticket["score"]) == (50, 60, 0.4)  # 0.05 raised by the context word
    explained = ticket["analysis_explanation"]
    assert explained["original_score"] == 0.05 and explained["supportive_context_word"] == "ticket"
    assert explained["recognizer"] == "Ticket number recognizer" and explained["pattern_name"] == "ticket number (weak)"
    assert {e["entity_type"] for e in results} <= {"PER", "TICKET_ID"}
    # without context the weak pattern stays below score_threshold: dropped, as Presidio drops it
    plain = dict(fx["request"], text=fx["request"]["text"].replace("ticket", "number"))
    assert "TICKET_ID" not in {e["entity_type"] for e in permissive.post("/analyze", plain).json()}
    # a catastrophic pattern is refused before it runs, naming where it is
    bad = dict(fx["request"], ad_hoc_recognizers=[{"supported_entity": "X", "patterns": [{"name": "p", "regex": "(a+)+$", "score": 0.5}]}])
    r = permissive.post("/analyze", bad)
    assert r.status_code == 400 and r.json()["error"]["kind"] == "unsafe_pattern"
    # the policy's deny list: "Globex" is an ORG wherever it stands
    text = "Mary left Globex in May ."
    found = permissive.post("/analyze", {"text": text, "language": "en", "return_decision_process": True}).json()
    assert ("ORG", 10, 16, "deny_list") in [(e["entity_type"], e["start"], e["end"], e["recognition_metadata"]["source"]) for e in found]


def test_presidio_api_allow_lists(permissive):
    base = permissive.post("/analyze", {"text": SENTENCE, "language": "en"}).json()
    assert ("PER", 0, 4) in [(e["entity_type"], e["start"], e["end"]) for e in base]
    for allow, match in ((["Mary"], "exact"), (["M[a-z]+"], "regex")):
        r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": allow, "allow_list_match": match}).json()
        assert r == [e for e in base if e["start"] != 0]
    # regex mode needs a full match of the entity's text: "M" alone clears nothing
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": ["M"], "allow_list_match": "regex"}).json()
    assert r == base
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": ["(x|x)*y"], "allow_list_match": "regex"})
    assert r.status_code == 400 and r.json()["error"]["kind"] == "unsafe_pattern"
    r = permissive.post("/analyze", {"text": SENTENCE, "language": "en", "allow_list": ["Mary"], "allow_list_match": "fuzzy"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "allow_list_match"
