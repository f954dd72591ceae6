"""`apolloctl`: operate the stack and its local control plane from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from apolloctl.cluster import (
    ClusterConfig,
    ComponentError,
    LocalCluster,
    probe_recorded,
    read_state,
    stop_recorded,
)
from apolloctl.cluster.build import cache_root, ensure_binaries


def default_run_dir() -> Path:
    """One well-known run directory, so `up`, `status` and `down` in separate shells agree."""
    env = os.environ.get("APOLLO_RUN_DIR")
    return Path(env).expanduser() if env else cache_root() / "run" / "default"


def _err(msg: str) -> None:
    print(f"apolloctl: {msg}", file=sys.stderr)


def cmd_cluster_build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    bins = ensure_binaries(lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: str(v) for k, v in bins.__dict__.items()}, indent=2))
    print(f"ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


def cmd_cluster_up(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    if read_state(run_dir) is not None and all(v == "ok" for v in probe_recorded(run_dir).values()):
        print(f"cluster already running; kubeconfig: {run_dir / 'kubeconfig'}")
        return 0
    cluster = LocalCluster(
        ClusterConfig(run_dir=run_dir, die_with_parent=False), log=lambda m: print(m, file=sys.stderr)
    )
    cluster.start()
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    state = read_state(args.run_dir)
    if state is None:
        print(f"no cluster recorded in {args.run_dir}")
        return 1
    health = probe_recorded(args.run_dir)
    width = max(len(k) for k in health)
    for name, status in health.items():
        pid = state["pids"].get(name, "-")
        print(f"{name:<{width}}  {status:<12}  pid {pid}")
    print(f"kubeconfig: {state['kubeconfig']}\nprometheus: {state['prometheus_url']}\nlogs: {state['logs']}")
    return 0 if all(v == "ok" for v in health.values()) else 1


def cmd_cluster_kubeconfig(args: argparse.Namespace) -> int:
    state = read_state(args.run_dir)
    if state is None:
        _err(f"no cluster recorded in {args.run_dir}; run `apolloctl cluster up`")
        return 1
    print(state["kubeconfig"])
    return 0


def cmd_cluster_down(args: argparse.Namespace) -> int:
    if stop_recorded(args.run_dir):
        print("cluster stopped")
    else:
        print(f"no cluster recorded in {args.run_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from apolloctl.demo import run_demo

    return run_demo(args.run_dir, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apolloctl", description=__doc__)
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=default_run_dir(),
        help="where the local cluster keeps its state and logs (default: $APOLLO_RUN_DIR or the cache)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="the local control plane")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    csub.add_parser("build", help="build or locate the binaries (cached)").set_defaults(func=cmd_cluster_build)
    csub.add_parser("up", help="start the cluster and leave it running").set_defaults(func=cmd_cluster_up)
    csub.add_parser("status", help="health of each component").set_defaults(func=cmd_cluster_status)
    csub.add_parser("kubeconfig", help="print the admin kubeconfig path").set_defaults(func=cmd_cluster_kubeconfig)
    csub.add_parser("down", help="stop the cluster").set_defaults(func=cmd_cluster_down)
    demo = sub.add_parser("demo", help="the main scenario on a fresh local cluster")
    demo.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    demo.set_defaults(func=cmd_demo)
    from apolloctl.migrate import add_parsers as add_migration_parsers

    add_migration_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except ComponentError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
