"""The PII service against a real uvicorn server (a subprocess on loopback) and an HTTP client.

One server per module (start-up loads the model once): the tiny ``trained_nlp``
pipeline (PER/LOC/ORG) saved with thresholds 0.5, plus a component from a
``--code`` file that raises on a marker, to provoke internal errors.
"""
import copy
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from spacy_ner_plus.service.keys import Keyring, derived_key_id  # noqa: E402
from spacy_ner_plus.service.operators import Entity, Operator, redact  # noqa: E402
from service_helpers import metric_value, wait_ready  # noqa: E402

# The pattern recognisers need the optional phonenumbers library (the pii extra). Importing
# pii_patterns always succeeds (it imports phonenumbers only when it looks for a number), so
# the guard asks for the library itself.
HAVE_PATTERNS = importlib.util.find_spec("phonenumbers") is not None

HASH_KEY = b"test-key-0123456789abcdef-not-for-production"
HASH_RING = Keyring({derived_key_id(HASH_KEY): HASH_KEY}, derived_key_id(HASH_KEY))
# These tests exercise every operator a client can choose, keep included: a permissive policy,
# stated explicitly (the built-in default redacts every type; tests/test_service_policy.py tests it).
PERMISSIVE_POLICY = """
[default]
operators = ["replace", "mask", "redact", "hash", "keep"]
always_redact = false
client_may_exclude = true
"""
MARKER = "EXPLODE"
FAIL_COMPONENT = f'''
from spacy.language import Language


@Language.component("serve_test_fail_on_marker")
def fail_on_marker(doc):
    if "{MARKER}" in doc.text:
        # the message quotes the input, as real library errors do: the service must not log it
        raise RuntimeError("cannot handle " + doc.text)
    return doc
'''
SENTENCE = "John lives in New York City ."
SENTENCE2 = "Mary works for Acme Corp in Paris ."
READY_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strings(value):
    """Every string inside a JSON-like value (keys too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


class Server:
    """A running `python -m spacy_ner_plus serve` with what the tests sent it."""

    def __init__(self, tmp: Path, model_dir: Path, code: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.audit = tmp / "audit.jsonl"
        self.stdout = tmp / "stdout.txt"
        self.stderr = tmp / "stderr.txt"
        key_file = tmp / "hash.key"
        key_file.write_bytes(HASH_KEY + b"\n")
        policy = tmp / "policy.toml"
        policy.write_text(PERMISSIVE_POLICY)
        env = {k: v for k, v in os.environ.items() if k not in ("NER_PLUS_HASH_KEY", "PROMETHEUS_MULTIPROC_DIR")}
        cmd = [
            sys.executable, "-m", "spacy_ner_plus", "serve", str(model_dir),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--audit-log", str(self.audit), "--hash-key-file", str(key_file),
            "--min-threshold", "0.1", "--min-threshold", "ORG=0.3", "--max-threshold", "1.0",
            "--max-body-bytes", "20000", "--max-texts", "40", "--batch-wait-ms", "20",
            "--drain-timeout", "60", "--code", str(code), "--torch-threads", "1", "--policy", str(policy),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=open(self.stdout, "wb"), stderr=open(self.stderr, "wb"), env=env)
        self.client = httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT_S, limits=httpx.Limits(max_connections=64))
        self.sent = set()  # every string a test put in a request body
        self.request_ids = []  # of every /v1 response
        self._wait_ready()

    def _wait_ready(self) -> None:
        wait_ready(self.proc, self.base, self.stderr, READY_TIMEOUT_S)

    def post(self, path: str, body=None, *, content=None, headers=None, client=None) -> httpx.Response:
        if body is not None:
            # the texts are what must never reach a log (keys and operator names may)
            self.sent.update(s for s in _strings([body.get("text"), body.get("texts")]) if len(s) >= 4)
            content = json.dumps(body).encode("utf8")
        response = (client or self.client).post(path, content=content, headers={"content-type": "application/json", **(headers or {})})
        self.request_ids.append(response.headers["x-request-id"])
        return response

    def get(self, path: str) -> httpx.Response:
        response = self.client.get(path)
        if path.startswith("/v1/"):
            self.request_ids.append(response.headers["x-request-id"])
        return response

    def metric(self, name: str, **labels) -> float:
        """Sum of one metric's samples whose labels include ``labels``."""
        return metric_value(self.client, name, **labels)

    def audit_lines(self):
        return [json.loads(line) for line in self.audit.read_text(encoding="utf8").splitlines()]

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.client.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(trained_nlp, tmp_path_factory):
    import spacy

    tmp = tmp_path_factory.mktemp("serve")
    code = tmp / "components.py"
    code.write_text(FAIL_COMPONENT)
    spacy.util.import_file("serve_test_components", str(code))
    pipe = trained_nlp.get_pipe("ner_plus")
    saved = copy.deepcopy(pipe.cfg["thresholds"])
    pipe.cfg["thresholds"] = {"PER": 0.5, "LOC": 0.5, "ORG": 0.5}
    trained_nlp.add_pipe("serve_test_fail_on_marker", last=True)
    if HAVE_PATTERNS:
        trained_nlp.add_pipe("pii_patterns", first=True)
    try:
        trained_nlp.to_disk(tmp / "model")
    finally:
        trained_nlp.remove_pipe("serve_test_fail_on_marker")
        if HAVE_PATTERNS:
            trained_nlp.remove_pipe("pii_patterns")
        pipe.cfg["thresholds"] = saved
    srv = Server(tmp, tmp / "model", code)
    yield srv
    srv.stop()


