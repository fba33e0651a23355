"""Issue 29 section 3 against a real server (uvicorn on loopback, the tiny PER/LOC/ORG pipeline):
offset units, ad-hoc recognisers and allow lists in /v1/analyze and /v1/redact, the policy's
lists, the decision process, batch and structured (JSON) redaction, windowed long texts."""
import json

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("regex")

from test_service_policy import Server, save_with_half_thresholds  # noqa: E402

SENTENCE = "John lives in New York City ."
SENTENCE2 = "Mary works for Acme Corp in Paris ."
POLICY = """
[default]
allow_list = ["Paris"]

[types.LOC]
always_redact = false
client_may_exclude = true
client_allow_list = true
operators = ["replace", "mask", "keep"]

[types.ORG]
deny_list = ["Project Bluebird"]
"""
TICKETS = {
    "name": "tickets", "supported_language": "en", "supported_entity": "TICKET_ID",
    "patterns": [{"name": "tck", "regex": r"TCK-\d{6}", "score": 0.3}], "context": ["ticket"], "deny_list": ["Zoë"],
}  # fmt: skip


@pytest.fixture(scope="module")
def server(trained_nlp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features-serve")
    save_with_half_thresholds(trained_nlp, tmp / "model")
    (tmp / "policy.toml").write_text(POLICY)
    srv = Server(tmp, model=str(tmp / "model"), audit_log=str(tmp / "audit.jsonl"), policy=str(tmp / "policy.toml"), max_json_strings=8, max_thresholds={"": 1.0})
    srv.tmp = tmp
    yield srv
    srv.stop()


def _audit(server, request_id):
    lines = [json.loads(line) for line in (server.tmp / "audit.jsonl").read_text().splitlines()]
    return next(a for a in lines if a["request_id"] == request_id)


def test_offset_units_on_astral_and_cjk_text(server):
    text = "😀 東京 Zoë ticket TCK-123456"
    got = {}
    for unit in ("codepoint", "utf16", "byte"):
        r = server.post("/v1/analyze", {"text": text, "ad_hoc_recognizers": [TICKETS], "offset_unit": unit, "entities": ["TICKET_ID"]})
        assert r.status_code == 200, r.text
        got[unit] = [(e["start"], e["end"]) for e in r.json()["results"]]
    assert got["codepoint"] == [(5, 8), (16, 26)]
    assert got["utf16"] == [(6, 9), (17, 27)]  # 😀 is two UTF-16 code units
    assert got["byte"] == [(12, 16), (24, 34)]  # 😀 4 bytes, 東京 6, ë 2
    encoded = text.encode("utf-16-le")
    assert [encoded[2 * s : 2 * e].decode("utf-16-le") for s, e in got["utf16"]] == ["Zoë", "TCK-123456"]
    r = server.post("/v1/analyze", {"text": text, "offset_unit": "utf32"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "offset_unit"


def test_decision_process_model_and_ad_hoc(server):
    text = f"{SENTENCE} My ticket is TCK-123456 ."
    r = server.post("/v1/analyze", {"text": text, "ad_hoc_recognizers": [TICKETS], "return_decision_process": True, "thresholds": {"LOC": 0.4}, "return_text": True})
    assert r.status_code == 200, r.text
    body = r.json()
    by_text = {e["text"]: e for e in body["results"]}
    john, nyc, ticket = by_text["John"], by_text["New York City"], by_text["TCK-123456"]
    assert john["decision_process"]["source"] == "model" and john["decision_process"]["threshold_from"] == "pipeline"
    assert nyc["decision_process"]["threshold_from"] == "request" and nyc["decision_process"]["threshold"] == 0.4
    for e in (john, nyc):
        process = e["decision_process"]
        assert process["raw_score"] is not None and process["calibration"] == "none" and process["n_windows"] == 1
        assert process["decoding_bias"] == 0.0
        assert process["windows"] == {"covering": 1, "agreeing": 1}
    assert ticket["source"] == "ad_hoc" and ticket["threshold"] is None
    assert ticket["decision_process"] == {
        "source": "ad_hoc", "score": 0.65, "raw_score": 0.3, "recognizer": "tickets", "pattern": "tck",
        "context_word": "ticket", "threshold": None, "threshold_from": "rule",
    }  # fmt: skip
    assert body["n_windows"] == 1
    # without the flag, no explanation
    r = server.post("/v1/analyze", {"text": text})
    assert all("decision_process" not in e for e in r.json()["results"])


def test_long_text_says_it_was_windowed_and_finds_entities_throughout(server):
    text = " ".join([SENTENCE] * 60)  # 420 tokens: several windows of 128
    r = server.post("/v1/analyze", {"text": text, "return_decision_process": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_windows"] > 1
    people = [e for e in body["results"] if e["entity_type"] == "PER"]
    assert len(people) == 60 and people[-1]["start"] == text.rindex("John")  # nothing truncated
    assert max(e["decision_process"]["windows"]["covering"] for e in people) >= 2
    audit = _audit(server, body["request_id"])
    assert audit["windowed_texts"] == 1


def test_unsafe_pattern_refused_with_its_path_and_not_quoted(server):
    bad = {**TICKETS, "patterns": [TICKETS["patterns"][0], {"name": "boom", "regex": r"(\w+\s?)*$", "score": 0.5}]}
    r = server.post("/v1/analyze", {"text": SENTENCE, "ad_hoc_recognizers": [bad]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["kind"], err["field"]) == ("unsafe_pattern", "ad_hoc_recognizers[0].patterns[1].regex")
    assert r"\w+\s?" not in r.text


def test_allow_list_analyze_and_the_policy_on_redact(server):
    r = server.post("/v1/analyze", {"text": SENTENCE, "allow_list": ["John"]})
    assert r.status_code == 200 and [e["entity_type"] for e in r.json()["results"]] == ["LOC"]
    assert r.json()["allow_list"] == {"removed": 1, "kept_by_policy": 0}
    # on /v1/redact the policy lets LOC be cleared, never PER, however the list is written
    r = server.post("/v1/redact", {"text": SENTENCE, "allow_list": [".*"], "allow_list_match": "regex"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "<PER> lives in New York City ." and body["allow_list"] == {"removed": 1, "kept_by_policy": 1}
    # an allow list for a redaction whose reported types all forbid one is refused
    r = server.post("/v1/redact", {"text": SENTENCE, "allow_list": ["John"], "entities": ["PER", "ORG"]})
    assert r.status_code == 403 and r.json()["error"]["field"] == "allow_list"
    assert "types.ORG.client_allow_list" in r.json()["error"]["message"] or "default.client_allow_list" in r.json()["error"]["message"]


def test_policy_deny_and_allow_lists(server):
    text = f"{SENTENCE2} Project Bluebird ."
    r = server.post("/v1/analyze", {"text": text, "return_text": True, "return_decision_process": True})
    assert r.status_code == 200, r.text
    found = {(e["text"], e["entity_type"], e["source"]) for e in r.json()["results"]}
    assert ("Project Bluebird", "ORG", "deny_list") in found
    assert not any(t == "Paris" for t, _, _ in found)  # the policy's allow list
    deny = next(e for e in r.json()["results"] if e["source"] == "deny_list")
    assert deny["decision_process"]["recognizer"] == "policy deny_list"


def test_batch_redaction_one_result_per_text(server):
    r = server.post("/v1/redact", {"texts": [SENTENCE, SENTENCE2, ""], "return_decision_process": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["text"] for x in results] == ["<PER> lives in <LOC> .", "<PER> works for <ORG> in Paris .", ""]
    assert [len(x["items"]) for x in results] == [2, 2, 0] and [x["n_windows"] for x in results] == [1, 1, 0]
    assert results[0]["entities"][0]["decision_process"]["source"] == "model"


def test_structured_json_redacted_in_place(server):
    records = [
        {"id": 7, "name": "John", "note": SENTENCE, "meta": {"city": "Paris", "tags": ["Mary works for Acme Corp ."]}},
        {"id": 8, "name": "Mary", "note": None, "internal": SENTENCE},
    ]
    r = server.post("/v1/redact", {"json": records, "exclude_fields": ["internal"]})
    assert r.status_code == 200, r.text
    body = r.json()
    out = body["json"]
    assert out[0]["id"] == 7 and out[0]["note"] == "<PER> lives in <LOC> ." and out[0]["meta"]["city"] == "Paris"
    assert out[0]["meta"]["tags"] == ["<PER> works for <ORG> ."]
    assert out[1]["internal"] == SENTENCE and out[1]["note"] is None  # excluded, and not a string
    assert {i["path"] for i in body["items"]} >= {"json[0].note", "json[0].meta.tags[0]"}
    assert body["n_windows"]["json[0].note"] == 1
    # fields: only these keys (and what is under them)
    r = server.post("/v1/analyze", {"json": records, "fields": ["note"]})
    assert r.status_code == 200, r.text
    shaped = r.json()["results"]
    assert [e["entity_type"] for e in shaped[0]["note"]] == ["PER", "LOC"] and shaped[0]["name"] is None and shaped[0]["id"] is None
    # more strings than --max-json-strings (8 here)
    r = server.post("/v1/analyze", {"json": [{"a": "x"}] * 9})
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_many_texts"
    r = server.post("/v1/analyze", {"json": "just a string"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "json"
    r = server.post("/v1/analyze", {"text": SENTENCE, "fields": ["a"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "fields"


def test_ad_hoc_types_in_redaction_and_audit(server):
    text = "ticket TCK-123456 for John"
    r = server.post("/v1/redact", {"text": text, "ad_hoc_recognizers": [TICKETS], "operators": {"TICKET_ID": {"type": "redact"}}})
    assert r.status_code == 200, r.text
    body = r.json()
    # the ticket is gone (the tiny model may also tag words around it: overlapping entities are one region)
    assert "TCK-123456" not in body["text"] and body["text"].endswith(" for <PER>")
    audit = _audit(server, body["request_id"])
    # the request's own type names reach neither the audit log nor the metrics
    assert "TICKET_ID" not in json.dumps(audit) and audit["entities"]["AD_HOC"]["detected"] == 1 and audit["ad_hoc_recognizers"] == 1
    assert "TICKET_ID" not in server.client.get("/metrics").text


def test_a_decoding_bias_is_explained_shown_and_part_of_the_config_hash(trained_nlp):
    from spacy_ner_plus.service.analysis import decision_process
    from spacy_ner_plus.service.decision import Candidate, ServedModel

    pipe, tokenizer = trained_nlp.get_pipe("ner_plus"), trained_nlp.tokenizer
    saved = pipe.cfg.get("decoding_bias")
    try:  # ServedModel guards the tokenizer in place: the session's pipeline gets its own back
        plain = ServedModel(trained_nlp, "model", {}, {})
        pipe.cfg["decoding_bias"] = {"PER": 1.5}
        biased = ServedModel(trained_nlp, "model", {}, {})
    finally:
        pipe.cfg["decoding_bias"], trained_nlp.tokenizer = saved, tokenizer
    assert plain.decoding_bias == {"PER": 0.0, "LOC": 0.0, "ORG": 0.0} and biased.decoding_bias["PER"] == 1.5
    assert biased.config_hash != plain.config_hash  # the bias changes which entities there are
    person, place = (Candidate(0, 4, label, 0.9, "model", raw_score=0.95, windows=(1, 1)) for label in ("PER", "LOC"))
    assert decision_process(person, 0.5, biased, [], 1, 4)["decoding_bias"] == 1.5
    assert decision_process(place, 0.5, biased, [], 1, 4)["decoding_bias"] == 0.0
