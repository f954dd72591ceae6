"""Both services refuse a bad setting before serving anything: exit 2, one line naming the field."""

from __future__ import annotations

import pytest

import apollo.main
import extender.main


@pytest.mark.parametrize(
    ("main", "variable", "value", "field"),
    [
        (apollo.main.main, "APOLLO_GRPC_ADDRESS", "no-port", "grpc_address"),
        (apollo.main.main, "APOLLO_POLICY__OVERLOAD_THRESHOLD", "2", "policy.overload_threshold"),
        (extender.main.main, "EXTENDER_SERVER__WORKERS", "0", "server.workers"),
        (extender.main.main, "EXTENDER_POLICY_MODE", "sometimes", "policy_mode"),
    ],
)
def test_bad_setting_exits_2_naming_the_field(
    main: object,
    variable: str,
    value: str,
    field: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert callable(main)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and field in err and "Traceback" not in err


def test_missing_config_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert extender.main.main(["--config", "/nonexistent/extender.yaml"]) == 2
    assert "invalid settings" in capsys.readouterr().err
