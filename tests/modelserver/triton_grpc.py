"""tritonclient.grpc, imported only where it can load.

tritonclient.grpc and services.genproto.inference both register `inference.*` in protobuf's
default pool, so they cannot share a process. When another test package has already imported
the server's generated code in this pytest process, the modules that import this one are
skipped locally (and fail in CI, so it cannot pass unnoticed): run them on their own with
`make test-modelserver`.
"""

from __future__ import annotations

import os
import sys

import pytest

if "services.genproto.inference.grpc_predict_v2_pb2" in sys.modules:
    _REASON = "tritonclient.grpc cannot load after services.genproto.inference; run `make test-modelserver`"
    if os.environ.get("CI") == "true":
        pytest.fail(_REASON, pytrace=False)
    pytest.skip(_REASON, allow_module_level=True)

import tritonclient.grpc as tgrpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

__all__ = ["service_pb2", "service_pb2_grpc", "tgrpc"]
