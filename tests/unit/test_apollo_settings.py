"""APOLLO's settings tree: the core's own policy settings and scoring weights embedded whole, one
family of checks, dotted names in every error, APOLLO_A__B variables all the way down."""

from __future__ import annotations

from pathlib import Path

import pytest

from apollo.config import ApolloSettings, load_settings
from apollo.core.forecasting.params import ForecastParams
from apollo.core.policy import PolicySettings
from apollo.core.scoring.weights import ScoringWeights
from common.settings import ConfigError, undocumented


def test_every_policy_knob_and_weight_is_a_setting() -> None:
    settings = ApolloSettings()
    assert settings.policy == PolicySettings() and settings.scoring == ScoringWeights()
    assert settings.forecast.smoothing == ForecastParams()
    assert undocumented(ApolloSettings) == []


def test_variables_reach_nested_core_settings() -> None:
    settings = load_settings(
        environ={
            "APOLLO_POLICY__OVERLOAD_THRESHOLD": "0.8",
            "APOLLO_POLICY__DRY_RUN": "true",
            "APOLLO_POLICY__SCALE_MAX_STEP_UP": "2",
            "APOLLO_SCORING__LOCALITY": "0.5",
            "APOLLO_FORECAST__SMOOTHING__ALPHA": "0.4",
        }
    )
    assert settings.policy.overload_threshold == 0.8 and settings.policy.dry_run
    assert settings.policy.scale_max_step_up == 2 and settings.scoring.locality == 0.5
    assert settings.forecast.smoothing == ForecastParams(alpha=0.4)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APOLLO_POLICY__OVERLOAD_THRESHOLD", "1.5", "policy.overload_threshold must be"),
        ("APOLLO_POLICY__HYSTERESIS_MARGIN", "0.9", "policy.hysteresis_margin must be below overload_threshold"),
        ("APOLLO_POLICY__MIGRATION_TIMEOUT_SECONDS", "5", "policy.migration_timeout_seconds must be an integer"),
        ("APOLLO_SCORING__HEADROOM", "0", "scoring.headroom must be"),
        ("APOLLO_FORECAST__SMOOTHING__GAMMA", "0.8", "forecast.smoothing.gamma must be <= 1 - alpha"),
        ("APOLLO_POLICY__CONSECUTIVE_STEPS", "61", "policy.consecutive_steps must be at most the forecast horizon"),
        ("APOLLO_PROMETHEUS__QUERIES", "disk=rate(x[2m])", "prometheus.queries has unknown resources"),
        ("APOLLO_FORECAST__OVERLOAD_THRESHOLD", "0.9", "unknown setting(s) forecast.overload_threshold"),
    ],
)
def test_bad_values_name_the_setting(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ={variable: value})


def test_the_deployed_config_file_moves_with_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "apollo.yaml"
    path.write_text("policy:\n  overload_threshold: 0.85\n  consecutive_steps: 3\nscoring:\n  anomaly_penalty: 10\n")
    settings = load_settings(path, environ={})
    assert settings.policy.consecutive_steps == 3 and settings.scoring.anomaly_penalty == 10.0


def test_a_file_with_the_deprecated_mase_fallback_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "apollo.yaml"
    path.write_text("forecast:\n  reactive_mase_above: 1.5\n")
    settings = load_settings(path, environ={})
    assert settings.forecast.reactive_skill_above == 1.0  # the fallback is on skill; the old key changes nothing
