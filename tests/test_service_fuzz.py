"""The running PII service fuzzed from its own OpenAPI schema with schemathesis (issue 28, "tested as an
attacker would"): for every operation, valid and invalid requests generated from the schema, sent with
an API key to a real server on 127.0.0.1. No answer is a 500, every answer's status, content type and
body match the schema, and no error answer quotes a string of the request. Bounded: a fixed number of
examples per operation (``FUZZ_EXAMPLES``), derandomized, so a run takes well under a minute on a
quiet machine.
"""
import json
import subprocess
import sys

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from spacy_ner_plus.service.analysis import FEATURE_NAMES  # noqa: E402
from spacy_ner_plus.service.presidio_api import presidio_field_names  # noqa: E402
from spacy_ner_plus.service.requests import strings_in  # noqa: E402
from test_service_edge import _env, _free_port, _save, _serve_cmd, _stop, _wait_ready  # noqa: E402

FUZZ_EXAMPLES = {"positive": 30, "negative": 20}
# names the server publishes itself (fields, types, operators): an error may name them
PUBLIC_NAMES = {"text", "texts", "entities", "thresholds", "return_text", "operators", "type", "DEFAULT", "new_value", "masking_char", "chars_to_mask", "from_end"}
PUBLIC_NAMES |= FEATURE_NAMES  # issue 29's request fields and the values they take
# the fields of the Presidio-compatible endpoints' bodies (service/presidio_api.py)
PUBLIC_NAMES |= presidio_field_names()


@pytest.fixture(scope="module")
def fuzz_server(trained_nlp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    model = _save(trained_nlp, tmp / "model", {"PER": 0.5, "LOC": 0.5, "ORG": 0.5})
    keys = tmp / "api-keys"
    made = subprocess.run(
        [sys.executable, "-m", "spacy_ner_plus.service.auth", "add", "fuzzer", "--file", str(keys)],
        capture_output=True, text=True, env=_env(), timeout=60, check=True,
    )  # fmt: skip
    key = made.stdout.strip()
    port = _free_port()
    stderr = tmp / "stderr.txt"
    cmd = _serve_cmd(model, "--port", port, "--api-keys", keys, "--torch-threads", 1, "--max-body-bytes", 200_000, "--request-timeout", 30)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(stderr, "wb"), env=_env())
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, stderr)
        yield base, {"Authorization": f"Bearer {key}"}, stderr
    finally:
        _stop(proc)


def _no_echo(case, response, labels) -> None:
    """An error answer quotes no string the client sent (but may name fields and known types)."""
    if response.status_code < 400:
        return  # answers carry offsets, entity text on request (return_text) and the redacted text
    body = case.body if isinstance(case.body, (dict, list, str)) else None
    for sent in set(strings_in(body)) - PUBLIC_NAMES - labels:
        if len(sent.strip()) < 6:
            continue  # too short to be told apart from the server's own words
        for form in (sent, json.dumps(sent)[1:-1]):
            assert form not in response.text, f"{case.operation.label} {response.status_code} echoes a request string"


def test_service_fuzz_every_operation_from_the_openapi_schema(fuzz_server):
    import httpx
    from schemathesis import GenerationMode
    from schemathesis import checks as st_checks

    base, auth, stderr = fuzz_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=auth, timeout=30)
    labels = {e["entity_type"] for e in httpx.get(f"{base}/v1/entities", headers=auth, timeout=30).json()["entities"]}
    checks = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/analyze", "POST /v1/redact", "GET /v1/entities", "GET /v1/config", "GET /readyz", "POST /analyze", "POST /anonymize", "GET /supportedentities"}
    statuses = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # a GET without parameters has no invalid form

            @settings(
                max_examples=FUZZ_EXAMPLES[mode.value], deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(base_url=base, headers=auth, timeout=60)
                case.validate_response(response, checks=checks, headers=auth)
                _no_echo(case, response, labels)
                statuses.setdefault(operation.label, set()).add(response.status_code)

            fuzz()
    # the fuzzer reached the model and the error paths, not only one of them
    assert 200 in statuses["POST /v1/analyze"] and statuses["POST /v1/analyze"] - {200}
    assert "internal error" not in stderr.read_text()