def _entities(response):
    return [(e["entity_type"], e["start"], e["end"]) for e in response.json()["results"]]


# --- analyze ------------------------------------------------------------------------
def test_serve_analyze_offsets_scores_and_no_text_by_default(server):
    r = server.post("/v1/analyze", {"text": SENTENCE})
    assert r.status_code == 200
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert _entities(r) == [("PER", 0, 4), ("LOC", 14, 27)]
    for e in body["results"]:
        assert "text" not in e
        assert e["score"] >= e["threshold"] == 0.5 and e["source"] == "model"
    assert body["model"]["calibration"] == {"LOC": "none", "ORG": "none", "PER": "none"}
    with_text = server.post("/v1/analyze", {"text": SENTENCE, "return_text": True}).json()["results"]
    assert [e["text"] for e in with_text] == ["John", "New York City"]


def test_serve_analyze_texts_and_entity_filter(server):
    r = server.post("/v1/analyze", {"texts": [SENTENCE, SENTENCE2], "entities": ["LOC", "ORG"]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [[(e["entity_type"], e["start"], e["end"]) for e in res] for res in results] == [[("LOC", 14, 27)], [("ORG", 15, 24), ("LOC", 28, 33)]]


def test_serve_threshold_override_within_bounds_and_audit_counts(server):
    base = server.post("/v1/analyze", {"text": SENTENCE2, "return_text": True}).json()["results"]
    org = next(e for e in base if e["entity_type"] == "ORG")
    assert 0.9 < org["score"] < 1.0
    # raising ORG's threshold above its score drops it; the audit counts it as below and near the threshold
    raised = server.post("/v1/analyze", {"text": SENTENCE2, "thresholds": {"ORG": 1.0}})
    assert raised.status_code == 200
    assert [e["entity_type"] for e in raised.json()["results"]] == ["PER", "LOC"]
    line = next(a for a in server.audit_lines() if a["request_id"] == raised.json()["request_id"])
    assert line["entities"]["ORG"] == {"detected": 0, "redacted": 0, "below_threshold": 1, "near_threshold": 1}
    assert line["entities"]["PER"]["detected"] == 1 and line["thresholds_overridden"] == ["ORG"]
    # lowering within bounds reports the same entities plus anything scored in between
    lowered = server.post("/v1/analyze", {"text": SENTENCE2, "thresholds": {"PER": 0.1}})
    assert {("PER", 0, 4), ("ORG", 15, 24), ("LOC", 28, 33)} <= set(_entities(lowered))
    assert all(e["threshold"] == 0.1 for e in lowered.json()["results"] if e["entity_type"] == "PER")
    # outside the operator's bounds: PER may not go below 0.1, ORG not below 0.3
    for thresholds, where in (({"PER": 0.05}, "thresholds.PER"), ({"ORG": 0.2}, "thresholds.ORG")):
        r = server.post("/v1/analyze", {"text": SENTENCE2, "thresholds": thresholds})
        assert r.status_code == 422 and r.json()["error"]["field"] == where


# --- redact -------------------------------------------------------------------------
def test_serve_redact_every_operator(server):
    ops = {"PER": {"type": "mask", "masking_char": "#", "chars_to_mask": 3}, "ORG": {"type": "hash"}, "LOC": {"type": "redact"}}
    r = server.post("/v1/redact", {"text": SENTENCE2, "operators": ops})
    assert r.status_code == 200
    body = r.json()
    digest = HASH_RING.token("ORG", "Acme Corp")
    assert body["text"] == f"###y works for {digest} in  ."
    items = body["items"]
    assert [(i["entity_type"], i["operator"]) for i in items] == [("PER", "mask"), ("ORG", "hash"), ("LOC", "redact")]
    out = body["text"]
    assert [out[i["start"] : i["end"]] for i in items] == ["###y", digest, ""]
    assert items[2]["start"] == len(f"###y works for {digest} in ")
    # one value, one token, in every request
    again = server.post("/v1/redact", {"text": "Acme Corp in Paris .", "operators": {"DEFAULT": {"type": "hash"}}}).json()
    assert again["text"].startswith(digest + " in ")
    # replace (default and given) and keep
    r = server.post("/v1/redact", {"text": SENTENCE2, "operators": {"DEFAULT": {"type": "replace"}, "LOC": {"type": "replace", "new_value": "[CITY]"}, "ORG": {"type": "keep"}}})
    assert r.json()["text"] == "<PER> works for Acme Corp in [CITY] ."
    assert [(i["operator"], r.json()["text"][i["start"] : i["end"]]) for i in r.json()["items"]] == [("replace", "<PER>"), ("keep", "Acme Corp"), ("replace", "[CITY]")]
    # no operators at all: replace with <TYPE>
    assert server.post("/v1/redact", {"text": SENTENCE}).json()["text"] == "<PER> lives in <LOC> ."


@pytest.mark.skipif(not HAVE_PATTERNS, reason="pii_patterns (phonenumbers) not installed")
def test_serve_pattern_entities_are_reported_and_redacted(server):
    email = "anna.keller@example.com"
    text = f"{SENTENCE2} Mail {email} ."
    start = text.index(email)
    results = server.post("/v1/analyze", {"text": text}).json()["results"]
    found = [e for e in results if e["entity_type"] == "EMAIL_ADDRESS"]
    assert found == [{"entity_type": "EMAIL_ADDRESS", "start": start, "end": start + len(email), "score": 0.95, "threshold": None, "source": "pattern"}]
    assert ("PER", 0, 4) in [(e["entity_type"], e["start"], e["end"]) for e in results]
    body = server.post("/v1/redact", {"text": text, "operators": {"EMAIL_ADDRESS": {"type": "hash"}, "DEFAULT": {"type": "keep"}}}).json()
    digest = HASH_RING.token("EMAIL_ADDRESS", email)
    assert body["text"] == f"{SENTENCE2} Mail {digest} ."
    # a rule match has no threshold to move
    r = server.post("/v1/analyze", {"text": text, "thresholds": {"EMAIL_ADDRESS": 0.99}})
    assert r.status_code == 400 and "pattern" in r.json()["error"]["message"]
    rows = {e["entity_type"]: e for e in server.get("/v1/entities").json()["entities"]}
    assert rows["EMAIL_ADDRESS"]["sources"] == ["pattern"] and rows["PER"]["sources"] == ["model"]


UNICODE_TEXTS = [
    ("\U0001F600\U0001F600 " + SENTENCE, 3),  # emoji: 2 UTF-16 units each, 4 UTF-8 bytes
    ("Zoe\u0301 says: " + SENTENCE, 11),  # e + combining acute accent: two code points
    ("Line one\r\n" + SENTENCE + "\r\n", 10),  # CRLF
    ("\U0001F469\u200d\U0001F469\u200d\U0001F467 " + SENTENCE, 6),  # a ZWJ emoji sequence
]


@pytest.mark.parametrize("text,john", UNICODE_TEXTS)
def test_serve_unicode_offsets_are_code_points(server, text, john):
    analyzed = server.post("/v1/analyze", {"text": text, "return_text": True}).json()["results"]
    assert ("PER", john, john + 4) in [(e["entity_type"], e["start"], e["end"]) for e in analyzed]
    for e in analyzed:
        assert text[e["start"] : e["end"]] == e["text"]
    # the service's redaction equals the pure operator applied to its own analysis
    ops = {"DEFAULT": {"type": "mask"}, "LOC": {"type": "replace"}}
    redacted = server.post("/v1/redact", {"text": text, "operators": ops}).json()
    ents = [Entity(e["start"], e["end"], e["entity_type"], e["score"]) for e in analyzed]
    expected, items = redact(text, ents, {"DEFAULT": Operator("mask"), "LOC": Operator("replace")})
    assert redacted["text"] == expected
    assert redacted["items"] == [{"entity_type": i.entity_type, "start": i.start, "end": i.end, "operator": i.operator} for i in items]
    assert redacted["text"][:john] == expected[:john] and "John" not in redacted["text"]


# --- concurrency --------------------------------------------------------------------
def test_serve_32_concurrent_requests_equal_sequential_ones(server):
    texts = [f"{SENTENCE2 if i % 2 else SENTENCE} " + " ".join(["Paris"] * (i % 7)) + f" row {i} ." for i in range(32)]
    sequential = [server.post("/v1/analyze", {"text": t}).json()["results"] for t in texts]
    batches_before = server.metric("ner_plus_batch_texts_count")
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda t: server.post("/v1/analyze", {"text": t}), texts))
    batches = server.metric("ner_plus_batch_texts_count") - batches_before
    assert all(r.status_code == 200 for r in responses)
    for seq, r in zip(sequential, responses):
        conc = r.json()["results"]
        assert [(e["entity_type"], e["start"], e["end"], e["source"]) for e in conc] == [(e["entity_type"], e["start"], e["end"], e["source"]) for e in seq]
        assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(conc, seq))
    # the texts really shared nlp.pipe calls
    assert batches < 32, f"{batches} nlp.pipe calls for 32 concurrent requests"


