"""Parsing of REST requests: bytes and query strings in, typed requests or one precise error out.

Pure (no Flask, no Kubernetes), so every bad-input case is a unit test and the parser can be driven
by property-based tests. Each body is described once by a table of `Field`s; the same table
validates requests and renders the OpenAPI request schemas, so the document cannot drift from
what is accepted.

Errors: malformed input (not JSON, not an object, unknown or missing fields, wrong types, malformed
names) is `InvalidArgument` (400); a well-formed value the API cannot act on (a timeout out of range,
the source equal to the target) is `Unprocessable` (422). Both name the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from apollo_api.podmigration import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    Phase,
    PodMigrationSpec,
)
from common.errors import InvalidArgument, Unprocessable
from orchestrator.preflight import check_spec

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# The seed's status vocabulary, and the phases each stands for.
STATUS_OF_PHASE = {
    Phase.PENDING: "pending",
    Phase.CAPTURING: "running",
    Phase.EVICTING: "running",
    Phase.RESCHEDULING: "running",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "cancelled",
}
PHASES_OF_STATUS: dict[str, frozenset[str]] = {
    status: frozenset(p for p, s in STATUS_OF_PHASE.items() if s == status) for status in set(STATUS_OF_PHASE.values())
}
MAX_REASON = 1024


def dns_label(name: str, value: str) -> None:
    """A namespace name: RFC 1123 label, at most 63 characters."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise InvalidArgument(
            f"{name} must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got {value!r}",
            field=name,
        )


