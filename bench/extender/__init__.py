"""Scheduler-extender benchmark: client-side latency under load, and what the extender costs kube-scheduler.

Run::

    python -m bench.extender --json           # full: 15 s per load case; 500 kwok nodes, 1,000 pods per run
    python -m bench.extender --json --quick   # 4 s per load case; 100 kwok nodes, 400 pods per run

Both run the latency cases (1,000 and 5,000 nodes as kube-scheduler calls, policy-annotated pods, HTTPS,
concurrent callers) and the scheduling runs without an extender, with the no-op one and with ours, in
burst and in drain mode, interleaved three times (``--sched-repeats``); the full run adds single scheduling
runs in the other modes (``nodeCacheCapable: false``, HTTPS, policy-annotated pods) and a latency case
with policy lookups off.

Human-readable lines first; with ``--json`` the LAST line is one JSON object. The targets (``targets``,
``targets_met``) are judged on figures measured by the load process, socket to socket
(``prioritize_client_p99_ms`` at 1,000 nodes, ``prioritize_client_p99_ms_5k`` at 5,000), and on
kube-scheduler's throughput with our extender against the same scheduler with a no-op extender, each ratio
measured in the same run as its floor (``sched_ratio_vs_noop`` in burst mode, ``drain_ratio_vs_noop`` with
pods created before kube-scheduler starts); ``policy_lookups`` counts per-pod policy lookups in the run
whose pods ask for one. ``sched_throughput_ratio`` (ours vs no extender at all) is reported beside them.

Why: the extender sits on kube-scheduler's critical path. kube-scheduler schedules one pod at a time and
calls filter then prioritize synchronously for it, so every millisecond the extender takes is a
millisecond per pod.

Everything is real and on 127.0.0.1: APOLLO (the ``apollo`` process, reading a scripted Prometheus), the
extender exactly as deployed (``apollo-extender``: gunicorn with the production worker), both started by
``apolloctl.launch`` as the demo and the end-to-end tests start them, and in part 2 the local control plane
(etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok).

Modules, one concern each: `fixtures` (bodies, pods, the scripted Prometheus), `stack` (APOLLO, our extender
and the no-op one), `load` (the load-generator process), `server_metrics` (the extender's histogram and
counters), `cpu` (CPU seconds per process), `latency` (part 1), `kube` and `scheduling` (part 2), `cli`.

Caveat: everything shares the machine's 2 cores: load generator, gunicorn, APOLLO, and in part 2 the whole
control plane. The figures are what this machine sustains, CPU contention included; check ``cpu_s_foreign``
(other sessions' work) before comparing runs.
"""