# --- bad input ----------------------------------------------------------------------
BAD = [
    ("/v1/analyze", b'{"text": "' + b"a" * 20001 + b'"}', 413, "body"),
    ("/v1/analyze", json.dumps({"texts": ["a"] * 41}).encode(), 413, "texts"),
    ("/v1/analyze", b'{"text": "John', 422, "body"),
    ("/v1/analyze", b"\xff\xfe", 400, "body"),  # not UTF-8: 400 before any parsing
    ("/v1/analyze", b'["John"]', 422, "body"),
    ("/v1/analyze", b'{"text": 3}', 422, "text"),
    ("/v1/analyze", b'{"texts": ["a", 3]}', 422, "texts.1"),
    ("/v1/analyze", b'{"text": "a", "txt": "b"}', 422, "#1"),  # an unknown key is named by position, never quoted
    ("/v1/analyze", b'{"text": "a", "texts": ["b"]}', 422, "text"),
    ("/v1/analyze", b"{}", 422, "text"),
    ("/v1/analyze", b'{"text": "a", "return_text": "yes"}', 422, "return_text"),
    ("/v1/analyze", b'{"text": "a", "thresholds": {"PER": "high"}}', 422, "thresholds.PER"),
    ("/v1/analyze", b'{"text": "a", "thresholds": {"PER": NaN}}', 422, "thresholds.PER"),
    ("/v1/analyze", b'{"text": "a", "entities": ["PER", "PASSPORT"]}', 400, "entities.1"),
    ("/v1/analyze", b'{"text": "a", "thresholds": {"PASSPORT": 0.5}}', 400, "thresholds.#0"),
    ("/v1/redact", b'{"operators": {}}', 422, "text"),
    ("/v1/redact", b'{"text": "a", "operators": {"PER": {"type": "encrypt"}}}', 400, "operators.PER.type"),
    ("/v1/redact", b'{"text": "a", "operators": {"PASSPORT": {"type": "mask"}}}', 400, "operators.#0"),
    ("/v1/redact", b'{"text": "a", "operators": {"PER": {"type": "mask", "masking_char": "##"}}}', 422, "operators.PER.masking_char"),
    ("/v1/redact", b'{"text": "a", "operators": {"PER": {"type": "replace", "colour": "red"}}}', 422, "operators.PER.#1"),
]


