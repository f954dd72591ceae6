"""`apolloctl migrate` and `apolloctl migrations`: start, follow, list, show and cancel migrations.

Two ways to reach the stack, with the same answers:

* the REST API (`--server URL`, or `$APOLLO_API_URL`), with a bearer token (`--token`, `--token-file`,
  `$APOLLO_TOKEN`) and the server's CA (`--cacert`);
* a kubeconfig alone (`--kubeconfig`, `$KUBECONFIG`): the same `MigrationService` the REST API runs,
  acting on PodMigration objects with the user's own credentials, so the API server's RBAC decides.

Both backends give the REST API's JSON, so the printing below has one input shape. `--wait` polls the
migration and prints each step as the controller records it, then exits 0 when it succeeded and 1
when it failed, was cancelled or the wait timed out.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import orjson

from common.errors import DomainError, http_status

if TYPE_CHECKING:
    from orchestrator.api.service import MigrationService

Json = dict[str, Any]
FINISHED = {"completed", "failed", "cancelled"}


class ApiError(Exception):
    """A refusal from the API (or the same refusal computed locally), with its status and message."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class Backend(Protocol):
    def create(self, body: Json) -> Json: ...

    def batch(self, body: Json) -> Json: ...

    def list(self, params: Mapping[str, str]) -> Json: ...

    def get(self, migration_id: str) -> Json: ...

    def cancel(self, migration_id: str) -> Json: ...


