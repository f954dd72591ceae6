"""Configuration files for the local control plane's components, rendered as plain data.

Kept free of process handling so the rendering can be unit-tested and read in one place.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apolloctl.cluster.certs import KeyPair

# Pods opt into simulated container completion with this annotation: a comma-separated list of
# container names that kwok will mark terminated with exit code 0 (the "completed" state the
# orchestrator must not re-run); `name=CODE` terminates it with exit code CODE instead. Names added
# later are terminated in turn (the local pod runner appends each container whose process exited).
# When every container has terminated, the pod phase becomes Succeeded, or Failed if one exited non-zero.
COMPLETE_ANNOTATION = "sim.apollo.io/complete-containers"
# Pods whose containers the local pod runner (apolloctl.podrunner) runs as real processes. kwok does
# not delete them when they are deleted: the runner plays their kubelet, stops the processes within
# the grace period, reports their exit codes and only then removes the pod, as a kubelet would.
LOCAL_RUN_ANNOTATION = "sim.apollo.io/run-locally"
# kwok manages only nodes carrying this annotation, so tests cannot accidentally hand it others.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca: Path, client: KeyPair, user: str) -> dict[str, Any]:
    """A kubeconfig with embedded credentials, so it stays valid when copied elsewhere."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "apollo-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": "apollo-local", "context": {"cluster": "apollo-local", "user": user}}],
        "current-context": "apollo-local",
    }


@dataclass(frozen=True)
class ExtenderConfig:
    """One entry of KubeSchedulerConfiguration.extenders (see k8s.io/kube-scheduler/config/v1)."""

    url_prefix: str
    filter_verb: str = "filter"
    prioritize_verb: str = "prioritize"
    weight: int = 5
    node_cache_capable: bool = True
    ignorable: bool = True
    http_timeout: str = "2s"
    ca_pem: bytes | None = None

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "urlPrefix": self.url_prefix,
            "filterVerb": self.filter_verb,
            "prioritizeVerb": self.prioritize_verb,
            "weight": self.weight,
            "nodeCacheCapable": self.node_cache_capable,
            "ignorable": self.ignorable,
            "httpTimeout": self.http_timeout,
            "enableHTTPS": self.url_prefix.startswith("https://"),
        }
        if self.ca_pem is not None:
            out["tlsConfig"] = {"caData": base64.b64encode(self.ca_pem).decode()}
        return out


def scheduler_config(kubeconfig_path: Path, extenders: tuple[ExtenderConfig, ...] = ()) -> dict[str, Any]:
    """KubeSchedulerConfiguration: a file rather than flags so an extender can be configured."""
    cfg: dict[str, Any] = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig_path), "qps": 500, "burst": 1000},
        "leaderElection": {"leaderElect": False},
        "profiles": [{"schedulerName": "default-scheduler"}],
    }
    if extenders:
        cfg["extenders"] = [e.render() for e in extenders]
    return cfg


_NODE_CONDITIONS = """\
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
- address: {{ NodeIP | Quote }}
  type: InternalIP
- address: {{ .metadata.name | Quote }}
  type: Hostname
"""

