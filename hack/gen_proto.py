#!/usr/bin/env python3
"""Generate (or check) the Python gRPC stubs for ``proto/apollo.proto`` into ``apollo_api/v1/``.

Usage (from anywhere; paths are resolved from this file)::

    python hack/gen_proto.py          # (re)write the generated modules in apollo_api/v1/
    python hack/gen_proto.py --check  # exit 1 if the committed stubs differ from what would be generated

Why it is done this way:

* protoc runs with the virtual include mapping ``--proto_path=apollo_api/v1=proto``. protoc then sees the file as
  ``apollo_api/v1/apollo.proto``, writes the outputs to ``apollo_api/v1/`` and the generated gRPC module imports
  ``from apollo_api.v1 import apollo_pb2`` (package-qualified) instead of a bare ``import apollo_pb2`` that only
  works with ``apollo_api/v1`` on ``sys.path``. No post-processing of generated text is needed. The protobuf
  package stays ``apollo``: the file name seen by protoc never reaches the wire.
* Typed stubs come from mypy-protobuf (``protoc-gen-mypy`` / ``protoc-gen-mypy_grpc``) when it is installed
  (it is in the ``dev`` extra), because it also types the gRPC servicers and stubs; otherwise from
  grpcio-tools' own ``--pyi_out`` (messages only). ``--check`` refuses to compare across generators.
* Output depends on the generator versions, so the committed ``apollo_api/v1/__init__.py`` records them and
  ``--check`` names both sides when they differ. Generation is otherwise deterministic: same inputs and tool
  versions give the same bytes (no timestamps, no absolute paths).
* ``--check`` generates into a temporary directory and compares bytes, so it never touches the work tree.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTO_FILE = "apollo.proto"
PACKAGE_DIR = "apollo_api/v1"  # import path of the generated modules: apollo_api.v1.apollo_pb2
VIRTUAL_PROTO = f"{PACKAGE_DIR}/{PROTO_FILE}"

GENERATED_BY_PROTOC = ("apollo_pb2.py", "apollo_pb2.pyi", "apollo_pb2_grpc.py")
GENERATED_BY_MYPY_GRPC = ("apollo_pb2_grpc.pyi",)
INIT_FILE = "__init__.py"

INIT_TEMPLATE = '''"""Generated Python stubs for proto/apollo.proto (protobuf package ``apollo``).

Do not edit: regenerate with ``python hack/gen_proto.py`` and commit the result.
Import as ``from apollo_api.v1 import apollo_pb2, apollo_pb2_grpc``.

Generated with: {tools}
"""
'''


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _find_plugin(name: str) -> str | None:
    """Prefer the plugin installed beside this interpreter (the venv), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _tool_versions(use_mypy: bool) -> str:
    parts = [f"grpcio-tools {_version('grpcio-tools')}"]
    parts.append(f"mypy-protobuf {_version('mypy-protobuf')}" if use_mypy else "protoc --pyi_out")
    return ", ".join(parts)


def _expected_files(use_mypy: bool) -> tuple[str, ...]:
    files = (INIT_FILE, *GENERATED_BY_PROTOC)
    return files + GENERATED_BY_MYPY_GRPC if use_mypy else files


def _protoc_include() -> str:
    import grpc_tools  # local import: only needed here, and gives a clear error below when missing

    return str(Path(grpc_tools.__file__).parent / "_proto")


def generate(out_root: Path, *, use_mypy: bool) -> list[str]:
    """Run protoc into ``out_root/apollo_api/v1`` and return the names of the files it should contain."""
    pkg = out_root / PACKAGE_DIR
    pkg.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PACKAGE_DIR}={PROTO_DIR}",
        f"--proto_path={_protoc_include()}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
    ]
    if use_mypy:
        mypy_plugin = _find_plugin("protoc-gen-mypy")
        grpc_plugin = _find_plugin("protoc-gen-mypy_grpc")
        assert mypy_plugin and grpc_plugin
        cmd += [
            f"--plugin=protoc-gen-mypy={mypy_plugin}",
            f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
            f"--mypy_out=quiet:{out_root}",
            f"--mypy_grpc_out=quiet:{out_root}",
        ]
    else:
        cmd.append(f"--pyi_out={out_root}")
    cmd.append(VIRTUAL_PROTO)
    # Fixed hash seed and locale: nothing in the generators should depend on them, but pinning them removes
    # the question when someone bisects a spurious diff.
    env = {**os.environ, "PYTHONHASHSEED": "0", "LC_ALL": "C"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"gen_proto: protoc failed (exit {proc.returncode}): {' '.join(cmd)}")
    (pkg / INIT_FILE).write_text(INIT_TEMPLATE.format(tools=_tool_versions(use_mypy)), encoding="utf-8")
    expected = _expected_files(use_mypy)
    missing = [name for name in expected if not (pkg / name).is_file()]
    if missing:
        raise SystemExit(f"gen_proto: protoc did not produce {missing} in {pkg}")
    return list(expected)


