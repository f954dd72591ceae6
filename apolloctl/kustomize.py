"""Render a kustomize layout in Python: the subset `manifests/` uses, with kustomize's rules for it.

There is no kustomize (or kubectl) binary on the development machines, and the tests must still prove
that what `kubectl apply -k manifests/overlays/local` would apply is valid. This renderer implements
exactly the fields the layout uses and refuses every other one by name, so it can never silently
render something kustomize would render differently:

* ``resources``: YAML files at or below the kustomization's directory (kustomize's default load
  restriction) and directories holding a kustomization, rendered first (bases, components), never one
  that is or contains a kustomization already on the way to it (kustomize's cycle rule: an overlay
  cannot live inside its base's folder);
* ``patches``: strategic-merge patches (maps merged, ``null`` deletes, the Kubernetes lists with a
  merge key merged by it, other lists replaced) and JSON 6902 patches (RFC 6902 operations), inline
  or from a file, applied to the object they name or to every object a ``target`` selects (``group``,
  ``version``, ``kind``, ``name`` and ``namespace`` as anchored regular expressions, ``labelSelector``
  as equality terms); a patch that matches nothing is an error, as in kustomize;
* ``labels``: added to ``metadata.labels`` (and to pod templates with ``includeTemplates``);
  ``includeSelectors: true`` is refused, since changing selectors breaks upgrades;
* ``images``: ``newName``, ``newTag`` and ``digest`` for container and init container images.

Duplicate objects are an error, and the output is in kustomize's legacy order (namespaces, CRDs and
RBAC first, webhook configurations last), which is also the order they can be applied in.
``python -m apolloctl.kustomize DIR`` prints what ``kustomize build DIR`` would.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
API_VERSION = "kustomize.config.k8s.io/v1beta1"
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "metadata", "resources", "patches", "labels", "images"})

# kustomize's legacy sort order (api/resource/ordering: orderFirst / orderLast).
ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")

# Strategic-merge keys of the Kubernetes lists a patch of these manifests can touch (the
# `patchMergeKey` tags of k8s.io/api); any other list is replaced as a whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "webhooks": "name",
    "hostAliases": "ip",
    "conditions": "type",
}
POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class KustomizeError(ValueError):
    """The layout cannot be rendered (or uses what this renderer does not implement); says where."""


Obj = dict[str, Any]


def _load_yaml_docs(path: Path) -> list[Obj]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{path}: {exc}") from exc
    for d in docs:
        if not isinstance(d, dict) or not d.get("kind") or not d.get("apiVersion"):
            raise KustomizeError(f"{path}: every document must be an object with apiVersion and kind")
        if not (d.get("metadata") or {}).get("name"):
            raise KustomizeError(f"{path}: a {d['kind']} has no metadata.name")
    return docs


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _within(root: Path, path: Path) -> bool:
    root, path = root.resolve(), path.resolve()
    return path == root or root in path.parents


def group_of(obj: Mapping[str, Any]) -> str:
    api = str(obj.get("apiVersion", ""))
    return api.split("/", 1)[0] if "/" in api else ""


def version_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", "")).rsplit("/", 1)[-1]


def object_id(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): what kustomize calls a resource id (the version is not part of it)."""
    meta = obj.get("metadata") or {}
    return (group_of(obj), str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))


def _id_text(oid: tuple[str, str, str, str]) -> str:
    group, kind, ns, name = oid
    return f"{kind}{'.' + group if group else ''} {ns + '/' if ns else ''}{name}"


