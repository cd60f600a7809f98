"""Configuration errors stop a program with one clear message and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.config import CommonSettings, ConfigError, describe_settings, load_settings


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DEMO_")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port")


def test_bad_value_names_variable_value_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DEMO_HTTP_PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings(DemoSettings)
    assert "FLYWHEEL_DEMO_HTTP_PORT='eighty'" in info.value.message
    assert "valid integer" in info.value.message


def test_out_of_range_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DEMO_HTTP_PORT", "70000")
    with pytest.raises(ConfigError, match="FLYWHEEL_DEMO_HTTP_PORT"):
        load_settings(DemoSettings)


def test_overrides_win_and_help_lists_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DEMO_HTTP_PORT", "9000")
    assert load_settings(DemoSettings, http_port=9100).http_port == 9100
    assert load_settings(DemoSettings, http_port=None).http_port == 9000
    text = describe_settings(CommonSettings, DemoSettings)
    assert "FLYWHEEL_KAFKA_BOOTSTRAP" in text and "FLYWHEEL_DEMO_HTTP_PORT" in text


def test_cli_refuses_bad_shared_setting_before_starting_anything(tmp_path) -> None:
    env = {**os.environ, "FLYWHEEL_LOG_LEVEL": "LOUD", "FLYWHEEL_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--free-ports"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "FLYWHEEL_LOG_LEVEL='LOUD'" in out
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "state.json").exists()
