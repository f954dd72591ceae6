"""Property-based tests of the REST request parser (hypothesis).

The parser is the API's first line: whatever bytes arrive, it must either return a request that
round-trips the body's values or raise one of the two refusal kinds naming a field, never anything
else (an exception that escapes would be a 500).
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apollo_api.podmigration import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS
from common.errors import InvalidArgument, Unprocessable
from orchestrator.api.request import (
    BATCH_FIELDS,
    MIGRATION_FIELDS,
    LabelSelector,
    Requirement,
    parse_batch,
    parse_label_selector,
    parse_list_query,
    parse_migration,
    parse_migration_id,
)


def _encode(value: Any) -> bytes:
    """JSON as a client writes it (the standard library also writes integers beyond 64 bits)."""
    return json.dumps(value).encode()


_ALNUM = string.ascii_lowercase + string.digits
label = st.builds(
    lambda head, mid, tail: head + mid + tail,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-", max_size=20),
    st.sampled_from(_ALNUM),
).map(lambda s: s[:63])
subdomain = st.lists(label, min_size=1, max_size=3).map(".".join).filter(lambda s: len(s) <= 253)
timeouts = st.integers(MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)

valid_bodies = st.fixed_dictionaries(
    {"pod_name": subdomain, "pod_namespace": label},
    optional={
        "source_node": st.one_of(st.just(""), subdomain),
        "target_node": st.one_of(st.just(""), subdomain),
        "preserve_pv": st.booleans(),
        "timeout": timeouts,
        "dry_run": st.booleans(),
        "reason": st.text(max_size=100),
    },
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@given(valid_bodies)
def test_valid_bodies_round_trip(body: dict[str, Any]) -> None:
    same_node = body.get("source_node") and body.get("source_node") == body.get("target_node")
    assume(not same_node)
    req = parse_migration(_encode(body))
    assert req.namespace == body["pod_namespace"]
    assert req.spec.pod_name == body["pod_name"]
    assert req.spec.source_node == body.get("source_node", "")
    assert req.spec.target_node == body.get("target_node", "")
    assert req.spec.preserve_pv == body.get("preserve_pv", True)
    assert req.spec.timeout_seconds == body.get("timeout", 300)
    assert req.spec.dry_run == body.get("dry_run", False)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_accepted_or_refused_precisely(data: bytes) -> None:
    try:
        parse_migration(data)
    except (InvalidArgument, Unprocessable) as exc:
        assert exc.field and exc.message


@given(json_values)
def test_arbitrary_json_is_accepted_or_refused_precisely(value: Any) -> None:
    for parse in (parse_migration, parse_batch):
        try:
            parse(json.dumps(value).encode())  # the standard library also writes integers beyond 64 bits
        except (InvalidArgument, Unprocessable) as exc:
            assert exc.field


@given(valid_bodies, st.text(min_size=1, max_size=12), json_values)
def test_an_unknown_field_is_refused_by_name(body: dict[str, Any], key: str, value: Any) -> None:
    assume(key not in {f.name for f in MIGRATION_FIELDS})
    with pytest.raises(InvalidArgument) as err:
        parse_migration(_encode(body | {key: value}))
    assert err.value.field == key and repr(key) in err.value.message


_TYPE_OF = {f.name: f.kind for f in MIGRATION_FIELDS}


def _wrong_type(kind: type) -> st.SearchStrategy[Any]:
    others: dict[type, st.SearchStrategy[Any]] = {
        str: st.integers() | st.booleans() | st.lists(st.text(), max_size=2),
        bool: st.integers() | st.text(max_size=5) | st.floats(allow_nan=False, allow_infinity=False),
        int: st.text(max_size=5)
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    }
    return others[kind]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies, st.sampled_from(sorted(_TYPE_OF)), st.data())
def test_a_wrong_type_is_refused_naming_the_field(body: dict[str, Any], name: str, data: st.DataObject) -> None:
    bad = data.draw(_wrong_type(_TYPE_OF[name]))
    with pytest.raises(InvalidArgument) as err:
        parse_migration(_encode(body | {name: bad}))
    assert err.value.field == name


@given(valid_bodies, st.sampled_from(["pod_name", "pod_namespace"]))
def test_a_missing_required_field_is_refused_naming_it(body: dict[str, Any], name: str) -> None:
    del body[name]
    with pytest.raises(InvalidArgument) as err:
        parse_migration(_encode(body))
    assert err.value.field == name


@given(valid_bodies, st.integers().filter(lambda t: not MIN_TIMEOUT_SECONDS <= t <= MAX_TIMEOUT_SECONDS))
def test_a_timeout_out_of_range_is_422(body: dict[str, Any], timeout: int) -> None:
    with pytest.raises(Unprocessable) as err:
        parse_migration(_encode(body | {"timeout": timeout}))
    assert err.value.field == "timeout"


@given(valid_bodies, subdomain)
def test_source_equal_to_target_is_422(body: dict[str, Any], node_name: str) -> None:
    with pytest.raises(Unprocessable) as err:
        parse_migration(_encode(body | {"source_node": node_name, "target_node": node_name}))
    assert err.value.field == "target_node"


@given(label, subdomain)
def test_migration_ids_round_trip(namespace: str, name: str) -> None:
    assert parse_migration_id(f"{namespace}.{name}") == (namespace, name)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4))
def test_list_queries_are_parsed_or_refused_naming_the_parameter(args: dict[str, str]) -> None:
    try:
        parse_list_query(args)
    except InvalidArgument as exc:
        assert exc.field in args


# Label selectors: a requirement rendered in kubectl syntax parses back to the same meaning.

keys = label.map(lambda s: s[:30])
values = st.text(alphabet=_ALNUM, min_size=1, max_size=8)
requirements = st.one_of(
    st.builds(lambda k, v: (f"{k}={v}", Requirement(k, "In", frozenset({v}))), keys, values),
    st.builds(lambda k, v: (f"{k}!={v}", Requirement(k, "NotIn", frozenset({v}))), keys, values),
    st.builds(
        lambda k, vs: (f"{k} in ({','.join(sorted(vs))})", Requirement(k, "In", frozenset(vs))),
        keys,
        st.sets(values, min_size=1, max_size=3),
    ),
    st.builds(
        lambda k, vs: (f"{k} notin ({', '.join(sorted(vs))})", Requirement(k, "NotIn", frozenset(vs))),
        keys,
        st.sets(values, min_size=1, max_size=3),
    ),
    st.builds(lambda k: (k, Requirement(k, "Exists")), keys),
    st.builds(lambda k: (f"!{k}", Requirement(k, "DoesNotExist")), keys),
)


@given(st.lists(requirements, min_size=1, max_size=4), st.dictionaries(keys, values, max_size=4))
def test_label_selectors_parse_to_their_meaning(reqs: list[tuple[str, Requirement]], labels: dict[str, str]) -> None:
    text = ",".join(t for t, _ in reqs)
    parsed = parse_label_selector(text)
    assert parsed.requirements == tuple(r for _, r in reqs)
    assert parsed.matches(labels) == LabelSelector(tuple(r for _, r in reqs)).matches(labels)


@given(st.text(max_size=40))
def test_any_selector_text_is_parsed_or_refused_naming_the_field(text: str) -> None:
    try:
        parse_label_selector(text)
    except InvalidArgument as exc:
        assert exc.field == "label_selector"


@given(st.fixed_dictionaries({"source_node": subdomain}, optional={"timeout": timeouts, "dry_run": st.booleans()}))
def test_valid_batches_round_trip(body: dict[str, Any]) -> None:
    req = parse_batch(_encode(body))
    assert req.source_node == body["source_node"]
    assert req.timeout_seconds == body.get("timeout", 300)
    assert set(body) <= {f.name for f in BATCH_FIELDS}
