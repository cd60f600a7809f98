"""A whole stack (Tansu, every service) on free ports, and the Label Studio-compatible file server,
for the end-to-end project tests. One stack per test module: starting it costs ~20 s."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli.demo import demo_env
from services.cli.demo.endpoints import Endpoints
from services.devstack import supervisor
from services.devstack.credentials import StackCredentials
from services.devstack.label_studio import LabelStudioFiles, LabelStudioServer


@dataclass
class Stack:
    ep: Endpoints
    api_key: str
    webhook_token: str
    label_studio: LabelStudioFiles
    home: Path
    label_studio_url: str = ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    files = LabelStudioFiles(home / "label-studio")
    with LabelStudioServer(files) as ls:
        env = {
            **demo_env(True),
            "FLYWHEEL_INGEST_LABEL_STUDIO_URL": ls.url,
            "FLYWHEEL_INGEST_LABEL_STUDIO_TOKEN": files.api_token,
            "FLYWHEEL_INGEST_FETCH_BACKOFF_S": "0.2",
            "FLYWHEEL_LOG_LEVEL": "WARNING",
        }
        components = supervisor.up(home, free_ports=True, extra_env=env, progress=lambda _m: None)
        try:
            creds = StackCredentials.load(home)  # made by the runner, as for `flywheel up`
            yield Stack(
                Endpoints.from_components(components, creds),
                creds.gateway_key,
                creds.webhook_token,
                files,
                home,
                ls.url,
            )
        finally:
            supervisor.down(home, progress=lambda _m: None)
