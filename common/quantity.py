"""Kubernetes resource.Quantity strings as numbers (the subset real requests use)."""

from __future__ import annotations

from typing import Any

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource.Quantity ("500m", "2Gi", "1.5", 3) as a float; raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a quantity: {value!r}")
    text = value.strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000.0
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIX[suffix]
    if text[-1] in "kMGTPE":
        return float(text[:-1]) * _SUFFIX[text[-1]]
    return float(text)