# ---- strategic merge and JSON patch --------------------------------------------------------------


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        if all(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        if all(isinstance(i, dict) and "port" in i for i in items):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into `target` (new objects; neither input is changed)."""
    if isinstance(patch, dict) and isinstance(target, dict):
        directives = [k for k in patch if k.startswith("$")]
        if directives:
            raise KustomizeError(f"strategic-merge directives {directives} are not supported by this renderer")
        out = copy.deepcopy(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(field, target + patch)
        if key is None:
            return copy.deepcopy(patch)
        merged = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"patch of list {field!r}: every item needs its merge key {key!r}")
            at = next((i for i, t in enumerate(merged) if isinstance(t, dict) and t.get(key) == item[key]), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = strategic_merge(merged[at], item, field)
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise KustomizeError(f"JSON patch path {path!r} does not exist")
    return doc


def json_patch(doc: Obj, ops: list[Any]) -> Obj:
    """RFC 6902 operations applied to a copy of `doc`."""
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise KustomizeError(f"JSON patch operation {op!r} needs op and path")
        kind, path = op["op"], str(op["path"])
        parts = _pointer(path)
        if kind in ("move", "copy"):
            source = _walk(out, _pointer(str(op.get("from", ""))), str(op.get("from")))
            value = copy.deepcopy(source)
            if kind == "move":
                out = json_patch(out, [{"op": "remove", "path": op["from"]}])
            out = json_patch(out, [{"op": "add", "path": path, "value": value}])
            continue
        if not parts:
            raise KustomizeError("JSON patch of the whole document is not supported")
        parent = _walk(out, parts[:-1], path)
        last = parts[-1]
        if kind == "test":
            if _walk(out, parts, path) != op.get("value"):
                raise KustomizeError(f"JSON patch test failed at {path!r}")
        elif kind == "remove":
            _walk(out, parts, path)
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            if "value" not in op:
                raise KustomizeError(f"JSON patch {kind} at {path!r} has no value")
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-" and kind == "add":
                    parent.append(value)
                elif last.isdigit() and int(last) <= len(parent) - (kind == "replace"):
                    if kind == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    raise KustomizeError(f"JSON patch path {path!r} is not a valid list index")
            elif isinstance(parent, dict):
                if kind == "replace" and last not in parent:
                    raise KustomizeError(f"JSON patch replace at {path!r}: nothing to replace")
                parent[last] = value
            else:
                raise KustomizeError(f"JSON patch path {path!r} does not point into an object or a list")
        else:
            raise KustomizeError(f"JSON patch op {kind!r} is not an RFC 6902 operation")
    return out


# ---- selection ------------------------------------------------------------------------------------


def _full_match(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def _label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(k) != v:
                return False
        else:
            raise KustomizeError(f"labelSelector term {term!r}: only key=value and key!=value are supported")
    return True


def selects(target: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace", "labelSelector"}
    if unknown:
        raise KustomizeError(f"patch target fields {sorted(unknown)} are not supported by this renderer")
    meta = obj.get("metadata") or {}
    checks = (
        ("group", group_of(obj)),
        ("version", version_of(obj)),
        ("kind", str(obj.get("kind", ""))),
        ("name", str(meta.get("name", ""))),
        ("namespace", str(meta.get("namespace") or "")),
    )
    if any(key in target and not _full_match(str(target[key]), value) for key, value in checks):
        return False
    return "labelSelector" not in target or _label_selector_matches(
        str(target["labelSelector"]), meta.get("labels") or {}
    )


# ---- transformers ---------------------------------------------------------------------------------


def _apply_patches(objs: list[Obj], patches: list[Any], base: Path) -> list[Obj]:
    for i, entry in enumerate(patches):
        where = f"{base}: patches[{i}]"
        if not isinstance(entry, dict) or ("path" in entry) == ("patch" in entry):
            raise KustomizeError(f"{where}: give exactly one of path or patch")
        unknown = set(entry) - {"path", "patch", "target", "options"}
        if unknown or entry.get("options"):
            raise KustomizeError(f"{where}: {sorted(unknown) or ['options']} not supported by this renderer")
        if "path" in entry:
            file = base / str(entry["path"])
            if not _within(base, file):
                raise KustomizeError(f"{where}: {file} is outside {base}")
            try:
                text = file.read_text()
            except OSError as exc:
                raise KustomizeError(f"{where}: {exc}") from exc
        else:
            text = str(entry["patch"])
        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KustomizeError(f"{where}: {exc}") from exc
        target = entry.get("target")
        if isinstance(body, list):
            if not target:
                raise KustomizeError(f"{where}: a JSON 6902 patch needs a target")
            hits = [n for n, o in enumerate(objs) if selects(target, o)]
            for n in hits:
                objs[n] = json_patch(objs[n], body)
        elif isinstance(body, dict):
            if target:
                hits = [n for n, o in enumerate(objs) if selects(target, o)]
            else:
                meta = body.get("metadata") or {}
                want = (group_of(body), body.get("kind"), meta.get("name"))
                hits = [n for n, o in enumerate(objs) if (object_id(o)[0], o.get("kind"), object_id(o)[3]) == want]
                if meta.get("namespace"):
                    hits = [n for n in hits if object_id(objs[n])[2] == meta["namespace"]]
            # The patch names its object (or a target selects several); it never renames one.
            meta_patch = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
            change = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
            if meta_patch:
                change["metadata"] = meta_patch
            for n in hits:
                objs[n] = strategic_merge(objs[n], change)
        else:
            raise KustomizeError(f"{where}: a patch is a YAML object (strategic merge) or a list (JSON 6902)")
        if not hits:
            raise KustomizeError(f"{where}: matches no resource")
    return objs


def _apply_labels(objs: list[Obj], entries: list[Any], base: Path) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("pairs"), dict):
            raise KustomizeError(f"{base}: labels[{i}] needs pairs")
        if entry.get("includeSelectors"):
            raise KustomizeError(f"{base}: labels[{i}]: includeSelectors is not supported (selectors are immutable)")
        pairs = {str(k): str(v) for k, v in entry["pairs"].items()}
        for obj in objs:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            path = POD_TEMPLATE_PATHS.get(str(obj.get("kind")))
            if entry.get("includeTemplates") and path:
                node: Any = obj
                for part in path:
                    node = node.setdefault(part, {})
                node.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; a registry port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _pod_specs(obj: Obj) -> list[Obj]:
    kind = str(obj.get("kind"))
    if kind == "Pod":
        return [obj.get("spec") or {}]
    path = POD_TEMPLATE_PATHS.get(kind)
    if path is None:
        return []
    node: Any = obj
    for part in path:
        node = (node or {}).get(part)
    return [node.get("spec") or {}] if isinstance(node, dict) else []


def _apply_images(objs: list[Obj], entries: list[Any], base: Path) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise KustomizeError(f"{base}: images[{i}] needs a name")
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise KustomizeError(f"{base}: images[{i}]: {sorted(unknown)} not supported")
        for obj in objs:
            for spec in _pod_specs(obj):
                for field in ("initContainers", "containers"):
                    for c in spec.get(field) or []:
                        name, tag, digest = split_image(str(c.get("image", "")))
                        if name != entry["name"]:
                            continue
                        name = str(entry.get("newName") or name)
                        if entry.get("digest"):
                            c["image"] = f"{name}@{entry['digest']}"
                        else:
                            tag = str(entry.get("newTag") or tag)
                            c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _order(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    kind = str(obj.get("kind", ""))
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    _, _, ns, name = object_id(obj)
    return rank, kind, ns, name


def _render(directory: Path, stack: tuple[Path, ...]) -> list[Obj]:
    directory = directory.resolve()
    for visited in stack:
        # kustomize's rule: a base may not be, or contain, a kustomization on the way to it (an overlay
        # inside its base's folder is refused), since its files would then be loadable twice.
        if visited == directory or directory in visited.parents:
            raise KustomizeError(f"cycle detected: {directory} contains visited root {visited}")
    kfile = kustomization_file(directory)
    try:
        k = yaml.safe_load(kfile.read_text()) or {}
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{kfile}: {exc}") from exc
    if not isinstance(k, dict):
        raise KustomizeError(f"{kfile}: must be a mapping")
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: fields {sorted(unknown)} are not supported by this renderer")
    if k.get("apiVersion", API_VERSION) != API_VERSION or k.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{kfile}: expected apiVersion {API_VERSION}, kind Kustomization")
    objs: list[Obj] = []
    seen: dict[tuple[str, str, str, str], str] = {}
    for entry in k.get("resources") or []:
        ref = str(entry)
        if "://" in ref or ref.startswith(("github.com/", "git@")):
            raise KustomizeError(f"{kfile}: remote resource {ref!r} is not supported by this renderer")
        path = directory / ref
        if path.is_dir():
            loaded = _render(path, (*stack, directory))
        elif path.is_file():
            if not _within(directory, path):
                raise KustomizeError(f"{kfile}: file {ref!r} is not in or below {directory} (kustomize's rule)")
            loaded = _load_yaml_docs(path)
        else:
            raise KustomizeError(f"{kfile}: resource {ref!r} does not exist")
        for obj in loaded:
            oid = object_id(obj)
            if oid in seen:
                raise KustomizeError(f"{kfile}: {_id_text(oid)} comes from both {seen[oid]} and {ref}")
            seen[oid] = ref
            objs.append(obj)
    objs = _apply_patches(objs, list(k.get("patches") or []), directory)
    _apply_labels(objs, list(k.get("labels") or []), directory)
    _apply_images(objs, list(k.get("images") or []), directory)
    return objs


def render(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` produces, in kustomize's legacy order."""
    return sorted(_render(Path(directory), ()), key=_order)


def dump(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m apolloctl.kustomize DIR", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(dump(render(Path(args[0]))))
    except KustomizeError as exc:
        print(f"kustomize: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
