"""Capacity reserved on migration targets, as the extender's filter verb applies it (extender.reservations)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from apollo_api.podmigration import MIGRATION_ANNOTATION, Phase
from extender.config import ExtenderSettings
from extender.metrics import ExtenderMetrics
from extender.podspec import pod_demand
from extender.ranking import FilterOutcome
from extender.reservations import ReservationBook, ReservationWatcher, Room, build_book, reservation_of, room_of
from extender.verbs import ExtenderState, filter_verb

NS = "ns"


def migration(name: str = "mig", *, node: str = "b", phase: str = Phase.EVICTING, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podName": "train-0", "targetNode": node},
        "status": {
            "phase": phase,
            "podUID": "uid-src",
            "ownerUID": "uid-job",
            "jobCompletionIndex": "0",
            "requestsBefore": {"cpuCores": 2.0, "memoryBytes": 4 * 2**30},
            "requestsAfter": {"cpuCores": 1.5, "memoryBytes": 2 * 2**30},
            **status,
        },
    }


def pod(
    name: str, cpu: str = "1", memory: str = "1Gi", *, owner: str = "", index: str = "", **annotations: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}", "annotations": dict(annotations)}
    if owner:
        meta["ownerReferences"] = [{"kind": "Job", "name": "train", "uid": owner, "controller": True}]
    if index:
        meta["annotations"]["batch.kubernetes.io/job-completion-index"] = index
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
    }


def test_a_migration_reserves_its_planned_requests_on_its_target_while_active() -> None:
    r = reservation_of(migration())
    assert r is not None and (r.node, r.cpu_cores, r.memory_bytes) == ("b", 1.5, 2 * 2**30)
    suggested = migration(node="")
    suggested["status"]["suggestedNode"] = "c"
    assert reservation_of(suggested).node == "c"  # type: ignore[union-attr]
    assert reservation_of(migration(phase=Phase.PENDING)) is None  # nothing captured yet
    assert reservation_of(migration(phase=Phase.SUCCEEDED)) is None
    assert reservation_of(migration(replacementNode="b")) is None  # the replacement holds it itself now
    dry = migration()
    dry["spec"]["dryRun"] = True
    assert reservation_of(dry) is None
    assert reservation_of(migration(node="")) is None  # no target known: nothing to hold


def test_room_is_allocatable_minus_live_pods() -> None:
    node = {"status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}}
    done = {**pod("done", "3"), "status": {"phase": "Succeeded"}}
    assert room_of(node, [pod("x", "1"), pod("y", "500m", "2Gi"), done]) == Room(2.5, 5 * 2**30)


ROOM = Room(2.0, 8 * 2**30)


def book(*migrations: dict[str, Any], room: Room = ROOM) -> ReservationBook:
    reservations = [r for r in (reservation_of(m) for m in migrations) if r is not None]
    return build_book(reservations, {"b": room}, {})


def test_other_pods_are_kept_off_the_reserved_room_and_the_replacement_is_not() -> None:
    b = book(migration())
    intruder = pod("intruder", "1")
    refused = b.refusals(intruder, pod_demand(intruder), ["a", "b"])
    assert list(refused) == ["b"] and "ns/mig" in refused["b"] and "0.50 cores" in refused["b"]
    small = pod("small", "250m")
    assert b.refusals(small, pod_demand(small), ["b"]) == {}  # still fits beside the reservation
    for replacement in (
        pod("train-0-x", "1.5", **{MIGRATION_ANNOTATION: "mig"}),  # the webhook's mark
        pod("train-0-y", "1.5", owner="uid-job", index="0"),  # same Job, same completion index
    ):
        assert b.refusals(replacement, pod_demand(replacement), ["b"]) == {}
    other_index = pod("train-1-y", "1.5", owner="uid-job", index="1")
    assert list(b.refusals(other_index, pod_demand(other_index), ["b"])) == ["b"]
    marked_elsewhere = pod("z", "1.5", **{MIGRATION_ANNOTATION: "another"})
    assert list(b.refusals(marked_elsewhere, pod_demand(marked_elsewhere), ["b"])) == ["b"]


def test_two_migrations_on_one_target_each_replacement_sees_the_other() -> None:
    b = book(migration("m1"), migration("m2", ownerUID="uid-other"), room=Room(3.0, 8 * 2**30))
    first = pod("r1", "1.5", **{MIGRATION_ANNOTATION: "m1"})
    assert b.refusals(first, pod_demand(first), ["b"]) == {}  # 3 - 1.5 (m2) >= 1.5
    greedy = pod("r1", "2", **{MIGRATION_ANNOTATION: "m1"})
    assert "ns/m2" in b.refusals(greedy, pod_demand(greedy), ["b"])["b"]


def test_a_bound_replacement_spends_the_reservation_and_unknown_rooms_fail_open() -> None:
    r = reservation_of(migration())
    assert r is not None
    bound = {"b": [pod("train-0-y", "1.5", owner="uid-job", index="0")]}
    assert not build_book([r], {"b": Room(0.5, 0)}, bound)
    unmeasured = build_book([r], {}, {})
    intruder = pod("intruder", "1")
    assert unmeasured and unmeasured.refusals(intruder, pod_demand(intruder), ["b"]) == {}


def test_apply_moves_refused_nodes_to_failed_and_leaves_outcomes_alone_otherwise() -> None:
    b = book(migration())
    intruder = pod("intruder", "1")
    outcome = FilterOutcome(["a", "b"], {"c": "APOLLO predicts overload"}, {})
    applied = b.apply(outcome, intruder, pod_demand(intruder))
    assert applied.passed == ["a"] and set(applied.failed) == {"b", "c"}
    assert ReservationBook().apply(outcome, intruder, pod_demand(intruder)) is outcome


def test_the_filter_verb_applies_reservations_even_without_apollo() -> None:
    state = ExtenderState(settings=ExtenderSettings(), metrics=ExtenderMetrics.create())
    state.reservations = book(migration())
    body = orjson.dumps({"Pod": pod("intruder", "1"), "NodeNames": ["a", "b"]})
    reply = orjson.loads(filter_verb(state, body))
    assert reply["NodeNames"] == ["a"] and "capacity reserved" in reply["FailedNodes"]["b"]
    replacement = orjson.dumps({"Pod": pod("r", "1.5", **{MIGRATION_ANNOTATION: "mig"}), "NodeNames": ["a", "b"]})
    # The replacement passes the reserved room, and is kept to the target its migration named.
    assert orjson.loads(filter_verb(state, replacement))["NodeNames"] == ["b"]


class _Raw:
    def __init__(self, doc: Any) -> None:
        self.data = orjson.dumps(doc)


def test_the_watcher_publishes_a_book_from_what_it_reads() -> None:
    holder = SimpleNamespace(reservations=ReservationBook())
    watcher = ReservationWatcher.__new__(ReservationWatcher)
    ReservationWatcher.__init__(watcher, None, holder)
    node = {"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "2", "memory": "8Gi"}}}
    watcher.core = SimpleNamespace(
        read_node=lambda name, **kw: _Raw(node),
        list_pod_for_all_namespaces=lambda **kw: _Raw({"items": [pod("resident", "500m")]}),
    )
    assert watcher._set(migration()) and not watcher._set(migration())  # the second is no change
    watcher.refresh()
    published: ReservationBook = holder.reservations
    assert published.rooms["b"] == Room(1.5, 7 * 2**30) and [r.key for r in published.by_node["b"]] == ["ns/mig"]
    assert watcher._set(migration(), deleted=True)
    watcher.refresh()
    assert not holder.reservations


def test_a_replacement_is_steered_to_the_named_target_or_off_its_source_without_the_webhook() -> None:
    # An unlabelled workload is never sent to the webhook; the extender still knows its replacement.
    replacement = pod("train-0-y", "1.5", owner="uid-job", index="0")
    named = book(migration(sourceNode="a"))
    applied = named.apply(FilterOutcome(["a", "b", "c"], {}, {}), replacement, pod_demand(replacement))
    assert applied.passed == ["b"] and "moves this pod to node b" in applied.failed["a"]
    unnamed = migration(node="", sourceNode="a", suggestedNode="c")
    free = book(unnamed)
    applied = free.apply(FilterOutcome(["a", "b", "c"], {}, {}), replacement, pod_demand(replacement))
    assert sorted(applied.passed) == ["b", "c"] and "off node a" in applied.failed["a"]
    # Never every candidate: a target that is not a candidate (gone, filtered) leaves the choice alone,
    # and a source that is the only candidate stays.
    assert named.steering(replacement, ["a", "c"]) == {"a": "migration ns/mig moves this pod off node a"}
    assert free.steering(replacement, ["a"]) == {}
    # Other pods are not steered, only kept off reserved room.
    intruder = pod("intruder", "100m")
    assert named.steering(intruder, ["a", "b", "c"]) == {}