def _committed_generator_line(committed_init: Path) -> str | None:
    if not committed_init.is_file():
        return None
    for line in committed_init.read_text(encoding="utf-8").splitlines():
        if line.startswith("Generated with: "):
            return line.removeprefix("Generated with: ")
    return None


def check(use_mypy: bool) -> int:
    """Compare the committed stubs with freshly generated ones; return a process exit code."""
    target = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory(prefix="apollo-gen-proto-") as tmp:
        files = generate(Path(tmp), use_mypy=use_mypy)
        fresh_dir = Path(tmp) / PACKAGE_DIR
        problems: list[str] = []
        for name in files:
            fresh = (fresh_dir / name).read_bytes()
            committed_path = target / name
            if not committed_path.is_file():
                problems.append(f"{PACKAGE_DIR}/{name}: missing")
                continue
            committed = committed_path.read_bytes()
            if committed != fresh:
                diff = difflib.unified_diff(
                    committed.decode("utf-8", "replace").splitlines(),
                    fresh.decode("utf-8", "replace").splitlines(),
                    f"committed/{PACKAGE_DIR}/{name}",
                    f"generated/{PACKAGE_DIR}/{name}",
                    lineterm="",
                    n=1,
                )
                excerpt = "\n".join(list(diff)[:40])
                problems.append(f"{PACKAGE_DIR}/{name}: differs\n{excerpt}")
        if not use_mypy and (target / GENERATED_BY_MYPY_GRPC[0]).is_file():
            problems.append(
                "committed stubs were generated with mypy-protobuf, which is not installed here: "
                "pip install -e '.[dev]' (or mypy-protobuf) and rerun"
            )
    if not problems:
        print(f"gen_proto: {PACKAGE_DIR}/ is up to date with proto/{PROTO_FILE}")
        return 0
    sys.stderr.write(
        f"gen_proto: the committed stubs in {PACKAGE_DIR}/ do not match proto/{PROTO_FILE}.\n"
        "Run `python hack/gen_proto.py` and commit the result.\n\n"
    )
    committed_tools = _committed_generator_line(target / INIT_FILE)
    installed_tools = _tool_versions(use_mypy)
    if committed_tools and committed_tools != installed_tools:
        sys.stderr.write(
            f"Note: the committed stubs were generated with [{committed_tools}] but this environment has "
            f"[{installed_tools}]; generated text depends on these versions. Install the committed versions "
            "to check, or regenerate deliberately with the new ones.\n\n"
        )
    sys.stderr.write("\n\n".join(problems) + "\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the committed stubs differ from freshly generated ones",
    )
    args = parser.parse_args(argv)
    if _version("grpcio-tools") is None:
        print("gen_proto: grpcio-tools is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    use_mypy = all(_find_plugin(name) is not None for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"))
    if not use_mypy:
        print("gen_proto: mypy-protobuf not found, falling back to protoc --pyi_out", file=sys.stderr)
    if args.check:
        return check(use_mypy)
    target = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory(prefix="apollo-gen-proto-") as tmp:
        files = generate(Path(tmp), use_mypy=use_mypy)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            data = (Path(tmp) / PACKAGE_DIR / name).read_bytes()
            dest = target / name
            if not dest.is_file() or dest.read_bytes() != data:  # untouched files keep their mtime
                dest.write_bytes(data)
                print(f"gen_proto: wrote {PACKAGE_DIR}/{name}")
    if not use_mypy:
        stale = target / GENERATED_BY_MYPY_GRPC[0]
        if stale.is_file():
            stale.unlink()
            print(f"gen_proto: removed {PACKAGE_DIR}/{stale.name} (mypy-protobuf not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
