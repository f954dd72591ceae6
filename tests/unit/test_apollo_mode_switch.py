"""The predictive/reactive switch: a margin in level, a confirmation in time, warm start acted on at once."""

from __future__ import annotations

import math

import pytest

from apollo.core.forecasting.mode import ModeSwitch


def test_falls_back_only_after_the_model_lost_for_the_whole_confirmation() -> None:
    switch = ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=3)
    assert not switch.observe(1.02) and not switch.observe(1.05)
    assert not switch.observe(0.99)  # the model won a step: the streak starts over
    assert not switch.observe(1.01) and not switch.observe(1.01) and not switch.reactive
    assert switch.observe(1.01) and switch.reactive


def test_comes_back_only_when_the_model_wins_by_the_margin_for_the_whole_confirmation() -> None:
    switch = ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=2, reactive=True)
    assert not switch.observe(0.97) and not switch.observe(0.97)  # better than last value, not by the margin
    assert not switch.observe(0.9) and switch.reactive
    assert switch.observe(0.9) and not switch.reactive


def test_unknown_skill_neither_confirms_nor_breaks_a_streak() -> None:
    switch = ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=2)
    assert not switch.observe(1.1)
    assert not switch.observe(math.nan)
    assert switch.observe(1.1) and switch.reactive


def test_a_settled_skill_is_acted_on_at_once_and_zero_confirmation_switches_at_the_first_step() -> None:
    switch = ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=50)
    assert switch.observe(1.2, settled=True) and switch.reactive
    eager = ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=0)
    assert eager.observe(1.0) and eager.reactive


def test_rejects_a_margin_that_would_flap_and_a_negative_confirmation() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        ModeSwitch(reactive_at=0.9, predictive_below=1.0, confirm_steps=1)
    with pytest.raises(ValueError, match="confirm_steps"):
        ModeSwitch(reactive_at=1.0, predictive_below=0.95, confirm_steps=-1)
