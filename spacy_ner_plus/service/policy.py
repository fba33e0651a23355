"""The operator policy: what a request may choose, per entity type (``serve --policy PATH``).

The operator, not the client, decides whether a type is redacted. Per type
(and a ``[default]`` for the others) the policy says:
- ``operators``: the operators a request may choose;
- ``default_operator``: what is applied when the request names none;
- ``always_redact``: no request can leave the type's text visible: ``keep``,
  ``mask`` with ``chars_to_mask = 0``, a ``replace`` whose ``new_value``
  contains the entity's text and an ``entities`` list on /v1/redact that
  leaves the type out are all refused;
- ``mask_max_visible``: the most characters a mask leaves visible (a request's
  ``chars_to_mask`` is raised to meet it);
- ``client_may_exclude``: whether an ``entities`` list on /v1/redact may
  leave the type out;
- ``min_threshold`` / ``max_threshold``: the floor and ceiling of a request's
  threshold (intersected with --min-threshold/--max-threshold);
- ``max_new_value_chars``: the longest ``replace.new_value``;
- ``allow_list``: texts never reported as the type (exact, case-sensitive: the
  operator's own list, e.g. the company's public switchboard number);
- ``deny_list`` (``[types.X]`` only): words and phrases always reported as the
  type (case-insensitive, on word boundaries; source "deny_list", score 1.0);
- ``client_allow_list``: whether a request's ``allow_list`` may clear the type on
  /v1/redact (an allow list is a way for a client to switch redaction off, so
  it contradicts ``always_redact``; default false). A request allow list that no
  reported type permits is refused; one that matches an entity of a type that
  does not permit it leaves that entity redacted (counted as kept_by_policy).
Top level: ``audit_failure`` ("fail": a request whose audit record cannot be
written gets 503 and no output; "log": it is answered and the failure logged)
and ``max_output_chars`` (the longest redacted text the service builds).

With no file the built-in default applies: every type redacted, ``keep`` off,
no type can be left out, thresholds bounded by the command line only.
A request outside the policy gets 403 naming the rule, never quoting the request.
The file is checked at start-up; errors name the file and the key.
docs/service-policy.md documents the format with a full example.
"""
import bisect
import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from .operators import DEFAULT_KEY, OPERATOR_NAMES, Operator, OperatorError, parse_operators

POLICY_VERSION = 1
AUDIT_FAILURE_MODES = ("fail", "log")
BUILT_IN = "the built-in default policy"
_TYPE_KEYS = {
    "operators": list,
    "default_operator": dict,
    "always_redact": bool,
    "client_may_exclude": bool,
    "mask_max_visible": int,
    "min_threshold": float,
    "max_threshold": float,
    "max_new_value_chars": int,
    "allow_list": list,
    "deny_list": list,
    "client_allow_list": bool,
}
_TOP_KEYS = {"version", "audit_failure", "max_output_chars", "default", "types"}
_BUILT_IN_TYPE: Dict[str, Any] = {
    "operators": ["replace", "mask", "redact", "hash"],
    "default_operator": {"type": "replace"},
    "always_redact": True,
    "client_may_exclude": False,
    "max_new_value_chars": 64,
    "allow_list": [],
    "deny_list": [],
    "client_allow_list": False,
}
MAX_POLICY_LIST = 100_000
DEFAULT_MAX_OUTPUT_CHARS = 4_000_000


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