@pytest.mark.parametrize("path,body,status,field", BAD)
def test_serve_bad_input(server, path, body, status, field):
    r = server.post(path, content=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field
    if status == 400:
        assert field.split(".")[-1] in error["message"]
    for sent in (b"PASSPORT", b"encrypt", b"colour", b"txt"):  # names the client made up never come back
        assert sent not in body or sent not in r.content
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_serve_bad_input_streamed_body_and_client_id(server):
    # no Content-Length: the size is counted while reading
    chunks = [b'{"text": "' + b"a" * 5000] * 5 + [b'"}']
    r = server.post("/v1/analyze", content=iter(chunks))
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"
    r = server.post("/v1/analyze", {"text": SENTENCE}, headers={"X-Client-ID": "bad id with spaces"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "X-Client-ID"
    r = server.post("/v1/analyze", {"text": SENTENCE}, headers={"X-Client-ID": "team-a.batch:7"})
    assert r.status_code == 200
    line = next(a for a in server.audit_lines() if a["request_id"] == r.json()["request_id"])
    assert line["client_id"] == "team-a.batch:7" and line["status"] == 200


def test_serve_internal_error_is_500_with_request_id_and_spares_other_requests(server):
    poison = f"{MARKER} John Poisonsmith , SSN 078-05-1120 , lives in Paris ."
    with ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(lambda t: server.post("/v1/analyze", {"text": t}), [poison, SENTENCE])
    assert bad.status_code == 500
    assert bad.json()["request_id"] == bad.headers["x-request-id"]
    assert "Poisonsmith" not in bad.text and "078-05-1120" not in bad.text
    assert good.status_code == 200 and _entities(good) == [("PER", 0, 4), ("LOC", 14, 27)]


# --- the other endpoints --------------------------------------------------------------
def test_serve_entities_config_probes_and_metrics(server):
    ents = [e for e in server.get("/v1/entities").json()["entities"] if "model" in e["sources"]]
    assert [(e["entity_type"], e["threshold"], e["min_threshold"], e["max_threshold"]) for e in ents] == [
        ("LOC", 0.5, 0.1, 1.0), ("ORG", 0.5, 0.3, 1.0), ("PER", 0.5, 0.1, 1.0)
    ]  # fmt: skip
    config = server.get("/v1/config").json()
    assert config["thresholds"] == {"LOC": 0.5, "ORG": 0.5, "PER": 0.5}
    assert len(config["config_hash"]) == 16 and "hash" in config["operators"]["available"]
    assert config["limits"]["max_texts"] == 40
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").json()["config_hash"] == config["config_hash"]
    server.post("/v1/analyze", {"text": SENTENCE})
    assert server.metric("ner_plus_request_duration_seconds_count", endpoint="/v1/analyze", status="200") >= 1
    assert server.metric("ner_plus_entities_total", entity_type="PER", decision="detected") >= 1
    assert server.metric("ner_plus_entity_score_count", entity_type="LOC") >= 1
    assert server.metric("ner_plus_model_info", config_hash=config["config_hash"]) == 1
    assert server.metric("ner_plus_requests_in_flight") == 0


def test_audit_log_rotates_by_size(tmp_path):
    from spacy_ner_plus.service.observability import make_audit_logger

    logger = make_audit_logger(str(tmp_path / "audit.jsonl"), max_bytes=500, backups=2)
    for i in range(100):
        logger.info(json.dumps({"i": i}))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 500 for p in tmp_path.iterdir())


# --- the page (3b), in a real headless browser ----------------------------------------
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_serve_page_analyze_slider_redact_in_a_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            # the page's /v1 calls are audited like any other: the leak test accounts for them
            page.on("response", lambda r: "/v1/" in r.url and server.request_ids.append(r.headers["x-request-id"]))
            server.sent.add(SENTENCE2)
            page.goto(server.base + "/")
            page.wait_for_selector("#slider-ORG", timeout=30_000)
            page.fill("#text", SENTENCE2)
            page.click("#analyze")
            page.wait_for_selector("#entities[data-ready='1']", timeout=60_000)
            marks = page.locator("mark.entity")
            assert [(m.get_attribute("data-type"), m.evaluate("m => m.firstChild.textContent")) for m in marks.all()] == [
                ("PER", "Mary"), ("ORG", "Acme Corp"), ("LOC", "Paris")
            ]  # fmt: skip
            assert page.locator("mark.entity[data-type='ORG'] .label").inner_text().startswith("ORG 1.00")
            # ORG's score is just under 1: at the top of its slider it disappears, and comes back
            page.fill("#slider-ORG", "1")
            assert page.locator("mark.entity").count() == 2 and page.locator("mark.entity[data-type='ORG']").count() == 0
            assert page.locator("#value-ORG").inner_text() == "1.00"
            page.select_option("#operator", "mask")
            page.click("#redact")
            page.wait_for_selector("#redacted[data-ready='1']", timeout=60_000)
            assert page.locator("#redacted").inner_text() == "**** works for Acme Corp in ***** ."
            page.fill("#slider-ORG", "0.5")
            assert page.locator("mark.entity[data-type='ORG']").count() == 1
            assert page.locator("#error").inner_text() == ""
            # the page loads nothing but itself and the /v1 endpoints
            assert all(u.startswith(server.base + "/") for u in requests)
            assert {u[len(server.base) :] for u in requests} == {"/", "/v1/entities", "/v1/config", "/v1/analyze", "/v1/redact"}
        finally:
            browser.close()


# --- shutdown and leaks (these stop the module's server: keep them last) ------------
def test_serve_graceful_shutdown_finishes_requests_in_flight(server):
    texts = [f"{SENTENCE2} {SENTENCE} " * 6 + f"row {i} ." for i in range(40)]
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=server.post("/v1/analyze", {"texts": texts})))
    watcher = httpx.Client(base_url=server.base, timeout=10)
    worker.start()
    seen_in_flight = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker.is_alive() and not seen_in_flight:
        seen_in_flight = "ner_plus_requests_in_flight 1.0" in watcher.get("/metrics").text
        time.sleep(0.005)
    watcher.close()
    assert seen_in_flight, "the request finished before it could be seen in flight"
    server.proc.send_signal(signal.SIGTERM)
    worker.join(REQUEST_TIMEOUT_S)
    assert result["r"].status_code == 200
    assert len(result["r"].json()["results"]) == 40 and all(result["r"].json()["results"])
    # uvicorn re-raises the signal once it has drained and shut the app down
    assert server.proc.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.stderr.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base}/healthz", timeout=2)


