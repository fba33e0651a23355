"""API keys of the PII service: a file of ``client_id:sha256:HEX`` lines, checked in constant time.

The file holds hashes, never keys, so a copy of it (a backup, a config repository) lets nobody call the
service. A key is 32 random bytes (``secrets.token_urlsafe(32)``), so one SHA-256 is enough: a slow hash
(scrypt) protects guessable passwords and would cost every request tens of milliseconds of CPU.

Create a key (the key is printed once; only its hash is stored)::

    python -m spacy_ner_plus.service.auth add CLIENT_ID --file /etc/ner-plus/api-keys

A request sends ``Authorization: Bearer KEY``; the audit log records the key's client id.
"""
import argparse
import hashlib
import hmac
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HASH_SCHEME = "sha256"
KEY_BYTES = 32
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class KeyFileError(ValueError):
    """The API key file cannot be read or has a malformed line."""


def hash_key(key: str) -> str:
    """The stored form of ``key``: ``sha256:HEX``."""
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode('utf8')).hexdigest()}"


def new_key() -> str:
    """A fresh random API key (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(KEY_BYTES)


class ApiKeys:
    """The clients allowed to call the service, by the SHA-256 of their key.

    entries (List[Tuple[str, bytes]]): (client id, sha256 digest) pairs.
    """

    def __init__(self, entries: List[Tuple[str, bytes]]) -> None:
        if not entries:
            raise KeyFileError("the API key file has no keys")
        self.entries = entries

    @classmethod
    def from_file(cls, path: str) -> "ApiKeys":
        """Read ``client_id:sha256:HEX`` lines (``#`` comments and blank lines skipped).

        RAISES (KeyFileError): unreadable file, a malformed line (file:line), a client id twice.
        """
        try:
            lines = Path(path).read_text(encoding="utf8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise KeyFileError(f"cannot read the API key file {path}: {getattr(err, 'strerror', None) or err}") from None
        entries: List[Tuple[str, bytes]] = []
        seen: Dict[str, int] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) != 3 or parts[1] != HASH_SCHEME or not re.fullmatch(r"[0-9a-f]{64}", parts[2]):
                raise KeyFileError(
                    f"{path}:{number}: expected CLIENT_ID:sha256:<64 hex digits> "
                    f"(create lines with `python -m spacy_ner_plus.service.auth add CLIENT_ID --file {path}`)"
                )
            client_id = parts[0]
            if not CLIENT_ID_PATTERN.match(client_id):
                raise KeyFileError(f"{path}:{number}: the client id must match {CLIENT_ID_PATTERN.pattern}")
            if client_id in seen:
                raise KeyFileError(f"{path}:{number}: client id '{client_id}' already has a key at line {seen[client_id]}")
            seen[client_id] = number
            entries.append((client_id, bytes.fromhex(parts[2])))
        return cls(entries)

    def client_for(self, key: str) -> Optional[str]:
        """The client id whose key is ``key``, else None. Every entry is compared, with
        ``hmac.compare_digest``, so the time taken says nothing about which entry matched."""
        digest = hashlib.sha256(key.encode("utf8", "surrogatepass")).digest()
        found: Optional[str] = None
        for client_id, stored in self.entries:
            if hmac.compare_digest(digest, stored):
                found = client_id
        return found


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> List[str]:
    """Host header names accepted by default: the bound address, plus the loopback names when it is one.
    A wildcard address (0.0.0.0, ::) has no name of its own: the operator must list the names."""
    if bind_host in ("0.0.0.0", "::", ""):
        return []
    hosts = [bind_host.strip("[]").lower()]
    if is_loopback(bind_host):
        hosts += [h for h in LOOPBACK_HOSTS if h not in hosts]
    return hosts


def host_name(header: str) -> str:
    """The name part of a Host header, lowercased: ``Example.org:8080`` -> ``example.org``, ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def _add(client_id: str, file: Path) -> int:
    if not CLIENT_ID_PATTERN.match(client_id):
        print(f"the client id must match {CLIENT_ID_PATTERN.pattern}", file=sys.stderr)
        return 1
    if file.exists():
        try:
            existing = ApiKeys.from_file(str(file)).entries
        except KeyFileError as err:
            if "has no keys" not in str(err):
                print(str(err), file=sys.stderr)
                return 1
            existing = []
        if any(cid == client_id for cid, _ in existing):
            print(f"{file}: client id '{client_id}' already has a key; remove its line first to replace it", file=sys.stderr)
            return 1
    key = new_key()
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf8") as out:
        out.write(f"{client_id}:{hash_key(key)}\n")
    print(key)
    print(f"added '{client_id}' to {file}; the key above is shown once and stored only as its SHA-256", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spacy_ner_plus.service.auth", description="Manage the PII service's API key file.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a key for CLIENT_ID, append its hash to FILE and print the key once")
    add.add_argument("client_id")
    add.add_argument("--file", required=True, type=Path, help="the API key file (created with mode 600)")
    args = parser.parse_args(argv)
    return _add(args.client_id, args.file)


if __name__ == "__main__":
    sys.exit(main())
