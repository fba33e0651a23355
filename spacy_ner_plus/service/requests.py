"""What the service checks of a request before any model work, and how it answers errors:
``ApiError`` (the documented error format), the JSON depth check on raw bytes, lone
surrogates, media types, and field paths that name where an error is without echoing
request content (an unknown key is named by its position, never by its text)."""
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

CLIENT_ID_HEADER = "X-Client-ID"
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# the Presidio-compatible endpoints (presidio_api.py): checked, limited and audited as /v1 is
PRESIDIO_PATHS = ("/analyze", "/anonymize", "/deanonymize", "/supportedentities", "/recognizers")
# paths whose requests are audited and whose POSTs must be application/json
API_PREFIXES = ("/v1/",) + PRESIDIO_PATHS
# paths that need an API key when the server has keys (the page, /healthz, /readyz and /health do not)
PROTECTED_PREFIXES = API_PREFIXES + ("/metrics", "/openapi.json", "/docs", "/redoc")
_STRUCTURAL = b"[]{}"
_DELETE_NON_STRUCTURAL = bytes(b for b in range(256) if b not in _STRUCTURAL)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class ApiError(Exception):
    """An error answered to the client: status, a kind for the audit log, the field it names."""

    def __init__(self, status: int, kind: str, message: str, field: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit``, read from the bytes
    (string contents skipped) so a 200,000-deep body never reaches the recursive parser.
    Linear in the body."""
    structural = _JSON_STRING.sub(b"", raw).translate(None, _DELETE_NON_STRUCTURAL)
    if structural.count(b"[") + structural.count(b"{") <= limit:
        return False
    depth = 0
    for byte in structural:
        if byte == 91 or byte == 123:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def safe_path(parts: Sequence[Any], body: Any, vocabulary: Set[str]) -> str:
    """A dotted path into ``body`` that quotes no request content: list indices and names the
    server knows (field names, entity types, operator names) as they are, any other object key
    as ``#N``, its position among its object's keys."""
    out: List[str] = []
    node = body
    for part in parts:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            out.append(part if part in vocabulary else f"#{list(node).index(part)}")
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(str(part))
            node = node[part]
        elif isinstance(part, int):
            out.append(str(part))
            node = None
        else:  # not a key of the body (pydantic's own location tags): only known names pass
            if isinstance(part, str) and part in vocabulary:
                out.append(part)
            node = None
    return ".".join(out) or "body"


def strings_in(value: Any) -> Iterable[str]:
    """Every string in a parsed body, dict keys included (what an answer must not echo)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


def first_surrogate(value: Any, parts: List[Any]) -> Optional[List[Any]]:
    """The path of the first string (key or value) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf8")
        except UnicodeEncodeError:
            return parts
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            try:
                k.encode("utf8")
            except UnicodeEncodeError:
                return parts + [k]
            found = first_surrogate(v, parts + [k])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = first_surrogate(v, parts + [i])
            if found is not None:
                return found
    return None


def operator_error_path(field: str, spec: Dict[str, Any], vocabulary: Set[str]) -> str:
    """OperatorError's ``operators.KEY[.PARAM]`` as a path that quotes no request content."""
    rest = field[len("operators.") :] if field.startswith("operators.") else ""
    keys = [k for k in spec if rest == k or rest.startswith(k + ".")]
    if not keys:
        return "operators"
    key = max(keys, key=len)
    parts: List[Any] = ["operators", key]
    if len(rest) > len(key):
        parts.append(rest[len(key) + 1 :])
    return safe_path(parts, {"operators": spec}, vocabulary)


def media_type_ok(header: Optional[str]) -> bool:
    if not header:
        return False
    media, *params = [p.strip().lower() for p in header.split(";")]
    if media != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True