def test_serve_no_pii_in_audit_log_or_server_output(server):
    if server.proc.poll() is None:
        pii = {"text": "Mail anna.keller@example.com or call +49 30 1234567 , IBAN DE89370400440532013000 ."}
        server.post("/v1/analyze", pii)
        server.post("/v1/redact", pii)
    server.stop()
    logs = {p.name: p.read_text(encoding="utf8") for p in sorted(server.tmp.glob("audit.jsonl*"))}
    logs["stdout"] = server.stdout.read_text(encoding="utf8", errors="replace")
    logs["stderr"] = server.stderr.read_text(encoding="utf8", errors="replace")
    secrets = set(server.sent) | {"John", "Mary", "Acme Corp", "Poisonsmith", "078-05-1120", HASH_RING.token("ORG", "Acme Corp"), HASH_KEY.decode()}
    secrets |= {"PASSPORT", "encrypt", "colour", "bad id with spaces"}  # names from bad requests: answered, never logged
    assert server.sent  # this test sent PII itself if no earlier test did
    for name, content in logs.items():
        for secret in secrets:
            assert secret not in content, f"{secret!r} found in {name}"
    # one audit line per /v1 request, each with the fields the issue lists
    audit = [json.loads(line) for line in logs["audit.jsonl"].splitlines()]
    ids = [a["request_id"] for a in audit]
    assert sorted(ids) == sorted(set(server.request_ids)) and len(ids) == len(set(ids))
    assert {"time", "request_id", "client_id", "endpoint", "status", "config_hash", "latency_ms"} <= set(audit[0])
    assert any(a["status"] == 500 and a["error"] == "internal" for a in audit)
    assert "internal error RuntimeError" in logs["stderr"]
