"""`apolloctl migrate` and `apolloctl migrations`: start, follow, list, show and cancel migrations.

Two ways to reach the stack, with the same answers:

* the REST API (`--server URL`, or `$APOLLO_API_URL`), with a bearer token (`--token`, `--token-file`,
  `$APOLLO_TOKEN`) and the server's CA (`--cacert`);
* a kubeconfig alone (`--kubeconfig`, `$KUBECONFIG`): the same `MigrationService` the REST API runs,
  acting on PodMigration objects with the user's own credentials, so the API server's RBAC decides.

Both backends give the REST API's JSON (`migrate_backends`), so the printing (`migrate_views`) has one
input shape. `--wait` polls the migration and prints each step as the controller records it, then
exits 0 when it succeeded and 1 when it failed, was cancelled or the wait timed out. This module holds
the commands and their flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from apolloctl.migrate_backends import ApiError, Backend, Json, backend_from
from apolloctl.migrate_views import LIST_HEADER, describe, follow, list_rows, table


def _id(value: str, namespace: str) -> str:
    """`ns.name` as given, or a bare object name in `namespace`."""
    return value if "." in value else f"{namespace}.{value}"


def cmd_migrate(args: argparse.Namespace, backend: Backend, out: TextIO) -> int:
    if args.pod and args.selector is not None:
        raise ApiError(0, "give either POD or --selector (batch with --from), not both")
    if args.pod is None:
        if not args.source or args.selector is None:
            raise ApiError(0, "give POD, or --from NODE with -l SELECTOR for a batch")
        return _batch(args, backend, out)
    body: Json = {
        "pod_name": args.pod,
        "pod_namespace": args.namespace,
        "source_node": args.source or "",
        "target_node": args.target or "",
        "preserve_pv": not args.no_preserve_pv,
        "timeout": args.timeout,
        "dry_run": args.dry_run,
    }
    view = backend.create(body)
    if args.output == "json":
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode(), file=out)
    else:
        target = body["target_node"] or "the scheduler's choice"
        verb = "would migrate" if args.dry_run else "migrating"
        print(f"{view['migration_id']}: {verb} {args.namespace}/{args.pod} to {target}", file=out)
    if args.wait and not args.dry_run:
        return follow(backend, view["migration_id"], out, timeout=args.wait_timeout)
    return 0


def _batch(args: argparse.Namespace, backend: Backend, out: TextIO) -> int:
    body: Json = {
        "source_node": args.source,
        "label_selector": args.selector,
        "namespace": args.namespace if args.namespace_given else "",
        "target_node": args.target or "",
        "preserve_pv": not args.no_preserve_pv,
        "timeout": args.timeout,
        "dry_run": args.dry_run,
    }
    result = backend.batch(body)
    if args.output == "json":
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), file=out)
        return 0
    print(result["message"], file=out)
    ids = {(m["pod_namespace"], m["pod_name"]): m["migration_id"] for m in result["migrations"]}
    rows = [
        [
            f"{p['pod_namespace']}/{p['pod_name']}",
            ids.get((p["pod_namespace"], p["pod_name"]), "(dry run)" if args.dry_run else "(not created)"),
            p.get("waits_for") or "-",
        ]
        for p in result["planned"]
    ]
    if rows:
        print(table(rows, ("POD", "MIGRATION", "WAITS FOR")), file=out)
    for s in result["skipped"]:
        print(f"skipped {s['pod_namespace']}/{s['pod_name']}: {s['reason']}", file=out)
    if args.wait and not args.dry_run:
        codes = [follow(backend, mid, out, timeout=args.wait_timeout) for mid in ids.values()]
        return max(codes, default=0)
    return 0


def cmd_list(args: argparse.Namespace, backend: Backend, out: TextIO) -> int:
    params = {}
    if not args.all_namespaces:
        params["namespace"] = args.namespace
    if args.phase:
        params["phase"] = args.phase
    if args.node:
        params["node"] = args.node
    result = backend.list(params)
    if args.output == "json":
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), file=out)
    elif not result["migrations"]:
        where = "any namespace" if args.all_namespaces else f"namespace {args.namespace}"
        print(f"No migrations found in {where}.", file=out)
    else:
        print(table(list_rows(result["migrations"], datetime.now(UTC)), LIST_HEADER), file=out)
    return 0


def cmd_show(args: argparse.Namespace, backend: Backend, out: TextIO) -> int:
    view = backend.get(_id(args.id, args.namespace))
    if args.output == "json":
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode(), file=out)
    else:
        print(describe(view), file=out)
    return 0


def cmd_cancel(args: argparse.Namespace, backend: Backend, out: TextIO) -> int:
    view = backend.cancel(_id(args.id, args.namespace))
    print(f"{view['migration_id']}: {view['status']} ({view['phase']}): {view.get('message') or ''}".rstrip(), file=out)
    return 0


def _connection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (REST API with --server, else PodMigration objects with a kubeconfig)")
    g.add_argument("--server", default="", help="REST API URL (default $APOLLO_API_URL)")
    g.add_argument("--token", default="", help="bearer token (default $APOLLO_TOKEN)")
    g.add_argument("--token-file", default="", help="read the bearer token from this file")
    g.add_argument("--cacert", default="", help="CA bundle that signed the API's certificate")
    g.add_argument("--insecure-skip-tls-verify", action="store_true", help="do not verify the API's certificate")
    g.add_argument("--kubeconfig", default="", help="without --server: act on PodMigrations (default $KUBECONFIG)")


class _NamespaceAction(argparse.Action):
    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        namespace.namespace = values
        namespace.namespace_given = True


def _namespace_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", action=_NamespaceAction, help="namespace (default: default)")
    p.set_defaults(namespace_given=False)


def _output_flag(p: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    p.add_argument("-o", "--output", choices=choices, default=choices[0], help="output format")


def _run(handler: Callable[[argparse.Namespace, Backend, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    """A command with its backend, turning refusals into one line on stderr (exit 1; usage errors 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, backend_from(args), sys.stdout)
        except ApiError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            code = f"{exc.status} " if exc.status else ""
            print(f"apolloctl: {code}{exc.message}{where}", file=sys.stderr)
            return 2 if exc.status in (0, 400) else 1

    return run


