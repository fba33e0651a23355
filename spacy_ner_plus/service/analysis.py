"""What a /v1 request adds to the model's candidates, and how its answer is shaped.

- Inputs: ``text``, ``texts`` or ``json`` (an object or a list of records whose string
  fields are analyzed: ``fields`` names the keys to include, ``exclude_fields`` the keys to
  leave alone; a string is analyzed when a key on its path is in ``fields`` (or ``fields`` is
  not given) and no key on its path is in ``exclude_fields``). The answer has the input's
  shape.
- Candidates beyond the model's: the policy's ``deny_list`` per type and the request's
  ``ad_hoc_recognizers`` (adhoc.py); then the policy's ``allow_list`` per type and the
  request's ``allow_list`` (on a redaction only for the types whose policy has
  ``client_allow_list``) remove candidates.
- Offsets in ``offset_unit`` (offsets.py) and, on request, a ``decision_process`` per entity.
"""
import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .adhoc import AdHocRecognizer, apply_allow_list, compile_allow_list, compile_recognizers, deny_recognizer, word_spans
from .decision import Candidate, Decision, ServedModel, decide
from .offsets import convert_offsets
from .policy import Policy, PolicyViolation
from .requests import ApiError

# names a request may use that the service publishes (error messages may quote them)
FEATURE_NAMES = {
    "allow_list", "allow_list_match", "ad_hoc_recognizers", "offset_unit", "return_decision_process", "json", "fields",
    "exclude_fields", "name", "supported_language", "supported_entity", "patterns", "deny_list", "context",
    "deny_list_score", "version", "global_regex_flags", "regex", "score", "exact", "codepoint", "utf16", "byte", "en",
}  # fmt: skip
AD_HOC_LABEL = "AD_HOC"  # how the audit log and the metrics count a request's own types
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Extras:
    """One request's additions (module docstring), checked before any model work."""

    recognizers: List[AdHocRecognizer]
    allow_list: Any  # adhoc.compile_allow_list's result
    allow_list_match: str
    allowed_types: Optional[FrozenSet[str]]  # None: the allow list may clear any type
    offset_unit: str
    explain: bool
    labels: List[str]  # the model's types and the request's own

    @property
    def ad_hoc_types(self) -> List[str]:
        return sorted({r.entity for r in self.recognizers})


def policy_deny_recognizers(policy: Policy) -> List[AdHocRecognizer]:
    """The policy's deny lists as recognisers (compiled once, at start-up)."""
    return [deny_recognizer(label, words, f"types.{label}.deny_list") for label, words in sorted(policy.deny_lists().items())]


def apply_policy_allow_lists(text: str, candidates: Sequence[Candidate], policy: Policy) -> Tuple[List[Candidate], int]:
    """The candidates whose text is not on their type's allow list in the policy, and how many were."""
    kept = [c for c in candidates if text[c.start : c.end] not in policy.for_type(c.label).allow_list]
    return kept, len(candidates) - len(kept)


def request_extras(req: Any, model: ServedModel, policy: Policy, redaction: bool) -> Extras:
    """Check and compile a request's allow list, recognisers and options.

    RAISES (ApiError): see adhoc.compile_recognizers / compile_allow_list; 403 when the request
        has an allow list on a redaction and no reported type's policy permits one.
    """
    recognizers = compile_recognizers(req.ad_hoc_recognizers)
    allow_list = compile_allow_list(req.allow_list, req.allow_list_match)
    labels = sorted(set(model.labels) | {r.entity for r in recognizers})
    allowed_types = None
    if redaction and req.allow_list:  # an empty list clears nothing: nothing to refuse
        wanted = labels if req.entities is None else [t for t in req.entities if t in labels]
        try:
            allowed_types = policy.check_allow_list(wanted)
        except PolicyViolation as err:
            raise ApiError(403, "policy_violation", str(err), err.field) from None
        # a request's own types are its own to clear
        allowed_types = allowed_types | {r.entity for r in recognizers}
    return Extras(recognizers, allow_list, req.allow_list_match, allowed_types, req.offset_unit, req.return_decision_process, labels)


def add_candidates(text: str, candidates: Sequence[Candidate], extras: Extras, policy: Policy, deny: Sequence[AdHocRecognizer]) -> Tuple[List[Candidate], Dict[str, int]]:
    """The model's candidates of one text with the deny lists' and recognisers' added and the
    allow lists applied. RETURNS the candidates (sorted) and counts for the audit log and answer:
    ``removed`` / ``kept_by_policy`` (the request's allow list), ``policy_allow_list``."""
    out = list(candidates)
    found: List[Candidate] = []
    recognizers = list(deny) + extras.recognizers
    if recognizers:
        words = word_spans(text) if any(r.deny_words or r.context for r in recognizers) else None
        for rec in recognizers:
            found.extend(rec.find(text, words))
    for rec_c in found:
        if rec_c.recognizer is not None and rec_c.recognizer.startswith("deny_list:"):
            out.append(Candidate(rec_c.start, rec_c.end, rec_c.label, rec_c.score, rec_c.source, rec_c.raw_score, "policy deny_list"))
        else:
            out.append(rec_c)
    kept, policy_removed = apply_policy_allow_lists(text, out, policy)
    counts = {"removed": 0, "kept_by_policy": 0}
    if extras.allow_list is not None:
        kept, counts = apply_allow_list(text, kept, extras.allow_list, extras.allow_list_match, extras.allowed_types)
    counts["policy_allow_list"] = policy_removed
    kept.sort(key=lambda c: (c.start, c.end, c.label))
    return kept, counts


