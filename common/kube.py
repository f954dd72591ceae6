"""The Kubernetes API client every service builds the same way: a kubeconfig path, else in-cluster.

It takes a path rather than a service's settings so that tests, tools and services share it, and so
that no service can grow a second way of finding credentials.
"""

from __future__ import annotations

from typing import Any


def api_client(kubeconfig: str = "") -> Any:
    """An `ApiClient` from `kubeconfig` when given, else the pod's service-account credentials."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def core_v1(kubeconfig: str = "") -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client(kubeconfig))
