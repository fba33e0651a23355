"""The request and response bodies as pydantic models: requests are validated with them;
responses and errors are described with them for the OpenAPI schema, so a schema-driven
client or fuzzer can check every answer."""
from typing import Any, Dict, List, Optional

def request_models():
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    Json = Optional[Any]  # an object or a list of records (checked by the handler: pydantic's strict Union names no field)

    class Features(BaseModel):
        """What /v1/analyze and /v1/redact share (docs/service.md, issue 29 section 3)."""

        model_config = ConfigDict(strict=True, extra="forbid")
        text: Optional[str] = None
        texts: Optional[List[str]] = None
        json_input: Json = Field(None, alias="json")
        fields: Optional[List[str]] = None
        exclude_fields: Optional[List[str]] = None
        entities: Optional[List[str]] = None
        thresholds: Optional[Dict[str, float]] = None
        allow_list: Optional[List[str]] = None
        allow_list_match: Literal["exact", "regex"] = "exact"
        ad_hoc_recognizers: Optional[List[Any]] = None
        offset_unit: Literal["codepoint", "utf16", "byte"] = "codepoint"
        return_decision_process: bool = False

    class AnalyzeRequest(Features):
        return_text: bool = False

    class RedactRequest(Features):
        operators: Optional[Dict[str, Any]] = None

    return AnalyzeRequest, RedactRequest


def response_models() -> Dict[str, Any]:
    """The answers as pydantic models: they only document the OpenAPI schema (the
    handlers build plain dicts), so a schema-driven client or fuzzer can check them."""
    from pydantic import BaseModel, Field

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
        decision_process: Optional[Dict[str, Any]] = None  # return_decision_process

    class ModelOut(BaseModel):
        name: str
        version: str
        calibration: Dict[str, str]
        config_hash: str

    class AnalyzeResponse(BaseModel):
        request_id: str
        model: ModelOut
        results: Any  # a list of EntityOut for "text", one such list per text for "texts", the input's shape for "json"
        n_windows: Any  # int for "text", one per text for "texts", {path: int} for "json"
        allow_list: Optional[Dict[str, int]] = None

    class RedactedItemOut(BaseModel):
        entity_type: str
        start: int
        end: int
        operator: str

    class RedactResponse(BaseModel):
        request_id: str
        text: Optional[str] = None  # "text" given
        items: Optional[List[Dict[str, Any]]] = None  # RedactedItemOut; for "json" each with its "path"
        n_windows: Any = None
        entities: Optional[List[Dict[str, Any]]] = None  # with return_decision_process
        results: Optional[List[Dict[str, Any]]] = None  # "texts" given: {text, items, n_windows} per text
        json_output: Any = Field(None, alias="json")  # "json" given: the input's shape, strings redacted
        allow_list: Optional[Dict[str, int]] = None

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
