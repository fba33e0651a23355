"""The operator policy (service/policy.py), the hash keys (service/keys.py) and the audit
log failing closed: unit tests, then a few against a real uvicorn server on loopback.

Issue 28: finding 2 (new_value unbounded), 3 (the client decides the policy),
4 (the hash is an oracle: key in the environment, no key id, no rotation, no type
in the HMAC input) and 7's audit part (a failed audit write still answered 200).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_ner_plus.service import keys as keys_module
from spacy_ner_plus.service.keys import HASH_KEY_ENV, HashKeyError, Keyring, derived_key_id, load_keyring, parse_token
from spacy_ner_plus.service.operators import Entity, Operator, RedactionRefused, parse_operators, redact
from spacy_ner_plus.service.policy import BUILT_IN, PolicyError, PolicyViolation, audit_counts, load_policy, policy_from_dict

TYPES = ["LOC", "ORG", "PER"]
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))

DOC = Path(__file__).parent.parent / "docs" / "service-policy.md"


def _doc_blocks(lang):
    """The ```lang blocks of docs/service-policy.md: its examples are tested as written."""
    parts = DOC.read_text(encoding="utf8").split(f"```{lang}\n")[1:]
    return [p.split("```", 1)[0] for p in parts]


FULL_EXAMPLE = _doc_blocks("toml")[0]
KEYRING_EXAMPLE = next(b for b in _doc_blocks("toml") if "signing" in b)


def _ops(spec):
    return parse_operators(spec, TYPES)


# --- the default policy --------------------------------------------------------------
def test_default_policy_redacts_every_type_and_keep_is_off():
    policy = load_policy(None)
    assert policy.source == BUILT_IN and policy.audit_failure == "fail"
    # nothing asked: every type gets the default operator, replace
    resolved = policy.resolve_operators({}, TYPES)
    assert {label: op.name for label, op in resolved.items()} == {"LOC": "replace", "ORG": "replace", "PER": "replace"}
    for spec, field, rule in [
        ({"PER": {"type": "keep"}}, "operators.PER", "default.operators (built-in)"),
        ({"DEFAULT": {"type": "keep"}}, "operators.DEFAULT", "default.operators (built-in)"),
        ({"PER": {"type": "mask", "chars_to_mask": 0}}, "operators.PER.chars_to_mask", "default.always_redact (built-in)"),
        ({"ORG": {"type": "replace", "new_value": "x" * 65}}, "operators.ORG.new_value", "default.max_new_value_chars (built-in)"),
    ]:
        with pytest.raises(PolicyViolation) as err:
            policy.resolve_operators(_ops(spec), TYPES)
        assert (err.value.field, err.value.rule) == (field, rule)
        assert rule in str(err.value) and BUILT_IN in str(err.value)
        assert "x" * 10 not in str(err.value)  # the request's value is never quoted
    # 64 characters is the most
    assert policy.resolve_operators(_ops({"ORG": {"type": "replace", "new_value": "x" * 64}}), TYPES)["ORG"].new_value == "x" * 64


def test_default_policy_entities_cannot_exclude_a_type():
    policy = load_policy(None)
    policy.check_entities(None, TYPES)
    policy.check_entities(TYPES, TYPES)
    with pytest.raises(PolicyViolation) as err:
        policy.check_entities(["PER", "ORG"], TYPES)
    assert err.value.field == "entities" and "LOC" in str(err.value) and err.value.rule == "default.always_redact (built-in)"


def test_default_policy_refuses_replacing_with_the_original_and_masks_everything():
    policy = load_policy(None)
    text = "Anna Keller met Bob"
    ents = [Entity(0, 11, "PER"), Entity(16, 19, "ORG")]
    ops = policy.resolve_operators(_ops({"PER": {"type": "replace", "new_value": "anna keller"}}), TYPES)
    with pytest.raises(RedactionRefused) as err:
        redact(text, ents, ops)
    assert err.value.where == "operators.PER" and "Anna" not in str(err.value)
    # a partial mask is raised to a full one: nothing of an always-redacted type stays visible
    ops = policy.resolve_operators(_ops({"DEFAULT": {"type": "mask", "chars_to_mask": 2}}), TYPES)
    out, items = redact(text, ents, ops)
    assert out == "*" * 11 + " met ***"
    assert [outcome for _, _, outcome in audit_counts(items, ents)] == ["redacted", "redacted"]