def decision_process(c: Candidate, threshold: Optional[float], model: ServedModel, overridden: Sequence[str], n_windows: int, digits: int) -> Dict[str, Any]:
    """Why an entity was reported: scores, threshold and where it came from, source, windows."""
    r = lambda x: None if x is None else round(x, digits)  # noqa: E731
    out: Dict[str, Any] = {"source": c.source, "score": r(c.score), "raw_score": r(c.raw_score if c.raw_score is not None else c.score)}
    if c.source == "model":
        lo, hi = model.bounds.get(c.label, (None, None))
        out.update(
            {
                "recognizer": model.pipe.name,
                "calibration": model.calibration.get(c.label, "none"),
                "decoding_bias": model.decoding_bias.get(c.label, 0.0),
                "threshold": r(threshold),
                "threshold_from": "request" if c.label in overridden else "pipeline",
                "threshold_bounds": [lo, hi],
                "n_windows": n_windows,
                "windows": None if c.windows is None else {"covering": c.windows[0], "agreeing": c.windows[1]},
            }
        )
    else:
        out.update({"recognizer": c.recognizer or ("pii_patterns" if c.source == "pattern" else "other"), "threshold": None, "threshold_from": "rule"})
        if c.pattern is not None:
            out["pattern"] = c.pattern
        if c.context_word is not None:
            out["context_word"] = c.context_word
    return out


# --- structured input ------------------------------------------------------------------
def json_strings(value: Any, fields: Optional[Sequence[str]], exclude: Optional[Sequence[str]]) -> List[Tuple[Tuple[Any, ...], str]]:
    """(path, string) of every string of ``value`` to analyze (module docstring), in document order."""
    include = None if fields is None else set(fields)
    skip = set(exclude or ())
    out: List[Tuple[Tuple[Any, ...], str]] = []

    def walk(node: Any, path: Tuple[Any, ...], selected: bool) -> None:
        if isinstance(node, str):
            if selected:
                out.append((path, node))
        elif isinstance(node, dict):
            for k, v in node.items():
                if k in skip:
                    continue
                walk(v, path + (k,), selected or (include is not None and k in include))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,), selected)

    walk(value, (), include is None)
    return out


