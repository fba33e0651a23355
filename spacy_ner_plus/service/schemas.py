"""The request and response bodies as pydantic models: requests are validated with them;
responses and errors are described with them for the OpenAPI schema, so a schema-driven
client or fuzzer can check every answer."""
from typing import Any, Dict, List, Optional

def request_models():
    from pydantic import BaseModel, ConfigDict

    class AnalyzeRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: Optional[str] = None
        texts: Optional[List[str]] = None
        entities: Optional[List[str]] = None
        thresholds: Optional[Dict[str, float]] = None
        return_text: bool = False

    class RedactRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: str
        operators: Optional[Dict[str, Any]] = None
        entities: Optional[List[str]] = None
        thresholds: Optional[Dict[str, float]] = None

    return AnalyzeRequest, RedactRequest


def response_models() -> Dict[str, Any]:
    """The answers as pydantic models: they only document the OpenAPI schema (the
    handlers build plain dicts), so a schema-driven client or fuzzer can check them."""
    from pydantic import BaseModel

    class ErrorDetail(BaseModel):
        kind: str
        message: str
        field: Optional[str]

    class ErrorResponse(BaseModel):
        error: ErrorDetail
        request_id: str

    class EntityOut(BaseModel):
        entity_type: str
        start: int
        end: int
        score: Optional[float]
        threshold: Optional[float]
        source: str
        text: Optional[str] = None

    class ModelOut(BaseModel):
        name: str
        version: str
        calibration: Dict[str, str]
        config_hash: str

    class AnalyzeResponse(BaseModel):
        request_id: str
        model: ModelOut
        results: Any  # a list of EntityOut for "text", one such list per text for "texts"

    class RedactedItemOut(BaseModel):
        entity_type: str
        start: int
        end: int
        operator: str

    class RedactResponse(BaseModel):
        request_id: str
        text: str
        items: List[RedactedItemOut]

    class EntityTypeOut(BaseModel):
        entity_type: str
        sources: List[str]
        threshold: Optional[float] = None
        min_threshold: Optional[float] = None
        max_threshold: Optional[float] = None

    class EntitiesResponse(BaseModel):
        entities: List[EntityTypeOut]

    class Probe(BaseModel):
        status: str
        reason: Optional[str] = None
        config_hash: Optional[str] = None

    return {k: v for k, v in locals().items() if isinstance(v, type)}


def error_responses(models: Dict[str, Any], *statuses: int) -> Dict[int, Any]:
    described = {
        400: "bad request: unknown entity type or operator, invalid Unicode, nesting too deep, bad X-Client-ID",
        401: "no or unknown API key",
        403: "the operator policy refuses the request (docs/service-policy.md)",
        413: "body, text or request over a limit",
        415: "the body is not Content-Type: application/json",
        421: "Host header not allowed",
        422: "invalid JSON or a field of the wrong type",
        503: "not ready, overloaded, or the request deadline passed",
    }
    return {s: {"model": models["ErrorResponse"], "description": described[s]} for s in statuses}
