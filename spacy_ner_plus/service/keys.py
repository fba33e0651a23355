"""HMAC keys of the ``hash`` operator: loading, key ids, rotation, per-client token spaces.

A token is ``<TYPE_KEYID_DIGEST>``, e.g. ``<PERSON_k1_3f9a...>``: DIGEST is the
first 32 hex digits (128 bits) of HMAC-SHA256 under the key KEYID of a message
that holds the entity type, the token space (empty, or the client id with
``tenant_scope = "per_client"``) and the entity's text, each length-prefixed.
So one value gives one token per type, key and token space: the same text as
PERSON and as ORG gives two unrelated tokens.

Where the keys come from (``--hash-key-file PATH``, else ``$NER_PLUS_HASH_KEY``):
- a plain file: its bytes, less a trailing newline, are one key of at least
  32 bytes; its id is ``k`` + 6 hex digits derived from the key (so a new key
  gets a new id without anyone naming it);
- a ``.toml`` file: several keys, each in its own file, one of them signing
  (rotation: the others are still listed and recognised), optional per-client
  keyrings (docs/service-policy.md shows the format);
- the environment variable: read once per process and removed from
  ``os.environ`` at once, so no child process and no environment dump sees it.
  It cannot reach ``--workers`` > 1 processes: use a file there.

No message of this module contains key material.
"""
import hashlib
import hmac
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple

HASH_KEY_ENV = "NER_PLUS_HASH_KEY"
MIN_KEY_BYTES = 32
DIGEST_HEX = 32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,16}$")  # no "_": it separates the parts of a token
TENANT_SCOPES = ("shared", "per_client")
_DOMAIN = b"spacy-ner-plus.hash.v1"

# What the environment variable held, once read (it is gone from os.environ then).
_env_key: Optional[bytes] = None

Hasher = Callable[[str, str], str]  # (entity type, entity text) -> token


class HashKeyError(ValueError):
    """Keys that cannot be used; the message names the file and key, never the key's bytes."""


