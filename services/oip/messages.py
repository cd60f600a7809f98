"""An inference request and its answer as both services see them: arrays by name, nothing of the wire left."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A request parameter's value, as the protocol allows (InferParameter's oneof, JSON scalars).
Parameter = bool | int | float | str


@dataclass
class InferRequest:
    model: str
    version: str  # "" = the version the server picks (the newest loaded)
    inputs: dict[str, np.ndarray]
    id: str = ""
    outputs: list[str] = field(default_factory=list)  # empty = every output
    timeout_s: float | None = None  # from the client's deadline or `timeout` parameter
    # Request parameters as sent (Triton's `timeout` among them), passed on by the gateway; the wire
    # format's own switches (binary_data_output) are not parameters of the request.
    parameters: dict[str, Parameter] = field(default_factory=dict)


@dataclass
class InferResponse:
    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]
