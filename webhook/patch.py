"""RFC 6902 JSON Patch, built against a working copy so every operation's path is valid when applied.

The webhook's mutations depend on one another: containers are removed before the checkpoint is mounted
into the ones that remain, so the index of a later operation depends on the earlier ones. `PatchBuilder`
applies each operation to its own copy of the pod as it records it, so paths are always computed on the
document the API server will hold at that point, and the patch can never address a shifted or missing
element. Missing parents (`/metadata/annotations`, `/spec/volumes`, a container's `env`) are created by
adding the whole missing subtree at its first missing level, as RFC 6902 requires (an `add` needs its
parent to exist). Keys are escaped per RFC 6901 (`~` as `~0`, `/` as `~1`), which matters for annotation
keys such as `apollo.io/migration`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]
Path = Sequence[str | int]


def escape(token: str | int) -> str:
    """One RFC 6901 reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(path: Path) -> str:
    return "".join("/" + escape(t) for t in path)


def _has(node: Any, token: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(token, str) and token in node
    return isinstance(node, list) and isinstance(token, int) and 0 <= token < len(node)


class PatchBuilder:
    """Records operations on a private copy of `document`; `ops` is the patch, `document` the result."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document: Json = copy.deepcopy(dict(document))
        self.ops: list[Json] = []

    # ---- reading the working copy ----------------------------------------------------------------
    def get(self, path: Path, default: Any = None) -> Any:
        node: Any = self.document
        for token in path:
            if not _has(node, token):
                return default
            node = node[token]
            if node is None:
                return default
        return node

    def _parent(self, path: Path) -> Any:
        node: Any = self.document
        for token in path[:-1]:
            node = node[token]
        return node

    # ---- operations -------------------------------------------------------------------------------
    def set(self, path: Path, value: Any) -> None:
        """Make `path` hold `value`: replace it, add it, or add its first missing ancestor with it nested."""
        if not path:
            raise ValueError("cannot set the document root")
        for depth in range(1, len(path)):
            if self.get(path[:depth]) is None:
                # path[:depth] is missing (or null): add it there with the rest of the path nested inside.
                nested: Any = value
                for token in reversed(path[depth:]):
                    if isinstance(token, int):
                        raise ValueError(f"cannot create array element {pointer(path)}")
                    nested = {token: nested}
                self._add(path[: depth - 1], path[depth - 1], nested)
                return
        parent = self._parent(path)
        last = path[-1]
        if _has(parent, last):
            if parent[last] == value:
                return
            parent[last] = copy.deepcopy(value)
            self.ops.append({"op": "replace", "path": pointer(path), "value": copy.deepcopy(value)})
        else:
            self._add(path[:-1], last, value)

    def append(self, path: Path, value: Any) -> None:
        """Append `value` to the array at `path`, creating the array (and its parents) when missing."""
        current = self.get(path)
        if current is None:
            self.set(path, [value])
            return
        if not isinstance(current, list):
            raise ValueError(f"{pointer(path)} is not an array")
        current.append(copy.deepcopy(value))
        self.ops.append({"op": "add", "path": pointer([*path, "-"]), "value": copy.deepcopy(value)})

    def remove(self, path: Path) -> None:
        parent = self._parent(path)
        del parent[path[-1]]
        self.ops.append({"op": "remove", "path": pointer(path)})

    def _add(self, parent_path: Path, key: str | int, value: Any) -> None:
        parent = self.get(parent_path) if parent_path else self.document
        if not isinstance(parent, dict) or not isinstance(key, str):
            raise ValueError(f"cannot add {key!r} under {pointer(parent_path)}")
        parent[key] = copy.deepcopy(value)
        self.ops.append({"op": "add", "path": pointer([*parent_path, key]), "value": copy.deepcopy(value)})