class PolicyViolation(Exception):
    """A request outside the policy (answered 403).

    rule (str): the policy key that forbids it, e.g. "types.PER.operators".
    field (str): the request field, e.g. "operators.PER".
    """

    def __init__(self, rule: str, field: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field


@dataclass(frozen=True)
class TypePolicy:
    """The rules of one entity type; ``origin`` says which policy key set each (for messages)."""

    operators: Tuple[str, ...]
    default_operator: Operator
    always_redact: bool
    client_may_exclude: bool
    mask_max_visible: Optional[int]
    min_threshold: Optional[float]
    max_threshold: Optional[float]
    max_new_value_chars: int
    origin: Mapping[str, str]
    allow_list: FrozenSet[str] = frozenset()
    deny_list: Tuple[str, ...] = ()
    client_allow_list: bool = False

    def describe(self) -> Dict[str, Any]:
        return {
            "operators": list(self.operators),
            "default_operator": self.default_operator.to_dict(),
            "always_redact": self.always_redact,
            "client_may_exclude": self.client_may_exclude,
            "mask_max_visible": self.mask_max_visible,
            "min_threshold": self.min_threshold,
            "max_threshold": self.max_threshold,
            "max_new_value_chars": self.max_new_value_chars,
            # the lists' sizes, not their words: a deny list can name what it protects
            "allow_list_entries": len(self.allow_list),
            "deny_list_entries": len(self.deny_list),
            "client_allow_list": self.client_allow_list,
        }


@dataclass(frozen=True)
class Policy:
    """A checked operator policy (module docstring)."""

    source: str
    default: TypePolicy
    types: Mapping[str, TypePolicy]
    audit_failure: str = "fail"
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS

    def for_type(self, label: str) -> TypePolicy:
        return self.types.get(label, self.default)

    @property
    def name(self) -> str:
        """The policy as clients see it named: the file's name, not its path on the server."""
        return self.source if self.source == BUILT_IN else Path(self.source).name

    def rule(self, key: str) -> str:
        """A rule as answers to clients cite it: the key and the file's name."""
        return f"{key} in {self.name}"

    # --- at start-up, once the model is known -------------------------------------
    def bind(
        self,
        model_labels: Sequence[str],
        pattern_labels: Sequence[str],
        thresholds: Mapping[str, float],
        min_thresholds: Mapping[str, float],
        max_thresholds: Mapping[str, float],
        hash_available: bool,
    ) -> Tuple[Dict[str, float], Dict[str, float]]:
        """Check the policy against the served model; the threshold bounds both allow.

        model_labels / pattern_labels (Sequence[str]): the model's types, the pattern types.
        thresholds (Mapping[str, float]): the pipeline's threshold per model type.
        min_thresholds / max_thresholds (Mapping[str, float]): --min-threshold/--max-threshold
            ("" holds every other type), as ServeSettings has them.
        hash_available (bool): whether the hash operator has a key.
        RETURNS (Tuple[Dict[str, float], Dict[str, float]]): min and max bounds per type for
            ServedModel: the tighter of the command line's and the policy's.
        RAISES (PolicyError): a type the model lacks, a threshold for a pattern type, bounds that
            exclude the pipeline's threshold, a default operator that needs a missing key.
        """
        known = set(model_labels) | set(pattern_labels)
        for label in self.types:
            if label not in known:
                raise PolicyError(f"{self.source}: [types.{label}]: the model has no type {label} (types: {sorted(known)})")
        for label in sorted(known):
            tp = self.for_type(label)
            if tp.default_operator.name == "hash" and not hash_available:
                raise PolicyError(
                    f"{self.source}: {tp.origin['default_operator']}: the default operator of {label} is hash, but the server has no hash key "
                    "(--hash-key-file or $NER_PLUS_HASH_KEY)"
                )
            if label not in thresholds and (tp.min_threshold is not None or tp.max_threshold is not None) and label in self.types:
                which = "min_threshold" if tp.min_threshold is not None else "max_threshold"
                raise PolicyError(f"{self.source}: {tp.origin[which]}: {label} is a pattern type; rule matches have no threshold")
        lows = dict(min_thresholds)
        highs = dict(max_thresholds)
        for label, t in thresholds.items():
            tp = self.for_type(label)
            lo = float(min_thresholds.get(label, min_thresholds.get("", 0.0)))
            hi = float(max_thresholds.get(label, max_thresholds.get("", t)))
            if tp.min_threshold is not None:
                lo = max(lo, tp.min_threshold)
            if tp.max_threshold is not None:
                hi = min(hi, tp.max_threshold)
            if not lo <= t <= hi:
                if tp.min_threshold is not None and tp.min_threshold > t:
                    key = tp.origin["min_threshold"]
                elif tp.max_threshold is not None and tp.max_threshold < t:
                    key = tp.origin["max_threshold"]
                else:
                    continue  # the command line's own bounds: ServedModel says what is wrong with them
                raise PolicyError(
                    f"{self.source}: {key}: the bounds of {label} would be [{lo}, {hi}], which excludes the pipeline's own threshold "
                    f"({t:.4f}); move the bound or the pipeline's threshold"
                )
            lows[label], highs[label] = lo, hi
        return lows, highs

    # --- per request ----------------------------------------------------------------
    def resolve_operators(self, requested: Mapping[str, Operator], labels: Iterable[str]) -> Dict[str, Operator]:
        """The operator of every type for one /v1/redact request.

        requested (Mapping[str, Operator]): the request's operators (parse_operators), per type and/or DEFAULT.
        labels (Iterable[str]): every type the service reports.
        RETURNS (Dict[str, Operator]): operator per type, with the policy's max_visible/hide_original set.
        RAISES (PolicyViolation): an operator the type's policy does not allow.
        """
        out: Dict[str, Operator] = {}
        for label in labels:
            tp = self.for_type(label)
            op = requested.get(label) or requested.get(DEFAULT_KEY)
            if op is None:
                # the operator's own choice: checked at start-up; its new_value is trusted
                out[label] = dataclasses.replace(tp.default_operator, max_visible=tp.mask_max_visible)
                continue
            self._check_choice(label, tp, op)
            out[label] = dataclasses.replace(op, max_visible=tp.mask_max_visible, hide_original=tp.always_redact, rule=self.rule(tp.origin["always_redact"]))
        return out

    def _check_choice(self, label: str, tp: TypePolicy, op: Operator) -> None:
        where = op.where or f"operators.{label}"
        if op.name not in tp.operators:
            raise PolicyViolation(
                tp.origin["operators"], where,
                f"{where}: the operator '{op.name}' is not allowed for {label} (allowed: {', '.join(tp.operators)}; rule {self.rule(tp.origin['operators'])})",
            )  # fmt: skip
        if tp.always_redact and op.name == "mask" and op.chars_to_mask == 0:
            raise PolicyViolation(
                tp.origin["always_redact"], f"{where}.chars_to_mask",
                f"{where}.chars_to_mask: masking 0 characters leaves {label} visible, and {label} is always redacted (rule {self.rule(tp.origin['always_redact'])})",
            )  # fmt: skip
        if op.name == "replace" and op.new_value is not None and len(op.new_value) > tp.max_new_value_chars:
            raise PolicyViolation(
                tp.origin["max_new_value_chars"], f"{where}.new_value",
                f"{where}.new_value has {len(op.new_value)} characters; the most for {label} is {tp.max_new_value_chars} "
                f"(rule {self.rule(tp.origin['max_new_value_chars'])})",
            )  # fmt: skip

    def check_entities(self, types: Optional[Sequence[str]], labels: Iterable[str]) -> None:
        """Refuse an ``entities`` list on /v1/redact that leaves out a type the policy keeps in.

        RAISES (PolicyViolation): a left-out type that is always redacted or may not be excluded.
        """
        if types is None:
            return
        wanted = set(types)
        for label in sorted(set(labels) - wanted):
            tp = self.for_type(label)
            if not tp.client_may_exclude:
                key = tp.origin["always_redact"] if tp.always_redact else tp.origin["client_may_exclude"]
                raise PolicyViolation(
                    key, "entities",
                    f"entities leaves out {label}, which a request may not exclude from redaction (rule {self.rule(key)})",
                )  # fmt: skip

    def check_allow_list(self, labels: Iterable[str], endpoint: str = "/v1/redact") -> FrozenSet[str]:
        """The types a request's ``allow_list`` may clear on a redaction (``client_allow_list``).

        labels (Iterable[str]): the types the request reports.
        RETURNS (FrozenSet[str]): the types whose policy permits a client allow list.
        RAISES (PolicyViolation): no type of ``labels`` permits one (the list could only be refused).
        """
        labels = sorted(set(labels))
        permitted = frozenset(label for label in labels if self.for_type(label).client_allow_list)
        if not permitted and labels:
            key = self.for_type(labels[0]).origin["client_allow_list"]
            raise PolicyViolation(
                key, "allow_list",
                f"allow_list: this server's policy lets no reported type be cleared by a request's allow list on {endpoint} (rule {self.rule(key)})",
            )  # fmt: skip
        return permitted

    def deny_lists(self) -> Dict[str, Tuple[str, ...]]:
        """The ``deny_list`` words per type (types without one left out)."""
        return {label: tp.deny_list for label, tp in self.types.items() if tp.deny_list}

    def describe(self, labels: Iterable[str]) -> Dict[str, Any]:
        """The policy as /v1/config shows it."""
        return {
            "source": self.name,
            "audit_failure": self.audit_failure,
            "max_output_chars": self.max_output_chars,
            "types": {label: self.for_type(label).describe() for label in sorted(labels)},
        }


# --- loading --------------------------------------------------------------------------
def load_policy(path: Optional[str]) -> Policy:
    """The policy in ``path`` (TOML; .yaml/.yml with PyYAML), or the built-in default for None.

    RAISES (PolicyError): an unreadable or invalid file (the message names the file and the key).
    """
    if path is None:
        return policy_from_dict({}, BUILT_IN)
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise PolicyError(f"cannot read the policy file {path}: {err.strerror}") from None
    suffix = file.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(raw.decode("utf8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise PolicyError(f"{path}: not valid TOML: {err}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise PolicyError(f"{path}: a YAML policy needs PyYAML (pip install pyyaml), or write it as TOML") from None
        try:
            data = yaml.safe_load(raw.decode("utf8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise PolicyError(f"{path}: not valid YAML: {err}") from None
        if data is None:
            data = {}
    else:
        raise PolicyError(f"{path}: a policy file ends in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a table (mapping) at the top level")
    return policy_from_dict(data, str(path))


def policy_from_dict(data: Mapping[str, Any], source: str) -> Policy:
    """Check a parsed policy (load_policy); ``source`` names it in errors."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PolicyError(f"{source}: unknown key '{unknown[0]}' (known: {sorted(_TOP_KEYS)})")
    version = data.get("version", POLICY_VERSION)
    if version != POLICY_VERSION or isinstance(version, bool):
        raise PolicyError(f"{source}: version: this release reads policy version {POLICY_VERSION}, not {version!r}")
    audit_failure = data.get("audit_failure", "fail")
    if audit_failure not in AUDIT_FAILURE_MODES:
        raise PolicyError(f"{source}: audit_failure must be one of {list(AUDIT_FAILURE_MODES)}, not {audit_failure!r}")
    max_output = data.get("max_output_chars", DEFAULT_MAX_OUTPUT_CHARS)
    if not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 1:
        raise PolicyError(f"{source}: max_output_chars must be a whole number >= 1")
    default_spec = _table(data.get("default", {}), source, "default")
    default_values = {k: (v, f"default.{k} (built-in)") for k, v in _BUILT_IN_TYPE.items()}
    default_values.update({k: (v, f"default.{k}") for k, v in _checked_keys(default_spec, source, "default").items()})
    default = _type_policy(default_values, source, "default")
    types: Dict[str, TypePolicy] = {}
    for label, spec in _table(data.get("types", {}), source, "types").items():
        values = dict(default_values)
        values.update({k: (v, f"types.{label}.{k}") for k, v in _checked_keys(_table(spec, source, f"types.{label}"), source, f"types.{label}").items()})
        types[label] = _type_policy(values, source, f"types.{label}")
    return Policy(source, default, types, audit_failure, max_output)


def _table(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: {where} must be a table (mapping), not {type(value).__name__}")
    return value


def _checked_keys(spec: Mapping[str, Any], source: str, where: str) -> Dict[str, Any]:
    """The keys of one [default] or [types.X] table, each of the right type."""
    out: Dict[str, Any] = {}
    for key, value in spec.items():
        expected = _TYPE_KEYS.get(key)
        if expected is None:
            raise PolicyError(f"{source}: {where}.{key}: unknown key (known: {sorted(_TYPE_KEYS)})")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise PolicyError(f"{source}: {where}.{key} must be a {_TYPE_NAMES[expected]}, not {type(value).__name__}")
        out[key] = value
    return out


_TYPE_NAMES = {list: "list of strings", dict: "table like { type = \"replace\" }", bool: "boolean", int: "whole number", float: "number"}


def _type_policy(values: Mapping[str, Tuple[Any, str]], source: str, where: str) -> TypePolicy:
    origin = {k: o for k, (_, o) in values.items()}
    get = {k: v for k, (v, _) in values.items()}
    for key in _TYPE_KEYS:
        origin.setdefault(key, f"{where}.{key}")
    operators = get["operators"]
    for key in ("operators", "allow_list", "deny_list"):
        values = get[key]
        if len(values) > MAX_POLICY_LIST:
            raise PolicyError(f"{source}: {origin[key]} has {len(values)} entries; the most is {MAX_POLICY_LIST}")
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise PolicyError(f"{source}: {origin[key]}[{i}] must be a non-empty string")
    deny = tuple(get["deny_list"])
    if deny and where == "default":
        raise PolicyError(f"{source}: {origin['deny_list']}: a deny list names its type: put it in [types.TYPE]")
    if deny:
        from .adhoc import deny_index
        from .requests import ApiError

        try:
            deny_index(deny, origin["deny_list"])
        except ApiError as err:
            raise PolicyError(f"{source}: {err.message}") from None
    if get["client_allow_list"] and get["always_redact"]:
        raise PolicyError(f"{source}: {origin['client_allow_list']} = true contradicts {origin['always_redact']} = true (an allow list leaves text visible)")
    for i, name in enumerate(operators):
        if name not in OPERATOR_NAMES:
            raise PolicyError(f"{source}: {origin['operators']}[{i}]: unknown operator {name!r} (known: {list(OPERATOR_NAMES)})")
    always = get["always_redact"]
    if always and "keep" in operators:
        raise PolicyError(f"{source}: {origin['operators']}: 'keep' contradicts {origin['always_redact']} = true")
    if always and get["client_may_exclude"]:
        raise PolicyError(f"{source}: {origin['client_may_exclude']} = true contradicts {origin['always_redact']} = true")
    try:
        default_op = parse_operators({DEFAULT_KEY: get["default_operator"]}, [])[DEFAULT_KEY]
    except OperatorError as err:
        raise PolicyError(f"{source}: {origin['default_operator']}: {err}") from None
    if always and (default_op.name == "keep" or (default_op.name == "mask" and default_op.chars_to_mask == 0)):
        raise PolicyError(f"{source}: {origin['default_operator']}: this operator leaves the text visible, contradicting {origin['always_redact']} = true")
    max_new = get["max_new_value_chars"]
    if max_new < 0:
        raise PolicyError(f"{source}: {origin['max_new_value_chars']} must be >= 0")
    if default_op.new_value is not None and len(default_op.new_value) > max_new:
        raise PolicyError(f"{source}: {origin['default_operator']}: new_value is longer than {origin['max_new_value_chars']} ({max_new})")
    visible = get.get("mask_max_visible")
    if visible is None and always:
        visible = 0  # an always-redacted type shows nothing unless the policy says how much
    if visible is not None and visible < 0:
        raise PolicyError(f"{source}: {origin['mask_max_visible']} must be >= 0")
    lo, hi = get.get("min_threshold"), get.get("max_threshold")
    for key, value in (("min_threshold", lo), ("max_threshold", hi)):
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise PolicyError(f"{source}: {origin[key]} must lie in [0, 1]")
    if lo is not None and hi is not None and lo > hi:
        raise PolicyError(f"{source}: {origin['min_threshold']} ({lo}) is above {origin['max_threshold']} ({hi})")
    return TypePolicy(
        operators=tuple(operators),
        default_operator=default_op,
        always_redact=always,
        client_may_exclude=get["client_may_exclude"],
        mask_max_visible=visible,
        min_threshold=lo,
        max_threshold=hi,
        max_new_value_chars=max_new,
        origin=origin,
        allow_list=frozenset(get["allow_list"]),
        deny_list=deny,
        client_allow_list=get["client_allow_list"],
    )


def audit_counts(items: Sequence[Any], entities: Sequence[Any]) -> List[Tuple[str, str, str]]:
    """(type, applied operator, outcome) per entity of one redaction; outcome is "redacted"
    (nothing of it visible), "partly_redacted" or "left_visible" (e.g. keep, a mask of 0 characters).

    items (Sequence[RedactedItem]): what operators.redact returned (regions, input offsets kept).
    entities (Sequence[Entity]): the entities it redacted; each lies inside one region.
    """
    regions = sorted(items, key=lambda i: i.input_start)
    starts = [i.input_start for i in regions]
    out = []
    for e in entities:
        region = regions[bisect.bisect_right(starts, e.start) - 1]
        length = region.input_end - region.input_start
        outcome = "redacted" if region.visible_chars == 0 else "left_visible" if region.visible_chars >= length else "partly_redacted"
        out.append((e.entity_type, region.operator, outcome))
    return out
