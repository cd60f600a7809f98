"""The test session's credentials, made once per run the way `flywheel up` makes a home's.

Every service a test starts admits the callers the runner's spec names (services/devstack/stack.py)
and is given its own token; the tests call internal services as the operator.
"""

from __future__ import annotations

import functools

from services.devstack.credentials import StackCredentials
from services.devstack.stack import spec


@functools.cache
def credentials() -> StackCredentials:
    return StackCredentials.generate()


def service_env(name: str) -> dict[str, str]:
    """The credential settings of service `name`, as the runner gives them."""
    return credentials().service_env(spec(name))


def operator() -> dict[str, str]:
    """The header to call an internal service with."""
    return credentials().bearer("operator")


def operator_token() -> str:
    return credentials().token("operator")