def add_parsers(sub: Any) -> None:
    """Register `migrate` and `migrations` on apolloctl's sub-command parser."""
    migrate = sub.add_parser(
        "migrate",
        help="migrate a pod, or move pods off a node (batch)",
        description="Migrate POD (checkpoint-preserving), or with --from NODE -l SELECTOR every matching pod on "
        "NODE, the way drain does.",
    )
    migrate.add_argument("pod", nargs="?", help="the pod to migrate (omit for a batch)")
    _namespace_flag(migrate)
    migrate.add_argument("--to", dest="target", default="", help="target node (default: the scheduler chooses)")
    migrate.add_argument("--from", dest="source", default="", help="source node (a check for POD; the node to empty)")
    migrate.add_argument("-l", "--selector", default=None, help="batch: label selector of the pods to move")
    migrate.add_argument("--timeout", type=int, default=300, help="seconds the migration may take (10..3600)")
    migrate.add_argument("--no-preserve-pv", action="store_true", help="do not insist on keeping existing PVCs")
    migrate.add_argument("--dry-run", action="store_true", help="validate (and plan a batch) without acting")
    migrate.add_argument("--wait", action="store_true", help="follow the migration's steps until it finishes")
    migrate.add_argument("--wait-timeout", type=float, default=3900.0, help="stop waiting after this many seconds")
    _output_flag(migrate, ("text", "json"))
    _connection_flags(migrate)
    migrate.set_defaults(func=_run(cmd_migrate))

    migrations = sub.add_parser("migrations", help="list, show and cancel migrations")
    msub = migrations.add_subparsers(dest="migrations_command", required=True)
    lister = msub.add_parser("list", help="a table like kubectl's")
    _namespace_flag(lister)
    lister.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    lister.add_argument("--phase", default="", help="phases or statuses, comma-separated")
    lister.add_argument("--node", default="", help="from or to this node")
    _output_flag(lister, ("table", "json"))
    _connection_flags(lister)
    lister.set_defaults(func=_run(cmd_list))
    show = msub.add_parser("show", help="one migration in full")
    show.add_argument("id", help="<namespace>.<name>, or a name with -n")
    _namespace_flag(show)
    _output_flag(show, ("text", "json"))
    _connection_flags(show)
    show.set_defaults(func=_run(cmd_show))
    cancel = msub.add_parser("cancel", help="cancel a migration (before its eviction)")
    cancel.add_argument("id", help="<namespace>.<name>, or a name with -n")
    _namespace_flag(cancel)
    _connection_flags(cancel)
    cancel.set_defaults(func=_run(cmd_cancel))
