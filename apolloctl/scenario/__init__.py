"""The main job's story: the seed's AI Job, its node heating up, APOLLO's MIGRATE, a resumed replacement.

What it shows, on the local control plane with the whole stack running as local processes:

1. the seed's AI workload: a Job whose pod runs data-prep, a trainer and a monitor as real processes
   (`apolloctl.podrunner`), its checkpoint claim attached by the admission webhook (the pods opt in
   with the ``apollo.io/checkpoint`` label) and backed by a hostPath PV under the cluster's run
   directory;
2. load rises on the node the pod landed on (a simulated exporter, scraped by the real Prometheus:
   the node's background load ramps up, and every scenario pod adds its requests to its node);
3. APOLLO forecasts the overload before it happens and emits MIGRATE for the checkpointed pod;
4. the orchestrator (subscribed to APOLLO) captures the pod, evicts it; the Job controller creates the
   replacement, which the webhook strips of the completed data-prep container and attaches to the
   same claim, and kube-scheduler (with the extender) places it on another node;
5. the replacement's trainer resumes from the checkpoint its predecessor wrote on SIGTERM.

It prints progress as it goes, then the timeline and a table. `run_scenario` builds everything on a
fresh cluster (``python -m apolloctl.scenario``); `run_story` runs the story inside an existing set-up
(the demo's, through `continue_demo`). The parts, each in its own module:

* `workload`: the seed's Job (`seed_job`), its checkpoint volume, what its pods request;
* `load`: the simulated node load (`LoadModel`, `Ramp`) the exporter reports;
* `services`: APOLLO with the extender, the CRD, the webhook, the orchestrator, the pod runner;
* `apollo_setup`: APOLLO's settings on the story's one-second clock, and what the story reads back;
* `story`: the story's steps and the promises it checks (`run_story`);
* `report`: the timeline, the table and the forecast-vs-actual plot;
* `entrypoints`: `run_scenario`, `continue_demo` and the command line.

The workload, load and services parts are shared with the migration benchmark (`bench.migration`) and
the end-to-end tests; everything is importable from ``apolloctl.scenario`` itself.
"""

from __future__ import annotations

from apolloctl.scenario.apollo_setup import (
    OVERLOAD_THRESHOLD,
    apollo_forecast,
    demo_apollo_settings,
    forecasting,
    simulated_prometheus,
    story_apollo_settings,
)
from apolloctl.scenario.entrypoints import (
    BACKGROUND,
    DEMO_DEPLOYMENT,
    DEMO_NODE_CAPACITY,
    DEMO_STORY_NODES,
    NEW_NODE_CALM_TICKS,
    continue_demo,
    main,
    run_scenario,
)
from apolloctl.scenario.load import NODE_CPU, NODE_MEMORY, LoadModel, Ramp
from apolloctl.scenario.report import Say, StoryResult, Timeline, plot_story, print_result
from apolloctl.scenario.services import (
    CRD,
    WEBHOOK_REGISTRATION,
    install_crd,
    runner_settings,
    start_apollo_and_extender,
    start_orchestrator,
    start_runner,
    start_story_services,
    start_webhook,
    unregister_webhook,
)
from apolloctl.scenario.story import StoryContext, run_story
from apolloctl.scenario.workload import (
    APP,
    APP_LABEL,
    JOB_NAME,
    NAMESPACE,
    STORY_LABEL,
    WorkloadShape,
    checkpoint_volume,
    ensure_namespace,
    pod_requests,
    seed_job,
    source_checkpoint,
)

__all__ = [
    "APP",
    "APP_LABEL",
    "BACKGROUND",
    "CRD",
    "DEMO_DEPLOYMENT",
    "DEMO_NODE_CAPACITY",
    "DEMO_STORY_NODES",
    "JOB_NAME",
    "NAMESPACE",
    "NEW_NODE_CALM_TICKS",
    "NODE_CPU",
    "NODE_MEMORY",
    "OVERLOAD_THRESHOLD",
    "STORY_LABEL",
    "WEBHOOK_REGISTRATION",
    "LoadModel",
    "Ramp",
    "Say",
    "StoryContext",
    "StoryResult",
    "Timeline",
    "WorkloadShape",
    "apollo_forecast",
    "checkpoint_volume",
    "continue_demo",
    "demo_apollo_settings",
    "ensure_namespace",
    "forecasting",
    "install_crd",
    "main",
    "plot_story",
    "pod_requests",
    "print_result",
    "run_scenario",
    "run_story",
    "runner_settings",
    "seed_job",
    "simulated_prometheus",
    "source_checkpoint",
    "start_apollo_and_extender",
    "start_orchestrator",
    "start_runner",
    "start_story_services",
    "start_webhook",
    "story_apollo_settings",
    "unregister_webhook",
]
