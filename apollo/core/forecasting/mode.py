"""Predictive or reactive: when the engine trusts its forecasts over the latest observation.

The live skill (forecast MAE / last value's MAE on the same samples) decides, with two guards against
flapping. A margin: the model falls back at ``reactive_at`` but must win by more (below
``predictive_below``) to come back. And a confirmation in time: the skill must stay past the threshold
for ``confirm_steps`` consecutive model steps. The second guard matters at a change of regime. When a
node's load starts to climb, last value briefly wins while the smoothed level catches up with the new
trend. That is the moment a forecast's widening upper bound warns of the coming overload. Falling back at
the first step the skill touches 1 would drop the warning just when it is needed. A model that is worse
for a whole horizon has lost on the evidence, and then the fallback is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ModeSwitch:
    """Hysteresis in level and in time over the live skill; ``observe`` once per model step."""

    reactive_at: float
    predictive_below: float
    confirm_steps: int
    reactive: bool = False
    streak: int = 0

    def __post_init__(self) -> None:
        if self.predictive_below > self.reactive_at:
            raise ValueError(f"predictive_below {self.predictive_below} exceeds reactive_at {self.reactive_at}")
        if self.confirm_steps < 0:
            raise ValueError(f"confirm_steps must be >= 0, got {self.confirm_steps}")

    def observe(self, skill: float, *, settled: bool = False) -> bool:
        """Count this step's evidence; True when the mode changed.

        ``settled`` says the skill already covers a long history (right after a warm start's replay),
        so it is acted on at once instead of waiting for live steps to confirm it. An unknown skill (NaN:
        nothing moved yet) neither confirms nor breaks a streak.
        """
        if math.isnan(skill):
            return False
        against = skill < self.predictive_below if self.reactive else skill >= self.reactive_at
        self.streak = self.streak + 1 if against else 0
        if not against or (self.streak < self.confirm_steps and not settled):
            return False
        self.reactive = not self.reactive
        self.streak = 0
        return True
