"""Shared by the benchmark's parts: the sample interval they all use and one way to print."""

from __future__ import annotations

import numpy as np

from apollo.config import ApolloSettings

SHIPPED = ApolloSettings().validate()
STEP_MINUTES = round(SHIPPED.forecast.step_seconds / 60)
DAY = 1440 // STEP_MINUTES


def say(text: str) -> None:
    print(text, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")
