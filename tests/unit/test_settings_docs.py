"""Every setting is documented, and the generated reference pages match the declarations."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

import gen_settings_docs  # noqa: E402

from common.settings import undocumented  # noqa: E402


@pytest.mark.parametrize("target", [s[1] for s in gen_settings_docs.SERVICES])
def test_every_setting_says_why(target: str) -> None:
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert undocumented(cls) == [], "declare these with setting(default, why, check)"


def test_reference_pages_are_current() -> None:
    assert gen_settings_docs.main(["--check"]) == 0