@dataclass(frozen=True)
class Keyring:
    """The active keys of one token space: every key is recognised, one signs.

    keys (Mapping[str, bytes]): key id -> key (at least MIN_KEY_BYTES bytes).
    signing (str): the id of the key that makes new tokens.
    tenant_scope (str): "shared" (every client gets the same token for a value) or
        "per_client" (the client id is part of the HMAC message: clients' tokens never match).
    tenants (Mapping[str, Keyring]): client id -> its own keyring (used instead of this one).
    source (str): where the keys came from, for messages.
    """

    keys: Mapping[str, bytes] = field(repr=False)
    signing: str
    tenant_scope: str = "shared"
    tenants: Mapping[str, "Keyring"] = field(default_factory=dict, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if self.signing not in self.keys:
            raise HashKeyError(f"{self.source}: the signing key '{self.signing}' is not among the keys {sorted(self.keys)}")
        if self.tenant_scope not in TENANT_SCOPES:
            raise HashKeyError(f"{self.source}: tenant_scope must be one of {list(TENANT_SCOPES)}")

    def for_client(self, client_id: Optional[str]) -> Tuple["Keyring", bytes]:
        """The keyring and token space of a client (None: no authenticated client)."""
        if client_id is not None and client_id in self.tenants:
            own = self.tenants[client_id]
            return own, (client_id.encode("utf8") if own.tenant_scope == "per_client" else b"")
        if self.tenant_scope == "per_client":
            if client_id is None:
                # without a client id there is no token space to keep apart: refuse, never fall back to shared
                raise HashKeyError("the hash keys are per client (tenant_scope = \"per_client\") but the request has no client id")
            return self, client_id.encode("utf8")
        return self, b""

    def token(self, entity_type: str, value: str, client_id: Optional[str] = None) -> str:
        """The token of ``value`` as ``entity_type`` under the signing key of ``client_id``'s keyring."""
        ring, space = self.for_client(client_id)
        return _token(ring.keys[ring.signing], ring.signing, entity_type, value, space)

    def tokens(self, entity_type: str, value: str, client_id: Optional[str] = None) -> Dict[str, str]:
        """The token of ``value`` under every active key (key id -> token): to match tokens made before a rotation."""
        ring, space = self.for_client(client_id)
        return {kid: _token(key, kid, entity_type, value, space) for kid, key in sorted(ring.keys.items())}

    def recognise(self, token: str, value: str, client_id: Optional[str] = None) -> Optional[str]:
        """The id of the active key that made ``token`` from ``value``, or None (unknown or retired key, other value)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        entity_type, kid, _ = parsed
        ring, space = self.for_client(client_id)
        key = ring.keys.get(kid)
        if key is None:
            return None
        return kid if hmac.compare_digest(_token(key, kid, entity_type, value, space), token) else None

    def hasher(self, client_id: Optional[str] = None) -> Hasher:
        """``token`` bound to one client: what operators.redact calls."""
        ring, space = self.for_client(client_id)
        key, kid = ring.keys[ring.signing], ring.signing
        return lambda entity_type, value: _token(key, kid, entity_type, value, space)

    def describe(self) -> Dict[str, object]:
        """Key ids and scope, never keys (for /v1/config and the start-up message)."""
        return {"signing": self.signing, "active": sorted(self.keys), "tenant_scope": self.tenant_scope, "tenant_keyrings": len(self.tenants)}


def parse_token(token: str) -> Optional[Tuple[str, str, str]]:
    """(entity type, key id, digest) of a token, or None if ``token`` is not one."""
    if not (token.startswith("<") and token.endswith(">")):
        return None
    parts = token[1:-1].rsplit("_", 2)
    if len(parts) != 3:
        return None
    entity_type, kid, digest = parts
    if not entity_type or not KEY_ID_PATTERN.match(kid) or not re.fullmatch(f"[0-9a-f]{{{DIGEST_HEX}}}", digest):
        return None
    return entity_type, kid, digest


def _token(key: bytes, kid: str, entity_type: str, value: str, space: bytes) -> str:
    message = _DOMAIN + b"".join(len(p).to_bytes(4, "big") + p for p in (entity_type.encode("utf8"), space, value.encode("utf8")))
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()[:DIGEST_HEX]
    return f"<{entity_type}_{kid}_{digest}>"


def derived_key_id(key: bytes) -> str:
    """The id of a key nobody named: derived from the key (it reveals nothing of it)."""
    return "k" + hmac.new(key, _DOMAIN + b".key-id", hashlib.sha256).hexdigest()[:6]


def load_keyring(path: Optional[str], workers: int = 1) -> Optional[Keyring]:
    """The keys of the hash operator: ``path`` (a key file or a .toml keyring), else
    $NER_PLUS_HASH_KEY (read once, removed from the environment), else None.

    path (Optional[str]): --hash-key-file.
    workers (int): worker processes; the environment variable cannot reach more than one.
    RETURNS (Optional[Keyring]): None when no key is configured (the hash operator is off).
    RAISES (HashKeyError): an unreadable or short key, a bad keyring file (file and key named).
    """
    global _env_key
    if HASH_KEY_ENV in os.environ:
        # read once and removed, even when a file is given: it must not linger for child processes
        _env_key = os.environ.pop(HASH_KEY_ENV).encode("utf8")
    if path:
        if path.endswith(".toml"):
            return _load_toml(Path(path))
        key = _read_key(Path(path), path)
        return Keyring({derived_key_id(key): key}, derived_key_id(key), source=path)
    if _env_key:
        if workers > 1:
            raise HashKeyError(
                f"${HASH_KEY_ENV} is removed from the environment once read, so {workers} worker processes cannot get it: use --hash-key-file"
            )
        _check_length(_env_key, f"${HASH_KEY_ENV}")
        return Keyring({derived_key_id(_env_key): _env_key}, derived_key_id(_env_key), source=f"${HASH_KEY_ENV}")
    return None


def _check_length(key: bytes, where: str) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise HashKeyError(
            f"the hash key in {where} has {len(key)} bytes; use at least {MIN_KEY_BYTES} bytes "
            "(e.g. `head -c 32 /dev/urandom > FILE` or `openssl rand -hex 32 > FILE`)"
        )


def _read_key(path: Path, where: str) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as err:
        raise HashKeyError(f"cannot read the hash key file {where}: {err.strerror}") from None
    # A text key (`openssl rand -hex 32 > FILE`, an editor, `echo`) ends with one line end that is
    # not key material. A raw key (`head -c 32 /dev/urandom > FILE`) may end with the byte 0x0a as
    # key material: its line end is kept, or one raw key in 256 would lose a byte.
    body = key[:-2] if key.endswith(b"\r\n") else key[:-1] if key.endswith(b"\n") else key
    if all(32 <= b < 127 for b in body):
        key = body
    _check_length(key, where)
    return key


def _load_toml(path: Path) -> Keyring:
    try:
        data = tomllib.loads(path.read_text(encoding="utf8"))
    except OSError as err:
        raise HashKeyError(f"cannot read the keyring file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise HashKeyError(f"{path}: not valid TOML: {err}") from None
    tenants_spec = data.pop("tenants", {})
    ring = _keyring_from(data, path, "")
    if not isinstance(tenants_spec, dict):
        raise HashKeyError(f"{path}: tenants must be a table of [tenants.CLIENT_ID] tables")
    tenants: Dict[str, Keyring] = {}
    for client_id, spec in tenants_spec.items():
        if not isinstance(spec, dict):
            raise HashKeyError(f"{path}: tenants.{client_id} must be a table with signing and keys")
        if "tenants" in spec:
            raise HashKeyError(f"{path}: tenants.{client_id}.tenants: tenants do not nest")
        tenants[client_id] = _keyring_from(spec, path, f"tenants.{client_id}.")
    _check_no_reuse(path, ring.keys, tenants)
    return Keyring(ring.keys, ring.signing, ring.tenant_scope, tenants, str(path))


def _keyring_from(spec: Mapping[str, object], path: Path, prefix: str) -> Keyring:
    unknown = sorted(set(spec) - {"signing", "keys", "tenant_scope"})
    if unknown:
        raise HashKeyError(f"{path}: unknown key {prefix}{unknown[0]} (known: signing, keys, tenant_scope{', tenants' if not prefix else ''})")
    keys_spec = spec.get("keys")
    if not isinstance(keys_spec, dict) or not keys_spec:
        raise HashKeyError(f"{path}: {prefix}keys must be a table of KEY_ID = \"key file\" (at least one)")
    keys: Dict[str, bytes] = {}
    for kid, file in keys_spec.items():
        where = f"{path}: {prefix}keys.{kid}"
        if not KEY_ID_PATTERN.match(kid):
            raise HashKeyError(f"{where}: a key id is 1 to 16 letters or digits (it is part of every token)")
        if not isinstance(file, str):
            raise HashKeyError(f"{where} must be the path of a key file (relative to {path.parent})")
        keys[kid] = _read_key(path.parent / file, f"{path.parent / file} ({prefix}keys.{kid} of {path})")
    signing = spec.get("signing")
    if not isinstance(signing, str) or signing not in keys:
        raise HashKeyError(f"{path}: {prefix}signing must name one of the keys {sorted(keys)}")
    scope = spec.get("tenant_scope", "shared")
    if scope not in TENANT_SCOPES:
        raise HashKeyError(f"{path}: {prefix}tenant_scope must be one of {list(TENANT_SCOPES)}")
    _check_distinct(path, prefix, keys)
    return Keyring(keys, signing, str(scope), source=str(path))


def _check_distinct(path: Path, prefix: str, keys: Mapping[str, bytes]) -> None:
    seen: Dict[bytes, str] = {}
    for kid, key in keys.items():
        if key in seen:
            raise HashKeyError(f"{path}: {prefix}keys.{kid} and {prefix}keys.{seen[key]} hold the same key")
        seen[key] = kid


def _check_no_reuse(path: Path, shared: Mapping[str, bytes], tenants: Mapping[str, Keyring]) -> None:
    """A tenant's key that is also another keyring's key would link their token spaces."""
    owner: Dict[bytes, str] = {key: f"keys.{kid}" for kid, key in shared.items()}
    for client_id, ring in tenants.items():
        for kid, key in ring.keys.items():
            here = f"tenants.{client_id}.keys.{kid}"
            if key in owner:
                raise HashKeyError(f"{path}: {here} holds the same key as {owner[key]}: each keyring needs its own keys")
            owner[key] = here
