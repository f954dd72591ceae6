"""The kustomize renderer's rules, the repository's layout rendered with it, and the Dockerfile of the image."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from apolloctl.kustomize import KustomizeError, json_patch, render, split_image, strategic_merge

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
# Object manifests deliberately outside the base, and why.
NOT_IN_BASE = {
    "webhook/certificate.yaml": "needs cert-manager's CRDs; applied separately where cert-manager runs",
    "extender/certificate.yaml": "needs cert-manager's CRDs; applied separately where cert-manager runs",
    "extender/scheduler-config.yaml": "a KubeSchedulerConfiguration file for kube-scheduler, not an API object",
}


def _write(directory: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            content
            if isinstance(content, str)
            else yaml.safe_dump_all(content if isinstance(content, list) else [content])
        )
        path.write_text(text)
    return directory


def _deployment(name: str = "web", image: str = "registry:5000/team/app:1.0") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "name": "http"}],
                        },
                        {"name": "side", "image": "busybox"},
                    ]
                },
            },
        },
    }


KUST = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}


# ---- the renderer's rules ----------------------------------------------------------------------


def test_strategic_merge_merges_keyed_lists_and_deletes_nulls() -> None:
    base = _deployment()
    patch = {
        "spec": {
            "replicas": None,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "args": ["--x"],
                        },
                        {"name": "new", "image": "new:1"},
                    ]
                }
            },
        }
    }
    out = strategic_merge(base, patch)
    assert "replicas" not in out["spec"] and base["spec"]["replicas"] == 2  # inputs untouched
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side", "new"]
    assert containers[0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]
    assert containers[0]["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    assert containers[0]["image"] == "registry:5000/team/app:1.0" and containers[0]["args"] == ["--x"]
    # a list without a merge key is replaced
    assert strategic_merge({"args": ["a", "b"]}, {"args": ["c"]}) == {"args": ["c"]}
    with pytest.raises(KustomizeError, match="directives"):
        strategic_merge(base, {"spec": {"$patch": "delete"}})


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2], "c/d": 1, "e~f": 2}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/a/c~1d", "value": 10},
            {"op": "remove", "path": "/a/e~0f"},
            {"op": "copy", "from": "/a/b", "path": "/copy"},
            {"op": "move", "from": "/copy", "path": "/moved"},
            {"op": "test", "path": "/moved/3", "value": 3},
        ],
    )
    assert out == {"a": {"b": [0, 1, 2, 3], "c/d": 10}, "moved": [0, 1, 2, 3]}
    assert doc == {"a": {"b": [1, 2], "c/d": 1, "e~f": 2}}
    with pytest.raises(KustomizeError, match="does not exist"):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(KustomizeError, match="nothing to replace"):
        json_patch(doc, [{"op": "replace", "path": "/a/x", "value": 1}])
    with pytest.raises(KustomizeError, match="test failed"):
        json_patch(doc, [{"op": "test", "path": "/a/c~1d", "value": 2}])


def test_split_image_keeps_registry_ports() -> None:
    assert split_image("registry:5000/team/app:1.0") == ("registry:5000/team/app", "1.0", "")
    assert split_image("registry:5000/team/app") == ("registry:5000/team/app", "", "")
    assert split_image("app@sha256:abc") == ("app", "", "sha256:abc")


def test_overlay_patches_targets_images_and_labels(tmp_path: Path) -> None:
    _write(
        tmp_path / "base",
        {
            "kustomization.yaml": {**KUST, "resources": ["app.yaml"]},
            "app.yaml": [
                _deployment("web"),
                _deployment("api"),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}},
            ],
        },
    )
    _write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                **KUST,
                "resources": ["../base"],
                "images": [{"name": "registry:5000/team/app", "newName": "mirror/app", "newTag": "2.0"}],
                "labels": [{"pairs": {"tier": "x"}, "includeTemplates": True}],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": "w.*"},
                        "patch": "- {op: replace, path: /spec/replicas, value: 5}",
                    },
                    {"path": "scale.yaml"},
                ],
            },
            "scale.yaml": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "api"},
                "spec": {"replicas": 1},
            },
        },
    )
    objs = render(tmp_path / "overlay")
    assert [o["kind"] for o in objs] == ["Namespace", "Deployment", "Deployment"]  # kustomize's legacy order
    by_name = {o["metadata"]["name"]: o for o in objs}
    assert by_name["web"]["spec"]["replicas"] == 5 and by_name["api"]["spec"]["replicas"] == 1
    main = by_name["web"]["spec"]["template"]["spec"]["containers"][0]
    assert main["image"] == "mirror/app:2.0"
    assert by_name["web"]["spec"]["template"]["spec"]["containers"][1]["image"] == "busybox"
    assert by_name["web"]["metadata"]["labels"] == {"tier": "x"}
    assert by_name["web"]["spec"]["template"]["metadata"]["labels"] == {"app": "web", "tier": "x"}
    assert by_name["web"]["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # selectors untouched


def _k(**fields: Any) -> dict[str, Any]:
    return {**KUST, **fields}


_REMOVE_SPEC = "- {op: remove, path: /spec}"
_REFUSALS = [
    ({"kustomization.yaml": _k(namespace="x")}, r"fields \['namespace'\] are not supported"),
    ({"kustomization.yaml": _k(resources=["missing.yaml"])}, "does not exist"),
    (
        {"kustomization.yaml": _k(resources=["a.yaml", "b.yaml"]), "a.yaml": _deployment(), "b.yaml": _deployment()},
        "Deployment.apps ns/web comes from both a.yaml and b.yaml",
    ),
    (
        {"kustomization.yaml": _k(resources=["a.yaml"], patches=[{"patch": _REMOVE_SPEC}]), "a.yaml": _deployment()},
        "JSON 6902 patch needs a target",
    ),
    (
        {
            "kustomization.yaml": _k(
                resources=["a.yaml"], patches=[{"target": {"kind": "Service"}, "patch": _REMOVE_SPEC}]
            ),
            "a.yaml": _deployment(),
        },
        "matches no resource",
    ),
    (
        {
            "kustomization.yaml": _k(resources=["a.yaml"], labels=[{"pairs": {"a": "b"}, "includeSelectors": True}]),
            "a.yaml": _deployment(),
        },
        "includeSelectors is not supported",
    ),
    ({"kustomization.yaml": _k(resources=["https://example.com/x.yaml"])}, "remote resource"),
    (
        {"kustomization.yaml": _k(resources=["a.yaml"]), "a.yaml": {"apiVersion": "v1", "kind": "ConfigMap"}},
        "has no metadata.name",
    ),
]


@pytest.mark.parametrize(("files", "message"), _REFUSALS)
def test_what_kustomize_would_refuse_is_refused(tmp_path: Path, files: dict[str, Any], message: str) -> None:
    _write(tmp_path, files)
    with pytest.raises(KustomizeError, match=message):
        render(tmp_path)


def test_files_outside_the_root_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"shared.yaml": _deployment(), "k/kustomization.yaml": {**KUST, "resources": ["../shared.yaml"]}})
    with pytest.raises(KustomizeError, match="not in or below"):
        render(tmp_path / "k")


def test_cli_prints_documents_and_names_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from apolloctl.kustomize import main

    assert main([str(MANIFESTS / "overlays" / "local")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[0]["kind"] == "Namespace"
    assert main([str(tmp_path)]) == 1 and "no kustomization.yaml" in capsys.readouterr().err


# ---- the repository's layout --------------------------------------------------------------------


def _base() -> list[dict[str, Any]]:
    return render(MANIFESTS / "base")


def _local() -> list[dict[str, Any]]:
    return render(MANIFESTS / "overlays" / "local")


def test_base_holds_every_object_manifest() -> None:
    """Each component folder's kustomization lists its object manifests, and the base lists every folder."""
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())["resources"]
    folders = sorted(p.parent for p in MANIFESTS.glob("*/*.yaml") if p.parent.name not in ("base", "overlays"))
    for folder in set(folders):
        listed = set(yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"])
        files = {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}
        skipped = {k.split("/")[1] for k in NOT_IN_BASE if k.startswith(folder.name + "/")}
        missing = files - listed - skipped
        assert not missing, (
            f"add to {folder.name}/kustomization.yaml (or to NOT_IN_BASE, saying why): {sorted(missing)}"
        )
        assert not (skipped & listed)
        assert f"../{folder.name}" in base, f"manifests/base/kustomization.yaml must list ../{folder.name}"
    assert render(MANIFESTS) == _base()  # `kubectl apply -k manifests/` is the base


def test_an_overlay_inside_its_base_is_refused(tmp_path: Path) -> None:
    """kustomize's cycle rule, which the first layout of manifests/ broke (the renderer now catches it)."""
    _write(
        tmp_path,
        {
            "kustomization.yaml": _k(resources=["a.yaml"]),
            "a.yaml": _deployment(),
            "overlays/x/kustomization.yaml": _k(resources=["../.."]),
        },
    )
    with pytest.raises(KustomizeError, match="cycle detected"):
        render(tmp_path / "overlays" / "x")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its built-in kustomize) on PATH")
