"""Locust users for bench/service/load_test.py: normal and adversarial requests to the PII service.

Run by load_test.py (``locust -f bench/service/locustfile.py --headless ...``) with these environment
variables: ``LOAD_API_KEY`` (a key the server accepts), ``LOAD_OUT`` (a folder: each locust process
writes ``samples-<pid>.jsonl``, one line per request: name, status, error kind, milliseconds,
X-Request-ID, failure, end time) and ``LOAD_ADVERSARIAL_CHARS`` (the size of the adversarial texts, default
100,000). Status 0 is a request that got no answer (connection closed or locust stopping).

An answer counts as a locust failure when it is a 500, a status the service does not document, an
error not in the documented ``{"error": {kind, message, field}, "request_id"}`` form, or an error that
quotes the request. Documented refusals (400, 401, 403, 413, 415, 421, 422, 503) are successes, counted by
kind: under attack the service must refuse, not break.
"""
import json
import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, events, task

DOCUMENTED = {200, 400, 401, 403, 404, 405, 413, 415, 421, 422, 503}
SIZE = int(os.environ.get("LOAD_ADVERSARIAL_CHARS", "100000"))
KEY = os.environ.get("LOAD_API_KEY", "")
OUT = Path(os.environ.get("LOAD_OUT", "."))
MARK = "Zyxwvut"  # in every adversarial body: an error answer must never quote it

NORMAL = [
    "Anna Keller from Helios Bank wrote to anna.keller@example.com about the office in Berlin on 3 May 2021 .",
    "Call John Smith on +1 212 555 0147 or write to 5th Avenue 12 , New York .",
    "Mary Jones ( SSN 078-05-1120 ) paid with 4111 1111 1111 1111 on 2020-04-01 .",
    "The meeting with Dr. Ahmed Karim at Northwind Ltd moved to Thursday .",
    "IBAN DE89 3704 0044 0532 0130 00 belongs to Lena Vogel , Hamburg .",
]


def _adversarial(size: int):
    """The issue's slow inputs, ``size`` characters each (issue 28, finding 1), plus the edge cases."""
    return {
        "parens": "(" * size,
        "emails": " ".join(f"user{i}@example.com" for i in range(size // 20)),
        "phone_junk": "1 " * (size // 2) + "call +1 212 555 0147",
        "iban_words": " ".join("DE89 AB12" for _ in range(size // 10)),
        "url_parens": "http://a.bc/" + ")" * size,
    }


ADVERSARIAL = _adversarial(SIZE)
samples = []


def _record(response, name: str, ms: float) -> None:
    kind = ""
    failure = None
    if response.status_code not in DOCUMENTED or response.status_code == 500:
        failure = f"undocumented status {response.status_code}"
    if response.status_code >= 400:
        try:
            body = response.json()
            kind = body["error"]["kind"]
            ok_form = set(body) == {"error", "request_id"} and set(body["error"]) == {"kind", "message", "field"}
        except (ValueError, KeyError, TypeError):
            ok_form = False
        if not ok_form:
            failure = f"{response.status_code}: not the documented error format"
        elif MARK in response.text:
            failure = f"{response.status_code} {kind}: the error quotes the request"
    samples.append({"name": name, "status": response.status_code, "kind": kind, "ms": round(ms, 2), "request_id": response.headers.get("x-request-id"), "failure": failure, "end": time.time()})
    if failure is None:
        response.success()
    else:
        response.failure(failure)


class Client(HttpUser):
    wait_time = between(0.05, 0.3)

    def _post(self, path: str, name: str, body=None, content=None, headers=None):
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
        data = content if content is not None else json.dumps(body).encode("utf8")
        started = time.perf_counter()
        with self.client.post(path, data=data, headers=headers, name=name, catch_response=True) as response:
            _record(response, name, (time.perf_counter() - started) * 1000)

    @task(20)
    def analyze_normal(self):
        self._post("/v1/analyze", "/v1/analyze normal", {"text": random.choice(NORMAL), "return_text": random.random() < 0.5})

    @task(8)
    def redact_normal(self):
        ops = {"DEFAULT": {"type": random.choice(["replace", "mask", "redact"])}}
        self._post("/v1/redact", "/v1/redact normal", {"text": " ".join(random.sample(NORMAL, 3)), "operators": ops})

    @task(4)
    def analyze_batch(self):
        self._post("/v1/analyze", "/v1/analyze texts", {"texts": random.choices(NORMAL, k=16)})

    @task(2)
    def adversarial_text(self):
        name, text = random.choice(sorted(ADVERSARIAL.items()))
        self._post("/v1/analyze", f"/v1/analyze adversarial {name}", {"text": f"{MARK} {text}"})

    @task(1)
    def huge_replacement(self):
        ops = {"DEFAULT": {"type": "replace", "new_value": MARK * (SIZE // len(MARK))}}
        self._post("/v1/redact", "/v1/redact huge new_value", {"text": " ".join(NORMAL), "operators": ops})

    @task(2)
    def malformed(self):
        case = random.choice(["nested", "surrogate", "bad_utf8", "plain_text", "no_key", "dict_key", "unknown_type"])
        if case == "nested":
            self._post("/v1/analyze", "/v1/analyze nested", content=b"[" * 200_000)
        elif case == "surrogate":
            self._post("/v1/analyze", "/v1/analyze surrogate", content=f'{{"text": "\\ud800 {MARK}"}}'.encode())
        elif case == "bad_utf8":
            self._post("/v1/analyze", "/v1/analyze bad utf8", content=b'{"text": "\xff ' + MARK.encode() + b'"}')
        elif case == "plain_text":
            self._post("/v1/analyze", "/v1/analyze text/plain", content=f'{{"text": "{MARK}"}}'.encode(), headers={"Content-Type": "text/plain"})
        elif case == "no_key":
            self._post("/v1/analyze", "/v1/analyze no key", {"text": MARK}, headers={"Authorization": "Bearer wrong"})
        elif case == "dict_key":
            self._post("/v1/analyze", "/v1/analyze pii dict key", {"text": "a", "thresholds": {f"{MARK} 234-45-6789": "x"}})
        else:
            self._post("/v1/analyze", "/v1/analyze unknown type", {"text": "a", "entities": [f"{MARK} Smith"]})


@events.quitting.add_listener
def _write(environment, **kwargs):
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"samples-{os.getpid()}.jsonl", "w", encoding="utf8") as out:
        for sample in samples:
            out.write(json.dumps(sample) + "\n")
