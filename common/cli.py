"""The start of every service's `main`: `--config FILE`, validated settings, structured logging."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from common.logs import configure
from common.settings import ConfigError


class _HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=_HasLogLevel)


def settings_from_cli(
    prog: str, description: str | None, env_prefix: str, load: Callable[[Path | None], S], argv: Sequence[str] | None
) -> S | None:
    """Parsed and validated settings with logging configured, or None after one line on stderr.

    A bad setting must stop the process before it serves anything, with the field named (exit 2).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, help=f"YAML settings file ({env_prefix}_* variables override it)")
    args = parser.parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"{prog}: invalid settings: {exc}", file=sys.stderr)
        return None
    configure(prog, settings.log_level)
    return settings
