"""The PII service's edges, tried as an attacker and as a new user would (issue 28, findings 5, 7, 8).

Each test names the finding it checks; each failed on the code before the fix (the old server stayed
up on a model it could not serve, answered text/plain POSTs, had no keys, echoed dict keys, ...).
One server per module: the tiny ``trained_nlp`` pipeline saved uncalibrated (every threshold 0),
with a ``--code`` component that sleeps on a marker so that deadlines and stalls can be provoked.
"""
import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
from service_helpers import metric_value, wait_ready  # noqa: E402
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

# importing pii_patterns always succeeds (it imports phonenumbers only when it looks for a
# number): ask for the optional library itself
HAVE_PATTERNS = importlib.util.find_spec("phonenumbers") is not None

SLEEP_MARKER = "SLEEPYTEXT"
SLEEP_S = 6.0
REQUEST_TIMEOUT_S = 3.0
STALL_TIMEOUT_S = 1.0
QUEUE_CHARS = 20_000
SLEEP_COMPONENT = f'''
import time
from spacy.language import Language


@Language.component("edge_test_sleep_on_marker")
def sleep_on_marker(doc):
    if "{SLEEP_MARKER}" in doc.text:
        time.sleep({SLEEP_S})
    return doc
'''
SENTENCE = "John lives in New York City ."
PII_KEY = "John Smith 234-45-6789"  # a dict key a client sends: must never come back
READY_TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_cmd(*args) -> list:
    return [sys.executable, "-m", "spacy_ner_plus", "serve", *map(str, args)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NER_PLUS_HASH_KEY", "PROMETHEUS_MULTIPROC_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _wait_ready(proc, base: str, stderr: Path, timeout: float = READY_TIMEOUT_S) -> None:
    wait_ready(proc, base, stderr, timeout)


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _save(nlp, path: Path, thresholds: dict, extra_pipes=()) -> Path:
    """``nlp`` saved to ``path`` with ``thresholds`` (cfg restored afterwards)."""
    pipe = nlp.get_pipe("ner_plus")
    saved = copy.deepcopy(pipe.cfg["thresholds"])
    pipe.cfg["thresholds"] = dict(thresholds)
    added = []
    for name, first in extra_pipes:
        nlp.add_pipe(name, first=True) if first else nlp.add_pipe(name, last=True)
        added.append(name)
    try:
        nlp.to_disk(path)
    finally:
        for name in added:
            nlp.remove_pipe(name)
        pipe.cfg["thresholds"] = saved
    return path


def _is_error(response, status: int, kind: str) -> dict:
    """The documented error format, not FastAPI's {"detail": ...}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"} and "detail" not in body
    assert body["error"]["kind"] == kind and set(body["error"]) == {"kind", "message", "field"}
    assert body["request_id"] == response.headers["x-request-id"]
    return body["error"]


class EdgeServer:
    def __init__(self, tmp: Path, model_dir: Path, code: Path) -> None:
        self.tmp = tmp
        self.model_dir = model_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.keys_file = tmp / "api-keys"
        self.keys = {}
        for client in ("edge-tests", "other-team"):
            made = subprocess.run(
                [sys.executable, "-m", "spacy_ner_plus.service.auth", "add", client, "--file", str(self.keys_file)],
                capture_output=True, text=True, env=_env(), timeout=60, check=True,
            )  # fmt: skip
            self.keys[client] = made.stdout.strip()
        self.audit = tmp / "audit.jsonl"
        self.stderr = tmp / "stderr.txt"
        cmd = _serve_cmd(
            model_dir, "--host", "127.0.0.1", "--port", self.port, "--api-keys", self.keys_file, "--audit-log", self.audit,
            "--request-timeout", REQUEST_TIMEOUT_S, "--stall-timeout", STALL_TIMEOUT_S, "--queue-chars", QUEUE_CHARS,
            "--max-body-bytes", 400_000, "--code", code, "--torch-threads", 1,
        )  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.stderr, "wb"), env=_env())
        _wait_ready(self.proc, self.base, self.stderr)
        self.auth = {"Authorization": f"Bearer {self.keys['edge-tests']}"}
        self.client = httpx.Client(base_url=self.base, timeout=60, headers=self.auth)

    def post(self, path, body=None, *, content=None, headers=None):
        if body is not None:
            content = json.dumps(body).encode("utf8")
        return self.client.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})

    def metric(self, name: str, **labels) -> float:
        return metric_value(self.client, name, **labels)

    def audit_line(self, request_id: str) -> dict:
        for line in self.audit.read_text(encoding="utf8").splitlines():
            record = json.loads(line)
            if record["request_id"] == request_id:
                return record
        raise AssertionError(f"no audit record for {request_id}")


@pytest.fixture(scope="module")
def edge_model(trained_nlp, tmp_path_factory):
    import spacy

    tmp = tmp_path_factory.mktemp("edge")
    code = tmp / "sleepy.py"
    code.write_text(SLEEP_COMPONENT)
    spacy.util.import_file("edge_test_components", str(code))
    pipes = [("edge_test_sleep_on_marker", False)] + ([("pii_patterns", True)] if HAVE_PATTERNS else [])
    # uncalibrated, as `spacy train` leaves model-best: every threshold 0, no calibration
    model = _save(trained_nlp, tmp / "model", {"PER": 0.0, "LOC": 0.0, "ORG": 0.0}, pipes)
    # a calibrated pipeline with a threshold of 0.000 for one type (CREDIT_CARD in the real one)
    calibrated = _save(trained_nlp, tmp / "model-calibrated", {"PER": 0.5, "LOC": 0.0, "ORG": 0.4}, pipes)
    return tmp, model, calibrated, code


@pytest.fixture(scope="module")
def server(edge_model):
    tmp, model, _, code = edge_model
    srv = EdgeServer(tmp, model, code)
    yield srv
    srv.client.close()
    _stop(srv.proc)


# --- finding 8: fail fast and say why ------------------------------------------------------
def test_edge_settings_that_cannot_serve_exit_non_zero_with_the_reason(edge_model):
    tmp, _, calibrated, code = edge_model
    port = _free_port()
    cmd = _serve_cmd(calibrated, "--port", port, "--min-threshold", "0.05", "--code", code, "--torch-threads", 1)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the server stayed up on settings it cannot serve (every /v1 call would answer 503 'retry')")
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "threshold bounds of LOC" in out and "min (0.05)" in out, out[-3000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)


def test_edge_wait_for_model_answers_the_reason_and_no_retry_hint(edge_model):
    from starlette.testclient import TestClient

    from spacy_ner_plus.service.app import create_app
    from spacy_ner_plus.service.settings import ServeSettings

    tmp, _, calibrated, code = edge_model
    settings = ServeSettings(model=str(calibrated), min_thresholds={"": 0.05}, code=str(code), wait_for_model=True, allowed_hosts=["testserver"])
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while (ready := client.get("/readyz")).json()["status"] == "loading" and time.monotonic() < deadline:
            assert ready.headers.get("retry-after") == "1"  # loading: a retry helps
            time.sleep(0.2)
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "threshold bounds of LOC" in ready.json()["reason"] and "retry-after" not in ready.headers
        r = client.post("/v1/analyze", json={"text": SENTENCE})
        error = _is_error(r, 503, "model_unavailable")
        assert "threshold bounds of LOC" in error["message"] and "retry" not in error["message"].lower()
        assert "retry-after" not in r.headers
        for response in (ready, r):
            assert str(calibrated) not in response.text and str(tmp) not in response.text


def test_edge_uncalibrated_pipeline_warns_at_start(server):
    assert "serving an uncalibrated pipeline" in server.stderr.read_text()


def test_edge_responses_carry_no_server_path(server):
    for r in (server.client.get("/v1/config"), server.post("/v1/analyze", {"text": SENTENCE})):
        assert r.status_code == 200
        assert "path" not in r.json()["model"]
        assert str(server.model_dir) not in r.text and str(server.tmp) not in r.text


def test_edge_404_and_405_in_the_documented_error_format(server):
    _is_error(server.client.get("/v1/nothing-here"), 404, "not_found")
    r = server.client.get("/v1/analyze")
    _is_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


# --- finding 5: authentication, Host, Content-Type ------------------------------------------
@pytest.mark.parametrize("path", ["/v1/entities", "/v1/config", "/metrics", "/openapi.json"])
def test_edge_without_a_valid_key_every_protected_path_is_401(server, path):
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": server.keys["edge-tests"]}, {"Authorization": "Basic " + server.keys["edge-tests"]}):
        r = httpx.get(server.base + path, headers=headers, timeout=30)
        _is_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert server.client.get(path).status_code == 200
    assert httpx.get(server.base + "/readyz", timeout=30).status_code == 200  # probes need no key


def test_edge_the_audit_log_records_the_keys_client_not_a_header(server):
    r = server.post("/v1/analyze", {"text": SENTENCE}, headers={"X-Client-ID": "someone-else", "Authorization": f"Bearer {server.keys['other-team']}"})
    assert r.status_code == 200
    assert server.audit_line(r.headers["x-request-id"])["client_id"] == "other-team"
    refused = httpx.post(server.base + "/v1/analyze", json={"text": SENTENCE}, headers={"X-Client-ID": "edge-tests"}, timeout=30)
    _is_error(refused, 401, "unauthorized")
    assert server.audit_line(refused.headers["x-request-id"])["client_id"] is None
    stored = server.keys_file.read_text()
    assert all(key not in stored for key in server.keys.values())  # only hashes on disk
    assert oct(server.keys_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin-1"])
def test_edge_a_post_that_is_not_json_is_415_before_the_handler(server, content_type):
    headers = dict(server.auth)
    if content_type:
        headers["content-type"] = content_type
    r = httpx.post(server.base + "/v1/analyze", content=json.dumps({"text": SENTENCE}).encode(), headers=headers, timeout=30)
    _is_error(r, 415, "unsupported_media_type")
    assert "n_texts" not in server.audit_line(r.headers["x-request-id"])  # the handler never ran
    assert server.post("/v1/analyze", {"text": SENTENCE}, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_edge_a_host_that_is_not_allowed_is_421(server):
    for host in ("attacker.example", "attacker.example:80", "127.0.0.2"):
        r = server.client.get("/v1/entities", headers={"Host": host})
        _is_error(r, 421, "host_not_allowed")
    assert server.client.get("/readyz", headers={"Host": "rebind.attacker.example"}).status_code == 421
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "LOCALHOST"):
        assert server.client.get("/v1/entities", headers={"Host": host}).status_code == 200


def test_edge_non_loopback_bind_needs_keys_and_host_names(edge_model):
    tmp, model, _, _ = edge_model
    keys = tmp / "keys-for-bind"
    subprocess.run([sys.executable, "-m", "spacy_ner_plus.service.auth", "add", "x", "--file", str(keys)], capture_output=True, env=_env(), timeout=60, check=True)
    cases = [
        (["--host", "0.0.0.0"], "needs --api-keys"),
        (["--host", "0.0.0.0", "--api-keys", keys], "--allowed-hosts"),
        (["--host", "127.0.0.1", "--api-keys", tmp / "no-such-file"], "cannot read the API key file"),
    ]
    for args, reason in cases:
        try:
            done = subprocess.run(_serve_cmd(model, "--port", _free_port(), *args), capture_output=True, text=True, env=_env(), timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve {args} started instead of refusing")
        assert done.returncode == 1 and reason in done.stdout + done.stderr, done.stdout + done.stderr


# --- finding 7 and "fail closed": nothing echoed, bad bytes 400 before any model work -----------
ECHO_BODIES = [
    ("/v1/analyze", {"text": SENTENCE, "thresholds": {PII_KEY: "high"}}, 422),
    ("/v1/analyze", {"text": SENTENCE, "thresholds": {PII_KEY: 0.5}}, 400),
    ("/v1/analyze", {"text": SENTENCE, "entities": [PII_KEY]}, 400),
    ("/v1/analyze", {"text": SENTENCE, PII_KEY: 1}, 422),
    ("/v1/redact", {"text": SENTENCE, "operators": {PII_KEY: {"type": "mask"}}}, 400),
    ("/v1/redact", {"text": SENTENCE, "operators": {"PER": {"type": PII_KEY}}}, 400),
    ("/v1/redact", {"text": SENTENCE, "operators": {"PER": {"type": "mask", PII_KEY: 1}}}, 422),
    ("/v1/redact", {"text": PII_KEY, "operators": {"PER": {"type": "mask", "masking_char": PII_KEY}}}, 422),
]


@pytest.mark.parametrize("path,body,status", ECHO_BODIES)
def test_edge_errors_never_echo_request_content(server, path, body, status):
    r = server.post(path, body)
    assert r.status_code == status, r.text
    for fragment in (PII_KEY, "234-45-6789", "John Smith", PII_KEY[:10]):
        assert fragment not in r.text


def _batches(server) -> float:
    return server.metric("ner_plus_batch_texts_count")


@pytest.mark.parametrize(
    "content,kind",
    [
        (b'{"text": "\\ud800 John lives in Paris ."}', "invalid_unicode"),
        (b'{"texts": ["fine", "\\udc00"]}', "invalid_unicode"),
        (b'{"text": "a", "thresholds": {"\\ud83d": 0.5}}', "invalid_unicode"),
        (b'{"text": "\xed\xa0\x80 John"}', "invalid_encoding"),  # a surrogate encoded as UTF-8 bytes
        (b'{"text": "\xff John"}', "invalid_encoding"),
        (b"[" * 200_000, "too_deep"),
        (b'{"text": "a", "entities": ' + b"[" * 50 + b"]" * 50 + b"}", "too_deep"),
    ],
)
def test_edge_invalid_unicode_and_deep_nesting_are_400_before_model_work(server, content, kind):
    before = _batches(server)
    r = server.post("/v1/analyze", content=content)
    _is_error(r, 400, kind)
    assert _batches(server) == before
    assert "John" not in r.text


def test_edge_deep_nesting_inside_strings_is_fine(server):
    text = "(" * 20 + "[" * 40 + " John lives in Paris ."
    r = server.post("/v1/analyze", {"text": text})
    assert r.status_code == 200


# --- finding 7: bounded work: deadline, queue of characters, stalled readiness -----------------
def test_edge_deadline_queue_chars_and_stalled_readiness(server):
    batches = server.metric("ner_plus_batch_texts_sum")
    deadline_errors = server.metric("ner_plus_errors_total", kind="deadline_exceeded")
    results = {}

    def send(name, body):
        started = time.monotonic()
        results[name] = (server.post("/v1/analyze", body), time.monotonic() - started)

    # both texts are longer than --long-text-chars (2,000), so they share the long lane's batcher
    sleepy = threading.Thread(target=send, args=("sleepy", {"text": f"{SLEEP_MARKER} John . " + "Paris is big . " * 150}))
    sleepy.start()
    time.sleep(0.5)  # the long lane's batcher is now inside the sleeping batch
    waiting = threading.Thread(target=send, args=("waiting", {"text": "Paris is big . " * 800}))  # 12,000 characters
    waiting.start()
    time.sleep(0.3)
    # the lane's queue counts characters: 12,000 are waiting, 12,000 more pass the limit of 20,000
    over = server.post("/v1/analyze", {"texts": ["Mary is here . " * 400, "Anna is there . " * 400]})
    _is_error(over, 503, "overloaded")
    assert over.headers["retry-after"] == "1"
    too_big = server.post("/v1/analyze", {"texts": ["x" * 15_000, "y" * 15_000]})
    _is_error(too_big, 413, "request_too_large")
    # no batch has finished for longer than --stall-timeout while work waits: not ready, with the reason
    time.sleep(STALL_TIMEOUT_S)
    stalled = httpx.get(server.base + "/readyz", timeout=30)
    assert stalled.status_code == 503 and stalled.json()["status"] == "stalled" and "batch" in stalled.json()["reason"]
    sleepy.join(60)
    waiting.join(60)
    for name in ("sleepy", "waiting"):
        response, seconds = results[name]
        _is_error(response, 503, "deadline_exceeded")
        assert seconds < REQUEST_TIMEOUT_S + 2.0, f"{name} answered after {seconds:.1f} s"
    assert server.metric("ner_plus_errors_total", kind="deadline_exceeded") - deadline_errors == 2
    # the text queued behind the sleeping batch was dropped, never predicted
    deadline = time.monotonic() + 30
    while httpx.get(server.base + "/readyz", timeout=30).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(server.base + "/readyz", timeout=30).status_code == 200
    assert server.metric("ner_plus_batch_texts_sum") - batches == 1
    assert server.post("/v1/analyze", {"text": SENTENCE}).status_code == 200


def test_edge_limits_are_published(server):
    limits = server.client.get("/v1/config").json()["limits"]
    assert limits["queue_chars"] == QUEUE_CHARS and limits["request_timeout_s"] == REQUEST_TIMEOUT_S
    assert limits["max_body_bytes"] == 400_000 and limits["max_json_depth"] == 8


def test_edge_cli_defaults_come_from_serve_settings():
    from typer.main import get_command

    from spacy_ner_plus.cli import app
    from spacy_ner_plus.service.settings import ServeSettings

    defaults = ServeSettings(model="m")
    params = {p.name: p.default for p in get_command(app).commands["serve"].params}
    for name in ("host", "workers", "audit_max_bytes", "audit_backups", "max_body_bytes", "max_texts", "max_json_strings", "batch_tokens", "batch_wait_ms",
                 "queue_chars", "request_timeout", "stall_timeout", "max_json_depth", "wait_for_model"):  # fmt: skip
        assert params[name] == getattr(defaults, name), name


# --- finding 8: the README's serve example works as written ------------------------------------
def _readme_serve_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    section = readme[readme.index("## PII redaction service") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not HAVE_PATTERNS, reason="the README's pipeline has pii_patterns (phonenumbers)")
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example calls curl")
def test_readme_serve_example_runs_as_written(edge_model, tmp_path):
    """The README's serve block, run line by line in a fresh folder where the pipelines the README
    says to build (`spacy project run pii`: training/pii/model-best, model-calibrated) are stand-ins:
    the tiny pipeline with pii_patterns, model-best uncalibrated, model-calibrated with a threshold of 0."""
    _, model, calibrated, code = edge_model
    (tmp_path / "training" / "pii").mkdir(parents=True)
    os.symlink(model, tmp_path / "training" / "pii" / "model-best")
    os.symlink(calibrated, tmp_path / "training" / "pii" / "model-calibrated")
    port = str(_free_port())
    commands = []
    pending = ""
    for line in _readme_serve_block().replace("\\\n", " ").replace("8080", port).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted argument goes on to the next line
            continue
        if words and words[0] not in ("pip", "export"):
            commands.append(words)
        pending = ""
    env = _env()
    env["NER_PLUS_HASH_KEY"] = "0123456789abcdef" * 4
    serve = next(c for c in commands if c[:4] == ["python", "-m", "spacy_ner_plus", "serve"])
    argv = [sys.executable] + serve[1:] + ["--code", str(code)]
    stderr = tmp_path / "stderr.txt"
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(stderr, "wb"), env=env)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", stderr)
        curls = [c for c in commands if c[0] == "curl"]
        assert curls
        for command in curls:
            done = subprocess.run(command + ["-w", "\n%{http_code}"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
            body, _, status = done.stdout.rpartition("\n")
            assert status == "200", f"{command} -> {status} {body}"
            assert "request_id" in json.loads(body)
    finally:
        _stop(proc)


# --- the batcher alone (no model): deadlines, the character queue, stall detection --------------
class _FakeDoc:
    def __init__(self, text):
        self.text = text

    def __len__(self):
        return len(self.text.split())


class _FakeNlp:
    """make_doc/pipe like a Language; a text with "SLOW" holds its batch for ``slow_s``."""

    def __init__(self, slow_s: float):
        self.slow_s = slow_s
        self.predicted = []

    def make_doc(self, text):
        return _FakeDoc(text)

    def pipe(self, docs, batch_size=None):
        docs = list(docs)
        if any("SLOW" in d.text for d in docs):
            time.sleep(self.slow_s)
        self.predicted += [d.text for d in docs]
        return iter(docs)


def test_batcher_drops_expired_texts_counts_characters_and_reports_stalls():
    from spacy_ner_plus.service.batcher import DeadlineExceeded, MicroBatcher, QueueFull

    nlp = _FakeNlp(slow_s=1.5)
    expired = []
    batcher = MicroBatcher(nlp, lambda doc: doc.text, batch_tokens=1000, max_wait_s=0.001, max_queue_chars=100, on_expired=expired.append)
    batcher.start()
    try:
        assert batcher.stalled_for() == 0.0  # idle is not stalled
        (slow,) = batcher.submit(["SLOW one"])
        time.sleep(0.3)  # the batcher is inside the slow batch
        (late,) = batcher.submit(["x" * 60], deadline=time.monotonic() + 0.2)
        with pytest.raises(QueueFull, match="characters"):
            batcher.submit(["y" * 41])  # 60 + 41 > 100: the queue holds characters, not texts
        batcher.submit(["z" * 40])  # 100 fits
        time.sleep(0.5)
        assert batcher.stalled_for() > 0.7  # work waits and no batch finished
        assert slow.result(10) == "SLOW one"
        with pytest.raises(DeadlineExceeded):
            late.result(10)
        deadline = time.monotonic() + 10
        while "z" * 40 not in nlp.predicted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "x" * 60 not in nlp.predicted and "z" * 40 in nlp.predicted  # the expired text was never predicted
        assert expired == [1] and batcher.queued_chars == 0 and batcher.stalled_for() == 0.0
    finally:
        batcher.close(5)


def test_lanes_keep_a_long_text_from_holding_up_short_ones():
    from spacy_ner_plus.service.batcher import Lanes, MicroBatcher, QueueFull

    nlp = _FakeNlp(slow_s=3.0)
    lanes = Lanes(lambda name: MicroBatcher(nlp, lambda doc: doc.text, batch_tokens=1000, max_wait_s=0.001, max_queue_chars=100, name=name), long_chars=20)
    lanes.start()
    try:
        (slow,) = lanes.submit(["SLOW " + "x" * 30])  # longer than 20: the long lane
        time.sleep(0.3)  # the long lane is inside the slow batch
        started = time.monotonic()
        futures = lanes.submit(["short one", "a long text " * 2, "short two"])
        assert futures[0].result(10) == "short one" and futures[2].result(10) == "short two"
        assert time.monotonic() - started < 1.5  # answered beside the slow batch, not after its 3 s
        assert not slow.done() and not futures[1].done()  # the long text queued behind the long one
        assert futures[1].result(10) == "a long text " * 2 and slow.result(10) == "SLOW " + "x" * 30
        # a lane that cannot take its texts refuses the whole request: its other texts are
        # cancelled, dropped by their batcher and never predicted
        with pytest.raises(QueueFull):
            lanes.submit(["short three", "y" * 101])
        deadline = time.monotonic() + 5
        while lanes.queued_chars and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lanes.queued_chars == 0 and lanes.stalled_for() == 0.0 and "short three" not in nlp.predicted
    finally:
        lanes.close(5)


def test_json_depth_is_read_from_the_raw_bytes():
    from spacy_ner_plus.service.requests import json_too_deep

    assert json_too_deep(b"[" * 200_000, 8)
    assert json_too_deep(b'{"a": ' * 9 + b"1" + b"}" * 9, 8)
    assert not json_too_deep(b'{"a": ' * 8 + b"1" + b"}" * 8, 8)
    assert not json_too_deep(b'{"text": "' + b"[{" * 1000 + b'\\" [[[[[[[[[[ "}', 8)  # brackets inside strings, escaped quote
    assert not json_too_deep(b"[]" * 100_000, 8)
