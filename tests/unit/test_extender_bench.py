"""bench.extender's pure pieces: histogram quantiles, the scripted Prometheus, targets and the cost model."""

from __future__ import annotations

import math
import urllib.request

import orjson

from bench.extender.cli import cost_model, judge
from bench.extender.fixtures import ScriptedPrometheus, args_template, node_names, prometheus_duration
from bench.extender.server_metrics import bucket_quantile, metrics_delta, parse_metrics


def test_bucket_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (math.inf, 100.0)]
    p50, bucket = bucket_quantile(buckets, 0.5)
    assert p50 == 0.001 and bucket == (0.0, 0.001)
    p90, _ = bucket_quantile(buckets, 0.9)
    assert math.isclose(p90, 0.002)
    p99, bucket = bucket_quantile(buckets, 0.99)
    assert math.isclose(p99, 0.002 + 0.003 * 0.9) and bucket == (0.002, 0.005)
    assert math.isnan(bucket_quantile([], 0.5)[0])


def test_metrics_delta_counts_what_happened_between_two_scrapes() -> None:
    text = """# TYPE apollo_extender_request_seconds histogram
apollo_extender_request_seconds_bucket{verb="filter",le="0.001"} %d
apollo_extender_request_seconds_bucket{verb="filter",le="+Inf"} %d
apollo_extender_request_seconds_sum{verb="filter"} %f
apollo_extender_request_seconds_count{verb="filter"} %d
# TYPE apollo_extender_policy_lookups_total counter
apollo_extender_policy_lookups_total{outcome="pending"} %d
"""
    before = parse_metrics(text % (1, 2, 0.003, 2, 5))
    after = parse_metrics(text % (4, 6, 0.013, 6, 12))
    delta = metrics_delta(before, after)
    assert delta.buckets["filter"] == [(0.001, 3.0), (math.inf, 4.0)]
    assert math.isclose(delta.sums["filter"], 0.01) and delta.counter("policy_lookups_total") == 7


def test_scripted_prometheus_answers_instant_and_range_queries_over_http() -> None:
    prometheus = ScriptedPrometheus({"cpu": {"n1": 0.5}}, history_steps=3)
    try:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?query=bench:cpu") as resp:
            instant = orjson.loads(resp.read())["data"]["result"]
        assert instant[0]["metric"] == {"node": "n1"} and instant[0]["value"][1] == "0.5"
        url = f"{prometheus.url}/api/v1/query_range?query=bench:cpu&start=1000&end=2000&step=10s"
        with urllib.request.urlopen(url) as resp:
            (series,) = orjson.loads(resp.read())["data"]["result"]
        assert [t for t, _ in series["values"]] == [1970.0, 1980.0, 1990.0, 2000.0]
    finally:
        prometheus.close()


def test_request_template_carries_a_fresh_pod_id_and_the_policy_opt_in() -> None:
    parts = args_template(3, policy=True)
    body = orjson.loads(b"abc".join(parts))
    assert body["NodeNames"] == node_names(3) and body["Pod"]["metadata"]["uid"] == "abc"
    assert body["Pod"]["metadata"]["annotations"]["apollo.io/scheduling-policy"] == "true"


def test_targets_are_judged_on_the_client_side_and_noop_ratios() -> None:
    targets, met = judge({"prioritize_client_p99_ms": 1.5, "sched_ratio_vs_noop": 0.9, "policy_lookups": 3})
    assert set(targets) == {"prioritize_client_p99_ms", "sched_ratio_vs_noop", "policy_lookups"}
    assert met == {"prioritize_client_p99_ms": True, "sched_ratio_vs_noop": False, "policy_lookups": True}


def test_ratios_pair_each_repetition_and_rotate_the_order() -> None:
    from bench.extender.cli import paired_ratio
    from bench.extender.scheduling import HEADLINE, rotated

    # Load drifted over the repetitions: pairing keeps each run with its own repetition's floor.
    median, each = paired_ratio([90.0, 180.0, 120.0, None], [100.0, 200.0, 100.0, 150.0])
    assert each == [0.9, 0.9, 1.2, None] and median == 0.9
    assert paired_ratio([None], [100.0]) == (None, [None])
    orders = [" ".join(c.name for c in rotated(HEADLINE, rep)) for rep in range(4)]
    assert orders == ["without noop with", "noop with without", "with without noop", "without noop with"]


def test_cost_model_splits_a_cycle_into_protocol_and_our_extra() -> None:
    def run(rate: float, scheduler_cpu: float, extender_cpu: float = 0.0) -> dict[str, object]:
        by_process = {"kube-scheduler": scheduler_cpu} | ({"extender": extender_cpu} if extender_cpu else {})
        return {"bind_window_pods_per_s": rate, "cpu": {"cpu_s_by_process": by_process}}

    sched = {
        "drain_without": run(200.0, 1.0),
        "drain_noop": run(160.0, 1.5),
        "drain_with": run(125.0, 1.6, 0.8)
        | {"extender": {"server": {"filter": {"mean_ms": 0.3}, "prioritize": {"mean_ms": 0.4}}}},
    }
    model = cost_model(sched, pods=1000)
    assert model["cycle_without"] == 5.0 and model["cycle_noop"] == 6.25 and model["cycle_with"] == 8.0
    assert model["protocol"] == 1.25 and model["ours_over_noop"] == 1.75
    assert model["extender_server_verbs"] == 0.7 and model["extender_cpu_per_pod"] == 0.8
    assert model["scheduler_cpu_per_pod"] == {"without": 1.0, "noop": 1.5, "with": 1.6}


def test_prometheus_steps_in_every_form_apollo_may_send() -> None:
    assert prometheus_duration("30") == 30.0 and prometheus_duration("2.5") == 2.5
    assert prometheus_duration("5000ms") == 5.0 and prometheus_duration("1m30s") == 90.0
    for bad in ("", "5x", "ms"):
        try:
            prometheus_duration(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