# --- a policy file -----------------------------------------------------------------
def test_policy_file_full_example(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(FULL_EXAMPLE)
    policy = load_policy(str(path))
    per, org, loc = policy.for_type("PER"), policy.for_type("ORG"), policy.for_type("LOC")
    assert per.operators == ("replace", "hash") and per.default_operator == Operator("hash") and per.max_new_value_chars == 32
    assert (per.min_threshold, per.max_threshold) == (0.2, 0.8)
    assert org.mask_max_visible == 4 and org.always_redact and org.operators == ("replace", "mask", "redact", "hash")
    assert loc.operators == ("replace", "mask", "keep") and not loc.always_redact and loc.client_may_exclude and loc.mask_max_visible is None
    assert policy.max_output_chars == 2_000_000
    # LOC may be kept and left out; PER may not be masked; ORG's mask shows at most 4 characters
    resolved = policy.resolve_operators(_ops({"LOC": {"type": "keep"}, "ORG": {"type": "mask", "chars_to_mask": 1}}), TYPES)
    assert resolved["LOC"].name == "keep" and resolved["PER"].name == "hash"
    out, _ = redact("Acme Holdings", [Entity(0, 13, "ORG")], resolved)
    assert out == "*" * 9 + "ings"
    policy.check_entities(["PER", "ORG"], TYPES)
    with pytest.raises(PolicyViolation) as err:
        policy.resolve_operators(_ops({"PER": {"type": "mask"}}), TYPES)
    assert err.value.rule == "types.PER.operators" and "types.PER.operators in policy.toml" in str(err.value)
    assert str(path.parent) not in str(err.value)  # a client is not told where the server keeps its files
    with pytest.raises(PolicyViolation) as err:
        policy.check_entities(["LOC", "ORG"], TYPES)
    assert err.value.rule == "default.always_redact"
    # the same policy as YAML
    yaml = pytest.importorskip("yaml")
    import tomllib

    yaml_path = tmp_path / "policy.yaml"
    yaml_path.write_text(yaml.safe_dump(tomllib.loads(FULL_EXAMPLE)))
    assert load_policy(str(yaml_path)).describe(TYPES) == {**policy.describe(TYPES), "source": "policy.yaml"}


@pytest.mark.parametrize(
    "content,where",
    [
        ("colour = 'red'", "unknown key 'colour'"),
        ("version = 2", "version"),
        ("audit_failure = 'ignore'", "audit_failure"),
        ("max_output_chars = 0", "max_output_chars"),
        ("[default]\noperators = ['replace', 'encrypt']", "default.operators[1]: unknown operator 'encrypt'"),
        ("[default]\noperators = ['keep']", "default.operators: 'keep' contradicts default.always_redact (built-in) = true"),
        ("[types.PER]\nalways_redact = true\nclient_may_exclude = true", "types.PER.client_may_exclude = true contradicts types.PER.always_redact"),
        ("[types.PER]\ndefault_operator = { type = 'keep' }", "types.PER.default_operator: this operator leaves the text visible"),
        ("[types.PER]\ndefault_operator = { type = 'mask', chars_to_mask = 0 }", "types.PER.default_operator"),
        ("[types.PER]\ndefault_operator = { type = 'replace', size = 3 }", "types.PER.default_operator: operators.DEFAULT: operator 'replace' has no parameter 'size'"),
        ("[types.PER]\nmin_threshold = 1.5", "types.PER.min_threshold must lie in [0, 1]"),
        ("[types.PER]\nmin_threshold = 0.6\nmax_threshold = 0.4", "types.PER.min_threshold (0.6) is above types.PER.max_threshold"),
        ("[types.PER]\nmax_new_value_chars = '64'", "types.PER.max_new_value_chars must be a whole number"),
        ("[types.PER]\nalways_redact = 1", "types.PER.always_redact must be a boolean"),
        ("[types.PER]\nmask_max_visible = -1", "types.PER.mask_max_visible must be >= 0"),
        ("[types.PER]\nredact = true", "types.PER.redact: unknown key"),
        ("types = 3", "types must be a table"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_policy_file_errors_name_file_and_key(tmp_path, content, where):
    path = tmp_path / "policy.toml"
    path.write_text(content)
    with pytest.raises(PolicyError) as err:
        load_policy(str(path))
    assert str(path) in str(err.value) and where in str(err.value)


def test_policy_file_unreadable_or_wrong_suffix(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(str(tmp_path / "missing.toml"))
    (tmp_path / "policy.json").write_text("{}")
    with pytest.raises(PolicyError, match=r"\.toml, \.yaml or \.yml"):
        load_policy(str(tmp_path / "policy.json"))


def test_policy_bind_checks_types_and_tightens_threshold_bounds():
    policy = policy_from_dict({"types": {"PER": {"min_threshold": 0.2, "max_threshold": 0.8}}}, "p.toml")
    thresholds = {"PER": 0.5, "LOC": 0.5, "ORG": 0.5}
    lows, highs = policy.bind(TYPES, ["EMAIL_ADDRESS"], thresholds, {"": 0.1}, {"": 1.0, "PER": 0.7}, hash_available=False)
    assert (lows["PER"], highs["PER"]) == (0.2, 0.7)  # the tighter of the command line's and the policy's
    assert (lows["LOC"], highs["LOC"]) == (0.1, 1.0)
    with pytest.raises(PolicyError, match=r"p.toml: types.PER.min_threshold: the bounds of PER would be \[0.2, 0.7\]"):
        policy.bind(TYPES, [], {**thresholds, "PER": 0.1}, {}, {"PER": 0.7}, False)
    with pytest.raises(PolicyError, match=r"\[types.PERSON\]: the model has no type PERSON"):
        policy_from_dict({"types": {"PERSON": {}}}, "p.toml").bind(TYPES, [], thresholds, {}, {}, False)
    with pytest.raises(PolicyError, match="EMAIL_ADDRESS is a pattern type"):
        policy_from_dict({"types": {"EMAIL_ADDRESS": {"min_threshold": 0.5}}}, "p.toml").bind(TYPES, ["EMAIL_ADDRESS"], thresholds, {}, {}, False)
    with pytest.raises(PolicyError, match="types.PER.default_operator: the default operator of PER is hash, but the server has no hash key"):
        policy_from_dict({"types": {"PER": {"default_operator": {"type": "hash"}}}}, "p.toml").bind(TYPES, [], thresholds, {}, {}, False)


def test_audit_counts_mask_of_zero_is_not_redacted():
    # finding 3: mask with chars_to_mask 0 was counted as redacted
    permissive = policy_from_dict({"default": {"always_redact": False, "operators": ["mask", "keep", "replace"]}}, "p.toml")
    text = "Anna met Bob in Rome"
    ents = [Entity(0, 4, "PER"), Entity(9, 12, "ORG"), Entity(16, 20, "LOC")]
    ops = permissive.resolve_operators(_ops({"PER": {"type": "mask", "chars_to_mask": 0}, "ORG": {"type": "keep"}, "LOC": {"type": "mask", "chars_to_mask": 2}}), TYPES)
    out, items = redact(text, ents, ops)
    assert out == text[:16] + "**me"
    assert audit_counts(items, ents) == [("PER", "mask", "left_visible"), ("ORG", "keep", "left_visible"), ("LOC", "mask", "partly_redacted")]
    # a region merged from overlapping entities counts for each of them
    ents = [Entity(0, 8, "PER", 0.9), Entity(4, 12, "ORG", 0.5)]
    out, items = redact(text, ents, permissive.resolve_operators(_ops({"DEFAULT": {"type": "replace"}}), TYPES))
    assert out == "<PER> in Rome" and audit_counts(items, ents) == [("PER", "replace", "redacted"), ("ORG", "replace", "redacted")]


# --- hash keys ------------------------------------------------------------------------
def test_keys_at_least_32_bytes_from_a_file(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(HashKeyError, match="has 31 bytes; use at least 32 bytes") as err:
        load_keyring(str(short))
    assert "x" * 31 not in str(err.value)
    # bytes, not characters: 16 two-byte characters are 32 bytes
    wide = tmp_path / "wide.key"
    wide.write_bytes(("é" * 16).encode("utf8"))
    ring = load_keyring(str(wide))
    assert ring.signing == derived_key_id(("é" * 16).encode("utf8")) and ring.signing.startswith("k")
    # the key is never shown
    assert "keys=" not in repr(ring) and "\\xc3" not in repr(ring) and "é" * 2 not in repr(ring)
    with pytest.raises(HashKeyError, match="cannot read the hash key file"):
        load_keyring(str(tmp_path / "missing.key"))
    # a text key's line end is not key material; a raw key's last byte 0x0a is
    text = tmp_path / "text.key"
    text.write_bytes(b"ab" * 16 + b"\n")
    assert load_keyring(str(text)).signing == derived_key_id(b"ab" * 16)
    raw = tmp_path / "raw.key"
    raw.write_bytes(bytes(range(128, 159)) + b"\n")  # 31 non-text bytes and 0x0a: a 32-byte key
    assert load_keyring(str(raw)).signing == derived_key_id(bytes(range(128, 159)) + b"\n")


def test_env_key_is_read_once_and_removed(monkeypatch):
    monkeypatch.setattr(keys_module, "_env_key", None)
    monkeypatch.setenv(HASH_KEY_ENV, "e" * 32)
    ring = load_keyring(None)
    assert HASH_KEY_ENV not in os.environ  # gone for child processes and environment dumps
    assert load_keyring(None).token("PER", "Anna") == ring.token("PER", "Anna")  # this process still has it
    with pytest.raises(HashKeyError, match="--hash-key-file"):
        load_keyring(None, workers=2)
    monkeypatch.setattr(keys_module, "_env_key", None)
    monkeypatch.setenv(HASH_KEY_ENV, "short")
    with pytest.raises(HashKeyError, match=r"\$NER_PLUS_HASH_KEY has 5 bytes"):
        load_keyring(None)
    assert HASH_KEY_ENV not in os.environ
    monkeypatch.setattr(keys_module, "_env_key", None)
    assert load_keyring(None) is None


def test_token_names_type_and_key_and_the_type_is_in_the_hmac():
    ring = Keyring({"k1": KEY1}, "k1")
    per = ring.token("PER", "Jordan")
    org = ring.token("ORG", "Jordan")
    assert per.startswith("<PER_k1_") and org.startswith("<ORG_k1_")
    assert parse_token(per)[2] != parse_token(org)[2]  # not the same digest under two names
    assert parse_token(per) == ("PER", "k1", per[8:-1]) and len(per[8:-1]) == 32
    assert parse_token("<EMAIL_ADDRESS_k1_" + "0" * 32 + ">") == ("EMAIL_ADDRESS", "k1", "0" * 32)
    for bad in ("PER_k1_" + "0" * 32, "<PER_k1_" + "0" * 31 + ">", "<PER_k_1_" + "g" * 32 + ">", "<_k1_" + "0" * 32 + ">"):
        assert parse_token(bad) is None
    assert ring.token("PER", "Jordan") == per  # stable


def test_rotation_two_active_keys(tmp_path):
    (tmp_path / "k1.key").write_bytes(KEY1)
    (tmp_path / "k2.key").write_bytes(KEY2)
    old_conf = tmp_path / "old.toml"
    old_conf.write_text('signing = "k1"\n[keys]\nk1 = "k1.key"\n')
    rotating = tmp_path / "rotating.toml"
    rotating.write_text('signing = "k2"\n[keys]\nk1 = "k1.key"\nk2 = "k2.key"\n')
    done = tmp_path / "done.toml"
    done.write_text('signing = "k2"\n[keys]\nk2 = "k2.key"\n')
    before = load_keyring(str(old_conf)).token("PER", "Anna Keller")
    ring = load_keyring(str(rotating))
    after = ring.token("PER", "Anna Keller")
    assert before.startswith("<PER_k1_") and after.startswith("<PER_k2_")
    # both keys recognised and listed during the rotation
    assert ring.recognise(before, "Anna Keller") == "k1" and ring.recognise(after, "Anna Keller") == "k2"
    assert ring.recognise(before, "Anna Kellner") is None
    assert ring.tokens("PER", "Anna Keller") == {"k1": before, "k2": after}
    assert ring.describe() == {"signing": "k2", "active": ["k1", "k2"], "tenant_scope": "shared", "tenant_keyrings": 0}
    # once k1 is retired, its tokens are no longer recognised
    assert load_keyring(str(done)).recognise(before, "Anna Keller") is None


def test_keyring_example_of_the_docs(tmp_path):
    (tmp_path / "team-a").mkdir()
    for name, key in (("k1.key", KEY1), ("k2.key", KEY2), ("team-a/a1.key", bytes(range(200, 232)))):
        (tmp_path / name).write_bytes(key)
    conf = tmp_path / "keys.toml"
    conf.write_text(KEYRING_EXAMPLE)
    ring = load_keyring(str(conf))
    assert ring.describe() == {"signing": "k2", "active": ["k1", "k2"], "tenant_scope": "shared", "tenant_keyrings": 1}
    assert ring.token("PER", "Anna", "team-a").startswith("<PER_a1_") and ring.token("PER", "Anna", "team-b").startswith("<PER_k2_")


def test_per_client_token_spaces(tmp_path):
    for name, key in (("shared.key", KEY1), ("a.key", KEY2), ("a2.key", bytes(range(200, 232)))):
        (tmp_path / name).write_bytes(key)
    conf = tmp_path / "keys.toml"
    conf.write_text('signing = "s1"\ntenant_scope = "per_client"\n[keys]\ns1 = "shared.key"\n[tenants.team-a]\nsigning = "a1"\nkeys = { a1 = "a.key" }\n')
    ring = load_keyring(str(conf))
    a, b, c = (ring.token("PER", "Anna", client) for client in ("team-a", "team-b", "team-c"))
    assert a.startswith("<PER_a1_") and b.startswith("<PER_s1_")
    assert len({parse_token(t)[2] for t in (a, b, c)}) == 3  # no two clients' tokens link
    with pytest.raises(HashKeyError, match="no client id"):
        ring.hasher(None)
    # a tenant's key may not be shared with another keyring
    conf.write_text('signing = "s1"\n[keys]\ns1 = "shared.key"\n[tenants.team-a]\nsigning = "a1"\nkeys = { a1 = "shared.key" }\n')
    with pytest.raises(HashKeyError, match="tenants.team-a.keys.a1 holds the same key as keys.s1"):
        load_keyring(str(conf))


@pytest.mark.parametrize(
    "content,where",
    [
        ('signing = "k9"\n[keys]\nk1 = "k1.key"\n', "signing must name one of the keys ['k1']"),
        ('signing = "k_1"\n[keys]\nk_1 = "k1.key"\n', "keys.k_1: a key id is 1 to 16 letters or digits"),
        ('signing = "k1"\n[keys]\nk1 = 3\n', "keys.k1 must be the path of a key file"),
        ('signing = "k1"\n[keys]\nk1 = "short.key"\n', "short.key (keys.k1 of"),
        ('signing = "k1"\n[keys]\nk1 = "k1.key"\nk2 = "k1.key"\n', "keys.k2 and keys.k1 hold the same key"),
        ('signing = "k1"\nscope = "x"\n[keys]\nk1 = "k1.key"\n', "unknown key scope"),
        ('signing = "k1"\ntenant_scope = "each"\n[keys]\nk1 = "k1.key"\n', "tenant_scope must be one of"),
        ('signing = "k1"\n', "keys must be a table"),
        ("signing = ", "not valid TOML"),
    ],
)
def test_keyring_file_errors_name_file_and_key(tmp_path, content, where):
    (tmp_path / "k1.key").write_bytes(KEY1)
    (tmp_path / "short.key").write_bytes(b"s" * 20)
    conf = tmp_path / "keys.toml"
    conf.write_text(content)
    with pytest.raises(HashKeyError) as err:
        load_keyring(str(conf))
    assert str(conf) in str(err.value) and where in str(err.value)


# --- against a real server -----------------------------------------------------------
httpx = pytest.importorskip("httpx")
from service_helpers import wait_ready  # noqa: E402
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

SENTENCE2 = "Mary works for Acme Corp in Paris ."
READY_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """service.app.run in a subprocess (uvicorn on loopback), started from ServeSettings."""

    def __init__(self, tmp: Path, **settings) -> None:
        self.port = _free_port()
        self.stderr = tmp / f"stderr-{self.port}.txt"
        launcher = (
            "import json, sys\n"
            "from spacy_ner_plus.service.app import run\n"
            "from spacy_ner_plus.service.settings import ServeSettings\n"
            "sys.exit(run(ServeSettings(**json.loads(sys.argv[1])), int(sys.argv[2]), 30.0))\n"
        )
        env = {k: v for k, v in os.environ.items() if k not in (HASH_KEY_ENV, "PROMETHEUS_MULTIPROC_DIR")}
        self.proc = subprocess.Popen([sys.executable, "-c", launcher, json.dumps(settings), str(self.port)], stdout=subprocess.DEVNULL, stderr=open(self.stderr, "wb"), env=env)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        try:
            wait_ready(self.proc, f"http://127.0.0.1:{self.port}", self.stderr, READY_TIMEOUT_S)
        except RuntimeError:
            self.stop()
            raise

    def post(self, path, body, headers=None):
        return self.client.post(path, content=json.dumps(body).encode("utf8"), headers={"content-type": "application/json", **(headers or {})})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.client.close()


def save_with_half_thresholds(nlp, path: Path) -> None:
    """Save the tiny pipeline with its PER/LOC/ORG thresholds at 0.5, leaving the shared fixture as it was."""
    pipe = nlp.get_pipe("ner_plus")
    saved = dict(pipe.cfg["thresholds"])
    pipe.cfg["thresholds"] = {"PER": 0.5, "LOC": 0.5, "ORG": 0.5}
    try:
        nlp.to_disk(path)
    finally:
        pipe.cfg["thresholds"] = saved


@pytest.fixture(scope="module")
def served(trained_nlp, tmp_path_factory):
    """The tiny pipeline (PER/LOC/ORG, thresholds 0.5) saved, and a keyring with two keys, k2 signing."""
    tmp = tmp_path_factory.mktemp("policy-serve")
    save_with_half_thresholds(trained_nlp, tmp / "model")
    (tmp / "k1.key").write_bytes(KEY1)
    (tmp / "k2.key").write_bytes(KEY2)
    (tmp / "keys.toml").write_text('signing = "k2"\n[keys]\nk1 = "k1.key"\nk2 = "k2.key"\n')
    return tmp


@pytest.fixture(scope="module")
def strict(served):
    """A server with the built-in default policy."""
    srv = Server(served, model=str(served / "model"), audit_log=str(served / "audit.jsonl"), hash_key_file=str(served / "keys.toml"), max_thresholds={"": 1.0})
    yield srv
    srv.stop()


def _audit(served, request_id):
    lines = [json.loads(line) for line in (served / "audit.jsonl").read_text().splitlines()]
    return next(a for a in lines if a["request_id"] == request_id)


@pytest.mark.parametrize(
    "body,field,rule",
    [
        ({"operators": {"ORG": {"type": "keep"}}}, "operators.ORG", "default.operators (built-in)"),
        ({"operators": {"DEFAULT": {"type": "keep"}}}, "operators.DEFAULT", "default.operators (built-in)"),
        ({"operators": {"PER": {"type": "mask", "chars_to_mask": 0}}}, "operators.PER.chars_to_mask", "default.always_redact (built-in)"),
        ({"entities": ["PER", "LOC"]}, "entities", "default.always_redact (built-in)"),
        ({"operators": {"ORG": {"type": "replace", "new_value": "Acme Corp"}}}, "operators.ORG.new_value", "default.always_redact (built-in)"),
        ({"operators": {"DEFAULT": {"type": "replace", "new_value": "Zq" * 57_000}}}, "operators.DEFAULT.new_value", "default.max_new_value_chars (built-in)"),
    ],
)
def test_serve_default_policy_refuses_turning_redaction_off(strict, served, body, field, rule):
    r = strict.post("/v1/redact", {"text": SENTENCE2, **body})
    assert r.status_code == 403, r.text[:300]
    error = r.json()["error"]
    assert error["kind"] == "policy_violation" and error["field"] == field and rule in error["message"]
    # nothing of the request comes back: not the text, not the new_value
    assert "Mary" not in r.text and "Acme" not in r.text and "Zq" not in r.text and "text" not in r.json()
    assert _audit(served, r.json()["request_id"])["status"] == 403


def test_serve_default_policy_redacts_and_audits_what_was_applied(strict, served):
    r = strict.post("/v1/redact", {"text": SENTENCE2, "operators": {"PER": {"type": "mask", "chars_to_mask": 1}, "ORG": {"type": "hash"}}})
    assert r.status_code == 200, r.text
    out = r.json()["text"]
    ring = load_keyring(str(served / "keys.toml"))
    # a partial mask is raised to a full one; the hash token names its type and the signing key k2
    assert out == f"**** works for {ring.token('ORG', 'Acme Corp')} in <LOC> ."
    assert ring.token("ORG", "Acme Corp").startswith("<ORG_k2_")
    line = _audit(served, r.json()["request_id"])
    assert line["operators"] == {"LOC": "replace", "ORG": "hash", "PER": "mask"}
    assert line["applied"] == {"PER": {"mask": 1}, "ORG": {"hash": 1}, "LOC": {"replace": 1}}
    assert all(line["entities"][t]["redacted"] == 1 for t in ("PER", "ORG", "LOC"))
    # analyze may still ask for a subset: it reports, it does not redact
    assert strict.post("/v1/analyze", {"text": SENTENCE2, "entities": ["PER"]}).status_code == 200
    config = strict.client.get("/v1/config").json()
    assert "keep" not in config["operators"]["available"]
    assert config["policy"]["source"] == BUILT_IN and config["policy"]["types"]["PER"]["always_redact"] is True
    assert config["hash_keys"] == {"signing": "k2", "active": ["k1", "k2"], "tenant_scope": "shared", "tenant_keyrings": 0}
    assert "Mary" not in (served / "audit.jsonl").read_text()


def test_serve_audit_failure_fails_closed(served):
    # a failed audit write used to print to stderr while the request succeeded
    srv = Server(served, model=str(served / "model"), audit_log="/dev/full")
    try:
        r = srv.post("/v1/redact", {"text": SENTENCE2})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["kind"] == "audit_unavailable" and r.headers["x-request-id"] == r.json()["request_id"]
        assert "works for" not in r.text and "text" not in r.json()
    finally:
        srv.stop()
    assert "audit record not written" in srv.stderr.read_text() and "Mary" not in srv.stderr.read_text()


def test_serve_audit_failure_log_and_output_bound(served, tmp_path):
    # audit_failure = "log": answered, the failure logged; finding 2: 114 KB of short entities with a
    # long new_value made 200 MB, here max_output_chars stops the redaction before it is built
    policy = tmp_path / "policy.toml"
    policy.write_text('audit_failure = "log"\nmax_output_chars = 5000\n')
    srv = Server(served, model=str(served / "model"), audit_log="/dev/full", policy=str(policy))
    try:
        r = srv.post("/v1/redact", {"text": SENTENCE2})
        assert r.status_code == 200 and r.json()["text"] == "<PER> works for <ORG> in <LOC> ."
        text = " ".join([SENTENCE2] * 200)  # 7 KB
        r = srv.post("/v1/redact", {"text": text, "operators": {"DEFAULT": {"type": "replace", "new_value": "x" * 64}}})
        assert r.status_code == 403 and "max_output_chars" in r.json()["error"]["message"] and "xxxx" not in r.text
    finally:
        srv.stop()
    assert "audit record not written" in srv.stderr.read_text()


def test_serve_bad_policy_file_stops_the_server(served, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[types.PER]\noperators = ['encrypt']\n")
    with pytest.raises(RuntimeError, match=r"types.PER.operators\[0\]: unknown operator 'encrypt'"):
        Server(served, model=str(served / "model"), policy=str(policy))
