"""The credentials themselves: the setting that lists a service's callers, a service refusing to start on a
malformed one, the runner's secrets file (made once, private), and no secret in a log line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.devstack.credentials import StackCredentials
from services.devstack.stack import spec
from services.transportkit.auth import TrustedCallers, check_token
from services.transportkit.errors import NotAdmitted


def test_trusted_callers_hold_digests_and_name_the_caller() -> None:
    callers = TrustedCallers.parse(
        ",".join([TrustedCallers.entry("gateway", "g" * 40), TrustedCallers.entry("operator", "o" * 40)])
    )
    assert "g" * 40 not in str(callers.digests)
    assert callers.identify("Bearer " + "g" * 40) == "gateway"
    assert callers.identify("bearer " + "o" * 40) == "operator"
    for header, reason in (
        (None, "required"),
        ("Basic " + "g" * 40, "must be sent as"),
        ("Bearer", "must be sent as"),
        ("Bearer " + "x" * 40, "not one this service trusts"),
    ):
        with pytest.raises(NotAdmitted, match=reason):
            callers.identify(header)
    with pytest.raises(NotAdmitted, match="admits no caller"):
        TrustedCallers.parse("").identify("Bearer " + "g" * 40)
    for bad in ("gateway", "gateway:abc", "Gateway:" + "0" * 64, f"a:{'0' * 64},a:{'1' * 64}"):
        with pytest.raises(ValueError):
            TrustedCallers.parse(bad)
    with pytest.raises(ValueError, match="at least 32"):
        check_token("short")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FLYWHEEL_TRUSTED_CALLERS", "gateway:not-a-digest"), ("FLYWHEEL_SERVICE_TOKEN", "too short")],
)
def test_a_service_refuses_to_start_on_a_malformed_credential_setting(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), variable: value, "FLYWHEEL_LAKE_HTTP_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "services.lake"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert variable in done.stderr and value not in done.stdout, done.stderr[-500:]


def test_the_runner_makes_private_credentials_once_and_hands_out_only_what_each_needs(tmp_path: Path) -> None:
    made = StackCredentials.for_home(tmp_path)
    path = tmp_path / "run" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert StackCredentials.for_home(tmp_path) == made  # the same home keeps its credentials
    assert StackCredentials.generate() != made  # nothing fixed: another home, other secrets
    gateway = made.service_env(spec("gateway"))
    modelserver = made.service_env(spec("modelserver"))
    assert gateway["FLYWHEEL_SERVICE_TOKEN"] == made.token("gateway")
    assert gateway["FLYWHEEL_TRUSTED_CALLERS"] == ""  # its routes are public: API keys
    assert TrustedCallers.parse(modelserver["FLYWHEEL_TRUSTED_CALLERS"]).digests.keys() == {"gateway", "operator"}
    assert "FLYWHEEL_SERVICE_TOKEN" not in modelserver  # it calls no one
    every_value = " ".join(
        v for name in ("modelserver", "ingest", "lake", "monitor") for v in made.service_env(spec(name)).values()
    )
    assert made.token("gateway") not in every_value and made.token("operator") not in every_value
