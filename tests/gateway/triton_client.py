"""tritonclient.grpc against the gateway, in a process of its own.

tritonclient.grpc and services.genproto.inference both register `inference.*` in protobuf's
default pool, so they cannot share a pytest process. Run:
`python -m tests.gateway.triton_client ADDR KEY MODEL VERSION SEED` → one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tgrpc


def main() -> int:
    addr, key, model, version, seed = sys.argv[1:6]
    rng = np.random.default_rng(int(seed))
    features = (rng.integers(0, 256, (4, 64)) / 255).astype(np.float32)
    features[:, 0] = 0.0
    client = tgrpc.InferenceServerClient(addr)
    headers = {"authorization": f"Bearer {key}"}
    inp = tgrpc.InferInput("features", list(features.shape), "FP32")
    inp.set_data_from_numpy(features)
    result = client.infer(model, [inp], model_version=version, headers=headers)
    out: dict[str, object] = {
        "features": features.tolist(),
        "probabilities": result.as_numpy("probabilities").tolist(),
        "model_version": result.get_response().model_version,
        "server_ready": client.is_server_ready(),
        "metadata_name": client.get_model_metadata(model, headers=headers).name,
    }
    try:
        client.infer(model, [inp], model_version=version)
        out["without_key"] = "OK"
    except tgrpc.InferenceServerException as exc:
        out["without_key"] = str(exc.status())
    client.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
