"""The kube-scheduler extender wire protocol (k8s.io/kube-scheduler/extender/v1), decoded strictly.

kube-scheduler marshals Go structs without JSON tags, so keys are Go field names (`Pod`, `Nodes`,
`NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`). Go's decoder is
case-insensitive, so lower-case keys from hand-written clients are accepted as well. orjson does the
byte work: at 5,000 nodes the codec, not the scoring, dominates the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from extender.ranking import Scores
    from extender.snapshot import Snapshot

MAX_EXTENDER_SCORE = 10


class ProtocolError(ValueError):
    """The request is not a usable ExtenderArgs; the message says precisely why."""


@dataclass(frozen=True)
class ExtenderArgs:
    """A decoded request: the pod, and either candidate node names or full Node objects."""

    pod: dict[str, Any]
    node_names: list[str]
    # Present when kube-scheduler runs the extender with nodeCacheCapable=false; echoed back by filter.
    nodes: list[dict[str, Any]] | None


def _get(obj: dict[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def decode_args(body: bytes, max_nodes: int) -> ExtenderArgs:
    """Parse and validate ExtenderArgs; every rejection names the offending field."""
    if not body:
        raise ProtocolError("empty request body: expected ExtenderArgs JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"ExtenderArgs must be a JSON object, got {type(data).__name__}")
    pod = _get(data, "Pod")
    if pod is None:
        raise ProtocolError("ExtenderArgs.Pod is missing")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise ProtocolError("ExtenderArgs.Pod must be a Pod object with metadata")
    if not pod["metadata"].get("name"):
        raise ProtocolError("ExtenderArgs.Pod.metadata.name is missing")
    raw_names = _get(data, "NodeNames")
    raw_nodes = _get(data, "Nodes")
    nodes: list[dict[str, Any]] | None = None
    if raw_names is not None:
        # Type check by set of types: C-level, where a per-name generator costs ~30 us per 1,000 names.
        if not isinstance(raw_names, list) or (raw_names and (set(map(type, raw_names)) != {str} or "" in raw_names)):
            raise ProtocolError("ExtenderArgs.NodeNames must be a list of non-empty strings")
        names: list[str] = raw_names
    elif raw_nodes is not None:
        items = raw_nodes.get("items") if isinstance(raw_nodes, dict) else None
        if not isinstance(items, list):
            raise ProtocolError("ExtenderArgs.Nodes must be a NodeList with an items array")
        names = []
        for i, node in enumerate(items):
            name = (node.get("metadata") or {}).get("name") if isinstance(node, dict) else None
            if not isinstance(name, str) or not name:
                raise ProtocolError(f"ExtenderArgs.Nodes.items[{i}].metadata.name is missing")
            names.append(name)
        nodes = items
    else:
        raise ProtocolError("ExtenderArgs has neither NodeNames nor Nodes")
    if len(names) > max_nodes:
        raise ProtocolError(f"ExtenderArgs lists {len(names)} nodes, more than the limit of {max_nodes}")
    return ExtenderArgs(pod=pod, node_names=names, nodes=nodes)


def _reason(text: str) -> str:
    """kube-scheduler passes failure reasons through a format string: a bare % garbles the message."""
    return text.replace("%", " pct")


def encode_filter_result(
    args: ExtenderArgs | None,
    passed: list[str],
    failed: dict[str, str],
    unresolvable: dict[str, str],
    error: str = "",
) -> bytes:
    """ExtenderFilterResult, answering in the same shape (names or NodeList) the request used."""
    result: dict[str, Any] = {
        "FailedNodes": {k: _reason(v) for k, v in failed.items()},
        "FailedAndUnresolvableNodes": {k: _reason(v) for k, v in unresolvable.items()},
        "Error": error,
    }
    if args is not None and args.nodes is not None:
        keep = set(passed)
        result["Nodes"] = {"items": [n for n in args.nodes if n["metadata"]["name"] in keep]}
        result["NodeNames"] = None
    else:
        result["NodeNames"] = passed
        result["Nodes"] = None
    return orjson.dumps(result)


_SCORE_ITEM_END = [b"%d}," % i for i in range(MAX_EXTENDER_SCORE + 1)]
_SCORE_LAST_END = [b"%d}" % i for i in range(MAX_EXTENDER_SCORE + 1)]


def host_prefixes(snapshot: Snapshot) -> list[bytes]:
    """`{"Host":"<name>","Score":` per snapshot row, encoded once per generation (`prepare`).

    One more entry than rows: the ranking's row for names APOLLO does not know, encoded per request.
    """
    cached: list[bytes] | None = snapshot.memo.get("host_prefixes")
    if cached is None:
        cached = [b'{"Host":' + orjson.dumps(name) + b',"Score":' for name in snapshot.names]
        cached.append(b"")
        snapshot.memo["host_prefixes"] = cached
    return cached


def prepare(snapshot: Snapshot) -> Snapshot:
    """Encode what every prioritize reply repeats, off the request path (the refresher calls this)."""
    host_prefixes(snapshot)
    return snapshot


def encode_priorities(scores: Scores) -> bytes:
    """HostPriorityList: [{"Host": ..., "Score": 0..10}, ...].

    Interleaves per-row encoded prefixes with the eleven possible score endings and joins them once, all
    at C speed: measured against a list of dicts through orjson, 0.31 vs 0.45 ms at 1,000 nodes and
    1.1 vs 3.7 ms at 5,000 (no per-item bytes objects are built). Names APOLLO does not know (no row)
    are encoded on the spot. Scores are 0-10 by construction (ranking clips them), which is what the
    ending table holds.
    """
    snap, listed = scores.snapshot, scores.rows
    if snap is None or listed is None:  # fail-open answers: neutral scores, no rows
        return orjson.dumps(
            [{"Host": host, "Score": score} for host, score in zip(scores.names, scores.scores, strict=True)]
        )
    count = len(listed.rows)
    if count == 0:
        return b"[]"
    table = host_prefixes(snap)
    parts: list[bytes] = [b""] * (2 * count)
    if count > 1:
        parts[0::2] = itemgetter(*listed.rows.tolist())(table)
        parts[1::2] = itemgetter(*scores.scores)(_SCORE_ITEM_END)
    else:
        parts[0] = table[int(listed.rows[0])]
    parts[-1] = _SCORE_LAST_END[scores.scores[-1]]
    for i in listed.unknown:
        parts[2 * i] = b'{"Host":' + orjson.dumps(scores.names[i]) + b',"Score":'
    return b"[" + b"".join(parts) + b"]"
