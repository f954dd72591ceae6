"""Build (once) and locate the control plane's binaries.

kube-apiserver, kube-scheduler, kube-controller-manager and etcd are compiled from the Kubernetes
Go modules into one binary (`hack/kube-all`): a wrapper module requires k8s.io/kubernetes at a
pinned version and points each k8s.io staging module at the matching v0.Y.Z release, exactly as
the Kubernetes release does, so the code is the released code. kwok is built with `go install`.
Results live in a cache outside the repository, keyed by version and by the wrapper source, and
are reused when present. Prometheus comes from Debian's package.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apolloctl.cluster.errors import ComponentError

K8S_VERSION = "v1.33.13"
KWOK_VERSION = "v0.7.0"
COMPONENTS = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager")
_WRAPPER_SRC = Path(__file__).resolve().parents[2] / "hack" / "kube-all" / "main.go"

Log = Callable[[str], None]


def cache_root() -> Path:
    """Where binaries and build trees go: $APOLLO_CACHE_DIR, else ~/.cache/apollo-stack."""
    env = os.environ.get("APOLLO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apollo-stack"


@dataclass(frozen=True)
class Binaries:
    """Paths of every executable the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kwok: Path
    prometheus: Path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds: a CLI and a test run starting at once must not build into one tree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_env(gopath_bin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    if gopath_bin is not None:
        env["GOBIN"] = str(gopath_bin)
    return env


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ComponentError(
            "go toolchain", "not found on PATH: install Go >= 1.24 (needed once, to build the control plane)"
        )
    return go


def _run(component: str, argv: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise ComponentError(component, f"`{' '.join(argv[:3])} ...` failed (exit {proc.returncode})", log)


def _staging_replaces(go: str, workdir: Path, log: Path) -> list[str]:
    """Read k8s.io/kubernetes' own go.mod to learn which staging modules need a replace line."""
    env = _go_env()
    argv = [go, "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"]
    with open(log, "ab") as out:
        proc = subprocess.run(argv, cwd=workdir, capture_output=True, env=env, check=False)
        out.write(proc.stderr)
    if proc.returncode != 0:
        raise ComponentError("kube-all", f"downloading k8s.io/kubernetes@{K8S_VERSION} failed", log)
    gomod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    staging = sorted(line.split()[0] for line in gomod.splitlines() if "=> ./staging/src/" in line and line.strip())
    if not staging:
        raise ComponentError("kube-all", "no staging replace directives found in k8s.io/kubernetes go.mod", log)
    minor_patch = K8S_VERSION.split(".", 1)[1]
    return [f"\t{mod} => {mod} v0.{minor_patch}" for mod in staging]


def _wrapper_key() -> str:
    digest = hashlib.sha256(_WRAPPER_SRC.read_bytes()).hexdigest()[:12]
    return f"{K8S_VERSION}-{digest}"


def _cached(binary: Path, build: Callable[[str], None]) -> Path:
    """Return `binary` if the cache has it, else build it once under the cache-wide lock."""
    if binary.exists():
        return binary
    go = _go()
    with _locked(cache_root() / "build.lock"):
        if not binary.exists():  # another process may have built it while we waited
            build(go)
    return binary


def build_kube_all(log: Log = print) -> Path:
    """The combined control-plane binary, built on first use (minutes) and reused afterwards."""
    root = cache_root() / f"k8s-{_wrapper_key()}"
    binary = root / "bin" / "kube-all"

    def build(go: str) -> None:
        src = root / "src"
        src.mkdir(parents=True, exist_ok=True)
        build_log = root / "build.log"
        log(f"building kube-all {K8S_VERSION} from Go modules (first run only; log: {build_log})")
        shutil.copy(_WRAPPER_SRC, src / "main.go")
        replaces = _staging_replaces(go, src, build_log)
        (src / "go.mod").write_text(
            "module apollo.local/kube-all\n\ngo 1.24.0\n\n"
            f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n" + "\n".join(replaces) + "\n)\n"
        )
        env = _go_env()
        _run("kube-all", [go, "mod", "tidy"], src, build_log, env)
        minor = K8S_VERSION.split(".")[1]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
            ]
        )
        tmp = root / "bin" / "kube-all.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        _run(
            "kube-all",
            [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), "."],
            src,
            build_log,
            env,
        )
        tmp.rename(binary)

    return _cached(binary, build)


def build_kwok(log: Log = print) -> Path:
    root = cache_root() / f"kwok-{KWOK_VERSION}"
    binary = root / "bin" / "kwok"

    def build(go: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        build_log = root / "build.log"
        log(f"building kwok {KWOK_VERSION} from Go modules (first run only; log: {build_log})")
        tmpbin = root / "bin.tmp"
        tmpbin.mkdir(exist_ok=True)
        env = _go_env(tmpbin)
        env["GOFLAGS"] = "-trimpath"
        _run(
            "kwok",
            [go, "install", "-ldflags=-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
            root,
            build_log,
            env,
        )
        (root / "bin").mkdir(exist_ok=True)
        (tmpbin / "kwok").rename(binary)

    return _cached(binary, build)


def build_go_tool(name: str, source: Path, log: Log = print) -> Path:
    """A standard-library-only Go program of this repository (e.g. bench/noop_extender), built once.

    Keyed by a hash of its sources, so an edit rebuilds it and an unchanged one comes from the cache.
    """
    files = sorted(f for f in source.iterdir() if f.suffix == ".go" or f.name == "go.mod")
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()[:12]
    root = cache_root() / f"{name}-{digest}"
    binary = root / "bin" / name

    def build(go: str) -> None:
        (root / "bin").mkdir(parents=True, exist_ok=True)
        build_log = root / "build.log"
        log(f"building {name} from {source} (first run only; log: {build_log})")
        env = _go_env()
        env["GOFLAGS"] = "-trimpath"
        tmp = binary.with_suffix(".tmp")
        _run(name, [go, "build", "-ldflags=-s -w", "-o", str(tmp), "."], source, build_log, env)
        tmp.rename(binary)

    return _cached(binary, build)


def ensure_prometheus(log: Log = print) -> Path:
    """Prometheus from Debian's package, installed when missing and we are allowed to (root)."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found:
        return Path(found)
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ComponentError("prometheus", "not installed; install Debian's package: sudo apt-get install prometheus")
    log_path = cache_root() / "prometheus-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log("installing prometheus from Debian's package")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run("prometheus", [apt, "update"], Path("/"), log_path, env)
    _run(
        "prometheus",
        [apt, "install", "-y", "--no-install-recommends", "prometheus"],
        Path("/"),
        log_path,
        env,
    )
    return Path(shutil.which("prometheus") or "/usr/bin/prometheus")


def ensure_binaries(log: Log = print) -> Binaries:
    """Everything the cluster needs, building or installing what is missing."""
    kube_all = build_kube_all(log)
    links = {}
    for name in COMPONENTS:
        # Symlinks named after each component make `ps` and logs say which one is running.
        link = kube_all.parent / name
        if not link.exists():
            link.symlink_to(kube_all.name)
        links[name] = link
    return Binaries(
        etcd=links["etcd"],
        kube_apiserver=links["kube-apiserver"],
        kube_scheduler=links["kube-scheduler"],
        kube_controller_manager=links["kube-controller-manager"],
        kwok=build_kwok(log),
        prometheus=ensure_prometheus(log),
    )