def dns_subdomain(name: str, value: str) -> None:
    """A pod or node name: RFC 1123 subdomain, at most 253 characters."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise InvalidArgument(
            f"{name} must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253), "
            f"got {value!r}",
            field=name,
        )


def _optional(check: Callable[[str, str], None]) -> Callable[[str, str], None]:
    def wrapped(name: str, value: str) -> None:
        if value:
            check(name, value)

    return wrapped


def _timeout_range(name: str, value: int) -> None:
    if not MIN_TIMEOUT_SECONDS <= value <= MAX_TIMEOUT_SECONDS:
        raise Unprocessable(
            f"{name} must be between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS} seconds, got {value}",
            field=name,
        )


def _max_len(limit: int) -> Callable[[str, str], None]:
    def check(name: str, value: str) -> None:
        if len(value) > limit:
            raise InvalidArgument(f"{name} must be at most {limit} characters, got {len(value)}", field=name)

    return check


@dataclass(frozen=True)
class Field:
    """One member of a JSON request body: its type, whether it is required, its default and its check."""

    name: str
    kind: type
    doc: str
    required: bool = False
    default: Any = None
    check: Callable[[str, Any], None] | None = None
    schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return {str: "string", bool: "boolean", int: "integer"}[self.kind]

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type_name, "description": self.doc}
        if not self.required:
            out["default"] = self.default
        return out | dict(self.schema)


def _accepts(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def decode_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or InvalidArgument naming what is wrong with it."""
    if not body.strip():
        raise InvalidArgument("request body is empty; expected a JSON object", field="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"request body must be a JSON object, got {type(data).__name__}", field="body")
    return data


def parse_fields(data: Mapping[str, Any], fields: Sequence[Field]) -> dict[str, Any]:
    """Every field of `fields` from `data`: unknown ones refused, missing optional ones defaulted.

    JSON `null` for an optional field means "not given" (clients that serialise unset pointers send it).
    """
    known = {f.name for f in fields}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise InvalidArgument(
            f"unknown field {unknown[0]!r}; accepted fields: {', '.join(f.name for f in fields)}",
            field=unknown[0] or "body",
        )
    out: dict[str, Any] = {}
    for f in fields:
        value = data.get(f.name)
        if value is None:
            if f.required:
                raise InvalidArgument(f"missing required field {f.name!r} ({f.type_name})", field=f.name)
            out[f.name] = f.default
            continue
        if f.kind is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 300.0 from a client that only has doubles
        if not _accepts(f.kind, value):
            raise InvalidArgument(
                f"{f.name} must be a {f.type_name}, got {type(value).__name__} {_preview(value)}", field=f.name
            )
        if f.check is not None:
            f.check(f.name, value)
        out[f.name] = value
    return out


def _preview(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


_TIMEOUT = Field(
    "timeout",
    int,
    f"Seconds the whole migration may take before it fails ({MIN_TIMEOUT_SECONDS}..{MAX_TIMEOUT_SECONDS}).",
    default=DEFAULT_TIMEOUT_SECONDS,
    check=_timeout_range,
    schema={"minimum": MIN_TIMEOUT_SECONDS, "maximum": MAX_TIMEOUT_SECONDS},
)
_PRESERVE_PV = Field("preserve_pv", bool, "Keep the pod's existing PVCs (they are never deleted).", default=True)
_DRY_RUN = Field("dry_run", bool, "Validate (and for a batch, plan) without creating anything.", default=False)
_REASON = Field(
    "reason", str, "Why the migration was asked for (kept on the object).", default="", check=_max_len(MAX_REASON)
)

MIGRATION_FIELDS: tuple[Field, ...] = (
    Field("pod_name", str, "Name of the pod to migrate.", required=True, check=dns_subdomain),
    Field("pod_namespace", str, "Namespace of the pod.", required=True, check=dns_label),
    Field(
        "source_node",
        str,
        "Optional check: the node the pod must be on now. Empty: wherever it runs.",
        default="",
        check=_optional(dns_subdomain),
    ),
    Field(
        "target_node",
        str,
        "Node to move to (required placement). Empty: kube-scheduler and the extender choose.",
        default="",
        check=_optional(dns_subdomain),
    ),
    _PRESERVE_PV,
    _TIMEOUT,
    _DRY_RUN,
    _REASON,
)

BATCH_FIELDS: tuple[Field, ...] = (
    Field("source_node", str, "The node to move pods off.", required=True, check=dns_subdomain),
    Field(
        "label_selector",
        str,
        "Label selector of the pods to move (kubectl syntax: a=b,c!=d,e in (f,g),!h). Empty: every pod.",
        default="",
    ),
    Field(
        "namespace", str, "Only pods of this namespace. Empty: every namespace.", default="", check=_optional(dns_label)
    ),
    Field(
        "target_node",
        str,
        "Node every pod must move to. Empty: kube-scheduler and the extender choose per pod.",
        default="",
        check=_optional(dns_subdomain),
    ),
    _PRESERVE_PV,
    _TIMEOUT,
    _DRY_RUN,
    _REASON,
)


@dataclass(frozen=True)
class MigrationRequest:
    """A validated `POST /api/v1/migrations` body."""

    namespace: str
    spec: PodMigrationSpec


@dataclass(frozen=True)
class BatchRequest:
    """A validated `POST /api/v1/migrations/batch` body."""

    source_node: str
    selector: LabelSelector
    namespace: str
    target_node: str
    preserve_pv: bool
    timeout_seconds: int
    dry_run: bool
    reason: str


def parse_migration(body: bytes) -> MigrationRequest:
    values = parse_fields(decode_object(body), MIGRATION_FIELDS)
    spec = PodMigrationSpec(
        pod_name=values["pod_name"],
        source_node=values["source_node"],
        target_node=values["target_node"],
        preserve_pv=values["preserve_pv"],
        timeout_seconds=values["timeout"],
        dry_run=values["dry_run"],
        reason=values["reason"],
    )
    refusal = check_spec(spec)
    if refusal is not None:
        raise refusal
    return MigrationRequest(namespace=values["pod_namespace"], spec=spec)


def parse_batch(body: bytes) -> BatchRequest:
    values = parse_fields(decode_object(body), BATCH_FIELDS)
    if values["target_node"] and values["target_node"] == values["source_node"]:
        raise Unprocessable(
            f"source_node and target_node are both {values['source_node']!r}: a batch must move pods off the node",
            field="target_node",
        )
    return BatchRequest(
        source_node=values["source_node"],
        selector=parse_label_selector(values["label_selector"], field="label_selector"),
        namespace=values["namespace"],
        target_node=values["target_node"],
        preserve_pv=values["preserve_pv"],
        timeout_seconds=values["timeout"],
        dry_run=values["dry_run"],
        reason=values["reason"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Migration ids


def migration_id(namespace: str, name: str) -> str:
    """``<namespace>.<name>``: a namespace is a DNS label (no dots), so the first dot splits it back."""
    return f"{namespace}.{name}"


def parse_migration_id(value: str) -> tuple[str, str]:
    namespace, dot, name = value.partition(".")
    if not dot or not namespace or not name:
        raise InvalidArgument(
            f"migration id must be <namespace>.<name> (as returned in migration_id), got {value!r}", field="id"
        )
    dns_label("id", namespace)
    dns_subdomain("id", name)
    return namespace, name


# ---------------------------------------------------------------------------------------------------------------
# List filters


@dataclass(frozen=True)
class ListQuery:
    """Filters of `GET /api/v1/migrations` (and the namespace of `GET /api/v1/metrics`)."""

    namespace: str = ""
    phases: frozenset[str] = frozenset()
    node: str = ""
    batch: str = ""
    pod: str = ""


LIST_PARAMETERS: dict[str, str] = {
    "namespace": "Only migrations in this namespace. Absent: every namespace (needs cluster-wide list permission).",
    "phase": "Only these phases or statuses, comma-separated: Pending, Capturing, Evicting, Rescheduling, Succeeded, "
    "Failed, Cancelled, or the seed's pending, running, completed, failed, cancelled (case-insensitive).",
    "node": "Only migrations from or to this node (source, requested target or replacement's node).",
    "batch": "Only migrations created by this batch request (its batch_id).",
    "pod": "Only migrations of this pod.",
}
_PHASE_BY_LOWER = {p.lower(): p for p in Phase.ALL}


def parse_phases(value: str) -> frozenset[str]:
    phases: set[str] = set()
    for raw in value.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item in _PHASE_BY_LOWER:
            phases.add(_PHASE_BY_LOWER[item])
        elif item in PHASES_OF_STATUS:
            phases |= PHASES_OF_STATUS[item]
        else:
            accepted = ", ".join([*Phase.ALL, *sorted(PHASES_OF_STATUS)])
            raise InvalidArgument(f"unknown phase {raw.strip()!r}; accepted: {accepted}", field="phase")
    return frozenset(phases)


def parse_list_query(args: Mapping[str, str], allowed: Sequence[str] = tuple(LIST_PARAMETERS)) -> ListQuery:
    """Query parameters of a list call; unknown ones are refused (a typo must not widen the answer)."""
    unknown = sorted(k for k in args if k not in allowed)
    if unknown:
        raise InvalidArgument(
            f"unknown query parameter {unknown[0]!r}; accepted: {', '.join(allowed)}", field=unknown[0]
        )
    namespace = args.get("namespace", "")
    if namespace:
        dns_label("namespace", namespace)
    node = args.get("node", "")
    if node:
        dns_subdomain("node", node)
    pod = args.get("pod", "")
    if pod:
        dns_subdomain("pod", pod)
    batch = args.get("batch", "")
    if batch:
        dns_label("batch", batch)
    return ListQuery(namespace=namespace, phases=parse_phases(args.get("phase", "")), node=node, batch=batch, pod=pod)


# ---------------------------------------------------------------------------------------------------------------
# Label selectors (the kubectl string syntax and the LabelSelector object of PodDisruptionBudgets)

_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; no requirement selects everything (as in Kubernetes)."""

    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _label_key(key: str, field: str) -> str:
    prefix, slash, name = key.rpartition("/")
    ok = bool(_KEY_NAME.fullmatch(name)) and len(name) <= 63
    if slash:
        ok = ok and len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(prefix))
    if not ok:
        raise InvalidArgument(
            f"{field}: invalid label key {key!r} (optional DNS prefix and '/', then at most 63 letters, digits, "
            "'-', '_' or '.')",
            field=field,
        )
    return key


def _label_value(value: str, field: str) -> str:
    if len(value) > 63 or not _VALUE.fullmatch(value):
        raise InvalidArgument(
            f"{field}: invalid label value {value!r} (at most 63 letters, digits, '-', '_' or '.')", field=field
        )
    return value


def _split_top_level(text: str, field: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InvalidArgument(f"{field}: unbalanced ')' in {text!r}", field=field)
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise InvalidArgument(f"{field}: unbalanced '(' in {text!r}", field=field)
    parts.append("".join(current))
    return parts


_SET_EXPR = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


def parse_label_selector(text: str, field: str = "label_selector") -> LabelSelector:
    """kubectl's selector syntax: ``a=b``, ``a==b``, ``a!=b``, ``a in (b,c)``, ``a notin (b)``, ``a``, ``!a``."""
    if not text.strip():
        return LabelSelector((), "")
    requirements: list[Requirement] = []
    for raw in _split_top_level(text, field):
        term = raw.strip()
        if not term:
            raise InvalidArgument(f"{field}: empty requirement in {text!r}", field=field)
        set_match = _SET_EXPR.match(term)
        if set_match:
            values = [v.strip() for v in set_match["values"].split(",")]
            if not any(values):
                raise InvalidArgument(f"{field}: {term!r} needs at least one value", field=field)
            op = "In" if set_match["op"] == "in" else "NotIn"
            requirements.append(
                Requirement(_label_key(set_match["key"], field), op, frozenset(_label_value(v, field) for v in values))
            )
        elif "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(
                Requirement(_label_key(key.strip(), field), "NotIn", frozenset({_label_value(value.strip(), field)}))
            )
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            requirements.append(
                Requirement(_label_key(key.strip(), field), "In", frozenset({_label_value(value.strip(), field)}))
            )
        elif term.startswith("!"):
            requirements.append(Requirement(_label_key(term[1:].strip(), field), "DoesNotExist"))
        else:
            requirements.append(Requirement(_label_key(term, field), "Exists"))
    return LabelSelector(tuple(requirements), text.strip())


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector | None:
    """A metav1.LabelSelector (PDBs, workloads) as requirements; None selects nothing (absent selector).

    An empty object selects everything, as the Kubernetes API defines it for policy/v1 PDBs.
    """
    if selector is None:
        return None
    requirements = [
        Requirement(str(k), "In", frozenset({str(v)})) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    for expr in selector.get("matchExpressions") or []:
        op = str(expr.get("operator", ""))
        if op not in _OPERATORS:
            return None  # unknown operator: select nothing rather than guess
        requirements.append(Requirement(str(expr.get("key", "")), op, frozenset(expr.get("values") or [])))
    return LabelSelector(tuple(requirements))
