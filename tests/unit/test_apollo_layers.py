"""APOLLO's layering, read from the source: dependencies point one way (core <- runtime <- adapters <- jobs).

Parsed with `ast`, so imports inside functions count as much as those at the top, and nothing is
imported to find out. The rules are the ones in `apollo/core/__init__.py` and `../shared/DESIGN.md`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Outside-world libraries and wire types the pure core and the runtime must never touch.
IO_LIBRARIES = (
    "grpc",
    "grpc_health",
    "google.protobuf",
    "kubernetes",
    "prometheus_api_client",
    "prometheus_client",
    "flask",
    "werkzeug",
    "gunicorn",
    "requests",
    "urllib3",
    "apollo_api.v1",
)
# APOLLO's own modules above each layer.
ABOVE_CORE = ("apollo.config", "apollo.runtime", "apollo.adapters", "apollo.jobs", "apollo.server", "apollo.main")
ABOVE_RUNTIME = ("apollo.adapters", "apollo.jobs", "apollo.server", "apollo.main")
ABOVE_ADAPTERS = ("apollo.jobs", "apollo.server", "apollo.main")
ABOVE_JOBS = ("apollo.server", "apollo.main")

RULES: list[tuple[str, tuple[str, ...]]] = [
    ("apollo/core", ABOVE_CORE + IO_LIBRARIES),
    ("apollo/runtime", ABOVE_RUNTIME + IO_LIBRARIES),
    ("apollo/adapters", ABOVE_ADAPTERS),
    ("apollo/jobs", ABOVE_JOBS),
    # Services talk to APOLLO over gRPC through the neutral API package, never through its internals.
    ("extender", ("apollo",)),
    ("webhook", ("apollo",)),
    ("orchestrator", ("apollo",)),
]


def module_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from apollo import server` imports apollo.server: check the names too.
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def matches(module: str, banned: str) -> bool:
    return module == banned or module.startswith(banned + ".")


def violations(folder: str, banned: tuple[str, ...], root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        for line, module in imports(path, root):
            hit = next((b for b in banned if matches(module, b)), None)
            if hit is not None:
                found.append(f"{path.relative_to(root)}:{line} imports {module} ({hit} is off limits)")
    return sorted(set(found))


@pytest.mark.parametrize(("folder", "banned"), RULES, ids=[r[0] for r in RULES])
def test_dependencies_point_one_way(folder: str, banned: tuple[str, ...]) -> None:
    assert (ROOT / folder).is_dir(), folder
    assert violations(folder, banned) == []


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """Function-level, aliased, relative and `from package import module` imports are all caught."""
    core = tmp_path / "apollo" / "core"
    core.mkdir(parents=True)
    (core / "probe.py").write_text(
        "import numpy\n"
        "from apollo.core.domain import RESOURCES\n"
        "def f():\n"
        "    import grpc.aio as g\n"
        "    from apollo import server\n"
        "    from ..adapters import prometheus\n"
        "    return g, server, prometheus\n"
    )
    found = violations("apollo/core", ABOVE_CORE + IO_LIBRARIES, root=tmp_path)
    assert {v.split(" imports ")[1].split(" (")[0] for v in found} == {
        "grpc.aio",
        "apollo.server",
        "apollo.adapters",
        "apollo.adapters.prometheus",
    }