def json_rebuild(value: Any, paths: Sequence[Tuple[Any, ...]], results: Sequence[Any], other: Callable[[Any], Any]) -> Any:
    """``value`` with the string at each of ``paths`` replaced by its result and every other
    leaf by ``other(leaf)``; objects and lists keep their shape."""
    by_path = dict(zip(paths, results))

    def build(node: Any, path: Tuple[Any, ...]) -> Any:
        if path in by_path:
            return by_path[path]
        if isinstance(node, dict):
            return {k: build(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [build(v, path + (i,)) for i, v in enumerate(node)]
        return other(node)

    return build(value, ())


def json_path(path: Sequence[Any], root: str = "json") -> str:
    """``json[0].address.street``; a key that is not an identifier as ``["key"]`` (answers only:
    errors name paths with requests.safe_path)."""
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def error_path(path: Sequence[Any], body: Dict[str, Any], known: Sequence[str]) -> str:
    """A path into ``body["json"]`` for an error body: keys the server publishes or the request
    named in ``fields``/``exclude_fields`` as they are, any other key as ``#N`` (its position)."""
    out = "json"
    node = body.get("json")
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part]
        else:
            out += f".{part}" if part in known else f".#{list(node).index(part)}"
            node = node[part]
    return out


# --- one request, from its inputs to its decisions -----------------------------------------
@dataclass
class Analysis:
    """The inputs and decisions of one /v1/analyze or /v1/redact request."""

    kind: str  # "text" | "texts" | "json"
    texts: List[str]
    paths: Optional[List[Tuple[Any, ...]]]  # "json": the path of each text
    extras: Extras
    thresholds: Dict[str, float]
    decisions: List[Decision]
    n_windows: List[int]
    allow_counts: Dict[str, int]

    def per_text(self, values: Sequence[Any]) -> Any:
        """``values`` (one per text) in the request's shape: one value, a list, or {path: value}."""
        if self.kind == "text":
            return values[0]
        if self.kind == "texts":
            return list(values)
        assert self.paths is not None
        return {json_path(p): v for p, v in zip(self.paths, values)}

    def entities_out(self, i: int, model: ServedModel, return_text: bool, overridden: Sequence[str], digits: int) -> List[Dict[str, Any]]:
        """The reported entities of text ``i`` as answered: offsets in the request's unit."""
        text = self.texts[i]
        entities = self.decisions[i].entities
        spans = convert_offsets(text, [(c.start, c.end) for c, _ in entities], self.extras.offset_unit)
        out = []
        for (c, threshold), (start, end) in zip(entities, spans):
            row: Dict[str, Any] = {
                "entity_type": c.label,
                "start": start,
                "end": end,
                "score": None if c.score is None else round(c.score, digits),
                "threshold": None if threshold is None else round(threshold, digits),
                "source": c.source,
            }
            if return_text:
                row["text"] = text[c.start : c.end]
            if self.extras.explain:
                row["decision_process"] = decision_process(c, threshold, model, overridden, self.n_windows[i], digits)
            out.append(row)
        return out


def request_texts(req: Any, service: Any, model: ServedModel, audit: Dict[str, Any]) -> Tuple[str, List[str], Optional[List[Tuple[Any, ...]]]]:
    """Exactly one of ``text``, ``texts``, ``json``, within the limits; (kind, texts, json paths).

    RAISES (ApiError): 422 none or several given, ``fields`` without ``json``; 413 over a limit.
    """
    given = [name for name, value in (("text", req.text), ("texts", req.texts), ("json", req.json_input)) if value is not None]
    if len(given) != 1:
        raise ApiError(422, "invalid_field", "give exactly one of text (a string), texts (a list of strings) and json (an object or a list of records)", "text")
    kind = given[0]
    if kind != "json" and (req.fields is not None or req.exclude_fields is not None):
        raise ApiError(422, "invalid_field", "fields and exclude_fields select strings of json: send json", "fields" if req.fields is not None else "exclude_fields")
    if kind in ("text", "texts"):
        texts = [req.text] if kind == "text" else list(req.texts)
        audit.update({"n_texts": len(texts), "input_chars": sum(len(t) for t in texts)})
        service.check_texts(model, texts, kind)
        return kind, texts, None
    value = req.json_input
    if not isinstance(value, (dict, list)):
        raise ApiError(422, "invalid_field", f"json must be an object or a list of records, not {type(value).__name__}", "json")
    found = json_strings(value, req.fields, req.exclude_fields)
    audit.update({"n_texts": len(found), "input_chars": sum(len(t) for _, t in found), "json": True})
    limit = service.settings.max_json_strings
    if len(found) > limit:
        raise ApiError(413, "too_many_texts", f"json holds {len(found)} strings to analyze; the limit is {limit} (fields / exclude_fields select fewer)", "json")
    known = set(FEATURE_NAMES) | set(req.fields or ()) | set(req.exclude_fields or ())
    for path, text in found:
        if len(text) > model.nlp.max_length:
            where = error_path(path, {"json": value}, sorted(known))
            raise ApiError(413, "text_too_long", f"{where} has {len(text)} characters; the limit is {model.nlp.max_length}", where)
    total = sum(len(t) for _, t in found)
    if total > service.settings.queue_chars:
        raise ApiError(413, "request_too_large", f"the request holds {total} characters; the server queues at most {service.settings.queue_chars}", "json")
    return kind, [t for _, t in found], [p for p, _ in found]


async def analyze_request(service: Any, model: ServedModel, req: Any, deadline: float, redaction: bool, audit: Dict[str, Any]) -> Analysis:
    """Check a request, predict its texts, add the request's and the policy's candidates and decide.

    service (Service): the worker's service (limits, thresholds, the batcher).
    redaction (bool): /v1/redact (the policy's rules on leaving text visible apply).
    audit (Dict[str, Any]): the request's audit record (counts only, never a request string).
    """
    kind, texts, paths = request_texts(req, service, model, audit)
    extras = request_extras(req, model, service.policy, redaction)
    if extras.recognizers:
        audit["ad_hoc_recognizers"] = len(extras.recognizers)
    if redaction:
        types = service.check_redact_types(model, req.entities, extras.ad_hoc_types)
    else:
        types = service.check_types(model, req.entities, extras.ad_hoc_types)
    thresholds = service.effective_thresholds(model, req.thresholds)
    predicted = await service.predict(texts, deadline) if texts else []
    decisions, windows = [], []
    totals = {"removed": 0, "kept_by_policy": 0, "policy_allow_list": 0}

    def added() -> List[Tuple[List[Candidate], Dict[str, int]]]:
        return [add_candidates(text, candidates, extras, service.policy, service.deny_recognizers) for text, candidates in zip(texts, predicted)]

    if extras.recognizers:
        # a request's regexes may each take up to their time bound per text: in a worker thread
        # under the request's deadline (as /analyze runs them), never on the event loop
        try:
            found = await asyncio.wait_for(asyncio.to_thread(added), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise service.deadline_error() from None
    else:
        found = added()
    for text, candidates, (kept, counts) in zip(texts, predicted, found):
        for k, v in counts.items():
            totals[k] += v
        decisions.append(decide(kept, thresholds, types))
        windows.append(int(getattr(candidates, "n_windows", 1)))
    if req.allow_list is not None or totals["policy_allow_list"]:
        audit["allow_list"] = totals
    if any(n > 1 for n in windows):
        audit["windowed_texts"] = sum(1 for n in windows if n > 1)
    return Analysis(kind, texts, paths, extras, thresholds, decisions, windows, totals)