class RestBackend:
    """The REST API over HTTP(S) with a bearer token."""

    def __init__(self, url: str, token: str = "", cafile: str = "", insecure: bool = False, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self.context = ssl.create_default_context(cafile=cafile or None)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def _call(self, method: str, path: str, body: Json | None = None, params: Mapping[str, str] | None = None) -> Json:
        url = self.url + path + (f"?{urllib.parse.urlencode(dict(params))}" if params else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return dict(orjson.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = {}
            message = str(doc.get("message") or raw[:200].decode(errors="replace") or exc.reason)
            raise ApiError(exc.code, message, str(doc.get("field", ""))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.url}: {reason}") from None

    def create(self, body: Json) -> Json:
        return self._call("POST", "/api/v1/migrations", body)

    def batch(self, body: Json) -> Json:
        return self._call("POST", "/api/v1/migrations/batch", body)

    def list(self, params: Mapping[str, str]) -> Json:
        return self._call("GET", "/api/v1/migrations", params=params)

    def get(self, migration_id: str) -> Json:
        return self._call("GET", f"/api/v1/migrations/{urllib.parse.quote(migration_id)}")

    def cancel(self, migration_id: str) -> Json:
        return self._call("DELETE", f"/api/v1/migrations/{urllib.parse.quote(migration_id)}")


class KubeBackend:
    """The REST API's own service and views, run here over a kubeconfig (the user's RBAC applies)."""

    def __init__(self, service: MigrationService, user: str = "") -> None:
        self.service = service
        self.user = user

    @classmethod
    def from_client(cls, api_client: Any, user: str = "") -> KubeBackend:
        from orchestrator.api.service import KubeCluster, MigrationService

        return cls(MigrationService(KubeCluster(api_client)), user)

    def _run(self, fn: Callable[[], Json]) -> Json:
        try:
            return fn()
        except DomainError as exc:
            raise ApiError(http_status(exc), exc.message, exc.field) from None

    def create(self, body: Json) -> Json:
        from orchestrator.api.request import parse_migration
        from orchestrator.api.views import migration_view

        def run() -> Json:
            created = self.service.create(parse_migration(orjson.dumps(body)), self.user)
            view = migration_view(created.migration, created.pod)
            if created.dry_run:
                view["message"] = "dry run: the request is valid; nothing was created"
            return view

        return self._run(run)

    def batch(self, body: Json) -> Json:
        from orchestrator.api.request import parse_batch

        return self._run(lambda: self.service.batch(parse_batch(orjson.dumps(body)), self.user).to_json())

    def list(self, params: Mapping[str, str]) -> Json:
        from orchestrator.api.request import parse_list_query
        from orchestrator.api.views import summary_view

        def run() -> Json:
            items = self.service.find(parse_list_query(params))
            return {"migrations": [summary_view(m) for m in items], "total": len(items)}

        return self._run(run)

    def get(self, migration_id: str) -> Json:
        from orchestrator.api.request import parse_migration_id
        from orchestrator.api.views import migration_view

        def run() -> Json:
            m = self.service.get(*parse_migration_id(migration_id))
            return migration_view(m, self.service.pod_of(m))

        return self._run(run)

    def cancel(self, migration_id: str) -> Json:
        from orchestrator.api.request import parse_migration_id
        from orchestrator.api.views import migration_view

        return self._run(
            lambda: migration_view(self.service.cancel(*parse_migration_id(migration_id), self.user or "apolloctl"))
        )


# ---------------------------------------------------------------------------------------------------------------
# Printing


def age(start: str | None, now: datetime) -> str:
    """kubectl's AGE: the largest unit, e.g. 45s, 3m, 5h, 2d."""
    if not start:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(start)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3_600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86_400:
        return f"{seconds // 3_600}h"
    return f"{seconds // 86_400}d"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return f"{int(value // 60)}m{int(value % 60):02d}s"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """kubectl's plain table: upper-case header, columns padded, three spaces apart."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in all_rows]
    return "\n".join(lines)


LIST_HEADER = ("ID", "POD", "PHASE", "SOURCE", "TARGET", "AGE", "DURATION")


def list_rows(items: Sequence[Json], now: datetime) -> list[list[str]]:
    return [
        [
            m["migration_id"],
            m["pod_name"],
            m["phase"],
            m.get("source_node") or "-",
            m.get("replacement_node") or m.get("target_node") or "<scheduler>",
            age(m.get("start_time"), now),
            seconds_text(m.get("duration")),
        ]
        for m in items
    ]


def describe(view: Json) -> str:
    """`migrations show`: kubectl-describe-like text of one migration."""
    d = view.get("details") or {}
    lines = [
        f"ID:              {view['migration_id']}",
        f"Pod:             {view['pod_namespace']}/{view['pod_name']}",
        f"Status:          {view['status']} ({view['phase']})",
        f"Message:         {view.get('message') or '-'}",
        f"Source:          {d.get('source_node') or '-'}",
        f"Target:          {d.get('target_node') or d.get('suggested_node') or '<scheduler>'}",
        f"Replacement:     {d.get('new_pod_name') or '-'} on {d.get('replacement_node') or '-'}",
        f"Checkpoint PVC:  {d.get('pv_claim_name') or '-'}  path {d.get('checkpoint_path') or '-'}",
        f"Duration:        {seconds_text(d.get('duration'))}",
    ]
    before, after = d.get("original_resources"), d.get("optimized_resources")
    if before:
        lines.append(f"Requests before: {before['cpu_usage']:g} cores, {before['memory_usage']} bytes")
    if after:
        lines.append(f"Requests after:  {after['cpu_usage']:g} cores, {after['memory_usage']} bytes")
    containers = d.get("container_states") or []
    if containers:
        lines.append("Containers:")
        rows = [
            [c["name"], c["state"], str(c["restart_count"]), "yes" if c["should_migrate"] else "no (completed)"]
            for c in containers
        ]
        lines += ["  " + line for line in table(rows, ("NAME", "STATE", "RESTARTS", "MIGRATE")).splitlines()]
    steps = d.get("steps") or []
    if steps:
        lines.append("Steps:")
        rows = [[s["step"], s["time"], _delta(s.get("seconds_since_previous"))] for s in steps]
        lines += ["  " + line for line in table(rows, ("STEP", "TIME", "+")).splitlines()]
    conditions = d.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        rows = [[c["type"], c["status"], c["reason"], c["message"]] for c in conditions]
        lines += ["  " + line for line in table(rows, ("TYPE", "STATUS", "REASON", "MESSAGE")).splitlines()]
    return "\n".join(lines)


def _delta(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f}s"


def follow(
    backend: Backend,
    migration_id: str,
    out: TextIO,
    *,
    interval: float = 0.5,
    timeout: float = 3900.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print each step and phase change until the migration finishes; 0 when it completed, else 1."""
    deadline = clock() + timeout
    shown_steps: set[str] = set()
    last_phase = ""
    while True:
        view = backend.get(migration_id)
        details = view.get("details") or {}
        for step in details.get("steps") or []:
            if step["step"] not in shown_steps:
                shown_steps.add(step["step"])
                print(f"  {step['time']}  {step['step']:<20} {_delta(step.get('seconds_since_previous'))}", file=out)
        if view["phase"] != last_phase:
            last_phase = view["phase"]
            message = f": {view['message']}" if view.get("message") else ""
            print(f"phase {last_phase}{message}", file=out)
        out.flush()
        if view["status"] in FINISHED:
            where = details.get("replacement_node")
            summary = f"{migration_id} {view['status']}"
            if view["status"] == "completed":
                summary += f" in {seconds_text(details.get('duration'))}"
                if details.get("new_pod_name"):
                    summary += f": {details['new_pod_name']} on {where or '-'}"
            print(summary, file=out)
            return 0 if view["status"] == "completed" else 1
        if clock() >= deadline:
            print(f"{migration_id}: still {view['phase']} after {timeout:.0f}s; stopped waiting", file=out)
            return 1
        sleep(interval)


# ---------------------------------------------------------------------------------------------------------------
# Commands


def backend_from(args: argparse.Namespace) -> Backend:
    """REST when a server is given, else the kubeconfig; an error when neither is."""
    server = args.server or os.environ.get("APOLLO_API_URL", "")
    if server:
        token = args.token or os.environ.get("APOLLO_TOKEN", "")
        if args.token_file:
            token = Path(args.token_file).read_text().strip()
        return RestBackend(server, token, args.cacert, args.insecure_skip_tls_verify)
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        raise ApiError(0, "no --server (or $APOLLO_API_URL) and no --kubeconfig (or $KUBECONFIG): nowhere to go")
    from common.kube import api_client

    return KubeBackend.from_client(api_client(kubeconfig.split(os.pathsep)[0]))


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