@pytest.mark.parametrize("layout", ["", "base", "overlays/local"])
def test_renderer_matches_kustomize(layout: str) -> None:
    """Where kubectl is installed, its kustomize renders exactly the same objects in the same order."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / layout)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert [d for d in yaml.safe_load_all(out) if d] == render(MANIFESTS / layout)


def test_base_objects_are_namespaced_into_apollo_system_and_labelled() -> None:
    objs = _base()
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    }
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, obj["kind"]
        else:
            assert meta.get("namespace") == "apollo-system", (obj["kind"], meta["name"])
        assert meta["labels"]["app.kubernetes.io/part-of"] == "apollo"
    kinds = [o["kind"] for o in objs]
    assert (
        kinds[0] == "Namespace"
        and kinds[1] == "CustomResourceDefinition"
        and kinds[-1] == "MutatingWebhookConfiguration"
    )


def _containers(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for o in objs if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]]


def test_local_overlay_changes_what_it_says() -> None:
    base = {(o["kind"], o["metadata"]["name"]): o for o in _base()}
    local = {(o["kind"], o["metadata"]["name"]): o for o in _local()}
    assert set(base) == set(local)
    assert {c["image"] for c in _containers(list(base.values()))} == {"apollo-stack:0.1.0"}
    assert {c["image"] for c in _containers(list(local.values()))} == {"apollo-stack:dev"}
    for name in ("apollo-extender", "apollo-webhook"):
        assert (
            base[("Deployment", name)]["spec"]["replicas"] == 2 and local[("Deployment", name)]["spec"]["replicas"] == 1
        )
        pdb = local[("PodDisruptionBudget", name)]["spec"]
        assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    (apollo,) = local[("Deployment", "apollo")]["spec"]["template"]["spec"]["containers"]
    assert {"name": "APOLLO_POLICY__DRY_RUN", "value": "false"} in apollo["env"]
    assert apollo["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert (
        apollo["resources"]["limits"]
        == base[("Deployment", "apollo")]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )


# ---- the image ----------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    instructions = _dockerfile()
    stages = [args.split() for word, args in instructions if word == "FROM"]
    assert len(stages) >= 2 and all(len(s) == 3 and s[1].upper() == "AS" for s in stages)
    names = [s[2] for s in stages]
    final_start = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    final = instructions[final_start:]
    copies_from = [a for w, a in final if w == "COPY" and a.startswith("--from=")]
    assert copies_from and all(a.split()[0].removeprefix("--from=") in names[:-1] for a in copies_from)
    (user,) = [a for w, a in final if w == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root UID, so runAsNonRoot can be verified"
    # the last USER comes after every instruction that needs root
    assert all(w not in ("RUN", "COPY") for w, _ in final[[w for w, _ in final].index("USER") :])
    # the manifests run every pod as that UID
    for obj in _base():
        if obj["kind"] == "Deployment":
            assert obj["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid), obj["metadata"]["name"]


def test_image_contains_every_package_and_entrypoint_the_manifests_use() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    instructions = _dockerfile()
    copied = {a.split()[0] for w, a in instructions if w == "COPY" and not a.startswith("--from=")}
    for service in ("common", "apollo_api", "apollo", "extender", "webhook", "orchestrator", "apolloctl"):
        assert service in copied, service
    for script in ("apollo", "apollo-extender", "apollo-webhook", "apollo-orchestrator"):
        module = scripts[script].split(":")[0]
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{script} -> {module}"
    for container in _containers(_base()):
        program = container["command"][0]
        assert program in scripts or program == "python", f"{container['name']} runs {program}, not in the image"
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    assert not (copied & ignored), "a copied path is excluded from the build context"
    cmd = next(a for w, a in reversed(instructions) if w == "CMD")
    assert yaml.safe_load(cmd)[0] in scripts