_STAGES: list[dict[str, Any]] = [
    {
        "name": "node-initialize",
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "selector": {
            "matchExpressions": [
                {
                    "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
                    "operator": "NotIn",
                    "values": ["True"],
                }
            ]
        },
        "next": {
            "statusTemplate": "{{ $now := Now }}\n"
            "{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}\n" + _NODE_CONDITIONS + "allocatable:\n"
            '{{ with .status.allocatable }}{{ YAML . 1 }}{{ else }}  cpu: "32"\n  memory: 128Gi\n'
            '  pods: "110"\n{{ end }}\n'
            "capacity:\n"
            '{{ with .status.capacity }}{{ YAML . 1 }}{{ else }}  cpu: "32"\n  memory: 128Gi\n'
            '  pods: "110"\n{{ end }}\n'
            "nodeInfo:\n"
            "  architecture: amd64\n"
            "  operatingSystem: linux\n"
            "  kubeletVersion: kwok\n"
            "  containerRuntimeVersion: kwok\n"
            "phase: Running\n",
        },
    },
    {
        "name": "node-heartbeat",
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "selector": {
            "matchExpressions": [
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {
                    "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
                    "operator": "In",
                    "values": ["True"],
                },
            ]
        },
        # Leases carry liveness; the status heartbeat only has to beat the node-monitor grace.
        "delay": {"durationMilliseconds": 20000, "jitterDurationMilliseconds": 25000},
        "next": {
            "statusTemplate": "{{ $now := Now }}\n"
            "{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}\n" + _NODE_CONDITIONS
        },
    },
    {
        "name": "pod-ready",
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.podIP", "operator": "DoesNotExist"},
            ]
        },
        "next": {
            "statusTemplate": """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
{{ range .spec.readinessGates }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ .conditionType | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
""",
        },
    },
    {
        # Terminates the containers named in COMPLETE_ANNOTATION (exit code 0, or CODE for
        # `name=CODE`) and leaves the others as they are. It matches while a listed container has not
        # terminated yet, so it fires again when a name is added and never for one already done.
        "name": "containers-complete",
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": f'.metadata.annotations["{COMPLETE_ANNOTATION}"]', "operator": "Exists"},
                {
                    "key": f'(.metadata.annotations["{COMPLETE_ANNOTATION}"] | split(",") | map(split("=")[0]))'
                    " as $done | .status.containerStatuses.[] | select( .state.terminated == null )"
                    " | select( .name as $n | any($done[]; . == $n) ) | .name",
                    "operator": "Exists",
                },
            ]
        },
        "delay": {"durationMilliseconds": 1000},
        "next": {
            "statusTemplate": """\
{{ $now := Now }}
{{ $root := . }}
{{ $codes := dict }}
{{ range splitList "," (index .metadata.annotations "__ANNOTATION__") }}
{{ $entry := splitList "=" (trim .) }}
{{ if gt (len $entry) 1 }}{{ $_ := set $codes (first $entry) (atoi (index $entry 1)) }}\
{{ else }}{{ $_ := set $codes (first $entry) 0 }}{{ end }}
{{ end }}
{{ $finished := 0 }}
{{ $failed := 0 }}
{{ range $index, $item := .spec.containers }}
{{ $origin := index $root.status.containerStatuses $index }}
{{ if $origin.state.terminated }}
{{ $finished = add1 $finished }}
{{ if ne (toString $origin.state.terminated.exitCode) "0" }}{{ $failed = add1 $failed }}{{ end }}
{{ else if hasKey $codes $item.name }}
{{ $finished = add1 $finished }}{{ if ne (get $codes $item.name) 0 }}{{ $failed = add1 $failed }}{{ end }}
{{ end }}
{{ end }}
{{ $all := eq $finished (len .spec.containers) }}
conditions:
{{ range .status.conditions }}
{{ if or (eq .type "Ready") (eq .type "ContainersReady") }}
- type: {{ .type | Quote }}
  status: "False"
  reason: {{ if $all }}PodCompleted{{ else }}ContainersNotReady{{ end }}
  lastTransitionTime: {{ $now | Quote }}
{{ else }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  lastTransitionTime: {{ .lastTransitionTime | Quote }}
{{ end }}
{{ end }}
containerStatuses:
{{ range $index, $item := .spec.containers }}
{{ $origin := index $root.status.containerStatuses $index }}
- image: {{ $item.image | Quote }}
  name: {{ $item.name | Quote }}
  restartCount: {{ $origin.restartCount }}
{{ if $origin.state.terminated }}
  ready: false
  started: false
  state:
    terminated:
      exitCode: {{ $origin.state.terminated.exitCode }}
      reason: {{ $origin.state.terminated.reason | Quote }}
      startedAt: {{ $origin.state.terminated.startedAt | Quote }}
      finishedAt: {{ $origin.state.terminated.finishedAt | Quote }}
{{ else if hasKey $codes $item.name }}
  ready: false
  started: false
  state:
    terminated:
{{ if eq (get $codes $item.name) 0 }}
      exitCode: 0
      reason: Completed
{{ else }}
      exitCode: {{ get $codes $item.name }}
      reason: Error
{{ end }}
      startedAt: {{ $origin.state.running.startedAt | Quote }}
      finishedAt: {{ $now | Quote }}
{{ else }}
  ready: true
  started: true
  state:
    running:
      startedAt: {{ $origin.state.running.startedAt | Quote }}
{{ end }}
{{ end }}
phase: {{ if not $all }}Running{{ else if $failed }}Failed{{ else }}Succeeded{{ end }}
""".replace("__ANNOTATION__", COMPLETE_ANNOTATION),
        },
    },
    {
        "name": "pod-delete",
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
                # The local pod runner finishes these itself, after their processes have stopped.
                {"key": f'.metadata.annotations["{LOCAL_RUN_ANNOTATION}"]', "operator": "DoesNotExist"},
            ]
        },
        "next": {"finalizers": {"empty": True}, "delete": True},
    },
]


def kwok_config() -> list[dict[str, Any]]:
    """kwok's configuration documents: the Stages that play kubelet for nodes and pods."""
    docs: list[dict[str, Any]] = []
    for stage in _STAGES:
        spec = {k: v for k, v in stage.items() if k != "name"}
        docs.append(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": stage["name"]},
                "spec": spec,
            }
        )
    return docs


@dataclass(frozen=True)
class ScrapeTarget:
    """A Prometheus target; `labels` become series labels (e.g. node=<k8s node name>)."""

    address: str
    labels: dict[str, str] = field(default_factory=dict)


def prometheus_config(targets_dir: Path, scrape_interval: str = "1s") -> dict[str, Any]:
    """Scrape configuration: file-based discovery so targets change without restarting Prometheus."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "apollo",
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}],
            }
        ],
    }


def file_sd_document(job: str, targets: list[ScrapeTarget]) -> list[dict[str, Any]]:
    """The JSON document Prometheus' file_sd reads; one group per target keeps labels per target."""
    return [{"targets": [t.address], "labels": {"source": job, **t.labels}} for t in targets]


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def dump_yaml_documents(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
