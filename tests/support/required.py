"""A real part a test needs and the machine lacks: skipped on a developer's machine, a failure in CI
(CI=true), so a green CI means every test ran."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, install: str) -> str:
    """The path of a program on PATH; skipped (locally) or failed (in CI) without it."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} missing: {install}")
    return path  # type: ignore[return-value]
