#!/usr/bin/env python3
"""Write (or check) each service's settings reference page under docs/settings/ from its declarations.

Usage: ``python hack/gen_settings_docs.py`` rewrites the pages; ``--check`` exits 1 when one is stale
(a unit test runs the check, so a setting cannot change without its page).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.settings import reference_markdown  # noqa: E402

# (page, "module:Class", environment prefix, title, introduction)
SERVICES: list[tuple[str, str, str, str, str]] = [
    (
        "apollo.md",
        "apollo.config:ApolloSettings",
        "APOLLO",
        "APOLLO settings",
        "The policy engine (`apollo`): gRPC and HTTP ports, Prometheus queries, the forecaster, the orchestration "
        "policy and the scoring weights.",
    ),
    (
        "extender.md",
        "extender.config:ExtenderSettings",
        "EXTENDER",
        "Scheduler extender settings",
        "The kube-scheduler extender (`apollo-extender`): how it serves the verbs and how it reaches APOLLO.",
    ),
    (
        "webhook.md",
        "webhook.config:WebhookSettings",
        "WEBHOOK",
        "Admission webhook settings",
        "The mutating admission webhook (`apollo-webhook`): which pods it patches, the checkpoint claim it gives "
        "them, how it steers migration replacements, and how it is served.",
    ),
    (
        "orchestrator.md",
        "orchestrator.config:OrchestratorSettings",
        "ORCHESTRATOR",
        "Orchestrator settings",
        "The migration controller (`apollo-orchestrator`): concurrency caps, eviction retries, leader election, "
        "the APOLLO link, the lifetime of finished PodMigrations, and the HTTP port it shares with the REST API.",
    ),
]


def render() -> dict[Path, str]:
    pages: dict[Path, str] = {}
    for page, target, prefix, title, intro in SERVICES:
        module_name, _, class_name = target.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        pages[ROOT / "docs" / "settings" / page] = reference_markdown(cls, title, prefix, intro)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a page differs from the declarations")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale settings pages: {', '.join(map(str, stale))}; run python hack/gen_settings_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
